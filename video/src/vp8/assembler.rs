//! RTP packets of one VP8 source -> whole encoded frames.

use super::{is_keyframe_data, Descriptor, Error};
use std::collections::{BTreeMap, VecDeque};

/// Largest frame the assembler collects (octets of VP8 data); a bigger one is cut off and
/// reported with `missing` set.
pub const MAX_FRAME_BYTES: usize = 1 << 20;
/// Most packets one frame may have.
const MAX_FRAME_PACKETS: usize = 2048;
/// Frames being collected at once; when one more starts, the oldest is given up.
const MAX_PENDING: usize = 4;

/// One encoded VP8 frame (what a decoder takes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// RTP timestamp of the frame's packets.
    pub timestamp: u32,
    /// The VP8 data: the packets' payloads without their descriptors, in sequence order.
    pub data: Vec<u8>,
    /// The frame starts with a keyframe header (its first packet arrived and says so).
    pub keyframe: bool,
    /// Some packet is missing: of this frame (it is partial), or between the previous frame
    /// given out and this one (a reference it depends on may be lost). A decoder should
    /// skip until the next keyframe.
    pub missing: bool,
    /// Picture ID of the frame's descriptors, if they carry one.
    pub picture_id: Option<u16>,
}

struct Pending {
    timestamp: u32,
    /// Extended sequence number -> (payload data, starts the frame, marker).
    packets: BTreeMap<u64, (Vec<u8>, bool, bool)>,
    bytes: usize,
    overflow: bool,
    picture_id: Option<u16>,
}

impl Pending {
    fn first_seq(&self) -> u64 {
        self.packets.keys().next().copied().unwrap_or(0)
    }

    /// Complete: the starting packet, the marked last packet and everything in between.
    fn complete(&self) -> bool {
        let (Some((&s0, first)), Some((&se, last))) = (
            self.packets.first_key_value(),
            self.packets.last_key_value(),
        ) else {
            return false;
        };
        !self.overflow && first.1 && last.2 && (se - s0 + 1) as usize == self.packets.len()
    }
}

/// Collects the RTP packets of one VP8 source into frames (reordering within a window of
/// 4 frames, dropping duplicates and late packets). Frames come out in
/// sequence order from [`FrameAssembler::poll_frame`]: a complete frame as soon as its last
/// packet arrives, an incomplete one (`missing` set) when a later frame completes or the
/// window is full. Memory is bounded (frame size, packets per frame, window).
#[derive(Default)]
pub struct FrameAssembler {
    ssrc: Option<u32>,
    highest: Option<u64>,
    /// Extended sequence number of the last packet of the last frame given out.
    emitted: Option<u64>,
    pending: Vec<Pending>,
    ready: VecDeque<Frame>,
}

impl FrameAssembler {
    /// An empty assembler.
    pub fn new() -> FrameAssembler {
        FrameAssembler::default()
    }

    /// Feed one complete RTP packet. A packet from a new SSRC first gives out what was being
    /// collected (as incomplete frames) and starts over.
    pub fn push_rtp(&mut self, packet: &[u8]) -> Result<(), Error> {
        let rtp = crate::rtp::Rtp::parse(packet).ok_or(Error::NotRtp)?;
        if self.ssrc != Some(rtp.ssrc) {
            self.flush();
            *self = FrameAssembler {
                ready: std::mem::take(&mut self.ready),
                ssrc: Some(rtp.ssrc),
                ..Default::default()
            };
        }
        self.push(rtp.seq, rtp.timestamp, rtp.marker, rtp.payload(packet))
    }

