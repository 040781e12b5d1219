//! DTLS 1.2 in the server role (`a=setup:passive`) for one browser, whose final flight the
//! driver releases only once the exported SRTP keys are safe on the backup (output commit).
//!
//! The handshake itself is rtc-dtls 0.21 (ring): ECDHE-ECDSA cipher suites, extended master
//! secret required, `use_srtp` with `SRTP_AEAD_AES_128_GCM` and
//! `SRTP_AES128_CM_HMAC_SHA1_80` (the client's preference order decides), a client
//! certificate required and accepted only if its SHA-256 fingerprint is the offer's
//! `a=fingerprint:sha-256` (RFC 5763 §5: this is what stops a man in the middle, no CA is
//! involved), handshake messages fragmented at [`MTU`] bytes (rtc-dtls's `mtu` bounds a
//! fragment's body: a fragment datagram can be 25 bytes longer; our own flights, with an
//! ECDSA certificate, stay well under 1200 bytes).
//!
//! This module adds what a hot-standby server needs on top:
//! - **Keys first, then the final flight.** When the client's final flight (Certificate,
//!   ClientKeyExchange, CertificateVerify, ChangeCipherSpec, Finished) has been verified, the
//!   server can export the SRTP keying material (RFC 5764 §4.2) and
//!   [`DtlsEvent::Keyed`] is reported. From that moment every datagram the association
//!   produces (its ChangeCipherSpec + Finished, "flight 6") is held back:
//!   [`DtlsServer::poll_transmit`] returns nothing until [`DtlsServer::release_final_flight`].
//!   The browser cannot finish its handshake, so it sends no SRTP and expects none, until the
//!   driver has replicated the keys to the backup and released the flight: whenever the
//!   browser is connected, the backup has its keys. (If the primary dies before the release,
//!   this handshake never completes; answering the browser's repeats of its flight 5 from the
//!   backup would take the DTLS state or the flight-6 bytes, which this module does not
//!   replicate.)
//! - **Guarantee, and what it rests on.** rtc-dtls lets a server export keying material only
//!   once its local epoch is 1, and it moves to epoch 1 when it *prepares* flight 6, inside the
//!   same [`DtlsServer::handle_datagram`] call that verified the client's flight 5; the flight
//!   is then queued, not yet sent. So the export is never possible earlier (no datagram that
//!   could be flight 6 has been returned when `Keyed` is emitted), and no flight-6 datagram
//!   ever leaves [`DtlsServer::poll_transmit`] before `Keyed` and the release. The test
//!   `export_becomes_possible_exactly_when_flight_6_is_queued` (`webrtc/tests/dtls.rs`) checks
//!   this property of rtc-dtls directly, so an upgrade that changes it fails a test.
//! - **Retransmission.** While the flight is held, the browser's repeats of its flight 5
//!   (datagrams of handshake and ChangeCipherSpec records only) are absorbed without reaching
//!   rtc-dtls: the held flight is their answer, the release sends exactly one copy, and
//!   rtc-dtls's budget of 7 last-flight retransmissions stays whole. After the release, if
//!   flight 6 is lost, the browser repeats its flight 5 and the association answers with a
//!   fresh flight 6 (new record sequence numbers).
//! - **One association, then done.** A peer's `close_notify` is [`DtlsEvent::Closed`]; a
//!   fatal handshake error (wrong certificate fingerprint, no common SRTP profile, a fatal
//!   alert in either direction, retransmissions exhausted, no handshake within
//!   [`HANDSHAKE_TIMEOUT`]) is [`DtlsEvent::Failed`]. After either, datagrams are refused with
//!   [`DtlsError::Ended`] and no timer is armed.
//!
//! Post-handshake application data (a data channel) is not supported: records the browser
//! sends after the handshake are decrypted and dropped. Chromium without a data channel
//! sends none.
//!
//! Nothing here reads a clock or touches a socket: time comes in as `now`, datagrams come in
//! through [`DtlsServer::handle_datagram`] and go out through [`DtlsServer::poll_transmit`].
//! The driver has already demultiplexed the 5-tuple and the first byte (RFC 7983: 20..=63 is
//! DTLS). Randomness (the handshake's randoms, the cookie, ECDHE keys) is ring's system RNG.
//!
//! # Driver loop
//!
//! ```
//! use std::time::Instant;
//! use webrtc_core::dtls::{Certificate, DtlsEvent, DtlsServer};
//! use webrtc_core::srtp::{split_keying_material, DtlsRole};
//!
//! /// Called for every DTLS datagram from the browser (and with `None` on a timer).
//! fn on_input(
//!     dtls: &mut DtlsServer,
//!     datagram: Option<&[u8]>,
//!     now: Instant,
//!     send: &mut dyn FnMut(Vec<u8>),
//!     replicate_then_release: &mut dyn FnMut(&webrtc_core::dtls::KeyingMaterial) -> bool,
//! ) {
//!     match datagram {
//!         Some(d) => {
//!             let _ = dtls.handle_datagram(d, now); // errors are also reported as events
//!         }
//!         None => dtls.handle_timeout(now),
//!     }
//!     while let Some(event) = dtls.poll_event() {
//!         match event {
//!             DtlsEvent::Keyed(km) => {
//!                 let (_ours, _theirs) =
//!                     split_keying_material(km.profile, &km.material, DtlsRole::Server).unwrap();
//!                 // ... key the SRTP sender/receiver, replicate `km` to the backup ...
//!                 if replicate_then_release(&km) {
//!                     dtls.release_final_flight(); // in real code: when the backup acked
//!                 }
//!             }
//!             DtlsEvent::Closed | DtlsEvent::Failed(_) => { /* tear the participant down */ }
//!             _ => {}
//!         }
//!     }
//!     while let Some(out) = dtls.poll_transmit() {
//!         send(out);
//!     }
//!     // Re-arm the timer at dtls.poll_timeout().
//! }
//!
//! let cert = Certificate::generate()?; // in production: Certificate::from_pem(file)
//! let offer_fingerprint = cert.fingerprint_sha256(); // the offer's a=fingerprint:sha-256
//! let mut dtls = DtlsServer::new(&cert, &offer_fingerprint, Instant::now())?;
//! on_input(&mut dtls, None, Instant::now(), &mut |_| {}, &mut |_| true);
//! assert!(!dtls.is_connected());
//! # Ok::<(), webrtc_core::dtls::DtlsError>(())
//! ```
use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc_dtls::cipher_suite::CipherSuiteId;
use rtc_dtls::config::{
    ClientAuthType, ConfigBuilder, ExtendedMasterSecretType, VerifyPeerCertificateFn,
};
use rtc_dtls::crypto::Certificate as RtcCertificate;
use rtc_dtls::crypto_provider::providers::RingProvider;
use rtc_dtls::crypto_provider::{HashAlgorithm, RTCCryptoProvider};
use rtc_dtls::endpoint::{Endpoint, EndpointEvent};
use rtc_dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc_shared::error::Error as RtcError;
use rtc_shared::TransportProtocol;
use serde::{Deserialize, Serialize};

