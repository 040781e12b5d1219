//! Drawing the grid: a [`Layout`] (2x2 for up to 4 tiles, 3x3 up to 9) over an output
//! picture, each source picture scaled (bilinear) to fit its tile and letterboxed (aspect
//! ratio kept, the rest of the tile black), the active speaker's tile framed with a
//! highlight border, an empty tile black. Pure functions on [`I420`] pictures: no codec,
//! no state.

use crate::picture::{Rect, Yuv, I420};

/// Most tiles a layout has (3x3).
pub const MAX_TILES: usize = 9;

/// A grid of `n x n` equal tiles over a `width x height` picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    n: u32,
    width: u32,
    height: u32,
}

impl Layout {
    /// The layout for `tiles` tiles: 2x2 up to 4 (also for 0 or 1), 3x3 up to 9; `None`
    /// for more than 9.
    pub fn for_tiles(tiles: usize, width: u32, height: u32) -> Option<Layout> {
        let n = match tiles {
            0..=4 => 2,
            5..=MAX_TILES => 3,
            _ => return None,
        };
        Some(Layout { n, width, height })
    }

    /// Tiles per row (and per column).
    pub fn columns(&self) -> u32 {
        self.n
    }

    /// Number of tiles.
    pub fn tiles(&self) -> usize {
        (self.n * self.n) as usize
    }

    /// Output width.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Output height.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The rectangle of tile `i` (row-major), edges on even pixels (whole chroma samples);
    /// `None` past the last tile.
    pub fn tile(&self, i: usize) -> Option<Rect> {
        if i >= self.tiles() {
            return None;
        }
        let (col, row) = (i as u32 % self.n, i as u32 / self.n);
        let edge = |k: u32, total: u32| {
            if k == self.n {
                total
            } else {
                ((u64::from(total) * u64::from(k) / u64::from(self.n)) as u32) & !1
            }
        };
        let (x0, x1) = (edge(col, self.width), edge(col + 1, self.width));
        let (y0, y1) = (edge(row, self.height), edge(row + 1, self.height));
        Some(Rect {
            x: x0,
            y: y0,
            width: x1 - x0,
            height: y1 - y0,
        })
    }

    /// Width of the speaker's highlight border: about 1/30 of the tile height, even, at
    /// least 2 pixels (6 at 640x360 in 2x2).
    pub fn border(&self) -> u32 {
        let h = self.tile(0).map_or(0, |t| t.height);
        ((h / 30) & !1).max(2)
    }
}

/// Where a `src_w x src_h` picture goes inside `tile`, aspect ratio kept, centred, edges
/// on even pixels.
pub fn letterbox(src_w: u32, src_h: u32, tile: Rect) -> Rect {
    if src_w == 0 || src_h == 0 || tile.width == 0 || tile.height == 0 {
        return Rect::default();
    }
    // Fit the width first; if that is too tall, fit the height.
    let (mut w, mut h) = (
        tile.width,
        (u64::from(tile.width) * u64::from(src_h) / u64::from(src_w)) as u32,
    );
    if h > tile.height {
        h = tile.height;
        w = (u64::from(tile.height) * u64::from(src_w) / u64::from(src_h)) as u32;
    }
    let (w, h) = (
        (w & !1).max(2).min(tile.width),
        (h & !1).max(2).min(tile.height),
    );
    Rect {
        x: tile.x + (((tile.width - w) / 2) & !1),
        y: tile.y + (((tile.height - h) / 2) & !1),
        width: w,
        height: h,
    }
}

/// Scale all of `src` into rectangle `dst_rect` of `dst` (bilinear, each plane alone).
/// The rectangle is clipped to `dst`; its chroma is `dst_rect` halved (so it should lie on
/// even pixels, as [`Layout::tile`] and [`letterbox`] give).
pub fn scale_into(src: &I420, dst: &mut I420, dst_rect: Rect) {
    let x1 = dst_rect.x.saturating_add(dst_rect.width).min(dst.width());
    let y1 = dst_rect.y.saturating_add(dst_rect.height).min(dst.height());
    if dst_rect.x >= x1 || dst_rect.y >= y1 {
        return;
    }
    let luma = (dst_rect.x, dst_rect.y, x1 - dst_rect.x, y1 - dst_rect.y);
    let chroma = (
        luma.0 / 2,
        luma.1 / 2,
        luma.2.div_ceil(2).max(1),
        luma.3.div_ceil(2).max(1),
    );
    for p in 0..3 {
        let (s, sw, sh) = src.plane(p);
        let (d, dw, dh) = dst.plane_mut(p);
        let (x, y, w, h) = if p == 0 { luma } else { chroma };
        let w = (w as usize).min(dw.saturating_sub(x as usize));
        let h = (h as usize).min(dh.saturating_sub(y as usize));
        scale_plane(s, sw, sh, d, dw, x as usize, y as usize, w, h);
    }
}

