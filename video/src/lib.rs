//! Understudy's video core: a sans-IO, deterministic, voice-switched VP8 forwarder for one
//! conference room.
//!
//! Every participant receives ONE video stream (one SSRC for the whole call) that shows the
//! active speaker; the speaker sees the previous speaker. The [`Switcher`] forwards the
//! sources' RTP packets, rewriting SSRC, sequence number, timestamp and the VP8 payload
//! descriptor (picture ID, TL0PICIDX) so that a receiver sees one continuous, decodable
//! stream across switches; it asks sources for keyframes (FIR or PLI, rate-limited), answers
//! NACKs from a retransmission cache, passes the receivers' bandwidth estimates (REMB) back
//! to the sources, and exports the state a hot standby needs to continue every output stream
//! ([`snapshot`]).
//!
//! It is RTP-level only: it never decodes video, never touches a socket, never reads a
//! clock (time comes in with every call as `now`) and never uses an OS random source (SSRCs
//! and stream origins are drawn from [`SwitcherConfig::seed`]). Not for: SDP, SRTP,
//! choosing codecs, composing pictures (the grid compositor decodes and encodes; it uses
//! [`vp8::FrameAssembler`] and [`vp8::Packetizer`] from here).
//!
//! # Modules
//!
//! - [`vp8`]: the RFC 7741 payload descriptor (parse, keyframe detection, picture ID /
//!   TL0PICIDX rewriting), frame assembly and packetization.
//! - [`feedback`]: PLI, FIR, generic NACK and REMB, parsed from and built into RTCP.
//! - [`Switcher`] (module `switcher`): the room's state machine.
//! - [`snapshot`]: what crosses to the hot standby, and how it resumes.
//!
//! # Driver loop
//!
//! Feed datagrams as they arrive (`handle_rtp`, `handle_rtcp`), tell the switcher who the
//! audio mixer's dominant speaker is (`set_speaker`), run `handle_timeout` when
//! `poll_timeout` says, and after every call drain `poll_output`.
//!
//! ```
//! use std::time::Duration;
//! use video::vp8::Packetizer;
//! use video::{Output, Switcher, SwitcherConfig, VideoParams};
//!
//! let mut sw = Switcher::new(SwitcherConfig { seed: 42, ..Default::default() });
//! let params = VideoParams { payload_type: 96, ..Default::default() };
//! let now = Duration::ZERO;
//! sw.add_participant(1, params.clone(), now).unwrap();
//! let ssrc_to_2 = sw.add_participant(2, params, now).unwrap();
//!
//! // Participant 1 sends a keyframe (a VP8 frame tag with P = 0, start code, 16x16).
//! let frame = [0x50, 0x2A, 0x00, 0x9D, 0x01, 0x2A, 0x10, 0x00, 0x10, 0x00, 0x55];
//! let payloads = Packetizer::new(1200).unwrap().packetize(&frame, 0, true).unwrap();
//! let mut rtp = vec![0x80, 0x80 | 96, 0, 1, 0, 0, 0, 9, 0, 0, 0, 7];
//! rtp.extend_from_slice(&payloads[0]);
//!
//! let mut now = Duration::from_millis(5);
//! sw.handle_rtp(1, &rtp, now);
//! let mut forwarded = 0;
//! loop {
//!     while let Some(out) = sw.poll_output() {
//!         match out {
//!             Output::Rtp { to, packet } => {
//!                 // Send to `to`'s video RTP address: participant 2 sees participant 1.
//!                 assert_eq!((to, &packet[8..12]), (2, &ssrc_to_2.to_be_bytes()[..]));
//!                 forwarded += 1;
//!             }
//!             Output::Rtcp { to, packet } => { let _ = (to, packet); /* its RTCP address */ }
//!         }
//!     }
//!     // Sleep until the next timer (keyframe retry, REMB, sender report) or datagram.
//!     match sw.poll_timeout() {
//!         Some(at) if at < Duration::from_secs(3) => {
//!             now = now.max(at); // a deadline in the past: run it now
//!             sw.handle_timeout(now);
//!         }
//!         _ => break,
//!     }
//! }
//! assert_eq!(forwarded, 1);
//! assert_eq!(sw.stats(2).unwrap().packets_out, 1);
//! ```
#![deny(missing_docs)]

