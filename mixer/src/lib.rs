//! Understudy's media core: a sans-IO, deterministic audio mixer for one conference room.
//!
//! It owns per-participant jitter buffers, Opus/G.711 decoders and encoders, audio levels,
//! active-speaker detection, top-N mixing and every output RTP/RTCP stream. It never reads a
//! clock, never touches a socket and never uses an OS random source: time comes in with every
//! call (`now`), randomness from [`MixerConfig::seed`]. It is not a SIP stack, not a network
//! driver: the `mcu` binary feeds it packets and ticks and sends what [`Mixer::poll_output`] returns.
//!
//! # What it is for / not for
//!
//! For: turning the RTP each participant sends (Opus, PCMU, PCMA; 10..60 ms packets; RFC
//! 6464 levels; RFC 4733 DTMF) into one output RTP stream per participant carrying the mix
//! of the top-N loudest speakers minus the participant itself, plus RTCP SR/SDES/BYE.
//! Not for: sockets, SRTP/DTLS, SIP/SDP, video, or choosing codecs.
//!
//! # Determinism
//!
//! Two mixers built with the same [`MixerConfig`] and fed the same calls with the same `now`
//! values produce byte-identical outputs (on the same CPU: libopus and the FFT resampler
//! may pick different SIMD paths on different hardware, which changes audio bits, never
//! SSRC/seq/timestamps). Output sequence numbers and timestamps are pure functions of
//! replicated state, see [`stream`]; [`snapshot`] is how a hot standby holds that state
//! ([`Mixer::export_state`] when [`Mixer::state_version`] moves) and continues every stream
//! ([`Mixer::from_snapshot`]), proved in `tests/takeover.rs`.
//!
//! # One tick
//!
//! 1. Every participant's [`jitter`] buffer yields 20 ms (reorder, duplicates, loss with Opus
//!    FEC/PLC or G.711 repetition, adaptive 20..200 ms delay) into a 48 kHz FIFO, so any
//!    input packetization (10..60 ms) is consumed 960 samples at a time.
//! 2. Levels (RFC 6464 when the client sends it, else dBov of the decoded audio) drive a
//!    voice-activity detector with attack and hangover, the top-N choice (current members
//!    keep their seat unless a newcomer is 6 dB louder) and the dominant speaker (must lead
//!    for 400 ms; a click does not switch it). A participant the operator muted
//!    ([`Mixer::set_muted`]) is measured like the others but never mixed nor dominant.
//! 3. The top-N frames are summed. A mixed speaker receives the sum minus itself; every other
//!    participant with the same (codec, ptime) receives one shared encode of the sum (encode
//!    once, send many; only the RTP header differs).
//! 4. Periodic RTCP (SR + report block + SDES CNAME, every 5 s on a per-participant schedule
//!    drawn from the seed) and BYE on removal.
//!
//! # Cost
//!
//! Work is spent only where it is heard. A participant that is not mixed (nor muted: a muted
//! participant's level is always decoded, the operator sees it) and whose RFC 6464
//! level says quiet is not decoded (its silence is a counter, not samples); G.711 without
//! levels is measured straight from the payload table and decoded only when not quiet;
//! Opus without levels is decoded only when not mixed if the SILK voice-activity flag its
//! encoder wrote says voiced ([`opus_silk_vad`]; so a steady tone from an unmixed client is
//! ignored like the encoder ignores it); Opus packets of at most 2 bytes (DTX) are never
//! decoded. When the listener mix is a single
//! voice (or a speaker's mix-minus-self is), 20 ms Opus receivers get that participant's own
//! packet forwarded instead of a decode/re-encode. Encoding digital silence uses a cached
//! Opus frame. Measured with `cargo bench -p mixer --bench tick` (see `benches/RESULTS.md`).
//!
//! # Driver loop
//!
//! ```
//! use mixer::{Codec, Mixer, MixerConfig, Output, StreamParams, TICK};
//! use std::time::Duration;
//!
//! let mut mixer = Mixer::new(MixerConfig { seed: 42, ..Default::default() });
//! let params = StreamParams {
//!     codec: Codec::Pcmu,
//!     payload_type: 0,
//!     telephone_event_pt: Some(101),
//!     ptime_ms: 20,
//!     audio_level_ext_id: None,
//!     send: true,
//!     recv: true,
//! };
//! mixer.add_participant(1, params.clone(), Duration::ZERO).unwrap();
//! mixer.add_participant(2, params, Duration::ZERO).unwrap();
//!
//! // The driver owns the clock: `now` is time since an origin it chose.
//! let mut now = Duration::ZERO;
//! for seq in 0..50u16 {
//!     // A datagram arrived on participant 1's RTP port (here: a 20 ms PCMU packet).
//!     let mut rtp = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
//!     rtp[2..4].copy_from_slice(&seq.to_be_bytes());
//!     rtp[4..8].copy_from_slice(&(seq as u32 * 160).to_be_bytes());
//!     rtp.extend(std::iter::repeat_n(0xFFu8, 160));
//!     mixer.handle_rtp(1, &rtp, now);
//!     // Every 20 ms: one tick, then drain the outputs.
//!     mixer.handle_tick(now);
//!     while let Some(out) = mixer.poll_output() {
//!         match out {
//!             Output::Rtp { to, packet } => { let _ = (to, packet); /* send to its RTP address */ }
//!             Output::Rtcp { to, packet } => { let _ = (to, packet); /* send to its RTCP address */ }
//!             Output::Event(e) => { let _ = e; /* log, API */ }
//!         }
//!     }
//!     now += TICK;
//! }
//! assert_eq!(mixer.stats(2).unwrap().packets_out, 50);
//! ```
#![deny(missing_docs)]

