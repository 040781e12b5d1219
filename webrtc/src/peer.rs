//! One browser participant's transport: the ICE-lite responder, the passive DTLS handshake
//! and SRTP both ways, on one 5-tuple (BUNDLE + rtcp-mux).
//!
//! A [`Peer`] starts either with a handshake ([`Peer::new`]: a participant joining) or from
//! replicated keys ([`Peer::resumed`]: a backup taking over a participant whose handshake
//! completed on the primary). It is driven by [`crate::transport::Transport`], which owns the
//! socket-side demultiplexing; everything here is per participant.
//!
//! Output commit: when the client's last handshake flight is in, the exported keying material
//! comes out as [`PeerEvent::Keyed`] and the server's final flight is held until
//! [`Peer::release_final_flight`] — the driver replicates the keys first, so a backup that
//! takes over right after the browser saw the handshake complete has them.

use crate::dtls::{Certificate, DtlsEvent, DtlsServer, KeyingMaterial};
use crate::ice::{Credentials, IceLite};
use crate::srtp::{split_keying_material, DtlsRole, SrtpReceiver, SrtpSender};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Consent expires this long after the last valid check (RFC 7675 §5.1).
pub const CONSENT_TIMEOUT: Duration = Duration::from_secs(30);

/// What a participant's transport needs from signalling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    /// Our ICE credentials (in our SDP answer).
    pub local: Credentials,
    /// The browser's ICE credentials (from its offer).
    pub remote: Credentials,
    /// The browser's certificate fingerprint (`a=fingerprint:sha-256`, "AB:CD:..").
    pub remote_fingerprint: String,
}

/// Something the driver must know about one participant.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum PeerEvent {
    /// The browser nominated (or moved) the candidate pair: media go to this address.
    Selected(SocketAddr),
    /// The handshake is done: replicate these, then call [`Peer::release_final_flight`].
    Keyed(KeyingMaterial),
    /// The browser closed the DTLS association (close_notify).
    Closed,
    /// The handshake failed (wrong fingerprint, fatal alert, too many retransmissions).
    Failed(String),
    /// No valid consent check for [`CONSENT_TIMEOUT`]: the browser is gone.
    ConsentExpired,
    /// Our outgoing stream `ssrc` reached SRTP packet index `ext_seq` (`ROC * 2^16 + SEQ`):
    /// reported at its first packet and then each time the index crosses a multiple of
    /// [`PROGRESS_STEP`], so that a backup that replicated the latest report knows the
    /// stream's rollover counter (its next packets are within 2^15 of it) even when the room
    /// cannot derive it (a video stream, whose forwarder keeps 16-bit sequence numbers).
    OutboundProgress {
        /// Our SSRC.
        ssrc: u32,
        /// Its highest packet index so far.
        ext_seq: u64,
    },
}

/// Packets between two [`PeerEvent::OutboundProgress`] reports of one stream (2^14: a
/// replicated report is never more than half the 2^15 estimation window behind).
pub const PROGRESS_STEP: u64 = 1 << 14;

/// Why a packet was refused (the driver counts these).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refused {
    /// A STUN message that is not a valid check for this participant (wrong password,
    /// username, fingerprint, not a binding request).
    Stun(String),
    /// A DTLS record that did not process.
    Dtls(String),
    /// SRTP/SRTCP before the keys exist.
    NotKeyed,
    /// SRTP/SRTCP that does not authenticate, replays or is malformed.
    Srtp(crate::Error),
}

/// One participant's transport (see the module doc).
pub struct Peer {
    ice: IceLite,
    dtls: Option<DtlsServer>,
    /// Where DTLS answers go (the address its last record came from).
    dtls_addr: Option<SocketAddr>,
    keys: Option<KeyingMaterial>,
    tx: Option<SrtpSender>,
    rx: Option<SrtpReceiver>,
    selected: Option<SocketAddr>,
    /// The final flight went out (or the participant was resumed): the browser can decrypt.
    released: bool,
    last_consent: Instant,
    expired: bool,
    transmits: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<PeerEvent>,
}

