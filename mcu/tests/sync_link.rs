//! The sync-link driver on loopback: two `SyncLink`s (primary and backup threads, real UDP
//! sockets), driven only through commands and events. Every wait is on an event, with a
//! deadline.

use ft_sync::{Config, Event, LogEntry, Node, PeerState, Role};
use mcu::sync_link::{SyncCommand, SyncEvent, SyncLink};
use serde::{Deserialize, Serialize};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The test's replicated schema (the server's own lives in its crate).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Change {
    Header { version: u16 },
    Call { id: u64 },
    Room { id: u64 },
}

type Link = SyncLink<Change>;
type Ev = SyncEvent<Change>;

const KEY: &[u8] = b"sync link test key";
const DEADLINE: Duration = Duration::from_secs(3);

fn config(id: u64, role: Role, heartbeat: Duration) -> Config {
    let mut c = Config::new(id, role, KEY.to_vec(), id * 1000 + 7);
    c.heartbeat_interval = heartbeat;
    c
}

fn bind() -> (UdpSocket, SocketAddr) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let a = s.local_addr().unwrap();
    (s, a)
}

fn link(sock: UdpSocket, peer: SocketAddr, id: u64, role: Role, heartbeat: Duration) -> Link {
    SyncLink::start_with_socket(
        sock,
        peer,
        Node::new(config(id, role, heartbeat), Duration::ZERO),
    )
    .unwrap()
}

/// A primary and a backup on loopback, 10 ms heartbeats unless told.
fn pair(heartbeat: Duration) -> (Link, Link) {
    let (ps, pa) = bind();
    let (bs, ba) = bind();
    (
        link(ps, ba, 1, Role::Primary, heartbeat),
        link(bs, pa, 2, Role::Backup, heartbeat),
    )
}

/// Events up to (and including) the first that `f` accepts; panics at the deadline.
async fn until(link: &mut Link, what: &str, f: impl Fn(&Ev) -> bool) -> Vec<Ev> {
    let mut seen = Vec::new();
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(end, link.recv()).await {
            Ok(Some(e)) => {
                let done = f(&e);
                seen.push(e);
                if done {
                    return seen;
                }
            }
            Ok(None) => panic!("link closed waiting for {what}; saw {seen:?}"),
            Err(_) => panic!("no {what} within {DEADLINE:?}; saw {seen:?}"),
        }
    }
}

fn committed(seq: u64) -> impl Fn(&Ev) -> bool {
    move |e| matches!(e, SyncEvent::Committed { seq: s } if *s >= seq)
}

/// Handshake, then the primary answers SnapshotNeeded with a three-item state (seq 1).
async fn established(heartbeat: Duration) -> (Link, Link) {
    let (mut primary, mut backup) = pair(heartbeat);
    until(&mut primary, "SnapshotNeeded", |e| {
        matches!(e, SyncEvent::Node(Event::SnapshotNeeded))
    })
    .await;
    primary.send(SyncCommand::Snapshot {
        seq: 1,
        items: vec![
            Change::Header { version: 1 },
            Change::Call { id: 10 },
            Change::Room { id: 20 },
        ],
    });
    let applied = until(&mut backup, "the snapshot's last item", |e| {
        matches!(
            e,
            SyncEvent::Node(Event::Apply(LogEntry::Item {
                item: Change::Room { id: 20 },
                ..
            }))
        )
    })
    .await;
    let applied: Vec<_> = applied
        .into_iter()
        .filter_map(|e| match e {
            SyncEvent::Node(Event::Apply(a)) => Some(a),
            _ => None,
        })
        .collect();
    // One datagram per item: the snapshot entry holds the first, the others follow.
    assert_eq!(
        applied,
        vec![
            LogEntry::Snapshot {
                index: 1,
                items: vec![Change::Header { version: 1 }]
            },
            LogEntry::Item {
                index: 2,
                item: Change::Call { id: 10 }
            },
            LogEntry::Item {
                index: 3,
                item: Change::Room { id: 20 }
            },
        ]
    );
    let ev = until(&mut primary, "Committed 1", committed(1)).await;
    assert_eq!(ev.last(), Some(&SyncEvent::Committed { seq: 1 }));
    (primary, backup)
}

