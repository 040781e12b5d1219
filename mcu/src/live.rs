//! Live updates for the admin page: `GET /api/ws`, a WebSocket that starts with a `hello`
//! (the rooms as `GET /api/rooms` shows them, `GET /api/status`, the recent events) and then
//! pushes what changed.
//!
//! One driver task ([`spawn`]) reads [`Shared`] every [`TICK`] (the room views, the
//! hot-standby status, the new entries of the event log: exactly what the HTTP API reads, no
//! coupling to the room tasks or the server task), diffs it against the tick before
//! ([`Differ`], a pure function of its inputs, unit-tested here) and broadcasts the messages,
//! serialized once, to every socket on a bounded tokio broadcast channel; every tick ends with
//! `levels`, rooms or not, which doubles as the clients' heartbeat. A socket that falls more
//! than [`QUEUE`] messages behind is closed (code 1013, "try again later"), one whose client
//! does not take a message within [`SEND_TIMEOUT`] is dropped; both are counted
//! (`mcu_ws_slow_dropped`): nothing ever waits for a slow client. At most [`MAX_SOCKETS`]
//! sockets at once (more get 503, counted in `mcu_ws_rejected`); a ping every [`PING_EVERY`];
//! a client silent for [`IDLE_TIMEOUT`] (not even a pong) is closed; shutdown closes every
//! socket with 1001 after a last tick ([`Driver::stop`]).
//!
//! The diff works on the JSON the API serves, not on the Rust types: a field the views gain
//! (a participant's `muted`, a room's `locked`) is diffed without a change here. Message
//! types ([`Message`], the `type` field): `hello`, `room_open`, `room_update`, `room_close`,
//! `join`, `leave`, `mute`, `unmute`, `participant`, `speaker`, `dtmf`, `media_started`,
//! `status`, `takeover`, `levels`.

use crate::state::{unix_ms, ApiEvent, Shared};
use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mixer::ParticipantId;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, OwnedSemaphorePermit, Semaphore};

/// How often the driver reads the shared state (and sends `levels`).
pub const TICK: Duration = Duration::from_millis(100);
/// How often the state is read and diffed while no socket is open.
pub const IDLE_TICK: Duration = Duration::from_secs(1);

/// Live sockets open at once; the next one gets 503.
pub const MAX_SOCKETS: usize = 32;

/// Messages a socket may fall behind (about 10 s of `levels` alone) before it is closed.
pub const QUEUE: usize = 128;

/// Longest a client may take to accept one message before its socket is closed.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// A ping to every socket this often.
pub const PING_EVERY: Duration = Duration::from_secs(10);

/// A socket from which nothing arrived (not even a pong) for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(35);

/// Events the `hello` carries (the newest), and the hub keeps for it.
pub const HELLO_EVENTS: usize = 200;

/// A `status` message goes out at once when one of these fields changes; a change of any
/// other field (counters, replication lag) at most once per [`STATUS_EVERY_MS`].
const STATUS_KEY_FIELDS: [&str; 5] = ["role", "peer", "synced", "protected", "last_takeover"];

/// Least time between two `status` messages for counters alone, ms.
pub const STATUS_EVERY_MS: u64 = 1000;

/// The participant fields that change all the time: sent in `levels` (those in
/// [`LEVEL_FIELDS`]) or left to `GET /api/rooms`, never a `participant` message.
const VOLATILE_FIELDS: [&str; 16] = [
    "level_dbov",
    "speaking",
    "in_mix",
    "packets_in",
    "packets_out",
    "octets_out",
    "lost",
    "jitter_ms",
    "dropped_invalid",
    "dropped_late",
    "rtcp_invalid",
    "rtt_ms",
    "remote_fraction_lost",
    "concealed_frames",
    "fec_recovered",
    "jitter_target_ms",
];

/// What a `levels` message carries per participant.
const LEVEL_FIELDS: [&str; 9] = [
    "level_dbov",
    "speaking",
    "in_mix",
    "lost",
    "jitter_ms",
    "remote_fraction_lost",
    "rtt_ms",
    "packets_in",
    "packets_out",
];

