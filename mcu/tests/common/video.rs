//! Helpers of the video end-to-end tests: the offer a scripted UAC makes, what it reads back.

#![allow(dead_code)]

use super::uac::{body, pcmu_packet, status, Uac};
use std::net::IpAddr;
use std::time::Duration;
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

/// [`spawn_talkers`]: nobody talks (every member sends silence).
pub const NOBODY: u8 = u8::MAX - 1;
/// [`spawn_talkers`]: stop sending.
pub const STOP: u8 = u8::MAX;

/// One thread per `(socket, server audio address)` sending 20 ms PCMU packets at their pace
/// (at most `max_packets`): a 1 kHz tone from member `talker` (its index), digital silence
/// from the others, until `talker` is [`STOP`].
pub fn spawn_talkers(
    members: &[(&std::net::UdpSocket, std::net::SocketAddr)],
    talker: &std::sync::Arc<std::sync::atomic::AtomicU8>,
    max_packets: u32,
) -> Vec<std::thread::JoinHandle<()>> {
    use std::time::{Duration, Instant};
    members
        .iter()
        .enumerate()
        .map(|(i, (sock, to))| {
            let sock = sock.try_clone().unwrap();
            let to = *to;
            let talker = talker.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                for k in 0..max_packets {
                    let at = start + Duration::from_millis(20 * u64::from(k));
                    if let Some(d) = at.checked_duration_since(Instant::now()) {
                        std::thread::sleep(d);
                    }
                    let who = talker.load(std::sync::atomic::Ordering::Relaxed);
                    if who == STOP {
                        return;
                    }
                    let (ssrc, seq, ts) = (0x1000 + i as u32, k as u16, 160 * k);
                    let p = if usize::from(who) == i {
                        pcmu_packet(ssrc, seq, ts)
                    } else {
                        pcmu_silence(ssrc, seq, ts)
                    };
                    let _ = sock.send_to(&p, to);
                }
            })
        })
        .collect()
}

/// A re-INVITE with `sdp` in the dialog of `ua`, answered 200 and ACKed; the answer's SDP.
pub fn reinvite(ua: &mut Uac, sdp: &str) -> String {
    ua.cseq += 1;
    let inv = ua.request("INVITE", ua.cseq, &format!("re{}", ua.cseq), "", sdp);
    let got = ua.transact(&inv, "INVITE", Duration::from_secs(5));
    let ok = got.last().map(|(_, m)| m.clone()).expect("an answer");
    assert_eq!(status(&ok), Some(200), "{ok}");
    let ack = ua.request("ACK", ua.cseq, &format!("ack{}", ua.cseq), "", "");
    ua.send_raw(ack.as_bytes());
    body(&ok).to_string()
}

/// The namespace test bed's recording viewer: SIP from `client2`:5070, audio :20000
/// (unused), video :20002/20003 recorded; joined to `room` at `server` (`recvonly` video).
/// Returns its UA (keep it: the call lives with it), the recorder and its video address.
pub fn bed_viewer(
    bed: &testkit::bed::Testbed,
    server: std::net::SocketAddr,
    room: &str,
) -> (
    Uac,
    std::net::UdpSocket,
    testkit::video::VideoReceiver,
    std::net::SocketAddr,
) {
    let ip = IpAddr::from(testkit::bed::addr_of("client2"));
    let mut ua = Uac::with_socket(
        bed.udp("client2", &format!("{ip}:5070")),
        server,
        room,
        "viewer",
    );
    let audio = bed.udp("client2", &format!("{ip}:20000"));
    let rtp = std::net::SocketAddr::new(ip, 20002);
    let viewer = testkit::bed::in_netns(&bed.ns("client2"), move || {
        testkit::video::VideoReceiver::bind(rtp, false)
    });
    ua.call(&av_offer(ip, 20000, 20002, "recvonly"));
    (ua, audio, viewer, rtp)
}

/// A talker: a 20 ms PCMU packet (a tone's worth of signal for the speaker detector) from
/// `sock` to `to` every 20 ms until `stop`.
pub fn spawn_tone(
    sock: std::net::UdpSocket,
    to: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut seq = 0u16;
        let mut next = std::time::Instant::now();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = sock.send_to(&pcmu_packet(0x00AE_D000, seq, u32::from(seq) * 160), to);
            seq = seq.wrapping_add(1);
            next += Duration::from_millis(20);
            std::thread::sleep(next.saturating_duration_since(std::time::Instant::now()));
        }
    })
}
