//! The service address (VIP): held silently on the backup, claimed at takeover.
//!
//! Standby: the VIP sits on `lo` as a /32 so the backup's stack accepts the mirrored copies
//! (their destination is the VIP), while `arp_ignore=1` / `arp_announce=2` keep the backup
//! from answering ARP for it or using it as an ARP source. Takeover: the VIP moves to the
//! client-facing device and a gratuitous ARP makes the clients' (and router's) neighbour
//! tables point at the backup's MAC.
//!
//! Addresses are changed over rtnetlink with the synchronous crates of the rust-netlink
//! project (`netlink-packet-route` messages on a `netlink-sys` socket): no fork/exec of `ip`
//! on the takeover path (that cost ~3 ms under load) and no async runtime (`rtnetlink`
//! needs tokio). The gratuitous ARP is sent directly on an `AF_PACKET` socket.

use crate::error::Error;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::ffi::CString;
use std::io;
use std::net::IpAddr;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// How a claim announces itself.
#[derive(Debug, Clone)]
pub struct ClaimOptions {
    /// Gratuitous ARPs to send (the first immediately; more cover a lost frame).
    pub garp_count: u32,
    /// Pause between them.
    pub garp_interval: Duration,
}

impl Default for ClaimOptions {
    fn default() -> Self {
        ClaimOptions {
            garp_count: 3,
            garp_interval: Duration::from_millis(20),
        }
    }
}

/// What a claim did and how long its steps took (from the start of [`claim`]).
#[derive(Debug, Clone)]
pub struct ClaimReport {
    /// The VIP was configured on the device.
    pub address_added: Duration,
    /// The first gratuitous ARP was about to be sent (taken just before the syscall: under
    /// load the thread may be preempted right after it, while clients already react).
    pub first_garp: Duration,
    /// Everything done (all ARPs sent, VIP removed from `lo`).
    pub done: Duration,
    /// The MAC the ARPs announced.
    pub mac: [u8; 6],
}

/// Sets `net.ipv4.conf.all.arp_ignore=1` and `arp_announce=2` in this namespace and puts
/// `vip/32` on `lo`: the node accepts packets for the VIP but does not claim it on the wire.
pub fn hold_standby(vip: Ipv4Addr) -> Result<(), Error> {
    set_sysctl("net/ipv4/conf/all/arp_ignore", "1")?;
    set_sysctl("net/ipv4/conf/all/arp_announce", "2")?;
    set_addr(AddrOp::Replace, vip, 32, "lo")
}

/// Removes the standby `vip/32` from `lo` (absent is fine).
pub fn release_standby(vip: Ipv4Addr) -> Result<(), Error> {
    set_addr(AddrOp::Delete, vip, 32, "lo")
}

/// Claims `vip/prefix` on `dev`: adds the address, announces it with gratuitous ARPs, and
/// removes the standby copy from `lo`. Idempotent.
pub fn claim(
    vip: Ipv4Addr,
    prefix: u8,
    dev: &str,
    opts: &ClaimOptions,
) -> Result<ClaimReport, Error> {
    let start = Instant::now();
    let mac = hw_addr(dev)?;
    set_addr(AddrOp::Replace, vip, prefix, dev)?;
    let address_added = start.elapsed();
    let mut first_garp = Duration::ZERO;
    for i in 0..opts.garp_count.max(1) {
        if i > 0 {
            std::thread::sleep(opts.garp_interval);
        }
        if i == 0 {
            first_garp = start.elapsed();
        }
        send_gratuitous_arp(dev, vip)?;
    }
    release_standby(vip)?;
    Ok(ClaimReport {
        address_added,
        first_garp,
        done: start.elapsed(),
        mac,
    })
}

/// Gives up `vip/prefix` on `dev` (absent is fine).
pub fn release(vip: Ipv4Addr, prefix: u8, dev: &str) -> Result<(), Error> {
    set_addr(AddrOp::Delete, vip, prefix, dev)
}

/// What [`set_addr`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrOp {
    /// Add the address, or update it if present (`ip addr replace`).
    Replace,
    /// Remove the address; absent is fine (`ip addr del`).
    Delete,
}

