//! Stock video peers for tests: a VP8 sender ([`VideoSender`], GStreamer's `gst-launch-1.0`
//! with `rtpbin`, answering PLI and FIR with a key frame) and a receiver ([`VideoReceiver`],
//! UDP sockets that record what arrives into a pcap for `pcap_harness::video` and send
//! PLI / FIR / NACK). Loopback or any local address; no root needed.
//!
//! The sender's pipeline (RTCP on RTP port + 1; with `rtcp_mux` both on one port):
//!
//! ```text
//! gst-launch-1.0 -q rtpbin name=rb
//!   videotestsrc is-live=true pattern=ball background-color=0xffRRGGBB
//!     foreground-color=0xffffffff ! video/x-raw,width=W,height=H,framerate=F/1
//!   ! vp8enc deadline=1 keyframe-max-dist=600 target-bitrate=B
//!   ! rtpvp8pay picture-id-mode=15-bit pt=96 mtu=M [ssrc=S] ! rb.send_rtp_sink_0
//!   rb.send_rtp_src_0 ! udpsink host=DST port=P bind-address=0.0.0.0 bind-port=LP
//!   rb.send_rtcp_src_0 ! udpsink host=DST port=P+1 bind-address=0.0.0.0 bind-port=LP+1
//!   udpsrc address=LOCAL port=LP+1 caps=application/x-rtcp ! rb.recv_rtcp_sink_0
//!   udpsrc address=LOCAL port=LP ! fakesink
//! ```
//!
//! The sending sockets are bound to the wildcard address and the receiving ones to the
//! local address, on the same ports: Linux delivers a datagram to the most specific bound
//! socket, so RTCP sent back to the port the sender's RTCP came from reaches `rtpbin`
//! (symmetric RTP, as the server does), whichever socket was bound last. `rtpbin` turns a
//! PLI (from any sender SSRC) or a FIR (only from a sender SSRC it has heard, e.g. in an RR
//! of the same compound packet) for its SSRC into a key frame within about one frame.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pcap_harness::writer::{to_pcap, Datagram};
use rtc_rtcp::payload_feedbacks::full_intra_request::{FirEntry, FullIntraRequest};
use rtc_rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc_rtcp::receiver_report::ReceiverReport;
use rtc_rtcp::transport_feedbacks::transport_layer_nack::{
    nack_pairs_from_sequence_numbers, TransportLayerNack,
};
use rtc_shared::marshal::Marshal;

use crate::process::{signal, wait_timeout, LogLines};

/// The GStreamer elements the sender needs, with the Debian package of each.
pub const GST_ELEMENTS: [(&str, &str); 6] = [
    ("videotestsrc", "gstreamer1.0-plugins-base"),
    ("vp8enc", "gstreamer1.0-plugins-good"),
    ("rtpvp8pay", "gstreamer1.0-plugins-good"),
    ("rtpbin", "gstreamer1.0-plugins-good"),
    ("udpsink", "gstreamer1.0-plugins-good"),
    ("udpsrc", "gstreamer1.0-plugins-good"),
];

