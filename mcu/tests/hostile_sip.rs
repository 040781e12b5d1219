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