/// 16.16 fixed point.
const ONE: u32 = 1 << 16;

/// For each of `n` destination positions over `s` source samples: the left source index
/// and the weight (0..ONE) of the right one, sampling pixel centres.
fn taps(n: usize, s: usize) -> Vec<(usize, u32)> {
    (0..n)
        .map(|i| {
            // Source coordinate of the destination pixel's centre, minus half a pixel.
            let c = ((2 * i as u64 + 1) * s as u64 * u64::from(ONE)) / (2 * n as u64);
            let c = c.saturating_sub(u64::from(ONE / 2));
            let left = (c >> 16) as usize;
            if left + 1 >= s {
                (s - 1, 0)
            } else {
                (left, (c & u64::from(ONE - 1)) as u32)
            }
        })
        .collect()
}

/// Bilinear scale of plane `s` (`sw x sh`, stride `sw`) into the `w x h` window at
/// (`x`, `y`) of plane `d` (stride `dw`).
#[allow(clippy::too_many_arguments)]
fn scale_plane(
    s: &[u8],
    sw: usize,
    sh: usize,
    d: &mut [u8],
    dw: usize,
    x: usize,
    y: usize,
    w: usize,
    h: usize,
) {
    if sw == 0 || sh == 0 || w == 0 || h == 0 {
        return;
    }
    let cols = taps(w, sw);
    let rows = taps(h, sh);
    for (j, &(sy, fy)) in rows.iter().enumerate() {
        let top = &s[sy * sw..sy * sw + sw];
        let bottom = if fy == 0 {
            top
        } else {
            &s[(sy + 1) * sw..(sy + 1) * sw + sw]
        };
        let out = &mut d[(y + j) * dw + x..(y + j) * dw + x + w];
        for (o, &(sx, fx)) in out.iter_mut().zip(&cols) {
            let sx1 = if fx == 0 { sx } else { sx + 1 };
            let t = u64::from(top[sx]) * u64::from(ONE - fx) + u64::from(top[sx1]) * u64::from(fx);
            let b = u64::from(bottom[sx]) * u64::from(ONE - fx)
                + u64::from(bottom[sx1]) * u64::from(fx);
            let v = t * u64::from(ONE - fy) + b * u64::from(fy);
            *o = ((v + (1 << 31)) >> 32) as u8;
        }
    }
}

/// Draw the grid into `out`: tile `i` shows `tiles[i]` letterboxed (black around it), or
/// black if it is `None`; tile `highlight` gets a border of [`Yuv::HIGHLIGHT`] drawn over
/// its edges. Tiles past the layout's count are ignored.
pub fn compose(out: &mut I420, layout: &Layout, tiles: &[Option<&I420>], highlight: Option<usize>) {
    out.fill(Yuv::BLACK);
    for (i, pic) in tiles.iter().enumerate().take(layout.tiles()) {
        let (Some(pic), Some(tile)) = (pic, layout.tile(i)) else {
            continue;
        };
        let r = letterbox(pic.width(), pic.height(), tile);
        scale_into(pic, out, r);
    }
    if let Some(tile) = highlight.and_then(|i| layout.tile(i)) {
        draw_border(out, tile, layout.border(), Yuv::HIGHLIGHT);
    }
}

