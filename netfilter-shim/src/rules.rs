//! The two netfilter rules of the hot-standby pair, tagged per instance so that a restarted
//! process can remove what a crashed one left behind.
//!
//! - Primary: `-t mangle PREROUTING -d VIP -j TEE --gateway BACKUP` sends a copy of every
//!   client packet for the service address to the backup, while the original is delivered
//!   locally as usual. TEE needs no queue, so there is no bypass question on the primary.
//! - Backup: `-t raw PREROUTING -d VIP -j NFQUEUE --queue-num N` hands every mirrored copy to
//!   the standby process, which drops it. This rule deliberately has **no**
//!   `--queue-bypass`: without a listener the kernel would otherwise deliver the copies to the
//!   backup's own stack, which holds the VIP on `lo` and would answer them (ICMP port
//!   unreachable, TCP RST to a SIP-over-TCP client) while the primary is serving the call.
//!   A dropped copy costs nothing (the primary still has the original); a stray answer breaks
//!   the call. The `raw` table is used so that the copies never create conntrack entries on
//!   the backup. [`QueueRule::bypass`] exists for queues on a primary's *own* path (e.g. a
//!   future output-commit hold), where a missing listener must not blackhole traffic.
//!
//! Every rule carries `-m comment --comment understudy-<instance>`; [`Instance::cleanup_stale`]
//! removes all rules with that tag from the tables this module uses.

use crate::error::{run, run_in, Error};
use std::fs::File;
use std::net::Ipv4Addr;

/// Tables this module installs rules into, searched by [`Instance::cleanup_stale`].
const TABLES: [&str; 2] = ["mangle", "raw"];

/// One node's identity for rule tagging; also names the `iptables` program to run.
#[derive(Debug, Clone)]
pub struct Instance {
    name: String,
    iptables: String,
}

/// The primary's mirror: copies of client packets for `vip` go to `backup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorRule {
    /// The service address.
    pub vip: Ipv4Addr,
    /// The backup's address on the shared segment (TEE's `--gateway`).
    pub backup: Ipv4Addr,
    /// Only mirror packets arriving on this device (recommended: the client-facing one, so
    /// that sync-link traffic is never mirrored).
    pub in_dev: Option<String>,
}

/// The backup's queue: packets for `vip` go to NFQUEUE `queue_num`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRule {
    /// The service address.
    pub vip: Ipv4Addr,
    /// NFQUEUE number the standby reads.
    pub queue_num: u16,
    /// Accept packets when nobody listens on the queue (`--queue-bypass`). False on the backup.
    pub bypass: bool,
}

impl QueueRule {
    /// The backup's rule: no bypass (see the module docs for why).
    pub fn backup(vip: Ipv4Addr, queue_num: u16) -> Self {
        QueueRule {
            vip,
            queue_num,
            bypass: false,
        }
    }
}

/// The backup's queue for the primary's client-path beacons: UDP datagrams *from* `vip` to
/// `port` (the primary sends them from the service address over the clients' segment; the
/// backup holds the VIP itself, so its stack would drop them as martians) go to NFQUEUE
/// `queue_num`, without bypass like [`QueueRule::backup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeaconQueueRule {
    /// The service address (the beacons' source).
    pub vip: Ipv4Addr,
    /// Their destination port.
    pub port: u16,
    /// NFQUEUE number the standby reads.
    pub queue_num: u16,
}

/// An installed rule. Removed by [`InstalledRule::remove`] or, best effort, on drop, in the
/// network namespace it was installed in, whichever thread drops it.
#[derive(Debug)]
#[must_use = "dropping an InstalledRule removes the rule"]
pub struct InstalledRule {
    netns: File,
    iptables: String,
    table: &'static str,
    spec: Vec<String>,
    removed: bool,
}

