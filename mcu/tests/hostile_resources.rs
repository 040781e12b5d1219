//! Resource exhaustion against the real server over real sockets: many idle SIP/TCP
//! connections (cap, idle timeout, a call's connection kept), slow and piled-up HTTP
//! clients (header timeout, connection cap), the process out of file descriptors (no
//! spinning acceptor, SIP/UDP and `/healthz` still answer, recovery) and SIGTERM while clients hold
//! connections open (the shutdown deadline). Each case first shows the legitimate path
//! working. In-process servers ([`TestServer`]) where possible; the real binary where the
//! process itself is under test (its fd limit, its exit).

mod common;
use common::uac::{self, Uac};
use common::{args, metric, Server, TestServer};
use mcu::config::ServeArgs;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Child;
use std::time::{Duration, Instant};
use testkit::process::{signal, wait_timeout};

fn metric_at(http: SocketAddr, name: &str) -> f64 {
    let (code, text) = testkit::http::get(http, "/metrics").expect("GET /metrics");
    assert_eq!(code, 200);
    metric(&text, name)
}

/// What a quiet socket shows right now.
#[derive(Debug, PartialEq)]
enum Peek {
    /// The server closed it.
    Eof,
    /// Open, nothing to read.
    Open,
    /// Bytes arrived.
    Data,
}

fn peek(s: &TcpStream) -> Peek {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    let r = match s.peek(&mut b) {
        Ok(0) => Peek::Eof,
        Ok(_) => Peek::Data,
        Err(e) if e.kind() == ErrorKind::WouldBlock => Peek::Open,
        Err(_) => Peek::Eof, // reset
    };
    s.set_nonblocking(false).unwrap();
    r
}

