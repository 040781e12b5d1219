//! Understudy's measuring stick: reads pcap/pcapng captures, finds RTP/RTCP streams and SIP
//! dialogs, and reports per-stream continuity (SSRC, sequence, timestamps, gaps, jitter) and
//! decoded audio energy. Its figures are what every failover claim ("same SSRC, no sequence
//! regression, a 40 ms gap") is measured with, and they are cross-checked against tshark.
//!
//! Not for: the server's media path, live capture, SRTP, TCP/TLS SIP, IP reassembly.
//!
//! # Use
//!
//! CLI: `mcu pcap analyze FILE [--json] [--wav DIR] [--pt 97=opus/48000/2]` (or the
//! crate's own `pcap-analyze` binary with the same arguments).
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
//! # JSON schema (`--json`, [`Report`] serialised with serde; `schema_version` 1)
//!
//! Times are seconds since the Unix epoch (float); addresses are `"ip:port"` (`"[v6]:port"`).
//! Top level: `schema_version`, `file`, `format` (`"pcap"`/`"pcapng"`), `frames`,
//! `udp_datagrams`, `ip_fragments`, `malformed_frames`, `first_time`, `last_time`,
//! `rtp_streams` [[`RtpStream`]], `rtp_flows` [[`RtpFlow`]], `rtcp_flows` [[`RtcpFlow`]],
//! `sip_dialogs` [[`SipDialog`]], `warnings` [string].
//!
//! Per RTP stream (see [`RtpStream`] for each field's exact definition):
//! `src`, `dst`, `ssrc` (number), `ssrc_hex`, `packets`, `payload_bytes`, `first_time`,
//! `last_time`, `payload_types` [number], `codec` (`"PCMA/8000"`, `"opus/48000/2"`,
//! `"unknown"`), `clock_rate`, `codec_source`, `call_id`, `seq_first`, `seq_last`, `expected`,
//! `lost` (expected - packets, negative with duplicates, as tshark), `tshark_lost` (tshark's
//! own wrap heuristic, identical on ordinary streams), `missing` (never received), `duplicates`, `reordered`, `seq_resets`, `seq_wraps`, `seq_gaps`
//! [{`time`,`from_seq`,`to_seq`,`skipped`}], `resets` [{`time`,`from_seq`,`to_seq`}],
//! `sequence_errors` (tshark's "wrong sequence" count), `frame_samples`, `ts_errors`,
//! `ts_error_list` [{`time`,`seq`,`expected_step`,`actual_step`}], `max_skew_ms`, `markers`,
//! `marker_times`, `max_gap_ms` (largest inter-arrival gap, all packets), `max_gap_at` (arrival
//! time of the packet ending it), `max_gap_seq`, `max_delta_ms`/`min_delta_ms`/`mean_delta_ms`
//! (tshark's Max/Min/Mean Delta: marker and CN packets excluded from max/min), `jitter_ms`
//! (tshark's Max Jitter: RFC 3550 interarrival jitter in ms, maximum over the stream),
//! `jitter_mean_ms`, `jitter_max_all_ms` (same jitter, maximum over all packets, markers
//! included), `jitter_last_ms`, `decoded`, `decode_errors`, `energy_dbfs` [number per
//! 100 ms of media time from `first_time`, floor -120], `decoded_rate`, `wav`.
//!
//! Per flow: `src`, `dst`, `ssrcs`, `ssrc_changes` [{`time`,`from`,`to`}].
//! Per RTCP flow: `src`, `dst`, `packets`, `first_time`, `last_time`, `sender_ssrcs`,
//! `packet_types` [[type, count]], `bye_ssrcs`, `last_reports` [{`ssrc`, `fraction_lost`,
//! `cumulative_lost`, `highest_seq`, `jitter`}].
//! Per SIP dialog: `call_id`, `messages` [{`time`, `src`, `dst`, `method`|null,
//! `status`|null, `reason`, `uri`, `cseq`, `cseq_method`, `call_id`, `from_tag`, `to_tag`,
//! `has_sdp`}] in capture order.
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
pub mod writer;

use std::path::Path;

pub use analyze::Options;
pub use error::Error;
pub use report::{Report, RtcpFlow, RtpFlow, RtpStream, SipDialog, SipMessage};

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
