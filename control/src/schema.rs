//! The replicated schema: what a primary sends its backup, typed and versioned.
//!
//! The records here are the control core's live state, not a projection of it: the core
//! keeps its calls as [`CallRecord`]s, its rooms as [`RoomRecord`]s and its server-wide
//! counters as a [`ServerRecord`], and a backup applies the very same values. The SIP layer's
//! own state travels as [`sip_core::state::StateChange`]s, each one dialog or transaction,
//! tracked by `sip-core` as it changes. Nothing is re-encoded to find out what changed: one
//! SIP message costs the items it changed, whatever the number of calls.
//!
//! One input step of the core (a SIP message, a timer, a room event) becomes one [`Entry`],
//! applied by the backup as a whole; the SIP messages of that step are held until the
//! backup acknowledged it (output commit).
//!
//! # What is replicated, and what breaks without it
//!
//! - SIP dialogs and transactions ([`Item::Sip`]: Call-ID, tags, CSeq numbers, route set,
//!   remote target, pending responses and their timers): without them a BYE, OPTIONS or
//!   re-INVITE after a takeover gets 481 and the client hangs up, and a 200 waiting for its
//!   ACK is never retransmitted.
//! - Calls ([`Item::Call`]: room, ports (audio, and video when the call has it), SDP session
//!   id and version, negotiated media (the video line included), where the call stands, the
//!   media sources its room learned): without them the backup does not know which client
//!   belongs to which room, which ports to pre-bind, where to send its media, or what version
//!   its next SDP must carry.
//! - Rooms ([`Item::Room`]: the mixer configuration and its latest snapshot (and the video
//!   forwarder's, and the grid compositor's in grid layout), i.e. every
//!   output stream's SSRC, sequence and timestamp origin, the tick phase, the top-N set and
//!   the dominant speaker): without them a client sees a new SSRC or a seq/ts jump (most
//!   jitter buffers reset, some phones drop the stream), RTCP SR maps NTP to RTP time
//!   inconsistently, and the mix restarts empty with a spurious active-speaker change.
//! - WebRTC participants ([`Item::Peer`]: the browser's parsed offer, our ICE credentials,
//!   the nominated pair, the SRTP keys its DTLS handshake exported, its output SSRCs (audio,
//!   and video when bundled), the packet index each outgoing stream last reported): without
//!   them a backup cannot answer the browser's consent checks (ICE fails after ~5 s) nor
//!   encrypt a packet it would accept. The credentials are replicated before the WHIP answer
//!   is released, the keys before the server's final DTLS flight.
//! - The operator's decisions ([`crate::admin`]): a participant's mute in its call or peer
//!   record, a room's lock and own limit in its room record. Without them a muted talker is
//!   heard again after a takeover and a locked room admits the next caller.
//! - Server-wide values ([`Item::Server`]: the time origin, the generators behind SDP
//!   session ids and room seeds, where port numbering continues): the backup must reproduce
//!   what the primary told the clients and draw the next choices from the same sources.
//!
//! `tests/takeover.rs` has a negative control for each of these: drop it and a promoted
//! backup sends something the primary would not have.

use crate::admin::RoomSettings;
use crate::latch::Source;
use crate::peer::PeerRecord;
use mixer::{MixerConfig, MixerSnapshot};
use serde::{Deserialize, Serialize};
use sip_core::sdp::{LocalMedia, Negotiated};
use sip_core::state::{Rng, StateChange};

/// Version of this schema. A backup refuses entries of another version (the sync link's
/// own handshake already refuses another protocol version; this guards the application's
/// layout, which can change without the link's).
///
/// 6: calls carry a video port pair and a learned video source; the negotiated media its
/// video line; room settings a video layout. 7: rooms carry their video forwarder's
/// snapshot. 8: rooms carry their grid compositor's snapshot, the forwarder's its pinned
/// source (both read as absent from an older record). 9: a WebRTC participant's record
/// carries its bundled video (the offer's video line, its output SSRC) and its outgoing
/// streams' last reported SRTP packet indices.
pub const SCHEMA_VERSION: u16 = 9;

/// One replicated step: applied by the backup as a whole, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// [`SCHEMA_VERSION`] of the sender.
    pub version: u16,
    /// The step's changes, in the order they are applied.
    pub items: Vec<Item>,
}

impl Entry {
    /// An entry of the current schema version.
    pub fn new(items: Vec<Item>) -> Self {
        Entry {
            version: SCHEMA_VERSION,
            items,
        }
    }
}

/// One replicated change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Item {
    /// Server-wide values (sent when one changes).
    Server(ServerRecord),
    /// One SIP dialog, transaction or the SIP layer's globals.
    Sip(StateChange),
    /// A call's record, whole (sent when any of its fields changes).
    Call(CallRecord),
    /// A call is over: the backup forgets it and frees its ports.
    CallEnded {
        /// Call id.
        call: u64,
    },
    /// A room: when it opens, then with its mixer's latest snapshot each time the mixer's
    /// state version moves.
    Room(RoomRecord),
    /// A room closed (its last participant left).
    RoomClosed {
        /// Room id.
        room: u64,
    },
    /// A WebRTC participant's record, whole ([`crate::peer`]).
    Peer(Box<PeerRecord>),
    /// A WebRTC participant left.
    PeerEnded {
        /// Participant id.
        id: u64,
    },
}

