//! Server configuration: command-line flags, each also settable in a TOML file (`--config`).
//! Flags given on the command line win over the file; the file wins over defaults.

use crate::auth::AdminToken;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// `mcu serve` flags. Every flag is optional here so that the TOML file can supply it.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct ServeArgs {
    /// TOML configuration file; its keys are the flag names with `_` instead of `-`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// SIP listen address, UDP and TCP [default: 127.0.0.1:5060].
    #[arg(long)]
    pub sip_listen: Option<SocketAddr>,
    /// IP address for media (RTP/RTCP) [default: the SIP listen address].
    #[arg(long)]
    pub media_ip: Option<IpAddr>,
    /// RTP port range, e.g. 20000-29999 [default: 20000-29999].
    #[arg(long)]
    pub rtp_ports: Option<String>,
    /// HTTP API listen address (admin, metrics, participant page, WHIP); repeat the flag to
    /// serve the same API on several addresses (e.g. a node's own address and, in hot
    /// standby, the service address). Bound with IP_FREEBIND: the address need not exist on
    /// this host yet [default: 127.0.0.1:8080].
    #[arg(long)]
    pub http_listen: Vec<SocketAddr>,
    /// File whose whole content (trimmed) is the admin API's bearer token: every request
    /// under `/api/` then needs `Authorization: Bearer TOKEN`. Without it the API is open,
    /// and every --http-listen address must be a loopback one [default: none].
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// Maximum participants per room [default: 100].
    #[arg(long)]
    pub max_participants: Option<usize>,
    /// How many loudest speakers are mixed [default: 3].
    #[arg(long)]
    pub top_n: Option<usize>,
    /// End a call (BYE) when nothing (RTP or RTCP) came from its media source for this many
    /// seconds; calls on hold are exempt; 0 disables [default: 60].
    #[arg(long)]
    pub media_timeout: Option<u64>,
    /// Seed for every random choice (SSRCs, tags); random at start when absent.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Serve no video: every video m-line is declined with port 0 (an audio-only server, as
    /// before video existed). In TOML `no_video = true` [default: video (VP8) is served].
    #[arg(long)]
    pub no_video: bool,
    /// Video layout of rooms whose operator set none (`PUT /api/rooms/{room}`):
    /// `switched` (every participant sees the active speaker) or `grid` [default: switched].
    #[arg(long, value_parser = ["switched", "grid"])]
    pub video_layout: Option<String>,
    /// UDP port shared by every WebRTC (browser) participant on the media address; 0
    /// disables WebRTC and WHIP [default: 10000].
    #[arg(long)]
    pub webrtc_port: Option<u16>,
    /// PEM file with the DTLS certificate and its private key; created (mode 0600) when
    /// missing. A hot-standby pair must share one: give both nodes a copy of the same file
    /// [default: a new certificate at every start; with --ft-role, WebRTC is off without it].
    #[arg(long)]
    pub dtls_cert: Option<PathBuf>,
    /// SIP messages per second accepted from one source IP address: over UDP the excess is
    /// dropped unparsed, over TCP it is read later; counted; 0: no limit [default: 300].
    #[arg(long)]
    pub sip_rate_limit: Option<u32>,
    /// Messages one source IP may send at once above --sip-rate-limit [default: twice the
    /// rate].
    #[arg(long)]
    pub sip_rate_burst: Option<u32>,
    /// Hot standby: this node's configured role, `primary` or `backup` (absent: standalone).
    #[arg(long, value_parser = ["primary", "backup"])]
    pub ft_role: Option<String>,
    /// Hot standby: address of our sync-link socket.
    #[arg(long)]
    pub ft_listen: Option<SocketAddr>,
    /// Hot standby: the peer's sync-link address.
    #[arg(long)]
    pub ft_peer: Option<SocketAddr>,
    /// Hot standby: file whose whole content is the shared secret of the sync link.
    #[arg(long)]
    pub ft_key_file: Option<PathBuf>,
    /// Hot standby: the service address (VIP) with its prefix length, e.g. 198.18.0.100/24.
    #[arg(long)]
    pub service_ip: Option<String>,
    /// Hot standby: the client-facing device the VIP lives on (e.g. eth0).
    #[arg(long)]
    pub service_dev: Option<String>,
    /// Hot standby: the peer's address on the clients' segment, where this node, when
    /// primary, mirrors client packets and sends its beacons [default: the --ft-peer IP].
    #[arg(long)]
    pub ft_mirror_to: Option<IpAddr>,
    /// Hot standby: heartbeat period in milliseconds [default: 10].
    #[arg(long)]
    pub ft_heartbeat_ms: Option<u64>,
    /// Hot standby: the peer is dead after this many missed heartbeats [default: 3].
    #[arg(long)]
    pub ft_dead_after: Option<u32>,
    /// Hot standby (backup): wait up to this many milliseconds longer than
    /// `--ft-dead-after` heartbeats before declaring the primary dead, by as much as the
    /// primary's longest extra silence in the last 10 s (a loaded host whose network path
    /// stalls now and then); 0: never [default: 40].
    #[arg(long)]
    pub ft_max_stretch_ms: Option<u64>,
    /// Hot standby (backup): NFQUEUE number N for the mirrored input; N+1 carries the
    /// primary's client-path beacons [default: 0].
    #[arg(long)]
    pub ft_queue_num: Option<u16>,
    /// Most SIP/TCP connections open at once; more are accepted and closed at once
    /// [default: 1024].
    #[arg(long)]
    pub max_sip_connections: Option<usize>,
    /// Most SIP/TCP connections open at once from one source IP address (one client cannot
    /// take every slot) [default: a quarter of --max-sip-connections].
    #[arg(long)]
    pub max_sip_connections_per_source: Option<usize>,
    /// Seconds a SIP/TCP connection that carries no call and no unanswered request may stay
    /// silent before it is closed [default: 60].
    #[arg(long)]
    pub sip_tcp_idle_timeout: Option<u64>,
    /// Most HTTP connections open at once; more are accepted and closed at once [default: 64].
    #[arg(long)]
    pub max_http_connections: Option<usize>,
    /// Seconds an HTTP client has to send a request's whole header [default: 5].
    #[arg(long)]
    pub http_header_timeout: Option<u64>,
    /// Seconds from SIGTERM to exit: BYE every call and wait for the answers, then finish the
    /// HTTP requests in flight; whatever is left then is dropped [default: 5].
    #[arg(long)]
    pub shutdown_timeout: Option<u64>,
}

