//! Two nodes on an in-memory sync link (drop, delay, reorder, corrupt), in virtual time.

use ft_sync::{Config, Error, PeerState, Role};
use serde::{Deserialize, Serialize};

/// The test's replicated schema (the application defines its own typed enum).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Change {
    /// A dialog's state.
    Dialog(Vec<u8>),
    /// A numbered change (ordering checks).
    Counter(u64),
    /// A room was closed.
    RoomClosed { room: u64 },
}

type Node = ft_sync::Node<Change>;
type Event = ft_sync::Event<Change>;
type LogEntry = ft_sync::LogEntry<Change>;
use rand_core::{Rng as _, SeedableRng};
use rand_xoshiro::SplitMix64;
use std::time::Duration;

const MS: Duration = Duration::from_millis(1);
const KEY: &[u8] = b"correct horse battery staple";

/// Deterministic PRNG (splitmix64).
struct Rng(SplitMix64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() % 1_000_000) as f64 / 1e6 < p
    }
}

/// Link impairments (per direction).
#[derive(Clone, Copy, Default)]
struct Impair {
    drop: f64,
    corrupt: f64,
    /// Base one-way delay.
    delay: Duration,
    /// Extra random delay up to this (reorders).
    jitter: Duration,
    duplicate: f64,
}

/// The path a datagram travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// The sync link.
    Sync,
    /// The clients' path (beacons).
    Beacon,
    /// The heartbeat path ([`Config::heartbeat_channel`]): its own socket at the receiver,
    /// read only when the receiver wakes for something else (a sync datagram, a timer), each
    /// datagram with its arrival time.
    Heartbeat,
}

/// Two nodes, a link, a clock. Node 0 and node 1 may start at different times.
struct Net {
    now: Duration,
    nodes: [Option<Node>; 2],
    /// (deliver at, to, bytes, path)
    in_flight: Vec<(Duration, usize, Vec<u8>, Path)>,
    /// Each node's heartbeat socket: (arrival, bytes) not read yet.
    heartbeat_socket: [Vec<(Duration, Vec<u8>)>; 2],
    /// Heartbeats that arrived on each node's heartbeat socket.
    heartbeats_arrived: [u64; 2],
    /// Each node's wake-ups: sync-link datagrams delivered and own timers due.
    wakes: [u64; 2],
    /// The sync link is cut (both directions); the clients' path stays up.
    cut: bool,
    /// The sync link drops what node i sends (one direction).
    cut_from: [bool; 2],
    /// Beacons delivered to each node.
    beacons_delivered: [u64; 2],
    impair: Impair,
    rng: Rng,
    events: [Vec<(Duration, Event)>; 2],
    /// Last datagram delivered to each node (its arrival time).
    last_delivery: [Option<Duration>; 2],
    /// A node that is "killed": neither sends nor receives.
    dead: [bool; 2],
    /// SnapshotNeeded events answered so far.
    served: [usize; 2],
    /// Instants at which a node's own timer was due (a wake-up no datagram caused).
    timer_wakes: [u64; 2],
    /// Node 0's datagrams on both paths arrive no earlier than this (a stalled network
    /// path: held, then delivered in a burst).
    hold_until: Duration,
    /// Node 1: last arrival of anything from node 0 (either path).
    last_arrival: Option<Duration>,
}

impl Net {
    fn new(impair: Impair, seed: u64) -> Self {
        Net {
            now: Duration::ZERO,
            nodes: [None, None],
            in_flight: Vec::new(),
            heartbeat_socket: [Vec::new(), Vec::new()],
            heartbeats_arrived: [0, 0],
            wakes: [0, 0],
            cut: false,
            cut_from: [false, false],
            beacons_delivered: [0, 0],
            impair,
            rng: Rng(SplitMix64::seed_from_u64(seed)),
            events: [Vec::new(), Vec::new()],
            last_delivery: [None, None],
            dead: [false, false],
            served: [0, 0],
            timer_wakes: [0, 0],
            hold_until: Duration::ZERO,
            last_arrival: None,
        }
    }

    fn start(&mut self, i: usize, config: Config) {
        self.nodes[i] = Some(Node::new(config, self.now));
        self.pump();
    }

    fn node(&mut self, i: usize) -> &mut Node {
        self.nodes[i].as_mut().unwrap()
    }

    /// Move datagrams and events out of the nodes.
    fn pump(&mut self) {
        for i in 0..2 {
            let Some(n) = self.nodes[i].as_mut() else {
                continue;
            };
            while let Some(d) = n.poll_beacon() {
                // The clients' path: no impairment, only death.
                if !self.dead[i] {
                    self.in_flight
                        .push((self.now + self.impair.delay, 1 - i, d, Path::Beacon));
                }
            }
            // Both take the sync link's impairments (it is the same wire).
            let mut out: Vec<_> = std::iter::from_fn(|| n.poll_heartbeat())
                .map(|d| (d, Path::Heartbeat))
                .collect();
            out.extend(std::iter::from_fn(|| n.poll_transmit()).map(|d| (d, Path::Sync)));
            for (d, path) in out {
                if self.dead[i] || self.cut || self.cut_from[i] || self.rng.chance(self.impair.drop)
                {
                    continue;
                }
                let copies = if self.rng.chance(self.impair.duplicate) {
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    let mut d = d.clone();
                    if self.rng.chance(self.impair.corrupt) {
                        let k = (self.rng.next() as usize) % d.len();
                        d[k] ^= 1 << (self.rng.next() % 8);
                    }
                    let j = self.impair.jitter.as_micros() as u64;
                    let extra = if j > 0 { self.rng.next() % j } else { 0 };
                    let at = self.now + self.impair.delay + Duration::from_micros(extra);
                    self.in_flight.push((at, 1 - i, d, path));
                }
            }
            while let Some(e) = n.poll_event() {
                self.events[i].push((self.now, e));
            }
        }
    }

