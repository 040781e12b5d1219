//! Hostile input never panics: garbage RTP, garbage VP8 inside valid RTP, hostile
//! keyframe headers. libvpx's errors are values; the source waits for a keyframe and is
//! asked for one (rate-limited); the grid keeps encoding.

mod common;

use common::*;
use std::time::Duration;
use video::vp8::Packetizer;
use video_grid::picture::Yuv;
use video_grid::vpx::{Vp8Decoder, VpxError};
use video_grid::Error;

/// xorshift64*: deterministic garbage.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn rtp(seq: u16, ts: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, if marker { 0x80 | 96 } else { 96 }];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&0xBADu32.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

#[test]
fn garbage_rtp_is_an_error_value() {
    let mut grid = grid();
    grid.add_source(1, Duration::ZERO).unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for i in 0..3000u32 {
        let n = (rng.next() % 1500) as usize;
        let mut p = rng.bytes(n);
        if i % 2 == 0 && p.len() >= 2 {
            p[0] = 0x80 | (p[0] & 0x3F); // version 2, so that some parse as RTP
        }
        let _ = grid.handle_rtp(1, &p, Duration::from_millis(u64::from(i)));
    }
    assert!(matches!(
        grid.handle_rtp(1, &[0x80, 96], Duration::ZERO),
        Err(Error::Rtp(_))
    ));
    assert!(matches!(
        grid.handle_rtp(42, &rtp(1, 0, true, &[0x10, 0]), Duration::ZERO),
        Err(Error::UnknownSource(42))
    ));
    grid.handle_tick(Duration::from_secs(4)).unwrap();
}

#[test]
fn garbage_vp8_freezes_nothing_else_and_asks_for_a_keyframe() {
    let mut grid = grid();
    let mut viewer = Viewer::new();
    grid.add_source(1, Duration::ZERO).unwrap();
    grid.add_source(2, Duration::ZERO).unwrap();
    let mut good = Camera::new(0x2, Yuv::BLUE);
    let packetizer = Packetizer::new(300).unwrap();
    let mut rng = Rng(7);
    let mut seq = 0u16;
    let mut now = Duration::ZERO;
    let mut key = true;
    viewer.drain(&mut grid);
    viewer.keyframe_requests.clear();
    for i in 0..200u32 {
        // Source 1: random VP8 frames, about half claiming to be keyframes (some with the
        // start code and random, possibly huge, dimensions), cut into valid descriptors.
        let n = 1 + (rng.next() % 2000) as usize;
        let mut frame = rng.bytes(n);
        let keyframe = rng.next().is_multiple_of(2);
        frame[0] = if keyframe {
            frame[0] & !1
        } else {
            frame[0] | 1
        };
        if keyframe && n >= 10 && i % 3 == 0 {
            frame[3..6].copy_from_slice(&[0x9D, 0x01, 0x2A]);
        }
        let ts = video_grid::rtp_timestamp(now);
        let payloads = packetizer.packetize(&frame, i as u16, keyframe).unwrap();
        let last = payloads.len() - 1;
        for (j, p) in payloads.iter().enumerate() {
            grid.handle_rtp(1, &rtp(seq, ts, j == last, p), now)
                .unwrap();
            seq = seq.wrapping_add(1);
        }
        // Source 2: a real camera.
        for p in good.frame(now, key) {
            grid.handle_rtp(2, &p, now).unwrap();
        }
        key = false;
        grid.handle_tick(now).unwrap();
        viewer.drain(&mut grid);
        now += Duration::from_millis(66);
    }
    // The grid kept going and the real source is shown.
    assert_eq!(viewer.frames.len(), 200);
    let img = viewer.last();
    let layout = grid.layout();
    assert!(mean(img, centre(layout.tile(1).unwrap())).distance(Yuv::BLUE) < TOLERANCE);
    // Source 1 was asked for keyframes, never more often than every 500 ms.
    let asked = viewer.keyframe_requests.iter().filter(|&&s| s == 1).count();
    assert!(asked >= 2, "asked {asked} times");
    assert!(asked <= 200 * 66 / 500 + 1, "asked {asked} times");
    assert!(!viewer.keyframe_requests.contains(&2));
}

#[test]
fn a_keyframe_announcing_a_huge_picture_is_refused_before_allocation() {
    let mut d = Vp8Decoder::new().unwrap();
    let mut frame = vec![0x50, 0x2A, 0x00, 0x9D, 0x01, 0x2A, 0xFF, 0x3F, 0xFF, 0x3F];
    frame.extend_from_slice(&[0u8; 64]);
    assert_eq!(
        d.decode_image(&frame),
        Err(VpxError::PictureTooLarge {
            width: 16383,
            height: 16383
        })
    );
    // 4097x2304 is over the limit too (4096x2304 is the largest).
    frame[6..10].copy_from_slice(&[0x01, 0x10, 0x00, 0x09]);
    assert!(matches!(
        d.decode_image(&frame),
        Err(VpxError::PictureTooLarge { .. })
    ));
}
