//! The operators' side: the live-update WebSocket (`GET /api/ws`) and the admin page
//! (`GET /`, `web-client/admin.*`) against an in-process server on loopback with real sipp
//! participants (sipp's recorded A-law speech, then RFC 2833 DTMF '1', then BYE).
//!
//! - [`live_socket_sends_hello_then_the_call_as_it_happens`]: a WebSocket client
//!   (tokio-tungstenite) gets `hello`, then sipp's `room_open`, `join`, `levels` with its
//!   speech, its `dtmf` and its `leave`, in that order; a socket opened after gets the call
//!   in its `hello`'s events; shutdown closes the socket with 1001.
//! - [`live_sockets_are_capped_and_a_closed_one_frees_its_place`]: at most
//!   `live::MAX_SOCKETS` (503 and `mcu_ws_rejected` beyond), counted in `mcu_ws_clients`.
//! - [`admin_page_shows_rooms_levels_and_events_live`]: headless Chromium
//!   (`web-client/test/admin.mjs`) signs in (the server's `--admin-token-file`: 401
//!   without the token), sees the room with its sipp
//!   participants and their live levels, and their joins and leaves arrive in the event log;
//!   screenshots of each view in `target/test-artifacts/admin-ui/`.
//! - [`admin_page_reconnects_to_the_next_node_and_polls_without_a_socket`]: the server on
//!   the page's address stops and another starts there (what a takeover looks like from the
//!   page): the page reconnects and goes on; with the socket refused it polls.
//! - [`standby_panel_and_a_takeover_as_the_page_sees_them`]: the driver plays the live
//!   socket (a protected primary, then after a reconnect the node that took over): the
//!   panel's colours and words, the takeover in the log, no false joins, mute and lock
//!   messages shown; screenshots of those views.
//! - [`mute_kick_lock_and_max_participants_through_the_ui`]: mute, unmute, kick, lock and
//!   max participants through the UI, as the server and its callers see them.

mod common;
use common::{args, TestServer};
use futures_util::{SinkExt, StreamExt};
use mcu::config::ServeArgs;
use serde_json::Value;
use std::time::{Duration, Instant};
use testkit::browser::{artifacts_dir, AdminPage};
use testkit::peers;
use testkit::process::wait_timeout;
use testkit::Scratch;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Every message of a live socket until `until` holds for one (included), or `timeout`.
async fn read_until(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    timeout: Duration,
    mut until: impl FnMut(&Value) -> bool,
) -> Vec<Value> {
    let end = Instant::now() + timeout;
    let mut got = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let m = match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(other) => panic!("the socket ended: {other:?}; messages so far: {got:#?}"),
            Err(_) => return got,
        };
        match m {
            WsMessage::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).expect("a JSON message");
                let stop = until(&v);
                got.push(v);
                if stop {
                    return got;
                }
            }
            WsMessage::Ping(p) => ws.send(WsMessage::Pong(p)).await.unwrap(),
            _ => {}
        }
    }
}

fn kinds(msgs: &[Value]) -> Vec<&str> {
    msgs.iter().filter_map(|m| m["type"].as_str()).collect()
}

