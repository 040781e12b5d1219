//! The backup's mirror reader: a thread reading the NFQUEUE that holds every client packet
//! the primary's host mirrors to us. Until a takeover it drops them (this host must never
//! answer a client) while remembering, per local port, where each client's packets come
//! from; at the takeover it lets them through to the sockets instead. The latest source is
//! anyone's packet (an attacker's too): a member resumes with the media source its room
//! learned on the primary (replicated with its call), and the mirrored source serves only a
//! call that was still learning ([`control::latch`]).
//!
//! On the WebRTC port it also follows each browser's SRTP stream in shadow (the RTP header is
//! in the clear: SSRC and sequence number, no decryption): its extended sequence number, so a
//! backup that takes over continues the browser's rollover counter even when the call is old
//! enough for the 16-bit sequence number to have wrapped ([`MirrorReader::inbound`]).

use anyhow::{Context, Result};
use netfilter_shim::queue::{PacketQueue, Protocol, QueuedPacket};
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

/// A standing-by mirror reader wakes at most once per this interval (and reads everything
/// queued meanwhile): the mirrored packets are dropped, nothing waits for them.
const MIRROR_BATCH: Duration = Duration::from_millis(20);

/// Most (source, SSRC) streams followed on the WebRTC port; more are ignored.
const MAX_SHADOW_STREAMS: usize = 16 * 1024;

/// Per (source address, SSRC): the highest extended sequence number seen.
type Shadow = HashMap<(SocketAddr, u32), u64>;

