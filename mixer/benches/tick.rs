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
//!
//! Times are the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall time:
//! on a shared machine wall time also counts the time other processes held the core.
//! Cache and memory-bandwidth contention from neighbours still shows in the figures.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mixer::{Codec, Mixer, MixerConfig, StreamParams};
use rand_core::{Rng as _, SeedableRng};
use rand_xoshiro::SplitMix64;
use std::hint::black_box;
use std::time::Duration;

const LOOP_TICKS: usize = 50;

#[path = "support/cpu_time.rs"]
mod cpu_time;
use cpu_time::CpuTime;

struct Rng(SplitMix64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

fn speech(seed: u64, n: usize) -> Vec<i16> {
    let mut rng = Rng(SplitMix64::seed_from_u64(seed));
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
    let mut rng = Rng(SplitMix64::seed_from_u64(seed));
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

/// G.711 mu-law payloads (no level: SIP phones rarely send RFC 6464).
fn encode_pcmu(pcm: &[i16]) -> Vec<(Vec<u8>, u8)> {
    pcm.chunks(960)
        .map(|c| {
            (
                c.iter()
                    .step_by(6)
                    .map(|&x| mixer::g711::linear_to_ulaw(x))
                    .collect(),
                127,
            )
        })
        .collect()
}

/// Who the quiet participants are.
#[derive(Clone, Copy, PartialEq)]
enum Listeners {
    /// Opus with RFC 6464 levels (browsers).
    OpusExt,
    /// Opus without levels: every packet must be decoded to measure its level.
    OpusNoExt,
    /// PCMU without levels (SIP phones).
    Pcmu,
}

struct Scenario {
    mixers: Vec<Mixer>,
    /// (room, participant, payload loop, payload type, timestamp step)
    feeds: Vec<(usize, u64, Loop, u8, u32)>,
    ext: bool,
    tick: u64,
    buf: Vec<u8>,
}

impl Scenario {
    /// `rooms` rooms, each with `speakers` talkers and `listeners` quiet participants.
    fn new(
        rooms: usize,
        speakers: usize,
        listeners: usize,
        kind: Listeners,
        complexity: i32,
    ) -> Self {
        let ext = kind == Listeners::OpusExt;
        let speech_loops: Vec<_> = (0..3)
            .map(|s| std::rc::Rc::new(encode(&speech(s + 1, 960 * LOOP_TICKS))))
            .collect();
        let noise_loops: Vec<_> = (0..8)
            .map(|s| {
                let pcm = noise(s + 100, 960 * LOOP_TICKS);
                std::rc::Rc::new(if kind == Listeners::Pcmu {
                    encode_pcmu(&pcm)
                } else {
                    encode(&pcm)
                })
            })
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
                opus_complexity: complexity,
                ..Default::default()
            });
            for i in 0..speakers + listeners {
                let id = i as u64 + 1;
                let (src, pt, step) = if i < speakers {
                    (speech_loops[i % 3].clone(), 111, 960)
                } else if kind == Listeners::Pcmu {
                    (noise_loops[i % 8].clone(), 0, 160)
                } else {
                    (noise_loops[i % 8].clone(), 111, 960)
                };
                let mut params = params.clone();
                if pt == 0 {
                    params.codec = Codec::Pcmu;
                    params.payload_type = 0;
                }
                m.add_participant(id, params, Duration::ZERO).unwrap();
                feeds.push((r, id, src, pt, step));
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
        for (r, id, src, pt, step) in &self.feeds {
            let (payload, level) = &src[t as usize % LOOP_TICKS];
            let b = &mut self.buf;
            b.clear();
            b.extend_from_slice(&[if self.ext { 0x90 } else { 0x80 }, *pt]);
            b.extend_from_slice(&(t as u16).to_be_bytes());
            b.extend_from_slice(&((t as u32).wrapping_mul(*step)).to_be_bytes());
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

fn one_room(c: &mut Criterion<CpuTime>) {
    let mut g = c.benchmark_group("one_room_3_speakers");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(6))
        .warm_up_time(Duration::from_secs(1));
    for listeners in [10usize, 100, 1000, 2000] {
        let mut s = Scenario::new(1, 3, listeners, Listeners::OpusExt, 5);
        g.bench_with_input(
            BenchmarkId::new("opus_ext", listeners),
            &listeners,
            |b, _| b.iter(|| s.step()),
        );
    }
    for listeners in [100usize, 1000] {
        let mut s = Scenario::new(1, 3, listeners, Listeners::OpusNoExt, 5);
        g.bench_with_input(
            BenchmarkId::new("opus_noext", listeners),
            &listeners,
            |b, _| b.iter(|| s.step()),
        );
        let mut s = Scenario::new(1, 3, listeners, Listeners::Pcmu, 5);
        g.bench_with_input(
            BenchmarkId::new("pcmu_noext", listeners),
            &listeners,
            |b, _| b.iter(|| s.step()),
        );
    }
    g.finish();
}

fn five_person_rooms(c: &mut Criterion<CpuTime>) {
    let mut g = c.benchmark_group("five_person_rooms_x20");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(6))
        .warm_up_time(Duration::from_secs(1));
    // 20 rooms = 100 participants per iteration.
    for (name, speakers, kind, complexity) in [
        ("1_speaker_ext_c5", 1, Listeners::OpusExt, 5),
        ("2_speakers_ext_c5", 2, Listeners::OpusExt, 5),
        ("1_speaker_noext_c5", 1, Listeners::OpusNoExt, 5),
        ("1_speaker_ext_c1", 1, Listeners::OpusExt, 1),
        ("2_speakers_ext_c1", 2, Listeners::OpusExt, 1),
    ] {
        let mut s = Scenario::new(20, speakers, 5 - speakers, kind, complexity);
        g.bench_function(name, |b| b.iter(|| s.step()));
    }
    g.finish();
}

/// Reference points: one libopus call on this machine, same settings as the mixer.
fn codec_reference(c: &mut Criterion<CpuTime>) {
    let pcm = speech(1, 960 * LOOP_TICKS);
    let packets = encode(&pcm);
    let mut g = c.benchmark_group("libopus_20ms");
    g.sample_size(30)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for complexity in [1, 5] {
        let mut enc =
            opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
        enc.set_complexity(complexity).unwrap();
        enc.set_bitrate(opus::Bitrate::Bits(32_000)).unwrap();
        enc.set_inband_fec(true).unwrap();
        let mut i = 0;
        let mut out = vec![0u8; 1500];
        g.bench_function(format!("encode_speech_c{complexity}"), |b| {
            b.iter(|| {
                i = (i + 1) % LOOP_TICKS;
                enc.encode(&pcm[i * 960..(i + 1) * 960], &mut out).unwrap()
            })
        });
    }
    let mut dec = opus::Decoder::new(48_000, opus::Channels::Mono).unwrap();
    let mut out = vec![0i16; 960];
    let mut i = 0;
    g.bench_function("decode_speech", |b| {
        b.iter(|| {
            i = (i + 1) % LOOP_TICKS;
            dec.decode(&packets[i].0, &mut out, false).unwrap()
        })
    });
    g.finish();
}

/// What a promoted backup does per room at takeover (issue 10, point 6): rebuild the mixer
/// from the replicated snapshot, then run the first tick. Five-person rooms, every
/// participant on one codec (G.711 for SIP phones, Opus for browsers), 100 ticks of media
/// before the snapshot is taken.
fn resume(c: &mut Criterion<CpuTime>) {
    let mut g = c.benchmark_group("resume_five_person_room");
    g.sample_size(30)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for kind in [Listeners::Pcmu, Listeners::OpusNoExt] {
        let name = if kind == Listeners::Pcmu {
            "pcmu"
        } else {
            "opus"
        };
        // Scenario's speakers are Opus: here every participant uses the same codec.
        let speakers = usize::from(kind != Listeners::Pcmu);
        let s = Scenario::new(1, speakers, 5 - speakers, kind, 5);
        let snap = s.mixers[0].export_state();
        let at = Duration::from_millis(20 * (s.tick + 1));
        g.bench_function(format!("{name}_from_snapshot"), |b| {
            b.iter(|| Mixer::from_snapshot(black_box(&snap), at).unwrap())
        });
        if kind == Listeners::Pcmu {
            // As a hot-standby backup does: the resamplers built ahead (mixer::prewarm_g711).
            g.bench_function(format!("{name}_from_snapshot_prewarmed"), |b| {
                b.iter_batched(
                    || mixer::prewarm_g711(5).unwrap(),
                    |_| Mixer::from_snapshot(black_box(&snap), at).unwrap(),
                    criterion::BatchSize::PerIteration,
                )
            });
        }
        g.bench_function(format!("{name}_from_snapshot_and_first_tick"), |b| {
            b.iter(|| {
                let mut m = Mixer::from_snapshot(black_box(&snap), at).unwrap();
                m.handle_tick(at);
                let mut n = 0;
                while let Some(o) = m.poll_output() {
                    black_box(&o);
                    n += 1;
                }
                n
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(CpuTime);
    targets = codec_reference, one_room, five_person_rooms, resume
}
criterion_main!(benches);
