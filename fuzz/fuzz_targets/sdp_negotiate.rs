#![no_main]
//! sdp::negotiate on arbitrary text; whatever negotiates must yield an answer we can parse,
//! with one m= line per offered line.
use libfuzzer_sys::fuzz_target;
use sip_core::sdp;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(neg) = sdp::negotiate(text) {
        let local = sdp::LocalMedia {
            ip: "198.18.0.1".parse().unwrap(),
            rtp_port: 40000,
            session_id: 1,
            session_version: 1,
        };
        let answer = sdp::build_answer(&local, &neg);
        let back = sdp::negotiate(&answer).expect("our answer negotiates");
        assert_eq!(back.codec, neg.codec);
        assert_eq!(back.payload_type, neg.payload_type);
        // One answer line per offered line, the accepted one at the same place (RFC 3264 §6).
        assert_eq!(back.declined_before, neg.declined_before);
        assert_eq!(back.declined_after.len(), neg.declined_after.len());
    }
});