/// Server-wide replicated values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerRecord {
    /// The primary's time origin as wall-clock nanoseconds since the Unix epoch: every SIP
    /// timer and the rooms' tick grid (tick k at origin + k x 20 ms) are relative to it, so a
    /// backup that takes over re-bases its clock on it.
    pub origin_unix_ns: u64,
    /// Server seed (SIP tags and branches continue from the SIP layer's own generator).
    pub seed: u64,
    /// The control plane's generator: room seeds, SDP session ids.
    pub rng: Rng,
    /// Next media port the allocator tries.
    pub next_port: u16,
    /// Next room id.
    pub next_room_id: u64,
    /// Next WebRTC participant number (ids are [`crate::peer::PEER_ID_BASE`] + it).
    pub next_peer: u64,
    /// Planned switchover ([`crate::Core::handle_switchover`]): the primary's rooms send
    /// their ticks before this one, the backup's rooms start at it (tick k at origin +
    /// k x 20 ms), so that no tick is sent twice or skipped.
    pub handover_tick: Option<u64>,
}

/// Where a call's media stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MediaPhase {
    /// Its port pair is being bound.
    Opening,
    /// Ports bound, not in a room (offerless INVITE waiting for the answer in the ACK).
    Idle,
    /// Asked its room to add it; waiting for the room's reply.
    Joining,
    /// In its room's mixer.
    Joined,
}

/// One call, as the control core keeps it and replicates it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Call id: the SIP call handle, also the participant id in the room.
    pub call: u64,
    /// Room name (the Request-URI user).
    pub room: String,
    /// Caller's URI.
    pub from_uri: String,
    /// Our RTP port (RTCP on the next one).
    pub port: u16,
    /// Our video RTP port (RTCP on the next one), when the call has (or had, or was offered)
    /// video: allocated with the first video line accepted (or our offer), kept until the
    /// call ends, pre-bound by the backup like [`CallRecord::port`].
    pub video_port: Option<u16>,
    /// What our SDP says (session id and version continue after a takeover).
    pub local: LocalMedia,
    /// Where its media stands.
    pub media: MediaPhase,
    /// Latest negotiated media (remote addresses, codec, payload types).
    pub neg: Option<Negotiated>,
    /// A pending INVITE or re-INVITE is answered once its media are ready: the room has the
    /// participant, and a video pair it needed is bound (a re-INVITE adding video to a
    /// joined call waits for that only).
    pub answer_when_joined: bool,
    /// We offered in our 2xx and wait for the answer in the ACK.
    pub awaiting_answer: bool,
    /// Our 2xx was acknowledged.
    pub confirmed: bool,
    /// The output SSRC its room gave it.
    pub ssrc_out: Option<u32>,
    /// Where its media come from, as its room learned it ([`crate::latch`]): a backup that
    /// takes over accepts media from there only, not from whatever the mirror saw last.
    pub source: Option<Source>,
    /// Where its video comes from, as its room learned it (the video pair's own latch).
    pub video_source: Option<Source>,
    /// Muted by the operator ([`crate::admin`]): its room is told at every join and at a
    /// takeover (this record, not the mixer snapshot, is the authority).
    #[serde(default)]
    pub muted: bool,
    /// Kicked by the operator while its 200 waited for the ACK: the BYE goes with the ACK.
    #[serde(default)]
    pub kicked: bool,
}

/// One room.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoomRecord {
    /// Room id (stable across a takeover).
    pub id: u64,
    /// Room name.
    pub name: String,
    /// The mixer's configuration (its seed decides the output SSRCs): a room whose first
    /// snapshot never arrived restarts with it and gives the same streams.
    pub config: MixerConfig,
    /// The mixer's latest snapshot (`None` until the room's first participant is in).
    pub snapshot: Option<MixerSnapshot>,
    /// The video forwarder's latest snapshot (`None` until a participant with video is
    /// in): every output video stream's SSRC, how source packets map onto it, pending
    /// switches ([`video::snapshot`]).
    #[serde(default)]
    pub video: Option<video::SwitcherSnapshot>,
    /// The grid compositor's latest snapshot while the room is in grid layout (tiles,
    /// framed speaker, next picture ID): a promoted backup's compositor resumes from it.
    #[serde(default)]
    pub grid: Option<video::snapshot::GridSnapshot>,
    /// What the operator set ([`crate::admin`]): locked, its own participant limit. Gone
    /// with the room when its last participant leaves.
    #[serde(default)]
    pub settings: RoomSettings,
}