/// One message on the socket, as JSON with its kind in `type` (`snake_case` of the variant).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// The first message on every socket: the state the messages after it change.
    Hello {
        /// Every room, as `GET /api/rooms` shows it.
        rooms: Vec<Value>,
        /// As `GET /api/status`.
        status: Value,
        /// The recent event-like messages (`join`, `dtmf`, `takeover`, ...), oldest first.
        events: Vec<Message>,
        /// The server's wall clock, ms since the Unix epoch.
        now_unix_ms: u64,
        /// How often `levels` come, ms.
        tick_ms: u64,
    },
    /// A room appeared (its participants follow as `join`s).
    RoomOpen {
        /// Room name.
        room: String,
        /// The room as `GET /api/rooms` shows it, without `participants` and `active_speaker`.
        info: Value,
        /// When it was seen, ms since the Unix epoch.
        at_unix_ms: u64,
    },
    /// A room's own fields changed (e.g. `locked`, `max_participants`).
    RoomUpdate {
        /// Room name.
        room: String,
        /// The room's fields now (as in `room_open`).
        info: Value,
        /// When it was seen.
        at_unix_ms: u64,
    },
    /// A room is gone (its participants' `leave`s came first).
    RoomClose {
        /// Room name.
        room: String,
        /// When it was seen.
        at_unix_ms: u64,
    },
    /// A participant is in a room.
    Join {
        /// Room name.
        room: String,
        /// The participant as `GET /api/rooms` shows it.
        participant: Value,
        /// When it was seen.
        at_unix_ms: u64,
    },
    /// A participant left.
    Leave {
        /// Room name.
        room: String,
        /// Participant id.
        id: ParticipantId,
        /// Its SIP URI or display name.
        name: String,
        /// When it was seen.
        at_unix_ms: u64,
    },
    /// A participant was muted.
    Mute {
        /// Room name.
        room: String,
        /// Participant id.
        id: ParticipantId,
        /// Its SIP URI or display name.
        name: String,
        /// When it was seen.
        at_unix_ms: u64,
    },
    /// A participant was unmuted.
    Unmute {
        /// Room name.
        room: String,
        /// Participant id.
        id: ParticipantId,
        /// Its SIP URI or display name.
        name: String,
        /// When it was seen.
        at_unix_ms: u64,
    },
    /// A participant's other fields changed (codec, direction, SSRC...): the whole view.
    Participant {
        /// Room name.
        room: String,
        /// The participant as `GET /api/rooms` shows it.
        participant: Value,
    },
    /// The room's active speaker changed (from the event log).
    Speaker {
        /// Room name.
        room: String,
        /// The new active speaker, `null` when the room fell silent.
        speaker: Option<ParticipantId>,
        /// When the room reported it.
        at_unix_ms: u64,
    },
    /// An RFC 4733 DTMF digit (from the event log).
    Dtmf {
        /// Room name.
        room: String,
        /// Who pressed it.
        participant: ParticipantId,
        /// The digit.
        digit: char,
        /// Its duration, ms (0 for SIP INFO).
        duration_ms: u32,
        /// When it was reported.
        at_unix_ms: u64,
    },
    /// A participant's first RTP packet, or its switch to another SSRC (event log).
    MediaStarted {
        /// Room name.
        room: String,
        /// Who.
        participant: ParticipantId,
        /// Its SSRC.
        ssrc: u32,
        /// When it was reported.
        at_unix_ms: u64,
    },
    /// `GET /api/status` changed.
    Status {
        /// As `GET /api/status`.
        status: Value,
    },
    /// This node took over (`last_takeover` of `/api/status` changed).
    Takeover {
        /// As `last_takeover` in `/api/status`: `at_unix_ms`, `duration_ms`, `calls`, `rooms`.
        takeover: Value,
    },
    /// Every [`TICK`], the last message of each tick (empty `rooms` when there is none, a
    /// heartbeat): per room, its active speaker and per participant id its level and link
    /// quality.
    Levels {
        /// Room name → its levels.
        rooms: BTreeMap<String, RoomLevels>,
    },
}

impl Message {
    /// Whether the message is an event worth keeping in a log (and in the next `hello`).
    pub fn is_event(&self) -> bool {
        !matches!(
            self,
            Message::Hello { .. }
                | Message::Status { .. }
                | Message::Levels { .. }
                | Message::Participant { .. }
        )
    }
}

/// One room's part of a `levels` message.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RoomLevels {
    /// The active speaker now.
    pub active_speaker: Value,
    /// Participant id → `level_dbov`, `speaking`, `in_mix`, `lost`, `jitter_ms`,
    /// `remote_fraction_lost`, `rtt_ms`, `packets_in`, `packets_out`.
    pub participants: BTreeMap<String, Value>,
}

/// What the driver read at one tick: the JSON of `GET /api/rooms` by room name, and of
/// `GET /api/status`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Room name → the room as `GET /api/rooms` shows it.
    pub rooms: BTreeMap<String, Value>,
    /// As `GET /api/status`.
    pub status: Value,
}

