//! Serializable dialog and transaction state. Everything a hot-standby backup needs to
//! continue the calls lives here (TCP reassembly buffers and queued output do not).
//!
//! # Change tracking
//!
//! The keyed parts of [`CoreState`] are [`Tracked`] maps: every insert, removal or mutable
//! access records its key, read-only access does not. [`crate::Core::take_changes`] turns the
//! recorded keys into [`StateChange`]s (one per changed key, plus [`StateChange::Globals`]
//! when the generator, call counter or counters moved) at a cost proportional to the number
//! of changed keys, not to the number of calls. A backup replays them with
//! [`CoreState::apply`]; a backup that (re)connects starts from [`CoreState::to_changes`].
//!
//! ```
//! use sip_core::state::CoreState;
//! use sip_core::{Config, Core};
//!
//! let config = Config {
//!     local_addr: "198.18.0.1:5060".parse().unwrap(),
//!     user_agent: "Understudy".into(),
//!     max_message_size: 8192,
//!     seed: 7,
//! };
//! let mut primary = Core::new(config);
//! let mut replica = CoreState::new(0);
//! for change in primary.state().to_changes() {
//!     replica.apply(change);
//! }
//! // ... after every input to `primary`:
//! for change in primary.take_changes() {
//!     replica.apply(change);
//! }
//! assert_eq!(&replica, primary.state());
//! ```

use crate::{CallHandle, Stats, Transport};
use rand_core::SeedableRng;
use rand_xoshiro::SplitMix64;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Borrow;
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

/// The call an entry of a [`Tracked`] map belongs to: how [`StateChange::call`] groups
/// changes per call, and what a deletion remembers about the entry it removed.
pub trait Owned {
    /// The owning call, if any (an OPTIONS or REGISTER transaction has none).
    fn owner(&self) -> Option<CallHandle>;
}

impl Owned for Dialog {
    fn owner(&self) -> Option<CallHandle> {
        Some(self.call)
    }
}

impl Owned for CallHandle {
    fn owner(&self) -> Option<CallHandle> {
        Some(*self)
    }
}

impl Owned for ServerTx {
    fn owner(&self) -> Option<CallHandle> {
        self.call
    }
}

impl Owned for ClientTx {
    fn owner(&self) -> Option<CallHandle> {
        Some(self.call)
    }
}

/// A `BTreeMap` that records which keys were modified since the last drain.
///
/// Reading goes through `Deref` to the map (`get`, `iter`, `values`, `len`, ...) and never
/// records anything. [`Tracked::get_mut`], [`Tracked::insert`], [`Tracked::remove`],
/// [`Tracked::retain`] (only the removed keys) and `Extend` / `FromIterator` record the keys
/// they touch; a removal also remembers the removed entry's owning call. There is no
/// `values_mut` / `iter_mut`: mutate one entry at a time so that only entries actually
/// modified are recorded.
///
/// The recorded set holds at most one record per distinct key and is emptied by
/// [`crate::Core::take_changes`]. A primary must drain it regularly (after every input is
/// what replication does); a standalone server without a backup switches recording off with
/// [`crate::Core::set_change_tracking`] so that the set cannot grow with every call ever made.
///
/// Serializes exactly like the `BTreeMap` (the record is not part of the state); equality and
/// `Debug` look at the map only.
#[derive(Clone)]
pub struct Tracked<K: Ord, V> {
    map: BTreeMap<K, V>,
    /// Modified keys; for a key removed last, the removed entry's owner.
    dirty: BTreeMap<K, Option<CallHandle>>,
    tracking: bool,
}

impl<K: Ord, V> Default for Tracked<K, V> {
    fn default() -> Self {
        Tracked {
            map: BTreeMap::new(),
            dirty: BTreeMap::new(),
            tracking: true,
        }
    }
}

impl<K: Ord + Clone, V: Owned> Tracked<K, V> {
    /// Empty map, recording on.
    pub fn new() -> Self {
        Self::default()
    }

