//! `mcu pcap ...` subcommands.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::report::Report;
use crate::sip::Codec;
use crate::{analyze_path_with, Options};

/// `mcu pcap <command>`.
#[derive(clap::Subcommand, Debug)]
pub enum PcapCommand {
    /// Analyze a capture: RTP/RTCP streams, SIP dialogs, audio energy.
    Analyze(AnalyzeArgs),
    /// Replay recorded RTP streams as real SIP participants (load generator).
    Replay(ReplayArgs),
    /// Decode the VP8 video of a capture: frames decoded / corrupt / undecodable, key
    /// frames, the longest freeze, resolutions and a colour timeline per flow.
    AnalyzeVideo(AnalyzeVideoArgs),
}

/// Arguments of `mcu pcap analyze-video`.
#[derive(clap::Args, Debug)]
pub struct AnalyzeVideoArgs {
    /// Capture file (pcap or pcapng).
    pub file: std::path::PathBuf,
    /// Print the full report (every frame included) as JSON.
    #[arg(long)]
    pub json: bool,
    /// The VP8 payload type (default: from the capture's SDP, else any dynamic payload
    /// type carrying a VP8 key frame).
    #[arg(long)]
    pub pt: Option<u8>,
    /// A reference colour of the colour timeline, `NAME=R,G,B` (repeatable; default:
    /// black, white, grey, red, green, blue, yellow, cyan, magenta).
    #[arg(long = "colour", value_name = "NAME=R,G,B")]
    pub colours: Vec<String>,
    /// List every freeze at least this long (ms).
    #[arg(long, default_value_t = 200.0)]
    pub freeze_threshold_ms: f64,
}

fn analyze_video(args: AnalyzeVideoArgs) -> Result<(), String> {
    if !(args.freeze_threshold_ms.is_finite() && args.freeze_threshold_ms >= 0.0) {
        return Err(format!(
            "--freeze-threshold-ms {}: must be a non-negative number",
            args.freeze_threshold_ms
        ));
    }
    let opts = crate::video::VideoOptions {
        pt: args.pt,
        colours: args
            .colours
            .iter()
            .map(|c| crate::video::parse_colour(c))
            .collect::<Result<_, _>>()?,
        freeze_threshold_ms: args.freeze_threshold_ms,
        tiles: None,
    };
    let report = crate::video::analyze_video(&args.file, &opts).map_err(|e| e.to_string())?;
    if args.json {
        let s = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        println!("{s}");
    } else {
        print!("{}", render_video_table(&report));
    }
    Ok(())
}

/// The human-readable summary of `analyze-video` without `--json`.
pub fn render_video_table(r: &crate::video::VideoReport) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{}: {} VP8 flow(s)",
        r.file.as_deref().unwrap_or("-"),
        r.streams.len()
    );
    for (i, s) in r.streams.iter().enumerate() {
        let ssrcs: Vec<String> = s.ssrcs.iter().map(|x| format!("0x{x:08X}")).collect();
        let _ = writeln!(
            o,
            "#{i} {} -> {} pt {} ({}) ssrc {}: {} packets, {} missing, {} dup, {} reordered, \
             {} regressions, {} seq resets, {} ssrc changes",
            s.src,
            s.dst,
            s.pt,
            s.pt_source,
            ssrcs.join(","),
            s.packets,
            s.missing,
            s.duplicates,
            s.reordered,
            s.regressions,
            s.seq_resets.len(),
            s.ssrc_changes.len()
        );
        let res: Vec<String> = s
            .resolutions
            .iter()
            .map(|r| format!("{}x{} ({})", r.width, r.height, r.frames))
            .collect();
        let _ =
            writeln!(
            o,
            "   frames {}: decoded {}, corrupt {} (incomplete {}, decoder {}), undecodable {}; \
             key frames {}; picture-id jumps {}; sizes {}",
            s.frames,
            s.decoded,
            s.corrupt,
            s.incomplete,
            s.decode_errors,
            s.undecodable,
            s.keyframes,
            s.picture_id_jumps,
            if res.is_empty() { "-".into() } else { res.join(", ") }
        );
        let _ = writeln!(
            o,
            "   longest freeze {:.1} ms from {:.6} to {:.6}; {} freeze(s) listed",
            s.freeze.ms,
            s.freeze.from,
            s.freeze.to,
            s.freezes.len()
        );
        for c in &s.colour_runs {
            let _ = writeln!(
                o,
                "   colour {:<8} {:.3} .. {:.3} s ({} frames, mean Y {:.0} U {:.0} V {:.0})",
                c.colour,
                c.from - s.first_time,
                c.to - s.first_time,
                c.frames,
                c.mean_y,
                c.mean_u,
                c.mean_v
            );
        }
    }
    for w in &r.warnings {
        let _ = writeln!(o, "warning: {w}");
    }
    o
}

