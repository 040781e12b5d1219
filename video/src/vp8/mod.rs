//! The VP8 RTP payload format (RFC 7741): the payload descriptor that starts every VP8 RTP
//! payload, keyframe detection, and rewriting of the picture ID and TL0PICIDX a forwarder
//! needs to splice several sources into one stream. [`FrameAssembler`] and [`Packetizer`]
//! convert between RTP payloads and whole encoded frames.
//!
//! ```text
//!       0 1 2 3 4 5 6 7
//!      +-+-+-+-+-+-+-+-+
//!      |X|R|N|S|R| PID | (REQUIRED)
//!      +-+-+-+-+-+-+-+-+
//! X:   |I|L|T|K| RSV   | (OPTIONAL)
//!      +-+-+-+-+-+-+-+-+
//! I:   |M| PictureID   | (OPTIONAL, 7 bits, or 15 bits when M = 1)
//!      +-+-+-+-+-+-+-+-+
//!      |   PictureID   |
//!      +-+-+-+-+-+-+-+-+
//! L:   |   TL0PICIDX   | (OPTIONAL)
//!      +-+-+-+-+-+-+-+-+
//! T/K: |TID|Y| KEYIDX  | (OPTIONAL)
//!      +-+-+-+-+-+-+-+-+
//! ```
//!
//! The descriptor is parsed here rather than with `rtc_rtp::codec::vp8::Vp8Packet`: a
//! rewriter needs the descriptor's length and whether the picture ID is 7 or 15 bits (which
//! `Vp8Packet` does not expose), and `Vp8Packet` refuses valid payloads shorter than 4
//! bytes (the last fragment of a frame can be 2). `tests/vp8.rs` checks that both parsers
//! agree on every payload `Vp8Packet` accepts.

mod assembler;
mod packetizer;

pub use assembler::{Frame, FrameAssembler, MAX_FRAME_BYTES};
pub use packetizer::Packetizer;

/// Why a payload is not a usable VP8 RTP payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The payload is empty.
    Empty,
    /// The descriptor announces more octets than the payload has.
    Truncated,
    /// The descriptor is complete but no VP8 data follows it.
    NoData,
    /// The packetizer's maximum payload size cannot hold a descriptor and one octet of data.
    PayloadSizeTooSmall,
    /// The frame handed to the packetizer is empty, or its keyframe flag disagrees with its
    /// own VP8 header.
    BadFrame,
    /// The packet handed to [`FrameAssembler::push_rtp`] is not an RTP packet.
    NotRtp,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Error::Empty => "empty VP8 payload",
            Error::Truncated => "truncated VP8 payload descriptor",
            Error::NoData => "VP8 payload descriptor without data",
            Error::PayloadSizeTooSmall => "maximum payload size too small for VP8",
            Error::BadFrame => "empty VP8 frame or wrong keyframe flag",
            Error::NotRtp => "not an RTP packet",
        };
        f.write_str(s)
    }
}
impl std::error::Error for Error {}

/// Largest 15-bit picture ID plus one: picture IDs are counted modulo this.
pub const PICTURE_ID_MODULUS: u16 = 1 << 15;

/// A parsed VP8 payload descriptor (RFC 7741 section 4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Descriptor {
    /// N: the frame is not used as a reference by other frames.
    pub non_reference: bool,
    /// S: the payload starts a VP8 partition.
    pub start_of_partition: bool,
    /// PID: the partition index (0..=7).
    pub partition_index: u8,
    /// I: the picture ID, 7 or 15 bits (see `long_picture_id`).
    pub picture_id: Option<u16>,
    /// M: the picture ID is written on 15 bits (2 octets) rather than 7 (1 octet).
    pub long_picture_id: bool,
    /// L: TL0PICIDX, the running index of the temporal base layer frames.
    pub tl0_pic_idx: Option<u8>,
    /// T: the temporal layer index (0..=3).
    pub tid: Option<u8>,
    /// Y: layer sync bit (meaningful with `tid`).
    pub layer_sync: bool,
    /// K: the temporal key frame index (0..=31).
    pub key_idx: Option<u8>,
    /// Size of the descriptor in octets (1..=6); the VP8 data starts there.
    pub len: usize,
}

