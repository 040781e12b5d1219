//! WebRTC participants (browsers joining through WHIP, RFC 9725) in the same rooms as SIP
//! calls, under the same output commit and replication.
//!
//! A WHIP offer ([`crate::Core::handle_whip_offer`]) becomes a [`PeerRecord`]: the parsed
//! offer, our ICE credentials (drawn from the replicated generator), the room. The driver
//! registers the participant with its WebRTC transport ([`crate::Action::OpenPeer`]) and the
//! room adds it ([`crate::RoomCommand::JoinPeer`]); the SDP answer ([`crate::Action::WhipReply`])
//! is released only once the backup holds the record, ICE credentials included. When the
//! transport reports the handshake's keys ([`PeerInput::Keyed`]) they are recorded and the
//! server's final DTLS flight ([`crate::Action::ReleaseFinalFlight`]) waits for the backup's
//! acknowledgement likewise. A backup that takes over resumes every participant that has its
//! keys ([`crate::Action::ResumePeer`] then [`crate::RoomCommand::AttachPeer`]): same ICE
//! credentials, same SRTP keys, its outgoing stream continuing from the mixer snapshot with
//! an SRTCP index past anything the primary can have used. A participant still in its
//! handshake is dropped on both nodes; its browser fails and can join again.
//! `tests/webrtc.rs` checks this from a real Chromium offer, as the actions a driver carries
//! out: what the browser is answered and when, and what a promoted backup resumes.

use crate::schema::{Item, MediaPhase};
use crate::{Action, Core, Deferred, Role, RoomCommand};
use mixer::{Codec, StreamParams};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;
use webrtc_core::dtls::KeyingMaterial;
use webrtc_core::ice::Credentials;
use webrtc_core::sdp::{self as wsdp, Offer};

/// WebRTC participant ids start here (SIP call ids stay far below).
pub const PEER_ID_BASE: u64 = 1 << 48;

/// SRTCP packets a primary may have sent that its backup cannot know of: the index a resumed
/// stream continues from is the elapsed time's bound plus this.
pub const SRTCP_MARGIN: u32 = 16;

/// Where the WebRTC transport is (the candidate in every answer) and what it presents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebRtcConfig {
    /// The UDP port all WebRTC participants share (on [`crate::Config::media_ip`]).
    pub port: u16,
    /// SHA-256 fingerprint of the DTLS certificate ("AB:CD:..").
    pub fingerprint: String,
}

/// One WebRTC participant, as the control core keeps it and replicates it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// Participant id (>= [`PEER_ID_BASE`]).
    pub id: u64,
    /// Room name.
    pub room: String,
    /// Display name (from the WHIP request), else "webrtc:<id>".
    pub name: String,
    /// The browser's offer, parsed.
    pub offer: Offer,
    /// Our ICE credentials.
    pub local_ice: Credentials,
    /// Our SDP's session id.
    pub session_id: u64,
    /// Where its media stand.
    pub media: MediaPhase,
    /// Our output SSRC towards it.
    pub ssrc_out: Option<u32>,
    /// Our SDP answer, once built.
    pub answer: Option<String>,
    /// The keys its DTLS handshake exported (replicated before the final flight goes out).
    pub keys: Option<KeyingMaterial>,
    /// The candidate pair the browser nominated (where its media go).
    pub selected: Option<SocketAddr>,
    /// When it joined its room (bounds the SRTCP packets sent to it).
    pub joined_at: Duration,
    /// Muted by the operator ([`crate::admin`]).
    #[serde(default)]
    pub muted: bool,
    /// Its video, if its offer's video line is accepted (bundled VP8, video served).
    #[serde(default)]
    pub video: Option<crate::PeerVideo>,
    /// Our video output SSRC towards it (announced in the answer).
    #[serde(default)]
    pub video_ssrc_out: Option<u32>,
    /// Per outgoing SSRC, the SRTP packet index the transport last reported
    /// ([`PeerInput::OutboundProgress`]; every 2^14 packets): a resumed video stream takes
    /// its rollover counter from there.
    #[serde(default)]
    pub out_progress: std::collections::BTreeMap<u32, u64>,
}

/// What the WebRTC transport reports about a participant.
#[derive(Clone, Debug, PartialEq)]
pub enum PeerInput {
    /// The browser nominated a pair.
    Selected(SocketAddr),
    /// Its handshake exported these keys.
    Keyed(KeyingMaterial),
    /// The transport is gone: handshake failure, close_notify, consent expired.
    Gone(String),
    /// Our outgoing stream `ssrc` reached SRTP packet index `ext_seq` (see
    /// `webrtc_core::peer::PeerEvent::OutboundProgress`): replicated.
    OutboundProgress {
        /// Our SSRC.
        ssrc: u32,
        /// Its highest packet index.
        ext_seq: u64,
    },
}