/// Arguments of `mcu pcap replay`.
#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// Capture files whose RTP streams become participants.
    #[arg(required = true)]
    pub files: Vec<std::path::PathBuf>,
    /// Conference to join: `sip:ROOM@HOST[:PORT]`.
    #[arg(long)]
    pub to: String,
    /// Record everything received (and the SIP sent) into this pcap.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// Local address to bind (default: the address that routes to the server).
    #[arg(long)]
    pub bind: Option<std::net::IpAddr>,
    /// Participants per selected stream.
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// Loop the recording (until --duration or Ctrl-C).
    #[arg(long = "loop")]
    pub looping: bool,
    /// Stop sending after this many seconds, then hang up.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Drop probability per packet (0..1).
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Duplicate probability per packet (0..1).
    #[arg(long, default_value_t = 0.0)]
    pub dup: f64,
    /// Reorder probability per packet (0..1): held back behind the next one.
    #[arg(long, default_value_t = 0.0)]
    pub reorder: f64,
    /// Extra send delay, uniform in [0, J] ms.
    #[arg(long, default_value_t = 0.0)]
    pub jitter_ms: f64,
    /// Seed for tags, SSRCs, sequence/timestamp starts and impairments.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Only replay streams with this SSRC (hex 0x... or decimal; repeatable).
    #[arg(long = "stream")]
    pub streams: Vec<String>,
    /// Codec for a payload type no SDP declares, e.g. `97=opus/48000/2` (repeatable).
    #[arg(long = "pt", value_name = "PT=NAME/RATE[/CH]")]
    pub pt: Vec<String>,
    /// Also record the RTP we send into --out.
    #[arg(long)]
    pub record_sent: bool,
    /// Print the per-participant summary as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_ssrc(s: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("--stream {s}: not an SSRC"))
}

fn probability(name: &str, p: f64) -> Result<f64, String> {
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("--{name} {p}: must be within 0..1"))
    }
}