/// Wait until `s` is closed by the server; the time it took, or `None` by `timeout`.
fn wait_eof(s: &mut TcpStream, timeout: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut b = [0u8; 4096];
    while t0.elapsed() < timeout {
        match s.read(&mut b) {
            Ok(0) => return Some(t0.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(t0.elapsed()),
        }
    }
    None
}

/// A SIP UA over one TCP connection, for exactly-crafted requests.
struct TcpUa {
    s: TcpStream,
    server: SocketAddr,
    room: String,
    call_id: String,
    to_tag: Option<String>,
    buf: Vec<u8>,
}

impl TcpUa {
    fn connect(server: SocketAddr, room: &str, tag: &str) -> TcpUa {
        Self::on(TcpStream::connect(server).unwrap(), server, room, tag)
    }

    fn on(s: TcpStream, server: SocketAddr, room: &str, tag: &str) -> TcpUa {
        TcpUa {
            s,
            server,
            room: room.into(),
            call_id: format!("{tag}-tcp@127.0.0.1"),
            to_tag: None,
            buf: Vec::new(),
        }
    }

    fn request(&self, method: &str, cseq: u32, body: &str) -> String {
        let local = self.s.local_addr().unwrap();
        let to_tag = self
            .to_tag
            .as_ref()
            .map(|t| format!(";tag={t}"))
            .unwrap_or_default();
        let ctype = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        format!(
            "{method} sip:{room}@{srv};transport=tcp SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bK{method}{cseq}{cid}\r\nMax-Forwards: 70\r\nFrom: <sip:tcp@{local}>;tag=tcpft\r\nTo: <sip:{room}@{srv}>{to_tag}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\nContact: <sip:tcp@{local};transport=tcp>\r\n{ctype}Content-Length: {len}\r\n\r\n{body}",
            room = self.room,
            srv = self.server,
            cid = self.call_id,
            len = body.len(),
        )
    }

    fn send(&mut self, msg: &str) {
        self.s.write_all(msg.as_bytes()).unwrap();
    }

    /// The next complete message (framed by Content-Length).
    fn recv(&mut self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        self.s
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
                let len: usize = uac::header(&head, "Content-Length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + len {
                    let m: Vec<u8> = self.buf.drain(..end + 4 + len).collect();
                    return Some(String::from_utf8_lossy(&m).to_string());
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            let mut b = [0u8; 4096];
            match self.s.read(&mut b) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&b[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return None,
            }
        }
    }

    /// The final response to `method`.
    fn final_response(&mut self, method: &str) -> String {
        loop {
            let m = self
                .recv(Duration::from_secs(5))
                .unwrap_or_else(|| panic!("no final response to {method} over TCP"));
            let cseq = uac::header(&m, "CSeq").unwrap_or("");
            if uac::status(&m).is_some_and(|s| s >= 200) && cseq.ends_with(method) {
                return m;
            }
        }
    }

    /// INVITE, 200, ACK.
    fn call(&mut self, sdp: &str) {
        let inv = self.request("INVITE", 1, sdp);
        self.send(&inv);
        let ok = self.final_response("INVITE");
        assert_eq!(uac::status(&ok), Some(200), "{ok}");
        let to = uac::header(&ok, "To").unwrap();
        self.to_tag = to.split(";tag=").nth(1).map(|t| t.to_string());
        let ack = self.request("ACK", 1, "");
        self.send(&ack);
    }
}

fn sdp(rtp: SocketAddr) -> String {
    format!(
        "v=0\r\no=t 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n",
        ip = rtp.ip(),
        port = rtp.port()
    )
}

/// SIP/TCP cap 20, idle timeout 2 s; a UDP call, a TCP call, then 50 idle connections.
#[test]
fn idle_sip_tcp_connections_are_capped_and_timed_out() {
    let idle = Duration::from_secs(2);
    let srv = TestServer::start(ServeArgs {
        seed: Some(13),
        max_sip_connections: Some(20),
        // All of this test's clients are 127.0.0.1: the per-source share is the whole cap.
        max_sip_connections_per_source: Some(20),
        sip_tcp_idle_timeout: Some(idle.as_secs()),
        ..args("34000-34049")
    });
    // Positive controls: a call over UDP and one over TCP.
    let mut ua = Uac::new(srv.sip, "limits", "udp1");
    let rtp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    ua.call(&ua.pcmu_offer(rtp.local_addr().unwrap()));
    let tcp_rtp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut call = TcpUa::connect(srv.sip, "limits", "tcp1");
    call.call(&sdp(tcp_rtp.local_addr().unwrap()));
    let call_quiet_since = Instant::now();

    // 50 idle connections: 19 fit under the cap (the call holds one), 31 are closed at once.
    let t0 = Instant::now();
    let mut idle_conns: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(srv.sip).unwrap())
        .collect();
    let closed_at_once = testkit::poll(Duration::from_secs(1), || {
        let eof: Vec<usize> = (0..idle_conns.len())
            .filter(|&i| peek(&idle_conns[i]) == Peek::Eof)
            .collect();
        (eof.len() == 31).then_some(eof)
    })
    .expect("31 connections over the cap closed within 1 s");
    assert!(t0.elapsed() < idle, "before any idle timeout");
    assert_eq!(
        closed_at_once,
        (19..50).collect::<Vec<_>>(),
        "the last 31 are over the cap"
    );
    assert_eq!(srv.get("/healthz").0, 200, "/healthz answers meanwhile");
    let (_, m) = srv.get("/metrics");
    assert_eq!(metric(&m, "mcu_sip_tcp_rejected_total"), 31.0, "{m}");
    assert_eq!(metric(&m, "mcu_sip_tcp_connections"), 20.0, "{m}");

    // The 19 under the cap are closed after the idle timeout (not before).
    let mut closed_after = Vec::new();
    for c in idle_conns.drain(..19) {
        let mut c = c;
        let left = Duration::from_secs(6).saturating_sub(t0.elapsed());
        wait_eof(&mut c, left).expect("idle connection closed within 6 s");
        closed_after.push(t0.elapsed());
    }
    let first = closed_after.iter().min().unwrap().as_secs_f64();
    let last = closed_after.iter().max().unwrap().as_secs_f64();
    eprintln!("idle connections closed {first:.2}..{last:.2} s after opening (timeout 2 s)");
    assert!(first >= idle.as_secs_f64() - 0.05, "closed early: {first}");

    // The call's connection stays open though quiet for longer than the timeout (plus the
    // idle sweep's period): absence is watched for that whole time.
    let until = call_quiet_since + idle + Duration::from_secs(1);
    while Instant::now() < until {
        assert_eq!(
            peek(&call.s),
            Peek::Open,
            "a connection with a call stays open"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, m) = srv.get("/metrics");
    assert_eq!(metric(&m, "mcu_sip_tcp_idle_closed_total"), 19.0, "{m}");

    // Room again under the cap: a new connection is served.
    let mut opt = TcpUa::connect(srv.sip, "limits", "opt1");
    let o = opt.request("OPTIONS", 1, "");
    opt.send(&o);
    let r = opt.final_response("OPTIONS");
    assert_eq!(uac::status(&r), Some(200), "{r}");

    // The call ends; then its connection is an idle one like any other.
    let bye = call.request("BYE", 2, "");
    call.send(&bye);
    let r = call.final_response("BYE");
    assert_eq!(uac::status(&r), Some(200), "{r}");
    let t = wait_eof(&mut call.s, idle + Duration::from_secs(3))
        .expect("the call's connection is closed once the call is over and it is idle");
    eprintln!(
        "call connection closed {:.2} s after its BYE",
        t.as_secs_f64()
    );
    assert!(ua.bye().is_some_and(|r| uac::status(&r) == Some(200)));
}

/// HTTP cap 4, header timeout 1 s.
#[test]
fn slow_and_piled_up_http_clients() {
    let srv = TestServer::start(ServeArgs {
        max_http_connections: Some(4),
        http_header_timeout: Some(1),
        ..args("34050-34099")
    });
    let get = b"GET /healthz HTTP/1.1\r\nHost: mcu\r\nConnection: close\r\n\r\n";
    // Positive control: a raw client with a whole request is answered.
    let mut c = TcpStream::connect(srv.http).unwrap();
    c.write_all(get).unwrap();
    let mut reply = String::new();
    c.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    drop(c);
    assert!(
        testkit::poll(Duration::from_secs(2), || {
            (srv.get("/healthz").0 == 200).then_some(())
        })
        .is_some(),
        "/healthz"
    );

    // Four connections hold the cap: a fifth is closed at once, and counted.
    let held: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(srv.http).unwrap();
            // Refused already if an earlier connection still counts: then so is the fifth.
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\n");
            s
        })
        .collect();
    // Closed well before the header timeout: refused by the cap.
    let mut fifth = TcpStream::connect(srv.http).unwrap();
    let t = wait_eof(&mut fifth, Duration::from_millis(500)).expect("over the cap: closed");
    eprintln!("HTTP connection over the cap closed after {t:?}");
    drop(held);
    let m = testkit::poll(Duration::from_secs(3), || {
        testkit::http::get(srv.http, "/metrics")
            .ok()
            .filter(|r| r.0 == 200)
    })
    .expect("served again once the held connections close")
    .1;
    assert!(metric(&m, "mcu_http_rejected_total") >= 1.0, "{m}");

    // A slow client sends half a header and stops: /healthz answers meanwhile, and the
    // slow one is cut after the header timeout.
    let before = metric(&m, "mcu_http_header_timeouts_total");
    let mut slow = TcpStream::connect(srv.http).unwrap();
    let t0 = Instant::now();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: mc")
        .unwrap();
    assert_eq!(srv.get("/healthz").0, 200, "served while a header dribbles");
    wait_eof(&mut slow, Duration::from_secs(4)).expect("slow client cut within 4 s");
    let cut = t0.elapsed();
    eprintln!(
        "slow HTTP client cut {:.2} s after connecting (timeout 1 s)",
        cut.as_secs_f64()
    );
    assert!(
        cut >= Duration::from_millis(900),
        "not before the timeout: {cut:?}"
    );
    let after = testkit::poll(Duration::from_secs(2), || {
        let v = metric_at(srv.http, "mcu_http_header_timeouts_total");
        (v > before).then_some(v)
    });
    assert!(after.is_some(), "header timeout counted");
}

