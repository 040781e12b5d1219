//! Hostile input: a seeded loop over 100k random and mutated messages through every entry
//! point. Nothing may panic, every reply must be parseable, and the core must stay usable.

mod common;
use common::*;
use sip_core::{sdp, Core, Event};
use std::time::Duration;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\r\n\r\n",
    b":",
    b";",
    b",",
    b"<",
    b">",
    b"\"",
    b"@",
    b" ",
    b"\t",
    b"\n ",
    b"Content-Length: 99999999999999999999\r\n",
    b"l: 5\r\n",
    b"Via: SIP/2.0/UDP [::1]:5060;rport\r\n",
    b"To: <sip:a@b>;tag=",
    b"CSeq: 4294967296 INVITE\r\n",
    b"SIP/2.0",
    b"sip:",
    b"%00",
    b"\xff\xfe",
    b"m=audio 0 RTP/AVP",
    b"a=rtpmap:",
    b"c=IN IP4 0.0.0.0",
    b"Contact: *\r\n",
    b"\x00",
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut m = seed.to_vec();
    for _ in 0..=rng.below(6) {
        match rng.below(7) {
            0 if !m.is_empty() => {
                let i = rng.below(m.len());
                m[i] = rng.next() as u8;
            }
            1 => {
                let i = rng.below(m.len() + 1);
                let t = TOKENS[rng.below(TOKENS.len())];
                m.splice(i..i, t.iter().copied());
            }
            2 if !m.is_empty() => {
                let a = rng.below(m.len());
                let b = (a + rng.below(40)).min(m.len());
                m.drain(a..b);
            }
            3 => m.truncate(rng.below(m.len() + 1)),
            4 if !m.is_empty() => {
                // duplicate a slice
                let a = rng.below(m.len());
                let b = (a + rng.below(200)).min(m.len());
                let s = m[a..b].to_vec();
                let i = rng.below(m.len() + 1);
                m.splice(i..i, s);
            }
            5 => m = (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
            _ => {}
        }
    }
    m
}

fn seeds() -> Vec<Vec<u8>> {
    let tag = "0000000000000001";
    vec![
        invite("z9hG4bK-1", "h-1", 1, PCMU_OFFER).into_bytes(),
        invite("z9hG4bK-2", "h-2", 1, "").into_bytes(),
        in_dialog("ACK", "z9hG4bK-3", "h-1", 1, tag, "", "").into_bytes(),
        in_dialog("BYE", "z9hG4bK-4", "h-1", 2, tag, "", "").into_bytes(),
        in_dialog("INFO", "z9hG4bK-5", "h-1", 3, tag, "Content-Type: application/dtmf-relay\r\n", "Signal=1\r\n").into_bytes(),
        in_dialog("INVITE", "z9hG4bK-6", "h-1", 4, tag, "Content-Type: application/sdp\r\n", PCMU_OFFER).into_bytes(),
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 198.18.0.1:5060;branch=z9hG4bK0\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n".to_vec(),
        with_len("REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/UDP a:1;branch=z9hG4bK-r\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:a@x>\r\nCall-ID: r\r\nCSeq: 1 REGISTER\r\nContact: <sip:a@1.2.3.4>;expires=60, \"x\" <sip:b@5.6.7.8>\r\n", "").into_bytes(),
    ]
}

#[test]
fn hundred_thousand_mutated_messages_never_panic() {
    let mut rng = Rng(0x5EED_1234_5678_9ABC);
    let mut core = Core::new(config(3));
    let seeds = seeds();
    let mut now = Duration::ZERO;
    let mut replies = 0u64;
    for i in 0..100_000u32 {
        let seed = &seeds[rng.below(seeds.len())];
        let msg = mutate(&mut rng, seed);
        if i % 3 == 0 {
            // Stream with arbitrary chunking on one of a few connections.
            let conn = rng.below(4) as u64;
            let mut rest = &msg[..];
            while !rest.is_empty() {
                let n = 1 + rng.below(rest.len());
                core.handle_stream_data(conn, addr(ALICE), &rest[..n], now);
                rest = &rest[n..];
            }
            if rng.below(50) == 0 {
                core.handle_stream_closed(conn, now);
            }
        } else {
            core.handle_datagram(addr(ALICE), &msg, now);
        }
        if i % 7 == 0 {
            if let Ok(text) = std::str::from_utf8(&msg) {
                let _ = sdp::negotiate(text);
            }
        }
        while let Some(t) = core.poll_transmit() {
            replies += 1;
            if t.data != b"\r\n" {
                Msg::parse(&t); // whatever we send must be well-formed
            }
        }
        while let Some(e) = core.poll_event() {
            match e {
                Event::IncomingCall { call, offer, .. } | Event::ReInvite { call, offer } => {
                    let r = match offer.as_deref().map(sdp::negotiate) {
                        Some(Ok(_)) => core.accept(call, answer_for(PCMU_OFFER), now),
                        _ => core.reject(call, 488, now),
                    };
                    let _ = r;
                }
                Event::Confirmed { call, .. } if rng.below(2) == 0 => {
                    let _ = core.hangup(call, now);
                }
                _ => {}
            }
        }
        now += Duration::from_millis(rng.below(300) as u64);
        if let Some(t) = core.poll_timeout() {
            if t <= now {
                core.handle_timeout(now);
            }
        }
    }
    let s = core.stats();
    assert!(s.malformed_dropped + s.malformed_answered > 1000, "{s:?}");
    assert!(replies > 1000);
    // Still serves a clean call afterwards.
    core.handle_datagram(
        addr(ALICE),
        invite("z9hG4bK-final", "final", 1, PCMU_OFFER).as_bytes(),
        now,
    );
    let mut got_call = false;
    while let Some(e) = core.poll_event() {
        got_call |= matches!(e, Event::IncomingCall { .. });
    }
    assert!(got_call);
}
