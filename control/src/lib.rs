//! Understudy's control plane as a sans-IO core: it turns SIP calls into room participants
//! and, on a hot-standby pair, replicates what it decided and takes over from a dead primary.
//!
//! For: admission and limits (room name, room size, codecs, ports), a call's video (its
//! second port pair, what its room is told), the call and room registry, the operator's decisions ([`admin`]: mute, kick, room lock and size), media port numbering, the strict media source rule ([`latch`]), output
//! commit (SIP messages held until the backup acknowledged the state they imply), the
//! replicated schema ([`schema`]: the live records themselves, typed and versioned), the
//! standby that applies them, and the takeover that rebuilds calls and rooms from them.
//! Not for: sockets, timers, threads, netfilter or HTTP (the `mcu` drivers), SIP parsing and
//! transactions (`sip-core`, which this core drives), mixing (`mixer`, run by room tasks),
//! the sync link's protocol (`ft-sync`, which carries [`schema::Entry`]s).
//!
//! # Driver loop
//!
//! Like `sip-core` and `mixer`, [`Core`] never reads a clock or touches a socket: every input
//! carries `now`, the time since the server's origin ([`Core::origin_unix_ns`]). After each
//! input drain [`Core::poll_action`]; arm a timer for [`Core::poll_timeout`]. Inputs:
//! SIP bytes ([`Core::handle_sip_datagram`], [`Core::handle_sip_stream`]), timers
//! ([`Core::handle_timeout`]), room reports ([`Core::handle_room_event`]), WHIP requests
//! ([`Core::handle_whip_offer`]), the operator ([`Core::handle_admin`]), the sync link
//! ([`Core::handle_committed`], [`Core::handle_backup_connected`],
//! [`Core::handle_replicated`], [`Core::handle_takeover`]) and shutdown.
//!
//! ```
//! use control::{Action, Config, Core, Role, RoomCommand, RoomEvent};
//! use std::time::Duration;
//!
//! let mut core = Core::new(Config::new("127.0.0.1:5060".parse().unwrap(), 7), Role::Standalone, 0);
//! let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
//!     m=audio 4000 RTP/AVP 0\r\n";
//! let invite = format!("INVITE sip:standup@127.0.0.1 SIP/2.0\r\n\
//!     Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\nMax-Forwards: 70\r\n\
//!     From: <sip:alice@127.0.0.1>;tag=a\r\nTo: <sip:standup@127.0.0.1>\r\nCall-ID: c1\r\n\
//!     CSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:5070>\r\n\
//!     Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", sdp.len());
//! let now = Duration::ZERO;
//! core.handle_sip_datagram("127.0.0.1:5070".parse().unwrap(), invite.as_bytes(), now);
//! let mut answered = false;
//! while let Some(action) = core.poll_action() {
//!     match action {
//!         // Bind the port pair, say how it went.
//!         Action::OpenMedia { call, port } => core.handle_media_opened(call, port, true, now),
//!         // The room task adds the participant and answers.
//!         Action::Room(RoomCommand::Join { room, call, .. }) => core.handle_room_event(
//!             RoomEvent::Joined { room, call, ssrc: 42, video_ssrc: None, snapshot: None }, now),
//!         Action::SendSip { transmit, .. } => answered |= transmit.data.starts_with(b"SIP/2.0 200"),
//!         _ => {}
//!     }
//! }
//! assert!(answered);
//! ```
//!
//! # Hot standby
//!
//! A [`Role::Primary`] core ends every input step by collecting what changed (its records
//! marked dirty as they change, and `sip-core`'s own change list) into one
//! [`schema::Entry`] ([`Action::Replicate`]) and holds the SIP messages of that step until
//! [`Core::handle_committed`] says the backup has it. A [`Role::Backup`] core applies those
//! entries to the same records ([`Core::handle_replicated`]) and pre-binds every call's
//! ports; [`Core::handle_takeover`] turns it into the primary: the SIP layer continues from
//! the replicated dialogs and transactions, every room resumes from its last mixer snapshot
//! with its members' sockets attached, calls caught half-way into a room join it again.
//! `tests/takeover.rs` proves, in virtual time, that what a promoted backup sends after any
//! step of the scripted call flows is exactly what the primary would have sent.
#![deny(missing_docs)]

pub mod action;
pub mod admin;
pub mod latch;
pub mod limit;
pub mod peer;
pub mod ports;
pub mod schema;

pub use action::{
    Action, MemberMedia, MemberVideo, PeerVideo, RoomCommand, RoomEvent, RoomInit, VideoParams,
};
pub use admin::{AdminCommand, AdminError, AdminResult, RoomSettings, SettingsChange, VideoLayout};
pub use peer::{PeerInput, PeerRecord, WebRtcConfig, WhipResult};
pub use schema::{CallRecord, Entry, Item, MediaPhase, RoomRecord, ServerRecord};

use mixer::{Codec, MixerConfig, MixerSnapshot, StreamParams};
use sip_core::sdp::{self, CodecName, Direction, LocalMedia, Negotiated, SdpError};
use sip_core::state::{CoreState, Rng};
use sip_core::{CallHandle, ConnId, EndReason, Event, Transmit};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// What this node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// No hot standby: nothing is replicated or held.
    Standalone,
    /// Serves and replicates every step; SIP output waits for the backup's acknowledgement.
    Primary,
    /// Applies the primary's entries; serves nothing until [`Core::handle_takeover`].
    Backup,
}

/// Configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// SIP layer configuration (listen address for Contact, User-Agent, size limit; its seed
    /// is replaced by `seed`).
    pub sip: sip_core::Config,
    /// Media address advertised in SDP.
    pub media_ip: IpAddr,
    /// First media port.
    pub rtp_port_min: u16,
    /// Last media port.
    pub rtp_port_max: u16,
    /// Largest room.
    pub max_participants: usize,
    /// Loudest speakers mixed per room.
    pub top_n: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// WebRTC participants (WHIP), if served.
    pub webrtc: Option<WebRtcConfig>,
    /// Video (VP8) for SIP calls: a call whose offer has a usable video line gets a second
    /// port pair and video in its answer, an offerless INVITE gets video in our offer.
    /// `false`: every video line is declined with port 0 (an audio-only server).
    pub video: bool,
    /// The video layout of rooms whose operator set none ([`RoomSettings::layout`]).
    pub video_layout: VideoLayout,
}

impl Config {
    /// Defaults (media on the SIP address, ports 20000-29999, rooms of 100, top 3).
    pub fn new(sip_listen: SocketAddr, seed: u64) -> Self {
        Config {
            sip: sip_core::Config {
                local_addr: sip_listen,
                user_agent: "Understudy".into(),
                max_message_size: 16 * 1024,
                seed,
            },
            media_ip: sip_listen.ip(),
            rtp_port_min: 20000,
            rtp_port_max: 29999,
            max_participants: 100,
            top_n: 3,
            seed,
            webrtc: None,
            video: true,
            video_layout: VideoLayout::Switched,
        }
    }
}

/// Counters (the driver turns them into metrics).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    /// Calls answered 2xx.
    pub calls_accepted: u64,
    /// Calls rejected by admission or negotiation.
    pub calls_rejected: u64,
    /// Calls hung up because their media went silent ([`RoomEvent::MediaTimeout`]).
    pub media_timeouts: u64,
}

/// Output held for the backup's acknowledgement.
#[allow(clippy::large_enum_variant)] // a few per round trip to the backup, never moved in bulk
enum Held {
    Sip(Transmit),
    Action(Action),
}

#[allow(clippy::large_enum_variant)] // one per server, never moved on a hot path
enum Sip {
    Serving(Box<sip_core::Core>),
    Standby(CoreState),
}

struct Room {
    record: RoomRecord,
    /// Calls joined or joining (empty on a backup: the takeover derives it from the calls).
    members: BTreeSet<u64>,
}

