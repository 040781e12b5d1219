//! Video calls through the control core, as the client and the room task see them: the
//! SDP answer (or offer) the client gets, the port pairs the driver is asked to bind, and
//! the video each room member is given (`RoomCommand::Join` / `Update`).

mod common;

use common::*;
use control::{Action, Config, Core, MemberVideo, Role, RoomCommand};
use std::collections::BTreeSet;
use std::time::Duration;

/// The body of the last 200 OK the node sent to INVITE number `cseq` of `ua`.
fn answer(n: &Node, ua: &Ua, cseq: u32) -> String {
    n.sent
        .iter()
        .map(|t| String::from_utf8_lossy(&t.data).to_string())
        .rfind(|m| {
            m.starts_with("SIP/2.0 200")
                && m.contains(&format!("Call-ID: {}", ua.call_id))
                && m.contains(&format!("CSeq: {cseq} INVITE"))
        })
        .map(|m| {
            m.split_once("\r\n\r\n")
                .map(|(_, b)| b.to_string())
                .unwrap_or_default()
        })
        .unwrap_or_else(|| panic!("no 200 OK to INVITE {cseq} of {}", ua.name))
}

/// Final statuses sent to INVITEs.
fn finals(n: &Node) -> Vec<u16> {
    n.sent
        .iter()
        .map(|t| String::from_utf8_lossy(&t.data).to_string())
        .filter(|m| m.starts_with("SIP/2.0 ") && m.contains(" INVITE\r\n"))
        .filter_map(|m| m.get(8..11)?.parse().ok())
        .filter(|s| *s >= 200)
        .collect()
}

/// `(media, port)` of every m= line of an SDP body.
fn m_lines(sdp: &str) -> Vec<(String, u16)> {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("m="))
        .map(|l| {
            let mut it = l.split(' ');
            let media = it.next().unwrap_or("").to_string();
            (
                media,
                it.next().and_then(|p| p.parse().ok()).unwrap_or(9999),
            )
        })
        .collect()
}

/// The ports the driver was asked to bind since `from` (an index into the node's log).
fn opened(n: &Node, from: usize) -> Vec<u16> {
    n.log[from..]
        .iter()
        .filter_map(|a| match a {
            Action::OpenMedia { port, .. } => Some(*port),
            _ => None,
        })
        .collect()
}

