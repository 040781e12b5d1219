//! Understudy's media core: a sans-IO, deterministic audio mixer for one conference room.
//!
//! It owns per-participant jitter buffers, Opus/G.711 decoders and encoders, audio levels,
//! active-speaker detection, top-N mixing and every output RTP/RTCP stream. It never reads a
//! clock, never touches a socket and never uses an OS random source: time comes in with every
//! call (`now`), randomness from [`MixerConfig::seed`]. It is not a SIP stack, not a network
//! driver: the `mcu` binary feeds it packets and ticks and sends what [`Mixer::poll_output`] returns.
//!
//! API CONTRACT (fixed by the integrator; implementation in progress).
#![deny(missing_docs)]

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Identifier of a participant, chosen by the driver, unique within the room.
pub type ParticipantId = u64;

/// Audio codec negotiated for a participant (same codec both directions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Codec {
    /// Opus, 48 kHz RTP clock (rtpmap opus/48000/2); we encode mono, decode to mono.
    Opus,
    /// G.711 mu-law, 8 kHz.
    Pcmu,
    /// G.711 A-law, 8 kHz.
    Pcma,
}

/// Everything the mixer needs to know about one participant's negotiated media.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamParams {
    /// Negotiated codec.
    pub codec: Codec,
    /// Payload type we send with and expect from the client for `codec`.
    pub payload_type: u8,
    /// Payload type of telephone-event (RFC 4733), if negotiated.
    pub telephone_event_pt: Option<u8>,
    /// Packetization of our output to this client in ms (10..=60, multiple of 10; default 20).
    pub ptime_ms: u32,
    /// RFC 6464 client-to-mixer audio level header extension id, if negotiated.
    pub audio_level_ext_id: Option<u8>,
    /// We send media to this participant (false while it holds the call: sendonly/inactive from its side).
    pub send: bool,
    /// We accept media from this participant.
    pub recv: bool,
}

/// Room-wide settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MixerConfig {
    /// How many loudest speakers are mixed (top-N). Default 3.
    pub top_n: usize,
    /// Seed for every random choice (SSRCs, initial sequence numbers and timestamps).
    pub seed: u64,
    /// NTP timestamp (RFC 3550 64-bit format) corresponding to `now == Duration::ZERO`;
    /// used for RTCP SR so that no wall clock is read inside the mixer.
    pub ntp_origin: u64,
    /// Opus encoder complexity (0..=10). Default 5.
    pub opus_complexity: i32,
}

impl Default for MixerConfig {
    fn default() -> Self {
        Self { top_n: 3, seed: 0, ntp_origin: 0, opus_complexity: 5 }
    }
}

/// Something the driver must do after a call into the mixer.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Send this RTP packet to the participant's media address.
    Rtp {
        /// Destination participant.
        to: ParticipantId,
        /// Complete RTP packet.
        packet: Vec<u8>,
    },
    /// Send this RTCP compound packet to the participant's RTCP address.
    Rtcp {
        /// Destination participant.
        to: ParticipantId,
        /// Complete RTCP compound packet.
        packet: Vec<u8>,
    },
    /// Something happened that the application may surface (API, logs).
    Event(Event),
}

/// Events surfaced by the mixer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// The active (dominant) speaker changed.
    ActiveSpeakerChanged {
        /// New active speaker, `None` when the room fell silent.
        speaker: Option<ParticipantId>,
    },
    /// An RFC 4733 DTMF digit finished (reported once per event, on its end packet).
    Dtmf {
        /// Who pressed it.
        participant: ParticipantId,
        /// '0'-'9', '*', '#', 'A'-'D'.
        digit: char,
        /// Duration in ms.
        duration_ms: u32,
    },
    /// The first valid RTP packet from this participant arrived (carries its SSRC).
    MediaStarted {
        /// Who.
        participant: ParticipantId,
        /// The client's SSRC.
        ssrc: u32,
    },
}

