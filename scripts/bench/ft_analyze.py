#!/usr/bin/env python3
"""Analysis for scripts/bench-ft: FT on vs FT off from the two client captures.

Media one-way delay talker -> server -> listener. Both ends of every measured path are in one
capture (the client namespace's eth0, one clock): the talker's sent RTP and each listener's
received mix. Every A-law packet is decoded and its samples placed at capture time +
i/8000 s; the short-term energy (1 ms bins) is turned into an amplitude envelope smoothed
over 10 ms; per 2 s window of a listener's envelope, the lag (0-400 ms, 1 ms steps) that
maximises the normalised cross-correlation with its room's talker envelope is the delay.
Windows where the talker is mostly silent or the peak correlation is below 0.5 are skipped.
A room's listeners get the same mix (one shared encoding), so a sample is one room and one
window (the median over its listeners).

Cross-check at sample resolution (exact_delays): each received packet's audio is found in the
talker's sent audio, which works here because a mix of one voice is that voice.

SIP setup latency: first INVITE sent -> first 200 OK (CSeq INVITE) received, per Call-ID.
"""
import argparse
import json
import math
import re
import subprocess
import sys
import warnings

warnings.filterwarnings("ignore", category=DeprecationWarning)
import audioop  # noqa: E402 (python < 3.13)

import numpy as np  # noqa: E402

TALKER_PORTS = range(20000, 22000)
LISTENER_PORTS = range(22000, 24000)
WINDOW_MS = 2000
MAX_LAG_MS = 400
SMOOTH_MS = 10
MIN_CORR = 0.5


def tshark(pcap, display_filter, fields, extra=()):
    cmd = ["tshark", "-r", pcap, "-n", *extra, "-Y", display_filter, "-T", "fields",
           "-E", "separator=\t", "-E", "occurrence=f"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in out.splitlines() if line]


def pct(values, q):
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    v = sorted(values)
    k = max(0, min(len(v) - 1, math.ceil(q / 100 * len(v)) - 1))
    return v[k]


def rooms_of(path):
    """{room: (talker_port, [listener_ports])} from a saved /api/rooms."""
    doc = json.load(open(path))
    out = {}
    for room in doc["rooms"]:
        ports = [int(p["remote_media"].rsplit(":", 1)[1]) for p in room["participants"].values()]
        talkers = [p for p in ports if p in TALKER_PORTS]
        listeners = [p for p in ports if p in LISTENER_PORTS]
        if len(talkers) == 1 and listeners:
            out[room["name"]] = (talkers[0], listeners)
    return out


def read_streams(pcap, client, server, t0, t1, talker_ports, listener_ports):
    """Decoded A-law packets per stream, ('tx', port) for talkers (sent by the client) and
    ('rx', port) for listeners (received): [(capture time, samples as float)], from
    t0 - MAX_LAG_MS - 1 s to t1."""
    rows = tshark(pcap, f"rtp && ip.addr == {server}",
                  ["frame.time_epoch", "ip.src", "udp.srcport", "ip.dst", "udp.dstport",
                   "rtp.p_type", "rtp.payload"],
                  ["-o", "rtp.heuristic_rtp:TRUE"])
    base = t0 - MAX_LAG_MS / 1000 - 1.0
    streams = {}
    for t, src, sport, dst, dport, pt, payload in rows:
        t = float(t)
        if t < base or t > t1 + 0.1 or pt != "8" or not payload:
            continue
        if src == client and int(sport) in talker_ports:
            key = ("tx", int(sport))
        elif dst == client and int(dport) in listener_ports:
            key = ("rx", int(dport))
        else:
            continue
        pcm = np.frombuffer(audioop.alaw2lin(bytes.fromhex(payload.replace(":", "")), 2),
                            dtype="<i2").astype(np.float64)
        streams.setdefault(key, []).append((t, pcm))
    return base, streams


def envelopes(base, t1, streams):
    """Per stream: amplitude envelope (sqrt of the energy per 1 ms bin, sample i of a packet
    captured at t placed at t + i/8000), smoothed over SMOOTH_MS, bins from base."""
    n_ms = int((t1 - base) * 1000) + 100
    kernel = np.ones(SMOOTH_MS) / SMOOTH_MS
    out = {}
    for key, packets in streams.items():
        e = np.zeros(n_ms)
        for t, pcm in packets:
            idx = ((t - base) * 1000.0 + np.arange(len(pcm)) / 8.0).astype(np.int64)
            ok = idx < n_ms
            np.add.at(e, idx[ok], pcm[ok] ** 2)
        out[key] = np.convolve(np.sqrt(e), kernel, mode="same")
    return out