/// The control plane core (see the crate docs for the driver loop).
pub struct Core {
    cfg: Config,
    role: Role,
    server: ServerRecord,
    server_dirty: bool,
    sip: Sip,
    calls: BTreeMap<u64, CallRecord>,
    dirty_calls: BTreeSet<u64>,
    /// WebRTC participants ([`peer`]).
    peers: BTreeMap<u64, PeerRecord>,
    dirty_peers: BTreeSet<u64>,
    /// WHIP requests waiting for their answer, by participant (not replicated: the HTTP
    /// request dies with the node).
    whip_pending: BTreeMap<u64, u64>,
    /// Actions of this step that wait for the backup's acknowledgement like SIP messages
    /// (WHIP replies, DTLS final flights).
    commit_actions: Vec<Action>,
    rooms: BTreeMap<String, Room>,
    room_names: HashMap<u64, String>,
    /// Room items of this step (snapshots, closes), in order.
    room_items: Vec<Item>,
    ports: ports::Ports,
    /// Ports the OS refused for the call being opened.
    refused: BTreeMap<u64, BTreeSet<u16>>,
    /// Port pairs asked of the driver ([`Action::OpenMedia`]) and not reported yet, by call
    /// (primary only: a backup pre-binds, and takes a record's ports as bound).
    opening: BTreeMap<u64, BTreeSet<u16>>,
    // Output commit.
    last_seq: u64,
    committed: u64,
    full_seq: Option<u64>,
    held: VecDeque<(u64, Held, Duration)>,
    actions: VecDeque<Action>,
    stopping: bool,
    /// Backup: a full state arrived.
    holds_state: bool,
    /// Primary handing over ([`Core::handle_switchover`]): the inputs it must not act on
    /// now, replayed if the handover is aborted.
    switching: Option<Vec<Deferred>>,
    stats: Stats,
}

/// An input held during a planned switchover.
enum Deferred {
    SipStream(ConnId, SocketAddr, Vec<u8>),
    SipStreamClosed(ConnId),
    Shutdown,
    Hangup(u64),
    MediaOpened(u64, u16, bool),
    Room(RoomEvent),
    Peer(u64, PeerInput),
    WhipDelete(u64, String, u64),
}

/// Why a planned switchover cannot start ([`Core::handle_switchover`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SwitchoverError {
    /// Only a serving primary hands over.
    NotPrimary,
    /// No synced backup stands by.
    NotSynced,
    /// A switchover is already under way, or the server is shutting down.
    Busy,
}

impl std::fmt::Display for SwitchoverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SwitchoverError::NotPrimary => "this node is not the serving primary",
            SwitchoverError::NotSynced => "no synced backup stands by",
            SwitchoverError::Busy => "a switchover or a shutdown is under way",
        })
    }
}

impl std::error::Error for SwitchoverError {}

impl Core {
    /// A new core. `origin_unix_ns`: the wall-clock time of `now == 0` (a backup replaces it
    /// with the primary's).
    pub fn new(cfg: Config, role: Role, origin_unix_ns: u64) -> Self {
        let sip_cfg = sip_core::Config {
            seed: cfg.seed,
            ..cfg.sip.clone()
        };
        let sip = match role {
            Role::Backup => Sip::Standby(CoreState::new(cfg.seed)),
            Role::Primary => Sip::Serving(Box::new(sip_core::Core::new(sip_cfg))),
            Role::Standalone => {
                let mut c = sip_core::Core::new(sip_cfg);
                c.set_change_tracking(false);
                Sip::Serving(Box::new(c))
            }
        };
        let ports = ports::Ports::new(cfg.rtp_port_min, cfg.rtp_port_max);
        Core {
            server: ServerRecord {
                origin_unix_ns,
                seed: cfg.seed,
                rng: Rng::new(cfg.seed),
                next_port: ports.next,
                next_room_id: 1,
                next_peer: 0,
                handover_tick: None,
            },
            server_dirty: true,
            cfg,
            role,
            sip,
            calls: BTreeMap::new(),
            dirty_calls: BTreeSet::new(),
            peers: BTreeMap::new(),
            dirty_peers: BTreeSet::new(),
            whip_pending: BTreeMap::new(),
            commit_actions: Vec::new(),
            rooms: BTreeMap::new(),
            room_names: HashMap::new(),
            room_items: Vec::new(),
            ports,
            refused: BTreeMap::new(),
            opening: BTreeMap::new(),
            last_seq: 0,
            committed: 0,
            full_seq: None,
            held: VecDeque::new(),
            actions: VecDeque::new(),
            stopping: false,
            holds_state: false,
            switching: None,
            stats: Stats::default(),
        }
    }

    // ---- getters -------------------------------------------------------------------------

    /// This node's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Wall-clock time (ns since the Unix epoch) of `now == 0`: after a takeover, the
    /// primary's (a driver re-bases its clock on it before calling [`Core::handle_takeover`]).
    pub fn origin_unix_ns(&self) -> u64 {
        self.server.origin_unix_ns
    }

    /// Calls by id.
    pub fn calls(&self) -> &BTreeMap<u64, CallRecord> {
        &self.calls
    }

    /// One call.
    pub fn call(&self, id: u64) -> Option<&CallRecord> {
        self.calls.get(&id)
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The SIP layer's counters.
    pub fn sip_stats(&self) -> sip_core::Stats {
        match &self.sip {
            Sip::Serving(c) => c.stats(),
            Sip::Standby(s) => s.stats.clone(),
        }
    }

    /// SIP messages waiting for the backup's acknowledgement, and since when the oldest.
    pub fn held(&self) -> (usize, Option<Duration>) {
        (self.held.len(), self.held.front().map(|h| h.2))
    }

    /// Last replicated sequence number and the highest acknowledged one.
    pub fn replication(&self) -> (u64, u64) {
        (self.last_seq, self.committed)
    }

    /// Primary: the backup acknowledged the full state sent when it connected.
    /// Backup: it holds the primary's state (its server record arrived).
    pub fn synced(&self) -> bool {
        match self.role {
            Role::Primary => self.full_seq.is_some_and(|s| self.committed >= s),
            Role::Backup => self.holds_state,
            Role::Standalone => false,
        }
    }

    /// The SIP/TCP connections that a dialog or a transaction lives on (none on a backup):
    /// a driver closing idle connections leaves these open.
    pub fn sip_streams_in_use(&self) -> std::collections::BTreeSet<ConnId> {
        match &self.sip {
            Sip::Serving(c) => c.streams_in_use(),
            Sip::Standby(_) => Default::default(),
        }
    }

    /// The tick from which the rooms serve after a planned switchover (see
    /// [`ServerRecord::handover_tick`]): on the primary, its rooms send nothing from it on;
    /// on a backup that takes over, its rooms start there.
    pub fn handover_tick(&self) -> Option<u64> {
        self.server.handover_tick
    }

    /// A planned switchover is under way (primary).
    pub fn is_switching(&self) -> bool {
        self.switching.is_some()
    }

    /// No call left (shutdown may finish).
    pub fn is_idle(&self) -> bool {
        self.calls.is_empty()
    }

    /// When [`Core::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Duration> {
        match &self.sip {
            Sip::Serving(c) => c.poll_timeout(),
            Sip::Standby(_) => None,
        }
    }

    /// Next thing to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    // ---- inputs: SIP and time -------------------------------------------------------------

    /// A SIP datagram (UDP).
    pub fn handle_sip_datagram(&mut self, from: SocketAddr, data: &[u8], now: Duration) {
        if self.switching.is_some() {
            // Not answered: the client's retransmission reaches the node that takes over.
            return;
        }
        if let Sip::Serving(c) = &mut self.sip {
            c.handle_datagram(from, data, now);
        }
        self.step(now);
    }

    /// Bytes from a SIP stream connection (TCP).
    pub fn handle_sip_stream(
        &mut self,
        conn: ConnId,
        from: SocketAddr,
        data: &[u8],
        now: Duration,
    ) {
        if self.defer(|| Deferred::SipStream(conn, from, data.to_vec())) {
            return;
        }
        if let Sip::Serving(c) = &mut self.sip {
            c.handle_stream_data(conn, from, data, now);
        }
        self.step(now);
    }

