//! The control plane: a tokio driver around [`sip_core::Core`] that turns calls into room
//! participants, plus the listeners (SIP UDP/TCP, HTTP) and graceful shutdown.
//!
//! Task layout: one SIP task owns the SIP core, the room registry and the RTP port allocator
//! (so room creation/closing is never racy); one task per TCP connection reads bytes into the
//! SIP task's queue and writes what it is given; one task per room mixes (see [`crate::room`]).

use crate::config::{Config, FtConfig, FtRole};
use crate::ft::{self, CallRecord, ControlState, NetGuard, Standby};
use crate::room::{
    spawn_room, MediaEndpoint, ResumedMember, RoomHandle, RoomInit, RoomMsg, RoomSnapshot,
    SnapshotSink,
};
use crate::state::{ApiEvent, ParticipantView, RoomView, Shared, TakeoverView};
use anyhow::{Context, Result};
use ft_sync::{LogEntry, Role, StateItem};
use mixer::{Codec, MixerConfig, StreamParams};
use sip_core::sdp::{self, CodecName, Direction, LocalMedia, Negotiated, SdpError};
use sip_core::{CallHandle, ConnId, Core, EndReason, Event, Transport};
use std::collections::BTreeSet;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
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
    /// Latest negotiated media.
    neg: Option<Negotiated>,
}

struct RoomEntry {
    /// Replication id.
    id: u64,
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
    core_config: sip_core::Config,
    /// `origin` as wall-clock time (replicated: the backup's tick grid and SIP timers).
    origin_unix_ns: u64,
    /// SIP messages produced by the core, sent (or held) at the end of [`Control::process`].
    outbox: Vec<sip_core::Transmit>,
    next_room_id: u64,
    /// Hot standby, when configured.
    ft: Option<Ft>,
    /// A fatal hot-standby error: the server stops with it.
    fatal: Option<String>,
    /// Shutting down: calls confirmed from now on are hung up at once.
    stopping: bool,
}

/// The hot-standby side of the control plane.
struct Ft {
    /// The sync node and its driver thread (the node's clock is its own; the tick grid
    /// uses `Control::origin`).
    link: ft::SyncLink,
    net: NetGuard,
    /// SIP messages waiting for the backup's acknowledgement: (log index, message, since).
    held: VecDeque<(u64, sip_core::Transmit, Instant)>,
    /// What the backup was last sent: the header and each call's item, encoded.
    sent_header: Vec<u8>,
    sent_calls: HashMap<u64, Vec<u8>>,
    /// Latest log index written.
    last_index: u64,
    /// Highest index acknowledged (or released unprotected).
    committed: u64,
    /// Latest encoded snapshot per room, with its state version.
    room_snaps: HashMap<u64, (u64, Vec<u8>)>,
    /// Index of the last full snapshot sent to the backup.
    snapshot_index: Option<u64>,
    synced: bool,
    standby: Standby,
    snap_tx: mpsc::UnboundedSender<RoomSnapshot>,
    /// Events read during the startup handshake, handled first by the main loop.
    pending: VecDeque<ft_sync::Event>,
}

impl Ft {
    fn now(&self) -> Duration {
        self.link.now()
    }
}

/// A hot-standby node after its startup handshake (primary: no other primary answered;
/// backup: at once), with its network plumbing in place. Bind the listeners next.
pub struct FtStart {
    link: ft::SyncLink,
    net: NetGuard,
    pending: VecDeque<ft_sync::Event>,
}

