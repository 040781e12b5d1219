//! Resource guards shared by the listeners: accepting connections without spinning when the
//! process is out of file descriptors, and raising the descriptor limit at start. Connection
//! caps and timeouts themselves live with their listeners ([`crate::server`] for SIP/TCP,
//! [`crate::http`] for HTTP).

use prometheus_client::metrics::counter::Counter;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// First pause after a failed accept.
pub const BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Longest pause between two accept attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Exponential back-off for a listener whose accepts fail (EMFILE, ENFILE, ENOBUFS, ENOMEM):
/// such an error repeats at once as long as the condition lasts (the listener stays
/// readable), so retrying without a pause spins a core. A pause of 5 ms doubles up to 1 s
/// while the failures go on and starts over after an accept succeeds. One failure per
/// episode is worth a log line; the rest are counted.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    /// The next pause, `None` outside an episode of failures.
    next: Option<Duration>,
}

/// What to do after a failed accept.
#[derive(Debug, PartialEq, Eq)]
pub struct Retry {
    /// Pause before the next attempt (zero: retry at once).
    pub after: Duration,
    /// First failure of an episode: log it.
    pub log: bool,
}

impl AcceptBackoff {
    /// An accept failed with `e`.
    pub fn failed(&mut self, e: &io::Error) -> Retry {
        if is_per_connection(e) {
            // The peer went away between SYN and accept: nothing is exhausted.
            return Retry {
                after: Duration::ZERO,
                log: false,
            };
        }
        let (after, log) = match self.next {
            None => (BACKOFF_MIN, true),
            Some(d) => (d, false),
        };
        self.next = Some((after * 2).min(BACKOFF_MAX));
        Retry { after, log }
    }

    /// An accept succeeded: the episode (if any) is over.
    pub fn succeeded(&mut self) {
        self.next = None;
    }
}

/// Errors that concern one connection only, not the listener or the process.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// One file descriptor held back for a listener that must keep answering while the process
/// is out of descriptors (the HTTP health check): when an accept fails for want of one, the
/// reserve is closed and the accept retried at once, which serves that one connection; the
/// reserve is taken back as soon as a descriptor is free again ([`FdReserve::refill`], e.g.
/// when a connection of that listener closes).
#[derive(Debug)]
pub struct FdReserve(std::sync::Mutex<Option<std::fs::File>>);

impl Default for FdReserve {
    fn default() -> Self {
        let r = FdReserve(std::sync::Mutex::new(None));
        r.refill();
        r
    }
}

impl FdReserve {
    /// Hold the reserve descriptor again if it was spent (no-op when held, or when no
    /// descriptor is free yet).
    pub fn refill(&self) {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if held.is_none() {
            *held = std::fs::File::open("/dev/null").ok();
        }
    }

    /// Close the reserve descriptor; whether there was one.
    fn spend(&self) -> bool {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        held.take().is_some()
    }
}

/// The process (EMFILE) or the system (ENFILE) is out of file descriptors.
fn out_of_fds(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// Accept the next connection on `listener`, pausing per `backoff` after failures; each
/// failure is counted in `errors`, the first of an episode logged with `what` (the
/// listener's name). With a `reserve`, a failure for want of descriptors spends it on the
/// waiting connection instead of pausing.
pub async fn accept(
    listener: &TcpListener,
    backoff: &mut AcceptBackoff,
    errors: &Counter,
    what: &str,
    reserve: Option<&FdReserve>,
) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(c) => {
                backoff.succeeded();
                return c;
            }
            Err(e) => {
                errors.inc();
                let r = backoff.failed(&e);
                if r.log {
                    tracing::warn!(
                        "{what} accept failed: {e}; retrying with back-off (up to {:?}) while it lasts",
                        BACKOFF_MAX
                    );
                }
                if out_of_fds(&e) && reserve.is_some_and(FdReserve::spend) {
                    // The episode goes on: the next accept most likely fails again.
                    if let Ok(c) = listener.accept().await {
                        return c;
                    }
                }
                if !r.after.is_zero() {
                    tokio::time::sleep(r.after).await;
                }
            }
        }
    }
}