#[tokio::test]
async fn snapshot_then_replicate_is_applied_and_committed() {
    let (mut primary, mut backup) = established(Duration::from_millis(10)).await;
    primary.send(SyncCommand::Replicate {
        seq: 2,
        item: Change::Call { id: 11 },
    });
    until(&mut backup, "Apply of seq 2", |e| {
        matches!(
            e,
            SyncEvent::Node(Event::Apply(LogEntry::Item {
                index: 4,
                item: Change::Call { id: 11 }
            }))
        )
    })
    .await;
    let ev = until(&mut primary, "Committed 2", committed(2)).await;
    assert_eq!(ev.last(), Some(&SyncEvent::Committed { seq: 2 }));

    let p = primary.status();
    assert_eq!((p.role, p.peer), (Role::Primary, PeerState::Alive));
    assert_eq!((p.committed_seq, p.last_seq), (2, 2));
    let b = backup.status();
    assert_eq!(
        (b.role, b.peer, b.applied),
        (Role::Backup, PeerState::Alive, 4)
    );
    assert_eq!(p.dropped + b.dropped, 0);
    assert!(!primary.fenced().load(Ordering::SeqCst));
}

/// A command wakes the thread at once: with 50 ms heartbeats (the thread sleeps up to
/// 50 ms in its socket read), a replicated item still reaches the backup's application in
/// well under a millisecond.
#[tokio::test]
async fn replicate_is_on_the_wire_at_once() {
    let (mut primary, mut backup) = established(Duration::from_millis(50)).await;
    let mut lat = Vec::new();
    for k in 0..30u64 {
        let seq = 2 + k;
        let t0 = Instant::now();
        primary.send(SyncCommand::Replicate {
            seq,
            item: Change::Call { id: k },
        });
        until(&mut backup, "Apply", |e| {
            matches!(e, SyncEvent::Node(Event::Apply(LogEntry::Item { item: Change::Call { id }, .. })) if *id == k)
        })
        .await;
        lat.push(t0.elapsed());
        until(&mut primary, "Committed", committed(seq)).await;
    }
    lat.sort();
    let (median, max) = (lat[lat.len() / 2], lat[lat.len() - 1]);
    eprintln!("send -> Apply on the backup: median {median:?}, max {max:?} (30 items)");
    assert!(median < Duration::from_millis(2), "median {median:?}");
}

#[tokio::test]
async fn primary_gone_backup_takes_over_and_serves_unprotected() {
    let (primary, mut backup) = established(Duration::from_millis(10)).await;
    let killed = Instant::now();
    drop(primary);
    let ev = until(&mut backup, "TakingOver", |e| {
        *e == SyncEvent::Node(Event::RoleChanged(Role::TakingOver))
    })
    .await;
    let detected = killed.elapsed();
    assert!(ev.contains(&SyncEvent::Node(Event::PeerDead)), "{ev:?}");
    assert!(detected < Duration::from_millis(500), "{detected:?}");
    assert_eq!(backup.status().role, Role::TakingOver);
    backup.send(SyncCommand::CompleteTakeover);
    until(&mut backup, "Primary", |e| {
        *e == SyncEvent::Node(Event::RoleChanged(Role::Primary))
    })
    .await;
    assert_eq!(backup.status().role, Role::Primary);
    // No backup behind it: committed at once.
    backup.send(SyncCommand::Replicate {
        seq: 100,
        item: Change::Room { id: 1 },
    });
    until(&mut backup, "Committed 100", committed(100)).await;
}

