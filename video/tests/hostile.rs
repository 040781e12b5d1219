//! Hostile input: garbage and truncated packets are counted and dropped, never a panic nor
//! a malformed output; a source changing SSRC (or restarting its sequence) mid-call keeps
//! its viewers' streams continuous.

mod common;

use common::*;
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::SplitMix64;
use video::feedback::{self, Feedback};
use video::{Switcher, SwitcherConfig, VideoParams};

fn room() -> Room {
    let mut sw = Switcher::new(SwitcherConfig {
        seed: 5,
        ..Default::default()
    });
    sw.add_participant(1, params(Some(0x1111)), ms(0)).unwrap();
    sw.add_participant(2, params(Some(0x2222)), ms(0)).unwrap();
    sw.add_participant(
        3,
        VideoParams {
            recv: false,
            ..params(None)
        },
        ms(0),
    )
    .unwrap();
    let mut room = Room::new(sw);
    room.add_sender(1, Sender::new(0x1111, 1), ms(0));
    room.add_sender(2, Sender::new(0x2222, 2), ms(5));
    room.input(Input::Timeout);
    room.speaker(1);
    room
}

#[test]
fn garbage_is_counted_and_dropped() {
    let mut room = room();
    room.run_until(ms(200));
    // A short interframe packet with a 15-bit picture ID (and its own, unexpected sequence
    // number: the variants below must be refused before that matters).
    let valid = rtp(
        PT,
        false,
        9,
        1,
        0x1111,
        &[0x90, 0x80, 0x80, 0x01, 0x51, 0x00, 0x00],
    );
    let mut truncated_descriptor = rtp(PT, false, 1, 1, 0x1111, &[0x90, 0x80]); // X, I, no picture ID
    let mut long_pid_cut = rtp(PT, false, 1, 1, 0x1111, &[0x90, 0x80, 0x80]); // 15-bit ID cut
    let bad_padding = {
        let mut p = valid.clone();
        p[0] |= 0x20; // P bit; the last octet (data) says how much padding: too much
        let n = p.len();
        p[n - 1] = 255;
        p
    };
    let crafted: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x80],
        valid[..11].to_vec(), // shorter than an RTP header
        valid[..12].to_vec(), // header, no payload
        {
            let mut p = valid.clone();
            p[0] = 0x40;
            p
        }, // version 1
        {
            let mut p = valid.clone();
            p[1] = 0x80 | 97;
            p
        }, // another payload type
        {
            let mut p = valid.clone();
            p[1] = 200;
            p
        }, // RTCP (SR) on the RTP port
        {
            let mut p = valid.clone();
            p[0] = 0x8F;
            p
        }, // 15 CSRCs announced, not there
        {
            let mut p = valid.clone();
            p[0] = 0x90;
            p
        }, // extension announced, not there
        bad_padding,
        std::mem::take(&mut truncated_descriptor),
        std::mem::take(&mut long_pid_cut),
        rtp(PT, false, 1, 1, 0x1111, &[0x10]), // descriptor, no VP8 data
        b"INVITE sip:x SIP/2.0\r\n\r\n".to_vec(),
    ];
    let rtp_before = room.out.rtp.len();
    for p in &crafted {
        room.input(Input::Rtp(1, p.clone()));
    }
    assert_eq!(room.out.rtp.len(), rtp_before, "nothing forwarded");
    assert_eq!(
        room.sw.stats(1).unwrap().dropped_invalid,
        crafted.len() as u64
    );
    // A participant that sends no video, and one that does not exist.
    room.input(Input::Rtp(3, valid.clone()));
    room.input(Input::Rtp(42, valid.clone()));
    assert_eq!(room.sw.stats(3).unwrap().dropped_invalid, 1);
    assert_eq!(
        room.sw.room_stats().dropped_invalid,
        crafted.len() as u64 + 2
    );
    // RTCP garbage.
    for p in &crafted {
        room.input(Input::Rtcp(2, p.clone()));
    }
    let mut cut_nack = feedback::nack(1, room.sw.output_ssrc(2).unwrap(), &[1, 2, 3]);
    cut_nack.truncate(cut_nack.len() - 3);
    room.input(Input::Rtcp(2, cut_nack));
    assert!(room.sw.stats(2).unwrap().rtcp_invalid >= crafted.len() as u64);
    room.run_until(ms(400));
    assert_continuous(&room.out.rtp_to(2));
}

