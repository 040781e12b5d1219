//! Decoding (PCMU, PCMA, Opus) onto a media timeline, energy per 100 ms window, WAV output.

use std::path::Path;

// G.711: the workspace's one implementation, the mixer's.
use mixer::g711::{alaw_to_linear, ulaw_to_linear};

use crate::report::{ENERGY_WINDOW_MS, SILENCE_DBFS};
use crate::sip::Codec;
use crate::stream::{Pkt, Placed};
use crate::Error;

/// Audio decoded from one stream.
#[derive(Debug, Clone, Default)]
pub struct Decoded {
    /// Mono samples at `rate`, starting at the stream's first packet.
    pub samples: Timeline,
    /// Sample rate.
    pub rate: u32,
    /// Packets the decoder rejected.
    pub errors: u64,
}

/// A mono timeline that stores only the 100 ms windows holding decoded audio: silence
/// between packets (a stream paused for hours, or a capture's hostile timestamps) costs no
/// memory.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    win: usize,
    len: usize,
    windows: std::collections::BTreeMap<usize, Box<[i16]>>,
}

impl Timeline {
    /// An empty timeline at `rate` samples per second.
    pub fn new(rate: u32) -> Timeline {
        Timeline {
            win: ((rate * ENERGY_WINDOW_MS / 1000) as usize).max(1),
            len: 0,
            windows: Default::default(),
        }
    }

    /// Length in samples (up to the end of the last write).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Write `samples` starting at sample `at` (overwriting).
    pub fn write(&mut self, at: usize, samples: &[i16]) {
        let mut pos = at;
        let mut rest = samples;
        while !rest.is_empty() {
            let (w, off) = (pos / self.win, pos % self.win);
            let n = rest.len().min(self.win - off);
            let win = self.win;
            let chunk = self
                .windows
                .entry(w)
                .or_insert_with(|| vec![0; win].into_boxed_slice());
            chunk[off..off + n].copy_from_slice(&rest[..n]);
            pos += n;
            rest = &rest[n..];
        }
        self.len = self.len.max(at + samples.len());
    }

    /// The samples of 100 ms window `w` (`None`: silence), cut at the timeline's end.
    fn window(&self, w: usize) -> Option<&[i16]> {
        let end = self.len.saturating_sub(w * self.win).min(self.win);
        self.windows.get(&w).map(|c| &c[..end])
    }

    fn window_count(&self) -> usize {
        self.len.div_ceil(self.win)
    }

    /// Every sample, silence included.
    pub fn to_vec(&self) -> Vec<i16> {
        let mut v = vec![0; self.len];
        for (w, c) in &self.windows {
            let start = w * self.win;
            let n = self.len.saturating_sub(start).min(c.len());
            v[start..start + n].copy_from_slice(&c[..n]);
        }
        v
    }

    /// Level of each 100 ms window in dBFS, as [`energy_dbfs`] of [`Timeline::to_vec`].
    pub fn energy_dbfs(&self) -> Vec<f64> {
        let mut out = vec![SILENCE_DBFS; self.window_count()];
        for &w in self.windows.keys() {
            if let Some(c) = self.window(w) {
                out[w] = window_dbfs(c, self.win);
            }
        }
        out
    }
}

enum Dec {
    Ulaw,
    Alaw,
    Opus(Box<opus::Decoder>),
}

/// Whether this crate can decode the codec.
pub fn decodable(c: &Codec) -> bool {
    let n = c.name.to_ascii_lowercase();
    n == "pcmu" || n == "pcma" || n == "opus"
}

/// Decode the stream's packets of payload type `pt` onto a timeline. Packets are placed
/// by RTP timestamp within a segment; each segment (after a sequence reset) is anchored
/// at its first packet's arrival time. Gaps are silence (no concealment), so lost audio
/// shows up as low energy.
pub fn decode(pkts: &[Pkt], placed: &[Placed], pt: u8, codec: &Codec) -> Option<Decoded> {
    let name = codec.name.to_ascii_lowercase();
    let (mut dec, rate) = match name.as_str() {
        "pcmu" => (Dec::Ulaw, 8000),
        "pcma" => (Dec::Alaw, 8000),
        "opus" => (
            Dec::Opus(Box::new(
                opus::Decoder::new(48000, opus::Channels::Mono).ok()?,
            )),
            48000,
        ),
        _ => return None,
    };
    let clock = if codec.rate == 0 { rate } else { codec.rate };
    let mut order: Vec<&Placed> = placed
        .iter()
        .filter(|p| pkts[p.index].hdr.pt == pt && !pkts[p.index].truncated)
        .collect();
    order.sort_by_key(|p| (p.segment, p.ext_seq));
    let t0 = pkts.first()?.time;
    let mut out = Decoded {
        samples: Timeline::new(rate),
        rate,
        errors: 0,
    };
    let mut seg_anchor: Option<(usize, i64, i64)> = None; // (segment, ts0, sample0)
    let mut buf = vec![0i16; 5760];
    for p in order {
        let anchor = match seg_anchor {
            Some(a) if a.0 == p.segment => a,
            _ => {
                let sample0 = ((p.time - t0) * f64::from(rate)).round() as i64;
                let a = (p.segment, p.ext_ts, sample0);
                seg_anchor = Some(a);
                a
            }
        };
        let mut at = anchor.2 + (p.ext_ts - anchor.1) * i64::from(rate) / i64::from(clock);
        // A timestamp jump (more than 5 s away from wall time) re-anchors at arrival time,
        // so a bad timestamp cannot blow the timeline up.
        let arrival_at = ((p.time - t0) * f64::from(rate)).round() as i64;
        if (at - arrival_at).abs() > 5 * i64::from(rate) {
            seg_anchor = Some((p.segment, p.ext_ts, arrival_at));
            at = arrival_at;
        }
        if at < 0 {
            continue;
        }
        let payload = &pkts[p.index].payload;
        let n = match &mut dec {
            Dec::Ulaw => {
                for (s, b) in buf.iter_mut().zip(payload) {
                    *s = ulaw_to_linear(*b);
                }
                payload.len().min(buf.len())
            }
            Dec::Alaw => {
                for (s, b) in buf.iter_mut().zip(payload) {
                    *s = alaw_to_linear(*b);
                }
                payload.len().min(buf.len())
            }
            Dec::Opus(d) => match d.decode(payload, &mut buf, false) {
                Ok(n) => n,
                Err(_) => {
                    out.errors += 1;
                    continue;
                }
            },
        };
        let at = at as usize;
        // Arrival-anchored, so this only trips on captures longer than 12 hours.
        if at + n > rate as usize * 12 * 3600 {
            out.errors += 1;
            continue;
        }
        out.samples.write(at, &buf[..n]);
    }
    Some(out)
}

