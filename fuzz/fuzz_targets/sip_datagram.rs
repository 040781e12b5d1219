#![no_main]
//! Core::handle_datagram on arbitrary bytes (messages separated by three NUL bytes).
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

mod common;

fuzz_target!(|data: &[u8]| {
    let mut core = common::core();
    let from = "198.18.0.10:5061".parse().unwrap();
    let mut now = Duration::ZERO;
    for (i, msg) in common::split(data).into_iter().enumerate() {
        core.handle_datagram(from, msg, now);
        common::drive(&mut core, now, i as u8);
        now += Duration::from_millis(700);
        common::tick(&mut core, now);
        common::drive(&mut core, now, i as u8);
    }
    core.handle_timeout(now + Duration::from_secs(40));
    common::drive(&mut core, now, 0);
});
