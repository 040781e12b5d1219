//! ICE-lite responder (RFC 8445 §2.5) for browser participants, with consent freshness
//! (RFC 7675) bookkeeping.
//!
//! We are the lite agent: we gather one host candidate (the server's media port), never send
//! a check, and are always the controlled agent. The browser (controlling, full ICE) sends
//! Binding requests; we answer the authentic ones with a Binding success response and learn
//! from them which remote address to send to. After ICE completes the browser keeps sending a
//! check on the selected pair every ~2.5 s (Chromium, with USE-CANDIDATE set): those are its
//! consent checks, and [`IceLite::last_check`] tells the driver when the last one arrived.
//!
//! A request is authentic when its USERNAME is exactly `LOCAL_UFRAG:REMOTE_UFRAG` and its
//! MESSAGE-INTEGRITY (HMAC-SHA1, short-term credential) verifies with the *local* password.
//! Everything else is an [`IceError`] and gets no answer at all: no error response, so that
//! a forged or mis-keyed check never learns anything and never makes us send to an address
//! that did not prove it knows the password.
//!
//! One UDP port serves every participant: the driver picks the [`IceLite`] of a STUN packet
//! by [`local_ufrag_of`] (our ufrag is unique per participant), everything else by the remote
//! address [`IceLite::selected`] names.
//!
//! STUN parsing and encoding is `rtc-stun`'s (MESSAGE-INTEGRITY, FINGERPRINT,
//! XOR-MAPPED-ADDRESS); this module checks the structure around them that `rtc-stun` leaves
//! to its caller (one message per datagram, FINGERPRINT last, only attributes before
//! MESSAGE-INTEGRITY count).
//!
//! [`IceLite`] is plain data (it derives serde): a backup that took a participant over with
//! the same credentials answers the browser's next consent check, and its state says where
//! the primary was sending.
//!
//! # Driver
//!
//! ```
//! use std::collections::HashMap;
//! use std::net::SocketAddr;
//! use std::time::Duration;
//! use webrtc_core::ice::{local_ufrag_of, Credentials, IceLite};
//! use webrtc_core::mux::{classify, Kind};
//!
//! /// What the socket task does with one datagram; `Some` is sent back to `from`.
//! fn on_datagram(
//!     sessions: &mut HashMap<String, IceLite>,
//!     from: SocketAddr,
//!     packet: &[u8],
//!     now: Duration,
//! ) -> Option<Vec<u8>> {
//!     match classify(packet) {
//!         Kind::Stun => {
//!             let ice = sessions.get_mut(&local_ufrag_of(packet)?)?;
//!             // Err: count it and drop the packet, never answer.
//!             let reply = ice.handle_stun(from, packet, now).ok()?;
//!             (!reply.response.is_empty()).then_some(reply.response)
//!         }
//!         // DTLS, SRTP, SRTCP: the session whose `selected()` is `from`.
//!         _ => None,
//!     }
//! }
//!
//! let mut seed = 7u64; // the driver's CSPRNG, really
//! let mut rng = || {
//!     seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
//!     seed
//! };
//! let ours = Credentials::generate(&mut rng); // into our SDP answer, with a=ice-lite
//! let browser = Credentials { ufrag: "RmBR".into(), pwd: "from its offer".into() };
//! let mut sessions = HashMap::new();
//! sessions.insert(ours.ufrag.clone(), IceLite::new(ours, browser));
//!
//! let from: SocketAddr = "198.51.100.7:50123".parse().unwrap();
//! let garbage = b"\x00\x01 not a request";
//! assert_eq!(on_datagram(&mut sessions, from, garbage, Duration::ZERO), None);
//! // Consent (RFC 7675): drop a participant whose checks stopped for 30 s.
//! let now = Duration::from_secs(40);
//! let consent = Duration::from_secs(30);
//! let fresh = |ice: &IceLite| ice.last_check().is_some_and(|t| now.saturating_sub(t) < consent);
//! sessions.retain(|_, ice| fresh(ice));
//! assert!(sessions.is_empty());
//! ```
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use rtc_stun::attributes::{
    RawAttribute, ATTR_FINGERPRINT, ATTR_MESSAGE_INTEGRITY, ATTR_USERNAME, ATTR_USE_CANDIDATE,
};
use rtc_stun::crypto::providers::RingCrypto;
use rtc_stun::fingerprint::FINGERPRINT;
use rtc_stun::integrity::MessageIntegrity;
use rtc_stun::message::{
    Message, TransactionId, BINDING_REQUEST, BINDING_SUCCESS, CLASS_INDICATION, MAGIC_COOKIE,
    MESSAGE_HEADER_SIZE, METHOD_BINDING,
};
use rtc_stun::xoraddr::XorMappedAddress;
use serde::{Deserialize, Serialize};

