//! What the switcher keeps about one source's incoming stream: its SSRC (with probation for
//! a new one), a sequence window (duplicates, late packets, restarts), the picture ID
//! unwrapping, the retransmission cache, and the keyframe-request limiter.

use crate::feedback::FirSequence;
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::Duration;

/// Packets this far behind the highest sequence number are still taken (reordering,
/// retransmissions); duplicates within it are dropped.
pub(crate) const WINDOW: u16 = 512;
/// A forward jump up to this is loss; a bigger one (or a backward one beyond the window)
/// is a restart of the sequence, believed when the next packet follows it (RFC 3550 A.1).
const MAX_DROPOUT: u16 = 3000;
/// Largest packet kept for retransmission (bigger ones are forwarded, not cached).
pub(crate) const MAX_CACHED_PACKET: usize = 1500;
/// A sequence number asked from the source again within this interval is not asked again.
const NACK_REPEAT: Duration = Duration::from_millis(100);
/// A packet asked from the source and still missing this long after the first ask is not
/// coming (the source does not retransmit, or sent it before a takeover): its receivers need
/// a keyframe instead.
const NACK_GIVE_UP: Duration = Duration::from_millis(250);
/// How long a sequence number asked from the source is remembered.
const NACK_MEMORY: Duration = Duration::from_secs(1);
/// Most sequence numbers remembered as asked.
const NACK_MEMORY_LEN: usize = 1024;

/// Outcome of the sequence check of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SeqCheck {
    /// A packet not seen before, within the window.
    New,
    /// Seen already.
    Duplicate,
    /// A jump not confirmed yet: dropped.
    Probation,
    /// The source restarted its sequence here.
    Restart,
}

/// Sequence window of one SSRC.
#[derive(Debug, Clone, Default)]
pub(crate) struct SeqWindow {
    highest: Option<u16>,
    bits: [u64; WINDOW as usize / 64],
    bad: Option<u16>,
}

impl SeqWindow {
    fn bit(&mut self, seq: u16) -> (&mut u64, u64) {
        let i = usize::from(seq % WINDOW);
        (&mut self.bits[i / 64], 1u64 << (i % 64))
    }

    fn reset(&mut self, seq: u16) {
        *self = SeqWindow {
            highest: Some(seq),
            ..Default::default()
        };
        let (w, m) = self.bit(seq);
        *w |= m;
    }

    /// Check (and record) `seq`. `restart_ok`: a jump is believed at once (the packet starts
    /// a keyframe).
    pub fn check(&mut self, seq: u16, restart_ok: bool) -> SeqCheck {
        let Some(h) = self.highest else {
            self.reset(seq);
            return SeqCheck::New;
        };
        let ahead = seq.wrapping_sub(h);
        let behind = h.wrapping_sub(seq);
        if ahead != 0 && ahead < MAX_DROPOUT {
            if ahead >= WINDOW {
                self.bits = Default::default();
            } else {
                for s in 1..=ahead {
                    let (w, m) = self.bit(h.wrapping_add(s));
                    *w &= !m;
                }
            }
            self.highest = Some(seq);
            self.bad = None;
            let (w, m) = self.bit(seq);
            *w |= m;
            return SeqCheck::New;
        }
        if behind < WINDOW {
            let (w, m) = self.bit(seq);
            if *w & m != 0 {
                return SeqCheck::Duplicate;
            }
            *w |= m;
            return SeqCheck::New;
        }
        if restart_ok || self.bad == Some(seq) {
            self.reset(seq);
            return SeqCheck::Restart;
        }
        self.bad = Some(seq.wrapping_add(1));
        SeqCheck::Probation
    }
}

/// One cached source packet.
#[derive(Debug, Clone)]
pub(crate) struct Cached {
    pub seq: u16,
    pub ssrc: u32,
    pub generation: u32,
    pub at: Duration,
    /// Extended picture ID the packet was forwarded with (7-bit IDs are unwrapped).
    pub pic_ext: Option<u64>,
    pub packet: Bytes,
}

