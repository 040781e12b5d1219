//! The control plane: a tokio driver around [`sip_core::Core`] that turns calls into room
//! participants, plus the listeners (SIP UDP/TCP, HTTP) and graceful shutdown.
//!
//! Task layout: one SIP task owns the SIP core, the room registry and the RTP port allocator
//! (so room creation/closing is never racy); one task per TCP connection reads bytes into the
//! SIP task's queue and writes what it is given; one task per room mixes (see [`crate::room`]).

use crate::config::Config;
use crate::room::{spawn_room, MediaEndpoint, RoomHandle, RoomMsg};
use crate::state::{ApiEvent, ParticipantView, RoomView, Shared};
use anyhow::{Context, Result};
use mixer::{Codec, MixerConfig, StreamParams};
use sip_core::sdp::{self, CodecName, Direction, LocalMedia, Negotiated, SdpError};
use sip_core::{CallHandle, ConnId, Core, EndReason, Event, Transport};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

/// Largest SIP message accepted (UDP datagram or one framed TCP message).
pub const MAX_SIP_MESSAGE: usize = 16 * 1024;
/// How long shutdown waits for BYE transactions to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

enum SipIn {
    Datagram {
        from: SocketAddr,
        data: Vec<u8>,
    },
    TcpOpen {
        conn: ConnId,
        writer: mpsc::UnboundedSender<Vec<u8>>,
    },
    TcpData {
        conn: ConnId,
        from: SocketAddr,
        data: Vec<u8>,
    },
    TcpClosed {
        conn: ConnId,
    },
}

/// RTP port pairs (even RTP port, RTCP = RTP + 1) from the configured range.
struct PortAllocator {
    ip: IpAddr,
    min: u16,
    max: u16,
    next: u16,
    in_use: HashSet<u16>,
}

impl PortAllocator {
    fn new(ip: IpAddr, min: u16, max: u16) -> Self {
        Self {
            ip,
            min,
            max,
            next: min,
            in_use: HashSet::new(),
        }
    }

    /// Bind the next free pair; ports that the OS refuses are skipped.
    fn allocate(&mut self) -> Option<(u16, std::net::UdpSocket, std::net::UdpSocket)> {
        let pairs = ((self.max - self.min) / 2) as usize;
        for _ in 0..pairs {
            let p = self.next;
            self.next = if p + 3 > self.max { self.min } else { p + 2 };
            if self.in_use.contains(&p) {
                continue;
            }
            let Ok(rtp) = std::net::UdpSocket::bind((self.ip, p)) else {
                continue;
            };
            let Ok(rtcp) = std::net::UdpSocket::bind((self.ip, p + 1)) else {
                continue;
            };
            if rtp.set_nonblocking(true).is_err() || rtcp.set_nonblocking(true).is_err() {
                continue;
            }
            self.in_use.insert(p);
            return Some((p, rtp, rtcp));
        }
        None
    }

    fn release(&mut self, p: u16) {
        self.in_use.remove(&p);
    }
}

struct CallState {
    room: String,
    from_uri: String,
    port: u16,
    sockets: Option<(std::net::UdpSocket, std::net::UdpSocket)>,
    local: LocalMedia,
    /// In the room's mixer.
    joined: bool,
    /// Waiting for the SDP answer in ACK (we offered in the 200).
    awaiting_answer: bool,
    /// Our 200 was ACKed.
    confirmed: bool,
}

struct RoomEntry {
    handle: RoomHandle,
    view: Arc<Mutex<RoomView>>,
    members: usize,
}

