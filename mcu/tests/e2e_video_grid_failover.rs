//! The grid across `kill -9` of the primary (issue 12), in the namespace test bed: a primary
//! and a backup serve the service address, every room in grid layout
//! (`--video-layout grid`). In one room "red" and "blue" (client1: scripted UACs, red's
//! audio a 1 kHz tone so that it is the framed speaker, GStreamer VP8 senders of their
//! colour answering keyframe requests) and "viewer" (client2: a UAC and a recording socket).
//! The primary is killed 4 s in; the viewer's capture, decoded with libvpx
//! (`pcap_harness::video`, 2x2 cells named by colour), must show one SSRC for the whole
//! call, no sequence regression or duplicate, every frame decodable, the grid with both
//! colours after the kill (the promoted backup's compositor resumed from the replicated
//! snapshot), and no interval without a new picture longer than the goal (500 ms) across it.

mod common;
use common::uac::Uac;
use common::video::{answered_port, av_offer, bed_viewer, spawn_tone, unix_now};
use common::{ft_node_args, node_http, pair_synced, Node};
use pcap_harness::video::{analyze_video, FrameStatus, RefColour, VideoOptions};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use testkit::bed::{addr_of, Testbed, VIP};
use testkit::poll;
use testkit::video::{VideoSender, VideoSenderConfig};

const ROOM: &str = "vgridfail";
/// The longest interval without a decodable picture across the kill (issue 12's goal).
const FREEZE_GOAL_MS: f64 = 500.0;

/// A primary and a backup whose rooms are in grid layout.
fn start_grid_pair(bed: &Testbed, key: &std::path::Path) -> (Node, Node) {
    let grid = ["--video-layout".to_string(), "grid".to_string()];
    let mut nodes = vec![];
    for (node, peer) in [("backup", "primary"), ("primary", "backup")] {
        let n = Node::start(
            bed,
            node,
            node_http(node),
            &ft_node_args(node, peer, key, &grid),
        );
        assert!(
            poll(Duration::from_secs(20), || n.get("/api/status")).is_some(),
            "{node} does not answer"
        );
        nodes.push(n);
    }
    let (backup, primary) = (nodes.remove(0), nodes.remove(0));
    assert!(pair_synced(&primary, &backup), "the pair is not protected");
    (primary, backup)
}

fn both_colours(f: &pcap_harness::video::VideoFrame) -> bool {
    f.status == FrameStatus::Decoded
        && f.tiles.iter().any(|t| t == "red")
        && f.tiles.iter().any(|t| t == "blue")
}

