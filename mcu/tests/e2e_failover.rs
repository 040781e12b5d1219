//! Hot-standby takeover end to end (issue 4), in the network-namespace test bed
//! (`scripts/testbed`): a primary and a backup `mcu` serve the service address 198.18.0.100;
//! three sipp UACs playing sipp's recorded A-law capture and one baresip speaking Opus join
//! one room; about 5 s into the conference the primary's process gets `kill -9`; the calls go
//! on to about 15 s and the sipp UACs hang up (their BYE reaches the backup). tcpdump in each
//! client's namespace records what that client saw, and `pcap-harness` (the analyzer behind
//! `mcu pcap analyze --json`) checks that the takeover was invisible to it: one SSRC from the
//! service address, no duplicates or sequence regressions, consistent timestamps, a media
//! gap of at most 100 ms, speech after the kill, no SIP request from the server after the
//! kill, and a BYE after the takeover answered 200.
//!
//! The same run with another fault at that point (issue 10's fault matrix), one test each:
//! - stall: the primary stops for 100 ms (SIGSTOP/SIGCONT) instead of dying: a stall longer
//!   than the failure detection must not cost the conference either (the backup takes over;
//!   the resumed primary must yield, not send a second copy of the media);
//! - partition: the sync link is cut for 3 s while both nodes live (iptables in the backup's
//!   namespace; the clients' path stays up): nobody may take over, no client may get a
//!   second copy of its stream, and the pair must be primary + synced backup again within
//!   10 s of the healing; then the primary gets `kill -9` as above;
//! - host crash: the primary's link goes down and its process dies with it (no cleanup, no
//!   ARP);
//! - rejoin: after the first takeover the old primary's node is restarted as the backup of
//!   the node that took over; once it is synced and receives the mirrored client input, the
//!   node that took over gets `kill -9` too: the second takeover must be as invisible (the
//!   gap is analysed around each kill) and fenced like the first;
//! - lossy sync link: 20 % random loss on the sync link, both directions, for
//!   `FAILOVER_LOSSY_SECS` (iptables `statistic` in the backup's namespace; this kernel has no
//!   netem): nobody may take over, no client may get a duplicate; once healed and synced
//!   again the primary gets `kill -9`. Prints `FAILOVER lossy secs=X primary_flaps=N
//!   backup_sync_lost=M` (the primary's "UNPROTECTED" and the backup's "sync link: silent"
//!   log lines during the loss);
//! - CPU hog: busy loops in the primary's namespace, one per core, saturate the machine for
//!   `FAILOVER_HOG_SECS`: nobody may take over, no client may get a duplicate; 1 s after
//!   the hog the primary gets `kill -9`. Prints `FAILOVER hog max_gap_ms=X` (the largest
//!   media gap overlapping the hog, any client).
//!
//! Every run prints `FAILOVER gap clientN=X.Xms max=Y.Yms` per client (X: the largest
//! arrival gap across the kill, Y: over the whole call; `scripts/failover-runs` collects
//! them; `FAILOVER gap2 ...` for the second kill of the rejoin) and a table of what each
//! client received.
//!
//! Environment:
//! - `FAILOVER_MODE=standalone`: one plain `mcu serve` holding the service address, no
//!   kill (the control run: the same conference and the same media assertions, with the
//!   kill time replaced by the moment the kill would have happened).
//! - `FAILOVER_ORDER=primary-first|backup-first` (default backup-first): which node starts
//!   first (either must work).
//! - `FAILOVER_DEMO=1`: print both nodes' `/api/status` every 500 ms while the conference
//!   runs.
//! - `FAILOVER_EXTRA_ARGS`: more `mcu serve` flags for both nodes, e.g.
//!   `--ft-heartbeat-ms 10 --ft-dead-after 5`.
//! - `FAILOVER_PREFIX` (default `us-fo`): namespace prefix of the test bed.
//! - `FAILOVER_LOSSY_SECS` (default 15), `FAILOVER_HOG_SECS` (default 10): how long the lossy
//!   sync link and the CPU hog last (the calls are made long enough to outlast them:
//!   `scripts/soak-lossy-sync` runs 10 minutes of loss).
//! - `KEEP_SCRATCH=1`: keep the captures and logs (their directory is printed).

mod common;
use common::Node;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use testkit::bed::{Testbed, VIP};
use testkit::capture::Capture;
use testkit::peers;
use testkit::poll;
use testkit::process::{run as sh, signal, Guarded};

const CLIENTS: usize = 4;
const SIPP_CLIENTS: usize = 3;
const SIP_PORT: u16 = 5060;
const HTTP_PORT: u16 = 8080;
const RTP_PORTS: &str = "30000-30999";
const SIPP_MEDIA_PORT: u16 = 6000;
const BARESIP_RTP: (u16, u16) = (10000, 10099);
const ROOM: &str = "room";
/// Conference time before the kill, counted from the moment all four are in the room.
const KILL_AFTER: Duration = Duration::from_secs(5);
/// Largest media gap a client may see.
const MAX_GAP_MS: f64 = 100.0;
/// A 100 ms window with speech in the mix is louder than this.
const SPEECH_DBFS: f64 = -40.0;
/// The sync link's port on both nodes (`common::ft_node_args`: `--ft-listen` and
/// `--ft-peer` on `:7000`).
const SYNC_PORT: u16 = 7000;
/// The port of the primary's heartbeats (the sync port + 2): the same link, the same fault.
const HEARTBEAT_PORT: u16 = SYNC_PORT + 2;

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A test-bed node's address as text.
fn addr_of(node: &str) -> String {
    testkit::bed::addr_of(node).to_string()
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    /// Primary and backup; the primary is killed.
    Failover,
    /// One plain server holding the service address; nobody is killed.
    Standalone,
    /// Primary and backup; the primary is stopped (SIGSTOP) for [`STALL`] and resumed, as a
    /// scheduling stall or a VM pause would: the conference must go on, whoever serves it.
    Stall,
    /// Primary and backup; the sync link is cut for [`PARTITION`] while both live (the
    /// clients' path stays up), then healed; once the pair is synced again the primary is
    /// killed.
    Partition,
    /// Primary and backup; the primary's host dies: its link goes down and its process gets
    /// `kill -9` at once.
    HostCrash,
    /// Primary and backup; the primary is killed, restarted as the backup of the node that
    /// took over, and once that pair is synced the node that took over is killed.
    Rejoin,
    /// Primary and backup; 20 % random loss on the sync link (both directions) for
    /// [`lossy_secs`] while both live, then healed; once the pair is synced again the primary
    /// is killed.
    LossySync,
    /// Primary and backup; two busy loops in the primary's namespace saturate the machine's
    /// two cores for [`hog_secs`]; then they stop and the primary is killed.
    Hog,
    /// Primary and backup; a planned switchover (`POST /api/failover` on the primary): the
    /// backup serves from the handover tick, the old primary rejoins as its backup. Stricter
    /// than a takeover: no sequence number missing, at most one packet late
    /// ([`MAX_SWITCHOVER_GAP_MS`]).
    Switchover,
}

impl Mode {
    /// How many times each sipp plays its 7 s recording (one play per 8 s of call): the
    /// calls must outlast the fault step by 5 s (two kills, or a partition and its
    /// resynchronisation, take longer than one kill).
    fn plays(self) -> u32 {
        match self {
            Mode::Partition | Mode::Rejoin => 4,
            // The fault, the resynchronisation (at most [`RESYNC_WITHIN`]) and 5 s after the
            // kill, rounded up to whole plays.
            Mode::LossySync => plays_for(lossy_secs()),
            Mode::Hog => plays_for(hog_secs()),
            _ => 2,
        }
    }

    /// Length of baresip's speech file (it hangs up when the file ends): past the sipps'
    /// calls (`plays` x 8 s + the DTMF and BYE).
    fn speech_secs(self) -> u32 {
        self.plays() * 8 + 4
    }
}

/// How many plays of sipp's recording (8 s each) cover a call that starts [`KILL_AFTER`]
/// before a fault of `fault`, a resynchronisation of at most [`RESYNC_WITHIN`] after it, the
/// kill and 5 s of speech after the kill, with a few seconds to spare.
fn plays_for(fault: Duration) -> u32 {
    let call = KILL_AFTER + fault + RESYNC_WITHIN + Duration::from_secs(5 + 3);
    call.as_secs().div_ceil(8) as u32
}

/// Seconds from the environment variable `name` (a whole number), or `default`.
fn env_secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

