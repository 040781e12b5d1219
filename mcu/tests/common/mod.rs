//! Helpers shared by the end-to-end tests: run the real `mcu` binary, talk HTTP to it, and
//! locate required external tools.
#![allow(dead_code)]

pub mod testbed;
pub mod uac;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running `mcu serve`.
pub struct Server {
    pub child: Child,
    pub sip: SocketAddr,
    pub http: SocketAddr,
    pub log: mpsc::Receiver<String>,
    pub log_lines: Vec<String>,
}

/// Tools the end-to-end tests need; missing ones fail under CI, skip loudly otherwise.
pub fn require_tools(tools: &[&str]) -> bool {
    let missing: Vec<_> = tools
        .iter()
        .filter(|t| {
            !Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {t}"))
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("CI").is_ok() {
        panic!("required tools missing under CI: {missing:?} (scripts/test installs them)");
    }
    eprintln!("SKIPPING: tools missing: {missing:?} — run scripts/test to install them");
    false
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

impl Server {
    /// Start the server and wait for its "serving" log line.
    pub fn start(sip_port: u16, http_port: u16, rtp_ports: &str, extra: &[&str]) -> Server {
        let sip: SocketAddr = format!("127.0.0.1:{sip_port}").parse().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{http_port}").parse().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_mcu"))
            .args([
                "serve",
                "--sip-listen",
                &sip.to_string(),
                "--http-listen",
                &http.to_string(),
                "--rtp-ports",
                rtp_ports,
            ])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mcu");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[mcu] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut s = Server {
            child,
            sip,
            http,
            log: rx,
            log_lines: vec![],
        };
        s.wait_log("serving", Duration::from_secs(30));
        s
    }

    /// Wait until a log line contains `needle` (the server's own signal).
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) -> String {
        if let Some(l) = self.log_lines.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) => {
                    self.log_lines.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("server did not log {needle:?} within {timeout:?}"),
            }
        }
    }

    /// Drain log lines received so far.
    pub fn pump_log(&mut self) {
        while let Ok(l) = self.log.try_recv() {
            self.log_lines.push(l);
        }
    }

    /// SIGTERM and wait for exit.
    pub fn terminate(&mut self) -> ExitStatus {
        signal(self.child.id(), "TERM");
        let st = wait_timeout(&mut self.child, Duration::from_secs(10))
            .expect("mcu did not exit after SIGTERM");
        self.pump_log();
        st
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.http, path)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Minimal HTTP/1.1 GET (the tests exercise the server, not an HTTP client library).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    try_http_get(addr, path).expect("http get")
}

/// [`http_get`] that reports connection errors instead of panicking (for polling a server
/// that may not listen yet).
pub fn try_http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, dechunk(&body)))
}