mod codec;
mod dtmf;
pub mod g711;
pub mod jitter;
mod recv_stats;
mod rtcp;
/// Interval between our RTCP reports to each participant.
pub use rtcp::INTERVAL as RTCP_INTERVAL;
mod seed;
pub mod snapshot;
mod speaker;
pub mod stream;
mod timeline;

use codec::{InputDecoder, OutputEncoder, TICK_SAMPLES};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

pub use codec::{level_dbov, pooled_g711, prewarm_g711};

/// SILK voice-activity flag the sender's encoder put in an Opus payload, read without
/// decoding: `Some(true)` voiced, `Some(false)` unvoiced, `None` when the packet carries no
/// flag (CELT-only mode, empty/DTX frame, invalid packet). In SILK-only and hybrid packets the
/// flag is the first range-coded symbol (probability 1/2, RFC 6716 section 4.2.3), which the
/// range decoder reads as 1 exactly when the frame's first byte has its top bit set.
pub fn opus_silk_vad(payload: &[u8]) -> Option<bool> {
    InputDecoder::opus_silk_vad(payload)
}
pub use seed::stream_origins;
use seed::{draw, splitmix64};
pub use snapshot::{MixerSnapshot, ParticipantSnapshot, SNAPSHOT_FORMAT};
pub use speaker::{DOMINANT_LEAD_TICKS, SPEECH_THRESHOLD_DBOV};
pub use timeline::tick_index;
use timeline::{completed_packets, gather, new_ring, packet_samples, ticks_of, RING};

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
        Self {
            top_n: 3,
            seed: 0,
            ntp_origin: 0,
            opus_complexity: 5,
        }
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
    /// RTCP packets from the client that did not parse.
    pub rtcp_invalid: u64,
    /// Round-trip time from the client's report blocks about our stream, in ms.
    pub rtt_ms: Option<f64>,
    /// Fraction of our packets the client reports lost (0.0..1.0), from its last report block.
    pub remote_fraction_lost: Option<f32>,
    /// Frames concealed (PLC, FEC or G.711 repetition) on the incoming stream.
    pub concealed_frames: u64,
    /// Lost frames recovered from Opus in-band FEC.
    pub fec_recovered: u64,
    /// Current jitter-buffer target delay, in ms.
    pub jitter_target_ms: u32,
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

/// Duration of one mixing tick.
pub const TICK: Duration = Duration::from_millis(20);

fn codec_key(c: Codec) -> u8 {
    match c {
        Codec::Opus => 0,
        Codec::Pcmu => 1,
        Codec::Pcma => 2,
    }
}

fn validate(params: &StreamParams) -> Result<(), Error> {
    if !(10..=60).contains(&params.ptime_ms) || !params.ptime_ms.is_multiple_of(10) {
        return Err(Error::InvalidParams(format!(
            "ptime {} ms not in 10..=60 step 10",
            params.ptime_ms
        )));
    }
    if params.payload_type > 127 || params.telephone_event_pt.is_some_and(|p| p > 127) {
        return Err(Error::InvalidParams("payload type > 127".into()));
    }
    if params
        .audio_level_ext_id
        .is_some_and(|i| !(1..=14).contains(&i))
    {
        return Err(Error::InvalidParams(
            "audio level extension id not in 1..=14".into(),
        ));
    }
    Ok(())
}

