//! Control-plane takeover in virtual time: a primary core and a backup core fed only the
//! entries the primary replicated (through their wire encoding). The primary is stopped
//! after every step of scripted call flows (INVITE, 200 retransmitted until ACK, ACK,
//! re-INVITE, INFO, OPTIONS, CANCEL, offerless INVITE, BYE from either side, an operator's
//! kick, mute and unmute, room lock and limit (a new caller then refused with 403), a 2xx
//! never acknowledged ending by timer H, shutdown, a room learning a client's media source
//! behind NAT; video: a call with audio and VP8 video (two port pairs), its video source
//! learned, its video held, removed and added back by re-INVITE, video added to an audio
//! call, an offerless INVITE answered with video in the ACK); from then on the promoted
//! backup gets the same inputs the primary would have got, and everything it sends (SIP
//! responses, retransmissions, BYEs with their Call-ID, tags and CSeq numbers) must be
//! byte-identical to what the primary sends, and its calls (audio and video ports, SDP
//! versions, output SSRCs) the same records, every call's pairs pre-bound before the
//! takeover, and its rooms mute the same participants and hold the same members' video
//! (video port, addresses, payload type, direction). Negative controls drop or alter one
//! replicated field and must see a difference.
//!
//! Rooms are real `mixer::Mixer`s driven by the test (the room tasks' job), so output SSRCs
//! and snapshots are the mixer's own; their replies arrive in a separate step, as the room
//! tasks' replies do, so a takeover also happens while a call is half-way into its room.

mod common;