impl Descriptor {
    /// Parse the descriptor at the start of an RTP payload (padding already removed).
    /// The payload must carry at least one octet of VP8 data after the descriptor.
    pub fn parse(payload: &[u8]) -> Result<Descriptor, Error> {
        let (&b0, _) = payload.split_first().ok_or(Error::Empty)?;
        let mut d = Descriptor {
            non_reference: b0 & 0x20 != 0,
            start_of_partition: b0 & 0x10 != 0,
            partition_index: b0 & 0x07,
            ..Default::default()
        };
        let mut i = 1;
        let byte = |i: usize| payload.get(i).copied().ok_or(Error::Truncated);
        if b0 & 0x80 != 0 {
            let x = byte(i)?;
            i += 1;
            if x & 0x80 != 0 {
                let p0 = byte(i)?;
                i += 1;
                if p0 & 0x80 != 0 {
                    let p1 = byte(i)?;
                    i += 1;
                    d.picture_id = Some(u16::from(p0 & 0x7F) << 8 | u16::from(p1));
                    d.long_picture_id = true;
                } else {
                    d.picture_id = Some(u16::from(p0));
                }
            }
            if x & 0x40 != 0 {
                d.tl0_pic_idx = Some(byte(i)?);
                i += 1;
            }
            if x & 0x30 != 0 {
                let tk = byte(i)?;
                i += 1;
                if x & 0x20 != 0 {
                    d.tid = Some(tk >> 6);
                    d.layer_sync = tk & 0x20 != 0;
                }
                if x & 0x10 != 0 {
                    d.key_idx = Some(tk & 0x1F);
                }
            }
        }
        d.len = i;
        if payload.len() <= i {
            return Err(Error::NoData);
        }
        Ok(d)
    }

    /// Size in octets of this descriptor when written by [`Descriptor::write`].
    pub fn written_len(&self) -> usize {
        let ext = self.picture_id.is_some()
            || self.tl0_pic_idx.is_some()
            || self.tid.is_some()
            || self.key_idx.is_some();
        let pid = match self.picture_id {
            Some(_) if self.long_picture_id => 2,
            Some(_) => 1,
            None => 0,
        };
        1 + usize::from(ext)
            + pid
            + usize::from(self.tl0_pic_idx.is_some())
            + usize::from(self.tid.is_some() || self.key_idx.is_some())
    }

    /// Append this descriptor to `out` (reserved bits zero; a 7-bit picture ID stays 7-bit
    /// unless `long_picture_id` is set). Values wider than their field are masked.
    pub fn write(&self, out: &mut Vec<u8>) {
        let ext = self.picture_id.is_some()
            || self.tl0_pic_idx.is_some()
            || self.tid.is_some()
            || self.key_idx.is_some();
        out.push(
            (u8::from(ext) << 7)
                | (u8::from(self.non_reference) << 5)
                | (u8::from(self.start_of_partition) << 4)
                | (self.partition_index & 0x07),
        );
        if !ext {
            return;
        }
        out.push(
            (u8::from(self.picture_id.is_some()) << 7)
                | (u8::from(self.tl0_pic_idx.is_some()) << 6)
                | (u8::from(self.tid.is_some()) << 5)
                | (u8::from(self.key_idx.is_some()) << 4),
        );
        if let Some(p) = self.picture_id {
            if self.long_picture_id {
                out.push(0x80 | ((p >> 8) as u8 & 0x7F));
                out.push(p as u8);
            } else {
                out.push(p as u8 & 0x7F);
            }
        }
        if let Some(t) = self.tl0_pic_idx {
            out.push(t);
        }
        if self.tid.is_some() || self.key_idx.is_some() {
            out.push(
                (self.tid.unwrap_or(0) & 0x03) << 6
                    | u8::from(self.tid.is_some() && self.layer_sync) << 5
                    | (self.key_idx.unwrap_or(0) & 0x1F),
            );
        }
    }

