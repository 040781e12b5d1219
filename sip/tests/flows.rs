//! Call flows driven through the public API in virtual time; assertions are on the bytes the
//! core emits, parsed back.

mod common;
use common::*;
use sip_core::sdp::{self, Direction};
use sip_core::{Core, EndReason, Event, Transport};
use std::time::Duration;

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

#[test]
fn udp_invite_trying_ok_ack_bye() {
    let mut h = Harness::new();
    h.udp(ALICE, &invite("z9hG4bK-inv1", "call-1", 1, PCMU_OFFER));
    let out = h.out();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].status(), 100);
    assert_eq!(out[0].cseq(), "1 INVITE");
    assert_eq!(out[0].to, addr(ALICE));
    assert_eq!(out[0].transport, Transport::Udp);
    let ev = h.events();
    let call = match &ev[..] {
        [Event::IncomingCall {
            call,
            room,
            from_uri,
            source,
            transport,
            offer,
        }] => {
            assert_eq!(room, "room1");
            assert_eq!(from_uri, "sip:sipp@198.18.0.10:5061");
            assert_eq!(*source, addr(ALICE));
            assert_eq!(*transport, Transport::Udp);
            assert_eq!(offer.as_deref(), Some(PCMU_OFFER));
            *call
        }
        e => panic!("{e:?}"),
    };
    assert_eq!(h.core.calls().len(), 1);
    assert!(!h.core.calls()[0].confirmed);
    let answer = answer_for(PCMU_OFFER);
    h.core.accept(call, answer.clone(), h.now).unwrap();
    let ok = h.out().pop().unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        ok.header("contact"),
        Some("<sip:room1@198.18.0.1:5060;transport=udp>")
    );
    assert!(ok.header("allow").unwrap().contains("BYE"));
    assert!(ok.header("supported").is_some());
    assert_eq!(ok.header("content-type"), Some("application/sdp"));
    assert_eq!(ok.body, answer);
    assert_eq!(
        ok.header("via"),
        Some("SIP/2.0/UDP 198.18.0.10:5061;branch=z9hG4bK-inv1")
    );
    let tag = ok.to_tag();
    assert!(!tag.is_empty());
    assert_eq!(
        h.core.accept(call, answer, h.now),
        Err(sip_core::Error::InvalidState(
            "no INVITE awaiting an answer"
        ))
    );

    h.now = ms(100);
    h.udp(
        ALICE,
        &in_dialog("ACK", "z9hG4bK-ack1", "call-1", 1, &tag, "", ""),
    );
    assert!(h.out().is_empty());
    assert_eq!(h.events(), vec![Event::Confirmed { call, answer: None }]);
    assert!(h.core.calls()[0].confirmed);
    // No more 200 retransmissions once ACKed.
    assert!(h.advance_to(Duration::from_secs(40)).is_empty());

    h.udp(
        ALICE,
        &in_dialog("BYE", "z9hG4bK-bye1", "call-1", 2, &tag, "", ""),
    );
    let out = h.out();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].status(), 200);
    assert_eq!(out[0].cseq(), "2 BYE");
    assert_eq!(
        h.events(),
        vec![Event::CallEnded {
            call,
            reason: EndReason::ByeReceived
        }]
    );
    assert!(h.core.calls().is_empty());
    assert_eq!(h.core.stats().messages_in, 3);
}

fn tcp_invite() -> String {
    invite("z9hG4bK-tcp1", "call-tcp", 1, PCMU_OFFER).replace("SIP/2.0/UDP", "SIP/2.0/TCP")
}

#[test]
fn tcp_flow_split_reads_and_two_messages_in_one_read() {
    let mut h = Harness::new();
    let inv = tcp_invite();
    let b = inv.as_bytes();
    // Split across three reads: inside the head, and inside the body.
    h.tcp(9, ALICE, &b[..40]);
    assert!(h.out().is_empty());
    h.tcp(9, ALICE, &b[40..b.len() - 30]);
    assert!(h.out().is_empty());
    assert!(h.events().is_empty());
    h.tcp(9, ALICE, &b[b.len() - 30..]);
    let out = h.out();
    assert_eq!(out[0].status(), 100);
    assert_eq!(out[0].transport, Transport::Tcp(9));
    let call = match h.events().pop() {
        Some(Event::IncomingCall {
            call, transport, ..
        }) => {
            assert_eq!(transport, Transport::Tcp(9));
            call
        }
        e => panic!("{e:?}"),
    };
    h.core.accept(call, answer_for(PCMU_OFFER), h.now).unwrap();
    let ok = h.out().pop().unwrap();
    assert_eq!(ok.transport, Transport::Tcp(9));
    assert_eq!(
        ok.header("contact"),
        Some("<sip:room1@198.18.0.1:5060;transport=tcp>")
    );
    // Reliable transport: the 2xx is not retransmitted.
    let tag = ok.to_tag();
    assert!(h.advance_to(ms(5000)).is_empty());
    // Keep-alive, ACK and BYE in a single read.
    let mut both = b"\r\n\r\n".to_vec();
    both.extend(
        in_dialog("ACK", "z9hG4bK-a", "call-tcp", 1, &tag, "", "")
            .replace("/UDP", "/TCP")
            .bytes(),
    );
    both.extend(
        in_dialog("BYE", "z9hG4bK-b", "call-tcp", 2, &tag, "", "")
            .replace("/UDP", "/TCP")
            .bytes(),
    );
    h.tcp(9, ALICE, &both);
    let raw = h.raw_out();
    assert_eq!(raw[0].data, b"\r\n", "pong for the CRLFCRLF ping");
    let bye_ok = Msg::parse(&raw[1]);
    assert_eq!(bye_ok.status(), 200);
    assert_eq!(bye_ok.cseq(), "2 BYE");
    assert_eq!(
        h.events(),
        vec![
            Event::Confirmed { call, answer: None },
            Event::CallEnded {
                call,
                reason: EndReason::ByeReceived
            }
        ]
    );
}

