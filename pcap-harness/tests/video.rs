//! The video measuring stick on real VP8: GStreamer captures (the recorded ones committed
//! in `testkit/data`, and one made at test time) decode completely and red; the same
//! capture with 10 % of its packets dropped shows corrupt and undecodable frames and a
//! longer freeze; two senders switched by hand show the switch in the colour timeline.
//! GStreamer's own depayloader and decoder (`pcapparse ! rtpvp8depay ! vp8dec`) count
//! the same pictures on complete captures.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pcap_harness::capture::for_each_frame;
use pcap_harness::net::{decode_udp, LINKTYPE_ETHERNET};
use pcap_harness::rtp::parse_rtp;
use pcap_harness::video::{
    analyze_video, analyze_video_bytes, FrameStatus, RefColour, VideoOptions, VideoReport,
};
use pcap_harness::vp8::parse_descriptor;
use pcap_harness::writer::{to_pcap, Datagram};
use testkit::video::{free_port_pair, recorded_vp8, VideoReceiver, VideoSender, VideoSenderConfig};

fn red_blue() -> VideoOptions {
    VideoOptions {
        colours: vec![
            RefColour::rgb("red", 255, 0, 0),
            RefColour::rgb("blue", 0, 0, 255),
        ],
        ..VideoOptions::default()
    }
}

/// The UDP datagrams of a capture, in file order.
fn datagrams(path: &Path) -> Vec<Datagram> {
    let data = std::fs::read(path).expect("read capture");
    let mut out = Vec::new();
    for_each_frame(&data, |f| {
        if let Ok(u) = decode_udp(f.linktype, f.data) {
            out.push(Datagram {
                time: Duration::from_nanos(f.time_ns as u64),
                src: u.src,
                dst: u.dst,
                payload: u.payload.to_vec(),
            });
        }
    })
    .expect("parse capture");
    out
}

fn analyze(d: &[Datagram]) -> VideoReport {
    analyze_video_bytes(&to_pcap(LINKTYPE_ETHERNET, d), &red_blue()).expect("analyze")
}

/// Frames GStreamer decodes from the capture's VP8 on payload type 96.
fn gstreamer_decoded_frames(pcap: &Path) -> usize {
    testkit::require::tools(&["gst-launch-1.0", "gst-inspect-1.0"]);
    let have_pcapparse = Command::new("gst-inspect-1.0")
        .arg("pcapparse")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        have_pcapparse,
        "GStreamer element pcapparse missing (package gstreamer1.0-plugins-bad): scripts/test \
         installs it"
    );
    let out = Command::new("gst-launch-1.0")
        .arg("-v")
        .arg("filesrc")
        .arg(format!("location={}", pcap.display()))
        .args([
            "!",
            "pcapparse",
            "caps=application/x-rtp,media=video,clock-rate=90000,encoding-name=VP8,payload=96",
            "!",
            "rtpvp8depay",
            "!",
            "vp8dec",
            "!",
            "fakesink",
            "sync=false",
            "silent=false",
        ])
        .output()
        .expect("run gst-launch-1.0");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // fakesink's `last-message` notifications: one "chain" per decoded picture.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("last-message = chain"))
        .count()
}

#[test]
fn recorded_captures_decode_completely() {
    for (name, ssrc) in [("red", 0x5245_4431u32), ("blue", 0x424C_5531)] {
        let r = analyze_video(&recorded_vp8(name), &red_blue()).expect("analyze");
        assert_eq!(r.streams.len(), 1, "{r:#?}");
        let s = &r.streams[0];
        assert_eq!((s.pt, s.pt_source.as_str()), (96, "heuristic"));
        assert_eq!(s.ssrcs, [ssrc]);
        assert_eq!(
            (s.missing, s.duplicates, s.reordered, s.regressions),
            (0, 0, 0, 0)
        );
        assert!(s.frames >= 140, "6 s at 25 fps: {}", s.frames);
        assert_eq!(s.decoded, s.frames);
        assert_eq!((s.corrupt, s.undecodable, s.picture_id_jumps), (0, 0, 0));
        assert!(s.keyframes >= 6, "a key frame a second: {}", s.keyframes);
        assert_eq!(s.colour_sequence(), [name]);
        assert_eq!(s.resolutions.len(), 1);
        assert_eq!(
            (s.resolutions[0].width, s.resolutions[0].height),
            (320, 240)
        );
        assert!(s.freeze.ms < 100.0, "freeze {:?}", s.freeze);
        assert!(s.freezes.is_empty());
        let f = &s.frame_list[0];
        assert_eq!((f.keyframe, f.status), (Some(true), FrameStatus::Decoded));
        // The payload type, when given, is taken as is.
        let given = VideoOptions {
            pt: Some(96),
            ..red_blue()
        };
        let r = analyze_video(&recorded_vp8(name), &given).unwrap();
        assert_eq!(r.streams[0].pt_source, "option");
        assert_eq!(r.streams[0].decoded, s.decoded);
        let other = VideoOptions {
            pt: Some(97),
            ..red_blue()
        };
        assert!(analyze_video(&recorded_vp8(name), &other)
            .unwrap()
            .streams
            .is_empty());
    }
}

