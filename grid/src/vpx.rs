//! Safe wrappers around libvpx's VP8 decoder and encoder (Debian `libvpx-dev` 1.12,
//! bindings from `env-libvpx-sys`). Every `unsafe` block of the workspace's video path is in
//! this module, each with its reasoning.
//!
//! - [`Vp8Decoder`] decodes one compressed frame at a time, either into an owned
//!   [`I420`] ([`Vp8Decoder::decode_image`]) or into a summary of the shown picture (size,
//!   mean Y/U/V, libvpx's corruption flag: [`Vp8Decoder::decode`], what the pcap harness's
//!   receiver analysis needs). The image libvpx returns is only valid until the next call,
//!   so it is copied or summarised before the call returns.
//! - [`Vp8Encoder`] encodes [`I420`] pictures for real time (`VPX_DL_REALTIME`, one-pass CBR,
//!   no lag, error resilient, a high `cpu-used`), with keyframes forced on demand
//!   (`VPX_EFLAG_FORCE_KF`).
//!
//! Sizes are checked before libvpx allocates: a keyframe header announcing more than
//! [`MAX_PIXELS`] is refused without being decoded; an encoder is never made larger.
//! libvpx's errors are values ([`VpxError`]), never panics.

use std::ffi::CStr;
use std::os::raw::{c_int, c_long, c_ulong};

use vpx_sys as ffi;

pub use crate::picture::MAX_PIXELS;
use crate::picture::{check_size, chroma_size, I420};

/// What went wrong in libvpx (or before calling it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VpxError {
    /// The decoder or encoder could not be created.
    #[error("libvpx VP8 init failed: {0}")]
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
    /// The encoder configuration is unusable (size, bitrate, frame rate).
    #[error("bad encoder configuration: {0}")]
    Config(String),
    /// The picture handed to the encoder does not have the encoder's size.
    #[error("picture of {got_width}x{got_height}, encoder is {width}x{height}")]
    PictureSize {
        /// Encoder width.
        width: u32,
        /// Encoder height.
        height: u32,
        /// Picture width.
        got_width: u32,
        /// Picture height.
        got_height: u32,
    },
    /// libvpx failed to encode.
    #[error("libvpx encode: {0}")]
    Encode(String),
}

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

/// One decoded (shown) picture, copied out of libvpx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedImage {
    /// The picture.
    pub image: I420,
    /// libvpx's `VP8D_GET_FRAME_CORRUPTED` verdict (see [`Picture::corrupt`]).
    pub corrupt: bool,
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