fn dechunk(body: &str) -> String {
    // axum answers Connection: close requests with Content-Length, but be tolerant of chunking.
    if !body.contains("\r\n")
        || body.trim_start().starts_with('{')
        || body.trim_start().starts_with('[')
    {
        return body.to_string();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((len, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(len.trim(), 16) else {
            return body.to_string();
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// A fresh scratch directory for one test, removed on drop.
pub struct Scratch(pub PathBuf);
impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("understudy-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    pub fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}
impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var("KEEP_SCRATCH").is_err() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// tcpdump on loopback, started and confirmed listening before returning.
pub struct Capture {
    child: Child,
    pub file: PathBuf,
}

impl Capture {
    pub fn start(file: &Path, filter: &str) -> Capture {
        let mut cmd = Command::new("tcpdump");
        cmd.args(["-i", "lo"]);
        Capture::spawn(cmd, file, filter)
    }

    /// tcpdump on `iface` inside network namespace `netns` (`ip netns exec`).
    pub fn start_in(netns: &str, iface: &str, file: &Path, filter: &str) -> Capture {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns, "tcpdump", "-i", iface]);
        Capture::spawn(cmd, file, filter)
    }

    /// Run `cmd` (a tcpdump command line up to and including its interface) writing to
    /// `file`, and return once it is listening.
    fn spawn(mut cmd: Command, file: &Path, filter: &str) -> Capture {
        let mut child = cmd
            .args(["-U", "--immediate-mode", "-n", "-s", "0", "-w"])
            .arg(file)
            .arg(filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tcpdump");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        // tcpdump prints "listening on IFACE, ..." once the capture is armed.
        loop {
            match lines.next() {
                Some(Ok(l)) if l.contains("listening on") => break,
                Some(Ok(_)) => continue,
                _ => panic!("tcpdump exited before listening"),
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Capture {
            child,
            file: file.to_path_buf(),
        }
    }

    pub fn stop(mut self) -> PathBuf {
        signal(self.child.id(), "INT");
        wait_timeout(&mut self.child, Duration::from_secs(10)).expect("tcpdump did not stop");
        self.file.clone()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// sipp as a child process: `scenario` is a path or a built-in name (`-sn`).
pub fn sipp(
    scenario: &Path,
    room: &str,
    sip_port: u16,
    media_port: u16,
    tcp: bool,
    server: SocketAddr,
    cwd: &Path,
) -> Child {
    let mut c = Command::new("sipp");
    c.arg("-sf")
        .arg(scenario)
        .args([
            "-s",
            room,
            "-i",
            "127.0.0.1",
            "-p",
            &sip_port.to_string(),
            "-mp",
            &media_port.to_string(),
        ])
        .args([
            "-m",
            "1",
            "-l",
            "1",
            "-nostdin",
            "-timeout",
            "40s",
            "-timeout_error",
        ]);
    if tcp {
        c.args(["-t", "t1"]);
    }
    c.arg(server.to_string())
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sipp")
}

/// Path of a scenario shipped with the tests.
pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

/// sipp's built-in uac_pcap scenario, pointing at the recorded captures' absolute paths.
pub fn uac_pcap_scenario(dir: &Path) -> PathBuf {
    let scen = Command::new("sipp")
        .args(["-sd", "uac_pcap"])
        .output()
        .expect("sipp -sd");
    let scen = String::from_utf8(scen.stdout)
        .unwrap()
        .replace("pcap/", "/usr/share/sip-tester/");
    let p = dir.join("uac_pcap.xml");
    std::fs::write(&p, scen).unwrap();
    p
}

/// Wait for a child and assert it succeeded.
pub fn expect_success(child: &mut Child, what: &str, timeout: Duration) {
    let st = wait_timeout(child, timeout).unwrap_or_else(|| panic!("{what} did not finish"));
    assert!(st.success(), "{what} failed (exit {st})");
}

/// Root and the listed tools, or skip (never under CI).
pub fn e2e_ready(tools: &[&str]) -> bool {
    if !require_tools(tools) {
        return false;
    }
    if !is_root() {
        assert!(
            std::env::var("CI").is_err(),
            "CI runs as root; tcpdump needs it"
        );
        eprintln!("SKIPPING: tcpdump on lo needs root");
        return false;
    }
    true
}

/// Start baresip 1.0 (Opus and G.711, speech from `wav`: 48 kHz stereo, as its aufile source
/// requires with Opus) dialing `uri`; it hangs up when the wav ends, or quits after `secs`.
/// Its config goes to `dir/baresip`.
pub fn baresip_dial(
    dir: &Path,
    sip_port: u16,
    rtp: (u16, u16),
    wav: &Path,
    uri: &str,
    secs: u32,
) -> Child {
    let bcfg = baresip_config(dir, "127.0.0.1", sip_port, rtp, wav);
    baresip_command(Command::new("baresip"), &bcfg, uri, secs)
        .spawn()
        .expect("spawn baresip")
}

/// Write a baresip 1.0 config (Opus and G.711, speech from `wav`) listening on
/// `ip:sip_port` into `dir/baresip`, and return that directory.
pub fn baresip_config(dir: &Path, ip: &str, sip_port: u16, rtp: (u16, u16), wav: &Path) -> PathBuf {
    let bcfg = dir.join("baresip");
    std::fs::create_dir_all(&bcfg).unwrap();
    std::fs::write(
        bcfg.join("config"),
        format!(
            "poll_method epoll\nsip_listen {ip}:{sip_port}\nnet_interface {ip}\n\
             audio_source aufile,{wav}\nrtp_ports {}-{}\nmodule_path /usr/lib/baresip/modules\n\
             module opus.so\nmodule g711.so\nmodule aufile.so\nmodule account.so\nmodule menu.so\n",
            rtp.0,
            rtp.1,
            wav = wav.display()
        ),
    )
    .unwrap();
    std::fs::write(
        bcfg.join("accounts"),
        format!("<sip:baresip@{ip}>;regint=0\n"),
    )
    .unwrap();
    bcfg
}

/// Complete `cmd` (`baresip`, or a prefix such as `ip netns exec NS baresip`) into a
/// non-interactive baresip dialing `uri` with the config in `bcfg`, quitting after `secs`.
pub fn baresip_command(mut cmd: Command, bcfg: &Path, uri: &str, secs: u32) -> Command {
    cmd.arg("-f")
        .arg(bcfg)
        .args(["-t", &secs.to_string(), "-e", &format!("/dial {uri}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}
