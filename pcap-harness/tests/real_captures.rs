//! Real captures, cross-checked against tshark 4.0's `-z rtp,streams`:
//! sipp's recorded G.711 A-law and RFC 2833 captures, and Opus produced at test time by
//! espeak-ng + ffmpeg (libopus) on loopback, captured with tcpdump.
//!
//! A missing tool or capture fails the test, saying how to get it (`testkit::require`).

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pcap_harness::{analyze_path, analyze_path_with, Options, Report};

const SIPP_DIR: &str = "/usr/share/sip-tester";

/// Fail the test unless `ok`: `what` (with the package providing it) is missing.
fn require(ok: bool, what: &str) {
    assert!(ok, "{what} missing: scripts/test installs it");
}

fn sipp_captures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(SIPP_DIR)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "pcap"));
    v.sort();
    v
}

/// One row of tshark's `rtp,streams` table.
#[derive(Debug)]
struct TsharkRow {
    src: String,
    dst: String,
    ssrc: u32,
    payload: String,
    packets: u64,
    lost: i64,
    min_delta: f64,
    mean_delta: f64,
    max_delta: f64,
    mean_jitter: f64,
    max_jitter: f64,
}

fn tshark_streams(file: &Path, extra: &[&str]) -> Vec<TsharkRow> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(["-o", "rtp.heuristic_rtp:TRUE"])
        .args(extra)
        .args(["-q", "-z", "rtp,streams"])
        .output()
        .expect("run tshark");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
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
            payload: f[7..pct - 2].join(" "),
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

fn assert_agrees(file: &Path, report: &Report, rows: &[TsharkRow]) {
    assert_eq!(
        report.rtp_streams.len(),
        rows.len(),
        "{}: stream count",
        file.display()
    );
    for t in rows {
        let s = report
            .rtp_streams
            .iter()
            .find(|s| {
                s.ssrc == t.ssrc
                    && s.src.replace(['[', ']'], "") == t.src
                    && s.dst.replace(['[', ']'], "") == t.dst
            })
            .unwrap_or_else(|| panic!("{}: tshark stream {t:?} not found", file.display()));
        let ctx = format!("{} {} -> {} 0x{:08X}", file.display(), t.src, t.dst, t.ssrc);
        assert_eq!(s.packets, t.packets, "{ctx}: packets");
        assert_eq!(s.lost, t.lost, "{ctx}: lost");
        assert_eq!(s.tshark_lost, t.lost, "{ctx}: tshark_lost");
        let min_delta = s.min_delta_ms.unwrap_or(-1.0);
        assert!(
            close(min_delta, t.min_delta),
            "{ctx}: min delta {min_delta} vs {}",
            t.min_delta
        );
        assert!(
            close(s.mean_delta_ms, t.mean_delta),
            "{ctx}: mean delta {} vs {}",
            s.mean_delta_ms,
            t.mean_delta
        );
        assert!(
            close(s.max_delta_ms, t.max_delta),
            "{ctx}: max delta {} vs {}",
            s.max_delta_ms,
            t.max_delta
        );
        assert!(
            close(s.jitter_mean_ms, t.mean_jitter),
            "{ctx}: mean jitter {} vs {}",
            s.jitter_mean_ms,
            t.mean_jitter
        );
        assert!(
            close(s.jitter_ms, t.max_jitter),
            "{ctx}: max jitter {} vs {}",
            s.jitter_ms,
            t.max_jitter
        );
    }
}