#[test]
fn live_socket_sends_hello_then_the_call_as_it_happens() {
    testkit::require::tools(&["sipp"]);
    let dir = Scratch::new("admin-ws");
    let scen = peers::uac_pcap_scenario(&dir.0);
    let mut srv = TestServer::start(args("38000-38049"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = format!("ws://{}/api/ws", srv.http);
        let (mut ws, resp) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        assert_eq!(resp.status(), 101);

        let hello = read_until(&mut ws, Duration::from_secs(5), |_| true).await;
        let hello = &hello[0];
        assert_eq!(hello["type"], "hello", "{hello:#}");
        assert_eq!(hello["rooms"], serde_json::json!([]), "{hello:#}");
        assert_eq!(hello["status"]["role"], "standalone", "{hello:#}");
        assert!(hello["events"].is_array(), "{hello:#}");
        assert_eq!(hello["tick_ms"], 100);

        let mut sipp = peers::sipp(&scen, "ops", 38100, 38102, false, srv.sip, &dir.0);
        // The call, as it happens: the room, the join, levels with speech, DTMF, the leave.
        let msgs = read_until(&mut ws, Duration::from_secs(40), |m| {
            m["type"] == "room_close"
        })
        .await;
        let st = wait_timeout(&mut sipp, Duration::from_secs(10)).expect("sipp finishes");
        assert!(st.success(), "sipp failed its call (exit {st})");
        let ks = kinds(&msgs);
        eprintln!(
            "messages: {:?}",
            ks.iter().filter(|k| **k != "levels").collect::<Vec<_>>()
        );
        let pos = |k: &str| {
            ks.iter()
                .position(|x| *x == k)
                .unwrap_or_else(|| panic!("no {k} message in {ks:?}"))
        };
        // `levels` every tick (before the room too): some between the join and the DTMF.
        let levels_in_call = ks[pos("join")..pos("dtmf")].contains(&"levels");
        assert!(
            pos("room_open") < pos("join")
                && levels_in_call
                && pos("dtmf") < pos("leave")
                && pos("leave") < pos("room_close"),
            "order of {ks:?}"
        );
        let join = &msgs[pos("join")];
        assert_eq!(join["room"], "ops");
        let p = &join["participant"];
        assert_eq!(p["kind"], "sip", "{join:#}");
        assert!(
            p["sip_uri"].as_str().is_some_and(|u| u.starts_with("sip:")),
            "{join:#}"
        );
        assert_eq!(p["codec"], "PCMA", "{join:#}");
        let id = p["id"].as_u64().expect("participant id");
        let key = id.to_string();

        // ~10 levels a second while the call lasts, and sipp's speech in them.
        let levels: Vec<_> = msgs[pos("join")..pos("leave")]
            .iter()
            .filter(|m| m["type"] == "levels")
            .collect();
        let span = msgs[pos("leave")]["at_unix_ms"].as_u64().unwrap()
            - join["at_unix_ms"].as_u64().unwrap();
        let expected = span / 100;
        // Loose: this machine is shared (a late tick is skipped, never doubled).
        assert!(
            levels.len() as u64 >= expected / 2 && levels.len() as u64 <= expected + 5,
            "{} levels messages over {span} ms",
            levels.len()
        );
        let loudest = levels
            .iter()
            .filter_map(|l| l["rooms"]["ops"]["participants"][&key]["level_dbov"].as_f64())
            .fold(f64::MIN, f64::max);
        assert!(
            loudest > -50.0,
            "sipp's speech in the levels: loudest {loudest} dBov"
        );
        assert!(
            levels
                .iter()
                .any(|l| l["rooms"]["ops"]["participants"][&key]["speaking"] == true),
            "sipp was speaking at some point"
        );
        assert!(
            levels
                .iter()
                .any(|l| l["rooms"]["ops"]["participants"][&key]["packets_in"]
                    .as_u64()
                    .unwrap_or(0)
                    > 100),
            "packet counters in the levels"
        );
        let dtmf = &msgs[pos("dtmf")];
        assert_eq!(
            (dtmf["digit"].as_str(), dtmf["participant"].as_u64()),
            (Some("1"), Some(id)),
            "{dtmf:#}"
        );
        let leave = &msgs[pos("leave")];
        assert_eq!(leave["id"].as_u64(), Some(id), "{leave:#}");
        assert_eq!(leave["name"], p["sip_uri"], "{leave:#}");

        // A socket opened now gets the call in its hello's events.
        let (mut again, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap();
        let hello = read_until(&mut again, Duration::from_secs(5), |_| true).await;
        let evs: Vec<_> = hello[0]["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["type"].as_str())
            .collect();
        for k in ["room_open", "join", "dtmf", "leave", "room_close"] {
            assert!(evs.contains(&k), "{k} in the hello's events: {evs:?}");
        }
        assert_eq!(hello[0]["rooms"], serde_json::json!([]));

        // Shutdown closes the sockets with 1001 (going away): a page reconnects.
        std::thread::spawn(move || {
            srv.shutdown().expect("server stops cleanly");
        });
        let end = Instant::now() + Duration::from_secs(10);
        let code = loop {
            let left = end.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, ws.next()).await {
                Ok(Some(Ok(WsMessage::Close(f)))) => break f.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => continue,
                other => panic!("no close frame at shutdown: {other:?}"),
            }
        };
        assert_eq!(code, Some(1001));
    });
}

#[test]
fn live_sockets_are_capped_and_a_closed_one_frees_its_place() {
    let srv = TestServer::start(args("38270-38279"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = format!("ws://{}/api/ws", srv.http);
        let mut open = Vec::new();
        for i in 0..mcu::live::MAX_SOCKETS {
            let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
                .await
                .unwrap_or_else(|e| panic!("socket {i}: {e}"));
            let hello = read_until(&mut ws, Duration::from_secs(5), |_| true).await;
            assert_eq!(hello[0]["type"], "hello");
            open.push(ws);
        }
        assert_eq!(srv.metric("mcu_ws_clients"), mcu::live::MAX_SOCKETS as f64);
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), 503, "one socket too many")
            }
            other => panic!("one socket too many was not refused: {other:?}"),
        }
        assert_eq!(srv.metric("mcu_ws_rejected_total"), 1.0);

        // One leaves: its place is free again.
        let mut first = open.remove(0);
        first.close(None).await.unwrap();
        drop(first);
        let end = Instant::now() + Duration::from_secs(5);
        let (mut ws, _) = loop {
            match tokio_tungstenite::connect_async(url.as_str()).await {
                Ok(ok) => break ok,
                Err(e) if Instant::now() < end => {
                    eprintln!("not yet: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("the freed place was not given again: {e}"),
            }
        };
        let hello = read_until(&mut ws, Duration::from_secs(5), |_| true).await;
        assert_eq!(hello[0]["type"], "hello");
        // Every socket gets the heartbeat.
        let next = read_until(&mut ws, Duration::from_secs(2), |_| true).await;
        assert_eq!(next[0]["type"], "levels", "{next:#?}");
    });
}

/// Wait for a page expression, or fail showing the page's state.
fn wait_page(page: &mut AdminPage, js: &str, secs: u64, what: &str) -> Value {
    match page.wait(js, Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(e) => {
            let st = page.state();
            panic!("{what}: {e}\npage state: {st:#}");
        }
    }
}

/// The rows of room `room` on the page.
fn rows_js(room: &str) -> String {
    format!("document.querySelectorAll('.room[data-room=\"{room}\"] tr.part')")
}

/// No uncaught exception in the page, no failed request it reported.
fn assert_page_clean(page: &mut AdminPage) {
    let st = page.state();
    assert_eq!(
        st["pageErrors"],
        serde_json::json!([]),
        "page errors: {st:#}"
    );
    assert!(
        st["lastError"].is_null(),
        "the page reported an error: {st:#}"
    );
}

