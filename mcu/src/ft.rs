//! Hot standby (`--ft-role primary|backup`): the driver around [`ft_sync::Node`] and the
//! packet plumbing of `netfilter-shim`, as the server runs them.
//!
//! # What each node does
//!
//! - **Primary**: first runs the sync link's startup probe (a second primary on the link is
//!   refused and this process exits with the reason), then holds the service address on a
//!   TUN device its own process owns ([`netfilter_shim::fence::ProcessBoundVip`]: the fence,
//!   see below), announces it with a gratuitous ARP, installs the `TEE` rule that mirrors
//!   every client packet for the VIP to the backup, and serves. Every change of the control
//!   state (SIP dialogs and transactions, calls, rooms, ports, random generator) and every
//!   change of a room's mixer snapshot is replicated; SIP messages wait in the application
//!   until the backup acknowledged the state they imply (output commit, below).
//! - **Backup**: holds the VIP on `lo` without answering ARP for it, queues every packet for
//!   the VIP in an NFQUEUE (no bypass) and reads it on a thread that issues DROP (its kernel
//!   never answers a client) while remembering, per local port, where each client's packets
//!   come from (what symmetric RTP latched on the primary, NAT included). It applies the
//!   replicated state: the latest control state and mixer snapshot per room, plus one bound
//!   RTP/RTCP socket pair per call on the same port as the primary's — and nothing else:
//!   no decoding, no mixing (see BENCHMARKS.md for its CPU next to the primary's).
//! - **Takeover** (the peer is silent for `--ft-dead-after` heartbeats): the queue reader
//!   switches to ACCEPT (packets still mirrored by the dead primary's host or already
//!   following the ARP reach the sockets), the VIP is claimed on the service device
//!   (rtnetlink + gratuitous ARPs, on a thread), the SIP core continues from the replicated
//!   dialog state, every room resumes with [`mixer::Mixer::from_snapshot`] on the primary's
//!   tick grid (the primary's origin is replicated as wall-clock time) so each output stream
//!   continues with the same SSRC and the seq/ts the primary would have used at that tick,
//!   and the queue rule is removed last (one `iptables -D` costs 10-20 ms).
//!
//! # Output commit: why in the application
//!
//! A SIP message that creates or changes a dialog must not reach a client before the backup
//! has the state it implies, or a takeover right after it would answer that client's next
//! request with 481. The server holds every outgoing SIP message produced after a state
//! change in a FIFO tagged with the log index of that state and releases it when the backup
//! acknowledges the index (the ack is cumulative, so FIFO order is kept). Holding in an
//! NFQUEUE on the primary's output instead would put a kernel-to-user round trip on every
//! outgoing packet (6-7 us of CPU each, measured for the backup's reader) including RTP,
//! which needs no holding, and would have to match packets to log indices by parsing them
//! again; in the application the cost is one replicated item per state change and the wait
//! itself (`mcu_sip_commit_wait_seconds`, ~0.1-0.5 ms on the test bed: one sync-link round
//! trip). Media are not held: their headers are a function of the replicated snapshot and
//! the tick index (`mixer/tests/takeover.rs`).
//!
//! # Fencing after `kill -9`
//!
//! The primary's VIP lives on a TUN device whose descriptor only its process holds: when the
//! process dies for any reason the kernel destroys the device and the address with it, so
//! the host stops answering ARP for the VIP and no longer treats it as local. Its `TEE` rule
//! may stay (it only sends copies to the backup) and is removed at the next start.
//!
//! # Limits (known)
//!
//! SIP over TCP is not carried across a takeover (the connection state is in the dead
//! kernel); UDP is. The full state is sent as one datagram when a backup (re)connects, which
//! bounds it to ~64 KiB (a few hundred calls). A cut sync link looks like a dead primary to
//! the backup (it takes over while the primary still serves): use a dedicated link, and the
//! primary's fence does not help in that case.

