//! Which protocol a datagram on a WebRTC media port belongs to, from its first bytes
//! (RFC 7983 §7, with RTP and RTCP told apart as RFC 5761 §4 does).
//!
//! One port carries STUN (ICE checks), DTLS (the handshake) and SRTP/SRTCP. The first byte
//! picks the protocol:
//!
//! | first byte | protocol |
//! |---|---|
//! | 0..=3 | STUN |
//! | 20..=63 | DTLS |
//! | 128..=191 | RTP or RTCP: RTCP when the second byte is 192..=223 |
//! | anything else | none of these (ZRTP, TURN channels, garbage): drop it |
//!
//! The classification is only a dispatch decision: every protocol still parses and
//! authenticates what it is given.

/// The protocol a datagram belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// STUN: an ICE connectivity or consent check (first byte 0..=3).
    Stun,
    /// A DTLS record (first byte 20..=63).
    Dtls,
    /// SRTP (first byte 128..=191, second byte not an RTCP packet type).
    Rtp,
    /// SRTCP (first byte 128..=191, second byte 192..=223).
    Rtcp,
    /// Empty, or a first byte no WebRTC protocol uses.
    Other,
}

/// Classifies one datagram by its first byte (and, for RTP/RTCP, its second).
///
/// A one-byte packet starting in 128..=191 is [`Kind::Rtp`]: too short for either, it is left
/// to the RTP receiver to refuse.
pub fn classify(packet: &[u8]) -> Kind {
    match packet {
        [0..=3, ..] => Kind::Stun,
        [20..=63, ..] => Kind::Dtls,
        [128..=191, 192..=223, ..] => Kind::Rtcp,
        [128..=191, ..] => Kind::Rtp,
        _ => Kind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_byte_boundaries() {
        let cases: &[(u8, Kind)] = &[
            (0, Kind::Stun),
            (3, Kind::Stun),
            (4, Kind::Other),
            (19, Kind::Other),
            (20, Kind::Dtls),
            (63, Kind::Dtls),
            (64, Kind::Other),
            (127, Kind::Other),
            (128, Kind::Rtp),
            (191, Kind::Rtp),
            (192, Kind::Other),
            (255, Kind::Other),
        ];
        for &(first, kind) in cases {
            // Second byte 111: an RTP payload type, not an RTCP packet type.
            assert_eq!(classify(&[first, 111, 0, 0]), kind, "first byte {first}");
        }
    }

    #[test]
    fn rtcp_by_second_byte() {
        for first in [128u8, 0x81, 191] {
            assert_eq!(classify(&[first, 191]), Kind::Rtp);
            assert_eq!(classify(&[first, 192]), Kind::Rtcp);
            assert_eq!(classify(&[first, 200]), Kind::Rtcp, "sender report");
            assert_eq!(classify(&[first, 223]), Kind::Rtcp);
            assert_eq!(classify(&[first, 224]), Kind::Rtp);
            // Payload type 111 with the marker bit set.
            assert_eq!(classify(&[first, 0x80 | 111]), Kind::Rtp);
        }
    }

    #[test]
    fn short_packets() {
        assert_eq!(classify(&[]), Kind::Other);
        assert_eq!(classify(&[0]), Kind::Stun);
        assert_eq!(classify(&[22]), Kind::Dtls);
        assert_eq!(classify(&[0x80]), Kind::Rtp);
    }

    #[test]
    fn real_packets() {
        // A Binding request header, a DTLS ClientHello record header, an Opus RTP header and
        // an RTCP receiver report header.
        assert_eq!(classify(&[0x00, 0x01, 0x00, 0x50, 0x21, 0x12]), Kind::Stun);
        assert_eq!(classify(&[0x16, 0xfe, 0xfd, 0x00, 0x00]), Kind::Dtls);
        assert_eq!(classify(&[0x80, 0x6f, 0x12, 0x34]), Kind::Rtp);
        assert_eq!(classify(&[0x81, 0xc9, 0x00, 0x07]), Kind::Rtcp);
    }
}