#[tokio::test]
async fn unprotected_primary_commits_at_once() {
    // The peer address is a socket nobody reads: no backup ever answers.
    let (silent, silent_addr) = bind();
    let (ps, _) = bind();
    let mut primary = link(ps, silent_addr, 1, Role::Primary, Duration::from_millis(10));
    // Still probing for another primary: the node refuses, the command counts as committed.
    primary.send(SyncCommand::Replicate {
        seq: 1,
        item: Change::Call { id: 1 },
    });
    let ev = until(&mut primary, "Committed 1", committed(1)).await;
    assert!(
        !ev.contains(&SyncEvent::Node(Event::RoleChanged(Role::Primary))),
        "refused while probing: {ev:?}"
    );
    until(&mut primary, "Primary", |e| {
        *e == SyncEvent::Node(Event::RoleChanged(Role::Primary))
    })
    .await;
    // Serving, no backup: the node logs and releases at once.
    primary.send(SyncCommand::Replicate {
        seq: 2,
        item: Change::Call { id: 2 },
    });
    until(&mut primary, "Committed 2", committed(2)).await;
    primary.send(SyncCommand::Snapshot {
        seq: 3,
        items: vec![Change::Header { version: 1 }, Change::Call { id: 2 }],
    });
    until(&mut primary, "Committed 3", committed(3)).await;
    let st = primary.status();
    assert_eq!(
        (st.peer, st.committed_seq, st.last_seq),
        (PeerState::Unknown, 3, 3)
    );
    drop(silent);
}

#[tokio::test]
async fn dead_backup_releases_what_it_never_acknowledged() {
    let (mut primary, backup) = established(Duration::from_millis(10)).await;
    drop(backup);
    // Sent before the failure detector fires: held until PeerDead says nobody will ack.
    primary.send(SyncCommand::Replicate {
        seq: 2,
        item: Change::Call { id: 2 },
    });
    let ev = until(&mut primary, "Committed 2", committed(2)).await;
    let dead = ev
        .iter()
        .position(|e| *e == SyncEvent::Node(Event::PeerDead))
        .unwrap_or_else(|| panic!("committed before PeerDead: {ev:?}"));
    assert_eq!(dead, ev.len() - 2, "{ev:?}");
}

#[tokio::test]
async fn second_primary_joins_the_serving_one_as_backup() {
    let (s1, a1) = bind();
    let (s2, a2) = bind();
    let mut first = link(s1, a2, 1, Role::Primary, Duration::from_millis(10));
    until(&mut first, "Primary", |e| {
        *e == SyncEvent::Node(Event::RoleChanged(Role::Primary))
    })
    .await;
    // A process started later has a fresh socket: nothing of the first's own probe is
    // waiting in it.
    s2.set_nonblocking(true).unwrap();
    while s2.recv(&mut [0u8; 2048]).is_ok() {}
    s2.set_nonblocking(false).unwrap();
    let mut second = link(s2, a1, 2, Role::Primary, Duration::from_millis(10));
    let seen = until(&mut second, "RoleChanged(Backup)", |e| {
        *e == SyncEvent::Node(Event::RoleChanged(Role::Backup))
    })
    .await;
    assert!(
        !seen.iter().any(|e| matches!(
            e,
            SyncEvent::Node(Event::Fatal(_) | Event::RoleChanged(Role::Primary))
        )),
        "{seen:?}"
    );
    assert!(!second.fenced().load(Ordering::SeqCst));
    // The serving primary keeps its role and gets a backup to sync.
    until(&mut first, "SnapshotNeeded", |e| {
        *e == SyncEvent::Node(Event::SnapshotNeeded)
    })
    .await;
    assert!(!first.fenced().load(Ordering::SeqCst));
    assert_eq!(first.status().role, Role::Primary);
    assert_eq!(second.status().role, Role::Backup);
}

#[tokio::test]
async fn two_primaries_started_together_both_fail_and_are_fenced() {
    let (s1, a1) = bind();
    let (s2, a2) = bind();
    let mut first = link(s1, a2, 1, Role::Primary, Duration::from_millis(10));
    let mut second = link(s2, a1, 2, Role::Primary, Duration::from_millis(10));
    for l in [&mut first, &mut second] {
        until(l, "Fatal", |e| {
            *e == SyncEvent::Node(Event::Fatal(ft_sync::Error::TwoPrimaries))
        })
        .await;
        assert!(l.fenced().load(Ordering::SeqCst));
    }
}

