//! A VP8 decoder: the one safe wrapper around libvpx (Debian `libvpx-dev`, bindings from
//! `env-libvpx-sys`). Every `unsafe` block of the crate's video path is in this module.
//!
//! It decodes one compressed frame at a time and hands back what a test needs to know about
//! the picture (size, mean Y/U/V, whether libvpx found it corrupt), never the pixels'
//! memory: the image libvpx returns is only valid until the next call, so it is summarised
//! here and dropped.

use std::ffi::CStr;
use std::os::raw::c_int;

use vpx_sys as ffi;

use crate::vp8::{parse_frame_header, FrameHeader};

/// What went wrong in libvpx.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VpxError {
    /// The decoder could not be created.
    #[error("libvpx VP8 decoder init failed: {0}")]
    Init(String),
    /// The frame is larger than libvpx's `unsigned int` size argument.
    #[error("frame of {0} bytes is too large")]
    TooLarge(usize),
    /// A key frame announces a picture larger than [`MAX_PIXELS`] (hostile input would
    /// make libvpx allocate gigabytes).
    #[error("key frame of {width}x{height} is larger than the {MAX_PIXELS} pixels decoded here")]
    PictureTooLarge {
        /// Announced width.
        width: u16,
        /// Announced height.
        height: u16,
    },
    /// libvpx rejected the frame (corrupt bitstream, unsupported feature, ...).
    #[error("libvpx: {0}")]
    Decode(String),
}

/// The largest key frame decoded, in pixels: 4096x2304 (4K UHD is 3840x2160).
pub const MAX_PIXELS: u32 = 4096 * 2304;

/// Summary of one decoded (shown) picture.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Picture {
    /// Displayed width in pixels.
    pub width: u32,
    /// Displayed height in pixels.
    pub height: u32,
    /// Mean luma (0..=255) over the displayed area.
    pub mean_y: f64,
    /// Mean Cb (0..=255) over the displayed area.
    pub mean_u: f64,
    /// Mean Cr (0..=255) over the displayed area.
    pub mean_v: f64,
    /// libvpx's own verdict (`VP8D_GET_FRAME_CORRUPTED`): the frame decoded, but from
    /// references or partitions it knows are damaged.
    pub corrupt: bool,
}

/// A libvpx VP8 decoder instance.
pub struct Vp8Decoder {
    ctx: Box<ffi::vpx_codec_ctx_t>,
}

// SAFETY: a libvpx decoder context is plain heap state owned by this value; libvpx keeps no
// thread-local state for it, so moving it to another thread is sound (it is not Sync).
unsafe impl Send for Vp8Decoder {}

impl std::fmt::Debug for Vp8Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vp8Decoder")
    }
}

/// libvpx's message for the context's last error (or the error code's name).
fn last_error(ctx: &mut ffi::vpx_codec_ctx_t, code: ffi::vpx_codec_err_t) -> String {
    // SAFETY: `ctx` is an initialised context (or one whose init just failed, which libvpx
    // still fills in); both functions return NULL or a pointer to a static/contextual
    // NUL-terminated string that outlives this call, and we copy it at once.
    unsafe {
        let mut msg = ffi::vpx_codec_error(ctx);
        if msg.is_null() {
            msg = ffi::vpx_codec_err_to_string(code);
        }
        let mut s = if msg.is_null() {
            format!("{code:?}")
        } else {
            CStr::from_ptr(msg).to_string_lossy().into_owned()
        };
        let detail = ffi::vpx_codec_error_detail(ctx);
        if !detail.is_null() {
            s.push_str(": ");
            s.push_str(&CStr::from_ptr(detail).to_string_lossy());
        }
        s
    }
}