    /// Whether a payload with this descriptor starts a VP8 frame (S = 1, PID = 0).
    pub fn starts_frame(&self) -> bool {
        self.start_of_partition && self.partition_index == 0
    }
}

/// Whether `data` (the VP8 data after the descriptor of a frame's first packet) starts a
/// keyframe: the P bit of the VP8 payload header (RFC 7741 section 4.3) is 0.
pub fn is_keyframe_data(data: &[u8]) -> bool {
    data.first().is_some_and(|b| b & 0x01 == 0)
}

/// Whether an RTP payload starts a VP8 keyframe: S = 1, PID = 0, and the VP8 payload
/// header's P bit is 0. `false` for anything that does not parse.
pub fn is_keyframe_start(payload: &[u8]) -> bool {
    match Descriptor::parse(payload) {
        Ok(d) => d.starts_frame() && is_keyframe_data(&payload[d.len..]),
        Err(_) => false,
    }
}

/// Dimensions written in a VP8 keyframe header (RFC 6386 section 9.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyframeSize {
    /// Width in pixels (14 bits).
    pub width: u16,
    /// Height in pixels (14 bits).
    pub height: u16,
    /// Horizontal upscaling code (0..=3).
    pub horizontal_scale: u8,
    /// Vertical upscaling code (0..=3).
    pub vertical_scale: u8,
}

/// The frame size of a keyframe, from the start of its VP8 data (the 3-octet frame tag,
/// the start code `9d 01 2a`, then width and height). `None` when `data` is not the start
/// of a keyframe or is too short.
pub fn keyframe_size(data: &[u8]) -> Option<KeyframeSize> {
    if data.len() < 10 || !is_keyframe_data(data) || data[3..6] != [0x9D, 0x01, 0x2A] {
        return None;
    }
    let w = u16::from_le_bytes([data[6], data[7]]);
    let h = u16::from_le_bytes([data[8], data[9]]);
    Some(KeyframeSize {
        width: w & 0x3FFF,
        height: h & 0x3FFF,
        horizontal_scale: (w >> 14) as u8,
        vertical_scale: (h >> 14) as u8,
    })
}

/// Rewrite the picture ID and TL0PICIDX of the payload `payload` (descriptor + VP8 data).
///
/// `picture_id` replaces the picture ID and `tl0_pic_idx` the TL0PICIDX when the payload
/// has that field (a field the payload lacks is not added). A payload with a picture ID
/// always comes out with a 15-bit one. Done in place when the descriptor keeps its length
/// (the payload had a 15-bit picture ID or none), else the payload is rebuilt one octet
/// longer. Returns the descriptor now at the start of `payload`.
pub fn rewrite(
    payload: &mut Vec<u8>,
    picture_id: Option<u16>,
    tl0_pic_idx: Option<u8>,
) -> Result<Descriptor, Error> {
    let old = Descriptor::parse(payload)?;
    let new = rewritten(&old, picture_id, tl0_pic_idx);
    if new.len == old.len {
        let mut head = Vec::with_capacity(new.len);
        new.write(&mut head);
        payload[..new.len].copy_from_slice(&head);
    } else {
        let mut out = Vec::with_capacity(payload.len() + new.len - old.len);
        new.write(&mut out);
        out.extend_from_slice(&payload[old.len..]);
        *payload = out;
    }
    Ok(new)
}

/// Append to `out` the payload `payload` rewritten as by [`rewrite`] (without modifying
/// `payload`). Returns the written descriptor.
pub fn rewrite_into(
    payload: &[u8],
    picture_id: Option<u16>,
    tl0_pic_idx: Option<u8>,
    out: &mut Vec<u8>,
) -> Result<Descriptor, Error> {
    let old = Descriptor::parse(payload)?;
    let new = rewritten(&old, picture_id, tl0_pic_idx);
    new.write(out);
    out.extend_from_slice(&payload[old.len..]);
    Ok(new)
}

