//! Real captures shipped with sipp (Debian package `sip-tester`): 30 ms G.711 A-law speech
//! and RFC 2833/4733 DTMF. Skipped (with a note) when the files are not installed.

mod common;
use common::*;
use mixer::{Codec, Event, Mixer, MixerConfig, Output};
use std::time::Duration;

const DIR: &str = "/usr/share/sip-tester";

/// (capture time, UDP payload) of every UDP/IPv4 packet of a classic little-endian
/// Ethernet pcap. Test scaffolding only: the mixer parses the RTP itself.
fn udp_payloads(path: &str) -> Option<Vec<(Duration, Vec<u8>)>> {
    let d = std::fs::read(path).ok()?;
    assert_eq!(
        &d[..4],
        &[0xd4, 0xc3, 0xb2, 0xa1],
        "little-endian microsecond pcap"
    );
    let mut out = Vec::new();
    let mut off = 24;
    let u32le = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    while off + 16 <= d.len() {
        let (sec, usec, incl) = (
            u32le(&d[off..]),
            u32le(&d[off + 4..]),
            u32le(&d[off + 8..]) as usize,
        );
        let frame = &d[off + 16..off + 16 + incl];
        off += 16 + incl;
        if frame.len() < 14 + 20 + 8 || frame[12..14] != [0x08, 0x00] {
            continue;
        }
        let ip = &frame[14..];
        let ihl = (ip[0] & 0x0F) as usize * 4;
        if ip[9] != 17 {
            continue;
        }
        let udp = &ip[ihl..];
        let len = u16::from_be_bytes([udp[4], udp[5]]) as usize;
        out.push((
            Duration::new(sec as u64, usec * 1000),
            udp[8..len.min(udp.len())].to_vec(),
        ));
    }
    Some(out)
}

#[test]
fn sipp_g711a_30ms_capture_is_mixed_cleanly() {
    let Some(pkts) = udp_payloads(&format!("{DIR}/g711a.pcap")) else {
        eprintln!("{DIR}/g711a.pcap not installed: skipped");
        return;
    };
    let t0 = pkts[0].0;
    let mut m = Mixer::new(MixerConfig {
        seed: 3,
        ..Default::default()
    });
    m.add_participant(1, params(Codec::Pcma, 20), Duration::ZERO)
        .unwrap();
    m.add_participant(2, params(Codec::Opus, 20), Duration::ZERO)
        .unwrap();
    let mut rx = Receiver::new(Codec::Opus);
    let end = pkts.last().unwrap().0 - t0 + Duration::from_millis(400);
    let mut i = 0;
    let mut now = Duration::ZERO;
    let mut was_speaking = false;
    while now < end {
        while i < pkts.len() && pkts[i].0 - t0 <= now {
            m.handle_rtp(1, &pkts[i].1, pkts[i].0 - t0);
            i += 1;
        }
        m.handle_tick(now);
        while let Some(o) = m.poll_output() {
            if let Output::Rtp { to: 2, packet } = o {
                rx.on_rtp(&packet);
            }
        }
        was_speaking |= m.stats(1).unwrap().speaking;
        now += mixer::TICK;
    }
    let st = m.stats(1).unwrap();
    let hdr = parse_hdr(&pkts[0].1);
    assert_eq!(hdr.pt, 8);
    assert_eq!(pkts[1].1.len() - 12, 240, "30 ms A-law packets");
    assert_eq!(st.packets_in as usize, pkts.len());
    assert_eq!(
        (st.dropped_invalid, st.dropped_late, st.lost),
        (0, 0, 0),
        "{st:?}"
    );
    assert!(was_speaking, "the recorded speech counts as speaking");
    let energy: f64 = rx.pcm.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / rx.pcm.len() as f64;
    assert!(
        energy.sqrt() > 300.0,
        "the listener hears the capture (rms {})",
        energy.sqrt()
    );
}

#[test]
fn sipp_rfc2833_captures_give_one_digit_each() {
    for digit in 0..=6u8 {
        let Some(pkts) = udp_payloads(&format!("{DIR}/dtmf_2833_{digit}.pcap")) else {
            eprintln!("{DIR}/dtmf_2833_{digit}.pcap not installed: skipped");
            return;
        };
        let pt = parse_hdr(&pkts[0].1).pt;
        let mut m = Mixer::new(MixerConfig::default());
        let mut p = params(Codec::Pcmu, 20);
        p.telephone_event_pt = Some(pt);
        m.add_participant(1, p, Duration::ZERO).unwrap();
        let t0 = pkts[0].0;
        for (at, bytes) in &pkts {
            m.handle_rtp(1, bytes, *at - t0);
        }
        let digits: Vec<char> = std::iter::from_fn(|| m.poll_output())
            .filter_map(|o| match o {
                Output::Event(Event::Dtmf { digit, .. }) => Some(digit),
                _ => None,
            })
            .collect();
        assert_eq!(
            digits,
            vec![(b'0' + digit) as char],
            "dtmf_2833_{digit}.pcap"
        );
    }
}
