//! Behaviour a client observes: decode what the mixer sends and look at the audio.

mod common;
use common::*;
use mixer::{Codec, Event};
use std::time::Duration;

const F1: f64 = 300.0;
const F2: f64 = 700.0;
const F3: f64 = 1100.0;

fn n_minus_one(codec: Codec) {
    let mut room = Room::new(7);
    room.join(1, codec, 20, 20, sine(F1, 6000.0));
    room.join(2, codec, 20, 20, sine(F2, 6000.0));
    room.join(3, codec, 20, 20, sine(F3, 6000.0));
    room.join(4, codec, 20, 20, silence());
    room.run(150, no_delay);
    let tones = [F1, F2, F3];
    for id in 1..=4u64 {
        let r = room.receiver(id);
        let powers: Vec<f64> = tones.iter().map(|&f| r.tone_power(f, 1.0)).collect();
        for (i, &pw) in powers.iter().enumerate() {
            let own = i as u64 + 1 == id;
            if own {
                assert!(
                    pw < 1e3,
                    "participant {id} hears its own tone {}: power {pw:.0} ({powers:?})",
                    tones[i]
                );
            } else {
                assert!(
                    pw > 1e5,
                    "participant {id} misses tone {}: power {pw:.0} ({powers:?})",
                    tones[i]
                );
            }
        }
    }
    for id in 1..=3 {
        assert!(room.mixer.stats(id).unwrap().in_mix);
    }
    assert!(!room.mixer.stats(4).unwrap().in_mix);
}

#[test]
fn n_minus_one_opus() {
    n_minus_one(Codec::Opus);
}

#[test]
fn n_minus_one_pcmu() {
    n_minus_one(Codec::Pcmu);
}

#[test]
fn listeners_share_one_encoded_payload() {
    let mut room = Room::new(1);
    room.join(1, Codec::Opus, 20, 20, sine(F1, 6000.0));
    for id in 2..=5 {
        room.join(id, Codec::Opus, 20, 20, silence());
    }
    room.run(50, no_delay);
    // The last tick's packets: listeners 2..=5 carry the same payload, the speaker another.
    let last: Vec<(u64, Vec<u8>)> = room
        .raw
        .iter()
        .rev()
        .filter_map(|o| match o {
            mixer::Output::Rtp { to, packet } => Some((*to, packet[12..].to_vec())),
            _ => None,
        })
        .take(5)
        .collect();
    let payload_of = |id: u64| last.iter().find(|x| x.0 == id).unwrap().1.clone();
    for id in 3..=5 {
        assert_eq!(payload_of(2), payload_of(id));
    }
    assert_ne!(payload_of(1), payload_of(2));
}

#[test]
fn a_lone_speaker_is_forwarded_to_opus_listeners_without_reencoding() {
    let mut room = Room::new(2);
    room.join(1, Codec::Opus, 20, 20, sine(F1, 6000.0));
    room.join(2, Codec::Opus, 20, 20, silence());
    room.join(3, Codec::Opus, 20, 40, silence());
    room.join(4, Codec::Pcmu, 20, 20, silence());
    room.run(60, no_delay);
    let sent = room.sender(1).sent.clone();
    let last2 = room.raw.iter().rev().find_map(|o| match o {
        mixer::Output::Rtp { to: 2, packet } => Some(packet[12..].to_vec()),
        _ => None,
    });
    assert!(
        sent.contains(&last2.unwrap()),
        "20 ms Opus listener gets the speaker's own packet"
    );
    assert!(room.mixer.forwarded_ticks() > 30);
    // Others still get a real mix.
    assert!(room.receiver(3).tone_power(F1, 0.5) > 1e5);
    assert!(room.receiver(4).tone_power(F1, 0.5) > 1e5);
    assert!(room.receiver(2).tone_power(F1, 0.5) > 1e5);
    // When a second voice joins the mix, listeners get a mixed encode again, and each of
    // the two speakers gets the other's packets.
    room.sender(2).signal = sine(F2, 6000.0);
    room.run(60, no_delay);
    let r3 = room.receiver(3);
    assert!(r3.tone_power(F1, 0.5) > 1e5 && r3.tone_power(F2, 0.5) > 1e5);
    let r2 = room.receiver(2);
    assert!(r2.tone_power(F1, 0.5) > 1e5 && r2.tone_power(F2, 0.5) < 1e3);
    let last_to = |to: u64| {
        room.raw.iter().rev().find_map(|o| match o {
            mixer::Output::Rtp { to: t, packet } if *t == to => Some(packet[12..].to_vec()),
            _ => None,
        })
    };
    let (to2, to1) = (last_to(2).unwrap(), last_to(1).unwrap());
    assert!(room.sender(1).sent.contains(&to2));
    assert!(room.sender(2).sent.contains(&to1));
}

