//! WebRTC participants (WHIP) in the control core, as a browser sees them: the actions a
//! driver carries out (the WHIP reply, the transport's registration and its final DTLS
//! flight, the room commands), when they are released under output commit, and what a
//! promoted backup resumes. The offer is a real Chromium capture; rooms are real
//! `mixer::Mixer`s driven by the test harness (`common`).

mod common;

use common::*;
use control::peer::SRTCP_MARGIN;
use control::{
    Action, Config, Entry, Item, PeerInput, Role, RoomCommand, RoomEvent, RoomInit, WebRtcConfig,
    WhipResult,
};
use std::time::Duration;
use webrtc_core::dtls::KeyingMaterial;
use webrtc_core::ice::{Credentials, PWD_LEN, UFRAG_LEN};
use webrtc_core::srtp::Profile;

const OFFER: &str = include_str!("../../webrtc/tests/data/chromium_offer.sdp");
/// What the capture says about the browser.
const BROWSER_UFRAG: &str = "EpoC";
const BROWSER_PWD: &str = "B66kgB/NKQfm9KhrZNHggLzA";
const BROWSER_FINGERPRINT: &str = "27:3B:B1:60:E3:1D:C6:02:00:5E:7D:2E:C2:D3:4F:94:D1:8D:9E:BD:48:9E:E4:4C:0D:01:6C:36:EE:0C:9E:3F";
/// Our certificate and transport.
const FINGERPRINT: &str = "5D:0A:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:12:34:56:78:9A:BC:DE:F0:0F:ED:CB:A9:87:65";
const WEBRTC_PORT: u16 = 40000;

fn webrtc_config() -> Config {
    let mut c = config();
    c.webrtc = Some(WebRtcConfig {
        port: WEBRTC_PORT,
        fingerprint: FINGERPRINT.into(),
    });
    c
}

fn node(role: Role) -> Node {
    Node::with_config(webrtc_config(), role)
}

fn browser_ice() -> Credentials {
    Credentials {
        ufrag: BROWSER_UFRAG.into(),
        pwd: BROWSER_PWD.into(),
    }
}

fn keys(byte: u8) -> KeyingMaterial {
    let profile = Profile::Aes128CmHmacSha1_80;
    KeyingMaterial {
        profile,
        material: vec![byte; profile.keying_material_len()],
    }
}

/// What the drivers were asked to do since the last look.
fn out(n: &mut Node) -> Vec<Action> {
    std::mem::take(&mut n.log)
}

fn post(n: &mut Node, request: u64, room: &str, offer: &str) -> Vec<Action> {
    n.core.handle_whip_offer(request, room, offer, None, n.now);
    n.drain();
    out(n)
}

fn input(n: &mut Node, id: u64, input: PeerInput) -> Vec<Action> {
    n.core.handle_peer_input(id, input, n.now);
    n.drain();
    out(n)
}

fn delete(n: &mut Node, request: u64, room: &str, id: u64) -> Vec<Action> {
    n.core.handle_whip_delete(request, room, id, n.now);
    n.drain();
    out(n)
}

fn whip_replies(actions: &[Action]) -> Vec<(u64, WhipResult)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::WhipReply { request, result } => Some((*request, result.clone())),
            _ => None,
        })
        .collect()
}

fn refused(status: u16, reason: &str) -> WhipResult {
    WhipResult::Refused {
        status,
        reason: reason.into(),
    }
}

/// The participant a POST opened: (id, our ICE credentials), from its `OpenPeer`.
fn opened(actions: &[Action]) -> Option<(u64, Credentials)> {
    actions.iter().find_map(|a| match a {
        Action::OpenPeer { id, local, .. } => Some((*id, local.clone())),
        _ => None,
    })
}

/// The room a `JoinPeer` put `id` in.
fn joined_room(actions: &[Action], id: u64) -> Option<u64> {
    actions.iter().find_map(|a| match a {
        Action::Room(RoomCommand::JoinPeer { room, call, .. }) if *call == id => Some(*room),
        _ => None,
    })
}

/// Room commands that name participant `id`.
fn room_commands_for(actions: &[Action], id: u64) -> Vec<&RoomCommand> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Room(c) => Some(c),
            _ => None,
        })
        .filter(|c| match c {
            RoomCommand::Join { call, .. }
            | RoomCommand::JoinPeer { call, .. }
            | RoomCommand::Attach { call, .. }
            | RoomCommand::AttachPeer { call, .. }
            | RoomCommand::Update { call, .. }
            | RoomCommand::Mute { call, .. }
            | RoomCommand::Leave { call, .. } => *call == id,
            RoomCommand::Open { .. } | RoomCommand::Layout { .. } | RoomCommand::Close { .. } => {
                false
            }
        })
        .collect()
}

/// The output SSRC the harness's room gave `id` (its reply, not yet delivered).
fn pending_ssrc(n: &Node, id: u64) -> Option<u32> {
    n.replies.iter().find_map(|e| match e {
        RoomEvent::Joined { call, ssrc, .. } if *call == id => Some(*ssrc),
        _ => None,
    })
}

