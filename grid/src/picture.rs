//! Owned 8-bit I420 (YUV 4:2:0) pictures: what the decoder hands out, the compositor draws
//! into and the encoder takes. Planes are tightly packed (stride = plane width); chroma
//! planes are `ceil(width / 2) x ceil(height / 2)`.

/// The largest picture handled, in pixels: 4096x2304 (4K UHD is 3840x2160). Checked before
/// anything (libvpx included) allocates for a picture.
pub const MAX_PIXELS: u32 = 4096 * 2304;

/// Why a picture cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PictureError {
    /// Width or height is zero, or the picture has more than [`MAX_PIXELS`] pixels.
    #[error("picture size {width}x{height} is empty or larger than {MAX_PIXELS} pixels")]
    BadSize {
        /// Requested width.
        width: u32,
        /// Requested height.
        height: u32,
    },
    /// A plane handed to [`I420::from_planes`] does not have the size the picture needs.
    #[error("plane {plane} has {got} octets, {want} expected")]
    PlaneSize {
        /// 0 = Y, 1 = U, 2 = V.
        plane: usize,
        /// Octets given.
        got: usize,
        /// Octets needed.
        want: usize,
    },
}

/// A colour as limited-range BT.601 Y, Cb, Cr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Yuv {
    /// Luma (16..=235 for video).
    pub y: u8,
    /// Cb (16..=240, 128 = grey).
    pub u: u8,
    /// Cr (16..=240, 128 = grey).
    pub v: u8,
}

impl Yuv {
    /// Video black (Y 16, Cb 128, Cr 128): the colour of an empty tile.
    pub const BLACK: Yuv = Yuv {
        y: 16,
        u: 128,
        v: 128,
    };
    /// Pure red (from RGB 255, 0, 0).
    pub const RED: Yuv = Yuv::from_rgb(255, 0, 0);
    /// Pure green (from RGB 0, 255, 0).
    pub const GREEN: Yuv = Yuv::from_rgb(0, 255, 0);
    /// Pure blue (from RGB 0, 0, 255).
    pub const BLUE: Yuv = Yuv::from_rgb(0, 0, 255);
    /// Yellow (from RGB 255, 210, 0): the active speaker's border.
    pub const HIGHLIGHT: Yuv = Yuv::from_rgb(255, 210, 0);

    /// Full-range RGB -> limited-range BT.601 YCbCr (integer approximation used by libyuv).
    pub const fn from_rgb(r: u8, g: u8, b: u8) -> Yuv {
        let (r, g, b) = (r as i32, g as i32, b as i32);
        let y = (66 * r + 129 * g + 25 * b + 128) / 256 + 16;
        let u = (-38 * r - 74 * g + 112 * b + 128) / 256 + 128;
        let v = (112 * r - 94 * g - 18 * b + 128) / 256 + 128;
        Yuv {
            y: y as u8,
            u: u as u8,
            v: v as u8,
        }
    }
}

/// A rectangle of pixels (luma coordinates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rect {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

/// Mean Y, U and V over a region.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeanYuv {
    /// Mean luma.
    pub y: f64,
    /// Mean Cb.
    pub u: f64,
    /// Mean Cr.
    pub v: f64,
}

impl MeanYuv {
    /// Largest absolute difference of the three components from `c`.
    pub fn distance(&self, c: Yuv) -> f64 {
        (self.y - f64::from(c.y))
            .abs()
            .max((self.u - f64::from(c.u)).abs())
            .max((self.v - f64::from(c.v)).abs())
    }
}

/// An owned 8-bit I420 picture.
#[derive(Clone, PartialEq, Eq)]
pub struct I420 {
    width: u32,
    height: u32,
    y: Vec<u8>,
    u: Vec<u8>,
    v: Vec<u8>,
}

impl std::fmt::Debug for I420 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "I420({}x{})", self.width, self.height)
    }
}

/// Checks a picture size: non-empty and at most [`MAX_PIXELS`].
pub fn check_size(width: u32, height: u32) -> Result<(), PictureError> {
    if width == 0 || height == 0 || u64::from(width) * u64::from(height) > u64::from(MAX_PIXELS) {
        return Err(PictureError::BadSize { width, height });
    }
    Ok(())
}

impl I420 {
    /// A black picture.
    pub fn new(width: u32, height: u32) -> Result<I420, PictureError> {
        I420::solid(width, height, Yuv::BLACK)
    }

    /// A picture of one colour.
    pub fn solid(width: u32, height: u32, c: Yuv) -> Result<I420, PictureError> {
        check_size(width, height)?;
        let (cw, ch) = chroma_size(width, height);
        Ok(I420 {
            width,
            height,
            y: vec![c.y; width as usize * height as usize],
            u: vec![c.u; cw as usize * ch as usize],
            v: vec![c.v; cw as usize * ch as usize],
        })
    }

