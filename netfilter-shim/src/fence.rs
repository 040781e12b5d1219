//! A service address that dies with the process: the fence for `kill -9`.
//!
//! After `kill -9` of the primary process its host keeps running; if the VIP stayed
//! configured, that kernel would keep answering ARP for it (flapping the clients between two
//! MACs) and answer mirrored-away traffic with ICMP errors. [`ProcessBoundVip`] puts the VIP
//! on a non-persistent TUN device whose file descriptor this process holds: when the process
//! exits for any reason, the kernel closes the descriptor, destroys the device and with it the
//! address. The host then neither answers ARP for the VIP nor treats it as local (with
//! forwarding off, such packets are dropped without an ICMP error).
//!
//! Clients still reach the VIP through the client-facing device (`eth0`): Linux answers ARP
//! for any local address on any interface (weak host model) **as long as
//! `net.ipv4.conf.{all,DEV}.arp_ignore` is 0** on that device. A node that held the VIP as
//! a non-ARPing standby ([`crate::takeover::hold_standby`] sets `arp_ignore=1`) must set it
//! back to 0 before using this form; [`crate::takeover::claim`] (VIP on the device itself)
//! has no such requirement but no fence either.

use crate::takeover::{set_addr, AddrOp};
use crate::Error;
use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

/// The VIP held on a TUN device owned by this process; removed when dropped or when the
/// process dies.
#[derive(Debug)]
pub struct ProcessBoundVip {
    tun: File,
    dev: String,
    vip: Ipv4Addr,
}

impl ProcessBoundVip {
    /// Creates TUN device `dev` (at most 15 bytes) in this namespace, brings it up and puts
    /// `vip/32` on it. Send gratuitous ARPs from the client-facing device afterwards
    /// ([`crate::takeover::send_gratuitous_arp`]).
    pub fn hold(vip: Ipv4Addr, dev: &str) -> Result<Self, Error> {
        if dev.is_empty() || dev.len() >= libc::IFNAMSIZ {
            return Err(Error::NoSuchDevice(dev.to_string()));
        }
        let io_err = |what: &str, source: io::Error| Error::Io {
            what: format!("{what} {dev}"),
            source,
        };
        let tun = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .map_err(|e| io_err("open /dev/net/tun for", e))?;
        // SAFETY: ifreq is plain old data; all-zero is valid.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in req.ifr_name.iter_mut().zip(dev.bytes()) {
            *d = s as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads the NUL-terminated name and flags from `req`, which lives
        // across the call; the descriptor is our open /dev/net/tun. Not made persistent, so
        // the device goes away when the descriptor is closed.
        if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
            return Err(io_err("TUNSETIFF", io::Error::last_os_error()));
        }
        set_up(&mut req).map_err(|e| io_err("SIOCSIFFLAGS up", e))?;
        set_addr(AddrOp::Replace, vip, 32, dev)?;
        Ok(ProcessBoundVip {
            tun,
            dev: dev.to_string(),
            vip,
        })
    }

    /// The TUN device's name.
    pub fn dev(&self) -> &str {
        &self.dev
    }

    /// The address held.
    pub fn vip(&self) -> Ipv4Addr {
        self.vip
    }

    /// Gives the address up now (same as dropping).
    pub fn release(self) {
        drop(self.tun);
    }
}

/// Sets IFF_UP on the device named in `req`.
fn set_up(req: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: socket(2) with constant arguments; checked below and closed by `File`'s drop.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let sock = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read the name in `req` and read/write its flags
    // member; `req` is a valid, exclusively borrowed ifreq.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut *req) < 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut *req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