fn answer_has(sdp: &str, line: &str) -> bool {
    sdp.split("\r\n").any(|l| l == line)
}

/// A browser that joined a room: what it was told.
#[derive(Clone, Debug)]
struct Peer {
    id: u64,
    local: Credentials,
    room: u64,
    ssrc: u32,
    answer: String,
}

/// POST the Chromium offer and let the room reply (the sync link acknowledges at once).
fn join(n: &mut Node, request: u64, room: &str) -> Peer {
    let first = post(n, request, room, OFFER);
    let (id, local) = opened(&first).expect("OpenPeer");
    let room = joined_room(&first, id).expect("JoinPeer");
    let ssrc = pending_ssrc(n, id).expect("the room adds it");
    n.rooms();
    let replies = whip_replies(&out(n));
    let answer = match replies.as_slice() {
        [(r, WhipResult::Created { id: cid, sdp })] if *r == request && *cid == id => sdp.clone(),
        other => panic!("expected 201 Created for request {request}: {other:?}"),
    };
    Peer {
        id,
        local,
        room,
        ssrc,
        answer,
    }
}

// ---- 1. standalone --------------------------------------------------------------------

#[test]
fn standalone_offer_opens_the_transport_joins_the_room_then_answers_with_our_credentials() {
    let mut n = node(Role::Standalone);
    let first = post(&mut n, 7, "standup", OFFER);
    // The transport learns both sides' credentials and the browser's certificate at once.
    let (id, local) = match first.as_slice() {
        [Action::OpenPeer {
            id,
            local,
            remote,
            remote_fingerprint,
        }, Action::Room(RoomCommand::Open { name, .. }), Action::Room(RoomCommand::JoinPeer { call, params, .. })] =>
        {
            assert_eq!(*remote, browser_ice());
            assert_eq!(remote_fingerprint, BROWSER_FINGERPRINT);
            assert_eq!(name, "standup");
            assert_eq!(call, id);
            // Opus as offered (PT 111, telephone-event/48000 on 110, levels on extension 1).
            assert_eq!(params.payload_type, 111);
            assert_eq!(params.telephone_event_pt, Some(110));
            assert_eq!(params.audio_level_ext_id, Some(1));
            assert!(params.send && params.recv);
            (*id, local.clone())
        }
        other => panic!("expected OpenPeer, Open, JoinPeer: {other:?}"),
    };
    assert_eq!(local.ufrag.len(), UFRAG_LEN);
    assert_eq!(local.pwd.len(), PWD_LEN);
    assert_ne!(local.ufrag, BROWSER_UFRAG);
    // No answer before the room has the participant.
    assert!(whip_replies(&first).is_empty());

    let ssrc = pending_ssrc(&n, id).expect("the room adds it");
    n.rooms();
    let replies = whip_replies(&out(&mut n));
    let sdp = match replies.as_slice() {
        [(7, WhipResult::Created { id: cid, sdp })] if *cid == id => sdp.clone(),
        other => panic!("expected 201 Created: {other:?}"),
    };
    for line in [
        format!("a=ice-ufrag:{}", local.ufrag),
        format!("a=ice-pwd:{}", local.pwd),
        format!("a=fingerprint:sha-256 {FINGERPRINT}"),
        format!("a=candidate:1 1 udp 2130706431 198.18.0.1 {WEBRTC_PORT} typ host"),
        "a=setup:passive".into(),
        "a=ice-lite".into(),
    ] {
        assert!(answer_has(&sdp, &line), "answer lacks {line:?}:\n{sdp}");
    }
    assert!(
        sdp.split("\r\n")
            .any(|l| l.starts_with(&format!("a=ssrc:{ssrc} cname:"))),
        "answer lacks our SSRC {ssrc}:\n{sdp}"
    );
    assert!(!sdp.contains(BROWSER_PWD), "{sdp}");

    // The nominated pair changes nothing the browser sees; the keys release the final
    // flight at once (nothing to wait for without a backup).
    assert_eq!(
        input(&mut n, id, PeerInput::Selected(addr("198.51.100.7:50000"))),
        vec![]
    );
    assert_eq!(
        input(&mut n, id, PeerInput::Keyed(keys(1))),
        vec![Action::ReleaseFinalFlight { id }]
    );

    // A second browser: another id, fresh credentials.
    let second = post(&mut n, 8, "standup", OFFER);
    let (id2, local2) = opened(&second).expect("OpenPeer");
    assert_ne!(id2, id);
    assert_ne!(local2.ufrag, local.ufrag);
    assert_ne!(local2.pwd, local.pwd);
}

// ---- 2. output commit -----------------------------------------------------------------

/// Replicated entries in `actions`: (seq, entry).
fn replicated(actions: &[Action]) -> Vec<(u64, Entry)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Replicate { seq, entry } => Some((*seq, entry.clone())),
            _ => None,
        })
        .collect()
}

