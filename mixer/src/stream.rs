//! One output RTP stream (mixer -> participant).
//!
//! # Sequence numbers and timestamps are pure functions of replicated state
//!
//! A stream is described by `(ssrc, seq_origin, ts_origin, base_tick, clock_rate,
//! packets_sent)`; all of it is either drawn from the seed at creation
//! ([`crate::stream_origins`]) or counted. Time is measured on a global 48 kHz sample clock:
//! tick `t` (a tick index is `round(now / 20 ms)`, see [`crate::tick_index`]) produces the
//! samples `[960 t, 960 (t + 1))`, and output packet number `k` of a `ptime` stream covers
//! samples `[k P, (k + 1) P)` with `P = 48 * ptime_ms`. For that packet:
//!
//! ```text
//! seq = seq_origin + packets_sent                                        (mod 2^16)
//! ts  = ts_origin + (k P - 960 base_tick) * clock_rate / 48000           (mod 2^32)
//!     = ts_origin + (tick - base_tick) * clock_rate / 50   when the packet starts on a tick
//! ```
//!
//! A backup mixer that holds the same six numbers continues the stream exactly. Packet
//! boundaries are aligned globally, so every stream with the same ptime cuts its packets at
//! the same samples (this is what lets listeners share one encode).
//! While `send == false` nothing is sent and `packets_sent` does not move, but the timestamp
//! keeps following the tick clock, so after a resume seq continues +1 and the timestamp
//! reflects the elapsed time (marker bit set on the first packet after the pause).
//! A codec change with a different clock rate rebases: `ts_origin` becomes the timestamp
//! of the current tick and `base_tick` the current tick.

use rtc_rtp::header::Header;
use rtc_shared::marshal::Marshal;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Output stream state (serde: it is what a hot standby replicates, see
/// [`crate::MixerSnapshot`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutStream {
    /// Our SSRC.
    pub ssrc: u32,
    /// First sequence number.
    pub seq_origin: u16,
    /// Timestamp at `base_tick`.
    pub ts_origin: u32,
    /// Tick index where `ts_origin` applies.
    pub base_tick: u64,
    /// RTP clock rate.
    pub clock_rate: u32,
    /// Packets sent so far.
    pub packets_sent: u64,
    /// Payload octets sent so far.
    pub octets_sent: u64,
    /// Set the marker bit on the next packet.
    pub marker_next: bool,
    /// First global sample not covered by a packet sent so far (a ptime change never
    /// re-sends samples: the first packet after it is shortened instead).
    pub next_sample: Option<u64>,
}

impl OutStream {
    /// New stream starting at `base_tick`.
    pub fn new(
        ssrc: u32,
        seq_origin: u16,
        ts_origin: u32,
        base_tick: u64,
        clock_rate: u32,
    ) -> Self {
        Self {
            ssrc,
            seq_origin,
            ts_origin,
            base_tick,
            clock_rate,
            packets_sent: 0,
            octets_sent: 0,
            marker_next: true,
            next_sample: None,
        }
    }

    fn per_tick(&self) -> i64 {
        (self.clock_rate / 50) as i64
    }

    /// Timestamp of the first sample of tick `tick`.
    pub fn ts_at_tick(&self, tick: u64) -> u32 {
        let d = tick as i64 - self.base_tick as i64;
        self.ts_origin.wrapping_add((d * self.per_tick()) as u32)
    }

    /// Timestamp of global 48 kHz sample `g` (see the module docs).
    pub fn ts_at_sample(&self, g: u64) -> u32 {
        let d = g as i128 - self.base_tick as i128 * 960;
        self.ts_origin
            .wrapping_add((d * self.clock_rate as i128 / 48_000) as i64 as u32)
    }

    /// Timestamp corresponding to instant `now` (for RTCP SR), consistent with `ts_at_tick`.
    pub fn ts_at(&self, now: Duration) -> u32 {
        let base_ns = self.base_tick as i128 * 20_000_000;
        let d = now.as_nanos() as i128 - base_ns;
        let units = d * self.clock_rate as i128 / 1_000_000_000;
        self.ts_origin.wrapping_add(units as i64 as u32)
    }

    /// Change clock rate at `tick` keeping the timestamp continuous.
    pub fn rebase(&mut self, tick: u64, clock_rate: u32) {
        if clock_rate != self.clock_rate {
            self.ts_origin = self.ts_at_tick(tick);
            self.base_tick = tick;
            self.clock_rate = clock_rate;
        }
    }

