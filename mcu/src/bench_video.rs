//! `mcu bench video-clients`: synthetic SIP participants with Opus audio and VP8 video for
//! the video load benchmark (`scripts/bench-video`), doing what a video phone does on the
//! wire and nothing more. (sipp cannot: one `play_pcap_*` per call, no RTCP.)
//!
//! Each client: its own SIP socket and RTP/RTCP port pairs for audio and video (RTCP on the
//! next port, no rtcp-mux); an INVITE to `sip:{room}@server` offering Opus (PT 97) and VP8
//! (PT 96, `nack`, `nack pli`, `ccm fir`, sendrecv), retransmitted on RFC 3261's timer A
//! until the final response, then ACK. Then for `--secs` seconds:
//!
//! - audio: one 20 ms Opus packet every 20 ms (talkers replay speech, listeners quiet noise
//!   at about -50 dBFS, both encoded once up front by libopus, as `mcu bench webrtc-clients`
//!   does), so that the room's speaker detector picks the talker;
//! - video (`--video PCAP`): the camera replays a recorded VP8 RTP stream frame by frame at
//!   the pace of its RTP timestamps, with its own SSRC, sequence numbers, timestamps and
//!   15-bit picture IDs, looping (the recording starts with a keyframe). A PLI or a new FIR
//!   for its SSRC makes the next frame a keyframe (the replay jumps to the recording's next
//!   keyframe), as an encoder answers one;
//! - RTCP every `--rtcp-interval-ms` on each RTCP port: SR for its own stream, one report
//!   block for the stream it receives most of (fraction and cumulative loss, extended highest
//!   sequence number, interarrival jitter, LSR/DLSR), SDES CNAME;
//! - every datagram from the server counted: RTP packets, SSRCs and loss (from sequence
//!   numbers) per kind, keyframes received, RTCP, keyframe requests and NACKs.
//!
//! Finally BYE (earlier on SIGTERM or SIGINT: every client stops its media and hangs up, so
//! that a script can end the load when its measurement is over). Without `--video` the same clients are audio-only (the offer has no video
//! line): the benchmark's baseline. All clients run on one thread (a current-thread tokio
//! runtime) so that the generator stays cheap next to the server it measures.

use crate::bench_webrtc::{encode, quiet_noise, random_bytes, synthetic_speech, SeqTrack};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use hyper::body::Bytes;
use rtc_rtcp::packet::Packet as RtcpPacket;
use rtc_rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc_rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc_rtcp::reception_report::ReceptionReport;
use rtc_rtcp::sender_report::SenderReport;
use rtc_rtcp::source_description::{
    SdesType, SourceDescription, SourceDescriptionChunk, SourceDescriptionItem,
};
use rtc_rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use sip_core::inspect::{media_summary, SipMessage};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::net::UdpSocket;
use video::vp8::{self, Descriptor, PICTURE_ID_MODULUS};

/// The offer's Opus payload type (as `scripts/bench/load_opus.xml.in`).
const OPUS_PT: u8 = 97;
/// The offer's VP8 payload type.
const VP8_PT: u8 = 96;
/// One Opus frame: 20 ms at 48 kHz.
const OPUS_FRAME: u32 = 960;
/// Audio packet interval.
const PTIME: Duration = Duration::from_millis(20);
/// RFC 3261 T1: the first INVITE/BYE retransmission interval (doubled up to T2 = 4 s).
const T1: Duration = Duration::from_millis(500);
/// How long the INVITE or BYE transaction may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);
/// After the media phase: how long the sockets are still read for what was in flight.
const DRAIN: Duration = Duration::from_millis(200);
/// A camera this far behind its schedule (the generator was starved) restarts its clock
/// instead of bursting the missed frames.
const MAX_LAG: Duration = Duration::from_secs(1);
/// Seconds from 1900 (NTP) to 1970 (Unix).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// Arguments of `mcu bench video-clients`.
#[derive(Args, Debug)]
pub struct VideoClientsArgs {
    /// The server's SIP address (UDP).
    #[arg(long)]
    sip: SocketAddr,
    /// Room names are this prefix followed by the room's number (0..rooms).
    #[arg(long, default_value = "bench")]
    room_prefix: String,
    /// Number of rooms.
    #[arg(long)]
    rooms: usize,
    /// Clients per room.
    #[arg(long)]
    per_room: usize,
    /// Seconds each client sends media, from its ACK (at most: SIGTERM ends it earlier).
    #[arg(long)]
    secs: f64,
    /// Talkers per room (the first clients of each room); the others are listeners.
    #[arg(long, default_value_t = 1)]
    talkers_per_room: usize,
    /// Clients started per second.
    #[arg(long, default_value_t = 50.0)]
    join_rate: f64,
    /// Every client's camera: a capture (pcap or pcapng) of VP8 RTP; its first SSRC that
    /// carries a VP8 keyframe is replayed. Without it the clients are audio-only.
    #[arg(long)]
    video: Option<PathBuf>,
    /// Talkers' audio: raw signed 16-bit little-endian mono PCM at 48 kHz (e.g. espeak-ng
    /// speech converted with ffmpeg); a synthetic speech-like signal without it.
    #[arg(long)]
    talker_pcm: Option<PathBuf>,
    /// Opus bitrate in bits/s.
    #[arg(long, default_value_t = 24_000)]
    bitrate: i32,
    /// Local address of the clients' sockets.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Media ports of the clients, FIRST-LAST (keep them out of the server's range);
    /// ephemeral pairs without it.
    #[arg(long)]
    ports: Option<String>,
    /// RTCP report interval in milliseconds (audio and video).
    #[arg(long, default_value_t = 1000)]
    rtcp_interval_ms: u64,
    /// Print one line per client.
    #[arg(long)]
    per_client: bool,
}

/// What one client did, for the report.
#[derive(Default, Debug)]
struct Report {
    room: String,
    talker: bool,
    /// The INVITE was answered 200 and ACKed.
    joined: bool,
    /// Why it stopped early, if it did.
    error: Option<String>,
    /// INVITE to 200 OK.
    join_ms: f64,
    audio_out: u64,
    video_out: u64,
    frames_out: u64,
    keyframes_out: u64,
    /// Times the camera fell more than [`MAX_LAG`] behind (the generator was starved) and
    /// skipped to now, and the media time skipped.
    camera_stalls: u64,
    camera_skipped: f64,
    /// PLIs and new FIRs for our SSRC (each answered with a keyframe).
    key_requests_in: u64,
    nacks_in: u64,
    audio_in: u64,
    audio_ssrcs: usize,
    audio_lost: u64,
    video_in: u64,
    video_bytes_in: u64,
    video_ssrcs: usize,
    video_lost: u64,
    video_keyframes_in: u64,
    rtcp_out: u64,
    rtcp_in: u64,
    /// Sender reports among `rtcp_in`.
    sr_in: u64,
    /// Seconds of media (ACK to BYE).
    media_secs: f64,
    /// BYE answered 200.
    bye_ok: bool,
    /// The server ended the call (BYE from it).
    ended_by_server: bool,
}

