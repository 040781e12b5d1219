//! The hot-standby proof for video: a standby that holds only the replicated snapshots
//! (serialized as they would cross the sync link, shipped whenever `state_version()` moved)
//! and never saw a packet, promoted at a crash instant:
//!
//! (a) continues every receiver whose switch is not pending with byte-identical RTP (the
//!     oracle is the primary itself, fed the same input past the crash);
//! (b) asks every source for a keyframe at once, its FIR sequence numbers continuing past
//!     the primary's;
//! (c) never repeats nor goes back on a sequence number, even when the primary switched
//!     a receiver after the snapshot the standby holds (its snapshot shipment lost), over
//!     200 seeded random crash points.

mod common;

use common::*;
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::SplitMix64;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;
use video::feedback::Feedback;
use video::{Switcher, SwitcherConfig, SwitcherSnapshot, VideoParams};

/// Snapshots as shipped: (input index after which it was taken, JSON).
type Shipped = Rc<RefCell<Vec<(usize, String)>>>;

fn shipping(room: &mut Room) -> Shipped {
    let shipped: Shipped = Rc::default();
    let s = shipped.clone();
    let mut last = None;
    let mut n = 0usize;
    room.on_input = Some(Box::new(move |sw: &Switcher, _now: Duration| {
        if last != Some(sw.state_version()) {
            last = Some(sw.state_version());
            let json = serde_json::to_string(&sw.export_state()).unwrap();
            s.borrow_mut().push((n, json));
        }
        n += 1;
    }));
    shipped
}

fn restore(json: &str) -> SwitcherSnapshot {
    serde_json::from_str(json).unwrap()
}

/// FIR sequence numbers the primary sent to each source among `rtcp`.
fn last_firs(rtcp: &[(u64, Vec<Feedback>, Vec<u8>)]) -> BTreeMap<u64, u8> {
    let mut m = BTreeMap::new();
    for (to, fb, _) in rtcp {
        for f in fb {
            if let Feedback::Fir { seq, .. } = f {
                m.insert(*to, *seq);
            }
        }
    }
    m
}

#[test]
fn a_backup_continues_every_settled_stream_byte_for_byte() {
    for crash_ms in [2000u64, 6000] {
        let mut sw = Switcher::new(SwitcherConfig {
            seed: 77,
            ..Default::default()
        });
        let mut room = Room::new(Switcher::new(SwitcherConfig::default()));
        for (id, ssrc) in [(1, 0x1111u32), (2, 0x2222), (3, 0x3333)] {
            sw.add_participant(id, params(Some(ssrc)), ms(0)).unwrap();
        }
        room.sw = sw;
        let shipped = shipping(&mut room);
        for (id, ssrc, phase) in [(1u64, 0x1111u32, 0u64), (2, 0x2222, 9), (3, 0x3333, 21)] {
            let mut s = Sender::new(ssrc, id as u8);
            s.key_delay = 1;
            if id == 2 {
                s.tl0 = Some(200); // temporal layer indices are rewritten too
            }
            room.add_sender(id, s, ms(phase));
        }
        room.input(Input::Timeout);
        for (at, who) in [(400, 1), (900, 2), (1400, 3)] {
            room.run_until(ms(at));
            room.speaker(who);
        }
        room.run_until(ms(crash_ms));
        let k = room.log.len();
        let (at, json) = shipped.borrow().last().cloned().unwrap();
        let snap = restore(&json);
        assert!(snap.participants.iter().all(|p| p
            .receiver
            .as_ref()
            .unwrap()
            .pending_since
            .is_none()));
        assert!(at + 1 < k, "the snapshot is older than the crash");
        let primary_firs = last_firs(&room.out.rtcp);

        let now = room.now;
        let mut backup = Switcher::from_snapshot(&snap, now).unwrap();
        let first = drain(&mut backup);
        assert!(first.rtp.is_empty());
        // (b) every source asked at once, FIR numbers continuing past the primary's.
        for (src, last) in &primary_firs {
            let firs = first.requests_to(*src);
            assert_eq!(firs.len(), 1, "one request to {src}");
            let d = firs[0].unwrap().wrapping_sub(*last);
            assert!((1..=128).contains(&d), "FIR {last} -> {:?}", firs[0]);
        }
        assert_eq!(primary_firs.len(), 3);

        room.run_until(now + ms(2000));
        let mut backup_rtp = Vec::new();
        for (t, input) in &room.log[k..] {
            apply(&mut backup, input, *t);
            backup_rtp.extend(drain(&mut backup).rtp);
        }
        let primary_rtp: Vec<_> = room.out.rtp[room.marks[k - 1]..].to_vec();
        assert!(primary_rtp.len() > 300);
        assert_eq!(backup_rtp.len(), primary_rtp.len());
        for (b, p) in backup_rtp.iter().zip(&primary_rtp) {
            assert_eq!(b.raw, p.raw, "to {} seq {}", p.to, p.seq);
        }
    }
}

