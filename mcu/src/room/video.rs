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
//! # What the room does with video today
//!
//! Every accepted video datagram is counted (`mcu_video_packets_received_total{kind="rtp"}`
//! or `{kind="rtcp"}`) and dropped, in `Room::video_input`. Nothing is sent.
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
            super::spawn_reader(rtp.clone(), id, false, true, self.pkt_tx.clone(), m.clone()),
            super::spawn_reader(rtcp.clone(), id, true, true, self.pkt_tx.clone(), m.clone()),
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

    // ---- the forwarder's hooks ----------------------------------------------------------

    /// FORWARDER HOOK: one video datagram of member `id` that passed its media source rule,
    /// at `now` (the room's clock: since the server's origin). Today: counted and dropped.
    /// With the forwarder: `Rtp` to `switcher.handle_rtp(id, data, now)`, `Rtcp` to
    /// `switcher.handle_rtcp(id, data, now)`, then its outputs to [`Room::send_video`].
    pub(super) fn video_input(
        &mut self,
        id: ParticipantId,
        kind: VideoKind,
        data: &[u8],
        now: Duration,
    ) {
        let _ = (id, data, now);
        match kind {
            VideoKind::Rtp => self.ctx.metrics.video_rtp_in.inc(),
            VideoKind::Rtcp => self.ctx.metrics.video_rtcp_in.inc(),
        };
    }

    /// FORWARDER HOOK: member `id`'s video is in the room (a join, or an attach at a
    /// takeover): add it to the forwarder as a source (`params.recv`) and/or a receiver
    /// (`params.send`).
    pub(super) fn video_joined(&mut self, id: ParticipantId, params: &VideoParams) {
        tracing::debug!(room = %self.ctx.name.escape_debug(), id, ?params, layout = %self.layout, "video joined");
    }

    /// FORWARDER HOOK: member `id`'s video changed by a re-INVITE (`Some`: hold or resume,
    /// new addresses, possibly video added; `None`: removed).
    pub(super) fn video_updated(&mut self, id: ParticipantId, params: Option<&VideoParams>) {
        tracing::debug!(room = %self.ctx.name.escape_debug(), id, ?params, "video updated");
    }

    /// FORWARDER HOOK: member `id` left the room (its video with it).
    pub(super) fn video_left(&mut self, id: ParticipantId) {
        tracing::debug!(room = %self.ctx.name.escape_debug(), id, "video left");
    }

    /// FORWARDER HOOK: the room's layout changed (voice-switched forwarding or a grid).
    pub(super) fn layout_changed(&mut self, layout: VideoLayout) {
        tracing::info!(room = %self.ctx.name.escape_debug(), %layout, "video layout");
        self.layout = layout;
    }

    /// FORWARDER OUTPUT: send one RTP (`rtcp` false) or RTCP datagram to member `to`'s video,
    /// where its video latch says its video comes from (else its SDP address), from our video
    /// socket (the RTP one with rtcp-mux). False when not sent (no such member or video, no
    /// destination yet, the socket's buffer full, or this node fenced).
    #[allow(dead_code)] // the forwarder's output path, wired next (issue 12)
    pub(super) fn send_video(&self, to: ParticipantId, rtcp: bool, packet: &[u8]) -> bool {
        if self.ctx.fenced.load(Ordering::SeqCst) || self.ctx.fence_tick.covers(self.tick_k) {
            return false;
        }
        let Some(v) = self.members.get(&to).and_then(|m| m.video.as_ref()) else {
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
