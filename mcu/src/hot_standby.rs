//! Hot standby (`--ft-role primary|backup`; "ft" is for fault tolerance): how a node starts
//! its sync link and network plumbing, and what each role does.
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
//!   come from (a fallback for calls still learning their media source: the learned sources
//!   are replicated with the calls). It applies the
//!   replicated entries to its control core (the same call and room records the primary
//!   keeps, the SIP dialogs and transactions, the latest mixer snapshot per room) and binds
//!   one RTP/RTCP socket pair per call on the same port as the primary's (two for a call with
//!   video: its video pair too; the queue and mirror rules match the whole VIP, video ports
//!   included) — and nothing else:
//!   no decoding, no mixing (see BENCHMARKS.md for its CPU next to the primary's). An HTTP
//!   listener on the VIP (`--http-listen VIP:PORT`, bound with IP_FREEBIND) exists on both
//!   nodes; the backup's accepts nothing before the takeover, since the queue drops every
//!   packet for the VIP, TCP included.
//! - **Takeover** (the peer is silent on both paths for `--ft-dead-after` heartbeats, see
//!   below): the queue reader switches to ACCEPT (packets still mirrored by the dead
//!   primary's host or already following the ARP reach the sockets), the VIP is claimed on a
//!   process-bound TUN device and announced (gratuitous ARPs, on a thread), the driver re-bases its clock on the
//!   primary's origin (replicated as wall-clock time) and the control core
//!   ([`control::Core::handle_takeover`]) continues the SIP dialogs and resumes every room
//!   from its mixer snapshot on the primary's tick grid, so each output stream continues with
//!   the same SSRC and the seq/ts the primary would have used at that tick; the queue rule
//!   is removed last (one `iptables -D` costs 10-20 ms) and the `TEE` rule toward the peer
//!   installed.
//!
//! # Files
//!
//! The sync link's thread ([`crate::sync_link`]: the only owner of the `ft_sync::Node`,
//! driven by messages), the mirror reader ([`crate::mirror`]), the netfilter guard
//! ([`crate::netguard`]: addresses and rules held while the node runs); the standby applier
//! and the takeover are the control core's ([`control::Core::handle_replicated`]).
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
//! # Never two senders: the rule
//!
//! **The backup takes over only when the primary is silent on two paths for the dead
//! interval** (`--ft-dead-after` heartbeats): the sync link, and the clients' path. On the
//! latter the primary sends an authenticated beacon (an ft-sync heartbeat, HMAC with a key
//! derived from the shared one) every heartbeat interval *from the service address* to the
//! peer's client-segment address (`--ft-mirror-to`, UDP port `--ft-listen` port + 1), the
//! way its media leave; the backup queues it on its own NFQUEUE (`--ft-queue-num` + 1, a
//! raw-table rule matching the VIP as source), which its sync thread reads each time it
//! wakes ([`crate::mirror::BeaconQueue`], every beacon with its kernel arrival time). That
//! thread is real-time and its timers are hrtimers (ppoll), so heartbeats and beacons keep
//! their 10 ms cadence on a loaded host. Heartbeats on the sync link go to the peer's sync
//! port + 2, a socket a node reads only when it wakes anyway, each with its kernel arrival
//! time ([`crate::sync_link::HeartbeatPath`]): a standing-by backup's detector deadline
//! wakes it about every two intervals instead of every heartbeat, and a death is detected
//! as fast. A cut or lossy sync link with beacons
//! arriving is a partition (`peer: sync_lost` in `/api/status`): the primary keeps serving
//! unprotected, the backup waits, and when the link heals the primary resends what the
//! backup missed (or a snapshot after a long silence) and the pair is protected again, with
//! nothing visible to the clients. ft-sync's "Two paths" documents the detector.
//!
//! After a takeover, the other node converges by itself:
//! - A primary that was taken over while alive (it stalled past both detectors, or a split
//!   healed) hears the new primary, stops its media at once (the rooms' fence flag), drops
//!   its VIP and rules and re-executes itself ([`crate::server::Rejoin`]); started again
//!   with `--ft-role primary` it finds a serving primary during its startup probe and joins
//!   it as backup (so does a crashed primary restarted with its usual configuration).
//! - The node that took over holds the VIP exactly as a primary does (process-bound TUN
//!   device, see Fencing) and installs the `TEE` rule toward its peer: the rejoined backup
//!   gets the mirrored input and the beacons, and a second takeover works like the first.
//!
//! Failure modes left: a primary that stalls past both detectors sends the frames of its
//! stall late when it resumes, until it hears the new primary (one sync-link round trip);
//! a primary that dies *during* a partition is taken over from the state replicated before
//! the partition (calls set up meanwhile are lost, ended ones are ended by the media
//! timeout); a primary that loses its clients' path while its sync link stays up is not
//! taken over (its clients hear nothing until it is restarted).
//!
//! # Limits (known)
//!
//! SIP over TCP is not carried across a takeover (the connection state is in the dead
//! kernel); UDP is. Each replicated entry must fit one sync-link datagram (~64 KiB): the full
//! state a (re)connecting backup gets is one entry per call and per room, so this bounds a
//! room's mixer snapshot (a few hundred participants), not the server's size.

