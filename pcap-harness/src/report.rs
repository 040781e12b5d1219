//! The analysis report: plain data, `Serialize + Deserialize`, the JSON schema of
//! `mcu pcap analyze --json` (see the crate docs for field meanings).

use serde::{Deserialize, Serialize};

pub use crate::rtp::ReportBlock;

/// Version of the JSON schema; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// Floor used for silent windows in `energy_dbfs` (digital silence would be -inf).
pub const SILENCE_DBFS: f64 = -120.0;

/// Length of one `energy_dbfs` window in milliseconds.
pub const ENERGY_WINDOW_MS: u32 = 100;

/// Everything found in one capture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// JSON schema version ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// Path of the analyzed file, when read from a file.
    pub file: Option<String>,
    /// `"pcap"` or `"pcapng"`.
    pub format: String,
    /// Frames in the capture.
    pub frames: u64,
    /// Frames that carried a UDP datagram.
    pub udp_datagrams: u64,
    /// Frames skipped because they were IP fragments (not reassembled).
    pub ip_fragments: u64,
    /// Frames skipped because their headers were malformed or cut short by the snap length.
    pub malformed_frames: u64,
    /// UDP datagrams whose payload the snap length cut short (RTP headers still analyzed).
    pub truncated_datagrams: u64,
    /// Time of the first frame (seconds since the Unix epoch), if any.
    pub first_time: Option<f64>,
    /// Time of the last frame (seconds since the Unix epoch), if any.
    pub last_time: Option<f64>,
    /// RTP streams (5-tuple + SSRC), in order of first packet.
    pub rtp_streams: Vec<RtpStream>,
    /// UDP flows (5-tuples) that carried RTP, with their SSRC history.
    pub rtp_flows: Vec<RtpFlow>,
    /// RTP per destination address (all sources and SSRCs), in order of first packet.
    pub rtp_sinks: Vec<RtpSink>,
    /// RTCP flows (5-tuples), in order of first packet.
    pub rtcp_flows: Vec<RtcpFlow>,
    /// SIP dialogs (grouped by Call-ID), in order of first message.
    pub sip_dialogs: Vec<SipDialog>,
    /// Things the analyzer noticed but could not account for.
    pub warnings: Vec<String>,
}

impl Report {
    /// Streams whose SSRC is `ssrc`.
    pub fn streams_with_ssrc(&self, ssrc: u32) -> impl Iterator<Item = &RtpStream> {
        self.rtp_streams.iter().filter(move |s| s.ssrc == ssrc)
    }

    /// Streams sent to `dst` (`"ip:port"`, IPv6 as `"[ip]:port"`).
    pub fn streams_to<'a>(&'a self, dst: &'a str) -> impl Iterator<Item = &'a RtpStream> {
        self.rtp_streams.iter().filter(move |s| s.dst == dst)
    }

    /// The dialog with this Call-ID.
    pub fn dialog(&self, call_id: &str) -> Option<&SipDialog> {
        self.sip_dialogs.iter().find(|d| d.call_id == call_id)
    }

    /// The sink (all RTP arriving) at `dst` (`"ip:port"`).
    pub fn sink(&self, dst: &str) -> Option<&RtpSink> {
        self.rtp_sinks.iter().find(|s| s.dst == dst)
    }
}

