//! A browser's video in a voice-switched room, end to end over loopback, asserted where each
//! client observes it.
//!
//! - "red": a SIP participant sending VP8 with GStreamer (`videotestsrc` red, 320x240, it
//!   answers FIR/PLI) and a PCMU tone while it talks;
//! - "viewer": a SIP participant, recvonly video, recording what it receives;
//! - "chromium": headless Chromium with a fake camera (Chromium's 640x480 test pattern) and a
//!   fake microphone (espeak-ng speech), joined through the participant page over WHIP: its
//!   VP8 is bundled with its Opus on one ICE/DTLS/SRTP transport.
//!
//! Red talks first: the browser's `getStats` must show one inbound video SSRC whose frames
//! decode and keep coming, at red's size. Then red falls silent and the browser (still
//! speaking) becomes the speaker: the viewer must decode the browser's video (libvpx,
//! `pcap_harness::video`: one SSRC for the whole call, no sequence regression, no corrupt
//! frame, pictures that are no longer red), while the browser, now the speaker, keeps
//! seeing red (the previous speaker).

mod common;
use common::uac::Uac;
use common::video::{answered_port, av_offer, spawn_talkers, unix_now, NOBODY, STOP};
use common::{args, TestServer};
use mcu::config::ServeArgs;
use pcap_harness::video::{analyze_video, VideoOptions};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use testkit::browser::{stat as num, Browser};
use testkit::peers;
use testkit::video::{free_port_pair, VideoReceiver, VideoSender, VideoSenderConfig};
use testkit::Scratch;

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const RTP_RANGE: (u16, u16) = (36400, 36459);
const WEBRTC_PORT: u16 = 36460;

