//! The versioned, typed message set and its authenticated envelope.
//!
//! Datagram layout:
//!
//! ```text
//! magic "USFT" (4) | protocol version u16 BE (2) | postcard(Envelope) | HMAC-SHA256 (32)
//! ```
//!
//! The MAC covers every byte before it (magic and version included) with the shared key.
//! The version sits before the typed body so that a peer speaking another version is
//! recognised (and reported) even though its body would not decode.

use crate::{Item, LogIndex, NodeId, Role};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Protocol version this crate speaks (the envelope and message set, not the
/// application's item schema). Peers must match exactly.
///
/// 2: the replicated items are the application's own type `T` (was: four blob variants).
/// 3: [`Payload::Handover`] (planned switchover).
/// 4: a serving primary's heartbeats may travel on a path of their own
/// ([`crate::Config::heartbeat_channel`]), which a node of an earlier version does not read.
pub const PROTOCOL_VERSION: u16 = 4;
/// First bytes of every datagram.
pub const MAGIC: [u8; 4] = *b"USFT";
/// Length of the HMAC-SHA256 trailer.
pub const MAC_LEN: usize = 32;
/// Largest datagram the node emits (the UDP payload limit over IPv4): a replicated item or
/// snapshot whose datagram would be longer is refused ([`crate::Error::TooLarge`]).
pub const MAX_DATAGRAM: usize = 65_507;
const HEADER_LEN: usize = 6;

/// Short, non-secret fingerprint of the shared key (first 8 bytes of a domain-separated
/// SHA-256), exchanged in [`Payload::Hello`] so that a key mismatch is told apart from
/// corruption.
pub fn key_fingerprint(key: &[u8]) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(b"understudy ft-sync key fingerprint v1\0");
    h.update(key);
    let d = h.finalize();
    let mut fp = [0u8; 8];
    fp.copy_from_slice(&d[..8]);
    fp
}

/// Message bodies, carrying the application's items `T`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload<T> {
    /// Handshake, repeated every heartbeat interval until the peer's Hello arrived.
    Hello {
        /// Fingerprint of the sender's key ([`key_fingerprint`]).
        key_fingerprint: [u8; 8],
        /// The sender is configured primary but has not finished its startup probe.
        starting: bool,
        /// The sender has seen our Hello (handshake complete from its side).
        peer_seen: bool,
    },
    /// The handshake was refused; the sender explains why.
    Refuse {
        /// Reason.
        reason: RefuseReason,
    },
    /// Liveness, with the replication positions.
    Heartbeat {
        /// Primary: highest log index assigned. Backup: highest index applied.
        log_index: LogIndex,
    },
    /// Full state: replaces everything the backup held; later entries build on it.
    Snapshot {
        /// Log index of this snapshot.
        index: LogIndex,
        /// Every item of the current state.
        items: Vec<T>,
    },
    /// One ordered replication-log entry.
    Entry {
        /// Its log index (consecutive).
        index: LogIndex,
        /// The change.
        item: T,
    },
    /// Cumulative acknowledgement: every index up to this one is applied by the backup.
    Ack {
        /// Highest contiguous applied index.
        index: LogIndex,
    },
    /// Planned switchover: the primary stopped deciding anything at log index `index`; the
    /// backup takes over as soon as it has applied everything up to it. Repeated every
    /// heartbeat interval until the backup is heard serving.
    Handover {
        /// The primary's last log index.
        index: LogIndex,
    },
}

/// Why a handshake was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefuseReason {
    /// Both nodes are configured primary.
    TwoPrimaries,
    /// Both nodes are configured backup.
    TwoBackups,
    /// Both nodes use the same node id.
    SameNodeId,
}

/// The authenticated envelope (everything but magic, version and MAC).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// Sender's node id.
    pub node: NodeId,
    /// Sender's incarnation (changes on every process start; resets the replay window).
    pub incarnation: u64,
    /// Sender's current role.
    pub role: Role,
    /// Per-incarnation message sequence number (replay protection).
    pub seq: u64,
    /// Body.
    pub payload: Payload<T>,
}

/// Why a datagram was not accepted (counted in [`crate::Stats`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// Too short, bad magic, or a body that does not decode.
    Malformed,
    /// MAC mismatch; carries the fingerprint when the body is an (unauthenticated) Hello.
    Unauthenticated(Option<[u8; 8]>),
    /// Authenticated, but another protocol version.
    WrongVersion(u16),
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length.
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length")
}

/// Encode and authenticate an envelope. Fails only if the application's item does not
/// serialize (its own `Serialize` impl reports an error).
pub fn encode<T: Item>(key: &[u8], env: &Envelope<T>) -> Result<Vec<u8>, postcard::Error> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    let mut out = postcard::to_extend(env, out)?;
    let mut m = mac(key);
    m.update(&out);
    out.extend_from_slice(&m.finalize().into_bytes());
    Ok(out)
}

/// Verify and decode a datagram.
pub(crate) fn decode<T: Item>(key: &[u8], datagram: &[u8]) -> Result<Envelope<T>, DecodeError> {
    if datagram.len() < HEADER_LEN + MAC_LEN || datagram[..4] != MAGIC {
        return Err(DecodeError::Malformed);
    }
    let (signed, tag) = datagram.split_at(datagram.len() - MAC_LEN);
    let mut m = mac(key);
    m.update(signed);
    let version = u16::from_be_bytes([signed[4], signed[5]]);
    let body = &signed[HEADER_LEN..];
    if m.verify_slice(tag).is_err() {
        // Peek (unauthenticated) for a Hello of the same version to report a key mismatch.
        let fp = (version == PROTOCOL_VERSION)
            .then(|| postcard::from_bytes::<Envelope<T>>(body).ok())
            .flatten()
            .and_then(|e| match e.payload {
                Payload::Hello {
                    key_fingerprint, ..
                } => Some(key_fingerprint),
                _ => None,
            });
        return Err(DecodeError::Unauthenticated(fp));
    }
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::WrongVersion(version));
    }
    match postcard::take_from_bytes::<Envelope<T>>(body) {
        Ok((env, [])) => Ok(env),
        _ => Err(DecodeError::Malformed),
    }
}