/// One RTP stream: packets of one SSRC on one UDP 5-tuple.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RtpStream {
    /// Source `"ip:port"`.
    pub src: String,
    /// Destination `"ip:port"`.
    pub dst: String,
    /// Synchronisation source.
    pub ssrc: u32,
    /// SSRC as `0x%08X`, as tshark prints it.
    pub ssrc_hex: String,
    /// Packets received (duplicates included, as tshark counts).
    pub packets: u64,
    /// Payload bytes (RTP headers and padding excluded).
    pub payload_bytes: u64,
    /// Arrival time of the first packet (seconds since the Unix epoch).
    pub first_time: f64,
    /// Arrival time of the last packet (seconds since the Unix epoch).
    pub last_time: f64,
    /// Distinct payload types, in order of first appearance.
    pub payload_types: Vec<u8>,
    /// Codec of the main payload type, e.g. `"PCMA/8000"`, `"opus/48000/2"`, or `"unknown"`.
    pub codec: String,
    /// Clock rate used for jitter/timestamp checks (0 when unknown, e.g. telephone-event).
    pub clock_rate: u32,
    /// Where the codec came from: `"sdp"`, `"static"` (RFC 3551 table), `"hint"`,
    /// `"default"` (101 = telephone-event, as tshark assumes) or `"none"`.
    pub codec_source: String,
    /// SIP Call-ID whose SDP declared this stream's addresses, if any.
    pub call_id: Option<String>,
    /// Sequence number of the first packet received.
    pub seq_first: u16,
    /// Sequence number of the last packet received.
    pub seq_last: u16,
    /// Highest extended sequence number minus lowest, plus one, summed over segments
    /// (a segment ends at a sequence reset).
    pub expected: u64,
    /// `expected - packets`: tshark's "Lost" (negative when there are duplicates). Equal to
    /// `tshark_lost` except where tshark's wrap heuristic miscounts (last packet late,
    /// packets older than the first, sequence resets).
    pub lost: i64,
    /// tshark's "Lost" exactly as tshark computes it: last seq + 65536 * cycles - first
    /// seq + 1 - packets, where a cycle is counted whenever a seq drops below the first.
    pub tshark_lost: i64,
    /// Sequence numbers in the expected range never received (true loss; never negative).
    pub missing: u64,
    /// Packets whose sequence number was already received (same segment).
    pub duplicates: u64,
    /// Packets that arrived after a higher sequence number (late, not duplicate, not reset).
    pub reordered: u64,
    /// Sequence resets: a backward jump of more than 100 (or forward of more than 32767).
    pub seq_resets: u64,
    /// Times the 16-bit sequence number wrapped past 65535.
    pub seq_wraps: u64,
    /// Forward sequence jumps (> 1), in arrival order (at most 1000 listed).
    pub seq_gaps: Vec<SeqGap>,
    /// Resets, in arrival order.
    pub resets: Vec<SeqReset>,
    /// Packets flagged by tshark's rule: `seq != previous + 1` (except 65535 -> 0).
    pub sequence_errors: u64,
    /// Nominal samples per packet: the most common timestamp step per sequence step.
    pub frame_samples: Option<u32>,
    /// Packets whose timestamp step differs from `seq step * frame_samples` (marker
    /// packets may only jump forward; telephone-event repeats are not counted).
    pub ts_errors: u64,
    /// The first timestamp errors (at most 100).
    pub ts_error_list: Vec<TsError>,
    /// Largest |(ts - ts_first)/clock - (arrival - first_arrival)| in ms within a segment
    /// (clock drift or timestamp jump against wall time; tshark's "max skew").
    pub max_skew_ms: f64,
    /// Packets with the marker bit set.
    pub markers: u64,
    /// Arrival times of the marker packets (at most 1000).
    pub marker_times: Vec<f64>,
    /// Largest inter-arrival gap in ms over all packets (markers included).
    pub max_gap_ms: f64,
    /// Arrival time of the packet that ended the largest gap (epoch seconds).
    pub max_gap_at: f64,
    /// Sequence number of the packet that ended the largest gap.
    pub max_gap_seq: u16,
    /// tshark's "Max Delta": largest inter-arrival gap excluding marker/CN packets.
    pub max_delta_ms: f64,
    /// tshark's "Min Delta" (same exclusions); `null` when no packet qualified (tshark
    /// prints -1 then).
    pub min_delta_ms: Option<f64>,
    /// tshark's "Mean Delta": a running mean over the same packets as `max_delta_ms`
    /// (equal to (last - first arrival) / (packets - 1) when no packet is excluded).
    pub mean_delta_ms: f64,
    /// tshark's "Max Jitter": largest RFC 3550 interarrival jitter in ms (0 if clock unknown).
    /// Like tshark, packets with the marker bit (and CN packets) are left out of the
    /// maximum; a sender that marks every packet (ffmpeg's Opus) therefore gets 0 here:
    /// use `jitter_max_all_ms` for those.
    pub jitter_ms: f64,
    /// Largest RFC 3550 interarrival jitter in ms over all packets (markers included).
    pub jitter_max_all_ms: f64,
    /// tshark's "Mean Jitter".
    pub jitter_mean_ms: f64,
    /// RFC 3550 interarrival jitter after the last packet, in ms.
    pub jitter_last_ms: f64,
    /// Whether the payload was decoded (PCMU, PCMA, opus).
    pub decoded: bool,
    /// Packets the decoder rejected.
    pub decode_errors: u64,
    /// Audio level per 100 ms window of media time, from `first_time`, in dBFS
    /// (floor -120; missing audio counts as silence). Empty when not decoded.
    pub energy_dbfs: Vec<f64>,
    /// Sample rate of the decoded audio (and of the WAV written for it).
    pub decoded_rate: u32,
    /// WAV file written for this stream (with `--wav`).
    pub wav: Option<String>,
    /// Largest arrival gap across [`crate::Options::event`] (`null` without an event, or
    /// when no packet of the stream qualifies).
    #[serde(default)]
    pub event_gap: Option<EventGap>,
}

