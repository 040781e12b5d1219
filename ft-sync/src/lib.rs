//! Understudy's hot-standby state sync: the sans-IO core a primary and a backup `mcu` run
//! on their sync link to agree on roles, detect a dead peer within tens of milliseconds and
//! replicate, in order and authenticated, the application's typed state items the backup
//! needs to take over.
//!
//! For: the message set and its HMAC-SHA256 envelope, the role handshake (two primaries, a
//! version or key mismatch are refused with a clear event), the heartbeat failure detector,
//! the replication log with acknowledgements (the "output commit" primitive a driver uses to
//! hold a SIP response until the backup has its state), promotion of the backup on PeerDead.
//! Not for: sockets, timers, the VIP / netfilter rules (netfilter-shim), fencing, or the
//! schema of the replicated state (the application's item type `T`, see [`Item`]).
//!
//! # Driver loop
//!
//! Like quinn-proto and str0m, [`Node`] never reads a clock or touches a socket: every input
//! carries `now` (time since an origin the driver chose). After every input, drain
//! [`Node::poll_transmit`] (send each datagram to the peer) and [`Node::poll_event`], then
//! sleep until [`Node::poll_timeout`] and call [`Node::handle_timeout`].
//!
//! ```
//! use ft_sync::{Config, Event, LogEntry, Node, Role};
//! use serde::{Deserialize, Serialize};
//! use std::time::Duration;
//!
//! /// The application's replicated schema (the real one lives in the application crate).
//! #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
//! enum Change {
//!     Dialog { call_id: String, cseq: u32 },
//!     CallGone { call_id: String },
//! }
//!
//! let key = b"shared secret from --ft-key-file".to_vec();
//! let mut primary: Node<Change> =
//!     Node::new(Config::new(1, Role::Primary, key.clone(), 7), Duration::ZERO);
//! let mut backup: Node<Change> = Node::new(Config::new(2, Role::Backup, key, 9), Duration::ZERO);
//! let mut now = Duration::ZERO;
//! let mut state = Vec::new(); // the primary's current state, as items
//! let mut held = None; // a SIP response waiting for its state to be acknowledged
//! let mut standby = Vec::new(); // what the backup applied
//! for _ in 0..20 {
//!     // The "network": deliver everything both ways.
//!     while let Some(d) = primary.poll_transmit() { backup.handle_datagram(&d, now); }
//!     while let Some(d) = backup.poll_transmit() { primary.handle_datagram(&d, now); }
//!     while let Some(e) = primary.poll_event() {
//!         match e {
//!             // A backup connected: send it the whole state (it supersedes the entries
//!             // logged before it).
//!             Event::SnapshotNeeded => { primary.replicate_snapshot(state.clone(), now).unwrap(); }
//!             // Ready to serve: a call arrives, its dialog state is replicated first.
//!             Event::RoleChanged(Role::Primary) => {
//!                 let change = Change::Dialog { call_id: "a84b4c76e66710".into(), cseq: 1 };
//!                 state.push(change.clone());
//!                 held = Some(primary.replicate(change, now).unwrap());
//!             }
//!             _ => {}
//!         }
//!     }
//!     while let Some(e) = backup.poll_event() {
//!         match e {
//!             Event::Apply(LogEntry::Snapshot { items, .. }) => standby = items,
//!             Event::Apply(LogEntry::Item { item, .. }) => standby.push(item),
//!             _ => {}
//!         }
//!     }
//!     now += Duration::from_millis(5);
//!     primary.handle_timeout(now);
//!     backup.handle_timeout(now);
//! }
//! // The 200 OK may leave now: the backup holds the dialog.
//! assert!(primary.is_committed(held.unwrap()));
//! assert_eq!(standby, [Change::Dialog { call_id: "a84b4c76e66710".into(), cseq: 1 }]);
//! ```
//!
//! # What is replicated
//!
//! Whatever the application puts in: ft-sync is generic over the item type `T` ([`Item`]:
//! `Clone + Debug + Serialize + DeserializeOwned`) and never looks inside an item. It
//! carries the application's items to the backup in log order, each exactly once
//! ([`Event::Apply`]), inside authenticated datagrams (HMAC-SHA256 with the shared key,
//! replay window), and reports when the backup acknowledged them ([`Event::Committed`]).
//! A [`LogEntry::Snapshot`] replaces everything the backup held; the entries after it build
//! on it.
//!
//! What the items are, and why the backup needs each of them to take over without the
//! clients noticing (dialogs, rooms, stream SSRC/seq/timestamp origins, mixer decisions,
//! random choices), is the application's schema: see `control-core`'s `schema` module
//! (the items of a `control::Entry`). [`PROTOCOL_VERSION`] versions ft-sync's envelope and message set only; if the
//! schema can differ between the two nodes, `T` must carry its own version.
//!
//! # Output commit
//!
//! [`Node::replicate`] returns a [`LogIndex`]; [`Node::is_committed`] is true once the
//! backup acknowledged it (and [`Event::Committed`] fires). A driver holds a SIP message
//! that creates or changes a dialog until its state is committed. When no backup is alive
//! the node runs unprotected and everything counts as committed (nothing to wait for;
//! [`Event::PeerDead`] says so), otherwise a dead backup would block every call.
//!
//! # Roles
//!
//! A node configured [`Role::Primary`] first probes for `dead_after` (3 heartbeat
//! intervals): a primary already serving on the link makes it join as that primary's backup
//! ([`Event::RoleChanged`] with [`Role::Backup`]: the old primary restarted after a takeover
//! rejoins by itself), and the running one only reports the refused probe. Two primaries
//! probing at once both fail ([`Event::Fatal`] with [`Error::TwoPrimaries`]). A backup that loses a synced primary goes [`Role::TakingOver`]; the driver
//! claims the service address and calls [`Node::complete_takeover`]. Either node may start
//! first. A key or version mismatch is fatal for a node that is not serving yet (a primary
//! still probing, a backup that never synced), and only reported ([`Event::PeerRejected`])
//! by one that is, so a misconfigured backup never stops a running primary.
//!
//! A planned switchover (maintenance) needs no failure: the primary stops deciding, then
//! [`Node::hand_over`] tells the backup to take over as soon as it has applied the
//! primary's last entry; the backup goes [`Role::TakingOver`] as after a failure, and the
//! old primary, once it hears the backup serving, gets [`Event::Fatal`] with
//! [`Error::HandedOver`] and restarts as its backup.
//!
//! # Two paths
//!
//! On the sync link alone a dead primary and a cut link look the same, and a backup that
//! takes over while the primary still serves makes every client receive each stream twice.
//! With [`Config::client_path_beacons`], the primary also queues a beacon every heartbeat
//! interval ([`Node::poll_beacon`]: a heartbeat authenticated with a key derived from the
//! shared one, so that neither path's messages count on the other, and with its own replay
//! counter) that its driver sends over the clients' path
//! (from the service address, the way its media leave), and the backup's driver hands what
//! arrives there to [`Node::handle_beacon`]. The rule: **a backup takes over only when both
//! paths are silent for the dead interval.** Sync link silent, beacons arriving: the nodes
//! are partitioned ([`PeerState::SyncLost`], [`Event::SyncLost`]), the primary keeps serving
//! unprotected, the backup waits. The primary keeps the log entries it could not deliver
//! (up to a bound) and resends them when the same backup answers again, or sends a snapshot
//! after a long silence, so the pair converges by itself.
//!
//! # The heartbeat path
//!
//! A standing-by backup does almost nothing but wait for its primary's heartbeats, and on
//! a small machine waking up for each one is most of its cost. With
//! [`Config::heartbeat_channel`] a serving primary queues its heartbeats on
//! [`Node::poll_heartbeat`] for a path (a port) of their own (and so does the backup: its
//! primary reads them at its own heartbeat timer); the backup's driver does not
//! wait on it, but reads it whenever it wakes anyway — for its own timers (among them the
//! failure detector's deadline), for a replicated entry, for a beacon batch — and hands
//! each datagram over with its arrival time ([`Node::handle_datagram_received`]). The
//! detector's deadline is the earliest instant the primary may be dead; the heartbeats read
//! then move it as they would have on arrival, so a death is detected as fast while the
//! backup wakes about every two intervals instead of every one.
//!
//! Failure modes that remain: a primary whose clients' path is cut too (its beacons stop)
//! while it still reaches its clients another way is taken over (two senders until the
//! link heals and it yields); a primary that stalls past both detectors and resumes sends
//! until it hears the backup that took over, then yields ([`Error::TakenOver`]); a primary
//! that dies during a partition is taken over from the state synced before the partition.
//!
//! # Limits (what the driver must know)
//!
//! - One message is one datagram: a snapshot entry or an item must fit in one
//!   ([`MAX_DATAGRAM`], the UDP limit; [`Node::replicate`] refuses a larger one with
//!   [`Error::TooLarge`]). A driver keeps every item small whatever the server's size: the
//!   snapshot entry carries only a server-wide header, then every call and room follows as
//!   its own item (and afterwards only the items that changed).
//! - Without client-path beacons the failure detector cannot tell a dead primary from a cut
//!   sync link (see [Two paths](crate#two-paths)); fencing a dead primary (so it stops
//!   answering for the service address) is the driver's job either way.
//! - Backup promotion happens only if the backup holds a snapshot from a primary that had
//!   finished its startup probe; a backup that never synced never takes over.
//! - A primary that stalled past the failure detector (a long pause, a frozen VM) and then
//!   hears its former backup serving gets [`Event::Fatal`] with [`Error::TakenOver`]: the
//!   backup owns the clients now (it claimed the address), so the stalled one must stop.
//!   Two running primaries otherwise (a healed partition): the higher node id yields.
#![deny(missing_docs)]

