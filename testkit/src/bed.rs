//! The network-namespace test bed (`scripts/testbed`) seen from a test: one L2 segment with a
//! primary (198.18.0.1), a backup (198.18.0.2) and clients (198.18.0.11..), each node in its
//! own namespace `PREFIX-NODE`. A [`Testbed`] exists while the value lives: brought up under
//! its own prefix (whatever an interrupted run left is removed first) and taken down on drop,
//! whatever happened.
//!
//! Nothing in the bed is reachable from the root namespace. Network namespaces are per
//! thread: [`in_netns`] / [`Testbed::run_in`] run a closure on a fresh thread that entered
//! the node's namespace (setns(2)); sockets it creates stay there wherever they are used
//! later, so any blocking client (e.g. [`crate::http`]) works inside the bed.

use std::fs::File;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The primary's address.
pub const PRIMARY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The backup's address.
pub const BACKUP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The first client's address.
pub const CLIENT1: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
/// The service address (VIP) the nodes claim; `scripts/testbed` leaves it unassigned.
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

/// Address of a node (`primary`, `backup`, `clientN`) on the bed's segment, as
/// `scripts/testbed` assigns them.
pub fn addr_of(node: &str) -> Ipv4Addr {
    match node {
        "primary" => PRIMARY,
        "backup" => BACKUP,
        c => {
            let n: u8 = c
                .strip_prefix("client")
                .and_then(|n| n.parse().ok())
                .filter(|n| (1..=80).contains(n))
                .unwrap_or_else(|| panic!("unknown test-bed node {c}"));
            Ipv4Addr::new(198, 18, 0, 10 + n)
        }
    }
}

fn testbed_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/testbed")
}

/// A test bed under its own prefix (`us-...`); `scripts/testbed down` on drop.
pub struct Testbed {
    /// Namespace prefix.
    pub prefix: String,
    /// Number of client nodes.
    pub clients: u32,
}

impl Testbed {
    /// A fresh bed with `clients` clients (fails the test without root or iproute2).
    pub fn up(prefix: &str, clients: u32) -> Testbed {
        crate::require::e2e("network namespaces", &["ip", "sysctl"]);
        assert!(
            prefix.starts_with("us-"),
            "test-bed prefix {prefix:?}: must start with us-"
        );
        let tb = Testbed {
            prefix: prefix.to_string(),
            clients,
        };
        // A leftover from an earlier, killed run: start clean.
        tb.script(&["down"]);
        let out = tb.script(&["up"]);
        assert!(
            out.status.success(),
            "testbed up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tb
    }

    /// Run `scripts/testbed ARGS` for this bed.
    pub fn script(&self, args: &[&str]) -> Output {
        Command::new(testbed_script())
            .args(args)
            .env("TESTBED_PREFIX", &self.prefix)
            .env("TESTBED_CLIENTS", self.clients.to_string())
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/testbed")
    }

    /// Namespace name of `node` (`primary`, `backup`, `clientN`, `lan`).
    pub fn ns(&self, node: &str) -> String {
        format!("{}-{node}", self.prefix)
    }

    /// `program` to be run inside `node`'s namespace (`ip netns exec` execs it: the child's
    /// pid is the program's own).
    pub fn command(&self, node: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(node), program]);
        c
    }

    /// Run `args` in `node`'s namespace; fails the test unless it succeeds; returns stdout.
    pub fn sh(&self, node: &str, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns(node)])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("ip netns exec");
        assert!(
            out.status.success(),
            "{node}: {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ip -br -4 addr` inside `node`: its interfaces and IPv4 addresses, one line each.
    pub fn addrs(&self, node: &str) -> String {
        self.sh(node, &["ip", "-br", "-4", "addr"])
            .trim()
            .to_string()
    }

    /// Run `f` on a fresh thread inside `node`'s namespace and return its result (a panic in
    /// `f` is the caller's panic).
    pub fn run_in<T: Send + 'static>(
        &self,
        node: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        self.spawn_in(node, f)
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    /// Like [`Testbed::run_in`] but returns the thread's handle.
    pub fn spawn_in<T: Send + 'static>(
        &self,
        node: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.ns(node));
        std::thread::spawn(move || {
            enter_netns(&path);
            f()
        })
    }

    /// Wait until `node`'s port on the bridge forwards and its eth0 has carrier.
    pub fn wait_forwarding(&self, node: &str) {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let port = self.sh("lan", &["ip", "-d", "link", "show", "dev", node]);
            let eth0 = self.sh(node, &["ip", "link", "show", "dev", "eth0"]);
            if port.contains("state forwarding") && eth0.contains("state UP") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{node}: port not forwarding: {port}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A UDP socket bound to `addr` inside `node`'s namespace (200 ms read timeout).
    pub fn udp(&self, node: &str, addr: &str) -> UdpSocket {
        let addr = addr.to_string();
        let s = self.run_in(node, move || {
            UdpSocket::bind(&addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"))
        });
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("set_read_timeout");
        s
    }

    /// `node`'s neighbour entry for `ip` on eth0 as `(lladdr, state)`, if any.
    pub fn neigh(&self, node: &str, ip: Ipv4Addr) -> Option<(String, String)> {
        let out = self.sh(
            node,
            &["ip", "neigh", "show", &ip.to_string(), "dev", "eth0"],
        );
        let line = out.lines().next()?;
        let mut tokens = line.split_whitespace();
        let mut lladdr = None;
        while let Some(t) = tokens.next() {
            if t == "lladdr" {
                lladdr = tokens.next().map(str::to_string);
            }
        }
        Some((lladdr?, line.split_whitespace().last()?.to_string()))
    }

    /// `Icmp: OutDestUnreachs` of `node`'s namespace.
    pub fn icmp_out_dest_unreachs(&self, node: &str) -> u64 {
        let snmp = self.sh(node, &["cat", "/proc/net/snmp"]);
        let mut icmp = snmp.lines().filter(|l| l.starts_with("Icmp:"));
        let (names, values) = (
            icmp.next().expect("Icmp names"),
            icmp.next().expect("Icmp values"),
        );
        let i = names
            .split_whitespace()
            .position(|n| n == "OutDestUnreachs")
            .expect("OutDestUnreachs");
        values
            .split_whitespace()
            .nth(i)
            .and_then(|v| v.parse().ok())
            .expect("a number")
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let out = self.script(&["down"]);
        if !out.status.success() {
            eprintln!(
                "testbed down failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Move the calling thread into the network namespace at `path` (`/run/netns/NAME`).
pub fn enter_netns(path: &str) {
    let f = File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns(2) on a descriptor we hold open for the call; it changes only this
    // thread's network namespace (callers use a thread of their own).
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// Run `f` on a new thread that first entered network namespace `ns` (a name under
/// `/run/netns`); the calling thread's namespace is untouched.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        enter_netns(&path);
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Receive datagrams on `sock` until `n` arrived or `timeout` passed with nothing new.
pub fn collect(sock: &UdpSocket, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
    sock.set_read_timeout(Some(timeout))
        .expect("set_read_timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while got.len() < n {
        match sock.recv(&mut buf) {
            Ok(len) => got.push(buf[..len].to_vec()),
            Err(_) => break,
        }
    }
    got
}

/// A MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
