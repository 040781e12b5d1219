//! The operators' side: the live-update WebSocket (`GET /api/ws`) and the admin page
//! (`GET /`, `web-client/admin.*`) against an in-process server on loopback with real sipp
//! participants (sipp's recorded A-law speech, then RFC 2833 DTMF '1', then BYE).
//!
//! - [`live_socket_sends_hello_then_the_call_as_it_happens`]: a WebSocket client
//!   (tokio-tungstenite) gets `hello`, then sipp's `room_open`, `join`, `levels` with its
//!   speech, its `dtmf` and its `leave`, in that order.
//! - [`admin_page_shows_rooms_levels_and_events_live`]: headless Chromium
//!   (`web-client/test/admin.mjs`) logs in, sees the room with its sipp participants and their
//!   live levels, and a join and a leave arrive in the event log; screenshots of each view in
//!   `target/test-artifacts/admin-ui/`.

mod common;
use common::{args, TestServer};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::time::{Duration, Instant};
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
        assert!(
            pos("room_open") < pos("join")
                && pos("join") < pos("levels")
                && pos("levels") < pos("dtmf")
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
        let levels: Vec<_> = msgs.iter().filter(|m| m["type"] == "levels").collect();
        let span = msgs[pos("leave")]["at_unix_ms"].as_u64().unwrap()
            - join["at_unix_ms"].as_u64().unwrap();
        let expected = span / 100;
        assert!(
            levels.len() as u64 >= expected * 7 / 10 && levels.len() as u64 <= expected + 5,
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
