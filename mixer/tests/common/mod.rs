//! Test harness: simulated clients that send real encoded audio and decode what the mixer
//! sends them, all in virtual time.
#![allow(dead_code)]

use mixer::{g711, Codec, Event, Mixer, MixerConfig, Output, ParticipantId, StreamParams, TICK};
use std::time::Duration;

pub fn params(codec: Codec, ptime_ms: u32) -> StreamParams {
    StreamParams {
        codec,
        payload_type: match codec {
            Codec::Opus => 111,
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        },
        telephone_event_pt: Some(101),
        ptime_ms,
        audio_level_ext_id: None,
        send: true,
        recv: true,
    }
}

pub fn clock(codec: Codec) -> u32 {
    match codec {
        Codec::Opus => 48_000,
        _ => 8_000,
    }
}

/// A signal as a function of time in seconds.
pub type Signal = Box<dyn FnMut(f64) -> f64>;

pub fn sine(freq: f64, amp: f64) -> Signal {
    Box::new(move |t| amp * (2.0 * std::f64::consts::PI * freq * t).sin())
}

pub fn silence() -> Signal {
    Box::new(|_| 0.0)
}

/// A client that sends RTP.
pub struct Sender {
    pub codec: Codec,
    pub pt: u8,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
    pub ptime_ms: u32,
    pub enc: Option<opus::Encoder>,
    pub signal: Signal,
    /// Samples produced so far (codec clock).
    pub pos: u64,
    /// RFC 6464 extension id to attach (level computed from the signal).
    pub level_ext: Option<u8>,
    /// Payloads sent so far.
    pub sent: Vec<Vec<u8>>,
}

impl Sender {
    pub fn new(codec: Codec, ptime_ms: u32, signal: Signal) -> Self {
        let enc = (codec == Codec::Opus).then(|| {
            let mut e =
                opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
            e.set_inband_fec(true).unwrap();
            e.set_packet_loss_perc(10).unwrap();
            e.set_bitrate(opus::Bitrate::Bits(32_000)).unwrap();
            e
        });
        Self {
            codec,
            pt: params(codec, 20).payload_type,
            seq: 1000,
            ts: 5000,
            ssrc: 0xC0FFEE,
            ptime_ms,
            enc,
            signal,
            pos: 0,
            level_ext: None,
            sent: Vec::new(),
        }
    }

    pub fn samples_per_packet(&self) -> u32 {
        clock(self.codec) / 1000 * self.ptime_ms
    }

    /// Next packet of `ptime_ms` audio.
    pub fn next_packet(&mut self) -> Vec<u8> {
        let rate = clock(self.codec) as f64;
        let n = self.samples_per_packet() as usize;
        let pcm: Vec<i16> = (0..n)
            .map(|i| {
                ((self.signal)((self.pos + i as u64) as f64 / rate))
                    .round()
                    .clamp(-32768.0, 32767.0) as i16
            })
            .collect();
        self.pos += n as u64;
        let payload = match self.codec {
            Codec::Opus => {
                let mut out = vec![0u8; 1500];
                let len = self.enc.as_mut().unwrap().encode(&pcm, &mut out).unwrap();
                out.truncate(len);
                out
            }
            Codec::Pcmu => pcm.iter().map(|&s| g711::linear_to_ulaw(s)).collect(),
            Codec::Pcma => pcm.iter().map(|&s| g711::linear_to_alaw(s)).collect(),
        };
        let level = self.level_ext.map(|id| (id, level_of(&pcm)));
        self.sent.push(payload.clone());
        let p = rtp(
            self.pt, self.seq, self.ts, self.ssrc, false, level, &payload,
        );
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(n as u32);
        p
    }
}

/// RFC 6464 level (0..=127, -dBov) of a frame.
pub fn level_of(pcm: &[i16]) -> u8 {
    let l = mixer::level_dbov(pcm);
    (-l).round().clamp(0.0, 127.0) as u8
}