use crate::srtp::Profile;

/// The RFC 5764 §4.2 exporter label for DTLS-SRTP keying material.
pub const SRTP_EXPORTER_LABEL: &str = "EXTRACTOR-dtls_srtp";
/// A handshake not finished (keys not exportable) this long after [`DtlsServer::new`] fails.
/// rtc-dtls answers a ClientHello without a retransmission timer of its own, so without this
/// an abandoned handshake would wait forever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Fragmentation size of handshake messages (what browsers use: a DTLS datagram must not be
/// IP-fragmented on typical paths).
pub const MTU: usize = 1200;

/// The SRTP profiles offered in `use_srtp`; the client's order picks among them.
const SRTP_PROFILES: [SrtpProtectionProfile; 2] = [
    SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
    SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
];
/// ECDHE-ECDSA suites (our certificate is ECDSA P-256); what Chromium offers first.
const CIPHER_SUITES: [CipherSuiteId; 2] = [
    CipherSuiteId::Tls_Ecdhe_Ecdsa_With_Aes_128_Gcm_Sha256,
    CipherSuiteId::Tls_Ecdhe_Ecdsa_With_ChaCha20_Poly1305_Sha256,
];
/// rtc-dtls's endpoint keys associations by address; this module has exactly one, under this
/// placeholder (the driver does the real demultiplexing).
const PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 9);
/// SHA-256 digest length, the fingerprint's byte count.
const FINGERPRINT_LEN: usize = 32;
/// rtc-dtls reads and writes PKCS#8 keys under this non-standard PEM label.
const RTC_KEY_LABEL: (&str, &str) = ("-----BEGIN PRIVATE_KEY-----", "-----END PRIVATE_KEY-----");
/// The standard PKCS#8 label (RFC 7468 §10), what openssl writes and reads.
const PKCS8_LABEL: (&str, &str) = ("-----BEGIN PRIVATE KEY-----", "-----END PRIVATE KEY-----");

