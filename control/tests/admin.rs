//! An operator's decisions (mute, kick, room lock and size), in virtual time, as the clients
//! and the operator observe them: the SIP responses and requests the callers get, what the
//! rooms are told (and what their real mixers then put in the mix), the answer to the
//! operator and when it is released; and that a promoted backup keeps every decision.

mod common;

use common::*;
use control::{
    Action, AdminCommand, AdminError, AdminResult, Role, RoomCommand, RoomSettings, SettingsChange,
    VideoLayout,
};
use std::time::Duration;

fn status_line(t: &sip_core::Transmit) -> String {
    String::from_utf8_lossy(&t.data)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Final response status lines to INVITEs (provisional ones skipped).
fn invite_finals(n: &Node) -> Vec<String> {
    n.sent
        .iter()
        .filter(|t| String::from_utf8_lossy(&t.data).contains(" INVITE\r\n"))
        .map(status_line)
        .filter(|l| l.starts_with("SIP/2.0 ") && !l.starts_with("SIP/2.0 1"))
        .collect()
}

/// INVITE, room reply, ACK: the UA is in its room.
fn join(n: &mut Node, ua: &mut Ua) -> u64 {
    ua.cseq += 1;
    let m = ua.request("INVITE", ua.cseq, true, Some(PCMU));
    n.sip(ua.addr, &m);
    n.rooms();
    let ok = n
        .sent
        .iter()
        .rev()
        .map(|t| String::from_utf8_lossy(&t.data).to_string())
        .find(|t| t.starts_with("SIP/2.0 200") && t.contains(&ua.call_id))
        .expect("200 OK");
    ua.to_tag = header(&ok, "To")
        .and_then(|v| v.split(";tag=").nth(1))
        .map(str::to_string);
    let ack = ua.request("ACK", ua.cseq, true, None);
    n.sip(ua.addr, &ack);
    call_of(n, ua)
}

fn call_of(n: &Node, ua: &Ua) -> u64 {
    let uri = format!("sip:{}@{}", ua.name, ua.addr.ip());
    n.core
        .calls()
        .values()
        .find(|c| c.from_uri == uri)
        .map(|c| c.call)
        .expect("the UA's call")
}

/// The operator's request; the answer released for it (if any yet).
fn admin(n: &mut Node, request: u64, cmd: AdminCommand) -> Option<AdminResult> {
    n.core.handle_admin(request, cmd, n.now);
    n.drain();
    reply(n, request)
}

fn reply(n: &Node, request: u64) -> Option<AdminResult> {
    n.log.iter().find_map(|a| match a {
        Action::AdminReply { request: r, result } if *r == request => Some(result.clone()),
        _ => None,
    })
}

fn mute(room: &str, id: u64, muted: bool) -> AdminCommand {
    AdminCommand::Mute {
        room: room.into(),
        id,
        muted,
    }
}

fn settings(room: &str, locked: Option<bool>, max: Option<usize>) -> AdminCommand {
    AdminCommand::Settings {
        room: room.into(),
        change: SettingsChange {
            locked,
            max_participants: max,
            layout: None,
        },
    }
}

fn room_id(n: &Node, call: u64) -> u64 {
    n.mixers
        .iter()
        .find(|(_, m)| m.participant_ids().contains(&call))
        .map(|(id, _)| *id)
        .expect("the call is in a room")
}

/// A 20 ms PCMU packet of a loud 400 Hz tone.
fn loud_pcmu(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    for i in 0..160u32 {
        let t = f64::from(u32::from(seq) * 160 + i) / 8000.0;
        let v = 12000.0 * (2.0 * std::f64::consts::PI * 400.0 * t).sin();
        p.push(mixer::g711::linear_to_ulaw(v as i16));
    }
    p
}

/// Both calls talk loudly into room `room` of `n` for a second (real mixer, virtual time).
fn talk(n: &mut Node, room: u64, talkers: &[u64]) {
    let m = n.mixers.get_mut(&room).expect("room open");
    let t0 = n.now;
    for k in 0..50u16 {
        let now = t0 + Duration::from_millis(20 * u64::from(k));
        for (i, id) in talkers.iter().enumerate() {
            m.handle_rtp(*id, &loud_pcmu(k, 0x100 + i as u32), now);
        }
        m.handle_tick(now + Duration::from_millis(1));
        while m.poll_output().is_some() {}
    }
}

#[test]
fn mute_tells_the_room_and_the_muted_talker_stays_out_of_the_mix() {
    let mut n = Node::new(Role::Standalone);
    let (mut a, mut b) = (Ua::new(0, "alice", "standup"), Ua::new(1, "bob", "standup"));
    let (ca, cb) = (join(&mut n, &mut a), join(&mut n, &mut b));
    let room = room_id(&n, ca);
    let r = admin(&mut n, 1, mute("standup", ca, true));
    assert_eq!(
        r,
        Some(AdminResult::Muted {
            room: "standup".into(),
            id: ca,
            muted: true
        })
    );
    assert!(n.log.contains(&Action::Room(RoomCommand::Mute {
        room,
        call: ca,
        muted: true
    })));
    assert!(n.core.is_muted(ca) && n.core.call(ca).unwrap().muted);
    talk(&mut n, room, &[ca, cb]);
    let m = &n.mixers[&room];
    let (sa, sb) = (m.stats(ca).unwrap(), m.stats(cb).unwrap());
    assert!(
        sa.speaking && !sa.in_mix,
        "muted: measured, not mixed: {sa:?}"
    );
    assert!(sb.in_mix, "{sb:?}");
    assert_ne!(m.active_speaker(), Some(ca));
    // Muting again changes nothing and tells the room nothing new; unmuting puts it back.
    let before = n.log.len();
    admin(&mut n, 2, mute("standup", ca, true));
    assert!(!n.log[before..]
        .iter()
        .any(|a| matches!(a, Action::Room(RoomCommand::Mute { .. }))));
    admin(&mut n, 3, mute("standup", ca, false));
    talk(&mut n, room, &[ca, cb]);
    assert!(n.mixers[&room].stats(ca).unwrap().in_mix);
    assert!(!n.core.is_muted(ca));
}

#[test]
fn unknown_rooms_and_participants_are_refused_and_change_nothing() {
    let mut n = Node::new(Role::Standalone);
    let (mut a, mut f) = (Ua::new(0, "alice", "standup"), Ua::new(5, "frank", "retro"));
    let ca = join(&mut n, &mut a);
    let cf = join(&mut n, &mut f);
    let refused = |e| Some(AdminResult::Refused(e));
    assert_eq!(
        admin(&mut n, 1, mute("nosuch", ca, true)),
        refused(AdminError::UnknownRoom)
    );
    // A participant of another room is not one of this room's.
    assert_eq!(
        admin(&mut n, 2, mute("standup", cf, true)),
        refused(AdminError::UnknownParticipant)
    );
    assert_eq!(
        admin(&mut n, 3, mute("standup", 999_999, true)),
        refused(AdminError::UnknownParticipant)
    );
    let kick = AdminCommand::Kick {
        room: "retro".into(),
        id: ca,
    };
    assert_eq!(
        admin(&mut n, 4, kick),
        refused(AdminError::UnknownParticipant)
    );
    assert_eq!(
        admin(&mut n, 5, settings("nosuch", Some(true), None)),
        refused(AdminError::UnknownRoom)
    );
    for bad in [0, 5] {
        assert_eq!(
            admin(&mut n, 6, settings("standup", Some(true), Some(bad))),
            refused(AdminError::InvalidMaxParticipants { server_max: 4 }),
            "{bad}"
        );
    }
    assert!(!n.core.is_muted(ca) && !n.core.is_muted(cf));
    assert_eq!(
        n.core.room_settings("standup"),
        Some(&RoomSettings::default())
    );
    assert!(!n
        .log
        .iter()
        .any(|a| matches!(a, Action::Room(RoomCommand::Mute { .. }))));
    // A backup serves no operator.
    let mut b = Node::new(Role::Backup);
    assert_eq!(
        admin(&mut b, 7, mute("standup", ca, true)),
        refused(AdminError::NotServing)
    );
}

#[test]
fn a_primary_answers_the_operator_once_the_backup_holds_the_change() {
    let mut n = Node::new(Role::Primary);
    n.core.handle_backup_connected(n.now);
    n.drain();
    let mut a = Ua::new(0, "alice", "standup");
    let ca = join(&mut n, &mut a);
    n.auto_commit = false;
    n.entries.clear();
    assert_eq!(admin(&mut n, 1, mute("standup", ca, true)), None, "held");
    assert_eq!(
        admin(&mut n, 2, settings("standup", Some(true), None)),
        None
    );
    // What the backup is sent: the call's record muted, the room's record locked.
    let items: Vec<_> = n
        .entries
        .iter()
        .flat_map(|(e, _)| e.items.clone())
        .collect();
    assert!(items
        .iter()
        .any(|i| matches!(i, control::Item::Call(c) if c.call == ca && c.muted)));
    assert!(items
        .iter()
        .any(|i| matches!(i, control::Item::Room(r) if r.settings.locked)));
    let last = n.last_seq;
    n.commit(last);
    assert!(matches!(
        reply(&n, 1),
        Some(AdminResult::Muted { muted: true, .. })
    ));
    assert_eq!(
        reply(&n, 2),
        Some(AdminResult::Settings {
            room: "standup".into(),
            settings: RoomSettings {
                locked: true,
                max_participants: None,
                layout: None,
            },
            max_participants: 4,
            layout: VideoLayout::Switched,
        })
    );
}

#[test]
fn a_locked_room_refuses_new_callers_with_403_and_keeps_those_in() {
    let mut n = Node::new(Role::Standalone);
    let mut a = Ua::new(0, "alice", "standup");
    let ca = join(&mut n, &mut a);
    admin(&mut n, 1, settings("standup", Some(true), None));
    let mut b = Ua::new(1, "bob", "standup");
    b.cseq += 1;
    let m = b.request("INVITE", b.cseq, true, Some(PCMU));
    n.sip(b.addr, &m);
    n.rooms();
    // Another room still admits.
    let mut f = Ua::new(5, "frank", "retro");
    join(&mut n, &mut f);
    assert_eq!(
        invite_finals(&n),
        vec![
            "SIP/2.0 200 OK",
            "SIP/2.0 403 Room Locked",
            "SIP/2.0 200 OK"
        ]
    );
    assert!(n.core.call(ca).is_some(), "alice stays");
    // Unlocked: admitted again.
    admin(&mut n, 2, settings("standup", Some(false), None));
    let mut c = Ua::new(2, "carol", "standup");
    join(&mut n, &mut c);
    assert_eq!(invite_finals(&n).last().unwrap(), "SIP/2.0 200 OK");
}

#[test]
fn a_room_over_its_own_limit_refuses_with_486_and_its_settings_end_with_it() {
    let mut n = Node::new(Role::Standalone);
    let mut uas: Vec<Ua> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, name)| Ua::new(i, name, "standup"))
        .collect();
    let c0 = join(&mut n, &mut uas[0]);
    let c1 = join(&mut n, &mut uas[1]);
    let r = admin(&mut n, 1, settings("standup", None, Some(2)));
    assert!(matches!(
        r,
        Some(AdminResult::Settings {
            max_participants: 2,
            ..
        })
    ));
    uas[2].cseq += 1;
    let m = uas[2].request("INVITE", 1, true, Some(PCMU));
    n.sip(uas[2].addr, &m);
    n.rooms();
    assert_eq!(
        invite_finals(&n),
        vec!["SIP/2.0 200 OK", "SIP/2.0 200 OK", "SIP/2.0 486 Busy Here"]
    );
    // Lowered below the count: both stay.
    admin(&mut n, 2, settings("standup", Some(true), Some(1)));
    assert!(n.core.call(c0).is_some() && n.core.call(c1).is_some());
    // The last participants leave: the room, and its settings, are gone.
    for ua in uas.iter_mut().take(2) {
        ua.cseq += 1;
        let bye = ua.request("BYE", ua.cseq, true, None);
        n.sip(ua.addr, &bye);
        n.rooms();
    }
    assert_eq!(n.core.room_settings("standup"), None);
    assert_eq!(
        admin(&mut n, 3, settings("standup", Some(false), None)),
        Some(AdminResult::Refused(AdminError::UnknownRoom))
    );
    // Opened again under the same name: unlocked, the server's limit.
    let mut d = Ua::new(3, "d", "standup");
    join(&mut n, &mut d);
    assert_eq!(invite_finals(&n).last().unwrap(), "SIP/2.0 200 OK");
    assert_eq!(
        n.core.room_settings("standup"),
        Some(&RoomSettings::default())
    );
}

