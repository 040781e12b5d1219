//! RTP/RTCP classification of captured datagrams, the RFC 5761 demultiplexing rule and
//! wrap-safe sequence/timestamp arithmetic.
//!
//! Parsing is `rtc-rtp` / `rtc-rtcp` (the crates the mixer speaks RTP with); this module only
//! adds the capture-analysis policy on top: plausibility of payload types, the RFC 3550 A.2
//! compound validity rule, and tolerance (anything malformed is `Other` / skipped, never a
//! panic).

use rtc_rtcp::receiver_report::ReceiverReport;
use rtc_rtcp::reception_report::ReceptionReport;
use rtc_rtcp::sender_report::SenderReport;
use rtc_shared::marshal::Unmarshal;

/// A parsed RTP fixed header (RFC 3550 section 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Marker bit.
    pub marker: bool,
    /// Payload type (7 bits).
    pub pt: u8,
    /// Sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub ts: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// Offset of the payload in the datagram.
    pub payload_offset: usize,
    /// Payload length (padding removed).
    pub payload_len: usize,
}

/// What a UDP payload looks like, by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A plausible RTP packet.
    Rtp(RtpHeader),
    /// A plausible RTCP (compound) packet; holds the first packet's type.
    Rtcp(u8),
    /// Neither.
    Other,
}

/// Whether a payload type is plausible for RTP: static 0..=34 or dynamic 96..=127.
/// 35..=95 are unassigned or collide with RTCP under RFC 5761 and are rejected.
pub fn plausible_pt(pt: u8) -> bool {
    pt <= 34 || (96..=127).contains(&pt)
}

/// Classify a UDP payload as RTP, RTCP or other (RFC 5761 section 4 demultiplexing:
/// a second byte in 192..=223 means RTCP).
pub fn classify(p: &[u8]) -> Kind {
    classify_captured(p, false)
}

/// [`classify`] for a payload the capture may have cut short: when `truncated`, RTCP is
/// not recognised (its lengths cannot add up) and RTP padding is not removed.
pub fn classify_captured(p: &[u8], truncated: bool) -> Kind {
    if p.len() < 4 || p[0] >> 6 != 2 {
        return Kind::Other;
    }
    if (192..=223).contains(&p[1]) {
        return if !truncated && rtcp_valid(p) {
            Kind::Rtcp(p[1])
        } else {
            Kind::Other
        };
    }
    let parsed = if truncated {
        parse_rtp_header(p, false)
    } else {
        parse_rtp(p)
    };
    match parsed {
        Some(h) if plausible_pt(h.pt) => Kind::Rtp(h),
        _ => Kind::Other,
    }
}

/// Parse an RTP header; `None` if the packet is not structurally valid RTP v2.
pub fn parse_rtp(p: &[u8]) -> Option<RtpHeader> {
    parse_rtp_header(p, true)
}

fn parse_rtp_header(p: &[u8], strip_padding: bool) -> Option<RtpHeader> {
    // rtc-rtp does not check the version; a capture analyzer must.
    if p.first()? >> 6 != 2 {
        return None;
    }
    let mut rest = p;
    let h = rtc_rtp::header::Header::unmarshal(&mut rest).ok()?;
    let off = p.len() - rest.len();
    // A header extension is a whole number of 32-bit words (RFC 3550 5.3.1). rtc-rtp walks
    // RFC 8285 elements and stops early on a malformed one; such a packet is not RTP here.
    if h.extension && !off.is_multiple_of(4) {
        return None;
    }
    let mut end = p.len();
    if h.padding && strip_padding {
        // The last octet counts the padding, itself included (RFC 3550 5.1): 0 is invalid.
        let pad = usize::from(*p.last()?);
        if pad == 0 || end - off < pad {
            return None;
        }
        end -= pad;
    }
    Some(RtpHeader {
        marker: h.marker,
        pt: h.payload_type,
        seq: h.sequence_number,
        ts: h.timestamp,
        ssrc: h.ssrc,
        payload_offset: off,
        payload_len: end - off,
    })
}

/// The packets of a compound RTCP datagram: `(raw packet type, packet bytes)` for each one
/// whose header rtc-rtcp reads (version 2), in order, cut by the length fields (the last
/// one clipped to the datagram). Stops at the first header that is not RTCP.
fn rtcp_packets(p: &[u8]) -> impl Iterator<Item = (u8, &[u8], bool)> + '_ {
    let mut off = 0;
    std::iter::from_fn(move || {
        let mut rest = p.get(off..)?;
        let h = rtc_rtcp::header::Header::unmarshal(&mut rest).ok()?;
        let start = off;
        let end = start + 4 * (usize::from(h.length) + 1);
        off = end.min(p.len());
        Some((p[start + 1], &p[start..off], end <= p.len()))
    })
}

