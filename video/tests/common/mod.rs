//! Test harness: simulated VP8 senders (real RFC 7741 descriptors from the crate's
//! `Packetizer`, frames with real VP8 frame tags) and a parser of what receivers get.
#![allow(dead_code)]

use std::time::Duration;
use video::feedback::{self, Feedback};
use video::vp8::{Descriptor, Packetizer};
use video::{Output, ParticipantId, Switcher, VideoParams};

pub const PT: u8 = 96;
/// Frame interval of the simulated senders (30 fps).
pub const FRAME: Duration = Duration::from_micros(33_333);

pub fn params(source_ssrc: Option<u32>) -> VideoParams {
    VideoParams {
        payload_type: PT,
        send: true,
        recv: true,
        source_ssrc,
        fir: true,
        nack: true,
    }
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// VP8 data of a frame: a real frame tag (P bit), for keyframes the start code and a
/// 320x240 size, then `len` octets of `tag` (which source it came from) and the frame
/// number.
pub fn frame_data(keyframe: bool, tag: u8, number: u32, len: usize) -> Vec<u8> {
    let mut d = if keyframe {
        vec![0x50, 0x2A, 0x00, 0x9D, 0x01, 0x2A, 0x40, 0x01, 0xF0, 0x00]
    } else {
        vec![0x51, 0x2A, 0x00]
    };
    d.push(tag);
    d.extend_from_slice(&number.to_be_bytes());
    d.resize(d.len() + len, tag);
    d
}

/// One simulated VP8 camera: frames of `packets` packets, 90 kHz timestamps following the
/// virtual clock, 15-bit picture IDs (or 7-bit when `short_pid`), optional TL0PICIDX.
pub struct Sender {
    pub ssrc: u32,
    pub seq: u16,
    pub ts0: u32,
    pub pic: u16,
    pub tl0: Option<u8>,
    pub short_pid: bool,
    pub tag: u8,
    pub frames: u32,
    pub packets: usize,
    /// A keyframe comes after this many more frames (`Some(0)`: the next one).
    pub keyframe_in: Option<u32>,
    /// Frames between a keyframe request and the keyframe (encoder latency).
    pub key_delay: u32,
    /// A keyframe every this many frames, requested or not.
    pub gop: Option<u32>,
}

impl Sender {
    pub fn new(ssrc: u32, tag: u8) -> Sender {
        Sender {
            ssrc,
            seq: ssrc as u16 ^ 0x5A5A,
            ts0: ssrc.wrapping_mul(7),
            pic: (ssrc as u16) & 0x7FFF,
            tl0: None,
            short_pid: false,
            tag,
            frames: 0,
            packets: 3,
            keyframe_in: Some(0),
            key_delay: 0,
            gop: None,
        }
    }

    /// The RTP packets of the frame captured at `now` (a keyframe if one is wanted).
    pub fn frame(&mut self, now: Duration) -> Vec<Vec<u8>> {
        let key = match self.keyframe_in {
            Some(0) => {
                self.keyframe_in = None;
                true
            }
            Some(n) => {
                self.keyframe_in = Some(n - 1);
                false
            }
            None => false,
        };
        let key = key || self.gop.is_some_and(|g| self.frames.is_multiple_of(g));
        self.frame_kind(now, key)
    }

    /// A keyframe request reached the encoder.
    pub fn request_keyframe(&mut self) {
        self.keyframe_in = Some(
            self.keyframe_in
                .map_or(self.key_delay, |n| n.min(self.key_delay)),
        );
    }

    pub fn frame_kind(&mut self, now: Duration, key: bool) -> Vec<Vec<u8>> {
        let data = frame_data(key, self.tag, self.frames, 300 * self.packets);
        self.frames += 1;
        let max = data.len().div_ceil(self.packets) + 4;
        let payloads = Packetizer::new(max)
            .unwrap()
            .packetize(&data, self.pic, key)
            .unwrap();
        let ts = self.ts0.wrapping_add((now.as_nanos() * 9 / 100_000) as u32);
        let n = payloads.len();
        let mut out = Vec::new();
        for (i, mut p) in payloads.into_iter().enumerate() {
            if self.short_pid || self.tl0.is_some() {
                let d = Descriptor::parse(&p).unwrap();
                let mut nd = d;
                nd.long_picture_id = !self.short_pid;
                if self.short_pid {
                    nd.picture_id = Some(self.pic & 0x7F);
                }
                nd.tl0_pic_idx = self.tl0;
                let mut q = Vec::new();
                nd.write(&mut q);
                q.extend_from_slice(&p[d.len..]);
                p = q;
            }
            out.push(rtp(PT, i + 1 == n, self.seq, ts, self.ssrc, &p));
            self.seq = self.seq.wrapping_add(1);
        }
        self.pic = self.pic.wrapping_add(1) & if self.short_pid { 0x7F } else { 0x7FFF };
        if let Some(t) = self.tl0.as_mut() {
            *t = t.wrapping_add(1);
        }
        out
    }
}

pub fn rtp(pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, (u8::from(marker) << 7) | pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// What a receiver can observe of one RTP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub to: ParticipantId,
    pub ssrc: u32,
    pub seq: u16,
    pub ts: u32,
    pub marker: bool,
    pub pt: u8,
    pub desc: Descriptor,
    /// Source tag of the frame (the octet after the VP8 header), on frame starts.
    pub tag: Option<u8>,
    pub keyframe: bool,
    pub raw: Vec<u8>,
}

pub fn parse_seen(to: ParticipantId, p: &[u8]) -> Seen {
    assert!(
        p.len() > 12 && p[0] == 0x80,
        "not a plain RTP packet: {p:?}"
    );
    let payload = &p[12..];
    let desc = Descriptor::parse(payload).expect("VP8 descriptor");
    let data = &payload[desc.len..];
    let starts = desc.starts_frame();
    let keyframe = starts && data[0] & 1 == 0;
    let tag = starts
        .then(|| data.get(if keyframe { 10 } else { 3 }).copied())
        .flatten();
    Seen {
        to,
        ssrc: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
        seq: u16::from_be_bytes([p[2], p[3]]),
        ts: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
        marker: p[1] & 0x80 != 0,
        pt: p[1] & 0x7F,
        desc,
        tag,
        keyframe,
        raw: p.to_vec(),
    }
}

/// Everything a switcher emitted, split.
#[derive(Debug, Default)]
pub struct Drained {
    pub rtp: Vec<Seen>,
    pub rtcp: Vec<(ParticipantId, Vec<Feedback>, Vec<u8>)>,
}

impl Drained {
    pub fn rtp_to(&self, to: ParticipantId) -> Vec<&Seen> {
        self.rtp.iter().filter(|s| s.to == to).collect()
    }

    /// Keyframe requests (FIR seq, or None for PLI) sent to `to`.
    pub fn requests_to(&self, to: ParticipantId) -> Vec<Option<u8>> {
        self.rtcp
            .iter()
            .filter(|(t, _, _)| *t == to)
            .flat_map(|(_, fb, _)| fb.iter())
            .filter_map(|f| match f {
                Feedback::Fir { seq, .. } => Some(Some(*seq)),
                Feedback::Pli { .. } => Some(None),
                _ => None,
            })
            .collect()
    }

    pub fn extend(&mut self, other: Drained) {
        self.rtp.extend(other.rtp);
        self.rtcp.extend(other.rtcp);
    }
}

pub fn drain(sw: &mut Switcher) -> Drained {
    let mut d = Drained::default();
    while let Some(o) = sw.poll_output() {
        match o {
            Output::Rtp { to, packet } => d.rtp.push(parse_seen(to, &packet)),
            Output::Rtcp { to, packet } => {
                let fb = feedback::parse(&packet).expect("our RTCP parses");
                d.rtcp.push((to, fb, packet));
            }
        }
    }
    d
}

/// Assert that a receiver's stream is one continuous stream: one SSRC, sequence numbers
/// +1 per packet, timestamps never going back and moving on each frame start, picture IDs
/// +1 per frame.
pub fn assert_continuous(seen: &[&Seen]) {
    for w in seen.windows(2) {
        let (a, b) = (w[0], w[1]);
        assert_eq!(a.ssrc, b.ssrc, "SSRC changed");
        assert_eq!(b.seq, a.seq.wrapping_add(1), "seq {} -> {}", a.seq, b.seq);
        let dts = b.ts.wrapping_sub(a.ts) as i32;
        if b.desc.starts_frame() {
            assert!(dts > 0, "ts {} -> {} at a frame start", a.ts, b.ts);
            let (pa, pb) = (a.desc.picture_id.unwrap(), b.desc.picture_id.unwrap());
            assert_eq!(pb, (pa + 1) & 0x7FFF, "picture ID {pa} -> {pb}");
        } else {
            assert_eq!(dts, 0, "ts changed inside a frame");
            assert_eq!(a.desc.picture_id, b.desc.picture_id);
        }
        assert!(b.desc.long_picture_id);
    }
}

/// One input to a switcher, as recorded for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Rtp(ParticipantId, Vec<u8>),
    Rtcp(ParticipantId, Vec<u8>),
    Speaker(ParticipantId),
    Timeout,
}

