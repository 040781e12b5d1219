//! Headless Chromium as a participant: `web-client/test/browser.mjs` (npm `playwright-core`,
//! Debian `chromium`, a fake microphone playing a wav) opens the participant page, joins
//! through WHIP and prints one JSON line of `getStats` every 250 ms; this module starts it
//! (optionally inside a test-bed node) and collects those lines.
//!
//! And Chromium on the operators' admin page ([`AdminPage`], `web-client/test/admin.mjs`),
//! driven one command at a time: state, clicks, waits on page expressions, screenshots.

use crate::process::LogLines;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A number in a stats line (`stat(&s, &["inbound", "packetsReceived"])`); 0 when absent.
pub fn stat(v: &serde_json::Value, path: &[&str]) -> f64 {
    path.iter().fold(v, |v, p| &v[*p]).as_f64().unwrap_or(0.0)
}

/// The driver script.
pub fn driver() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../web-client/test/browser.mjs")
}

/// Start a driver script (`cmd`: node and its arguments) with piped stdio: the child, its
/// stdout's JSON lines on a channel (anything else echoed as `[what stdout]`), its stderr.
fn spawn_driver(
    mut cmd: Command,
    what: &'static str,
) -> (Child, mpsc::Receiver<serde_json::Value>, LogLines) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn the {what} driver: {e}"));
    let stderr = LogLines::spawn_reader(what, child.stderr.take().unwrap());
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(v) => {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
                Err(_) => eprintln!("[{what} stdout] {line}"),
            }
        }
    });
    (child, rx, stderr)
}

/// Fail unless the browser can run: chromium, node and the driver's npm modules.
pub fn require() {
    crate::require::tools(&["chromium", "node"]);
    let modules = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../web-client/test/node_modules/playwright-core");
    assert!(
        modules.exists(),
        "{} missing: scripts/test installs it (need_browser: npm ci in web-client/test)",
        modules.display()
    );
}

/// A running browser participant.
pub struct Browser {
    child: Child,
    lines: mpsc::Receiver<serde_json::Value>,
    /// Every stats line received so far, in order.
    pub samples: Vec<serde_json::Value>,
    /// Every page event received so far (state changes, WHIP, errors), in order.
    pub events: Vec<serde_json::Value>,
    /// The final line (`"done": true`), once the driver finished.
    pub done: Option<serde_json::Value>,
    /// Errors the driver reported.
    pub errors: Vec<String>,
    _stderr: LogLines,
}

impl Browser {
    /// Start the driver: `cmd` is `node` or a namespace wrapper around it (e.g.
    /// `bed.command(node, "node")`); `url` the participant page with `?autojoin=1`.
    pub fn start(mut cmd: Command, url: &str, wav: &Path, seconds: u32) -> Browser {
        cmd.arg(driver())
            .args(["--url", url])
            .arg("--wav")
            .arg(wav)
            .args(["--seconds", &seconds.to_string()]);
        let (child, rx, stderr) = spawn_driver(cmd, "browser");
        Browser {
            child,
            lines: rx,
            samples: vec![],
            events: vec![],
            done: None,
            errors: vec![],
            _stderr: stderr,
        }
    }

    fn take(&mut self, v: serde_json::Value) {
        if let Some(evs) = v["events"].as_array() {
            // The final and error lines repeat every event.
            if v["done"].as_bool() != Some(true) && v["error"].is_null() {
                self.events.extend(evs.iter().cloned());
            }
        }
        if let Some(e) = v["error"].as_str() {
            eprintln!("[browser] error: {e}");
            self.errors.push(e.to_string());
        }
        if v["done"].as_bool() == Some(true) {
            self.done = Some(v);
        } else if !v["stats"].is_null() {
            self.samples.push(v);
        }
    }

    /// Wait for the next stats line for which `pred` holds; `None` at the deadline or when
    /// the driver ended.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.checked_duration_since(Instant::now())?;
            let v = self.lines.recv_timeout(left).ok()?;
            self.take(v.clone());
            if !v["stats"].is_null() && pred(&v["stats"]) {
                return Some(v["stats"].clone());
            }
        }
    }

    /// The first stats line taken after this call (lines already queued are read and kept
    /// in [`Browser::samples`], not returned): the browser's state now, not earlier.
    pub fn fresh(&mut self, timeout: Duration) -> Option<serde_json::Value> {
        while let Ok(v) = self.lines.try_recv() {
            self.take(v);
        }
        self.wait_for(timeout, |_| true)
    }

    /// The page's ICE and connection state changes, in order, as `type=value`
    /// (`iceconnectionstatechange=connected`, `connectionstatechange=failed`, ...).
    pub fn state_changes(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| {
                matches!(
                    e["type"].as_str(),
                    Some("iceconnectionstatechange" | "connectionstatechange")
                )
            })
            .map(|e| {
                format!(
                    "{}={}",
                    e["type"].as_str().unwrap_or(""),
                    e["value"].as_str().unwrap_or("")
                )
            })
            .collect()
    }

    /// The latest stats line.
    pub fn last(&self) -> Option<&serde_json::Value> {
        self.samples.last().map(|v| &v["stats"])
    }

    /// Ask the driver to leave (stdin EOF) and wait for its final line and exit.
    pub fn finish(&mut self, timeout: Duration) -> bool {
        drop(self.child.stdin.take());
        let end = Instant::now() + timeout;
        while self.done.is_none() {
            let Some(left) = end.checked_duration_since(Instant::now()) else {
                break;
            };
            match self.lines.recv_timeout(left) {
                Ok(v) => self.take(v),
                Err(_) => break,
            }
        }
        let ok = crate::process::wait_timeout(&mut self.child, Duration::from_secs(10))
            .is_some_and(|s| s.success());
        self.done.is_some() && ok
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The admin page's driver script.
pub fn admin_driver() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../web-client/test/admin.mjs")
}

