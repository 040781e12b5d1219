//! Video calls end to end over loopback, as the clients and the server's `/metrics` see
//! them (the forwarder is not there yet: the room counts what it receives and drops it):
//!
//! - a sipp UAC offering PCMA audio and VP8 video gets a 200 OK accepting both (the VP8 line
//!   with its RTCP feedback lines), plays sipp's recorded speech and VP8 RTP (a small capture
//!   written by the test) from its video port; the server counts the video packets, and an
//!   audio-only sipp in the same room hears the first one's speech (tcpdump capture, root);
//! - a scripted UAC (no root): both lines answered, video RTP and RTCP from the SDP address
//!   counted, video from anyone else dropped by the media source rule, a re-INVITE removing
//!   the video (no more counted) and one bringing it back on the same port, the participant's
//!   video in `GET /api/rooms`;
//! - `mcu bench video-clients` (the load generator of `scripts/bench-video`), two clients
//!   for 3 s: both join, each receives one forwarded video stream, both BYEs answered;
//! - offers the server cannot serve video for: a video line without VP8 is declined with
//!   port 0 and the audio accepted; a video-only offer is refused with 488; with
//!   `--no-video` every video line is declined as before.

mod common;
use common::uac::{body, status, Uac};
use common::video::reinvite;
use common::{args, scenario, TestServer};
use mcu::config::ServeArgs;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;
use testkit::capture::Capture;
use testkit::peers::{sipp, uac_pcap_scenario, SIPP_PCAP_DIR};
use testkit::process::expect_success;
use testkit::Scratch;

const RTP: &str = "mcu_video_packets_received_total{kind=\"rtp\"}";
const RTCP: &str = "mcu_video_packets_received_total{kind=\"rtcp\"}";

/// One VP8 RTP packet (PT 96, marker set: a whole frame) with a minimal payload descriptor
/// (S=1, partition 0) and `len` bytes of payload.
fn vp8_packet(ssrc: u32, seq: u16, ts: u32, len: usize) -> Vec<u8> {
    let mut p = vec![0x80, 0x80 | 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.push(0x10);
    p.extend((0..len).map(|i| i as u8));
    p
}

/// An RTCP receiver report (no report block) from `ssrc`.
fn rtcp_rr(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 201, 0, 1];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p
}

/// A classic pcap (Ethernet, IPv4, UDP 127.0.0.1:5002 -> :6002) of `n` VP8 packets 40 ms
/// apart: what sipp's `play_pcap_video` plays (it keeps the RTP, paces by the timestamps).
fn write_vp8_pcap(path: &Path, n: u16) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4_u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // Ethernet
    for i in 0..n {
        let rtp = vp8_packet(0x5eed_0001, 1000 + i, 3600 * u32::from(i), 200);
        let udp_len = 8 + rtp.len();
        let ip_len = 20 + udp_len;
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&(ip_len as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1]);
        let sum = ip
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum::<u32>();
        let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&5002u16.to_be_bytes());
        frame.extend_from_slice(&6002u16.to_be_bytes());
        frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&rtp);
        let at_us = u32::from(i) * 40_000;
        out.extend_from_slice(&(1_700_000_000 + at_us / 1_000_000).to_le_bytes());
        out.extend_from_slice(&(at_us % 1_000_000).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    std::fs::write(path, out).expect("write the VP8 capture");
}

/// `(media, port)` of every m= line of an SDP body.
fn m_lines(sdp: &str) -> Vec<(String, u16)> {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("m="))
        .map(|l| {
            let mut it = l.split(' ');
            let media = it.next().unwrap_or("").to_string();
            (media, it.next().and_then(|p| p.parse().ok()).unwrap_or(0))
        })
        .collect()
}

