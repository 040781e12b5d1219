//! Reading pcap and pcapng files into link-layer frames with absolute timestamps.
//!
//! The whole file is read into memory and parsed with `pcap-file`'s slice parsers so
//! that every error can name the byte offset of the record that caused it.

use pcap_file::pcap::PcapParser;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgParser};
use pcap_file::PcapError;

use crate::Error;

/// One captured frame.
#[derive(Debug, Clone)]
pub struct Frame<'a> {
    /// 1-based frame number, as Wireshark counts them.
    pub number: u64,
    /// Capture time, seconds since the Unix epoch.
    pub time: f64,
    /// Capture time, nanoseconds since the Unix epoch (exact).
    pub time_ns: i128,
    /// LINKTYPE_ value of the interface the frame was captured on.
    pub linktype: u32,
    /// Frame bytes starting at the link-layer header.
    pub data: &'a [u8],
    /// Byte offset of the frame's record in the file.
    pub offset: u64,
}

/// The container format of a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Classic libpcap.
    Pcap,
    /// pcapng.
    PcapNg,
}

impl Format {
    /// Lower-case name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Format::Pcap => "pcap",
            Format::PcapNg => "pcapng",
        }
    }
}

fn map_err(e: PcapError, offset: u64, what: &'static str) -> Error {
    match e {
        PcapError::IncompleteBuffer => Error::Truncated { offset, what },
        other => Error::Corrupt {
            offset,
            reason: format!("{what}: {other}"),
        },
    }
}

/// Run one `pcap-file` parser step. That crate indexes and unwraps on some malformed
/// blocks; a panic there becomes [`Error::Corrupt`] at the block's offset instead of
/// taking the caller down.
fn guarded<T>(
    offset: u64,
    what: &'static str,
    step: impl FnOnce() -> Result<T, PcapError>,
) -> Result<T, Error> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)) {
        Ok(r) => r.map_err(|e| map_err(e, offset, what)),
        Err(_) => Err(Error::Corrupt {
            offset,
            reason: format!("{what}: malformed (the parser could not read it)"),
        }),
    }
}

/// Detect the format from the first four bytes.
pub fn detect(data: &[u8]) -> Result<Format, Error> {
    if data.len() < 4 {
        return Err(Error::Truncated {
            offset: 0,
            what: "file header",
        });
    }
    let magic = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    match magic {
        0xa1b2_c3d4 | 0xd4c3_b2a1 | 0xa1b2_3c4d | 0x4d3c_b2a1 => Ok(Format::Pcap),
        0x0a0d_0d0a => Ok(Format::PcapNg),
        _ => Err(Error::UnknownFormat { magic }),
    }
}

/// Parse every frame of a capture held in memory, calling `f` for each in file order.
pub fn for_each_frame<'a>(data: &'a [u8], mut f: impl FnMut(Frame<'a>)) -> Result<Format, Error> {
    let format = detect(data)?;
    let total = data.len() as u64;
    let offset_of = |rem: &[u8]| total - rem.len() as u64;
    let mut number = 0u64;
    match format {
        Format::Pcap => {
            let (mut rem, parser) = guarded(0, "pcap file header", || PcapParser::new(data))?;
            let header = parser.header();
            let linktype = u32::from(header.datalink);
            while !rem.is_empty() {
                let offset = offset_of(rem);
                // Raw records: pcap-file's validated `next_packet` rejects orig_len >
                // snaplen, which every `tcpdump -s N` capture has.
                let (next, pkt) =
                    guarded(offset, "pcap packet record", || parser.next_raw_packet(rem))?;
                number += 1;
                let frac_ns = match header.ts_resolution {
                    pcap_file::TsResolution::MicroSecond => i128::from(pkt.ts_frac) * 1000,
                    pcap_file::TsResolution::NanoSecond => i128::from(pkt.ts_frac),
                };
                let time_ns = i128::from(pkt.ts_sec) * 1_000_000_000 + frac_ns;
                let bytes: &'a [u8] = match pkt.data {
                    std::borrow::Cow::Borrowed(b) => b,
                    std::borrow::Cow::Owned(_) => {
                        return Err(Error::Corrupt {
                            offset,
                            reason: "unexpected owned packet data".into(),
                        })
                    }
                };
                f(Frame {
                    number,
                    time: time_ns as f64 / 1e9,
                    time_ns,
                    linktype,
                    data: bytes,
                    offset,
                });
                rem = next;
            }
        }
        Format::PcapNg => {
            let (mut rem, mut parser) =
                guarded(0, "pcapng section header", || PcapNgParser::new(data))?;
            // Per interface: (linktype, units per second, offset seconds).
            let mut ifaces: Vec<(u32, u128, i128)> = Vec::new();
            while !rem.is_empty() {
                let offset = offset_of(rem);
                let (next, block) = guarded(offset, "pcapng block", || parser.next_block(rem))?;
                match block {
                    Block::SectionHeader(_) => ifaces.clear(),
                    Block::InterfaceDescription(idb) => {
                        let mut units: u128 = 1_000_000;
                        let mut tsoffset: i128 = 0;
                        for opt in &idb.options {
                            match opt {
                                InterfaceDescriptionOption::IfTsResol(r) => {
                                    let r = *r;
                                    let exp = u32::from(r & 0x7f);
                                    units = if r & 0x80 != 0 {
                                        2u128.checked_pow(exp)
                                    } else {
                                        10u128.checked_pow(exp)
                                    }
                                    .ok_or_else(|| {
                                        Error::Corrupt {
                                            offset,
                                            reason: format!("if_tsresol {r} out of range"),
                                        }
                                    })?;
                                }
                                InterfaceDescriptionOption::IfTsOffset(o) => {
                                    tsoffset = i128::from(*o);
                                }
                                _ => {}
                            }
                        }
                        ifaces.push((u32::from(idb.linktype), units.max(1), tsoffset));
                    }
                    Block::EnhancedPacket(epb) => {
                        number += 1;
                        let (linktype, units, tsoffset) = *ifaces
                            .get(epb.interface_id as usize)
                            .ok_or_else(|| Error::Corrupt {
                                offset,
                                reason: format!(
                                    "packet refers to undeclared interface {}",
                                    epb.interface_id
                                ),
                            })?;
                        // pcap-file reports the raw 64-bit timestamp as nanoseconds;
                        // rescale it with the interface's resolution.
                        let raw = epb.timestamp.as_nanos();
                        let secs = (raw / units) as i128;
                        let frac = raw % units;
                        let time_ns = (secs + tsoffset) * 1_000_000_000
                            + (frac * 1_000_000_000 / units) as i128;
                        let bytes: &'a [u8] = match epb.data {
                            std::borrow::Cow::Borrowed(b) => b,
                            std::borrow::Cow::Owned(_) => &[],
                        };
                        f(Frame {
                            number,
                            time: time_ns as f64 / 1e9,
                            time_ns,
                            linktype,
                            data: bytes,
                            offset,
                        });
                    }
                    Block::SimplePacket(spb) => {
                        number += 1;
                        let linktype = ifaces.first().map(|i| i.0).unwrap_or(1);
                        let bytes: &'a [u8] = match spb.data {
                            std::borrow::Cow::Borrowed(b) => b,
                            std::borrow::Cow::Owned(_) => &[],
                        };
                        // Simple packet blocks carry no timestamp.
                        f(Frame {
                            number,
                            time: 0.0,
                            time_ns: 0,
                            linktype,
                            data: bytes,
                            offset,
                        });
                    }
                    _ => {}
                }
                rem = next;
            }
        }
    }
    Ok(format)
}