#[test]
fn sipp_g711a_exact_figures() {
    let f = Path::new(SIPP_DIR).join("g711a.pcap");
    require(f.exists(), "sipp's g711a.pcap (package sip-tester)");
    let r = analyze_path(&f).unwrap();
    assert_eq!((r.format.as_str(), r.frames), ("pcap", 236));
    assert_eq!(r.rtp_streams.len(), 1);
    let s = &r.rtp_streams[0];
    // Verified with: tshark -r g711a.pcap -o rtp.heuristic_rtp:TRUE -q -z rtp,streams
    assert_eq!(
        (s.src.as_str(), s.dst.as_str()),
        ("10.1.3.143:5000", "10.1.6.18:2006")
    );
    assert_eq!(s.ssrc, 0xDEE0_EE8F);
    assert_eq!(s.codec, "PCMA/8000");
    assert_eq!(s.payload_types, vec![8]);
    assert_eq!(
        (s.packets, s.lost, s.missing, s.duplicates, s.reordered),
        (236, 0, 0, 0, 0)
    );
    assert_eq!(format!("{:.3}", s.min_delta_ms.unwrap()), "25.112");
    assert_eq!(format!("{:.3}", s.mean_delta_ms), "29.998");
    assert_eq!(format!("{:.3}", s.max_delta_ms), "34.829");
    assert_eq!(format!("{:.3}", s.jitter_mean_ms), "0.350");
    assert_eq!(format!("{:.3}", s.jitter_ms), "0.829");
    assert!((s.last_time - s.first_time - 7.049628).abs() < 1e-6);
    assert!(
        (s.first_time - 1_027_664_343.268118).abs() < 1e-5,
        "{}",
        s.first_time
    );
    // 30 ms A-law packets, timestamps consistent.
    assert_eq!(s.frame_samples, Some(240));
    assert_eq!(s.ts_errors, 0);
    assert_eq!(
        s.max_gap_ms, s.max_delta_ms,
        "the only marker is on the first packet"
    );
    // It is speech: loud windows and quiet ones.
    assert!(s.decoded);
    assert_eq!(s.energy_dbfs.len(), 71);
    let max = s.energy_dbfs.iter().cloned().fold(f64::MIN, f64::max);
    let min = s.energy_dbfs.iter().cloned().fold(f64::MAX, f64::min);
    assert!(max > -25.0 && min < -45.0, "max {max} min {min}");
}

#[test]
fn sipp_dtmf_captures_exact_figures() {
    let files: Vec<PathBuf> = sipp_captures()
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("dtmf_2833_")
        })
        .collect();
    require(
        files.len() == 12,
        "sipp's dtmf_2833_*.pcap (package sip-tester)",
    );
    for f in files {
        let r = analyze_path(&f).unwrap();
        assert_eq!(r.rtp_streams.len(), 1, "{}", f.display());
        let s = &r.rtp_streams[0];
        assert_eq!(s.ssrc, 0x0E05_384E);
        assert_eq!(
            (s.src.as_str(), s.dst.as_str()),
            ("192.168.0.3:49176", "192.168.0.1:10000")
        );
        assert_eq!(s.codec, "telephone-event/8000");
        // The three end-of-event packets share one sequence number: tshark's Lost is -2.
        assert_eq!(
            (s.packets, s.lost, s.duplicates, s.missing),
            (10, -2, 2, 0),
            "{}",
            f.display()
        );
        assert_eq!(
            s.jitter_ms, 0.0,
            "tshark computes no jitter for telephone-event"
        );
        assert!(!s.decoded);
    }
}

#[test]
fn tshark_agrees_on_sipp_captures() {
    let files = sipp_captures();
    testkit::require::tools(&["tshark"]);
    require(!files.is_empty(), "sipp captures (package sip-tester)");
    for f in files {
        let rows = tshark_streams(&f, &[]);
        assert!(!rows.is_empty(), "{}: tshark found no stream", f.display());
        let r = analyze_path(&f).unwrap();
        assert_agrees(&f, &r, &rows);
    }
}