/// What can go wrong in this module. No input bytes make it panic.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DtlsError {
    /// The certificate could not be generated, parsed from PEM or exported to PEM.
    Certificate(String),
    /// The remote fingerprint is not 32 colon-separated hex bytes (optionally preceded by
    /// `sha-256 `).
    Fingerprint(String),
    /// rtc-dtls refused the configuration (e.g. a certificate that cannot sign ECDSA).
    Config(String),
    /// The datagram is not a sequence of complete DTLS records; it was discarded and the
    /// association is unaffected.
    Malformed,
    /// The handshake failed for good; also reported as [`DtlsEvent::Failed`].
    Handshake(String),
    /// The association was already closed or failed; the datagram was ignored.
    Ended,
}

impl fmt::Display for DtlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DtlsError::Certificate(e) => write!(f, "DTLS certificate: {e}"),
            DtlsError::Fingerprint(fp) => write!(f, "not a SHA-256 fingerprint: {fp:?}"),
            DtlsError::Config(e) => write!(f, "DTLS configuration refused: {e}"),
            DtlsError::Malformed => write!(f, "not a DTLS datagram"),
            DtlsError::Handshake(e) => write!(f, "DTLS handshake failed: {e}"),
            DtlsError::Ended => write!(f, "DTLS association already ended"),
        }
    }
}

impl std::error::Error for DtlsError {}

/// Our DTLS identity: an ECDSA P-256 key and its self-signed certificate. One long-lived
/// certificate is shared by the primary and its backup (so the fingerprint in the SDP answer
/// stays valid across a takeover) and loaded from a PEM file in production.
///
/// `Debug` shows the fingerprint only.
#[derive(Clone)]
pub struct Certificate {
    inner: RtcCertificate,
    /// PKCS#8 key then certificate, standard labels; computed once so `to_pem` cannot fail.
    pem: String,
    fingerprint: String,
}

impl Certificate {
    /// A fresh self-signed certificate with an ECDSA P-256 key.
    pub fn generate() -> Result<Self, DtlsError> {
        let provider = provider();
        let inner =
            RtcCertificate::generate_self_signed(vec!["understudy".to_owned()], provider.crypto())
                .map_err(|e| DtlsError::Certificate(e.to_string()))?;
        Self::from_rtc(inner)
    }

    /// Parses a PKCS#8 private key (`PRIVATE KEY`) followed by its certificate
    /// (`CERTIFICATE`) in PEM, as [`Certificate::to_pem`] writes them.
    pub fn from_pem(pem: &str) -> Result<Self, DtlsError> {
        let normalized = pem
            .replace(PKCS8_LABEL.0, RTC_KEY_LABEL.0)
            .replace(PKCS8_LABEL.1, RTC_KEY_LABEL.1);
        let inner = RtcCertificate::from_pem(&normalized, provider().crypto())
            .map_err(|e| DtlsError::Certificate(e.to_string()))?;
        Self::from_rtc(inner)
    }

