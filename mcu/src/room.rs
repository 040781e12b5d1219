//! Media plane: one tokio task per room drives a [`mixer::Mixer`].
//!
//! The task owns the mixer and the participants' RTP/RTCP sockets. Socket reader tasks forward
//! packets (stamped with their arrival instant) into the room's queue; a 20 ms interval ticks
//! the mixer; every output is sent with a non-blocking `try_send_to` to the address the
//! client's media actually comes from (symmetric RTP), or the SDP address until then.

use crate::metrics::Metrics;
use crate::state::{ApiEvent, RoomView};
use mixer::{Mixer, MixerConfig, MixerSnapshot, Output, ParticipantId, StreamParams};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// How many packets may wait in a room's queue before new ones are dropped and counted.
pub const ROOM_QUEUE: usize = 16 * 1024;
/// A latched RTP source must be silent this long before another source may take over.
pub const RELATCH_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Sockets and addresses of one participant's media.
pub struct MediaEndpoint {
    /// Our RTP socket.
    pub rtp: Arc<UdpSocket>,
    /// Our RTCP socket (RTP port + 1).
    pub rtcp: Arc<UdpSocket>,
    /// Where the client asked for RTP in its SDP.
    pub remote_rtp: SocketAddr,
    /// Where the client asked for RTCP.
    pub remote_rtcp: SocketAddr,
    /// RTCP multiplexed on the RTP port (RFC 5761).
    pub rtcp_mux: bool,
}

/// A participant's output SSRC, and the room's snapshot including it when the room ships
/// snapshots (the control plane replicates it before answering the call).
pub type AddReply = (u32, Option<Box<MixerSnapshot>>);

/// Commands and packets for a room task.
pub enum RoomMsg {
    /// Add a participant; replies with its output SSRC.
    Add {
        /// Participant id.
        id: ParticipantId,
        /// Negotiated stream.
        params: StreamParams,
        /// Its sockets.
        media: MediaEndpoint,
        /// Reply.
        /// (output SSRC, the room's snapshot with it when replicating) or the error.
        reply: oneshot::Sender<Result<AddReply, mixer::Error>>,
    },
    /// New negotiated parameters (re-INVITE), keeping the output stream.
    Update {
        /// Participant id.
        id: ParticipantId,
        /// Negotiated stream.
        params: StreamParams,
        /// New SDP addresses.
        remote_rtp: SocketAddr,
        /// New SDP RTCP address.
        remote_rtcp: SocketAddr,
    },
    /// Remove a participant (sends RTCP BYE).
    Remove {
        /// Participant id.
        id: ParticipantId,
    },
    /// A packet arrived on a participant's socket.
    Packet {
        /// Participant id.
        id: ParticipantId,
        /// Arrived on the RTCP socket.
        rtcp_port: bool,
        /// Source address.
        from: SocketAddr,
        /// Bytes.
        data: Vec<u8>,
        /// Arrival instant.
        at: Instant,
    },
    /// Stop the room (all participants are gone).
    Close,
}

struct Member {
    media: MediaEndpoint,
    rtp_dest: SocketAddr,
    rtcp_dest: SocketAddr,
    latched_rtp: bool,
    last_rtp: Instant,
    readers: [Option<JoinHandle<()>>; 2],
}

impl Drop for Member {
    fn drop(&mut self) {
        for r in self.readers.iter_mut().flatten() {
            r.abort();
        }
    }
}

/// How a room task starts.
pub enum RoomInit {
    /// A new room.
    New(MixerConfig),
    /// A promoted standby continues the primary's room: its mixer snapshot and the members'
    /// sockets (pre-bound on the service address) with the sources the mirrored input showed.
    Resume {
        /// The primary's latest snapshot of this room.
        snapshot: Box<MixerSnapshot>,
        /// Members to attach.
        members: Vec<ResumedMember>,
    },
}

/// A member of a resumed room.
pub struct ResumedMember {
    /// Participant id.
    pub id: ParticipantId,
    /// Its sockets and SDP addresses.
    pub media: MediaEndpoint,
    /// Latched RTP source seen in the mirrored input, if any.
    pub latched_rtp: Option<SocketAddr>,
    /// RTCP source seen in the mirrored input, if any.
    pub latched_rtcp: Option<SocketAddr>,
}

/// A room's mixer snapshot, sent to the control plane whenever its state version changes
/// (the hot-standby primary replicates it).
pub struct RoomSnapshot {
    /// Room id (replication key).
    pub room: u64,
    /// The snapshot.
    pub snapshot: MixerSnapshot,
}