/// Level of each 100 ms window in dBFS (RMS relative to full scale, floor -120).
pub fn energy_dbfs(samples: &[i16], rate: u32) -> Vec<f64> {
    let win = (rate * ENERGY_WINDOW_MS / 1000) as usize;
    if win == 0 {
        return Vec::new();
    }
    samples.chunks(win).map(|c| window_dbfs(c, win)).collect()
}

/// RMS level of one window of `win` samples (`c` may be shorter: the rest is silence).
fn window_dbfs(c: &[i16], win: usize) -> f64 {
    let sum: f64 = c.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let rms = (sum / win as f64).sqrt();
    if rms <= 0.0 {
        SILENCE_DBFS
    } else {
        let db = 20.0 * (rms / 32768.0).log10();
        (db.max(SILENCE_DBFS) * 100.0).round() / 100.0
    }
}

/// Write a decoded timeline as a mono 16-bit WAV file (silence written as zeros).
pub fn write_timeline_wav(path: &Path, t: &Timeline, rate: u32) -> Result<(), Error> {
    write_samples_wav(
        path,
        (0..t.window_count()).flat_map(|w| {
            let n = t.len.saturating_sub(w * t.win).min(t.win);
            let c = t.window(w);
            (0..n).map(move |i| c.map_or(0, |c| c[i]))
        }),
        rate,
    )
}

/// Write mono 16-bit samples as a WAV file.
pub fn write_wav(path: &Path, samples: &[i16], rate: u32) -> Result<(), Error> {
    write_samples_wav(path, samples.iter().copied(), rate)
}

fn write_samples_wav(
    path: &Path,
    samples: impl Iterator<Item = i16>,
    rate: u32,
) -> Result<(), Error> {
    let out_err = |e: hound::Error| Error::Output {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).map_err(out_err)?;
    for s in samples {
        w.write_sample(s).map_err(out_err)?;
    }
    w.finalize().map_err(out_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g711_known_values() {
        assert_eq!(ulaw_to_linear(0xff), 0);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(alaw_to_linear(0xd5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xaa), 32256);
    }

    /// The mixer's G.711 decoder gives, for every byte, what this crate's own copy gave.
    #[test]
    fn g711_tables_match_the_former_harness_decoder() {
        fn old_ulaw(u: u8) -> i16 {
            let u = !u;
            let t = ((i32::from(u & 0x0f) << 3) + 0x84) << ((u & 0x70) >> 4);
            (if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
        }
        fn old_alaw(a: u8) -> i16 {
            let a = a ^ 0x55;
            let mut t = i32::from(a & 0x0f) << 4;
            let seg = (a & 0x70) >> 4;
            match seg {
                0 => t += 8,
                1 => t += 0x108,
                _ => {
                    t += 0x108;
                    t <<= seg - 1;
                }
            }
            (if a & 0x80 != 0 { t } else { -t }) as i16
        }
        for b in 0..=255u8 {
            assert_eq!(ulaw_to_linear(b), old_ulaw(b), "mu-law {b:#04x}");
            assert_eq!(alaw_to_linear(b), old_alaw(b), "A-law {b:#04x}");
        }
    }

    #[test]
    fn energy_of_full_scale_square_is_zero_db() {
        let s = vec![32767i16; 800];
        let e = energy_dbfs(&s, 8000);
        assert_eq!(e.len(), 1);
        assert!(e[0].abs() < 0.01, "{e:?}");
        assert_eq!(energy_dbfs(&[0; 800], 8000), vec![SILENCE_DBFS]);
    }

    #[test]
    fn sparse_timeline_matches_the_dense_samples() {
        let mut t = Timeline::new(8000);
        t.write(790, &[1000; 20]); // across the first window boundary
        t.write(5000, &[-3000; 160]);
        t.write(5100, &[7; 10]); // overwrite
        assert_eq!(t.len(), 5160);
        let dense = t.to_vec();
        assert_eq!(dense.len(), 5160);
        assert_eq!(
            (dense[789], dense[790], dense[809], dense[810]),
            (0, 1000, 1000, 0)
        );
        assert_eq!(
            (dense[5099], dense[5100], dense[5109], dense[5110]),
            (-3000, 7, 7, -3000)
        );
        assert_eq!(t.energy_dbfs(), energy_dbfs(&dense, 8000));
        assert_eq!(t.energy_dbfs()[3], SILENCE_DBFS);
    }
}