/// How the comparison with GStreamer is made: the same file through `pcapparse !
/// rtpvp8depay ! vp8dec ! fakesink silent=false`, counting fakesink's "chain" messages
/// (one per decoded picture), against the analyzer's decoded frames.
#[test]
fn gstreamer_decodes_the_same_number_of_pictures() {
    for name in ["red", "blue"] {
        let pcap = recorded_vp8(name);
        let r = analyze_video(&pcap, &red_blue()).unwrap();
        assert_eq!(
            gstreamer_decoded_frames(&pcap) as u64,
            r.streams[0].decoded,
            "{name}"
        );
    }
}

/// A capture made now: GStreamer's sender (red) to a recording socket, raw-IP pcap.
#[test]
fn live_gstreamer_capture_is_red_and_fluid() {
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let dir = testkit::Scratch::new("video-live");
    let rx = VideoReceiver::bind(SocketAddr::new(lo, free_port_pair(lo)), false);
    let tx = VideoSender::start(&VideoSenderConfig::new(
        rx.rtp_addr(),
        free_port_pair(lo),
        (255, 0, 0),
    ));
    rx.wait_received(1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));
    tx.stop();
    let pcap = rx.finish(&dir.path("live.pcap"));
    let r = analyze_video(&pcap, &red_blue()).unwrap();
    let to = r.streams_to(&rx_addr(&pcap));
    let s = to.first().expect("the RTP flow");
    assert!(s.frames >= 80, "3 s at 30 fps: {}", s.frames);
    assert_eq!((s.decoded, s.corrupt, s.undecodable), (s.frames, 0, 0));
    assert_eq!(s.colour_sequence(), ["red"]);
    assert!(s.freeze.ms < 250.0, "{:?}", s.freeze);
    assert_eq!(gstreamer_decoded_frames(&pcap) as u64, s.decoded);
}

/// The destination of the capture's first RTP packet.
fn rx_addr(pcap: &Path) -> String {
    datagrams(pcap)
        .iter()
        .find(|d| parse_rtp(&d.payload).is_some_and(|h| h.pt == 96))
        .map(|d| d.dst.to_string())
        .expect("an RTP packet")
}

/// A seeded 64-bit LCG (Knuth's MMIX constants): the same packets are dropped every run.
struct Lcg(u64);

