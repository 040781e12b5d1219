//! Shared helpers for the namespace tests: a per-test test bed (scripts/testbed with its own
//! `us-<name>` prefix, torn down on drop, even when the test panics) and running code inside
//! one of its namespaces from a dedicated thread (network namespaces are per thread).
#![allow(dead_code)]

use std::fs::File;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub const PRIMARY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const BACKUP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const CLIENT1: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

pub fn testbed_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/testbed")
}

/// True when the test can run. Without root or `ip` it skips (returns false), unless `CI`
/// is set: then a missing prerequisite fails the test.
pub fn prerequisites() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let ip = Command::new("ip").arg("-V").output().is_ok();
    if root && ip {
        return true;
    }
    let why = format!("needs root (root={root}) and iproute2 (ip={ip})");
    if std::env::var_os("CI").is_some() {
        panic!("CI is set and this test {why}");
    }
    eprintln!("SKIPPED: {why}");
    false
}

/// A test bed with its own prefix; `down` on drop.
pub struct Testbed {
    pub prefix: String,
    pub clients: u32,
}

impl Testbed {
    pub fn up(prefix: &str, clients: u32) -> Testbed {
        assert!(prefix.starts_with("us-"));
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

    pub fn ns(&self, node: &str) -> String {
        format!("{}-{node}", self.prefix)
    }

    pub fn script(&self, args: &[&str]) -> std::process::Output {
        Command::new(testbed_script())
            .args(args)
            .env("TESTBED_PREFIX", &self.prefix)
            .env("TESTBED_CLIENTS", self.clients.to_string())
            .output()
            .expect("run scripts/testbed")
    }

    /// Runs a command in node's namespace; panics on failure; returns stdout.
    pub fn sh(&self, node: &str, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns(node)])
            .args(args)
            .output()
            .expect("ip netns exec");
        assert!(
            out.status.success(),
            "{node}: {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `f` on a fresh thread inside node's namespace and returns its result. Sockets
    /// created there stay in that namespace wherever they are used later.
    pub fn run_in<T: Send + 'static>(
        &self,
        node: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        self.spawn_in(node, f)
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    /// Like [`run_in`] but returns the thread handle.
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

    /// Waits until node's port on the bridge forwards and its eth0 has carrier.
    pub fn wait_forwarding(&self, node: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        loop {
            let port = self.sh("lan", &["ip", "-d", "link", "show", "dev", node]);
            let eth0 = self.sh(node, &["ip", "link", "show", "dev", "eth0"]);
            if port.contains("state forwarding") && eth0.contains("state UP") {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{node}: port not forwarding: {port}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Binds a UDP socket inside node's namespace.
    pub fn udp(&self, node: &str, addr: &str) -> UdpSocket {
        let addr = addr.to_string();
        let s = self.run_in(node, move || UdpSocket::bind(addr).expect("bind"));
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        s
    }

    /// The MAC of node's eth0.
    pub fn mac(&self, node: &str) -> [u8; 6] {
        self.run_in(node, || netfilter_shim::takeover::hw_addr("eth0").unwrap())
    }

    /// The client's neighbour entry for `ip` as `(lladdr, state)`, if any.
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

    /// `Icmp: OutDestUnreachs` of node's namespace.
    pub fn icmp_out_dest_unreachs(&self, node: &str) -> u64 {
        let snmp = self.sh(node, &["cat", "/proc/net/snmp"]);
        let mut icmp = snmp.lines().filter(|l| l.starts_with("Icmp:"));
        let (names, values) = (icmp.next().unwrap(), icmp.next().unwrap());
        let i = names
            .split_whitespace()
            .position(|n| n == "OutDestUnreachs")
            .unwrap();
        values.split_whitespace().nth(i).unwrap().parse().unwrap()
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

pub fn fmt_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Moves the calling thread into the network namespace at `path`.
pub fn enter_netns(path: &str) {
    let f = File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns(2) on a descriptor we hold open; it only changes this thread's network
    // namespace (the test harness never runs other tests on this thread).
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// Receives datagrams until `n` arrived or `timeout` passed with nothing new.
pub fn collect(sock: &UdpSocket, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
    sock.set_read_timeout(Some(timeout)).unwrap();
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
