//! One encoded VP8 frame -> RTP payloads.

use super::{is_keyframe_data, Descriptor, Error, PICTURE_ID_MODULUS};

/// Splits encoded VP8 frames into RTP payloads of at most `max_payload_size` octets, each
/// with a descriptor carrying a 15-bit picture ID (X = 1, I = 1, M = 1: 4 octets). The
/// frame is cut into equal-sized pieces (not partition-aware: S = 1 and PID = 0 on the first
/// payload only, as RFC 7741 section 4.4 allows). The marker bit belongs on the RTP packet of
/// the last payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packetizer {
    max_payload_size: usize,
}

/// Descriptor size the packetizer writes.
const DESCRIPTOR_LEN: usize = 4;

impl Packetizer {
    /// A packetizer producing payloads of at most `max_payload_size` octets (descriptor
    /// included); it must leave room for at least one octet of data.
    pub fn new(max_payload_size: usize) -> Result<Packetizer, Error> {
        if max_payload_size <= DESCRIPTOR_LEN {
            return Err(Error::PayloadSizeTooSmall);
        }
        Ok(Packetizer { max_payload_size })
    }

    /// The payloads of `frame` with picture ID `picture_id` (taken modulo 2^15).
    /// `keyframe` states what the frame is; it must agree with the frame's own VP8 header
    /// (P bit), else [`Error::BadFrame`]. A keyframe is marked as a reference frame (N = 0);
    /// so is every other frame (the packetizer cannot tell whether it is referenced).
    pub fn packetize(
        &self,
        frame: &[u8],
        picture_id: u16,
        keyframe: bool,
    ) -> Result<Vec<Vec<u8>>, Error> {
        if frame.is_empty() || is_keyframe_data(frame) != keyframe {
            return Err(Error::BadFrame);
        }
        let room = self.max_payload_size - DESCRIPTOR_LEN;
        let count = frame.len().div_ceil(room);
        // Equal pieces: the first ones get the remainder's extra octet.
        let base = frame.len() / count;
        let extra = frame.len() % count;
        let mut out = Vec::with_capacity(count);
        let mut at = 0;
        for i in 0..count {
            let n = base + usize::from(i < extra);
            let d = Descriptor {
                start_of_partition: i == 0,
                picture_id: Some(picture_id % PICTURE_ID_MODULUS),
                long_picture_id: true,
                ..Default::default()
            };
            let mut p = Vec::with_capacity(DESCRIPTOR_LEN + n);
            d.write(&mut p);
            p.extend_from_slice(&frame[at..at + n]);
            at += n;
            out.push(p);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_evenly_and_round_trips() {
        let frame: Vec<u8> = (0..1000u32).map(|i| (i as u8) | 1).collect();
        let p = Packetizer::new(304).unwrap();
        let payloads = p.packetize(&frame, 40000, false).unwrap();
        assert_eq!(payloads.len(), 4);
        assert!(payloads.iter().all(|x| x.len() <= 304));
        let mut back = Vec::new();
        for (i, x) in payloads.iter().enumerate() {
            let d = Descriptor::parse(x).unwrap();
            assert_eq!(d.starts_frame(), i == 0);
            assert_eq!(d.picture_id, Some(40000 % 32768));
            back.extend_from_slice(&x[d.len..]);
        }
        assert_eq!(back, frame);
        assert_eq!(p.packetize(&frame, 0, true), Err(Error::BadFrame));
        assert_eq!(p.packetize(&[], 0, false), Err(Error::BadFrame));
        assert_eq!(Packetizer::new(4), Err(Error::PayloadSizeTooSmall));
    }
}
