//! A minimal SIP UAC over UDP as a sans-IO state machine (RFC 3261 subset).
//!
//! Drive it like this: call [`Uac::start`] once, then feed every datagram from the SIP
//! socket to [`Uac::handle_datagram`], call [`Uac::handle_timeout`] when
//! [`Uac::poll_timeout`] has passed, and call [`Uac::hangup`] to end the call. Each call
//! returns [`Output`]s: datagrams to send and events. Time is always passed in.
//!
//! Supported: INVITE with SDP offer, 1xx, 2xx (ACK, re-ACK on retransmitted 2xx), non-2xx
//! final (ACK, failure), INVITE/BYE retransmission (timers A/B, E/F), server BYE (200 OK),
//! in-dialog re-INVITE (200 OK with the same SDP), OPTIONS/INFO/UPDATE (200 OK).
//! Not supported: authentication, Record-Route/route sets, TCP/TLS, forking.

use std::net::SocketAddr;
use std::time::Duration;

use sip_core::inspect::SipMessage;

use crate::sip::{self, Codec};

const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
const TIMER_B: Duration = Duration::from_secs(32);

/// Static configuration of one participant.
#[derive(Debug, Clone)]
pub struct UacConfig {
    /// Request-URI, e.g. `sip:room@127.0.0.1:5060`.
    pub target_uri: String,
    /// Where requests are sent.
    pub server: SocketAddr,
    /// Local SIP socket address (Via/Contact).
    pub local_sip: SocketAddr,
    /// Local RTP address offered in SDP.
    pub local_rtp: SocketAddr,
    /// User part of From/Contact.
    pub user: String,
    /// Payload type offered.
    pub pt: u8,
    /// Codec offered.
    pub codec: Codec,
    /// Call-ID.
    pub call_id: String,
    /// From tag.
    pub from_tag: String,
    /// Prefix for Via branches (random per participant).
    pub branch_prefix: String,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send this datagram.
    Transmit {
        /// Destination.
        to: SocketAddr,
        /// SIP message bytes.
        data: Vec<u8>,
    },
    /// The call is up (or a re-INVITE moved it): media flows to `remote_rtp` with payload
    /// type `pt`.
    Established {
        /// Remote media address from the SDP answer.
        remote_rtp: Option<SocketAddr>,
        /// Payload type to send (from the answer; the offered one if absent).
        pt: u8,
    },
    /// The call ended.
    Terminated {
        /// Why.
        reason: String,
        /// Whether the server ended it (BYE or error) rather than us.
        by_remote: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Calling,
    Proceeding,
    Confirmed,
    ByeSent,
    Done,
}

/// The UAC state machine.
#[derive(Debug)]
pub struct Uac {
    cfg: UacConfig,
    state: State,
    invite: Vec<u8>,
    invite_branch: String,
    to_tag: Option<String>,
    remote_target: String,
    remote_addr: SocketAddr,
    ack: Option<Vec<u8>>,
    bye: Vec<u8>,
    started: Duration,
    retransmit_at: Option<Duration>,
    interval: Duration,
    next_branch: u32,
}

/// The header lines a response copies from its request (RFC 3261 8.2.6.2), as
/// `Name: value` lines in canonical form.
fn copied_headers(req: &SipMessage) -> Vec<String> {
    ["Via", "From", "To", "Call-ID", "CSeq"]
        .iter()
        .flat_map(|name| {
            req.header(name)
                .into_iter()
                .map(move |v| format!("{name}: {v}"))
        })
        .collect()
}

impl Uac {
    /// A new UAC; nothing is sent before [`Uac::start`].
    pub fn new(cfg: UacConfig) -> Self {
        let remote_target = cfg.target_uri.clone();
        let remote_addr = cfg.server;
        Uac {
            cfg,
            state: State::Idle,
            invite: Vec::new(),
            invite_branch: String::new(),
            to_tag: None,
            remote_target,
            remote_addr,
            ack: None,
            bye: Vec::new(),
            started: Duration::ZERO,
            retransmit_at: None,
            interval: T1,
            next_branch: 0,
        }
    }

    /// Whether the call has ended.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether the call is established.
    pub fn is_established(&self) -> bool {
        self.state == State::Confirmed
    }

    fn branch(&mut self) -> String {
        self.next_branch += 1;
        format!("z9hG4bK{}{}", self.cfg.branch_prefix, self.next_branch)
    }

