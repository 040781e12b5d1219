//! Child processes: signals by pid, waiting with a deadline, and a process's log lines as a
//! stream a test can wait on.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ExitStatus};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Send `sig` (e.g. `libc::SIGTERM`) to `pid`, a process this test started.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is one of our children.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    if rc != 0 {
        eprintln!("kill({pid}, {sig}): {}", std::io::Error::last_os_error());
    }
}

/// Wait for `child` to exit, at most `timeout`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return Some(st);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait for `child` and assert it exited 0; `what` names it in the failure.
pub fn expect_success(child: &mut Child, what: &str, timeout: Duration) {
    let st = wait_timeout(child, timeout).unwrap_or_else(|| panic!("{what} did not finish"));
    assert!(st.success(), "{what} failed (exit {st})");
}

/// A child process (sipp, baresip, a server) killed and reaped on drop if still running.
pub struct Guarded(pub Child);

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Log lines arriving from a process (or an in-process server), kept as they are read.
pub struct LogLines {
    rx: mpsc::Receiver<String>,
    /// Every line received so far (after [`LogLines::pump`] or a wait).
    pub lines: Vec<String>,
}

impl LogLines {
    /// Lines sent on `rx`.
    pub fn new(rx: mpsc::Receiver<String>) -> LogLines {
        LogLines { rx, lines: vec![] }
    }

    /// Read `reader` line by line on a thread, echoing each line to stderr as `[tag] line`.
    pub fn spawn_reader(tag: &str, reader: impl Read + Send + 'static) -> LogLines {
        let (tx, rx) = mpsc::channel();
        let tag = tag.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines().map_while(Result::ok) {
                eprintln!("[{tag}] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LogLines::new(rx)
    }

    /// Collect the lines that arrived so far.
    pub fn pump(&mut self) {
        while let Ok(l) = self.rx.try_recv() {
            self.lines.push(l);
        }
    }

    /// Number of lines so far containing `needle`.
    pub fn count(&mut self, needle: &str) -> usize {
        self.pump();
        self.lines.iter().filter(|l| l.contains(needle)).count()
    }

    /// Wait until `n` lines contain `needle`; returns the `n`th, or `None` after `timeout`
    /// (or when the writer is gone).
    pub fn wait_count(&mut self, needle: &str, n: usize, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.lines.iter().filter(|l| l.contains(needle)).nth(n - 1) {
                return Some(l.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => self.lines.push(line),
                Err(_) => return None,
            }
        }
    }

    /// The first line containing `needle`, waiting at most `timeout` for it.
    pub fn wait(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        self.wait_count(needle, 1, timeout)
    }

    /// [`LogLines::wait`] that panics when the line does not come.
    pub fn expect(&mut self, needle: &str, timeout: Duration) -> String {
        self.wait(needle, timeout)
            .unwrap_or_else(|| panic!("no log line with {needle:?} within {timeout:?}"))
    }
}

/// Run `cmd` to completion and assert it exited 0.
pub fn run(cmd: &mut std::process::Command) {
    let st = cmd
        .status()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(st.success(), "{cmd:?} failed: {st}");
}

/// Whether some socket in this network namespace is bound to UDP `port` (IPv4 or IPv6),
/// read from `/proc/net/udp{,6}`: how a test sees that a peer it started is listening,
/// without touching the port.
pub fn udp_port_bound(port: u16) -> bool {
    udp_port_bound_at("/proc/net", port)
}

/// Whether a UDP socket is bound to `port` in the network namespace of process `pid`.
pub fn udp_port_bound_in(pid: u32, port: u16) -> bool {
    udp_port_bound_at(&format!("/proc/{pid}/net"), port)
}

fn udp_port_bound_at(dir: &str, port: u16) -> bool {
    let needle = format!(":{port:04X} ");
    [format!("{dir}/udp"), format!("{dir}/udp6")]
        .iter()
        .any(|f| {
            std::fs::read_to_string(f).is_ok_and(|t| {
                t.lines()
                    .skip(1)
                    .filter_map(|l| l.split_whitespace().nth(1))
                    .any(|local| format!("{local} ").ends_with(&needle))
            })
        })
}