/// How a WHIP request ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WhipResult {
    /// 201 Created: the participant's id and our SDP answer.
    Created {
        /// Participant id (the resource is `/whip/{room}/{id}`).
        id: u64,
        /// SDP answer.
        sdp: String,
    },
    /// DELETE done.
    Deleted,
    /// Refused: HTTP status and reason.
    Refused {
        /// HTTP status.
        status: u16,
        /// Reason (response body).
        reason: String,
    },
}

/// The mixer stream a browser's offer asks for: Opus, 20 ms, RFC 6464 levels if offered.
pub fn peer_stream_params(offer: &Offer) -> StreamParams {
    let (send, recv) = wsdp_direction(offer);
    StreamParams {
        codec: Codec::Opus,
        payload_type: offer.opus_pt,
        telephone_event_pt: offer.telephone_event_pt,
        ptime_ms: 20,
        audio_level_ext_id: offer.audio_level_ext_id,
        send,
        recv,
    }
}

/// The video a browser's offer asks for (its accepted VP8 line), if any.
pub fn peer_video(offer: &Offer) -> Option<crate::PeerVideo> {
    let v = offer.video.as_ref()?;
    let (send, recv) = direction_flags(v.direction);
    Some(crate::PeerVideo {
        params: crate::VideoParams {
            payload_type: v.vp8_pt,
            send,
            recv,
            feedback: sip_core::sdp::VideoFeedback {
                nack: v.feedback.nack,
                pli: v.feedback.pli,
                fir: v.feedback.fir,
                remb: v.feedback.remb,
            },
        },
        source_ssrc: v.ssrc,
    })
}

/// SRTCP packets per second a room may send on one video stream to a browser (sender
/// reports, keyframe requests, NACKs and REMBs to it as a source): bounds the index a
/// resumed video stream continues from.
pub const VIDEO_SRTCP_PER_SEC: u32 = 50;

/// (we send, we receive) from an offered direction.
fn direction_flags(d: wsdp::Direction) -> (bool, bool) {
    use wsdp::Direction::*;
    match d {
        SendRecv => (true, true),
        SendOnly => (false, true),
        RecvOnly => (true, false),
        Inactive => (false, false),
    }
}

/// (we send, we receive) from the offer's direction.
fn wsdp_direction(offer: &Offer) -> (bool, bool) {
    direction_flags(offer.direction)
}

impl Core {
    /// WebRTC participants by id.
    pub fn peers(&self) -> &std::collections::BTreeMap<u64, PeerRecord> {
        &self.peers
    }

    /// `POST /whip/{room}`: a browser's offer. Answered with [`Action::WhipReply`] for
    /// `request` (held until the backup has the participant).
    pub fn handle_whip_offer(
        &mut self,
        request: u64,
        room: &str,
        offer: &str,
        name: Option<&str>,
        now: Duration,
    ) {
        let refuse = |core: &mut Core, status: u16, reason: &str| {
            tracing::info!(room = %room.escape_debug(), status, "WHIP offer refused: {reason}");
            core.stats.calls_rejected += 1;
            core.actions.push_back(Action::WhipReply {
                request,
                result: WhipResult::Refused {
                    status,
                    reason: reason.to_string(),
                },
            });
        };
        if self.role == Role::Backup || self.stopping || self.is_switching() {
            return refuse(self, 503, "not serving");
        }
        if self.cfg.webrtc.is_none() {
            return refuse(self, 404, "WebRTC is not enabled on this server");
        }
        if !crate::valid_room_name(room) {
            return refuse(self, 404, "room name not allowed");
        }
        if let Some(r) = self.rooms.get(room) {
            if r.record.settings.locked {
                return refuse(self, 403, "room locked");
            }
            if r.members.len() >= r.record.settings.limit(self.cfg.max_participants) {
                return refuse(self, 503, "room full");
            }
        }
        let mut offer = match wsdp::parse_offer(offer) {
            Ok(o) => o,
            Err(e) => return refuse(self, 400, &e.to_string()),
        };
        if !self.cfg.video {
            offer.video = None; // an audio-only server declines every video line
        }
        let id = PEER_ID_BASE + self.server.next_peer;
        self.server.next_peer += 1;
        let mut draw = || self.server.rng.next_u64();
        let local_ice = Credentials::generate(&mut draw);
        let session_id = self.server.rng.next_u64() >> 1;
        self.server_dirty = true;
        let name = match name.map(str::trim).filter(|n| !n.is_empty()) {
            Some(n) => n.chars().take(64).collect(),
            None => format!("webrtc:{id}"),
        };
        tracing::info!(id, room = %room.escape_debug(), name = %name.escape_debug(), "WHIP offer");
        self.actions.push_back(Action::OpenPeer {
            id,
            local: local_ice.clone(),
            remote: offer.ice.clone(),
            remote_fingerprint: offer.fingerprint.value.clone(),
        });
        let rec = PeerRecord {
            id,
            room: room.to_string(),
            name,
            offer,
            local_ice,
            session_id,
            media: MediaPhase::Idle,
            ssrc_out: None,
            answer: None,
            keys: None,
            selected: None,
            joined_at: now,
            muted: false,
            video: None,
            video_ssrc_out: None,
            out_progress: Default::default(),
        };
        self.peers.insert(id, rec);
        self.dirty_peers.insert(id);
        self.whip_pending.insert(id, request);
        self.join_peer(id);
        self.step(now);
    }