/// Where tests keep their screenshots: `target/test-artifacts/NAME/` (created).
pub fn artifacts_dir(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("test-artifacts").join(name);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// Headless Chromium on the admin page (`web-client/test/admin.mjs`), one command at a time.
/// Dropping it quits the browser.
pub struct AdminPage {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<serde_json::Value>,
    next_id: u64,
    _stderr: LogLines,
}

impl AdminPage {
    /// Open `url` (the admin page, `http://HOST/`) with the driver's `extra` arguments
    /// (`--require-token T`, `--no-websocket`); returns once `window.understudyAdmin` exists.
    /// Panics with the driver's reason when the browser or the page cannot start.
    pub fn start(url: &str, extra: &[&str]) -> AdminPage {
        let mut cmd = Command::new("node");
        cmd.arg(admin_driver()).args(["--url", url]).args(extra);
        let (mut child, rx, stderr) = spawn_driver(cmd, "admin-page");
        let stdin = child.stdin.take();
        let page = AdminPage {
            child,
            stdin,
            lines: rx,
            next_id: 0,
            _stderr: stderr,
        };
        match page.lines.recv_timeout(Duration::from_secs(45)) {
            Ok(v) if v["ready"] == true => page,
            Ok(v) => panic!("the admin page driver failed: {v}"),
            Err(_) => panic!("the admin page driver said nothing within 45 s"),
        }
    }

    /// Send one command (`{"cmd": ..., ...}`; the id is added) and wait for its answer: its
    /// `value`, or the driver's error.
    pub fn cmd(
        &mut self,
        mut c: serde_json::Value,
        timeout: Duration,
    ) -> Result<serde_json::Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        c["id"] = id.into();
        let stdin = self.stdin.as_mut().ok_or("the driver was closed")?;
        writeln!(stdin, "{c}")
            .and_then(|_| stdin.flush())
            .map_err(|e| format!("write to the driver: {e}"))?;
        let end = Instant::now() + timeout;
        loop {
            let left = end
                .checked_duration_since(Instant::now())
                .ok_or_else(|| format!("no answer to {c} within {timeout:?}"))?;
            let v = self
                .lines
                .recv_timeout(left)
                .map_err(|_| format!("no answer to {c} within {timeout:?}"))?;
            if v["id"].as_u64() != Some(id) {
                continue; // the answer to an earlier command that timed out
            }
            return if v["ok"] == true {
                Ok(v["value"].clone())
            } else {
                Err(v["error"].as_str().unwrap_or("failed").to_string())
            };
        }
    }

    /// `window.understudyAdmin`'s state: `connection`, `via`, `rooms`, `status`, `counts`,
    /// `log` (newest first), `lastError`, `errors`, and the page's uncaught `pageErrors`.
    pub fn state(&mut self) -> serde_json::Value {
        self.cmd(serde_json::json!({"cmd": "state"}), Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("admin page state: {e}"))
    }

    /// The value of the JS expression `js` in the page.
    pub fn eval(&mut self, js: &str) -> serde_json::Value {
        self.cmd(
            serde_json::json!({"cmd": "eval", "js": js}),
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("eval {js}: {e}"))
    }

    /// Wait until the JS expression `js` is truthy in the page; its value.
    pub fn wait(&mut self, js: &str, timeout: Duration) -> Result<serde_json::Value, String> {
        let ms = timeout.as_millis() as u64;
        self.cmd(
            serde_json::json!({"cmd": "wait", "js": js, "timeout_ms": ms}),
            timeout + Duration::from_secs(10),
        )
    }

    /// Click the first element matching the CSS `selector`.
    pub fn click(&mut self, selector: &str) {
        self.cmd(
            serde_json::json!({"cmd": "click", "selector": selector}),
            Duration::from_secs(15),
        )
        .unwrap_or_else(|e| panic!("click {selector}: {e}"));
    }

    /// Type `value` into the input matching `selector`.
    pub fn fill(&mut self, selector: &str, value: &str) {
        self.cmd(
            serde_json::json!({"cmd": "fill", "selector": selector, "value": value}),
            Duration::from_secs(15),
        )
        .unwrap_or_else(|e| panic!("fill {selector}: {e}"));
    }

    /// Save a screenshot of the window (or of the first element matching `selector`).
    pub fn screenshot(&mut self, path: &Path, selector: Option<&str>) {
        let mut c = serde_json::json!({"cmd": "screenshot", "path": path});
        if let Some(s) = selector {
            c["selector"] = s.into();
        }
        self.cmd(c, Duration::from_secs(15))
            .unwrap_or_else(|e| panic!("screenshot {}: {e}", path.display()));
        eprintln!("screenshot: {}", path.display());
    }

    /// The API requests the page made (`{method, url, authorization}`) and its WebSocket URLs:
    /// `{"requests": [...], "sockets": [...]}`.
    pub fn requests(&mut self) -> serde_json::Value {
        self.cmd(
            serde_json::json!({"cmd": "requests"}),
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("requests: {e}"))
    }
}

impl Drop for AdminPage {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, r#"{{"id": 0, "cmd": "quit"}}"#);
        }
        if crate::process::wait_timeout(&mut self.child, Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
