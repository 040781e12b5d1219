//! The addresses and netfilter rules a hot-standby node holds (see [`crate::hot_standby`]
//! for what each role needs and why).

use crate::config::{FtConfig, FtRole};
use crate::mirror::MirrorReader;
use anyhow::{Context, Result};
use netfilter_shim::fence::ProcessBoundVip;
use netfilter_shim::rules::{InstalledRule, Instance, MirrorRule, QueueRule};
use netfilter_shim::takeover;

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
        let mirror = MirrorReader::start(cfg.queue_num, cfg.vip, cfg.webrtc_port)?;
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