    /// Run until `until` in 1 ms steps (timers fire at their exact instants).
    fn run_until(&mut self, until: Duration) {
        while self.now < until {
            // Deliver what is due (in arrival order).
            let hold = self.hold_until;
            for p in self.in_flight.iter_mut().filter(|p| p.1 == 1 && p.0 < hold) {
                p.0 = hold;
            }
            self.in_flight.sort_by_key(|p| p.0);
            let due: Vec<_> = self
                .in_flight
                .iter()
                .filter(|p| p.0 <= self.now)
                .cloned()
                .collect();
            self.in_flight.retain(|p| p.0 > self.now);
            for (at, to, d, path) in due {
                if self.dead[to] {
                    continue;
                }
                if to == 1 {
                    self.last_arrival = Some(at);
                }
                if path == Path::Heartbeat {
                    self.heartbeat_socket[to].push((at, d));
                    self.heartbeats_arrived[to] += 1;
                    self.last_delivery[to] = Some(at);
                    continue;
                }
                if let Some(n) = self.nodes[to].as_mut() {
                    if path == Path::Beacon {
                        n.handle_beacon(&d, at);
                        self.beacons_delivered[to] += 1;
                    } else {
                        self.wakes[to] += 1;
                        for (arrived, h) in self.heartbeat_socket[to].drain(..) {
                            n.handle_datagram_received(&h, arrived, at);
                        }
                        n.handle_datagram(&d, at);
                        self.last_delivery[to] = Some(at);
                    }
                }
                self.pump();
            }
            for i in 0..2 {
                if self.dead[i] {
                    continue;
                }
                if let Some(n) = self.nodes[i].as_mut() {
                    if n.poll_timeout().is_some_and(|t| t <= self.now) {
                        self.timer_wakes[i] += 1;
                        self.wakes[i] += 1;
                        // What waited on the heartbeat socket first, as a driver reads it.
                        for (arrived, h) in self.heartbeat_socket[i].drain(..) {
                            n.handle_datagram_received(&h, arrived, self.now);
                        }
                        if n.poll_timeout().is_some_and(|t| t <= self.now) {
                            n.handle_timeout(self.now);
                        }
                    }
                }
            }
            self.pump();
            // Next instant: the earliest of 1 ms, a timer, a delivery.
            let mut next = self.now + MS;
            for i in 0..2 {
                if let (false, Some(n)) = (self.dead[i], self.nodes[i].as_ref()) {
                    if let Some(t) = n.poll_timeout() {
                        next = next.min(t.max(self.now + Duration::from_micros(1)));
                    }
                }
            }
            for p in &self.in_flight {
                next = next.min(p.0.max(self.now + Duration::from_micros(1)));
            }
            self.now = next.min(until.max(self.now + Duration::from_micros(1)));
        }
    }

    /// Stall node 0's paths to node 1 from now until `silence` after the last thing node 1
    /// received, then run until the burst is delivered.
    fn stall(&mut self, silence: Duration) {
        self.hold_until = self.last_arrival.unwrap() + silence;
        let until = self.hold_until + MS;
        self.run_until(until);
    }

    fn has(&self, i: usize, f: impl Fn(&Event) -> bool) -> bool {
        self.events[i].iter().any(|(_, e)| f(e))
    }

    fn first(&self, i: usize, f: impl Fn(&Event) -> bool) -> Option<Duration> {
        self.events[i].iter().find(|(_, e)| f(e)).map(|(t, _)| *t)
    }

    /// Primary-side driver behaviour: answer SnapshotNeeded with the state so far.
    fn serve_snapshots(&mut self, i: usize, items: &[Change]) {
        let pending = self.events[i]
            .iter()
            .filter(|(_, e)| *e == Event::SnapshotNeeded)
            .count();
        let served = self.served[i];
        for _ in served..pending {
            let now = self.now;
            self.node(i)
                .replicate_snapshot(items.to_vec(), now)
                .unwrap();
        }
        self.served[i] = pending;
        self.pump();
    }
}

/// A clean link: 300 µs one way, nothing lost; `seed` for the rest of the net's randomness.
fn quiet_net(seed: u64) -> Net {
    Net::new(
        Impair {
            delay: Duration::from_micros(300),
            ..Default::default()
        },
        seed,
    )
}

fn cfg(id: u64, role: Role) -> Config {
    Config::new(id, role, KEY.to_vec(), id * 1000 + 1)
}

fn established(net: &mut Net) {
    established_with(net, cfg);
}

/// Primary (node 0) then backup (node 1), configured by `config`, synced.
fn established_with(net: &mut Net, config: impl Fn(u64, Role) -> Config) {
    net.start(0, config(1, Role::Primary));
    net.run_until(5 * MS);
    net.start(1, config(2, Role::Backup));
    net.run_until(60 * MS);
    net.serve_snapshots(0, &[Change::Dialog(b"s0".to_vec())]);
    net.run_until(80 * MS);
}

#[test]
fn handshake_primary_first() {
    let mut net = Net::new(Impair::default(), 1);
    established(&mut net);
    assert!(net.has(0, |e| *e == Event::RoleChanged(Role::Primary)));
    assert!(net.has(0, |e| matches!(
        e,
        Event::PeerAlive {
            node: 2,
            role: Role::Backup
        }
    )));
    assert!(net.has(1, |e| matches!(
        e,
        Event::PeerAlive {
            node: 1,
            role: Role::Primary
        }
    )));
    assert!(net.has(1, |e| matches!(e, Event::Apply(LogEntry::Snapshot { .. }))));
    assert_eq!(net.node(0).peer_state(), PeerState::Alive);
    assert_eq!(net.node(0).committed(), 1);
    assert_eq!(net.node(0).stats().dropped(), 0);
}

#[test]
fn handshake_backup_first() {
    let mut net = Net::new(Impair::default(), 2);
    net.start(1, cfg(2, Role::Backup));
    net.run_until(200 * MS);
    assert!(!net.has(1, |e| matches!(e, Event::Fatal(_))));
    net.start(0, cfg(1, Role::Primary));
    net.run_until(260 * MS);
    net.serve_snapshots(0, &[]);
    net.run_until(300 * MS);
    assert!(net.has(0, |e| *e == Event::RoleChanged(Role::Primary)));
    assert!(net.has(1, |e| matches!(e, Event::Apply(LogEntry::Snapshot { .. }))));
    assert!(!net.has(0, |e| matches!(e, Event::Fatal(_))));
    assert_eq!(net.node(1).role(), Role::Backup);
}

#[test]
fn failure_detected_within_30ms_and_backup_promoted() {
    let mut net = quiet_net(3);
    established(&mut net);
    net.run_until(500 * MS);
    assert!(!net.has(1, |e| *e == Event::PeerDead), "no false positive");
    // kill -9 the primary.
    net.dead[0] = true;
    let last_heartbeat = net.last_delivery[1].unwrap();
    net.run_until(700 * MS);
    let dead_at = net.first(1, |e| *e == Event::PeerDead).expect("PeerDead");
    let after = dead_at - last_heartbeat;
    assert!(
        after <= 30 * MS,
        "detected {after:?} after the last heartbeat"
    );
    assert!(after >= 20 * MS, "detected too early: {after:?}");
    let taking = net
        .first(1, |e| *e == Event::RoleChanged(Role::TakingOver))
        .expect("promotion");
    assert_eq!(taking, dead_at);
    assert_eq!(net.node(1).role(), Role::TakingOver);
    let now = net.now;
    net.node(1).complete_takeover(now).unwrap();
    net.pump();
    assert_eq!(net.node(1).role(), Role::Primary);
    // The new primary replicates (unprotected: committed at once).
    let i = net
        .node(1)
        .replicate(Change::RoomClosed { room: 1 }, now)
        .unwrap();
    assert!(net.node(1).is_committed(i));
}

