#![no_main]
//! VP8 over RTP on arbitrary packets: the RFC 7741 descriptor and frame header parsers,
//! frame assembly, and libvpx decoding of what assembles (through the crate's one safe
//! wrapper).
//!
//! Input: the whole input is one RTP payload (descriptor + VP8 data); it is also read as
//! records `[sequence step: i8][timestamp step: u8, x 3000][marker: u8 bit 0][len: u16 BE]
//! [len bytes of payload]`, a stream's packets in arrival order.
use libfuzzer_sys::fuzz_target;
use pcap_harness::vp8::{self, Packet};
use pcap_harness::vpx::Vp8Decoder;

fuzz_target!(|data: &[u8]| {
    if let Some(d) = vp8::parse_descriptor(data) {
        assert!(d.len < data.len());
        let _ = vp8::parse_frame_header(&data[d.len..]);
    }
    let _ = vp8::parse_frame_header(data);

    let mut pkts: Vec<Packet<'_>> = Vec::new();
    let (mut seq, mut ts, mut t) = (70_000i64, 0u32, 1.7e9f64);
    let mut rest = data;
    while rest.len() >= 5 {
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]])).min(rest.len() - 5);
        seq += i64::from(rest[0] as i8);
        ts = ts.wrapping_add(u32::from(rest[1]) * 3000);
        t += 0.01;
        pkts.push(Packet {
            ext_seq: seq,
            ts,
            marker: rest[2] & 1 != 0,
            time: t,
            payload: &rest[5..5 + len],
        });
        rest = &rest[5 + len..];
    }
    // Arrival order (not what assemble expects): must not panic either.
    let _ = vp8::assemble(&pkts);
    // What the analyzer gives it: sorted by sequence number, duplicates removed.
    pkts.sort_by_key(|p| p.ext_seq);
    pkts.dedup_by_key(|p| p.ext_seq);
    let frames = vp8::assemble(&pkts);
    let total: u32 = frames.iter().map(|f| f.packets).sum();
    assert_eq!(total as usize, pkts.len(), "every packet in exactly one frame");
    let mut at = 0usize;
    let mut dec = Vp8Decoder::new().expect("decoder");
    for f in &frames {
        let run = &pkts[at..at + f.packets as usize];
        at += f.packets as usize;
        assert_eq!((f.first_seq, f.last_seq), (run[0].ext_seq, run[run.len() - 1].ext_seq));
        assert!(run.iter().all(|p| p.ts == f.ts));
        if f.complete() {
            let want: usize = run
                .iter()
                .map(|p| p.payload.len() - vp8::parse_descriptor(p.payload).unwrap().len)
                .sum();
            assert_eq!(f.data.len(), want);
            assert!(f.header.is_some());
            let _ = dec.decode(&f.data);
        } else {
            assert!(f.data.is_empty());
        }
    }
});
