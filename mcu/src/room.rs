//! Media plane: one tokio task per room drives a [`mixer::Mixer`].
//!
//! The task owns the mixer and its participants' RTP/RTCP sockets. Commands from the
//! control plane arrive on their own channel, never behind media: a flood on one room's
//! ports fills only that room's packet queue (new packets are dropped and counted), and
//! neither that room's commands nor the SIP task ever wait for it. Replies (a participant
//! is in, with its output SSRC) and, on a hot-standby primary, mixer snapshots go back as
//! [`control::RoomEvent`]s. Socket reader tasks forward packets stamped with their arrival
//! instant; a 20 ms interval ticks the mixer; every output leaves with a non-blocking
//! `try_send_to` to where [`control::latch::Latch`] says the client's media come from.
//!
//! Every packet passes the participant's latch first: packets from another address than its
//! learned media source are dropped before the mixer and counted (`media_foreign_dropped`,
//! `rtcp_foreign_dropped`). What a latch learns goes to the control core
//! ([`RoomEvent::Latched`], replicated); a participant not on hold from which nothing was heard
//! for the media timeout is reported once ([`RoomEvent::MediaTimeout`]) and the core hangs up.
//!
//! A SIP participant's video has its own port pair and latch ([`video`]): its datagrams are
//! handed to [`video`]'s hooks, where the video forwarder plugs in (today they are counted
//! and dropped).

mod grid;
pub mod video;

pub use video::{VideoKind, VideoMember};

use crate::metrics::Metrics;
use crate::state::{ApiEvent, RoomView};
use control::latch::{Latch, Source};
use control::limit::LogThrottle;
use control::{RoomEvent, RoomInit, VideoLayout};
use mixer::{Mixer, Output, ParticipantId, StreamParams};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// How many packets may wait in a room's queue before new ones are dropped and counted.
pub const ROOM_QUEUE: usize = 16 * 1024;

/// How many datagrams from SIP members' video ports may wait in a room's video queue before
/// new ones are dropped and counted (`mcu_video_queue_overflow_total`): about 5 s of a room of
/// 5 cameras at 75 packets/s. The room reads it only when no audio packet, command or tick
/// waits, so an overloaded room drops video, never delays its audio behind it.
pub const VIDEO_QUEUE: usize = 2 * 1024;

/// Mixer events can happen per packet (a sender alternating SSRCs, a stream of DTMF ends):
/// each kind logs at most one line per participant (the room's own events: per room) per
/// this period, the line carrying how many went unlogged since; the counters in `/metrics`
/// see every one.
pub const EVENT_LOG_PERIOD: Duration = Duration::from_secs(10);

/// What the room remembers to log and count its mixer's events.
#[derive(Default)]
struct EventLog {
    /// Per (participant, or `None` for the room's own events; event kind).
    throttles: HashMap<(Option<ParticipantId>, u8), LogThrottle>,
    /// Participants whose media started (a later start is an SSRC change).
    media_seen: std::collections::HashSet<ParticipantId>,
}

impl EventLog {
    fn record(&mut self, ctx: &RoomCtx, ev: mixer::Event) {
        let (key, ssrc_change) = match &ev {
            mixer::Event::ActiveSpeakerChanged { .. } => ((None, 0), false),
            mixer::Event::Dtmf { participant, .. } => ((Some(*participant), 1), false),
            mixer::Event::MediaStarted { participant, .. } => (
                (Some(*participant), 2),
                !self.media_seen.insert(*participant),
            ),
        };
        if ssrc_change {
            ctx.metrics.media_ssrc_changes.inc();
        }
        let now = ctx.origin.elapsed();
        let throttle = self
            .throttles
            .entry(key)
            .or_insert_with(|| LogThrottle::new(EVENT_LOG_PERIOD));
        match throttle.event(now) {
            Some(unlogged) => {
                tracing::info!(room = %ctx.name.escape_debug(), event = ?ev, unlogged, "media event");
                crate::state::push_event(&ctx.events, &ctx.name, ev);
            }
            None => {
                ctx.metrics.media_events_unlogged.inc();
                // DTMF and speaker changes stay complete in the API; SSRC changes do not
                // push them out of its bounded queue.
                if !matches!(ev, mixer::Event::MediaStarted { .. }) {
                    crate::state::push_event(&ctx.events, &ctx.name, ev);
                }
            }
        }
    }

    fn forget(&mut self, id: ParticipantId) {
        self.media_seen.remove(&id);
        self.throttles.retain(|(p, _), _| *p != Some(id));
    }
}

/// Sockets and SDP addresses of one participant's media.
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