    /// A SIP stream connection closed.
    pub fn handle_sip_stream_closed(&mut self, conn: ConnId, now: Duration) {
        if self.defer(|| Deferred::SipStreamClosed(conn)) {
            return;
        }
        if let Sip::Serving(c) = &mut self.sip {
            c.handle_stream_closed(conn, now);
        }
        self.step(now);
    }

    /// Timers ([`Core::poll_timeout`]) are due.
    pub fn handle_timeout(&mut self, now: Duration) {
        if self.switching.is_some() {
            // Due timers run once the switchover is aborted (or never, on this node).
            return;
        }
        if let Sip::Serving(c) = &mut self.sip {
            c.handle_timeout(now);
        }
        self.step(now);
    }

    /// Stop serving: BYE every answered call, 503 to every pending INVITE; calls answered
    /// from now on are hung up as soon as their ACK arrives.
    pub fn handle_shutdown(&mut self, now: Duration) {
        if self.defer(|| Deferred::Shutdown) {
            return;
        }
        self.stopping = true;
        let calls: Vec<(u64, bool)> = self.calls.values().map(|c| (c.call, c.confirmed)).collect();
        for (call, confirmed) in calls {
            if !self.hangup(call, now) && !confirmed {
                if let Some(sip) = self.sip_mut() {
                    let _ = sip.reject(CallHandle(call), 503, now);
                }
            }
        }
        self.step(now);
    }

    /// Hang up one call (an operator's kick): BYE when answered, else 480 to its INVITE.
    pub fn handle_hangup(&mut self, call: u64, now: Duration) {
        if self.defer(|| Deferred::Hangup(call)) {
            return;
        }
        if !self.hangup(call, now) {
            if let Some(sip) = self.sip_mut() {
                let _ = sip.reject(CallHandle(call), 480, now);
            }
        }
        self.step(now);
    }

    // ---- inputs: media ------------------------------------------------------------------

    /// The driver bound (or could not bind) the port pair of an [`Action::OpenMedia`]. A
    /// call goes on (joins its room, or gets our offer, or the answer to a re-INVITE that
    /// added video) once every pair it asked for is bound. An audio pair the OS refuses is
    /// replaced by another (none left: 503); a video pair too (none left: the call goes on
    /// without video, its video line declined).
    pub fn handle_media_opened(&mut self, call: u64, port: u16, ok: bool, now: Duration) {
        if self.defer(|| Deferred::MediaOpened(call, port, ok)) {
            return;
        }
        if self.role == Role::Backup {
            if !ok {
                tracing::warn!(
                    call,
                    port,
                    "standby: cannot pre-bind the call's media ports"
                );
            }
            return;
        }
        let Some(rec) = self.calls.get(&call) else {
            if ok {
                self.actions.push_back(Action::CloseMedia { call });
            }
            self.ports.release(port);
            return;
        };
        let is_audio = rec.port == port;
        let pending = self.opening.get_mut(&call);
        if !pending.is_some_and(|p| p.remove(&port)) {
            return;
        }
        if !ok {
            self.ports.release(port);
            self.refused.entry(call).or_default().insert(port);
            if is_audio {
                if !self.open_media(call) {
                    self.reject(call, 503, "no free RTP ports", now);
                    self.forget(call);
                    self.step(now);
                    return;
                }
            } else {
                let rec = self.calls.get_mut(&call).expect("checked");
                rec.video_port = None;
                rec.local.video_port = None;
                self.dirty_calls.insert(call);
                self.ensure_video(call);
            }
        }
        if self.opening.get(&call).is_some_and(|p| p.is_empty()) {
            self.opening.remove(&call);
            self.refused.remove(&call);
            self.media_ready(call, now);
        }
        self.step(now);
    }

    /// Every port pair of the call is bound: go on with what waited for them.
    fn media_ready(&mut self, call: u64, now: Duration) {
        let Some(rec) = self.calls.get_mut(&call) else {
            return;
        };
        match rec.media {
            MediaPhase::Opening => {
                rec.media = MediaPhase::Idle;
                self.dirty_calls.insert(call);
                if rec.neg.is_some() {
                    self.join(call);
                } else {
                    // Offerless INVITE: we offer in the 200, the answer comes in the ACK.
                    rec.awaiting_answer = true;
                    rec.answer_when_joined = false;
                    let offer = sdp::build_offer(&rec.local);
                    self.accept(call, offer, now);
                }
            }
            // A re-INVITE of a call out of its room: it joins, then is answered.
            MediaPhase::Idle if rec.answer_when_joined => self.join(call),
            // A re-INVITE that added video to a joined call: its video pair is bound.
            MediaPhase::Joined if rec.answer_when_joined => self.answer_reinvite(call, now),
            _ => {}
        }
    }

    /// Answer the pending re-INVITE of a joined call with its negotiated media, and tell its
    /// room.
    fn answer_reinvite(&mut self, call: u64, now: Duration) {
        let Some(rec) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(neg) = &rec.neg else { return };
        rec.answer_when_joined = false;
        self.dirty_calls.insert(call);
        let answer = sdp::build_answer(&rec.local, neg);
        self.update_media(call);
        self.accept(call, answer, now);
    }

    /// Make the call's video what the server can serve: decline its video line when video
    /// is off or its address is of another family, else give it a video pair (once per
    /// call; none left: declined). For an offerless INVITE (no media negotiated yet) a pair
    /// is taken when video is on, for our offer. Returns true when a pair is being bound
    /// (the call waits for [`Core::handle_media_opened`]).
    fn ensure_video(&mut self, call: u64) -> bool {
        let video_on = self.cfg.video;
        let v6 = self.cfg.media_ip.is_ipv6();
        let Some(rec) = self.calls.get_mut(&call) else {
            return false;
        };
        let wants = match rec.neg.as_mut() {
            Some(n) => {
                let usable = n
                    .video
                    .as_ref()
                    .is_some_and(|v| video_on && v.remote_rtp.is_ipv6() == v6);
                if !usable {
                    n.decline_video();
                }
                usable
            }
            None => video_on,
        };
        if !wants || rec.video_port.is_some() {
            return false;
        }
        let refused = self.refused.get(&call).cloned().unwrap_or_default();
        let Some(port) = self.ports.allocate(&refused) else {
            tracing::info!(call, "no free RTP ports for video: video declined");
            if let Some(n) = rec.neg.as_mut() {
                n.decline_video();
            }
            return false;
        };
        rec.video_port = Some(port);
        rec.local.video_port = Some(port);
        self.dirty_calls.insert(call);
        self.opening.entry(call).or_default().insert(port);
        self.actions.push_back(Action::OpenMedia { call, port });
        true
    }

