//! Messages as stock clients send them: sipp's built-in `uac` scenario and a baresip call
//! offering Opus.

mod common;
use common::*;
use sip_core::sdp::{self, CodecName, Direction};
use sip_core::{EndReason, Event, Transport};

/// Expand sipp's `uac` scenario template the way sipp 3.6 does (`-sn uac -s room1`, UDP,
/// local 198.18.0.10:5061, media port 6000): lines trimmed, CRLF, `[len]` = body length.
fn sipp(template: &str, peer_tag: &str) -> String {
    let text = template
        .replace("[service]", "room1")
        .replace("[remote_ip]", "198.18.0.1")
        .replace("[remote_port]", "5060")
        .replace("[transport]", "UDP")
        .replace("[local_ip]", "198.18.0.10")
        .replace("[local_port]", "5061")
        .replace("[pid]", "3471")
        .replace("[call_number]", "1")
        .replace("[call_id]", "1-3471@198.18.0.10")
        .replace("[local_ip_type]", "4")
        .replace("[media_ip_type]", "4")
        .replace("[media_ip]", "198.18.0.10")
        .replace("[media_port]", "6000")
        .replace("[peer_tag_param]", &format!(";tag={peer_tag}"));
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let split = lines
        .iter()
        .position(|l| *l == "v=0")
        .unwrap_or(lines.len());
    let body: String = lines[split..].iter().map(|l| format!("{l}\r\n")).collect();
    let head: String = lines[..split].iter().map(|l| format!("{l}\r\n")).collect();
    head.replace("[len]", &body.len().to_string()) + "\r\n" + &body
}

const SIPP_INVITE: &str = "
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-3471-1-0
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Subject: Performance Test
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
";

const SIPP_ACK: &str = "
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-3471-1-5
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Subject: Performance Test
      Content-Length: 0
";

const SIPP_BYE: &str = "
      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-3471-1-7
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Subject: Performance Test
      Content-Length: 0
";

#[test]
fn sipp_uac_scenario_call() {
    let mut h = Harness::new();
    h.udp(ALICE, &sipp(SIPP_INVITE, ""));
    let out = h.out();
    assert_eq!(out[0].status(), 100);
    let (call, offer) = match h.events().pop() {
        Some(Event::IncomingCall {
            call, room, offer, ..
        }) => {
            assert_eq!(room, "room1");
            (call, offer.unwrap())
        }
        e => panic!("{e:?}"),
    };
    let neg = sdp::negotiate(&offer).unwrap();
    assert_eq!(
        (neg.codec, neg.payload_type, neg.ptime_ms),
        (CodecName::Pcmu, 0, 20)
    );
    assert_eq!(neg.remote_rtp, addr("198.18.0.10:6000"));
    assert_eq!(neg.remote_rtcp, addr("198.18.0.10:6001"));
    h.core.accept(call, answer_for(&offer), h.now).unwrap();
    let ok = h.out().pop().unwrap();
    assert_eq!(ok.status(), 200);
    // sipp matches the response by Call-ID and CSeq and echoes the To tag.
    assert_eq!(ok.header("call-id"), Some("1-3471@198.18.0.10"));
    assert_eq!(
        ok.header("from"),
        Some("sipp <sip:sipp@198.18.0.10:5061>;tag=3471SIPpTag001")
    );
    assert_eq!(ok.to, addr(ALICE));
    let answer = sdp::negotiate(&ok.body).unwrap();
    assert_eq!(answer.codec, CodecName::Pcmu);
    let tag = ok.to_tag();
    h.udp(ALICE, &sipp(SIPP_ACK, &tag));
    assert_eq!(h.events(), vec![Event::Confirmed { call, answer: None }]);
    h.udp(ALICE, &sipp(SIPP_BYE, &tag));
    let r = h.out().pop().unwrap();
    assert_eq!((r.status(), r.cseq()), (200, "2 BYE"));
    assert_eq!(
        h.events(),
        vec![Event::CallEnded {
            call,
            reason: EndReason::ByeReceived
        }]
    );
    assert_eq!(
        h.core.stats().malformed_answered + h.core.stats().malformed_dropped,
        0
    );
}