pub mod wire;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;
use wire::{DecodeError, MAC_LEN};
pub use wire::{Envelope, Payload, RefuseReason, MAX_DATAGRAM, PROTOCOL_VERSION};

/// What ft-sync replicates: the application's own item type (typically an enum of its
/// state changes). Blanket-implemented for every type with these bounds; ft-sync encodes
/// it with postcard inside its authenticated envelope and never looks inside.
///
/// ft-sync versions its envelope and message set ([`PROTOCOL_VERSION`]), not `T`: if the
/// application's schema may differ between the two nodes (a rolling upgrade), `T` must
/// carry its own version (and the application refuse or translate what it cannot apply).
pub trait Item: Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned {}

impl<T> Item for T where T: Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned {}

/// Identifier of a node (configured; must differ between the two).
pub type NodeId = u64;
/// Position in the replication log (1-based; 0 = nothing).
pub type LogIndex = u64;

/// Role of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Role {
    /// Serves clients and replicates its state.
    Primary,
    /// Mirrors the primary's state, ready to take over.
    Backup,
    /// The primary died; the backup is claiming the service address.
    TakingOver,
}

/// Errors (API misuse and handshake refusals).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Another node is (or is starting as) primary.
    TwoPrimaries,
    /// Both nodes are configured backup: nobody serves.
    TwoBackups,
    /// The peer uses our node id.
    SameNodeId(NodeId),
    /// The peer speaks another protocol version.
    VersionMismatch {
        /// Ours.
        ours: u16,
        /// Theirs.
        theirs: u16,
    },
    /// The peer's messages do not authenticate with our key (fingerprints differ).
    KeyMismatch {
        /// Fingerprint of our key.
        ours: [u8; 8],
        /// Fingerprint the peer announced.
        theirs: [u8; 8],
    },
    /// The operation needs the primary role (and a finished startup probe).
    NotPrimary,
    /// The configuration is unusable.
    InvalidConfig(&'static str),
    /// This primary was declared dead (it stalled past the failure detector) and its
    /// backup took over; it must stop serving.
    TakenOver,
    /// This primary handed over to its backup ([`Node::hand_over`]) and the backup now
    /// serves; it must stop serving (and may restart as the backup).
    HandedOver,
    /// No synced backup is alive to hand over to ([`Node::hand_over`]).
    NoStandby,
    /// A handover is under way: this primary decides nothing more.
    HandingOver,
    /// An item did not serialize (its `Serialize` impl failed); nothing was replicated.
    Encode(postcard::Error),
    /// An item (or a snapshot) does not fit in one datagram; nothing was replicated.
    TooLarge {
        /// Encoded datagram length.
        len: usize,
        /// The limit ([`MAX_DATAGRAM`]).
        max: usize,
    },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::TwoPrimaries => write!(f, "another primary is running on the sync link"),
            Error::TwoBackups => write!(f, "both nodes are configured as backup"),
            Error::SameNodeId(n) => write!(f, "the peer uses our node id {n}"),
            Error::VersionMismatch { ours, theirs } => {
                write!(f, "protocol version mismatch: ours {ours}, peer {theirs}")
            }
            Error::KeyMismatch { ours, theirs } => write!(
                f,
                "shared key mismatch: our fingerprint {}, peer {}",
                hex(ours),
                hex(theirs)
            ),
            Error::NotPrimary => write!(f, "not the primary"),
            Error::InvalidConfig(s) => write!(f, "invalid configuration: {s}"),
            Error::TakenOver => write!(
                f,
                "the backup took over while this primary was unresponsive; stop serving (restart as backup)"
            ),
            Error::HandedOver => write!(
                f,
                "this primary handed over to its backup (planned switchover); stop serving (restart as backup)"
            ),
            Error::NoStandby => write!(
                f,
                "no synced backup is alive: nothing to hand over to"
            ),
            Error::HandingOver => write!(f, "a handover to the backup is under way"),
            Error::Encode(e) => write!(f, "replicated item does not serialize: {e}"),
            Error::TooLarge { len, max } => write!(
                f,
                "replicated item too large for one datagram: {len} bytes (max {max})"
            ),
        }
    }
}
impl std::error::Error for Error {}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Configuration of one node.
#[derive(Clone, Debug)]
pub struct Config {
    /// Our node id.
    pub node_id: NodeId,
    /// Configured role: [`Role::Primary`] or [`Role::Backup`].
    pub role: Role,
    /// Shared secret (the whole content of `--ft-key-file`).
    pub key: Vec<u8>,
    /// Differs on every process start (e.g. random or boot time from the driver).
    pub incarnation: u64,
    /// Heartbeat period. Default 10 ms.
    pub heartbeat_interval: Duration,
    /// The peer is dead after this many intervals without a message. Default 3.
    pub missed_heartbeats: u32,
    /// Unacknowledged log entries are resent after this long. Default 20 ms.
    pub retransmit_after: Duration,
    /// Second path for the failure detector (see [the crate docs](crate#two-paths)): a
    /// primary queues a beacon every heartbeat interval ([`Node::poll_beacon`]) that its
    /// driver sends over the clients' path, and a backup declares the primary dead only when
    /// both its sync-link messages and its beacons ([`Node::handle_beacon`]) stopped. Default
    /// off (one path, as before).
    pub client_path_beacons: bool,
    /// A primary declares its backup dead after this many times the backup's dead interval
    /// (`missed_heartbeats` of its heartbeats, see [`Config::backup_heartbeats_every`];
    /// default 1). Declaring it late only delays the messages held for it (output commit) when it
    /// really died; declaring it early on a lossy link drops the protection for nothing and
    /// makes the backup catch up afterwards. A backup's detector is never stretched.
    pub primary_patience: u32,
    /// A backup stretches its dead interval by the longest extra silence of the primary it
    /// saw in the last 10 s (the longest interval between two signs of life, on either
    /// path, minus one heartbeat interval), up to this much more (default zero: never
    /// stretched). A host whose network path stalls now and then (a loaded machine deferring
    /// packet processing) then takes longer to declare its primary dead instead of taking
    /// over from a live one; a quiet host keeps the configured interval.
    pub max_stretch: Duration,
    /// A synced backup heartbeats every this many heartbeat intervals (default 1). Its
    /// heartbeats only tell the primary that it is protected (a primary waits
    /// `missed_heartbeats` of them times [`Config::primary_patience`] before it declares its
    /// backup dead), so a backup that sends fewer costs less without slowing any failure
    /// detection of the primary. Hellos (startup, rejoin) keep the heartbeat interval. Both
    /// nodes must agree on it: a primary expecting faster heartbeats than its backup sends
    /// would declare it dead.
    pub backup_heartbeats_every: u32,
    /// Heartbeats (not Hellos, entries, acknowledgements or anything else) are queued on
    /// [`Node::poll_heartbeat`] instead of [`Node::poll_transmit`] (default off), for a
    /// driver that sends them on a path of their own: a socket the peer does not wait on,
    /// read whenever it wakes anyway (its own timers, the failure detector's deadline, any
    /// other datagram) and handed over with each datagram's arrival time
    /// ([`Node::handle_datagram_received`]). A standing-by backup is then not woken by every
    /// heartbeat of its primary, and its failure detection is as fast: the detector's
    /// deadline wakes it, and the heartbeats it then reads move the deadline as they would
    /// have on arrival. Likewise a primary reads its backup's at its own heartbeat timer
    /// instead of waking for each. Both nodes' drivers must agree on the path.
    pub heartbeat_channel: bool,
}