#[test]
fn backup_heartbeats_lock_onto_the_primarys() {
    // A backup's cost is mostly its wake-ups: it answers each primary heartbeat with its own
    // instead of waking for a timer of its own, and still heartbeats alone when the primary
    // goes quiet.
    let mut net = Net::new(
        Impair {
            delay: Duration::from_micros(300),
            jitter: Duration::from_micros(400),
            ..Default::default()
        },
        5,
    );
    established(&mut net);
    net.run_until(200 * MS);
    let (p0, b0) = (net.timer_wakes[0], net.timer_wakes[1]);
    let heard_by_primary = net.node(0).stats().accepted;
    net.run_until(1_200 * MS);
    let (primary, backup) = (net.timer_wakes[0] - p0, net.timer_wakes[1] - b0);
    assert!(
        primary >= 95,
        "the primary's heartbeats: {primary} timer wake-ups in 1 s"
    );
    assert!(
        backup <= 2,
        "the backup woke {backup} times in 1 s for its own timer"
    );
    // ... and the primary still hears ~100 heartbeats a second from it.
    let heard = net.node(0).stats().accepted - heard_by_primary;
    assert!(
        (95..=105).contains(&heard),
        "primary heard {heard} datagrams in 1 s"
    );
    assert!(!net.has(0, |e| *e == Event::PeerDead) && !net.has(1, |e| *e == Event::PeerDead));
    // The primary dies: the backup's own timer takes over its heartbeats and its detector.
    net.dead[0] = true;
    let before = net.timer_wakes[1];
    net.run_until(1_400 * MS);
    assert!(net.has(1, |e| *e == Event::PeerDead));
    assert!(net.timer_wakes[1] - before >= 2);
}

#[test]
fn a_backup_heartbeating_every_fourth_interval_keeps_its_primary_protected() {
    // A backup's heartbeats only tell the primary it is protected: sending a quarter of them
    // halves the backup's fixed cost, and the primary's detector waits as many more.
    let slow = |id, role| {
        let mut c = beacon_cfg(id, role);
        c.backup_heartbeats_every = 4;
        c
    };
    let mut net = Net::new(
        Impair {
            drop: 0.2,
            delay: Duration::from_micros(300),
            jitter: Duration::from_micros(400),
            ..Default::default()
        },
        11,
    );
    established_with(&mut net, slow);
    net.run_until(200 * MS);
    assert_eq!(net.node(1).peer_state(), PeerState::Alive);
    let heard_by_primary = net.node(0).stats().accepted;
    let backup_wakes = net.timer_wakes[1];
    net.run_until(1_200 * MS);
    // 25 a second, a fifth of them lost; the backup wakes for its own timer only when the
    // primary's heartbeat it would have answered was lost (about 5 of 25 a second).
    let heard = net.node(0).stats().accepted - heard_by_primary;
    assert!((12..=30).contains(&heard), "primary heard {heard} in 1 s");
    let wakes = net.timer_wakes[1] - backup_wakes;
    assert!(
        wakes <= 10,
        "the backup woke {wakes} times for its own timer"
    );
    // Replication is acknowledged as it arrives, not with the slower heartbeats.
    assert!(
        committed_within(&mut net, 25 * MS),
        "entry not acknowledged in 25 ms"
    );
    // 10 s of a 20 % lossy sync link: neither node declares the other dead.
    net.run_until(11_200 * MS);
    assert!(no_failure(&net), "a false failure on a 20 % lossy link");
    // The backup dies: the primary declares it dead after 3 x 3 of its heartbeats.
    net.dead[1] = true;
    let last = net.last_delivery[0].unwrap();
    net.run_until(12_000 * MS);
    let dead_at = net
        .first(0, |e| *e == Event::PeerDead)
        .expect("backup declared dead");
    let after = dead_at - last;
    assert!(
        (300 * MS..=360 * MS).contains(&after),
        "backup declared dead {after:?} after its last message"
    );
}

#[test]
fn a_slow_heartbeating_backup_detects_its_primary_as_fast() {
    let mut net = quiet_net(12);
    let slow = |id, role| {
        let mut c = cfg(id, role);
        c.backup_heartbeats_every = 4;
        c.primary_patience = 3;
        c
    };
    established_with(&mut net, slow);
    net.run_until(500 * MS);
    net.dead[0] = true;
    let last = net.last_delivery[1].unwrap();
    net.run_until(700 * MS);
    let dead_at = net.first(1, |e| *e == Event::PeerDead).expect("PeerDead");
    let after = dead_at - last;
    assert!(
        (20 * MS..=30 * MS).contains(&after),
        "primary declared dead {after:?} after its last heartbeat"
    );
}

#[test]
fn heartbeat_loss_below_threshold_is_no_failure() {
    // 20 % loss: two heartbeats in a row lost is common, three in 30 ms rarely... but the
    // detector must not flap under 5 % loss over 10 s.
    let mut net = Net::new(
        Impair {
            drop: 0.05,
            delay: Duration::from_micros(200),
            jitter: Duration::from_micros(500),
            ..Default::default()
        },
        4,
    );
    established(&mut net);
    net.run_until(10_000 * MS);
    let flaps = net.events[1]
        .iter()
        .filter(|(_, e)| *e == Event::PeerDead)
        .count();
    assert!(flaps <= 1, "{flaps} false failures");
}

#[test]
fn second_primary_joins_the_serving_one_as_backup() {
    // The old primary restarted (same configuration) after its backup took over: it finds a
    // serving primary and becomes its backup instead of failing.
    let mut net = Net::new(Impair::default(), 5);
    net.start(0, cfg(1, Role::Primary));
    net.run_until(100 * MS);
    net.start(1, cfg(2, Role::Primary));
    net.run_until(200 * MS);
    net.serve_snapshots(0, &[Change::Dialog(b"joined".to_vec())]);
    net.run_until(250 * MS);
    assert!(!net.has(1, |e| matches!(e, Event::Fatal(_))));
    assert!(net.has(1, |e| *e == Event::RoleChanged(Role::Backup)));
    assert!(!net.has(1, |e| *e == Event::RoleChanged(Role::Primary)));
    assert_eq!(net.node(1).role(), Role::Backup);
    assert!(!net.has(0, |e| matches!(e, Event::Fatal(_))));
    assert_eq!(net.node(0).role(), Role::Primary);
    assert!(net.has(1, |e| matches!(
        e,
        Event::Apply(LogEntry::Snapshot { items, .. }) if items == &[Change::Dialog(b"joined".to_vec())]
    )));
    assert!(net
        .node(1)
        .replicate(Change::RoomClosed { room: 1 }, 250 * MS)
        .is_err());
    // It protects the primary: a held item commits only with its ack.
    let now = net.now;
    let i = net
        .node(0)
        .replicate(Change::RoomClosed { room: 2 }, now)
        .unwrap();
    assert!(!net.node(0).is_committed(i));
    net.run_until(net.now + 5 * MS);
    assert!(net.node(0).is_committed(i));
}

#[test]
fn two_primaries_started_together_both_refuse() {
    let mut net = Net::new(Impair::default(), 6);
    net.start(0, cfg(1, Role::Primary));
    net.start(1, cfg(2, Role::Primary));
    net.run_until(100 * MS);
    for i in 0..2 {
        assert!(
            net.has(i, |e| *e == Event::Fatal(Error::TwoPrimaries)),
            "node {i}"
        );
        assert!(
            !net.has(i, |e| *e == Event::RoleChanged(Role::Primary)),
            "node {i}"
        );
    }
}