/// A sync link through a relay the test can cut, and a clients' path for the primary's
/// beacons (a thread forwarding them to the backup's beacon forwarder, as the mirror reader
/// does), both on loopback.
struct Partitionable {
    primary: Link,
    backup: Link,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    beacons_on: std::sync::Arc<std::sync::atomic::AtomicBool>,
    forwarded: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// The clients' path as the backup's sync thread reads it: the beacons the primary sent,
/// unless the test cut that path too.
struct ClientPath {
    sock: UdpSocket,
    on: std::sync::Arc<std::sync::atomic::AtomicBool>,
    n: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl mcu::sync_link::BeaconSource for ClientPath {
    fn drain(&mut self, f: &mut dyn FnMut(&[u8], Duration)) {
        let mut buf = [0u8; 65536];
        while let Ok(len) = self.sock.recv(&mut buf) {
            if self.on.load(Ordering::Relaxed) {
                self.n.fetch_add(1, Ordering::Relaxed);
                f(&buf[..len], Duration::ZERO);
            }
        }
    }
}

fn partitionable() -> Partitionable {
    use std::sync::atomic::{AtomicBool, AtomicU64};
    use std::sync::Arc;
    let (ps, pa) = bind();
    let (bs, ba) = bind();
    let (ra, raa) = bind(); // the primary's view of the backup
    let (rb, rba) = bind(); // the backup's view of the primary
    let cut = Arc::new(AtomicBool::new(false));
    for (from, to, dst) in [
        (ra.try_clone().unwrap(), rb.try_clone().unwrap(), ba),
        (rb, ra, pa),
    ] {
        let cut = cut.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok(n) = from.recv(&mut buf) {
                if !cut.load(Ordering::Relaxed) {
                    let _ = to.send_to(&buf[..n], dst);
                }
            }
        });
    }
    let (clients, clients_addr) = bind();
    let mut pc = config(1, Role::Primary, Duration::from_millis(10));
    pc.client_path_beacons = true;
    let mut bc = config(2, Role::Backup, Duration::from_millis(10));
    bc.client_path_beacons = true;
    let primary = SyncLink::start_with_paths(
        ps,
        raa,
        Node::new(pc, Duration::ZERO),
        Some(mcu::sync_link::BeaconOut {
            sock: UdpSocket::bind("127.0.0.1:0").unwrap(),
            to: clients_addr,
        }),
        None,
    )
    .unwrap();
    let backup =
        SyncLink::start_with_paths(bs, rba, Node::new(bc, Duration::ZERO), None, None).unwrap();
    let beacons_on = Arc::new(AtomicBool::new(true));
    let forwarded = Arc::new(AtomicU64::new(0));
    clients.set_nonblocking(true).unwrap();
    backup.set_beacon_source(Box::new(ClientPath {
        sock: clients,
        on: beacons_on.clone(),
        n: forwarded.clone(),
    }));
    Partitionable {
        primary,
        backup,
        cut,
        beacons_on,
        forwarded,
    }
}

