//! Video analysis: what a receiver of the captured VP8 streams would have seen. Every VP8
//! RTP flow of a capture is assembled into frames ([`crate::vp8`]) and decoded with libvpx
//! ([`crate::vpx`]) the way a receiver would: a frame is decoded only when all its packets
//! arrived and every frame it may reference was decoded, from the last key frame on.
//!
//! Per flow ([`VideoStream`]): packets, SSRCs, sequence duplicates / missing / resets, frames
//! decoded / corrupt / undecodable, key frames and when they came, the longest time without
//! a newly decoded picture (the freeze), the resolutions, and a colour timeline: runs of
//! consecutive decoded pictures whose mean colour is nearest one reference colour. Per frame
//! ([`VideoFrame`]): capture time of its last packet, size, mean Y/U/V, key frame or not,
//! and what became of it.
//!
//! Not for: other codecs (H.264, VP9), RTX/FEC repair, simulcast, jitter-buffer timing (a
//! frame counts as shown when its last packet is captured).
//!
//! ```no_run
//! use pcap_harness::video::{analyze_video, RefColour, VideoOptions};
//! let opts = VideoOptions {
//!     colours: vec![RefColour::rgb("red", 255, 0, 0), RefColour::rgb("blue", 0, 0, 255)],
//!     ..VideoOptions::default()
//! };
//! let report = analyze_video(std::path::Path::new("received.pcap"), &opts).unwrap();
//! let s = &report.streams[0];
//! assert_eq!(s.corrupt + s.undecodable, 0);
//! assert!(s.freeze.ms < 100.0);
//! assert_eq!(s.colour_sequence(), ["red", "blue"]);
//! ```
//!
//! # How a flow is found
//!
//! A flow is a (source, destination, payload type) triple; its SSRC may change (listed in
//! `ssrc_changes`, each change starting a new segment, as does a sequence reset). Its payload
//! type is VP8 when [`VideoOptions::pt`] names it, or (without it) when an SDP in the capture
//! maps it to VP8, or when it is dynamic, of no known codec, and carries a VP8 key frame
//! (start code `9d 01 2a` right after an RFC 7741 descriptor with S=1, PID=0).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::analyze::{self, Extracted, Options};
use crate::report::{SeqReset, SsrcChange};
use crate::rtp::{extend_seq, seq_diff};
use crate::sip::Codec;
use crate::stream::{Pkt, MAX_MISORDER};
use crate::vp8::{self, Damage};
use crate::vpx::{Picture, Vp8Decoder};
use crate::Error;
use video_grid::picture::{MeanYuv, Rect, I420};

/// A forward sequence jump larger than this starts a new segment (RFC 3550 A.1
/// `MAX_DROPOUT`).
pub const MAX_DROPOUT: i64 = 3000;

/// Options of [`analyze_video`].
#[derive(Debug, Clone, PartialEq)]
pub struct VideoOptions {
    /// The VP8 payload type. `None`: from the capture's SDP, else by the key-frame heuristic.
    pub pt: Option<u8>,
    /// Reference colours of the colour timeline; empty: [`RefColour::palette`].
    pub colours: Vec<RefColour>,
    /// Freezes at least this long (ms) are listed in [`VideoStream::freezes`].
    pub freeze_threshold_ms: f64,
    /// Also name the colour of each cell of a `(columns, rows)` grid laid over every
    /// decoded picture ([`VideoFrame::tiles`]: the mean of the cell's middle half, nearest
    /// reference colour), e.g. `(2, 2)` for a 2x2 continuous-presence layout.
    pub tiles: Option<(u32, u32)>,
}

impl Default for VideoOptions {
    fn default() -> Self {
        VideoOptions {
            pt: None,
            colours: Vec::new(),
            freeze_threshold_ms: 200.0,
            tiles: None,
        }
    }
}

/// A named reference colour, as BT.601 limited-range Y'CbCr (what VP8 carries).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefColour {
    /// Name in reports (`"red"`).
    pub name: String,
    /// Luma, 16..=235.
    pub y: f64,
    /// Cb, 16..=240.
    pub u: f64,
    /// Cr, 16..=240.
    pub v: f64,
}