/// The video given to `call` by the last Join or Update of it.
fn room_video(n: &Node, call: u64) -> Option<MemberVideo> {
    n.log.iter().rev().find_map(|a| match a {
        Action::Room(RoomCommand::Join { call: c, video, .. })
        | Action::Room(RoomCommand::Update { call: c, video, .. })
            if *c == call =>
        {
            Some(video.clone())
        }
        _ => None,
    })?
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

/// INVITE (or re-INVITE) with `offer`; the room answers; ACK (with `ack_body`).
fn call(n: &mut Node, ua: &mut Ua, offer: Option<&str>, ack_body: Option<&str>) {
    ua.cseq += 1;
    let m = ua.request("INVITE", ua.cseq, true, offer);
    n.sip(ua.addr, &m);
    n.rooms();
    for t in &n.sent {
        let text = String::from_utf8_lossy(&t.data);
        if text.starts_with("SIP/2.0 200") && text.contains(&format!("Call-ID: {}", ua.call_id)) {
            if let Some(tag) = header(&text, "To").and_then(|v| v.split(";tag=").nth(1)) {
                ua.to_tag = Some(tag.to_string());
            }
        }
    }
    let ack = ua.request("ACK", ua.cseq, true, ack_body);
    n.sip(ua.addr, &ack);
    n.rooms();
}

fn node(cfg: Config) -> Node {
    Node::with_config(cfg, Role::Standalone)
}

#[test]
fn audio_and_video_get_two_pairs_and_the_room_gets_the_video() {
    let mut n = node(config());
    let mut a = Ua::new(0, "alice", "standup");
    call(&mut n, &mut a, Some(PCMU_VP8), None);
    let id = call_of(&n, &a);
    let rec = n.core.call(id).unwrap();
    let video_port = rec.video_port.expect("a video pair");
    assert_ne!(video_port, rec.port);
    assert_eq!(video_port % 2, 0);
    assert_eq!(opened(&n, 0), [rec.port, video_port], "both pairs bound");
    let sdp = answer(&n, &a, 1);
    assert_eq!(
        m_lines(&sdp),
        [("audio".into(), rec.port), ("video".into(), video_port)]
    );
    for l in [
        "a=rtpmap:96 VP8/90000",
        "a=rtcp-fb:96 nack",
        "a=rtcp-fb:96 nack pli",
        "a=rtcp-fb:96 ccm fir",
    ] {
        assert!(sdp.contains(&format!("{l}\r\n")), "{l} missing in\n{sdp}");
    }
    let v = room_video(&n, id).expect("the room has the video");
    assert_eq!(v.media.port, video_port);
    assert_eq!(v.media.remote_rtp, addr("198.18.0.10:4004"));
    assert_eq!(v.media.remote_rtcp, addr("198.18.0.10:4005"));
    assert!(!v.media.rtcp_mux);
    assert_eq!(v.params.payload_type, 96);
    assert!(v.params.send && v.params.recv);
    assert!(v.params.feedback.nack && v.params.feedback.pli && v.params.feedback.fir);
    assert!(!v.params.feedback.remb);
    // An audio-only caller in the same room: one pair, no video.
    let mut b = Ua::new(1, "bob", "standup");
    let from = n.log.len();
    call(&mut n, &mut b, Some(PCMU), None);
    let idb = call_of(&n, &b);
    assert_eq!(opened(&n, from).len(), 1);
    assert_eq!(n.core.call(idb).unwrap().video_port, None);
    assert_eq!(room_video(&n, idb), None);
    assert_eq!(m_lines(&answer(&n, &b, 1)).len(), 1);
}

#[test]
fn the_video_pair_counts_in_the_port_range_and_is_freed_with_the_call() {
    let mut c = config();
    c.rtp_port_min = 30000;
    c.rtp_port_max = 30005; // three pairs
    let mut n = node(c);
    let mut a = Ua::new(0, "alice", "standup");
    call(&mut n, &mut a, Some(PCMU_VP8), None);
    let ra = n.core.call(call_of(&n, &a)).unwrap().clone();
    assert_eq!((ra.port, ra.video_port), (30000, Some(30002)));
    // One pair left: audio gets it, video is declined (port 0), the call is answered.
    let mut b = Ua::new(1, "bob", "standup");
    call(&mut n, &mut b, Some(PCMU_VP8), None);
    let rb = n.core.call(call_of(&n, &b)).unwrap().clone();
    assert_eq!((rb.port, rb.video_port), (30004, None));
    assert_eq!(
        m_lines(&answer(&n, &b, 1)),
        [("audio".into(), 30004), ("video".into(), 0)]
    );
    assert_eq!(room_video(&n, rb.call), None);
    // None left: 503.
    let mut c = Ua::new(2, "carol", "standup");
    c.cseq += 1;
    let m = c.request("INVITE", c.cseq, true, Some(PCMU_VP8));
    n.sip(c.addr, &m);
    assert_eq!(finals(&n).last(), Some(&503));
    // Alice leaves: both her pairs are free again.
    a.cseq += 1;
    let bye = a.request("BYE", a.cseq, true, None);
    n.sip(a.addr, &bye);
    n.rooms();
    let mut d = Ua::new(3, "dave", "standup");
    call(&mut n, &mut d, Some(PCMU_VP8), None);
    let rd = n.core.call(call_of(&n, &d)).unwrap().clone();
    let got: BTreeSet<u16> = [rd.port, rd.video_port.unwrap()].into();
    assert_eq!(got, [30000, 30002].into());
}

#[test]
fn a_video_pair_the_os_refuses_is_replaced_or_the_video_declined() {
    let mut c = config();
    c.rtp_port_min = 30000;
    c.rtp_port_max = 30005; // three pairs
    let mut core = Core::new(c, Role::Standalone, 0);
    let mut ua = Ua::new(0, "a", "standup");
    ua.cseq = 1;
    let m = ua.request("INVITE", 1, true, Some(PCMU_VP8));
    core.handle_sip_datagram(ua.addr, m.as_bytes(), Duration::ZERO);
    // The driver binds the audio pair, but neither 30002 nor 30004 (taken by someone else).
    let mut tried = Vec::new();
    let mut join_video = None;
    while let Some(a) = core.poll_action() {
        match a {
            Action::OpenMedia { call, port } => {
                tried.push(port);
                core.handle_media_opened(call, port, port == 30000, Duration::ZERO);
            }
            Action::Room(RoomCommand::Join { video, .. }) => join_video = Some(video),
            _ => {}
        }
    }
    assert_eq!(tried, [30000, 30002, 30004]);
    assert_eq!(join_video, Some(None), "joined without video");
    let rec = core.calls().values().next().unwrap();
    assert_eq!(rec.video_port, None);
    assert!(rec.neg.as_ref().unwrap().video.is_none());
}

#[test]
fn without_video_every_video_line_is_declined_as_before() {
    let mut c = config();
    c.video = false;
    let mut n = node(c);
    let mut a = Ua::new(0, "alice", "standup");
    call(&mut n, &mut a, Some(PCMU_VP8), None);
    let id = call_of(&n, &a);
    let rec = n.core.call(id).unwrap();
    assert_eq!(opened(&n, 0), [rec.port], "one pair only");
    assert_eq!(
        m_lines(&answer(&n, &a, 1)),
        [("audio".into(), rec.port), ("video".into(), 0)]
    );
    assert_eq!(room_video(&n, id), None);
    // An offerless INVITE is offered audio only.
    let mut b = Ua::new(1, "bob", "standup");
    call(&mut n, &mut b, None, Some(PCMU));
    assert_eq!(m_lines(&answer(&n, &b, 1)).len(), 1);
}

#[test]
fn an_offerless_invite_is_offered_video_and_the_ack_decides() {
    let mut n = node(config());
    let mut a = Ua::new(0, "alice", "standup");
    call(&mut n, &mut a, None, Some(PCMU_VP8));
    let id = call_of(&n, &a);
    let rec = n.core.call(id).unwrap().clone();
    let offer = answer(&n, &a, 1);
    assert_eq!(
        m_lines(&offer),
        [
            ("audio".into(), rec.port),
            ("video".into(), rec.video_port.unwrap())
        ]
    );
    assert!(offer.contains("a=rtcp-fb:96 goog-remb\r\n"), "{offer}");
    let v = room_video(&n, id).expect("accepted in the ACK");
    assert_eq!(v.media.port, rec.video_port.unwrap());
    // Declined in the ACK: audio only (the pair stays with the call).
    let mut b = Ua::new(1, "bob", "standup");
    call(&mut n, &mut b, None, Some(PCMU));
    let idb = call_of(&n, &b);
    assert!(n.core.call(idb).unwrap().video_port.is_some());
    assert_eq!(room_video(&n, idb), None);
    assert!(n
        .core
        .call(idb)
        .unwrap()
        .neg
        .as_ref()
        .unwrap()
        .video
        .is_none());
}

#[test]
fn reinvites_add_hold_remove_and_restore_video() {
    let mut n = node(config());
    let mut a = Ua::new(0, "alice", "standup");
    call(&mut n, &mut a, Some(PCMU), None);
    let id = call_of(&n, &a);
    assert_eq!(n.core.call(id).unwrap().video_port, None);
    // Adds video: a new pair, bound before the answer, and the room gets the video.
    let from = n.log.len();
    call(&mut n, &mut a, Some(PCMU_VP8), None);
    let port = n.core.call(id).unwrap().video_port.expect("a video pair");
    assert_eq!(opened(&n, from), [port]);
    let at = |a: &Action| n.log[from..].iter().position(|x| x == a);
    let bound = at(&Action::OpenMedia { call: id, port }).unwrap();
    let sent = n.log[from..]
        .iter()
        .position(|x| matches!(x, Action::SendSip { transmit, .. } if transmit.data.starts_with(b"SIP/2.0 200")))
        .unwrap();
    assert!(bound < sent, "the pair is bound before the answer leaves");
    assert_eq!(m_lines(&answer(&n, &a, 2))[1], ("video".into(), port));
    let v = room_video(&n, id).expect("video after the re-INVITE");
    assert!(v.params.send && v.params.recv);
    // Video on hold (sendonly): answered recvonly, the room told it sends nothing.
    call(&mut n, &mut a, Some(PCMU_VP8_HOLD), None);
    let body = answer(&n, &a, 3);
    let video = &body[body.find("m=video").unwrap()..];
    assert!(video.contains("a=recvonly\r\n"), "{body}");
    let v = room_video(&n, id).unwrap();
    assert!(!v.params.send && v.params.recv, "{v:?}");
    // Removed: declined in the answer, the room told, the pair kept.
    let from = n.log.len();
    call(&mut n, &mut a, Some(PCMU), None);
    assert_eq!(m_lines(&answer(&n, &a, 4)).len(), 1);
    assert_eq!(room_video(&n, id), None);
    assert_eq!(n.core.call(id).unwrap().video_port, Some(port));
    // Back: on the same pair, no new bind.
    call(&mut n, &mut a, Some(PCMU_VP8), None);
    assert!(opened(&n, from).is_empty());
    assert_eq!(m_lines(&answer(&n, &a, 5))[1], ("video".into(), port));
    assert_eq!(room_video(&n, id).unwrap().media.port, port);
    // A video line the server cannot serve in a re-INVITE (no VP8): declined, audio on.
    let h264 = PCMU_VP8.replace("VP8/90000", "H264/90000");
    call(&mut n, &mut a, Some(&h264), None);
    assert_eq!(
        m_lines(&answer(&n, &a, 6)),
        [
            ("audio".into(), n.core.call(id).unwrap().port),
            ("video".into(), 0)
        ]
    );
    assert_eq!(room_video(&n, id), None);
    assert!(n.fault.is_none(), "{:?}", n.fault);
}

/// A re-INVITE that adds video waits for its pair; another re-INVITE meanwhile is refused
/// (500 with Retry-After, RFC 3261 §14.2: the first is still unanswered); the first is answered
/// once the pair is bound.
#[test]
fn a_second_reinvite_while_the_video_pair_is_bound_is_refused() {
    let mut n = node(config());
    let mut a = Ua::new(0, "alice", "standup");
    call(&mut n, &mut a, Some(PCMU), None);
    n.hold_opens = true;
    a.cseq += 1;
    let m = a.request("INVITE", a.cseq, true, Some(PCMU_VP8));
    n.sip(a.addr, &m);
    assert_eq!(n.held_opens.len(), 1);
    a.cseq += 1;
    let again = a.request("INVITE", a.cseq, true, Some(PCMU));
    n.sip(a.addr, &again);
    assert_eq!(finals(&n).last(), Some(&500));
    n.report_opens();
    let body = answer(&n, &a, 2);
    assert_eq!(m_lines(&body).len(), 2, "{body}");
}
