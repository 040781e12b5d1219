#![no_main]
//! `webrtc_core::demux::Demux` on arbitrary decrypted packets, as the room runs it on every
//! packet of a browser with video: no panic; at most `Demux::MAX_SSRCS` video SSRCs
//! remembered; RTP is video exactly when its payload type is the VP8 one (and its SSRC is
//! then remembered); an RTCP compound naming none of the video SSRCs and carrying no
//! feedback message is audio.
//!
//! Input: `[kind: u8][bytes]`, one or more packets separated by the 4 bytes `DEMX`; `kind`
//! odd: RTCP, even: RTP (the kind of every packet of the input).
use libfuzzer_sys::fuzz_target;
use webrtc_core::demux::{Demux, Media};

const VP8_PT: u8 = 96;
const OURS: u32 = 0x0bad_cafe;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let mut d = Demux::new(VP8_PT, Some(0x71de), OURS);
    for packet in split(rest) {
        if kind & 1 == 0 {
            let got = d.rtp(packet);
            let vp8 = packet.len() >= 12 && packet[1] & 0x7f == VP8_PT;
            assert_eq!(got == Media::Video, vp8);
            if vp8 {
                let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
                assert!(d.video_ssrcs().contains(&ssrc));
            }
        } else {
            let got = d.rtcp(packet);
            let names_video = packet.windows(4).any(|w| {
                let s = u32::from_be_bytes([w[0], w[1], w[2], w[3]]);
                s == OURS || d.video_ssrcs().contains(&s)
            });
            let feedback = packet.iter().any(|&b| b == 205 || b == 206);
            if !names_video && !feedback {
                assert_eq!(got, Media::Audio);
            }
        }
        assert!(d.video_ssrcs().len() <= Demux::MAX_SSRCS);
    }
});

fn split(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = vec![];
    while let Some(i) = data.windows(4).position(|w| w == b"DEMX") {
        out.push(&data[..i]);
        data = &data[i + 4..];
    }
    out.push(data);
    out
}
