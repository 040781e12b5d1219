//! VP8 decoding with libvpx: the one safe wrapper of the workspace lives in the
//! `video-grid` crate ([`video_grid::vpx`]); this module re-exports its decoder so that the
//! harness's API (`pcap_harness::vpx::{Vp8Decoder, Picture, VpxError, MAX_PIXELS}`) stays
//! as it was. [`Vp8Decoder::decode`] summarises the shown picture (size, mean Y/U/V,
//! libvpx's corruption flag), which is what the receiver analysis needs.

pub use video_grid::vpx::{Picture, Vp8Decoder, VpxError, MAX_PIXELS};
