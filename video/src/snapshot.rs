//! Hot-standby takeover: what a backup must hold to continue a room's output video streams.
//!
//! A primary ships [`Switcher::export_state`] to its standby whenever
//! [`Switcher::state_version`] changes; the standby keeps only the latest snapshot (no media
//! processing) and, when promoted, builds a switcher with [`Switcher::from_snapshot`].
//!
//! # When the version moves
//!
//! On exactly the events that change how a source packet maps to an output packet or what
//! the standby must do at takeover: a participant added or removed, a new speaker, a change
//! of a receiver's target or of its pending state (a switch decision), a switch (a new
//! mapping), and a source's SSRC being learnt or changing. Not per packet: between two
//! changes the output headers are a pure function of the snapshot and the source packet
//! (`out = source + offset` for sequence number, timestamp, picture ID and TL0PICIDX), so
//! replication costs one snapshot per switch, not per packet.
//!
//! # What the promoted backup does
//!
//! (a) A receiver whose snapshot has no pending switch keeps its [`Mapping`]: its next
//!     packets carry exactly the sequence numbers, timestamps and descriptors the primary
//!     would have sent for the same source packets (byte-identical RTP, proved in
//!     `tests/takeover.rs`). One exception: a source with 7-bit picture IDs, whose
//!     unwrapping is per-packet state; its picture IDs are moved forward by a multiple of
//!     128 so that they stay ahead of anything the primary may have sent.
//!
//! (b) Every source with a known SSRC is asked for a keyframe at once, not rate-limited by
//!     the primary's history. The FIR sequence number continues from the snapshot's, moved
//!     forward by the number of requests the primary may have sent since (one per
//!     `keyframe_request_interval`, plus one), so the source never takes it for a
//!     retransmission of the primary's last request.
//!
//! (c) A receiver with a pending switch (the primary may have switched after the
//!     snapshot, and sent packets the backup cannot know) is not continued: it waits for
//!     its target's next keyframe and starts a new mapping there, past everything the
//!     primary may have used. The primary sent it at most `max_packet_burst +
//!     max_packet_rate x elapsed` packets after the snapshot's [`Position`] (`elapsed`
//!     counted from the later of `Position::at` and [`SwitcherSnapshot::changed_at`]), so the
//!     new mapping starts at `seq = last + that reserve + 1` (the reserve capped at 30000,
//!     below 2^15, so that the jump reads as forward), `timestamp = last + elapsed x 90 kHz`,
//!     picture ID `last + max_frame_rate / 4 + max_frame_rate x elapsed + 1` (capped at
//!     16000) and TL0PICIDX likewise modulo 256. Sequence numbers may jump forward; they
//!     never go back as long as the reserve is not capped (at the defaults, 14.75 s between
//!     the primary's last shipped snapshot and the takeover).
//!
//! A continuing receiver (a) also gets that reserved position as the floor of its next
//! switch; once it has forwarded a packet on the continued mapping, that packet's position
//! (the primary's own next one) counts too. When the reserve was capped (a stale snapshot),
//! the first forwarded packet's position replaces the floor: the primary can then only
//! have sent more if the source's packets were reordered at that very moment.
//!
//! Also a limit: the primary must ship the snapshot of a switch decision before it can
//! switch. A decision whose snapshot is lost with the primary, followed by a switch before
//! the crash, leaves the backup continuing the old mapping while the primary had started a
//! new one; the backup's packets may then repeat sequence numbers of the primary's last
//! ones. A decision precedes its switch by at least the new source's keyframe delay.
//!
//! Not replicated: the retransmission cache (NACKs for packets sent before the takeover
//! are missed), sequence windows (a retransmission arriving at both nodes is forwarded by
//! both, with the same bytes), keyframe-request timers, REMB estimates, and the sender
//! report's packet and octet counts (they restart after takeover).

