//! Codec glue: per-participant input decoders (Opus / G.711 + 8->48 kHz resampling, with
//! concealment) feeding a 48 kHz PCM FIFO, and output encoders (Opus / 48->8 kHz + G.711)
//! producing one payload per output packet.

use crate::g711;
use crate::{Codec, Error};
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use std::collections::VecDeque;

/// Mixing sample rate.
pub const RATE: u32 = 48_000;
/// Samples per 20 ms tick at [`RATE`].
pub const TICK_SAMPLES: usize = 960;
/// Largest Opus frame (120 ms at 48 kHz).
const MAX_OPUS_SAMPLES: usize = 5760;

/// RTP clock rate of a codec.
pub fn clock_rate(codec: Codec) -> u32 {
    match codec {
        Codec::Opus => 48_000,
        Codec::Pcmu | Codec::Pcma => 8_000,
    }
}

fn codec_err(e: impl std::fmt::Display) -> Error {
    Error::Codec(e.to_string())
}

/// Fixed-ratio resampler processing 10 ms mono chunks.
struct Chunked {
    fft: Fft<f32>,
    pending: Vec<f32>,
    inbuf: Vec<f32>,
    outbuf: Vec<f32>,
}

/// Fresh G.711 resamplers built ahead of need ([`prewarm_g711`]): (8 -> 48 kHz, 48 -> 8 kHz).
static G711_POOL: std::sync::Mutex<(Vec<Chunked>, Vec<Chunked>)> =
    std::sync::Mutex::new((Vec::new(), Vec::new()));

/// Build G.711 resamplers ahead of need until at least `n` of each direction wait in a
/// process-wide pool, which participants joining later (and rooms resumed from a snapshot)
/// take from instead of building their own: an FFT resampler's construction (planning,
/// twiddles, filter, fresh memory) costs far more than a tick, and a hot-standby backup
/// resuming hundreds of G.711 participants at once would otherwise spend its first tens of
/// milliseconds on it. A pooled resampler was never used: output is the same either way.
/// Returns how many of each were built by this call.
pub fn prewarm_g711(n: usize) -> Result<usize, Error> {
    let mut built = 0;
    loop {
        let (up, down) = {
            let pool = G711_POOL.lock().unwrap_or_else(|e| e.into_inner());
            (pool.0.len() < n, pool.1.len() < n)
        };
        if !up && !down {
            return Ok(built);
        }
        // Built outside the lock: joins are not held up meanwhile.
        let a = if up {
            Some(Chunked::build(8000, 48000)?)
        } else {
            None
        };
        let b = if down {
            Some(Chunked::build(48000, 8000)?)
        } else {
            None
        };
        let mut pool = G711_POOL.lock().unwrap_or_else(|e| e.into_inner());
        pool.0.extend(a);
        pool.1.extend(b);
        built += 1;
    }
}

/// G.711 resamplers waiting in the pool of [`prewarm_g711`] (8 -> 48 kHz, 48 -> 8 kHz).
pub fn pooled_g711() -> (usize, usize) {
    let pool = G711_POOL.lock().unwrap_or_else(|e| e.into_inner());
    (pool.0.len(), pool.1.len())
}

impl Chunked {
    /// A fresh resampler: from the pool of [`prewarm_g711`] when one waits there.
    fn new(from: usize, to: usize) -> Result<Self, Error> {
        let pooled = {
            let mut pool = G711_POOL.lock().unwrap_or_else(|e| e.into_inner());
            match (from, to) {
                (8000, 48000) => pool.0.pop(),
                (48000, 8000) => pool.1.pop(),
                _ => None,
            }
        };
        match pooled {
            Some(c) => Ok(c),
            None => Self::build(from, to),
        }
    }

    fn build(from: usize, to: usize) -> Result<Self, Error> {
        let fft = Fft::<f32>::new(from, to, from / 100, 1, FixedSync::Both).map_err(codec_err)?;
        let inbuf = vec![0.0; fft.input_frames_max()];
        let outbuf = vec![0.0; fft.output_frames_max()];
        Ok(Self {
            fft,
            pending: Vec::new(),
            inbuf,
            outbuf,
        })
    }

