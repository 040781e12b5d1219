//! RTCP for one participant: our SR (+ report block about the client's stream) + SDES
//! CNAME, BYE, and robust parsing of what the client sends.

use crate::recv_stats::RecvStats;
use crate::stream::OutStream;
use rtc_rtcp::header::{Header, PacketType};
use rtc_rtcp::packet::Packet;
use rtc_rtcp::receiver_report::ReceiverReport;
use rtc_rtcp::reception_report::ReceptionReport;
use rtc_rtcp::sender_report::SenderReport;
use rtc_rtcp::source_description::{
    SdesType, SourceDescription, SourceDescriptionChunk, SourceDescriptionItem,
};
use rtc_shared::marshal::Marshal;
use std::time::Duration;

/// Interval between two reports to one participant.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// 64-bit NTP time of `now`, given the NTP time of `now == 0`.
pub fn ntp_at(origin: u64, now: Duration) -> u64 {
    let secs = now.as_secs() << 32;
    let frac = ((now.subsec_nanos() as u64) << 32) / 1_000_000_000;
    origin.wrapping_add(secs + frac)
}

/// What the client's RTCP told us.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Incoming {
    /// NTP time of a sender report, if one was present.
    pub sr_ntp: Option<u64>,
    /// Round-trip time computed from a report block about our stream.
    pub rtt: Option<Duration>,
    /// Fraction lost reported about our stream (0..=255).
    pub fraction_lost: Option<u8>,
}

fn block(ssrc: u32, rs: &mut RecvStats, now: Duration) -> ReceptionReport {
    let (lsr, dlsr) = rs.lsr_dlsr(now);
    let lost = rs.cumulative_lost().clamp(-(1 << 23), (1 << 23) - 1);
    ReceptionReport {
        ssrc,
        fraction_lost: rs.take_fraction_lost(),
        total_lost: (lost as i32 as u32) & 0x00FF_FFFF,
        last_sequence_number: rs.extended_highest(),
        jitter: rs.jitter_units(),
        last_sender_report: lsr,
        delay: dlsr,
    }
}

/// Compound report: SR (or RR when we are not sending) + SDES CNAME, optionally + BYE.
pub fn report(
    stream: &OutStream,
    sending: bool,
    client: Option<(u32, &mut RecvStats)>,
    ntp_origin: u64,
    cname: &str,
    now: Duration,
    bye: bool,
) -> Vec<u8> {
    let reports: Vec<ReceptionReport> = client
        .map(|(ssrc, rs)| vec![block(ssrc, rs, now)])
        .unwrap_or_default();
    let mut pkts: Vec<Box<dyn Packet>> = Vec::with_capacity(3);
    if sending || stream.packets_sent > 0 {
        pkts.push(Box::new(SenderReport {
            ssrc: stream.ssrc,
            ntp_time: ntp_at(ntp_origin, now),
            rtp_time: stream.ts_at(now),
            packet_count: stream.packets_sent as u32,
            octet_count: stream.octets_sent as u32,
            reports,
            ..Default::default()
        }));
    } else {
        pkts.push(Box::new(ReceiverReport {
            ssrc: stream.ssrc,
            reports,
            ..Default::default()
        }));
    }
    pkts.push(Box::new(SourceDescription {
        chunks: vec![SourceDescriptionChunk {
            source: stream.ssrc,
            items: vec![SourceDescriptionItem {
                sdes_type: SdesType::SdesCname,
                text: bytes::Bytes::copy_from_slice(cname.as_bytes()),
            }],
        }],
    }));
    let mut out = rtc_rtcp::packet::marshal(&pkts)
        .map(|b| b.to_vec())
        .unwrap_or_default();
    if bye && !out.is_empty() {
        out.extend_from_slice(&goodbye(stream.ssrc));
    }
    out
}

/// An RFC 3550 6.6 BYE for one SSRC without a reason: `81 cb 00 01 <ssrc>`.
///
/// Not `rtc_rtcp::goodbye::Goodbye`: its marshaller (0.21) always writes a reason length
/// octet, even for an empty reason, and then pads the packet with the P bit set, which
/// analyzers flag ("Reason string is not NULL padded"). The header still comes from the
/// crate's [`Header`] type.
fn goodbye(ssrc: u32) -> [u8; 8] {
    let header = Header {
        padding: false,
        count: 1,
        packet_type: PacketType::Goodbye,
        length: 1,
    };
    let mut out = [0u8; 8];
    // A header always fits its 4 bytes; on the impossible error the BYE is left zeroed
    // rather than panicking in the media path.
    let _ = header.marshal_to(&mut out[..4]);
    out[4..].copy_from_slice(&ssrc.to_be_bytes());
    out
}

/// Parse a (compound) RTCP packet from the client. `None` when it is not valid RTCP.
pub fn parse(packet: &[u8], our_ssrc: u32, ntp_origin: u64, now: Duration) -> Option<Incoming> {
    // RTCP: version 2, packet type 200..=211 (RFC 5761 demux range 192..=223).
    if packet.len() < 8 || packet[0] >> 6 != 2 || !(192..=223).contains(&packet[1]) {
        return None;
    }
    let mut buf = packet;
    let pkts = rtc_rtcp::packet::unmarshal(&mut buf).ok()?;
    let mut inc = Incoming::default();
    let now_ntp_mid = (ntp_at(ntp_origin, now) >> 16) as u32;
    let mut blocks: Vec<ReceptionReport> = Vec::new();
    for p in &pkts {
        let any = p.as_any();
        if let Some(sr) = any.downcast_ref::<SenderReport>() {
            inc.sr_ntp = Some(sr.ntp_time);
            blocks.extend(sr.reports.iter().cloned());
        } else if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
            blocks.extend(rr.reports.iter().cloned());
        }
    }
    for b in blocks.iter().filter(|b| b.ssrc == our_ssrc) {
        inc.fraction_lost = Some(b.fraction_lost);
        if b.last_sender_report != 0 {
            let rtt = now_ntp_mid
                .wrapping_sub(b.last_sender_report)
                .wrapping_sub(b.delay);
            if rtt < 65536 * 10 {
                inc.rtt = Some(Duration::from_nanos(rtt as u64 * 1_000_000_000 / 65536));
            }
        }
    }
    Some(inc)
}
