//! Hand-made captures with known defects: every figure below is known by construction.

use std::net::SocketAddr;
use std::time::Duration;

use pcap_harness::net::*;
use pcap_harness::writer::{rtp_packet, to_pcap, to_pcapng, Datagram};
use pcap_harness::{analyze_bytes, Error, Report};

const T0: u64 = 1_700_000_000; // epoch seconds of the first packet
const SSRC: u32 = 0x1234_5678;

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A packet description: (arrival ms after T0, seq, ts, marker).
type P = (f64, u16, u32, bool);

fn pcma_stream(src: &str, dst: &str, ssrc: u32, pkts: &[P]) -> Vec<Datagram> {
    pkts.iter()
        .map(|&(ms, seq, ts, m)| Datagram {
            time: Duration::from_secs(T0) + Duration::from_nanos((ms * 1e6).round() as u64),
            src: a(src),
            dst: a(dst),
            payload: rtp_packet(8, m, seq, ts, ssrc, &[0xd5; 160]),
        })
        .collect()
}

/// Regular 20 ms PCMA packets: seqs from `seq0`, n packets, no loss.
fn regular(seq0: u16, n: usize) -> Vec<P> {
    (0..n)
        .map(|i| {
            (
                i as f64 * 20.0,
                seq0.wrapping_add(i as u16),
                1000u32.wrapping_add(160 * i as u32),
                false,
            )
        })
        .collect()
}

fn analyze(d: &[Datagram]) -> Report {
    analyze_bytes(&to_pcap(LINKTYPE_ETHERNET, d)).expect("valid capture")
}

fn only_stream(r: &Report) -> &pcap_harness::RtpStream {
    assert_eq!(r.rtp_streams.len(), 1, "{:#?}", r.rtp_streams);
    &r.rtp_streams[0]
}

#[test]
fn clean_stream_has_no_defects_and_zero_jitter() {
    let r = analyze(&pcma_stream(
        "10.0.0.1:4000",
        "10.0.0.2:5000",
        SSRC,
        &regular(100, 50),
    ));
    let s = only_stream(&r);
    assert_eq!(s.ssrc, SSRC);
    assert_eq!(s.src, "10.0.0.1:4000");
    assert_eq!(s.dst, "10.0.0.2:5000");
    assert_eq!(s.codec, "PCMA/8000");
    assert_eq!(
        (s.packets, s.lost, s.missing, s.duplicates, s.reordered),
        (50, 0, 0, 0, 0)
    );
    assert_eq!((s.seq_first, s.seq_last, s.expected), (100, 149, 50));
    assert_eq!(s.frame_samples, Some(160));
    assert_eq!(s.ts_errors, 0);
    assert!(s.jitter_ms.abs() < 1e-9, "{}", s.jitter_ms);
    assert!((s.max_gap_ms - 20.0).abs() < 1e-6);
    assert!((s.first_time - T0 as f64).abs() < 1e-6);
    assert!((s.last_time - (T0 as f64 + 0.98)).abs() < 1e-6);
    assert_eq!(s.payload_types, vec![8]);
}

#[test]
fn sequence_wrap_at_65535_is_not_loss() {
    let r = analyze(&pcma_stream(
        "10.0.0.1:4000",
        "10.0.0.2:5000",
        SSRC,
        &regular(65530, 12),
    ));
    let s = only_stream(&r);
    assert_eq!((s.seq_first, s.seq_last), (65530, 5));
    assert_eq!((s.packets, s.expected, s.lost, s.missing), (12, 12, 0, 0));
    assert_eq!(s.seq_wraps, 1);
    assert_eq!(s.tshark_lost, 0);
    assert_eq!((s.reordered, s.seq_resets, s.sequence_errors), (0, 0, 0));
    assert!(s.seq_gaps.is_empty());
}

#[test]
fn loss_across_the_wrap_is_counted_exactly() {
    // 65533, 65534, [65535, 0, 1 lost], 2, 3
    let mut p = regular(65533, 7);
    p.drain(2..5);
    let r = analyze(&pcma_stream("10.0.0.1:4000", "10.0.0.2:5000", SSRC, &p));
    let s = only_stream(&r);
    assert_eq!((s.packets, s.expected, s.lost, s.missing), (4, 7, 3, 3));
    assert_eq!(s.seq_gaps.len(), 1);
    assert_eq!(
        (
            s.seq_gaps[0].from_seq,
            s.seq_gaps[0].to_seq,
            s.seq_gaps[0].skipped
        ),
        (65534, 2, 3)
    );
}

