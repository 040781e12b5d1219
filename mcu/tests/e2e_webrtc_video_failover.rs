//! A browser's video across `kill -9` of the primary (issues 9 and 12), in the namespace
//! test bed: a primary and a backup `mcu` (one DTLS certificate file, WebRTC and the HTTP API
//! on the service address) serve a room with "red" (client1: a scripted UAC, a 1 kHz tone as
//! its audio so that it is the speaker, GStreamer sending VP8 of a red 320x240 picture and
//! answering keyframe requests) and headless Chromium (client2: fake camera and microphone,
//! the page and WHIP on the service address, its VP8 bundled with its Opus). The browser is
//! shown red (the speaker, or the previous speaker while the browser itself speaks). About
//! 4 s after both are in, the primary gets `kill -9`.
//!
//! Asserted from the browser's `getStats`: the same inbound video SSRC after the takeover,
//! `framesDecoded` still growing, still 320x240, no ICE/DTLS change, and no freeze longer
//! than the goal (500 ms) in the 3 s after the kill (Chromium's own `freezeCount` /
//! `totalFreezesDuration`, per 250 ms sample). Printed as `WEBRTC-VIDEO-FAILOVER ...`: that
//! freeze, the longest run of samples without a new decoded frame (an upper bound), the
//! packet gap, and the frames, freezes, losses, PLIs and NACKs across the kill. From a capture in the browser's namespace (SRTP headers
//! are in the clear): one video SSRC from the service address, no duplicate and no sequence
//! regression, and the largest arrival gap of video packets across the kill.
//!
//! The same with a planned switchover (`POST /api/failover` on the primary) instead of the
//! kill: the same checks, and Chromium must count no freeze at all; the only repeated
//! sequence numbers allowed are byte-identical packets of the mirror's backlog (a known
//! limitation: the new primary forwards the ~20 ms of video its mirror still held, which the
//! old primary forwarded already; at most 10).
//!
//! Environment: `WEBRTC_VIDEO_FAILOVER_PREFIX` (default `us-wv`; the switchover case appends
//! `p`): namespace prefix;
//! `KEEP_SCRATCH=1` keeps captures and logs.

mod common;
use common::uac::{pcmu_packet, Uac};
use common::video::{answered_port, av_offer, unix_now};
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::bed::{addr_of, Testbed, VIP};
use testkit::browser::{stat as num, Browser};
use testkit::capture::Capture;
use testkit::process::run as sh;
use testkit::video::{VideoSender, VideoSenderConfig};

const HTTP_PORT: u16 = 8080;
const WEBRTC_PORT: u16 = 40000;
const ROOM: &str = "wvfail";
const VP8_PT: u8 = 96;
/// A planned switchover's byte-identical repeats allowed (the mirror's backlog: at most its
/// 20 ms batch of one source's video).
const MAX_SWITCHOVER_REPEATS: usize = 10;
/// The longest interval without a decodable picture across the kill (issue 12's goal).
const FREEZE_GOAL_MS: f64 = 500.0;

/// VP8 RTP packets from `src` in a capture: (arrival time, SSRC, sequence number, a hash of
/// the whole SRTP packet).
fn vp8_arrivals(pcap: &std::path::Path, src: &str) -> Vec<(f64, u32, u16, u64)> {
    let data = std::fs::read(pcap).expect("read capture");
    let mut out = vec![];
    pcap_harness::capture::for_each_frame(&data, |f| {
        let Ok(u) = pcap_harness::net::decode_udp(f.linktype, f.data) else {
            return;
        };
        let p = u.payload;
        if u.src.to_string() == src && p.len() >= 12 && p[0] >> 6 == 2 && p[1] & 0x7f == VP8_PT {
            out.push((
                f.time,
                u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
                u16::from_be_bytes([p[2], p[3]]),
                {
                    use std::hash::{Hash, Hasher};
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    p.hash(&mut h);
                    h.finish()
                },
            ));
        }
    })
    .expect("parse capture");
    out
}

#[test]
fn browser_video_survives_kill_of_primary() {
    run(false);
}

