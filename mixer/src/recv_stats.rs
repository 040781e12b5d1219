//! RFC 3550 receive statistics for one incoming RTP stream: sequence/timestamp extension
//! (16-bit seq wrap, 32-bit timestamp wrap), cumulative and interval loss, interarrival
//! jitter, and the LSR/DLSR bookkeeping for reception report blocks.

use std::time::Duration;

/// Offset given to the first extended sequence number so that packets reordered before
/// the very first one still get a valid (smaller) extended number.
const SEQ_BASE: u64 = 1 << 16;

/// Receive-side state of one SSRC.
#[derive(Debug, Clone)]
pub struct RecvStats {
    clock_rate: u32,
    /// Highest extended sequence number seen.
    max_ext_seq: u64,
    base_ext_seq: u64,
    /// Reference for timestamp extension.
    last_ts: u32,
    last_ext_ts: i64,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    /// Jitter in timestamp units (RFC 3550 A.8, kept as f64).
    jitter: f64,
    last_transit: Option<i64>,
    /// Middle 32 bits of the NTP timestamp of the last SR received, and when.
    last_sr: Option<(u32, Duration)>,
}

impl RecvStats {
    /// Start statistics with the first packet's seq/ts.
    pub fn new(clock_rate: u32, seq: u16, ts: u32) -> Self {
        let ext = SEQ_BASE + seq as u64;
        Self {
            clock_rate,
            max_ext_seq: ext,
            base_ext_seq: ext,
            last_ts: ts,
            last_ext_ts: ts as i64,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            jitter: 0.0,
            last_transit: None,
            last_sr: None,
        }
    }

    /// Extend a sequence number relative to the highest seen (no state change).
    pub fn extend_seq(&self, seq: u16) -> u64 {
        let delta = seq.wrapping_sub(self.max_ext_seq as u16) as i16 as i64;
        (self.max_ext_seq as i64 + delta).max(0) as u64
    }

    /// Extend a timestamp relative to the last seen (no state change).
    pub fn extend_ts(&self, ts: u32) -> i64 {
        self.last_ext_ts + ts.wrapping_sub(self.last_ts) as i32 as i64
    }

    /// Account one received packet; returns (extended seq, extended ts).
    pub fn on_packet(&mut self, seq: u16, ts: u32, now: Duration) -> (u64, i64) {
        let ext_seq = self.extend_seq(seq);
        let ext_ts = self.extend_ts(ts);
        if ext_seq > self.max_ext_seq {
            self.max_ext_seq = ext_seq;
        }
        if ext_seq < self.base_ext_seq {
            self.base_ext_seq = ext_seq;
        }
        self.last_ts = ts;
        self.last_ext_ts = ext_ts;
        self.received += 1;
        // Interarrival jitter (RFC 3550 A.8), arrival expressed in the RTP clock.
        let arrival = (now.as_nanos() as i128 * self.clock_rate as i128 / 1_000_000_000) as i64;
        let transit = arrival - ext_ts;
        if let Some(prev) = self.last_transit {
            let d = (transit - prev).abs() as f64;
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
        (ext_seq, ext_ts)
    }

    /// Same packet arrived again (counted as received per RFC 3550, which may make loss negative).
    pub fn expected(&self) -> u64 {
        self.max_ext_seq - self.base_ext_seq + 1
    }

    /// Cumulative packets lost (may be negative with duplicates).
    pub fn cumulative_lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }

    /// Extended highest sequence number as sent in reception reports.
    pub fn extended_highest(&self) -> u32 {
        (self.max_ext_seq - SEQ_BASE) as u32
    }

    /// Jitter in RTP timestamp units.
    pub fn jitter_units(&self) -> u32 {
        self.jitter as u32
    }

    /// Jitter in ms.
    pub fn jitter_ms(&self) -> f64 {
        self.jitter * 1000.0 / self.clock_rate as f64
    }

    /// Fraction lost since the previous call (RFC 3550 A.3), 8-bit fixed point; advances the interval.
    pub fn take_fraction_lost(&mut self) -> u8 {
        let expected = self.expected();
        let expected_interval = expected.saturating_sub(self.expected_prior);
        self.expected_prior = expected;
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.received_prior = self.received;
        let lost_interval = expected_interval as i64 - received_interval as i64;
        if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval as i64).min(255) as u8
        }
    }

    /// Remember an incoming SR (its 64-bit NTP time) for LSR/DLSR.
    pub fn on_sender_report(&mut self, ntp: u64, now: Duration) {
        self.last_sr = Some(((ntp >> 16) as u32, now));
    }

    /// (LSR, DLSR) for a report block sent at `now`.
    pub fn lsr_dlsr(&self, now: Duration) -> (u32, u32) {
        match self.last_sr {
            Some((lsr, at)) => {
                let d = now.saturating_sub(at);
                (
                    lsr,
                    (d.as_nanos() * 65536 / 1_000_000_000).min(u32::MAX as u128) as u32,
                )
            }
            None => (0, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_wrap_and_loss() {
        let mut s = RecvStats::new(48000, 65534, 0);
        let ms = Duration::from_millis;
        assert_eq!(s.on_packet(65534, 0, ms(0)).0, SEQ_BASE + 65534);
        assert_eq!(s.on_packet(65535, 960, ms(20)).0, SEQ_BASE + 65535);
        assert_eq!(s.on_packet(1, 2880, ms(60)).0, SEQ_BASE + 65537);
        assert_eq!(s.cumulative_lost(), 1);
        assert_eq!(s.extended_highest(), 65537);
        assert_eq!(s.take_fraction_lost(), 64);
        assert_eq!(s.on_packet(0, 1920, ms(61)).0, SEQ_BASE + 65536);
        assert_eq!(s.cumulative_lost(), 0);
    }

    #[test]
    fn ts_wrap() {
        let mut s = RecvStats::new(8000, 1, u32::MAX - 100);
        s.on_packet(1, u32::MAX - 100, Duration::ZERO);
        let (_, ext) = s.on_packet(2, 59, Duration::from_millis(20));
        assert_eq!(ext, u32::MAX as i64 + 60);
    }
}
