//! A room member's video, and **the place where the video forwarder plugs into the room
//! task** (issue 12).
//!
//! A SIP participant with video has a second RTP/RTCP port pair (the control core's
//! [`control::MemberVideo`]), read like its audio pair by two reader tasks into the room's
//! packet queue (`super::Packet::video`), behind its own media source latch
//! ([`control::latch::Latch`]: the same strict rule as audio; foreign packets are dropped and
//! counted in `mcu_media_foreign_dropped_total` / `mcu_rtcp_foreign_dropped_total`; what it
//! learns is reported as [`control::RoomEvent::VideoLatched`] and replicated, and a promoted
//! backup resumes it).
//!
//! A WebRTC participant's video is bundled on its one transport instead (no pair, no latch:
//! the WebRTC task already vetted the address and authenticated the packets): its member
//! link holds a [`webrtc_core::demux::Demux`] that sends its decrypted VP8 and video RTCP to
//! [`Room::video_input`] like a SIP member's, and what the forwarder sends it leaves through
//! the WebRTC task (`Room::send_video`), SRTP-protected on that transport. At a takeover
//! its output stream continues from the forwarder's snapshot and its SRTP context from the
//! replicated packet index (`Room::resume_peer_video`).
//!
//! # Layouts
//!
//! Voice-switched (the default): the forwarder (crate `video`'s `Switcher`) shows every
//! receiver the active speaker. Grid: the room runs a compositor thread
//! (`room/grid.rs`) that decodes every source, composes and encodes the grid once for all
//! viewers; its RTP enters the forwarder as the virtual source [`GRID_ID`], which every
//! receiver is pinned to (`Switcher::set_pinned`). The forwarder therefore still gives each
//! receiver its one SSRC, continuous sequence numbers, timestamps and picture IDs, switches
//! on a keyframe when the layout changes either way, answers NACKs and replicates its state;
//! its keyframe requests for the grid become `Compositor::request_keyframe`, the
//! compositor's requests for a source go out through `Switcher::request_keyframe_from`
//! (its rate limit, its FIR numbering). The grid's snapshot (tiles, speaker) is shipped
//! with the room's for a takeover: the promoted backup's compositor resumes from it, its
//! first frame a keyframe (the grid's new SSRC makes the forwarder re-sync its viewers at
//! that keyframe, past everything the primary sent).
//!
//! # Wiring the forwarder (crate `video`'s `Switcher`): every hook is a method below
//!
//! - **Membership**: `Room::video_joined` (a participant's video is in: its
//!   [`VideoParams`]: payload type, whether it sends (`recv`: a source) and receives (`send`:
//!   a receiver), the RTCP feedback it supports), `Room::video_updated` (re-INVITE: hold,
//!   resume, new addresses; `None`: video removed, the pair stays with the call),
//!   `Room::video_left` (the participant left). Called for `Join`, `Attach` (takeover: the
//!   switcher then comes from its snapshot instead), `Update` and `Leave`.
//! - **Input**: `Room::video_input`, once per datagram that passed the latch, with its
//!   kind (RTP, or RTCP: feedback from a receiver, reports from a source) and arrival time
//!   on the room's clock. Here: `switcher.handle_rtp` / `handle_rtcp`, then drain its output.
//! - **Speaker**: the audio mixer's `mixer::Event::ActiveSpeakerChanged` goes through the
//!   room's `drain` (`EventLog::record`): pass it on to `switcher.set_speaker` there.
//! - **Output**: `Room::send_video` sends one RTP or RTCP datagram to a member's video
//!   (its latch's destination, from our video socket; nothing while fenced).
//! - **Layout**: `Room::layout_changed` (`PUT /api/rooms/{room}` `{"layout": ...}`); the
//!   room starts with `super::RoomCtx::layout`.
//! - **Timers / snapshots**: the room ticks every 20 ms (`Room::tick`): poll the switcher's
//!   timeouts there; ship its snapshot with the mixer's (`Room::ship`) for the hot standby.