    fn from_rtc(inner: RtcCertificate) -> Result<Self, DtlsError> {
        let der = inner
            .certificate
            .first()
            .ok_or_else(|| DtlsError::Certificate("no certificate".to_owned()))?;
        let digest = sha256(der.as_ref()).map_err(DtlsError::Certificate)?;
        let fingerprint = format_fingerprint(&digest);
        let pem = inner
            .serialize_pem()
            .map_err(|e| DtlsError::Certificate(e.to_string()))?
            .replace(RTC_KEY_LABEL.0, PKCS8_LABEL.0)
            .replace(RTC_KEY_LABEL.1, PKCS8_LABEL.1);
        Ok(Certificate {
            inner,
            pem,
            fingerprint,
        })
    }

    /// The private key (PKCS#8, `PRIVATE KEY`) and the certificate in PEM; read back by
    /// [`Certificate::from_pem`] (and by openssl). Contains the private key: store it as a
    /// secret.
    pub fn to_pem(&self) -> String {
        self.pem.clone()
    }

    /// The SHA-256 fingerprint of the DER certificate in SDP form (`a=fingerprint:sha-256`
    /// value): uppercase hex bytes separated by colons.
    pub fn fingerprint_sha256(&self) -> String {
        self.fingerprint.clone()
    }
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("fingerprint_sha256", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// SRTP keying material exported from the handshake (RFC 5764 §4.2: client key, server key,
/// client salt, server salt), with the negotiated profile. What the primary replicates; hand
/// it to [`crate::srtp::split_keying_material`] with [`crate::srtp::DtlsRole::Server`].
///
/// `Debug` does not print the material.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyingMaterial {
    /// The protection profile `use_srtp` negotiated.
    pub profile: Profile,
    /// [`Profile::keying_material_len`] bytes exported with [`SRTP_EXPORTER_LABEL`].
    pub material: Vec<u8>,
}

impl fmt::Debug for KeyingMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyingMaterial")
            .field("profile", &self.profile)
            .field("material", &"<redacted>")
            .finish()
    }
}

/// What the association reports to the driver, in order, through [`DtlsServer::poll_event`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DtlsEvent {
    /// The client's final flight verified (its certificate matches the offer's fingerprint)
    /// and the SRTP keys are exported. Our final flight is held from now on until
    /// [`DtlsServer::release_final_flight`]. Emitted at most once.
    Keyed(KeyingMaterial),
    /// The peer sent `close_notify` (our reply is queued). Final.
    Closed,
    /// The handshake failed (reason for logs). Final; may follow `Keyed` if the association
    /// fails after the keys were exported (e.g. a fatal alert from the peer).
    Failed(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Handshaking,
    Keyed,
    Ended,
}

/// The server side of one browser's DTLS association (sans-IO).
///
/// Method families, in the order a driver calls them after each input:
/// - input: [`handle_datagram`](Self::handle_datagram), [`handle_timeout`](Self::handle_timeout);
/// - output: [`poll_event`](Self::poll_event) (act on `Keyed` first: replicate, then
///   [`release_final_flight`](Self::release_final_flight)), then
///   [`poll_transmit`](Self::poll_transmit) until `None`, then
///   [`poll_timeout`](Self::poll_timeout) to re-arm the timer;
/// - getters: [`is_connected`](Self::is_connected).
pub struct DtlsServer {
    endpoint: Endpoint,
    phase: Phase,
    handshake_deadline: Instant,
    /// `release_final_flight` was called: nothing is held any more.
    released: bool,
    /// The association ended in a way that must not complete the handshake (no SRTP
    /// profile): whatever rtc-dtls still produces is dropped.
    silenced: bool,
    /// Why the association failed, once it did.
    failure: Option<String>,
    transmit: VecDeque<Vec<u8>>,
    held: VecDeque<Vec<u8>>,
    events: VecDeque<DtlsEvent>,
}

