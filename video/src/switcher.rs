//! The voice-switched forwarder of one room.
//!
//! # Who sees whom
//!
//! Every receiver has a target: the speaker (set by the driver from the audio mixer's
//! dominant speaker), except the speaker, who sees the previous speaker; nobody sees
//! himself. Before any speaker (or when the rule gives nobody) a receiver keeps its target,
//! or gets the first source (lowest id). A speaker who is not a video source (audio-only)
//! changes nothing.
//!
//! A pinned source ([`Switcher::set_pinned`]: the room's composed grid, a virtual source of
//! the driver's) overrides that rule: every receiver but the pinned source itself targets
//! it, whoever speaks. Unpinned, the receivers return to the speaker rule (one without a
//! speaker-rule target keeps its target, as always).
//!
//! # Switching
//!
//! When a receiver's target changes, the new source is asked for a keyframe at once and
//! the receiver keeps getting the old source until a packet that starts a keyframe of the
//! target arrives; it switches on that packet. The new [`Mapping`] continues the receiver's
//! stream: sequence number = last sent + 1; timestamp = last sent + the time since the last
//! frame was sent x 90 kHz (at least 1); picture ID and TL0PICIDX = last sent + 1. Older
//! packets of the new source (reordered before its keyframe) are not forwarded, the old
//! source's packets no longer are: the receiver never sees a sequence number twice nor go
//! back. A source restarting its stream (new SSRC, sequence jump) is re-synced the same
//! way: its viewers wait for its next keyframe.
//!
//! # Keyframe requests
//!
//! FIR when the source negotiated `ccm fir`, else PLI; at most one per
//! `keyframe_request_interval` per source. A request asked for within the interval is
//! deferred to its end and dropped if a keyframe arrives first (so a storm of PLIs from
//! receivers costs the source a handful of requests). A switch still waiting after
//! `keyframe_retry` asks again. A promoted standby asks every source at once, and again
//! every `keyframe_request_interval` (up to 5 times) until its keyframe comes. A receiver's
//! own PLI or FIR goes to the source it is shown.
//!
//! # Retransmissions
//!
//! One cache per source (the last `cache_packets` packets, at most `cache_max_age` old,
//! packets up to 1500 octets) plus, per receiver, its current and last 4 mappings. A
//! receiver's NACK is answered by mapping the sequence number back to the source packet and
//! rewriting it again, which gives the bytes the receiver was (or would have been) sent.
//! Memory is bounded per source, not per receiver. A receiver gets at most 1024
//! retransmissions per second. A NACKed packet of the current mapping that never reached us
//! is asked from the source (when it negotiated `nack`), each sequence number at most once
//! per 100 ms. When such a packet cannot be had (the source did not negotiate `nack`, or the
//! receiver NACKs it again within those 100 ms: the source does not retransmit, or the
//! packet was lost in a takeover's gap), the source is asked for a keyframe (within the
//! rate limit above): the receiver's picture is repaired without waiting for its own PLI,
//! which Chromium sends only after seconds of undecodable frames.
//!
//! # Bandwidth
//!
//! Every `remb_interval`, each source whose viewers sent REMB estimates (fresher than
//! `remb_max_age`) gets a REMB with their minimum.