/// Where a room ships its snapshots.
#[derive(Clone)]
pub struct SnapshotSink {
    /// Room id.
    pub room: u64,
    /// Channel to the control plane.
    pub tx: mpsc::UnboundedSender<RoomSnapshot>,
}

/// Handle to a running room task.
#[derive(Clone)]
pub struct RoomHandle {
    /// Queue into the room task.
    pub tx: mpsc::Sender<RoomMsg>,
}

/// True if the first byte says RTCP under RFC 5761 demultiplexing (payload type 192..=223
/// with the marker bit folded in: second byte 192..=223).
fn looks_like_rtcp(data: &[u8]) -> bool {
    data.len() >= 2 && data[0] >> 6 == 2 && (192..=223).contains(&data[1])
}

/// Spawn a room task.
pub fn spawn_room(ctx: RoomCtx, init: RoomInit) -> RoomHandle {
    let (tx, rx) = mpsc::channel(ROOM_QUEUE);
    let handle = RoomHandle { tx: tx.clone() };
    tokio::spawn(run_room(ctx, init, tx, rx));
    handle
}

/// What a room task shares with the rest of the server.
pub struct RoomCtx {
    /// Room name.
    pub name: String,
    /// The server's time origin (tick k at origin + k * 20 ms).
    pub origin: Instant,
    /// The API's view of the room.
    pub view: Arc<Mutex<RoomView>>,
    /// Metrics.
    pub metrics: Metrics,
    /// API events.
    pub events: Arc<Mutex<std::collections::VecDeque<ApiEvent>>>,
    /// Hot standby: where snapshots go.
    pub snapshots: Option<SnapshotSink>,
    /// Hot standby: stop sending media at once when set.
    pub fenced: Arc<std::sync::atomic::AtomicBool>,
}

/// Ship the mixer's snapshot if its state version moved since the last one shipped.
fn ship(mixer: &Mixer, shipped: &mut Option<u64>, sink: &Option<SnapshotSink>) {
    let Some(sink) = sink else { return };
    let v = mixer.state_version();
    if *shipped != Some(v) {
        *shipped = Some(v);
        let _ = sink.tx.send(RoomSnapshot {
            room: sink.room,
            snapshot: mixer.export_state(),
        });
    }
}

/// Reader tasks for a member's RTP socket and, without rtcp-mux, its RTCP socket.
fn spawn_readers(
    media: &MediaEndpoint,
    id: ParticipantId,
    tx: &mpsc::Sender<RoomMsg>,
    metrics: &Metrics,
) -> [Option<JoinHandle<()>>; 2] {
    [
        Some(spawn_reader(
            media.rtp.clone(),
            id,
            false,
            tx.clone(),
            metrics.clone(),
        )),
        (!media.rtcp_mux)
            .then(|| spawn_reader(media.rtcp.clone(), id, true, tx.clone(), metrics.clone())),
    ]
}

fn spawn_reader(
    sock: Arc<UdpSocket>,
    id: ParticipantId,
    rtcp_port: bool,
    tx: mpsc::Sender<RoomMsg>,
    metrics: Metrics,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        loop {
            let (n, from) = match sock.recv_from(&mut buf).await {
                Ok(v) => v,
                // ICMP port unreachable surfaces as an error on some platforms: keep reading.
                Err(_) => continue,
            };
            let msg = RoomMsg::Packet {
                id,
                rtcp_port,
                from,
                data: buf[..n].to_vec(),
                at: Instant::now(),
            };
            match tx.try_send(msg) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    metrics.media_overflow.inc();
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            };
        }
    })
}