    fn sdp(&self) -> String {
        let ip = self.cfg.local_rtp.ip();
        let fam = if ip.is_ipv4() { "IP4" } else { "IP6" };
        format!(
            "v=0\r\no=- 1 1 IN {fam} {ip}\r\ns=pcap-replay\r\nc=IN {fam} {ip}\r\nt=0 0\r\n\
             m=audio {} RTP/AVP {}\r\na=rtpmap:{} {}\r\na=sendrecv\r\n",
            self.cfg.local_rtp.port(),
            self.cfg.pt,
            self.cfg.pt,
            self.cfg.codec.label()
        )
    }

    fn header_from(&self) -> String {
        let host = match self.cfg.local_sip.ip() {
            std::net::IpAddr::V4(ip) => ip.to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        };
        format!(
            "From: <sip:{}@{host}>;tag={}",
            self.cfg.user, self.cfg.from_tag
        )
    }

    fn header_to(&self) -> String {
        let base = self
            .cfg
            .target_uri
            .split(';')
            .next()
            .unwrap_or(&self.cfg.target_uri)
            .to_string();
        match &self.to_tag {
            Some(t) => format!("To: <{base}>;tag={t}"),
            None => format!("To: <{base}>"),
        }
    }

    fn request(&self, method: &str, uri: &str, branch: &str, cseq: u32, body: &str) -> Vec<u8> {
        let mut m = format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n{}\r\n{}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\n\
             Contact: <sip:{}@{}>\r\nUser-Agent: understudy-pcap-replay\r\n",
            self.cfg.local_sip,
            self.header_from(),
            self.header_to(),
            self.cfg.call_id,
            self.cfg.user,
            self.cfg.local_sip
        );
        if !body.is_empty() {
            m.push_str("Content-Type: application/sdp\r\n");
        }
        m.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        m.into_bytes()
    }

    /// Send the INVITE.
    pub fn start(&mut self, now: Duration) -> Vec<Output> {
        if self.state != State::Idle {
            return Vec::new();
        }
        self.invite_branch = self.branch();
        let sdp = self.sdp();
        self.invite = self.request(
            "INVITE",
            &self.cfg.target_uri,
            &self.invite_branch.clone(),
            1,
            &sdp,
        );
        self.state = State::Calling;
        self.started = now;
        self.interval = T1;
        self.retransmit_at = Some(now + T1);
        vec![Output::Transmit {
            to: self.cfg.server,
            data: self.invite.clone(),
        }]
    }