#[test]
fn reorder_is_not_loss_and_not_reset() {
    let mut p = regular(1, 6); // seqs 1..=6
    p.swap(3, 4); // arrival order 1,2,3,5,4,6
    let (t3, t4) = (p[3].0, p[4].0);
    p[3].0 = t3.min(t4);
    p[4].0 = t3.max(t4);
    let r = analyze(&pcma_stream("10.0.0.1:4000", "10.0.0.2:5000", SSRC, &p));
    let s = only_stream(&r);
    assert_eq!((s.packets, s.lost, s.missing, s.duplicates), (6, 0, 0, 0));
    assert_eq!(s.tshark_lost, 0);
    assert_eq!((s.reordered, s.seq_resets), (1, 0));
    assert_eq!(s.seq_gaps.len(), 1, "3 -> 5 is a forward jump");
    assert_eq!(
        s.sequence_errors, 2,
        "tshark flags both the jump and the late packet"
    );
}

#[test]
fn big_backward_jump_is_a_reset_not_a_reorder() {
    let mut p = regular(1000, 10);
    for (i, q) in regular(10, 10).into_iter().enumerate() {
        p.push((
            200.0 + 20.0 * i as f64,
            q.1,
            50_000 + 160 * i as u32,
            i == 0,
        ));
    }
    let r = analyze(&pcma_stream("10.0.0.1:4000", "10.0.0.2:5000", SSRC, &p));
    let s = only_stream(&r);
    assert_eq!((s.seq_resets, s.reordered, s.duplicates), (1, 0, 0));
    assert_eq!((s.resets[0].from_seq, s.resets[0].to_seq), (1009, 10));
    assert!((s.resets[0].time - (T0 as f64 + 0.2)).abs() < 1e-6);
    assert_eq!((s.packets, s.expected, s.lost, s.missing), (20, 20, 0, 0));
}

#[test]
fn duplicates_are_counted_and_lost_goes_negative_like_tshark() {
    let base = regular(1, 3);
    let p = vec![base[0], base[1], base[1], base[2], base[2], base[2]];
    let p: Vec<P> = p
        .into_iter()
        .enumerate()
        .map(|(i, q)| (i as f64 * 20.0, q.1, q.2, q.3))
        .collect();
    let r = analyze(&pcma_stream("10.0.0.1:4000", "10.0.0.2:5000", SSRC, &p));
    let s = only_stream(&r);
    assert_eq!(
        (s.packets, s.duplicates, s.lost, s.missing, s.reordered),
        (6, 3, -3, 0, 0)
    );
}

#[test]
fn ssrc_change_on_the_same_five_tuple_is_reported_with_its_time() {
    let mut d = pcma_stream(
        "10.0.0.1:4000",
        "10.0.0.2:5000",
        0xAAAA_0001,
        &regular(1, 10),
    );
    let second: Vec<P> = regular(500, 10)
        .into_iter()
        .map(|(ms, s, t, m)| (ms + 240.0, s, t, m))
        .collect();
    d.extend(pcma_stream(
        "10.0.0.1:4000",
        "10.0.0.2:5000",
        0xBBBB_0002,
        &second,
    ));
    let r = analyze(&d);
    assert_eq!(r.rtp_streams.len(), 2);
    assert_eq!(r.rtp_streams[0].ssrc, 0xAAAA_0001);
    assert_eq!(r.rtp_streams[1].ssrc, 0xBBBB_0002);
    assert_eq!(r.rtp_flows.len(), 1);
    let f = &r.rtp_flows[0];
    assert_eq!(f.ssrcs, vec![0xAAAA_0001, 0xBBBB_0002]);
    assert_eq!(f.ssrc_changes.len(), 1);
    assert!((f.ssrc_changes[0].time - (T0 as f64 + 0.24)).abs() < 1e-6);
    assert_eq!(f.packets, 20);
    assert!((f.max_gap_ms - 60.0).abs() < 1e-6, "{}", f.max_gap_ms);
    assert!((f.max_gap_at - (T0 as f64 + 0.24)).abs() < 1e-6);
    assert_eq!(
        (f.ssrc_changes[0].from, f.ssrc_changes[0].to),
        (0xAAAA_0001, 0xBBBB_0002)
    );
}

