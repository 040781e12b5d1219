//! The analysis pipeline: frames -> UDP -> SIP / RTP / RTCP -> [`Report`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::capture::{self, Frame};
use crate::net::{self, Skip};
use crate::report::*;
use crate::rtp::{self, Kind};
use crate::sip::{self, Codec};
use crate::stream::{self, Pkt};
use crate::{audio, Error};

/// Options for [`analyze_bytes_with`] / [`crate::analyze_path_with`].
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Codecs for payload types that no SDP in the capture declares (e.g. `97 -> opus/48000/2`).
    /// They apply to every stream and override the static table but not SDP.
    pub pt_hints: HashMap<u8, Codec>,
    /// Write one WAV per decoded stream into this directory.
    pub wav_dir: Option<PathBuf>,
    /// Skip audio decoding (faster; `energy_dbfs` stays empty).
    pub no_decode: bool,
    /// Report each stream's and sink's largest arrival gap across this moment
    /// (`event_gap`).
    pub event: Option<Event>,
}

/// A moment to measure arrival gaps across (see [`EventGap`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Event {
    /// When it happened, seconds since the Unix epoch (the capture's clock).
    pub time: f64,
    /// A gap counts when it starts less than this many seconds after the event (and ends
    /// after it): the silence that follows a fault, not a stall seconds later.
    pub within_s: f64,
}

impl Event {
    /// Default for [`Event::within_s`]: one second.
    pub const DEFAULT_WITHIN_S: f64 = 1.0;

    /// An event at `time` (epoch seconds) with the default window.
    pub fn at(time: f64) -> Self {
        Event {
            time,
            within_s: Self::DEFAULT_WITHIN_S,
        }
    }

    /// The largest gap across the event among `(epoch time, capture-relative ms)` arrivals
    /// in arrival order: the index of the packet that ended it and the gap in ms.
    fn largest_gap(&self, arrivals: impl Iterator<Item = (f64, f64)>) -> Option<(usize, f64)> {
        let mut prev: Option<(f64, f64)> = None;
        let mut best: Option<(usize, f64)> = None;
        for (i, (t, rel)) in arrivals.enumerate() {
            if let Some((pt, prel)) = prev {
                let gap = rel - prel;
                if t > self.time
                    && pt < self.time + self.within_s
                    && best.is_none_or(|(_, g)| gap > g)
                {
                    best = Some((i, gap));
                }
            }
            prev = Some((t, rel));
        }
        best
    }
}

type StreamKey = (SocketAddr, SocketAddr, u32);

/// (epoch time, capture-relative ms, SSRC) of one packet.
type Arrival = (f64, f64, u32);

struct RtcpAcc {
    src: SocketAddr,
    dst: SocketAddr,
    flow: RtcpFlow,
    types: HashMap<u8, u64>,
    reports: Vec<ReportBlock>,
}

/// Format a socket address as `ip:port` (`[v6]:port`).
pub fn addr(a: &SocketAddr) -> String {
    a.to_string()
}

/// One accepted RTP stream with its packets, for replay.
#[derive(Debug, Clone)]
pub struct Extracted {
    /// The stream's report entry.
    pub stream: RtpStream,
    /// Codec of the main payload type, if known.
    pub codec: Option<Codec>,
    /// The main (most frequent) payload type.
    pub main_pt: u8,
    /// All packets of the stream in arrival order.
    pub packets: Vec<Pkt>,
}

/// Analyze a capture held in memory.
pub fn analyze_bytes_with(
    data: &[u8],
    file: Option<&Path>,
    opts: &Options,
) -> Result<Report, Error> {
    Ok(analyze_core(data, file, opts, false)?.0)
}

/// Analyze a capture and also return each accepted stream's packets (for replay).
pub fn extract_streams(data: &[u8], opts: &Options) -> Result<(Report, Vec<Extracted>), Error> {
    analyze_core(data, None, opts, true)
}

