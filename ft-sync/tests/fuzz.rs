//! 100 000 random, mutated and forged datagrams into a node's receive path: no panic, and
//! every datagram is counted exactly once (accepted or dropped for a reason).

use ft_sync::wire::{encode, Envelope};
use ft_sync::{Config, RefuseReason, Role};
use serde::{Deserialize, Serialize};

/// The test's replicated schema (the application defines its own typed enum).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Change {
    Dialog(Vec<u8>),
    Room { room: u64, snapshot: Vec<u8> },
    Tagged { kind: u16, data: Vec<u8> },
    RoomClosed { room: u64 },
}

type Node = ft_sync::Node<Change>;
type Payload = ft_sync::Payload<Change>;
use rand_core::{Rng as _, SeedableRng};
use rand_xoshiro::SplitMix64;
use std::time::Duration;

const KEY: &[u8] = b"fuzz key";

struct Rng(SplitMix64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Real traffic of a primary/backup pair (Hello, Heartbeat, Snapshot, Entry, Ack).
fn corpus() -> Vec<Vec<u8>> {
    let ms = Duration::from_millis(1);
    let mut p = Node::new(
        Config::new(1, Role::Primary, KEY.to_vec(), 11),
        Duration::ZERO,
    );
    let mut b = Node::new(
        Config::new(2, Role::Backup, KEY.to_vec(), 22),
        Duration::ZERO,
    );
    let mut out = Vec::new();
    let mut now = Duration::ZERO;
    for step in 0..100 {
        while let Some(d) = p.poll_transmit() {
            b.handle_datagram(&d, now);
            out.push(d);
        }
        while let Some(d) = b.poll_transmit() {
            p.handle_datagram(&d, now);
            out.push(d);
        }
        while let Some(e) = p.poll_event() {
            if e == ft_sync::Event::SnapshotNeeded {
                p.replicate_snapshot(vec![Change::Dialog(vec![1, 2, 3])], now)
                    .unwrap();
            }
        }
        while b.poll_event().is_some() {}
        if step > 50 {
            let _ = p.replicate(
                Change::Room {
                    room: step,
                    snapshot: vec![step as u8; 40],
                },
                now,
            );
        }
        now += ms;
        p.handle_timeout(now);
        b.handle_timeout(now);
    }
    out
}

/// An authenticated envelope with arbitrary field values (a peer with the key sending
/// nonsense must not break the node either).
fn forged(rng: &mut Rng) -> Vec<u8> {
    let role = [Role::Primary, Role::Backup, Role::TakingOver][rng.below(3) as usize];
    let payload = match rng.below(6) {
        0 => Payload::Hello {
            key_fingerprint: rng.next().to_be_bytes(),
            starting: rng.below(2) == 0,
            peer_seen: rng.below(2) == 0,
        },
        1 => Payload::Heartbeat {
            log_index: rng.next(),
        },
        2 => Payload::Ack {
            index: rng.below(400),
        },
        3 => Payload::Entry {
            index: rng.below(400),
            item: Change::Tagged {
                kind: rng.next() as u16,
                data: {
                    let n = rng.below(50) as usize;
                    rng.bytes(n)
                },
            },
        },
        4 => Payload::Snapshot {
            index: rng.below(400),
            items: vec![Change::RoomClosed { room: rng.next() }],
        },
        _ => Payload::Refuse {
            reason: [
                RefuseReason::TwoPrimaries,
                RefuseReason::TwoBackups,
                RefuseReason::SameNodeId,
            ][rng.below(3) as usize],
        },
    };
    encode(
        KEY,
        &Envelope {
            node: rng.below(4),
            incarnation: rng.below(3),
            role,
            seq: rng.below(1000),
            payload,
        },
    )
    .unwrap()
}

fn mutate(rng: &mut Rng, d: &[u8]) -> Vec<u8> {
    let mut d = d.to_vec();
    match rng.below(5) {
        0 => {
            for _ in 0..=rng.below(4) {
                if !d.is_empty() {
                    let k = rng.below(d.len() as u64) as usize;
                    d[k] ^= 1 << rng.below(8);
                }
            }
        }
        1 => d.truncate(rng.below(d.len() as u64 + 1) as usize),
        2 => {
            let n = rng.below(40) as usize;
            let extra = rng.bytes(n);
            d.extend(extra);
        }
        3 => {
            let k = rng.below(d.len() as u64 + 1) as usize;
            d.insert(k, rng.next() as u8);
        }
        _ => {} // replayed as is
    }
    d
}

#[test]
fn hundred_thousand_datagrams_no_panic_all_counted() {
    let corpus = corpus();
    assert!(corpus.len() > 100);
    let mut rng = Rng(SplitMix64::seed_from_u64(0xF022));
    // A fresh backup and one that shares the corpus's history (so mutated datagrams reach
    // the log and role paths, not only the MAC check).
    let mut nodes = [
        Node::new(
            Config::new(2, Role::Backup, KEY.to_vec(), 5),
            Duration::ZERO,
        ),
        Node::new(
            Config::new(1, Role::Primary, KEY.to_vec(), 6),
            Duration::ZERO,
        ),
    ];
    let mut fed = [0u64; 2];
    let mut beacons_fed = 0u64;
    let mut now = Duration::ZERO;
    for n in 0..100_000u64 {
        let d = match rng.below(4) {
            0 => {
                let len = rng.below(300) as usize;
                rng.bytes(len)
            }
            1 => forged(&mut rng),
            _ => {
                let base = &corpus[rng.below(corpus.len() as u64) as usize];
                mutate(&mut rng, base)
            }
        };
        let i = (n % 2) as usize;
        nodes[i].handle_datagram(&d, now);
        fed[i] += 1;
        // The clients' path: the same hostile bytes as a beacon to both nodes.
        if n % 3 == 0 {
            for node in nodes.iter_mut() {
                node.handle_beacon(&d, now);
            }
            beacons_fed += 1;
        }
        if n % 10 == 0 {
            now += Duration::from_micros(700);
            for node in nodes.iter_mut() {
                node.handle_timeout(now);
            }
        }
        for node in nodes.iter_mut() {
            while node.poll_transmit().is_some() {}
            while node.poll_event().is_some() {}
        }
    }
    for (i, node) in nodes.iter().enumerate() {
        let s = node.stats();
        assert_eq!(s.accepted + s.dropped(), fed[i], "node {i}: {s:?}");
        assert!(s.unauthenticated > 10_000, "{s:?}");
        assert!(s.malformed > 1_000, "{s:?}");
        assert_eq!(
            s.beacons + s.beacons_refused,
            beacons_fed,
            "node {i}: {s:?}"
        );
        assert!(s.beacons_refused > 30_000, "node {i}: {s:?}");
    }
}