use crate::feedback::{self, Feedback};
use crate::rtp::{write_header, Rtp};
use crate::seed::{splitmix64, stream_origins, Origins};
use crate::snapshot::{
    Mapping, ParticipantSnapshot, Position, ReceiverSnapshot, SourceSnapshot, SwitcherSnapshot,
    SNAPSHOT_FORMAT,
};
use crate::source::{Cached, SeqCheck, Source};
use crate::vp8::{self, Descriptor, PICTURE_ID_MODULUS};
use crate::{
    Error, Output, ParticipantId, ParticipantStats, SwitcherConfig, SwitcherStats, VideoParams,
};
use bytes::Bytes;
use rtc_rtcp::packet::Packet;
use rtc_rtcp::sender_report::SenderReport;
use rtc_rtcp::source_description::{
    SdesType, SourceDescription, SourceDescriptionChunk, SourceDescriptionItem,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// After a switch, source packets older than the switch's are not forwarded, until the
/// mapping has forwarded [`GUARD_PACKETS`] packets (from then on the source's sequence
/// window refuses anything that old) or for at most this long (sequence numbers are
/// compared modulo 2^16, unambiguous as long as a source sends fewer than 32768 packets in
/// this time; a standby resuming an old mapping has no count to go by).
const EPOCH_GUARD: Duration = Duration::from_secs(5);
/// See [`EPOCH_GUARD`]: the source's sequence window.
const GUARD_PACKETS: u64 = crate::source::WINDOW as u64;
/// Previous mappings kept per receiver for NACKs.
const MAX_HISTORY: usize = 4;
/// Sequence numbers of one NACK datagram looked at.
const MAX_NACK_SEQS: usize = 512;
/// Retransmissions per receiver and second.
const RESEND_BUDGET: u32 = 1024;
/// Takeover reserves (see the snapshot module): below 2^15 and 2^14.
const MAX_SEQ_RESERVE: u64 = 30_000;
/// After a takeover, how many times a source that has not sent its keyframe is asked again
/// (one per `keyframe_request_interval`): about 1.5 s at the default interval.
const RESUME_RETRIES: u8 = 5;
const MAX_PIC_RESERVE: u64 = 16_000;

/// 90 kHz clock ticks in `d` (capped below 2^31 so that a jump still reads as forward).
fn ticks_90k(d: Duration) -> u32 {
    (d.as_nanos() * 9 / 100_000).min((1 << 31) - 1) as u32
}

/// 64-bit NTP time of `now`, given the NTP time of `now == 0`.
fn ntp_at(origin: u64, now: Duration) -> u64 {
    let secs = now.as_secs() << 32;
    let frac = ((now.subsec_nanos() as u64) << 32) / 1_000_000_000;
    origin.wrapping_add(secs + frac)
}

/// `a` is after `b` modulo 2^16.
fn seq_after(a: u16, b: u16) -> bool {
    (a.wrapping_sub(b) as i16) > 0
}

/// A mapping in use (or in a receiver's history).
#[derive(Debug, Clone)]
struct Epoch {
    map: Mapping,
    /// The source's stream generation it was made for.
    generation: u32,
    /// Highest output sequence number sent on it, and how many packets.
    last_seq: u16,
    forwarded: u64,
}

impl Epoch {
    /// Whether output sequence number `seq` was sent (or skipped) on this mapping.
    fn covers(&self, seq: u16) -> bool {
        let behind = u64::from(self.last_seq.wrapping_sub(seq));
        self.forwarded > 0 && behind < self.forwarded.min(0x8000)
    }
}

/// A receiver resumed from a snapshot, until its first forwarded packet.
#[derive(Debug, Clone, Copy)]
struct Resume {
    /// The takeover reserve was capped: the floor in `last` is not a bound.
    stale: bool,
}

#[derive(Debug)]
struct Receiver {
    origins: Origins,
    epoch: Option<Epoch>,
    history: VecDeque<Epoch>,
    target: Option<ParticipantId>,
    pending_since: Option<Duration>,
    last: Position,
    resume: Option<Resume>,
    /// Last FIR sequence number received from it.
    fir_in: Option<u8>,
    remb: Option<(u64, Duration)>,
    packets_sent: u64,
    octets_sent: u64,
    next_sr_at: Duration,
    /// Retransmission budget: window start and count.
    resent: (Duration, u32),
}

impl Receiver {
    fn new(origins: Origins, now: Duration, sr_interval: Duration) -> Receiver {
        Receiver {
            origins,
            epoch: None,
            history: VecDeque::new(),
            target: None,
            pending_since: None,
            last: Position {
                seq: origins.seq.wrapping_sub(1),
                timestamp: origins.timestamp,
                timestamp_at: now,
                picture_id: origins.picture_id.wrapping_sub(1) & (PICTURE_ID_MODULUS - 1),
                tl0_pic_idx: origins.tl0_pic_idx.wrapping_sub(1),
                at: now,
                sent: false,
            },
            resume: None,
            fir_in: None,
            remb: None,
            packets_sent: 0,
            octets_sent: 0,
            next_sr_at: now.saturating_add(sr_interval),
            resent: (now, 0),
        }
    }

    /// Record an output packet's values as the newest where they are.
    fn observe(&mut self, out: &OutValues, now: Duration, exact: bool) {
        let l = &mut self.last;
        if exact || !l.sent {
            l.seq = out.seq;
            l.timestamp = out.timestamp;
            l.timestamp_at = now;
            l.picture_id = out.picture_id.unwrap_or(l.picture_id);
            l.tl0_pic_idx = out.tl0_pic_idx.unwrap_or(l.tl0_pic_idx);
            l.sent = true;
        } else {
            if seq_after(out.seq, l.seq) {
                l.seq = out.seq;
            }
            if (out.timestamp.wrapping_sub(l.timestamp) as i32) > 0 {
                l.timestamp = out.timestamp;
                l.timestamp_at = now;
            }
            if let Some(p) = out.picture_id {
                let d = p.wrapping_sub(l.picture_id) & (PICTURE_ID_MODULUS - 1);
                if (1..PICTURE_ID_MODULUS / 2).contains(&d) {
                    l.picture_id = p;
                }
            }
            if let Some(t) = out.tl0_pic_idx {
                if (t.wrapping_sub(l.tl0_pic_idx) as i8) > 0 {
                    l.tl0_pic_idx = t;
                }
            }
        }
        l.at = now;
    }

    /// Stop forwarding (the participant put its video on hold): its mapping goes to the
    /// history (NACKs for what it got are still answered); forwarding resumes with a new
    /// mapping at the next keyframe, continuing its sequence numbers.
    fn pause(&mut self) {
        if let Some(old) = self.epoch.take() {
            if self.history.len() == MAX_HISTORY {
                self.history.pop_front();
            }
            self.history.push_back(old);
        }
        self.target = None;
        self.pending_since = None;
    }

    /// Start a new mapping at the keyframe packet `inc` of `source`.
    fn switch(&mut self, source: ParticipantId, inc: &Incoming, now: Duration) {
        let l = self.last;
        let first_seq = l.seq.wrapping_add(1);
        let first_timestamp = if l.sent {
            l.timestamp
                .wrapping_add(ticks_90k(now.saturating_sub(l.timestamp_at)).max(1))
        } else {
            self.origins.timestamp
        };
        let first_picture_id = l.picture_id.wrapping_add(1) & (PICTURE_ID_MODULUS - 1);
        let first_tl0_pic_idx = l.tl0_pic_idx.wrapping_add(1);
        let map = Mapping {
            source,
            source_ssrc: inc.rtp.ssrc,
            started_at: now,
            first_source_seq: inc.rtp.seq,
            first_seq,
            first_timestamp,
            first_picture_id,
            first_tl0_pic_idx,
            seq_offset: first_seq.wrapping_sub(inc.rtp.seq),
            timestamp_offset: first_timestamp.wrapping_sub(inc.rtp.timestamp),
            picture_id_offset: inc.pic_ext.map_or(0, |x| {
                first_picture_id.wrapping_sub(x as u16) & (PICTURE_ID_MODULUS - 1)
            }),
            tl0_offset: inc
                .desc
                .tl0_pic_idx
                .map_or(0, |t| first_tl0_pic_idx.wrapping_sub(t)),
        };
        let new = Epoch {
            map,
            generation: inc.generation,
            last_seq: first_seq,
            forwarded: 0,
        };
        if let Some(old) = self.epoch.replace(new) {
            if self.history.len() == MAX_HISTORY {
                self.history.pop_front();
            }
            self.history.push_back(old);
        }
        self.pending_since = None;
        self.resume = None;
    }
}

#[derive(Debug)]
struct Participant {
    params: VideoParams,
    /// Our SSRC towards it: output stream and feedback sender.
    ssrc: u32,
    source: Option<Source>,
    receiver: Option<Receiver>,
    stats: ParticipantStats,
}

/// A valid incoming VP8 packet.
struct Incoming<'a> {
    rtp: Rtp,
    desc: Descriptor,
    data: &'a [u8],
    pic_ext: Option<u64>,
    generation: u32,
}

/// The rewritten values of one output packet.
struct OutValues {
    seq: u16,
    timestamp: u32,
    picture_id: Option<u16>,
    tl0_pic_idx: Option<u8>,
}

/// The output packet for `inc` under mapping `m` to a receiver with `payload_type`, `ssrc`.
fn build(
    m: &Mapping,
    payload_type: u8,
    ssrc: u32,
    rtp: &Rtp,
    desc: &Descriptor,
    data: &[u8],
    pic_ext: Option<u64>,
) -> (Vec<u8>, OutValues) {
    let v = OutValues {
        seq: rtp.seq.wrapping_add(m.seq_offset),
        timestamp: rtp.timestamp.wrapping_add(m.timestamp_offset),
        picture_id: pic_ext
            .map(|x| (x as u16).wrapping_add(m.picture_id_offset) & (PICTURE_ID_MODULUS - 1)),
        tl0_pic_idx: desc.tl0_pic_idx.map(|t| t.wrapping_add(m.tl0_offset)),
    };
    let d = vp8::rewritten(desc, v.picture_id, v.tl0_pic_idx);
    let mut out = Vec::with_capacity(12 + d.len + data.len());
    write_header(&mut out, rtp.marker, payload_type, v.seq, v.timestamp, ssrc);
    d.write(&mut out);
    out.extend_from_slice(data);
    (out, v)
}