#[test]
fn wrong_key_refused() {
    let mut net = Net::new(Impair::default(), 7);
    net.start(0, cfg(1, Role::Primary));
    net.run_until(100 * MS);
    let mut c = cfg(2, Role::Backup);
    c.key = b"another key".to_vec();
    net.start(1, c);
    net.run_until(200 * MS);
    assert!(
        net.has(1, |e| matches!(e, Event::Fatal(Error::KeyMismatch { .. }))),
        "{:?}",
        net.events[1]
    );
    // The running primary keeps serving and reports the misconfigured peer.
    assert!(net.has(0, |e| matches!(
        e,
        Event::PeerRejected(Error::KeyMismatch { .. })
    )));
    assert!(!net.has(0, |e| matches!(e, Event::Fatal(_))));
    assert!(net.node(0).stats().unauthenticated > 0);
    assert_eq!(net.node(0).peer_state(), PeerState::Unknown);
}

#[test]
fn wrong_version_refused() {
    use hmac::{Hmac, KeyInit, Mac};
    // A peer speaking the next version with the right key.
    let theirs = ft_sync::PROTOCOL_VERSION + 1;
    let mut backup = Node::new(cfg(2, Role::Backup), Duration::ZERO);
    let mut primary = Node::new(cfg(1, Role::Primary), Duration::ZERO);
    let mut d = primary.poll_transmit().unwrap();
    let n = d.len() - 32;
    d[4..6].copy_from_slice(&theirs.to_be_bytes());
    let mut m = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(KEY).unwrap();
    m.update(&d[..n]);
    let tag = m.finalize().into_bytes();
    d[n..].copy_from_slice(&tag);
    backup.handle_datagram(&d, MS);
    assert_eq!(backup.stats().wrong_version, 1);
    let mut events = Vec::new();
    while let Some(e) = backup.poll_event() {
        events.push(e);
    }
    assert!(events.contains(&Event::Fatal(Error::VersionMismatch {
        ours: ft_sync::PROTOCOL_VERSION,
        theirs
    })));
}

#[test]
fn tampered_message_dropped_and_counted() {
    let mut net = Net::new(Impair::default(), 8);
    established(&mut net);
    let now = net.now;
    let i = net
        .node(0)
        .replicate(Change::Dialog(b"dialog".to_vec()), now)
        .unwrap();
    let d = net.node(0).poll_transmit().unwrap();
    let mut tampered = d.clone();
    let k = d.len() / 2;
    tampered[k] ^= 0x40;
    let before = net.events[1].len();
    net.node(1).handle_datagram(&tampered, now);
    net.pump();
    assert_eq!(net.node(1).stats().unauthenticated, 1);
    assert_eq!(
        net.events[1].len(),
        before,
        "no event from a tampered message"
    );
    // The genuine datagram is accepted once; a replay of it is dropped and counted.
    net.node(1).handle_datagram(&d, now);
    let replayed = net.node(1).stats().replayed;
    net.node(1).handle_datagram(&d, now);
    assert_eq!(net.node(1).stats().replayed, replayed + 1);
    net.pump();
    let applies = net.events[1]
        .iter()
        .filter(|(_, e)| matches!(e, Event::Apply(LogEntry::Item { .. })))
        .count();
    assert_eq!(applies, 1);
    net.run_until(net.now + 100 * MS);
    assert!(net.node(0).is_committed(i));
}

#[test]
fn replication_and_commit_over_a_bad_link() {
    let mut net = Net::new(
        Impair {
            drop: 0.2,
            corrupt: 0.05,
            duplicate: 0.05,
            delay: Duration::from_micros(500),
            jitter: Duration::from_millis(4),
        },
        9,
    );
    // 20 % loss would trip the 30 ms detector now and then (three heartbeats in a row lost):
    // this test is about the log, so the detector is lenient here.
    let lenient = |mut c: Config| {
        c.missed_heartbeats = 20;
        c
    };
    net.start(0, lenient(cfg(1, Role::Primary)));
    net.start(1, lenient(cfg(2, Role::Backup)));
    net.run_until(300 * MS);
    net.serve_snapshots(0, &[Change::Dialog(b"base".to_vec())]);
    let mut indices = Vec::new();
    for k in 0..300u64 {
        let now = net.now;
        let item = Change::Counter(k);
        let i = net.node(0).replicate(item, now).unwrap();
        // Output commit: not before the backup acknowledged.
        assert!(!net.node(0).is_committed(i));
        indices.push(i);
        net.pump();
        net.run_until(net.now + 2 * MS);
    }
    net.run_until(net.now + 2000 * MS);
    let last = *indices.last().unwrap();
    assert!(net.node(0).is_committed(last));
    assert_eq!(net.node(0).committed(), last);
    assert!(net.has(0, |e| *e == Event::Committed(last)));
    // The backup applied the snapshot then every entry, in order, each once.
    let applied: Vec<LogEntry> = net.events[1]
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Apply(a) => Some(a.clone()),
            _ => None,
        })
        .collect();
    assert!(matches!(applied[0], LogEntry::Snapshot { index: 1, .. }));
    let items: Vec<u64> = applied[1..]
        .iter()
        .map(|a| match a {
            LogEntry::Item {
                item: Change::Counter(k),
                ..
            } => *k,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(items, (0..300).collect::<Vec<_>>());
    let s = net.node(1).stats().clone();
    assert!(s.unauthenticated > 0 && s.replayed > 0, "{s:?}");
    assert!(!net.has(1, |e| *e == Event::PeerDead));
}

#[test]
fn dead_backup_releases_held_messages() {
    let mut net = Net::new(Impair::default(), 10);
    established(&mut net);
    net.dead[1] = true;
    let now = net.now;
    let i = net
        .node(0)
        .replicate(Change::RoomClosed { room: 3 }, now)
        .unwrap();
    assert!(!net.node(0).is_committed(i));
    net.run_until(net.now + 40 * MS);
    assert!(net.has(0, |e| *e == Event::PeerDead));
    assert!(
        net.node(0).is_committed(i),
        "unprotected: nothing to wait for"
    );
    assert!(net.has(0, |e| *e == Event::Committed(i)));
}

#[test]
fn stalled_primary_yields_to_the_backup_that_took_over() {
    let mut net = Net::new(Impair::default(), 11);
    established(&mut net);
    net.run_until(300 * MS);
    // The primary freezes (SIGSTOP, a VM pause): silent, deaf, no timers.
    net.dead[0] = true;
    net.run_until(400 * MS);
    assert_eq!(net.node(1).role(), Role::TakingOver);
    let now = net.now;
    net.node(1).complete_takeover(now).unwrap();
    net.pump();
    net.run_until(450 * MS);
    // It wakes up and hears the new primary: it must stop, the new one keeps serving.
    net.dead[0] = false;
    net.run_until(600 * MS);
    assert!(
        net.has(0, |e| *e == Event::Fatal(Error::TakenOver)),
        "the stalled primary yields"
    );
    assert!(!net.has(1, |e| matches!(e, Event::Fatal(_))));
    assert_eq!(net.node(1).role(), Role::Primary);
    let now = net.now;
    let i = net
        .node(1)
        .replicate(Change::RoomClosed { room: 1 }, now)
        .unwrap();
    assert!(net.node(1).is_committed(i));
}

/// A primary past its startup probe, alone on the link (unprotected).
fn lone_primary<T: ft_sync::Item>() -> ft_sync::Node<T> {
    let mut p = ft_sync::Node::new(cfg(1, Role::Primary), Duration::ZERO);
    p.handle_timeout(100 * MS);
    assert_eq!(p.role(), Role::Primary);
    assert!(!p.is_starting());
    p
}

#[test]
fn oversized_item_refused_without_taking_an_index() {
    let mut p: Node = lone_primary();
    let big = Change::Dialog(vec![0; ft_sync::MAX_DATAGRAM]);
    assert!(matches!(
        p.replicate(big.clone(), 100 * MS),
        Err(Error::TooLarge { len, max: ft_sync::MAX_DATAGRAM }) if len > ft_sync::MAX_DATAGRAM
    ));
    assert!(matches!(
        p.replicate_snapshot(vec![big], 100 * MS),
        Err(Error::TooLarge { .. })
    ));
    assert_eq!(p.replicate(Change::Counter(1), 100 * MS), Ok(1));
}

#[test]
fn item_that_does_not_serialize_is_refused() {
    /// An application type whose `Serialize` fails.
    #[derive(Clone, Debug)]
    struct Broken;
    impl Serialize for Broken {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("broken"))
        }
    }
    impl<'de> Deserialize<'de> for Broken {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            <()>::deserialize(d).map(|()| Broken)
        }
    }
    let mut p: ft_sync::Node<Broken> = lone_primary();
    assert!(matches!(
        p.replicate(Broken, 100 * MS),
        Err(Error::Encode(_))
    ));
    assert!(matches!(
        p.replicate_snapshot(vec![Broken], 100 * MS),
        Err(Error::Encode(_))
    ));
    assert!(matches!(
        p.poll_event(),
        Some(ft_sync::Event::RoleChanged(Role::Primary))
    ));
    assert!(p.poll_event().is_none(), "nothing was logged");
}