impl Config {
    /// Defaults for the timings (10 ms heartbeats, dead after 3 missed).
    pub fn new(node_id: NodeId, role: Role, key: Vec<u8>, incarnation: u64) -> Self {
        Self {
            node_id,
            role,
            key,
            incarnation,
            heartbeat_interval: Duration::from_millis(10),
            missed_heartbeats: 3,
            retransmit_after: Duration::from_millis(20),
            client_path_beacons: false,
            primary_patience: 1,
            max_stretch: Duration::ZERO,
            backup_heartbeats_every: 1,
            heartbeat_channel: false,
        }
    }

    fn dead_after(&self) -> Duration {
        self.heartbeat_interval * self.missed_heartbeats
    }
}

/// Liveness of the peer as the failure detector sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// Never heard an authenticated message.
    Unknown,
    /// Heard within the dead interval.
    Alive,
    /// Silent for `missed_heartbeats` intervals.
    Dead,
    /// Backup with client-path beacons: no sync-link message for `missed_heartbeats`
    /// intervals, but the primary's beacons still arrive over the clients' path. The primary
    /// serves (it is not taken over) and runs unprotected; the backup's state is stale until
    /// the link heals and the primary catches it up.
    SyncLost,
}

/// An ordered change the backup applies, carrying the application's items `T`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogEntry<T> {
    /// Replace the whole state.
    Snapshot {
        /// Log index.
        index: LogIndex,
        /// Items of the state.
        items: Vec<T>,
    },
    /// Apply one change.
    Item {
        /// Log index.
        index: LogIndex,
        /// Change.
        item: T,
    },
}

impl<T: Clone> LogEntry<T> {
    /// Its log index.
    pub fn index(&self) -> LogIndex {
        match self {
            LogEntry::Snapshot { index, .. } | LogEntry::Item { index, .. } => *index,
        }
    }

    fn payload(&self) -> Payload<T> {
        match self.clone() {
            LogEntry::Snapshot { index, items } => Payload::Snapshot { index, items },
            LogEntry::Item { index, item } => Payload::Entry { index, item },
        }
    }
}

/// What the driver must react to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<T> {
    /// The peer answers (first authenticated message, or again after being dead).
    PeerAlive {
        /// Its node id.
        node: NodeId,
        /// Its role.
        role: Role,
    },
    /// No message from the peer for `missed_heartbeats` intervals (on a backup with
    /// client-path beacons: none on either path).
    PeerDead,
    /// Backup: the sync link is silent but the primary's beacons arrive over the clients'
    /// path: a partition between the nodes, not a dead primary. No takeover; the primary
    /// catches this node up when the link heals ([`Event::PeerAlive`] again).
    SyncLost,
    /// Our role changed (startup probe done: Primary; takeover started / completed).
    RoleChanged(Role),
    /// This node must not serve: exit with this error.
    Fatal(Error),
    /// The peer is misconfigured or refused; we keep our role.
    PeerRejected(Error),
    /// Primary: a backup (re)connected; call [`Node::replicate_snapshot`] with the state.
    SnapshotNeeded,
    /// Primary: every log index up to this one may be released (acknowledged, or no
    /// backup alive).
    Committed(LogIndex),
    /// Backup: apply this entry (delivered in log order, each once).
    Apply(LogEntry<T>),
    /// Primary: the handover ([`Node::hand_over`]) did not complete (the backup died, or
    /// was not heard serving within [`HANDOVER_TIMEOUT`] heartbeat intervals): this node
    /// serves on, as before the handover.
    HandoverAborted,
}

/// Counters of the receive path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams accepted.
    pub accepted: u64,
    /// Too short, bad magic, or undecodable body.
    pub malformed: u64,
    /// MAC did not verify.
    pub unauthenticated: u64,
    /// Authenticated but another protocol version.
    pub wrong_version: u64,
    /// Sequence number already seen or too old (replay, duplicate, reorder beyond window).
    pub replayed: u64,
    /// From ourselves, from a second peer, or from an incarnation not announced by a Hello.
    pub unexpected: u64,
    /// Client-path beacons accepted ([`Node::handle_beacon`]).
    pub beacons: u64,
    /// Client-path datagrams refused (undecodable, unauthenticated, not from the current
    /// primary, replayed); not counted in [`Stats::dropped`].
    pub beacons_refused: u64,
}

impl Stats {
    /// Datagrams dropped for any reason.
    pub fn dropped(&self) -> u64 {
        self.malformed + self.unauthenticated + self.wrong_version + self.replayed + self.unexpected
    }
}

/// The peer as we know it.
struct Peer {
    node: NodeId,
    incarnation: u64,
    role: Role,
    starting: bool,
    /// Highest sequence number accepted and a bitmap of the 64 below it.
    seq_max: u64,
    seq_window: u64,
    /// It has seen our Hello.
    saw_us: bool,
}

/// Replay window of 64 messages: accept each sequence number once.
fn window_accept(max: &mut u64, window: &mut u64, seq: u64) -> bool {
    if seq > *max {
        let shift = seq - *max;
        *window = if shift >= 64 { 0 } else { *window << shift };
        *window |= 1;
        *max = seq;
        true
    } else {
        let back = *max - seq;
        if back >= 64 || *window & (1 << back) != 0 {
            return false;
        }
        *window |= 1 << back;
        true
    }
}