#[test]
fn tcp_close_ends_calls() {
    let mut h = Harness::new();
    h.tcp(3, ALICE, tcp_invite().as_bytes());
    let call = match h.events().pop() {
        Some(Event::IncomingCall { call, .. }) => call,
        e => panic!("{e:?}"),
    };
    h.core.handle_stream_closed(3, h.now);
    assert_eq!(
        h.events(),
        vec![Event::CallEnded {
            call,
            reason: EndReason::TransportClosed
        }]
    );
    assert!(h.core.calls().is_empty());
    assert_eq!(h.core.poll_timeout(), None);
}

#[test]
fn ok_retransmitted_t1_doubling_to_t2_until_ack() {
    let mut h = Harness::new();
    h.udp(ALICE, &invite("z9hG4bK-inv1", "call-r", 1, PCMU_OFFER));
    h.out();
    let call = match h.events().pop() {
        Some(Event::IncomingCall { call, .. }) => call,
        e => panic!("{e:?}"),
    };
    h.core.accept(call, answer_for(PCMU_OFFER), h.now).unwrap();
    let ok = h.out().pop().unwrap();
    let sent = h.advance_to(ms(12000));
    let times: Vec<u64> = sent.iter().map(|(t, _)| t.as_millis() as u64).collect();
    assert_eq!(times, vec![500, 1500, 3500, 7500, 11500]);
    for (_, m) in &sent {
        assert_eq!(m.status(), 200);
        assert_eq!(m.to_tag(), ok.to_tag());
    }
    h.udp(
        ALICE,
        &in_dialog("ACK", "z9hG4bK-ack", "call-r", 1, &ok.to_tag(), "", ""),
    );
    assert_eq!(h.events(), vec![Event::Confirmed { call, answer: None }]);
    assert!(h.advance_to(ms(60000)).is_empty());
    // A late duplicate ACK is absorbed without a second event.
    h.udp(
        ALICE,
        &in_dialog("ACK", "z9hG4bK-ack", "call-r", 1, &ok.to_tag(), "", ""),
    );
    assert!(h.events().is_empty());
}

#[test]
fn ok_never_acked_times_out_after_64_t1() {
    let mut h = Harness::new();
    h.udp(ALICE, &invite("z9hG4bK-inv1", "call-h", 1, PCMU_OFFER));
    h.out();
    let call = match h.events().pop() {
        Some(Event::IncomingCall { call, .. }) => call,
        e => panic!("{e:?}"),
    };
    h.core.accept(call, answer_for(PCMU_OFFER), h.now).unwrap();
    h.out();
    let sent = h.advance_to(ms(31999));
    assert!(sent.iter().all(|(_, m)| m.status() == 200));
    assert!(h.events().is_empty());
    h.advance_to(ms(32000));
    assert_eq!(
        h.events(),
        vec![Event::CallEnded {
            call,
            reason: EndReason::AckTimeout
        }]
    );
    assert!(h.core.calls().is_empty());
    // The application BYEs; no second CallEnded follows.
    h.core.hangup(call, h.now).unwrap();
    let bye = h.out().pop().unwrap();
    assert!(bye
        .start
        .starts_with("BYE sip:sipp@198.18.0.10:5061 SIP/2.0"));
    assert!(h
        .advance_to(ms(80000))
        .iter()
        .all(|(_, m)| m.start.starts_with("BYE")));
    assert!(h.events().is_empty());
    assert_eq!(h.core.poll_timeout(), None);
}