    /// `DELETE /whip/{room}/{id}`: the participant leaves.
    pub fn handle_whip_delete(&mut self, request: u64, room: &str, id: u64, now: Duration) {
        if self.defer(|| Deferred::WhipDelete(request, room.to_string(), id)) {
            return;
        }
        let found = self.peers.get(&id).is_some_and(|p| p.room == room);
        let result = if found && self.role != Role::Backup {
            tracing::info!(id, room = %room.escape_debug(), "WHIP delete: leaving");
            self.forget_peer(id);
            WhipResult::Deleted
        } else {
            WhipResult::Refused {
                status: 404,
                reason: "no such participant".into(),
            }
        };
        self.commit_actions
            .push(Action::WhipReply { request, result });
        self.step(now);
    }

    /// The WebRTC transport reports on participant `id`.
    pub fn handle_peer_input(&mut self, id: u64, input: PeerInput, now: Duration) {
        if self.role == Role::Backup {
            return;
        }
        if self.switching.is_some() {
            self.defer(|| Deferred::Peer(id, input));
            return;
        }
        let Some(rec) = self.peers.get_mut(&id) else {
            return;
        };
        match input {
            PeerInput::Selected(addr) => {
                if rec.selected != Some(addr) {
                    tracing::info!(id, %addr, "WebRTC pair selected");
                    rec.selected = Some(addr);
                    self.dirty_peers.insert(id);
                }
            }
            PeerInput::Keyed(keys) => {
                tracing::info!(id, profile = ?keys.profile, "DTLS handshake done: keys replicated before the final flight");
                rec.keys = Some(keys);
                self.dirty_peers.insert(id);
                self.commit_actions.push(Action::ReleaseFinalFlight { id });
            }
            PeerInput::OutboundProgress { ssrc, ext_seq } => {
                if rec.out_progress.insert(ssrc, ext_seq) != Some(ext_seq) {
                    self.dirty_peers.insert(id);
                }
            }
            PeerInput::Gone(why) => {
                tracing::info!(id, "WebRTC participant gone: {why}");
                if let Some(request) = self.whip_pending.remove(&id) {
                    self.actions.push_back(Action::WhipReply {
                        request,
                        result: WhipResult::Refused {
                            status: 500,
                            reason: why,
                        },
                    });
                }
                self.forget_peer(id);
            }
        }
        self.step(now);
    }

    /// Put a participant into its room, opening the room on first use.
    pub(crate) fn join_peer(&mut self, id: u64) {
        let rec = &self.peers[&id];
        let name = rec.room.clone();
        let params = peer_stream_params(&rec.offer);
        let video = peer_video(&rec.offer);
        let room = self.room_for(&name);
        self.rooms
            .get_mut(&name)
            .expect("opened")
            .members
            .insert(id);
        let rec = self.peers.get_mut(&id).expect("known");
        rec.media = MediaPhase::Joining;
        rec.video = video;
        let muted = rec.muted;
        self.dirty_peers.insert(id);
        self.actions.push_back(Action::Room(RoomCommand::JoinPeer {
            room,
            call: id,
            params,
            video,
        }));
        if muted {
            self.actions.push_back(Action::Room(RoomCommand::Mute {
                room,
                call: id,
                muted: true,
            }));
        }
    }

