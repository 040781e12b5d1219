//! WHIP offer parsing and answer building (`webrtc_core::sdp`).
//!
//! Test vectors in `tests/data/`: `chromium_*.sdp` are real offers of Chromium 156.0.8078.108
//! (headless, fake devices, `createOffer()` read over the DevTools protocol): audio + video +
//! data channel with max-bundle, video before audio (balanced bundle policy), and a recvonly
//! audio transceiver. `firefox_offer.sdp` is written by hand after Firefox 128's offers
//! (session-level fingerprint, media-level setup and ICE credentials, Opus on 109).
//! The answers built for the three Chromium offers were accepted by that Chromium
//! (`setRemoteDescription`, then `signalingState` "stable" and the audio transceiver's
//! `currentDirection` the mirrored one).

use std::io::Cursor;

use sdp::description::session::SessionDescription;
use webrtc_core::sdp::{
    build_answer, parse_offer, AnswerParams, Direction, Fingerprint, IceParams, MediaLine,
    OfferError, Setup, VideoAnswer, VideoFeedback, VideoOffer, MAX_OFFER_LEN,
};

const CHROMIUM: &str = include_str!("data/chromium_offer.sdp");
const CHROMIUM_VIDEO_FIRST: &str = include_str!("data/chromium_video_first_offer.sdp");
const CHROMIUM_RECVONLY: &str = include_str!("data/chromium_recvonly_offer.sdp");
const FIREFOX: &str = include_str!("data/firefox_offer.sdp");

const OUR_FP: &str = "00:01:02:03:04:05:06:07:08:09:0A:0B:0C:0D:0E:0F:\
                      10:11:12:13:14:15:16:17:18:19:1A:1B:1C:1D:1E:1F";

fn params(candidate: &str) -> AnswerParams {
    AnswerParams {
        session_id: 42,
        session_version: 7,
        ice_ufrag: "uSrv".into(),
        ice_pwd: "0123456789abcdefghijklmn".into(),
        fingerprint_sha256: OUR_FP.into(),
        candidate: candidate.parse().unwrap(),
        ssrc: 0x1234_5678,
        cname: "understudy".into(),
        msid_stream: "room".into(),
        msid_track: "mix".into(),
        video: None,
    }
}

fn line(media: &str, proto: &str, mid: &str, format: &str, accepted: bool) -> MediaLine {
    MediaLine {
        media: media.into(),
        proto: proto.into(),
        mid: Some(mid.into()),
        format: format.into(),
        accepted,
    }
}

/// An answer as the `sdp` crate reads it back.
fn reparse(answer: &str) -> SessionDescription {
    SessionDescription::unmarshal(&mut Cursor::new(answer.as_bytes()))
        .unwrap_or_else(|e| panic!("answer does not re-parse: {e}\n{answer}"))
}

/// Attributes as `key[:value]` strings.
fn attrs(a: &[sdp::description::common::Attribute]) -> Vec<String> {
    a.iter().map(ToString::to_string).collect()
}

/// `(media, port, proto, formats)` of every m= line.
fn m_lines(sd: &SessionDescription) -> Vec<(String, isize, String, String)> {
    sd.media_descriptions
        .iter()
        .map(|m| {
            (
                m.media_name.media.clone(),
                m.media_name.port.value,
                m.media_name.protos.join("/"),
                m.media_name.formats.join(" "),
            )
        })
        .collect()
}

fn m(media: &str, port: isize, proto: &str, formats: &str) -> (String, isize, String, String) {
    (media.into(), port, proto.into(), formats.into())
}

/// The attributes our accepted audio line must carry, in order.
fn audio_attrs(mid: &str, direction: &str, pt: u8, te: Option<u8>, ext: Option<u8>) -> Vec<String> {
    let mut v = vec![
        format!("mid:{mid}"),
        direction.to_string(),
        "rtcp-mux".into(),
        format!("rtpmap:{pt} opus/48000/2"),
        format!("fmtp:{pt} minptime=10;useinbandfec=1"),
    ];
    if let Some(te) = te {
        v.push(format!("rtpmap:{te} telephone-event/48000"));
    }
    if let Some(id) = ext {
        v.push(format!(
            "extmap:{id} urn:ietf:params:rtp-hdrext:ssrc-audio-level"
        ));
    }
    v.extend([
        "ice-ufrag:uSrv".to_string(),
        "ice-pwd:0123456789abcdefghijklmn".into(),
        format!("fingerprint:sha-256 {OUR_FP}"),
        "setup:passive".into(),
    ]);
    if direction == "sendrecv" || direction == "sendonly" {
        v.extend([
            "ssrc:305419896 cname:understudy".to_string(),
            "ssrc:305419896 msid:room mix".into(),
            "msid:room mix".into(),
        ]);
    }
    v.extend([
        "candidate:1 1 udp 2130706431 198.18.0.1 40000 typ host".to_string(),
        "end-of-candidates".into(),
    ]);
    v
}

