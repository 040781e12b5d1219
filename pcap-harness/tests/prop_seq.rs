//! Property tests: sequence and timestamp arithmetic across 16/32-bit wraps, and the
//! analyzer's loss/duplicate/reorder bookkeeping on generated streams.

use std::time::Duration;

use pcap_harness::analyze_bytes;
use pcap_harness::net::LINKTYPE_ETHERNET;
use pcap_harness::rtp::{extend_seq, extend_ts, seq_diff, ts_diff};
use pcap_harness::writer::{rtp_packet, to_pcap, Datagram};
use proptest::prelude::*;

proptest! {
    #[test]
    fn extend_seq_recovers_the_true_counter(start in 0i64..200_000, steps in prop::collection::vec(-100i64..3000, 1..200)) {
        let mut truth = start;
        let mut reference = start; // highest extended value so far
        for s in steps {
            truth = (truth + s).max(0);
            let ext = extend_seq(reference, (truth & 0xffff) as u16);
            prop_assert_eq!(ext, truth);
            reference = reference.max(ext);
            truth = truth.max(reference - 100);
        }
    }

    #[test]
    fn seq_diff_is_antisymmetric_and_wrap_safe(a: u16, d in -32767i32..=32767) {
        let b = (i32::from(a) + d).rem_euclid(65536) as u16;
        prop_assert_eq!(seq_diff(a, b), d);
        prop_assert_eq!(seq_diff(b, a), -d);
    }

    #[test]
    fn extend_ts_recovers_the_true_clock(start in 0i64..(1i64 << 33), steps in prop::collection::vec(-48_000i64..1_000_000, 1..100)) {
        let mut truth = start;
        for s in steps {
            let next = (truth + s).max(0);
            let ext = extend_ts(truth, (next & 0xffff_ffff) as u32);
            prop_assert_eq!(ext, next);
            prop_assert_eq!(ts_diff(truth as u32, next as u32), next - truth);
            truth = next;
        }
    }

    /// A generated stream across the 16-bit and 32-bit wraps with known loss, duplicates
    /// and adjacent reorders: the analyzer's counts are exact.
    #[test]
    fn analyzer_counts_loss_duplicates_reorders_exactly(
        seq0 in 65_000u16..=65_535,
        ts0 in 0xffff_0000u32..=0xffff_ffff,
        n in 20usize..400,
        drops in prop::collection::vec(any::<bool>(), 400),
        dups in prop::collection::vec(any::<bool>(), 400),
        swaps in prop::collection::vec(any::<bool>(), 400),
    ) {
        // Decide which sequence offsets are sent; the first and last always are.
        let mut sent: Vec<usize> = (0..n)
            .filter(|&i| i == 0 || i == n - 1 || !(drops[i] && i % 7 == 0))
            .collect();
        let dropped = n - sent.len();
        // Adjacent swaps (never touching the first or last), at most one per pair.
        let mut reordered = 0u64;
        let mut i = 1;
        while i + 2 < sent.len() {
            if swaps[i] && i % 5 == 0 {
                sent.swap(i, i + 1);
                reordered += 1;
                i += 3;
            } else {
                i += 1;
            }
        }
        // Duplicates immediately after the original.
        let mut order = Vec::new();
        let mut duplicates = 0u64;
        for (k, &off) in sent.iter().enumerate() {
            order.push(off);
            if dups[k] && k % 11 == 3 {
                order.push(off);
                duplicates += 1;
            }
        }
        let datagrams: Vec<Datagram> = order
            .iter()
            .enumerate()
            .map(|(k, &off)| Datagram {
                time: Duration::from_secs(1_700_000_000) + Duration::from_millis(20 * k as u64),
                src: "10.0.0.1:4000".parse().unwrap(),
                dst: "10.0.0.2:5000".parse().unwrap(),
                payload: rtp_packet(
                    0,
                    false,
                    seq0.wrapping_add(off as u16),
                    ts0.wrapping_add(160 * off as u32),
                    7,
                    &[0xff; 160],
                ),
            })
            .collect();
        let r = analyze_bytes(&to_pcap(LINKTYPE_ETHERNET, &datagrams)).unwrap();
        prop_assert_eq!(r.rtp_streams.len(), 1);
        let s = &r.rtp_streams[0];
        prop_assert_eq!(s.packets, order.len() as u64);
        prop_assert_eq!(s.expected, n as u64);
        prop_assert_eq!(s.missing, dropped as u64);
        prop_assert_eq!(s.lost, n as i64 - order.len() as i64);
        prop_assert_eq!(s.duplicates, duplicates);
        prop_assert_eq!(s.reordered, reordered);
        prop_assert_eq!(s.seq_resets, 0);
        prop_assert_eq!(s.ts_errors, 0);
        prop_assert_eq!(s.frame_samples, Some(160));
        let wraps = u64::from(u32::from(seq0) + n as u32 - 1 > 65_535);
        prop_assert_eq!(s.seq_wraps, wraps);
    }
}