/// A zeroed codec context on the heap (libvpx keeps pointers into it, so it must not move).
fn zeroed_ctx() -> Box<ffi::vpx_codec_ctx_t> {
    // SAFETY: vpx_codec_ctx_t is a C struct of pointers, integers and a union of pointers,
    // for which all-zeroes is the documented "not yet initialised" state.
    Box::new(unsafe { std::mem::zeroed() })
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

impl Vp8Decoder {
    /// A fresh single-threaded decoder.
    pub fn new() -> Result<Vp8Decoder, VpxError> {
        let mut ctx = zeroed_ctx();
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

    /// Decode one compressed VP8 frame and summarise the shown picture. `Ok(None)`:
    /// decoded, nothing to show (an invisible frame, e.g. an alt-ref update).
    pub fn decode(&mut self, frame: &[u8]) -> Result<Option<Picture>, VpxError> {
        self.decode_with(frame, summarise)
    }

    /// Decode one compressed VP8 frame and copy the shown picture out. `Ok(None)`: decoded,
    /// nothing to show.
    pub fn decode_image(&mut self, frame: &[u8]) -> Result<Option<DecodedImage>, VpxError> {
        self.decode_with(frame, |img, corrupt| {
            Ok(DecodedImage {
                image: copy_out(img)?,
                corrupt,
            })
        })
    }

    /// Decode `frame`; hand the last shown image (valid only during the call) to `f`.
    fn decode_with<T>(
        &mut self,
        frame: &[u8],
        mut f: impl FnMut(&ffi::vpx_image_t, bool) -> Result<T, VpxError>,
    ) -> Result<Option<T>, VpxError> {
        let len = u32::try_from(frame.len()).map_err(|_| VpxError::TooLarge(frame.len()))?;
        if frame.is_empty() {
            return Err(VpxError::Decode("empty frame".into()));
        }
        if let Some(k) = video::vp8::keyframe_size(frame) {
            if u32::from(k.width) * u32::from(k.height) > MAX_PIXELS {
                return Err(VpxError::PictureTooLarge {
                    width: k.width,
                    height: k.height,
                });
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
            // libvpx. The image returned stays valid until the next decode call, and `f`
            // copies what it needs before this function returns.
            let img = unsafe { ffi::vpx_codec_get_frame(&mut *self.ctx, &mut iter) };
            if img.is_null() {
                break;
            }
            // SAFETY: non-NULL pointer to an image owned by the decoder (see above).
            let img = unsafe { &*img };
            shown = Some(f(img, corrupt)?);
        }
        Ok(shown)
    }
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

/// Calls `f(p, row)` for every displayed row of every plane of a decoded 8-bit 4:2:0
/// image, after checking the image is one.
fn for_each_row(
    img: &ffi::vpx_image_t,
    mut f: impl FnMut(usize, &[u8]),
) -> Result<(u32, u32), VpxError> {
    if img.fmt != ffi::vpx_img_fmt_t::VPX_IMG_FMT_I420
        || img.x_chroma_shift != 1
        || img.y_chroma_shift != 1
    {
        return Err(VpxError::Decode(format!(
            "unexpected image format {:?}",
            img.fmt
        )));
    }
    check_size(img.d_w, img.d_h)
        .map_err(|_| VpxError::Decode(format!("image of {}x{}", img.d_w, img.d_h)))?;
    let (cw, ch) = chroma_size(img.d_w, img.d_h);
    for p in 0..3 {
        let (w, h) = if p == 0 {
            (img.d_w as usize, img.d_h as usize)
        } else {
            (cw as usize, ch as usize)
        };
        let stride = img.stride[p];
        let base = img.planes[p];
        if base.is_null() || stride <= 0 || (stride as usize) < w {
            return Err(VpxError::Decode(format!("plane {p} missing or malformed")));
        }
        for row in 0..h {
            // SAFETY: libvpx allocated plane `p` as at least `h` rows of `stride` bytes, of
            // which the first `w` are the displayed pixels (d_w/d_h and the 4:2:0 chroma
            // shifts checked above describe this very image); the memory is valid until
            // the next decode call and is only read here.
            let line = unsafe { std::slice::from_raw_parts(base.add(row * stride as usize), w) };
            f(p, line);
        }
    }
    Ok((img.d_w, img.d_h))
}

/// Mean Y, U, V of a decoded image.
fn summarise(img: &ffi::vpx_image_t, corrupt: bool) -> Result<Picture, VpxError> {
    let mut sums = [0u64; 3];
    let (w, h) = for_each_row(img, |p, line| {
        sums[p] += line.iter().map(|&b| u64::from(b)).sum::<u64>();
    })?;
    let (cw, ch) = chroma_size(w, h);
    let luma = f64::from(w) * f64::from(h);
    let chroma = f64::from(cw) * f64::from(ch);
    Ok(Picture {
        width: w,
        height: h,
        mean_y: sums[0] as f64 / luma,
        mean_u: sums[1] as f64 / chroma,
        mean_v: sums[2] as f64 / chroma,
        corrupt,
    })
}

/// Copy a decoded image into an owned picture.
fn copy_out(img: &ffi::vpx_image_t) -> Result<I420, VpxError> {
    let mut planes: [Vec<u8>; 3] = Default::default();
    let (w, h) = for_each_row(img, |p, line| planes[p].extend_from_slice(line))?;
    let [y, u, v] = planes;
    I420::from_planes(w, h, y, u, v).map_err(|e| VpxError::Decode(e.to_string()))
}

/// How to encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderConfig {
    /// Picture width (every picture encoded must have it).
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// Target bitrate, kbit/s (CBR).
    pub bitrate_kbps: u32,
    /// Nominal frame rate (frames per second), for rate control.
    pub fps: u32,
    /// libvpx `cpu-used` for real time: 4..=16, higher is faster and worse.
    pub cpu_used: i32,
    /// Encoder threads.
    pub threads: u32,
    /// Longest distance between automatic keyframes, in frames (0: only forced ones).
    pub keyframe_max_distance: u32,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        EncoderConfig {
            width: 640,
            height: 360,
            bitrate_kbps: 600,
            fps: 15,
            cpu_used: 12,
            threads: 1,
            keyframe_max_distance: 0,
        }
    }
}

/// One encoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    /// The VP8 frame (what a decoder or the RTP packetizer takes).
    pub data: Vec<u8>,
    /// It is a keyframe.
    pub keyframe: bool,
}

/// A libvpx VP8 encoder instance for one picture size.
pub struct Vp8Encoder {
    ctx: Box<ffi::vpx_codec_ctx_t>,
    config: EncoderConfig,
    pts: i64,
}

// SAFETY: like the decoder, an encoder context is heap state owned by this value and used
// from one thread at a time (not Sync).
unsafe impl Send for Vp8Encoder {}

impl std::fmt::Debug for Vp8Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Vp8Encoder({:?})", self.config)
    }
}

