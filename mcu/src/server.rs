//! The server's main task: the driver of the control core ([`control::Core`]).
//!
//! It owns the core, the SIP sockets' writers, the media sockets not yet handed to a room,
//! the room task handles and, on a hot-standby node, the sync link. Each loop turn feeds one
//! input to the core (a SIP datagram or stream bytes, a timer, a room's reply, a sync-link
//! event, an idle SIP/TCP connection it closed, shutdown) and then carries out the actions
//! it asked for ([`Server::act`]). Room
//! tasks ([`crate::room`]) and the sync link's thread ([`crate::sync_link`]) talk to it only
//! through channels: it never waits for either.

use crate::config::{Config, FtRole};
use crate::hot_standby::{self, HotStandby};
use crate::limits::{self, AcceptBackoff};
use crate::metrics::Metrics;
use crate::room::{spawn_room, MediaEndpoint, RoomCtl, RoomCtx, RoomHandle, VideoMember};
use crate::state::{
    AdminRequest, ParticipantView, RoomView, Shared, SwitchoverRequest, SwitchoverView,
    TakeoverView, VideoView, WhipRequest,
};
use crate::sync_link::{SyncCommand, SyncEvent};
use crate::webrtc::{WebRtcCtl, WebRtcHandle};
use anyhow::{Context, Result};
use control::limit::SourceLimiter;
use control::{
    Action, Core, Entry, MemberMedia, MemberVideo, Role, RoomCommand, RoomEvent, WhipResult,
};
use sip_core::{ConnId, Transport};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use webrtc_core::peer::PeerConfig;

/// Largest SIP message accepted (UDP datagram or one framed TCP message).
pub const MAX_SIP_MESSAGE: usize = 16 * 1024;
/// The least time HTTP requests in flight get to finish at shutdown, even when the BYE
/// transactions used up the whole `--shutdown-timeout`.
const HTTP_DRAIN_MIN: Duration = Duration::from_millis(250);

/// Planned switchover: the handover tick is at least this far ahead of the request (the
/// backup must have its rooms running by then: a sync round trip, its takeover, the rooms'
/// start, 10-20 ms at 40 rooms on two cores).
const HANDOVER_LEAD: Duration = Duration::from_millis(40);

/// Planned switchover: the old primary stops this long after the handover tick's instant
/// (its last tick before it is sent by then).
const HANDOVER_MARGIN: Duration = Duration::from_millis(5);

/// Planned switchover: the backup claims the service address (gratuitous ARP) this long
/// before the handover tick, so that the old primary mixes its clients' packets until then.
const CLAIM_LEAD: Duration = Duration::from_millis(5);

/// Backup: G.711 resamplers built ahead beyond the replicated calls' needs.
const PREWARM_SPARE: usize = 8;
/// How long a closing SIP/TCP connection may take to write what was queued for it.
const TCP_FLUSH_GRACE: Duration = Duration::from_secs(1);

/// SIP datagrams other than calls' (OPTIONS, keep-alives, REGISTER) that may wait for the
/// server loop; when it is behind, new ones are dropped unparsed and counted. Calls'
/// messages have their own queue, served first.
const LOW_PRIORITY_QUEUE: usize = 1024;

/// Receive buffer asked for the SIP UDP socket, bytes.
const SIP_RECV_BUFFER: usize = 4 << 20;

/// Sources whose SIP rate the readers track at most (see [`control::limit::SourceLimiter`]).
const RATE_LIMITED_SOURCES: usize = 65_536;

/// How long a SIP/TCP reader over its source's rate waits before asking again.
const TCP_THROTTLE_STEP: Duration = Duration::from_millis(5);

/// The per-source SIP rate limit shared by the UDP reader and every SIP/TCP connection (one
/// budget per source IP, whatever the transport).
struct SipRate {
    limiter: Mutex<SourceLimiter>,
    origin: Instant,
}

impl SipRate {
    fn allow(&self, ip: std::net::IpAddr) -> bool {
        let now = self.origin.elapsed();
        self.limiter.lock().unwrap().allow(ip, now)
    }

    /// Wait until `ip`'s budget covers `msgs` more messages: a SIP/TCP connection over the
    /// limit is read no faster than the limit allows (TCP flow control pushes back on the
    /// sender); its messages are delayed, never dropped (a stream cannot lose a message).
    /// Returns how many messages had to wait.
    async fn take(&self, ip: std::net::IpAddr, msgs: usize) -> u64 {
        let mut waited = 0;
        for _ in 0..msgs {
            if !self.allow(ip) {
                waited += 1;
                while !self.allow(ip) {
                    tokio::time::sleep(TCP_THROTTLE_STEP).await;
                }
            }
        }
        waited
    }
}

/// Bound listeners, ready to serve.
pub struct Listeners {
    /// SIP UDP socket.
    pub udp: UdpSocket,
    /// SIP TCP listener.
    pub tcp: TcpListener,
    /// HTTP listeners, one per `--http-listen` address, in that order.
    pub http: Vec<TcpListener>,
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
        let http = bind_http(&cfg.http_listen)?;
        Ok(Self { udp, tcp, http })
    }
}

/// Bind one HTTP listener per address ([`crate::http::bind`]: IP_FREEBIND, so a hot-standby
/// backup binds the service address it does not own yet).
pub fn bind_http(addrs: &[SocketAddr]) -> Result<Vec<TcpListener>> {
    addrs
        .iter()
        .map(|a| crate::http::bind(*a).with_context(|| format!("binding HTTP {a}")))
        .collect()
}