/// Fail the test unless `gst-launch-1.0` and every element of [`GST_ELEMENTS`] are here.
pub fn require_gstreamer() {
    crate::require::tools(&["gst-launch-1.0", "gst-inspect-1.0"]);
    let missing: Vec<String> = GST_ELEMENTS
        .iter()
        .filter(|(e, _)| {
            !Command::new("gst-inspect-1.0")
                .arg(e)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|(e, p)| format!("{e} (package {p})"))
        .collect();
    assert!(
        missing.is_empty(),
        "GStreamer element(s) missing: {}: scripts/test installs them (or apt-get install the \
         packages)",
        missing.join(", ")
    );
}

/// What [`VideoSender::start`] sends.
#[derive(Debug, Clone)]
pub struct VideoSenderConfig {
    /// Where its RTP goes (RTCP: the next port, or the same one with `rtcp_mux`).
    pub dst: SocketAddr,
    /// The local address it receives RTCP on (and sends from).
    pub local_ip: IpAddr,
    /// Its RTP port (RTCP: the next port, or the same one with `rtcp_mux`).
    pub local_port: u16,
    /// RTP and RTCP on one port pair each way (RFC 5761).
    pub rtcp_mux: bool,
    /// Background colour `(r, g, b)`; a white ball moves over it.
    pub rgb: (u8, u8, u8),
    /// Picture width.
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// The longest distance between key frames, in frames (600: key frames come on request).
    pub keyframe_max_dist: u32,
    /// Target bit rate in kbit/s.
    pub kbps: u32,
    /// RTP payload type.
    pub pt: u8,
    /// The RTP SSRC (`None`: random).
    pub ssrc: Option<u32>,
    /// Largest RTP packet (bytes): smaller values make several packets per frame.
    pub mtu: u32,
}

impl VideoSenderConfig {
    /// 320x240 at 30 fps, 300 kbit/s, PT 96, MTU 1200, RTCP on the next port, key frames at
    /// most every 600 frames, from `127.0.0.1:local_port` to `dst`, background `rgb`.
    pub fn new(dst: SocketAddr, local_port: u16, rgb: (u8, u8, u8)) -> VideoSenderConfig {
        VideoSenderConfig {
            dst,
            local_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            local_port,
            rtcp_mux: false,
            rgb,
            width: 320,
            height: 240,
            fps: 30,
            keyframe_max_dist: 600,
            kbps: 300,
            pt: 96,
            ssrc: None,
            mtu: 1200,
        }
    }

    /// The `gst-launch-1.0` arguments (after the program name).
    pub fn gst_args(&self) -> Vec<String> {
        let (r, g, b) = self.rgb;
        let host = self.dst.ip().to_string();
        let mut p = format!(
            "rtpbin name=rb \
             videotestsrc is-live=true pattern=ball background-color=0xff{r:02x}{g:02x}{b:02x} \
             foreground-color=0xffffffff ! video/x-raw,width={w},height={h},framerate={fps}/1 ! \
             vp8enc deadline=1 keyframe-max-dist={kf} target-bitrate={br} ! \
             rtpvp8pay picture-id-mode=15-bit pt={pt} mtu={mtu}{ssrc} ! rb.send_rtp_sink_0 ",
            w = self.width,
            h = self.height,
            fps = self.fps,
            kf = self.keyframe_max_dist,
            br = self.kbps * 1000,
            pt = self.pt,
            mtu = self.mtu,
            ssrc = self.ssrc.map(|s| format!(" ssrc={s}")).unwrap_or_default(),
        );
        let sink =
            |port: u16, bind: u16| {
                format!(
                "udpsink host={host} port={port} bind-address={any} bind-port={bind} sync=false \
                 async=false",
                any = if self.local_ip.is_ipv6() { "::" } else { "0.0.0.0" }
            )
            };
        let lip = self.local_ip;
        let (lp, dp) = (self.local_port, self.dst.port());
        if self.rtcp_mux {
            p += &format!(
                "rb.send_rtp_src_0 ! mux. rb.send_rtcp_src_0 ! mux. funnel name=mux ! {} \
                 udpsrc address={lip} port={lp} caps=application/x-rtcp ! rb.recv_rtcp_sink_0",
                sink(dp, lp)
            );
        } else {
            p += &format!(
                "rb.send_rtp_src_0 ! {} rb.send_rtcp_src_0 ! {} \
                 udpsrc address={lip} port={lp1} caps=application/x-rtcp ! rb.recv_rtcp_sink_0 \
                 udpsrc address={lip} port={lp} ! fakesink sync=false async=false",
                sink(dp, lp),
                sink(dp.wrapping_add(1), lp.wrapping_add(1)),
                lp1 = lp.wrapping_add(1)
            );
        }
        let mut args = vec!["-q".to_string()];
        args.extend(p.split_whitespace().map(String::from));
        args
    }
}

/// A running GStreamer VP8 sender; stopped (by its pid) on drop.
pub struct VideoSender {
    child: Child,
    /// Its stderr lines (GStreamer warnings and errors), echoed as `[gst-video] ...`.
    pub log: LogLines,
    /// What it was started with.
    pub config: VideoSenderConfig,
}

impl VideoSender {
    /// Start the pipeline and return once its receiving socket is bound.
    pub fn start(config: &VideoSenderConfig) -> VideoSender {
        Self::start_with(config, Command::new("gst-launch-1.0"))
    }

    /// [`VideoSender::start`] in a test bed node's network namespace.
    pub fn start_in(
        bed: &crate::bed::Testbed,
        node: &str,
        config: &VideoSenderConfig,
    ) -> VideoSender {
        Self::start_with(config, bed.command(node, "gst-launch-1.0"))
    }

    /// Start the pipeline with `command` (`gst-launch-1.0`, or a wrapper that execs it,
    /// such as `ip netns exec NS gst-launch-1.0`).
    fn start_with(config: &VideoSenderConfig, mut command: Command) -> VideoSender {
        require_gstreamer();
        let mut child = command
            .args(config.gst_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gst-launch-1.0");
        let log = LogLines::spawn_reader("gst-video", child.stderr.take().expect("piped"));
        let rtcp_port = if config.rtcp_mux {
            config.local_port
        } else {
            config.local_port.wrapping_add(1)
        };
        let mut s = VideoSender {
            child,
            log,
            config: config.clone(),
        };
        let bound = crate::poll(Duration::from_secs(10), || {
            if let Ok(Some(st)) = s.child.try_wait() {
                s.log.pump();
                panic!(
                    "gst-launch-1.0 exited ({st}) before binding: {:?}",
                    s.log.lines
                );
            }
            // The process's own view of its namespace's sockets.
            crate::process::udp_port_bound_in(s.child.id(), rtcp_port).then_some(())
        });
        assert!(
            bound.is_some(),
            "gst-launch-1.0 did not bind port {rtcp_port} within 10 s"
        );
        s
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stop it: SIGINT (the pipeline sends EOS and an RTCP BYE), SIGKILL after 3 s.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal(self.child.id(), libc::SIGINT);
            if wait_timeout(&mut self.child, Duration::from_secs(3)).is_none() {
                signal(self.child.id(), libc::SIGKILL);
                let _ = self.child.wait();
            }
        }
    }
}

impl Drop for VideoSender {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The directory of the recorded captures committed with the test kit (`testkit/data`).
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}

/// The recorded VP8 RTP captures in [`data_dir`] (see its README): `vp8_red.pcap` and
/// `vp8_blue.pcap`, 6 s of 320x240 at 25 fps each, a key frame every second.
pub fn recorded_vp8(colour: &str) -> PathBuf {
    let p = data_dir().join(format!("vp8_{colour}.pcap"));
    assert!(
        p.exists(),
        "{} missing (testkit/data/README.md)",
        p.display()
    );
    p
}

/// An even UDP port `p` on `ip` with `p + 1` free too (both bound and released here), for
/// an RTP/RTCP pair. Another process may still take them before the caller binds.
pub fn free_port_pair(ip: IpAddr) -> u16 {
    free_port_block(ip, 2)
}

/// An even UDP port `p` on `ip` with `p + 1 .. p + n` free too (bound and released here).
pub fn free_port_block(ip: IpAddr, n: u16) -> u16 {
    for _ in 0..500 {
        let Ok(a) = UdpSocket::bind(SocketAddr::new(ip, 0)) else {
            continue;
        };
        let Ok(p) = a.local_addr().map(|x| x.port()) else {
            continue;
        };
        if p % 2 != 0 || p.checked_add(n).is_none() {
            continue;
        }
        let rest: Vec<_> = (1..n)
            .map_while(|i| UdpSocket::bind(SocketAddr::new(ip, p + i)).ok())
            .collect();
        if rest.len() + 1 == usize::from(n) {
            return p;
        }
    }
    panic!("no {n} free consecutive UDP ports on {ip}");
}

/// sipp 3.6.1 UAC scenario (from `data/sipp_uac_video.xml`) written to `dir`: INVITE
/// offering PCMA audio and VP8 video (PT 96, `nack`, `nack pli`, `ccm fir`), ACK, then
/// `play_pcap_video` of `video_pcap` (e.g. [`recorded_vp8`]) from `[media_port+2]` to the
/// answer's `m=video` port, a pause of `pause_ms`, BYE. Run it with
/// [`crate::peers::sipp`] (root: sipp sends recorded media from a raw socket).
///
/// Limits of sipp 3.6.1: one media thread per call (no audio alongside the video); the
/// RTP goes out exactly as recorded (same SSRC, sequence numbers and picture IDs in every
/// call); it sends and reads no RTCP, so a PLI or FIR gets no key frame.
pub fn sipp_video_scenario(dir: &Path, video_pcap: &Path, pause_ms: u32) -> PathBuf {
    let t = std::fs::read_to_string(data_dir().join("sipp_uac_video.xml"))
        .expect("read sipp_uac_video.xml");
    let p = dir.join("uac_video.xml");
    let pcap = video_pcap
        .canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e}", video_pcap.display()));
    std::fs::write(
        &p,
        t.replace("@VIDEO_PCAP@", &pcap.display().to_string())
            .replace("@PAUSE_MS@", &pause_ms.to_string()),
    )
    .expect("write scenario");
    p
}

