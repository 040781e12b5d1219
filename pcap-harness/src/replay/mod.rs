//! `mcu pcap replay`: each recorded RTP stream becomes a real SIP participant.
//!
//! [`uac`] (SIP) and [`media`] (packet schedule) are sans-IO state machines; this module
//! only drives them with tokio UDP sockets and a clock, and records what it receives into
//! a pcap (raw IP link type).

pub mod media;
pub mod rng;
pub mod uac;

use std::io::BufWriter;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket as StdUdp};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, TsResolution};
use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::analyze::{extract_streams, Options};
use crate::sip::Codec;
use crate::Error;
use media::{Impairments, MediaConfig, MediaSender, Recording};
use rng::Rng;
use uac::{Output, Uac, UacConfig};

/// What to replay and how.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    /// Input captures.
    pub files: Vec<PathBuf>,
    /// `sip:ROOM@HOST[:PORT]`.
    pub to: String,
    /// Output capture of everything received (and SIP sent).
    pub out: Option<PathBuf>,
    /// Local address to bind (default: the one routing to the server).
    pub bind: Option<IpAddr>,
    /// Participants per selected stream.
    pub count: usize,
    /// Loop the recording until `duration` or interrupted.
    pub looping: bool,
    /// Stop media after this long.
    pub duration: Option<Duration>,
    /// Impairments.
    pub impair: Impairments,
    /// Seed for tags, SSRCs, sequence/timestamp starts and impairments.
    pub seed: u64,
    /// Only streams with these SSRCs (empty: all replayable streams).
    pub ssrcs: Vec<u32>,
    /// Payload-type hints for streams no SDP describes.
    pub pt_hints: std::collections::HashMap<u8, Codec>,
    /// Also record the RTP we send.
    pub record_sent: bool,
}

/// Outcome of one participant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParticipantSummary {
    /// Call-ID used.
    pub call_id: String,
    /// Source stream (input file index, SSRC).
    pub source_ssrc: u32,
    /// Our SSRC.
    pub ssrc: u32,
    /// Local SIP address.
    pub local_sip: String,
    /// Local RTP address.
    pub local_rtp: String,
    /// Codec offered.
    pub codec: String,
    /// Whether the call was answered.
    pub established: bool,
    /// RTP packets sent.
    pub rtp_sent: u64,
    /// RTP/RTCP datagrams received on the media socket.
    pub media_received: u64,
    /// Why the call ended.
    pub end_reason: String,
}

struct Plan {
    source_ssrc: u32,
    codec: Codec,
    pt: u8,
    rec: Recording,
    seed: u64,
    user: String,
}

struct Record {
    time: SystemTime,
    src: SocketAddr,
    dst: SocketAddr,
    payload: Vec<u8>,
}

fn parse_target(to: &str) -> Result<(String, SocketAddr), Error> {
    let bad = || Error::InvalidArgument(format!("--to {to}: expected sip:ROOM@HOST[:PORT]"));
    let rest = to.strip_prefix("sip:").ok_or_else(bad)?;
    let (_room, hostport) = rest.split_once('@').ok_or_else(bad)?;
    let hostport = hostport.split(';').next().ok_or_else(bad)?;
    let with_port = if hostport.parse::<SocketAddr>().is_ok()
        || (hostport.contains(':') && !hostport.contains('[') && hostport.matches(':').count() == 1)
    {
        hostport.to_string()
    } else {
        format!("{hostport}:5060")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| Error::InvalidArgument(format!("--to {to}: {e}")))?
        .next()
        .ok_or_else(bad)?;
    Ok((to.to_string(), addr))
}