/// Commands for a room task (see [`control::RoomCommand`]).
pub enum RoomCtl {
    /// Add a participant; answered with [`RoomEvent::Joined`] or [`RoomEvent::JoinFailed`].
    Join {
        /// Participant id.
        id: ParticipantId,
        /// Negotiated stream.
        params: StreamParams,
        /// Its sockets.
        media: MediaEndpoint,
        /// Its video, if any ([`video`]).
        video: Option<VideoMember>,
    },
    /// Attach the sockets of a participant the resumed mixer already has (takeover), with
    /// the sources the mirrored input showed.
    Attach {
        /// Participant id.
        id: ParticipantId,
        /// Its sockets.
        media: MediaEndpoint,
        /// The source its room had learned on the primary (replicated).
        source: Option<Source>,
        /// Latest RTP source the mirrored input saw for its port (used only without `source`).
        mirrored: Option<SocketAddr>,
        /// On hold (exempt from the media timeout).
        held: bool,
        /// Its SDP says it sends RTP (not recvonly or inactive).
        sends: bool,
        /// Its video, if any.
        video: Option<VideoMember>,
        /// The video source its room had learned on the primary (replicated).
        video_source: Option<Source>,
        /// Latest RTP source the mirrored input saw for its video port (used only without
        /// `video_source`).
        video_mirrored: Option<SocketAddr>,
    },
    /// New negotiated parameters (re-INVITE), keeping the output stream.
    Update {
        /// Participant id.
        id: ParticipantId,
        /// Negotiated stream.
        params: StreamParams,
        /// New SDP RTP address.
        remote_rtp: SocketAddr,
        /// New SDP RTCP address.
        remote_rtcp: SocketAddr,
        /// Its video now (`None`: none, or removed).
        video: Option<VideoMember>,
    },
    /// The room's video layout changed.
    Layout {
        /// The layout now.
        layout: VideoLayout,
    },
    /// Add a WebRTC participant (media through the WebRTC task); answered like `Join`.
    JoinPeer {
        /// Participant id.
        id: ParticipantId,
        /// Its stream.
        params: StreamParams,
        /// Its video, bundled on the same transport, if any.
        video: Option<control::PeerVideo>,
    },
    /// Takeover: route a WebRTC participant of the resumed mixer through the WebRTC task,
    /// its outgoing SRTP stream continuing from the mixer's sequence numbers.
    AttachPeer {
        /// Participant id.
        id: ParticipantId,
        /// SRTCP index of its next report.
        srtcp_index: u32,
        /// Its video, if it had any (its output stream continues from the forwarder's
        /// snapshot).
        video: Option<control::PeerVideo>,
        /// SRTCP index of the next RTCP packet of its video stream.
        video_srtcp_index: u32,
        /// The video stream's SRTP packet index last replicated (its rollover counter).
        video_ext_seq: Option<u64>,
    },
    /// Mute or unmute a participant ([`mixer::Mixer::set_muted`]).
    Mute {
        /// Participant id.
        id: ParticipantId,
        /// The new state.
        muted: bool,
    },
    /// Remove a participant (its RTCP BYE goes out).
    Leave {
        /// Participant id.
        id: ParticipantId,
    },
    /// Takeover: every `Attach` / `AttachPeer` of the members a resumed room continues with
    /// was sent before this; the snapshot's participants still unattached are removed and the
    /// room starts ticking. Sent once to every room opened with [`RoomInit::Resume`].
    Resumed,
    /// Stop the room.
    Close,
}

struct Packet {
    id: ParticipantId,
    rtcp_port: bool,
    /// From the participant's video pair ([`video`]).
    video: bool,
    from: SocketAddr,
    data: Vec<u8>,
    at: Instant,
    /// Checked by the WebRTC transport already (ICE-validated address, SRTP authenticated).
    vetted: bool,
}

/// A room's media input, for the WebRTC task to deliver decrypted packets: a browser's
/// video RTP (its payload type) to the room's video queue, so that video an overloaded room
/// cannot keep up with is what it drops, not the audio; everything else to the audio queue.
#[derive(Clone)]
pub struct PacketSink {
    audio: mpsc::Sender<Packet>,
    /// The video queue and the participant's video payload type.
    video: Option<(mpsc::Sender<Packet>, u8)>,
}

impl PacketSink {
    /// Deliver a decrypted packet of participant `id`; false when the room's queue is full.
    pub fn deliver(
        &self,
        id: ParticipantId,
        from: SocketAddr,
        data: Vec<u8>,
        rtcp: bool,
        at: Instant,
    ) -> bool {
        let queue = match &self.video {
            Some((q, pt))
                if !rtcp && data.len() >= 2 && data[1] & 0x7f == *pt && data[0] >> 6 == 2 =>
            {
                q
            }
            _ => &self.audio,
        };
        queue
            .try_send(Packet {
                id,
                rtcp_port: rtcp,
                video: false,
                from,
                data,
                at,
                vetted: true,
            })
            .is_ok()
    }
}

