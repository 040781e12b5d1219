//! Hostile WebRTC clients against the real server over loopback, without a browser: WHIP
//! requests built by hand from a recorded Chromium offer, ICE checks built with `rtc-stun`,
//! and datagrams no browser sends on the shared WebRTC port (garbage, media from addresses no
//! check validated, SRTP before any DTLS handshake).
//!
//! Every hostile case first shows the legitimate exchange working (positive control), then
//! that the hostile one fails the way a client can observe: the HTTP status, reason and
//! headers it gets back, the datagrams it does (or does not) receive, `/api/rooms` and
//! `/metrics`. A check for the absence of a reply waits [`SILENCE`], and only after the same
//! exchange, done right, was answered.
//!
//! Ports: WebRTC 36450 (one server at a time: [`Fixture`] serialises the tests), RTP
//! 36400-36449, clients on ephemeral loopback ports.

mod common;
use common::{args, TestServer};
use mcu::config::ServeArgs;
use rtc_stun::attributes::{
    AttrType, RawAttribute, ATTR_FINGERPRINT, ATTR_ICE_CONTROLLING, ATTR_MESSAGE_INTEGRITY,
    ATTR_PRIORITY, ATTR_USERNAME, ATTR_USE_CANDIDATE,
};
use rtc_stun::crypto::providers::RingCrypto;
use rtc_stun::fingerprint::FINGERPRINT;
use rtc_stun::integrity::MessageIntegrity;
use rtc_stun::message::{Getter, Message, Setter, TransactionId, BINDING_REQUEST, BINDING_SUCCESS};
use rtc_stun::textattrs::TextAttribute;
use rtc_stun::xoraddr::XorMappedAddress;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use testkit::http::Response;

const RTP_RANGE: &str = "36400-36449";
const WEBRTC_PORT: u16 = 36450;

/// A real Chromium offer (audio, video, data channel): the template of every offer here.
const OFFER: &str = include_str!("../../webrtc/tests/data/chromium_offer.sdp");
/// The ICE username fragment in [`OFFER`] (the browser's).
const CLIENT_UFRAG: &str = "EpoC";

/// How long a check for the absence of a reply waits (after a positive control).
const SILENCE: Duration = Duration::from_millis(500);
/// How long a reply that must come may take.
const REPLY: Duration = Duration::from_secs(5);

/// HMAC-SHA1 for MESSAGE-INTEGRITY.
static CRYPTO: RingCrypto = RingCrypto;

/// The tests share the WebRTC port: one server at a time, whatever `--test-threads` says.
static WEBRTC_PORT_LOCK: Mutex<()> = Mutex::new(());

/// A server on the reserved ports, holding the port lock until it is gone.
struct Fixture {
    // Declared first: dropped (the server stopped, its port closed) before the lock.
    srv: TestServer,
    _port: MutexGuard<'static, ()>,
}

impl std::ops::Deref for Fixture {
    type Target = TestServer;
    fn deref(&self) -> &TestServer {
        &self.srv
    }
}

fn server(max_participants: Option<usize>) -> Fixture {
    let port = WEBRTC_PORT_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let srv = TestServer::start(ServeArgs {
        seed: Some(17),
        webrtc_port: Some(WEBRTC_PORT),
        max_participants,
        ..args(RTP_RANGE)
    });
    Fixture { srv, _port: port }
}

/// Where every browser sends its checks and media.
fn webrtc_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], WEBRTC_PORT))
}

// ---- HTTP ----------------------------------------------------------------------------

