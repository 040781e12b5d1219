//! A viewer puts its video on hold with a re-INVITE and takes it back, over loopback,
//! asserted on what it receives and decodes.
//!
//! "red" sends video with GStreamer (it answers FIR/PLI with a keyframe) and talks;
//! "viewer" receives the room's video on a recording socket. After 2 s the viewer
//! re-INVITEs with its video `a=inactive`: nothing may reach it; 2 s later it re-INVITEs
//! with `a=recvonly` again: its stream resumes within 1 s, on the same SSRC, with the next
//! sequence number (no regression, nothing missing), starting with a keyframe, every frame
//! decodable.

mod common;
use common::uac::Uac;
use common::video::{answered_port, av_offer, reinvite, spawn_talkers, unix_now, STOP};
use common::{args, TestServer};
use pcap_harness::video::{analyze_video, FrameStatus, VideoOptions};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use testkit::video::{free_port_pair, VideoReceiver, VideoSender, VideoSenderConfig};
use testkit::Scratch;

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[test]
fn a_viewer_on_hold_gets_nothing_and_resumes_the_same_stream() {
    testkit::video::require_gstreamer();
    let dir = Scratch::new("e2e-video-hold");
    let srv = TestServer::start(args("39860-39899"));
    let mut parts = Vec::new();
    for (tag, dir_attr) in [("red", "sendrecv"), ("viewer", "recvonly")] {
        let audio = UdpSocket::bind("127.0.0.1:0").unwrap();
        let vport = free_port_pair(LO);
        let mut ua = Uac::new(srv.sip, "vhold", tag);
        let offer = av_offer(LO, audio.local_addr().unwrap().port(), vport, dir_attr);
        let ok = ua.call(&offer);
        let server_audio = SocketAddr::new(LO, answered_port(&ok, "audio"));
        let server_video = SocketAddr::new(LO, answered_port(&ok, "video"));
        parts.push((ua, audio, vport, server_audio, server_video, offer));
    }
    srv.wait_participants(2, Duration::from_secs(5));
    let talker = Arc::new(AtomicU8::new(0));
    let members: Vec<_> = parts.iter().map(|p| (&p.1, p.3)).collect();
    let audio_threads = spawn_talkers(&members, &talker, 400);
    let viewer = VideoReceiver::bind(SocketAddr::new(LO, parts[1].2), false);
    let red = VideoSender::start(&VideoSenderConfig::new(parts[0].4, parts[0].2, (255, 0, 0)));
    std::thread::sleep(Duration::from_secs(2));

    let offer = parts[1].5.clone();
    let hold_at = unix_now();
    let answer = reinvite(
        &mut parts[1].0,
        &offer
            .replace("o=tester 1 1", "o=tester 1 2")
            .replace("a=recvonly", "a=inactive"),
    );
    assert!(answer.contains("a=inactive"), "{answer}");
    std::thread::sleep(Duration::from_secs(2));
    let resume_at = unix_now();
    let answer = reinvite(
        &mut parts[1].0,
        &offer.replace("o=tester 1 1", "o=tester 1 3"),
    );
    assert!(answer.contains("a=sendonly"), "{answer}");
    std::thread::sleep(Duration::from_secs(2));
    talker.store(STOP, Ordering::Relaxed);
    for t in audio_threads {
        t.join().unwrap();
    }
    red.stop();
    let cap = viewer.finish(&dir.path("viewer.pcap"));
    let report = analyze_video(&cap, &VideoOptions::default()).unwrap();
    let streams = report.streams_to(&format!("127.0.0.1:{}", parts[1].2));
    assert_eq!(streams.len(), 1, "{:#?}", report.warnings);
    let s = streams[0];
    let during: Vec<_> = s
        .frame_list
        .iter()
        .filter(|f| f.time > hold_at + 0.2 && f.time < resume_at)
        .collect();
    let after: Vec<_> = s
        .frame_list
        .iter()
        .filter(|f| f.time >= resume_at)
        .collect();
    eprintln!(
        "VIDEO-HOLD viewer: ssrcs {:x?} packets {} missing {} regressions {} frames {} decoded {} corrupt {} keyframes {} frames during the hold {} after {} first after the resume {:.0} ms",
        s.ssrcs,
        s.packets,
        s.missing,
        s.regressions,
        s.frames,
        s.decoded,
        s.corrupt,
        s.keyframes,
        during.len(),
        after.len(),
        after.first().map_or(f64::NAN, |f| (f.time - resume_at) * 1e3)
    );
    assert_eq!(s.ssrcs.len(), 1, "one SSRC for the whole call");
    assert!(during.is_empty(), "{} frames during the hold", during.len());
    let first = after.first().expect("video after the resume");
    assert!(
        first.time - resume_at <= 1.0,
        "resumed after {:.2} s",
        first.time - resume_at
    );
    assert_eq!(
        first.keyframe,
        Some(true),
        "the resumed stream starts with a keyframe"
    );
    assert!(after.len() >= 20, "{} frames after the resume", after.len());
    assert!(after.iter().all(|f| f.status == FrameStatus::Decoded));
    assert_eq!(s.regressions, 0, "no sequence regression");
    assert_eq!(s.duplicates, 0);
    assert_eq!(
        s.missing, 0,
        "the sequence numbers continue across the hold"
    );
    assert_eq!(s.corrupt, 0, "every frame decodable");
}
