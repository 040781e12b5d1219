//! The room's grid state machine: sources in, one shared encoded stream out.

use std::collections::VecDeque;
use std::time::Duration;

pub use video::snapshot::GridSnapshot;
use video::vp8::{Frame, FrameAssembler, Packetizer};

use crate::compose::{compose, Layout, MAX_TILES};
use crate::picture::I420;
use crate::vpx::{EncoderConfig, Vp8Decoder, Vp8Encoder};
use crate::{Error, SourceId};

/// VP8 picture IDs are 15 bits.
const PICTURE_ID_MODULUS: u16 = 1 << 15;

/// How a [`Compositor`] composes and encodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompositorConfig {
    /// Output width (even, at least 16).
    pub width: u32,
    /// Output height (even, at least 16).
    pub height: u32,
    /// Time between composed frames (66 ms = 15 frames per second).
    pub frame_interval: Duration,
    /// Target bitrate of the shared encode, kbit/s.
    pub bitrate_kbps: u32,
    /// libvpx real-time `cpu-used` (4..=16).
    pub cpu_used: i32,
    /// Largest RTP payload (VP8 descriptor included) of the output frames.
    pub max_payload_size: usize,
    /// Fewest time between two keyframes forced by viewers' requests
    /// ([`Compositor::request_keyframe`]); requests in between are served at its end.
    pub keyframe_min_interval: Duration,
    /// Fewest time between two keyframe requests to one source.
    pub source_keyframe_interval: Duration,
    /// Picture ID of the first encoded frame.
    pub first_picture_id: u16,
}

impl Default for CompositorConfig {
    fn default() -> Self {
        CompositorConfig {
            width: 640,
            height: 360,
            frame_interval: Duration::from_millis(66),
            bitrate_kbps: 600,
            cpu_used: 12,
            max_payload_size: 1200,
            keyframe_min_interval: Duration::from_millis(500),
            source_keyframe_interval: Duration::from_millis(500),
            first_picture_id: 0,
        }
    }
}

/// What the compositor asks the driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// One encoded grid frame for every viewer of this layout: send `payloads` as
    /// consecutive RTP packets (marker bit on the last), with this RTP timestamp mapped to
    /// the viewer's stream (SSRC, sequence numbers and timestamp origin are per viewer).
    Frame {
        /// RTP payloads (VP8 descriptor with the 15-bit picture ID + data).
        payloads: Vec<Vec<u8>>,
        /// 90 kHz timestamp of the frame: `now` of the tick x 90 000 (wrapping).
        rtp_timestamp: u32,
        /// The frame is a keyframe.
        keyframe: bool,
        /// Its picture ID (counted per encoded frame, modulo 2^15).
        picture_id: u16,
    },
    /// Ask this source for a keyframe (PLI or FIR, as it negotiated): its picture is
    /// frozen until one arrives.
    KeyframeRequest {
        /// The source.
        source: SourceId,
    },
}

/// One source's decoding state.
struct Source {
    id: SourceId,
    assembler: FrameAssembler,
    decoder: Vp8Decoder,
    /// The last picture decoded from intact references.
    picture: Option<I420>,
    /// Its references are broken (loss, decode error) or it never sent a keyframe:
    /// interframes are skipped until the next keyframe.
    waiting_keyframe: bool,
    last_keyframe_request: Option<Duration>,
}

impl Source {
    fn new(id: SourceId) -> Result<Source, Error> {
        Ok(Source {
            id,
            assembler: FrameAssembler::new(),
            decoder: Vp8Decoder::new()?,
            picture: None,
            waiting_keyframe: true,
            last_keyframe_request: None,
        })
    }

    /// Decode one assembled frame; `true` when the source's references are broken and it
    /// should be asked for a keyframe.
    fn on_frame(&mut self, frame: Frame) -> bool {
        if !frame.keyframe && (self.waiting_keyframe || frame.missing) {
            self.waiting_keyframe = true;
            return true;
        }
        match self.decoder.decode_image(&frame.data) {
            Ok(Some(d)) if !d.corrupt => {
                self.picture = Some(d.image);
                self.waiting_keyframe = false;
                false
            }
            Ok(None) => {
                // Decoded, not shown (an alt-ref update): references intact.
                self.waiting_keyframe = false;
                false
            }
            Ok(Some(_)) | Err(_) => {
                self.waiting_keyframe = true;
                true
            }
        }
    }
}

/// The continuous-presence compositor of one room at one output resolution.
///
/// Method families, in the order a driver calls them:
/// - sources: [`add_source`](Self::add_source), [`remove_source`](Self::remove_source),
///   [`handle_rtp`](Self::handle_rtp) for every RTP packet of a source's video;
/// - [`set_speaker`](Self::set_speaker) when the audio mixer's dominant speaker changes;
/// - viewers: [`request_keyframe`](Self::request_keyframe) on a viewer's PLI/FIR;
/// - timer: [`handle_tick`](Self::handle_tick) at [`poll_timeout`](Self::poll_timeout);
/// - after every call: drain [`poll_output`](Self::poll_output).
///
/// Sources take tiles in the order they are added (the lowest free tile); a removed
/// source's tile turns black and is reused by the next source added. The layout is 2x2
/// while the occupied tiles fit in it, else 3x3.
pub struct Compositor {
    config: CompositorConfig,
    encoder: Vp8Encoder,
    packetizer: Packetizer,
    tiles: Vec<Option<Source>>,
    speaker: Option<SourceId>,
    canvas: I420,
    next_tick: Duration,
    picture_id: u16,
    /// When the next keyframe must be forced (a viewer asked, or a resume).
    keyframe_due: Option<Duration>,
    last_keyframe: Option<Duration>,
    out: VecDeque<Output>,
}

