//! VP8 over RTP (RFC 7741) without I/O: the payload descriptor of a packet, the VP8 frame
//! header (RFC 6386 section 9.1) at the start of a frame, and the assembly of a stream's
//! packets into frames. Decoding is [`crate::vpx`]; what a receiver makes of the frames is
//! [`crate::video`].
//!
//! The descriptor is read here rather than with `rtc_rtp::codec::vp8::Vp8Packet`, which
//! refuses payloads shorter than four bytes (a valid last fragment can be two bytes with a
//! one-byte descriptor); a unit test checks that both agree on every longer payload.
//! Nothing here panics on hostile input (fuzz target `vp8_frames`).

/// The RFC 7741 section 4.2 payload descriptor of one RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Descriptor {
    /// N: the frame is not used as a reference by any other frame (may be discarded).
    pub non_reference: bool,
    /// S: the payload starts a VP8 partition.
    pub start: bool,
    /// PID: partition index (0..=7).
    pub partition: u8,
    /// The picture ID, when present (I bit).
    pub picture_id: Option<u16>,
    /// The picture ID is 15 bits (M bit) rather than 7.
    pub picture_id_15bit: bool,
    /// TL0PICIDX, when present (L bit).
    pub tl0picidx: Option<u8>,
    /// Temporal layer index, when present (T bit).
    pub tid: Option<u8>,
    /// Layer sync bit (Y), meaningful with `tid`.
    pub layer_sync: bool,
    /// Temporal key frame index, when present (K bit).
    pub key_idx: Option<u8>,
    /// Length of the descriptor: the VP8 payload starts at this offset.
    pub len: usize,
}

impl Descriptor {
    /// Whether the packet starts a frame: S set and partition 0.
    pub fn starts_frame(&self) -> bool {
        self.start && self.partition == 0
    }
}

/// Parse the payload descriptor of an RTP payload. `None` when the payload is too short
/// for the bits it announces or holds no VP8 data after the descriptor.
pub fn parse_descriptor(p: &[u8]) -> Option<Descriptor> {
    let b0 = *p.first()?;
    let mut d = Descriptor {
        non_reference: b0 & 0x20 != 0,
        start: b0 & 0x10 != 0,
        partition: b0 & 0x07,
        ..Default::default()
    };
    let mut at = 1;
    if b0 & 0x80 != 0 {
        let x = *p.get(at)?;
        at += 1;
        if x & 0x80 != 0 {
            let m = *p.get(at)?;
            at += 1;
            if m & 0x80 != 0 {
                let lo = *p.get(at)?;
                at += 1;
                d.picture_id = Some(u16::from(m & 0x7f) << 8 | u16::from(lo));
                d.picture_id_15bit = true;
            } else {
                d.picture_id = Some(u16::from(m & 0x7f));
            }
        }
        if x & 0x40 != 0 {
            d.tl0picidx = Some(*p.get(at)?);
            at += 1;
        }
        if x & 0x30 != 0 {
            let tk = *p.get(at)?;
            at += 1;
            if x & 0x20 != 0 {
                d.tid = Some(tk >> 6);
                d.layer_sync = tk & 0x20 != 0;
            }
            if x & 0x10 != 0 {
                d.key_idx = Some(tk & 0x1f);
            }
        }
    }
    if at >= p.len() {
        return None;
    }
    d.len = at;
    Some(d)
}

/// The VP8 frame header: the 3-byte frame tag and, on key frames, the start code and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// A key frame (frame tag bit 0 clear).
    pub keyframe: bool,
    /// The frame is meant to be displayed (`show_frame`).
    pub show: bool,
    /// Size of the first partition in bytes.
    pub first_partition_size: u32,
    /// Key frames only: width and height in pixels (scaling bits dropped).
    pub size: Option<(u16, u16)>,
}

