//! End to end with real peers over loopback: three sipp UACs playing sipp's real recorded
//! G.711 A-law capture (30 ms frames, then RFC 2833 DTMF '1') and one baresip speaking Opus
//! (espeak-ng speech) in one room. tcpdump records what the server sends to each client and
//! `pcap-harness` (the project's analyzer) checks what each client observed.

mod common;
use common::{require_tools, Capture, Scratch, Server};
use std::process::{Command, Stdio};
use std::time::Duration;

const SIP_PORT: u16 = 25070;
const HTTP_PORT: u16 = 28090;
const RTP_RANGE: &str = "31100-31199";
const SIPP_PORTS: [(u16, u16); 3] = [(25101, 26000), (25102, 26010), (25103, 26020)];
const BARESIP_SIP: u16 = 25110;
const BARESIP_RTP: (u16, u16) = (26100, 26199);

fn sh(cmd: &mut Command) {
    let st = cmd.status().expect("spawn");
    assert!(st.success(), "{cmd:?} failed: {st}");
}

#[test]
fn three_sipp_and_baresip_in_one_room() {
    if !require_tools(&["sipp", "baresip", "tcpdump", "espeak-ng", "ffmpeg"]) {
        return;
    }
    if !common::is_root() {
        assert!(
            std::env::var("CI").is_err(),
            "CI runs as root; tcpdump needs it"
        );
        eprintln!("SKIPPING: tcpdump on lo needs root");
        return;
    }
    let dir = Scratch::new("e2e-conference");

    // sipp's own uac_pcap scenario, with the recorded captures' absolute paths.
    let scen = Command::new("sipp")
        .args(["-sd", "uac_pcap"])
        .output()
        .unwrap();
    let scen = String::from_utf8(scen.stdout)
        .unwrap()
        .replace("pcap/", "/usr/share/sip-tester/");
    std::fs::write(dir.path("uac_pcap.xml"), scen).unwrap();

    // baresip: Opus, speech from a wav (48 kHz stereo, as its aufile source requires).
    sh(Command::new("espeak-ng").arg("-w").arg(dir.path("raw.wav")).arg(
        "This is the baresip participant speaking in the conference room. One two three four five. \
         The quick brown fox jumps over the lazy dog. Testing the mixer once again.",
    ));
    sh(Command::new("ffmpeg")
        .args(["-y", "-loglevel", "error", "-i"])
        .arg(dir.path("raw.wav"))
        .args(["-ar", "48000", "-ac", "2"])
        .arg(dir.path("speech.wav")));

    let cap = Capture::start(
        &dir.path("server.pcap"),
        &format!("udp and (port {SIP_PORT} or portrange {RTP_RANGE})"),
    );
    let mut srv = Server::start(SIP_PORT, HTTP_PORT, RTP_RANGE, &["--seed", "42"]);

    let mut baresip = common::baresip_dial(
        &dir.0,
        BARESIP_SIP,
        BARESIP_RTP,
        &dir.path("speech.wav"),
        &format!("sip:standup@127.0.0.1:{SIP_PORT}"),
        25,
    );
    let mut sipps: Vec<_> = SIPP_PORTS
        .iter()
        .map(|(sip, media)| {
            Command::new("sipp")
                .arg("-sf")
                .arg(dir.path("uac_pcap.xml"))
                .args([
                    "-s",
                    "standup",
                    "-i",
                    "127.0.0.1",
                    "-p",
                    &sip.to_string(),
                    "-mp",
                    &media.to_string(),
                ])
                .args([
                    "-m",
                    "1",
                    "-l",
                    "1",
                    "-nostdin",
                    "-timeout",
                    "40s",
                    "-timeout_error",
                ])
                .arg(format!("127.0.0.1:{SIP_PORT}"))
                .current_dir(&dir.0)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn sipp")
        })
        .collect();

    // All four in the room: the server logs each join; then the admin API shows them.
    for _ in 0..4 {
        srv.wait_log("joined room", Duration::from_secs(15));
        srv.log_lines.retain(|l| !l.contains("joined room"));
    }
    let (code, rooms) = srv.get("/api/rooms");
    assert_eq!(code, 200);
    let rooms: serde_json::Value = serde_json::from_str(&rooms).unwrap();
    let parts = rooms["rooms"][0]["participants"]
        .as_object()
        .expect("participants");
    assert_eq!(rooms["rooms"][0]["name"], "standup");
    assert_eq!(parts.len(), 4, "{rooms:#}");
    let codecs: Vec<_> = parts
        .values()
        .map(|p| p["codec"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        codecs.iter().filter(|c| *c == "PCMA").count(),
        3,
        "{codecs:?}"
    );
    assert_eq!(
        codecs.iter().filter(|c| *c == "OPUS").count(),
        1,
        "{codecs:?}"
    );
    let api_ssrcs: std::collections::BTreeSet<u64> = parts
        .values()
        .map(|p| p["ssrc_out"].as_u64().expect("ssrc_out"))
        .collect();
    assert_eq!(api_ssrcs.len(), 4, "distinct output SSRCs: {rooms:#}");

    for (i, s) in sipps.iter_mut().enumerate() {
        let st = common::wait_timeout(s, Duration::from_secs(45)).expect("sipp finishes");
        assert!(
            st.success(),
            "sipp #{i} failed its call (exit {st}): INVITE/200/ACK/BYE/200 expected"
        );
    }
    let st = common::wait_timeout(&mut baresip, Duration::from_secs(30)).expect("baresip finishes");
    assert!(st.success(), "baresip exit {st}");

    // DTMF '1' from each sipp (the recorded RFC 2833 capture) is surfaced in the API.
    let (_, events) = srv.get("/api/events");
    let events: serde_json::Value = serde_json::from_str(&events).unwrap();
    let dtmf: Vec<_> = events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event"].get("Dtmf"))
        .collect();
    assert_eq!(dtmf.len(), 3, "{events:#}");
    assert!(dtmf.iter().all(|d| d["digit"] == "1"), "{dtmf:?}");

    assert!(srv.terminate().success(), "server exits 0 on SIGTERM");
    let pcap = cap.stop();
    let report = pcap_harness::analyze_path(&pcap).expect("analyze capture");

    // What each client observed from the server.
    let server_ip = "127.0.0.1";
    let mut clients: Vec<String> = SIPP_PORTS
        .iter()
        .map(|(_, m)| format!("{server_ip}:{m}"))
        .collect();
    let baresip_dst = report
        .rtp_streams
        .iter()
        .map(|s| s.dst.clone())
        .find(|d| {
            d.rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_some_and(|p| (BARESIP_RTP.0..=BARESIP_RTP.1).contains(&p))
        })
        .expect("server sent RTP to baresip");
    clients.push(baresip_dst);
    let server_port = |s: &str| {
        s.rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .unwrap()
    };
    for client in &clients {
        let streams: Vec<_> = report
            .rtp_streams
            .iter()
            .filter(|s| &s.dst == client && (31100..=31199).contains(&server_port(&s.src)))
            .collect();
        assert_eq!(
            streams.len(),
            1,
            "exactly one server stream (one SSRC) to {client}: {streams:#?}"
        );
        let s = streams[0];
        assert!(
            api_ssrcs.contains(&(s.ssrc as u64)),
            "{client}: the SSRC on the wire ({:#x}) is the one /api/rooms reports",
            s.ssrc
        );
        eprintln!(
            "to {client}: ssrc {:#010x} {} pkts lost {} dup {} reo {} ts_err {} max_gap {:.1} ms jitter {:.2} ms",
            s.ssrc, s.packets, s.lost, s.duplicates, s.reordered, s.ts_errors, s.max_gap_ms, s.jitter_ms
        );
        assert!(s.packets > 300, "{client}: {} packets", s.packets);
        assert_eq!(
            (s.lost, s.duplicates, s.reordered, s.seq_resets),
            (0, 0, 0, 0),
            "{client}: {s:#?}"
        );
        assert_eq!(
            s.ts_errors, 0,
            "{client}: timestamps inconsistent: {:?}",
            s.ts_error_list
        );
        assert!(
            s.max_gap_ms < 100.0,
            "{client}: gap {} ms at {}",
            s.max_gap_ms,
            s.max_gap_at
        );
        assert!(
            s.decoded && s.decode_errors == 0,
            "{client}: decodable audio: {s:#?}"
        );
        let loud = s.energy_dbfs.iter().filter(|e| **e > -40.0).count();
        assert!(
            loud >= 20,
            "{client}: only {loud} windows of 100 ms with speech energy: {:?}",
            s.energy_dbfs
        );
        // RTCP for that stream: sender reports with its SSRC, and a BYE when the call ended.
        let rtcp: Vec<_> = report
            .rtcp_flows
            .iter()
            .filter(|f| f.sender_ssrcs.contains(&s.ssrc))
            .collect();
        assert!(
            !rtcp.is_empty(),
            "{client}: no RTCP from the server for ssrc {:#x}",
            s.ssrc
        );
        assert!(
            rtcp.iter()
                .any(|f| f.packet_types.iter().any(|(pt, n)| *pt == 200 && *n >= 1)),
            "{client}: SR: {rtcp:#?}"
        );
        assert!(
            rtcp.iter().any(|f| f.bye_ssrcs.contains(&s.ssrc)),
            "{client}: RTCP BYE: {rtcp:#?}"
        );
    }

    // Every call ended cleanly: a BYE answered by 200 in each of the four dialogs.
    assert_eq!(report.sip_dialogs.len(), 4, "{:#?}", report.sip_dialogs);
    for d in &report.sip_dialogs {
        let bye = d
            .messages
            .iter()
            .position(|m| m.method.as_deref() == Some("BYE"))
            .expect("BYE");
        assert!(
            d.messages[bye..]
                .iter()
                .any(|m| m.status == Some(200) && m.cseq_method == "BYE"),
            "BYE answered with 200 in {}",
            d.call_id
        );
    }
}
