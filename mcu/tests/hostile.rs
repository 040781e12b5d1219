//! Hostile input against the real server over real sockets: malformed SIP gets 400, garbage
//! is dropped and counted, no common codec gets 488, and the server keeps serving.

mod common;
use common::uac::{self, Uac};
use common::Server;
use std::net::UdpSocket;
use std::time::Duration;

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing in:\n{text}"))
}

#[test]
fn malformed_sip_and_garbage_media() {
    let mut srv = Server::start(25060, 28080, "31000-31099", &["--seed", "7"]);
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

    // 4. Oversized message: rejected (513) or dropped, never served.
    let huge = ua2.request(
        "OPTIONS",
        5,
        "big",
        &format!("X-Pad: {}\r\n", "a".repeat(30_000)),
        "",
    );
    ua2.send_raw(huge.as_bytes());
    if let Some(r) = ua2.recv_until(Duration::from_millis(500), |m| m.contains("big")) {
        assert_eq!(uac::status(&r), Some(513), "{r}");
    }

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
        metric(&metrics, "mcu_media_dropped_total") >= 100.0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "mcu_sip_malformed_answered_total") >= 1.0,
        "{metrics}"
    );

    let r = ua.bye().expect("BYE answered");
    assert_eq!(uac::status(&r), Some(200), "{r}");
    assert!(srv.terminate().success());
}

#[test]
fn retransmitted_invite_is_one_call() {
    let mut srv = Server::start(25080, 28081, "31600-31699", &["--seed", "8"]);
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
    let (_, rooms) = srv.get("/api/rooms");
    let rooms: serde_json::Value = serde_json::from_str(&rooms).unwrap();
    assert_eq!(
        rooms["rooms"][0]["participants"]
            .as_object()
            .map(|p| p.len()),
        Some(1),
        "{rooms:#}"
    );
    srv.pump_log();
    assert_eq!(
        srv.log_lines
            .iter()
            .filter(|l| l.contains("INVITE") && l.contains("call="))
            .count(),
        1
    );
    assert!(srv.terminate().success());
}

#[test]
fn full_room_is_busy() {
    let srv = Server::start(25090, 28082, "31650-31699", &["--max-participants", "1"]);
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
    let srv = Server::start(25091, 28083, "31700-31749", &["--seed", "9"]);
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