/// Parse the frame header at the start of a frame's data (after the descriptor). `None`
/// when too short, or a key frame without the `9d 01 2a` start code.
pub fn parse_frame_header(f: &[u8]) -> Option<FrameHeader> {
    let tag = u32::from(*f.first()?) | u32::from(*f.get(1)?) << 8 | u32::from(*f.get(2)?) << 16;
    let keyframe = tag & 1 == 0;
    let mut h = FrameHeader {
        keyframe,
        show: tag & 0x10 != 0,
        first_partition_size: tag >> 5,
        size: None,
    };
    if keyframe {
        if f.get(3..6)? != [0x9d, 0x01, 0x2a] {
            return None;
        }
        let w = u16::from_le_bytes([*f.get(6)?, *f.get(7)?]) & 0x3fff;
        let hgt = u16::from_le_bytes([*f.get(8)?, *f.get(9)?]) & 0x3fff;
        h.size = Some((w, hgt));
    }
    Some(h)
}

/// One RTP packet of a VP8 stream, as frame assembly needs it.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    /// Extended (wrap-free) sequence number.
    pub ext_seq: i64,
    /// RTP timestamp.
    pub ts: u32,
    /// Marker bit: the last packet of a frame.
    pub marker: bool,
    /// Capture time, seconds since the Unix epoch.
    pub time: f64,
    /// RTP payload (descriptor and VP8 data).
    pub payload: &'a [u8],
}

/// Why a frame cannot be decoded on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Damage {
    /// Its first packet is missing (no packet with S=1, PID=0 at its start).
    NoStart,
    /// Packets are missing inside it.
    Hole,
    /// Its last packet is missing (no marker, and the next frame is not adjacent).
    NoEnd,
    /// A packet's descriptor does not parse.
    BadDescriptor,
    /// The frame header does not parse.
    BadHeader,
}

/// A frame assembled from consecutive packets sharing an RTP timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// RTP timestamp.
    pub ts: u32,
    /// Extended sequence number of its first received packet.
    pub first_seq: i64,
    /// Extended sequence number of its last received packet.
    pub last_seq: i64,
    /// Packets received.
    pub packets: u32,
    /// Capture time of the packet that arrived last (epoch seconds).
    pub time: f64,
    /// Descriptor of the first received packet (picture ID, TL0PICIDX, N bit).
    pub descriptor: Option<Descriptor>,
    /// The frame header, when the frame's first packet is here.
    pub header: Option<FrameHeader>,
    /// Sequence numbers missing between the previous frame and this one (whole frames
    /// lost, or the tail of the previous frame when it had no marker).
    pub gap_before: u64,
    /// Why the frame is incomplete; `None`: every packet is here.
    pub damage: Option<Damage>,
    /// The VP8 frame (descriptors removed); empty unless complete.
    pub data: Vec<u8>,
}

impl Frame {
    /// Every packet of the frame is here and the header parses.
    pub fn complete(&self) -> bool {
        self.damage.is_none()
    }
}

