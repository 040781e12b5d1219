//! `mcu bench`: load generators for the benchmark scripts (not used by the server):
//! `udp-flood` (here), `webrtc-clients` (`bench_webrtc`), `video-clients` (`bench_video`).
//!
//! `mcu bench udp-flood --to ADDR:PORT[,ADDR:PORT...] --pps N --secs S [--bind ADDR]` sends
//! RTP-shaped UDP packets (12-byte RTP header, PCMA, 160 bytes of A-law silence: what a
//! 20 ms G.711 packet looks like) round-robin to the destinations at N packets/s in total
//! for S seconds, then prints the rate it actually achieved. Pacing: a deadline loop that
//! wakes every `--tick-us` (default 1 ms) and sends the packets that are due by then in one
//! batch (`sendmmsg`), so the rate holds even though a sleep overshoots by tens of
//! microseconds; a stall of the sender (a loaded host) is caught up at the next wake-up, at
//! most `--max-burst` packets at once, and the lag is reported.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Most messages per `sendmmsg` call.
const CHUNK: usize = 64;

/// `mcu bench ...` subcommands.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Send RTP-shaped UDP packets at a fixed rate (a media flood) and report the rate
    /// achieved.
    UdpFlood(UdpFloodArgs),
    /// Synthetic WebRTC participants (WHIP, ICE, DTLS-SRTP, Opus at 50 packets/s) in rooms,
    /// with per-client and total packet counts.
    WebrtcClients(crate::bench_webrtc::WebRtcClientsArgs),
    /// Synthetic SIP participants with Opus audio and VP8 video (a recorded camera replayed,
    /// keyframes on request, RTCP reports) in rooms, with per-client and total counts.
    VideoClients(crate::bench_video::VideoClientsArgs),
}

/// Arguments of `mcu bench udp-flood`.
#[derive(Args, Debug)]
pub struct UdpFloodArgs {
    /// Destinations, comma separated (ADDR:PORT[,ADDR:PORT...]); packets go round-robin.
    #[arg(long, value_delimiter = ',', required = true)]
    to: Vec<SocketAddr>,
    /// Packets per second in total (over all destinations).
    #[arg(long)]
    pps: u64,
    /// Duration in seconds.
    #[arg(long)]
    secs: f64,
    /// Local address to send from (port 0: any).
    #[arg(long, default_value = "0.0.0.0")]
    bind: std::net::IpAddr,
    /// RTP payload bytes per packet (160: 20 ms of G.711).
    #[arg(long, default_value_t = 160)]
    payload: usize,
    /// Pacing period in microseconds (the batch interval).
    #[arg(long, default_value_t = 1000)]
    tick_us: u64,
    /// Most packets sent in one catch-up batch after a stall.
    #[arg(long, default_value_t = 5000)]
    max_burst: u64,
}

/// Run a `mcu bench` subcommand.
pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::UdpFlood(a) => udp_flood(&a),
        BenchCommand::WebrtcClients(a) => crate::bench_webrtc::run(&a),
        BenchCommand::VideoClients(a) => crate::bench_video::run(&a),
    }
}

/// One destination's RTP stream: its own SSRC, sequence number and timestamp.
struct Stream {
    dest: libc::sockaddr_in,
    packet: Vec<u8>,
    seq: u16,
    ts: u32,
}

impl Stream {
    fn new(dest: SocketAddr, ssrc: u32, payload: usize) -> Result<Self> {
        let SocketAddr::V4(v4) = dest else {
            bail!("{dest}: IPv4 destinations only");
        };
        // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_port = v4.port().to_be();
        sa.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
        let mut packet = vec![0xd5u8; 12 + payload]; // A-law silence
        packet[0] = 0x80; // V=2
        packet[1] = 8; // PT 8 (PCMA)
        packet[8..12].copy_from_slice(&ssrc.to_be_bytes());
        Ok(Self {
            dest: sa,
            packet,
            seq: (ssrc >> 16) as u16,
            ts: ssrc.rotate_left(7),
        })
    }

    /// Advance to the next packet (seq + 1, timestamp + one 20 ms frame at 8 kHz).
    fn next(&mut self) {
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(160);
        self.packet[2..4].copy_from_slice(&self.seq.to_be_bytes());
        self.packet[4..8].copy_from_slice(&self.ts.to_be_bytes());
    }
}

/// Counters of one flood.
#[derive(Default)]
struct Tally {
    sent: u64,
    errors: u64,
    first_error: Option<std::io::Error>,
    batches: u64,
    max_lag: Duration,
    capped: u64,
}