fn peer_items(entry: &Entry, id: u64) -> Vec<&control::PeerRecord> {
    entry
        .items
        .iter()
        .filter_map(|i| match i {
            Item::Peer(p) if p.id == id => Some(&**p),
            _ => None,
        })
        .collect()
}

/// Acknowledge one entry at a time from the first unacknowledged one until `released`
/// finds something; the seq that released it and what was released.
fn commit_until<T>(n: &mut Node, released: impl Fn(&[Action]) -> Option<T>) -> (u64, T) {
    let (last, mut seq) = n.core.replication();
    while seq < last {
        seq += 1;
        n.commit(seq);
        if let Some(t) = released(&out(n)) {
            return (seq, t);
        }
    }
    panic!("nothing released after every entry up to {last} was acknowledged");
}

#[test]
fn a_primary_releases_the_answer_and_the_final_flight_only_once_the_backup_has_what_they_imply() {
    let mut p = node(Role::Primary);
    p.auto_commit = false;
    p.core.handle_backup_connected(p.now);
    p.drain();
    let (last, _) = p.core.replication();
    p.commit(last);
    out(&mut p);

    let mut log = post(&mut p, 1, "standup", OFFER);
    // The transport is registered at once (checks may follow the answer immediately).
    let (id, local) = opened(&log).expect("OpenPeer is not held");
    p.rooms();
    log.extend(out(&mut p));
    assert!(whip_replies(&log).is_empty(), "released unacknowledged");
    let entries = replicated(&log);
    assert!(p.core.held().0 > 0);

    let (at, reply) = commit_until(&mut p, |a| whip_replies(a).pop());
    let sdp = match reply {
        (1, WhipResult::Created { id: cid, sdp }) if cid == id => sdp,
        other => panic!("{other:?}"),
    };
    assert!(answer_has(&sdp, &format!("a=ice-ufrag:{}", local.ufrag)));
    // Negative control: the entry the answer waited for carries the participant with the
    // credentials the answer gives the browser (and the answer itself).
    let (_, waited) = entries
        .iter()
        .find(|(s, _)| *s == at)
        .expect("the release waited for an entry of this step");
    let recs = peer_items(waited, id);
    assert!(
        recs.iter()
            .any(|r| r.local_ice == local && r.answer.as_deref() == Some(sdp.as_str())),
        "entry {at} does not carry the participant's credentials: {waited:?}"
    );

    // The keys: the final flight waits for the entry that carries them.
    let log = input(&mut p, id, PeerInput::Keyed(keys(0x42)));
    assert!(
        !log.contains(&Action::ReleaseFinalFlight { id }),
        "released unacknowledged"
    );
    let entries = replicated(&log);
    let (at, ()) = commit_until(&mut p, |a| {
        a.contains(&Action::ReleaseFinalFlight { id }).then_some(())
    });
    let (_, waited) = entries
        .iter()
        .find(|(s, _)| *s == at)
        .expect("the release waited for the keys' entry");
    assert!(
        peer_items(waited, id)
            .iter()
            .any(|r| r.keys == Some(keys(0x42))),
        "entry {at} does not carry the keys: {waited:?}"
    );
    assert_eq!(p.core.held().0, 0);
}

// ---- 3. takeover ----------------------------------------------------------------------

const A_FIRST_ADDR: &str = "198.51.100.7:50000";
const A_ADDR: &str = "203.0.113.9:61000";
const B_ADDR: &str = "198.51.100.8:50002";
const A_JOINS: Duration = Duration::from_secs(1);

struct Takeover {
    primary: Node,
    backup: Node,
    /// Keyed, alone in "standup".
    a: Peer,
    /// Still handshaking, alone in "retro".
    b: Peer,
    /// What the promoted backup did at takeover.
    log: Vec<Action>,
}

/// A joins and completes its handshake; B joins another room and does not. The primary dies
/// at `at`; the backup (connected from the start, or only once A was keyed) takes over.
fn takeover(at: Duration, late_backup: bool, tamper: Tamper) -> Takeover {
    let mut p = node(Role::Primary);
    let mut b = node(Role::Backup);
    if !late_backup {
        p.core.handle_backup_connected(p.now);
        p.drain();
        feed(&mut b, &mut p, tamper);
    }
    p.now = A_JOINS;
    let a = join(&mut p, 1, "standup");
    input(&mut p, a.id, PeerInput::Selected(addr(A_FIRST_ADDR)));
    input(&mut p, a.id, PeerInput::Keyed(keys(0xA1)));
    // The browser nominates another pair once keyed (its network changed): that one counts.
    input(&mut p, a.id, PeerInput::Selected(addr(A_ADDR)));
    p.now = Duration::from_secs(2);
    let bp = join(&mut p, 2, "retro");
    input(&mut p, bp.id, PeerInput::Selected(addr(B_ADDR)));
    if late_backup {
        p.entries.clear(); // nobody listened
        p.core.handle_backup_connected(p.now);
        p.drain();
    }
    feed(&mut b, &mut p, tamper);
    assert!(b.core.synced());
    out(&mut b);
    p.now = at;
    b.now = at;
    b.core.handle_takeover(at);
    b.drain();
    let log = out(&mut b);
    Takeover {
        primary: p,
        backup: b,
        a,
        b: bp,
        log,
    }
}