/// The largest arrival gap across an event (a fault injected at a known moment, such as the
/// kill of a server): over consecutive packets `(a, b)` in arrival order with `b` after the
/// event and `a` less than [`crate::analyze::Event::within_s`] after it, the pair furthest
/// apart. The gap of a whole call (`max_gap_ms`) also counts unrelated scheduling stalls;
/// this one is the event's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventGap {
    /// Arrival gap in ms.
    pub gap_ms: f64,
    /// Arrival of the packet before the gap (epoch seconds).
    pub from_time: f64,
    /// Arrival of the packet after the gap (epoch seconds).
    pub to_time: f64,
    /// Streams: sequence-number step across the gap, modulo 2^16 (1: nothing skipped).
    /// `null` for sinks, whose packets may come from several senders.
    pub seq_step: Option<u16>,
}

/// A forward jump of the sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeqGap {
    /// Arrival time of the packet after the gap (epoch seconds).
    pub time: f64,
    /// Last sequence number before the gap.
    pub from_seq: u16,
    /// Sequence number after the gap.
    pub to_seq: u16,
    /// Sequence numbers skipped at that moment (`to - from - 1`).
    pub skipped: u64,
}

/// A sequence reset (the stream restarted its sequence numbering).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeqReset {
    /// Arrival time of the first packet of the new segment (epoch seconds).
    pub time: f64,
    /// Highest sequence number before the reset.
    pub from_seq: u16,
    /// First sequence number after the reset.
    pub to_seq: u16,
}

/// A timestamp that does not match the sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TsError {
    /// Arrival time (epoch seconds).
    pub time: f64,
    /// Sequence number of the packet.
    pub seq: u16,
    /// Expected timestamp step (`seq step * frame_samples`).
    pub expected_step: i64,
    /// Actual timestamp step.
    pub actual_step: i64,
}

/// A UDP 5-tuple that carried RTP, with the SSRCs seen on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RtpFlow {
    /// Source `"ip:port"`.
    pub src: String,
    /// Destination `"ip:port"`.
    pub dst: String,
    /// SSRCs in order of first appearance.
    pub ssrcs: Vec<u32>,
    /// Changes of SSRC between consecutive packets.
    pub ssrc_changes: Vec<SsrcChange>,
    /// RTP packets on the 5-tuple (all SSRCs).
    pub packets: u64,
    /// Largest inter-arrival gap on the 5-tuple in ms, whatever the SSRC.
    pub max_gap_ms: f64,
    /// Arrival time of the packet that ended that gap (epoch seconds).
    pub max_gap_at: f64,
}