    /// When [`Uac::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.retransmit_at
    }

    /// Retransmissions and transaction timeouts.
    pub fn handle_timeout(&mut self, now: Duration) -> Vec<Output> {
        let Some(at) = self.retransmit_at else {
            return Vec::new();
        };
        if now < at {
            return Vec::new();
        }
        match self.state {
            State::Calling | State::Proceeding | State::ByeSent
                if now >= self.started + TIMER_B =>
            {
                let by_remote = self.state != State::ByeSent;
                self.state = State::Done;
                self.retransmit_at = None;
                vec![Output::Terminated {
                    reason: "transaction timeout (no final response in 32 s)".into(),
                    by_remote,
                }]
            }
            State::Calling => {
                self.interval *= 2;
                self.retransmit_at = Some(now + self.interval);
                vec![Output::Transmit {
                    to: self.cfg.server,
                    data: self.invite.clone(),
                }]
            }
            State::Proceeding => {
                // Only timer B runs once a provisional response arrived.
                self.retransmit_at = Some(self.started + TIMER_B);
                Vec::new()
            }
            State::ByeSent => {
                self.interval = (self.interval * 2).min(T2);
                self.retransmit_at = Some(now + self.interval);
                vec![Output::Transmit {
                    to: self.remote_addr,
                    data: self.bye.clone(),
                }]
            }
            _ => {
                self.retransmit_at = None;
                Vec::new()
            }
        }
    }

    /// End the call: CANCEL is not implemented, so before the call is up this only
    /// gives up; once up it sends BYE.
    pub fn hangup(&mut self, now: Duration) -> Vec<Output> {
        match self.state {
            State::Confirmed => {
                let branch = self.branch();
                let target = self.remote_target.clone();
                self.bye = self.request("BYE", &target, &branch, 2, "");
                self.state = State::ByeSent;
                self.started = now;
                self.interval = T1;
                self.retransmit_at = Some(now + T1);
                vec![Output::Transmit {
                    to: self.remote_addr,
                    data: self.bye.clone(),
                }]
            }
            State::Done | State::ByeSent => Vec::new(),
            _ => {
                self.state = State::Done;
                self.retransmit_at = None;
                vec![Output::Terminated {
                    reason: "hung up before the call was answered".into(),
                    by_remote: false,
                }]
            }
        }
    }

    fn respond(&self, req: &SipMessage, status: &str, body: &str) -> Vec<u8> {
        let mut m = format!("SIP/2.0 {status}\r\n");
        for l in copied_headers(req) {
            m.push_str(&l);
            m.push_str("\r\n");
        }
        m.push_str(&format!(
            "Contact: <sip:{}@{}>\r\n",
            self.cfg.user, self.cfg.local_sip
        ));
        if !body.is_empty() {
            m.push_str("Content-Type: application/sdp\r\n");
        }
        m.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        m.into_bytes()
    }

    /// Feed a datagram received on the SIP socket.
    pub fn handle_datagram(&mut self, now: Duration, from: SocketAddr, data: &[u8]) -> Vec<Output> {
        let Ok(raw) = SipMessage::parse(data) else {
            return Vec::new();
        };
        let Some(msg) = sip::from_parsed(&raw) else {
            return Vec::new();
        };
        if msg.call_id != self.cfg.call_id {
            return Vec::new();
        }
        let mut out = Vec::new();
        if let Some(method) = &msg.method {
            // A request from the server.
            match method.as_str() {
                "BYE" => {
                    out.push(Output::Transmit {
                        to: from,
                        data: self.respond(&raw, "200 OK", ""),
                    });
                    if self.state != State::Done {
                        self.state = State::Done;
                        self.retransmit_at = None;
                        out.push(Output::Terminated {
                            reason: "BYE from the server".into(),
                            by_remote: true,
                        });
                    }
                }
                "INVITE" => {
                    // Re-INVITE (e.g. a backup server moving the media): same offer back,
                    // and media follows the new address.
                    let sdp = self.sdp();
                    out.push(Output::Transmit {
                        to: from,
                        data: self.respond(&raw, "200 OK", &sdp),
                    });
                    if let Some(media) = msg.sdp.as_ref().and_then(|s| s.media.first()) {
                        if self.state == State::Confirmed && media.addr.is_some() {
                            let pt = media
                                .rtpmap
                                .iter()
                                .find(|(_, c)| c.name.eq_ignore_ascii_case(&self.cfg.codec.name))
                                .map_or(self.cfg.pt, |(pt, _)| *pt);
                            out.push(Output::Established {
                                remote_rtp: media.addr,
                                pt,
                            });
                        }
                    }
                }
                "ACK" => {}
                _ => out.push(Output::Transmit {
                    to: from,
                    data: self.respond(&raw, "200 OK", ""),
                }),
            }
            return out;
        }
        let status = msg.status.unwrap_or(0);
        match msg.cseq_method.as_str() {
            "INVITE" => match (self.state, status) {
                (State::Calling | State::Proceeding, 100..=199) => {
                    self.state = State::Proceeding;
                    self.retransmit_at = Some(self.started + TIMER_B);
                }
                (State::Calling | State::Proceeding, 200..=299) => {
                    self.to_tag = msg.to_tag.clone();
                    if let Some((uri, addr)) = raw.contact() {
                        self.remote_target = uri;
                        if let Some(a) = addr {
                            self.remote_addr = a;
                        }
                    }
                    let branch = self.branch();
                    let target = self.remote_target.clone();
                    let ack = self.request("ACK", &target, &branch, 1, "");
                    self.ack = Some(ack.clone());
                    self.state = State::Confirmed;
                    self.retransmit_at = None;
                    out.push(Output::Transmit {
                        to: self.remote_addr,
                        data: ack,
                    });
                    let media = msg.sdp.as_ref().and_then(|s| s.media.first());
                    let pt = media
                        .and_then(|m| {
                            m.rtpmap
                                .iter()
                                .find(|(_, c)| c.name.eq_ignore_ascii_case(&self.cfg.codec.name))
                                .map(|(pt, _)| *pt)
                        })
                        .unwrap_or(self.cfg.pt);
                    out.push(Output::Established {
                        remote_rtp: media.and_then(|m| m.addr),
                        pt,
                    });
                }
                (State::Confirmed | State::ByeSent, 200..=299) => {
                    // Retransmitted 2xx: our ACK was lost.
                    if let Some(ack) = &self.ack {
                        out.push(Output::Transmit {
                            to: self.remote_addr,
                            data: ack.clone(),
                        });
                    }
                }
                (State::Calling | State::Proceeding, 300..=699) => {
                    self.to_tag = msg.to_tag.clone();
                    // ACK for a non-2xx final response: same branch as the INVITE.
                    let branch = self.invite_branch.clone();
                    let ack = self.request("ACK", &self.cfg.target_uri, &branch, 1, "");
                    out.push(Output::Transmit {
                        to: self.cfg.server,
                        data: ack,
                    });
                    self.state = State::Done;
                    self.retransmit_at = None;
                    out.push(Output::Terminated {
                        reason: format!(
                            "INVITE rejected: {status} {}",
                            msg.reason.unwrap_or_default()
                        ),
                        by_remote: true,
                    });
                }
                _ => {}
            },
            "BYE" if self.state == State::ByeSent && status >= 200 => {
                self.state = State::Done;
                self.retransmit_at = None;
                out.push(Output::Terminated {
                    reason: format!("BYE answered with {status}"),
                    by_remote: false,
                });
            }
            _ => {}
        }
        let _ = now;
        out
    }
}