#[test]
fn kick_sends_bye_and_the_room_lets_go_of_the_caller() {
    let mut n = Node::new(Role::Standalone);
    let (mut a, mut b) = (Ua::new(0, "alice", "standup"), Ua::new(1, "bob", "standup"));
    let ca = join(&mut n, &mut a);
    join(&mut n, &mut b);
    let room = room_id(&n, ca);
    n.sent.clear();
    let r = admin(
        &mut n,
        1,
        AdminCommand::Kick {
            room: "standup".into(),
            id: ca,
        },
    );
    assert!(matches!(r, Some(AdminResult::Kicked { id, .. }) if id == ca));
    let bye = n
        .sent
        .iter()
        .map(|t| String::from_utf8_lossy(&t.data).to_string())
        .find(|t| t.starts_with("BYE "))
        .expect("BYE to the kicked caller");
    assert!(bye.contains(&a.call_id), "{bye}");
    assert!(n
        .log
        .contains(&Action::Room(RoomCommand::Leave { room, call: ca })));
    // Kicked once: a second kick finds no such participant.
    assert_eq!(
        admin(
            &mut n,
            2,
            AdminCommand::Kick {
                room: "standup".into(),
                id: ca
            }
        ),
        Some(AdminResult::Refused(AdminError::UnknownParticipant))
    );
    n.sip(a.addr, &answer_request(&bye, "200 OK"));
    assert!(n.core.call(ca).is_none());
}

