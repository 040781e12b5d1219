//! The sync link's driver: one thread owns the [`ft_sync::Node`], its UDP socket and its
//! timers; the control plane talks to it only by messages ([`SyncCommand`] in,
//! [`SyncEvent`] out), so no lock is shared between the tokio runtime and the thread that
//! keeps the heartbeats on time.
//!
//! The thread runs at real-time priority when the process may (root), so that neither a
//! busy tokio runtime nor a loaded machine delays a heartbeat into a false failure
//! detection. It sleeps in the socket read until the node's next timer; a command wakes it
//! at once with a datagram to its own socket from a private waker socket (safe code, no
//! extra descriptor to poll), so a replicated item is on the wire within tens of
//! microseconds of [`SyncLink::send`].
//!
//! # Sequence numbers and output commit
//!
//! The application numbers its commands (`seq`, strictly increasing) and holds what
//! depends on them (a SIP response) until [`SyncEvent::Committed`] covers their `seq`. The
//! thread maps each command to the log indices the node gave it and turns the node's
//! cumulative `Committed(index)` into `Committed { seq }`. A command the node refuses
//! because it does not protect anything (still probing for another primary, or not primary)
//! counts as committed at once, and when the backup dies ([`ft_sync::Event::PeerDead`])
//! everything submitted does: there is nothing to wait for, and waiting would block every
//! call. An item that cannot be sent at all (it does not serialize or does not fit one
//! datagram) is logged as an error and released with the command before it.

use anyhow::{Context, Result};
use ft_sync::{Event, Item, LogIndex, Node, Role};
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// What the control plane asks of the sync thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncCommand<T> {
    /// Primary: replicate one item. `seq` is the application's number for it (strictly
    /// increasing over all commands that carry one).
    Replicate {
        /// The application's sequence number.
        seq: u64,
        /// The item.
        item: T,
    },
    /// Primary: replace the backup's state (after [`ft_sync::Event::SnapshotNeeded`]). The
    /// first item goes in the snapshot entry, every other one follows as its own log entry
    /// (one datagram each, whatever the number of items); the command is committed when
    /// the last one is.
    Snapshot {
        /// The application's sequence number.
        seq: u64,
        /// The whole state, the item that resets the backup first.
        items: Vec<T>,
    },
    /// Backup: the service address is claimed; become primary
    /// ([`ft_sync::Node::complete_takeover`]).
    CompleteTakeover,
    /// Primary: planned switchover, after the command carrying the last state
    /// ([`ft_sync::Node::hand_over`]). Refused: reported as
    /// [`ft_sync::Event::HandoverAborted`].
    HandOver,
}

/// What the sync thread reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncEvent<T> {
    /// Node events other than Committed, passed through (PeerAlive, PeerDead, RoleChanged,
    /// Fatal, PeerRejected, SnapshotNeeded, Apply(LogEntry<T>)).
    Node(ft_sync::Event<T>),
    /// Every command with seq <= this is acknowledged by the backup, or counts as committed
    /// because the node runs unprotected (no live backup, or still probing: replicate()
    /// refused) — then it is reported at once.
    Committed {
        /// Highest committed command.
        seq: u64,
    },
}

/// The link as the thread last saw it (for the HTTP status).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncStatus {
    /// The node's role.
    pub role: ft_sync::Role,
    /// The peer's liveness.
    pub peer: ft_sync::PeerState,
    /// Backup: highest log index applied.
    pub applied: u64,
    /// Highest command seq reported committed.
    pub committed_seq: u64,
    /// Highest command seq the thread has taken.
    pub last_seq: u64,
    /// Sync datagrams dropped by the node (malformed, unauthenticated, replayed, ...).
    pub dropped: u64,
    /// Backup: the primary's client-path beacons accepted, and refused.
    pub beacons: u64,
    /// See `beacons`.
    pub beacons_refused: u64,
    /// The peer's longest silence (no sign of life on either path) in about the last 10 s.
    pub silence_max: Duration,
    /// Backup: how much longer than configured it now waits before declaring the primary
    /// dead (`--ft-max-stretch-ms`).
    pub dead_after_stretch: Duration,
}