/// Receive side of one participant (client -> mixer).
struct Inbound {
    ssrc: u32,
    stats: recv_stats::RecvStats,
    /// SSRC seen once, waiting for a consecutive second packet before switching.
    probation: Option<(u32, u16)>,
}

struct Participant {
    params: StreamParams,
    stream: stream::OutStream,
    inbound: Option<Inbound>,
    jb: jitter::JitterBuffer,
    dec: InputDecoder,
    vad: speaker::Vad,
    dtmf: dtmf::DtmfReceiver,
    /// Loudest RFC 6464 level received since the last tick, and when an extension was last seen.
    ext_level: Option<f32>,
    ext_seen: Option<Duration>,
    /// Last RFC 6464 level and for how many more ticks it stands in for a missing one.
    ext_hold: (f32, u8),
    level: f32,
    /// Duration of the client's last audio packet, in ms (drives the jitter-buffer target).
    in_frame_ms: u32,
    frame: Vec<i16>,
    in_mix: bool,
    /// Muted by the operator ([`Mixer::set_muted`]): still heard from and measured, never
    /// mixed nor the active speaker.
    muted: bool,
    own_enc: Option<OutputEncoder>,
    /// This tick's input packet when the frame is exactly its decoded 20 ms of Opus.
    pass: Option<Vec<u8>>,
    /// Mix-minus-self of the last ticks this participant was mixed (tick, samples).
    own_ring: Vec<(u64, Vec<i16>)>,
    next_rtcp: Duration,
    stats: ParticipantStats,
}

impl Participant {
    fn uses_ext(&self, now: Duration) -> bool {
        self.params.audio_level_ext_id.is_some()
            && self
                .ext_seen
                .is_some_and(|t| now.saturating_sub(t) < Duration::from_secs(1))
    }
}

/// The mixer of one room. Driver loop: feed `handle_rtp`/`handle_rtcp` as packets arrive,
/// call `handle_tick` every 20 ms (`now` = the tick instant), and after every call drain
/// `poll_output` until it returns `None`.
///
/// Method families: configuration (`new`, `add_participant`, `update_participant`,
/// `set_muted`, `remove_participant`), inputs (`handle_rtp`, `handle_rtcp`, `handle_tick`), output
/// (`poll_output`), getters (`stats`, `active_speaker`, `len`, `output_stream`,
/// `forwarded_ticks`), hot-standby takeover (`state_version`, `export_state`,
/// `from_snapshot`, see [`snapshot`]). `Mixer` is `Send` (one task per room).
pub struct Mixer {
    config: MixerConfig,
    cname: String,
    participants: BTreeMap<ParticipantId, Participant>,
    /// Shared listener encoders keyed by (codec, ptime).
    groups: BTreeMap<(u8, u32), OutputEncoder>,
    /// Last six ticks of the full mix (tick index, samples), enough for a 60 ms packet.
    ring: Vec<(u64, Vec<i16>)>,
    last_tick: Option<u64>,
    dominant: speaker::Dominant,
    mix_set: Vec<ParticipantId>,
    outputs: VecDeque<Output>,
    mix_acc: Vec<i32>,
    scratch: Vec<i16>,
    forwarded: u64,
    /// Bumped whenever replicated state changes in a way the tick index does not predict.
    state_version: u64,
    /// Instant of the last tick (its phase relative to the 20 ms grid is replicated).
    last_tick_at: Option<Duration>,
}

impl Mixer {
    /// New empty room mixer.
    pub fn new(config: MixerConfig) -> Self {
        let cname = format!("understudy-{:016x}", splitmix64(config.seed));
        Self {
            config,
            cname,
            participants: BTreeMap::new(),
            groups: BTreeMap::new(),
            ring: new_ring(),
            last_tick: None,
            dominant: speaker::Dominant::default(),
            mix_set: Vec::new(),
            outputs: VecDeque::new(),
            mix_acc: vec![0; TICK_SAMPLES],
            scratch: Vec::new(),
            forwarded: 0,
            state_version: 0,
            last_tick_at: None,
        }
    }