#[test]
fn admin_page_shows_rooms_levels_and_events_live() {
    testkit::require::tools(&["sipp"]);
    testkit::browser::require();
    let dir = Scratch::new("admin-page");
    let shots = artifacts_dir("admin-ui");
    // About 17 s of speech per call: time to look at it.
    let scen = peers::uac_pcap_scenario_times(&dir.0, 2);
    // The server's own operator auth (`--admin-token-file`): 401 without the token.
    let srv = TestServer::start(common::with_admin_token(args("38050-38099")));
    const TOKEN: &str = common::ADMIN_TOKEN;
    let mut page = AdminPage::start(&format!("http://{}/", srv.http), &[]);

    // Sign in: the form, a refused token, then the right one.
    wait_page(
        &mut page,
        "understudyAdmin.state.connection === 'login'",
        10,
        "the sign-in form",
    );
    assert_eq!(page.eval("document.getElementById('login').hidden"), false);
    assert_eq!(
        page.eval("document.getElementById('app').hidden"),
        true,
        "no data before sign-in"
    );
    page.screenshot(&shots.join("login.png"), None);
    page.fill("#token", "not-the-token");
    page.click("#login-submit");
    let refused = wait_page(
        &mut page,
        "!document.getElementById('login-error').hidden && document.getElementById('login-error').textContent",
        10,
        "a refused token is said so",
    );
    assert!(
        refused.as_str().is_some_and(|t| t.contains("refused")),
        "{refused}"
    );
    page.fill("#token", TOKEN);
    page.click("#login-submit");
    wait_page(
        &mut page,
        "understudyAdmin.state.connection === 'live'",
        10,
        "live after sign-in",
    );
    let reqs = page.requests();
    let with_token = format!("Bearer {TOKEN}");
    let api: Vec<_> = reqs["requests"].as_array().unwrap().iter().collect();
    let last = api.last().expect("API requests");
    assert_eq!(last["authorization"], with_token.as_str(), "{reqs:#}");
    let sockets = reqs["sockets"].as_array().unwrap();
    assert!(!sockets.is_empty(), "{reqs:#}");
    for s in sockets {
        assert!(
            s.as_str()
                .is_some_and(|u| u.ends_with(&format!("/api/ws?access_token={TOKEN}"))),
            "the socket carries the token: {reqs:#}"
        );
    }
    assert_eq!(
        page.eval("sessionStorage.getItem('understudy.admin.token')"),
        TOKEN,
        "the token is kept for the tab"
    );
    assert_eq!(
        page.eval("document.getElementById('rooms-empty').hidden"),
        false
    );

    // Two sipp participants in room "ops": their rows, their levels live.
    let mut sipps: Vec<_> = [(38110, 38112), (38120, 38122)]
        .iter()
        .map(|(sip, media)| peers::sipp(&scen, "ops", *sip, *media, false, srv.sip, &dir.0))
        .collect();
    let rows = rows_js("ops");
    wait_page(
        &mut page,
        &format!("{rows}.length === 2"),
        20,
        "two rows in room ops",
    );
    let shown = page.eval(&format!(
        "[...{rows}].map(r => ({{name: r.querySelector('.p-name').textContent, \
          kind: r.querySelector('.kind').textContent, codec: r.querySelector('.p-codec').textContent, \
          addr: r.querySelector('.addr').textContent}}))"
    ));
    eprintln!("rows: {shown}");
    let mut addrs: Vec<_> = shown
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["kind"], "SIP", "{shown}");
            assert_eq!(r["codec"], "PCMA", "{shown}");
            assert!(
                r["name"]
                    .as_str()
                    .unwrap()
                    .starts_with("sip:sipp@127.0.0.1:381"),
                "{shown}"
            );
            r["addr"].as_str().unwrap().to_string()
        })
        .collect();
    addrs.sort();
    assert_eq!(
        addrs,
        ["127.0.0.1:38112", "127.0.0.1:38122"],
        "remote media addresses"
    );

    // Speech: a speaking row, its meter filled; the level text changes as it speaks.
    wait_page(
        &mut page,
        &format!("[...{rows}].some(r => r.classList.contains('speaking') && parseFloat(r.querySelector('.meter-fill').style.width) > 10)"),
        20,
        "a speaking row with its meter up",
    );
    wait_page(
        &mut page,
        "document.querySelector('.room[data-room=\"ops\"] tr.part .badge-mix')",
        5,
        "who is in the mix is shown as levels come",
    );
    let t0 = page.state()["counts"]["levels"].as_u64().unwrap_or(0);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let v = page.eval(&format!(
            "[...{rows}].map(r => r.querySelector('.db').textContent).join('|')"
        ));
        seen.insert(v.as_str().unwrap_or_default().to_string());
        std::thread::sleep(Duration::from_millis(100));
    }
    let t1 = page.state()["counts"]["levels"].as_u64().unwrap_or(0);
    eprintln!(
        "levels messages in ~2 s: {}; level texts seen: {seen:?}",
        t1 - t0
    );
    assert!(
        t1 - t0 >= 8,
        "levels arrive about 10 times a second: {} in ~2 s",
        t1 - t0
    );
    assert!(seen.len() >= 3, "the level meters move: {seen:?}");
    assert_eq!(
        page.eval("document.getElementById('tot-parts').textContent"),
        "2"
    );

    // Both joins in the event log, newest first.
    wait_page(
        &mut page,
        "document.querySelectorAll('#log .log-k-join').length === 2",
        10,
        "two joins in the log",
    );
    let joins =
        page.eval("[...document.querySelectorAll('#log .log-k-join')].map(e => e.textContent)");
    assert!(
        joins
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j.as_str().unwrap().contains("ops")
                && j.as_str().unwrap().contains("joined (SIP, PCMA)")),
        "{joins}"
    );
    assert_eq!(
        page.eval("document.getElementById('prot-word').textContent"),
        "STANDALONE"
    );

    page.screenshot(&shots.join("overview.png"), None);
    page.screenshot(&shots.join("rooms.png"), Some(".rooms-pane"));
    page.screenshot(&shots.join("standby.png"), Some("#standby"));
    page.screenshot(&shots.join("events.png"), Some(".log"));

    // Kick asks first; cancelled, nothing is sent.
    page.click(".room[data-room=\"ops\"] .kick-btn");
    wait_page(
        &mut page,
        "document.getElementById('confirm').open",
        5,
        "the kick confirmation",
    );
    let text = page.eval("document.getElementById('confirm-text').textContent");
    assert!(text.as_str().unwrap().contains("sip:sipp@"), "{text}");
    page.screenshot(&shots.join("kick-confirm.png"), None);
    page.click("#confirm-cancel");
    wait_page(
        &mut page,
        "!document.getElementById('confirm').open",
        5,
        "the dialog closes",
    );
    let reqs = page.requests();
    assert!(
        !reqs["requests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["method"] == "DELETE"),
        "a cancelled kick sends nothing: {reqs:#}"
    );

    // The calls end: both leaves arrive, the room goes.
    for (i, s) in sipps.iter_mut().enumerate() {
        let st = wait_timeout(s, Duration::from_secs(40)).expect("sipp finishes");
        assert!(st.success(), "sipp {i} failed its call (exit {st})");
    }
    wait_page(
        &mut page,
        "document.querySelectorAll('#log .log-k-leave').length === 2",
        10,
        "two leaves in the log",
    );
    wait_page(
        &mut page,
        "!document.querySelector('.room[data-room=\"ops\"]')",
        5,
        "the room card goes",
    );
    let dtmf = page.eval("document.querySelectorAll('#log .log-k-dtmf').length");
    assert_eq!(dtmf, 2, "each sipp's DTMF 1 in the log");
    page.screenshot(&shots.join("events-after-leave.png"), Some(".log"));
    assert_page_clean(&mut page);
}

