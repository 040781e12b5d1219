//! Sans-IO SIP user-agent-server core for Understudy conference rooms.
//!
//! It parses and serializes SIP messages (over UDP datagrams and TCP byte streams), runs the
//! RFC 3261 server transactions and dialogs a conference server needs (INVITE, ACK, BYE,
//! CANCEL, OPTIONS, INFO, re-INVITE, REGISTER) and offers SDP offer/answer helpers ([`sdp`]).
//! Tools that only observe or drive calls read messages and SDP with the same parsers through
//! [`inspect`].
//! It never opens a socket or reads a clock: the driver passes `now` in and sends what
//! [`Core::poll_transmit`] returns. All dialog and transaction state lives in serializable
//! types ([`state::CoreState`]) because a later feature replicates it to a hot-standby backup.
//!
//! It is **not** a proxy, registrar, or UAC: it never starts calls, resolves DNS, does
//! authentication, TLS, PRACK/100rel, session timers or SRTP. Responses to REGISTER are
//! accepted-but-not-stored bindings so softphones with an account keep working.
//!
//! # Driver loop
//!
//! Feed input, then drain output and events, then arm one timer. Every method takes `now`
//! (any monotonic origin); the same inputs with the same [`Config::seed`] give the same bytes.
//!
//! ```no_run
//! use sip_core::{sdp, Config, Core, Event};
//! use std::net::UdpSocket;
//! use std::time::{Duration, Instant};
//!
//! let sock = UdpSocket::bind("0.0.0.0:5060")?;
//! let config = Config {
//!     local_addr: "198.18.0.1:5060".parse()?,
//!     user_agent: "Understudy".into(),
//!     max_message_size: 8192,
//!     seed: 42,
//! };
//! let mut core = Core::new(config);
//! let start = Instant::now();
//! let mut buf = [0u8; 65536];
//! loop {
//!     // 1. input: a datagram, or the timer firing
//!     let wait = core.poll_timeout().map(|t| t.saturating_sub(start.elapsed()));
//!     sock.set_read_timeout(Some(wait.unwrap_or(Duration::from_secs(1)).max(Duration::from_millis(1))))?;
//!     match sock.recv_from(&mut buf) {
//!         Ok((n, from)) => core.handle_datagram(from, &buf[..n], start.elapsed()),
//!         Err(_) => core.handle_timeout(start.elapsed()),
//!     }
//!     // 2. events: answer calls
//!     while let Some(ev) = core.poll_event() {
//!         let now = start.elapsed();
//!         match ev {
//!             Event::IncomingCall { call, offer: Some(offer), .. }
//!             | Event::ReInvite { call, offer: Some(offer) } => match sdp::negotiate(&offer) {
//!                 Ok(neg) => {
//!                     let local = sdp::LocalMedia {
//!                         ip: "198.18.0.1".parse()?,
//!                         rtp_port: 40000,
//!                         video_port: None,
//!                         session_id: 1,
//!                         session_version: 1,
//!                     };
//!                     core.accept(call, sdp::build_answer(&local, &neg), now)?;
//!                 }
//!                 Err(sdp::SdpError::NotAcceptable(_)) => core.reject(call, 488, now)?,
//!                 Err(_) => core.reject(call, 400, now)?,
//!             },
//!             Event::CallEnded { call, reason } => println!("{call:?} ended: {reason:?}"),
//!             _ => {}
//!         }
//!     }
//!     // 3. output
//!     while let Some(t) = core.poll_transmit() {
//!         sock.send_to(&t.data, t.to)?;
//!     }
//! }
//! # #[allow(unreachable_code)]
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Method families
//!
//! * `handle_*`: input (datagram, stream bytes, stream closed, timer).
//! * [`Core::accept`], [`Core::reject`], [`Core::hangup`]: application commands.
//! * `poll_*`: output; drain [`Core::poll_transmit`] and [`Core::poll_event`] after every
//!   input or command, then re-read [`Core::poll_timeout`].
//! * [`Core::calls`], [`Core::stats`], [`Core::state`]: getters; [`Core::from_state`] resumes
//!   from replicated state.
//! * [`Core::take_changes`]: what changed in [`Core::state`] since the last call, for
//!   replication (see [`state`]); drain it after every input, or switch it off with
//!   [`Core::set_change_tracking`].
//!
//! Behaviour notes: UDP responses go to the source address when the top Via has `rport` or a
//! sent-by differing from the source (received/rport are added), else to the sent-by. Our
//! BYE goes to the dialog's peer address (where the INVITE came from; no DNS) with the
//! remote target as Request-URI and the route set as Route. Re-INVITE ACKs also produce
//! [`Event::Confirmed`]. After [`EndReason::AckTimeout`] the application may still call
//! [`Core::hangup`] (no second `CallEnded` follows).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod core;
pub mod framing;
pub mod inspect;
mod message;
pub mod sdp;
pub mod state;
pub mod triage;