impl Vp8Decoder {
    /// A fresh single-threaded decoder.
    pub fn new() -> Result<Vp8Decoder, VpxError> {
        // SAFETY: vpx_codec_ctx_t is a C struct of pointers, integers and a union of
        // pointers, for which all-zeroes is the documented "not yet initialised" state.
        let mut ctx: Box<ffi::vpx_codec_ctx_t> = Box::new(unsafe { std::mem::zeroed() });
        let cfg = ffi::vpx_codec_dec_cfg_t {
            threads: 1,
            w: 0,
            h: 0,
        };
        // SAFETY: `ctx` is a valid, writable context at a stable heap address (libvpx keeps
        // pointers into it); `cfg` is read during the call only; the interface pointer is
        // libvpx's static VP8 decoder; the ABI version is the one the bindings were made
        // for (libvpx checks it and fails with ABI_MISMATCH otherwise).
        let rc = unsafe {
            ffi::vpx_codec_dec_init_ver(
                &mut *ctx,
                ffi::vpx_codec_vp8_dx(),
                &cfg,
                0,
                ffi::VPX_DECODER_ABI_VERSION as c_int,
            )
        };
        if rc != ffi::vpx_codec_err_t::VPX_CODEC_OK {
            return Err(VpxError::Init(last_error(&mut ctx, rc)));
        }
        Ok(Vp8Decoder { ctx })
    }

    /// Decode one compressed VP8 frame. `Ok(None)`: decoded, nothing to show (an
    /// invisible frame, e.g. an alt-ref update).
    pub fn decode(&mut self, frame: &[u8]) -> Result<Option<Picture>, VpxError> {
        let len = u32::try_from(frame.len()).map_err(|_| VpxError::TooLarge(frame.len()))?;
        if frame.is_empty() {
            return Err(VpxError::Decode("empty frame".into()));
        }
        if let Some(FrameHeader {
            size: Some((width, height)),
            ..
        }) = parse_frame_header(frame)
        {
            if u32::from(width) * u32::from(height) > MAX_PIXELS {
                return Err(VpxError::PictureTooLarge { width, height });
            }
        }
        // SAFETY: the context was initialised in `new` and is not shared; `frame` is valid
        // for `len` bytes for the duration of the call (libvpx copies what it keeps);
        // user_priv is unused (NULL); deadline 0 = best quality, no time limit.
        let rc = unsafe {
            ffi::vpx_codec_decode(&mut *self.ctx, frame.as_ptr(), len, std::ptr::null_mut(), 0)
        };
        if rc != ffi::vpx_codec_err_t::VPX_CODEC_OK {
            return Err(VpxError::Decode(last_error(&mut self.ctx, rc)));
        }
        let mut corrupted: c_int = 0;
        // SAFETY: VP8D_GET_FRAME_CORRUPTED takes one `int *` argument, which points to a
        // live local; the context is initialised.
        let rc = unsafe {
            ffi::vpx_codec_control_(
                &mut *self.ctx,
                ffi::vp8_dec_control_id::VP8D_GET_FRAME_CORRUPTED as c_int,
                &mut corrupted as *mut c_int,
            )
        };
        let corrupt = rc == ffi::vpx_codec_err_t::VPX_CODEC_OK && corrupted != 0;
        let mut iter: ffi::vpx_codec_iter_t = std::ptr::null();
        let mut shown = None;
        loop {
            // SAFETY: the context is initialised; `iter` starts NULL and is only advanced by
            // libvpx. The image returned stays valid until the next decode call, and it is
            // summarised (copied into numbers) before this function returns.
            let img = unsafe { ffi::vpx_codec_get_frame(&mut *self.ctx, &mut iter) };
            if img.is_null() {
                break;
            }
            // SAFETY: non-NULL pointer to an image owned by the decoder (see above).
            let img = unsafe { &*img };
            shown = Some(summarise(img, corrupt)?);
        }
        Ok(shown)
    }
}

/// Width and height of plane `p` of an I420 image, and whether the image is one.
fn plane_dims(img: &ffi::vpx_image_t, p: usize) -> (usize, usize) {
    let (w, h) = (img.d_w as usize, img.d_h as usize);
    if p == 0 {
        (w, h)
    } else {
        let (sx, sy) = (img.x_chroma_shift, img.y_chroma_shift);
        ((w + (1 << sx) - 1) >> sx, (h + (1 << sy) - 1) >> sy)
    }
}