#[test]
fn random_and_mutated_datagrams_never_panic_nor_produce_malformed_output() {
    let mut room = room();
    room.run_until(ms(100));
    let mut rng = SplitMix64::seed_from_u64(7);
    let mut s = Sender::new(0x1111, 1);
    s.seq = room.senders[&1].seq;
    for i in 0..20_000u32 {
        let mut p = if i % 3 == 0 {
            let n = (rng.next_u32() % 64) as usize;
            (0..n).map(|_| rng.next_u32() as u8).collect()
        } else {
            let mut f = s.frame(room.now);
            f.swap_remove(rng.next_u32() as usize % f.len())
        };
        // Flip a few octets, cut the tail.
        for _ in 0..rng.next_u32() % 3 {
            if !p.is_empty() {
                let at = rng.next_u32() as usize % p.len();
                p[at] ^= rng.next_u32() as u8;
            }
        }
        if rng.next_u32() % 4 == 0 && !p.is_empty() {
            p.truncate(rng.next_u32() as usize % p.len());
        }
        let who = 1 + u64::from(rng.next_u32() % 3);
        if rng.next_u32() % 5 == 0 {
            room.input(Input::Rtcp(who, p));
        } else {
            room.input(Input::Rtp(who, p));
        }
        if i % 50 == 0 {
            room.now += ms(7);
            room.input(Input::Timeout);
        }
    }
    // Every output parsed as RTP with a VP8 descriptor (drain asserts it) or as RTCP, with
    // one SSRC per receiver.
    for r in 1..=3 {
        let seen = room.out.rtp_to(r);
        assert!(seen
            .iter()
            .all(|s| s.ssrc == room.sw.output_ssrc(r).unwrap()));
    }
    let st = room.sw.room_stats();
    assert!(st.dropped_invalid > 5000, "{st:?}");
}

#[test]
fn a_source_changing_ssrc_mid_call_is_followed_without_a_break_in_the_stream() {
    let mut room = room();
    room.senders.get_mut(&1).unwrap().key_delay = 1;
    room.run_until(ms(1000));
    let before = room.out.rtp_to(2).len();
    // A single packet from a stranger SSRC: dropped, the stream goes on.
    room.input(Input::Rtp(
        1,
        rtp(PT, false, 5, 5, 0xBAD, &[0x10, 0x51, 0, 0, 1]),
    ));
    assert_eq!(room.sw.stats(1).unwrap().dropped_late, 1);
    // The camera restarts: new SSRC, sequence, timestamps and picture IDs, no keyframe yet.
    let mut s = Sender::new(0x9999, 1);
    s.keyframe_in = None;
    s.key_delay = 1;
    s.seq = 40_000;
    s.pic = 5;
    room.senders.insert(1, s);
    room.run_until(ms(2000));
    let st = room.sw.stats(1).unwrap();
    assert_eq!(st.ssrc_in, Some(0x9999));
    // The viewers asked the new stream for a keyframe.
    assert!(room.out.rtcp.iter().any(|(to, fb, _)| *to == 1
        && fb.iter().any(|f| matches!(
            f,
            Feedback::Fir {
                target_ssrc: 0x9999,
                ..
            }
        ))));
    let after: Vec<&Seen> = room.out.rtp_to(2)[before..].to_vec();
    assert!(after.len() > 60, "{}", after.len());
    assert_continuous(&room.out.rtp_to(2));
    assert_eq!(room.sw.stats(2).unwrap().showing, Some(1));

    // The same SSRC restarting its sequence numbers far away: re-synced as well.
    let before = room.out.rtp_to(2).len();
    room.senders.get_mut(&1).unwrap().seq = 7;
    room.run_until(ms(3000));
    assert!(room.out.rtp_to(2).len() > before + 60);
    assert_continuous(&room.out.rtp_to(2));
}