    /// A room reports.
    pub fn handle_room_event(&mut self, ev: RoomEvent, now: Duration) {
        if self.switching.is_some() {
            self.defer(|| Deferred::Room(ev));
            return;
        }
        match ev {
            RoomEvent::Joined {
                room,
                call,
                ssrc,
                video_ssrc,
                snapshot,
            } => {
                if let Some(s) = snapshot {
                    self.on_snapshot(room, *s);
                }
                if self.peers.contains_key(&call) {
                    if !self.peer_joined(call, ssrc, video_ssrc, now) {
                        self.forget_peer(call);
                    }
                    self.step(now);
                    return;
                }
                match self.calls.get_mut(&call) {
                    Some(rec) if rec.media == MediaPhase::Joining => {
                        rec.media = MediaPhase::Joined;
                        rec.ssrc_out = Some(ssrc);
                        self.dirty_calls.insert(call);
                        tracing::info!(call, room = %rec.room.escape_debug(), ssrc_out = ssrc, "joined room");
                        if rec.answer_when_joined {
                            rec.answer_when_joined = false;
                            let neg = rec.neg.clone().expect("joined with negotiated media");
                            let answer = sdp::build_answer(&rec.local, &neg);
                            self.accept(call, answer, now);
                        }
                    }
                    // The call ended while its room added it (CANCEL, BYE): take it out.
                    _ => {
                        self.actions
                            .push_back(Action::Room(RoomCommand::Leave { room, call }));
                        self.close_room_if_empty(room);
                    }
                }
            }
            RoomEvent::JoinFailed { room, call, reason } => {
                tracing::warn!(call, room, "room refused the participant: {reason}");
                if self.peers.contains_key(&call) {
                    self.peer_join_failed(call, &reason);
                }
                if let Some(rec) = self.calls.get_mut(&call) {
                    if rec.media == MediaPhase::Joining {
                        rec.media = MediaPhase::Idle;
                        let answer = std::mem::take(&mut rec.answer_when_joined);
                        self.dirty_calls.insert(call);
                        if let Some(r) = self.rooms.get_mut(&self.calls[&call].room) {
                            r.members.remove(&call);
                        }
                        if answer {
                            self.reject(call, 500, &reason, now);
                        }
                    }
                }
                self.close_room_if_empty(room);
            }
            RoomEvent::Latched {
                room: _,
                call,
                source,
            } => {
                if let Some(rec) = self.calls.get_mut(&call) {
                    if rec.source != Some(source) {
                        tracing::debug!(call, ?source, "media source");
                        rec.source = Some(source);
                        self.dirty_calls.insert(call);
                    }
                }
            }
            RoomEvent::VideoLatched {
                room: _,
                call,
                source,
            } => {
                if let Some(rec) = self.calls.get_mut(&call) {
                    if rec.video_source != Some(source) {
                        tracing::debug!(call, ?source, "video source");
                        rec.video_source = Some(source);
                        self.dirty_calls.insert(call);
                    }
                }
            }
            RoomEvent::MediaTimeout { room: _, call } => {
                if self.peers.contains_key(&call) {
                    tracing::info!(call, "media timeout: nothing heard from the browser");
                    self.stats.media_timeouts += 1;
                    self.forget_peer(call);
                } else if self
                    .calls
                    .get(&call)
                    .is_some_and(|c| c.media == MediaPhase::Joined)
                    && self.hangup(call, now)
                {
                    tracing::info!(call, "media timeout: nothing heard, hanging up");
                    self.stats.media_timeouts += 1;
                }
            }
            RoomEvent::Snapshot { room, snapshot } => self.on_snapshot(room, *snapshot),
            RoomEvent::VideoSnapshot { room, snapshot } => self.on_video_snapshot(room, *snapshot),
            RoomEvent::GridSnapshot { room, snapshot } => {
                self.on_grid_snapshot(room, snapshot.map(|s| *s))
            }
        }
        self.step(now);
    }

    // ---- inputs: hot standby -------------------------------------------------------------

    /// Every replicated entry up to `seq` is acknowledged (or counts as such: no backup).
    pub fn handle_committed(&mut self, seq: u64, now: Duration) {
        self.committed = self.committed.max(seq);
        while self.held.front().is_some_and(|h| h.0 <= self.committed) {
            let (_, held, since) = self.held.pop_front().expect("front checked");
            self.actions.push_back(match held {
                Held::Sip(transmit) => Action::SendSip {
                    transmit,
                    held: Some(now.saturating_sub(since)),
                },
                Held::Action(a) => a,
            });
        }
    }

    /// A backup (re)connected: send it the whole state ([`Action::ReplicateFull`]).
    pub fn handle_backup_connected(&mut self, now: Duration) {
        if self.role != Role::Primary {
            return;
        }
        // Whatever changed so far goes out first as its own step.
        self.step(now);
        let mut entries = vec![Entry::new(vec![Item::Server(self.server.clone())])];
        let mut by_call: BTreeMap<u64, Vec<Item>> = BTreeMap::new();
        let mut loose = Vec::new();
        if let Sip::Serving(c) = &self.sip {
            for ch in c.state().to_changes() {
                match ch.call() {
                    Some(h) => by_call.entry(h.0).or_default().push(Item::Sip(ch)),
                    None => loose.push(Item::Sip(ch)),
                }
            }
        }
        entries[0].items.extend(loose);
        for rec in self.calls.values() {
            by_call
                .entry(rec.call)
                .or_default()
                .push(Item::Call(rec.clone()));
        }
        entries.extend(by_call.into_values().map(Entry::new));
        for rec in self.peers.values() {
            entries.push(Entry::new(vec![Item::Peer(Box::new(rec.clone()))]));
        }
        for r in self.rooms.values() {
            entries.push(Entry::new(vec![Item::Room(r.record.clone())]));
        }
        self.last_seq += 1;
        self.full_seq = Some(self.last_seq);
        tracing::info!(
            entries = entries.len(),
            calls = self.calls.len(),
            "sending the full state to the backup"
        );
        self.actions.push_back(Action::ReplicateFull {
            seq: self.last_seq,
            entries,
        });
    }

    /// Backup: apply one entry of the primary's (`full`: it starts a full state, which
    /// replaces everything held so far).
    pub fn handle_replicated(&mut self, entry: Entry, full: bool) {
        if self.role != Role::Backup {
            return;
        }
        if entry.version != schema::SCHEMA_VERSION {
            tracing::error!(
                version = entry.version,
                ours = schema::SCHEMA_VERSION,
                "standby: entry of another schema version ignored"
            );
            return;
        }
        if full {
            for call in std::mem::take(&mut self.calls).into_keys() {
                self.actions.push_back(Action::CloseMedia { call });
            }
            self.rooms.clear();
            self.room_names.clear();
            self.peers.clear();
            self.sip = Sip::Standby(CoreState::new(self.cfg.seed));
            self.holds_state = true;
        }
        for item in entry.items {
            self.apply(item);
        }
    }

    fn apply(&mut self, item: Item) {
        match item {
            Item::Server(s) => self.server = s,
            Item::Sip(ch) => {
                if let Sip::Standby(st) = &mut self.sip {
                    st.apply(ch);
                }
            }
            Item::Call(rec) => {
                let call = rec.call;
                let old = self.calls.get(&call).map(|r| (r.port, r.video_port));
                let (port, video) = (rec.port, rec.video_port);
                self.calls.insert(call, rec);
                // Pairs already bound stay bound (a video pair added is bound alone); a pair
                // that moved (the OS refused one on the primary) rebinds the call afresh.
                let bound: Vec<u16> = match old {
                    None => Vec::new(),
                    Some((p, v)) if p == port && (v.is_none() || v == video) => {
                        [Some(p), v].into_iter().flatten().collect()
                    }
                    Some(_) => {
                        self.actions.push_back(Action::CloseMedia { call });
                        Vec::new()
                    }
                };
                for p in [Some(port), video].into_iter().flatten() {
                    if p != 0 && !bound.contains(&p) {
                        self.actions.push_back(Action::OpenMedia { call, port: p });
                    }
                }
            }
            Item::CallEnded { call } => {
                if self.calls.remove(&call).is_some() {
                    self.actions.push_back(Action::CloseMedia { call });
                }
            }
            // A backup keeps no room membership: the takeover derives it from the calls.
            Item::Room(r) => {
                self.room_names.insert(r.id, r.name.clone());
                let members = BTreeSet::new();
                self.rooms
                    .insert(r.name.clone(), Room { record: r, members });
            }
            Item::RoomClosed { room } => {
                if let Some(name) = self.room_names.remove(&room) {
                    self.rooms.remove(&name);
                }
            }
            Item::Peer(rec) => {
                self.peers.insert(rec.id, *rec);
            }
            Item::PeerEnded { id } => {
                self.peers.remove(&id);
            }
        }
    }