/// Most unacknowledged entries resent per retransmission timeout (well inside the 64-message
/// replay window).
const RETRANSMIT_BURST: usize = 16;

/// Most out-of-order entries a backup buffers.
const MAX_BUFFERED: usize = 4096;

/// A partition is reported ([`Event::SyncLost`]) once the sync link has been silent for this
/// many dead intervals with beacons arriving (shorter silences on a lossy link are not news).
const SYNC_LOST_REPORT: u32 = 3;

/// A handover not completed within this many heartbeat intervals is aborted
/// ([`Event::HandoverAborted`]). The backup is heard serving within one or two intervals.
pub const HANDOVER_TIMEOUT: u32 = 25;

/// Beacons kept for a driver that does not drain them.
const MAX_QUEUED_BEACONS: usize = 4;

/// Entries a primary keeps for a backup that went silent (a partition, a lossy link), to
/// resend when the same backup incarnation answers again. Beyond this, it gets a snapshot.
const MAX_RETAINED: usize = 4096;

/// A backup that answers again with more unacknowledged entries than this gets a snapshot
/// instead of the retransmissions (16 entries per retransmission interval would take longer).
const MAX_RESUMED: usize = 256;

/// One node of the pair. Method families: construction ([`Node::new`]), inputs
/// (`handle_datagram`, `handle_timeout`), outputs (`poll_transmit`, `poll_event`,
/// `poll_timeout`), primary operations (`replicate`, `replicate_snapshot`, `is_committed`, `hand_over`),
/// backup operations (`complete_takeover`), getters (`role`, `peer_state`, `stats`,
/// `committed`, `applied`).
pub struct Node<T> {
    config: Config,
    fingerprint: [u8; 8],
    /// The beacons' own MAC key (derived from the shared key): a beacon seen on the clients'
    /// path never authenticates as a sync-link message, nor the other way round.
    beacon_key: Vec<u8>,
    role: Role,
    /// Primary: end of the startup probe (None once done).
    probe_until: Option<Duration>,
    /// Fatal error: the node stays silent.
    failed: bool,
    /// A handshake with a peer completed at least once.
    established_once: bool,
    /// The primary (node, incarnation) this node took over from.
    took_over_from: Option<(NodeId, u64)>,
    peer: Option<Peer>,
    peer_state: PeerState,
    last_heard: Option<Duration>,
    /// Backup: arrival of the primary's last client-path beacon, and its sequence number.
    last_beacon: Option<Duration>,
    beacon_seq: u64,
    /// The peer's silences (between two signs of life on either path), recent maxima.
    silences: Silences,
    /// Backup: [`Event::SyncLost`] reported for the current episode.
    sync_lost_reported: bool,
    /// Primary: beacons waiting for the driver (bounded).
    beacons: VecDeque<Vec<u8>>,
    /// With [`Config::heartbeat_channel`]: heartbeats waiting for the driver.
    heartbeats: VecDeque<Vec<u8>>,
    next_heartbeat: Duration,
    seq: u64,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<Event<T>>,
    stats: Stats,
    /// Reported mismatches (once each until a good message arrives).
    reported: Vec<Error>,
    // Primary side of the log.
    next_index: LogIndex,
    acked: LogIndex,
    unacked: BTreeMap<LogIndex, LogEntry<T>>,
    /// The current backup incarnation has been sent a snapshot.
    backup_synced: bool,
    last_send: Duration,
    /// Primary handing over: its last log index and when the handover started.
    handover: Option<(LogIndex, Duration)>,
    // Backup side of the log.
    applied: LogIndex,
    has_snapshot: bool,
    buffered: BTreeMap<LogIndex, LogEntry<T>>,
}

impl<T: Item> Node<T> {
    /// A node starting at `now`. A configured primary probes the link first (see
    /// [the crate docs](crate#roles)); its first Hello is queued immediately.
    pub fn new(config: Config, now: Duration) -> Node<T> {
        let fingerprint = wire::key_fingerprint(&config.key);
        let mut beacon_key = config.key.clone();
        beacon_key.extend_from_slice(b"\0understudy client-path beacon");
        let mut n = Node {
            fingerprint,
            beacon_key,
            role: if config.role == Role::Primary {
                Role::Primary
            } else {
                Role::Backup
            },
            probe_until: (config.role == Role::Primary).then(|| now + config.dead_after()),
            failed: false,
            established_once: false,
            took_over_from: None,
            peer: None,
            peer_state: PeerState::Unknown,
            last_heard: None,
            last_beacon: None,
            beacon_seq: 0,
            silences: Silences::default(),
            sync_lost_reported: false,
            beacons: VecDeque::new(),
            heartbeats: VecDeque::new(),
            next_heartbeat: now,
            seq: 0,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            reported: Vec::new(),
            next_index: 1,
            acked: 0,
            unacked: BTreeMap::new(),
            backup_synced: false,
            last_send: now,
            handover: None,
            applied: 0,
            has_snapshot: false,
            buffered: BTreeMap::new(),
            config,
        };
        if n.config.key.is_empty() {
            n.fail(Error::InvalidConfig("empty key"));
        }
        n.handle_timeout(now);
        n
    }

    // ---- getters ----

    /// Current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// True while a configured primary is still probing for another primary.
    pub fn is_starting(&self) -> bool {
        self.probe_until.is_some()
    }

    /// Liveness of the peer.
    pub fn peer_state(&self) -> PeerState {
        self.peer_state
    }

    /// Receive-path counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Primary: highest log index the backup acknowledged.
    pub fn committed(&self) -> LogIndex {
        self.acked
    }

    /// Backup: highest log index applied (in order).
    pub fn applied(&self) -> LogIndex {
        self.applied
    }

    /// Primary: a handover ([`Node::hand_over`]) is under way.
    pub fn is_handing_over(&self) -> bool {
        self.handover.is_some()
    }

    /// Primary: may the message whose state is log entry `index` leave? True once the
    /// backup acknowledged it, or when no synced backup is alive (unprotected).
    pub fn is_committed(&self, index: LogIndex) -> bool {
        index <= self.acked || !self.protecting()
    }

    fn protecting(&self) -> bool {
        self.peer_state == PeerState::Alive
            && self.peer.as_ref().is_some_and(|p| p.role == Role::Backup)
    }

    // ---- outputs ----

    /// Next datagram to send to the peer.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    /// With [`Config::heartbeat_channel`]: next heartbeat to send to the peer on the
    /// heartbeat path (empty otherwise: every datagram is on [`Node::poll_transmit`]).
    pub fn poll_heartbeat(&mut self) -> Option<Vec<u8>> {
        self.heartbeats.pop_front()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<Event<T>> {
        self.events.pop_front()
    }

    /// When [`Node::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Duration> {
        if self.failed {
            return None;
        }
        let mut t = self.next_heartbeat;
        if let Some(p) = self.probe_until {
            t = t.min(p);
        }
        if let Some(d) = self.dead_deadline() {
            t = t.min(d);
        }
        if let Some((_, started)) = self.handover {
            t = t.min(started + self.config.heartbeat_interval * HANDOVER_TIMEOUT);
        }
        if !self.unacked.is_empty() && self.peer_state == PeerState::Alive {
            t = t.min(self.last_send + self.config.retransmit_after);
        }
        Some(t)
    }

    // ---- inputs ----