/// RTCP validity check (RFC 3550 appendix A.2, relaxed for reduced-size RTCP): every
/// packet in the compound is version 2 with a type in 192..=223, the first one in
/// 200..=207, and the length fields add up exactly to the datagram length.
pub fn rtcp_valid(p: &[u8]) -> bool {
    if p.len() < 4 || !(200..=207).contains(&p[1]) {
        return false;
    }
    let mut covered = 0;
    for (pt, pkt, complete) in rtcp_packets(p) {
        if !complete || !(192..=223).contains(&pt) {
            return false;
        }
        covered += pkt.len();
    }
    covered == p.len()
}

/// One RTCP packet of a compound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtcpPacket {
    /// Packet type (200 = SR, 201 = RR, 202 = SDES, 203 = BYE, 204 = APP, 205/206 = feedback).
    pub pt: u8,
    /// Sender SSRC (first word after the header), when present.
    pub ssrc: Option<u32>,
    /// Report blocks (SR/RR only).
    pub reports: Vec<ReportBlock>,
}

/// An RTCP reception report block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReportBlock {
    /// SSRC of the source this block reports on.
    pub ssrc: u32,
    /// Fraction lost (0..=255, /256).
    pub fraction_lost: u8,
    /// Cumulative number of packets lost (24-bit signed).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
}

/// Split a (valid) compound RTCP datagram into its packets. SR/RR report blocks are read
/// with rtc-rtcp; a packet it rejects is listed without them.
pub fn parse_rtcp(p: &[u8]) -> Vec<RtcpPacket> {
    rtcp_packets(p)
        .map(|(pt, pkt, _)| {
            let mut buf = pkt;
            let (ssrc, reports) = match pt {
                200 => match SenderReport::unmarshal(&mut buf) {
                    Ok(sr) => (Some(sr.ssrc), sr.reports),
                    Err(_) => (first_word(pkt), Vec::new()),
                },
                201 => match ReceiverReport::unmarshal(&mut buf) {
                    Ok(rr) => (Some(rr.ssrc), rr.reports),
                    Err(_) => (first_word(pkt), Vec::new()),
                },
                _ => (first_word(pkt), Vec::new()),
            };
            RtcpPacket {
                pt,
                ssrc,
                reports: reports.iter().map(report_block).collect(),
            }
        })
        .collect()
}

/// The sender SSRC position of every RTCP packet type: the first word after the header.
fn first_word(pkt: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(pkt.get(4..8)?.try_into().ok()?))
}

fn report_block(r: &ReceptionReport) -> ReportBlock {
    ReportBlock {
        ssrc: r.ssrc,
        fraction_lost: r.fraction_lost,
        // 24-bit two's complement on the wire.
        cumulative_lost: ((r.total_lost << 8) as i32) >> 8,
        highest_seq: r.last_sequence_number,
        jitter: r.jitter,
    }
}

/// Signed distance from sequence number `a` to `b` (`b - a`), in -32768..=32767.
pub fn seq_diff(a: u16, b: u16) -> i32 {
    i32::from(b.wrapping_sub(a) as i16)
}

/// Extend a 16-bit sequence number to the extended value nearest `reference`.
pub fn extend_seq(reference: i64, seq: u16) -> i64 {
    reference + i64::from(seq_diff(reference as u16, seq))
}

/// Signed distance from timestamp `a` to `b` (`b - a`), wrap-safe.
pub fn ts_diff(a: u32, b: u32) -> i64 {
    i64::from(b.wrapping_sub(a) as i32)
}

/// Extend a 32-bit RTP timestamp to the extended value nearest `reference`.
pub fn extend_ts(reference: i64, ts: u32) -> i64 {
    reference + ts_diff(reference as u32, ts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_arithmetic() {
        assert_eq!(seq_diff(65535, 0), 1);
        assert_eq!(seq_diff(0, 65535), -1);
        assert_eq!(extend_seq(65535, 2), 65538);
        assert_eq!(extend_seq(65538, 65534), 65534);
        assert_eq!(extend_ts(0xffff_fff0, 0x10), 0x1_0000_0010);
    }

    #[test]
    fn demux_rule() {
        let mut rtp = vec![0x80, 0x08, 0, 1, 0, 0, 0, 160, 1, 2, 3, 4, 0xd5];
        assert!(matches!(classify(&rtp), Kind::Rtp(h) if h.pt == 8 && h.seq == 1));
        rtp[1] = 0xc8; // 200: SR under RFC 5761 but length wrong -> not RTCP
        assert_eq!(classify(&rtp), Kind::Other);
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 1];
        assert_eq!(classify(&rr), Kind::Rtcp(201));
        assert_eq!(classify(b"INVITE sip:a@b SIP/2.0\r\n"), Kind::Other);
    }
}
