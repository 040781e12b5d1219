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