#[test]
fn reject_retransmits_until_timer_h_then_forgets() {
    let mut h = Harness::new();
    h.udp(ALICE, &invite("z9hG4bK-inv1", "call-rej", 1, PCMU_OFFER));
    h.out();
    let call = match h.events().pop() {
        Some(Event::IncomingCall { call, .. }) => call,
        e => panic!("{e:?}"),
    };
    h.core.reject(call, 486, h.now).unwrap();
    let r = h.out().pop().unwrap();
    assert_eq!(r.status(), 486);
    assert!(!r.to_tag().is_empty());
    assert_eq!(
        h.events(),
        vec![Event::CallEnded {
            call,
            reason: EndReason::Rejected(486)
        }]
    );
    let sent = h.advance_to(ms(40000));
    let times: Vec<u64> = sent.iter().map(|(t, _)| t.as_millis() as u64).collect();
    assert_eq!(
        times,
        vec![500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
    );
    assert_eq!(
        h.core.poll_timeout(),
        None,
        "timer H removed the transaction"
    );
}

#[test]
fn reject_with_a_reason_phrase_of_our_own_and_retransmitted_as_is() {
    let mut h = Harness::new();
    h.udp(
        ALICE,
        &invite("z9hG4bK-inv1", "call-rej-reason", 1, PCMU_OFFER),
    );
    h.out();
    let call = match h.events().pop() {
        Some(Event::IncomingCall { call, .. }) => call,
        e => panic!("{e:?}"),
    };
    // A phrase that would break the status line is refused, nothing sent.
    for bad in [
        "",
        "Room\r\nX-Forged: 1",
        " padded",
        &"x".repeat(65),
        "caf\u{e9}",
    ] {
        assert!(
            h.core.reject_with_reason(call, 403, bad, h.now).is_err(),
            "{bad:?}"
        );
    }
    assert!(h.out().is_empty());
    h.core
        .reject_with_reason(call, 403, "Room Locked", h.now)
        .unwrap();
    let r = h.out().pop().unwrap();
    assert_eq!(r.start, "SIP/2.0 403 Room Locked");
    let again = h.advance_to(ms(600));
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].1.start, "SIP/2.0 403 Room Locked");
}

#[test]
fn reject_ack_stops_retransmission_and_is_absorbed() {
    let mut h = Harness::new();
    h.udp(ALICE, &invite("z9hG4bK-inv1", "call-rej2", 1, PCMU_OFFER));
    h.out();
    let call = match h.events().pop() {
        Some(Event::IncomingCall { call, .. }) => call,
        e => panic!("{e:?}"),
    };
    h.core.reject(call, 503, h.now).unwrap();
    let tag = h.out().pop().unwrap().to_tag();
    // ACK for a non-2xx uses the INVITE's branch.
    h.udp(
        ALICE,
        &in_dialog("ACK", "z9hG4bK-inv1", "call-rej2", 1, &tag, "", ""),
    );
    assert!(h.out().is_empty());
    assert!(h.advance_to(ms(40000)).is_empty());
}

#[test]
fn invite_retransmission_absorbed() {
    let mut h = Harness::new();
    let inv = invite("z9hG4bK-inv1", "call-x", 1, PCMU_OFFER);
    h.udp(ALICE, &inv);
    assert_eq!(h.out()[0].status(), 100);
    assert_eq!(h.events().len(), 1);
    h.now = ms(500);
    h.udp(ALICE, &inv);
    let out = h.out();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].status(), 100, "last response resent");
    assert!(h.events().is_empty(), "not a new call");
    assert_eq!(h.core.stats().retransmissions_absorbed, 1);
    let call = h.core.calls()[0].call;
    h.core.accept(call, answer_for(PCMU_OFFER), h.now).unwrap();
    h.out();
    h.udp(ALICE, &inv);
    assert_eq!(
        h.out()[0].status(),
        200,
        "2xx resent for a retransmitted INVITE"
    );
    assert_eq!(h.core.stats().retransmissions_absorbed, 2);
    assert_eq!(h.core.calls().len(), 1);
}

