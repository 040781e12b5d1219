#![no_main]
//! The capture reader without audio decoding (that is `pcap_reader`), so that the parsing
//! itself gets millions of executions: `pcap_harness::analyze_bytes_with` with `no_decode`
//! (pcap/pcapng container, all link types, IPv4/IPv6/UDP, SIP/SDP labelling, RTP/RTCP, stream
//! statistics) must return a report or an error, never panic or hang; every frame the
//! container yields goes through `net::decode_udp` on its own as well.
use libfuzzer_sys::fuzz_target;
use pcap_harness::{analyze, capture, net};

fuzz_target!(|data: &[u8]| {
    let walked = capture::for_each_frame(data, |f| {
        if net::linktype_supported(f.linktype) {
            if let Ok(udp) = net::decode_udp(f.linktype, f.data) {
                assert!(udp.payload.len() <= f.data.len());
            }
        }
    });
    let opts = analyze::Options {
        no_decode: true,
        ..Default::default()
    };
    match analyze::analyze_bytes_with(data, None, &opts) {
        Ok(report) => {
            assert!(
                walked.is_ok(),
                "the analyzer accepts what the reader rejects"
            );
            for s in &report.rtp_streams {
                assert!(s.packets >= 1, "a reported stream has packets");
                assert!(s.duplicates <= s.packets);
            }
        }
        Err(_) => {}
    }
});