#[cfg(test)]
mod tests_support {
    use super::*;

    pub fn cfg() -> UacConfig {
        UacConfig {
            target_uri: "sip:room@127.0.0.1:5060".into(),
            server: "127.0.0.1:5060".parse().unwrap(),
            local_sip: "127.0.0.1:40000".parse().unwrap(),
            local_rtp: "127.0.0.1:40002".parse().unwrap(),
            user: "replay1".into(),
            pt: 8,
            codec: Codec {
                name: "PCMA".into(),
                rate: 8000,
                channels: None,
            },
            call_id: "c1".into(),
            from_tag: "ft".into(),
            branch_prefix: "x".into(),
        }
    }

    pub fn sent(o: &[Output]) -> Vec<String> {
        o.iter()
            .filter_map(|o| match o {
                Output::Transmit { data, .. } => Some(
                    String::from_utf8_lossy(data)
                        .lines()
                        .next()
                        .unwrap()
                        .to_string(),
                ),
                _ => None,
            })
            .collect()
    }

    pub fn server_response(req: &[u8], status: &str, extra: &str, body: &str) -> Vec<u8> {
        let req = SipMessage::parse(req).unwrap();
        let mut m = format!("SIP/2.0 {status}\r\n");
        for l in copied_headers(&req) {
            m.push_str(&l);
            if l.starts_with("To:") && !status.starts_with("100") {
                m.push_str(";tag=srv");
            }
            m.push_str("\r\n");
        }
        m.push_str(extra);
        if !body.is_empty() {
            m.push_str("Content-Type: application/sdp\r\n");
        }
        m.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        m.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;
    use super::*;

    #[test]
    fn full_call_in_virtual_time() {
        let srv: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let mut uac = Uac::new(cfg());
        let out = uac.start(Duration::ZERO);
        let Output::Transmit { data: invite, .. } = &out[0] else {
            panic!()
        };
        let text = String::from_utf8_lossy(invite);
        assert!(text.starts_with("INVITE sip:room@127.0.0.1:5060 SIP/2.0\r\n"));
        assert!(text.contains("m=audio 40002 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000"));
        // No answer: INVITE retransmitted at 500 ms, then 1.5 s.
        assert_eq!(
            sent(&uac.handle_timeout(Duration::from_millis(500))),
            ["INVITE sip:room@127.0.0.1:5060 SIP/2.0"]
        );
        assert_eq!(uac.poll_timeout(), Some(Duration::from_millis(1500)));
        // 100 Trying stops retransmissions.
        let trying = server_response(invite, "100 Trying", "", "");
        assert!(uac
            .handle_datagram(Duration::from_millis(600), srv, &trying)
            .is_empty());
        assert!(uac.handle_timeout(Duration::from_millis(1500)).is_empty());
        let sdp = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 30000 RTP/AVP 8\r\n";
        let ok = server_response(
            invite,
            "200 OK",
            "Contact: <sip:room@127.0.0.1:5060>\r\n",
            sdp,
        );
        let out = uac.handle_datagram(Duration::from_millis(700), srv, &ok);
        assert_eq!(sent(&out), ["ACK sip:room@127.0.0.1:5060 SIP/2.0"]);
        assert!(out.contains(&Output::Established {
            remote_rtp: Some("127.0.0.1:30000".parse().unwrap()),
            pt: 8
        }));
        assert!(uac.is_established());
        // Retransmitted 200 -> ACK again.
        assert_eq!(
            sent(&uac.handle_datagram(Duration::from_millis(900), srv, &ok)).len(),
            1
        );
        // Our BYE, retransmitted until answered.
        let out = uac.hangup(Duration::from_secs(5));
        assert_eq!(sent(&out), ["BYE sip:room@127.0.0.1:5060 SIP/2.0"]);
        let Output::Transmit { data: bye, .. } = &out[0] else {
            panic!()
        };
        assert!(String::from_utf8_lossy(bye).contains("To: <sip:room@127.0.0.1:5060>;tag=srv"));
        assert_eq!(
            sent(&uac.handle_timeout(Duration::from_millis(5500))).len(),
            1
        );
        let ok_bye = server_response(bye, "200 OK", "", "");
        let out = uac.handle_datagram(Duration::from_secs(6), srv, &ok_bye);
        assert!(matches!(
            out[0],
            Output::Terminated {
                by_remote: false,
                ..
            }
        ));
        assert!(uac.is_done());
    }

    #[test]
    fn server_bye_is_answered_and_ends_the_call() {
        let srv: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let mut uac = Uac::new(cfg());
        let out = uac.start(Duration::ZERO);
        let Output::Transmit { data: invite, .. } = &out[0] else {
            panic!()
        };
        let ok = server_response(
            invite,
            "200 OK",
            "",
            "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 30000 RTP/AVP 8\r\n",
        );
        uac.handle_datagram(Duration::from_millis(10), srv, &ok);
        let bye = b"BYE sip:replay1@127.0.0.1:40000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKs1\r\nFrom: <sip:room@127.0.0.1>;tag=srv\r\nTo: <sip:replay1@127.0.0.1>;tag=ft\r\nCall-ID: c1\r\nCSeq: 7 BYE\r\nContent-Length: 0\r\n\r\n";
        let out = uac.handle_datagram(Duration::from_secs(1), srv, bye);
        assert_eq!(sent(&out), ["SIP/2.0 200 OK"]);
        let Output::Transmit { data, .. } = &out[0] else {
            panic!()
        };
        assert!(String::from_utf8_lossy(data).contains("CSeq: 7 BYE"));
        assert!(matches!(
            out[1],
            Output::Terminated {
                by_remote: true,
                ..
            }
        ));
    }

    #[test]
    fn rejection_is_acked_and_reported() {
        let srv: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let mut uac = Uac::new(cfg());
        let out = uac.start(Duration::ZERO);
        let Output::Transmit { data: invite, .. } = &out[0] else {
            panic!()
        };
        let busy = server_response(invite, "486 Busy Here", "", "");
        let out = uac.handle_datagram(Duration::from_millis(10), srv, &busy);
        assert_eq!(sent(&out), ["ACK sip:room@127.0.0.1:5060 SIP/2.0"]);
        assert!(matches!(&out[1], Output::Terminated { reason, .. } if reason.contains("486")));
    }
}

#[cfg(test)]
mod reinvite_tests {
    use super::tests_support::*;
    use super::*;