def exact_delays(tx, rx, t0, t1):
    """Cross-check at sample resolution, valid here because a listener's mix holds one voice
    only (its room's talker: the listeners send nothing or A-law silence): find each received packet's
    samples in the talker's sent stream (normalised correlation >= 0.95, lag 0-MAX_LAG_MS)
    and return arrival time - the matched talker sample's time (same placement as the
    envelopes: sample i of a packet at capture time + i/8000), in ms."""
    if not tx or not rx:
        return []
    xs = np.concatenate([p for _, p in tx])
    xt = np.concatenate([t + np.arange(len(p)) / 8000.0 for t, p in tx])
    out = []
    for t, p in rx:
        if t < t0 or t > t1 or np.sqrt((p ** 2).mean()) < 300:
            continue  # outside the window, or too quiet to match
        lo = np.searchsorted(xt, t - MAX_LAG_MS / 1000.0)
        hi = np.searchsorted(xt, t) + len(p)
        seg = xs[lo:hi]
        if len(seg) < len(p):
            continue
        c = np.correlate(seg, p, mode="valid")
        norm = np.sqrt(np.convolve(seg ** 2, np.ones(len(p)), mode="valid") * (p ** 2).sum())
        r = c / np.maximum(norm, 1e-9)
        i = int(np.argmax(r))
        if r[i] >= 0.95:
            out.append((t - xt[lo + i]) * 1000.0)
    return out


def best_lag(x_full, y, start):
    """Lag in ms (0..MAX_LAG_MS) maximising corr(x_full[start-lag : start-lag+len(y)], y)."""
    n = len(y)
    yc = y - y.mean()
    ys = np.sqrt((yc ** 2).sum())
    if ys == 0:
        return None, 0.0
    best = (None, -2.0)
    for lag in range(0, MAX_LAG_MS + 1):
        x = x_full[start - lag:start - lag + n]
        xc = x - x.mean()
        xs = np.sqrt((xc ** 2).sum())
        if xs == 0:
            continue
        c = float((xc * yc).sum() / (xs * ys))
        if c > best[1]:
            best = (lag, c)
    return best