#[test]
fn g711_30ms_alaw_input_and_40ms_output() {
    let mut room = Room::new(3);
    room.join(1, Codec::Pcma, 30, 20, sine(F2, 8000.0));
    room.join(2, Codec::Pcmu, 20, 40, silence());
    room.join(3, Codec::Opus, 20, 20, silence());
    room.run(150, no_delay);
    let r2 = room.receiver(2);
    // 40 ms PCMU packets: 320 bytes, ts +320, seq +1.
    for w in r2.headers.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1));
        assert_eq!(w[1].ts, w[0].ts.wrapping_add(320));
        assert_eq!(w[1].payload_len, 320);
    }
    assert!(r2.headers.len() >= 74, "{} packets", r2.headers.len());
    // The 30 ms A-law talker is heard cleanly: the tone dominates, no gaps.
    let tone = r2.tone_power(F2, 1.0);
    assert!(tone > 1e6, "tone power {tone}");
    let last = &r2.pcm[r2.pcm.len() - 8000..];
    for (i, chunk) in last.chunks(160).enumerate() {
        let p = goertzel(chunk, F2, 8000.0);
        assert!(p > 1e5, "gap in 20 ms chunk {i}: {p}");
    }
    let r3 = room.receiver(3);
    assert!(r3.tone_power(F2, 1.0) > 1e6);
    let st = room.mixer.stats(1).unwrap();
    assert_eq!(
        (st.lost, st.dropped_late, st.concealed_frames),
        (0, 0, 0),
        "{st:?}"
    );
}

#[test]
fn opus_input_packetizations_10_to_60_ms() {
    for in_ptime in [10u32, 40, 60] {
        let mut room = Room::new(6);
        room.join(1, Codec::Opus, in_ptime, 20, sine(F2, 8000.0));
        room.join(2, Codec::Opus, 20, 20, silence());
        room.run(150, no_delay);
        let st = room.mixer.stats(1).unwrap();
        assert_eq!(
            (st.lost, st.dropped_late, st.concealed_frames),
            (0, 0, 0),
            "in ptime {in_ptime}: {st:?}"
        );
        continuity(&room, 2, F2);
        let r = room.receiver(2);
        let tail = &r.pcm[r.pcm.len() - 48_000..];
        for chunk in tail.chunks(960) {
            assert!(
                goertzel(chunk, F2, 48_000.0) > 1e6,
                "in ptime {in_ptime}: clean, not concealed"
            );
        }
    }
}

#[test]
fn opus_output_ptimes() {
    for ptime in [10u32, 20, 30, 40, 50, 60] {
        let mut room = Room::new(5);
        room.join(1, Codec::Opus, 20, 20, sine(F1, 6000.0));
        room.join(2, Codec::Opus, 20, ptime, silence());
        room.run(100, no_delay);
        let r = room.receiver(2);
        let spp = 48 * ptime;
        assert_eq!(r.headers.len() as u32, 100 * 20 / ptime, "ptime {ptime}");
        assert!(r.durations.iter().all(|&d| d as u32 == spp));
        for w in r.headers.windows(2) {
            assert_eq!(w[1].ts.wrapping_sub(w[0].ts), spp);
            assert_eq!(w[1].seq, w[0].seq.wrapping_add(1));
        }
        assert_eq!(r.pcm.len() as u32, r.headers.len() as u32 * spp);
        assert!(r.tone_power(F1, 0.5) > 1e5, "ptime {ptime}");
    }
}