fn beacon_cfg(id: u64, role: Role) -> Config {
    let mut c = cfg(id, role);
    c.client_path_beacons = true;
    c.primary_patience = 3;
    c
}

/// Primary (node 0) then backup (node 1), both with client-path beacons, synced.
fn established_with_beacons(net: &mut Net) {
    established_with(net, beacon_cfg);
    assert_eq!(net.node(1).peer_state(), PeerState::Alive);
}

/// Items the backup applied after its snapshot, in order.
fn applied_counters(net: &Net) -> Vec<u64> {
    net.events[1]
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Apply(LogEntry::Item {
                item: Change::Counter(c),
                ..
            }) => Some(*c),
            _ => None,
        })
        .collect()
}

#[test]
fn partition_is_no_takeover_and_heals_by_resending() {
    let mut net = quiet_net(21);
    established_with_beacons(&mut net);
    net.run_until(300 * MS);
    let snapshots_before = net.events[0]
        .iter()
        .filter(|(_, e)| *e == Event::SnapshotNeeded)
        .count();
    // The sync link is cut for 3 s; the primary serves on and replicates 40 changes.
    net.cut = true;
    let mut held = vec![];
    for c in 0..40u64 {
        net.run_until(net.now + 75 * MS);
        let now = net.now;
        held.push(net.node(0).replicate(Change::Counter(c), now).unwrap());
    }
    net.run_until(3300 * MS);
    assert!(
        net.beacons_delivered[1] > 250,
        "{:?}",
        net.beacons_delivered
    );
    assert!(
        !net.has(1, |e| *e == Event::PeerDead
            || *e == Event::RoleChanged(Role::TakingOver)),
        "the backup took over a primary whose beacons arrive"
    );
    assert_eq!(net.node(1).role(), Role::Backup);
    assert_eq!(net.node(1).peer_state(), PeerState::SyncLost);
    assert!(net.has(1, |e| *e == Event::SyncLost));
    // The primary runs unprotected: nothing waits for the silent backup.
    assert!(net.has(0, |e| *e == Event::PeerDead));
    assert!(held.iter().all(|i| net.node(0).is_committed(*i)));
    assert!(applied_counters(&net).is_empty());
    // Healed: the backup gets the 40 changes by retransmission, in order, no snapshot.
    net.cut = false;
    let healed = net.now;
    net.run_until(healed + 400 * MS);
    assert_eq!(applied_counters(&net), (0..40).collect::<Vec<_>>());
    assert_eq!(net.node(1).peer_state(), PeerState::Alive);
    assert_eq!(net.node(0).peer_state(), PeerState::Alive);
    assert_eq!(net.node(0).committed(), *held.last().unwrap());
    let snapshots_after = net.events[0]
        .iter()
        .filter(|(_, e)| *e == Event::SnapshotNeeded)
        .count();
    assert_eq!(
        snapshots_before, snapshots_after,
        "resent, not resnapshotted"
    );
    // Protected again: a new change waits for the backup's ack.
    let now = net.now;
    let i = net.node(0).replicate(Change::Counter(99), now).unwrap();
    assert!(!net.node(0).is_committed(i));
    net.run_until(net.now + 5 * MS);
    assert!(net.node(0).is_committed(i));
}

#[test]
fn long_partition_heals_with_a_snapshot() {
    let mut net = Net::new(Impair::default(), 22);
    established_with_beacons(&mut net);
    net.cut = true;
    net.run_until(200 * MS);
    for c in 0..300u64 {
        let now = net.now;
        net.node(0).replicate(Change::Counter(c), now).unwrap();
    }
    net.run_until(400 * MS);
    net.cut = false;
    net.run_until(450 * MS);
    let needed = net.events[0]
        .iter()
        .filter(|(_, e)| *e == Event::SnapshotNeeded)
        .count();
    assert_eq!(needed, 2, "a second snapshot after 300 unsent entries");
    net.serve_snapshots(0, &[Change::Dialog(b"s1".to_vec())]);
    net.run_until(500 * MS);
    assert!(net.has(1, |e| matches!(
        e,
        Event::Apply(LogEntry::Snapshot { items, .. }) if items == &[Change::Dialog(b"s1".to_vec())]
    )));
    assert_eq!(net.node(1).role(), Role::Backup);
}

#[test]
fn death_with_beacons_detected_as_fast_and_during_a_partition() {
    for during_partition in [false, true] {
        let mut net = quiet_net(23);
        established_with_beacons(&mut net);
        if during_partition {
            net.cut = true;
            net.run_until(1000 * MS);
            assert_eq!(net.node(1).peer_state(), PeerState::SyncLost);
        } else {
            net.run_until(500 * MS);
        }
        let beacons = net.beacons_delivered[1];
        net.dead[0] = true;
        let killed = net.now;
        net.run_until(killed + 200 * MS);
        assert_eq!(net.beacons_delivered[1], beacons);
        let dead_at = net.first(1, |e| *e == Event::PeerDead).expect("PeerDead");
        let after = dead_at - killed;
        assert!(
            after <= 31 * MS && after >= 19 * MS,
            "partition {during_partition}: detected {after:?} after the kill"
        );
        assert_eq!(net.node(1).role(), Role::TakingOver);
        // A kill is not reported as a partition.
        assert_eq!(net.has(1, |e| *e == Event::SyncLost), during_partition);
    }
}