/// SIP input from the socket tasks.
enum SipIn {
    Datagram {
        from: SocketAddr,
        data: Vec<u8>,
    },
    TcpOpen {
        conn: ConnId,
        writer: mpsc::UnboundedSender<Vec<u8>>,
        /// Dropping it closes the connection.
        close: tokio::sync::oneshot::Sender<()>,
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

/// A room task and the API's view of it.
struct RoomEntry {
    handle: RoomHandle,
    view: Arc<Mutex<RoomView>>,
}

/// An open SIP/TCP connection, as the main task sees it. Dropping it closes the connection.
struct TcpConn {
    writer: mpsc::UnboundedSender<Vec<u8>>,
    _close: tokio::sync::oneshot::Sender<()>,
    /// When the connection last delivered bytes (or opened).
    last_input: Instant,
}

struct Server {
    cfg: Config,
    core: Core,
    origin: Instant,
    udp: Arc<UdpSocket>,
    tcp: HashMap<ConnId, TcpConn>,
    /// Media sockets of calls not (yet) in a room, by call and RTP port (a call's audio pair,
    /// and its video pair when it has one).
    media: HashMap<(u64, u16), (std::net::UdpSocket, std::net::UdpSocket)>,
    rooms: HashMap<u64, RoomEntry>,
    room_tx: mpsc::UnboundedSender<RoomEvent>,
    shared: Shared,
    hs: Option<HotStandby>,
    /// A fatal hot-standby error: the server stops with it.
    fatal: Option<String>,
    last_sip: sip_core::Stats,
    last_core: control::Stats,
    takeover_started: Option<(Instant, u64)>,
    /// The pair is protected (see [`Server::publish_status`]); None before the first look.
    protected: Option<bool>,
    /// The fatal error means: this node was taken over (or lost to another primary) and
    /// rejoins as backup ([`Rejoin`]).
    rejoin: bool,
    /// The WebRTC task (browser participants), if served.
    webrtc: Option<WebRtcHandle>,
    webrtc_port: u16,
    /// WHIP requests waiting for the core's reply, by request id.
    whip_waiting: HashMap<u64, tokio::sync::oneshot::Sender<WhipResult>>,
    next_whip: u64,
    /// The operator's requests waiting for the core's reply, by request id.
    admin_waiting: HashMap<u64, tokio::sync::oneshot::Sender<control::AdminResult>>,
    next_admin: u64,
    /// Rooms opened from a snapshot during this [`Server::act`]: told `Resumed` once the
    /// members' Attach commands are sent.
    resuming: Vec<u64>,
    /// A planned switchover under way on this primary: its handover tick.
    switching: Option<u64>,
    /// Handed over: stop (and rejoin as backup) at this instant, once the rooms sent the
    /// last tick before the handover tick.
    leave_at: Option<Instant>,
    /// A takeover started by the primary's handover (planned), not by a failure.
    planned_takeover: bool,
    /// Backup: G.711 resamplers to keep built ahead ([`prewarm`]).
    prewarm: Prewarm,
}

/// Backup: how many G.711 resamplers the [`prewarm`] thread keeps built, and the thread.
#[derive(Default)]
struct Prewarm {
    wanted: Arc<std::sync::atomic::AtomicUsize>,
    thread: Option<std::thread::Thread>,
}

impl Prewarm {
    /// Keep `n` built (`usize::MAX`: the node serves, the thread ends). The thread is woken
    /// only when the figure changes: a standing-by backup costs nothing when idle.
    fn want(&self, n: usize) {
        if self.wanted.swap(n, std::sync::atomic::Ordering::Relaxed) != n {
            if let Some(t) = &self.thread {
                t.unpark();
            }
        }
    }
}

/// Backup: keep as many fresh G.711 resamplers built (`mixer::prewarm_g711`) as the
/// replicated calls will need at a takeover (`wanted`, updated by the server task), on a
/// low-priority thread: building them at the takeover would delay the promoted rooms' first
/// packets by tens of milliseconds at a few hundred calls. Stops when `wanted` is
/// `usize::MAX` (the node serves). It sleeps until [`Prewarm::want`] changes the figure.
fn prewarm(wanted: Arc<std::sync::atomic::AtomicUsize>) -> Option<std::thread::Thread> {
    let spawned = std::thread::Builder::new()
        .name("prewarm".into())
        .spawn(move || {
            // SAFETY: setpriority on the calling thread (who = 0); no pointers.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
            loop {
                let n = wanted.load(std::sync::atomic::Ordering::Relaxed);
                if n == usize::MAX {
                    return;
                }
                if let Err(e) = mixer::prewarm_g711(n) {
                    tracing::warn!("building G.711 resamplers ahead: {e}");
                    return;
                }
                std::thread::park();
            }
        });
    match spawned {
        Ok(t) => Some(t.thread().clone()),
        Err(e) => {
            tracing::warn!("prewarm thread: {e}");
            None
        }
    }
}

/// The error [`run_with_ft`] returns when this node was taken over while alive (it stalled
/// past the failure detector, or a partition healed with the other node serving): the other
/// node owns the clients; this process has stopped without touching them and must start
/// again to rejoin as the new primary's backup (`mcu serve` re-executes itself; a configured
/// primary finds the serving one and joins it as backup).
#[derive(Debug)]
pub struct Rejoin(pub String);

impl std::fmt::Display for Rejoin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (rejoining as backup)", self.0)
    }
}

impl std::error::Error for Rejoin {}

/// Run the server until `shutdown` resolves; then BYE every call and return.
pub async fn run(
    cfg: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    run_with_ft(cfg, listeners, None, shutdown).await
}