/// `POST path` with `body` and, if given, `Content-Type: content_type`.
fn post(srv: &TestServer, path: &str, content_type: Option<&str>, body: &[u8]) -> Response {
    let headers: Vec<(&str, &str)> = content_type
        .map(|c| ("Content-Type", c))
        .into_iter()
        .collect();
    testkit::http::post(srv.http, path, &headers, body)
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

/// `POST /whip/{room}` with an SDP offer.
fn offer(srv: &TestServer, room: &str, sdp: &str) -> Response {
    post(
        srv,
        &format!("/whip/{room}"),
        Some("application/sdp"),
        sdp.as_bytes(),
    )
}

fn delete(srv: &TestServer, path: &str) -> Response {
    testkit::http::delete(srv.http, path, &[]).unwrap_or_else(|e| panic!("DELETE {path}: {e}"))
}

/// The CORS headers a page on another origin needs to read a WHIP response.
fn assert_cors(r: &Response, what: &str) {
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("*"),
        "{what}: {r:#?}"
    );
    let exposed = r
        .header("access-control-expose-headers")
        .unwrap_or_default();
    assert!(
        exposed
            .split(',')
            .any(|h| h.trim().eq_ignore_ascii_case("location")),
        "{what}: Location is not exposed: {r:#?}"
    );
}

/// A participant that joined through WHIP: its resource and our answer's ICE credentials.
struct Joined {
    location: String,
    id: u64,
    ufrag: String,
    pwd: String,
}

/// The value of the first `a=NAME:` line of `sdp`.
fn sdp_attr<'a>(sdp: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("a={name}:");
    sdp.lines().find_map(|l| l.strip_prefix(prefix.as_str()))
}

/// POST [`OFFER`] to `room`, expecting 201 Created with an answer.
fn join(srv: &TestServer, room: &str) -> Joined {
    let r = offer(srv, room, OFFER);
    assert_eq!(r.status, 201, "WHIP offer to {room}: {r:#?}");
    let location = r.header("location").expect("Location").to_string();
    let id = location
        .strip_prefix(&format!("/whip/{room}/"))
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("Location {location:?} is not /whip/{room}/<number>"));
    let ufrag = sdp_attr(&r.body, "ice-ufrag")
        .expect("a=ice-ufrag")
        .to_string();
    let pwd = sdp_attr(&r.body, "ice-pwd").expect("a=ice-pwd").to_string();
    Joined {
        location,
        id,
        ufrag,
        pwd,
    }
}

