//! The thread that runs a grid room's compositor ([`video_grid::Compositor`]): a thin
//! driver, the logic stays in the sans-IO crates.
//!
//! Encoding a grid frame costs milliseconds; the room's tokio task (which ticks the audio
//! mixer every 20 ms) must never wait for it. So each room in grid layout runs one
//! compositor on its own `std::thread`, created when the room goes grid and ended when it
//! leaves grid or the room closes (dropping the [`GridThread`] closes its input channel; the
//! thread ends after at most the frame it is encoding).
//!
//! - Room -> thread: a bounded channel ([`ToGrid`]). Sources' RTP that does not fit is
//!   dropped and counted (`mcu_video_grid_input_dropped_total`): a slow encoder never
//!   blocks the room, its tiles freeze and the compositor asks for a keyframe. Membership,
//!   speaker and keyframe requests are kept in a backlog and retried instead.
//! - Thread -> room: the room's grid queue ([`FromGrid`]; full: dropped and counted in
//!   `mcu_video_grid_output_dropped_total`; tagged with the thread's
//!   generation so that a stopped thread's last words are ignored): every encoded frame
//!   wrapped into RTP packets of the grid's own stream (its SSRC drawn per thread, its own
//!   sequence numbers), which the room feeds to the forwarder as the virtual source
//!   [`GRID_ID`]; the compositor's keyframe requests for a source; its snapshot when its
//!   tiles or speaker changed.

use crate::metrics::Metrics;
use mixer::ParticipantId;
use std::collections::VecDeque;
use std::sync::mpsc::{self as std_mpsc, RecvTimeoutError, TrySendError};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use video_grid::{Compositor, CompositorConfig, GridSnapshot, Output};

/// The forwarder participant id of the room's grid: a source (never a receiver) that every
/// receiver is pinned to in grid layout. Above every call and WebRTC participant id.
pub const GRID_ID: ParticipantId = u64::MAX;

/// VP8 payload type of the grid's own stream (the forwarder rewrites it per receiver).
const GRID_PT: u8 = 96;

/// Room -> thread messages queued at most (a few frames of a handful of sources).
const INPUT_QUEUE: usize = 1024;

/// Thread -> room messages queued at most (the room's grid queue).
pub(super) const OUTPUT_QUEUE: usize = 1024;

/// What the room tells its grid thread.
pub(super) enum ToGrid {
    /// One RTP packet of a source's video.
    Rtp(ParticipantId, Vec<u8>),
    /// A source joins the grid.
    Add(ParticipantId),
    /// A source leaves it.
    Remove(ParticipantId),
    /// The active speaker (framed).
    Speaker(Option<ParticipantId>),
    /// A viewer (through the forwarder) asked for a keyframe.
    Keyframe,
}

/// What the grid thread tells its room.
pub(super) enum FromGridBody {
    /// One RTP packet of the grid's stream.
    Rtp(Vec<u8>),
    /// Ask this source for a keyframe (PLI/FIR through the forwarder's rate limit).
    KeyframeRequest(ParticipantId),
    /// The compositor's tiles or speaker changed.
    Snapshot(GridSnapshot),
}

/// A [`FromGridBody`] of the thread of generation `generation`.
pub(super) struct FromGrid {
    pub(super) generation: u64,
    pub(super) body: FromGridBody,
}

/// The room's handle on its grid thread.
pub(super) struct GridThread {
    generation: u64,
    tx: std_mpsc::SyncSender<ToGrid>,
    /// Control messages the full channel did not take yet, in order.
    backlog: VecDeque<ToGrid>,
    metrics: Metrics,
    /// The thread ended (its channel is gone) while the room still runs it.
    dead: bool,
}