const BARESIP_SDP: &str = "v=0\r\n\
o=- 2061930543 2596364339 IN IP4 198.18.0.10\r\n\
s=-\r\n\
c=IN IP4 198.18.0.10\r\n\
t=0 0\r\n\
m=audio 10762 RTP/AVP 96 0 8 101\r\n\
b=AS:128\r\n\
a=rtpmap:96 opus/48000/2\r\n\
a=fmtp:96 stereo=1;sprop-stereo=1\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/48000\r\n\
a=fmtp:101 0-15\r\n\
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
a=sendrecv\r\n\
a=label:1\r\n\
a=rtcp-mux\r\n\
a=ssrc:1868179262 cname:4a3b0c3e-4d8e-4f2c-9a1e-0f8b2d6c7e55\r\n\
a=ptime:20\r\n";

fn baresip_invite(transport: &str) -> String {
    with_len(
        &format!(
            "INVITE sip:room1@198.18.0.1:5060;transport={lt} SIP/2.0\r\n\
Via: SIP/2.0/{transport} 198.18.0.10:44612;branch=z9hG4bK2e5f0c3a1b7d9e44;rport\r\n\
Contact: <sip:alice-0x5626c4b0e2f0@198.18.0.10:44612;transport={lt}>\r\n\
Max-Forwards: 70\r\n\
To: <sip:room1@198.18.0.1:5060;transport={lt}>\r\n\
From: <sip:alice@198.18.0.10>;tag=8e1c0f6f3a4a1b2c\r\n\
Call-ID: 3f1c9a70c8a44b01\r\n\
CSeq: 19187 INVITE\r\n\
User-Agent: baresip v3.10.1 (x86_64/linux)\r\n\
Allow: INVITE,ACK,BYE,CANCEL,OPTIONS,NOTIFY,SUBSCRIBE,INFO,MESSAGE,UPDATE,REFER\r\n\
Supported: replaces,norefersub\r\n\
Content-Type: application/sdp\r\n",
            lt = transport.to_ascii_lowercase()
        ),
        BARESIP_SDP,
    )
}

