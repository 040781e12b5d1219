#![no_main]
//! A two-participant `mixer::Mixer` (Opus PT 97 with RFC 6464 levels, PCMA PT 8; both with
//! telephone-event PT 101) fed arbitrary RTP and RTCP interleaved with 20 ms ticks and
//! irregular arrival times; every output is drained and checked: RTP v2 with one SSRC per
//! destination and increasing sequence numbers, RTCP version 2.
//!
//! Input: a list of operations, each one byte `b`:
//! * `b & 3 == 0`: RTP for participant `1 + (b >> 2 & 1)`, then `[len: u16 BE][len bytes]`;
//! * `b & 3 == 1`: RTCP for that participant, same framing;
//! * `b & 3 == 2`: one tick (time advances 20 ms);
//! * `b & 3 == 3`: time advances `b >> 3` ms (0..=31) without a tick.
use std::collections::HashMap;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mixer::{Codec, Mixer, MixerConfig, Output, StreamParams, TICK};

fn params(codec: Codec, pt: u8, level_ext: Option<u8>) -> StreamParams {
    StreamParams {
        codec,
        payload_type: pt,
        telephone_event_pt: Some(101),
        ptime_ms: 20,
        audio_level_ext_id: level_ext,
        send: true,
        recv: true,
    }
}

/// Per destination: (SSRC, last sequence number).
type Seen = HashMap<u64, (u32, u16)>;

fn drain(m: &mut Mixer, seen: &mut Seen) {
    while let Some(out) = m.poll_output() {
        match out {
            Output::Rtp { to, packet } => {
                assert!(to == 1 || to == 2, "RTP to unknown participant {to}");
                assert!(
                    packet.len() >= 12 && packet[0] >> 6 == 2,
                    "bad RTP {packet:?}"
                );
                let seq = u16::from_be_bytes([packet[2], packet[3]]);
                let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
                if let Some((s, last)) = seen.insert(to, (ssrc, seq)) {
                    assert_eq!(s, ssrc, "output SSRC changed for {to}");
                    let step = seq.wrapping_sub(last);
                    assert!((1..0x8000).contains(&step), "seq {last} -> {seq} for {to}");
                }
            }
            Output::Rtcp { to, packet } => {
                assert!(to == 1 || to == 2, "RTCP to unknown participant {to}");
                assert!(
                    packet.len() >= 8 && packet[0] >> 6 == 2,
                    "bad RTCP {packet:?}"
                );
            }
            Output::Event(_) => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut m = Mixer::new(MixerConfig {
        seed: 7,
        opus_complexity: 0,
        ..Default::default()
    });
    let mut now = Duration::from_millis(1000);
    m.add_participant(1, params(Codec::Opus, 97, Some(1)), now)
        .unwrap();
    m.add_participant(2, params(Codec::Pcma, 8, None), now)
        .unwrap();
    let mut seen = Seen::new();
    let mut rest = data;
    let mut ticks = 0u32;
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        let who = 1 + u64::from(b >> 2 & 1);
        match b & 3 {
            k @ (0 | 1) => {
                if rest.len() < 2 {
                    break;
                }
                let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
                let pkt = &rest[2..2 + len];
                rest = &rest[2 + len..];
                if k == 0 {
                    m.handle_rtp(who, pkt, now);
                } else {
                    m.handle_rtcp(who, pkt, now);
                }
            }
            2 => {
                // Bounded: a tick encodes audio, the expensive part.
                if ticks == 500 {
                    continue;
                }
                ticks += 1;
                now += TICK;
                m.handle_tick(now);
            }
            _ => now += Duration::from_millis(u64::from(b >> 3)),
        }
        drain(&mut m, &mut seen);
    }
    m.remove_participant(1, now).unwrap();
    drain(&mut m, &mut seen);
    m.remove_participant(2, now).unwrap();
    drain(&mut m, &mut seen);
});