impl Peer {
    /// A joining participant: ICE checks and a DTLS handshake are expected.
    pub fn new(cfg: PeerConfig, cert: &Certificate, now: Instant) -> Result<Peer, String> {
        let dtls =
            DtlsServer::new(cert, &cfg.remote_fingerprint, now).map_err(|e| format!("{e}"))?;
        Ok(Peer {
            ice: IceLite::new(cfg.local, cfg.remote),
            dtls: Some(dtls),
            dtls_addr: None,
            keys: None,
            tx: None,
            rx: None,
            selected: None,
            released: false,
            last_consent: now,
            expired: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        })
    }

    /// A participant taken over from the primary: same ICE credentials, the replicated keys
    /// and selected address; no DTLS state (the browser sends no DTLS record after the
    /// handshake). Its outgoing streams continue with [`Peer::resume_stream`].
    pub fn resumed(
        cfg: PeerConfig,
        keys: KeyingMaterial,
        selected: Option<SocketAddr>,
        now: Instant,
    ) -> Result<Peer, crate::Error> {
        let (tx, rx) = srtp_pair(&keys)?;
        Ok(Peer {
            ice: IceLite::new(cfg.local, cfg.remote),
            dtls: None,
            dtls_addr: None,
            keys: Some(keys),
            tx: Some(tx),
            rx: Some(rx),
            selected,
            released: true,
            last_consent: now,
            expired: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        })
    }

    /// Where media go (the nominated pair's remote address).
    pub fn selected(&self) -> Option<SocketAddr> {
        self.selected
    }

    /// The keys, once the handshake completed.
    pub fn keys(&self) -> Option<&KeyingMaterial> {
        self.keys.as_ref()
    }

    /// SRTP is keyed both ways.
    pub fn is_keyed(&self) -> bool {
        self.tx.is_some()
    }

    /// Our ICE username fragment (the demultiplexing key).
    pub fn local_ufrag(&self) -> &str {
        &self.ice.local().ufrag
    }

    /// A STUN message from `from`. A valid check is answered (and may select `from`);
    /// anything else is refused without an answer.
    pub fn handle_stun(
        &mut self,
        from: SocketAddr,
        data: &[u8],
        now: Instant,
        since_origin: Duration,
    ) -> Result<(), Refused> {
        let reply = self
            .ice
            .handle_stun(from, data, since_origin)
            .map_err(|e| Refused::Stun(format!("{e:?}")))?;
        self.last_consent = now;
        if !reply.response.is_empty() {
            self.transmits.push_back((from, reply.response));
        }
        if reply.nominated && self.selected != Some(from) {
            self.selected = Some(from);
            self.events.push_back(PeerEvent::Selected(from));
        }
        Ok(())
    }

    /// A DTLS record from `from` (an address that passed an ICE check).
    pub fn handle_dtls(
        &mut self,
        from: SocketAddr,
        data: &[u8],
        now: Instant,
    ) -> Result<(), Refused> {
        let Some(dtls) = self.dtls.as_mut() else {
            // Resumed: no association to continue; the browser sends none after its handshake.
            return Err(Refused::Dtls("no DTLS association (taken over)".into()));
        };
        self.dtls_addr = Some(from);
        let r = dtls
            .handle_datagram(data, now)
            .map_err(|e| Refused::Dtls(format!("{e}")));
        self.pump_dtls();
        r
    }

    /// The driver replicated the keys of [`PeerEvent::Keyed`]: the final flight may go.
    pub fn release_final_flight(&mut self) {
        if let Some(d) = self.dtls.as_mut() {
            d.release_final_flight();
        }
        self.released = self.keys.is_some();
        self.pump_dtls();
    }

    /// Checks and strips an incoming SRTP packet.
    pub fn unprotect_rtp(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), Refused> {
        let rx = self.rx.as_mut().ok_or(Refused::NotKeyed)?;
        rx.unprotect_rtp(data, out).map_err(Refused::Srtp)
    }

    /// Checks and strips an incoming SRTCP packet.
    pub fn unprotect_rtcp(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), Refused> {
        let rx = self.rx.as_mut().ok_or(Refused::NotKeyed)?;
        rx.unprotect_rtcp(data, out).map_err(Refused::Srtp)
    }

