#![no_main]
//! A three-participant `video::Switcher` room fed arbitrary RTP and RTCP, interleaved with
//! well-formed VP8 frames from simulated cameras, receivers' feedback, speaker changes,
//! time, membership changes and takeovers by a standby built from the current snapshot.
//! Participant 1 sends and receives (FIR, SSRC announced), 2 sends and receives (PLI, its
//! own payload type), 3 only receives.
//!
//! Input: a list of operations, each one byte `b`, `who = 1 + (b >> 3) % 3`:
//! * `b & 7 == 0`: RTP datagram from `who`, then `[len: u16 BE][len bytes]`;
//! * `1`: RTCP datagram from `who`, same framing;
//! * `2`: time advances `b >> 3` ms (0..=31), then the due timers run;
//! * `3`: `who` becomes the speaker;
//! * `4`: `who`'s camera sends a frame (a keyframe when `b & 0x80`), in 1..=3 packets;
//! * `5`: `who` sends feedback about our stream to it, then `[arg: u8]`: PLI, FIR number
//!   `arg`, NACK of the packets `arg` and `arg + 1` behind the last it got, or REMB;
//! * `6`: the standby takes over from the current snapshot (at most 8 times);
//! * `7`: `who` leaves and rejoins.
//!
//! Invariants: every RTP packet goes to a receiver, is RTP version 2 with its SSRC (one per
//! receiver, kept across takeovers) and its payload type, and carries a VP8 descriptor;
//! among the last 16 packets a node sent a receiver, a sequence number is never repeated
//! with other bytes (retransmissions repeat the same bytes); every RTCP packet parses.
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use video::feedback;
use video::vp8::{Descriptor, Packetizer};
use video::{Output, Switcher, SwitcherConfig, VideoParams};

fn params(id: u64) -> VideoParams {
    VideoParams {
        payload_type: if id == 2 { 100 } else { 96 },
        send: true,
        recv: id != 3,
        source_ssrc: (id == 1).then_some(0x1111),
        fir: id == 1,
        nack: true,
    }
}

/// A camera: sequence number, picture ID, frames sent.
struct Camera {
    ssrc: u32,
    seq: u16,
    pic: u16,
    frames: u32,
}

/// Per receiver: the last 16 (seq, packet) it got.
type Seen = HashMap<u64, VecDeque<(u16, Vec<u8>)>>;

fn drain(sw: &mut Switcher, seen: &mut Seen) {
    while let Some(out) = sw.poll_output() {
        match out {
            Output::Rtp { to, packet } => {
                assert!((1..=3).contains(&to), "RTP to {to}");
                assert!(packet.len() > 12 && packet[0] == 0x80, "bad RTP {packet:?}");
                assert_eq!(packet[1] & 0x7F, params(to).payload_type);
                let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
                assert_eq!(Some(ssrc), sw.output_ssrc(to));
                Descriptor::parse(&packet[12..]).expect("VP8 descriptor");
                let seq = u16::from_be_bytes([packet[2], packet[3]]);
                let last = seen.entry(to).or_default();
                if let Some((_, other)) = last.iter().find(|(s, _)| *s == seq) {
                    assert_eq!(other, &packet, "seq {seq} to {to} reused");
                }
                if last.len() == 16 {
                    last.pop_front();
                }
                last.push_back((seq, packet));
            }
            Output::Rtcp { to, packet } => {
                assert!((1..=3).contains(&to), "RTCP to {to}");
                feedback::parse(&packet).expect("our RTCP parses");
            }
        }
    }
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if rest.len() < n {
        return None;
    }
    let (a, b) = rest.split_at(n);
    *rest = b;
    Some(a)
}