impl Instance {
    /// An instance tag (1-64 characters of `[A-Za-z0-9_.-]`), using the `iptables` program.
    pub fn new(name: &str) -> Result<Self, Error> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            return Err(Error::InvalidInstance(name.to_string()));
        }
        Ok(Instance {
            name: name.to_string(),
            iptables: "iptables".to_string(),
        })
    }

    /// Use another program than `iptables` (e.g. `iptables-legacy`).
    pub fn with_iptables(mut self, program: &str) -> Self {
        self.iptables = program.to_string();
        self
    }

    /// The comment every rule of this instance carries: `understudy-<name>`.
    pub fn tag(&self) -> String {
        format!("understudy-{}", self.name)
    }

    /// The iptables arguments after `-A`/`-D` for the mirror rule (table, then chain+spec).
    pub fn mirror_spec(&self, rule: &MirrorRule) -> (&'static str, Vec<String>) {
        let mut spec = vec![
            "PREROUTING".to_string(),
            "-d".into(),
            format!("{}/32", rule.vip),
        ];
        if let Some(dev) = &rule.in_dev {
            spec.extend(["-i".to_string(), dev.clone()]);
        }
        spec.extend(self.comment());
        spec.extend(["-j", "TEE", "--gateway"].map(String::from));
        spec.push(rule.backup.to_string());
        ("mangle", spec)
    }

    /// The iptables arguments after `-A`/`-D` for the queue rule (table, then chain+spec).
    pub fn queue_spec(&self, rule: &QueueRule) -> (&'static str, Vec<String>) {
        let mut spec = vec![
            "PREROUTING".to_string(),
            "-d".into(),
            format!("{}/32", rule.vip),
        ];
        spec.extend(self.comment());
        spec.extend(["-j", "NFQUEUE", "--queue-num"].map(String::from));
        spec.push(rule.queue_num.to_string());
        if rule.bypass {
            spec.push("--queue-bypass".into());
        }
        ("raw", spec)
    }

    /// The iptables arguments after `-A`/`-D` for the beacon queue rule (table, then
    /// chain+spec).
    pub fn beacon_queue_spec(&self, rule: &BeaconQueueRule) -> (&'static str, Vec<String>) {
        let mut spec = vec![
            "PREROUTING".to_string(),
            "-s".into(),
            format!("{}/32", rule.vip),
            "-p".into(),
            "udp".into(),
            "--dport".into(),
            rule.port.to_string(),
        ];
        spec.extend(self.comment());
        spec.extend(["-j", "NFQUEUE", "--queue-num"].map(String::from));
        spec.push(rule.queue_num.to_string());
        ("raw", spec)
    }

    fn comment(&self) -> [String; 4] {
        [
            "-m".into(),
            "comment".into(),
            "--comment".into(),
            self.tag(),
        ]
    }

    /// Installs the primary's TEE mirror rule (idempotent: an identical rule is reused).
    pub fn install_mirror(&self, rule: &MirrorRule) -> Result<InstalledRule, Error> {
        let (table, spec) = self.mirror_spec(rule);
        self.install(table, spec)
    }

    /// Installs the backup's NFQUEUE rule (idempotent: an identical rule is reused).
    pub fn install_queue(&self, rule: &QueueRule) -> Result<InstalledRule, Error> {
        let (table, spec) = self.queue_spec(rule);
        self.install(table, spec)
    }

    /// Installs the backup's beacon queue rule (idempotent).
    pub fn install_beacon_queue(&self, rule: &BeaconQueueRule) -> Result<InstalledRule, Error> {
        let (table, spec) = self.beacon_queue_spec(rule);
        self.install(table, spec)
    }

    fn install(&self, table: &'static str, spec: Vec<String>) -> Result<InstalledRule, Error> {
        // Network namespaces are per thread: remember this one for the removal.
        let netns = File::open("/proc/thread-self/ns/net").map_err(|source| Error::Io {
            what: "open /proc/thread-self/ns/net".into(),
            source,
        })?;
        let exists = iptables(None, &self.iptables, table, "-C", &spec).is_ok();
        if !exists {
            iptables(None, &self.iptables, table, "-A", &spec)?;
        }
        Ok(InstalledRule {
            netns,
            iptables: self.iptables.clone(),
            table,
            spec,
            removed: false,
        })
    }

    /// Rules of this instance currently installed, as `(table, "-A CHAIN ...")` lines.
    pub fn list(&self) -> Result<Vec<(&'static str, String)>, Error> {
        let tag = self.tag();
        let mut found = Vec::new();
        for table in TABLES {
            let out = run(&self.iptables, &["-w", "-t", table, "-S"])?;
            for line in out.lines() {
                let mut tokens = line.split_whitespace();
                let tagged = line
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .windows(2)
                    .any(|w| w[0] == "--comment" && (w[1] == tag || w[1].trim_matches('"') == tag));
                if tokens.next() == Some("-A") && tagged {
                    found.push((table, line.to_string()));
                }
            }
        }
        Ok(found)
    }

    /// Removes every rule tagged with this instance (left by a crashed process, or by this
    /// one). Returns how many were removed.
    pub fn cleanup_stale(&self) -> Result<usize, Error> {
        let rules = self.list()?;
        for (table, line) in &rules {
            // `-S` prints rules in the syntax that `-D` accepts; our tags contain no spaces
            // or quotes, so splitting on whitespace reproduces the arguments.
            let spec: Vec<String> = line.split_whitespace().skip(1).map(String::from).collect();
            iptables(None, &self.iptables, table, "-D", &spec)?;
        }
        Ok(rules.len())
    }
}