pub mod feedback;
mod rtp;
mod seed;
pub mod snapshot;
mod source;
mod switcher;
pub mod vp8;

pub use seed::{stream_origins, Origins};
pub use snapshot::{SwitcherSnapshot, SNAPSHOT_FORMAT};
pub use switcher::Switcher;

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Identifier of a participant, chosen by the driver, unique within the room (the same ids
/// as the audio mixer's).
pub type ParticipantId = u64;

/// A participant's negotiated video (one VP8 m-line).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoParams {
    /// VP8 payload type, used both ways.
    pub payload_type: u8,
    /// We send video to this participant: it is a receiver.
    pub send: bool,
    /// We accept video from this participant: it is a source.
    pub recv: bool,
    /// The SSRC the participant announced for its video (`a=ssrc`), if any. Lets keyframe
    /// requests reach it before its first packet; a packet with another SSRC still takes
    /// over (see [`Switcher::handle_rtp`]).
    pub source_ssrc: Option<u32>,
    /// The participant accepts FIR (`a=rtcp-fb:* ccm fir`); else keyframes are asked with PLI.
    pub fir: bool,
    /// The participant accepts generic NACK (`a=rtcp-fb:* nack`): lost packets a receiver
    /// asks for that never reached us are asked from it.
    pub nack: bool,
}

impl Default for VideoParams {
    fn default() -> Self {
        Self {
            payload_type: 96,
            send: true,
            recv: true,
            source_ssrc: None,
            fir: true,
            nack: true,
        }
    }
}

/// Room-wide settings (replicated with the snapshot).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitcherConfig {
    /// Seed of every random choice (SSRCs, sequence number, timestamp and picture ID
    /// origins): see [`stream_origins`].
    pub seed: u64,
    /// NTP timestamp (RFC 3550 64-bit format) of `now == Duration::ZERO`, for sender reports.
    pub ntp_origin: u64,
    /// Minimum interval between two keyframe requests to one source. Default 300 ms.
    pub keyframe_request_interval: Duration,
    /// A switch still waiting for the new source's keyframe this long after the request asks
    /// again. Default 500 ms (baresip, for one, now and then lets a PLI go and answers the
    /// next one).
    pub keyframe_retry: Duration,
    /// Interval between two REMB messages to one source. Default 1 s.
    pub remb_interval: Duration,
    /// A receiver's REMB older than this no longer counts. Default 5 s.
    pub remb_max_age: Duration,
    /// Interval between two sender reports on an output stream. Default 1 s.
    pub sr_interval: Duration,
    /// Packets kept per source for retransmission. Default 512.
    pub cache_packets: usize,
    /// Oldest packet answered from the cache. Default 1 s.
    pub cache_max_age: Duration,
    /// Takeover bound: a node sends one receiver at most `max_packet_burst` +
    /// `max_packet_rate` x elapsed seconds packets (see [`snapshot`]). Default 2000 / s.
    pub max_packet_rate: u32,
    /// See `max_packet_rate`. Default 500.
    pub max_packet_burst: u32,
    /// Takeover bound on frames (picture IDs) per second on one output stream. Default 120.
    pub max_frame_rate: u32,
}

impl Default for SwitcherConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            ntp_origin: 0,
            keyframe_request_interval: Duration::from_millis(300),
            keyframe_retry: Duration::from_millis(500),
            remb_interval: Duration::from_secs(1),
            remb_max_age: Duration::from_secs(5),
            sr_interval: Duration::from_secs(1),
            cache_packets: 512,
            cache_max_age: Duration::from_secs(1),
            max_packet_rate: 2000,
            max_packet_burst: 500,
            max_frame_rate: 120,
        }
    }
}

/// Something the driver must send after a call into the switcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send this RTP packet to the participant's video RTP address.
    Rtp {
        /// Destination participant.
        to: ParticipantId,
        /// Complete RTP packet.
        packet: Vec<u8>,
    },
    /// Send this RTCP packet to the participant's video RTCP address (keyframe requests,
    /// NACK and REMB to sources; sender reports to receivers).
    Rtcp {
        /// Destination participant.
        to: ParticipantId,
        /// Complete (compound) RTCP packet.
        packet: Vec<u8>,
    },
}

