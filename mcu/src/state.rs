//! State shared between the control plane, the room tasks and the HTTP API.

use crate::metrics::Metrics;
use mixer::{ParticipantId, ParticipantStats};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// One participant as the admin API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ParticipantView {
    /// Participant id (also the SIP call handle).
    pub id: ParticipantId,
    /// `sip` or `webrtc`.
    pub kind: String,
    /// SIP URI of the caller.
    pub sip_uri: String,
    /// Where we send its media (the learned source of its RTP, else its SDP address).
    pub remote_media: SocketAddr,
    /// Codec name.
    pub codec: String,
    /// Our RTP port for it.
    pub local_rtp_port: u16,
    /// Media direction from the client's SDP.
    pub direction: String,
    /// Muted by the operator (`POST /api/rooms/{room}/participants/{id}/mute`): out of the
    /// mix, still measured.
    pub muted: bool,
    /// Its video (VP8), if it has any (`null`: audio only).
    pub video: Option<VideoView>,
    /// Mixer counters (ssrc_in, ssrc_out, level, speaking, packets, loss, jitter).
    #[serde(flatten)]
    pub stats: ParticipantStats,
}

/// A participant's video as the admin API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct VideoView {
    /// Our video RTP port for it.
    pub local_rtp_port: u16,
    /// Its VP8 payload type.
    pub payload_type: u8,
    /// Video direction from the client's SDP.
    pub direction: String,
    /// Where we send its video (the learned source of its video RTP, else its SDP address).
    pub remote_media: SocketAddr,
    /// The participant whose video it is shown now (voice-switched forwarding).
    pub showing: Option<ParticipantId>,
    /// SSRC of the video stream we send it (one for the whole call).
    pub ssrc_out: Option<u32>,
    /// The SSRC its own video comes with, once known.
    pub ssrc_in: Option<u32>,
    /// Its video RTP packets received (valid VP8).
    pub packets_in: u64,
    /// Video RTP packets sent to it (retransmissions included).
    pub packets_out: u64,
    /// Keyframe requests sent to it as a source, and held back by the rate limit.
    pub keyframe_requests: u64,
    /// See `keyframe_requests`.
    pub keyframe_requests_suppressed: u64,
    /// Times its stream switched to another source.
    pub switches: u64,
    /// Packets it NACKed that were retransmitted, and that were not in the cache.
    pub nack_answered: u64,
    /// See `nack_answered`.
    pub nack_missed: u64,
}

/// One room as the admin API shows it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RoomView {
    /// Room name.
    pub name: String,
    /// Active speaker.
    pub active_speaker: Option<ParticipantId>,
    /// New participants are refused (`PUT /api/rooms/{room}`).
    pub locked: bool,
    /// The room's participant limit (its own, else the server's).
    pub max_participants: usize,
    /// The video layout in effect (its own, else the server's `--video-layout`; published
    /// by the room task, which says `switched` while it leaves grid layout).
    pub layout: control::VideoLayout,
    /// Participants by id.
    pub participants: BTreeMap<ParticipantId, ParticipantView>,
}

/// An event for `GET /api/events` (DTMF, speaker changes, calls).
#[derive(Clone, Debug, Serialize)]
pub struct ApiEvent {
    /// Position in this node's event log: 1 for the first event, one more for each next
    /// (the live updates, [`crate::live`], send the events after the last one they sent).
    pub seq: u64,
    /// Room.
    pub room: String,
    /// Wall-clock time, ms since the Unix epoch.
    pub at_unix_ms: u64,
    /// The mixer event.
    pub event: mixer::Event,
}

/// Append an event to the bounded API event log (the oldest go first).
pub fn push_event(events: &Mutex<VecDeque<ApiEvent>>, room: &str, event: mixer::Event) {
    let mut q = events.lock().unwrap();
    // The log only ever loses its oldest entries: the newest carries the highest number.
    let seq = q.back().map_or(1, |e| e.seq + 1);
    if q.len() >= 1000 {
        q.pop_front();
    }
    q.push_back(ApiEvent {
        seq,
        room: room.to_string(),
        at_unix_ms: unix_ms(),
        event,
    });
}

/// Wall-clock milliseconds for API events (drivers may read clocks; cores may not).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Everything the HTTP API reads.
#[derive(Clone, Default)]
pub struct Shared {
    /// Rooms by name.
    pub rooms: Arc<Mutex<BTreeMap<String, Arc<Mutex<RoomView>>>>>,
    /// Recent events (bounded).
    pub events: Arc<Mutex<VecDeque<ApiEvent>>>,
    /// Metrics.
    pub metrics: Metrics,
    /// Hot-standby status for `GET /api/status`.
    pub status: Arc<Mutex<FtStatus>>,
    /// Set when this node must stop serving at once (its backup took over while it was
    /// stalled): rooms stop sending media before the process exits.
    pub fenced: Arc<std::sync::atomic::AtomicBool>,
    /// WHIP requests to the server task (`None`: WebRTC not served).
    pub whip: Option<tokio::sync::mpsc::UnboundedSender<WhipRequest>>,
    /// The operator's requests to the server task (`None`: no server task, the API answers
    /// 503).
    pub admin: Option<tokio::sync::mpsc::UnboundedSender<AdminRequest>>,
    /// The admin API's bearer token (`None`: open, loopback listeners only).
    pub admin_token: Option<Arc<crate::auth::AdminToken>>,
    /// The server's room size limit (`--max-participants`), for the API document.
    pub max_participants: usize,
    /// Planned switchover: the rooms send no tick from this one on.
    pub fence_tick: FenceTick,
    /// `POST /api/failover` requests to the server task (`None`: no hot standby).
    pub switchover: Option<tokio::sync::mpsc::UnboundedSender<SwitchoverRequest>>,
    /// The live updates' hub (`GET /api/ws`), fed by [`crate::live::spawn`].
    pub live: crate::live::Hub,
}