    /// Timers: heartbeats, failure detection, startup probe, retransmission.
    pub fn handle_timeout(&mut self, now: Duration) {
        if self.failed {
            return;
        }
        if let Some(p) = self.probe_until {
            if now >= p {
                self.probe_until = None;
                self.events.push_back(Event::RoleChanged(Role::Primary));
                if self.protecting() && !self.backup_synced {
                    self.events.push_back(Event::SnapshotNeeded);
                }
            }
        }
        if self.dead_deadline().is_some_and(|d| now >= d) {
            if self.peer_state == PeerState::Alive && self.beacon_alive(now) {
                // The sync link went silent but the primary's beacons still arrive: hold on.
                // The episode is reported once a beacon proves it serves past this point.
                self.peer_state = PeerState::SyncLost;
                self.sync_lost_reported = false;
            } else {
                self.on_peer_dead();
            }
        }
        if let Some((_, started)) = self.handover {
            if now >= started + self.config.heartbeat_interval * HANDOVER_TIMEOUT {
                self.abort_handover();
            }
        }
        if now >= self.next_heartbeat {
            self.send_liveness();
            self.queue_beacon();
            if let Some((index, _)) = self.handover {
                self.send(Payload::Handover { index });
            }
            self.next_heartbeat = now + self.own_heartbeat_interval();
        }
        if self.peer_state == PeerState::Alive
            && self.backup_synced
            && !self.unacked.is_empty()
            && now >= self.last_send + self.config.retransmit_after
        {
            // The oldest few only: a burst larger than the receiver's replay window would be
            // reordered out of it, and the backup acknowledges cumulatively anyway.
            let entries: Vec<Payload<T>> = self
                .unacked
                .values()
                .take(RETRANSMIT_BURST)
                .map(LogEntry::payload)
                .collect();
            for p in entries {
                self.send(p);
            }
            self.last_send = now;
        }
    }

    /// When the failure detector must look at the peer again: the end of the sync link's
    /// dead interval while the peer is alive, then (sync link silent, beacons arriving) the
    /// end of the beacons' dead interval.
    fn dead_deadline(&self) -> Option<Duration> {
        let h = self.last_heard?;
        let dead = self.config.dead_after();
        match self.peer_state {
            PeerState::Alive if self.role == Role::Primary => Some(
                h + dead
                    * self.config.primary_patience.max(1)
                    * self.config.backup_heartbeats_every.max(1),
            ),
            PeerState::Alive => Some(h + self.backup_dead_after()),
            PeerState::SyncLost => {
                Some(h.max(self.last_beacon.unwrap_or(h)) + self.backup_dead_after())
            }
            PeerState::Unknown | PeerState::Dead => None,
        }
    }

    /// A backup's dead interval: the configured one, stretched by the primary's longest
    /// recent extra silence (see [`Config::max_stretch`]).
    fn backup_dead_after(&self) -> Duration {
        self.config.dead_after() + self.stretch()
    }

    fn stretch(&self) -> Duration {
        let at = self.last_heard.max(self.last_beacon).unwrap_or_default();
        self.silences
            .recent_max(at)
            .saturating_sub(self.config.heartbeat_interval)
            .min(self.config.max_stretch)
    }

    /// The longest interval without a sign of life from the peer (sync link or beacon) in
    /// about the last 10 s, as of its last sign of life.
    pub fn recent_max_silence(&self) -> Duration {
        let at = self.last_heard.max(self.last_beacon).unwrap_or_default();
        self.silences.recent_max(at)
    }

    /// How much longer than configured a backup now waits before declaring its primary dead
    /// (see [`Config::max_stretch`]).
    pub fn dead_after_stretch(&self) -> Duration {
        if self.role == Role::Primary {
            Duration::ZERO
        } else {
            self.stretch()
        }
    }

    /// Backup: the primary's beacons arrived within the dead interval.
    fn beacon_alive(&self, now: Duration) -> bool {
        self.role == Role::Backup
            && self
                .last_beacon
                .is_some_and(|b| now < b + self.backup_dead_after())
    }

    /// Primary with client-path beacons: queue this interval's beacon (a heartbeat
    /// authenticated with the beacon key, on its own path; the backup keeps a separate replay
    /// counter for it).
    fn queue_beacon(&mut self) {
        if !self.config.client_path_beacons
            || self.role != Role::Primary
            || self.is_starting()
            || self.failed
        {
            return;
        }
        let payload = Payload::Heartbeat {
            log_index: self.next_index - 1,
        };
        if let Ok(d) = wire::encode(&self.beacon_key, &self.envelope(payload, self.seq + 1)) {
            self.seq += 1;
            if self.beacons.len() >= MAX_QUEUED_BEACONS {
                self.beacons.pop_front();
            }
            self.beacons.push_back(d);
        }
    }

    /// Primary: next beacon to send over the clients' path (from the service address to the
    /// backup; see [`Config::client_path_beacons`]). At most a few are kept when the driver
    /// does not drain them.
    pub fn poll_beacon(&mut self) -> Option<Vec<u8>> {
        self.beacons.pop_front()
    }

    /// Backup: a datagram that arrived over the clients' path (the primary's beacon).
    /// Only an authenticated heartbeat from the current primary incarnation, newer than the
    /// last one, counts; anything else is refused and counted. It never makes an unknown or
    /// dead peer alive: only the sync link does. `now` is when it arrived, which may be
    /// earlier than the time of inputs handled before it (a driver reading them in batches).
    pub fn handle_beacon(&mut self, datagram: &[u8], now: Duration) {
        let ok = match wire::decode::<T>(&self.beacon_key, datagram) {
            Ok(env) => {
                self.role == Role::Backup
                    && env.role == Role::Primary
                    && matches!(env.payload, Payload::Heartbeat { .. })
                    && env.seq > self.beacon_seq
                    && self
                        .peer
                        .as_ref()
                        .is_some_and(|p| p.node == env.node && p.incarnation == env.incarnation)
                    && {
                        self.beacon_seq = env.seq;
                        true
                    }
            }
            Err(_) => false,
        };
        if !ok || self.failed {
            self.stats.beacons_refused += 1;
            return;
        }
        self.stats.beacons += 1;
        // A driver reading beacons in batches passes each one's arrival time, not the read's:
        // they may come out of order with the time of other inputs.
        self.silences
            .observe(self.last_heard.max(self.last_beacon), now);
        self.last_beacon = Some(self.last_beacon.map_or(now, |b| b.max(now)));
        if self.peer_state == PeerState::SyncLost
            && !self.sync_lost_reported
            && self
                .last_heard
                .is_some_and(|h| now >= h + self.config.dead_after() * SYNC_LOST_REPORT)
        {
            self.sync_lost_reported = true;
            self.events.push_back(Event::SyncLost);
        }
    }

    /// A datagram arrived from the sync link. Anything invalid is dropped and counted.
    pub fn handle_datagram(&mut self, datagram: &[u8], now: Duration) {
        self.handle_datagram_received(datagram, now, now);
    }