#[test]
fn admin_page_reconnects_to_the_next_node_and_polls_without_a_socket() {
    testkit::require::tools(&["sipp"]);
    testkit::browser::require();
    let dir = Scratch::new("admin-reconnect");
    let shots = artifacts_dir("admin-ui");
    let bye = common::scenario("wait_for_bye.xml");
    let mut first = TestServer::start(args("38130-38159"));
    let addr = first.http;
    let url = format!("http://{addr}/");
    let mut page = AdminPage::start(&url, &[]);
    // An open server: no sign-in.
    wait_page(
        &mut page,
        "understudyAdmin.state.connection === 'live'",
        10,
        "live without a token",
    );
    assert_eq!(page.eval("document.getElementById('login').hidden"), true);

    let mut a = peers::sipp(&bye, "ops", 38160, 38162, false, first.sip, &dir.0);
    wait_page(
        &mut page,
        &format!("{}.length === 1", rows_js("ops")),
        20,
        "the first node's call",
    );

    // The node behind the address goes away (BYE to its call) and another comes up there.
    first.shutdown().expect("the first server stops");
    let st = wait_timeout(&mut a, Duration::from_secs(10)).expect("sipp answered the BYE");
    assert!(st.success(), "sipp ended cleanly (exit {st})");
    wait_page(
        &mut page,
        "understudyAdmin.state.connection !== 'live'",
        10,
        "the page notices the node is gone",
    );
    let second = TestServer::start(ServeArgs {
        http_listen: vec![addr],
        ..args("38130-38159")
    });
    wait_page(
        &mut page,
        "understudyAdmin.state.connection === 'live' && understudyAdmin.state.hellos >= 2",
        20,
        "live again on the next node",
    );
    let mut b = peers::sipp(&bye, "ops", 38170, 38172, false, second.sip, &dir.0);
    wait_page(
        &mut page,
        &format!("{}.length === 1", rows_js("ops")),
        20,
        "the next node's call",
    );
    // The log goes on across the change: the first call's join and leave, the second's join.
    wait_page(
        &mut page,
        "document.querySelectorAll('#log .log-k-join').length === 2",
        10,
        "both joins",
    );
    assert_eq!(
        page.eval("document.querySelectorAll('#log .log-k-leave').length"),
        1
    );
    // Failed reconnects while no node answered are reported (lastError); no exception.
    assert_eq!(page.state()["pageErrors"], serde_json::json!([]));

    // Without the socket: polling, and the changes still arrive.
    let mut polled = AdminPage::start(&url, &["--no-websocket"]);
    wait_page(
        &mut polled,
        "understudyAdmin.state.connection === 'polling'",
        15,
        "polling",
    );
    wait_page(
        &mut polled,
        &format!("{}.length === 1", rows_js("ops")),
        10,
        "the room, polled",
    );
    let mut c = peers::sipp(&bye, "ops", 38180, 38182, false, second.sip, &dir.0);
    wait_page(
        &mut polled,
        &format!("{}.length === 2", rows_js("ops")),
        20,
        "a join, polled",
    );
    wait_page(
        &mut polled,
        "[...document.querySelectorAll('#log .log-k-join')].some(e => e.textContent.includes(':38180'))",
        10,
        "the polled join in the log",
    );
    assert_eq!(polled.eval("understudyAdmin.state.via"), "poll");
    assert_eq!(
        polled.eval("document.getElementById('conn').textContent"),
        "Polling (live socket down)"
    );
    polled.screenshot(&shots.join("polling.png"), None);
    drop(second); // BYE to both calls
    for s in [&mut b, &mut c] {
        let _ = wait_timeout(s, Duration::from_secs(10));
    }
}