/// `old` with the new values applied and the picture ID made 15-bit.
pub(crate) fn rewritten(
    old: &Descriptor,
    picture_id: Option<u16>,
    tl0_pic_idx: Option<u8>,
) -> Descriptor {
    let mut d = *old;
    if let Some(p) = d.picture_id {
        d.picture_id = Some(picture_id.unwrap_or(p) & (PICTURE_ID_MODULUS - 1));
        d.long_picture_id = true;
    }
    if d.tl0_pic_idx.is_some() {
        d.tl0_pic_idx = tl0_pic_idx.or(d.tl0_pic_idx);
    }
    d.len = d.written_len();
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_field() {
        // X, N, S, PID 2; I L T K; 15-bit picture ID 0x1234; TL0PICIDX 9; TID 2 Y KEYIDX 5.
        let p = [0xB2, 0xF0, 0x92, 0x34, 0x09, 0xA5, 0xAA];
        let d = Descriptor::parse(&p).unwrap();
        assert_eq!(
            d,
            Descriptor {
                non_reference: true,
                start_of_partition: true,
                partition_index: 2,
                picture_id: Some(0x1234),
                long_picture_id: true,
                tl0_pic_idx: Some(9),
                tid: Some(2),
                layer_sync: true,
                key_idx: Some(5),
                len: 6,
            }
        );
        let mut w = Vec::new();
        d.write(&mut w);
        assert_eq!(w, p[..6]);
    }

    #[test]
    fn minimal_and_errors() {
        let d = Descriptor::parse(&[0x10, 0x00]).unwrap();
        assert!(d.starts_frame());
        assert_eq!(d.len, 1);
        assert_eq!(Descriptor::parse(&[]), Err(Error::Empty));
        assert_eq!(Descriptor::parse(&[0x10]), Err(Error::NoData));
        assert_eq!(Descriptor::parse(&[0x90, 0x80]), Err(Error::Truncated));
        assert_eq!(
            Descriptor::parse(&[0x90, 0x80, 0x80]),
            Err(Error::Truncated)
        );
        assert_eq!(
            Descriptor::parse(&[0x90, 0x80, 0x80, 1]),
            Err(Error::NoData)
        );
    }

    #[test]
    fn seven_bit_picture_id_is_widened_by_rebuilding() {
        let mut p = vec![0x90, 0xC0, 0x05, 0x07, 0x9C, 0x01];
        let d = rewrite(&mut p, Some(0x4321), Some(8)).unwrap();
        assert_eq!(d.len, 5);
        assert_eq!(p, vec![0x90, 0xC0, 0xC3, 0x21, 0x08, 0x9C, 0x01]);
        // Now 15-bit: the next rewrite is in place.
        let d = rewrite(&mut p, None, None).unwrap();
        assert_eq!(d.picture_id, Some(0x4321));
        assert_eq!(p.len(), 7);
    }

    #[test]
    fn keyframe_header() {
        // Frame tag with P = 0, start code, 640x480.
        let data = [0x50, 0x2A, 0x00, 0x9D, 0x01, 0x2A, 0x80, 0x02, 0xE0, 0x01];
        assert!(is_keyframe_data(&data));
        let s = keyframe_size(&data).unwrap();
        assert_eq!((s.width, s.height), (640, 480));
        let mut payload = vec![0x10];
        payload.extend_from_slice(&data);
        assert!(is_keyframe_start(&payload));
        payload[0] = 0x00; // S = 0: a continuation, not a frame start
        assert!(!is_keyframe_start(&payload));
        payload[0] = 0x10;
        payload[1] |= 1; // P = 1: an interframe
        assert!(!is_keyframe_start(&payload));
    }
}