#[test]
fn cancel_gets_200_and_invite_487() {
    let mut h = Harness::new();
    h.udp(ALICE, &invite("z9hG4bK-inv1", "call-c", 1, PCMU_OFFER));
    h.out();
    let call = match h.events().pop() {
        Some(Event::IncomingCall { call, .. }) => call,
        e => panic!("{e:?}"),
    };
    let cancel = with_len(
        "CANCEL sip:room1@198.18.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.18.0.10:5061;branch=z9hG4bK-inv1\r\n\
From: sipp <sip:sipp@198.18.0.10:5061>;tag=abc123\r\n\
To: room1 <sip:room1@198.18.0.1:5060>\r\n\
Call-ID: call-c\r\nCSeq: 1 CANCEL\r\nMax-Forwards: 70\r\n",
        "",
    );
    h.udp(ALICE, &cancel);
    let out = h.out();
    assert_eq!(out.len(), 2);
    assert_eq!((out[0].status(), out[0].cseq()), (200, "1 CANCEL"));
    assert_eq!((out[1].status(), out[1].cseq()), (487, "1 INVITE"));
    assert_eq!(out[0].to_tag(), out[1].to_tag());
    assert_eq!(
        h.events(),
        vec![Event::CallEnded {
            call,
            reason: EndReason::Cancelled
        }]
    );
    assert_eq!(
        h.core.accept(call, String::new(), h.now),
        Err(sip_core::Error::UnknownCall(call))
    );
    // ACK of the 487 is absorbed; nothing is retransmitted afterwards.
    h.udp(
        ALICE,
        &in_dialog("ACK", "z9hG4bK-inv1", "call-c", 1, &out[1].to_tag(), "", ""),
    );
    assert!(h.out().is_empty());
    assert!(h.advance_to(ms(40000)).is_empty());
    // CANCEL for an unknown transaction.
    h.udp(ALICE, &cancel.replace("z9hG4bK-inv1", "z9hG4bK-none"));
    assert_eq!(h.out()[0].status(), 481);
}

#[test]
fn options_outside_and_inside_dialog() {
    let mut h = Harness::new();
    let opts = with_len(
        "OPTIONS sip:room1@198.18.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.18.0.10:5061;branch=z9hG4bK-o1;rport\r\n\
From: <sip:probe@198.18.0.10>;tag=p1\r\nTo: <sip:room1@198.18.0.1>\r\n\
Call-ID: opt-1\r\nCSeq: 7 OPTIONS\r\nMax-Forwards: 70\r\n",
        "",
    );
    h.udp("198.18.0.10:33333", &opts);
    let r = h.out().pop().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.header("accept"), Some("application/sdp"));
    assert!(r.header("allow").unwrap().contains("INVITE"));
    assert!(!r.to_tag().is_empty());
    // RFC 3581: rport filled in, response to the source port.
    assert_eq!(
        r.header("via"),
        Some("SIP/2.0/UDP 198.18.0.10:5061;branch=z9hG4bK-o1;rport=33333;received=198.18.0.10")
    );
    assert_eq!(r.to, addr("198.18.0.10:33333"));

    let (_call, tag) = established(&mut h, "call-o");
    h.udp(
        ALICE,
        &in_dialog(
            "OPTIONS",
            "z9hG4bK-o2",
            "call-o",
            2,
            &tag,
            "Accept: application/sdp\r\n",
            "",
        ),
    );
    let r = h.out().pop().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.to_tag(), tag);
}

fn offer_with(dir: &str, ip: &str) -> String {
    format!("v=0\r\no=- 1 2 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na={dir}\r\n")
}

#[test]
fn reinvite_hold_and_resume() {
    let mut h = Harness::new();
    let (call, tag) = established(&mut h, "call-ri");
    for (cseq, dir, expect_remote, expect_ours) in [
        (2, "sendonly", Direction::SendOnly, "a=recvonly"),
        (3, "sendrecv", Direction::SendRecv, "a=sendrecv"),
    ] {
        let offer = offer_with(dir, "198.18.0.10");
        let branch = format!("z9hG4bK-ri{cseq}");
        h.udp(
            ALICE,
            &in_dialog(
                "INVITE",
                &branch,
                "call-ri",
                cseq,
                &tag,
                "Contact: <sip:sipp@198.18.0.10:5061>\r\nContent-Type: application/sdp\r\n",
                &offer,
            ),
        );
        assert_eq!(h.out()[0].status(), 100);
        let got = match h.events().pop() {
            Some(Event::ReInvite { call: c, offer }) => {
                assert_eq!(c, call);
                offer.unwrap()
            }
            e => panic!("{e:?}"),
        };
        let neg = sdp::negotiate(&got).unwrap();
        assert_eq!(neg.direction, expect_remote);
        let answer = answer_for(&got);
        assert!(answer.contains(expect_ours), "{answer}");
        h.core.accept(call, answer, h.now).unwrap();
        let ok = h.out().pop().unwrap();
        assert_eq!(
            (ok.status(), ok.cseq().to_string()),
            (200, format!("{cseq} INVITE"))
        );
        assert_eq!(ok.to_tag(), tag);
        h.udp(
            ALICE,
            &in_dialog(
                "ACK",
                &format!("{branch}-ack"),
                "call-ri",
                cseq,
                &tag,
                "",
                "",
            ),
        );
        assert_eq!(h.events(), vec![Event::Confirmed { call, answer: None }]);
    }
    // c=0.0.0.0 is the old-style hold.
    assert_eq!(
        sdp::negotiate(&offer_with("sendrecv", "0.0.0.0"))
            .unwrap()
            .direction,
        Direction::Inactive
    );
    assert_eq!(h.core.calls().len(), 1);
}

