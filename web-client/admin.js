// Understudy operations page (`GET /`): rooms and participants with live levels, operator
// actions (mute, unmute, kick, lock, max participants, planned switchover), the event log and
// the hot-standby state. No build step, no dependencies.
//
// Live: a WebSocket on /api/ws (a `hello` with the whole state, then changes; `levels` every
// 100 ms doubles as a heartbeat). A socket that closes or goes silent is reopened with a
// backoff; after two failures in a row the page polls /api/rooms, /api/status and /api/events
// every second until the socket works again. A takeover moves the service address to the
// other node: the socket drops, the page reconnects to the same address (now the other node)
// and goes on from its `hello`.
//
// Auth: with a token (`#token=...` in the URL, or the sign-in form) every request carries
// `Authorization: Bearer TOKEN` and the socket `?access_token=TOKEN`; the token is kept in
// sessionStorage. A server without a token works without signing in; a 401 shows the form.
//
// Automation: `window.understudyAdmin` (see `api` below): `state` (connection, rooms, status),
// `messages` (every message received but `levels`), `counts` (messages per type), `log` (the
// event log as shown, newest first), `lastError`, and the actions as functions.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  const TOKEN_KEY = "understudy.admin.token";
  const LOG_MAX = 500; // event log entries kept (newest first)
  const MESSAGES_MAX = 1000; // messages kept for automation
  const STALE_MS = 3000; // a live socket silent this long is dead (levels come every 100 ms)
  const OPEN_TIMEOUT_MS = 5000; // a socket not open (hello received) within this is abandoned
  const POLL_MS = 1000;
  const RECONNECT_MIN_MS = 250;
  const RECONNECT_MAX_MS = 5000;
  const FAILS_BEFORE_POLLING = 2;
  const REQUEST_TIMEOUT_MS = 5000;

  // ------------------------------------------------------------------ model

  /** Room name -> room JSON as /api/rooms shows it (participants by id). */
  const rooms = new Map();
  /** Participant id -> name, kept after they leave (the log names them). */
  const names = new Map();
  let status = null;
  /** Server clock minus ours, ms (from the hello). */
  let clockOffset = 0;

  const api = {
    state: {
      /** connecting, live, reconnecting, polling, offline, login */
      connection: "connecting",
      /** How the data comes: "ws", "poll" or null. */
      via: null,
      /** Whether the server asked for a token (a 401 was seen). */
      authRequired: false,
      /** Whether a token is set. */
      get signedIn() {
        return token !== null;
      },
      get rooms() {
        return Object.fromEntries(rooms);
      },
      get status() {
        return status;
      },
      /** Sockets opened since load, and hellos received. */
      sockets: 0,
      hellos: 0,
      /** Wall-clock ms of the last message (or successful poll). */
      lastMessageAt: null,
    },
    messages: [],
    counts: {},
    log: [],
    lastError: null,
    errors: [],
    login,
    logout,
    mute: (room, id) => muteAction(room, id, true),
    unmute: (room, id) => muteAction(room, id, false),
    kick: (room, id, confirmed) => kickAction(room, id, confirmed),
    setRoom: (room, settings) => roomAction(room, settings),
    failover: (confirmed) => failoverAction(confirmed),
    reconnect: () => connect(),
  };
  window.understudyAdmin = api;

  function fail(message) {
    const e = { t: Date.now(), message };
    api.lastError = e;
    api.errors.push(e);
    if (api.errors.length > 100) api.errors.shift();
    console.warn(`[admin] ${message}`);
  }

  // ------------------------------------------------------------------ auth and requests

  let token = null;

  function readToken() {
    const hash = new URLSearchParams(location.hash.slice(1));
    if (hash.has("token")) {
      token = hash.get("token") || null;
      store(token);
      // Out of the address bar and the history.
      history.replaceState(null, "", location.pathname + location.search);
    } else {
      try {
        token = sessionStorage.getItem(TOKEN_KEY);
      } catch {
        token = null;
      }
    }
  }

  function store(t) {
    try {
      if (t) sessionStorage.setItem(TOKEN_KEY, t);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      /* storage disabled: the token lives in memory only */
    }
  }

  class HttpError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  /** A request to the API; resolves to the parsed JSON (or null), throws HttpError. */
  async function request(method, path, body) {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), REQUEST_TIMEOUT_MS);
    let res;
    try {
      res = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        signal: ctl.signal,
      });
    } catch (e) {
      const why = e && e.name === "AbortError" ? `no answer within ${REQUEST_TIMEOUT_MS / 1000} s` : "server unreachable";
      throw new HttpError(0, `${method} ${path}: ${why}`);
    } finally {
      clearTimeout(timer);
    }
    const text = await res.text().catch(() => "");
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (res.status === 401) {
      needLogin(token ? "The server refused this token." : null);
      throw new HttpError(401, "sign-in required");
    }
    if (!res.ok) {
      const explained = data && typeof data.error === "string";
      const reason = explained ? data.error : text.trim() || res.statusText || "error";
      const e = new HttpError(res.status, reason);
      e.explained = explained;
      throw e;
    }
    return data;
  }

  function needLogin(message) {
    api.state.authRequired = true;
    stopLive();
    setConn("login", "Sign in required");
    document.body.classList.add("signed-out");
    $("app").hidden = true;
    $("login").hidden = false;
    const err = $("login-error");
    err.hidden = !message;
    err.textContent = message || "";
    $("logout").hidden = true;
    $("token").value = "";
    $("token").focus();
  }

  /** Sign in with `t` (also what the form does). */
  function login(t) {
    token = (t || "").trim() || null;
    store(token);
    $("login").hidden = true;
    $("app").hidden = false;
    $("login-error").hidden = true;
    document.body.classList.remove("signed-out");
    start();
  }

  function logout() {
    token = null;
    store(null);
    needLogin(null);
  }

  // ------------------------------------------------------------------ connection

  let ws = null;
  let wsGen = 0; // the current socket's generation: events of older sockets are ignored
  let fails = 0;
  let reconnectTimer = null;
  let pollTimer = null;
  let watchdog = null;
  let socketOpenedAt = 0;
  let gotHello = false;

  const CONN_TEXT = {
    connecting: "Connecting…",
    live: "Live",
    reconnecting: "Reconnecting…",
    polling: "Polling (live socket down)",
    offline: "Server unreachable",
    login: "Sign in required",
  };

  function setConn(state, text) {
    api.state.connection = state;
    const el = $("conn");
    el.className = `conn conn-${state}`;
    el.textContent = text || CONN_TEXT[state] || state;
    $("rooms-note").textContent =
      state === "live" ? "live, 10 updates/s" : state === "polling" ? `polling every ${POLL_MS / 1000} s` : "";
  }

  async function start() {
    stopLive();
    $("logout").hidden = !token;
    setConn("connecting");
    try {
      applyStatus(await request("GET", "/api/status"));
    } catch (e) {
      if (e.status === 401) return; // the form is shown
      fail(e.message);
      setConn("offline", `${CONN_TEXT.offline}: retrying`);
    }
    connect();
    watchdog = setInterval(checkStale, 500);
  }

  function stopLive() {
    wsGen++;
    if (ws) {
      try {
        ws.close(1000, "page");
      } catch {
        /* already closed */
      }
      ws = null;
    }
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    clearInterval(watchdog);
    watchdog = null;
    stopPolling();
  }

  function wsUrl() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    let url = `${proto}//${location.host}/api/ws`;
    if (token) url += `?access_token=${encodeURIComponent(token)}`;
    return url;
  }

  function connect() {
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    const gen = ++wsGen;
    if (ws) {
      try {
        ws.close(1000, "reconnect");
      } catch {
        /* already closed */
      }
    }
    gotHello = false;
    socketOpenedAt = Date.now();
    api.state.sockets++;
    let sock;
    try {
      sock = new WebSocket(wsUrl());
    } catch (e) {
      ws = null;
      lost(gen, `cannot open the live socket: ${e.message}`);
      return;
    }
    ws = sock;
    sock.onmessage = (ev) => {
      if (gen !== wsGen) return;
      let m;
      try {
        m = JSON.parse(ev.data);
      } catch {
        fail("a live message that is not JSON");
        return;
      }
      api.state.lastMessageAt = Date.now();
      if (m.type === "hello") {
        gotHello = true;
        fails = 0;
        api.state.hellos++;
        stopPolling();
        api.state.via = "ws";
        setConn("live");
      }
      handle(m);
    };
    sock.onclose = (ev) => {
      if (gen !== wsGen) return;
      ws = null;
      lost(gen, `live socket closed (${ev.code}${ev.reason ? `: ${ev.reason}` : ""})`);
    };
  }

  /** The socket of generation `gen` failed: find out why, then reconnect (and poll). */
  async function lost(gen, why) {
    if (gen !== wsGen) return;
    wsGen++; // late events of that socket are ignored
    if (ws) {
      try {
        ws.close();
      } catch {
        /* already closed */
      }
      ws = null;
    }
    fails = gotHello ? 1 : fails + 1;
    gotHello = false;
    if (fails > 1) fail(why);
    const myGen = wsGen;
    // A refused token is invisible to a WebSocket: ask the API.
    try {
      await request("GET", "/api/status");
    } catch (e) {
      if (e.status === 401) return;
    }
    if (myGen !== wsGen) return; // someone reconnected meanwhile
    if (fails >= FAILS_BEFORE_POLLING) startPolling();
    const delay = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** Math.max(0, fails - 1));
    if (!pollTimer) setConn("reconnecting", `Reconnecting… (attempt ${fails})`);
    reconnectTimer = setTimeout(connect, delay + Math.random() * 100);
  }

  function checkStale() {
    if (!ws) return;
    const now = Date.now();
    if (gotHello && now - (api.state.lastMessageAt || 0) > STALE_MS) {
      lost(wsGen, `live socket silent for ${STALE_MS / 1000} s`);
    } else if (!gotHello && now - socketOpenedAt > OPEN_TIMEOUT_MS) {
      lost(wsGen, `no hello within ${OPEN_TIMEOUT_MS / 1000} s`);
    }
  }

  // ------------------------------------------------------------------ polling fallback

  let lastPolledSeq = 0;

  function startPolling() {
    if (pollTimer) return;
    api.state.via = "poll";
    setConn("polling");
    pollTimer = setInterval(pollOnce, POLL_MS);
    pollOnce();
  }

  function stopPolling() {
    clearInterval(pollTimer);
    pollTimer = null;
  }

  async function pollOnce() {
    let r, st, evs;
    try {
      [r, st, evs] = await Promise.all([
        request("GET", "/api/rooms"),
        request("GET", "/api/status"),
        request("GET", "/api/events"),
      ]);
    } catch (e) {
      if (e.status === 401) return;
      if (pollTimer) setConn("offline", `${CONN_TEXT.offline}: retrying`);
      fail(e.message);
      return;
    }
    if (!pollTimer) return; // the socket came back meanwhile
    api.state.lastMessageAt = Date.now();
    setConn("polling");
    clockOffset = 0;
    applyPolledRooms((r && r.rooms) || []);
    applyStatus(st);
    const list = Array.isArray(evs) ? evs : [];
    // Another node after a takeover numbers its log from 1 again.
    const top = list.length ? list[list.length - 1].seq || 0 : 0;
    if (top < lastPolledSeq) lastPolledSeq = 0;
    for (const e of list) {
      if ((e.seq || 0) <= lastPolledSeq) continue;
      const m = fromApiEvent(e);
      if (m) logMessage(m);
    }
    lastPolledSeq = top;
  }

  /** A raw /api/events entry as the live message it would be. */
  function fromApiEvent(e) {
    const ev = e.event || {};
    const base = { room: e.room, at_unix_ms: e.at_unix_ms };
    if (ev.ActiveSpeakerChanged) return { type: "speaker", ...base, speaker: ev.ActiveSpeakerChanged.speaker };
    if (ev.Dtmf) return { type: "dtmf", ...base, ...ev.Dtmf };
    if (ev.MediaStarted) return { type: "media_started", ...base, ...ev.MediaStarted };
    return null;
  }

  /** Polled rooms: the same changes the socket would have sent, found here. */
  function applyPolledRooms(list) {
    const at = Date.now();
    const next = new Map(list.map((r) => [r.name, r]));
    for (const [name, room] of next) {
      const old = rooms.get(name);
      if (!old) logMessage({ type: "room_open", room: name, info: roomInfo(room), at_unix_ms: at });
      else if (JSON.stringify(roomInfo(old)) !== JSON.stringify(roomInfo(room)))
        logMessage({ type: "room_update", room: name, info: roomInfo(room), at_unix_ms: at, before: roomInfo(old) });
      const before = (old && old.participants) || {};
      for (const [id, p] of Object.entries(room.participants || {})) {
        names.set(String(id), p.sip_uri);
        const q = before[id];
        if (!q) logMessage({ type: "join", room: name, participant: p, at_unix_ms: at });
        else if (!!q.muted !== !!p.muted)
          logMessage({ type: p.muted ? "mute" : "unmute", room: name, id: p.id, name: p.sip_uri, at_unix_ms: at });
      }
      for (const [id, q] of Object.entries(before)) {
        if (!(room.participants || {})[id]) logMessage({ type: "leave", room: name, id: q.id, name: q.sip_uri, at_unix_ms: at });
      }
    }
    for (const [name, old] of rooms) {
      if (next.has(name)) continue;
      for (const q of Object.values(old.participants || {}))
        logMessage({ type: "leave", room: name, id: q.id, name: q.sip_uri, at_unix_ms: at });
      logMessage({ type: "room_close", room: name, at_unix_ms: at });
    }
    rooms.clear();
    for (const [k, v] of next) rooms.set(k, v);
    renderRooms();
  }

  function roomInfo(room) {
    const info = { ...room };
    delete info.participants;
    delete info.active_speaker;
    return info;
  }

  // ------------------------------------------------------------------ live messages

  function handle(m) {
    api.counts[m.type] = (api.counts[m.type] || 0) + 1;
    if (m.type !== "levels") {
      api.messages.push({ t: Date.now(), type: m.type, msg: m });
      if (api.messages.length > MESSAGES_MAX) api.messages.shift();
    }
    switch (m.type) {
      case "hello":
        return onHello(m);
      case "room_open":
        rooms.set(m.room, { ...m.info, name: m.room, active_speaker: null, participants: {} });
        renderRooms();
        return logMessage(m);
      case "room_update": {
        const r = rooms.get(m.room);
        const before = r ? roomInfo(r) : {};
        if (r) Object.assign(r, m.info);
        renderRooms();
        return logMessage({ ...m, before });
      }
      case "room_close":
        rooms.delete(m.room);
        renderRooms();
        return logMessage(m);
      case "join": {
        const r = rooms.get(m.room);
        if (r) r.participants[m.participant.id] = m.participant;
        names.set(String(m.participant.id), m.participant.sip_uri);
        renderRooms();
        return logMessage(m);
      }
      case "leave": {
        const r = rooms.get(m.room);
        if (r) delete r.participants[m.id];
        renderRooms();
        return logMessage(m);
      }
      case "mute":
      case "unmute": {
        const p = participant(m.room, m.id);
        if (p) p.muted = m.type === "mute";
        renderRooms();
        return logMessage(m);
      }
      case "participant": {
        const r = rooms.get(m.room);
        if (r) r.participants[m.participant.id] = { ...r.participants[m.participant.id], ...m.participant };
        names.set(String(m.participant.id), m.participant.sip_uri);
        return renderRooms();
      }
      case "speaker": {
        const r = rooms.get(m.room);
        if (r) r.active_speaker = m.speaker;
        return logMessage(m);
      }
      case "dtmf":
      case "media_started":
        return logMessage(m);
      case "status":
        return applyStatus(m.status);
      case "takeover":
        toast(`This node took over in ${fmtMs(m.takeover.duration_ms)}: ${plural(m.takeover.calls, "call", "calls")}, ${plural(m.takeover.rooms, "room", "rooms")}.`, "warn");
        return logMessage(m);
      case "levels":
        return onLevels(m);
      default:
        return undefined; // a newer server's message: ignored
    }
  }

  /** What the page knew before a reconnect: the rooms (name) and participants
   * (`room|id` -> name). A node that took over reports them as opened and joined when it
   * resumed them; for the operator that is not news, so those are not logged (once each). */
  const knownRooms = new Set();
  const knownParts = new Map();

  function onHello(m) {
    clockOffset = (m.now_unix_ms || Date.now()) - Date.now();
    knownRooms.clear();
    knownParts.clear();
    for (const [name, r] of rooms) {
      knownRooms.add(name);
      for (const [id, p] of Object.entries(r.participants || {})) knownParts.set(`${name}|${id}`, p.sip_uri);
    }
    rooms.clear();
    for (const r of m.rooms || []) {
      rooms.set(r.name, r);
      for (const [id, p] of Object.entries(r.participants || {})) names.set(String(id), p.sip_uri);
    }
    for (const name of [...knownRooms]) if (!rooms.has(name)) knownRooms.delete(name);
    // Who was there and is not on this node (the previous one stopped before saying so).
    const at = Date.now() + clockOffset;
    for (const [key, name] of knownParts) {
      const [room, id] = [key.slice(0, key.lastIndexOf("|")), key.slice(key.lastIndexOf("|") + 1)];
      const p = participant(room, id);
      if (p && p.sip_uri === name) continue;
      knownParts.delete(key);
      logEntry({ key: `gone|${key}|${at}`, at, kind: "leave", room, text: `${name} gone (not on this node after the reconnect)` });
    }
    applyStatus(m.status);
    for (const e of m.events || []) {
      if (e.type === "join") names.set(String(e.participant.id), e.participant.sip_uri);
      logMessage(e);
    }
    renderRooms();
  }

  function participant(room, id) {
    const r = rooms.get(room);
    return r ? (r.participants || {})[id] : undefined;
  }

  function onLevels(m) {
    for (const [name, lv] of Object.entries(m.rooms || {})) {
      const r = rooms.get(name);
      if (!r) continue;
      r.active_speaker = lv.active_speaker;
      for (const [id, l] of Object.entries(lv.participants || {})) {
        const p = r.participants[id];
        if (p) Object.assign(p, l);
      }
    }
    updateLevels();
  }

  // ------------------------------------------------------------------ status

  function applyStatus(st) {
    if (!st || typeof st !== "object") return;
    const prev = status;
    status = st;
    const at = Date.now() + clockOffset;
    if (prev && prev.role !== st.role) {
      logEntry({ key: `role|${at}`, at, kind: "status", room: null, text: `This node: ${prev.role} → ${st.role}` });
    }
    if (prev && prev.protected !== st.protected && st.role !== "standalone") {
      logEntry({
        key: `prot|${at}`,
        at,
        kind: st.protected ? "ok" : "bad",
        room: null,
        text: st.protected ? "Pair protected: a synced standby stands behind the serving node" : `UNPROTECTED (peer ${st.peer})`,
      });
    }
    if (prev && st.last_takeover && JSON.stringify(prev.last_takeover) !== JSON.stringify(st.last_takeover) && api.state.via === "poll") {
      logMessage({ type: "takeover", takeover: st.last_takeover });
    }
    renderStatus();
  }

  // ------------------------------------------------------------------ event log

  const seen = new Set();
  const seenOrder = [];

  function nameOf(id) {
    const n = names.get(String(id));
    return n ? n : `#${id}`;
  }

  /** One log entry per message worth logging (deduplicated: a reconnect repeats some). */
  function logMessage(m) {
    const at = m.at_unix_ms || Date.now() + clockOffset;
    switch (m.type) {
      case "join": {
        const p = m.participant || {};
        const known = `${m.room}|${p.id}`;
        if (knownParts.get(known) === p.sip_uri) {
          knownParts.delete(known);
          return undefined;
        }
        const kind = p.kind === "webrtc" ? "WebRTC" : "SIP";
        return logEntry({ key: `join|${m.room}|${p.id}|${at}`, at, kind: "join", room: m.room, text: `${p.sip_uri || `#${p.id}`} joined (${kind}, ${p.codec || "?"})` });
      }
      case "leave":
        knownParts.delete(`${m.room}|${m.id}`);
        return logEntry({ key: `leave|${m.room}|${m.id}|${at}`, at, kind: "leave", room: m.room, text: `${m.name || nameOf(m.id)} left` });
      case "mute":
        return logEntry({ key: `mute|${m.room}|${m.id}|${at}`, at, kind: "mute", room: m.room, text: `${m.name || nameOf(m.id)} muted` });
      case "unmute":
        return logEntry({ key: `unmute|${m.room}|${m.id}|${at}`, at, kind: "unmute", room: m.room, text: `${m.name || nameOf(m.id)} unmuted` });
      case "dtmf":
        return logEntry({ key: `dtmf|${m.room}|${m.participant}|${at}|${m.digit}`, at, kind: "dtmf", room: m.room, text: `DTMF ${m.digit} from ${nameOf(m.participant)}${m.duration_ms ? ` (${m.duration_ms} ms)` : ""}` });
      case "speaker":
        return logEntry({ key: `speaker|${m.room}|${at}|${m.speaker}`, at, kind: "speaker", room: m.room, text: m.speaker == null ? "Room fell silent" : `${nameOf(m.speaker)} is the active speaker` });
      case "media_started":
        return logEntry({ key: `media|${m.room}|${m.participant}|${m.ssrc}|${at}`, at, kind: "media", room: m.room, text: `Media from ${nameOf(m.participant)} (SSRC ${hex(m.ssrc)})` });
      case "room_open":
        if (knownRooms.delete(m.room)) return undefined;
        return logEntry({ key: `room_open|${m.room}|${at}`, at, kind: "room", room: m.room, text: "Room opened" });
      case "room_close":
        knownRooms.delete(m.room);
        return logEntry({ key: `room_close|${m.room}|${at}`, at, kind: "room", room: m.room, text: "Room closed" });
      case "room_update":
        return logEntry({ key: `room_update|${m.room}|${at}`, at, kind: "room", room: m.room, text: describeRoomUpdate(m.before || {}, m.info || {}) });
      case "takeover": {
        const t = m.takeover || {};
        return logEntry({ key: `takeover|${t.at_unix_ms}`, at: t.at_unix_ms || at, kind: "takeover", room: null, text: `TAKEOVER: this node took over in ${fmtMs(t.duration_ms)} (${plural(t.calls, "call", "calls")}, ${plural(t.rooms, "room", "rooms")})` });
      }
      default:
        return undefined;
    }
  }

  function describeRoomUpdate(before, info) {
    const parts = [];
    if (before.locked !== info.locked) parts.push(info.locked ? "locked" : "unlocked");
    if (before.max_participants !== info.max_participants)
      parts.push(`max participants ${info.max_participants == null ? "server default" : info.max_participants}`);
    return parts.length ? `Room ${parts.join(", ")}` : "Room settings changed";
  }

  function logEntry(e) {
    if (seen.has(e.key)) return;
    seen.add(e.key);
    seenOrder.push(e.key);
    if (seenOrder.length > 4 * LOG_MAX) seen.delete(seenOrder.shift());
    // Newest first, by the server's time (a hello's events come oldest first).
    let i = 0;
    while (i < api.log.length && api.log[i].at > e.at) i++;
    api.log.splice(i, 0, e);
    if (api.log.length > LOG_MAX) api.log.pop();
    renderLogSoon();
  }

  let logRenderPending = false;
  function renderLogSoon() {
    if (logRenderPending) return;
    logRenderPending = true;
    requestAnimationFrame(() => {
      logRenderPending = false;
      renderLog();
    });
    // Hidden tabs get no animation frames: render anyway within a second.
    setTimeout(() => {
      if (logRenderPending) {
        logRenderPending = false;
        renderLog();
      }
    }, 1000);
  }

  const LOG_TAG = {
    join: "JOIN",
    leave: "LEAVE",
    mute: "MUTE",
    unmute: "UNMUTE",
    dtmf: "DTMF",
    speaker: "SPEAKER",
    media: "MEDIA",
    room: "ROOM",
    takeover: "TAKEOVER",
    status: "NODE",
    ok: "PROTECTED",
    bad: "ALERT",
  };

  function renderLog() {
    const showChatty = $("log-speakers").checked;
    const list = $("log");
    const frag = document.createDocumentFragment();
    let n = 0;
    for (const e of api.log) {
      if (!showChatty && (e.kind === "speaker" || e.kind === "media")) continue;
      const li = el("li", `log-entry log-k-${e.kind}`);
      li.append(el("time", "log-time", fmtTime(e.at)));
      li.append(el("span", "log-tag", LOG_TAG[e.kind] || e.kind.toUpperCase()));
      if (e.room) li.append(el("span", "log-room", e.room));
      li.append(el("span", "log-text", e.text));
      frag.append(li);
      n++;
    }
    list.replaceChildren(frag);
    $("log-empty").hidden = n > 0;
  }

  // ------------------------------------------------------------------ rendering: rooms

  /** Room name -> {card, refs..., rows: Map id -> row refs}. */
  const roomEls = new Map();

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function renderRooms() {
    const box = $("rooms");
    const namesSorted = [...rooms.keys()].sort();
    for (const [name, r] of roomEls) {
      if (!rooms.has(name)) {
        r.card.remove();
        roomEls.delete(name);
      }
    }
    let prev = null;
    for (const name of namesSorted) {
      let r = roomEls.get(name);
      if (!r) {
        r = buildRoom(name);
        roomEls.set(name, r);
      }
      // Keep the cards in name order.
      const want = prev ? prev.nextSibling : box.firstChild;
      if (want !== r.card) box.insertBefore(r.card, want);
      prev = r.card;
      fillRoom(r, rooms.get(name));
    }
    $("rooms-empty").hidden = rooms.size > 0;
    updateLevels();
  }

  function buildRoom(name) {
    const card = el("article", "room");
    card.dataset.room = name;
    const head = el("header", "room-head");
    const title = el("h3", "room-name", name);
    const count = el("span", "room-count");
    const locked = el("span", "badge badge-locked", "LOCKED");
    const speaker = el("span", "room-speaker");
    const controls = el("div", "room-controls");

    const lockLabel = el("label", "switch");
    lockLabel.title = "A locked room refuses new participants";
    const lock = el("input", "lock-toggle");
    lock.type = "checkbox";
    lock.setAttribute("aria-label", `Lock room ${name}`);
    lockLabel.append(lock, el("span", "switch-track"), el("span", "switch-text", "Locked"));
    lock.addEventListener("change", () => {
      const want = lock.checked;
      lock.checked = !want; // the server's answer decides
      roomAction(name, { locked: want });
    });

    const maxForm = el("form", "max-form");
    const maxLabel = el("label", "max-label", "Max");
    const max = el("input", "max-input");
    max.type = "number";
    max.min = "1";
    max.max = "10000";
    max.step = "1";
    max.placeholder = "default";
    max.setAttribute("aria-label", `Maximum participants in ${name}`);
    maxLabel.append(max);
    const maxSet = el("button", "small-btn", "Set");
    maxSet.type = "submit";
    maxForm.append(maxLabel, maxSet);
    maxForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const n = Number(max.value);
      if (!Number.isInteger(n) || n < 1 || n > 10000) {
        toast("Max participants: a whole number from 1 to 10000.", "error");
        return;
      }
      roomAction(name, { max_participants: n });
    });
    max.addEventListener("input", () => (max.dataset.dirty = "1"));
    controls.append(lockLabel, maxForm);
    head.append(title, count, locked, speaker, controls);

    const table = el("table", "parts");
    const thead = el("thead");
    const hr = el("tr");
    for (const [h, cls] of [
      ["", "c-dot"],
      ["Participant · codec · remote media", "c-name"],
      ["Level", "c-level"],
      ["Loss", "c-loss"],
      ["Jitter", "c-jitter"],
      ["State", "c-state"],
      ["", "c-actions"],
    ]) {
      hr.append(el("th", cls, h));
    }
    thead.append(hr);
    const tbody = el("tbody");
    table.append(thead, tbody);
    const empty = el("p", "empty small", "Nobody in this room.");
    card.append(head, table, empty);
    return { card, count, locked, speaker, lock, max, maxSet, tbody, empty, rows: new Map() };
  }

  function fillRoom(r, room) {
    const parts = room.participants || {};
    const ids = Object.keys(parts).sort((a, b) => Number(a) - Number(b));
    const maxN = room.max_participants;
    r.count.textContent = `${ids.length}${maxN != null ? ` / ${maxN}` : ""} ${ids.length === 1 ? "participant" : "participants"}`;
    r.locked.hidden = !room.locked;
    r.lock.checked = !!room.locked;
    r.lock.disabled = pending.has(`room|${room.name}`);
    r.maxSet.disabled = pending.has(`room|${room.name}`);
    if (!r.max.dataset.dirty && document.activeElement !== r.max) r.max.value = maxN != null ? String(maxN) : "";
    r.card.classList.toggle("room-locked", !!room.locked);
    for (const [id, row] of r.rows) {
      if (!parts[id]) {
        row.tr.remove();
        r.rows.delete(id);
      }
    }
    let prev = null;
    for (const id of ids) {
      let row = r.rows.get(id);
      if (!row) {
        row = buildRow(room.name, id);
        r.rows.set(id, row);
      }
      const want = prev ? prev.nextSibling : r.tbody.firstChild;
      if (want !== row.tr) r.tbody.insertBefore(row.tr, want);
      prev = row.tr;
      fillRow(row, room.name, parts[id]);
    }
    r.empty.hidden = ids.length > 0;
  }

  function buildRow(room, id) {
    const tr = el("tr", "part");
    tr.dataset.id = id;
    const dot = el("span", "dot");
    const kind = el("span", "badge kind");
    const name = el("span", "p-name");
    const line1 = el("div", "p-line1");
    line1.append(kind, name);
    const pid = el("span", "p-id", `#${id}`);
    const codec = el("span", "p-codec");
    const addr = el("span", "mono addr");
    const line2 = el("div", "p-line2");
    line2.append(pid, codec, addr);
    const meter = el("span", "meter");
    const fill = el("span", "meter-fill");
    meter.append(fill);
    const db = el("span", "db mono");
    const loss = el("span", "mono");
    const jitter = el("span", "mono");
    const state = el("span", "p-state");
    const muteBtn = el("button", "small-btn mute-btn", "Mute");
    muteBtn.type = "button";
    const kickBtn = el("button", "small-btn danger-btn kick-btn", "Kick");
    kickBtn.type = "button";
    muteBtn.addEventListener("click", () => {
      const p = participant(room, id);
      muteAction(room, id, !(p && p.muted));
    });
    kickBtn.addEventListener("click", () => kickAction(room, id));
    const cells = [[dot], [line1, line2], [meter, db], [loss], [jitter], [state], [muteBtn, kickBtn]];
    const classes = ["c-dot", "c-name", "c-level", "c-loss", "c-jitter", "c-state", "c-actions"];
    cells.forEach((kids, i) => {
      const td = el("td", classes[i]);
      td.append(...kids);
      tr.append(td);
    });
    return { tr, dot, name, kind, codec, addr, fill, db, loss, jitter, state, muteBtn, kickBtn };
  }

  function fillRow(row, room, p) {
    row.name.textContent = p.sip_uri || "(no name)";
    row.name.title = p.sip_uri || "";
    const webrtc = p.kind === "webrtc";
    row.kind.textContent = webrtc ? "WebRTC" : "SIP";
    row.kind.className = `badge kind ${webrtc ? "badge-webrtc" : "badge-sip"}`;
    row.codec.textContent = p.codec || "–";
    row.addr.textContent = p.remote_media || "–";
    row.addr.title = `remote media address; our port ${p.local_rtp_port ?? "?"}, direction ${p.direction || "?"}`;
    row.tr.classList.toggle("muted-row", !!p.muted);
    const mk = `mute|${room}|${p.id}`;
    row.muteBtn.textContent = p.muted ? "Unmute" : "Mute";
    row.muteBtn.classList.toggle("is-muted", !!p.muted);
    row.muteBtn.disabled = pending.has(mk);
    row.muteBtn.setAttribute("aria-label", `${p.muted ? "Unmute" : "Mute"} ${p.sip_uri || `#${p.id}`}`);
    row.kickBtn.disabled = pending.has(`kick|${room}|${p.id}`);
    row.kickBtn.setAttribute("aria-label", `Kick ${p.sip_uri || `#${p.id}`}`);
    fillLevel(row, p);
  }

  /** The state badges (muted, on hold, in the mix), redrawn only when they change. */
  function fillState(row, p) {
    const states = [];
    if (p.muted) states.push(["MUTED", "badge badge-muted"]);
    if (p.direction && p.direction !== "sendrecv") states.push([p.direction === "recvonly" ? "LISTEN" : "ON HOLD", "badge badge-hold"]);
    if (p.in_mix && !p.muted) states.push(["in mix", "badge badge-mix"]);
    const key = states.map(([t]) => t).join("|");
    if (row.stateKey === key) return;
    row.stateKey = key;
    row.state.replaceChildren(...states.map(([t, c]) => el("span", c, t)));
  }

  function fillLevel(row, p) {
    fillState(row, p);
    const lvl = typeof p.level_dbov === "number" ? p.level_dbov : -127;
    const pct = Math.max(0, Math.min(100, ((lvl + 60) / 60) * 100));
    row.fill.style.width = `${pct.toFixed(1)}%`;
    row.fill.classList.toggle("speaking", !!p.speaking);
    row.db.textContent = lvl <= -127 ? "silent" : `${Math.round(lvl)} dB`;
    row.tr.classList.toggle("speaking", !!p.speaking);
    row.dot.className = `dot${p.speaking ? " dot-speaking" : ""}${p.in_mix ? " dot-mix" : ""}`;
    row.dot.title = p.speaking ? "speaking" : p.in_mix ? "in the mix" : "";
    const lost = Number(p.lost) || 0;
    const got = Number(p.packets_in) || 0;
    const lossPct = got + lost > 0 ? (Math.max(0, lost) / (got + Math.max(0, lost))) * 100 : 0;
    row.loss.textContent = `${lossPct < 10 ? lossPct.toFixed(1) : Math.round(lossPct)}%`;
    const remote = typeof p.remote_fraction_lost === "number" ? ` · they lose ${(p.remote_fraction_lost * 100).toFixed(1)}% of ours` : "";
    row.loss.title = `${lost} lost of ${got + Math.max(0, lost)} packets in${remote}`;
    row.loss.className = `mono ${lossPct >= 5 ? "bad" : lossPct >= 1 ? "warn" : ""}`;
    const j = Number(p.jitter_ms) || 0;
    row.jitter.textContent = `${j.toFixed(j < 10 ? 1 : 0)} ms`;
    row.jitter.className = `mono ${j >= 60 ? "bad" : j >= 30 ? "warn" : ""}`;
    row.jitter.title = typeof p.rtt_ms === "number" ? `round trip ${p.rtt_ms.toFixed(0)} ms` : "";
  }

  function updateLevels() {
    let parts = 0;
    let speaking = 0;
    for (const [name, room] of rooms) {
      const r = roomEls.get(name);
      const ps = room.participants || {};
      for (const [id, p] of Object.entries(ps)) {
        parts++;
        if (p.speaking) speaking++;
        const row = r && r.rows.get(id);
        if (row) fillLevel(row, p);
      }
      if (r) {
        const s = room.active_speaker;
        r.speaker.textContent = s == null ? "" : `▶ ${nameOf(s)}`;
        r.speaker.title = s == null ? "" : "Active speaker";
      }
    }
    $("tot-rooms").textContent = String(rooms.size);
    $("tot-parts").textContent = String(parts);
    $("tot-speaking").textContent = String(speaking);
  }

  // ------------------------------------------------------------------ rendering: standby

  function renderStatus() {
    const st = status || {};
    const role = st.role || "unknown";
    const roleEl = $("node-role");
    roleEl.textContent = role.replace("_", " ").toUpperCase();
    roleEl.className = `role role-${role}`;

    let word;
    let cls;
    let why;
    if (role === "standalone") {
      [word, cls, why] = ["STANDALONE", "prot-none", "No hot standby configured: if this node fails, every call ends."];
    } else if (role === "taking_over") {
      [word, cls, why] = ["TAKING OVER", "prot-warn", "This node is taking over the service."];
    } else if (st.protected) {
      [word, cls, why] = [
        "PROTECTED",
        "prot-ok",
        role === "backup" ? "This node is the synced standby of the serving primary." : "A synced standby stands behind this node.",
      ];
    } else {
      const peerWhy = {
        dead: "The peer is dead: no standby. If this node fails, every call ends.",
        sync_lost: "Sync link lost (partition): the peer is alive on the clients' path but not replicating.",
        unknown: "Waiting for the peer.",
        alive: "The peer is alive but not synced yet.",
      };
      [word, cls, why] = ["UNPROTECTED", "prot-bad", peerWhy[st.peer] || `Peer ${st.peer || "unknown"}.`];
    }
    $("protection").className = `protection ${cls}`;
    $("prot-word").textContent = word;
    $("prot-why").textContent = why;

    $("ft-role").textContent = role;
    const peer = st.peer || "–";
    const peerEl = $("ft-peer");
    peerEl.replaceChildren(el("span", `dot-inline peer-${peer}`), document.createTextNode(peer.replace("_", " ")));
    $("ft-synced").textContent = st.synced ? "yes" : "no";
    const rep = st.replication || {};
    const lag = Number(rep.lag_ms) || 0;
    const lagEl = $("ft-lag");
    lagEl.textContent = role === "standalone" ? "–" : fmtMs(lag);
    lagEl.className = lag >= 1000 ? "bad" : lag >= 100 ? "warn" : "";
    $("ft-unacked").textContent = role === "standalone" ? "–" : `${rep.unacked ?? 0} / ${rep.held_messages ?? 0}`;
    $("ft-committed").textContent = role === "standalone" ? "–" : String(rep.committed ?? 0);
    $("ft-backup-row").hidden = role !== "backup";
    $("ft-beacons").textContent = `${st.beacons ?? 0} / ${st.beacons_refused ?? 0}`;
    const t = st.last_takeover;
    const tk = $("ft-takeover");
    if (t) {
      tk.textContent = `${fmtTime(t.at_unix_ms)} (${ago(t.at_unix_ms)}) · ${fmtMs(t.duration_ms)} · ${plural(t.calls, "call", "calls")}, ${plural(t.rooms, "room", "rooms")}`;
      tk.title = new Date(t.at_unix_ms).toString();
    } else {
      tk.textContent = "none";
      tk.title = "";
    }
    const fo = $("failover");
    const busy = pending.has("failover");
    fo.disabled = role === "standalone" || busy;
    $("failover-note").textContent = role === "standalone" ? "needs a hot-standby pair" : busy ? "requesting…" : "";
  }

  // ------------------------------------------------------------------ actions

  /** Requests in flight, by key (their buttons are disabled meanwhile). */
  const pending = new Set();

  async function act(key, what, fn) {
    if (pending.has(key)) return false;
    pending.add(key);
    renderRooms();
    renderStatus();
    try {
      const r = await fn();
      return r === undefined ? true : r;
    } catch (e) {
      if (e.status === 401) return false;
      const why =
        e.status === 404 && !e.explained
          ? "not found (404): the room or participant is gone, or this server does not offer this action"
          : e.status
            ? `${e.message} (HTTP ${e.status})`
            : e.message;
      const message = `${what} failed: ${why}`;
      fail(message);
      toast(message, "error");
      return false;
    } finally {
      pending.delete(key);
      renderRooms();
      renderStatus();
    }
  }

  function partPath(room, id) {
    return `/api/rooms/${encodeURIComponent(room)}/participants/${encodeURIComponent(id)}`;
  }

  function muteAction(room, id, mute) {
    const who = nameOf(id);
    return act(`mute|${room}|${id}`, `${mute ? "Mute" : "Unmute"} ${who}`, async () => {
      const p = await request("POST", `${partPath(room, id)}/${mute ? "mute" : "unmute"}`);
      const r = rooms.get(room);
      if (r && r.participants[id]) Object.assign(r.participants[id], p && typeof p === "object" ? p : { muted: mute });
      toast(`${who} ${mute ? "muted" : "unmuted"}.`, "ok");
    });
  }

  async function kickAction(room, id, confirmed) {
    const who = nameOf(id);
    if (!confirmed && !(await confirmDialog("Kick participant?", `${who} is removed from room ${room} (the call is ended with a BYE).`, "Kick"))) return false;
    return act(`kick|${room}|${id}`, `Kick ${who}`, async () => {
      await request("DELETE", partPath(room, id));
      toast(`${who} removed from ${room}.`, "ok");
    });
  }

  function roomAction(room, settings) {
    const r = rooms.get(room) || {};
    const body = {
      locked: settings.locked !== undefined ? !!settings.locked : !!r.locked,
    };
    const max = settings.max_participants !== undefined ? settings.max_participants : r.max_participants;
    if (max != null) body.max_participants = max;
    const what = settings.locked !== undefined ? `${settings.locked ? "Lock" : "Unlock"} ${room}` : `Set max participants of ${room}`;
    return act(`room|${room}`, what, async () => {
      const res = await request("PUT", `/api/rooms/${encodeURIComponent(room)}`, body);
      const cur = rooms.get(room);
      if (cur) Object.assign(cur, res && typeof res === "object" && !Array.isArray(res) ? roomInfo(res) : body);
      const re = roomEls.get(room);
      if (re) delete re.max.dataset.dirty;
      toast(`${room}: ${body.locked ? "locked" : "unlocked"}${body.max_participants != null ? `, max ${body.max_participants}` : ""}.`, "ok");
    });
  }

  async function failoverAction(confirmed) {
    if (
      !confirmed &&
      !(await confirmDialog(
        "Planned switchover?",
        "The standby takes over the service address and every call, then this node becomes the standby. Calls continue; this page reconnects.",
        "Switch over",
      ))
    )
      return false;
    return act("failover", "Planned switchover", async () => {
      await request("POST", "/api/failover");
      toast("Switchover requested: the service moves to the peer; this page reconnects.", "warn");
    });
  }

  function confirmDialog(title, text, okText) {
    const d = $("confirm");
    $("confirm-title").textContent = title;
    $("confirm-text").textContent = text;
    $("confirm-ok").textContent = okText;
    return new Promise((resolve) => {
      const done = () => {
        d.removeEventListener("close", done);
        resolve(d.returnValue === "ok");
      };
      d.addEventListener("close", done);
      d.returnValue = "cancel";
      d.showModal();
      $("confirm-cancel").focus();
    });
  }

  // ------------------------------------------------------------------ toasts and formats

  function toast(text, kind) {
    const t = el("div", `toast toast-${kind || "info"}`, text);
    t.setAttribute("role", kind === "error" ? "alert" : "status");
    t.addEventListener("click", () => t.remove());
    $("toasts").append(t);
    while ($("toasts").children.length > 4) $("toasts").firstChild.remove();
    setTimeout(() => t.remove(), kind === "error" ? 10000 : 5000);
  }

  function fmtTime(ms) {
    const d = new Date(ms);
    const p = (n, w = 2) => String(n).padStart(w, "0");
    return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  }

  function fmtMs(ms) {
    const n = Number(ms) || 0;
    return n >= 1000 ? `${(n / 1000).toFixed(2)} s` : `${n.toFixed(n < 100 ? 1 : 0)} ms`;
  }

  function ago(ms) {
    const s = Math.max(0, Math.round((Date.now() + clockOffset - ms) / 1000));
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86400) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} d ago`;
  }

  function plural(n, one, many) {
    return `${n} ${Number(n) === 1 ? one : many}`;
  }

  function hex(n) {
    return `0x${(Number(n) >>> 0).toString(16).padStart(8, "0")}`;
  }

  // ------------------------------------------------------------------ wiring

  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $("token").value.trim();
    if (!t) return;
    login(t);
  });
  $("logout").addEventListener("click", logout);
  $("failover").addEventListener("click", () => failoverAction());
  $("log-speakers").addEventListener("change", renderLog);
  $("log-clear").addEventListener("click", () => {
    api.log.length = 0;
    renderLog();
  });
  // The "ago" of the last takeover.
  setInterval(() => status && status.last_takeover && renderStatus(), 10000);

  $("node-host").textContent = location.host;
  readToken();
  renderRooms();
  renderStatus();
  renderLog();
  start();
})();
