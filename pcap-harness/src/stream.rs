//! Per-stream RTP statistics: a pure function of the stream's packets in arrival order.
//!
//! Two families of figures are computed side by side:
//! * exact bookkeeping with extended (wrap-safe) sequence numbers: expected, missing,
//!   duplicates, reordered, resets, gaps, timestamp errors, largest arrival gap;
//! * tshark-compatible figures (`lost`, `sequence_errors`, `max_delta_ms`,
//!   `min_delta_ms`, `mean_delta_ms`, `jitter_ms`, `jitter_mean_ms`) that follow
//!   Wireshark's `rtppacket_analyse()` so the two tools agree number for number.

use std::collections::{HashMap, HashSet};

use crate::report::{RtpStream, SeqGap, SeqReset, TsError};
use crate::rtp::{extend_seq, extend_ts, RtpHeader};
use crate::sip::Codec;

/// A backward jump larger than this many sequence numbers is a reset, not a reorder
/// (RFC 3550 appendix A.1 `MAX_MISORDER`).
pub const MAX_MISORDER: i64 = 100;

const MAX_LISTED: usize = 1000;

/// One RTP packet of a stream.
#[derive(Debug, Clone)]
pub struct Pkt {
    /// Arrival time, epoch seconds.
    pub time: f64,
    /// Arrival time relative to the capture's first frame, in ms (tshark's reference).
    pub rel_ms: f64,
    /// Parsed header.
    pub hdr: RtpHeader,
    /// Payload bytes (padding removed).
    pub payload: Vec<u8>,
    /// The capture cut this packet short (payload incomplete).
    pub truncated: bool,
}

/// A non-duplicate packet positioned for decoding.
#[derive(Debug, Clone)]
pub struct Placed {
    /// Segment index (increments at each sequence reset).
    pub segment: usize,
    /// Extended sequence number within the segment.
    pub ext_seq: i64,
    /// Extended timestamp within the segment.
    pub ext_ts: i64,
    /// Arrival time, epoch seconds.
    pub time: f64,
    /// Index into the stream's packet list.
    pub index: usize,
}

/// Result of [`analyze`]: the report entry (without audio fields) and decode order.
pub struct Analysis {
    /// The stream's report entry; audio fields are left empty.
    pub stream: RtpStream,
    /// Non-duplicate packets with their positions.
    pub placed: Vec<Placed>,
}

struct Segment {
    min: i64,
    max: i64,
    received: HashSet<i64>,
}

fn is_cn(pt: u8) -> bool {
    pt == 13 || pt == 19
}

fn is_event(c: Option<&Codec>) -> bool {
    c.is_some_and(|c| c.name.eq_ignore_ascii_case("telephone-event"))
}

/// Clock rate tshark would use for a payload type (0 = unknown / telephone-event).
pub fn tshark_clock(c: Option<&Codec>) -> u32 {
    match c {
        Some(c) if !is_event(Some(c)) => c.rate,
        _ => 0,
    }
}