/// The sync link: its thread owns the node; see [the module docs](self).
pub struct SyncLink<T> {
    commands: mpsc::Sender<SyncCommand<T>>,
    events: tokio::sync::mpsc::UnboundedReceiver<SyncEvent<T>>,
    waker: Waker,
    status: Arc<Mutex<SyncStatus>>,
    fenced: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    beacon_sources: mpsc::Sender<Box<dyn BeaconSource>>,
    /// The thread got real-time priority.
    pub realtime: bool,
}

/// Where a backup's sync thread reads the primary's client-path beacons
/// ([`SyncLink::set_beacon_source`]). The thread drains it each time it wakes anyway (its
/// own timers and the failure detector's deadline: about every two heartbeat intervals on a
/// standing-by backup, see [`HeartbeatPath`]), so beacons cost no
/// wake-up and no thread of their own; each one is handed to the node with the time it
/// arrived, so reading it up to an interval late delays no failure detection.
pub trait BeaconSource: Send {
    /// Call `f` with every beacon (its UDP payload) that arrived since the last call, and how
    /// long ago it arrived (zero when unknown). Never blocks.
    fn drain(&mut self, f: &mut dyn FnMut(&[u8], Duration));
}

/// Where a primary sends its client-path beacons ([`ft_sync::Node::poll_beacon`]): a socket
/// bound to the service address (with IP_FREEBIND, so it binds before the address is held)
/// and the backup's address on the clients' segment.
pub struct BeaconOut {
    /// Bound to VIP:port.
    pub sock: UdpSocket,
    /// The peer's client-segment address and beacon port.
    pub to: SocketAddr,
}

/// Heartbeats on a path of their own ([`ft_sync::Config::heartbeat_channel`]): a socket next
/// to the sync socket that the thread does not wait on. It reads it whenever it wakes anyway
/// (its own timers, among them a backup's failure detector's deadline; a replicated entry or
/// an acknowledgement), each datagram with its kernel arrival time (`SO_TIMESTAMPNS`): a
/// standing-by backup is not woken by every heartbeat of its primary and detects its death
/// as fast, and a primary reads its backup's heartbeats at its own heartbeat timer.
pub struct HeartbeatPath {
    /// Where the peer's heartbeats arrive (the sync port + 2 in mcu).
    pub sock: UdpSocket,
    /// Where this node's heartbeats go: the peer's heartbeat socket.
    pub to: SocketAddr,
}

/// Real-time priority of the sync-link thread (SCHED_FIFO, low among RT priorities).
const SYNC_RT_PRIORITY: i32 = 10;

/// Most datagrams read per wake-up before the timers are looked at.
const MAX_READS: usize = 64;

/// Sleep until `sock` is readable or `wait` has passed (ppoll: nanosecond timeout on an
/// hrtimer, no slack for a real-time thread).
fn wait_readable(sock: &UdpSocket, wait: Duration) {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: wait.as_secs() as libc::time_t,
        tv_nsec: wait.subsec_nanos() as libc::c_long,
    };
    // SAFETY: one valid pollfd for the call's duration, a valid timespec, no signal mask.
    unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
}

/// Ask the kernel to stamp every datagram `sock` receives with its arrival time.
fn receive_timestamps(sock: &UdpSocket) {
    if let Err(e) =
        nix::sys::socket::setsockopt(sock, nix::sys::socket::sockopt::ReceiveTimestampns, &true)
    {
        tracing::warn!("sync link: SO_TIMESTAMPNS on the heartbeat socket: {e}: heartbeats count from when they are read");
    }
}

/// The next datagram waiting on `sock` (non-blocking) into `buf`: its length and how long
/// ago it arrived (zero when the kernel did not say).
/// `cmsg` is the control-message buffer (`nix::cmsg_space!(TimeSpec)`), kept by the caller.
fn recv_stamped(sock: &UdpSocket, buf: &mut [u8], cmsg: &mut [u8]) -> Option<(usize, Duration)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(cmsg),
        MsgFlags::MSG_DONTWAIT,
    )
    .ok()?;
    let mut age = Duration::ZERO;
    for c in msg.cmsgs().into_iter().flatten() {
        if let ControlMessageOwned::ScmTimestampns(ts) = c {
            let at = std::time::UNIX_EPOCH + Duration::from(ts);
            age = std::time::SystemTime::now()
                .duration_since(at)
                .unwrap_or_default();
        }
    }
    Some((msg.bytes, age))
}

