//! RTCP feedback a video forwarder acts on (RFC 4585, RFC 5104, REMB), parsed and built with
//! `rtc-rtcp`.
//!
//! [`parse`] turns a (compound) RTCP packet from a participant into the requests in it:
//! picture loss (PLI), full intra request (FIR, one per entry, with its sequence number),
//! generic NACK (the lost sequence numbers) and REMB (bitrate and the SSRCs it covers).
//! Reports, SDES, BYE and every other feedback type are skipped. Malformed input is an
//! [`Error`], never a panic.
//!
//! The builders ([`pli`], [`fir`], [`nack`], [`remb`]) each produce a compound packet, an
//! empty receiver report from `sender_ssrc` followed by the feedback message (RFC 4585
//! section 3.1: feedback travels in compound RTCP; receivers that negotiated
//! reduced-size RTCP accept it too). [`FirSequence`] numbers our FIRs towards one source.

use rtc_rtcp::packet::Packet;
use rtc_rtcp::payload_feedbacks::full_intra_request::{FirEntry, FullIntraRequest};
use rtc_rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc_rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc_rtcp::receiver_report::ReceiverReport;
use rtc_rtcp::transport_feedbacks::transport_layer_nack::{
    nack_pairs_from_sequence_numbers, TransportLayerNack,
};
use serde::{Deserialize, Serialize};

/// Why a datagram is not RTCP we can read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Not RTCP: too short, not version 2, or a packet type outside 192..=223.
    NotRtcp,
    /// RTCP that `rtc-rtcp` refuses (the reason it gave).
    Malformed(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NotRtcp => f.write_str("not RTCP"),
            Error::Malformed(why) => write!(f, "malformed RTCP: {why}"),
        }
    }
}
impl std::error::Error for Error {}

/// One request found in a participant's RTCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feedback {
    /// Picture loss indication (RFC 4585 section 6.3.1): send a keyframe.
    Pli {
        /// Who asks.
        sender_ssrc: u32,
        /// The stream it is about.
        media_ssrc: u32,
    },
    /// Full intra request (RFC 5104 section 4.3.1), one per FCI entry.
    Fir {
        /// Who asks.
        sender_ssrc: u32,
        /// The stream that must send a keyframe.
        target_ssrc: u32,
        /// The request's sequence number (a repeated number is a retransmission).
        seq: u8,
    },
    /// Generic NACK (RFC 4585 section 6.2.1): these packets were lost.
    Nack {
        /// Who asks.
        sender_ssrc: u32,
        /// The stream they were lost from.
        media_ssrc: u32,
        /// Lost sequence numbers, in the order the NACK lists them.
        lost: Vec<u16>,
    },
    /// Receiver estimated maximum bitrate (draft-alvestrand-rmcat-remb).
    Remb {
        /// Who estimates.
        sender_ssrc: u32,
        /// The estimate, bits per second.
        bitrate_bps: u64,
        /// The streams it covers.
        ssrcs: Vec<u32>,
    },
}

/// Parse a (compound) RTCP packet into the feedback it carries (possibly none).
pub fn parse(packet: &[u8]) -> Result<Vec<Feedback>, Error> {
    if packet.len() < 8 || packet[0] >> 6 != 2 || !(192..=223).contains(&packet[1]) {
        return Err(Error::NotRtcp);
    }
    let mut buf = packet;
    let pkts =
        rtc_rtcp::packet::unmarshal(&mut buf).map_err(|e| Error::Malformed(e.to_string()))?;
    let mut out = Vec::new();
    for p in &pkts {
        let any = p.as_any();
        if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
            out.push(Feedback::Pli {
                sender_ssrc: pli.sender_ssrc,
                media_ssrc: pli.media_ssrc,
            });
        } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
            out.extend(fir.fir.iter().map(|e| Feedback::Fir {
                sender_ssrc: fir.sender_ssrc,
                target_ssrc: e.ssrc,
                seq: e.sequence_number,
            }));
        } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
            out.push(Feedback::Nack {
                sender_ssrc: nack.sender_ssrc,
                media_ssrc: nack.media_ssrc,
                lost: nack.nacks.iter().flat_map(|p| p.packet_list()).collect(),
            });
        } else if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
            out.push(Feedback::Remb {
                sender_ssrc: remb.sender_ssrc,
                // `as` saturates (NaN gives 0): the estimate is hostile input.
                bitrate_bps: remb.bitrate.max(0.0) as u64,
                ssrcs: remb.ssrcs.clone(),
            });
        }
    }
    Ok(out)
}