impl Vp8Encoder {
    /// A real-time VP8 encoder.
    pub fn new(config: EncoderConfig) -> Result<Vp8Encoder, VpxError> {
        check_size(config.width, config.height).map_err(|e| VpxError::Config(e.to_string()))?;
        if config.width > 16383 || config.height > 16383 {
            return Err(VpxError::Config(
                "VP8 allows at most 16383 pixels a side".into(),
            ));
        }
        if config.fps == 0 || config.fps > 1000 {
            return Err(VpxError::Config(format!("frame rate {}", config.fps)));
        }
        if config.bitrate_kbps == 0 || config.bitrate_kbps > 100_000 {
            return Err(VpxError::Config(format!(
                "bitrate {} kbit/s",
                config.bitrate_kbps
            )));
        }
        if !(-16..=16).contains(&config.cpu_used) {
            return Err(VpxError::Config(format!("cpu-used {}", config.cpu_used)));
        }
        let mut cfg = std::mem::MaybeUninit::<ffi::vpx_codec_enc_cfg_t>::uninit();
        // SAFETY: the interface is libvpx's static VP8 encoder; `cfg` points to writable
        // memory for one vpx_codec_enc_cfg_t, which the call overwrites as a whole (a struct
        // copy of the default configuration) when it returns OK; usage 0 is VP8's only one.
        let rc = unsafe {
            ffi::vpx_codec_enc_config_default(ffi::vpx_codec_vp8_cx(), cfg.as_mut_ptr(), 0)
        };
        if rc != ffi::vpx_codec_err_t::VPX_CODEC_OK {
            return Err(VpxError::Init(format!("default config: {rc:?}")));
        }
        // SAFETY: initialised by the successful call above (its enum fields hold libvpx's
        // own valid values, which is why it is not zero-initialised: some enums have no 0).
        let mut cfg = unsafe { cfg.assume_init() };
        cfg.g_w = config.width;
        cfg.g_h = config.height;
        cfg.g_threads = config.threads.clamp(1, 16);
        // Time base: 90 kHz, the RTP video clock.
        cfg.g_timebase = ffi::vpx_rational {
            num: 1,
            den: 90_000,
        };
        cfg.g_error_resilient = ffi::VPX_ERROR_RESILIENT_DEFAULT;
        cfg.g_pass = ffi::vpx_enc_pass::VPX_RC_ONE_PASS;
        cfg.g_lag_in_frames = 0;
        cfg.rc_end_usage = ffi::vpx_rc_mode::VPX_CBR;
        cfg.rc_target_bitrate = config.bitrate_kbps;
        // Never drop a frame: every tick produces a picture for the viewers.
        cfg.rc_dropframe_thresh = 0;
        cfg.rc_resize_allowed = 0;
        cfg.rc_min_quantizer = 4;
        cfg.rc_max_quantizer = 56;
        cfg.rc_undershoot_pct = 100;
        cfg.rc_overshoot_pct = 15;
        cfg.rc_buf_sz = 1000;
        cfg.rc_buf_initial_sz = 500;
        cfg.rc_buf_optimal_sz = 600;
        if config.keyframe_max_distance == 0 {
            cfg.kf_mode = ffi::vpx_kf_mode::VPX_KF_DISABLED;
        } else {
            cfg.kf_mode = ffi::vpx_kf_mode::VPX_KF_AUTO;
            cfg.kf_max_dist = config.keyframe_max_distance;
        }
        let mut ctx = zeroed_ctx();
        // SAFETY: `ctx` is a zeroed context at a stable heap address; `cfg` was filled in by
        // libvpx and adjusted with values checked above, and is only read during the call;
        // the ABI version is the bindings' (libvpx checks it).
        let rc = unsafe {
            ffi::vpx_codec_enc_init_ver(
                &mut *ctx,
                ffi::vpx_codec_vp8_cx(),
                &cfg,
                0,
                ffi::VPX_ENCODER_ABI_VERSION as c_int,
            )
        };
        if rc != ffi::vpx_codec_err_t::VPX_CODEC_OK {
            return Err(VpxError::Init(last_error(&mut ctx, rc)));
        }
        // Owned from here on: the context is destroyed (Drop) if a control below fails.
        let mut enc = Vp8Encoder {
            ctx,
            config,
            pts: 0,
        };
        // libvpx's real-time speed: negative cpu-used values mean "adaptive"; positive
        // ones a fixed speed. VP8E_SET_CPUUSED takes an int.
        enc.control(ffi::vp8e_enc_control_id::VP8E_SET_CPUUSED, config.cpu_used)?;
        // Skip encoding of static blocks (cheap for the mostly-still tiles of a grid).
        enc.control(ffi::vp8e_enc_control_id::VP8E_SET_STATIC_THRESHOLD, 1)?;
        Ok(enc)
    }

