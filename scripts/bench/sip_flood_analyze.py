#!/usr/bin/env python3
"""Analysis for scripts/bench-sip-flood: INVITE -> 200 OK per probe call, quiet vs flood.

Setup latency per Call-ID: the first INVITE the probe client sent -> the first 200 OK with
CSeq INVITE it received, both from tcpdump's kernel timestamps in the client's namespace.
Each phase's probes come from their own sipp instance (own SIP port), so the port says the
phase. Phase records (positional arguments): "NAME PORT T0 T1 CPU LOAD UDPIN0:UDPIN1
DROPS0:DROPS1 FLOOD_T0 FLOOD_T1".
"""
import argparse
import math
import re
import subprocess
import sys


def pct(values, q):
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    v = sorted(values)
    k = max(0, min(len(v) - 1, math.ceil(q / 100 * len(v)) - 1))
    return v[k]


def setup_latency(pcap, client):
    out = subprocess.run(
        ["tshark", "-r", pcap, "-n", "-Y", "sip", "-T", "fields", "-E", "separator=\t",
         "-E", "occurrence=f", "-e", "frame.time_epoch", "-e", "ip.src", "-e", "udp.srcport",
         "-e", "udp.dstport", "-e", "sip.Call-ID", "-e", "sip.Method", "-e", "sip.Status-Code",
         "-e", "sip.CSeq.method"],
        check=True, capture_output=True, text=True).stdout
    invite, ok, port, retrans = {}, {}, {}, {}
    for line in out.splitlines():
        t, src, sport, dport, cid, method, status, cseq = (line.split("\t") + [""] * 8)[:8]
        t = float(t)
        if src == client and method == "INVITE":
            if cid in invite:
                retrans[int(sport)] = retrans.get(int(sport), 0) + 1
            else:
                invite[cid] = t
                port[cid] = int(sport)
        elif src != client and status == "200" and cseq == "INVITE" and cid not in ok:
            ok[cid] = t
    by_port = {}
    for cid, t in invite.items():
        by_port.setdefault(port[cid], []).append(
            (t, (ok[cid] - t) * 1000 if cid in ok else float("inf")))
    return by_port, retrans


def counters(path):
    """{name: value} of the counters in a saved /metrics (empty when missing)."""
    out = {}
    try:
        for line in open(path):
            if not line.startswith("#") and line.strip():
                name, _, val = line.rpartition(" ")
                try:
                    out[name] = float(val)
                except ValueError:
                    pass
    except OSError:
        pass
    return out


COUNTERS = [("mcu_rtp_packets_in_total", "RTP in"), ("mcu_media_overflow_total", "room queue full"),
            ("mcu_media_dropped_total", "invalid"), ("mcu_ticks_late_total", "late ticks"),
            ("mcu_sip_messages_in_total", "SIP in")]


