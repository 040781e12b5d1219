//! The test's stand-in for the drivers of a control core (room tasks with real mixers, the
//! sync link, sockets) and a scripted SIP user agent.
#![allow(dead_code)]

use control::{Action, Config, Core, Entry, Role, RoomCommand, RoomEvent, RoomInit};
use mixer::Mixer;
use sip_core::Transmit;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

pub const SERVER: &str = "198.18.0.1:5060";
pub const SEED: u64 = 0x5eed;

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub fn config() -> Config {
    let mut c = Config::new(addr(SERVER), SEED);
    c.rtp_port_min = 30000;
    c.rtp_port_max = 30099;
    c.max_participants = 4;
    c
}

/// One node and the test's stand-in for its drivers (rooms, commit, sockets).
pub struct Node {
    pub core: Core,
    pub now: Duration,
    pub mixers: BTreeMap<u64, Mixer>,
    pub shipped: BTreeMap<u64, u64>,
    /// Room replies not yet delivered (a room task answers asynchronously).
    pub replies: Vec<RoomEvent>,
    /// SIP messages released, in order.
    pub sent: Vec<Transmit>,
    /// Entries replicated and not yet taken by the backup: (entry, starts a full state).
    pub entries: Vec<(Entry, bool)>,
    pub last_seq: u64,
    /// A command the drivers could not carry out (a room that is not open...).
    pub fault: Option<String>,
    /// Members attached at a takeover, with the media source they were attached with.
    pub attached: Vec<(u64, Option<control::latch::Source>)>,
    /// Members attached at a takeover with a video, with the video source they were
    /// attached with.
    pub attached_video: Vec<(u64, Option<control::latch::Source>)>,
    /// Every room member's video as its room task holds it (Join, Attach, Update; gone
    /// with Leave).
    pub videos: BTreeMap<u64, Option<control::MemberVideo>>,
    /// Port pairs the drivers hold, by call ([`Action::OpenMedia`], [`Action::CloseMedia`]).
    pub bound: BTreeMap<u64, std::collections::BTreeSet<u16>>,
    /// Hold the driver's [`Action::OpenMedia`] reports ([`Node::report_opens`]) instead of
    /// binding at once.
    pub hold_opens: bool,
    /// The reports held.
    pub held_opens: Vec<(u64, u16)>,
    /// Every action drained, in order (what the drivers were asked to do).
    pub log: Vec<Action>,
    /// The sync link acknowledges every entry at once (else the test calls
    /// [`Node::commit`]).
    pub auto_commit: bool,
    /// Each open room's video layout, as its task was told ([`RoomCommand::Open`],
    /// [`RoomCommand::Layout`]).
    pub layouts: BTreeMap<u64, control::VideoLayout>,
}

pub fn wire(e: &Entry) -> Entry {
    let bytes = postcard::to_allocvec(e).expect("encode");
    postcard::from_bytes(&bytes).expect("decode")
}

impl Node {
    pub fn new(role: Role) -> Node {
        Node::with_config(config(), role)
    }

    pub fn with_config(cfg: Config, role: Role) -> Node {
        Node {
            core: Core::new(cfg, role, 1_700_000_000_000_000_000),
            now: Duration::ZERO,
            mixers: BTreeMap::new(),
            shipped: BTreeMap::new(),
            replies: Vec::new(),
            sent: Vec::new(),
            entries: Vec::new(),
            last_seq: 0,
            fault: None,
            attached: Vec::new(),
            attached_video: Vec::new(),
            videos: BTreeMap::new(),
            bound: BTreeMap::new(),
            hold_opens: false,
            held_opens: Vec::new(),
            log: Vec::new(),
            auto_commit: true,
            layouts: BTreeMap::new(),
        }
    }

    /// Run the actions; the sync link acknowledges everything at once (if `auto_commit`).
    pub fn drain(&mut self) {
        loop {
            while let Some(a) = self.core.poll_action() {
                self.log.push(a.clone());
                match a {
                    Action::SendSip { transmit, .. } => self.sent.push(transmit),
                    Action::OpenMedia { call, port } => {
                        self.bound.entry(call).or_default().insert(port);
                        if self.hold_opens {
                            self.held_opens.push((call, port));
                        } else {
                            self.core.handle_media_opened(call, port, true, self.now)
                        }
                    }
                    Action::CloseMedia { call } => {
                        self.bound.remove(&call);
                    }
                    Action::Dtmf { .. } => {}
                    Action::TakeoverComplete { .. } => {}
                    // The WebRTC transport and the HTTP server: the test reads them in `log`.
                    Action::OpenPeer { .. }
                    | Action::ResumePeer { .. }
                    | Action::ReleaseFinalFlight { .. }
                    | Action::ClosePeer { .. }
                    | Action::WhipReply { .. }
                    | Action::AdminReply { .. } => {}
                    Action::Room(cmd) => self.room(cmd),
                    Action::Replicate { seq, entry } => {
                        self.entries.push((wire(&entry), false));
                        self.last_seq = seq;
                    }
                    Action::ReplicateFull { seq, entries } => {
                        for (i, e) in entries.iter().enumerate() {
                            self.entries.push((wire(e), i == 0));
                        }
                        self.last_seq = seq;
                    }
                }
            }
            let (held, _) = self.core.held();
            let (last, committed) = self.core.replication();
            if !self.auto_commit || held == 0 || committed >= last {
                break;
            }
            self.core.handle_committed(last, self.now);
        }
    }