/// Build an RTP packet, optionally with a one-byte RFC 6464 extension.
pub fn rtp(
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
    marker: bool,
    level: Option<(u8, u8)>,
    payload: &[u8],
) -> Vec<u8> {
    let mut p = vec![
        0x80 | if level.is_some() { 0x10 } else { 0 },
        pt | if marker { 0x80 } else { 0 },
    ];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    if let Some((id, lvl)) = level {
        p.extend_from_slice(&[0xBE, 0xDE, 0, 1]);
        p.extend_from_slice(&[(id << 4), 0x80 | lvl, 0, 0]);
    }
    p.extend_from_slice(payload);
    p
}

/// Header fields of a received RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hdr {
    pub marker: bool,
    pub pt: u8,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
    pub payload_len: usize,
}

pub fn parse_hdr(p: &[u8]) -> Hdr {
    assert!(p.len() >= 12);
    assert_eq!(p[0] >> 6, 2);
    Hdr {
        marker: p[1] & 0x80 != 0,
        pt: p[1] & 0x7F,
        seq: u16::from_be_bytes([p[2], p[3]]),
        ts: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
        ssrc: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
        payload_len: p.len() - 12,
    }
}

/// A client that decodes what the mixer sends it.
pub struct Receiver {
    pub codec: Codec,
    pub dec: Option<opus::Decoder>,
    /// Decoded audio at the codec's rate, one entry per packet.
    pub pcm: Vec<i16>,
    pub headers: Vec<Hdr>,
    /// Decoded samples per packet.
    pub durations: Vec<usize>,
    pub rtcp: Vec<Vec<u8>>,
}

impl Receiver {
    pub fn new(codec: Codec) -> Self {
        Self {
            codec,
            dec: (codec == Codec::Opus)
                .then(|| opus::Decoder::new(48_000, opus::Channels::Mono).unwrap()),
            pcm: Vec::new(),
            headers: Vec::new(),
            durations: Vec::new(),
            rtcp: Vec::new(),
        }
    }

    pub fn on_rtp(&mut self, p: &[u8]) {
        let h = parse_hdr(p);
        let payload = &p[12..];
        let before = self.pcm.len();
        match self.codec {
            Codec::Opus => {
                let mut out = vec![0i16; 5760];
                let n = self
                    .dec
                    .as_mut()
                    .unwrap()
                    .decode(payload, &mut out, false)
                    .unwrap();
                self.pcm.extend_from_slice(&out[..n]);
            }
            Codec::Pcmu => self
                .pcm
                .extend(payload.iter().map(|&b| g711::ulaw_to_linear(b))),
            Codec::Pcma => self
                .pcm
                .extend(payload.iter().map(|&b| g711::alaw_to_linear(b))),
        }
        self.headers.push(h);
        self.durations.push(self.pcm.len() - before);
    }

    pub fn rate(&self) -> f64 {
        clock(self.codec) as f64
    }

    /// Goertzel power of `freq` over the last `secs` seconds (normalized per sample).
    pub fn tone_power(&self, freq: f64, secs: f64) -> f64 {
        let n = ((secs * self.rate()) as usize).min(self.pcm.len());
        goertzel(&self.pcm[self.pcm.len() - n..], freq, self.rate())
    }
}

/// Normalized Goertzel power: ~ (amplitude / 2)^2 for a pure tone of that amplitude.
pub fn goertzel(x: &[i16], freq: f64, rate: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / rate;
    let c = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s = v as f64 + c * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let p = s1 * s1 + s2 * s2 - c * s1 * s2;
    p / (x.len() as f64 * x.len() as f64)
}

/// Virtual-time room: senders, receivers, a mixer, and a network delay per packet.
pub struct Room {
    pub mixer: Mixer,
    pub now: Duration,
    pub senders: Vec<(ParticipantId, Sender)>,
    pub receivers: Vec<(ParticipantId, Receiver)>,
    pub events: Vec<Event>,
    /// Packets in flight: (arrival, participant, bytes).
    pub in_flight: Vec<(Duration, ParticipantId, Vec<u8>)>,
    pub raw: Vec<Output>,
}