/// sipp 3.6.1 UAS scenario (from `data/sipp_uas_video.xml`) written to `dir`: answers an
/// INVITE with `m=audio audio_port` and `m=video video_port` (VP8) on its own address, and
/// waits for the BYE. For tests of the callers without the server.
pub fn sipp_video_answerer(dir: &Path, audio_port: u16, video_port: u16) -> PathBuf {
    let t = std::fs::read_to_string(data_dir().join("sipp_uas_video.xml"))
        .expect("read sipp_uas_video.xml");
    let p = dir.join("uas_video.xml");
    std::fs::write(
        &p,
        t.replace("@AUDIO_PORT@", &audio_port.to_string())
            .replace("@VIDEO_PORT@", &video_port.to_string()),
    )
    .expect("write scenario");
    p
}

/// Now, since the Unix epoch.
fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

struct Shared {
    datagrams: Mutex<Vec<Datagram>>,
    /// Where the peer's RTP and RTCP came from (latched, as the server does).
    peer_rtp: Mutex<Option<SocketAddr>>,
    peer_rtcp: Mutex<Option<SocketAddr>>,
    stop: AtomicBool,
}

/// UDP sockets receiving a video stream, recording every datagram (and the RTCP it sends)
/// with its arrival time for [`VideoReceiver::save`]; it can send PLI, FIR and NACK back.
pub struct VideoReceiver {
    rtp: Arc<UdpSocket>,
    rtcp: Option<Arc<UdpSocket>>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// The SSRC its RTCP is sent with.
    pub ssrc: u32,
    fir_seq: u8,
}