#[tokio::test]
async fn partition_with_beacons_is_no_takeover_and_heals_by_itself() {
    let mut p = partitionable();
    until(&mut p.primary, "SnapshotNeeded", |e| {
        matches!(e, SyncEvent::Node(Event::SnapshotNeeded))
    })
    .await;
    p.primary.send(SyncCommand::Snapshot {
        seq: 1,
        items: vec![Change::Header { version: 1 }],
    });
    until(&mut p.primary, "Committed 1", committed(1)).await;
    // Cut the sync link: the backup reports a partition, never a takeover; the primary
    // serves unprotected (its replication commits at once).
    p.cut.store(true, Ordering::SeqCst);
    until(&mut p.backup, "SyncLost", |e| {
        assert!(
            !matches!(
                e,
                SyncEvent::Node(Event::PeerDead | Event::RoleChanged(Role::TakingOver))
            ),
            "the backup took over a primary whose beacons arrive: {e:?}"
        );
        matches!(e, SyncEvent::Node(Event::SyncLost))
    })
    .await;
    until(&mut p.primary, "PeerDead", |e| {
        matches!(e, SyncEvent::Node(Event::PeerDead))
    })
    .await;
    p.primary.send(SyncCommand::Replicate {
        seq: 2,
        item: Change::Call { id: 42 },
    });
    until(&mut p.primary, "Committed 2 (unprotected)", committed(2)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Some(e) = p.backup.try_recv() {
        assert!(
            !matches!(e, SyncEvent::Node(Event::PeerDead | Event::RoleChanged(_))),
            "{e:?} during the partition"
        );
    }
    assert_eq!(p.backup.status().peer, PeerState::SyncLost);
    assert!(p.backup.status().beacons > 10, "{:?}", p.backup.status());
    // Healed: the backup gets what it missed, without a new snapshot.
    p.cut.store(false, Ordering::SeqCst);
    until(&mut p.backup, "the change made during the partition", |e| {
        matches!(
            e,
            SyncEvent::Node(Event::Apply(LogEntry::Item {
                item: Change::Call { id: 42 },
                ..
            }))
        )
    })
    .await;
    assert_eq!(p.backup.status().peer, PeerState::Alive);
    // Now the primary dies: its sync messages and its beacons stop: a takeover.
    p.beacons_on.store(false, Ordering::SeqCst);
    let forwarded = p.forwarded.load(Ordering::SeqCst);
    drop(p.primary);
    until(&mut p.backup, "TakingOver", |e| {
        matches!(e, SyncEvent::Node(Event::RoleChanged(Role::TakingOver)))
    })
    .await;
    assert!(forwarded > 20, "{forwarded} beacons forwarded");
}

#[tokio::test]
async fn heartbeats_leave_on_their_10ms_schedule() {
    // The thread's timers must not be rounded to the scheduler tick: with a socket receive
    // timeout (4 ms ticks at HZ=250) a 10 ms heartbeat left every 15-16 ms, and a 30 ms
    // failure detector had almost no margin.
    let (s, _) = bind();
    let (peer, peer_addr) = bind();
    let _link = link(s, peer_addr, 1, Role::Primary, Duration::from_millis(10));
    peer.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 2048];
    let mut arrivals = vec![];
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1000) {
        if peer.recv(&mut buf).is_ok() {
            arrivals.push(Instant::now());
        }
    }
    let gaps: Vec<f64> = arrivals
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64() * 1e3)
        .collect();
    let max = gaps.iter().cloned().fold(0.0, f64::max);
    eprintln!(
        "{} datagrams in 1 s, largest gap {max:.1} ms",
        arrivals.len()
    );
    assert!(
        arrivals.len() >= 90,
        "{} datagrams in 1 s: {gaps:?}",
        arrivals.len()
    );
}

/// Forwards every datagram arriving on `from` to `dst` from `from` itself, counting them,
/// unless `cut` is set (then they are dropped).
fn relay(
    from: UdpSocket,
    dst: SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    n: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok(len) = from.recv(&mut buf) {
            if !cut.load(Ordering::Relaxed) {
                n.fetch_add(1, Ordering::Relaxed);
                let _ = from.send_to(&buf[..len], dst);
            }
        }
    });
}

