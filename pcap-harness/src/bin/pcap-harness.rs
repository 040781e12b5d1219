//! Stand-alone `pcap-harness` binary: the same subcommands as `mcu pcap`, for running the
//! harness without building the server (`pcap-harness analyze FILE --json`).

use clap::Parser;

/// Recorded-pcap media harness.
#[derive(Parser, Debug)]
#[command(name = "pcap-harness", version)]
struct Cli {
    #[command(subcommand)]
    cmd: pcap_harness::cli::PcapCommand,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = pcap_harness::cli::run(cli.cmd) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
