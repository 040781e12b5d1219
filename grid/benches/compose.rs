//! Cost of the grid compositor's three stages, per frame:
//!
//! - `decode_320x240`: one source interframe decoded (libvpx) and copied out as I420;
//! - `compose_4_tiles_640x360`: four 320x240 pictures scaled (bilinear), letterboxed and
//!   drawn with the speaker's border into a 640x360 canvas;
//! - `encode_640x360`: the composed canvas encoded (libvpx real time, cpu-used 12, 600
//!   kbit/s), one frame, shared by every viewer of the layout.
//!
//! Sources are moving pictures (a gradient shifted every frame) so that the codec works.
//! Run: `cargo bench -p video-grid --bench compose`. Times are the benchmark thread's CPU
//! time (`CLOCK_THREAD_CPUTIME_ID`), not wall time.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use video_grid::compose::{compose, Layout};
use video_grid::picture::I420;
use video_grid::vpx::{EncoderConfig, Vp8Decoder, Vp8Encoder};

#[path = "../../mixer/benches/support/cpu_time.rs"]
mod cpu_time;
use cpu_time::CpuTime;

/// A moving diagonal gradient, different for each `seed` and frame `t`.
fn picture(w: u32, h: u32, seed: u32, t: u32) -> I420 {
    let y: Vec<u8> = (0..h)
        .flat_map(|r| (0..w).map(move |c| ((c + r + 3 * t + 40 * seed) % 220 + 16) as u8))
        .collect();
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let u = vec![(100 + 30 * seed) as u8; (cw * ch) as usize];
    let v = vec![(160 - 20 * seed) as u8; (cw * ch) as usize];
    I420::from_planes(w, h, y, u, v).unwrap()
}

fn bench(c: &mut Criterion<CpuTime>) {
    // Decode: a 320x240 stream of 60 frames, decoded in a loop (the keyframe re-decoded
    // whenever the loop wraps).
    let mut enc = Vp8Encoder::new(EncoderConfig {
        width: 320,
        height: 240,
        bitrate_kbps: 300,
        ..Default::default()
    })
    .unwrap();
    let stream: Vec<Vec<u8>> = (0..60)
        .map(|t| {
            enc.encode(&picture(320, 240, 0, t), t == 0)
                .unwrap()
                .remove(0)
                .data
        })
        .collect();
    let mut dec = Vp8Decoder::new().unwrap();
    let mut i = 0;
    c.bench_function("decode_320x240", |b| {
        b.iter(|| {
            let d = dec.decode_image(&stream[i % stream.len()]).unwrap();
            i += 1;
            black_box(d)
        })
    });

    let sources: Vec<I420> = (0..4).map(|s| picture(320, 240, s, 0)).collect();
    let tiles: Vec<Option<&I420>> = sources.iter().map(Some).collect();
    let layout = Layout::for_tiles(4, 640, 360).unwrap();
    let mut canvas = I420::new(640, 360).unwrap();
    c.bench_function("compose_4_tiles_640x360", |b| {
        b.iter(|| {
            compose(&mut canvas, &layout, black_box(&tiles), Some(1));
            black_box(&canvas);
        })
    });

    // Encode: 30 different composed canvases in turn (motion in every tile).
    let canvases: Vec<I420> = (0..30)
        .map(|t| {
            let srcs: Vec<I420> = (0..4).map(|s| picture(320, 240, s, t)).collect();
            let tiles: Vec<Option<&I420>> = srcs.iter().map(Some).collect();
            let mut out = I420::new(640, 360).unwrap();
            compose(&mut out, &layout, &tiles, Some(1));
            out
        })
        .collect();
    let mut enc = Vp8Encoder::new(EncoderConfig::default()).unwrap();
    let mut t = 0;
    c.bench_function("encode_640x360", |b| {
        b.iter(|| {
            let f = enc.encode(&canvases[t % canvases.len()], t == 0).unwrap();
            t += 1;
            black_box(f)
        })
    });
}

fn config() -> Criterion<CpuTime> {
    Criterion::default()
        .with_measurement(CpuTime)
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(4))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}
criterion_main!(benches);