/// The TOML file's shape (same keys as the flags).
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    sip_listen: Option<SocketAddr>,
    media_ip: Option<IpAddr>,
    rtp_ports: Option<String>,
    http_listen: Option<OneOrMany<SocketAddr>>,
    admin_token_file: Option<PathBuf>,
    max_participants: Option<usize>,
    top_n: Option<usize>,
    media_timeout: Option<u64>,
    seed: Option<u64>,
    no_video: Option<bool>,
    video_layout: Option<String>,
    webrtc_port: Option<u16>,
    dtls_cert: Option<PathBuf>,
    sip_rate_limit: Option<u32>,
    sip_rate_burst: Option<u32>,
    ft_role: Option<String>,
    ft_listen: Option<SocketAddr>,
    ft_peer: Option<SocketAddr>,
    ft_key_file: Option<PathBuf>,
    service_ip: Option<String>,
    service_dev: Option<String>,
    ft_mirror_to: Option<IpAddr>,
    ft_heartbeat_ms: Option<u64>,
    ft_dead_after: Option<u32>,
    ft_max_stretch_ms: Option<u64>,
    ft_queue_num: Option<u16>,
    max_sip_connections: Option<usize>,
    max_sip_connections_per_source: Option<usize>,
    sip_tcp_idle_timeout: Option<u64>,
    max_http_connections: Option<usize>,
    http_header_timeout: Option<u64>,
    shutdown_timeout: Option<u64>,
}