/// How long [`Mode::LossySync`] drops a share of the sync link's datagrams
/// (`FAILOVER_LOSSY_SECS`, default 15; `scripts/soak-lossy-sync` runs it for 10 minutes).
fn lossy_secs() -> Duration {
    env_secs("FAILOVER_LOSSY_SECS", 15)
}

/// The share of the sync link's datagrams [`Mode::LossySync`] drops, each direction.
const LOSS: f64 = 0.2;

/// How long [`Mode::Hog`] saturates the machine (`FAILOVER_HOG_SECS`, default 10).
fn hog_secs() -> Duration {
    env_secs("FAILOVER_HOG_SECS", 10)
}

/// How many busy loops [`Mode::Hog`] runs: one per core of the machine (at least 2).
fn hog_loops() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
}

/// How long [`Mode::Stall`] stops the primary (longer than the default failure detection,
/// 3 x 10 ms heartbeats).
const STALL: Duration = Duration::from_millis(100);
/// Largest media gap a client may see in [`Mode::Stall`]: the stall plus the takeover.
const MAX_STALL_GAP_MS: f64 = 250.0;
/// How long [`Mode::Partition`] cuts the sync link.
const PARTITION: Duration = Duration::from_secs(3);
/// How long after the healing [`Mode::Partition`] waits for primary + synced backup.
const RESYNC_WITHIN: Duration = Duration::from_secs(10);
/// [`Mode::Rejoin`]'s second kill comes no earlier than this after the first.
const REJOIN_SECOND_KILL_AFTER: Duration = Duration::from_secs(3);

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// One line about a node's `/api/status` (or why there is none).
fn status_summary(node: &Node) -> String {
    if node.killed {
        return "killed".into();
    }
    if !node.running() {
        return "EXITED (see its log above)".into();
    }
    match node.get_json("/api/status") {
        None => "no answer".into(),
        Some(s) => format!(
            "role={} peer={} synced={} committed={} unacked={} lag={}ms mirrored={} takeover={}",
            s["role"].as_str().unwrap_or("?"),
            s["peer"].as_str().unwrap_or("?"),
            s["synced"],
            s["replication"]["committed"],
            s["replication"]["unacked"],
            s["replication"]["lag_ms"],
            s["mirrored_packets"],
            s["last_takeover"],
        ),
    }
}

/// `mcu serve` flags of the hot-standby node in namespace `node` in role `role`, its peer
/// in namespace `peer`.
fn ft_args(node: &str, role: &str, peer: &str, key: &std::path::Path) -> Vec<String> {
    let extra = std::env::var("FAILOVER_EXTRA_ARGS").unwrap_or_default();
    let extra: Vec<String> = extra.split_whitespace().map(String::from).collect();
    common::ft_node_args_as(node, role, peer, key, &extra)
}

fn http_addr(node: &str) -> SocketAddr {
    format!("{}:{HTTP_PORT}", addr_of(node)).parse().unwrap()
}

/// Number of participants in the room according to `node`'s `/api/rooms`.
fn participants(node: &Node) -> usize {
    node.get_json("/api/rooms")
        .and_then(|r| {
            r["rooms"].as_array().and_then(|rooms| {
                rooms
                    .iter()
                    .find(|x| x["name"] == ROOM)
                    .and_then(|x| x["participants"].as_object().map(|p| p.len()))
            })
        })
        .unwrap_or(0)
}

/// Whether `primary` reports role primary, its peer alive and synced, and `backup` role
/// backup, its peer alive and the full state (whichever namespaces they run in).
fn pair_synced(primary: &Node, backup: &Node) -> bool {
    let (Some(p), Some(b)) = (
        primary.get_json("/api/status"),
        backup.get_json("/api/status"),
    ) else {
        return false;
    };
    p["role"] == "primary"
        && p["peer"] == "alive"
        && p["synced"] == true
        && b["role"] == "backup"
        && b["peer"] == "alive"
        && b["synced"] == true
}

/// The standby `backup` logged a takeover (or the serving `primary` is gone) before the
/// test killed anything: a false failure detection (e.g. the primary stalled for longer
/// than the heartbeat timeout, or the sync link was cut). `None` when neither happened.
fn early_takeover(bed: &Testbed, primary: &Node, backup: &mut Node) -> Option<String> {
    backup.log.pump();
    let early: Vec<_> = backup
        .log
        .lines
        .iter()
        .filter(|l| l.contains("taking over") || l.contains("takeover complete"))
        .cloned()
        .collect();
    (!early.is_empty() || !primary.running()).then(|| {
        format!(
            "the backup took over before the kill (primary running: {}): {early:#?}\n  \
             primary: {}\n  backup: {}\n  addresses: primary [{}] backup [{}]",
            primary.running(),
            status_summary(primary),
            status_summary(backup),
            bed.addrs(&primary.name).replace('\n', "; "),
            bed.addrs(&backup.name).replace('\n', "; "),
        )
    })
}

/// What a [`SyncLinkFault`] does to the sync link's datagrams.
#[derive(Clone, Copy, Debug)]
enum LinkDrop {
    /// Every datagram is dropped: the link is cut.
    All,
    /// Each datagram is dropped with this probability (iptables `statistic --mode random`;
    /// this kernel has no netem).
    Random(f64),
}

/// A fault of the sync link in one node's namespace: iptables rules dropping UDP to the sync
/// and heartbeat ports (all of it, or a random share, see [`LinkDrop`]) on INPUT from the wire (`-i eth0`:
/// the peer's datagrams) and OUTPUT to the wire (`-o eth0`: this node's), so both directions
/// suffer; the node's own loopback traffic to its sync socket (its thread's waker) is not the
/// link. Tagged with the comment [`SyncLinkFault::TAG`] and removed by that spec in
/// [`SyncLinkFault::heal`], or on drop (a failing assertion heals the link too).
struct SyncLinkFault<'a> {
    bed: &'a Testbed,
    node: String,
    drop: LinkDrop,
    active: bool,
}

