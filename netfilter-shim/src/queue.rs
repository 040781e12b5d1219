//! Reading an NFQUEUE and issuing verdicts (crate `nfq`, pure Rust over netlink).
//!
//! On the backup every packet is dropped after the standby has looked at it: its kernel must
//! never answer a client. `accept` exists for tests and for queues on a primary's own path.

use crate::Error;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

/// Transport protocol of a queued packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// UDP (RTP, RTCP, SIP over UDP).
    Udp,
    /// TCP (SIP over TCP).
    Tcp,
    /// Anything else, by IP protocol number.
    Other(u8),
}

/// Addresses of a queued IPv4 packet; ports are 0 for protocols without ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// Transport protocol.
    pub protocol: Protocol,
    /// Source address and port.
    pub src: SocketAddrV4,
    /// Destination address and port.
    pub dst: SocketAddrV4,
    /// Byte offset of the transport payload (e.g. the RTP header) in the packet.
    pub payload_offset: usize,
}

/// Parses an IPv4 packet (starting at the IP header) into its [`Flow`].
pub fn parse_ipv4(bytes: &[u8]) -> Result<Flow, Error> {
    let sliced = SlicedPacket::from_ip(bytes).map_err(|e| Error::Parse(e.to_string()))?;
    let Some(NetSlice::Ipv4(ip)) = &sliced.net else {
        return Err(Error::Parse("not IPv4".into()));
    };
    let h = ip.header();
    let (src_ip, dst_ip, proto) = (h.source_addr(), h.destination_addr(), h.protocol().0);
    let (protocol, sport, dport, payload) = match &sliced.transport {
        Some(TransportSlice::Udp(u)) => (
            Protocol::Udp,
            u.source_port(),
            u.destination_port(),
            u.payload(),
        ),
        Some(TransportSlice::Tcp(t)) => (
            Protocol::Tcp,
            t.source_port(),
            t.destination_port(),
            t.payload(),
        ),
        _ => (Protocol::Other(proto), 0, 0, ip.payload().payload),
    };
    // Both slices borrow from `bytes`, so the offset is their pointer distance.
    let payload_offset = payload.as_ptr() as usize - bytes.as_ptr() as usize;
    Ok(Flow {
        protocol,
        src: SocketAddrV4::new(src_ip, sport),
        dst: SocketAddrV4::new(dst_ip, dport),
        payload_offset,
    })
}

/// A bound NFQUEUE. Open it in the namespace whose rules feed it.
pub struct PacketQueue {
    inner: nfq::Queue,
    num: u16,
}

/// One packet held by the kernel until it gets a verdict. Dropping it without a verdict
/// leaves the kernel holding it until the queue closes; always call
/// [`PacketQueue::drop_packet`] or [`PacketQueue::accept`].
pub struct QueuedPacket {
    msg: nfq::Message,
}

impl QueuedPacket {
    /// The whole packet, starting at the IP header.
    pub fn bytes(&self) -> &[u8] {
        self.msg.get_payload()
    }

    /// Parsed addresses and ports.
    pub fn flow(&self) -> Result<Flow, Error> {
        parse_ipv4(self.bytes())
    }

    /// The transport payload (empty when the packet cannot be parsed).
    pub fn payload(&self) -> &[u8] {
        match self.flow() {
            Ok(f) => &self.bytes()[f.payload_offset..],
            Err(_) => &[],
        }
    }

    /// The kernel's id of the packet in its queue (ids grow in queueing order), for
    /// [`PacketQueue::drop_through`].
    pub fn id(&self) -> u32 {
        self.msg.get_packet_id()
    }

    /// When the kernel queued it, if it said.
    pub fn timestamp(&self) -> Option<std::time::SystemTime> {
        self.msg.get_timestamp()
    }
}

impl PacketQueue {
    /// Opens the netfilter netlink socket and binds queue `num` (whole packets copied).
    pub fn open(num: u16) -> Result<Self, Error> {
        let mut inner = nfq::Queue::open().map_err(Error::Queue)?;
        inner.bind(num).map_err(Error::Queue)?;
        // Queue length: a few seconds of a busy conference (about 50 packets/s per client);
        // when it is full the kernel drops (no fail-open: the backup must not answer).
        inner.set_queue_max_len(num, 8192).map_err(Error::Queue)?;
        Ok(PacketQueue { inner, num })
    }