fn srtcp_index(log: &[Action], id: u64) -> u32 {
    log.iter()
        .find_map(|a| match a {
            Action::Room(RoomCommand::AttachPeer {
                call, srtcp_index, ..
            }) if *call == id => Some(*srtcp_index),
            _ => None,
        })
        .expect("AttachPeer")
}

fn check_resumed(t: &Takeover, late: bool) {
    let (a, log) = (&t.a, &t.log);
    let resumed: Vec<&Action> = log
        .iter()
        .filter(|x| matches!(x, Action::ResumePeer { .. }))
        .collect();
    assert_eq!(
        resumed,
        vec![&Action::ResumePeer {
            id: a.id,
            local: a.local.clone(),
            remote: browser_ice(),
            remote_fingerprint: BROWSER_FINGERPRINT.into(),
            keys: keys(0xA1),
            selected: Some(addr(A_ADDR)),
        }],
        "late backup: {late}"
    );
    let opened_at = log
        .iter()
        .position(|x| match x {
            Action::Room(RoomCommand::Open {
                room,
                init: RoomInit::Resume(s),
                ..
            }) => *room == a.room && s.participants.iter().any(|p| p.id == a.id),
            _ => false,
        })
        .expect("A's room resumes from a snapshot that has A");
    let attached_at = log
        .iter()
        .position(|x| {
            matches!(x, Action::Room(RoomCommand::AttachPeer { room, call, .. })
                if *room == a.room && *call == a.id)
        })
        .expect("A attached");
    assert!(opened_at < attached_at);
    // Its video continues too, its SRTCP index past the primary's (one packet per 20 ms
    // since it joined, plus the margin).
    match &log[attached_at] {
        Action::Room(RoomCommand::AttachPeer {
            video: Some(v),
            video_srtcp_index,
            ..
        }) => {
            assert_eq!(v.params.payload_type, 96);
            assert!(*video_srtcp_index >= control::peer::VIDEO_SRTCP_PER_SEC + SRTCP_MARGIN);
        }
        other => panic!("AttachPeer without its video: {other:?}"),
    }
    // The browser keeps receiving the stream of its answer.
    let stream = t.backup.mixers[&a.room]
        .output_stream(a.id)
        .expect("resumed stream");
    assert_eq!(stream.ssrc, a.ssrc);
    assert!(answer_has(
        &a.answer,
        &format!("a=ice-ufrag:{}", a.local.ufrag)
    ));
    // B had no keys: nothing of it continues, and its room (B alone) is not resumed.
    assert!(!log
        .iter()
        .any(|x| matches!(x, Action::ResumePeer { id, .. } if *id == t.b.id)));
    assert_eq!(room_commands_for(log, t.b.id), Vec::<&RoomCommand>::new());
    assert!(!log
        .iter()
        .any(|x| matches!(x, Action::Room(RoomCommand::Open { room, .. }) if *room == t.b.room)));
    assert!(log.contains(&Action::TakeoverComplete { calls: 0, rooms: 1 }));
    assert_eq!(t.backup.fault, None);
    assert!(t.backup.sent.is_empty());
}

#[test]
fn a_promoted_backup_resumes_a_keyed_browser_and_drops_one_still_handshaking() {
    let at = Duration::from_secs(48);
    for late in [false, true] {
        let t = takeover(at, late, untouched);
        check_resumed(&t, late);
        // The SRTCP index is past anything the primary can have used: more than the report
        // intervals since A joined, plus the margin...
        let intervals = ((at - A_JOINS).as_secs() / mixer::RTCP_INTERVAL.as_secs()) as u32;
        let index = srtcp_index(&t.log, t.a.id);
        assert!(index > intervals, "{index} <= {intervals}");
        assert!(index >= intervals + SRTCP_MARGIN, "{index}");
        // ... and more than the reports the primary's own mixer sent A meanwhile.
        let mut primary = t.primary;
        let m = primary.mixers.get_mut(&t.a.room).expect("primary's room");
        let mut reports = 0u32;
        let mut now = A_JOINS;
        while now <= at {
            m.handle_tick(now);
            while let Some(o) = m.poll_output() {
                reports += matches!(o, mixer::Output::Rtcp { to, .. } if to == t.a.id) as u32;
            }
            now += mixer::TICK;
        }
        assert!(reports > 0);
        assert!(index > reports, "index {index}, {reports} reports sent");
    }
    // Later takeover, later index.
    let later = Duration::from_secs(481);
    let t = takeover(later, false, untouched);
    let intervals = ((later - A_JOINS).as_secs() / mixer::RTCP_INTERVAL.as_secs()) as u32;
    let index = srtcp_index(&t.log, t.a.id);
    assert!(index >= intervals + SRTCP_MARGIN, "{index} for {intervals}");
}