impl GridThread {
    /// Start a compositor thread (`resume`: continue a takeover's grid, its first frame a
    /// keyframe). `origin` is the room's clock origin (the compositor's `now` is the time
    /// since it).
    pub(super) fn start(
        room: &str,
        generation: u64,
        resume: Option<&GridSnapshot>,
        origin: Instant,
        out: mpsc::Sender<FromGrid>,
        metrics: Metrics,
    ) -> Result<GridThread, String> {
        let resume = resume.cloned();
        let resumed = resume.is_some();
        let (tx, rx) = std_mpsc::sync_channel(INPUT_QUEUE);
        let mut ssrc_bytes = [0u8; 6];
        if getrandom::fill(&mut ssrc_bytes).is_err() {
            let t = origin.elapsed().as_nanos() as u64 ^ generation.rotate_left(17);
            ssrc_bytes.copy_from_slice(&t.to_le_bytes()[..6]);
        }
        let ssrc = u32::from_le_bytes([ssrc_bytes[0], ssrc_bytes[1], ssrc_bytes[2], ssrc_bytes[3]]);
        let seq = u16::from_le_bytes([ssrc_bytes[4], ssrc_bytes[5]]);
        let m = metrics.clone();
        let name = room.to_string();
        tracing::info!(room = %room.escape_debug(), ssrc, resumed, "grid compositor started");
        std::thread::Builder::new()
            .name("grid".into())
            .spawn(move || {
                // The encoder is set up here, not on the room's task (a few ms of libvpx
                // setup would delay the room's audio tick). A failure ends the thread: the
                // room sees its channel gone and falls back to voice-switched forwarding.
                let config = CompositorConfig::default();
                let now = origin.elapsed();
                let grid = match &resume {
                    Some(s) => Compositor::resume(config, s, now),
                    None => Compositor::new(config),
                };
                let grid = match grid {
                    Ok(g) => g,
                    Err(e) => {
                        tracing::error!(room = %name.escape_debug(), "grid compositor: {e}");
                        return;
                    }
                };
                let driver = Driver {
                    generation,
                    origin,
                    out,
                    metrics: m,
                    ssrc,
                    seq,
                    last_snapshot: None,
                };
                driver.run(&name, grid, rx);
            })
            .map_err(|e| format!("grid thread: {e}"))?;
        Ok(GridThread {
            generation,
            tx,
            backlog: VecDeque::new(),
            metrics,
            dead: false,
        })
    }

    /// The generation its messages carry.
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// A source's RTP packet: dropped and counted when the thread is behind.
    pub(super) fn rtp(&mut self, id: ParticipantId, data: &[u8]) {
        match self.tx.try_send(ToGrid::Rtp(id, data.to_vec())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.metrics.video_grid_dropped_in.inc();
            }
            Err(TrySendError::Disconnected(_)) => self.dead = true,
        }
    }

    /// The thread ended on its own (it panicked): nothing it was sent is composed any more.
    pub(super) fn is_dead(&self) -> bool {
        self.dead
    }

    /// A control message: sent in order after the backlog, kept when the channel is full.
    pub(super) fn control(&mut self, msg: ToGrid) {
        self.backlog.push_back(msg);
        self.flush();
    }

    /// Retry the backlog (every room tick).
    pub(super) fn flush(&mut self) {
        while let Some(msg) = self.backlog.pop_front() {
            match self.tx.try_send(msg) {
                Ok(()) => {}
                Err(TrySendError::Full(msg)) => {
                    self.backlog.push_front(msg);
                    return;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.backlog.clear();
                    self.dead = true;
                    return;
                }
            }
        }
    }
}

/// The thread's side.
struct Driver {
    generation: u64,
    origin: Instant,
    out: mpsc::Sender<FromGrid>,
    metrics: Metrics,
    ssrc: u32,
    seq: u16,
    last_snapshot: Option<(Option<ParticipantId>, Vec<Option<ParticipantId>>)>,
}