/// Mean Y, U, V of a decoded 8-bit 4:2:0 image.
fn summarise(img: &ffi::vpx_image_t, corrupt: bool) -> Result<Picture, VpxError> {
    if img.fmt != ffi::vpx_img_fmt_t::VPX_IMG_FMT_I420 || img.x_chroma_shift > 4 {
        return Err(VpxError::Decode(format!(
            "unexpected image format {:?}",
            img.fmt
        )));
    }
    let mut means = [0.0f64; 3];
    for (p, mean) in means.iter_mut().enumerate() {
        let (w, h) = plane_dims(img, p);
        let stride = img.stride[p];
        let base = img.planes[p];
        if base.is_null() || stride <= 0 || (stride as usize) < w || w == 0 || h == 0 {
            return Err(VpxError::Decode(format!("plane {p} missing or malformed")));
        }
        let mut sum: u64 = 0;
        for row in 0..h {
            // SAFETY: libvpx allocated plane `p` as `h` rows of `stride` bytes, of which the
            // first `w` are the displayed pixels (d_w/d_h and the chroma shifts describe
            // this very image); the memory is valid until the next decode call and we only
            // read it here.
            let line = unsafe { std::slice::from_raw_parts(base.add(row * stride as usize), w) };
            sum += line.iter().map(|&b| u64::from(b)).sum::<u64>();
        }
        *mean = sum as f64 / (w * h) as f64;
    }
    Ok(Picture {
        width: img.d_w,
        height: img.d_h,
        mean_y: means[0],
        mean_u: means[1],
        mean_v: means[2],
        corrupt,
    })
}

impl Drop for Vp8Decoder {
    fn drop(&mut self) {
        // SAFETY: the context was initialised by `new` (a failed init never builds a
        // decoder) and is destroyed exactly once, here.
        unsafe {
            ffi::vpx_codec_destroy(&mut *self.ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 16x16 solid red keyframe from GStreamer's vp8enc (libvpx 1.12):
    /// `videotestsrc num-buffers=1 pattern=solid-color foreground-color=0xffff0000 !
    /// video/x-raw,width=16,height=16 ! vp8enc ! filesink`.
    const RED_16X16: [u8; 57] = [
        0xf0, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x10, 0x00, 0x10, 0x00, 0x00, 0x47, 0x08, 0x85, 0x85,
        0x88, 0x85, 0x84, 0x88, 0x02, 0x02, 0x02, 0x75, 0xaa, 0x03, 0xf8, 0x03, 0xfa, 0x02, 0x0d,
        0x4d, 0x18, 0x00, 0xfe, 0xfd, 0x6e, 0xf3, 0xff, 0xe3, 0x99, 0x37, 0x30, 0xc4, 0xff, 0x8e,
        0x6d, 0xff, 0xf1, 0x61, 0x3c, 0x0e, 0x28, 0xc8, 0xff, 0xf1, 0x51, 0x00,
    ];

    #[test]
    fn decodes_a_red_keyframe() {
        let mut d = Vp8Decoder::new().unwrap();
        let p = d.decode(&RED_16X16).unwrap().expect("a shown frame");
        assert_eq!((p.width, p.height), (16, 16));
        // BT.601 limited range red: Y 81, Cb 90, Cr 240.
        assert!((p.mean_y - 81.0).abs() < 4.0, "{p:?}");
        assert!((p.mean_u - 90.0).abs() < 4.0, "{p:?}");
        assert!((p.mean_v - 240.0).abs() < 4.0, "{p:?}");
        assert!(!p.corrupt);
    }

    #[test]
    fn garbage_is_an_error_not_a_crash() {
        let mut d = Vp8Decoder::new().unwrap();
        assert!(d.decode(&[]).is_err());
        assert!(d.decode(&[0x00, 0x01, 0x02]).is_err());
        let mut cut = RED_16X16;
        cut[3] = 0; // keyframe start code broken
        assert!(d.decode(&cut).is_err());
        // The decoder still works afterwards.
        assert!(d.decode(&RED_16X16).unwrap().is_some());
        // A key frame announcing 16383x16383 is refused before libvpx allocates for it.
        let mut huge = RED_16X16;
        huge[6..10].copy_from_slice(&[0xff, 0x3f, 0xff, 0x3f]);
        assert_eq!(
            d.decode(&huge),
            Err(VpxError::PictureTooLarge {
                width: 16383,
                height: 16383
            })
        );
    }
}