/// A TOML key that takes one value or a list of them (`key = "a"` or `key = ["a", "b"]`).
#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Clone> OneOrMany<T> {
    fn to_vec(&self) -> Vec<T> {
        match self {
            OneOrMany::One(v) => vec![v.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// Resolved, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// SIP UDP+TCP listen address.
    pub sip_listen: SocketAddr,
    /// Media IP (bound and advertised in SDP).
    pub media_ip: IpAddr,
    /// First RTP port (even).
    pub rtp_port_min: u16,
    /// Last port of the range (inclusive).
    pub rtp_port_max: u16,
    /// HTTP listen addresses: never empty, no duplicates; every one serves the same API.
    /// The first is the node's main one (what [`crate::launch::Ready::http`] reports).
    pub http_listen: Vec<SocketAddr>,
    /// The admin API's bearer token (`None`: the API is open, every HTTP address loopback).
    pub admin_token: Option<AdminToken>,
    /// Max participants per room.
    pub max_participants: usize,
    /// Top-N mixing.
    pub top_n: usize,
    /// Media timeout (`None`: disabled).
    pub media_timeout: Option<std::time::Duration>,
    /// WebRTC port (`None`: WebRTC not served).
    pub webrtc_port: Option<u16>,
    /// DTLS certificate file (`None`: a new one per start).
    pub dtls_cert: Option<PathBuf>,
    /// Seed, if fixed.
    pub seed: Option<u64>,
    /// Video (VP8) for SIP calls (`--no-video`: off, video lines declined).
    pub video: bool,
    /// Video layout of rooms that set none.
    pub video_layout: control::VideoLayout,
    /// SIP messages per second per source IP (0: no limit).
    pub sip_rate_limit: u32,
    /// Burst per source IP above the rate.
    pub sip_rate_burst: u32,
    /// Hot standby, when configured.
    pub ft: Option<FtConfig>,
    /// Connection limits, timeouts and the shutdown deadline.
    pub limits: Limits,
}

/// Resource limits (`--max-*-connections`, `--*-timeout`).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Most SIP/TCP connections open at once.
    pub max_sip_connections: usize,
    /// Most SIP/TCP connections open at once from one source IP address.
    pub max_sip_connections_per_source: usize,
    /// A SIP/TCP connection that carries no call is closed after this long without input.
    pub sip_tcp_idle_timeout: Duration,
    /// Most HTTP connections open at once.
    pub max_http_connections: usize,
    /// Time an HTTP client has to send a request's whole header.
    pub http_header_timeout: Duration,
    /// Time from the shutdown signal to exit.
    pub shutdown_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sip_connections: 1024,
            max_sip_connections_per_source: 256,
            sip_tcp_idle_timeout: Duration::from_secs(60),
            max_http_connections: 64,
            http_header_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

/// The configured hot-standby role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FtRole {
    /// Serves at start; mirrors client input to the backup.
    Primary,
    /// Holds the primary's state and takes over when it dies.
    Backup,
}

/// Hot-standby settings (`--ft-*`, `--service-*`).
#[derive(Debug, Clone, PartialEq)]
pub struct FtConfig {
    /// Configured role.
    pub role: FtRole,
    /// Our sync-link socket address.
    pub listen: SocketAddr,
    /// The peer's sync-link address.
    pub peer: SocketAddr,
    /// Shared secret (the key file's whole content).
    pub key: Vec<u8>,
    /// Service address.
    pub vip: Ipv4Addr,
    /// Its prefix length on the service device.
    pub prefix: u8,
    /// Client-facing device.
    pub dev: String,
    /// Where the primary mirrors client packets (the backup's service-segment address).
    pub mirror_to: Ipv4Addr,
    /// Heartbeat period.
    pub heartbeat: std::time::Duration,
    /// Missed heartbeats before the peer is dead.
    pub dead_after: u32,
    /// Backup: how much longer it may wait after the primary's recent stalls.
    pub max_stretch: std::time::Duration,
    /// NFQUEUE number on the backup.
    pub queue_num: u16,
    /// The WebRTC port, whose mirrored SRTP the backup's reader follows (sequence numbers
    /// only) so a takeover knows each browser's rollover counter.
    pub webrtc_port: Option<u16>,
}

impl FtConfig {
    /// The UDP port of the client-path beacons (see `ft_sync`'s "Two paths"): the sync port
    /// plus one, from the service address to the peer's `mirror_to` address.
    pub fn beacon_port(&self) -> u16 {
        self.listen.port().wrapping_add(1)
    }

    /// Where the peer's heartbeats arrive (see `ft_sync`'s "The heartbeat path"): our sync
    /// address, port plus two.
    pub fn heartbeat_listen(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.listen.ip(), self.listen.port().wrapping_add(2))
    }

    /// Where our heartbeats go: the peer's sync address, port plus two.
    pub fn peer_heartbeat(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.peer.ip(), self.peer.port().wrapping_add(2))
    }
}

/// Default `--sip-rate-limit`: a phone sends a handful of messages per call and a
/// keep-alive every 15-30 s; a PBX or proxy trunking 100 calls/s from one address sends about
/// 300 (INVITE, ACK, BYE). One source flooding at this rate costs the server a few percent of
/// what it can parse (about 11,000 messages/s on one core).
pub const DEFAULT_SIP_RATE_LIMIT: u32 = 300;

fn parse_vip(s: &str) -> Result<(Ipv4Addr, u8)> {
    let (ip, prefix) = s
        .split_once('/')
        .with_context(|| format!("service-ip {s:?}: expected VIP/PREFIX, e.g. 198.18.0.100/24"))?;
    let ip: Ipv4Addr = ip
        .trim()
        .parse()
        .with_context(|| format!("service-ip {s:?}: not an IPv4 address"))?;
    let prefix: u8 = prefix
        .trim()
        .parse()
        .ok()
        .filter(|p| (1..=32).contains(p))
        .with_context(|| format!("service-ip {s:?}: prefix must be 1..32"))?;
    Ok((ip, prefix))
}

