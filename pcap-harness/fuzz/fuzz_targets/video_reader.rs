#![no_main]
//! The video analyzer on arbitrary bytes as a capture file:
//! `pcap_harness::video::analyze_video_bytes` (container, UDP, RTP, VP8 detection,
//! segments, frame assembly, libvpx decoding, freezes, colour runs) returns a report or an
//! error, never panics, hangs or allocates without bound.
use libfuzzer_sys::fuzz_target;
use pcap_harness::video::{analyze_video_bytes, FrameStatus, VideoOptions};

fuzz_target!(|data: &[u8]| {
    for pt in [None, Some(96)] {
        let opts = VideoOptions {
            pt,
            ..VideoOptions::default()
        };
        if let Ok(r) = analyze_video_bytes(data, &opts) {
            for s in &r.streams {
                assert_eq!(s.frame_list.len() as u64, s.frames);
                assert_eq!(s.decoded + s.corrupt + s.undecodable, s.frames);
                let shown = s
                    .frame_list
                    .iter()
                    .filter(|f| f.status == FrameStatus::Decoded)
                    .count() as u64;
                assert_eq!(s.colour_runs.iter().map(|c| c.frames).sum::<u64>(), shown);
                assert!(s.freeze.ms >= 0.0);
            }
        }
    }
});
