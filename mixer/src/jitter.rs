//! Adaptive jitter buffer for one incoming audio stream (codec-agnostic).
//!
//! Packets are keyed by extended sequence number and carry an extended RTP timestamp and a
//! duration (both in the codec's clock). The playout cursor `next_ts` advances only as audio
//! is pulled, so:
//! - reordering is absorbed as long as a packet arrives before it is needed;
//! - duplicates and packets behind the cursor are rejected (`Insert::Duplicate`/`Late`);
//! - a hole whose successor is already buffered is reported as `Pull::Lost` (with the
//!   successor's payload, so Opus can use its in-band FEC);
//! - an empty buffer while playing is an underrun: the cursor does NOT advance, which adds
//!   one pull of delay (the buffer grows when the network is late);
//! - a buffer shallower than the target is stretched the same way (one concealed frame at
//!   most every few pulls) until it reaches the target;
//! - a buffer that stayed deeper than the target for a whole window drops one frame (the
//!   buffer shrinks when the network is calm);
//! - the target itself follows the measured interarrival jitter, clamped to 20..=200 ms.

use std::collections::BTreeMap;

/// Minimum target delay.
pub const MIN_TARGET_MS: u32 = 20;
/// Maximum target delay.
pub const MAX_TARGET_MS: u32 = 200;
/// A timestamp jump larger than this (with a contiguous or discontiguous sequence) starts a
/// new talkspurt instead of being concealed.
const RESYNC_GAP_MS: u32 = 300;
/// Consecutive underrun pulls after which the stream counts as paused (DTX, mute, hold).
const IDLE_AFTER_UNDERRUNS: u32 = 10;
/// Pulls per shrink-evaluation window (1 s at 20 ms).
const SHRINK_WINDOW: u32 = 50;
/// At most one stretch per this many pulls.
const STRETCH_EVERY: u32 = 4;
/// Hard cap on buffered packets.
const MAX_PACKETS: usize = 200;

#[derive(Debug, Clone)]
struct Entry {
    ts: i64,
    dur: u32,
    payload: Vec<u8>,
}

/// Result of [`JitterBuffer::insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// Stored for playout.
    Stored,
    /// Same sequence number already buffered.
    Duplicate,
    /// Behind the playout cursor (already played or concealed).
    Late,
}

/// What to play next; durations in the codec clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pull {
    /// Not playing yet (prefilling): play silence.
    NotReady,
    /// Decode this packet.
    Packet {
        /// Payload.
        payload: Vec<u8>,
        /// Duration.
        dur: u32,
    },
    /// A packet is missing: conceal `dur` samples; `fec` is the successor packet if it
    /// directly follows the hole (usable for Opus in-band FEC).
    Lost {
        /// Samples to conceal.
        dur: u32,
        /// Successor payload for FEC.
        fec: Option<Vec<u8>>,
    },
    /// Sender paused (timestamp gap without sequence gap): play `dur` samples of silence.
    Silence {
        /// Samples of silence.
        dur: u32,
    },
    /// Buffer ran dry while playing: conceal without advancing the cursor.
    Underrun,
    /// The buffer is shallower than the target: conceal one frame without advancing the
    /// cursor, which grows the delay by that frame.
    Stretch,
}

/// Adaptive jitter buffer. See the module docs.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    per_ms: u32,
    packets: BTreeMap<u64, Entry>,
    playing: bool,
    next_ts: i64,
    last_seq: u64,
    last_dur: u32,
    target_ms: u32,
    underruns: u32,
    window_pulls: u32,
    window_min_depth: i64,
    stretch_cooldown: u32,
}

impl JitterBuffer {
    /// New buffer for a codec clock of `clock_rate` Hz.
    pub fn new(clock_rate: u32) -> Self {
        let per_ms = (clock_rate / 1000).max(1);
        Self {
            per_ms,
            packets: BTreeMap::new(),
            playing: false,
            next_ts: 0,
            last_seq: 0,
            last_dur: 20 * per_ms,
            target_ms: 40,
            underruns: 0,
            window_pulls: 0,
            window_min_depth: i64::MAX,
            stretch_cooldown: 0,
        }
    }

    /// Current target delay in ms.
    pub fn target_ms(&self) -> u32 {
        self.target_ms
    }

    /// Adapt the target to the measured RFC 3550 interarrival jitter (ms) and frame size.
    pub fn set_jitter(&mut self, jitter_ms: f64, frame_ms: u32) {
        let base = (2 * frame_ms).max(MIN_TARGET_MS) as f64;
        let t = base + 3.0 * jitter_ms;
        self.target_ms = (t.round() as u32).clamp(MIN_TARGET_MS, MAX_TARGET_MS);
    }

    /// Buffered audio ahead of the cursor, in ms (0 when not playing).
    pub fn depth_ms(&self) -> u32 {
        (self.depth().max(0) as u64 / self.per_ms as u64) as u32
    }

    fn depth(&self) -> i64 {
        match (
            self.packets.first_key_value(),
            self.packets.last_key_value(),
        ) {
            (Some((_, first)), Some((_, last))) => {
                let from = if self.playing { self.next_ts } else { first.ts };
                last.ts + last.dur as i64 - from
            }
            _ => 0,
        }
    }

