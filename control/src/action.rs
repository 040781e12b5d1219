//! What the core asks its driver to do, and what the driver reports back from the rooms.

use crate::admin::VideoLayout;
use crate::latch::Source;
use crate::schema::Entry;
use mixer::{MixerConfig, MixerSnapshot, StreamParams};
use serde::{Deserialize, Serialize};
use sip_core::sdp::VideoFeedback;
use std::net::SocketAddr;

/// Something the driver must do, drained with [`crate::Core::poll_action`] in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Send a SIP message now (output commit done: it is released).
    SendSip {
        /// The message.
        transmit: sip_core::Transmit,
        /// How long it waited for the backup's acknowledgement (`None`: not held).
        held: Option<std::time::Duration>,
    },
    /// Bind the RTP/RTCP port pair `port`, `port + 1` on the media address for `call`, then
    /// report with [`crate::Core::handle_media_opened`] before draining further actions. A
    /// backup does the same to pre-bind the ports of the primary's calls.
    ///
    /// A call has one pair for its audio ([`crate::CallRecord::port`]) and, when it has
    /// video, a second one for its video ([`crate::CallRecord::video_port`]), each opened by
    /// its own `OpenMedia` (the video pair possibly later, by a re-INVITE that adds video):
    /// the driver keeps the sockets by call and port, and hands them over with the
    /// [`MemberMedia`] whose `port` names them.
    OpenMedia {
        /// Call the sockets belong to.
        call: u64,
        /// RTP port (even; RTCP is the next one).
        port: u16,
    },
    /// Drop every socket of `call` the driver still holds (not handed to a room).
    CloseMedia {
        /// Call.
        call: u64,
    },
    /// A command for a room task.
    Room(RoomCommand),
    /// Replicate one step to the backup; report [`crate::Core::handle_committed`] once it
    /// (and everything before it) is acknowledged, or at once when running unprotected.
    Replicate {
        /// Sequence number of this entry (1, 2, ...; gaps never occur).
        seq: u64,
        /// The step.
        entry: Entry,
    },
    /// A backup (re)connected: these entries replace its whole state (the first one starts
    /// the snapshot). Committed like [`Action::Replicate`] under `seq`.
    ReplicateFull {
        /// Sequence number covering all of `entries`.
        seq: u64,
        /// Server entry first, then one entry per call and per room.
        entries: Vec<Entry>,
    },
    /// A DTMF digit sent with SIP INFO.
    Dtmf {
        /// Room name.
        room: String,
        /// Call.
        call: u64,
        /// Digit.
        digit: char,
    },
    /// Register a joining WebRTC participant with the WebRTC transport (before its answer
    /// is released: its ICE checks may follow at once).
    OpenPeer {
        /// Participant id.
        id: u64,
        /// Our ICE credentials.
        local: webrtc_core::ice::Credentials,
        /// The browser's.
        remote: webrtc_core::ice::Credentials,
        /// The browser's certificate fingerprint (sha-256).
        remote_fingerprint: String,
    },
    /// Takeover: continue a WebRTC participant from its replicated keys.
    ResumePeer {
        /// Participant id.
        id: u64,
        /// Our ICE credentials.
        local: webrtc_core::ice::Credentials,
        /// The browser's.
        remote: webrtc_core::ice::Credentials,
        /// The browser's certificate fingerprint (sha-256).
        remote_fingerprint: String,
        /// The SRTP keys its handshake exported.
        keys: webrtc_core::dtls::KeyingMaterial,
        /// Its nominated pair.
        selected: Option<SocketAddr>,
    },
    /// The participant's keys are replicated: its server's final DTLS flight may go.
    ReleaseFinalFlight {
        /// Participant id.
        id: u64,
    },
    /// Forget a WebRTC participant's transport.
    ClosePeer {
        /// Participant id.
        id: u64,
    },
    /// Answer a WHIP request (released after the backup acknowledged what it implies).
    WhipReply {
        /// The driver's request id.
        request: u64,
        /// The answer.
        result: crate::peer::WhipResult,
    },
    /// Answer an operator's request ([`crate::Core::handle_admin`]; released after the
    /// backup acknowledged what it changed).
    AdminReply {
        /// The driver's request id.
        request: u64,
        /// The answer.
        result: crate::admin::AdminResult,
    },
    /// The takeover is done: this node serves.
    TakeoverComplete {
        /// Calls taken over.
        calls: u64,
        /// Rooms resumed or restarted.
        rooms: u64,
    },
}