/// Raise the soft limit on open files (RLIMIT_NOFILE) to the hard limit and log both: every
/// SIP/TCP and HTTP connection and every call's two media sockets take a descriptor, and
/// the usual soft default (1024) is far below what the hard limit allows. Returns the
/// (soft, hard) limits now in force.
pub fn raise_fd_limit() -> io::Result<(u64, u64)> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
        tracing::info!(was = soft, now = hard, hard, "open files limit raised");
    } else {
        tracing::info!(soft, hard, "open files limit");
    }
    getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)
}

/// Descriptors the process holds besides connections and media sockets (runtime, listeners,
/// standard streams, the sync link), with room to spare.
pub const FD_BASELINE: u64 = 64;

/// Descriptors the configured limits may take at once: every SIP/TCP and HTTP connection
/// allowed, every media port of the RTP range, and [`FD_BASELINE`].
pub fn fd_need(cfg: &crate::config::Config) -> u64 {
    let l = &cfg.limits;
    let media = u64::from(cfg.rtp_port_max - cfg.rtp_port_min) + 1;
    l.max_sip_connections as u64 + l.max_http_connections as u64 + media + FD_BASELINE
}

/// Warn when the open-files limit is below [`fd_need`]: the caps then do not keep the
/// process from running out of descriptors (new connections and calls fail while it lasts,
/// SIP/UDP goes on). Returns the soft limit.
pub fn check_fd_budget(cfg: &crate::config::Config) -> Option<u64> {
    use nix::sys::resource::{getrlimit, Resource};
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    let need = fd_need(cfg);
    if soft < need {
        tracing::warn!(
            limit = soft,
            need,
            "open files limit below what the connection caps and the RTP range may use: \
             lower --max-sip-connections / --max-http-connections / --rtp-ports or raise the limit"
        );
    }
    Some(soft)
}

/// Open connections per source IP address, at most `max` each: one client (or attacker)
/// cannot take every slot of a listener's global cap.
#[derive(Debug)]
pub struct PerSource {
    max: usize,
    open: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// One connection's place in its source's share; given back when dropped.
#[derive(Debug)]
pub struct SourceSlot {
    owner: std::sync::Arc<PerSource>,
    ip: std::net::IpAddr,
}

impl PerSource {
    /// At most `max` connections per source.
    pub fn new(max: usize) -> std::sync::Arc<Self> {
        std::sync::Arc::new(PerSource {
            max,
            open: Default::default(),
        })
    }

    /// A place for one more connection from `ip`, if its share is not used up.
    pub fn try_take(self: &std::sync::Arc<Self>, ip: std::net::IpAddr) -> Option<SourceSlot> {
        let mut open = self.open.lock().unwrap();
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            owner: self.clone(),
            ip,
        })
    }

    /// Connections open from `ip`.
    pub fn open(&self, ip: std::net::IpAddr) -> usize {
        self.open.lock().unwrap().get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap();
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emfile() -> io::Error {
        io::Error::from_raw_os_error(libc::EMFILE)
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_logs_once_per_episode() {
        let mut b = AcceptBackoff::default();
        let mut pauses = Vec::new();
        let mut logs = 0;
        for _ in 0..12 {
            let r = b.failed(&emfile());
            pauses.push(r.after.as_millis());
            logs += r.log as u32;
        }
        assert_eq!(
            pauses,
            [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000, 1000]
        );
        assert_eq!(logs, 1);
        b.succeeded();
        let r = b.failed(&emfile());
        assert_eq!(
            r,
            Retry {
                after: BACKOFF_MIN,
                log: true
            },
            "a new episode"
        );
    }

    #[test]
    fn a_vanished_peer_is_no_episode() {
        let mut b = AcceptBackoff::default();
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(
            b.failed(&aborted),
            Retry {
                after: Duration::ZERO,
                log: false
            }
        );
        assert!(b.failed(&emfile()).log, "still the first real failure");
    }

    #[test]
    fn per_source_share_is_bounded_and_given_back() {
        let a: std::net::IpAddr = "198.18.0.1".parse().unwrap();
        let b: std::net::IpAddr = "198.18.0.2".parse().unwrap();
        let shares = PerSource::new(2);
        let s1 = shares.try_take(a).unwrap();
        let _s2 = shares.try_take(a).unwrap();
        assert!(shares.try_take(a).is_none(), "a's share is used up");
        let _b1 = shares.try_take(b).expect("b has its own share");
        drop(s1);
        assert_eq!(shares.open(a), 1);
        assert!(shares.try_take(a).is_some(), "given back on drop");
    }
}
