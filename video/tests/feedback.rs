//! Receivers' feedback: NACKs answered from the retransmission cache with the bytes the
//! receiver was sent, keyframe-request storms rate-limited, REMB passed to the source as
//! the minimum of its viewers' estimates.

mod common;

use common::*;
use video::feedback::{self, Feedback};
use video::{Switcher, SwitcherConfig};

/// Sources 1 and 2, receivers 3 and 4 (also sources, silent).
fn room() -> Room {
    let mut sw = Switcher::new(SwitcherConfig {
        seed: 9,
        ..Default::default()
    });
    for (id, ssrc) in [(1, 0x1111), (2, 0x2222), (3, 0x3333), (4, 0x4444)] {
        sw.add_participant(id, params(Some(ssrc)), ms(0)).unwrap();
    }
    let mut room = Room::new(sw);
    room.add_sender(1, Sender::new(0x1111, 1), ms(0));
    room.add_sender(2, Sender::new(0x2222, 2), ms(7));
    room.input(Input::Timeout);
    room.speaker(1);
    room
}

fn nack_from(room: &Room, r: u64, lost: &[u16]) -> Vec<u8> {
    let ours = room.sw.output_ssrc(r).unwrap();
    feedback::nack(0xABCD, ours, lost)
}

#[test]
fn nack_is_answered_with_the_identical_bytes_and_unknown_sequence_numbers_are_ignored() {
    let mut room = room();
    room.run_until(ms(500));
    let sent: Vec<Seen> = room.out.rtp_to(3).into_iter().cloned().collect();
    assert!(sent.len() > 30);
    // Switch 3 to 2, so that some NACKed packets belong to the previous mapping.
    room.speaker(2);
    room.run_until(ms(700));
    let all: Vec<Seen> = room.out.rtp_to(3).into_iter().cloned().collect();
    assert!(all.iter().any(|s| s.tag == Some(2)));
    let pick = [
        &sent[sent.len() - 5],
        &all[all.len() - 10],
        &all[all.len() - 1],
    ];
    let lost: Vec<u16> = pick.iter().map(|s| s.seq).collect();
    let unknown = all.last().unwrap().seq.wrapping_add(100);
    let before = room.out.rtp.len();
    let nack = nack_from(&room, 3, &[lost[0], lost[1], unknown, lost[2]]);
    room.input(Input::Rtcp(3, nack));
    let resent: Vec<&Seen> = room.out.rtp[before..].iter().collect();
    assert_eq!(resent.len(), 3, "three answers, the unknown one ignored");
    for (r, orig) in resent.iter().zip(pick) {
        assert_eq!(r.to, 3);
        assert_eq!(r.raw, orig.raw, "identical bytes for seq {}", orig.seq);
    }
    let st = room.sw.stats(3).unwrap();
    assert_eq!((st.nacked, st.nack_answered, st.nack_missed), (4, 3, 1));
    // A NACK about another stream is not ours to answer.
    let before = room.out.rtp.len();
    room.input(Input::Rtcp(3, feedback::nack(0xABCD, 0x999, &lost)));
    assert_eq!(room.out.rtp.len(), before);
    assert_eq!(room.sw.stats(3).unwrap().rtcp_ignored, 1);
}

#[test]
fn nack_for_a_packet_lost_before_us_is_asked_from_the_source() {
    let mut room = room();
    room.run_until(ms(300));
    // Drop one packet of source 1 on its way to us.
    let mut s1 = room.senders.remove(&1).unwrap();
    room.next_frame.remove(&1);
    let frame = s1.frame(room.now);
    let lost_src_seq = u16::from_be_bytes([frame[1][2], frame[1][3]]);
    room.input(Input::Rtp(1, frame[0].clone()));
    room.input(Input::Rtp(1, frame[2].clone()));
    let seen = room.out.rtp_to(3);
    let (a, b) = (seen[seen.len() - 2], seen[seen.len() - 1]);
    assert_eq!(b.seq, a.seq.wrapping_add(2), "a hole at the receiver");
    let hole = a.seq.wrapping_add(1);
    let rtcp_before = room.out.rtcp.len();
    room.input(Input::Rtcp(3, nack_from(&room, 3, &[hole])));
    let to_source: Vec<_> = room.out.rtcp[rtcp_before..]
        .iter()
        .filter(|(to, _, _)| *to == 1)
        .flat_map(|(_, fb, _)| fb.clone())
        .collect();
    assert_eq!(
        to_source,
        vec![Feedback::Nack {
            sender_ssrc: room.sw.output_ssrc(1).unwrap(),
            media_ssrc: 0x1111,
            lost: vec![lost_src_seq],
        }]
    );
    // The other viewer NACKs the same loss (its own sequence number for it), and the first
    // one NACKs again at once (the retransmission is on its way): the source is not asked
    // again, and nobody asks it for a keyframe.
    let seen4 = room.out.rtp_to(4);
    let (a4, b4) = (seen4[seen4.len() - 2], seen4[seen4.len() - 1]);
    assert_eq!(b4.seq, a4.seq.wrapping_add(2), "a hole at the other viewer");
    let hole4 = a4.seq.wrapping_add(1);
    let to_source_after = |room: &Room, from: usize| -> Vec<Feedback> {
        room.out.rtcp[from..]
            .iter()
            .filter(|(to, _, _)| *to == 1)
            .flat_map(|(_, fb, _)| fb.clone())
            .collect()
    };
    for (viewer, h) in [(4, hole4), (3, hole), (4, hole4)] {
        let rtcp_before = room.out.rtcp.len();
        room.input(Input::Rtcp(viewer, nack_from(&room, viewer, &[h])));
        let to_source = to_source_after(&room, rtcp_before);
        assert!(to_source.is_empty(), "viewer {viewer}: {to_source:?}");
    }
    // Still missing 250 ms after the source was asked: it does not repair (no
    // retransmissions, or the packet was sent before a takeover); it is asked for a keyframe
    // (once: the rate limit holds the next ones).
    room.run_until(room.now + ms(260));
    for round in 0..2 {
        let rtcp_before = room.out.rtcp.len();
        room.input(Input::Rtcp(3, nack_from(&room, 3, &[hole])));
        let to_source = to_source_after(&room, rtcp_before);
        let requests = to_source
            .iter()
            .filter(|f| matches!(f, Feedback::Fir { .. } | Feedback::Pli { .. }))
            .count();
        assert_eq!(
            requests,
            usize::from(round == 0),
            "round {round}: {to_source:?}"
        );
    }
    // The source's retransmission fills the hole with the right sequence number.
    let before = room.out.rtp.len();
    room.input(Input::Rtp(1, frame[1].clone()));
    let fill: Vec<_> = room.out.rtp[before..]
        .iter()
        .filter(|s| s.to == 3)
        .collect();
    assert_eq!(fill.len(), 1);
    assert_eq!(fill[0].seq, hole);
}