/// The HMAC-SHA1 provider for MESSAGE-INTEGRITY (a stateless unit struct).
static CRYPTO: RingCrypto = RingCrypto;

/// The characters of an ICE ufrag or password (`ice-char`, RFC 8839 §5.4): ALPHA, DIGIT,
/// `+` and `/`. 64 of them, so each carries 6 random bits.
pub const ICE_CHARS: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/// Length of a generated ufrag (RFC 8839 §5.4 requires at least 4 characters; 8 carry 48 bits).
pub const UFRAG_LEN: usize = 8;
/// Length of a generated password (RFC 8839 §5.4 requires at least 22 characters; 24 carry
/// 144 bits, above the 128 RFC 8445 §5.3 asks for).
pub const PWD_LEN: usize = 24;

/// Length of the MESSAGE-INTEGRITY value (HMAC-SHA1).
const INTEGRITY_LEN: usize = 20;

/// One side's ICE credentials, as in SDP `a=ice-ufrag` / `a=ice-pwd`.
///
/// `Debug` prints the password: do not log these.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// The username fragment.
    pub ufrag: String,
    /// The password, the MESSAGE-INTEGRITY key of checks sent *to* this side.
    pub pwd: String,
}

impl Credentials {
    /// Fresh credentials from `rng`, which must return uniformly random 64-bit values (from a
    /// CSPRNG: the password is what keeps anyone else from answering for us or reaching the
    /// participant's session). `UFRAG_LEN` + `PWD_LEN` characters of [`ICE_CHARS`], ten per
    /// `rng` call.
    pub fn generate(rng: &mut impl FnMut() -> u64) -> Credentials {
        let mut chars = IceChars {
            rng,
            bits: 0,
            left: 0,
        };
        let ufrag = (0..UFRAG_LEN).map(|_| chars.next_char()).collect();
        let pwd = (0..PWD_LEN).map(|_| chars.next_char()).collect();
        Credentials { ufrag, pwd }
    }
}

/// Draws ice-chars from a 64-bit random source, 6 bits at a time.
struct IceChars<'a, R: FnMut() -> u64> {
    rng: &'a mut R,
    bits: u64,
    left: u32,
}

impl<R: FnMut() -> u64> IceChars<'_, R> {
    fn next_char(&mut self) -> char {
        if self.left == 0 {
            self.bits = (self.rng)();
            self.left = 10;
        }
        let c = ICE_CHARS[(self.bits & 63) as usize];
        self.bits >>= 6;
        self.left -= 1;
        char::from(c)
    }
}

/// Why a STUN packet was not answered. Every variant means "no response was produced";
/// the driver counts them and drops the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IceError {
    /// Not a STUN message: shorter than a STUN header, first two bits not zero, or no magic
    /// cookie.
    NotStun,
    /// A STUN header, but the message does not parse: its length field disagrees with the
    /// datagram (one datagram carries exactly one message), an attribute runs past the end,
    /// or MESSAGE-INTEGRITY has the wrong size.
    Malformed,
    /// A STUN message other than a Binding request or Binding indication (a response, or
    /// another method such as a TURN request).
    NotBindingRequest,
    /// The USERNAME is missing (before MESSAGE-INTEGRITY) or is not
    /// `LOCAL_UFRAG:REMOTE_UFRAG` for this session.
    UnknownUsername,
    /// The request carries no MESSAGE-INTEGRITY.
    MissingIntegrity,
    /// MESSAGE-INTEGRITY does not verify with the local password (wrong password, or the
    /// message was altered).
    BadIntegrity,
    /// A FINGERPRINT that is wrong, not the last attribute, or not 4 bytes long.
    BadFingerprint,
    /// `rtc-stun` failed to encode the response (not expected to happen).
    Encode,
}

impl fmt::Display for IceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IceError::NotStun => "not a STUN message",
            IceError::Malformed => "malformed STUN message",
            IceError::NotBindingRequest => "STUN message is not a Binding request",
            IceError::UnknownUsername => "STUN USERNAME missing or not this session's",
            IceError::MissingIntegrity => "STUN request without MESSAGE-INTEGRITY",
            IceError::BadIntegrity => "STUN MESSAGE-INTEGRITY does not verify",
            IceError::BadFingerprint => "STUN FINGERPRINT wrong or misplaced",
            IceError::Encode => "STUN response could not be encoded",
        })
    }
}