#[test]
fn chromium_offer_is_read() {
    let o = parse_offer(CHROMIUM).unwrap();
    assert_eq!(
        o.ice,
        IceParams {
            ufrag: "EpoC".into(),
            pwd: "B66kgB/NKQfm9KhrZNHggLzA".into()
        }
    );
    assert_eq!(
        o.fingerprint,
        Fingerprint {
            algorithm: "sha-256".into(),
            value: "27:3B:B1:60:E3:1D:C6:02:00:5E:7D:2E:C2:D3:4F:94:D1:8D:9E:BD:48:9E:E4:4C:\
                    0D:01:6C:36:EE:0C:9E:3F"
                .into()
        }
    );
    let digest = o.fingerprint.sha256().unwrap();
    assert_eq!((digest[0], digest[1], digest[31]), (0x27, 0x3b, 0x3f));
    assert_eq!(o.setup, Setup::ActPass);
    assert_eq!((o.audio_mid.as_deref(), o.audio_index), (Some("0"), 0));
    assert_eq!(o.opus_pt, 111);
    assert_eq!(o.opus_fmtp.as_deref(), Some("minptime=10;useinbandfec=1"));
    // 110 is telephone-event/48000, 126 the /8000 one.
    assert_eq!(o.telephone_event_pt, Some(110));
    assert_eq!(o.audio_level_ext_id, Some(1));
    assert_eq!(o.ssrc, Some(2386652541));
    assert_eq!(o.cname.as_deref(), Some("H85p8l8Ws5/Fs/mM"));
    assert_eq!(o.direction, Direction::SendRecv);
    assert!(o.rtcp_mux && o.bundled);
    assert_eq!(
        o.media,
        [
            line("audio", "UDP/TLS/RTP/SAVPF", "0", "111", true),
            line("video", "UDP/TLS/RTP/SAVPF", "1", "96", false),
            line(
                "application",
                "UDP/DTLS/SCTP",
                "2",
                "webrtc-datachannel",
                false
            ),
        ]
    );
}

#[test]
fn chromium_answer_declines_video_and_data_channel() {
    let o = parse_offer(CHROMIUM).unwrap();
    let answer = build_answer(&o, &params("198.18.0.1:40000"));
    assert!(
        answer.ends_with("\r\n") && !answer.contains("\n\n"),
        "{answer}"
    );
    let sd = reparse(&answer);
    assert_eq!(
        (
            sd.origin.session_id,
            sd.origin.session_version,
            sd.origin.address_type.as_str(),
            sd.origin.unicast_address.as_str()
        ),
        (42, 7, "IP4", "198.18.0.1")
    );
    assert_eq!(attrs(&sd.attributes), ["ice-lite", "group:BUNDLE 0"]);
    assert_eq!(
        m_lines(&sd),
        [
            m("audio", 40000, "UDP/TLS/RTP/SAVPF", "111 110"),
            m("video", 0, "UDP/TLS/RTP/SAVPF", "96"),
            m("application", 0, "UDP/DTLS/SCTP", "webrtc-datachannel"),
        ]
    );
    let media = &sd.media_descriptions;
    assert_eq!(
        attrs(&media[0].attributes),
        audio_attrs("0", "sendrecv", 111, Some(110), Some(1))
    );
    let c = media[0]
        .connection_information
        .as_ref()
        .unwrap()
        .to_string();
    assert_eq!(c, "IN IP4 198.18.0.1");
    for (md, mid) in media[1..].iter().zip(["1", "2"]) {
        assert_eq!(attrs(&md.attributes), [format!("mid:{mid}")]);
        let c = md.connection_information.as_ref().unwrap().to_string();
        assert_eq!(c, "IN IP4 0.0.0.0");
    }
    // We are DTLS passive: our own parser refuses our answer as an offer for that reason
    // and no other (everything else in it is a valid WebRTC audio line).
    assert_eq!(parse_offer(&answer), Err(OfferError::BadSetup));
}