pub use super::grid::GRID_ID;
use super::grid::{FromGrid, FromGridBody, GridState, GridThread, ToGrid};
use super::{Packet, Room};
use control::latch::{Latch, Source};
use control::{RoomEvent, VideoLayout, VideoParams};
use mixer::ParticipantId;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// A participant's video as its room task gets it (`Join`, `Attach`, `Update`).
pub struct VideoMember {
    /// The negotiated stream.
    pub params: VideoParams,
    /// Where the client asked for video RTP in its SDP.
    pub remote_rtp: SocketAddr,
    /// Where it asked for video RTCP.
    pub remote_rtcp: SocketAddr,
    /// Video RTCP multiplexed on the video RTP port.
    pub rtcp_mux: bool,
    /// Our video RTP and RTCP sockets: given when the room does not hold them yet (a join,
    /// an attach, the re-INVITE that added the video); `None` when it does (an update).
    pub sockets: Option<(Arc<UdpSocket>, Arc<UdpSocket>)>,
}

/// What a video datagram is, as the room tells it apart (RFC 5761 on the RTP port, or its
/// arrival on the RTCP port).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoKind {
    /// VP8 RTP from a source.
    Rtp,
    /// RTCP: feedback (NACK, PLI, FIR, REMB) from a receiver, reports from a source.
    Rtcp,
}

/// A member's video pair in the room: sockets, readers, latch, stream.
pub(super) struct VideoLink {
    rtp: Arc<UdpSocket>,
    rtcp: Arc<UdpSocket>,
    rtcp_mux: bool,
    pub(super) latch: Latch,
    /// The stream now (`None`: removed by a re-INVITE; the pair stays the call's, its
    /// datagrams are dropped uncounted).
    params: Option<VideoParams>,
    readers: [JoinHandle<()>; 2],
}

impl VideoLink {
    /// The member's video changed (re-INVITE): new SDP addresses reopen its latch's
    /// probation, a new direction changes what it may send; `None`: video removed.
    /// It sends video we accept (a source of the forwarder and the grid).
    pub(super) fn is_source(&self) -> bool {
        self.params.is_some_and(|p| p.recv)
    }

    pub(super) fn update(&mut self, v: Option<&VideoMember>, now: Duration) {
        match v {
            Some(v) => {
                self.latch.on_update(v.remote_rtp, v.remote_rtcp, now);
                self.latch.set_client_sends(v.params.recv);
                self.rtcp_mux = v.rtcp_mux;
                self.params = Some(v.params);
            }
            None => self.params = None,
        }
    }
}

impl Drop for VideoLink {
    fn drop(&mut self) {
        for r in &self.readers {
            r.abort();
        }
    }
}

impl Room {
    /// A member's video pair, its readers started and its latch new (`resume`: a takeover's
    /// replicated source and the mirror's fallback).
    pub(super) fn video_link(
        &self,
        id: ParticipantId,
        v: &VideoMember,
        (rtp, rtcp): (Arc<UdpSocket>, Arc<UdpSocket>),
        resume: Option<(Option<Source>, Option<SocketAddr>)>,
        now: Duration,
    ) -> VideoLink {
        let mut latch = match resume {
            Some((learned, mirrored)) => Latch::resumed(
                v.remote_rtp,
                v.remote_rtcp,
                v.rtcp_mux,
                learned,
                mirrored,
                now,
            ),
            None => Latch::new(v.remote_rtp, v.remote_rtcp, v.rtcp_mux, now),
        };
        latch.set_client_sends(v.params.recv);
        let m = &self.ctx.metrics;
        // Both sockets are read whatever the mux: a re-INVITE may change it.
        let readers = [
            super::spawn_reader(rtp.clone(), id, false, true, self.vid_tx.clone(), m.clone()),
            super::spawn_reader(rtcp.clone(), id, true, true, self.vid_tx.clone(), m.clone()),
        ];
        VideoLink {
            rtp,
            rtcp,
            rtcp_mux: v.rtcp_mux,
            latch,
            params: Some(v.params),
            readers,
        }
    }

