//! The backup's mirror reader: a thread reading the NFQUEUE that holds every client packet
//! the primary's host mirrors to us. Until a takeover it drops them (this host must never
//! answer a client) while remembering, per local port, where each client's packets come
//! from; at the takeover it lets them through to the sockets instead. The latest source is
//! anyone's packet (an attacker's too): a member resumes with the media source its room
//! learned on the primary (replicated with its call), and the mirrored source serves only a
//! call that was still learning ([`control::latch`]).

use anyhow::{Context, Result};
use netfilter_shim::queue::{PacketQueue, Protocol};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where a client's packets to one of our ports came from, as the mirrored input showed.
#[derive(Clone, Copy, Debug)]
pub struct SeenSource {
    /// Source address.
    pub from: SocketAddr,
    /// When last seen.
    pub at: Instant,
}

/// The backup's NFQUEUE reader thread.
pub struct MirrorReader {
    accept: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    packets: Arc<AtomicU64>,
    sources: Arc<Mutex<HashMap<u16, SeenSource>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MirrorReader {
    /// Open queue `queue_num` and start reading it (packets for `vip` are remembered).
    pub fn start(queue_num: u16, vip: Ipv4Addr) -> Result<Self> {
        let mut queue =
            PacketQueue::open(queue_num).with_context(|| format!("opening NFQUEUE {queue_num}"))?;
        let accept = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let packets = Arc::new(AtomicU64::new(0));
        let sources = Arc::new(Mutex::new(HashMap::new()));
        let (a, s, p, src) = (
            accept.clone(),
            stop.clone(),
            packets.clone(),
            sources.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("ft-mirror".into())
            .spawn(move || {
                // Blocking reads (the nfq crate has no pollable socket; a timed wait would
                // poll every millisecond): a stopped reader stays parked until the next
                // packet, which only comes while the queue rule exists.
                while !s.load(Ordering::Relaxed) {
                    let pkt = match queue.recv() {
                        Ok(pkt) => pkt,
                        Err(e) => {
                            tracing::warn!("mirror queue: {e}");
                            std::thread::sleep(Duration::from_millis(10));
                            continue;
                        }
                    };
                    p.fetch_add(1, Ordering::Relaxed);
                    if let Ok(flow) = pkt.flow() {
                        if flow.protocol == Protocol::Udp && *flow.dst.ip() == vip {
                            src.lock().unwrap().insert(
                                flow.dst.port(),
                                SeenSource {
                                    from: SocketAddr::V4(flow.src),
                                    at: Instant::now(),
                                },
                            );
                        }
                    }
                    let verdict = if a.load(Ordering::Relaxed) {
                        queue.accept(pkt)
                    } else {
                        queue.drop_packet(pkt)
                    };
                    if let Err(e) = verdict {
                        tracing::warn!("mirror queue verdict: {e}");
                    }
                }
            })
            .context("spawning the mirror reader")?;
        Ok(MirrorReader {
            accept,
            stop,
            packets,
            sources,
            thread: Some(thread),
        })
    }

    /// Let queued packets through to the local stack (takeover) instead of dropping them.
    pub fn accept_all(&self) {
        self.accept.store(true, Ordering::Relaxed);
    }

    /// Packets read so far.
    pub fn packets(&self) -> u64 {
        self.packets.load(Ordering::Relaxed)
    }

    /// The latest source seen for local port `port`, if within `max_age`.
    pub fn source(&self, port: u16, max_age: Duration) -> Option<SocketAddr> {
        let s = self.sources.lock().unwrap();
        s.get(&port)
            .filter(|s| s.at.elapsed() <= max_age)
            .map(|s| s.from)
    }
}

impl Drop for MirrorReader {
    fn drop(&mut self) {
        // Not joined: the thread may be parked in a blocking read; it ends at its next
        // packet or with the process.
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take();
    }
}
