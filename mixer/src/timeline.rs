//! The global sample clock shared by every output stream of a room.
//!
//! Tick `t` (index `round(now / 20 ms)`) produces the 48 kHz samples `[960 t, 960 (t + 1))`
//! of the room mix; an output packet of `ptime` ms number `k` covers `[k P, (k + 1) P)` with
//! `P = 48 ptime`. Packet boundaries are therefore the same for every stream with the same
//! ptime, which is what lets listeners share one encode, and they are a pure function of
//! time, which is what lets a backup cut the same packets.

use crate::codec::TICK_SAMPLES;
use std::time::Duration;

/// Tick index of an instant: `round(now / 20 ms)`. Output timestamps are a function of it
/// (see [`crate::stream`]), so a backup driven with the same origin computes the same indices.
pub fn tick_index(now: Duration) -> u64 {
    ((now.as_micros() + 10_000) / 20_000) as u64
}

/// Ticks of mix history kept (a 60 ms packet not aligned to ticks spans 4).
pub(crate) const RING: usize = 6;

pub(crate) fn new_ring() -> Vec<(u64, Vec<i16>)> {
    (0..RING)
        .map(|_| (u64::MAX, vec![0; TICK_SAMPLES]))
        .collect()
}

/// Output packets (by global packet index `k`) of `ptime_ms` completed by tick `tick`.
/// Packet `k` covers global 48 kHz samples `[k * P, (k + 1) * P)`, `P = ptime_ms * 48`,
/// and tick `t` produces samples `[t * 960, (t + 1) * 960)`.
pub(crate) fn completed_packets(ptime_ms: u32, tick: u64) -> std::ops::Range<u64> {
    let p = ptime_ms as u64 * 48;
    let lo = tick * TICK_SAMPLES as u64;
    let hi = lo + TICK_SAMPLES as u64;
    let first = lo / p;
    let end = hi / p;
    first..end.max(first)
}

/// Global sample range of packet `k`.
pub(crate) fn packet_samples(ptime_ms: u32, k: u64) -> std::ops::Range<u64> {
    let p = ptime_ms as u64 * 48;
    k * p..(k + 1) * p
}

/// Tick indices a sample range touches.
pub(crate) fn ticks_of(span: &std::ops::Range<u64>) -> std::ops::RangeInclusive<u64> {
    span.start / TICK_SAMPLES as u64..=(span.end - 1) / TICK_SAMPLES as u64
}

/// Copy the samples of `span` into `out`, reading tick `t` from `src(t)` (zeros when absent).
pub(crate) fn gather<'a>(
    out: &mut Vec<i16>,
    span: &std::ops::Range<u64>,
    src: impl Fn(u64) -> Option<&'a [i16]>,
) {
    out.clear();
    let mut g = span.start;
    while g < span.end {
        let t = g / TICK_SAMPLES as u64;
        let off = (g % TICK_SAMPLES as u64) as usize;
        let n = ((TICK_SAMPLES - off) as u64).min(span.end - g) as usize;
        match src(t) {
            Some(s) => out.extend_from_slice(&s[off..off + n]),
            None => out.extend(std::iter::repeat_n(0i16, n)),
        }
        g += n as u64;
    }
}