/// A frame of width `b` just inside `r`.
pub fn draw_border(out: &mut I420, r: Rect, b: u32, c: Yuv) {
    let b = b.min(r.width / 2).min(r.height / 2);
    let edges = [
        Rect { height: b, ..r },
        Rect {
            y: r.y + r.height - b,
            height: b,
            ..r
        },
        Rect { width: b, ..r },
        Rect {
            x: r.x + r.width - b,
            width: b,
            ..r
        },
    ];
    for e in edges {
        out.fill_rect(e, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_cover_the_picture() {
        for (n, cols) in [(0, 2), (1, 2), (4, 2), (5, 3), (9, 3)] {
            let l = Layout::for_tiles(n, 640, 360).unwrap();
            assert_eq!(l.columns(), cols);
            let area: u32 = (0..l.tiles())
                .map(|i| l.tile(i).unwrap())
                .map(|t| t.width * t.height)
                .sum();
            assert_eq!(area, 640 * 360);
            assert!(l.tile(l.tiles()).is_none());
        }
        assert!(Layout::for_tiles(10, 640, 360).is_none());
        let l = Layout::for_tiles(4, 640, 360).unwrap();
        assert_eq!(
            l.tile(3),
            Some(Rect {
                x: 320,
                y: 180,
                width: 320,
                height: 180
            })
        );
        assert_eq!(l.border(), 6);
    }

    #[test]
    fn letterbox_keeps_the_aspect_ratio() {
        let tile = Rect {
            x: 320,
            y: 0,
            width: 320,
            height: 180,
        };
        // 4:3 into 16:9: pillarboxed.
        assert_eq!(
            letterbox(320, 240, tile),
            Rect {
                x: 360,
                y: 0,
                width: 240,
                height: 180
            }
        );
        // 16:9 fills it.
        assert_eq!(letterbox(1280, 720, tile), tile);
    }

    #[test]
    fn scaling_keeps_flat_colours_and_gradients() {
        let src = I420::solid(320, 240, Yuv::GREEN).unwrap();
        let mut dst = I420::new(640, 360).unwrap();
        let r = Rect {
            x: 40,
            y: 20,
            width: 100,
            height: 76,
        };
        scale_into(&src, &mut dst, r);
        assert!(dst.mean(r).unwrap().distance(Yuv::GREEN) < 0.01);
        // Nothing outside the rectangle changed.
        let left = Rect {
            x: 0,
            y: 0,
            width: 40,
            height: 360,
        };
        assert!(dst.mean(left).unwrap().distance(Yuv::BLACK) < 0.01);
        // A horizontal ramp upscaled 2x stays monotonic and spans the same range.
        let y: Vec<u8> = (0..4).flat_map(|_| [0u8, 100, 200, 250]).collect();
        let ramp = I420::from_planes(4, 4, y, vec![128; 4], vec![128; 4]).unwrap();
        let mut big = I420::new(8, 4).unwrap();
        let whole = big.rect();
        scale_into(&ramp, &mut big, whole);
        let row = &big.plane(0).0[..8];
        assert!(row.windows(2).all(|w| w[0] <= w[1]), "{row:?}");
        assert_eq!((row[0], row[7]), (0, 250));
    }

    #[test]
    fn compose_draws_tiles_border_and_black() {
        let red = I420::solid(320, 240, Yuv::RED).unwrap();
        let blue = I420::solid(160, 90, Yuv::BLUE).unwrap();
        let l = Layout::for_tiles(3, 640, 360).unwrap();
        let mut out = I420::new(640, 360).unwrap();
        compose(&mut out, &l, &[Some(&red), Some(&blue), None], Some(1));
        let t0 = l.tile(0).unwrap();
        let inner = letterbox(320, 240, t0);
        assert!(out.mean(inner).unwrap().distance(Yuv::RED) < 0.01);
        // Pillarbox bars are black.
        let bar = Rect {
            width: inner.x - t0.x,
            ..t0
        };
        assert!(out.mean(bar).unwrap().distance(Yuv::BLACK) < 0.01);
        let t1 = l.tile(1).unwrap();
        let top_edge = Rect {
            height: l.border(),
            ..t1
        };
        assert!(out.mean(top_edge).unwrap().distance(Yuv::HIGHLIGHT) < 0.01);
        let b = l.border();
        let centre = Rect {
            x: t1.x + b,
            y: t1.y + b,
            width: t1.width - 2 * b,
            height: t1.height - 2 * b,
        };
        assert!(out.mean(centre).unwrap().distance(Yuv::BLUE) < 0.01);
        for i in 2..4 {
            assert!(out.mean(l.tile(i).unwrap()).unwrap().distance(Yuv::BLACK) < 0.01);
        }
    }
}