/// Everything about one source.
#[derive(Debug)]
pub(crate) struct Source {
    /// The SSRC its packets are taken from.
    pub ssrc: Option<u32>,
    /// Bumped when the stream restarts (new SSRC, sequence restart): output mappings made
    /// for an older generation are void.
    pub generation: u32,
    /// A new SSRC seen once: `(ssrc, next expected sequence number)`.
    pub probation: Option<(u32, u16)>,
    pub window: SeqWindow,
    /// Largest extended picture ID seen (unwrapping anchor).
    pic_ext: Option<u64>,
    cache: Vec<Option<Cached>>,
    /// Cached packets in arrival order (slot, arrival): the ones older than the cache's
    /// maximum age are freed as new ones come, so a source's cache holds what a NACK may
    /// still get (about a second of its packets), not `cache_packets` whatever their age.
    cache_order: VecDeque<(usize, Duration)>,
    pub fir: FirSequence,
    /// When the last keyframe request was sent.
    pub last_request_at: Option<Duration>,
    /// A request was asked while rate-limited; sent when the limit allows unless a
    /// keyframe arrives first.
    pub deferred: bool,
    /// A request was sent and no keyframe arrived since.
    pub awaiting_keyframe: bool,
    /// Requests still to repeat, one per rate-limit interval, while no keyframe arrives
    /// after a takeover's resume request (that request may be lost, or dropped while the
    /// new primary's fence lifts, and a receiver that lost a packet at the takeover decodes
    /// nothing until a keyframe comes).
    pub resume_retries: u8,
    pub next_remb_at: Duration,
    /// Sequence numbers asked from the source: (seq, first asked, last asked), for
    /// [`NACK_MEMORY`].
    recent_nacks: VecDeque<(u16, Duration, Duration)>,
}

impl Source {
    pub fn new(ssrc: Option<u32>, cache_packets: usize, next_remb_at: Duration) -> Source {
        Source {
            ssrc,
            generation: 0,
            probation: None,
            window: SeqWindow::default(),
            pic_ext: None,
            cache: vec![None; cache_packets.clamp(1, 1 << 16)],
            cache_order: VecDeque::new(),
            fir: FirSequence::default(),
            last_request_at: None,
            deferred: false,
            awaiting_keyframe: false,
            resume_retries: 0,
            next_remb_at,
            recent_nacks: VecDeque::new(),
        }
    }

    /// Start over with `ssrc` (a new stream): new generation, empty window and cache.
    pub fn restart(&mut self, ssrc: u32) {
        self.ssrc = Some(ssrc);
        self.generation = self.generation.wrapping_add(1);
        self.probation = None;
        self.window = SeqWindow::default();
        self.pic_ext = None;
        self.recent_nacks.clear();
        for c in &mut self.cache {
            *c = None;
        }
        self.cache_order.clear();
    }

    /// The same SSRC restarted its sequence (the window already moved): new generation.
    pub fn restart_sequence(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        self.pic_ext = None;
        self.recent_nacks.clear();
    }

    /// Extended picture ID of `pic` (7 or 15 bits): congruent to `pic` modulo 2^15 for
    /// 15-bit IDs and modulo 128 for 7-bit ones, continuous across wraps.
    pub fn unwrap_picture_id(&mut self, pic: u16, long: bool) -> u64 {
        let m: i64 = if long { 1 << 15 } else { 1 << 7 };
        let ext = match self.pic_ext {
            // A multiple of 2^15 as the base keeps ext = pic (mod 2^15) for 15-bit IDs.
            None => (1u64 << 30) + u64::from(pic),
            Some(last) => {
                let d = (i64::from(pic) - (last as i64 % m)).rem_euclid(m);
                let d = if d >= m / 2 { d - m } else { d };
                last.saturating_add_signed(d)
            }
        };
        self.pic_ext = Some(self.pic_ext.map_or(ext, |l| l.max(ext)));
        ext
    }

    /// Keep `c` for retransmission, and free what is older than `max_age` (it would not be
    /// resent any more).
    pub fn cache_put(&mut self, c: Cached, max_age: Duration) {
        while let Some(&(slot, at)) = self.cache_order.front() {
            if c.at.saturating_sub(at) <= max_age && self.cache_order.len() < self.cache.len() {
                break;
            }
            self.cache_order.pop_front();
            if self.cache[slot].as_ref().is_some_and(|old| old.at == at) {
                self.cache[slot] = None;
            }
        }
        if c.packet.len() <= MAX_CACHED_PACKET {
            let n = self.cache.len();
            let i = usize::from(c.seq) % n;
            self.cache_order.push_back((i, c.at));
            self.cache[i] = Some(c);
        }
    }