    /// Store a packet. `ext_seq`/`ext_ts` are extended (wrap-free) values.
    pub fn insert(&mut self, ext_seq: u64, ext_ts: i64, dur: u32, payload: &[u8]) -> Insert {
        if self.playing && (ext_seq <= self.last_seq || ext_ts + dur as i64 <= self.next_ts) {
            return Insert::Late;
        }
        if self.packets.contains_key(&ext_seq) {
            return Insert::Duplicate;
        }
        self.packets.insert(
            ext_seq,
            Entry {
                ts: ext_ts,
                dur,
                payload: payload.to_vec(),
            },
        );
        while self.packets.len() > MAX_PACKETS {
            self.packets.pop_first();
        }
        Insert::Stored
    }

    /// Drop everything (new SSRC, hold).
    pub fn reset(&mut self) {
        self.packets.clear();
        self.playing = false;
        self.underruns = 0;
        self.window_pulls = 0;
        self.window_min_depth = i64::MAX;
    }

    /// Next thing to play.
    pub fn pull(&mut self) -> Pull {
        if !self.playing {
            let Some((&seq, first)) = self.packets.first_key_value() else {
                return Pull::NotReady;
            };
            if self.depth() < (self.target_ms * self.per_ms) as i64 {
                return Pull::NotReady;
            }
            self.next_ts = first.ts;
            self.last_seq = seq.wrapping_sub(1);
            self.playing = true;
            self.underruns = 0;
        }
        self.stretch_cooldown = self.stretch_cooldown.saturating_sub(1);
        let low =
            (self.target_ms * self.per_ms) as i64 - (20 * self.per_ms).max(self.last_dur) as i64;
        if self.stretch_cooldown == 0 && !self.packets.is_empty() && self.depth() < low {
            self.stretch_cooldown = STRETCH_EVERY;
            return Pull::Stretch;
        }
        loop {
            let Some((&seq, e)) = self.packets.first_key_value() else {
                self.underruns += 1;
                if self.underruns >= IDLE_AFTER_UNDERRUNS {
                    self.playing = false;
                }
                return Pull::Underrun;
            };
            self.underruns = 0;
            let gap = e.ts - self.next_ts;
            if gap > (RESYNC_GAP_MS * self.per_ms) as i64
                || gap < -((RESYNC_GAP_MS * self.per_ms) as i64)
            {
                // New talkspurt (or a sender timestamp jump): restart at this packet.
                self.next_ts = e.ts;
                self.last_seq = seq.wrapping_sub(1);
                continue;
            }
            if gap <= 0 {
                let e = self
                    .packets
                    .pop_first()
                    .map(|(_, e)| e)
                    .unwrap_or_else(|| unreachable!());
                self.next_ts = e.ts + e.dur as i64;
                self.last_seq = seq;
                self.last_dur = e.dur;
                return Pull::Packet {
                    payload: e.payload,
                    dur: e.dur,
                };
            }
            let gap = gap as u32;
            if seq == self.last_seq.wrapping_add(1) {
                let dur = gap.min(20 * self.per_ms);
                self.next_ts += dur as i64;
                return Pull::Silence { dur };
            }
            let dur = gap.min(self.last_dur);
            let fec = (gap <= self.last_dur).then(|| e.payload.clone());
            self.next_ts += dur as i64;
            if gap <= self.last_dur {
                self.last_seq = seq.wrapping_sub(1);
            }
            return Pull::Lost { dur, fec };
        }
    }

    /// Call once per mixing tick after pulling: shrinks the buffer when it stayed deeper
    /// than needed for a whole window. Returns true when a frame was dropped.
    pub fn end_tick(&mut self) -> bool {
        if !self.playing {
            return false;
        }
        let depth = self.depth();
        self.window_min_depth = self.window_min_depth.min(depth);
        self.window_pulls += 1;
        let excess = (self.target_ms + 20) as i64 * self.per_ms as i64;
        let hard = (self.target_ms + MAX_TARGET_MS) as i64 * self.per_ms as i64;
        let mut dropped = false;
        if (self.window_pulls >= SHRINK_WINDOW && self.window_min_depth > excess) || depth > hard {
            if let Some((seq, e)) = self.packets.pop_first() {
                self.next_ts = e.ts + e.dur as i64;
                self.last_seq = seq;
                dropped = true;
            }
        }
        if self.window_pulls >= SHRINK_WINDOW {
            self.window_pulls = 0;
            self.window_min_depth = i64::MAX;
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(jb: &mut JitterBuffer, seq: u64) -> Insert {
        jb.insert(seq, seq as i64 * 960, 960, &[seq as u8])
    }

    #[test]
    fn prefill_then_in_order() {
        let mut jb = JitterBuffer::new(48000);
        pkt(&mut jb, 10);
        assert_eq!(jb.pull(), Pull::NotReady);
        pkt(&mut jb, 11);
        assert_eq!(
            jb.pull(),
            Pull::Packet {
                payload: vec![10],
                dur: 960
            }
        );
        assert_eq!(
            jb.pull(),
            Pull::Packet {
                payload: vec![11],
                dur: 960
            }
        );
        assert_eq!(jb.pull(), Pull::Underrun);
        assert_eq!(pkt(&mut jb, 11), Insert::Late);
        pkt(&mut jb, 12);
        assert_eq!(
            jb.pull(),
            Pull::Packet {
                payload: vec![12],
                dur: 960
            }
        );
    }

    #[test]
    fn loss_reports_fec_candidate() {
        let mut jb = JitterBuffer::new(48000);
        pkt(&mut jb, 1);
        pkt(&mut jb, 3);
        assert!(matches!(jb.pull(), Pull::Packet { .. }));
        assert_eq!(
            jb.pull(),
            Pull::Lost {
                dur: 960,
                fec: Some(vec![3])
            }
        );
        assert_eq!(
            jb.pull(),
            Pull::Packet {
                payload: vec![3],
                dur: 960
            }
        );
    }
}
