//! Run the server in-process on listeners it binds itself, port 0 included, and report the
//! addresses it really got: what tests (and any embedding program) need to run a server
//! without fixed ports or waiting for a log line. Standalone servers only: a hot-standby
//! node binds to its service address after settling its role (`mcu serve --ft-role`).
//!
//! ```no_run
//! # async fn demo(cfg: mcu::config::Config) -> anyhow::Result<()> {
//! let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
//! let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(mcu::launch::run(cfg, ready_tx, async move {
//!     let _ = stop_rx.await;
//! }));
//! let ready = ready_rx.await?;
//! println!("SIP on {}, HTTP on {}", ready.sip, ready.http);
//! let _ = stop_tx.send(()); // like SIGTERM: BYE to everyone, then return
//! server.await??;
//! # Ok(()) }
//! ```

use crate::config::Config;
use crate::server::{self, Listeners};
use anyhow::{Context, Result};
use std::future::Future;
use std::net::SocketAddr;
use tokio::net::{TcpListener, UdpSocket};

/// Where a launched server listens (the real ports, never 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    /// SIP, UDP and TCP on the same port.
    pub sip: SocketAddr,
    /// The HTTP API (the first `--http-listen` address; every one serves the same API).
    pub http: SocketAddr,
}

/// How many times a port-0 SIP binding is retried when the UDP port the kernel chose is
/// taken for TCP.
const SIP_BIND_ATTEMPTS: usize = 8;

/// Bind SIP UDP and TCP on one port: `addr`'s, or with port 0 the port the kernel gives the
/// UDP socket, retried while that port is taken for TCP.
async fn bind_sip(addr: SocketAddr) -> Result<(UdpSocket, TcpListener)> {
    let attempts = if addr.port() == 0 {
        SIP_BIND_ATTEMPTS
    } else {
        1
    };
    let mut last_err = None;
    for _ in 0..attempts {
        let udp = UdpSocket::bind(addr)
            .await
            .with_context(|| format!("binding SIP UDP {addr}"))?;
        let at = udp.local_addr()?;
        match TcpListener::bind(at).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => {
                last_err = Some(anyhow::Error::new(e).context(format!("binding SIP TCP {at}")))
            }
        }
    }
    Err(last_err.expect("at least one attempt"))
}

/// Bind the listeners of `cfg` (port 0: any free port), send [`Ready`] with the real
/// addresses, then serve until `shutdown` resolves ([`server::run`]: BYE to every call,
/// then return). A dropped `ready` receiver does not stop the server.
pub async fn run(
    mut cfg: Config,
    ready: tokio::sync::oneshot::Sender<Ready>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let (udp, tcp) = bind_sip(cfg.sip_listen).await?;
    let http = server::bind_http(&cfg.http_listen)?;
    cfg.sip_listen = udp.local_addr()?;
    cfg.http_listen = http
        .iter()
        .map(TcpListener::local_addr)
        .collect::<std::io::Result<_>>()?;
    let http_main = cfg
        .http_listen
        .first()
        .copied()
        .context("http-listen: no address")?;
    let _ = ready.send(Ready {
        sip: cfg.sip_listen,
        http: http_main,
    });
    server::run(cfg, Listeners { udp, tcp, http }, shutdown).await
}
