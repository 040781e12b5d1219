//! An operator's decisions (the admin API): mute or unmute a participant, kick one, lock a
//! room or cap its size. They are decided here, in the core, and live in the replicated
//! records: a participant's mute in its [`CallRecord`] or [`PeerRecord`], a room's settings
//! in its [`RoomRecord`]. A promoted backup therefore keeps every one of them.
//!
//! A request ([`Core::handle_admin`]) is answered with [`Action::AdminReply`], released like a
//! SIP message once the backup holds what it changed (output commit): an operator who was
//! told "muted" is never contradicted by a takeover.
//!
//! - Mute: the record's flag, and [`RoomCommand::Mute`] for the room task (the mixer's
//!   [`mixer::Mixer::set_muted`]). A muted participant still hears the room and its level is
//!   still measured; it is never mixed nor the active speaker. The record is the authority:
//!   a room resumed at a takeover, or a participant joining again, is told the record's value.
//! - Kick: a SIP call is hung up (BYE; 480 to an INVITE still unanswered; a call whose 200
//!   waits for its ACK leaves its room at once and gets its BYE when the ACK comes); a WebRTC
//!   participant's session is closed as a WHIP `DELETE` would.
//! - Room settings ([`RoomSettings`]): a locked room refuses new participants (SIP `403 Room
//!   Locked`, WHIP 403); a room over its own limit refuses like a full room (SIP 486, WHIP
//!   503). Participants already in stay in either case. Its video layout ([`VideoLayout`]:
//!   voice-switched or a grid; the server's default until set) goes to its room task
//!   ([`RoomCommand::Layout`]) at once.
//!
//! A room exists while it has participants (joined or joining): requests about any other room
//! are refused with [`AdminError::UnknownRoom`]. Its settings live and die with it: when its
//! last participant leaves, the room and its settings are gone, and a room opened again under
//! the same name starts unlocked with the server's limit.
//!
//! [`CallRecord`]: crate::CallRecord
//! [`PeerRecord`]: crate::PeerRecord
//! [`RoomRecord`]: crate::RoomRecord

use crate::peer::WhipResult;
use crate::{Action, Core, Role, RoomCommand};
use serde::{Deserialize, Serialize};
use sip_core::CallHandle;
use std::time::Duration;

/// Reason phrase of the 403 a locked room answers an INVITE with.
pub const LOCKED_REASON: &str = "Room Locked";

/// How a room shows video to its participants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoLayout {
    /// Voice-switched: every participant sees the active speaker (the speaker sees the
    /// previous one), forwarded, not re-encoded.
    #[default]
    Switched,
    /// Continuous presence: a composed grid of the participants, the speaker highlighted.
    Grid,
}

impl VideoLayout {
    /// Its name in the API and the configuration (`switched`, `grid`).
    pub fn as_str(self) -> &'static str {
        match self {
            VideoLayout::Switched => "switched",
            VideoLayout::Grid => "grid",
        }
    }

    /// The layout named `name` (as [`VideoLayout::as_str`] writes it), if any.
    pub fn parse(name: &str) -> Option<VideoLayout> {
        match name {
            "switched" => Some(VideoLayout::Switched),
            "grid" => Some(VideoLayout::Grid),
            _ => None,
        }
    }
}

impl std::fmt::Display for VideoLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A room's settings, replicated in its [`crate::RoomRecord`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSettings {
    /// New participants are refused (SIP 403, WHIP 403); those already in stay.
    pub locked: bool,
    /// The room's own participant limit (`None`: the server's
    /// [`crate::Config::max_participants`]); never above the server's.
    pub max_participants: Option<usize>,
    /// The room's own video layout (`None`: the server's [`crate::Config::video_layout`]).
    #[serde(default)]
    pub layout: Option<VideoLayout>,
}

impl RoomSettings {
    /// The room's limit on a server whose own is `server_max`.
    pub fn limit(&self, server_max: usize) -> usize {
        self.max_participants
            .map_or(server_max, |m| m.min(server_max))
    }

    /// The room's layout on a server whose default is `server_default`.
    pub fn layout(&self, server_default: VideoLayout) -> VideoLayout {
        self.layout.unwrap_or(server_default)
    }
}