    /// A datagram from a member's video pair: through its latch, then to the forwarder's
    /// input ([`Room::video_input`]).
    pub(super) fn video_packet(&mut self, p: Packet, now: Duration) {
        let metrics = &self.ctx.metrics;
        let Some(link) = self.members.get_mut(&p.id).and_then(|m| m.video.as_mut()) else {
            return;
        };
        if link.params.is_none() {
            return; // video removed by a re-INVITE: nothing is expected here
        }
        if p.data.len() < 8 || p.data[0] >> 6 != 2 {
            metrics.media_dropped.inc();
            return;
        }
        let kind = if p.rtcp_port || control::latch::is_rtcp(&p.data) {
            if !link.latch.on_rtcp(p.from, !p.rtcp_port, now) {
                metrics.rtcp_foreign_dropped.inc();
                return;
            }
            VideoKind::Rtcp
        } else {
            if !link.latch.on_rtp(p.from, now) {
                metrics.media_foreign_dropped.inc();
                return;
            }
            VideoKind::Rtp
        };
        self.report_video(p.id, now);
        self.video_input(p.id, kind, &p.data, now);
    }

    /// Tell the control core what a member's video latch learned, if that changed.
    pub(super) fn report_video(&mut self, id: ParticipantId, now: Duration) {
        let learned = self
            .members
            .get_mut(&id)
            .and_then(|m| m.video.as_mut())
            .and_then(|v| v.latch.poll_report(now));
        if let Some(source) = learned {
            let _ = self.ctx.replies.send(RoomEvent::VideoLatched {
                room: self.ctx.id,
                call: id,
                source,
            });
        }
    }

    // ---- the forwarder ------------------------------------------------------------------

    /// One video datagram of member `id` that passed its media source rule, at `now` (the
    /// room's clock: since the server's origin), into the forwarder; its output goes out.
    pub(super) fn video_input(
        &mut self,
        id: ParticipantId,
        kind: VideoKind,
        data: &[u8],
        now: Duration,
    ) {
        match kind {
            VideoKind::Rtp => {
                self.ctx.metrics.video_rtp_in.inc();
                self.switcher.handle_rtp(id, data, now);
                if let Some(g) = self.grid.as_mut() {
                    if g.sources.contains(&id) {
                        g.thread.rtp(id, data);
                    }
                }
            }
            VideoKind::Rtcp => {
                self.ctx.metrics.video_rtcp_in.inc();
                self.switcher.handle_rtcp(id, data, now);
            }
        };
        self.drain_video();
        self.ship_video();
    }

    /// Member `id`'s video is in the room (a join, or an attach at a takeover): a source
    /// (`params.recv`) and/or a receiver (`params.send`) of the forwarder. A member the
    /// resumed forwarder already has (takeover) keeps its stream.
    pub(super) fn video_joined(
        &mut self,
        id: ParticipantId,
        params: &VideoParams,
        source_ssrc: Option<u32>,
        now: Duration,
    ) {
        if self.switcher.output_ssrc(id).is_some() {
            return; // resumed from the snapshot: its output stream continues
        }
        match self
            .switcher
            .add_participant(id, switcher_params(params, source_ssrc), now)
        {
            Ok(ssrc) => {
                tracing::debug!(room = %self.ctx.name.escape_debug(), id, ssrc, layout = %self.layout, "video joined")
            }
            Err(e) => {
                tracing::warn!(room = %self.ctx.name.escape_debug(), id, "video not forwarded: {e}")
            }
        }
    }

    /// Member `id`'s video changed by a re-INVITE (`Some`: hold or resume, new addresses,
    /// possibly video added; `None`: removed). Its output stream is kept as it is while it
    /// has video (re-adding it would restart its sequence numbers); a removed video leaves
    /// the forwarder.
    pub(super) fn video_updated(&mut self, id: ParticipantId, params: Option<&VideoParams>) {
        let now = self.since_origin(std::time::Instant::now());
        match params {
            None => {
                let _ = self.switcher.remove_participant(id, now);
            }
            Some(p) if self.switcher.output_ssrc(id).is_none() => {
                self.video_joined(id, p, None, now)
            }
            // Hold, resume, another payload type: the same output stream continues.
            Some(p) => {
                if let Err(e) = self
                    .switcher
                    .update_participant(id, switcher_params(p, None), now)
                {
                    tracing::warn!(room = %self.ctx.name.escape_debug(), id, "video update: {e}");
                }
                self.drain_video();
                self.ship_video();
            }
        }
    }

