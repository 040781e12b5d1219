//! RTP/RTCP header parsing, the RFC 5761 demultiplexing rule and wrap-safe
//! sequence/timestamp arithmetic.

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
    if p.len() < 12 || p[0] >> 6 != 2 {
        return None;
    }
    let padding = p[0] & 0x20 != 0;
    let ext = p[0] & 0x10 != 0;
    let cc = usize::from(p[0] & 0x0f);
    let mut off = 12 + 4 * cc;
    if p.len() < off {
        return None;
    }
    if ext {
        if p.len() < off + 4 {
            return None;
        }
        let words = usize::from(u16::from_be_bytes([p[off + 2], p[off + 3]]));
        off += 4 + 4 * words;
        if p.len() < off {
            return None;
        }
    }
    let mut end = p.len();
    if padding && strip_padding {
        let pad = usize::from(*p.last()?);
        if pad == 0 || end - off < pad {
            return None;
        }
        end -= pad;
    }
    Some(RtpHeader {
        marker: p[1] & 0x80 != 0,
        pt: p[1] & 0x7f,
        seq: u16::from_be_bytes([p[2], p[3]]),
        ts: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
        ssrc: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
        payload_offset: off,
        payload_len: end - off,
    })
}

/// RTCP validity check (RFC 3550 appendix A.2, relaxed for reduced-size RTCP): every
/// packet in the compound is version 2 with a type in 192..=223, the first one in
/// 200..=207, and the length fields add up exactly to the datagram length.
pub fn rtcp_valid(p: &[u8]) -> bool {
    if p.len() < 4 || !(200..=207).contains(&p[1]) {
        return false;
    }
    let mut off = 0;
    while off < p.len() {
        if p.len() - off < 4 || p[off] >> 6 != 2 || !(192..=223).contains(&p[off + 1]) {
            return false;
        }
        let words = usize::from(u16::from_be_bytes([p[off + 2], p[off + 3]]));
        off += 4 * (words + 1);
    }
    off == p.len()
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

/// Split a (valid) compound RTCP datagram into its packets.
pub fn parse_rtcp(p: &[u8]) -> Vec<RtcpPacket> {
    let mut out = Vec::new();
    let mut off = 0;
    while p.len() - off >= 4 {
        let rc = usize::from(p[off] & 0x1f);
        let pt = p[off + 1];
        let words = usize::from(u16::from_be_bytes([p[off + 2], p[off + 3]]));
        let end = (off + 4 * (words + 1)).min(p.len());
        let body = &p[off + 4..end];
        let ssrc =
            (body.len() >= 4).then(|| u32::from_be_bytes([body[0], body[1], body[2], body[3]]));
        let mut reports = Vec::new();
        let blocks_at = match pt {
            200 => Some(24),
            201 => Some(4),
            _ => None,
        };
        if let Some(start) = blocks_at {
            for i in 0..rc {
                let b = start + 24 * i;
                if body.len() < b + 24 {
                    break;
                }
                let w = |k: usize| {
                    u32::from_be_bytes([
                        body[b + k],
                        body[b + k + 1],
                        body[b + k + 2],
                        body[b + k + 3],
                    ])
                };
                let lost_raw = w(4) & 0x00ff_ffff;
                let cumulative_lost = ((lost_raw << 8) as i32) >> 8;
                reports.push(ReportBlock {
                    ssrc: w(0),
                    fraction_lost: body[b + 4],
                    cumulative_lost,
                    highest_seq: w(8),
                    jitter: w(12),
                });
            }
        }
        out.push(RtcpPacket { pt, ssrc, reports });
        off = end;
    }
    out
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