    /// Primary: start a planned switchover (maintenance) to the synced backup. The rooms
    /// send their ticks before `from_tick` and nothing from it on (the driver fences them);
    /// the tick is replicated ([`ServerRecord::handover_tick`]) so that the backup's rooms
    /// start exactly there. From now on this core decides nothing: SIP requests go
    /// unanswered (their retransmissions reach the node that takes over), timers wait, and
    /// the other inputs are held. The driver then hands over on the sync link once this
    /// step is queued (ft-sync's `Node::hand_over`); if the handover is aborted,
    /// [`Core::handle_switchover_aborted`] resumes everything.
    pub fn handle_switchover(
        &mut self,
        from_tick: u64,
        now: Duration,
    ) -> Result<(), SwitchoverError> {
        if self.role != Role::Primary {
            return Err(SwitchoverError::NotPrimary);
        }
        if self.switching.is_some() || self.stopping {
            return Err(SwitchoverError::Busy);
        }
        if !self.synced() {
            return Err(SwitchoverError::NotSynced);
        }
        tracing::warn!(from_tick, "planned switchover: handing over to the backup");
        self.server.handover_tick = Some(from_tick);
        self.server_dirty = true;
        self.step(now);
        self.switching = Some(Vec::new());
        Ok(())
    }

    /// Primary: the handover did not complete (the backup died or never took over): serve
    /// on, acting on the inputs held meanwhile.
    pub fn handle_switchover_aborted(&mut self, now: Duration) {
        let Some(held) = self.switching.take() else {
            return;
        };
        tracing::warn!(held = held.len(), "planned switchover aborted: serving on");
        self.server.handover_tick = None;
        self.server_dirty = true;
        for d in held {
            match d {
                Deferred::SipStream(conn, from, data) => {
                    self.handle_sip_stream(conn, from, &data, now)
                }
                Deferred::SipStreamClosed(conn) => self.handle_sip_stream_closed(conn, now),
                Deferred::Shutdown => self.handle_shutdown(now),
                Deferred::Hangup(call) => self.handle_hangup(call, now),
                Deferred::MediaOpened(call, port, ok) => {
                    self.handle_media_opened(call, port, ok, now)
                }
                Deferred::Room(ev) => self.handle_room_event(ev, now),
                Deferred::Peer(id, input) => self.handle_peer_input(id, input, now),
                Deferred::WhipDelete(request, room, id) => {
                    self.handle_whip_delete(request, &room, id, now)
                }
            }
        }
        self.handle_timeout(now);
    }

    /// Hold an input during a switchover; true when held.
    fn defer(&mut self, input: impl FnOnce() -> Deferred) -> bool {
        match &mut self.switching {
            Some(held) => {
                held.push(input());
                true
            }
            None => false,
        }
    }

    /// Backup: the primary is dead; serve from what was replicated. The driver has claimed
    /// the service address and re-based its clock on [`Core::origin_unix_ns`] (`now` is on
    /// the primary's time line).
    pub fn handle_takeover(&mut self, now: Duration) {
        if self.role != Role::Backup {
            return;
        }
        let state = match std::mem::replace(&mut self.sip, Sip::Standby(CoreState::new(0))) {
            Sip::Standby(s) => s,
            Sip::Serving(_) => unreachable!("a backup's SIP layer is on standby"),
        };
        let sip_cfg = sip_core::Config {
            seed: self.server.seed,
            ..self.cfg.sip.clone()
        };
        self.sip = Sip::Serving(Box::new(sip_core::Core::from_state(sip_cfg, state)));
        self.role = Role::Primary;
        self.cfg.seed = self.server.seed;
        self.ports = ports::Ports::new(self.cfg.rtp_port_min, self.cfg.rtp_port_max);
        self.ports.next = self.server.next_port;
        for rec in self.calls.values() {
            self.ports.take(rec.port);
            if let Some(v) = rec.video_port {
                self.ports.take(v);
            }
        }
        // Membership as the call records say (a backup keeps none of its own).
        for rec in self.calls.values() {
            if matches!(rec.media, MediaPhase::Joining | MediaPhase::Joined) {
                if let Some(room) = self.rooms.get_mut(&rec.room) {
                    room.members.insert(rec.call);
                }
            }
        }
        // WebRTC participants whose handshake completed continue; the others are dropped.
        let (resumable, dropped): (Vec<u64>, Vec<u64>) = self
            .peers
            .values()
            .map(|p| p.id)
            .partition(|id| self.peer_resumable(*id));
        for id in dropped {
            tracing::warn!(
                id,
                "takeover: WebRTC participant was still joining: dropped"
            );
            self.peers.remove(&id);
            self.dirty_peers.insert(id);
        }
        for id in &resumable {
            let name = self.peers[id].room.clone();
            if let Some(room) = self.rooms.get_mut(&name) {
                room.members.insert(*id);
            }
        }
        // A room whose calls all ended is not resumed.
        let empty: Vec<String> = self
            .rooms
            .iter()
            .filter(|(_, r)| r.members.is_empty())
            .map(|(n, _)| n.clone())
            .collect();
        for name in empty {
            if let Some(r) = self.rooms.remove(&name) {
                self.room_names.remove(&r.record.id);
            }
        }
        let first_action = self.actions.len();
        // Rooms: resume from the snapshot and attach the members it has, or restart with the
        // primary's configuration; any other call joins.
        let records: Vec<(RoomRecord, BTreeSet<u64>)> = std::mem::take(&mut self.rooms)
            .into_values()
            .map(|r| (r.record, r.members))
            .collect();
        self.room_names.clear();
        let mut attached = BTreeSet::new();
        for (record, members) in records {
            let id = record.id;
            let in_snapshot: BTreeSet<u64> = record
                .snapshot
                .iter()
                .flat_map(|s| s.participants.iter().map(|p| p.id))
                .collect();
            let muted_in_snapshot: BTreeSet<u64> = record
                .snapshot
                .iter()
                .flat_map(|s| s.participants.iter().filter(|p| p.muted).map(|p| p.id))
                .collect();
            self.open_room(record);
            for call in members {
                if self.peers.contains_key(&call) {
                    if in_snapshot.contains(&call) {
                        self.resume_peer(call, now);
                        attached.insert(call);
                        self.mute_as_recorded(id, call, muted_in_snapshot.contains(&call));
                    }
                    continue;
                }
                let rec = &self.calls[&call];
                if rec.media == MediaPhase::Joined && in_snapshot.contains(&call) {
                    if let Some(neg) = &rec.neg {
                        self.actions.push_back(Action::Room(RoomCommand::Attach {
                            room: id,
                            call,
                            media: member_media(rec.port, neg),
                            source: rec.source,
                            video: member_video(rec),
                            video_source: rec.video_source,
                        }));
                        attached.insert(call);
                        self.rooms
                            .get_mut(&rec.room)
                            .expect("opened")
                            .members
                            .insert(call);
                        self.mute_as_recorded(id, call, muted_in_snapshot.contains(&call));
                    }
                }
            }
        }
        // A participant missing from its room's snapshot cannot continue its stream: dropped.
        let lost: Vec<u64> = resumable
            .into_iter()
            .filter(|id| !attached.contains(id))
            .collect();
        for id in lost {
            tracing::warn!(
                id,
                "takeover: WebRTC participant missing from its room's snapshot: dropped"
            );
            self.forget_peer(id);
        }
        // A re-INVITE that added video to an attached call waited for its video pair, which
        // this node pre-bound: answer it (the room gets its new media with it).
        let reinvites: Vec<u64> = self
            .calls
            .values()
            .filter(|c| attached.contains(&c.call) && c.answer_when_joined)
            .map(|c| c.call)
            .collect();
        for call in reinvites {
            self.answer_reinvite(call, now);
        }
        // Rooms never shipped, and calls caught half-way in (a re-INVITE of a call out of
        // its room included): (re)join.
        let pending: Vec<u64> = self
            .calls
            .values()
            .filter(|c| !attached.contains(&c.call))
            .filter(|c| {
                matches!(c.media, MediaPhase::Joining | MediaPhase::Joined)
                    || (c.media == MediaPhase::Opening && c.neg.is_some())
                    || (c.media == MediaPhase::Idle && c.answer_when_joined && c.neg.is_some())
            })
            .map(|c| c.call)
            .collect();
        for call in pending {
            let rec = self.calls.get_mut(&call).expect("listed");
            if rec.media == MediaPhase::Joined {
                tracing::warn!(call, room = %rec.room.escape_debug(), "takeover: the room's snapshot lacks the call: it joins again (new stream)");
            }
            rec.media = MediaPhase::Idle;
            self.join(call);
        }
        // An offerless INVITE caught while its ports were bound: offer now (the ports were
        // pre-bound when its record arrived).
        let offerless: Vec<u64> = self
            .calls
            .values()
            .filter(|c| c.media == MediaPhase::Opening && c.neg.is_none())
            .map(|c| c.call)
            .collect();
        for call in offerless {
            let rec = self.calls.get_mut(&call).expect("listed");
            rec.media = MediaPhase::Idle;
            rec.awaiting_answer = true;
            self.dirty_calls.insert(call);
            let offer = sdp::build_offer(&rec.local);
            self.accept(call, offer, now);
        }
        let rooms_started = self
            .actions
            .iter()
            .skip(first_action)
            .filter(|a| matches!(a, Action::Room(RoomCommand::Open { .. })))
            .count() as u64;
        let calls = self.calls.len() as u64;
        self.actions.push_back(Action::TakeoverComplete {
            calls,
            rooms: rooms_started,
        });
        tracing::warn!(calls, rooms = rooms_started, "takeover: serving as primary");
        self.step(now);
    }