impl Room {
    pub fn new(seed: u64) -> Self {
        Self::with_config(MixerConfig {
            seed,
            ..Default::default()
        })
    }

    pub fn with_config(config: MixerConfig) -> Self {
        Self {
            mixer: Mixer::new(config),
            now: Duration::ZERO,
            senders: Vec::new(),
            receivers: Vec::new(),
            events: Vec::new(),
            in_flight: Vec::new(),
            raw: Vec::new(),
        }
    }

    /// Add a participant that sends `signal` with `in_ptime` and receives with `out_ptime`.
    pub fn join(
        &mut self,
        id: ParticipantId,
        codec: Codec,
        in_ptime: u32,
        out_ptime: u32,
        signal: Signal,
    ) -> u32 {
        let ssrc = self
            .mixer
            .add_participant(id, params(codec, out_ptime), self.now)
            .unwrap();
        let mut s = Sender::new(codec, in_ptime, signal);
        s.ssrc = 0x1000 + id as u32;
        self.senders.push((id, s));
        self.receivers.push((id, Receiver::new(codec)));
        self.drain();
        ssrc
    }

    pub fn sender(&mut self, id: ParticipantId) -> &mut Sender {
        &mut self.senders.iter_mut().find(|s| s.0 == id).unwrap().1
    }

    pub fn receiver(&self, id: ParticipantId) -> &Receiver {
        &self.receivers.iter().find(|s| s.0 == id).unwrap().1
    }

    pub fn drain(&mut self) {
        while let Some(o) = self.mixer.poll_output() {
            self.raw.push(o.clone());
            match o {
                Output::Rtp { to, packet } => {
                    if let Some(r) = self.receivers.iter_mut().find(|r| r.0 == to) {
                        r.1.on_rtp(&packet);
                    }
                }
                Output::Rtcp { to, packet } => {
                    if let Some(r) = self.receivers.iter_mut().find(|r| r.0 == to) {
                        r.1.rtcp.push(packet);
                    }
                }
                Output::Event(e) => self.events.push(e),
            }
        }
    }

    /// Deliver packets that arrived by `now`, in arrival order.
    pub fn deliver(&mut self) {
        self.in_flight.sort_by_key(|p| p.0);
        let now = self.now;
        let ready: Vec<_> = self
            .in_flight
            .iter()
            .filter(|p| p.0 <= now)
            .cloned()
            .collect();
        self.in_flight.retain(|p| p.0 > now);
        for (at, id, bytes) in ready {
            self.mixer.handle_rtp(id, &bytes, at);
            self.drain();
        }
    }

    /// Run `ticks` ticks in 10 ms steps: every sender emits each packet when its ptime
    /// elapses (arriving after `delay(id, seq)`, `None` = lost), the mixer ticks every 20 ms.
    pub fn run(&mut self, ticks: u32, delay: impl Fn(ParticipantId, u16) -> Option<Duration>) {
        for _ in 0..ticks {
            for half in 0..2 {
                let now = self.now;
                for (id, s) in self.senders.iter_mut() {
                    loop {
                        let due = Duration::from_micros(s.pos * 1_000_000 / clock(s.codec) as u64);
                        if due > now {
                            break;
                        }
                        let seq = s.seq;
                        let pkt = s.next_packet();
                        if let Some(d) = delay(*id, seq) {
                            self.in_flight.push((now + d, *id, pkt));
                        }
                    }
                }
                self.deliver();
                if half == 0 {
                    self.mixer.handle_tick(self.now);
                    self.drain();
                }
                self.now += TICK / 2;
            }
        }
    }
}

pub fn no_delay(_: ParticipantId, _: u16) -> Option<Duration> {
    Some(Duration::from_millis(5))
}