use crate::config::{FtConfig, FtRole};
use crate::state::FtStatus;
use anyhow::{Context, Result};
use mixer::MixerSnapshot;
use netfilter_shim::fence::ProcessBoundVip;
use netfilter_shim::queue::{PacketQueue, Protocol};
use netfilter_shim::rules::{InstalledRule, Instance, MirrorRule, QueueRule};
use netfilter_shim::takeover;
use serde::{Deserialize, Serialize};
use sip_core::sdp::{LocalMedia, Negotiated};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// `StateItem::App` kind of a [`ControlHeader`].
pub const APP_HEADER: u16 = 1;
/// `StateItem::App` kind of a [`CallItem`].
pub const APP_CALL: u16 = 2;
/// `StateItem::App` kind of a call that is gone (data: its handle, u64 little endian).
pub const APP_CALL_GONE: u16 = 3;
/// Version of the [`ControlHeader`] / [`CallItem`] layout.
pub const CONTROL_STATE_FORMAT: u32 = 2;

/// One call as the control plane knows it (replicated).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// SIP call handle (also the participant id).
    pub call: u64,
    /// Room name.
    pub room: String,
    /// Caller's URI.
    pub from_uri: String,
    /// Our RTP port (RTCP is the next one).
    pub port: u16,
    /// What our SDP said (session id/version continue after takeover).
    pub local: LocalMedia,
    /// In its room's mixer.
    pub joined: bool,
    /// We offered in the 200 and wait for the answer in the ACK.
    pub awaiting_answer: bool,
    /// Our 200 was acknowledged.
    pub confirmed: bool,
    /// Latest negotiated media (remote addresses, codec, payload types).
    pub neg: Option<Negotiated>,
}

/// The control plane's whole replicated state (see the crate-level docs of `ft-sync` for
/// why each item is needed). It crosses the sync link as one [`ControlHeader`] plus one
/// [`CallItem`] per call, each sent only when it changed, so that a state change costs one
/// small item whatever the number of calls, and no item grows with the server's size.
#[derive(Clone, Debug, PartialEq)]
pub struct ControlState {
    /// The primary's time origin as wall-clock nanoseconds since the Unix epoch: the tick
    /// grid (tick k at origin + k * 20 ms) and every SIP timer are relative to it.
    pub origin_unix_ns: u64,
    /// Server seed.
    pub seed: u64,
    /// Server random generator (room seeds, SDP session ids).
    pub rng: u64,
    /// Next RTP port the allocator tries.
    pub next_port: u16,
    /// Next room id.
    pub next_room_id: u64,
    /// Rooms: name and replication id.
    pub rooms: Vec<(String, u64)>,
    /// Calls.
    pub calls: Vec<CallRecord>,
    /// SIP dialogs and transactions.
    pub sip: sip_core::state::CoreState,
}

/// Server-wide part of the [`ControlState`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ControlHeader {
    /// [`CONTROL_STATE_FORMAT`].
    pub format: u32,
    /// See [`ControlState::origin_unix_ns`].
    pub origin_unix_ns: u64,
    /// Server seed.
    pub seed: u64,
    /// Server random generator.
    pub rng: u64,
    /// Next RTP port.
    pub next_port: u16,
    /// Next room id.
    pub next_room_id: u64,
    /// Rooms.
    pub rooms: Vec<(String, u64)>,
    /// SIP random generator (tags, branches).
    pub sip_rng: sip_core::state::Rng,
    /// Next SIP call handle.
    pub sip_next_call: u64,
    /// SIP counters.
    pub sip_stats: sip_core::Stats,
    /// Server transactions of no call (OPTIONS, REGISTER, rejected requests).
    pub loose_server_txs: Vec<(String, sip_core::state::ServerTx)>,
}

