//! Replay end to end on loopback against a scripted SIP/RTP peer in the test: the
//! participants register as real calls, send re-stamped media with the recorded timing,
//! answer or send BYE, and the output capture holds what they received.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pcap_harness::analyze_path;
use pcap_harness::net::LINKTYPE_ETHERNET;
use pcap_harness::replay::{media::Impairments, run_replay, ReplayConfig};
use pcap_harness::rtp::parse_rtp;
use pcap_harness::writer::{rtp_packet, to_pcap, Datagram};

/// What the fake conference saw per source address: (ssrc, seq, ts, pt).
type Seen = Arc<Mutex<HashMap<SocketAddr, Vec<(u32, u16, u32, u8)>>>>;

struct FakeServer {
    sip_addr: SocketAddr,
    seen: Seen,
    sip_log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    msg.lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
        })
        .unwrap_or("")
}

/// A minimal conference: answers INVITE (100, 200 with SDP), answers BYE, echoes RTP back
/// with its own SSRC, and sends BYE itself after `bye_after` RTP packets from a caller.
fn fake_server(bye_after: Option<usize>) -> FakeServer {
    let sip = UdpSocket::bind("127.0.0.1:0").unwrap();
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sip_addr = sip.local_addr().unwrap();
    let rtp_addr = rtp.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let sip_log: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    sip.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    rtp.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    // Dialogs by caller RTP address -> (caller SIP address, INVITE text).
    let dialogs: Arc<Mutex<HashMap<SocketAddr, (SocketAddr, String)>>> = Arc::default();
    {
        let (stop, log, dialogs) = (stop.clone(), sip_log.clone(), dialogs.clone());
        let sip = sip.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, from)) = sip.recv_from(&mut buf) else {
                    continue;
                };
                let msg = String::from_utf8_lossy(&buf[..n]).to_string();
                let first = msg.lines().next().unwrap_or("").to_string();
                log.lock().unwrap().push(first.clone());
                let reply = |status: &str, body: &str| {
                    let mut r = format!("SIP/2.0 {status}\r\n");
                    for h in ["Via", "From", "Call-ID", "CSeq"] {
                        r.push_str(header(&msg, h));
                        r.push_str("\r\n");
                    }
                    let to = header(&msg, "To");
                    if to.contains("tag=") || status.starts_with("100") {
                        r.push_str(to);
                    } else {
                        r.push_str(&format!("{to};tag=conf"));
                    }
                    r.push_str(&format!("\r\nContact: <sip:room@{sip_addr}>\r\n"));
                    if !body.is_empty() {
                        r.push_str("Content-Type: application/sdp\r\n");
                    }
                    r.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
                    r
                };
                if first.starts_with("INVITE") {
                    let m = msg.lines().find(|l| l.starts_with("m=audio")).unwrap();
                    let port: u16 = m.split_whitespace().nth(1).unwrap().parse().unwrap();
                    let caller_rtp = SocketAddr::new(from.ip(), port);
                    dialogs
                        .lock()
                        .unwrap()
                        .insert(caller_rtp, (from, msg.clone()));
                    sip.send_to(reply("100 Trying", "").as_bytes(), from)
                        .unwrap();
                    let sdp = format!(
                        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=conf\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n",
                        rtp_addr.port()
                    );
                    sip.send_to(reply("200 OK", &sdp).as_bytes(), from).unwrap();
                } else if first.starts_with("BYE") {
                    sip.send_to(reply("200 OK", "").as_bytes(), from).unwrap();
                }
            }
        });
    }
    {
        let (stop, seen, dialogs) = (stop.clone(), seen.clone(), dialogs.clone());
        let sip = sip.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            let mut byes_sent: Vec<SocketAddr> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, from)) = rtp.recv_from(&mut buf) else {
                    continue;
                };
                let Some(h) = parse_rtp(&buf[..n]) else {
                    continue;
                };
                let count = {
                    let mut s = seen.lock().unwrap();
                    let v = s.entry(from).or_default();
                    v.push((h.ssrc, h.seq, h.ts, h.pt));
                    v.len()
                };
                let server_ssrc = 0x5E5E_0000 + u32::from(from.port());
                let echo = rtp_packet(
                    8,
                    h.marker,
                    h.seq,
                    h.ts,
                    server_ssrc,
                    &buf[h.payload_offset..h.payload_offset + h.payload_len],
                );
                rtp.send_to(&echo, from).unwrap();
                if Some(count) == bye_after && !byes_sent.contains(&from) {
                    byes_sent.push(from);
                    let (caller_sip, invite) = dialogs.lock().unwrap()[&from].clone();
                    let bye = format!(
                        "BYE sip:x@{caller_sip} SIP/2.0\r\nVia: SIP/2.0/UDP {sip_addr};branch=z9hG4bKconfbye\r\nFrom: {};tag=conf\r\n{}\r\n{}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
                        header(&invite, "To").trim_start_matches("To:").trim(),
                        header(&invite, "From").replacen("From:", "To:", 1),
                        header(&invite, "Call-ID"),
                    );
                    sip.send_to(bye.as_bytes(), caller_sip).unwrap();
                }
            }
        });
    }
    FakeServer {
        sip_addr,
        seen,
        sip_log,
        stop,
    }
}