    #[test]
    fn reinvite_moves_the_media() {
        let srv: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let mut uac = Uac::new(cfg());
        let out = uac.start(Duration::ZERO);
        let Output::Transmit { data: invite, .. } = &out[0] else {
            panic!()
        };
        let ok = server_response(
            invite,
            "200 OK",
            "",
            "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 30000 RTP/AVP 8\r\n",
        );
        uac.handle_datagram(Duration::from_millis(10), srv, &ok);
        let body = "v=0\r\nc=IN IP4 127.0.0.2\r\nm=audio 31000 RTP/AVP 8\r\n";
        let reinvite = format!("INVITE sip:replay1@127.0.0.1:40000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKr1\r\nFrom: <sip:room@127.0.0.1>;tag=srv\r\nTo: <sip:replay1@127.0.0.1>;tag=ft\r\nCall-ID: c1\r\nCSeq: 8 INVITE\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        let out = uac.handle_datagram(Duration::from_secs(1), srv, reinvite.as_bytes());
        let Output::Transmit { data, .. } = &out[0] else {
            panic!()
        };
        let text = String::from_utf8_lossy(data);
        assert!(
            text.starts_with("SIP/2.0 200 OK")
                && text.contains("CSeq: 8 INVITE")
                && text.contains("m=audio 40002")
        );
        assert_eq!(
            out[1],
            Output::Established {
                remote_rtp: Some("127.0.0.2:31000".parse().unwrap()),
                pt: 8
            }
        );
    }
}
