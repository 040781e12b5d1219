//! Serializable dialog and transaction state. Everything a hot-standby backup needs to
//! continue the calls lives here (TCP reassembly buffers and queued output do not).

use crate::{CallHandle, Stats, Transport};
use rand_core::SeedableRng;
use rand_xoshiro::SplitMix64;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// RFC 3261 T1 (RTT estimate).
pub const T1: Duration = Duration::from_millis(500);
/// RFC 3261 T2 (maximum retransmit interval for non-INVITE requests and INVITE responses).
pub const T2: Duration = Duration::from_secs(4);
/// RFC 3261 T4 (maximum duration a message remains in the network).
pub const T4: Duration = Duration::from_secs(5);
/// 64*T1: timers B, F, H, J and the 2xx retransmission give-up.
pub const TIMEOUT_64T1: Duration = Duration::from_secs(32);

/// Deterministic PRNG (SplitMix64, `rand_xoshiro`) seeded from [`crate::Config::seed`].
///
/// The seed is the generator's state itself, so the outputs are those of the reference
/// splitmix64 started at `seed`. Serialized as that one 64-bit state (a postcard encoding
/// is the same bytes as the bare `u64`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rng {
    /// Internal state.
    state: SplitMix64,
}

impl Rng {
    /// New generator.
    pub fn new(seed: u64) -> Self {
        Rng {
            state: SplitMix64::seed_from_u64(seed),
        }
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        rand_core::Rng::next_u64(&mut self.state)
    }
    /// A random tag (16 hex digits).
    pub fn tag(&mut self) -> String {
        format!("{:016x}", self.next_u64())
    }
    /// A random RFC 3261 branch (magic cookie + 16 hex digits).
    pub fn branch(&mut self) -> String {
        format!("z9hG4bK{:016x}", self.next_u64())
    }
}

/// What a server transaction needs to build any response to its request: the header values
/// RFC 3261 8.2.6.2 copies (top Via already carries received/rport).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseCtx {
    /// Via values, top first.
    pub vias: Vec<String>,
    /// From value.
    pub from: String,
    /// To value as received.
    pub to: String,
    /// Whether the To value already has a tag.
    pub to_has_tag: bool,
    /// Call-ID value.
    pub call_id: String,
    /// CSeq value.
    pub cseq: String,
    /// Record-Route values (copied into 2xx of INVITE).
    pub record_route: Vec<String>,
}

/// RFC 3261 17.2 server transaction states (plus RFC 6026 Accepted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerTxState {
    /// Request passed up; no final response yet.
    Proceeding,
    /// INVITE answered with 2xx; retransmitting it until ACK (RFC 6026 Accepted).
    Accepted,
    /// Final non-2xx response sent (INVITE: waiting for ACK, timer G/H) or non-INVITE
    /// final response sent (absorbing retransmissions, timer J).
    Completed,
    /// ACK received for a non-2xx final response (timer I), or 2xx ACKed: absorbing only.
    Confirmed,
}

/// A server transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerTx {
    /// Request method.
    pub method: String,
    /// Call this transaction belongs to (INVITE, re-INVITE, BYE, INFO ...).
    pub call: Option<CallHandle>,
    /// True for a re-INVITE.
    pub reinvite: bool,
    /// State.
    pub state: ServerTxState,
    /// Transport of the request.
    pub transport: Transport,
    /// Where responses go.
    pub dest: SocketAddr,
    /// Header values for responses.
    pub ctx: ResponseCtx,
    /// CSeq number.
    pub cseq: u32,
    /// To-tag used in our responses.
    pub to_tag: String,
    /// Whether the INVITE carried an SDP offer.
    pub had_offer: bool,
    /// Last response sent (resent on request retransmission and by timers).
    pub last_response: Option<String>,
    /// Next retransmission of `last_response` (timer G / 2xx retransmission).
    pub retransmit_at: Option<Duration>,
    /// Current retransmission interval.
    pub interval: Duration,
    /// When the transaction ends (timer H / J / I / 64*T1 for 2xx).
    pub expires_at: Option<Duration>,
}

/// Our BYE client transaction (timers E/F).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientTx {
    /// Call it hangs up.
    pub call: CallHandle,
    /// Serialized request.
    pub request: String,
    /// Transport.
    pub transport: Transport,
    /// Destination.
    pub dest: SocketAddr,
    /// Next retransmission (UDP only).
    pub retransmit_at: Option<Duration>,
    /// Current interval.
    pub interval: Duration,
    /// Timer F.
    pub expires_at: Duration,
}

/// Dialog states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DialogState {
    /// INVITE received, no final response yet.
    Early,
    /// 2xx sent, waiting for ACK.
    Accepted,
    /// ACK received.
    Confirmed,
    /// CallEnded was emitted (ack timeout); kept only so the application can still BYE.
    Ended,
}

/// An INVITE dialog (RFC 3261 12).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dialog {
    /// Handle.
    pub call: CallHandle,
    /// Call-ID.
    pub call_id: String,
    /// Room (Request-URI user).
    pub room: String,
    /// Our tag (To tag of our responses, From tag of our requests).
    pub local_tag: String,
    /// The caller's From tag.
    pub remote_tag: String,
    /// Caller URI (From without tag).
    pub remote_uri: String,
    /// To value of the initial INVITE (no tag): our From in requests we send, plus our tag.
    pub local_party: String,
    /// From value of the initial INVITE (with tag): the To of requests we send.
    pub remote_party: String,
    /// Highest remote CSeq seen.
    pub remote_cseq: u32,
    /// Last CSeq we used (0: none yet).
    pub local_cseq: u32,
    /// Route set (Record-Route of the INVITE, in order).
    pub route_set: Vec<String>,
    /// Remote target (Contact URI).
    pub remote_target: String,
    /// Transport.
    pub transport: Transport,
    /// Peer address (source of the INVITE); our requests go there.
    pub peer: SocketAddr,
    /// State.
    pub state: DialogState,
    /// Server transaction of an INVITE / re-INVITE waiting for accept/reject.
    pub pending_invite: Option<String>,
    /// Branch of our BYE in progress.
    pub bye_branch: Option<String>,
    /// When an ended dialog is forgotten.
    pub expires_at: Option<Duration>,
}

/// All replicable state of a [`crate::Core`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CoreState {
    /// PRNG.
    pub rng: Rng,
    /// Next call handle.
    pub next_call: u64,
    /// Dialogs by handle.
    pub dialogs: BTreeMap<CallHandle, Dialog>,
    /// `call-id \n local-tag` -> handle.
    pub dialog_index: BTreeMap<String, CallHandle>,
    /// Server transactions by key (branch | sent-by | method).
    pub server_txs: BTreeMap<String, ServerTx>,
    /// Client transactions by branch.
    pub client_txs: BTreeMap<String, ClientTx>,
    /// Counters.
    pub stats: Stats,
}

impl CoreState {
    /// Fresh state.
    pub fn new(seed: u64) -> Self {
        CoreState {
            rng: Rng::new(seed),
            next_call: 1,
            dialogs: BTreeMap::new(),
            dialog_index: BTreeMap::new(),
            server_txs: BTreeMap::new(),
            client_txs: BTreeMap::new(),
            stats: Stats::default(),
        }
    }
}

/// Index key of a dialog.
pub(crate) fn dialog_key(call_id: &str, local_tag: &str) -> String {
    format!("{call_id}\n{local_tag}")
}
