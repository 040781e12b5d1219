//! End to end with real peers over loopback: three sipp UACs playing sipp's real recorded
//! G.711 A-law capture (30 ms frames, then RFC 2833 DTMF '1') and one baresip speaking Opus
//! (espeak-ng speech) in one room of an in-process server ([`TestServer`]). tcpdump records
//! what the server sends to each client and `pcap-harness` (the project's analyzer) checks
//! what each client observed.

mod common;
use common::{args, TestServer};
use mcu::config::ServeArgs;
use std::time::Duration;
use testkit::capture::Capture;
use testkit::peers;
use testkit::process::wait_timeout;
use testkit::Scratch;

const RTP_RANGE: (u16, u16) = (31100, 31199);
const SIPP_PORTS: [(u16, u16); 3] = [(25101, 26000), (25102, 26010), (25103, 26020)];
const BARESIP_SIP: u16 = 25110;
const BARESIP_RTP: (u16, u16) = (26100, 26199);

#[test]
fn three_sipp_and_baresip_in_one_room() {
    testkit::require::e2e(
        "tcpdump on lo",
        &["sipp", "baresip", "tcpdump", "espeak-ng", "ffmpeg"],
    );
    let dir = Scratch::new("e2e-conference");

    // sipp's own uac_pcap scenario, with the recorded captures' absolute paths.
    let scen = peers::uac_pcap_scenario(&dir.0);

    // baresip: Opus, speech from a wav (48 kHz stereo, as its aufile source requires).
    let raw = peers::espeak(
        &dir.0,
        "raw.wav",
        "This is the baresip participant speaking in the conference room. One two three four five. \
         The quick brown fox jumps over the lazy dog. Testing the mixer once again.",
    );
    peers::to_48k_stereo(&raw, &dir.path("speech.wav"), None);

    let mut srv = TestServer::start(ServeArgs {
        seed: Some(42),
        ..args(&format!("{}-{}", RTP_RANGE.0, RTP_RANGE.1))
    });
    let sip_port = srv.sip.port();
    let cap = Capture::start(
        &dir.path("server.pcap"),
        &format!(
            "udp and (port {sip_port} or portrange {}-{})",
            RTP_RANGE.0, RTP_RANGE.1
        ),
    );

    let mut baresip = peers::baresip_dial(
        &dir.0,
        BARESIP_SIP,
        BARESIP_RTP,
        &dir.path("speech.wav"),
        &format!("sip:standup@{}", srv.sip),
        25,
    );
    let mut sipps: Vec<_> = SIPP_PORTS
        .iter()
        .map(|(sip, media)| peers::sipp(&scen, "standup", *sip, *media, false, srv.sip, &dir.0))
        .collect();

    // All four in the room: the server logs each join; then the admin API shows them.
    srv.log
        .wait_count("joined room", 4, Duration::from_secs(30))
        .expect("all four joined");
    let rooms = srv.wait_participants(4, Duration::from_secs(5));
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
        let st = wait_timeout(s, Duration::from_secs(45)).expect("sipp finishes");
        assert!(
            st.success(),
            "sipp #{i} failed its call (exit {st}): INVITE/200/ACK/BYE/200 expected"
        );
    }
    let st = wait_timeout(&mut baresip, Duration::from_secs(30)).expect("baresip finishes");
    assert!(st.success(), "baresip exit {st}");

    // DTMF '1' from each sipp (the recorded RFC 2833 capture) is surfaced in the API.
    let events = srv.get_json("/api/events");
    let dtmf: Vec<_> = events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event"].get("Dtmf"))
        .collect();
    assert_eq!(dtmf.len(), 3, "{events:#}");
    assert!(dtmf.iter().all(|d| d["digit"] == "1"), "{dtmf:?}");

    srv.shutdown().expect("server stops cleanly on shutdown");
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
            .filter(|s| {
                &s.dst == client && (RTP_RANGE.0..=RTP_RANGE.1).contains(&server_port(&s.src))
            })
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