impl VideoReceiver {
    /// Bind `rtp` (and its next port for RTCP unless `rtcp_mux`) and start recording.
    pub fn bind(rtp: SocketAddr, rtcp_mux: bool) -> VideoReceiver {
        let sock = |a: SocketAddr| {
            let s = UdpSocket::bind(a).unwrap_or_else(|e| panic!("bind {a}: {e}"));
            s.set_read_timeout(Some(Duration::from_millis(50)))
                .expect("read timeout");
            Arc::new(s)
        };
        let rtp_sock = sock(rtp);
        let rtcp_sock = (!rtcp_mux).then(|| sock(SocketAddr::new(rtp.ip(), rtp.port() + 1)));
        let shared = Arc::new(Shared {
            datagrams: Mutex::new(Vec::new()),
            peer_rtp: Mutex::new(None),
            peer_rtcp: Mutex::new(None),
            stop: AtomicBool::new(false),
        });
        let mut threads = Vec::new();
        for (s, is_rtcp_port) in std::iter::once((rtp_sock.clone(), false))
            .chain(rtcp_sock.iter().map(|s| (s.clone(), true)))
        {
            let shared = shared.clone();
            threads.push(std::thread::spawn(move || {
                record(&s, is_rtcp_port, &shared)
            }));
        }
        VideoReceiver {
            rtp: rtp_sock,
            rtcp: rtcp_sock,
            shared,
            threads,
            ssrc: 0x5EC0_0001,
            fir_seq: 0,
        }
    }

    /// The RTP address it listens on.
    pub fn rtp_addr(&self) -> SocketAddr {
        self.rtp.local_addr().expect("local addr")
    }

    /// Datagrams received so far (RTP and RTCP).
    pub fn received(&self) -> usize {
        self.lock().iter().filter(|d| !self.sent_by_us(d)).count()
    }