#[test]
fn baresip_opus_call_over_tcp() {
    let mut h = Harness::new();
    // baresip uses an ephemeral source port; rport makes us answer there.
    let src = "198.18.0.10:51000";
    h.tcp(4, src, baresip_invite("TCP").as_bytes());
    let out = h.out();
    assert_eq!(out[0].status(), 100);
    assert_eq!(out[0].transport, Transport::Tcp(4));
    assert_eq!(
        out[0].header("via"),
        Some("SIP/2.0/TCP 198.18.0.10:44612;branch=z9hG4bK2e5f0c3a1b7d9e44;rport=51000;received=198.18.0.10")
    );
    let (call, offer) = match h.events().pop() {
        Some(Event::IncomingCall {
            call,
            room,
            from_uri,
            offer,
            ..
        }) => {
            assert_eq!(room, "room1");
            assert_eq!(from_uri, "sip:alice@198.18.0.10");
            (call, offer.unwrap())
        }
        e => panic!("{e:?}"),
    };
    let neg = sdp::negotiate(&offer).unwrap();
    assert_eq!(neg.codec, CodecName::Opus);
    assert_eq!(neg.payload_type, 96);
    assert_eq!(neg.telephone_event_pt, Some(101));
    assert_eq!(neg.audio_level_ext_id, Some(1));
    assert!(neg.rtcp_mux);
    assert_eq!(neg.remote_rtcp, addr("198.18.0.10:10762"));
    assert_eq!(neg.direction, Direction::SendRecv);
    let answer = answer_for(&offer);
    for line in [
        "m=audio 40000 RTP/AVP 96 101",
        "a=rtpmap:96 opus/48000/2",
        "a=fmtp:96 useinbandfec=1",
        "a=rtpmap:101 telephone-event/48000",
        "a=ptime:20",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        "a=rtcp-mux",
        "a=sendrecv",
    ] {
        assert!(
            answer.contains(&format!("{line}\r\n")),
            "missing {line} in\n{answer}"
        );
    }
    h.core.accept(call, answer, h.now).unwrap();
    let ok = h.out().pop().unwrap();
    assert_eq!(
        ok.header("contact"),
        Some("<sip:room1@198.18.0.1:5060;transport=tcp>")
    );
    let tag = ok.to_tag();
    let ack = with_len(
        &format!(
            "ACK sip:room1@198.18.0.1:5060;transport=tcp SIP/2.0\r\n\
Via: SIP/2.0/TCP 198.18.0.10:44612;branch=z9hG4bK11aa22bb33cc44dd;rport\r\n\
Max-Forwards: 70\r\nTo: <sip:room1@198.18.0.1:5060;transport=tcp>;tag={tag}\r\n\
From: <sip:alice@198.18.0.10>;tag=8e1c0f6f3a4a1b2c\r\nCall-ID: 3f1c9a70c8a44b01\r\n\
CSeq: 19187 ACK\r\nUser-Agent: baresip v3.10.1 (x86_64/linux)\r\n"
        ),
        "",
    );
    h.tcp(4, src, ack.as_bytes());
    assert_eq!(h.events(), vec![Event::Confirmed { call, answer: None }]);
    // Our hangup goes to the Contact over the same connection.
    h.core.hangup(call, h.now).unwrap();
    let bye = h.out().pop().unwrap();
    assert_eq!(
        bye.start,
        "BYE sip:alice-0x5626c4b0e2f0@198.18.0.10:44612;transport=tcp SIP/2.0"
    );
    assert_eq!(bye.transport, Transport::Tcp(4));
    assert!(bye
        .header("via")
        .unwrap()
        .starts_with("SIP/2.0/TCP 198.18.0.1:5060;branch=z9hG4bK"));
    assert_eq!(
        bye.header("to"),
        Some("<sip:alice@198.18.0.10>;tag=8e1c0f6f3a4a1b2c")
    );
    // Reliable transport: no BYE retransmissions.
    assert!(h.advance_to(std::time::Duration::from_secs(10)).is_empty());
}

#[test]
fn baresip_opus_call_over_udp_with_rport() {
    let mut h = Harness::new();
    h.udp("198.18.0.10:44612", &baresip_invite("UDP"));
    let out = h.out();
    assert_eq!(out[0].to, addr("198.18.0.10:44612"));
    assert!(matches!(h.events().pop(), Some(Event::IncomingCall { .. })));
}

/// The INVITE baresip 1.0.0 (Debian 12 `baresip-core`) sent to `examples/uas.rs`, captured
/// with `baresip -s` (UDP, 127.0.0.1:5080 -> 127.0.0.1:5070).
#[test]
fn baresip_captured_invite() {
    let inv = include_bytes!("data/baresip-1.0.0-invite.sip");
    let mut h = Harness::new();
    h.core.handle_datagram(addr("127.0.0.1:5080"), inv, h.now);
    let out = h.out();
    assert_eq!(out[0].status(), 100);
    assert_eq!(
        out[0].header("via"),
        Some("SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK27d3c4fa931c12b6;rport=5080;received=127.0.0.1")
    );
    let (call, offer) = match h.events().pop() {
        Some(Event::IncomingCall {
            call, room, offer, ..
        }) => {
            assert_eq!(room, "room3");
            (call, offer.unwrap())
        }
        e => panic!("{e:?}"),
    };
    let neg = sdp::negotiate(&offer).unwrap();
    assert_eq!(
        (neg.codec, neg.payload_type, neg.ptime_ms),
        (CodecName::Opus, 96, 20)
    );
    // telephone-event/8000 does not match Opus' 48 kHz clock.
    assert_eq!(neg.telephone_event_pt, None);
    assert_eq!(neg.remote_rtp, addr("192.0.2.2:6772"));
    h.core.accept(call, answer_for(&offer), h.now).unwrap();
    assert_eq!(h.out()[0].status(), 200);
}