/// Node 0 replicates an item now: is it committed within `within`?
fn committed_within(net: &mut Net, within: Duration) -> bool {
    let now = net.now;
    let i = net.node(0).replicate(Change::Counter(1), now).unwrap();
    net.run_until(now + within);
    net.node(0).is_committed(i)
}

/// Neither node declared the other dead.
fn no_failure(net: &Net) -> bool {
    !net.has(0, |e| *e == Event::PeerDead) && !net.has(1, |e| *e == Event::PeerDead)
}

/// mcu's configuration: beacons, a backup heartbeating every 4th interval, the primary's
/// heartbeats on their own path.
fn heartbeat_path_cfg(id: u64, role: Role) -> Config {
    let mut c = beacon_cfg(id, role);
    c.backup_heartbeats_every = 4;
    c.heartbeat_channel = true;
    c
}

#[test]
fn a_backup_reading_heartbeats_when_it_wakes_detects_as_fast_and_wakes_less() {
    // Issue 10 point 9: a backup woken by each of its primary's heartbeats wakes 100 times a
    // second; reading them from their own path when its detector's deadline (or anything
    // else) wakes it, it wakes about 40 times, and detects a death as fast.
    let mut net = Net::new(
        Impair {
            delay: Duration::from_micros(300),
            jitter: Duration::from_micros(400),
            ..Default::default()
        },
        31,
    );
    established_with(&mut net, heartbeat_path_cfg);
    net.run_until(200 * MS);
    assert_eq!(net.node(1).peer_state(), PeerState::Alive);
    let (wakes, heartbeats) = (net.wakes[1], net.heartbeats_arrived[1]);
    let heard_by_primary = net.node(0).stats().accepted;
    net.run_until(1_200 * MS);
    let heartbeats = net.heartbeats_arrived[1] - heartbeats;
    let wakes = net.wakes[1] - wakes;
    assert!(
        (95..=105).contains(&heartbeats),
        "{heartbeats} heartbeats arrived in 1 s"
    );
    assert!(
        (30..=55).contains(&wakes),
        "the backup woke {wakes} times in 1 s"
    );
    // Its own heartbeats ride on those wake-ups: between every 20 and 40 ms.
    let heard = net.node(0).stats().accepted - heard_by_primary;
    eprintln!(
        "in 1 s: {heartbeats} heartbeats arrived, the backup woke {wakes} times, sent {heard}"
    );
    assert!((25..=50).contains(&heard), "primary heard {heard} in 1 s");
    // Replication wakes it at once.
    assert!(
        committed_within(&mut net, 2 * MS),
        "entry not acknowledged in 2 ms"
    );
    net.run_until(11_200 * MS);
    assert!(no_failure(&net), "a false failure");
    assert_eq!(
        net.node(1).stats().replayed,
        0,
        "heartbeats read late are no replays"
    );
    // kill -9: detected as fast as by a backup woken by every heartbeat.
    net.dead[0] = true;
    let killed = net.now;
    net.run_until(killed + 200 * MS);
    let dead_at = net.first(1, |e| *e == Event::PeerDead).expect("PeerDead");
    let after = dead_at - killed;
    assert!(
        (19 * MS..=31 * MS).contains(&after),
        "detected {after:?} after the kill"
    );
    assert_eq!(net.node(1).role(), Role::TakingOver);
}

#[test]
fn a_link_healing_one_way_first_protects_the_pair_within_a_round_trip() {
    // A partition long enough for the primary to declare its backup dead, healed in the
    // primary-to-backup direction 20 ms before the other (two firewall rules removed one
    // after the other): the backup hears the primary first and, heartbeating only every 40
    // ms once it does, would leave the pair unprotected that long after the full healing.
    // It answers the primary's Hello instead.
    let mut net = quiet_net(33);
    established_with(&mut net, heartbeat_path_cfg);
    net.run_until(300 * MS);
    net.cut = true;
    net.run_until(1_300 * MS);
    assert!(
        net.has(0, |e| *e == Event::PeerDead),
        "the primary declared its backup dead"
    );
    assert_eq!(net.node(1).peer_state(), PeerState::SyncLost);
    let alive_before = net.events[0]
        .iter()
        .filter(|(_, e)| matches!(e, Event::PeerAlive { .. }))
        .count();
    net.cut = false;
    net.cut_from[1] = true;
    net.run_until(1_320 * MS);
    net.cut_from[1] = false;
    let healed = net.now;
    net.run_until(1_500 * MS);
    let alive_again = net.events[0]
        .iter()
        .filter(|(_, e)| matches!(e, Event::PeerAlive { .. }))
        .nth(alive_before)
        .map(|(t, _)| *t)
        .expect("the primary hears its backup again");
    assert!(
        alive_again - healed <= 12 * MS,
        "the primary heard its backup {:?} after the healing",
        alive_again - healed
    );
    assert_eq!(net.node(1).role(), Role::Backup);
}

#[test]
fn a_lossy_link_with_the_heartbeat_path_is_never_taken_over() {
    // 20 % loss on the sync link (the heartbeat path is the same wire) for 10 s, beacons
    // arriving: no false failure on either side, and what is replicated arrives.
    let mut net = Net::new(
        Impair {
            drop: 0.2,
            delay: Duration::from_micros(300),
            jitter: Duration::from_micros(400),
            ..Default::default()
        },
        32,
    );
    established_with(&mut net, heartbeat_path_cfg);
    for k in 0..100u64 {
        let now = net.now;
        net.node(0).replicate(Change::Counter(k), now).unwrap();
        net.run_until(now + 100 * MS);
    }
    net.run_until(net.now + 200 * MS);
    assert!(no_failure(&net), "a false failure on a 20 % lossy link");
    assert_eq!(net.node(1).role(), Role::Backup);
    assert_eq!(applied_counters(&net), (0..100).collect::<Vec<_>>());
}