/// The real binary, under `prlimit` with a hard open-files limit of `nofile` when given;
/// it must be this branch's binary, which logs its open-files limit at start.
fn limited(
    nofile: Option<u32>,
    sip_port: u16,
    http_port: u16,
    rtp: &str,
    extra: &[&str],
) -> Server {
    let limit = nofile.map(|n| format!("--nofile={n}:{n}"));
    let wrapper: Vec<&str> = match &limit {
        Some(l) => vec!["prlimit", l, "--"],
        None => vec![],
    };
    let mut srv = Server::start_under(&wrapper, sip_port, http_port, rtp, extra);
    srv.log.expect("open files limit", Duration::from_secs(5));
    srv
}

/// CPU time (user + system) `child` used so far, from /proc/PID/stat.
fn cpu(child: &Child) -> Duration {
    let st = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
    let f: Vec<&str> = st.rsplit_once(')').unwrap().1.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime), counted after the ')' from field 3.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 1000 / clock_ticks())
}

/// Descriptors `child` has open.
fn fds(child: &Child) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", child.id()))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// `GET /healthz` on a fresh connection answered 200 within `timeout`.
fn raw_healthz(http: SocketAddr, timeout: Duration) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&http, timeout) else {
        return false;
    };
    s.set_read_timeout(Some(timeout)).unwrap();
    let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: mcu\r\nConnection: close\r\n\r\n");
    let mut b = [0u8; 12];
    s.read_exact(&mut b).is_ok() && b.starts_with(b"HTTP/1.1 200")
}