/// How a participant's media travel.
// One per room member, never moved around in bulk: the size of the SIP variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Link {
    /// Its own RTP/RTCP sockets, behind its media source latch.
    Sip { media: MediaEndpoint, latch: Latch },
    /// Through the WebRTC task; `last_heard` for the media timeout; `demux` tells its
    /// bundled video from its audio when it has video.
    Peer {
        last_heard: Duration,
        demux: Option<webrtc_core::demux::Demux>,
        /// Its bundled video sends (a source of the room's video).
        video_source: bool,
    },
}

struct Member {
    link: Link,
    /// On hold (the client said sendonly or inactive): exempt from the media timeout.
    held: bool,
    /// The media timeout was reported.
    timed_out: bool,
    readers: [Option<JoinHandle<()>>; 2],
    /// Its video pair, if it has one (kept when a re-INVITE removes the video).
    video: Option<video::VideoLink>,
}

impl Member {
    /// It has video: its own pair (SIP) or bundled on its transport (WebRTC).
    fn has_video(&self) -> bool {
        self.video.is_some() || matches!(self.link, Link::Peer { demux: Some(_), .. })
    }

    /// Its video is a source of the room's video (it sends).
    fn is_video_source(&self) -> bool {
        self.video.as_ref().is_some_and(|v| v.is_source())
            || matches!(
                self.link,
                Link::Peer {
                    demux: Some(_),
                    video_source: true,
                    ..
                }
            )
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        for r in self.readers.iter_mut().flatten() {
            r.abort();
        }
    }
}

/// Handle to a running room task.
#[derive(Clone)]
pub struct RoomHandle {
    /// Commands (unbounded: a handful per call, never behind media).
    pub ctl: mpsc::UnboundedSender<RoomCtl>,
}

/// What a room task shares with the rest of the server.
pub struct RoomCtx {
    /// Room id.
    pub id: u64,
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
    /// Replies and snapshots to the control plane.
    pub replies: mpsc::UnboundedSender<RoomEvent>,
    /// Hot-standby primary: ship a snapshot whenever the mixer's state version moves.
    pub ship_snapshots: bool,
    /// Hot standby: stop sending media at once when set (this node was taken over).
    pub fenced: Arc<AtomicBool>,
    /// Planned switchover: send no tick from this one on (the backup sends it).
    pub fence_tick: crate::state::FenceTick,
    /// A room resumed at a planned switchover starts at this tick, not before (the old
    /// primary sent the ticks before it).
    pub start_tick: Option<u64>,
    /// Report participants silent this long (`None`: never).
    pub media_timeout: Option<Duration>,
    /// The WebRTC task (browser participants), if served.
    pub webrtc: Option<crate::webrtc::WebRtcHandle>,
    /// The room's video layout at its start ([`RoomCtl::Layout`] changes it).
    pub layout: VideoLayout,
}

/// Spawn a room task (`video`: a resumed room's video forwarder, continued from its
/// snapshot; `grid`: its grid compositor's, when the room was in grid layout).
pub fn spawn_room(
    ctx: RoomCtx,
    init: RoomInit,
    video: Option<Box<::video::SwitcherSnapshot>>,
    grid: Option<Box<::video::snapshot::GridSnapshot>>,
) -> RoomHandle {
    let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
    let (pkt_tx, pkt_rx) = mpsc::channel(ROOM_QUEUE);
    let (vid_tx, vid_rx) = mpsc::channel(VIDEO_QUEUE);
    tokio::spawn(run_room(
        ctx,
        init,
        (video, grid),
        ctl_rx,
        (pkt_tx, pkt_rx),
        (vid_tx, vid_rx),
    ));
    RoomHandle { ctl: ctl_tx }
}

fn spawn_readers(
    media: &MediaEndpoint,
    id: ParticipantId,
    tx: &mpsc::Sender<Packet>,
    metrics: &Metrics,
) -> [Option<JoinHandle<()>>; 2] {
    [
        Some(spawn_reader(
            media.rtp.clone(),
            id,
            false,
            false,
            tx.clone(),
            metrics.clone(),
        )),
        (!media.rtcp_mux).then(|| {
            spawn_reader(
                media.rtcp.clone(),
                id,
                true,
                false,
                tx.clone(),
                metrics.clone(),
            )
        }),
    ]
}