pub use crate::core::{reason_phrase, ALLOW};

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

use crate::core::Inner;

/// Local handle of a call (one INVITE dialog), allocated by the core from a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CallHandle(pub u64);

/// Identifier of a TCP connection, chosen by the driver.
pub type ConnId = u64;

/// Transport a message came in on / must leave on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Transport {
    /// The UDP listening socket.
    Udp,
    /// An accepted TCP connection.
    Tcp(ConnId),
}

/// Core configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Address advertised in Contact (and Via of our own requests): the SIP listen address.
    pub local_addr: SocketAddr,
    /// Server / User-Agent header value.
    pub user_agent: String,
    /// Largest accepted message in bytes (larger: 513 where a reply is possible, else dropped).
    pub max_message_size: usize,
    /// Seed for tags, branches and every other random choice.
    pub seed: u64,
}

/// A message to send.
#[derive(Clone, Debug, PartialEq)]
pub struct Transmit {
    /// Transport to send on (for TCP: the connection; if it is gone the driver drops it).
    pub transport: Transport,
    /// Destination (for UDP).
    pub to: SocketAddr,
    /// Serialized message.
    pub data: Vec<u8>,
}

/// Why a call ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndReason {
    /// The client sent BYE (we answered 200).
    ByeReceived,
    /// The client sent CANCEL before we answered (we sent 487).
    Cancelled,
    /// We hung up with BYE (its 200 arrived, or the BYE transaction timed out).
    ByeSent,
    /// Our 200 OK was never ACKed (timer H).
    AckTimeout,
    /// We rejected the INVITE with this status.
    Rejected(u16),
    /// The TCP connection carrying the dialog closed.
    TransportClosed,
}

/// Application-level events.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A new INVITE. The application must answer with [`Core::accept`] or [`Core::reject`].
    IncomingCall {
        /// Handle for later calls.
        call: CallHandle,
        /// Request-URI user part: the room name.
        room: String,
        /// From URI of the caller (without tag), e.g. `sip:alice@198.18.0.10`.
        from_uri: String,
        /// Where the request came from.
        source: SocketAddr,
        /// Transport it came in on.
        transport: Transport,
        /// SDP offer, `None` for an offerless INVITE (we offer in 200, answer comes in ACK).
        offer: Option<String>,
    },
    /// A re-INVITE inside an established dialog (hold/resume/refresh). Answer with
    /// [`Core::accept`] (or [`Core::reject`], which keeps the dialog).
    ReInvite {
        /// Call.
        call: CallHandle,
        /// New SDP offer, `None` if the re-INVITE had no body.
        offer: Option<String>,
    },
    /// Our 2xx was acknowledged. `answer` holds the SDP of an ACK (offerless-INVITE case).
    Confirmed {
        /// Call.
        call: CallHandle,
        /// SDP answer carried by the ACK, if any.
        answer: Option<String>,
    },
    /// A DTMF digit sent with SIP INFO (application/dtmf-relay), if any.
    InfoDtmf {
        /// Call.
        call: CallHandle,
        /// Digit.
        digit: char,
    },
    /// The call is over; the application frees its media.
    CallEnded {
        /// Call.
        call: CallHandle,
        /// Why.
        reason: EndReason,
    },
}