pub fn apply(sw: &mut Switcher, input: &Input, now: Duration) {
    match input {
        Input::Rtp(id, p) => sw.handle_rtp(*id, p, now),
        Input::Rtcp(id, p) => sw.handle_rtcp(*id, p, now),
        Input::Speaker(id) => sw.set_speaker(*id, now).unwrap(),
        Input::Timeout => sw.handle_timeout(now),
    }
}

/// Hook called after every input of a [`Room`].
pub type OnInput = Box<dyn FnMut(&Switcher, Duration)>;

/// A room in virtual time: senders capture a frame every [`FRAME`] (each with its own
/// phase), answer keyframe requests with a keyframe on their next frame, and everything
/// is fed to the switcher in 1 ms steps. Inputs are logged for replay.
pub struct Room {
    pub sw: Switcher,
    pub senders: std::collections::BTreeMap<ParticipantId, Sender>,
    pub next_frame: std::collections::BTreeMap<ParticipantId, Duration>,
    pub now: Duration,
    pub log: Vec<(Duration, Input)>,
    pub out: Drained,
    /// `out.rtp.len()` after each input of `log`.
    pub marks: Vec<usize>,
    /// `out.rtcp.len()` after each input of `log`.
    pub rtcp_marks: Vec<usize>,
    /// Called after every input with the switcher (e.g. to ship snapshots).
    pub on_input: Option<OnInput>,
}

