//! The network-namespace test bed (`scripts/testbed`) seen from a test: bring it up under
//! its own prefix, run commands and `mcu` nodes inside its namespaces, talk HTTP to them,
//! and take it down by name when the test ends, whatever happened.
//!
//! Nothing in the bed is reachable from the root namespace, so HTTP requests are made from a
//! short-lived thread that entered the node's network namespace (setns(2)).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The service address (VIP) the nodes claim; `scripts/testbed` leaves it unassigned.
pub const VIP: &str = "198.18.0.100";

/// Address of a test-bed node on the bed's segment (as `scripts/testbed` assigns them).
pub fn addr_of(node: &str) -> String {
    match node {
        "primary" => "198.18.0.1".into(),
        "backup" => "198.18.0.2".into(),
        c => {
            let n: u32 = c
                .strip_prefix("client")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unknown test-bed node {c}"));
            format!("198.18.0.{}", 10 + n)
        }
    }
}

/// A test bed that exists while this value lives (`scripts/testbed down` on drop).
pub struct Testbed {
    pub prefix: String,
    pub clients: usize,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/testbed")
}

impl Testbed {
    /// A fresh bed: whatever an earlier, interrupted run left under `prefix` is removed
    /// first.
    pub fn up(prefix: &str, clients: usize) -> Testbed {
        let bed = Testbed {
            prefix: prefix.into(),
            clients,
        };
        bed.script(&["down"]);
        bed.script(&["up"]);
        bed
    }

    fn script(&self, args: &[&str]) {
        let st = Command::new(script())
            .args(args)
            .env("TESTBED_PREFIX", &self.prefix)
            .env("TESTBED_CLIENTS", self.clients.to_string())
            .stdout(Stdio::null())
            .status()
            .expect("run scripts/testbed");
        assert!(st.success(), "scripts/testbed {args:?}: {st}");
    }

    /// Namespace name of `node` (`primary`, `backup`, `clientN`, `lan`).
    pub fn ns(&self, node: &str) -> String {
        format!("{}-{node}", self.prefix)
    }

    /// `program` run inside `node`'s namespace.
    pub fn command(&self, node: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(node), program]);
        c
    }

    /// Run `program args` in `node` and assert it succeeds.
    pub fn run(&self, node: &str, program: &str, args: &[&str]) {
        let st = self
            .command(node, program)
            .args(args)
            .status()
            .expect("spawn");
        assert!(st.success(), "{node}: {program} {args:?}: {st}");
    }

    /// `ip -br -4 addr` inside `node`: its interfaces and IPv4 addresses, one line each.
    pub fn addrs(&self, node: &str) -> String {
        let out = self
            .command(node, "ip")
            .args(["-br", "-4", "addr"])
            .output()
            .expect("ip addr");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// HTTP GET from inside `node`'s namespace; `None` while nothing answers.
    pub fn http_get(&self, node: &str, addr: SocketAddr, path: &str) -> Option<(u16, String)> {
        let path = path.to_string();
        in_netns(&self.ns(node), move || {
            super::try_http_get(addr, &path).ok()
        })
        .ok()
        .flatten()
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("down")
            .env("TESTBED_PREFIX", &self.prefix)
            .env("TESTBED_CLIENTS", self.clients.to_string())
            .stdout(Stdio::null())
            .status();
    }
}

/// Run `f` on a new thread that first entered network namespace `ns` (its sockets live
/// there); the calling thread's namespace is untouched.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    extern "C" {
        fn setns(fd: i32, nstype: i32) -> i32;
    }
    const CLONE_NEWNET: i32 = 0x4000_0000;
    let file = std::fs::File::open(format!("/run/netns/{ns}"))?;
    std::thread::spawn(move || {
        // SAFETY: setns(2) with a namespace file descriptor we own and keep open for the call;
        // it switches only this thread's network namespace, and the thread ends after `f`.
        if unsafe { setns(file.as_raw_fd(), CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(f())
    })
    .join()
    .expect("netns thread panicked")
}

/// Poll `f` every 20 ms until it returns `Some`, or `None` after `timeout`.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An `mcu serve` running inside a test-bed node, its stderr collected line by line.
pub struct Node {
    pub name: String,
    ns: String,
    pub child: Child,
    pub http: SocketAddr,
    log: mpsc::Receiver<String>,
    pub log_lines: Vec<String>,
    pub killed: bool,
}

impl Node {
    /// Start `mcu serve ARGS` in `node`; `http` must be the node's `--http-listen`.
    pub fn start(bed: &Testbed, node: &str, http: SocketAddr, args: &[String]) -> Node {
        // `ip netns exec` execs the program: the child's pid is mcu's own.
        let mut child = bed
            .command(node, env!("CARGO_BIN_EXE_mcu"))
            .arg("serve")
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mcu");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let tag = node.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[{tag}] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Node {
            name: node.into(),
            ns: bed.ns(node),
            child,
            http,
            log: rx,
            log_lines: vec![],
            killed: false,
        }
    }

    /// Collect the log lines received so far.
    pub fn pump_log(&mut self) {
        while let Ok(l) = self.log.try_recv() {
            self.log_lines.push(l);
        }
    }

    /// Wait for a log line containing `needle`.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        if let Some(l) = self.log_lines.iter().find(|l| l.contains(needle)) {
            return Some(l.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) => {
                    self.log_lines.push(line.clone());
                    if line.contains(needle) {
                        return Some(line);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// GET `path` on the node's HTTP listener, from inside its namespace.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let path = path.to_string();
        let addr = self.http;
        in_netns(&self.ns, move || super::try_http_get(addr, &path).ok())
            .ok()
            .flatten()
    }

    /// `GET path` parsed as JSON, when the node answers 200.
    pub fn get_json(&self, path: &str) -> Option<serde_json::Value> {
        match self.get(path)? {
            (200, body) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }

    /// Whether the process is still running (not exited, not a zombie).
    pub fn running(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).is_ok_and(|st| {
            // pid (comm) STATE ...: the state follows the last ')'.
            st.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
        })
    }

    /// `kill -9` this node's mcu process (only that pid) and reap it.
    pub fn kill9(&mut self) {
        super::signal(self.child.id(), "KILL");
        let _ = self.child.wait();
        self.killed = true;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process (sipp, baresip) killed on drop if it is still running.
pub struct Guarded(pub Child);

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
