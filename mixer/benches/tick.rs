//! Tick cost of the mixer with realistic inputs.
//!
//! Inputs (all encoded with libopus, 20 ms, 48 kHz mono, 32 kbit/s, VOIP, FEC on, DTX off,
//! i.e. what a browser sends):
//! - speakers: a synthetic voiced signal (glottal-like harmonic series, f0 gliding
//!   100..220 Hz, 4 Hz syllable envelope, plus breath noise; about -20 dBov),
//! - listeners: room noise at about -60 dBov (white noise through libopus, not digital
//!   silence, so the packets are not tiny DTX frames).
//!
//! Every packet carries an RFC 6464 level (as browsers send) unless the scenario name says
//! `noext`, in which case the mixer must decode every packet to measure its level.
//! One iteration = one 20 ms tick of work: every participant's packet goes through
//! `handle_rtp`, then `handle_tick`, then all outputs are drained.
//!
//! Run: `cargo bench -p mixer --bench tick`. Participants per core = participants * 10 ms /
//! (time per iteration), i.e. keeping the tick work under 50 % of the 20 ms period.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mixer::{Codec, Mixer, MixerConfig, StreamParams};
use std::hint::black_box;
use std::time::Duration;

const LOOP_TICKS: usize = 50;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

fn speech(seed: u64, n: usize) -> Vec<i16> {
    let mut rng = Rng(seed);
    let mut phase = 0.0f64;
    (0..n)
        .map(|i| {
            let t = i as f64 / 48_000.0 + seed as f64 * 0.37;
            let f0 = 160.0 + 60.0 * (2.0 * std::f64::consts::PI * 0.7 * t).sin();
            phase += 2.0 * std::f64::consts::PI * f0 / 48_000.0;
            let voiced: f64 = (1..=12).map(|k| (k as f64 * phase).sin() / k as f64).sum();
            let env = (2.0 * std::f64::consts::PI * 2.0 * t).sin().abs();
            (3000.0 * env * voiced + 200.0 * rng.uniform()) as i16
        })
        .collect()
}

fn noise(seed: u64, n: usize) -> Vec<i16> {
    let mut rng = Rng(seed);
    (0..n).map(|_| (50.0 * rng.uniform()) as i16).collect()
}

/// Pre-encoded payloads (with RFC 6464 levels) for one participant.
fn encode(pcm: &[i16]) -> Vec<(Vec<u8>, u8)> {
    let mut enc =
        opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    enc.set_bitrate(opus::Bitrate::Bits(32_000)).unwrap();
    enc.set_inband_fec(true).unwrap();
    enc.set_packet_loss_perc(5).unwrap();
    pcm.chunks(960)
        .map(|c| {
            let level = (-mixer::level_dbov(c)).round().clamp(0.0, 127.0) as u8;
            (enc.encode_vec(c, 1500).unwrap(), level)
        })
        .collect()
}

/// One participant's looped input: (payload, RFC 6464 level) per tick.
type Loop = std::rc::Rc<Vec<(Vec<u8>, u8)>>;

struct Scenario {
    mixers: Vec<Mixer>,
    /// (room, participant, payload loop)
    feeds: Vec<(usize, u64, Loop)>,
    ext: bool,
    tick: u64,
    buf: Vec<u8>,
}

impl Scenario {
    /// `rooms` rooms, each with `speakers` talkers and `listeners` quiet participants.
    fn new(rooms: usize, speakers: usize, listeners: usize, ext: bool) -> Self {
        let speech_loops: Vec<_> = (0..3)
            .map(|s| std::rc::Rc::new(encode(&speech(s + 1, 960 * LOOP_TICKS))))
            .collect();
        let noise_loops: Vec<_> = (0..8)
            .map(|s| std::rc::Rc::new(encode(&noise(s + 100, 960 * LOOP_TICKS))))
            .collect();
        let params = StreamParams {
            codec: Codec::Opus,
            payload_type: 111,
            telephone_event_pt: Some(126),
            ptime_ms: 20,
            audio_level_ext_id: ext.then_some(1),
            send: true,
            recv: true,
        };
        let mut mixers = Vec::new();
        let mut feeds = Vec::new();
        for r in 0..rooms {
            let mut m = Mixer::new(MixerConfig {
                seed: r as u64,
                ..Default::default()
            });
            for i in 0..speakers + listeners {
                let id = i as u64 + 1;
                m.add_participant(id, params.clone(), Duration::ZERO)
                    .unwrap();
                let src = if i < speakers {
                    speech_loops[i % 3].clone()
                } else {
                    noise_loops[i % 8].clone()
                };
                feeds.push((r, id, src));
            }
            mixers.push(m);
        }
        let mut s = Self {
            mixers,
            feeds,
            ext,
            tick: 0,
            buf: Vec::with_capacity(1500),
        };
        // Warm up: fill jitter buffers, settle speaker detection.
        for _ in 0..100 {
            s.step();
        }
        s
    }

    fn step(&mut self) -> usize {
        let t = self.tick;
        let now = Duration::from_millis(20 * t);
        for (r, id, src) in &self.feeds {
            let (payload, level) = &src[t as usize % LOOP_TICKS];
            let b = &mut self.buf;
            b.clear();
            b.extend_from_slice(&[if self.ext { 0x90 } else { 0x80 }, 111]);
            b.extend_from_slice(&(t as u16).to_be_bytes());
            b.extend_from_slice(&((t as u32).wrapping_mul(960)).to_be_bytes());
            b.extend_from_slice(&(*id as u32).to_be_bytes());
            if self.ext {
                b.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0x10, *level, 0, 0]);
            }
            b.extend_from_slice(payload);
            self.mixers[*r].handle_rtp(*id, b, now + Duration::from_millis(3));
        }
        let mut outputs = 0;
        for m in &mut self.mixers {
            m.handle_tick(now + Duration::from_millis(20));
            while let Some(o) = m.poll_output() {
                black_box(&o);
                outputs += 1;
            }
        }
        self.tick += 1;
        outputs
    }
}

fn one_room(c: &mut Criterion) {
    let mut g = c.benchmark_group("one_room_3_speakers");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(6))
        .warm_up_time(Duration::from_secs(1));
    for listeners in [10usize, 100, 1000, 2000] {
        let mut s = Scenario::new(1, 3, listeners, true);
        g.bench_with_input(
            BenchmarkId::new("listeners", listeners),
            &listeners,
            |b, _| b.iter(|| s.step()),
        );
    }
    let mut s = Scenario::new(1, 3, 1000, false);
    g.bench_with_input(BenchmarkId::new("listeners_noext", 1000), &1000, |b, _| {
        b.iter(|| s.step())
    });
    g.finish();
}

fn five_person_rooms(c: &mut Criterion) {
    let mut g = c.benchmark_group("five_person_rooms_x20");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(6))
        .warm_up_time(Duration::from_secs(1));
    // 20 rooms = 100 participants per iteration.
    for (name, speakers, ext) in [
        ("1_speaker", 1, true),
        ("2_speakers", 2, true),
        ("1_speaker_noext", 1, false),
    ] {
        let mut s = Scenario::new(20, speakers, 5 - speakers, ext);
        g.bench_function(name, |b| b.iter(|| s.step()));
    }
    g.finish();
}

criterion_group!(benches, one_room, five_person_rooms);
criterion_main!(benches);