impl Snapshot {
    /// Read the shared state (the room views one at a time, then the status).
    pub fn read(shared: &Shared) -> Snapshot {
        let views: Vec<_> = shared.rooms.lock().unwrap().values().cloned().collect();
        let rooms = views
            .iter()
            .filter_map(|v| {
                let v = v.lock().unwrap().clone();
                Some((v.name.clone(), serde_json::to_value(&v).ok()?))
            })
            .collect();
        let status = shared.status.lock().unwrap().clone();
        Snapshot {
            rooms,
            status: serde_json::to_value(&status).unwrap_or(Value::Null),
        }
    }
}

/// The participants of a room's JSON, by id (the JSON keys).
fn participants(room: &Value) -> impl Iterator<Item = (&String, &Value)> {
    room.get("participants")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
}

/// A room's own fields: its JSON without `participants` and `active_speaker`.
fn room_info(room: &Value) -> Value {
    let mut m = room.as_object().cloned().unwrap_or_default();
    m.remove("participants");
    m.remove("active_speaker");
    Value::Object(m)
}

/// A participant's fields that change rarely (no levels, counters, nor `muted`).
fn identity(p: &Value) -> Map<String, Value> {
    let mut m = p.as_object().cloned().unwrap_or_default();
    for k in VOLATILE_FIELDS.iter().chain(&["muted"]) {
        m.remove(*k);
    }
    m
}

fn id_of(key: &str, p: &Value) -> ParticipantId {
    p.get("id")
        .and_then(Value::as_u64)
        .or_else(|| key.parse().ok())
        .unwrap_or_default()
}