    /// Push input samples, append every completed output chunk to `out`.
    fn process(&mut self, input: impl Iterator<Item = f32>, mut out: impl FnMut(&[f32])) {
        self.pending.extend(input);
        loop {
            let need = self.fft.input_frames_next();
            if self.pending.len() < need {
                break;
            }
            self.inbuf[..need].copy_from_slice(&self.pending[..need]);
            self.pending.drain(..need);
            let cap = self.outbuf.len();
            let (Ok(inp), Ok(mut outp)) = (
                InterleavedSlice::new(&self.inbuf[..need], 1, need),
                InterleavedSlice::new_mut(&mut self.outbuf[..], 1, cap),
            ) else {
                return;
            };
            match self.fft.process_into_buffer(&inp, &mut outp, None) {
                Ok((_, written)) => out(&self.outbuf[..written]),
                Err(_) => return,
            }
        }
    }
}

fn to_i16(x: f32) -> i16 {
    x.round().clamp(-32768.0, 32767.0) as i16
}

enum DecKind {
    Opus {
        dec: opus::Decoder,
        buf: Vec<i16>,
    },
    G711 {
        alaw: bool,
        up: Box<Chunked>,
        last: Vec<i16>,
        concealed: u32,
    },
}

/// Decoder of one participant's incoming audio into a 48 kHz FIFO.
pub struct InputDecoder {
    kind: DecKind,
    fifo: VecDeque<i16>,
    /// Digital silence logically queued after `fifo` (kept as a count: participants that
    /// are not decoded cost no sample copies).
    silent_tail: usize,
}

impl InputDecoder {
    /// New decoder for `codec`.
    pub fn new(codec: Codec) -> Result<Self, Error> {
        let kind = match codec {
            Codec::Opus => DecKind::Opus {
                dec: opus::Decoder::new(RATE, opus::Channels::Mono).map_err(codec_err)?,
                buf: vec![0; MAX_OPUS_SAMPLES],
            },
            Codec::Pcmu | Codec::Pcma => DecKind::G711 {
                alaw: codec == Codec::Pcma,
                up: Box::new(Chunked::new(8000, 48000)?),
                last: Vec::new(),
                concealed: 0,
            },
        };
        Ok(Self {
            kind,
            fifo: VecDeque::with_capacity(4 * MAX_OPUS_SAMPLES),
            silent_tail: 0,
        })
    }

    /// Samples of 48 kHz PCM buffered.
    pub fn buffered(&self) -> usize {
        self.fifo.len() + self.silent_tail
    }

    /// Materialize queued silence before real samples are appended.
    fn flush_silence(&mut self) {
        if self.silent_tail > 0 {
            self.fifo
                .extend(std::iter::repeat_n(0i16, self.silent_tail));
            self.silent_tail = 0;
        }
    }

    /// Duration of an Opus payload in 48 kHz samples (None when invalid).
    pub fn opus_duration(payload: &[u8]) -> Option<u32> {
        match opus::packet::get_nb_samples(payload, RATE) {
            Ok(n) if n > 0 && n <= MAX_OPUS_SAMPLES => Some(n as u32),
            _ => None,
        }
    }

    /// The SILK voice-activity flag the *sender's* encoder put in an Opus packet: `None`
    /// for CELT-only or empty frames (no flag), else whether its first 20 ms frame is voiced.
    ///
    /// In SILK-only and hybrid packets the first symbol of the range coder is that flag,
    /// coded with probability 1/2 (RFC 6716 section 4.2.3), and the range decoder
    /// (`rng = 128`, `val = 127 - (b0 >> 1)`) reads it as 1 exactly when the first byte of the
    /// frame has its top bit set. No decoding needed.
    pub fn opus_silk_vad(payload: &[u8]) -> Option<bool> {
        let toc = *payload.first()?;
        if toc >> 3 >= 16 {
            return None;
        }
        let parsed = opus::packet::parse(payload).ok()?;
        let first = parsed.frames.first()?;
        Some(*first.first()? >= 0x80)
    }

    /// 48 kHz samples for `dur` units of the codec clock.
    fn to_48k(&self, dur: u32) -> usize {
        match self.kind {
            DecKind::Opus { .. } => dur as usize,
            DecKind::G711 { .. } => dur as usize * 6,
        }
    }

    /// Push `dur` (codec clock) of digital silence without running the codec.
    pub fn push_silence(&mut self, dur: u32) {
        self.silent_tail += self.to_48k(dur);
        if let DecKind::G711 { concealed, .. } = &mut self.kind {
            *concealed = u32::MAX / 2;
        }
    }