fn analyze_core(
    data: &[u8],
    file: Option<&Path>,
    opts: &Options,
    keep_packets: bool,
) -> Result<(Report, Vec<Extracted>), Error> {
    let mut extracted = Vec::new();
    let mut frames = 0u64;
    let mut udp_count = 0u64;
    let mut fragments = 0u64;
    let mut malformed = 0u64;
    let mut truncated = 0u64;
    let mut first_ns: Option<i128> = None;
    let mut first_time = None;
    let mut last_time = None;
    let mut bad_linktype: Option<u32> = None;

    let mut sip_msgs: Vec<(f64, SocketAddr, SocketAddr, sip::Message)> = Vec::new();
    let mut stream_order: Vec<StreamKey> = Vec::new();
    let mut streams: HashMap<StreamKey, Vec<Pkt>> = HashMap::new();
    let mut rtcp_order: Vec<(SocketAddr, SocketAddr)> = Vec::new();
    let mut rtcp: HashMap<(SocketAddr, SocketAddr), RtcpAcc> = HashMap::new();
    let mut warnings = Vec::new();

    let format = capture::for_each_frame(data, |f: Frame<'_>| {
        frames += 1;
        let base = *first_ns.get_or_insert(f.time_ns);
        first_time.get_or_insert(f.time);
        last_time = Some(f.time);
        if !net::linktype_supported(f.linktype) {
            bad_linktype.get_or_insert(f.linktype);
            return;
        }
        let udp = match net::decode_udp(f.linktype, f.data) {
            Ok(u) => u,
            Err(Skip::Fragment) => {
                fragments += 1;
                return;
            }
            Err(Skip::Malformed) => {
                malformed += 1;
                return;
            }
            Err(Skip::NotUdp) => return,
        };
        udp_count += 1;
        if udp.truncated {
            truncated += 1;
        }
        if let Some(m) = sip::parse(udp.payload).filter(|_| !udp.truncated) {
            sip_msgs.push((f.time, udp.src, udp.dst, m));
            return;
        }
        let rel_ms = (f.time_ns - base) as f64 / 1e6;
        match rtp::classify_captured(udp.payload, udp.truncated) {
            Kind::Rtp(h) => {
                let key = (udp.src, udp.dst, h.ssrc);
                let v = streams.entry(key).or_insert_with(|| {
                    stream_order.push(key);
                    Vec::new()
                });
                v.push(Pkt {
                    time: f.time,
                    rel_ms,
                    hdr: h,
                    payload: udp.payload[h.payload_offset..h.payload_offset + h.payload_len]
                        .to_vec(),
                    truncated: udp.truncated,
                });
            }
            Kind::Rtcp(_) => {
                let key = (udp.src, udp.dst);
                let acc = rtcp.entry(key).or_insert_with(|| {
                    rtcp_order.push(key);
                    RtcpAcc {
                        src: udp.src,
                        dst: udp.dst,
                        flow: RtcpFlow {
                            src: addr(&udp.src),
                            dst: addr(&udp.dst),
                            packets: 0,
                            first_time: f.time,
                            last_time: f.time,
                            sender_ssrcs: Vec::new(),
                            packet_types: Vec::new(),
                            bye_ssrcs: Vec::new(),
                            last_reports: Vec::new(),
                        },
                        types: HashMap::new(),
                        reports: Vec::new(),
                    }
                });
                acc.flow.packets += 1;
                acc.flow.last_time = f.time;
                for p in rtp::parse_rtcp(udp.payload) {
                    *acc.types.entry(p.pt).or_default() += 1;
                    if let Some(s) = p.ssrc {
                        if p.pt == 203 {
                            if !acc.flow.bye_ssrcs.contains(&s) {
                                acc.flow.bye_ssrcs.push(s);
                            }
                        } else if !acc.flow.sender_ssrcs.contains(&s) {
                            acc.flow.sender_ssrcs.push(s);
                        }
                    }
                    for r in p.reports {
                        acc.reports.retain(|x| x.ssrc != r.ssrc);
                        acc.reports.push(r);
                    }
                }
            }
            Kind::Other => {}
        }
    })?;
    if let Some(linktype) = bad_linktype {
        if udp_count == 0 {
            return Err(Error::UnsupportedLinkType { linktype });
        }
        warnings.push(format!(
            "frames of unsupported link type {linktype} were skipped"
        ));
    }
    if truncated > 0 {
        warnings.push(format!(
            "{truncated} UDP datagrams were cut short by the snap length: their headers are \
             analyzed, their audio is not decoded"
        ));
    }
    if fragments > 0 {
        warnings.push(format!("{fragments} IP fragments were not reassembled"));
    }

    // SDP: receive address -> (rtpmap, call-id).
    let mut sdp_map: HashMap<SocketAddr, (HashMap<u8, Codec>, String)> = HashMap::new();
    for (_, _, _, m) in &sip_msgs {
        if let Some(sdp) = &m.sdp {
            for media in &sdp.media {
                if let Some(a) = media.addr {
                    sdp_map.insert(a, (media.rtpmap.clone(), m.call_id.clone()));
                }
            }
        }
    }

    // Streams.
    let mut rtp_streams = Vec::new();
    for key in &stream_order {
        let pkts = &streams[key];
        let (src, dst, ssrc) = *key;
        let declared = sdp_map.get(&dst).or_else(|| sdp_map.get(&src));
        if declared.is_none() && !looks_continuous(pkts) {
            warnings.push(format!(
                "{} RTP-like packet(s) {} -> {} ssrc 0x{ssrc:08X} ignored (no consistent sequence)",
                pkts.len(),
                addr(&src),
                addr(&dst)
            ));
            continue;
        }
        let mut counts: HashMap<u8, u64> = HashMap::new();
        for p in pkts {
            *counts.entry(p.hdr.pt).or_default() += 1;
        }
        let main_pt = counts
            .iter()
            .max_by_key(|(pt, n)| (**n, std::cmp::Reverse(**pt)))
            .map(|(pt, _)| *pt)
            .unwrap_or(0);
        let mut codecs: HashMap<u8, Codec> = HashMap::new();
        let mut source = "none";
        for pt in counts.keys() {
            if let Some(c) = sip::static_codec(*pt) {
                codecs.insert(*pt, c);
                if *pt == main_pt {
                    source = "static";
                }
            }
        }
        if !codecs.contains_key(&101) && counts.contains_key(&101) {
            // tshark's default too (rtpevent.payload_type_value = 101).
            codecs.insert(
                101,
                Codec {
                    name: "telephone-event".into(),
                    rate: 8000,
                    channels: None,
                },
            );
            if main_pt == 101 {
                source = "default";
            }
        }
        for (pt, c) in &opts.pt_hints {
            codecs.insert(*pt, c.clone());
            if *pt == main_pt {
                source = "hint";
            }
        }
        if let Some((map, _)) = declared {
            for (pt, c) in map {
                codecs.insert(*pt, c.clone());
                if *pt == main_pt {
                    source = "sdp";
                }
            }
        }
        let mut a = stream::analyze(addr(&src), addr(&dst), ssrc, pkts, &codecs, main_pt, source);
        a.stream.call_id = declared.map(|d| d.1.clone());
        if let Some(ev) = &opts.event {
            a.stream.event_gap =
                ev.largest_gap(pkts.iter().map(|p| (p.time, p.rel_ms)))
                    .map(|(i, gap_ms)| EventGap {
                        gap_ms,
                        from_time: pkts[i - 1].time,
                        to_time: pkts[i].time,
                        seq_step: Some(pkts[i].hdr.seq.wrapping_sub(pkts[i - 1].hdr.seq)),
                    });
        }
        if let Some(codec) = codecs.get(&main_pt) {
            if !opts.no_decode && audio::decodable(codec) {
                if let Some(d) = audio::decode(pkts, &a.placed, main_pt, codec) {
                    a.stream.decoded = true;
                    a.stream.decode_errors = d.errors;
                    a.stream.decoded_rate = d.rate;
                    a.stream.energy_dbfs = d.samples.energy_dbfs();
                    if let Some(dir) = &opts.wav_dir {
                        std::fs::create_dir_all(dir).map_err(|e| Error::Output {
                            path: dir.clone(),
                            reason: e.to_string(),
                        })?;
                        let path = dir.join(format!(
                            "stream{:02}_{}.wav",
                            rtp_streams.len(),
                            a.stream.ssrc_hex
                        ));
                        audio::write_timeline_wav(&path, &d.samples, d.rate)?;
                        a.stream.wav = Some(path.display().to_string());
                    }
                }
            }
        }
        if a.stream.packets > 2 && a.stream.markers * 2 > a.stream.packets {
            warnings.push(format!(
                "stream {} -> {} ssrc {} sets the marker bit on {} of {} packets: tshark-style \
                 max_delta_ms/jitter_ms skip marker packets, see max_gap_ms/jitter_max_all_ms",
                a.stream.src, a.stream.dst, a.stream.ssrc_hex, a.stream.markers, a.stream.packets
            ));
        }
        if keep_packets {
            extracted.push(Extracted {
                stream: a.stream.clone(),
                codec: codecs.get(&main_pt).cloned(),
                main_pt,
                packets: pkts.clone(),
            });
        }
        rtp_streams.push(a.stream);
    }

    // Flows and SSRC changes (accepted streams only).
    let mut flow_order: Vec<(String, String)> = Vec::new();
    let mut flow_pkts: HashMap<(String, String), Vec<Arrival>> = HashMap::new();
    for (key, s) in stream_order
        .iter()
        .filter(|k| {
            rtp_streams
                .iter()
                .any(|s| s.ssrc == k.2 && s.src == addr(&k.0) && s.dst == addr(&k.1))
        })
        .map(|k| (k, &streams[k]))
    {
        let fk = (addr(&key.0), addr(&key.1));
        let v = flow_pkts.entry(fk.clone()).or_insert_with(|| {
            flow_order.push(fk);
            Vec::new()
        });
        v.extend(s.iter().map(|p| (p.time, p.rel_ms, key.2)));
    }
    let mut rtp_flows = Vec::new();
    for fk in flow_order {
        let mut v = flow_pkts.remove(&fk).unwrap_or_default();
        v.sort_by(|a, b| a.1.total_cmp(&b.1));
        let (max_gap_ms, max_gap_at) = max_gap(v.iter().map(|x| (x.0, x.1)));
        let packets = v.len() as u64;
        let mut ssrcs = Vec::new();
        let mut changes = Vec::new();
        let mut prev: Option<u32> = None;
        for (t, _, s) in v {
            if !ssrcs.contains(&s) {
                ssrcs.push(s);
            }
            if let Some(p) = prev {
                if p != s {
                    changes.push(SsrcChange {
                        time: t,
                        from: p,
                        to: s,
                    });
                }
            }
            prev = Some(s);
        }
        rtp_flows.push(RtpFlow {
            src: fk.0,
            dst: fk.1,
            ssrcs,
            ssrc_changes: changes,
            packets,
            max_gap_ms,
            max_gap_at,
        });
    }

    // Sinks: everything arriving at one destination.
    let mut sink_order: Vec<SocketAddr> = Vec::new();
    let mut sink_pkts: HashMap<SocketAddr, Vec<(f64, f64, SocketAddr, u32)>> = HashMap::new();
    for key in &stream_order {
        let accepted = rtp_streams
            .iter()
            .any(|s| s.ssrc == key.2 && s.src == addr(&key.0) && s.dst == addr(&key.1));
        if !accepted {
            continue;
        }
        let v = sink_pkts.entry(key.1).or_insert_with(|| {
            sink_order.push(key.1);
            Vec::new()
        });
        v.extend(
            streams[key]
                .iter()
                .map(|p| (p.time, p.rel_ms, key.0, key.2)),
        );
    }
    let mut rtp_sinks = Vec::new();
    for dst in sink_order {
        let mut v = sink_pkts.remove(&dst).unwrap_or_default();
        v.sort_by(|a, b| a.1.total_cmp(&b.1));
        let (max_gap_ms, max_gap_at) = max_gap(v.iter().map(|x| (x.0, x.1)));
        let event_gap = opts.event.and_then(|ev| {
            let (i, gap_ms) = ev.largest_gap(v.iter().map(|x| (x.0, x.1)))?;
            Some(EventGap {
                gap_ms,
                from_time: v[i - 1].0,
                to_time: v[i].0,
                seq_step: None,
            })
        });
        let mut sources: Vec<String> = Vec::new();
        let mut ssrcs = Vec::new();
        let mut changes = Vec::new();
        for (i, (t, rel, src, ssrc)) in v.iter().enumerate() {
            let src_s = addr(src);
            if !sources.contains(&src_s) {
                sources.push(src_s.clone());
            }
            if !ssrcs.contains(ssrc) {
                ssrcs.push(*ssrc);
            }
            if i > 0 {
                let (_, prel, psrc, pssrc) = &v[i - 1];
                if psrc != src || pssrc != ssrc {
                    changes.push(SinkChange {
                        time: *t,
                        gap_ms: rel - prel,
                        from_src: addr(psrc),
                        from_ssrc: *pssrc,
                        to_src: src_s,
                        to_ssrc: *ssrc,
                    });
                }
            }
        }
        rtp_sinks.push(RtpSink {
            dst: addr(&dst),
            packets: v.len() as u64,
            first_time: v.first().map_or(0.0, |x| x.0),
            last_time: v.last().map_or(0.0, |x| x.0),
            sources,
            ssrcs,
            max_gap_ms,
            max_gap_at,
            changes,
            event_gap,
        });
    }

    let rtcp_flows = rtcp_order
        .iter()
        .filter_map(|k| rtcp.remove(k))
        .map(|mut acc| {
            let _ = (acc.src, acc.dst);
            let mut types: Vec<(u8, u64)> = acc.types.into_iter().collect();
            types.sort();
            acc.flow.packet_types = types;
            acc.flow.last_reports = acc.reports;
            acc.flow
        })
        .collect();

    let mut sip_dialogs: Vec<SipDialog> = Vec::new();
    for (t, src, dst, m) in sip_msgs {
        let msg = SipMessage {
            time: t,
            src: addr(&src),
            dst: addr(&dst),
            method: m.method,
            status: m.status,
            reason: m.reason,
            uri: m.uri,
            cseq: m.cseq,
            cseq_method: m.cseq_method,
            call_id: m.call_id.clone(),
            from_tag: m.from_tag,
            to_tag: m.to_tag,
            has_sdp: m.sdp.is_some(),
        };
        match sip_dialogs.iter_mut().find(|d| d.call_id == m.call_id) {
            Some(d) => d.messages.push(msg),
            None => sip_dialogs.push(SipDialog {
                call_id: m.call_id,
                messages: vec![msg],
            }),
        }
    }

    let report = Report {
        schema_version: SCHEMA_VERSION,
        file: file.map(|p| p.display().to_string()),
        format: format.name().to_string(),
        frames,
        udp_datagrams: udp_count,
        ip_fragments: fragments,
        malformed_frames: malformed,
        truncated_datagrams: truncated,
        first_time,
        last_time,
        rtp_streams,
        rtp_flows,
        rtp_sinks,
        rtcp_flows,
        sip_dialogs,
        warnings,
    };
    Ok((report, extracted))
}

/// Largest gap (ms) between consecutive (epoch time, capture-relative ms) pairs, and the
/// epoch time that ended it.
fn max_gap(times: impl Iterator<Item = (f64, f64)>) -> (f64, f64) {
    let mut prev: Option<f64> = None;
    let (mut gap, mut at) = (0.0f64, 0.0f64);
    for (t, rel) in times {
        match prev {
            Some(p) if rel - p > gap => {
                gap = rel - p;
                at = t;
            }
            None => at = t,
            _ => {}
        }
        prev = Some(rel);
    }
    (gap, at)
}

/// RTP header sanity over several packets: at least two packets, and at least half of
/// the consecutive pairs are within 100 sequence numbers of each other.
fn looks_continuous(pkts: &[Pkt]) -> bool {
    if pkts.len() < 2 {
        return false;
    }
    let close = pkts
        .windows(2)
        .filter(|w| rtp::seq_diff(w[0].hdr.seq, w[1].hdr.seq).abs() <= stream::MAX_MISORDER as i32)
        .count();
    close * 2 >= pkts.len() - 1
}