impl RefColour {
    /// The colour of an sRGB triple (BT.601, limited range: what `videotestsrc` ! `vp8enc`
    /// produces from `0xAARRGGBB`).
    pub fn rgb(name: &str, r: u8, g: u8, b: u8) -> RefColour {
        let (r, g, b) = (f64::from(r), f64::from(g), f64::from(b));
        RefColour {
            name: name.to_string(),
            y: 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0,
            u: 128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0,
            v: 128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0,
        }
    }

    /// black, white, grey, red, green, blue, yellow, cyan, magenta.
    pub fn palette() -> Vec<RefColour> {
        [
            ("black", 0, 0, 0),
            ("white", 255, 255, 255),
            ("grey", 128, 128, 128),
            ("red", 255, 0, 0),
            ("green", 0, 255, 0),
            ("blue", 0, 0, 255),
            ("yellow", 255, 255, 0),
            ("cyan", 0, 255, 255),
            ("magenta", 255, 0, 255),
        ]
        .iter()
        .map(|&(n, r, g, b)| RefColour::rgb(n, r, g, b))
        .collect()
    }

    /// Euclidean distance in Y'CbCr to a mean colour.
    pub fn distance(&self, y: f64, u: f64, v: f64) -> f64 {
        ((self.y - y).powi(2) + (self.u - u).powi(2) + (self.v - v).powi(2)).sqrt()
    }
}

/// Parse `NAME=R,G,B` (decimal 0..=255 each) into a reference colour.
pub fn parse_colour(s: &str) -> Result<RefColour, String> {
    let err = || format!("colour {s:?}: expected NAME=R,G,B (0..=255 each)");
    let (name, rgb) = s.split_once('=').ok_or_else(err)?;
    let c: Vec<u8> = rgb
        .split(',')
        .map(|x| x.trim().parse::<u8>())
        .collect::<Result<_, _>>()
        .map_err(|_| err())?;
    match (name.trim(), c.as_slice()) {
        (n, [r, g, b]) if !n.is_empty() => Ok(RefColour::rgb(n, *r, *g, *b)),
        _ => Err(err()),
    }
}

/// What became of one assembled frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameStatus {
    /// Decoded from intact references and shown.
    Decoded,
    /// Decoded from intact references, not meant to be shown (`show_frame` 0).
    Hidden,
    /// Decoded, but libvpx reports the picture corrupt.
    Corrupt,
    /// Packets of the frame are missing ([`VideoFrame::damage`] says which).
    Incomplete,
    /// Complete, but a frame it may reference was lost or not decoded (no key frame since).
    Undecodable,
    /// Complete with intact references, and libvpx rejected it ([`VideoFrame::error`]).
    DecodeError,
}

/// One assembled frame of a flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoFrame {
    /// Capture time of the packet of the frame that arrived last (epoch seconds).
    pub time: f64,
    /// RTP timestamp.
    pub rtp_ts: u32,
    /// Sequence number of its first received packet.
    pub first_seq: u16,
    /// Packets received.
    pub packets: u32,
    /// SSRC of its packets.
    pub ssrc: u32,
    /// Picture ID from the descriptor, when present.
    pub picture_id: Option<u16>,
    /// A key frame (`None`: the frame's first packet is missing).
    pub keyframe: Option<bool>,
    /// What became of it.
    pub status: FrameStatus,
    /// Why it is incomplete.
    pub damage: Option<Damage>,
    /// Picture width (decoded, shown frames).
    pub width: Option<u32>,
    /// Picture height.
    pub height: Option<u32>,
    /// Mean luma of the picture, 0..=255.
    pub mean_y: Option<f64>,
    /// Mean Cb.
    pub mean_u: Option<f64>,
    /// Mean Cr.
    pub mean_v: Option<f64>,
    /// Nearest reference colour (decoded, shown frames).
    pub colour: Option<String>,
    /// libvpx's error message ([`FrameStatus::DecodeError`]).
    pub error: Option<String>,
    /// With [`VideoOptions::tiles`]: the nearest reference colour of each grid cell,
    /// row-major (decoded, shown frames).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tiles: Vec<String>,
}