def media_delay(pcap, client, server, rooms, t0, t1):
    talker_ports = {t for t, _ in rooms.values()}
    listener_ports = {p for _, ls in rooms.values() for p in ls}
    base, streams = read_streams(pcap, client, server, t0, t1, talker_ports, listener_ports)
    env = envelopes(base, t1, streams)
    exact = []
    for talker, listeners in rooms.values():
        # One listener per room: the others receive the same packets.
        exact += exact_delays(streams.get(("tx", talker), []),
                              streams.get(("rx", listeners[0]), []), t0, t1)
    lags, corrs, skipped = [], [], 0
    first = int((t0 - base) * 1000)
    last = int((t1 - base) * 1000)
    for talker, listeners in rooms.values():
        x = env.get(("tx", talker))
        if x is None:
            continue
        loud = np.percentile(x[first:last], 90) if last > first else 0
        for s in range(first, last - WINDOW_MS + 1, WINDOW_MS):
            # Mostly silent talker window: nothing to correlate.
            if (x[s - MAX_LAG_MS:s + WINDOW_MS] > 0.3 * loud).mean() < 0.2:
                skipped += 1
                continue
            # A room's listeners receive the same mix (one shared encoding): one sample per
            # room and window, the median over its listeners.
            found = []
            for lp in listeners:
                y = env.get(("rx", lp))
                if y is not None:
                    lag, c = best_lag(x, y[s:s + WINDOW_MS], s)
                    if lag is not None and c >= MIN_CORR:
                        found.append((lag, c))
            if not found:
                skipped += 1
                continue
            found.sort()
            lag, c = found[len(found) // 2]
            lags.append(lag)
            corrs.append(c)
    return lags, corrs, skipped, exact


def setup_latency(pcap, client, t_from, t_to):
    """INVITE -> 200 OK per Call-ID, in ms, split by the client's SIP port."""
    rows = tshark(pcap, "sip", ["frame.time_epoch", "ip.src", "udp.srcport", "sip.Call-ID",
                                "sip.Method", "sip.Status-Code", "sip.CSeq.method"])
    invite, ok, port, retrans = {}, {}, {}, 0
    for t, src, sport, cid, method, status, cseq in rows:
        t = float(t)
        if src == client and method == "INVITE":
            if cid in invite:
                retrans += 1
            else:
                invite[cid] = t
                port[cid] = int(sport)
        elif src != client and status == "200" and cseq == "INVITE" and cid not in ok:
            ok[cid] = t
    by_port = {}
    for cid, t in invite.items():
        if t_from <= t <= t_to:
            by_port.setdefault(port[cid], []).append(
                (ok[cid] - t) * 1000 if cid in ok else float("inf"))
    return by_port, retrans


def histogram(metrics_path, name):
    """(buckets [(le, cumulative)], sum, count) of a Prometheus histogram."""
    buckets, total, count = [], 0.0, 0
    try:
        text = open(metrics_path).read()
    except OSError:
        return [], 0.0, 0
    for line in text.splitlines():
        m = re.match(rf'{name}_bucket\{{.*le="([^"]+)".*\}} (\S+)', line)
        if m:
            le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
            buckets.append((le, float(m.group(2))))
        elif line.startswith(f"{name}_sum"):
            total = float(line.split()[-1])
        elif line.startswith(f"{name}_count"):
            count = int(float(line.split()[-1]))
    return sorted(buckets), total, count


def hist_quantile(buckets, count, q):
    """Upper bound of the bucket holding quantile q."""
    for le, c in buckets:
        if c >= q * count:
            return le
    return float("inf")


def fmt_ms(v):
    return "lost" if v == float("inf") else (f"{v:.1f}" if v < 10 else f"{v:.0f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("work")
    ap.add_argument("--window", nargs=2, type=float, required=True)
    ap.add_argument("--probe-window", nargs=2, type=float, required=True)
    ap.add_argument("--hz", type=int, required=True,
                    help="units of the CPU samples per second (1e9: ns)")
    ap.add_argument("--idle-window", nargs=2, type=float, required=True)
    ap.add_argument("--cpu0", nargs=6, type=int, required=True)
    ap.add_argument("--cpu1", nargs=6, type=int, required=True)
    ap.add_argument("--cpu2", nargs=6, type=int, required=True)
    ap.add_argument("--calls", type=int, required=True)
    ap.add_argument("--end-participants", nargs=2, required=True)
    ap.add_argument("--vip", required=True)
    ap.add_argument("--standalone", required=True)
    ap.add_argument("--client-on", required=True)
    ap.add_argument("--client-off", required=True)
    ap.add_argument("--probe-rate", type=int, required=True)
    ap.add_argument("--probe-calls", type=int, required=True)
    ap.add_argument("--command", required=True)
    ap.add_argument("--load", required=True)
    ap.add_argument("--listeners", default="none")
    ap.add_argument("--media-delay", type=int, default=1,
                    help="0: SIP-only captures, no media-delay analysis")
    a = ap.parse_args()
    w = a.work
    t0, t1 = a.window
    p0, p1 = a.probe_window

    def cpu(ticks, span):
        """% of one core per server; NaN when the process exited meanwhile."""
        return [float("nan") if min(ticks[i], ticks[i + 1]) < 0
                else (ticks[i + 1] - ticks[i]) / a.hz / span * 100 for i in (0, 2, 4)]

    cpu0 = cpu(a.cpu0, a.idle_window[1] - a.idle_window[0])
    cpu1 = cpu(a.cpu1, t1 - t0)
    cpu2 = cpu(a.cpu2, p1 - p0)

    sides = {"on": (f"{w}/on.pcap", a.client_on, a.vip, f"{w}/rooms-on.json"),
             "off": (f"{w}/off.pcap", a.client_off, a.standalone, f"{w}/rooms-off.json")}
    media, setup, notes = {}, {}, []
    for side, (pcap, client, server, rooms_path) in sides.items():
        times = tshark(pcap, "frame.number == 1", ["frame.time_epoch"])
        last_t = subprocess.run(["capinfos", "-T", "-r", "-e", "-S", pcap], capture_output=True,
                                text=True).stdout.split()
        try:
            first_pkt, last_pkt = float(times[0][0]), float(last_t[-1])
            if first_pkt > t0 or last_pkt < p1 - 1:
                notes.append(f"capture {side} covers only {first_pkt:.1f}-{last_pkt:.1f} "
                             f"(window {t0:.1f}-{p1:.1f})")
        except (IndexError, ValueError):
            notes.append(f"capture {side}: cannot read its time span")
        rooms = rooms_of(rooms_path)
        if a.media_delay:
            lags, corrs, skipped, exact = media_delay(pcap, client, server, rooms, t0, t1)
        else:
            lags, corrs, skipped, exact = [], [], 0, []
        media[side] = (lags, corrs, skipped, len(rooms), exact)
        by_port, retrans = setup_latency(pcap, client, 0, float("inf"))
        probes = by_port.get(5063, [])
        conf = by_port.get(5061, []) + by_port.get(5062, [])
        setup[side] = (probes, conf, retrans)

    def exact_cell(side):
        if not a.media_delay:
            return "not measured (MEDIA_DELAY=0)"
        d = media[side][4]
        if not d:
            return "no packet matched"
        return (f"{pct(d, 50):.1f} / {pct(d, 99):.1f} ms (min {min(d):.1f}, max {max(d):.1f}; "
                f"n={len(d)} packets)")

    def media_cell(side):
        if not a.media_delay:
            return "not measured (MEDIA_DELAY=0: SIP-only captures)"
        lags, corrs, skipped, nrooms, _ = media[side]
        if not lags:
            return f"no usable window ({skipped} skipped)"
        return (f"{pct(lags, 50)} / {pct(lags, 99)} ms (min {min(lags)}, max {max(lags)}; "
                f"n={len(lags)} room-windows of 2 s, {skipped} skipped; corr p50 {pct(corrs, 50):.2f})")

    def setup_cell(vals, retrans=None):
        if not vals:
            return "no calls"
        lost = sum(1 for v in vals if v == float("inf"))
        s = f"{fmt_ms(pct(vals, 50))} / {fmt_ms(pct(vals, 99))} ms (max {fmt_ms(max(vals))}, n={len(vals)}"
        s += f", {lost} unanswered" if lost else ""
        s += f", {retrans} INVITE retransmissions" if retrans else ""
        return s + ")"

    buckets, hsum, hcount = histogram(f"{w}/metrics-primary.txt", "mcu_sip_commit_wait_seconds")
    if hcount:
        commit = (f"n={hcount}, mean {hsum / hcount * 1000:.2f} ms, p50 <= "
                  f"{hist_quantile(buckets, hcount, 0.5) * 1000:.2f} ms, p99 <= "
                  f"{hist_quantile(buckets, hcount, 0.99) * 1000:.2f} ms (bucket bounds)")
    else:
        commit = "no samples (metric missing?)"
    rep = "?"
    try:
        ps = json.load(open(f"{w}/status-primary.json"))
        bs = json.load(open(f"{w}/status-backup.json"))
        r = ps["replication"]
        rep = (f"primary {ps['role']}/peer {ps['peer']}/synced {ps['synced']}: committed "
               f"{r['committed']}, unacked {r['unacked']}, lag {r.get('lag_ms', '?')} ms; backup "
               f"{bs['role']}/peer {bs['peer']}/synced {bs['synced']}, mirrored packets "
               f"{bs['mirrored_packets']}, sync dropped {bs['sync_dropped']}")
    except (OSError, ValueError, KeyError) as e:
        rep = f"unavailable ({e})"

    ratio = f"{cpu1[1] / cpu1[0] * 100:.0f} %" if cpu1[0] > 0 else "?"
    ratio2 = f"{cpu2[1] / cpu2[0] * 100:.0f} %" if cpu2[0] > 0 else "?"
    d50 = ""
    if media["on"][0] and media["off"][0]:
        d50 = f"{pct(media['on'][0], 50) - pct(media['off'][0], 50):+d} ms"
    if media["on"][4] and media["off"][4]:
        d50 += (f" (per packet: p50 {pct(media['on'][4], 50) - pct(media['off'][4], 50):+.1f} ms, "
                f"p99 {pct(media['on'][4], 99) - pct(media['off'][4], 99):+.1f} ms)")
    s_on, s_off = setup["on"], setup["off"]
    sd = ""
    if s_on[0] and s_off[0]:
        sd = f"{pct(s_on[0], 50) - pct(s_off[0], 50):+.2f} ms"

    win = t1 - t0
    print()
    print(f"`{a.command}` — {a.calls} calls per server ({a.calls // 5} rooms of 5: 1 talker "
          f"playing A-law 30 ms packets + 4 listeners "
          f"{'sending no RTP' if a.listeners == 'none' else 'sending A-law silence'}), both servers loaded at once; "
          f"load average at the end {a.load}")
    print()
    print("| metric | FT on (primary + backup, VIP) | FT off (standalone) |")
    print("|---|---|---|")
    print(f"| CPU idle, no call ({a.idle_window[1] - a.idle_window[0]:.0f} s), % of one core | "
          f"primary {cpu0[0]:.2f} %, backup {cpu0[1]:.2f} % | {cpu0[2]:.2f} % |")
    print(f"| CPU, steady conference ({win:.0f} s), % of one core | primary {cpu1[0]:.2f} %, "
          f"backup {cpu1[1]:.2f} % (backup/primary {ratio}) | {cpu1[2]:.2f} % |")
    print(f"| CPU with {a.probe_rate} calls/s of churn on top ({p1 - p0:.0f} s) | primary "
          f"{cpu2[0]:.1f} %, backup {cpu2[1]:.1f} % (backup/primary {ratio2}) | {cpu2[2]:.1f} % |")
    print(f"| SIP setup INVITE -> 200 at the client, p50 / p99, probe calls | "
          f"{setup_cell(s_on[0], s_on[2])} | {setup_cell(s_off[0], s_off[2])} |")
    print(f"| same, the conference's own calls (joined at 50/s) | {setup_cell(s_on[1])} | "
          f"{setup_cell(s_off[1])} |")
    print(f"| media one-way delay talker -> listener, energy envelopes, p50 / p99 | {media_cell('on')} | "
          f"{media_cell('off')} |")
    print(f"| same, per packet: each received packet's audio found in the talker's sent stream "
          f"(sample-exact), p50 / p99 | {exact_cell('on')} | {exact_cell('off')} |")
    print(f"| added by FT (p50 on - p50 off) | setup {sd or '?'}, media {d50 or '?'} | — |")
    print(f"| `mcu_sip_commit_wait_seconds` (primary, whole run) | {commit} | — |")
    print(f"| participants still in at the end | {a.end_participants[0]} / {a.calls} | "
          f"{a.end_participants[1]} / {a.calls} |")
    print()
    print(f"replication at the end: {rep}")
    # One line to paste or grep: the replication's cost under churn as primary / standalone.
    churn_ratio = f"{cpu2[0] / cpu2[2]:.2f}x" if cpu2[2] > 0 else "?"
    steady_ratio = f"{cpu1[0] / cpu1[2]:.2f}x" if cpu1[2] > 0 else "?"

    def p50_99(vals):
        return f"{fmt_ms(pct(vals, 50))}/{fmt_ms(pct(vals, 99))}" if vals else "?"

    commit_mean = f"{hsum / hcount * 1000:.2f} ms" if hcount else "?"
    print(f"SUMMARY bench-ft {a.calls} calls, {a.probe_rate} calls/s churn: primary churn CPU "
          f"{cpu2[0]:.1f} % / standalone churn CPU {cpu2[2]:.1f} % = {churn_ratio} "
          f"(steady {cpu1[0]:.1f} / {cpu1[2]:.1f} % = {steady_ratio}; idle primary "
          f"{cpu0[0]:.1f} %; backup steady {cpu1[1]:.1f} %, churn {cpu2[1]:.1f} %); setup p50/p99 "
          f"on {p50_99(s_on[0])} ms, off {p50_99(s_off[0])} ms; commit wait mean {commit_mean}; "
          f"load {a.load}")
    for n in notes:
        print(f"WARNING: {n}")


if __name__ == "__main__":
    sys.exit(main())