fn spawn_reader(
    sock: Arc<UdpSocket>,
    id: ParticipantId,
    rtcp_port: bool,
    video: bool,
    tx: mpsc::Sender<Packet>,
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
            let pkt = Packet {
                id,
                rtcp_port,
                video,
                from,
                data: buf[..n].to_vec(),
                at: Instant::now(),
                vetted: false,
            };
            match tx.try_send(pkt) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) if video => {
                    metrics.video_overflow.inc();
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    metrics.media_overflow.inc();
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    })
}

/// The room task's state.
struct Room {
    ctx: RoomCtx,
    mixer: Mixer,
    members: HashMap<ParticipantId, Member>,
    pkt_tx: mpsc::Sender<Packet>,
    /// SIP members' video datagrams (their own queue: read after everything else).
    vid_tx: mpsc::Sender<Packet>,
    shipped: Option<u64>,
    event_log: EventLog,
    /// The last tick run (tick k at origin + k x 20 ms).
    tick_k: u64,
    /// How the room shows video.
    layout: VideoLayout,
    /// The voice-switched video forwarder ([`video`]).
    switcher: ::video::Switcher,
    /// Its state version last shipped to the control core.
    video_shipped: Option<u64>,
    /// The audio speaker last passed to the forwarder.
    video_speaker: Option<ParticipantId>,
    /// The grid compositor's thread, while the room is in grid layout (or leaving it).
    grid: Option<grid::GridState>,
    /// Generation of the last grid thread started (its messages carry it).
    grid_generation: u64,
    /// The grid threads' output queue (read by the room task).
    grid_tx: mpsc::Sender<grid::FromGrid>,
    /// A takeover's grid snapshot, for the first grid thread.
    grid_resume: Option<::video::snapshot::GridSnapshot>,
    /// A resumed forwarder's first output, sent once the members are attached.
    video_held: Vec<::video::Output>,
}