#[test]
fn largest_gap_is_placed_at_the_packet_that_ends_it() {
    // 50 packets; seq 20..=29 missing and a 220 ms hole before seq 30.
    let p: Vec<P> = regular(0, 50)
        .into_iter()
        .filter(|q| !(20..30).contains(&q.1))
        .collect();
    let r = analyze(&pcma_stream("10.0.0.1:4000", "10.0.0.2:5000", SSRC, &p));
    let s = only_stream(&r);
    assert_eq!((s.packets, s.lost, s.missing), (40, 10, 10));
    assert!((s.max_gap_ms - 220.0).abs() < 1e-6, "{}", s.max_gap_ms);
    assert!((s.max_gap_at - (T0 as f64 + 0.6)).abs() < 1e-6);
    assert_eq!(s.max_gap_seq, 30);
    assert_eq!(
        (
            s.seq_gaps[0].from_seq,
            s.seq_gaps[0].to_seq,
            s.seq_gaps[0].skipped
        ),
        (19, 30, 10)
    );
    assert_eq!(s.ts_errors, 0, "timestamps follow the sequence numbers");
    assert!(s.jitter_ms.abs() < 1e-9, "loss alone is no jitter");
}

#[test]
fn timestamp_jump_without_marker_is_an_error_with_marker_it_is_not() {
    let mut p = regular(1, 20);
    for q in p.iter_mut().skip(10) {
        q.2 += 8000; // one second of timestamps skipped
    }
    let r = analyze(&pcma_stream("10.0.0.1:4000", "10.0.0.2:5000", SSRC, &p));
    let s = only_stream(&r);
    assert_eq!(s.ts_errors, 1);
    assert_eq!(
        (
            s.ts_error_list[0].seq,
            s.ts_error_list[0].expected_step,
            s.ts_error_list[0].actual_step
        ),
        (11, 160, 8160)
    );
    assert!((s.max_skew_ms - 1000.0).abs() < 1e-6, "{}", s.max_skew_ms);
    p[10].3 = true;
    let r = analyze(&pcma_stream("10.0.0.1:4000", "10.0.0.2:5000", SSRC, &p));
    let s = only_stream(&r);
    assert_eq!((s.ts_errors, s.markers), (0, 1));
}

#[test]
fn jitter_matches_rfc3550_on_a_known_pattern() {
    // Every other packet 5 ms late: D alternates 5, -5 -> |D| = 5 ms each step.
    let p: Vec<P> = regular(1, 3)
        .into_iter()
        .enumerate()
        .map(|(i, q)| (q.0 + if i == 1 { 5.0 } else { 0.0 }, q.1, q.2, q.3))
        .collect();
    let r = analyze(&pcma_stream("10.0.0.1:4000", "10.0.0.2:5000", SSRC, &p));
    let s = only_stream(&r);
    let j1 = 5.0 / 16.0;
    let j2 = j1 + (5.0 - j1) / 16.0;
    assert!((s.jitter_last_ms - j2).abs() < 1e-9, "{}", s.jitter_last_ms);
    assert!((s.jitter_ms - j2).abs() < 1e-9);
}

