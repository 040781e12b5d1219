//! Sans-IO media sender: turns a recorded stream into a re-stamped, optionally impaired
//! packet schedule. Ask [`MediaSender::poll_timeout`] when the next packet is due and
//! take due packets with [`MediaSender::poll_transmit`].

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use super::rng::Rng;
use crate::rtp::{extend_seq, extend_ts};
use crate::stream::Pkt;
use crate::writer::rtp_packet;

/// A recorded packet relative to the first one.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Arrival time after the first packet.
    pub rel: Duration,
    /// Extended sequence number minus the first one.
    pub seq_off: i64,
    /// Extended timestamp minus the first one.
    pub ts_off: i64,
    /// Marker bit.
    pub marker: bool,
    /// Payload.
    pub payload: Vec<u8>,
}

/// A recorded stream ready to replay.
#[derive(Debug, Clone)]
pub struct Recording {
    /// Packets of the main payload type, in recorded arrival order.
    pub packets: Vec<Recorded>,
    /// Time from one loop's first packet to the next loop's.
    pub period: Duration,
    /// Sequence numbers consumed per loop.
    pub seq_span: i64,
    /// Timestamp units consumed per loop.
    pub ts_span: i64,
}

impl Recording {
    /// Build from a stream's packets, keeping only payload type `pt`.
    pub fn from_packets(pkts: &[Pkt], pt: u8) -> Option<Recording> {
        let pkts: Vec<&Pkt> = pkts.iter().filter(|p| p.hdr.pt == pt).collect();
        let first = pkts.first()?;
        let (mut max_seq, mut prev_ts) = (i64::from(first.hdr.seq), i64::from(first.hdr.ts));
        let (seq0, ts0, t0) = (max_seq, prev_ts, first.rel_ms);
        let mut packets = Vec::with_capacity(pkts.len());
        for p in &pkts {
            let seq = extend_seq(max_seq, p.hdr.seq);
            max_seq = max_seq.max(seq);
            let ts = extend_ts(prev_ts, p.hdr.ts);
            prev_ts = ts;
            packets.push(Recorded {
                rel: Duration::from_secs_f64(((p.rel_ms - t0) / 1000.0).max(0.0)),
                seq_off: seq - seq0,
                ts_off: ts - ts0,
                marker: p.hdr.marker,
                payload: p.payload.clone(),
            });
        }
        let n = packets.len() as u32;
        let last = packets.last()?;
        let spacing = if n > 1 {
            last.rel / (n - 1)
        } else {
            Duration::from_millis(20)
        };
        let max_ts = packets.iter().map(|p| p.ts_off).max().unwrap_or(0);
        let ts_step = if n > 1 {
            max_ts / i64::from(n - 1)
        } else {
            160
        };
        Some(Recording {
            period: last.rel + spacing,
            seq_span: max_seq - seq0 + 1,
            ts_span: max_ts + ts_step.max(1),
            packets,
        })
    }
}

/// Impairments applied while sending (all seeded).
#[derive(Debug, Clone, Default)]
pub struct Impairments {
    /// Probability of dropping a packet.
    pub loss: f64,
    /// Probability of sending a packet twice.
    pub dup: f64,
    /// Probability of holding a packet back behind the next one.
    pub reorder: f64,
    /// Extra send delay, uniform in [0, jitter].
    pub jitter: Duration,
}

/// Configuration of one sender.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Our SSRC.
    pub ssrc: u32,
    /// First sequence number.
    pub seq0: u16,
    /// First timestamp.
    pub ts0: u32,
    /// Payload type to send.
    pub pt: u8,
    /// Start again at the end.
    pub looping: bool,
    /// Stop after this long (from the start).
    pub max_duration: Option<Duration>,
    /// Impairments.
    pub impair: Impairments,
    /// Seed for the impairments.
    pub seed: u64,
}