/// Adds or removes `addr/prefix` on `dev` with one rtnetlink request, waiting for the
/// kernel's acknowledgement.
pub fn set_addr(op: AddrOp, addr: Ipv4Addr, prefix: u8, dev: &str) -> Result<(), Error> {
    let index = if_index(dev)? as u32;
    let nl_err = |what: &str, source: io::Error| Error::Io {
        what: format!("rtnetlink {what} {addr}/{prefix} dev {dev}"),
        source,
    };
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = prefix;
    msg.header.index = index;
    msg.attributes = vec![
        AddressAttribute::Local(IpAddr::V4(addr)),
        AddressAttribute::Address(IpAddr::V4(addr)),
    ];
    let mut header = NetlinkHeader::default();
    let payload = match op {
        AddrOp::Replace => {
            header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
            RouteNetlinkMessage::NewAddress(msg)
        }
        AddrOp::Delete => {
            header.flags = NLM_F_REQUEST | NLM_F_ACK;
            RouteNetlinkMessage::DelAddress(msg)
        }
    };
    let mut request = NetlinkMessage::new(header, NetlinkPayload::from(payload));
    request.header.sequence_number = 1;
    request.finalize();
    let mut buf = vec![0u8; request.buffer_len()];
    request.serialize(&mut buf);

    let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| nl_err("socket", e))?;
    socket.bind_auto().map_err(|e| nl_err("bind", e))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(|e| nl_err("connect", e))?;
    socket.send(&buf, 0).map_err(|e| nl_err("send", e))?;
    let mut reply = vec![0u8; 8192];
    loop {
        let n = socket
            .recv(&mut &mut reply[..], 0)
            .map_err(|e| nl_err("recv", e))?;
        let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply[..n])
            .map_err(|e| nl_err("reply", io::Error::other(e.to_string())))?;
        if let NetlinkPayload::Error(e) = msg.payload {
            return match e.code {
                None => Ok(()),
                // Deleting an address that is not there: the goal is reached.
                Some(c) if op == AddrOp::Delete && -c.get() == libc::EADDRNOTAVAIL => Ok(()),
                Some(_) => Err(nl_err(
                    if op == AddrOp::Replace { "add" } else { "del" },
                    e.to_io(),
                )),
            };
        }
    }
}

/// Writes a sysctl of the calling thread's network namespace, e.g. `net/ipv4/ip_forward`.
pub fn set_sysctl(path: &str, value: &str) -> Result<(), Error> {
    let file = format!("/proc/sys/{path}");
    std::fs::write(&file, value).map_err(|source| Error::Io { what: file, source })
}

/// The ARP frame announcing that `ip` is at `mac`: an ARP request with sender and target
/// address both `ip`, broadcast. Linux, like most stacks, updates an existing neighbour
/// entry on it (and, with `arp_accept`, creates one).
pub fn gratuitous_arp_frame(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 42] {
    use etherparse::{ArpEthIpv4Packet, ArpOperation, EtherType, Ethernet2Header};
    let eth = Ethernet2Header {
        source: mac,
        destination: [0xff; 6],
        ether_type: EtherType::ARP,
    };
    let arp = ArpEthIpv4Packet {
        operation: ArpOperation::REQUEST,
        sender_mac: mac,
        sender_ipv4: ip.octets(),
        target_mac: [0; 6],
        target_ipv4: ip.octets(),
    };
    let mut f = [0u8; Ethernet2Header::LEN + ArpEthIpv4Packet::LEN];
    f[..Ethernet2Header::LEN].copy_from_slice(&eth.to_bytes());
    f[Ethernet2Header::LEN..].copy_from_slice(&arp.to_bytes());
    f
}

