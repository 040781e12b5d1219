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
    /// SIP URI of the caller.
    pub sip_uri: String,
    /// Where we send its media (latched source of its RTP, else its SDP address).
    pub remote_media: SocketAddr,
    /// Codec name.
    pub codec: String,
    /// Our RTP port for it.
    pub local_rtp_port: u16,
    /// Media direction from the client's SDP.
    pub direction: String,
    /// Mixer counters (ssrc_in, ssrc_out, level, speaking, packets, loss, jitter).
    #[serde(flatten)]
    pub stats: ParticipantStats,
}

/// One room as the admin API shows it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RoomView {
    /// Room name.
    pub name: String,
    /// Active speaker.
    pub active_speaker: Option<ParticipantId>,
    /// Participants by id.
    pub participants: BTreeMap<ParticipantId, ParticipantView>,
}

/// An event for `GET /api/events` (DTMF, speaker changes, calls).
#[derive(Clone, Debug, Serialize)]
pub struct ApiEvent {
    /// Room.
    pub room: String,
    /// Wall-clock time, ms since the Unix epoch.
    pub at_unix_ms: u64,
    /// The mixer event.
    pub event: mixer::Event,
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
}