#[test]
fn after_a_takeover_the_next_browser_gets_what_the_primary_would_have_given_it() {
    let at = Duration::from_secs(30);
    let mut t = takeover(at, false, untouched);
    let mut answers = Vec::new();
    for n in [&mut t.primary, &mut t.backup] {
        let c = join(n, 9, "standup");
        answers.push((c.id, c.local, c.answer));
    }
    assert_eq!(answers[0], answers[1]);
}

#[test]
fn a_resumed_browser_is_a_member_of_its_room_on_the_new_primary() {
    let mut t = takeover(Duration::from_secs(30), false, untouched);
    let d = join(&mut t.backup, 9, "standup").id;
    // The newcomer leaving does not close the room under the resumed participant, which
    // leaves through its resource, last.
    let log = delete(&mut t.backup, 10, "standup", d);
    assert!(log.contains(&Action::Room(RoomCommand::Leave {
        room: t.a.room,
        call: d
    })));
    assert!(
        !log.contains(&Action::Room(RoomCommand::Close { room: t.a.room })),
        "room closed under the resumed participant: {log:?}"
    );
    let mut log = delete(&mut t.backup, 11, "standup", t.a.id);
    log.retain(|x| !matches!(x, Action::Replicate { .. }));
    assert_eq!(
        log,
        vec![
            Action::ClosePeer { id: t.a.id },
            Action::Room(RoomCommand::Leave {
                room: t.a.room,
                call: t.a.id
            }),
            Action::Room(RoomCommand::Close { room: t.a.room }),
            Action::WhipReply {
                request: 11,
                result: WhipResult::Deleted
            },
        ]
    );
}

#[test]
fn negative_control_without_the_peer_records_the_backup_resumes_nothing() {
    fn no_peers(e: &mut Entry) {
        e.items
            .retain(|i| !matches!(i, Item::Peer(_) | Item::PeerEnded { .. }));
    }
    for late in [false, true] {
        let t = takeover(Duration::from_secs(48), late, no_peers);
        assert!(
            !t.log.iter().any(|x| matches!(
                x,
                Action::ResumePeer { .. } | Action::Room(RoomCommand::AttachPeer { .. })
            )),
            "{:?}",
            t.log
        );
        assert!(t
            .log
            .contains(&Action::TakeoverComplete { calls: 0, rooms: 0 }));
    }
}

// ---- 4. refusals and DELETE -----------------------------------------------------------

/// The only thing a refused POST produces: its reply.
fn refusal(n: &mut Node, request: u64, room: &str, offer: &str) -> (u16, String) {
    match post(n, request, room, offer).as_slice() {
        [Action::WhipReply {
            request: r,
            result: WhipResult::Refused { status, reason },
        }] if *r == request => (*status, reason.clone()),
        other => panic!("expected a refusal alone: {other:?}"),
    }
}

#[test]
fn refused_offers_get_their_status_and_nothing_else() {
    let mut n = node(Role::Standalone);
    let (s, why) = refusal(&mut n, 1, "standup", "this is not SDP");
    assert_eq!(s, 400);
    assert!(why.contains("malformed"), "{why}");
    let no_mux = OFFER.replace("a=rtcp-mux\r\n", "");
    let (s, why) = refusal(&mut n, 2, "standup", &no_mux);
    assert_eq!(s, 400);
    assert!(why.contains("rtcp-mux"), "{why}");
    let no_opus = OFFER.replace("a=rtpmap:111 opus/48000/2\r\n", "");
    let (s, why) = refusal(&mut n, 3, "standup", &no_opus);
    assert_eq!(s, 400);
    assert!(why.contains("opus"), "{why}");
    for bad in ["", "a b", "../etc", "caf\u{e9}", "a\r\nX-Forged: 1"] {
        assert_eq!(refusal(&mut n, 4, bad, OFFER).0, 404, "{bad:?}");
    }
    // config() allows 4 per room.
    for r in 0..4 {
        join(&mut n, 10 + r, "standup");
    }
    assert_eq!(
        refusal(&mut n, 20, "standup", OFFER),
        (503, "room full".into())
    );
    join(&mut n, 21, "retro");

    let mut b = node(Role::Backup);
    assert_eq!(refusal(&mut b, 1, "standup", OFFER).0, 503);
    let mut off = Node::new(Role::Standalone);
    assert_eq!(refusal(&mut off, 1, "standup", OFFER).0, 404);
}