fn mock_part(id: u64, port: u16) -> Value {
    serde_json::json!({
        "id": id, "kind": "sip", "sip_uri": format!("sip:agent{id}@10.0.0.{id}:{port}"),
        "remote_media": format!("10.0.0.{id}:{}", port + 2), "codec": "PCMU",
        "local_rtp_port": 20000 + id, "direction": "sendrecv", "ssrc_in": 1000 + id,
        "ssrc_out": 2000 + id, "level_dbov": -30.0, "speaking": id == 1, "in_mix": true,
        "packets_in": 500, "packets_out": 500, "octets_out": 80000, "lost": 3,
        "jitter_ms": 4.5, "dropped_invalid": 0, "dropped_late": 0, "rtcp_invalid": 0,
        "rtt_ms": null, "remote_fraction_lost": null, "concealed_frames": 0,
        "fec_recovered": 0, "jitter_target_ms": 40, "muted": false
    })
}

fn mock_status(role: &str, peer: &str, protected: bool, takeover: Value) -> Value {
    serde_json::json!({
        "role": role, "peer": peer, "synced": protected, "protected": protected,
        "replication": {"committed": 1200, "next": 1201, "unacked": 0, "lag_ms": 1.8,
                        "held_messages": 0},
        "mirrored_packets": 0, "sync_dropped": 0, "beacons": 0, "beacons_refused": 0,
        "last_takeover": takeover
    })
}

fn ws_opened(page: &mut AdminPage, n: u64) {
    let ok = testkit::poll(Duration::from_secs(15), || {
        let c = page
            .cmd(
                serde_json::json!({"cmd": "ws_count"}),
                Duration::from_secs(5),
            )
            .ok()?;
        (c["opened"].as_u64()? >= n && c["open"].as_u64()? >= 1).then_some(())
    });
    assert!(
        ok.is_some(),
        "the page did not open socket {n}: {:#}",
        page.state()
    );
}

fn ws_send(page: &mut AdminPage, m: Value) {
    page.cmd(
        serde_json::json!({"cmd": "ws_send", "data": m}),
        Duration::from_secs(5),
    )
    .unwrap_or_else(|e| panic!("ws_send: {e}"));
}