#[test]
fn all_link_types_and_pcapng_give_the_same_stream() {
    let d = pcma_stream("10.0.0.1:4000", "10.0.0.2:5000", SSRC, &regular(7, 25));
    let d6 = pcma_stream(
        "[2001:db8::1]:4000",
        "[2001:db8::2]:5000",
        SSRC,
        &regular(7, 25),
    );
    let mut captures = vec![];
    for lt in [
        LINKTYPE_ETHERNET,
        LINKTYPE_LINUX_SLL,
        LINKTYPE_LINUX_SLL2,
        LINKTYPE_RAW,
        LINKTYPE_NULL,
    ] {
        captures.push((format!("pcap v4 {lt}"), to_pcap(lt, &d), "10.0.0.2:5000"));
        captures.push((
            format!("pcap v6 {lt}"),
            to_pcap(lt, &d6),
            "[2001:db8::2]:5000",
        ));
        captures.push((
            format!("pcapng v4 {lt}"),
            to_pcapng(lt, &d),
            "10.0.0.2:5000",
        ));
    }
    for (name, bytes, dst) in captures {
        let r = analyze_bytes(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.rtp_streams.len(), 1, "{name}");
        let s = &r.rtp_streams[0];
        assert_eq!(s.dst, dst, "{name}");
        assert_eq!(
            (s.packets, s.lost, s.seq_first, s.seq_last),
            (25, 0, 7, 31),
            "{name}"
        );
        assert!(
            (s.first_time - T0 as f64).abs() < 1e-6,
            "{name}: {}",
            s.first_time
        );
        assert!((s.max_gap_ms - 20.0).abs() < 1e-6, "{name}");
        assert_eq!(
            r.format,
            if name.starts_with("pcapng") {
                "pcapng"
            } else {
                "pcap"
            }
        );
    }
}

#[test]
fn truncated_file_names_the_offset_of_the_broken_record() {
    let bytes = to_pcap(
        LINKTYPE_ETHERNET,
        &pcma_stream("10.0.0.1:4000", "10.0.0.2:5000", SSRC, &regular(1, 3)),
    );
    // pcap header 24 bytes; each record 16 + 14 (eth) + 20 (ip) + 8 (udp) + 12 + 160.
    let rec = 16 + 14 + 20 + 8 + 12 + 160;
    assert_eq!(bytes.len(), 24 + 3 * rec);
    let cut = &bytes[..bytes.len() - 5];
    match analyze_bytes(cut) {
        Err(Error::Truncated { offset, .. }) => assert_eq!(offset, (24 + 2 * rec) as u64),
        other => panic!("expected Truncated, got {other:?}"),
    }
    let msg = analyze_bytes(cut).unwrap_err().to_string();
    assert!(
        msg.contains(&format!("byte offset {}", 24 + 2 * rec)),
        "{msg}"
    );
    // Cut inside the record header, and inside the file header.
    assert!(
        matches!(analyze_bytes(&bytes[..24 + rec + 7]), Err(Error::Truncated { offset, .. }) if offset == (24 + rec) as u64)
    );
    assert!(matches!(
        analyze_bytes(&bytes[..10]),
        Err(Error::Truncated { offset: 0, .. })
    ));
    assert!(matches!(
        analyze_bytes(b"GIF89a not a capture"),
        Err(Error::UnknownFormat { .. })
    ));
}

#[test]
fn truncated_pcapng_names_the_offset_of_the_broken_block() {
    let bytes = to_pcapng(
        LINKTYPE_ETHERNET,
        &pcma_stream("10.0.0.1:4000", "10.0.0.2:5000", SSRC, &regular(1, 3)),
    );
    let cut = &bytes[..bytes.len() - 3];
    let err = analyze_bytes(cut).unwrap_err();
    let last_block_len = 32 + (14 + 20 + 8 + 12 + 160 + 2); // EPB header/trailer + padded data
    match err {
        Error::Truncated { offset, .. } | Error::Corrupt { offset, .. } => {
            assert_eq!(offset as usize, bytes.len() - last_block_len)
        }
        other => panic!("expected an offset error, got {other:?}"),
    }
}

#[test]
fn random_pcapng_corruption_never_panics() {
    let bytes = to_pcapng(
        LINKTYPE_ETHERNET,
        &pcma_stream("10.0.0.1:4000", "10.0.0.2:5000", SSRC, &regular(1, 20)),
    );
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..1000 {
        let mut b = bytes.clone();
        for _ in 0..3 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x as usize) % b.len();
            b[i] = (x >> 32) as u8;
        }
        let len = (x as usize >> 8) % (b.len() + 1);
        let _ = analyze_bytes(&b[..len]);
        let _ = analyze_bytes(&b);
    }
}

