//! Voice switching as a receiver sees it: the switch happens on the new speaker's keyframe,
//! the stream stays one continuous stream (one SSRC, sequence numbers +1, timestamps and
//! picture IDs moving on), the new source gets a FIR with a new sequence number, and the
//! speaker sees the previous speaker.

mod common;

use common::*;
use std::time::Duration;
use video::{Switcher, SwitcherConfig, VideoParams};

fn room() -> Room {
    let mut sw = Switcher::new(SwitcherConfig {
        seed: 1,
        ..Default::default()
    });
    let mut room = Room::new(Switcher::new(SwitcherConfig::default()));
    // 1 and 2 announced their SSRC; 3 did not (learnt from its first packet).
    sw.add_participant(1, params(Some(0x1111)), ms(0)).unwrap();
    sw.add_participant(2, params(Some(0x2222)), ms(0)).unwrap();
    sw.add_participant(3, params(None), ms(0)).unwrap();
    room.sw = sw;
    for (id, ssrc, phase) in [(1, 0x1111, 0), (2, 0x2222, 11), (3, 0x3333, 22)] {
        let mut s = Sender::new(ssrc, id as u8);
        s.keyframe_in = None; // keyframes only when asked
        s.key_delay = 2; // ... and two frames later
        room.add_sender(id, s, ms(phase));
    }
    room.input(Input::Timeout);
    room
}

/// Tags of the frames `to` received at or after `from` (one entry per frame start).
fn tags(room: &Room, to: u64, from: usize) -> Vec<u8> {
    room.out.rtp_to(to)[from..]
        .iter()
        .filter_map(|s| s.tag)
        .collect()
}

#[test]
fn switch_happens_on_the_new_speakers_keyframe_and_the_stream_stays_continuous() {
    let mut room = room();
    room.run_until(ms(1000));
    // Before any speaker: everybody sees the first source that is not himself.
    assert!(tags(&room, 1, 0).iter().all(|&t| t == 2));
    assert!(tags(&room, 2, 0).iter().all(|&t| t == 1));
    assert!(tags(&room, 3, 0).iter().all(|&t| t == 1));
    assert!(!tags(&room, 3, 0).is_empty());
    // The first frame each receiver got is a keyframe.
    for r in 1..=3 {
        assert!(room.out.rtp_to(r)[0].keyframe, "receiver {r}");
    }

    room.speaker(1);
    room.run_until(ms(2000));
    let fir_to_2 = room.out.requests_to(2);
    assert_eq!(
        fir_to_2,
        vec![Some(0)],
        "one FIR to 2 so far (for receiver 1)"
    );

    // 2 speaks: 3 must switch from 1 to 2; 2 (the speaker) sees the previous speaker, 1.
    let before3 = room.out.rtp_to(3).len();
    let before2 = room.out.rtp_to(2).len();
    let rtcp_before = room.out.rtcp.len();
    room.speaker(2);
    // At once: a FIR to 2 with the next sequence number.
    let now_rtcp = &room.out.rtcp[rtcp_before..];
    assert!(now_rtcp.iter().any(|(to, fb, _)| *to == 2
        && fb.iter().any(|f| matches!(
            f,
            video::feedback::Feedback::Fir {
                seq: 1,
                target_ssrc: 0x2222,
                ..
            }
        ))));
    room.run_until(ms(3000));
    let after3: Vec<_> = room.out.rtp_to(3)[before3..].to_vec();
    let first2 = after3
        .iter()
        .position(|s| s.tag == Some(2))
        .expect("3 switched to 2");
    assert!(after3[first2].keyframe, "switched on a keyframe");
    assert!(after3[..first2]
        .iter()
        .all(|s| s.tag.is_none_or(|t| t == 1)));
    assert!(after3[first2..]
        .iter()
        .all(|s| s.tag.is_none_or(|t| t == 2)));
    assert!(first2 > 0, "kept getting 1 until 2's keyframe");
    assert!(
        tags(&room, 2, before2).iter().all(|&t| t == 1),
        "the speaker sees the previous speaker"
    );

    // 3 speaks: 1 and 2 see 3; 3 sees 2 (previous), never himself.
    let before = [
        0,
        room.out.rtp_to(1).len(),
        room.out.rtp_to(2).len(),
        room.out.rtp_to(3).len(),
    ];
    room.speaker(3);
    room.run_until(ms(4000));
    let t1 = tags(&room, 1, before[1]);
    let t2 = tags(&room, 2, before[2]);
    let t3 = tags(&room, 3, before[3]);
    assert_eq!(t1.last(), Some(&3));
    assert_eq!(t2.last(), Some(&3));
    assert!(t3.iter().all(|&t| t == 2), "{t3:?}");

    for r in 1..=3 {
        let seen = room.out.rtp_to(r);
        assert!(seen.len() > 200);
        assert_continuous(&seen);
        assert_eq!(seen[0].ssrc, room.sw.output_ssrc(r).unwrap());
        assert!(seen.iter().all(|s| s.pt == PT));
    }
    let st = room.sw.stats(3).unwrap();
    assert_eq!((st.showing, st.target), (Some(2), Some(2)));
    assert_eq!(st.switches, 2);
}