    /// Mutable access to one entry; records the key if it exists.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        if self.tracking {
            let (k, v) = self.map.get_key_value(key)?;
            let (k, owner) = (k.clone(), v.owner());
            self.dirty.insert(k, owner);
        }
        self.map.get_mut(key)
    }

    /// Insert or replace an entry; records the key.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        if self.tracking {
            self.dirty.insert(key.clone(), value.owner());
        }
        self.map.insert(key, value)
    }

    /// Remove an entry; records the key and the removed entry's owner if it existed.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let (k, v) = self.map.remove_entry(key)?;
        if self.tracking {
            self.dirty.insert(k, v.owner());
        }
        Some(v)
    }

    /// Keep the entries for which `keep` returns true; records each removed key. `keep` gets
    /// shared access only, so kept entries are not recorded.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        let (tracking, dirty) = (self.tracking, &mut self.dirty);
        self.map.retain(|k, v| {
            let kept = keep(k, v);
            if !kept && tracking {
                dirty.insert(k.clone(), v.owner());
            }
            kept
        });
    }

    /// Turn recording on or off; switching it off forgets what was recorded.
    pub fn set_tracking(&mut self, on: bool) {
        self.tracking = on;
        if !on {
            self.dirty.clear();
        }
    }

    /// Forget what was recorded (the current contents become the baseline).
    pub fn clear_changes(&mut self) {
        self.dirty.clear();
    }

    /// Number of recorded keys.
    pub fn pending_changes(&self) -> usize {
        self.dirty.len()
    }

    /// Drain the recorded keys in key order: `(key, current entry or None if removed, owner)`
    /// where owner is the current entry's owner, or for a removed key the owner it had when it
    /// was removed. Cost: the number of recorded keys (times a map lookup).
    pub(crate) fn drain_changes<R>(
        &mut self,
        mut f: impl FnMut(K, Option<&V>, Option<CallHandle>) -> R,
    ) -> Vec<R> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .map(|(k, removed_owner)| match self.map.get(&k) {
                Some(v) => {
                    let owner = v.owner();
                    f(k, Some(v), owner)
                }
                None => f(k, None, removed_owner),
            })
            .collect()
    }

    /// Upsert or delete without recording (a replica applying replicated changes).
    pub(crate) fn apply(&mut self, key: K, value: Option<V>) {
        match value {
            Some(v) => {
                self.map.insert(key, v);
            }
            None => {
                self.map.remove(&key);
            }
        }
    }
}

impl<K: Ord, V> std::ops::Deref for Tracked<K, V> {
    type Target = BTreeMap<K, V>;
    fn deref(&self) -> &BTreeMap<K, V> {
        &self.map
    }
}

impl<'a, K: Ord, V> IntoIterator for &'a Tracked<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::collections::btree_map::Iter<'a, K, V>;
    fn into_iter(self) -> Self::IntoIter {
        self.map.iter()
    }
}

impl<K: Ord + Clone, V: Owned> Extend<(K, V)> for Tracked<K, V> {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl<K: Ord + Clone, V: Owned> FromIterator<(K, V)> for Tracked<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut t = Tracked::new();
        t.extend(iter);
        t
    }
}

impl<K: Ord + Clone, V: Owned> From<BTreeMap<K, V>> for Tracked<K, V> {
    /// Every key of `map` counts as changed.
    fn from(map: BTreeMap<K, V>) -> Self {
        map.into_iter().collect()
    }
}

impl<K: Ord, V: PartialEq> PartialEq for Tracked<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl<K: Ord + std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for Tracked<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.map.fmt(f)
    }
}

impl<K: Ord + Serialize, V: Serialize> Serialize for Tracked<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.map.serialize(s)
    }
}

impl<'de, K: Ord + Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de> for Tracked<K, V> {
    /// A deserialized map starts with nothing recorded.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Tracked {
            map: BTreeMap::deserialize(d)?,
            dirty: BTreeMap::new(),
            tracking: true,
        })
    }
}

