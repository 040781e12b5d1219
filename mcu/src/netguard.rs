//! The addresses and netfilter rules a hot-standby node holds (see [`crate::hot_standby`]
//! for what each role needs and why).

use crate::config::{FtConfig, FtRole};
use crate::mirror::{BeaconQueue, MirrorReader};
use anyhow::{Context, Result};
use netfilter_shim::fence::ProcessBoundVip;
use netfilter_shim::rules::{BeaconQueueRule, InstalledRule, Instance, MirrorRule, QueueRule};
use netfilter_shim::takeover;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The addresses and netfilter rules a node holds while it runs. Dropping it (clean exit)
/// removes them; after a crash the next start removes stale rules by their tag.
pub struct NetGuard {
    cfg: FtConfig,
    fence: Arc<Mutex<Option<ProcessBoundVip>>>,
    mirror_rule: Arc<Mutex<Option<InstalledRule>>>,
    queue_rules: Vec<InstalledRule>,
    /// The takeover's threads (claim, then re-protection), joined on drop.
    threads: Vec<std::thread::JoinHandle<()>>,
    /// [`NetGuard::protect`] ran.
    mirror_requested: bool,
    /// Backup: the queue reader.
    pub mirror: Option<MirrorReader>,
}

fn instance(cfg: &FtConfig) -> Result<Instance> {
    // One tag per node (not per role): a node restarted with the other role still finds
    // the rules its crashed predecessor left.
    Ok(Instance::new(&format!("mcu-{}", cfg.listen.port()))?)
}

/// How long the backup's queue rules outlive a takeover ([`NetGuard::finish_takeover`]).
pub const RULES_LINGER: Duration = Duration::from_millis(300);

impl NetGuard {
    /// Primary: fence-bound VIP and gratuitous ARP (the mirror rule follows once a backup
    /// answers, [`NetGuard::protect`]). Stale rules are gone already ([`cleanup_stale`], run
    /// before the sync link starts).
    pub fn primary(cfg: &FtConfig) -> Result<Self> {
        takeover::release_standby(cfg.vip).context("removing a standby VIP from lo")?;
        // The fence puts the VIP on a TUN device; eth0 answers ARP for it only with
        // arp_ignore=0 (a node that was a backup before had set 1).
        for dev in ["all", cfg.dev.as_str()] {
            takeover::set_sysctl(&format!("net/ipv4/conf/{dev}/arp_ignore"), "0")
                .with_context(|| format!("arp_ignore on {dev}"))?;
        }
        let fence = hold_fenced_vip(cfg)?;
        takeover::send_gratuitous_arp(&cfg.dev, cfg.vip).context("gratuitous ARP")?;
        tracing::info!(vip = %cfg.vip, tun = fence.dev(), "primary: VIP held (process-bound)");
        Ok(NetGuard {
            cfg: cfg.clone(),
            fence: Arc::new(Mutex::new(Some(fence))),
            mirror_rule: Arc::new(Mutex::new(None)),
            queue_rules: Vec::new(),
            threads: Vec::new(),
            mirror_requested: false,
            mirror: None,
        })
    }

    /// Backup: VIP on `lo` without ARP, NFQUEUE rules (no bypass: the clients' mirrored
    /// packets, the primary's beacons), the mirror's reader and the beacons' queue, for the
    /// sync thread to read ([`crate::sync_link::SyncLink::set_beacon_source`]). Stale rules
    /// are gone already ([`cleanup_stale`]).
    pub fn backup(cfg: &FtConfig) -> Result<(Self, BeaconQueue)> {
        let inst = instance(cfg)?;
        takeover::hold_standby(cfg.vip).context("holding the VIP as standby")?;
        let queue_rule = inst
            .install_queue(&QueueRule::backup(cfg.vip, cfg.queue_num))
            .context("installing the queue rule")?;
        let beacon_queue = cfg.queue_num.wrapping_add(1);
        let beacon_rule = inst
            .install_beacon_queue(&BeaconQueueRule {
                vip: cfg.vip,
                port: cfg.beacon_port(),
                queue_num: beacon_queue,
            })
            .context("installing the beacon queue rule")?;
        let mirror = MirrorReader::start(cfg.queue_num, cfg.vip, cfg.webrtc_port)?;
        let beacons = BeaconQueue::open(beacon_queue, cfg.vip, cfg.beacon_port())?;
        tracing::info!(vip = %cfg.vip, queue = cfg.queue_num, beacon_queue, beacon_port = cfg.beacon_port(), "backup: VIP held silently, mirrored input and the primary's beacons queued");
        let guard = NetGuard {
            cfg: cfg.clone(),
            fence: Arc::new(Mutex::new(None)),
            mirror_rule: Arc::new(Mutex::new(None)),
            queue_rules: vec![queue_rule, beacon_rule],
            threads: Vec::new(),
            mirror_requested: false,
            mirror: Some(mirror),
        };
        Ok((guard, beacons))
    }

    /// Takeover, first step: let mirrored packets through and claim the VIP exactly as a
    /// primary holds it: on a TUN device only this process holds (the fence, so that if
    /// this node dies in turn its host stops answering for the VIP at once), answered on
    /// the service device (arp_ignore=0), announced by gratuitous ARPs, then off `lo`. On a
    /// thread; the first ARP leaves within a millisecond or so.
    pub fn claim(&mut self) {
        self.claim_at(std::time::Instant::now());
    }

