//! Regressions for what the fuzz targets (`pcap-harness/fuzz`) found.
//!
//! This test binary counts allocations: a capture of a few hundred bytes must not make the
//! analyzer allocate gigabytes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pcap_harness::net::LINKTYPE_ETHERNET;
use pcap_harness::writer::{rtp_packet, to_pcap, Datagram};

/// The system allocator, remembering the largest single allocation.
struct Largest;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Largest = Largest;

/// fuzz `pcap_reader` (libFuzzer out-of-memory, malloc of 2.4 GB): a short stream whose
/// packets arrive hours apart made the decoder materialise the silent timeline between
/// them (48000 samples per second of i16). The energy per 100 ms window is still reported
/// for the whole span, but silence is no longer stored.
#[test]
fn packets_hours_apart_do_not_allocate_the_silence_between_them() {
    let t0 = Duration::from_secs(1_700_000_000);
    let mut d = Vec::new();
    for (i, at) in [0u64, 20, 40, 7 * 3600 * 1000, 7 * 3600 * 1000 + 20]
        .into_iter()
        .enumerate()
    {
        d.push(Datagram {
            time: t0 + Duration::from_millis(at),
            src: "10.0.0.1:4000".parse().unwrap(),
            dst: "10.0.0.2:5000".parse().unwrap(),
            // PCMA full-scale-ish samples: loud windows.
            payload: rtp_packet(
                8,
                i == 0,
                100 + i as u16,
                160 * i as u32,
                0xFEED,
                &[0xaa; 160],
            ),
        });
    }
    let pcap = to_pcap(LINKTYPE_ETHERNET, &d);
    LARGEST.store(0, Ordering::Relaxed);
    let r = pcap_harness::analyze_bytes(&pcap).unwrap();
    let largest = LARGEST.load(Ordering::Relaxed);
    assert_eq!(r.rtp_streams.len(), 1, "{:#?}", r.rtp_streams);
    let s = &r.rtp_streams[0];
    assert!(s.decoded, "{s:#?}");
    assert_eq!(s.decode_errors, 0);
    // 7 hours of 100 ms windows: loud at the start and at the end, silence between.
    let windows = 7 * 36_000 + 1;
    assert_eq!(s.energy_dbfs.len(), windows);
    let loud: Vec<usize> = (0..windows).filter(|&i| s.energy_dbfs[i] > -20.0).collect();
    assert_eq!(loud, [0, windows - 1], "loud windows");
    assert!(
        largest < 64 << 20,
        "largest single allocation {} MB",
        largest >> 20
    );
}
