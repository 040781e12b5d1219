//! Helpers of the video end-to-end tests: the offer a scripted UAC makes, what it reads back.

#![allow(dead_code)]

use super::uac::{body, pcmu_packet};
use std::net::IpAddr;
use std::time::SystemTime;

/// An offer of PCMU audio on `audio_port` and VP8 video (PT 96, NACK, PLI, FIR) on
/// `video_port` at `ip`, the video line with `a=DIRECTION`.
pub fn av_offer(ip: IpAddr, audio_port: u16, video_port: u16, direction: &str) -> String {
    format!(
        "v=0\r\no=tester 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {audio_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n\
         m=video {video_port} RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack\r\n\
         a=rtcp-fb:96 nack pli\r\na=rtcp-fb:96 ccm fir\r\na={direction}\r\n"
    )
}

/// The answered port of `m=KIND` in a 200 OK.
pub fn answered_port(ok: &str, kind: &str) -> u16 {
    body(ok)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("m={kind} ")))
        .and_then(|l| l.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no {kind} line in\n{ok}"))
}

/// Wall-clock seconds since the Unix epoch (the captures' time base).
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A 20 ms PCMU packet of digital silence.
pub fn pcmu_silence(ssrc: u32, seq: u16, ts: u32) -> Vec<u8> {
    let mut p = pcmu_packet(ssrc, seq, ts);
    for b in &mut p[12..] {
        *b = 0xFF;
    }
    p
}