/// The server's control plane state.
struct Control {
    cfg: Config,
    core: Core,
    udp: Arc<UdpSocket>,
    tcp_writers: HashMap<ConnId, mpsc::UnboundedSender<Vec<u8>>>,
    ports: PortAllocator,
    calls: BTreeMap<CallHandle, CallState>,
    rooms: HashMap<String, RoomEntry>,
    shared: Shared,
    origin: Instant,
    seed: u64,
    rng: u64,
    last_sip_stats: sip_core::Stats,
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Map the SDP negotiation result onto the mixer's stream parameters.
pub fn stream_params(neg: &Negotiated) -> StreamParams {
    let codec = match neg.codec {
        CodecName::Opus => Codec::Opus,
        CodecName::Pcmu => Codec::Pcmu,
        CodecName::Pcma => Codec::Pcma,
    };
    let ptime = neg.ptime_ms.clamp(10, 60) / 10 * 10;
    let (send, recv) = match neg.direction {
        Direction::SendRecv => (true, true),
        Direction::SendOnly => (false, true),
        Direction::RecvOnly => (true, false),
        Direction::Inactive => (false, false),
    };
    StreamParams {
        codec,
        payload_type: neg.payload_type,
        telephone_event_pt: neg.telephone_event_pt,
        ptime_ms: ptime,
        audio_level_ext_id: neg.audio_level_ext_id,
        send,
        recv,
    }
}

impl Control {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn flush(&mut self) {
        while let Some(t) = self.core.poll_transmit() {
            match t.transport {
                Transport::Udp => {
                    if let Err(e) = self.udp.try_send_to(&t.data, t.to) {
                        tracing::debug!("SIP send to {} failed: {e}", t.to);
                    }
                }
                Transport::Tcp(conn) => {
                    if let Some(w) = self.tcp_writers.get(&conn) {
                        let _ = w.send(t.data);
                    }
                }
            }
        }
        let s = self.core.stats();
        let m = &self.shared.metrics;
        m.sip_in.inc_by(
            s.messages_in
                .saturating_sub(self.last_sip_stats.messages_in),
        );
        m.sip_malformed_answered.inc_by(
            s.malformed_answered
                .saturating_sub(self.last_sip_stats.malformed_answered),
        );
        m.sip_malformed_dropped.inc_by(
            s.malformed_dropped
                .saturating_sub(self.last_sip_stats.malformed_dropped),
        );
        m.sip_oversized
            .inc_by(s.oversized.saturating_sub(self.last_sip_stats.oversized));
        self.last_sip_stats = s;
    }

    /// Process every pending SIP event, then send what the core produced.
    async fn process(&mut self) {
        loop {
            self.flush();
            let Some(ev) = self.core.poll_event() else {
                break;
            };
            self.on_event(ev).await;
        }
        self.flush();
    }

    fn reject(&mut self, call: CallHandle, status: u16, why: &str) {
        tracing::info!(call = call.0, status, "rejecting call: {why}");
        self.shared.metrics.calls_rejected.inc();
        let now = self.now();
        let _ = self.core.reject(call, status, now);
    }

    async fn on_event(&mut self, ev: Event) {
        match ev {
            Event::IncomingCall {
                call,
                room,
                from_uri,
                source,
                transport,
                offer,
            } => {
                tracing::info!(call = call.0, %room, %from_uri, %source, ?transport, "INVITE");
                if room.is_empty() {
                    return self.reject(call, 404, "no room in Request-URI");
                }
                let members = self.rooms.get(&room).map_or(0, |r| r.members);
                if members >= self.cfg.max_participants {
                    return self.reject(call, 486, "room full");
                }
                let neg = match offer.as_deref().map(sdp::negotiate) {
                    Some(Err(SdpError::NotAcceptable(why))) => return self.reject(call, 488, &why),
                    Some(Err(e)) => return self.reject(call, 400, &e.to_string()),
                    Some(Ok(n)) => Some(n),
                    None => None,
                };
                let Some((port, rtp, rtcp)) = self.ports.allocate() else {
                    return self.reject(call, 503, "no free RTP ports");
                };
                let local = LocalMedia {
                    ip: self.cfg.media_ip,
                    rtp_port: port,
                    session_id: splitmix(&mut self.rng) >> 1,
                    session_version: 1,
                };
                let mut st = CallState {
                    room: room.clone(),
                    from_uri,
                    port,
                    sockets: Some((rtp, rtcp)),
                    local,
                    joined: false,
                    awaiting_answer: neg.is_none(),
                    confirmed: false,
                };
                let body = match &neg {
                    Some(n) => {
                        if let Err(e) = self.join(call, &mut st, n).await {
                            self.ports.release(port);
                            return self.reject(call, 500, &e.to_string());
                        }
                        sdp::build_answer(&st.local, n)
                    }
                    None => sdp::build_offer(&st.local),
                };
                self.calls.insert(call, st);
                let now = self.now();
                if self.core.accept(call, body, now).is_ok() {
                    self.shared.metrics.calls_accepted.inc();
                }
            }
            Event::ReInvite { call, offer } => {
                let Some(mut st) = self.calls.remove(&call) else {
                    return self.reject(call, 481, "unknown call");
                };
                st.local.session_version += 1;
                let body = match offer.as_deref().map(sdp::negotiate) {
                    Some(Ok(n)) => {
                        if st.joined {
                            self.update(call, &st, &n).await;
                        } else if let Err(e) = self.join(call, &mut st, &n).await {
                            tracing::warn!(call = call.0, "join on re-INVITE failed: {e}");
                        }
                        Some(sdp::build_answer(&st.local, &n))
                    }
                    Some(Err(SdpError::NotAcceptable(_))) => None,
                    Some(Err(_)) => None,
                    None => {
                        st.awaiting_answer = true;
                        Some(sdp::build_offer(&st.local))
                    }
                };
                self.calls.insert(call, st);
                match body {
                    Some(b) => {
                        let now = self.now();
                        let _ = self.core.accept(call, b, now);
                    }
                    None => {
                        let now = self.now();
                        let _ = self.core.reject(call, 488, now);
                    }
                }
            }
            Event::Confirmed { call, answer } => {
                let Some(mut st) = self.calls.remove(&call) else {
                    return;
                };
                st.confirmed = true;
                if st.awaiting_answer {
                    st.awaiting_answer = false;
                    match answer.as_deref().map(sdp::negotiate) {
                        Some(Ok(n)) => {
                            if st.joined {
                                self.update(call, &st, &n).await;
                            } else if let Err(e) = self.join(call, &mut st, &n).await {
                                tracing::warn!(call = call.0, "join failed: {e}");
                            }
                        }
                        other => {
                            tracing::info!(
                                call = call.0,
                                "ACK without usable SDP answer ({other:?}): hanging up"
                            );
                            self.calls.insert(call, st);
                            let now = self.now();
                            let _ = self.core.hangup(call, now);
                            return;
                        }
                    }
                }
                self.calls.insert(call, st);
            }
            Event::InfoDtmf { call, digit } => {
                if let Some(st) = self.calls.get(&call) {
                    tracing::info!(call = call.0, room = %st.room, %digit, "DTMF (SIP INFO)");
                    let mut q = self.shared.events.lock().unwrap();
                    if q.len() >= 1000 {
                        q.pop_front();
                    }
                    q.push_back(ApiEvent {
                        room: st.room.clone(),
                        at_unix_ms: crate::room::unix_ms(),
                        event: mixer::Event::Dtmf {
                            participant: call.0,
                            digit,
                            duration_ms: 0,
                        },
                    });
                }
            }
            Event::CallEnded { call, reason } => {
                tracing::info!(call = call.0, ?reason, "call ended");
                if let Some(st) = self.calls.remove(&call) {
                    self.leave(call, st).await;
                }
                if reason == EndReason::AckTimeout {
                    tracing::warn!(call = call.0, "200 OK never acknowledged");
                }
            }
        }
    }

