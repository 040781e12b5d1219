#![no_main]
//! Core::handle_stream_data with arbitrary chunking: the first byte of the input seeds the
//! chunk sizes; the rest is the byte stream (NUL-separated messages are concatenated).
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&sizes, data)) = data.split_first() else { return };
    let mut core = common::core();
    let from = "198.18.0.10:40000".parse().unwrap();
    let stream: Vec<u8> = common::split(data).concat();
    let mut rest = &stream[..];
    let mut state = u32::from(sizes) | 1;
    let mut now = Duration::ZERO;
    let mut i = 0u8;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = 1 + (state as usize % 300).min(rest.len() - 1);
        let conn = u64::from(sizes & 1);
        core.handle_stream_data(conn, from, &rest[..n], now);
        rest = &rest[n..];
        common::drive(&mut core, now, i);
        now += Duration::from_millis(300);
        common::tick(&mut core, now);
        i = i.wrapping_add(1);
    }
    core.handle_stream_closed(0, now);
    common::drive(&mut core, now, 0);
});