/// OPTIONS over UDP answered 200.
fn options_ok(sip: SocketAddr, tag: &str) -> bool {
    let ua = Uac::new(sip, "limits", tag);
    let o = ua.request("OPTIONS", 1, tag, "", "");
    ua.send_raw(o.as_bytes());
    ua.recv_until(Duration::from_secs(2), |m| uac::status(m).is_some())
        .is_some_and(|r| uac::status(&r) == Some(200))
}

/// Out of file descriptors: the acceptor backs off instead of spinning a core, SIP/UDP and
/// `/healthz` still answer, and everything recovers when the connections go.
#[test]
fn fd_exhaustion_backs_off_and_recovers() {
    testkit::require::tools(&["prlimit"]);
    let mut srv = limited(Some(64), 25740, 28740, "34100-34149", &[]);
    assert!(
        srv.log
            .lines
            .iter()
            .any(|l| l.contains("open files limit") && l.contains("64")),
        "the limit is logged"
    );
    // Positive controls.
    assert_eq!(testkit::http::get(srv.http, "/healthz").unwrap().0, 200);
    assert!(options_ok(srv.sip, "opt-before"), "OPTIONS before");
    let idle_cpu = {
        let c0 = cpu(&srv.child);
        std::thread::sleep(Duration::from_secs(1));
        cpu(&srv.child) - c0
    };

    // Open SIP/TCP connections until the server says it cannot accept any more.
    let mut conns = Vec::new();
    let exhausted = (0..20).any(|_| {
        for _ in 0..10 {
            conns.push(TcpStream::connect(srv.sip).unwrap());
        }
        srv.log
            .wait("SIP/TCP accept failed", Duration::from_millis(200))
            .is_some()
    });
    assert!(
        exhausted,
        "no accept failure after {} connections",
        conns.len()
    );
    eprintln!(
        "out of descriptors after {} connections ({} fds open in the server)",
        conns.len(),
        fds(&srv.child)
    );
    let logged = srv.log.count("SIP/TCP accept failed");
    // Over 2 s while exhausted, the server's CPU stays far below a spinning core.
    let t0 = Instant::now();
    let c0 = cpu(&srv.child);
    std::thread::sleep(Duration::from_secs(2));
    let share = (cpu(&srv.child) - c0).as_secs_f64() / t0.elapsed().as_secs_f64();
    eprintln!(
        "server CPU while out of descriptors: {:.1} % of a core (idle: {:.1} %)",
        share * 100.0,
        idle_cpu.as_secs_f64() * 100.0
    );
    assert!(share < 0.10, "CPU {:.1} % of a core", share * 100.0);
    assert_eq!(
        srv.log.count("SIP/TCP accept failed"),
        logged,
        "one log line per episode, not per failure"
    );
    assert!(
        options_ok(srv.sip, "opt-during"),
        "SIP/UDP answers while exhausted"
    );
    // /healthz answers on the HTTP listener's reserve descriptor, again and again (the
    // reserve comes back when each connection closes).
    for i in 0..3 {
        assert!(
            raw_healthz(srv.http, Duration::from_secs(2)),
            "/healthz #{i} while exhausted"
        );
    }

    // The clients go: the server recovers.
    drop(conns);
    let back = testkit::poll(Duration::from_secs(10), || {
        testkit::http::get(srv.http, "/metrics")
            .ok()
            .filter(|r| r.0 == 200)
    })
    .expect("/metrics answers again once the connections are gone")
    .1;
    // Failures went on while exhausted (retried with back-off), each counted.
    let failures = metric(&back, "mcu_sip_tcp_accept_errors_total");
    eprintln!("SIP/TCP accept failures counted: {failures}, logged: {logged}");
    assert!(failures >= 3.0, "{back}");
    assert!(options_ok(srv.sip, "opt-after"), "OPTIONS after");
    signal(srv.child.id(), libc::SIGTERM);
    let st = wait_timeout(&mut srv.child, Duration::from_secs(10)).expect("exit after SIGTERM");
    assert!(st.success(), "{st}");
}