#[test]
fn replayed_or_forged_beacons_do_not_hold_off_the_takeover() {
    let mut net = Net::new(Impair::default(), 24);
    net.start(0, beacon_cfg(1, Role::Primary));
    net.run_until(5 * MS);
    net.start(1, beacon_cfg(2, Role::Backup));
    net.run_until(60 * MS);
    net.serve_snapshots(0, &[Change::Dialog(b"s0".to_vec())]);
    net.run_until(100 * MS);
    // Capture one real beacon, and forge one with another key.
    let captured = net.node(0).poll_beacon();
    net.run_until(111 * MS);
    let captured = captured
        .or_else(|| net.node(0).poll_beacon())
        .unwrap_or_default();
    let mut other: Node = Node::new(beacon_cfg(1, Role::Primary), Duration::ZERO);
    other.handle_timeout(40 * MS);
    other.handle_timeout(50 * MS);
    let forged = other.poll_beacon().expect("a beacon from the forger");
    let refused_before = net.node(1).stats().beacons_refused;
    net.dead[0] = true;
    let killed = net.now;
    // An attacker on the clients' path replays and forges every millisecond.
    while net.now < killed + 100 * MS {
        let now = net.now;
        net.node(1).handle_beacon(&captured, now);
        net.node(1).handle_beacon(&forged, now);
        net.node(1).handle_beacon(b"garbage", now);
        net.run_until(now + MS);
    }
    let dead_at = net.first(1, |e| *e == Event::PeerDead).expect("PeerDead");
    assert!(dead_at - killed <= 31 * MS, "{:?}", dead_at - killed);
    assert!(net.node(1).stats().beacons_refused >= refused_before + 250);
}

#[test]
fn lossy_sync_link_with_beacons_never_taken_over() {
    // 20 % random loss on the sync link (both ways) for 10 virtual minutes: the one-path
    // detector would fire about every second; with the beacons it never may.
    let mut net = Net::new(
        Impair {
            drop: 0.2,
            delay: Duration::from_micros(200),
            jitter: Duration::from_micros(300),
            ..Default::default()
        },
        25,
    );
    established_with_beacons(&mut net);
    let mut c = 0u64;
    while net.now < 600_000 * MS {
        let until = net.now + 100 * MS;
        net.run_until(until);
        net.serve_snapshots(0, &[Change::Dialog(b"again".to_vec())]);
        let now = net.now;
        net.node(0).replicate(Change::Counter(c), now).unwrap();
        c += 1;
    }
    net.run_until(net.now + 2000 * MS);
    assert!(!net.has(1, |e| *e == Event::PeerDead
        || *e == Event::RoleChanged(Role::TakingOver)));
    let flaps = net.events[0]
        .iter()
        .filter(|(_, e)| *e == Event::PeerDead)
        .count();
    // Every change reached the backup (resent after the primary's detector flapped).
    let applied = applied_counters(&net);
    let last = applied.last().copied();
    let partitions = net.events[1]
        .iter()
        .filter(|(_, e)| *e == Event::SyncLost)
        .count();
    eprintln!(
        "{flaps} primary-side flaps, {partitions} partitions reported, {c} changes, last applied {last:?}"
    );
    assert_eq!(last, Some(c - 1));
    // Patience: at 20 % loss, 9 heartbeats in a row are lost about once an hour.
    assert!(flaps <= 5, "{flaps} primary-side flaps in 10 minutes");
    assert!(
        partitions <= 5,
        "{partitions} partitions reported in 10 minutes"
    );
}

#[test]
fn beacons_and_sync_messages_do_not_authenticate_on_each_others_path() {
    // A beacon captured on the clients' segment and replayed to the sync port must not
    // count as a heartbeat (it would hold off a takeover), nor a sync message as a beacon.
    let mut primary: Node = Node::new(beacon_cfg(1, Role::Primary), Duration::ZERO);
    let mut backup: Node = Node::new(beacon_cfg(2, Role::Backup), Duration::ZERO);
    let mut now = Duration::ZERO;
    let mut beacons = vec![];
    let mut syncs = vec![];
    for _ in 0..30 {
        while let Some(d) = primary.poll_transmit() {
            syncs.push(d.clone());
            backup.handle_datagram(&d, now);
        }
        while let Some(d) = backup.poll_transmit() {
            primary.handle_datagram(&d, now);
        }
        while let Some(b) = primary.poll_beacon() {
            beacons.push(b);
        }
        while primary.poll_event().is_some() {}
        while backup.poll_event().is_some() {}
        now += 5 * MS;
        primary.handle_timeout(now);
        backup.handle_timeout(now);
    }
    assert!(beacons.len() > 5 && syncs.len() > 5);
    let (acc, unauth) = (backup.stats().accepted, backup.stats().unauthenticated);
    for b in &beacons {
        backup.handle_datagram(b, now);
    }
    assert_eq!(backup.stats().accepted, acc);
    assert_eq!(
        backup.stats().unauthenticated,
        unauth + beacons.len() as u64
    );
    let (ok, refused) = (backup.stats().beacons, backup.stats().beacons_refused);
    for d in &syncs {
        backup.handle_beacon(d, now);
    }
    assert_eq!(backup.stats().beacons, ok);
    assert_eq!(backup.stats().beacons_refused, refused + syncs.len() as u64);
    // Positive control: a fresh beacon is accepted.
    primary.handle_timeout(now + 10 * MS);
    let b = primary.poll_beacon().expect("a beacon");
    backup.handle_beacon(&b, now + 10 * MS);
    assert_eq!(backup.stats().beacons, ok + 1);
}

// ---- planned switchover (issue 11: POST /api/failover) ----

/// What the backup applied, as (index, item) pairs, in order.
fn applied_items(net: &Net, i: usize) -> Vec<Change> {
    let mut out = Vec::new();
    for (_, e) in &net.events[i] {
        match e {
            Event::Apply(ft_sync::LogEntry::Snapshot { items, .. }) => out = items.clone(),
            Event::Apply(ft_sync::LogEntry::Item { item, .. }) => out.push(item.clone()),
            _ => {}
        }
    }
    out
}

#[test]
fn handover_promotes_the_backup_at_once_and_the_old_primary_yields() {
    let mut net = Net::new(Impair::default(), 40);
    established(&mut net);
    net.run_until(300 * MS);
    let now = net.now;
    let last = net
        .node(0)
        .replicate(Change::RoomClosed { room: 9 }, now)
        .unwrap();
    // At once: the backup waits for the entry, then takes over.
    let asked = net.now;
    assert_eq!(net.node(0).hand_over(asked), Ok(last));
    net.pump();
    assert!(net.node(0).is_handing_over());
    // The primary decides nothing more.
    assert_eq!(
        net.node(0)
            .replicate(Change::RoomClosed { room: 10 }, asked),
        Err(Error::HandingOver)
    );
    net.run_until(asked + 2 * MS);
    // One link delay (1 ms here), no failure detection.
    let promoted = net
        .first(1, |e| *e == Event::RoleChanged(Role::TakingOver))
        .expect("the backup takes over");
    assert!(promoted - asked <= 2 * MS, "{:?}", promoted - asked);
    assert_eq!(
        applied_items(&net, 1).last(),
        Some(&Change::RoomClosed { room: 9 }),
        "everything up to the handover point applied first"
    );
    let now = net.now;
    net.node(1).complete_takeover(now).unwrap();
    net.pump();
    net.run_until(now + 30 * MS);
    assert!(
        net.has(0, |e| *e == Event::Fatal(Error::HandedOver)),
        "the old primary stops once it hears the new one: {:?}",
        net.events[0]
    );
    assert!(!net.has(1, |e| matches!(e, Event::Fatal(_))));
    assert!(!net.has(0, |e| *e == Event::HandoverAborted));
    assert_eq!(net.node(1).role(), Role::Primary);
}