/// One frame of the recorded camera stream.
struct Frame {
    key: bool,
    /// RTP timestamp units (90 kHz) until the next frame.
    duration: u32,
    /// RTP payloads (VP8 payload descriptor and data), in order.
    payloads: Vec<Vec<u8>>,
}

/// A VP8 RTP recording, cut to whole frames from its first keyframe.
struct Recording {
    frames: Vec<Frame>,
}

impl Recording {
    /// The recording of `path`: the first SSRC carrying a VP8 keyframe start.
    fn load(path: &Path) -> Result<Recording> {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let mut datagrams = Vec::new();
        pcap_harness::capture::for_each_frame(&data, |f| {
            if let Ok(u) = pcap_harness::net::decode_udp(f.linktype, f.data) {
                if !u.truncated {
                    datagrams.push(u.payload.to_vec());
                }
            }
        })
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let rtp: Vec<Rtp> = datagrams.iter().filter_map(|d| Rtp::parse(d)).collect();
        let first = rtp
            .iter()
            .find(|p| vp8::is_keyframe_start(p.payload))
            .ok_or_else(|| anyhow!("{}: no VP8 keyframe in any RTP stream", path.display()))?;
        let (ssrc, pt) = (first.ssrc, first.pt);
        let stream: Vec<&Rtp> = rtp
            .iter()
            .filter(|p| p.ssrc == ssrc && p.pt == pt)
            .skip_while(|p| !vp8::is_keyframe_start(p.payload))
            .collect();
        let gaps = stream
            .windows(2)
            .filter(|w| w[1].seq != w[0].seq.wrapping_add(1))
            .count();
        if gaps > 0 {
            bail!(
                "{}: SSRC {ssrc:#x} has {gaps} sequence gaps: record it again",
                path.display()
            );
        }
        let mut frames: Vec<Frame> = Vec::new();
        let mut ts = Vec::new();
        let mut complete = true;
        for p in stream {
            if ts.last() != Some(&p.ts) {
                if !complete {
                    bail!("{}: a frame without its marker packet", path.display());
                }
                let d = Descriptor::parse(p.payload)
                    .map_err(|e| anyhow!("{}: VP8 descriptor: {e}", path.display()))?;
                if !d.starts_frame() {
                    bail!(
                        "{}: a frame that does not start a partition",
                        path.display()
                    );
                }
                frames.push(Frame {
                    key: vp8::is_keyframe_start(p.payload),
                    duration: 0,
                    payloads: Vec::new(),
                });
                ts.push(p.ts);
            }
            Descriptor::parse(p.payload)
                .map_err(|e| anyhow!("{}: VP8 descriptor: {e}", path.display()))?;
            if let Some(f) = frames.last_mut() {
                f.payloads.push(p.payload.to_vec());
            }
            complete = p.marker;
        }
        if !complete {
            frames.pop(); // the capture stopped inside the last frame
            ts.pop();
        }
        if frames.len() < 2 {
            bail!("{}: fewer than two whole VP8 frames", path.display());
        }
        for i in 0..frames.len() - 1 {
            frames[i].duration = ts[i + 1].wrapping_sub(ts[i]);
        }
        let n = frames.len();
        frames[n - 1].duration = frames[n - 2].duration;
        if frames
            .iter()
            .any(|f| f.duration == 0 || f.duration > 90_000)
        {
            bail!(
                "{}: frame intervals outside (0, 1 s]: not a live recording",
                path.display()
            );
        }
        Ok(Recording { frames })
    }

    /// The index of the first keyframe at or after `i` (wrapping: frame 0 is one).
    fn next_key(&self, i: usize) -> usize {
        (i..self.frames.len())
            .find(|&k| self.frames[k].key)
            .unwrap_or(0)
    }

    fn describe(&self) -> String {
        let ticks: u64 = self.frames.iter().map(|f| u64::from(f.duration)).sum();
        let secs = ticks as f64 / 90_000.0;
        let packets: usize = self.frames.iter().map(|f| f.payloads.len()).sum();
        let bytes: usize = self
            .frames
            .iter()
            .flat_map(|f| &f.payloads)
            .map(|p| p.len() + 12)
            .sum();
        let keys = self.frames.iter().filter(|f| f.key).count();
        let size = self
            .frames
            .first()
            .and_then(|f| f.payloads.first())
            .and_then(|p| {
                let d = Descriptor::parse(p).ok()?;
                vp8::keyframe_size(&p[d.len..])
            })
            .map(|s| format!("{}x{}", s.width, s.height))
            .unwrap_or_else(|| "?".into());
        format!(
            "{size}, {} frames in {secs:.1} s ({:.1} fps), {keys} keyframes, {:.0} packets/s, {:.0} kbit/s (RTP)",
            self.frames.len(),
            self.frames.len() as f64 / secs,
            packets as f64 / secs,
            bytes as f64 * 8.0 / secs / 1000.0
        )
    }
}

/// The fields of an RTP packet the clients use (CSRCs, extension and padding skipped).
struct Rtp<'a> {
    pt: u8,
    marker: bool,
    seq: u16,
    ts: u32,
    ssrc: u32,
    payload: &'a [u8],
}