    /// Set an integer encoder control.
    fn control(&mut self, id: ffi::vp8e_enc_control_id, value: c_int) -> Result<(), VpxError> {
        // SAFETY: the context is initialised; the controls used here (CPUUSED,
        // STATIC_THRESHOLD) take one `int` argument, passed by value through the variadic
        // call as libvpx's own `vpx_codec_control` macro does.
        let rc = unsafe { ffi::vpx_codec_control_(&mut *self.ctx, id as c_int, value) };
        if rc != ffi::vpx_codec_err_t::VPX_CODEC_OK {
            return Err(VpxError::Init(last_error(&mut self.ctx, rc)));
        }
        Ok(())
    }

    /// The configuration.
    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// Encode one picture (of the encoder's size), a keyframe if `force_keyframe`. The
    /// encoder runs with no lag and never drops a frame, so one frame normally comes out;
    /// the list is what libvpx returned.
    pub fn encode(
        &mut self,
        picture: &I420,
        force_keyframe: bool,
    ) -> Result<Vec<EncodedFrame>, VpxError> {
        let (w, h) = (picture.width(), picture.height());
        if (w, h) != (self.config.width, self.config.height) {
            return Err(VpxError::PictureSize {
                width: self.config.width,
                height: self.config.height,
                got_width: w,
                got_height: h,
            });
        }
        // SAFETY: vpx_image_t is a plain C struct whose enum fields all have a 0 variant
        // (FMT_NONE, CS_UNKNOWN, STUDIO_RANGE); all-zeroes (NULL planes) is a valid value,
        // and every field libvpx reads is set below.
        let mut img: ffi::vpx_image_t = unsafe { std::mem::zeroed() };
        img.fmt = ffi::vpx_img_fmt_t::VPX_IMG_FMT_I420;
        img.cs = ffi::vpx_color_space_t::VPX_CS_BT_601;
        img.range = ffi::vpx_color_range_t::VPX_CR_STUDIO_RANGE;
        img.w = w;
        img.h = h;
        img.d_w = w;
        img.d_h = h;
        img.r_w = w;
        img.r_h = h;
        img.bit_depth = 8;
        img.bps = 12;
        img.x_chroma_shift = 1;
        img.y_chroma_shift = 1;
        for p in 0..3 {
            let (data, stride, _) = picture.plane(p);
            // libvpx takes `unsigned char *` but only reads the source picture.
            img.planes[p] = data.as_ptr() as *mut u8;
            img.stride[p] = stride as c_int;
        }
        let duration = 90_000 / c_ulong::from(self.config.fps);
        let flags: c_long = if force_keyframe {
            ffi::VPX_EFLAG_FORCE_KF as c_long
        } else {
            0
        };
        // SAFETY: the context is initialised; `img` describes `picture`'s three planes
        // exactly (sizes checked: the planes hold width x height and ceil(w/2) x ceil(h/2)
        // octets with the stated strides), which stay borrowed and unmodified for the whole
        // call; libvpx copies the picture into its own buffers (lag 0) and keeps no pointer
        // to it afterwards. VPX_DL_REALTIME is a deadline in microseconds.
        let rc = unsafe {
            ffi::vpx_codec_encode(
                &mut *self.ctx,
                &img,
                self.pts,
                duration,
                flags,
                c_ulong::from(ffi::VPX_DL_REALTIME),
            )
        };
        self.pts += duration as i64;
        if rc != ffi::vpx_codec_err_t::VPX_CODEC_OK {
            return Err(VpxError::Encode(last_error(&mut self.ctx, rc)));
        }
        let mut out = Vec::new();
        let mut iter: ffi::vpx_codec_iter_t = std::ptr::null();
        loop {
            // SAFETY: the context is initialised; `iter` starts NULL and only libvpx advances
            // it; the packet returned is valid until the next encode call and is copied
            // below before that.
            let pkt = unsafe { ffi::vpx_codec_get_cx_data(&mut *self.ctx, &mut iter) };
            if pkt.is_null() {
                break;
            }
            // SAFETY: non-NULL pointer to a packet owned by the encoder (see above).
            let pkt = unsafe { &*pkt };
            if pkt.kind != ffi::vpx_codec_cx_pkt_kind::VPX_CODEC_CX_FRAME_PKT {
                continue;
            }
            // SAFETY: for a packet of kind CX_FRAME_PKT the `frame` member of the union is
            // the one libvpx wrote.
            let frame = unsafe { pkt.data.frame };
            if frame.buf.is_null() || frame.sz == 0 {
                continue;
            }
            // SAFETY: libvpx's frame packet points at `sz` octets of compressed data in its
            // own output buffer, valid until the next encode call; copied at once.
            let data =
                unsafe { std::slice::from_raw_parts(frame.buf as *const u8, frame.sz as usize) };
            out.push(EncodedFrame {
                data: data.to_vec(),
                keyframe: frame.flags & ffi::VPX_FRAME_IS_KEY != 0,
            });
        }
        Ok(out)
    }
}