    /// Takeover: a member attached to its resumed room whose snapshot said `in_snapshot` is
    /// told its record's mute when the two disagree (the record is the authority: the mute
    /// may have been replicated before the room shipped a snapshot with it).
    fn mute_as_recorded(&mut self, room: u64, call: u64, in_snapshot: bool) {
        let muted = self.is_muted(call);
        if muted != in_snapshot {
            self.actions
                .push_back(Action::Room(RoomCommand::Mute { room, call, muted }));
        }
    }

    // ---- the steps ----------------------------------------------------------------------

    /// Handle the SIP layer's events, then close the step: replicate what changed and send
    /// or hold the SIP messages it produced.
    fn step(&mut self, now: Duration) {
        loop {
            let ev = match &mut self.sip {
                Sip::Serving(c) => c.poll_event(),
                Sip::Standby(_) => None,
            };
            let Some(ev) = ev else { break };
            self.on_sip_event(ev, now);
        }
        self.end_step(now);
    }

    fn end_step(&mut self, now: Duration) {
        let Sip::Serving(sip) = &mut self.sip else {
            return;
        };
        let changes = sip.take_changes();
        let mut transmits = Vec::new();
        while let Some(t) = sip.poll_transmit() {
            transmits.push(t);
        }
        if self.server.next_port != self.ports.next {
            self.server.next_port = self.ports.next;
            self.server_dirty = true;
        }
        let commit_actions = std::mem::take(&mut self.commit_actions);
        if self.role != Role::Primary {
            self.dirty_calls.clear();
            self.dirty_peers.clear();
            self.room_items.clear();
            self.server_dirty = false;
            self.actions
                .extend(transmits.into_iter().map(|transmit| Action::SendSip {
                    transmit,
                    held: None,
                }));
            self.actions.extend(commit_actions);
            return;
        }
        let mut items = Vec::new();
        if std::mem::take(&mut self.server_dirty) {
            items.push(Item::Server(self.server.clone()));
        }
        items.extend(changes.into_iter().map(Item::Sip));
        for call in std::mem::take(&mut self.dirty_calls) {
            items.push(match self.calls.get(&call) {
                Some(rec) => Item::Call(rec.clone()),
                None => Item::CallEnded { call },
            });
        }
        items.extend(self.peer_items());
        items.append(&mut self.room_items);
        if !items.is_empty() {
            self.last_seq += 1;
            self.actions.push_back(Action::Replicate {
                seq: self.last_seq,
                entry: Entry::new(items),
            });
        }
        let out = transmits
            .into_iter()
            .map(Held::Sip)
            .chain(commit_actions.into_iter().map(Held::Action));
        for h in out {
            if self.held.is_empty() && self.committed >= self.last_seq {
                self.actions.push_back(match h {
                    Held::Sip(transmit) => Action::SendSip {
                        transmit,
                        held: None,
                    },
                    Held::Action(a) => a,
                });
            } else {
                self.held.push_back((self.last_seq, h, now));
            }
        }
    }

    fn sip_mut(&mut self) -> Option<&mut sip_core::Core> {
        match &mut self.sip {
            Sip::Serving(c) => Some(c),
            Sip::Standby(_) => None,
        }
    }

    fn accept(&mut self, call: u64, body: String, now: Duration) {
        if let Some(sip) = self.sip_mut() {
            if sip.accept(CallHandle(call), body, now).is_ok() {
                self.stats.calls_accepted += 1;
            }
        }
    }

    /// Reject with our own reason phrase (also what the log says).
    fn reject_reason(&mut self, call: u64, status: u16, phrase: &str, now: Duration) {
        tracing::info!(call, status, "rejecting call: {phrase}");
        self.stats.calls_rejected += 1;
        if let Some(sip) = self.sip_mut() {
            if sip
                .reject_with_reason(CallHandle(call), status, phrase, now)
                .is_err()
            {
                let _ = sip.reject(CallHandle(call), status, now);
            }
        }
    }

    fn reject(&mut self, call: u64, status: u16, why: &str, now: Duration) {
        tracing::info!(call, status, "rejecting call: {why}");
        self.stats.calls_rejected += 1;
        if let Some(sip) = self.sip_mut() {
            let _ = sip.reject(CallHandle(call), status, now);
        }
    }

