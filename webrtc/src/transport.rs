//! Every browser participant on one UDP port: demultiplexing (RFC 7983 by first byte; STUN
//! by our ICE username fragment, everything else by remote address) and per-participant
//! [`Peer`]s.
//!
//! Only an address that passed an ICE check (the right username AND the password's
//! MESSAGE-INTEGRITY) is routed to a participant: anything from another address, any STUN
//! message that does not verify, and anything that is not STUN, DTLS, RTP or RTCP is dropped
//! and counted ([`Stats`]) without an answer.
//!
//! # Driver loop
//!
//! Feed datagrams with [`Transport::handle_datagram`]; drain [`Transport::poll_output`]
//! (datagrams to send, decrypted RTP/RTCP for the rooms, participant events); call
//! [`Transport::handle_timeout`] at [`Transport::poll_timeout`]. Room output goes out through
//! [`Transport::protect_rtp`] / [`Transport::protect_rtcp`].

use crate::dtls::{Certificate, KeyingMaterial};
use crate::mux::{classify, Kind};
use crate::peer::{Peer, PeerConfig, PeerEvent};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Participant id (the control plane's; the same as the room's participant id).
pub type PeerId = u64;

/// Drop and traffic counters (cumulative).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Valid ICE checks answered.
    pub stun_answered: u64,
    /// STUN messages refused without an answer (unknown username, wrong password, ...).
    pub stun_refused: u64,
    /// DTLS records that did not process, or came from an unknown address.
    pub dtls_dropped: u64,
    /// SRTP/SRTCP that did not authenticate, replayed, or arrived before the keys.
    pub srtp_dropped: u64,
    /// Packets from an address no ICE check validated.
    pub unknown_source: u64,
    /// Neither STUN, DTLS, RTP nor RTCP.
    pub garbage: u64,
    /// SRTP packets accepted.
    pub rtp_in: u64,
    /// SRTCP packets accepted.
    pub rtcp_in: u64,
}

/// What the driver must do or know.
#[derive(Debug, PartialEq)]
pub enum Output {
    /// Send `data` to `to` from the WebRTC port.
    Transmit {
        /// Destination.
        to: SocketAddr,
        /// Datagram.
        data: Vec<u8>,
    },
    /// A decrypted RTP packet from participant `peer`.
    Rtp {
        /// Participant.
        peer: PeerId,
        /// Its source address.
        from: SocketAddr,
        /// Plain RTP.
        data: Vec<u8>,
    },
    /// A decrypted RTCP compound packet from participant `peer`.
    Rtcp {
        /// Participant.
        peer: PeerId,
        /// Its source address.
        from: SocketAddr,
        /// Plain RTCP.
        data: Vec<u8>,
    },
    /// Something happened to a participant's transport.
    Event {
        /// Participant.
        peer: PeerId,
        /// What.
        event: PeerEvent,
    },
}

/// All participants on one port (see the module doc).
pub struct Transport {
    cert: Certificate,
    origin: Instant,
    peers: BTreeMap<PeerId, Peer>,
    by_ufrag: HashMap<String, PeerId>,
    by_addr: HashMap<SocketAddr, PeerId>,
    out: VecDeque<Output>,
    stats: Stats,
    scratch: Vec<u8>,
}

impl Transport {
    /// A transport presenting `cert` in every handshake. `origin`: any fixed instant (ICE
    /// bookkeeping is relative to it).
    pub fn new(cert: Certificate, origin: Instant) -> Transport {
        Transport {
            cert,
            origin,
            peers: BTreeMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            out: VecDeque::new(),
            stats: Stats::default(),
            scratch: Vec::with_capacity(1500),
        }
    }

