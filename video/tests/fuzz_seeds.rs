//! Writes the committed seeds of the `vp8_descriptor` and `video_switcher` fuzz targets
//! (`fuzz/seeds/`): `cargo test -p video --test fuzz_seeds -- --ignored write_fuzz_seeds`.
//! The input formats are documented in `fuzz/fuzz_targets/{vp8_descriptor,video_switcher}.rs`.

mod common;

use common::*;
use std::path::PathBuf;
use video::feedback;
use video::vp8::{Descriptor, Packetizer};

fn dir(target: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A `vp8_descriptor` record.
fn record(out: &mut Vec<u8>, flags: u8, payload: &[u8]) {
    out.push(payload.len().min(255) as u8);
    out.push(flags);
    out.extend_from_slice(&payload[..payload.len().min(255)]);
}

/// The first operation byte of `kind` for participant `who` with `pred` on the byte.
fn op(kind: u8, who: u64, pred: impl Fn(u8) -> bool) -> u8 {
    (0..=255u8)
        .find(|&b| b & 7 == kind && 1 + u64::from(b >> 3) % 3 == who && pred(b))
        .unwrap()
}

fn framed(out: &mut Vec<u8>, kind: u8, who: u64, datagram: &[u8]) {
    out.push(op(kind, who, |_| true));
    out.extend_from_slice(&(datagram.len() as u16).to_be_bytes());
    out.extend_from_slice(datagram);
}

#[test]
#[ignore]
fn write_fuzz_seeds() {
    // vp8_descriptor: every descriptor shape, then a frame reordered.
    let key = frame_data(true, 1, 0, 20);
    let inter = frame_data(false, 1, 1, 20);
    let mut shapes = vec![0x12, 0x34, 7, 40];
    let with = |d: Descriptor, data: &[u8]| {
        let mut p = Vec::new();
        d.write(&mut p);
        p.extend_from_slice(data);
        p
    };
    let start = Descriptor {
        start_of_partition: true,
        ..Default::default()
    };
    record(&mut shapes, 0x31, &with(start, &key));
    let seven = Descriptor {
        picture_id: Some(0x55),
        ..start
    };
    record(&mut shapes, 0x11, &with(seven, &inter));
    let full = Descriptor {
        non_reference: true,
        picture_id: Some(0x1234),
        long_picture_id: true,
        tl0_pic_idx: Some(9),
        tid: Some(1),
        layer_sync: true,
        key_idx: Some(3),
        ..start
    };
    record(&mut shapes, 0x11, &with(full, &inter));
    let cont = Descriptor {
        partition_index: 2,
        picture_id: Some(0x1234),
        long_picture_id: true,
        ..Default::default()
    };
    record(&mut shapes, 0x21, &with(cont, &inter[3..]));
    record(&mut shapes, 0x01, &[0x90, 0x00, 0x51, 0x00]); // X with no fields
    std::fs::write(dir("vp8_descriptor").join("descriptor_shapes.bin"), shapes).unwrap();

    let mut frame = vec![0x00, 0x10, 0x2A, 120];
    let payloads = Packetizer::new(40)
        .unwrap()
        .packetize(&frame_data(true, 2, 0, 100), 300, true)
        .unwrap();
    let n = payloads.len();
    // Packets 1, 0, 3, 2, 4, 5, ...: each record's flags give the step from the previous one.
    let order: Vec<usize> = [1, 0, 3, 2].into_iter().chain(4..n).collect();
    let mut prev = 0;
    for &k in &order {
        let marker = if k == n - 1 { 0x20 } else { 0 };
        let step = if k >= prev {
            (k - prev) as u8
        } else {
            8 | (prev - k) as u8
        };
        record(&mut frame, marker | step, &payloads[k]);
        prev = k;
    }
    std::fs::write(dir("vp8_descriptor").join("frame_reordered.bin"), frame).unwrap();

    // video_switcher: a call through the switcher's paths.
    let mut call = Vec::new();
    call.push(op(4, 1, |b| b & 0x80 != 0)); // 1: keyframe
    call.push(op(4, 2, |b| b & 0x80 != 0)); // 2: keyframe
    for _ in 0..3 {
        call.push(op(2, 1, |b| b >> 3 == 30)); // +30 ms
        call.push(op(4, 1, |b| b & 0x80 == 0));
        call.push(op(4, 2, |b| b & 0x80 == 0));
    }
    call.push(op(3, 2, |_| true)); // 2 speaks
    call.push(op(4, 2, |b| b & 0x80 == 0));
    call.push(op(4, 2, |b| b & 0x80 != 0));
    call.extend([op(5, 3, |b| b >> 6 == 0), 0]); // 3: PLI
    call.extend([op(5, 3, |b| b >> 6 == 1), 5]); // 3: FIR 5
    call.extend([op(5, 3, |b| b >> 6 == 2), 2]); // 3: NACK
    call.extend([op(5, 1, |b| b >> 6 == 3), 200]); // 1: REMB
                                                   // 40 x (+31 ms, timers): kind 2, 31 << 3 | 2.
    call.extend(std::iter::repeat_n(0xFA, 40));
    call.push(op(6, 1, |_| true)); // takeover
    call.push(op(3, 1, |_| true)); // 1 speaks
    call.push(op(4, 1, |b| b & 0x80 != 0));
    call.push(op(7, 2, |_| true)); // 2 leaves and rejoins
    call.push(op(4, 2, |b| b & 0x80 != 0));
    std::fs::write(dir("video_switcher").join("call.bin"), call).unwrap();

    // Raw datagrams: participant 1's camera (SSRC 0x1111, as announced), a NACK from 2.
    let mut raw = Vec::new();
    let mut cam = Sender::new(0x1111, 1);
    let mut t = ms(0);
    for _ in 0..4 {
        for p in cam.frame(t) {
            framed(&mut raw, 0, 1, &p);
        }
        raw.push(op(2, 1, |b| b >> 3 == 30));
        t += FRAME;
    }
    framed(&mut raw, 1, 2, &feedback::nack(0xAB, 1, &[1, 2, 3]));
    framed(&mut raw, 1, 3, &feedback::pli(0xAB, 1));
    std::fs::write(dir("video_switcher").join("raw_datagrams.bin"), raw).unwrap();
}
