// Understudy participant page: join a room over WHIP (RFC 9725) with the microphone and the
// camera, hear the room's mix, see the active speaker's video, see who is in the room. No
// build step, no dependencies.
//
// The room is the last segment of the page's path (`/room/{room}`). Join: getUserMedia ->
// RTCPeerConnection (max-bundle, no ICE servers: the server is ICE-lite and its answer carries
// its host candidate; the audio transceiver first, then the video one: sendrecv with the
// camera, recvonly without one) -> offer -> POST /whip/{room}[?name=] -> answer. Leave: DELETE
// on the Location the server gave, then close. `?autojoin=1[&name=N]` joins at load;
// `?video=0` joins with the microphone only and no video line at all.
//
// For automation: `window.understudy = { join(name), leave(), pc, events, stats() }`.
// `events` records every state change as {t: ms since page load, type, value}; `stats()`
// resolves to a compact summary of `pc.getStats()` (see `summarize`).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const segments = location.pathname.split("/").filter(Boolean);
  const room = safeDecode(segments[segments.length - 1] || "");
  const validRoom = /^[A-Za-z0-9._~-]{1,64}$/.test(room);

  const wantVideo = params.get("video") !== "0";
  const GATHER_WAIT_MS = 1000; // ICE-lite server: our candidates are not needed in the offer
  const ROSTER_POLL_MS = 1000;
  const METER_POLL_MS = 250;

  /** Everything that happened, in order: {t, type, value}. */
  const events = [];
  const api = {
    join,
    leave,
    pc: null,
    events,
    stats,
    /** The UI state: idle, joining, connecting, connected, reconnecting, failed, left. */
    state: "idle",
    /** The WHIP resource URL (the POST's Location), while joined. */
    resource: null,
  };
  window.understudy = api;

  let session = null; // {pc, stream, resource, closed}
  let lastStats = null; // kept across leave(): the final numbers stay readable
  let myId = null;

  function record(type, value) {
    events.push({ t: Math.round(performance.now()), type, value: value === undefined ? null : value });
  }

  function safeDecode(s) {
    try {
      return decodeURIComponent(s);
    } catch {
      return s;
    }
  }

  // ---------------------------------------------------------------- UI state

  const STATUS_TEXT = {
    idle: "Not connected",
    joining: "Joining…",
    connecting: "Connecting…",
    connected: "Connected",
    reconnecting: "Reconnecting…",
    failed: "Failed",
    left: "Left",
  };

  /** Move the UI to `state`; `label` replaces the default text of the status pill. */
  function setState(state, label) {
    if (api.state === state) return;
    api.state = state;
    record("state", state);
    const el = $("status");
    el.textContent = label || STATUS_TEXT[state] || state;
    el.className = `status status-${state}`;
    const active = state === "joining" || state === "connecting" || state === "connected" || state === "reconnecting";
    $("join").disabled = active || !validRoom;
    $("leave").disabled = !active;
    $("name").disabled = active;
    $("join").textContent = state === "left" || state === "failed" ? "Join again" : "Join";
  }

  function showError(message) {
    const el = $("error");
    el.textContent = message;
    el.hidden = false;
  }

  function clearError() {
    $("error").hidden = true;
    $("error").textContent = "";
  }

  function fail(message) {
    record("error", message);
    showError(message);
  }

  function showPcStates(pc) {
    $("st-signaling").textContent = pc ? pc.signalingState : "–";
    $("st-ice").textContent = pc ? pc.iceConnectionState : "–";
    $("st-conn").textContent = pc ? pc.connectionState : "–";
  }

  // ---------------------------------------------------------------- join / leave

  /** Join the room as `name` (optional display name). Resolves when the answer is set. */
  async function join(name) {
    if (!validRoom) {
      fail(`"${room}" is not a valid room name (1 to 64 letters, digits and - _ . ~).`);
      return false;
    }
    if (session) return false; // already joining or joined
    if (typeof name === "string") $("name").value = name;
    name = $("name").value.trim();
    if (name) {
      try {
        localStorage.setItem("understudy.name", name);
      } catch {
        /* storage may be disabled */
      }
    }
    clearError();
    const s = { pc: null, stream: null, resource: null, closed: false };
    session = s;
    setState("joining");
    record("join", { room, name: name || null });
    try {
      s.stream = await getMic();
      if (s.closed) return false;
      const pc = new RTCPeerConnection({ bundlePolicy: "max-bundle", iceServers: [] });
      s.pc = pc;
      api.pc = pc;
      watch(pc, s);
      const [track] = s.stream.getAudioTracks();
      // Audio first: under max-bundle Chromium refuses an answer that declines the first
      // line of its BUNDLE group, and an audio-only server declines video.
      pc.addTransceiver(track, { direction: "sendrecv", streams: [s.stream] });
      if (wantVideo) {
        const [cam] = s.stream.getVideoTracks();
        if (cam) pc.addTransceiver(cam, { direction: "sendrecv", streams: [s.stream] });
        else pc.addTransceiver("video", { direction: "recvonly" });
      }
      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      record("offer", { sdpBytes: offer.sdp.length });
      await gathered(pc, GATHER_WAIT_MS);
      if (s.closed) return false;
      const answer = await whipPost(pc.localDescription.sdp, name, s);
      if (s.closed) {
        // Left while the POST was in flight: the server made a resource, remove it.
        if (s.resource) await deleteResource(s.resource);
        return false;
      }
      await pc.setRemoteDescription({ type: "answer", sdp: answer });
      record("answer", { sdpBytes: answer.length });
      if (api.state === "joining") setState("connecting");
      return true;
    } catch (e) {
      if (s.closed) return false;
      fail(e && e.message ? e.message : String(e));
      await teardown(s, "failed", "Could not join");
      return false;
    }
  }

  async function getMic() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error("This browser cannot capture audio here (a secure context — https or localhost — is needed).");
    }
    if (wantVideo) {
      try {
        const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
        const [track] = stream.getAudioTracks();
        const [cam] = stream.getVideoTracks();
        record("getUserMedia", { label: track ? track.label : null, video: cam ? cam.label : null });
        return stream;
      } catch (e) {
        // No camera (or refused): join with the microphone, still receiving video.
        record("warning", `camera unavailable (${(e && e.name) || e}): joining with the microphone only`);
      }
    }
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
      const [track] = stream.getAudioTracks();
      record("getUserMedia", { label: track ? track.label : null, video: null });
      return stream;
    } catch (e) {
      const why = e && e.name === "NotAllowedError" ? "permission was denied" : (e && (e.message || e.name)) || String(e);
      throw new Error(`Could not open the microphone: ${why}.`);
    }
  }

  /** Resolves when ICE gathering completes or after `ms`, whichever comes first. */
  function gathered(pc, ms) {
    if (pc.iceGatheringState === "complete") {
      record("gathering", "complete");
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = (how) => {
        clearTimeout(timer);
        pc.removeEventListener("icegatheringstatechange", onChange);
        record("gathering", how);
        resolve();
      };
      const onChange = () => {
        if (pc.iceGatheringState === "complete") done("complete");
      };
      const timer = setTimeout(() => done("timeout"), ms);
      pc.addEventListener("icegatheringstatechange", onChange);
    });
  }

  async function whipPost(sdp, name, s) {
    let url = `/whip/${encodeURIComponent(room)}`;
    if (name) url += `?name=${encodeURIComponent(name)}`;
    let res;
    try {
      res = await fetch(url, { method: "POST", headers: { "Content-Type": "application/sdp" }, body: sdp });
    } catch (e) {
      record("whip", { method: "POST", status: 0 });
      throw new Error(`Could not reach the server: ${e.message || e}`);
    }
    const body = await res.text();
    const location = res.headers.get("Location");
    record("whip", { method: "POST", status: res.status, location });
    if (!res.ok) {
      const reason = body.trim().slice(0, 300) || res.statusText;
      throw new Error(`The server refused to join (${res.status}): ${reason}`);
    }
    if (location) {
      s.resource = new URL(location, new URL(url, document.baseURI)).href;
      if (!s.closed) {
        api.resource = s.resource;
        const last = location.split("/").filter(Boolean).pop();
        myId = last && /^\d+$/.test(last) ? Number(last) : null;
      }
    } else {
      record("warning", "no Location header in the WHIP answer: leaving will not notify the server");
    }
    if (!body.startsWith("v=")) throw new Error(`The server's answer is not SDP (${res.status}).`);
    return body;
  }

  function watch(pc, s) {
    const onState = (type, get) => {
      pc.addEventListener(type, () => {
        if (s.closed) return;
        record(type, get());
        showPcStates(pc);
        followPc(pc, s);
      });
    };
    onState("signalingstatechange", () => pc.signalingState);
    onState("icegatheringstatechange", () => pc.iceGatheringState);
    onState("iceconnectionstatechange", () => pc.iceConnectionState);
    onState("connectionstatechange", () => pc.connectionState);
    pc.addEventListener("track", (e) => {
      record("track", { kind: e.track.kind, id: e.track.id });
      if (e.track.kind === "video") {
        const video = $("remote-video");
        video.srcObject = new MediaStream([e.track]);
        // A placeholder until a picture comes (alone in the room, nobody sends video), and
        // again while the stream is silent (the track mutes).
        showVideo(false);
        video.onloadeddata = () => showVideo(true);
        video.onresize = () => showVideo(video.videoWidth > 0 && !e.track.muted);
        e.track.onmute = () => showVideo(false);
        e.track.onunmute = () => showVideo(video.videoWidth > 0);
        const p = video.play();
        if (p && p.catch) p.catch(() => {});
        return;
      }
      const audio = $("remote");
      audio.srcObject = new MediaStream([e.track]);
      audio.muted = false; // Chromium reports audioLevel 0 for a muted sink
      audio.volume = 1;
      play(audio);
    });
    showPcStates(pc);
  }

  // The received video or its placeholder; each change is an event ("video", shown).
  let videoShown = null;
  function showVideo(on) {
    $("remote-video").hidden = !on;
    $("video-waiting").hidden = on;
    if (videoShown !== on) {
      videoShown = on;
      record("video", { shown: on });
    }
  }

  function play(audio) {
    const p = audio.play();
    if (p && p.catch) {
      p.then(() => {
        record("playing", true);
        $("unmute").hidden = true;
      }).catch((e) => {
        record("warning", `audio playback blocked: ${e.name || e}`);
        $("unmute").hidden = false;
      });
    }
  }

  function followPc(pc, s) {
    const c = pc.connectionState;
    if (c === "connected") setState("connected");
    else if (c === "disconnected") setState("reconnecting");
    else if (c === "failed") {
      fail("The connection to the server failed or was lost (ICE/DTLS).");
      teardown(s, "failed", "Connection lost");
    } else if (c === "connecting" && api.state === "joining") setState("connecting");
  }

  /** Leave the room: DELETE the WHIP resource, close the connection, release the mic. */
  async function leave() {
    const s = session;
    if (!s) return false;
    await teardown(s, "left");
    return true;
  }

  async function teardown(s, finalState, label) {
    if (s.closed) return;
    s.closed = true;
    if (s.pc) {
      try {
        lastStats = await summarize(s.pc);
      } catch {
        /* keep the previous numbers */
      }
    }
    const resource = s.resource;
    s.resource = null;
    if (s.pc) {
      s.pc.close();
      record("closed", true);
    }
    if (s.stream) s.stream.getTracks().forEach((t) => t.stop());
    $("remote").srcObject = null;
    $("remote-video").srcObject = null;
    $("remote-video").hidden = true;
    $("video-waiting").hidden = true;
    videoShown = null;
    $("unmute").hidden = true;
    if (session === s) session = null;
    api.resource = null;
    myId = null;
    for (const r of rows.values()) r.you.hidden = true;
    showPcStates(null);
    setMeter($("mic-level"), null);
    setState(finalState, label);
    if (resource) await deleteResource(resource);
  }

  async function deleteResource(resource) {
    try {
      const res = await fetch(resource, { method: "DELETE", keepalive: true });
      record("whip", { method: "DELETE", status: res.status });
      if (!res.ok && res.status !== 404) {
        showError(`The server did not confirm that you left (${res.status}).`);
      }
    } catch (e) {
      record("whip", { method: "DELETE", status: 0 });
      record("warning", `DELETE failed: ${e.message || e}`);
    }
  }

  // Closing the tab leaves the room too (keepalive lets the request outlive the page).
  window.addEventListener("pagehide", () => {
    if (session && session.resource) {
      fetch(session.resource, { method: "DELETE", keepalive: true }).catch(() => {});
      session.resource = null;
    }
  });

  // ---------------------------------------------------------------- stats

  /** A compact summary of `pc.getStats()` (the last one after leave()). */
  async function stats() {
    const pc = session && session.pc;
    if (!pc || pc.signalingState === "closed") return lastStats || summaryOf(null);
    lastStats = await summarize(pc);
    return lastStats;
  }

  async function summarize(pc) {
    return summaryOf(await pc.getStats());
  }

  function summaryOf(report) {
    const out = {
      transport: null,
      pair: null,
      inbound: null,
      outbound: null,
      source: null,
      inboundVideo: null,
      outboundVideo: null,
    };
    if (!report) return out;
    const all = [];
    report.forEach((r) => all.push(r));
    const byId = (id) => (id ? report.get(id) : undefined);
    const transport = all.find((r) => r.type === "transport");
    let pair = transport ? byId(transport.selectedCandidatePairId) : undefined;
    if (!pair) pair = all.find((r) => r.type === "candidate-pair" && r.nominated && r.state === "succeeded");
    if (transport) {
      out.transport = {
        iceState: transport.iceState ?? null,
        dtlsState: transport.dtlsState ?? null,
        tlsVersion: transport.tlsVersion ?? null,
        srtpCipher: transport.srtpCipher ?? null,
        selectedCandidatePairChanges: transport.selectedCandidatePairChanges ?? null,
        iceLocalUsernameFragment: transport.iceLocalUsernameFragment ?? null,
      };
    }
    if (pair) {
      const cand = (id) => {
        const c = byId(id);
        return c ? `${c.address ?? c.ip}:${c.port}/${c.protocol} ${c.candidateType}` : null;
      };
      out.pair = {
        state: pair.state ?? null,
        nominated: pair.nominated ?? null,
        consentRequestsSent: pair.consentRequestsSent ?? null,
        requestsSent: pair.requestsSent ?? null,
        requestsReceived: pair.requestsReceived ?? null,
        responsesReceived: pair.responsesReceived ?? null,
        currentRoundTripTime: pair.currentRoundTripTime ?? null,
        local: cand(pair.localCandidateId),
        remote: cand(pair.remoteCandidateId),
      };
    }
    const inbound = all.find((r) => r.type === "inbound-rtp" && r.kind === "audio");
    if (inbound) {
      out.inbound = {
        ssrc: inbound.ssrc ?? null,
        packetsReceived: inbound.packetsReceived ?? 0,
        packetsLost: inbound.packetsLost ?? 0,
        jitter: inbound.jitter ?? null,
        concealedSamples: inbound.concealedSamples ?? 0,
        totalSamplesReceived: inbound.totalSamplesReceived ?? 0,
        audioLevel: inbound.audioLevel ?? null,
        totalAudioEnergy: inbound.totalAudioEnergy ?? null,
      };
    }
    const outbound = all.find((r) => r.type === "outbound-rtp" && r.kind === "audio");
    if (outbound) {
      out.outbound = {
        ssrc: outbound.ssrc ?? null,
        packetsSent: outbound.packetsSent ?? 0,
        bytesSent: outbound.bytesSent ?? 0,
      };
    }
    const inVideo = all.find((r) => r.type === "inbound-rtp" && r.kind === "video");
    if (inVideo) {
      out.inboundVideo = {
        ssrc: inVideo.ssrc ?? null,
        packetsReceived: inVideo.packetsReceived ?? 0,
        packetsLost: inVideo.packetsLost ?? 0,
        framesReceived: inVideo.framesReceived ?? 0,
        framesDecoded: inVideo.framesDecoded ?? 0,
        keyFramesDecoded: inVideo.keyFramesDecoded ?? 0,
        framesDropped: inVideo.framesDropped ?? 0,
        frameWidth: inVideo.frameWidth ?? null,
        frameHeight: inVideo.frameHeight ?? null,
        freezeCount: inVideo.freezeCount ?? 0,
        totalFreezesDuration: inVideo.totalFreezesDuration ?? 0,
        pauseCount: inVideo.pauseCount ?? 0,
        totalPausesDuration: inVideo.totalPausesDuration ?? 0,
        pliCount: inVideo.pliCount ?? 0,
        firCount: inVideo.firCount ?? 0,
        nackCount: inVideo.nackCount ?? 0,
        decoderImplementation: inVideo.decoderImplementation ?? null,
      };
    }
    const outVideo = all.find((r) => r.type === "outbound-rtp" && r.kind === "video");
    if (outVideo) {
      out.outboundVideo = {
        ssrc: outVideo.ssrc ?? null,
        packetsSent: outVideo.packetsSent ?? 0,
        framesEncoded: outVideo.framesEncoded ?? 0,
        keyFramesEncoded: outVideo.keyFramesEncoded ?? 0,
        frameWidth: outVideo.frameWidth ?? null,
        frameHeight: outVideo.frameHeight ?? null,
        pliCount: outVideo.pliCount ?? 0,
        firCount: outVideo.firCount ?? 0,
        nackCount: outVideo.nackCount ?? 0,
        retransmittedPacketsSent: outVideo.retransmittedPacketsSent ?? 0,
        targetBitrate: outVideo.targetBitrate ?? null,
        qualityLimitationReason: outVideo.qualityLimitationReason ?? null,
      };
    }
    const source = all.find((r) => r.type === "media-source" && r.kind === "audio");
    if (source) {
      out.source = { audioLevel: source.audioLevel ?? null, totalAudioEnergy: source.totalAudioEnergy ?? null };
    }
    return out;
  }

  // ---------------------------------------------------------------- meters

  /** Fill a meter from a dBov level (-60 dB and below: empty); null: idle. */
  function setMeter(el, dbov) {
    const frac = dbov == null || !Number.isFinite(dbov) ? 0 : Math.min(1, Math.max(0, (dbov + 60) / 60));
    el.style.width = `${Math.round(frac * 100)}%`;
  }

  async function pollMic() {
    const s = session;
    if (s && s.pc && !s.closed) {
      try {
        const sum = summaryOf(await s.pc.getStats());
        const lin = sum.source && sum.source.audioLevel;
        if (!s.closed) setMeter($("mic-level"), lin > 0 ? 20 * Math.log10(lin) : null);
      } catch {
        /* closed meanwhile */
      }
    }
    setTimeout(pollMic, METER_POLL_MS);
  }

  // ---------------------------------------------------------------- roster

  const rows = new Map(); // participant id -> {li, name, kind, detail, meter}

  /** A member of `GET /rooms/{room}/members`: {id, name, kind, speaking, level_dbov, muted}. */
  function describe(p) {
    const raw = typeof p.name === "string" ? p.name : "";
    const sip = typeof p.kind === "string" && p.kind.toLowerCase() === "sip";
    let name = sip ? safeDecode(raw) : raw;
    if (!sip && /^webrtc:/i.test(raw)) name = `Guest ${raw.slice("webrtc:".length)}`;
    const kind = sip ? "SIP" : "WebRTC";
    const bits = [];
    if (p.muted === true) bits.push("muted by the moderator");
    return { name: name || `#${p.id}`, kind, detail: bits.join(" · ") };
  }

  function rowFor(id) {
    let r = rows.get(id);
    if (r) return r;
    const li = document.createElement("li");
    li.className = "person";
    const dot = document.createElement("span");
    dot.className = "dot";
    dot.setAttribute("aria-hidden", "true");
    const main = document.createElement("div");
    main.className = "person-main";
    const line = document.createElement("div");
    line.className = "person-line";
    const name = document.createElement("span");
    name.className = "person-name";
    const kind = document.createElement("span");
    kind.className = "badge";
    const you = document.createElement("span");
    you.className = "badge badge-you";
    you.textContent = "you";
    line.append(name, kind, you);
    const detail = document.createElement("div");
    detail.className = "person-detail";
    main.append(line, detail);
    const meterBox = document.createElement("span");
    meterBox.className = "meter";
    const meter = document.createElement("span");
    meter.className = "meter-fill";
    meterBox.append(meter);
    li.append(dot, main, meterBox);
    r = { li, name, kind, you, detail, meter };
    rows.set(id, r);
    return r;
  }

  function renderRoster(roomView) {
    const list = $("people");
    const participants = roomView && Array.isArray(roomView.members) ? roomView.members.slice() : [];
    participants.sort((a, b) => a.id - b.id);
    const seen = new Set();
    for (const p of participants) {
      if (!p || typeof p.id !== "number") continue;
      seen.add(p.id);
      const r = rowFor(p.id);
      const d = describe(p);
      r.name.textContent = d.name;
      r.name.title = d.name;
      r.kind.textContent = d.kind;
      r.kind.className = `badge badge-${d.kind === "SIP" ? "sip" : "webrtc"}`;
      r.you.hidden = myId !== p.id;
      r.detail.textContent = d.detail;
      const active = roomView.active_speaker === p.id;
      r.li.classList.toggle("speaking", !!p.speaking || active);
      r.li.classList.toggle("active", active);
      setMeter(r.meter, typeof p.level_dbov === "number" ? p.level_dbov : null);
      list.append(r.li); // keeps the sorted order
    }
    for (const [id, r] of rows) {
      if (!seen.has(id)) {
        r.li.remove();
        rows.delete(id);
      }
    }
    $("count").textContent = participants.length ? `(${participants.length})` : "";
    $("people-empty").hidden = participants.length > 0;
  }

  // The room's roster (open, no admin token): who is in, SIP or WebRTC, speaking, level.
  async function pollRoster() {
    try {
      if (validRoom) {
        const res = await fetch(`/rooms/${encodeURIComponent(room)}/members`, { cache: "no-store" });
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        renderRoster(await res.json());
      } else {
        renderRoster(null);
      }
      $("people-error").hidden = true;
    } catch (e) {
      $("people-error").textContent = `Could not load the participant list (${e.message || e}).`;
      $("people-error").hidden = false;
    }
    setTimeout(pollRoster, ROSTER_POLL_MS);
  }

  // ---------------------------------------------------------------- start

  function start() {
    $("room-name").textContent = room || "(no room)";
    document.title = `${room || "Room"} · Understudy`;
    let saved = null;
    try {
      saved = localStorage.getItem("understudy.name");
    } catch {
      /* storage may be disabled */
    }
    $("name").value = params.get("name") ?? saved ?? "";
    $("join-form").addEventListener("submit", (e) => {
      e.preventDefault();
      join();
    });
    $("leave").addEventListener("click", () => leave());
    $("unmute").addEventListener("click", () => play($("remote")));
    if (!validRoom) {
      $("join").disabled = true;
      showError(`"${room}" is not a valid room name (1 to 64 letters, digits and - _ . ~).`);
    }
    record("loaded", { room, valid: validRoom });
    pollRoster();
    pollMic();
    if (params.get("autojoin") === "1" && validRoom) join(params.get("name") ?? "");
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