async fn run_room(
    ctx: RoomCtx,
    init: RoomInit,
    tx: mpsc::Sender<RoomMsg>,
    mut rx: mpsc::Receiver<RoomMsg>,
) {
    let RoomCtx {
        name,
        origin,
        view,
        metrics,
        events,
        snapshots,
        fenced,
    } = ctx;
    let mut members: HashMap<ParticipantId, Member> = HashMap::new();
    // Ticks are aligned on the server-wide origin so every room's tick k is at origin + k*20ms
    // (a promoted standby uses the primary's origin: the same k falls on the same instant).
    let since = origin.elapsed();
    let next_k = since.as_micros() / mixer::TICK.as_micros() + 1;
    let mut first = origin + mixer::TICK * next_k as u32;
    let mut mixer = match init {
        RoomInit::New(config) => Mixer::new(config),
        RoomInit::Resume {
            snapshot,
            members: resumed,
        } => {
            // A promoted standby runs the current tick at once (late by less than a tick,
            // inside the gap the failure already made) rather than waiting for the next
            // boundary; unless the primary already ran it.
            let k = (next_k as u64 - 1).max(snapshot.last_tick.map_or(0, |t| t + 1));
            first = origin + mixer::TICK * k as u32;
            let mut m = match Mixer::from_snapshot(
                &snapshot,
                first.saturating_duration_since(origin),
            ) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(room = %name, "cannot resume the room from its snapshot: {e}");
                    Mixer::new(snapshot.config.clone())
                }
            };
            for r in resumed {
                let id = r.id;
                if m.output_stream(id).is_none() {
                    tracing::warn!(room = %name, id, "participant missing from the snapshot: skipped");
                    continue;
                }
                let readers = spawn_readers(&r.media, id, &tx, &metrics);
                let rtp_dest = r.latched_rtp.unwrap_or(r.media.remote_rtp);
                let rtcp_dest = match (r.media.rtcp_mux, r.latched_rtcp, r.latched_rtp) {
                    (true, _, _) => rtp_dest,
                    (false, Some(a), _) => a,
                    (false, None, Some(a)) => SocketAddr::new(a.ip(), a.port().wrapping_add(1)),
                    (false, None, None) => r.media.remote_rtcp,
                };
                members.insert(
                    id,
                    Member {
                        rtp_dest,
                        rtcp_dest,
                        latched_rtp: r.latched_rtp.is_some(),
                        last_rtp: Instant::now(),
                        media: r.media,
                        readers,
                    },
                );
            }
            // Participants the snapshot holds but nobody attached (their call is gone).
            let ids: Vec<_> = m.participant_ids();
            for id in ids {
                if !members.contains_key(&id) {
                    let _ = m.remove_participant(id, origin.elapsed());
                }
            }
            while m.poll_output().is_some() {}
            m
        }
    };
    let mut shipped = None;
    let mut ticker = tokio::time::interval_at(first.into(), mixer::TICK);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut ticks: u64 = 0;
    tracing::info!(room = %name, "room opened");
    loop {
        tokio::select! {
            // Ticks first: output timing matters more than draining the queue.
            biased;
            at = ticker.tick() => {
                let started = Instant::now();
                let at: Instant = at.into();
                if started.saturating_duration_since(at) > mixer::TICK {
                    metrics.ticks_late.inc();
                }
                mixer.handle_tick(at.saturating_duration_since(origin));
                drain(&mut mixer, &mut members, &metrics, &events, &name, &fenced);
                metrics.tick_seconds.observe(started.elapsed().as_secs_f64());
                ticks += 1;
                if ticks.is_multiple_of(5) {
                    publish(&mixer, &members, &view);
                }
                ship(&mixer, &mut shipped, &snapshots);
            }
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                match msg {
                    RoomMsg::Packet { id, rtcp_port, from, data, at } => {
                        let now = at.saturating_duration_since(origin);
                        let Some(m) = members.get_mut(&id) else { continue };
                        let is_rtcp = rtcp_port || looks_like_rtcp(&data);
                        if data.len() < 8 || data[0] >> 6 != 2 {
                            metrics.media_dropped.inc();
                            continue;
                        }
                        if is_rtcp {
                            metrics.rtcp_in.inc();
                            m.rtcp_dest = from;
                            mixer.handle_rtcp(id, &data, now);
                        } else {
                            metrics.rtp_in.inc();
                            // Symmetric RTP: answer where the client's media comes from. Latch
                            // the first source; move only when the latched one has been silent
                            // for RELATCH_AFTER (a NAT rebinding), so a stray sender cannot
                            // steal the stream (RTP bleed).
                            if !m.latched_rtp || (from != m.rtp_dest && at.saturating_duration_since(m.last_rtp) > RELATCH_AFTER) {
                                if !m.media.rtcp_mux && (!m.latched_rtp || m.rtcp_dest.ip() != from.ip()) {
                                    m.rtcp_dest = SocketAddr::new(from.ip(), from.port().wrapping_add(1));
                                }
                                m.latched_rtp = true;
                                m.rtp_dest = from;
                            }
                            if from == m.rtp_dest {
                                m.last_rtp = at;
                            }
                            mixer.handle_rtp(id, &data, now);
                        }
                    }
                    RoomMsg::Add { id, params, media, reply } => {
                        let now = origin.elapsed();
                        let res = mixer.add_participant(id, params, now);
                        if res.is_ok() {
                            let readers = spawn_readers(&media, id, &tx, &metrics);
                            let rtcp_dest = if media.rtcp_mux { media.remote_rtp } else { media.remote_rtcp };
                            members.insert(id, Member { rtp_dest: media.remote_rtp, rtcp_dest, latched_rtp: false, last_rtp: Instant::now(), media, readers });
                        }
                        // The control plane replicates this snapshot before the 200 OK leaves.
                        let snap = match (&res, &snapshots) {
                            (Ok(_), Some(_)) => {
                                shipped = Some(mixer.state_version());
                                Some(Box::new(mixer.export_state()))
                            }
                            _ => None,
                        };
                        let _ = reply.send(res.map(|ssrc| (ssrc, snap)));
                    }
                    RoomMsg::Update { id, params, remote_rtp, remote_rtcp } => {
                        let now = origin.elapsed();
                        if let Some(m) = members.get_mut(&id) {
                            if !m.latched_rtp {
                                m.rtp_dest = remote_rtp;
                                m.rtcp_dest = if m.media.rtcp_mux { remote_rtp } else { remote_rtcp };
                            }
                            if let Err(e) = mixer.update_participant(id, params, now) {
                                tracing::warn!(room = %name, id, "update failed: {e}");
                            }
                        }
                    }
                    RoomMsg::Remove { id } => {
                        let now = origin.elapsed();
                        let _ = mixer.remove_participant(id, now);
                        drain(&mut mixer, &mut members, &metrics, &events, &name, &fenced);
                        members.remove(&id);
                        view.lock().unwrap().participants.remove(&id);
                        ship(&mixer, &mut shipped, &snapshots);
                        continue;
                    }
                    RoomMsg::Close => break,
                }
                drain(&mut mixer, &mut members, &metrics, &events, &name, &fenced);
                ship(&mixer, &mut shipped, &snapshots);
            }
        }
    }
    tracing::info!(room = %name, "room closed");
}