/// Start the sync link and, once the role is settled, take the network plumbing the role
/// needs (see [`crate::ft`]). Fails with a clear error on a second primary, a key or
/// protocol-version mismatch, or missing privileges.
pub async fn ft_start(cfg: &FtConfig) -> Result<FtStart> {
    let mut incarnation = [0u8; 8];
    getrandom::fill(&mut incarnation).map_err(|e| anyhow::anyhow!("OS random source: {e}"))?;
    let role = match cfg.role {
        FtRole::Primary => Role::Primary,
        FtRole::Backup => Role::Backup,
    };
    // The node id names this node on the link: derived from its sync address (distinct per
    // node), so that two nodes configured with one role are told apart and refused as such.
    let node_id = cfg
        .listen
        .to_string()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        }) as ft_sync::NodeId;
    let mut config = ft_sync::Config::new(
        node_id,
        role,
        cfg.key.clone(),
        u64::from_le_bytes(incarnation),
    );
    config.heartbeat_interval = cfg.heartbeat;
    config.missed_heartbeats = cfg.dead_after;
    let origin = Instant::now();
    let link = ft::SyncLink::start(cfg, ft_sync::Node::new(config, Duration::ZERO), origin)?;
    let mut pending = VecDeque::new();
    if cfg.role == FtRole::Primary {
        tracing::info!(listen = %cfg.listen, peer = %cfg.peer, realtime = link.realtime, "sync link: probing for another primary");
        'probe: loop {
            link.flush();
            while let Some(ev) = link.next_event() {
                match ev {
                    ft_sync::Event::RoleChanged(Role::Primary) => break 'probe,
                    ft_sync::Event::Fatal(e) => anyhow::bail!("hot standby: {e}"),
                    other => pending.push_back(other),
                }
            }
            link.wake.notified().await;
        }
    }
    // Taking the plumbing runs iptables (tens of ms); the sync thread keeps heartbeating.
    let net = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || match cfg.role {
            FtRole::Primary => NetGuard::primary(&cfg),
            FtRole::Backup => NetGuard::backup(&cfg),
        })
        .await
        .context("network setup task")??
    };
    Ok(FtStart { link, net, pending })
}

/// Send one SIP message now.
fn send_sip(
    udp: &UdpSocket,
    tcp_writers: &HashMap<ConnId, mpsc::UnboundedSender<Vec<u8>>>,
    t: sip_core::Transmit,
) {
    match t.transport {
        Transport::Udp => {
            if let Err(e) = udp.try_send_to(&t.data, t.to) {
                tracing::debug!("SIP send to {} failed: {e}", t.to);
            }
        }
        Transport::Tcp(conn) => {
            if let Some(w) = tcp_writers.get(&conn) {
                let _ = w.send(t.data);
            }
        }
    }
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
            self.outbox.push(t);
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
        self.commit_and_send();
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
                    neg: None,
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
                            st.neg = Some(n.clone());
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
                                st.neg = Some(n.clone());
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
                if self.stopping {
                    // Shutting down: a call whose ACK arrived after the BYE round gets its BYE now
                    // (a UAS may not send BYE before the ACK of its 200).
                    let now = self.now();
                    let _ = self.core.hangup(call, now);
                }
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
        let (ssrc, snapshot) = rx.await.context("room task gone")??;
        let room_id = entry.id;
        if let Some(snapshot) = snapshot {
            // Replicated before the 200 OK that lets the client expect this stream.
            self.on_room_snapshot(RoomSnapshot {
                room: room_id,
                snapshot: *snapshot,
            });
        }
        let entry = self.rooms.get_mut(&st.room).expect("room entry above");
        let mut view = participant_view(call, st, neg);
        view.stats.ssrc_out = ssrc;
        entry.view.lock().unwrap().participants.insert(call.0, view);
        entry.members += 1;
        self.shared.metrics.participants.inc();
        st.joined = true;
        st.neg = Some(neg.clone());
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
            let id = entry.id;
            self.rooms.remove(&st.room);
            self.on_room_closed(id);
            self.shared.rooms.lock().unwrap().remove(&st.room);
            self.shared.metrics.rooms.dec();
        }
    }

    fn new_mixer_config(&mut self) -> MixerConfig {
        MixerConfig {
            top_n: self.cfg.top_n,
            seed: self.seed ^ splitmix(&mut self.rng),
            ntp_origin: ntp_of_unix_ns(self.origin_unix_ns),
            ..MixerConfig::default()
        }
    }

    fn room_entry(&mut self, room: &str) -> &mut RoomEntry {
        if !self.rooms.contains_key(room) {
            let id = self.next_room_id;
            self.next_room_id += 1;
            let config = self.new_mixer_config();
            self.open_room(room, id, RoomInit::New(config), RoomView::default());
        }
        self.rooms.get_mut(room).expect("inserted above")
    }

    /// Spawn a room task and register it.
    fn open_room(&mut self, room: &str, id: u64, init: RoomInit, view: RoomView) {
        let view = Arc::new(Mutex::new(RoomView {
            name: room.to_string(),
            ..view
        }));
        let members = view.lock().unwrap().participants.len();
        let sink = self.ft.as_ref().map(|f| SnapshotSink {
            room: id,
            tx: f.snap_tx.clone(),
        });
        let handle = spawn_room(
            crate::room::RoomCtx {
                name: room.to_string(),
                origin: self.origin,
                view: view.clone(),
                metrics: self.shared.metrics.clone(),
                events: self.shared.events.clone(),
                snapshots: sink,
                fenced: self.shared.fenced.clone(),
            },
            init,
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
                id,
                handle,
                view,
                members,
            },
        );
    }
}