impl DtlsServer {
    /// A server waiting for the browser's ClientHello. `remote_fingerprint` is the offer's
    /// `a=fingerprint:sha-256` value (`AB:CD:...`, case-insensitive; a leading `sha-256 ` is
    /// accepted); the client's certificate must hash to it. `now` starts
    /// [`HANDSHAKE_TIMEOUT`].
    pub fn new(
        cert: &Certificate,
        remote_fingerprint: &str,
        now: Instant,
    ) -> Result<Self, DtlsError> {
        let expected = parse_fingerprint(remote_fingerprint)?;
        let verify: VerifyPeerCertificateFn = Arc::new(move |certs, _chains| {
            let leaf = certs
                .first()
                .ok_or(RtcError::ErrClientCertificateRequired)?;
            let digest = sha256(leaf).map_err(RtcError::Other)?;
            if digest[..] == expected[..] {
                Ok(())
            } else {
                Err(RtcError::Other(format!(
                    "client certificate fingerprint {} is not the offer's a=fingerprint",
                    format_fingerprint(&digest)
                )))
            }
        });
        let config = ConfigBuilder::default()
            .with_crypto_provider(provider())
            .with_certificates(vec![cert.inner.clone()])
            .with_cipher_suites(CIPHER_SUITES.to_vec())
            .with_srtp_protection_profiles(SRTP_PROFILES.to_vec())
            .with_extended_master_secret(ExtendedMasterSecretType::Require)
            .with_client_auth(ClientAuthType::RequireAnyClientCert)
            .with_verify_peer_certificate(Some(verify))
            // Only the client role reads this (its CA check of the server's certificate);
            // without it `build` creates a throwaway self-signed root (a key generation) for
            // that unused verifier on every association. The client certificate is checked
            // by the fingerprint callback above.
            .with_insecure_skip_verify(true)
            .with_mtu(MTU)
            .build(false, None)
            .map_err(|e| DtlsError::Config(e.to_string()))?;
        Ok(DtlsServer {
            endpoint: Endpoint::new(PEER, TransportProtocol::UDP, Some(Arc::new(config))),
            phase: Phase::Handshaking,
            handshake_deadline: now + HANDSHAKE_TIMEOUT,
            released: false,
            silenced: false,
            failure: None,
            transmit: VecDeque::new(),
            held: VecDeque::new(),
            events: VecDeque::new(),
        })
    }

    /// Feeds one datagram from the browser. `Err(Malformed)`: discarded, nothing changed.
    /// `Err(Handshake)`: the association failed (a [`DtlsEvent::Failed`] is queued, and
    /// usually a fatal alert to send). Poll events and transmits afterwards either way.
    pub fn handle_datagram(&mut self, data: &[u8], now: Instant) -> Result<(), DtlsError> {
        if self.phase == Phase::Ended {
            return Err(DtlsError::Ended);
        }
        if self.phase == Phase::Keyed && !self.released && only_handshake_records(data) {
            // The browser repeating its final flight: what answers it is being held.
            return Ok(());
        }
        let result = self.endpoint.read(now, PEER, None, data.into());
        self.after_io();
        match result {
            Ok(events) => {
                for event in events {
                    if let EndpointEvent::PeerClosed = event {
                        self.end(DtlsEvent::Closed);
                    }
                    // HandshakeComplete: `after_io` saw the keys. ApplicationData: dropped
                    // (no data channel).
                }
                match (&self.failure, self.phase) {
                    (Some(reason), Phase::Ended) => Err(DtlsError::Handshake(reason.clone())),
                    _ => Ok(()),
                }
            }
            Err(RtcError::ErrInvalidPacketLength) => Err(DtlsError::Malformed),
            Err(e) => Err(self.fail(e.to_string())),
        }
    }