impl Drop for Vp8Encoder {
    fn drop(&mut self) {
        // SAFETY: the context was initialised by `new` (a failed init never builds an
        // encoder) and is destroyed exactly once, here.
        unsafe {
            ffi::vpx_codec_destroy(&mut *self.ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::picture::Yuv;

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
        let img = d.decode_image(&RED_16X16).unwrap().unwrap();
        let m = img.image.mean(img.image.rect()).unwrap();
        assert!((m.y - p.mean_y).abs() < 0.01 && (m.v - p.mean_v).abs() < 0.01);
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

    #[test]
    fn encodes_what_the_decoder_reads_back() {
        let cfg = EncoderConfig {
            width: 64,
            height: 48,
            ..Default::default()
        };
        let mut e = Vp8Encoder::new(cfg).unwrap();
        let mut d = Vp8Decoder::new().unwrap();
        let pic = I420::solid(64, 48, Yuv::BLUE).unwrap();
        let first = e.encode(&pic, false).unwrap();
        assert_eq!(first.len(), 1);
        assert!(first[0].keyframe, "the first frame is a keyframe");
        let second = e.encode(&pic, false).unwrap();
        assert!(!second[0].keyframe);
        let third = e.encode(&pic, true).unwrap();
        assert!(third[0].keyframe, "forced");
        for f in first.iter().chain(&second).chain(&third) {
            let out = d.decode_image(&f.data).unwrap().unwrap();
            assert_eq!((out.image.width(), out.image.height()), (64, 48));
            let m = out.image.mean(out.image.rect()).unwrap();
            assert!(m.distance(Yuv::BLUE) < 4.0, "{m:?}");
        }
        // Wrong sizes and configurations are errors.
        assert!(matches!(
            e.encode(&I420::new(32, 32).unwrap(), false),
            Err(VpxError::PictureSize { .. })
        ));
        assert!(Vp8Encoder::new(EncoderConfig { width: 0, ..cfg }).is_err());
        assert!(Vp8Encoder::new(EncoderConfig { fps: 0, ..cfg }).is_err());
    }
}