use crate::config::{FtConfig, FtRole};
use crate::netguard::NetGuard;
use crate::sync_link::{BeaconOut, SyncEvent, SyncLink};
use anyhow::{Context, Result};
use control::Entry;
use ft_sync::Role;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A hot-standby node after its startup handshake (primary: no other primary answered;
/// backup: at once), with its network plumbing in place. Bind the listeners next.
pub struct HotStandby {
    /// The sync link.
    pub link: SyncLink<Entry>,
    /// Addresses and rules.
    pub net: NetGuard,
    /// Events read during the startup handshake, handled first by the server.
    pub pending: VecDeque<SyncEvent<Entry>>,
    /// Configured role.
    pub role: FtRole,
}

/// Start the sync link and, once the role is settled, take the network plumbing the role
/// needs. Fails with a clear error on a second primary, a key or protocol-version mismatch,
/// or missing privileges.
pub async fn start(cfg: &FtConfig) -> Result<HotStandby> {
    {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || crate::netguard::cleanup_stale(&cfg))
            .await
            .context("netfilter cleanup task")??;
    }
    let mut incarnation = [0u8; 8];
    getrandom::fill(&mut incarnation).map_err(|e| anyhow::anyhow!("OS random source: {e}"))?;
    let role = match cfg.role {
        FtRole::Primary => Role::Primary,
        FtRole::Backup => Role::Backup,
    };
    let mut config = ft_sync::Config::new(
        node_id(cfg),
        role,
        cfg.key.clone(),
        u64::from_le_bytes(incarnation),
    );
    config.heartbeat_interval = cfg.heartbeat;
    config.missed_heartbeats = cfg.dead_after;
    config.max_stretch = cfg.max_stretch;
    config.client_path_beacons = true;
    // A lossy link must not drop the protection every few seconds (see the field).
    config.primary_patience = 3;
    // A synced backup heartbeats about every 40 ms, not every interval: its heartbeats only
    // tell the primary it is protected, and sending them was most of a standing-by backup's
    // CPU (BENCHMARKS.md, issue 10 point 9). The primary then declares its backup dead after
    // 3 x 3 of them (about 360 ms), which only delays the release of what it holds for a
    // backup that really died; the backup's detector of its primary is unchanged.
    config.backup_heartbeats_every = backup_heartbeats_every(cfg.heartbeat);
    // Heartbeats on their own port, which a node reads only when it wakes anyway (a
    // standing-by backup: its detector's deadline): half the backup's wake-ups (issue 10
    // point 9).
    config.heartbeat_channel = true;
    let sock = std::net::UdpSocket::bind(cfg.listen)
        .with_context(|| format!("binding the sync link {}", cfg.listen))?;
    let heartbeats = crate::sync_link::HeartbeatPath {
        sock: std::net::UdpSocket::bind(cfg.heartbeat_listen())
            .with_context(|| format!("binding the heartbeat socket {}", cfg.heartbeat_listen()))?,
        to: cfg.peer_heartbeat(),
    };
    let beacon_from = SocketAddr::from((cfg.vip, cfg.beacon_port()));
    let beacons = BeaconOut {
        sock: bind_freebind_udp(beacon_from)
            .with_context(|| format!("binding the beacon socket {beacon_from}"))?,
        to: SocketAddr::from((cfg.mirror_to, cfg.beacon_port())),
    };
    let mut link = SyncLink::start_with_paths(
        sock,
        cfg.peer,
        ft_sync::Node::new(config, Duration::ZERO),
        Some(beacons),
        Some(heartbeats),
    )?;
    let mut pending = VecDeque::new();
    let mut cfg = cfg.clone();
    if cfg.role == FtRole::Primary {
        tracing::info!(listen = %cfg.listen, peer = %cfg.peer, realtime = link.realtime, "sync link: probing for another primary");
        loop {
            match link.recv().await {
                Some(SyncEvent::Node(ft_sync::Event::RoleChanged(Role::Primary))) => break,
                Some(SyncEvent::Node(ft_sync::Event::RoleChanged(Role::Backup))) => {
                    tracing::warn!(peer = %cfg.peer, "a primary already serves (it took over from this node's previous process): joining it as its backup");
                    cfg.role = FtRole::Backup;
                    break;
                }
                Some(SyncEvent::Node(ft_sync::Event::Fatal(e))) => {
                    anyhow::bail!("hot standby: {e}")
                }
                Some(other) => pending.push_back(other),
                None => anyhow::bail!("hot standby: the sync-link thread stopped"),
            }
        }
    }
    // Taking the plumbing runs iptables (tens of ms); the sync thread keeps heartbeating.
    let net = {
        let cfg = cfg.clone();
        let (net, beacons) = tokio::task::spawn_blocking(move || match cfg.role {
            FtRole::Primary => NetGuard::primary(&cfg).map(|net| (net, None)),
            FtRole::Backup => NetGuard::backup(&cfg).map(|(net, beacons)| (net, Some(beacons))),
        })
        .await
        .context("network setup task")??;
        if let Some(beacons) = beacons {
            link.set_beacon_source(Box::new(beacons));
        }
        net
    };
    Ok(HotStandby {
        link,
        net,
        pending,
        role: cfg.role,
    })
}

