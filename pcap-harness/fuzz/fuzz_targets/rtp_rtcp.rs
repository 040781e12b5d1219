#![no_main]
//! The harness's RTP/RTCP parsing and classification on arbitrary datagrams, then the
//! per-stream statistics (wrap-safe sequence/timestamp arithmetic, jitter) on an arbitrary
//! sequence of such datagrams.
//!
//! Input: the whole input is one datagram; it is also read as records
//! `[arrival delta: i16 BE, 100 us units][len: u8][len bytes of datagram]`, and every record
//! that classifies as RTP becomes a packet of one stream.
use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use pcap_harness::rtp::{self, Kind};
use pcap_harness::sip::{static_codec, Codec};
use pcap_harness::stream::{self, Pkt};

fn check_datagram(p: &[u8]) -> Option<rtp::RtpHeader> {
    for truncated in [false, true] {
        match rtp::classify_captured(p, truncated) {
            Kind::Rtp(h) => {
                assert!(rtp::plausible_pt(h.pt));
                assert!(h.payload_offset + h.payload_len <= p.len());
            }
            Kind::Rtcp(pt) => {
                assert!(!truncated && rtp::rtcp_valid(p));
                let pkts = rtp::parse_rtcp(p);
                assert_eq!(pkts.first().map(|x| x.pt), Some(pt));
            }
            Kind::Other => {}
        }
    }
    if let Some(h) = rtp::parse_rtp(p) {
        assert!(h.payload_offset + h.payload_len <= p.len());
    }
    // Splitting must not panic on invalid compounds either.
    let _ = rtp::parse_rtcp(p);
    match rtp::classify(p) {
        Kind::Rtp(h) => Some(h),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    check_datagram(data);

    let mut pkts = Vec::new();
    let mut t = 1_700_000_000.0_f64;
    let mut rest = data;
    while rest.len() >= 3 {
        let delta = i16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(rest[2]).min(rest.len() - 3);
        let p = &rest[3..3 + len];
        rest = &rest[3 + len..];
        t += f64::from(delta) * 1e-4;
        if let Some(hdr) = check_datagram(p) {
            let payload = p[hdr.payload_offset..hdr.payload_offset + hdr.payload_len].to_vec();
            pkts.push(Pkt {
                time: t,
                rel_ms: (t - 1_700_000_000.0) * 1000.0,
                hdr,
                payload,
                truncated: false,
            });
        }
    }
    let Some(first) = pkts.first() else {
        return;
    };
    let ssrc = first.hdr.ssrc;
    let main_pt = first.hdr.pt;
    let mut codecs: HashMap<u8, Codec> = HashMap::new();
    for p in &pkts {
        if let Some(c) = static_codec(p.hdr.pt) {
            codecs.insert(p.hdr.pt, c);
        }
    }
    if main_pt >= 96 {
        // Even dynamic types are Opus, odd ones telephone-event.
        let codec = match main_pt % 2 {
            0 => ("opus", 48000, Some(2)),
            _ => ("telephone-event", 8000, None),
        };
        let (name, rate, channels) = codec;
        let name = name.to_string();
        codecs.insert(
            main_pt,
            Codec {
                name,
                rate,
                channels,
            },
        );
    }
    let a = stream::analyze(
        "198.18.0.1:4000".into(),
        "198.18.0.2:5000".into(),
        ssrc,
        &pkts,
        &codecs,
        main_pt,
        "hint",
    );
    assert_eq!(a.stream.packets, pkts.len() as u64);
    assert!(a.placed.len() <= pkts.len());
    if let Some(c) = codecs.get(&main_pt) {
        if pcap_harness::audio::decodable(c) {
            let _ = pcap_harness::audio::decode(&pkts, &a.placed, main_pt, c);
        }
    }
});