/// Hot standby: replication, output commit, standby and takeover.
impl Control {
    fn serving_primary(&self) -> bool {
        self.ft
            .as_ref()
            .is_some_and(|f| f.link.node().role() == Role::Primary)
    }

    /// The control plane's replicated state.
    fn control_state(&self) -> ControlState {
        ControlState {
            origin_unix_ns: self.origin_unix_ns,
            seed: self.seed,
            rng: self.rng,
            next_port: self.ports.next,
            next_room_id: self.next_room_id,
            rooms: self
                .rooms
                .iter()
                .map(|(name, r)| (name.clone(), r.id))
                .collect(),
            calls: self
                .calls
                .iter()
                .map(|(c, st)| CallRecord {
                    call: c.0,
                    room: st.room.clone(),
                    from_uri: st.from_uri.clone(),
                    port: st.port,
                    local: st.local.clone(),
                    joined: st.joined,
                    awaiting_answer: st.awaiting_answer,
                    confirmed: st.confirmed,
                    neg: st.neg.clone(),
                })
                .collect(),
            sip: self.core.state().clone(),
        }
    }

    /// Send the SIP messages of this step, holding them until the backup acknowledged the
    /// state they imply (output commit).
    fn commit_and_send(&mut self) {
        let out = std::mem::take(&mut self.outbox);
        if !self.serving_primary() {
            for t in out {
                send_sip(&self.udp, &self.tcp_writers, t);
            }
            return;
        }
        let (header, calls) = self.control_state().split();
        let ft = self.ft.as_mut().expect("serving_primary");
        let mut items = Vec::new();
        let h = header.encode();
        if h != ft.sent_header {
            items.push(StateItem::App {
                kind: ft::APP_HEADER,
                data: h.clone(),
            });
            ft.sent_header = h;
        }
        for (c, it) in &calls {
            let b = it.encode();
            if ft.sent_calls.get(c) != Some(&b) {
                items.push(StateItem::App {
                    kind: ft::APP_CALL,
                    data: b.clone(),
                });
                ft.sent_calls.insert(*c, b);
            }
        }
        let gone: BTreeSet<u64> = ft
            .sent_calls
            .keys()
            .filter(|c| !calls.contains_key(c))
            .copied()
            .collect();
        for c in gone {
            ft.sent_calls.remove(&c);
            items.push(StateItem::App {
                kind: ft::APP_CALL_GONE,
                data: c.to_le_bytes().to_vec(),
            });
        }
        let now = ft.now();
        for item in items {
            match ft.link.node().replicate(item, now) {
                Ok(i) => {
                    ft.last_index = i;
                    self.shared.metrics.ft_replicated.inc();
                }
                // Still probing for another primary: unprotected (the full state follows
                // when a backup connects).
                Err(_) => {
                    ft.last_index = ft.committed;
                    break;
                }
            }
        }
        let now = Instant::now();
        for t in out {
            if ft.held.is_empty() && ft.committed >= ft.last_index {
                send_sip(&self.udp, &self.tcp_writers, t);
            } else {
                ft.held.push_back((ft.last_index, t, now));
            }
        }
        self.ft_pump();
    }