impl Room {
    fn since_origin(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.ctx.origin)
    }

    /// Ship the mixer's snapshot if its state version moved since the last one shipped.
    fn ship(&mut self) {
        let v = self.mixer.state_version();
        if self.ctx.ship_snapshots && self.shipped != Some(v) {
            self.shipped = Some(v);
            let _ = self.ctx.replies.send(RoomEvent::Snapshot {
                room: self.ctx.id,
                snapshot: Box::new(self.mixer.export_state()),
            });
        }
        self.ship_video();
    }

    fn attach(
        &mut self,
        id: ParticipantId,
        media: MediaEndpoint,
        latch: Latch,
        held: bool,
        video: Option<video::VideoLink>,
    ) {
        let readers = spawn_readers(&media, id, &self.pkt_tx, &self.ctx.metrics);
        self.members.insert(
            id,
            Member {
                link: Link::Sip { media, latch },
                held,
                timed_out: false,
                readers,
                video,
            },
        );
        let now = self.since_origin(Instant::now());
        self.report(id, now);
        self.report_video(id, now);
    }

    /// A joining or attached member's video pair (`None` without video, or when the driver
    /// could not hand over its sockets).
    fn new_video(
        &mut self,
        id: ParticipantId,
        v: Option<&VideoMember>,
        resume: Option<(Option<Source>, Option<SocketAddr>)>,
        now: Duration,
    ) -> Option<video::VideoLink> {
        let v = v?;
        let Some(sockets) = v.sockets.clone() else {
            tracing::warn!(room = %self.ctx.name.escape_debug(), id, "video without its sockets: ignored");
            return None;
        };
        self.video_joined(id, &v.params, None, now);
        Some(self.video_link(id, v, sockets, resume, now))
    }

    /// A WebRTC participant: its media come through the WebRTC task (`demux`: it has video).
    fn attach_peer(
        &mut self,
        id: ParticipantId,
        held: bool,
        demux: Option<webrtc_core::demux::Demux>,
        video_source: bool,
        now: Duration,
    ) {
        if let Some(w) = &self.ctx.webrtc {
            let _ = w.ctl.send(crate::webrtc::WebRtcCtl::Route {
                id,
                sink: PacketSink {
                    audio: self.pkt_tx.clone(),
                    video: demux.as_ref().map(|d| (self.vid_tx.clone(), d.video_pt())),
                },
            });
        }
        self.members.insert(
            id,
            Member {
                link: Link::Peer {
                    last_heard: now,
                    demux,
                    video_source,
                },
                held,
                timed_out: false,
                readers: [None, None],
                video: None,
            },
        );
    }

    /// Tell the control core what the participant's latch learned, if that changed.
    fn report(&mut self, id: ParticipantId, now: Duration) {
        if let Some(source) = self.members.get_mut(&id).and_then(|m| match &mut m.link {
            Link::Sip { latch, .. } => latch.poll_report(now),
            Link::Peer { .. } => None,
        }) {
            let _ = self.ctx.replies.send(RoomEvent::Latched {
                room: self.ctx.id,
                call: id,
                source,
            });
        }
    }

    /// Latches whose probation ended, participants silent for the media timeout.
    fn check_members(&mut self, now: Duration) {
        let ids: Vec<ParticipantId> = self.members.keys().copied().collect();
        for id in ids {
            self.report(id, now);
            self.report_video(id, now);
            let Some(m) = self.members.get_mut(&id) else {
                continue;
            };
            // A node taken over hangs up nothing: the calls belong to the new primary.
            if self.ctx.fenced.load(Ordering::SeqCst) {
                continue;
            }
            if let Some(limit) = self.ctx.media_timeout {
                let mut silent = match &m.link {
                    Link::Sip { latch, .. } => latch.silent_for(now),
                    Link::Peer { last_heard, .. } => now.saturating_sub(*last_heard),
                };
                // Video heard counts as heard.
                if let Some(v) = &m.video {
                    silent = silent.min(v.latch.silent_for(now));
                }
                if !m.held && !m.timed_out && silent >= limit {
                    m.timed_out = true;
                    tracing::info!(room = %self.ctx.name.escape_debug(), id, "media timeout");
                    let _ = self.ctx.replies.send(RoomEvent::MediaTimeout {
                        room: self.ctx.id,
                        call: id,
                    });
                }
            }
        }
    }

    /// Answer a join: the participant's output SSRC with the room's snapshot including it
    /// (replicated before the participant is answered), or why the mixer refused it.
    fn join_reply(
        &mut self,
        id: ParticipantId,
        added: Result<u32, mixer::Error>,
        video_ssrc: Option<u32>,
    ) {
        let room = self.ctx.id;
        let ev = match added {
            Ok(ssrc) => {
                let snapshot = self.ctx.ship_snapshots.then(|| {
                    self.shipped = Some(self.mixer.state_version());
                    Box::new(self.mixer.export_state())
                });
                RoomEvent::Joined {
                    room,
                    call: id,
                    ssrc,
                    video_ssrc,
                    snapshot,
                }
            }
            Err(e) => RoomEvent::JoinFailed {
                room,
                call: id,
                reason: e.to_string(),
            },
        };
        let _ = self.ctx.replies.send(ev);
    }

    /// Returns false when the room must stop.
    fn command(&mut self, ctl: RoomCtl) -> bool {
        let now = self.since_origin(Instant::now());
        match ctl {
            RoomCtl::Join {
                id,
                params,
                media,
                video,
            } => {
                let (held, sends) = (!params.send, params.recv);
                let ev = match self.mixer.add_participant(id, params, now) {
                    Ok(ssrc) => {
                        let mut latch =
                            Latch::new(media.remote_rtp, media.remote_rtcp, media.rtcp_mux, now);
                        latch.set_client_sends(sends);
                        let video = self.new_video(id, video.as_ref(), None, now);
                        self.attach(id, media, latch, held, video);
                        Ok(ssrc)
                    }
                    Err(e) => Err(e),
                };
                self.join_reply(id, ev, None);
            }
            RoomCtl::Attach {
                id,
                media,
                source,
                mirrored,
                held,
                sends,
                video,
                video_source,
                video_mirrored,
            } => {
                if self.mixer.output_stream(id).is_none() {
                    tracing::warn!(room = %self.ctx.name.escape_debug(), id, "participant missing from the snapshot: skipped");
                    return true;
                }
                let mut latch = Latch::resumed(
                    media.remote_rtp,
                    media.remote_rtcp,
                    media.rtcp_mux,
                    source,
                    mirrored,
                    now,
                );
                latch.set_client_sends(sends);
                let resume = Some((video_source, video_mirrored));
                let video = self.new_video(id, video.as_ref(), resume, now);
                self.attach(id, media, latch, held, video);
            }
            RoomCtl::JoinPeer { id, params, video } => {
                let held = !params.send;
                let added = self.mixer.add_participant(id, params, now);
                let mut video_ssrc = None;
                if added.is_ok() {
                    let video_source = video.as_ref().is_some_and(|v| v.params.recv);
                    let demux = video.and_then(|v| {
                        self.video_joined(id, &v.params, v.source_ssrc, now);
                        let ssrc = self.switcher.output_ssrc(id)?;
                        video_ssrc = Some(ssrc);
                        Some(webrtc_core::demux::Demux::new(
                            v.params.payload_type,
                            v.source_ssrc,
                            ssrc,
                        ))
                    });
                    self.attach_peer(id, held, demux, video_source, now);
                }
                self.join_reply(id, added, video_ssrc);
            }
            RoomCtl::AttachPeer {
                id,
                srtcp_index,
                video,
                video_srtcp_index,
                video_ext_seq,
            } => {
                let Some(stream) = self.mixer.output_stream(id) else {
                    tracing::warn!(room = %self.ctx.name.escape_debug(), id, "WebRTC participant missing from the snapshot: skipped");
                    return true;
                };
                // The stream's next packet has extended sequence number seq_origin +
                // packets_sent (the SRTP index the primary would have used): continue there.
                let next = u64::from(stream.seq_origin) + stream.packets_sent;
                if let Some(w) = &self.ctx.webrtc {
                    let _ = w.ctl.send(crate::webrtc::WebRtcCtl::ResumeStream {
                        id,
                        ssrc: stream.ssrc,
                        last_ext_seq: next.saturating_sub(1),
                        srtcp_index,
                    });
                }
                let video_source = video.as_ref().is_some_and(|v| v.params.recv);
                let demux = video
                    .and_then(|v| self.resume_peer_video(id, &v, video_srtcp_index, video_ext_seq));
                self.attach_peer(id, false, demux, video_source, now);
            }
            RoomCtl::Update {
                id,
                params,
                remote_rtp,
                remote_rtcp,
                video,
            } => {
                if let Some(m) = self.members.get_mut(&id) {
                    if let Link::Sip { latch, .. } = &mut m.link {
                        latch.on_update(remote_rtp, remote_rtcp, now);
                        latch.set_client_sends(params.recv);
                    }
                    m.held = !params.send;
                    let had_video = m.video.is_some();
                    if let Some(link) = m.video.as_mut() {
                        link.update(video.as_ref(), now);
                    }
                    if let Err(e) = self.mixer.update_participant(id, params, now) {
                        tracing::warn!(room = %self.ctx.name.escape_debug(), id, "update failed: {e}");
                    }
                    if had_video {
                        self.video_updated(id, video.as_ref().map(|v| &v.params));
                    } else if let Some(link) = self.new_video(id, video.as_ref(), None, now) {
                        // The re-INVITE that added the video handed its pair over.
                        if let Some(m) = self.members.get_mut(&id) {
                            m.video = Some(link);
                        }
                    }
                    self.report(id, now);
                    self.report_video(id, now);
                }
            }
            RoomCtl::Layout { layout } => self.layout_changed(layout),
            RoomCtl::Mute { id, muted } => {
                if let Err(e) = self.mixer.set_muted(id, muted) {
                    tracing::warn!(room = %self.ctx.name.escape_debug(), id, "mute failed: {e}");
                }
            }
            RoomCtl::Leave { id } => {
                let _ = self.mixer.remove_participant(id, now);
                self.drain();
                if self.members.remove(&id).is_some_and(|m| m.has_video()) {
                    self.video_left(id, now);
                }
                self.event_log.forget(id);
            }
            // Only meaningful while a resumed room waits for its members (see `run_room`).
            RoomCtl::Resumed => {}
            RoomCtl::Close => return false,
        }
        self.drain();
        self.drain_video();
        self.ship();
        true
    }

    fn packet(&mut self, p: Packet) {
        let now = self.since_origin(p.at);
        let metrics = &self.ctx.metrics;
        if p.video {
            return self.video_packet(p, now);
        }
        let Some(m) = self.members.get_mut(&p.id) else {
            return;
        };
        if p.data.len() < 8 || p.data[0] >> 6 != 2 {
            metrics.media_dropped.inc();
            return;
        }
        if p.vetted {
            if let Link::Peer {
                last_heard, demux, ..
            } = &mut m.link
            {
                *last_heard = now;
                // Its bundled video goes to the forwarder (the transport vetted it).
                if let Some(d) = demux {
                    let rtcp = p.rtcp_port || control::latch::is_rtcp(&p.data);
                    let media = if rtcp {
                        d.rtcp(&p.data)
                    } else {
                        d.rtp(&p.data)
                    };
                    if media == webrtc_core::demux::Media::Video {
                        let kind = if rtcp {
                            VideoKind::Rtcp
                        } else {
                            VideoKind::Rtp
                        };
                        return self.video_input(p.id, kind, &p.data, now);
                    }
                }
            }
        }
        let latch = match &mut m.link {
            Link::Sip { latch, .. } if !p.vetted => Some(latch),
            Link::Sip { .. } => return,
            Link::Peer { .. } if p.vetted => None,
            Link::Peer { .. } => return,
        };
        if p.rtcp_port || control::latch::is_rtcp(&p.data) {
            if latch.is_some_and(|l| !l.on_rtcp(p.from, !p.rtcp_port, now)) {
                metrics.rtcp_foreign_dropped.inc();
                return;
            }
            metrics.rtcp_in.inc();
            self.mixer.handle_rtcp(p.id, &p.data, now);
        } else {
            if latch.is_some_and(|l| !l.on_rtp(p.from, now)) {
                metrics.media_foreign_dropped.inc();
                return;
            }
            metrics.rtp_in.inc();
            self.mixer.handle_rtp(p.id, &p.data, now);
        }
        self.report(p.id, now);
        self.drain();
        self.ship();
    }

    fn tick(&mut self, at: Instant) {
        let since = self.since_origin(at);
        self.tick_k = (since.as_micros() / mixer::TICK.as_micros()) as u64;
        self.mixer.handle_tick(since);
        self.drain();
        self.video_tick(since);
    }

    fn publish(&self) {
        let mut v = self.ctx.view.lock().unwrap();
        v.active_speaker = self.mixer.active_speaker();
        for (id, m) in &self.members {
            if let Some(p) = v.participants.get_mut(id) {
                if let Some(s) = self.mixer.stats(*id) {
                    p.stats = s;
                }
                if let Link::Sip { latch, .. } = &m.link {
                    p.remote_media = latch.rtp_addr();
                }
                if let Some(view) = p.video.as_mut().filter(|_| m.has_video()) {
                    if let Some(link) = m.video.as_ref() {
                        view.remote_media = link.latch.rtp_addr();
                    }
                    if let Some(s) = self.switcher.stats(*id) {
                        view.showing = s.showing;
                        view.ssrc_out = Some(s.ssrc_out);
                        view.ssrc_in = s.ssrc_in;
                        view.packets_in = s.packets_in;
                        view.packets_out = s.packets_out;
                        view.keyframe_requests = s.keyframe_requests_sent;
                        view.keyframe_requests_suppressed = s.keyframe_requests_suppressed;
                        view.switches = s.switches;
                        view.nack_answered = s.nack_answered;
                        view.nack_missed = s.nack_missed;
                    }
                }
            }
        }
        v.layout = self.layout_in_effect();
    }

    fn drain(&mut self) {
        // A primary taken over while it stalled must not send what the new primary sends.
        let fenced =
            self.ctx.fenced.load(Ordering::SeqCst) || self.ctx.fence_tick.covers(self.tick_k);
        let metrics = &self.ctx.metrics;
        while let Some(out) = self.mixer.poll_output() {
            match out {
                Output::Rtp { .. } | Output::Rtcp { .. } if fenced => {}
                Output::Rtp { to, packet } => {
                    let Some(m) = self.members.get(&to) else {
                        continue;
                    };
                    match &m.link {
                        Link::Sip { media, latch } => {
                            let Some(dest) = latch.rtp_dest() else {
                                continue;
                            };
                            if media.rtp.try_send_to(&packet, dest).is_ok() {
                                metrics.rtp_out.inc();
                            }
                        }
                        Link::Peer { .. } => {
                            let sent = self
                                .ctx
                                .webrtc
                                .as_ref()
                                .is_some_and(|w| w.send_media(to, false, packet));
                            if !sent {
                                metrics.media_overflow.inc();
                            }
                        }
                    }
                }
                Output::Rtcp { to, packet } => {
                    let Some(m) = self.members.get(&to) else {
                        continue;
                    };
                    match &m.link {
                        Link::Sip { media, latch } => {
                            let Some(dest) = latch.rtcp_dest() else {
                                continue;
                            };
                            let sock = if media.rtcp_mux {
                                &media.rtp
                            } else {
                                &media.rtcp
                            };
                            if sock.try_send_to(&packet, dest).is_ok() {
                                metrics.rtcp_out.inc();
                            }
                        }
                        Link::Peer { .. } => {
                            if let Some(w) = &self.ctx.webrtc {
                                let _ = w.send_media(to, true, packet);
                            }
                        }
                    }
                }
                Output::Event(ev) => self.event_log.record(&self.ctx, ev),
            }
        }
    }
}

