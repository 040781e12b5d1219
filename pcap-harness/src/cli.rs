//! `mcu pcap ...` subcommands.

/// `mcu pcap <command>`.
#[derive(clap::Subcommand, Debug)]
pub enum PcapCommand {
    /// Analyze a capture: RTP/RTCP streams, SIP dialogs, audio energy.
    Analyze(AnalyzeArgs),
}

/// Arguments of `mcu pcap analyze`.
#[derive(clap::Args, Debug)]
pub struct AnalyzeArgs {
    /// Capture file (pcap or pcapng).
    pub file: std::path::PathBuf,
    /// Print the full report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write one WAV per decoded stream into this directory.
    #[arg(long)]
    pub wav: Option<std::path::PathBuf>,
}

/// Run a pcap subcommand, printing to stdout. Errors are human-readable.
pub fn run(cmd: PcapCommand) -> Result<(), String> {
    match cmd {
        PcapCommand::Analyze(_) => Err("not implemented yet".into()),
    }
}