/// Every participant of every room in `/api/rooms`.
fn participants(srv: &TestServer) -> Vec<serde_json::Value> {
    let rooms = srv.get_json("/api/rooms");
    rooms["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .flat_map(|r| {
            r["participants"]
                .as_object()
                .expect("participants")
                .values()
                .cloned()
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Poll `/metrics` until sample `name` satisfies `ok` (panics after 5 s: the WebRTC
/// counters are synced every 500 ms).
fn wait_metric(srv: &TestServer, name: &str, what: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = srv.metric(name);
        if ok(v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{name} = {v}, expected {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait until counter `name` reaches `before + n`, then assert it rose by exactly `n`.
fn assert_rose_by(srv: &TestServer, name: &str, before: f64, n: u32) {
    let target = before + f64::from(n);
    let v = wait_metric(srv, name, &format!(">= {target}"), |v| v >= target);
    assert_eq!(
        v - before,
        f64::from(n),
        "{name} rose by {} instead of {n}",
        v - before
    );
}

// ---- STUN ----------------------------------------------------------------------------

/// A Binding request as Chromium sends it once it nominates a pair: USERNAME, ICE-CONTROLLING,
/// USE-CANDIDATE, PRIORITY, MESSAGE-INTEGRITY keyed with `pwd`, FINGERPRINT.
fn binding_request(username: &str, pwd: &str, tid: [u8; 12]) -> Vec<u8> {
    let raw = |typ: AttrType, value: &[u8]| -> Box<dyn Setter> {
        Box::new(RawAttribute {
            typ,
            length: 0,
            value: value.to_vec(),
        })
    };
    let setters: Vec<Box<dyn Setter>> = vec![
        Box::new(BINDING_REQUEST),
        Box::new(TransactionId(tid)),
        Box::new(TextAttribute::new(ATTR_USERNAME, username.into())),
        raw(ATTR_ICE_CONTROLLING, &[0x87, 0x97, 0x30, 0xc2, 1, 2, 3, 4]),
        raw(ATTR_USE_CANDIDATE, &[]),
        raw(ATTR_PRIORITY, &[0x6e, 0x00, 0x1e, 0xff]),
        Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
            pwd.into(),
            &CRYPTO,
        )),
        Box::new(FINGERPRINT),
    ];
    let mut msg = Message::new();
    msg.build(&setters).expect("request encodes");
    msg.raw
}

/// A client socket on an ephemeral loopback port.
fn client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").expect("client socket")
}

/// The next datagram on `sock` within `wait`, if any.
fn recv(sock: &UdpSocket, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    sock.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 2048];
    sock.recv_from(&mut buf)
        .ok()
        .map(|(n, from)| (buf[..n].to_vec(), from))
}

/// Nothing arrives on `sock` for [`SILENCE`].
fn assert_silence(sock: &UdpSocket, what: &str) {
    if let Some((d, from)) = recv(sock, SILENCE) {
        panic!(
            "{what}: the server answered ({} bytes from {from}): {d:02x?}",
            d.len()
        );
    }
}

/// Sends a Binding request for `p` (USERNAME `ours:browser's`, keyed with our password) from
/// `sock` and checks the answer as a browser does: a Binding success response from the
/// WebRTC port for the same transaction, FINGERPRINT right, MESSAGE-INTEGRITY keyed with the
/// server's password, XOR-MAPPED-ADDRESS the client's own address.
fn valid_check(sock: &UdpSocket, p: &Joined, tid: [u8; 12]) {
    let req = binding_request(&format!("{}:{CLIENT_UFRAG}", p.ufrag), &p.pwd, tid);
    sock.send_to(&req, webrtc_addr()).unwrap();
    let (resp, from) = recv(sock, REPLY).expect("a valid check is answered");
    assert_eq!(from, webrtc_addr(), "answered from the WebRTC port");
    let mut msg = Message::new();
    msg.unmarshal_binary(&resp).expect("the response decodes");
    assert_eq!(msg.typ, BINDING_SUCCESS, "{resp:02x?}");
    assert_eq!(msg.transaction_id.0, tid);
    let types: Vec<AttrType> = msg.attributes.0.iter().map(|a| a.typ).collect();
    assert_eq!(
        types.last(),
        Some(&ATTR_FINGERPRINT),
        "FINGERPRINT last: {types:?}"
    );
    assert!(types.contains(&ATTR_MESSAGE_INTEGRITY), "{types:?}");
    FINGERPRINT.check(&msg).expect("FINGERPRINT verifies");
    MessageIntegrity::check(&mut msg, p.pwd.as_bytes(), &CRYPTO)
        .expect("MESSAGE-INTEGRITY verifies with the server's password");
    let mut xor = XorMappedAddress::default();
    xor.get_from(&msg).expect("XOR-MAPPED-ADDRESS");
    assert_eq!(
        SocketAddr::new(xor.ip, xor.port),
        sock.local_addr().unwrap(),
        "XOR-MAPPED-ADDRESS is the client's address"
    );
}

/// Transaction id number `n`.
fn tid(n: u8) -> [u8; 12] {
    let mut t = *b"hostile-webr";
    t[11] = n;
    t
}

/// A plausible SRTP packet (Opus payload type, a 10-byte "auth tag") that no key made.
fn fake_srtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 111];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
    p.extend_from_slice(&0x0bad_cafe_u32.to_be_bytes());
    p.extend_from_slice(&[0x5a; 40]);
    p.extend_from_slice(&[0xa5; 10]);
    p
}

/// A plausible SRTCP receiver report (E flag and index, 10-byte "auth tag") no key made.
fn fake_srtcp() -> Vec<u8> {
    let mut p = vec![0x80, 201, 0x00, 0x01];
    p.extend_from_slice(&0x0bad_cafe_u32.to_be_bytes());
    p.extend_from_slice(&0x8000_0001_u32.to_be_bytes());
    p.extend_from_slice(&[0xa5; 10]);
    p
}