/// A SIP member: its UA, audio socket, video port, and the server's audio and video ports.
type Member = (&'static str, Uac, UdpSocket, u16, SocketAddr, SocketAddr);

/// What [`start`] sets up.
struct Setup {
    dir: Scratch,
    srv: TestServer,
    /// Red, then the viewer.
    parts: Vec<Member>,
    /// The viewer's recording socket, listening before its offer (a grid's first keyframe
    /// may come at once).
    viewer: VideoReceiver,
    /// Who talks (red, 0, from the start), and the members' audio threads.
    talker: Arc<AtomicU8>,
    audio_threads: Vec<std::thread::JoinHandle<()>>,
    /// Red's camera.
    red: VideoSender,
    browser: Browser,
    /// The browser's stats once it decodes and sends video.
    first: serde_json::Value,
}

/// The browser's speech, a server (`layout`: `--video-layout`), "red" (sendrecv, talking,
/// its camera on) and "viewer" (recvonly) joined to room `room` by SIP, then the browser,
/// once it decodes and sends video.
fn start(name: &str, room: &str, rtp: (u16, u16), webrtc_port: u16, layout: Option<&str>) -> Setup {
    testkit::video::require_gstreamer();
    testkit::require::tools(&["espeak-ng", "ffmpeg"]);
    testkit::browser::require();
    let dir = Scratch::new(name);
    let raw = peers::espeak(
        &dir.0,
        "raw.wav",
        "The browser is speaking now, and it keeps on speaking. One two three four five six \
         seven eight nine ten. The quick brown fox jumps over the lazy dog, again and again.",
    );
    let wav = dir.path("speech.wav");
    peers::to_48k_stereo(&raw, &wav, None);

    let srv = TestServer::start(ServeArgs {
        seed: Some(12),
        webrtc_port: Some(webrtc_port),
        video_layout: layout.map(str::to_string),
        ..args(&format!("{}-{}", rtp.0, rtp.1))
    });
    let mut parts = Vec::new();
    let mut viewer = None;
    for (tag, dir_attr) in [("red", "sendrecv"), ("viewer", "recvonly")] {
        let audio = UdpSocket::bind("127.0.0.1:0").unwrap();
        let vport = free_port_pair(LO);
        if tag == "viewer" {
            viewer = Some(VideoReceiver::bind(SocketAddr::new(LO, vport), false));
        }
        let mut ua = Uac::new(srv.sip, room, tag);
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
    srv.wait_participants(2, Duration::from_secs(5));
    // Red talks (a tone) from the start; the viewer sends silence.
    let talker = Arc::new(AtomicU8::new(0));
    let members: Vec<_> = parts.iter().map(|p| (&p.2, p.4)).collect();
    let audio_threads = spawn_talkers(&members, &talker, 3000);
    let red = VideoSender::start(&VideoSenderConfig::new(parts[0].5, parts[0].3, (255, 0, 0)));
    let url = format!(
        "http://{}/room/{room}?autojoin=1&name=chromium&video=1",
        srv.http
    );
    let mut browser = Browser::start(Command::new("node"), &url, &wav, 60);
    let first = browser
        .wait_for(Duration::from_secs(30), |s| {
            num(s, &["inboundVideo", "framesDecoded"]) > 30.0
                && num(s, &["outboundVideo", "framesEncoded"]) > 30.0
        })
        .unwrap_or_else(|| {
            panic!(
                "the browser never decoded and sent video: events {:#?}, last stats {:#?}, errors {:?}",
                browser.events,
                browser.last(),
                browser.errors
            )
        });
    Setup {
        dir,
        srv,
        parts,
        viewer: viewer.expect("the viewer listens"),
        talker,
        audio_threads,
        red,
        browser,
        first,
    }
}

#[test]
fn browser_sends_and_receives_voice_switched_video() {
    let Setup {
        dir,
        srv,
        parts,
        viewer,
        talker,
        audio_threads,
        red,
        mut browser,
        first,
    } = start("e2e-webrtc-video", "webvideo", RTP_RANGE, WEBRTC_PORT, None);
    eprintln!("WEBRTC-VIDEO browser decoding: {}", first["inboundVideo"]);
    // The page showed its placeholder until the first picture, then the video.
    let shown: Vec<bool> = browser
        .events
        .iter()
        .filter(|e| e["type"] == "video")
        .filter_map(|e| e["value"]["shown"].as_bool())
        .collect();
    assert_eq!(
        shown.first(),
        Some(&false),
        "a placeholder first: {shown:?}"
    );
    assert!(shown.contains(&true), "the video shown: {shown:?}");
    let ssrc = first["inboundVideo"]["ssrc"].clone();
    assert!(ssrc.as_u64().is_some(), "{first:#}");
    // Red's picture, at red's size.
    assert_eq!(
        (
            first["inboundVideo"]["frameWidth"].as_u64(),
            first["inboundVideo"]["frameHeight"].as_u64()
        ),
        (Some(320), Some(240)),
        "{first:#}"
    );
    // The operator's view: the browser's video stream is the one it receives, showing red.
    let rooms = srv.get_json("/api/rooms");
    let members: Vec<serde_json::Value> = rooms["rooms"][0]["participants"]
        .as_object()
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default();
    let web = members
        .iter()
        .find(|p| p["kind"] == "webrtc")
        .unwrap_or_else(|| panic!("no WebRTC participant in {rooms}"));
    let red_member = members
        .iter()
        .find(|p| p["video"]["local_rtp_port"] == u64::from(parts[0].5.port()))
        .unwrap_or_else(|| panic!("red not in {rooms}"));
    eprintln!("WEBRTC-VIDEO browser in the API: {}", web["video"]);
    assert_eq!(
        web["video"]["ssrc_out"], ssrc,
        "the API's SSRC is the one received"
    );
    assert_eq!(web["video"]["payload_type"], 96);
    assert_eq!(web["video"]["showing"], red_member["id"], "{rooms}");

    // Red keeps talking: the browser keeps decoding, on the same SSRC.
    std::thread::sleep(Duration::from_secs(3));
    let later = browser.fresh(Duration::from_secs(5)).expect("stats");
    let grew = num(&later, &["inboundVideo", "framesDecoded"])
        - num(&first, &["inboundVideo", "framesDecoded"]);
    eprintln!("WEBRTC-VIDEO after 3 s: {}", later["inboundVideo"]);
    assert!(grew >= 45.0, "decoded only {grew} frames in 3 s: {later:#}");
    assert_eq!(
        later["inboundVideo"]["ssrc"], ssrc,
        "one inbound video SSRC"
    );
    assert!(
        num(&later, &["outboundVideo", "framesEncoded"]) > 30.0,
        "the browser sends its camera: {later:#}"
    );

    // Red falls silent: the browser, still speaking, becomes the speaker; the viewer is
    // switched to the browser's video; the browser now sees the previous speaker (red).
    let switch_at = unix_now();
    talker.store(NOBODY, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(5));
    let end = browser.fresh(Duration::from_secs(5)).expect("stats");
    eprintln!("WEBRTC-VIDEO browser at the end: {end}");
    talker.store(STOP, Ordering::Relaxed);
    for t in audio_threads {
        t.join().unwrap();
    }
    let metrics = srv.metrics();
    let rooms = srv.get_json("/api/rooms");
    red.stop();
    assert_eq!(end["inboundVideo"]["ssrc"], ssrc, "one inbound video SSRC");
    assert!(
        num(&end, &["inboundVideo", "framesDecoded"])
            > num(&later, &["inboundVideo", "framesDecoded"]) + 60.0,
        "the browser kept decoding: {later} -> {end}"
    );
    assert_eq!(end["inboundVideo"]["frameWidth"].as_u64(), Some(320));
    assert!(
        num(&end, &["outboundVideo", "pliCount"]) + num(&end, &["outboundVideo", "firCount"])
            >= 1.0,
        "the room asked the browser for a keyframe when it became the speaker: {end:#}"
    );
    assert!(
        browser.finish(Duration::from_secs(15)),
        "driver ended cleanly: {:?}",
        browser.errors
    );
    let states = browser.state_changes();
    assert!(
        !states
            .iter()
            .any(|s| s.ends_with("=failed") || s.ends_with("=disconnected")),
        "no failure or disconnection: {states:?}"
    );
    for l in metrics
        .lines()
        .filter(|l| l.starts_with("mcu_video") || l.starts_with("mcu_webrtc"))
    {
        eprintln!("WEBRTC-VIDEO {l}");
    }

    // The viewer decoded red, then the browser's camera, on one stream.
    let cap = viewer.finish(&dir.path("viewer.pcap"));
    let report = analyze_video(&cap, &VideoOptions::default()).unwrap();
    let to_viewer = format!("127.0.0.1:{}", parts[1].3);
    let streams = report.streams_to(&to_viewer);
    assert_eq!(streams.len(), 1, "{:#?}", report.warnings);
    let s = streams[0];
    eprintln!(
        "WEBRTC-VIDEO viewer: ssrcs {:x?} packets {} missing {} regressions {} frames {} decoded {} corrupt {} keyframes {} colours {:?} resolutions {:?} freeze {:.0} ms",
        s.ssrcs,
        s.packets,
        s.missing,
        s.regressions,
        s.frames,
        s.decoded,
        s.corrupt,
        s.keyframes,
        s.colour_sequence(),
        s.resolutions,
        s.freeze.ms
    );
    assert_eq!(s.ssrcs.len(), 1, "one SSRC for the whole call");
    assert_eq!(s.regressions, 0, "no sequence regression");
    assert_eq!(s.corrupt, 0, "every frame decodable");
    assert_eq!(s.colour_sequence().first(), Some(&"red"), "red first");
    let browser_frames: Vec<_> = s
        .frame_list
        .iter()
        .filter(|f| f.time >= switch_at && f.colour.as_deref().is_some_and(|c| c != "red"))
        .collect();
    assert!(
        browser_frames.len() >= 30,
        "the viewer decoded only {} pictures of the browser's camera after the switch; rooms {rooms}",
        browser_frames.len()
    );
    // At the size the browser says it encodes.
    let size = (
        end["outboundVideo"]["frameWidth"].as_u64(),
        end["outboundVideo"]["frameHeight"].as_u64(),
    );
    assert!(
        browser_frames
            .iter()
            .any(|f| (f.width.map(u64::from), f.height.map(u64::from)) == size),
        "no picture of the browser's size {size:?}: {:?}",
        s.resolutions
    );
    let first_browser = browser_frames[0].time - switch_at;
    eprintln!(
        "WEBRTC-VIDEO viewer sees the browser {:.0} ms after red fell silent ({} pictures)",
        first_browser * 1e3,
        browser_frames.len()
    );
}

/// A browser in a grid (continuous-presence) room: it receives the composed picture (the
/// grid's size, one SSRC, decoding), and its camera is composed into the grid that a SIP
/// viewer decodes beside red's tile.
#[test]
fn browser_in_a_grid_room_sees_the_grid_and_is_in_it() {
    let Setup {
        dir,
        srv,
        parts,
        viewer,
        talker,
        audio_threads,
        red,
        mut browser,
        first,
    } = start(
        "e2e-webrtc-video-grid",
        "webgrid",
        (36470, 36529),
        36530,
        Some("grid"),
    );
    let joined_at = unix_now();
    eprintln!(
        "WEBRTC-VIDEO-GRID browser decoding: {}",
        first["inboundVideo"]
    );
    // The grid's picture, not red's 320x240.
    let size = (
        first["inboundVideo"]["frameWidth"].as_u64(),
        first["inboundVideo"]["frameHeight"].as_u64(),
    );
    assert_eq!(size, (Some(640), Some(360)), "the grid's size: {first:#}");
    std::thread::sleep(Duration::from_secs(4));
    let end = browser.fresh(Duration::from_secs(5)).expect("stats");
    eprintln!("WEBRTC-VIDEO-GRID browser at the end: {end}");
    talker.store(STOP, Ordering::Relaxed);
    for t in audio_threads {
        t.join().unwrap();
    }
    let rooms = srv.get_json("/api/rooms");
    red.stop();
    assert_eq!(
        end["inboundVideo"]["ssrc"], first["inboundVideo"]["ssrc"],
        "one inbound video SSRC"
    );
    let grew = num(&end, &["inboundVideo", "framesDecoded"])
        - num(&first, &["inboundVideo", "framesDecoded"]);
    assert!(
        grew >= 60.0,
        "decoded only {grew} grid frames in 4 s: {end:#}"
    );
    assert!(
        browser.finish(Duration::from_secs(15)),
        "driver ended cleanly: {:?}",
        browser.errors
    );

    // The viewer's grid shows red's tile and the browser's camera in another.
    let cap = viewer.finish(&dir.path("viewer.pcap"));
    let opts = VideoOptions {
        tiles: Some((2, 2)),
        ..VideoOptions::default()
    };
    let report = analyze_video(&cap, &opts).unwrap();
    let streams = report.streams_to(&format!("127.0.0.1:{}", parts[1].3));
    assert_eq!(streams.len(), 1, "{:#?}", report.warnings);
    let s = streams[0];
    eprintln!(
        "WEBRTC-VIDEO-GRID viewer: ssrcs {:x?} packets {} missing {} regressions {} frames {} decoded {} corrupt {} keyframes {} resolutions {:?}",
        s.ssrcs, s.packets, s.missing, s.regressions, s.frames, s.decoded, s.corrupt, s.keyframes, s.resolutions
    );
    assert_eq!(s.ssrcs.len(), 1, "one SSRC for the whole call");
    assert_eq!(s.regressions, 0, "no sequence regression");
    assert_eq!(s.corrupt, 0, "every frame decodable");
    let with_browser = |f: &&pcap_harness::video::VideoFrame| {
        f.tiles.iter().any(|t| t == "red") && f.tiles.iter().any(|t| t != "red" && t != "black")
    };
    let both: Vec<_> = s
        .frame_list
        .iter()
        .filter(|f| f.time >= joined_at)
        .filter(with_browser)
        .collect();
    let last_tiles = s.frame_list.last().map(|f| f.tiles.clone());
    assert!(
        both.len() >= 30,
        "only {} grid pictures show red and the browser's camera (last tiles {last_tiles:?}); rooms {rooms}",
        both.len()
    );
    eprintln!(
        "WEBRTC-VIDEO-GRID viewer: {} pictures with red and the browser, e.g. {:?}",
        both.len(),
        both[0].tiles
    );
}