use common::*;
use control::latch::Source;
use control::{AdminCommand, Entry, Item, Role, RoomEvent, SettingsChange};
use sip_core::state::StateChange;
use sip_core::Transmit;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// One step of a script.
#[derive(Clone, Debug)]
enum Step {
    /// INVITE with this offer (None: offerless).
    Invite(usize, Option<&'static str>),
    /// The UA's last request again (UDP retransmission).
    Retransmit(usize),
    /// ACK of the 2xx (with an SDP answer for an offerless INVITE).
    Ack(usize, Option<&'static str>),
    /// ACK of a non-2xx final response (same branch as the INVITE).
    AckFailure(usize),
    ReInvite(usize, &'static str),
    Info(usize, char),
    Options(usize),
    Cancel(usize),
    Bye(usize),
    /// The operator hangs up the UA's call.
    Kick(usize),
    /// The operator mutes (true) or unmutes the UA's call.
    Mute(usize, bool),
    /// The operator locks the room and caps it at this many participants.
    Lock(&'static str, usize),
    /// 200 OK to the server's latest BYE for this UA.
    AnswerBye(usize),
    /// The room tasks reply.
    Rooms,
    /// The UA's room learned its media source at this address (behind NAT), for good.
    Latched(usize, &'static str),
    /// The UA's room learned its video source at this address, for good.
    VideoLatched(usize, &'static str),
    /// Virtual time passes (timers fire).
    Advance(u64),
    Shutdown,
}

fn script() -> (Vec<Ua>, Vec<Step>) {
    use Step::*;
    let uas = vec![
        Ua::new(0, "alice", "standup"),
        Ua::new(1, "bob", "standup"),
        Ua::new(2, "carol", "standup"),
        Ua::new(3, "dave", "standup"),
        Ua::new(4, "erin", "standup"),
        Ua::new(5, "frank", "retro"),
        Ua::new(6, "grace", "standup"),
        Ua::new(7, "henry", "standup"),
    ];
    let steps = vec![
        Invite(0, Some(PCMU)),
        Retransmit(0),
        Rooms,
        Advance(600), // the 200 OK is retransmitted until the ACK
        Ack(0, None),
        Latched(0, "203.0.113.7:41000"),
        Invite(1, Some(OPUS)),
        Rooms,
        Ack(1, None),
        Mute(1, true),
        Rooms,
        Invite(7, Some(PCMU_VP8)), // audio and video: two port pairs
        Rooms,
        Ack(7, None),
        VideoLatched(7, "203.0.113.8:41002"),
        ReInvite(7, PCMU_VP8_HOLD), // video on hold, audio not
        Ack(7, None),
        ReInvite(7, PCMU), // video removed: the pair stays with the call
        Ack(7, None),
        ReInvite(7, PCMU_VP8), // video back, on the same pair
        Ack(7, None),
        Bye(7),
        Rooms,
        Options(2),
        Info(0, '5'),
        ReInvite(0, SENDONLY),
        Ack(0, None),
        ReInvite(0, PCMU_VP8), // resumed, and video added to a joined call: a new pair
        Ack(0, None),
        Invite(3, None), // offerless: we offer (with video) in the 200, the answer in the ACK
        Ack(3, Some(PCMU_VP8)),
        Rooms,
        Mute(3, true),
        Mute(1, false),
        Invite(4, Some(PCMU)),
        Cancel(4), // before the room replied
        AckFailure(4),
        Rooms,
        Invite(5, Some(PCMU)),
        Rooms,
        Advance(40_000), // never ACKed: timer H, then our BYE (RFC 3261 13.3.1.4)
        AnswerBye(5),
        Bye(1),
        Rooms,
        Kick(0),
        AnswerBye(0),
        Rooms,
        Lock("standup", 2),
        Invite(6, Some(PCMU)), // a locked room: 403 Room Locked
        AckFailure(6),
        Rooms,
        Advance(1_000),
        Shutdown,
        AnswerBye(3),
        Rooms,
        Advance(40_000),
    ];
    (uas, steps)
}

/// Learn tags and server requests from what the reference node sent.
fn observe(uas: &mut [Ua], sent: &[Transmit]) -> BTreeMap<usize, String> {
    let mut byes = BTreeMap::new();
    for t in sent {
        let text = String::from_utf8_lossy(&t.data).to_string();
        for (i, ua) in uas.iter_mut().enumerate() {
            if !text.contains(&format!("Call-ID: {}", ua.call_id)) {
                continue;
            }
            if text.starts_with("SIP/2.0 2") && text.contains("INVITE\r\n") {
                if let Some(tag) = header(&text, "To").and_then(|v| v.split(";tag=").nth(1)) {
                    ua.to_tag = Some(tag.to_string());
                }
            }
            if text.starts_with("BYE ") {
                byes.insert(i, text.clone());
            }
        }
    }
    byes
}

/// The script's state besides the nodes: UAs and the latest server BYE per UA.
struct Script {
    uas: Vec<Ua>,
    byes: BTreeMap<usize, String>,
    invite_cseq: BTreeMap<usize, u32>,
}

impl Script {
    /// The input a step gives a node (the same for every node it is applied to).
    fn apply(&mut self, step: &Step, nodes: &mut [&mut Node]) {
        let send = |from: SocketAddr, msg: &str, nodes: &mut [&mut Node]| {
            for n in nodes.iter_mut() {
                n.sip(from, msg);
            }
        };
        match *step {
            Step::Invite(i, offer) => {
                let ua = &mut self.uas[i];
                ua.cseq += 1;
                ua.to_tag = None;
                let m = ua.request("INVITE", ua.cseq, true, offer);
                ua.last = m.clone();
                self.invite_cseq.insert(i, ua.cseq);
                send(ua.addr, &m, nodes);
            }
            Step::Retransmit(i) => {
                let ua = &self.uas[i];
                send(ua.addr, &ua.last.clone(), nodes);
            }
            Step::Ack(i, answer) => {
                let ua = &mut self.uas[i];
                let cseq = self.invite_cseq[&i];
                let m = ua.request("ACK", cseq, true, answer);
                send(ua.addr, &m, nodes);
            }
            Step::AckFailure(i) => {
                let ua = &mut self.uas[i];
                let cseq = self.invite_cseq[&i];
                ua.to_tag = None;
                let m = ua.request("ACK", cseq, false, None);
                send(ua.addr, &m, nodes);
            }
            Step::ReInvite(i, sdp) => {
                let ua = &mut self.uas[i];
                ua.cseq += 1;
                let m = ua.request("INVITE", ua.cseq, true, Some(sdp));
                ua.last = m.clone();
                self.invite_cseq.insert(i, ua.cseq);
                send(ua.addr, &m, nodes);
            }
            Step::Info(i, digit) => {
                let ua = &mut self.uas[i];
                ua.cseq += 1;
                let mut m = ua.request("INFO", ua.cseq, true, None);
                let body = format!("Signal={digit}\r\nDuration=160\r\n");
                m = m.replace(
                    "Content-Length: 0\r\n\r\n",
                    &format!(
                        "Content-Type: application/dtmf-relay\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    ),
                );
                send(ua.addr, &m, nodes);
            }
            Step::Options(i) => {
                let ua = &mut self.uas[i];
                ua.cseq += 1;
                let m = ua.request("OPTIONS", ua.cseq, true, None);
                send(ua.addr, &m, nodes);
            }
            Step::Cancel(i) => {
                let ua = &mut self.uas[i];
                let cseq = self.invite_cseq[&i];
                let m = ua.request("CANCEL", cseq, false, None);
                send(ua.addr, &m, nodes);
            }
            Step::Bye(i) => {
                let ua = &mut self.uas[i];
                ua.cseq += 1;
                let m = ua.request("BYE", ua.cseq, true, None);
                send(ua.addr, &m, nodes);
            }
            Step::AnswerBye(i) => {
                let bye = self
                    .byes
                    .remove(&i)
                    .unwrap_or_else(|| panic!("no BYE for UA {i}"));
                send(self.uas[i].addr, &answer_request(&bye, "200 OK"), nodes);
            }
            Step::Kick(i) => {
                let uri = format!("sip:{}@{}", self.uas[i].name, self.uas[i].addr.ip());
                for n in nodes.iter_mut() {
                    let call = n
                        .core
                        .calls()
                        .values()
                        .find(|c| c.from_uri == uri)
                        .map(|c| c.call)
                        .expect("kicked call exists");
                    n.core.handle_hangup(call, n.now);
                    n.drain();
                }
            }
            Step::Mute(i, muted) => {
                let uri = format!("sip:{}@{}", self.uas[i].name, self.uas[i].addr.ip());
                for n in nodes.iter_mut() {
                    let (call, room) = n
                        .core
                        .calls()
                        .values()
                        .find(|c| c.from_uri == uri)
                        .map(|c| (c.call, c.room.clone()))
                        .expect("muted call exists");
                    let cmd = AdminCommand::Mute {
                        room,
                        id: call,
                        muted,
                    };
                    n.core.handle_admin(1, cmd, n.now);
                    n.drain();
                }
            }
            Step::Lock(room, max) => {
                for n in nodes.iter_mut() {
                    let change = SettingsChange {
                        locked: Some(true),
                        max_participants: Some(max),
                        layout: None,
                    };
                    let cmd = AdminCommand::Settings {
                        room: room.into(),
                        change,
                    };
                    n.core.handle_admin(2, cmd, n.now);
                    n.drain();
                }
            }
            Step::Rooms => nodes.iter_mut().for_each(|n| n.rooms()),
            Step::Latched(i, at) | Step::VideoLatched(i, at) => {
                let video = matches!(step, Step::VideoLatched(..));
                let uri = format!("sip:{}@{}", self.uas[i].name, self.uas[i].addr.ip());
                let source = Source {
                    rtp: Some(addr(at)),
                    rtcp: None,
                    learning: false,
                };
                for n in nodes.iter_mut() {
                    let call = n
                        .core
                        .calls()
                        .values()
                        .find(|c| c.from_uri == uri)
                        .map(|c| c.call)
                        .expect("latched call exists");
                    let room = n
                        .mixers
                        .iter()
                        .find(|(_, m)| m.participant_ids().contains(&call))
                        .map(|(id, _)| *id)
                        .expect("latched call is in a room");
                    let ev = if video {
                        RoomEvent::VideoLatched { room, call, source }
                    } else {
                        RoomEvent::Latched { room, call, source }
                    };
                    n.core.handle_room_event(ev, n.now);
                    n.drain();
                }
            }
            Step::Advance(ms) => {
                for n in nodes.iter_mut() {
                    let to = n.now + Duration::from_millis(ms);
                    n.advance(to);
                }
            }
            Step::Shutdown => {
                for n in nodes.iter_mut() {
                    n.core.handle_shutdown(n.now);
                    n.drain();
                }
            }
        }
    }
}

/// Every live call's participant in its room's mixer, and whether it is muted there (a
/// resumed room's snapshot may hold participants whose call ended: the driver's room task
/// drops those nobody attached, the harness keeps them).
fn mixer_mutes(n: &Node) -> BTreeMap<u64, bool> {
    n.mixers
        .values()
        .flat_map(|m| {
            m.participant_ids()
                .into_iter()
                .filter(|id| n.core.call(*id).is_some())
                .map(|id| (id, m.is_muted(id) == Some(true)))
        })
        .collect()
}

/// Every live call's video as its room holds it.
fn room_videos(n: &Node) -> BTreeMap<u64, Option<control::MemberVideo>> {
    n.videos
        .iter()
        .filter(|(id, _)| n.core.call(**id).is_some())
        .map(|(id, v)| (*id, v.clone()))
        .collect()
}

fn show(t: &Transmit) -> String {
    format!("to {}: {}", t.to, String::from_utf8_lossy(&t.data))
}

/// Run the script, stopping the primary after `stop` steps. Err describes the first
/// difference between the promoted backup and the primary that was not stopped.
fn run(stop: usize, tamper: Tamper) -> Result<(), String> {
    let (uas, steps) = script();
    let mut s = Script {
        uas,
        byes: BTreeMap::new(),
        invite_cseq: BTreeMap::new(),
    };
    let mut p = Node::new(Role::Primary);
    let mut b = Node::new(Role::Backup);
    p.core.handle_backup_connected(p.now);
    p.drain();
    feed(&mut b, &mut p, tamper);
    for step in &steps[..stop] {
        s.apply(step, &mut [&mut p]);
        let sent = std::mem::take(&mut p.sent);
        s.byes.extend(observe(&mut s.uas, &sent));
        feed(&mut b, &mut p, tamper);
        b.now = p.now;
    }
    if !b.core.synced() {
        return Err("backup never held the state".into());
    }
    // Every call's port pairs, audio and video, are pre-bound on the backup.
    for c in b.core.calls().values() {
        for port in [Some(c.port), c.video_port].into_iter().flatten() {
            if !b.bound.get(&c.call).is_some_and(|s| s.contains(&port)) {
                return Err(format!(
                    "call {} port {port} not pre-bound on the backup ({:?})",
                    c.call, b.bound
                ));
            }
        }
    }
    // The primary is dead: the backup serves from what it was sent.
    b.core.handle_takeover(b.now);
    b.drain();
    if let Some(t) = b.sent.first() {
        return Err(format!("backup sent at takeover: {}", show(t)));
    }
    // The resumed rooms mute whom the primary's rooms mute.
    let muted = |n: &Node| -> Vec<u64> {
        let m = mixer_mutes(n);
        m.into_iter().filter(|(_, v)| *v).map(|(k, _)| k).collect()
    };
    if muted(&b) != muted(&p) {
        return Err(format!(
            "after the takeover the rooms mute {:?}, the primary's {:?}",
            muted(&b),
            muted(&p)
        ));
    }
    // Members resume with the source their room had learned, not the mirror's latest.
    for (call, source) in &b.attached {
        let learned = p.core.call(*call).and_then(|c| c.source);
        if *source != learned {
            return Err(format!(
                "call {call} attached with source {source:?}, the primary had learned {learned:?}"
            ));
        }
    }
    for (call, source) in &b.attached_video {
        let learned = p.core.call(*call).and_then(|c| c.video_source);
        if *source != learned {
            return Err(format!(
                "call {call} attached with video source {source:?}, the primary had learned {learned:?}"
            ));
        }
    }
    if room_videos(&b) != room_videos(&p) {
        return Err(format!(
            "after the takeover the rooms' video members differ\n  primary: {:?}\n  backup:  {:?}",
            room_videos(&p),
            room_videos(&b)
        ));
    }
    for (k, step) in steps.iter().enumerate().skip(stop) {
        s.apply(step, &mut [&mut p, &mut b]);
        let (ps, bs) = (std::mem::take(&mut p.sent), std::mem::take(&mut b.sent));
        if ps != bs {
            let n = ps.iter().zip(&bs).take_while(|(a, b)| a == b).count();
            return Err(format!(
                "after step {k} {step:?}: primary sent {} messages, backup {}; first difference:\n  primary: {}\n  backup:  {}",
                ps.len(),
                bs.len(),
                ps.get(n).map(show).unwrap_or_default(),
                bs.get(n).map(show).unwrap_or_default()
            ));
        }
        if let Some(f) = p.fault.take().or(b.fault.take()) {
            return Err(format!("after step {k} {step:?}: {f}"));
        }
        if mixer_mutes(&p) != mixer_mutes(&b) {
            return Err(format!(
                "after step {k} {step:?}: the rooms' mutes differ\n  primary: {:?}\n  backup:  {:?}",
                mixer_mutes(&p),
                mixer_mutes(&b)
            ));
        }
        if room_videos(&p) != room_videos(&b) {
            return Err(format!(
                "after step {k} {step:?}: the rooms' video members differ\n  primary: {:?}\n  backup:  {:?}",
                room_videos(&p),
                room_videos(&b)
            ));
        }
        if p.core.calls() != b.core.calls() {
            return Err(format!(
                "after step {k} {step:?}: call records differ\n  primary: {:?}\n  backup:  {:?}",
                p.core.calls(),
                b.core.calls()
            ));
        }
        s.byes.extend(observe(&mut s.uas, &ps));
        p.entries.clear();
        b.entries.clear();
    }
    if !p.core.is_idle() {
        return Err(format!("calls left at the end: {:?}", p.core.calls()));
    }
    Ok(())
}

#[test]
fn the_script_runs_to_completion_without_takeover() {
    let (_, steps) = script();
    run(steps.len(), untouched).unwrap();
}

#[test]
fn a_backup_promoted_after_any_step_sends_exactly_what_the_primary_would_have() {
    let (_, steps) = script();
    for stop in 0..=steps.len() {
        if let Err(e) = run(stop, untouched) {
            panic!("primary stopped after {stop} steps: {e}");
        }
    }
}

/// Every stop point; how many of them showed a difference.
fn divergences(tamper: Tamper) -> usize {
    let (_, steps) = script();
    (0..steps.len())
        .filter(|&k| run(k, tamper).is_err())
        .count()
}

#[test]
fn negative_control_sip_transactions_dropped() {
    fn t(e: &mut Entry) {
        e.items
            .retain(|i| !matches!(i, Item::Sip(StateChange::ServerTx { .. })));
    }
    assert!(
        divergences(t) > 0,
        "dropping server transactions went unnoticed"
    );
}

#[test]
fn negative_control_dialogs_dropped() {
    fn t(e: &mut Entry) {
        e.items
            .retain(|i| !matches!(i, Item::Sip(StateChange::Dialog { .. })));
    }
    assert!(divergences(t) > 0, "dropping dialogs went unnoticed");
}

#[test]
fn negative_control_sdp_session_version_dropped() {
    fn t(e: &mut Entry) {
        for i in &mut e.items {
            if let Item::Call(c) = i {
                c.local.session_version = 1;
            }
        }
    }
    assert!(divergences(t) > 0, "a stale SDP version went unnoticed");
}

#[test]
fn negative_control_server_record_dropped() {
    fn t(e: &mut Entry) {
        e.items.retain(|i| !matches!(i, Item::Server(_)));
    }
    assert!(
        divergences(t) > 0,
        "dropping the server record went unnoticed"
    );
}

#[test]
fn the_learned_media_source_survives_the_takeover() {
    // Stopped right after the room learned alice's source: her member is attached with it.
    let (_, steps) = script();
    let k = steps
        .iter()
        .position(|s| matches!(s, Step::Latched(..)))
        .unwrap();
    run(k + 1, untouched).unwrap();
    fn t(e: &mut Entry) {
        for i in &mut e.items {
            if let Item::Call(c) = i {
                c.source = None;
            }
        }
    }
    let e = run(k + 1, t).expect_err("a lost media source went unnoticed");
    assert!(e.contains("203.0.113.7:41000"), "{e}");
}

#[test]
fn negative_control_room_snapshots_dropped() {
    fn t(e: &mut Entry) {
        e.items.retain(|i| !matches!(i, Item::Room(_)));
    }
    assert!(divergences(t) > 0, "dropping room snapshots went unnoticed");
}

#[test]
fn negative_control_sip_globals_dropped() {
    fn t(e: &mut Entry) {
        e.items
            .retain(|i| !matches!(i, Item::Sip(StateChange::Globals { .. })));
    }
    assert!(
        divergences(t) > 0,
        "dropping the SIP generator went unnoticed"
    );
}

#[test]
fn negative_control_mute_dropped() {
    fn t(e: &mut Entry) {
        for i in &mut e.items {
            if let Item::Call(c) = i {
                c.muted = false;
            }
        }
    }
    assert!(divergences(t) > 0, "a lost mute went unnoticed");
}

#[test]
fn negative_control_room_settings_dropped() {
    fn t(e: &mut Entry) {
        for i in &mut e.items {
            if let Item::Room(r) = i {
                r.settings = Default::default();
            }
        }
    }
    let (_, steps) = script();
    let lock = steps
        .iter()
        .position(|s| matches!(s, Step::Lock(..)))
        .unwrap();
    run(lock + 1, untouched).unwrap();
    let e = run(lock + 1, t).expect_err("a lost room lock went unnoticed");
    assert!(e.contains("403 Room Locked"), "{e}");
}

#[test]
fn the_learned_video_source_survives_the_takeover() {
    let (_, steps) = script();
    let k = steps
        .iter()
        .position(|s| matches!(s, Step::VideoLatched(..)))
        .unwrap();
    run(k + 1, untouched).unwrap();
    fn t(e: &mut Entry) {
        for i in &mut e.items {
            if let Item::Call(c) = i {
                c.video_source = None;
            }
        }
    }
    let e = run(k + 1, t).expect_err("a lost video source went unnoticed");
    assert!(e.contains("203.0.113.8:41002"), "{e}");
}

#[test]
fn negative_control_video_port_dropped() {
    fn t(e: &mut Entry) {
        for i in &mut e.items {
            if let Item::Call(c) = i {
                c.video_port = None;
            }
        }
    }
    assert!(divergences(t) > 0, "a lost video port went unnoticed");
}

#[test]
fn negative_control_negotiated_video_dropped() {
    fn t(e: &mut Entry) {
        for i in &mut e.items {
            if let Item::Call(c) = i {
                if let Some(n) = c.neg.as_mut() {
                    n.decline_video();
                }
            }
        }
    }
    assert!(divergences(t) > 0, "a lost video line went unnoticed");
}

/// A re-INVITE adding video to a joined call waits for its video pair; the primary dies
/// before the driver reported it bound. The promoted backup (which pre-bound the pair from
/// the replicated record) answers the re-INVITE at once, with the very 200 OK the primary
/// sends once its pair is bound, and its room gets the call's video.
#[test]
fn a_reinvite_adding_video_is_answered_by_the_backup_when_the_primary_dies_before_the_bind() {
    let mut p = Node::new(Role::Primary);
    let mut b = Node::new(Role::Backup);
    p.core.handle_backup_connected(p.now);
    p.drain();
    feed(&mut b, &mut p, untouched);
    let mut a = Ua::new(0, "alice", "standup");
    a.cseq = 1;
    let invite = a.request("INVITE", 1, true, Some(PCMU));
    p.sip(a.addr, &invite);
    p.rooms();
    observe(std::slice::from_mut(&mut a), &p.sent);
    let ack = a.request("ACK", 1, true, None);
    p.sip(a.addr, &ack);
    p.sent.clear();
    let call = p.core.calls().values().next().unwrap().call;
    assert_eq!(p.core.call(call).unwrap().video_port, None, "audio only");
    // The re-INVITE adds video; the primary asks for a video pair and waits.
    p.hold_opens = true;
    let reinvite = a.request("INVITE", 2, true, Some(PCMU_VP8));
    p.sip(a.addr, &reinvite);
    let video_port = p.core.call(call).unwrap().video_port.expect("a video pair");
    assert_eq!(p.held_opens, [(call, video_port)]);
    assert!(p.sent.iter().all(|t| !t.data.starts_with(b"SIP/2.0 200")));
    feed(&mut b, &mut p, untouched);
    b.now = p.now;
    assert!(
        b.bound[&call].contains(&video_port),
        "the backup pre-binds the video pair"
    );
    // The primary, had it lived: the pair bound, the 200 OK with video at that port.
    let mut q = Node::new(Role::Primary);
    std::mem::swap(&mut q, &mut p);
    q.report_opens();
    let ok = q
        .sent
        .iter()
        .find(|t| t.data.starts_with(b"SIP/2.0 200"))
        .cloned();
    let ok = ok.expect("the primary answers once its pair is bound");
    let body = String::from_utf8_lossy(&ok.data).to_string();
    assert!(
        body.contains(&format!("m=video {video_port} RTP/AVP 96\r\n")),
        "{body}"
    );
    // The backup, promoted: the same 200 OK at once, and the room has the video.
    b.core.handle_takeover(b.now);
    b.drain();
    let sent: Vec<&Transmit> = b
        .sent
        .iter()
        .filter(|t| t.data.starts_with(b"SIP/2.0 200"))
        .collect();
    assert_eq!(sent, [&ok], "the backup's answer is the primary's");
    let v = b.videos[&call].clone().expect("the room has the video");
    assert_eq!(v.media.port, video_port);
    assert_eq!(v.media.remote_rtp, addr("198.18.0.10:4004"));
    assert_eq!(v.params.payload_type, 96);
    assert!(v.params.send && v.params.recv);
}