    /// The certificate (its fingerprint goes into every SDP answer).
    pub fn certificate(&self) -> &Certificate {
        &self.cert
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Number of participants.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// No participant.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// One participant.
    pub fn peer(&self, id: PeerId) -> Option<&Peer> {
        self.peers.get(&id)
    }

    /// A joining participant (before its SDP answer is released: its checks may come at once).
    pub fn add(&mut self, id: PeerId, cfg: PeerConfig, now: Instant) -> Result<(), String> {
        let peer = Peer::new(cfg, &self.cert, now)?;
        self.insert(id, peer);
        Ok(())
    }

    /// A participant taken over from the primary (see [`Peer::resumed`]).
    pub fn resume(
        &mut self,
        id: PeerId,
        cfg: PeerConfig,
        keys: KeyingMaterial,
        selected: Option<SocketAddr>,
        now: Instant,
    ) -> Result<(), crate::Error> {
        let peer = Peer::resumed(cfg, keys, selected, now)?;
        // After `insert`: replacing a participant with this id forgets its addresses.
        self.insert(id, peer);
        if let Some(a) = selected {
            self.by_addr.insert(a, id);
        }
        Ok(())
    }

    fn insert(&mut self, id: PeerId, peer: Peer) {
        self.remove(id);
        self.by_ufrag.insert(peer.local_ufrag().to_string(), id);
        self.peers.insert(id, peer);
    }

    /// The participant left: forget it (its address and username stop routing).
    pub fn remove(&mut self, id: PeerId) {
        if let Some(p) = self.peers.remove(&id) {
            self.by_ufrag.remove(p.local_ufrag());
            self.by_addr.retain(|_, v| *v != id);
        }
    }

    /// See [`Peer::release_final_flight`].
    pub fn release_final_flight(&mut self, id: PeerId) {
        if let Some(p) = self.peers.get_mut(&id) {
            p.release_final_flight();
            self.collect(id);
        }
    }

    /// See [`Peer::resume_stream`].
    pub fn resume_stream(&mut self, id: PeerId, ssrc: u32, last_ext_seq: u64, srtcp_index: u32) {
        if let Some(p) = self.peers.get_mut(&id) {
            p.resume_stream(ssrc, last_ext_seq, srtcp_index);
        }
    }

    /// See [`Peer::resume_inbound`].
    pub fn resume_inbound(&mut self, id: PeerId, ssrc: u32, ext_seq: u64) {
        if let Some(p) = self.peers.get_mut(&id) {
            p.resume_inbound(ssrc, ext_seq);
        }
    }

    /// A datagram arrived on the WebRTC port.
    pub fn handle_datagram(&mut self, from: SocketAddr, data: &[u8], now: Instant) {
        match classify(data) {
            Kind::Stun => {
                let Some(id) = crate::ice::local_ufrag_of(data)
                    .and_then(|u| self.by_ufrag.get(u.as_ref() as &str).copied())
                else {
                    self.stats.stun_refused += 1;
                    return;
                };
                let since = now.saturating_duration_since(self.origin);
                let peer = self.peers.get_mut(&id).expect("indexed");
                match peer.handle_stun(from, data, now, since) {
                    Ok(()) => {
                        self.stats.stun_answered += 1;
                        // The address proved it knows the password: route it to this peer.
                        self.by_addr.insert(from, id);
                    }
                    Err(_) => self.stats.stun_refused += 1,
                }
                self.collect(id);
            }
            Kind::Dtls => {
                let Some(id) = self.by_addr.get(&from).copied() else {
                    self.stats.unknown_source += 1;
                    return;
                };
                let peer = self.peers.get_mut(&id).expect("indexed");
                if peer.handle_dtls(from, data, now).is_err() {
                    self.stats.dtls_dropped += 1;
                }
                self.collect(id);
            }
            kind @ (Kind::Rtp | Kind::Rtcp) => {
                let Some(id) = self.by_addr.get(&from).copied() else {
                    self.stats.unknown_source += 1;
                    return;
                };
                let peer = self.peers.get_mut(&id).expect("indexed");
                let mut plain = std::mem::take(&mut self.scratch);
                let r = if kind == Kind::Rtp {
                    peer.unprotect_rtp(data, &mut plain)
                } else {
                    peer.unprotect_rtcp(data, &mut plain)
                };
                match r {
                    Ok(()) => {
                        let data = plain.clone();
                        if kind == Kind::Rtp {
                            self.stats.rtp_in += 1;
                            self.out.push_back(Output::Rtp {
                                peer: id,
                                from,
                                data,
                            });
                        } else {
                            self.stats.rtcp_in += 1;
                            self.out.push_back(Output::Rtcp {
                                peer: id,
                                from,
                                data,
                            });
                        }
                    }
                    Err(_) => self.stats.srtp_dropped += 1,
                }
                plain.clear();
                self.scratch = plain;
            }
            Kind::Other => self.stats.garbage += 1,
        }
    }

    /// Protects room output for `id`: `Some((to, datagram))` to send, `None` when the
    /// participant has no keys or pair yet (or is gone).
    /// A stream's [`PeerEvent::OutboundProgress`] comes out of [`Transport::poll_output`].
    pub fn protect_rtp(&mut self, id: PeerId, plain: &[u8]) -> Option<(SocketAddr, Vec<u8>)> {
        let mut out = Vec::with_capacity(plain.len() + 16);
        let to = self.peers.get_mut(&id)?.protect_rtp(plain, &mut out);
        self.collect(id);
        Some((to?, out))
    }

    /// See [`Transport::protect_rtp`].
    pub fn protect_rtcp(&mut self, id: PeerId, plain: &[u8]) -> Option<(SocketAddr, Vec<u8>)> {
        let mut out = Vec::with_capacity(plain.len() + 16);
        let to = self.peers.get_mut(&id)?.protect_rtcp(plain, &mut out)?;
        Some((to, out))
    }

    /// Timers of every participant.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.poll_timeout().is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(p) = self.peers.get_mut(&id) {
                p.handle_timeout(now);
            }
            self.collect(id);
        }
    }

    /// The earliest timer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers.values().filter_map(|p| p.poll_timeout()).min()
    }

    /// Next output.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    fn collect(&mut self, id: PeerId) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        while let Some((to, data)) = p.poll_transmit() {
            self.out.push_back(Output::Transmit { to, data });
        }
        while let Some(event) = p.poll_event() {
            if let PeerEvent::Selected(a) = &event {
                self.by_addr.insert(*a, id);
            }
            self.out.push_back(Output::Event { peer: id, event });
        }
    }

    /// Time since the transport's origin (for logs).
    pub fn since_origin(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.origin)
    }
}