impl std::error::Error for IceError {}

/// What [`IceLite::handle_stun`] made of an authentic packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IceReply {
    /// The Binding success response to send back to the packet's source address. Empty for a
    /// Binding indication (a keepalive): nothing to send, and no state changed.
    pub response: Vec<u8>,
    /// The request carried USE-CANDIDATE: the browser nominated (or keeps using) the pair,
    /// and [`IceLite::selected`] is now the request's source address.
    pub nominated: bool,
}

/// The ICE-lite state of one browser participant: its credentials and ours, the remote
/// address media goes to, and when the last authentic check arrived.
///
/// Methods: [`IceLite::handle_stun`] for every STUN packet the driver routed here; the
/// getters [`IceLite::selected`] (where to send DTLS and SRTP) and [`IceLite::last_check`]
/// (consent: RFC 7675 §5.1 has the sender stop after 30 s without a successful check; the
/// browser does, so the driver should drop a participant whose checks stopped that long).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceLite {
    local: Credentials,
    remote: Credentials,
    selected: Option<SocketAddr>,
    last_check: Option<Duration>,
}

impl IceLite {
    /// A responder for checks from the peer with `remote` credentials (from its SDP) to us
    /// with `local` credentials (in our SDP, with `a=ice-lite`).
    pub fn new(local: Credentials, remote: Credentials) -> IceLite {
        IceLite {
            local,
            remote,
            selected: None,
            last_check: None,
        }
    }

    /// Handles one STUN packet that arrived from `from` at time `now` (any monotonic clock
    /// the driver uses; only stored).
    ///
    /// An authentic Binding request (USERNAME `LOCAL:REMOTE`, MESSAGE-INTEGRITY with the local
    /// password, FINGERPRINT right if present) gets a Binding success response: same
    /// transaction id, XOR-MAPPED-ADDRESS `from` (an IPv4-mapped IPv6 address as IPv4),
    /// MESSAGE-INTEGRITY with the local password, FINGERPRINT. It sets
    /// [`IceLite::last_check`] to `now`, and with USE-CANDIDATE [`IceLite::selected`] to
    /// `from`. Attributes after MESSAGE-INTEGRITY are ignored (RFC 5389 §15.4); PRIORITY and
    /// ICE-CONTROLLING are not needed by a lite agent and not checked.
    ///
    /// A Binding indication (keepalive) with a correct FINGERPRINT, if any, is `Ok` with an
    /// empty response and changes nothing. Anything else is an [`IceError`], produces no
    /// response and changes nothing.
    pub fn handle_stun(
        &mut self,
        from: SocketAddr,
        packet: &[u8],
        now: Duration,
    ) -> Result<IceReply, IceError> {
        let mut msg = parse(packet)?;
        if msg.typ.method != METHOD_BINDING {
            return Err(IceError::NotBindingRequest);
        }
        check_fingerprint(&msg)?;
        if msg.typ.class == CLASS_INDICATION {
            return Ok(IceReply {
                response: Vec::new(),
                nominated: false,
            });
        }
        if msg.typ != BINDING_REQUEST {
            return Err(IceError::NotBindingRequest);
        }

        let integrity = msg
            .attributes
            .0
            .iter()
            .position(|a| a.typ == ATTR_MESSAGE_INTEGRITY);
        let signed = &msg.attributes.0[..integrity.unwrap_or(msg.attributes.0.len())];
        let username = find(signed, ATTR_USERNAME).ok_or(IceError::UnknownUsername)?;
        if !self.is_our_username(&username.value) {
            return Err(IceError::UnknownUsername);
        }
        let nominated = find(signed, ATTR_USE_CANDIDATE).is_some();
        let Some(integrity) = integrity else {
            return Err(IceError::MissingIntegrity);
        };
        if msg.attributes.0[integrity].value.len() != INTEGRITY_LEN {
            return Err(IceError::Malformed);
        }
        MessageIntegrity::check(&mut msg, self.local.pwd.as_bytes(), &CRYPTO)
            .map_err(|_| IceError::BadIntegrity)?;

        let response = self.success_response(msg.transaction_id, from)?;
        self.last_check = Some(now);
        if nominated {
            self.selected = Some(from);
        }
        Ok(IceReply {
            response,
            nominated,
        })
    }

