//! The VP8 payload descriptor against `rtc-rtp`'s parser, rewrite invariants, and the
//! packetizer / frame assembler round trip under reordering and loss.

use bytes::Bytes;
use proptest::prelude::*;
use rtc_rtp::codec::vp8::Vp8Packet;
use rtc_rtp::packetizer::Depacketizer;
use video::vp8::{self, Descriptor, FrameAssembler, Packetizer};

fn descriptor() -> impl Strategy<Value = Descriptor> {
    (
        any::<(bool, bool, u8)>(),
        proptest::option::of((0u16..0x8000, any::<bool>())),
        proptest::option::of(any::<u8>()),
        proptest::option::of((0u8..4, any::<bool>())),
        proptest::option::of(0u8..32),
    )
        .prop_map(|((n, s, pid), pic, tl0, tid, key)| {
            let mut d = Descriptor {
                non_reference: n,
                start_of_partition: s,
                partition_index: pid & 7,
                picture_id: pic.map(|(p, long)| if long { p } else { p & 0x7F }),
                long_picture_id: pic.is_some_and(|(_, long)| long),
                tl0_pic_idx: tl0,
                tid: tid.map(|t| t.0),
                layer_sync: tid.is_some_and(|t| t.1),
                key_idx: key,
                len: 0,
            };
            d.len = d.written_len();
            d
        })
}

