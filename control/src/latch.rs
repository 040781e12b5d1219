//! Symmetric RTP (where a participant's media is sent) and RTP/RTCP demultiplexing: the rules
//! the room drivers apply to every packet, kept here as small pure functions and a state
//! machine so they are tested alone.
//!
//! Media go to the SDP address until the client's first RTP packet arrives; then to that
//! packet's source (a client behind NAT is reached where it really is). The latched source
//! moves only after it has been silent for [`RELATCH_AFTER`] (a NAT rebinding), so a stray
//! sender cannot steal a live stream (RTP bleed). Without rtcp-mux, RTCP goes to the RTP
//! source's port + 1 until the client's own RTCP shows where it comes from.

use std::net::SocketAddr;
use std::time::Duration;

/// A latched RTP source must be silent this long before another source may take over.
pub const RELATCH_AFTER: Duration = Duration::from_secs(1);

/// Where one participant's RTP and RTCP go.
#[derive(Clone, Debug, PartialEq)]
pub struct Latch {
    rtp_dest: SocketAddr,
    rtcp_dest: SocketAddr,
    rtcp_mux: bool,
    latched: bool,
    last_rtp: Duration,
}

impl Latch {
    /// A new participant: its SDP addresses.
    pub fn new(remote_rtp: SocketAddr, remote_rtcp: SocketAddr, rtcp_mux: bool) -> Self {
        Latch {
            rtp_dest: remote_rtp,
            rtcp_dest: if rtcp_mux { remote_rtp } else { remote_rtcp },
            rtcp_mux,
            latched: false,
            last_rtp: Duration::ZERO,
        }
    }

    /// A participant taken over: latched where the mirrored input showed its packets come
    /// from (`now`: the takeover, so that the latch does not move before the client was
    /// heard again).
    pub fn resumed(
        remote_rtp: SocketAddr,
        remote_rtcp: SocketAddr,
        rtcp_mux: bool,
        seen_rtp: Option<SocketAddr>,
        seen_rtcp: Option<SocketAddr>,
        now: Duration,
    ) -> Self {
        let rtp_dest = seen_rtp.unwrap_or(remote_rtp);
        let rtcp_dest = match (rtcp_mux, seen_rtcp, seen_rtp) {
            (true, _, _) => rtp_dest,
            (false, Some(a), _) => a,
            (false, None, Some(a)) => SocketAddr::new(a.ip(), a.port().wrapping_add(1)),
            (false, None, None) => remote_rtcp,
        };
        Latch {
            rtp_dest,
            rtcp_dest,
            rtcp_mux,
            latched: seen_rtp.is_some(),
            last_rtp: now,
        }
    }

    /// An RTP packet from `from` at `now`.
    pub fn on_rtp(&mut self, from: SocketAddr, now: Duration) {
        if !self.latched
            || (from != self.rtp_dest && now.saturating_sub(self.last_rtp) > RELATCH_AFTER)
        {
            if !self.rtcp_mux && (!self.latched || self.rtcp_dest.ip() != from.ip()) {
                self.rtcp_dest = SocketAddr::new(from.ip(), from.port().wrapping_add(1));
            }
            self.latched = true;
            self.rtp_dest = from;
        }
        if from == self.rtp_dest {
            self.last_rtp = now;
        }
    }

    /// An RTCP packet from `from` (its reports go back where they come from).
    pub fn on_rtcp(&mut self, from: SocketAddr) {
        self.rtcp_dest = from;
    }

    /// New SDP addresses (re-INVITE): followed unless the client's media already latched.
    pub fn on_update(&mut self, remote_rtp: SocketAddr, remote_rtcp: SocketAddr) {
        if !self.latched {
            self.rtp_dest = remote_rtp;
            self.rtcp_dest = if self.rtcp_mux {
                remote_rtp
            } else {
                remote_rtcp
            };
        }
    }

    /// Where RTP goes (`None`: nowhere yet, the SDP said 0.0.0.0 or port 0).
    pub fn rtp_dest(&self) -> Option<SocketAddr> {
        usable(self.rtp_dest)
    }

    /// Where RTCP goes.
    pub fn rtcp_dest(&self) -> Option<SocketAddr> {
        usable(self.rtcp_dest)
    }

    /// Where RTP goes, for display (even when unusable).
    pub fn rtp_addr(&self) -> SocketAddr {
        self.rtp_dest
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

    #[test]
    fn latches_first_source_and_resists_bleed_until_silence() {
        let mut l = Latch::new(a("198.18.0.11:4000"), a("198.18.0.11:4001"), false);
        assert_eq!(l.rtp_dest(), Some(a("198.18.0.11:4000")));
        // Behind NAT: the first packet comes from elsewhere; RTCP follows to port + 1.
        l.on_rtp(a("198.18.1.1:5000"), 10 * MS);
        assert_eq!(l.rtp_dest(), Some(a("198.18.1.1:5000")));
        assert_eq!(l.rtcp_dest(), Some(a("198.18.1.1:5001")));
        // A stray sender while the client talks: ignored.
        l.on_rtp(a("198.18.9.9:6000"), 20 * MS);
        l.on_rtp(a("198.18.1.1:5000"), 30 * MS);
        l.on_rtp(a("198.18.9.9:6000"), 900 * MS);
        assert_eq!(l.rtp_dest(), Some(a("198.18.1.1:5000")));
        // The latched source silent for more than RELATCH_AFTER: a NAT rebinding moves it.
        l.on_rtp(a("198.18.1.1:5002"), 30 * MS + RELATCH_AFTER + MS);
        assert_eq!(l.rtp_dest(), Some(a("198.18.1.1:5002")));
        // Same IP: RTCP keeps what it had.
        assert_eq!(l.rtcp_dest(), Some(a("198.18.1.1:5001")));
        l.on_rtcp(a("198.18.1.1:7777"));
        assert_eq!(l.rtcp_dest(), Some(a("198.18.1.1:7777")));
    }

    #[test]
    fn sdp_updates_apply_only_before_latching_and_zero_addresses_are_unusable() {
        let mut l = Latch::new(a("0.0.0.0:4000"), a("0.0.0.0:4001"), true);
        assert_eq!(l.rtp_dest(), None);
        l.on_update(a("198.18.0.12:4100"), a("198.18.0.12:4101"));
        assert_eq!(l.rtp_dest(), Some(a("198.18.0.12:4100")));
        assert_eq!(l.rtcp_dest(), Some(a("198.18.0.12:4100")), "rtcp-mux");
        l.on_rtp(a("198.18.0.12:4100"), MS);
        l.on_update(a("198.18.0.13:4200"), a("198.18.0.13:4201"));
        assert_eq!(l.rtp_dest(), Some(a("198.18.0.12:4100")));
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
    fn resumed_uses_the_mirrored_sources() {
        let l = Latch::resumed(
            a("198.18.0.11:4000"),
            a("198.18.0.11:4001"),
            false,
            Some(a("198.18.1.1:5000")),
            None,
            Duration::from_secs(9),
        );
        assert_eq!(l.rtp_dest(), Some(a("198.18.1.1:5000")));
        assert_eq!(l.rtcp_dest(), Some(a("198.18.1.1:5001")));
        let mut l2 = l.clone();
        // Latched at the takeover instant: a stray source right after it cannot move it.
        l2.on_rtp(a("198.18.9.9:1"), Duration::from_secs(9) + 10 * MS);
        assert_eq!(l2.rtp_dest(), Some(a("198.18.1.1:5000")));
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