/// How a room starts.
#[derive(Clone, Debug, PartialEq)]
pub enum RoomInit {
    /// A new mixer.
    New(MixerConfig),
    /// A promoted backup continues the primary's mixer from its snapshot; its members are
    /// attached next with [`RoomCommand::Attach`].
    Resume(Box<MixerSnapshot>),
}

/// A participant's media (its audio, or its video) as its room needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberMedia {
    /// Our RTP port (the driver's sockets for the call).
    pub port: u16,
    /// Where the client asked for RTP in its SDP.
    pub remote_rtp: SocketAddr,
    /// Where it asked for RTCP.
    pub remote_rtcp: SocketAddr,
    /// RTCP multiplexed on the RTP port (RFC 5761).
    pub rtcp_mux: bool,
}

/// A participant's video (VP8, RFC 7741) as its room needs it: its own port pair behind its
/// own media source latch ([`crate::latch`]), what it sends and receives, and the RTCP
/// feedback it understands. The room task hands it to its video forwarder.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberVideo {
    /// Our video port pair and where the client asked for video RTP and RTCP.
    pub media: MemberMedia,
    /// The negotiated stream.
    pub params: VideoParams,
}

/// A participant's negotiated video stream, from the room's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoParams {
    /// VP8 payload type, both ways (the client's, as answered).
    pub payload_type: u8,
    /// We send it video (its SDP says sendrecv or recvonly): it is a receiver.
    pub send: bool,
    /// It sends video (its SDP says sendrecv or sendonly): it is a source.
    pub recv: bool,
    /// The RTCP feedback it supports (what a forwarder may send it: NACK, PLI, FIR, REMB).
    pub feedback: VideoFeedback,
}

/// A WebRTC participant's video, from the room's side: bundled on its one transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerVideo {
    /// The negotiated stream.
    pub params: VideoParams,
    /// The browser's video SSRC, if its offer announced one (else learnt from its packets).
    pub source_ssrc: Option<u32>,
}

/// Commands for a room task (one task per room; ids are stable across a takeover).
#[derive(Clone, Debug, PartialEq)]
pub enum RoomCommand {
    /// Start the room task.
    Open {
        /// Room id.
        room: u64,
        /// Room name.
        name: String,
        /// New or resumed mixer.
        init: RoomInit,
        /// How the room shows video ([`crate::RoomSettings::layout`], else the server's).
        layout: VideoLayout,
        /// A resumed room's video forwarder, continued from its snapshot (takeover).
        video: Option<Box<video::SwitcherSnapshot>>,
        /// A resumed room's grid compositor, continued from its snapshot (takeover of a
        /// room in grid layout).
        grid: Option<Box<video::snapshot::GridSnapshot>>,
    },
    /// Add a participant to the mixer; the room answers with [`RoomEvent::Joined`] or
    /// [`RoomEvent::JoinFailed`].
    Join {
        /// Room id.
        room: u64,
        /// Call (participant id).
        call: u64,
        /// Negotiated stream.
        params: StreamParams,
        /// Its media.
        media: MemberMedia,
        /// Its video, if it has any: the room adds it to its video forwarder.
        video: Option<MemberVideo>,
    },
    /// Attach the sockets of a participant the resumed mixer already has (takeover).
    Attach {
        /// Room id.
        room: u64,
        /// Call.
        call: u64,
        /// Its media.
        media: MemberMedia,
        /// The source its room had learned on the primary (`None`: none reported; the driver
        /// may fall back on where the mirrored input showed its packets come from).
        source: Option<Source>,
        /// Its video, if it has any.
        video: Option<MemberVideo>,
        /// The video source its room had learned on the primary (as `source`).
        video_source: Option<Source>,
    },
    /// Add a WebRTC participant (its media come and go through the WebRTC transport).
    JoinPeer {
        /// Room id.
        room: u64,
        /// Participant id.
        call: u64,
        /// Its stream.
        params: StreamParams,
        /// Its video (bundled on the same transport), if its offer has a usable one and the
        /// server serves video: the room adds it to its video forwarder and answers with
        /// the output SSRC ([`RoomEvent::Joined`]'s `video_ssrc`).
        video: Option<PeerVideo>,
    },
    /// Takeover: route a resumed WebRTC participant of the resumed mixer through the
    /// transport; its outgoing SRTP stream continues from the mixer's sequence numbers.
    AttachPeer {
        /// Room id.
        room: u64,
        /// Participant id.
        call: u64,
        /// The SRTCP index its next report carries.
        srtcp_index: u32,
        /// Its video, if it had any: its output stream continues from the forwarder's
        /// snapshot.
        video: Option<PeerVideo>,
        /// The SRTCP index the next RTCP packet of its video stream carries.
        video_srtcp_index: u32,
        /// The SRTP packet index of its video stream the transport last reported
        /// ([`crate::PeerInput::OutboundProgress`]): its rollover counter.
        video_ext_seq: Option<u64>,
    },
    /// New negotiated parameters (re-INVITE), same output stream.
    Update {
        /// Room id.
        room: u64,
        /// Call.
        call: u64,
        /// Negotiated stream.
        params: StreamParams,
        /// New SDP RTP address.
        remote_rtp: SocketAddr,
        /// New SDP RTCP address.
        remote_rtcp: SocketAddr,
        /// Its video now (`None`: it has none, or a re-INVITE removed it): a new video, a
        /// changed one (addresses, direction: hold and resume) or video gone. A video pair
        /// the room does not hold yet is handed over with it.
        video: Option<MemberVideo>,
    },
    /// The room's video layout changed ([`crate::AdminCommand::Settings`]).
    Layout {
        /// Room id.
        room: u64,
        /// The layout now.
        layout: VideoLayout,
    },
    /// Mute or unmute a participant in the mixer ([`mixer::Mixer::set_muted`]): sent when
    /// the operator changes it, after the `Join`/`JoinPeer` of a muted participant, and at a
    /// takeover for every resumed member whose snapshot disagrees with its record.
    Mute {
        /// Room id.
        room: u64,
        /// Participant id.
        call: u64,
        /// The new state.
        muted: bool,
    },
    /// Remove a participant (its RTCP BYE goes out).
    Leave {
        /// Room id.
        room: u64,
        /// Call.
        call: u64,
    },
    /// Stop the room task (its last participant left).
    Close {
        /// Room id.
        room: u64,
    },
}