/// [`run`] as a hot-standby node ([`hot_standby::start`] first, then bind the listeners).
pub async fn run_with_ft(
    cfg: Config,
    listeners: Listeners,
    hs: Option<HotStandby>,
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
    limits::check_fd_budget(&cfg);
    tracing::info!(seed, sip = %cfg.sip_listen, media_ip = %cfg.media_ip, http = ?cfg.http_listen, "serving");
    let mut shared = Shared::default();
    let role = match hs.as_ref().map(|h| h.role) {
        None => Role::Standalone,
        Some(FtRole::Primary) => Role::Primary,
        Some(FtRole::Backup) => Role::Backup,
    };
    if let Some(h) = &hs {
        shared.fenced = h.link.fenced();
    }
    let (switch_tx, mut switch_rx) = mpsc::unbounded_channel::<SwitchoverRequest>();
    if hs.is_some() {
        shared.switchover = Some(switch_tx);
    } else {
        drop(switch_tx);
    }
    let origin = Instant::now();
    let udp = Arc::new(listeners.udp);
    // Room for bursts while the reader is busy (the kernel caps it at net.core.rmem_max).
    if let Err(e) = socket2::SockRef::from(&*udp).set_recv_buffer_size(SIP_RECV_BUFFER) {
        tracing::debug!("SIP UDP receive buffer: {e}");
    }
    let mut core_cfg = control::Config::new(udp.local_addr()?, seed);
    core_cfg.sip.user_agent = format!("Understudy/{}", env!("CARGO_PKG_VERSION"));
    core_cfg.sip.max_message_size = MAX_SIP_MESSAGE;
    core_cfg.media_ip = cfg.media_ip;
    core_cfg.rtp_port_min = cfg.rtp_port_min;
    core_cfg.rtp_port_max = cfg.rtp_port_max;
    core_cfg.max_participants = cfg.max_participants;
    core_cfg.top_n = cfg.top_n;
    core_cfg.video = cfg.video;
    core_cfg.video_layout = cfg.video_layout;
    // WebRTC: one UDP port for every browser, one long-lived certificate.
    let (peer_tx, mut peer_rx) = mpsc::unbounded_channel::<(u64, control::PeerInput)>();
    let (whip_tx, mut whip_rx) = mpsc::unbounded_channel::<WhipRequest>();
    let mut webrtc = None;
    let mut webrtc_task = None;
    if let Some(port) = cfg.webrtc_port {
        let cert = crate::webrtc::load_or_create_certificate(cfg.dtls_cert.as_deref())?;
        let sock = std::net::UdpSocket::bind((cfg.media_ip, port))
            .with_context(|| format!("binding the WebRTC port {}:{port}", cfg.media_ip))?;
        sock.set_nonblocking(true)?;
        let sock = UdpSocket::from_std(sock)?;
        let port = sock.local_addr()?.port();
        core_cfg.webrtc = Some(control::WebRtcConfig {
            port,
            fingerprint: cert.fingerprint_sha256(),
        });
        tracing::info!(port, fingerprint = %cert.fingerprint_sha256(), "WebRTC (WHIP) served");
        let transport = webrtc_core::transport::Transport::new(cert, Instant::now());
        let (h, task) = crate::webrtc::spawn(
            sock,
            transport,
            peer_tx,
            shared.metrics.clone(),
            shared.fenced.clone(),
        );
        webrtc = Some(h);
        webrtc_task = Some(task);
        shared.whip = Some(whip_tx);
    } else {
        drop(whip_tx);
        drop(peer_tx);
    }
    let core_webrtc_port = core_cfg.webrtc.as_ref().map_or(0, |w| w.port);
    // The admin API: its token, and its requests to this task.
    let (admin_tx, mut admin_rx) = mpsc::unbounded_channel::<AdminRequest>();
    shared.admin = Some(admin_tx);
    shared.admin_token = cfg.admin_token.clone().map(Arc::new);
    shared.max_participants = cfg.max_participants;
    let core = Core::new(core_cfg, role, hot_standby::origin_to_unix_ns(origin));

    // HTTP, and the live updates its `/api/ws` sockets get.
    let live = crate::live::spawn(shared.clone());
    let (http_stop_tx, http_stop_rx) = tokio::sync::oneshot::channel::<Instant>();
    let http_task = tokio::spawn(crate::http::serve(
        listeners.http,
        crate::http::router(shared.clone()),
        crate::http::HttpLimits {
            max_connections: cfg.limits.max_http_connections,
            header_timeout: cfg.limits.http_header_timeout,
        },
        shared.metrics.clone(),
        http_stop_rx,
    ));
    let (in_tx, mut in_rx) = mpsc::channel::<SipIn>(4096);
    let (low_tx, mut low_rx) = mpsc::channel::<SipIn>(LOW_PRIORITY_QUEUE);
    let rate = Arc::new(SipRate {
        limiter: Mutex::new(SourceLimiter::new(
            cfg.sip_rate_limit,
            cfg.sip_rate_burst,
            RATE_LIMITED_SOURCES,
        )),
        origin: Instant::now(),
    });
    let udp_reader = tokio::spawn(read_udp(
        udp.clone(),
        in_tx.clone(),
        low_tx,
        rate.clone(),
        shared.metrics.clone(),
    ));
    let tcp_acceptor = tokio::spawn(accept_tcp(
        listeners.tcp,
        in_tx,
        cfg.limits.max_sip_connections,
        cfg.limits.max_sip_connections_per_source,
        rate,
        shared.metrics.clone(),
    ));
    let idle_timeout = cfg.limits.sip_tcp_idle_timeout;
    let mut idle_sweep = tokio::time::interval(
        (idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1)),
    );
    idle_sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (room_tx, mut room_rx) = mpsc::unbounded_channel();

    let mut s = Server {
        cfg,
        core,
        origin,
        udp,
        tcp: HashMap::new(),
        media: HashMap::new(),
        rooms: HashMap::new(),
        room_tx,
        shared,
        hs,
        fatal: None,
        last_sip: Default::default(),
        last_core: Default::default(),
        takeover_started: None,
        protected: None,
        rejoin: false,
        webrtc,
        webrtc_port: core_webrtc_port,
        whip_waiting: HashMap::new(),
        next_whip: 0,
        admin_waiting: HashMap::new(),
        next_admin: 0,
        resuming: Vec::new(),
        switching: None,
        leave_at: None,
        planned_takeover: false,
        prewarm: Prewarm::default(),
    };
    if role == Role::Backup {
        s.prewarm.thread = prewarm(s.prewarm.wanted.clone());
    }
    let pending: VecDeque<_> =
        s.hs.as_mut()
            .map(|h| std::mem::take(&mut h.pending))
            .unwrap_or_default();
    for ev in pending {
        s.on_sync(ev);
    }
    s.publish_status();

    tokio::pin!(shutdown);
    // The shutdown deadline, once the signal came.
    let mut stopping: Option<Instant> = None;
    loop {
        let deadline = s.core.poll_timeout().map(|d| s.origin + d);
        let sleep_until = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            msg = in_rx.recv() => {
                let Some(msg) = msg else { break };
                s.sip_in(msg);
            }
            // The rest only while no call's message waits.
            Some(msg) = low_rx.recv(), if in_rx.is_empty() => s.sip_in(msg),
            _ = tokio::time::sleep_until(sleep_until.into()) => {
                let now = s.now();
                s.core.handle_timeout(now);
            }
            _ = idle_sweep.tick() => s.close_idle_tcp(idle_timeout),
            Some(ev) = room_rx.recv() => s.on_room_event(ev),
            Some((id, input)) = peer_rx.recv() => {
                let now = s.now();
                s.core.handle_peer_input(id, input, now);
            }
            Some(req) = whip_rx.recv() => s.whip(req),
            Some(req) = admin_rx.recv() => s.admin(req),
            Some(reply) = switch_rx.recv() => s.switchover(reply),
            _ = tokio::time::sleep_until(s.leave_at.unwrap_or_else(Instant::now).into()), if s.leave_at.is_some() => {
                s.leave_at = None;
                tracing::warn!("planned switchover: the backup serves from the handover tick on; rejoining as its backup");
                s.rejoin = true;
                s.fatal = Some(format!("hot standby: {}", ft_sync::Error::HandedOver));
            }
            Some(ev) = sync_recv(s.hs.as_mut()) => s.on_sync(ev),
            _ = &mut shutdown, if stopping.is_none() => {
                tracing::info!(calls = s.core.calls().len(), "shutting down: sending BYE to every participant");
                stopping = Some(Instant::now() + s.cfg.limits.shutdown_timeout);
                let now = s.now();
                s.core.handle_shutdown(now);
            }
            _ = tokio::time::sleep(Duration::from_millis(50)), if stopping.is_some() => {}
        }
        s.act();
        if s.hs.is_some() {
            s.publish_status();
        }
        if s.fatal.is_some() {
            break;
        }
        if let Some(deadline) = stopping {
            if s.core.is_idle() || Instant::now() >= deadline {
                break;
            }
        }
    }
    if s.fatal.is_some() {
        tracing::warn!(
            calls = s.core.calls().len(),
            "stopping without BYE: the calls belong to the node that took over"
        );
    } else if !s.core.is_idle() {
        tracing::warn!(
            calls = s.core.calls().len(),
            "calls still alive at exit (BYE unanswered)"
        );
    }
    udp_reader.abort();
    tcp_acceptor.abort();
    if let Some(t) = webrtc_task {
        t.abort();
    }
    s.tcp.clear();
    for (_, r) in s.rooms.drain() {
        let _ = r.handle.ctl.send(RoomCtl::Close);
    }
    // HTTP: the requests in flight finish until the deadline, then every connection drops.
    let http_deadline = stopping
        .unwrap_or_else(Instant::now)
        .max(Instant::now() + HTTP_DRAIN_MIN);
    // The live sockets close first (1001, "going away"): the admin pages reconnect.
    live.stop();
    let _ = http_stop_tx.send(http_deadline);
    let _ = http_task.await;
    if let Some(f) = s.fatal.take() {
        if s.rejoin {
            return Err(Rejoin(f).into());
        }
        anyhow::bail!(f);
    }
    tracing::info!("stopped");
    Ok(())
}

async fn sync_recv(hs: Option<&mut HotStandby>) -> Option<SyncEvent<Entry>> {
    match hs {
        Some(h) => h.link.recv().await,
        None => std::future::pending().await,
    }
}