#[test]
fn audio_after_video_is_found_and_answered_in_place() {
    let o = parse_offer(CHROMIUM_VIDEO_FIRST).unwrap();
    assert_eq!((o.audio_mid.as_deref(), o.audio_index), (Some("1"), 1));
    assert_eq!(o.audio_level_ext_id, Some(14));
    assert_eq!(o.ssrc, Some(1015650578));
    assert!(o.bundled);
    let sd = reparse(&build_answer(&o, &params("198.18.0.1:40000")));
    assert_eq!(attrs(&sd.attributes), ["ice-lite", "group:BUNDLE 1"]);
    assert_eq!(
        m_lines(&sd),
        [
            m("video", 0, "UDP/TLS/RTP/SAVPF", "96"),
            m("audio", 40000, "UDP/TLS/RTP/SAVPF", "111 110"),
        ]
    );
    assert_eq!(attrs(&sd.media_descriptions[0].attributes), ["mid:0"]);
    assert_eq!(
        attrs(&sd.media_descriptions[1].attributes),
        audio_attrs("1", "sendrecv", 111, Some(110), Some(14))
    );
}

#[test]
fn directions_are_mirrored_and_only_a_sending_answer_has_an_ssrc() {
    let o = parse_offer(CHROMIUM_RECVONLY).unwrap();
    assert_eq!(o.direction, Direction::RecvOnly);
    assert_eq!((o.ssrc, o.cname.as_deref()), (None, None));
    let sd = reparse(&build_answer(&o, &params("198.18.0.1:40000")));
    assert_eq!(
        attrs(&sd.media_descriptions[0].attributes),
        audio_attrs("0", "sendonly", 111, Some(110), Some(1))
    );

    for (offered, answered, dir) in [
        ("sendonly", "recvonly", Direction::SendOnly),
        ("inactive", "inactive", Direction::Inactive),
    ] {
        let offer = CHROMIUM.replacen("a=sendrecv", &format!("a={offered}"), 1);
        let o = parse_offer(&offer).unwrap();
        assert_eq!(o.direction, dir);
        let sd = reparse(&build_answer(&o, &params("198.18.0.1:40000")));
        let got = attrs(&sd.media_descriptions[0].attributes);
        assert_eq!(got, audio_attrs("0", answered, 111, Some(110), Some(1)));
        assert!(!got
            .iter()
            .any(|a| a.starts_with("ssrc") || a.starts_with("msid")));
    }
}

#[test]
fn ipv6_candidate() {
    let o = parse_offer(CHROMIUM).unwrap();
    let answer = build_answer(&o, &params("[2001:db8::1]:40000"));
    let sd = reparse(&answer);
    assert_eq!(
        (
            sd.origin.address_type.as_str(),
            sd.origin.unicast_address.as_str()
        ),
        ("IP6", "2001:db8::1")
    );
    let audio = &sd.media_descriptions[0];
    let c = audio.connection_information.as_ref().unwrap().to_string();
    assert_eq!(c, "IN IP6 2001:db8::1");
    assert!(attrs(&audio.attributes)
        .contains(&"candidate:1 1 udp 2130706431 2001:db8::1 40000 typ host".to_string()));
}