/// Everything RTP that arrived at one destination address, whatever its source and SSRC:
/// what a client listening on that port received across a failover.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RtpSink {
    /// Destination `"ip:port"`.
    pub dst: String,
    /// RTP packets.
    pub packets: u64,
    /// First arrival (epoch seconds).
    pub first_time: f64,
    /// Last arrival (epoch seconds).
    pub last_time: f64,
    /// Source addresses, in order of first appearance.
    pub sources: Vec<String>,
    /// SSRCs, in order of first appearance.
    pub ssrcs: Vec<u32>,
    /// Largest inter-arrival gap in ms.
    pub max_gap_ms: f64,
    /// Arrival time of the packet that ended that gap (epoch seconds).
    pub max_gap_at: f64,
    /// Changes of (source, SSRC) between consecutive packets.
    pub changes: Vec<SinkChange>,
    /// Largest arrival gap across [`crate::Options::event`], whatever the sender (`null`
    /// without an event, or when no packet qualifies).
    #[serde(default)]
    pub event_gap: Option<EventGap>,
}

/// The sender of the packets arriving at a sink changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinkChange {
    /// Arrival time of the first packet from the new sender (epoch seconds).
    pub time: f64,
    /// Gap before it, in ms.
    pub gap_ms: f64,
    /// Previous source `"ip:port"`.
    pub from_src: String,
    /// Previous SSRC.
    pub from_ssrc: u32,
    /// New source `"ip:port"`.
    pub to_src: String,
    /// New SSRC.
    pub to_ssrc: u32,
}

/// The SSRC on a 5-tuple changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SsrcChange {
    /// Arrival time of the first packet with the new SSRC (epoch seconds).
    pub time: f64,
    /// Previous SSRC.
    pub from: u32,
    /// New SSRC.
    pub to: u32,
}

/// RTCP on one 5-tuple.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RtcpFlow {
    /// Source `"ip:port"`.
    pub src: String,
    /// Destination `"ip:port"`.
    pub dst: String,
    /// Datagrams (compound packets).
    pub packets: u64,
    /// First arrival (epoch seconds).
    pub first_time: f64,
    /// Last arrival (epoch seconds).
    pub last_time: f64,
    /// Sender SSRCs, in order of first appearance.
    pub sender_ssrcs: Vec<u32>,
    /// Count per RTCP packet type, as `[type, count]` pairs sorted by type.
    pub packet_types: Vec<(u8, u64)>,
    /// SSRCs that said BYE.
    pub bye_ssrcs: Vec<u32>,
    /// The last report block received about each SSRC.
    pub last_reports: Vec<ReportBlock>,
}

/// Messages of one SIP Call-ID.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SipDialog {
    /// Call-ID.
    pub call_id: String,
    /// Messages in capture order.
    pub messages: Vec<SipMessage>,
}

impl SipDialog {
    /// Requests with this method sent by `src` (`"ip:port"` or just `"ip"`) after `t`.
    pub fn requests_after<'a>(
        &'a self,
        method: &'a str,
        src: &'a str,
        t: f64,
    ) -> impl Iterator<Item = &'a SipMessage> {
        self.messages.iter().filter(move |m| {
            m.time > t
                && m.method.as_deref() == Some(method)
                && (m.src == src
                    || m.src.rsplit_once(':').map(|x| x.0.trim_matches(['[', ']']))
                        == Some(src.trim_matches(['[', ']'])))
        })
    }
}

/// One SIP message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SipMessage {
    /// Arrival time (epoch seconds).
    pub time: f64,
    /// Source `"ip:port"`.
    pub src: String,
    /// Destination `"ip:port"`.
    pub dst: String,
    /// Request method (requests only).
    pub method: Option<String>,
    /// Status code (responses only).
    pub status: Option<u16>,
    /// Reason phrase (responses only).
    pub reason: Option<String>,
    /// Request-URI (requests only).
    pub uri: Option<String>,
    /// CSeq number.
    pub cseq: u32,
    /// CSeq method.
    pub cseq_method: String,
    /// Call-ID.
    pub call_id: String,
    /// From tag.
    pub from_tag: Option<String>,
    /// To tag.
    pub to_tag: Option<String>,
    /// Whether the body is SDP.
    pub has_sdp: bool,
}
