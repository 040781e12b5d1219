//! Writing UDP datagrams as capture files: used by replay (`--out`), by this crate's
//! tests, and by server tests that need hand-made captures.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Duration;

use etherparse::PacketBuilder;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, TsResolution};

use crate::net::*;

/// Build an IPv4/IPv6 + UDP packet (no link header).
pub fn ip_udp(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let b = match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            PacketBuilder::ipv4(s.ip().octets(), d.ip().octets(), 64).udp(s.port(), d.port())
        }
        (s, d) => {
            let v6 = |a: SocketAddr| match a {
                SocketAddr::V4(a) => a.ip().to_ipv6_mapped().octets(),
                SocketAddr::V6(a) => a.ip().octets(),
            };
            PacketBuilder::ipv6(v6(s), v6(d), 64).udp(s.port(), d.port())
        }
    };
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload)
        .expect("writing to a Vec cannot fail");
    out
}

fn ethertype(ip: &[u8]) -> u16 {
    if ip.first().map(|b| b >> 4) == Some(6) {
        0x86dd
    } else {
        0x0800
    }
}

/// Build a whole frame of the given link type carrying one UDP datagram.
/// Supported: Ethernet, Linux SLL, SLL2, raw IP (101), null (0).
pub fn udp_frame(linktype: u32, src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let ip = ip_udp(src, dst, payload);
    let et = ethertype(&ip);
    let mut f = Vec::with_capacity(ip.len() + 20);
    match linktype {
        LINKTYPE_ETHERNET => {
            f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2]);
            f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]);
            f.extend_from_slice(&et.to_be_bytes());
        }
        LINKTYPE_LINUX_SLL => {
            f.extend_from_slice(&0u16.to_be_bytes()); // packet type: to us
            f.extend_from_slice(&1u16.to_be_bytes()); // ARPHRD_ETHER
            f.extend_from_slice(&6u16.to_be_bytes());
            f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0, 0]);
            f.extend_from_slice(&et.to_be_bytes());
        }
        LINKTYPE_LINUX_SLL2 => {
            f.extend_from_slice(&et.to_be_bytes());
            f.extend_from_slice(&[0, 0]);
            f.extend_from_slice(&1u32.to_be_bytes()); // ifindex
            f.extend_from_slice(&1u16.to_be_bytes()); // ARPHRD_ETHER
            f.push(0); // packet type
            f.push(6);
            f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0, 0]);
        }
        LINKTYPE_NULL => {
            let fam: u32 = if et == 0x86dd { 30 } else { 2 };
            f.extend_from_slice(&fam.to_ne_bytes());
        }
        _ => {}
    }
    f.extend_from_slice(&ip);
    f
}

/// One datagram to write.
#[derive(Debug, Clone)]
pub struct Datagram {
    /// Capture time since the Unix epoch.
    pub time: Duration,
    /// Source address.
    pub src: SocketAddr,
    /// Destination address.
    pub dst: SocketAddr,
    /// UDP payload.
    pub payload: Vec<u8>,
}

/// Serialise datagrams as a classic pcap (nanosecond resolution) of the given link type.
pub fn to_pcap(linktype: u32, datagrams: &[Datagram]) -> Vec<u8> {
    to_pcap_snaplen(linktype, datagrams, 262_144)
}

/// Like [`to_pcap`], keeping only the first `snaplen` bytes of each frame (as
/// `tcpdump -s SNAPLEN` does).
pub fn to_pcap_snaplen(linktype: u32, datagrams: &[Datagram], snaplen: u32) -> Vec<u8> {
    let header = PcapHeader {
        datalink: DataLink::from(linktype),
        ts_resolution: TsResolution::NanoSecond,
        snaplen,
        ..Default::default()
    };
    let mut w = PcapWriter::with_header(Vec::new(), header).expect("Vec write");
    for d in datagrams {
        let frame = udp_frame(linktype, d.src, d.dst, &d.payload);
        let kept = &frame[..frame.len().min(snaplen as usize)];
        w.write_packet(&PcapPacket::new(d.time, frame.len() as u32, kept))
            .expect("Vec write");
    }
    w.into_writer()
}

/// Serialise datagrams as pcapng (one interface, nanosecond `if_tsresol`).
pub fn to_pcapng(linktype: u32, datagrams: &[Datagram]) -> Vec<u8> {
    let mut w = PcapNgWriter::new(Vec::new()).expect("Vec write");
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::from(linktype),
        snaplen: 262_144,
        options: vec![InterfaceDescriptionOption::IfTsResol(9)],
    })
    .expect("Vec write");
    for d in datagrams {
        let frame = udp_frame(linktype, d.src, d.dst, &d.payload);
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: d.time,
            original_len: frame.len() as u32,
            data: Cow::Owned(frame),
            options: vec![],
        })
        .expect("Vec write");
    }
    w.into_inner()
}

/// Build an RTP packet (no CSRC, no extension).
pub fn rtp_packet(pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + payload.len());
    p.push(0x80);
    p.push(pt | if marker { 0x80 } else { 0 });
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}