    /// Read up to `max` packets with one system call (`recvmmsg`) whenever the previous read
    /// is used up, each copied up to `copy_range` bytes: a reader that takes everything
    /// queued (the standing-by backup) pays one system call per batch instead of one per
    /// packet. A packet longer than `copy_range` is truncated in what the reader sees (its
    /// [`QueuedPacket::flow`] fails); its verdict still applies to the whole packet.
    pub fn set_read_batch(&mut self, max: usize, copy_range: u16) -> Result<(), Error> {
        self.inner
            .set_copy_range(self.num, copy_range)
            .map_err(Error::Queue)?;
        self.inner.set_recv_batch(max);
        Ok(())
    }

    /// Room for `bytes` of queued packets in the socket between reads (the kernel's default
    /// holds a few hundred small packets; what does not fit is dropped). Beyond
    /// `net.core.rmem_max` only with CAP_NET_ADMIN.
    pub fn set_receive_buffer(&mut self, bytes: usize) -> Result<(), Error> {
        self.inner.set_recv_buffer_size(bytes).map_err(Error::Queue)
    }

    /// The queue number.
    pub fn num(&self) -> u16 {
        self.num
    }

    /// Waits for the next packet.
    pub fn recv(&mut self) -> Result<QueuedPacket, Error> {
        self.inner.set_nonblocking(false);
        self.inner
            .recv()
            .map(|msg| QueuedPacket { msg })
            .map_err(Error::Queue)
    }

    /// The next packet if one is waiting.
    pub fn try_recv(&mut self) -> Result<Option<QueuedPacket>, Error> {
        self.inner.set_nonblocking(true);
        match self.inner.recv() {
            Ok(msg) => Ok(Some(QueuedPacket { msg })),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(Error::Queue(e)),
        }
    }

    /// Waits up to `timeout` for a packet, polling every millisecond (the `nfq` crate does
    /// not expose its socket for `poll`). For tests and shutdown-aware loops.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<QueuedPacket>, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(p) = self.try_recv()? {
                return Ok(Some(p));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Verdict DROP: the kernel discards the packet.
    pub fn drop_packet(&mut self, packet: QueuedPacket) -> Result<(), Error> {
        self.verdict(packet, nfq::Verdict::Drop)
    }

    /// Verdict ACCEPT: the packet continues through the kernel.
    pub fn accept(&mut self, packet: QueuedPacket) -> Result<(), Error> {
        self.verdict(packet, nfq::Verdict::Accept)
    }

    /// Verdict DROP for every packet queued up to and including the one with id `id`
    /// ([`QueuedPacket::id`]) with one netlink message: a reader that drops everything it
    /// reads gives the verdict once per batch instead of once per packet. The
    /// [`QueuedPacket`]s read for those packets need no verdict of their own (drop them).
    /// Packets queued after `id` stay queued.
    pub fn drop_through(&mut self, id: u32) -> Result<(), Error> {
        self.inner
            .verdict_batch(self.num, id, nfq::Verdict::Drop)
            .map_err(Error::Queue)
    }

    /// [`PacketQueue::drop_through`] with verdict ACCEPT.
    pub fn accept_through(&mut self, id: u32) -> Result<(), Error> {
        self.inner
            .verdict_batch(self.num, id, nfq::Verdict::Accept)
            .map_err(Error::Queue)
    }

    fn verdict(&mut self, mut packet: QueuedPacket, v: nfq::Verdict) -> Result<(), Error> {
        packet.msg.set_verdict(v);
        self.inner.verdict(packet.msg).map_err(Error::Queue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use std::net::Ipv4Addr;

    #[test]
    fn parses_udp() {
        let b = PacketBuilder::ipv4([198, 18, 0, 11], [198, 18, 0, 100], 64).udp(4000, 5004);
        let mut buf = Vec::new();
        b.write(&mut buf, b"rtp!").unwrap();
        let f = parse_ipv4(&buf).unwrap();
        assert_eq!(f.protocol, Protocol::Udp);
        assert_eq!(f.src, "198.18.0.11:4000".parse().unwrap());
        assert_eq!(
            f.dst,
            SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 100), 5004)
        );
        assert_eq!(&buf[f.payload_offset..], b"rtp!");
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(parse_ipv4(&[0x45, 0, 0]), Err(Error::Parse(_))));
        assert!(matches!(parse_ipv4(&[]), Err(Error::Parse(_))));
    }
}