/// Everything about one call: its record, dialog and transactions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallItem {
    /// [`CONTROL_STATE_FORMAT`].
    pub format: u32,
    /// Call handle.
    pub call: u64,
    /// The control plane's record (absent for calls the SIP layer still tracks after the
    /// control plane let them go, e.g. a rejected INVITE's transaction).
    pub record: Option<CallRecord>,
    /// SIP dialog.
    pub dialog: Option<sip_core::state::Dialog>,
    /// Dialog index keys pointing at this call.
    pub index_keys: Vec<String>,
    /// Server transactions of this call.
    pub server_txs: Vec<(String, sip_core::state::ServerTx)>,
    /// Client transactions of this call.
    pub client_txs: Vec<(String, sip_core::state::ClientTx)>,
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).expect("serializing to memory cannot fail")
}

impl ControlHeader {
    /// Encode for the sync link.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }
    /// Decode; refuses another format.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let h: ControlHeader = postcard::from_bytes(bytes).context("decoding control header")?;
        anyhow::ensure!(
            h.format == CONTROL_STATE_FORMAT,
            "control state format {} (expected {CONTROL_STATE_FORMAT})",
            h.format
        );
        Ok(h)
    }
}

impl CallItem {
    /// Encode for the sync link.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }
    /// Decode; refuses another format.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let c: CallItem = postcard::from_bytes(bytes).context("decoding call item")?;
        anyhow::ensure!(
            c.format == CONTROL_STATE_FORMAT,
            "call item format {} (expected {CONTROL_STATE_FORMAT})",
            c.format
        );
        Ok(c)
    }
}

impl ControlState {
    /// Split into the header and one item per call (by handle).
    pub fn split(&self) -> (ControlHeader, BTreeMap<u64, CallItem>) {
        use sip_core::CallHandle;
        let mut calls: BTreeMap<u64, CallItem> = BTreeMap::new();
        let item = |calls: &mut BTreeMap<u64, CallItem>, c: u64| {
            calls.entry(c).or_insert_with(|| CallItem {
                format: CONTROL_STATE_FORMAT,
                call: c,
                record: None,
                dialog: None,
                index_keys: Vec::new(),
                server_txs: Vec::new(),
                client_txs: Vec::new(),
            });
        };
        for r in &self.calls {
            item(&mut calls, r.call);
            calls.get_mut(&r.call).expect("inserted").record = Some(r.clone());
        }
        for (CallHandle(c), d) in &self.sip.dialogs {
            item(&mut calls, *c);
            calls.get_mut(c).expect("inserted").dialog = Some(d.clone());
        }
        for (k, CallHandle(c)) in &self.sip.dialog_index {
            item(&mut calls, *c);
            calls
                .get_mut(c)
                .expect("inserted")
                .index_keys
                .push(k.clone());
        }
        let mut loose = Vec::new();
        for (k, tx) in &self.sip.server_txs {
            match tx.call {
                Some(CallHandle(c)) => {
                    item(&mut calls, c);
                    calls
                        .get_mut(&c)
                        .expect("inserted")
                        .server_txs
                        .push((k.clone(), tx.clone()));
                }
                None => loose.push((k.clone(), tx.clone())),
            }
        }
        for (k, tx) in &self.sip.client_txs {
            let c = tx.call.0;
            item(&mut calls, c);
            calls
                .get_mut(&c)
                .expect("inserted")
                .client_txs
                .push((k.clone(), tx.clone()));
        }
        let header = ControlHeader {
            format: CONTROL_STATE_FORMAT,
            origin_unix_ns: self.origin_unix_ns,
            seed: self.seed,
            rng: self.rng,
            next_port: self.next_port,
            next_room_id: self.next_room_id,
            rooms: self.rooms.clone(),
            sip_rng: self.sip.rng.clone(),
            sip_next_call: self.sip.next_call,
            sip_stats: self.sip.stats.clone(),
            loose_server_txs: loose,
        };
        (header, calls)
    }