fn publish(mixer: &Mixer, members: &HashMap<ParticipantId, Member>, view: &Mutex<RoomView>) {
    let mut v = view.lock().unwrap();
    v.active_speaker = mixer.active_speaker();
    for (id, m) in members {
        if let Some(p) = v.participants.get_mut(id) {
            if let Some(s) = mixer.stats(*id) {
                p.stats = s;
            }
            p.remote_media = m.rtp_dest;
        }
    }
}

fn drain(
    mixer: &mut Mixer,
    members: &mut HashMap<ParticipantId, Member>,
    metrics: &Metrics,
    events: &Mutex<std::collections::VecDeque<ApiEvent>>,
    room: &str,
    fenced: &std::sync::atomic::AtomicBool,
) {
    // A primary taken over while it stalled must not send what the new primary sends.
    let fenced = fenced.load(std::sync::atomic::Ordering::SeqCst);
    while let Some(out) = mixer.poll_output() {
        match out {
            Output::Rtp { .. } | Output::Rtcp { .. } if fenced => {}
            Output::Rtp { to, packet } => {
                if let Some(m) = members.get(&to) {
                    if m.rtp_dest.ip().is_unspecified() || m.rtp_dest.port() == 0 {
                        continue;
                    }
                    if m.media.rtp.try_send_to(&packet, m.rtp_dest).is_ok() {
                        metrics.rtp_out.inc();
                    }
                }
            }
            Output::Rtcp { to, packet } => {
                if let Some(m) = members.get(&to) {
                    if m.rtcp_dest.ip().is_unspecified() || m.rtcp_dest.port() == 0 {
                        continue;
                    }
                    let sock = if m.media.rtcp_mux {
                        &m.media.rtp
                    } else {
                        &m.media.rtcp
                    };
                    if sock.try_send_to(&packet, m.rtcp_dest).is_ok() {
                        metrics.rtcp_out.inc();
                    }
                }
            }
            Output::Event(ev) => {
                tracing::info!(room, event = ?ev, "media event");
                let mut q = events.lock().unwrap();
                if q.len() >= 1000 {
                    q.pop_front();
                }
                q.push_back(ApiEvent {
                    room: room.to_string(),
                    at_unix_ms: unix_ms(),
                    event: ev,
                });
            }
        }
    }
}

/// Wall-clock milliseconds for API events (the driver may read clocks; the mixer may not).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