    /// Member `id` left the room (its video with it).
    pub(super) fn video_left(&mut self, id: ParticipantId, now: Duration) {
        let _ = self.switcher.remove_participant(id, now);
        self.drain_video();
    }

    /// A resumed room has its members attached: participants of the forwarder's snapshot
    /// that nobody attached (their call is gone) leave it.
    pub(super) fn video_resumed(&mut self, now: Duration) {
        let gone: Vec<ParticipantId> = self
            .switcher
            .export_state()
            .participants
            .iter()
            .map(|p| p.id)
            .filter(|&id| id != GRID_ID)
            .filter(|id| self.members.get(id).is_none_or(|m| !m.has_video()))
            .collect();
        for id in gone {
            let _ = self.switcher.remove_participant(id, now);
        }
        // The resumed forwarder's keyframe requests, now that their sources are attached.
        for out in std::mem::take(&mut self.video_held) {
            self.send_output(out);
        }
        self.drain_video();
    }

    /// Every tick: the audio mixer's dominant speaker to the forwarder, and its timers.
    pub(super) fn video_tick(&mut self, now: Duration) {
        let speaker = self.mixer.active_speaker();
        if speaker != self.video_speaker {
            self.video_speaker = speaker;
            if let Some(id) = speaker {
                // Not an error when the speaker has no video: the switcher ignores it.
                let _ = self.switcher.set_speaker(id, now);
            }
        }
        if self.switcher.poll_timeout().is_some_and(|t| t <= now) {
            self.switcher.handle_timeout(now);
        }
        self.grid_sync(now);
        self.drain_video();
    }

    /// Send what the forwarder produced.
    pub(super) fn drain_video(&mut self) {
        while let Some(out) = self.switcher.poll_output() {
            self.send_output(out);
        }
    }

    /// Send one output of the forwarder (to a member, or to the grid's encoder).
    fn send_output(&mut self, out: ::video::Output) {
        let (to, rtcp, packet) = match out {
            ::video::Output::Rtp { to, packet } => (to, false, packet),
            ::video::Output::Rtcp { to, packet } => (to, true, packet),
        };
        if to == GRID_ID {
            // Feedback to the grid: its keyframe requests go to the encoder (REMB and
            // the like have no use there).
            let asks = ::video::feedback::parse(&packet).is_ok_and(|fbs| {
                fbs.iter().any(|f| {
                    matches!(
                        f,
                        ::video::feedback::Feedback::Pli { .. }
                            | ::video::feedback::Feedback::Fir { .. }
                    )
                })
            });
            if let (true, Some(g)) = (asks, self.grid.as_mut()) {
                g.thread.control(ToGrid::Keyframe);
            }
            return;
        }
        if self.send_video(to, rtcp, &packet) {
            if rtcp {
                self.ctx.metrics.video_rtcp_out.inc();
            } else {
                self.ctx.metrics.video_rtp_out.inc();
            }
        }
    }

    /// Hot-standby primary: ship the forwarder's snapshot when its state version moved (a
    /// switch decided or made, a member in or out; never per packet).
    pub(super) fn ship_video(&mut self) {
        let v = self.switcher.state_version();
        if self.ctx.ship_snapshots && self.video_shipped != Some(v) {
            self.video_shipped = Some(v);
            let _ = self.ctx.replies.send(RoomEvent::VideoSnapshot {
                room: self.ctx.id,
                snapshot: Box::new(self.switcher.export_state()),
            });
        }
    }