/// Longest sleep of the thread (also bounds how late a stop is seen without a wake).
const MAX_WAIT: Duration = Duration::from_millis(50);

/// Wakes the thread out of its socket read: one datagram from a private socket, sent only
/// if none is outstanding.
struct Waker {
    sock: UdpSocket,
    pending: Arc<AtomicBool>,
}

impl Waker {
    fn new(target: SocketAddr) -> Result<Self> {
        let sock = UdpSocket::bind((target.ip(), 0)).context("binding the sync-link waker")?;
        sock.connect(target)
            .context("connecting the sync-link waker")?;
        sock.set_nonblocking(true)?;
        Ok(Waker {
            sock,
            pending: Arc::new(AtomicBool::new(false)),
        })
    }

    fn wake(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            // Non-blocking; a full buffer means a wake is queued anyway.
            let _ = self.sock.send(&[0]);
        }
    }
}

impl<T: Item + Send + 'static> SyncLink<T> {
    /// Bind the sync socket on `listen` and start the thread for `node`, which exchanges
    /// datagrams with `peer`. The node's clock starts now: create it with
    /// `Node::new(config, Duration::ZERO)` just before.
    pub fn start(listen: SocketAddr, peer: SocketAddr, node: Node<T>) -> Result<Self> {
        let sock =
            UdpSocket::bind(listen).with_context(|| format!("binding the sync link {listen}"))?;
        Self::start_with_socket(sock, peer, node)
    }

    /// [`SyncLink::start`] on a socket bound by the caller (tests bind port 0 first).
    pub fn start_with_socket(sock: UdpSocket, peer: SocketAddr, node: Node<T>) -> Result<Self> {
        Self::start_with_paths(sock, peer, node, None, None)
    }

    /// [`SyncLink::start_with_socket`] with a client path for beacons and a heartbeat path.
    /// Beacons: as primary the thread sends the node's beacons on `beacons`; as backup it
    /// hands the node what the source given to [`SyncLink::set_beacon_source`] yields.
    /// Heartbeats: the node's [`ft_sync::Node::poll_heartbeat`] go to the peer's heartbeat
    /// socket, and this node's is read as [`HeartbeatPath`] says (without one, they go to the
    /// peer's sync socket).
    pub fn start_with_paths(
        sock: UdpSocket,
        peer: SocketAddr,
        node: Node<T>,
        beacons: Option<BeaconOut>,
        heartbeats: Option<HeartbeatPath>,
    ) -> Result<Self> {
        let origin = Instant::now();
        let local = sock.local_addr().context("sync link address")?;
        // Unspecified (0.0.0.0 / ::) receives on loopback too.
        let wake_target = match local.ip() {
            IpAddr::V4(a) if a.is_unspecified() => {
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), local.port())
            }
            IpAddr::V6(a) if a.is_unspecified() => {
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), local.port())
            }
            _ => local,
        };
        let waker = Waker::new(wake_target)?;
        let (commands, command_rx) = mpsc::channel();
        let (beacon_sources, beacon_source_rx) = mpsc::channel();
        let (event_tx, events) = tokio::sync::mpsc::unbounded_channel();
        let status = Arc::new(Mutex::new(status_of(&node, 0, 0)));
        let fenced = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (rt_tx, rt_rx) = mpsc::channel();
        let mut driver = Driver {
            node,
            sock,
            peer,
            origin,
            waker_addr: waker.sock.local_addr()?,
            beacon_sources: beacon_source_rx,
            beacon_in: None,
            beacon_out: beacons,
            heartbeats,
            arrived: Vec::new(),
            arrived_bytes: Vec::new(),
            wake_pending: waker.pending.clone(),
            commands: command_rx,
            events: event_tx,
            status: status.clone(),
            fenced: fenced.clone(),
            stop: stop.clone(),
            pending: VecDeque::new(),
            committed_seq: 0,
            last_seq: 0,
        };
        let thread = std::thread::Builder::new()
            .name("ft-sync".into())
            .spawn(move || {
                let param = libc::sched_param {
                    sched_priority: SYNC_RT_PRIORITY,
                };
                // SAFETY: sched_setscheduler on the calling thread (pid 0) with a valid
                // sched_param that lives across the call.
                let rt = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0;
                let _ = rt_tx.send(rt);
                driver.run();
            })
            .context("spawning the sync-link thread")?;
        let realtime = rt_rx.recv().unwrap_or(false);
        if !realtime {
            tracing::warn!("sync link: no real-time priority for its thread (not root?): heartbeats may be delayed on a loaded machine");
        }
        Ok(SyncLink {
            commands,
            events,
            waker,
            status,
            fenced,
            stop,
            thread: Some(thread),
            beacon_sources,
            realtime,
        })
    }
}

