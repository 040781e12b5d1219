//! WebRTC media driver: one UDP socket shared by every browser participant, driving the
//! sans-IO [`webrtc_core::transport::Transport`] (ICE-lite, DTLS, SRTP).
//!
//! The task owns the socket and the transport. Control messages (a participant joins,
//! resumes, leaves; its final DTLS flight may go) arrive on an unbounded channel, room output
//! (plain RTP/RTCP to protect and send) on a bounded one (full: dropped and counted, like a
//! room's input queue). Decrypted media go to the participant's room through the sink the
//! room registered ([`WebRtcCtl::Route`]); what the control core must know (nominated pair,
//! keys, a participant gone) goes to the server task as [`control::PeerInput`]s.

use crate::metrics::Metrics;
use crate::room::PacketSink;
use control::PeerInput;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use webrtc_core::dtls::KeyingMaterial;
use webrtc_core::peer::{PeerConfig, PeerEvent};
use webrtc_core::transport::{Output, Stats, Transport};

/// Room output waiting for the WebRTC task (then dropped and counted).
pub const MEDIA_QUEUE: usize = 16 * 1024;

/// Commands for the WebRTC task.
pub enum WebRtcCtl {
    /// A joining participant.
    Add {
        /// Participant id.
        id: u64,
        /// Credentials and fingerprint.
        cfg: PeerConfig,
    },
    /// A participant taken over (replicated keys).
    Resume {
        /// Participant id.
        id: u64,
        /// Credentials and fingerprint.
        cfg: PeerConfig,
        /// Its keys.
        keys: KeyingMaterial,
        /// Its nominated pair.
        selected: Option<SocketAddr>,
    },
    /// Takeover: the browser's own streams, as the mirror followed them (SSRC, highest
    /// extended sequence number).
    ResumeInbound {
        /// Participant id.
        id: u64,
        /// Its streams.
        streams: Vec<(u32, u64)>,
    },
    /// Its keys are replicated: send the final flight.
    Release {
        /// Participant id.
        id: u64,
    },
    /// Forget it.
    Remove {
        /// Participant id.
        id: u64,
    },
    /// Its room: where its decrypted media go.
    Route {
        /// Participant id.
        id: u64,
        /// The room's input.
        sink: PacketSink,
    },
    /// Takeover: its outgoing stream continues after `last_ext_seq`.
    ResumeStream {
        /// Participant id.
        id: u64,
        /// Our SSRC.
        ssrc: u32,
        /// Extended sequence number of the last packet the primary sent (by the snapshot).
        last_ext_seq: u64,
        /// SRTCP index of the next report.
        srtcp_index: u32,
    },
}

/// Room output for one participant.
pub struct MediaOut {
    /// Participant id.
    pub id: u64,
    /// RTCP (else RTP).
    pub rtcp: bool,
    /// The plain packet.
    pub data: Vec<u8>,
}

/// Handle to the WebRTC task.
#[derive(Clone)]
pub struct WebRtcHandle {
    /// Control.
    pub ctl: mpsc::UnboundedSender<WebRtcCtl>,
    /// Room output.
    pub media: mpsc::Sender<MediaOut>,
}

impl WebRtcHandle {
    /// Queue room output; false when the queue is full (the caller counts it).
    pub fn send_media(&self, id: u64, rtcp: bool, data: Vec<u8>) -> bool {
        self.media.try_send(MediaOut { id, rtcp, data }).is_ok()
    }
}

/// Start the task on `sock`.
pub fn spawn(
    sock: UdpSocket,
    transport: Transport,
    events: mpsc::UnboundedSender<(u64, PeerInput)>,
    metrics: Metrics,
    fenced: Arc<AtomicBool>,
) -> (WebRtcHandle, tokio::task::JoinHandle<()>) {
    let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
    let (media_tx, media_rx) = mpsc::channel(MEDIA_QUEUE);
    let task = tokio::spawn(run(
        sock, transport, ctl_rx, media_rx, events, metrics, fenced,
    ));
    (
        WebRtcHandle {
            ctl: ctl_tx,
            media: media_tx,
        },
        task,
    )
}

