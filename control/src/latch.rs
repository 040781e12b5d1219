//! Strict media source (where a participant's media come from and go to) and RTP/RTCP
//! demultiplexing: the rules the room drivers apply to every packet, kept here as a small
//! state machine and pure functions so they are tested alone.
//!
//! # The rule ("strict RTP", as Asterisk and rtpengine do it)
//!
//! - **Learning.** A call starts in a probation of [`PROBATION`] (2 s). Media go to the SDP
//!   address until a source is learned. The SDP address, when it sends, is learned at once
//!   and for good. A client behind NAT sends from elsewhere: during the probation the first
//!   other source is learned provisionally, and the SDP address still replaces it if it
//!   sends before the probation ends. After the probation the learned source is fixed.
//! - **Foreign packets.** Once a source is learned, RTP from any other address (IP and port)
//!   is dropped before the mixer ([`Latch::on_rtp`] returns false; the driver counts it). A
//!   new SSRC from the learned source is accepted (the mixer follows SSRC changes).
//! - **A participant that never sends**: after the probation only its SDP address may still
//!   be learned, so one packet from elsewhere cannot move its downlink. One whose SDP says it
//!   will not send (recvonly, inactive: [`Latch::set_client_sends`]) learns nothing but its SDP
//!   address, probation included. The trade-off: a listener behind NAT is reached at its SDP
//!   address only, and a client behind NAT that stays silent for the whole probation is not
//!   learned.
//! - **No silent relatch.** The learned source never moves by itself (the NAT-rebinding move
//!   after one second of silence is gone: it let anyone steal a pausing stream). It moves only
//!   when a re-INVITE brings another SDP address ([`Latch::on_update`]), which reopens the
//!   probation with the new address preferred.
//! - **RTCP** is accepted from the learned RTP source only: with rtcp-mux the very address;
//!   without, its IP, the RTCP port being learned from the first such RTCP. Foreign RTCP is
//!   dropped and never redirects where our RTCP goes.
//! - **Media timeout.** Every accepted packet (RTP or RTCP) counts as heard
//!   ([`Latch::silent_for`]); the room ends calls silent for too long.
//!
//! What was learned ([`Source`]) is reported ([`Latch::poll_report`]) and replicated, so that a
//! backup taking over continues with it ([`Latch::resumed`]) instead of trusting whatever
//! packet the mirrored input saw last.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

/// How long after a call starts (or a re-INVITE changes its SDP address) a source other than
/// the SDP address may be learned.
pub const PROBATION: Duration = Duration::from_secs(2);

/// What a latch has learned (replicated in the call's record).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Learned RTP source (`None`: nothing yet, media go to the SDP address).
    pub rtp: Option<SocketAddr>,
    /// Learned RTCP source (without rtcp-mux: the first RTCP from the RTP source's IP).
    pub rtcp: Option<SocketAddr>,
    /// Still in probation: the RTP source may still change.
    pub learning: bool,
}

/// Where one participant's media may come from and where its RTP and RTCP go.
#[derive(Clone, Debug, PartialEq)]
pub struct Latch {
    sdp_rtp: SocketAddr,
    sdp_rtcp: SocketAddr,
    rtcp_mux: bool,
    client_sends: bool,
    src: Source,
    probation_until: Duration,
    last_heard: Duration,
    reported: Option<Source>,
}

impl Latch {
    /// A new participant at `now`: its SDP addresses; the probation starts.
    pub fn new(
        remote_rtp: SocketAddr,
        remote_rtcp: SocketAddr,
        rtcp_mux: bool,
        now: Duration,
    ) -> Self {
        let src = Source {
            rtp: None,
            rtcp: None,
            learning: true,
        };
        Latch {
            sdp_rtp: remote_rtp,
            sdp_rtcp: remote_rtcp,
            rtcp_mux,
            client_sends: true,
            src,
            probation_until: now + PROBATION,
            last_heard: now,
            // Nothing learned is what a call starts with: not worth a report.
            reported: Some(src),
        }
    }