fn validate(params: &VideoParams) -> Result<(), Error> {
    if params.payload_type > 127 {
        return Err(Error::InvalidParams(format!(
            "payload type {} > 127",
            params.payload_type
        )));
    }
    Ok(())
}

/// The voice-switched video forwarder of one room (see the module docs for its rules).
///
/// Method families: configuration (`new`, `add_participant`, `remove_participant`,
/// `set_speaker`, `set_pinned`), inputs (`handle_rtp`, `handle_rtcp`, `handle_timeout`,
/// `request_keyframe_from`), outputs (`poll_output`, `poll_timeout`), getters (`stats`,
/// `room_stats`, `speaker`, `pinned`, `output_ssrc`), hot-standby takeover (`state_version`, `export_state`, `from_snapshot`,
/// see [`crate::snapshot`]). After every call, drain `poll_output` until `None`. `Switcher`
/// is `Send` (one task per room).
pub struct Switcher {
    config: SwitcherConfig,
    cname: String,
    participants: BTreeMap<ParticipantId, Participant>,
    speaker: Option<ParticipantId>,
    previous_speaker: Option<ParticipantId>,
    /// The source every receiver is shown, whoever speaks.
    pinned: Option<ParticipantId>,
    outputs: VecDeque<Output>,
    state_version: u64,
    changed_at: Duration,
    /// Packets for unknown participants.
    dropped_unknown: u64,
}

impl Switcher {
    /// New empty room.
    pub fn new(config: SwitcherConfig) -> Switcher {
        // The audio mixer's CNAME for the same seed: a receiver groups both streams.
        let cname = format!("understudy-{:016x}", splitmix64(config.seed));
        Switcher {
            config,
            cname,
            participants: BTreeMap::new(),
            speaker: None,
            previous_speaker: None,
            pinned: None,
            outputs: VecDeque::new(),
            state_version: 0,
            changed_at: Duration::ZERO,
            dropped_unknown: 0,
        }
    }

    fn bump(&mut self, now: Duration) {
        self.state_version += 1;
        self.changed_at = now;
    }

    fn make_participant(
        &self,
        id: ParticipantId,
        params: VideoParams,
        now: Duration,
    ) -> Participant {
        let origins = stream_origins(self.config.seed, id);
        Participant {
            ssrc: origins.ssrc,
            source: params.recv.then(|| {
                Source::new(
                    params.source_ssrc,
                    self.config.cache_packets,
                    now.saturating_add(self.config.remb_interval),
                )
            }),
            receiver: params
                .send
                .then(|| Receiver::new(origins, now, self.config.sr_interval)),
            stats: ParticipantStats {
                ssrc_out: origins.ssrc,
                ssrc_in: params.source_ssrc,
                ..Default::default()
            },
            params,
        }
    }

    /// Add a participant; returns the SSRC of its output stream (drawn from the seed, see
    /// [`crate::stream_origins`]). A new receiver gets a target at once (and the target is
    /// asked for a keyframe). An id removed and added again gets the same SSRC and starts
    /// from the same origins: reuse an id only for a new call leg.
    pub fn add_participant(
        &mut self,
        id: ParticipantId,
        params: VideoParams,
        now: Duration,
    ) -> Result<u32, Error> {
        if self.participants.contains_key(&id) {
            return Err(Error::DuplicateParticipant(id));
        }
        validate(&params)?;
        let p = self.make_participant(id, params, now);
        let ssrc = p.ssrc;
        self.participants.insert(id, p);
        self.bump(now);
        self.retarget_and_ask(now);
        Ok(ssrc)
    }

    /// A participant's video changed (a re-INVITE: hold or resume, another payload type,
    /// other feedback). Its output stream stays the same one: a receiver on hold
    /// (`send` false) is sent nothing and, when resumed, gets the next keyframe of what it
    /// should see with its sequence numbers continuing where they stopped; a source that
    /// stops sending (`recv` false) is shown to nobody until it sends again. Nothing
    /// changes for its viewers' streams either.
    pub fn update_participant(
        &mut self,
        id: ParticipantId,
        params: VideoParams,
        now: Duration,
    ) -> Result<(), Error> {
        validate(&params)?;
        let (cache, remb, sr) = (
            self.config.cache_packets,
            self.config.remb_interval,
            self.config.sr_interval,
        );
        let origins = stream_origins(self.config.seed, id);
        let p = self
            .participants
            .get_mut(&id)
            .ok_or(Error::UnknownParticipant(id))?;
        if p.params == params {
            return Ok(());
        }
        if params.recv && p.source.is_none() {
            p.source = Some(Source::new(
                params.source_ssrc,
                cache,
                now.saturating_add(remb),
            ));
        }
        if params.send && p.receiver.is_none() {
            p.receiver = Some(Receiver::new(origins, now, sr));
        }
        if !params.send {
            if let Some(r) = p.receiver.as_mut() {
                r.pause();
                p.stats.showing = None;
                p.stats.target = None;
            }
        }
        p.params = VideoParams {
            source_ssrc: params.source_ssrc.or(p.params.source_ssrc),
            ..params
        };
        self.bump(now);
        self.retarget_and_ask(now);
        Ok(())
    }

    /// Remove a participant. If it was the speaker, the previous speaker becomes the
    /// speaker again; its viewers switch (at the next keyframe of their new target).
    pub fn remove_participant(&mut self, id: ParticipantId, now: Duration) -> Result<(), Error> {
        self.participants
            .remove(&id)
            .ok_or(Error::UnknownParticipant(id))?;
        // Its viewers' mappings die with it (a participant rejoining under the same id is a
        // new stream): they wait for their next target's keyframe.
        for r in self
            .participants
            .values_mut()
            .filter_map(|p| p.receiver.as_mut())
        {
            if r.epoch.as_ref().is_some_and(|e| e.map.source == id) {
                r.epoch = None;
            }
            r.history.retain(|e| e.map.source != id);
        }
        if self.speaker == Some(id) {
            self.speaker = self.previous_speaker.take();
        } else if self.previous_speaker == Some(id) {
            self.previous_speaker = None;
        }
        if self.pinned == Some(id) {
            self.pinned = None;
        }
        self.bump(now);
        self.retarget_and_ask(now);
        Ok(())
    }