#[test]
fn the_version_moves_per_switch_not_per_packet() {
    let mut room = room();
    room.run_until(ms(1000));
    let v = room.sw.state_version();
    let sent = room.sw.room_stats().packets_out;
    room.run_until(ms(1900));
    assert!(room.sw.room_stats().packets_out > sent + 100);
    assert_eq!(room.sw.state_version(), v, "no change without a switch");
    room.speaker(2);
    let decided = room.sw.state_version();
    assert!(decided > v, "a switch decision moves the version");
    room.run_until(ms(2100));
    assert!(room.sw.state_version() > decided, "the switch moves it");
}

#[test]
fn a_switch_waiting_for_a_keyframe_asks_again_after_half_a_second() {
    let mut room = room();
    room.run_until(ms(1000));
    let before3 = room.out.rtp_to(3).len();
    room.speaker(2);
    // 2's encoder misses the first request.
    room.senders.get_mut(&2).unwrap().keyframe_in = None;
    room.run_until(ms(1450));
    assert!(
        tags(&room, 3, before3).iter().all(|&t| t == 1),
        "still showing 1"
    );
    assert_eq!(room.out.requests_to(2), vec![Some(0), Some(1)]);
    room.run_until(ms(1700));
    assert_eq!(
        room.out.requests_to(2),
        vec![Some(0), Some(1), Some(2)],
        "retried"
    );
    assert_eq!(tags(&room, 3, before3).last(), Some(&2));
    assert_continuous(&room.out.rtp_to(3));
}

#[test]
fn an_audio_only_speaker_changes_nothing_and_pli_is_used_without_fir() {
    let mut room = room();
    room.sw
        .add_participant(
            4,
            VideoParams {
                send: false,
                recv: false,
                ..params(None)
            },
            ms(0),
        )
        .unwrap();
    room.sw
        .add_participant(
            5,
            VideoParams {
                fir: false,
                send: false,
                ..params(Some(0x5555))
            },
            ms(0),
        )
        .unwrap();
    room.add_sender(5, Sender::new(0x5555, 5), ms(5));
    room.run_until(ms(500));
    let v = room.sw.state_version();
    room.speaker(4);
    assert_eq!(room.sw.state_version(), v);
    room.speaker(5);
    // Everybody now sees 5, asked with a PLI (it did not negotiate FIR).
    assert_eq!(room.out.requests_to(5), vec![None]);
    room.run_until(ms(1000));
    for r in 1..=3 {
        assert_eq!(room.sw.stats(r).unwrap().showing, Some(5));
        assert_continuous(&room.out.rtp_to(r));
    }
    assert!(room.out.rtp_to(5).is_empty(), "5 does not receive video");
}