/// One random room run: 4 sources (one with 7-bit picture IDs, one with TL0PICIDX), one
/// receive-only participant, speakers changing every 150..1200 ms, encoders answering
/// keyframe requests after 0..3 frames and sending a keyframe every second anyway.
fn random_run(seed: u64) -> (Room, Shipped) {
    let mut rng = SplitMix64::seed_from_u64(seed);
    let mut sw = Switcher::new(SwitcherConfig {
        seed,
        ..Default::default()
    });
    for id in 1..=4u64 {
        sw.add_participant(id, params(Some(id as u32 * 0x1010)), ms(0))
            .unwrap();
    }
    sw.add_participant(
        5,
        VideoParams {
            recv: false,
            ..params(None)
        },
        ms(0),
    )
    .unwrap();
    let mut room = Room::new(sw);
    let shipped = shipping(&mut room);
    for id in 1..=4u64 {
        let mut s = Sender::new(id as u32 * 0x1010, id as u8);
        s.key_delay = rng.next_u32() % 4;
        s.gop = Some(30);
        s.packets = 1 + (rng.next_u32() % 4) as usize;
        s.short_pid = id == 4;
        s.tl0 = (id == 3).then_some(250);
        room.add_sender(id, s, ms(rng.next_u64() % 33));
    }
    room.input(Input::Timeout);
    let end = ms(20_000);
    while room.now < end {
        let next = room.now + ms(150 + rng.next_u64() % 1050);
        room.run_until(next.min(end));
        room.speaker(1 + rng.next_u64() % 4);
    }
    (room, shipped)
}

/// The receivers pending in a snapshot, with their targets.
fn pending(s: &SwitcherSnapshot) -> BTreeMap<u64, Option<u64>> {
    s.participants
        .iter()
        .filter_map(|p| p.receiver.as_ref().map(|r| (p.id, r)))
        .filter(|(_, r)| r.pending_since.is_some())
        .map(|(id, r)| (id, r.target))
        .collect()
}

/// `b` differs from `a` only by switches done (pending receivers no longer pending, nothing
/// else moved): losing `b` on the link is the case (c) guards against.
fn switch_only(a: &SwitcherSnapshot, b: &SwitcherSnapshot) -> bool {
    let (pa, pb) = (pending(a), pending(b));
    a.speaker == b.speaker
        && a.participants.len() == b.participants.len()
        && pb.keys().all(|id| pa.get(id) == pb.get(id))
        && pa.len() > pb.len()
        && a.participants.iter().zip(&b.participants).all(|(x, y)| {
            x.receiver.as_ref().map(|r| r.target) == y.receiver.as_ref().map(|r| r.target)
        })
}