#[test]
fn firefox_offer_session_level_fingerprint_and_opus_109() {
    let o = parse_offer(FIREFOX).unwrap();
    assert_eq!(
        o.ice,
        IceParams {
            ufrag: "a1b2c3d4".into(),
            pwd: "6e1d2e8bb7e35e5f0e8e3bd2c2d4a2f1".into()
        }
    );
    assert_eq!(
        o.fingerprint.value,
        "0B:30:55:7A:9F:C4:E9:0E:33:58:7D:A2:C7:EC:11:36:5B:80:A5:CA:EF:14:39:5E:83:A8:CD:F2:17:3C:61:86"
    );
    assert_eq!(o.setup, Setup::ActPass);
    assert_eq!(o.opus_pt, 109);
    assert_eq!(
        o.opus_fmtp.as_deref(),
        Some("maxplaybackrate=48000;stereo=1;useinbandfec=1")
    );
    // Firefox offers telephone-event at 8000 Hz only: not usable with Opus.
    assert_eq!(o.telephone_event_pt, None);
    assert_eq!(o.audio_level_ext_id, Some(1));
    assert_eq!(o.ssrc, Some(3196713443));
    assert_eq!(
        o.cname.as_deref(),
        Some("{5c4e4c3a-8f2b-4d8e-9a1c-2b3d4e5f6a7b}")
    );
    assert!(o.bundled);
    assert_eq!(
        o.media,
        [
            line("audio", "UDP/TLS/RTP/SAVPF", "0", "109", true),
            line("video", "UDP/TLS/RTP/SAVPF", "1", "120", false),
        ]
    );
    let sd = reparse(&build_answer(&o, &params("198.18.0.1:40000")));
    assert_eq!(attrs(&sd.attributes), ["ice-lite", "group:BUNDLE 0"]);
    assert_eq!(
        m_lines(&sd),
        [
            m("audio", 40000, "UDP/TLS/RTP/SAVPF", "109"),
            m("video", 0, "UDP/TLS/RTP/SAVPF", "120"),
        ]
    );
    assert_eq!(
        attrs(&sd.media_descriptions[0].attributes),
        audio_attrs("0", "sendrecv", 109, None, Some(1))
    );
}

/// A minimal offer every error case below changes in one place.
const MINIMAL: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
    m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\n\
    a=ice-pwd:0123456789012345678901\r\n\
    a=fingerprint:sha-256 AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:\
    AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99\r\n\
    a=setup:actpass\r\na=mid:0\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n";

fn without(line: &str) -> String {
    let out = MINIMAL.replace(&format!("{line}\r\n"), "");
    assert_ne!(out, MINIMAL, "{line} not in the minimal offer");
    out
}

fn with(from: &str, to: &str) -> String {
    let out = MINIMAL.replace(from, to);
    assert_ne!(out, MINIMAL, "{from} not in the minimal offer");
    out
}

fn malformed(offer: &str) -> bool {
    matches!(parse_offer(offer), Err(OfferError::Malformed(_)))
}

#[test]
fn minimal_offer_is_accepted_with_defaults() {
    let o = parse_offer(MINIMAL).unwrap();
    assert_eq!(
        (o.opus_pt, o.opus_fmtp, o.telephone_event_pt),
        (111, None, None)
    );
    assert_eq!((o.audio_level_ext_id, o.ssrc), (None, None));
    assert_eq!(o.direction, Direction::SendRecv);
    // No a=setup: RFC 4145's default, active; we are passive either way.
    assert_eq!(
        parse_offer(&without("a=setup:actpass")).unwrap().setup,
        Setup::Active
    );
    let active = parse_offer(&with("setup:actpass", "setup:active")).unwrap();
    assert_eq!(active.setup, Setup::Active);
    // LF-only line ends and a missing final line end read the same.
    let lf = MINIMAL.replace("\r\n", "\n");
    assert_eq!(
        parse_offer(lf.trim_end()).unwrap(),
        parse_offer(MINIMAL).unwrap()
    );
}

#[test]
fn every_error_has_its_minimal_offer() {
    let cases: Vec<(String, OfferError)> = vec![
        (
            with("m=audio 9", "m=video 9").replace("opus/48000/2", "VP8/90000"),
            OfferError::NoAudio,
        ),
        // An audio line with port 0 is disabled (no bundle-only).
        (with("m=audio 9", "m=audio 0"), OfferError::NoAudio),
        (with("opus/48000/2", "PCMU/8000"), OfferError::NoOpus),
        // Opus is stereo in SDP (RFC 7587); mono opus is not opus.
        (with("opus/48000/2", "opus/48000/1"), OfferError::NoOpus),
        // The rtpmap must be for a listed format.
        (with("SAVPF 111", "SAVPF 0"), OfferError::NoOpus),
        (
            without("a=fingerprint:sha-256 AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99"),
            OfferError::NoFingerprint,
        ),
        (
            with("fingerprint:sha-256", "fingerprint:sha-1"),
            OfferError::UnsupportedFingerprint,
        ),
        (without("a=ice-pwd:0123456789012345678901"), OfferError::NoIceCredentials),
        (without("a=ice-ufrag:abcd"), OfferError::NoIceCredentials),
        (without("a=rtcp-mux"), OfferError::NoRtcpMux),
        (with("setup:actpass", "setup:passive"), OfferError::BadSetup),
        (with("setup:actpass", "setup:holdconn"), OfferError::BadSetup),
        (with("UDP/TLS/RTP/SAVPF", "RTP/AVP"), OfferError::NotDtlsSrtp),
        (with("UDP/TLS/RTP/SAVPF", "RTP/SAVPF"), OfferError::NotDtlsSrtp),
    ];
    let mut reasons = std::collections::HashSet::new();
    for (offer, want) in &cases {
        let got = parse_offer(offer);
        assert_eq!(got.as_ref(), Err(want), "{offer}");
        reasons.insert(want.to_string());
    }
    reasons.insert(OfferError::Malformed("x".into()).to_string());
    assert_eq!(
        reasons.len(),
        9,
        "each error has its own reason: {reasons:?}"
    );
    assert!(reasons.iter().all(|r| r.len() > 10));
}

