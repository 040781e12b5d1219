//! A pinned source (the room's composed grid, as the MCU drives it): every receiver is
//! shown it whoever speaks, switching on its keyframe with the stream continuing; unpinned,
//! the speaker rule is back; the pin survives a takeover; the driver's own keyframe requests
//! go through the switcher's rate limit and FIR numbering.

mod common;

use common::*;
use video::feedback::Feedback;
use video::{Switcher, SwitcherConfig, VideoParams};

/// The grid: a source that receives nothing.
const GRID: u64 = 99;

fn room() -> Room {
    let mut sw = Switcher::new(SwitcherConfig {
        seed: 3,
        ..Default::default()
    });
    for (id, ssrc) in [(1, 0x1111), (2, 0x2222), (3, 0x3333)] {
        sw.add_participant(id, params(Some(ssrc)), ms(0)).unwrap();
    }
    let mut room = Room::new(sw);
    for (id, ssrc, phase) in [(1, 0x1111, 0), (2, 0x2222, 11), (3, 0x3333, 22)] {
        let mut s = Sender::new(ssrc, id as u8);
        s.keyframe_in = None;
        s.key_delay = 1;
        room.add_sender(id, s, ms(phase));
    }
    room.input(Input::Timeout);
    room
}

fn add_grid(room: &mut Room) {
    let grid = VideoParams {
        send: false,
        nack: false,
        ..params(None)
    };
    room.sw.add_participant(GRID, grid, room.now).unwrap();
    let mut s = Sender::new(0x6001, 9);
    s.keyframe_in = Some(0); // a grid starts with a keyframe
    s.key_delay = 1;
    room.add_sender(GRID, s, ms(5));
}

fn tags(room: &Room, to: u64, from: usize) -> Vec<u8> {
    room.out.rtp_to(to)[from..]
        .iter()
        .filter_map(|s| s.tag)
        .collect()
}

#[test]
fn pinned_source_is_shown_to_everyone_whoever_speaks_and_unpinning_restores_the_speaker() {
    let mut room = room();
    room.speaker(1);
    room.run_until(ms(1000));
    assert_eq!(tags(&room, 2, 0).last(), Some(&1));
    assert_eq!(
        tags(&room, 1, 0).last(),
        Some(&2),
        "no speaker before 1: first source"
    );

    add_grid(&mut room);
    let now = room.now;
    room.sw.set_pinned(Some(GRID), now).unwrap();
    assert_eq!(room.sw.pinned(), Some(GRID));
    let before: Vec<usize> = (1..=3).map(|r| room.out.rtp_to(r).len()).collect();
    room.run_until(ms(2000));
    room.speaker(2); // speech changes nothing while pinned
    room.speaker(3);
    room.run_until(ms(3000));
    for r in 1..=3u64 {
        let t = tags(&room, r, before[r as usize - 1]);
        let first = t
            .iter()
            .position(|&x| x == 9)
            .expect("switched to the grid");
        assert!(t[first..].iter().all(|&x| x == 9), "receiver {r}: {t:?}");
        assert_eq!(room.sw.stats(r).unwrap().showing, Some(GRID));
    }
    let grid_stats = room.sw.stats(GRID).unwrap();
    assert_eq!(grid_stats.packets_out, 0, "the grid receives nothing");

    let now = room.now;
    room.sw.set_pinned(None, now).unwrap();
    let before: Vec<usize> = (1..=3).map(|r| room.out.rtp_to(r).len()).collect();
    room.run_until(ms(4000));
    // Speaker 3: 1 and 2 see 3, 3 sees the previous speaker 2.
    for (r, want) in [(1u64, 3u8), (2, 3), (3, 2)] {
        let t = tags(&room, r, before[r as usize - 1]);
        assert_eq!(t.last(), Some(&want), "receiver {r}: {t:?}");
    }
    for r in 1..=3 {
        let seen = room.out.rtp_to(r);
        assert_continuous(&seen);
        assert_eq!(seen[0].ssrc, room.sw.output_ssrc(r).unwrap());
    }
}