#[test]
fn grid_survives_kill_of_primary() {
    testkit::require::e2e("network namespaces", &["ip", "iptables"]);
    testkit::video::require_gstreamer();
    let prefix = std::env::var("VIDEO_GRID_FAILOVER_PREFIX").unwrap_or_else(|_| "us-vg".into());
    let dir = testkit::Scratch::new("e2e-video-grid-failover");
    let key = dir.path("ft.key");
    std::fs::write(&key, format!("understudy-vg-{}", std::process::id())).unwrap();
    let bed = Testbed::up(&prefix, 2);
    let (mut primary, backup) = start_grid_pair(&bed, &key);
    let server = SocketAddr::new(VIP.into(), 5060);

    // Red and blue on client1: SIP :5070 / :5072, audio :20000 / :20010, video
    // :20002 / :20012 (GStreamer).
    let c1 = IpAddr::from(addr_of("client1"));
    let mut uas = Vec::new();
    let mut audio_socks = Vec::new();
    let mut red_audio = None;
    let mut video_to = Vec::new();
    for (tag, sip, audio, video) in [("red", 5070, 20000, 20002), ("blue", 5072, 20010, 20012)] {
        let a = bed.udp("client1", &format!("{c1}:{audio}"));
        let mut ua = Uac::with_socket(
            bed.udp("client1", &format!("{c1}:{sip}")),
            server,
            ROOM,
            tag,
        );
        let ok = ua.call(&av_offer(c1, audio, video, "sendrecv"));
        if tag == "red" {
            red_audio = Some((a, SocketAddr::new(VIP.into(), answered_port(&ok, "audio"))));
        } else {
            audio_socks.push(a);
        }
        video_to.push((
            video,
            SocketAddr::new(VIP.into(), answered_port(&ok, "video")),
        ));
        uas.push(ua);
    }
    let (_viewer_ua, _viewer_audio, viewer, viewer_rtp) = bed_viewer(&bed, server, ROOM);

    // Red talks all along (a tone): the framed speaker.
    let stop = Arc::new(AtomicBool::new(false));
    let talker = {
        let (sock, to) = red_audio.expect("red joined");
        spawn_tone(sock, to, stop.clone())
    };
    let senders: Vec<VideoSender> = video_to
        .iter()
        .zip([(255, 0, 0), (0, 0, 255)])
        .map(|(&(port, to), rgb)| {
            let mut cfg = VideoSenderConfig::new(to, port, rgb);
            cfg.local_ip = c1;
            VideoSender::start_in(&bed, "client1", &cfg)
        })
        .collect();
    assert!(
        poll(Duration::from_secs(5), || (viewer.received() > 30)
            .then_some(()))
        .is_some(),
        "the viewer gets no video before the kill"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(pair_synced(&primary, &backup), "the backup holds the room");

    let kill_at = unix_now();
    primary.kill9();
    let taken = poll(Duration::from_secs(5), || {
        let st = backup.get_json("/api/status")?;
        (st["role"] == "primary").then_some(())
    });
    assert!(taken.is_some(), "the backup did not take over");
    std::thread::sleep(Duration::from_secs(3));
    let layout = backup
        .get_json("/api/rooms")
        .map(|r| r["rooms"][0]["layout"].clone())
        .unwrap_or_default();
    stop.store(true, Ordering::Relaxed);
    talker.join().unwrap();
    for s in senders {
        s.stop();
    }
    let metrics = backup.get("/metrics").map(|(_, b)| b).unwrap_or_default();
    let cap = viewer.finish(&dir.path("viewer.pcap"));
    let opts = VideoOptions {
        colours: vec![
            RefColour::rgb("red", 255, 0, 0),
            RefColour::rgb("blue", 0, 0, 255),
            RefColour::rgb("black", 0, 0, 0),
        ],
        tiles: Some((2, 2)),
        ..VideoOptions::default()
    };
    let report = analyze_video(&cap, &opts).unwrap();
    let streams = report.streams_to(&viewer_rtp.to_string());
    assert_eq!(streams.len(), 1, "{:?}", report.warnings);
    let s = streams[0];
    let pictures: Vec<f64> = s
        .frame_list
        .iter()
        .filter(|f| f.status == FrameStatus::Decoded)
        .map(|f| f.time)
        .collect();
    let gap_across = pictures
        .windows(2)
        .filter(|w| w[0] <= kill_at && w[1] >= kill_at)
        .map(|w| (w[1] - w[0]) * 1e3)
        .fold(0.0f64, f64::max);
    let grid_after = s
        .frame_list
        .iter()
        .find(|f| f.time > kill_at && both_colours(f))
        .map(|f| (f.time - kill_at) * 1e3);
    eprintln!(
        "VIDEO-GRID-FAILOVER viewer: ssrcs {:x?} packets {} missing {} regressions {} duplicates {} frames {} decoded {} corrupt {} keyframes {} longest freeze {:.0} ms, across the kill: frame gap {:.0} ms, both colours again {:?} ms after the kill; layout {layout}",
        s.ssrcs,
        s.packets,
        s.missing,
        s.regressions,
        s.duplicates,
        s.frames,
        s.decoded,
        s.corrupt,
        s.keyframes,
        s.freeze.ms,
        gap_across,
        grid_after,
    );
    for l in metrics.lines().filter(|l| l.starts_with("mcu_video")) {
        eprintln!("VIDEO-GRID-FAILOVER backup {l}");
    }
    assert_eq!(layout, "grid", "the promoted backup runs the grid");
    assert_eq!(s.ssrcs.len(), 1, "one SSRC across the takeover");
    assert_eq!(s.regressions, 0, "no sequence regression");
    assert_eq!(s.duplicates, 0, "no packet twice");
    assert_eq!(s.corrupt, 0, "every frame decodable");
    assert!(
        s.frame_list
            .iter()
            .any(|f| f.time < kill_at && both_colours(f)),
        "the grid before the kill"
    );
    let grid_after = grid_after.expect("the grid with both colours after the kill");
    assert!(
        grid_after <= 1500.0,
        "the grid came back {grid_after:.0} ms after the kill"
    );
    let after = pictures.iter().filter(|t| **t > kill_at + 0.5).count();
    assert!(
        after >= 25,
        "only {after} pictures decoded after the takeover"
    );
    assert!(
        gap_across > 0.0 && gap_across <= FREEZE_GOAL_MS,
        "longest interval without a picture across the kill: {gap_across:.0} ms"
    );
    drop((uas, audio_socks));
    drop(backup);
}