    /// Reassemble what [`ControlState::split`] produced.
    pub fn join(header: &ControlHeader, calls: &BTreeMap<u64, CallItem>) -> ControlState {
        use sip_core::CallHandle;
        let mut sip = sip_core::state::CoreState::new(0);
        sip.rng = header.sip_rng.clone();
        sip.next_call = header.sip_next_call;
        sip.stats = header.sip_stats.clone();
        sip.server_txs = header.loose_server_txs.iter().cloned().collect();
        let mut records = Vec::new();
        for (c, it) in calls {
            if let Some(r) = &it.record {
                records.push(r.clone());
            }
            if let Some(d) = &it.dialog {
                sip.dialogs.insert(CallHandle(*c), d.clone());
            }
            for k in &it.index_keys {
                sip.dialog_index.insert(k.clone(), CallHandle(*c));
            }
            sip.server_txs.extend(it.server_txs.iter().cloned());
            sip.client_txs.extend(it.client_txs.iter().cloned());
        }
        ControlState {
            origin_unix_ns: header.origin_unix_ns,
            seed: header.seed,
            rng: header.rng,
            next_port: header.next_port,
            next_room_id: header.next_room_id,
            rooms: header.rooms.clone(),
            calls: records,
            sip,
        }
    }
}

/// Encode a mixer snapshot for the sync link.
pub fn encode_snapshot(s: &MixerSnapshot) -> Vec<u8> {
    encode(s)
}

/// Decode a mixer snapshot.
pub fn decode_snapshot(bytes: &[u8]) -> Result<MixerSnapshot> {
    postcard::from_bytes(bytes).context("decoding mixer snapshot")
}

/// Wall-clock nanoseconds since the Unix epoch of the instant `origin`.
pub fn origin_to_unix_ns(origin: Instant) -> u64 {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(origin.elapsed());
    wall.as_nanos() as u64
}