impl<'a> SyncLinkFault<'a> {
    const TAG: &'static str = "us-sync-fault";
    const CHAINS: [&'static str; 2] = ["INPUT", "OUTPUT"];

    fn rule(&self, op: &str, chain: &str) -> Vec<String> {
        let dir = if chain == "INPUT" { "-i" } else { "-o" };
        let mut rule: Vec<String> = ["iptables", "-w", op, chain, dir, "eth0", "-p", "udp"]
            .map(String::from)
            .to_vec();
        rule.extend(["-m", "multiport", "--dports"].map(String::from));
        rule.push(format!("{SYNC_PORT},{HEARTBEAT_PORT}"));
        if let LinkDrop::Random(p) = self.drop {
            rule.extend(["-m", "statistic", "--mode", "random", "--probability"].map(String::from));
            rule.push(format!("{p}"));
        }
        rule.extend(["-m", "comment", "--comment", Self::TAG, "-j", "DROP"].map(String::from));
        rule
    }

    /// Start dropping the sync link's datagrams as `drop` says in `node`'s namespace.
    fn start(bed: &'a Testbed, node: &str, drop: LinkDrop) -> Self {
        let mut fault = SyncLinkFault {
            bed,
            node: node.into(),
            drop,
            active: true,
        };
        for chain in Self::CHAINS {
            let rule = fault.rule("-I", chain);
            let out = bed
                .command(node, &rule[0])
                .args(&rule[1..])
                .stdin(Stdio::null())
                .output()
                .expect("run iptables");
            if !out.status.success() {
                fault.remove();
                panic!("{node}: {rule:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        fault
    }

    /// Remove the rules (each once; failures are reported, not fatal); true when all went.
    fn remove(&mut self) -> bool {
        self.active = false;
        let mut all = true;
        for chain in Self::CHAINS {
            let rule = self.rule("-D", chain);
            let ok = self
                .bed
                .command(&self.node, &rule[0])
                .args(&rule[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!("FAILOVER {}: {rule:?} failed", self.node);
                all = false;
            }
        }
        all
    }

    /// Heal the link; fails the test when a rule could not be removed.
    fn heal(mut self) {
        assert!(self.remove(), "could not remove the sync-link fault");
    }
}

impl Drop for SyncLinkFault<'_> {
    fn drop(&mut self) {
        if self.active {
            self.remove();
        }
    }
}

/// Busy-loop processes (`sh -c 'while :; do :; done'`) in one node's namespace, one per core
/// asked for: a CPU hog on that node's host (the test bed's namespaces share the machine's
/// cores, so the whole machine is saturated). Each is killed by its pid and reaped on drop
/// (a failing assertion stops the hog too).
struct CpuHog {
    hogs: Vec<Guarded>,
}

impl CpuHog {
    /// Start `n` busy loops in `node`'s namespace (`ip netns exec` execs `sh`: each child's
    /// pid is its loop's).
    fn start(bed: &Testbed, node: &str, n: usize) -> CpuHog {
        let hogs = (0..n)
            .map(|_| {
                Guarded(
                    bed.command(node, "sh")
                        .args(["-c", "while :; do :; done"])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("spawn a busy loop"),
                )
            })
            .collect();
        CpuHog { hogs }
    }

    /// The busy loops' pids.
    fn pids(&self) -> Vec<u32> {
        self.hogs.iter().map(|h| h.0.id()).collect()
    }

    /// Kill the busy loops (by pid) and reap them.
    fn stop(self) {
        drop(self.hogs);
    }
}

/// When the fault happened, for the client checks (Unix time, seconds).
struct Faults {
    /// The first disturbance (the kill, the stall, the cut of the sync link; standalone: the
    /// reference time): after it the server sends no SIP request and the clients hear
    /// speech.
    start: f64,
    /// The kills (or the stall, or the reference time), in order: the takeover gap is
    /// analysed around each, times are shown from the first, and the call must go on for
    /// 5 s after the last with the client's BYE after it.
    kills: Vec<f64>,
    /// [`Mode::Hog`]: when the machine was saturated (from, to): the largest media gap in
    /// that window is reported apart.
    hog: Option<(f64, f64)>,
}

impl Faults {
    /// One kill (or stall, or reference time) at `t`, nothing before it.
    fn at(t: f64) -> Faults {
        Faults {
            start: t,
            kills: vec![t],
            hog: None,
        }
    }

    fn first_kill(&self) -> f64 {
        self.kills[0]
    }

    fn last_kill(&self) -> f64 {
        self.kills[self.kills.len() - 1]
    }
}

/// What one client saw, and what is wrong with it.
struct ClientResult {
    name: String,
    /// Largest arrival gap across each kill (ms), in the order of [`Faults::kills`].
    gaps_ms: Vec<f64>,
    /// Largest arrival gap over the whole call (ms).
    max_gap_ms: f64,
    /// [`Mode::Hog`]: largest arrival gap that overlaps the hog (ms).
    hog_gap_ms: Option<f64>,
    line: String,
    problems: Vec<String>,
}

fn check_client(
    name: &str,
    report: &pcap_harness::Report,
    extracted: &[pcap_harness::analyze::Extracted],
    faults: &Faults,
    mode: Mode,
) -> ClientResult {
    let ip = addr_of(name);
    let kill_time = faults.first_kill();
    let mut problems = vec![];
    let from_vip = |s: &str| {
        s.rsplit_once(':')
            .is_some_and(|(a, _)| a == VIP.to_string())
    };
    let to_client = |s: &str| s.rsplit_once(':').is_some_and(|(a, _)| a == ip);
    let streams: Vec<_> = report
        .rtp_streams
        .iter()
        .filter(|s| from_vip(&s.src) && to_client(&s.dst))
        .collect();
    if streams.len() != 1 {
        problems.push(format!(
            "{} streams (SSRC/5-tuple) from the service address, expected exactly one: {:?}",
            streams.len(),
            streams
                .iter()
                .map(|s| format!(
                    "{} -> {} ssrc {} {} pkts",
                    s.src, s.dst, s.ssrc_hex, s.packets
                ))
                .collect::<Vec<_>>()
        ));
    }
    let Some(s) = streams.iter().max_by_key(|s| s.packets) else {
        return ClientResult {
            name: name.into(),
            gaps_ms: faults.kills.iter().map(|_| f64::NAN).collect(),
            max_gap_ms: f64::NAN,
            hog_gap_ms: None,
            line: format!("{name:<8} no RTP from {VIP}"),
            problems,
        };
    };
    // The takeover gap of each kill: the largest arrival gap that ends after the kill and
    // starts within a second of it and before the next kill (the stream's max_gap_ms covers
    // the whole call, scheduling stalls too).
    let packets = extracted
        .iter()
        .find(|e| e.stream.ssrc == s.ssrc && e.stream.src == s.src && e.stream.dst == s.dst)
        .map(|e| &e.packets[..]);
    let gap_at = |t: f64, next: f64| -> (f64, u16) {
        packets
            .map(|p| {
                p.windows(2)
                    .filter(|w| w[1].time > t && w[0].time < (t + 1.0).min(next))
                    .map(|w| {
                        (
                            (w[1].time - w[0].time) * 1000.0,
                            w[1].hdr.seq.wrapping_sub(w[0].hdr.seq),
                        )
                    })
                    .fold((0.0f64, 0u16), |a, b| if b.0 > a.0 { b } else { a })
            })
            .unwrap_or((f64::NAN, 0))
    };
    let takeover_gaps: Vec<(f64, u16)> = faults
        .kills
        .iter()
        .enumerate()
        .map(|(i, t)| {
            gap_at(
                *t,
                faults.kills.get(i + 1).copied().unwrap_or(f64::INFINITY),
            )
        })
        .collect();
    // The largest arrival gap overlapping the hog (it may start before or end after it).
    let hog_gap_ms = faults.hog.map(|(from, to)| {
        packets
            .map(|p| {
                p.windows(2)
                    .filter(|w| w[1].time > from && w[0].time < to)
                    .map(|w| (w[1].time - w[0].time) * 1000.0)
                    .fold(0.0f64, f64::max)
            })
            .unwrap_or(f64::NAN)
    });
    // Everything the client's media port received, whoever sent it.
    if let Some(sink) = report.sink(&s.dst) {
        if sink.ssrcs.len() != 1 || sink.sources.len() != 1 {
            problems.push(format!(
                "the media port received from {:?} with SSRCs {:?}",
                sink.sources, sink.ssrcs
            ));
        }
    }
    if s.duplicates != 0 || s.reordered != 0 || s.seq_resets != 0 {
        problems.push(format!(
            "sequence: {} duplicates, {} reordered, {} resets {:?}",
            s.duplicates, s.reordered, s.seq_resets, s.resets
        ));
    }
    if s.ts_errors != 0 {
        problems.push(format!(
            "{} timestamp errors: {:?}",
            s.ts_errors,
            &s.ts_error_list[..s.ts_error_list.len().min(5)]
        ));
    }
    let max_gap = if mode == Mode::Stall {
        MAX_STALL_GAP_MS
    } else {
        MAX_GAP_MS
    };
    if s.max_gap_ms > max_gap {
        problems.push(format!(
            "media gap {:.1} ms (at {:+.3} s from the kill) > {max_gap} ms",
            s.max_gap_ms,
            s.max_gap_at - kill_time
        ));
    }
    if mode == Mode::Switchover {
        // A planned switchover: the backup sends the next packet of the stream, at most one
        // packet late.
        let (gap, step) = takeover_gaps[0];
        if gap > MAX_SWITCHOVER_GAP_MS || step != 1 {
            problems.push(format!(
                "switchover: largest gap {gap:.1} ms (at most {MAX_SWITCHOVER_GAP_MS}), sequence step {step} across it (expected 1: no packet missing)"
            ));
        }
        if s.lost != 0 {
            problems.push(format!("switchover: {} packets lost", s.lost));
        }
    }
    if !s.decoded || s.decode_errors != 0 {
        problems.push(format!(
            "audio not decodable ({}, {} errors)",
            s.codec, s.decode_errors
        ));
    }
    // Speech after the fault, in each stretch between the fault's start and each kill and
    // after the last: 100 ms windows of media time from the stream's first packet, from
    // 300 ms after the stretch's start to its end (the last: 500 ms before the stream's end).
    let mut bounds = vec![faults.start];
    bounds.extend(faults.kills.iter().copied().filter(|k| *k > faults.start));
    let (mut loud_all, mut windows_all) = (0, 0);
    for (i, from) in bounds.iter().enumerate() {
        let last = i + 1 == bounds.len();
        let until = if last {
            s.last_time - 0.5
        } else {
            bounds[i + 1]
        };
        let windows: Vec<f64> = s
            .energy_dbfs
            .iter()
            .enumerate()
            .filter(|(j, _)| {
                let t = s.first_time + *j as f64 * 0.1;
                t >= from + 0.3 && t + 0.1 <= until
            })
            .map(|(_, e)| *e)
            .collect();
        // Clients hear speech in most windows (sipp: ~95%, baresip hearing the sipps:
        // ~50%); well under that means the server lost the clients' audio. The minimum of
        // 10 loud windows applies to the stretch after the last kill (earlier ones may be
        // short).
        let loud = windows.iter().filter(|e| **e > SPEECH_DBFS).count();
        if (last && loud < 10) || (loud as f64) < windows.len() as f64 * 0.35 {
            let when = if bounds.len() == 1 {
                "after the kill".to_string()
            } else {
                format!(
                    "from {:+.1} s to {:+.1} s from the kill",
                    from - kill_time,
                    until - kill_time
                )
            };
            problems.push(format!(
                "only {loud} of {} windows {when} with speech energy: {windows:?}",
                windows.len()
            ));
        }
        loud_all += loud;
        windows_all += windows.len();
    }
    if s.last_time - faults.last_kill() < 5.0 {
        problems.push(format!(
            "media stopped {:.1} s after the {}kill",
            s.last_time - faults.last_kill(),
            if faults.kills.len() > 1 { "last " } else { "" }
        ));
    }
    // SIP: the server sends no request after the fault began, and the client's BYE (after
    // the last kill) is answered.
    let dialogs: Vec<_> = report
        .sip_dialogs
        .iter()
        .filter(|d| {
            d.messages
                .iter()
                .any(|m| to_client(&m.src) || to_client(&m.dst))
        })
        .collect();
    for d in &dialogs {
        for m in d
            .messages
            .iter()
            .filter(|m| m.time > faults.start && from_vip(&m.src) && m.method.is_some())
        {
            problems.push(format!(
                "server sent {} at {:+.3} s from the kill in {}",
                m.method.as_deref().unwrap_or("?"),
                m.time - kill_time,
                d.call_id
            ));
        }
    }
    let last_kill = faults.last_kill();
    let byes: Vec<_> = dialogs
        .iter()
        .flat_map(|d| d.messages.iter())
        .filter(|m| m.method.as_deref() == Some("BYE") && to_client(&m.src))
        .collect();
    let bye_ok = dialogs.iter().flat_map(|d| d.messages.iter()).any(|m| {
        m.status == Some(200) && m.cseq_method == "BYE" && from_vip(&m.src) && m.time > last_kill
    });
    match byes.first() {
        None => problems.push("the client sent no BYE".into()),
        Some(b) if mode != Mode::Standalone && b.time <= last_kill => problems.push(format!(
            "the client's BYE came {:.3} s before the {}kill",
            last_kill - b.time,
            if faults.kills.len() > 1 { "last " } else { "" }
        )),
        Some(_) if !bye_ok => problems.push("the BYE after the kill got no 200 OK".into()),
        Some(_) => {}
    }
    let gaps_text: String = takeover_gaps
        .iter()
        .enumerate()
        .map(|(i, (gap, seq))| {
            let label = if i == 0 {
                "takeover gap".to_string()
            } else {
                format!("gap{}", i + 1)
            };
            format!("{label} {gap:>5.1} ms (seq +{seq}) ")
        })
        .collect();
    let hog_text = hog_gap_ms.map_or(String::new(), |g| format!("hog gap {g:>5.1} ms "));
    let line = format!(
        "{name:<8} {:<20} ssrc {} {:>5} pkts lost {:>3} dup {} reo {} ts_err {} {gaps_text}{hog_text}max gap {:>5.1} ms at {:+.3} s jitter {:>5.2} ms speech {loud_all}/{windows_all} windows after the fault, BYE {}",
        s.dst,
        s.ssrc_hex,
        s.packets,
        s.lost,
        s.duplicates,
        s.reordered,
        s.ts_errors,
        s.max_gap_ms,
        s.max_gap_at - kill_time,
        s.jitter_ms,
        if bye_ok { "200" } else { "unanswered" },
    );
    ClientResult {
        name: name.into(),
        gaps_ms: takeover_gaps.iter().map(|g| g.0).collect(),
        max_gap_ms: s.max_gap_ms,
        hog_gap_ms,
        line,
        problems,
    }
}

/// `kill -9` `victim` (only its pid) and wait up to 5 s for "takeover complete" in `heir`'s
/// log. Returns the kill time and that log line.
fn kill_and_wait_takeover(victim: &mut Node, heir: &mut Node, what: &str) -> (f64, Option<String>) {
    let pid = victim.child.id();
    let t = now_unix();
    let gone = if victim.running() {
        ""
    } else {
        ", which had exited already"
    };
    victim.kill9();
    eprintln!("FAILOVER kill -9 {pid} ({what}{gone}) at {t:.3}");
    let line = heir.log.wait("takeover complete", Duration::from_secs(5));
    eprintln!(
        "FAILOVER {} logged {:?} {:.1} ms after the kill\n  {}: {}",
        heir.name,
        line,
        (now_unix() - t) * 1000.0,
        heir.name,
        status_summary(heir)
    );
    (t, line)
}

/// Largest arrival gap a client may see across a planned switchover: one 20 ms packet late
/// at most (two packet times), plus the test bed's scheduling jitter.
const MAX_SWITCHOVER_GAP_MS: f64 = 45.0;

/// [`Mode::Switchover`]: `POST /api/failover` on the primary; the backup must serve, and the
/// old primary be its synced backup again.
fn fault_switchover(primary: &mut Node, backup: &mut Node, problems: &mut Vec<String>) -> Faults {
    let t = now_unix();
    let reply = primary.post("/api/failover");
    eprintln!("FAILOVER POST /api/failover at {t:.3}: {reply:?}");
    match &reply {
        Some((202, body)) if body.contains("from_tick") => {}
        other => panic!("POST /api/failover on the primary: {other:?}"),
    }
    let line = backup.log.wait("takeover complete", Duration::from_secs(5));
    eprintln!(
        "FAILOVER backup logged {line:?} {:.1} ms after the request",
        (now_unix() - t) * 1000.0
    );
    if line.is_none() {
        problems.push("the backup did not log \"takeover complete\" within 5 s".into());
    }
    // The old primary re-executes itself and rejoins as the backup of the node that took
    // over: the pair is protected again.
    let started = Instant::now();
    let synced = poll(Duration::from_secs(20), || {
        pair_synced(backup, primary).then(|| started.elapsed())
    });
    eprintln!(
        "FAILOVER switchover: old primary rejoined as backup after {:?}\n  new primary: {}\n  old primary: {}",
        synced,
        status_summary(backup),
        status_summary(primary)
    );
    if synced.is_none() {
        problems.push(format!(
            "the old primary is not the synced backup of the new one within 20 s:\n  new: {}\n  old: {}",
            status_summary(backup),
            status_summary(primary)
        ));
    }
    let planned = backup
        .get_json("/api/status")
        .map(|s| s["last_takeover"]["planned"].clone());
    if planned != Some(serde_json::Value::Bool(true)) {
        problems.push(format!(
            "the new primary's last_takeover is not marked planned: {planned:?}"
        ));
    }
    Faults::at(t)
}

/// [`Mode::Failover`]: `kill -9` of the primary.
fn fault_kill(primary: &mut Node, backup: &mut Node) -> Faults {
    let (t, line) = kill_and_wait_takeover(primary, backup, "primary mcu");
    assert!(
        line.is_some(),
        "the backup did not log \"takeover complete\" within 5 s of the kill"
    );
    Faults::at(t)
}

/// [`Mode::Stall`]: the primary stopped for [`STALL`], then resumed.
fn fault_stall(primary: &mut Node, backup: &mut Node) -> Faults {
    let t = now_unix();
    let pid = primary.child.id();
    signal(pid, libc::SIGSTOP);
    std::thread::sleep(STALL);
    signal(pid, libc::SIGCONT);
    eprintln!(
        "FAILOVER SIGSTOP {pid} (primary mcu) at {t:.3}, SIGCONT {:.1} ms later",
        (now_unix() - t) * 1000.0
    );
    let line = backup.log.wait("takeover complete", Duration::from_secs(1));
    eprintln!(
        "FAILOVER after the stall: backup logged {line:?}\n  primary: {}\n  backup: {}",
        status_summary(primary),
        status_summary(backup)
    );
    Faults::at(t)
}

/// [`Mode::HostCrash`]: the primary's eth0 goes down and its process gets `kill -9` at once
/// (the kill time is the link's).
fn fault_host_crash(bed: &Testbed, primary: &mut Node, backup: &mut Node) -> Faults {
    let pid = primary.child.id();
    let t = now_unix();
    bed.sh("primary", &["ip", "link", "set", "eth0", "down"]);
    let down = now_unix();
    primary.kill9();
    eprintln!(
        "FAILOVER host crash: primary's eth0 down at {t:.3} ({:.1} ms), \
         kill -9 {pid} (primary mcu) {:.1} ms later",
        (down - t) * 1000.0,
        (now_unix() - down) * 1000.0
    );
    let line = backup.log.wait("takeover complete", Duration::from_secs(5));
    eprintln!(
        "FAILOVER backup logged {:?} {:.1} ms after the link went down\n  backup: {}",
        line,
        (now_unix() - t) * 1000.0,
        status_summary(backup)
    );
    assert!(
        line.is_some(),
        "the backup did not log \"takeover complete\" within 5 s of the host crash"
    );
    Faults::at(t)
}

/// A sync-link fault of [`Mode::Partition`] or [`Mode::LossySync`]: what is dropped, for how
/// long, what the log lines call it, how often the nodes' status is shown meanwhile.
struct LinkFaultPlan {
    drop: LinkDrop,
    length: Duration,
    label: &'static str,
    report_every: Duration,
}

/// The machine's load average over the last minute (the test bed shares its cores with
/// whatever else runs), as text.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(String::from))
        .unwrap_or_else(|| "?".into())
}

/// Log lines of `node` (collected so far) that contain `needle`.
fn count_lines(node: &mut Node, needle: &str) -> usize {
    node.log.pump();
    node.log.lines.iter().filter(|l| l.contains(needle)).count()
}

/// [`Mode::Partition`] and [`Mode::LossySync`]: the sync link cut (or made lossy) in the
/// backup's namespace for the plan's length while both nodes live, healed, the pair synced
/// again (within [`RESYNC_WITHIN`]), then the primary killed. A takeover during the fault and
/// a pair that does not resynchronise are problems, not a stop: the clients' captures then
/// show what the fault cost them (a lossy link, which may run for minutes, is healed at the
/// first takeover).
fn fault_sync_link(
    bed: &Testbed,
    primary: &mut Node,
    backup: &mut Node,
    problems: &mut Vec<String>,
    plan: &LinkFaultPlan,
) -> Faults {
    let label = plan.label;
    // The nodes' log lines so far: the flaps are counted from the fault on.
    let flaps0 = count_lines(primary, "UNPROTECTED");
    let sync_lost0 = count_lines(backup, "sync link: silent");
    let start = now_unix();
    let fault = SyncLinkFault::start(bed, "backup", plan.drop);
    eprintln!(
        "FAILOVER sync link {} at {start:.3} for {:?} (UDP ports {SYNC_PORT} and {HEARTBEAT_PORT}, both directions, \
         in the backup's namespace)",
        match plan.drop {
            LinkDrop::All => "cut".to_string(),
            LinkDrop::Random(p) => format!("losing {:.0} %", p * 100.0),
        },
        plan.length
    );
    let t_fault = Instant::now();
    let mut early = None;
    while t_fault.elapsed() < plan.length {
        std::thread::sleep(
            plan.length
                .saturating_sub(t_fault.elapsed())
                .min(plan.report_every),
        );
        eprintln!(
            "FAILOVER {label} +{:.1}s load {} primary: {} | backup: {}",
            t_fault.elapsed().as_secs_f64(),
            load_average(),
            status_summary(primary),
            status_summary(backup)
        );
        if matches!(plan.drop, LinkDrop::All) && t_fault.elapsed() >= Duration::from_secs(1) {
            check_unprotected_visible(primary, backup, problems);
        }
        if matches!(plan.drop, LinkDrop::Random(_)) {
            early = early_takeover(bed, primary, backup);
            if early.is_some() {
                eprintln!(
                    "FAILOVER {label}: takeover after {:.1} s of the fault, healing the link",
                    t_fault.elapsed().as_secs_f64()
                );
                break;
            }
        }
    }
    let lasted = t_fault.elapsed();
    fault.heal();
    let healed = Instant::now();
    eprintln!(
        "FAILOVER sync link healed {:.1} ms after the fault began",
        (now_unix() - start) * 1000.0
    );
    let resynced = poll(RESYNC_WITHIN, || {
        pair_synced(primary, backup).then(|| healed.elapsed())
    });
    match resynced {
        Some(d) => eprintln!(
            "FAILOVER {label} resynced_after_ms={:.0}",
            d.as_secs_f64() * 1000.0
        ),
        None => {
            eprintln!("FAILOVER {label} resynced_after_ms=none");
            problems.push(format!(
                "the pair is not primary/alive/synced + backup/alive/synced \
                 {RESYNC_WITHIN:?} after the sync link healed:\n    primary: {}\n    backup: {}",
                status_summary(primary),
                status_summary(backup)
            ));
        }
    }
    if resynced.is_some() {
        for n in [&*primary, &*backup] {
            let st = n.get_json("/api/status");
            let gauge = n
                .get("/metrics")
                .map(|(_, m)| metric_opt(&m, "mcu_ft_protected"));
            if st.as_ref().map(|s| s["protected"].clone()) != Some(serde_json::json!(true))
                || gauge != Some(1.0)
            {
                problems.push(format!(
                    "{}: not shown protected again after the {label}: status protected {:?}, mcu_ft_protected {gauge:?}",
                    n.name,
                    st.map(|s| s["protected"].clone())
                ));
            }
        }
    }
    eprintln!(
        "FAILOVER after the {label}\n  primary: {}\n  backup:  {}",
        status_summary(primary),
        status_summary(backup)
    );
    // How often the pair lost its protection (the primary's log) and the backup found the
    // link silent while the primary's beacons arrived.
    let flaps = count_lines(primary, "UNPROTECTED") - flaps0;
    let sync_lost = count_lines(backup, "sync link: silent") - sync_lost0;
    if let LinkDrop::Random(_) = plan.drop {
        eprintln!(
            "FAILOVER {label} secs={:.0} primary_flaps={flaps} backup_sync_lost={sync_lost}",
            lasted.as_secs_f64()
        );
    } else {
        eprintln!("FAILOVER {label} primary_flaps={flaps} backup_sync_lost={sync_lost}");
    }
    // Nobody took over during the fault: the same check as before any kill.
    if let Some(early) = early.or_else(|| early_takeover(bed, primary, backup)) {
        problems.push(early);
    }
    let (kill, line) = kill_and_wait_takeover(primary, backup, "primary mcu");
    if line.is_none() {
        problems.push(
            "the backup did not log \"takeover complete\" within 5 s of the kill".to_string(),
        );
    }
    Faults {
        start,
        kills: vec![kill],
        hog: None,
    }
}

/// [`Mode::Hog`]: [`hog_loops`] busy loops in the primary's namespace for [`hog_secs`]
/// while both nodes live; then they stop, and 1 s later the primary is killed. A takeover
/// during the hog is a problem, not a stop: the clients' captures then show what it cost
/// them.
fn fault_hog(
    bed: &Testbed,
    primary: &mut Node,
    backup: &mut Node,
    problems: &mut Vec<String>,
) -> Faults {
    let length = hog_secs();
    let flaps0 = count_lines(primary, "UNPROTECTED");
    let start = now_unix();
    let hog = CpuHog::start(bed, "primary", hog_loops());
    eprintln!(
        "FAILOVER hog: {} busy loops (pids {:?}) in the primary's namespace at {start:.3} \
         for {length:?}",
        hog_loops(),
        hog.pids()
    );
    let t_hog = Instant::now();
    while t_hog.elapsed() < length {
        std::thread::sleep(
            length
                .saturating_sub(t_hog.elapsed())
                .min(Duration::from_secs(1)),
        );
        eprintln!(
            "FAILOVER hog +{:.1}s load {} primary: {} | backup: {}",
            t_hog.elapsed().as_secs_f64(),
            load_average(),
            status_summary(primary),
            status_summary(backup)
        );
    }
    hog.stop();
    let end = now_unix();
    eprintln!(
        "FAILOVER hog stopped {:.1} ms after it began",
        (end - start) * 1000.0
    );
    let flaps = count_lines(primary, "UNPROTECTED") - flaps0;
    eprintln!("FAILOVER hog secs={:.0} primary_flaps={flaps}", end - start);
    if let Some(early) = early_takeover(bed, primary, backup) {
        problems.push(early);
    }
    std::thread::sleep(Duration::from_secs(1));
    let (kill, line) = kill_and_wait_takeover(primary, backup, "primary mcu");
    if line.is_none() {
        problems.push(
            "the backup did not log \"takeover complete\" within 5 s of the kill".to_string(),
        );
    }
    Faults {
        start,
        kills: vec![kill],
        hog: Some((start, end)),
    }
}

/// [`Mode::Rejoin`]: the primary killed; its node restarted as the backup of the node that
/// took over (in `primary`'s place); once that pair is synced and the restarted backup
/// receives the mirrored client input, the node that took over killed too.
fn fault_rejoin(
    bed: &Testbed,
    key: &std::path::Path,
    primary: &mut Node,
    backup: &mut Node,
    problems: &mut Vec<String>,
) -> Faults {
    let (kill1, line) = kill_and_wait_takeover(primary, backup, "primary mcu");
    assert!(
        line.is_some(),
        "the backup did not log \"takeover complete\" within 5 s of the kill"
    );
    // The old primary's node comes back as the backup of the node that took over.
    let restarted = Instant::now();
    *primary = Node::start(
        bed,
        "primary",
        http_addr("primary"),
        &ft_args("primary", "backup", "backup", key),
    );
    eprintln!(
        "FAILOVER restarted the old primary's node as backup (pid {})",
        primary.child.id()
    );
    let synced = poll(Duration::from_secs(20), || {
        pair_synced(backup, primary).then(|| restarted.elapsed())
    });
    assert!(
        synced.is_some(),
        "the restarted node is not the synced backup of the node that took over within 20 s \
         of its start:\n  took over: {}\n  restarted: {}",
        status_summary(backup),
        status_summary(primary)
    );
    eprintln!(
        "FAILOVER rejoin synced_after_ms={:.0}\n  took over: {}\n  restarted: {}",
        synced.unwrap_or_default().as_secs_f64() * 1000.0,
        status_summary(backup),
        status_summary(primary)
    );
    // Re-protection: the new primary mirrors the client input to its new backup as the
    // original pair did (the clients send 50 packets/s each).
    let mirrored = |n: &Node| {
        n.get_json("/api/status")
            .and_then(|s| s["mirrored_packets"].as_u64())
    };
    // The rejoined pair serves a while before the second kill (at least a second, and
    // [`REJOIN_SECOND_KILL_AFTER`] after the first kill, so that the two takeover gaps are
    // told apart).
    let before = mirrored(primary);
    let since = Instant::now();
    std::thread::sleep(
        Duration::from_secs_f64(
            (kill1 + REJOIN_SECOND_KILL_AFTER.as_secs_f64() - now_unix()).max(0.0),
        )
        .max(Duration::from_secs(1)),
    );
    let after = mirrored(primary);
    let over = since.elapsed().as_secs_f64();
    eprintln!("FAILOVER rejoin mirrored_packets {before:?} -> {after:?} over {over:.1} s");
    if !matches!((before, after), (Some(b), Some(a)) if a > b) {
        problems.push(format!(
            "the restarted backup receives no mirrored client input (mirrored_packets \
             {before:?} -> {after:?} over {over:.1} s): the node that took over does not \
             mirror to it"
        ));
    }
    // The restarted backup has not taken over on its own.
    if let Some(early) = early_takeover(bed, backup, primary) {
        panic!("before the second kill: {early}");
    }
    let (kill2, line) = kill_and_wait_takeover(backup, primary, "the node that took over");
    if line.is_none() {
        problems.push(
            "the restarted backup did not log \"takeover complete\" within 5 s of the second kill"
                .to_string(),
        );
    }
    Faults {
        start: kill1,
        kills: vec![kill1, kill2],
        hog: None,
    }
}

fn run(mode: Mode) {
    testkit::require::e2e(
        "network namespaces, tcpdump",
        &["sipp", "baresip", "tcpdump", "espeak-ng", "ffmpeg", "ip"],
    );
    let demo = env_flag("FAILOVER_DEMO");
    let primary_first = std::env::var("FAILOVER_ORDER").is_ok_and(|v| v == "primary-first");
    let prefix = std::env::var("FAILOVER_PREFIX").unwrap_or_else(|_| "us-fo".into());
    let dir = testkit::Scratch::new("e2e-failover");
    eprintln!(
        "FAILOVER mode={mode:?} order={} scratch={}",
        if primary_first {
            "primary-first"
        } else {
            "backup-first"
        },
        dir.0.display()
    );

    // Inputs: sipp's scenario, baresip's speech (48 kHz stereo, past the end of the sipps'
    // calls), the shared key.
    let scen = peers::uac_pcap_scenario_times(&dir.0, mode.plays());
    sh(Command::new("espeak-ng")
        .arg("-w")
        .arg(dir.path("raw.wav"))
        .arg(
            "This is the baresip participant speaking in the conference room while the primary \
         server fails. One two three four five six seven eight nine ten. The quick brown fox \
         jumps over the lazy dog. The backup keeps the call going on the same stream.",
        ));
    sh(Command::new("ffmpeg")
        .args(["-y", "-loglevel", "error", "-stream_loop", "-1", "-i"])
        .arg(dir.path("raw.wav"))
        .args([
            "-t",
            &mode.speech_secs().to_string(),
            "-ar",
            "48000",
            "-ac",
            "2",
        ])
        .arg(dir.path("speech.wav")));
    let key = dir.path("ft.key");
    std::fs::write(&key, format!("understudy-e2e-{}", std::process::id())).unwrap();

    // One more client node: an attacker on the clients' segment.
    let bed = Testbed::up(&prefix, CLIENTS as u32 + 1);

    // The nodes.
    let mut nodes: Vec<Node> = vec![];
    match mode {
        Mode::Standalone => {
            bed.sh(
                "primary",
                &["ip", "addr", "add", &format!("{VIP}/24"), "dev", "eth0"],
            );
            let args: Vec<String> = [
                "--sip-listen",
                &format!("{VIP}:{SIP_PORT}"),
                "--media-ip",
                &VIP.to_string(),
                "--http-listen",
                &http_addr("primary").to_string(),
                "--rtp-ports",
                RTP_PORTS,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            nodes.push(Node::start(&bed, "primary", http_addr("primary"), &args));
        }
        Mode::Failover
        | Mode::Stall
        | Mode::Partition
        | Mode::HostCrash
        | Mode::Rejoin
        | Mode::LossySync
        | Mode::Hog
        | Mode::Switchover => {
            let order = if primary_first {
                [("primary", "backup"), ("backup", "primary")]
            } else {
                [("backup", "primary"), ("primary", "backup")]
            };
            for (node, peer) in order {
                let n = Node::start(
                    &bed,
                    node,
                    http_addr(node),
                    &ft_args(node, node, peer, &key),
                );
                // Let the first node come up alone before the second starts.
                let up = poll(Duration::from_secs(20), || n.get("/api/status"));
                assert!(up.is_some(), "{node} does not answer GET /api/status");
                nodes.push(n);
            }
            nodes.sort_by_key(|n| n.name != "primary");
        }
    }
    let (primary, rest) = nodes.split_first_mut().unwrap();
    let mut backup = rest.first_mut();

    // Ready: in failover mode both nodes see each other and the backup holds the state.
    let t0 = Instant::now();
    let ready = match backup.as_deref() {
        None => poll(Duration::from_secs(20), || {
            primary.get("/healthz").filter(|(c, _)| *c == 200)
        })
        .is_some(),
        Some(b) => poll(Duration::from_secs(20), || {
            pair_synced(primary, b).then_some(())
        })
        .is_some(),
    };
    eprintln!(
        "FAILOVER ready={ready} after {:.2} s\n  primary: {}\n  backup:  {}",
        t0.elapsed().as_secs_f64(),
        status_summary(primary),
        backup.as_deref().map_or("-".into(), status_summary)
    );
    assert!(ready, "the nodes did not become ready within 20 s");

    // Captures at every client, then the clients.
    let clients: Vec<String> = (1..=CLIENTS).map(|i| format!("client{i}")).collect();
    let captures: Vec<Capture> = clients
        .iter()
        .map(|c| {
            Capture::start_in(
                &bed.ns(c),
                "eth0",
                &dir.path(&format!("{c}.pcap")),
                &format!("udp and host {}", addr_of(c)),
            )
        })
        .collect();
    let mut sipps: Vec<Guarded> = clients[..SIPP_CLIENTS]
        .iter()
        .map(|c| {
            Guarded(
                bed.command(c, "sipp")
                    .arg("-sf")
                    .arg(&scen)
                    .args([
                        "-s",
                        ROOM,
                        "-i",
                        &addr_of(c),
                        "-p",
                        &SIP_PORT.to_string(),
                        "-mp",
                        &SIPP_MEDIA_PORT.to_string(),
                        "-m",
                        "1",
                        "-l",
                        "1",
                        "-nostdin",
                        "-timeout",
                        // Past the end of the call (sipp's -timeout is global).
                        &format!("{}s", mode.plays() * 8 + 30),
                        "-timeout_error",
                        "-trace_err",
                        "-error_file",
                    ])
                    .arg(dir.path(&format!("{c}-sipp-errors.log")))
                    .arg(format!("{VIP}:{SIP_PORT}"))
                    .current_dir(&dir.0)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn sipp"),
            )
        })
        .collect();
    let bare = &clients[SIPP_CLIENTS];
    let bcfg = peers::baresip_config(
        &dir.0,
        &addr_of(bare),
        SIP_PORT,
        BARESIP_RTP,
        &dir.path("speech.wav"),
    );
    let mut baresip = Guarded(
        peers::baresip_command(
            bed.command(bare, "baresip"),
            &bcfg,
            &format!("sip:{ROOM}@{VIP}:{SIP_PORT}"),
            mode.speech_secs() + 20,
        )
        .spawn()
        .expect("spawn baresip"),
    );

    // All four in the room on the primary; in failover mode the backup holds that state.
    let joined = poll(Duration::from_secs(15), || {
        (participants(primary) == CLIENTS).then_some(())
    });
    assert!(
        joined.is_some(),
        "not all {CLIENTS} clients joined on the primary: {:?}\n  primary: {}\n  backup: {}",
        primary.get("/api/rooms"),
        status_summary(primary),
        backup.as_deref().map_or("-".into(), status_summary)
    );
    let t_joined = Instant::now();
    if let Some(b) = backup.as_deref() {
        let synced = poll(Duration::from_secs(5), || {
            let s = b.get_json("/api/status")?;
            let p = primary.get_json("/api/status")?;
            (s["synced"] == true && p["replication"]["unacked"] == 0).then_some(())
        });
        assert!(
            synced.is_some(),
            "the backup does not hold the conference: primary {} / backup {}",
            status_summary(primary),
            status_summary(b)
        );
    }
    eprintln!(
        "FAILOVER all {CLIENTS} in room {ROOM:?}\n  primary: {}\n  backup:  {}",
        status_summary(primary),
        backup.as_deref().map_or("-".into(), status_summary)
    );

    // An attacker sends RTP to the baresip participant's port from another host, across the
    // kill: neither the primary nor the backup that takes over (whose mirrored input shows
    // the attacker's packets) may send that participant's media to it.
    let victim_port = primary
        .get_json("/api/rooms")
        .and_then(|r| {
            r["rooms"].as_array()?.iter().find_map(|room| {
                room["participants"].as_object()?.values().find_map(|p| {
                    let from = p["remote_media"].as_str()?;
                    from.starts_with(&format!("{}:", addr_of(bare)))
                        .then(|| p["local_rtp_port"].as_u64())?
                })
            })
        })
        .expect("the baresip participant's port in /api/rooms") as u16;
    // Only once the probation is over (a call learns the first source it hears within its
    // first 2 s: an attacker racing baresip's first packet would be learned, and that is the
    // documented price of NAT support, not what this checks).
    std::thread::sleep(
        (control::latch::PROBATION + Duration::from_millis(500)).saturating_sub(t_joined.elapsed()),
    );
    let attack_stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attacker = {
        let (ns, stop) = (
            bed.ns(&format!("client{}", CLIENTS + 1)),
            attack_stop.clone(),
        );
        std::thread::spawn(move || {
            testkit::bed::in_netns(&ns, move || {
                let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
                sock.set_read_timeout(Some(Duration::from_millis(20)))
                    .unwrap();
                let (mut sent, mut received) = (0u32, 0u32);
                let mut buf = [0u8; 2048];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut p = vec![0x80u8, 0, 0, 0, 0, 0, 0, 0, 0xba, 0xad, 0xf0, 0x0d];
                    p[2..4].copy_from_slice(&(sent as u16).to_be_bytes());
                    p.extend_from_slice(&[0x55u8; 160]);
                    let _ = sock.send_to(&p, (VIP, victim_port));
                    sent += 1;
                    if sock.recv_from(&mut buf).is_ok() {
                        received += 1;
                    }
                }
                (sent, received)
            })
        })
    };

    // The conference runs; then the primary dies (or, standalone, that moment is noted).
    while t_joined.elapsed() < KILL_AFTER {
        let left = KILL_AFTER.saturating_sub(t_joined.elapsed());
        if demo {
            std::thread::sleep(left.min(Duration::from_millis(500)));
            eprintln!(
                "FAILOVER status +{:.1}s primary: {} | backup: {}",
                t_joined.elapsed().as_secs_f64(),
                status_summary(primary),
                backup.as_deref().map_or("-".into(), status_summary)
            );
        } else {
            std::thread::sleep(left);
        }
    }
    let mut problems: Vec<String> = vec![];
    let faults = match backup.as_deref_mut() {
        None => {
            let t = now_unix();
            eprintln!("FAILOVER no kill (standalone), reference time {t:.3}");
            Faults::at(t)
        }
        Some(b) => {
            // A takeover before the fault is a false failure detection (e.g. the primary
            // stalled for longer than the heartbeat timeout): say so rather than blame the
            // fault.
            if let Some(early) = early_takeover(&bed, primary, b) {
                panic!("{early}");
            }
            match mode {
                Mode::Stall => fault_stall(primary, b),
                Mode::Partition => fault_sync_link(
                    &bed,
                    primary,
                    b,
                    &mut problems,
                    &LinkFaultPlan {
                        drop: LinkDrop::All,
                        length: PARTITION,
                        label: "partition",
                        report_every: Duration::from_millis(500),
                    },
                ),
                Mode::LossySync => fault_sync_link(
                    &bed,
                    primary,
                    b,
                    &mut problems,
                    &LinkFaultPlan {
                        drop: LinkDrop::Random(LOSS),
                        length: lossy_secs(),
                        label: "lossy",
                        report_every: Duration::from_secs(5),
                    },
                ),
                Mode::Hog => fault_hog(&bed, primary, b, &mut problems),
                Mode::HostCrash => fault_host_crash(&bed, primary, b),
                Mode::Rejoin => fault_rejoin(&bed, &key, primary, b, &mut problems),
                Mode::Switchover => fault_switchover(primary, b, &mut problems),
                Mode::Failover | Mode::Standalone => fault_kill(primary, b),
            }
        }
    };

    // The calls go on; sipp hangs up after its second playback, baresip when its file ends
    // (it answers nothing after that, so it is stopped once the room is empty on every node
    // still running).
    let serving: Vec<&Node> = [Some(&*primary), backup.as_deref()]
        .into_iter()
        .flatten()
        .filter(|n| !n.killed)
        .collect();
    let participants_all = || -> Vec<usize> {
        serving
            .iter()
            .filter(|n| n.running())
            .map(|n| participants(n))
            .collect()
    };
    let mut last_status = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut sipp_status = [None; SIPP_CLIENTS];
    let mut room_empty = false;
    while (sipp_status.iter().any(Option::is_none) || !room_empty) && Instant::now() < deadline {
        for (i, s) in sipps.iter_mut().enumerate() {
            if sipp_status[i].is_none() {
                sipp_status[i] = s.0.try_wait().unwrap();
            }
        }
        let counts = participants_all();
        room_empty = !counts.is_empty() && counts.iter().all(|c| *c == 0);
        if demo && last_status.elapsed() >= Duration::from_millis(500) {
            last_status = Instant::now();
            for n in &serving {
                eprintln!(
                    "FAILOVER status +{:.1}s {}: {} participants, {}",
                    t_joined.elapsed().as_secs_f64(),
                    n.name,
                    participants(n),
                    status_summary(n)
                );
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    attack_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (attack_sent, attack_received) = attacker.join().expect("the attacker thread");
    let baresip_left = baresip.0.try_wait().unwrap();
    // The node serving at the end (standalone: the only one; in a stall the primary may
    // still run, having yielded or not).
    let last_serving = serving.last().copied();
    let takeover = last_serving.and_then(|n| n.get_json("/api/status"));
    if let Some(b) = backup.as_deref() {
        eprintln!("FAILOVER backup after the calls: {}", status_summary(b));
    }
    if mode == Mode::Rejoin {
        eprintln!(
            "FAILOVER restarted node after the calls: {}",
            status_summary(primary)
        );
    }

    let foreign = |n: &Node| {
        n.get("/metrics").and_then(|(_, m)| {
            m.lines()
                .find(|l| l.starts_with("mcu_media_foreign_dropped_total "))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
    };
    let dropped: Vec<String> = serving
        .iter()
        .filter(|n| n.running())
        .map(|n| format!("{} {:?}", n.name, foreign(n)))
        .collect();
    eprintln!(
        "FAILOVER attacker: {attack_sent} packets sent to port {victim_port}, {attack_received} received; foreign packets dropped: {}",
        dropped.join(", ")
    );
    if attack_received > 0 {
        problems.push(format!(
            "the attacker received {attack_received} packets of the baresip participant's media"
        ));
    }
    if mode != Mode::Standalone && !last_serving.and_then(foreign).is_some_and(|d| d > 0.0) {
        problems.push(format!(
            "the node that took over last ({}) dropped no foreign packet after the takeover",
            last_serving.map_or("none", |n| n.name.as_str())
        ));
    }
    // A node that died on its own (a crash, or a signal from elsewhere: the exit status says
    // which) explains most of what follows.
    for n in [Some(&mut *primary), backup].into_iter().flatten() {
        if n.killed {
            continue;
        }
        if let Ok(Some(st)) = n.child.try_wait() {
            eprintln!("FAILOVER {} exited during the calls: {st}", n.name);
            // A primary that stalled past the failure detector yields to the backup that
            // took over: it exits.
            if !(mode == Mode::Stall && n.name == "primary") {
                problems.push(format!("{} exited during the calls: {st}", n.name));
            }
        }
    }
    let primary_gone = !primary.running();
    // Fencing: the namespace of the node killed last (or of the yielded primary) no longer
    // holds the service address; the node serving at the end holds it on a device other
    // than `lo` (where a standby keeps it silently).
    let fencing = match mode {
        Mode::Failover | Mode::Partition | Mode::HostCrash | Mode::LossySync | Mode::Hog => {
            Some(("primary", "backup"))
        }
        Mode::Stall if primary_gone => Some(("primary", "backup")),
        Mode::Rejoin => Some(("backup", "primary")),
        Mode::Stall | Mode::Standalone | Mode::Switchover => None,
    };
    if mode == Mode::Switchover {
        // The old primary, now the standby, holds the service address on `lo` only; the
        // new primary holds it on a device.
        let (old, new) = (bed.addrs("primary"), bed.addrs("backup"));
        let vip = format!("{VIP}/");
        let on_device = |a: &str| a.lines().any(|l| !l.starts_with("lo ") && l.contains(&vip));
        eprintln!(
            "FAILOVER addresses after the switchover: primary [{}] backup [{}]",
            old.replace('\n', "; "),
            new.replace('\n', "; ")
        );
        if on_device(&old) {
            problems.push(format!(
                "the old primary still holds {VIP} on a device: {old}"
            ));
        }
        if !on_device(&new) {
            problems.push(format!(
                "the new primary does not hold {VIP} on a device: {new}"
            ));
        }
    }
    if let Some((killed, serving)) = fencing {
        let (k, s) = (bed.addrs(killed), bed.addrs(serving));
        eprintln!(
            "FAILOVER addresses after the takeover: {killed} [{}] {serving} [{}]",
            k.replace('\n', "; "),
            s.replace('\n', "; ")
        );
        let vip = format!("{VIP}/");
        if k.contains(&vip) {
            problems.push(format!(
                "the killed node's host ({killed}) still holds {VIP}: {}",
                k.replace('\n', "; ")
            ));
        }
        if !s.lines().any(|l| !l.starts_with("lo ") && l.contains(&vip)) {
            problems.push(format!(
                "the serving node ({serving}) does not hold {VIP} on a device: {}",
                s.replace('\n', "; ")
            ));
        }
    }

    let pcaps: Vec<_> = captures.into_iter().map(Capture::stop).collect();
    let mut results = vec![];
    for (c, pcap) in clients.iter().zip(&pcaps) {
        let data = std::fs::read(pcap).expect("read capture");
        let (report, extracted) =
            pcap_harness::analyze::extract_streams(&data, &pcap_harness::Options::default())
                .expect("analyze capture");
        results.push(check_client(c, &report, &extracted, &faults, mode));
    }

    eprintln!("FAILOVER per client (stream from {VIP}; times relative to the kill):");
    for r in &results {
        eprintln!("  {}", r.line);
    }
    for r in &results {
        for (i, gap) in r.gaps_ms.iter().enumerate() {
            let nth = if i == 0 {
                String::new()
            } else {
                (i + 1).to_string()
            };
            eprintln!(
                "FAILOVER gap{nth} {}={gap:.1}ms max={:.1}ms",
                r.name, r.max_gap_ms
            );
        }
    }
    if faults.hog.is_some() {
        let per_client: Vec<String> = results
            .iter()
            .filter_map(|r| Some(format!("{}={:.1}", r.name, r.hog_gap_ms?)))
            .collect();
        let max = results
            .iter()
            .filter_map(|r| r.hog_gap_ms)
            .fold(f64::NAN, f64::max);
        eprintln!(
            "FAILOVER hog max_gap_ms={max:.1} ({})",
            per_client.join(" ")
        );
    }
    problems.extend(
        results
            .iter()
            .flat_map(|r| r.problems.iter().map(move |p| format!("{}: {p}", r.name))),
    );
    for (i, st) in sipp_status.iter().enumerate() {
        match st {
            Some(st) if st.success() => {}
            other => {
                let errs =
                    std::fs::read_to_string(dir.path(&format!("client{}-sipp-errors.log", i + 1)))
                        .unwrap_or_default();
                problems.push(format!(
                    "client{}: sipp did not complete INVITE/200/ACK/BYE/200 ({other:?}): {errs}",
                    i + 1
                ));
            }
        }
    }
    if !room_empty {
        problems.push(format!(
            "the room on the serving node is not empty 45 s after the kill (baresip {})",
            match baresip_left {
                Some(st) => format!("exited: {st}"),
                None => "still running".into(),
            }
        ));
    }
    if matches!(
        mode,
        Mode::Failover
            | Mode::Partition
            | Mode::HostCrash
            | Mode::Rejoin
            | Mode::LossySync
            | Mode::Hog
            | Mode::Switchover
    ) {
        let t = takeover.as_ref().map(|s| s["last_takeover"].clone());
        match &t {
            Some(t) if t.is_object() => eprintln!(
                "FAILOVER takeover duration_ms={} calls={} rooms={}",
                t["duration_ms"], t["calls"], t["rooms"]
            ),
            other => eprintln!("FAILOVER takeover none: {other:?}"),
        }
        if !t.is_some_and(|t| t.is_object()) {
            problems.push("the serving node's /api/status shows no last_takeover".into());
        }
    }
    assert!(
        problems.is_empty(),
        "takeover visible to clients:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn conference_survives_kill_of_primary() {
    let mode = match std::env::var("FAILOVER_MODE").as_deref() {
        Ok("standalone") => Mode::Standalone,
        _ => Mode::Failover,
    };
    run(mode);
}

#[test]
fn conference_survives_stall_of_primary() {
    run(Mode::Stall);
}

#[test]
fn conference_survives_sync_link_partition() {
    run(Mode::Partition);
}

#[test]
fn conference_survives_host_crash_of_primary() {
    run(Mode::HostCrash);
}

#[test]
fn conference_survives_second_takeover_after_rejoin() {
    run(Mode::Rejoin);
}

#[test]
fn conference_survives_lossy_sync_link() {
    run(Mode::LossySync);
}

#[test]
fn conference_survives_cpu_hog_on_primary() {
    run(Mode::Hog);
}

#[test]
fn planned_switchover_is_seamless() {
    run(Mode::Switchover);
}

/// During a cut sync link, both nodes say the pair is unprotected (`/api/status` and
/// `/metrics`), and the backup names the partition (`peer: sync_lost`, peer-state gauge 3).
fn check_unprotected_visible(primary: &Node, backup: &Node, problems: &mut Vec<String>) {
    let view = |n: &Node| {
        let st = n.get_json("/api/status");
        let m = n.get("/metrics").map(|(_, m)| m).unwrap_or_default();
        (
            st.as_ref()
                .map(|s| (s["protected"].clone(), s["peer"].clone())),
            metric_opt(&m, "mcu_ft_protected"),
            metric_opt(&m, "mcu_ft_peer_state"),
        )
    };
    let (p, b) = (view(primary), view(backup));
    let ok = p.0.as_ref().is_some_and(|(prot, _)| *prot == false)
        && p.1 == 0.0
        && b.0
            .as_ref()
            .is_some_and(|(prot, peer)| *prot == false && *peer == "sync_lost")
        && b.1 == 0.0
        && b.2 == 3.0;
    eprintln!("FAILOVER partition visible: primary {p:?} backup {b:?}");
    if !ok {
        problems.push(format!(
            "the partition is not visible as unprotected: primary (status, protected gauge, peer gauge) {p:?}, backup {b:?}"
        ));
    }
}

/// One sample of a `/metrics` text by its whole name, NaN when missing.
fn metric_opt(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (n, v) = l.split_once(' ')?;
            (n == name).then(|| v.split_whitespace().next()?.parse().ok())?
        })
        .unwrap_or(f64::NAN)
}