#[test]
fn malformed_offers() {
    assert!(malformed(""));
    assert!(malformed("garbage"));
    assert!(malformed("v=0\r\n"));
    assert!(malformed(&MINIMAL.replace("v=0", "v=1")));
    // Too large, even if it is valid SDP.
    let pad = "a=x-padding:0123456789012345678901234567890123456789012345678901234567890\r\n";
    let big = format!("{MINIMAL}{}", pad.repeat(MAX_OFFER_LEN / pad.len()));
    assert!(big.len() > MAX_OFFER_LEN && malformed(&big));
    // Control characters inside a line (a CR there would let a value end a line of ours).
    assert!(malformed(&with("a=mid:0", "a=mid:0\rX")));
    assert!(malformed(&with("a=mid:0", "a=mid:0\u{0}")));
    // ... also in attributes whose values we do not otherwise check.
    let fmtp = "a=mid:0\r\na=fmtp:111 minptime=10";
    assert!(parse_offer(&with("a=mid:0", fmtp)).is_ok());
    assert!(malformed(&with("a=mid:0", &format!("{fmtp}\r;x"))));
    assert!(malformed(&with("a=mid:0", &format!("{fmtp}\u{1b}[31m"))));
    assert!(malformed(&with("a=mid:0", "a=mid:a b")));
    assert!(malformed(&with(
        "a=mid:0",
        &format!("a=mid:{}", "m".repeat(33))
    )));
    assert!(malformed(&with("ice-ufrag:abcd", "ice-ufrag:ab")));
    assert!(malformed(&with("ice-ufrag:abcd", "ice-ufrag:ab;d")));
    assert!(malformed(&with(
        "ice-pwd:0123456789012345678901",
        "ice-pwd:short"
    )));
    assert!(malformed(&with(
        "AA:BB:CC:DD:EE:FF:00:11",
        "AA:BB:CC:DD:EE:FF:00"
    )));
    assert!(malformed(&with(
        "AA:BB:CC:DD:EE:FF:00:11",
        "AA:BB:CC:DD:EE:FF:00:1G"
    )));
    assert!(malformed(&with("setup:actpass", "setup:sometimes")));
    let dup = with(
        "a=rtpmap:111 opus/48000/2\r\n",
        "a=rtpmap:111 opus/48000/2\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n",
    );
    assert!(malformed(&dup));
    assert!(malformed(&with(
        "a=mid:0",
        "a=mid:0\r\na=ssrc:notanumber cname:x"
    )));
    assert!(malformed(&with(
        "a=mid:0",
        &format!("a=mid:0\r\na=ssrc:1 cname:{}", "c".repeat(256))
    )));
    assert!(malformed(&with(
        "a=mid:0",
        "a=mid:0\r\na=extmap:0 urn:ietf:params:rtp-hdrext:ssrc-audio-level"
    )));
    assert!(malformed(&with(
        "a=mid:0",
        "a=mid:0\r\na=extmap:256 urn:ietf:params:rtp-hdrext:ssrc-audio-level"
    )));
    // A media type the sdp crate does not know.
    assert!(malformed(&format!(
        "{MINIMAL}m=x-future 9 UDP/TLS/RTP/SAVPF 1\r\n"
    )));
}