    /// Report the held [`Action::OpenMedia`]s as bound, and bind at once from now on.
    pub fn report_opens(&mut self) {
        self.hold_opens = false;
        for (call, port) in std::mem::take(&mut self.held_opens) {
            self.core.handle_media_opened(call, port, true, self.now);
            self.drain();
        }
    }

    /// The sync link acknowledges every entry up to `seq`.
    pub fn commit(&mut self, seq: u64) {
        self.core.handle_committed(seq, self.now);
        self.drain();
    }

    pub fn room(&mut self, cmd: RoomCommand) {
        let now = self.now;
        match cmd {
            RoomCommand::Open {
                room, init, layout, ..
            } => {
                self.layouts.insert(room, layout);
                let m = match init {
                    RoomInit::New(cfg) => Mixer::new(cfg),
                    RoomInit::Resume(s) => Mixer::from_snapshot(&s, now).expect("resume"),
                };
                self.shipped.insert(room, m.state_version());
                self.mixers.insert(room, m);
            }
            RoomCommand::Join {
                room,
                call,
                params,
                video,
                ..
            } => {
                self.videos.insert(call, video);
                self.join(room, call, params, None);
            }
            RoomCommand::JoinPeer {
                room,
                call,
                params,
                video,
            } => {
                // The room's forwarder draws the video SSRC; any fixed function will do here.
                let video_ssrc = video.map(|_| 0x7000_0000 | (call as u32 & 0xffff));
                self.join(room, call, params, video_ssrc)
            }
            RoomCommand::Attach {
                room,
                call,
                source,
                video,
                video_source,
                ..
            } => {
                self.attached.push((call, source));
                if video.is_some() {
                    self.attached_video.push((call, video_source));
                }
                self.videos.insert(call, video);
                if self
                    .mixers
                    .get(&room)
                    .is_none_or(|m| m.output_stream(call).is_none())
                {
                    self.fault = Some(format!("attach of {call}: not in room {room}"));
                }
            }
            RoomCommand::AttachPeer { room, call, .. } => {
                if self
                    .mixers
                    .get(&room)
                    .is_none_or(|m| m.output_stream(call).is_none())
                {
                    self.fault = Some(format!("attach of peer {call}: not in room {room}"));
                }
            }
            RoomCommand::Update {
                room,
                call,
                params,
                video,
                ..
            } => {
                self.videos.insert(call, video);
                let updated = self
                    .mixers
                    .get_mut(&room)
                    .map(|m| m.update_participant(call, params, now));
                if !matches!(updated, Some(Ok(()))) {
                    self.fault = Some(format!("update of {call} in room {room}: {updated:?}"));
                }
            }
            RoomCommand::Mute { room, call, muted } => {
                let done = self.mixers.get_mut(&room).map(|m| m.set_muted(call, muted));
                if !matches!(done, Some(Ok(()))) {
                    self.fault = Some(format!("mute of {call} in room {room}: {done:?}"));
                }
            }
            RoomCommand::Leave { room, call } => {
                self.videos.remove(&call);
                let Some(m) = self.mixers.get_mut(&room) else {
                    self.fault = Some(format!("leave of {call}: room {room} not open"));
                    return;
                };
                let _ = m.remove_participant(call, now);
                while m.poll_output().is_some() {}
            }
            RoomCommand::Layout { room, layout } => {
                if !self.mixers.contains_key(&room) {
                    self.fault = Some(format!("layout {layout} for room {room}, not open"));
                }
                self.layouts.insert(room, layout);
            }
            RoomCommand::Close { room } => {
                self.layouts.remove(&room);
                self.mixers.remove(&room);
                self.shipped.remove(&room);
            }
        }
    }

    /// A room task's `Join`/`JoinPeer`: add to the mixer; the reply comes later, as a task's.
    fn join(&mut self, room: u64, call: u64, params: mixer::StreamParams, video_ssrc: Option<u32>) {
        let Some(m) = self.mixers.get_mut(&room) else {
            self.fault = Some(format!("join of {call} into room {room}, not open"));
            return;
        };
        let ev = match m.add_participant(call, params, self.now) {
            Ok(ssrc) => {
                self.shipped.insert(room, m.state_version());
                RoomEvent::Joined {
                    room,
                    call,
                    ssrc,
                    video_ssrc,
                    snapshot: Some(Box::new(m.export_state())),
                }
            }
            Err(e) => RoomEvent::JoinFailed {
                room,
                call,
                reason: e.to_string(),
            },
        };
        self.replies.push(ev);
    }