struct Task {
    sock: UdpSocket,
    transport: Transport,
    routes: HashMap<u64, PacketSink>,
    events: mpsc::UnboundedSender<(u64, PeerInput)>,
    metrics: Metrics,
    fenced: Arc<AtomicBool>,
    last: Stats,
}

async fn run(
    sock: UdpSocket,
    transport: Transport,
    mut ctl_rx: mpsc::UnboundedReceiver<WebRtcCtl>,
    mut media_rx: mpsc::Receiver<MediaOut>,
    events: mpsc::UnboundedSender<(u64, PeerInput)>,
    metrics: Metrics,
    fenced: Arc<AtomicBool>,
) {
    let mut t = Task {
        sock,
        transport,
        routes: HashMap::new(),
        events,
        metrics,
        fenced,
        last: Stats::default(),
    };
    let mut buf = vec![0u8; 2048];
    let mut stats_tick = tokio::time::interval(Duration::from_millis(500));
    stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let deadline = t
            .transport
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            biased;
            c = ctl_rx.recv() => {
                let Some(c) = c else { break };
                t.control(c);
            }
            m = media_rx.recv() => {
                let Some(m) = m else { break };
                t.media_out(m);
                // Whatever else the rooms queued, without another turn of the loop; a control
                // message (a takeover's stream resumption) goes first.
                while ctl_rx.is_empty() {
                    let Ok(m) = media_rx.try_recv() else { break };
                    t.media_out(m);
                }
            }
            r = t.sock.recv_from(&mut buf) => {
                if let Ok((n, from)) = r {
                    let now = Instant::now();
                    t.transport.handle_datagram(from, &buf[..n], now);
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                t.transport.handle_timeout(Instant::now());
            }
            _ = stats_tick.tick() => t.sync_metrics(),
        }
        t.drain();
    }
}

impl Task {
    fn control(&mut self, c: WebRtcCtl) {
        let now = Instant::now();
        match c {
            WebRtcCtl::Add { id, cfg } => {
                if let Err(e) = self.transport.add(id, cfg, now) {
                    tracing::warn!(id, "WebRTC participant refused by the transport: {e}");
                    let _ = self.events.send((id, PeerInput::Gone(e)));
                }
            }
            WebRtcCtl::Resume {
                id,
                cfg,
                keys,
                selected,
            } => {
                if let Err(e) = self.transport.resume(id, cfg, keys, selected, now) {
                    tracing::error!(id, "takeover: cannot resume WebRTC participant: {e:?}");
                    let _ = self.events.send((id, PeerInput::Gone(format!("{e:?}"))));
                }
            }
            WebRtcCtl::ResumeInbound { id, streams } => {
                for (ssrc, ext) in streams {
                    self.transport.resume_inbound(id, ssrc, ext);
                }
            }
            WebRtcCtl::Release { id } => self.transport.release_final_flight(id),
            WebRtcCtl::Remove { id } => {
                self.transport.remove(id);
                self.routes.remove(&id);
            }
            WebRtcCtl::Route { id, sink } => {
                self.routes.insert(id, sink);
            }
            WebRtcCtl::ResumeStream {
                id,
                ssrc,
                last_ext_seq,
                srtcp_index,
            } => self
                .transport
                .resume_stream(id, ssrc, last_ext_seq, srtcp_index),
        }
    }

    fn media_out(&mut self, m: MediaOut) {
        if self.fenced.load(Ordering::Relaxed) {
            return;
        }
        let out = if m.rtcp {
            self.transport.protect_rtcp(m.id, &m.data)
        } else {
            self.transport.protect_rtp(m.id, &m.data)
        };
        if let Some((to, data)) = out {
            if self.sock.try_send_to(&data, to).is_ok() {
                if m.rtcp {
                    self.metrics.rtcp_out.inc();
                } else {
                    self.metrics.rtp_out.inc();
                }
            }
        }
    }

