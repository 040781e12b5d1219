//! Cost of the voice-switched forwarder.
//!
//! - `forward/N`: one source packet (1200-octet VP8 payload of an interframe, 15-bit
//!   picture ID) forwarded to N receivers: `handle_rtp` (parse, sequence window, cache copy,
//!   N rewrites) and draining the N output packets.
//! - `switch/N`: a speaker change and the new speaker's keyframe packet switching N
//!   receivers: `set_speaker` (targets, FIR), then `handle_rtp` of the keyframe's first
//!   packet (N new mappings, N forwarded packets), outputs drained. Speakers alternate
//!   between two sources, so every iteration switches all N receivers.
//!
//! Run: `cargo bench -p video --bench forward`. Times are the benchmark thread's CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`), not wall time: on a shared machine wall time also counts
//! the time other processes held the core.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;
use video::vp8::Packetizer;
use video::{Switcher, SwitcherConfig, VideoParams};

#[path = "../../mixer/benches/support/cpu_time.rs"]
mod cpu_time;
use cpu_time::CpuTime;

/// A camera's packets: 1200-octet payloads, consecutive sequence numbers. The packets are
/// built once and their header fields and picture ID updated in place, so that making
/// them costs (almost) nothing in the measured loop.
struct Camera {
    ssrc: u32,
    seq: u16,
    pic: u16,
    key: Vec<u8>,
    inter: Vec<u8>,
}

impl Camera {
    fn new(ssrc: u32) -> Camera {
        let build = |keyframe: bool| {
            let mut frame = if keyframe {
                vec![0x50, 0x2A, 0x00, 0x9D, 0x01, 0x2A, 0x80, 0x02, 0xE0, 0x01]
            } else {
                vec![0x51, 0x2A, 0x00]
            };
            frame.resize(1196, 0x5A);
            let payload = Packetizer::new(1200)
                .unwrap()
                .packetize(&frame, 0, keyframe)
                .unwrap()
                .remove(0);
            let mut p = vec![0x80, 0x80 | 96, 0, 0, 0, 0, 0, 0];
            p.extend_from_slice(&ssrc.to_be_bytes());
            p.extend_from_slice(&payload);
            p
        };
        Camera {
            ssrc,
            seq: 1,
            pic: 1,
            key: build(true),
            inter: build(false),
        }
    }

    fn packet(&mut self, keyframe: bool, now: Duration) -> &[u8] {
        let ts = (now.as_micros() as u32).wrapping_mul(90) / 1000;
        let p = if keyframe {
            &mut self.key
        } else {
            &mut self.inter
        };
        p[2..4].copy_from_slice(&self.seq.to_be_bytes());
        p[4..8].copy_from_slice(&ts.to_be_bytes());
        // Descriptor: X, I, then the 15-bit picture ID at payload offsets 2..4.
        p[14..16].copy_from_slice(&(0x8000 | self.pic).to_be_bytes());
        self.seq = self.seq.wrapping_add(1);
        self.pic = (self.pic + 1) & 0x7FFF;
        debug_assert_eq!(u32::from_be_bytes([p[8], p[9], p[10], p[11]]), self.ssrc);
        p
    }
}

/// Sources 1 and 2, receivers 10.. (receive only).
fn room(receivers: u64) -> (Switcher, [Camera; 2]) {
    let mut sw = Switcher::new(SwitcherConfig {
        seed: 3,
        ..Default::default()
    });
    let src = |ssrc| VideoParams {
        payload_type: 96,
        source_ssrc: Some(ssrc),
        ..Default::default()
    };
    sw.add_participant(1, src(0x1111), Duration::ZERO).unwrap();
    sw.add_participant(2, src(0x2222), Duration::ZERO).unwrap();
    for r in 0..receivers {
        let p = VideoParams {
            recv: false,
            ..src(0)
        };
        sw.add_participant(10 + r, p, Duration::ZERO).unwrap();
    }
    sw.set_speaker(1, Duration::ZERO).unwrap();
    let mut cams = [Camera::new(0x1111), Camera::new(0x2222)];
    let now = Duration::from_millis(1);
    let k = cams[0].packet(true, now);
    sw.handle_rtp(1, k, now);
    while sw.poll_output().is_some() {}
    (sw, cams)
}

fn forward(c: &mut Criterion<CpuTime>) {
    let mut g = c.benchmark_group("forward");
    for n in [10u64, 100] {
        g.throughput(Throughput::Elements(n));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            let (mut sw, mut cams) = room(n);
            let mut now = Duration::from_millis(10);
            b.iter(|| {
                now += Duration::from_micros(100);
                let p = cams[0].packet(false, now);
                sw.handle_rtp(1, black_box(p), now);
                let mut out = 0;
                while let Some(o) = sw.poll_output() {
                    black_box(&o);
                    out += 1;
                }
                assert!(out >= n);
            })
        });
    }
    g.finish();
}

fn switch(c: &mut Criterion<CpuTime>) {
    let mut g = c.benchmark_group("switch");
    for n in [10u64, 100] {
        g.throughput(Throughput::Elements(n));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            let (mut sw, mut cams) = room(n);
            let mut now = Duration::from_millis(10);
            let mut speaker = 1usize;
            b.iter(|| {
                // Past the keyframe-request rate limit, so every switch sends its FIR.
                now += Duration::from_millis(400);
                speaker = 3 - speaker;
                sw.set_speaker(speaker as u64, now).unwrap();
                let p = cams[speaker - 1].packet(true, now);
                sw.handle_rtp(speaker as u64, black_box(p), now);
                let mut out = 0;
                while let Some(o) = sw.poll_output() {
                    black_box(&o);
                    out += 1;
                }
                assert!(out > n);
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(CpuTime);
    targets = forward, switch
}
criterion_main!(benches);