/// A UDP socket on `addr` with IP_FREEBIND (the address need not be on the host yet).
fn bind_freebind_udp(addr: SocketAddr) -> Result<std::net::UdpSocket> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    sock.set_freebind_v4(true)?;
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

/// A synced backup's heartbeat period, in heartbeat intervals: about 40 ms, at least one
/// interval.
fn backup_heartbeats_every(heartbeat: Duration) -> u32 {
    const BACKUP_HEARTBEAT: Duration = Duration::from_millis(40);
    (BACKUP_HEARTBEAT.as_micros() / heartbeat.as_micros().max(1)).clamp(1, 100) as u32
}

/// The node id names this node on the link: derived from its sync address (distinct per
/// node), so that two nodes configured with one role are told apart and refused as such.
fn node_id(cfg: &FtConfig) -> ft_sync::NodeId {
    cfg.listen
        .to_string()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        }) as ft_sync::NodeId
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

/// Role name for the status API.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Primary => "primary",
        Role::Backup => "backup",
        Role::TakingOver => "taking_over",
    }
}

/// Peer state name for the status API.
pub fn peer_name(p: ft_sync::PeerState) -> &'static str {
    match p {
        ft_sync::PeerState::Unknown => "unknown",
        ft_sync::PeerState::Alive => "alive",
        ft_sync::PeerState::Dead => "dead",
        ft_sync::PeerState::SyncLost => "sync_lost",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_backup_heartbeats_about_every_40_ms_whatever_the_interval() {
        let every = |ms| backup_heartbeats_every(Duration::from_millis(ms));
        assert_eq!(every(10), 4);
        assert_eq!(every(5), 8);
        assert_eq!(every(1), 40);
        // Heartbeats of 40 ms or more: the backup sends as often as the primary.
        assert_eq!(every(40), 1);
        assert_eq!(every(100), 1);
    }
}
