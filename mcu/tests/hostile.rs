//! Hostile input against the real server over real sockets: malformed SIP gets 400, garbage
//! is dropped and counted, no common codec gets 488, and the server keeps serving. The
//! server runs in-process ([`TestServer`]) on ports the kernel chose.

mod common;
use common::uac::{self, Uac};
use common::{args, metric, TestServer};
use mcu::config::ServeArgs;
use std::net::UdpSocket;
use std::time::Duration;

#[test]
fn malformed_sip_and_garbage_media() {
    let mut srv = TestServer::start(ServeArgs {
        seed: Some(7),
        ..args("32000-32049")
    });
    let mut ua = Uac::new(srv.sip, "hostile", "h1");

    // 1. Pure garbage on the SIP port: dropped, nothing crashes.
    for g in [
        &b"\x00\x01\x02garbage"[..],
        b"",
        b"\r\n\r\n",
        &[0xffu8; 1400],
    ] {
        ua.send_raw(g);
    }
    // 2. A request with a valid Via/Call-ID/CSeq but a broken request line -> 400.
    let bad = "INVITE sip:hostile@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKbad1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:hostile@127.0.0.1>\r\nCall-ID: bad1@x\r\nCSeq: notanumber INVITE\r\nContent-Length: 0\r\n\r\n";
    let bad = bad.replace("127.0.0.1:9", &ua.local().to_string());
    ua.send_raw(bad.as_bytes());
    let r = ua
        .recv_until(Duration::from_secs(3), |m| uac::status(m).is_some())
        .expect("no reply to malformed INVITE");
    assert_eq!(uac::status(&r), Some(400), "{r}");

    // 3. Offer without a common codec -> 488.
    let ua2 = Uac::new(srv.sip, "hostile", "h2");
    let g729 = "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n";
    let inv = ua2.request("INVITE", 1, "g729", "", g729);
    ua2.send_raw(inv.as_bytes());
    let r = ua2
        .recv_until(Duration::from_secs(3), |m| {
            uac::status(m).is_some_and(|s| s >= 200)
        })
        .expect("no final reply");
    assert_eq!(uac::status(&r), Some(488), "{r}");
    let ack = ua2.request("ACK", 1, "g729", "", "");
    ua2.send_raw(ack.as_bytes());

    // 4. Oversized message (30 kB, over the 16 kB limit, one datagram on loopback): its
    //    headers are still readable, so it is rejected with 513, never served.
    let huge = ua2.request(
        "OPTIONS",
        5,
        "big",
        &format!("X-Pad: {}\r\n", "a".repeat(30_000)),
        "",
    );
    assert!(huge.len() > mcu::server::MAX_SIP_MESSAGE);
    ua2.send_raw(huge.as_bytes());
    let r = ua2
        .recv_until(Duration::from_secs(3), |m| m.contains("z9hG4bKbig"))
        .expect("no reply to the oversized OPTIONS (513 expected)");
    assert_eq!(uac::status(&r), Some(513), "{r}");
    assert!(
        uac::header(&r, "CSeq").is_some_and(|c| c == "5 OPTIONS"),
        "{r}"
    );

    // 5. A real call still works; garbage on its media port is dropped and counted while the
    //    server keeps sending audio to us.
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    rtp.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let ok = ua.call(&ua.pcmu_offer(rtp.local_addr().unwrap()));
    let server_media = uac::sdp_media(uac::body(&ok)).expect("SDP answer with media");
    for i in 0..50u16 {
        rtp.send_to(&uac::pcmu_packet(0x1234, i, i as u32 * 160), server_media)
            .unwrap();
        rtp.send_to(b"\x13\x37 not rtp at all", server_media)
            .unwrap();
        rtp.send_to(&[0x80u8; 3], server_media).unwrap();
    }
    let mut buf = [0u8; 2048];
    let (n, _) = rtp
        .recv_from(&mut buf)
        .expect("server sends RTP to the caller");
    assert!(n > 12 && buf[0] >> 6 == 2, "RTP v2 from server");
    // OPTIONS still answered.
    let opt = ua2.request("OPTIONS", 6, "opt6", "", "");
    ua2.send_raw(opt.as_bytes());
    let r = ua2
        .recv_until(Duration::from_secs(3), |m| m.contains("opt6"))
        .expect("OPTIONS answered");
    assert_eq!(uac::status(&r), Some(200), "{r}");
    assert!(
        uac::header(&r, "Allow").is_some_and(|a| a.contains("INVITE")),
        "{r}"
    );

    let (code, metrics) = srv.get("/metrics");
    assert_eq!(code, 200);
    assert!(
        metric(&metrics, "mcu_sip_oversized_total") >= 1.0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "mcu_media_dropped_total") >= 100.0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "mcu_sip_malformed_answered_total") >= 1.0,
        "{metrics}"
    );

    let r = ua.bye().expect("BYE answered");
    assert_eq!(uac::status(&r), Some(200), "{r}");
    srv.shutdown().expect("server stops cleanly");
}

