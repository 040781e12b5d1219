//! Browsers in a room, end to end over loopback: headless Chromium (a fake microphone
//! playing espeak-ng speech) opens the participant page `/room/{room}`, joins through WHIP
//! (ICE-lite, DTLS, SRTP) and shares the room with a sipp UAC playing sipp's recorded A-law
//! speech. Both directions are checked where each client observes them: the browser's own
//! `getStats` (packets received, audio energy of what it plays) and the decoded audio the
//! server sends to sipp (tcpdump + `pcap-harness`).

mod common;
use common::{args, TestServer};
use mcu::config::ServeArgs;
use std::process::Command;
use std::time::Duration;
use testkit::browser::{stat as num, Browser};
use testkit::capture::Capture;
use testkit::peers;
use testkit::process::wait_timeout;
use testkit::Scratch;

const RTP_RANGE: (u16, u16) = (36300, 36349);
const WEBRTC_PORT: u16 = 36350;
const SIPP: (u16, u16) = (36360, 36370);

#[test]
fn browser_and_sipp_hear_each_other() {
    testkit::require::e2e("tcpdump on lo", &["sipp", "tcpdump", "espeak-ng", "ffmpeg"]);
    testkit::browser::require();
    let dir = Scratch::new("e2e-webrtc");
    let raw = peers::espeak(
        &dir.0,
        "raw.wav",
        "This is the browser speaking in the conference room. One two three four five six. \
         The quick brown fox jumps over the lazy dog, again and again, until the test ends.",
    );
    let wav = dir.path("speech.wav");
    peers::to_48k_stereo(&raw, &wav, None);

    let mut srv = TestServer::start(ServeArgs {
        seed: Some(9),
        webrtc_port: Some(WEBRTC_PORT),
        ..args(&format!("{}-{}", RTP_RANGE.0, RTP_RANGE.1))
    });
    let cap = Capture::start(
        &dir.path("server.pcap"),
        &format!("udp and portrange {}-{}", RTP_RANGE.0, RTP_RANGE.1),
    );

    // The browser joins alone first: connected, and receiving the room's stream.
    let url = format!("http://{}/room/mixed?autojoin=1&name=chromium", srv.http);
    let mut browser = Browser::start(Command::new("node"), &url, &wav, 40);
    let first = browser
        .wait_for(Duration::from_secs(20), |s| {
            s["transport"]["dtlsState"] == "connected"
                && num(s, &["inbound", "packetsReceived"]) > 10.0
        })
        .unwrap_or_else(|| {
            panic!(
                "the browser never received media: events {:#?}, last stats {:#?}, errors {:?}",
                browser.events,
                browser.last(),
                browser.errors
            )
        });
    let ufrag = first["transport"]["iceLocalUsernameFragment"].clone();
    let ssrc = first["inbound"]["ssrc"].clone();
    eprintln!("browser connected: {first}");
    let rooms = srv.get_json("/api/rooms");
    let parts = rooms["rooms"][0]["participants"]
        .as_object()
        .expect("participants");
    assert_eq!(parts.len(), 1, "{rooms:#}");
    let view = parts.values().next().unwrap();
    assert_eq!(view["kind"], "webrtc", "{rooms:#}");
    assert_eq!(view["sip_uri"], "chromium", "{rooms:#}");
    assert_eq!(
        view["ssrc_out"].as_u64(),
        ssrc.as_u64(),
        "the SSRC the browser receives is the one /api/rooms reports"
    );
    // Alone in the room: nothing to hear yet.
    let alone = browser.fresh(Duration::from_secs(5)).expect("stats");
    let energy_alone = num(&alone, &["inbound", "totalAudioEnergy"]);

    // sipp joins and speaks (the recorded capture, then DTMF), then hangs up.
    let scen = peers::uac_pcap_scenario(&dir.0);
    let mut sipp = peers::sipp(&scen, "mixed", SIPP.0, SIPP.1, false, srv.sip, &dir.0);
    srv.log
        .wait_count("joined room", 2, Duration::from_secs(20))
        .expect("sipp joined the room");
    let st = wait_timeout(&mut sipp, Duration::from_secs(45)).expect("sipp finishes");
    assert!(st.success(), "sipp failed its call (exit {st})");
    let after = browser
        .fresh(Duration::from_secs(5))
        .expect("stats after sipp's call");
    eprintln!("browser after sipp spoke: {after}");

    // The browser heard sipp: more packets, audio energy that was not there alone.
    let heard = num(&after, &["inbound", "totalAudioEnergy"]) - energy_alone;
    assert!(
        heard > 0.01,
        "the browser's played audio energy grew by only {heard} while sipp spoke: {after:#}"
    );
    assert!(
        num(&after, &["inbound", "packetsReceived"])
            > num(&first, &["inbound", "packetsReceived"]) + 200.0,
        "packets kept arriving: {first} -> {after}"
    );
    assert_eq!(after["inbound"]["ssrc"], ssrc, "one inbound SSRC");
    assert_eq!(after["transport"]["iceLocalUsernameFragment"], ufrag);
    assert!(
        num(&after, &["outbound", "packetsSent"]) > 200.0,
        "the browser sent its microphone: {after:#}"
    );

    // Leave (DELETE on the WHIP resource): the room empties.
    assert!(
        browser.finish(Duration::from_secs(15)),
        "driver ended cleanly: {:?}",
        browser.errors
    );
    let left = testkit::poll(Duration::from_secs(5), || {
        let r = srv.get_json("/api/rooms");
        r["rooms"]
            .as_array()
            .is_some_and(|a| a.is_empty())
            .then_some(())
    });
    assert!(
        left.is_some(),
        "the browser left the room: {:#}",
        srv.get_json("/api/rooms")
    );
    let states = browser.state_changes();
    eprintln!("browser state changes: {states:?}");
    assert!(
        !states
            .iter()
            .any(|s| s.ends_with("=failed") || s.ends_with("=disconnected")),
        "no failure or disconnection while in the room: {states:?}"
    );
    srv.shutdown().expect("server stops cleanly");

    // sipp heard the browser: the stream the server sent to sipp's media port decodes to speech.
    let pcap = cap.stop();
    let report = pcap_harness::analyze_path(&pcap).expect("analyze capture");
    let to_sipp = format!("127.0.0.1:{}", SIPP.1);
    let streams: Vec<_> = report
        .rtp_streams
        .iter()
        .filter(|s| s.dst == to_sipp)
        .collect();
    assert_eq!(
        streams.len(),
        1,
        "one stream to sipp: {:#?}",
        report.rtp_streams
    );
    let s = streams[0];
    assert!(s.decoded && s.decode_errors == 0, "{s:#?}");
    let loud = s.energy_dbfs.iter().filter(|e| **e > -40.0).count();
    eprintln!(
        "to sipp: {} packets, {loud} windows of 100 ms with speech, energy {:?}",
        s.packets, s.energy_dbfs
    );
    assert!(
        loud >= 10,
        "sipp heard the browser in only {loud} windows of 100 ms: {:?}",
        s.energy_dbfs
    );
}