/// A DTLS 1.2 record carrying the start of a ClientHello (what a browser sends first, from an
/// address that passed its ICE check).
fn fake_client_hello() -> Vec<u8> {
    let mut hello = vec![0xfe, 0xfd]; // client_version DTLS 1.2
    hello.extend_from_slice(&[0x42; 32]); // random
    hello.extend_from_slice(&[0, 0]); // session id, cookie: empty
    hello.extend_from_slice(&[0, 2, 0xc0, 0x2b]); // one suite: ECDHE-ECDSA-AES128-GCM-SHA256
    hello.extend_from_slice(&[1, 0]); // compression: null
    let len = hello.len() as u32;
    let mut hs = vec![1]; // ClientHello
    hs.extend_from_slice(&len.to_be_bytes()[1..]);
    hs.extend_from_slice(&[0, 0]); // message_seq
    hs.extend_from_slice(&[0, 0, 0]); // fragment_offset
    hs.extend_from_slice(&len.to_be_bytes()[1..]); // fragment_length
    hs.extend_from_slice(&hello);
    let mut rec = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

// ---- Cases ---------------------------------------------------------------------------

/// WHIP as a non-browser client sees it: 201 with a Location, an SDP answer of an ICE-lite,
/// DTLS-passive server with one host candidate, CORS headers; the participant in
/// `/api/rooms`; its ICE credentials answered; DELETE removes it (and its credentials stop
/// working), a second DELETE is 404.
#[test]
fn whip_happy_path_without_a_browser() {
    let srv = server(None);
    let r = offer(&srv, "room", OFFER);
    assert_eq!(r.status, 201, "{r:#?}");
    let location = r.header("location").expect("Location").to_string();
    let id: u64 = location
        .strip_prefix("/whip/room/")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("Location {location:?} is not /whip/room/<number>"));
    let ctype = r.header("content-type").unwrap_or_default();
    assert!(
        ctype.starts_with("application/sdp"),
        "Content-Type {ctype:?}"
    );
    assert_cors(&r, "201");
    let answer = &r.body;
    let lines: Vec<&str> = answer.lines().collect();
    assert!(lines.contains(&"a=ice-lite"), "{answer}");
    assert!(lines.contains(&"a=setup:passive"), "{answer}");
    let fp = sdp_attr(answer, "fingerprint").expect("a=fingerprint");
    let digest = fp.strip_prefix("sha-256 ").expect("a sha-256 fingerprint");
    assert_eq!(digest.split(':').count(), 32, "{fp}");
    let candidate = sdp_attr(answer, "candidate").expect("a=candidate");
    let fields: Vec<&str> = candidate.split_whitespace().collect();
    assert!(
        fields.len() >= 8
            && fields[2].eq_ignore_ascii_case("udp")
            && fields[4..8] == ["127.0.0.1", "36450", "typ", "host"],
        "a host candidate on 127.0.0.1:36450: a=candidate:{candidate}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("m=audio 36450 UDP/TLS/RTP/SAVPF 111")),
        "{answer}"
    );

    let parts = participants(&srv);
    assert_eq!(parts.len(), 1, "{parts:#?}");
    assert_eq!(parts[0]["kind"], "webrtc", "{parts:#?}");
    assert_eq!(parts[0]["id"].as_u64(), Some(id), "{parts:#?}");
    wait_metric(&srv, "mcu_webrtc_peers", "1", |v| v == 1.0);

    // Its credentials work while it is in the room.
    let p = Joined {
        ufrag: sdp_attr(answer, "ice-ufrag").expect("ufrag").into(),
        pwd: sdp_attr(answer, "ice-pwd").expect("pwd").into(),
        location: location.clone(),
        id,
    };
    let sock = client();
    valid_check(&sock, &p, tid(1));

    let d = delete(&srv, &location);
    assert_eq!(d.status, 200, "{d:#?}");
    assert_cors(&d, "DELETE");
    let empty = testkit::poll(Duration::from_secs(5), || {
        let r = srv.get_json("/api/rooms");
        r["rooms"]
            .as_array()
            .is_some_and(|a| a.is_empty())
            .then_some(())
    });
    assert!(
        empty.is_some(),
        "the room is gone: {:#}",
        srv.get_json("/api/rooms")
    );
    wait_metric(&srv, "mcu_webrtc_peers", "0", |v| v == 0.0);
    let again = delete(&srv, &location);
    assert_eq!(again.status, 404, "{again:#?}");

    // Gone from the transport too: the same check is no longer answered.
    let refused = srv.metric("mcu_webrtc_stun_refused_total");
    let req = binding_request(&format!("{}:{CLIENT_UFRAG}", p.ufrag), &p.pwd, tid(2));
    sock.send_to(&req, webrtc_addr()).unwrap();
    assert_silence(&sock, "a check with a deleted participant's credentials");
    assert_rose_by(&srv, "mcu_webrtc_stun_refused_total", refused, 1);
}

