//! Hot-standby takeover: what a backup must hold to continue a room's output streams.
//!
//! A primary exports a [`MixerSnapshot`] with [`Mixer::export_state`] whenever
//! [`Mixer::state_version`] changes and ships it to the standby; the standby keeps only the
//! latest one (no media processing) and, when promoted, builds a mixer with
//! [`Mixer::from_snapshot`] at the instant of its first tick. Every output stream then
//! continues with the same SSRC, and with the sequence number and timestamp the primary
//! would have used at that tick (packets of the ticks nobody ran are simply missing, as if
//! lost in the network).
//!
//! # Why that is enough
//!
//! Between two changes of [`Mixer::state_version`] the RTP headers the mixer emits are a
//! pure function of the snapshot and the tick index ([`crate::stream`] gives the formula;
//! [`crate::stream::OutStream::advance`] projects it in closed form). The version moves on
//! exactly the events that break that: a participant added, updated (hold/resume, codec,
//! ptime) or removed, the first tick, a skipped tick (driver stall), and a change of the
//! top-N set or of the dominant speaker (those do not touch headers, but without them the
//! standby would start with an empty mix until the voice-activity attack and announce a
//! spurious speaker change).
//!
//! # What is replicated, and what breaks without it
//!
//! - [`MixerConfig`] (seed, `ntp_origin`, top-N, complexity): the seed draws SSRCs, sequence
//!   and timestamp origins and the RTCP schedule of participants added after takeover;
//!   `ntp_origin` keeps the RTCP SR NTP<->RTP mapping continuous; the CNAME derives from it.
//! - per participant [`StreamParams`]: payload type, ptime and `send` decide which packets
//!   exist at a tick and what they carry.
//! - per participant [`OutStream`]: SSRC, seq/ts origins, base tick, clock rate,
//!   `packets_sent`, `next_sample`, marker: the header formula's inputs.
//! - the last tick index and the instant it ran at (tick clock phase): where the projection
//!   starts, and when the projected RTCP reports fell due.
//! - per participant `next_rtcp`: the SR schedule (a client would otherwise see reports at a
//!   new cadence, harmless, but the oracle test would not be exact).
//! - top-N set, dominant speaker, per participant speaking flag and smoothed level: so the
//!   mix after takeover contains the same voices from its first tick.
//! - per participant `muted` (an operator's mute, [`Mixer::set_muted`]): a muted talker stays
//!   out of the mix after takeover. Snapshots from before the field read as unmuted.
//!
//! Not replicated (rebuilt from the mirrored input after takeover, audibly harmless): jitter
//! buffers, decoder/encoder state (the first Opus frames after takeover are encoded by a
//! fresh encoder), receive statistics of the clients' streams (the first report block after
//! takeover restarts its loss/jitter counters), RFC 6464 level holds, and `octets_sent` of
//! Opus streams (the SR octet count under-counts the octets the primary sent after the
//! snapshot; G.711 octets are projected exactly).

use crate::stream::OutStream;
use crate::{
    codec, rtcp, speaker, tick_index, Codec, Error, Mixer, MixerConfig, ParticipantId,
    StreamParams, TICK,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Version of the [`MixerSnapshot`] layout; a standby refuses another one.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// Replicated state of one participant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParticipantSnapshot {
    /// Participant id.
    pub id: ParticipantId,
    /// Negotiated media.
    pub params: StreamParams,
    /// Output stream header state after `MixerSnapshot::last_tick`.
    pub stream: OutStream,
    /// When the next periodic RTCP report is due.
    pub next_rtcp: Duration,
    /// Voice activity: speaking after hysteresis.
    pub speaking: bool,
    /// Voice activity: smoothed level in dBov.
    pub smoothed_dbov: f32,
    /// Muted by the operator ([`Mixer::set_muted`]); absent in older snapshots (unmuted).
    #[serde(default)]
    pub muted: bool,
}

/// Everything a standby needs to continue a room's output streams (see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MixerSnapshot {
    /// [`SNAPSHOT_FORMAT`] of the exporter.
    pub format: u32,
    /// The room's configuration (seed, NTP origin, top-N).
    pub config: MixerConfig,
    /// [`Mixer::state_version`] at export.
    pub state_version: u64,
    /// Last tick index the primary ran, `None` before its first tick.
    pub last_tick: Option<u64>,
    /// Instant of that tick (its offset from `last_tick * 20 ms` is the tick clock phase).
    pub last_tick_at: Option<Duration>,
    /// Participants in id order.
    pub participants: Vec<ParticipantSnapshot>,
    /// Top-N mix set (sorted ids).
    pub mix_set: Vec<ParticipantId>,
    /// Dominant speaker.
    pub active_speaker: Option<ParticipantId>,
}