#[test]
fn random_corruption_never_panics() {
    let bytes = to_pcap(
        LINKTYPE_ETHERNET,
        &pcma_stream("10.0.0.1:4000", "10.0.0.2:5000", SSRC, &regular(1, 20)),
    );
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..2000 {
        let mut b = bytes.clone();
        for _ in 0..4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x as usize) % b.len();
            b[i] = (x >> 32) as u8;
        }
        let len = (x as usize >> 8) % (b.len() + 1);
        let _ = analyze_bytes(&b[..len]);
        let _ = analyze_bytes(&b);
    }
}

fn sip(from: &str, to: &str, ms: f64, text: &str) -> Datagram {
    Datagram {
        time: Duration::from_secs(T0) + Duration::from_nanos((ms * 1e6) as u64),
        src: a(from),
        dst: a(to),
        payload: text.replace('\n', "\r\n").into_bytes(),
    }
}

#[test]
fn sip_dialog_messages_and_sdp_labels() {
    let sdp = "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.2\nt=0 0\nm=audio 5000 RTP/AVP 111\na=rtpmap:111 opus/48000/2\n";
    let invite = format!(
        "INVITE sip:room@10.0.0.2 SIP/2.0\nVia: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bK1\nFrom: <sip:a@10.0.0.1>;tag=f1\nTo: <sip:room@10.0.0.2>\nCall-ID: call-xyz\nCSeq: 1 INVITE\nContent-Type: application/sdp\nContent-Length: {}\n\n{sdp}",
        sdp.len()
    );
    let mut d = vec![
        sip("10.0.0.1:5062", "10.0.0.2:5060", 0.0, &invite),
        sip("10.0.0.2:5060", "10.0.0.1:5062", 1.0, "SIP/2.0 100 Trying\nCall-ID: call-xyz\nCSeq: 1 INVITE\nContent-Length: 0\n\n"),
        sip("10.0.0.2:5060", "10.0.0.1:5062", 2.0, "SIP/2.0 200 OK\ni: call-xyz\nTo: <sip:room@10.0.0.2>;tag=t9\nCSeq: 1 INVITE\nContent-Length: 0\n\n"),
        sip("10.0.0.1:5062", "10.0.0.2:5060", 3.0, "ACK sip:room@10.0.0.2 SIP/2.0\nCall-ID: call-xyz\nCSeq: 1 ACK\nContent-Length: 0\n\n"),
    ];
    // Opus-labelled stream (PT 111 is dynamic: only the SDP can name it).
    for i in 0..10u16 {
        d.push(Datagram {
            time: Duration::from_secs(T0) + Duration::from_millis(10 + 20 * u64::from(i)),
            src: a("10.0.0.9:7000"),
            dst: a("10.0.0.2:5000"),
            payload: rtp_packet(111, i == 0, i, 960 * u32::from(i), 42, &[0xf8, 0xff, 0xfe]),
        });
    }
    d.push(sip(
        "10.0.0.2:5060",
        "10.0.0.1:5062",
        500.0,
        "BYE sip:a@10.0.0.1 SIP/2.0\nCall-ID: call-xyz\nCSeq: 2 BYE\nContent-Length: 0\n\n",
    ));
    d.sort_by_key(|x| x.time);
    let r = analyze(&d);
    assert_eq!(r.sip_dialogs.len(), 1);
    let dl = &r.sip_dialogs[0];
    let seq: Vec<String> = dl
        .messages
        .iter()
        .map(|m| {
            m.method
                .clone()
                .unwrap_or_else(|| m.status.unwrap().to_string())
        })
        .collect();
    assert_eq!(seq, ["INVITE", "100", "200", "ACK", "BYE"]);
    assert!(dl.messages[0].has_sdp);
    assert_eq!(dl.messages[0].from_tag.as_deref(), Some("f1"));
    assert_eq!(dl.messages[2].to_tag.as_deref(), Some("t9"));
    assert_eq!(
        dl.requests_after("BYE", "10.0.0.2", T0 as f64 + 0.4)
            .count(),
        1
    );
    assert_eq!(
        dl.requests_after("BYE", "10.0.0.2:5060", T0 as f64 + 0.6)
            .count(),
        0
    );
    assert_eq!(
        dl.requests_after("INVITE", "10.0.0.2", T0 as f64).count(),
        0
    );
    let s = only_stream(&r);
    assert_eq!(s.codec, "opus/48000/2");
    assert_eq!(s.codec_source, "sdp");
    assert_eq!(s.clock_rate, 48000);
    assert_eq!(s.call_id.as_deref(), Some("call-xyz"));
    assert!(s.decoded);
    assert_eq!(s.frame_samples, Some(960));
}

