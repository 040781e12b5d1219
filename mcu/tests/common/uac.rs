//! A scripted SIP UAC over UDP for tests that need to send exactly-crafted messages
//! (malformed requests, garbage media). Real-client behaviour is covered by sipp and baresip.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

pub struct Uac {
    pub sock: UdpSocket,
    pub server: SocketAddr,
    pub call_id: String,
    pub from_tag: String,
    pub to_tag: Option<String>,
    pub cseq: u32,
    pub room: String,
}

/// Value of header `name` (case-insensitive, first occurrence).
pub fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n").find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

pub fn status(msg: &str) -> Option<u16> {
    msg.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

pub fn body(msg: &str) -> &str {
    msg.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
}

/// (c= address, m=audio port) of an SDP body.
pub fn sdp_media(sdp: &str) -> Option<SocketAddr> {
    let ip = sdp
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))?
        .trim();
    let port = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))?
        .split(' ')
        .next()?;
    format!("{ip}:{port}").parse().ok()
}

impl Uac {
    pub fn new(server: SocketAddr, room: &str, tag: &str) -> Uac {
        let uac = Uac::with_socket(UdpSocket::bind("127.0.0.1:0").unwrap(), server, room, tag);
        uac.sock
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Uac {
            call_id: format!("{tag}-call@127.0.0.1"),
            ..uac
        }
    }

    /// A UAC on a socket the caller bound (e.g. inside a test-bed namespace).
    pub fn with_socket(sock: UdpSocket, server: SocketAddr, room: &str, tag: &str) -> Uac {
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        Uac {
            sock,
            server,
            call_id: format!("{tag}-call@understudy.test"),
            from_tag: format!("{tag}-ft"),
            to_tag: None,
            cseq: 1,
            room: room.into(),
        }
    }

    /// Send `msg` (a request) and retransmit it on RFC 3261's timer A/E schedule (500 ms,
    /// doubling, capped at 4 s) until a final response for `method` arrives or `timeout`
    /// passes. Returns every response to it, in arrival order, with its arrival time.
    pub fn transact(&self, msg: &str, method: &str, timeout: Duration) -> Vec<(Instant, String)> {
        let start = Instant::now();
        let mut next = start;
        let mut interval = Duration::from_millis(500);
        let mut got = vec![];
        let mut buf = vec![0u8; 65536];
        while start.elapsed() < timeout {
            if Instant::now() >= next {
                self.send_raw(msg.as_bytes());
                next = Instant::now() + interval;
                interval = (interval * 2).min(Duration::from_secs(4));
            }
            if let Ok((n, _)) = self.sock.recv_from(&mut buf) {
                let m = String::from_utf8_lossy(&buf[..n]).to_string();
                let ours = header(&m, "CSeq").is_some_and(|c| c.ends_with(method))
                    && header(&m, "Call-ID") == Some(self.call_id.as_str());
                if let (Some(code), true) = (status(&m), ours) {
                    got.push((Instant::now(), m));
                    if code >= 200 {
                        break;
                    }
                }
            }
        }
        got
    }

    /// Learn the dialog's remote tag from a 2xx.
    pub fn learn_tag(&mut self, ok: &str) {
        let to = header(ok, "To").unwrap();
        self.to_tag = to
            .split(";tag=")
            .nth(1)
            .map(|t| t.split(';').next().unwrap().to_string());
    }

    pub fn local(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    pub fn send_raw(&self, data: &[u8]) {
        self.sock.send_to(data, self.server).unwrap();
    }

    pub fn request(
        &self,
        method: &str,
        cseq: u32,
        branch: &str,
        extra: &str,
        body: &str,
    ) -> String {
        let to_tag = self
            .to_tag
            .as_ref()
            .map(|t| format!(";tag={t}"))
            .unwrap_or_default();
        let local = self.local();
        let ctype = if body.is_empty() {
            String::new()
        } else {
            "Content-Type: application/sdp\r\n".into()
        };
        format!(
            "{method} sip:{room}@{srv} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{branch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:tester@{local}>;tag={ft}\r\nTo: <sip:{room}@{srv}>{to_tag}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\nContact: <sip:tester@{local}>\r\n{extra}{ctype}Content-Length: {len}\r\n\r\n{body}",
            room = self.room,
            srv = self.server,
            ft = self.from_tag,
            cid = self.call_id,
            len = body.len(),
        )
    }

    /// Wait for a message satisfying `pred`; other messages are returned in `seen`.
    pub fn recv_until(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            if let Ok((n, _)) = self.sock.recv_from(&mut buf) {
                let m = String::from_utf8_lossy(&buf[..n]).to_string();
                if pred(&m) {
                    return Some(m);
                }
            }
        }
        None
    }

    pub fn pcmu_offer(&self, rtp: SocketAddr) -> String {
        format!(
            "v=0\r\no=tester 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n",
            ip = rtp.ip(),
            port = rtp.port()
        )
    }

    /// INVITE with `sdp`, wait for the 200, ACK it. Returns the 200 OK.
    pub fn call(&mut self, sdp: &str) -> String {
        let inv = self.request("INVITE", self.cseq, &format!("inv{}", self.cseq), "", sdp);
        self.send_raw(inv.as_bytes());
        let ok = self
            .recv_until(Duration::from_secs(5), |m| {
                status(m) == Some(200) && m.contains("INVITE")
            })
            .expect("no 200 OK to INVITE");
        let to = header(&ok, "To").unwrap();
        self.to_tag = to
            .split(";tag=")
            .nth(1)
            .map(|t| t.split(';').next().unwrap().to_string());
        let ack = self.request("ACK", self.cseq, &format!("ack{}", self.cseq), "", "");
        self.send_raw(ack.as_bytes());
        ok
    }

    /// BYE and wait for its 200.
    pub fn bye(&mut self) -> Option<String> {
        self.cseq += 1;
        let bye = self.request("BYE", self.cseq, &format!("bye{}", self.cseq), "", "");
        self.send_raw(bye.as_bytes());
        self.recv_until(Duration::from_secs(5), |m| {
            status(m).is_some() && m.contains("BYE")
        })
    }
}

/// A 20 ms PCMU RTP packet of a 1 kHz tone.
pub fn pcmu_packet(ssrc: u32, seq: u16, ts: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0, (seq >> 8) as u8, seq as u8];
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    for i in 0..160u32 {
        let s = (8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * (ts + i) as f64 / 8000.0).sin())
            as i16;
        p.push(mixer::g711::linear_to_ulaw(s));
    }
    p
}