/// Sends one gratuitous ARP for `ip` from `dev`'s MAC.
pub fn send_gratuitous_arp(dev: &str, ip: Ipv4Addr) -> Result<(), Error> {
    let ifindex = if_index(dev)?;
    let mac = hw_addr(dev)?;
    let frame = gratuitous_arp_frame(mac, ip);
    let sock = Fd::new(
        // SAFETY: plain socket(2) call with constant arguments; the result is checked and
        // owned by `Fd`, which closes it.
        unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                (libc::ETH_P_ARP as u16).to_be() as i32,
            )
        },
        "socket(AF_PACKET)",
    )?;
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value before we fill it.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ARP as u16).to_be();
    sll.sll_ifindex = ifindex;
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    // SAFETY: `frame` and `sll` are live for the call and the lengths passed are theirs.
    let n = unsafe {
        libc::sendto(
            sock.0,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if n != frame.len() as isize {
        return Err(io_err("sendto(gratuitous ARP)"));
    }
    Ok(())
}

/// The interface index of `dev` in this namespace.
pub fn if_index(dev: &str) -> Result<i32, Error> {
    let c = CString::new(dev).map_err(|_| Error::NoSuchDevice(dev.to_string()))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(Error::NoSuchDevice(dev.to_string()));
    }
    Ok(idx as i32)
}

/// The MAC address of `dev`, asked of the kernel (SIOCGIFHWADDR) rather than read from
/// `/sys`, whose view belongs to the namespace it was mounted in, not the caller's.
pub fn hw_addr(dev: &str) -> Result<[u8; 6], Error> {
    if dev.len() >= libc::IFNAMSIZ {
        return Err(Error::NoSuchDevice(dev.to_string()));
    }
    let sock = Fd::new(
        // SAFETY: socket(2) with constant arguments; result checked and owned by `Fd`.
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) },
        "socket(AF_INET)",
    )?;
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(dev.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR reads ifr_name (NUL-terminated: the name is shorter than
    // IFNAMSIZ and the rest is zero) and writes ifr_hwaddr inside `req`, which we own.
    if unsafe { libc::ioctl(sock.0, libc::SIOCGIFHWADDR, &mut req) } < 0 {
        let e = io::Error::last_os_error();
        return Err(if e.raw_os_error() == Some(libc::ENODEV) {
            Error::NoSuchDevice(dev.to_string())
        } else {
            Error::Io {
                what: format!("SIOCGIFHWADDR {dev}"),
                source: e,
            }
        });
    }
    // SAFETY: after a successful SIOCGIFHWADDR the union holds ifr_hwaddr.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(data.iter()) {
        *m = *d as u8;
    }
    Ok(mac)
}

struct Fd(libc::c_int);

impl Fd {
    fn new(fd: libc::c_int, what: &str) -> Result<Fd, Error> {
        if fd < 0 {
            Err(io_err(what))
        } else {
            Ok(Fd(fd))
        }
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own this descriptor and close it exactly once.
        unsafe { libc::close(self.0) };
    }
}

fn io_err(what: &str) -> Error {
    Error::Io {
        what: what.to_string(),
        source: io::Error::last_os_error(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garp_frame_layout() {
        let mac = [2, 0, 0, 0, 0, 2];
        let f = gratuitous_arp_frame(mac, Ipv4Addr::new(198, 18, 0, 100));
        let arp = etherparse::SlicedPacket::from_ethernet(&f).unwrap();
        let Some(etherparse::NetSlice::Arp(a)) = arp.net else {
            panic!("not ARP")
        };
        assert_eq!(a.operation(), etherparse::ArpOperation::REQUEST);
        assert_eq!(a.sender_hw_addr(), &mac);
        assert_eq!(a.sender_protocol_addr(), &[198, 18, 0, 100]);
        assert_eq!(a.target_protocol_addr(), &[198, 18, 0, 100]);
        assert_eq!(a.target_hw_addr(), &[0; 6]);
        // The exact frame the hand-written builder produced before etherparse built it.
        let expected: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 2, 0x08, 0x06, // Ethernet
            0, 1, 0x08, 0x00, 6, 4, 0, 1, // Ethernet/IPv4, request
            2, 0, 0, 0, 0, 2, 198, 18, 0, 100, // sender
            0, 0, 0, 0, 0, 0, 198, 18, 0, 100, // target
        ];
        assert_eq!(f, expected);
    }
}