#[test]
fn two_hundred_random_crash_points_never_repeat_or_regress_a_sequence_number() {
    let (room, shipped) = random_run(2024);
    let shipped = shipped.borrow();
    let snaps: Vec<(usize, SwitcherSnapshot)> =
        shipped.iter().map(|(i, j)| (*i, restore(j))).collect();
    assert!(snaps.len() > 40, "{} snapshots", snaps.len());
    let mut rng = SplitMix64::seed_from_u64(99);
    let (mut with_pending, mut primary_switched_after, mut identical) = (0, 0, 0);
    for iteration in 0..200 {
        // Crash before input k (at its instant), after 1 s and 3 s before the end.
        let lo = room.log.iter().position(|(t, _)| *t >= ms(1000)).unwrap();
        let hi = room.log.iter().position(|(t, _)| *t >= ms(17_000)).unwrap();
        let k = lo + (rng.next_u64() as usize) % (hi - lo);
        let crash_at = room.log[k].0;
        // The standby holds the last snapshot shipped before the crash; every other time,
        // the shipments of the switches at the end are lost too.
        let mut j = snaps.iter().rposition(|(i, _)| *i < k).unwrap();
        if iteration % 2 == 1 {
            while j > 0 && switch_only(&snaps[j - 1].1, &snaps[j].1) {
                j -= 1;
            }
        }
        let snap = &snaps[j].1;
        if !pending(snap).is_empty() {
            with_pending += 1;
            if j + 1 < snaps.len() && snaps[j + 1].0 < k {
                primary_switched_after += 1;
            }
        }
        let mut backup = Switcher::from_snapshot(snap, crash_at).unwrap();
        let first = drain(&mut backup);
        // (b)
        let primary_firs = last_firs(&room.out.rtcp[..room.rtcp_marks[k - 1]]);
        for src in 1..=4u64 {
            let firs = first.requests_to(src);
            assert_eq!(firs.len(), 1, "iteration {iteration}: one request to {src}");
            if let Some(last) = primary_firs.get(&src) {
                let d = firs[0].unwrap().wrapping_sub(*last);
                assert!(
                    (1..=128).contains(&d),
                    "iteration {iteration}: FIR {last} -> {:?}",
                    firs[0]
                );
            }
        }
        let end = crash_at + ms(3000);
        let stop = room.log.iter().position(|(t, _)| *t >= end).unwrap();
        let next_speaker = room.log[k..stop]
            .iter()
            .position(|(_, i)| matches!(i, Input::Speaker(_)))
            .map_or(stop, |p| k + p);
        let mut backup_out: Vec<(usize, Seen)> = Vec::new();
        for (idx, (t, input)) in room.log.iter().enumerate().take(stop).skip(k) {
            apply(&mut backup, input, *t);
            backup_out.extend(drain(&mut backup).rtp.into_iter().map(|s| (idx, s)));
        }
        let primary_before = &room.out.rtp[..room.marks[k - 1]];
        for r in 1..=5u64 {
            let mut merged: Vec<&Seen> = primary_before.iter().filter(|s| s.to == r).collect();
            let cut = merged.len();
            merged.extend(backup_out.iter().filter(|(_, s)| s.to == r).map(|(_, s)| s));
            let mut seqs = BTreeSet::new();
            for (n, w) in merged.windows(2).enumerate() {
                let (a, b) = (w[0], w[1]);
                let ctx = || {
                    format!("iteration {iteration}, receiver {r}, packet {n} (cut {cut}), crash {crash_at:?}")
                };
                assert_eq!(a.ssrc, b.ssrc, "{}", ctx());
                let step = b.seq.wrapping_sub(a.seq);
                assert!(
                    (1..0x8000).contains(&step),
                    "seq {} -> {}: {}",
                    a.seq,
                    b.seq,
                    ctx()
                );
                assert!(
                    (b.ts.wrapping_sub(a.ts) as i32) >= 0,
                    "ts {} -> {}: {}",
                    a.ts,
                    b.ts,
                    ctx()
                );
                let (pa, pb) = (a.desc.picture_id.unwrap(), b.desc.picture_id.unwrap());
                assert!(
                    pb.wrapping_sub(pa) & 0x7FFF < 0x4000,
                    "picture ID {pa} -> {pb}: {}",
                    ctx()
                );
            }
            for s in &merged {
                assert!(
                    seqs.insert(s.seq),
                    "duplicate seq {} to {r} (iteration {iteration})",
                    s.seq
                );
            }
            // (a): a receiver not pending in the snapshot gets exactly the primary's packets
            // until the next speaker change.
            let was_pending = pending(snap).contains_key(&r);
            if !was_pending {
                let b: Vec<&Vec<u8>> = backup_out
                    .iter()
                    .filter(|(i, s)| s.to == r && *i < next_speaker)
                    .map(|(_, s)| &s.raw)
                    .collect();
                let p: Vec<&Vec<u8>> = room.out.rtp
                    [room.marks[k - 1]..room.marks[next_speaker - 1]]
                    .iter()
                    .filter(|s| s.to == r)
                    .map(|s| &s.raw)
                    .collect();
                let mapping = snap.participants[r as usize - 1]
                    .receiver
                    .as_ref()
                    .unwrap()
                    .mapping;
                // Source 4 has 7-bit picture IDs: moved ahead by a multiple of 128.
                if mapping.is_some_and(|m| m.source != 4) {
                    assert_eq!(b.len(), p.len(), "iteration {iteration} receiver {r}");
                    assert!(b == p, "iteration {iteration} receiver {r}: not identical");
                    identical += 1;
                }
            }
        }
    }
    eprintln!("coverage: identical {identical} pending {with_pending} switched-after {primary_switched_after}");
    assert!(
        identical >= 200,
        "only {identical} streams compared for (a)"
    );
    assert!(
        with_pending >= 20,
        "only {with_pending} crash points with a pending switch"
    );
    assert!(
        primary_switched_after >= 20,
        "only {primary_switched_after} crash points after a lost switch"
    );
}