/// The longest stretch without a newly decoded picture.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Freeze {
    /// Length in ms.
    pub ms: f64,
    /// Start: the last decoded picture before it (or the flow's first packet), epoch s.
    pub from: f64,
    /// End: the next decoded picture (or the flow's last packet), epoch s.
    pub to: f64,
}

/// A picture size and how many decoded pictures had it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Decoded pictures of this size.
    pub frames: u64,
}

/// Consecutive decoded pictures nearest the same reference colour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColourRun {
    /// The reference colour's name.
    pub colour: String,
    /// Time of the run's first picture (epoch s).
    pub from: f64,
    /// Time of the run's last picture (epoch s).
    pub to: f64,
    /// Pictures in the run.
    pub frames: u64,
    /// Mean luma over the run.
    pub mean_y: f64,
    /// Mean Cb over the run.
    pub mean_u: f64,
    /// Mean Cr over the run.
    pub mean_v: f64,
}

/// One VP8 flow: (source, destination, payload type), whatever its SSRCs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoStream {
    /// Sender `ip:port`.
    pub src: String,
    /// Receiver `ip:port`.
    pub dst: String,
    /// Payload type.
    pub pt: u8,
    /// How the payload type was known to be VP8: `"option"`, `"sdp"` or `"heuristic"`.
    pub pt_source: String,
    /// SSRCs in order of appearance.
    pub ssrcs: Vec<u32>,
    /// SSRC changes (each starts a new segment: no reference crosses it).
    pub ssrc_changes: Vec<SsrcChange>,
    /// RTP packets (duplicates included).
    pub packets: u64,
    /// First packet's capture time (epoch s).
    pub first_time: f64,
    /// Last packet's capture time (epoch s).
    pub last_time: f64,
    /// Packets whose sequence number was already received (in the same segment).
    pub duplicates: u64,
    /// Packets that arrived after a higher sequence number (late, not duplicates).
    pub reordered: u64,
    /// Sequence numbers never received, summed over segments.
    pub missing: u64,
    /// Sequence regressions: packets whose sequence number is not above every earlier one
    /// of the same SSRC (duplicates, late packets, backward resets). "No sequence
    /// regression" across a takeover is `regressions == 0`.
    pub regressions: u64,
    /// Sequence resets: a backward step of more than 100 or a forward jump of more than
    /// 3000 (each starts a new segment).
    pub seq_resets: Vec<SeqReset>,
    /// Packets cut short by the capture's snap length (their frames are incomplete).
    pub truncated: u64,
    /// Frames assembled (runs of packets with one timestamp).
    pub frames: u64,
    /// Frames decoded from intact references (shown or hidden, libvpx not complaining).
    pub decoded: u64,
    /// Incomplete + libvpx-rejected + libvpx-flagged-corrupt frames.
    pub corrupt: u64,
    /// Frames with missing packets.
    pub incomplete: u64,
    /// Frames libvpx rejected or decoded as corrupt.
    pub decode_errors: u64,
    /// Complete frames that could not be decoded because a reference was missing.
    pub undecodable: u64,
    /// Key frames whose first packet arrived.
    pub keyframes: u64,
    /// Capture times of those key frames (epoch s).
    pub keyframe_times: Vec<f64>,
    /// Consecutive complete frames (no packet lost between them) whose picture IDs do not
    /// follow each other.
    pub picture_id_jumps: u64,
    /// Time of the first decoded picture.
    pub first_decoded_time: Option<f64>,
    /// The longest time without a newly decoded picture, from the first packet to the last.
    pub freeze: Freeze,
    /// Every freeze of at least [`VideoOptions::freeze_threshold_ms`], in time order.
    pub freezes: Vec<Freeze>,
    /// Picture sizes of the decoded pictures.
    pub resolutions: Vec<Resolution>,
    /// The colour timeline.
    pub colour_runs: Vec<ColourRun>,
    /// Every frame in decode order.
    pub frame_list: Vec<VideoFrame>,
}

impl VideoStream {
    /// The colours of the runs in order, consecutive repeats merged.
    pub fn colour_sequence(&self) -> Vec<&str> {
        let mut v: Vec<&str> = Vec::new();
        for r in &self.colour_runs {
            if v.last() != Some(&r.colour.as_str()) {
                v.push(&r.colour);
            }
        }
        v
    }