impl<T> SyncLink<T> {
    /// Hand a command to the thread (never blocks; the thread is woken at once).
    pub fn send(&self, cmd: SyncCommand<T>) {
        if self.commands.send(cmd).is_ok() {
            self.waker.wake();
        }
    }

    /// Next event; `None` once the thread is gone.
    pub async fn recv(&mut self) -> Option<SyncEvent<T>> {
        self.events.recv().await
    }

    /// Next event if one is pending.
    pub fn try_recv(&mut self) -> Option<SyncEvent<T>> {
        self.events.try_recv().ok()
    }

    /// The link as the thread last saw it.
    pub fn status(&self) -> SyncStatus {
        self.status.lock().unwrap().clone()
    }

    /// Backup: from now on the thread reads the primary's client-path beacons from `source`
    /// ([`ft_sync::Node::handle_beacon`]), replacing any previous source.
    pub fn set_beacon_source(&self, source: Box<dyn BeaconSource>) {
        let _ = self.beacon_sources.send(source);
        self.waker.wake();
    }

    /// Set by the thread as soon as the node reports [`ft_sync::Event::Fatal`] while
    /// primary: this node was taken over (or another primary won), its rooms must stop
    /// sending media at once, before the control plane even reads the event.
    pub fn fenced(&self) -> Arc<AtomicBool> {
        self.fenced.clone()
    }
}

impl<T> Drop for SyncLink<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.waker.pending.store(false, Ordering::Release);
        self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn status_of<T: Item>(node: &Node<T>, committed_seq: u64, last_seq: u64) -> SyncStatus {
    SyncStatus {
        role: node.role(),
        peer: node.peer_state(),
        applied: node.applied(),
        committed_seq,
        last_seq,
        dropped: node.stats().dropped(),
        beacons: node.stats().beacons,
        beacons_refused: node.stats().beacons_refused,
        silence_max: node.recent_max_silence(),
        dead_after_stretch: node.dead_after_stretch(),
    }
}

/// One read's worth of heartbeats and beacons (arrival, a beacon?, its bytes in `bytes`),
/// handed to `node` in arrival order at `now` (and `arrived` emptied).
fn in_arrival_order<T: Item>(
    node: &mut Node<T>,
    arrived: &mut Vec<(Duration, bool, std::ops::Range<usize>)>,
    bytes: &[u8],
    now: Duration,
) {
    arrived.sort_by_key(|(at, _, _)| *at);
    for (at, beacon, range) in arrived.drain(..) {
        if beacon {
            node.handle_beacon(&bytes[range], at);
        } else {
            node.handle_datagram_received(&bytes[range], at, now);
        }
    }
}

/// The thread's state: the node and everything around it.
struct Driver<T> {
    node: Node<T>,
    sock: UdpSocket,
    peer: SocketAddr,
    origin: Instant,
    waker_addr: SocketAddr,
    beacon_sources: mpsc::Receiver<Box<dyn BeaconSource>>,
    beacon_in: Option<Box<dyn BeaconSource>>,
    beacon_out: Option<BeaconOut>,
    heartbeats: Option<HeartbeatPath>,
    /// What [`Driver::read_batched`] read: (arrival, a beacon?, its bytes in
    /// `arrived_bytes`), kept between wake-ups for their capacity.
    arrived: Vec<(Duration, bool, std::ops::Range<usize>)>,
    arrived_bytes: Vec<u8>,
    wake_pending: Arc<AtomicBool>,
    commands: mpsc::Receiver<SyncCommand<T>>,
    events: tokio::sync::mpsc::UnboundedSender<SyncEvent<T>>,
    status: Arc<Mutex<SyncStatus>>,
    fenced: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    /// Commands waiting for the backup: (last log index of the command, its seq), in order.
    pending: VecDeque<(LogIndex, u64)>,
    committed_seq: u64,
    last_seq: u64,
}