    /// The cached packet `seq` of the current SSRC generation `generation`, if still fresh.
    pub fn cache_get(
        &self,
        seq: u16,
        ssrc: u32,
        generation: u32,
        now: Duration,
        max_age: Duration,
    ) -> Option<&Cached> {
        let n = self.cache.len();
        self.cache[usize::from(seq) % n].as_ref().filter(|c| {
            c.seq == seq
                && c.ssrc == ssrc
                && c.generation == generation
                && now.saturating_sub(c.at) <= max_age
        })
    }

    /// Whether packet `seq` of the current stream arrived (is in the sequence window).
    pub fn received(&mut self, seq: u16) -> bool {
        let Some(h) = self.window.highest else {
            return false;
        };
        if h.wrapping_sub(seq) >= WINDOW {
            return false;
        }
        let (w, m) = self.window.bit(seq);
        *w & m != 0
    }

    /// Whether `seq` is not ahead of the highest sequence number received.
    pub fn at_or_behind_highest(&self, seq: u16) -> bool {
        self.window
            .highest
            .is_some_and(|h| h.wrapping_sub(seq) < 0x8000)
    }

    /// Keep the sequence numbers of `lost` not asked from the source within [`NACK_REPEAT`]
    /// (by any receiver: several viewers NACK the same loss), and remember them as asked.
    /// True when one of them was first asked [`NACK_GIVE_UP`] ago or more and is still
    /// missing: the source is not repairing it.
    pub fn filter_nacks(&mut self, lost: &mut Vec<u16>, now: Duration) -> bool {
        while self
            .recent_nacks
            .front()
            .is_some_and(|&(_, first, _)| now.saturating_sub(first) >= NACK_MEMORY)
        {
            self.recent_nacks.pop_front();
        }
        let mut overdue = false;
        let asked = &mut self.recent_nacks;
        lost.retain(|&s| match asked.iter_mut().find(|e| e.0 == s) {
            Some(e) => {
                overdue |= now.saturating_sub(e.1) >= NACK_GIVE_UP;
                let again = now.saturating_sub(e.2) >= NACK_REPEAT;
                if again {
                    e.2 = now;
                }
                again
            }
            None => {
                if asked.len() == NACK_MEMORY_LEN {
                    asked.pop_front();
                }
                asked.push_back((s, now, now));
                true
            }
        });
        overdue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_drops_duplicates_and_confirms_restarts() {
        let mut w = SeqWindow::default();
        assert_eq!(w.check(65530, false), SeqCheck::New);
        assert_eq!(w.check(3, false), SeqCheck::New); // wraps forward
        assert_eq!(w.check(65533, false), SeqCheck::New); // reordered
        assert_eq!(w.check(65533, false), SeqCheck::Duplicate);
        assert_eq!(w.check(30000, false), SeqCheck::Probation);
        assert_eq!(w.check(30001, false), SeqCheck::Restart);
        assert_eq!(w.check(30002, false), SeqCheck::New);
        assert_eq!(w.check(100, true), SeqCheck::Restart);
    }

    #[test]
    fn seven_bit_picture_ids_unwrap() {
        let mut s = Source::new(None, 8, Duration::ZERO);
        let a = s.unwrap_picture_id(126, false);
        assert_eq!(s.unwrap_picture_id(127, false), a + 1);
        assert_eq!(s.unwrap_picture_id(0, false), a + 2);
        assert_eq!(s.unwrap_picture_id(127, false), a + 1); // late
        assert_eq!(s.unwrap_picture_id(1, false), a + 3);
        let mut l = Source::new(None, 8, Duration::ZERO);
        assert_eq!(l.unwrap_picture_id(32767, true) % 32768, 32767);
        assert_eq!(l.unwrap_picture_id(0, true) % 32768, 0);
    }
}
