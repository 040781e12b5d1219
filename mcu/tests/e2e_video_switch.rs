//! Voice-switched video end to end over loopback, asserted on what a receiver decodes.
//!
//! Three SIP participants in one room (scripted UACs for the signalling, real UDP):
//! - "red" and "blue" send video with GStreamer (`videotestsrc` of their colour, `vp8enc`,
//!   `rtpvp8pay`, `rtpbin`: it answers the server's FIR/PLI with a keyframe) and PCMU audio;
//! - "viewer" sends silence and receives the room's video on a recording socket.
//!
//! Red talks first (a tone), then blue. The viewer's capture is decoded with libvpx
//! (`pcap_harness::video`): one SSRC for the whole call, no sequence regression, pictures
//! red and then blue, the switch within 1.5 s of blue starting to talk, and every frame
//! after the first keyframe decodable (no freeze over 300 ms after the first picture).

mod common;
use common::uac::Uac;
use common::video::{answered_port, av_offer, spawn_talkers, unix_now, STOP};
use common::{args, TestServer};
use pcap_harness::video::{analyze_video, VideoOptions};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use testkit::video::{free_port_pair, VideoReceiver, VideoSender, VideoSenderConfig};
use testkit::Scratch;

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[test]
fn voice_switched_video_follows_the_speaker() {
    testkit::video::require_gstreamer();
    let dir = Scratch::new("e2e-video-switch");
    let srv = TestServer::start(args("39800-39859"));
    let mut parts = Vec::new();
    for (tag, dir_attr) in [
        ("red", "sendrecv"),
        ("blue", "sendrecv"),
        ("viewer", "recvonly"),
    ] {
        let audio = UdpSocket::bind("127.0.0.1:0").unwrap();
        let vport = free_port_pair(LO);
        let mut ua = Uac::new(srv.sip, "vswitch", tag);
        let ok = ua.call(&av_offer(
            LO,
            audio.local_addr().unwrap().port(),
            vport,
            dir_attr,
        ));
        let server_audio = SocketAddr::new(LO, answered_port(&ok, "audio"));
        let server_video = SocketAddr::new(LO, answered_port(&ok, "video"));
        parts.push((tag, ua, audio, vport, server_audio, server_video));
    }
    srv.wait_participants(3, Duration::from_secs(5));
    // Who talks: red (0), then blue (1).
    let talker = Arc::new(AtomicU8::new(0));
    let members: Vec<_> = parts.iter().map(|p| (&p.2, p.4)).collect();
    let audio_threads = spawn_talkers(&members, &talker, 400);
    let viewer = VideoReceiver::bind(SocketAddr::new(LO, parts[2].3), false);
    let red = VideoSender::start(&VideoSenderConfig::new(parts[0].5, parts[0].3, (255, 0, 0)));
    let blue = VideoSender::start(&VideoSenderConfig::new(parts[1].5, parts[1].3, (0, 0, 255)));
    std::thread::sleep(Duration::from_secs(3));
    let switch_at = unix_now();
    talker.store(1, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(3));
    talker.store(STOP, Ordering::Relaxed);
    for t in audio_threads {
        t.join().unwrap();
    }
    let metrics = srv.metrics();
    // The operator's view (GET /api/rooms): each member's video, found by our port for it.
    let rooms = srv.get_json("/api/rooms");
    let members: Vec<serde_json::Value> = rooms["rooms"][0]["participants"]
        .as_object()
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default();
    let member = |i: usize| {
        members
            .iter()
            .find(|p| p["video"]["local_rtp_port"] == u64::from(parts[i].5.port()))
            .unwrap_or_else(|| panic!("participant {} not in {rooms}", parts[i].0))
            .clone()
    };
    let (blue_member, viewer_member) = (member(1), member(2));
    eprintln!("VIDEO-SWITCH viewer in the API: {}", viewer_member["video"]);
    red.stop();
    blue.stop();
    let cap = viewer.finish(&dir.path("viewer.pcap"));
    let report = analyze_video(&cap, &VideoOptions::default()).unwrap();
    let to_viewer = format!("127.0.0.1:{}", parts[2].3);
    let streams = report.streams_to(&to_viewer);
    assert_eq!(streams.len(), 1, "{:#?}", report.warnings);
    let s = streams[0];
    eprintln!(
        "VIDEO-SWITCH viewer: ssrcs {:x?} packets {} missing {} regressions {} frames {} decoded {} corrupt {} keyframes {} colours {:?} freeze {:.0} ms",
        s.ssrcs,
        s.packets,
        s.missing,
        s.regressions,
        s.frames,
        s.decoded,
        s.corrupt,
        s.keyframes,
        s.colour_sequence(),
        s.freeze.ms
    );
    for l in metrics.lines().filter(|l| l.starts_with("mcu_video")) {
        eprintln!("VIDEO-SWITCH {l}");
    }
    assert_eq!(s.ssrcs.len(), 1, "one SSRC for the whole call");
    let v = &viewer_member["video"];
    assert_eq!(
        v["showing"], blue_member["id"],
        "the API says the viewer is shown blue"
    );
    assert_eq!(
        v["ssrc_out"],
        u64::from(s.ssrcs[0]),
        "the API's SSRC is the one received"
    );
    assert!(v["switches"].as_u64() >= Some(2), "red, then blue: {v}");
    assert!(blue_member["video"]["keyframe_requests"].as_u64() >= Some(1));
    assert_eq!(s.regressions, 0, "no sequence regression");
    assert_eq!(s.duplicates, 0);
    assert!(s.decoded >= 100, "decoded only {} frames", s.decoded);
    assert_eq!(s.corrupt, 0, "every frame decodable");
    assert_eq!(
        s.colour_sequence(),
        vec!["red", "blue"],
        "the viewer sees red, then blue"
    );
    let blue_at = s
        .first_colour_after("blue", switch_at)
        .expect("a blue picture after the switch");
    let latency = blue_at - switch_at;
    eprintln!("VIDEO-SWITCH switch latency {:.0} ms", latency * 1e3);
    assert!(
        latency <= 1.5,
        "switched {latency:.2} s after blue began to talk"
    );
    let first = s.first_decoded_time.expect("a decoded picture");
    let late_freezes: Vec<_> = s
        .freezes
        .iter()
        .filter(|f| f.from >= first && f.ms > 300.0)
        .collect();
    assert!(late_freezes.is_empty(), "freezes: {late_freezes:?}");
}
