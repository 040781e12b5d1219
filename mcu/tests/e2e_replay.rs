//! The replayer (`mcu pcap replay`) against the real server, and the analyzer against
//! tshark on a real baresip call.
//!
//! * `replayed_participants_hear_each_other`: an Opus recording made at test time
//!   (espeak-ng -> ffmpeg libopus -> RTP on loopback, captured with tcpdump) and sipp's
//!   recorded G.711 A-law capture are replayed twice each (`--count 2`): four real SIP
//!   participants in one room of `mcu serve`. The replayer's `--out` capture of what they
//!   received is analyzed: each got exactly one server stream (one SSRC) without loss,
//!   duplicates, reordering or timestamp errors, with speech energy from the others.
//! * `baresip_call_analysis_agrees_with_tshark`: a real baresip call (Opus) to `mcu`, with a
//!   replayed A-law participant in the room, captured with tcpdump; every RTP stream's
//!   packets, lost, min/mean/max delta and mean/max jitter agree with
//!   `tshark -q -z rtp,streams`.
//!
//! The first two run the server in-process ([`TestServer`]); the third runs the binary in
//! a test-bed namespace. Needs root (tcpdump on lo, namespaces), tcpdump, tshark, ffmpeg,
//! espeak-ng, baresip and sipp's captures; without one, the test fails and says which.

mod common;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{args, Node, TestServer};
use mcu::config::ServeArgs;
use pcap_harness::{analyze_path, Report};
use testkit::capture::Capture;
use testkit::peers::{self, espeak as speech};
use testkit::process::{expect_success, run as sh, wait_timeout};
use testkit::{poll, Scratch};

const G711A: &str = "/usr/share/sip-tester/g711a.pcap";

/// Root, the tools, and sipp's recorded A-law capture.
fn ready(tools: &[&str]) {
    testkit::require::e2e("tcpdump on lo, network namespaces", tools);
    testkit::require::file(G711A, "sip-tester");
}

/// A real encoder's Opus RTP: ffmpeg (libopus, 20 ms, PT 97) sends `wav` over loopback to a
/// socket of ours while tcpdump records it. Returns the capture (RTP only, no SIP: replay
/// it with `--pt 97=opus/48000/2`).
fn record_opus(dir: &Path, wav: &Path) -> PathBuf {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = rx.local_addr().unwrap().port();
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    // Drain, so the kernel never answers ICMP port unreachable to ffmpeg.
    let drain = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut n = 0u32;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            if rx.recv(&mut buf).is_ok() {
                n += 1;
            }
        }
        n
    });
    let cap = Capture::start(&dir.join("opus.pcap"), &format!("udp and dst port {port}"));
    sh(Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-re",
            "-i",
        ])
        .arg(wav)
        .args(["-af", "adelay=200", "-ar", "48000", "-ac", "1"])
        .args(["-c:a", "libopus", "-b:a", "32k", "-frame_duration", "20"])
        .args(["-payload_type", "97", "-ssrc", "305419896", "-f", "rtp"])
        .arg(format!("rtp://127.0.0.1:{port}"))
        .stdout(Stdio::null()));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let received = drain.join().unwrap();
    assert!(received > 100, "only {received} Opus packets received");
    // Everything we received is in the capture before it stops.
    cap.wait_packets(received as usize, Duration::from_secs(5));
    cap.stop()
}

/// Wait until the server has logged `n` joins.
fn wait_joins(srv: &mut TestServer, n: usize, timeout: Duration) {
    srv.log
        .wait_count("joined room", n, timeout)
        .unwrap_or_else(|| panic!("{n} joins not logged within {timeout:?}"));
    srv.wait_participants(n, Duration::from_secs(5));
}

/// The participants of the only room, from the admin API.
fn room_participants(srv: &TestServer) -> (String, Vec<serde_json::Value>) {
    let v = srv.get_json("/api/rooms");
    let rooms = v["rooms"].as_array().expect("rooms");
    assert_eq!(rooms.len(), 1, "one room: {v:#}");
    let parts = rooms[0]["participants"]
        .as_object()
        .expect("participants")
        .values()
        .cloned()
        .collect();
    (rooms[0]["name"].as_str().unwrap_or("").to_string(), parts)
}