#[test]
fn pinning_needs_a_source_and_removing_it_unpins() {
    let mut room = room();
    let now = room.now;
    assert!(room.sw.set_pinned(Some(42), now).is_err(), "unknown");
    room.sw
        .add_participant(
            7,
            VideoParams {
                recv: false,
                ..params(None)
            },
            now,
        )
        .unwrap();
    assert!(room.sw.set_pinned(Some(7), now).is_err(), "not a source");
    assert_eq!(room.sw.pinned(), None);
    add_grid(&mut room);
    room.sw.set_pinned(Some(GRID), now).unwrap();
    let v = room.sw.state_version();
    room.sw.set_pinned(Some(GRID), now).unwrap();
    assert_eq!(room.sw.state_version(), v, "pinning again changes nothing");
    room.run_until(ms(500));
    room.sw.remove_participant(GRID, room.now).unwrap();
    assert_eq!(room.sw.pinned(), None);
    room.senders.remove(&GRID);
    room.next_frame.remove(&GRID);
    let before = room.out.rtp_to(2).len();
    room.run_until(ms(1500));
    assert!(!tags(&room, 2, before).is_empty(), "back to a real source");
    assert!(tags(&room, 2, before).iter().all(|&t| t != 9));
    assert_continuous(&room.out.rtp_to(2));
}

#[test]
fn the_pin_survives_a_takeover() {
    let mut room = room();
    add_grid(&mut room);
    let now = room.now;
    room.sw.set_pinned(Some(GRID), now).unwrap();
    room.run_until(ms(1000));
    let json = serde_json::to_string(&room.sw.export_state()).unwrap();
    let snap: video::SwitcherSnapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(snap.pinned, Some(GRID));
    let last_seq = room.out.rtp_to(1).last().unwrap().seq;
    let mut sw = Switcher::from_snapshot(&snap, room.now).unwrap();
    assert_eq!(sw.pinned(), Some(GRID));
    let _ = drain(&mut sw);
    room.sw = sw;
    let before = room.out.rtp_to(1).len();
    room.speaker(2);
    room.run_until(ms(2000));
    let t = tags(&room, 1, before);
    assert!(!t.is_empty() && t.iter().all(|&x| x == 9), "{t:?}");
    let after = room.out.rtp_to(1);
    assert_eq!(after[before].ssrc, after[0].ssrc, "same SSRC");
    assert!(
        (after[before].seq.wrapping_sub(last_seq) as i16) > 0,
        "no sequence regression"
    );
    // A snapshot of before pins existed reads as unpinned.
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v.as_object_mut().unwrap().remove("pinned");
    let old: video::SwitcherSnapshot = serde_json::from_value(v).unwrap();
    assert_eq!(old.pinned, None);
}

#[test]
fn driver_keyframe_requests_share_the_rate_limit_and_fir_numbering() {
    let mut room = room();
    room.run_until(ms(500));
    let firs_before = room.out.requests_to(2).len();
    let now = room.now;
    room.sw.request_keyframe_from(2, now).unwrap();
    let d = drain(&mut room.sw);
    let asked: Vec<_> = d
        .rtcp
        .iter()
        .filter(|(to, _, _)| *to == 2)
        .flat_map(|(_, fb, _)| fb.clone())
        .collect();
    assert!(
        matches!(asked.as_slice(), [Feedback::Fir { target_ssrc: 0x2222, seq, .. }] if usize::from(*seq) == firs_before),
        "{asked:?}"
    );
    room.out.extend(d);
    // Within the interval: deferred, then sent once at its end.
    room.sw.request_keyframe_from(2, now + ms(10)).unwrap();
    room.sw.request_keyframe_from(2, now + ms(20)).unwrap();
    assert!(drain(&mut room.sw).rtcp.is_empty());
    assert_eq!(room.sw.stats(2).unwrap().keyframe_requests_suppressed, 2);
    assert!(room.sw.poll_timeout().is_some_and(|t| t <= now + ms(300)));
    room.sw.handle_timeout(now + ms(300));
    let d = drain(&mut room.sw);
    assert_eq!(d.requests_to(2), vec![Some(firs_before as u8 + 1)]);
    assert!(room.sw.request_keyframe_from(42, now).is_err());
}
