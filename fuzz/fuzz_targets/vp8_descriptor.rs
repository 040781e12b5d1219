#![no_main]
//! The VP8 module of the `video` crate on untrusted payloads: the RFC 7741 descriptor
//! parser, picture ID / TL0PICIDX rewriting (in place and rebuilt), keyframe detection and
//! size, the packetizer and the frame assembler.
//!
//! Input: `[pic_hi][pic_lo][tl0][max]` then records `[len: u8][flags: u8][len bytes]`.
//! Each record is a VP8 RTP payload (descriptor + data); `flags` gives its sequence step
//! (`flags & 7`, backwards when `flags & 8`), a new timestamp (`flags & 16`) and the marker
//! bit (`flags & 32`) for the assembler.
//!
//! Invariants: a payload that parses writes back to the same fields; after
//! `rewrite(pic, tl0)` it parses with the new 15-bit picture ID (when it had one) and
//! TL0PICIDX (when it had one), every other field and the VP8 data unchanged, one octet
//! longer exactly when a 7-bit picture ID was widened (or shorter when an empty extension
//! octet is dropped); `rewrite_into` gives the same bytes; keyframe detection agrees with the
//! descriptor; the packetizer's payloads (at most `max + 5` octets, the size it is given)
//! carry the data back; the assembler never panics and its frames stay within
//! `MAX_FRAME_BYTES`, flagged keyframes starting with a keyframe header.
use libfuzzer_sys::fuzz_target;
use video::vp8::{self, Descriptor, FrameAssembler, Packetizer, MAX_FRAME_BYTES};

fuzz_target!(|data: &[u8]| {
    let Some((head, mut rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let pic = u16::from_be_bytes([head[0], head[1]]);
    let tl0 = head[2];
    let max = usize::from(head[3]) + 5;
    let packetizer = Packetizer::new(max).unwrap();
    let mut asm = FrameAssembler::new();
    let (mut seq, mut ts) = (0u16, 0u32);
    while let Some((&[len, flags], tail)) = rest.split_first_chunk::<2>() {
        let n = usize::from(len).min(tail.len());
        let payload = &tail[..n];
        rest = &tail[n..];
        check_payload(payload, pic, tl0, &packetizer, max);
        let step = u16::from(flags & 7);
        seq = if flags & 8 != 0 {
            seq.wrapping_sub(step)
        } else {
            seq.wrapping_add(step)
        };
        if flags & 16 != 0 {
            ts = ts.wrapping_add(3000);
        }
        let _ = asm.push(seq, ts, flags & 32 != 0, payload);
        while let Some(f) = asm.poll_frame() {
            assert!(f.data.len() <= MAX_FRAME_BYTES);
            assert!(!f.keyframe || vp8::is_keyframe_data(&f.data));
        }
    }
    asm.flush();
    while asm.poll_frame().is_some() {}
});

fn check_payload(payload: &[u8], pic: u16, tl0: u8, packetizer: &Packetizer, max: usize) {
    let Ok(d) = Descriptor::parse(payload) else {
        assert!(!vp8::is_keyframe_start(payload));
        return;
    };
    assert!(d.len < payload.len() && d.len <= 6);
    let body = &payload[d.len..];
    assert_eq!(
        vp8::is_keyframe_start(payload),
        d.starts_frame() && body[0] & 1 == 0
    );
    if let Some(size) = vp8::keyframe_size(body) {
        assert!(size.width < 1 << 14 && size.height < 1 << 14);
    }
    // Written back: the same fields.
    let mut w = Vec::new();
    d.write(&mut w);
    assert_eq!(w.len(), d.written_len());
    w.extend_from_slice(body);
    let back = Descriptor::parse(&w).unwrap();
    assert_eq!(Descriptor { len: 0, ..back }, Descriptor { len: 0, ..d });
    // Rewritten.
    let mut p = payload.to_vec();
    let new = vp8::rewrite(&mut p, Some(pic), Some(tl0)).unwrap();
    let r = Descriptor::parse(&p).unwrap();
    assert_eq!(r, new);
    assert_eq!(&p[r.len..], body);
    assert_eq!(r.picture_id, d.picture_id.map(|_| pic & 0x7FFF));
    assert_eq!(r.long_picture_id, d.picture_id.is_some());
    assert_eq!(r.tl0_pic_idx, d.tl0_pic_idx.map(|_| tl0));
    assert_eq!(
        (
            r.non_reference,
            r.start_of_partition,
            r.partition_index,
            r.tid,
            r.key_idx
        ),
        (
            d.non_reference,
            d.start_of_partition,
            d.partition_index,
            d.tid,
            d.key_idx
        )
    );
    assert_eq!(r.layer_sync, d.tid.is_some() && d.layer_sync);
    assert_eq!(p.len(), payload.len() - d.len + r.len);
    let mut q = Vec::new();
    vp8::rewrite_into(payload, Some(pic), Some(tl0), &mut q).unwrap();
    assert_eq!(q, p);
    // Packetized again: the data comes back.
    let key = vp8::is_keyframe_data(body);
    let parts = packetizer.packetize(body, pic, key).unwrap();
    let mut joined = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        assert!(part.len() <= max);
        let pd = Descriptor::parse(part).unwrap();
        assert_eq!(pd.starts_frame(), i == 0);
        assert_eq!(pd.picture_id, Some(pic & 0x7FFF));
        joined.extend_from_slice(&part[pd.len..]);
    }
    assert_eq!(joined, body);
}
