//! The server side of the end-to-end tests, on top of the shared test kit (`testkit`):
//!
//! - [`TestServer`]: `mcu` in-process on its own thread and runtime, every port chosen by
//!   the kernel; the default for a test that needs a server.
//! - [`Server`]: the real `mcu serve` binary on loopback, for what only a process has (its
//!   own SIGTERM handling, exit status).
//! - [`Node`]: the real binary inside a test-bed node (hot standby, `kill -9`, SIGSTOP).
#![allow(dead_code)]

pub mod uac;
pub mod video;

use mcu::config::ServeArgs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use testkit::process::{signal, wait_timeout, LogLines};

/// The value of the sample named `name` (its whole name, e.g. `mcu_rtp_packets_in_total`)
/// in an OpenMetrics text; panics, showing the text, when it is missing.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (n, v) = l.split_once(' ')?;
            (n == name).then(|| v.split_whitespace().next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("metric {name} missing in:\n{text}"))
}

/// A TCP connection to `server` from `local`, another loopback address such as 127.0.0.2
/// (a second source on one host; std cannot bind a TCP client, tokio's `TcpSocket` can).
pub fn tcp_connect_from(local: &str, server: SocketAddr) -> std::net::TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let s = rt
        .block_on(async {
            let s = tokio::net::TcpSocket::new_v4()?;
            s.bind(format!("{local}:0").parse().unwrap())?;
            s.connect(server).await
        })
        .unwrap_or_else(|e| panic!("TCP connect from {local}: {e}"))
        .into_std()
        .unwrap();
    s.set_nonblocking(false).unwrap();
    s
}

/// Path of a sipp scenario shipped with the tests.
pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

/// The admin API's bearer token of every test server given [`admin_token_file`].
pub const ADMIN_TOKEN: &str = "understudy-test-admin-token-7f3a9c";

/// A file holding [`ADMIN_TOKEN`] (under the target's tmp directory), for
/// `--admin-token-file`.
pub fn admin_token_file() -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("admin-token");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(ADMIN_TOKEN) {
        // Written whole then renamed: a server never reads half a token.
        let tmp = path.with_extension(std::process::id().to_string());
        std::fs::write(&tmp, ADMIN_TOKEN).expect("write the admin token file");
        std::fs::rename(&tmp, &path).expect("install the admin token file");
    }
    path
}

/// The `Authorization` field value the admin API wants with [`ADMIN_TOKEN`].
pub fn bearer() -> String {
    format!("Bearer {ADMIN_TOKEN}")
}

/// `args` with the admin API behind [`ADMIN_TOKEN`] (needed by any non-loopback
/// `--http-listen`); [`TestServer`] then authenticates its own API requests.
pub fn with_admin_token(mut args: ServeArgs) -> ServeArgs {
    args.admin_token_file = Some(admin_token_file());
    args
}

/// `GET path` on `addr` with `token` (if any) as the admin API's bearer token: status and
/// body; `Err` when nothing answers.
pub fn get_as(addr: SocketAddr, path: &str, token: Option<&str>) -> Result<(u16, String), String> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    testkit::http::get_with(addr, path, &headers)
        .map(|r| (r.status, r.body))
        .map_err(|e| e.to_string())
}

/// `ServeArgs` for a [`TestServer`] with media ports in `rtp` (give every test its own
/// range); SIP and HTTP default to port 0 on loopback.
pub fn args(rtp: &str) -> ServeArgs {
    ServeArgs {
        rtp_ports: Some(rtp.into()),
        // No WebRTC port unless the test asks for one (no two servers on the default).
        webrtc_port: Some(0),
        ..Default::default()
    }
}

/// Sends each formatted log line to a channel (and echoes it to stderr as `[mcu] line`).
struct LogSink(mpsc::Sender<String>);

struct LineWriter {
    tx: mpsc::Sender<String>,
    buf: Vec<u8>,
}

impl std::io::Write for LineWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        for line in String::from_utf8_lossy(&self.buf).lines() {
            eprintln!("[mcu] {line}");
            let _ = self.tx.send(line.to_string());
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogSink {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            tx: self.0.clone(),
            buf: Vec::new(),
        }
    }
}