/// An operator's request for the server task ([`control::Core::handle_admin`]), answered on
/// `reply` once the core released its answer.
pub struct AdminRequest {
    /// What the operator asks.
    pub cmd: control::AdminCommand,
    /// The answer.
    pub reply: tokio::sync::oneshot::Sender<control::AdminResult>,
}

/// The first tick the rooms must not send (planned switchover: the backup sends it);
/// `u64::MAX` when none.
#[derive(Clone, Debug)]
pub struct FenceTick(pub Arc<std::sync::atomic::AtomicU64>);

impl Default for FenceTick {
    fn default() -> Self {
        FenceTick(Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX)))
    }
}

impl FenceTick {
    /// Tick `k` is fenced.
    pub fn covers(&self, k: u64) -> bool {
        k >= self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Fence from tick `k` on (`u64::MAX`: lift the fence).
    pub fn set(&self, k: u64) {
        self.0.store(k, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `POST /api/failover`, answered on the oneshot: the switchover started, or why not.
pub type SwitchoverRequest = tokio::sync::oneshot::Sender<Result<SwitchoverView, String>>;

/// A planned switchover that started.
#[derive(Clone, Debug, Serialize)]
pub struct SwitchoverView {
    /// The tick from which the backup sends (tick k at the origin + k x 20 ms).
    pub from_tick: u64,
    /// When that tick falls (wall clock, ms since the Unix epoch).
    pub at_unix_ms: u64,
}

/// A WHIP request for the server task, answered on `reply`.
pub enum WhipRequest {
    /// `POST /whip/{room}`.
    Offer {
        /// Room name.
        room: String,
        /// The browser's SDP offer.
        sdp: String,
        /// Display name (`?name=`).
        name: Option<String>,
        /// The answer.
        reply: tokio::sync::oneshot::Sender<control::WhipResult>,
    },
    /// `DELETE /whip/{room}/{id}`.
    Delete {
        /// Room name.
        room: String,
        /// Participant id.
        id: u64,
        /// The answer.
        reply: tokio::sync::oneshot::Sender<control::WhipResult>,
    },
}

/// `GET /api/status`: this node's hot-standby role and its view of the peer.
#[derive(Clone, Debug, Serialize)]
pub struct FtStatus {
    /// `standalone`, `primary`, `backup` or `taking_over`.
    pub role: String,
    /// `unknown`, `alive`, `dead` or `sync_lost` (backup: sync link silent, the primary's
    /// beacons arriving; `none` when standalone).
    pub peer: String,
    /// Primary: the backup acknowledged the full state. Backup: it holds the primary's state.
    pub synced: bool,
    /// Replication log progress.
    pub replication: Replication,
    /// Backup: client packets read from the mirror queue.
    pub mirrored_packets: u64,
    /// Sync-link datagrams dropped as malformed or unauthenticated.
    pub sync_dropped: u64,
    /// A synced standby stands behind the serving node: the peer is alive on the sync link
    /// and holds (backup) or has acknowledged (primary) the full state.
    pub protected: bool,
    /// Backup: the primary's client-path beacons accepted (the second failure-detection
    /// path: with the sync link silent and beacons arriving, `peer` is `sync_lost`).
    pub beacons: u64,
    /// Backup: client-path datagrams refused (forged, replayed, not the current primary).
    pub beacons_refused: u64,
    /// The last takeover this node performed.
    pub last_takeover: Option<TakeoverView>,
}

impl Default for FtStatus {
    fn default() -> Self {
        FtStatus {
            role: "standalone".into(),
            peer: "none".into(),
            synced: false,
            replication: Replication::default(),
            mirrored_packets: 0,
            sync_dropped: 0,
            protected: false,
            beacons: 0,
            beacons_refused: 0,
            last_takeover: None,
        }
    }
}

/// Replication progress (primary: sent vs acknowledged; backup: applied).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Replication {
    /// Highest log index acknowledged by the backup (backup: applied).
    pub committed: u64,
    /// Next log index to be written.
    pub next: u64,
    /// Entries written but not acknowledged.
    pub unacked: u64,
    /// Age of the oldest SIP message held for acknowledgement, ms (0 when none).
    pub lag_ms: f64,
    /// SIP messages waiting for acknowledgement.
    pub held_messages: u64,
}

/// One takeover.
#[derive(Clone, Debug, Serialize)]
pub struct TakeoverView {
    /// When it started (wall clock, ms since the Unix epoch).
    pub at_unix_ms: u64,
    /// From the failure detection to serving (rooms resumed, VIP claimed), ms.
    pub duration_ms: f64,
    /// Calls taken over.
    pub calls: u64,
    /// Rooms resumed.
    pub rooms: u64,
    /// A planned switchover (`POST /api/failover` on the old primary), not a failure.
    pub planned: bool,
}