#[test]
fn speaker_switch_needs_sustained_lead_and_ignores_clicks() {
    let mut room = Room::new(9);
    room.join(1, Codec::Opus, 20, 20, sine(F1, 3000.0));
    // Participant 2: silent except a 40 ms loud click at 1.5 s and sustained speech from 3 s.
    room.join(
        2,
        Codec::Opus,
        20,
        20,
        Box::new(|t: f64| {
            if (1.5..1.54).contains(&t) || t >= 3.0 {
                20000.0 * (2.0 * std::f64::consts::PI * F2 * t).sin()
            } else {
                0.0
            }
        }),
    );
    room.run(140, no_delay); // 2.8 s
    let changes: Vec<_> = room
        .events
        .iter()
        .filter(|e| matches!(e, Event::ActiveSpeakerChanged { .. }))
        .cloned()
        .collect();
    assert_eq!(
        changes,
        vec![Event::ActiveSpeakerChanged { speaker: Some(1) }],
        "click must not switch"
    );
    assert_eq!(room.mixer.active_speaker(), Some(1));
    room.run(10, no_delay); // 3.0 s: talker 2 starts now
    room.run(10, no_delay); // 200 ms into it: not yet
    assert_eq!(room.mixer.active_speaker(), Some(1));
    room.run(30, no_delay); // 800 ms into it
    assert_eq!(room.mixer.active_speaker(), Some(2));
    let changes: Vec<_> = room
        .events
        .iter()
        .filter(|e| matches!(e, Event::ActiveSpeakerChanged { .. }))
        .cloned()
        .collect();
    assert_eq!(changes.len(), 2);
    // Everybody stops: after the hangover the room has no active speaker.
    room.sender(1).signal = silence();
    room.sender(2).signal = silence();
    room.run(60, no_delay);
    assert_eq!(room.mixer.active_speaker(), None);
    assert_eq!(
        room.events
            .iter()
            .rev()
            .find(|e| matches!(e, Event::ActiveSpeakerChanged { .. })),
        Some(&Event::ActiveSpeakerChanged { speaker: None })
    );
    // Media started once per participant, with the client's SSRC.
    let started: Vec<_> = room
        .events
        .iter()
        .filter(|e| matches!(e, Event::MediaStarted { .. }))
        .cloned()
        .collect();
    assert_eq!(
        started,
        vec![
            Event::MediaStarted {
                participant: 1,
                ssrc: 0x1001
            },
            Event::MediaStarted {
                participant: 2,
                ssrc: 0x1002
            }
        ]
    );
}

#[test]
fn top_n_mixes_only_the_loudest() {
    let mut room = Room::with_config(mixer::MixerConfig {
        top_n: 2,
        seed: 4,
        ..Default::default()
    });
    room.join(1, Codec::Opus, 20, 20, sine(F1, 12000.0));
    room.join(2, Codec::Opus, 20, 20, sine(F2, 8000.0));
    // Speech-like (syllabic envelope): an unmixed client without levels is judged by the
    // SILK voice-activity flag of its own encoder, which ignores steady tones.
    room.join(
        3,
        Codec::Opus,
        20,
        20,
        Box::new(|t: f64| {
            let env = (2.0 * std::f64::consts::PI * 3.0 * t).sin().abs();
            1500.0 * env * (2.0 * std::f64::consts::PI * F3 * t).sin()
        }),
    );
    room.join(4, Codec::Opus, 20, 20, silence());
    room.run(100, no_delay);
    let r = room.receiver(4);
    assert!(r.tone_power(F1, 1.0) > 1e6);
    assert!(r.tone_power(F2, 1.0) > 1e6);
    assert!(
        r.tone_power(F3, 1.0) < 1e3,
        "third speaker must not be mixed"
    );
    assert!(!room.mixer.stats(3).unwrap().in_mix);
    assert!(room.mixer.stats(3).unwrap().speaking);
}

/// Every 20 ms of the last second carries the tone (concealed frames included: a pure tone
/// through Opus PLC keeps > 40 dB of its power; a gap of silence would not).
fn continuity(room: &Room, id: u64, freq: f64) {
    let r = room.receiver(id);
    let rate = r.rate();
    let n = (rate * 0.02) as usize;
    let tail = &r.pcm[r.pcm.len() - (rate as usize)..];
    for (i, chunk) in tail.chunks(n).enumerate() {
        let p = goertzel(chunk, freq, rate);
        assert!(
            p > 1e4,
            "20 ms chunk {i} of the last second has no tone: {p}"
        );
    }
}