#[test]
fn kick_before_the_answer_is_480_and_before_the_ack_a_bye_after_it() {
    let mut n = Node::new(Role::Standalone);
    // Still joining its room (the INVITE unanswered): 480.
    let mut a = Ua::new(0, "alice", "standup");
    a.cseq = 1;
    let m = a.request("INVITE", 1, true, Some(PCMU));
    n.sip(a.addr, &m);
    let ca = call_of(&n, &a);
    let kick = |id| AdminCommand::Kick {
        room: "standup".into(),
        id,
    };
    assert!(matches!(
        admin(&mut n, 1, kick(ca)),
        Some(AdminResult::Kicked { .. })
    ));
    n.rooms();
    assert_eq!(
        invite_finals(&n),
        vec!["SIP/2.0 480 Temporarily Unavailable"]
    );
    assert!(n.core.call(ca).is_none());
    // Answered, the ACK not yet in: out of the room at once, BYE once the ACK arrives.
    let mut b = Ua::new(1, "bob", "standup");
    b.cseq = 1;
    let m = b.request("INVITE", 1, true, Some(PCMU));
    n.sip(b.addr, &m);
    n.rooms();
    let ok = n
        .sent
        .iter()
        .map(|t| String::from_utf8_lossy(&t.data).to_string())
        .find(|t| t.starts_with("SIP/2.0 200") && t.contains(&b.call_id))
        .expect("200 OK");
    b.to_tag = header(&ok, "To")
        .and_then(|v| v.split(";tag=").nth(1))
        .map(str::to_string);
    let cb = call_of(&n, &b);
    let room = room_id(&n, cb);
    n.sent.clear();
    assert!(matches!(
        admin(&mut n, 2, kick(cb)),
        Some(AdminResult::Kicked { .. })
    ));
    assert!(n
        .log
        .contains(&Action::Room(RoomCommand::Leave { room, call: cb })));
    assert!(
        !n.sent
            .iter()
            .any(|t| String::from_utf8_lossy(&t.data).starts_with("BYE ")),
        "no BYE before the ACK"
    );
    let ack = b.request("ACK", 1, true, None);
    n.sip(b.addr, &ack);
    assert!(n
        .sent
        .iter()
        .any(|t| String::from_utf8_lossy(&t.data).starts_with("BYE ")));
}