def fmt(v):
    if v == float("inf"):
        return "lost"
    return f"{v:.2f}" if v < 10 else f"{v:.1f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pcap", required=True)
    ap.add_argument("--client", required=True)
    ap.add_argument("--flood-out", required=True)
    ap.add_argument("--flood-pps", type=int, required=True)
    ap.add_argument("--flood-secs", type=int, required=True)
    ap.add_argument("--ports", required=True)
    ap.add_argument("--room-a", type=int, required=True)
    ap.add_argument("--room-a-end", required=True)
    ap.add_argument("--probe-rate", type=int, required=True)
    ap.add_argument("--command", required=True)
    ap.add_argument("--metrics-dir", required=True)
    ap.add_argument("phases", nargs="+")
    a = ap.parse_args()

    by_port, retrans = setup_latency(a.pcap, a.client)
    flood_line = ""
    try:
        flood_line = open(a.flood_out).read().strip()
    except OSError:
        pass
    m = re.search(r"= (\d+) packets/s", flood_line)
    achieved = int(m.group(1)) if m else None

    rows, lat = [], {}
    for rec in a.phases:
        name, port, t0, t1, cpu, load, udpin, drops, f0, f1 = rec.split()
        port, t0, t1 = int(port), float(t0), float(t1)
        samples = by_port.get(port, [])
        vals = [v for _, v in samples]
        note = ""
        if name == "flood" and f0 != "-":
            f0, f1 = float(f0), float(f1)
            # A probe counts as "under the flood" only if its INVITE and its 200 both fall
            # between the flooder's start and end.
            inside = [v for t, v in samples if f0 <= t and t + v / 1000 <= f1]
            note = f"{len(inside)}/{len(vals)} probes wholly inside the flood"
            vals = inside
        i0, i1 = (int(x) for x in udpin.split(":"))
        d0, d1 = (int(x) for x in drops.split(":"))
        lat[name] = vals
        c0 = counters(f"{a.metrics_dir}/metrics-{name}-0.txt")
        c1 = counters(f"{a.metrics_dir}/metrics-{name}-1.txt")
        server = ", ".join(f"{label} {c1[k] - c0[k]:,.0f}" for k, label in COUNTERS
                           if k in c0 and k in c1)
        rows.append((name, vals, cpu, load.replace("/", " "), (i1 - i0) / (t1 - t0),
                     d1 - d0, retrans.get(port, 0), note, t1 - t0, server))

    print()
    print(f"`{a.command}` — standalone mcu; room A: {a.room_a} sipp uac_pcap participants "
          f"(A-law, looped recording), server RTP ports {a.ports}; probes: {a.probe_rate} "
          f"calls/s into room B (INVITE with A-law offer, BYE after 1 s), setup = INVITE -> "
          f"200 at the client's tcpdump")
    print()
    print("| phase | probes | INVITE -> 200 p50 / p99 / max (ms) | server CPU, % of one core "
          "| UDP datagrams/s into the server ns | UDP rcvbuf drops | INVITE retrans | load avg "
          "| server counters over the phase |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, vals, cpu, load, inrate, drops, rt, note, span, server in rows:
        lost = sum(1 for v in vals if v == float("inf"))
        cell = (f"{fmt(pct(vals, 50))} / {fmt(pct(vals, 99))} / {fmt(max(vals))}"
                if vals else "no calls")
        n = f"{len(vals)}" + (f" ({lost} unanswered)" if lost else "") + (f"; {note}" if note else "")
        print(f"| {name} | {n} | {cell} | {cpu} % ({span:.1f} s) | {inrate:,.0f} | {drops:,} | "
              f"{rt} | {load} | {server} |")
    print()
    print(f"flooder: {flood_line or 'no output'}")
    print(f"room A participants still in at the end: {a.room_a_end} / {a.room_a}")
    quiet = lat.get("quiet", []) + lat.get("quiet2", [])
    flood = lat.get("flood", [])
    if quiet and flood:
        q50, q99, f50, f99 = pct(quiet, 50), pct(quiet, 99), pct(flood, 50), pct(flood, 99)
        r99 = f99 / q99 if q99 > 0 else float("inf")
        r50 = f50 / q50 if q50 > 0 else float("inf")
        verdict = "within 2x" if r99 <= 2 else "NOT within 2x"
        print(f"SUMMARY sip-flood: quiet p50/p99 {fmt(q50)}/{fmt(q99)} ms (n={len(quiet)}), "
              f"flood p50/p99 {fmt(f50)}/{fmt(f99)} ms (n={len(flood)}), ratio p99 "
              f"{r99:.2f}x (p50 {r50:.2f}x) -> {verdict}; flooder sent "
              f"{achieved if achieved is not None else '?'} packets/s (target {a.flood_pps}); "
              f"server CPU quiet {rows[0][2]} % / flood "
              f"{next((r[2] for r in rows if r[0] == 'flood'), '?')} %")
    else:
        print("SUMMARY sip-flood: no latency samples in a phase (see the table)")


if __name__ == "__main__":
    sys.exit(main())