    /// Decode one packet of `dur` samples (codec clock) into the FIFO.
    pub fn decode(&mut self, payload: &[u8], dur: u32) {
        self.flush_silence();
        match &mut self.kind {
            DecKind::Opus { dec, buf } => {
                let n = (dur as usize).min(buf.len());
                match dec.decode(payload, &mut buf[..n], false) {
                    Ok(got) => self.fifo.extend(buf[..got.min(n)].iter().copied()),
                    Err(_) => self.fifo.extend(std::iter::repeat_n(0i16, n)),
                }
            }
            DecKind::G711 {
                alaw,
                up,
                last,
                concealed,
            } => {
                let f = if *alaw {
                    g711::alaw_to_linear
                } else {
                    g711::ulaw_to_linear
                };
                last.clear();
                last.extend(payload.iter().map(|&b| f(b)));
                *concealed = 0;
                let fifo = &mut self.fifo;
                up.process(last.iter().map(|&s| s as f32), |o| {
                    fifo.extend(o.iter().map(|&x| to_i16(x)))
                });
            }
        }
    }

    /// Conceal `dur` lost samples (codec clock); Opus uses in-band FEC from `fec` if given,
    /// else its PLC; G.711 repeats the last frame with a 6 dB/frame fade.
    pub fn conceal(&mut self, dur: u32, fec: Option<&[u8]>) {
        self.flush_silence();
        match &mut self.kind {
            DecKind::Opus { dec, buf } => {
                // Opus needs a multiple of 2.5 ms.
                let n = ((dur as usize).div_ceil(120) * 120).min(buf.len());
                let res = match fec {
                    Some(p) => dec.decode(p, &mut buf[..n], true),
                    None => dec.decode(&[], &mut buf[..n], false),
                };
                match res {
                    Ok(got) if got > 0 => self.fifo.extend(buf[..got.min(n)].iter().copied()),
                    _ => self.fifo.extend(std::iter::repeat_n(0i16, n)),
                }
            }
            DecKind::G711 {
                up,
                last,
                concealed,
                ..
            } => {
                *concealed = concealed.saturating_add(1);
                let gain = if *concealed > 4 || last.is_empty() {
                    0.0
                } else {
                    0.5f32.powi(*concealed as i32)
                };
                let src: Vec<f32> = (0..dur as usize)
                    .map(|i| {
                        if last.is_empty() {
                            0.0
                        } else {
                            last[i % last.len()] as f32 * gain
                        }
                    })
                    .collect();
                let fifo = &mut self.fifo;
                up.process(src.into_iter(), |o| {
                    fifo.extend(o.iter().map(|&x| to_i16(x)))
                });
            }
        }
    }

    /// Conceal enough to bring the FIFO up to `want` 48 kHz samples (underrun).
    pub fn conceal_to(&mut self, want: usize) {
        let missing = want.saturating_sub(self.buffered());
        if missing == 0 {
            return;
        }
        let missing = missing.div_ceil(480) * 480;
        let dur = match self.kind {
            DecKind::Opus { .. } => missing as u32,
            DecKind::G711 { .. } => (missing / 6) as u32,
        };
        self.conceal(dur, None);
        self.pad_to(want);
    }

    /// Pad with silence up to `want` samples.
    pub fn pad_to(&mut self, want: usize) {
        self.silent_tail += want.saturating_sub(self.buffered());
    }

    /// Take exactly `out.len()` samples (zero-padded); returns how many came from the
    /// codec (decoded or concealed) rather than from queued silence.
    pub fn take(&mut self, out: &mut [i16]) -> usize {
        let n = out.len();
        self.pad_to(n);
        let real = n.min(self.fifo.len());
        let (a, b) = self.fifo.as_slices();
        let from_a = real.min(a.len());
        out[..from_a].copy_from_slice(&a[..from_a]);
        out[from_a..real].copy_from_slice(&b[..real - from_a]);
        self.fifo.drain(..real);
        out[real..].fill(0);
        self.silent_tail -= n - real;
        real
    }
}

enum EncKind {
    Opus {
        enc: Box<opus::Encoder>,
        rp: Box<opus::Repacketizer>,
    },
    G711 {
        alaw: bool,
        down: Box<Chunked>,
    },
}

/// Encoder of one output stream (or one shared listener mix).
pub struct OutputEncoder {
    kind: EncKind,
    out8k: Vec<i16>,
    complexity: i32,
    /// Opus payloads for digital silence, by frame length: encoding silence through the
    /// live encoder costs as much as speech, so a silent packet reuses one encoded once.
    silence: Vec<(usize, Vec<u8>)>,
    /// Whether the previous packet was a cached silence frame.
    was_silent: bool,
}

