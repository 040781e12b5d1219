//! A takeover no browser notices (issue 9), in the network-namespace test bed: a primary and
//! a backup `mcu` (one DTLS certificate file, WebRTC on the service address 198.18.0.100,
//! the HTTP API on each node's own address and on the service address) serve a room with
//! headless Chromium (client1, fake microphone playing speech, the page and WHIP on the
//! service address) and a sipp UAC (client2) playing sipp's recorded A-law speech for about
//! 16 s. About 5 s into the conference the primary gets `kill -9`.
//!
//! The HTTP API on the service address: before the kill only the primary answers there (the
//! backup's listener on it has accepted no connection, and `GET /api/status` from client1
//! says `primary` with no takeover); after it the backup does (the same request shows the
//! takeover its own address reports), the browser's leave (WHIP DELETE to the Location on
//! the service address) is answered 200 and the room is empty.
//!
//! Asserted from the browser's own `getStats` and event log: no ICE or connection state
//! change after "connected", the same `iceLocalUsernameFragment` and
//! `selectedCandidatePairChanges`, the same inbound SSRC, `packetsReceived` still growing,
//! `packetsLost` within the gap, and the browser still hears the room (`totalAudioEnergy`
//! grows after the kill). From a capture in the browser's namespace (SRTP headers are in the
//! clear): one SSRC from the service address, no duplicate or sequence regression, and the
//! largest arrival gap across the kill, printed as `WEBRTC-FAILOVER gap=X.Xms` (collected
//! over many runs by `scripts/failover-runs webrtc`).
//!
//! Environment: `WEBRTC_FAILOVER_PREFIX` (default `us-wf`; the switchover case appends `p`):
//! namespace prefix;
//! `KEEP_SCRATCH=1` keeps captures and logs.

mod common;
use common::Node;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testkit::bed::{Testbed, VIP};
use testkit::browser::{stat as num, Browser};
use testkit::capture::Capture;
use testkit::peers;
use testkit::poll;
use testkit::process::{run as sh, Guarded};

const SIP_PORT: u16 = 5060;
const HTTP_PORT: u16 = 8080;
const WEBRTC_PORT: u16 = 40000;
const SIPP_MEDIA_PORT: u16 = 6000;
const ROOM: &str = "room";
const KILL_AFTER: Duration = Duration::from_secs(5);
/// Largest arrival gap the browser may see across the kill.
const MAX_GAP_MS: f64 = 100.0;
/// A planned switchover: one 20 ms packet late at most, plus scheduling jitter.
const MAX_SWITCHOVER_GAP_MS: f64 = 45.0;

fn addr_of(node: &str) -> String {
    testkit::bed::addr_of(node).to_string()
}

fn http_addr(node: &str) -> SocketAddr {
    format!("{}:{HTTP_PORT}", addr_of(node)).parse().unwrap()
}

/// The HTTP API on the service address.
fn vip_http() -> SocketAddr {
    SocketAddr::new(VIP.into(), HTTP_PORT)
}

