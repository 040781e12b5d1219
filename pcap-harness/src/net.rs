//! Link, IP and UDP decoding: from a captured frame to a UDP datagram.

use std::net::{IpAddr, SocketAddr};

use etherparse::{EtherType, LaxNetSlice, LaxSlicedPacket, TransportSlice};

/// LINKTYPE_NULL (BSD loopback, host byte order family).
pub const LINKTYPE_NULL: u32 = 0;
/// LINKTYPE_ETHERNET.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// LINKTYPE_RAW (raw IPv4/IPv6).
pub const LINKTYPE_RAW: u32 = 101;
/// LINKTYPE_LOOP (OpenBSD loopback, network byte order family).
pub const LINKTYPE_LOOP: u32 = 108;
/// LINKTYPE_LINUX_SLL (Linux cooked capture v1).
pub const LINKTYPE_LINUX_SLL: u32 = 113;
/// LINKTYPE_IPV4.
pub const LINKTYPE_IPV4: u32 = 228;
/// LINKTYPE_IPV6.
pub const LINKTYPE_IPV6: u32 = 229;
/// LINKTYPE_LINUX_SLL2 (Linux cooked capture v2).
pub const LINKTYPE_LINUX_SLL2: u32 = 276;

/// Whether this crate decodes frames of the given link type.
pub fn linktype_supported(linktype: u32) -> bool {
    matches!(
        linktype,
        LINKTYPE_NULL
            | LINKTYPE_ETHERNET
            | LINKTYPE_RAW
            | LINKTYPE_LOOP
            | LINKTYPE_LINUX_SLL
            | LINKTYPE_IPV4
            | LINKTYPE_IPV6
            | LINKTYPE_LINUX_SLL2
            | 12 // LINKTYPE_RAW as written by some OpenBSD tools
            | 14 // ditto
    )
}

/// A UDP datagram extracted from a frame.
#[derive(Debug, Clone, Copy)]
pub struct Udp<'a> {
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// UDP payload (as captured: shorter than sent when `truncated`).
    pub payload: &'a [u8],
    /// The capture's snap length cut the datagram short.
    pub truncated: bool,
}

/// Why a frame yielded no UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Not IP, or IP but not UDP.
    NotUdp,
    /// An IP fragment (reassembly is not implemented).
    Fragment,
    /// Headers are cut short or malformed.
    Malformed,
}

/// Decode one frame of the given link type down to UDP. Frames cut short by the snap
/// length still yield their (partial) UDP payload, flagged `truncated`.
pub fn decode_udp(linktype: u32, data: &[u8]) -> Result<Udp<'_>, Skip> {
    let sliced = match linktype {
        LINKTYPE_ETHERNET => LaxSlicedPacket::from_ethernet(data).map_err(|_| Skip::Malformed)?,
        LINKTYPE_LINUX_SLL => {
            // SLL: packet type (2), ARPHRD (2), addr len (2), addr (8), protocol (2).
            // Decoded by hand: etherparse rejects ARPHRD_LOOPBACK (772), which is what
            // `tcpdump -i any` records for loopback traffic.
            if data.len() < 16 {
                return Err(Skip::Malformed);
            }
            let proto = u16::from_be_bytes([data[14], data[15]]);
            LaxSlicedPacket::from_ether_type(EtherType(proto), &data[16..])
        }
        LINKTYPE_LINUX_SLL2 => {
            // SLL2: protocol type (2), reserved (2), ifindex (4), arphrd (2), pkttype (1),
            // addr len (1), addr (8) = 20 bytes.
            if data.len() < 20 {
                return Err(Skip::Malformed);
            }
            let proto = u16::from_be_bytes([data[0], data[1]]);
            LaxSlicedPacket::from_ether_type(EtherType(proto), &data[20..])
        }
        LINKTYPE_RAW | LINKTYPE_IPV4 | LINKTYPE_IPV6 | 12 | 14 => {
            LaxSlicedPacket::from_ip(data).map_err(|_| Skip::Malformed)?
        }
        LINKTYPE_NULL | LINKTYPE_LOOP => {
            if data.len() < 4 {
                return Err(Skip::Malformed);
            }
            LaxSlicedPacket::from_ip(&data[4..]).map_err(|_| Skip::Malformed)?
        }
        _ => return Err(Skip::NotUdp),
    };
    let (src_ip, dst_ip, fragmented, incomplete): (IpAddr, IpAddr, bool, bool) = match &sliced.net {
        Some(LaxNetSlice::Ipv4(v4)) => (
            v4.header().source_addr().into(),
            v4.header().destination_addr().into(),
            v4.payload().fragmented,
            v4.payload().incomplete,
        ),
        Some(LaxNetSlice::Ipv6(v6)) => (
            v6.header().source_addr().into(),
            v6.header().destination_addr().into(),
            v6.payload().fragmented,
            v6.payload().incomplete,
        ),
        _ => return Err(Skip::NotUdp),
    };
    if fragmented {
        return Err(Skip::Fragment);
    }
    match sliced.transport {
        Some(TransportSlice::Udp(udp)) => {
            let payload = udp.payload();
            let udp_len = usize::from(udp.length());
            Ok(Udp {
                src: SocketAddr::new(src_ip, udp.source_port()),
                dst: SocketAddr::new(dst_ip, udp.destination_port()),
                payload,
                truncated: incomplete || payload.len() + 8 < udp_len,
            })
        }
        _ if sliced.stop_err.is_some() => Err(Skip::Malformed),
        _ => Err(Skip::NotUdp),
    }
}