#[test]
fn jitter_buffer_reorder_duplicates_and_wrap() {
    let mut room = Room::new(11);
    room.join(1, Codec::Opus, 20, 20, sine(F2, 8000.0));
    room.join(2, Codec::Opus, 20, 20, silence());
    // Sequence numbers and timestamps wrap during the run.
    room.sender(1).seq = 65500;
    room.sender(1).ts = u32::MAX - 960 * 40;
    // Every 4th packet is delayed by 30 ms (reordered behind its successor).
    room.run(150, |id, seq| {
        Some(Duration::from_millis(if id == 1 && seq % 4 == 0 {
            35
        } else {
            5
        }))
    });
    // Let the packets still in flight land (what is sent now is lost, never counted).
    room.run(3, |_, _| None);
    let st = room.mixer.stats(1).unwrap();
    assert_eq!(st.lost, 0);
    assert_eq!(
        st.dropped_late, 0,
        "reordered packets must be played, not dropped"
    );
    assert!(st.jitter_ms > 0.5);
    let r = room.receiver(2);
    let tail = &r.pcm[r.pcm.len() - 48_000 - 6 * 960..r.pcm.len() - 6 * 960];
    for (i, chunk) in tail.chunks(960).enumerate() {
        assert!(goertzel(chunk, F2, 48_000.0) > 3e5, "chunk {i}");
    }
}

#[test]
fn jitter_buffer_duplicates_are_dropped() {
    let mut room = Room::new(12);
    room.join(1, Codec::Pcmu, 20, 20, sine(F2, 8000.0));
    room.join(2, Codec::Pcmu, 20, 20, silence());
    room.sender(1).seq = 65530;
    room.run(20, no_delay);
    // Replay each of the next 50 packets three times.
    for _ in 0..50 {
        let pkt = room.sender(1).next_packet();
        for k in 0..3u64 {
            room.in_flight
                .push((room.now + Duration::from_millis(1 + k), 1, pkt.clone()));
        }
        room.run(1, |_, _| None);
    }
    let st = room.mixer.stats(1).unwrap();
    assert_eq!(st.dropped_late, 100);
    assert_eq!(st.packets_in, 20 + 150);
    continuity(&room, 2, F2);
}

#[test]
fn jitter_buffer_loss_is_concealed_with_opus_fec() {
    let mut room = Room::new(13);
    room.join(1, Codec::Opus, 20, 20, sine(F2, 8000.0));
    room.join(2, Codec::Opus, 20, 20, silence());
    let first = room.sender(1).seq;
    // Lose one packet every 25.
    room.run(150, move |id, seq| {
        (id != 1 || seq.wrapping_sub(first) % 25 != 10).then_some(Duration::from_millis(5))
    });
    let st = room.mixer.stats(1).unwrap();
    assert_eq!(st.lost, 6);
    assert!(st.concealed_frames >= 6);
    assert!(st.fec_recovered >= 5, "{st:?}");
    continuity(&room, 2, F2);
}

#[test]
fn jitter_buffer_g711_loss_is_concealed() {
    let mut room = Room::new(14);
    room.join(1, Codec::Pcma, 20, 20, sine(F2, 8000.0));
    room.join(2, Codec::Pcma, 20, 20, silence());
    let first = room.sender(1).seq;
    room.run(150, move |id, seq| {
        (id != 1 || seq.wrapping_sub(first) % 25 != 10).then_some(Duration::from_millis(5))
    });
    let st = room.mixer.stats(1).unwrap();
    assert_eq!(st.lost, 6);
    assert!(st.concealed_frames >= 6);
}