#[test]
fn media_level_wins_over_session_level() {
    let session = "a=group:BUNDLE 0\r\na=ice-ufrag:SESS\r\na=ice-pwd:sessionsessionsession00\r\n\
        a=fingerprint:sha-256 11:11:11:11:11:11:11:11:11:11:11:11:11:11:11:11:11:11:11:11:11:11:11:11:11:11:11:11:11:11:11:11\r\n\
        a=setup:passive\r\n";
    let both = with("a=group:BUNDLE 0\r\n", session);
    let o = parse_offer(&both).unwrap();
    assert_eq!(o.ice.ufrag, "abcd");
    assert_eq!(o.ice.pwd, "0123456789012345678901");
    assert!(o.fingerprint.value.starts_with("AA:BB"));
    assert_eq!(o.setup, Setup::ActPass);

    // Only at session level: used.
    let mut only_session = both.clone();
    for l in [
        "a=ice-ufrag:abcd\r\n",
        "a=ice-pwd:0123456789012345678901\r\n",
        "a=setup:actpass\r\n",
    ] {
        only_session = only_session.replace(l, "");
    }
    let fp = "a=fingerprint:sha-256 AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:\
              AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99\r\n";
    only_session = only_session.replace(fp, "");
    assert_eq!(parse_offer(&only_session), Err(OfferError::BadSetup));
    let o = parse_offer(&only_session.replace("setup:passive", "setup:actpass")).unwrap();
    assert_eq!((o.ice.ufrag.as_str(), o.setup), ("SESS", Setup::ActPass));
    assert_eq!(o.fingerprint.sha256(), Some([0x11; 32]));

    // A media-level sha-1 fingerprint hides the session-level sha-256 one.
    let sha1_media = both.replace("a=fingerprint:sha-256 AA:BB", "a=fingerprint:sha-1 AA:BB");
    assert_eq!(
        parse_offer(&sha1_media),
        Err(OfferError::UnsupportedFingerprint)
    );
    // Several fingerprints: the sha-256 one is taken.
    let two = with(
        "a=setup:actpass",
        "a=fingerprint:sha-1 01:02\r\na=setup:actpass",
    );
    assert!(parse_offer(&two)
        .unwrap()
        .fingerprint
        .value
        .starts_with("AA:BB"));
}

#[test]
fn first_audio_line_with_opus_is_accepted() {
    let pcmu_audio = "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:a\r\na=rtpmap:0 PCMU/8000\r\n";
    let second_opus = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:c\r\na=rtpmap:111 opus/48000/2\r\n";
    let offer = with("m=audio", &format!("{pcmu_audio}m=audio")) + second_opus;
    let o = parse_offer(&offer).unwrap();
    assert_eq!((o.audio_index, o.audio_mid.as_deref()), (1, Some("0")));
    let sd = reparse(&build_answer(&o, &params("198.18.0.1:40000")));
    assert_eq!(
        m_lines(&sd),
        [
            m("audio", 0, "UDP/TLS/RTP/SAVPF", "0"),
            m("audio", 40000, "UDP/TLS/RTP/SAVPF", "111"),
            m("audio", 0, "UDP/TLS/RTP/SAVPF", "111"),
        ]
    );
    assert_eq!(attrs(&sd.attributes), ["ice-lite", "group:BUNDLE 0"]);
    assert_eq!(attrs(&sd.media_descriptions[2].attributes), ["mid:c"]);

    // A bundle-only audio line (port 0) is not disabled.
    let bundle_only = with("m=audio 9", "m=audio 0").replace("a=mid:0", "a=mid:0\r\na=bundle-only");
    assert_eq!(parse_offer(&bundle_only).unwrap().audio_index, 0);
}

#[test]
fn bundle_group_only_when_offered() {
    let unbundled = without("a=group:BUNDLE 0");
    let o = parse_offer(&unbundled).unwrap();
    assert!(!o.bundled);
    let sd = reparse(&build_answer(&o, &params("198.18.0.1:40000")));
    assert_eq!(attrs(&sd.attributes), ["ice-lite"]);
    // A group without the audio mid does not bundle it; a line without mid neither.
    assert!(!parse_offer(&with("BUNDLE 0", "BUNDLE 1")).unwrap().bundled);
    let no_mid = parse_offer(&without("a=mid:0")).unwrap();
    assert_eq!((no_mid.audio_mid.as_deref(), no_mid.bundled), (None, false));
    let sd = reparse(&build_answer(&no_mid, &params("198.18.0.1:40000")));
    assert_eq!(attrs(&sd.attributes), ["ice-lite"]);
    assert!(!attrs(&sd.media_descriptions[0].attributes)
        .iter()
        .any(|a| a.starts_with("mid")));
}