use crate::feedback::FirSequence;
#[cfg(doc)]
use crate::Switcher;
use crate::{ParticipantId, SwitcherConfig, VideoParams};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Version of the [`SwitcherSnapshot`] layout; a standby refuses another one.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// Where an output stream is: the newest values sent on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Highest sequence number sent (before the first packet: the origin minus one).
    pub seq: u16,
    /// Newest timestamp sent (before the first packet: the origin).
    pub timestamp: u32,
    /// When the frame with that timestamp started being sent.
    pub timestamp_at: Duration,
    /// Newest picture ID sent (15 bits; before the first: the origin minus one).
    pub picture_id: u16,
    /// Newest TL0PICIDX sent (before the first: the origin minus one).
    pub tl0_pic_idx: u8,
    /// When the last packet was sent (before the first: when the receiver joined).
    pub at: Duration,
    /// Whether anything was sent yet.
    pub sent: bool,
}

/// How a receiver's current source maps onto its output stream: everything modulo the
/// field's width, `out = source + offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mapping {
    /// The source shown.
    pub source: ParticipantId,
    /// Its SSRC when the mapping was made.
    pub source_ssrc: u32,
    /// When the switch happened.
    pub started_at: Duration,
    /// Source sequence number of the switch's keyframe packet: older packets of the source
    /// are not forwarded (they would repeat sequence numbers of the previous source) while
    /// they can still arrive: for the first 512 packets of the mapping, at most 5 s.
    pub first_source_seq: u16,
    /// Output sequence number of the switch's packet.
    pub first_seq: u16,
    /// Output timestamp of the switch's packet.
    pub first_timestamp: u32,
    /// Output picture ID of the switch's packet.
    pub first_picture_id: u16,
    /// Output TL0PICIDX of the switch's packet.
    pub first_tl0_pic_idx: u8,
    /// Sequence number offset.
    pub seq_offset: u16,
    /// Timestamp offset.
    pub timestamp_offset: u32,
    /// Picture ID offset (modulo 2^15, applied to the source's unwrapped picture ID).
    pub picture_id_offset: u16,
    /// TL0PICIDX offset.
    pub tl0_offset: u8,
}

/// Replicated state of a source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceSnapshot {
    /// The SSRC its packets are taken from, once known.
    pub ssrc: Option<u32>,
    /// Our FIR sequence numbers towards it.
    pub fir: FirSequence,
}

/// Replicated state of a receiver's output stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiverSnapshot {
    /// The output stream's SSRC.
    pub ssrc: u32,
    /// The current mapping (`None` before the first switch).
    pub mapping: Option<Mapping>,
    /// The source it should be shown.
    pub target: Option<ParticipantId>,
    /// Since when a switch to `target` (or a re-sync with a restarted source) waits for a
    /// keyframe.
    pub pending_since: Option<Duration>,
    /// The newest values sent, at export.
    pub last: Position,
}

/// Replicated state of one participant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantSnapshot {
    /// Participant id.
    pub id: ParticipantId,
    /// Negotiated video.
    pub params: VideoParams,
    /// Present when it is a source.
    pub source: Option<SourceSnapshot>,
    /// Present when it is a receiver.
    pub receiver: Option<ReceiverSnapshot>,
}

/// Everything a standby needs to continue a room's output video streams (see the module
/// docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitcherSnapshot {
    /// [`SNAPSHOT_FORMAT`] of the exporter.
    pub format: u32,
    /// The room's configuration.
    pub config: SwitcherConfig,
    /// [`Switcher::state_version`] at export.
    pub state_version: u64,
    /// When the state last changed (the instant of the call that moved the version).
    pub changed_at: Duration,
    /// The current speaker (a source).
    pub speaker: Option<ParticipantId>,
    /// The speaker before (what the speaker sees).
    pub previous_speaker: Option<ParticipantId>,
    /// The source every receiver is shown ([`Switcher::set_pinned`]); absent in
    /// snapshots of before it existed.
    #[serde(default)]
    pub pinned: Option<ParticipantId>,
    /// Participants in id order.
    pub participants: Vec<ParticipantSnapshot>,
}

/// What a hot standby needs to continue a room's composed grid (crate `video-grid`'s
/// `Compositor::snapshot` and `Compositor::resume`; defined here, with the forwarder's
/// snapshot it travels with, so that the replication schema needs no codec).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GridSnapshot {
    /// Picture ID of the next frame to encode.
    pub next_picture_id: u16,
    /// The active speaker.
    pub speaker: Option<ParticipantId>,
    /// The source in each tile, row-major.
    pub tiles: Vec<Option<ParticipantId>>,
}