    fn on_sip_event(&mut self, ev: Event, now: Duration) {
        match ev {
            Event::IncomingCall {
                call,
                room,
                from_uri,
                source,
                transport,
                offer,
            } => {
                let call = call.0;
                tracing::info!(call, room = %room.escape_debug(), from_uri = %from_uri.escape_debug(), %source, ?transport, "INVITE");
                if room.is_empty() {
                    return self.reject(call, 404, "no room in Request-URI", now);
                }
                if !valid_room_name(&room) {
                    return self.reject(call, 404, "room name not allowed", now);
                }
                if let Some(r) = self.rooms.get(&room) {
                    if r.record.settings.locked {
                        return self.reject_reason(call, 403, admin::LOCKED_REASON, now);
                    }
                    if r.members.len() >= r.record.settings.limit(self.cfg.max_participants) {
                        return self.reject(call, 486, "room full", now);
                    }
                }
                let neg = match offer.as_deref().map(sdp::negotiate) {
                    Some(Err(SdpError::NotAcceptable(why))) => {
                        return self.reject(call, 488, &why, now)
                    }
                    Some(Err(e)) => return self.reject(call, 400, &e.to_string(), now),
                    Some(Ok(n)) if !self.same_family(&n) => {
                        return self.reject(call, 488, "media address family not served", now)
                    }
                    Some(Ok(n)) => Some(n),
                    None => None,
                };
                let session_id = self.server.rng.next_u64() >> 1;
                self.server_dirty = true;
                let rec = CallRecord {
                    call,
                    room,
                    from_uri,
                    port: 0,
                    video_port: None,
                    local: LocalMedia {
                        ip: self.cfg.media_ip,
                        rtp_port: 0,
                        video_port: None,
                        session_id,
                        session_version: 1,
                    },
                    media: MediaPhase::Opening,
                    answer_when_joined: neg.is_some(),
                    neg,
                    awaiting_answer: false,
                    confirmed: false,
                    ssrc_out: None,
                    source: None,
                    video_source: None,
                    muted: false,
                    kicked: false,
                };
                self.calls.insert(call, rec);
                self.dirty_calls.insert(call);
                if !self.open_media(call) {
                    self.reject(call, 503, "no free RTP ports", now);
                    self.forget(call);
                    return;
                }
                // Its video pair (or its video declined), bound alongside.
                self.ensure_video(call);
            }
            Event::ReInvite { call, offer } => {
                let call = call.0;
                let Some(rec) = self.calls.get_mut(&call) else {
                    return self.reject(call, 481, "unknown call", now);
                };
                rec.local.session_version += 1;
                self.dirty_calls.insert(call);
                let family = self.cfg.media_ip.is_ipv6();
                match offer.as_deref().map(sdp::negotiate) {
                    Some(Ok(n)) if n.remote_rtp.is_ipv6() != family => {
                        self.reject(call, 488, "media address family not served", now)
                    }
                    // Still joining (the INVITE's own answer is pending), or a re-INVITE's
                    // video pair still being bound: refuse.
                    Some(Ok(_))
                        if matches!(rec.media, MediaPhase::Opening | MediaPhase::Joining)
                            || rec.answer_when_joined =>
                    {
                        self.reject(call, 491, "request pending", now)
                    }
                    // Adds, changes or removes video, holds or resumes: answered at once,
                    // or once a video pair it brings is bound.
                    Some(Ok(n)) => {
                        let joined = rec.media == MediaPhase::Joined;
                        rec.neg = Some(n);
                        rec.answer_when_joined = true;
                        if !self.ensure_video(call) {
                            if joined {
                                self.answer_reinvite(call, now);
                            } else {
                                self.join(call);
                            }
                        }
                    }
                    Some(Err(_)) => self.reject(call, 488, "unacceptable re-INVITE offer", now),
                    None => {
                        rec.awaiting_answer = true;
                        let offer = sdp::build_offer(&rec.local);
                        self.accept(call, offer, now);
                    }
                }
            }
            Event::Confirmed { call, answer } => {
                let call = call.0;
                let Some(rec) = self.calls.get_mut(&call) else {
                    return;
                };
                rec.confirmed = true;
                self.dirty_calls.insert(call);
                if std::mem::take(&mut rec.awaiting_answer) {
                    match answer.as_deref().map(sdp::negotiate) {
                        Some(Ok(mut n))
                            if n.remote_rtp.is_ipv6() == self.cfg.media_ip.is_ipv6() =>
                        {
                            let (joined, idle) = (
                                rec.media == MediaPhase::Joined,
                                rec.media == MediaPhase::Idle,
                            );
                            // Video only where we offered it.
                            if rec.local.video_port.is_none() {
                                n.decline_video();
                            }
                            rec.neg = Some(n);
                            // Declines it when it cannot be served (never binds: our offer
                            // had the pair already).
                            self.ensure_video(call);
                            if joined {
                                self.update_media(call);
                            } else if idle {
                                self.join(call);
                            }
                        }
                        other => {
                            tracing::info!(
                                call,
                                "ACK without usable SDP answer ({other:?}): hanging up"
                            );
                            self.hangup(call, now);
                            return;
                        }
                    }
                }
                if self.stopping || self.calls.get(&call).is_some_and(|c| c.kicked) {
                    // A UAS may not BYE before the ACK of its 200: the shutdown's (or the
                    // operator's kick's) BYE goes now.
                    self.hangup(call, now);
                }
            }
            Event::InfoDtmf { call, digit } => {
                if let Some(rec) = self.calls.get(&call.0) {
                    tracing::info!(call = call.0, room = %rec.room.escape_debug(), %digit, "DTMF (SIP INFO)");
                    self.actions.push_back(Action::Dtmf {
                        room: rec.room.clone(),
                        call: call.0,
                        digit,
                    });
                }
            }
            Event::CallEnded { call, reason } => {
                tracing::info!(call = call.0, ?reason, "call ended");
                if reason == EndReason::AckTimeout {
                    // RFC 3261 13.3.1.4: a 2xx never acknowledged ends the dialog with a BYE.
                    tracing::warn!(call = call.0, "200 OK never acknowledged: sending BYE");
                    self.hangup(call.0, now);
                }
                self.forget(call.0);
            }
        }
    }

    /// Send BYE; the call leaves its room at once (its media stop with the BYE, not when the
    /// BYE transaction ends). Whether the BYE went out.
    fn hangup(&mut self, call: u64, now: Duration) -> bool {
        let Some(sip) = self.sip_mut() else {
            return false;
        };
        if sip.hangup(CallHandle(call), now).is_err() {
            return false;
        }
        self.leave_room(call);
        true
    }

    /// Take the call out of its room now (the call itself lives on until its BYE completes).
    fn leave_room(&mut self, call: u64) {
        let Some(rec) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(room) = self.rooms.get_mut(&rec.room) else {
            return;
        };
        if room.members.remove(&call) {
            let id = room.record.id;
            rec.media = MediaPhase::Idle;
            self.dirty_calls.insert(call);
            self.actions
                .push_back(Action::Room(RoomCommand::Leave { room: id, call }));
            self.close_room_if_empty(id);
        }
    }

    /// The offer's media address is of the family we serve (IPv4 or IPv6, as `media_ip`).
    fn same_family(&self, n: &Negotiated) -> bool {
        n.remote_rtp.is_ipv6() == self.cfg.media_ip.is_ipv6()
    }

    /// Pick the call's (audio) port pair and ask the driver to bind it.
    fn open_media(&mut self, call: u64) -> bool {
        let refused = self.refused.get(&call).cloned().unwrap_or_default();
        let Some(port) = self.ports.allocate(&refused) else {
            self.refused.remove(&call);
            return false;
        };
        let rec = self
            .calls
            .get_mut(&call)
            .expect("open_media of a known call");
        rec.port = port;
        rec.local.rtp_port = port;
        self.dirty_calls.insert(call);
        self.opening.entry(call).or_default().insert(port);
        self.actions.push_back(Action::OpenMedia { call, port });
        true
    }

    /// The call is over: leave its room, free its ports.
    fn forget(&mut self, call: u64) {
        let Some(rec) = self.calls.remove(&call) else {
            return;
        };
        self.dirty_calls.insert(call);
        self.refused.remove(&call);
        self.opening.remove(&call);
        if rec.port != 0 {
            self.ports.release(rec.port);
        }
        if let Some(v) = rec.video_port {
            self.ports.release(v);
        }
        self.actions.push_back(Action::CloseMedia { call });
        if let Some(room) = self.rooms.get_mut(&rec.room) {
            if room.members.remove(&call) {
                let id = room.record.id;
                self.actions
                    .push_back(Action::Room(RoomCommand::Leave { room: id, call }));
                self.close_room_if_empty(id);
            }
        }
    }

    fn close_room_if_empty(&mut self, id: u64) {
        let Some(name) = self.room_names.get(&id) else {
            return;
        };
        if self.rooms.get(name).is_some_and(|r| r.members.is_empty()) {
            let name = self.room_names.remove(&id).expect("looked up");
            self.rooms.remove(&name);
            self.actions
                .push_back(Action::Room(RoomCommand::Close { room: id }));
            self.room_items.push(Item::RoomClosed { room: id });
        }
    }

    /// Put the call's media into its room, opening the room on first use.
    fn join(&mut self, call: u64) {
        let rec = &self.calls[&call];
        let Some(neg) = rec.neg.clone() else { return };
        let name = rec.room.clone();
        let port = rec.port;
        let video = member_video(rec);
        self.room_for(&name);
        let room = self.rooms.get_mut(&name).expect("opened above");
        room.members.insert(call);
        let id = room.record.id;
        let rec = self.calls.get_mut(&call).expect("known");
        rec.media = MediaPhase::Joining;
        let muted = rec.muted;
        self.dirty_calls.insert(call);
        self.actions.push_back(Action::Room(RoomCommand::Join {
            room: id,
            call,
            params: stream_params(&neg),
            media: member_media(port, &neg),
            video,
        }));
        if muted {
            // The record is the authority: a muted call joining (again) is muted there too.
            self.actions.push_back(Action::Room(RoomCommand::Mute {
                room: id,
                call,
                muted: true,
            }));
        }
    }