    /// Protects an outgoing RTP packet; returns where it goes (`None`: no pair yet, the
    /// final flight not released yet — the browser could not decrypt — or consent expired:
    /// nothing to send).
    pub fn protect_rtp(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Option<SocketAddr> {
        let to = self.selected.filter(|_| !self.expired && self.released)?;
        let tx = self.tx.as_mut()?;
        let ssrc = u32::from_be_bytes(plain.get(8..12)?.try_into().ok()?);
        let before = tx.state().rtp.get(&ssrc).copied();
        tx.protect_rtp(plain, out).ok()?;
        if let Some(&now) = tx.state().rtp.get(&ssrc) {
            if before.is_none_or(|b| b / PROGRESS_STEP != now / PROGRESS_STEP) {
                self.events
                    .push_back(PeerEvent::OutboundProgress { ssrc, ext_seq: now });
            }
        }
        Some(to)
    }

    /// Protects an outgoing RTCP packet (see [`Peer::protect_rtp`]).
    pub fn protect_rtcp(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Option<SocketAddr> {
        let to = self.selected.filter(|_| !self.expired && self.released)?;
        self.tx.as_mut()?.protect_rtcp(plain, out).ok()?;
        Some(to)
    }

    /// After a takeover: `ssrc`'s outgoing stream continues after extended sequence number
    /// `last_ext_seq`, its next SRTCP packet carries `srtcp_index`.
    pub fn resume_stream(&mut self, ssrc: u32, last_ext_seq: u64, srtcp_index: u32) {
        if let Some(tx) = self.tx.as_mut() {
            tx.resume(ssrc, last_ext_seq, srtcp_index);
        }
    }

    /// After a takeover: the browser's stream `ssrc` continues after extended sequence number
    /// `ext_seq` (as a shadow of the mirrored input followed it), so its rollover counter is
    /// right even after the 16-bit sequence number wrapped.
    pub fn resume_inbound(&mut self, ssrc: u32, ext_seq: u64) {
        if let Some(rx) = self.rx.as_mut() {
            rx.resume(ssrc, ext_seq);
        }
    }

    /// The next SRTCP index of `ssrc`'s stream (replicated now and then, for the margin).
    pub fn srtcp_index(&self, ssrc: u32) -> Option<u32> {
        self.tx
            .as_ref()
            .and_then(|t| t.state().srtcp.get(&ssrc).copied())
    }

    /// Timers: DTLS retransmission and consent expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(d) = self.dtls.as_mut() {
            if d.poll_timeout().is_some_and(|t| t <= now) {
                d.handle_timeout(now);
            }
        }
        self.pump_dtls();
        if !self.expired && now.saturating_duration_since(self.last_consent) >= CONSENT_TIMEOUT {
            self.expired = true;
            self.events.push_back(PeerEvent::ConsentExpired);
        }
    }

    /// When [`Peer::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let consent = (!self.expired).then_some(self.last_consent + CONSENT_TIMEOUT);
        let dtls = self.dtls.as_ref().and_then(|d| d.poll_timeout());
        match (consent, dtls) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.transmits.pop_front()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<PeerEvent> {
        self.events.pop_front()
    }

    fn pump_dtls(&mut self) {
        let Some(dtls) = self.dtls.as_mut() else {
            return;
        };
        while let Some(ev) = dtls.poll_event() {
            match ev {
                DtlsEvent::Keyed(k) => match srtp_pair(&k) {
                    Ok((tx, rx)) => {
                        self.tx = Some(tx);
                        self.rx = Some(rx);
                        self.keys = Some(k.clone());
                        self.events.push_back(PeerEvent::Keyed(k));
                    }
                    Err(e) => self
                        .events
                        .push_back(PeerEvent::Failed(format!("SRTP keys: {e:?}"))),
                },
                DtlsEvent::Closed => self.events.push_back(PeerEvent::Closed),
                DtlsEvent::Failed(why) => self.events.push_back(PeerEvent::Failed(why)),
                #[allow(unreachable_patterns)]
                _ => {}
            }
        }
        if let Some(to) = self.dtls_addr.or(self.selected) {
            while let Some(d) = dtls.poll_transmit() {
                self.transmits.push_back((to, d));
            }
        }
    }
}

/// Our sender (server half) and receiver (the browser's half) from the exported material.
fn srtp_pair(k: &KeyingMaterial) -> Result<(SrtpSender, SrtpReceiver), crate::Error> {
    let (ours, theirs) = split_keying_material(k.profile, &k.material, DtlsRole::Server)?;
    Ok((SrtpSender::new(ours)?, SrtpReceiver::new(theirs)?))
}