/// SIGTERM while an HTTP client holds an incomplete request and a SIP/TCP connection idles:
/// the process exits 0 within the shutdown deadline and its ports can be bound again.
#[test]
fn sigterm_with_held_connections_exits_by_the_deadline() {
    let mut srv = limited(
        None,
        25741,
        28741,
        "34150-34199",
        &[
            "--shutdown-timeout",
            "2",
            "--http-header-timeout",
            "60",
            "--sip-tcp-idle-timeout",
            "60",
        ],
    );
    assert_eq!(testkit::http::get(srv.http, "/healthz").unwrap().0, 200);
    // A SIP/TCP connection, shown alive by an answered OPTIONS, then silent.
    let mut sip = TcpUa::connect(srv.sip, "limits", "term1");
    let o = sip.request("OPTIONS", 1, "");
    sip.send(&o);
    assert_eq!(uac::status(&sip.final_response("OPTIONS")), Some(200));
    // An HTTP request that never completes: held, not answered.
    let mut held = TcpStream::connect(srv.http).unwrap();
    held.write_all(b"GET /api/rooms HTTP/1.1\r\nHost: mc")
        .unwrap();
    assert!(
        wait_eof(&mut held, Duration::from_millis(300)).is_none(),
        "held open"
    );

    let t0 = Instant::now();
    signal(srv.child.id(), libc::SIGTERM);
    let st = wait_timeout(&mut srv.child, Duration::from_secs(10))
        .expect("mcu exits after SIGTERM despite the held connections");
    let took = t0.elapsed();
    srv.log.pump();
    eprintln!(
        "exit {:.2} s after SIGTERM (deadline 2 s)",
        took.as_secs_f64()
    );
    assert!(st.success(), "exit 0: {st}");
    assert!(took < Duration::from_millis(3500), "took {took:?}");
    assert!(
        wait_eof(&mut held, Duration::from_secs(1)).is_some(),
        "HTTP client closed"
    );
    assert!(
        wait_eof(&mut sip.s, Duration::from_secs(1)).is_some(),
        "SIP/TCP closed"
    );
    // The ports are free again.
    std::net::UdpSocket::bind(srv.sip).expect("SIP UDP port free");
    std::net::TcpListener::bind(srv.sip).expect("SIP TCP port free");
    std::net::TcpListener::bind(srv.http).expect("HTTP port free");
}

/// One source cannot take every SIP/TCP slot: with a cap of 20 and 3 per source, the 4th
/// and 5th connections from 127.0.0.2 are closed at once (counted) while 127.0.0.1 is still
/// served; a slot given back is usable again.
#[test]
fn one_source_gets_its_share_of_sip_tcp_connections() {
    let srv = TestServer::start(ServeArgs {
        seed: Some(14),
        max_sip_connections: Some(20),
        max_sip_connections_per_source: Some(3),
        ..args("34400-34449")
    });
    let mut mine: Vec<TcpStream> = (0..5)
        .map(|_| common::tcp_connect_from("127.0.0.2", srv.sip))
        .collect();
    let closed = testkit::poll(Duration::from_secs(1), || {
        let eof: Vec<usize> = (0..mine.len())
            .filter(|&i| peek(&mine[i]) == Peek::Eof)
            .collect();
        (eof.len() == 2).then_some(eof)
    })
    .expect("2 connections over the source's share closed within 1 s");
    assert_eq!(closed, vec![3, 4], "the last two are over the share");
    let (_, m) = srv.get("/metrics");
    assert_eq!(
        metric(&m, "mcu_sip_tcp_rejected_per_source_total"),
        2.0,
        "{m}"
    );
    assert_eq!(metric(&m, "mcu_sip_tcp_rejected_total"), 0.0, "{m}");
    // The three within the share are served.
    let mut ua = TcpUa::on(mine.remove(0), srv.sip, "share", "s0");
    let o = ua.request("OPTIONS", 1, "");
    ua.send(&o);
    assert_eq!(uac::status(&ua.final_response("OPTIONS")), Some(200));
    // Another source has its own share.
    let mut other = TcpUa::connect(srv.sip, "share", "o1");
    let o = other.request("OPTIONS", 1, "");
    other.send(&o);
    assert_eq!(uac::status(&other.final_response("OPTIONS")), Some(200));
    // A slot given back (the client closes) is usable again: the share is not a lifetime
    // quota.
    drop(ua);
    let served = testkit::poll(Duration::from_secs(2), || {
        let mut ua = TcpUa::on(
            common::tcp_connect_from("127.0.0.2", srv.sip),
            srv.sip,
            "share",
            "s9",
        );
        let o = ua.request("OPTIONS", 1, "");
        ua.send(&o);
        ua.s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut b = [0u8; 64];
        matches!(ua.s.read(&mut b), Ok(n) if n > 0).then_some(())
    });
    assert!(served.is_some(), "a freed slot was not reusable");
}
