//! Sources and a viewer for the compositor tests: real libvpx VP8 in RTP, real decoding.
#![allow(dead_code)]

use std::time::Duration;
use video::vp8::{FrameAssembler, Packetizer};
use video_grid::picture::{MeanYuv, Rect, Yuv, I420};
use video_grid::vpx::{EncoderConfig, Vp8Decoder, Vp8Encoder};
use video_grid::{Compositor, CompositorConfig, Output, SourceId};

/// A camera showing one solid colour (changeable), encoded by libvpx at 320x240 and sent as
/// VP8 RTP (small payloads, so that frames span several packets).
pub struct Camera {
    pub ssrc: u32,
    pub colour: Yuv,
    seq: u16,
    picture_id: u16,
    encoder: Vp8Encoder,
    packetizer: Packetizer,
}

impl Camera {
    pub fn new(ssrc: u32, colour: Yuv) -> Camera {
        Camera {
            ssrc,
            colour,
            seq: 1000,
            picture_id: 0,
            encoder: Vp8Encoder::new(EncoderConfig {
                width: 320,
                height: 240,
                bitrate_kbps: 300,
                ..Default::default()
            })
            .unwrap(),
            packetizer: Packetizer::new(200).unwrap(),
        }
    }

    /// The RTP packets of the next frame, captured at `now`.
    pub fn frame(&mut self, now: Duration, keyframe: bool) -> Vec<Vec<u8>> {
        let pic = I420::solid(320, 240, self.colour).unwrap();
        let f = self.encoder.encode(&pic, keyframe).unwrap().remove(0);
        let payloads = self
            .packetizer
            .packetize(&f.data, self.picture_id, f.keyframe)
            .unwrap();
        self.picture_id = (self.picture_id + 1) & 0x7fff;
        let ts = video_grid::rtp_timestamp(now);
        let n = payloads.len();
        payloads
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let marker = if i + 1 == n { 0x80 } else { 0 };
                let mut rtp = vec![0x80, marker | 96];
                rtp.extend_from_slice(&self.seq.to_be_bytes());
                rtp.extend_from_slice(&ts.to_be_bytes());
                rtp.extend_from_slice(&self.ssrc.to_be_bytes());
                rtp.extend_from_slice(&p);
                self.seq = self.seq.wrapping_add(1);
                rtp
            })
            .collect()
    }
}

/// One encoded grid frame as a viewer got it.
#[derive(Debug)]
pub struct Received {
    pub keyframe: bool,
    pub picture_id: u16,
    pub rtp_timestamp: u32,
    pub image: I420,
}

/// A viewer: puts the shared frames into RTP (its own SSRC and sequence numbers, as the
/// driver would), reassembles them and decodes them with libvpx.
pub struct Viewer {
    seq: u16,
    assembler: FrameAssembler,
    decoder: Vp8Decoder,
    pub frames: Vec<Received>,
    pub keyframe_requests: Vec<SourceId>,
}

impl Viewer {
    pub fn new() -> Viewer {
        Viewer {
            seq: 7,
            assembler: FrameAssembler::new(),
            decoder: Vp8Decoder::new().unwrap(),
            frames: Vec::new(),
            keyframe_requests: Vec::new(),
        }
    }

    /// Drain the compositor's outputs: decode every frame (each must decode, intact).
    pub fn drain(&mut self, grid: &mut Compositor) {
        while let Some(out) = grid.poll_output() {
            match out {
                Output::Frame {
                    payloads,
                    rtp_timestamp,
                    keyframe,
                    picture_id,
                } => {
                    let n = payloads.len();
                    for (i, p) in payloads.iter().enumerate() {
                        let mut rtp = vec![0x80, if i + 1 == n { 0x80 | 96 } else { 96 }];
                        rtp.extend_from_slice(&self.seq.to_be_bytes());
                        rtp.extend_from_slice(&rtp_timestamp.to_be_bytes());
                        rtp.extend_from_slice(&0x5EE5u32.to_be_bytes());
                        rtp.extend_from_slice(p);
                        self.seq = self.seq.wrapping_add(1);
                        self.assembler.push_rtp(&rtp).unwrap();
                    }
                    let f = self.assembler.poll_frame().expect("a whole frame");
                    assert!(!f.missing);
                    assert_eq!(f.keyframe, keyframe);
                    assert_eq!(f.picture_id, Some(picture_id));
                    let d = self
                        .decoder
                        .decode_image(&f.data)
                        .expect("the grid stream decodes")
                        .expect("every grid frame is shown");
                    assert!(!d.corrupt);
                    self.frames.push(Received {
                        keyframe,
                        picture_id,
                        rtp_timestamp,
                        image: d.image,
                    });
                }
                Output::KeyframeRequest { source } => self.keyframe_requests.push(source),
                other => panic!("unexpected output {other:?}"),
            }
        }
    }

    pub fn last(&self) -> &I420 {
        &self.frames.last().expect("a frame").image
    }
}

/// A 640x360 grid, 15 fps.
pub fn grid() -> Compositor {
    Compositor::new(CompositorConfig::default()).unwrap()
}

/// The middle of a tile's picture area (away from the border, the letterbox bars and the
/// scaling/compression blur at the edges).
pub fn centre(tile: Rect) -> Rect {
    Rect {
        x: tile.x + tile.width / 3,
        y: tile.y + tile.height / 4,
        width: tile.width / 3,
        height: tile.height / 2,
    }
}

/// The top border band of a tile, inside its picture area (a 4:3 source is pillarboxed in a
/// 16:9 tile: the middle half of the band is picture), one pixel in from the edges.
pub fn top_band(tile: Rect, border: u32) -> Rect {
    Rect {
        x: tile.x + tile.width / 4,
        y: tile.y + 1,
        width: tile.width / 2,
        height: border - 2,
    }
}

pub fn mean(img: &I420, r: Rect) -> MeanYuv {
    img.mean(r).unwrap()
}

/// Send one frame of each camera to the grid at `now`.
pub fn send_all(grid: &mut Compositor, cams: &mut [(SourceId, Camera)], now: Duration, key: bool) {
    for (id, cam) in cams.iter_mut() {
        for p in cam.frame(now, key) {
            grid.handle_rtp(*id, &p, now).unwrap();
        }
    }
}

/// Tolerance for a flat colour through two VP8 encodes and a bilinear scale.
pub const TOLERANCE: f64 = 10.0;