    /// A participant taken over at `now` (a backup promoted): continues with the replicated
    /// `learned` source when its probation was over. A call still learning (or whose source
    /// never reached the backup) learns again, from the takeover on; it starts from the
    /// replicated provisional source, else from `mirrored` (the latest RTP source the
    /// mirrored input saw), and its SDP address still wins if it sends. The media timeout's
    /// clock restarts at `now`.
    pub fn resumed(
        remote_rtp: SocketAddr,
        remote_rtcp: SocketAddr,
        rtcp_mux: bool,
        learned: Option<Source>,
        mirrored: Option<SocketAddr>,
        now: Duration,
    ) -> Self {
        let mut l = Latch::new(remote_rtp, remote_rtcp, rtcp_mux, now);
        match learned {
            Some(s) if !s.learning => {
                l.src = s;
                l.probation_until = now;
            }
            Some(s) => l.src = s,
            None => l.src.rtp = mirrored,
        }
        l.reported = learned;
        l
    }

    fn settle(&mut self, now: Duration) {
        if self.src.learning && now >= self.probation_until {
            self.src.learning = false;
        }
    }

    fn learn(&mut self, from: SocketAddr) {
        if self.src.rtp != Some(from) {
            if self.src.rtcp.is_some_and(|r| r.ip() != from.ip()) {
                self.src.rtcp = None;
            }
            self.src.rtp = Some(from);
        }
    }

    /// An RTP packet from `from` at `now`: whether it is the participant's (false: foreign,
    /// drop it).
    pub fn on_rtp(&mut self, from: SocketAddr, now: Duration) -> bool {
        self.settle(now);
        let from_sdp = usable(self.sdp_rtp) == Some(from);
        let ok = match self.src.rtp {
            Some(s) if s == from => true,
            // The SDP address is preferred while learning, and learnable while nothing is.
            _ if from_sdp && (self.src.learning || self.src.rtp.is_none()) => {
                self.learn(from);
                self.src.learning = false;
                true
            }
            // Behind NAT: the first source of the probation.
            None if self.src.learning && self.client_sends => {
                self.learn(from);
                true
            }
            _ => false,
        };
        if ok {
            self.last_heard = now;
        }
        ok
    }

    /// An RTCP packet from `from` at `now` (`on_rtp_port`: it came to our RTP port, as with
    /// rtcp-mux): whether it is the participant's (false: foreign, drop it). Its reports go
    /// back where the participant's RTCP comes from.
    pub fn on_rtcp(&mut self, from: SocketAddr, on_rtp_port: bool, now: Duration) -> bool {
        self.settle(now);
        let rtp = self.src.rtp.or(usable(self.sdp_rtp));
        let ok = if on_rtp_port || self.rtcp_mux {
            rtp == Some(from)
        } else {
            match self.src.rtcp {
                Some(r) => r == from,
                None => {
                    let ok = rtp.is_some_and(|r| r.ip() == from.ip());
                    if ok {
                        self.src.rtcp = Some(from);
                    }
                    ok
                }
            }
        };
        if ok {
            self.last_heard = now;
        }
        ok
    }

    /// New SDP addresses (re-INVITE) at `now`: when they differ from the current ones the
    /// learned source is forgotten and the probation reopens, the new address preferred.
    pub fn on_update(&mut self, remote_rtp: SocketAddr, remote_rtcp: SocketAddr, now: Duration) {
        if remote_rtp == self.sdp_rtp && remote_rtcp == self.sdp_rtcp {
            return;
        }
        self.sdp_rtp = remote_rtp;
        self.sdp_rtcp = remote_rtcp;
        self.src = Source {
            rtp: None,
            rtcp: None,
            learning: true,
        };
        self.probation_until = now + PROBATION;
        self.last_heard = now;
    }

    /// Whether the client's SDP says it sends RTP (false: recvonly or inactive; then only its
    /// SDP address may be learned). True until told otherwise.
    pub fn set_client_sends(&mut self, sends: bool) {
        self.client_sends = sends;
    }

    /// What was learned, when it changed since the last report (the probation's end is a
    /// change too: call this on a timer as well as after packets).
    pub fn poll_report(&mut self, now: Duration) -> Option<Source> {
        self.settle(now);
        (self.reported != Some(self.src)).then(|| {
            self.reported = Some(self.src);
            self.src
        })
    }