/// The CORS preflight of a page on another origin: 204 with what it needs, on the endpoint
/// and on a participant's resource.
#[test]
fn options_answers_the_cors_preflight() {
    let srv = server(None);
    let preflight = [
        ("Origin", "http://elsewhere.example"),
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "content-type"),
    ];
    for path in ["/whip/room", "/whip/room/281474976710656"] {
        let r = testkit::http::options(srv.http, path, &preflight)
            .unwrap_or_else(|e| panic!("OPTIONS {path}: {e}"));
        assert_eq!(r.status, 204, "{path}: {r:#?}");
        assert_cors(&r, path);
        let methods = r.header("access-control-allow-methods").unwrap_or_default();
        for m in ["POST", "DELETE", "OPTIONS"] {
            assert!(methods.contains(m), "{path}: {m} not allowed: {r:#?}");
        }
        let allowed = r.header("access-control-allow-headers").unwrap_or_default();
        assert!(
            allowed.to_ascii_lowercase().contains("content-type"),
            "{path}: {r:#?}"
        );
    }
    let r = testkit::http::options(srv.http, "/whip/room", &[]).expect("OPTIONS");
    assert_eq!(r.header("accept-post"), Some("application/sdp"), "{r:#?}");
}

/// `OFFER` with the lines for which `drop` is true left out.
fn without_lines(drop: impl Fn(&str) -> bool) -> String {
    OFFER
        .split_inclusive('\n')
        .filter(|l| !drop(l.trim_end()))
        .collect()
}

/// `OFFER` without its audio m-section (video and data channel only).
fn without_audio() -> String {
    let start = OFFER.find("m=audio").expect("audio");
    let end = start + OFFER[start..].find("m=video").expect("video after audio");
    format!("{}{}", &OFFER[..start], &OFFER[end..])
}

/// A WHIP POST that must be refused: what it is, where it goes, with which Content-Type and
/// body, and the status and the part of the reason the client must get back.
struct Bad {
    what: &'static str,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    reason: &'static str,
}

impl Bad {
    /// `body` POSTed to `/whip/room` as `application/sdp`.
    fn offer(
        what: &'static str,
        body: impl Into<Vec<u8>>,
        status: u16,
        reason: &'static str,
    ) -> Bad {
        Bad {
            what,
            path: "/whip/room".into(),
            content_type: Some("application/sdp"),
            body: body.into(),
            status,
            reason,
        }
    }

    fn at(self, path: impl Into<String>) -> Bad {
        Bad {
            path: path.into(),
            ..self
        }
    }

    fn content_type(self, content_type: Option<&'static str>) -> Bad {
        Bad {
            content_type,
            ..self
        }
    }
}

