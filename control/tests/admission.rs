//! Admission, limits and output commit, as a SIP client sees them: the status of the
//! response it gets, and when it gets it.

mod common;

use common::*;
use control::{Action, Core, Role, RoomEvent};
use std::time::Duration;

fn status(t: &sip_core::Transmit) -> Option<u16> {
    let text = std::str::from_utf8(&t.data).ok()?;
    text.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

/// Final statuses the node sent to INVITEs (provisional ones skipped).
fn finals(n: &Node) -> Vec<u16> {
    n.sent
        .iter()
        .filter(|t| String::from_utf8_lossy(&t.data).contains(" INVITE\r\n"))
        .filter_map(status)
        .filter(|s| *s >= 200)
        .collect()
}

fn invite(n: &mut Node, ua: &mut Ua, offer: Option<&str>) {
    ua.cseq += 1;
    let m = ua.request("INVITE", ua.cseq, true, offer);
    n.sip(ua.addr, &m);
}

#[test]
fn a_full_room_refuses_with_486_and_other_rooms_still_admit() {
    let mut n = Node::new(Role::Standalone);
    let mut c = config();
    c.max_participants = 2;
    n.core = Core::new(c, Role::Standalone, 0);
    for i in 0..3 {
        let mut ua = Ua::new(i, ["a", "b", "c"][i], "standup");
        invite(&mut n, &mut ua, Some(PCMU));
        n.rooms();
    }
    let mut other = Ua::new(3, "d", "retro");
    invite(&mut n, &mut other, Some(PCMU));
    n.rooms();
    assert_eq!(finals(&n), vec![200, 200, 486, 200]);
}

#[test]
fn no_room_404_unsupported_codec_488_malformed_sdp_400() {
    let mut n = Node::new(Role::Standalone);
    let mut ua = Ua::new(0, "a", "");
    let m = ua.request("INVITE", 1, true, Some(PCMU));
    n.sip(ua.addr, &m.replace("INVITE sip:@", "INVITE sip:"));
    let g729 = PCMU.replace("RTP/AVP 0 101", "RTP/AVP 18");
    let mut ua = Ua::new(1, "b", "standup");
    invite(&mut n, &mut ua, Some(&g729));
    let mut ua = Ua::new(2, "c", "standup");
    invite(&mut n, &mut ua, Some("this is not SDP"));
    assert_eq!(finals(&n), vec![404, 488, 400]);
    assert!(n.core.is_idle());
    assert_eq!(n.core.stats().calls_rejected, 3);
}

#[test]
fn ports_the_os_refuses_are_skipped_and_exhaustion_gives_503() {
    let mut c = config();
    c.rtp_port_min = 30000;
    c.rtp_port_max = 30005; // three pairs
    let mut core = Core::new(c, Role::Standalone, 0);
    let mut ua = Ua::new(0, "a", "standup");
    ua.cseq = 1;
    let m = ua.request("INVITE", 1, true, Some(PCMU));
    core.handle_sip_datagram(ua.addr, m.as_bytes(), Duration::ZERO);
    // The driver cannot bind 30000 nor 30002 (taken by someone else); 30004 works.
    let mut tried = Vec::new();
    let mut joined = false;
    while let Some(a) = core.poll_action() {
        match a {
            Action::OpenMedia { call, port } => {
                tried.push(port);
                core.handle_media_opened(call, port, port == 30004, Duration::ZERO);
            }
            Action::Room(control::RoomCommand::Join {
                call, room, media, ..
            }) => {
                assert_eq!(media.port, 30004);
                joined = true;
                core.handle_room_event(
                    RoomEvent::Joined {
                        room,
                        call,
                        ssrc: 1,
                        video_ssrc: None,
                        snapshot: None,
                    },
                    Duration::ZERO,
                );
            }
            _ => {}
        }
    }
    assert_eq!(tried, vec![30000, 30002, 30004]);
    assert!(joined);
    // Every pair refused: 503.
    let mut ua = Ua::new(1, "b", "standup");
    let m = ua.request("INVITE", 1, true, Some(PCMU));
    core.handle_sip_datagram(ua.addr, m.as_bytes(), Duration::ZERO);
    let mut statuses = Vec::new();
    while let Some(a) = core.poll_action() {
        match a {
            Action::OpenMedia { call, port } => {
                core.handle_media_opened(call, port, false, Duration::ZERO)
            }
            Action::SendSip { transmit, .. } => statuses.extend(status(&transmit)),
            _ => {}
        }
    }
    assert_eq!(statuses.last(), Some(&503), "{statuses:?}");
}

#[test]
fn a_participant_the_mixer_refuses_gets_500() {
    let mut core = Core::new(config(), Role::Standalone, 0);
    let ua = Ua::new(0, "a", "standup");
    let mut ua = ua;
    let m = ua.request("INVITE", 1, true, Some(PCMU));
    core.handle_sip_datagram(ua.addr, m.as_bytes(), Duration::ZERO);
    let mut statuses = Vec::new();
    while let Some(a) = core.poll_action() {
        match a {
            Action::OpenMedia { call, port } => {
                core.handle_media_opened(call, port, true, Duration::ZERO)
            }
            Action::Room(control::RoomCommand::Join { call, room, .. }) => core.handle_room_event(
                RoomEvent::JoinFailed {
                    room,
                    call,
                    reason: "codec unavailable".into(),
                },
                Duration::ZERO,
            ),
            Action::SendSip { transmit, .. } => statuses.extend(status(&transmit)),
            _ => {}
        }
    }
    assert_eq!(statuses.last(), Some(&500), "{statuses:?}");
}

#[test]
fn a_primary_holds_the_200_until_the_backup_acknowledged_its_state() {
    let mut core = Core::new(config(), Role::Primary, 0);
    let mut ua = Ua::new(0, "a", "standup");
    let m = ua.request("INVITE", 1, true, Some(PCMU));
    let t0 = Duration::from_millis(5);
    core.handle_sip_datagram(ua.addr, m.as_bytes(), t0);
    let mut sent = Vec::new();
    let mut seqs: Vec<u64> = Vec::new();
    let drain = |core: &mut Core,
                 sent: &mut Vec<(u16, Option<Duration>)>,
                 seqs: &mut Vec<u64>,
                 now| {
        while let Some(a) = core.poll_action() {
            match a {
                Action::OpenMedia { call, port } => core.handle_media_opened(call, port, true, now),
                Action::Room(control::RoomCommand::Join { call, room, .. }) => core
                    .handle_room_event(
                        RoomEvent::Joined {
                            room,
                            call,
                            ssrc: 7,
                            video_ssrc: None,
                            snapshot: None,
                        },
                        now,
                    ),
                Action::Replicate { seq, entry } => {
                    assert!(!entry.items.is_empty());
                    seqs.push(seq);
                }
                Action::SendSip { transmit, held } => {
                    sent.push((status(&transmit).unwrap_or(0), held))
                }
                _ => {}
            }
        }
    };
    drain(&mut core, &mut sent, &mut seqs, t0);
    assert!(
        sent.is_empty(),
        "nothing leaves before the backup has it: {sent:?}"
    );
    assert!(core.held().0 > 0);
    let last = *seqs.last().expect("replicated");
    // Acknowledging an older entry releases only what that entry covered.
    core.handle_committed(last - 1, t0 + Duration::from_millis(1));
    drain(&mut core, &mut sent, &mut seqs, t0);
    assert!(sent.iter().all(|(s, _)| *s != 200), "{sent:?}");
    core.handle_committed(last, t0 + Duration::from_millis(2));
    drain(&mut core, &mut sent, &mut seqs, t0);
    let ok = sent.iter().find(|(s, _)| *s == 200).expect("200 released");
    assert_eq!(ok.1, Some(Duration::from_millis(2)));
    assert_eq!(core.held().0, 0);
}

#[test]
fn a_backup_serves_nothing_and_a_standalone_replicates_nothing() {
    let mut b = Node::new(Role::Backup);
    let mut ua = Ua::new(0, "a", "standup");
    invite(&mut b, &mut ua, Some(PCMU));
    assert!(b.sent.is_empty());
    assert!(b.core.is_idle());
    let mut s = Node::new(Role::Standalone);
    invite(&mut s, &mut ua, Some(PCMU));
    s.rooms();
    assert_eq!(finals(&s), vec![200]);
    assert!(s.entries.is_empty());
}
