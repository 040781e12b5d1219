//! Continuous-presence (grid) video end to end over loopback, asserted on what a receiver
//! decodes.
//!
//! Three SIP participants in one room (scripted UACs for the signalling, real UDP): "red"
//! and "blue" send video with GStreamer (`videotestsrc` of their colour, `vp8enc`,
//! `rtpvp8pay`, `rtpbin`: it answers FIR/PLI with a keyframe) and PCMU audio; "viewer" sends
//! silence and receives the room's video on a recording socket. The capture is decoded with
//! libvpx (`pcap_harness::video`, each picture's 2x2 cells named by their colour).
//!
//! - A room in grid layout from the start (`--video-layout grid`): the viewer's pictures
//!   show red and blue in different tiles, on one SSRC without a sequence regression, every
//!   frame decodable; one encode per frame for the room's three receivers.
//! - A room switched at run time (`PUT /api/rooms/{room}`): voice-switched (red), then grid
//!   (red and blue within 1.5 s), then voice-switched again (red, whole picture), on one
//!   SSRC without a sequence regression across both changes.

mod common;
use common::uac::Uac;
use common::video::{answered_port, av_offer, spawn_talkers, unix_now, STOP};
use common::{args, metric, TestServer};
use pcap_harness::video::{analyze_video, FrameStatus, RefColour, VideoOptions, VideoStream};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use testkit::video::{free_port_pair, VideoReceiver, VideoSender, VideoSenderConfig};
use testkit::Scratch;

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The room's three members, red and blue sending video, red talking.
struct Room {
    _uas: Vec<Uac>,
    _audio: Vec<UdpSocket>,
    talker: Arc<AtomicU8>,
    talkers: Vec<JoinHandle<()>>,
    viewer: VideoReceiver,
    viewer_port: u16,
    senders: Vec<VideoSender>,
}

impl Room {
    fn join(srv: &TestServer, room: &str) -> Room {
        let mut uas = Vec::new();
        let mut audio = Vec::new();
        let mut addrs = Vec::new();
        let mut viewer = None;
        for (tag, dir) in [
            ("red", "sendrecv"),
            ("blue", "sendrecv"),
            ("viewer", "recvonly"),
        ] {
            let a = UdpSocket::bind("127.0.0.1:0").unwrap();
            let vport = free_port_pair(LO);
            if tag == "viewer" {
                // Listening before its offer, as a client does: the grid runs from the
                // first member with video on, and its keyframe may come at once.
                viewer = Some(VideoReceiver::bind(SocketAddr::new(LO, vport), false));
            }
            let mut ua = Uac::new(srv.sip, room, tag);
            let ok = ua.call(&av_offer(LO, a.local_addr().unwrap().port(), vport, dir));
            addrs.push((
                vport,
                SocketAddr::new(LO, answered_port(&ok, "audio")),
                SocketAddr::new(LO, answered_port(&ok, "video")),
            ));
            uas.push(ua);
            audio.push(a);
        }
        srv.wait_participants(3, Duration::from_secs(5));
        let talker = Arc::new(AtomicU8::new(0));
        let members: Vec<_> = audio.iter().zip(&addrs).map(|(s, a)| (s, a.1)).collect();
        let talkers = spawn_talkers(&members, &talker, 1000);
        let viewer = viewer.expect("the viewer listens");
        let senders = [(255, 0, 0), (0, 0, 255)]
            .iter()
            .enumerate()
            .map(|(i, &rgb)| {
                VideoSender::start(&VideoSenderConfig::new(addrs[i].2, addrs[i].0, rgb))
            })
            .collect();
        Room {
            _uas: uas,
            _audio: audio,
            talker,
            talkers,
            viewer,
            viewer_port: addrs[2].0,
            senders,
        }
    }