    /// The audio mixer's dominant speaker changed to `id`. Ignored (not an error) when `id`
    /// sends no video: the receivers keep what they see.
    pub fn set_speaker(&mut self, id: ParticipantId, now: Duration) -> Result<(), Error> {
        let p = self
            .participants
            .get(&id)
            .ok_or(Error::UnknownParticipant(id))?;
        if p.source.is_none() || !p.params.recv || self.speaker == Some(id) {
            return Ok(());
        }
        self.previous_speaker = self.speaker;
        self.speaker = Some(id);
        self.bump(now);
        self.retarget_and_ask(now);
        Ok(())
    }

    /// Show every receiver source `id` whoever speaks (`None`: back to the speaker rule).
    /// The receivers switch as on a speaker change: at the pinned source's next keyframe,
    /// asked for at once, their streams continuing. The pinned source itself (if it is also
    /// a receiver) keeps the speaker rule. Removing the participant unpins it.
    ///
    /// For a room's composed grid: the driver adds the grid's output as a source-only
    /// participant and pins it; its keyframe requests (an [`Output::Rtcp`] to that
    /// participant) go to the grid's encoder.
    pub fn set_pinned(&mut self, id: Option<ParticipantId>, now: Duration) -> Result<(), Error> {
        if let Some(id) = id {
            let p = self
                .participants
                .get(&id)
                .ok_or(Error::UnknownParticipant(id))?;
            if p.source.is_none() {
                return Err(Error::InvalidParams(format!(
                    "participant {id} is not a source: it cannot be pinned"
                )));
            }
        }
        if self.pinned == id {
            return Ok(());
        }
        self.pinned = id;
        self.bump(now);
        self.retarget_and_ask(now);
        Ok(())
    }

    /// The source every receiver is shown ([`Switcher::set_pinned`]), if any.
    pub fn pinned(&self) -> Option<ParticipantId> {
        self.pinned
    }

    /// Ask source `id` for a keyframe on the driver's behalf (e.g. the grid compositor
    /// lost a packet of it): FIR with the next sequence number or PLI as it negotiated,
    /// within the same rate limit as the switcher's own requests (a request within
    /// `keyframe_request_interval` of the last is deferred to its end, and dropped if a
    /// keyframe arrives first). Drain [`Switcher::poll_output`].
    pub fn request_keyframe_from(&mut self, id: ParticipantId, now: Duration) -> Result<(), Error> {
        let p = self
            .participants
            .get(&id)
            .ok_or(Error::UnknownParticipant(id))?;
        if p.source.is_none() {
            return Err(Error::InvalidParams(format!(
                "participant {id} is not a source"
            )));
        }
        self.request_keyframe(id, now);
        Ok(())
    }

    /// Recompute every receiver's target and pending state, and ask the sources that now
    /// have viewers waiting for a keyframe.
    fn retarget_and_ask(&mut self, now: Duration) {
        for sid in self.retarget(now) {
            self.request_keyframe(sid, now);
        }
    }

    /// Recompute every receiver's target and pending state; returns the sources that now
    /// have viewers waiting for their keyframe.
    fn retarget(&mut self, now: Duration) -> BTreeSet<ParticipantId> {
        let sources: BTreeMap<ParticipantId, u32> = self
            .participants
            .iter()
            .filter(|(_, p)| p.params.recv)
            .filter_map(|(&id, p)| p.source.as_ref().map(|s| (id, s.generation)))
            .collect();
        let (speaker, previous) = (self.speaker, self.previous_speaker);
        let pinned = self.pinned.filter(|p| sources.contains_key(p));
        let mut changed = false;
        let mut ask = BTreeSet::new();
        for (&rid, p) in self.participants.iter_mut() {
            let Some(r) = p.receiver.as_mut() else {
                continue;
            };
            if !p.params.send {
                continue; // on hold: nothing to show it
            }
            let is_src = |s: &ParticipantId| *s != rid && sources.contains_key(s);
            let by_speech = match speaker {
                Some(s) if is_src(&s) => Some(s),
                Some(s) if s == rid => previous.filter(is_src),
                _ => None,
            };
            let desired = pinned
                .filter(is_src)
                .or(by_speech)
                .or(r.target.filter(is_src))
                .or_else(|| sources.keys().copied().find(|s| *s != rid));
            let shows = |t: ParticipantId| {
                r.epoch
                    .as_ref()
                    .is_some_and(|e| e.map.source == t && sources.get(&t) == Some(&e.generation))
            };
            let needs = desired.filter(|&t| !shows(t));
            if desired != r.target {
                r.target = desired;
                r.pending_since = needs.map(|_| now);
                changed = true;
            } else if needs.is_some() != r.pending_since.is_some() {
                r.pending_since = needs.map(|_| now);
                changed = true;
            } else {
                continue;
            }
            ask.extend(needs);
            p.stats.target = desired;
        }
        if changed {
            self.bump(now);
        }
        ask
    }

    /// Ask source `sid` for a keyframe, within the rate limit (else deferred).
    fn request_keyframe(&mut self, sid: ParticipantId, now: Duration) {
        let interval = self.config.keyframe_request_interval;
        let Some(p) = self.participants.get_mut(&sid) else {
            return;
        };
        let Some(src) = p.source.as_mut() else {
            return;
        };
        let limited = src
            .last_request_at
            .is_some_and(|t| now < t.saturating_add(interval));
        if limited || src.ssrc.is_none() {
            if limited {
                p.stats.keyframe_requests_suppressed += 1;
            }
            src.deferred = true;
            return;
        }
        Self::send_request(p, sid, now, &mut self.outputs);
    }

    fn send_request(
        p: &mut Participant,
        sid: ParticipantId,
        now: Duration,
        outputs: &mut VecDeque<Output>,
    ) {
        let Some(src) = p.source.as_mut() else {
            return;
        };
        let Some(ssrc) = src.ssrc else {
            return;
        };
        let packet = if p.params.fir {
            feedback::fir(p.ssrc, ssrc, src.fir.next_request())
        } else {
            feedback::pli(p.ssrc, ssrc)
        };
        outputs.push_back(Output::Rtcp { to: sid, packet });
        src.last_request_at = Some(now);
        src.deferred = false;
        src.awaiting_keyframe = true;
        p.stats.keyframe_requests_sent += 1;
    }