impl std::fmt::Debug for Compositor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compositor")
            .field("config", &self.config)
            .field("tiles", &self.tile_sources())
            .field("speaker", &self.speaker)
            .finish_non_exhaustive()
    }
}

impl Compositor {
    /// A compositor with no sources; its first frame is a keyframe.
    pub fn new(config: CompositorConfig) -> Result<Compositor, Error> {
        if config.width < 16
            || config.height < 16
            || !config.width.is_multiple_of(2)
            || !config.height.is_multiple_of(2)
        {
            return Err(Error::Config(format!(
                "output size {}x{} (even, at least 16x16)",
                config.width, config.height
            )));
        }
        if config.frame_interval.is_zero() {
            return Err(Error::Config("frame interval 0".into()));
        }
        let fps = (1.0 / config.frame_interval.as_secs_f64()).round().max(1.0) as u32;
        let encoder = Vp8Encoder::new(EncoderConfig {
            width: config.width,
            height: config.height,
            bitrate_kbps: config.bitrate_kbps,
            fps,
            cpu_used: config.cpu_used,
            threads: 1,
            keyframe_max_distance: 0,
        })?;
        let packetizer = Packetizer::new(config.max_payload_size)?;
        let canvas = I420::new(config.width, config.height)?;
        Ok(Compositor {
            picture_id: config.first_picture_id % PICTURE_ID_MODULUS,
            config,
            encoder,
            packetizer,
            tiles: (0..MAX_TILES).map(|_| None).collect(),
            speaker: None,
            canvas,
            next_tick: Duration::ZERO,
            keyframe_due: Some(Duration::ZERO),
            last_keyframe: None,
            out: VecDeque::new(),
        })
    }

    /// Continue a grid from a snapshot (after a takeover): the same tiles and speaker, the
    /// picture IDs continuing, every source asked for a keyframe at once, and the first
    /// encode a keyframe.
    pub fn resume(
        config: CompositorConfig,
        snapshot: &GridSnapshot,
        now: Duration,
    ) -> Result<Compositor, Error> {
        let mut c = Compositor::new(CompositorConfig {
            first_picture_id: snapshot.next_picture_id,
            ..config
        })?;
        for (i, id) in snapshot.tiles.iter().enumerate().take(MAX_TILES) {
            if let Some(id) = *id {
                if c.slot_of(id).is_some() {
                    return Err(Error::DuplicateSource(id));
                }
                c.tiles[i] = Some(Source::new(id)?);
                c.ask_keyframe(i, now);
            }
        }
        c.speaker = snapshot.speaker;
        c.keyframe_due = Some(now);
        Ok(c)
    }