fn input_capture(dir: &std::path::Path, n: u16) -> std::path::PathBuf {
    let d: Vec<Datagram> = (0..n)
        .map(|i| Datagram {
            time: Duration::from_secs(1_700_000_000) + Duration::from_millis(20 * u64::from(i)),
            src: "10.0.0.1:4000".parse().unwrap(),
            dst: "10.0.0.2:5000".parse().unwrap(),
            payload: rtp_packet(
                8,
                i == 0,
                65500u16.wrapping_add(i),
                160 * u32::from(i),
                0xC0FFEE,
                &[0xd5 ^ (i as u8); 160],
            ),
        })
        .collect();
    let p = dir.join("in.pcap");
    std::fs::write(&p, to_pcap(LINKTYPE_ETHERNET, &d)).unwrap();
    p
}

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("pcap-harness-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn config(input: std::path::PathBuf, server: SocketAddr, out: std::path::PathBuf) -> ReplayConfig {
    ReplayConfig {
        files: vec![input],
        to: format!("sip:room@{server}"),
        out: Some(out),
        bind: Some("127.0.0.1".parse().unwrap()),
        count: 2,
        looping: false,
        duration: None,
        impair: Impairments::default(),
        seed: 7,
        ssrcs: vec![],
        pt_hints: HashMap::new(),
        record_sent: false,
    }
}