fn name_of(p: &Value) -> String {
    p.get("sip_uri")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn muted(p: &Value) -> bool {
    p.get("muted").and_then(Value::as_bool).unwrap_or(false)
}

fn levels_of(p: &Value) -> Value {
    let m: Map<String, Value> = LEVEL_FIELDS
        .iter()
        .filter_map(|k| Some((k.to_string(), p.get(*k)?.clone())))
        .collect();
    Value::Object(m)
}

/// Whether a status change must go out at once (see [`STATUS_KEY_FIELDS`]).
fn status_key_changed(a: &Value, b: &Value) -> bool {
    STATUS_KEY_FIELDS.iter().any(|k| a.get(*k) != b.get(*k))
}

/// The pure core of the live updates: from the last [`Snapshot`], the next one and the
/// event-log entries since, the messages that bring a client from one to the other. It
/// reads no clock (the time comes in) and does no I/O.
#[derive(Clone, Debug, Default)]
pub struct Differ {
    prev: Snapshot,
    /// The highest event-log `seq` turned into a message.
    last_seq: u64,
    /// The status the clients last got, and when.
    sent_status: Value,
    sent_status_at: u64,
}

impl Differ {
    /// A differ whose clients have seen nothing yet (the first step sends everything).
    pub fn new() -> Differ {
        Differ::default()
    }

    /// The state the clients have after the last step (what a `hello` shows).
    pub fn snapshot(&self) -> &Snapshot {
        &self.prev
    }

    /// The status the clients have (the last `status` sent).
    pub fn status(&self) -> &Value {
        &self.sent_status
    }

    /// The highest event-log `seq` already sent: the next step wants the entries after it.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// One tick: the messages from the last snapshot to `next`, plus one per event-log entry
    /// of `events` after [`Differ::last_seq`] (older ones are ignored), at `now_unix_ms`.
    /// Order: rooms and participants, events, status (and takeover), levels.
    pub fn step(&mut self, next: Snapshot, events: &[ApiEvent], now_unix_ms: u64) -> Vec<Message> {
        let at = now_unix_ms;
        let mut out = Vec::new();
        let none = Value::Null;
        for (name, room) in &next.rooms {
            let before = self.prev.rooms.get(name);
            match before {
                None => out.push(Message::RoomOpen {
                    room: name.clone(),
                    info: room_info(room),
                    at_unix_ms: at,
                }),
                Some(b) if room_info(b) != room_info(room) => out.push(Message::RoomUpdate {
                    room: name.clone(),
                    info: room_info(room),
                    at_unix_ms: at,
                }),
                Some(_) => {}
            }
            let before = before.unwrap_or(&none);
            let old: BTreeMap<_, _> = participants(before).collect();
            for (key, p) in participants(room) {
                let Some(q) = old.get(key) else {
                    out.push(Message::Join {
                        room: name.clone(),
                        participant: p.clone(),
                        at_unix_ms: at,
                    });
                    continue;
                };
                if identity(q) != identity(p) {
                    out.push(Message::Participant {
                        room: name.clone(),
                        participant: p.clone(),
                    });
                }
                let (id, name_p) = (id_of(key, p), name_of(p));
                match (muted(q), muted(p)) {
                    (false, true) => out.push(Message::Mute {
                        room: name.clone(),
                        id,
                        name: name_p,
                        at_unix_ms: at,
                    }),
                    (true, false) => out.push(Message::Unmute {
                        room: name.clone(),
                        id,
                        name: name_p,
                        at_unix_ms: at,
                    }),
                    _ => {}
                }
            }
            let now: BTreeMap<_, _> = participants(room).collect();
            for (key, q) in old.iter().filter(|(k, _)| !now.contains_key(*k)) {
                out.push(Message::Leave {
                    room: name.clone(),
                    id: id_of(key, q),
                    name: name_of(q),
                    at_unix_ms: at,
                });
            }
        }
        for (name, room) in &self.prev.rooms {
            if next.rooms.contains_key(name) {
                continue;
            }
            for (key, q) in participants(room) {
                out.push(Message::Leave {
                    room: name.clone(),
                    id: id_of(key, q),
                    name: name_of(q),
                    at_unix_ms: at,
                });
            }
            out.push(Message::RoomClose {
                room: name.clone(),
                at_unix_ms: at,
            });
        }
        let after = self.last_seq;
        for e in events.iter().filter(|e| e.seq > after) {
            self.last_seq = self.last_seq.max(e.seq);
            let room = e.room.clone();
            let at_unix_ms = e.at_unix_ms;
            out.push(match e.event {
                mixer::Event::ActiveSpeakerChanged { speaker } => Message::Speaker {
                    room,
                    speaker,
                    at_unix_ms,
                },
                mixer::Event::Dtmf {
                    participant,
                    digit,
                    duration_ms,
                } => Message::Dtmf {
                    room,
                    participant,
                    digit,
                    duration_ms,
                    at_unix_ms,
                },
                mixer::Event::MediaStarted { participant, ssrc } => Message::MediaStarted {
                    room,
                    participant,
                    ssrc,
                    at_unix_ms,
                },
            });
        }
        if next.status != self.sent_status {
            let key = status_key_changed(&self.sent_status, &next.status);
            let due = at.saturating_sub(self.sent_status_at) >= STATUS_EVERY_MS;
            if key || due {
                let takeover = next.status.get("last_takeover").unwrap_or(&none);
                if !takeover.is_null()
                    && Some(takeover) != self.sent_status.get("last_takeover")
                    // A status read for the first time is the state, not news.
                    && !self.sent_status.is_null()
                {
                    out.push(Message::Takeover {
                        takeover: takeover.clone(),
                    });
                }
                out.push(Message::Status {
                    status: next.status.clone(),
                });
                self.sent_status = next.status.clone();
                self.sent_status_at = at;
            }
        }
        let levels: BTreeMap<String, RoomLevels> = next
            .rooms
            .iter()
            .filter(|(_, r)| participants(r).next().is_some())
            .map(|(name, r)| {
                let parts = participants(r).map(|(k, p)| (k.clone(), levels_of(p)));
                let l = RoomLevels {
                    active_speaker: r.get("active_speaker").cloned().unwrap_or(Value::Null),
                    participants: parts.collect(),
                };
                (name.clone(), l)
            })
            .collect();
        // Every tick, rooms or not: the page's heartbeat (a socket silent for a few ticks is
        // dead, e.g. its node was killed and the service address moved).
        out.push(Message::Levels { rooms: levels });
        self.prev = next;
        out
    }
}

/// The event-log entries after `seq`, oldest first (the log is in `seq` order).
pub fn events_after(log: &VecDeque<ApiEvent>, seq: u64) -> Vec<ApiEvent> {
    let newer = log.iter().rev().take_while(|e| e.seq > seq).count();
    log.iter().skip(log.len() - newer).cloned().collect()
}

/// Where the sockets get their messages: the broadcast channel, the state the last tick
/// left (for `hello`), the recent events and the socket limit. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Mutex<HubState>>,
    sockets: Arc<Semaphore>,
    /// Told when a socket subscribes (the driver's idle sleep ends).
    woken: Arc<tokio::sync::Notify>,
}

struct HubState {
    /// `None` once closed (shutdown): the sockets' receivers then end.
    tx: Option<broadcast::Sender<Utf8Bytes>>,
    differ: Differ,
    recent: VecDeque<Message>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            inner: Arc::new(Mutex::new(HubState {
                tx: Some(broadcast::channel(QUEUE).0),
                differ: Differ::new(),
                recent: VecDeque::new(),
            })),
            sockets: Arc::new(Semaphore::new(MAX_SOCKETS)),
            woken: Arc::new(tokio::sync::Notify::new()),
        }
    }
}