/// The takeover's keyframe request may be lost (or dropped while the new primary's fence
/// lifts); a receiver that lost a packet at the takeover would decode nothing until the
/// source's next keyframe. The standby asks again every rate-limit interval until the
/// keyframe comes, at most 5 more times, FIR numbers counting on.
#[test]
fn a_backup_asks_again_until_each_source_sends_its_keyframe() {
    let mut sw = Switcher::new(SwitcherConfig {
        seed: 5,
        ..Default::default()
    });
    for (id, ssrc) in [(1, 0x1111u32), (2, 0x2222)] {
        sw.add_participant(id, params(Some(ssrc)), ms(0)).unwrap();
    }
    let mut room = Room::new(sw);
    for (id, ssrc) in [(1u64, 0x1111u32), (2, 0x2222)] {
        let mut s = Sender::new(ssrc, id as u8);
        s.key_delay = 1;
        room.add_sender(id, s, ms(3 * id));
    }
    room.input(Input::Timeout);
    room.run_until(ms(300));
    room.speaker(1);
    room.run_until(ms(1500));
    let snap = restore(&serde_json::to_string(&room.sw.export_state()).unwrap());
    let interval = SwitcherConfig::default().keyframe_request_interval;

    let start = room.now;
    let mut backup = Switcher::from_snapshot(&snap, start).unwrap();
    // Source 2 answers the third request; source 1 never does.
    let mut asked: BTreeMap<u64, Vec<(Duration, Option<u8>)>> = BTreeMap::new();
    let mut answer = Sender::new(0x2222, 2);
    answer.seq = 40_000;
    let mut now = start;
    while now < start + ms(4000) {
        if backup.poll_timeout().is_some_and(|t| t <= now) {
            backup.handle_timeout(now);
        }
        let d = drain(&mut backup);
        for src in [1u64, 2] {
            for r in d.requests_to(src) {
                asked.entry(src).or_default().push((now, r));
                if src == 2 && asked[&2].len() == 3 {
                    for p in answer.frame_kind(now, true) {
                        backup.handle_rtp(2, &p, now);
                    }
                }
            }
        }
        now += ms(1);
    }
    let ones = &asked[&1];
    assert_eq!(ones.len(), 6, "asked at once, then 5 more times: {ones:?}");
    for w in ones.windows(2) {
        assert!(
            w[1].0 - w[0].0 >= interval,
            "spaced by the rate limit: {ones:?}"
        );
        assert_eq!(
            w[1].1.unwrap(),
            w[0].1.unwrap().wrapping_add(1),
            "FIR numbers count on"
        );
    }
    assert!(ones[5].0 - ones[0].0 < ms(2000));
    assert_eq!(
        asked[&2].len(),
        3,
        "no request after the keyframe: {:?}",
        asked[&2]
    );
}

/// A receiver that lost packets in a takeover's gap NACKs them; the backup never sent them
/// (its mapping starts at its own first packet) and cannot resend them, so it asks the
/// source for a keyframe, once the rate limit after its resume request allows.
#[test]
fn a_nack_for_a_packet_of_the_takeover_gap_asks_the_source_for_a_keyframe() {
    let mut sw = Switcher::new(SwitcherConfig {
        seed: 78,
        ..Default::default()
    });
    let mut room = Room::new(Switcher::new(SwitcherConfig::default()));
    for (id, ssrc) in [(1, 0x1111u32), (2, 0x2222)] {
        sw.add_participant(id, params(Some(ssrc)), ms(0)).unwrap();
    }
    room.sw = sw;
    let shipped = shipping(&mut room);
    for (id, ssrc) in [(1u64, 0x1111u32), (2, 0x2222)] {
        let mut s = Sender::new(ssrc, id as u8);
        s.key_delay = 1;
        room.add_sender(id, s, ms(3 * id));
    }
    room.input(Input::Timeout);
    room.run_until(ms(400));
    room.speaker(1);
    room.run_until(ms(2000));
    let k = room.log.len();
    let (_, json) = shipped.borrow().last().cloned().unwrap();
    let now = room.now;
    let mut backup = Switcher::from_snapshot(&restore(&json), now).unwrap();
    drain(&mut backup);
    // The backup forwards for 100 ms: receiver 2 is shown source 1.
    room.run_until(now + ms(100));
    let mut got = Drained::default();
    let mut t = now;
    for (at, input) in &room.log[k..] {
        apply(&mut backup, input, *at);
        got.extend(drain(&mut backup));
        t = *at;
    }
    assert_eq!(backup.stats(2).unwrap().showing, Some(1));
    let first = got.rtp_to(2)[0].seq;
    // Receiver 2 NACKs the packet before the backup's first: lost in the gap.
    let nack = video::feedback::nack(0x2222, backup.output_ssrc(2).unwrap(), &[first - 1]);
    backup.handle_rtcp(2, &nack, t);
    let mut after = drain(&mut backup);
    assert!(after.rtp_to(2).is_empty(), "nothing to resend");
    let mut at = t;
    while at < now + ms(400) {
        at += ms(10);
        backup.handle_timeout(at);
        after.extend(drain(&mut backup));
    }
    assert_eq!(
        after.requests_to(1).len(),
        1,
        "one keyframe request to the source: {:?}",
        after.rtcp
    );
    assert_eq!(backup.stats(2).unwrap().nack_missed, 1);
}