/// The sender state machine.
#[derive(Debug)]
pub struct MediaSender {
    rec: Recording,
    cfg: MediaConfig,
    start: Duration,
    next: usize,
    lap: u64,
    pending: BinaryHeap<Reverse<(Duration, u64, Vec<u8>)>>,
    counter: u64,
    rng: Rng,
    done_generating: bool,
    /// Packets handed out so far.
    pub sent: u64,
}

const LOOKAHEAD: Duration = Duration::from_millis(300);

impl MediaSender {
    /// Start sending `rec` at virtual time `start`.
    pub fn new(rec: Recording, cfg: MediaConfig, start: Duration) -> Self {
        let rng = Rng::new(cfg.seed);
        MediaSender {
            rec,
            cfg,
            start,
            next: 0,
            lap: 0,
            pending: BinaryHeap::new(),
            counter: 0,
            rng,
            done_generating: false,
            sent: 0,
        }
    }

    fn base_time(&self, i: usize, lap: u64) -> Duration {
        self.start + self.rec.period * lap as u32 + self.rec.packets[i].rel
    }

    fn generate(&mut self, now: Duration) {
        while !self.done_generating {
            if self.next >= self.rec.packets.len() {
                if self.cfg.looping {
                    self.next = 0;
                    self.lap += 1;
                } else {
                    self.done_generating = true;
                    break;
                }
            }
            let at = self.base_time(self.next, self.lap);
            if let Some(max) = self.cfg.max_duration {
                if at > self.start + max {
                    self.done_generating = true;
                    break;
                }
            }
            if at > now + LOOKAHEAD {
                break;
            }
            let p = &self.rec.packets[self.next];
            let lap = self.lap as i64;
            let seq = (i64::from(self.cfg.seq0) + lap * self.rec.seq_span + p.seq_off) as u16;
            let ts = (i64::from(self.cfg.ts0) + lap * self.rec.ts_span + p.ts_off) as u32;
            let bytes = rtp_packet(self.cfg.pt, p.marker, seq, ts, self.cfg.ssrc, &p.payload);
            let spacing = self
                .rec
                .packets
                .get(self.next + 1)
                .map(|q| q.rel.saturating_sub(p.rel))
                .unwrap_or(Duration::from_millis(20));
            self.next += 1;
            let imp = self.cfg.impair.clone();
            if self.rng.chance(imp.loss) {
                continue;
            }
            let mut send_at = at;
            if !imp.jitter.is_zero() {
                send_at += imp.jitter.mul_f64(self.rng.unit());
            }
            if self.rng.chance(imp.reorder) {
                send_at += spacing + Duration::from_micros(500);
            }
            let copies = if self.rng.chance(imp.dup) { 2 } else { 1 };
            for _ in 0..copies {
                self.counter += 1;
                self.pending
                    .push(Reverse((send_at, self.counter, bytes.clone())));
            }
        }
    }

    /// When the next packet is due (`None` when finished).
    pub fn poll_timeout(&mut self, now: Duration) -> Option<Duration> {
        self.generate(now);
        let queued = self.pending.peek().map(|Reverse((t, _, _))| *t);
        // Nothing queued yet: wake up when the next recorded packet enters the lookahead.
        let upcoming = if self.done_generating {
            None
        } else if self.next < self.rec.packets.len() {
            Some(self.base_time(self.next, self.lap))
        } else {
            Some(self.base_time(0, self.lap + 1))
        };
        match (queued, upcoming) {
            (Some(q), _) => Some(q),
            (None, Some(u)) => Some(u.saturating_sub(LOOKAHEAD).max(now)),
            (None, None) => None,
        }
    }

    /// A packet due at `now`, if any.
    pub fn poll_transmit(&mut self, now: Duration) -> Option<Vec<u8>> {
        self.generate(now);
        match self.pending.peek() {
            Some(Reverse((t, _, _))) if *t <= now => {
                let Reverse((_, _, b)) = self.pending.pop()?;
                self.sent += 1;
                Some(b)
            }
            _ => None,
        }
    }