#[test]
fn a_promoted_backup_keeps_the_mute_out_of_the_mix_and_the_lock() {
    let mut p = Node::new(Role::Primary);
    let mut b = Node::new(Role::Backup);
    p.core.handle_backup_connected(p.now);
    p.drain();
    let (mut ua, mut ub) = (Ua::new(0, "alice", "standup"), Ua::new(1, "bob", "standup"));
    let ca = join(&mut p, &mut ua);
    let cb = join(&mut p, &mut ub);
    admin(&mut p, 1, mute("standup", ca, true));
    admin(&mut p, 2, settings("standup", Some(true), Some(3)));
    // The primary's room never shipped a snapshot with the mute: the record must carry it.
    feed(&mut b, &mut p, untouched);
    b.now = p.now;
    b.core.handle_takeover(b.now);
    b.drain();
    let room = room_id(&b, ca);
    talk(&mut b, room, &[ca, cb]);
    let m = &b.mixers[&room];
    let (sa, sb) = (m.stats(ca).unwrap(), m.stats(cb).unwrap());
    assert!(sa.speaking && !sa.in_mix, "{sa:?}");
    assert!(sb.in_mix, "{sb:?}");
    assert_ne!(m.active_speaker(), Some(ca));
    assert!(b.core.is_muted(ca));
    assert_eq!(
        b.core.room_settings("standup"),
        Some(&RoomSettings {
            locked: true,
            max_participants: Some(3),
            layout: None,
        })
    );
    // A new caller gets what the primary would have said.
    let mut c = Ua::new(2, "carol", "standup");
    c.cseq = 1;
    let m = c.request("INVITE", 1, true, Some(PCMU));
    b.sip(c.addr, &m);
    b.rooms();
    assert_eq!(
        invite_finals(&b).last().map(String::as_str),
        Some("SIP/2.0 403 Room Locked")
    );
    // The operator keeps working against the new primary.
    assert!(matches!(
        admin(&mut b, 3, mute("standup", ca, false)),
        Some(AdminResult::Muted { muted: false, .. })
    ));
}