    /// A room's snapshot moved: replicate it (no holding: media are not held).
    fn on_room_snapshot(&mut self, s: RoomSnapshot) {
        let serving = self.serving_primary();
        let Some(ft) = self.ft.as_mut() else { return };
        if !self.rooms.values().any(|r| r.id == s.room) {
            return; // closed meanwhile
        }
        let version = s.snapshot.state_version;
        if ft
            .room_snaps
            .get(&s.room)
            .is_some_and(|(v, _)| *v >= version)
        {
            return; // an older one overtaken by the one the Add reply carried
        }
        let data = ft::encode_snapshot(&s.snapshot);
        ft.room_snaps.insert(s.room, (version, data.clone()));
        if serving {
            let now = ft.now();
            if let Ok(i) = ft.link.node().replicate(
                StateItem::MixerRoom {
                    room: s.room,
                    snapshot: data,
                },
                now,
            ) {
                ft.last_index = i;
                self.shared.metrics.ft_replicated.inc();
            }
        }
    }

    fn on_room_closed(&mut self, room: u64) {
        let serving = self.serving_primary();
        let Some(ft) = self.ft.as_mut() else { return };
        ft.room_snaps.remove(&room);
        if serving {
            let now = ft.now();
            if let Ok(i) = ft
                .link
                .node()
                .replicate(StateItem::RoomClosed { room }, now)
            {
                ft.last_index = i;
            }
        }
    }

    /// Drive the sync node's outputs: datagrams, events, held messages, status.
    fn ft_pump(&mut self) {
        let mut takeover = false;
        let mut send_full = false;
        let Some(ft) = self.ft.as_mut() else { return };
        loop {
            ft.link.flush();
            let ev = match ft.pending.pop_front() {
                Some(e) => e,
                None => match ft.link.next_event() {
                    Some(e) => e,
                    None => break,
                },
            };
            match ev {
                ft_sync::Event::Committed(i) => {
                    ft.committed = ft.committed.max(i);
                    if ft.snapshot_index.is_some_and(|s| i >= s)
                        && ft.link.node().peer_state() == ft_sync::PeerState::Alive
                    {
                        if !ft.synced {
                            tracing::info!(index = i, "sync link: backup holds the full state");
                        }
                        ft.synced = true;
                    }
                }
                ft_sync::Event::SnapshotNeeded => send_full = true,
                ft_sync::Event::PeerAlive { node, role } => {
                    tracing::info!(node, ?role, "sync link: peer alive");
                }
                ft_sync::Event::PeerDead => {
                    ft.synced = false;
                    tracing::warn!("sync link: peer dead");
                }
                ft_sync::Event::RoleChanged(Role::TakingOver) => takeover = true,
                ft_sync::Event::RoleChanged(role) => tracing::info!(?role, "sync link: role"),
                ft_sync::Event::Fatal(e) => {
                    tracing::error!("hot standby: {e}");
                    self.fatal = Some(format!("hot standby: {e}"));
                }
                ft_sync::Event::PeerRejected(e) => {
                    tracing::error!("sync link: peer rejected: {e}");
                }
                ft_sync::Event::Apply(entry) => {
                    let ip = self.cfg.media_ip;
                    match entry {
                        LogEntry::Snapshot { index, items } => {
                            ft.standby.reset();
                            for it in items {
                                ft.standby.apply(it, ip);
                            }
                            ft.synced = ft.standby.header.is_some();
                            tracing::info!(index, "standby: the primary's full state follows");
                        }
                        LogEntry::Item { item, .. } => ft.standby.apply(item, ip),
                    }
                }
            }
        }
        // Release what the backup acknowledged (or everything when unprotected).
        while ft.held.front().is_some_and(|(i, _, _)| *i <= ft.committed) {
            let (_, t, since) = ft.held.pop_front().expect("front checked");
            self.shared
                .metrics
                .sip_commit_wait
                .observe(since.elapsed().as_secs_f64());
            send_sip(&self.udp, &self.tcp_writers, t);
        }
        {
            let mut st = self.shared.status.lock().unwrap();
            let node = ft.link.node();
            ft::status_from_node(&mut st, &node);
            st.synced = ft.synced;
            st.mirrored_packets = ft.net.mirrored_packets();
            if node.role() == Role::Backup {
                st.replication.committed = node.applied();
                st.replication.next = node.applied() + 1;
                st.replication.unacked = 0;
                st.replication.held_messages = 0;
                st.replication.lag_ms = 0.0;
            } else {
                st.replication.committed = ft.committed;
                st.replication.next = ft.last_index + 1;
                st.replication.unacked = ft.last_index.saturating_sub(ft.committed);
                st.replication.held_messages = ft.held.len() as u64;
                st.replication.lag_ms = ft
                    .held
                    .front()
                    .map_or(0.0, |(_, _, since)| since.elapsed().as_secs_f64() * 1e3);
            }
        }
        let dropped = ft.link.node().stats().dropped();
        let m = &self.shared.metrics.ft_dropped;
        if dropped > m.get() {
            m.inc_by(dropped - m.get());
        }
        if send_full && self.serving_primary() {
            self.send_full_state();
            self.ft_pump();
        }
        if takeover {
            self.takeover();
            self.ft_pump();
        }
    }

