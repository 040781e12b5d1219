#![no_main]
//! `webrtc_core::sdp::parse_offer` on arbitrary bytes (lossy UTF-8), as the WHIP endpoint runs
//! it on every POSTed offer: no panic; an accepted offer accepts exactly one audio line; our
//! answer to it (IPv4 and IPv6 candidate) parses with the `sdp` crate with one m= line per
//! offered line, and read back as an offer (with our `setup:passive` turned into `active`) it
//! gives the same audio line, codec, extension id and BUNDLE decision, mirrored direction,
//! and the same accepted video line (payload type, feedback; our SSRC when we send).
use libfuzzer_sys::fuzz_target;
use std::io::Cursor;
use webrtc_core::sdp::{build_answer, parse_offer, AnswerParams, OfferError};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(offer) = parse_offer(&text) else {
        return;
    };
    assert_eq!(offer.media.iter().filter(|l| l.accepted).count(), 1);
    assert!(offer.media[offer.audio_index].accepted);
    assert_eq!(offer.media[offer.audio_index].mid, offer.audio_mid);
    assert!(offer.fingerprint.sha256().is_some());
    for candidate in ["198.18.0.1:40000", "[2001:db8::1]:40000"] {
        let p = AnswerParams {
            session_id: 1,
            session_version: 1,
            ice_ufrag: "uSrv".into(),
            ice_pwd: "0123456789abcdefghijklmn".into(),
            fingerprint_sha256: ["AB"; 32].join(":"),
            candidate: candidate.parse().unwrap(),
            ssrc: 1,
            cname: "understudy".into(),
            msid_stream: "room".into(),
            msid_track: "mix".into(),
            video: Some(webrtc_core::sdp::VideoAnswer {
                ssrc: 2,
                msid_track: "video".into(),
            }),
        };
        let answer = build_answer(&offer, &p);
        let sd = sdp::description::session::SessionDescription::unmarshal(&mut Cursor::new(
            answer.as_bytes(),
        ))
        .expect("our answer parses");
        assert_eq!(sd.media_descriptions.len(), offer.media.len());
        assert_eq!(parse_offer(&answer), Err(OfferError::BadSetup));
        let back = parse_offer(&answer.replace("a=setup:passive", "a=setup:active"))
            .expect("our answer reads as an offer");
        assert_eq!(back.audio_index, offer.audio_index);
        assert_eq!(back.audio_mid, offer.audio_mid);
        assert_eq!(back.opus_pt, offer.opus_pt);
        assert_eq!(back.telephone_event_pt, offer.telephone_event_pt);
        assert_eq!(back.audio_level_ext_id, offer.audio_level_ext_id);
        assert_eq!(back.direction, offer.direction.mirror());
        assert_eq!(back.bundled, offer.bundled);
        assert_eq!(back.media.len(), offer.media.len());
        let video = |o: &webrtc_core::sdp::Offer| {
            o.video
                .as_ref()
                .map(|v| (v.index, v.mid.clone(), v.vp8_pt, v.feedback))
        };
        assert_eq!(video(&back), video(&offer));
        if let (Some(b), Some(o)) = (&back.video, &offer.video) {
            assert_eq!(b.direction, o.direction.mirror());
            assert_eq!(b.ssrc, o.direction.mirror().sends().then_some(2));
        }
        for (i, (b, o)) in back.media.iter().zip(&offer.media).enumerate() {
            assert_eq!(
                (&b.media, &b.proto, &b.mid, b.accepted),
                (&o.media, &o.proto, &o.mid, o.accepted)
            );
            if !o.accepted && offer.video.as_ref().is_none_or(|v| v.index != i) {
                assert_eq!(b.format, o.format);
            }
        }
    }
});