#[test]
fn a_full_room_counts_browsers_and_sip_calls_alike() {
    let mut c = webrtc_config();
    c.max_participants = 2;
    let mut n = Node::with_config(c, Role::Standalone);
    join(&mut n, 1, "standup");
    let mut ua = Ua::new(0, "alice", "standup");
    let m = ua.request("INVITE", 1, true, Some(PCMU));
    n.sip(ua.addr, &m);
    n.rooms();
    out(&mut n);
    assert_eq!(
        refusal(&mut n, 2, "standup", OFFER),
        (503, "room full".into())
    );
    let mut bob = Ua::new(1, "bob", "standup");
    let m = bob.request("INVITE", 1, true, Some(PCMU));
    n.sip(bob.addr, &m);
    assert!(
        n.sent
            .iter()
            .any(|t| t.to == bob.addr && t.data.starts_with(b"SIP/2.0 486")),
        "bob is refused"
    );
}

#[test]
fn delete_of_an_unknown_participant_is_404_and_of_a_known_one_leaves_the_room() {
    let mut n = node(Role::Standalone);
    let a = join(&mut n, 1, "standup");
    let b = join(&mut n, 2, "standup");
    let none = refused(404, "no such participant");
    assert_eq!(
        delete(&mut n, 3, "standup", a.id + 100),
        vec![Action::WhipReply {
            request: 3,
            result: none.clone()
        }]
    );
    // The resource is /whip/{room}/{id}: another room's path does not name it.
    assert_eq!(
        delete(&mut n, 4, "retro", a.id),
        vec![Action::WhipReply {
            request: 4,
            result: none.clone()
        }]
    );
    let log = delete(&mut n, 5, "standup", a.id);
    assert!(log.contains(&Action::ClosePeer { id: a.id }));
    assert!(log.contains(&Action::Room(RoomCommand::Leave {
        room: a.room,
        call: a.id
    })));
    assert!(!log
        .iter()
        .any(|x| matches!(x, Action::Room(RoomCommand::Close { .. }))));
    assert_eq!(whip_replies(&log), vec![(5, WhipResult::Deleted)]);
    // Twice: gone.
    assert_eq!(
        whip_replies(&delete(&mut n, 6, "standup", a.id)),
        vec![(6, none)]
    );
    // The last one closes the room.
    let log = delete(&mut n, 7, "standup", b.id);
    assert_eq!(
        log,
        vec![
            Action::ClosePeer { id: b.id },
            Action::Room(RoomCommand::Leave {
                room: b.room,
                call: b.id
            }),
            Action::Room(RoomCommand::Close { room: b.room }),
            Action::WhipReply {
                request: 7,
                result: WhipResult::Deleted
            },
        ]
    );
}

// ---- 5. the transport gives up, the media stop -------------------------------------------

#[test]
fn a_participant_whose_transport_is_gone_leaves_its_room() {
    let mut n = node(Role::Standalone);
    let a = join(&mut n, 1, "standup");
    let b = join(&mut n, 2, "standup");
    let log = input(&mut n, a.id, PeerInput::Gone("consent expired".into()));
    assert_eq!(
        log,
        vec![
            Action::ClosePeer { id: a.id },
            Action::Room(RoomCommand::Leave {
                room: a.room,
                call: a.id
            }),
        ]
    );
    // Reported again: nothing more.
    assert_eq!(input(&mut n, a.id, PeerInput::Gone("again".into())), vec![]);
    // The media timeout of the last one: it leaves and the room closes.
    n.core.handle_room_event(
        RoomEvent::MediaTimeout {
            room: b.room,
            call: b.id,
        },
        n.now,
    );
    n.drain();
    assert_eq!(
        out(&mut n),
        vec![
            Action::ClosePeer { id: b.id },
            Action::Room(RoomCommand::Leave {
                room: b.room,
                call: b.id
            }),
            Action::Room(RoomCommand::Close { room: b.room }),
        ]
    );
    assert_eq!(n.core.stats().media_timeouts, 1);
}

#[test]
fn a_browser_gone_before_its_answer_gets_an_error_reply() {
    let mut n = node(Role::Standalone);
    let log = post(&mut n, 1, "standup", OFFER);
    let (id, _) = opened(&log).unwrap();
    let room = joined_room(&log, id).unwrap();
    let log = input(&mut n, id, PeerInput::Gone("DTLS handshake failed".into()));
    assert_eq!(
        whip_replies(&log),
        vec![(1, refused(500, "DTLS handshake failed"))]
    );
    assert!(log.contains(&Action::ClosePeer { id }));
    assert!(log.contains(&Action::Room(RoomCommand::Leave { room, call: id })));
    // The room's late reply: no answer for a participant that is gone.
    n.rooms();
    assert!(whip_replies(&out(&mut n)).is_empty());
}

#[test]
fn a_browser_its_room_refuses_gets_an_error_reply() {
    let mut n = node(Role::Standalone);
    let log = post(&mut n, 1, "standup", OFFER);
    let (id, _) = opened(&log).unwrap();
    let room = joined_room(&log, id).unwrap();
    n.replies.clear();
    n.core.handle_room_event(
        RoomEvent::JoinFailed {
            room,
            call: id,
            reason: "no Opus encoder".into(),
        },
        n.now,
    );
    n.drain();
    let log = out(&mut n);
    assert_eq!(
        whip_replies(&log),
        vec![(1, refused(500, "no Opus encoder"))]
    );
    assert!(log.contains(&Action::ClosePeer { id }));
    assert!(log.contains(&Action::Room(RoomCommand::Close { room })));
}