fuzz_target!(|data: &[u8]| {
    let config = SwitcherConfig {
        seed: 11,
        ..Default::default()
    };
    let mut now = Duration::from_millis(1000);
    let mut sw = Switcher::new(config);
    for id in 1..=3 {
        sw.add_participant(id, params(id), now).unwrap();
    }
    let mut cams: HashMap<u64, Camera> = (1..=2)
        .map(|id| {
            (
                id,
                Camera {
                    ssrc: 0x1111 * id as u32,
                    seq: 100 * id as u16,
                    pic: 7,
                    frames: 0,
                },
            )
        })
        .collect();
    let packetizer = Packetizer::new(60).unwrap();
    let mut seen = Seen::new();
    let mut takeovers = 0;
    let mut rest = data;
    drain(&mut sw, &mut seen);
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        let who = 1 + u64::from(b >> 3) % 3;
        match b & 7 {
            k @ (0 | 1) => {
                let Some(len) = take(&mut rest, 2) else { break };
                let len = usize::from(u16::from_be_bytes([len[0], len[1]])).min(rest.len());
                let Some(pkt) = take(&mut rest, len) else {
                    break;
                };
                if k == 0 {
                    sw.handle_rtp(who, pkt, now);
                } else {
                    sw.handle_rtcp(who, pkt, now);
                }
            }
            2 => {
                now += Duration::from_millis(u64::from(b >> 3));
                if sw.poll_timeout().is_some_and(|t| t <= now) {
                    sw.handle_timeout(now);
                }
            }
            3 => {
                let _ = sw.set_speaker(who, now);
            }
            4 => {
                let Some(cam) = cams.get_mut(&who) else {
                    continue;
                };
                let key = b & 0x80 != 0;
                let mut frame = if key {
                    vec![0x50, 0x2A, 0x00, 0x9D, 0x01, 0x2A, 0x40, 0x01, 0xF0, 0x00]
                } else {
                    vec![0x51, 0x2A, 0x00]
                };
                frame.resize(frame.len() + usize::from(b >> 4 & 3) * 40, who as u8);
                let payloads = packetizer.packetize(&frame, cam.pic, key).unwrap();
                let ts = (cam.frames * 3000).wrapping_add(cam.ssrc);
                let n = payloads.len();
                for (i, p) in payloads.iter().enumerate() {
                    let mut pkt = vec![
                        0x80,
                        params(who).payload_type | if i + 1 == n { 0x80 } else { 0 },
                    ];
                    pkt.extend_from_slice(&cam.seq.to_be_bytes());
                    pkt.extend_from_slice(&ts.to_be_bytes());
                    pkt.extend_from_slice(&cam.ssrc.to_be_bytes());
                    pkt.extend_from_slice(p);
                    cam.seq = cam.seq.wrapping_add(1);
                    sw.handle_rtp(who, &pkt, now);
                }
                cam.pic = (cam.pic + 1) & 0x7FFF;
                cam.frames += 1;
            }
            5 => {
                let Some(arg) = take(&mut rest, 1) else { break };
                let arg = arg[0];
                let Some(ours) = sw.output_ssrc(who) else {
                    continue;
                };
                let last = seen.get(&who).and_then(|s| s.back()).map_or(0, |(q, _)| *q);
                let pkt = match b >> 6 {
                    0 => feedback::pli(0xAB, ours),
                    1 => feedback::fir(0xAB, ours, arg),
                    2 => {
                        let a = last.wrapping_sub(u16::from(arg));
                        feedback::nack(0xAB, ours, &[a, a.wrapping_add(1)])
                    }
                    _ => feedback::remb(0xAB, u64::from(arg) << 12, &[ours]),
                };
                sw.handle_rtcp(who, &pkt, now);
            }
            6 => {
                if takeovers == 8 {
                    continue;
                }
                takeovers += 1;
                let snap = sw.export_state();
                drain(&mut sw, &mut seen);
                sw = Switcher::from_snapshot(&snap, now).unwrap();
                // The standby's sequence windows start empty: a hostile source's second,
                // different packet with an old sequence number is forwarded again. The
                // reserve across takeovers is proved in `video/tests/takeover.rs`.
                seen.clear();
            }
            _ => {
                sw.remove_participant(who, now).unwrap();
                drain(&mut sw, &mut seen);
                sw.add_participant(who, params(who), now).unwrap();
                // A new leg of the call: its stream starts over.
                seen.remove(&who);
            }
        }
        drain(&mut sw, &mut seen);
    }
});