    /// Takeover: a browser's video continues. Its output stream is the resumed forwarder's
    /// (same SSRC, sequence numbers continuing); its SRTP context continues from the packet
    /// index the transport last reported (`ext_seq`, replicated every 2^14 packets: the
    /// rollover counter) moved up to the snapshot's last sequence number when that is ahead,
    /// with an SRTCP index past anything the primary can have used. Returns its
    /// demultiplexer.
    pub(super) fn resume_peer_video(
        &mut self,
        id: ParticipantId,
        v: &control::PeerVideo,
        srtcp_index: u32,
        ext_seq: Option<u64>,
    ) -> Option<webrtc_core::demux::Demux> {
        let now = self.since_origin(std::time::Instant::now());
        self.video_joined(id, &v.params, v.source_ssrc, now);
        let ssrc = self.switcher.output_ssrc(id)?;
        let last_seq = self
            .switcher
            .export_state()
            .participants
            .iter()
            .find(|p| p.id == id)
            .and_then(|p| p.receiver.as_ref())
            .map(|r| r.last.seq);
        let last_ext_seq = match (ext_seq, last_seq) {
            (Some(e), Some(s)) => {
                let at_snapshot = webrtc_core::srtp::estimate_index(e, s).unwrap_or(e);
                e.max(at_snapshot)
            }
            (Some(e), None) => e,
            (None, s) => u64::from(s.unwrap_or(0)),
        };
        if let Some(w) = &self.ctx.webrtc {
            let _ = w.ctl.send(crate::webrtc::WebRtcCtl::ResumeStream {
                id,
                ssrc,
                last_ext_seq,
                srtcp_index,
            });
        }
        Some(webrtc_core::demux::Demux::new(
            v.params.payload_type,
            v.source_ssrc,
            ssrc,
        ))
    }

    /// The room's layout changed (voice-switched forwarding or a grid): the change starts
    /// at once (see [`Room::grid_sync`]).
    pub(super) fn layout_changed(&mut self, layout: VideoLayout) {
        tracing::info!(room = %self.ctx.name.escape_debug(), %layout, "video layout");
        self.layout = layout;
        let now = self.since_origin(std::time::Instant::now());
        self.grid_sync(now);
        self.drain_video();
        self.ship_video();
    }

    /// The layout the receivers are shown: voice-switched while a grid is being left (or
    /// when its compositor could not start), else the room's.
    pub(super) fn layout_in_effect(&self) -> VideoLayout {
        match &self.grid {
            Some(g) if g.draining_since.is_some() => VideoLayout::Switched,
            _ => self.layout,
        }
    }

