#!/usr/bin/env python3
"""What every client received across the kill of the primary (scripts/failover-load).

    failover_load_analyze.py REPORT.json --kill-time T --stop-time T --vip IP --client IP
        --participants N --rooms R --room-size S --talker-sip-port P --status STATUS.json
        --participants-after N --backup-log F --dead-before-kill "P B" --events F --killed-pid PID
        --load "1.0 2.0 3.0" [--max-gap-ms 100]

REPORT.json is `mcu pcap analyze CAPTURE --json --event KILL_TIME` of the clients' capture
(SIP both ways, RTP from the service address). A client stream is an RTP sink: a client
port that received RTP from the service address. Per stream: exactly one sender and one
SSRC, no duplicates, no sequence regression (reorder or reset), no timestamp error, packets
after the kill up to the end of the run, and the largest arrival gap across the kill (the
sink's `event_gap`: ends after the kill, starts less than 1 s after it). Prints the figures
and a final `FAILOVER-LOAD ...` line; exits 1 when a stream has a problem or the largest
gap exceeds --max-gap-ms.
"""
import argparse
import json
import statistics
import sys


def pct(values, p):
    """Nearest-rank percentile of a non-empty list."""
    v = sorted(values)
    i = max(1, min(len(v), int(len(v) * p / 100 + 0.999)))
    return v[i - 1]


def host(addr):
    return addr.rsplit(":", 1)[0].strip("[]")