#[test]
fn retransmitted_invite_is_one_call() {
    let mut srv = TestServer::start(ServeArgs {
        seed: Some(8),
        ..args("32050-32099")
    });
    let ua = Uac::new(srv.sip, "retrans", "r1");
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let inv = ua.request(
        "INVITE",
        1,
        "same",
        "",
        &ua.pcmu_offer(rtp.local_addr().unwrap()),
    );
    // The same INVITE three times (a client retransmitting before it hears our response).
    for _ in 0..3 {
        ua.send_raw(inv.as_bytes());
    }
    let mut oks = vec![];
    while let Some(m) = ua.recv_until(Duration::from_millis(800), |m| uac::status(m) == Some(200)) {
        oks.push(m);
    }
    assert!(!oks.is_empty(), "INVITE answered");
    let tags: std::collections::HashSet<_> = oks
        .iter()
        .map(|m| uac::header(m, "To").unwrap().to_string())
        .collect();
    assert_eq!(tags.len(), 1, "every 200 belongs to one dialog: {tags:?}");
    let rooms = srv.get_json("/api/rooms");
    assert_eq!(
        rooms["rooms"][0]["participants"]
            .as_object()
            .map(|p| p.len()),
        Some(1),
        "{rooms:#}"
    );
    srv.log.pump();
    assert_eq!(
        srv.log
            .lines
            .iter()
            .filter(|l| l.contains("INVITE") && l.contains("call="))
            .count(),
        1
    );
    srv.shutdown().expect("server stops cleanly");
}

#[test]
fn full_room_is_busy() {
    let srv = TestServer::start(ServeArgs {
        max_participants: Some(1),
        ..args("32100-32149")
    });
    let mut first = Uac::new(srv.sip, "tiny", "f1");
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    first.call(&first.pcmu_offer(rtp.local_addr().unwrap()));
    let second = Uac::new(srv.sip, "tiny", "f2");
    let inv = second.request(
        "INVITE",
        1,
        "full",
        "",
        &second.pcmu_offer(rtp.local_addr().unwrap()),
    );
    second.send_raw(inv.as_bytes());
    let r = second
        .recv_until(Duration::from_secs(3), |m| {
            uac::status(m).is_some_and(|s| s >= 200)
        })
        .expect("final response");
    assert_eq!(uac::status(&r), Some(486), "{r}");
    // Another room is unaffected.
    let mut other = Uac::new(srv.sip, "elsewhere", "f3");
    other.call(&other.pcmu_offer(rtp.local_addr().unwrap()));
    assert_eq!(uac::status(&first.bye().unwrap()), Some(200));
    assert_eq!(uac::status(&other.bye().unwrap()), Some(200));
}

#[test]
fn stray_rtp_source_cannot_steal_the_stream() {
    let srv = TestServer::start(ServeArgs {
        seed: Some(9),
        ..args("32150-32199")
    });
    let mut ua = Uac::new(srv.sip, "bleed", "b1");
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    rtp.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let ok = ua.call(&ua.pcmu_offer(rtp.local_addr().unwrap()));
    let media = uac::sdp_media(uac::body(&ok)).unwrap();
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    stranger
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 2048];
    for i in 0..25u16 {
        rtp.send_to(&uac::pcmu_packet(0x1111, i, i as u32 * 160), media)
            .unwrap();
        stranger
            .send_to(&uac::pcmu_packet(0x2222, 1000 + i, i as u32 * 160), media)
            .unwrap();
    }
    // The participant keeps receiving; the stranger gets nothing.
    for _ in 0..5 {
        assert!(
            rtp.recv_from(&mut buf).is_ok(),
            "participant still receives its stream"
        );
    }
    assert!(
        stranger.recv_from(&mut buf).is_err(),
        "stray sender received media"
    );
    assert_eq!(uac::status(&ua.bye().unwrap()), Some(200));
}