impl Mixer {
    /// Counter that changes whenever replicated state changes in a way the tick index does
    /// not predict. A primary ships [`Mixer::export_state`] to its standby each time it
    /// differs from the last shipped value; in between, nothing needs replicating.
    pub fn state_version(&self) -> u64 {
        self.state_version
    }

    /// Export what a standby needs to continue this room (see [`crate::snapshot`]).
    pub fn export_state(&self) -> MixerSnapshot {
        MixerSnapshot {
            format: SNAPSHOT_FORMAT,
            config: self.config.clone(),
            state_version: self.state_version,
            last_tick: self.last_tick,
            last_tick_at: self.last_tick_at,
            participants: self
                .participants
                .iter()
                .map(|(&id, p)| ParticipantSnapshot {
                    id,
                    params: p.params.clone(),
                    stream: p.stream.clone(),
                    next_rtcp: p.next_rtcp,
                    speaking: p.vad.speaking(),
                    smoothed_dbov: p.vad.smoothed(),
                    muted: p.muted,
                })
                .collect(),
            mix_set: self.mix_set.clone(),
            active_speaker: self.dominant.current(),
        }
    }

    /// Build the mixer a promoted standby runs. `now` is the instant of its first tick: call
    /// `handle_tick(now)` next. Every tick after `snapshot.last_tick` and before that one is
    /// projected as if the primary had run it (with the snapshot's tick clock phase), so the
    /// first packets carry the sequence numbers and timestamps the primary would have used.
    pub fn from_snapshot(snapshot: &MixerSnapshot, now: Duration) -> Result<Mixer, Error> {
        if snapshot.format != SNAPSHOT_FORMAT {
            return Err(Error::InvalidParams(format!(
                "snapshot format {} (expected {SNAPSHOT_FORMAT})",
                snapshot.format
            )));
        }
        let mut m = Mixer::new(snapshot.config.clone());
        let first = tick_index(now).max(snapshot.last_tick.map_or(0, |l| l + 1));
        // Instant at which the primary would have run tick `t`, from its tick clock phase.
        let phase = match (snapshot.last_tick, snapshot.last_tick_at) {
            (Some(t), Some(at)) => at.as_nanos() as i128 - t as i128 * TICK.as_nanos() as i128,
            _ => 0,
        };
        let instant_of = |t: u64| {
            let ns = (t as i128 * TICK.as_nanos() as i128 + phase).max(0);
            Duration::from_nanos(ns as u64)
        };
        for ps in &snapshot.participants {
            m.add_participant(ps.id, ps.params.clone(), now)?;
            let Some(p) = m.participants.get_mut(&ps.id) else {
                continue;
            };
            p.stream = ps.stream.clone();
            p.next_rtcp = ps.next_rtcp;
            // Ticks the primary runs for a participant start after its last tick (or, before
            // any tick, at the participant's join tick).
            let from = snapshot.last_tick.map_or(p.stream.base_tick, |l| l + 1);
            if from < first {
                let samples = p
                    .stream
                    .advance(ps.params.ptime_ms, ps.params.send, from..first);
                if matches!(ps.params.codec, Codec::Pcmu | Codec::Pcma) {
                    // G.711: one octet per 8 kHz sample.
                    p.stream.octets_sent += samples / 6;
                }
                let last_projected = instant_of(first - 1);
                while p.next_rtcp <= last_projected {
                    p.next_rtcp += rtcp::INTERVAL;
                }
            }
            debug_assert_eq!(p.stream.clock_rate, codec::clock_rate(ps.params.codec));
            p.vad = speaker::Vad::resumed(ps.speaking, ps.smoothed_dbov);
            p.muted = ps.muted;
            p.in_mix = !ps.muted && snapshot.mix_set.contains(&ps.id);
            p.stats.in_mix = p.in_mix;
            p.stats.ssrc_out = p.stream.ssrc;
        }
        m.mix_set = snapshot
            .mix_set
            .iter()
            .copied()
            .filter(|id| m.participants.get(id).is_some_and(|p| !p.muted))
            .collect();
        let active = snapshot
            .active_speaker
            .filter(|id| m.participants.get(id).is_some_and(|p| !p.muted));
        m.dominant = speaker::Dominant::resumed(active);
        m.last_tick = first.checked_sub(1);
        m.last_tick_at = m.last_tick.map(instant_of);
        m.state_version = snapshot.state_version;
        m.outputs.clear();
        Ok(m)
    }
}