    /// Put a call's media into its room (creating the room on first use).
    async fn join(&mut self, call: CallHandle, st: &mut CallState, neg: &Negotiated) -> Result<()> {
        let (rtp, rtcp) = st.sockets.take().context("media sockets already used")?;
        let media = MediaEndpoint {
            rtp: Arc::new(UdpSocket::from_std(rtp)?),
            rtcp: Arc::new(UdpSocket::from_std(rtcp)?),
            remote_rtp: neg.remote_rtp,
            remote_rtcp: neg.remote_rtcp,
            rtcp_mux: neg.rtcp_mux,
        };
        let entry = self.room_entry(&st.room);
        let params = stream_params(neg);
        let (tx, rx) = tokio::sync::oneshot::channel();
        entry
            .handle
            .tx
            .send(RoomMsg::Add {
                id: call.0,
                params,
                media,
                reply: tx,
            })
            .await
            .map_err(|_| anyhow::anyhow!("room task gone"))?;
        let ssrc = rx.await.context("room task gone")??;
        let mut view = participant_view(call, st, neg);
        view.stats.ssrc_out = ssrc;
        entry.view.lock().unwrap().participants.insert(call.0, view);
        entry.members += 1;
        self.shared.metrics.participants.inc();
        st.joined = true;
        tracing::info!(call = call.0, room = %st.room, ssrc_out = ssrc, codec = ?neg.codec, "joined room");
        Ok(())
    }

    async fn update(&mut self, call: CallHandle, st: &CallState, neg: &Negotiated) {
        if let Some(entry) = self.rooms.get(&st.room) {
            if let Some(p) = entry.view.lock().unwrap().participants.get_mut(&call.0) {
                p.direction = format!("{:?}", neg.direction).to_lowercase();
            }
            let _ = entry
                .handle
                .tx
                .send(RoomMsg::Update {
                    id: call.0,
                    params: stream_params(neg),
                    remote_rtp: neg.remote_rtp,
                    remote_rtcp: neg.remote_rtcp,
                })
                .await;
        }
        tracing::info!(call = call.0, direction = ?neg.direction, "media updated");
    }