    fn sent_by_us(&self, d: &Datagram) -> bool {
        d.src == self.rtp_addr()
            || self
                .rtcp
                .as_ref()
                .is_some_and(|s| s.local_addr().ok() == Some(d.src))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Datagram>> {
        self.shared
            .datagrams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Wait until at least `n` datagrams arrived; fails the test after `timeout`.
    pub fn wait_received(&self, n: usize, timeout: Duration) {
        let got = crate::poll(timeout, || (self.received() >= n).then_some(()));
        assert!(
            got.is_some(),
            "{} datagrams at {} after {timeout:?}, expected {n}",
            self.received(),
            self.rtp_addr()
        );
    }

    /// The SSRC of the last RTP packet received (`None` before the first).
    pub fn last_ssrc(&self) -> Option<u32> {
        self.lock().iter().rev().find_map(|d| {
            let p = &d.payload;
            // RTP: version 2 and not an RTCP packet type (RFC 5761 demultiplexing).
            (p.len() >= 12 && p[0] >> 6 == 2 && !(192..=223).contains(&p[1]) && !self.sent_by_us(d))
                .then(|| u32::from_be_bytes([p[8], p[9], p[10], p[11]]))
        })
    }

    /// Where RTCP goes: where the peer's RTCP came from, else its RTP source's next port
    /// (its RTP source with RTCP multiplexed).
    fn rtcp_target(&self) -> SocketAddr {
        if let Some(a) = *self
            .shared
            .peer_rtcp
            .lock()
            .unwrap_or_else(|e| e.into_inner())
        {
            return a;
        }
        let rtp = self
            .shared
            .peer_rtp
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .expect("no RTP received yet: nowhere to send RTCP");
        if self.rtcp.is_some() {
            SocketAddr::new(rtp.ip(), rtp.port().wrapping_add(1))
        } else {
            rtp
        }
    }

    /// Send one RTCP datagram to the peer and record it; returns when it was sent (epoch
    /// seconds, the capture's clock).
    pub fn send_rtcp(&self, bytes: &[u8]) -> f64 {
        let to = self.rtcp_target();
        let sock = self.rtcp.as_ref().unwrap_or(&self.rtp);
        let at = now();
        sock.send_to(bytes, to)
            .unwrap_or_else(|e| panic!("send RTCP to {to}: {e}"));
        self.lock().push(Datagram {
            time: at,
            src: sock.local_addr().expect("local addr"),
            dst: to,
            payload: bytes.to_vec(),
        });
        at.as_secs_f64()
    }

    /// Send a PLI (RFC 4585 6.3.1) for `media_ssrc`; returns when (epoch seconds).
    pub fn send_pli(&self, media_ssrc: u32) -> f64 {
        let pli = PictureLossIndication {
            sender_ssrc: self.ssrc,
            media_ssrc,
        };
        self.send_rtcp(&pli.marshal().expect("marshal PLI"))
    }

    /// Send an RR followed by a FIR (RFC 5104 4.3.1) for `media_ssrc` in one compound
    /// packet, the FIR sequence number one more than the last; returns when (epoch seconds).
    pub fn send_fir(&mut self, media_ssrc: u32) -> f64 {
        self.fir_seq = self.fir_seq.wrapping_add(1);
        let rr = ReceiverReport {
            ssrc: self.ssrc,
            ..Default::default()
        };
        let fir = FullIntraRequest {
            sender_ssrc: self.ssrc,
            media_ssrc: 0,
            fir: vec![FirEntry {
                ssrc: media_ssrc,
                sequence_number: self.fir_seq,
            }],
        };
        let mut b = rr.marshal().expect("marshal RR").to_vec();
        b.extend_from_slice(&fir.marshal().expect("marshal FIR"));
        self.send_rtcp(&b)
    }

    /// Send a generic NACK (RFC 4585 6.2.1) for `seqs` of `media_ssrc`; returns when.
    pub fn send_nack(&self, media_ssrc: u32, seqs: &[u16]) -> f64 {
        let nack = TransportLayerNack {
            sender_ssrc: self.ssrc,
            media_ssrc,
            nacks: nack_pairs_from_sequence_numbers(seqs),
        };
        self.send_rtcp(&nack.marshal().expect("marshal NACK"))
    }

    /// Write everything received so far, and the RTCP sent, as a pcap (raw IP) at `path`.
    pub fn save(&self, path: &Path) -> PathBuf {
        let mut d = self.lock().clone();
        d.sort_by_key(|x| x.time);
        std::fs::write(path, to_pcap(pcap_harness::net::LINKTYPE_RAW, &d))
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path.to_path_buf()
    }

    /// Write only the RTP received so far as an Ethernet pcap (what sipp's `play_pcap_video`
    /// reads: Ethernet or Linux SLL, every UDP packet of the file is replayed to the port
    /// its destination port is relative to).
    pub fn save_rtp_ethernet(&self, path: &Path) -> PathBuf {
        let mut d: Vec<Datagram> = self
            .lock()
            .iter()
            .filter(|d| {
                !self.sent_by_us(d)
                    && d.payload.len() >= 12
                    && d.payload[0] >> 6 == 2
                    && !(192..=223).contains(&d.payload[1])
            })
            .cloned()
            .collect();
        d.sort_by_key(|x| x.time);
        std::fs::write(path, to_pcap(pcap_harness::net::LINKTYPE_ETHERNET, &d))
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path.to_path_buf()
    }

    /// Stop recording, write the pcap and return its path.
    pub fn finish(mut self, path: &Path) -> PathBuf {
        self.halt();
        self.save(path)
    }

    fn halt(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for VideoReceiver {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The receive loop of one socket.
fn record(sock: &UdpSocket, rtcp_port: bool, shared: &Shared) {
    let local = sock.local_addr().expect("local addr");
    let mut buf = vec![0u8; 65536];
    while !shared.stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let at = now();
        let p = &buf[..n];
        let is_rtcp = rtcp_port || (p.len() >= 2 && (192..=223).contains(&p[1]));
        let slot = if is_rtcp {
            &shared.peer_rtcp
        } else {
            &shared.peer_rtp
        };
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(from);
        shared
            .datagrams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Datagram {
                time: at,
                src: from,
                dst: local,
                payload: p.to_vec(),
            });
    }
}