    /// The remote address of the last authentic check that carried USE-CANDIDATE: where
    /// DTLS and SRTP for this participant go. `None` until the browser nominated a pair.
    pub fn selected(&self) -> Option<SocketAddr> {
        self.selected
    }

    /// The `now` of the last authentic Binding request (nominated or not), for consent
    /// freshness. `None` before the first.
    pub fn last_check(&self) -> Option<Duration> {
        self.last_check
    }

    /// Our credentials.
    pub fn local(&self) -> &Credentials {
        &self.local
    }

    /// The browser's credentials.
    pub fn remote(&self) -> &Credentials {
        &self.remote
    }

    /// `value` is `LOCAL_UFRAG:REMOTE_UFRAG`, compared without building the string.
    fn is_our_username(&self, value: &[u8]) -> bool {
        let local = self.local.ufrag.as_bytes();
        let remote = self.remote.ufrag.as_bytes();
        value.len() == local.len() + 1 + remote.len()
            && value.starts_with(local)
            && value.get(local.len()) == Some(&b':')
            && value.ends_with(remote)
    }

    fn success_response(&self, id: TransactionId, from: SocketAddr) -> Result<Vec<u8>, IceError> {
        let mut msg = Message::new();
        msg.build(&[
            Box::new(BINDING_SUCCESS),
            Box::new(id),
            Box::new(XorMappedAddress {
                ip: from.ip().to_canonical(),
                port: from.port(),
            }),
            Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
                self.local.pwd.clone(),
                &CRYPTO,
            )),
            Box::new(FINGERPRINT),
        ])
        .map_err(|_| IceError::Encode)?;
        Ok(msg.raw)
    }
}

/// Our ufrag as a Binding request names it: the part of its USERNAME before the `:`
/// (a request sent to us carries `OUR_UFRAG:THEIR_UFRAG`). For the driver's demultiplexing
/// only: nothing is verified; [`IceLite::handle_stun`] of the session it picks does that.
///
/// `None` for anything that is not a well-formed Binding request with a USERNAME (before
/// MESSAGE-INTEGRITY, if any) that is UTF-8 and has a non-empty part before a `:`.
pub fn local_ufrag_of(packet: &[u8]) -> Option<String> {
    let msg = parse(packet).ok()?;
    if msg.typ != BINDING_REQUEST {
        return None;
    }
    let signed = msg
        .attributes
        .0
        .split(|a| a.typ == ATTR_MESSAGE_INTEGRITY)
        .next()?;
    let username = find(signed, ATTR_USERNAME)?;
    let (local, _) = std::str::from_utf8(&username.value).ok()?.split_once(':')?;
    (!local.is_empty()).then(|| local.to_owned())
}

/// Decodes one datagram as exactly one STUN message.
fn parse(packet: &[u8]) -> Result<Message, IceError> {
    if packet.len() < MESSAGE_HEADER_SIZE
        || packet[0] & 0xc0 != 0
        || packet[4..8] != MAGIC_COOKIE.to_be_bytes()
    {
        return Err(IceError::NotStun);
    }
    let length = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    // rtc-stun accepts trailing bytes after the message and computes FINGERPRINT over
    // everything it was given: insist on one whole message, 4-byte aligned.
    if length % 4 != 0 || MESSAGE_HEADER_SIZE + length != packet.len() {
        return Err(IceError::Malformed);
    }
    let mut msg = Message::new();
    msg.unmarshal_binary(packet)
        .map_err(|_| IceError::Malformed)?;
    Ok(msg)
}

/// A FINGERPRINT, if present, must be the only one, the last attribute and correct.
fn check_fingerprint(msg: &Message) -> Result<(), IceError> {
    let attrs = &msg.attributes.0;
    match attrs.iter().position(|a| a.typ == ATTR_FINGERPRINT) {
        None => Ok(()),
        // rtc-stun's check reads the value from the first FINGERPRINT and computes the CRC
        // up to the last 8 bytes of the message: the same attribute only when it is last.
        Some(i) if i + 1 == attrs.len() => {
            FINGERPRINT.check(msg).map_err(|_| IceError::BadFingerprint)
        }
        Some(_) => Err(IceError::BadFingerprint),
    }
}

/// The first attribute of type `typ` among `attrs`.
fn find(attrs: &[RawAttribute], typ: rtc_stun::attributes::AttrType) -> Option<&RawAttribute> {
    attrs.iter().find(|a| a.typ == typ)
}

#[cfg(test)]
mod tests;