#[test]
fn a_primary_handing_over_refuses_the_operator_until_the_switchover_is_aborted() {
    let mut n = Node::new(Role::Primary);
    n.core.handle_backup_connected(n.now);
    n.drain();
    let mut a = Ua::new(0, "alice", "standup");
    let ca = join(&mut n, &mut a);
    n.core.handle_switchover(1_000, n.now).unwrap();
    n.drain();
    assert_eq!(
        admin(&mut n, 1, mute("standup", ca, true)),
        Some(AdminResult::Refused(AdminError::NotServing))
    );
    assert!(!n.core.is_muted(ca), "nothing decided while handing over");
    n.core.handle_switchover_aborted(n.now);
    n.drain();
    assert!(matches!(
        admin(&mut n, 2, mute("standup", ca, true)),
        Some(AdminResult::Muted { muted: true, .. })
    ));
}

fn layout(room: &str, layout: VideoLayout) -> AdminCommand {
    AdminCommand::Settings {
        room: room.into(),
        change: SettingsChange {
            layout: Some(layout),
            ..Default::default()
        },
    }
}

/// The layouts the room tasks were told, in order (Open, then changes).
fn layouts_told(n: &Node) -> Vec<VideoLayout> {
    n.log
        .iter()
        .filter_map(|a| match a {
            Action::Room(RoomCommand::Open { layout, .. })
            | Action::Room(RoomCommand::Layout { layout, .. }) => Some(*layout),
            _ => None,
        })
        .collect()
}

#[test]
fn the_video_layout_is_the_servers_until_the_operator_sets_it_and_survives_a_takeover() {
    let mut p = Node::new(Role::Primary);
    let mut b = Node::new(Role::Backup);
    p.core.handle_backup_connected(p.now);
    p.drain();
    let mut ua = Ua::new(0, "alice", "standup");
    let ca = join(&mut p, &mut ua);
    assert_eq!(
        layouts_told(&p),
        [VideoLayout::Switched],
        "the server's default"
    );
    let grid = admin(&mut p, 1, layout("standup", VideoLayout::Grid));
    assert!(
        matches!(&grid, Some(AdminResult::Settings { layout: VideoLayout::Grid, settings, .. })
            if settings.layout == Some(VideoLayout::Grid) && !settings.locked),
        "{grid:?}"
    );
    let room = room_id(&p, ca);
    assert_eq!(
        p.layouts[&room],
        VideoLayout::Grid,
        "the room task is told at once"
    );
    // Setting it again, or other settings, tells the room nothing new.
    admin(&mut p, 2, layout("standup", VideoLayout::Grid));
    admin(&mut p, 3, settings("standup", Some(true), None));
    assert_eq!(layouts_told(&p), [VideoLayout::Switched, VideoLayout::Grid]);
    // The backup has it: a takeover opens the room with it.
    feed(&mut b, &mut p, untouched);
    b.now = p.now;
    b.core.handle_takeover(b.now);
    b.drain();
    assert_eq!(layouts_told(&b), [VideoLayout::Grid]);
    assert_eq!(
        b.core.room_settings("standup").and_then(|s| s.layout),
        Some(VideoLayout::Grid)
    );
    // Back to switched on the new primary.
    let back = admin(&mut b, 4, layout("standup", VideoLayout::Switched));
    assert!(matches!(
        back,
        Some(AdminResult::Settings {
            layout: VideoLayout::Switched,
            ..
        })
    ));
    assert_eq!(b.layouts[&room_id(&b, ca)], VideoLayout::Switched);
}