    /// Add a participant; returns the SSRC of its output stream (drawn from the seed).
    pub fn add_participant(
        &mut self,
        id: ParticipantId,
        params: StreamParams,
        now: Duration,
    ) -> Result<u32, Error> {
        if self.participants.contains_key(&id) {
            return Err(Error::DuplicateParticipant(id));
        }
        validate(&params)?;
        let (ssrc, seq0, ts0) = stream_origins(self.config.seed, id);
        let rate = codec::clock_rate(params.codec);
        let rtcp_offset = Duration::from_millis(500 + draw(self.config.seed, id, 4) % 4500);
        let p = Participant {
            stream: stream::OutStream::new(ssrc, seq0, ts0, tick_index(now), rate),
            inbound: None,
            jb: jitter::JitterBuffer::new(rate),
            dec: InputDecoder::new(params.codec)?,
            vad: speaker::Vad::default(),
            dtmf: dtmf::DtmfReceiver::default(),
            ext_level: None,
            ext_seen: None,
            ext_hold: (-127.0, 0),
            level: -127.0,
            in_frame_ms: 20,
            frame: vec![0; TICK_SAMPLES],
            in_mix: false,
            muted: false,
            own_enc: None,
            own_ring: new_ring(),
            pass: None,
            next_rtcp: now + rtcp_offset,
            stats: ParticipantStats {
                ssrc_out: ssrc,
                level_dbov: -127.0,
                ..Default::default()
            },
            params,
        };
        self.participants.insert(id, p);
        self.state_version += 1;
        Ok(ssrc)
    }

    /// Change a participant's parameters (hold/resume, re-INVITE); its output stream keeps
    /// SSRC and continues sequence numbers and timestamps.
    pub fn update_participant(
        &mut self,
        id: ParticipantId,
        params: StreamParams,
        now: Duration,
    ) -> Result<(), Error> {
        validate(&params)?;
        let p = self
            .participants
            .get_mut(&id)
            .ok_or(Error::UnknownParticipant(id))?;
        let old = std::mem::replace(&mut p.params, params.clone());
        self.state_version += 1;
        if old.codec != params.codec {
            let rate = codec::clock_rate(params.codec);
            p.dec = InputDecoder::new(params.codec)?;
            p.jb = jitter::JitterBuffer::new(rate);
            p.inbound = None;
            p.own_enc = None;
            p.stream.rebase(tick_index(now), rate);
            p.stream.marker_next = true;
        }
        if !old.send && params.send {
            p.stream.marker_next = true;
        }
        if old.recv && !params.recv {
            p.jb.reset();
            p.vad = speaker::Vad::default();
            p.ext_level = None;
        }
        Ok(())
    }

    /// Mute or unmute a participant (an operator's decision). A muted participant still
    /// receives the room's mix and its level is still measured ([`ParticipantStats`]), but
    /// it is never in the mix set nor the active speaker: it leaves the mix at once (the next
    /// tick's packets no longer carry it) and, if it was the active speaker, the room has
    /// none until another participant leads (an [`Event::ActiveSpeakerChanged`] to `None`).
    /// Unmuted, it competes for the mix again from the next tick. Muting twice is a no-op.
    pub fn set_muted(&mut self, id: ParticipantId, muted: bool) -> Result<(), Error> {
        let p = self
            .participants
            .get_mut(&id)
            .ok_or(Error::UnknownParticipant(id))?;
        if p.muted == muted {
            return Ok(());
        }
        p.muted = muted;
        self.state_version += 1;
        if muted {
            p.in_mix = false;
            p.stats.in_mix = false;
            self.mix_set.retain(|&m| m != id);
            if self.dominant.remove(id) {
                self.outputs
                    .push_back(Output::Event(Event::ActiveSpeakerChanged { speaker: None }));
            }
        }
        Ok(())
    }

    /// Whether participant `id` is muted (`None`: no such participant).
    pub fn is_muted(&self, id: ParticipantId) -> Option<bool> {
        self.participants.get(&id).map(|p| p.muted)
    }

    /// Remove a participant; emits an RTCP BYE for its output stream.
    pub fn remove_participant(&mut self, id: ParticipantId, now: Duration) -> Result<(), Error> {
        let mut p = self
            .participants
            .remove(&id)
            .ok_or(Error::UnknownParticipant(id))?;
        self.state_version += 1;
        let client = p.inbound.as_mut().map(|i| (i.ssrc, &mut i.stats));
        let packet = rtcp::report(
            &p.stream,
            p.params.send,
            client,
            self.config.ntp_origin,
            &self.cname,
            now,
            true,
        );
        self.outputs.push_back(Output::Rtcp { to: id, packet });
        self.mix_set.retain(|&m| m != id);
        if self.dominant.remove(id) {
            self.outputs
                .push_back(Output::Event(Event::ActiveSpeakerChanged { speaker: None }));
        }
        Ok(())
    }

