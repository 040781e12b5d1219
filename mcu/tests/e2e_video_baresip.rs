//! baresip as a video participant, end to end over loopback.
//!
//! One room of an in-process server, three participants:
//! - "red": a scripted UAC (PCMU, a tone) with a GStreamer VP8 sender (red background,
//!   answers PLI/FIR with a key frame); it talks first;
//! - "viewer": a scripted UAC sending silence, receiving the room's video on a recording
//!   socket ([`VideoReceiver`]);
//! - baresip 1.0 (`baresip-core`), joining later: Opus audio from a 440 Hz tone (so that it
//!   becomes the speaker once red falls silent) and VP8 video from its `fakevideo` source
//!   (three vertical bars, red, green, blue: a dark grey on average,
//!   [`peers::FAKEVIDEO_MEAN_RGB`]) with the config of [`peers::BARESIP_VIDEO_CONFIG`].
//!
//! Asserted on what is decoded (libvpx, `pcap_harness::video`):
//! - the viewer sees red, then baresip's bars within 1.5 s of baresip starting to talk (its
//!   first audio packet on the wire, or red falling silent if later); one SSRC, no sequence
//!   regression, no duplicate, every frame after the first key frame decodable;
//! - baresip answers the server's PLIs with key frames: tcpdump on lo records baresip's
//!   ports; each PLI the server sends it (the switch's, and the viewer's PLIs forwarded to
//!   the source it is shown) is followed by a key frame from baresip within 200 ms
//!   (baresip's own key frames come every 128 frames, 5.1 s, otherwise);
//! - baresip receives the room's video: the server's stream to baresip's video port is one
//!   SSRC of decodable red pictures (the previous speaker), and baresip itself says it
//!   decoded it ("video: receiving with resolution 320 x 240", no decode error).
//!
//! What baresip 1.0 cannot do: it offers `a=rtcp-fb:* nack pli` without `ccm fir` and
//! ignores an RFC 5104 FIR (PSFB FMT 4; it acts only on the RFC 2032 FIR, RTCP type 192),
//! so the server asks it for key frames with PLI (as it does for every source that did not
//! offer `ccm fir`). It also sends a key frame for every generic NACK it receives, instead
//! of retransmitting.

mod common;
use common::uac::Uac;
use common::video::{answered_port, av_offer, spawn_talkers, unix_now, NOBODY, STOP};
use common::{args, TestServer};
use pcap_harness::video::{analyze_video, FrameStatus, RefColour, VideoOptions, VideoStream};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use testkit::capture::Capture;
use testkit::peers;
use testkit::process::{run, signal, wait_timeout};
use testkit::video::{
    free_port_block, free_port_pair, VideoReceiver, VideoSender, VideoSenderConfig,
};
use testkit::Scratch;

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// How many ports baresip may use for RTP and RTCP (audio and video).
const BARESIP_PORTS: u16 = 20;

/// One UDP datagram of a capture.
struct Datagram {
    time: f64,
    src: SocketAddr,
    dst: SocketAddr,
    payload: Vec<u8>,
}

/// Every UDP datagram of the pcap at `path`, in file order.
fn datagrams(path: &Path) -> Vec<Datagram> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    pcap_harness::capture::for_each_frame(&data, |f| {
        if let Ok(u) = pcap_harness::net::decode_udp(f.linktype, f.data) {
            out.push(Datagram {
                time: f.time,
                src: u.src,
                dst: u.dst,
                payload: u.payload.to_vec(),
            });
        }
    })
    .expect("read the capture");
    out
}

/// An RTCP datagram (RFC 5761: payload types 192..=223 in the second byte).
fn is_rtcp(p: &[u8]) -> bool {
    p.len() >= 8 && p[0] >> 6 == 2 && (192..=223).contains(&p[1])
}

/// Whether the (compound) RTCP datagram `p` holds a PLI (RFC 4585: PSFB, FMT 1).
fn has_pli(p: &[u8]) -> bool {
    let mut at = 0;
    while let Some(h) = p.get(at..at + 4) {
        if h[0] >> 6 != 2 {
            return false;
        }
        if h[1] == 206 && h[0] & 0x1f == 1 {
            return true;
        }
        at += (usize::from(u16::from_be_bytes([h[2], h[3]])) + 1) * 4;
    }
    false
}