#[test]
fn jitter_buffer_adapts_to_jitter() {
    let mut room = Room::new(15);
    room.join(1, Codec::Opus, 20, 20, sine(F2, 8000.0));
    room.join(2, Codec::Opus, 20, 20, silence());
    room.run(100, no_delay);
    let calm = room.mixer.stats(1).unwrap().jitter_target_ms;
    // Pseudo-random 0..80 ms delays.
    room.run(300, |_, seq| {
        Some(Duration::from_millis(
            5 + ((seq as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58),
        ))
    });
    let st = room.mixer.stats(1).unwrap();
    assert!(
        st.jitter_target_ms > calm + 20,
        "target {calm} -> {}",
        st.jitter_target_ms
    );
    assert!(st.jitter_target_ms <= 200);
    continuity(&room, 2, F2);
}

#[test]
fn dtmf_reported_once_per_digit() {
    let mut room = Room::new(16);
    room.join(1, Codec::Pcmu, 20, 20, silence());
    room.run(5, no_delay);
    let ts = 777_000u32;
    let seq0 = 40_000u16;
    let now = room.now;
    for (i, (end, dur)) in [
        (false, 160u16),
        (false, 320),
        (false, 480),
        (true, 800),
        (true, 800),
        (true, 800),
    ]
    .iter()
    .enumerate()
    {
        let payload = [
            5u8,
            if *end { 0x80 } else { 0 } | 10,
            (dur >> 8) as u8,
            *dur as u8,
        ];
        let p = rtp(101, seq0 + i as u16, ts, 0x1001, i == 0, None, &payload);
        room.mixer
            .handle_rtp(1, &p, now + Duration::from_millis(i as u64 * 20));
    }
    room.drain();
    let digits: Vec<_> = room
        .events
        .iter()
        .filter(|e| matches!(e, Event::Dtmf { .. }))
        .cloned()
        .collect();
    assert_eq!(
        digits,
        vec![Event::Dtmf {
            participant: 1,
            digit: '5',
            duration_ms: 100
        }]
    );
}

#[test]
fn hold_resume_keeps_ssrc_seq_and_continuous_timestamps() {
    let mut room = Room::new(17);
    room.join(1, Codec::Opus, 20, 20, sine(F1, 6000.0));
    let ssrc = room.join(2, Codec::Opus, 20, 20, silence());
    room.run(50, no_delay);
    let mut p = params(Codec::Opus, 20);
    p.send = false;
    room.mixer
        .update_participant(2, p.clone(), room.now)
        .unwrap();
    room.run(25, no_delay);
    p.send = true;
    room.mixer
        .update_participant(2, p.clone(), room.now)
        .unwrap();
    room.run(50, no_delay);
    // A re-INVITE changing ptime keeps the stream too.
    p.ptime_ms = 40;
    room.mixer.update_participant(2, p, room.now).unwrap();
    room.run(50, no_delay);
    let r = room.receiver(2);
    let h = &r.headers;
    assert!(h.len() >= 50 + 50 + 24, "{}", h.len());
    assert!(h.iter().all(|x| x.ssrc == ssrc && x.pt == 111));
    assert!(h[0].marker);
    for (i, w) in h.windows(2).enumerate() {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "packet {i}");
        let dt = w[1].ts.wrapping_sub(w[0].ts);
        if i == 49 {
            assert_eq!(dt, 960 * 26, "timestamp jumps by the held time");
            assert!(w[1].marker);
        } else {
            // Contiguous: each packet starts where the previous one ended.
            assert_eq!(dt as usize, r.durations[i], "packet {i}");
            assert!(!w[1].marker, "packet {i}");
        }
    }
    assert!(
        r.durations[h.len() - 2..].iter().all(|&d| d == 1920),
        "40 ms packets after the re-INVITE"
    );
    assert_eq!(room.mixer.stats(2).unwrap().ssrc_out, ssrc);
    let st = room.mixer.output_stream(2).unwrap();
    assert_eq!(st.ssrc, ssrc);
    assert_eq!(st.packets_sent as usize, h.len());
    assert_eq!(st.next_seq(), h.last().unwrap().seq.wrapping_add(1));
}

#[test]
fn recv_false_ignores_input() {
    let mut room = Room::new(18);
    room.join(1, Codec::Opus, 20, 20, sine(F1, 6000.0));
    room.join(2, Codec::Opus, 20, 20, silence());
    let mut p = params(Codec::Opus, 20);
    p.recv = false;
    room.mixer.update_participant(1, p, room.now).unwrap();
    room.run(60, no_delay);
    assert!(room.receiver(2).tone_power(F1, 0.5) < 1e3);
    assert_eq!(room.mixer.stats(1).unwrap().packets_in, 0);
}