/// Refused offers: each gets a 4xx with its reason in the body (and CORS headers, so that a
/// page on another origin can read it), and none of them leaves a participant behind.
#[test]
fn bad_offers_are_refused_with_a_reason_and_leave_nothing_behind() {
    let srv = server(None);
    // Positive control: the template offer joins.
    let first = join(&srv, "room");
    wait_metric(&srv, "mcu_webrtc_peers", "1", |v| v == 1.0);

    let mut oversized = OFFER.to_string();
    while oversized.len() <= 64 * 1024 {
        oversized.push_str("a=x-padding:0123456789abcdef0123456789abcdef0123456789abcdef\r\n");
    }
    let cases = [
        Bad::offer(
            "no audio m-line",
            without_audio().into_bytes(),
            400,
            "no enabled audio m-line",
        ),
        Bad::offer(
            "no Opus",
            without_lines(|l| l.starts_with("a=rtpmap:111 ")).into_bytes(),
            400,
            "opus/48000/2",
        ),
        Bad::offer(
            "no fingerprint",
            without_lines(|l| l.starts_with("a=fingerprint:")).into_bytes(),
            400,
            "no a=fingerprint",
        ),
        Bad::offer(
            "setup:passive",
            OFFER
                .replace("a=setup:actpass", "a=setup:passive")
                .into_bytes(),
            400,
            "DTLS passive",
        ),
        Bad::offer(
            "RTP/AVP",
            OFFER
                .replace("m=audio 9 UDP/TLS/RTP/SAVPF", "m=audio 9 RTP/AVP")
                .into_bytes(),
            400,
            "not UDP/TLS/RTP/SAVPF",
        ),
        Bad::offer(
            "no rtcp-mux",
            without_lines(|l| l == "a=rtcp-mux").into_bytes(),
            400,
            "rtcp-mux",
        ),
        Bad::offer(
            "text that is not SDP",
            b"GET / HTTP/1.1\r\nHost: example\r\n\r\n".to_vec(),
            400,
            "malformed SDP offer",
        ),
        Bad::offer("empty body", Vec::new(), 400, "malformed SDP offer"),
        Bad::offer(
            "binary garbage",
            vec![0xff, 0xfe, 0x00, 0x80, 0xc3, 0x28, 0x16, 0xfe, 0xfd],
            400,
            "UTF-8",
        ),
        Bad::offer(
            "an offer over 64 KiB",
            oversized.into_bytes(),
            413,
            "length limit exceeded",
        ),
        Bad::offer(
            "Content-Type text/plain",
            OFFER.as_bytes().to_vec(),
            415,
            "application/sdp",
        )
        .content_type(Some("text/plain")),
        Bad::offer(
            "no Content-Type",
            OFFER.as_bytes().to_vec(),
            415,
            "application/sdp",
        )
        .content_type(None),
        Bad::offer(
            "a room name with a space",
            OFFER.as_bytes().to_vec(),
            404,
            "room name not allowed",
        )
        .at("/whip/bad%20room"),
        Bad::offer(
            "a room name of 300 characters",
            OFFER.as_bytes().to_vec(),
            404,
            "room name not allowed",
        )
        .at(format!("/whip/{}", "r".repeat(300))),
    ];
    for c in &cases {
        let r = post(&srv, &c.path, c.content_type, &c.body);
        let what = c.what;
        eprintln!("{what}: {} {:?}", r.status, r.body.trim_end());
        assert_eq!(r.status, c.status, "{what}: {r:#?}");
        assert!(
            r.body.contains(c.reason),
            "{what}: the reason does not say {:?}: {r:#?}",
            c.reason
        );
        assert!(r.header("location").is_none(), "{what}: {r:#?}");
        assert_cors(&r, what);
    }

    // A method WHIP does not have: axum's 405, readable cross-origin too.
    let get = testkit::http::get_response(srv.http, "/whip/room").expect("GET /whip/room");
    assert_eq!(get.status, 405, "{get:#?}");
    assert_cors(&get, "GET /whip/room");

    // Nothing left behind: a valid offer after them makes exactly two participants, in the
    // transport (its additions are in order: a leak would have come before this one) and in
    // the room.
    let second = join(&srv, "room");
    let peers = wait_metric(&srv, "mcu_webrtc_peers", ">= 2", |v| v >= 2.0);
    assert_eq!(peers, 2.0, "participants in the WebRTC transport");
    let ids = testkit::poll(Duration::from_secs(5), || {
        let mut ids: Vec<u64> = participants(&srv)
            .iter()
            .filter_map(|p| p["id"].as_u64())
            .collect();
        ids.sort();
        (ids.len() >= 2).then_some(ids)
    })
    .expect("the second participant in /api/rooms");
    assert_eq!(
        ids,
        vec![first.id, second.id],
        "{:#}",
        srv.get_json("/api/rooms")
    );
}