/// `mcu` running in-process (`mcu::launch::run`) on a thread of its own with its own tokio
/// runtime; its log (the binary's format, level info) is collected in [`TestServer::log`].
/// Dropping it stops the server.
pub struct TestServer {
    /// SIP address (UDP and TCP).
    pub sip: SocketAddr,
    /// HTTP address.
    pub http: SocketAddr,
    /// What the server logged.
    pub log: LogLines,
    /// The admin API's token, when the server has one (sent with every `/api/` request).
    pub token: Option<String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: mpsc::Receiver<anyhow::Result<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// Start with `args` (unset SIP/HTTP addresses: 127.0.0.1:0) and return once the server
    /// has bound its listeners (it said so: no sleep, no polling).
    pub fn start(mut args: ServeArgs) -> TestServer {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        args.sip_listen.get_or_insert(any);
        if args.http_listen.is_empty() {
            args.http_listen.push(any);
        }
        let cfg = args.resolve().expect("test server configuration");
        let token = args.admin_token_file.as_ref().map(|f| {
            std::fs::read_to_string(f)
                .expect("admin token file")
                .trim()
                .to_string()
        });
        let (log_tx, log_rx) = mpsc::channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("test-server".into())
            .spawn(move || {
                let dispatch = tracing::Dispatch::new(
                    tracing_subscriber::fmt()
                        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
                        .with_ansi(false)
                        .with_writer(LogSink(log_tx))
                        .finish(),
                );
                let _log = tracing::dispatcher::set_default(&dispatch);
                let worker_dispatch = dispatch.clone();
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .thread_name("test-server-rt")
                    // Each runtime thread logs to this server's sink for its whole life.
                    .on_thread_start(move || {
                        std::mem::forget(tracing::dispatcher::set_default(&worker_dispatch))
                    })
                    .build()
                    .expect("tokio runtime");
                let result = rt.block_on(mcu::launch::run(cfg, ready_tx, async move {
                    let _ = stop_rx.await;
                }));
                rt.shutdown_timeout(Duration::from_secs(2));
                let _ = done_tx.send(result);
            })
            .expect("spawn the test server thread");
        let ready = match ready_rx.blocking_recv() {
            Ok(r) => r,
            Err(_) => {
                let err = done.recv().map(|r| r.err());
                panic!("the test server did not start: {err:?}");
            }
        };
        TestServer {
            sip: ready.sip,
            http: ready.http,
            log: LogLines::new(log_rx),
            token,
            stop: Some(stop_tx),
            done,
            thread: Some(thread),
        }
    }

    /// Wait until `GET /api/rooms` shows `n` participants in all (the join is logged a
    /// moment before the API's view has it).
    pub fn wait_participants(&self, n: usize, timeout: Duration) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        let shown = testkit::poll(timeout, || {
            last = self.get_json("/api/rooms");
            let total: usize = last["rooms"]
                .as_array()?
                .iter()
                .filter_map(|r| r["participants"].as_object().map(|p| p.len()))
                .sum();
            (total == n).then_some(())
        });
        assert!(
            shown.is_some(),
            "{n} participants not shown within {timeout:?}: {last:#}"
        );
        last
    }

    /// `GET path`: status and body (with the admin token, if the server has one).
    pub fn get(&self, path: &str) -> (u16, String) {
        get_as(self.http, path, self.token.as_deref()).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `GET path` expecting 200 and JSON.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let (code, body) = self.get(path);
        assert_eq!(code, 200, "GET {path} on {}: {body}", self.http);
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
    }

    /// `GET /metrics` (expecting 200): the OpenMetrics text.
    pub fn metrics(&self) -> String {
        let (code, text) = self.get("/metrics");
        assert_eq!(code, 200, "GET /metrics");
        text
    }

    /// One sample of `GET /metrics` by its whole name (see [`metric`]).
    pub fn metric(&self, name: &str) -> f64 {
        metric(&self.metrics(), name)
    }

    /// What SIGTERM does to the binary: BYE to every participant, then stop. Returns the
    /// server's result (fails the test if it does not stop within 10 s).
    pub fn shutdown(&mut self) -> anyhow::Result<()> {
        let stop = self.stop.take().expect("shut down once");
        let _ = stop.send(());
        let result = self
            .done
            .recv_timeout(Duration::from_secs(10))
            .expect("the test server did not stop within 10 s of shutdown");
        if let Some(t) = self.thread.take() {
            t.join().expect("test server thread");
        }
        self.log.pump();
        result
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
            let _ = self.done.recv_timeout(Duration::from_secs(10));
        }
    }
}

/// The real `mcu serve` binary on loopback (fixed ports: the binary binds what it is told).
pub struct Server {
    /// The process.
    pub child: Child,
    /// SIP address.
    pub sip: SocketAddr,
    /// HTTP address.
    pub http: SocketAddr,
    /// Its stderr.
    pub log: LogLines,
}

impl Server {
    /// Start the binary and wait for its "serving" log line.
    pub fn start(sip_port: u16, http_port: u16, rtp_ports: &str, extra: &[&str]) -> Server {
        Self::start_under(&[], sip_port, http_port, rtp_ports, extra)
    }