async fn run_room(
    ctx: RoomCtx,
    init: RoomInit,
    (video_snapshot, grid_snapshot): (
        Option<Box<::video::SwitcherSnapshot>>,
        Option<Box<::video::snapshot::GridSnapshot>>,
    ),
    mut ctl_rx: mpsc::UnboundedReceiver<RoomCtl>,
    (pkt_tx, mut pkt_rx): (mpsc::Sender<Packet>, mpsc::Receiver<Packet>),
    (vid_tx, mut vid_rx): (mpsc::Sender<Packet>, mpsc::Receiver<Packet>),
) {
    let origin = ctx.origin;
    // Ticks are aligned on the server-wide origin so every room's tick k is at origin + k*20ms
    // (a promoted backup uses the primary's origin: the same k falls on the same instant).
    let next_k = origin.elapsed().as_micros() / mixer::TICK.as_micros() + 1;
    let mut first = origin + mixer::TICK * next_k as u32;
    let mixer_config = match &init {
        RoomInit::New(config) => config.clone(),
        RoomInit::Resume(snapshot) => snapshot.config.clone(),
    };
    let mixer = match init {
        RoomInit::New(config) => Mixer::new(config),
        RoomInit::Resume(snapshot) => {
            // A promoted backup runs the current tick at once (late by less than a tick,
            // inside the gap the failure already made) rather than waiting for the next
            // boundary; unless the primary already ran it.
            let k = (next_k as u64 - 1)
                .max(snapshot.last_tick.map_or(0, |t| t + 1))
                .max(ctx.start_tick.unwrap_or(0));
            first = origin + mixer::TICK * k as u32;
            match Mixer::from_snapshot(&snapshot, first.saturating_duration_since(origin)) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(room = %ctx.name.escape_debug(), "cannot resume the room from its snapshot: {e}");
                    Mixer::new(snapshot.config.clone())
                }
            }
        }
    };
    let resumed = mixer.participant_ids();
    let switcher = video::new_switcher(
        &ctx.name,
        &mixer_config,
        video_snapshot.as_deref(),
        first.saturating_duration_since(origin),
    );
    let (grid_tx, mut grid_rx) = mpsc::channel(grid::OUTPUT_QUEUE);
    // A resumed forwarder's first output (a keyframe request to every source) waits for
    // the members' Attach commands: sent before, the requests to members not attached yet
    // would be lost, and the rate limit would hold back the next ones.
    let mut switcher = switcher;
    let mut video_held = Vec::new();
    while let Some(o) = switcher.poll_output() {
        video_held.push(o);
    }
    let mut room = Room {
        video_held,
        grid: None,
        grid_generation: 0,
        grid_tx,
        grid_resume: grid_snapshot.map(|g| *g),
        layout: ctx.layout,
        video_shipped: Some(switcher.state_version()),
        video_speaker: switcher.speaker().0,
        switcher,
        shipped: Some(mixer.state_version()),
        ctx,
        mixer,
        members: HashMap::new(),
        pkt_tx,
        vid_tx,
        event_log: EventLog::default(),
        tick_k: 0,
    };
    // A resumed room: members are attached by the commands the server sends before
    // `Resumed`; participants of the snapshot nobody attached (their call is gone) are
    // removed once those are in.
    let mut attach_pending = !resumed.is_empty();
    let mut ticker = tokio::time::interval_at(first.into(), mixer::TICK);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut ticks: u64 = 0;
    tracing::info!(room = %room.ctx.name.escape_debug(), "room opened");
    loop {
        if attach_pending {
            // The members' Attach commands follow the Open, then `Resumed`. Wait for them: this
            // task may run before the server has sent them (another worker thread).
            loop {
                match ctl_rx.recv().await {
                    Some(RoomCtl::Resumed) => break,
                    Some(c) => {
                        if !room.command(c) {
                            return;
                        }
                    }
                    None => return,
                }
            }
            let now = room.since_origin(Instant::now());
            for id in &resumed {
                if !room.members.contains_key(id) {
                    let _ = room.mixer.remove_participant(*id, now);
                }
            }
            while room.mixer.poll_output().is_some() {}
            room.video_resumed(now);
            attach_pending = false;
        }
        tokio::select! {
            // Ticks first (output timing), then commands (never behind media), then media.
            biased;
            at = ticker.tick() => {
                let started = Instant::now();
                let at: Instant = at.into();
                if started.saturating_duration_since(at) > mixer::TICK {
                    room.ctx.metrics.ticks_late.inc();
                }
                room.tick(at);
                room.ctx.metrics.tick_seconds.observe(started.elapsed().as_secs_f64());
                ticks += 1;
                if ticks.is_multiple_of(5) {
                    room.publish();
                    room.check_members(room.since_origin(at));
                }
                room.ship();
            }
            c = ctl_rx.recv() => {
                let Some(c) = c else { break };
                if !room.command(c) {
                    break;
                }
            }
            Some(g) = grid_rx.recv() => room.grid_output(g),
            Some(p) = pkt_rx.recv() => room.packet(p),
            // Last: under overload video waits (and its queue drops), audio does not.
            Some(p) = vid_rx.recv() => room.packet(p),
        }
    }
    tracing::info!(room = %room.ctx.name.escape_debug(), "room closed");
}
