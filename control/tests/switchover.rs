//! Planned switchover (`POST /api/failover`) in virtual time: the primary stops deciding,
//! the backup takes over at the handover tick, and what the clients receive continues
//! without a repeated or a missing packet.

mod common;

use common::*;
use control::{Role, SwitchoverError};
use mixer::Output;
use std::time::Duration;

const TICK: Duration = Duration::from_millis(20);

/// A primary and a synced backup with two calls in room "standup".
fn pair() -> (Node, Node, Vec<Ua>) {
    let mut p = Node::new(Role::Primary);
    let mut b = Node::new(Role::Backup);
    p.core.handle_backup_connected(p.now);
    p.drain();
    feed(&mut b, &mut p, untouched);
    let mut uas = vec![Ua::new(0, "alice", "standup"), Ua::new(1, "bob", "standup")];
    for ua in &mut uas {
        ua.cseq += 1;
        let invite = ua.request("INVITE", ua.cseq, true, Some(PCMU));
        p.sip(ua.addr, &invite);
        p.rooms();
        let ok = p
            .sent
            .iter()
            .rev()
            .find(|t| t.data.starts_with(b"SIP/2.0 200"))
            .expect("200");
        let text = String::from_utf8_lossy(&ok.data).to_string();
        let to = header(&text, "To").unwrap();
        ua.to_tag = to.split(";tag=").nth(1).map(str::to_string);
        let ack = ua.request("ACK", ua.cseq, true, None);
        p.sip(ua.addr, &ack);
        p.sent.clear();
        feed(&mut b, &mut p, untouched);
    }
    assert!(b.core.synced());
    (p, b, uas)
}

/// (ssrc, seq, timestamp) of the RTP packets a mixer sends at one tick, by participant.
fn tick(n: &mut Node, at: Duration) -> Vec<(u64, u32, u16, u32)> {
    let mut out = Vec::new();
    for m in n.mixers.values_mut() {
        m.handle_tick(at);
        while let Some(o) = m.poll_output() {
            if let Output::Rtp { to, packet } = o {
                let ssrc = u32::from_be_bytes(packet[8..12].try_into().unwrap());
                let seq = u16::from_be_bytes(packet[2..4].try_into().unwrap());
                let ts = u32::from_be_bytes(packet[4..8].try_into().unwrap());
                out.push((to, ssrc, seq, ts));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_backup_continues_at_the_handover_tick_with_the_next_packet_of_every_stream() {
    let (mut p, mut b, _) = pair();
    // The primary's rooms run ticks 1..k (packets leave), then the operator switches over
    // with the handover at tick k.
    let k: u64 = 50;
    let mut last = Vec::new();
    for t in 1..k {
        p.now = TICK * t as u32;
        let now = p.now;
        last = tick(&mut p, now);
    }
    p.rooms();
    feed(&mut b, &mut p, untouched);
    assert!(!last.is_empty(), "the primary sends");
    p.core.handle_switchover(k, p.now).unwrap();
    p.drain();
    assert!(p.core.is_switching());
    feed(&mut b, &mut p, untouched);
    assert_eq!(
        b.core.handover_tick(),
        Some(k),
        "the handover tick is replicated"
    );
    // The backup takes over before tick k's boundary; its rooms start at tick k.
    b.now = TICK * k as u32 - Duration::from_millis(7);
    b.core.handle_takeover(b.now);
    b.now = TICK * k as u32;
    b.drain();
    let now = b.now;
    let first = tick(&mut b, now);
    assert_eq!(first.len(), last.len());
    for (before, after) in last.iter().zip(&first) {
        assert_eq!(before.0, after.0);
        assert_eq!(before.1, after.1, "same SSRC");
        assert_eq!(
            after.2,
            before.2.wrapping_add(1),
            "the next sequence number: {before:?} -> {after:?}"
        );
        assert_eq!(
            after.3,
            before.3.wrapping_add(160),
            "the next 20 ms of timestamps"
        );
    }
}

#[test]
fn a_switching_primary_answers_nothing_and_an_aborted_switchover_resumes_what_it_held() {
    let (mut p, _b, mut uas) = pair();
    p.now = Duration::from_secs(1);
    p.core.handle_switchover(60, p.now).unwrap();
    p.drain();
    assert_eq!(
        p.core.handle_switchover(61, p.now),
        Err(SwitchoverError::Busy)
    );
    let entries_before = p.entries.len();
    // An OPTIONS is not answered (its retransmission goes to the node taking over), an
    // operator's kick is held, nothing is replicated.
    let ua = &mut uas[0];
    ua.cseq += 1;
    let options = ua.request("OPTIONS", ua.cseq, true, None);
    p.sip(ua.addr, &options);
    let call = *p.core.calls().keys().next().unwrap();
    p.core.handle_hangup(call, p.now);
    p.drain();
    p.now += Duration::from_secs(2);
    p.core.handle_timeout(p.now);
    p.drain();
    assert!(
        p.sent.is_empty(),
        "sent while switching: {:?}",
        p.sent.len()
    );
    assert_eq!(
        p.entries.len(),
        entries_before,
        "replicated while switching"
    );
    // The backup never took over: the primary serves on, and the kick happens now.
    p.core.handle_switchover_aborted(p.now);
    p.drain();
    assert!(!p.core.is_switching());
    assert_eq!(p.core.handover_tick(), None);
    let bye = p.sent.iter().any(|t| t.data.starts_with(b"BYE "));
    assert!(bye, "the held kick is carried out after the abort");
    // The OPTIONS retransmission is answered again.
    p.sip(uas[0].addr, &options);
    assert!(p.sent.iter().any(|t| t.data.starts_with(b"SIP/2.0 200")));
}

#[test]
fn only_a_primary_with_a_synced_backup_switches_over() {
    let mut lone = Node::new(Role::Primary);
    assert_eq!(
        lone.core.handle_switchover(10, lone.now),
        Err(SwitchoverError::NotSynced)
    );
    let mut standalone = Node::new(Role::Standalone);
    assert_eq!(
        standalone.core.handle_switchover(10, standalone.now),
        Err(SwitchoverError::NotPrimary)
    );
    let (_, mut b, _) = pair();
    assert_eq!(
        b.core.handle_switchover(10, b.now),
        Err(SwitchoverError::NotPrimary)
    );
}