/// Read SIP datagrams: drop those of a source over its rate unparsed, queue calls' messages
/// (waiting if the server is behind) and the rest on the bounded low-priority queue (dropped
/// when full). Each drop is counted.
async fn read_udp(
    udp: Arc<UdpSocket>,
    calls: mpsc::Sender<SipIn>,
    rest: mpsc::Sender<SipIn>,
    rate: Arc<SipRate>,
    metrics: Metrics,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        match udp.recv_from(&mut buf).await {
            Ok((n, from)) => {
                if !rate.allow(from.ip()) {
                    metrics.sip_rate_limited.inc();
                    continue;
                }
                let data = &buf[..n];
                let call = sip_core::triage::is_call_message(data);
                let msg = SipIn::Datagram {
                    from,
                    data: data.to_vec(),
                };
                if call {
                    if calls.send(msg).await.is_err() {
                        return;
                    }
                } else {
                    match rest.try_send(msg) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            metrics.sip_low_priority_dropped.inc();
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => return,
                    }
                }
            }
            Err(e) => tracing::debug!("SIP UDP recv: {e}"),
        }
    }
}

/// Accept SIP/TCP connections, at most `max` open at once and `max_per_source` from one
/// source IP address: above either a new connection is accepted and closed at once
/// (counted), which frees its descriptor and keeps the backlog moving. Accept failures (out of descriptors) pause the acceptor ([`limits::accept`]).
async fn accept_tcp(
    tcp: TcpListener,
    tx: mpsc::Sender<SipIn>,
    max: usize,
    max_per_source: usize,
    rate: Arc<SipRate>,
    metrics: Metrics,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(max));
    let per_source = limits::PerSource::new(max_per_source);
    let mut backoff = AcceptBackoff::default();
    let mut next_conn: ConnId = 1;
    loop {
        let (stream, from) = limits::accept(
            &tcp,
            &mut backoff,
            &metrics.sip_tcp_accept_errors,
            "SIP/TCP",
            None,
        )
        .await;
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.sip_tcp_rejected.inc();
            continue; // dropping the stream closes it
        };
        let Some(share) = per_source.try_take(from.ip()) else {
            metrics.sip_tcp_rejected_per_source.inc();
            continue;
        };
        let conn = next_conn;
        next_conn += 1;
        let (wtx, wrx) = mpsc::unbounded_channel::<Vec<u8>>();
        let (close_tx, close_rx) = tokio::sync::oneshot::channel();
        let open = SipIn::TcpOpen {
            conn,
            writer: wtx,
            close: close_tx,
        };
        if tx.send(open).await.is_err() {
            return;
        }
        metrics.sip_tcp_connections.inc();
        let (tx, rate, metrics) = (tx.clone(), rate.clone(), metrics.clone());
        tokio::spawn(async move {
            let io = TcpIo {
                conn,
                from,
                close: close_rx,
                tx,
                rate,
                metrics: metrics.clone(),
            };
            serve_tcp(stream, wrx, io).await;
            metrics.sip_tcp_connections.dec();
            drop((permit, share));
        });
    }
}

/// What a SIP/TCP connection's reader works with.
struct TcpIo {
    conn: ConnId,
    from: SocketAddr,
    /// Dropped by the main task to close the connection.
    close: tokio::sync::oneshot::Receiver<()>,
    tx: mpsc::Sender<SipIn>,
    rate: Arc<SipRate>,
    metrics: Metrics,
}

