//! Server configuration: command-line flags, each also settable in a TOML file (`--config`).
//! Flags given on the command line win over the file; the file wins over defaults.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

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
    /// HTTP admin/metrics listen address [default: 127.0.0.1:8080].
    #[arg(long)]
    pub http_listen: Option<SocketAddr>,
    /// Maximum participants per room [default: 100].
    #[arg(long)]
    pub max_participants: Option<usize>,
    /// How many loudest speakers are mixed [default: 3].
    #[arg(long)]
    pub top_n: Option<usize>,
    /// Seed for every random choice (SSRCs, tags); random at start when absent.
    #[arg(long)]
    pub seed: Option<u64>,
}

/// The TOML file's shape (same keys as the flags).
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    sip_listen: Option<SocketAddr>,
    media_ip: Option<IpAddr>,
    rtp_ports: Option<String>,
    http_listen: Option<SocketAddr>,
    max_participants: Option<usize>,
    top_n: Option<usize>,
    seed: Option<u64>,
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
    /// HTTP listen address.
    pub http_listen: SocketAddr,
    /// Max participants per room.
    pub max_participants: usize,
    /// Top-N mixing.
    pub top_n: usize,
    /// Seed, if fixed.
    pub seed: Option<u64>,
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
            .or(file.rtp_ports)
            .unwrap_or_else(|| "20000-29999".into());
        let (rtp_port_min, rtp_port_max) = parse_port_range(&ports)?;
        let http_listen = self
            .http_listen
            .or(file.http_listen)
            .unwrap_or_else(|| "127.0.0.1:8080".parse().expect("literal"));
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
        Ok(Config {
            sip_listen,
            media_ip,
            rtp_port_min,
            rtp_port_max,
            http_listen,
            max_participants,
            top_n,
            seed: self.seed.or(file.seed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = ServeArgs::default().resolve().unwrap();
        assert_eq!(c.sip_listen, "127.0.0.1:5060".parse().unwrap());
        assert_eq!(c.media_ip, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!((c.rtp_port_min, c.rtp_port_max), (20000, 29999));
        assert_eq!(c.http_listen, "127.0.0.1:8080".parse().unwrap());
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
    fn bad_port_range() {
        for bad in ["abc", "30000-20000", "0-100", "5-6"] {
            let args = ServeArgs {
                rtp_ports: Some(bad.into()),
                ..Default::default()
            };
            assert!(args.resolve().is_err(), "{bad}");
        }
    }
}