#[test]
fn cli_binary_prints_json() {
    let f = Path::new(SIPP_DIR).join("g711a.pcap");
    require(f.exists(), "sipp's g711a.pcap (package sip-tester)");
    let out = Command::new(env!("CARGO_BIN_EXE_pcap-harness"))
        .arg("analyze")
        .arg(&f)
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rtp_streams"][0]["ssrc"], 0xDEE0_EE8Fu32);
    assert_eq!(v["rtp_streams"][0]["packets"], 236);
    let table = Command::new(env!("CARGO_BIN_EXE_pcap-harness"))
        .arg("analyze")
        .arg(&f)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("0xDEE0EE8F") && text.contains("PCMA/8000"),
        "{text}"
    );
    let bad = Command::new(env!("CARGO_BIN_EXE_pcap-harness"))
        .args(["analyze", "/nonexistent.pcap"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/nonexistent.pcap"));
}

/// Bind two consecutive UDP ports on loopback (RTP, RTCP).
fn port_pair() -> (UdpSocket, UdpSocket) {
    for _ in 0..200 {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = a.local_addr().unwrap().port();
        if p & 1 == 0 && p < 65534 {
            if let Ok(b) = UdpSocket::bind(("127.0.0.1", p + 1)) {
                return (a, b);
            }
        }
    }
    panic!("no free loopback port pair");
}

struct Tcpdump(std::process::Child);

impl Drop for Tcpdump {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn opus_loopback_capture_agrees_with_tshark() {
    testkit::require::e2e(
        "tcpdump on lo",
        &["tshark", "tcpdump", "ffmpeg", "espeak-ng"],
    );
    let dir = std::env::temp_dir().join(format!("pcap-harness-opus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let wav = dir.join("speech.wav");
    let st = Command::new("espeak-ng")
        .arg("-w")
        .arg(&wav)
        .arg("The backup takes over in the middle of this sentence, and nobody notices.")
        .status()
        .unwrap();
    assert!(st.success(), "espeak-ng failed");

    let mut run = None;
    for attempt in 1..=3 {
        match record_opus_call(&dir, &wav) {
            Ok(r) => {
                run = Some(r);
                break;
            }
            Err(stats) => eprintln!("attempt {attempt}: tcpdump dropped packets, again: {stats}"),
        }
    }
    let OpusRun {
        cap,
        seqs,
        rtp_port,
        uac_port,
        uas_port,
    } = run.expect("tcpdump dropped packets on 3 attempts");

    let wav_dir = dir.join("wav");
    let r = analyze_path_with(
        &cap,
        &Options {
            wav_dir: Some(wav_dir.clone()),
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(r.rtp_streams.len(), 1, "{:#?}", r.rtp_streams);
    let s = &r.rtp_streams[0];
    assert_eq!(s.ssrc, 305_419_896);
    assert_eq!(s.codec, "opus/48000/2");
    assert_eq!(s.codec_source, "sdp");
    assert_eq!(s.call_id.as_deref(), Some("opus-test-call"));
    assert_eq!(s.dst, format!("127.0.0.1:{rtp_port}"));
    // The capture agrees with what the socket received.
    assert_eq!(s.packets, seqs.len() as u64);
    assert_eq!((s.seq_first, s.seq_last), (seqs[0], *seqs.last().unwrap()));
    let span = i64::from(seqs.last().unwrap().wrapping_sub(seqs[0])) + 1;
    assert_eq!(s.lost, span - seqs.len() as i64, "socket saw {seqs:?}");
    assert_eq!((s.duplicates, s.reordered, s.seq_resets), (0, 0, 0));
    assert_eq!(s.frame_samples, Some(960), "20 ms Opus frames");
    assert_eq!(s.ts_errors, 0);
    assert!(s.packets > 100, "{}", s.packets);
    assert!(
        s.max_gap_ms < 200.0,
        "ffmpeg -re paces packets: {}",
        s.max_gap_ms
    );
    // Decoded speech: loud somewhere, silent in the 400 ms lead-in.
    assert!(s.decoded && s.decode_errors == 0);
    let max = s.energy_dbfs.iter().cloned().fold(f64::MIN, f64::max);
    assert!(max > -35.0, "speech should be loud: {:?}", s.energy_dbfs);
    assert!(
        s.energy_dbfs[1] < -60.0,
        "lead-in should be silent: {:?}",
        s.energy_dbfs
    );
    let wav_path = PathBuf::from(s.wav.as_ref().expect("wav written"));
    let reader = hound::WavReader::open(&wav_path).unwrap();
    assert_eq!(
        (reader.spec().sample_rate, reader.spec().channels),
        (48000, 1)
    );
    let secs = f64::from(reader.duration()) / 48000.0;
    // Placed by RTP timestamp: the WAV lasts as long as the media (20 ms per packet).
    assert!(
        (secs - s.expected as f64 * 0.02).abs() < 0.001,
        "wav {secs} s"
    );

    let d = r.dialog("opus-test-call").expect("dialog");
    let methods: Vec<String> = d
        .messages
        .iter()
        .map(|m| {
            m.method
                .clone()
                .unwrap_or_else(|| m.status.unwrap().to_string())
        })
        .collect();
    assert_eq!(methods, ["INVITE", "200", "ACK", "BYE"]);

    let rows = tshark_streams(
        &cap,
        &[
            "-d",
            &format!("udp.port=={uas_port},sip"),
            "-d",
            &format!("udp.port=={uac_port},sip"),
        ],
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(
        rows[0].payload.to_ascii_lowercase().contains("opus"),
        "tshark must know the codec: {rows:?}"
    );
    assert!(rows[0].max_jitter > 0.0 || s.jitter_ms == 0.0);
    assert_agrees(&cap, &r, &rows);
    // ffmpeg marks every Opus packet, so tshark's max delta / max jitter (which skip marker
    // packets) are 0 above. Clear the marker bits and compare the jitter for real.
    assert!(s.markers * 2 > s.packets, "ffmpeg marks every packet");
    assert!(s.max_gap_ms > 15.0 && s.jitter_max_all_ms > 0.0);
    let unmarked = dir.join("opus-unmarked.pcap");
    clear_marker_bits(&cap, &unmarked, rtp_port);
    let r2 = analyze_path(&unmarked).unwrap();
    let s2 = &r2.rtp_streams[0];
    assert_eq!(s2.markers, 0);
    assert!(s2.jitter_ms > 0.0 && s2.max_delta_ms > 15.0);
    assert_eq!(s2.max_delta_ms, s.max_gap_ms);
    assert_eq!(s2.jitter_ms, s.jitter_max_all_ms);
    let rows2 = tshark_streams(
        &unmarked,
        &[
            "-d",
            &format!("udp.port=={uas_port},sip"),
            "-d",
            &format!("udp.port=={uac_port},sip"),
        ],
    );
    assert!(rows2[0].max_jitter > 0.0, "{rows2:?}");
    assert_agrees(&unmarked, &r2, &rows2);
    eprintln!("opus vs tshark: {rows2:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Copy a capture, clearing the RTP marker bit of datagrams sent to `port`.
fn clear_marker_bits(src: &Path, dst: &Path, port: u16) {
    use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};
    let mut reader = PcapReader::new(std::fs::File::open(src).unwrap()).unwrap();
    let mut writer =
        PcapWriter::with_header(std::fs::File::create(dst).unwrap(), reader.header()).unwrap();
    while let Some(pkt) = reader.next_packet() {
        let pkt = pkt.unwrap();
        let mut data = pkt.data.to_vec();
        let marker_at = match etherparse::SlicedPacket::from_ethernet(&data) {
            Ok(etherparse::SlicedPacket {
                transport: Some(etherparse::TransportSlice::Udp(u)),
                ..
            }) if u.destination_port() == port => {
                Some(u.payload().as_ptr() as usize - data.as_ptr() as usize + 1)
            }
            _ => None,
        };
        if let Some(i) = marker_at {
            data[i] &= 0x7f;
        }
        writer
            .write_packet(&PcapPacket::new(pkt.timestamp, pkt.orig_len, &data))
            .unwrap();
    }
}

/// Synthetic streams with every defect the analyzer distinguishes, each checked against
/// tshark: wrap, loss across the wrap, reorder, duplicates, a long gap, arrival jitter,
/// mid-stream markers and comfort noise, on Ethernet/IPv6, SLL2 and raw IP.
#[test]
fn tshark_agrees_on_synthetic_defects() {
    use pcap_harness::net::*;
    use pcap_harness::writer::{rtp_packet, to_pcap, to_pcap_snaplen, to_pcapng, Datagram};
    testkit::require::tools(&["tshark"]);
    let dir = std::env::temp_dir().join(format!("pcap-harness-synth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // (arrival ms, seq, ts, marker, pt)
    type Q = (f64, u16, u32, bool, u8);
    let regular = |seq0: u16, n: usize| -> Vec<Q> {
        (0..n)
            .map(|i| {
                (
                    i as f64 * 20.0,
                    seq0.wrapping_add(i as u16),
                    4_294_960_000u32.wrapping_add(160 * i as u32),
                    false,
                    8,
                )
            })
            .collect()
    };
    let mut x: u64 = 12345;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % 10_000) as f64 / 10_000.0
    };
    let mut cases: Vec<(&str, Vec<Q>)> = Vec::new();
    cases.push(("wrap", regular(65500, 100)));
    let mut loss = regular(65530, 30);
    loss.retain(|q| !(65534..=65535).contains(&q.1) && q.1 != 3);
    cases.push(("loss-across-wrap", loss));
    let mut reorder = regular(1000, 50);
    reorder.swap(10, 11);
    reorder.swap(30, 32);
    for (i, q) in reorder.iter_mut().enumerate() {
        q.0 = i as f64 * 20.0;
    }
    cases.push(("reorder", reorder));
    let mut dups = regular(7, 40);
    let d = dups[20];
    dups.insert(21, (d.0 + 1.0, d.1, d.2, d.3, d.4));
    cases.push(("duplicates", dups));
    let mut gap = regular(500, 100);
    for q in gap.iter_mut().skip(50) {
        q.0 += 340.0;
    }
    gap.retain(|q| !(550..567).contains(&q.1));
    cases.push(("gap", gap));
    let mut jitter = regular(9000, 300);
    for q in jitter.iter_mut() {
        q.0 += rnd() * 15.0;
    }
    jitter.sort_by(|a, b| a.0.total_cmp(&b.0));
    cases.push(("jitter", jitter));
    let mut talk = regular(200, 120);
    for q in talk.iter_mut().skip(60) {
        q.0 += 400.0;
        q.2 = q.2.wrapping_add(3200);
    }
    talk[60].3 = true;
    talk[59].4 = 13; // comfort noise before the talkspurt
    cases.push(("markers-and-cn", talk));

    for (name, qs) in &cases {
        let dg = |src: &str, dst: &str| -> Vec<Datagram> {
            qs.iter()
                .map(|&(ms, seq, ts, m, pt)| Datagram {
                    time: Duration::from_secs(1_700_000_000)
                        + Duration::from_nanos((ms * 1e6) as u64),
                    src: src.parse().unwrap(),
                    dst: dst.parse().unwrap(),
                    payload: rtp_packet(pt, m, seq, ts, 0xFEED_0001, &[0xd5; 160]),
                })
                .collect()
        };
        let variants = [
            (
                "eth4.pcap",
                to_pcap(LINKTYPE_ETHERNET, &dg("10.1.1.1:4000", "10.1.1.2:5000")),
            ),
            (
                "eth6.pcapng",
                to_pcapng(
                    LINKTYPE_ETHERNET,
                    &dg("[2001:db8::1]:4000", "[2001:db8::2]:5000"),
                ),
            ),
            (
                "sll2.pcap",
                to_pcap(LINKTYPE_LINUX_SLL2, &dg("10.1.1.1:4000", "10.1.1.2:5000")),
            ),
            (
                "raw.pcap",
                to_pcap(LINKTYPE_RAW, &dg("10.1.1.1:4000", "10.1.1.2:5000")),
            ),
            (
                "snaplen64.pcap",
                to_pcap_snaplen(LINKTYPE_ETHERNET, &dg("10.1.1.1:4000", "10.1.1.2:5000"), 64),
            ),
        ];
        for (suffix, bytes) in variants {
            let f = dir.join(format!("{name}-{suffix}"));
            std::fs::write(&f, bytes).unwrap();
            let rows = tshark_streams(&f, &[]);
            assert_eq!(rows.len(), 1, "{}: {rows:?}", f.display());
            let r = analyze_path(&f).unwrap();
            assert_agrees(&f, &r, &rows);
            eprintln!("{name}-{suffix}: {:?}", rows[0]);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// One recorded call: the capture and what the receiving socket saw.
struct OpusRun {
    cap: PathBuf,
    seqs: Vec<u16>,
    rtp_port: u16,
    uac_port: u16,
    uas_port: u16,
}

/// Send a fake SIP call setup and ffmpeg's Opus RTP over loopback while tcpdump records.
/// `Err(tcpdump stats)` when tcpdump reports dropped packets (the machine was too busy).
fn record_opus_call(dir: &Path, wav: &Path) -> Result<OpusRun, String> {
    let (rtp_sock, rtcp_sock) = port_pair();
    let rtp_port = rtp_sock.local_addr().unwrap().port();
    // Ground truth: what the receiving socket got (sequence numbers in arrival order).
    rtp_sock
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let receiver = std::thread::spawn(move || {
        let mut seqs = Vec::new();
        let mut buf = [0u8; 2048];
        let mut got_any = false;
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            match rtp_sock.recv(&mut buf) {
                Ok(n) if n >= 12 => {
                    got_any = true;
                    seqs.push(u16::from_be_bytes([buf[2], buf[3]]));
                }
                Ok(_) => {}
                Err(_) if got_any => break,
                Err(_) => {}
            }
        }
        seqs
    });
    let uac = UdpSocket::bind("127.0.0.1:0").unwrap();
    let uas = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (uac_port, uas_port) = (
        uac.local_addr().unwrap().port(),
        uas.local_addr().unwrap().port(),
    );
    let cap = dir.join("opus.pcap");
    let filter = format!(
        "udp and (port {rtp_port} or port {} or port {uac_port} or port {uas_port})",
        rtp_port + 1
    );
    let mut child = Command::new("tcpdump")
        .args([
            "-i",
            "lo",
            "-U",
            "--immediate-mode",
            "-B",
            "32768",
            "-n",
            "-w",
        ])
        .arg(&cap)
        .arg(&filter)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tcpdump");
    let stats = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let stderr = child.stderr.take().unwrap();
    let tcpdump = Tcpdump(child);
    let mut lines = BufReader::new(stderr).lines();
    let started = Instant::now();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("listening on") => break,
            Some(Ok(_)) => {}
            _ => panic!("tcpdump did not start"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "tcpdump did not start"
        );
    }
    let stats2 = stats.clone();
    let stats_thread = std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            stats2.lock().unwrap().push_str(&l);
            stats2.lock().unwrap().push('\n');
        }
    });

    // A SIP exchange whose SDP tells both tools that PT 97 is opus/48000/2.
    let sdp = |port: u16| {
        format!("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 97\r\na=rtpmap:97 opus/48000/2\r\n")
    };
    let msg = |start: &str, cseq: &str, to_tag: &str, body: &str| {
        format!(
            "{start}\r\nVia: SIP/2.0/UDP 127.0.0.1:{uac_port};branch=z9hG4bKharness1\r\nFrom: <sip:caller@127.0.0.1>;tag=caller1\r\nTo: <sip:room@127.0.0.1>{to_tag}\r\nCall-ID: opus-test-call\r\nCSeq: {cseq}\r\nContact: <sip:caller@127.0.0.1:{uac_port}>\r\n{}Content-Length: {}\r\n\r\n{body}",
            if body.is_empty() { "" } else { "Content-Type: application/sdp\r\n" },
            body.len()
        )
    };
    let invite = msg(
        &format!("INVITE sip:room@127.0.0.1:{uas_port} SIP/2.0"),
        "1 INVITE",
        "",
        &sdp(rtp_port),
    );
    uac.send_to(invite.as_bytes(), ("127.0.0.1", uas_port))
        .unwrap();
    let ok = msg(
        "SIP/2.0 200 OK",
        "1 INVITE",
        ";tag=room1",
        &sdp(rtp_port + 100),
    );
    uas.send_to(ok.as_bytes(), ("127.0.0.1", uac_port)).unwrap();
    let ack = msg(
        &format!("ACK sip:room@127.0.0.1:{uas_port} SIP/2.0"),
        "1 ACK",
        ";tag=room1",
        "",
    );
    uac.send_to(ack.as_bytes(), ("127.0.0.1", uas_port))
        .unwrap();

    let st = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-re",
            "-i",
        ])
        .arg(wav)
        .args([
            "-af",
            "adelay=400,apad=pad_dur=0.3",
            "-ar",
            "48000",
            "-ac",
            "1",
        ])
        .args([
            "-c:a",
            "libopus",
            "-b:a",
            "32k",
            "-payload_type",
            "97",
            "-ssrc",
            "305419896",
        ])
        .args(["-f", "rtp"])
        .arg(format!("rtp://127.0.0.1:{rtp_port}"))
        .status()
        .unwrap();
    assert!(st.success(), "ffmpeg failed");
    let bye = msg(
        &format!("BYE sip:room@127.0.0.1:{uas_port} SIP/2.0"),
        "2 BYE",
        ";tag=room1",
        "",
    );
    uac.send_to(bye.as_bytes(), ("127.0.0.1", uas_port))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut tcpdump = tcpdump;
    // SIGINT (by pid, the child we started) lets tcpdump flush and close the file.
    let _ = Command::new("kill")
        .args(["-INT", &tcpdump.0.id().to_string()])
        .status();
    let _ = tcpdump.0.wait();
    let _ = stats_thread.join();
    let stats = stats.lock().unwrap().clone();
    if !stats
        .lines()
        .any(|l| l.trim() == "0 packets dropped by kernel")
    {
        return Err(stats);
    }
    let seqs = receiver.join().unwrap();
    drop(rtcp_sock);
    Ok(OpusRun {
        cap,
        seqs,
        rtp_port,
        uac_port,
        uas_port,
    })
}

/// Real `tcpdump -i any` captures (Linux cooked v2, and v1 with `-y LINUX_SLL`) of RTP over
/// IPv6 loopback, cross-checked with tshark.
#[test]
fn tcpdump_any_sll_sll2_ipv6_agree_with_tshark() {
    testkit::require::e2e("tcpdump -i any", &["tcpdump", "tshark"]);
    let dir = std::env::temp_dir().join(format!("pcap-harness-any-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (linktype, encap) in [("LINUX_SLL2", 276u32), ("LINUX_SLL", 113)] {
        let rx = UdpSocket::bind("[::1]:0").unwrap();
        let tx = UdpSocket::bind("[::1]:0").unwrap();
        let port = rx.local_addr().unwrap().port();
        let cap = dir.join(format!("{linktype}.pcap"));
        let mut child = Command::new("tcpdump")
            .args([
                "-i",
                "any",
                "-y",
                linktype,
                "-U",
                "--immediate-mode",
                "-B",
                "32768",
                "-n",
                "-w",
            ])
            .arg(&cap)
            .arg(format!("udp and port {port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tcpdump");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let guard = Tcpdump(child);
        for l in lines.by_ref() {
            if l.unwrap().contains("listening on") {
                break;
            }
        }
        // 60 PCMU packets at 20 ms, one lost (seq 30), one duplicated (seq 40).
        for i in 0..60u16 {
            if i == 30 {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            let pkt = pcap_harness::writer::rtp_packet(
                0,
                false,
                1000 + i,
                160 * u32::from(i),
                0xABC,
                &[0xff; 160],
            );
            tx.send_to(&pkt, rx.local_addr().unwrap()).unwrap();
            if i == 40 {
                tx.send_to(&pkt, rx.local_addr().unwrap()).unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        let mut guard = guard;
        let _ = Command::new("kill")
            .args(["-INT", &guard.0.id().to_string()])
            .status();
        let _ = guard.0.wait();
        let stats: String = lines.map_while(Result::ok).collect::<Vec<_>>().join("\n");
        if !stats
            .lines()
            .any(|l| l.trim() == "0 packets dropped by kernel")
        {
            eprintln!("tcpdump dropped packets, skipping {linktype}: {stats}");
            continue;
        }
        let data = std::fs::read(&cap).unwrap();
        assert_eq!(
            u32::from_le_bytes([data[20], data[21], data[22], data[23]]),
            encap
        );
        let r = analyze_path(&cap).unwrap();
        assert_eq!(r.rtp_streams.len(), 1, "{linktype}");
        let s = &r.rtp_streams[0];
        assert_eq!(s.src, tx.local_addr().unwrap().to_string());
        assert_eq!(
            (s.packets, s.lost, s.missing, s.duplicates),
            (60, 0, 1, 1),
            "{linktype}"
        );
        assert_eq!(s.codec, "PCMU/8000");
        assert_agrees(&cap, &r, &tshark_streams(&cap, &[]));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// pcapng as Wireshark writes it (mergecap: two interfaces, Ethernet + Ethernet, SHB/IDB
/// options), cross-checked with tshark.
#[test]
fn mergecap_pcapng_agrees_with_tshark() {
    let g711 = Path::new(SIPP_DIR).join("g711a.pcap");
    let dtmf = Path::new(SIPP_DIR).join("dtmf_2833_5.pcap");
    testkit::require::tools(&["mergecap", "tshark"]);
    require(
        g711.exists() && dtmf.exists(),
        "sipp captures (package sip-tester)",
    );
    let out =
        std::env::temp_dir().join(format!("pcap-harness-merged-{}.pcapng", std::process::id()));
    let st = Command::new("mergecap")
        .args(["-F", "pcapng", "-w"])
        .arg(&out)
        .arg(&g711)
        .arg(&dtmf)
        .status()
        .unwrap();
    assert!(st.success());
    let r = analyze_path(&out).unwrap();
    assert_eq!(r.format, "pcapng");
    assert_eq!(r.frames, 246);
    assert_eq!(r.rtp_streams.len(), 2);
    assert_agrees(&out, &r, &tshark_streams(&out, &[]));
    let _ = std::fs::remove_file(&out);
}