fn video_offer(audio: SocketAddr, video: SocketAddr, video_codec: &str, extra: &str) -> String {
    format!(
        "v=0\r\no=tester 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n\
         m=video {} RTP/AVP 96\r\na=rtpmap:96 {video_codec}\r\na=rtcp-fb:96 nack\r\n\
         a=rtcp-fb:96 nack pli\r\na=rtcp-fb:96 ccm fir\r\na=rtcp-fb:96 goog-remb\r\n{extra}",
        audio.port(),
        video.port()
    )
}

/// Poll `/metrics` until the sample `name` reaches `want` (or the timeout); its last value.
fn wait_metric(srv: &TestServer, name: &str, want: f64, timeout: Duration) -> f64 {
    let mut last = 0.0;
    testkit::poll(timeout, || {
        last = srv.metric(name);
        (last >= want).then_some(())
    });
    last
}

/// INVITE (or re-INVITE) with `sdp` on an established dialog: the 200's body, ACKed.
#[test]
fn sipp_with_audio_and_vp8_video_is_answered_with_both_and_its_video_arrives() {
    testkit::require::e2e("tcpdump on lo", &["sipp", "tcpdump"]);
    let dir = Scratch::new("e2e-video-sipp");
    write_vp8_pcap(&dir.path("video.pcap"), 50);
    std::fs::copy(
        Path::new(SIPP_PCAP_DIR).join("g711a.pcap"),
        dir.path("g711a.pcap"),
    )
    .expect("sipp's recorded A-law speech");
    let cap = Capture::start(&dir.path("video.pcap.cap"), "udp and portrange 39750-39799");
    let srv = TestServer::start(ServeArgs {
        seed: Some(12),
        ..args("39750-39799")
    });
    // The listener first (audio only, sipp's own uac_pcap scenario), then the video caller.
    let listen = uac_pcap_scenario(&dir.0);
    let mut audio_only = sipp(&listen, "videoroom", 25772, 26710, false, srv.sip, &dir.0);
    srv.wait_participants(1, Duration::from_secs(10));
    let mut video = sipp(
        &scenario("uac_audio_video.xml"),
        "videoroom",
        25771,
        26700,
        false,
        srv.sip,
        &dir.0,
    );
    let rooms = srv.wait_participants(2, Duration::from_secs(10));
    let p = rooms["rooms"][0]["participants"]
        .as_object()
        .unwrap()
        .values()
        .find(|p| !p["video"].is_null())
        .cloned()
        .unwrap_or_else(|| panic!("no participant with video: {rooms:#}"));
    let local_video = p["video"]["local_rtp_port"].as_u64().unwrap();
    assert!((39750..39800).contains(&local_video), "{p:#}");
    assert_ne!(p["video"]["local_rtp_port"], p["local_rtp_port"]);
    assert_eq!(p["video"]["payload_type"], 96);
    assert_eq!(p["video"]["direction"], "sendrecv");
    assert_eq!(rooms["rooms"][0]["layout"], "switched");
    expect_success(
        &mut video,
        "sipp offering audio and VP8 video (the 200 OK must accept both, with rtcp-fb nack, nack pli, ccm fir)",
        Duration::from_secs(40),
    );
    let got = wait_metric(&srv, RTP, 50.0, Duration::from_secs(5));
    assert_eq!(got, 50.0, "every VP8 packet sipp played was received");
    expect_success(&mut audio_only, "audio-only sipp", Duration::from_secs(40));
    let report = pcap_harness::analyze_path(&cap.stop()).unwrap();
    // The audio-only sipp hears the video caller's speech.
    let to_listener: Vec<_> = report
        .rtp_streams
        .iter()
        .filter(|s| s.dst == "127.0.0.1:26710")
        .collect();
    assert_eq!(to_listener.len(), 1, "{to_listener:#?}");
    let loud = to_listener[0]
        .energy_dbfs
        .iter()
        .filter(|e| **e > -40.0)
        .count();
    assert!(
        loud >= 20,
        "the audio-only sipp hears the speech: {:?}",
        to_listener[0].energy_dbfs
    );
    // The video went to the answered video port, from sipp's video port.
    let vp8: Vec<_> = report
        .rtp_streams
        .iter()
        .filter(|s| s.dst == format!("127.0.0.1:{local_video}"))
        .collect();
    assert_eq!(vp8.len(), 1, "{vp8:#?}");
    assert_eq!(vp8[0].src, "127.0.0.1:26702");
    assert_eq!(vp8[0].payload_types, vec![96]);
}