#[test]
fn rtcp_is_demultiplexed_from_rtp_on_the_same_port() {
    let mut d = pcma_stream("10.0.0.1:4000", "10.0.0.2:5000", SSRC, &regular(1, 10));
    // RR with one report block about SSRC: lost 3, jitter 80.
    let mut rr = vec![0x81, 201, 0, 7];
    rr.extend_from_slice(&0xCAFE_0001u32.to_be_bytes());
    rr.extend_from_slice(&SSRC.to_be_bytes());
    rr.extend_from_slice(&[12, 0, 0, 3]);
    rr.extend_from_slice(&10u32.to_be_bytes());
    rr.extend_from_slice(&80u32.to_be_bytes());
    rr.extend_from_slice(&[0; 8]);
    d.push(Datagram {
        time: Duration::from_secs(T0 + 1),
        src: a("10.0.0.2:5000"),
        dst: a("10.0.0.1:4000"),
        payload: rr,
    });
    let r = analyze(&d);
    assert_eq!(r.rtp_streams.len(), 1);
    assert_eq!(r.rtcp_flows.len(), 1);
    let f = &r.rtcp_flows[0];
    assert_eq!(f.packets, 1);
    assert_eq!(f.sender_ssrcs, vec![0xCAFE_0001]);
    assert_eq!(f.packet_types, vec![(201, 1)]);
    assert_eq!(f.last_reports[0].ssrc, SSRC);
    assert_eq!(
        (
            f.last_reports[0].cumulative_lost,
            f.last_reports[0].jitter,
            f.last_reports[0].fraction_lost
        ),
        (3, 80, 12)
    );
}

#[test]
fn energy_windows_show_speech_and_the_hole() {
    // 1 s of full-scale A-law square wave, with packets 20..=29 (200 ms) lost.
    let p: Vec<P> = regular(0, 50)
        .into_iter()
        .filter(|q| !(20..30).contains(&q.1))
        .collect();
    let d: Vec<Datagram> = p
        .iter()
        .map(|&(ms, seq, ts, m)| Datagram {
            time: Duration::from_secs(T0) + Duration::from_nanos((ms * 1e6) as u64),
            src: a("10.0.0.1:4000"),
            dst: a("10.0.0.2:5000"),
            payload: rtp_packet(8, m, seq, ts, SSRC, &[0xaa, 0x2a].repeat(80)),
        })
        .collect();
    let r = analyze(&d);
    let s = only_stream(&r);
    assert!(s.decoded);
    assert_eq!(s.decoded_rate, 8000);
    assert_eq!(s.energy_dbfs.len(), 10);
    for (i, e) in s.energy_dbfs.iter().enumerate() {
        if i == 4 || i == 5 {
            assert_eq!(*e, -120.0, "window {i} is the hole: {:?}", s.energy_dbfs);
        } else {
            assert!(*e > -0.2 && *e < 0.0, "window {i}: {:?}", s.energy_dbfs);
        }
    }
}

#[test]
fn report_round_trips_through_json_with_the_documented_names() {
    let r = analyze(&pcma_stream(
        "10.0.0.1:4000",
        "10.0.0.2:5000",
        SSRC,
        &regular(1, 10),
    ));
    let json = serde_json::to_value(&r).unwrap();
    let s = &json["rtp_streams"][0];
    for k in [
        "ssrc",
        "packets",
        "lost",
        "duplicates",
        "reordered",
        "max_gap_ms",
        "jitter_ms",
        "payload_types",
        "src",
        "dst",
        "first_time",
        "last_time",
        "codec",
        "seq_first",
        "seq_last",
        "ts_errors",
        "markers",
        "energy_dbfs",
        "max_gap_at",
    ] {
        assert!(!s[k].is_null(), "missing {k}");
    }
    assert!(s["ssrc"].is_u64());
    assert!(json["sip_dialogs"].is_array());
    let back: Report = serde_json::from_value(json).unwrap();
    assert_eq!(back, r);
}

