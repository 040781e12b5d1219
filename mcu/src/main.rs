//! `mcu`: the Understudy conferencing server binary.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod bench;
mod bench_video;
mod bench_webrtc;

#[derive(Parser)]
#[command(
    name = "mcu",
    version,
    about = "Understudy audio conferencing server (MCU)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(Box<mcu::config::ServeArgs>),
    /// Capture analysis and replay tools.
    #[command(subcommand)]
    Pcap(pcap_harness::cli::PcapCommand),
    /// Load generators for the benchmark scripts.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Re-execute this program with the same arguments (same PID, fresh process image); returns
/// only if that fails. No descriptor survives: any still open is marked close-on-exec.
fn rejoin() -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        for fd in dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|fd| *fd > 2)
        {
            // SAFETY: fcntl on a descriptor number; an invalid one only makes it fail.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    let err = std::process::Command::new("/proc/self/exe")
        .args(std::env::args_os().skip(1))
        .exec();
    anyhow::anyhow!("re-executing to rejoin as backup: {err}")
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let cfg = args.resolve()?;
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            if let Err(e) = mcu::limits::raise_fd_limit() {
                tracing::warn!("open files limit: {e}");
            }
            let rt = tokio::runtime::Runtime::new()?;
            let result = rt.block_on(async move {
                // Hot standby: settle the role and take the service address first (the
                // listeners bind to it).
                let ft = match &cfg.ft {
                    Some(f) => Some(mcu::hot_standby::start(f).await?),
                    None => None,
                };
                let listeners = mcu::server::Listeners::bind(&cfg).await?;
                mcu::server::run_with_ft(cfg, listeners, ft, shutdown_signal()).await
            });
            // The server has stopped (within its shutdown deadline); a task or thread still
            // busy must not hold the exit.
            rt.shutdown_timeout(std::time::Duration::from_millis(500));
            if let Some(r) = result
                .as_ref()
                .err()
                .and_then(|e| e.downcast_ref::<mcu::server::Rejoin>())
            {
                // Everything this process held (VIP, rules, sockets) is released: start again
                // with the same arguments and rejoin the serving node as its backup.
                tracing::warn!("{r}: restarting this process");
                return Err(rejoin());
            }
            result
        }
        Command::Pcap(cmd) => pcap_harness::cli::run(cmd).map_err(|e| anyhow::anyhow!(e)),
        Command::Bench(cmd) => bench::run(cmd),
    }
}