    /// The colour of the last decoded picture at or before `time`.
    pub fn colour_at(&self, time: f64) -> Option<&str> {
        self.colour_runs
            .iter()
            .take_while(|r| r.from <= time)
            .last()
            .map(|r| r.colour.as_str())
    }

    /// The first picture of colour `name` decoded at or after `time` (epoch s).
    pub fn first_colour_after(&self, name: &str, time: f64) -> Option<f64> {
        self.frame_list
            .iter()
            .find(|f| f.time >= time && f.colour.as_deref() == Some(name))
            .map(|f| f.time)
    }

    /// The first decoded picture at or after `time` (epoch s) whose grid cells
    /// ([`VideoOptions::tiles`]) show every one of `colours` (each in some cell).
    pub fn first_tiles_after(&self, colours: &[&str], time: f64) -> Option<f64> {
        self.frame_list
            .iter()
            .find(|f| {
                f.time >= time
                    && f.status == FrameStatus::Decoded
                    && colours.iter().all(|c| f.tiles.iter().any(|t| t == c))
            })
            .map(|f| f.time)
    }

    /// The first key frame captured at or after `time` (epoch s).
    pub fn first_keyframe_after(&self, time: f64) -> Option<f64> {
        self.keyframe_times.iter().copied().find(|&t| t >= time)
    }

    /// The stretch without a newly decoded picture that contains `time` (epoch s); its
    /// length is the time from the last decoded picture before `time` to the next one.
    pub fn freeze_across(&self, time: f64) -> Freeze {
        let shown: Vec<f64> = self
            .frame_list
            .iter()
            .filter(|f| f.status == FrameStatus::Decoded)
            .map(|f| f.time)
            .collect();
        let from = shown
            .iter()
            .copied()
            .filter(|&t| t <= time)
            .fold(self.first_time, f64::max);
        let to = shown
            .iter()
            .copied()
            .filter(|&t| t > time)
            .fold(self.last_time, f64::min);
        Freeze {
            ms: (to - from) * 1000.0,
            from,
            to,
        }
    }
}

/// Everything [`analyze_video`] found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoReport {
    /// The analyzed file, when read from one.
    pub file: Option<String>,
    /// VP8 flows in order of first packet.
    pub streams: Vec<VideoStream>,
    /// Things worth knowing (RTP streams of unknown codec not taken for VP8, ...).
    pub warnings: Vec<String>,
}

impl VideoReport {
    /// The flows to `dst` (`ip:port`).
    pub fn streams_to(&self, dst: &str) -> Vec<&VideoStream> {
        self.streams.iter().filter(|s| s.dst == dst).collect()
    }
}

/// Analyze the VP8 video of a capture file.
pub fn analyze_video(path: &Path, opts: &VideoOptions) -> Result<VideoReport, Error> {
    let data = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut r = analyze_video_bytes(&data, opts)?;
    r.file = Some(path.display().to_string());
    Ok(r)
}