impl Room {
    pub fn new(sw: Switcher) -> Room {
        Room {
            sw,
            senders: Default::default(),
            next_frame: Default::default(),
            now: Duration::ZERO,
            log: Vec::new(),
            out: Drained::default(),
            marks: Vec::new(),
            rtcp_marks: Vec::new(),
            on_input: None,
        }
    }

    pub fn add_sender(&mut self, id: ParticipantId, s: Sender, phase: Duration) {
        self.senders.insert(id, s);
        self.next_frame.insert(id, self.now + phase);
    }

    pub fn input(&mut self, input: Input) {
        apply(&mut self.sw, &input, self.now);
        self.log.push((self.now, input));
        if let Some(f) = self.on_input.as_mut() {
            f(&self.sw, self.now);
        }
        let d = drain(&mut self.sw);
        for (to, fb, _) in &d.rtcp {
            let asks = fb
                .iter()
                .any(|f| matches!(f, Feedback::Fir { .. } | Feedback::Pli { .. }));
            if asks {
                if let Some(s) = self.senders.get_mut(to) {
                    s.request_keyframe();
                }
            }
        }
        self.out.extend(d);
        self.marks.push(self.out.rtp.len());
        self.rtcp_marks.push(self.out.rtcp.len());
    }

    pub fn speaker(&mut self, id: ParticipantId) {
        self.input(Input::Speaker(id));
    }

    /// Run until `end` (exclusive) in 1 ms steps.
    pub fn run_until(&mut self, end: Duration) {
        while self.now < end {
            let due: Vec<ParticipantId> = self
                .next_frame
                .iter()
                .filter(|(_, &t)| t <= self.now)
                .map(|(&id, _)| id)
                .collect();
            for id in due {
                let now = self.now;
                let packets = self.senders.get_mut(&id).unwrap().frame(now);
                for p in packets {
                    self.input(Input::Rtp(id, p));
                }
                *self.next_frame.get_mut(&id).unwrap() += FRAME;
            }
            if self.sw.poll_timeout().is_some_and(|t| t <= self.now) {
                self.input(Input::Timeout);
            }
            self.now += ms(1);
        }
    }
}
