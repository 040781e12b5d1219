//! Test harness: a virtual-time driver and a tiny parser for what the core emits.
#![allow(dead_code)]

use sip_core::{Config, Core, Event, Transmit, Transport};
use std::net::SocketAddr;
use std::time::Duration;

pub const SERVER: &str = "198.18.0.1:5060";
pub const ALICE: &str = "198.18.0.10:5061";

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

pub fn config(seed: u64) -> Config {
    Config {
        local_addr: addr(SERVER),
        user_agent: "Understudy-test".into(),
        max_message_size: 8192,
        seed,
    }
}

/// A parsed message as the peer sees it.
#[derive(Debug, Clone)]
pub struct Msg {
    pub start: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub transport: Transport,
    pub to: SocketAddr,
}

impl Msg {
    pub fn parse(t: &Transmit) -> Msg {
        let text = String::from_utf8(t.data.clone()).expect("core emits UTF-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head end");
        let mut lines = head.split("\r\n");
        let start = lines.next().unwrap().to_string();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').expect("header line");
                (n.trim().to_ascii_lowercase(), v.trim().to_string())
            })
            .collect();
        let m = Msg {
            start,
            headers,
            body: body.to_string(),
            transport: t.transport,
            to: t.to,
        };
        let cl: usize = m
            .header("content-length")
            .expect("Content-Length")
            .parse()
            .unwrap();
        assert_eq!(cl, m.body.len(), "Content-Length matches body");
        m
    }
    pub fn status(&self) -> u16 {
        assert!(
            self.start.starts_with("SIP/2.0 "),
            "not a response: {}",
            self.start
        );
        self.start[8..11].parse().unwrap()
    }
    pub fn header(&self, n: &str) -> Option<&str> {
        let n = n.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.as_str())
    }
    pub fn all(&self, n: &str) -> Vec<&str> {
        let n = n.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(k, _)| *k == n)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    pub fn to_tag(&self) -> String {
        let to = self.header("to").unwrap();
        to.split(";tag=")
            .nth(1)
            .expect("To tag")
            .split(';')
            .next()
            .unwrap()
            .to_string()
    }
    pub fn cseq(&self) -> &str {
        self.header("cseq").unwrap()
    }
}

pub struct Harness {
    pub core: Core,
    pub now: Duration,
}

impl Harness {
    pub fn new() -> Self {
        Harness {
            core: Core::new(config(7)),
            now: Duration::ZERO,
        }
    }
    pub fn udp(&mut self, from: &str, msg: &str) {
        self.core
            .handle_datagram(addr(from), msg.as_bytes(), self.now);
    }
    pub fn tcp(&mut self, conn: u64, from: &str, bytes: &[u8]) {
        self.core
            .handle_stream_data(conn, addr(from), bytes, self.now);
    }
    pub fn out(&mut self) -> Vec<Msg> {
        let mut v = Vec::new();
        while let Some(t) = self.core.poll_transmit() {
            v.push(Msg::parse(&t));
        }
        v
    }
    pub fn raw_out(&mut self) -> Vec<Transmit> {
        let mut v = Vec::new();
        while let Some(t) = self.core.poll_transmit() {
            v.push(t);
        }
        v
    }
    pub fn events(&mut self) -> Vec<Event> {
        let mut v = Vec::new();
        while let Some(e) = self.core.poll_event() {
            v.push(e);
        }
        v
    }
    /// Advance virtual time to `t`, firing every timer on the way; returns (time, message)
    /// for each transmission.
    pub fn advance_to(&mut self, t: Duration) -> Vec<(Duration, Msg)> {
        let mut sent = Vec::new();
        while let Some(at) = self.core.poll_timeout() {
            if at > t {
                break;
            }
            self.now = self.now.max(at);
            self.core.handle_timeout(self.now);
            for m in self.out() {
                sent.push((self.now, m));
            }
        }
        self.now = t;
        sent
    }
}

pub fn with_len(head: &str, body: &str) -> String {
    format!("{}Content-Length: {}\r\n\r\n{}", head, body.len(), body)
}

pub const PCMU_OFFER: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 198.18.0.10\r\ns=-\r\nc=IN IP4 198.18.0.10\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

pub fn invite(branch: &str, call_id: &str, cseq: u32, sdp: &str) -> String {
    let ct = if sdp.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    with_len(
        &format!(
            "INVITE sip:room1@198.18.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.18.0.10:5061;branch={branch}\r\n\
From: sipp <sip:sipp@198.18.0.10:5061>;tag=abc123\r\n\
To: room1 <sip:room1@198.18.0.1:5060>\r\n\
Call-ID: {call_id}\r\n\
CSeq: {cseq} INVITE\r\n\
Contact: sip:sipp@198.18.0.10:5061\r\n\
Max-Forwards: 70\r\n\
{ct}"
        ),
        sdp,
    )
}

/// An in-dialog request from the caller (To carries our tag).
pub fn in_dialog(
    method: &str,
    branch: &str,
    call_id: &str,
    cseq: u32,
    to_tag: &str,
    extra: &str,
    body: &str,
) -> String {
    with_len(
        &format!(
            "{method} sip:sipp@198.18.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.18.0.10:5061;branch={branch}\r\n\
From: sipp <sip:sipp@198.18.0.10:5061>;tag=abc123\r\n\
To: room1 <sip:room1@198.18.0.1:5060>;tag={to_tag}\r\n\
Call-ID: {call_id}\r\n\
CSeq: {cseq} {method}\r\n\
Max-Forwards: 70\r\n\
{extra}"
        ),
        body,
    )
}

pub fn answer_for(offer: &str) -> String {
    let neg = sip_core::sdp::negotiate(offer).expect("negotiable offer");
    let local = sip_core::sdp::LocalMedia {
        ip: "198.18.0.1".parse().unwrap(),
        rtp_port: 40000,
        video_port: None,
        session_id: 1,
        session_version: 1,
    };
    sip_core::sdp::build_answer(&local, &neg)
}

/// Deliver an INVITE over UDP, accept it, return (call, our To-tag, the 200).
pub fn established(h: &mut Harness, call_id: &str) -> (sip_core::CallHandle, String) {
    h.udp(ALICE, &invite("z9hG4bK-inv1", call_id, 1, PCMU_OFFER));
    let out = h.out();
    assert_eq!(out[0].status(), 100);
    let call = match h.events().pop() {
        Some(Event::IncomingCall { call, .. }) => call,
        e => panic!("expected IncomingCall, got {e:?}"),
    };
    h.core.accept(call, answer_for(PCMU_OFFER), h.now).unwrap();
    let ok = h.out().pop().unwrap();
    assert_eq!(ok.status(), 200);
    let tag = ok.to_tag();
    h.udp(
        ALICE,
        &in_dialog("ACK", "z9hG4bK-ack1", call_id, 1, &tag, "", ""),
    );
    assert!(h.out().is_empty());
    assert_eq!(h.events(), vec![Event::Confirmed { call, answer: None }]);
    (call, tag)
}