    /// Stop the media; the viewer's stream, decoded.
    fn finish(self, dir: &Scratch) -> VideoStream {
        self.talker.store(STOP, Ordering::Relaxed);
        for t in self.talkers {
            t.join().unwrap();
        }
        for s in self.senders {
            s.stop();
        }
        let cap = self.viewer.finish(&dir.path("viewer.pcap"));
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
        let to = format!("127.0.0.1:{}", self.viewer_port);
        let streams = report.streams_to(&to);
        assert_eq!(streams.len(), 1, "{:#?}", report.warnings);
        streams[0].clone()
    }
}

fn put_layout(srv: &TestServer, room: &str, layout: &str) {
    let body = format!(r#"{{"layout": "{layout}"}}"#);
    let r = testkit::http::put(
        srv.http,
        &format!("/api/rooms/{room}"),
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 200, "PUT layout {layout}: {}", r.body);
}

/// The room's layout in effect, as `GET /api/rooms` says.
fn layout_in_effect(srv: &TestServer) -> String {
    srv.get_json("/api/rooms")["rooms"][0]["layout"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Wait up to 2 s for the API to say `layout`.
fn wait_layout(srv: &TestServer, layout: &str) {
    let until = Instant::now() + Duration::from_secs(2);
    while layout_in_effect(srv) != layout {
        assert!(Instant::now() < until, "the API never said {layout}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn summary(tag: &str, s: &VideoStream) {
    eprintln!(
        "{tag} viewer: ssrcs {:x?} packets {} missing {} regressions {} frames {} decoded {} corrupt {} keyframes {} colours {:?} freeze {:.0} ms",
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
}

fn grid_metrics(tag: &str, srv: &TestServer) -> (f64, f64) {
    let text = srv.metrics();
    for l in text.lines().filter(|l| l.starts_with("mcu_video")) {
        eprintln!("{tag} {l}");
    }
    let frames = metric(&text, "mcu_video_grid_frames_total");
    let sum = metric(&text, "mcu_video_grid_encode_seconds_sum");
    let count = metric(&text, "mcu_video_grid_encode_seconds_count");
    let mean_ms = if count > 0.0 { sum / count * 1e3 } else { 0.0 };
    eprintln!("{tag} grid frames {frames}, mean compose+encode {mean_ms:.2} ms");
    (frames, mean_ms)
}

/// Grid frames whose tiles show both red and blue.
fn both_colours(f: &pcap_harness::video::VideoFrame) -> bool {
    f.status == FrameStatus::Decoded
        && f.tiles.iter().any(|t| t == "red")
        && f.tiles.iter().any(|t| t == "blue")
}

#[test]
fn a_grid_room_shows_both_senders_in_their_tiles_on_one_stream() {
    testkit::video::require_gstreamer();
    let dir = Scratch::new("e2e-video-grid");
    let srv = TestServer::start(mcu::config::ServeArgs {
        video_layout: Some("grid".into()),
        ..args("40200-40259")
    });
    let room = Room::join(&srv, "vgrid");
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(layout_in_effect(&srv), "grid");
    let (frames, _) = grid_metrics("VIDEO-GRID", &srv);
    let elapsed = started.elapsed().as_secs_f64();
    let s = room.finish(&dir);
    summary("VIDEO-GRID", &s);
    assert_eq!(s.ssrcs.len(), 1, "one SSRC for the whole call");
    assert_eq!(s.regressions, 0, "no sequence regression");
    assert_eq!(s.duplicates, 0);
    assert_eq!(s.corrupt, 0, "every frame decodable");
    assert!(s.decoded >= 30, "decoded only {} frames", s.decoded);
    let first = s
        .frame_list
        .iter()
        .position(both_colours)
        .expect("a picture with red and blue tiles");
    let tiles = &s.frame_list[first].tiles;
    eprintln!("VIDEO-GRID first grid picture with both: {tiles:?}");
    // From then on, both stay (a frozen tile keeps its last picture).
    let later: Vec<_> = s.frame_list[first..]
        .iter()
        .filter(|f| f.status == FrameStatus::Decoded)
        .collect();
    assert!(
        later.iter().all(|f| both_colours(f)),
        "a tile lost its colour"
    );
    assert!(later.len() >= 20);
    // One encode per frame for red, blue and the viewer: at most 15 fps (+ slack), not 45.
    assert!(frames >= 10.0, "grid frames {frames}");
    assert!(
        frames <= 16.0 * (elapsed + 2.0),
        "{frames} grid frames in {elapsed:.1} s: more than one encode per frame"
    );
}

#[test]
fn switching_to_grid_and_back_at_run_time_keeps_the_viewers_stream() {
    testkit::video::require_gstreamer();
    let dir = Scratch::new("e2e-video-grid-switch");
    let srv = TestServer::start(args("40260-40319"));
    let room = Room::join(&srv, "vgridswitch");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(layout_in_effect(&srv), "switched");
    let grid_at = unix_now();
    put_layout(&srv, "vgridswitch", "grid");
    wait_layout(&srv, "grid");
    std::thread::sleep(Duration::from_secs(3));
    let (frames, encode_ms) = grid_metrics("VIDEO-GRID-SWITCH", &srv);
    let back_at = unix_now();
    put_layout(&srv, "vgridswitch", "switched");
    wait_layout(&srv, "switched");
    std::thread::sleep(Duration::from_secs(3));
    let s = room.finish(&dir);
    summary("VIDEO-GRID-SWITCH", &s);
    assert!(frames > 0.0 && encode_ms > 0.0);
    assert_eq!(s.ssrcs.len(), 1, "one SSRC across both changes");
    assert_eq!(s.regressions, 0, "no sequence regression");
    assert_eq!(s.duplicates, 0);
    assert!(s.ssrc_changes.is_empty() && s.seq_resets.is_empty());
    let all_red = |f: &&pcap_harness::video::VideoFrame| {
        f.status == FrameStatus::Decoded && f.tiles.len() == 4 && f.tiles.iter().all(|t| t == "red")
    };
    // Voice-switched first: red, the talker, whole picture.
    assert!(
        s.frame_list
            .iter()
            .filter(|f| f.time < grid_at)
            .any(|f| all_red(&f)),
        "red before the grid"
    );
    let grid_seen = s
        .frame_list
        .iter()
        .find(|f| f.time >= grid_at && both_colours(f))
        .map(|f| f.time)
        .expect("the grid after the change");
    let latency = grid_seen - grid_at;
    eprintln!(
        "VIDEO-GRID-SWITCH grid picture {:.0} ms after the PUT",
        latency * 1e3
    );
    assert!(
        latency <= 1.5,
        "the grid appeared {latency:.2} s after the PUT"
    );
    let back_seen = s
        .frame_list
        .iter()
        .filter(|f| f.time >= back_at)
        .find(all_red)
        .map(|f| f.time)
        .expect("red alone again after leaving the grid");
    let back = back_seen - back_at;
    eprintln!(
        "VIDEO-GRID-SWITCH switched picture {:.0} ms after the PUT",
        back * 1e3
    );
    assert!(back <= 1.5, "back to red {back:.2} s after the PUT");
    // Nothing undecodable in between.
    let first = s.first_decoded_time.expect("a decoded picture");
    let bad: Vec<_> = s
        .frame_list
        .iter()
        .filter(|f| {
            f.time >= first && !matches!(f.status, FrameStatus::Decoded | FrameStatus::Hidden)
        })
        .map(|f| (f.time, f.status))
        .collect();
    assert!(bad.is_empty(), "frames not decoded: {bad:?}");
    let rel: Vec<(f64, f64)> = s
        .freezes
        .iter()
        .map(|f| ((f.from - grid_at) * 1e3, f.ms))
        .collect();
    eprintln!("VIDEO-GRID-SWITCH freezes (ms after the grid PUT, ms): {rel:.0?}");
    // Bounded loosely: on this shared 2-core box the server runs at nice 19 among other
    // test suites (the layout changes themselves show no freeze: the old picture stays
    // until the new keyframe).
    let long: Vec<_> = s
        .freezes
        .iter()
        .filter(|f| f.from >= first && f.ms > 1000.0)
        .collect();
    assert!(long.is_empty(), "freezes: {long:?}");
}