    /// Feed one packet given by its RTP fields and payload (descriptor + VP8 data).
    pub fn push(
        &mut self,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> Result<(), Error> {
        let d = Descriptor::parse(payload)?;
        let ext = match self.highest {
            None => (1u64 << 16) | u64::from(seq),
            Some(h) => {
                let delta = i64::from(seq.wrapping_sub(h as u16) as i16);
                h.saturating_add_signed(delta)
            }
        };
        if self.emitted.is_some_and(|e| ext <= e) {
            return Ok(()); // late: its frame was given out already
        }
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        let i = match self.pending.iter().position(|p| p.timestamp == timestamp) {
            Some(i) => i,
            None => {
                if self.pending.len() == MAX_PENDING {
                    self.give_out_oldest();
                }
                self.pending.push(Pending {
                    timestamp,
                    packets: BTreeMap::new(),
                    bytes: 0,
                    overflow: false,
                    picture_id: None,
                });
                self.pending.len() - 1
            }
        };
        let p = &mut self.pending[i];
        let data = &payload[d.len..];
        if p.packets.contains_key(&ext) {
            return Ok(()); // duplicate
        }
        if p.bytes + data.len() > MAX_FRAME_BYTES || p.packets.len() == MAX_FRAME_PACKETS {
            p.overflow = true;
            return Ok(());
        }
        p.bytes += data.len();
        p.picture_id = p.picture_id.or(d.picture_id);
        p.packets
            .insert(ext, (data.to_vec(), d.starts_frame(), marker));
        if p.complete() {
            let first = p.first_seq();
            // Older frames (in sequence order) are given up first.
            while let Some(j) = self
                .pending
                .iter()
                .position(|q| q.timestamp != timestamp && q.first_seq() < first)
            {
                let q = self.pending.remove(j);
                self.give_out(q);
            }
            if let Some(j) = self.pending.iter().position(|q| q.timestamp == timestamp) {
                let q = self.pending.remove(j);
                self.give_out(q);
            }
        }
        Ok(())
    }

    /// Give out every frame still being collected (as incomplete), oldest first.
    pub fn flush(&mut self) {
        while !self.pending.is_empty() {
            self.give_out_oldest();
        }
    }

    /// The next frame, oldest first.
    pub fn poll_frame(&mut self) -> Option<Frame> {
        self.ready.pop_front()
    }

    fn give_out_oldest(&mut self) {
        if let Some((j, _)) = self
            .pending
            .iter()
            .enumerate()
            .min_by_key(|(_, p)| p.first_seq())
        {
            let q = self.pending.remove(j);
            self.give_out(q);
        }
    }

    fn give_out(&mut self, p: Pending) {
        let complete = p.complete();
        let (Some(&first), Some(&last)) = (p.packets.keys().next(), p.packets.keys().next_back())
        else {
            return;
        };
        let gap_before = self.emitted.is_some_and(|e| first != e + 1);
        self.emitted = Some(self.emitted.map_or(last, |e| e.max(last)));
        let starts = p.packets.values().next().is_some_and(|v| v.1);
        let mut data = Vec::with_capacity(p.bytes);
        for (chunk, _, _) in p.packets.values() {
            data.extend_from_slice(chunk);
        }
        self.ready.push_back(Frame {
            timestamp: p.timestamp,
            keyframe: starts && is_keyframe_data(&data),
            missing: !complete || gap_before,
            picture_id: p.picture_id,
            data,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(start: bool, byte: u8) -> Vec<u8> {
        vec![if start { 0x10 } else { 0x00 }, byte]
    }

    #[test]
    fn reordered_frame_completes_and_gap_is_flagged() {
        let mut a = FrameAssembler::new();
        a.push(11, 100, false, &payload(false, 2)).unwrap();
        a.push(10, 100, false, &payload(true, 0)).unwrap();
        assert!(a.poll_frame().is_none());
        a.push(12, 100, true, &payload(false, 3)).unwrap();
        let f = a.poll_frame().unwrap();
        assert_eq!(
            (f.timestamp, f.data.as_slice(), f.keyframe, f.missing),
            (100, &[0, 2, 3][..], true, false)
        );
        // Packet 13 (frame 200) lost entirely; frame 300 is whole but follows a gap.
        a.push(14, 300, true, &payload(true, 1)).unwrap();
        let f = a.poll_frame().unwrap();
        assert_eq!((f.timestamp, f.keyframe, f.missing), (300, false, true));
        // A late packet of an old frame is ignored.
        a.push(13, 200, true, &payload(true, 1)).unwrap();
        assert!(a.poll_frame().is_none());
    }

    #[test]
    fn incomplete_frame_is_given_out_when_a_later_one_completes() {
        let mut a = FrameAssembler::new();
        a.push(1, 10, false, &payload(true, 0)).unwrap(); // last packet (2) never comes
        a.push(3, 20, true, &payload(true, 1)).unwrap();
        let f = a.poll_frame().unwrap();
        assert_eq!((f.timestamp, f.missing), (10, true));
        let f = a.poll_frame().unwrap();
        assert_eq!((f.timestamp, f.missing), (20, true));
        assert!(a.poll_frame().is_none());
    }
}