#[test]
fn replayed_participants_hear_each_other() {
    ready(&["tcpdump", "ffmpeg", "espeak-ng"]);
    const RTP: &str = "31700-31799";
    let dir = Scratch::new("e2e-replay");
    let wav = speech(
        &dir.0,
        "speech.wav",
        "Replayed participant speaking. One two three four five six. \
         The quick brown fox jumps over the lazy dog.",
    );
    let opus = record_opus(&dir.0, &wav);
    let src = pcap_harness::analyze_path_with(
        &opus,
        &pcap_harness::Options {
            pt_hints: [(
                97,
                pcap_harness::cli::parse_pt_hint("97=opus/48000/2")
                    .unwrap()
                    .1,
            )]
            .into(),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(src.rtp_streams.len(), 1, "{:#?}", src.rtp_streams);
    assert_eq!(src.rtp_streams[0].codec, "opus/48000/2");
    assert_eq!(src.rtp_streams[0].frame_samples, Some(960));

    let mut srv = TestServer::start(ServeArgs {
        seed: Some(7),
        ..args(RTP)
    });
    let out = dir.path("received.pcap");
    let replay = Command::new(env!("CARGO_BIN_EXE_mcu"))
        .args(["pcap", "replay"])
        .arg(&opus)
        .arg(G711A)
        .args(["--pt", "97=opus/48000/2", "--count", "2", "--seed", "3"])
        .args(["--to", &format!("sip:replayroom@{}", srv.sip)])
        .arg("--out")
        .arg(&out)
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn mcu pcap replay");

    // All four in one room while the recordings play.
    wait_joins(&mut srv, 4, Duration::from_secs(30));
    let (room, parts) = room_participants(&srv);
    assert_eq!(room, "replayroom");
    assert_eq!(parts.len(), 4, "{parts:#?}");
    let mut codecs: Vec<String> = parts
        .iter()
        .map(|p| p["codec"].as_str().unwrap_or("").to_string())
        .collect();
    codecs.sort();
    assert_eq!(codecs, ["OPUS", "OPUS", "PCMA", "PCMA"]);

    let mut replay = replay;
    let st = wait_timeout(&mut replay, Duration::from_secs(60)).expect("replay ends");
    let mut stdout = String::new();
    std::io::Read::read_to_string(replay.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    assert!(st.success(), "replay failed ({st}): {stdout}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).expect("replay --json");
    let participants = summary["participants"].as_array().unwrap().clone();
    assert_eq!(participants.len(), 4, "{summary:#}");
    srv.shutdown().expect("server stops cleanly on shutdown");

    let report = analyze_path(&out).expect("analyze the received capture");
    for p in &participants {
        let local_rtp = p["local_rtp"].as_str().unwrap();
        let codec = p["codec"].as_str().unwrap();
        assert_eq!(p["established"], true, "{p:#}");
        assert!(p["rtp_sent"].as_u64().unwrap() > 100, "{p:#}");
        let streams: Vec<_> = report
            .rtp_streams
            .iter()
            .filter(|s| s.dst == local_rtp)
            .collect();
        assert_eq!(
            streams.len(),
            1,
            "{local_rtp} ({codec}): exactly one server stream: {streams:#?}"
        );
        let s = streams[0];
        eprintln!(
            "{local_rtp} ({codec}) heard ssrc {:#010x} {}: {} pkts lost {} dup {} reo {} \
             ts_err {} max_gap {:.1} ms jitter {:.2} ms, loud windows {}",
            s.ssrc,
            s.codec,
            s.packets,
            s.lost,
            s.duplicates,
            s.reordered,
            s.ts_errors,
            s.max_gap_ms,
            s.jitter_ms,
            s.energy_dbfs.iter().filter(|e| **e > -40.0).count()
        );
        let flow_changes: usize = report
            .rtp_flows
            .iter()
            .filter(|f| f.dst == local_rtp)
            .map(|f| f.ssrc_changes.len())
            .sum();
        assert_eq!(flow_changes, 0, "{local_rtp}: SSRC changed");
        assert_eq!(
            s.codec.to_ascii_lowercase(),
            codec.to_ascii_lowercase(),
            "{local_rtp}: answered with the offered codec"
        );
        assert!(s.packets > 150, "{local_rtp}: {} packets", s.packets);
        assert_eq!(
            (s.lost, s.missing, s.duplicates, s.reordered, s.seq_resets),
            (0, 0, 0, 0, 0),
            "{local_rtp}: {s:#?}"
        );
        assert_eq!(s.ts_errors, 0, "{local_rtp}: {:?}", s.ts_error_list);
        assert!(s.max_gap_ms < 100.0, "{local_rtp}: gap {}", s.max_gap_ms);
        assert!(s.decoded && s.decode_errors == 0, "{local_rtp}: {s:#?}");
        let loud = s.energy_dbfs.iter().filter(|e| **e > -40.0).count();
        assert!(
            loud >= 20,
            "{local_rtp}: hears the others: only {loud} loud 100 ms windows: {:?}",
            s.energy_dbfs
        );
        // The call ended with BYE answered by 200.
        let call_id = p["call_id"].as_str().unwrap();
        let d = report.dialog(call_id).expect("dialog recorded");
        let bye = d
            .messages
            .iter()
            .position(|m| m.method.as_deref() == Some("BYE"))
            .unwrap_or_else(|| panic!("{call_id}: BYE: {d:#?}"));
        assert!(
            d.messages[bye..]
                .iter()
                .any(|m| m.status == Some(200) && m.cseq_method == "BYE"),
            "{call_id}: BYE answered: {d:#?}"
        );
    }
}

/// One row of tshark's `rtp,streams` table.
#[derive(Debug)]
struct TsharkRow {
    src: String,
    dst: String,
    ssrc: u32,
    packets: u64,
    lost: i64,
    min_delta: f64,
    mean_delta: f64,
    max_delta: f64,
    mean_jitter: f64,
    max_jitter: f64,
}

fn tshark_streams(file: &Path, sip_ports: &[u16]) -> Vec<TsharkRow> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(file)
        .args(["-o", "rtp.heuristic_rtp:TRUE"]);
    for p in sip_ports {
        cmd.args(["-d", &format!("udp.port=={p},sip")]);
    }
    let out = cmd
        .args(["-q", "-z", "rtp,streams"])
        .stderr(Stdio::piped())
        .output()
        .expect("run tshark");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    let mut rows = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let Some(pct) = f
            .iter()
            .position(|x| x.starts_with('(') && x.ends_with("%)"))
        else {
            continue;
        };
        let num = |s: &str| {
            s.parse::<f64>()
                .unwrap_or_else(|_| panic!("bad number {s} in {line}"))
        };
        rows.push(TsharkRow {
            src: format!("{}:{}", f[2], f[3]),
            dst: format!("{}:{}", f[4], f[5]),
            ssrc: u32::from_str_radix(f[6].trim_start_matches("0x"), 16).unwrap(),
            packets: f[pct - 2].parse().unwrap(),
            lost: f[pct - 1].parse().unwrap(),
            min_delta: num(f[pct + 1]),
            mean_delta: num(f[pct + 2]),
            max_delta: num(f[pct + 3]),
            mean_jitter: num(f[pct + 5]),
            max_jitter: num(f[pct + 6]),
        });
    }
    rows
}

/// tshark prints 3 decimals: agree within its rounding.
fn close(ours: f64, theirs: f64) -> bool {
    (ours - theirs).abs() <= 0.0005 + 1e-9
}

fn assert_agrees(report: &Report, rows: &[TsharkRow]) {
    assert_eq!(
        report.rtp_streams.len(),
        rows.len(),
        "stream count: ours {:#?}",
        report
            .rtp_streams
            .iter()
            .map(|s| (&s.src, &s.dst, s.ssrc_hex.as_str(), s.packets))
            .collect::<Vec<_>>()
    );
    for t in rows {
        let s = report
            .rtp_streams
            .iter()
            .find(|s| s.ssrc == t.ssrc && s.src == t.src && s.dst == t.dst)
            .unwrap_or_else(|| panic!("tshark stream {t:?} not found by us"));
        let ctx = format!("{} -> {} 0x{:08X}", t.src, t.dst, t.ssrc);
        assert_eq!(s.packets, t.packets, "{ctx}: packets");
        assert_eq!(s.lost, t.lost, "{ctx}: lost");
        let pairs = [
            ("min delta", s.min_delta_ms.unwrap_or(-1.0), t.min_delta),
            ("mean delta", s.mean_delta_ms, t.mean_delta),
            ("max delta", s.max_delta_ms, t.max_delta),
            ("mean jitter", s.jitter_mean_ms, t.mean_jitter),
            ("max jitter", s.jitter_ms, t.max_jitter),
        ];
        for (what, ours, theirs) in pairs {
            assert!(
                close(ours, theirs),
                "{ctx}: {what}: ours {ours} tshark {theirs}"
            );
        }
    }
}

#[test]
fn baresip_call_analysis_agrees_with_tshark() {
    ready(&["tcpdump", "tshark", "baresip", "ffmpeg", "espeak-ng"]);
    const RTP: &str = "31800-31899";
    const BARESIP_SIP: u16 = 25681;
    const BARESIP_RTP: (u16, u16) = (26800, 26899);
    let dir = Scratch::new("e2e-replay-baresip");
    let raw = speech(
        &dir.0,
        "raw.wav",
        "This is baresip calling the conference. Seven eight nine ten. \
         Measuring the stream with two tools.",
    );
    // baresip's aufile source wants 48 kHz stereo.
    let wav = dir.path("speech.wav");
    peers::to_48k_stereo(&raw, &wav, None);

    let mut srv = TestServer::start(ServeArgs {
        seed: Some(11),
        ..args(RTP)
    });
    let sip = srv.sip.port();
    let cap = Capture::start(
        &dir.path("call.pcap"),
        &format!("udp and (port {sip} or portrange {RTP})"),
    );
    let mut baresip = peers::baresip_dial(
        &dir.0,
        BARESIP_SIP,
        BARESIP_RTP,
        &wav,
        &format!("sip:tworoom@{}", srv.sip),
        25,
    );
    // A second participant so that baresip hears someone: sipp's recorded A-law speech.
    let mut replay = Command::new(env!("CARGO_BIN_EXE_mcu"))
        .args(["pcap", "replay", G711A, "--seed", "5"])
        .args(["--to", &format!("sip:tworoom@{}", srv.sip)])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn mcu pcap replay");
    wait_joins(&mut srv, 2, Duration::from_secs(15));
    let (_, parts) = room_participants(&srv);
    assert_eq!(parts.len(), 2, "{parts:#?}");
    expect_success(&mut replay, "mcu pcap replay", Duration::from_secs(40));
    let st = wait_timeout(&mut baresip, Duration::from_secs(30)).expect("baresip ends");
    assert!(st.success(), "baresip exit {st}");
    // Both calls ended on the server's side too (their last RTCP is out) before it stops.
    let empty = poll(Duration::from_secs(5), || {
        let rooms = srv.get_json("/api/rooms");
        rooms["rooms"].as_array()?.is_empty().then_some(())
    });
    assert!(
        empty.is_some(),
        "the room did not empty: {:?}",
        srv.get("/api/rooms")
    );
    srv.shutdown().expect("server stops cleanly on shutdown");
    let pcap = cap.stop();

    let report = analyze_path(&pcap).expect("analyze");
    let in_range = |a: &str, lo: u16, hi: u16| {
        a.rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_some_and(|p| (lo..=hi).contains(&p))
    };
    // baresip's Opus to the server, and the server's mix to baresip, both recognised.
    let from_baresip = report
        .rtp_streams
        .iter()
        .find(|s| in_range(&s.src, BARESIP_RTP.0, BARESIP_RTP.1))
        .expect("baresip's stream");
    let to_baresip = report
        .rtp_streams
        .iter()
        .find(|s| in_range(&s.dst, BARESIP_RTP.0, BARESIP_RTP.1))
        .expect("the server's stream to baresip");
    for s in [from_baresip, to_baresip] {
        eprintln!(
            "{} -> {} {:#010x} {} {} pkts lost {} max delta {:.3} jitter {:.3}/{:.3}",
            s.src,
            s.dst,
            s.ssrc,
            s.codec,
            s.packets,
            s.lost,
            s.max_delta_ms,
            s.jitter_mean_ms,
            s.jitter_ms
        );
        assert!(s.codec.starts_with("opus/48000"), "{s:#?}");
        assert_eq!(s.codec_source, "sdp");
        assert!(s.packets > 100, "{s:#?}");
    }
    assert!(
        to_baresip.energy_dbfs.iter().any(|e| *e > -40.0),
        "baresip hears the replayed speech"
    );
    let rows = tshark_streams(&pcap, &[sip]);
    assert!(
        rows.len() >= 4,
        "two participants, both directions: {rows:?}"
    );
    assert_agrees(&report, &rows);
}

/// The replayer as a load generator inside a network namespace, bound to that namespace's
/// address (issue 3): `mcu serve` in one namespace of the test bed, `mcu pcap replay
/// --bind` in a client namespace; both participants come from the bound address and hear
/// each other on one clean stream each.
#[test]
fn replay_from_a_network_namespace_with_bind() {
    ready(&["ip", "iptables", "ping"]);
    let bed = testkit::bed::Testbed::up("us-rn", 1);
    let server_ip = testkit::bed::addr_of("primary").to_string();
    let client_ip = testkit::bed::addr_of("client1").to_string();
    let mcu = env!("CARGO_BIN_EXE_mcu");
    let http: std::net::SocketAddr = format!("{server_ip}:8080").parse().unwrap();
    let server_args: Vec<String> = ["--seed", "5", "--rtp-ports", "30000-30099"]
        .iter()
        .map(|s| s.to_string())
        .chain([
            "--sip-listen".into(),
            format!("{server_ip}:5060"),
            "--http-listen".into(),
            http.to_string(),
        ])
        .collect();
    let server = Node::start(&bed, "primary", http, &server_args);
    assert!(
        poll(Duration::from_secs(20), || server.get("/healthz")).is_some(),
        "server never answered"
    );

    let dir = Scratch::new("e2e-replay-netns");
    let out = dir.path("received.pcap");
    let mut replay = bed
        .command("client1", mcu)
        .args(["pcap", "replay", G711A, "--count", "2", "--seed", "9"])
        .args(["--bind", &client_ip])
        .args(["--to", &format!("sip:nsroom@{server_ip}:5060")])
        .arg("--out")
        .arg(&out)
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn mcu pcap replay in the client namespace");
    let st = wait_timeout(&mut replay, Duration::from_secs(60)).expect("replay ends");
    let mut stdout = String::new();
    std::io::Read::read_to_string(replay.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    assert!(st.success(), "replay failed ({st}): {stdout}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).expect("replay --json");
    let participants = summary["participants"].as_array().unwrap().clone();
    assert_eq!(participants.len(), 2, "{summary:#}");

    let report = analyze_path(&out).expect("analyze the received capture");
    for p in &participants {
        let local_rtp = p["local_rtp"].as_str().unwrap();
        assert!(
            local_rtp.starts_with(&format!("{client_ip}:")),
            "media bound to the namespace's address: {p:#}"
        );
        assert_eq!(p["established"], true, "{p:#}");
        let streams: Vec<_> = report
            .rtp_streams
            .iter()
            .filter(|s| s.dst == local_rtp)
            .collect();
        assert_eq!(streams.len(), 1, "{local_rtp}: {streams:#?}");
        let s = streams[0];
        assert!(
            s.src.starts_with(&format!("{server_ip}:")),
            "from the server: {s:#?}"
        );
        assert!(s.packets > 150, "{local_rtp}: {} packets", s.packets);
        assert_eq!(
            (s.lost, s.duplicates, s.reordered, s.ts_errors),
            (0, 0, 0, 0),
            "{local_rtp}: {s:#?}"
        );
        let loud = s.energy_dbfs.iter().filter(|e| **e > -40.0).count();
        assert!(
            loud >= 20,
            "{local_rtp}: hears the other: {loud} loud windows"
        );
        // Its SIP came from the bound address too.
        let call_id = p["call_id"].as_str().unwrap();
        let d = report.dialog(call_id).expect("dialog recorded");
        let invite = d
            .messages
            .iter()
            .find(|m| m.method.as_deref() == Some("INVITE"))
            .expect("INVITE recorded");
        assert!(
            invite.src.starts_with(&format!("{client_ip}:")),
            "INVITE from the bound address: {invite:#?}"
        );
    }
}