/// What a room reports to the core.
#[derive(Clone, Debug, PartialEq)]
pub enum RoomEvent {
    /// A participant is in the mixer.
    Joined {
        /// Room id.
        room: u64,
        /// Call.
        call: u64,
        /// Its output SSRC.
        ssrc: u32,
        /// The SSRC of its video output stream, when it joined with video (the WebRTC answer
        /// announces it).
        video_ssrc: Option<u32>,
        /// The room's snapshot including it (replicated before the call is answered).
        snapshot: Option<Box<MixerSnapshot>>,
    },
    /// The mixer refused the participant.
    JoinFailed {
        /// Room id.
        room: u64,
        /// Call.
        call: u64,
        /// Why.
        reason: String,
    },
    /// A participant's media source was learned or changed ([`crate::latch::Latch::poll_report`]).
    Latched {
        /// Room id.
        room: u64,
        /// Call.
        call: u64,
        /// What was learned.
        source: Source,
    },
    /// A participant's video source was learned or changed (its video pair's own latch).
    VideoLatched {
        /// Room id.
        room: u64,
        /// Call.
        call: u64,
        /// What was learned.
        source: Source,
    },
    /// Nothing was heard from a participant (not on hold) for the media timeout: the core
    /// hangs the call up.
    MediaTimeout {
        /// Room id.
        room: u64,
        /// Call.
        call: u64,
    },
    /// The mixer's state version moved: its latest snapshot.
    Snapshot {
        /// Room id.
        room: u64,
        /// Snapshot.
        snapshot: Box<MixerSnapshot>,
    },
    /// The video forwarder's state version moved (a switch decided or made, a member with
    /// video in or out): its latest snapshot.
    VideoSnapshot {
        /// Room id.
        room: u64,
        /// Snapshot.
        snapshot: Box<video::SwitcherSnapshot>,
    },
    /// The grid compositor's tiles or speaker changed: its latest snapshot (`None`: the
    /// room left grid layout).
    GridSnapshot {
        /// Room id.
        room: u64,
        /// Snapshot.
        snapshot: Option<Box<video::snapshot::GridSnapshot>>,
    },
}