/// Counters and gauges of one participant, for the admin API and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantStats {
    /// SSRC of our output stream to it (also the sender SSRC of our feedback to it).
    pub ssrc_out: u32,
    /// The SSRC its video currently comes with, once known.
    pub ssrc_in: Option<u32>,
    /// The source it is shown now.
    pub showing: Option<ParticipantId>,
    /// The source it should be shown (differs from `showing` while a switch waits for a
    /// keyframe).
    pub target: Option<ParticipantId>,
    /// As a source: valid VP8 packets received.
    pub packets_in: u64,
    /// As a source: keyframes received (first packets of).
    pub keyframes_in: u64,
    /// As a source: packets dropped as garbage (not RTP, wrong payload type, no or
    /// truncated VP8 descriptor).
    pub dropped_invalid: u64,
    /// As a source: packets dropped as duplicates, too late, or from an SSRC or sequence
    /// jump not confirmed yet.
    pub dropped_late: u64,
    /// As a source: keyframe requests (FIR or PLI) sent to it.
    pub keyframe_requests_sent: u64,
    /// As a source: keyframe requests not sent at once because of the rate limit (a
    /// deferred one is sent at most once when the limit allows).
    pub keyframe_requests_suppressed: u64,
    /// As a source: REMB messages sent to it.
    pub remb_sent: u64,
    /// As a source: NACK messages sent to it.
    pub nacks_sent: u64,
    /// As a receiver: RTP packets sent to it (retransmissions included).
    pub packets_out: u64,
    /// As a receiver: octets of RTP payload sent to it.
    pub octets_out: u64,
    /// As a receiver: switches of its stream to another source (or the first one).
    pub switches: u64,
    /// As a receiver: PLIs and new FIRs received about its stream.
    pub keyframe_requests_in: u64,
    /// As a receiver: sequence numbers it NACKed.
    pub nacked: u64,
    /// As a receiver: NACKed packets retransmitted.
    pub nack_answered: u64,
    /// As a receiver: NACKed packets not in the cache (or over its retransmission budget).
    pub nack_missed: u64,
    /// RTCP datagrams from it that did not parse.
    pub rtcp_invalid: u64,
    /// Feedback messages from it about a stream that is not ours, or duplicate FIRs.
    pub rtcp_ignored: u64,
    /// As a receiver: its latest bandwidth estimate (REMB), bits per second.
    pub remb_bps: Option<u64>,
}

/// Room totals (sums over participants, plus room-level counters).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitcherStats {
    /// Participants in the room.
    pub participants: usize,
    /// RTP packets sent to receivers (retransmissions included).
    pub packets_out: u64,
    /// Switches of receivers' streams.
    pub switches: u64,
    /// Keyframe requests sent to sources.
    pub keyframe_requests_sent: u64,
    /// Keyframe requests held back by the rate limit.
    pub keyframe_requests_suppressed: u64,
    /// NACKed packets retransmitted.
    pub nack_answered: u64,
    /// NACKed packets not answered.
    pub nack_missed: u64,
    /// Garbage RTP dropped (including packets for unknown participants or non-sources).
    pub dropped_invalid: u64,
    /// Duplicates, late packets, unconfirmed SSRC or sequence jumps dropped.
    pub dropped_late: u64,
    /// RTCP datagrams that did not parse.
    pub rtcp_invalid: u64,
}

/// Errors of the switcher API.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The participant id is already in the room.
    DuplicateParticipant(ParticipantId),
    /// No such participant.
    UnknownParticipant(ParticipantId),
    /// The parameters cannot be served (e.g. payload type > 127).
    InvalidParams(String),
    /// The snapshot cannot be resumed (format, inconsistent content).
    Snapshot(String),
    /// A VP8 payload error.
    Vp8(vp8::Error),
    /// An RTCP feedback error.
    Feedback(feedback::Error),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::DuplicateParticipant(id) => write!(f, "participant {id} already present"),
            Error::UnknownParticipant(id) => write!(f, "no participant {id}"),
            Error::InvalidParams(why) => write!(f, "invalid video parameters: {why}"),
            Error::Snapshot(why) => write!(f, "unusable snapshot: {why}"),
            Error::Vp8(e) => write!(f, "{e}"),
            Error::Feedback(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<vp8::Error> for Error {
    fn from(e: vp8::Error) -> Self {
        Error::Vp8(e)
    }
}

impl From<feedback::Error> for Error {
    fn from(e: feedback::Error) -> Self {
        Error::Feedback(e)
    }
}