impl Hub {
    /// Diff `next` (and the new events) against the last tick and broadcast the messages.
    /// Under one lock with [`Hub::subscribe`]: a socket's `hello` and the messages after it
    /// follow each other with nothing lost or repeated.
    pub fn tick(&self, next: Snapshot, events: &[ApiEvent], now_unix_ms: u64) {
        let mut st = self.inner.lock().unwrap();
        let msgs = st.differ.step(next, events, now_unix_ms);
        for m in msgs {
            if let Some(tx) = &st.tx {
                // Nobody listening is not an error.
                if tx.receiver_count() > 0 {
                    if let Ok(text) = serde_json::to_string(&m) {
                        let _ = tx.send(Utf8Bytes::from(text));
                    }
                }
            }
            if m.is_event() {
                if st.recent.len() >= HELLO_EVENTS {
                    st.recent.pop_front();
                }
                st.recent.push_back(m);
            }
        }
    }

    /// Returns once a socket subscribed ([`Hub::subscribe`]) since the last call returned (at
    /// once if one did meanwhile).
    pub async fn subscribed(&self) {
        self.woken.notified().await
    }

    /// Sockets subscribed now.
    pub fn subscribers(&self) -> usize {
        let st = self.inner.lock().unwrap();
        st.tx.as_ref().map_or(0, |tx| tx.receiver_count())
    }

    /// The highest event-log `seq` already broadcast.
    pub fn last_seq(&self) -> u64 {
        self.inner.lock().unwrap().differ.last_seq()
    }

    /// A receiver for the messages after now, and the `hello` (JSON) that comes before them;
    /// `None` once the hub is closed.
    pub fn subscribe(&self, now_unix_ms: u64) -> Option<(broadcast::Receiver<Utf8Bytes>, String)> {
        let st = self.inner.lock().unwrap();
        let rx = st.tx.as_ref()?.subscribe();
        self.woken.notify_one();
        let snap = st.differ.snapshot();
        let hello = Message::Hello {
            rooms: snap.rooms.values().cloned().collect(),
            status: st.differ.status().clone(),
            events: st.recent.iter().cloned().collect(),
            now_unix_ms,
            tick_ms: TICK.as_millis() as u64,
        };
        Some((rx, serde_json::to_string(&hello).ok()?))
    }

    /// Close every socket (code 1001, "going away") and refuse new ones: shutdown.
    pub fn close(&self) {
        self.inner.lock().unwrap().tx = None;
    }
}

/// The running driver; [`Driver::stop`] ends it and closes the sockets.
pub struct Driver {
    task: tokio::task::JoinHandle<()>,
    shared: Shared,
}

impl Driver {
    /// Stop ticking and close every socket, after a last tick: what happened since the
    /// previous one (the leaves of a shutdown) reaches the sockets before their close.
    pub fn stop(self) {
        self.task.abort();
        tick(&self.shared);
        self.shared.live.close();
    }
}

/// Start the driver: a first tick now (a socket that connects at once gets the state in its
/// `hello`), then one every [`TICK`].
pub fn spawn(shared: Shared) -> Driver {
    tick(&shared);
    let driver_shared = shared.clone();
    let task = tokio::spawn(async move {
        let shared = driver_shared;
        let mut every = tokio::time::interval(TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            if shared.live.subscribers() == 0 {
                // Nobody watching: the state is still followed (a socket's hello shows it,
                // and the messages after it are diffs from it), once per IDLE_TICK instead
                // of every TICK, and the task sleeps in between: reading and diffing every
                // room view ten times a second cost ~12 % of the server's CPU at 50 calls
                // (perf, scripts/bench-ft 50), and waking ten times a second for nothing
                // was a tenth of a standing-by backup's wake-ups. A socket that subscribes
                // wakes it at once.
                tokio::select! {
                    _ = tokio::time::sleep(IDLE_TICK) => {}
                    _ = shared.live.subscribed() => {}
                }
            } else {
                every.tick().await;
            }
            tick(&shared);
        }
    });
    Driver { task, shared }
}

fn tick(shared: &Shared) {
    let snap = Snapshot::read(shared);
    let seq = shared.live.last_seq();
    let events = events_after(&shared.events.lock().unwrap(), seq);
    shared.live.tick(snap, &events, unix_ms());
}

/// Largest message a client may send (it has nothing to say; pongs are small).
const MAX_CLIENT_MESSAGE: usize = 4096;