/// The local instant of a wall-clock time (the primary's origin on the backup's clock).
pub fn unix_ns_to_instant(ns: u64) -> Instant {
    let now_wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let then = Duration::from_nanos(ns);
    let now = Instant::now();
    if then <= now_wall {
        now.checked_sub(now_wall - then).unwrap_or(now)
    } else {
        now + (then - now_wall)
    }
}

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
    fn start(queue_num: u16, vip: Ipv4Addr) -> Result<Self> {
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

/// The addresses and netfilter rules a node holds while it runs. Dropping it (clean exit)
/// removes them; after a crash the next start removes stale rules by their tag.
pub struct NetGuard {
    cfg: FtConfig,
    fence: Option<ProcessBoundVip>,
    mirror_rule: Option<InstalledRule>,
    queue_rule: Option<InstalledRule>,
    claimed: bool,
    /// Backup: the queue reader.
    pub mirror: Option<MirrorReader>,
}

fn instance(cfg: &FtConfig) -> Result<Instance> {
    // One tag per node (not per role): a node restarted with the other role still finds
    // the rules its crashed predecessor left.
    Ok(Instance::new(&format!("mcu-{}", cfg.listen.port()))?)
}

impl NetGuard {
    /// Primary: fence-bound VIP, gratuitous ARP, mirror rule toward the backup.
    pub fn primary(cfg: &FtConfig) -> Result<Self> {
        let inst = instance(cfg)?;
        let stale = inst.cleanup_stale().context("removing stale rules")?;
        if stale > 0 {
            tracing::info!(stale, "removed netfilter rules left by a previous process");
        }
        takeover::release_standby(cfg.vip).context("removing a standby VIP from lo")?;
        // The fence puts the VIP on a TUN device; eth0 answers ARP for it only with
        // arp_ignore=0 (a node that was a backup before had set 1).
        for dev in ["all", cfg.dev.as_str()] {
            takeover::set_sysctl(&format!("net/ipv4/conf/{dev}/arp_ignore"), "0")
                .with_context(|| format!("arp_ignore on {dev}"))?;
        }
        let tun = format!("usvip{}", cfg.listen.port());
        let fence = ProcessBoundVip::hold(cfg.vip, &tun)
            .with_context(|| format!("holding {} on {tun}", cfg.vip))?;
        takeover::send_gratuitous_arp(&cfg.dev, cfg.vip).context("gratuitous ARP")?;
        let mirror_rule = inst
            .install_mirror(&MirrorRule {
                vip: cfg.vip,
                backup: cfg.mirror_to,
                in_dev: Some(cfg.dev.clone()),
            })
            .context("installing the mirror rule")?;
        tracing::info!(vip = %cfg.vip, tun, mirror_to = %cfg.mirror_to, "primary: VIP held (process-bound), mirroring to the backup");
        Ok(NetGuard {
            cfg: cfg.clone(),
            fence: Some(fence),
            mirror_rule: Some(mirror_rule),
            queue_rule: None,
            claimed: false,
            mirror: None,
        })
    }

    /// Backup: VIP on `lo` without ARP, NFQUEUE rule (no bypass) and its reader.
    pub fn backup(cfg: &FtConfig) -> Result<Self> {
        let inst = instance(cfg)?;
        let stale = inst.cleanup_stale().context("removing stale rules")?;
        if stale > 0 {
            tracing::info!(stale, "removed netfilter rules left by a previous process");
        }
        takeover::hold_standby(cfg.vip).context("holding the VIP as standby")?;
        let queue_rule = inst
            .install_queue(&QueueRule::backup(cfg.vip, cfg.queue_num))
            .context("installing the queue rule")?;
        let mirror = MirrorReader::start(cfg.queue_num, cfg.vip)?;
        tracing::info!(vip = %cfg.vip, queue = cfg.queue_num, "backup: VIP held silently, mirrored input queued");
        Ok(NetGuard {
            cfg: cfg.clone(),
            fence: None,
            mirror_rule: None,
            queue_rule: Some(queue_rule),
            claimed: false,
            mirror: Some(mirror),
        })
    }

    /// Takeover, first step: let mirrored packets through and claim the VIP (the ARPs go
    /// out on a thread; the first one leaves at once).
    pub fn claim(&mut self) {
        if let Some(m) = &self.mirror {
            m.accept_all();
        }
        self.claimed = true;
        let (vip, prefix, dev) = (self.cfg.vip, self.cfg.prefix, self.cfg.dev.clone());
        std::thread::spawn(move || {
            match takeover::claim(vip, prefix, &dev, &takeover::ClaimOptions::default()) {
                Ok(r) => tracing::info!(
                    address_ms = r.address_added.as_secs_f64() * 1e3,
                    first_garp_ms = r.first_garp.as_secs_f64() * 1e3,
                    "VIP {vip} claimed on {dev}"
                ),
                Err(e) => tracing::error!("claiming VIP {vip} on {dev}: {e}"),
            }
        });
    }

    /// Takeover, last step: remove the queue rule and stop the reader (on a thread: one
    /// `iptables -D` takes 10-20 ms).
    pub fn finish_takeover(&mut self) {
        let rule = self.queue_rule.take();
        let mirror = self.mirror.take();
        std::thread::spawn(move || {
            if let Some(r) = rule {
                if let Err(e) = r.remove() {
                    tracing::warn!("removing the queue rule: {e}");
                }
            }
            drop(mirror);
        });
    }

    /// Backup: packets read from the mirror queue.
    pub fn mirrored_packets(&self) -> u64 {
        self.mirror.as_ref().map_or(0, MirrorReader::packets)
    }
}

impl Drop for NetGuard {
    fn drop(&mut self) {
        if let Some(r) = self.mirror_rule.take() {
            let _ = r.remove();
        }
        if let Some(r) = self.queue_rule.take() {
            let _ = r.remove();
        }
        self.mirror = None;
        if let Some(f) = self.fence.take() {
            f.release();
        }
        if self.claimed {
            let _ = takeover::release(self.cfg.vip, self.cfg.prefix, &self.cfg.dev);
        }
        if self.cfg.role == FtRole::Backup {
            let _ = takeover::release_standby(self.cfg.vip);
        }
    }
}

/// What a backup holds of the primary, applied from the replication log.
#[derive(Default)]
pub struct Standby {
    /// Latest control header.
    pub header: Option<ControlHeader>,
    /// Latest item per call.
    pub calls: BTreeMap<u64, CallItem>,
    /// Latest snapshot per room id.
    pub rooms: HashMap<u64, MixerSnapshot>,
    /// RTP/RTCP socket pairs bound on the service address, by RTP port.
    pub sockets: HashMap<u16, (std::net::UdpSocket, std::net::UdpSocket)>,
}

impl Standby {
    /// Apply one replicated item.
    pub fn apply(&mut self, item: ft_sync::StateItem, media_ip: IpAddr) {
        use ft_sync::StateItem;
        match item {
            StateItem::App {
                kind: APP_HEADER,
                data,
            } => match ControlHeader::decode(&data) {
                Ok(h) => self.header = Some(h),
                Err(e) => tracing::warn!("standby: {e:#}"),
            },
            StateItem::App {
                kind: APP_CALL,
                data,
            } => match CallItem::decode(&data) {
                Ok(c) => {
                    if let Some(r) = &c.record {
                        self.bind(r.port, media_ip);
                    }
                    self.calls.insert(c.call, c);
                }
                Err(e) => tracing::warn!("standby: {e:#}"),
            },
            StateItem::App {
                kind: APP_CALL_GONE,
                data,
            } => {
                let Ok(b) = <[u8; 8]>::try_from(data.as_slice()) else {
                    tracing::warn!("standby: malformed call-gone item");
                    return;
                };
                if let Some(port) = self
                    .calls
                    .remove(&u64::from_le_bytes(b))
                    .and_then(|c| c.record)
                    .map(|r| r.port)
                {
                    if !self
                        .calls
                        .values()
                        .any(|c| c.record.as_ref().is_some_and(|r| r.port == port))
                    {
                        self.sockets.remove(&port);
                    }
                }
            }
            StateItem::MixerRoom { room, snapshot } => match decode_snapshot(&snapshot) {
                Ok(s) => {
                    self.rooms.insert(room, s);
                }
                Err(e) => tracing::warn!("standby: {e:#}"),
            },
            StateItem::RoomClosed { room } => {
                self.rooms.remove(&room);
            }
            other => tracing::debug!("standby: ignoring {other:?}"),
        }
    }

    /// Forget everything (a new full snapshot follows). Bound sockets stay until the new
    /// state says whether their calls still exist.
    pub fn reset(&mut self) {
        self.header = None;
        self.calls.clear();
        self.rooms.clear();
    }

    /// The primary's control state, if its header arrived.
    pub fn control(&self) -> Option<ControlState> {
        self.header
            .as_ref()
            .map(|h| ControlState::join(h, &self.calls))
    }

    /// Bind a call's ports now so that a takeover does not wait for it (the VIP is local on
    /// the backup; the queue keeps every packet away from these sockets until then).
    fn bind(&mut self, p: u16, ip: IpAddr) {
        if self.sockets.contains_key(&p) {
            return;
        }
        let pair = std::net::UdpSocket::bind((ip, p)).and_then(|rtp| {
            let rtcp = std::net::UdpSocket::bind((ip, p + 1))?;
            rtp.set_nonblocking(true)?;
            rtcp.set_nonblocking(true)?;
            Ok((rtp, rtcp))
        });
        match pair {
            Ok(pair) => {
                self.sockets.insert(p, pair);
            }
            Err(e) => tracing::warn!(port = p, "standby: binding media ports: {e}"),
        }
    }
}

/// The sync link's driver thread: it owns the socket reads and the node's timers
/// (heartbeats, failure detection, retransmission) and runs at real-time priority when the
/// process may (root), so that neither a busy tokio runtime nor a loaded machine delays a
/// heartbeat into a false failure detection. The control plane uses the node under the same
/// lock (replicate, events) and is woken by [`SyncLink::wake`] when events are pending.
pub struct SyncLink {
    node: Arc<Mutex<ft_sync::Node>>,
    events: Arc<Mutex<std::collections::VecDeque<ft_sync::Event>>>,
    sock: Arc<std::net::UdpSocket>,
    peer: SocketAddr,
    origin: Instant,
    /// Notified when events are pending.
    pub wake: Arc<tokio::sync::Notify>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The thread got real-time priority.
    pub realtime: bool,
    /// Set by the thread as soon as the node fails (e.g. this primary was taken over).
    pub fenced: Arc<AtomicBool>,
}

/// Real-time priority of the sync-link thread (SCHED_FIFO, low among RT priorities).
const SYNC_RT_PRIORITY: i32 = 10;

fn drain(
    node: &mut ft_sync::Node,
    sock: &std::net::UdpSocket,
    peer: SocketAddr,
    events: &Mutex<std::collections::VecDeque<ft_sync::Event>>,
    fenced: &AtomicBool,
) -> bool {
    while let Some(d) = node.poll_transmit() {
        let _ = sock.send_to(&d, peer);
    }
    let mut any = false;
    while let Some(e) = node.poll_event() {
        if matches!(e, ft_sync::Event::Fatal(_)) && node.role() == ft_sync::Role::Primary {
            fenced.store(true, Ordering::SeqCst);
        }
        events.lock().unwrap().push_back(e);
        any = true;
    }
    any
}

impl SyncLink {
    /// Bind the sync socket and start the driver thread for `node` (time origin `origin`).
    pub fn start(cfg: &FtConfig, node: ft_sync::Node, origin: Instant) -> Result<Self> {
        let sock = std::net::UdpSocket::bind(cfg.listen)
            .with_context(|| format!("binding the sync link {}", cfg.listen))?;
        let sock = Arc::new(sock);
        let node = Arc::new(Mutex::new(node));
        let events = Arc::new(Mutex::new(std::collections::VecDeque::new()));
        let wake = Arc::new(tokio::sync::Notify::new());
        let stop = Arc::new(AtomicBool::new(false));
        let fenced = Arc::new(AtomicBool::new(false));
        let (rt_tx, rt_rx) = std::sync::mpsc::channel();
        let thread = {
            let (node, events, sock, wake, stop, fenced) = (
                node.clone(),
                events.clone(),
                sock.clone(),
                wake.clone(),
                stop.clone(),
                fenced.clone(),
            );
            let peer = cfg.peer;
            std::thread::Builder::new()
                .name("ft-sync".into())
                .spawn(move || {
                    let param = libc::sched_param {
                        sched_priority: SYNC_RT_PRIORITY,
                    };
                    // SAFETY: sched_setscheduler on the calling thread (pid 0) with a valid
                    // sched_param that lives across the call.
                    let rt = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0;
                    let _ = rt_tx.send(rt);
                    let mut buf = vec![0u8; 65536];
                    while !stop.load(Ordering::Relaxed) {
                        let wait = {
                            let n = node.lock().unwrap();
                            n.poll_timeout()
                                .map(|t| t.saturating_sub(origin.elapsed()))
                                .unwrap_or(Duration::from_millis(50))
                        }
                        .clamp(Duration::from_micros(100), Duration::from_millis(50));
                        let _ = sock.set_read_timeout(Some(wait));
                        let got = sock.recv_from(&mut buf);
                        let mut n = node.lock().unwrap();
                        let now = origin.elapsed();
                        if let Ok((len, _)) = got {
                            n.handle_datagram(&buf[..len], now);
                        }
                        if n.poll_timeout().is_some_and(|t| t <= now) {
                            n.handle_timeout(now);
                        }
                        if drain(&mut n, &sock, peer, &events, &fenced) {
                            wake.notify_one();
                        }
                    }
                })
                .context("spawning the sync-link thread")?
        };
        let realtime = rt_rx.recv().unwrap_or(false);
        if !realtime {
            tracing::warn!("sync link: no real-time priority for its thread (not root?): heartbeats may be delayed on a loaded machine");
        }
        Ok(SyncLink {
            node,
            events,
            sock,
            peer: cfg.peer,
            origin,
            wake,
            stop,
            thread: Some(thread),
            realtime,
            fenced,
        })
    }

    /// The node's clock.
    pub fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// Use the node (then [`SyncLink::flush`] what it produced).
    pub fn node(&self) -> std::sync::MutexGuard<'_, ft_sync::Node> {
        self.node.lock().unwrap()
    }

    /// Send the node's pending datagrams and queue its events.
    pub fn flush(&self) {
        let mut n = self.node.lock().unwrap();
        drain(&mut n, &self.sock, self.peer, &self.events, &self.fenced);
    }

    /// Next pending event (after [`SyncLink::flush`]).
    pub fn next_event(&self) -> Option<ft_sync::Event> {
        self.events.lock().unwrap().pop_front()
    }
}