/// Analyze the VP8 video of a capture held in memory.
pub fn analyze_video_bytes(data: &[u8], opts: &VideoOptions) -> Result<VideoReport, Error> {
    let vp8 = Codec {
        name: "VP8".into(),
        rate: 90000,
        channels: None,
    };
    let aopts = Options {
        pt_hints: opts.pt.map(|pt| (pt, vp8)).into_iter().collect(),
        no_decode: true,
        ..Options::default()
    };
    let (_, extracted) = analyze::extract_streams(data, &aopts)?;
    let colours = if opts.colours.is_empty() {
        RefColour::palette()
    } else {
        opts.colours.clone()
    };
    let mut warnings = Vec::new();
    let key_of = |e: &Extracted| (e.stream.src.clone(), e.stream.dst.clone(), e.main_pt);
    // A flow is VP8 when any of its SSRCs' streams shows it (a stream whose key frame
    // the capture missed still belongs to its flow).
    let mut vp8_flows: HashMap<(String, String, u8), &'static str> = HashMap::new();
    for e in &extracted {
        if let Some(source) = vp8_source(e, opts.pt) {
            vp8_flows.entry(key_of(e)).or_insert(source);
        }
    }
    // Flows: (src, dst, pt) -> packets, in order of first appearance.
    let mut order: Vec<(String, String, u8)> = Vec::new();
    let mut flows: HashMap<(String, String, u8), Vec<&Pkt>> = HashMap::new();
    for e in &extracted {
        let key = key_of(e);
        if !vp8_flows.contains_key(&key) {
            if opts.pt.is_none() && e.main_pt >= 96 && e.codec.is_none() {
                warnings.push(format!(
                    "{} -> {} ssrc {} payload type {}: unknown codec and no VP8 key frame \
                     (give the payload type if it is VP8)",
                    e.stream.src, e.stream.dst, e.stream.ssrc_hex, e.main_pt
                ));
            }
            continue;
        }
        flows
            .entry(key.clone())
            .or_insert_with(|| {
                order.push(key);
                Vec::new()
            })
            .extend(e.packets.iter().filter(|p| p.hdr.pt == e.main_pt));
    }
    let mut streams = Vec::new();
    for key in order {
        let (Some(mut pkts), Some(source)) = (flows.remove(&key), vp8_flows.get(&key)) else {
            continue;
        };
        // Merge the SSRCs' packets back into arrival order (stable: same-time packets keep
        // their capture order within an SSRC).
        pkts.sort_by(|a, b| a.rel_ms.total_cmp(&b.rel_ms));
        streams.push(analyze_flow(&key, source, &pkts, &colours, opts)?);
    }
    Ok(VideoReport {
        file: None,
        streams,
        warnings,
    })
}

/// How a stream is known to be VP8, if it is.
fn vp8_source(e: &Extracted, pt: Option<u8>) -> Option<&'static str> {
    let is_vp8 = e
        .codec
        .as_ref()
        .is_some_and(|c| c.name.eq_ignore_ascii_case("vp8"));
    match pt {
        Some(pt) if pt == e.main_pt => Some("option"),
        Some(_) => None,
        None if is_vp8 => Some("sdp"),
        None if e.main_pt >= 96 && e.codec.is_none() && carries_keyframe(&e.packets) => {
            Some("heuristic")
        }
        None => None,
    }
}

/// A packet whose payload is a descriptor starting a frame followed by a VP8 key frame
/// header with its start code.
fn carries_keyframe(pkts: &[Pkt]) -> bool {
    pkts.iter().any(|p| {
        vp8::parse_descriptor(&p.payload)
            .filter(|d| d.starts_frame())
            .and_then(|d| vp8::parse_frame_header(p.payload.get(d.len..)?))
            .is_some_and(|h| h.keyframe)
    })
}

/// A flow's packets split into segments (SSRC change or sequence reset), deduplicated
/// and in sequence order.
struct Segments<'a> {
    segments: Vec<(u32, Vec<vp8::Packet<'a>>)>,
    duplicates: u64,
    reordered: u64,
    regressions: u64,
    missing: u64,
    truncated: u64,
    ssrcs: Vec<u32>,
    ssrc_changes: Vec<SsrcChange>,
    seq_resets: Vec<SeqReset>,
}