impl Driver {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn run(mut self, room: &str, mut grid: Compositor, rx: std_mpsc::Receiver<ToGrid>) {
        loop {
            let now = self.now();
            if now >= grid.poll_timeout() {
                let started = Instant::now();
                if let Err(e) = grid.handle_tick(now) {
                    tracing::warn!(room = %room.escape_debug(), "grid frame: {e}");
                }
                let spent = started.elapsed().as_secs_f64();
                self.metrics.video_grid_encode_seconds.observe(spent);
            }
            if !self.drain(&mut grid) {
                break;
            }
            let wait = grid.poll_timeout().saturating_sub(self.now());
            match rx.recv_timeout(wait) {
                Ok(msg) => {
                    self.input(&mut grid, msg);
                    // Everything already queued, before the next frame.
                    while let Ok(msg) = rx.try_recv() {
                        self.input(&mut grid, msg);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        tracing::info!(room = %room.escape_debug(), "grid compositor stopped");
    }

    fn input(&mut self, grid: &mut Compositor, msg: ToGrid) {
        let now = self.now();
        match msg {
            // Not a source of the grid (yet), or not VP8: nothing to show.
            ToGrid::Rtp(id, data) => {
                let _ = grid.handle_rtp(id, &data, now);
            }
            ToGrid::Add(id) => {
                if let Err(e) = grid.add_source(id, now) {
                    tracing::debug!(id, "grid source not added: {e}");
                }
            }
            ToGrid::Remove(id) => {
                grid.remove_source(id);
            }
            ToGrid::Speaker(id) => grid.set_speaker(id),
            ToGrid::Keyframe => {
                grid.request_keyframe(now);
            }
        }
    }

    /// Send what the compositor produced; false when the room is gone.
    fn drain(&mut self, grid: &mut Compositor) -> bool {
        while let Some(out) = grid.poll_output() {
            match out {
                Output::Frame {
                    payloads,
                    rtp_timestamp,
                    ..
                } => {
                    self.metrics.video_grid_frames.inc();
                    let n = payloads.len();
                    for (i, p) in payloads.into_iter().enumerate() {
                        let mut rtp = Vec::with_capacity(12 + p.len());
                        let marker = if i + 1 == n { 0x80 } else { 0 };
                        rtp.extend_from_slice(&[0x80, marker | GRID_PT]);
                        rtp.extend_from_slice(&self.seq.to_be_bytes());
                        rtp.extend_from_slice(&rtp_timestamp.to_be_bytes());
                        rtp.extend_from_slice(&self.ssrc.to_be_bytes());
                        rtp.extend_from_slice(&p);
                        self.seq = self.seq.wrapping_add(1);
                        if self.send(FromGridBody::Rtp(rtp)).is_none() {
                            return false;
                        }
                    }
                }
                Output::KeyframeRequest { source }
                    if self.send(FromGridBody::KeyframeRequest(source)).is_none() =>
                {
                    return false;
                }
                _ => {}
            }
        }
        let snap = grid.snapshot();
        let key = (snap.speaker, snap.tiles.clone());
        if self.last_snapshot.as_ref() != Some(&key) {
            match self.send(FromGridBody::Snapshot(snap)) {
                None => return false,
                Some(true) => self.last_snapshot = Some(key),
                Some(false) => {} // again after the next frame
            }
        }
        true
    }

    /// One message to the room: whether it was queued (a full queue drops and counts
    /// it); `None` when the room is gone.
    fn send(&self, body: FromGridBody) -> Option<bool> {
        match self.out.try_send(FromGrid {
            generation: self.generation,
            body,
        }) {
            Ok(()) => Some(true),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.video_grid_dropped_out.inc();
                Some(false)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => None,
        }
    }
}

/// The room's grid while it runs: its thread, and what the thread was told.
pub(super) struct GridState {
    /// The compositor's thread.
    pub(super) thread: GridThread,
    /// The sources the compositor was told to show.
    pub(super) sources: std::collections::BTreeSet<ParticipantId>,
    /// The speaker it was told (`None`: not told yet).
    pub(super) speaker: Option<Option<ParticipantId>>,
    /// Leaving grid layout since then: the receivers are unpinned and switch to their
    /// speaker-rule source at its keyframe, seeing the grid until then.
    pub(super) draining_since: Option<Duration>,
}
