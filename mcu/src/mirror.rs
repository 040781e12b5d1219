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
const MIRROR_BATCH: Duration = Duration::from_millis(100);

/// At a takeover, the mirrored packets still queued that arrived at most this long ago go
/// through to the sockets (the input of the end of the detection window, which the rooms
/// mix late rather than never); older ones are dropped, as the standing-by reader would
/// have dropped them.
const TAKEOVER_BACKLOG: Duration = Duration::from_millis(20);

/// Room in the mirror queue's socket between two reads: [`MIRROR_BATCH`] of a few thousand
/// calls' packets.
const MIRROR_SOCKET_BUFFER: usize = 16 << 20;

/// Most mirrored packets read with one system call.
const MIRROR_READ_BATCH: usize = 64;

/// Bytes of each mirrored packet copied to the reader: the headers it looks at (IP, UDP, an
/// RTP header) with room to spare; a longer packet (a large SIP message, say) is not looked at
/// but still dropped or, after a takeover, accepted whole.
const MIRROR_COPY_RANGE: u16 = 2048;

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
        // A standing-by reader takes everything queued every [`MIRROR_BATCH`]: one system
        // call per [`MIRROR_READ_BATCH`] packets, not one per packet.
        queue
            .set_read_batch(MIRROR_READ_BATCH, MIRROR_COPY_RANGE)
            .context("batched reads of the mirror queue")?;
        if let Err(e) = queue.set_receive_buffer(MIRROR_SOCKET_BUFFER) {
            tracing::warn!("mirror queue: socket buffer: {e}: packets may be lost between reads");
        }
        // Each packet's arrival time, for the takeover's backlog.
        let timestamps = timestamping_socket();
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
                let _timestamps = timestamps;
                let observe = |pkt: &QueuedPacket| {
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
                };
                let warn = |r: Result<(), netfilter_shim::Error>| {
                    if let Err(e) = r {
                        tracing::warn!("mirror queue verdict: {e}");
                    }
                };
                // Blocking reads (the nfq crate has no pollable socket; a timed wait would
                // poll every millisecond): a stopped reader stays parked until the next
                // packet, which only comes while the queue rule exists.
                'packets: while !s.load(Ordering::Relaxed) {
                    let pkt = match queue.recv() {
                        Ok(pkt) => pkt,
                        Err(e) => {
                            tracing::warn!("mirror queue: {e}");
                            std::thread::sleep(Duration::from_millis(10));
                            continue;
                        }
                    };
                    observe(&pkt);
                    if a.load(Ordering::Relaxed) {
                        // Serving: through to the sockets, unless it waited in the queue
                        // since before the end of the detection window.
                        let stale = pkt
                            .timestamp()
                            .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
                            .is_some_and(|age| age > TAKEOVER_BACKLOG);
                        warn(if stale {
                            queue.drop_packet(pkt)
                        } else {
                            queue.accept(pkt)
                        });
                        continue;
                    }
                    // Standing by: every packet is dropped anyway, so read them in batches,
                    // one wake-up per [`MIRROR_BATCH`] instead of one per packet, and drop
                    // each batch with one verdict (the backup's largest cost; a takeover
                    // unparks the thread, and it lets through what is queued, as young as
                    // [`TAKEOVER_BACKLOG`], then each packet as it comes).
                    let mut last = pkt.id();
                    while let Ok(Some(pkt)) = queue.try_recv() {
                        observe(&pkt);
                        if a.load(Ordering::Relaxed) {
                            // The takeover began during the batch: what was read before it
                            // is dropped, this packet goes through (it was queued last: the
                            // newest), and so does what follows, as the serving reader says.
                            warn(queue.drop_through(last));
                            warn(queue.accept(pkt));
                            continue 'packets;
                        }
                        last = pkt.id();
                    }
                    warn(queue.drop_through(last));
                    std::thread::park_timeout(MIRROR_BATCH);
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
    _timestamps: Option<std::net::UdpSocket>,
    /// Whether the first beacon had a kernel timestamp was logged.
    told: bool,
}

impl BeaconQueue {
    /// Open queue `queue_num` for the beacons from `vip` to UDP port `port`.
    pub fn open(queue_num: u16, vip: Ipv4Addr, port: u16) -> Result<Self> {
        let mut queue =
            PacketQueue::open(queue_num).with_context(|| format!("opening NFQUEUE {queue_num}"))?;
        // The beacons that arrived since the last wake-up (two or three), with one read.
        queue
            .set_read_batch(16, 512)
            .context("batched reads of the beacon queue")?;
        Ok(BeaconQueue {
            queue,
            vip,
            port,
            _timestamps: timestamping_socket(),
            told: false,
        })
    }
}

impl crate::sync_link::BeaconSource for BeaconQueue {
    fn drain(&mut self, f: &mut dyn FnMut(&[u8], Duration)) {
        // Every packet read is dropped, with one verdict once the queue is empty.
        let mut last = None;
        loop {
            let pkt = match self.queue.try_recv() {
                Ok(Some(pkt)) => pkt,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("beacon queue: {e}");
                    break;
                }
            };
            last = Some(pkt.id());
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
        }
        if let Some(last) = last {
            if let Err(e) = self.queue.drop_through(last) {
                tracing::warn!("beacon queue verdict: {e}");
            }
        }
    }
}

/// A socket that asks for receive timestamps (`SO_TIMESTAMPNS`): while one exists, the kernel
/// stamps every packet it receives, and a queued packet carries its arrival time (nothing is
/// ever read from the socket itself). `None` (logged) when that cannot be had: packets are
/// then timed when read.
fn timestamping_socket() -> Option<std::net::UdpSocket> {
    let stamped = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(anyhow::Error::from)
        .and_then(|s| {
            nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::ReceiveTimestampns, &true)
                .map(|()| s)
                .map_err(anyhow::Error::from)
        });
    match stamped {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("SO_TIMESTAMPNS: {e}: queued packets are timed when read");
            None
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
