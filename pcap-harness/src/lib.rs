//! Understudy's measuring stick: reads pcap/pcapng captures, finds RTP/RTCP streams and SIP
//! dialogs, and reports per-stream continuity (SSRC, sequence, timestamps, gaps, jitter) and
//! decoded audio energy. Its figures are what every failover claim ("same SSRC, no sequence
//! regression, a 40 ms gap") is measured with, and they are cross-checked against tshark.
//!
//! It also replays recorded streams as real SIP participants (the server's load generator),
//! and decodes captured VP8 video with libvpx the way a receiver would ([`video`]: frames
//! decoded / corrupt / undecodable, key frames, the longest freeze, a colour timeline).
//!
//! Not for: the server's media path, live capture, SRTP, TCP/TLS SIP, IP reassembly, video
//! codecs other than VP8.
//!
//! # Use
//!
//! CLI: `mcu pcap analyze FILE [--json] [--wav DIR] [--pt 97=opus/48000/2]
//! [--event UNIX_SECONDS [--event-window SECONDS]]`. Without the
//! server crates, the crate's own binary takes the same subcommands:
//! `cargo run -p pcap-harness -- analyze FILE --json`.
//!
//! Library:
//!
//! ```no_run
//! let report = pcap_harness::analyze_path(std::path::Path::new("call.pcap")).unwrap();
//! let s = report.streams_with_ssrc(0xDEE0EE8F).next().unwrap();
//! assert_eq!(s.lost, 0);
//! assert!(s.max_gap_ms < 60.0);
//! // "no BYE from the server after T"
//! let t = 1000.0;
//! for d in &report.sip_dialogs {
//!     assert_eq!(d.requests_after("BYE", "10.0.0.1", t).count(), 0);
//! }
//! ```
//!
//! # What is recognised
//!
//! * Containers: pcap (micro/nanosecond) and pcapng (per-interface `if_tsresol`/`if_tsoffset`).
//!   Truncated or corrupt files give [`Error::Truncated`] / [`Error::Corrupt`] with the byte
//!   offset of the bad record.
//! * Link types: Ethernet (with VLAN tags), Linux SLL and SLL2, raw IP (101, 228, 229),
//!   null/loopback (0, 108); IPv4 and IPv6; UDP only. IP fragments are counted, not reassembled.
//! * SIP over UDP (requests and responses, compact header forms); SDP bodies label RTP
//!   streams whose destination (or source) is an SDP media address with codecs and Call-ID.
//! * RTCP: second byte 192..=223 (RFC 5761 demultiplexing), first packet type 200..=207 and
//!   lengths adding up to the datagram.
//! * RTP: version 2, payload type 0..=34 or 96..=127, CSRC/extension/padding fitting; a
//!   stream (5-tuple + SSRC) is reported when an SDP declared its address, or when it has at
//!   least two packets and at least half of consecutive packets are within 100 sequence
//!   numbers of each other (others are listed in `warnings`).
//!
//! # JSON schema (`--json`: [`Report`] serialised with serde; `schema_version` 1)
//!
//! Times are seconds since the Unix epoch (float); addresses are `"ip:port"` (`"[v6]:port"`);
//! durations are milliseconds. Field-by-field definitions are on [`RtpStream`],
//! [`RtpFlow`], [`RtcpFlow`], [`SipDialog`] and [`SipMessage`].
//!
//! ```text
//! { schema_version, file, format: "pcap"|"pcapng", frames, udp_datagrams, ip_fragments,
//!   malformed_frames, truncated_datagrams, first_time, last_time, warnings: [string],
//!   rtp_streams: [{
//!     src, dst, ssrc: number, ssrc_hex, packets, payload_bytes, first_time, last_time,
//!     payload_types: [number], codec: "PCMA/8000"|"opus/48000/2"|"unknown"|..., clock_rate,
//!     codec_source: "sdp"|"static"|"hint"|"default"|"none", call_id|null,
//!     seq_first, seq_last, expected,
//!     lost,            // expected - packets (negative with duplicates), as tshark
//!     tshark_lost,     // tshark's own wrap heuristic; equal on ordinary streams
//!     missing,         // sequence numbers never received
//!     duplicates, reordered, seq_resets, seq_wraps, sequence_errors,
//!     seq_gaps: [{time, from_seq, to_seq, skipped}], resets: [{time, from_seq, to_seq}],
//!     frame_samples|null, ts_errors, ts_error_list: [{time, seq, expected_step, actual_step}],
//!     max_skew_ms, markers, marker_times: [time],
//!     max_gap_ms, max_gap_at, max_gap_seq,   // largest arrival gap, all packets
//!     max_delta_ms, min_delta_ms|null, mean_delta_ms,  // tshark's Delta columns
//!     jitter_ms,          // tshark's Max Jitter (RFC 3550, ms; marker/CN packets skipped)
//!     jitter_mean_ms, jitter_max_all_ms, jitter_last_ms,
//!     decoded, decode_errors, decoded_rate,
//!     energy_dbfs: [number],  // per 100 ms of media time from first_time, floor -120
//!     wav|null,
//!     event_gap|null }],  // with --event T: {gap_ms, from_time, to_time, seq_step}, the
//!                         // largest arrival gap ending after T and starting < 1 s after it
//!   rtp_flows: [{ src, dst, ssrcs: [number], ssrc_changes: [{time, from, to}], packets,
//!     max_gap_ms, max_gap_at }],
//!   rtp_sinks: [{ dst, packets, first_time, last_time, sources: [src], ssrcs: [number],
//!     max_gap_ms, max_gap_at,   // across all senders: the client's view of a failover
//!     changes: [{time, gap_ms, from_src, from_ssrc, to_src, to_ssrc}],
//!     event_gap|null }],        // as on rtp_streams, seq_step null
//!   rtcp_flows: [{ src, dst, packets, first_time, last_time, sender_ssrcs: [number],
//!     packet_types: [[type, count]], bye_ssrcs: [number],
//!     last_reports: [{ssrc, fraction_lost, cumulative_lost, highest_seq, jitter}] }],
//!   sip_dialogs: [{ call_id, messages: [{ time, src, dst, method|null, status|null,
//!     reason|null, uri|null, cseq, cseq_method, call_id, from_tag|null, to_tag|null,
//!     has_sdp }] }] }
//! ```
//!
//! # Replay
//!
//! `mcu pcap replay FILE... --to sip:ROOM@HOST[:PORT] [--out received.pcap] [--bind IP]
//! [--count N] [--loop] [--duration S] [--loss P] [--dup P] [--reorder P] [--jitter-ms J]
//! [--seed S] [--stream SSRC] [--pt PT=NAME/RATE] [--record-sent] [--json]`, or
//! [`replay::run_replay`]. Every replayable stream of the inputs (known audio codec; not
//! telephone-event/CN), cloned `--count` times, becomes one participant: a SIP UAC on its
//! own UDP port ([`replay::uac`]: INVITE with an SDP offer of the stream's codec, 100/180,
//! 200 -> ACK, retransmissions, answers the server's BYE with 200, sends BYE when its media
//! ends) and an RTP sender ([`replay::media`]) that re-sends the recorded payloads with the
//! recorded timing and relative sequence/timestamp offsets, re-stamped with its own random
//! SSRC, sequence and timestamp base (seeded), optionally impaired (seeded loss, duplication,
//! reorder, jitter) and looped. `--out` records every datagram the participants receive
//! (SIP and media, raw-IP link type) plus the SIP they send (and their RTP with
//! `--record-sent`), ready for `analyze`. A re-INVITE with a new media address moves the
//! media. `--json` prints `{participants: [{call_id, source_ssrc, ssrc, local_sip,
//! local_rtp, codec, established, rtp_sent, media_received, end_reason}], notes: [string]}`
//! ([`replay::ParticipantSummary`]); the command fails if any participant was not answered.
//! Not supported: authentication, Record-Route, CANCEL, RTCP sending, DTMF replay.
//!
//! # Video
//!
//! `mcu pcap analyze-video FILE [--json] [--pt PT] [--colour NAME=R,G,B]...
//! [--freeze-threshold-ms MS]` or [`video::analyze_video`]: per VP8 flow (source,
//! destination, payload type) the packets, SSRCs, duplicates / missing / resets, frames
//! assembled by RFC 7741 ([`vp8`]) and decoded with libvpx ([`vpx`], the `video-grid`
//! crate's wrapper), with per-frame capture time, size, mean Y/U/V and fate. `--json` prints
//! [`video::VideoReport`]. Cross-checked with GStreamer: `gst-launch-1.0 -v filesrc
//! location=F ! pcapparse caps=application/x-rtp,media=video,clock-rate=90000,
//! encoding-name=VP8,payload=96 ! rtpvp8depay ! vp8dec ! fakesink silent=false` shows one
//! "chain" message per decoded picture, as many as the analyzer's `decoded` on a complete
//! capture (on a lossy one GStreamer also decodes frames whose references are gone, which
//! the analyzer counts as undecodable).
//!
//! # Sequence rules
//!
//! Sequence numbers are extended (wrap-safe) against the highest one seen. A forward jump
//! of n > 1 is a gap (n - 1 skipped); a repeat of a received number is a duplicate; a
//! backward step of at most 100 is a reorder; a larger backward step (or forward step of
//! more than 32767) is a reset, which starts a new segment (`expected` and `missing` sum
//! over segments). A new SSRC on the same 5-tuple is a new stream and an entry in the
//! flow's `ssrc_changes`.
#![deny(missing_docs)]

pub mod analyze;
pub mod audio;
pub mod capture;
pub mod cli;
mod error;
pub mod net;
pub mod replay;
pub mod report;
pub mod rtp;
pub mod sip;
pub mod stream;
pub mod video;
pub mod vp8;
pub mod vpx;
pub mod writer;

use std::path::Path;

pub use analyze::{Event, Options};
pub use error::Error;
pub use report::{EventGap, Report, RtcpFlow, RtpFlow, RtpSink, RtpStream, SipDialog, SipMessage};

/// Analyze a capture file with default options.
pub fn analyze_path(path: &Path) -> Result<Report, Error> {
    analyze_path_with(path, &Options::default())
}

/// Analyze a capture file.
pub fn analyze_path_with(path: &Path, opts: &Options) -> Result<Report, Error> {
    let data = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    analyze::analyze_bytes_with(&data, Some(path), opts)
}

/// Analyze a capture held in memory with default options.
pub fn analyze_bytes(data: &[u8]) -> Result<Report, Error> {
    analyze::analyze_bytes_with(data, None, &Options::default())
}