    /// [`Node::handle_datagram`] for a datagram read at `now` that arrived at `received`
    /// (earlier: a driver reading the heartbeat path in batches, see
    /// [`Config::heartbeat_channel`]). The failure detector counts it from `received`; an
    /// answer it calls for goes out now.
    pub fn handle_datagram_received(&mut self, datagram: &[u8], received: Duration, now: Duration) {
        let received = received.min(now);
        let env = match wire::decode::<T>(&self.config.key, datagram) {
            Ok(e) => e,
            Err(DecodeError::Malformed) => {
                self.stats.malformed += 1;
                return;
            }
            Err(DecodeError::Unauthenticated(fp)) => {
                self.stats.unauthenticated += 1;
                if let Some(theirs) = fp.filter(|f| *f != self.fingerprint) {
                    self.mismatch(Error::KeyMismatch {
                        ours: self.fingerprint,
                        theirs,
                    });
                }
                return;
            }
            Err(DecodeError::WrongVersion(theirs)) => {
                self.stats.wrong_version += 1;
                self.mismatch(Error::VersionMismatch {
                    ours: PROTOCOL_VERSION,
                    theirs,
                });
                return;
            }
        };
        if self.failed {
            self.stats.unexpected += 1;
            return;
        }
        if env.node == self.config.node_id {
            self.stats.unexpected += 1;
            if matches!(env.payload, Payload::Hello { .. })
                && env.incarnation != self.config.incarnation
            {
                self.mismatch(Error::SameNodeId(env.node));
            }
            return;
        }
        if let Payload::Hello { starting, .. } = &env.payload {
            let known = self
                .peer
                .as_ref()
                .is_some_and(|p| p.node == env.node && p.incarnation == env.incarnation);
            if !known {
                if self.peer.as_ref().is_some_and(|p| p.node != env.node)
                    && self.peer_state == PeerState::Alive
                {
                    // A third node while ours is alive.
                    self.stats.unexpected += 1;
                    return;
                }
                self.new_peer(&env, *starting);
            }
        }
        let Some(peer) = self.peer.as_mut() else {
            self.stats.unexpected += 1;
            return;
        };
        if peer.node != env.node || peer.incarnation != env.incarnation {
            self.stats.unexpected += 1;
            return;
        }
        if !window_accept(&mut peer.seq_max, &mut peer.seq_window, env.seq) {
            self.stats.replayed += 1;
            return;
        }
        self.stats.accepted += 1;
        let prev_role = peer.role;
        peer.role = env.role;
        let mut reply_hello = false;
        match &env.payload {
            Payload::Hello {
                starting,
                peer_seen,
                ..
            } => {
                peer.starting = *starting;
                reply_hello = !peer.saw_us || !*peer_seen;
                peer.saw_us |= *peer_seen;
            }
            // A starting primary sends only Hellos: anything else means it serves.
            _ => {
                peer.saw_us = true;
                peer.starting = false;
            }
        }
        // Role checks on every authenticated message (roles change on takeover).
        if let Some(err) = self.role_conflict(&env, prev_role) {
            match err {
                Conflict::Fatal(e) => {
                    self.fail(e);
                    return;
                }
                Conflict::Demote => {
                    self.probe_until = None;
                    self.role = Role::Backup;
                    self.events.push_back(Event::RoleChanged(Role::Backup));
                }
                Conflict::Reject(e) => {
                    if !self.reported.contains(&e) {
                        self.reported.push(e.clone());
                        self.events.push_back(Event::PeerRejected(e));
                    }
                    self.send(Payload::Refuse {
                        reason: RefuseReason::TwoPrimaries,
                    });
                    return;
                }
            }
        }
        if self.peer_state == PeerState::Alive || self.peer_state == PeerState::SyncLost {
            self.silences
                .observe(self.last_heard.max(self.last_beacon), received);
        }
        // Read in batches, a datagram may have arrived before one handled earlier.
        self.last_heard = Some(self.last_heard.map_or(received, |h| h.max(received)));
        self.reported.clear();
        if self.peer_state != PeerState::Alive {
            self.peer_state = PeerState::Alive;
            self.sync_lost_reported = false;
            self.established_once = true;
            self.events.push_back(Event::PeerAlive {
                node: env.node,
                role: env.role,
            });
            if self.role == Role::Primary && self.backup_synced && self.unacked.len() > MAX_RESUMED
            {
                // Back after a long silence: a snapshot is quicker than the backlog.
                self.unacked.clear();
                self.backup_synced = false;
            }
            if self.role == Role::Primary
                && !self.is_starting()
                && env.role == Role::Backup
                && !self.backup_synced
            {
                self.events.push_back(Event::SnapshotNeeded);
            }
        }
        if reply_hello {
            self.send_hello();
        } else if self.role == Role::Backup
            && env.role == Role::Primary
            && matches!(
                env.payload,
                Payload::Hello {
                    starting: false,
                    ..
                }
            )
            && self.peer_state == PeerState::Alive
        {
            // A serving primary sends Hellos only while it does not hear this backup (it
            // declared it dead, or the link just healed in one direction): answer at once,
            // so that it is protected again within a round trip, not at the backup's next
            // heartbeat (every `backup_heartbeats_every` intervals).
            self.send_liveness();
            self.next_heartbeat = now + self.own_heartbeat_interval();
        }
        // With the heartbeat path the backup reads its primary's heartbeats only when it wakes
        // anyway, so it answers when its own is due within half of its own period: its
        // heartbeats ride on those wake-ups instead of a timer of their own.
        let answer_within = if self.config.heartbeat_channel {
            self.own_heartbeat_interval() / 2
        } else {
            self.config.heartbeat_interval / 2
        };
        if matches!(env.payload, Payload::Heartbeat { .. })
            && self.role == Role::Backup
            && self.peer_state == PeerState::Alive
            && now + answer_within >= self.next_heartbeat
        {
            // A backup answers the primary's heartbeat with its own when that is due within
            // half an interval anyway: its heartbeats lock onto the primary's, one wake-up
            // per interval instead of two. Its own timer is the fallback, a quarter interval
            // after the primary's next one is expected (a backup's heartbeats only tell the
            // primary it is protected; its detector waits `primary_patience` intervals).
            self.send_liveness();
            self.next_heartbeat =
                now + self.own_heartbeat_interval() + self.config.heartbeat_interval / 4;
        }
        match env.payload {
            Payload::Hello { .. } | Payload::Heartbeat { .. } => {}
            // The serving primary refused this node's probe before it demoted itself.
            Payload::Refuse {
                reason: RefuseReason::TwoPrimaries,
            } if self.role == Role::Backup && self.config.role == Role::Primary => {}
            Payload::Refuse { reason } => {
                let e = match reason {
                    RefuseReason::TwoPrimaries => Error::TwoPrimaries,
                    RefuseReason::TwoBackups => Error::TwoBackups,
                    RefuseReason::SameNodeId => Error::SameNodeId(self.config.node_id),
                };
                if self.not_serving_yet() {
                    self.fail(e);
                } else {
                    self.events.push_back(Event::PeerRejected(e));
                }
            }
            Payload::Ack { index } => self.on_ack(index),
            Payload::Handover { index } => self.on_handover(index),
            Payload::Snapshot { index, items } => {
                self.on_entry(LogEntry::Snapshot { index, items });
            }
            Payload::Entry { index, item } => self.on_entry(LogEntry::Item { index, item }),
        }
    }

    // ---- primary operations ----

    /// Append `item` to the replication log; returns its index. Hold the message whose
    /// state it is until [`Node::is_committed`] (or [`Event::Committed`]).
    ///
    /// Fails with [`Error::NotPrimary`] unless serving as primary, and with
    /// [`Error::Encode`] / [`Error::TooLarge`] when the item does not make one datagram
    /// (checked whether or not a backup is connected; nothing is logged then).
    pub fn replicate(&mut self, item: T, now: Duration) -> Result<LogIndex, Error> {
        self.check_primary()?;
        let entry = LogEntry::Item {
            index: self.next_index,
            item,
        };
        let datagram = self.encode_entry(&entry)?;
        self.next_index += 1;
        self.push_entry(entry, datagram, now);
        Ok(self.next_index - 1)
    }

