//! Test kit for Understudy's tests (dev-only, never published): what every end-to-end or
//! namespace test needs and nothing about the server itself. The server-specific harness
//! (the `mcu` binary as a child, the in-process `TestServer`) lives in `mcu/tests/common`.
//!
//! - [`require`]: one skip policy. A test that cannot run here (not root, a tool missing)
//!   FAILS and says how to fix it; no test passes by returning early.
//! - [`bed`]: the network-namespace test bed (`scripts/testbed`): bring up/down by prefix,
//!   run commands or closures inside a node's namespace, node addresses.
//! - [`http`]: blocking HTTP GET (ureq), usable inside a namespace via [`bed::in_netns`].
//! - [`process`]: child processes: signals, waiting with a deadline, log lines as a stream.
//! - [`capture`]: tcpdump, armed before it returns.
//! - [`peers`]: sipp and baresip launchers, speech files for them.
//! - [`browser`]: headless Chromium joining through the participant page, its getStats lines.
//! - [`video`]: a GStreamer VP8 sender that answers PLI/FIR, and a recording receiver that
//!   sends PLI/FIR/NACK (its pcap is for `pcap_harness::video`).
//! - [`Scratch`] (a per-test directory) and [`poll`] (wait for a condition with a deadline).
#![deny(missing_docs)]

pub mod bed;
pub mod browser;
pub mod capture;
pub mod http;
pub mod peers;
pub mod process;
pub mod require;
pub mod video;

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A fresh scratch directory for one test, removed on drop (kept when `KEEP_SCRATCH` is set).
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// `$TMPDIR/understudy-NAME-PID`, emptied first.
    pub fn new(name: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("understudy-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
        Scratch(p)
    }

    /// A file name inside the directory.
    pub fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("KEEP_SCRATCH").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Call `f` every 20 ms until it returns `Some`, or return `None` once `timeout` passed.
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