#[test]
fn removing_the_speaker_brings_back_the_previous_one() {
    let mut room = room();
    room.run_until(ms(500));
    room.speaker(1);
    room.speaker(2);
    room.run_until(ms(1000));
    assert_eq!(room.sw.stats(3).unwrap().showing, Some(2));
    room.sw.remove_participant(2, room.now).unwrap();
    room.senders.remove(&2);
    room.next_frame.remove(&2);
    room.input(video_timeout());
    room.run_until(ms(1500));
    assert_eq!(room.sw.speaker(), (Some(1), None));
    assert_eq!(room.sw.stats(3).unwrap().showing, Some(1));
    assert_continuous(&room.out.rtp_to(3));
}

fn video_timeout() -> Input {
    Input::Timeout
}

#[test]
fn packets_of_the_new_source_older_than_its_keyframe_are_not_forwarded_to_the_switched() {
    let mut room = room();
    room.run_until(ms(1000));
    room.speaker(1);
    room.run_until(ms(1500));
    // 2 speaks: 3 waits for 2's keyframe. 2's last frame before the keyframe loses its
    // middle packet in the network, which arrives late, after the keyframe.
    room.speaker(2);
    let mut s2 = room.senders.remove(&2).unwrap();
    room.next_frame.remove(&2);
    s2.keyframe_in = None;
    let inter = s2.frame(room.now);
    let key = s2.frame_kind(room.now + FRAME, true);
    room.input(Input::Rtp(2, inter[0].clone()));
    room.input(Input::Rtp(2, inter[2].clone()));
    room.now += FRAME;
    for p in &key {
        room.input(Input::Rtp(2, p.clone()));
    }
    let (to1, to3) = (room.out.rtp_to(1).len(), room.out.rtp_to(3).len());
    room.input(Input::Rtp(2, inter[1].clone()));
    assert_eq!(
        room.out.rtp_to(1).len(),
        to1 + 1,
        "1 was shown 2 already: it gets it"
    );
    assert_eq!(
        room.out.rtp_to(3).len(),
        to3,
        "3 switched at the keyframe: not for it"
    );
    assert_continuous(&room.out.rtp_to(3));
    assert_eq!(room.sw.stats(3).unwrap().showing, Some(2));
}

#[test]
fn a_long_mapping_keeps_forwarding_past_the_sequence_wrap() {
    let mut sw = Switcher::new(SwitcherConfig::default());
    sw.add_participant(1, params(Some(0x1111)), ms(0)).unwrap();
    sw.add_participant(
        2,
        VideoParams {
            recv: false,
            ..params(None)
        },
        ms(0),
    )
    .unwrap();
    let mut now = ms(1);
    let mut got = 0u32;
    let mut last: Option<u16> = None;
    // 70000 packets at 10000 per second: more than 2^15 in the first 5 s of the mapping.
    for i in 0..70_000u32 {
        let key = i == 0;
        let data: &[u8] = if key {
            &[0x50, 0, 0, 0x9D, 0x01, 0x2A]
        } else {
            &[0x51, 0, 0]
        };
        let mut payload = vec![0x90, 0x80, 0x80 | (i >> 8 & 0x7F) as u8, i as u8];
        payload.extend_from_slice(data);
        let pkt = rtp(
            PT,
            true,
            1000u16.wrapping_add(i as u16),
            i * 9,
            0x1111,
            &payload,
        );
        sw.handle_rtp(1, &pkt, now);
        while let Some(o) = sw.poll_output() {
            if let video::Output::Rtp { packet, .. } = o {
                let seq = u16::from_be_bytes([packet[2], packet[3]]);
                if let Some(l) = last {
                    assert_eq!(seq, l.wrapping_add(1));
                }
                last = Some(seq);
                got += 1;
            }
        }
        now += Duration::from_micros(100);
    }
    assert_eq!(got, 70_000);
}