impl<T: Item> Driver<T> {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn run(&mut self) {
        let mut buf = vec![0u8; 65536];
        let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
        // Non-blocking reads after a high-resolution wait: a socket receive timeout
        // (SO_RCVTIMEO) sleeps in scheduler ticks (4 ms at HZ=250: a 10 ms heartbeat came
        // every 15-16 ms, leaving a 30 ms detector no margin); ppoll's timeout is an hrtimer.
        let _ = self.sock.set_nonblocking(true);
        if let Some(h) = &self.heartbeats {
            receive_timestamps(&h.sock);
        }
        // What the node queued at creation (its first Hello).
        self.flush();
        while !self.stop.load(Ordering::Acquire) {
            let wait = self
                .node
                .poll_timeout()
                .map_or(MAX_WAIT, |t| t.saturating_sub(self.now()))
                .min(MAX_WAIT);
            // Not on the heartbeat socket: it is read when something else wakes the thread
            // (see [`HeartbeatPath`]).
            wait_readable(&self.sock, wait);
            // What waited on the paths read in batches (heartbeats, beacons), in the order it
            // arrived, before what woke us: the failure detector measures the peer's
            // silences from that order (a heartbeat handled before the beacon that came
            // ahead of it would make a lost heartbeat's gap look like a silence on both
            // paths, and the backup would wait longer at the next death).
            self.read_batched(&mut buf, &mut cmsg);
            // Everything that arrived (bounded, so the timers still run under a flood).
            for _ in 0..MAX_READS {
                let got = self.sock.recv_from(&mut buf);
                let now = self.now();
                match got {
                    Ok((_, src)) if src == self.waker_addr => {}
                    Ok((len, _)) => self.node.handle_datagram(&buf[..len], now),
                    Err(_) => break, // nothing more (or a transient error: timers run anyway)
                }
            }
            let now = self.now();
            self.wake_pending.store(false, Ordering::Release);
            while let Ok(cmd) = self.commands.try_recv() {
                self.command(cmd, now);
            }
            if self.node.poll_timeout().is_some_and(|t| t <= now) {
                self.node.handle_timeout(now);
            }
            self.flush();
        }
    }

    /// Read the heartbeat socket and the beacon source, and hand what they held to the node
    /// in arrival order (see the call in [`Driver::run`]).
    fn read_batched(&mut self, buf: &mut [u8], cmsg: &mut [u8]) {
        while let Ok(source) = self.beacon_sources.try_recv() {
            self.beacon_in = Some(source);
        }
        let (mut arrived, mut bytes) = (
            std::mem::take(&mut self.arrived),
            std::mem::take(&mut self.arrived_bytes),
        );
        arrived.clear();
        bytes.clear();
        let now = self.now();
        let mut stash = |data: &[u8], age: Duration, beacon: bool| {
            arrived.push((
                now.saturating_sub(age),
                beacon,
                bytes.len()..bytes.len() + data.len(),
            ));
            bytes.extend_from_slice(data);
        };
        if let Some(h) = &self.heartbeats {
            for _ in 0..MAX_READS {
                let Some((len, age)) = recv_stamped(&h.sock, buf, cmsg) else {
                    break;
                };
                stash(&buf[..len], age, false);
            }
        }
        if let Some(source) = self.beacon_in.as_mut() {
            source.drain(&mut |beacon, age| stash(beacon, age, true));
        }
        in_arrival_order(&mut self.node, &mut arrived, &bytes, now);
        (self.arrived, self.arrived_bytes) = (arrived, bytes);
    }