    fn drain(&mut self) {
        let fenced = self.fenced.load(Ordering::Relaxed);
        while let Some(o) = self.transport.poll_output() {
            match o {
                Output::Transmit { to, data } => {
                    if !fenced {
                        let _ = self.sock.try_send_to(&data, to);
                    }
                }
                Output::Rtp { peer, from, data } => self.deliver(peer, from, data, false),
                Output::Rtcp { peer, from, data } => self.deliver(peer, from, data, true),
                Output::Event { peer, event } => {
                    let input = match event {
                        PeerEvent::Selected(a) => PeerInput::Selected(a),
                        PeerEvent::Keyed(k) => PeerInput::Keyed(k),
                        PeerEvent::Closed => PeerInput::Gone("DTLS close_notify".into()),
                        PeerEvent::Failed(why) => PeerInput::Gone(format!("DTLS failed: {why}")),
                        PeerEvent::ConsentExpired => PeerInput::Gone("ICE consent expired".into()),
                        PeerEvent::OutboundProgress { ssrc, ext_seq } => {
                            PeerInput::OutboundProgress { ssrc, ext_seq }
                        }
                        other => {
                            tracing::debug!(peer, ?other, "WebRTC event");
                            continue;
                        }
                    };
                    let _ = self.events.send((peer, input));
                }
            }
        }
    }

    fn deliver(&mut self, id: u64, from: SocketAddr, data: Vec<u8>, rtcp: bool) {
        let Some(sink) = self.routes.get(&id) else {
            return;
        };
        if !sink.deliver(id, from, data, rtcp, Instant::now()) {
            self.metrics.media_overflow.inc();
        }
    }

    /// The transport's counters into the metrics (deltas).
    fn sync_metrics(&mut self) {
        let s = self.transport.stats().clone();
        let m = &self.metrics;
        m.webrtc_stun_answered
            .inc_by(s.stun_answered.saturating_sub(self.last.stun_answered));
        m.webrtc_stun_refused
            .inc_by(s.stun_refused.saturating_sub(self.last.stun_refused));
        m.webrtc_dtls_dropped
            .inc_by(s.dtls_dropped.saturating_sub(self.last.dtls_dropped));
        m.webrtc_srtp_dropped
            .inc_by(s.srtp_dropped.saturating_sub(self.last.srtp_dropped));
        m.webrtc_unknown_source
            .inc_by(s.unknown_source.saturating_sub(self.last.unknown_source));
        m.webrtc_garbage
            .inc_by(s.garbage.saturating_sub(self.last.garbage));
        m.webrtc_peers.set(self.transport.len() as i64);
        self.last = s;
    }
}

/// The DTLS certificate: loaded from `path`, or created there (mode 0600) when the file does
/// not exist; a new one in memory without a path.
pub fn load_or_create_certificate(
    path: Option<&std::path::Path>,
) -> anyhow::Result<webrtc_core::dtls::Certificate> {
    use anyhow::Context;
    use webrtc_core::dtls::Certificate;
    let Some(path) = path else {
        return Certificate::generate().map_err(|e| anyhow::anyhow!("DTLS certificate: {e}"));
    };
    match std::fs::read_to_string(path) {
        Ok(pem) => Certificate::from_pem(&pem)
            .map_err(|e| anyhow::anyhow!("DTLS certificate {}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let cert =
                Certificate::generate().map_err(|e| anyhow::anyhow!("DTLS certificate: {e}"))?;
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating DTLS certificate {}", path.display()))?;
            f.write_all(cert.to_pem().as_bytes())
                .with_context(|| format!("writing DTLS certificate {}", path.display()))?;
            tracing::info!(path = %path.display(), "DTLS certificate created");
            Ok(cert)
        }
        Err(e) => Err(e).with_context(|| format!("reading DTLS certificate {}", path.display())),
    }
}