/// The backup's NFQUEUE reader thread.
pub struct MirrorReader {
    accept: Arc<AtomicBool>,
    shadow: Arc<Mutex<Shadow>>,
    stop: Arc<AtomicBool>,
    packets: Arc<AtomicU64>,
    sources: Arc<Mutex<HashMap<u16, SeenSource>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MirrorReader {
    /// Open queue `queue_num` and start reading it (packets for `vip` are remembered).
    pub fn start(queue_num: u16, vip: Ipv4Addr, webrtc_port: Option<u16>) -> Result<Self> {
        let mut queue =
            PacketQueue::open(queue_num).with_context(|| format!("opening NFQUEUE {queue_num}"))?;
        let accept = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let packets = Arc::new(AtomicU64::new(0));
        let sources = Arc::new(Mutex::new(HashMap::new()));
        let shadow = Arc::new(Mutex::new(Shadow::new()));
        let sh = shadow.clone();
        let (a, s, p, src) = (
            accept.clone(),
            stop.clone(),
            packets.clone(),
            sources.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("ft-mirror".into())
            .spawn(move || {
                let handle = |queue: &mut PacketQueue, pkt: QueuedPacket| {
                    p.fetch_add(1, Ordering::Relaxed);
                    if let Ok(flow) = pkt.flow() {
                        if flow.protocol == Protocol::Udp
                            && *flow.dst.ip() == vip
                            && Some(flow.dst.port()) == webrtc_port
                        {
                            let from = SocketAddr::V4(flow.src);
                            follow_srtp(&sh, from, &pkt.bytes()[flow.payload_offset..]);
                        } else if flow.protocol == Protocol::Udp && *flow.dst.ip() == vip {
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
                };
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
                    handle(&mut queue, pkt);
                    if !a.load(Ordering::Relaxed) {
                        // Standing by: every packet is dropped anyway, so read them in
                        // batches, one wake-up per [`MIRROR_BATCH`] instead of one per
                        // packet (the backup's largest fixed cost; a takeover unparks the
                        // thread and it lets each packet through as it comes).
                        while let Ok(Some(pkt)) = queue.try_recv() {
                            handle(&mut queue, pkt);
                        }
                        std::thread::park_timeout(MIRROR_BATCH);
                    }
                }
            })
            .context("spawning the mirror reader")?;
        Ok(MirrorReader {
            accept,
            shadow,
            stop,
            packets,
            sources,
            thread: Some(thread),
        })
    }

    /// Let queued packets through to the local stack (takeover) instead of dropping them,
    /// at once (the reader is woken if it waits between batches).
    pub fn accept_all(&self) {
        self.accept.store(true, Ordering::Relaxed);
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }

    /// Packets read so far.
    pub fn packets(&self) -> u64 {
        self.packets.load(Ordering::Relaxed)
    }

    /// The browser at `from`'s streams on the WebRTC port, as the mirror followed them:
    /// (SSRC, highest extended sequence number).
    pub fn inbound(&self, from: SocketAddr) -> Vec<(u32, u64)> {
        let s = self.shadow.lock().unwrap();
        s.iter()
            .filter(|((a, _), _)| *a == from)
            .map(|((_, ssrc), ext)| (*ssrc, *ext))
            .collect()
    }

    /// The latest source seen for local port `port`, if within `max_age`.
    pub fn source(&self, port: u16, max_age: Duration) -> Option<SocketAddr> {
        let s = self.sources.lock().unwrap();
        s.get(&port)
            .filter(|s| s.at.elapsed() <= max_age)
            .map(|s| s.from)
    }
}

/// The backup's beacon queue: the NFQUEUE that holds the primary's client-path beacons (its
/// own queue, so a burst of mirrored client packets never delays one), read by the sync
/// thread itself each time it wakes ([`crate::sync_link::BeaconSource`]): no thread and no
/// wake-up of its own. Every queued packet is dropped: a beacon is for the sync thread, not
/// for this host's stack.
///
/// Its arrival time comes from the kernel's timestamp of the packet, which the kernel takes
/// only while some socket asked for receive timestamps: the queue holds one such socket.
pub struct BeaconQueue {
    queue: PacketQueue,
    vip: Ipv4Addr,
    port: u16,
    _timestamps: std::net::UdpSocket,
    /// Whether the first beacon had a kernel timestamp was logged.
    told: bool,
}

impl BeaconQueue {
    /// Open queue `queue_num` for the beacons from `vip` to UDP port `port`.
    pub fn open(queue_num: u16, vip: Ipv4Addr, port: u16) -> Result<Self> {
        let queue =
            PacketQueue::open(queue_num).with_context(|| format!("opening NFQUEUE {queue_num}"))?;
        let ts = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .context("binding the timestamping socket")?;
        {
            use std::os::fd::AsRawFd;
            let on: libc::c_int = 1;
            // SAFETY: setsockopt on a socket we own, with a pointer to a c_int that lives
            // across the call and its size.
            let r = unsafe {
                libc::setsockopt(
                    ts.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_TIMESTAMPNS,
                    (&on as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if r != 0 {
                tracing::warn!(
                    "SO_TIMESTAMPNS: {}: beacons are timed when read",
                    std::io::Error::last_os_error()
                );
            }
        }
        Ok(BeaconQueue {
            queue,
            vip,
            port,
            _timestamps: ts,
            told: false,
        })
    }
}

impl crate::sync_link::BeaconSource for BeaconQueue {
    fn drain(&mut self, f: &mut dyn FnMut(&[u8], Duration)) {
        loop {
            let pkt = match self.queue.try_recv() {
                Ok(Some(pkt)) => pkt,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!("beacon queue: {e}");
                    return;
                }
            };
            if let Ok(flow) = pkt.flow() {
                if flow.protocol == Protocol::Udp
                    && *flow.src.ip() == self.vip
                    && flow.dst.port() == self.port
                {
                    let stamp = pkt.timestamp();
                    if !self.told {
                        self.told = true;
                        match stamp {
                            Some(_) => tracing::info!("beacon queue: packets carry their kernel arrival time"),
                            None => tracing::warn!("beacon queue: no kernel timestamps; a beacon counts from when it is read (up to a heartbeat interval late)"),
                        }
                    }
                    let age = stamp
                        .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
                        .unwrap_or_default();
                    f(&pkt.bytes()[flow.payload_offset..], age);
                }
            }
            if let Err(e) = self.queue.drop_packet(pkt) {
                tracing::warn!("beacon queue verdict: {e}");
            }
        }
    }
}

/// Follow one mirrored datagram on the WebRTC port: an SRTP packet (not SRTCP, not STUN or
/// DTLS) moves its stream's highest extended sequence number (RFC 3711 index estimation).
fn follow_srtp(shadow: &Mutex<Shadow>, from: SocketAddr, p: &[u8]) {
    if !matches!(webrtc_core::mux::classify(p), webrtc_core::mux::Kind::Rtp) || p.len() < 12 {
        return;
    }
    let seq = u16::from_be_bytes([p[2], p[3]]);
    let ssrc = u32::from_be_bytes([p[8], p[9], p[10], p[11]]);
    let mut s = shadow.lock().unwrap();
    let len = s.len();
    match s.get_mut(&(from, ssrc)) {
        Some(h) => {
            if let Some(i) = webrtc_core::srtp::estimate_index(*h, seq) {
                *h = (*h).max(i);
            }
        }
        None if len < MAX_SHADOW_STREAMS => {
            s.insert((from, ssrc), u64::from(seq));
        }
        None => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 111];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0]);
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0u8; 20]);
        p
    }

    #[test]
    fn shadow_follows_the_rollover_of_each_stream() {
        let shadow = Mutex::new(Shadow::new());
        let a: SocketAddr = "198.18.0.11:5000".parse().unwrap();
        let b: SocketAddr = "198.18.0.12:5000".parse().unwrap();
        for seq in (65_530..=65_535).chain(0..=5) {
            follow_srtp(&shadow, a, &rtp(seq, 7));
        }
        // A late packet from before the wrap does not move it back.
        follow_srtp(&shadow, a, &rtp(65_534, 7));
        follow_srtp(&shadow, b, &rtp(100, 9));
        // SRTCP, STUN and DTLS are not RTP streams.
        let mut rtcp = rtp(1, 7);
        rtcp[1] = 200;
        follow_srtp(&shadow, b, &rtcp);
        follow_srtp(&shadow, b, &[0x00, 0x01, 0, 0]);
        follow_srtp(&shadow, b, &[22, 0xfe, 0xfd]);
        let s = shadow.lock().unwrap();
        assert_eq!(s.get(&(a, 7)), Some(&(65_536 + 5)));
        assert_eq!(s.get(&(b, 9)), Some(&100));
        assert_eq!(s.len(), 2, "{s:?}");
    }
}
