#![no_main]
//! The RTP/RTCP input path of the media core exactly as the server runs it on every datagram
//! a participant's media ports receive, without mixing ticks (those are `mixer_media`), so
//! that the parsing itself gets millions of executions: `Mixer::handle_rtp` (RTP header with
//! CSRCs, extensions and padding; payload-type, SSRC-probation and length checks; Opus TOC
//! durations; RFC 4733 payloads; the RFC 6464 level extension; receive statistics;
//! jitter-buffer insertion) and `Mixer::handle_rtcp` (compound RTCP, SR/RR report blocks, RTT).
//! One participant per input, so that an input pays for one codec set-up (creating an Opus
//! decoder or a G.711 resampler costs more than parsing a few datagrams; the packet path
//! does not depend on other participants): Opus PT 96 with levels in extension 1, or PCMA
//! PT 8; both with telephone-event PT 101. Only events may come out, and the counters stay
//! consistent.
//!
//! Input: `[codec: u8][bytes]`: Opus if `codec` is even, else PCMA. The bytes are one datagram
//! (given as RTP and as RTCP); they are also read as records `[b: u8][len: u8][len bytes]`:
//! RTCP if `b & 1`, else RTP, arriving `b >> 2` ms (0..=63) after the previous record (bit 1
//! is unused).
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mixer::{Codec, Mixer, MixerConfig, Output, StreamParams};

fn params(codec: Codec, pt: u8, level_ext: Option<u8>) -> StreamParams {
    StreamParams {
        codec,
        payload_type: pt,
        telephone_event_pt: Some(101),
        ptime_ms: 20,
        audio_level_ext_id: level_ext,
        send: true,
        recv: true,
    }
}

fn drain(m: &mut Mixer) {
    while let Some(out) = m.poll_output() {
        assert!(
            matches!(out, Output::Event(_)),
            "media output without a tick: {out:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&codec, data)) = data.split_first() else {
        return;
    };
    let mut m = Mixer::new(MixerConfig {
        seed: 7,
        ..Default::default()
    });
    let mut now = Duration::from_millis(1000);
    let stream = match codec % 2 {
        0 => params(Codec::Opus, 96, Some(1)),
        _ => params(Codec::Pcma, 8, None),
    };
    m.add_participant(1, stream, now).unwrap();
    m.handle_rtp(1, data, now);
    m.handle_rtcp(1, data, now);
    drain(&mut m);
    // Datagrams handed over: [RTP, RTCP].
    let mut sent = [1u64; 2];
    let mut rest = data;
    while rest.len() >= 2 {
        let b = rest[0];
        let len = usize::from(rest[1]).min(rest.len() - 2);
        let pkt = &rest[2..2 + len];
        rest = &rest[2 + len..];
        now += Duration::from_millis(u64::from(b >> 2));
        sent[usize::from(b & 1)] += 1;
        if b & 1 == 0 {
            m.handle_rtp(1, pkt, now);
        } else {
            m.handle_rtcp(1, pkt, now);
        }
        drain(&mut m);
    }
    let s = m.stats(1).expect("participant exists");
    assert_eq!(s.packets_out, 0, "nothing is sent without a tick");
    assert!(
        s.packets_in <= sent[0] && s.dropped_late <= s.packets_in,
        "{s:?}"
    );
    assert!(s.rtcp_invalid <= sent[1], "{s:?}");
});