/// A planned switchover (`POST /api/failover` on the primary) instead of a kill: the same
/// checks, and no freeze at all (Chromium counts none).
#[test]
fn browser_video_survives_planned_switchover() {
    run(true);
}

fn run(planned: bool) {
    testkit::require::e2e(
        "network namespaces, tcpdump",
        &["tcpdump", "espeak-ng", "ffmpeg", "ip"],
    );
    testkit::video::require_gstreamer();
    testkit::browser::require();
    let prefix = std::env::var("WEBRTC_VIDEO_FAILOVER_PREFIX").unwrap_or_else(|_| "us-wv".into());
    // Each case its own test bed (the two may run at once).
    let prefix = if planned {
        format!("{prefix}p")
    } else {
        prefix
    };
    let dir = testkit::Scratch::new("e2e-webrtc-video-failover");
    sh(Command::new("espeak-ng")
        .arg("-w")
        .arg(dir.path("raw.wav"))
        .arg("The browser speaks now and then while the primary server fails."));
    sh(Command::new("ffmpeg")
        .args(["-y", "-loglevel", "error", "-stream_loop", "-1", "-i"])
        .arg(dir.path("raw.wav"))
        .args(["-t", "40", "-ar", "48000", "-ac", "2"])
        .arg(dir.path("speech.wav")));
    let key = dir.path("ft.key");
    std::fs::write(&key, format!("understudy-wv-{}", std::process::id())).unwrap();
    let cert = dir.path("dtls.pem");

    let bed = Testbed::up(&prefix, 2);
    let (mut primary, mut backup) = common::start_pair_with(
        &bed,
        &key,
        &common::webrtc_node_extra(HTTP_PORT, WEBRTC_PORT, &cert),
    );
    let (primary, backup) = (&mut primary, &mut backup);
    let server = SocketAddr::new(VIP.into(), 5060);

    // Red: SIP on :5070, audio :20000, video :20002/20003 (GStreamer), talking all along.
    let red_ip = IpAddr::from(addr_of("client1"));
    let red_audio = bed.udp("client1", &format!("{red_ip}:20000"));
    let mut red = Uac::with_socket(
        bed.udp("client1", &format!("{red_ip}:5070")),
        server,
        ROOM,
        "red",
    );
    let ok = red.call(&av_offer(red_ip, 20000, 20002, "sendrecv"));
    let red_server_audio = SocketAddr::new(VIP.into(), answered_port(&ok, "audio"));
    let red_server_video = SocketAddr::new(VIP.into(), answered_port(&ok, "video"));
    let stop = Arc::new(AtomicBool::new(false));
    let talker = {
        let (sock, stop) = (red_audio.try_clone().unwrap(), stop.clone());
        std::thread::spawn(move || {
            let mut seq = 0u16;
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let _ = sock.send_to(
                    &pcmu_packet(0x00AE_D000, seq, u32::from(seq) * 160),
                    red_server_audio,
                );
                seq = seq.wrapping_add(1);
                next += Duration::from_millis(20);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        })
    };
    let mut cfg = VideoSenderConfig::new(red_server_video, 20002, (255, 0, 0));
    cfg.local_ip = red_ip;
    let sender = VideoSender::start_in(&bed, "client1", &cfg);

    // The browser, on the service address.
    let capture = Capture::start_in(
        &bed.ns("client2"),
        "eth0",
        &dir.path("client2.pcap"),
        &format!("udp and host {VIP} and port {WEBRTC_PORT}"),
    );
    let url = format!("http://{VIP}:{HTTP_PORT}/room/{ROOM}?autojoin=1&name=chromium&video=1");
    let mut browser = Browser::start(
        bed.command("client2", "node"),
        &url,
        &dir.path("speech.wav"),
        60,
    );
    let decoding = browser.wait_for(Duration::from_secs(40), |s| {
        num(s, &["inboundVideo", "framesDecoded"]) > 30.0
    });
    assert!(
        decoding.is_some(),
        "the browser never decoded video: events {:#?}, last {:#?}, errors {:?}",
        browser.events,
        browser.last(),
        browser.errors
    );
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        common::pair_synced(primary, backup),
        "the backup holds the room"
    );
    let before = browser.fresh(Duration::from_secs(5)).expect("stats");
    let samples_before = browser.samples.len();

    let kill_at = unix_now();
    if planned {
        let reply = primary.post("/api/failover");
        eprintln!("WEBRTC-VIDEO-FAILOVER POST /api/failover: {reply:?}");
        assert!(
            matches!(&reply, Some((202, _))),
            "the planned switchover: {reply:?}"
        );
    } else {
        primary.kill9();
    }
    assert!(
        backup
            .log
            .wait("takeover complete", Duration::from_secs(5))
            .is_some(),
        "the backup took over"
    );
    std::thread::sleep(Duration::from_secs(6));
    let after = browser.fresh(Duration::from_secs(5)).expect("stats");
    stop.store(true, Ordering::Relaxed);
    talker.join().unwrap();
    sender.stop();
    let metrics = backup.get("/metrics").map(|(_, b)| b).unwrap_or_default();
    let ended = browser.finish(Duration::from_secs(15));
    let pcap = capture.stop();
    eprintln!(
        "WEBRTC-VIDEO-FAILOVER before: {}\nWEBRTC-VIDEO-FAILOVER after: {}",
        before["inboundVideo"], after["inboundVideo"]
    );
    for l in metrics
        .lines()
        .filter(|l| l.starts_with("mcu_video") || l.starts_with("mcu_webrtc"))
    {
        eprintln!("WEBRTC-VIDEO-FAILOVER backup {l}");
    }

    // The browser's own view of the interval without a new decoded frame across the kill:
    // Chromium counts a freeze when a frame comes later than max(3 x, + 150 ms) the mean
    // frame interval (about 183 ms at 30 fps) and adds that interval to
    // `totalFreezesDuration`; the driver's 250 ms samples tell which freeze began when. The
    // longest freeze seen in the 3 s after the kill (0: no interval over the threshold).
    let window = &browser.samples[samples_before.saturating_sub(1)..];
    let window = &window[..window.len().min(14)];
    let freeze_ms = window
        .windows(2)
        .filter(|w| {
            num(&w[1]["stats"], &["inboundVideo", "freezeCount"])
                > num(&w[0]["stats"], &["inboundVideo", "freezeCount"])
        })
        .map(|w| {
            let f =
                |s: &serde_json::Value| num(&s["stats"], &["inboundVideo", "totalFreezesDuration"]);
            (f(&w[1]) - f(&w[0])) * 1e3
        })
        .fold(0.0f64, f64::max);
    // And, coarser, the longest run of samples without a new decoded frame (an upper bound
    // with the samples' own scheduling jitter).
    let series: Vec<(f64, f64)> = window
        .iter()
        .map(|s| {
            (
                num(s, &["t"]) / 1e3,
                num(&s["stats"], &["inboundVideo", "framesDecoded"]),
            )
        })
        .collect();
    let mut stall_ms = 0.0f64;
    let mut last_change = series.first().map_or(0.0, |s| s.0);
    for w in series.windows(2) {
        if w[1].1 > w[0].1 {
            stall_ms = stall_ms.max((w[1].0 - last_change) * 1e3);
            last_change = w[1].0;
        }
    }
    let d = |k: &str| num(&after, &["inboundVideo", k]) - num(&before, &["inboundVideo", k]);
    let arrivals = vp8_arrivals(&pcap, &format!("{VIP}:{WEBRTC_PORT}"));
    let ssrcs: std::collections::BTreeSet<u32> = arrivals.iter().map(|a| a.1).collect();
    // Repeated sequence numbers: byte-identical (the same packet forwarded by both nodes: the
    // same plaintext under the same SRTP index), or differing (two different packets).
    let mut seen = std::collections::HashMap::new();
    let (mut identical, mut differing) = (0, 0);
    let arrivals: Vec<_> = arrivals
        .into_iter()
        .filter(|a| match seen.insert((a.1, a.2), a.3) {
            None => true,
            Some(h) if h == a.3 => {
                identical += 1;
                false
            }
            Some(_) => {
                differing += 1;
                false
            }
        })
        .collect();
    let dups = identical + differing;
    let regressions = arrivals
        .windows(2)
        .filter(|w| w[1].2.wrapping_sub(w[0].2) > 0x8000)
        .count();
    // Sequence numbers skipped (never sent to the browser, or lost) over the whole capture.
    let missing: u32 = arrivals
        .windows(2)
        .map(|w| u32::from(w[1].2.wrapping_sub(w[0].2)))
        .filter(|&d| d > 1 && d < 0x8000)
        .map(|d| d - 1)
        .sum();
    let gap_ms = arrivals
        .windows(2)
        .filter(|w| w[1].0 > kill_at - 1.0 && w[0].0 < kill_at + 2.0)
        .map(|w| (w[1].0 - w[0].0) * 1000.0)
        .fold(0.0, f64::max);
    eprintln!(
        "WEBRTC-VIDEO-FAILOVER {}freeze={freeze_ms:.0}ms decoded_stall<={stall_ms:.0}ms packet_gap={gap_ms:.1}ms missing={missing} repeated={identical}+{differing} frames_decoded=+{} freezes=+{} freeze_s=+{:.3} lost=+{} plis=+{} nacks=+{} packets={} driver_ended={ended}",
        if planned { "planned " } else { "" },
        d("framesDecoded"),
        d("freezeCount"),
        d("totalFreezesDuration"),
        d("packetsLost"),
        d("pliCount"),
        d("nackCount"),
        arrivals.len()
    );

    let mut problems = vec![];
    if before["inboundVideo"]["ssrc"] != after["inboundVideo"]["ssrc"] {
        problems.push(format!(
            "inbound video SSRC {} -> {}",
            before["inboundVideo"]["ssrc"], after["inboundVideo"]["ssrc"]
        ));
    }
    if d("framesDecoded") < 60.0 {
        problems.push(format!(
            "only {} frames decoded in the ~6 s after the kill",
            d("framesDecoded")
        ));
    }
    if after["inboundVideo"]["frameWidth"].as_u64() != Some(320) {
        problems.push(format!("frame size after: {}", after["inboundVideo"]));
    }
    for key in ["iceLocalUsernameFragment", "selectedCandidatePairChanges"] {
        if before["transport"][key] != after["transport"][key] {
            problems.push(format!(
                "transport.{key}: {} -> {}",
                before["transport"][key], after["transport"][key]
            ));
        }
    }
    if after["transport"]["dtlsState"] != "connected" {
        problems.push(format!("transport after the kill: {}", after["transport"]));
    }
    if ssrcs.len() != 1 {
        problems.push(format!("video SSRCs from the service address: {ssrcs:x?}"));
    }
    // A planned switchover may repeat the few packets of the mirror's backlog (the new
    // primary forwards, byte for byte, what the old one forwarded in the last ~20 ms before
    // the address moved): harmless at the receiver, counted and bounded.
    let allowed = if planned { MAX_SWITCHOVER_REPEATS } else { 0 };
    if identical > allowed || differing > 0 || regressions > 0 {
        problems.push(format!(
            "{dups} duplicate ({identical} byte-identical, {differing} differing) and {regressions} regressing sequence numbers"
        ));
    }
    if planned && freeze_ms > 0.0 {
        problems.push(format!(
            "a freeze of {freeze_ms:.0} ms across a planned switchover (none expected)"
        ));
    }
    if freeze_ms > FREEZE_GOAL_MS {
        problems.push(format!(
            "a freeze of {freeze_ms:.0} ms across the kill (goal {FREEZE_GOAL_MS} ms)"
        ));
    }
    let changes = browser.state_changes();
    let after_connected: Vec<&String> = changes
        .iter()
        .skip_while(|c| *c != "connectionstatechange=connected")
        .skip(1)
        .filter(|c| !c.ends_with("=closed"))
        .collect();
    if !after_connected.is_empty() {
        problems.push(format!(
            "state changes after connected: {after_connected:?}"
        ));
    }
    assert!(
        problems.is_empty(),
        "the browser's video noticed the takeover: {problems:#?}"
    );
}