#[test]
fn reinvite_rejected_keeps_dialog() {
    let mut h = Harness::new();
    let (call, tag) = established(&mut h, "call-rr");
    h.udp(
        ALICE,
        &in_dialog(
            "INVITE",
            "z9hG4bK-rr",
            "call-rr",
            2,
            &tag,
            "Content-Type: application/sdp\r\n",
            &offer_with("sendrecv", "198.18.0.10"),
        ),
    );
    h.out();
    h.events();
    h.core.reject(call, 488, h.now).unwrap();
    assert_eq!(h.out()[0].status(), 488);
    assert!(h.events().is_empty());
    assert_eq!(h.core.calls().len(), 1);
}

#[test]
fn offerless_invite_gets_offer_and_answer_in_ack() {
    let mut h = Harness::new();
    h.udp(ALICE, &invite("z9hG4bK-inv1", "call-ol", 1, ""));
    h.out();
    let call = match h.events().pop() {
        Some(Event::IncomingCall { call, offer, .. }) => {
            assert_eq!(offer, None);
            call
        }
        e => panic!("{e:?}"),
    };
    let local = sdp::LocalMedia {
        ip: "198.18.0.1".parse().unwrap(),
        rtp_port: 40000,
        video_port: None,
        session_id: 9,
        session_version: 1,
    };
    let offer = sdp::build_offer(&local);
    h.core.accept(call, offer.clone(), h.now).unwrap();
    let ok = h.out().pop().unwrap();
    assert_eq!(ok.body, offer);
    let answer = "v=0\r\no=- 5 5 IN IP4 198.18.0.10\r\ns=-\r\nc=IN IP4 198.18.0.10\r\nt=0 0\r\nm=audio 7000 RTP/AVP 111 101\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:101 telephone-event/48000\r\n";
    h.udp(
        ALICE,
        &in_dialog(
            "ACK",
            "z9hG4bK-ack",
            "call-ol",
            1,
            &ok.to_tag(),
            "Content-Type: application/sdp\r\n",
            answer,
        ),
    );
    assert_eq!(
        h.events(),
        vec![Event::Confirmed {
            call,
            answer: Some(answer.to_string())
        }]
    );
    let neg = sdp::negotiate(answer).unwrap();
    assert_eq!(
        (neg.codec, neg.payload_type, neg.telephone_event_pt),
        (sdp::CodecName::Opus, 111, Some(101))
    );
}

#[test]
fn no_common_codec_is_488() {
    let mut h = Harness::new();
    let g729 = "v=0\r\no=- 1 1 IN IP4 198.18.0.10\r\ns=-\r\nc=IN IP4 198.18.0.10\r\nt=0 0\r\nm=audio 6000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n";
    h.udp(ALICE, &invite("z9hG4bK-inv1", "call-488", 1, g729));
    h.out();
    let (call, offer) = match h.events().pop() {
        Some(Event::IncomingCall { call, offer, .. }) => (call, offer.unwrap()),
        e => panic!("{e:?}"),
    };
    let status = match sdp::negotiate(&offer) {
        Err(sdp::SdpError::NotAcceptable(_)) => 488,
        Err(sdp::SdpError::Malformed(_)) => 400,
        other => panic!("{other:?}"),
    };
    h.core.reject(call, status, h.now).unwrap();
    let r = h.out().pop().unwrap();
    assert_eq!(r.status(), 488);
    assert_eq!(r.start, "SIP/2.0 488 Not Acceptable Here");
    assert_eq!(
        h.events(),
        vec![Event::CallEnded {
            call,
            reason: EndReason::Rejected(488)
        }]
    );
}

