//! Understudy's continuous-presence video: a sans-IO, deterministic grid compositor for one
//! room at one output resolution. It decodes every source's VP8, draws the last good
//! picture of each into a 2x2 or 3x3 grid (the active speaker framed), encodes the grid
//! ONCE for all its viewers and packetizes it; the driver rewrites the RTP header per
//! viewer.
//!
//! It never touches a socket and never reads a clock (time comes in as `now`); its output
//! depends only on its inputs. Not for: the voice-switched layout (crate `video`, whose
//! [`video::vp8::FrameAssembler`] and [`video::vp8::Packetizer`] are used here), SDP, RTCP
//! parsing (the driver turns a viewer's PLI/FIR into [`Compositor::request_keyframe`] and an
//! [`Output::KeyframeRequest`] into a PLI/FIR to the source), per-viewer RTP state.
//!
//! # Modules
//!
//! - [`vpx`]: safe libvpx VP8 decoder and real-time encoder (the workspace's only libvpx
//!   `unsafe`; the pcap harness uses its decoder too).
//! - [`picture`]: owned I420 pictures, colours, rectangles.
//! - [`compose`]: layouts, bilinear scaling, letterboxing, the speaker's border.
//! - [`Compositor`]: the state machine.
//!
//! # Driver loop
//!
//! ```
//! use std::time::Duration;
//! use video_grid::picture::{I420, Yuv};
//! use video_grid::vpx::{EncoderConfig, Vp8Encoder};
//! use video_grid::{Compositor, CompositorConfig, Output};
//! use video::vp8::Packetizer;
//!
//! let mut grid = Compositor::new(CompositorConfig { width: 320, height: 180, ..Default::default() })?;
//! let mut now = Duration::ZERO;
//! grid.add_source(7, now)?;
//!
//! // Source 7 sends one keyframe (here: a red picture encoded by libvpx) as RTP.
//! let mut camera = Vp8Encoder::new(EncoderConfig { width: 160, height: 120, ..Default::default() })?;
//! let frame = camera.encode(&I420::solid(160, 120, Yuv::RED)?, true)?.remove(0);
//! let payloads = Packetizer::new(1200)?.packetize(&frame.data, 0, true)?;
//! for (i, p) in payloads.iter().enumerate() {
//!     let marker = if i + 1 == payloads.len() { 0x80 } else { 0 };
//!     let mut rtp = vec![0x80, marker | 96, 0, i as u8, 0, 0, 0, 0, 0, 0, 0, 7];
//!     rtp.extend_from_slice(p);
//!     grid.handle_rtp(7, &rtp, now)?;
//! }
//! grid.set_speaker(Some(7));
//!
//! let mut frames = 0;
//! while now < Duration::from_millis(200) {
//!     grid.handle_tick(now)?;
//!     while let Some(out) = grid.poll_output() {
//!         match out {
//!             // One encode for every viewer: send the payloads with the viewer's own
//!             // SSRC and sequence numbers, marker on the last.
//!             Output::Frame { payloads, rtp_timestamp, keyframe, picture_id } => {
//!                 assert_eq!(keyframe, frames == 0);
//!                 let _ = (payloads, rtp_timestamp, picture_id);
//!                 frames += 1;
//!             }
//!             // Send a PLI or FIR to that source.
//!             Output::KeyframeRequest { source } => assert_eq!(source, 7),
//!             _ => {}
//!         }
//!     }
//!     // Sleep until the next frame is due (or a packet arrives).
//!     now = grid.poll_timeout();
//! }
//! assert_eq!(frames, 4); // at 0, 66, 132 and 198 ms
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod compose;
mod compositor;
pub mod picture;
pub mod vpx;

pub use compositor::{rtp_timestamp, Compositor, CompositorConfig, GridSnapshot, Output};

/// Identifier of a source, chosen by the driver (the room's participant ids).
pub type SourceId = u64;

/// Why a compositor call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// libvpx failed (creating a codec, or encoding).
    #[error(transparent)]
    Vpx(#[from] vpx::VpxError),
    /// A picture could not be made.
    #[error(transparent)]
    Picture(#[from] picture::PictureError),
    /// A packet is not RTP carrying VP8, or the payload size is unusable.
    #[error("VP8 RTP: {0}")]
    Rtp(#[from] video::vp8::Error),
    /// The configuration is unusable.
    #[error("bad configuration: {0}")]
    Config(String),
    /// No source with this id.
    #[error("unknown source {0}")]
    UnknownSource(SourceId),
    /// A source with this id is already in the grid.
    #[error("source {0} is already in the grid")]
    DuplicateSource(SourceId),
    /// The grid has 9 sources already.
    #[error("the grid is full")]
    TooManySources,
}