    /// [`Server::start`], the binary run by `wrapper` (e.g. `["prlimit", "--nofile=64:64",
    /// "--"]`; empty: none).
    pub fn start_under(
        wrapper: &[&str],
        sip_port: u16,
        http_port: u16,
        rtp_ports: &str,
        extra: &[&str],
    ) -> Server {
        let sip: SocketAddr = format!("127.0.0.1:{sip_port}").parse().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{http_port}").parse().unwrap();
        let bin = env!("CARGO_BIN_EXE_mcu");
        let mut cmd = match wrapper.split_first() {
            Some((w, args)) => {
                let mut c = Command::new(w);
                c.args(args).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let mut child = cmd
            .arg("serve")
            .args(["--sip-listen", &sip.to_string()])
            .args(["--http-listen", &http.to_string()])
            .args(["--rtp-ports", rtp_ports])
            // No WebRTC port unless the test asks for one (no two servers on the default).
            .args(if extra.contains(&"--webrtc-port") {
                &[][..]
            } else {
                &["--webrtc-port", "0"][..]
            })
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mcu");
        let log = LogLines::spawn_reader("mcu", child.stderr.take().unwrap());
        let mut s = Server {
            child,
            sip,
            http,
            log,
        };
        s.log.expect("serving", Duration::from_secs(30));
        s
    }

    /// SIGTERM and wait for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        signal(self.child.id(), libc::SIGTERM);
        let st = wait_timeout(&mut self.child, Duration::from_secs(10))
            .expect("mcu did not exit after SIGTERM");
        self.log.pump();
        st
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An `mcu serve` (the real binary) inside a test-bed node, its stderr collected line by line.
pub struct Node {
    /// The node's name (`primary`, `backup`).
    pub name: String,
    ns: String,
    /// The process (`ip netns exec` execs mcu: this is mcu's pid).
    pub child: Child,
    /// Its HTTP address (inside the node's namespace).
    pub http: SocketAddr,
    /// Its stderr.
    pub log: LogLines,
    /// Whether the test killed it.
    pub killed: bool,
}

impl Node {
    /// Start `mcu serve ARGS` in `node`; `http` must be the node's `--http-listen`. The admin
    /// API is behind [`ADMIN_TOKEN`] (`--admin-token-file` is added unless `args` has it);
    /// [`Node::get`] sends it.
    pub fn start(
        bed: &testkit::bed::Testbed,
        node: &str,
        http: SocketAddr,
        args: &[String],
    ) -> Node {
        let token: Vec<String> = if args.iter().any(|a| a == "--admin-token-file") {
            Vec::new()
        } else {
            vec![
                "--admin-token-file".into(),
                admin_token_file().display().to_string(),
            ]
        };
        let mut child = bed
            .command(node, env!("CARGO_BIN_EXE_mcu"))
            .arg("serve")
            .args(args)
            .args(&token)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mcu");
        let log = LogLines::spawn_reader(node, child.stderr.take().unwrap());
        Node {
            name: node.into(),
            ns: bed.ns(node),
            child,
            http,
            log,
            killed: false,
        }
    }

    /// GET `path` on the node's HTTP listener, from inside its namespace, with the admin
    /// token; `None` while nothing answers.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let path = path.to_string();
        let addr = self.http;
        testkit::bed::in_netns(&self.ns, move || {
            get_as(addr, &path, Some(ADMIN_TOKEN)).ok()
        })
    }

    /// POST `path` with an empty body and the admin token, from inside the node's
    /// namespace: status and body; `None` when nothing answers.
    pub fn post(&self, path: &str) -> Option<(u16, String)> {
        let path = path.to_string();
        let addr = self.http;
        testkit::bed::in_netns(&self.ns, move || {
            let auth = bearer();
            testkit::http::post(addr, &path, &[("Authorization", auth.as_str())], b"")
                .ok()
                .map(|r| (r.status, r.body))
        })
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
        signal(self.child.id(), libc::SIGKILL);
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

/// `mcu serve` flags of a hot-standby node in the namespace test bed: SIP on the service
/// address (`VIP:5060`), media on it (RTP 30000-30999), HTTP on the node's own address
/// (`:8080`), the sync link on `:7000` to `peer`, the VIP on `eth0`; then `extra`. The
/// node's role is its name (`primary`, `backup`).
pub fn ft_node_args(node: &str, peer: &str, key: &Path, extra: &[String]) -> Vec<String> {
    ft_node_args_as(node, node, peer, key, extra)
}

/// [`ft_node_args`] with the role given apart from the node: `role` (`primary`, `backup`)
/// for the node in namespace `node`, e.g. the old primary's node restarted as the backup of
/// the node that took over.
pub fn ft_node_args_as(
    node: &str,
    role: &str,
    peer: &str,
    key: &Path,
    extra: &[String],
) -> Vec<String> {
    use testkit::bed::{addr_of, VIP};
    let own = addr_of(node);
    [
        "--sip-listen".to_string(),
        format!("{VIP}:5060"),
        "--media-ip".into(),
        VIP.to_string(),
        "--http-listen".into(),
        format!("{own}:8080"),
        "--rtp-ports".into(),
        "30000-30999".into(),
        "--ft-role".into(),
        role.into(),
        "--ft-listen".into(),
        format!("{own}:7000"),
        "--ft-peer".into(),
        format!("{}:7000", addr_of(peer)),
        "--ft-key-file".into(),
        key.display().to_string(),
        "--service-ip".into(),
        format!("{VIP}/24"),
        "--service-dev".into(),
        "eth0".into(),
    ]
    .into_iter()
    .chain(extra.iter().cloned())
    .collect()
}

/// RTP packets the capture saw going to UDP port `port`: (capture time in epoch seconds,
/// level of its decoded A-law payload in dBFS).
pub fn received_alaw_levels(pcap: &std::path::Path, port: u16) -> Vec<(f64, f64)> {
    let data = std::fs::read(pcap).expect("read capture");
    let mut out = Vec::new();
    pcap_harness::capture::for_each_frame(&data, |f| {
        let Ok(u) = pcap_harness::net::decode_udp(f.linktype, f.data) else {
            return;
        };
        // RTP (version 2) with PT 8 (PCMA), no CSRC, no extension.
        let p = u.payload;
        if u.dst.port() != port || p.len() <= 12 || p[0] != 0x80 || p[1] & 0x7f != 8 {
            return;
        }
        let samples: Vec<i16> = p[12..]
            .iter()
            .map(|&b| mixer::g711::alaw_to_linear(b))
            .collect();
        let energy: f64 = samples.iter().map(|&s| f64::from(s).powi(2)).sum();
        let rms = (energy / samples.len() as f64).sqrt();
        let db = if rms > 0.0 {
            20.0 * (rms / 32768.0).log10()
        } else {
            -120.0
        };
        out.push((f.time, db));
    })
    .expect("parse capture");
    out
}

/// A decoded A-law packet louder than this carries speech (sipp's recorded voice).
pub const SPEECH_DBFS: f64 = -40.0;
/// A decoded A-law packet quieter than this carries no voice.
pub const SILENCE_DBFS: f64 = -55.0;

/// A test bed node's monitoring address (`--http-listen` of [`ft_node_args`]).
pub fn node_http(node: &str) -> SocketAddr {
    SocketAddr::new(testkit::bed::addr_of(node).into(), 8080)
}

/// Start a hot-standby pair in the test bed with [`ft_node_args`] (the backup first), wait
/// until both answer and the pair is protected: (primary, backup).
pub fn start_pair(bed: &testkit::bed::Testbed, key: &Path) -> (Node, Node) {
    start_pair_with(bed, key, &[])
}

/// [`start_pair`] with `extra` arguments for both nodes.
pub fn start_pair_with(bed: &testkit::bed::Testbed, key: &Path, extra: &[String]) -> (Node, Node) {
    let mut nodes = vec![];
    for (node, peer) in [("backup", "primary"), ("primary", "backup")] {
        let n = Node::start(
            bed,
            node,
            node_http(node),
            &ft_node_args(node, peer, key, extra),
        );
        assert!(
            testkit::poll(Duration::from_secs(20), || n.get("/api/status")).is_some(),
            "{node} does not answer"
        );
        nodes.push(n);
    }
    let (backup, primary) = (nodes.remove(0), nodes.remove(0));
    assert!(pair_synced(&primary, &backup), "the pair is not protected");
    (primary, backup)
}

/// Whether the pair is protected on both sides with nothing unacknowledged (polled up to
/// 10 s).
pub fn pair_synced(primary: &Node, backup: &Node) -> bool {
    testkit::poll(Duration::from_secs(10), || {
        let (ps, bs) = (
            primary.get_json("/api/status")?,
            backup.get_json("/api/status")?,
        );
        (ps["protected"] == true && bs["protected"] == true && ps["replication"]["unacked"] == 0)
            .then_some(())
    })
    .is_some()
}

/// The extra arguments of a hot-standby node serving browsers: HTTP also on the service
/// address (the backup binds it without holding it), the WebRTC port, one DTLS certificate
/// for both nodes (the first node to start creates the file).
pub fn webrtc_node_extra(http_port: u16, webrtc_port: u16, cert: &Path) -> Vec<String> {
    vec![
        "--http-listen".to_string(),
        format!("{}:{http_port}", testkit::bed::VIP),
        "--webrtc-port".into(),
        webrtc_port.to_string(),
        "--dtls-cert".into(),
        cert.display().to_string(),
    ]
}