    /// Whether everything has been sent.
    pub fn is_finished(&self) -> bool {
        self.done_generating && self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::{parse_rtp, RtpHeader};

    fn recording(n: u16) -> Recording {
        let pkts: Vec<Pkt> = (0..n)
            .map(|i| Pkt {
                time: 0.0,
                rel_ms: 20.0 * f64::from(i),
                hdr: RtpHeader {
                    marker: i == 0,
                    pt: 8,
                    seq: 65530u16.wrapping_add(i),
                    ts: 4_294_967_000u32.wrapping_add(160 * u32::from(i)),
                    ssrc: 1,
                    payload_offset: 12,
                    payload_len: 160,
                },
                payload: vec![0xd5; 160],
                truncated: false,
            })
            .collect();
        Recording::from_packets(&pkts, 8).unwrap()
    }

    fn cfg() -> MediaConfig {
        MediaConfig {
            ssrc: 0xABCD,
            seq0: 100,
            ts0: 5000,
            pt: 8,
            looping: false,
            max_duration: None,
            impair: Impairments::default(),
            seed: 1,
        }
    }

    fn drain(m: &mut MediaSender) -> Vec<(Duration, RtpHeader)> {
        let mut out = Vec::new();
        let mut now = Duration::ZERO;
        while let Some(t) = m.poll_timeout(now) {
            now = now.max(t);
            while let Some(b) = m.poll_transmit(now) {
                out.push((now, parse_rtp(&b).unwrap()));
            }
        }
        out
    }

    #[test]
    fn restamps_with_own_ssrc_seq_ts_and_keeps_timing() {
        let mut m = MediaSender::new(recording(10), cfg(), Duration::from_secs(1));
        let out = drain(&mut m);
        assert_eq!(out.len(), 10);
        for (i, (t, h)) in out.iter().enumerate() {
            assert_eq!(
                *t,
                Duration::from_secs(1) + Duration::from_millis(20 * i as u64)
            );
            assert_eq!(
                (h.ssrc, h.seq, h.ts, h.pt),
                (0xABCD, 100 + i as u16, 5000 + 160 * i as u32, 8)
            );
            assert_eq!(h.marker, i == 0);
        }
        assert!(m.is_finished());
    }

    #[test]
    fn loops_continue_sequence_and_timestamps() {
        let mut c = cfg();
        c.looping = true;
        c.max_duration = Some(Duration::from_millis(590));
        let mut m = MediaSender::new(recording(10), c, Duration::ZERO);
        let out = drain(&mut m);
        assert_eq!(out.len(), 30);
        for (i, (t, h)) in out.iter().enumerate() {
            assert_eq!(*t, Duration::from_millis(20 * i as u64));
            assert_eq!(h.seq, 100 + i as u16);
            assert_eq!(h.ts, 5000 + 160 * i as u32);
        }
    }

    #[test]
    fn impairments_are_seeded_and_roughly_as_asked() {
        let mut c = cfg();
        c.impair = Impairments {
            loss: 0.1,
            dup: 0.05,
            reorder: 0.05,
            jitter: Duration::from_millis(5),
        };
        let run = |c: MediaConfig| drain(&mut MediaSender::new(recording(2000), c, Duration::ZERO));
        let a = run(c.clone());
        let b = run(c.clone());
        assert_eq!(
            a.iter().map(|x| x.1.seq).collect::<Vec<_>>(),
            b.iter().map(|x| x.1.seq).collect::<Vec<_>>()
        );
        let n = a.len();
        assert!((1700..1950).contains(&n), "{n}");
        let mut seqs: Vec<u16> = a.iter().map(|x| x.1.seq).collect();
        let reordered = seqs
            .windows(2)
            .filter(|w| crate::rtp::seq_diff(w[0], w[1]) < 0)
            .count();
        assert!(reordered > 20, "{reordered}");
        seqs.sort();
        let before = seqs.len();
        seqs.dedup();
        assert!(before - seqs.len() > 40);
        c.seed = 2;
        assert_ne!(run(c).len(), 0);
    }
}