/// One SIP/TCP connection: bytes in go to the main task until the peer closes (reported) or
/// the main task drops the connection's `close` sender (not reported: it knows). The
/// messages are counted against the source's rate limit first (a framer of its own cuts
/// them; the core frames the same bytes again) and read no faster than it allows.
async fn serve_tcp(
    stream: tokio::net::TcpStream,
    mut wrx: mpsc::UnboundedReceiver<Vec<u8>>,
    io: TcpIo,
) {
    let TcpIo {
        conn,
        from,
        mut close,
        tx,
        rate,
        metrics,
    } = io;
    let mut framer = sip_core::framing::Framer::default();
    let (mut rd, mut wr) = stream.into_split();
    // The writer ends when the main task drops the connection's sender, after writing what
    // was queued.
    let mut writer = tokio::spawn(async move {
        while let Some(data) = wrx.recv().await {
            if wr.write_all(&data).await.is_err() {
                break;
            }
        }
    });
    let mut buf = vec![0u8; 16384];
    let peer_closed = loop {
        tokio::select! {
            _ = &mut close => break false,
            r = rd.read(&mut buf) => match r {
                Ok(0) | Err(_) => break true,
                Ok(n) => {
                    let data = buf[..n].to_vec();
                    let msgs = framer.push(&data, MAX_SIP_MESSAGE).len();
                    let waited = rate.take(from.ip(), msgs).await;
                    metrics.sip_tcp_throttled.inc_by(waited);
                    if tx.send(SipIn::TcpData { conn, from, data }).await.is_err() {
                        break false;
                    }
                }
            },
        }
    };
    if peer_closed {
        let _ = tx.send(SipIn::TcpClosed { conn }).await;
    }
    // A peer that does not read must not hold the descriptor: the writer gets a moment to
    // flush, then goes.
    if tokio::time::timeout(TCP_FLUSH_GRACE, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

impl Server {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// Close the SIP/TCP connections silent for `idle` that no dialog or transaction uses.
    /// A connection carrying a call stays open however quiet (our BYE goes out on it).
    fn close_idle_tcp(&mut self, idle: Duration) {
        let mut idle: Vec<ConnId> = self
            .tcp
            .iter()
            .filter(|(_, t)| t.last_input.elapsed() >= idle)
            .map(|(c, _)| *c)
            .collect();
        if idle.is_empty() {
            return; // the usual case: no scan of the core's dialogs
        }
        let in_use = self.core.sip_streams_in_use();
        idle.retain(|c| !in_use.contains(c));
        let now = self.now();
        for conn in idle {
            self.tcp.remove(&conn);
            self.shared.metrics.sip_tcp_idle_closed.inc();
            self.core.handle_sip_stream_closed(conn, now);
        }
    }

    fn sip_in(&mut self, msg: SipIn) {
        let now = self.now();
        match msg {
            SipIn::Datagram { from, data } => self.core.handle_sip_datagram(from, &data, now),
            SipIn::TcpOpen {
                conn,
                writer,
                close,
            } => {
                let c = TcpConn {
                    writer,
                    _close: close,
                    last_input: Instant::now(),
                };
                self.tcp.insert(conn, c);
            }
            SipIn::TcpData { conn, from, data } => {
                // Bytes of a connection the server has just closed are ignored.
                if let Some(c) = self.tcp.get_mut(&conn) {
                    c.last_input = Instant::now();
                    self.core.handle_sip_stream(conn, from, &data, now);
                }
            }
            SipIn::TcpClosed { conn } => {
                if self.tcp.remove(&conn).is_some() {
                    self.core.handle_sip_stream_closed(conn, now);
                }
            }
        }
    }

    /// Carry out what the core asked for, until it asks nothing more.
    fn act(&mut self) {
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::SendSip { transmit, held } => {
                    if let Some(w) = held {
                        self.shared.metrics.sip_commit_wait.observe(w.as_secs_f64());
                    }
                    self.send_sip(transmit);
                }
                Action::OpenMedia { call, port } => {
                    let ok = match bind_pair(self.cfg.media_ip, port) {
                        Ok(pair) => {
                            self.media.insert((call, port), pair);
                            true
                        }
                        Err(e) => {
                            tracing::debug!(call, port, "binding media ports: {e}");
                            false
                        }
                    };
                    let now = self.now();
                    self.core.handle_media_opened(call, port, ok, now);
                }
                Action::CloseMedia { call } => {
                    self.media.retain(|(c, _), _| *c != call);
                }
                Action::Room(cmd) => self.room_command(cmd),
                Action::Replicate { seq, entry } => {
                    self.shared.metrics.ft_replicated.inc();
                    if let Some(h) = &self.hs {
                        h.link.send(SyncCommand::Replicate { seq, item: entry });
                    }
                }
                Action::ReplicateFull { seq, entries } => {
                    self.shared
                        .metrics
                        .ft_replicated
                        .inc_by(entries.len() as u64);
                    if let Some(h) = &self.hs {
                        h.link.send(SyncCommand::Snapshot {
                            seq,
                            items: entries,
                        });
                    }
                }
                Action::Dtmf { room, call, digit } => {
                    let ev = mixer::Event::Dtmf {
                        participant: call,
                        digit,
                        duration_ms: 0,
                    };
                    crate::state::push_event(&self.shared.events, &room, ev);
                }
                Action::OpenPeer {
                    id,
                    local,
                    remote,
                    remote_fingerprint,
                } => {
                    if let Some(w) = &self.webrtc {
                        let cfg = PeerConfig {
                            local,
                            remote,
                            remote_fingerprint,
                        };
                        let _ = w.ctl.send(WebRtcCtl::Add { id, cfg });
                    }
                }
                Action::ResumePeer {
                    id,
                    local,
                    remote,
                    remote_fingerprint,
                    keys,
                    selected,
                } => {
                    if let Some(w) = &self.webrtc {
                        let cfg = PeerConfig {
                            local,
                            remote,
                            remote_fingerprint,
                        };
                        let _ = w.ctl.send(WebRtcCtl::Resume {
                            id,
                            cfg,
                            keys,
                            selected,
                        });
                        // The browser's rollover counters, from the mirrored input.
                        let streams = selected
                            .and_then(|a| {
                                let m = self.hs.as_ref()?.net.mirror.as_ref()?;
                                Some(m.inbound(a))
                            })
                            .unwrap_or_default();
                        if !streams.is_empty() {
                            let _ = w.ctl.send(WebRtcCtl::ResumeInbound { id, streams });
                        }
                    }
                }
                Action::ReleaseFinalFlight { id } => {
                    if let Some(w) = &self.webrtc {
                        let _ = w.ctl.send(WebRtcCtl::Release { id });
                    }
                }
                Action::ClosePeer { id } => {
                    if let Some(w) = &self.webrtc {
                        let _ = w.ctl.send(WebRtcCtl::Remove { id });
                    }
                }
                Action::WhipReply { request, result } => {
                    if let Some(tx) = self.whip_waiting.remove(&request) {
                        let _ = tx.send(result);
                    }
                }
                Action::AdminReply { request, result } => {
                    if let control::AdminResult::Settings {
                        room,
                        settings,
                        max_participants,
                        layout,
                    } = &result
                    {
                        if let Some(v) = self.shared.rooms.lock().unwrap().get(room) {
                            let mut v = v.lock().unwrap();
                            v.locked = settings.locked;
                            v.max_participants = *max_participants;
                            v.layout = *layout;
                        }
                    }
                    if let Some(tx) = self.admin_waiting.remove(&request) {
                        let _ = tx.send(result);
                    }
                }
                Action::TakeoverComplete { calls, rooms } => {
                    if let Some((started, at_unix_ms)) = self.takeover_started.take() {
                        let duration = started.elapsed();
                        self.shared.status.lock().unwrap().last_takeover = Some(TakeoverView {
                            at_unix_ms,
                            duration_ms: duration.as_secs_f64() * 1e3,
                            calls,
                            rooms,
                            planned: self.planned_takeover,
                        });
                        tracing::warn!(
                            calls,
                            rooms,
                            duration_ms = duration.as_secs_f64() * 1e3,
                            "takeover complete: serving as primary"
                        );
                    }
                }
            }
        }
        // Every Attach of a room opened from a snapshot came with its Open (same pass):
        // the room may drop the participants nobody attached and start.
        for room in std::mem::take(&mut self.resuming) {
            if let Some(r) = self.rooms.get(&room) {
                let _ = r.handle.ctl.send(RoomCtl::Resumed);
            }
        }
        self.update_metrics();
    }

    fn send_sip(&self, t: sip_core::Transmit) {
        match t.transport {
            Transport::Udp => {
                if let Err(e) = self.udp.try_send_to(&t.data, t.to) {
                    tracing::debug!("SIP send to {} failed: {e}", t.to);
                }
            }
            Transport::Tcp(conn) => {
                if let Some(c) = self.tcp.get(&conn) {
                    let _ = c.writer.send(t.data);
                }
            }
        }
    }

    fn update_metrics(&mut self) {
        let m = &self.shared.metrics;
        let s = self.core.sip_stats();
        let l = &self.last_sip;
        m.sip_in.inc_by(s.messages_in.saturating_sub(l.messages_in));
        m.sip_malformed_answered
            .inc_by(s.malformed_answered.saturating_sub(l.malformed_answered));
        m.sip_malformed_dropped
            .inc_by(s.malformed_dropped.saturating_sub(l.malformed_dropped));
        m.sip_oversized
            .inc_by(s.oversized.saturating_sub(l.oversized));
        self.last_sip = s;
        let c = self.core.stats().clone();
        m.calls_accepted.inc_by(
            c.calls_accepted
                .saturating_sub(self.last_core.calls_accepted),
        );
        m.calls_rejected.inc_by(
            c.calls_rejected
                .saturating_sub(self.last_core.calls_rejected),
        );
        m.media_timeouts.inc_by(
            c.media_timeouts
                .saturating_sub(self.last_core.media_timeouts),
        );
        self.last_core = c;
    }

    /// Hand the call's sockets (the pair `media.port` names) over as a room member's
    /// endpoint.
    fn endpoint(&mut self, call: u64, media: &MemberMedia) -> Option<MediaEndpoint> {
        let (rtp, rtcp) = self.media.remove(&(call, media.port))?;
        let (rtp, rtcp) = match (UdpSocket::from_std(rtp), UdpSocket::from_std(rtcp)) {
            (Ok(a), Ok(b)) => (a, b),
            _ => return None,
        };
        Some(MediaEndpoint {
            rtp: Arc::new(rtp),
            rtcp: Arc::new(rtcp),
            remote_rtp: media.remote_rtp,
            remote_rtcp: media.remote_rtcp,
            rtcp_mux: media.rtcp_mux,
        })
    }

    /// A call's video for its room task, with its video sockets when this driver still holds
    /// them (a join, an attach, the re-INVITE that added it; not when the room has them).
    fn video_member(&mut self, call: u64, v: &MemberVideo) -> VideoMember {
        let sockets = self
            .media
            .remove(&(call, v.media.port))
            .and_then(|(rtp, rtcp)| {
                Some((
                    Arc::new(UdpSocket::from_std(rtp).ok()?),
                    Arc::new(UdpSocket::from_std(rtcp).ok()?),
                ))
            });
        VideoMember {
            params: v.params,
            remote_rtp: v.media.remote_rtp,
            remote_rtcp: v.media.remote_rtcp,
            rtcp_mux: v.media.rtcp_mux,
            sockets,
        }
    }

    fn room_command(&mut self, cmd: RoomCommand) {
        match cmd {
            RoomCommand::Open {
                room,
                name,
                init,
                layout,
                video,
                grid,
            } => {
                if matches!(init, control::RoomInit::Resume(_)) {
                    self.resuming.push(room);
                }
                // A room resumed at a takeover has the settings its record carries.
                let server_max = self.core.max_participants();
                let settings = self.core.room_settings(&name).cloned().unwrap_or_default();
                let view = Arc::new(Mutex::new(RoomView {
                    name: name.clone(),
                    locked: settings.locked,
                    max_participants: settings.limit(server_max),
                    layout,
                    ..RoomView::default()
                }));
                let handle = spawn_room(
                    RoomCtx {
                        id: room,
                        name: name.clone(),
                        origin: self.origin,
                        view: view.clone(),
                        metrics: self.shared.metrics.clone(),
                        events: self.shared.events.clone(),
                        replies: self.room_tx.clone(),
                        ship_snapshots: self.core.role() == Role::Primary,
                        fenced: self.shared.fenced.clone(),
                        fence_tick: self.shared.fence_tick.clone(),
                        start_tick: self.core.handover_tick(),
                        media_timeout: self.cfg.media_timeout,
                        webrtc: self.webrtc.clone(),
                        layout,
                    },
                    init,
                    video,
                    grid,
                );
                self.shared.rooms.lock().unwrap().insert(name, view.clone());
                self.shared.metrics.rooms.inc();
                self.rooms.insert(room, RoomEntry { handle, view });
            }
            RoomCommand::Join {
                room,
                call,
                params,
                media,
                video,
            } => {
                let Some(ep) = self.endpoint(call, &media) else {
                    let reason = "no media sockets for the call".to_string();
                    self.core.handle_room_event(
                        RoomEvent::JoinFailed { room, call, reason },
                        self.now(),
                    );
                    return;
                };
                let video = video.map(|v| self.video_member(call, &v));
                if let Some(r) = self.rooms.get(&room) {
                    let _ = r.handle.ctl.send(RoomCtl::Join {
                        id: call,
                        params,
                        media: ep,
                        video,
                    });
                }
            }
            RoomCommand::Attach {
                room,
                call,
                media,
                source,
                video,
                video_source,
            } => {
                // The mirror's latest source only for a call whose learned source never
                // reached us (it was still learning): it may be anyone's packet.
                let mirrored_at = |s: &Self, port: u16| {
                    s.hs.as_ref()
                        .and_then(|h| h.net.mirror.as_ref())
                        .and_then(|m| m.source(port, control::latch::PROBATION))
                };
                let mirrored = source.is_none().then(|| mirrored_at(self, media.port));
                let video_mirrored = match (&video, video_source) {
                    (Some(v), None) => mirrored_at(self, v.media.port),
                    _ => None,
                };
                let video = video.map(|v| self.video_member(call, &v));
                let params = self
                    .core
                    .call(call)
                    .and_then(|r| r.neg.as_ref())
                    .map(control::stream_params);
                let (held, sends) = params.map_or((false, true), |p| (!p.send, p.recv));
                let Some(ep) = self.endpoint(call, &media) else {
                    tracing::error!(call, port = media.port, "takeover: no media socket");
                    return;
                };
                self.add_view(room, call);
                if let Some(r) = self.rooms.get(&room) {
                    let _ = r.handle.ctl.send(RoomCtl::Attach {
                        id: call,
                        media: ep,
                        source,
                        mirrored: mirrored.flatten(),
                        held,
                        sends,
                        video,
                        video_source,
                        video_mirrored,
                    });
                }
            }
            RoomCommand::JoinPeer {
                room,
                call,
                params,
                video,
            } => {
                if let Some(r) = self.rooms.get(&room) {
                    let _ = r.handle.ctl.send(RoomCtl::JoinPeer {
                        id: call,
                        params,
                        video,
                    });
                }
            }
            RoomCommand::AttachPeer {
                room,
                call,
                srtcp_index,
                video,
                video_srtcp_index,
                video_ext_seq,
            } => {
                self.add_view(room, call);
                if let Some(r) = self.rooms.get(&room) {
                    let _ = r.handle.ctl.send(RoomCtl::AttachPeer {
                        id: call,
                        srtcp_index,
                        video,
                        video_srtcp_index,
                        video_ext_seq,
                    });
                }
            }
            RoomCommand::Update {
                room,
                call,
                params,
                remote_rtp,
                remote_rtcp,
                video,
            } => {
                let view_video = video.as_ref().map(video_view);
                let video = video.map(|v| self.video_member(call, &v));
                if let Some(r) = self.rooms.get(&room) {
                    if let Some(p) = r.view.lock().unwrap().participants.get_mut(&call) {
                        p.direction = direction_name(&params);
                        p.video = view_video;
                    }
                    let _ = r.handle.ctl.send(RoomCtl::Update {
                        id: call,
                        params,
                        remote_rtp,
                        remote_rtcp,
                        video,
                    });
                }
            }
            RoomCommand::Layout { room, layout } => {
                if let Some(r) = self.rooms.get(&room) {
                    r.view.lock().unwrap().layout = layout;
                    let _ = r.handle.ctl.send(RoomCtl::Layout { layout });
                }
            }
            RoomCommand::Mute { room, call, muted } => {
                if let Some(r) = self.rooms.get(&room) {
                    if let Some(p) = r.view.lock().unwrap().participants.get_mut(&call) {
                        p.muted = muted;
                    }
                    let _ = r.handle.ctl.send(RoomCtl::Mute { id: call, muted });
                }
            }
            RoomCommand::Leave { room, call } => {
                if let Some(r) = self.rooms.get(&room) {
                    if r.view.lock().unwrap().participants.remove(&call).is_some() {
                        self.shared.metrics.participants.dec();
                    }
                    let _ = r.handle.ctl.send(RoomCtl::Leave { id: call });
                }
            }
            RoomCommand::Close { room } => {
                if let Some(r) = self.rooms.remove(&room) {
                    let _ = r.handle.ctl.send(RoomCtl::Close);
                    let name = r.view.lock().unwrap().name.clone();
                    self.shared.rooms.lock().unwrap().remove(&name);
                    self.shared.metrics.rooms.dec();
                }
            }
        }
    }

    /// A WHIP request from the HTTP API.
    fn whip(&mut self, req: WhipRequest) {
        let now = self.now();
        self.next_whip += 1;
        let request = self.next_whip;
        match req {
            WhipRequest::Offer {
                room,
                sdp,
                name,
                reply,
            } => {
                self.whip_waiting.insert(request, reply);
                self.core
                    .handle_whip_offer(request, &room, &sdp, name.as_deref(), now);
            }
            WhipRequest::Delete { room, id, reply } => {
                self.whip_waiting.insert(request, reply);
                self.core.handle_whip_delete(request, &room, id, now);
            }
        }
    }

    /// An operator's request from the HTTP API.
    fn admin(&mut self, req: AdminRequest) {
        let now = self.now();
        self.next_admin += 1;
        let request = self.next_admin;
        self.admin_waiting.insert(request, req.reply);
        self.core.handle_admin(request, req.cmd, now);
    }

    /// The WebRTC port (0: not served).
    fn core_webrtc_port(&self) -> u16 {
        self.webrtc_port
    }

    /// Show a call or a WebRTC participant in its room's API view.
    fn add_view(&mut self, room: u64, call: u64) {
        if let Some(p) = self.core.peers().get(&call) {
            let params = control::peer::peer_stream_params(&p.offer);
            let view = ParticipantView {
                id: call,
                kind: "webrtc".into(),
                sip_uri: p.name.clone(),
                remote_media: p
                    .selected
                    .unwrap_or_else(|| SocketAddr::new(self.cfg.media_ip, 0)),
                codec: "OPUS".into(),
                local_rtp_port: self.core_webrtc_port(),
                direction: direction_name(&params),
                muted: p.muted,
                // Bundled on its transport: our WebRTC port, the nominated pair.
                video: p
                    .video
                    .filter(|_| p.video_ssrc_out.is_some())
                    .map(|v| VideoView {
                        local_rtp_port: self.core_webrtc_port(),
                        payload_type: v.params.payload_type,
                        direction: direction_of(v.params.send, v.params.recv),
                        remote_media: p
                            .selected
                            .unwrap_or_else(|| SocketAddr::new(self.cfg.media_ip, 0)),
                        ssrc_out: p.video_ssrc_out,
                        ..video_view_empty()
                    }),
                stats: mixer::ParticipantStats {
                    ssrc_out: p.ssrc_out.unwrap_or_default(),
                    ..Default::default()
                },
            };
            return self.insert_view(room, view);
        }
        let Some(rec) = self.core.call(call) else {
            return;
        };
        let Some(neg) = &rec.neg else { return };
        let view = ParticipantView {
            id: call,
            kind: "sip".into(),
            sip_uri: rec.from_uri.clone(),
            remote_media: neg.remote_rtp,
            codec: format!("{:?}", neg.codec).to_uppercase(),
            local_rtp_port: rec.port,
            direction: format!("{:?}", neg.direction).to_lowercase(),
            muted: rec.muted,
            video: control::member_video(rec).as_ref().map(video_view),
            stats: mixer::ParticipantStats {
                ssrc_out: rec.ssrc_out.unwrap_or_default(),
                ..Default::default()
            },
        };
        self.insert_view(room, view);
    }

    fn insert_view(&self, room: u64, view: ParticipantView) {
        let Some(r) = self.rooms.get(&room) else {
            return;
        };
        let fresh = r
            .view
            .lock()
            .unwrap()
            .participants
            .insert(view.id, view)
            .is_none();
        if fresh {
            self.shared.metrics.participants.inc();
        }
    }

    fn on_room_event(&mut self, ev: RoomEvent) {
        let joined = match &ev {
            RoomEvent::Joined { room, call, .. } => Some((*room, *call)),
            _ => None,
        };
        let now = self.now();
        self.core.handle_room_event(ev, now);
        if let Some((room, call)) = joined {
            if self.core.call(call).is_some() || self.core.peers().contains_key(&call) {
                self.add_view(room, call);
            }
        }
    }

    fn on_sync(&mut self, ev: SyncEvent<Entry>) {
        use ft_sync::{Event, LogEntry};
        let now = self.now();
        match ev {
            SyncEvent::Committed { seq } => self.core.handle_committed(seq, now),
            SyncEvent::Node(Event::SnapshotNeeded) => self.core.handle_backup_connected(now),
            SyncEvent::Node(Event::Apply(LogEntry::Snapshot { index, items })) => {
                tracing::info!(index, "standby: the primary's full state follows");
                for (i, e) in items.into_iter().enumerate() {
                    self.core.handle_replicated(e, i == 0);
                }
            }
            SyncEvent::Node(Event::Apply(LogEntry::Item { item, .. })) => {
                self.core.handle_replicated(item, false)
            }
            SyncEvent::Node(Event::RoleChanged(ft_sync::Role::TakingOver)) => self.takeover(),
            SyncEvent::Node(Event::RoleChanged(role)) => {
                tracing::info!(?role, "sync link: role")
            }
            SyncEvent::Node(Event::PeerAlive { node, role }) => {
                tracing::info!(node, ?role, "sync link: peer alive");
                if role == ft_sync::Role::Backup && self.core.role() == Role::Primary {
                    if let Some(hs) = self.hs.as_mut() {
                        hs.net.protect();
                    }
                }
            }
            SyncEvent::Node(Event::PeerDead) => {
                let (silence, stretch) = self.hs.as_ref().map_or((0.0, 0.0), |hs| {
                    let s = hs.link.status();
                    (
                        s.silence_max.as_secs_f64() * 1e3,
                        s.dead_after_stretch.as_secs_f64() * 1e3,
                    )
                });
                tracing::warn!(
                    recent_max_silence_ms = silence,
                    dead_after_stretch_ms = stretch,
                    "sync link: peer dead"
                )
            }
            SyncEvent::Node(Event::PeerRejected(e)) => {
                tracing::error!("sync link: peer rejected: {e}")
            }
            SyncEvent::Node(Event::HandoverAborted) => {
                if self.switching.take().is_some() {
                    tracing::error!("planned switchover aborted (the backup did not take over): serving on");
                    self.shared.fence_tick.set(u64::MAX);
                    let now = self.now();
                    self.core.handle_switchover_aborted(now);
                }
            }
            SyncEvent::Node(Event::Fatal(ft_sync::Error::HandedOver)) => {
                // The backup serves from the handover tick: keep sending until then.
                let k = self.switching.unwrap_or(0);
                let at = self.origin + mixer::TICK * k as u32 + HANDOVER_MARGIN;
                tracing::warn!(handover_tick = k, "hot standby: the backup took over (planned switchover)");
                self.leave_at = Some(at.max(Instant::now()));
            }
            SyncEvent::Node(Event::Fatal(e)) => {
                // Taken over while alive (a stall, a healed split), or the lower-priority
                // of two serving primaries: the other node owns the clients; this one stops
                // sending (the sync thread fenced the rooms already) and rejoins as its backup.
                self.rejoin = matches!(e, ft_sync::Error::TakenOver)
                    || (matches!(e, ft_sync::Error::TwoPrimaries)
                        && self.core.role() != Role::Backup);
                tracing::error!(rejoin = self.rejoin, "hot standby: {e}");
                self.fatal = Some(format!("hot standby: {e}"));
            }
            SyncEvent::Node(Event::SyncLost) => tracing::warn!(
                "sync link: silent, but the primary's beacons arrive over the clients' path: a partition, not a dead primary; no takeover (this backup's state is stale until the link heals)"
            ),
            SyncEvent::Node(Event::Committed(_)) => {}
        }
    }

    /// `POST /api/failover`: hand over to the backup at a tick boundary (see
    /// [`control::Core::handle_switchover`]): this node's rooms send the ticks before it,
    /// the backup's rooms start there, every stream continues with its next packet.
    fn switchover(&mut self, reply: SwitchoverRequest) {
        let refuse = |reply: SwitchoverRequest, why: &str| {
            tracing::warn!("planned switchover refused: {why}");
            let _ = reply.send(Err(why.to_string()));
        };
        if self.hs.is_none() {
            return refuse(reply, "no hot standby configured");
        }
        if self.switching.is_some() {
            return refuse(reply, "a switchover is already under way");
        }
        if self.protected != Some(true) {
            return refuse(
                reply,
                "no synced backup stands by (the pair is not protected)",
            );
        }
        // The handover tick: far enough ahead for the backup to have its rooms running
        // (a sync round trip, the takeover, the rooms' start), near enough to be soon.
        let now = self.now();
        let k = (now + HANDOVER_LEAD).as_micros() / mixer::TICK.as_micros() + 1;
        let k = k as u64;
        self.shared.fence_tick.set(k);
        if let Err(e) = self.core.handle_switchover(k, now) {
            self.shared.fence_tick.set(u64::MAX);
            return refuse(reply, &e.to_string());
        }
        self.switching = Some(k);
        // The step carrying the handover tick goes first, then the handover.
        self.act();
        if let Some(hs) = &self.hs {
            hs.link.send(SyncCommand::HandOver);
        }
        let at = self.origin + mixer::TICK * k as u32;
        let at_unix_ms = crate::state::unix_ms()
            + at.saturating_duration_since(Instant::now()).as_millis() as u64;
        let _ = reply.send(Ok(SwitchoverView {
            from_tick: k,
            at_unix_ms,
        }));
    }

    /// The primary is dead (or handed over): claim the service address, take its clock,
    /// serve its calls.
    fn takeover(&mut self) {
        self.prewarm.want(usize::MAX);
        let Some(hs) = self.hs.as_mut() else { return };
        self.planned_takeover = self.core.handover_tick().is_some();
        if self.planned_takeover {
            tracing::warn!("sync link: the primary hands over (planned switchover), taking over");
        } else {
            tracing::warn!("sync link: primary dead, taking over");
        }
        self.takeover_started = Some((Instant::now(), crate::state::unix_ms()));
        match self.core.handover_tick() {
            Some(k) if self.planned_takeover => {
                let origin = hot_standby::unix_ns_to_instant(self.core.origin_unix_ns());
                let at = origin + mixer::TICK * k as u32;
                hs.net.claim_at(at.checked_sub(CLAIM_LEAD).unwrap_or(at));
            }
            _ => hs.net.claim(),
        }
        // Every SIP timer and the rooms' tick grid are on the primary's time line.
        self.origin = hot_standby::unix_ns_to_instant(self.core.origin_unix_ns());
        let now = self.now();
        self.core.handle_takeover(now);
        self.act();
        if let Some(hs) = self.hs.as_mut() {
            hs.link.send(SyncCommand::CompleteTakeover);
            hs.net.finish_takeover();
        }
    }

    fn publish_status(&mut self) {
        let Some(hs) = &self.hs else { return };
        let link = hs.link.status();
        // Protected: a synced standby stands behind the serving node (seen from either).
        let protected = link.peer == ft_sync::PeerState::Alive
            && self.core.synced()
            && matches!(link.role, ft_sync::Role::Primary | ft_sync::Role::Backup);
        if self.protected != Some(protected) {
            let role = hot_standby::role_name(link.role);
            let peer = hot_standby::peer_name(link.peer);
            if protected {
                tracing::info!(
                    role,
                    peer,
                    "hot standby: the pair is protected (a synced standby stands by)"
                );
            } else if self.protected.is_some() {
                tracing::warn!(
                    role,
                    peer,
                    "hot standby: the pair is UNPROTECTED (no synced standby)"
                );
            }
            self.protected = Some(protected);
        }
        let m = &self.shared.metrics;
        m.ft_protected.set(i64::from(protected));
        m.ft_peer_state.set(match link.peer {
            ft_sync::PeerState::Unknown => 0,
            ft_sync::PeerState::Alive => 1,
            ft_sync::PeerState::Dead => 2,
            ft_sync::PeerState::SyncLost => 3,
        });
        let mut st = self.shared.status.lock().unwrap();
        st.protected = protected;
        st.beacons = link.beacons;
        st.beacons_refused = link.beacons_refused;
        m.ft_peer_silence_max.set(link.silence_max.as_secs_f64());
        m.ft_dead_after_stretch
            .set(link.dead_after_stretch.as_secs_f64());
        st.role = hot_standby::role_name(link.role).into();
        st.peer = hot_standby::peer_name(link.peer).into();
        st.sync_dropped = link.dropped;
        self.shared.metrics.ft_dropped.inc_by(
            link.dropped
                .saturating_sub(self.shared.metrics.ft_dropped.get()),
        );
        st.synced = self.core.synced();
        st.mirrored_packets = hs.net.mirrored_packets();
        let r = &mut st.replication;
        if self.core.role() == Role::Backup {
            // Every G.711 call needs one resampler each way at the takeover (a few spare for
            // calls replicated meanwhile).
            let g711 = self
                .core
                .calls()
                .values()
                .filter(|c| {
                    c.neg.as_ref().is_some_and(|n| {
                        matches!(
                            control::stream_params(n).codec,
                            mixer::Codec::Pcmu | mixer::Codec::Pcma
                        )
                    })
                })
                .count();
            self.prewarm.want(g711 + PREWARM_SPARE);
            r.committed = link.applied;
            r.next = link.applied + 1;
            r.unacked = 0;
            r.held_messages = 0;
            r.lag_ms = 0.0;
        } else {
            let (last, committed) = self.core.replication();
            let (held, since) = self.core.held();
            r.committed = committed;
            r.next = last + 1;
            r.unacked = last.saturating_sub(committed);
            r.held_messages = held as u64;
            r.lag_ms = since.map_or(0.0, |t| self.now().saturating_sub(t).as_secs_f64() * 1e3);
        }
        m.ft_replication_lag.set(r.unacked as i64);
    }
}