/// A change of a room's settings: fields left `None` keep their value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SettingsChange {
    /// Lock or unlock the room.
    pub locked: Option<bool>,
    /// The room's limit, 1 to the server's [`crate::Config::max_participants`].
    pub max_participants: Option<usize>,
    /// The room's video layout.
    pub layout: Option<VideoLayout>,
}

/// What an operator asks for. Participants are named by their room and their id (the SIP
/// call handle, or the WebRTC participant id): a participant of another room is unknown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminCommand {
    /// Mute (`true`) or unmute a participant.
    Mute {
        /// Room name.
        room: String,
        /// Participant id.
        id: u64,
        /// The new state.
        muted: bool,
    },
    /// Remove a participant: BYE for a SIP call, the session closed for a WebRTC one.
    Kick {
        /// Room name.
        room: String,
        /// Participant id.
        id: u64,
    },
    /// Change a room's settings.
    Settings {
        /// Room name.
        room: String,
        /// What changes.
        change: SettingsChange,
    },
}

/// How an [`AdminCommand`] ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminResult {
    /// The participant's mute state now.
    Muted {
        /// Room name.
        room: String,
        /// Participant id.
        id: u64,
        /// Muted.
        muted: bool,
    },
    /// The participant is on its way out (its BYE is sent, or its session closed).
    Kicked {
        /// Room name.
        room: String,
        /// Participant id.
        id: u64,
    },
    /// The room's settings now.
    Settings {
        /// Room name.
        room: String,
        /// Its settings.
        settings: RoomSettings,
        /// Its limit as applied ([`RoomSettings::limit`]).
        max_participants: usize,
        /// Its layout as applied ([`RoomSettings::layout`]).
        layout: VideoLayout,
    },
    /// Refused; nothing changed.
    Refused(AdminError),
}

/// Why an [`AdminCommand`] was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdminError {
    /// No such room (a room exists while it has participants).
    UnknownRoom,
    /// No such participant in that room.
    UnknownParticipant,
    /// A room limit outside 1 to the server's.
    InvalidMaxParticipants {
        /// The server's limit.
        server_max: usize,
    },
    /// This node does not serve (a hot-standby backup, or a primary handing over in a
    /// planned switchover).
    NotServing,
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminError::UnknownRoom => write!(f, "no such room"),
            AdminError::UnknownParticipant => write!(f, "no such participant in this room"),
            AdminError::InvalidMaxParticipants { server_max } => {
                write!(f, "max_participants must be 1 to {server_max}")
            }
            AdminError::NotServing => {
                write!(f, "this node does not serve (a backup, or handing over)")
            }
        }
    }
}

impl std::error::Error for AdminError {}

impl Core {
    /// An operator's request; answered with [`Action::AdminReply`] for `request` (held until
    /// the backup has what it changed).
    pub fn handle_admin(&mut self, request: u64, cmd: AdminCommand, now: Duration) {
        let result = match self.admin(cmd, now) {
            Ok(r) => r,
            Err(e) => {
                tracing::info!("admin request refused: {e}");
                AdminResult::Refused(e)
            }
        };
        let reply = Action::AdminReply { request, result };
        if self.role == Role::Backup || self.is_switching() {
            // Nothing changed, and a backup commits nothing nor does a primary handing over
            // step: answer at once.
            self.actions.push_back(reply);
            return;
        }
        self.commit_actions.push(reply);
        self.step(now);
    }

    /// The settings of room `name`, while it exists.
    pub fn room_settings(&self, name: &str) -> Option<&RoomSettings> {
        self.rooms.get(name).map(|r| &r.record.settings)
    }

    /// The server's participant limit per room ([`crate::Config::max_participants`]).
    pub fn max_participants(&self) -> usize {
        self.cfg.max_participants
    }

    /// The server's video layout of rooms that set none ([`crate::Config::video_layout`]).
    pub fn video_layout(&self) -> VideoLayout {
        self.cfg.video_layout
    }

    /// Whether participant `id` (a call or a WebRTC participant) is muted.
    pub fn is_muted(&self, id: u64) -> bool {
        self.calls.get(&id).is_some_and(|c| c.muted) || self.peers.get(&id).is_some_and(|p| p.muted)
    }

