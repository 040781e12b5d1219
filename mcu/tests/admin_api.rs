//! The operator's HTTP API end to end, as its clients observe it:
//!
//! - with real sipp participants on loopback (root: tcpdump): a talker playing sipp's
//!   recorded A-law speech and a listener whose received RTP is captured and decoded. Muting
//!   the talker takes its voice out of what the listener receives within 200 ms (while the
//!   server still measures the talker speaking); unmuting brings it back. Kicking the listener
//!   sends it a BYE (sipp answers it and ends its scenario successfully). Locking the room
//!   refuses the next INVITE with `403 Room Locked`.
//! - without root: the bearer token (401 without it or with a wrong one, 200 with it, the
//!   open paths stay open), every malformed request (404, 400, 413, 415, 405), the open
//!   roster `GET /rooms/{room}/members` (no addresses), a room's video layout (the server's
//!   `--video-layout` until set, shown in `GET /api/rooms`, bad values refused), and a
//!   server that refuses to start on a non-loopback HTTP address without a token file.

mod common;
use common::uac::Uac;
use common::{args, bearer, with_admin_token, TestServer, ADMIN_TOKEN, SILENCE_DBFS, SPEECH_DBFS};
use mcu::config::ServeArgs;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use testkit::http::{self as th, Response};
use testkit::{peers, Scratch};

fn auth() -> Vec<(&'static str, String)> {
    vec![("Authorization", bearer())]
}

fn hdrs<'a>(h: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    h.iter().map(|(n, v)| (*n, v.as_str())).collect()
}

fn post(srv: &TestServer, path: &str, extra: &[(&'static str, &str)], body: &[u8]) -> Response {
    let mut h = auth();
    h.extend(extra.iter().map(|(n, v)| (*n, v.to_string())));
    th::post(srv.http, path, &hdrs(&h), body).unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

fn put_json(srv: &TestServer, path: &str, body: &str) -> Response {
    let mut h = auth();
    h.push(("Content-Type", "application/json".into()));
    th::put(srv.http, path, &hdrs(&h), body.as_bytes())
        .unwrap_or_else(|e| panic!("PUT {path}: {e}"))
}

fn delete(srv: &TestServer, path: &str) -> Response {
    th::delete(srv.http, path, &hdrs(&auth())).unwrap_or_else(|e| panic!("DELETE {path}: {e}"))
}

fn json(r: &Response) -> serde_json::Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.body))
}