#[test]
fn hangup_sends_bye_along_route_set_and_retransmits() {
    let mut h = Harness::new();
    let inv = invite("z9hG4bK-inv1", "call-bye", 1, PCMU_OFFER).replace(
        "Max-Forwards: 70\r\n",
        "Max-Forwards: 70\r\nRecord-Route: <sip:p1.example.net;lr>\r\nRecord-Route: <sip:p2.example.net;lr>\r\n",
    );
    h.udp(ALICE, &inv);
    h.out();
    let call = match h.events().pop() {
        Some(Event::IncomingCall { call, .. }) => call,
        e => panic!("{e:?}"),
    };
    assert!(matches!(
        h.core.hangup(call, h.now),
        Err(sip_core::Error::InvalidState(_))
    ));
    h.core.accept(call, answer_for(PCMU_OFFER), h.now).unwrap();
    let ok = h.out().pop().unwrap();
    assert_eq!(
        ok.all("record-route"),
        vec!["<sip:p1.example.net;lr>", "<sip:p2.example.net;lr>"]
    );
    let tag = ok.to_tag();
    h.udp(
        ALICE,
        &in_dialog("ACK", "z9hG4bK-ack", "call-bye", 1, &tag, "", ""),
    );
    h.events();
    h.now = ms(1000);
    h.core.hangup(call, h.now).unwrap();
    let bye = h.out().pop().unwrap();
    assert_eq!(bye.start, "BYE sip:sipp@198.18.0.10:5061 SIP/2.0");
    assert_eq!(
        bye.all("route"),
        vec!["<sip:p1.example.net;lr>", "<sip:p2.example.net;lr>"]
    );
    assert_eq!(
        bye.header("from").unwrap(),
        format!("room1 <sip:room1@198.18.0.1:5060>;tag={tag}")
    );
    assert_eq!(
        bye.header("to"),
        Some("sipp <sip:sipp@198.18.0.10:5061>;tag=abc123")
    );
    assert_eq!(bye.cseq(), "1 BYE");
    assert_eq!(bye.to, addr(ALICE));
    assert_eq!(
        h.core.hangup(call, h.now),
        Err(sip_core::Error::InvalidState("BYE already sent"))
    );
    // Timer E.
    let times: Vec<u64> = h
        .advance_to(ms(5000))
        .iter()
        .map(|(t, _)| t.as_millis() as u64)
        .collect();
    assert_eq!(times, vec![1500, 2500, 4500]);
    let via = bye.header("via").unwrap();
    let branch = via
        .split("branch=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    let resp = with_len(
        &format!(
            "SIP/2.0 200 OK\r\nVia: {via}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: call-bye\r\nCSeq: 1 BYE\r\n",
            bye.header("from").unwrap(),
            bye.header("to").unwrap()
        ),
        "",
    );
    assert!(branch.starts_with("z9hG4bK"));
    h.udp(ALICE, &resp);
    assert_eq!(
        h.events(),
        vec![Event::CallEnded {
            call,
            reason: EndReason::ByeSent
        }]
    );
    assert!(h.advance_to(ms(60000)).is_empty());
    assert!(h.core.calls().is_empty());
}

#[test]
fn bye_timeout_still_ends_call() {
    let mut h = Harness::new();
    let (call, _) = established(&mut h, "call-bt");
    h.core.hangup(call, h.now).unwrap();
    h.out();
    let sent = h.advance_to(ms(31999));
    assert_eq!(sent.len(), 10);
    assert!(h.events().is_empty());
    h.advance_to(ms(32000));
    assert_eq!(
        h.events(),
        vec![Event::CallEnded {
            call,
            reason: EndReason::ByeSent
        }]
    );
}

#[test]
fn info_dtmf_relay() {
    let mut h = Harness::new();
    let (call, tag) = established(&mut h, "call-dtmf");
    h.udp(
        ALICE,
        &in_dialog(
            "INFO",
            "z9hG4bK-i1",
            "call-dtmf",
            2,
            &tag,
            "Content-Type: application/dtmf-relay\r\n",
            "Signal=5\r\nDuration=160\r\n",
        ),
    );
    assert_eq!(h.out()[0].status(), 200);
    h.udp(
        ALICE,
        &in_dialog(
            "INFO",
            "z9hG4bK-i2",
            "call-dtmf",
            3,
            &tag,
            "Content-Type: application/dtmf-relay\r\n",
            "Signal= #\r\nDuration= 100\r\n",
        ),
    );
    assert_eq!(h.out()[0].status(), 200);
    assert_eq!(
        h.events(),
        vec![
            Event::InfoDtmf { call, digit: '5' },
            Event::InfoDtmf { call, digit: '#' }
        ]
    );
    // Older CSeq in the dialog -> 500.
    h.udp(
        ALICE,
        &in_dialog("INFO", "z9hG4bK-i3", "call-dtmf", 1, &tag, "", ""),
    );
    assert_eq!(h.out()[0].status(), 500);
}

#[test]
fn register_is_answered_with_contacts() {
    let mut h = Harness::new();
    let reg = with_len(
        "REGISTER sip:198.18.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.18.0.10:5061;branch=z9hG4bK-reg;rport\r\n\
From: <sip:alice@198.18.0.1>;tag=r1\r\nTo: <sip:alice@198.18.0.1>\r\n\
Call-ID: reg-1\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\n\
Contact: <sip:alice@198.18.0.10:5061;transport=udp>;expires=7200\r\nExpires: 600\r\n",
        "",
    );
    h.udp(ALICE, &reg);
    let r = h.out().pop().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.header("contact"),
        Some("<sip:alice@198.18.0.10:5061;transport=udp>;expires=3600")
    );
    assert!(h.events().is_empty());
}