    /// How long nothing was heard from the participant (the start, the takeover or a new
    /// SDP address count as heard).
    pub fn silent_for(&self, now: Duration) -> Duration {
        now.saturating_sub(self.last_heard)
    }

    /// Where RTP goes (`None`: nowhere yet, the SDP said 0.0.0.0 or port 0).
    pub fn rtp_dest(&self) -> Option<SocketAddr> {
        usable(self.src.rtp.unwrap_or(self.sdp_rtp))
    }

    /// Where RTCP goes: with rtcp-mux where RTP goes; else where the participant's RTCP comes
    /// from, or the learned RTP source's port + 1 behind NAT, or the SDP's RTCP address.
    pub fn rtcp_dest(&self) -> Option<SocketAddr> {
        if self.rtcp_mux {
            return self.rtp_dest();
        }
        usable(match (self.src.rtcp, self.src.rtp) {
            (Some(r), _) => r,
            (None, Some(a)) if a != self.sdp_rtp => {
                SocketAddr::new(a.ip(), a.port().wrapping_add(1))
            }
            _ => self.sdp_rtcp,
        })
    }

    /// Where RTP goes, for display (even when unusable).
    pub fn rtp_addr(&self) -> SocketAddr {
        self.src.rtp.unwrap_or(self.sdp_rtp)
    }
}

/// RFC 5761 demultiplexing of RTP and RTCP on one port: RTCP's packet type (192..=223 here,
/// RTP payload type plus marker bit as RTP would read it) sits where RTP has its marker and
/// payload type.
pub fn is_rtcp(data: &[u8]) -> bool {
    data.len() >= 2 && data[0] >> 6 == 2 && (192..=223).contains(&data[1])
}

