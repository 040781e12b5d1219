//! The crate's single error type.

use std::path::PathBuf;

/// Everything that can go wrong while reading or analyzing a capture.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The capture file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file that failed.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is neither pcap nor pcapng (unknown magic number).
    #[error("not a pcap or pcapng file (magic {magic:#010x} at byte offset 0)")]
    UnknownFormat {
        /// The first four bytes, big-endian.
        magic: u32,
    },
    /// The file ends in the middle of a header, record or block.
    #[error("truncated capture: record at byte offset {offset} is incomplete or its length field is corrupt ({what})")]
    Truncated {
        /// Byte offset of the incomplete record (or header) from the start of the file.
        offset: u64,
        /// What was being read.
        what: &'static str,
    },
    /// A header, record or block holds an impossible value.
    #[error("corrupt capture at byte offset {offset}: {reason}")]
    Corrupt {
        /// Byte offset of the bad record (or header) from the start of the file.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The capture uses a link-layer type this crate does not decode.
    #[error("unsupported link type {linktype} (supported: Ethernet, Linux SLL/SLL2, raw IP, null/loopback)")]
    UnsupportedLinkType {
        /// The numeric LINKTYPE_ value.
        linktype: u32,
    },
    /// Writing an output file (WAV, JSON, pcap) failed.
    #[error("cannot write {path}: {reason}")]
    Output {
        /// The file being written.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// libvpx could not set up a VP8 decoder.
    #[error("VP8 decoder: {0}")]
    Vpx(crate::vpx::VpxError),
    /// A command-line or API argument is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}