    /// An RTP datagram arrived from participant `id` at `now`. Its VP8 packet is rewritten
    /// and queued for every receiver shown `id` (and switches the receivers waiting for a
    /// keyframe of `id` when it starts one). Garbage (not RTP, another payload type, no or a
    /// truncated VP8 descriptor, a participant that is not a source) is dropped and
    /// counted, never an error. A packet with a new SSRC is believed when it starts a
    /// keyframe or when the next one follows it; the source's viewers then re-sync at its
    /// next keyframe (the same for a confirmed sequence number jump).
    pub fn handle_rtp(&mut self, id: ParticipantId, packet: &[u8], now: Duration) {
        let cache_max_age = self.config.cache_max_age;
        let Some(p) = self.participants.get_mut(&id) else {
            self.dropped_unknown += 1;
            return;
        };
        let Some(src) = p.source.as_mut() else {
            p.stats.dropped_invalid += 1;
            return;
        };
        let Some(rtp) = Rtp::parse(packet) else {
            p.stats.dropped_invalid += 1;
            return;
        };
        let payload = rtp.payload(packet);
        let desc = match Descriptor::parse(payload) {
            Ok(d) if rtp.payload_type == p.params.payload_type => d,
            _ => {
                p.stats.dropped_invalid += 1;
                return;
            }
        };
        let data = &payload[desc.len..];
        let keyframe = desc.starts_frame() && vp8::is_keyframe_data(data);
        let mut restarted = false;
        match src.ssrc {
            Some(s) if s == rtp.ssrc => {}
            None => {
                src.restart(rtp.ssrc);
                restarted = true;
            }
            Some(_) => {
                if keyframe || src.probation == Some((rtp.ssrc, rtp.seq)) {
                    src.restart(rtp.ssrc);
                    restarted = true;
                } else {
                    src.probation = Some((rtp.ssrc, rtp.seq.wrapping_add(1)));
                    p.stats.dropped_late += 1;
                    return;
                }
            }
        }
        match src.window.check(rtp.seq, keyframe) {
            SeqCheck::New => {}
            SeqCheck::Restart => {
                src.restart_sequence();
                restarted = true;
            }
            SeqCheck::Duplicate | SeqCheck::Probation => {
                p.stats.dropped_late += 1;
                return;
            }
        }
        let pic_ext = desc
            .picture_id
            .map(|v| src.unwrap_picture_id(v, desc.long_picture_id));
        p.stats.packets_in += 1;
        p.stats.ssrc_in = Some(rtp.ssrc);
        if keyframe {
            p.stats.keyframes_in += 1;
            src.deferred = false;
            src.awaiting_keyframe = false;
            src.resume_retries = 0;
        }
        let generation = src.generation;
        if packet.len() <= crate::source::MAX_CACHED_PACKET {
            src.cache_put(
                Cached {
                    seq: rtp.seq,
                    ssrc: rtp.ssrc,
                    generation,
                    at: now,
                    pic_ext,
                    packet: Bytes::copy_from_slice(packet),
                },
                cache_max_age,
            );
        }
        if restarted {
            // Viewers of the old stream now wait for this source's keyframe (asked below,
            // unless this packet is one).
            self.bump(now);
            let _ = self.retarget(now);
        }
        let inc = Incoming {
            rtp,
            desc,
            data,
            pic_ext,
            generation,
        };
        let mut switched = false;
        for (&rid, rp) in self.participants.iter_mut() {
            if rid == id {
                continue;
            }
            let Some(r) = rp.receiver.as_mut() else {
                continue;
            };
            if keyframe && r.pending_since.is_some() && r.target == Some(id) {
                r.switch(id, &inc, now);
                rp.stats.switches += 1;
                rp.stats.showing = Some(id);
                switched = true;
            }
            let Some(e) = r.epoch.as_mut() else {
                continue;
            };
            if e.map.source != id || e.generation != generation || e.map.source_ssrc != rtp.ssrc {
                continue;
            }
            if e.forwarded <= GUARD_PACKETS
                && now.saturating_sub(e.map.started_at) < EPOCH_GUARD
                && seq_after(e.map.first_source_seq, rtp.seq)
            {
                continue; // older than the switch: its sequence numbers are taken
            }
            let resume = r.resume.take();
            if resume.is_some() && !inc.desc.long_picture_id {
                if let Some(x) = inc.pic_ext {
                    // 7-bit source after takeover: move the picture IDs ahead of the floor by
                    // a multiple of 128 (see the snapshot module).
                    let out =
                        (x as u16).wrapping_add(e.map.picture_id_offset) & (PICTURE_ID_MODULUS - 1);
                    let want =
                        r.last.picture_id.wrapping_add(1).wrapping_add(
                            out.wrapping_sub(r.last.picture_id.wrapping_add(1)) & 0x7F,
                        ) & (PICTURE_ID_MODULUS - 1);
                    e.map.picture_id_offset =
                        e.map.picture_id_offset.wrapping_add(want.wrapping_sub(out))
                            & (PICTURE_ID_MODULUS - 1);
                }
            }
            let (out, v) = build(
                &e.map,
                rp.params.payload_type,
                rp.ssrc,
                &inc.rtp,
                &inc.desc,
                inc.data,
                inc.pic_ext,
            );
            if e.forwarded == 0 || seq_after(v.seq, e.last_seq) {
                e.last_seq = v.seq;
            }
            e.forwarded += 1;
            r.observe(&v, now, resume.is_some_and(|s| s.stale));
            r.packets_sent += 1;
            r.octets_sent += (out.len() - 12) as u64;
            rp.stats.packets_out += 1;
            rp.stats.octets_out += (out.len() - 12) as u64;
            self.outputs.push_back(Output::Rtp {
                to: rid,
                packet: out,
            });
        }
        if switched {
            self.bump(now);
        }
        if restarted && !keyframe {
            let waiting = self.participants.values().any(|q| {
                q.receiver
                    .as_ref()
                    .is_some_and(|r| r.pending_since.is_some() && r.target == Some(id))
            });
            if waiting {
                self.request_keyframe(id, now);
            }
        }
    }