// ---- 6. SIP calls and browsers in one room --------------------------------------------------

#[test]
fn a_sip_call_and_a_browser_share_a_room() {
    // The SIP call alone, for reference.
    let mut alone = node(Role::Standalone);
    let mut ua = Ua::new(0, "alice", "standup");
    let invite = ua.request("INVITE", 1, true, Some(PCMU));
    alone.sip(ua.addr, &invite);
    alone.rooms();
    let reference = alone.sent.clone();

    let mut n = node(Role::Standalone);
    n.sip(ua.addr, &invite);
    n.rooms();
    let sip_log = out(&mut n);
    let peer = join(&mut n, 1, "standup");
    assert_eq!(n.sent, reference, "the SIP call's answer is the same");
    let ok = String::from_utf8_lossy(&n.sent.last().unwrap().data).to_string();
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");

    let call = *n.core.calls().keys().next().expect("the call");
    // The browser joins the room the call opened.
    assert!(
        sip_log.iter().any(|x| matches!(x,
        Action::Room(RoomCommand::Join { room, call: c, .. }) if *room == peer.room && *c == call))
    );
    assert_eq!(n.mixers.len(), 1, "one room");
    let mixer = &n.mixers[&peer.room];
    let mut members = mixer.participant_ids();
    members.sort();
    assert_eq!(members, vec![call, peer.id], "both in one mixer");
    assert_eq!(n.mixers.len(), 1, "one room");
    assert_ne!(
        mixer.output_stream(call).unwrap().ssrc,
        mixer.output_stream(peer.id).unwrap().ssrc
    );

    // The call hangs up: the browser stays, the room too.
    ua.to_tag = header(&ok, "To")
        .and_then(|v| v.split(";tag=").nth(1))
        .map(str::to_string);
    let ack = ua.request("ACK", 1, true, None);
    n.sip(ua.addr, &ack);
    let bye = ua.request("BYE", 2, true, None);
    n.sip(ua.addr, &bye);
    let log = out(&mut n);
    assert!(log.contains(&Action::Room(RoomCommand::Leave {
        room: peer.room,
        call
    })));
    assert!(!log.iter().any(|x| matches!(
        x,
        Action::Room(RoomCommand::Close { .. }) | Action::ClosePeer { .. }
    )));
    assert_eq!(n.mixers[&peer.room].participant_ids(), vec![peer.id]);
    // The browser leaves last: the room closes.
    let log = delete(&mut n, 2, "standup", peer.id);
    assert!(log.contains(&Action::Room(RoomCommand::Close { room: peer.room })));
    assert!(n.mixers.is_empty());
}

// ---- 7. the operator ------------------------------------------------------------------

fn admin(n: &mut Node, request: u64, cmd: control::AdminCommand) -> Vec<Action> {
    n.core.handle_admin(request, cmd, n.now);
    n.drain();
    out(n)
}

#[test]
fn the_operator_mutes_and_kicks_a_browser_and_a_locked_room_refuses_the_next_with_403() {
    use control::{AdminCommand, AdminResult, SettingsChange};
    let mut n = node(Role::Standalone);
    let a = join(&mut n, 1, "standup");
    let b = join(&mut n, 2, "standup");
    let log = admin(
        &mut n,
        3,
        AdminCommand::Mute {
            room: "standup".into(),
            id: a.id,
            muted: true,
        },
    );
    assert!(log.contains(&Action::Room(RoomCommand::Mute {
        room: a.room,
        call: a.id,
        muted: true
    })));
    assert!(n.core.peers()[&a.id].muted);
    assert!(n.mixers[&a.room].is_muted(a.id) == Some(true));
    // Kicked: its session closes as a WHIP DELETE would close it.
    let log = admin(
        &mut n,
        4,
        AdminCommand::Kick {
            room: "standup".into(),
            id: a.id,
        },
    );
    assert!(log.contains(&Action::ClosePeer { id: a.id }));
    assert!(log.contains(&Action::Room(RoomCommand::Leave {
        room: a.room,
        call: a.id
    })));
    assert!(log.contains(&Action::AdminReply {
        request: 4,
        result: AdminResult::Kicked {
            room: "standup".into(),
            id: a.id
        }
    }));
    assert!(!n.core.peers().contains_key(&a.id));
    let lock = AdminCommand::Settings {
        room: "standup".into(),
        change: SettingsChange {
            locked: Some(true),
            max_participants: None,
            layout: None,
        },
    };
    admin(&mut n, 5, lock);
    assert_eq!(
        refusal(&mut n, 6, "standup", OFFER),
        (403, "room locked".into())
    );
    assert!(n.core.peers().contains_key(&b.id), "those in stay");
    // A room's own limit refuses browsers like a full room.
    let cap = AdminCommand::Settings {
        room: "standup".into(),
        change: SettingsChange {
            locked: Some(false),
            max_participants: Some(1),
            layout: None,
        },
    };
    admin(&mut n, 7, cap);
    assert_eq!(
        refusal(&mut n, 8, "standup", OFFER),
        (503, "room full".into())
    );
}