    /// An RTP packet (or garbage) arrived on the participant's RTP port at `now`.
    /// Invalid input is dropped and counted, never an error.
    pub fn handle_rtp(&mut self, id: ParticipantId, packet: &[u8], now: Duration) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        if !p.params.recv {
            return;
        }
        if packet.len() < 12 || packet[0] >> 6 != 2 {
            p.stats.dropped_invalid += 1;
            return;
        }
        let mut buf = packet;
        let Ok(rtp) =
            <rtc_rtp::packet::Packet as rtc_shared::marshal::Unmarshal>::unmarshal(&mut buf)
        else {
            p.stats.dropped_invalid += 1;
            return;
        };
        let h = &rtp.header;
        let is_dtmf = p.params.telephone_event_pt == Some(h.payload_type);
        if (!is_dtmf && h.payload_type != p.params.payload_type) || rtp.payload.is_empty() {
            p.stats.dropped_invalid += 1;
            return;
        }
        let rate = codec::clock_rate(p.params.codec);
        // Duration of an audio payload, validated before anything is updated.
        let dur = if is_dtmf {
            0
        } else {
            match p.params.codec {
                Codec::Opus => match InputDecoder::opus_duration(&rtp.payload) {
                    Some(d) => d,
                    None => {
                        p.stats.dropped_invalid += 1;
                        return;
                    }
                },
                Codec::Pcmu | Codec::Pcma => {
                    if rtp.payload.len() > 1920 {
                        p.stats.dropped_invalid += 1;
                        return;
                    }
                    rtp.payload.len() as u32
                }
            }
        };
        // SSRC handling with probation: a new SSRC takes over after two consecutive packets.
        match &mut p.inbound {
            Some(inb) if inb.ssrc == h.ssrc => {}
            Some(inb) => {
                let consecutive = inb
                    .probation
                    .is_some_and(|(s, q)| s == h.ssrc && q.wrapping_add(1) == h.sequence_number);
                if !consecutive {
                    inb.probation = Some((h.ssrc, h.sequence_number));
                    p.stats.dropped_invalid += 1;
                    return;
                }
                p.inbound = None;
            }
            None => {}
        }
        if p.inbound.is_none() {
            p.inbound = Some(Inbound {
                ssrc: h.ssrc,
                stats: recv_stats::RecvStats::new(rate, h.sequence_number, h.timestamp),
                probation: None,
            });
            p.jb.reset();
            p.stats.ssrc_in = Some(h.ssrc);
            self.outputs.push_back(Output::Event(Event::MediaStarted {
                participant: id,
                ssrc: h.ssrc,
            }));
        }
        let Some(inb) = p.inbound.as_mut() else {
            return;
        };
        let (ext_seq, ext_ts) = inb.stats.on_packet(h.sequence_number, h.timestamp, now);
        p.stats.packets_in += 1;
        p.stats.lost = inb.stats.cumulative_lost();
        p.stats.jitter_ms = inb.stats.jitter_ms();
        if is_dtmf {
            match p.dtmf.on_payload(h.timestamp, &rtp.payload) {
                Ok(Some(d)) => self.outputs.push_back(Output::Event(Event::Dtmf {
                    participant: id,
                    digit: d.digit,
                    duration_ms: (d.duration as u64 * 1000 / rate as u64) as u32,
                })),
                Ok(None) => {}
                Err(()) => p.stats.dropped_invalid += 1,
            }
            return;
        }
        if let Some(ext_id) = p.params.audio_level_ext_id {
            if let Some(v) = h.get_extension(ext_id) {
                if let Some(&b) = v.first() {
                    let lvl = -((b & 0x7F) as f32);
                    p.ext_level = Some(p.ext_level.map_or(lvl, |l: f32| l.max(lvl)));
                    p.ext_seen = Some(now);
                }
            }
        }
        p.in_frame_ms = (dur * 1000 / rate).clamp(10, 120);
        match p.jb.insert(ext_seq, ext_ts, dur, &rtp.payload) {
            jitter::Insert::Stored => {}
            jitter::Insert::Duplicate | jitter::Insert::Late => p.stats.dropped_late += 1,
        }
    }

    /// An RTCP packet (or garbage) arrived for the participant at `now`.
    pub fn handle_rtcp(&mut self, id: ParticipantId, packet: &[u8], now: Duration) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        match rtcp::parse(packet, p.stream.ssrc, self.config.ntp_origin, now) {
            None => p.stats.rtcp_invalid += 1,
            Some(inc) => {
                if let (Some(ntp), Some(inb)) = (inc.sr_ntp, p.inbound.as_mut()) {
                    inb.stats.on_sender_report(ntp, now);
                }
                if let Some(rtt) = inc.rtt {
                    p.stats.rtt_ms = Some(rtt.as_secs_f64() * 1000.0);
                }
                if let Some(f) = inc.fraction_lost {
                    p.stats.remote_fraction_lost = Some(f as f32 / 256.0);
                }
            }
        }
    }

    /// Run one 20 ms mixing tick at `now`.
    pub fn handle_tick(&mut self, now: Duration) {
        let mut tick = tick_index(now);
        if let Some(last) = self.last_tick {
            tick = tick.max(last + 1);
        }
        // The first tick and a skipped tick (the driver stalled for more than 30 ms) are
        // not predictable from the tick index: a standby needs a fresh snapshot.
        if self.last_tick.is_none_or(|last| tick != last + 1) {
            self.state_version += 1;
        }
        self.last_tick = Some(tick);
        self.last_tick_at = Some(now);
        self.pull_inputs(now);
        self.select_speakers();
        self.mix_and_send(tick);
        self.send_rtcp(now);
    }

    /// Step 1: every participant's jitter buffer yields 20 ms; decode only what is needed.
    fn pull_inputs(&mut self, now: Duration) {
        let skip_below = SPEECH_THRESHOLD_DBOV - 10.0;
        for p in self.participants.values_mut() {
            if !p.params.recv {
                p.level = -127.0;
                p.pass = None;
                p.frame.fill(0);
                p.vad.update(-127.0);
                continue;
            }
            let uses_ext = p.uses_ext(now);
            // Loudest RFC 6464 level that arrived since the last tick; a tick without a
            // packet (jitter) keeps the previous value for up to 60 ms.
            let ext_level = match p.ext_level.take() {
                Some(l) => {
                    p.ext_hold = (l, 3);
                    Some(l)
                }
                None if p.ext_hold.1 > 0 => {
                    p.ext_hold.1 -= 1;
                    Some(p.ext_hold.0)
                }
                None => None,
            };
            let is_opus = p.params.codec == Codec::Opus;
            // Decode only what can be heard or must be measured: mixed participants, muted
            // ones (their level is shown to the operator, whatever their encoder's VAD
            // says), RFC 6464 levels that are not quiet, and Opus without levels (G.711
            // without levels is measured from the payload with a table, and decoded only
            // when not quiet).
            let measured = p.in_mix || p.muted;
            let need = measured
                || (uses_ext && ext_level.is_some_and(|l| l > skip_below))
                || (!uses_ext && is_opus);
            let mut cheap_level: Option<f32> = None;
            let mut decoded = false;
            // This tick's frame is exactly one decoded 20 ms Opus packet (candidate for
            // forwarding when it is the only voice in the mix).
            let aligned = p.dec.buffered() == 0;
            let mut pulls = 0;
            p.pass = None;
            let mut guard = 0;
            while p.dec.buffered() < TICK_SAMPLES && guard < 16 {
                guard += 1;
                pulls += 1;
                match p.jb.pull() {
                    jitter::Pull::NotReady => p.dec.pad_to(TICK_SAMPLES),
                    jitter::Pull::Underrun | jitter::Pull::Stretch => {
                        if need {
                            p.dec.conceal_to(TICK_SAMPLES);
                            p.stats.concealed_frames += 1;
                        } else {
                            p.dec.pad_to(TICK_SAMPLES);
                        }
                    }
                    jitter::Pull::Packet { payload, dur } => {
                        let g711_level = (!need && !uses_ext && !is_opus).then(|| {
                            g711::payload_level_dbov(&payload, p.params.codec == Codec::Pcma)
                        });
                        if let Some(l) = g711_level {
                            cheap_level = Some(cheap_level.map_or(l, |c: f32| c.max(l)));
                        }
                        // Opus packets of <= 2 bytes are DTX / silence, and an unmixed client
                        // without levels whose own encoder flagged the frame unvoiced (SILK
                        // VAD bit) is not decoded either.
                        let loud = g711_level.is_some_and(|l| l > skip_below);
                        let unvoiced = is_opus
                            && (payload.len() <= 2
                                || (!measured
                                    && !uses_ext
                                    && InputDecoder::opus_silk_vad(&payload) == Some(false)));
                        if (need && !unvoiced) || loud {
                            p.dec.decode(&payload, dur);
                            decoded = true;
                            if is_opus && aligned && dur as usize == TICK_SAMPLES {
                                p.pass = Some(payload);
                            }
                        } else {
                            p.dec.push_silence(dur);
                        }
                    }
                    jitter::Pull::Lost { dur, fec } => {
                        if need {
                            if fec.is_some() && is_opus {
                                p.stats.fec_recovered += 1;
                            }
                            p.dec
                                .conceal(dur, if is_opus { fec.as_deref() } else { None });
                            p.stats.concealed_frames += 1;
                            decoded = true;
                        } else {
                            p.dec.push_silence(dur);
                        }
                    }
                    jitter::Pull::Silence { dur } => p.dec.push_silence(dur),
                }
            }
            if p.jb.end_tick() {
                p.stats.dropped_late += 1;
            }
            if let Some(inb) = &p.inbound {
                p.jb.set_jitter(inb.stats.jitter_ms(), p.in_frame_ms);
            }
            if pulls != 1 || p.dec.buffered() != TICK_SAMPLES {
                p.pass = None;
            }
            let real = p.dec.take(&mut p.frame);
            p.level = if uses_ext {
                ext_level.unwrap_or(-127.0)
            } else if let (Some(l), false) = (cheap_level, decoded) {
                l
            } else if real > 0 {
                level_dbov(&p.frame)
            } else {
                -127.0
            };
            p.vad.update(p.level);
            p.stats.level_dbov = p.level;
            p.stats.speaking = p.vad.speaking();
            p.stats.jitter_target_ms = p.jb.target_ms();
        }
    }

    /// Step 2: top-N and dominant speaker.
    fn select_speakers(&mut self) {
        let cands: Vec<(ParticipantId, f32, bool, bool)> = self
            .participants
            .iter()
            .map(|(&id, p)| {
                (
                    id,
                    p.vad.smoothed(),
                    // A muted participant never competes for the mix nor for the floor.
                    p.vad.speaking() && p.params.recv && !p.muted,
                    p.in_mix,
                )
            })
            .collect();
        let set = speaker::select_top_n(&cands, self.config.top_n);
        for (&id, p) in self.participants.iter_mut() {
            p.in_mix = set.binary_search(&id).is_ok();
            p.stats.in_mix = p.in_mix;
        }
        if set != self.mix_set {
            self.state_version += 1;
        }
        self.mix_set = set;
        let dcands: Vec<(ParticipantId, f32, bool)> =
            cands.iter().map(|c| (c.0, c.1, c.2)).collect();
        if let Some(change) = self.dominant.update(&dcands) {
            self.state_version += 1;
            self.outputs
                .push_back(Output::Event(Event::ActiveSpeakerChanged {
                    speaker: change,
                }));
        }
    }

    /// Step 3: mix, encode (once per listener group, once per mixed speaker) and packetize.
    fn mix_and_send(&mut self, tick: u64) {
        self.mix_acc.fill(0);
        for id in &self.mix_set {
            if let Some(p) = self.participants.get(id) {
                for (a, &s) in self.mix_acc.iter_mut().zip(&p.frame) {
                    *a += s as i32;
                }
            }
        }
        let slot = (tick % RING as u64) as usize;
        self.ring[slot].0 = tick;
        for (o, &a) in self.ring[slot].1.iter_mut().zip(&self.mix_acc) {
            *o = a.clamp(-32768, 32767) as i16;
        }
        let mut group_payloads: BTreeMap<(u8, u32, u64), Vec<u8>> = BTreeMap::new();
        // A lone voice in a mix is forwarded to 20 ms Opus receivers as it arrived (after
        // the jitter buffer) instead of being decoded and re-encoded: the listener mix when
        // one participant is mixed, and a mixed speaker's mix-minus-self when exactly one
        // other participant is mixed.
        let passes: Vec<(ParticipantId, Vec<u8>)> = self
            .mix_set
            .iter()
            .filter_map(|id| Some((*id, self.participants.get(id)?.pass.clone()?)))
            .collect();
        if let ([solo], [(pid, pl)]) = (&self.mix_set[..], &passes[..]) {
            if solo == pid {
                group_payloads.insert((codec_key(Codec::Opus), 20, tick), pl.clone());
                self.forwarded += 1;
            }
        }
        let tick_span = tick * TICK_SAMPLES as u64..(tick + 1) * TICK_SAMPLES as u64;
        let complexity = self.config.opus_complexity;
        for (&id, p) in self.participants.iter_mut() {
            if !p.params.send {
                continue;
            }
            // Mix-minus-self of a mixed speaker for this tick.
            if p.in_mix {
                let own = &mut p.own_ring[slot];
                own.0 = tick;
                for ((o, &a), &s) in own.1.iter_mut().zip(&self.mix_acc).zip(&p.frame) {
                    *o = (a - s as i32).clamp(-32768, 32767) as i16;
                }
            }
            let ptime = p.params.ptime_ms;
            for k in completed_packets(ptime, tick) {
                let full = packet_samples(ptime, k);
                // After a ptime change mid-packet only what was not sent yet is sent.
                let Some(span) = p.stream.span_to_send(full.clone()) else {
                    continue;
                };
                let personal = span != full
                    || ticks_of(&span).any(|t| p.own_ring[(t % RING as u64) as usize].0 == t);
                let lone_other = if personal
                    && p.in_mix
                    && p.params.codec == Codec::Opus
                    && span == tick_span
                    && self.mix_set.len() == 2
                {
                    let other = self.mix_set.iter().find(|&&m| m != id);
                    passes.iter().find(|(pid, _)| Some(pid) == other)
                } else {
                    None
                };
                let payload: std::borrow::Cow<'_, [u8]> = if let Some((_, pl)) = lone_other {
                    pl.as_slice().into()
                } else if personal {
                    if p.own_enc.is_none() {
                        match OutputEncoder::new(p.params.codec, complexity) {
                            Ok(e) => p.own_enc = Some(e),
                            Err(_) => continue,
                        }
                    }
                    let Some(enc) = p.own_enc.as_mut() else {
                        continue;
                    };
                    gather(&mut self.scratch, &span, |t| {
                        let own = &p.own_ring[(t % RING as u64) as usize];
                        if own.0 == t {
                            Some(&own.1[..])
                        } else {
                            let s = &self.ring[(t % RING as u64) as usize];
                            (s.0 == t).then_some(&s.1[..])
                        }
                    });
                    enc.encode(&self.scratch).into()
                } else {
                    let key = (codec_key(p.params.codec), ptime, k);
                    let pl = match group_payloads.entry(key) {
                        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::btree_map::Entry::Vacant(slot) => {
                            let enc = match self.groups.entry((key.0, key.1)) {
                                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                                std::collections::btree_map::Entry::Vacant(v) => {
                                    match OutputEncoder::new(p.params.codec, complexity) {
                                        Ok(e) => v.insert(e),
                                        Err(_) => continue,
                                    }
                                }
                            };
                            let ring = &self.ring;
                            gather(&mut self.scratch, &span, |t| {
                                let s = &ring[(t % RING as u64) as usize];
                                (s.0 == t).then_some(&s.1[..])
                            });
                            slot.insert(enc.encode(&self.scratch))
                        }
                    };
                    pl.as_slice().into()
                };
                let packet = p.stream.packet(p.params.payload_type, span, &payload);
                p.stats.packets_out += 1;
                p.stats.octets_out += payload.len() as u64;
                self.outputs.push_back(Output::Rtp { to: id, packet });
            }
        }
    }

    /// Step 4: periodic RTCP reports (deterministic schedule: first 0.5..5 s after join, then every 5 s).
    fn send_rtcp(&mut self, now: Duration) {
        for (&id, p) in self.participants.iter_mut() {
            if now < p.next_rtcp {
                continue;
            }
            while p.next_rtcp <= now {
                p.next_rtcp += rtcp::INTERVAL;
            }
            let client = p.inbound.as_mut().map(|i| (i.ssrc, &mut i.stats));
            let packet = rtcp::report(
                &p.stream,
                p.params.send,
                client,
                self.config.ntp_origin,
                &self.cname,
                now,
                false,
            );
            self.outputs.push_back(Output::Rtcp { to: id, packet });
        }
    }

    /// Next output, `None` when drained.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Stats of one participant.
    pub fn stats(&self, id: ParticipantId) -> Option<ParticipantStats> {
        let p = self.participants.get(&id)?;
        let mut s = p.stats.clone();
        s.ssrc_out = p.stream.ssrc;
        Some(s)
    }

    /// Ticks at which the listener mix was a lone speaker's packet forwarded unchanged
    /// (no decode/encode generation loss, no encoder cost).
    pub fn forwarded_ticks(&self) -> u64 {
        self.forwarded
    }

    /// State of the output stream towards `id`: everything its sequence numbers and
    /// timestamps are a function of (see [`stream`]); what a hot standby must replicate.
    pub fn output_stream(&self, id: ParticipantId) -> Option<&stream::OutStream> {
        self.participants.get(&id).map(|p| &p.stream)
    }

    /// Current active speaker.
    pub fn active_speaker(&self) -> Option<ParticipantId> {
        self.dominant.current()
    }

    /// Ids of the participants, in order.
    pub fn participant_ids(&self) -> Vec<ParticipantId> {
        self.participants.keys().copied().collect()
    }

    /// Number of participants.
    pub fn len(&self) -> usize {
        self.participants.len()
    }

    /// True when the room has no participants.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The driver moves a room's mixer into its own task/thread.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<Mixer>();
};
