#!/usr/bin/env python3
"""Loop a one-stream RTP capture into one continuous stream, for sipp's play_pcap_audio.

    loop_rtp_pcap.py IN.pcap OUT.pcap MIN_SECONDS [silence]

With `silence`, every payload byte becomes 0xD5 (A-law silence): a client that sends
silence on the same cadence (a muted phone without DTX).

Replaying a capture several times from a scenario restarts its RTP sequence numbers and
timestamps each time (the same SSRC jumping back), which no real client does and which a
jitter buffer rightly treats as a discontinuity. Here the copies follow each other on the
stream's own cadence: sequence numbers, RTP timestamps and capture times continue, the
marker bit is kept only on the very first packet, UDP checksums are zeroed (IPv4: "none").
Ethernet/IPv4/UDP captures (classic pcap) only, as sipp's g711a.pcap.
"""
import struct
import sys


def main():
    src, dst, min_seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    silence = sys.argv[4:5] == ["silence"]
    data = open(src, "rb").read()
    magic = data[:4]
    endian = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">"}.get(magic)
    if endian is None:
        sys.exit(f"{src}: not a classic microsecond pcap")
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    if linktype != 1:
        sys.exit(f"{src}: link type {linktype}, expected Ethernet")
    packets, off = [], 24
    while off + 16 <= len(data):
        sec, usec, incl, orig = struct.unpack(endian + "IIII", data[off:off + 16])
        packets.append((sec + usec / 1e6, bytearray(data[off + 16:off + 16 + incl])))
        off += 16 + incl
    if len(packets) < 2:
        sys.exit(f"{src}: too few packets")

    def rtp_offset(p):
        if p[12:14] != b"\x08\x00":
            sys.exit("not IPv4 over Ethernet")
        ihl = (p[14] & 0x0F) * 4
        return 14 + ihl + 8, 14 + ihl  # RTP, UDP

    first_t = packets[0][0]
    r0, _ = rtp_offset(packets[0][1])
    seq0 = struct.unpack(">H", packets[0][1][r0 + 2:r0 + 4])[0]
    ts0 = struct.unpack(">I", packets[0][1][r0 + 4:r0 + 8])[0]
    seq_last = struct.unpack(">H", packets[-1][1][r0 + 2:r0 + 4])[0]
    ts_last = struct.unpack(">I", packets[-1][1][r0 + 4:r0 + 8])[0]
    n = len(packets)
    # One copy spans n packet intervals: the mean interval times n, in seconds and in RTP units.
    ts_step = (ts_last - ts0) // (n - 1)
    t_step = (packets[-1][0] - first_t) / (n - 1)
    seq_span, ts_span, t_span = (seq_last - seq0 + 1) & 0xFFFF, ts_step * n, t_step * n
    loops = max(1, int(min_seconds / t_span) + 1)

    out = bytearray(data[:24])
    for k in range(loops):
        for t, p in packets:
            p = bytearray(p)
            r, u = rtp_offset(p)
            seq = (struct.unpack(">H", p[r + 2:r + 4])[0] + k * seq_span) & 0xFFFF
            ts = (struct.unpack(">I", p[r + 4:r + 8])[0] + k * ts_span) & 0xFFFFFFFF
            p[r + 2:r + 4] = struct.pack(">H", seq)
            p[r + 4:r + 8] = struct.pack(">I", ts)
            if k > 0:
                p[r + 1] &= 0x7F
            p[u + 6:u + 8] = b"\x00\x00"
            if silence:
                p[r + 12:] = b"\xd5" * (len(p) - r - 12)
            sec, usec = divmod(int(round((t + k * t_span) * 1e6)), 1_000_000)
            out += struct.pack(endian + "IIII", sec, usec, len(p), len(p))
            out += p
    open(dst, "wb").write(out)
    print(f"{dst}: {loops} copies, {loops * t_span:.1f} s, {loops * n} packets")


if __name__ == "__main__":
    main()