    /// Replace the backup's state with `items` (after [`Event::SnapshotNeeded`], or to
    /// compact the log). Earlier unacknowledged entries are superseded. The snapshot is
    /// one datagram: keep it small and follow it with [`Node::replicate`] for the rest.
    /// Fails like [`Node::replicate`].
    pub fn replicate_snapshot(&mut self, items: Vec<T>, now: Duration) -> Result<LogIndex, Error> {
        self.check_primary()?;
        let entry = LogEntry::Snapshot {
            index: self.next_index,
            items,
        };
        let datagram = self.encode_entry(&entry)?;
        self.next_index += 1;
        self.unacked.clear();
        self.backup_synced = true;
        self.push_entry(entry, datagram, now);
        Ok(self.next_index - 1)
    }

    fn check_primary(&self) -> Result<(), Error> {
        if self.role != Role::Primary || self.is_starting() || self.failed {
            return Err(Error::NotPrimary);
        }
        if self.handover.is_some() {
            return Err(Error::HandingOver);
        }
        Ok(())
    }

    /// Planned switchover: hand the service to the backup now, without waiting for a
    /// failure. The application stops deciding anything first (its last state replicated):
    /// this node refuses to replicate from now on, and the backup takes over
    /// ([`Event::RoleChanged`] with [`Role::TakingOver`] there, exactly as after a failure)
    /// once it has applied everything up to the returned index. When the backup is heard
    /// serving, this node gets [`Event::Fatal`] with [`Error::HandedOver`]: it must stop
    /// serving, and may restart as the backup (a configured primary that finds a serving
    /// primary joins it, see [the crate docs](crate#roles)). If the backup dies, or is not
    /// heard serving within [`HANDOVER_TIMEOUT`] heartbeat intervals, the handover is
    /// aborted ([`Event::HandoverAborted`]) and this node serves on.
    ///
    /// Entries not acknowledged yet are resent as usual; the backup waits for them.
    ///
    /// Fails with [`Error::NotPrimary`] unless serving as primary, and with
    /// [`Error::NoStandby`] unless a synced backup is alive.
    pub fn hand_over(&mut self, now: Duration) -> Result<LogIndex, Error> {
        self.check_primary()?;
        if !self.protecting() || !self.backup_synced {
            return Err(Error::NoStandby);
        }
        let index = self.next_index - 1;
        self.handover = Some((index, now));
        self.send(Payload::Handover { index });
        Ok(index)
    }

    fn abort_handover(&mut self) {
        if self.handover.take().is_some() {
            self.events.push_back(Event::HandoverAborted);
        }
    }

    /// Backup: the primary hands over. Taken over once everything up to `index` is applied
    /// (the primary repeats the message until it hears this node serving).
    fn on_handover(&mut self, index: LogIndex) {
        let from_serving_primary = self
            .peer
            .as_ref()
            .is_some_and(|p| p.role == Role::Primary && !p.starting);
        if self.role != Role::Backup
            || !from_serving_primary
            || !self.has_snapshot
            || self.applied < index
        {
            return;
        }
        self.took_over_from = self.peer.as_ref().map(|p| (p.node, p.incarnation));
        self.role = Role::TakingOver;
        self.events.push_back(Event::RoleChanged(Role::TakingOver));
    }

    /// The datagram of `entry` as the next message (not consumed yet), checked to fit.
    fn encode_entry(&self, entry: &LogEntry<T>) -> Result<Vec<u8>, Error> {
        let d = wire::encode(
            &self.config.key,
            &self.envelope(entry.payload(), self.seq + 1),
        )
        .map_err(Error::Encode)?;
        if d.len() > MAX_DATAGRAM {
            return Err(Error::TooLarge {
                len: d.len(),
                max: MAX_DATAGRAM,
            });
        }
        Ok(d)
    }

    fn push_entry(&mut self, entry: LogEntry<T>, datagram: Vec<u8>, now: Duration) {
        let index = entry.index();
        if self.protecting() && self.backup_synced {
            // `datagram` was encoded with the next sequence number: it is that message.
            self.seq += 1;
            self.push_transmit(datagram);
            self.last_send = now;
            self.unacked.insert(index, entry);
        } else if self.protecting() {
            // Waiting for the snapshot: the snapshot will carry this state.
            self.unacked.insert(index, entry);
        } else {
            // Unprotected: nothing to wait for. A synced backup that went silent may come
            // back (a partition): keep the entry to resend then, within a bound.
            if self.backup_synced {
                if self.unacked.len() < MAX_RETAINED {
                    self.unacked.insert(index, entry);
                } else {
                    self.unacked.clear();
                    self.backup_synced = false;
                }
            }
            self.events.push_back(Event::Committed(index));
        }
    }

    fn on_ack(&mut self, index: LogIndex) {
        if self.role != Role::Primary || index >= self.next_index {
            return;
        }
        self.unacked = self.unacked.split_off(&(index + 1));
        if index > self.acked {
            self.acked = index;
            self.events.push_back(Event::Committed(index));
        }
    }

    // ---- backup operations ----

    /// Backup: the driver claimed the service address; we are primary now (with no backup).
    pub fn complete_takeover(&mut self, _now: Duration) -> Result<(), Error> {
        if self.role != Role::TakingOver {
            return Err(Error::NotPrimary);
        }
        self.role = Role::Primary;
        self.next_index = self.applied + 1;
        self.acked = self.applied;
        self.backup_synced = false;
        self.events.push_back(Event::RoleChanged(Role::Primary));
        self.send_hello();
        Ok(())
    }

    fn on_entry(&mut self, entry: LogEntry<T>) {
        if self.role != Role::Backup {
            return;
        }
        let index = entry.index();
        match entry {
            LogEntry::Snapshot { .. } if !self.has_snapshot || index > self.applied => {
                self.has_snapshot = true;
                self.applied = index;
                self.buffered = self.buffered.split_off(&(index + 1));
                self.events.push_back(Event::Apply(entry));
            }
            _ if !self.has_snapshot || index <= self.applied => {}
            e if index == self.applied + 1 => {
                self.applied = index;
                self.events.push_back(Event::Apply(e));
            }
            e => {
                if self.buffered.len() < MAX_BUFFERED {
                    self.buffered.insert(index, e);
                }
            }
        }
        while let Some(e) = self.buffered.remove(&(self.applied + 1)) {
            self.applied += 1;
            self.events.push_back(Event::Apply(e));
        }
        if self.has_snapshot {
            self.send(Payload::Ack {
                index: self.applied,
            });
        }
    }

    // ---- internals ----

    fn new_peer(&mut self, env: &Envelope<T>, starting: bool) {
        self.peer = Some(Peer {
            node: env.node,
            incarnation: env.incarnation,
            role: env.role,
            starting,
            seq_max: 0,
            seq_window: 0,
            saw_us: false,
        });
        self.peer_state = PeerState::Unknown;
        self.last_beacon = None;
        self.beacon_seq = 0;
        // A new primary incarnation restarts the log; a new backup needs a snapshot.
        self.has_snapshot = false;
        self.applied = 0;
        self.buffered.clear();
        self.backup_synced = false;
        self.unacked.clear();
    }