#[test]
fn snaplen_cut_frames_still_count_as_rtp() {
    use pcap_harness::writer::to_pcap_snaplen;
    let mut p = regular(10, 30);
    p.remove(12);
    let d = pcma_stream("10.0.0.1:4000", "10.0.0.2:5000", SSRC, &p);
    // Ethernet + IPv4 + UDP + RTP header + 4 payload bytes.
    let r = analyze_bytes(&to_pcap_snaplen(
        LINKTYPE_ETHERNET,
        &d,
        14 + 20 + 8 + 12 + 4,
    ))
    .unwrap();
    let s = only_stream(&r);
    assert_eq!((s.packets, s.lost, s.missing), (29, 1, 1));
    assert_eq!(s.payload_bytes, 29 * 4);
    assert_eq!(r.truncated_datagrams, 29);
    assert!(s.energy_dbfs.is_empty(), "cut payloads are not decoded");
    assert!(r.warnings.iter().any(|w| w.contains("snap length")));
}

#[test]
fn sink_shows_a_failover_to_another_source_and_ssrc() {
    // The primary sends 10 packets; 40 ms after its last one, the backup continues from
    // another address with another SSRC.
    let mut d = pcma_stream("10.0.0.1:4000", "10.0.0.9:5000", 0x1111, &regular(1, 10));
    let backup: Vec<P> = regular(11, 10)
        .into_iter()
        .map(|(ms, s, t, m)| (ms + 220.0, s, t + 1600, m))
        .collect();
    d.extend(pcma_stream(
        "10.0.0.2:4000",
        "10.0.0.9:5000",
        0x2222,
        &backup,
    ));
    let r = analyze(&d);
    assert_eq!(r.rtp_streams.len(), 2);
    let sink = r.sink("10.0.0.9:5000").expect("sink");
    assert_eq!(sink.packets, 20);
    assert_eq!(sink.sources, ["10.0.0.1:4000", "10.0.0.2:4000"]);
    assert_eq!(sink.ssrcs, [0x1111, 0x2222]);
    assert!((sink.max_gap_ms - 40.0).abs() < 1e-6, "{}", sink.max_gap_ms);
    assert!((sink.max_gap_at - (T0 as f64 + 0.22)).abs() < 1e-6);
    assert_eq!(sink.changes.len(), 1);
    let c = &sink.changes[0];
    assert_eq!(
        (c.from_ssrc, c.to_ssrc, c.to_src.as_str()),
        (0x1111, 0x2222, "10.0.0.2:4000")
    );
    assert!((c.gap_ms - 40.0).abs() < 1e-6);
}

#[test]
fn malformed_pcapng_blocks_give_errors_with_offsets() {
    let good = to_pcapng(
        LINKTYPE_ETHERNET,
        &pcma_stream("10.0.0.1:4000", "10.0.0.2:5000", SSRC, &regular(1, 2)),
    );
    // Append blocks of every standard type with bodies that are too short or inconsistent.
    for block_type in [1u32, 2, 3, 4, 5, 6, 0x0000_0BAD] {
        for body in [
            vec![],
            vec![0u8; 4],
            vec![0xff; 8],
            vec![1, 0, 0xff, 0xff, 0, 0, 0, 0],
        ] {
            let mut b = good.clone();
            let len = 12 + body.len() as u32;
            b.extend_from_slice(&block_type.to_ne_bytes());
            b.extend_from_slice(&len.to_ne_bytes());
            b.extend_from_slice(&body);
            b.extend_from_slice(&len.to_ne_bytes());
            match analyze_bytes(&b) {
                Ok(_) => {}
                Err(Error::Corrupt { offset, .. }) | Err(Error::Truncated { offset, .. }) => {
                    assert_eq!(offset as usize, good.len(), "block type {block_type}")
                }
                Err(e) => panic!("block type {block_type}: {e}"),
            }
        }
    }
}

fn analyze_with_event(d: &[Datagram], event: Option<pcap_harness::Event>) -> Report {
    pcap_harness::analyze::analyze_bytes_with(
        &to_pcap(LINKTYPE_ETHERNET, d),
        None,
        &pcap_harness::Options {
            event,
            ..Default::default()
        },
    )
    .expect("valid capture")
}