    /// Bring the grid in line with the layout (every tick, and at a layout change): start
    /// the compositor thread and pin every receiver to it (in grid layout, once a member
    /// has video: an audio-only room encodes nothing); or unpin them and end the thread
    /// once none still waits to switch away from it (at most [`GRID_DRAIN`]); tell a
    /// running compositor the room's sources and speaker.
    pub(super) fn grid_sync(&mut self, now: Duration) {
        let want = self.layout == VideoLayout::Grid && self.members.values().any(|m| m.has_video());
        if want && self.grid.is_none() {
            self.grid_generation += 1;
            let resume = self.grid_resume.take();
            let started = GridThread::start(
                &self.ctx.name,
                self.grid_generation,
                resume.as_ref(),
                self.ctx.origin,
                self.grid_tx.clone(),
                self.ctx.metrics.clone(),
            );
            let thread = match started {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(room = %self.ctx.name.escape_debug(), "{e}: the room keeps voice-switched forwarding");
                    self.layout = VideoLayout::Switched;
                    return;
                }
            };
            if self.switcher.output_ssrc(GRID_ID).is_none() {
                if let Err(e) = self.switcher.add_participant(GRID_ID, grid_params(), now) {
                    tracing::error!(room = %self.ctx.name.escape_debug(), "grid not forwarded: {e}");
                }
            }
            let _ = self.switcher.set_pinned(Some(GRID_ID), now);
            self.grid = Some(GridState {
                thread,
                // A resumed compositor has the snapshot's tiles already.
                sources: resume
                    .map(|s| s.tiles.iter().flatten().copied().collect())
                    .unwrap_or_default(),
                speaker: None,
                draining_since: None,
            });
        }
        if self.grid.as_ref().is_some_and(|g| g.thread.is_dead()) {
            // Its thread died (a panic): voice-switched forwarding rather than a frozen grid
            // (and no restart loop); the operator sees the layout in the API.
            tracing::error!(room = %self.ctx.name.escape_debug(), "the grid compositor stopped: the room falls back to voice-switched forwarding");
            self.layout = VideoLayout::Switched;
            self.remove_grid_source(now);
            self.grid = None;
            self.ship_grid(None);
            return;
        }
        let Some(g) = self.grid.as_mut() else {
            if self.layout != VideoLayout::Grid && self.switcher.output_ssrc(GRID_ID).is_some() {
                // A takeover while the primary drained its grid: the snapshot still has the
                // grid as a source, which nothing feeds any more.
                self.remove_grid_source(now);
            }
            return;
        };
        match (want, g.draining_since) {
            (true, Some(_)) => {
                g.draining_since = None;
                let _ = self.switcher.set_pinned(Some(GRID_ID), now);
            }
            (false, None) => {
                g.draining_since = Some(now);
                let _ = self.switcher.set_pinned(None, now);
            }
            _ => {}
        }
        if let Some(since) = g.draining_since {
            let switcher = &self.switcher;
            let waiting = self.members.keys().any(|id| {
                switcher.stats(*id).is_some_and(|s| {
                    s.showing == Some(GRID_ID) && s.target.is_some_and(|t| t != GRID_ID)
                })
            });
            if !waiting || now.saturating_sub(since) >= GRID_DRAIN {
                // Its viewers without another target get the first source (asked for a
                // keyframe); the thread ends with its channel.
                let _ = self.switcher.remove_participant(GRID_ID, now);
                self.grid = None;
                self.ship_grid(None);
                return;
            }
        }
        let senders: std::collections::BTreeSet<ParticipantId> = self
            .members
            .iter()
            .filter(|(_, m)| m.is_video_source())
            .map(|(&id, _)| id)
            .collect();
        // At most MAX_TILES in the grid: those already in keep their tiles, a tile that
        // frees goes to the longest-waiting sender (lowest id) beyond them.
        let mut sources: std::collections::BTreeSet<ParticipantId> =
            g.sources.intersection(&senders).copied().collect();
        let free = video_grid::compose::MAX_TILES.saturating_sub(sources.len());
        sources.extend(senders.difference(&g.sources).copied().take(free));
        for &id in g.sources.difference(&sources) {
            g.thread.control(ToGrid::Remove(id));
        }
        for &id in sources.difference(&g.sources) {
            g.thread.control(ToGrid::Add(id));
        }
        g.sources = sources;
        if g.speaker != Some(self.video_speaker) {
            g.speaker = Some(self.video_speaker);
            g.thread.control(ToGrid::Speaker(self.video_speaker));
        }
        g.thread.flush();
    }

    /// The grid is no source of the forwarder any more: nobody pinned to it, its viewers
    /// switched to their speaker-rule source (asked for a keyframe).
    fn remove_grid_source(&mut self, now: Duration) {
        let _ = self.switcher.set_pinned(None, now);
        let _ = self.switcher.remove_participant(GRID_ID, now);
    }

    /// Output of a grid thread: the composed stream into the forwarder as [`GRID_ID`]'s
    /// RTP, a keyframe request for a source through the forwarder's rate limit, a snapshot
    /// shipped for the hot standby. A stopped thread's last messages are ignored.
    pub(super) fn grid_output(&mut self, msg: FromGrid) {
        if self
            .grid
            .as_ref()
            .is_none_or(|g| g.thread.generation() != msg.generation)
        {
            return;
        }
        let now = self.since_origin(std::time::Instant::now());
        match msg.body {
            FromGridBody::Rtp(packet) => self.switcher.handle_rtp(GRID_ID, &packet, now),
            FromGridBody::KeyframeRequest(source) => {
                // Not an error when the source left meanwhile.
                let _ = self.switcher.request_keyframe_from(source, now);
            }
            FromGridBody::Snapshot(s) => self.ship_grid(Some(s)),
        }
        self.drain_video();
        self.ship_video();
    }

    /// Hot-standby primary: ship the grid's snapshot (`None`: the room left grid layout).
    fn ship_grid(&self, snapshot: Option<::video::snapshot::GridSnapshot>) {
        if self.ctx.ship_snapshots {
            let _ = self.ctx.replies.send(RoomEvent::GridSnapshot {
                room: self.ctx.id,
                snapshot: snapshot.map(Box::new),
            });
        }
    }

    /// FORWARDER OUTPUT: send one RTP (`rtcp` false) or RTCP datagram to member `to`'s video,
    /// where its video latch says its video comes from (else its SDP address), from our video
    /// socket (the RTP one with rtcp-mux). False when not sent (no such member or video, no
    /// destination yet, the socket's buffer full, or this node fenced).
    pub(super) fn send_video(&self, to: ParticipantId, rtcp: bool, packet: &[u8]) -> bool {
        if self.ctx.fenced.load(Ordering::SeqCst) || self.ctx.fence_tick.covers(self.tick_k) {
            return false;
        }
        let Some(m) = self.members.get(&to) else {
            return false;
        };
        if let super::Link::Peer { demux: Some(_), .. } = &m.link {
            // A browser: SRTP-protected on its bundled transport by the WebRTC task.
            return self
                .ctx
                .webrtc
                .as_ref()
                .is_some_and(|w| w.send_media(to, rtcp, packet.to_vec()));
        }
        let Some(v) = m.video.as_ref() else {
            return false;
        };
        let (dest, sock) = if rtcp {
            let sock = if v.rtcp_mux { &v.rtp } else { &v.rtcp };
            (v.latch.rtcp_dest(), sock)
        } else {
            (v.latch.rtp_dest(), &v.rtp)
        };
        dest.is_some_and(|d| sock.try_send_to(packet, d).is_ok())
    }
}