    /// The room tasks' replies and snapshots of moved state versions.
    pub fn rooms(&mut self) {
        for ev in std::mem::take(&mut self.replies) {
            self.core.handle_room_event(ev, self.now);
            self.drain();
        }
        let moved: Vec<u64> = self
            .mixers
            .iter()
            .filter(|(id, m)| self.shipped.get(id) != Some(&m.state_version()))
            .map(|(id, _)| *id)
            .collect();
        for room in moved {
            let m = &self.mixers[&room];
            self.shipped.insert(room, m.state_version());
            let snapshot = Box::new(m.export_state());
            self.core
                .handle_room_event(RoomEvent::Snapshot { room, snapshot }, self.now);
            self.drain();
        }
    }

    pub fn advance(&mut self, to: Duration) {
        while let Some(t) = self.core.poll_timeout() {
            if t > to {
                break;
            }
            self.now = self.now.max(t);
            self.core.handle_timeout(self.now);
            self.drain();
        }
        self.now = to;
    }

    pub fn sip(&mut self, from: SocketAddr, msg: &str) {
        self.core
            .handle_sip_datagram(from, msg.as_bytes(), self.now);
        self.drain();
    }
}

/// A SIP user agent of the script.
#[derive(Clone)]
pub struct Ua {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub room: &'static str,
    pub call_id: String,
    pub cseq: u32,
    pub to_tag: Option<String>,
    /// The last request sent (retransmitted as is).
    pub last: String,
    pub branch: u32,
}

pub const PCMU: &str = "v=0\r\no=- 1 1 IN IP4 198.18.0.10\r\ns=-\r\nc=IN IP4 198.18.0.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";
pub const OPUS: &str = "v=0\r\no=- 1 1 IN IP4 198.18.0.11\r\ns=-\r\nc=IN IP4 198.18.0.11\r\nt=0 0\r\nm=audio 4002 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\na=rtcp-mux\r\n";
/// PCMU and VP8 video (PT 96, RTCP feedback nack, pli, fir), video at port 4004.
pub const PCMU_VP8: &str = "v=0\r\no=- 1 3 IN IP4 198.18.0.10\r\ns=-\r\nc=IN IP4 198.18.0.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\nm=video 4004 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\na=rtcp-fb:96 ccm fir\r\n";
/// [`PCMU_VP8`] with the video on hold (sendonly), the audio not.
pub const PCMU_VP8_HOLD: &str = "v=0\r\no=- 1 4 IN IP4 198.18.0.10\r\ns=-\r\nc=IN IP4 198.18.0.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\nm=video 4004 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\na=sendonly\r\n";
pub const SENDONLY: &str = "v=0\r\no=- 1 2 IN IP4 198.18.0.10\r\ns=-\r\nc=IN IP4 198.18.0.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=sendonly\r\n";

impl Ua {
    pub fn new(i: usize, name: &'static str, room: &'static str) -> Ua {
        Ua {
            name,
            addr: addr(&format!("198.18.0.{}:{}", 10 + i, 5070 + i)),
            room,
            call_id: format!("{name}-call@198.18.0.{}", 10 + i),
            cseq: 0,
            to_tag: None,
            last: String::new(),
            branch: 0,
        }
    }

    pub fn request(
        &mut self,
        method: &str,
        cseq: u32,
        new_branch: bool,
        body: Option<&str>,
    ) -> String {
        if new_branch {
            self.branch += 1;
        }
        let to_tag = self
            .to_tag
            .as_ref()
            .filter(|_| method != "CANCEL")
            .map(|t| format!(";tag={t}"))
            .unwrap_or_default();
        let (ctype, body) = match body {
            Some(b) => ("Content-Type: application/sdp\r\n", b),
            None => ("", ""),
        };
        format!(
            "{method} sip:{room}@198.18.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP {addr};branch=z9hG4bK{name}{branch}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{name}@{ip}>;tag={name}-tag\r\n\
             To: <sip:{room}@198.18.0.1>{to_tag}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:{name}@{addr}>\r\n\
             {ctype}Content-Length: {len}\r\n\r\n{body}",
            room = self.room,
            addr = self.addr,
            name = self.name,
            branch = self.branch,
            ip = self.addr.ip(),
            call_id = self.call_id,
            len = body.len(),
        )
    }
}

/// A mutation of what crosses the sync link (negative controls).
pub type Tamper = fn(&mut Entry);

/// The backup takes every entry the primary replicated so far (through their wire encoding).
pub fn feed(backup: &mut Node, primary: &mut Node, tamper: Tamper) {
    for (mut e, full) in primary.entries.drain(..) {
        tamper(&mut e);
        backup.core.handle_replicated(e, full);
        backup.drain();
    }
}

pub fn untouched(_: &mut Entry) {}

pub fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n")
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
}

pub fn answer_request(req: &str, status: &str) -> String {
    let mut out = format!("SIP/2.0 {status}\r\n");
    for h in ["Via", "From", "To", "Call-ID", "CSeq"] {
        for l in req
            .split("\r\n")
            .filter(|l| l.starts_with(&format!("{h}: ")))
        {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}