#[test]
fn handover_is_repeated_over_a_lossy_link() {
    let mut net = Net::new(Impair::default(), 41);
    // Beacons: the loss never looks like a death (only the handover promotes).
    established_with_beacons(&mut net);
    net.run_until(300 * MS);
    // The last entry and the handover cross a link losing most messages: the entry is
    // resent, the handover repeated every interval, and the backup takes over only with
    // the entry applied.
    net.impair.drop = 0.7;
    let asked = net.now;
    net.node(0)
        .replicate(Change::RoomClosed { room: 1 }, asked)
        .unwrap();
    let last = net.node(0).hand_over(asked).unwrap();
    net.run_until(asked + 200 * MS);
    assert!(
        net.has(1, |e| *e == Event::RoleChanged(Role::TakingOver)),
        "the handover is repeated until it lands"
    );
    assert!(net.node(1).applied() >= last);
    assert_eq!(
        applied_items(&net, 1).last(),
        Some(&Change::RoomClosed { room: 1 })
    );
}

#[test]
fn handover_to_a_dead_backup_is_aborted_and_the_primary_serves_on() {
    let mut net = Net::new(Impair::default(), 42);
    established(&mut net);
    net.run_until(300 * MS);
    let asked = net.now;
    net.node(0).hand_over(asked).unwrap();
    // The backup dies before the handover reaches it.
    net.dead[1] = true;
    net.run_until(asked + 200 * MS);
    assert!(net.has(0, |e| *e == Event::HandoverAborted));
    assert!(!net.node(0).is_handing_over());
    assert!(!net.has(0, |e| matches!(e, Event::Fatal(_))));
    assert_eq!(net.node(0).role(), Role::Primary);
    let now = net.now;
    assert!(net
        .node(0)
        .replicate(Change::RoomClosed { room: 2 }, now)
        .is_ok());
}

#[test]
fn handover_not_taken_in_time_is_aborted() {
    // One direction of the sync link fails just as the handover starts: the backup's
    // messages still reach the primary (its peer stays alive), the primary's do not reach the
    // backup (which holds on: the beacons over the clients' path say the primary serves). The
    // primary gives up after HANDOVER_TIMEOUT intervals and serves on, still the only sender.
    let mut net = Net::new(Impair::default(), 43);
    established_with_beacons(&mut net);
    net.run_until(300 * MS);
    let asked = net.now;
    net.node(0).hand_over(asked).unwrap();
    net.cut_from[0] = true;
    net.pump();
    net.run_until(asked + 200 * MS);
    assert!(!net.has(0, |e| *e == Event::HandoverAborted), "not yet");
    assert_eq!(net.node(0).peer_state(), PeerState::Alive);
    net.run_until(asked + 300 * MS);
    assert!(net.has(0, |e| *e == Event::HandoverAborted));
    assert!(!net.node(0).is_handing_over());
    assert!(!net.has(1, |e| *e == Event::RoleChanged(Role::TakingOver)));
    assert_eq!(net.node(1).role(), Role::Backup);
    // The link heals: the pair is as before, and a second handover works.
    net.cut_from[0] = false;
    net.run_until(asked + 400 * MS);
    let again = net.now;
    net.node(0).hand_over(again).unwrap();
    net.pump();
    net.run_until(again + 5 * MS);
    assert!(net.has(1, |e| *e == Event::RoleChanged(Role::TakingOver)));
}

#[test]
fn handover_refused_without_a_synced_backup() {
    let mut p: Node = lone_primary();
    assert_eq!(p.hand_over(200 * MS), Err(Error::NoStandby));
    let mut b: Node = Node::new(cfg(2, Role::Backup), Duration::ZERO);
    assert_eq!(b.hand_over(MS), Err(Error::NotPrimary));
}

/// A loaded host's network path stalls now and then (packet processing deferred): with
/// `max_stretch`, a backup that survived a stall waits that much longer before declaring
/// its primary dead, for 10 s; without it (the default), the same stall is a takeover.
#[test]
fn a_backup_that_saw_its_primary_stall_waits_longer_for_10_s() {
    for stretch in [Duration::ZERO, 40 * MS] {
        let mut net = quiet_net(31);
        net.start(0, beacon_cfg(1, Role::Primary));
        net.run_until(5 * MS);
        let mut c = beacon_cfg(2, Role::Backup);
        c.max_stretch = stretch;
        net.start(1, c);
        net.run_until(60 * MS);
        net.serve_snapshots(0, &[Change::Dialog(b"s0".to_vec())]);
        net.run_until(500 * MS);
        let quiet = net.node(1).recent_max_silence();
        assert!(quiet <= 11 * MS, "{quiet:?}");
        assert_eq!(net.node(1).dead_after_stretch(), Duration::ZERO);

        // A 25 ms stall: below the 30 ms dead interval either way.
        net.stall(25 * MS);
        assert!(!net.has(1, |e| *e == Event::PeerDead));
        let seen = net.node(1).recent_max_silence();
        assert!(seen >= 25 * MS && seen < 26 * MS, "{seen:?}");
        assert_eq!(
            net.node(1).dead_after_stretch(),
            (seen - 10 * MS).min(stretch)
        );
        net.run_until(net.now + 1000 * MS);

        // A 38 ms stall: a takeover unless stretched (30 + 15 ms).
        net.stall(38 * MS);
        let dead = net.has(1, |e| *e == Event::PeerDead);
        assert_eq!(dead, stretch.is_zero(), "stretch {stretch:?}");
        if dead {
            continue;
        }
        assert_eq!(net.node(1).peer_state(), PeerState::Alive);

        // A real death now: detected after 30 ms + the stretch (38 - 10 = 28 ms).
        net.run_until(net.now + 500 * MS);
        net.dead[0] = true;
        let last = net.last_arrival.unwrap();
        net.run_until(net.now + 200 * MS);
        let after = net.first(1, |e| *e == Event::PeerDead).unwrap() - last;
        assert!(
            after >= 57 * MS && after <= 59 * MS,
            "detected after {after:?}"
        );

        // Ten quiet seconds later the stretch is gone: 30 ms again.
        let mut net2 = quiet_net(32);
        net2.start(0, beacon_cfg(1, Role::Primary));
        net2.run_until(5 * MS);
        let mut c = beacon_cfg(2, Role::Backup);
        c.max_stretch = stretch;
        net2.start(1, c);
        net2.run_until(60 * MS);
        net2.serve_snapshots(0, &[Change::Dialog(b"s0".to_vec())]);
        net2.run_until(500 * MS);
        net2.stall(28 * MS);
        net2.run_until(net2.now + 11_000 * MS);
        assert_eq!(net2.node(1).dead_after_stretch(), Duration::ZERO);
        net2.dead[0] = true;
        let last = net2.last_arrival.unwrap();
        net2.run_until(net2.now + 200 * MS);
        let after = net2.first(1, |e| *e == Event::PeerDead).unwrap() - last;
        assert!(after <= 31 * MS, "detected after {after:?}");
    }
}