    /// The room has the participant: answer the WHIP request (held until replicated).
    pub(crate) fn peer_joined(
        &mut self,
        id: u64,
        ssrc: u32,
        video_ssrc: Option<u32>,
        now: Duration,
    ) -> bool {
        let Some(webrtc) = self.cfg.webrtc.clone() else {
            return false;
        };
        let media_ip = self.cfg.media_ip;
        let Some(rec) = self.peers.get_mut(&id) else {
            return false;
        };
        if rec.media != MediaPhase::Joining {
            return false;
        }
        rec.media = MediaPhase::Joined;
        rec.ssrc_out = Some(ssrc);
        rec.video_ssrc_out = video_ssrc.filter(|_| rec.video.is_some());
        rec.joined_at = now;
        let params = wsdp::AnswerParams {
            session_id: rec.session_id,
            session_version: 1,
            ice_ufrag: rec.local_ice.ufrag.clone(),
            ice_pwd: rec.local_ice.pwd.clone(),
            fingerprint_sha256: webrtc.fingerprint.clone(),
            candidate: SocketAddr::new(media_ip, webrtc.port),
            ssrc,
            cname: format!("understudy-{id}"),
            msid_stream: format!("room-{}", rec.room),
            msid_track: format!("mix-{id}"),
            video: rec.video_ssrc_out.map(|ssrc| wsdp::VideoAnswer {
                ssrc,
                msid_track: format!("video-{id}"),
            }),
        };
        let sdp = wsdp::build_answer(&rec.offer, &params);
        rec.answer = Some(sdp.clone());
        self.dirty_peers.insert(id);
        tracing::info!(id, room = %rec.room.escape_debug(), ssrc_out = ssrc, "WebRTC participant joined room");
        if let Some(request) = self.whip_pending.remove(&id) {
            self.stats.calls_accepted += 1;
            self.commit_actions.push(Action::WhipReply {
                request,
                result: WhipResult::Created { id, sdp },
            });
        }
        true
    }

    /// The room refused the participant.
    pub(crate) fn peer_join_failed(&mut self, id: u64, reason: &str) {
        if let Some(request) = self.whip_pending.remove(&id) {
            self.actions.push_back(Action::WhipReply {
                request,
                result: WhipResult::Refused {
                    status: 500,
                    reason: reason.to_string(),
                },
            });
        }
        self.forget_peer(id);
    }

    /// The participant is over: out of its room and its transport.
    pub(crate) fn forget_peer(&mut self, id: u64) {
        let Some(rec) = self.peers.remove(&id) else {
            return;
        };
        self.whip_pending.remove(&id);
        self.dirty_peers.insert(id);
        self.actions.push_back(Action::ClosePeer { id });
        if let Some(room) = self.rooms.get_mut(&rec.room) {
            if room.members.remove(&id) {
                let rid = room.record.id;
                self.actions.push_back(Action::Room(RoomCommand::Leave {
                    room: rid,
                    call: id,
                }));
                self.close_room_if_empty(rid);
            }
        }
    }

    /// Replicated items for the participants changed in this step.
    pub(crate) fn peer_items(&mut self) -> Vec<Item> {
        std::mem::take(&mut self.dirty_peers)
            .into_iter()
            .map(|id| match self.peers.get(&id) {
                Some(rec) => Item::Peer(Box::new(rec.clone())),
                None => Item::PeerEnded { id },
            })
            .collect()
    }

    /// Takeover: whether the participant can continue (its handshake completed on the
    /// primary and its room has its stream).
    pub(crate) fn peer_resumable(&self, id: u64) -> bool {
        self.peers.get(&id).is_some_and(|rec| {
            rec.media == MediaPhase::Joined
                && rec.keys.is_some()
                && rec.ssrc_out.is_some()
                && self.rooms.contains_key(&rec.room)
        })
    }

    /// Takeover: continue one participant (its room was opened from the snapshot), a member
    /// of its room again (its leaving is a `Leave`, the room closes after its last member).
    pub(crate) fn resume_peer(&mut self, id: u64, now: Duration) {
        let Some(rec) = self.peers.get(&id) else {
            return;
        };
        let (Some(keys), Some(room)) = (rec.keys.clone(), self.rooms.get_mut(&rec.room)) else {
            return;
        };
        room.members.insert(id);
        let rid = room.record.id;
        // One SRTCP packet per report interval at most since it joined, plus a margin: an
        // index the primary cannot have used yet.
        let elapsed = now.saturating_sub(rec.joined_at);
        let reports = elapsed.as_secs() / mixer::RTCP_INTERVAL.as_secs().max(1);
        let srtcp_index = u32::try_from(reports).unwrap_or(u32::MAX / 2) + 2 + SRTCP_MARGIN;
        let video_srtcp_index = u32::try_from(elapsed.as_secs() + 1)
            .unwrap_or(u32::MAX)
            .saturating_mul(VIDEO_SRTCP_PER_SEC)
            .saturating_add(SRTCP_MARGIN)
            .min(1 << 30);
        let video = rec.video.filter(|_| rec.video_ssrc_out.is_some());
        let video_ext_seq = rec
            .video_ssrc_out
            .and_then(|s| rec.out_progress.get(&s).copied());
        self.actions.push_back(Action::ResumePeer {
            id,
            local: rec.local_ice.clone(),
            remote: rec.offer.ice.clone(),
            remote_fingerprint: rec.offer.fingerprint.value.clone(),
            keys,
            selected: rec.selected,
        });
        self.actions
            .push_back(Action::Room(RoomCommand::AttachPeer {
                room: rid,
                call: id,
                srtcp_index,
                video,
                video_srtcp_index,
                video_ext_seq,
            }));
    }
}