/// A call's video as the admin API shows it (before its room learned a source).
fn video_view(v: &MemberVideo) -> VideoView {
    VideoView {
        local_rtp_port: v.media.port,
        payload_type: v.params.payload_type,
        direction: direction_of(v.params.send, v.params.recv),
        remote_media: v.media.remote_rtp,
        ..video_view_empty()
    }
}

/// A video view before the room's first figures.
fn video_view_empty() -> VideoView {
    VideoView {
        local_rtp_port: 0,
        payload_type: 0,
        direction: String::new(),
        remote_media: SocketAddr::from(([0, 0, 0, 0], 0)),
        showing: None,
        ssrc_out: None,
        ssrc_in: None,
        packets_in: 0,
        packets_out: 0,
        keyframe_requests: 0,
        keyframe_requests_suppressed: 0,
        switches: 0,
        nack_answered: 0,
        nack_missed: 0,
    }
}

fn direction_name(p: &mixer::StreamParams) -> String {
    direction_of(p.send, p.recv)
}

/// The client's SDP direction, from what we send it and what we receive.
fn direction_of(send: bool, recv: bool) -> String {
    match (send, recv) {
        (true, true) => "sendrecv",
        (false, true) => "sendonly",
        (true, false) => "recvonly",
        (false, false) => "inactive",
    }
    .into()
}

/// Bind an RTP/RTCP port pair, non-blocking.
fn bind_pair(
    ip: std::net::IpAddr,
    port: u16,
) -> std::io::Result<(std::net::UdpSocket, std::net::UdpSocket)> {
    let rtp = std::net::UdpSocket::bind((ip, port))?;
    let rtcp = std::net::UdpSocket::bind((ip, port + 1))?;
    rtp.set_nonblocking(true)?;
    rtcp.set_nonblocking(true)?;
    Ok((rtp, rtcp))
}
