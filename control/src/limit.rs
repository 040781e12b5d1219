//! Rate limits the drivers apply to what arrives from the wire, as small pure types with time
//! injected (`now`: any monotonic origin), tested alone:
//!
//! - [`SourceLimiter`]: a token bucket per source IP address for SIP messages, in a table of
//!   bounded size, so that one source's flood cannot take the server's time from others.
//! - [`LogThrottle`]: at most one log line per period for an event that can happen per
//!   packet (an SSRC change, a DTMF digit), carrying how many were not logged since.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// One source's bucket: tokens left at `at`.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Duration,
}

/// Token buckets per source IP address: each source may send `rate` messages per second on
/// average and `burst` at once. The table holds at most `max_sources` sources: when it is
/// full, sources whose bucket has refilled (idle ones, which lose nothing by being
/// forgotten) are dropped, at most once per second; if none has, one arbitrary source is
/// forgotten (it starts again with a full bucket), so memory stays bounded whatever number
/// of (spoofed) addresses sends.
#[derive(Clone, Debug)]
pub struct SourceLimiter {
    rate: f64,
    burst: f64,
    max_sources: usize,
    buckets: HashMap<IpAddr, Bucket>,
    next_sweep: Duration,
}

impl SourceLimiter {
    /// `rate` messages per second per source (0: no limit), `burst` at once (at least 1),
    /// at most `max_sources` sources tracked (at least 1).
    pub fn new(rate: u32, burst: u32, max_sources: usize) -> Self {
        SourceLimiter {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            max_sources: max_sources.max(1),
            buckets: HashMap::new(),
            next_sweep: Duration::ZERO,
        }
    }

    /// Whether a message from `source` arriving at `now` may be served (it takes a token);
    /// `false`: drop it.
    pub fn allow(&mut self, source: IpAddr, now: Duration) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let (rate, burst) = (self.rate, self.burst);
        if !self.buckets.contains_key(&source) && self.buckets.len() >= self.max_sources {
            self.make_room(now);
        }
        let b = self.buckets.entry(source).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_sub(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = b.at.max(now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Sources tracked.
    pub fn sources(&self) -> usize {
        self.buckets.len()
    }

    fn make_room(&mut self, now: Duration) {
        if now >= self.next_sweep {
            self.next_sweep = now + Duration::from_secs(1);
            let (rate, burst) = (self.rate, self.burst);
            self.buckets
                .retain(|_, b| b.tokens + now.saturating_sub(b.at).as_secs_f64() * rate < burst);
        }
        if self.buckets.len() >= self.max_sources {
            if let Some(k) = self.buckets.keys().next().copied() {
                self.buckets.remove(&k);
            }
        }
    }
}

/// At most one log line per `period` for one kind of event: [`LogThrottle::event`] says
/// whether to write a line now and how many events went unlogged since the last line.
#[derive(Clone, Debug)]
pub struct LogThrottle {
    period: Duration,
    next_line: Option<Duration>,
    suppressed: u64,
}

impl LogThrottle {
    /// At most one line per `period`.
    pub fn new(period: Duration) -> Self {
        LogThrottle {
            period,
            next_line: None,
            suppressed: 0,
        }
    }

    /// An event at `now`: `Some(n)` to log it now, `n` events having gone unlogged since the
    /// previous line; `None` to leave it out (counted for the next line).
    pub fn event(&mut self, now: Duration) -> Option<u64> {
        match self.next_line {
            Some(t) if now < t => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.next_line = Some(now + self.period);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// Events left out since the last line.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        let mut l = SourceLimiter::new(100, 200, 16);
        let a: IpAddr = "198.18.0.1".parse().unwrap();
        let b: IpAddr = "198.18.0.2".parse().unwrap();
        let burst = (0..1000).filter(|_| l.allow(a, ms(0))).count();
        assert_eq!(burst, 200);
        // Another source is not affected.
        assert!(l.allow(b, ms(0)));
        // 100/s: one token every 10 ms.
        assert!(!l.allow(a, ms(5)));
        assert!(l.allow(a, ms(10)));
        assert!(!l.allow(a, ms(10)));
        let second = (0..1000).filter(|i| l.allow(a, ms(1000 + i))).count();
        // 990 ms of refill since the last token (99) and one per 10 ms during the second.
        assert!((190..=200).contains(&second), "{second}");
        // Time going backwards (another clock) neither adds tokens nor panics.
        assert!(!l.allow(a, ms(0)));
    }

    #[test]
    fn no_limit_when_the_rate_is_zero() {
        let mut l = SourceLimiter::new(0, 0, 1);
        let a: IpAddr = "198.18.0.1".parse().unwrap();
        assert!((0..10_000).all(|_| l.allow(a, ms(0))));
        assert_eq!(l.sources(), 0);
    }

    #[test]
    fn table_is_bounded_and_forgets_idle_sources_first() {
        let mut l = SourceLimiter::new(10, 2, 4);
        let ip = |i: u8| IpAddr::from([198, 18, 1, i]);
        // Source 1 exhausts its bucket; 2..4 send once.
        assert!(l.allow(ip(1), ms(0)) && l.allow(ip(1), ms(0)));
        assert!(!l.allow(ip(1), ms(0)));
        for i in 2..=4 {
            assert!(l.allow(ip(i), ms(0)));
        }
        assert_eq!(l.sources(), 4);
        // 150 ms later 2..4 have refilled (one token per 100 ms), 1 has not: a new source
        // evicts the idle ones, 1 keeps its (nearly empty) bucket.
        assert!(l.allow(ip(5), ms(150)));
        assert_eq!(l.sources(), 2);
        assert!(l.allow(ip(1), ms(150)));
        assert!(!l.allow(ip(1), ms(150)), "source 1 was not forgotten");
        // A spray of new addresses never grows the table past its cap.
        for i in 0..=255 {
            l.allow(IpAddr::from([198, 19, 0, i]), ms(160));
            assert!(l.sources() <= 4);
        }
    }

    #[test]
    fn throttle_logs_once_per_period_with_the_count_left_out() {
        let mut t = LogThrottle::new(Duration::from_secs(10));
        assert_eq!(t.event(ms(0)), Some(0));
        for i in 1..=999 {
            assert_eq!(t.event(ms(i)), None);
        }
        assert_eq!(t.suppressed(), 999);
        assert_eq!(t.event(ms(9_999)), None);
        assert_eq!(t.event(ms(10_000)), Some(1000));
        assert_eq!(t.event(ms(30_000)), Some(0));
    }
}