#[test]
fn offer_survives_replication() {
    let o = parse_offer(CHROMIUM).unwrap();
    let bytes = postcard::to_allocvec(&o).unwrap();
    let back: webrtc_core::sdp::Offer = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back, o);
    assert_eq!(
        build_answer(&back, &params("198.18.0.1:40000")),
        build_answer(&o, &params("198.18.0.1:40000"))
    );
}

/// Every prefix of a real offer, and the offer with each byte replaced: never a panic, and
/// whatever is accepted answers with one line per offered line.
#[test]
fn hostile_variations_never_panic() {
    let p = params("198.18.0.1:40000");
    let check = |text: &str| {
        if let Ok(o) = parse_offer(text) {
            let sd = reparse(&build_answer(&o, &p));
            assert_eq!(sd.media_descriptions.len(), o.media.len());
        }
    };
    for end in (0..=FIREFOX.len()).filter(|i| FIREFOX.is_char_boundary(*i)) {
        check(&FIREFOX[..end]);
    }
    let bytes = CHROMIUM_RECVONLY.as_bytes();
    for i in 0..bytes.len() {
        for b in [b'\r', b'\n', b' ', b':', b'=', b'0', b'm', 0xff] {
            let mut v = bytes.to_vec();
            v[i] = b;
            check(&String::from_utf8_lossy(&v));
        }
    }
}

#[test]
fn error_reason_is_readable() {
    let e = parse_offer("garbage").unwrap_err();
    assert!(e.to_string().starts_with("malformed SDP offer: "), "{e}");
}

fn with_video(candidate: &str) -> AnswerParams {
    AnswerParams {
        video: Some(VideoAnswer {
            ssrc: 0x0bad_cafe,
            msid_track: "video".into(),
        }),
        ..params(candidate)
    }
}

#[test]
fn chromium_video_is_read() {
    let o = parse_offer(CHROMIUM).unwrap();
    assert_eq!(o.bundle_group, ["0", "1", "2"]);
    assert_eq!(
        o.video,
        Some(VideoOffer {
            index: 1,
            mid: "1".into(),
            vp8_pt: 96,
            feedback: VideoFeedback {
                nack: true,
                pli: true,
                fir: true,
                remb: true
            },
            // The first SSRC of its FID group (the second is RTX).
            ssrc: Some(1180565524),
            direction: Direction::SendRecv,
        })
    );
}

#[test]
fn chromium_answer_accepts_vp8_bundled_with_audio() {
    let o = parse_offer(CHROMIUM).unwrap();
    let answer = build_answer(&o, &with_video("198.18.0.1:40000"));
    let sd = reparse(&answer);
    assert_eq!(attrs(&sd.attributes), ["ice-lite", "group:BUNDLE 0 1"]);
    assert_eq!(
        m_lines(&sd),
        [
            m("audio", 40000, "UDP/TLS/RTP/SAVPF", "111 110"),
            m("video", 40000, "UDP/TLS/RTP/SAVPF", "96"),
            m("application", 0, "UDP/DTLS/SCTP", "webrtc-datachannel"),
        ]
    );
    // The audio line is unchanged by the video.
    assert_eq!(
        attrs(&sd.media_descriptions[0].attributes),
        audio_attrs("0", "sendrecv", 111, Some(110), Some(1))
    );
    assert_eq!(
        attrs(&sd.media_descriptions[1].attributes),
        [
            "mid:1",
            "sendrecv",
            "rtcp-mux",
            "rtpmap:96 VP8/90000",
            "rtcp-fb:96 goog-remb",
            "rtcp-fb:96 ccm fir",
            "rtcp-fb:96 nack",
            "rtcp-fb:96 nack pli",
            "ice-ufrag:uSrv",
            "ice-pwd:0123456789abcdefghijklmn",
            &format!("fingerprint:sha-256 {OUR_FP}"),
            "setup:passive",
            "ssrc:195939070 cname:understudy",
            "ssrc:195939070 msid:room video",
            "msid:room video",
            "candidate:1 1 udp 2130706431 198.18.0.1 40000 typ host",
            "end-of-candidates",
        ]
    );
    // No RTX, transport-cc, header extension or simulcast anywhere in the answer.
    for absent in [
        "rtx",
        "transport-cc",
        "simulcast",
        "ssrc-group",
        "H264",
        "red/",
    ] {
        assert!(!answer.contains(absent), "{absent} in\n{answer}");
    }
    assert!(!sd.media_descriptions[1]
        .attributes
        .iter()
        .any(|a| a.key == "extmap"));
    // Read back as an offer (setup turned around): the same video line.
    let back = parse_offer(&answer.replace("a=setup:passive", "a=setup:active")).unwrap();
    let v = back.video.unwrap();
    assert_eq!((v.index, v.vp8_pt, v.ssrc), (1, 96, Some(0x0bad_cafe)));
}