fn replay(args: ReplayArgs) -> Result<(), String> {
    let mut pt_hints = HashMap::new();
    for h in &args.pt {
        let (pt, c) = parse_pt_hint(h)?;
        pt_hints.insert(pt, c);
    }
    let cfg = crate::replay::ReplayConfig {
        files: args.files,
        to: args.to,
        out: args.out,
        bind: args.bind,
        count: args.count,
        looping: args.looping,
        duration: match args.duration {
            Some(d) if d.is_finite() && d > 0.0 => Some(std::time::Duration::from_secs_f64(d)),
            Some(d) => return Err(format!("--duration {d}: must be positive")),
            None => None,
        },
        impair: crate::replay::media::Impairments {
            loss: probability("loss", args.loss)?,
            dup: probability("dup", args.dup)?,
            reorder: probability("reorder", args.reorder)?,
            jitter: std::time::Duration::from_secs_f64(args.jitter_ms.max(0.0) / 1000.0),
        },
        seed: args.seed,
        ssrcs: args
            .streams
            .iter()
            .map(|s| parse_ssrc(s))
            .collect::<Result<_, _>>()?,
        pt_hints,
        record_sent: args.record_sent,
    };
    let (summaries, notes) = crate::replay::run_replay(&cfg).map_err(|e| e.to_string())?;
    if args.json {
        let v = serde_json::json!({ "participants": summaries, "notes": notes });
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
        );
    } else {
        for s in &summaries {
            println!(
                "{} ssrc 0x{:08X} from 0x{:08X} {} sip {} rtp {}: {} sent, {} received, {}",
                s.call_id,
                s.ssrc,
                s.source_ssrc,
                s.codec,
                s.local_sip,
                s.local_rtp,
                s.rtp_sent,
                s.media_received,
                s.end_reason
            );
        }
        for n in &notes {
            println!("note: {n}");
        }
    }
    if summaries.iter().all(|s| s.established) {
        Ok(())
    } else {
        Err("some participants were not answered".into())
    }
}

/// Arguments of `mcu pcap analyze`.
#[derive(clap::Args, Debug)]
pub struct AnalyzeArgs {
    /// Capture file (pcap or pcapng).
    pub file: std::path::PathBuf,
    /// Print the full report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write one WAV per decoded stream into this directory.
    #[arg(long)]
    pub wav: Option<std::path::PathBuf>,
    /// Codec for a payload type no SDP in the capture declares, e.g. `97=opus/48000/2`
    /// (repeatable).
    #[arg(long = "pt", value_name = "PT=NAME/RATE[/CH]")]
    pub pt: Vec<String>,
    /// A moment (seconds since the Unix epoch, the capture's clock; e.g. when a server was
    /// killed): report each stream's and sink's largest arrival gap across it (`event_gap`
    /// in the JSON, an `event gap` line per stream in the table).
    #[arg(long, value_name = "UNIX_SECONDS")]
    pub event: Option<f64>,
    /// With `--event`: only gaps starting less than this many seconds after it count.
    #[arg(long, value_name = "SECONDS", default_value_t = crate::analyze::Event::DEFAULT_WITHIN_S)]
    pub event_window: f64,
}

/// Parse `97=opus/48000/2` into a payload type and codec.
pub fn parse_pt_hint(s: &str) -> Result<(u8, Codec), String> {
    let (pt, enc) = s
        .split_once('=')
        .ok_or_else(|| format!("--pt {s}: expected PT=NAME/RATE[/CH]"))?;
    let pt: u8 = pt
        .trim()
        .parse()
        .ok()
        .filter(|p| *p < 128)
        .ok_or_else(|| format!("--pt {s}: bad payload type"))?;
    let mut parts = enc.split('/');
    let name = parts.next().unwrap_or("").to_string();
    let rate = parts
        .next()
        .and_then(|r| r.parse().ok())
        .ok_or_else(|| format!("--pt {s}: bad clock rate"))?;
    let channels = parts.next().and_then(|c| c.parse().ok());
    Ok((
        pt,
        Codec {
            name,
            rate,
            channels,
        },
    ))
}

/// Run a pcap subcommand, printing to stdout. Errors are human-readable.
pub fn run(cmd: PcapCommand) -> Result<(), String> {
    match cmd {
        PcapCommand::Analyze(args) => {
            let mut pt_hints = HashMap::new();
            for h in &args.pt {
                let (pt, c) = parse_pt_hint(h)?;
                pt_hints.insert(pt, c);
            }
            let event = match args.event {
                None => None,
                Some(t)
                    if t.is_finite()
                        && args.event_window.is_finite()
                        && args.event_window > 0.0 =>
                {
                    Some(crate::analyze::Event {
                        time: t,
                        within_s: args.event_window,
                    })
                }
                Some(t) => {
                    return Err(format!(
                        "--event {t} --event-window {}: a time and a positive window",
                        args.event_window
                    ))
                }
            };
            let opts = Options {
                pt_hints,
                wav_dir: args.wav.clone(),
                no_decode: false,
                event,
            };
            let report = analyze_path_with(&args.file, &opts).map_err(|e| e.to_string())?;
            if args.json {
                let s = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
                println!("{s}");
            } else {
                print!("{}", render_table(&report));
            }
            Ok(())
        }
        PcapCommand::Replay(args) => replay(args),
        PcapCommand::AnalyzeVideo(args) => analyze_video(args),
    }
}