fn local_ip_towards(server: SocketAddr) -> IpAddr {
    // connect() on UDP sends nothing; it only selects the route and source address.
    let any: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    StdUdp::bind(any)
        .and_then(|s| {
            s.connect(server)?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(any.ip())
}

fn plans(cfg: &ReplayConfig) -> Result<(Vec<Plan>, Vec<String>), Error> {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    let opts = Options {
        pt_hints: cfg.pt_hints.clone(),
        wav_dir: None,
        no_decode: true,
        event: None,
    };
    let mut rng = Rng::new(cfg.seed);
    for file in &cfg.files {
        let data = std::fs::read(file).map_err(|source| Error::Io {
            path: file.clone(),
            source,
        })?;
        let (_, streams) = extract_streams(&data, &opts)?;
        for s in streams {
            if !cfg.ssrcs.is_empty() && !cfg.ssrcs.contains(&s.stream.ssrc) {
                continue;
            }
            let Some(codec) = s.codec.clone().filter(|c| {
                !c.name.eq_ignore_ascii_case("telephone-event")
                    && !c.name.eq_ignore_ascii_case("CN")
            }) else {
                notes.push(format!(
                    "{}: stream {} has no known audio codec (use --pt PT=NAME/RATE), skipped",
                    file.display(),
                    s.stream.ssrc_hex
                ));
                continue;
            };
            let Some(rec) = Recording::from_packets(&s.packets, s.main_pt) else {
                continue;
            };
            for _ in 0..cfg.count.max(1) {
                let n = out.len();
                out.push(Plan {
                    source_ssrc: s.stream.ssrc,
                    codec: codec.clone(),
                    pt: s.main_pt,
                    rec: rec.clone(),
                    seed: rng.next_u64(),
                    user: format!("replay{n}"),
                });
            }
        }
    }
    Ok((out, notes))
}

/// How long a participant stays after its last packet before sending BYE.
const TAIL: Duration = Duration::from_millis(250);

async fn bind_rtp(ip: IpAddr) -> std::io::Result<UdpSocket> {
    for _ in 0..50 {
        let s = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
        if s.local_addr()?.port() & 1 == 0 {
            return Ok(s);
        }
    }
    UdpSocket::bind(SocketAddr::new(ip, 0)).await
}

async fn participant(
    plan: Plan,
    cfg: ReplayConfig,
    target: (String, SocketAddr),
    local_ip: IpAddr,
    rec_tx: Option<mpsc::UnboundedSender<Record>>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<ParticipantSummary> {
    let sip = UdpSocket::bind(SocketAddr::new(local_ip, 0)).await?;
    let rtp = bind_rtp(local_ip).await?;
    let (local_sip, local_rtp) = (sip.local_addr()?, rtp.local_addr()?);
    let mut rng = Rng::new(plan.seed);
    let ssrc = rng.next_u64() as u32;
    let media_cfg = MediaConfig {
        ssrc,
        seq0: rng.next_u64() as u16,
        ts0: rng.next_u64() as u32,
        pt: plan.pt,
        looping: cfg.looping,
        max_duration: cfg.duration,
        impair: cfg.impair.clone(),
        seed: rng.next_u64(),
    };
    let call_id = format!("{}@{}", rng.token(8), local_ip);
    let mut uac = Uac::new(UacConfig {
        target_uri: target.0.clone(),
        server: target.1,
        local_sip,
        local_rtp,
        user: plan.user.clone(),
        pt: plan.pt,
        codec: plan.codec.clone(),
        call_id: call_id.clone(),
        from_tag: rng.token(6),
        branch_prefix: rng.token(4),
    });
    let record = |src: SocketAddr, dst: SocketAddr, payload: &[u8]| {
        if let Some(tx) = &rec_tx {
            let _ = tx.send(Record {
                time: SystemTime::now(),
                src,
                dst,
                payload: payload.to_vec(),
            });
        }
    };
    let t0 = tokio::time::Instant::now();
    let now = || t0.elapsed();
    let mut summary = ParticipantSummary {
        call_id,
        source_ssrc: plan.source_ssrc,
        ssrc,
        local_sip: local_sip.to_string(),
        local_rtp: local_rtp.to_string(),
        codec: plan.codec.label(),
        established: false,
        rtp_sent: 0,
        media_received: 0,
        end_reason: String::new(),
    };
    let mut media: Option<(MediaSender, SocketAddr)> = None;
    let mut outputs = uac.start(now());
    let mut rec_plan = Some(plan.rec);
    let mut hung_up = false;
    let mut hang_up_now = false;
    let mut hangup_at: Option<Duration> = None;
    let mut sip_buf = vec![0u8; 65536];
    let mut rtp_buf = vec![0u8; 65536];
    loop {
        for o in outputs.drain(..) {
            match o {
                Output::Transmit { to, data } => {
                    sip.send_to(&data, to).await?;
                    record(local_sip, to, &data);
                }
                Output::Established { remote_rtp, pt } => {
                    summary.established = true;
                    let Some(remote) = remote_rtp else {
                        summary.end_reason = "answer had no media address".into();
                        hang_up_now = true;
                        continue;
                    };
                    if let Some((_, dst)) = media.as_mut() {
                        *dst = remote; // re-INVITE moved the media
                    } else if let Some(r) = rec_plan.take() {
                        let mut mc = media_cfg.clone();
                        mc.pt = pt;
                        media = Some((MediaSender::new(r, mc, now()), remote));
                    }
                }
                Output::Terminated { reason, .. } => summary.end_reason = reason,
            }
        }
        if uac.is_done() {
            break;
        }
        if hang_up_now && !hung_up {
            hung_up = true;
            outputs = uac.hangup(now());
            continue;
        }
        // Media due now.
        if let Some((m, remote)) = media.as_mut() {
            while let Some(pkt) = m.poll_transmit(now()) {
                rtp.send_to(&pkt, *remote).await?;
                summary.rtp_sent += 1;
                if cfg.record_sent {
                    record(local_rtp, *remote, &pkt);
                }
            }
            if m.is_finished() && !hung_up {
                // Linger so that media still in flight towards us is recorded.
                let at = *hangup_at.get_or_insert(now() + TAIL);
                if now() >= at {
                    hung_up = true;
                    outputs = uac.hangup(now());
                    continue;
                }
            }
        }
        let mut deadline = uac.poll_timeout();
        if let (Some(h), false) = (hangup_at, hung_up) {
            deadline = Some(deadline.map_or(h, |d| d.min(h)));
        }
        if let Some((m, _)) = media.as_mut() {
            if let Some(t) = m.poll_timeout(now()) {
                deadline = Some(deadline.map_or(t, |d| d.min(t)));
            }
        }
        let sleep_for = deadline.map_or(Duration::from_millis(200), |d| d.saturating_sub(now()));
        tokio::select! {
            r = sip.recv_from(&mut sip_buf) => {
                let (n, from) = r?;
                record(from, local_sip, &sip_buf[..n]);
                outputs = uac.handle_datagram(now(), from, &sip_buf[..n]);
            }
            r = rtp.recv_from(&mut rtp_buf) => {
                let (n, from) = r?;
                summary.media_received += 1;
                record(from, local_rtp, &rtp_buf[..n]);
            }
            _ = tokio::time::sleep(sleep_for) => {
                outputs = uac.handle_timeout(now());
            }
            _ = shutdown.changed(), if !hung_up => {
                hung_up = true;
                outputs = uac.hangup(now());
            }
        }
    }
    summary.rtp_sent = media.as_ref().map_or(0, |m| m.0.sent);
    Ok(summary)
}

/// Run a replay to completion (or Ctrl-C). Returns one summary per participant and notes.
pub fn run_replay(cfg: &ReplayConfig) -> Result<(Vec<ParticipantSummary>, Vec<String>), Error> {
    let target = parse_target(&cfg.to)?;
    let (plans, notes) = plans(cfg)?;
    if plans.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "no replayable RTP stream in the inputs ({})",
            notes.join("; ")
        )));
    }
    let local_ip = cfg.bind.unwrap_or_else(|| local_ip_towards(target.1));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::InvalidArgument(format!("tokio runtime: {e}")))?;
    rt.block_on(async {
        let (rec_tx, mut rec_rx) = mpsc::unbounded_channel::<Record>();
        let writer = match &cfg.out {
            Some(path) => {
                let f = std::fs::File::create(path).map_err(|e| Error::Output {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                let header = PcapHeader {
                    datalink: DataLink::RAW,
                    ts_resolution: TsResolution::NanoSecond,
                    snaplen: 262_144,
                    ..Default::default()
                };
                Some(
                    PcapWriter::with_header(BufWriter::new(f), header).map_err(|e| {
                        Error::Output {
                            path: path.clone(),
                            reason: e.to_string(),
                        }
                    })?,
                )
            }
            None => None,
        };
        let out_path = cfg.out.clone().unwrap_or_default();
        let writer_task = tokio::spawn(async move {
            let mut w = writer;
            while let Some(r) = rec_rx.recv().await {
                if let Some(w) = w.as_mut() {
                    let ts = r.time.duration_since(UNIX_EPOCH).unwrap_or_default();
                    let ip = crate::writer::ip_udp(r.src, r.dst, &r.payload);
                    w.write_packet(&PcapPacket::new(ts, ip.len() as u32, &ip))
                        .map_err(|e| e.to_string())?;
                }
            }
            if let Some(w) = w {
                use std::io::Write;
                w.into_writer().flush().map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = stop_tx.send(true);
            }
        });
        let mut handles = Vec::new();
        for plan in plans {
            handles.push(tokio::spawn(participant(
                plan,
                cfg.clone(),
                target.clone(),
                local_ip,
                cfg.out.as_ref().map(|_| rec_tx.clone()),
                stop_rx.clone(),
            )));
        }
        drop(rec_tx);
        let mut summaries = Vec::new();
        let mut notes = notes;
        for h in handles {
            match h.await {
                Ok(Ok(s)) => summaries.push(s),
                Ok(Err(e)) => notes.push(format!("participant failed: {e}")),
                Err(e) => notes.push(format!("participant task failed: {e}")),
            }
        }
        match writer_task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(Error::Output {
                    path: out_path,
                    reason: e,
                })
            }
            Err(e) => {
                return Err(Error::Output {
                    path: out_path,
                    reason: e.to_string(),
                })
            }
        }
        Ok((summaries, notes))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("sip:room@127.0.0.1").unwrap().1,
            "127.0.0.1:5060".parse().unwrap()
        );
        assert_eq!(
            parse_target("sip:room@127.0.0.1:5070").unwrap().1,
            "127.0.0.1:5070".parse().unwrap()
        );
        assert_eq!(
            parse_target("sip:room@[::1]:5070").unwrap().1,
            "[::1]:5070".parse().unwrap()
        );
        assert!(parse_target("room@127.0.0.1").is_err());
    }
}
