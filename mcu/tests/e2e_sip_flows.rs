//! SIP flows with real sipp peers over loopback: TCP transport, hold/resume by re-INVITE,
//! offerless INVITE (offer in 200, answer in ACK), and BYE to everyone on SIGTERM. Media is
//! checked on a tcpdump capture with the project's analyzer. The server runs in-process
//! ([`TestServer`]), except for the SIGTERM test, which is about the binary's own signal
//! handling.

mod common;
use common::{args, scenario, Server, TestServer};
use mcu::config::ServeArgs;
use pcap_harness::RtpStream;
use std::time::Duration;
use testkit::capture::Capture;
use testkit::peers::{sipp, uac_pcap_scenario};
use testkit::process::expect_success;
use testkit::Scratch;

fn server_streams_to<'a>(
    r: &'a pcap_harness::Report,
    client: &str,
    lo: u16,
    hi: u16,
) -> Vec<&'a RtpStream> {
    r.rtp_streams
        .iter()
        .filter(|s| {
            s.dst == client
                && s.src
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<u16>().ok())
                    .is_some_and(|p| (lo..=hi).contains(&p))
        })
        .collect()
}

/// What these tests need: sipp, and tcpdump on lo (root).
fn ready() {
    testkit::require::e2e("tcpdump on lo", &["sipp", "tcpdump"]);
}

/// A [`TestServer`] with media ports in `rtp` and a fixed seed.
fn server(rtp: &str, seed: u64) -> TestServer {
    TestServer::start(ServeArgs {
        seed: Some(seed),
        ..args(rtp)
    })
}

#[test]
fn two_sipp_over_tcp_hear_each_other() {
    ready();
    let dir = Scratch::new("e2e-tcp");
    let cap = Capture::start(&dir.path("tcp.pcap"), "udp and portrange 31200-31299");
    let srv = server("31200-31299", 3);
    let scen = uac_pcap_scenario(&dir.0);
    let mut a = sipp(&scen, "tcproom", 25271, 26200, true, srv.sip, &dir.0);
    let mut b = sipp(&scen, "tcproom", 25272, 26210, true, srv.sip, &dir.0);
    expect_success(&mut a, "sipp A over TCP", Duration::from_secs(45));
    expect_success(&mut b, "sipp B over TCP", Duration::from_secs(45));
    let report = pcap_harness::analyze_path(&cap.stop()).unwrap();
    for client in ["127.0.0.1:26200", "127.0.0.1:26210"] {
        let s = server_streams_to(&report, client, 31200, 31299);
        assert_eq!(s.len(), 1, "one server stream to {client}");
        assert_eq!(
            (s[0].lost, s[0].duplicates, s[0].ts_errors),
            (0, 0, 0),
            "{:#?}",
            s[0]
        );
        let loud = s[0].energy_dbfs.iter().filter(|e| **e > -40.0).count();
        assert!(
            loud >= 20,
            "{client} hears the other sipp: {:?}",
            s[0].energy_dbfs
        );
    }
}

#[test]
fn hold_and_resume_keep_the_stream() {
    ready();
    let dir = Scratch::new("e2e-hold");
    let cap = Capture::start(&dir.path("hold.pcap"), "udp and portrange 31300-31399");
    let srv = server("31300-31399", 4);
    let mut c = sipp(
        &scenario("hold_resume.xml"),
        "holdroom",
        25371,
        26300,
        false,
        srv.sip,
        &dir.0,
    );
    expect_success(
        &mut c,
        "sipp hold/resume (answers must carry recvonly, then sendrecv)",
        Duration::from_secs(30),
    );
    let report = pcap_harness::analyze_path(&cap.stop()).unwrap();
    let s = server_streams_to(&report, "127.0.0.1:26300", 31300, 31399);
    assert_eq!(s.len(), 1, "one SSRC across hold and resume: {s:#?}");
    let s = s[0];
    assert_eq!(
        (s.lost, s.duplicates, s.reordered, s.seq_resets),
        (0, 0, 0, 0),
        "seq continues after resume: {s:#?}"
    );
    // While the client holds (sendonly), the server sends nothing: one gap of about the hold time.
    assert!(
        s.max_gap_ms > 1200.0 && s.max_gap_ms < 2500.0,
        "hold gap {} ms",
        s.max_gap_ms
    );
    assert!(
        s.last_time - s.max_gap_at > 1.0,
        "media resumed after the gap: {s:#?}"
    );
}

#[test]
fn offerless_invite_gets_offer_and_answer_in_ack() {
    ready();
    let dir = Scratch::new("e2e-offerless");
    let cap = Capture::start(&dir.path("offerless.pcap"), "udp and portrange 31400-31499");
    let srv = server("31400-31499", 5);
    let mut c = sipp(
        &scenario("offerless.xml"),
        "late",
        25471,
        26400,
        false,
        srv.sip,
        &dir.0,
    );
    expect_success(&mut c, "sipp offerless INVITE", Duration::from_secs(30));
    let report = pcap_harness::analyze_path(&cap.stop()).unwrap();
    let s = server_streams_to(&report, "127.0.0.1:26400", 31400, 31499);
    assert_eq!(
        s.len(),
        1,
        "server streams PCMU as answered in the ACK: {s:#?}"
    );
    assert_eq!(
        s[0].payload_types,
        vec![0],
        "PCMU, the codec of the ACK's answer"
    );
    assert!(s[0].packets >= 50, "{} packets in ~2 s", s[0].packets);
}

#[test]
fn sigterm_sends_bye_to_every_participant() {
    testkit::require::tools(&["sipp"]);
    let dir = Scratch::new("e2e-sigterm");
    let mut srv = Server::start(25570, 28570, "31500-31599", &["--seed", "6"]);
    let mut udp = sipp(
        &scenario("wait_for_bye.xml"),
        "bye",
        25571,
        26500,
        false,
        srv.sip,
        &dir.0,
    );
    let mut tcp = sipp(
        &scenario("wait_for_bye.xml"),
        "bye",
        25572,
        26510,
        true,
        srv.sip,
        &dir.0,
    );
    srv.log
        .wait_count("joined room", 2, Duration::from_secs(30))
        .expect("both participants joined");
    let st = srv.terminate();
    assert!(st.success(), "exit 0 after SIGTERM: {st}");
    expect_success(
        &mut udp,
        "UDP participant received BYE and answered 200",
        Duration::from_secs(10),
    );
    expect_success(
        &mut tcp,
        "TCP participant received BYE and answered 200",
        Duration::from_secs(10),
    );
    assert!(
        srv.log.lines.iter().any(|l| l.contains("ByeSent")),
        "server saw its BYEs answered"
    );
}