impl InstalledRule {
    /// The table the rule lives in.
    pub fn table(&self) -> &str {
        self.table
    }

    /// Removes the rule now, reporting failure (drop only logs nothing and ignores it).
    pub fn remove(mut self) -> Result<(), Error> {
        self.removed = true;
        iptables(
            Some(&self.netns),
            &self.iptables,
            self.table,
            "-D",
            &self.spec,
        )
    }

    /// Keeps the rule installed after this value is dropped (it stays tagged, so
    /// [`Instance::cleanup_stale`] still finds it).
    pub fn leak(mut self) {
        self.removed = true;
    }
}

impl Drop for InstalledRule {
    fn drop(&mut self) {
        if !self.removed {
            let _ = iptables(
                Some(&self.netns),
                &self.iptables,
                self.table,
                "-D",
                &self.spec,
            );
        }
    }
}

/// Runs one iptables command, in `netns` if given, else in the calling thread's namespace.
fn iptables(
    netns: Option<&File>,
    program: &str,
    table: &str,
    op: &str,
    spec: &[String],
) -> Result<(), Error> {
    // `-w`: wait for the xtables lock instead of failing when another process holds it.
    let mut args = vec!["-w", "-t", table, op];
    args.extend(spec.iter().map(String::as_str));
    run_in(netns, program, &args).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_are_restricted() {
        assert!(Instance::new("backup-1").is_ok());
        for bad in ["", "a b", "x\"y", &"a".repeat(65)] {
            assert!(matches!(Instance::new(bad), Err(Error::InvalidInstance(_))));
        }
    }

    #[test]
    fn backup_queue_rule_has_no_bypass_and_is_tagged() {
        let i = Instance::new("b").unwrap();
        let (table, spec) = i.queue_spec(&QueueRule::backup(Ipv4Addr::new(198, 18, 0, 100), 3));
        assert_eq!(table, "raw");
        assert_eq!(
            spec.join(" "),
            "PREROUTING -d 198.18.0.100/32 -m comment --comment understudy-b -j NFQUEUE --queue-num 3"
        );
    }

    #[test]
    fn beacon_queue_rule_matches_the_source() {
        let i = Instance::new("b").unwrap();
        let (table, spec) = i.beacon_queue_spec(&BeaconQueueRule {
            vip: Ipv4Addr::new(198, 18, 0, 100),
            port: 7001,
            queue_num: 3,
        });
        assert_eq!(table, "raw");
        assert_eq!(
            spec.join(" "),
            "PREROUTING -s 198.18.0.100/32 -p udp --dport 7001 -m comment --comment understudy-b -j NFQUEUE --queue-num 3"
        );
    }

    #[test]
    fn mirror_rule_spec() {
        let i = Instance::new("p").unwrap();
        let rule = MirrorRule {
            vip: Ipv4Addr::new(198, 18, 0, 100),
            backup: Ipv4Addr::new(198, 18, 0, 2),
            in_dev: Some("eth0".into()),
        };
        let (table, spec) = i.mirror_spec(&rule);
        assert_eq!(table, "mangle");
        assert_eq!(
            spec.join(" "),
            "PREROUTING -d 198.18.0.100/32 -i eth0 -m comment --comment understudy-p -j TEE --gateway 198.18.0.2"
        );
    }
}