    /// A picture from its three tightly packed planes.
    pub fn from_planes(
        width: u32,
        height: u32,
        y: Vec<u8>,
        u: Vec<u8>,
        v: Vec<u8>,
    ) -> Result<I420, PictureError> {
        check_size(width, height)?;
        let (cw, ch) = chroma_size(width, height);
        let want = [
            width as usize * height as usize,
            cw as usize * ch as usize,
            cw as usize * ch as usize,
        ];
        for (plane, (got, want)) in [y.len(), u.len(), v.len()]
            .into_iter()
            .zip(want)
            .enumerate()
        {
            if got != want {
                return Err(PictureError::PlaneSize { plane, got, want });
            }
        }
        Ok(I420 {
            width,
            height,
            y,
            u,
            v,
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Width and height of the chroma planes.
    pub fn chroma_size(&self) -> (u32, u32) {
        chroma_size(self.width, self.height)
    }

    /// Plane `p` (0 = Y, 1 = U, 2 = V) and its width (= stride) and height.
    pub fn plane(&self, p: usize) -> (&[u8], usize, usize) {
        let (cw, ch) = self.chroma_size();
        match p {
            0 => (&self.y, self.width as usize, self.height as usize),
            1 => (&self.u, cw as usize, ch as usize),
            _ => (&self.v, cw as usize, ch as usize),
        }
    }

    /// Plane `p` (0 = Y, 1 = U, 2 = V), writable, with its width (= stride) and height.
    pub fn plane_mut(&mut self, p: usize) -> (&mut [u8], usize, usize) {
        let (cw, ch) = self.chroma_size();
        match p {
            0 => (&mut self.y, self.width as usize, self.height as usize),
            1 => (&mut self.u, cw as usize, ch as usize),
            _ => (&mut self.v, cw as usize, ch as usize),
        }
    }

    /// Paint the whole picture one colour.
    pub fn fill(&mut self, c: Yuv) {
        self.y.fill(c.y);
        self.u.fill(c.u);
        self.v.fill(c.v);
    }

    /// Paint a rectangle (clipped to the picture). Chroma covers the luma rectangle rounded
    /// outwards to even coordinates.
    pub fn fill_rect(&mut self, r: Rect, c: Yuv) {
        let x1 = r.x.saturating_add(r.width).min(self.width);
        let y1 = r.y.saturating_add(r.height).min(self.height);
        if r.x >= x1 || r.y >= y1 {
            return;
        }
        let w = self.width as usize;
        for row in r.y..y1 {
            let at = row as usize * w;
            self.y[at + r.x as usize..at + x1 as usize].fill(c.y);
        }
        let (cw, _) = self.chroma_size();
        let (cx0, cy0, cx1, cy1) = (r.x / 2, r.y / 2, x1.div_ceil(2), y1.div_ceil(2));
        for row in cy0..cy1 {
            let at = row as usize * cw as usize;
            self.u[at + cx0 as usize..at + cx1 as usize].fill(c.u);
            self.v[at + cx0 as usize..at + cx1 as usize].fill(c.v);
        }
    }

    /// Mean Y, U and V over a rectangle (clipped to the picture; chroma over the luma
    /// rectangle's chroma samples). `None` for an empty intersection.
    pub fn mean(&self, r: Rect) -> Option<MeanYuv> {
        let x1 = r.x.saturating_add(r.width).min(self.width);
        let y1 = r.y.saturating_add(r.height).min(self.height);
        if r.x >= x1 || r.y >= y1 {
            return None;
        }
        let (cw, _) = self.chroma_size();
        let avg = |plane: &[u8], stride: u32, x0: u32, y0: u32, x1: u32, y1: u32| {
            let mut sum = 0u64;
            for row in y0..y1 {
                let at = (row * stride) as usize;
                sum += plane[at + x0 as usize..at + x1 as usize]
                    .iter()
                    .map(|&b| u64::from(b))
                    .sum::<u64>();
            }
            sum as f64 / (f64::from(x1 - x0) * f64::from(y1 - y0))
        };
        let (cx0, cy0, cx1, cy1) = (r.x / 2, r.y / 2, x1.div_ceil(2), y1.div_ceil(2));
        Some(MeanYuv {
            y: avg(&self.y, self.width, r.x, r.y, x1, y1),
            u: avg(&self.u, cw, cx0, cy0, cx1, cy1),
            v: avg(&self.v, cw, cx0, cy0, cx1, cy1),
        })
    }

    /// The whole picture as a rectangle.
    pub fn rect(&self) -> Rect {
        Rect {
            x: 0,
            y: 0,
            width: self.width,
            height: self.height,
        }
    }
}

/// Chroma plane size of a `width x height` I420 picture.
pub fn chroma_size(width: u32, height: u32) -> (u32, u32) {
    (width.div_ceil(2), height.div_ceil(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked() {
        assert!(I420::new(0, 10).is_err());
        assert!(I420::new(4097, 2304).is_err());
        let p = I420::new(5, 3).unwrap();
        assert_eq!(p.chroma_size(), (3, 2));
        assert_eq!(
            I420::from_planes(2, 2, vec![0; 4], vec![0; 1], vec![0; 2]),
            Err(PictureError::PlaneSize {
                plane: 2,
                got: 2,
                want: 1
            })
        );
    }

    #[test]
    fn fill_rect_and_mean() {
        let mut p = I420::new(8, 8).unwrap();
        let r = Rect {
            x: 2,
            y: 2,
            width: 4,
            height: 4,
        };
        p.fill_rect(r, Yuv::RED);
        let m = p.mean(r).unwrap();
        assert!(m.distance(Yuv::RED) < 0.01, "{m:?}");
        let whole = p.mean(p.rect()).unwrap();
        assert!((whole.y - (16.0 * 48.0 + f64::from(Yuv::RED.y) * 16.0) / 64.0).abs() < 0.01);
        // Clipped, never out of bounds.
        p.fill_rect(
            Rect {
                x: 6,
                y: 6,
                width: 100,
                height: 100,
            },
            Yuv::BLUE,
        );
        assert!(
            p.mean(Rect {
                x: 6,
                y: 6,
                width: 2,
                height: 2
            })
            .unwrap()
            .distance(Yuv::BLUE)
                < 0.01
        );
        assert_eq!(
            p.mean(Rect {
                x: 8,
                y: 0,
                width: 1,
                height: 1
            }),
            None
        );
    }
}