    /// Next sequence number.
    pub fn next_seq(&self) -> u16 {
        self.seq_origin.wrapping_add(self.packets_sent as u16)
    }

    /// The part of output packet `span` (global 48 kHz samples) that is still to be sent:
    /// `None` when a previous packet already covered all of it, a shortened span when it
    /// covered its beginning (after a ptime change), else `span` itself. The mixer and
    /// [`OutStream::advance`] both decide with this function.
    pub fn span_to_send(&self, span: std::ops::Range<u64>) -> Option<std::ops::Range<u64>> {
        match self.next_sample {
            Some(ns) if ns >= span.end => None,
            Some(ns) if ns > span.start => Some(ns..span.end),
            _ => Some(span),
        }
    }

    /// Project the header bookkeeping over ticks `ticks` (a half-open range of tick indices)
    /// as if the mixer had run each of them with this `ptime_ms` and `send` and sent every
    /// packet they complete: `packets_sent`, `next_sample` and `marker_next` end up exactly
    /// where the mixer's would. Closed form (constant cost, however many ticks). Returns the
    /// number of 48 kHz samples the projected packets carry (octets are not projected: an
    /// Opus payload size is not a function of time).
    pub fn advance(&mut self, ptime_ms: u32, send: bool, ticks: std::ops::Range<u64>) -> u64 {
        if !send || ticks.start >= ticks.end || ptime_ms == 0 {
            return 0;
        }
        let p = ptime_ms as u64 * 48;
        let k0 = ticks.start * 960 / p;
        let k1 = ticks.end * 960 / p;
        let ns = self.next_sample.unwrap_or(0);
        // Packets entirely covered already (k + 1) P <= ns are skipped.
        let ks = k0.max(ns / p);
        if ks >= k1 {
            return 0;
        }
        let start = (ks * p).max(ns);
        self.packets_sent += k1 - ks;
        self.next_sample = Some(k1 * p);
        self.marker_next = false;
        k1 * p - start
    }

    /// Build the next RTP packet carrying the global samples `span`.
    pub fn packet(
        &mut self,
        payload_type: u8,
        span: std::ops::Range<u64>,
        payload: &[u8],
    ) -> Vec<u8> {
        let first_sample = span.start;
        self.next_sample = Some(span.end);
        let header = Header {
            version: 2,
            marker: self.marker_next,
            payload_type,
            sequence_number: self.next_seq(),
            timestamp: self.ts_at_sample(first_sample),
            ssrc: self.ssrc,
            ..Default::default()
        };
        let mut buf = vec![0u8; 12 + payload.len()];
        // A plain 12-byte header always fits.
        let n = header.marshal_to(&mut buf).unwrap_or(12);
        buf.truncate(n + payload.len());
        buf[n..].copy_from_slice(payload);
        self.marker_next = false;
        self.packets_sent += 1;
        self.octets_sent += payload.len() as u64;
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::{completed_packets, packet_samples};
    use proptest::prelude::*;

    /// What the mixer does to a stream on one tick (headers only).
    fn tick_by_tick(s: &mut OutStream, ptime: u32, send: bool, tick: u64) -> u64 {
        let mut samples = 0;
        if !send {
            return 0;
        }
        for k in completed_packets(ptime, tick) {
            if let Some(span) = s.span_to_send(packet_samples(ptime, k)) {
                samples += span.end - span.start;
                let _ = s.packet(0, span, &[]);
            }
        }
        samples
    }

    proptest! {
        /// `advance` (closed form) equals running the ticks one by one, across any sequence
        /// of ptime / send changes.
        #[test]
        fn advance_equals_ticking(
            base in 0u64..1000,
            segments in proptest::collection::vec((1u32..=6, any::<bool>(), 0u64..40), 1..8),
        ) {
            let mut a = OutStream::new(7, 100, 1000, base, 48_000);
            let mut b = a.clone();
            let mut t = base;
            for (pt10, send, len) in segments {
                let ptime = pt10 * 10;
                let mut n_b = 0;
                for tick in t..t + len {
                    n_b += tick_by_tick(&mut b, ptime, send, tick);
                }
                let n_a = a.advance(ptime, send, t..t + len);
                t += len;
                prop_assert_eq!(n_a, n_b);
                prop_assert_eq!(&a, &b);
            }
        }
    }
}