#[test]
fn two_participants_call_send_media_and_hang_up() {
    let dir = tmpdir("replay");
    let server = fake_server(None);
    let input = input_capture(&dir, 80);
    let out = dir.join("out.pcap");
    let (summaries, notes) = run_replay(&config(input, server.sip_addr, out.clone())).unwrap();
    server.stop.store(true, Ordering::Relaxed);
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(summaries.len(), 2);
    for s in &summaries {
        assert!(s.established, "{s:?}");
        assert_eq!(s.rtp_sent, 80);
        assert_eq!(s.end_reason, "BYE answered with 200");
        assert_eq!(s.codec, "PCMA/8000");
        assert_eq!(s.source_ssrc, 0xC0FFEE);
    }
    assert_ne!(summaries[0].ssrc, summaries[1].ssrc);
    assert_ne!(summaries[0].call_id, summaries[1].call_id);

    // What the conference received: each participant its own SSRC, no gaps, 20 ms of
    // PCMA per packet, re-stamped (not the recorded SSRC).
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for pkts in seen.values() {
        assert_eq!(pkts.len(), 80);
        assert_ne!(pkts[0].0, 0xC0FFEE);
        for w in pkts.windows(2) {
            assert_eq!(w[0].0, w[1].0);
            assert_eq!(w[1].1, w[0].1.wrapping_add(1));
            assert_eq!(w[1].2.wrapping_sub(w[0].2), 160);
            assert_eq!(w[1].3, 8);
        }
    }
    let log = server.sip_log.lock().unwrap().clone();
    assert_eq!(
        log.iter().filter(|l| l.starts_with("INVITE")).count(),
        2,
        "{log:?}"
    );
    assert_eq!(
        log.iter().filter(|l| l.starts_with("ACK")).count(),
        2,
        "{log:?}"
    );
    assert_eq!(
        log.iter().filter(|l| l.starts_with("BYE")).count(),
        2,
        "{log:?}"
    );

    // The output capture: the echoed streams as the participants received them, plus SIP.
    let r = analyze_path(&out).unwrap();
    assert_eq!(r.rtp_streams.len(), 2, "{:#?}", r.rtp_streams);
    for s in &r.rtp_streams {
        assert_eq!(
            (s.packets, s.lost, s.duplicates, s.reordered),
            (80, 0, 0, 0)
        );
        assert!(s.ssrc >> 16 == 0x5E5E);
        assert!(s.max_gap_ms < 100.0, "{}", s.max_gap_ms);
        assert!(
            (s.last_time - s.first_time - 1.58).abs() < 0.2,
            "recorded timing kept"
        );
    }
    assert_eq!(r.sip_dialogs.len(), 2);
    for d in &r.sip_dialogs {
        let m: Vec<String> = d
            .messages
            .iter()
            .map(|m| {
                m.method
                    .clone()
                    .unwrap_or_else(|| m.status.unwrap().to_string())
            })
            .collect();
        assert_eq!(m, ["INVITE", "100", "200", "ACK", "BYE", "200"]);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn server_bye_is_answered_and_media_stops() {
    let dir = tmpdir("replay-bye");
    let server = fake_server(Some(20));
    let input = input_capture(&dir, 200);
    let out = dir.join("out.pcap");
    let mut cfg = config(input, server.sip_addr, out.clone());
    cfg.count = 1;
    cfg.looping = true;
    let (summaries, _) = run_replay(&cfg).unwrap();
    server.stop.store(true, Ordering::Relaxed);
    let s = &summaries[0];
    assert_eq!(s.end_reason, "BYE from the server");
    assert!(s.rtp_sent >= 20 && s.rtp_sent < 40, "{}", s.rtp_sent);
    let r = analyze_path(&out).unwrap();
    let d = &r.sip_dialogs[0];
    let last = d.messages.last().unwrap();
    assert_eq!((last.status, last.cseq_method.as_str()), (Some(200), "BYE"));
    assert_eq!(
        d.messages
            .iter()
            .filter(|m| m.method.as_deref() == Some("BYE"))
            .count(),
        1,
        "no BYE of our own"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn impairments_are_seeded_and_visible_in_the_received_capture() {
    let dir = tmpdir("replay-impair");
    let input = input_capture(&dir, 150);
    let run = |seed: u64| {
        let server = fake_server(None);
        let out = dir.join(format!("out-{seed}.pcap"));
        let mut cfg = config(input.clone(), server.sip_addr, out.clone());
        cfg.count = 1;
        cfg.seed = seed;
        cfg.impair = Impairments {
            loss: 0.1,
            dup: 0.05,
            reorder: 0.05,
            jitter: Duration::from_millis(4),
        };
        let (summaries, _) = run_replay(&cfg).unwrap();
        server.stop.store(true, Ordering::Relaxed);
        let seen: Vec<u16> = server
            .seen
            .lock()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .iter()
            .map(|x| x.1)
            .collect();
        (summaries[0].clone(), seen, analyze_path(&out).unwrap())
    };
    let (s1, seen1, r1) = run(11);
    let (_, seen2, _) = run(11);
    assert_eq!(seen1, seen2, "same seed, same impairments");
    assert_eq!(s1.rtp_sent, seen1.len() as u64);
    // The echo of what the conference got, as the participant recorded it.
    let e = &r1.rtp_streams[0];
    let mut distinct = seen1.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(e.packets, seen1.len() as u64);
    assert_eq!(e.duplicates, (seen1.len() - distinct.len()) as u64);
    assert!(
        e.duplicates > 0 && e.missing > 0 && e.reordered > 0,
        "{e:?}"
    );
    assert!(
        e.missing > 5 && e.missing < 30,
        "~10% of 150: {}",
        e.missing
    );
    let (_, seen3, _) = run(12);
    assert_ne!(seen1, seen3, "another seed, other impairments");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cli_replay_runs_end_to_end() {
    let dir = tmpdir("replay-cli");
    let server = fake_server(None);
    let input = input_capture(&dir, 30);
    let out = dir.join("out.pcap");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_pcap-harness"))
        .arg("replay")
        .arg(&input)
        .args(["--to", &format!("sip:room@{}", server.sip_addr)])
        .args(["--bind", "127.0.0.1", "--count", "3", "--json", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    server.stop.store(true, Ordering::Relaxed);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let p = v["participants"].as_array().unwrap();
    assert_eq!(p.len(), 3);
    assert!(p
        .iter()
        .all(|x| x["established"] == true && x["rtp_sent"] == 30));
    let r = analyze_path(&out).unwrap();
    assert_eq!(r.rtp_streams.len(), 3);
    assert_eq!(r.sip_dialogs.len(), 3);
    let _ = std::fs::remove_dir_all(&dir);
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Against a real SIP stack: sipp's built-in UAS (180, 200 with SDP, expects our ACK and
/// BYE) with RTP echo. sipp exits 0 only if the call went as its scenario expects.
#[test]
fn replay_against_sipp_uas_with_rtp_echo() {
    testkit::require::tools(&["sipp"]);
    let dir = tmpdir("replay-sipp");
    let input = input_capture(&dir, 100);
    let (sip_port, media_port) = (free_udp_port(), free_udp_port());
    let mut sipp = std::process::Command::new("sipp")
        .args(["-sn", "uas", "-i", "127.0.0.1", "-p", &sip_port.to_string()])
        .args([
            "-mi",
            "127.0.0.1",
            "-mp",
            &media_port.to_string(),
            "-rtp_echo",
        ])
        .args(["-m", "1", "-nostdin", "-timeout", "30s"])
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn sipp");
    // sipp listens once its SIP port is taken.
    let listening = testkit::poll(Duration::from_secs(10), || {
        testkit::process::udp_port_bound(sip_port).then_some(())
    });
    assert!(
        listening.is_some(),
        "sipp did not bind its SIP port {sip_port}"
    );
    let out = dir.join("out.pcap");
    let server: SocketAddr = format!("127.0.0.1:{sip_port}").parse().unwrap();
    let mut cfg = config(input, server, out.clone());
    cfg.count = 1;
    let (summaries, notes) = run_replay(&cfg).unwrap();
    let status = sipp.wait().unwrap();
    assert!(status.success(), "sipp's UAS scenario failed: {status}");
    assert!(notes.is_empty(), "{notes:?}");
    let s = &summaries[0];
    assert!(s.established);
    assert_eq!(s.end_reason, "BYE answered with 200");
    assert_eq!(s.rtp_sent, 100);
    let r = analyze_path(&out).unwrap();
    let echo = &r.rtp_streams[0];
    assert_eq!(echo.src, format!("127.0.0.1:{media_port}"));
    assert_eq!(echo.ssrc, s.ssrc, "sipp echoes our packets as they are");
    assert_eq!((echo.packets, echo.lost), (100, 0));
    let m: Vec<String> = r.sip_dialogs[0]
        .messages
        .iter()
        .map(|m| {
            m.method
                .clone()
                .unwrap_or_else(|| m.status.unwrap().to_string())
        })
        .collect();
    assert_eq!(m, ["INVITE", "180", "200", "ACK", "BYE", "200"]);
    let _ = std::fs::remove_dir_all(&dir);
}