    fn role_conflict(&self, env: &Envelope<T>, prev_role: Role) -> Option<Conflict> {
        let theirs_primary = matches!(env.role, Role::Primary | Role::TakingOver);
        let ours_primary = matches!(self.role, Role::Primary | Role::TakingOver);
        if ours_primary && theirs_primary {
            // A primary that stalled past the failure detector hears its backup (same
            // incarnation, a backup until now) serving: the backup took over and owns the
            // clients; the stalled one yields, whatever the node ids. The one that took over
            // only reports it.
            if self.took_over_from == Some((env.node, env.incarnation)) {
                return Some(Conflict::Reject(Error::TwoPrimaries));
            }
            if self.role == Role::Primary && !self.is_starting() && prev_role == Role::Backup {
                return Some(Conflict::Fatal(if self.handover.is_some() {
                    Error::HandedOver
                } else {
                    Error::TakenOver
                }));
            }
            let their_starting = self.peer.as_ref().is_some_and(|p| p.starting);
            return Some(if self.is_starting() && !their_starting {
                // A primary already serves (e.g. the backup that took over from this node's
                // previous process): join it as its backup.
                Conflict::Demote
            } else if self.is_starting() {
                Conflict::Fatal(Error::TwoPrimaries)
            } else if their_starting {
                Conflict::Reject(Error::TwoPrimaries)
            } else if self.config.node_id > env.node {
                // Two running primaries (healed partition): the higher id yields.
                Conflict::Fatal(Error::TwoPrimaries)
            } else {
                Conflict::Reject(Error::TwoPrimaries)
            });
        }
        if self.role == Role::Backup && env.role == Role::Backup {
            return Some(Conflict::Fatal(Error::TwoBackups));
        }
        None
    }

    /// A misconfigured peer is fatal for a node that is not serving yet (a primary still
    /// probing, a backup that never synced with a primary), reported otherwise.
    fn not_serving_yet(&self) -> bool {
        self.is_starting() || (self.role == Role::Backup && !self.established_once)
    }

    fn mismatch(&mut self, e: Error) {
        if self.failed {
            return;
        }
        if self.not_serving_yet() {
            self.fail(e);
        } else if !self.reported.contains(&e) {
            self.reported.push(e.clone());
            self.events.push_back(Event::PeerRejected(e));
        }
    }

    fn fail(&mut self, e: Error) {
        if !self.failed {
            self.failed = true;
            self.events.push_back(Event::Fatal(e));
        }
    }

    fn on_peer_dead(&mut self) {
        self.peer_state = PeerState::Dead;
        self.events.push_back(Event::PeerDead);
        match self.role {
            Role::Primary => {
                self.abort_handover();
                // Unprotected: release everything held. The log stays for the same backup
                // incarnation (resent when it answers again, see `push_entry`).
                if self.next_index > 1 {
                    self.events.push_back(Event::Committed(self.next_index - 1));
                }
            }
            Role::Backup => {
                let was_primary = self
                    .peer
                    .as_ref()
                    .is_some_and(|p| p.role == Role::Primary && !p.starting);
                if was_primary && self.has_snapshot {
                    self.took_over_from = self.peer.as_ref().map(|p| (p.node, p.incarnation));
                    self.role = Role::TakingOver;
                    self.events.push_back(Event::RoleChanged(Role::TakingOver));
                }
            }
            Role::TakingOver => {}
        }
    }

    /// How often this node heartbeats: a synced backup whose primary saw it every
    /// [`Config::backup_heartbeats_every`] intervals, any other node every interval (its
    /// Hellos too).
    fn own_heartbeat_interval(&self) -> Duration {
        let steady = self.role == Role::Backup
            && self.peer_state == PeerState::Alive
            && self.peer.as_ref().is_some_and(|p| p.saw_us);
        if steady {
            self.config.heartbeat_interval * self.config.backup_heartbeats_every.max(1)
        } else {
            self.config.heartbeat_interval
        }
    }

    fn send_liveness(&mut self) {
        let hello = self.is_starting()
            || self.peer.as_ref().is_none_or(|p| !p.saw_us)
            || self.peer_state != PeerState::Alive;
        if hello {
            self.send_hello();
        } else {
            let log_index = if self.role == Role::Primary {
                self.next_index - 1
            } else {
                self.applied
            };
            let heartbeat_path = self.config.heartbeat_channel;
            self.send_on(Payload::Heartbeat { log_index }, heartbeat_path);
        }
    }

    fn send_hello(&mut self) {
        let peer_seen = self.peer.is_some();
        self.send(Payload::Hello {
            key_fingerprint: self.fingerprint,
            starting: self.is_starting(),
            peer_seen,
        });
    }

    fn envelope(&self, payload: Payload<T>, seq: u64) -> Envelope<T> {
        Envelope {
            node: self.config.node_id,
            incarnation: self.config.incarnation,
            role: self.role,
            seq,
            payload,
        }
    }

    fn send(&mut self, payload: Payload<T>) {
        self.send_on(payload, false);
    }

    /// [`Node::send`], on the heartbeat path when `heartbeat_path` ([`Node::poll_heartbeat`],
    /// bounded; see [`Config::heartbeat_channel`]).
    fn send_on(&mut self, payload: Payload<T>, heartbeat_path: bool) {
        if self.failed {
            return;
        }
        // Items were encoded once when replicated ([`Node::encode_entry`]); the encoding
        // is deterministic, so a retransmission encodes too, and everything else is ours.
        match wire::encode(&self.config.key, &self.envelope(payload, self.seq + 1)) {
            Ok(d) if heartbeat_path => {
                self.seq += 1;
                self.stats.sent += 1;
                if self.heartbeats.len() >= MAX_QUEUED_BEACONS {
                    self.heartbeats.pop_front();
                }
                self.heartbeats.push_back(d);
            }
            Ok(d) => {
                self.seq += 1;
                self.push_transmit(d);
            }
            Err(_) => debug_assert!(false, "an item that encoded once failed to encode"),
        }
    }

    fn push_transmit(&mut self, datagram: Vec<u8>) {
        if self.failed {
            return;
        }
        debug_assert!(datagram.len() > MAC_LEN);
        self.stats.sent += 1;
        self.transmit.push_back(datagram);
    }
}

enum Conflict {
    Fatal(Error),
    Reject(Error),
    /// This node, still probing as primary, found a serving primary: it becomes its backup.
    Demote,
}

/// Recent maxima of the peer's silences: one slot per second over the last
/// [`Silences::SLOTS`] seconds.
#[derive(Debug, Default)]
struct Silences {
    /// (second, longest silence ending in it).
    slots: [(u64, Duration); Silences::SLOTS],
}

impl Silences {
    const SLOTS: usize = 10;

    /// A sign of life at `now`; the previous one was at `last`.
    fn observe(&mut self, last: Option<Duration>, now: Duration) {
        let Some(gap) = last.and_then(|l| now.checked_sub(l)) else {
            return;
        };
        let sec = now.as_secs();
        let slot = &mut self.slots[(sec % Self::SLOTS as u64) as usize];
        if slot.0 != sec {
            *slot = (sec, Duration::ZERO);
        }
        slot.1 = slot.1.max(gap);
    }

    /// The longest silence that ended within the last `SLOTS` seconds before `now`.
    fn recent_max(&self, now: Duration) -> Duration {
        let sec = now.as_secs();
        self.slots
            .iter()
            .filter(|(s, _)| *s <= sec && sec - *s < Self::SLOTS as u64)
            .map(|(_, d)| *d)
            .max()
            .unwrap_or_default()
    }
}
