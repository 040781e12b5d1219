//! Linux packet plumbing for Understudy's hot-standby takeover.
//!
//! For: installing and removing the netfilter rules that mirror client traffic from the
//! primary to the backup (iptables `TEE`) and hold it in an NFQUEUE on the backup; reading
//! that queue and issuing verdicts; holding the service address (VIP) silently on the backup
//! and claiming it at takeover (address plus gratuitous ARP).
//!
//! Not for: anything about media, SIP or replication state (that is `mixer`, `sip` and
//! `ft-sync`), failure detection, or deciding *when* to take over. Every function acts on
//! the network namespace of the calling thread and needs `CAP_NET_ADMIN` (in practice root).
//! [`fence`] holds a VIP that the kernel removes when the process dies (`kill -9` fence).
//!
//! The backup's run loop (needs root, so not run as a doctest):
//!
//! ```no_run
//! use netfilter_shim::{rules::{Instance, QueueRule}, queue::PacketQueue, takeover};
//! use std::net::Ipv4Addr;
//!
//! # fn main() -> Result<(), netfilter_shim::Error> {
//! let vip = Ipv4Addr::new(198, 18, 0, 100);
//! let instance = Instance::new("backup-a")?;
//! instance.cleanup_stale()?; // rules left by a crashed predecessor
//! takeover::hold_standby(vip)?; // VIP on lo, not answering ARP
//! let rule = instance.install_queue(&QueueRule::backup(vip, 0))?;
//! let mut queue = PacketQueue::open(0)?;
//! loop {
//!     let packet = queue.recv()?;
//!     if let Ok(flow) = packet.flow() {
//!         let _ = (flow, packet.bytes()); // hand to the standby core
//!     }
//!     queue.drop_packet(packet)?; // the backup's kernel must never answer
//! #   break;
//! }
//! // At takeover: the reader switches to `queue.accept(packet)` (clients that already
//! // follow the gratuitous ARP reach the now-active stack), the VIP is claimed, and only
//! // then is the rule removed: removing it costs 10-20 ms of iptables, the address 0.2 ms.
//! takeover::claim(vip, 24, "eth0", &takeover::ClaimOptions::default())?;
//! rule.remove()?;
//! # Ok(())
//! # }
//! ```
//!
//! # Measured (tests/plumbing.rs, veth + bridge test bed, 2 shared cores at load ~6)
//!
//! `takeover_backup_claims_vip_and_client_packets_follow`, a client sending every 1 ms,
//! time from the start of the takeover to the first client packet on the backup's socket:
//! claim first (reader accepting meanwhile), then remove the rule: median 1.1-3.9 ms, max
//! 11.5 ms over 11 runs of 3 rounds; rule first, then claim: median 9-23 ms, max 34 ms,
//! because one `iptables -D` costs 6-23 ms. Adding the address over rtnetlink takes 0.15-0.2 ms; the
//! first client packet arrives 0.5-1 ms (one send interval) after the first gratuitous ARP.
//!
//! `nfqueue_reader_cost_per_packet`: receive + parse + DROP costs the reader thread 6-7 us
//! of CPU per 172-byte packet in a release build (8-10 us in debug; softirq work in the kernel
//! not included), i.e. ~3% of one core for 100 participants sending 50 packets/s; 5000/5000
//! copies seen at ~10k packets/s.
#![deny(missing_docs)]

mod error;
pub mod fence;
pub mod queue;
pub mod rules;
pub mod takeover;

pub use error::Error;