/// `GET /api/ws`: upgrade to a live-update socket, or 503 when [`MAX_SOCKETS`] are open.
pub async fn ws_handler(State(s): State<Shared>, ws: WebSocketUpgrade) -> Response {
    let Ok(permit) = s.live.sockets.clone().try_acquire_owned() else {
        s.metrics.ws_rejected.inc();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live-update connections\n",
        )
            .into_response();
    };
    ws.max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |sock| serve_socket(sock, s, permit))
}

/// Counts an open socket in `mcu_ws_clients` while it lives.
struct Open(prometheus_client::metrics::gauge::Gauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn send(sock: &mut WebSocket, m: WsMessage) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, sock.send(m)).await,
        Ok(Ok(()))
    )
}

async fn close(sock: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    let _ = send(sock, WsMessage::Close(Some(frame))).await;
}

async fn serve_socket(mut sock: WebSocket, s: Shared, _permit: OwnedSemaphorePermit) {
    let Some((mut rx, hello)) = s.live.subscribe(unix_ms()) else {
        return close(&mut sock, 1001, "server shutting down").await;
    };
    s.metrics.ws_clients.inc();
    let _open = Open(s.metrics.ws_clients.clone());
    if !send(&mut sock, WsMessage::Text(hello.into())).await {
        return;
    }
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    let mut heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Ok(text) => {
                    if !send(&mut sock, WsMessage::Text(text)).await {
                        s.metrics.ws_slow_dropped.inc();
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    s.metrics.ws_slow_dropped.inc();
                    return close(&mut sock, 1013, "too slow: reconnect").await;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    return close(&mut sock, 1001, "server shutting down").await;
                }
            },
            m = sock.recv() => match m {
                Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => heard = tokio::time::Instant::now(),
            },
            _ = ping.tick() => {
                if heard.elapsed() > IDLE_TIMEOUT {
                    return close(&mut sock, 1001, "no answer to pings").await;
                }
                if !send(&mut sock, WsMessage::Ping(Default::default())).await {
                    s.metrics.ws_slow_dropped.inc();
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn part(id: u64, uri: &str) -> Value {
        json!({"id": id, "kind": "sip", "sip_uri": uri, "codec": "PCMA",
               "remote_media": "127.0.0.1:4000", "level_dbov": -127.0, "speaking": false,
               "in_mix": false, "packets_in": 0, "lost": 0, "jitter_ms": 0.0})
    }

    fn room(name: &str, parts: Vec<Value>) -> Value {
        let p: Map<String, Value> = parts
            .iter()
            .map(|p| (p["id"].to_string(), p.clone()))
            .collect();
        json!({"name": name, "active_speaker": null, "participants": p})
    }

    fn snap(rooms: Vec<Value>, status: Value) -> Snapshot {
        Snapshot {
            rooms: rooms
                .iter()
                .map(|r| (r["name"].as_str().unwrap().to_string(), r.clone()))
                .collect(),
            status,
        }
    }

    fn status(role: &str, peer: &str, protected: bool) -> Value {
        json!({"role": role, "peer": peer, "synced": protected, "protected": protected,
               "replication": {"lag_ms": 0.0}, "beacons": 0, "last_takeover": null})
    }

    /// The kinds of the messages of a step but its last, which is always `levels`.
    fn types(m: &[Message]) -> Vec<String> {
        assert!(
            matches!(m.last(), Some(Message::Levels { .. })),
            "every step ends with levels: {m:?}"
        );
        m[..m.len() - 1]
            .iter()
            .map(|m| {
                serde_json::to_value(m).unwrap()["type"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    fn event(seq: u64, room: &str, event: mixer::Event) -> ApiEvent {
        ApiEvent {
            seq,
            room: room.into(),
            at_unix_ms: 1000 + seq,
            event,
        }
    }

    #[test]
    fn join_and_leave_of_a_room_and_its_participants() {
        let mut d = Differ::new();
        let st = status("standalone", "none", false);
        let out = d.step(snap(vec![], st.clone()), &[], 10);
        assert_eq!(types(&out), ["status"], "the first status is sent");

        let a = part(1, "sip:alice@x");
        let out = d.step(snap(vec![room("r", vec![a.clone()])], st.clone()), &[], 20);
        assert_eq!(types(&out), ["room_open", "join"]);
        let v = serde_json::to_value(&out[1]).unwrap();
        assert_eq!(v["room"], "r");
        assert_eq!(v["participant"]["sip_uri"], "sip:alice@x");
        assert_eq!(v["at_unix_ms"], 20);
        let info = serde_json::to_value(&out[0]).unwrap()["info"].clone();
        assert_eq!(info, json!({"name": "r"}), "no participants in room_open");

        // Nothing changed but the levels: only `levels`.
        let mut a2 = a.clone();
        a2["level_dbov"] = json!(-20.0);
        a2["speaking"] = json!(true);
        a2["packets_in"] = json!(50);
        let out = d.step(snap(vec![room("r", vec![a2.clone()])], st.clone()), &[], 30);
        assert!(types(&out).is_empty());
        let v = serde_json::to_value(&out[0]).unwrap();
        assert_eq!(v["rooms"]["r"]["participants"]["1"]["level_dbov"], -20.0);
        assert_eq!(v["rooms"]["r"]["participants"]["1"]["speaking"], true);
        assert!(v["rooms"]["r"]["participants"]["1"]["sip_uri"].is_null());

        // Bob joins, Alice leaves in the same tick.
        let b = part(2, "sip:bob@x");
        let out = d.step(snap(vec![room("r", vec![b.clone()])], st.clone()), &[], 40);
        assert_eq!(types(&out), ["join", "leave"]);
        assert_eq!(
            serde_json::to_value(&out[1]).unwrap(),
            json!({"type": "leave", "room": "r", "id": 1, "name": "sip:alice@x", "at_unix_ms": 40})
        );

        // The room empties and goes: leave, then room_close; levels of no room.
        let out = d.step(snap(vec![], st), &[], 50);
        assert_eq!(types(&out), ["leave", "room_close"]);
        assert_eq!(
            serde_json::to_value(&out[2]).unwrap(),
            json!({"type": "levels", "rooms": {}})
        );
        assert_eq!(serde_json::to_value(&out[0]).unwrap()["id"], 2);
    }

    #[test]
    fn mute_unmute_room_settings_and_participant_changes() {
        let mut d = Differ::new();
        let st = status("standalone", "none", false);
        let a = part(1, "sip:alice@x");
        d.step(snap(vec![room("r", vec![a.clone()])], st.clone()), &[], 0);

        let mut m = a.clone();
        m["muted"] = json!(true);
        let mut r = room("r", vec![m.clone()]);
        r["locked"] = json!(true);
        r["max_participants"] = json!(5);
        let out = d.step(snap(vec![r.clone()], st.clone()), &[], 1);
        assert_eq!(types(&out), ["room_update", "mute"]);
        let v = serde_json::to_value(&out[0]).unwrap();
        assert_eq!(v["info"]["locked"], true);
        assert_eq!(v["info"]["max_participants"], 5);
        let v = serde_json::to_value(&out[1]).unwrap();
        assert_eq!(
            (v["id"].as_u64(), v["name"].as_str()),
            (Some(1), Some("sip:alice@x"))
        );

        let mut u = m.clone();
        u["muted"] = json!(false);
        u["codec"] = json!("PCMU");
        r["participants"]["1"] = u;
        let out = d.step(snap(vec![r], st), &[], 2);
        assert_eq!(types(&out), ["participant", "unmute"]);
        let v = serde_json::to_value(&out[0]).unwrap();
        assert_eq!(v["participant"]["codec"], "PCMU");
    }

    #[test]
    fn event_log_entries_become_messages_once() {
        let mut d = Differ::new();
        let st = status("standalone", "none", false);
        let log = vec![
            event(
                1,
                "r",
                mixer::Event::MediaStarted {
                    participant: 1,
                    ssrc: 7,
                },
            ),
            event(
                2,
                "r",
                mixer::Event::ActiveSpeakerChanged { speaker: Some(1) },
            ),
            event(
                3,
                "r",
                mixer::Event::Dtmf {
                    participant: 1,
                    digit: '5',
                    duration_ms: 120,
                },
            ),
        ];
        let out = d.step(snap(vec![], st.clone()), &log, 0);
        assert_eq!(types(&out), ["media_started", "speaker", "dtmf", "status"]);
        assert_eq!(
            serde_json::to_value(&out[2]).unwrap(),
            json!({"type": "dtmf", "room": "r", "participant": 1, "digit": "5",
                   "duration_ms": 120, "at_unix_ms": 1003})
        );
        assert_eq!(d.last_seq(), 3);
        // The same entries again (and one older): nothing; a new one: once.
        let mut more = log.clone();
        more.push(event(
            4,
            "r",
            mixer::Event::ActiveSpeakerChanged { speaker: None },
        ));
        let out = d.step(snap(vec![], st.clone()), &more, 1);
        assert_eq!(types(&out), ["speaker"]);
        assert_eq!(
            serde_json::to_value(&out[0]).unwrap()["speaker"],
            Value::Null
        );
        assert!(types(&d.step(snap(vec![], st), &more, 2)).is_empty());
    }

    #[test]
    fn events_after_takes_the_tail_of_the_log() {
        let log: VecDeque<_> = (5..=9)
            .map(|s| event(s, "r", mixer::Event::ActiveSpeakerChanged { speaker: None }))
            .collect();
        let seqs = |v: Vec<ApiEvent>| v.iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(seqs(events_after(&log, 7)), [8, 9]);
        assert_eq!(seqs(events_after(&log, 0)), [5, 6, 7, 8, 9]);
        assert!(events_after(&log, 9).is_empty());
        assert!(events_after(&VecDeque::new(), 3).is_empty());
    }

    #[test]
    fn status_changes_at_once_counters_at_most_once_a_second() {
        let mut d = Differ::new();
        let mut st = status("backup", "alive", true);
        d.step(snap(vec![], st.clone()), &[], 0);

        // A counter: not before a second has passed since the last status, then once.
        st["beacons"] = json!(100);
        assert!(types(&d.step(snap(vec![], st.clone()), &[], 500)).is_empty());
        assert!(types(&d.step(snap(vec![], st.clone()), &[], 900)).is_empty());
        let out = d.step(snap(vec![], st.clone()), &[], 1000);
        assert_eq!(types(&out), ["status"]);
        assert_eq!(
            serde_json::to_value(&out[0]).unwrap()["status"]["beacons"],
            100
        );
        assert!(types(&d.step(snap(vec![], st.clone()), &[], 1100)).is_empty());

        // The peer dies: at once.
        st["peer"] = json!("dead");
        st["protected"] = json!(false);
        let out = d.step(snap(vec![], st.clone()), &[], 1150);
        assert_eq!(types(&out), ["status"]);

        // The takeover: a `takeover` message, then the status.
        st["role"] = json!("primary");
        st["last_takeover"] =
            json!({"at_unix_ms": 1140, "duration_ms": 61.5, "calls": 3, "rooms": 1});
        let out = d.step(snap(vec![], st.clone()), &[], 1200);
        assert_eq!(types(&out), ["takeover", "status"]);
        assert_eq!(
            serde_json::to_value(&out[0]).unwrap()["takeover"]["duration_ms"],
            61.5
        );
        assert!(types(&d.step(snap(vec![], st), &[], 1300)).is_empty());
    }

    #[test]
    fn a_takeover_already_in_the_first_status_is_state_not_news() {
        let mut d = Differ::new();
        let mut st = status("primary", "dead", false);
        st["last_takeover"] = json!({"at_unix_ms": 5, "duration_ms": 60.0, "calls": 1, "rooms": 1});
        assert_eq!(types(&d.step(snap(vec![], st), &[], 0)), ["status"]);
    }

    #[tokio::test]
    async fn hello_and_the_messages_after_it_follow_each_other() {
        let hub = Hub::default();
        let st = status("standalone", "none", false);
        hub.tick(
            snap(vec![room("r", vec![part(1, "sip:a@x")])], st.clone()),
            &[],
            1,
        );
        let (mut rx, hello) = hub.subscribe(2).unwrap();
        let hello: Value = serde_json::from_str(&hello).unwrap();
        assert_eq!(hello["type"], "hello");
        assert_eq!(hello["rooms"][0]["participants"]["1"]["sip_uri"], "sip:a@x");
        assert_eq!(hello["status"]["role"], "standalone");
        let evs: Vec<_> = hello["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].clone())
            .collect();
        assert_eq!(evs, [json!("room_open"), json!("join")]);
        assert!(rx.try_recv().is_err(), "nothing from before the hello");

        hub.tick(
            snap(
                vec![room("r", vec![part(1, "sip:a@x"), part(2, "sip:b@x")])],
                st,
            ),
            &[],
            3,
        );
        let m: Value = serde_json::from_str(rx.try_recv().unwrap().as_str()).unwrap();
        assert_eq!(
            (m["type"].as_str(), m["participant"]["id"].as_u64()),
            (Some("join"), Some(2))
        );
        let m: Value = serde_json::from_str(rx.try_recv().unwrap().as_str()).unwrap();
        assert_eq!(m["type"], "levels");

        hub.close();
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Closed)
        ));
        assert!(hub.subscribe(4).is_none());
    }

    #[tokio::test]
    async fn a_receiver_that_falls_behind_lags_instead_of_blocking() {
        let hub = Hub::default();
        let st = status("standalone", "none", false);
        let (mut rx, _) = hub.subscribe(0).unwrap();
        let r = room("r", vec![part(1, "sip:a@x")]);
        for t in 0..(QUEUE as u64 + 10) {
            // Every tick sends at least `levels`: the hub never waits for the receiver.
            hub.tick(snap(vec![r.clone()], st.clone()), &[], t);
        }
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
    }
}