    /// The id of room `name`, opening it (replicated) if it does not exist.
    fn room_for(&mut self, name: &str) -> u64 {
        if !self.rooms.contains_key(name) {
            let name = name.to_string();
            let id = self.server.next_room_id;
            self.server.next_room_id += 1;
            let config = MixerConfig {
                top_n: self.cfg.top_n,
                seed: self.server.seed ^ self.server.rng.next_u64(),
                ntp_origin: ntp_of_unix_ns(self.server.origin_unix_ns),
                ..MixerConfig::default()
            };
            self.server_dirty = true;
            let record = RoomRecord {
                id,
                name: name.clone(),
                config,
                snapshot: None,
                video: None,
                grid: None,
                settings: RoomSettings::default(),
            };
            self.room_items.push(Item::Room(record.clone()));
            self.open_room(record);
        }
        self.rooms[name].record.id
    }

    /// Register a room and start its task (new, or resumed from its snapshot).
    fn open_room(&mut self, record: RoomRecord) {
        let init = match &record.snapshot {
            Some(s) => RoomInit::Resume(Box::new(s.clone())),
            None => RoomInit::New(record.config.clone()),
        };
        self.actions.push_back(Action::Room(RoomCommand::Open {
            room: record.id,
            name: record.name.clone(),
            init,
            layout: record.settings.layout(self.cfg.video_layout),
            video: record.video.clone().map(Box::new),
            grid: record.grid.clone().map(Box::new),
        }));
        self.room_names.insert(record.id, record.name.clone());
        self.rooms.insert(
            record.name.clone(),
            Room {
                record,
                members: BTreeSet::new(),
            },
        );
    }

    fn update_media(&mut self, call: u64) {
        let rec = &self.calls[&call];
        let Some(neg) = &rec.neg else { return };
        let Some(room) = self.rooms.get(&rec.room) else {
            return;
        };
        let video = member_video(rec);
        tracing::info!(call, direction = ?neg.direction, video = ?video.as_ref().map(|v| v.media.port), "media updated");
        self.actions.push_back(Action::Room(RoomCommand::Update {
            room: room.record.id,
            call,
            params: stream_params(neg),
            remote_rtp: neg.remote_rtp,
            remote_rtcp: neg.remote_rtcp,
            video,
        }));
    }

    fn on_snapshot(&mut self, room: u64, snapshot: MixerSnapshot) {
        let Some(name) = self.room_names.get(&room) else {
            return; // closed meanwhile
        };
        let Some(r) = self.rooms.get_mut(name) else {
            return;
        };
        if r.record
            .snapshot
            .as_ref()
            .is_some_and(|s| s.state_version >= snapshot.state_version)
        {
            return; // overtaken by the one a Joined reply carried
        }
        r.record.snapshot = Some(snapshot);
        if self.role == Role::Primary {
            self.room_items.push(Item::Room(r.record.clone()));
        }
    }

    fn on_video_snapshot(&mut self, room: u64, snapshot: video::SwitcherSnapshot) {
        let Some(r) = self
            .room_names
            .get(&room)
            .and_then(|name| self.rooms.get_mut(name))
        else {
            return; // closed meanwhile
        };
        if r.record
            .video
            .as_ref()
            .is_some_and(|s| s.state_version >= snapshot.state_version)
        {
            return;
        }
        r.record.video = Some(snapshot);
        if self.role == Role::Primary {
            self.room_items.push(Item::Room(r.record.clone()));
        }
    }

    fn on_grid_snapshot(&mut self, room: u64, snapshot: Option<video::snapshot::GridSnapshot>) {
        let Some(r) = self
            .room_names
            .get(&room)
            .and_then(|name| self.rooms.get_mut(name))
        else {
            return; // closed meanwhile
        };
        if r.record.grid == snapshot {
            return;
        }
        r.record.grid = snapshot;
        if self.role == Role::Primary {
            self.room_items.push(Item::Room(r.record.clone()));
        }
    }
}

/// Longest room name accepted, in bytes.
pub const MAX_ROOM_NAME: usize = 64;

/// Whether `name` (the Request-URI user part, percent-decoded) may name a room: 1 to
/// [`MAX_ROOM_NAME`] ASCII letters, digits and `-_.~` (RFC 3986's unreserved characters).
/// Anything else is refused with 404 before it reaches a log line, a Contact header or the
/// admin API.
pub fn valid_room_name(name: &str) -> bool {
    (1..=MAX_ROOM_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
}

fn member_media(port: u16, neg: &Negotiated) -> MemberMedia {
    MemberMedia {
        port,
        remote_rtp: neg.remote_rtp,
        remote_rtcp: neg.remote_rtcp,
        rtcp_mux: neg.rtcp_mux,
    }
}

/// The call's video as its room needs it: its negotiated video line on its video pair
/// (`None` without either).
pub fn member_video(rec: &CallRecord) -> Option<MemberVideo> {
    let port = rec.video_port?;
    let v = rec.neg.as_ref()?.video.as_ref()?;
    Some(MemberVideo {
        media: MemberMedia {
            port,
            remote_rtp: v.remote_rtp,
            remote_rtcp: v.remote_rtcp,
            rtcp_mux: v.rtcp_mux,
        },
        params: video_params(v),
    })
}

/// Map a negotiated video line onto the room's video parameters.
pub fn video_params(v: &sdp::NegotiatedVideo) -> VideoParams {
    let (send, recv) = directions(v.direction);
    VideoParams {
        payload_type: v.payload_type,
        send,
        recv,
        feedback: v.feedback,
    }
}

/// (we send, we receive) for the remote's SDP direction.
fn directions(d: Direction) -> (bool, bool) {
    match d {
        Direction::SendRecv => (true, true),
        Direction::SendOnly => (false, true),
        Direction::RecvOnly => (true, false),
        Direction::Inactive => (false, false),
    }
}

/// Map an SDP negotiation onto the mixer's stream parameters.
pub fn stream_params(neg: &Negotiated) -> StreamParams {
    let codec = match neg.codec {
        CodecName::Opus => Codec::Opus,
        CodecName::Pcmu => Codec::Pcmu,
        CodecName::Pcma => Codec::Pcma,
    };
    let ptime = neg.ptime_ms.clamp(10, 60) / 10 * 10;
    let (send, recv) = directions(neg.direction);
    StreamParams {
        codec,
        payload_type: neg.payload_type,
        telephone_event_pt: neg.telephone_event_pt,
        ptime_ms: ptime,
        audio_level_ext_id: neg.audio_level_ext_id,
        send,
        recv,
    }
}

/// NTP timestamp (RFC 3550 64-bit) of a wall-clock time given in ns since the Unix epoch.
pub fn ntp_of_unix_ns(unix_ns: u64) -> u64 {
    const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
    let wall = Duration::from_nanos(unix_ns);
    let secs = wall.as_secs() + NTP_UNIX_OFFSET;
    let frac = ((wall.subsec_nanos() as u64) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_are_unreserved_characters() {
        for ok in ["standup", "Team-7_a.b~c", &"x".repeat(MAX_ROOM_NAME)] {
            assert!(valid_room_name(ok), "{ok}");
        }
        for bad in [
            "",
            "a\r\nFORGED",
            "a\u{1b}[31m",
            "a b",
            "a%0d",
            "caf\u{e9}",
            "a/b",
            &"x".repeat(MAX_ROOM_NAME + 1),
        ] {
            assert!(!valid_room_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn ntp_of_the_unix_epoch_is_the_ntp_offset() {
        assert_eq!(ntp_of_unix_ns(0), 2_208_988_800u64 << 32);
        assert_eq!(ntp_of_unix_ns(500_000_000) & 0xffff_ffff, 1 << 31);
    }
}