/// Assemble frames from one stream segment's packets, sorted by `ext_seq` without
/// duplicates. A frame is a run of packets with one timestamp, ended by the marker bit; it
/// is complete when it starts with S=1, PID=0, has no sequence hole and ends with the
/// marker (or right before the next frame's first packet).
pub fn assemble(pkts: &[Packet<'_>]) -> Vec<Frame> {
    // Runs: [start, end) indexes of packets of one frame.
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut start = 0;
    for i in 1..=pkts.len() {
        let split = i == pkts.len() || pkts[i].ts != pkts[i - 1].ts || pkts[i - 1].marker;
        if split {
            if start < i {
                runs.push((start, i));
            }
            start = i;
        }
    }
    let mut frames = Vec::with_capacity(runs.len());
    let mut prev_last: Option<i64> = None;
    for (k, &(s, e)) in runs.iter().enumerate() {
        let run = &pkts[s..e];
        let first = &run[0];
        let last = &run[run.len() - 1];
        let descs: Vec<Option<Descriptor>> =
            run.iter().map(|p| parse_descriptor(p.payload)).collect();
        let gap_before = prev_last
            .map(|p| first.ext_seq.saturating_sub(p).saturating_sub(1).max(0) as u64)
            .unwrap_or(0);
        prev_last = Some(last.ext_seq);
        let hole = run
            .windows(2)
            .any(|w| w[1].ext_seq != w[0].ext_seq.wrapping_add(1));
        let next_adjacent = runs
            .get(k + 1)
            .is_some_and(|&(ns, _)| pkts[ns].ext_seq == last.ext_seq.wrapping_add(1));
        let first_desc = descs[0];
        let header = first_desc
            .filter(|d| d.starts_frame())
            .and_then(|d| parse_frame_header(&first.payload[d.len..]));
        let damage = if descs.iter().any(Option::is_none) {
            Some(Damage::BadDescriptor)
        } else if !first_desc.is_some_and(|d| d.starts_frame()) {
            Some(Damage::NoStart)
        } else if hole {
            Some(Damage::Hole)
        } else if !last.marker && !next_adjacent {
            Some(Damage::NoEnd)
        } else if header.is_none() {
            Some(Damage::BadHeader)
        } else {
            None
        };
        let mut data = Vec::new();
        if damage.is_none() {
            for (p, d) in run.iter().zip(&descs) {
                if let Some(d) = d {
                    data.extend_from_slice(&p.payload[d.len..]);
                }
            }
        }
        frames.push(Frame {
            ts: first.ts,
            first_seq: first.ext_seq,
            last_seq: last.ext_seq,
            packets: run.len() as u32,
            time: run.iter().map(|p| p.time).fold(f64::NEG_INFINITY, f64::max),
            descriptor: first_desc,
            header,
            gap_before,
            damage,
            data,
        });
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc_rtp::packetizer::Depacketizer;

    fn pkt(ext_seq: i64, ts: u32, marker: bool, payload: &[u8]) -> Packet<'_> {
        Packet {
            ext_seq,
            ts,
            marker,
            time: ext_seq as f64 / 100.0,
            payload,
        }
    }

    #[test]
    fn descriptor_fields() {
        // X=1 S=1 PID=0; I=1 L=1 T=1 K=1; M=1 picture id 0x1234; TL0PICIDX 7; tid 2 Y=1 key 5.
        let p = [0x90, 0xf0, 0x92, 0x34, 0x07, 0xa5, 0xaa];
        let d = parse_descriptor(&p).unwrap();
        assert!(d.start && d.starts_frame() && !d.non_reference);
        assert_eq!(d.picture_id, Some(0x1234));
        assert!(d.picture_id_15bit);
        assert_eq!(
            (d.tl0picidx, d.tid, d.layer_sync, d.key_idx),
            (Some(7), Some(2), true, Some(5))
        );
        assert_eq!(d.len, 6);
        // 7-bit picture id, N bit, partition 1, no S.
        let d = parse_descriptor(&[0xa1, 0x80, 0x05, 0xaa]).unwrap();
        assert_eq!((d.non_reference, d.start, d.partition), (true, false, 1));
        assert_eq!(
            (d.picture_id, d.picture_id_15bit, d.len),
            (Some(5), false, 3)
        );
        // Minimal descriptor plus one byte of data.
        assert_eq!(parse_descriptor(&[0x10, 0x00]).unwrap().len, 1);
        // Too short for what it announces / no data.
        for bad in [
            &[][..],
            &[0x10],
            &[0x90, 0x80, 0x81],
            &[0x90, 0x80, 0x81, 0x00],
        ] {
            assert_eq!(parse_descriptor(bad), None, "{bad:?}");
        }
    }

    /// Where rtc-rtp's depacketizer accepts a payload, it reads what this parser reads.
    #[test]
    fn agrees_with_rtc_rtp() {
        let mut seeds: Vec<Vec<u8>> = Vec::new();
        for b0 in [0x00u8, 0x10, 0x20, 0x31, 0x80, 0x90, 0xb0] {
            for x in [0x00u8, 0x80, 0x40, 0x20, 0x10, 0xf0, 0xc0] {
                for m in [0x05u8, 0x85] {
                    seeds.push(vec![b0, x, m, 0x22, 0x33, 0x44, 0x55, 0x66]);
                }
            }
        }
        let mut compared = 0;
        for p in seeds {
            let mut theirs = rtc_rtp::codec::vp8::Vp8Packet::default();
            let Ok(rest) = theirs.depacketize(&bytes::Bytes::copy_from_slice(&p)) else {
                continue;
            };
            let ours = parse_descriptor(&p).expect("rtc-rtp accepted it");
            assert_eq!(ours.len, p.len() - rest.len(), "{p:02x?}");
            assert_eq!(ours.start, theirs.s == 1);
            assert_eq!(ours.partition, theirs.pid);
            assert_eq!(ours.non_reference, theirs.n == 1);
            if theirs.i == 1 {
                assert_eq!(ours.picture_id, Some(theirs.picture_id), "{p:02x?}");
            }
            if theirs.l == 1 {
                assert_eq!(ours.tl0picidx, Some(theirs.tl0_pic_idx));
            }
            compared += 1;
        }
        assert!(compared > 50, "only {compared} payloads compared");
    }

    #[test]
    fn keyframe_header() {
        let f = [
            0xf0, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00, 0x00,
        ];
        let h = parse_frame_header(&f).unwrap();
        assert!(h.keyframe && h.show);
        assert_eq!(h.size, Some((320, 240)));
        let mut broken = f;
        broken[4] = 0;
        assert_eq!(parse_frame_header(&broken), None);
        let inter = parse_frame_header(&[0x31, 0x01, 0x00]).unwrap();
        assert!(!inter.keyframe && inter.show && inter.size.is_none());
        assert_eq!(parse_frame_header(&[0x31, 0x01]), None);
    }

    const KEY: [u8; 11] = [
        0x10, 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x10, 0x00, 0x10, 0x00,
    ];

    #[test]
    fn assembles_complete_and_damaged_frames() {
        let inter_start = [0x10, 0x31, 0x01, 0x00, 0xee];
        let cont = [0x00, 0xab, 0xcd];
        let pkts = vec![
            pkt(10, 1000, false, &KEY),
            pkt(11, 1000, true, &cont),
            pkt(12, 4000, false, &inter_start),
            // 13 lost: a hole
            pkt(14, 4000, true, &cont),
            pkt(15, 7000, false, &cont), // 15's start lost? no: it has no S bit
            pkt(16, 7000, true, &cont),
            // 17..=18 lost (a whole frame)
            pkt(19, 13000, true, &inter_start),
            pkt(20, 16000, false, &inter_start), // no marker, next not adjacent
        ];
        let f = assemble(&pkts);
        assert_eq!(f.len(), 5);
        assert!(f[0].complete());
        assert_eq!(f[0].header.unwrap().size, Some((16, 16)));
        assert_eq!(f[0].data.len(), KEY.len() - 1 + cont.len() - 1);
        assert_eq!(f[1].damage, Some(Damage::Hole));
        assert_eq!(f[2].damage, Some(Damage::NoStart));
        assert!(f[3].complete());
        assert_eq!(f[3].gap_before, 2);
        assert_eq!(f[4].damage, Some(Damage::NoEnd));
        assert!(f[1].data.is_empty());
        assert_eq!(f[0].time, 0.11);
    }

    #[test]
    fn missing_marker_with_adjacent_next_frame_is_complete() {
        let inter = [0x10, 0x31, 0x01, 0x00, 0xee];
        let f = assemble(&[pkt(1, 0, false, &KEY), pkt(2, 3000, true, &inter)]);
        assert!(f[0].complete() && f[1].complete());
    }
}