def port(addr):
    return int(addr.rsplit(":", 1)[1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("report")
    ap.add_argument("--kill-time", type=float, required=True)
    ap.add_argument("--stop-time", type=float, required=True)
    ap.add_argument("--vip", required=True)
    ap.add_argument("--client", required=True)
    ap.add_argument("--participants", type=int, required=True)
    ap.add_argument("--rooms", type=int, required=True)
    ap.add_argument("--room-size", type=int, required=True)
    ap.add_argument("--talker-sip-port", type=int, required=True)
    ap.add_argument("--status", required=True)
    ap.add_argument("--participants-after", default="?")
    ap.add_argument("--backup-log", required=True)
    ap.add_argument("--events", required=True)
    ap.add_argument("--dead-before-kill", default="? ?", help="'peer dead' lines: primary, backup")
    ap.add_argument("--killed-pid", required=True)
    ap.add_argument("--load", default="?")
    ap.add_argument("--max-gap-ms", type=float, default=100.0)
    a = ap.parse_args()
    r = json.load(open(a.report))
    kill = a.kill_time
    run_problems = []

    # Calls: the INVITEs answered 200 by the service address, talker or listener by the
    # sipp instance's SIP port.
    role = {}
    for d in r["sip_dialogs"]:
        invite = next((m for m in d["messages"] if m["method"] == "INVITE"
                       and host(m["src"]) == a.client), None)
        ok = any(m["status"] == 200 and m["cseq_method"] == "INVITE" and host(m["src"]) == a.vip
                 for m in d["messages"])
        if invite and ok:
            role[d["call_id"]] = "talker" if port(invite["src"]) == a.talker_sip_port else "listener"
        late = [m for m in d["messages"] if m["time"] > kill and host(m["src"]) == a.vip
                and m["method"]]
        for m in late:
            run_problems.append(f"the server sent {m['method']} {m['time'] - kill:+.3f} s after the kill ({d['call_id']})")
    if len(role) != a.participants:
        run_problems.append(f"{len(role)} calls established in the capture, expected {a.participants}")

    streams_by_dst = {}
    for s in r["rtp_streams"]:
        if host(s["src"]) == a.vip and host(s["dst"]) == a.client:
            streams_by_dst.setdefault(s["dst"], []).append(s)
    sinks = [k for k in r["rtp_sinks"] if host(k["dst"]) == a.client
             and any(host(x) == a.vip for x in k["sources"])]

    rows = []   # (dst, role, gap_ms, missing, whole-call max gap, problems)
    totals = {"duplicates": 0, "regressions": 0, "ssrc_changes": 0, "ts_errors": 0}
    with_stream = set()
    for k in sinks:
        problems = []
        ss = streams_by_dst.get(k["dst"], [])
        call = next((s["call_id"] for s in ss if s.get("call_id")), None)
        who = role.get(call, "?")
        if call:
            with_stream.add(call)
        if len(k["sources"]) != 1 or len(k["ssrcs"]) != 1:
            problems.append(f"senders {k['sources']} SSRCs {[hex(x) for x in k['ssrcs']]}")
        totals["ssrc_changes"] += len(k["changes"])
        dup = sum(s["duplicates"] for s in ss)
        reg = sum(s["reordered"] + s["seq_resets"] for s in ss)
        tse = sum(s["ts_errors"] for s in ss)
        totals["duplicates"] += dup
        totals["regressions"] += reg
        totals["ts_errors"] += tse
        if dup or reg:
            problems.append(f"{dup} duplicates, {reg} regressions (reordered/reset)")
        if tse:
            problems.append(f"{tse} timestamp errors")
        if k["first_time"] > kill:
            problems.append(f"first packet {k['first_time'] - kill:.3f} s after the kill")
        g = k.get("event_gap")
        gap = g["gap_ms"] if g else None
        if gap is None:
            problems.append("no packet after the kill")
        elif gap > a.max_gap_ms:
            problems.append(f"gap {gap:.1f} ms across the kill > {a.max_gap_ms:g} ms")
        if k["last_time"] < a.stop_time - 1.0:
            problems.append(f"media stopped {k['last_time'] - kill:+.2f} s from the kill")
        missing = None
        if len(ss) == 1 and ss[0].get("event_gap") and ss[0]["event_gap"]["seq_step"] is not None:
            missing = ss[0]["event_gap"]["seq_step"] - 1
        rows.append((k["dst"], who, gap, missing, k["max_gap_ms"], problems))

    # Participants with no stream: a problem unless nobody of that role gets one (a talker
    # whose room is otherwise silent may get nothing to hear).
    no_stream = {c: w for c, w in role.items() if c not in with_stream}
    roles_with = {w for c, w in role.items() if c in with_stream}
    unexplained = {c: w for c, w in no_stream.items() if w in roles_with}
    for c, w in sorted(unexplained.items()):
        rows.append((f"call {c}", w, None, None, 0.0, ["no RTP from the service address"]))

    gaps = [x[2] for x in rows if x[2] is not None]
    missing = [x[3] for x in rows if x[3] is not None]
    bad = [x for x in rows if x[5]]
    n_streams = len(sinks)
    by_role = {}
    for x in rows[:n_streams]:
        by_role[x[1]] = by_role.get(x[1], 0) + 1

    status = json.load(open(a.status)) if a.status else {}
    t = status.get("last_takeover") or {}
    blog = open(a.backup_log, errors="replace").read()
    events = [ln.strip() for ln in open(a.events) if ln.strip()
              and f"(pid {a.killed_pid})" not in ln]
    for e in events:
        run_problems.append(f"ended during the run: {e}")
    if blog.count("takeover complete") != 1:
        run_problems.append(f"the backup logged 'takeover complete' {blog.count('takeover complete')} times")
    if status.get("role") != "primary":
        run_problems.append(f"the backup's role after the kill: {status.get('role')!r}")
    if str(a.participants_after) != str(a.participants):
        run_problems.append(f"{a.participants_after} participants on the new primary at the end, expected {a.participants}")

    print(f"failover-load: {a.participants} participants in {a.rooms} rooms of up to {a.room_size}, "
          f"kill -9 of the primary at {kill:.3f}, load average at the end {a.load}")
    print(f"calls established: {len(role)} ({sum(1 for w in role.values() if w == 'talker')} talkers, "
          f"{sum(1 for w in role.values() if w == 'listener')} listeners); "
          f"on the new primary at the end: {a.participants_after}")
    print(f"streams analysed: {n_streams} ("
          + ", ".join(f"{n} {w}s" for w, n in sorted(by_role.items())) + ")"
          + (f"; {len(no_stream)} participants receive nothing from the service address "
             f"({', '.join(sorted(set(no_stream.values())))}s" + (", as expected: nobody else in their room sends)"
                                                                  if not unexplained else ")")
             if no_stream else ""))
    if t:
        detect = t.get("at_unix_ms", 0) / 1000.0 - kill
        print(f"takeover: {t.get('duration_ms', float('nan')):.2f} ms from detection to serving "
              f"(last_takeover.duration_ms; {t.get('calls')} calls, {t.get('rooms')} rooms), "
              f"started {detect * 1000:.1f} ms after the kill")
    else:
        run_problems.append("no last_takeover in the new primary's /api/status")
        print("takeover: none reported by the new primary's /api/status")
    if gaps:
        print(f"gap across the kill, {len(gaps)} streams: min {min(gaps):.1f} ms, "
              f"median {statistics.median(gaps):.1f} ms, p90 {pct(gaps, 90):.1f} ms, max {max(gaps):.1f} ms")
    before = [(k["event_gap"]["from_time"] - kill) * 1000 for k in sinks if k.get("event_gap")]
    after = [(k["event_gap"]["to_time"] - kill) * 1000 for k in sinks if k.get("event_gap")]
    if after:
        served = ""
        if t.get("at_unix_ms") is not None and t.get("duration_ms") is not None:
            done = t["at_unix_ms"] - kill * 1000 + t["duration_ms"]
            served = (f"; takeover complete at {done:+.1f} ms, first packets {min(after) - done:+.1f} .. "
                      f"{max(after) - done:+.1f} ms after that (median {statistics.median(after) - done:+.1f})")
        print(f"relative to the kill: last packet before the gap {min(before):+.1f} .. {max(before):+.1f} ms, "
              f"first after it {min(after):+.1f} .. {max(after):+.1f} ms (median "
              f"{statistics.median(after):+.1f}){served}")
    if missing:
        print(f"packets skipped across the kill (sequence step - 1): median {statistics.median(missing):g}, "
              f"max {max(missing)}, total {sum(missing)}")
    whole = [x[4] for x in rows[:n_streams]]
    if whole:
        print(f"largest gap over the whole capture (scheduling stalls included): median "
              f"{statistics.median(whole):.1f} ms, max {max(whole):.1f} ms")
    dp, db = (a.dead_before_kill.split() + ["?", "?"])[:2]
    if gaps:
        med_ok = statistics.median(gaps) <= 50.0
        max_ok = max(gaps) <= 100.0
        print(f"goal (issue 10): gap median <= 50 ms {'met' if med_ok else 'NOT MET'}, "
              f"max <= 100 ms {'met' if max_ok else 'NOT MET'}, zero duplicates "
              f"{'met' if totals['duplicates'] == 0 else 'NOT MET'}")
    print(f"sync link before the kill: 'peer dead' logged {dp} times by the primary, {db} by the "
          f"backup; after it the backup logged it {blog.count('peer dead') - int(db) if db.isdigit() else '?'} "
          f"times and 'taking over' {blog.count('taking over')}")
    print(f"streams with problems: {len(bad)}")
    for dst, who, gap, miss, _, problems in bad[:40]:
        g = f"{gap:.1f} ms" if gap is not None else "-"
        print(f"  {dst} ({who}) gap {g}: {'; '.join(problems)}")
    if len(bad) > 40:
        print(f"  ... {len(bad) - 40} more")
    for p in run_problems:
        print(f"run: {p}")
    med = statistics.median(gaps) if gaps else float("nan")
    mx = max(gaps) if gaps else float("nan")
    print(f"FAILOVER-LOAD participants={a.participants} streams={n_streams} gap_median_ms={med:.1f} "
          f"gap_max_ms={mx:.1f} duplicates={totals['duplicates']} regressions={totals['regressions']} "
          f"ssrc_changes={totals['ssrc_changes']}")
    ok = gaps and not bad and not run_problems and mx <= a.max_gap_ms
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