#[test]
fn event_gap_is_the_gap_across_the_event_not_an_earlier_loss_or_a_later_stall() {
    // 20 ms packets for 4 s: one lost at 0.4 s (40 ms gap, before the event), two lost
    // across the event at 1.0 s (60 ms gap, seq +3), and a 200 ms arrival stall at 3 s
    // with the sequence intact (the whole call's largest gap).
    let p: Vec<P> = regular(1, 200)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| ![20, 50, 51].contains(i))
        .map(|(i, (ms, s, t, m))| (if i >= 150 { ms + 200.0 } else { ms }, s, t, m))
        .collect();
    let d = pcma_stream("10.0.0.1:4000", "10.0.0.2:5000", SSRC, &p);
    let t0 = T0 as f64;

    let r = analyze_with_event(&d, Some(pcap_harness::Event::at(t0 + 1.0)));
    let s = only_stream(&r);
    assert!((s.max_gap_ms - 220.0).abs() < 1e-6, "{}", s.max_gap_ms);
    let g = s.event_gap.as_ref().expect("a gap across the event");
    assert!((g.gap_ms - 60.0).abs() < 1e-6, "{g:?}");
    assert!((g.from_time - (t0 + 0.98)).abs() < 1e-6, "{g:?}");
    assert!((g.to_time - (t0 + 1.04)).abs() < 1e-6, "{g:?}");
    assert_eq!(g.seq_step, Some(3));
    let sink = r.sink("10.0.0.2:5000").expect("sink");
    let sg = sink.event_gap.as_ref().expect("sink gap");
    assert!(
        (sg.gap_ms - 60.0).abs() < 1e-6 && sg.seq_step.is_none(),
        "{sg:?}"
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["rtp_streams"][0]["event_gap"]["seq_step"], 3);

    // A window reaching the stall makes the stall the event's gap.
    let wide = pcap_harness::Event {
        time: t0 + 1.0,
        within_s: 2.5,
    };
    let r = analyze_with_event(&d, Some(wide));
    let g = only_stream(&r).event_gap.clone().expect("gap");
    assert!((g.gap_ms - 220.0).abs() < 1e-6, "{g:?}");
    assert_eq!(g.seq_step, Some(1));

    // No event, or an event after the last packet: no gap to report.
    assert!(only_stream(&analyze_with_event(&d, None))
        .event_gap
        .is_none());
    let after = analyze_with_event(&d, Some(pcap_harness::Event::at(t0 + 10.0)));
    assert!(only_stream(&after).event_gap.is_none());
    assert!(after.rtp_sinks[0].event_gap.is_none());
}

#[test]
fn event_gap_of_a_sink_spans_a_change_of_sender() {
    // The primary's last packet at 180 ms, the backup's first (another SSRC) at 220 ms; the
    // event (the kill) at 190 ms. Per stream nothing spans it; the client's port saw 40 ms.
    let mut d = pcma_stream("10.0.0.1:4000", "10.0.0.9:5000", 0x1111, &regular(1, 10));
    let backup: Vec<P> = regular(11, 10)
        .into_iter()
        .map(|(ms, s, t, m)| (ms + 220.0, s, t + 1600, m))
        .collect();
    d.extend(pcma_stream(
        "10.0.0.2:4000",
        "10.0.0.9:5000",
        0x2222,
        &backup,
    ));
    let r = analyze_with_event(&d, Some(pcap_harness::Event::at(T0 as f64 + 0.19)));
    let sink = r.sink("10.0.0.9:5000").expect("sink");
    let g = sink.event_gap.as_ref().expect("sink gap");
    assert!((g.gap_ms - 40.0).abs() < 1e-6, "{g:?}");
    assert!((g.to_time - (T0 as f64 + 0.22)).abs() < 1e-6, "{g:?}");
    assert!(r
        .streams_with_ssrc(0x1111)
        .next()
        .unwrap()
        .event_gap
        .is_none());
    let g2 = r
        .streams_with_ssrc(0x2222)
        .next()
        .unwrap()
        .event_gap
        .clone();
    assert!((g2.expect("backup stream gap").gap_ms - 20.0).abs() < 1e-6);
}