/// One change to the replicable state, keyed like the state itself: the `Option` field is
/// the new entry (upsert when `Some`, delete when `None`). Every keyed variant also names the
/// call the entry belongs to ([`StateChange::call`]); for a delete it is the owner the entry
/// had when it was removed, so a consumer can group deletes per call as well.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StateChange {
    /// Generator, next call handle and counters (changes on nearly every message).
    Globals {
        /// [`CoreState::rng`].
        rng: Rng,
        /// [`CoreState::next_call`].
        next_call: u64,
        /// [`CoreState::stats`].
        stats: Stats,
    },
    /// An entry of [`CoreState::dialogs`].
    Dialog {
        /// Key (and owner).
        call: CallHandle,
        /// New dialog, `None`: removed.
        dialog: Option<Dialog>,
    },
    /// An entry of [`CoreState::dialog_index`].
    DialogIndex {
        /// Key (`call-id \n local-tag`).
        key: String,
        /// The handle the key points to (for a delete: pointed to). Also the owner.
        call: CallHandle,
        /// `true`: upsert `key -> call`; `false`: delete `key`.
        present: bool,
    },
    /// An entry of [`CoreState::server_txs`].
    ServerTx {
        /// Key (branch | sent-by | method).
        key: String,
        /// Owner: `tx.call` of the new entry, or of the removed one for a delete.
        call: Option<CallHandle>,
        /// New transaction, `None`: removed.
        tx: Option<ServerTx>,
    },
    /// An entry of [`CoreState::client_txs`].
    ClientTx {
        /// Key (our branch).
        branch: String,
        /// Owner: `tx.call` of the new entry, or of the removed one for a delete.
        call: CallHandle,
        /// New transaction, `None`: removed.
        tx: Option<ClientTx>,
    },
}

impl StateChange {
    /// The call this change belongs to, if any: `Dialog` its handle, `DialogIndex` the handle
    /// it points to (pointed to, for a delete), `ServerTx` / `ClientTx` `tx.call` (for a
    /// delete, the removed transaction's). `None` for `Globals` and for transactions outside
    /// any call (OPTIONS, REGISTER, rejected requests).
    pub fn call(&self) -> Option<CallHandle> {
        match self {
            StateChange::Globals { .. } => None,
            StateChange::Dialog { call, .. }
            | StateChange::DialogIndex { call, .. }
            | StateChange::ClientTx { call, .. } => Some(*call),
            StateChange::ServerTx { call, .. } => *call,
        }
    }
}

/// The globals as last reported by [`CoreState::take_changes`].
pub(crate) type Globals = (Rng, u64, Stats);

/// All replicable state of a [`crate::Core`].
///
/// Serializes as plain maps; equality compares the state only, never what change tracking
/// recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CoreState {
    /// PRNG.
    pub rng: Rng,
    /// Next call handle.
    pub next_call: u64,
    /// Dialogs by handle.
    pub dialogs: Tracked<CallHandle, Dialog>,
    /// `call-id \n local-tag` -> handle.
    pub dialog_index: Tracked<String, CallHandle>,
    /// Server transactions by key (branch | sent-by | method).
    pub server_txs: Tracked<String, ServerTx>,
    /// Client transactions by branch.
    pub client_txs: Tracked<String, ClientTx>,
    /// Counters.
    pub stats: Stats,
}

impl CoreState {
    /// Fresh state.
    pub fn new(seed: u64) -> Self {
        CoreState {
            rng: Rng::new(seed),
            next_call: 1,
            dialogs: Tracked::new(),
            dialog_index: Tracked::new(),
            server_txs: Tracked::new(),
            client_txs: Tracked::new(),
            stats: Stats::default(),
        }
    }

    fn globals(&self) -> Globals {
        (self.rng.clone(), self.next_call, self.stats.clone())
    }

    /// Apply one change (a backup applying what the primary replicated). Nothing is recorded
    /// by change tracking; applying a delete of an absent key does nothing.
    pub fn apply(&mut self, change: StateChange) {
        match change {
            StateChange::Globals {
                rng,
                next_call,
                stats,
            } => {
                self.rng = rng;
                self.next_call = next_call;
                self.stats = stats;
            }
            StateChange::Dialog { call, dialog } => self.dialogs.apply(call, dialog),
            StateChange::DialogIndex { key, call, present } => {
                self.dialog_index.apply(key, present.then_some(call))
            }
            StateChange::ServerTx { key, tx, .. } => self.server_txs.apply(key, tx),
            StateChange::ClientTx { branch, tx, .. } => self.client_txs.apply(branch, tx),
        }
    }