impl Drop for SyncLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Role name for the status API.
pub fn role_name(role: ft_sync::Role) -> &'static str {
    match role {
        ft_sync::Role::Primary => "primary",
        ft_sync::Role::Backup => "backup",
        ft_sync::Role::TakingOver => "taking_over",
    }
}

/// Peer state name for the status API.
pub fn peer_name(p: ft_sync::PeerState) -> &'static str {
    match p {
        ft_sync::PeerState::Unknown => "unknown",
        ft_sync::PeerState::Alive => "alive",
        ft_sync::PeerState::Dead => "dead",
    }
}

/// Update the shared status's role/peer fields from a node.
pub fn status_from_node(st: &mut FtStatus, node: &ft_sync::Node) {
    st.role = role_name(node.role()).into();
    st.peer = peer_name(node.peer_state()).into();
    st.sync_dropped = node.stats().dropped();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_state_split_join_roundtrip_and_format_check() {
        let cs = ControlState {
            origin_unix_ns: 1_700_000_000_000_000_000,
            seed: 7,
            rng: 9,
            next_port: 30002,
            next_room_id: 2,
            rooms: vec![("room".into(), 1)],
            calls: vec![CallRecord {
                call: 1,
                room: "room".into(),
                from_uri: "sip:a@198.18.0.11".into(),
                port: 30000,
                local: LocalMedia {
                    ip: "198.18.0.100".parse().unwrap(),
                    rtp_port: 30000,
                    session_id: 5,
                    session_version: 1,
                },
                joined: true,
                awaiting_answer: false,
                confirmed: true,
                neg: None,
            }],
            sip: sip_core::state::CoreState::new(3),
        };
        let (h, calls) = cs.split();
        let h2 = ControlHeader::decode(&h.encode()).unwrap();
        let calls2: BTreeMap<u64, CallItem> = calls
            .values()
            .map(|c| (c.call, CallItem::decode(&c.encode()).unwrap()))
            .collect();
        assert_eq!(ControlState::join(&h2, &calls2), cs);
        let mut bad = h.clone();
        bad.format = 99;
        assert!(ControlHeader::decode(&bad.encode()).is_err());
        assert!(ControlHeader::decode(b"garbage").is_err());
        assert!(CallItem::decode(b"\xff\xff").is_err());
    }

    #[test]
    fn wall_clock_origin_maps_back_to_the_same_instant() {
        let origin = Instant::now() - Duration::from_secs(5);
        let ns = origin_to_unix_ns(origin);
        let back = unix_ns_to_instant(ns);
        let diff = if back > origin {
            back - origin
        } else {
            origin - back
        };
        assert!(diff < Duration::from_millis(5), "{diff:?}");
    }
}
