#![no_main]
//! sip-core's entry points for untrusted bytes, one message at a time and without call flows
//! or timers (those are `sip_datagram` / `sip_stream`), so that the parsing itself gets
//! millions of executions: `Core::handle_datagram` (message parse, typed Via/From/To/Call-ID/
//! CSeq/Contact decoding, the 400/416/513 answers built from requests that do not parse) and
//! `Core::handle_stream_data` (RFC 3261 18.3 framing by Content-Length, CRLF keep-alives,
//! oversized and bad-length heads), each on a fresh core. Everything emitted must be a
//! well-formed UTF-8 message.
//!
//! Input: `[cut: u8][bytes]`; the bytes are one datagram, and one TCP stream delivered in two
//! chunks cut at `cut * len / 256`.
use libfuzzer_sys::fuzz_target;
use sip_core::{Config, Core};
use std::time::Duration;

fn core() -> Core {
    Core::new(Config {
        local_addr: "198.18.0.1:5060".parse().unwrap(),
        user_agent: "fuzz".into(),
        max_message_size: 4096,
        seed: 1,
    })
}

fn drain(core: &mut Core) {
    while core.poll_event().is_some() {}
    while let Some(t) = core.poll_transmit() {
        assert!(t.data.len() < 64 * 1024);
        let text = std::str::from_utf8(&t.data).expect("emitted messages are UTF-8");
        assert!(text == "\r\n" || text.contains("\r\n\r\n"), "{text:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let from = "198.18.0.10:5061".parse().unwrap();
    let now = Duration::from_secs(1);

    let mut udp = core();
    udp.handle_datagram(from, bytes, now);
    drain(&mut udp);

    let mut tcp = core();
    let at = usize::from(cut) * bytes.len() / 256;
    tcp.handle_stream_data(7, from, &bytes[..at], now);
    drain(&mut tcp);
    tcp.handle_stream_data(7, from, &bytes[at..], now);
    drain(&mut tcp);
    tcp.handle_stream_closed(7, now);
    drain(&mut tcp);
});