    /// The whole state as changes (a backup that (re)connects gets all of them), in a
    /// deterministic order: `Globals`, then dialogs, dialog index, server and client
    /// transactions, each in key order. Applying them to any `CoreState` whose maps are empty
    /// reproduces `self`.
    pub fn to_changes(&self) -> Vec<StateChange> {
        let (rng, next_call, stats) = self.globals();
        let mut v = vec![StateChange::Globals {
            rng,
            next_call,
            stats,
        }];
        v.extend(self.dialogs.iter().map(|(c, d)| StateChange::Dialog {
            call: *c,
            dialog: Some(d.clone()),
        }));
        v.extend(
            self.dialog_index
                .iter()
                .map(|(k, c)| StateChange::DialogIndex {
                    key: k.clone(),
                    call: *c,
                    present: true,
                }),
        );
        v.extend(self.server_txs.iter().map(|(k, tx)| StateChange::ServerTx {
            key: k.clone(),
            call: tx.call,
            tx: Some(tx.clone()),
        }));
        v.extend(self.client_txs.iter().map(|(b, tx)| StateChange::ClientTx {
            branch: b.clone(),
            call: tx.call,
            tx: Some(tx.clone()),
        }));
        v
    }

    /// Changes since the last drain (see [`crate::Core::take_changes`]). `last` holds the
    /// globals last reported (`None`: report them).
    pub(crate) fn take_changes(&mut self, last: &mut Option<Globals>) -> Vec<StateChange> {
        let mut v = Vec::new();
        let now = self.globals();
        if last.as_ref() != Some(&now) {
            let (rng, next_call, stats) = now.clone();
            v.push(StateChange::Globals {
                rng,
                next_call,
                stats,
            });
            *last = Some(now);
        }
        v.extend(
            self.dialogs
                .drain_changes(|call, d, _| StateChange::Dialog {
                    call,
                    dialog: d.cloned(),
                }),
        );
        // A removed index entry always recorded its handle (`Owned for CallHandle` is `Some`).
        v.extend(
            self.dialog_index
                .drain_changes(|key, c, owner| {
                    let call = c.copied().or(owner)?;
                    Some(StateChange::DialogIndex {
                        key,
                        call,
                        present: c.is_some(),
                    })
                })
                .into_iter()
                .flatten(),
        );
        v.extend(
            self.server_txs
                .drain_changes(|key, tx, call| StateChange::ServerTx {
                    key,
                    call,
                    tx: tx.cloned(),
                }),
        );
        // Likewise a removed client transaction always recorded its call.
        v.extend(
            self.client_txs
                .drain_changes(|branch, tx, owner| {
                    let call = tx.map(|t| t.call).or(owner)?;
                    Some(StateChange::ClientTx {
                        branch,
                        call,
                        tx: tx.cloned(),
                    })
                })
                .into_iter()
                .flatten(),
        );
        v
    }

    /// Switch change recording on or off for every map (off also forgets what was recorded).
    pub(crate) fn set_tracking(&mut self, on: bool) {
        self.dialogs.set_tracking(on);
        self.dialog_index.set_tracking(on);
        self.server_txs.set_tracking(on);
        self.client_txs.set_tracking(on);
    }

    /// Forget what was recorded in every map.
    pub(crate) fn clear_changes(&mut self) {
        self.dialogs.clear_changes();
        self.dialog_index.clear_changes();
        self.server_txs.clear_changes();
        self.client_txs.clear_changes();
    }

    /// Keys recorded as changed and not yet drained (all maps together).
    pub fn pending_changes(&self) -> usize {
        self.dialogs.pending_changes()
            + self.dialog_index.pending_changes()
            + self.server_txs.pending_changes()
            + self.client_txs.pending_changes()
    }
}

/// Index key of a dialog.
pub(crate) fn dialog_key(call_id: &str, local_tag: &str) -> String {
    format!("{call_id}\n{local_tag}")
}