    /// [`NetGuard::claim`], the address itself at `at` (planned switchover: the old
    /// primary receives its clients' packets until just before the handover tick; this
    /// node's rooms receive the mirrored copies from now on).
    pub fn claim_at(&mut self, at: std::time::Instant) {
        if let Some(m) = &self.mirror {
            m.accept_all();
        }
        let cfg = self.cfg.clone();
        let fence_slot = self.fence.clone();
        self.threads.push(std::thread::spawn(move || {
            std::thread::sleep(at.saturating_duration_since(std::time::Instant::now()));
            let t0 = std::time::Instant::now();
            let vip = cfg.vip;
            let claimed = (|| -> Result<f64> {
                for dev in ["all", cfg.dev.as_str()] {
                    takeover::set_sysctl(&format!("net/ipv4/conf/{dev}/arp_ignore"), "0")
                        .with_context(|| format!("arp_ignore on {dev}"))?;
                }
                let fence = hold_fenced_vip(&cfg)?;
                *fence_slot.lock().unwrap() = Some(fence);
                let address_ms = t0.elapsed().as_secs_f64() * 1e3;
                let opts = takeover::ClaimOptions::default();
                for i in 0..opts.garp_count {
                    if i > 0 {
                        std::thread::sleep(opts.garp_interval);
                    }
                    takeover::send_gratuitous_arp(&cfg.dev, vip).context("gratuitous ARP")?;
                }
                takeover::release_standby(vip).context("removing the standby VIP from lo")?;
                Ok(address_ms)
            })();
            match claimed {
                Ok(address_ms) => tracing::info!(
                    address_ms,
                    "VIP {vip} claimed (process-bound) on {}",
                    cfg.dev
                ),
                Err(e) => tracing::error!("claiming VIP {vip} on {}: {e:#}", cfg.dev),
            }
        }));
    }

    /// Takeover, last step: remove the queue rules and stop the reader. On a thread: one
    /// `iptables -D` takes 10-20 ms of CPU.
    ///
    /// Not at once: the promoted rooms start in the same milliseconds, and an `iptables`
    /// process competing with them for the two cores of a small host spread their first
    /// packets over 20 ms (at 40 rooms). The rules stay [`RULES_LINGER`] longer (the queue
    /// reader accepts every packet since [`NetGuard::claim`], so they cost a hop, not
    /// packets) and are removed at a lower priority.
    pub fn finish_takeover(&mut self) {
        let rules = std::mem::take(&mut self.queue_rules);
        let mirror = self.mirror.take();
        self.threads.push(std::thread::spawn(move || {
            // SAFETY: setpriority on the calling thread (who = 0 is the calling thread on
            // Linux); no pointers.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
            std::thread::sleep(RULES_LINGER);
            for r in rules {
                if let Err(e) = r.remove() {
                    tracing::warn!("removing a queue rule: {e}");
                }
            }
            drop(mirror);
        }));
    }

    /// Primary (configured, or after a takeover): a backup answers on the sync link, so
    /// mirror every client packet to it (the `TEE` rule; once, on a thread).
    ///
    /// Not earlier: the peer's host may still hold the `TEE` rule of a primary process that
    /// was killed there (a kernel outlives its process), which would mirror our copies back
    /// to us, and ours back to it, forever. Every node removes its stale rules before it
    /// starts its sync link ([`cleanup_stale`]), so a peer that answers has none left.
    pub fn protect(&mut self) {
        if self.mirror_requested {
            return;
        }
        self.mirror_requested = true;
        let cfg = self.cfg.clone();
        let slot = self.mirror_rule.clone();
        self.threads.push(std::thread::spawn(move || {
            match instance(&cfg).and_then(|inst| install_mirror(&inst, &cfg)) {
                Ok(rule) => {
                    *slot.lock().unwrap() = Some(rule);
                    tracing::info!(mirror_to = %cfg.mirror_to, "primary: mirroring client packets to the backup");
                }
                Err(e) => tracing::error!("primary: installing the mirror rule: {e:#}"),
            }
        }));
    }

    /// Backup: packets read from the mirror queue.
    pub fn mirrored_packets(&self) -> u64 {
        self.mirror.as_ref().map_or(0, MirrorReader::packets)
    }
}

/// Remove the rules a previous process of this node left (it crashed, or was killed):
/// before the sync link starts, so that a peer that hears this node never mirrors into a
/// stale rule (see [`NetGuard::protect`]).
pub fn cleanup_stale(cfg: &FtConfig) -> Result<()> {
    let stale = instance(cfg)?
        .cleanup_stale()
        .context("removing stale rules")?;
    if stale > 0 {
        tracing::info!(stale, "removed netfilter rules left by a previous process");
    }
    Ok(())
}

/// The VIP on this process's TUN device (the fence).
fn hold_fenced_vip(cfg: &FtConfig) -> Result<ProcessBoundVip> {
    let tun = format!("usvip{}", cfg.listen.port());
    ProcessBoundVip::hold(cfg.vip, &tun).with_context(|| format!("holding {} on {tun}", cfg.vip))
}

/// The primary's TEE rule toward the peer's client-segment address.
fn install_mirror(inst: &Instance, cfg: &FtConfig) -> Result<InstalledRule> {
    inst.install_mirror(&MirrorRule {
        vip: cfg.vip,
        backup: cfg.mirror_to,
        in_dev: Some(cfg.dev.clone()),
    })
    .context("installing the mirror rule")
}

impl Drop for NetGuard {
    fn drop(&mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(r) = self.mirror_rule.lock().unwrap().take() {
            let _ = r.remove();
        }
        for r in self.queue_rules.drain(..) {
            let _ = r.remove();
        }
        self.mirror = None;
        if let Some(f) = self.fence.lock().unwrap().take() {
            f.release();
        }
        if self.cfg.role == FtRole::Backup {
            let _ = takeover::release_standby(self.cfg.vip);
        }
    }
}