impl Lcg {
    fn unit(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[test]
fn ten_percent_loss_corrupts_frames_and_freezes_the_picture() {
    let all = datagrams(&recorded_vp8("red"));
    let clean = analyze(&all);
    let clean = &clean.streams[0];
    let mut rng = Lcg(12);
    let kept: Vec<Datagram> = all.iter().filter(|_| rng.unit() >= 0.10).cloned().collect();
    let dropped = all.len() - kept.len();
    assert!(
        (all.len() / 20..=all.len() / 6).contains(&dropped),
        "{dropped} of {} dropped",
        all.len()
    );
    let r = analyze(&kept);
    let s = &r.streams[0];
    eprintln!("{}", pcap_harness::cli::render_video_table(&r));
    assert_eq!(
        s.missing as usize, dropped,
        "every dropped packet is missing"
    );
    assert_eq!(s.frames, s.frame_list.len() as u64);
    assert!(s.incomplete > 0, "frames with holes: {}", s.incomplete);
    assert!(
        s.undecodable > 0,
        "frames after a loss wait for a key frame"
    );
    assert_eq!(s.decoded + s.corrupt + s.undecodable, s.frames);
    assert!(s.decoded < clean.decoded);
    assert!(
        s.freeze.ms > 3.0 * clean.freeze.ms && s.freeze.ms > 150.0,
        "freeze {:?} vs clean {:?}",
        s.freeze,
        clean.freeze
    );
    assert!(!s.freezes.is_empty());
    // After a loss nothing is decoded until a key frame: every decoded frame after an
    // undecodable one is a key frame.
    let mut waiting = false;
    for f in &s.frame_list {
        match f.status {
            FrameStatus::Undecodable | FrameStatus::Incomplete => waiting = true,
            FrameStatus::Decoded if waiting => {
                assert_eq!(f.keyframe, Some(true), "{f:?}");
                waiting = false;
            }
            _ => {}
        }
    }
    // Colour is still right on what decodes.
    assert_eq!(s.colour_sequence(), ["red"]);
}

/// Rewrite one RTP packet like a forwarder switching sources: new SSRC, sequence and
/// timestamp offsets, picture ID offset (15-bit).
fn rewrite(p: &[u8], ssrc: u32, seq_off: u16, ts_off: u32, pid_off: u16) -> Vec<u8> {
    let mut p = p.to_vec();
    let h = parse_rtp(&p).expect("RTP");
    p[2..4].copy_from_slice(&h.seq.wrapping_add(seq_off).to_be_bytes());
    p[4..8].copy_from_slice(&h.ts.wrapping_add(ts_off).to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    let d = parse_descriptor(&p[h.payload_offset..]).expect("descriptor");
    let id = d.picture_id.expect("picture ID").wrapping_add(pid_off) & 0x7fff;
    assert!(d.picture_id_15bit);
    let at = h.payload_offset + 2; // after the required octet and the X octet
    p[at..at + 2].copy_from_slice(&(0x8000 | id).to_be_bytes());
    p
}

fn rtp(d: &Datagram) -> pcap_harness::rtp::RtpHeader {
    parse_rtp(&d.payload).expect("RTP")
}

/// The index of the first key frame's first packet at or after `from`.
fn keyframe_at_or_after(d: &[Datagram], from: usize) -> usize {
    (from..d.len())
        .find(|&i| {
            let h = rtp(&d[i]);
            let p = &d[i].payload[h.payload_offset..];
            parse_descriptor(p).is_some_and(|x| x.starts_frame() && p[x.len] & 1 == 0)
        })
        .expect("a key frame")
}

#[test]
fn two_senders_switched_by_hand_show_in_the_colour_timeline() {
    let red = datagrams(&recorded_vp8("red"));
    let blue = datagrams(&recorded_vp8("blue"));
    // Red for its first 3 s, then blue from its key frame after its own first 3 s, moved in
    // time right after red's last packet and rewritten into red's stream.
    let red_end = red
        .iter()
        .position(|d| d.time >= red[0].time + Duration::from_secs(3))
        .unwrap();
    // End red on a frame boundary (marker).
    let red_end = (0..red_end).rev().find(|&i| rtp(&red[i]).marker).unwrap() + 1;
    let blue_start = keyframe_at_or_after(
        &blue,
        blue.iter()
            .position(|d| d.time >= blue[0].time + Duration::from_secs(3))
            .unwrap(),
    );
    let last_red = &red[red_end - 1];
    let (lh, bh) = (rtp(last_red), rtp(&blue[blue_start]));
    let red_pid = |d: &Datagram| {
        let h = rtp(d);
        parse_descriptor(&d.payload[h.payload_offset..])
            .unwrap()
            .picture_id
            .unwrap()
    };
    let seq_off = lh.seq.wrapping_add(1).wrapping_sub(bh.seq);
    let ts_off = lh.ts.wrapping_add(3600).wrapping_sub(bh.ts);
    let pid_off = red_pid(last_red)
        .wrapping_add(1)
        .wrapping_sub(red_pid(&blue[blue_start]));
    // Blue's packets, moved to start 40 ms after red's last one.
    let moved =
        |d: &Datagram| last_red.time + Duration::from_millis(40) + (d.time - blue[blue_start].time);
    let switch_at = (last_red.time + Duration::from_millis(40)).as_secs_f64();
    let mut stitched: Vec<Datagram> = red[..red_end].to_vec();
    for d in &blue[blue_start..] {
        stitched.push(Datagram {
            time: moved(d),
            src: red[0].src,
            dst: red[0].dst,
            payload: rewrite(&d.payload, lh.ssrc, seq_off, ts_off, pid_off),
        });
    }
    let r = analyze(&stitched);
    let s = &r.streams[0];
    eprintln!("{}", pcap_harness::cli::render_video_table(&r));
    assert_eq!(r.streams.len(), 1);
    assert_eq!(s.ssrcs, [lh.ssrc]);
    assert_eq!(
        (s.missing, s.seq_resets.len(), s.picture_id_jumps),
        (0, 0, 0)
    );
    assert_eq!((s.corrupt, s.undecodable), (0, 0));
    assert_eq!(s.colour_sequence(), ["red", "blue"]);
    let blue_run = &s.colour_runs[1];
    assert!(
        (blue_run.from - switch_at).abs() < 0.05,
        "blue from {} (switch at {switch_at})",
        blue_run.from
    );
    assert_eq!(s.colour_at(switch_at - 0.5), Some("red"));
    assert_eq!(s.colour_at(switch_at + 0.5), Some("blue"));
    assert_eq!(
        s.first_colour_after("blue", switch_at - 1.0),
        Some(blue_run.from)
    );
    assert!(s.freeze.ms < 100.0, "{:?}", s.freeze);

    // The same switch without rewriting: the SSRC changes (a new segment), the colours
    // still switch, and nothing after the change is lost.
    let mut raw: Vec<Datagram> = red[..red_end].to_vec();
    raw.extend(blue[blue_start..].iter().map(|d| Datagram {
        time: moved(d),
        src: red[0].src,
        dst: red[0].dst,
        payload: d.payload.clone(),
    }));
    let r = analyze(&raw);
    let s = &r.streams[0];
    assert_eq!(s.ssrc_changes.len(), 1);
    assert_eq!(s.ssrcs, [lh.ssrc, bh.ssrc]);
    assert_eq!(s.colour_sequence(), ["red", "blue"]);
    assert_eq!((s.corrupt, s.undecodable), (0, 0));

    // Switched (without rewriting) right after blue's key frame, up to its next one: the
    // new SSRC's frames have no key frame to start from, so the picture stays red (frozen)
    // although packets keep coming.
    let next_key = keyframe_at_or_after(&blue, blue_start + 1);
    let mut late: Vec<Datagram> = red[..red_end].to_vec();
    late.extend(blue[blue_start + 1..next_key].iter().map(|d| Datagram {
        time: moved(d),
        src: red[0].src,
        dst: red[0].dst,
        payload: d.payload.clone(),
    }));
    let r = analyze(&late);
    assert_eq!(r.streams.len(), 1, "one flow: {:?}", r.warnings);
    let s = &r.streams[0];
    assert_eq!(s.ssrcs, [lh.ssrc, bh.ssrc]);
    assert_eq!(s.colour_sequence(), ["red"]);
    assert!(s.undecodable > 20, "{}", s.undecodable);
    assert!(
        (s.freeze.from - last_red.time.as_secs_f64()).abs() < 0.05 && s.freeze.ms > 800.0,
        "frozen from the switch: {:?}",
        s.freeze
    );
    assert_eq!(s.freeze_across(switch_at + 0.5), s.freeze);
}

/// `pcap-harness analyze-video` (the same subcommand as `mcu pcap analyze-video`): the JSON
/// is the library's report, the table names the colours; bad arguments fail.
#[test]
fn cli_prints_the_report() {
    let pcap = recorded_vp8("blue");
    let out = Command::new(env!("CARGO_BIN_EXE_pcap-harness"))
        .arg("analyze-video")
        .arg(&pcap)
        .args([
            "--json",
            "--pt",
            "96",
            "--colour",
            "red=255,0,0",
            "--colour",
            "blue=0,0,255",
        ])
        .output()
        .expect("run pcap-harness");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli = String::from_utf8_lossy(&out.stdout);
    let parsed: VideoReport = serde_json::from_str(&cli).expect("JSON report");
    assert_eq!(parsed.streams[0].decoded, 151);
    let lib = analyze_video(
        &pcap,
        &VideoOptions {
            pt: Some(96),
            ..red_blue()
        },
    )
    .unwrap();
    assert_eq!(cli.trim_end(), serde_json::to_string_pretty(&lib).unwrap());
    let table = Command::new(env!("CARGO_BIN_EXE_pcap-harness"))
        .arg("analyze-video")
        .arg(&pcap)
        .output()
        .expect("run pcap-harness");
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("decoded 151") && text.contains("colour blue"),
        "{text}"
    );
    let bad = Command::new(env!("CARGO_BIN_EXE_pcap-harness"))
        .arg("analyze-video")
        .arg(&pcap)
        .args(["--colour", "red=255,0"])
        .output()
        .expect("run pcap-harness");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("NAME=R,G,B"));
}

/// Duplicates and late packets are sequence regressions; the frames still decode (a
/// duplicate is dropped, a late packet fills its frame).
#[test]
fn sequence_regressions_are_counted() {
    let mut d = datagrams(&recorded_vp8("red"));
    // Packets 50..60 again after packet 100 (10 duplicates), and 120/121 swapped (one late).
    let again: Vec<Datagram> = d[50..60].to_vec();
    for (i, mut x) in again.into_iter().enumerate() {
        x.time = d[100].time + Duration::from_micros(i as u64 + 1);
        d.insert(101 + i, x);
    }
    // (The analyzer orders by capture time: swap the contents, keep the times.)
    let late = std::mem::take(&mut d[130].payload);
    d[130].payload = std::mem::replace(&mut d[131].payload, late);
    let r = analyze(&d);
    let s = &r.streams[0];
    assert_eq!((s.duplicates, s.reordered, s.regressions), (10, 1, 11));
    assert_eq!((s.missing, s.seq_resets.len()), (0, 0));
    assert_eq!((s.decoded, s.corrupt, s.undecodable), (s.frames, 0, 0));
}

#[test]
fn tile_colours_name_each_cell_of_a_grid() {
    use video_grid::picture::{Rect, Yuv, I420};
    use video_grid::vpx::{EncoderConfig, Vp8Encoder};
    // A 2x2 grid picture: red, blue / black, black.
    let (w, h) = (320, 180);
    let mut pic = I420::solid(w, h, Yuv::BLACK).unwrap();
    pic.fill_rect(
        Rect {
            x: 0,
            y: 0,
            width: w / 2,
            height: h / 2,
        },
        Yuv::RED,
    );
    pic.fill_rect(
        Rect {
            x: w / 2,
            y: 0,
            width: w / 2,
            height: h / 2,
        },
        Yuv::BLUE,
    );
    let mut enc = Vp8Encoder::new(EncoderConfig {
        width: w,
        height: h,
        ..Default::default()
    })
    .unwrap();
    let packetizer = video::vp8::Packetizer::new(1200).unwrap();
    let src: std::net::SocketAddr = "10.0.0.1:5000".parse().unwrap();
    let dst: std::net::SocketAddr = "10.0.0.2:6000".parse().unwrap();
    let mut dgrams = Vec::new();
    let mut seq = 0u16;
    for n in 0..5u32 {
        for f in enc.encode(&pic, n == 0).unwrap() {
            let payloads = packetizer.packetize(&f.data, n as u16, f.keyframe).unwrap();
            let last = payloads.len() - 1;
            for (i, p) in payloads.into_iter().enumerate() {
                let mut rtp = vec![0x80, if i == last { 0x80 | 96 } else { 96 }];
                rtp.extend_from_slice(&seq.to_be_bytes());
                rtp.extend_from_slice(&(n * 3000).to_be_bytes());
                rtp.extend_from_slice(&0x1234u32.to_be_bytes());
                rtp.extend_from_slice(&p);
                seq += 1;
                dgrams.push(Datagram {
                    time: Duration::from_millis(1_000 + u64::from(n) * 33),
                    src,
                    dst,
                    payload: rtp,
                });
            }
        }
    }
    let pcap = to_pcap(LINKTYPE_ETHERNET, &dgrams);
    let opts = VideoOptions {
        pt: Some(96),
        colours: vec![
            RefColour::rgb("red", 255, 0, 0),
            RefColour::rgb("blue", 0, 0, 255),
            RefColour::rgb("black", 0, 0, 0),
        ],
        tiles: Some((2, 2)),
        ..VideoOptions::default()
    };
    let r = analyze_video_bytes(&pcap, &opts).unwrap();
    let s = &r.streams[0];
    assert_eq!(s.decoded, 5);
    for f in &s.frame_list {
        assert_eq!(f.tiles, ["red", "blue", "black", "black"], "{f:?}");
    }
    assert!(s.first_tiles_after(&["red", "blue"], 0.0).is_some());
    assert!(s
        .first_tiles_after(&["red", "blue", "yellow"], 0.0)
        .is_none());
    // Without the option: no cells.
    let plain = analyze_video_bytes(
        &pcap,
        &VideoOptions {
            tiles: None,
            ..opts
        },
    )
    .unwrap();
    assert!(plain.streams[0]
        .frame_list
        .iter()
        .all(|f| f.tiles.is_empty()));
}