#[test]
fn video_from_its_source_is_received_from_anyone_else_dropped_and_reinvites_remove_and_restore_it()
{
    let srv = TestServer::start(args("39700-39749"));
    let audio = UdpSocket::bind("127.0.0.1:0").unwrap();
    let video = UdpSocket::bind("127.0.0.1:0").unwrap();
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (a, v) = (audio.local_addr().unwrap(), video.local_addr().unwrap());
    let mut ua = Uac::new(srv.sip, "vid", "vid1");
    let offer = video_offer(a, v, "VP8/90000", "a=rtcp-mux\r\na=sendrecv\r\n");
    let ok = ua.call(&offer);
    let answer = body(&ok).to_string();
    let lines = m_lines(&answer);
    assert_eq!(lines.len(), 2, "{answer}");
    assert_eq!(lines[0].0, "audio");
    assert_eq!(lines[1].0, "video");
    let video_port = lines[1].1;
    assert!((39700..39750).contains(&video_port), "{answer}");
    assert_ne!(video_port, lines[0].1);
    let at = &answer[answer.find("m=video").unwrap()..];
    for l in [
        "m=video",
        "a=rtpmap:96 VP8/90000",
        "a=rtcp-fb:96 nack\r\n",
        "a=rtcp-fb:96 nack pli",
        "a=rtcp-fb:96 ccm fir",
        "a=rtcp-fb:96 goog-remb",
        "a=rtcp-mux",
        "a=sendrecv",
    ] {
        assert!(at.contains(l), "{l} missing in\n{answer}");
    }
    let server_video: SocketAddr = format!("127.0.0.1:{video_port}").parse().unwrap();
    // From the SDP's video address: RTP and (muxed) RTCP, counted.
    for i in 0..20u16 {
        video
            .send_to(&vp8_packet(7, i, 3000 * u32::from(i), 100), server_video)
            .unwrap();
    }
    for _ in 0..2 {
        video.send_to(&rtcp_rr(7), server_video).unwrap();
    }
    assert_eq!(wait_metric(&srv, RTP, 20.0, Duration::from_secs(5)), 20.0);
    assert_eq!(wait_metric(&srv, RTCP, 2.0, Duration::from_secs(5)), 2.0);
    // From anyone else: dropped by the media source rule, not counted as video.
    let foreign = srv.metric("mcu_media_foreign_dropped_total");
    for i in 0..5u16 {
        stranger
            .send_to(&vp8_packet(9, i, 0, 100), server_video)
            .unwrap();
    }
    let dropped = wait_metric(
        &srv,
        "mcu_media_foreign_dropped_total",
        foreign + 5.0,
        Duration::from_secs(5),
    );
    assert_eq!(dropped, foreign + 5.0);
    assert_eq!(srv.metric(RTP), 20.0);
    // The API shows the participant's video.
    let rooms = srv.get_json("/api/rooms");
    let p = rooms["rooms"][0]["participants"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    assert_eq!(p["video"]["local_rtp_port"], video_port, "{p:#}");
    assert_eq!(p["video"]["remote_media"], v.to_string(), "{p:#}");
    // A re-INVITE removes the video: declined, nothing more counted.
    let no_video = ua.pcmu_offer(a);
    let answer = reinvite(&mut ua, &no_video);
    assert_eq!(m_lines(&answer).len(), 1, "{answer}");
    for i in 20..25u16 {
        video
            .send_to(&vp8_packet(7, i, 3000 * u32::from(i), 100), server_video)
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(srv.metric(RTP), 20.0, "video removed: not received");
    // And brings it back, on the same port.
    let answer = reinvite(&mut ua, &offer.replace("o=tester 1 1", "o=tester 1 3"));
    assert_eq!(m_lines(&answer)[1], ("video".to_string(), video_port));
    for i in 25..35u16 {
        video
            .send_to(&vp8_packet(7, i, 3000 * u32::from(i), 100), server_video)
            .unwrap();
    }
    assert_eq!(wait_metric(&srv, RTP, 30.0, Duration::from_secs(5)), 30.0);
    assert!(ua.bye().is_some());
}

#[test]
fn video_without_vp8_is_declined_video_alone_refused_and_no_video_declines_all() {
    let srv = TestServer::start(args("39650-39699"));
    let a: SocketAddr = "127.0.0.1:27200".parse().unwrap();
    let v: SocketAddr = "127.0.0.1:27202".parse().unwrap();
    // H.264 only: the video line declined in place, the audio accepted.
    let mut ua = Uac::new(srv.sip, "novp8", "h264");
    let ok = ua.call(&video_offer(a, v, "H264/90000", ""));
    let lines = m_lines(body(&ok));
    assert_eq!(lines.len(), 2, "{ok}");
    assert_eq!(lines[1], ("video".to_string(), 0), "{ok}");
    assert_ne!(lines[0].1, 0);
    ua.bye();
    // Video alone, with or without VP8: 488.
    for codec in ["H264/90000", "VP8/90000"] {
        let ua = Uac::new(srv.sip, "novp8", &format!("vonly{}", codec.len()));
        let only = format!(
            "v=0\r\no=tester 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=video {} RTP/AVP 96\r\na=rtpmap:96 {codec}\r\n",
            v.port()
        );
        let inv = ua.request("INVITE", 1, "vonly", "", &only);
        let got = ua.transact(&inv, "INVITE", Duration::from_secs(5));
        let last = got.last().map(|(_, m)| m.as_str()).unwrap_or("");
        assert_eq!(status(last), Some(488), "{codec}: {last}");
    }
    drop(srv);
    // --no-video: a VP8 line is declined as before video existed.
    let srv = TestServer::start(ServeArgs {
        no_video: true,
        ..args("39650-39699")
    });
    let mut ua = Uac::new(srv.sip, "novideo", "nov");
    let ok = ua.call(&video_offer(a, v, "VP8/90000", ""));
    assert_eq!(m_lines(body(&ok))[1], ("video".to_string(), 0), "{ok}");
    let rooms = srv.wait_participants(1, Duration::from_secs(5));
    let p = rooms["rooms"][0]["participants"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    assert!(p["video"].is_null(), "{p:#}");
    ua.bye();
}

/// The video load generator runs: two clients of `mcu bench video-clients` (one talker, one
/// listener, the recorded red camera) in one room for 3 s join, each receives video from
/// exactly one SSRC (the listener the talker's, the talker the listener's), and hang up.
#[test]
fn bench_video_clients_join_receive_one_stream_each_and_hang_up() {
    let srv = TestServer::start(args("38400-38419"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcu"))
        .args(["bench", "video-clients", "--sip", &srv.sip.to_string()])
        .args(["--rooms", "1", "--per-room", "2", "--secs", "3", "--video"])
        .arg(testkit::video::recorded_vp8("red"))
        .output()
        .expect("run mcu bench video-clients");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    assert!(
        stdout.contains("2/2 joined") && stdout.contains("0 with errors, 2 BYEs answered"),
        "{stdout}"
    );
    for role in ["listeners", "talkers"] {
        let line = stdout
            .lines()
            .find(|l| l.contains(&format!("video SSRCs received, {role}:")))
            .unwrap_or_else(|| panic!("no {role} line in {stdout}"));
        assert!(line.contains("one 1, none 0, several 0"), "{line}");
        let fewest: u64 = line
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(fewest >= 10, "{role}: {line}");
    }
    assert!(srv.metric("mcu_video_packets_sent_total{kind=\"rtp\"}") >= 20.0);
}