fn segment<'a>(pkts: &[&'a Pkt]) -> Segments<'a> {
    let mut s = Segments {
        segments: Vec::new(),
        duplicates: 0,
        reordered: 0,
        regressions: 0,
        missing: 0,
        truncated: 0,
        ssrcs: Vec::new(),
        ssrc_changes: Vec::new(),
        seq_resets: Vec::new(),
    };
    let mut seen: HashSet<i64> = HashSet::new();
    let mut highest: i64 = 0;
    let mut cur_ssrc: Option<u32> = None;
    for p in pkts {
        let ssrc = p.hdr.ssrc;
        if !s.ssrcs.contains(&ssrc) {
            s.ssrcs.push(ssrc);
        }
        let new_segment = match cur_ssrc {
            None => true,
            Some(c) if c != ssrc => {
                s.ssrc_changes.push(SsrcChange {
                    time: p.time,
                    from: c,
                    to: ssrc,
                });
                true
            }
            Some(_) => {
                let d = i64::from(seq_diff(highest as u16, p.hdr.seq));
                if !(-MAX_MISORDER..=MAX_DROPOUT).contains(&d) {
                    if d < 0 {
                        s.regressions += 1;
                    }
                    s.seq_resets.push(SeqReset {
                        time: p.time,
                        from_seq: highest as u16,
                        to_seq: p.hdr.seq,
                    });
                    true
                } else {
                    false
                }
            }
        };
        if new_segment {
            cur_ssrc = Some(ssrc);
            seen.clear();
            // Extended numbers start at 65536 so that reordering never goes negative.
            highest = 65536 + i64::from(p.hdr.seq);
            s.segments.push((ssrc, Vec::new()));
        }
        let ext = extend_seq(highest, p.hdr.seq);
        if !seen.insert(ext) {
            s.duplicates += 1;
            s.regressions += 1;
            continue;
        }
        if ext < highest {
            s.reordered += 1;
            s.regressions += 1;
        }
        highest = highest.max(ext);
        if p.truncated {
            // Its payload is incomplete: leave a hole where it was.
            s.truncated += 1;
            continue;
        }
        if let Some((_, v)) = s.segments.last_mut() {
            v.push(vp8::Packet {
                ext_seq: ext,
                ts: p.hdr.ts,
                marker: p.hdr.marker,
                time: p.time,
                payload: &p.payload,
            });
        }
    }
    for (_, v) in &mut s.segments {
        v.sort_by_key(|p| p.ext_seq);
        if let (Some(a), Some(b)) = (v.first(), v.last()) {
            let span = (b.ext_seq - a.ext_seq + 1) as u64;
            s.missing += span.saturating_sub(v.len() as u64);
        }
    }
    // Truncated packets were counted as received but left out: not missing on the wire.
    s.missing = s.missing.saturating_sub(s.truncated);
    s
}

/// Whether picture ID `b` follows `a` (7- or 15-bit wrap).
fn picture_id_follows(a: &vp8::Descriptor, b: &vp8::Descriptor) -> bool {
    match (a.picture_id, b.picture_id) {
        (Some(x), Some(y)) => {
            let modulo = if b.picture_id_15bit { 0x8000 } else { 0x80 };
            (u32::from(x) + 1) % modulo == u32::from(y) % modulo
        }
        _ => true,
    }
}