#[test]
fn standby_panel_and_a_takeover_as_the_page_sees_them() {
    testkit::browser::require();
    let shots = artifacts_dir("admin-ui");
    let srv = TestServer::start(args("38250-38269"));
    let mut page = AdminPage::start(&format!("http://{}/", srv.http), &["--mock-websocket"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let room = serde_json::json!({"name": "support", "active_speaker": 1, "locked": false,
        "max_participants": null,
        "participants": {"1": mock_part(1, 5060), "2": mock_part(2, 5062)}});
    let joined = |at: u64| {
        vec![
            serde_json::json!({"type": "room_open", "room": "support", "info": {"name": "support"}, "at_unix_ms": at}),
            serde_json::json!({"type": "join", "room": "support", "participant": mock_part(1, 5060), "at_unix_ms": at + 5}),
            serde_json::json!({"type": "join", "room": "support", "participant": mock_part(2, 5062), "at_unix_ms": at + 9}),
        ]
    };

    // A protected primary.
    ws_opened(&mut page, 1);
    ws_send(
        &mut page,
        serde_json::json!({"type": "hello", "rooms": [room.clone()],
        "status": mock_status("primary", "alive", true, Value::Null),
        "events": joined(now - 60_000), "now_unix_ms": now, "tick_ms": 100}),
    );
    wait_page(
        &mut page,
        "understudyAdmin.state.connection === 'live'",
        10,
        "live on the mock",
    );
    assert_eq!(
        page.eval("document.getElementById('prot-word').textContent"),
        "PROTECTED"
    );
    assert_eq!(
        page.eval("document.getElementById('protection').className"),
        "protection prot-ok"
    );
    assert_eq!(
        page.eval("document.getElementById('ft-peer').textContent"),
        "alive"
    );
    assert_eq!(
        page.eval("document.getElementById('ft-lag').textContent"),
        "1.8 ms"
    );
    assert_eq!(
        page.eval("document.getElementById('node-role').textContent"),
        "PRIMARY"
    );
    assert_eq!(
        page.eval("document.getElementById('failover').disabled"),
        false
    );
    wait_page(
        &mut page,
        "document.querySelectorAll('#log .log-k-join').length === 2",
        5,
        "the hello's joins in the log",
    );
    page.screenshot(&shots.join("standby-protected.png"), Some("#standby"));

    // Mute and lock, as the socket reports them.
    ws_send(
        &mut page,
        serde_json::json!({"type": "mute", "room": "support", "id": 2,
        "name": "sip:agent2@10.0.0.2:5062", "at_unix_ms": now + 1000}),
    );
    ws_send(
        &mut page,
        serde_json::json!({"type": "room_update", "room": "support",
        "info": {"name": "support", "locked": true, "max_participants": 5}, "at_unix_ms": now + 1100}),
    );
    wait_page(
        &mut page,
        "document.querySelector('tr.part[data-id=\"2\"]').classList.contains('muted-row')",
        5,
        "MUTED",
    );
    assert_eq!(
        page.eval("document.querySelector('tr.part[data-id=\"2\"] .badge-muted').textContent"),
        "MUTED"
    );
    assert_eq!(
        page.eval("document.querySelector('tr.part[data-id=\"2\"] .mute-btn').textContent"),
        "Unmute"
    );
    assert_eq!(
        page.eval("document.querySelector('.room[data-room=\"support\"] .badge-locked').hidden"),
        false
    );
    assert_eq!(
        page.eval("document.querySelector('.room[data-room=\"support\"] .lock-toggle').checked"),
        true
    );
    assert_eq!(
        page.eval("document.querySelector('.room[data-room=\"support\"] .max-input').value"),
        "5"
    );
    wait_page(
        &mut page,
        "document.querySelectorAll('#log .log-k-mute').length === 1",
        5,
        "mute logged",
    );
    wait_page(
        &mut page,
        "document.querySelector('#log .log-k-room .log-text').textContent === 'Room locked, max participants 5'",
        5,
        "the room update in the log",
    );
    page.screenshot(&shots.join("rooms-muted-locked.png"), Some(".rooms-pane"));

    // The primary dies: the socket drops; on the same address the node that took over answers.
    page.cmd(
        serde_json::json!({"cmd": "ws_close", "code": 1011}),
        Duration::from_secs(5),
    )
    .expect("close the socket");
    ws_opened(&mut page, 2);
    let tk =
        serde_json::json!({"at_unix_ms": now + 2000, "duration_ms": 62.5, "calls": 2, "rooms": 1});
    let mut room2 = room.clone();
    room2["locked"] = true.into();
    room2["max_participants"] = 5.into();
    room2["participants"]["2"]["muted"] = true.into();
    let mut events = joined(now + 2050);
    events.push(serde_json::json!({"type": "takeover", "takeover": tk}));
    ws_send(
        &mut page,
        serde_json::json!({"type": "hello", "rooms": [room2],
        "status": mock_status("primary", "dead", false, tk.clone()),
        "events": events, "now_unix_ms": now + 3000, "tick_ms": 100}),
    );
    wait_page(
        &mut page,
        "understudyAdmin.state.hellos === 2 && understudyAdmin.state.connection === 'live'",
        10,
        "reconnected",
    );
    assert_eq!(
        page.eval("document.getElementById('prot-word').textContent"),
        "UNPROTECTED"
    );
    assert_eq!(
        page.eval("document.getElementById('protection').className"),
        "protection prot-bad"
    );
    let why = page.eval("document.getElementById('prot-why').textContent");
    assert!(why.as_str().unwrap().contains("dead"), "{why}");
    let last = page.eval("document.getElementById('ft-takeover').textContent");
    assert!(
        last.as_str().unwrap().contains("62.5 ms") && last.as_str().unwrap().contains("2 calls"),
        "{last}"
    );
    // The log is drawn at the next frame.
    wait_page(
        &mut page,
        "document.querySelectorAll('#log .log-k-takeover').length === 1",
        5,
        "the takeover in the log",
    );
    let log = page.eval("[...document.querySelectorAll('#log .log-entry')].map(e => e.className.split('log-k-')[1] + ': ' + e.querySelector('.log-text').textContent)");
    eprintln!("log after the takeover: {log:#}");
    let kinds: Vec<_> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().split(':').next().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "join").count(),
        2,
        "no second join for who was already there: {log:#}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "room").count(),
        2,
        "one room opened, one update: {log:#}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "takeover").count(),
        1,
        "{log:#}"
    );
    assert!(
        kinds.iter().any(|k| k == "bad"),
        "the lost protection is logged: {log:#}"
    );
    assert_eq!(page.eval(&format!("{}.length", rows_js("support"))), 2);
    page.screenshot(&shots.join("standby-takeover.png"), Some("#standby"));
    page.screenshot(&shots.join("overview-after-takeover.png"), None);

    // The old primary comes back as the standby: protected again. (The page may have logged
    // a protection already: its first GET /api/status, from the real standalone server, and
    // the mocked hello race.)
    let ok_before = page
        .eval("document.querySelectorAll('#log .log-k-ok').length")
        .as_u64()
        .unwrap_or(0);
    ws_send(
        &mut page,
        serde_json::json!({"type": "status",
        "status": mock_status("primary", "alive", true, tk)}),
    );
    wait_page(
        &mut page,
        "document.getElementById('prot-word').textContent === 'PROTECTED'",
        5,
        "protected again",
    );
    wait_page(
        &mut page,
        &format!(
            "document.querySelectorAll('#log .log-k-ok').length === {}",
            ok_before + 1
        ),
        5,
        "protection logged",
    );

    // Planned switchover asks first, then posts; this server (standalone, and without the
    // control routes on this branch) refuses, and the page says so.
    page.click("#failover");
    wait_page(
        &mut page,
        "document.getElementById('confirm').open",
        5,
        "the switchover confirmation",
    );
    page.screenshot(&shots.join("switchover-confirm.png"), None);
    page.click("#confirm-ok");
    let err = wait_page(
        &mut page,
        "understudyAdmin.lastError && understudyAdmin.lastError.message",
        10,
        "the refusal shown",
    );
    assert!(
        err.as_str()
            .unwrap()
            .starts_with("Planned switchover failed"),
        "{err}"
    );
    assert_eq!(
        page.eval("document.querySelectorAll('.toast-error').length"),
        1
    );
    let reqs = page.requests();
    assert!(
        reqs["requests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["method"] == "POST" && r["url"] == "/api/failover"),
        "{reqs:#}"
    );
    assert_eq!(page.state()["pageErrors"], serde_json::json!([]));
}

/// The control routes through the page (`POST /api/rooms/{room}/participants/{id}/mute|unmute`,
/// `DELETE /api/rooms/{room}/participants/{id}`, `PUT /api/rooms/{room}`; `muted`, `locked`,
/// `max_participants` in `/api/rooms`).
///
/// Steps: two callers in room "ops" (sipp waiting for the server's BYE). Through the UI:
/// mute the first (its row shows MUTED, `/api/rooms` says `muted`, a `mute` log entry),
/// unmute it; lock the room (LOCKED badge, `/api/rooms` `locked`, a third caller refused);
/// set max participants to 5 (`/api/rooms` `max_participants` 5); kick the second with the
/// confirmation (it gets a BYE, a `leave` in the log, its row goes).
#[test]
fn mute_kick_lock_and_max_participants_through_the_ui() {
    testkit::require::tools(&["sipp"]);
    testkit::browser::require();
    let dir = Scratch::new("admin-actions");
    let shots = artifacts_dir("admin-ui");
    let bye = common::scenario("wait_for_bye.xml");
    let srv = TestServer::start(args("38190-38219"));
    let mut page = AdminPage::start(&format!("http://{}/", srv.http), &[]);
    wait_page(
        &mut page,
        "understudyAdmin.state.connection === 'live'",
        10,
        "live",
    );
    // One after the other: the first caller is the first row (ids in arrival order).
    let rows = rows_js("ops");
    let mut a = peers::sipp(&bye, "ops", 38220, 38222, false, srv.sip, &dir.0);
    wait_page(&mut page, &format!("{rows}.length === 1"), 20, "one row");
    let mut b = peers::sipp(&bye, "ops", 38230, 38232, false, srv.sip, &dir.0);
    wait_page(&mut page, &format!("{rows}.length === 2"), 20, "two rows");
    let first = "document.querySelector('.room[data-room=\"ops\"] tr.part')";

    // Mute, then unmute, the first participant.
    page.click(".room[data-room=\"ops\"] tr.part .mute-btn");
    wait_page(
        &mut page,
        &format!("{first}.classList.contains('muted-row')"),
        10,
        "MUTED shown",
    );
    wait_page(
        &mut page,
        "document.querySelectorAll('#log .log-k-mute').length === 1",
        10,
        "mute logged",
    );
    let rooms = srv.get_json("/api/rooms");
    let muted: Vec<_> = rooms["rooms"][0]["participants"]
        .as_object()
        .unwrap()
        .values()
        .filter(|p| p["muted"] == true)
        .collect();
    assert_eq!(muted.len(), 1, "{rooms:#}");
    page.screenshot(&shots.join("muted.png"), Some(".rooms-pane"));
    page.click(".room[data-room=\"ops\"] tr.part .mute-btn");
    wait_page(
        &mut page,
        &format!("!{first}.classList.contains('muted-row')"),
        10,
        "unmuted",
    );
    wait_page(
        &mut page,
        "document.querySelectorAll('#log .log-k-unmute').length === 1",
        10,
        "unmute logged",
    );

    // Lock the room: a new caller is refused.
    page.click(".room[data-room=\"ops\"] .switch");
    wait_page(
        &mut page,
        "!document.querySelector('.room[data-room=\"ops\"] .badge-locked').hidden",
        10,
        "LOCKED shown",
    );
    assert_eq!(srv.get_json("/api/rooms")["rooms"][0]["locked"], true);
    let mut refused = peers::sipp(&bye, "ops", 38240, 38242, false, srv.sip, &dir.0);
    let st = wait_timeout(&mut refused, Duration::from_secs(20)).expect("sipp ends");
    assert!(!st.success(), "a locked room refuses a new caller");
    assert_eq!(page.eval(&format!("{rows}.length")), 2);

    // Max participants.
    page.fill(".room[data-room=\"ops\"] .max-input", "5");
    page.click(".room[data-room=\"ops\"] .max-form button");
    wait_page(
        &mut page,
        "understudyAdmin.state.rooms.ops.max_participants === 5",
        10,
        "max 5",
    );
    assert_eq!(
        srv.get_json("/api/rooms")["rooms"][0]["max_participants"],
        5
    );

    // Kick the second, confirmed.
    page.click(".room[data-room=\"ops\"] tr.part:nth-child(2) .kick-btn");
    wait_page(
        &mut page,
        "document.getElementById('confirm').open",
        5,
        "confirmation",
    );
    page.click("#confirm-ok");
    wait_page(
        &mut page,
        &format!("{rows}.length === 1"),
        10,
        "the kicked row goes",
    );
    wait_page(
        &mut page,
        "document.querySelectorAll('#log .log-k-leave').length === 1",
        10,
        "leave logged",
    );
    let st = wait_timeout(&mut b, Duration::from_secs(10)).expect("the kicked caller got a BYE");
    assert!(st.success(), "sipp answered the BYE (exit {st})");
    assert_page_clean(&mut page);
    drop(srv);
    let _ = wait_timeout(&mut a, Duration::from_secs(10));
}

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The operator mutes a real talker by clicking in the page (signed in with `#token=`), and
/// what another participant receives (captured on the wire, decoded) loses the talker's voice
/// within 200 ms of the click and gets it back after the unmute click.
#[test]
fn mute_through_the_ui_is_heard_on_the_wire() {
    testkit::require::e2e("tcpdump on lo", &["sipp", "tcpdump"]);
    testkit::browser::require();
    const LISTENER: (u16, u16) = (38340, 38342);
    const TALKER: (u16, u16) = (38350, 38352);
    let dir = Scratch::new("admin-ui-wire");
    let shots = artifacts_dir("admin-ui");
    let talk = peers::uac_pcap_scenario_times(&dir.0, 2);
    let bye = common::scenario("wait_for_bye.xml");
    let srv = TestServer::start(common::with_admin_token(args("38300-38339")));
    let url = format!("http://{}/#token={}", srv.http, common::ADMIN_TOKEN);
    let mut page = AdminPage::start(&url, &[]);
    wait_page(
        &mut page,
        "understudyAdmin.state.connection === 'live'",
        10,
        "signed in by #token and live",
    );
    let cap = testkit::capture::Capture::start(
        &dir.path("listener.pcap"),
        &format!("udp and dst port {}", LISTENER.1),
    );
    let mut listener = testkit::process::Guarded(peers::sipp(
        &bye, "ops", LISTENER.0, LISTENER.1, false, srv.sip, &dir.0,
    ));
    let rows = rows_js("ops");
    wait_page(
        &mut page,
        &format!("{rows}.length === 1"),
        20,
        "the listener's row",
    );
    let mut talker = testkit::process::Guarded(peers::sipp(
        &talk, "ops", TALKER.0, TALKER.1, false, srv.sip, &dir.0,
    ));
    wait_page(
        &mut page,
        &format!("{rows}.length === 2"),
        20,
        "the talker's row",
    );
    let joined = Instant::now();
    let rooms = srv.get_json("/api/rooms");
    let talker_id = rooms["rooms"][0]["participants"]
        .as_object()
        .unwrap()
        .values()
        .find(|p| {
            p["sip_uri"]
                .as_str()
                .is_some_and(|u| u.contains(&format!(":{}", TALKER.0)))
        })
        .and_then(|p| p["id"].as_u64())
        .expect("the talker in /api/rooms");
    let row = format!(".room[data-room=\"ops\"] tr.part[data-id=\"{talker_id}\"]");

    // Two seconds of speech, then the operator clicks Mute on the talker's row.
    std::thread::sleep(Duration::from_secs(2).saturating_sub(joined.elapsed()));
    let t_mute = now_s();
    page.click(&format!("{row} .mute-btn"));
    wait_page(
        &mut page,
        &format!(
            "document.querySelector('{}').classList.contains('muted-row')",
            row.replace('\'', "\\'")
        ),
        5,
        "MUTED shown",
    );
    page.screenshot(&shots.join("wire-muted.png"), Some(".rooms-pane"));
    std::thread::sleep(
        Duration::from_secs(3).saturating_sub(Duration::from_secs_f64(now_s() - t_mute)),
    );
    let t_unmute = now_s();
    page.click(&format!("{row} .mute-btn"));
    wait_page(
        &mut page,
        &format!(
            "!document.querySelector('{}').classList.contains('muted-row')",
            row.replace('\'', "\\'")
        ),
        5,
        "unmuted",
    );
    std::thread::sleep(Duration::from_millis(1600));
    drop(talker.0.kill());
    drop(listener.0.kill());
    let _ = wait_timeout(&mut talker.0, Duration::from_secs(5));
    let _ = wait_timeout(&mut listener.0, Duration::from_secs(5));
    let pcap = cap.stop();

    let levels = common::received_alaw_levels(&pcap, LISTENER.1);
    let loud_in = |from: f64, to: f64| {
        levels
            .iter()
            .filter(|(t, db)| *t >= from && *t < to && *db > common::SPEECH_DBFS)
            .count()
    };
    let muted: Vec<_> = levels
        .iter()
        .filter(|(t, _)| *t >= t_mute + 0.2 && *t < t_unmute)
        .collect();
    let max_muted = muted.iter().map(|(_, db)| *db).fold(-120.0, f64::max);
    eprintln!(
        "listener: {} loud packets in the 1.5 s before the Mute click, {} packets from 200 ms \
         after it to the Unmute click (loudest {max_muted:.1} dBFS), {} loud in the 1.3 s after \
         the Unmute click",
        loud_in(t_mute - 1.5, t_mute),
        muted.len(),
        loud_in(t_unmute + 0.2, t_unmute + 1.5)
    );
    assert!(
        loud_in(t_mute - 1.5, t_mute) >= 10,
        "the talker was heard before the mute"
    );
    assert!(
        muted.len() >= 100,
        "the listener kept receiving the mix while the talker was muted: {} packets",
        muted.len()
    );
    assert!(
        max_muted < common::SILENCE_DBFS,
        "the muted talker was heard later than 200 ms after the click: loudest {max_muted:.1} dBFS"
    );
    assert!(
        loud_in(t_unmute + 0.2, t_unmute + 1.5) >= 10,
        "the talker is heard again after the Unmute click"
    );
    assert_page_clean(&mut page);
}