#[test]
fn a_browser_kicked_while_joining_gets_a_403_reply() {
    use control::AdminCommand;
    let mut n = node(Role::Standalone);
    let first = post(&mut n, 1, "standup", OFFER);
    let (id, _) = opened(&first).expect("OpenPeer");
    let log = admin(
        &mut n,
        2,
        AdminCommand::Kick {
            room: "standup".into(),
            id,
        },
    );
    assert_eq!(
        whip_replies(&log),
        vec![(1, refused(403, "removed by the operator"))]
    );
    n.rooms();
    assert!(!n.core.peers().contains_key(&id));
}

// ---- video -----------------------------------------------------------------------------

/// The `m=video` line of an answer and the attributes up to the next m= line.
fn video_section(sdp: &str) -> Vec<&str> {
    sdp.split("\r\n")
        .skip_while(|l| !l.starts_with("m=video"))
        .take_while(|l| !l.is_empty())
        .enumerate()
        .take_while(|(i, l)| *i == 0 || !l.starts_with("m="))
        .map(|(_, l)| l)
        .collect()
}

#[test]
fn bundled_vp8_joins_the_forwarder_and_the_answer_announces_our_video_ssrc() {
    let mut n = node(Role::Standalone);
    let first = post(&mut n, 3, "cams", OFFER);
    let video = first
        .iter()
        .find_map(|a| match a {
            Action::Room(RoomCommand::JoinPeer { video, .. }) => Some(*video),
            _ => None,
        })
        .expect("JoinPeer");
    let v = video.expect("the Chromium offer's VP8 line is accepted");
    assert_eq!(v.params.payload_type, 96);
    assert!(v.params.send && v.params.recv);
    assert!(v.params.feedback.nack && v.params.feedback.pli && v.params.feedback.fir);
    assert!(v.params.feedback.remb);
    assert_eq!(
        v.source_ssrc,
        Some(1180565524),
        "the primary SSRC of its FID group"
    );

    let (id, _) = opened(&first).expect("OpenPeer");
    pending_ssrc(&n, id).expect("the room adds it");
    n.rooms();
    let sdp = match whip_replies(&out(&mut n)).as_slice() {
        [(3, WhipResult::Created { sdp, .. })] => sdp.clone(),
        other => panic!("expected 201 Created: {other:?}"),
    };
    // The harness's rooms answer with video SSRC 0x7000_0000 | (id & 0xffff).
    let ssrc = 0x7000_0000 | (id as u32 & 0xffff);
    let section = video_section(&sdp);
    assert_eq!(
        section.first().copied(),
        Some(format!("m=video {WEBRTC_PORT} UDP/TLS/RTP/SAVPF 96").as_str()),
        "{sdp}"
    );
    assert!(section.contains(&format!("a=ssrc:{ssrc} cname:understudy-{id}").as_str()));
    assert!(section.contains(&"a=rtcp-fb:96 nack pli"), "{sdp}");
    assert!(answer_has(&sdp, "a=group:BUNDLE 0 1"), "{sdp}");
    // Replicated with the participant, and so is its progress (the rollover counter a
    // resumed video stream continues with).
    assert_eq!(n.core.peers()[&id].video_ssrc_out, Some(ssrc));
    let ext_seq = (3 << 16) + 17;
    input(&mut n, id, PeerInput::OutboundProgress { ssrc, ext_seq });
    assert_eq!(n.core.peers()[&id].out_progress.get(&ssrc), Some(&ext_seq));
}

#[test]
fn an_audio_only_server_declines_the_browsers_video() {
    let mut cfg = webrtc_config();
    cfg.video = false;
    let mut n = Node::with_config(cfg, Role::Standalone);
    let first = post(&mut n, 4, "voice", OFFER);
    assert!(first
        .iter()
        .any(|a| matches!(a, Action::Room(RoomCommand::JoinPeer { video: None, .. }))));
    let (id, _) = opened(&first).expect("OpenPeer");
    pending_ssrc(&n, id).expect("the room adds it");
    n.rooms();
    let sdp = match whip_replies(&out(&mut n)).as_slice() {
        [(4, WhipResult::Created { sdp, .. })] => sdp.clone(),
        other => panic!("expected 201 Created: {other:?}"),
    };
    assert_eq!(
        video_section(&sdp),
        [
            "m=video 0 UDP/TLS/RTP/SAVPF 96",
            "c=IN IP4 0.0.0.0",
            "a=mid:1"
        ]
    );
    assert!(answer_has(&sdp, "a=group:BUNDLE 0"), "{sdp}");
}