    async fn leave(&mut self, call: CallHandle, st: CallState) {
        self.ports.release(st.port);
        if !st.joined {
            return;
        }
        self.shared.metrics.participants.dec();
        let Some(entry) = self.rooms.get_mut(&st.room) else {
            return;
        };
        let _ = entry.handle.tx.send(RoomMsg::Remove { id: call.0 }).await;
        entry.members -= 1;
        if entry.members == 0 {
            let _ = entry.handle.tx.send(RoomMsg::Close).await;
            self.rooms.remove(&st.room);
            self.shared.rooms.lock().unwrap().remove(&st.room);
            self.shared.metrics.rooms.dec();
        }
    }

    fn room_entry(&mut self, room: &str) -> &mut RoomEntry {
        if !self.rooms.contains_key(room) {
            let view = Arc::new(Mutex::new(RoomView {
                name: room.to_string(),
                ..Default::default()
            }));
            let config = MixerConfig {
                top_n: self.cfg.top_n,
                seed: self.seed ^ splitmix(&mut self.rng),
                ntp_origin: ntp_now(self.origin),
                ..MixerConfig::default()
            };
            let handle = spawn_room(
                room.to_string(),
                config,
                self.origin,
                view.clone(),
                self.shared.metrics.clone(),
                self.shared.events.clone(),
            );
            self.shared
                .rooms
                .lock()
                .unwrap()
                .insert(room.to_string(), view.clone());
            self.shared.metrics.rooms.inc();
            self.rooms.insert(
                room.to_string(),
                RoomEntry {
                    handle,
                    view,
                    members: 0,
                },
            );
        }
        self.rooms.get_mut(room).expect("inserted above")
    }
}

fn participant_view(call: CallHandle, st: &CallState, neg: &Negotiated) -> ParticipantView {
    ParticipantView {
        id: call.0,
        sip_uri: st.from_uri.clone(),
        remote_media: neg.remote_rtp,
        codec: format!("{:?}", neg.codec).to_uppercase(),
        local_rtp_port: st.port,
        direction: format!("{:?}", neg.direction).to_lowercase(),
        stats: Default::default(),
    }
}

/// NTP timestamp (RFC 3550 64-bit) of the instant `origin`, read once from the wall clock.
fn ntp_now(origin: Instant) -> u64 {
    const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(origin.elapsed());
    let secs = wall.as_secs() + NTP_UNIX_OFFSET;
    let frac = ((wall.subsec_nanos() as u64) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// Bound listeners, ready to serve.
pub struct Listeners {
    /// SIP UDP socket.
    pub udp: UdpSocket,
    /// SIP TCP listener.
    pub tcp: TcpListener,
    /// HTTP listener.
    pub http: TcpListener,
}

impl Listeners {
    /// Bind every listener of `cfg` (fails with a clear error if a port is taken).
    pub async fn bind(cfg: &Config) -> Result<Self> {
        let udp = UdpSocket::bind(cfg.sip_listen)
            .await
            .with_context(|| format!("binding SIP UDP {}", cfg.sip_listen))?;
        let tcp = TcpListener::bind(cfg.sip_listen)
            .await
            .with_context(|| format!("binding SIP TCP {}", cfg.sip_listen))?;
        let http = TcpListener::bind(cfg.http_listen)
            .await
            .with_context(|| format!("binding HTTP {}", cfg.http_listen))?;
        Ok(Self { udp, tcp, http })
    }
}

/// Run the server until `shutdown` resolves; then BYE every call and return.
pub async fn run(
    cfg: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let seed = match cfg.seed {
        Some(s) => s,
        None => {
            let mut b = [0u8; 8];
            getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("OS random source: {e}"))?;
            u64::from_le_bytes(b)
        }
    };
    tracing::info!(seed, sip = %cfg.sip_listen, media_ip = %cfg.media_ip, http = %cfg.http_listen, "serving");
    let shared = Shared::default();
    let origin = Instant::now();
    let udp = Arc::new(listeners.udp);
    let sip_local = udp.local_addr()?;
    let core = Core::new(sip_core::Config {
        local_addr: sip_local,
        user_agent: format!("Understudy/{}", env!("CARGO_PKG_VERSION")),
        max_message_size: MAX_SIP_MESSAGE,
        seed,
    });
    let (in_tx, mut in_rx) = mpsc::channel::<SipIn>(4096);

    // HTTP.
    let (http_stop_tx, http_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app = crate::http::router(shared.clone());
    let http_task = tokio::spawn(async move {
        let _ = axum::serve(listeners.http, app)
            .with_graceful_shutdown(async move {
                let _ = http_stop_rx.await;
            })
            .await;
    });

    // SIP UDP reader.
    let udp_reader = {
        let udp = udp.clone();
        let tx = in_tx.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                match udp.recv_from(&mut buf).await {
                    Ok((n, from)) => {
                        if tx
                            .send(SipIn::Datagram {
                                from,
                                data: buf[..n].to_vec(),
                            })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => tracing::debug!("SIP UDP recv: {e}"),
                }
            }
        })
    };

    // SIP TCP acceptor.
    let tcp_acceptor = {
        let tx = in_tx.clone();
        let tcp = listeners.tcp;
        tokio::spawn(async move {
            let mut next_conn: ConnId = 1;
            loop {
                let Ok((stream, from)) = tcp.accept().await else {
                    continue;
                };
                let conn = next_conn;
                next_conn += 1;
                let (wtx, mut wrx) = mpsc::unbounded_channel::<Vec<u8>>();
                if tx.send(SipIn::TcpOpen { conn, writer: wtx }).await.is_err() {
                    return;
                }
                let (mut rd, mut wr) = stream.into_split();
                tokio::spawn(async move {
                    while let Some(data) = wrx.recv().await {
                        if wr.write_all(&data).await.is_err() {
                            break;
                        }
                    }
                });
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16384];
                    loop {
                        match rd.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if tx
                                    .send(SipIn::TcpData {
                                        conn,
                                        from,
                                        data: buf[..n].to_vec(),
                                    })
                                    .await
                                    .is_err()
                                {
                                    return;
                                }
                            }
                        }
                    }
                    let _ = tx.send(SipIn::TcpClosed { conn }).await;
                });
            }
        })
    };
    drop(in_tx);

    let mut ctl = Control {
        ports: PortAllocator::new(cfg.media_ip, cfg.rtp_port_min, cfg.rtp_port_max),
        cfg,
        core,
        udp,
        tcp_writers: HashMap::new(),
        calls: BTreeMap::new(),
        rooms: HashMap::new(),
        shared,
        origin,
        seed,
        rng: seed,
        last_sip_stats: Default::default(),
    };

    tokio::pin!(shutdown);
    let mut stopping: Option<Instant> = None;
    loop {
        let deadline = ctl.core.poll_timeout().map(|d| origin + d);
        let sleep_until = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            msg = in_rx.recv() => {
                let Some(msg) = msg else { break };
                let now = ctl.now();
                match msg {
                    SipIn::Datagram { from, data } => ctl.core.handle_datagram(from, &data, now),
                    SipIn::TcpOpen { conn, writer } => { ctl.tcp_writers.insert(conn, writer); }
                    SipIn::TcpData { conn, from, data } => ctl.core.handle_stream_data(conn, from, &data, now),
                    SipIn::TcpClosed { conn } => {
                        ctl.tcp_writers.remove(&conn);
                        ctl.core.handle_stream_closed(conn, now);
                    }
                }
                ctl.process().await;
            }
            _ = tokio::time::sleep_until(sleep_until.into()) => {
                let now = ctl.now();
                ctl.core.handle_timeout(now);
                ctl.process().await;
            }
            _ = &mut shutdown, if stopping.is_none() => {
                tracing::info!(calls = ctl.calls.len(), "shutting down: sending BYE to every participant");
                stopping = Some(Instant::now());
                let now = ctl.now();
                let calls: Vec<_> = ctl.calls.iter().map(|(c, s)| (*c, s.confirmed)).collect();
                for (call, confirmed) in calls {
                    if confirmed {
                        let _ = ctl.core.hangup(call, now);
                    } else if ctl.core.hangup(call, now).is_err() {
                        let _ = ctl.core.reject(call, 503, now);
                    }
                }
                ctl.process().await;
            }
            _ = tokio::time::sleep(Duration::from_millis(50)), if stopping.is_some() => {}
        }
        if let Some(t) = stopping {
            if ctl.calls.is_empty() || t.elapsed() > SHUTDOWN_GRACE {
                break;
            }
        }
    }
    if !ctl.calls.is_empty() {
        tracing::warn!(
            calls = ctl.calls.len(),
            "calls still alive at exit (BYE unanswered)"
        );
    }
    udp_reader.abort();
    tcp_acceptor.abort();
    for (_, r) in ctl.rooms.drain() {
        let _ = r.handle.tx.send(RoomMsg::Close).await;
    }
    let _ = http_stop_tx.send(());
    let _ = http_task.await;
    tracing::info!("stopped");
    Ok(())
}