/// A full room refuses the next browser with a reason, keeps no trace of it, and takes it
/// once a place is free.
#[test]
fn full_room_refuses_and_leaks_nothing() {
    let srv = server(Some(1));
    // Positive control: the first participant joins.
    let first = join(&srv, "room");

    let r = offer(&srv, "room", OFFER);
    eprintln!("second offer: {} {:?}", r.status, r.body.trim_end());
    assert_ne!(r.status, 201, "{r:#?}");
    assert!((400..600).contains(&r.status), "{r:#?}");
    assert!(r.body.contains("room full"), "{r:#?}");
    assert!(r.header("location").is_none(), "{r:#?}");
    assert_cors(&r, "room full");

    // Another room still takes one: then exactly two participants exist.
    let other = join(&srv, "other");
    let peers = wait_metric(&srv, "mcu_webrtc_peers", ">= 2", |v| v >= 2.0);
    assert_eq!(peers, 2.0, "participants in the WebRTC transport");
    let mut ids: Vec<u64> = participants(&srv)
        .iter()
        .filter_map(|p| p["id"].as_u64())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        vec![first.id, other.id],
        "{:#}",
        srv.get_json("/api/rooms")
    );

    // The refusal does not stick: once the first leaves, the room takes a newcomer.
    assert_eq!(delete(&srv, &first.location).status, 200);
    let third = offer(&srv, "room", OFFER);
    assert_eq!(
        third.status, 201,
        "the room takes a newcomer once one left: {third:#?}"
    );
}

/// ICE: a check with the right credentials is answered with the client's address; one with a
/// wrong password, an unknown username fragment or the fragments swapped gets nothing back,
/// and each is counted as refused.
#[test]
fn stun_checks_without_the_credentials_get_no_answer() {
    let srv = server(None);
    let p = join(&srv, "room");
    let sock = client();
    let answered = srv.metric("mcu_webrtc_stun_answered_total");

    // Positive control.
    valid_check(&sock, &p, tid(1));
    assert_rose_by(&srv, "mcu_webrtc_stun_answered_total", answered, 1);
    let refused = srv.metric("mcu_webrtc_stun_refused_total");

    let username = format!("{}:{CLIENT_UFRAG}", p.ufrag);
    let wrong_pwd = "WrongPassword0123456789a";
    assert_ne!(wrong_pwd, p.pwd);
    let bad: [(&str, Vec<u8>); 4] = [
        (
            "a wrong password",
            binding_request(&username, wrong_pwd, tid(2)),
        ),
        (
            "the browser's own password",
            binding_request(&username, "B66kgB/NKQfm9KhrZNHggLzA", tid(3)),
        ),
        (
            "an unknown username fragment",
            binding_request(&format!("Unknown0:{CLIENT_UFRAG}"), &p.pwd, tid(4)),
        ),
        (
            "the fragments swapped",
            binding_request(&format!("{CLIENT_UFRAG}:{}", p.ufrag), &p.pwd, tid(5)),
        ),
    ];
    for (what, req) in &bad {
        sock.send_to(req, webrtc_addr()).unwrap();
        assert_silence(&sock, what);
    }
    assert_rose_by(
        &srv,
        "mcu_webrtc_stun_refused_total",
        refused,
        bad.len() as u32,
    );
    assert_eq!(
        srv.metric("mcu_webrtc_stun_answered_total"),
        answered + 1.0,
        "no refused check was answered"
    );
    // The participant is unharmed.
    valid_check(&sock, &p, tid(6));
}