    /// An RTCP datagram arrived from participant `id` at `now`. Acted on: PLI and new FIRs
    /// about our stream to it (a keyframe request to the source it is shown), generic NACK
    /// (retransmissions), REMB covering our stream (its bandwidth estimate). Reports and
    /// everything else are ignored; malformed RTCP is counted, never an error.
    pub fn handle_rtcp(&mut self, id: ParticipantId, packet: &[u8], now: Duration) {
        let Some(p) = self.participants.get_mut(&id) else {
            self.dropped_unknown += 1;
            return;
        };
        let fbs = match feedback::parse(packet) {
            Ok(f) => f,
            Err(_) => {
                p.stats.rtcp_invalid += 1;
                return;
            }
        };
        let ours = p.ssrc;
        let Some(r) = p.receiver.as_mut() else {
            p.stats.rtcp_ignored += fbs.len() as u64;
            return;
        };
        let shown = r.epoch.as_ref().map(|e| e.map.source);
        let mut ask = false;
        let mut nacked: Vec<u16> = Vec::new();
        for fb in fbs {
            match fb {
                Feedback::Pli { media_ssrc, .. } if media_ssrc == ours => ask = true,
                Feedback::Fir {
                    target_ssrc, seq, ..
                } if target_ssrc == ours => {
                    if r.fir_in == Some(seq) {
                        p.stats.rtcp_ignored += 1; // a retransmission of the last one
                    } else {
                        r.fir_in = Some(seq);
                        ask = true;
                    }
                }
                Feedback::Nack {
                    media_ssrc, lost, ..
                } if media_ssrc == ours => {
                    for s in lost {
                        if nacked.len() < MAX_NACK_SEQS && !nacked.contains(&s) {
                            nacked.push(s);
                        }
                    }
                }
                Feedback::Remb {
                    bitrate_bps, ssrcs, ..
                } if ssrcs.contains(&ours) => {
                    r.remb = Some((bitrate_bps, now));
                    p.stats.remb_bps = Some(bitrate_bps);
                }
                _ => p.stats.rtcp_ignored += 1,
            }
        }
        if ask {
            p.stats.keyframe_requests_in += 1;
            if let Some(sid) = shown {
                self.request_keyframe(sid, now);
            }
        }
        if !nacked.is_empty() {
            self.answer_nack(id, &nacked, now);
        }
    }

    /// Retransmit to receiver `rid` what it NACKed, from the sources' caches.
    fn answer_nack(&mut self, rid: ParticipantId, lost: &[u16], now: Duration) {
        let max_age = self.config.cache_max_age;
        let Some(p) = self.participants.get(&rid) else {
            return;
        };
        let Some(r) = p.receiver.as_ref() else {
            return;
        };
        let (pt, ssrc) = (p.params.payload_type, p.ssrc);
        let epochs: Vec<(Epoch, bool)> = r
            .epoch
            .iter()
            .map(|e| (e.clone(), true))
            .chain(r.history.iter().rev().map(|e| (e.clone(), false)))
            .collect();
        let mut budget = if now.saturating_sub(r.resent.0) >= Duration::from_secs(1) {
            (now, 0)
        } else {
            r.resent
        };
        let mut answers = Vec::new();
        let mut missed = 0u64;
        let mut upstream: BTreeMap<ParticipantId, Vec<u16>> = BTreeMap::new();
        // Sources whose current packets a receiver lacks for good: a keyframe repairs it.
        let mut repair: BTreeSet<ParticipantId> = BTreeSet::new();
        let current_map = r.epoch.as_ref().map(|e| (e.map.source, e.last_seq));
        for &o in lost {
            let Some((e, current)) = epochs.iter().find(|(e, _)| e.covers(o)) else {
                missed += 1;
                // Behind the current mapping but not sent on it by this node: a packet of
                // the gap before a takeover (the backup's mapping counts only what it
                // forwarded itself). Nothing can resend it.
                if let Some((source, last)) = current_map {
                    if last.wrapping_sub(o) < 0x8000 {
                        repair.insert(source);
                    }
                }
                continue;
            };
            let src_seq = o.wrapping_sub(e.map.seq_offset);
            let Some(sp) = self.participants.get(&e.map.source) else {
                missed += 1;
                continue;
            };
            let Some(src) = sp.source.as_ref() else {
                missed += 1;
                continue;
            };
            let cached = src.cache_get(src_seq, e.map.source_ssrc, e.generation, now, max_age);
            let built = cached.and_then(|c| {
                let rtp = Rtp::parse(&c.packet)?;
                let payload = rtp.payload(&c.packet);
                let desc = Descriptor::parse(payload).ok()?;
                Some(
                    build(
                        &e.map,
                        pt,
                        ssrc,
                        &rtp,
                        &desc,
                        &payload[desc.len..],
                        c.pic_ext,
                    )
                    .0,
                )
            });
            match built {
                Some(pkt) if budget.1 < RESEND_BUDGET => {
                    budget.1 += 1;
                    answers.push(pkt);
                }
                Some(_) => missed += 1,
                None => {
                    missed += 1;
                    let lost_upstream = *current
                        && sp.params.nack
                        && src.generation == e.generation
                        && src.ssrc == Some(e.map.source_ssrc)
                        && src.at_or_behind_highest(src_seq);
                    if lost_upstream {
                        upstream.entry(e.map.source).or_default().push(src_seq);
                    } else if *current {
                        repair.insert(e.map.source);
                    }
                }
            }
        }
        let Some(p) = self.participants.get_mut(&rid) else {
            return;
        };
        p.stats.nacked += lost.len() as u64;
        p.stats.nack_answered += answers.len() as u64;
        p.stats.nack_missed += missed;
        p.stats.packets_out += answers.len() as u64;
        if let Some(r) = p.receiver.as_mut() {
            r.resent = budget;
            r.packets_sent += answers.len() as u64;
        }
        for packet in answers {
            p.stats.octets_out += (packet.len() - 12) as u64;
            if let Some(r) = p.receiver.as_mut() {
                r.octets_sent += (packet.len() - 12) as u64;
            }
            self.outputs.push_back(Output::Rtp { to: rid, packet });
        }
        for (sid, mut seqs) in upstream {
            let Some(sp) = self.participants.get_mut(&sid) else {
                continue;
            };
            let our = sp.ssrc;
            let Some(src) = sp.source.as_mut() else {
                continue;
            };
            seqs.retain(|&s| !src.received(s));
            if src.filter_nacks(&mut seqs, now) {
                // Still NACKed long after the source was asked: it does not repair (no
                // retransmissions, or the packets were sent before a takeover).
                repair.insert(sid);
            }
            let Some(media) = src.ssrc else {
                continue;
            };
            if !seqs.is_empty() {
                sp.stats.nacks_sent += 1;
                self.outputs.push_back(Output::Rtcp {
                    to: sid,
                    packet: feedback::nack(our, media, &seqs),
                });
            }
        }
        for sid in repair {
            self.request_keyframe(sid, now);
        }
    }