#[test]
fn a_storm_of_1000_plis_in_one_second_costs_the_source_a_handful_of_requests() {
    let mut room = room();
    room.run_until(ms(500));
    let before = room.out.requests_to(1).len();
    let ours = room.sw.output_ssrc(3).unwrap();
    let start = room.now;
    for i in 0..1000u64 {
        room.now = start + ms(i);
        room.input(Input::Rtcp(3, feedback::pli(0xABCD, ours)));
        if room.sw.poll_timeout().is_some_and(|t| t <= room.now) {
            room.input(Input::Timeout);
        }
    }
    room.now = start + ms(1000);
    room.input(Input::Timeout);
    let requests = room.out.requests_to(1).len() - before;
    // One per 300 ms: at 0, 300, 600, 900 ms.
    assert!((3..=4).contains(&requests), "{requests} requests");
    let st = room.sw.stats(1).unwrap();
    assert!(st.keyframe_requests_suppressed >= 995, "{st:?}");
    assert_eq!(room.sw.stats(3).unwrap().keyframe_requests_in, 1000);
    // The same FIR number twice is a retransmission: acted on once.
    let before = room.out.requests_to(1).len();
    room.now += ms(1000);
    for _ in 0..3 {
        room.input(Input::Rtcp(3, feedback::fir(0xABCD, ours, 42)));
    }
    assert_eq!(room.out.requests_to(1).len(), before + 1);
    assert_eq!(room.sw.stats(3).unwrap().rtcp_ignored, 2);
}

#[test]
fn remb_gives_the_source_the_minimum_of_its_viewers_about_once_a_second() {
    let mut room = room();
    room.run_until(ms(500));
    // 3 and 4 watch 1; 2 watches 1 too (the speaker's previous is none: it keeps 1).
    for (r, bps) in [(3u64, 800_000u64), (4, 300_000)] {
        let ours = room.sw.output_ssrc(r).unwrap();
        room.input(Input::Rtcp(r, feedback::remb(0xABCD, bps, &[ours, 77])));
    }
    // An estimate about another stream is ignored.
    room.input(Input::Rtcp(2, feedback::remb(0xABCD, 1_000, &[5])));
    room.run_until(ms(3500));
    let rembs: Vec<u64> = room
        .out
        .rtcp
        .iter()
        .filter(|(to, _, _)| *to == 1)
        .flat_map(|(_, fb, _)| fb.iter())
        .filter_map(|f| match f {
            Feedback::Remb {
                bitrate_bps, ssrcs, ..
            } => {
                assert_eq!(ssrcs, &[0x1111]);
                Some(*bitrate_bps)
            }
            _ => None,
        })
        .collect();
    assert!((2..=4).contains(&rembs.len()), "{rembs:?}");
    assert!(rembs.iter().all(|&b| b.abs_diff(300_000) < 16), "{rembs:?}");
    // Source 2 has no viewer with an estimate: none.
    assert!(room
        .out
        .rtcp
        .iter()
        .filter(|(to, _, _)| *to == 2)
        .all(|(_, fb, _)| fb.iter().all(|f| !matches!(f, Feedback::Remb { .. }))));
    // Sender reports reach the receivers about once a second with our SSRC.
    let srs = room
        .out
        .rtcp
        .iter()
        .filter(|(to, fb, raw)| *to == 3 && fb.is_empty() && raw[1] == 200)
        .count();
    assert!((2..=4).contains(&srs), "{srs}");
}