impl<'a> Rtp<'a> {
    fn parse(d: &'a [u8]) -> Option<Rtp<'a>> {
        if d.len() < 12 || d[0] >> 6 != 2 {
            return None;
        }
        let pt = d[1] & 0x7f;
        if (64..=95).contains(&pt) {
            return None; // RTCP (RFC 5761)
        }
        let mut start = 12 + 4 * usize::from(d[0] & 0x0f);
        if d[0] & 0x10 != 0 {
            let ext = d.get(start + 2..start + 4)?;
            start += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
        }
        let mut end = d.len();
        if d[0] & 0x20 != 0 {
            end = end.checked_sub(usize::from(*d.last()?))?;
        }
        Some(Rtp {
            pt,
            marker: d[1] & 0x80 != 0,
            seq: u16::from_be_bytes([d[2], d[3]]),
            ts: u32::from_be_bytes([d[4], d[5], d[6], d[7]]),
            ssrc: u32::from_be_bytes([d[8], d[9], d[10], d[11]]),
            payload: d.get(start..end).filter(|p| !p.is_empty())?,
        })
    }
}

/// Shared by every client: the media and the setup bookkeeping.
struct Common {
    sip: SocketAddr,
    bind: IpAddr,
    secs: Duration,
    rtcp_interval: Duration,
    talk: Vec<Vec<u8>>,
    noise: Vec<Vec<u8>>,
    video: Option<Recording>,
    ports: Option<PortRange>,
    /// Clients whose setup is over (joined or failed).
    settled: AtomicUsize,
    joined: AtomicUsize,
    total: usize,
    /// Becomes true on SIGTERM or SIGINT: the media phase ends.
    stop: tokio::sync::watch::Receiver<bool>,
}

/// Client media ports, handed out in pairs.
struct PortRange {
    next: AtomicU32,
    last: u32,
}

/// Run `mcu bench video-clients`.
pub fn run(a: &VideoClientsArgs) -> Result<()> {
    if a.rooms == 0 || a.per_room == 0 || !a.secs.is_finite() || a.secs <= 0.0 {
        bail!("--rooms, --per-room and --secs must be positive");
    }
    if !a.join_rate.is_finite() || a.join_rate <= 0.0 || a.rtcp_interval_ms == 0 {
        bail!("--join-rate and --rtcp-interval-ms must be positive");
    }
    let ports = match &a.ports {
        Some(r) => {
            let (first, last) = r
                .split_once('-')
                .and_then(|(f, l)| Some((f.parse::<u16>().ok()?, l.parse::<u16>().ok()?)))
                .filter(|(f, l)| f < l && *f > 0)
                .ok_or_else(|| anyhow!("--ports {r}: expected FIRST-LAST"))?;
            Some(PortRange {
                next: AtomicU32::new(u32::from(first)),
                last: u32::from(last),
            })
        }
        None => None,
    };
    let total = a.rooms * a.per_room;
    let t0 = Instant::now();
    let talk_pcm = match &a.talker_pcm {
        Some(p) => {
            let raw = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            raw.chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect()
        }
        None => synthetic_speech(10.0),
    };
    let talk = encode(&talk_pcm, a.bitrate).context("encoding the talkers' audio")?;
    let noise = encode(&quiet_noise(5.0, 0.003), a.bitrate).context("encoding the noise")?;
    if talk.is_empty() {
        bail!("the talkers' audio is shorter than one 20 ms frame");
    }
    let video = a.video.as_deref().map(Recording::load).transpose()?;
    eprintln!(
        "video-clients: Opus encoded once in {:.0} ms ({} talk and {} noise frames); camera: {}",
        t0.elapsed().as_secs_f64() * 1000.0,
        talk.len(),
        noise.len(),
        video
            .as_ref()
            .map(Recording::describe)
            .unwrap_or_else(|| "none (audio only)".into())
    );
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let common = Arc::new(Common {
        sip: a.sip,
        bind: a.bind,
        secs: Duration::from_secs_f64(a.secs),
        rtcp_interval: Duration::from_millis(a.rtcp_interval_ms),
        talk,
        noise,
        video,
        ports,
        settled: AtomicUsize::new(0),
        joined: AtomicUsize::new(0),
        total,
        stop,
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let reports = rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let (mut term, mut int) = (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        );
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            eprintln!("video-clients: stopping (signal): every client hangs up");
            let _ = stop_tx.send(true);
        });
        let start = tokio::time::Instant::now();
        let mut tasks = Vec::with_capacity(total);
        for i in 0..total {
            let (room, slot) = (i % a.rooms, i / a.rooms);
            let room = format!("{}{room}", a.room_prefix);
            let talker = slot < a.talkers_per_room;
            let at = start + Duration::from_secs_f64(i as f64 / a.join_rate);
            let c = common.clone();
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                client(i, room, talker, c).await
            }));
        }
        let mut reports = Vec::with_capacity(total);
        for t in tasks {
            reports.push(t.await.unwrap_or_else(|e| Report {
                error: Some(format!("task: {e}")),
                ..Report::default()
            }));
        }
        anyhow::Ok(reports)
    })?;
    print_reports(&reports, a.per_client, common.video.is_some());
    Ok(())
}

