//! `mcu::launch` as tests use it ([`common::TestServer`]): every port 0, real addresses
//! reported once the listeners are bound, SIP UDP and TCP on one port, a clean stop.

mod common;
use common::uac::{self, Uac};
use common::{args, TestServer};
use std::time::Duration;

#[test]
fn port_zero_listeners_are_reported_and_serve() {
    let mut srv = TestServer::start(args("32200-32249"));
    assert!(
        srv.sip.ip().is_loopback() && srv.sip.port() != 0,
        "{}",
        srv.sip
    );
    assert!(srv.http.port() != 0 && srv.http != srv.sip, "{}", srv.http);
    // Listening as soon as Ready came: HTTP, SIP over UDP and over TCP on the same port.
    assert_eq!(srv.get("/healthz").0, 200);
    std::net::TcpStream::connect_timeout(&srv.sip, Duration::from_secs(2))
        .expect("SIP TCP on the SIP UDP port");
    let ua = Uac::new(srv.sip, "any", "l1");
    ua.send_raw(ua.request("OPTIONS", 1, "l1opt", "", "").as_bytes());
    let r = ua
        .recv_until(Duration::from_secs(3), |m| m.contains("l1opt"))
        .expect("OPTIONS answered over UDP");
    assert_eq!(uac::status(&r), Some(200), "{r}");
    // The log says where it serves: the real ports.
    let serving = srv.log.expect("serving", Duration::from_secs(5));
    assert!(serving.contains(&srv.sip.to_string()), "{serving}");
    srv.shutdown().expect("server stops cleanly");
    assert!(
        testkit::http::get(srv.http, "/healthz").is_err(),
        "HTTP still answers after shutdown"
    );
}

#[test]
fn two_servers_side_by_side() {
    let a = TestServer::start(args("32250-32299"));
    let b = TestServer::start(args("32300-32349"));
    assert_ne!(a.sip, b.sip);
    assert_ne!(a.http, b.http);
    assert_eq!(a.get("/healthz").0, 200);
    assert_eq!(b.get("/healthz").0, 200);
    // Each collects its own log.
    drop(a);
    drop(b);
}

/// The listeners `mcu_http_connections_total` names, by their real addresses.
fn http_listeners(metrics: &str) -> Vec<std::net::SocketAddr> {
    metrics
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("mcu_http_connections_total{listen=\"")?;
            rest.split_once('"')?.0.parse().ok()
        })
        .collect()
}

#[test]
fn every_http_address_serves_the_same_api() {
    // A non-loopback address: the admin API needs its token.
    let mut a = common::with_admin_token(common::args("32350-32399"));
    // The third address is on no interface of this host (TEST-NET-1): bound all the same
    // (IP_FREEBIND), as a hot-standby backup binds the service address it does not hold.
    a.http_listen = ["127.0.0.1:0", "127.0.0.2:0", "192.0.2.1:0"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let mut srv = TestServer::start(a);
    assert_eq!(
        srv.http.ip().to_string(),
        "127.0.0.1",
        "Ready.http: the first"
    );
    let mut listeners = http_listeners(&srv.metrics());
    listeners.sort();
    let ips: Vec<String> = listeners.iter().map(|l| l.ip().to_string()).collect();
    assert_eq!(
        ips,
        ["127.0.0.1", "127.0.0.2", "192.0.2.1"],
        "{listeners:?}"
    );
    assert!(listeners.iter().all(|l| l.port() != 0), "{listeners:?}");
    assert_eq!(listeners[0], srv.http);
    let second = listeners[1];
    let count = |srv: &TestServer, at: std::net::SocketAddr| {
        common::metric(
            &srv.metrics(),
            &format!("mcu_http_connections_total{{listen=\"{at}\"}}"),
        )
    };
    let before = count(&srv, second);
    // The same router behind the second address: the API and the participant page.
    let (code, status) =
        common::get_as(second, "/api/status", Some(common::ADMIN_TOKEN)).expect("/api/status");
    assert_eq!(code, 200, "{status}");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["role"], "standalone", "{status}");
    let (code, page) = testkit::http::get(second, "/room/demo").expect("GET /room/demo");
    assert_eq!(code, 200, "{page}");
    assert_eq!(count(&srv, second), before + 2.0, "counted per listener");
    srv.shutdown().expect("server stops cleanly");
    for at in [srv.http, second] {
        assert!(
            testkit::http::get(at, "/healthz").is_err(),
            "{at} still answers after shutdown"
        );
    }
}