    fn command(&mut self, cmd: SyncCommand<T>, now: Duration) {
        match cmd {
            SyncCommand::Replicate { seq, item } => {
                self.last_seq = self.last_seq.max(seq);
                match self.node.replicate(item, now) {
                    Ok(i) => self.submitted(i, seq),
                    Err(ft_sync::Error::NotPrimary) => self.unprotected(seq),
                    Err(e) => {
                        tracing::error!(seq, "sync link: item not replicated: {e}");
                        self.not_sent(seq);
                    }
                }
            }
            SyncCommand::Snapshot { seq, items } => {
                self.last_seq = self.last_seq.max(seq);
                let mut items = items.into_iter();
                let first: Vec<T> = items.next().into_iter().collect();
                let first = match self.node.replicate_snapshot(first, now) {
                    Err(ft_sync::Error::NotPrimary) => return self.unprotected(seq),
                    Err(e) => {
                        // The backup still needs its reset: an empty snapshot, then the rest.
                        tracing::error!(seq, "sync link: snapshot item not replicated: {e}");
                        self.node.replicate_snapshot(Vec::new(), now)
                    }
                    ok => ok,
                };
                let Ok(mut last) = first else {
                    return self.unprotected(seq);
                };
                for item in items {
                    match self.node.replicate(item, now) {
                        Ok(i) => last = i,
                        Err(ft_sync::Error::NotPrimary) => break,
                        Err(e) => {
                            tracing::error!(seq, "sync link: snapshot item not replicated: {e}")
                        }
                    }
                }
                self.submitted(last, seq);
            }
            SyncCommand::CompleteTakeover => {
                if let Err(e) = self.node.complete_takeover(now) {
                    tracing::warn!("sync link: completing the takeover: {e}");
                }
            }
            SyncCommand::HandOver => match self.node.hand_over(now) {
                Ok(index) => tracing::warn!(index, "sync link: handing over to the backup"),
                Err(e) => {
                    tracing::error!("sync link: cannot hand over: {e}");
                    let _ = self.events.send(SyncEvent::Node(Event::HandoverAborted));
                }
            },
        }
    }

    /// `seq` is committed once log index `index` is (the node reports it then, at once
    /// when unprotected).
    fn submitted(&mut self, index: LogIndex, seq: u64) {
        self.pending.push_back((index, seq));
    }

    /// `seq` carried nothing the node could send: it is released with the command before it.
    fn not_sent(&mut self, seq: u64) {
        match self.pending.back() {
            Some(&(index, _)) => self.pending.push_back((index, seq)),
            None => self.committed(seq),
        }
    }

    /// Nothing protects `seq` (nor what was submitted before it): committed now.
    fn unprotected(&mut self, seq: u64) {
        self.pending.clear();
        self.committed(seq);
    }

    fn committed(&mut self, seq: u64) {
        if seq > self.committed_seq {
            self.committed_seq = seq;
            let _ = self.events.send(SyncEvent::Committed { seq });
        }
    }