#[test]
fn unknown_methods_and_dialogs() {
    let mut h = Harness::new();
    let req = |m: &str, tag: &str| {
        let to_tag = if tag.is_empty() {
            String::new()
        } else {
            format!(";tag={tag}")
        };
        with_len(
            &format!(
                "{m} sip:room1@198.18.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5061;branch=z9hG4bK-{m}{tag}\r\n\
From: <sip:a@b>;tag=x\r\nTo: <sip:room1@198.18.0.1>{to_tag}\r\nCall-ID: u-1\r\nCSeq: 1 {m}\r\n"
            ),
            "",
        )
    };
    h.udp(ALICE, &req("SUBSCRIBE", ""));
    let r = h.out().pop().unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.header("allow").is_some());
    h.udp(ALICE, &req("FOO", ""));
    assert_eq!(h.out()[0].status(), 501);
    h.udp(ALICE, &req("BYE", "nosuch"));
    assert_eq!(h.out()[0].status(), 481);
    h.udp(ALICE, &req("INVITE", "nosuch"));
    assert_eq!(h.out()[0].status(), 481);
    h.udp(ALICE, &req("INFO", ""));
    assert_eq!(h.out()[0].status(), 481);
    // ACK for nothing: silently dropped.
    h.udp(ALICE, &req("ACK", "nosuch"));
    assert!(h.out().is_empty());
    // Require of an unknown extension.
    h.udp(
        ALICE,
        &req("OPTIONS", "").replace("CSeq", "Require: 100rel\r\nCSeq"),
    );
    let r = h.out().pop().unwrap();
    assert_eq!(r.status(), 420);
    assert_eq!(r.header("unsupported"), Some("100rel"));
}

#[test]
fn malformed_requests_get_400_or_are_dropped() {
    let mut h = Harness::new();
    let good = invite("z9hG4bK-m1", "call-m", 1, PCMU_OFFER);
    for (bad, reason) in [
        (
            good.replace("CSeq: 1 INVITE", "CSeq: abc INVITE"),
            "Bad CSeq",
        ),
        (
            good.replace("CSeq: 1 INVITE", "CSeq: 1 BYE"),
            "CSeq method mismatch",
        ),
        (
            good.replace(
                "From: sipp <sip:sipp@198.18.0.10:5061>;tag=abc123",
                "From: <<<",
            ),
            "Bad From",
        ),
        (
            good.replace(
                &format!("Content-Length: {}", PCMU_OFFER.len()),
                "Content-Length: 999",
            ),
            "Bad Content-Length",
        ),
    ] {
        h.udp(ALICE, &bad);
        let out = h.out();
        assert_eq!(out.len(), 1, "{reason}");
        assert_eq!(out[0].status(), 400, "{reason}");
        assert!(
            out[0].start.contains(reason),
            "{} vs {reason}",
            out[0].start
        );
    }
    assert_eq!(h.core.stats().malformed_answered, 4);
    assert!(h.events().is_empty());
    // Nothing to answer with: no Call-ID.
    h.udp(ALICE, &good.replace("Call-ID: call-m\r\n", ""));
    assert!(h.out().is_empty());
    h.udp(ALICE, "\x00\x01garbage");
    assert!(h.out().is_empty());
    assert_eq!(h.core.stats().malformed_dropped, 2);
    // tel: Request-URI.
    h.udp(
        ALICE,
        &good.replace("INVITE sip:room1@198.18.0.1:5060", "INVITE tel:+123"),
    );
    assert_eq!(h.out()[0].status(), 416);
    // Oversized.
    let big = good.replace(
        "Max-Forwards: 70\r\n",
        &format!("Max-Forwards: 70\r\nX-Pad: {}\r\n", "a".repeat(9000)),
    );
    h.udp(ALICE, &big);
    assert_eq!(h.out()[0].status(), 513);
    assert_eq!(h.core.stats().oversized, 1);
    assert!(h.events().is_empty());
}

#[test]
fn same_seed_same_bytes_and_state_survives_serialization() {
    let run = |seed: u64| {
        let mut core = Core::new(config(seed));
        core.handle_datagram(
            addr(ALICE),
            invite("z9hG4bK-inv1", "d-1", 1, PCMU_OFFER).as_bytes(),
            Duration::ZERO,
        );
        let call = match core.poll_event() {
            Some(Event::IncomingCall { call, .. }) => call,
            e => panic!("{e:?}"),
        };
        core.accept(call, answer_for(PCMU_OFFER), Duration::ZERO)
            .unwrap();
        let mut bytes = Vec::new();
        while let Some(t) = core.poll_transmit() {
            bytes.push(t.data);
        }
        (core, call, bytes)
    };
    let (core_a, call, a) = run(1);
    let (_, _, b) = run(1);
    let (_, _, c) = run(2);
    assert_eq!(a, b);
    assert_ne!(a, c);
    // Replicate to a backup: the backup absorbs the ACK and confirms the call.
    let json = serde_json::to_string(core_a.state()).unwrap();
    let state: sip_core::state::CoreState = serde_json::from_str(&json).unwrap();
    let mut backup = Core::from_state(config(1), state);
    let tag = Msg::parse(&sip_core::Transmit {
        transport: Transport::Udp,
        to: addr(ALICE),
        data: a[1].clone(),
    })
    .to_tag();
    backup.handle_datagram(
        addr(ALICE),
        in_dialog("ACK", "z9hG4bK-ack", "d-1", 1, &tag, "", "").as_bytes(),
        Duration::from_millis(700),
    );
    assert_eq!(
        backup.poll_event(),
        Some(Event::Confirmed { call, answer: None })
    );
    assert_eq!(backup.calls().len(), 1);
}