/// Datagrams that are no WebRTC protocol, and media or DTLS from an address no ICE check
/// validated: no answer, each counted; the server still answers a valid check afterwards.
#[test]
fn garbage_and_unvalidated_sources_are_dropped_and_counted() {
    let srv = server(None);
    let p = join(&srv, "room");
    let sock = client();
    let answered = srv.metric("mcu_webrtc_stun_answered_total");
    // Positive control: the port answers a valid check.
    valid_check(&sock, &p, tid(1));
    assert_rose_by(&srv, "mcu_webrtc_stun_answered_total", answered, 1);
    let garbage = srv.metric("mcu_webrtc_garbage_total");
    let unknown = srv.metric("mcu_webrtc_unknown_source_total");

    // 200 pseudo-random bytes (xorshift, fixed seed) after a first byte in 64..=127, which no
    // protocol on the port uses.
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    let mut random: Vec<u8> = (0..200)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    random[0] = 64 | (random[0] & 63);
    let garbage_datagrams: [(&str, Vec<u8>); 3] = [
        ("random bytes", random),
        ("a 0x05 byte", vec![0x05]),
        ("an empty datagram", Vec::new()),
    ];
    let unvalidated: [(&str, Vec<u8>); 2] = [
        ("RTP from an unvalidated address", fake_srtp(1)),
        (
            "a DTLS ClientHello from an unvalidated address",
            fake_client_hello(),
        ),
    ];
    let attacker = client();
    for (what, d) in garbage_datagrams.iter().chain(&unvalidated) {
        attacker.send_to(d, webrtc_addr()).unwrap();
        assert_silence(&attacker, what);
    }
    assert_rose_by(&srv, "mcu_webrtc_garbage_total", garbage, 3);
    assert_rose_by(&srv, "mcu_webrtc_unknown_source_total", unknown, 2);
    assert_eq!(srv.metric("mcu_webrtc_dtls_dropped_total"), 0.0);
    assert_eq!(srv.metric("mcu_webrtc_srtp_dropped_total"), 0.0);

    // Positive control after: still serving.
    valid_check(&sock, &p, tid(2));
}

/// SRTP and SRTCP from the address that passed the ICE check, before any DTLS handshake (so
/// before any key exists): dropped and counted, nothing reaches the room.
#[test]
fn srtp_before_the_handshake_is_dropped() {
    let srv = server(None);
    let p = join(&srv, "room");
    let sock = client();
    // Positive control: the address passes its check (and, with USE-CANDIDATE, is selected).
    valid_check(&sock, &p, tid(1));
    let answered = wait_metric(&srv, "mcu_webrtc_stun_answered_total", ">= 1", |v| v >= 1.0);
    assert_eq!(answered, 1.0);
    let unknown = srv.metric("mcu_webrtc_unknown_source_total");
    let rtp_in = srv.metric("mcu_rtp_packets_in_total");
    let rtcp_in = srv.metric("mcu_rtcp_packets_in_total");
    let srtp_dropped = srv.metric("mcu_webrtc_srtp_dropped_total");

    const RTP: u16 = 10;
    for seq in 1..=RTP {
        sock.send_to(&fake_srtp(seq), webrtc_addr()).unwrap();
    }
    sock.send_to(&fake_srtcp(), webrtc_addr()).unwrap();
    assert_silence(&sock, "SRTP before the handshake");
    assert_rose_by(
        &srv,
        "mcu_webrtc_srtp_dropped_total",
        srtp_dropped,
        u32::from(RTP) + 1,
    );
    // Routed to the participant (its address is validated), not refused as unknown.
    assert_eq!(srv.metric("mcu_webrtc_unknown_source_total"), unknown);

    // Nothing reached the room. Its view is refreshed as it sends (packets_out grows): once
    // it has been refreshed after the drops, packets_in must still be 0.
    let out_now = |srv: &TestServer| {
        participants(srv)
            .iter()
            .find(|v| v["id"].as_u64() == Some(p.id))
            .and_then(|v| v["packets_out"].as_u64())
            .unwrap_or(0)
    };
    let before = out_now(&srv);
    let view = testkit::poll(Duration::from_secs(5), || {
        participants(&srv)
            .into_iter()
            .find(|v| v["id"].as_u64() == Some(p.id) && v["packets_out"].as_u64() > Some(before))
    })
    .unwrap_or_else(|| panic!("the room view refreshes: {:#}", srv.get_json("/api/rooms")));
    assert_eq!(view["packets_in"].as_u64(), Some(0), "{view:#}");
    assert!(view["ssrc_in"].is_null(), "{view:#}");
    assert_eq!(srv.metric("mcu_rtp_packets_in_total"), rtp_in);
    assert_eq!(srv.metric("mcu_rtcp_packets_in_total"), rtcp_in);
}