fn print_reports(reports: &[Report], per_client: bool, video: bool) {
    let mut sum = Report::default();
    let (mut joined, mut bye_ok, mut by_server, mut failed) = (0, 0, 0, 0);
    let mut join_ms = Vec::new();
    // By role (talker, listener): clients with 0, 1, more video SSRCs received.
    let mut ssrcs: HashMap<(bool, usize), usize> = HashMap::new();
    let mut video_in_min = [u64::MAX; 2];
    for (i, r) in reports.iter().enumerate() {
        if per_client || r.error.is_some() {
            println!(
                "client {i} room {} {}: joined {} ({:.1} ms), audio out {} in {} (ssrcs {}, lost {}), \
                 video out {} ({} frames, {} keyframes) in {} (ssrcs {}, lost {}, keyframes {}), \
                 key requests {}, nacks {}, rtcp out {} in {} (sr {}), bye {}{}{}",
                r.room,
                if r.talker { "talker" } else { "listener" },
                r.joined,
                r.join_ms,
                r.audio_out,
                r.audio_in,
                r.audio_ssrcs,
                r.audio_lost,
                r.video_out,
                r.frames_out,
                r.keyframes_out,
                r.video_in,
                r.video_ssrcs,
                r.video_lost,
                r.video_keyframes_in,
                r.key_requests_in,
                r.nacks_in,
                r.rtcp_out,
                r.rtcp_in,
                r.sr_in,
                r.bye_ok,
                if r.ended_by_server {
                    ", ended by the server"
                } else {
                    ""
                },
                r.error
                    .as_ref()
                    .map(|e| format!(", error: {e}"))
                    .unwrap_or_default()
            );
        }
        failed += usize::from(r.error.is_some());
        joined += usize::from(r.joined);
        bye_ok += usize::from(r.bye_ok);
        by_server += usize::from(r.ended_by_server);
        if r.joined {
            join_ms.push(r.join_ms);
            *ssrcs.entry((r.talker, r.video_ssrcs.min(2))).or_default() += 1;
            let m = &mut video_in_min[usize::from(!r.talker)];
            *m = (*m).min(r.video_in);
        }
        sum.audio_out += r.audio_out;
        sum.video_out += r.video_out;
        sum.frames_out += r.frames_out;
        sum.keyframes_out += r.keyframes_out;
        sum.key_requests_in += r.key_requests_in;
        sum.nacks_in += r.nacks_in;
        sum.audio_in += r.audio_in;
        sum.audio_lost += r.audio_lost;
        sum.video_in += r.video_in;
        sum.video_bytes_in += r.video_bytes_in;
        sum.video_lost += r.video_lost;
        sum.video_keyframes_in += r.video_keyframes_in;
        sum.rtcp_out += r.rtcp_out;
        sum.rtcp_in += r.rtcp_in;
        sum.sr_in += r.sr_in;
        sum.media_secs += r.media_secs;
        sum.camera_stalls += r.camera_stalls;
        sum.camera_skipped += r.camera_skipped;
    }
    join_ms.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        join_ms
            .get(((join_ms.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    println!(
        "video-clients: {joined}/{} joined (INVITE to 200 p50 {:.1} ms, p99 {:.1} ms), {failed} with errors, \
         {bye_ok} BYEs answered, {by_server} ended by the server",
        reports.len(),
        pct(0.5),
        pct(0.99)
    );
    println!(
        "video-clients: sent audio {} video {} RTP ({} frames, {} keyframes, {} keyframe requests answered), \
         RTCP {}; received audio {} (lost {}) video {} (lost {}, {} keyframes, {:.0} kbit/s per client) RTP, \
         RTCP {} ({} SR), {} NACKs",
        sum.audio_out,
        sum.video_out,
        sum.frames_out,
        sum.keyframes_out,
        sum.key_requests_in,
        sum.rtcp_out,
        sum.audio_in,
        sum.audio_lost,
        sum.video_in,
        sum.video_lost,
        sum.video_keyframes_in,
        sum.video_bytes_in as f64 * 8.0 / sum.media_secs.max(0.001) / 1000.0,
        sum.rtcp_in,
        sum.sr_in,
        sum.nacks_in
    );
    if video {
        println!(
            "video-clients: camera stalls (the generator starved over {} ms, frames skipped): {} ({:.1} s of video in all)",
            MAX_LAG.as_millis(),
            sum.camera_stalls,
            sum.camera_skipped
        );
        for (talker, role) in [(false, "listeners"), (true, "talkers")] {
            let n = |k| ssrcs.get(&(talker, k)).copied().unwrap_or(0);
            let min = video_in_min[usize::from(!talker)];
            println!(
                "video-clients: video SSRCs received, {role}: one {}, none {}, several {}; fewest video packets received {}",
                n(1),
                n(0),
                n(2),
                if min == u64::MAX { 0 } else { min }
            );
        }
    }
}

// ---- one client ------------------------------------------------------------------------

/// A client's sockets and SIP dialog.
struct Call {
    sip: UdpSocket,
    local: SocketAddr,
    /// The server's SIP address.
    server: SocketAddr,
    audio: (UdpSocket, UdpSocket),
    video: Option<(UdpSocket, UdpSocket)>,
    call_id: String,
    from_tag: String,
    to_tag: Option<String>,
    room: String,
    index: usize,
    cseq: u32,
    /// The server's audio and video RTP addresses (RTCP: the next port).
    server_audio: SocketAddr,
    server_video: Option<SocketAddr>,
}

async fn client(index: usize, room: String, talker: bool, c: Arc<Common>) -> Report {
    let mut r = Report {
        room: room.clone(),
        talker,
        ..Report::default()
    };
    let call = join(index, room, &c, &mut r).await;
    if r.joined {
        c.joined.fetch_add(1, Ordering::Relaxed);
    }
    settled(&c);
    let mut call = match call {
        Ok(call) => call,
        Err(e) => {
            r.error = Some(format!("{e:#}"));
            return r;
        }
    };
    if let Err(e) = media(index, talker, &c, &call, &mut r).await {
        r.error = Some(format!("media: {e:#}"));
    }
    if !r.ended_by_server {
        match bye(&mut call).await {
            Ok(()) => r.bye_ok = true,
            Err(e) => {
                r.error.get_or_insert(format!("BYE: {e:#}"));
            }
        }
    }
    r
}

/// One more client is past its setup; the last one says so on stderr (the script waits for
/// that line before it measures).
fn settled(c: &Common) {
    if c.settled.fetch_add(1, Ordering::AcqRel) + 1 == c.total {
        eprintln!(
            "video-clients: setup done: {}/{} joined",
            c.joined.load(Ordering::Acquire),
            c.total
        );
    }
}

/// An RTP/RTCP pair on consecutive ports: from the client range, else ephemeral.
async fn bind_pair(c: &Common) -> Result<(UdpSocket, UdpSocket)> {
    for _ in 0..200 {
        let port = match &c.ports {
            Some(r) => {
                let p = r.next.fetch_add(2, Ordering::Relaxed);
                if p + 1 > r.last {
                    bail!("the client port range is used up");
                }
                p as u16
            }
            None => {
                let s = UdpSocket::bind(SocketAddr::new(c.bind, 0)).await?;
                let p = s.local_addr()?.port();
                if p == u16::MAX {
                    continue;
                }
                drop(s);
                p
            }
        };
        let Ok(rtp) = UdpSocket::bind(SocketAddr::new(c.bind, port)).await else {
            continue;
        };
        if let Ok(rtcp) = UdpSocket::bind(SocketAddr::new(c.bind, port + 1)).await {
            return Ok((rtp, rtcp));
        }
    }
    bail!("no free RTP/RTCP port pair")
}

/// Sockets, INVITE, 200 OK, ACK.
async fn join(index: usize, room: String, c: &Common, r: &mut Report) -> Result<Call> {
    let sip = UdpSocket::bind(SocketAddr::new(c.bind, 0)).await?;
    let local = sip.local_addr()?;
    let audio = bind_pair(c).await?;
    let video = match c.video {
        Some(_) => Some(bind_pair(c).await?),
        None => None,
    };
    let [a, b, x, y, z, w] = random_bytes();
    let mut call = Call {
        call_id: format!(
            "bench-video-{}-{index}-{:02x}{:02x}{:02x}@{}",
            std::process::id(),
            a,
            b,
            x,
            c.bind
        ),
        from_tag: format!("bv{index}-{y:02x}{z:02x}{w:02x}"),
        to_tag: None,
        sip,
        local,
        server: c.sip,
        audio,
        video,
        room,
        index,
        cseq: 1,
        server_audio: local,
        server_video: None,
    };
    let offer = call.offer()?;
    let invite = call.request("INVITE", &offer);
    let t = Instant::now();
    let ok = call.transact(&invite, "INVITE").await?;
    r.join_ms = t.elapsed().as_secs_f64() * 1000.0;
    call.to_tag = ok.to_tag();
    let body = std::str::from_utf8(ok.body()).context("200 OK body")?;
    let media = media_summary(body).map_err(|e| anyhow!("the answer's SDP: {e:?}"))?;
    let addr = |kind: &str| {
        media
            .iter()
            .find(|m| m.media == kind)
            .and_then(|m| m.addr)
            .filter(|a| a.port() != 0)
    };
    call.server_audio = addr("audio").ok_or_else(|| anyhow!("the answer has no audio"))?;
    if call.video.is_some() {
        call.server_video =
            Some(addr("video").ok_or_else(|| anyhow!("the answer declined the video"))?);
    }
    let ack = call.request("ACK", "");
    call.sip.send_to(ack.as_bytes(), c.sip).await?;
    r.joined = true;
    Ok(call)
}

impl Call {
    fn offer(&self) -> Result<String> {
        let ip = self.local.ip();
        let ap = self.audio.0.local_addr()?.port();
        let mut sdp = format!(
            "v=0\r\no=bench {} 1 IN IP4 {ip}\r\ns=bench\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
             m=audio {ap} RTP/AVP {OPUS_PT}\r\na=rtpmap:{OPUS_PT} opus/48000/2\r\n\
             a=fmtp:{OPUS_PT} useinbandfec=1\r\na=ptime:20\r\na=sendrecv\r\n",
            self.index
        );
        if let Some((v, _)) = &self.video {
            sdp += &format!(
                "m=video {} RTP/AVP {VP8_PT}\r\na=rtpmap:{VP8_PT} VP8/90000\r\n\
                 a=rtcp-fb:{VP8_PT} nack\r\na=rtcp-fb:{VP8_PT} nack pli\r\n\
                 a=rtcp-fb:{VP8_PT} ccm fir\r\na=sendrecv\r\n",
                v.local_addr()?.port()
            );
        }
        Ok(sdp)
    }

    /// A request in the dialog (CSeq `self.cseq`; an ACK takes the INVITE's).
    fn request(&self, method: &str, body: &str) -> String {
        let [a, b, c, d] = random_bytes();
        let branch = format!("z9hG4bK{a:02x}{b:02x}{c:02x}{d:02x}{}", self.cseq);
        let to_tag = self
            .to_tag
            .as_ref()
            .map(|t| format!(";tag={t}"))
            .unwrap_or_default();
        let ctype = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        format!(
            "{method} sip:{room}@{srv} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:bench{i}@{local}>;tag={ft}\r\nTo: <sip:{room}@{srv}>{to_tag}\r\n\
             Call-ID: {cid}\r\nCSeq: {cseq} {method}\r\nContact: <sip:bench{i}@{local}>\r\n\
             User-Agent: mcu-bench-video-clients\r\n{ctype}Content-Length: {len}\r\n\r\n{body}",
            room = self.room,
            srv = self.server,
            local = self.local,
            i = self.index,
            ft = self.from_tag,
            cid = self.call_id,
            cseq = self.cseq,
            len = body.len(),
        )
    }

    /// Send `msg` and retransmit it (T1, doubling to 4 s) until a final response to
    /// `method` arrives: the 2xx, or an error for anything else (a non-2xx INVITE response
    /// is ACKed).
    async fn transact(&mut self, msg: &str, method: &str) -> Result<SipMessage> {
        let server = self.server;
        let deadline = tokio::time::Instant::now() + SETUP_TIMEOUT;
        let mut interval = T1;
        let mut buf = vec![0u8; 65536];
        loop {
            self.sip.send_to(msg.as_bytes(), server).await?;
            let retry = (tokio::time::Instant::now() + interval).min(deadline);
            interval = (interval * 2).min(Duration::from_secs(4));
            while let Ok(got) = tokio::time::timeout_at(retry, self.sip.recv_from(&mut buf)).await {
                let (n, _) = got?;
                let Ok(m) = SipMessage::parse(&buf[..n]) else {
                    continue;
                };
                let ours = m.call_id().as_deref() == Some(self.call_id.as_str())
                    && m.cseq()
                        .is_some_and(|(n, meth)| n == self.cseq && meth == method);
                match m.status() {
                    Some(s) if ours && s >= 200 => {
                        if s < 300 {
                            return Ok(m);
                        }
                        if method == "INVITE" {
                            self.to_tag = m.to_tag();
                            let ack = self.request("ACK", "");
                            self.sip.send_to(ack.as_bytes(), server).await?;
                        }
                        bail!(
                            "{method}: {s} {}",
                            m.reason().unwrap_or_default().escape_debug()
                        );
                    }
                    None => {
                        self.answer_request(&m, server).await?;
                    }
                    _ => {}
                }
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{method}: no final response in {} s",
                    SETUP_TIMEOUT.as_secs()
                );
            }
        }
    }

    /// Answer a request from the server 200 OK (BYE, OPTIONS, INFO...): the response
    /// echoes its Via, From, To, Call-ID and CSeq. Returns whether it was a BYE of ours.
    async fn answer_request(&self, m: &SipMessage, server: SocketAddr) -> Result<bool> {
        let Some(method) = m.method() else {
            return Ok(false);
        };
        if method == "ACK" {
            return Ok(false);
        }
        let mut resp = String::from("SIP/2.0 200 OK\r\n");
        for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
            for v in m.header(name) {
                resp += &format!("{name}: {v}\r\n");
            }
        }
        resp += "Content-Length: 0\r\n\r\n";
        self.sip.send_to(resp.as_bytes(), server).await?;
        Ok(method == "BYE" && m.call_id().as_deref() == Some(self.call_id.as_str()))
    }
}

/// BYE and its 200.
async fn bye(call: &mut Call) -> Result<()> {
    call.cseq += 1;
    let bye = call.request("BYE", "");
    call.transact(&bye, "BYE").await.map(|_| ())
}

/// What a client receives of one SSRC: loss, jitter, the last sender report.
struct Inbound {
    seq: SeqTrack,
    /// Expected and received at the last report (for the fraction lost).
    prior: (u64, u64),
    /// Interarrival jitter (RFC 3550 A.8), in timestamp units.
    jitter: f64,
    /// Arrival time minus RTP timestamp of the last packet.
    transit: u32,
    /// Middle 32 bits of the NTP time of the last SR from this SSRC, and when it came.
    last_sr: Option<(u32, Instant)>,
}

impl Inbound {
    /// The SSRC's first packet, with RTP timestamp `ts`, arrived at `arrival` (timestamp
    /// units, any origin).
    fn new(seq: u16, ts: u32, arrival: u32) -> Inbound {
        Inbound {
            seq: SeqTrack::new(seq),
            prior: (0, 0),
            jitter: 0.0,
            transit: arrival.wrapping_sub(ts),
            last_sr: None,
        }
    }

    /// A further packet arrived.
    fn arrived(&mut self, seq: u16, ts: u32, arrival: u32) {
        self.seq.add(seq);
        let transit = arrival.wrapping_sub(ts);
        let d = f64::from((transit.wrapping_sub(self.transit) as i32).unsigned_abs());
        self.jitter += (d - self.jitter) / 16.0;
        self.transit = transit;
    }

    /// The reception report block about `ssrc` now (RFC 3550 section 6.4.1).
    fn report(&mut self, ssrc: u32, now: Instant) -> ReceptionReport {
        let (expected, received) = (self.seq.expected(), self.seq.received());
        let exp_int = expected.saturating_sub(self.prior.0);
        let rec_int = received.saturating_sub(self.prior.1);
        self.prior = (expected, received);
        let lost_int = exp_int.saturating_sub(rec_int);
        let fraction_lost = (lost_int << 8)
            .checked_div(exp_int)
            .map_or(0, |f| f.min(255) as u8);
        let (lsr, delay) = match self.last_sr {
            Some((lsr, at)) => (
                lsr,
                (now.duration_since(at).as_secs_f64() * 65536.0).min(f64::from(u32::MAX)) as u32,
            ),
            None => (0, 0),
        };
        ReceptionReport {
            ssrc,
            fraction_lost,
            total_lost: self.seq.lost().min(0x7f_ffff) as u32,
            last_sequence_number: self.seq.extended_highest(),
            jitter: self.jitter as u32,
            last_sender_report: lsr,
            delay,
        }
    }
}

/// One media kind's counters at a client (audio or video).
struct Leg {
    ssrc: u32,
    clock: u32,
    inbound: HashMap<u32, Inbound>,
    packets_out: u32,
    octets_out: u32,
    /// RTP timestamp of the last packet sent, and when.
    last_ts: (u32, Instant),
    cname: Bytes,
}

impl Leg {
    fn new(clock: u32, ts: u32, cname: &str) -> Leg {
        Leg {
            ssrc: u32::from_be_bytes(random_bytes()),
            clock,
            inbound: HashMap::new(),
            packets_out: 0,
            octets_out: 0,
            last_ts: (ts, Instant::now()),
            cname: Bytes::copy_from_slice(cname.as_bytes()),
        }
    }

    fn sent(&mut self, payload_len: usize, ts: u32) {
        self.packets_out = self.packets_out.wrapping_add(1);
        self.octets_out = self.octets_out.wrapping_add(payload_len as u32);
        self.last_ts = (ts, Instant::now());
    }

    /// An RTP packet from the server.
    fn received(&mut self, p: &Rtp<'_>, epoch: Instant) {
        let arrival = (epoch.elapsed().as_secs_f64() * f64::from(self.clock)) as u64 as u32;
        match self.inbound.entry(p.ssrc) {
            std::collections::hash_map::Entry::Occupied(mut s) => {
                s.get_mut().arrived(p.seq, p.ts, arrival)
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Inbound::new(p.seq, p.ts, arrival));
            }
        }
    }

    /// SR (our stream) + a report block for the SSRC we received most of + SDES CNAME.
    fn report(&mut self) -> Vec<u8> {
        let now = Instant::now();
        let main = self
            .inbound
            .iter()
            .max_by_key(|(_, s)| s.seq.received())
            .map(|(&ssrc, _)| ssrc);
        let reports = main
            .and_then(|ssrc| Some(self.inbound.get_mut(&ssrc)?.report(ssrc, now)))
            .into_iter()
            .collect();
        let since = now.duration_since(self.last_ts.1).as_secs_f64();
        let pkts: Vec<Box<dyn RtcpPacket>> = vec![
            Box::new(SenderReport {
                ssrc: self.ssrc,
                ntp_time: ntp_now(),
                rtp_time: self
                    .last_ts
                    .0
                    .wrapping_add((since * f64::from(self.clock)) as u32),
                packet_count: self.packets_out,
                octet_count: self.octets_out,
                reports,
                ..Default::default()
            }),
            Box::new(SourceDescription {
                chunks: vec![SourceDescriptionChunk {
                    source: self.ssrc,
                    items: vec![SourceDescriptionItem {
                        sdes_type: SdesType::SdesCname,
                        text: self.cname.clone(),
                    }],
                }],
            }),
        ];
        rtc_rtcp::packet::marshal(&pkts)
            .map(|b| b.to_vec())
            .unwrap_or_default()
    }

    /// An RTCP datagram from the server: records sender reports; returns the keyframe
    /// requests for our SSRC (PLI, FIR with a new sequence number) and the NACKs in it.
    fn rtcp_in(&mut self, d: &[u8], last_fir: &mut Option<u8>, r: &mut Report) -> u64 {
        let mut buf = d;
        let Ok(pkts) = rtc_rtcp::packet::unmarshal(&mut buf) else {
            return 0;
        };
        let mut keys = 0;
        for p in &pkts {
            let any = p.as_any();
            if let Some(sr) = any.downcast_ref::<SenderReport>() {
                r.sr_in += 1;
                if let Some(s) = self.inbound.get_mut(&sr.ssrc) {
                    s.last_sr = Some(((sr.ntp_time >> 16) as u32, Instant::now()));
                }
            } else if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                keys += u64::from(pli.media_ssrc == self.ssrc);
            } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                for e in fir.fir.iter().filter(|e| e.ssrc == self.ssrc) {
                    if *last_fir != Some(e.sequence_number) {
                        *last_fir = Some(e.sequence_number);
                        keys += 1;
                    }
                }
            } else if any.downcast_ref::<TransportLayerNack>().is_some() {
                r.nacks_in += 1;
            }
        }
        keys
    }
}