fn usable(a: SocketAddr) -> Option<SocketAddr> {
    (!a.ip().is_unspecified() && a.port() != 0).then_some(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }
    const MS: Duration = Duration::from_millis(1);
    const T0: Duration = Duration::from_secs(10);

    #[test]
    fn the_sdp_address_is_learned_at_once_and_for_good() {
        let mut l = Latch::new(a("198.18.0.11:4000"), a("198.18.0.11:4001"), false, T0);
        assert_eq!(l.rtp_dest(), Some(a("198.18.0.11:4000")));
        assert!(l.on_rtp(a("198.18.0.11:4000"), T0 + 10 * MS));
        assert_eq!(
            l.poll_report(T0 + 10 * MS),
            Some(Source {
                rtp: Some(a("198.18.0.11:4000")),
                rtcp: None,
                learning: false
            })
        );
        assert_eq!(l.poll_report(T0 + 20 * MS), None, "reported once");
        // An attacker, inside the probation and after it, a new SSRC changes nothing here.
        assert!(!l.on_rtp(a("198.18.9.9:6000"), T0 + 20 * MS));
        assert!(!l.on_rtp(a("198.18.0.11:4002"), T0 + 3 * PROBATION));
        assert_eq!(l.rtp_dest(), Some(a("198.18.0.11:4000")));
        assert_eq!(l.rtcp_dest(), Some(a("198.18.0.11:4001")));
        // No silent relatch: the source is silent for a minute, a stranger is still foreign.
        assert!(!l.on_rtp(a("198.18.9.9:6000"), T0 + Duration::from_secs(60)));
        assert!(l.on_rtp(a("198.18.0.11:4000"), T0 + Duration::from_secs(61)));
    }

    #[test]
    fn behind_nat_the_first_source_of_the_probation_is_learned_and_the_sdp_address_wins() {
        let mut l = Latch::new(a("10.0.0.5:4000"), a("10.0.0.5:4001"), false, T0);
        assert!(l.on_rtp(a("198.18.1.1:5000"), T0 + 10 * MS));
        assert_eq!(l.rtp_dest(), Some(a("198.18.1.1:5000")));
        assert_eq!(
            l.rtcp_dest(),
            Some(a("198.18.1.1:5001")),
            "port + 1 behind NAT"
        );
        assert!(l.poll_report(T0 + 10 * MS).is_some_and(|s| s.learning));
        // A second stranger in the probation: foreign.
        assert!(!l.on_rtp(a("198.18.9.9:6000"), T0 + 20 * MS));
        // The probation ends: fixed, and reported as such.
        let end = T0 + PROBATION;
        assert_eq!(
            l.poll_report(end),
            Some(Source {
                rtp: Some(a("198.18.1.1:5000")),
                rtcp: None,
                learning: false
            })
        );
        // Now even the SDP address is foreign.
        assert!(!l.on_rtp(a("10.0.0.5:4000"), end + MS));
        assert_eq!(l.rtp_dest(), Some(a("198.18.1.1:5000")));

        // Had the SDP address sent during the probation, it would have won.
        let mut l = Latch::new(a("198.18.0.11:4000"), a("198.18.0.11:4001"), true, T0);
        assert!(l.on_rtp(a("198.18.9.9:6000"), T0 + 10 * MS));
        assert!(l.on_rtp(a("198.18.0.11:4000"), T0 + 500 * MS));
        assert!(!l.on_rtp(a("198.18.9.9:6000"), T0 + 510 * MS));
        assert_eq!(l.rtp_dest(), Some(a("198.18.0.11:4000")));
    }

    #[test]
    fn a_listener_that_never_sends_keeps_its_downlink_after_the_probation() {
        let mut l = Latch::new(a("198.18.0.12:4100"), a("198.18.0.12:4100"), true, T0);
        let after = T0 + PROBATION + MS;
        assert!(!l.on_rtp(a("198.18.9.9:6000"), after));
        assert_eq!(l.rtp_dest(), Some(a("198.18.0.12:4100")));
        // Its RTCP (rtcp-mux, from the SDP address) is accepted and heard.
        assert!(l.on_rtcp(a("198.18.0.12:4100"), true, after + MS));
        assert_eq!(l.silent_for(after + 11 * MS), 10 * MS);
        // It may still start sending from its SDP address.
        assert!(l.on_rtp(a("198.18.0.12:4100"), after + 20 * MS));

        // A recvonly client learns nothing else, not even inside the probation.
        let mut l = Latch::new(a("198.18.0.12:4100"), a("198.18.0.12:4100"), true, T0);
        l.set_client_sends(false);
        assert!(!l.on_rtp(a("198.18.9.9:6000"), T0 + MS));
        assert_eq!(l.rtp_dest(), Some(a("198.18.0.12:4100")));
        assert_eq!(l.poll_report(T0 + MS), None);
    }

    #[test]
    fn rtcp_only_from_the_learned_source() {
        // Without rtcp-mux: the learned IP, the port of its first RTCP.
        let mut l = Latch::new(a("198.18.0.11:4000"), a("198.18.0.11:4001"), false, T0);
        assert!(l.on_rtp(a("198.18.0.11:4000"), T0));
        assert!(!l.on_rtcp(a("198.18.9.9:4001"), false, T0 + MS));
        assert_eq!(l.rtcp_dest(), Some(a("198.18.0.11:4001")), "not redirected");
        assert!(l.on_rtcp(a("198.18.0.11:7777"), false, T0 + 2 * MS));
        assert_eq!(l.rtcp_dest(), Some(a("198.18.0.11:7777")));
        assert!(!l.on_rtcp(a("198.18.0.11:7778"), false, T0 + 3 * MS));
        assert_eq!(l.rtcp_dest(), Some(a("198.18.0.11:7777")));
        // On the RTP port (mux-style): only the RTP source itself.
        assert!(!l.on_rtcp(a("198.18.0.11:7777"), true, T0 + 4 * MS));
        assert!(l.on_rtcp(a("198.18.0.11:4000"), true, T0 + 5 * MS));
        // With rtcp-mux: the RTP address exactly.
        let mut m = Latch::new(a("198.18.0.11:4000"), a("198.18.0.11:4000"), true, T0);
        assert!(m.on_rtp(a("198.18.0.11:4000"), T0));
        assert!(!m.on_rtcp(a("198.18.0.11:4001"), true, T0 + MS));
        assert!(!m.on_rtcp(a("198.18.9.9:4000"), true, T0 + MS));
        assert_eq!(m.rtcp_dest(), Some(a("198.18.0.11:4000")));
    }

    #[test]
    fn a_new_sdp_address_reopens_learning_and_unusable_addresses_send_nothing() {
        let mut l = Latch::new(a("0.0.0.0:4000"), a("0.0.0.0:4001"), true, T0);
        assert_eq!(l.rtp_dest(), None);
        l.on_update(a("198.18.0.12:4100"), a("198.18.0.12:4100"), T0 + MS);
        assert_eq!(l.rtp_dest(), Some(a("198.18.0.12:4100")));
        assert_eq!(l.rtcp_dest(), Some(a("198.18.0.12:4100")), "rtcp-mux");
        assert!(l.on_rtp(a("198.18.0.12:4100"), T0 + 2 * MS));
        // The same address again (a re-INVITE for another reason): nothing changes.
        let t = T0 + Duration::from_secs(30);
        l.on_update(a("198.18.0.12:4100"), a("198.18.0.12:4100"), t);
        assert!(!l.on_rtp(a("198.18.0.13:4200"), t + MS));
        // A new address: the old source is forgotten, the new one learned.
        l.on_update(a("198.18.0.13:4200"), a("198.18.0.13:4200"), t + 2 * MS);
        assert_eq!(l.rtp_dest(), Some(a("198.18.0.13:4200")));
        assert!(l.on_rtp(a("198.18.0.13:4200"), t + 3 * MS));
        assert!(!l.on_rtp(a("198.18.0.12:4100"), t + 4 * MS));
        assert_eq!(l.rtp_dest(), Some(a("198.18.0.13:4200")));
        assert_eq!(l.silent_for(t + 4 * MS), MS);
    }

    #[test]
    fn rtcp_is_told_from_rtp_by_its_packet_type() {
        assert!(is_rtcp(&[0x80, 200, 0, 6])); // SR
        assert!(is_rtcp(&[0x81, 203, 0, 1])); // BYE
        assert!(!is_rtcp(&[0x80, 0, 0, 1])); // PCMU
        assert!(!is_rtcp(&[0x80, 0x80 | 111, 0, 1])); // Opus with the marker bit
        assert!(!is_rtcp(&[0x40, 200])); // version 1
        assert!(!is_rtcp(&[0x80]));
    }

    #[test]
    fn resumed_continues_with_the_replicated_source_not_the_mirror() {
        let learned = Source {
            rtp: Some(a("198.18.1.1:5000")),
            rtcp: None,
            learning: false,
        };
        let now = Duration::from_secs(9);
        let mut l = Latch::resumed(
            a("10.0.0.5:4000"),
            a("10.0.0.5:4001"),
            false,
            Some(learned),
            Some(a("198.18.9.9:1")), // an attacker's packet was the last one mirrored
            now,
        );
        assert_eq!(l.rtp_dest(), Some(a("198.18.1.1:5000")));
        assert_eq!(l.rtcp_dest(), Some(a("198.18.1.1:5001")));
        assert!(!l.on_rtp(a("198.18.9.9:1"), now + MS));
        assert_eq!(l.poll_report(now + MS), None, "nothing new to report");
        assert_eq!(l.silent_for(now + MS), MS, "the timeout clock restarts");
        // No replicated source: the mirrored one, provisionally; the SDP address wins.
        let mut l = Latch::resumed(
            a("198.18.0.11:4000"),
            a("198.18.0.11:4001"),
            false,
            None,
            Some(a("198.18.1.1:5000")),
            now,
        );
        assert_eq!(l.rtp_dest(), Some(a("198.18.1.1:5000")));
        assert!(l.on_rtp(a("198.18.0.11:4000"), now + MS));
        assert_eq!(l.rtp_dest(), Some(a("198.18.0.11:4000")));
        let l3 = Latch::resumed(
            a("198.18.0.11:4000"),
            a("198.18.0.11:4001"),
            false,
            None,
            None,
            Duration::ZERO,
        );
        assert_eq!(l3.rtcp_dest(), Some(a("198.18.0.11:4001")));
    }
}