proptest! {
    /// Whatever `rtc-rtp` accepts, we parse to the same fields and the same VP8 data.
    #[test]
    fn agrees_with_rtc_rtp(bytes in proptest::collection::vec(any::<u8>(), 4..24)) {
        let mut theirs = Vp8Packet::default();
        let r = theirs.depacketize(&Bytes::copy_from_slice(&bytes));
        let ours = Descriptor::parse(&bytes);
        if let Ok(data) = r {
            let d = ours.expect("we accept what rtc-rtp accepts");
            prop_assert_eq!(&bytes[d.len..], &data[..]);
            prop_assert_eq!(d.non_reference, theirs.n == 1);
            prop_assert_eq!(d.start_of_partition, theirs.s == 1);
            prop_assert_eq!(d.partition_index, theirs.pid);
            prop_assert_eq!(d.picture_id, (theirs.i == 1).then_some(theirs.picture_id));
            prop_assert_eq!(d.tl0_pic_idx, (theirs.l == 1).then_some(theirs.tl0_pic_idx));
            prop_assert_eq!(d.tid, (theirs.t == 1).then_some(theirs.tid));
            prop_assert_eq!(d.key_idx, (theirs.k == 1).then_some(theirs.key_idx));
        } else {
            prop_assert!(ours.is_err(), "rtc-rtp refuses {:?}, we parse {:?}", bytes, ours);
        }
    }

    /// Written descriptors parse back; rewriting changes exactly the picture ID (now 15-bit)
    /// and TL0PICIDX, in place when the length allows, never the VP8 data.
    #[test]
    fn rewrite_round_trip(
        d in descriptor(),
        data in proptest::collection::vec(any::<u8>(), 1..20),
        pic in any::<u16>(),
        tl0 in any::<u8>(),
    ) {
        let mut payload = Vec::new();
        d.write(&mut payload);
        payload.extend_from_slice(&data);
        prop_assert_eq!(Descriptor::parse(&payload).unwrap(), d);
        let old_len = payload.len();
        let new = vp8::rewrite(&mut payload, Some(pic), Some(tl0)).unwrap();
        let back = Descriptor::parse(&payload).unwrap();
        prop_assert_eq!(back, new);
        prop_assert_eq!(&payload[back.len..], &data[..]);
        prop_assert_eq!(back.picture_id, d.picture_id.map(|_| pic & 0x7FFF));
        prop_assert_eq!(back.long_picture_id, d.picture_id.is_some());
        prop_assert_eq!(back.tl0_pic_idx, d.tl0_pic_idx.map(|_| tl0));
        prop_assert_eq!((back.tid, back.key_idx, back.start_of_partition), (d.tid, d.key_idx, d.start_of_partition));
        let widened = d.picture_id.is_some() && !d.long_picture_id;
        prop_assert_eq!(payload.len(), old_len + usize::from(widened));
        let mut other = Vec::new();
        let d2 = vp8::rewrite_into(&payload, None, None, &mut other).unwrap();
        prop_assert_eq!(d2, back);
        prop_assert_eq!(other, payload);
    }

    /// Frames cut by the packetizer and fed reordered (within a frame) come back whole;
    /// a frame with a lost packet comes back flagged, and so does the frame after a gap.
    #[test]
    fn packetize_then_assemble(
        frames in proptest::collection::vec((any::<bool>(), 1usize..3000, any::<u8>()), 1..12),
        max in 20usize..1200,
        drop_frame in proptest::option::of(0usize..12),
        seed in any::<u64>(),
    ) {
        let p = Packetizer::new(max).unwrap();
        let mut a = FrameAssembler::new();
        let mut seq = (seed >> 16) as u16;
        let mut got = Vec::new();
        let mut dropped_had_packets = false;
        for (i, &(key, len, fill)) in frames.iter().enumerate() {
            let mut data = vec![fill; len];
            data[0] = if key { 0x50 } else { 0x51 };
            let payloads = p.packetize(&data, i as u16, key).unwrap();
            prop_assert!(payloads.iter().all(|x| x.len() <= max));
            let n = payloads.len();
            let mut order: Vec<usize> = (0..n).collect();
            order.rotate_left((seed as usize + i) % n);
            let dropped = drop_frame == Some(i);
            dropped_had_packets |= dropped && n > 1;
            for k in order {
                if dropped && k == n - 1 {
                    continue;
                }
                a.push(seq.wrapping_add(k as u16), 1000 * i as u32, k == n - 1, &payloads[k]).unwrap();
            }
            seq = seq.wrapping_add(n as u16);
            while let Some(f) = a.poll_frame() {
                got.push(f);
            }
            if !dropped {
                let f = got.last().expect("a whole frame comes out at once");
                prop_assert_eq!(f.timestamp, 1000 * i as u32);
                prop_assert_eq!(&f.data, &data);
                prop_assert_eq!(f.keyframe, key);
                prop_assert_eq!(f.picture_id, Some(i as u16));
                // A gap is seen when some packet came before it.
                let after_gap = drop_frame.is_some_and(|d| d + 1 == i) && (i >= 2 || dropped_had_packets);
                prop_assert_eq!(f.missing, after_gap);
            }
        }
        a.flush();
        while let Some(f) = a.poll_frame() {
            got.push(f);
        }
        if let Some(d) = drop_frame.filter(|&d| d < frames.len() && dropped_had_packets) {
            let f = got.iter().find(|f| f.timestamp == 1000 * d as u32);
            prop_assert!(f.is_some_and(|f| f.missing));
        }
        let ts: Vec<u32> = got.iter().map(|f| f.timestamp).collect();
        prop_assert!(ts.windows(2).all(|w| w[0] < w[1]), "frames in order: {:?}", ts);
    }
}

#[test]
fn assembler_takes_whole_rtp_packets_and_starts_over_on_a_new_ssrc() {
    let p = Packetizer::new(100).unwrap();
    let mut a = FrameAssembler::new();
    let data = vec![0x50u8; 250];
    for (ssrc, seq0) in [(1u32, 65534u16), (2, 10)] {
        for (k, pl) in p.packetize(&data, 3, true).unwrap().iter().enumerate() {
            let mut pkt = vec![0x80, 96 | if k == 2 { 0x80 } else { 0 }];
            pkt.extend_from_slice(&seq0.wrapping_add(k as u16).to_be_bytes());
            pkt.extend_from_slice(&77u32.to_be_bytes());
            pkt.extend_from_slice(&ssrc.to_be_bytes());
            pkt.extend_from_slice(pl);
            a.push_rtp(&pkt).unwrap();
        }
        let f = a.poll_frame().unwrap();
        assert_eq!((f.data.len(), f.keyframe, f.missing), (250, true, false));
    }
    assert_eq!(a.push_rtp(&[1, 2, 3]), Err(vp8::Error::NotRtp));
}