fn analyze_flow(
    key: &(String, String, u8),
    source: &str,
    pkts: &[&Pkt],
    colours: &[RefColour],
    opts: &VideoOptions,
) -> Result<VideoStream, Error> {
    let seg = segment(pkts);
    let first_time = pkts.first().map_or(0.0, |p| p.time);
    let last_time = pkts.iter().map(|p| p.time).fold(first_time, f64::max);
    let mut st = VideoStream {
        src: key.0.clone(),
        dst: key.1.clone(),
        pt: key.2,
        pt_source: source.to_string(),
        ssrcs: seg.ssrcs.clone(),
        ssrc_changes: seg.ssrc_changes.clone(),
        packets: pkts.len() as u64,
        first_time,
        last_time,
        duplicates: seg.duplicates,
        reordered: seg.reordered,
        missing: seg.missing,
        regressions: seg.regressions,
        seq_resets: seg.seq_resets.clone(),
        truncated: seg.truncated,
        frames: 0,
        decoded: 0,
        corrupt: 0,
        incomplete: 0,
        decode_errors: 0,
        undecodable: 0,
        keyframes: 0,
        keyframe_times: Vec::new(),
        picture_id_jumps: 0,
        first_decoded_time: None,
        freeze: Freeze::default(),
        freezes: Vec::new(),
        resolutions: Vec::new(),
        colour_runs: Vec::new(),
        frame_list: Vec::new(),
    };
    let mut decoder = Vp8Decoder::new().map_err(Error::Vpx)?;
    // Decoded pictures' times, made monotonic: a picture cannot be shown before the one
    // decoded ahead of it.
    let mut shown: Vec<f64> = Vec::new();
    let mut last_shown = f64::NEG_INFINITY;
    for (ssrc, seg_pkts) in &seg.segments {
        let frames = vp8::assemble(seg_pkts);
        // Every frame since the last decoded key frame was decoded: the next one can be.
        let mut chain_ok = false;
        let mut prev_complete: Option<vp8::Descriptor> = None;
        for f in frames {
            st.frames += 1;
            if f.gap_before > 0 {
                // Whole frames lost: any of them may be a reference.
                chain_ok = false;
                prev_complete = None;
            }
            let keyframe = f.header.map(|h| h.keyframe);
            if keyframe == Some(true) {
                st.keyframes += 1;
                st.keyframe_times.push(f.time);
            }
            let mut vf = VideoFrame {
                time: f.time,
                rtp_ts: f.ts,
                first_seq: f.first_seq as u16,
                packets: f.packets,
                ssrc: *ssrc,
                picture_id: f.descriptor.and_then(|d| d.picture_id),
                keyframe,
                status: FrameStatus::Incomplete,
                damage: f.damage,
                width: None,
                height: None,
                mean_y: None,
                mean_u: None,
                mean_v: None,
                colour: None,
                error: None,
                tiles: Vec::new(),
            };
            if let Some(d) = f.descriptor.filter(|_| f.complete()) {
                if let Some(p) = prev_complete {
                    if !picture_id_follows(&p, &d) {
                        st.picture_id_jumps += 1;
                    }
                }
                prev_complete = Some(d);
            } else {
                prev_complete = None;
            }
            if !f.complete() {
                st.incomplete += 1;
                if !f.descriptor.is_some_and(|d| d.non_reference) {
                    chain_ok = false;
                }
            } else if keyframe != Some(true) && !chain_ok {
                vf.status = FrameStatus::Undecodable;
                st.undecodable += 1;
            } else {
                let decoded = match opts.tiles {
                    Some(grid) => decoder.decode_image(&f.data).map(|d| {
                        d.map(|d| {
                            let (pic, tiles) = summarise_tiles(&d.image, d.corrupt, grid);
                            vf.tiles = tiles
                                .iter()
                                .map(|m| nearest_mean(colours, m).0.to_string())
                                .collect();
                            pic
                        })
                    }),
                    None => decoder.decode(&f.data),
                };
                match decoded {
                    Err(e) => {
                        vf.status = FrameStatus::DecodeError;
                        vf.error = Some(e.to_string());
                        st.decode_errors += 1;
                        chain_ok = false;
                    }
                    Ok(None) => {
                        vf.status = FrameStatus::Hidden;
                        st.decoded += 1;
                        chain_ok = true;
                    }
                    Ok(Some(pic)) if pic.corrupt => {
                        vf.status = FrameStatus::Corrupt;
                        set_picture(&mut vf, &pic);
                        st.decode_errors += 1;
                        chain_ok = false;
                    }
                    Ok(Some(pic)) => {
                        vf.status = FrameStatus::Decoded;
                        set_picture(&mut vf, &pic);
                        st.decoded += 1;
                        chain_ok = true;
                        last_shown = last_shown.max(f.time);
                        shown.push(last_shown);
                        st.first_decoded_time.get_or_insert(last_shown);
                        match st
                            .resolutions
                            .iter_mut()
                            .find(|r| (r.width, r.height) == (pic.width, pic.height))
                        {
                            Some(r) => r.frames += 1,
                            None => st.resolutions.push(Resolution {
                                width: pic.width,
                                height: pic.height,
                                frames: 1,
                            }),
                        }
                        let (name, _) = nearest(colours, &pic);
                        vf.colour = Some(name.to_string());
                        add_to_runs(&mut st.colour_runs, name, vf.time, &pic);
                    }
                }
            }
            st.frame_list.push(vf);
        }
    }
    st.corrupt = st.incomplete + st.decode_errors;
    // Freezes: between consecutive decoded pictures, and from the first packet to the first
    // picture and from the last picture to the last packet.
    let mut bounds = Vec::with_capacity(shown.len() + 2);
    bounds.push(first_time);
    bounds.extend(shown.iter().copied());
    bounds.push(last_time.max(last_shown));
    for w in bounds.windows(2) {
        let f = Freeze {
            ms: (w[1] - w[0]).max(0.0) * 1000.0,
            from: w[0],
            to: w[1],
        };
        if f.ms > st.freeze.ms || st.freeze == Freeze::default() {
            st.freeze = f;
        }
        if f.ms >= opts.freeze_threshold_ms {
            st.freezes.push(f);
        }
    }
    Ok(st)
}