/// The compact human-readable summary printed without `--json`.
pub fn render_table(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{} ({}): {} frames, {} UDP, {} RTP streams, {} RTCP flows, {} SIP dialogs",
        r.file.as_deref().unwrap_or("-"),
        r.format,
        r.frames,
        r.udp_datagrams,
        r.rtp_streams.len(),
        r.rtcp_flows.len(),
        r.sip_dialogs.len()
    );
    if !r.rtp_streams.is_empty() {
        let _ = writeln!(
            o,
            "{:<2} {:<22} {:<22} {:<10} {:<14} {:>6} {:>5} {:>4} {:>4} {:>4} {:>8} {:>8} {:>7} {:>5} {:>4} {:>7}",
            "#", "src", "dst", "ssrc", "codec", "pkts", "lost", "dup", "reo", "rst", "maxgap", "gap@s",
            "jitter", "tserr", "mrk", "maxdBFS"
        );
        for (i, s) in r.rtp_streams.iter().enumerate() {
            let rel = s.max_gap_at - r.first_time.unwrap_or(s.first_time);
            let maxdb = s
                .energy_dbfs
                .iter()
                .cloned()
                .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
            let _ = writeln!(
                o,
                "{:<2} {:<22} {:<22} {:<10} {:<14} {:>6} {:>5} {:>4} {:>4} {:>4} {:>8.3} {:>8.3} {:>7.3} {:>5} {:>4} {:>7}",
                i,
                s.src,
                s.dst,
                s.ssrc_hex,
                s.codec,
                s.packets,
                s.lost,
                s.duplicates,
                s.reordered,
                s.seq_resets,
                s.max_gap_ms,
                rel,
                s.jitter_ms,
                s.ts_errors,
                s.markers,
                maxdb.map_or("-".to_string(), |d| format!("{d:.1}"))
            );
        }
    }
    for (i, s) in r.rtp_streams.iter().enumerate() {
        if let Some(g) = &s.event_gap {
            let _ = writeln!(
                o,
                "event gap #{i} {} -> {}: {:.3} ms from {:.6} to {:.6} (seq +{})",
                s.src,
                s.dst,
                g.gap_ms,
                g.from_time,
                g.to_time,
                g.seq_step.unwrap_or(0)
            );
        }
    }
    for f in &r.rtp_flows {
        for c in &f.ssrc_changes {
            let _ = writeln!(
                o,
                "ssrc change {} -> {} at {:.6}: 0x{:08X} -> 0x{:08X}",
                f.src, f.dst, c.time, c.from, c.to
            );
        }
    }
    for d in &r.sip_dialogs {
        let _ = writeln!(o, "SIP Call-ID {}", d.call_id);
        for m in &d.messages {
            let what = match (&m.method, m.status) {
                (Some(meth), _) => meth.clone(),
                (None, Some(st)) => format!("{st} {}", m.reason.as_deref().unwrap_or("")),
                _ => "?".into(),
            };
            let _ = writeln!(
                o,
                "  {:.6} {} -> {} {} (CSeq {} {}){}",
                m.time,
                m.src,
                m.dst,
                what.trim(),
                m.cseq,
                m.cseq_method,
                if m.has_sdp { " +SDP" } else { "" }
            );
        }
    }
    for w in &r.warnings {
        let _ = writeln!(o, "warning: {w}");
    }
    o
}