fn in_range(a: SocketAddr, base: u16) -> bool {
    (base..base + BARESIP_PORTS).contains(&a.port())
}

fn describe(who: &str, s: &VideoStream) {
    eprintln!(
        "VIDEO-BARESIP {who} {} -> {}: ssrcs {:x?} packets {} missing {} regressions {} frames {} \
         decoded {} corrupt {} undecodable {} keyframes {} colours {:?} freeze {:.0} ms",
        s.src,
        s.dst,
        s.ssrcs,
        s.packets,
        s.missing,
        s.regressions,
        s.frames,
        s.decoded,
        s.corrupt,
        s.undecodable,
        s.keyframes,
        s.colour_sequence(),
        s.freeze.ms
    );
}

/// Every frame from the first key frame on was decoded (shown or hidden), except the last
/// one when the end of the recording cut it short (`Incomplete`).
fn assert_decodable_after_first_keyframe(who: &str, s: &VideoStream) {
    let mut frames: Vec<_> = s
        .frame_list
        .iter()
        .skip_while(|f| f.keyframe != Some(true))
        .collect();
    if frames
        .last()
        .is_some_and(|f| f.status == FrameStatus::Incomplete)
    {
        frames.pop();
    }
    assert!(frames.len() >= 50, "{who}: {} frames", frames.len());
    let bad: Vec<_> = frames
        .iter()
        .filter(|f| !matches!(f.status, FrameStatus::Decoded | FrameStatus::Hidden))
        .map(|f| (f.time, f.status))
        .collect();
    assert!(bad.is_empty(), "{who}: frames not decodable: {bad:?}");
}