    /// What a standby needs to [`resume`](Self::resume).
    pub fn snapshot(&self) -> GridSnapshot {
        GridSnapshot {
            next_picture_id: self.picture_id,
            speaker: self.speaker,
            tiles: self.tile_sources(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CompositorConfig {
        &self.config
    }

    /// The source in each tile (row-major, as many as the current layout has).
    pub fn tile_sources(&self) -> Vec<Option<SourceId>> {
        let n = self.layout().tiles();
        self.tiles
            .iter()
            .take(n)
            .map(|s| s.as_ref().map(|s| s.id))
            .collect()
    }

    /// The current layout.
    pub fn layout(&self) -> Layout {
        let used = self
            .tiles
            .iter()
            .rposition(Option::is_some)
            .map_or(0, |i| i + 1);
        // `used` <= MAX_TILES, for which a layout always exists.
        Layout::for_tiles(used, self.config.width, self.config.height).unwrap_or_else(|| {
            Layout::for_tiles(MAX_TILES, self.config.width, self.config.height)
                .expect("a 3x3 layout exists")
        })
    }

    /// The active speaker.
    pub fn speaker(&self) -> Option<SourceId> {
        self.speaker
    }

    fn slot_of(&self, id: SourceId) -> Option<usize> {
        self.tiles
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.id == id))
    }

    /// Add a source in the lowest free tile, and ask it for a keyframe (its tile is black
    /// until one decodes). Returns the tile index.
    pub fn add_source(&mut self, id: SourceId, now: Duration) -> Result<usize, Error> {
        if self.slot_of(id).is_some() {
            return Err(Error::DuplicateSource(id));
        }
        let slot = self
            .tiles
            .iter()
            .position(Option::is_none)
            .ok_or(Error::TooManySources)?;
        self.tiles[slot] = Some(Source::new(id)?);
        self.ask_keyframe(slot, now);
        Ok(slot)
    }

    /// Remove a source: its tile turns black. `false` if it was not a source.
    pub fn remove_source(&mut self, id: SourceId) -> bool {
        match self.slot_of(id) {
            Some(i) => {
                self.tiles[i] = None;
                true
            }
            None => false,
        }
    }

    /// The active speaker (highlighted when it is a source), or none.
    pub fn set_speaker(&mut self, id: Option<SourceId>) {
        self.speaker = id;
    }

    /// One RTP packet of a source's video. Frames are assembled and decoded as they
    /// complete; a loss or a broken bitstream freezes the source's tile on its last good
    /// picture until its next keyframe, which is asked for
    /// ([`Output::KeyframeRequest`], at most one per
    /// [`CompositorConfig::source_keyframe_interval`]). Errors (unknown source, not a VP8
    /// RTP packet) leave the state unchanged.
    pub fn handle_rtp(&mut self, id: SourceId, packet: &[u8], now: Duration) -> Result<(), Error> {
        let slot = self.slot_of(id).ok_or(Error::UnknownSource(id))?;
        let Some(src) = self.tiles[slot].as_mut() else {
            return Err(Error::UnknownSource(id));
        };
        src.assembler.push_rtp(packet)?;
        let mut broken = false;
        while let Some(frame) = src.assembler.poll_frame() {
            broken |= src.on_frame(frame);
        }
        if broken {
            self.ask_keyframe(slot, now);
        }
        Ok(())
    }

    /// Ask the source in `slot` for a keyframe unless it was asked less than
    /// `source_keyframe_interval` ago.
    fn ask_keyframe(&mut self, slot: usize, now: Duration) {
        let interval = self.config.source_keyframe_interval;
        if let Some(src) = self.tiles[slot].as_mut() {
            if src
                .last_keyframe_request
                .is_none_or(|t| now >= t.saturating_add(interval))
            {
                src.last_keyframe_request = Some(now);
                self.out
                    .push_back(Output::KeyframeRequest { source: src.id });
            }
        }
    }

    /// A viewer asked for a keyframe (PLI/FIR). The next frame is a keyframe, unless one
    /// was sent less than [`CompositorConfig::keyframe_min_interval`] ago: then the first
    /// frame after that interval is. Returns when the keyframe is due.
    pub fn request_keyframe(&mut self, now: Duration) -> Duration {
        let earliest = self.last_keyframe.map_or(now, |t| {
            now.max(t.saturating_add(self.config.keyframe_min_interval))
        });
        let due = self.keyframe_due.map_or(earliest, |d| d.min(earliest));
        self.keyframe_due = Some(due);
        due
    }

    /// When [`handle_tick`](Self::handle_tick) should run next.
    pub fn poll_timeout(&self) -> Duration {
        self.next_tick
    }

    /// Compose and encode one frame if it is time (`now` at or past
    /// [`poll_timeout`](Self::poll_timeout)); the next frame is due one interval later (a
    /// late tick does not cause a burst). Also repeats keyframe requests to sources still
    /// waiting for one.
    pub fn handle_tick(&mut self, now: Duration) -> Result<(), Error> {
        if now < self.next_tick {
            return Ok(());
        }
        let interval = self.config.frame_interval;
        self.next_tick = self.next_tick.saturating_add(interval);
        if self.next_tick <= now {
            self.next_tick = now.saturating_add(interval);
        }
        for slot in 0..self.tiles.len() {
            if self.tiles[slot]
                .as_ref()
                .is_some_and(|s| s.waiting_keyframe)
            {
                self.ask_keyframe(slot, now);
            }
        }
        let layout = self.layout();
        let pictures: Vec<Option<&I420>> = self
            .tiles
            .iter()
            .map(|s| s.as_ref().and_then(|s| s.picture.as_ref()))
            .collect();
        let highlight = self.speaker.and_then(|id| {
            self.tiles
                .iter()
                .position(|s| s.as_ref().is_some_and(|s| s.id == id))
        });
        compose(&mut self.canvas, &layout, &pictures, highlight);
        let force = self.keyframe_due.is_some_and(|d| d <= now);
        let frames = self.encoder.encode(&self.canvas, force)?;
        for f in frames {
            let payloads = self
                .packetizer
                .packetize(&f.data, self.picture_id, f.keyframe)?;
            if f.keyframe {
                self.last_keyframe = Some(now);
                if self.keyframe_due.is_some_and(|d| d <= now) {
                    self.keyframe_due = None;
                }
            }
            self.out.push_back(Output::Frame {
                payloads,
                rtp_timestamp: rtp_timestamp(now),
                keyframe: f.keyframe,
                picture_id: self.picture_id,
            });
            self.picture_id = (self.picture_id + 1) % PICTURE_ID_MODULUS;
        }
        Ok(())
    }

    /// The next thing to do, oldest first.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }
}

/// The 90 kHz RTP timestamp of instant `now` (wrapping at 2^32).
pub fn rtp_timestamp(now: Duration) -> u32 {
    (now.as_micros().wrapping_mul(9) / 100) as u32
}
