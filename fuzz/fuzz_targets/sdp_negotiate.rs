#![no_main]
//! sdp::negotiate on arbitrary text; whatever negotiates must yield an answer we can parse,
//! with one m= line per offered line, the accepted audio (and video) line in the same place.
use libfuzzer_sys::fuzz_target;
use sip_core::sdp;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(neg) = sdp::negotiate(text) {
        let local = sdp::LocalMedia {
            ip: "198.18.0.1".parse().unwrap(),
            rtp_port: 40000,
            video_port: Some(40002),
            session_id: 1,
            session_version: 1,
        };
        let answer = sdp::build_answer(&local, &neg);
        let back = sdp::negotiate(&answer).expect("our answer negotiates");
        assert_eq!(back.codec, neg.codec);
        assert_eq!(back.payload_type, neg.payload_type);
        // One answer line per offered line, the accepted ones at the same place (RFC 3264 §6).
        assert_eq!(back.lines.len(), neg.lines.len());
        let answers = |n: &sdp::Negotiated| n.lines.iter().map(|l| l.answer).collect::<Vec<_>>();
        assert_eq!(answers(&back), answers(&neg));
        // The video line, when accepted, keeps the offerer's payload type and mirrors the
        // direction; without a video port of ours it is declined.
        assert_eq!(
            back.video.as_ref().map(|v| (v.payload_type, v.direction)),
            neg.video
                .as_ref()
                .map(|v| (v.payload_type, v.direction.mirror()))
        );
        let audio_only = sdp::LocalMedia {
            video_port: None,
            ..local
        };
        let declined = sdp::negotiate(&sdp::build_answer(&audio_only, &neg)).expect("negotiates");
        assert_eq!(declined.video, None);
        assert_eq!(declined.lines.len(), neg.lines.len());
    }
});