    /// Run the timers due at `now`: deferred and retried keyframe requests, REMB to
    /// sources, sender reports to receivers.
    pub fn handle_timeout(&mut self, now: Duration) {
        let cfg = &self.config;
        let waiting: BTreeSet<ParticipantId> = self
            .participants
            .values()
            .filter_map(|p| p.receiver.as_ref())
            .filter(|r| r.pending_since.is_some())
            .filter_map(|r| r.target)
            .collect();
        let rembs = self.remb_minimums(now);
        for (&sid, p) in self.participants.iter_mut() {
            let our = p.ssrc;
            if let Some(src) = p.source.as_mut() {
                if src.ssrc.is_some() {
                    let last = src.last_request_at;
                    let deferred_due = src.deferred
                        && last
                            .is_none_or(|t| now >= t.saturating_add(cfg.keyframe_request_interval));
                    let retry_due = src.awaiting_keyframe
                        && waiting.contains(&sid)
                        && last.is_some_and(|t| now >= t.saturating_add(cfg.keyframe_retry));
                    let resume_due = src.awaiting_keyframe
                        && src.resume_retries > 0
                        && last.is_some_and(|t| {
                            now >= t.saturating_add(cfg.keyframe_request_interval)
                        });
                    if resume_due {
                        src.resume_retries -= 1;
                    }
                    if deferred_due || retry_due || resume_due {
                        Self::send_request(p, sid, now, &mut self.outputs);
                    }
                }
            }
            if let Some(src) = p.source.as_mut() {
                if now >= src.next_remb_at {
                    src.next_remb_at = now.saturating_add(cfg.remb_interval);
                    if let (Some(&bps), Some(media)) = (rembs.get(&sid), src.ssrc) {
                        p.stats.remb_sent += 1;
                        self.outputs.push_back(Output::Rtcp {
                            to: sid,
                            packet: feedback::remb(our, bps, &[media]),
                        });
                    }
                }
            }
            if let Some(r) = p.receiver.as_mut() {
                if r.last.sent && now >= r.next_sr_at {
                    r.next_sr_at = now.saturating_add(cfg.sr_interval);
                    let packet = sender_report(our, r, cfg.ntp_origin, &self.cname, now);
                    if !packet.is_empty() {
                        self.outputs.push_back(Output::Rtcp { to: sid, packet });
                    }
                }
            }
        }
    }

    /// Per source, the smallest fresh REMB of the receivers shown it.
    fn remb_minimums(&self, now: Duration) -> BTreeMap<ParticipantId, u64> {
        let mut m: BTreeMap<ParticipantId, u64> = BTreeMap::new();
        for r in self
            .participants
            .values()
            .filter_map(|p| p.receiver.as_ref())
        {
            let (Some(e), Some((bps, at))) = (&r.epoch, r.remb) else {
                continue;
            };
            if now.saturating_sub(at) <= self.config.remb_max_age {
                let v = m.entry(e.map.source).or_insert(bps);
                *v = (*v).min(bps);
            }
        }
        m
    }

    /// When `handle_timeout` must run next (`None`: no timer pending).
    pub fn poll_timeout(&self) -> Option<Duration> {
        let cfg = &self.config;
        let waiting: BTreeSet<ParticipantId> = self
            .participants
            .values()
            .filter_map(|p| p.receiver.as_ref())
            .filter(|r| r.pending_since.is_some())
            .filter_map(|r| r.target)
            .collect();
        let mut next: Option<Duration> = None;
        let mut at = |t: Duration| next = Some(next.map_or(t, |n| n.min(t)));
        for (&sid, p) in &self.participants {
            if let Some(src) = p.source.as_ref().filter(|s| s.ssrc.is_some()) {
                if src.deferred {
                    at(src.last_request_at.map_or(self.changed_at, |t| {
                        t.saturating_add(cfg.keyframe_request_interval)
                    }));
                } else if src.awaiting_keyframe && src.resume_retries > 0 {
                    if let Some(t) = src.last_request_at {
                        at(t.saturating_add(cfg.keyframe_request_interval));
                    }
                } else if src.awaiting_keyframe && waiting.contains(&sid) {
                    if let Some(t) = src.last_request_at {
                        at(t.saturating_add(cfg.keyframe_retry));
                    }
                }
                if self.has_remb_viewer(sid) {
                    at(src.next_remb_at);
                }
            }
            if let Some(r) = p.receiver.as_ref().filter(|r| r.last.sent) {
                at(r.next_sr_at);
            }
        }
        next
    }

    fn has_remb_viewer(&self, sid: ParticipantId) -> bool {
        self.participants.values().any(|p| {
            p.receiver.as_ref().is_some_and(|r| {
                r.remb.is_some() && r.epoch.as_ref().is_some_and(|e| e.map.source == sid)
            })
        })
    }

    /// The next thing to send, oldest first.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Counters of participant `id`.
    pub fn stats(&self, id: ParticipantId) -> Option<ParticipantStats> {
        self.participants.get(&id).map(|p| {
            let mut s = p.stats.clone();
            if let Some(r) = &p.receiver {
                s.showing = r.epoch.as_ref().map(|e| e.map.source);
                s.target = r.target;
            }
            if let Some(src) = &p.source {
                s.ssrc_in = src.ssrc;
            }
            s
        })
    }

    /// Room totals.
    pub fn room_stats(&self) -> SwitcherStats {
        let mut t = SwitcherStats {
            participants: self.participants.len(),
            dropped_invalid: self.dropped_unknown,
            ..Default::default()
        };
        for p in self.participants.values() {
            let s = &p.stats;
            t.packets_out += s.packets_out;
            t.switches += s.switches;
            t.keyframe_requests_sent += s.keyframe_requests_sent;
            t.keyframe_requests_suppressed += s.keyframe_requests_suppressed;
            t.nack_answered += s.nack_answered;
            t.nack_missed += s.nack_missed;
            t.dropped_invalid += s.dropped_invalid;
            t.dropped_late += s.dropped_late;
            t.rtcp_invalid += s.rtcp_invalid;
        }
        t
    }

    /// The current speaker and the previous one.
    pub fn speaker(&self) -> (Option<ParticipantId>, Option<ParticipantId>) {
        (self.speaker, self.previous_speaker)
    }

    /// SSRC of the output stream to participant `id`.
    pub fn output_ssrc(&self, id: ParticipantId) -> Option<u32> {
        self.participants.get(&id).map(|p| p.ssrc)
    }

    /// Counter that moves whenever replicated state changes (see [`crate::snapshot`]):
    /// membership, speaker, targets and pending switches, switches, source SSRCs. Not per
    /// packet. A primary ships [`Switcher::export_state`] each time it differs from the
    /// last shipped value.
    pub fn state_version(&self) -> u64 {
        self.state_version
    }