#[test]
fn late_timer_sends_one_retransmission_and_keeps_schedule() {
    let mut h = Harness::new();
    h.udp(ALICE, &invite("z9hG4bK-inv1", "call-late", 1, PCMU_OFFER));
    h.out();
    let call = h.core.calls()[0].call;
    h.core.accept(call, answer_for(PCMU_OFFER), h.now).unwrap();
    h.out();
    // The driver wakes up late, at 4 s: slots 0.5, 1.5 and 3.5 collapse into one resend.
    h.now = ms(4000);
    h.core.handle_timeout(h.now);
    assert_eq!(h.out().len(), 1);
    assert_eq!(h.core.poll_timeout(), Some(ms(7500)));
}

#[test]
fn hangup_terminates_pending_reinvite_first() {
    let mut h = Harness::new();
    let (call, tag) = established(&mut h, "call-hr");
    h.udp(
        ALICE,
        &in_dialog(
            "INVITE",
            "z9hG4bK-hr",
            "call-hr",
            2,
            &tag,
            "Content-Type: application/sdp\r\n",
            PCMU_OFFER,
        ),
    );
    h.out();
    assert!(matches!(h.events().pop(), Some(Event::ReInvite { .. })));
    h.core.hangup(call, h.now).unwrap();
    let out = h.out();
    assert_eq!((out[0].status(), out[0].cseq()), (487, "2 INVITE"));
    assert!(out[1].start.starts_with("BYE "));
}

#[test]
fn extreme_times_do_not_panic() {
    let mut h = Harness::new();
    h.now = Duration::MAX - ms(100);
    h.udp(ALICE, &invite("z9hG4bK-inv1", "call-max", 1, PCMU_OFFER));
    let call = h.core.calls()[0].call;
    h.core.accept(call, answer_for(PCMU_OFFER), h.now).unwrap();
    h.core.handle_timeout(Duration::MAX);
    h.core.handle_timeout(Duration::MAX);
    assert!(h.core.poll_timeout().is_none_or(|t| t == Duration::MAX));
}

#[test]
fn merged_invite_under_new_branch_is_482() {
    let mut h = Harness::new();
    h.udp(ALICE, &invite("z9hG4bK-path1", "call-m", 1, PCMU_OFFER));
    h.out();
    assert_eq!(h.events().len(), 1);
    h.udp(ALICE, &invite("z9hG4bK-path2", "call-m", 1, PCMU_OFFER));
    assert_eq!(h.out()[0].status(), 482);
    assert!(h.events().is_empty());
    assert_eq!(h.core.calls().len(), 1);
}

#[test]
fn ipv6_via_is_stamped_readably() {
    let mut h = Harness::new();
    let opts = with_len(
        "OPTIONS sip:room1@[2001:db8::1]:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP [2001:db8::10]:5061;branch=z9hG4bK-v6;rport\r\n\
From: <sip:probe@[2001:db8::10]>;tag=p1\r\nTo: <sip:room1@[2001:db8::1]>\r\n\
Call-ID: v6-1\r\nCSeq: 1 OPTIONS\r\n",
        "",
    );
    h.udp("[2001:db8::10]:40000", &opts);
    let r = h.out().pop().unwrap();
    assert_eq!(
        r.header("via"),
        Some("SIP/2.0/UDP [2001:db8::10]:5061;branch=z9hG4bK-v6;rport=40000;received=2001:db8::10")
    );
    assert_eq!(r.to, addr("[2001:db8::10]:40000"));
}

#[test]
fn tcp_oversized_gets_513_and_stream_recovers() {
    let mut h = Harness::new();
    let body = "x".repeat(9000);
    let big = in_dialog("INFO", "z9hG4bK-big", "big-1", 1, "t", "", &body).replace("/UDP", "/TCP");
    h.tcp(5, ALICE, big.as_bytes());
    let r = h.out().pop().unwrap();
    assert_eq!(r.status(), 513);
    assert_eq!(r.transport, Transport::Tcp(5));
    assert_eq!(h.core.stats().oversized, 1);
    // The body was skipped: the next message on the stream is served normally.
    h.tcp(5, ALICE, tcp_invite().as_bytes());
    assert_eq!(h.out()[0].status(), 100);
    // UDP keep-alives are ignored silently.
    h.udp(ALICE, "\r\n\r\n");
    assert!(h.out().is_empty());
    assert_eq!(h.core.stats().malformed_dropped, 0);
}