/// Counters for metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Messages parsed successfully.
    pub messages_in: u64,
    /// Malformed messages answered with 400.
    pub malformed_answered: u64,
    /// Malformed messages dropped (no reply possible).
    pub malformed_dropped: u64,
    /// Oversized messages rejected.
    pub oversized: u64,
    /// Retransmitted requests absorbed by a transaction.
    pub retransmissions_absorbed: u64,
}

/// Public view of a dialog for the admin API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallInfo {
    /// Handle.
    pub call: CallHandle,
    /// Call-ID header value.
    pub call_id: String,
    /// Room name.
    pub room: String,
    /// Remote URI (From of the INVITE).
    pub remote_uri: String,
    /// Dialog confirmed (ACK received).
    pub confirmed: bool,
}

/// Errors returned by application commands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// No such call, or it is already over.
    UnknownCall(CallHandle),
    /// The call is not in a state where this command applies (e.g. accept twice).
    InvalidState(&'static str),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}
impl std::error::Error for Error {}

/// The SIP core. Driver loop: feed `handle_datagram` / `handle_stream_data` /
/// `handle_stream_closed` / `handle_timeout`, then drain `poll_transmit` and `poll_event`,
/// then arm a timer for `poll_timeout`.
pub struct Core {
    inner: Inner,
}

impl Core {
    /// New core.
    pub fn new(config: Config) -> Self {
        Core {
            inner: Inner::new(config),
        }
    }
    /// A UDP datagram arrived.
    pub fn handle_datagram(&mut self, from: SocketAddr, data: &[u8], now: Duration) {
        self.inner.handle_datagram(from, data, now)
    }
    /// Bytes arrived on a TCP connection (framed internally by Content-Length).
    pub fn handle_stream_data(
        &mut self,
        conn: ConnId,
        from: SocketAddr,
        data: &[u8],
        now: Duration,
    ) {
        self.inner.handle_stream_data(conn, from, data, now)
    }
    /// A TCP connection closed.
    pub fn handle_stream_closed(&mut self, conn: ConnId, now: Duration) {
        self.inner.handle_stream_closed(conn, now)
    }
    /// Timers (retransmissions, timeouts) due at or before `now` fire.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.inner.handle_timeout(now)
    }
    /// Accept an incoming call or re-INVITE: sends 200 OK with `sdp` (our answer, or our offer
    /// for an offerless INVITE) and retransmits it until ACK.
    pub fn accept(&mut self, call: CallHandle, sdp: String, now: Duration) -> Result<(), Error> {
        self.inner.accept(call, sdp, now)
    }
    /// Reject a pending INVITE (or re-INVITE) with a final status (e.g. 488, 486, 503).
    pub fn reject(&mut self, call: CallHandle, status: u16, now: Duration) -> Result<(), Error> {
        self.inner.reject(call, status, None, now)
    }
    /// [`Core::reject`] with a reason phrase of our own instead of the status's standard one
    /// (e.g. `403 Room Locked`): 1 to 64 printable ASCII characters (spaces included),
    /// anything else is refused with [`Error::InvalidState`] and nothing is sent.
    pub fn reject_with_reason(
        &mut self,
        call: CallHandle,
        status: u16,
        reason: &str,
        now: Duration,
    ) -> Result<(), Error> {
        let printable = (1..=64).contains(&reason.len())
            && reason.bytes().all(|b| (0x20..0x7f).contains(&b))
            && reason.trim() == reason;
        if !printable {
            return Err(Error::InvalidState(
                "a reason phrase is 1..=64 printable ASCII characters",
            ));
        }
        self.inner.reject(call, status, Some(reason), now)
    }
    /// Hang up an established call with BYE.
    pub fn hangup(&mut self, call: CallHandle, now: Duration) -> Result<(), Error> {
        self.inner.hangup(call, now)
    }
    /// Next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.inner.out.pop_front()
    }
    /// Next application event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.inner.events.pop_front()
    }
    /// When `handle_timeout` must next be called, if any timer is armed.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.inner.poll_timeout()
    }
    /// Calls currently alive.
    pub fn calls(&self) -> Vec<CallInfo> {
        self.inner.calls()
    }
    /// Counters.
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }
    /// The TCP connections that carry a dialog or a request still unanswered (theirs not yet
    /// answered by us, or our BYE not yet answered by them). They must stay open: the
    /// dialog's requests (e.g. our BYE) and the pending responses go out or come in on them.
    /// Transactions only absorbing retransmissions (answered, e.g. an INVITE's 2xx kept for
    /// 64*T1) do not count.
    pub fn streams_in_use(&self) -> std::collections::BTreeSet<ConnId> {
        let st = &self.inner.st;
        let tcp = |t: Transport| match t {
            Transport::Tcp(c) => Some(c),
            Transport::Udp => None,
        };
        let unanswered = st
            .server_txs
            .values()
            .filter(|tx| tx.state == state::ServerTxState::Proceeding);
        st.dialogs
            .values()
            .filter_map(|d| tcp(d.transport))
            .chain(unanswered.filter_map(|tx| tcp(tx.transport)))
            .chain(st.client_txs.values().filter_map(|tx| tcp(tx.transport)))
            .collect()
    }
    /// The replicable dialog and transaction state (see [`state::CoreState`]).
    pub fn state(&self) -> &state::CoreState {
        &self.inner.st
    }
    /// A core continuing from replicated `state` (e.g. on the backup after takeover). TCP
    /// reassembly buffers and undrained output are not part of the state. Change tracking is
    /// on and starts from `state` as the baseline (whatever `state` had recorded is
    /// forgotten; the first [`Core::take_changes`] also reports the globals).
    pub fn from_state(config: Config, state: state::CoreState) -> Self {
        let mut inner = Inner::new(config);
        inner.st = state;
        inner.st.set_tracking(true);
        inner.st.clear_changes();
        Core { inner }
    }
    /// Changes to [`Core::state`] since the last call (since creation for the first call):
    /// each changed key once, carrying its current entry or its deletion, plus
    /// [`state::StateChange::Globals`] when the generator, call counter or counters moved.
    /// Order is deterministic: globals, dialogs, dialog index, server transactions, client
    /// transactions, each in key order. Cost is proportional to the number of changed keys,
    /// not to the state size; read-only work (e.g. scanning for due timers) changes nothing.
    ///
    /// Applying the result with [`state::CoreState::apply`] to a replica that was equal to the
    /// state at the previous call makes it equal to the state now.
    ///
    /// Tracking is on by default and records one entry per distinct changed key until drained:
    /// a replicating primary calls this after every input or command; a server without a
    /// backup calls [`Core::set_change_tracking`]`(false)` instead.
    pub fn take_changes(&mut self) -> Vec<state::StateChange> {
        if !self.inner.tracking {
            return Vec::new();
        }
        self.inner.st.take_changes(&mut self.inner.last_globals)
    }
    /// Switch change tracking on or off (default on). Off forgets what was recorded, keeps
    /// nothing from then on, and [`Core::take_changes`] returns nothing; after switching it
    /// back on, a replica needs
    /// [`state::CoreState::to_changes`] again, since changes made meanwhile are lost.
    pub fn set_change_tracking(&mut self, on: bool) {
        self.inner.tracking = on;
        self.inner.st.set_tracking(on);
        self.inner.last_globals = None;
    }
}