    fn admin(&mut self, cmd: AdminCommand, now: Duration) -> Result<AdminResult, AdminError> {
        // A primary handing over decides nothing more: its backup serves from the last
        // replicated step (the operator asks the new primary).
        if self.role == Role::Backup || self.is_switching() {
            return Err(AdminError::NotServing);
        }
        match cmd {
            AdminCommand::Mute { room, id, muted } => {
                let rid = self.member_of(&room, id)?;
                let changed = if let Some(c) = self.calls.get_mut(&id) {
                    let changed = c.muted != muted;
                    c.muted = muted;
                    self.dirty_calls.insert(id);
                    changed
                } else if let Some(p) = self.peers.get_mut(&id) {
                    let changed = p.muted != muted;
                    p.muted = muted;
                    self.dirty_peers.insert(id);
                    changed
                } else {
                    return Err(AdminError::UnknownParticipant);
                };
                if changed {
                    tracing::info!(id, room = %room.escape_debug(), muted, "operator: mute");
                    self.actions.push_back(Action::Room(RoomCommand::Mute {
                        room: rid,
                        call: id,
                        muted,
                    }));
                }
                Ok(AdminResult::Muted { room, id, muted })
            }
            AdminCommand::Kick { room, id } => {
                self.member_of(&room, id)?;
                tracing::info!(id, room = %room.escape_debug(), "operator: kick");
                if self.peers.contains_key(&id) {
                    if let Some(request) = self.whip_pending.remove(&id) {
                        self.actions.push_back(Action::WhipReply {
                            request,
                            result: WhipResult::Refused {
                                status: 403,
                                reason: "removed by the operator".into(),
                            },
                        });
                    }
                    self.forget_peer(id);
                } else {
                    self.kick_call(id, now);
                }
                Ok(AdminResult::Kicked { room, id })
            }
            AdminCommand::Settings { room, change } => {
                let server_max = self.cfg.max_participants;
                if change
                    .max_participants
                    .is_some_and(|m| !(1..=server_max).contains(&m))
                {
                    return Err(AdminError::InvalidMaxParticipants { server_max });
                }
                let r = self.rooms.get_mut(&room).ok_or(AdminError::UnknownRoom)?;
                let mut s = r.record.settings.clone();
                if let Some(l) = change.locked {
                    s.locked = l;
                }
                if let Some(m) = change.max_participants {
                    s.max_participants = Some(m);
                }
                if let Some(l) = change.layout {
                    s.layout = Some(l);
                }
                let layout_default = self.cfg.video_layout;
                let layout = s.layout(layout_default);
                if s != r.record.settings {
                    tracing::info!(room = %room.escape_debug(), locked = s.locked, max = ?s.max_participants, %layout, "operator: room settings");
                    if layout != r.record.settings.layout(layout_default) {
                        self.actions.push_back(Action::Room(RoomCommand::Layout {
                            room: r.record.id,
                            layout,
                        }));
                    }
                    r.record.settings = s.clone();
                    self.room_items
                        .push(crate::schema::Item::Room(r.record.clone()));
                }
                let max_participants = s.limit(server_max);
                Ok(AdminResult::Settings {
                    room,
                    settings: s,
                    max_participants,
                    layout,
                })
            }
        }
    }

    /// The id of room `room` if `id` is one of its participants (joined or joining).
    fn member_of(&self, room: &str, id: u64) -> Result<u64, AdminError> {
        let r = self.rooms.get(room).ok_or(AdminError::UnknownRoom)?;
        if !r.members.contains(&id) {
            return Err(AdminError::UnknownParticipant);
        }
        Ok(r.record.id)
    }

    /// Hang up a call as the operator asked: BYE when it is answered; 480 to its INVITE when
    /// not yet; a call whose 200 waits for the ACK leaves its room now and gets its BYE once
    /// the ACK arrives (a UAS may not send BYE before).
    fn kick_call(&mut self, call: u64, now: Duration) {
        if self.hangup(call, now) {
            return;
        }
        let rejected = self
            .sip_mut()
            .is_some_and(|sip| sip.reject(CallHandle(call), 480, now).is_ok());
        if rejected {
            return;
        }
        if let Some(rec) = self.calls.get_mut(&call) {
            if !rec.confirmed {
                rec.kicked = true;
                self.dirty_calls.insert(call);
            }
        }
        self.leave_room(call);
    }
}