#[test]
fn a_grid_rooms_compositor_snapshot_reaches_the_promoted_backups_room() {
    use control::RoomEvent;
    use video::snapshot::GridSnapshot;
    let mut p = Node::new(Role::Primary);
    let mut b = Node::new(Role::Backup);
    p.core.handle_backup_connected(p.now);
    p.drain();
    let mut ua = Ua::new(0, "alice", "standup");
    let ca = join(&mut p, &mut ua);
    admin(&mut p, 1, layout("standup", VideoLayout::Grid));
    let room = room_id(&p, ca);
    let snap = |tiles: Vec<Option<u64>>| GridSnapshot {
        next_picture_id: 77,
        speaker: Some(ca),
        tiles,
    };
    // The room task reports its compositor's tiles twice, then the last one wins.
    for tiles in [vec![Some(ca)], vec![Some(ca), None, Some(9)]] {
        p.core.handle_room_event(
            RoomEvent::GridSnapshot {
                room,
                snapshot: Some(Box::new(snap(tiles))),
            },
            p.now,
        );
        p.drain();
    }
    feed(&mut b, &mut p, untouched);
    b.now = p.now;
    b.core.handle_takeover(b.now);
    b.drain();
    let opened: Vec<_> = b
        .log
        .iter()
        .filter_map(|a| match a {
            Action::Room(RoomCommand::Open { grid, layout, .. }) => Some((grid.clone(), *layout)),
            _ => None,
        })
        .collect();
    assert_eq!(
        opened,
        [(
            Some(Box::new(snap(vec![Some(ca), None, Some(9)]))),
            VideoLayout::Grid
        )],
        "the resumed room continues the grid"
    );
    // A room that left grid layout says so: a takeover then starts no grid.
    let mut p2 = Node::new(Role::Primary);
    let mut b2 = Node::new(Role::Backup);
    p2.core.handle_backup_connected(p2.now);
    p2.drain();
    let mut ua2 = Ua::new(0, "bob", "standup");
    let cb = join(&mut p2, &mut ua2);
    let room2 = room_id(&p2, cb);
    for snapshot in [Some(Box::new(snap(vec![Some(cb)]))), None] {
        p2.core.handle_room_event(
            RoomEvent::GridSnapshot {
                room: room2,
                snapshot,
            },
            p2.now,
        );
        p2.drain();
    }
    feed(&mut b2, &mut p2, untouched);
    b2.now = p2.now;
    b2.core.handle_takeover(b2.now);
    b2.drain();
    assert!(b2
        .log
        .iter()
        .any(|a| matches!(a, Action::Room(RoomCommand::Open { grid: None, .. }))));
}

#[test]
fn a_server_default_grid_applies_to_rooms_that_set_none() {
    let mut c = config();
    c.video_layout = VideoLayout::Grid;
    let mut n = Node::with_config(c, Role::Standalone);
    let mut ua = Ua::new(0, "alice", "standup");
    join(&mut n, &mut ua);
    assert_eq!(layouts_told(&n), [VideoLayout::Grid]);
    let r = admin(&mut n, 1, settings("standup", None, None));
    assert!(
        matches!(&r, Some(AdminResult::Settings { layout: VideoLayout::Grid, settings, .. })
            if settings.layout.is_none()),
        "{r:?}"
    );
}