/// Longest time a room leaving grid layout keeps the compositor running for receivers
/// that still wait for their new source's keyframe.
const GRID_DRAIN: Duration = Duration::from_millis(1500);

/// The grid as a participant of the forwarder: a source only (its RTP is ours: no NACK
/// upstream), asked for keyframes with FIR.
fn grid_params() -> ::video::VideoParams {
    ::video::VideoParams {
        payload_type: 96,
        send: false,
        recv: true,
        source_ssrc: None,
        fir: true,
        nack: false,
    }
}

/// The forwarder's view of a member's negotiated video.
fn switcher_params(p: &VideoParams, source_ssrc: Option<u32>) -> ::video::VideoParams {
    ::video::VideoParams {
        payload_type: p.payload_type,
        send: p.send,
        recv: p.recv,
        source_ssrc,
        fir: p.feedback.fir,
        nack: p.feedback.nack,
    }
}

/// A room's video forwarder: continued from the snapshot a promoted backup holds, else new,
/// seeded from the room's mixer seed (replicated, so a room whose forwarder had no snapshot
/// yet draws the same output SSRCs on either node) and on the same NTP origin.
pub(super) fn new_switcher(
    room: &str,
    mixer: &mixer::MixerConfig,
    snapshot: Option<&::video::SwitcherSnapshot>,
    now: Duration,
) -> ::video::Switcher {
    if let Some(s) = snapshot {
        match ::video::Switcher::from_snapshot(s, now) {
            Ok(sw) => return sw,
            Err(e) => {
                tracing::error!(room = %room.escape_debug(), "cannot resume the room's video from its snapshot: {e}")
            }
        }
    }
    ::video::Switcher::new(::video::SwitcherConfig {
        seed: mixer.seed ^ VIDEO_SEED_SALT,
        ntp_origin: mixer.ntp_origin,
        ..Default::default()
    })
}

/// Makes the forwarder's seed differ from the mixer's (audio and video SSRCs of one
/// participant must differ).
const VIDEO_SEED_SALT: u64 = 0x5649_4445_4f00_0001;