#[tokio::test]
async fn the_primarys_heartbeats_on_their_own_path_keep_the_backup_protected() {
    // mcu's configuration (issue 10 point 9): the primary's heartbeats go to the backup's
    // heartbeat socket, through a relay this test can cut, and the backup reads them only
    // when it wakes anyway. They are what keeps it from taking over: with entries still
    // flowing on the sync socket, cutting the heartbeat path alone is a death once the
    // entries stop.
    use std::sync::atomic::{AtomicBool, AtomicU64};
    use std::sync::Arc;
    let [(ps, pa), (bs, ba), (phb, phb_addr), (bhb, bhb_addr), (relay_sock, relay_addr)] =
        std::array::from_fn(|_| bind());
    let cut = Arc::new(AtomicBool::new(false));
    let relayed = Arc::new(AtomicU64::new(0));
    relay(relay_sock, bhb_addr, cut.clone(), relayed.clone());
    let cfg = |id, role| {
        let mut c = config(id, role, Duration::from_millis(10));
        c.backup_heartbeats_every = 4;
        c.primary_patience = 3;
        c.heartbeat_channel = true;
        c
    };
    let path = |sock, to| Some(mcu::sync_link::HeartbeatPath { sock, to });
    let mut primary = SyncLink::start_with_paths(
        ps,
        ba,
        Node::new(cfg(1, Role::Primary), Duration::ZERO),
        None,
        path(phb, relay_addr),
    )
    .unwrap();
    let mut backup = SyncLink::start_with_paths(
        bs,
        pa,
        Node::new(cfg(2, Role::Backup), Duration::ZERO),
        None,
        path(bhb, phb_addr),
    )
    .unwrap();
    until(&mut primary, "SnapshotNeeded", |e| {
        matches!(e, SyncEvent::Node(Event::SnapshotNeeded))
    })
    .await;
    primary.send(SyncCommand::Snapshot {
        seq: 1,
        items: vec![Change::Header { version: 1 }],
    });
    until(&mut primary, "Committed 1", committed(1)).await;
    // A second of nothing but heartbeats: all through the relay, no failure either side.
    let before = relayed.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let heartbeats = relayed.load(Ordering::SeqCst) - before;
    assert!(
        (80..=110).contains(&heartbeats),
        "{heartbeats} heartbeats in 1 s on the heartbeat path"
    );
    for link in [&mut primary, &mut backup] {
        while let Some(e) = link.try_recv() {
            assert!(
                !matches!(e, SyncEvent::Node(Event::PeerDead | Event::RoleChanged(_))),
                "{e:?} while the primary heartbeats"
            );
        }
    }
    assert_eq!(backup.status().peer, PeerState::Alive);
    assert_eq!(backup.status().dropped, 0, "{:?}", backup.status());
    // Replication still wakes the backup at once.
    let sent = Instant::now();
    primary.send(SyncCommand::Replicate {
        seq: 2,
        item: Change::Call { id: 7 },
    });
    until(&mut primary, "Committed 2", committed(2)).await;
    eprintln!("committed after {:?}", sent.elapsed());
    // Only the heartbeat path is cut: with nothing else from the primary, that is a death.
    cut.store(true, Ordering::SeqCst);
    until(&mut backup, "TakingOver", |e| {
        matches!(e, SyncEvent::Node(Event::RoleChanged(Role::TakingOver)))
    })
    .await;
    drop(primary);
}

/// Beacons as they arrived at the clients' path, with the kernel's arrival time.
type Stamped = std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<(SystemTime, Vec<u8>)>>>;

/// The clients' path as the backup's beacon queue gives it: a thread receives each beacon
/// with the kernel's arrival time (`SO_TIMESTAMPNS`, as the queue's packets carry it); the
/// sync thread drains them with their age.
struct StampedClientPath {
    got: Stamped,
}

impl mcu::sync_link::BeaconSource for StampedClientPath {
    fn drain(&mut self, f: &mut dyn FnMut(&[u8], Duration)) {
        let got: Vec<_> = self.got.lock().unwrap().drain(..).collect();
        for (at, b) in got {
            f(&b, SystemTime::now().duration_since(at).unwrap_or_default());
        }
    }
}

/// Receive on `sock` forever, each datagram with its kernel arrival time, into `got`.
fn receive_stamped(sock: UdpSocket, got: Stamped) {
    use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
    use std::os::fd::AsRawFd;
    setsockopt(&sock, sockopt::ReceiveTimestampns, &true).unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
        loop {
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let Ok(msg) = recvmsg::<()>(
                sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::empty(),
            ) else {
                return;
            };
            let mut at = SystemTime::now();
            for c in msg.cmsgs().into_iter().flatten() {
                if let ControlMessageOwned::ScmTimestampns(ts) = c {
                    at = UNIX_EPOCH + Duration::from(ts);
                }
            }
            let len = msg.bytes;
            got.lock().unwrap().push_back((at, buf[..len].to_vec()));
        }
    });
}