fn set_picture(vf: &mut VideoFrame, p: &Picture) {
    vf.width = Some(p.width);
    vf.height = Some(p.height);
    vf.mean_y = Some(round2(p.mean_y));
    vf.mean_u = Some(round2(p.mean_u));
    vf.mean_v = Some(round2(p.mean_v));
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The reference colour nearest a picture's mean, and the distance.
fn nearest<'a>(colours: &'a [RefColour], p: &Picture) -> (&'a str, f64) {
    nearest_mean(
        colours,
        &MeanYuv {
            y: p.mean_y,
            u: p.mean_u,
            v: p.mean_v,
        },
    )
}

/// The reference colour nearest a mean colour, and the distance.
fn nearest_mean<'a>(colours: &'a [RefColour], m: &MeanYuv) -> (&'a str, f64) {
    colours
        .iter()
        .map(|c| (c.name.as_str(), c.distance(m.y, m.u, m.v)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or(("", 0.0))
}

/// A decoded picture's summary, and the mean colour of the middle half of each cell of a
/// `(columns, rows)` grid over it, row-major.
fn summarise_tiles(img: &I420, corrupt: bool, (cols, rows): (u32, u32)) -> (Picture, Vec<MeanYuv>) {
    let all = img.mean(img.rect()).unwrap_or(MeanYuv {
        y: 0.0,
        u: 0.0,
        v: 0.0,
    });
    let pic = Picture {
        width: img.width(),
        height: img.height(),
        mean_y: all.y,
        mean_u: all.u,
        mean_v: all.v,
        corrupt,
    };
    let (cols, rows) = (cols.max(1), rows.max(1));
    let (cw, ch) = (img.width() / cols, img.height() / rows);
    let mut tiles = Vec::new();
    for r in 0..rows {
        for c in 0..cols {
            let cell = Rect {
                x: c * cw + cw / 4,
                y: r * ch + ch / 4,
                width: (cw / 2).max(1),
                height: (ch / 2).max(1),
            };
            tiles.push(img.mean(cell).unwrap_or(all));
        }
    }
    (pic, tiles)
}

fn add_to_runs(runs: &mut Vec<ColourRun>, name: &str, time: f64, p: &Picture) {
    match runs.last_mut() {
        Some(r) if r.colour == name => {
            let n = r.frames as f64;
            r.mean_y = (r.mean_y * n + p.mean_y) / (n + 1.0);
            r.mean_u = (r.mean_u * n + p.mean_u) / (n + 1.0);
            r.mean_v = (r.mean_v * n + p.mean_v) / (n + 1.0);
            r.frames += 1;
            r.to = time;
        }
        _ => runs.push(ColourRun {
            colour: name.to_string(),
            from: time,
            to: time,
            frames: 1,
            mean_y: p.mean_y,
            mean_u: p.mean_u,
            mean_v: p.mean_v,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_colours_are_bt601_limited_range() {
        let red = RefColour::rgb("red", 255, 0, 0);
        assert!((red.y - 81.5).abs() < 0.1 && (red.u - 90.2).abs() < 0.1);
        assert!((red.v - 240.0).abs() < 0.1);
        let white = RefColour::rgb("white", 255, 255, 255);
        assert!((white.y - 235.0).abs() < 0.1 && (white.u - 128.0).abs() < 0.1);
        assert_eq!(
            parse_colour("blue=0,0,255").unwrap(),
            RefColour::rgb("blue", 0, 0, 255)
        );
        assert!(parse_colour("blue=0,0").is_err());
        assert!(parse_colour("=1,2,3").is_err());
        assert!(parse_colour("x=1,2,256").is_err());
    }

    #[test]
    fn picture_ids_wrap() {
        let d = |id, m| vp8::Descriptor {
            picture_id: Some(id),
            picture_id_15bit: m,
            ..Default::default()
        };
        assert!(picture_id_follows(&d(0x7fff, true), &d(0, true)));
        assert!(picture_id_follows(&d(127, false), &d(0, false)));
        assert!(!picture_id_follows(&d(5, true), &d(7, true)));
        // A switch from 7-bit to 15-bit IDs compares modulo the new width.
        assert!(picture_id_follows(&d(127, false), &d(128, true)));
    }
}