/// Analyze one stream. `codecs` maps payload types to codecs (SDP, static or hints);
/// `main_pt` is the stream's predominant payload type.
pub fn analyze(
    src: String,
    dst: String,
    ssrc: u32,
    pkts: &[Pkt],
    codecs: &HashMap<u8, Codec>,
    main_pt: u8,
    codec_source: &str,
) -> Analysis {
    assert!(!pkts.is_empty(), "a stream has at least one packet");
    let main_codec = codecs.get(&main_pt);
    let clock_rate = tshark_clock(main_codec);

    let mut payload_types: Vec<u8> = Vec::new();
    let mut markers = 0u64;
    let mut marker_times = Vec::new();
    let mut payload_bytes = 0u64;

    // Exact sequence bookkeeping.
    let mut segments: Vec<Segment> = Vec::new();
    let mut duplicates = 0u64;
    let mut reordered = 0u64;
    let mut wraps = 0u64;
    let mut gaps = Vec::new();
    let mut resets = Vec::new();
    let mut placed = Vec::new();
    // Per packet: (segment, ext_seq, ext_ts, duplicate).
    let mut pos: Vec<(usize, i64, i64, bool)> = Vec::with_capacity(pkts.len());

    // Largest arrival gap.
    let mut max_gap_ms = 0.0f64;
    let mut max_gap_at = pkts[0].time;
    let mut max_gap_seq = pkts[0].hdr.seq;

    // tshark emulation.
    let mut t_seq: i32 = i32::from(pkts[0].hdr.seq);
    let mut t_errors = 0u64;
    let mut t_time = pkts[0].rel_ms;
    let t_first_ts = pkts[0].hdr.ts;
    let mut t_prev_ts = pkts[0].hdr.ts;
    let mut t_last_nominal = 0.0f64;
    let mut t_jitter = 0.0f64;
    let mut t_max_jitter = 0.0f64;
    let mut max_jitter_all = 0.0f64;
    let mut t_mean_jitter = 0.0f64;
    let mut t_max_delta = 0.0f64;
    let mut t_mean_delta = 0.0f64;
    let mut t_min_delta: Option<f64> = None;
    let mut t_prev_pt = pkts[0].hdr.pt;
    let mut t_total = 0u64;
    let t_start_seq = pkts[0].hdr.seq;
    let mut t_cycles = 0i64;
    let mut t_under = false;
    let mut t_stop_seq = pkts[0].hdr.seq;

    for (i, p) in pkts.iter().enumerate() {
        let h = &p.hdr;
        if !payload_types.contains(&h.pt) {
            payload_types.push(h.pt);
        }
        if h.marker {
            markers += 1;
            if marker_times.len() < MAX_LISTED {
                marker_times.push(p.time);
            }
        }
        payload_bytes += p.payload.len() as u64;

        // --- exact sequence bookkeeping ---
        let (seg_idx, ext, dup) = if i == 0 {
            let ext = i64::from(h.seq);
            segments.push(Segment {
                min: ext,
                max: ext,
                received: HashSet::from([ext]),
            });
            (0, ext, false)
        } else {
            let si = segments.len() - 1;
            let seg = &mut segments[si];
            let ext = extend_seq(seg.max, h.seq);
            let d = ext - seg.max;
            if d > 0 {
                if d > 1 && gaps.len() < MAX_LISTED {
                    gaps.push(SeqGap {
                        time: p.time,
                        from_seq: seg.max as u16,
                        to_seq: h.seq,
                        skipped: (d - 1) as u64,
                    });
                }
                wraps += (ext.div_euclid(65536) - seg.max.div_euclid(65536)) as u64;
                seg.max = ext;
                seg.received.insert(ext);
                (si, ext, false)
            } else if d < -MAX_MISORDER {
                if resets.len() < MAX_LISTED {
                    resets.push(SeqReset {
                        time: p.time,
                        from_seq: seg.max as u16,
                        to_seq: h.seq,
                    });
                }
                let ext = i64::from(h.seq);
                segments.push(Segment {
                    min: ext,
                    max: ext,
                    received: HashSet::from([ext]),
                });
                (si + 1, ext, false)
            } else if !seg.received.insert(ext) {
                duplicates += 1;
                (si, ext, true)
            } else {
                reordered += 1;
                seg.min = seg.min.min(ext);
                (si, ext, false)
            }
        };
        let ext_ts = match pos.last() {
            Some(&(s, _, prev_ts, _)) if s == seg_idx => extend_ts(prev_ts, h.ts),
            _ => i64::from(h.ts),
        };
        pos.push((seg_idx, ext, ext_ts, dup));
        if !dup {
            placed.push(Placed {
                segment: seg_idx,
                ext_seq: ext,
                ext_ts,
                time: p.time,
                index: i,
            });
        }

        if i == 0 {
            continue;
        }

        // --- arrival gap over all packets ---
        let delta = p.rel_ms - pkts[i - 1].rel_ms;
        if delta > max_gap_ms {
            max_gap_ms = delta;
            max_gap_at = p.time;
            max_gap_seq = h.seq;
        }

        // --- tshark's rtppacket_analyse() ---
        if !t_under && (h.seq < t_start_seq || (h.seq == 0 && t_stop_seq == 65535)) {
            t_cycles += 1;
            t_under = true;
        } else if h.seq > t_start_seq && t_under {
            t_under = false;
        }
        t_stop_seq = h.seq;
        let seq = i32::from(h.seq);
        if t_seq + 1 == seq || (t_seq == 65535 && seq == 0) {
            t_seq = seq;
        } else if t_seq + 1 < seq || t_seq - seq > 0xFF00 {
            t_seq = seq;
            t_errors += 1;
        } else {
            t_errors += 1;
        }
        let pt_cn = is_cn(h.pt);
        let follow_cn = is_cn(t_prev_pt);
        t_prev_pt = h.pt;
        let codec = codecs.get(&h.pt);
        let clock = tshark_clock(codec);
        let mut current_jitter = 0.0;
        if clock != 0 {
            let nominal = if t_first_ts > h.ts {
                f64::from(h.ts) + 4_294_967_295.0 - f64::from(t_first_ts) + 1.0
            } else {
                f64::from(h.ts - t_first_ts)
            };
            let nominal = nominal / f64::from(clock / 1000);
            let expected = t_time + (nominal - t_last_nominal);
            let diff = (p.rel_ms - expected).abs();
            current_jitter = (15.0 * t_jitter + diff) / 16.0;
            t_jitter = current_jitter;
            max_jitter_all = max_jitter_all.max(current_jitter);
            t_last_nominal = nominal;
        }
        let t_delta = p.rel_ms - t_time;
        let (mark_ok, wrong_ts) = if h.marker {
            (h.ts > t_prev_ts, h.ts <= t_prev_ts)
        } else {
            (false, false)
        };
        if !mark_ok && !wrong_ts && !pt_cn && !follow_cn {
            if t_delta > t_max_delta {
                t_max_delta = t_delta;
            }
            t_min_delta = Some(t_min_delta.map_or(t_delta, |m: f64| m.min(t_delta)));
            t_mean_delta = (t_mean_delta * t_total as f64 + t_delta) / (t_total as f64 + 1.0);
            if clock != 0 {
                if t_jitter > t_max_jitter {
                    t_max_jitter = t_jitter;
                }
                t_mean_jitter =
                    (t_mean_jitter * t_total as f64 + current_jitter) / (t_total as f64 + 1.0);
            }
        }
        t_time = p.rel_ms;
        t_prev_ts = h.ts;
        t_total += 1;
    }

    // --- timestamp consistency ---
    let event_stream = is_event(main_codec);
    let mut frame_samples = None;
    let mut ts_errors = 0u64;
    let mut ts_error_list = Vec::new();
    let mut max_skew_ms = 0.0f64;
    if clock_rate != 0 && !event_stream {
        let mut hist: HashMap<i64, u64> = HashMap::new();
        let mut prev: Option<usize> = None;
        for (i, p) in pkts.iter().enumerate() {
            if p.hdr.pt != main_pt {
                continue;
            }
            if let Some(j) = prev {
                let (sa, ea, ta, _) = pos[j];
                let (sb, eb, tb, _) = pos[i];
                let d = eb - ea;
                if sa == sb && d > 0 {
                    let step = tb - ta;
                    if step > 0 && step % d == 0 {
                        *hist.entry(step / d).or_default() += 1;
                    }
                }
            }
            prev = Some(i);
        }
        let frame = hist
            .iter()
            .max_by_key(|(k, v)| (**v, -**k))
            .map(|(k, _)| *k);
        frame_samples = frame.map(|f| f as u32);
        if let Some(frame) = frame {
            let mut prev: Option<usize> = None;
            for (i, p) in pkts.iter().enumerate() {
                if p.hdr.pt != main_pt {
                    continue;
                }
                if let Some(j) = prev {
                    let (sa, ea, ta, _) = pos[j];
                    let (sb, eb, tb, _) = pos[i];
                    if sa == sb {
                        let expected_step = (eb - ea) * frame;
                        let actual_step = tb - ta;
                        let ok = actual_step == expected_step
                            || (p.hdr.marker && eb > ea && actual_step > expected_step);
                        if !ok {
                            ts_errors += 1;
                            if ts_error_list.len() < 100 {
                                ts_error_list.push(TsError {
                                    time: p.time,
                                    seq: p.hdr.seq,
                                    expected_step,
                                    actual_step,
                                });
                            }
                        }
                    }
                }
                prev = Some(i);
            }
        }
        // Skew against wall time, per segment.
        let mut seg_start: HashMap<usize, (i64, f64)> = HashMap::new();
        for (i, p) in pkts.iter().enumerate() {
            let (s, _, ts, _) = pos[i];
            let (ts0, t0) = *seg_start.entry(s).or_insert((ts, p.rel_ms));
            let media_ms = (ts - ts0) as f64 * 1000.0 / f64::from(clock_rate);
            let skew = media_ms - (p.rel_ms - t0);
            if skew.abs() > max_skew_ms.abs() {
                max_skew_ms = skew;
            }
        }
    }

    let expected: u64 = segments.iter().map(|s| (s.max - s.min + 1) as u64).sum();
    let missing: u64 = segments
        .iter()
        .map(|s| (s.max - s.min + 1) as u64 - s.received.len() as u64)
        .sum();
    let n = pkts.len() as u64;
    let first = &pkts[0];
    let last = &pkts[pkts.len() - 1];
    let codec = match main_codec {
        Some(c) => c.label(),
        None => "unknown".to_string(),
    };
    let stream = RtpStream {
        src,
        dst,
        ssrc,
        ssrc_hex: format!("0x{ssrc:08X}"),
        packets: n,
        payload_bytes,
        first_time: first.time,
        last_time: last.time,
        payload_types,
        codec,
        clock_rate,
        codec_source: codec_source.to_string(),
        call_id: None,
        seq_first: first.hdr.seq,
        seq_last: last.hdr.seq,
        expected,
        lost: expected as i64 - n as i64,
        tshark_lost: i64::from(t_stop_seq) + t_cycles * 65536 - i64::from(t_start_seq) + 1
            - n as i64,
        missing,
        duplicates,
        reordered,
        seq_resets: resets.len() as u64,
        seq_wraps: wraps,
        seq_gaps: gaps,
        resets,
        sequence_errors: t_errors,
        frame_samples,
        ts_errors,
        ts_error_list,
        max_skew_ms,
        markers,
        marker_times,
        max_gap_ms,
        max_gap_at,
        max_gap_seq,
        max_delta_ms: t_max_delta,
        min_delta_ms: t_min_delta,
        mean_delta_ms: t_mean_delta,
        jitter_ms: t_max_jitter,
        jitter_mean_ms: t_mean_jitter,
        jitter_max_all_ms: max_jitter_all,
        jitter_last_ms: t_jitter,
        decoded: false,
        decode_errors: 0,
        energy_dbfs: Vec::new(),
        decoded_rate: 0,
        wav: None,
        event_gap: None,
    };
    Analysis { stream, placed }
}