/// The NTP time now (RFC 3550 section 4: 32.32 fixed point seconds since 1900).
fn ntp_now() -> u64 {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    ((d.as_secs() + NTP_UNIX_OFFSET) << 32) | frac
}

/// The replaying camera of one client.
struct Camera<'a> {
    rec: &'a Recording,
    next: usize,
    seq: u16,
    ts: u32,
    picture_id: u16,
    key_wanted: bool,
}

impl Camera<'_> {
    /// The next frame's packets into `out` (reused buffers); the time until the frame
    /// after it.
    fn frame(&mut self, ssrc: u32, out: &mut Vec<Vec<u8>>, r: &mut Report) -> Duration {
        if std::mem::take(&mut self.key_wanted) {
            self.next = self.rec.next_key(self.next);
        }
        let f = &self.rec.frames[self.next];
        out.resize_with(f.payloads.len(), Vec::new);
        for (i, (p, pkt)) in f.payloads.iter().zip(out.iter_mut()).enumerate() {
            let marker = if i + 1 == f.payloads.len() { 0x80 } else { 0 };
            pkt.clear();
            pkt.extend_from_slice(&[0x80, marker | VP8_PT]);
            pkt.extend_from_slice(&self.seq.to_be_bytes());
            pkt.extend_from_slice(&self.ts.to_be_bytes());
            pkt.extend_from_slice(&ssrc.to_be_bytes());
            // Checked when the recording was loaded; an unparsable one goes out as recorded.
            if vp8::rewrite_into(p, Some(self.picture_id), None, pkt).is_err() {
                pkt.truncate(12);
                pkt.extend_from_slice(p);
            }
            self.seq = self.seq.wrapping_add(1);
        }
        r.frames_out += 1;
        r.keyframes_out += u64::from(f.key);
        self.picture_id = (self.picture_id + 1) % PICTURE_ID_MODULUS;
        self.ts = self.ts.wrapping_add(f.duration);
        self.next = (self.next + 1) % self.rec.frames.len();
        Duration::from_micros(u64::from(f.duration) * 100 / 9)
    }
}