/// `GET path` on the service address from `client`'s namespace (as the browser sees it):
/// the JSON body of a 200, `None` otherwise.
fn vip_get_json(bed: &Testbed, client: &str, path: &str) -> Option<serde_json::Value> {
    let path = path.to_string();
    testkit::bed::in_netns(&bed.ns(client), move || {
        match common::get_as(vip_http(), &path, Some(common::ADMIN_TOKEN)) {
            Ok((200, body)) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    })
}

/// Connections `node` accepted on its listener on the service address.
fn vip_connections(node: &Node) -> f64 {
    let (code, text) = node.get("/metrics").expect("GET /metrics");
    assert_eq!(code, 200, "{}: GET /metrics", node.name);
    common::metric(
        &text,
        &format!("mcu_http_connections_total{{listen=\"{}\"}}", vip_http()),
    )
}

fn ft_args(node: &str, peer: &str, key: &std::path::Path, cert: &std::path::Path) -> Vec<String> {
    // The service address too: the backup binds it without holding it (IP_FREEBIND)
    // and is reached there only after its takeover.
    let extra = common::webrtc_node_extra(HTTP_PORT, WEBRTC_PORT, cert);
    common::ft_node_args(node, peer, key, &extra)
}

fn participants(node: &Node) -> usize {
    node.get_json("/api/rooms").as_ref().map_or(0, room_size)
}

/// Participants in [`ROOM`] in a `GET /api/rooms` reply (0: no such room).
fn room_size(rooms: &serde_json::Value) -> usize {
    rooms["rooms"]
        .as_array()
        .and_then(|r| r.iter().find(|x| x["name"] == ROOM))
        .and_then(|x| x["participants"].as_object().map(|p| p.len()))
        .unwrap_or(0)
}

/// RTP packets (from `src`) in a capture: (arrival time, SSRC, sequence number).
fn rtp_arrivals(pcap: &std::path::Path, src: &str) -> Vec<(f64, u32, u16)> {
    let data = std::fs::read(pcap).expect("read capture");
    let mut out = vec![];
    pcap_harness::capture::for_each_frame(&data, |f| {
        let Ok(u) = pcap_harness::net::decode_udp(f.linktype, f.data) else {
            return;
        };
        let p = u.payload;
        let rtp = p.len() >= 12 && p[0] >> 6 == 2 && !(192..=223).contains(&p[1]);
        if u.src.to_string() == src && rtp {
            out.push((
                f.time,
                u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
                u16::from_be_bytes([p[2], p[3]]),
            ));
        }
    })
    .expect("parse capture");
    out
}

#[test]
fn browser_does_not_notice_kill_of_primary() {
    run(false);
}

/// `POST /api/failover` instead of a kill: stricter, no packet may be missing.
#[test]
fn browser_does_not_notice_planned_switchover() {
    run(true);
}

fn run(planned: bool) {
    testkit::require::e2e(
        "network namespaces, tcpdump",
        &["sipp", "tcpdump", "espeak-ng", "ffmpeg", "ip"],
    );
    testkit::browser::require();
    let prefix = std::env::var("WEBRTC_FAILOVER_PREFIX").unwrap_or_else(|_| "us-wf".into());
    // Each case its own test bed (the two may run at once).
    let prefix = if planned {
        format!("{prefix}p")
    } else {
        prefix
    };
    let dir = testkit::Scratch::new("e2e-webrtc-failover");
    sh(Command::new("espeak-ng")
        .arg("-w")
        .arg(dir.path("raw.wav"))
        .arg(
            "This is the browser speaking in the conference room while the primary server \
             fails. One two three four five six seven eight nine ten. The backup keeps the \
             call going on the same stream, and the browser never notices.",
        ));
    sh(Command::new("ffmpeg")
        .args(["-y", "-loglevel", "error", "-stream_loop", "-1", "-i"])
        .arg(dir.path("raw.wav"))
        .args(["-t", "30", "-ar", "48000", "-ac", "2"])
        .arg(dir.path("speech.wav")));
    let key = dir.path("ft.key");
    std::fs::write(&key, format!("understudy-wf-{}", std::process::id())).unwrap();
    // One certificate for both nodes: the first node to start creates the file.
    let cert = dir.path("dtls.pem");
    let scen = peers::uac_pcap_scenario_twice(&dir.0);

    let bed = Testbed::up(&prefix, 2);
    let mut nodes: Vec<Node> = vec![];
    for (node, peer) in [("backup", "primary"), ("primary", "backup")] {
        let n = Node::start(
            &bed,
            node,
            http_addr(node),
            &ft_args(node, peer, &key, &cert),
        );
        let up = poll(Duration::from_secs(20), || n.get("/api/status"));
        assert!(up.is_some(), "{node} does not answer GET /api/status");
        nodes.push(n);
    }
    nodes.sort_by_key(|n| n.name != "primary");
    let (primary, rest) = nodes.split_first_mut().unwrap();
    let backup = &mut rest[0];
    let ready = poll(Duration::from_secs(20), || {
        let p = primary.get_json("/api/status")?;
        let s = backup.get_json("/api/status")?;
        (p["role"] == "primary"
            && p["synced"] == true
            && s["role"] == "backup"
            && s["synced"] == true)
            .then_some(())
    });
    assert!(ready.is_some(), "the pair did not become ready");

    // The browser's view of the wire: every datagram from the WebRTC port.
    let capture = Capture::start_in(
        &bed.ns("client1"),
        "eth0",
        &dir.path("client1.pcap"),
        &format!("udp and host {VIP} and port {WEBRTC_PORT}"),
    );
    // The page from the service address: its WHIP resource and roster polls are there too.
    let url = format!("http://{}/room/{ROOM}?autojoin=1&name=chromium", vip_http());
    let mut browser = Browser::start(
        bed.command("client1", "node"),
        &url,
        &dir.path("speech.wav"),
        60,
    );
    let connected = browser.wait_for(Duration::from_secs(30), |s| {
        s["transport"]["dtlsState"] == "connected" && num(s, &["inbound", "packetsReceived"]) > 10.0
    });
    assert!(
        connected.is_some(),
        "the browser never received media: events {:#?}, last {:#?}, errors {:?}\nprimary log tail: {:?}",
        browser.events,
        browser.last(),
        browser.errors,
        primary.log.lines.iter().rev().take(20).collect::<Vec<_>>()
    );

    let mut sipp = Guarded(
        bed.command("client2", "sipp")
            .arg("-sf")
            .arg(&scen)
            .args(["-s", ROOM, "-i", &addr_of("client2")])
            .args([
                "-p",
                &SIP_PORT.to_string(),
                "-mp",
                &SIPP_MEDIA_PORT.to_string(),
            ])
            .args([
                "-m",
                "1",
                "-l",
                "1",
                "-nostdin",
                "-timeout",
                "60s",
                "-timeout_error",
            ])
            .arg(format!("{VIP}:{SIP_PORT}"))
            .current_dir(&dir.0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sipp"),
    );
    let joined = poll(Duration::from_secs(15), || {
        (participants(primary) == 2).then_some(())
    });
    assert!(
        joined.is_some(),
        "browser and sipp in the room: {:?}",
        primary.get("/api/rooms")
    );
    let synced = poll(Duration::from_secs(5), || {
        let p = primary.get_json("/api/status")?;
        (p["replication"]["unacked"] == 0).then_some(())
    });
    assert!(synced.is_some(), "the backup holds the conference");
    let t_joined = Instant::now();
    std::thread::sleep(KILL_AFTER);

    // Before the kill the service address is the primary's alone: client1 gets the
    // primary's status there, and the backup's listener on it accepted nothing although the
    // primary's did (the page, WHIP, the roster polls; every packet of them mirrored to the
    // backup, whose queue drops them).
    let vip_before = vip_get_json(&bed, "client1", "/api/status")
        .expect("GET /api/status on the service address before the kill");
    assert!(
        vip_before["role"] == "primary"
            && vip_before["peer"] == "alive"
            && vip_before["last_takeover"].is_null(),
        "the service address before the kill: {vip_before}"
    );
    let primary_vip = vip_connections(primary);
    assert!(
        primary_vip >= 2.0,
        "the primary's listener on the service address accepted {primary_vip} connections"
    );
    let backup_vip = vip_connections(backup);
    assert_eq!(
        backup_vip, 0.0,
        "the backup accepted HTTP connections on the service address before the takeover"
    );

    let before = browser
        .fresh(Duration::from_secs(5))
        .expect("stats before the kill");
    let kill_time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    if planned {
        let reply = primary.post("/api/failover");
        eprintln!(
            "WEBRTC-FAILOVER POST /api/failover at +{:.1} s: {reply:?}",
            t_joined.elapsed().as_secs_f64()
        );
        assert!(
            matches!(&reply, Some((202, _))),
            "the planned switchover: {reply:?}"
        );
    } else {
        primary.kill9();
        eprintln!(
            "WEBRTC-FAILOVER kill -9 primary at +{:.1} s",
            t_joined.elapsed().as_secs_f64()
        );
    }
    let line = backup.log.wait("takeover complete", Duration::from_secs(5));
    assert!(line.is_some(), "the backup took over");
    // Long enough for two of the browser's consent checks (every ~2.5 s) to be answered by
    // the new primary, with the same credentials.
    std::thread::sleep(Duration::from_secs(6));
    let after = browser
        .fresh(Duration::from_secs(5))
        .expect("stats after the kill");
    eprintln!("WEBRTC-FAILOVER before: {before}\nWEBRTC-FAILOVER after: {after}");

    // The service address is the backup's now: client1's request there shows the takeover
    // the backup reports on its own address.
    let vip_after = vip_get_json(&bed, "client1", "/api/status")
        .expect("GET /api/status on the service address after the takeover");
    let own_after = backup
        .get_json("/api/status")
        .expect("the backup's /api/status on its own address");
    assert!(
        vip_after["role"] == "primary"
            && !own_after["last_takeover"].is_null()
            && vip_after["last_takeover"] == own_after["last_takeover"],
        "the service address after the takeover: {vip_after}; the backup's own address: {own_after}"
    );
    let backup_vip = vip_connections(backup);
    assert!(
        backup_vip >= 1.0,
        "the backup's listener on the service address after the takeover: {backup_vip}"
    );

    let st =
        testkit::process::wait_timeout(&mut sipp.0, Duration::from_secs(40)).expect("sipp ends");
    assert!(
        st.success(),
        "sipp's call (its BYE answered by the new primary): exit {st}"
    );
    // sipp's call ended: the browser alone is left (on the backup's view of the room).
    let alone = poll(Duration::from_secs(5), || {
        (participants(backup) == 1).then_some(())
    });
    assert!(
        alone.is_some(),
        "the browser still in the room: {:?}",
        backup.get("/api/rooms")
    );
    let ended = browser.finish(Duration::from_secs(15));
    let pcap = capture.stop();

    // The browser's leave after the takeover: its WHIP DELETE to the Location on the
    // service address was answered 200 (by the backup), and the room is empty.
    let all_events = browser
        .done
        .as_ref()
        .and_then(|d| d["events"].as_array().cloned())
        .unwrap_or_default();
    let deletes: Vec<&serde_json::Value> = all_events
        .iter()
        .filter(|e| e["type"] == "whip" && e["value"]["method"] == "DELETE")
        .collect();
    assert!(
        deletes.len() == 1 && deletes[0]["value"]["status"] == 200,
        "the browser's leave: WHIP DELETE events {deletes:?} (driver ended: {ended}, errors {:?})",
        browser.errors
    );
    eprintln!(
        "WEBRTC-FAILOVER http on {}: primary accepted {primary_vip} before the kill, backup 0 before and {backup_vip} after; leave: {}",
        vip_http(),
        deletes[0]["value"]
    );
    let emptied = poll(Duration::from_secs(5), || {
        let via_vip = vip_get_json(&bed, "client1", "/api/rooms")?;
        (participants(backup) == 0 && room_size(&via_vip) == 0).then_some(())
    });
    assert!(
        emptied.is_some(),
        "the room after the leave: {:?}",
        backup.get("/api/rooms")
    );

    // The browser's own view.
    let mut problems = vec![];
    for key in [
        "iceLocalUsernameFragment",
        "selectedCandidatePairChanges",
        "iceState",
        "dtlsState",
    ] {
        if before["transport"][key] != after["transport"][key] {
            problems.push(format!(
                "transport.{key}: {} -> {}",
                before["transport"][key], after["transport"][key]
            ));
        }
    }
    if after["transport"]["iceState"] != "connected"
        || after["transport"]["dtlsState"] != "connected"
    {
        problems.push(format!("transport after the kill: {}", after["transport"]));
    }
    if before["inbound"]["ssrc"] != after["inbound"]["ssrc"] {
        problems.push(format!(
            "inbound SSRC {} -> {}",
            before["inbound"]["ssrc"], after["inbound"]["ssrc"]
        ));
    }
    let got = num(&after, &["inbound", "packetsReceived"])
        - num(&before, &["inbound", "packetsReceived"]);
    if got < 200.0 {
        problems.push(format!(
            "only {got} packets received in the ~6 s after the kill"
        ));
    }
    let lost = num(&after, &["inbound", "packetsLost"]) - num(&before, &["inbound", "packetsLost"]);
    if lost > 5.0 {
        problems.push(format!(
            "{lost} packets lost across the kill (100 ms = 5 packets)"
        ));
    }
    let energy = num(&after, &["inbound", "totalAudioEnergy"])
        - num(&before, &["inbound", "totalAudioEnergy"]);
    if energy < 0.01 {
        problems.push(format!(
            "the browser heard nothing after the kill (energy +{energy})"
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
            "state changes after connected: {after_connected:?} (all: {changes:?})"
        ));
    }

    // The wire as the browser's namespace saw it.
    let arrivals = rtp_arrivals(&pcap, &format!("{VIP}:{WEBRTC_PORT}"));
    let ssrcs: std::collections::BTreeSet<u32> = arrivals.iter().map(|a| a.1).collect();
    if ssrcs.len() != 1 {
        problems.push(format!("SSRCs from the service address: {ssrcs:x?}"));
    }
    let mut seen = std::collections::HashSet::new();
    let dups = arrivals.iter().filter(|a| !seen.insert(a.2)).count();
    if dups > 0 {
        problems.push(format!("{dups} duplicate sequence numbers"));
    }
    let regressions = arrivals
        .windows(2)
        .filter(|w| {
            let d = w[1].2.wrapping_sub(w[0].2);
            d == 0 || d > 0x8000
        })
        .count();
    if regressions > 0 {
        problems.push(format!("{regressions} sequence regressions"));
    }
    let gap_ms = arrivals
        .windows(2)
        .filter(|w| w[1].0 > kill_time - 1.0 && w[0].0 < kill_time + 2.0)
        .map(|w| (w[1].0 - w[0].0) * 1000.0)
        .fold(0.0, f64::max);
    eprintln!(
        "WEBRTC-FAILOVER gap={gap_ms:.1}ms packets={} lost={lost} energy_after=+{energy:.3} driver_ended={ended}",
        arrivals.len()
    );
    if gap_ms > MAX_GAP_MS {
        problems.push(format!(
            "gap across the kill {gap_ms:.1} ms > {MAX_GAP_MS} ms"
        ));
    }
    if planned {
        // A planned switchover: every packet arrives, at most one of them late.
        let steps = arrivals
            .windows(2)
            .filter(|w| w[1].2.wrapping_sub(w[0].2) != 1)
            .count();
        if steps > 0 || lost > 0.0 || gap_ms > MAX_SWITCHOVER_GAP_MS {
            problems.push(format!(
                "switchover: {steps} sequence steps other than +1, {lost} lost, gap {gap_ms:.1} ms (at most {MAX_SWITCHOVER_GAP_MS})"
            ));
        }
        // The old primary rejoins as the backup: the pair is protected again.
        let rejoined = poll(Duration::from_secs(20), || {
            let s = primary.get_json("/api/status")?;
            (s["role"] == "backup" && s["protected"] == true).then_some(())
        });
        if rejoined.is_none() {
            problems.push(format!(
                "the old primary did not rejoin as a synced backup: {:?}",
                primary.get("/api/status")
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "the browser noticed the takeover: {problems:#?}"
    );
}