#[test]
fn baresip_is_a_video_participant() {
    testkit::video::require_gstreamer();
    testkit::require::e2e("tcpdump on lo", &["baresip", "tcpdump", "ffmpeg"]);
    let dir = Scratch::new("e2e-video-baresip");
    // baresip's speech: a 440 Hz tone, 48 kHz stereo (its aufile source with Opus). It
    // hangs up when the file ends: longer than the test.
    let tone = dir.path("tone.wav");
    run(Command::new("ffmpeg")
        .args(["-y", "-loglevel", "error", "-f", "lavfi", "-i"])
        .arg("sine=frequency=440:sample_rate=48000:duration=40")
        .args(["-ac", "2"])
        .arg(&tone));

    let srv = TestServer::start(args("40100-40159"));
    let mut parts = Vec::new();
    for (tag, dir_attr) in [("red", "sendrecv"), ("viewer", "recvonly")] {
        let audio = UdpSocket::bind("127.0.0.1:0").unwrap();
        let vport = free_port_pair(LO);
        let mut ua = Uac::new(srv.sip, "vbaresip", tag);
        let ok = ua.call(&av_offer(
            LO,
            audio.local_addr().unwrap().port(),
            vport,
            dir_attr,
        ));
        let server_audio = SocketAddr::new(LO, answered_port(&ok, "audio"));
        let server_video = SocketAddr::new(LO, answered_port(&ok, "video"));
        parts.push((ua, audio, vport, server_audio, server_video));
    }
    srv.wait_participants(2, Duration::from_secs(5));
    // Red (0) talks, then nobody (NOBODY), then STOP.
    let phase = Arc::new(AtomicU8::new(0));
    let members: Vec<_> = parts.iter().map(|p| (&p.1, p.3)).collect();
    let audio_threads = spawn_talkers(&members, &phase, 2000);
    let viewer = VideoReceiver::bind(SocketAddr::new(LO, parts[1].2), false);
    let red = VideoSender::start(&VideoSenderConfig::new(parts[0].4, parts[0].2, (255, 0, 0)));
    std::thread::sleep(Duration::from_millis(2500));

    // baresip: SIP and RTP ports of its own, everything on them recorded.
    let bsip = free_port_pair(LO);
    let brtp = free_port_block(LO, BARESIP_PORTS);
    let cap = Capture::start(
        &dir.path("baresip.pcap"),
        &format!(
            "udp and (port {bsip} or portrange {brtp}-{})",
            brtp + BARESIP_PORTS - 1
        ),
    );
    let bcfg = peers::baresip_video_config(
        &dir.0,
        "127.0.0.1",
        bsip,
        (brtp, brtp + BARESIP_PORTS - 1),
        &tone,
    );
    let blog = dir.path("baresip.log");
    let dialed_at = unix_now();
    let mut baresip = peers::baresip_command(
        Command::new("baresip"),
        &bcfg,
        &format!("sip:vbaresip@{}", srv.sip),
        40,
    )
    .stdout(Stdio::from(
        std::fs::File::create(&blog).expect("baresip log"),
    ))
    .spawn()
    .expect("spawn baresip");
    srv.wait_participants(3, Duration::from_secs(10));
    let silent_at = unix_now();
    phase.store(NOBODY, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(3));
    // The viewer asks for key frames: the server passes each PLI to the source it is shown.
    let mut viewer_plis = Vec::new();
    for _ in 0..3 {
        let ssrc = viewer.last_ssrc().expect("the viewer receives video");
        viewer_plis.push(viewer.send_pli(ssrc));
        std::thread::sleep(Duration::from_millis(800));
    }
    std::thread::sleep(Duration::from_millis(500));
    let metrics = srv.metrics();
    // The viewer's recording ends while baresip is still the speaker (once it leaves, the
    // viewer is shown red again).
    let viewer_cap = viewer.finish(&dir.path("viewer.pcap"));
    // SIGTERM: baresip hangs up (BYE) and quits.
    signal(baresip.id(), libc::SIGTERM);
    let st = wait_timeout(&mut baresip, Duration::from_secs(10)).unwrap_or_else(|| {
        signal(baresip.id(), libc::SIGKILL);
        panic!("baresip did not quit on SIGTERM");
    });
    eprintln!("VIDEO-BARESIP baresip exit {st}");
    phase.store(STOP, Ordering::Relaxed);
    for t in audio_threads {
        t.join().unwrap();
    }
    red.stop();
    let cap = cap.stop();
    let blog = std::fs::read_to_string(&blog).expect("read baresip log");
    for l in metrics.lines().filter(|l| l.starts_with("mcu_video")) {
        eprintln!("VIDEO-BARESIP {l}");
    }

    let (r, g, b) = peers::FAKEVIDEO_MEAN_RGB;
    let opts = VideoOptions {
        colours: vec![
            RefColour::rgb("red", 255, 0, 0),
            RefColour::rgb("bars", r, g, b),
        ],
        ..VideoOptions::default()
    };

    // What baresip sent and received.
    let bpackets = datagrams(&cap);
    let breport = analyze_video(&cap, &opts).unwrap();
    let from_baresip: Vec<_> = breport
        .streams
        .iter()
        .filter(|s| s.src.parse().is_ok_and(|a| in_range(a, brtp)))
        .collect();
    let to_baresip: Vec<_> = breport
        .streams
        .iter()
        .filter(|s| s.dst.parse().is_ok_and(|a| in_range(a, brtp)))
        .collect();
    for s in from_baresip.iter().chain(&to_baresip) {
        describe("capture", s);
    }
    assert_eq!(from_baresip.len(), 1, "baresip sends one VP8 stream");
    assert_eq!(to_baresip.len(), 1, "baresip receives one VP8 stream");
    let (bsent, brecv) = (from_baresip[0], to_baresip[0]);
    let bvideo: SocketAddr = bsent.src.parse().unwrap();
    // Its sending: the bars, decodable.
    assert_eq!(bsent.colour_sequence(), vec!["bars"], "fakevideo's picture");
    assert_decodable_after_first_keyframe("baresip's stream", bsent);
    // Its first audio packet: RTP from another of its ports to the server.
    let spoke_at = bpackets
        .iter()
        .find(|d| {
            in_range(d.src, brtp)
                && !in_range(d.dst, brtp)
                && d.src.port() != bvideo.port()
                && d.src.port() != bvideo.port() + 1
                && d.payload.len() > 12
                && !is_rtcp(&d.payload)
        })
        .map(|d| d.time)
        .expect("baresip sent audio");
    // The server's PLIs to baresip, each answered by a key frame.
    let plis: Vec<f64> = bpackets
        .iter()
        .filter(|d| in_range(d.dst, brtp) && is_rtcp(&d.payload) && has_pli(&d.payload))
        .map(|d| d.time)
        .collect();
    eprintln!(
        "VIDEO-BARESIP dialed {dialed_at:.3} first audio {spoke_at:.3} red silent {silent_at:.3} \
         PLIs to baresip {plis:.3?} baresip key frames {:.3?} viewer PLIs {viewer_plis:.3?}",
        bsent.keyframe_times
    );
    assert!(
        plis.len() > viewer_plis.len(),
        "the server asks baresip for key frames at the switch and for each viewer PLI: {plis:?}"
    );
    // Each PLI is followed by a key frame; baresip now and then lets one PLI go and answers
    // the next (seen twice, once on the switch's own PLI, answered after the forwarder's
    // retry), so: the switch's key frame within 700 ms (its PLI or the retry 500 ms later),
    // most of the others within 200 ms, and none left without a key frame within 1 s.
    let delays: Vec<f64> = plis
        .iter()
        .map(|&p| {
            let k = bsent
                .first_keyframe_after(p)
                .unwrap_or_else(|| panic!("no key frame from baresip after the PLI at {p:.3}"));
            eprintln!("VIDEO-BARESIP PLI -> key frame {:.0} ms", (k - p) * 1e3);
            k - p
        })
        .collect();
    assert!(
        delays[0] <= 0.7,
        "the switch's key frame came {:.0} ms after its PLI",
        delays[0] * 1e3
    );
    let prompt = delays.iter().filter(|d| **d <= 0.2).count();
    assert!(
        prompt * 2 > delays.len() && delays.iter().all(|d| *d <= 1.0),
        "key frames after the PLIs: {delays:.3?} s"
    );
    // Its receiving: red (the previous speaker) throughout, one SSRC, decodable.
    assert_eq!(brecv.ssrcs.len(), 1, "one SSRC to baresip");
    assert_eq!(brecv.regressions, 0);
    assert!(
        brecv.decoded >= 50,
        "baresip got {} pictures",
        brecv.decoded
    );
    assert_eq!(brecv.colour_sequence(), vec!["red"], "baresip sees red");
    assert_decodable_after_first_keyframe("the stream to baresip", brecv);
    assert!(
        blog.contains("video: receiving with resolution 320 x 240"),
        "baresip did not decode the video it received:\n{blog}"
    );
    assert!(
        !blog.contains("decode error"),
        "baresip's decoder complained:\n{blog}"
    );

    // What the viewer saw.
    let report = analyze_video(&viewer_cap, &opts).unwrap();
    let streams = report.streams_to(&format!("127.0.0.1:{}", parts[1].2));
    assert_eq!(streams.len(), 1, "{:#?}", report.warnings);
    let s = streams[0];
    describe("viewer", s);
    assert_eq!(s.ssrcs.len(), 1, "one SSRC for the whole call");
    assert_eq!(s.regressions, 0, "no sequence regression");
    assert_eq!(s.duplicates, 0);
    assert!(s.decoded >= 100, "decoded only {} frames", s.decoded);
    assert_decodable_after_first_keyframe("the viewer's stream", s);
    assert_eq!(
        s.colour_sequence(),
        vec!["red", "bars"],
        "the viewer sees red, then baresip"
    );
    let talk_at = spoke_at.max(silent_at);
    let bars_at = s
        .first_colour_after("bars", dialed_at)
        .expect("baresip's picture at the viewer");
    let latency = bars_at - talk_at;
    eprintln!(
        "VIDEO-BARESIP switch {:.0} ms after baresip began to talk, {:.0} ms after the dial",
        latency * 1e3,
        (bars_at - dialed_at) * 1e3
    );
    assert!(
        latency <= 1.5,
        "switched {latency:.2} s after baresip began to talk"
    );
    let first = s.first_decoded_time.expect("a decoded picture");
    let late_freezes: Vec<_> = s
        .freezes
        .iter()
        .filter(|f| f.from >= first && f.ms > 300.0)
        .collect();
    assert!(late_freezes.is_empty(), "freezes: {late_freezes:?}");
}