    /// What a standby needs to continue this room (see [`crate::snapshot`]).
    pub fn export_state(&self) -> SwitcherSnapshot {
        SwitcherSnapshot {
            format: SNAPSHOT_FORMAT,
            config: self.config.clone(),
            state_version: self.state_version,
            changed_at: self.changed_at,
            speaker: self.speaker,
            previous_speaker: self.previous_speaker,
            pinned: self.pinned,
            participants: self
                .participants
                .iter()
                .map(|(&id, p)| ParticipantSnapshot {
                    id,
                    params: p.params.clone(),
                    source: p.source.as_ref().map(|s| SourceSnapshot {
                        ssrc: s.ssrc,
                        fir: s.fir,
                    }),
                    receiver: p.receiver.as_ref().map(|r| ReceiverSnapshot {
                        ssrc: p.ssrc,
                        mapping: r.epoch.as_ref().map(|e| e.map),
                        target: r.target,
                        pending_since: r.pending_since,
                        last: r.last,
                    }),
                })
                .collect(),
        }
    }

    /// Build the switcher a promoted standby runs, at `now` (see [`crate::snapshot`]):
    /// receivers without a pending switch continue their mapping, the others start a new
    /// one past everything the primary may have sent, and every source with a known SSRC is
    /// asked for a keyframe at once (drain `poll_output`).
    pub fn from_snapshot(snapshot: &SwitcherSnapshot, now: Duration) -> Result<Switcher, Error> {
        if snapshot.format != SNAPSHOT_FORMAT {
            return Err(Error::Snapshot(format!(
                "format {} (expected {SNAPSHOT_FORMAT})",
                snapshot.format
            )));
        }
        let mut sw = Switcher::new(snapshot.config.clone());
        let cfg = sw.config.clone();
        for ps in &snapshot.participants {
            validate(&ps.params)?;
            if sw.participants.contains_key(&ps.id) {
                return Err(Error::Snapshot(format!("participant {} twice", ps.id)));
            }
            let mut p = sw.make_participant(ps.id, ps.params.clone(), now);
            if let (Some(src), Some(ss)) = (p.source.as_mut(), &ps.source) {
                src.ssrc = ss.ssrc;
                // Requests the primary may have sent since: one per interval, plus one.
                let since = now.saturating_sub(snapshot.changed_at);
                let interval = cfg.keyframe_request_interval.max(Duration::from_millis(1));
                let reserve = (since.as_nanos() / interval.as_nanos()).min(200) as u8 + 1;
                src.fir.last = ss.fir.last.map(|l| l.wrapping_add(reserve));
                p.stats.ssrc_in = ss.ssrc;
            }
            if let (Some(r), Some(rs)) = (p.receiver.as_mut(), &ps.receiver) {
                p.ssrc = rs.ssrc;
                p.stats.ssrc_out = rs.ssrc;
                r.target = rs.target;
                r.pending_since = rs.pending_since;
                let since = rs.last.at.max(snapshot.changed_at);
                let elapsed = now.saturating_sub(since);
                let seq_reserve = u64::from(cfg.max_packet_burst)
                    + (elapsed.as_nanos() * u128::from(cfg.max_packet_rate)).div_ceil(1_000_000_000)
                        as u64;
                let pic_reserve = u64::from(cfg.max_frame_rate / 4)
                    + (elapsed.as_nanos() * u128::from(cfg.max_frame_rate)).div_ceil(1_000_000_000)
                        as u64
                    + 1;
                let stale = seq_reserve > MAX_SEQ_RESERVE;
                let seq_reserve = seq_reserve.min(MAX_SEQ_RESERVE) as u16;
                let pic_reserve = pic_reserve.min(MAX_PIC_RESERVE) as u16;
                r.last = Position {
                    seq: rs.last.seq.wrapping_add(seq_reserve),
                    timestamp: rs
                        .last
                        .timestamp
                        .wrapping_add(ticks_90k(now.saturating_sub(rs.last.timestamp_at))),
                    timestamp_at: now,
                    picture_id: rs.last.picture_id.wrapping_add(pic_reserve)
                        & (PICTURE_ID_MODULUS - 1),
                    tl0_pic_idx: rs.last.tl0_pic_idx.wrapping_add(pic_reserve as u8),
                    at: now,
                    // Whether or not the primary had sent anything, it may have since.
                    sent: true,
                };
                if rs.pending_since.is_none() {
                    if let Some(m) = rs.mapping {
                        r.epoch = Some(Epoch {
                            map: m,
                            generation: 0,
                            last_seq: m.first_seq,
                            forwarded: 0,
                        });
                        r.resume = Some(Resume { stale });
                    }
                }
                p.stats.target = r.target;
            }
            sw.participants.insert(ps.id, p);
        }
        sw.speaker = snapshot.speaker.filter(|s| sw.participants.contains_key(s));
        sw.previous_speaker = snapshot
            .previous_speaker
            .filter(|s| sw.participants.contains_key(s));
        sw.pinned = snapshot
            .pinned
            .filter(|s| sw.participants.get(s).is_some_and(|p| p.source.is_some()));
        sw.state_version = snapshot.state_version;
        sw.changed_at = now;
        // (b): every source with a known SSRC, at once, repeated until its keyframe comes.
        for (&sid, p) in sw.participants.iter_mut() {
            Self::send_request(p, sid, now, &mut sw.outputs);
            if let Some(src) = p.source.as_mut().filter(|s| s.awaiting_keyframe) {
                src.resume_retries = RESUME_RETRIES;
            }
        }
        // Targets may need fixing if the snapshot is inconsistent (e.g. a target gone); the
        // sources were all asked above.
        let _ = sw.retarget(now);
        Ok(sw)
    }
}

/// SR + SDES CNAME for a receiver's output stream.
fn sender_report(ssrc: u32, r: &Receiver, ntp_origin: u64, cname: &str, now: Duration) -> Vec<u8> {
    let rtp_time = r
        .last
        .timestamp
        .wrapping_add(ticks_90k(now.saturating_sub(r.last.timestamp_at)));
    let pkts: Vec<Box<dyn Packet>> = vec![
        Box::new(SenderReport {
            ssrc,
            ntp_time: ntp_at(ntp_origin, now),
            rtp_time,
            packet_count: r.packets_sent as u32,
            octet_count: r.octets_sent as u32,
            ..Default::default()
        }),
        Box::new(SourceDescription {
            chunks: vec![SourceDescriptionChunk {
                source: ssrc,
                items: vec![SourceDescriptionItem {
                    sdes_type: SdesType::SdesCname,
                    text: Bytes::copy_from_slice(cname.as_bytes()),
                }],
            }],
        }),
    ];
    rtc_rtcp::packet::marshal(&pkts)
        .map(|b| b.to_vec())
        .unwrap_or_default()
}