/// Compound packet: an empty receiver report from `sender_ssrc`, then `fb`.
fn compound(sender_ssrc: u32, fb: Box<dyn Packet>) -> Vec<u8> {
    let pkts: Vec<Box<dyn Packet>> = vec![
        Box::new(ReceiverReport {
            ssrc: sender_ssrc,
            ..Default::default()
        }),
        fb,
    ];
    // Marshalling well-formed packets into a buffer of their own size does not fail; an
    // empty datagram (which the driver does not send) would be the impossible outcome.
    rtc_rtcp::packet::marshal(&pkts)
        .map(|b| b.to_vec())
        .unwrap_or_default()
}

/// A PLI from `sender_ssrc` about `media_ssrc`.
pub fn pli(sender_ssrc: u32, media_ssrc: u32) -> Vec<u8> {
    compound(
        sender_ssrc,
        Box::new(PictureLossIndication {
            sender_ssrc,
            media_ssrc,
        }),
    )
}

/// A FIR from `sender_ssrc` asking `target_ssrc` for a keyframe, request number `seq`
/// (RFC 5104: the "SSRC of media source" field is 0, the target is in the FCI entry).
pub fn fir(sender_ssrc: u32, target_ssrc: u32, seq: u8) -> Vec<u8> {
    compound(
        sender_ssrc,
        Box::new(FullIntraRequest {
            sender_ssrc,
            media_ssrc: 0,
            fir: vec![FirEntry {
                ssrc: target_ssrc,
                sequence_number: seq,
            }],
        }),
    )
}

/// A generic NACK from `sender_ssrc` for the packets `lost` of `media_ssrc` (at most 1024
/// are listed; give them in sending order for the most compact encoding).
pub fn nack(sender_ssrc: u32, media_ssrc: u32, lost: &[u16]) -> Vec<u8> {
    let lost = &lost[..lost.len().min(1024)];
    compound(
        sender_ssrc,
        Box::new(TransportLayerNack {
            sender_ssrc,
            media_ssrc,
            nacks: nack_pairs_from_sequence_numbers(lost),
        }),
    )
}

/// A REMB from `sender_ssrc`: at most `bitrate_bps` for the streams `ssrcs` (at most 255).
pub fn remb(sender_ssrc: u32, bitrate_bps: u64, ssrcs: &[u32]) -> Vec<u8> {
    compound(
        sender_ssrc,
        Box::new(ReceiverEstimatedMaximumBitrate {
            sender_ssrc,
            bitrate: bitrate_bps as f32,
            ssrcs: ssrcs[..ssrcs.len().min(255)].to_vec(),
        }),
    )
}

/// Our FIR sequence numbers towards one source: RFC 5104 section 4.3.1.2, incremented by
/// one for each new request (a repeated number would be taken as a retransmission).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirSequence {
    /// The number of the last request sent, `None` before the first.
    pub last: Option<u8>,
}

impl FirSequence {
    /// The number of a new request (and remember it as the last).
    pub fn next_request(&mut self) -> u8 {
        let n = self.last.map_or(0, |l| l.wrapping_add(1));
        self.last = Some(n);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_feedback_parses_back() {
        let mut all = pli(1, 2);
        all.extend(fir(1, 3, 7));
        all.extend(nack(1, 4, &[100, 101, 117, 300]));
        all.extend(remb(1, 1_500_000, &[5, 6]));
        let fb = parse(&all).unwrap();
        assert_eq!(fb.len(), 4);
        assert_eq!(
            fb[0],
            Feedback::Pli {
                sender_ssrc: 1,
                media_ssrc: 2
            }
        );
        assert_eq!(
            fb[1],
            Feedback::Fir {
                sender_ssrc: 1,
                target_ssrc: 3,
                seq: 7
            }
        );
        assert_eq!(
            fb[2],
            Feedback::Nack {
                sender_ssrc: 1,
                media_ssrc: 4,
                lost: vec![100, 101, 117, 300]
            }
        );
        let Feedback::Remb {
            bitrate_bps, ssrcs, ..
        } = &fb[3]
        else {
            panic!("{:?}", fb[3]);
        };
        // REMB is a mantissa/exponent pair: 18 significant bits.
        assert!(bitrate_bps.abs_diff(1_500_000) < 16, "{bitrate_bps}");
        assert_eq!(ssrcs, &[5, 6]);
    }

    #[test]
    fn malformed_is_an_error() {
        assert_eq!(parse(&[1, 2, 3]), Err(Error::NotRtcp));
        let mut p = pli(1, 2);
        p.truncate(p.len() - 2);
        assert!(matches!(parse(&p), Err(Error::Malformed(_))));
        let mut s = FirSequence::default();
        assert_eq!((s.next_request(), s.next_request()), (0, 1));
    }
}