fn parse_port_range(s: &str) -> Result<(u16, u16)> {
    let (a, b) = s
        .split_once('-')
        .with_context(|| format!("rtp-ports {s:?}: expected MIN-MAX, e.g. 20000-29999"))?;
    let a: u16 = a
        .trim()
        .parse()
        .with_context(|| format!("rtp-ports {s:?}: bad MIN"))?;
    let b: u16 = b
        .trim()
        .parse()
        .with_context(|| format!("rtp-ports {s:?}: bad MAX"))?;
    if a == 0 || b <= a || b - a < 3 {
        bail!("rtp-ports {s:?}: need 0 < MIN < MAX with room for at least two RTP/RTCP pairs");
    }
    Ok((a + (a % 2), b))
}

impl ServeArgs {
    /// Merge flags over the optional TOML file over defaults, and validate.
    pub fn resolve(&self) -> Result<Config> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let sip_listen = self
            .sip_listen
            .or(file.sip_listen)
            .unwrap_or_else(|| "127.0.0.1:5060".parse().expect("literal"));
        let media_ip = self.media_ip.or(file.media_ip).unwrap_or(sip_listen.ip());
        if media_ip.is_unspecified() {
            bail!(
                "media-ip {media_ip} is unspecified: give the address clients should send RTP to"
            );
        }
        let ports = self
            .rtp_ports
            .clone()
            .or(file.rtp_ports.clone())
            .unwrap_or_else(|| "20000-29999".into());
        let (rtp_port_min, rtp_port_max) = parse_port_range(&ports)?;
        let http_listen = if !self.http_listen.is_empty() {
            self.http_listen.clone()
        } else {
            match &file.http_listen {
                Some(v) => v.to_vec(),
                None => vec!["127.0.0.1:8080".parse().expect("literal")],
            }
        };
        if http_listen.is_empty() {
            bail!("http-listen: give at least one address");
        }
        for (i, a) in http_listen.iter().enumerate() {
            if http_listen[..i].contains(a) {
                bail!("http-listen {a} is given twice");
            }
        }
        let admin_token = match self
            .admin_token_file
            .as_ref()
            .or(file.admin_token_file.as_ref())
        {
            Some(path) => Some(
                AdminToken::load(path)
                    .with_context(|| format!("admin-token-file {}", path.display()))?,
            ),
            None => None,
        };
        if admin_token.is_none() {
            if let Some(a) = http_listen.iter().find(|a| !a.ip().is_loopback()) {
                bail!(
                    "http-listen {a} is not a loopback address and no --admin-token-file is given: \
                     the admin API (/api/...) would be open to the network; give \
                     --admin-token-file FILE (admin_token_file in the config file) or listen on \
                     loopback addresses only"
                );
            }
        }
        let max_participants = self
            .max_participants
            .or(file.max_participants)
            .unwrap_or(100);
        if max_participants == 0 {
            bail!("max-participants must be at least 1");
        }
        let top_n = self.top_n.or(file.top_n).unwrap_or(3);
        if top_n == 0 {
            bail!("top-n must be at least 1");
        }
        let sip_rate_limit = self
            .sip_rate_limit
            .or(file.sip_rate_limit)
            .unwrap_or(DEFAULT_SIP_RATE_LIMIT);
        let sip_rate_burst = self
            .sip_rate_burst
            .or(file.sip_rate_burst)
            .unwrap_or(sip_rate_limit.saturating_mul(2));
        if sip_rate_limit > 0 && sip_rate_burst == 0 {
            bail!("sip-rate-burst must be at least 1 (or sip-rate-limit 0: no limit)");
        }
        let media_timeout = match self.media_timeout.or(file.media_timeout).unwrap_or(60) {
            0 => None,
            s => Some(std::time::Duration::from_secs(s)),
        };
        let video = !(self.no_video || file.no_video.unwrap_or(false));
        let video_layout = match self.video_layout.as_ref().or(file.video_layout.as_ref()) {
            None => control::VideoLayout::default(),
            Some(name) => control::VideoLayout::parse(name)
                .with_context(|| format!("video-layout {name:?}: expected switched or grid"))?,
        };
        let ft = self.resolve_ft(&file, sip_listen, media_ip)?;
        let limits = self.resolve_limits(&file)?;
        let webrtc_port = match self.webrtc_port.or(file.webrtc_port).unwrap_or(10000) {
            0 => None,
            p => Some(p),
        };
        let dtls_cert = self.dtls_cert.clone().or(file.dtls_cert.clone());
        let mut ft = ft;
        // A pair whose nodes present different certificates would break every browser at
        // takeover: without a shared certificate file a hot-standby node serves no WebRTC.
        let webrtc_port = if ft.is_some() && dtls_cert.is_none() {
            if webrtc_port.is_some() && self.webrtc_port.or(file.webrtc_port).is_some() {
                bail!("with ft-role, WebRTC needs --dtls-cert (the same certificate file on both nodes)");
            }
            None
        } else {
            webrtc_port
        };
        if let Some(f) = ft.as_mut() {
            f.webrtc_port = webrtc_port;
        }
        Ok(Config {
            sip_listen,
            media_ip,
            rtp_port_min,
            rtp_port_max,
            http_listen,
            admin_token,
            max_participants,
            top_n,
            media_timeout,
            seed: self.seed.or(file.seed),
            video,
            video_layout,
            webrtc_port,
            dtls_cert,
            sip_rate_limit,
            sip_rate_burst,
            ft,
            limits,
        })
    }

    fn resolve_limits(&self, file: &FileConfig) -> Result<Limits> {
        let d = Limits::default();
        let count = |name: &str, v: Option<usize>, default: usize| -> Result<usize> {
            match v.unwrap_or(default) {
                0 => bail!("{name} must be at least 1"),
                n => Ok(n),
            }
        };
        let secs = |name: &str, v: Option<u64>, default: Duration| -> Result<Duration> {
            match v {
                None => Ok(default),
                Some(0) => bail!("{name} must be at least 1 second"),
                Some(s) => Ok(Duration::from_secs(s)),
            }
        };
        let max_sip_connections = count(
            "max-sip-connections",
            self.max_sip_connections.or(file.max_sip_connections),
            d.max_sip_connections,
        )?;
        Ok(Limits {
            max_sip_connections,
            max_sip_connections_per_source: count(
                "max-sip-connections-per-source",
                self.max_sip_connections_per_source
                    .or(file.max_sip_connections_per_source),
                (max_sip_connections / 4).max(1),
            )?,
            sip_tcp_idle_timeout: secs(
                "sip-tcp-idle-timeout",
                self.sip_tcp_idle_timeout.or(file.sip_tcp_idle_timeout),
                d.sip_tcp_idle_timeout,
            )?,
            max_http_connections: count(
                "max-http-connections",
                self.max_http_connections.or(file.max_http_connections),
                d.max_http_connections,
            )?,
            http_header_timeout: secs(
                "http-header-timeout",
                self.http_header_timeout.or(file.http_header_timeout),
                d.http_header_timeout,
            )?,
            shutdown_timeout: secs(
                "shutdown-timeout",
                self.shutdown_timeout.or(file.shutdown_timeout),
                d.shutdown_timeout,
            )?,
        })
    }

    fn resolve_ft(
        &self,
        file: &FileConfig,
        sip_listen: SocketAddr,
        media_ip: IpAddr,
    ) -> Result<Option<FtConfig>> {
        let Some(role) = self.ft_role.clone().or(file.ft_role.clone()) else {
            let stray = [
                ("ft-listen", self.ft_listen.or(file.ft_listen).is_some()),
                ("ft-peer", self.ft_peer.or(file.ft_peer).is_some()),
                (
                    "service-ip",
                    self.service_ip.is_some() || file.service_ip.is_some(),
                ),
            ];
            if let Some((name, _)) = stray.iter().find(|(_, set)| *set) {
                bail!("{name} is set but ft-role is not: give --ft-role primary|backup");
            }
            return Ok(None);
        };
        let role = match role.as_str() {
            "primary" => FtRole::Primary,
            "backup" => FtRole::Backup,
            other => bail!("ft-role {other:?}: expected primary or backup"),
        };
        let listen = self
            .ft_listen
            .or(file.ft_listen)
            .context("ft-role needs --ft-listen ADDR:PORT (our sync-link socket)")?;
        let peer = self
            .ft_peer
            .or(file.ft_peer)
            .context("ft-role needs --ft-peer ADDR:PORT (the peer's sync-link socket)")?;
        let key_file = self
            .ft_key_file
            .clone()
            .or(file.ft_key_file.clone())
            .context("ft-role needs --ft-key-file FILE (the shared secret)")?;
        let key = std::fs::read(&key_file)
            .with_context(|| format!("reading ft-key-file {}", key_file.display()))?;
        if key.len() < 16 {
            bail!(
                "ft-key-file {}: the shared secret must be at least 16 bytes",
                key_file.display()
            );
        }
        let service_ip = self
            .service_ip
            .clone()
            .or(file.service_ip.clone())
            .context("ft-role needs --service-ip VIP/PREFIX")?;
        let (vip, prefix) = parse_vip(&service_ip)?;
        let dev = self
            .service_dev
            .clone()
            .or(file.service_dev.clone())
            .context("ft-role needs --service-dev DEV (the client-facing device)")?;
        if sip_listen.ip() != IpAddr::V4(vip) || media_ip != IpAddr::V4(vip) {
            bail!(
                "with ft-role, sip-listen ({sip_listen}) and media-ip ({media_ip}) must use the service address {vip}"
            );
        }
        let mirror_to = match self.ft_mirror_to.or(file.ft_mirror_to).unwrap_or(peer.ip()) {
            IpAddr::V4(a) => a,
            IpAddr::V6(a) => bail!("ft-mirror-to {a}: IPv4 only"),
        };
        let heartbeat_ms = self.ft_heartbeat_ms.or(file.ft_heartbeat_ms).unwrap_or(10);
        if !(1..=1000).contains(&heartbeat_ms) {
            bail!("ft-heartbeat-ms {heartbeat_ms}: expected 1..1000");
        }
        let dead_after = self.ft_dead_after.or(file.ft_dead_after).unwrap_or(3);
        if dead_after < 2 {
            bail!("ft-dead-after {dead_after}: at least 2 missed heartbeats");
        }
        let max_stretch_ms = self
            .ft_max_stretch_ms
            .or(file.ft_max_stretch_ms)
            .unwrap_or(40);
        if max_stretch_ms > 1000 {
            bail!("ft-max-stretch-ms {max_stretch_ms}: expected 0..1000");
        }
        Ok(Some(FtConfig {
            role,
            listen,
            peer,
            key,
            vip,
            prefix,
            dev,
            mirror_to,
            heartbeat: std::time::Duration::from_millis(heartbeat_ms),
            dead_after,
            max_stretch: std::time::Duration::from_millis(max_stretch_ms),
            queue_num: self.ft_queue_num.or(file.ft_queue_num).unwrap_or(0),
            webrtc_port: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = ServeArgs::default().resolve().unwrap();
        assert_eq!(
            c.sip_listen,
            "127.0.0.1:5060".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(c.media_ip, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!((c.rtp_port_min, c.rtp_port_max), (20000, 29999));
        assert_eq!(
            c.http_listen,
            vec!["127.0.0.1:8080".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!((c.sip_rate_limit, c.sip_rate_burst), (300, 600));
        assert_eq!(c.media_timeout, Some(std::time::Duration::from_secs(60)));
        let off = ServeArgs {
            media_timeout: Some(0),
            ..Default::default()
        };
        assert_eq!(off.resolve().unwrap().media_timeout, None);
    }

    #[test]
    fn sip_rate_limit() {
        let c = ServeArgs {
            sip_rate_limit: Some(50),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!((c.sip_rate_limit, c.sip_rate_burst), (50, 100));
        let c = ServeArgs {
            sip_rate_limit: Some(0),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.sip_rate_limit, 0, "0: no limit");
        assert!(ServeArgs {
            sip_rate_burst: Some(0),
            ..Default::default()
        }
        .resolve()
        .is_err());
    }

    #[test]
    fn file_then_flags() {
        let dir = std::env::temp_dir().join(format!("mcu-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "sip_listen = \"127.0.0.1:5070\"\nrtp_ports = \"30000-30099\"\nmax_participants = 7\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            max_participants: Some(9),
            ..Default::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(c.sip_listen.port(), 5070);
        assert_eq!((c.rtp_port_min, c.rtp_port_max), (30000, 30099));
        assert_eq!(c.max_participants, 9);
        std::fs::write(&path, "sip_listen = 12\n").unwrap();
        let err = ServeArgs {
            config: Some(path.clone()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(format!("{err:#}").contains("c.toml"), "{err:#}");
        std::fs::write(&path, "bogus_key = 1\n").unwrap();
        let err = ServeArgs {
            config: Some(path),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(format!("{err:#}").contains("bogus_key"), "{err:#}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn http_listen_one_or_many() {
        let dir = std::env::temp_dir().join(format!("mcu-cfg-http-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("h.toml");
        let token = dir.join("token");
        std::fs::write(&token, "t0ken\n").unwrap();
        let with_file = |text: &str, flags: &[&str]| {
            // Non-loopback addresses need the admin token.
            let text = format!(
                "admin_token_file = {:?}\n{text}",
                token.display().to_string()
            );
            std::fs::write(&path, text).unwrap();
            ServeArgs {
                config: Some(path.clone()),
                http_listen: flags.iter().map(|a| a.parse().unwrap()).collect(),
                ..Default::default()
            }
            .resolve()
            .map(|c| c.http_listen)
        };
        let addrs = |list: &[&str]| -> Vec<SocketAddr> {
            list.iter().map(|a| a.parse().unwrap()).collect()
        };
        // The single-value form still works.
        assert_eq!(
            with_file("http_listen = \"10.0.0.1:8080\"\n", &[]).unwrap(),
            addrs(&["10.0.0.1:8080"])
        );
        // A list keeps its order: the first is the main address.
        assert_eq!(
            with_file(
                "http_listen = [\"10.0.0.1:8080\", \"198.18.0.100:8080\"]\n",
                &[]
            )
            .unwrap(),
            addrs(&["10.0.0.1:8080", "198.18.0.100:8080"])
        );
        // Flags (repeatable) replace the file's list as a whole.
        assert_eq!(
            with_file(
                "http_listen = [\"10.0.0.1:8080\", \"10.0.0.2:8080\"]\n",
                &["127.0.0.1:9000", "127.0.0.2:9000"]
            )
            .unwrap(),
            addrs(&["127.0.0.1:9000", "127.0.0.2:9000"])
        );
        for (text, flags, needle) in [
            ("http_listen = []\n", &[][..], "at least one"),
            ("", &["127.0.0.1:9000", "127.0.0.1:9000"][..], "given twice"),
            ("http_listen = [\"x\"]\n", &[][..], "h.toml"),
        ] {
            let err = format!("{:#}", with_file(text, flags).unwrap_err());
            assert!(err.contains(needle), "{text:?} {flags:?}: {err}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn admin_token_and_non_loopback_listeners() {
        let dir = std::env::temp_dir().join(format!("mcu-cfg-tok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("token");
        std::fs::write(&token, "  abc123\n").unwrap();
        let public: SocketAddr = "192.0.2.1:8080".parse().unwrap();
        // Loopback only: open without a token.
        let c = ServeArgs {
            http_listen: vec!["127.0.0.1:0".parse().unwrap(), "[::1]:0".parse().unwrap()],
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.admin_token, None);
        // Any other address without a token: refused, the flag named.
        let err = ServeArgs {
            http_listen: vec!["127.0.0.1:0".parse().unwrap(), public],
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("--admin-token-file") && err.contains("192.0.2.1:8080"),
            "{err}"
        );
        // With the token (trimmed), from the flag or the file.
        let c = ServeArgs {
            http_listen: vec![public],
            admin_token_file: Some(token.clone()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.admin_token, Some(AdminToken::new("abc123").unwrap()));
        let toml = dir.join("c.toml");
        std::fs::write(
            &toml,
            format!(
                "http_listen = \"192.0.2.1:8080\"\nadmin_token_file = {:?}\n",
                token.display().to_string()
            ),
        )
        .unwrap();
        let c = ServeArgs {
            config: Some(toml),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert!(c.admin_token.unwrap().matches("abc123"));
        // An empty or unreadable file is an error at start, even on loopback.
        std::fs::write(&token, "\n").unwrap();
        for f in [token.clone(), dir.join("missing")] {
            let err = ServeArgs {
                admin_token_file: Some(f.clone()),
                ..Default::default()
            }
            .resolve()
            .unwrap_err();
            assert!(format!("{err:#}").contains("admin-token-file"), "{err:#}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn limits() {
        assert_eq!(
            ServeArgs::default().resolve().unwrap().limits,
            Limits::default()
        );
        let dir = std::env::temp_dir().join(format!("mcu-cfg-lim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("l.toml");
        std::fs::write(
            &path,
            "max_sip_connections = 20\nsip_tcp_idle_timeout = 2\nhttp_header_timeout = 3\n",
        )
        .unwrap();
        let l = ServeArgs {
            config: Some(path),
            http_header_timeout: Some(4),
            shutdown_timeout: Some(7),
            ..Default::default()
        }
        .resolve()
        .unwrap()
        .limits;
        assert_eq!(l.max_sip_connections, 20);
        assert_eq!(l.max_sip_connections_per_source, 5, "a quarter by default");
        assert_eq!(l.sip_tcp_idle_timeout, Duration::from_secs(2));
        assert_eq!(l.http_header_timeout, Duration::from_secs(4));
        assert_eq!(l.shutdown_timeout, Duration::from_secs(7));
        assert_eq!(l.max_http_connections, 64);
        for (needle, a) in [
            (
                "max-sip-connections",
                ServeArgs {
                    max_sip_connections: Some(0),
                    ..Default::default()
                },
            ),
            (
                "shutdown-timeout",
                ServeArgs {
                    shutdown_timeout: Some(0),
                    ..Default::default()
                },
            ),
        ] {
            assert!(format!("{:#}", a.resolve().unwrap_err()).contains(needle));
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn video_flags_and_keys() {
        let c = ServeArgs::default().resolve().unwrap();
        assert!(c.video);
        assert_eq!(c.video_layout, control::VideoLayout::Switched);
        let c = ServeArgs {
            no_video: true,
            video_layout: Some("grid".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert!(!c.video);
        assert_eq!(c.video_layout, control::VideoLayout::Grid);
        let dir = std::env::temp_dir().join(format!("mcu-cfg-video-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v.toml");
        std::fs::write(&path, "no_video = true\nvideo_layout = \"grid\"\n").unwrap();
        let from_file = |args: ServeArgs| {
            ServeArgs {
                config: Some(path.clone()),
                ..args
            }
            .resolve()
        };
        let c = from_file(ServeArgs::default()).unwrap();
        assert!(!c.video);
        assert_eq!(c.video_layout, control::VideoLayout::Grid);
        // The flag wins over the file.
        let c = from_file(ServeArgs {
            video_layout: Some("switched".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.video_layout, control::VideoLayout::Switched);
        std::fs::write(&path, "video_layout = \"mosaic\"\n").unwrap();
        let err = format!("{:#}", from_file(ServeArgs::default()).unwrap_err());
        assert!(
            err.contains("video-layout") && err.contains("mosaic"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_port_range() {
        for bad in ["abc", "30000-20000", "0-100", "5-6"] {
            let args = ServeArgs {
                rtp_ports: Some(bad.into()),
                ..Default::default()
            };
            assert!(args.resolve().is_err(), "{bad}");
        }
    }

    fn ft_args(dir: &std::path::Path) -> ServeArgs {
        let key = dir.join("key");
        std::fs::write(&key, "0123456789abcdef0123456789abcdef").unwrap();
        ServeArgs {
            sip_listen: Some("198.18.0.100:5060".parse().unwrap()),
            ft_role: Some("backup".into()),
            ft_listen: Some("198.18.0.2:7000".parse().unwrap()),
            ft_peer: Some("198.18.0.1:7000".parse().unwrap()),
            ft_key_file: Some(key),
            service_ip: Some("198.18.0.100/24".into()),
            service_dev: Some("eth0".into()),
            ..Default::default()
        }
    }

    #[test]
    fn hot_standby_flags() {
        let dir = std::env::temp_dir().join(format!("mcu-cfg-ft-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ft = ft_args(&dir).resolve().unwrap().ft.unwrap();
        assert_eq!(ft.role, FtRole::Backup);
        assert_eq!(ft.vip, Ipv4Addr::new(198, 18, 0, 100));
        assert_eq!(ft.prefix, 24);
        assert_eq!(ft.mirror_to, Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(ft.heartbeat, std::time::Duration::from_millis(10));
        assert_eq!(ft.dead_after, 3);
        assert_eq!(ft.key, b"0123456789abcdef0123456789abcdef");

        // Each missing or wrong piece is named in the error.
        type Edit = Box<dyn Fn(&mut ServeArgs)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("ft-listen", Box::new(|a| a.ft_listen = None)),
            ("ft-peer", Box::new(|a| a.ft_peer = None)),
            ("ft-key-file", Box::new(|a| a.ft_key_file = None)),
            ("service-ip", Box::new(|a| a.service_ip = None)),
            ("service-dev", Box::new(|a| a.service_dev = None)),
            (
                "prefix",
                Box::new(|a| a.service_ip = Some("198.18.0.100/40".into())),
            ),
            (
                "must use the service address",
                Box::new(|a| a.sip_listen = Some("198.18.0.1:5060".parse().unwrap())),
            ),
            ("ft-dead-after", Box::new(|a| a.ft_dead_after = Some(1))),
            (
                "reading ft-key-file",
                Box::new(|a| a.ft_key_file = Some("/nonexistent/key".into())),
            ),
        ];
        for (needle, edit) in cases {
            let mut a = ft_args(&dir);
            edit(&mut a);
            let err = format!("{:#}", a.resolve().unwrap_err());
            assert!(err.contains(needle), "{needle}: {err}");
        }
        std::fs::write(dir.join("short"), "tiny").unwrap();
        let mut a = ft_args(&dir);
        a.ft_key_file = Some(dir.join("short"));
        assert!(format!("{:#}", a.resolve().unwrap_err()).contains("at least 16 bytes"));
        // A stray sync-link flag without a role is an error, not silently ignored.
        let a = ServeArgs {
            ft_peer: Some("198.18.0.1:7000".parse().unwrap()),
            ..Default::default()
        };
        assert!(format!("{:#}", a.resolve().unwrap_err()).contains("ft-role"));
        // The same keys in TOML.
        let toml = dir.join("ft.toml");
        std::fs::write(
            &toml,
            format!(
                "sip_listen = \"198.18.0.100:5060\"\nft_role = \"primary\"\nft_listen = \"198.18.0.1:7000\"\nft_peer = \"198.18.0.2:7000\"\nft_key_file = \"{}\"\nservice_ip = \"198.18.0.100/24\"\nservice_dev = \"eth0\"\nft_heartbeat_ms = 5\n",
                dir.join("key").display()
            ),
        )
        .unwrap();
        let ft = ServeArgs {
            config: Some(toml),
            ..Default::default()
        }
        .resolve()
        .unwrap()
        .ft
        .unwrap();
        assert_eq!(ft.role, FtRole::Primary);
        assert_eq!(ft.heartbeat, std::time::Duration::from_millis(5));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