#[tokio::test]
async fn batched_heartbeats_and_beacons_are_taken_in_arrival_order() {
    // 5 of every 6 of the primary's heartbeats lost on the heartbeat path, every beacon
    // arriving: the primary is never silent on both paths for much more than an interval,
    // and the backup, which reads both in batches when it wakes, must see that. Handling the
    // heartbeats of a batch before the beacons that came ahead of them made each lost run
    // look like a silence on both paths as long as the run, and the backup then waited that
    // much longer before declaring a real death (a lossy sync link followed by a kill: 66 ms
    // gaps instead of 44). Here, with real threads, that showed in some runs only (20 ms in
    // 1 of 4); `mcu::sync_link`'s unit test `a_batch_read_late_is_handled_in_arrival_order`
    // catches it every time, in virtual time.
    use std::sync::{Arc, Mutex};
    let [(ps, pa), (bs, ba), (phb, phb_addr), (bhb, bhb_addr), (relay_sock, relay_addr)] =
        std::array::from_fn(|_| bind());
    // The lossy heartbeat relay: forwards the first of every 6.
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        let mut k = 0u64;
        while let Ok(len) = relay_sock.recv(&mut buf) {
            if k.is_multiple_of(6) {
                let _ = relay_sock.send_to(&buf[..len], bhb_addr);
            }
            k += 1;
        }
    });
    let (clients, clients_addr) = bind();
    let got: Stamped = Arc::new(Mutex::new(std::collections::VecDeque::new()));
    receive_stamped(clients, got.clone());
    let cfg = |id, role| {
        let mut c = config(id, role, Duration::from_millis(10));
        c.client_path_beacons = true;
        c.backup_heartbeats_every = 4;
        c.primary_patience = 3;
        c.heartbeat_channel = true;
        c
    };
    let mut primary: Link = SyncLink::start_with_paths(
        ps,
        ba,
        Node::new(cfg(1, Role::Primary), Duration::ZERO),
        Some(mcu::sync_link::BeaconOut {
            sock: UdpSocket::bind("127.0.0.1:0").unwrap(),
            to: clients_addr,
        }),
        Some(mcu::sync_link::HeartbeatPath {
            sock: phb,
            to: relay_addr,
        }),
    )
    .unwrap();
    let mut backup: Link = SyncLink::start_with_paths(
        bs,
        pa,
        Node::new(cfg(2, Role::Backup), Duration::ZERO),
        None,
        Some(mcu::sync_link::HeartbeatPath {
            sock: bhb,
            to: phb_addr,
        }),
    )
    .unwrap();
    backup.set_beacon_source(Box::new(StampedClientPath { got }));
    until(&mut primary, "SnapshotNeeded", |e| {
        matches!(e, SyncEvent::Node(Event::SnapshotNeeded))
    })
    .await;
    primary.send(SyncCommand::Snapshot {
        seq: 1,
        items: vec![Change::Header { version: 1 }],
    });
    until(&mut primary, "Committed 1", committed(1)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let st = backup.status();
    eprintln!(
        "the primary's longest silence on both paths, as the backup saw it: {:?}",
        st.silence_max
    );
    assert!(st.beacons > 150, "{st:?}");
    assert!(
        st.silence_max < Duration::from_millis(15),
        "the backup saw the primary silent on both paths for {:?} (heartbeats lost, beacons \
         arriving every 10 ms): {st:?}",
        st.silence_max
    );
    while let Some(e) = backup.try_recv() {
        assert!(
            !matches!(e, SyncEvent::Node(Event::PeerDead | Event::RoleChanged(_))),
            "{e:?}"
        );
    }
}