    /// Drives retransmissions (flight 4 until the client answers) and the handshake deadline;
    /// call it at [`poll_timeout`](Self::poll_timeout).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Handshaking && now >= self.handshake_deadline {
            self.fail(format!("no handshake within {HANDSHAKE_TIMEOUT:?}"));
            return;
        }
        if self.phase == Phase::Ended {
            return;
        }
        if let Some(at) = self.endpoint.poll_timeout(&PEER) {
            if now >= at {
                let result = self.endpoint.handle_timeout(PEER, now);
                self.after_io();
                if let Err(e) = result {
                    self.fail(e.to_string());
                }
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called; `None` once the
    /// association ended, and once keyed unless the association has a retransmission pending.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retransmit = match self.phase {
            Phase::Ended => return None,
            _ => self.endpoint.poll_timeout(&PEER),
        };
        let deadline = (self.phase == Phase::Handshaking).then_some(self.handshake_deadline);
        match (retransmit, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next datagram to send to the browser. After [`DtlsEvent::Keyed`] and until
    /// [`release_final_flight`](Self::release_final_flight), `None`: the final flight is held.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    /// The next event, in the order they happened.
    pub fn poll_event(&mut self) -> Option<DtlsEvent> {
        self.events.pop_front()
    }

    /// Lets the held final flight (and everything after it) go out through
    /// [`poll_transmit`](Self::poll_transmit). Call it once the keys of
    /// [`DtlsEvent::Keyed`] are safe on the backup. Called before `Keyed`, it turns the hold
    /// off for this association (for drivers without a backup).
    pub fn release_final_flight(&mut self) {
        self.released = true;
        self.transmit.extend(self.held.drain(..));
    }

    /// True once the handshake completed on our side (keys exported) and until the
    /// association closes or fails, whether or not the final flight was released yet.
    pub fn is_connected(&self) -> bool {
        self.phase == Phase::Keyed
    }

    /// After every call into rtc-dtls: notices the keys (before collecting its datagrams, so
    /// the flight produced by the call that made them exportable is held), then collects the
    /// datagrams.
    fn after_io(&mut self) {
        if self.phase == Phase::Handshaking {
            self.try_export();
        }
        let hold = self.phase != Phase::Handshaking && !self.released;
        while let Some(t) = self.endpoint.poll_transmit() {
            let datagram = t.message.to_vec();
            if self.silenced {
                continue;
            } else if hold {
                self.held.push_back(datagram);
            } else {
                self.transmit.push_back(datagram);
            }
        }
    }

    fn try_export(&mut self) {
        let Some(state) = self.endpoint.get_connection_state(PEER) else {
            return;
        };
        // Fails with HandshakeInProgress until flight 6 is prepared (local epoch 1).
        if state
            .export_keying_material(SRTP_EXPORTER_LABEL, &[], 1)
            .is_err()
        {
            return;
        }
        let Some(profile) = map_profile(state.srtp_protection_profile()) else {
            // The client sent no use_srtp (rtc-dtls accepts that): not a WebRTC peer. Fail,
            // and never send the flight that would complete its handshake.
            self.silenced = true;
            self.fail("the client negotiated no SRTP protection profile".to_owned());
            return;
        };
        match state.export_keying_material(SRTP_EXPORTER_LABEL, &[], profile.keying_material_len())
        {
            Ok(material) => {
                self.phase = Phase::Keyed;
                self.events.push_back(DtlsEvent::Keyed(KeyingMaterial {
                    profile,
                    material: material.as_ref().to_vec(),
                }));
            }
            Err(e) => {
                self.silenced = true;
                self.fail(format!("exporting the SRTP keying material: {e}"));
            }
        }
    }

    /// Ends the association with `Failed(reason)`; returns the matching error.
    fn fail(&mut self, reason: String) -> DtlsError {
        if self.phase != Phase::Ended {
            self.end(DtlsEvent::Failed(reason.clone()));
            self.failure = Some(reason.clone());
        }
        DtlsError::Handshake(reason)
    }

    fn end(&mut self, event: DtlsEvent) {
        self.phase = Phase::Ended;
        self.events.push_back(event);
    }
}

impl fmt::Debug for DtlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsServer")
            .field("phase", &self.phase)
            .field("released", &self.released)
            .field("transmit", &self.transmit.len())
            .field("held", &self.held.len())
            .field("events", &self.events.len())
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<dyn RTCCryptoProvider> {
    Arc::new(RingProvider::new())
}

fn sha256(data: &[u8]) -> Result<Vec<u8>, String> {
    provider()
        .crypto()
        .hash(HashAlgorithm::Sha256, data)
        .map_err(|e| e.to_string())
}

fn format_fingerprint(digest: &[u8]) -> String {
    let hex: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

fn parse_fingerprint(text: &str) -> Result<[u8; FINGERPRINT_LEN], DtlsError> {
    let bad = || DtlsError::Fingerprint(text.to_owned());
    let mut value = text.trim();
    if let Some((algorithm, rest)) = value.split_once(' ') {
        if !algorithm.eq_ignore_ascii_case("sha-256") {
            return Err(bad());
        }
        value = rest.trim();
    }
    let mut out = [0u8; FINGERPRINT_LEN];
    let mut n = 0;
    for part in value.split(':') {
        let byte = (part.len() == 2 && part.bytes().all(|c| c.is_ascii_hexdigit()))
            .then(|| u8::from_str_radix(part, 16).ok())
            .flatten()
            .ok_or_else(bad)?;
        *out.get_mut(n).ok_or_else(bad)? = byte;
        n += 1;
    }
    if n == FINGERPRINT_LEN {
        Ok(out)
    } else {
        Err(bad())
    }
}

/// True if `data` is one or more complete DTLS records, all of them handshake (22) or
/// ChangeCipherSpec (20): what a repeated flight 5 looks like (its Finished is an encrypted
/// handshake record).
fn only_handshake_records(data: &[u8]) -> bool {
    const HEADER: usize = 13;
    let mut rest = data;
    while !rest.is_empty() {
        let Some(header) = rest.get(..HEADER) else {
            return false;
        };
        if !matches!(header[0], 20 | 22) {
            return false;
        }
        let len = usize::from(u16::from_be_bytes([header[11], header[12]]));
        let Some(next) = rest.get(HEADER + len..) else {
            return false;
        };
        rest = next;
    }
    !data.is_empty()
}

fn map_profile(profile: SrtpProtectionProfile) -> Option<Profile> {
    match profile {
        SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm => Some(Profile::AeadAes128Gcm),
        SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80 => Some(Profile::Aes128CmHmacSha1_80),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_sdp_form_only() {
        let fp = "AB:cd:".repeat(16);
        let fp = fp.trim_end_matches(':');
        let mut expected = [0u8; 32];
        for (i, b) in expected.iter_mut().enumerate() {
            *b = if i % 2 == 0 { 0xab } else { 0xcd };
        }
        assert_eq!(parse_fingerprint(fp), Ok(expected));
        assert_eq!(parse_fingerprint(&format!("sha-256 {fp}")), Ok(expected));
        assert_eq!(format_fingerprint(&expected), fp.to_uppercase());
        for bad in [
            "",
            &fp[..fp.len() - 3],                   // 31 bytes
            &format!("{fp}:00"),                   // 33 bytes
            &format!("sha-1 {fp}"),                // another algorithm
            &fp.replacen("AB", "A", 1),            // one nibble
            &fp.replacen("AB", "+B", 1),           // a sign from_str_radix would take
            &fp.replacen("AB:cd", "ABcd", 1),      // missing colon
            &fp.replacen("AB", "\u{e9}\u{e9}", 1), // non-ASCII
        ] {
            assert!(parse_fingerprint(bad).is_err(), "{bad:?} accepted");
        }
    }
}