#[test]
fn video_first_offer_bundles_in_offer_order() {
    let o = parse_offer(CHROMIUM_VIDEO_FIRST).unwrap();
    let v = o.video.clone().unwrap();
    assert_eq!((v.index, v.mid.as_str(), v.vp8_pt), (0, "0", 96));
    let sd = reparse(&build_answer(&o, &with_video("198.18.0.1:40000")));
    assert_eq!(attrs(&sd.attributes), ["ice-lite", "group:BUNDLE 0 1"]);
    assert_eq!(sd.media_descriptions[0].media_name.port.value, 40000);
}

#[test]
fn video_directions_are_mirrored() {
    for (offered, answered, ssrc) in [
        ("recvonly", "sendonly", true),
        ("sendonly", "recvonly", false),
        ("inactive", "inactive", false),
    ] {
        // The second a=sendrecv is the video line's.
        let offer = CHROMIUM
            .replacen("a=sendrecv", "a=AUDIO", 1)
            .replacen("a=sendrecv", &format!("a={offered}"), 1)
            .replacen("a=AUDIO", "a=sendrecv", 1);
        let o = parse_offer(&offer).unwrap();
        let sd = reparse(&build_answer(&o, &with_video("198.18.0.1:40000")));
        let got = attrs(&sd.media_descriptions[1].attributes);
        assert_eq!(got[1], answered);
        assert_eq!(got.iter().any(|a| a.starts_with("ssrc:")), ssrc, "{got:?}");
    }
}

#[test]
fn video_declined_when_not_served_or_not_shareable() {
    let declined = |offer: &str| {
        let o = parse_offer(offer).unwrap();
        let sd = reparse(&build_answer(&o, &with_video("198.18.0.1:40000")));
        let v = &sd.media_descriptions[1];
        assert_eq!(attrs(&sd.attributes), ["ice-lite", "group:BUNDLE 0"]);
        (
            o.video.is_none(),
            v.media_name.port.value,
            attrs(&v.attributes),
        )
    };
    let no = (true, 0, vec!["mid:1".to_string()]);
    // Video not in the audio's BUNDLE group: it would need a transport of its own.
    let chromium_with = |from: &str, to: &str| {
        let out = CHROMIUM.replace(from, to);
        assert_ne!(out, CHROMIUM, "{from}");
        out
    };
    assert_eq!(
        declined(&chromium_with("a=group:BUNDLE 0 1 2", "a=group:BUNDLE 0 2")),
        no
    );
    // No VP8 offered.
    assert_eq!(
        declined(&chromium_with(
            "a=rtpmap:96 VP8/90000",
            "a=rtpmap:96 VP7/90000"
        )),
        no
    );
    // Disabled line, no rtcp-mux.
    let no_mux = CHROMIUM.replacen("a=rtcp-mux\r\n", "", 2).replacen(
        "a=rtpmap:111",
        "a=rtcp-mux\r\na=rtpmap:111",
        1,
    );
    assert_eq!(declined(&no_mux), no);
    // Other ICE credentials on the video line.
    let ufrag = CHROMIUM
        .lines()
        .find(|l| l.starts_with("a=ice-ufrag:"))
        .unwrap();
    let other =
        CHROMIUM
            .replacen(ufrag, "a=ice-ufrag:XXXX", 2)
            .replacen("a=ice-ufrag:XXXX", ufrag, 1);
    assert_eq!(declined(&other), no);
    // Video served but the driver has none for it: the audio-only answer, as before.
    let o = parse_offer(CHROMIUM).unwrap();
    assert!(o.video.is_some());
    assert_eq!(
        build_answer(&o, &params("198.18.0.1:40000")),
        build_answer(
            &webrtc_core::sdp::Offer {
                video: None,
                ..o.clone()
            },
            &params("198.18.0.1:40000")
        )
    );
}