impl OutputEncoder {
    /// New encoder for `codec` at Opus complexity `complexity`.
    pub fn new(codec: Codec, complexity: i32) -> Result<Self, Error> {
        let kind = match codec {
            Codec::Opus => {
                let mut enc =
                    opus::Encoder::new(RATE, opus::Channels::Mono, opus::Application::Voip)
                        .map_err(codec_err)?;
                enc.set_complexity(complexity.clamp(0, 10))
                    .map_err(codec_err)?;
                enc.set_bitrate(opus::Bitrate::Bits(32_000))
                    .map_err(codec_err)?;
                enc.set_inband_fec(true).map_err(codec_err)?;
                enc.set_packet_loss_perc(5).map_err(codec_err)?;
                EncKind::Opus {
                    enc: Box::new(enc),
                    rp: Box::new(opus::Repacketizer::new().map_err(codec_err)?),
                }
            }
            Codec::Pcmu | Codec::Pcma => EncKind::G711 {
                alaw: codec == Codec::Pcma,
                down: Box::new(Chunked::new(48000, 8000)?),
            },
        };
        Ok(Self {
            kind,
            out8k: Vec::new(),
            complexity,
            silence: Vec::new(),
            was_silent: false,
        })
    }

    /// Encode `pcm` (48 kHz, a multiple of 10 ms, 10..=60 ms) into one RTP payload.
    pub fn encode(&mut self, pcm: &[i16]) -> Vec<u8> {
        let silent = pcm.iter().all(|&s| s == 0);
        // Opus: after one packet of real silence through the encoder (so that it ends the
        // previous sound cleanly), digital silence is served from a cache.
        if silent && self.was_silent && matches!(self.kind, EncKind::Opus { .. }) {
            if let Some((_, p)) = self.silence.iter().find(|(n, _)| *n == pcm.len()) {
                return p.clone();
            }
            if let Ok(mut fresh) = OutputEncoder::new(Codec::Opus, self.complexity) {
                // Two frames so the cached one is the encoder's steady silence.
                fresh.encode_inner(pcm);
                let p = fresh.encode_inner(pcm);
                self.silence.push((pcm.len(), p.clone()));
                return p;
            }
        }
        self.was_silent = silent;
        self.encode_inner(pcm)
    }

    fn encode_inner(&mut self, pcm: &[i16]) -> Vec<u8> {
        match &mut self.kind {
            EncKind::Opus { enc, rp } => {
                let n = pcm.len();
                let mut out = vec![0u8; 1500];
                if matches!(n, 480 | 960 | 1920 | 2880) {
                    let len = enc.encode(pcm, &mut out).unwrap_or(0);
                    out.truncate(len);
                    return out;
                }
                // 30 / 50 ms: encode 10 ms frames and repacketize into one packet.
                let frames: Vec<Vec<u8>> = pcm
                    .chunks(480)
                    .map(|c| {
                        let mut b = vec![0u8; 400];
                        let len = enc.encode(c, &mut b).unwrap_or(0);
                        b.truncate(len);
                        b
                    })
                    .collect();
                let refs: Vec<&[u8]> = frames.iter().map(|f| f.as_slice()).collect();
                let len = rp.combine(&refs, &mut out).unwrap_or(0);
                out.truncate(len);
                out
            }
            EncKind::G711 { alaw, down } => {
                let f = if *alaw {
                    g711::linear_to_alaw
                } else {
                    g711::linear_to_ulaw
                };
                let out8k = &mut self.out8k;
                down.process(pcm.iter().map(|&s| s as f32), |o| {
                    out8k.extend(o.iter().map(|&x| to_i16(x)))
                });
                let want = pcm.len() / 6;
                if self.out8k.len() < want {
                    let n = want - self.out8k.len();
                    self.out8k.extend(std::iter::repeat_n(0i16, n));
                }
                self.out8k.drain(..want).map(f).collect()
            }
        }
    }
}

/// Level of a 48 kHz frame in dBov (0 = full scale, -127 = digital silence).
pub fn level_dbov(pcm: &[i16]) -> f32 {
    if pcm.is_empty() {
        return -127.0;
    }
    let sum: f64 = pcm.iter().map(|&s| (s as f64) * (s as f64)).sum();
    let rms = (sum / pcm.len() as f64).sqrt();
    if rms < 1e-3 {
        return -127.0;
    }
    ((20.0 * (rms / 32767.0).log10()) as f32).clamp(-127.0, 0.0)
}