    /// A backup (re)connected: a snapshot entry with the header resets it, then every call
    /// and room follows as its own entry (no datagram grows with the number of calls).
    fn send_full_state(&mut self) {
        let (header, calls) = self.control_state().split();
        let Some(ft) = self.ft.as_mut() else { return };
        let now = ft.now();
        let h = header.encode();
        let first = match ft.link.node().replicate_snapshot(
            vec![StateItem::App {
                kind: ft::APP_HEADER,
                data: h.clone(),
            }],
            now,
        ) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!("sync link: snapshot: {e}");
                return;
            }
        };
        ft.sent_header = h;
        ft.sent_calls.clear();
        let mut last = first;
        let mut items: Vec<StateItem> = Vec::new();
        for (c, it) in &calls {
            let b = it.encode();
            ft.sent_calls.insert(*c, b.clone());
            items.push(StateItem::App {
                kind: ft::APP_CALL,
                data: b,
            });
        }
        for (room, (_, data)) in &ft.room_snaps {
            items.push(StateItem::MixerRoom {
                room: *room,
                snapshot: data.clone(),
            });
        }
        let n = items.len() + 1;
        for item in items {
            match ft.link.node().replicate(item, now) {
                Ok(i) => last = i,
                Err(e) => {
                    tracing::warn!("sync link: snapshot item: {e}");
                    break;
                }
            }
        }
        ft.last_index = last;
        ft.snapshot_index = Some(last);
        ft.synced = false;
        tracing::info!(
            first,
            last,
            items = n,
            calls = calls.len(),
            "sync link: sending the full state to the backup"
        );
    }

    /// The primary is dead: become it (see [`crate::ft`] for the order of the steps).
    fn takeover(&mut self) {
        let started = Instant::now();
        let at_unix_ms = crate::room::unix_ms();
        let Some(ft) = self.ft.as_mut() else { return };
        tracing::warn!("sync link: primary dead, taking over");
        ft.net.claim();
        let control = ft.standby.control();
        let mut snaps = std::mem::take(&mut ft.standby.rooms);
        let mut sockets = std::mem::take(&mut ft.standby.sockets);
        ft.standby.reset();
        // Where each client's media came from, per our port, as the mirror showed.
        let mut seen: HashMap<u16, SocketAddr> = HashMap::new();
        if let (Some(m), Some(cs)) = (&ft.net.mirror, &control) {
            for c in &cs.calls {
                for p in [c.port, c.port + 1] {
                    if let Some(a) = m.source(p, crate::room::RELATCH_AFTER) {
                        seen.insert(p, a);
                    }
                }
            }
        }
        let mut rooms_resumed = 0u64;
        let mut calls_taken = 0u64;
        if let Some(cs) = control {
            self.origin = ft::unix_ns_to_instant(cs.origin_unix_ns);
            self.origin_unix_ns = cs.origin_unix_ns;
            let local_addr = self.core_config.local_addr;
            self.core = Core::from_state(
                sip_core::Config {
                    local_addr,
                    seed: cs.seed,
                    ..self.core_config.clone()
                },
                cs.sip,
            );
            self.last_sip_stats = self.core.stats();
            self.seed = cs.seed;
            self.rng = cs.rng;
            self.ports.next = cs.next_port;
            self.next_room_id = cs.next_room_id;
            let room_ids: HashMap<String, u64> = cs.rooms.into_iter().collect();
            let mut by_room: BTreeMap<String, Vec<CallHandle>> = BTreeMap::new();
            for rec in cs.calls {
                let call = CallHandle(rec.call);
                self.ports.in_use.insert(rec.port);
                let sockets = if rec.joined {
                    by_room.entry(rec.room.clone()).or_default().push(call);
                    None
                } else {
                    sockets.remove(&rec.port)
                };
                self.calls.insert(
                    call,
                    CallState {
                        room: rec.room,
                        from_uri: rec.from_uri,
                        port: rec.port,
                        sockets,
                        local: rec.local,
                        joined: rec.joined,
                        awaiting_answer: rec.awaiting_answer,
                        confirmed: rec.confirmed,
                        neg: rec.neg,
                    },
                );
                calls_taken += 1;
            }
            for (room, calls) in by_room {
                let id = room_ids.get(&room).copied().unwrap_or_else(|| {
                    self.next_room_id += 1;
                    self.next_room_id - 1
                });
                let snapshot = snaps.remove(&id);
                let mut view = RoomView::default();
                let mut members = Vec::new();
                for call in calls {
                    let st = &self.calls[&call];
                    let Some(neg) = st.neg.clone() else { continue };
                    let Some((rtp, rtcp)) = sockets.remove(&st.port) else {
                        tracing::error!(call = call.0, port = st.port, "takeover: no media socket");
                        continue;
                    };
                    let (Ok(rtp), Ok(rtcp)) = (UdpSocket::from_std(rtp), UdpSocket::from_std(rtcp))
                    else {
                        continue;
                    };
                    let mut pv = participant_view(call, st, &neg);
                    if let Some(p) = snapshot
                        .as_ref()
                        .and_then(|s| s.participants.iter().find(|p| p.id == call.0))
                    {
                        pv.stats.ssrc_out = p.stream.ssrc;
                    }
                    view.participants.insert(call.0, pv);
                    self.shared.metrics.participants.inc();
                    members.push(ResumedMember {
                        id: call.0,
                        media: MediaEndpoint {
                            rtp: Arc::new(rtp),
                            rtcp: Arc::new(rtcp),
                            remote_rtp: neg.remote_rtp,
                            remote_rtcp: neg.remote_rtcp,
                            rtcp_mux: neg.rtcp_mux,
                        },
                        latched_rtp: seen.get(&st.port).copied(),
                        latched_rtcp: seen.get(&(st.port + 1)).copied(),
                    });
                }
                let init = match snapshot {
                    Some(snapshot) => RoomInit::Resume {
                        snapshot: Box::new(snapshot),
                        members,
                    },
                    None => {
                        // The primary died between admitting these calls and shipping the
                        // room: start it fresh (new SSRCs for them; nothing was sent yet).
                        tracing::warn!(%room, "takeover: no snapshot for the room, starting it fresh");
                        let config = self.new_mixer_config();
                        let init = RoomInit::New(config);
                        self.open_room(&room, id, init, RoomView::default());
                        let entry = self.rooms.get_mut(&room).expect("opened");
                        for m in members {
                            let (tx, _rx) = tokio::sync::oneshot::channel();
                            let neg = self.calls[&CallHandle(m.id)].neg.clone().expect("checked");
                            let _ = entry.handle.tx.try_send(RoomMsg::Add {
                                id: m.id,
                                params: stream_params(&neg),
                                media: m.media,
                                reply: tx,
                            });
                            entry.members += 1;
                            if let Some(pv) = view.participants.remove(&m.id) {
                                entry.view.lock().unwrap().participants.insert(m.id, pv);
                            }
                        }
                        rooms_resumed += 1;
                        continue;
                    }
                };
                self.open_room(&room, id, init, view);
                rooms_resumed += 1;
            }
        }
        let Some(ft) = self.ft.as_mut() else { return };
        let now = ft.now();
        if let Err(e) = ft.link.node().complete_takeover(now) {
            tracing::error!("takeover: {e}");
        }
        ft.committed = ft.link.node().applied();
        ft.last_index = ft.committed;
        ft.sent_header.clear();
        ft.sent_calls.clear();
        ft.net.finish_takeover();
        let duration = started.elapsed();
        self.shared.status.lock().unwrap().last_takeover = Some(TakeoverView {
            at_unix_ms,
            duration_ms: duration.as_secs_f64() * 1e3,
            calls: calls_taken,
            rooms: rooms_resumed,
        });
        tracing::warn!(
            calls = calls_taken,
            rooms = rooms_resumed,
            duration_ms = duration.as_secs_f64() * 1e3,
            "takeover complete: serving as primary"
        );
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

/// NTP timestamp (RFC 3550 64-bit) of the server's origin, given as wall-clock nanoseconds
/// since the Unix epoch (read once at start, or replicated from the primary).
fn ntp_of_unix_ns(origin_unix_ns: u64) -> u64 {
    const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
    let wall = Duration::from_nanos(origin_unix_ns);
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
    run_with_ft(cfg, listeners, None, shutdown).await
}

/// [`run`] as a hot-standby node ([`ft_start`] first, then bind the listeners).
pub async fn run_with_ft(
    cfg: Config,
    listeners: Listeners,
    ft_start: Option<FtStart>,
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
    let mut shared = Shared::default();
    if let Some(f) = &ft_start {
        shared.fenced = f.link.fenced.clone();
    }
    let origin = Instant::now();
    let udp = Arc::new(listeners.udp);
    let sip_local = udp.local_addr()?;
    let core_config = sip_core::Config {
        local_addr: sip_local,
        user_agent: format!("Understudy/{}", env!("CARGO_PKG_VERSION")),
        max_message_size: MAX_SIP_MESSAGE,
        seed,
    };
    let core = Core::new(core_config.clone());
    let (snap_tx, mut snap_rx) = mpsc::unbounded_channel::<RoomSnapshot>();
    let ft = ft_start.map(|f| Ft {
        link: f.link,
        net: f.net,
        held: VecDeque::new(),
        sent_header: Vec::new(),
        sent_calls: HashMap::new(),
        last_index: 0,
        committed: 0,
        room_snaps: HashMap::new(),
        snapshot_index: None,
        synced: false,
        standby: Standby::default(),
        snap_tx,
        pending: f.pending,
    });
    let ft_wake = ft.as_ref().map(|f| f.link.wake.clone());
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
        outbox: Vec::new(),
        next_room_id: 1,
        ft,
        fatal: None,
        stopping: false,
        core_config,
        origin_unix_ns: ft::origin_to_unix_ns(origin),
    };
    ctl.ft_pump();

    tokio::pin!(shutdown);
    let mut stopping: Option<Instant> = None;
    loop {
        let deadline = ctl.core.poll_timeout().map(|d| ctl.origin + d);
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
                ctl.stopping = true;
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
            _ = wake_opt(ft_wake.as_deref()) => {
                ctl.ft_pump();
                ctl.process().await;
            }
            Some(snap) = snap_rx.recv() => {
                ctl.on_room_snapshot(snap);
                ctl.ft_pump();
            }
        }
        if ctl.fatal.is_some() {
            break;
        }
        if let Some(t) = stopping {
            if ctl.calls.is_empty() || t.elapsed() > SHUTDOWN_GRACE {
                break;
            }
        }
    }
    if ctl.fatal.is_some() {
        tracing::warn!(
            calls = ctl.calls.len(),
            "stopping without BYE: the calls belong to the node that took over"
        );
    } else if !ctl.calls.is_empty() {
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
    if let Some(f) = ctl.fatal.take() {
        anyhow::bail!(f);
    }
    tracing::info!("stopped");
    Ok(())
}

async fn wake_opt(n: Option<&tokio::sync::Notify>) {
    match n {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}
