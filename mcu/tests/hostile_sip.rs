//! Hostile SIP and SDP against the real server over real sockets: offers with more m= lines
//! than one audio stream, wire-controlled text in the log, per-packet floods that must not
//! flood the log, and SIP floods that must not starve calls. Each case starts with a
//! positive control. The server runs in-process ([`TestServer`]) on kernel-chosen ports.

mod common;
use common::uac::{self, Uac};
use common::{args, TestServer};
use mcu::config::ServeArgs;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing in:\n{text}"))
}

fn metrics(srv: &TestServer) -> String {
    let (code, text) = srv.get("/metrics");
    assert_eq!(code, 200);
    text
}

/// RFC 3264 §6: a video + audio offer gets a 200 whose SDP has two m= lines in the offer's
/// order, video declined with port 0, and audio flows on the accepted line.
#[test]
fn video_and_audio_offer_gets_one_answer_line_each() {
    let srv = TestServer::start(ServeArgs {
        seed: Some(41),
        ..args("34100-34149")
    });
    let mut ua = Uac::new(srv.sip, "mlines", "m1");
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    rtp.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let at = rtp.local_addr().unwrap();
    let offer = format!(
        "v=0\r\no=tester 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=video {v} RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n\
         m=audio {a} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n",
        v = at.port() + 2,
        a = at.port()
    );
    let ok = ua.call(&offer);
    let sdp = uac::body(&ok);
    let m: Vec<&str> = sdp.lines().filter(|l| l.starts_with("m=")).collect();
    assert_eq!(m.len(), 2, "{ok}");
    assert_eq!(m[0], "m=video 0 RTP/AVP 96", "{ok}");
    assert!(
        m[1].starts_with("m=audio ") && m[1].ends_with(" RTP/AVP 0"),
        "{ok}"
    );
    let media = uac::sdp_media(sdp).expect("audio line with a port");
    assert_ne!(media.port(), 0);
    // Audio flows on the accepted line, both ways.
    for i in 0..25u16 {
        rtp.send_to(&uac::pcmu_packet(0x4141, i, i as u32 * 160), media)
            .unwrap();
    }
    let mut buf = [0u8; 2048];
    let (n, from) = rtp.recv_from(&mut buf).expect("server sends RTP");
    assert!(
        n > 12 && buf[0] >> 6 == 2 && from == media,
        "RTP from {from}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let rooms = srv.get_json("/api/rooms");
        let p = &rooms["rooms"][0]["participants"];
        let got = p
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(|v| v["packets_in"].as_u64())
            .unwrap_or(0);
        if got >= 20 {
            break;
        }
        assert!(Instant::now() < deadline, "audio not received: {rooms:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(uac::status(&ua.bye().unwrap()), Some(200));
}

/// Poll `/metrics` until `name` reaches `at_least` (or the deadline passes); its last value.
fn wait_metric(srv: &TestServer, name: &str, at_least: f64, within: Duration) -> f64 {
    let deadline = Instant::now() + within;
    loop {
        let v = metric(&metrics(srv), name);
        if v >= at_least || Instant::now() >= deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// 20,000 RTP packets switching SSRC every two packets (each switch accepted by the mixer),
/// from the participant's own socket: every switch is counted in /metrics, the log gets at
/// most a line or two.
#[test]
fn ssrc_flood_is_counted_not_logged() {
    let mut srv = TestServer::start(ServeArgs {
        seed: Some(42),
        ..args("34150-34199")
    });
    let mut ua = Uac::new(srv.sip, "ssrcflood", "s1");
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let ok = ua.call(&ua.pcmu_offer(rtp.local_addr().unwrap()));
    let media = uac::sdp_media(uac::body(&ok)).unwrap();
    // Positive control: the participant's first packets start its media, which is logged.
    for i in 0..5u16 {
        rtp.send_to(&uac::pcmu_packet(0xa, i, i as u32 * 160), media)
            .unwrap();
    }
    srv.log.expect("MediaStarted", Duration::from_secs(5));
    srv.log.pump();
    let before = srv.log.lines.len();

    let mut sent_changes = 0u32;
    for i in 5..20_005u32 {
        let ssrc = if (i / 2) % 2 == 0 { 0xa } else { 0xb };
        if i % 2 == 1 {
            sent_changes += 1;
        }
        rtp.send_to(&uac::pcmu_packet(ssrc, i as u16, i * 160), media)
            .unwrap();
        if i % 500 == 0 {
            // Let the room's reader keep up (a burst beyond the socket buffer is lost).
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let changes = wait_metric(
        &srv,
        "mcu_media_ssrc_changes_total",
        f64::from(sent_changes) * 0.9,
        Duration::from_secs(10),
    );
    assert!(
        changes >= f64::from(sent_changes) / 2.0,
        "{changes} SSRC changes counted of {sent_changes} sent"
    );
    let unlogged = metric(&metrics(&srv), "mcu_media_events_unlogged_total");
    assert!(
        unlogged >= changes - 2.0,
        "{unlogged} unlogged, {changes} changes"
    );
    srv.log.pump();
    let flood_lines: Vec<&String> = srv.log.lines[before..]
        .iter()
        .filter(|l| l.contains("media event"))
        .collect();
    assert!(
        flood_lines.len() <= 2,
        "{} media event lines for {changes} SSRC changes: {flood_lines:?}",
        flood_lines.len()
    );
    assert!(
        srv.log.lines.len() - before < 20,
        "{}",
        srv.log.lines[before..].join("\n")
    );
    eprintln!(
        "SSRC flood: {sent_changes} switches sent, {changes} counted, {} log lines",
        srv.log.lines.len() - before
    );
    assert_eq!(uac::status(&ua.bye().unwrap()), Some(200));
}

/// Room names from the Request-URI are restricted to letters, digits and `-_.~`: CR/LF
/// (percent-encoded) or ESC are refused with 404 and never reach the log raw.
#[test]
fn room_name_with_line_breaks_or_escapes_is_refused() {
    let mut srv = TestServer::start(ServeArgs {
        seed: Some(43),
        ..args("34200-34249")
    });
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Positive control: a plain room name is served.
    let mut good = Uac::new(srv.sip, "plain-room_1.x~", "n0");
    good.call(&good.pcmu_offer(rtp.local_addr().unwrap()));
    for (i, room) in [
        "a%0d%0aFORGED",
        "a%0aFORGED%20line",
        "b%1b%5b31mred",
        "c%1b%5b2J",
        "caf%c3%a9",
    ]
    .iter()
    .enumerate()
    {
        let ua = Uac::new(srv.sip, room, &format!("n{}", i + 1));
        let inv = ua.request(
            "INVITE",
            1,
            &format!("bad{i}"),
            "",
            &ua.pcmu_offer(rtp.local_addr().unwrap()),
        );
        ua.send_raw(inv.as_bytes());
        let r = ua
            .recv_until(Duration::from_secs(3), |m| {
                uac::status(m).is_some_and(|s| s >= 200)
            })
            .unwrap_or_else(|| panic!("no final answer for room {room:?}"));
        assert_eq!(uac::status(&r), Some(404), "{room:?}: {r}");
        let ack = ua.request("ACK", 1, &format!("bad{i}"), "", "");
        ua.send_raw(ack.as_bytes());
    }
    // An ESC or CR/LF in From/To display names is escaped too (they are logged as URIs).
    let ua = Uac::new(srv.sip, "plain-room_1.x~", "n9");
    let inv = ua
        .request(
            "INVITE",
            1,
            "esc",
            "",
            &ua.pcmu_offer(rtp.local_addr().unwrap()),
        )
        .replace(
            "From: <sip:tester@",
            "From: \"\x1b[2J\" <sip:te%0d%0aFORGED@",
        );
    ua.send_raw(inv.as_bytes());
    ua.recv_until(Duration::from_secs(3), |m| {
        uac::status(m).is_some_and(|s| s >= 200)
    })
    .expect("answered");
    assert_eq!(uac::status(&good.bye().unwrap()), Some(200));
    srv.shutdown().expect("server stops cleanly");
    let log = &srv.log.lines;
    assert!(log.iter().any(|l| l.contains("room name not allowed")));
    for l in log {
        assert!(
            !l.contains(['\r', '\x1b']) && !l.starts_with("FORGED") && !l.contains("\nFORGED"),
            "raw wire text in the log: {l:?}"
        );
    }
    // The captured lines are split on '\n': a raw LF would have made a line of its own.
    assert!(!log.iter().any(|l| l.trim_start().starts_with("FORGED")));
}