#[test]
fn opus_silk_vad_flag_reflects_the_senders_voice_activity() {
    let mut s = Sender::new(Codec::Opus, 20, sine(F1, 6000.0));
    let voiced: Vec<_> = (0..20).map(|_| s.next_packet()).collect();
    s.signal = Box::new(|t: f64| 30.0 * (t * 12345.678).sin() * (t * 9876.5).cos());
    let quiet: Vec<_> = (0..50).map(|_| s.next_packet()).collect();
    let flags = |v: &[Vec<u8>]| {
        v.iter()
            .map(|p| mixer::opus_silk_vad(&p[12..]))
            .collect::<Vec<_>>()
    };
    assert!(
        flags(&voiced[5..]).iter().all(|f| *f == Some(true)),
        "{:?}",
        flags(&voiced)
    );
    assert!(
        flags(&quiet[25..]).iter().all(|f| *f == Some(false)),
        "{:?}",
        flags(&quiet)
    );
    // A quiet Opus client without RFC 6464 is not mixed, a talking one is.
    let mut room = Room::new(20);
    room.join(1, Codec::Opus, 20, 20, sine(F1, 6000.0));
    room.join(
        2,
        Codec::Opus,
        20,
        20,
        Box::new(|t: f64| 30.0 * (t * 12345.678).sin()),
    );
    room.join(3, Codec::Opus, 20, 20, silence());
    room.run(100, no_delay);
    assert!(room.mixer.stats(1).unwrap().in_mix);
    assert!(!room.mixer.stats(2).unwrap().in_mix);
}

#[test]
fn rfc6464_levels_drive_speaker_detection() {
    let mut room = Room::new(19);
    let mut p = params(Codec::Opus, 20);
    p.audio_level_ext_id = Some(1);
    for id in 1..=3u64 {
        room.mixer.add_participant(id, p.clone(), room.now).unwrap();
        let mut s = Sender::new(
            Codec::Opus,
            20,
            if id == 1 { sine(F1, 8000.0) } else { silence() },
        );
        s.level_ext = Some(1);
        s.ssrc = 0x100 + id as u32;
        room.senders.push((id, s));
        room.receivers.push((id, Receiver::new(Codec::Opus)));
    }
    room.run(60, no_delay);
    let st = room.mixer.stats(1).unwrap();
    assert!(st.speaking && st.in_mix);
    assert!((st.level_dbov - -15.0).abs() < 3.0, "{}", st.level_dbov);
    assert_eq!(room.mixer.stats(2).unwrap().level_dbov, -127.0);
    assert!(room.receiver(2).tone_power(F1, 0.5) > 1e5);
    assert_eq!(room.mixer.active_speaker(), Some(1));
}

/// Power of `freq` in what `id` received between `from` and `to` (sample indices).
fn window_power(room: &Room, id: u64, from: usize, to: usize, freq: f64) -> f64 {
    let r = room.receiver(id);
    goertzel(&r.pcm[from..to.min(r.pcm.len())], freq, r.rate())
}