/// An error answer: its status and a JSON `{"error": "..."}` body.
fn assert_error(r: &Response, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.body);
    let v = json(r);
    assert!(
        v["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{what}: {}",
        r.body
    );
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The participant of `room` whose SIP URI contains `needle`, from `GET /api/rooms`.
fn participant(srv: &TestServer, room: &str, needle: &str) -> Option<serde_json::Value> {
    let rooms = srv.get_json("/api/rooms");
    rooms["rooms"]
        .as_array()?
        .iter()
        .find(|r| r["name"] == room)?["participants"]
        .as_object()?
        .values()
        .find(|p| p["sip_uri"].as_str().is_some_and(|u| u.contains(needle)))
        .cloned()
}

#[test]
fn operator_mutes_a_real_talker_kicks_a_listener_and_locks_the_room() {
    testkit::require::e2e("tcpdump on lo", &["sipp", "tcpdump"]);
    const RTP: (u16, u16) = (39200, 39249);
    const TALKER: (u16, u16) = (25901, 27000);
    const LISTENER: (u16, u16) = (25902, 27010);
    let dir = Scratch::new("e2e-admin-api");
    // The recorded speech twice (about 17 s of call): the room still has the talker when
    // the listener is gone and the room is locked.
    let talk = peers::uac_pcap_scenario_times(&dir.0, 2);
    let mut srv = TestServer::start(with_admin_token(args(&format!("{}-{}", RTP.0, RTP.1))));
    let cap = testkit::capture::Capture::start(
        &dir.path("listener.pcap"),
        &format!("udp and dst port {}", LISTENER.1),
    );
    let mut listener = testkit::process::Guarded(peers::sipp(
        &common::scenario("wait_for_bye.xml"),
        "standup",
        LISTENER.0,
        LISTENER.1,
        false,
        srv.sip,
        &dir.0,
    ));
    srv.log
        .wait_count("joined room", 1, Duration::from_secs(20))
        .expect("the listener joined");
    let mut talker = testkit::process::Guarded(peers::sipp(
        &talk, "standup", TALKER.0, TALKER.1, false, srv.sip, &dir.0,
    ));
    srv.log
        .wait_count("joined room", 2, Duration::from_secs(20))
        .expect("the talker joined");
    let joined = Instant::now();
    srv.wait_participants(2, Duration::from_secs(5));
    let talker_p = participant(&srv, "standup", &format!(":{}", TALKER.0)).expect("talker shown");
    let listener_p =
        participant(&srv, "standup", &format!(":{}", LISTENER.0)).expect("listener shown");
    let (talker_id, listener_id) = (
        talker_p["id"].as_u64().unwrap(),
        listener_p["id"].as_u64().unwrap(),
    );
    assert_eq!(talker_p["muted"], false);

    // Two seconds of speech heard, then muted for three seconds.
    std::thread::sleep(Duration::from_secs(2).saturating_sub(joined.elapsed()));
    let base = format!("/api/rooms/standup/participants/{talker_id}");
    let t_mute = now_s();
    let r = post(&srv, &format!("{base}/mute"), &[], b"");
    assert_eq!(r.status, 200, "{}", r.body);
    let shown = json(&r);
    assert_eq!(
        (shown["id"].as_u64(), &shown["muted"]),
        (Some(talker_id), &serde_json::json!(true))
    );
    assert_eq!(shown["kind"], "sip");
    // While muted: the server still measures the talker speaking, never mixes it.
    let mut loudest = -127.0f64;
    while now_s() < t_mute + 3.0 {
        let p = participant(&srv, "standup", &format!(":{}", TALKER.0)).expect("talker shown");
        assert_eq!(p["muted"], true, "{p}");
        if now_s() > t_mute + 0.2 {
            assert_eq!(p["in_mix"], false, "{p}");
        }
        loudest = loudest.max(p["level_dbov"].as_f64().unwrap_or(-127.0));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        loudest > -40.0,
        "the muted talker's level is still measured: {loudest}"
    );
    let t_unmute = now_s();
    let r = post(&srv, &format!("{base}/unmute"), &[], b"");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json(&r)["muted"], false);
    std::thread::sleep(Duration::from_millis(1500));

    // Kick the listener: its sipp gets our BYE, answers it and ends its scenario.
    let r = delete(
        &srv,
        &format!("/api/rooms/standup/participants/{listener_id}"),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let st = testkit::process::wait_timeout(&mut listener.0, Duration::from_secs(10))
        .expect("the kicked listener's sipp ends");
    assert!(
        st.success(),
        "the listener's sipp did not get its BYE (exit {st})"
    );

    // Lock the room: the next INVITE gets 403 Room Locked; the talker stays.
    let r = put_json(&srv, "/api/rooms/standup", r#"{"locked": true}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    let settings = json(&r);
    assert_eq!(settings["locked"], true);
    assert_eq!(settings["max_participants"], 100);
    let late = Uac::new(srv.sip, "standup", "late");
    let offer = late.pcmu_offer("127.0.0.1:27020".parse().unwrap());
    let inv = late.request("INVITE", 1, "late1", "", &offer);
    let got = late.transact(&inv, "INVITE", Duration::from_secs(5));
    let last = got.last().map(|(_, m)| m.clone()).unwrap_or_default();
    assert!(last.starts_with("SIP/2.0 403 Room Locked\r\n"), "{last}");
    let ack = late.request("ACK", 1, "late1", "", "");
    late.send_raw(ack.as_bytes());
    let rooms = srv.get_json("/api/rooms");
    let room = &rooms["rooms"][0];
    assert_eq!(
        (&room["locked"], &room["max_participants"]),
        (&serde_json::json!(true), &serde_json::json!(100))
    );
    assert_eq!(
        room["participants"].as_object().unwrap().len(),
        1,
        "{rooms:#}"
    );

    let st = testkit::process::wait_timeout(&mut talker.0, Duration::from_secs(30))
        .expect("the talker's sipp ends");
    assert!(st.success(), "talker exit {st}");
    let pcap = cap.stop();

    // What the listener received, decoded.
    let levels = common::received_alaw_levels(&pcap, LISTENER.1);
    let loud_in = |from: f64, to: f64| {
        levels
            .iter()
            .filter(|(t, db)| *t >= from && *t < to && *db > SPEECH_DBFS)
            .count()
    };
    assert!(
        loud_in(t_mute - 1.5, t_mute) >= 10,
        "the talker was heard before the mute: {:?}",
        levels
            .iter()
            .filter(|(t, _)| *t >= t_mute - 1.5 && *t < t_mute)
            .collect::<Vec<_>>()
    );
    let muted: Vec<_> = levels
        .iter()
        .filter(|(t, _)| *t >= t_mute + 0.2 && *t < t_unmute)
        .collect();
    assert!(
        muted.len() >= 100,
        "the listener kept receiving the mix: {} packets",
        muted.len()
    );
    let heard: Vec<_> = muted.iter().filter(|(_, db)| *db > SILENCE_DBFS).collect();
    let max_muted = muted.iter().map(|(_, db)| *db).fold(-120.0, f64::max);
    eprintln!(
        "listener: {} loud packets in the 1.5 s before the mute, {} packets while muted \
         (loudest {max_muted:.1} dBFS), {} loud in the 1.3 s after the unmute; the server \
         measured the muted talker up to {loudest:.1} dBov",
        loud_in(t_mute - 1.5, t_mute),
        muted.len(),
        loud_in(t_unmute + 0.2, t_unmute + 1.5)
    );
    assert!(
        heard.is_empty(),
        "the muted talker was heard later than 200 ms after the mute: {heard:?}"
    );
    assert!(
        loud_in(t_unmute + 0.2, t_unmute + 1.5) >= 10,
        "the talker is heard again after the unmute: {:?}",
        levels
            .iter()
            .filter(|(t, _)| *t >= t_unmute && *t < t_unmute + 1.5)
            .collect::<Vec<_>>()
    );
}

#[test]
fn the_admin_api_needs_the_token_and_the_rest_stays_open() {
    let srv = TestServer::start(with_admin_token(args("39250-39299")));
    let mut ua = Uac::new(srv.sip, "standup", "tok");
    ua.call(&ua.pcmu_offer("127.0.0.1:27030".parse().unwrap()));
    srv.wait_participants(1, Duration::from_secs(5));
    let get = |path: &str, h: &[(&str, &str)]| {
        th::get_with(srv.http, path, h).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    };
    let good = bearer();
    for path in [
        "/api/rooms",
        "/api/status",
        "/api/events",
        "/api/ws",
        "/api/nonexistent",
    ] {
        let none = get(path, &[]);
        assert_error(&none, 401, path);
        assert_eq!(
            none.header("www-authenticate"),
            Some(r#"Bearer realm="understudy""#),
            "{path}"
        );
        for wrong in [
            "Bearer nope",
            "Basic dXNlcjpwYXNz",
            "Bearer",
            &format!("Bearer {ADMIN_TOKEN}x"),
        ] {
            let r = get(path, &[("Authorization", wrong)]);
            assert_error(&r, 401, &format!("{path} with {wrong:?}"));
            assert!(r
                .header("www-authenticate")
                .is_some_and(|c| c.starts_with("Bearer")));
        }
        // The query parameter counts for a WebSocket upgrade only.
        let q = format!("{path}?access_token={ADMIN_TOKEN}");
        assert_eq!(get(&q, &[]).status, 401, "{q} without Upgrade");
    }
    for path in ["/api/rooms", "/api/status", "/api/events"] {
        assert_eq!(get(path, &[("Authorization", &good)]).status, 200, "{path}");
        assert_eq!(
            get(path, &[("authorization", &format!("bearer {ADMIN_TOKEN}"))]).status,
            200
        );
        let q = format!("{path}?access_token={ADMIN_TOKEN}");
        let r = get(&q, &[("Upgrade", "websocket"), ("Connection", "Upgrade")]);
        assert_ne!(r.status, 401, "{q} with Upgrade: {}", r.body);
    }
    // A write without the token changes nothing.
    let r = th::post(srv.http, "/api/rooms/standup/participants/1/mute", &[], b"").unwrap();
    assert_eq!(r.status, 401);
    let r = th::put(
        srv.http,
        "/api/rooms/standup",
        &[("Content-Type", "application/json")],
        br#"{"locked":true}"#,
    )
    .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(srv.get_json("/api/rooms")["rooms"][0]["locked"], false);
    // Open: health, metrics, the page, its roster, WHIP's discovery.
    for path in [
        "/healthz",
        "/metrics",
        "/room/standup",
        "/static/room.js",
        "/rooms/standup/members",
    ] {
        assert_eq!(get(path, &[]).status, 200, "{path}");
    }
    assert_eq!(
        get("/whip/standup", &[]).status,
        405,
        "WHIP is not behind the token"
    );
    // Paths that only look like the API are not the API (no route serves them).
    for path in ["//api/status", "/%61pi/status", "/API/status", "/apis"] {
        assert_eq!(get(path, &[]).status, 404, "{path}");
    }
}

#[test]
fn bad_requests_get_their_status_and_never_break_the_server() {
    let srv = TestServer::start(with_admin_token(args("39300-39349")));
    let mut a = Uac::new(srv.sip, "standup", "bada");
    a.call(&a.pcmu_offer("127.0.0.1:27040".parse().unwrap()));
    let mut f = Uac::new(srv.sip, "retro", "badf");
    f.call(&f.pcmu_offer("127.0.0.1:27050".parse().unwrap()));
    let rooms = srv.wait_participants(2, Duration::from_secs(5));
    let id_in = |room: &str| -> u64 {
        let r = rooms["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == room)
            .unwrap();
        r["participants"]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()["id"]
            .as_u64()
            .unwrap()
    };
    let (ida, idf) = (id_in("standup"), id_in("retro"));
    let json_ct = [("Content-Type", "application/json")];

    // 404: unknown room, unknown participant, another room's participant, bad names and ids.
    for (path, what) in [
        (
            format!("/api/rooms/nosuch/participants/{ida}/mute"),
            "unknown room",
        ),
        (
            format!("/api/rooms/standup/participants/{idf}/mute"),
            "another room's participant",
        ),
        (
            "/api/rooms/standup/participants/999999/mute".into(),
            "unknown participant",
        ),
        (
            "/api/rooms/standup/participants/abc/mute".into(),
            "not an id",
        ),
        (
            "/api/rooms/standup/participants/-1/mute".into(),
            "negative id",
        ),
        (
            "/api/rooms/standup/participants/99999999999999999999999/mute".into(),
            "id overflow",
        ),
        (
            format!("/api/rooms/a%20b/participants/{ida}/mute"),
            "invalid room name",
        ),
        (
            format!("/api/rooms/%FF/participants/{ida}/mute"),
            "not UTF-8",
        ),
        (
            format!("/api/rooms/{}/participants/{ida}/mute", "x".repeat(65)),
            "name too long",
        ),
    ] {
        assert_error(&post(&srv, &path, &[], b""), 404, what);
    }
    assert_error(
        &delete(&srv, &format!("/api/rooms/standup/participants/{idf}")),
        404,
        "kick of another room's",
    );
    assert_error(
        &put_json(&srv, "/api/rooms/nosuch", r#"{"locked":true}"#),
        404,
        "settings of an unknown room",
    );
    // 400: malformed JSON, wrong types, unknown fields, limits out of range.
    for body in [
        "{",
        "not json",
        r#"{"locked": "yes"}"#,
        r#"{"locked": 1}"#,
        r#"{"max_participants": -1}"#,
        r#"{"max_participants": 2.5}"#,
        r#"{"max_participants": "3"}"#,
        r#"{"max_participants": 0}"#,
        r#"{"max_participants": 101}"#,
        r#"{"max_participants": 18446744073709551615}"#,
        r#"{"max_participants": 1e400}"#,
        r#"{"lockd": true}"#,
        r#"{"locked": true, "extra": 1}"#,
        r#"{"locked": true} trailing"#,
        "[]",
        "null",
        "",
    ] {
        assert_error(&put_json(&srv, "/api/rooms/standup", body), 400, body);
    }
    assert_error(
        &post(
            &srv,
            &format!("/api/rooms/standup/participants/{ida}/mute"),
            &json_ct,
            br#"{"muted":true}"#,
        ),
        400,
        "mute takes no parameters",
    );
    // 413: a body over 4 KiB, whatever it holds.
    let big = format!(r#"{{"locked": true, "pad": "{}"}}"#, "x".repeat(5000));
    assert_error(
        &put_json(&srv, "/api/rooms/standup", &big),
        413,
        "large PUT",
    );
    assert_error(
        &post(
            &srv,
            &format!("/api/rooms/standup/participants/{ida}/mute"),
            &json_ct,
            big.as_bytes(),
        ),
        413,
        "large POST",
    );
    // 415: not JSON.
    let mut h = auth();
    h.push(("Content-Type", "text/plain".into()));
    let r = th::put(
        srv.http,
        "/api/rooms/standup",
        &hdrs(&h),
        br#"{"locked":true}"#,
    )
    .unwrap();
    assert_error(&r, 415, "text/plain");
    let r = th::put(
        srv.http,
        "/api/rooms/standup",
        &hdrs(&auth()),
        br#"{"locked":true}"#,
    )
    .unwrap();
    assert_error(&r, 415, "no Content-Type");
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    assert_error(
        &post(
            &srv,
            &format!("/api/rooms/standup/participants/{ida}/mute"),
            &form,
            b"a=1",
        ),
        415,
        "form",
    );
    // 405: the wrong method.
    let r = th::get_with(srv.http, "/api/rooms/standup", &hdrs(&auth())).unwrap();
    assert_eq!(r.status, 405);
    let r = post(
        &srv,
        &format!("/api/rooms/standup/participants/{ida}"),
        &[],
        b"",
    );
    assert_eq!(r.status, 405);
    // Nothing changed, and the server still serves: the well-formed requests work.
    let rooms = srv.get_json("/api/rooms");
    for r in rooms["rooms"].as_array().unwrap() {
        assert_eq!(r["locked"], false, "{r}");
        for p in r["participants"].as_object().unwrap().values() {
            assert_eq!(p["muted"], false, "{p}");
        }
    }
    // An empty JSON object changes nothing and shows the settings; so does an empty body
    // with mute (or `{}`).
    let r = put_json(&srv, "/api/rooms/standup", "{}");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        json(&r),
        serde_json::json!({"name": "standup", "locked": false, "max_participants": 100, "layout": "switched"})
    );
    let r = put_json(
        &srv,
        "/api/rooms/standup",
        r#"{"locked": null, "max_participants": 2}"#,
    );
    assert_eq!(json(&r)["max_participants"], 2);
    let r = post(
        &srv,
        &format!("/api/rooms/standup/participants/{ida}/mute"),
        &json_ct,
        b"{}",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json(&r)["muted"], true);
    assert_eq!(srv.get("/healthz").0, 200);
}

#[test]
fn the_roster_is_open_and_shows_no_addresses() {
    let srv = TestServer::start(with_admin_token(args("39350-39399")));
    let mut a = Uac::new(srv.sip, "standup", "rost");
    a.call(&a.pcmu_offer("127.0.0.1:27060".parse().unwrap()));
    let mut f = Uac::new(srv.sip, "retro", "rosf");
    f.call(&f.pcmu_offer("127.0.0.1:27070".parse().unwrap()));
    let rooms = srv.wait_participants(2, Duration::from_secs(5));
    let (code, body) = th::get(srv.http, "/rooms/standup/members").unwrap();
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["room"], "standup");
    let members = v["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "only this room's: {v}");
    let m = &members[0];
    assert_eq!(
        (&m["name"], &m["kind"]),
        (&serde_json::json!("tester"), &serde_json::json!("sip"))
    );
    for key in ["speaking", "level_dbov", "muted", "id"] {
        assert!(m.get(key).is_some(), "{key}: {m}");
    }
    // No address, no port, no SIP URI, no other room's participant.
    assert!(
        !body.contains("127.0.0.1") && !body.contains("sip:"),
        "{body}"
    );
    let other = rooms["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "retro")
        .unwrap();
    let other_id = other["participants"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    assert!(!body.contains(&other_id), "{body}");
    // A valid room nobody is in: empty; an invalid name: 404.
    let v: serde_json::Value =
        serde_json::from_str(&th::get(srv.http, "/rooms/empty/members").unwrap().1).unwrap();
    assert_eq!(v["members"], serde_json::json!([]));
    assert_eq!(th::get(srv.http, "/rooms/a%20b/members").unwrap().0, 404);
    // The mute shows on the page's roster too.
    let id = m["id"].as_u64().unwrap();
    post(
        &srv,
        &format!("/api/rooms/standup/participants/{id}/mute"),
        &[],
        b"",
    );
    let v: serde_json::Value =
        serde_json::from_str(&th::get(srv.http, "/rooms/standup/members").unwrap().1).unwrap();
    assert_eq!(v["members"][0]["muted"], true);
    // The participant page polls this roster, not the admin API.
    let (_, js) = th::get(srv.http, "/static/room.js").unwrap();
    assert!(js.contains("/members") && !js.contains("/api/rooms"));
}

#[test]
fn a_non_loopback_http_listen_without_token_file_refuses_to_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcu"))
        .args(["serve", "--sip-listen", "127.0.0.1:0", "--webrtc-port", "0"])
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--http-listen",
            "192.0.2.1:0",
        ])
        .output()
        .expect("run mcu");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--admin-token-file") && err.contains("192.0.2.1"),
        "{err}"
    );
    // An empty token file is refused too.
    let dir = Scratch::new("admin-token-empty");
    std::fs::write(dir.path("empty"), "\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcu"))
        .args(["serve", "--sip-listen", "127.0.0.1:0", "--webrtc-port", "0"])
        .args(["--http-listen", "127.0.0.1:0", "--admin-token-file"])
        .arg(dir.path("empty"))
        .output()
        .expect("run mcu");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admin-token-file") && err.contains("empty"),
        "{err}"
    );
    // With the token the same addresses serve (the in-process server, port 0).
    let mut a = with_admin_token(args("39400-39449"));
    a.http_listen = vec![
        "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
        "192.0.2.1:0".parse().unwrap(),
    ];
    let srv = TestServer::start(a);
    assert_eq!(srv.get("/api/status").0, 200);
}

#[test]
fn a_rooms_video_layout_is_the_servers_until_set_and_bad_values_are_refused() {
    let srv = TestServer::start(with_admin_token(ServeArgs {
        video_layout: Some("grid".into()),
        ..args("39800-39849")
    }));
    let mut a = Uac::new(srv.sip, "standup", "lay1");
    a.call(&a.pcmu_offer("127.0.0.1:27300".parse().unwrap()));
    let mut b = Uac::new(srv.sip, "retro", "lay2");
    b.call(&b.pcmu_offer("127.0.0.1:27310".parse().unwrap()));
    srv.wait_participants(2, Duration::from_secs(5));
    let layout_of = |room: &str| -> serde_json::Value {
        srv.get_json("/api/rooms")["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == room)
            .map(|r| r["layout"].clone())
            .unwrap_or_default()
    };
    // The server's default until the operator sets one.
    assert_eq!(layout_of("standup"), "grid");
    let r = put_json(&srv, "/api/rooms/standup", r#"{"layout": "switched"}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        json(&r),
        serde_json::json!({"name": "standup", "locked": false, "max_participants": 100, "layout": "switched"})
    );
    assert_eq!(layout_of("standup"), "switched");
    assert_eq!(layout_of("retro"), "grid", "another room keeps its own");
    // Absent or null: unchanged; another field changes alone.
    let r = put_json(
        &srv,
        "/api/rooms/standup",
        r#"{"layout": null, "locked": true}"#,
    );
    assert_eq!(json(&r)["layout"], "switched");
    assert_eq!(json(&r)["locked"], true);
    // Anything but "switched" or "grid": 400, nothing changed.
    for bad in [
        r#"{"layout": "mosaic"}"#,
        r#"{"layout": "Grid"}"#,
        r#"{"layout": 1}"#,
        r#"{"layout": ["grid"]}"#,
        r#"{"layout": "grid", "columns": 3}"#,
    ] {
        assert_error(&put_json(&srv, "/api/rooms/standup", bad), 400, bad);
    }
    assert_eq!(layout_of("standup"), "switched");
    // A room nobody is in has no layout to set.
    assert_error(
        &put_json(&srv, "/api/rooms/nosuch", r#"{"layout": "grid"}"#),
        404,
        "unknown room",
    );
    let r = put_json(&srv, "/api/rooms/retro", r#"{"layout": "switched"}"#);
    assert_eq!(json(&r)["layout"], "switched");
    assert_eq!(layout_of("retro"), "switched");
}
