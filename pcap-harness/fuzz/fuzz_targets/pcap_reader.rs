#![no_main]
//! `pcap_harness::analyze_bytes` on arbitrary bytes: the whole analyzer (pcap/pcapng
//! container, link layers, IP/UDP, SIP/SDP labelling, RTP/RTCP, stream statistics, audio
//! decoding) must return a report or an error, never panic or hang.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(report) = pcap_harness::analyze_bytes(data) {
        for s in &report.rtp_streams {
            assert!(s.packets >= 1, "a reported stream has packets");
            assert!(s.duplicates <= s.packets);
        }
    }
});