/// `recv_from` on an optional socket (pending forever without one).
async fn recv_opt(s: Option<&UdpSocket>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match s {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// Which socket a datagram came in on.
#[derive(Clone, Copy)]
enum Port {
    AudioRtp,
    AudioRtcp,
    VideoRtp,
    VideoRtcp,
}

/// Send audio and video, report, receive and count until `c.secs` have passed.
async fn media(index: usize, talker: bool, c: &Common, call: &Call, r: &mut Report) -> Result<()> {
    let frames = if talker { &c.talk } else { &c.noise };
    let mut frame = index.wrapping_mul(37) % frames.len();
    let [a, b, x, y] = random_bytes();
    let mut aseq = u16::from_be_bytes([a, b]);
    let mut ats = u32::from_be_bytes([x, y, a, b]);
    let cname = format!("bench{index}@{}", call.local.ip());
    let mut audio = Leg::new(48_000, ats, &cname);
    let [a, b, x, y] = random_bytes();
    let mut camera = c.video.as_ref().map(|rec| Camera {
        rec,
        // Start at one of the recording's keyframes, a different one per client.
        next: {
            let keys: Vec<usize> = (0..rec.frames.len())
                .filter(|&k| rec.frames[k].key)
                .collect();
            keys[index % keys.len()]
        },
        seq: u16::from_be_bytes([a, b]),
        ts: u32::from_be_bytes([x, y, b, a]),
        picture_id: u16::from_be_bytes([y, x]) % PICTURE_ID_MODULUS,
        key_wanted: false,
    });
    let mut video = Leg::new(90_000, camera.as_ref().map(|c| c.ts).unwrap_or(0), &cname);
    let mut last_fir = None;
    let server_audio = call.server_audio;
    let server_audio_rtcp = SocketAddr::new(server_audio.ip(), server_audio.port() + 1);
    let server_video = call.server_video;
    let server_video_rtcp = server_video.map(|v| SocketAddr::new(v.ip(), v.port() + 1));
    let server_sip = call.server;
    let (arx, arx_rtcp) = (&call.audio.0, &call.audio.1);
    let vrx = call.video.as_ref().map(|v| &v.0);
    let vrx_rtcp = call.video.as_ref().map(|v| &v.1);
    let epoch = Instant::now();
    let end = tokio::time::Instant::now() + c.secs;
    let mut stop = c.stop.clone();
    let mut send = tokio::time::interval(PTIME);
    let mut rtcp = tokio::time::interval_at(
        tokio::time::Instant::now() + c.rtcp_interval,
        c.rtcp_interval,
    );
    let mut video_at = tokio::time::Instant::now();
    let mut vpkts: Vec<Vec<u8>> = Vec::new();
    let mut pkt = Vec::with_capacity(1500);
    let mut first = true;
    let (mut b1, mut b2, mut b3, mut b4, mut b5) = (
        vec![0u8; 2048],
        vec![0u8; 2048],
        vec![0u8; 2048],
        vec![0u8; 2048],
        vec![0u8; 65536],
    );
    loop {
        let got = tokio::select! {
            _ = tokio::time::sleep_until(end) => break,
            _ = stop.changed() => break,
            _ = send.tick() => {
                let payload = &frames[frame];
                frame = (frame + 1) % frames.len();
                pkt.clear();
                pkt.extend_from_slice(&[0x80, OPUS_PT | if first { 0x80 } else { 0 }]);
                pkt.extend_from_slice(&aseq.to_be_bytes());
                pkt.extend_from_slice(&ats.to_be_bytes());
                pkt.extend_from_slice(&audio.ssrc.to_be_bytes());
                pkt.extend_from_slice(payload);
                first = false;
                if arx.try_send_to(&pkt, server_audio).is_ok() {
                    r.audio_out += 1;
                    audio.sent(payload.len(), ats);
                }
                aseq = aseq.wrapping_add(1);
                ats = ats.wrapping_add(OPUS_FRAME);
                continue;
            }
            _ = tokio::time::sleep_until(video_at), if camera.is_some() => {
                if let (Some(cam), Some(to), Some(sock)) = (camera.as_mut(), server_video, vrx) {
                    let ts = cam.ts;
                    let next = cam.frame(video.ssrc, &mut vpkts, r);
                    for p in &vpkts {
                        if sock.try_send_to(p, to).is_ok() {
                            r.video_out += 1;
                            video.sent(p.len() - 12, ts);
                        }
                    }
                    video_at += next;
                    let now = tokio::time::Instant::now();
                    if now.duration_since(video_at) > MAX_LAG {
                        r.camera_stalls += 1;
                        r.camera_skipped += now.duration_since(video_at).as_secs_f64();
                        video_at = now;
                    }
                }
                continue;
            }
            _ = rtcp.tick() => {
                let sr = audio.report();
                if arx_rtcp.try_send_to(&sr, server_audio_rtcp).is_ok() {
                    r.rtcp_out += 1;
                }
                if let (Some(sock), Some(to)) = (vrx_rtcp, server_video_rtcp) {
                    let sr = video.report();
                    if sock.try_send_to(&sr, to).is_ok() {
                        r.rtcp_out += 1;
                    }
                }
                continue;
            }
            got = arx.recv_from(&mut b1) => (Port::AudioRtp, got?.0),
            got = arx_rtcp.recv_from(&mut b2) => (Port::AudioRtcp, got?.0),
            got = recv_opt(vrx, &mut b3) => (Port::VideoRtp, got?.0),
            got = recv_opt(vrx_rtcp, &mut b4) => (Port::VideoRtcp, got?.0),
            got = call.sip.recv_from(&mut b5) => {
                let (n, _) = got?;
                if let Ok(m) = SipMessage::parse(&b5[..n]) {
                    if call.answer_request(&m, server_sip).await? {
                        r.ended_by_server = true;
                        break;
                    }
                }
                continue;
            }
        };
        let (port, n) = got;
        let buf = match port {
            Port::AudioRtp => &b1,
            Port::AudioRtcp => &b2,
            Port::VideoRtp => &b3,
            Port::VideoRtcp => &b4,
        };
        incoming(
            port,
            &buf[..n],
            epoch,
            &mut audio,
            &mut video,
            camera.as_mut(),
            &mut last_fir,
            r,
        );
    }
    // What was already on its way.
    let drained = tokio::time::Instant::now() + DRAIN;
    loop {
        let got = tokio::select! {
            _ = tokio::time::sleep_until(drained) => break,
            got = arx.recv_from(&mut b1) => (Port::AudioRtp, got?.0),
            got = arx_rtcp.recv_from(&mut b2) => (Port::AudioRtcp, got?.0),
            got = recv_opt(vrx, &mut b3) => (Port::VideoRtp, got?.0),
            got = recv_opt(vrx_rtcp, &mut b4) => (Port::VideoRtcp, got?.0),
        };
        let (port, n) = got;
        let buf = match port {
            Port::AudioRtp => &b1,
            Port::AudioRtcp => &b2,
            Port::VideoRtp => &b3,
            Port::VideoRtcp => &b4,
        };
        incoming(
            port,
            &buf[..n],
            epoch,
            &mut audio,
            &mut video,
            camera.as_mut(),
            &mut last_fir,
            r,
        );
    }
    r.media_secs = epoch.elapsed().as_secs_f64();
    r.audio_ssrcs = audio.inbound.len();
    r.audio_lost = audio.inbound.values().map(|s| s.seq.lost()).sum();
    r.video_ssrcs = video.inbound.len();
    r.video_lost = video.inbound.values().map(|s| s.seq.lost()).sum();
    Ok(())
}

/// One datagram from the server on a media socket, counted (and a keyframe request
/// passed to the camera).
#[allow(clippy::too_many_arguments)]
fn incoming(
    port: Port,
    d: &[u8],
    epoch: Instant,
    audio: &mut Leg,
    video: &mut Leg,
    camera: Option<&mut Camera<'_>>,
    last_fir: &mut Option<u8>,
    r: &mut Report,
) {
    match port {
        Port::AudioRtp | Port::VideoRtp => {
            let Some(p) = Rtp::parse(d) else {
                return;
            };
            if let Port::AudioRtp = port {
                r.audio_in += 1;
                audio.received(&p, epoch);
            } else {
                r.video_in += 1;
                r.video_bytes_in += d.len() as u64;
                r.video_keyframes_in += u64::from(vp8::is_keyframe_start(p.payload));
                video.received(&p, epoch);
            }
        }
        Port::AudioRtcp => {
            r.rtcp_in += 1;
            audio.rtcp_in(d, &mut None, r);
        }
        Port::VideoRtcp => {
            r.rtcp_in += 1;
            let keys = video.rtcp_in(d, last_fir, r);
            if keys > 0 {
                r.key_requests_in += keys;
                if let Some(cam) = camera {
                    cam.key_wanted = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vp8_rtp(seq: u16, ts: u32, marker: bool, start: bool, key: bool) -> Vec<u8> {
        let mut p = vec![0x80, if marker { 0x80 | VP8_PT } else { VP8_PT }];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        // X=1, S, PID 0; I=1; 15-bit picture ID 0x0105.
        p.extend_from_slice(&[if start { 0x90 } else { 0x80 }, 0x80, 0x81, 0x05]);
        p.push(if key { 0x00 } else { 0x01 });
        p.extend_from_slice(&[0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01]);
        p
    }

    /// A recording of frames `(key, packets)` at 30 fps as a classic pcap on loopback.
    fn recording(frames: &[(bool, usize)]) -> Recording {
        let mut pkts = Vec::new();
        let mut seq = 100u16;
        for (i, &(key, n)) in frames.iter().enumerate() {
            for k in 0..n {
                pkts.push(vp8_rtp(seq, 3000 * i as u32, k + 1 == n, k == 0, key));
                seq += 1;
            }
        }
        let dir = std::env::temp_dir().join(format!("bench-video-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.pcap", frames.len()));
        // Classic pcap header: magic, version 2.4, zone, sigfigs, snaplen, Ethernet.
        let mut w = Vec::new();
        w.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        w.extend_from_slice(&2u16.to_le_bytes());
        w.extend_from_slice(&4u16.to_le_bytes());
        for v in [0u32, 0, 65535, 1] {
            w.extend_from_slice(&v.to_le_bytes());
        }
        for (i, rtp) in pkts.iter().enumerate() {
            let mut ip = vec![0x45, 0];
            ip.extend_from_slice(&((28 + rtp.len()) as u16).to_be_bytes());
            ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1]);
            let mut frame = vec![0u8; 12];
            frame.extend_from_slice(&[0x08, 0x00]);
            frame.extend_from_slice(&ip);
            frame.extend_from_slice(&[0x13, 0x88, 0x13, 0x89]);
            frame.extend_from_slice(&((8 + rtp.len()) as u16).to_be_bytes());
            frame.extend_from_slice(&[0, 0]);
            frame.extend_from_slice(rtp);
            w.extend_from_slice(&(1_700_000_000u32 + i as u32).to_le_bytes());
            w.extend_from_slice(&0u32.to_le_bytes());
            w.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            w.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            w.extend_from_slice(&frame);
        }
        std::fs::write(&path, w).unwrap();
        let rec = Recording::load(&path);
        let _ = std::fs::remove_file(&path);
        rec.unwrap()
    }

    #[test]
    fn the_camera_rewrites_ids_and_answers_a_keyframe_request_with_one() {
        // A delta frame before the first keyframe is cut; an incomplete last frame too.
        let rec = recording(&[
            (false, 1),
            (true, 2),
            (false, 1),
            (false, 2),
            (true, 1),
            (false, 1),
        ]);
        assert_eq!(rec.frames.len(), 5);
        assert_eq!(rec.next_key(1), 3);
        assert_eq!(rec.next_key(4), 0);
        let mut cam = Camera {
            rec: &rec,
            next: 0,
            seq: 65_535,
            ts: 10,
            picture_id: PICTURE_ID_MODULUS - 1,
            key_wanted: false,
        };
        let mut r = Report::default();
        let mut out = Vec::new();
        let mut seqs = Vec::new();
        let mut pics = Vec::new();
        let mut keys = Vec::new();
        for k in 0..3 {
            if k == 2 {
                cam.key_wanted = true; // after frames 0 and 1: the next keyframe is frame 3
            }
            let wait = cam.frame(0xabcd, &mut out, &mut r);
            assert_eq!(wait, Duration::from_micros(33_333));
            for (i, p) in out.iter().enumerate() {
                let rtp = Rtp::parse(p).unwrap();
                assert_eq!(rtp.ssrc, 0xabcd);
                assert_eq!(rtp.marker, i + 1 == out.len());
                assert_eq!(rtp.ts, 10 + 3000 * k);
                seqs.push(rtp.seq);
                let d = Descriptor::parse(rtp.payload).unwrap();
                pics.push(d.picture_id);
                if i == 0 {
                    keys.push(vp8::is_keyframe_start(rtp.payload));
                }
            }
        }
        assert_eq!(seqs, [65_535, 0, 1, 2]);
        assert_eq!(
            pics,
            [
                Some(PICTURE_ID_MODULUS - 1),
                Some(PICTURE_ID_MODULUS - 1),
                Some(0),
                Some(1)
            ]
        );
        assert_eq!(keys, [true, false, true]);
        assert_eq!((r.frames_out, r.keyframes_out), (3, 2));
    }

    #[test]
    fn reports_carry_loss_and_the_sender_report_timing() {
        // 9..=14 expected, 12 missing; packets on time (arrival = timestamp): no jitter.
        let mut s = Inbound::new(9, 9 * 960, 9 * 960);
        for seq in [10u16, 11, 13, 14] {
            s.arrived(seq, u32::from(seq) * 960, u32::from(seq) * 960);
        }
        s.last_sr = Some((0x1234_5678, Instant::now()));
        let rr = s.report(7, Instant::now());
        assert_eq!(rr.ssrc, 7);
        assert_eq!(rr.total_lost, 1);
        assert_eq!(rr.fraction_lost, (256 / 6) as u8);
        assert_eq!(rr.last_sequence_number, 14);
        assert_eq!(rr.jitter, 0);
        assert_eq!(rr.last_sender_report, 0x1234_5678);
        assert!(rr.delay < 65_536, "less than a second since the SR");
        // Nothing new: the next interval has no loss; one late packet makes jitter.
        assert_eq!(s.report(7, Instant::now()).fraction_lost, 0);
        s.arrived(15, 15 * 960, 15 * 960 + 1600);
        assert_eq!(s.report(7, Instant::now()).jitter, 100);
    }
}
