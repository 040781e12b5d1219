//! A re-INVITE changes a participant's video direction (`Switcher::update_participant`):
//! a receiver on hold is sent nothing and, resumed, gets a keyframe first on the same
//! stream with its sequence numbers continuing; a source that stops sending is shown to
//! nobody, and is again once it sends and speaks.

mod common;

use common::*;
use video::{Switcher, SwitcherConfig, VideoParams};

fn room() -> Room {
    let mut sw = Switcher::new(SwitcherConfig {
        seed: 9,
        ..Default::default()
    });
    for (id, ssrc) in [(1u64, 0x1111u32), (2, 0x2222), (3, 0x3333)] {
        sw.add_participant(id, params(Some(ssrc)), ms(0)).unwrap();
    }
    let mut room = Room::new(sw);
    for (id, ssrc, phase) in [(1u64, 0x1111u32, 0u64), (2, 0x2222, 11), (3, 0x3333, 22)] {
        let mut s = Sender::new(ssrc, id as u8);
        s.keyframe_in = None; // keyframes only when asked
        s.key_delay = 1;
        room.add_sender(id, s, ms(phase));
    }
    room.input(Input::Timeout);
    room
}

/// Source tags of the last 20 frames' packets receiver `to` got.
fn recent_tags(room: &Room, to: u64) -> Vec<u8> {
    room.out
        .rtp_to(to)
        .iter()
        .rev()
        .take(20)
        .filter_map(|s| s.tag)
        .collect()
}

fn with(send: bool, recv: bool, ssrc: u32) -> VideoParams {
    VideoParams {
        send,
        recv,
        ..params(Some(ssrc))
    }
}

#[test]
fn a_receiver_on_hold_gets_nothing_and_resumes_its_stream_on_a_keyframe() {
    let mut room = room();
    room.speaker(1);
    room.run_until(ms(1000));
    let before = room.out.rtp_to(3).len();
    assert!(before > 50);
    let last = room.out.rtp_to(3)[before - 1].seq;
    let ssrc = room.out.rtp_to(3)[0].ssrc;

    // 3 puts the video on hold (a=recvonly from it: we stop sending to it).
    let now = room.now;
    room.sw
        .update_participant(3, with(false, true, 0x3333), now)
        .unwrap();
    room.run_until(ms(2000));
    assert_eq!(room.out.rtp_to(3).len(), before, "nothing sent on hold");
    // Its own camera is still shown to the others.
    room.speaker(3);
    room.run_until(ms(2500));
    assert!(room
        .out
        .rtp_to(1)
        .iter()
        .rev()
        .take(20)
        .any(|s| s.tag == Some(3)));

    // Resumed: a keyframe first, the same SSRC, the next sequence number.
    let now = room.now;
    room.sw
        .update_participant(3, with(true, true, 0x3333), now)
        .unwrap();
    room.speaker(1);
    room.run_until(ms(3500));
    let seen = room.out.rtp_to(3);
    assert!(seen.len() > before + 20, "resumed");
    let first = seen[before];
    assert!(
        first.keyframe,
        "the first packet after the hold starts a keyframe"
    );
    assert_eq!(first.ssrc, ssrc);
    assert_eq!(first.seq, last.wrapping_add(1), "sequence numbers continue");
    assert_continuous(&seen);
}

#[test]
fn a_source_that_stops_sending_is_shown_to_nobody_until_it_sends_again() {
    let mut room = room();
    room.speaker(2);
    room.run_until(ms(1000));
    assert!(room
        .out
        .rtp_to(3)
        .iter()
        .rev()
        .take(10)
        .all(|s| s.tag.is_none() || s.tag == Some(2)));

    // 2 stops sending video (a=recvonly): 3 switches away from it (to 1, on 1's keyframe).
    let now = room.now;
    room.sw
        .update_participant(2, with(true, false, 0x2222), now)
        .unwrap();
    room.input(Input::Timeout);
    room.run_until(ms(2000));
    let tail = recent_tags(&room, 3);
    assert!(!tail.is_empty() && tail.iter().all(|&t| t == 1), "{tail:?}");
    // Speaking without video changes nothing.
    room.speaker(2);
    room.run_until(ms(2500));
    let tail = recent_tags(&room, 3);
    assert!(tail.iter().all(|&t| t == 1), "{tail:?}");

    // Sending again and speaking: shown again, on the same continuous stream.
    let now = room.now;
    room.sw
        .update_participant(2, with(true, true, 0x2222), now)
        .unwrap();
    room.speaker(3);
    room.speaker(2);
    room.run_until(ms(3500));
    let tail = recent_tags(&room, 3);
    assert!(!tail.is_empty() && tail.iter().all(|&t| t == 2), "{tail:?}");
    assert_continuous(&room.out.rtp_to(3));
    assert_eq!(
        room.out
            .rtp_to(3)
            .iter()
            .map(|s| s.ssrc)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        1
    );
}