fn udp_flood(a: &UdpFloodArgs) -> Result<()> {
    if a.pps == 0 || !a.secs.is_finite() || a.secs <= 0.0 || a.tick_us == 0 || a.max_burst == 0 {
        bail!("--pps, --secs, --tick-us and --max-burst must be positive");
    }
    let sock = UdpSocket::bind(SocketAddr::new(a.bind, 0))
        .with_context(|| format!("binding {}", a.bind))?;
    let local = sock.local_addr()?;
    let mut streams = Vec::with_capacity(a.to.len());
    let seed = std::process::id().wrapping_mul(2_654_435_761);
    for (i, d) in a.to.iter().enumerate() {
        streams.push(Stream::new(
            *d,
            seed.wrapping_add(i as u32).wrapping_mul(0x9e37_79b9),
            a.payload,
        )?);
    }
    let total = (a.pps as f64 * a.secs).round() as u64;
    let tick = Duration::from_micros(a.tick_us);
    eprintln!(
        "udp-flood: {} packets/s of {} bytes from {local} to {} destination(s) for {} s ({total} packets)",
        a.pps,
        12 + a.payload,
        streams.len(),
        a.secs
    );

    let mut t = Tally::default();
    let mut next_dest = 0usize;
    let mut bufs: [Vec<u8>; CHUNK] = std::array::from_fn(|_| Vec::with_capacity(12 + a.payload));
    let start = Instant::now();
    let mut wake = start;
    while t.sent < total {
        let now = Instant::now();
        let elapsed = now.duration_since(start);
        // Packets due by now; what exceeds max_burst is sent at the following wake-ups.
        let due = ((elapsed.as_secs_f64() * a.pps as f64) as u64 + 1).min(total);
        if due > t.sent {
            let mut n = due - t.sent;
            if n > a.max_burst {
                n = a.max_burst;
                t.capped += 1;
            }
            let lag = now.saturating_duration_since(wake);
            t.max_lag = t.max_lag.max(lag);
            send_batch(&sock, &mut streams, &mut bufs, &mut next_dest, n, &mut t);
            t.batches += 1;
        }
        wake += tick;
        let now = Instant::now();
        if wake > now {
            std::thread::sleep(wake - now);
        } else if now.duration_since(wake) > tick * 100 {
            // Far behind (the process was stopped): do not spin through the missed ticks.
            wake = now;
        }
    }
    let dur = start.elapsed().as_secs_f64();
    let rate = t.sent as f64 / dur;
    println!(
        "udp-flood: sent {} packets in {dur:.3} s = {rate:.0} packets/s (target {}, {:.1} %), \
         {} bytes each, {} destination(s), {} batches, {} send errors{}, max wake-up lag {:.2} ms, \
         {} batches capped at {}",
        t.sent,
        a.pps,
        rate / a.pps as f64 * 100.0,
        12 + a.payload,
        streams.len(),
        t.batches,
        t.errors,
        t.first_error
            .as_ref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default(),
        t.max_lag.as_secs_f64() * 1000.0,
        t.capped,
        a.max_burst
    );
    Ok(())
}

/// Send `n` packets round-robin over the streams with `sendmmsg`, up to `CHUNK` per call
/// (each message gets its own copy of its stream's current packet in `bufs`). A packet the
/// kernel refuses (e.g. ENOBUFS) is counted as sent and as an error: the flood's rate is the
/// rate of attempts, the error count says how many did not leave.
fn send_batch(
    sock: &UdpSocket,
    streams: &mut [Stream],
    bufs: &mut [Vec<u8>; CHUNK],
    next: &mut usize,
    n: u64,
    t: &mut Tally,
) {
    let fd = sock.as_raw_fd();
    let mut left = n as usize;
    while left > 0 {
        let k = left.min(CHUNK);
        let mut dests = [0usize; CHUNK];
        for (j, d) in dests.iter_mut().enumerate().take(k) {
            let s = &mut streams[*next];
            s.next();
            bufs[j].clear();
            bufs[j].extend_from_slice(&s.packet);
            *d = *next;
            *next = (*next + 1) % streams.len();
        }
        let mut iovs: Vec<libc::iovec> = bufs[..k]
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .zip(&dests[..k])
            .map(|(iov, &i)| {
                // SAFETY: mmsghdr is plain old data; all-zero is a valid value.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_name = &streams[i].dest as *const libc::sockaddr_in as *mut _;
                m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let mut done = 0usize;
        while done < k {
            // SAFETY: msgs[done..k] point at iovecs, buffers and addresses that outlive the
            // call; the kernel reads them and writes only msg_len.
            let r = unsafe {
                libc::sendmmsg(fd, msgs[done..].as_mut_ptr(), (k - done) as libc::c_uint, 0)
            };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                // The first message failed: count it and go on with the rest.
                t.errors += 1;
                t.first_error.get_or_insert(e);
                done += 1;
            } else {
                done += r as usize;
            }
        }
        t.sent += k as u64;
        left -= k;
    }
}
