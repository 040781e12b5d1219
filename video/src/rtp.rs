//! The RTP fixed header of an incoming packet, parsed with `rtc-rtp` (CSRCs and header
//! extensions skipped, padding removed).

use rtc_rtp::header::Header;
use rtc_shared::marshal::{Marshal, Unmarshal};

/// What the forwarder reads of an RTP packet; the payload is `packet[start..end]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rtp {
    pub marker: bool,
    pub payload_type: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub start: usize,
    pub end: usize,
}

impl Rtp {
    /// `None` unless `packet` is an RTP version 2 packet whose header, extensions and
    /// padding fit. RTCP (second octet 192..=223 under RFC 5761 multiplexing) is refused.
    pub fn parse(packet: &[u8]) -> Option<Rtp> {
        if packet.len() < 12 || packet[0] >> 6 != 2 || (192..=223).contains(&packet[1]) {
            return None;
        }
        let mut rest = packet;
        let h = Header::unmarshal(&mut rest).ok()?;
        let start = packet.len() - rest.len();
        let mut end = packet.len();
        if h.padding {
            let pad = usize::from(*packet.last()?);
            if pad == 0 || pad > end - start {
                return None;
            }
            end -= pad;
        }
        Some(Rtp {
            marker: h.marker,
            payload_type: h.payload_type,
            seq: h.sequence_number,
            timestamp: h.timestamp,
            ssrc: h.ssrc,
            start,
            end,
        })
    }

    /// The payload of the packet this was parsed from.
    pub fn payload<'a>(&self, packet: &'a [u8]) -> &'a [u8] {
        &packet[self.start..self.end]
    }
}

/// Append a plain 12-octet RTP header (no CSRC, no extension, no padding) to `out`.
pub(crate) fn write_header(
    out: &mut Vec<u8>,
    marker: bool,
    payload_type: u8,
    seq: u16,
    timestamp: u32,
    ssrc: u32,
) {
    let header = Header {
        version: 2,
        marker,
        payload_type,
        sequence_number: seq,
        timestamp,
        ssrc,
        ..Default::default()
    };
    let at = out.len();
    out.resize(at + 12, 0);
    // A plain header always fits its 12 octets; on the impossible error the zeroed header
    // stays (a receiver drops it) rather than panicking in the media path.
    let _ = header.marshal_to(&mut out[at..]);
}