fn muted_talker_leaves_every_mix(codec: Codec) {
    let mut room = Room::new(11);
    room.join(1, codec, 20, 20, sine(F1, 6000.0));
    room.join(2, codec, 20, 20, silence());
    room.join(3, codec, 20, 20, sine(F2, 6000.0));
    room.run(100, no_delay);
    let rate = clock(codec) as usize;
    let at = |room: &Room, id: u64| room.receiver(id).pcm.len();
    // Before: the listener hears both talkers, talker 1 hears talker 3.
    let (m2, m1) = (at(&room, 2), at(&room, 1));
    assert!(window_power(&room, 2, m2 - rate / 2, m2, F1) > 1e5);
    assert!(window_power(&room, 2, m2 - rate / 2, m2, F2) > 1e5);
    assert_eq!(room.mixer.active_speaker(), Some(1), "{:?}", room.events);

    room.mixer.set_muted(1, true).unwrap();
    room.drain();
    let events_before = room.events.len();
    room.run(60, no_delay);
    // 200 ms after the mute and for the 1 s that follows, talker 1 is absent from every
    // other participant's audio; talker 3 is still heard, and talker 1 still hears it.
    let after = m2 + rate / 5;
    for id in [2, 3] {
        let from = if id == 2 { after } else { m1 + rate / 5 };
        let p = window_power(&room, id, from, from + rate, F1);
        assert!(
            p < 1e3,
            "participant {id} still hears the muted talker: {p:.0}"
        );
    }
    assert!(window_power(&room, 2, after, after + rate, F2) > 1e5);
    let m1_after = m1 + rate / 5;
    assert!(window_power(&room, 1, m1_after, m1_after + rate, F2) > 1e5);
    // Its level is still measured and shown; it is never mixed nor the active speaker.
    let s = room.mixer.stats(1).unwrap();
    assert!(s.speaking && s.level_dbov > -30.0, "{s:?}");
    assert!(!s.in_mix);
    assert_eq!(room.mixer.is_muted(1), Some(true));
    assert_ne!(room.mixer.active_speaker(), Some(1));
    assert!(
        !room.events[events_before..].contains(&Event::ActiveSpeakerChanged { speaker: Some(1) }),
        "{:?}",
        &room.events[events_before..]
    );

    // Unmuted: back in the mix.
    room.mixer.set_muted(1, false).unwrap();
    let back = at(&room, 2);
    room.run(50, no_delay);
    let from = back + rate / 5;
    assert!(window_power(&room, 2, from, from + rate / 2, F1) > 1e5);
    assert!(room.mixer.stats(1).unwrap().in_mix);
    assert_eq!(room.mixer.is_muted(1), Some(false));
    assert!(room.mixer.set_muted(99, true).is_err());
}

#[test]
fn a_muted_talker_leaves_every_mix_and_comes_back_unmuted_pcmu() {
    muted_talker_leaves_every_mix(Codec::Pcmu);
}

#[test]
fn a_muted_talker_leaves_every_mix_and_comes_back_unmuted_opus() {
    muted_talker_leaves_every_mix(Codec::Opus);
}

#[test]
fn the_mute_survives_a_snapshot_and_older_snapshots_read_as_unmuted() {
    let mut room = Room::new(12);
    room.join(1, Codec::Pcmu, 20, 20, sine(F1, 6000.0));
    room.join(2, Codec::Pcmu, 20, 20, silence());
    room.run(50, no_delay);
    let v = room.mixer.state_version();
    room.mixer.set_muted(1, true).unwrap();
    assert!(room.mixer.state_version() > v, "a mute must be replicated");
    let json = serde_json::to_string(&room.mixer.export_state()).unwrap();
    let snap: mixer::MixerSnapshot = serde_json::from_str(&json).unwrap();
    let resumed = mixer::Mixer::from_snapshot(&snap, room.now).unwrap();
    assert_eq!(resumed.is_muted(1), Some(true));
    assert_eq!(resumed.is_muted(2), Some(false));
    // A snapshot written before the field existed.
    let old = json
        .replace(",\"muted\":true", "")
        .replace(",\"muted\":false", "");
    assert!(!old.contains("muted"));
    let snap: mixer::MixerSnapshot = serde_json::from_str(&old).unwrap();
    let resumed = mixer::Mixer::from_snapshot(&snap, room.now).unwrap();
    assert_eq!(resumed.is_muted(1), Some(false));
}

/// Pre-built G.711 resamplers (the pool a hot-standby backup fills before it takes over)
/// give exactly the output freshly built ones give.
#[test]
fn prewarmed_g711_resamplers_change_nothing_a_client_receives() {
    let run = |prewarm: bool| {
        if prewarm {
            mixer::prewarm_g711(8).unwrap();
            let (up, down) = mixer::pooled_g711();
            assert!(up >= 4 && down >= 4, "pool filled: {up} {down}");
        }
        let mut room = Room::new(11);
        room.join(1, Codec::Pcmu, 20, 20, sine(F1, 6000.0));
        room.join(2, Codec::Pcma, 20, 20, sine(F2, 6000.0));
        room.join(3, Codec::Pcmu, 20, 20, silence());
        room.run(100, no_delay);
        (1..=3u64)
            .map(|id| room.receiver(id).pcm.clone())
            .collect::<Vec<_>>()
    };
    let fresh = run(false);
    let pooled = run(true);
    assert!(fresh.iter().all(|p| p.len() > 8000), "audio received");
    assert_eq!(fresh, pooled);
}