    /// Send the node's datagrams, map and forward its events, publish the status.
    fn flush(&mut self) {
        while let Some(d) = self.node.poll_transmit() {
            let _ = self.sock.send_to(&d, self.peer);
        }
        while let Some(d) = self.node.poll_heartbeat() {
            let to = self.heartbeats.as_ref().map_or(self.peer, |h| h.to);
            let _ = self.sock.send_to(&d, to);
        }
        while let Some(d) = self.node.poll_beacon() {
            if let Some(b) = &self.beacon_out {
                let _ = b.sock.send_to(&d, b.to);
            }
        }
        while let Some(e) = self.node.poll_event() {
            match e {
                Event::Committed(index) => {
                    let mut seq = None;
                    while self.pending.front().is_some_and(|(i, _)| *i <= index) {
                        seq = self.pending.pop_front().map(|(_, s)| s);
                    }
                    if let Some(seq) = seq {
                        self.committed(seq);
                    }
                }
                e => {
                    // Handed over: the rooms stop at the handover tick, not now (the backup
                    // starts there).
                    if matches!(&e, Event::Fatal(err) if *err != ft_sync::Error::HandedOver)
                        && self.node.role() == Role::Primary
                    {
                        self.fenced.store(true, Ordering::SeqCst);
                    }
                    let dead = matches!(e, Event::PeerDead);
                    let _ = self.events.send(SyncEvent::Node(e));
                    if dead && self.node.role() == Role::Primary {
                        // Unprotected: everything submitted counts as committed.
                        if let Some(&(_, seq)) = self.pending.back() {
                            self.unprotected(seq);
                        }
                    }
                }
            }
        }
        let st = status_of(&self.node, self.committed_seq, self.last_seq);
        *self.status.lock().unwrap() = st;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ft_sync::{Config, PeerState};

    fn node(id: u64, role: Role) -> Node<u64> {
        let mut c = Config::new(id, role, b"arrival order test key".to_vec(), id);
        c.client_path_beacons = true;
        c.heartbeat_channel = true;
        c.backup_heartbeats_every = 4;
        c.primary_patience = 3;
        Node::new(c, Duration::ZERO)
    }

    /// Everything `from` queued for the sync link (heartbeats too when `heartbeats`), handed
    /// to `to` at `now`.
    fn exchange(from: &mut Node<u64>, to: &mut Node<u64>, now: Duration, heartbeats: bool) {
        while let Some(d) = from.poll_transmit() {
            to.handle_datagram(&d, now);
        }
        while let Some(d) = heartbeats.then(|| from.poll_heartbeat()).flatten() {
            to.handle_datagram(&d, now);
        }
    }

    #[test]
    fn a_batch_read_late_is_handled_in_arrival_order() {
        // Five of every six of the primary's heartbeats lost, every beacon arriving, the
        // backup reading both every 40 ms: the primary was never silent on both paths for
        // more than an interval. Handled heartbeats first, each heartbeat after a lost run
        // looked like a silence as long as the run (the backup then waits that much longer
        // before declaring a real death).
        let ms = Duration::from_millis;
        let (mut p, mut b) = (node(1, Role::Primary), node(2, Role::Backup));
        let mut t = Duration::ZERO;
        // Handshake over the sync link, in lockstep.
        while t < ms(100) {
            p.handle_timeout(t);
            b.handle_timeout(t);
            exchange(&mut p, &mut b, t, true);
            exchange(&mut b, &mut p, t, true);
            while p.poll_beacon().is_some() {}
            t += ms(1);
        }
        assert_eq!(b.peer_state(), PeerState::Alive);
        // What waits on the heartbeat socket and in the beacon queue: (arrival, datagram).
        let (mut on_socket, mut in_queue) = (Vec::new(), Vec::new());
        let (mut arrived, mut bytes) = (Vec::new(), Vec::new());
        let mut heartbeats = 0u32;
        while t < ms(3_000) {
            p.handle_timeout(t);
            while let Some(h) = p.poll_heartbeat() {
                if heartbeats.is_multiple_of(6) {
                    on_socket.push((t, h));
                }
                heartbeats += 1;
            }
            while let Some(beacon) = p.poll_beacon() {
                in_queue.push((t + Duration::from_micros(50), beacon));
            }
            exchange(&mut p, &mut b, t, false);
            if t.as_millis() % 40 == 39 {
                // Read as the thread reads them: the socket, then the queue.
                let socket = on_socket.drain(..).map(|(at, d)| (at, false, d));
                let queue = in_queue.drain(..).map(|(at, d)| (at, true, d));
                for (at, beacon, d) in socket.chain(queue) {
                    arrived.push((at, beacon, bytes.len()..bytes.len() + d.len()));
                    bytes.extend_from_slice(&d);
                }
                in_arrival_order(&mut b, &mut arrived, &bytes, t);
                bytes.clear();
                if b.poll_timeout().is_some_and(|d| d <= t) {
                    b.handle_timeout(t);
                }
                exchange(&mut b, &mut p, t, true);
            }
            t += ms(1);
        }
        assert!(heartbeats > 280, "{heartbeats} heartbeats");
        assert!(b.stats().beacons > 280, "{:?}", b.stats());
        assert!(
            b.recent_max_silence() <= ms(11),
            "the backup saw the primary silent for {:?}",
            b.recent_max_silence()
        );
        assert_ne!(b.peer_state(), PeerState::Dead);
    }
}