/// Counters and gauges of one participant, for the admin API and metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ParticipantStats {
    /// Client's SSRC (latest seen), if any packet arrived.
    pub ssrc_in: Option<u32>,
    /// Our output stream SSRC towards this participant.
    pub ssrc_out: u32,
    /// Current audio level in dBov (0 = loudest, -127 = silence).
    pub level_dbov: f32,
    /// Whether the participant currently counts as speaking (after hysteresis).
    pub speaking: bool,
    /// Whether it is in the mixed top-N set.
    pub in_mix: bool,
    /// Valid RTP packets received.
    pub packets_in: u64,
    /// RTP packets sent to it.
    pub packets_out: u64,
    /// Octets of RTP payload sent to it.
    pub octets_out: u64,
    /// Packets lost on its incoming stream (RFC 3550 cumulative lost).
    pub lost: i64,
    /// RFC 3550 interarrival jitter of its incoming stream, in ms.
    pub jitter_ms: f64,
    /// Packets dropped as invalid (not RTP, wrong PT, garbage).
    pub dropped_invalid: u64,
    /// Packets dropped as duplicates or too late for playout.
    pub dropped_late: u64,
}

/// Errors of the mixer API.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The participant id is already in the room.
    DuplicateParticipant(ParticipantId),
    /// No such participant.
    UnknownParticipant(ParticipantId),
    /// The stream parameters cannot be served (e.g. ptime out of range).
    InvalidParams(String),
    /// The codec library failed to initialise.
    Codec(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}
impl std::error::Error for Error {}

/// The mixer of one room. Driver loop: feed `handle_rtp`/`handle_rtcp` as packets arrive,
/// call `handle_tick` every 20 ms (`now` = the tick instant), and after every call drain
/// `poll_output` until it returns `None`.
pub struct Mixer {
    _private: (),
}

/// Duration of one mixing tick.
pub const TICK: Duration = Duration::from_millis(20);

impl Mixer {
    /// New empty room mixer.
    pub fn new(config: MixerConfig) -> Self {
        let _ = config;
        todo!()
    }
    /// Add a participant; returns the SSRC of its output stream (drawn from the seed).
    pub fn add_participant(&mut self, id: ParticipantId, params: StreamParams, now: Duration) -> Result<u32, Error> {
        let _ = (id, params, now);
        todo!()
    }
    /// Change a participant's parameters (hold/resume, re-INVITE); its output stream keeps
    /// SSRC and continues sequence numbers and timestamps.
    pub fn update_participant(&mut self, id: ParticipantId, params: StreamParams, now: Duration) -> Result<(), Error> {
        let _ = (id, params, now);
        todo!()
    }
    /// Remove a participant; emits an RTCP BYE for its output stream.
    pub fn remove_participant(&mut self, id: ParticipantId, now: Duration) -> Result<(), Error> {
        let _ = (id, now);
        todo!()
    }
    /// An RTP packet (or garbage) arrived on the participant's RTP port at `now`.
    /// Invalid input is dropped and counted, never an error.
    pub fn handle_rtp(&mut self, id: ParticipantId, packet: &[u8], now: Duration) {
        let _ = (id, packet, now);
        todo!()
    }
    /// An RTCP packet (or garbage) arrived for the participant at `now`.
    pub fn handle_rtcp(&mut self, id: ParticipantId, packet: &[u8], now: Duration) {
        let _ = (id, packet, now);
        todo!()
    }
    /// Run one 20 ms mixing tick at `now`.
    pub fn handle_tick(&mut self, now: Duration) {
        let _ = now;
        todo!()
    }
    /// Next output, `None` when drained.
    pub fn poll_output(&mut self) -> Option<Output> {
        todo!()
    }
    /// Stats of one participant.
    pub fn stats(&self, id: ParticipantId) -> Option<ParticipantStats> {
        let _ = id;
        todo!()
    }
    /// Current active speaker.
    pub fn active_speaker(&self) -> Option<ParticipantId> {
        todo!()
    }
    /// Number of participants.
    pub fn len(&self) -> usize {
        todo!()
    }
    /// True when the room has no participants.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
