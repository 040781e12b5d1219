//! Hostile media against the real server over loopback (issue 13, items 1, 6 and 7): RTP
//! injection and stream hijack, foreign RTCP, a re-INVITE moving the media, media after our
//! own BYE, IPv6 offers, the media timeout. Every case first shows the legitimate media
//! arriving (positive control), then that the attacker's does not; assertions are on what the
//! clients receive and on `/metrics`.

mod common;
use common::uac::{self, Uac};
use common::{args, TestServer};
use mcu::config::ServeArgs;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The media clock of the test clients (packet pacing, not synchronisation).
const PTIME: Duration = Duration::from_millis(20);

/// Poll `/metrics` until counter `name` reaches `min` (panics after 3 s).
fn wait_counter(srv: &TestServer, name: &str, min: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let v = srv.metric(name);
        if v >= min {
            return v;
        }
        assert!(Instant::now() < deadline, "{name} = {v}, expected >= {min}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A client: its SIP UAC, its RTP socket (non-blocking) and the server's media address.
struct Party {
    ua: Uac,
    rtp: UdpSocket,
    server: SocketAddr,
    seq: u16,
    ssrc: u32,
}

fn rtp_socket(ip: &str) -> UdpSocket {
    let s = UdpSocket::bind((ip, 0)).unwrap();
    s.set_nonblocking(true).unwrap();
    s
}

impl Party {
    /// Call `room` with a PCMU offer for its RTP socket, `extra` appended to the SDP.
    fn join(srv: &TestServer, room: &str, tag: &str, extra: &str) -> Party {
        let mut ua = Uac::new(srv.sip, room, tag);
        let rtp = rtp_socket("127.0.0.1");
        let offer = ua.pcmu_offer(rtp.local_addr().unwrap()) + extra;
        let offer = if extra.contains("a=sendonly") || extra.contains("a=recvonly") {
            offer.replace("a=sendrecv\r\n", "")
        } else {
            offer
        };
        let ok = ua.call(&offer);
        let server = uac::sdp_media(uac::body(&ok)).expect("SDP answer with media");
        Party {
            ua,
            rtp,
            server,
            seq: 0,
            ssrc: 0xa11ce,
        }
    }

    /// One 20 ms packet: a loud 1 kHz tone, or digital silence.
    fn send(&mut self, loud: bool) {
        self.seq = self.seq.wrapping_add(1);
        let ts = self.seq as u32 * 160;
        let p = if loud {
            uac::pcmu_packet(self.ssrc, self.seq, ts)
        } else {
            silence(self.ssrc, self.seq, ts)
        };
        self.rtp.send_to(&p, self.server).unwrap();
    }
}

fn silence(ssrc: u32, seq: u16, ts: u32) -> Vec<u8> {
    let mut p = uac::pcmu_packet(ssrc, seq, ts);
    p[12..].fill(0xff); // µ-law 0xff: zero
    p
}

/// RTP packets waiting on `sock` (RTCP left out).
fn drain(sock: &UdpSocket) -> Vec<Vec<u8>> {
    let mut out = vec![];
    let mut buf = [0u8; 2048];
    while let Ok((n, _)) = sock.recv_from(&mut buf) {
        if n >= 12 && !(192..=223).contains(&buf[1]) {
            out.push(buf[..n].to_vec());
        }
    }
    out
}

/// Whether a PCMU RTP packet carries audible audio (RMS over 1000 of 32768).
fn loud(p: &[u8]) -> bool {
    let mut h = 12 + 4 * (p[0] & 0x0f) as usize;
    if p[0] & 0x10 != 0 && p.len() >= h + 4 {
        h += 4 + 4 * u16::from_be_bytes([p[h + 2], p[h + 3]]) as usize;
    }
    let payload = p.get(h..).unwrap_or_default();
    if payload.is_empty() {
        return false;
    }
    let e: f64 = payload
        .iter()
        .map(|&u| (mixer::g711::ulaw_to_linear(u) as f64).powi(2))
        .sum();
    (e / payload.len() as f64).sqrt() > 1000.0
}

/// `a` talks and `b` is silent for `rounds` packets: how many of the packets `b` received
/// after the first 20 (the jitter buffers filled) were loud, and how many there were.
fn talk(a: &mut Party, b: &mut Party, rounds: usize) -> (usize, usize) {
    let (mut loud_n, mut total) = (0, 0);
    for i in 0..rounds {
        a.send(true);
        b.send(false);
        std::thread::sleep(PTIME);
        let got = drain(&b.rtp);
        if i >= 20 {
            total += got.len();
            loud_n += got.iter().filter(|p| loud(p)).count();
        }
        drain(&a.rtp);
    }
    (loud_n, total)
}

#[test]
fn injected_rtp_never_reaches_the_mix_nor_steals_the_downlink() {
    let srv = TestServer::start(ServeArgs {
        seed: Some(31),
        ..args("36000-36049")
    });
    let mut a = Party::join(&srv, "strict", "a1", "");
    let mut b = Party::join(&srv, "strict", "b1", "");
    // Same host, another port: the source is its address, not only its IP.
    let attacker = rtp_socket("127.0.0.1");
    let foreign_before = srv.metric("mcu_media_foreign_dropped_total");

    // Positive control: A talks, B hears A.
    let (b_loud, b_total) = talk(&mut a, &mut b, 60);
    eprintln!("positive control: B: {b_loud} of {b_total} packets loud");
    assert!(b_total >= 30, "B receives its mix ({b_total} packets)");
    assert!(
        b_loud * 10 >= b_total * 8,
        "B hears A's tone: {b_loud} of {b_total} packets loud"
    );

    // A falls silent; an attacker sends a loud tone under another SSRC to A's port.
    let (mut b_loud, mut b_total, mut a_got, mut attacker_sent) = (0, 0, 0, 0);
    let mut buf = [0u8; 2048];
    for i in 0..75u16 {
        a.send(false);
        b.send(false);
        attacker
            .send_to(&uac::pcmu_packet(0xbad, 5000 + i, i as u32 * 160), a.server)
            .unwrap();
        attacker_sent += 1;
        std::thread::sleep(PTIME);
        let got = drain(&b.rtp);
        if i >= 15 {
            // once A's tone has left the jitter buffers
            b_total += got.len();
            b_loud += got.iter().filter(|p| loud(p)).count();
        }
        a_got += drain(&a.rtp).len();
        assert!(
            attacker.recv_from(&mut buf).is_err(),
            "the attacker received media"
        );
    }
    assert!(
        b_total >= 30,
        "B still receives its mix ({b_total} packets)"
    );
    eprintln!("attacker: {attacker_sent} packets sent; B: {b_loud} of {b_total} packets loud; A: {a_got} received");
    assert_eq!(b_loud, 0, "B heard the attacker's tone in {b_loud} packets");
    assert!(
        a_got >= 50,
        "A's downlink still goes to A ({a_got} packets)"
    );
    let dropped = wait_counter(
        &srv,
        "mcu_media_foreign_dropped_total",
        foreign_before + attacker_sent as f64,
    );
    assert_eq!(dropped - foreign_before, attacker_sent as f64);

    // A new SSRC from A's own address is A's: B hears it.
    a.ssrc = 0x5eed;
    let (b_loud, b_total) = talk(&mut a, &mut b, 50);
    assert!(
        b_total >= 20 && b_loud * 10 >= b_total * 8,
        "B hears A's new SSRC: {b_loud} of {b_total} packets loud"
    );
    assert_eq!(uac::status(&a.ua.bye().unwrap()), Some(200));
    assert_eq!(uac::status(&b.ua.bye().unwrap()), Some(200));
}

#[test]
fn a_listener_keeps_its_downlink_after_the_probation() {
    let srv = TestServer::start(ServeArgs {
        seed: Some(32),
        ..args("36050-36099")
    });
    let mut talker = Party::join(&srv, "lecture", "t1", "");
    let listener = Party::join(&srv, "lecture", "l1", "a=recvonly\r\n");
    let attacker = rtp_socket("127.0.0.2");
    // Inside the probation too: a recvonly client learns nothing but its SDP address.
    attacker
        .send_to(&uac::pcmu_packet(0xbad, 1, 0), listener.server)
        .unwrap();
    let mut buf = [0u8; 2048];
    // Past the probation (the listener never sends); it hears the talker all along.
    let start = Instant::now();
    let mut heard = 0;
    while start.elapsed() < control::latch::PROBATION + Duration::from_millis(300) {
        talker.send(true);
        std::thread::sleep(PTIME);
        heard += drain(&listener.rtp).iter().filter(|p| loud(p)).count();
        drain(&talker.rtp);
        assert!(
            attacker.recv_from(&mut buf).is_err(),
            "the attacker took over the listener's downlink during the probation"
        );
    }
    assert!(
        heard >= 50,
        "the listener hears the talker ({heard} packets)"
    );

    // One packet, then a few more, from the attacker to the listener's port.
    let before = srv.metric("mcu_media_foreign_dropped_total");
    let mut heard = 0;
    for i in 0..50u16 {
        if i.is_multiple_of(10) {
            attacker
                .send_to(&uac::pcmu_packet(0xbad, i, i as u32 * 160), listener.server)
                .unwrap();
        }
        talker.send(true);
        std::thread::sleep(PTIME);
        heard += drain(&listener.rtp).len();
        drain(&talker.rtp);
        assert!(
            attacker.recv_from(&mut buf).is_err(),
            "the attacker took over the listener's downlink"
        );
    }
    assert!(heard >= 40, "the listener still receives ({heard} packets)");
    wait_counter(&srv, "mcu_media_foreign_dropped_total", before + 5.0);
}

#[test]
fn foreign_rtcp_is_dropped_and_never_redirects_our_rtcp() {
    let srv = TestServer::start(ServeArgs {
        seed: Some(33),
        ..args("36100-36149")
    });
    // Without rtcp-mux; its RTCP socket is given with a=rtcp.
    let rtcp = rtp_socket("127.0.0.1");
    let port = rtcp.local_addr().unwrap().port();
    let mut a = Party::join(&srv, "reports", "r1", &format!("a=rtcp:{port}\r\n"));
    let server_rtcp = SocketAddr::new(a.server.ip(), a.server.port() + 1);
    let attacker = rtp_socket("127.0.0.2");
    let before = srv.metric("mcu_rtcp_foreign_dropped_total");
    // Receiver reports from the attacker, to our RTCP port and (mux-style) our RTP port,
    // until our first sender report arrives (0.5 to 5 s after the join).
    let rr = [0x80u8, 201, 0, 1, 0, 0, 0x0b, 0xad];
    let deadline = Instant::now() + Duration::from_secs(7);
    let mut buf = [0u8; 2048];
    let mut sent = 0;
    let sr = loop {
        attacker.send_to(&rr, server_rtcp).unwrap();
        attacker.send_to(&rr, a.server).unwrap();
        sent += 2;
        a.send(true);
        std::thread::sleep(PTIME);
        assert!(
            attacker.recv_from(&mut buf).is_err(),
            "the attacker received our media or reports"
        );
        if let Ok((n, _)) = rtcp.recv_from(&mut buf) {
            break buf[..n].to_vec();
        }
        assert!(
            Instant::now() < deadline,
            "no RTCP report reached the client"
        );
    };
    assert_eq!(sr[1], 200, "a sender report");
    let dropped = wait_counter(&srv, "mcu_rtcp_foreign_dropped_total", before + sent as f64);
    assert_eq!(dropped - before, sent as f64);
    assert_eq!(uac::status(&a.ua.bye().unwrap()), Some(200));
}

#[test]
fn a_reinvite_to_a_new_address_moves_the_media() {
    let srv = TestServer::start(ServeArgs {
        seed: Some(34),
        ..args("36150-36199")
    });
    let mut a = Party::join(&srv, "moving", "m1", "");
    for _ in 0..25 {
        a.send(false);
        std::thread::sleep(PTIME);
    }
    assert!(!drain(&a.rtp).is_empty(), "media reach the first address");
    // The client moves to another socket and says so in a re-INVITE.
    let new = rtp_socket("127.0.0.1");
    a.ua.cseq += 1;
    let offer = a.ua.pcmu_offer(new.local_addr().unwrap());
    let ok = a.ua.call(&offer);
    assert_eq!(uac::status(&ok), Some(200));
    let old = std::mem::replace(&mut a.rtp, new);
    std::thread::sleep(Duration::from_millis(100)); // packets already in flight
    drain(&old);
    let before = srv.metric("mcu_media_foreign_dropped_total");
    let (mut got_new, mut got_old) = (0, 0);
    for i in 0..50u16 {
        a.send(false);
        if i.is_multiple_of(10) {
            // The old address is now foreign.
            old.send_to(&silence(0xa11ce, 9000 + i, 0), a.server)
                .unwrap();
        }
        std::thread::sleep(PTIME);
        got_new += drain(&a.rtp).len();
        got_old += drain(&old).len();
    }
    assert!(got_new >= 40, "media follow the new address ({got_new})");
    assert_eq!(got_old, 0, "media still reach the old address");
    wait_counter(&srv, "mcu_media_foreign_dropped_total", before + 5.0);
    assert_eq!(uac::status(&a.ua.bye().unwrap()), Some(200));
}

#[test]
fn an_ipv6_offer_is_refused_with_488_on_ipv4_media() {
    let srv = TestServer::start(ServeArgs {
        seed: Some(35),
        ..args("36200-36249")
    });
    let ua = Uac::new(srv.sip, "six", "v6");
    let sdp = "v=0\r\no=x 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    ua.send_raw(ua.request("INVITE", 1, "v6", "", sdp).as_bytes());
    let r = ua
        .recv_until(Duration::from_secs(3), |m| {
            uac::status(m).is_some_and(|s| s >= 200)
        })
        .expect("a final response");
    assert_eq!(uac::status(&r), Some(488), "{r}");
    ua.send_raw(ua.request("ACK", 1, "v6", "", "").as_bytes());
    // Positive control: the same offer over IPv4 is served.
    let mut v4 = Uac::new(srv.sip, "six", "v4");
    let rtp = rtp_socket("127.0.0.1");
    let ok = v4.call(&v4.pcmu_offer(rtp.local_addr().unwrap()));
    assert_eq!(uac::status(&ok), Some(200));
    // A re-INVITE moving the call to IPv6: 488, the call goes on.
    v4.cseq += 1;
    let reinvite = v4.request("INVITE", v4.cseq, "re6", "", sdp);
    v4.send_raw(reinvite.as_bytes());
    let r = v4
        .recv_until(Duration::from_secs(3), |m| {
            m.contains("z9hG4bKre6") && uac::status(m).is_some_and(|s| s >= 200)
        })
        .expect("a response to the re-INVITE");
    assert_eq!(uac::status(&r), Some(488), "{r}");
    v4.send_raw(v4.request("ACK", v4.cseq, "re6", "", "").as_bytes());
    assert_eq!(uac::status(&v4.bye().unwrap()), Some(200));
}

/// Sets the flag when dropped (a scoped sender thread stops even when the test panics).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn media_timeout_ends_silent_calls_only_and_media_stop_with_our_bye() {
    let srv = TestServer::start(ServeArgs {
        seed: Some(36),
        media_timeout: Some(2),
        ..args("36250-36299")
    });
    let timeout = Duration::from_secs(2);
    let talking = Party::join(&srv, "quiet", "q1", "");
    let held = Party::join(&srv, "quiet", "q2", "a=sendonly\r\n");
    // Silence suppression: no RTP, RTCP every 500 ms (rtcp-mux, from its RTP address).
    let reporting = Party::join(&srv, "quiet", "q3", "a=rtcp-mux\r\n");
    let silent = Party::join(&srv, "quiet", "q4", "");
    let start = Instant::now();
    let stop = AtomicBool::new(false);
    let (talk, talk_to) = (talking.rtp.try_clone().unwrap(), talking.server);
    let (report, report_to) = (reporting.rtp.try_clone().unwrap(), reporting.server);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut k = 0u16;
            while !stop.load(Ordering::Relaxed) {
                let p = uac::pcmu_packet(0x7a1c, k, k as u32 * 160);
                talk.send_to(&p, talk_to).unwrap();
                if k.is_multiple_of(25) {
                    let rr = [0x80u8, 201, 0, 1, 0, 0, 0x0c, 0x03];
                    report.send_to(&rr, report_to).unwrap();
                }
                k = k.wrapping_add(1);
                std::thread::sleep(PTIME);
            }
        });
        // The sender stops when this closure ends, a failed assertion included.
        let _stop = StopOnDrop(&stop);
        // Positive control: media reach the silent client until our BYE.
        let bye = silent
            .ua
            .recv_until(Duration::from_secs(4), |m| m.starts_with("BYE "))
            .expect("no BYE for the silent call");
        let at = start.elapsed();
        eprintln!("media timeout {timeout:?}: BYE {at:?} after the call was answered");
        assert!(
            at >= timeout - Duration::from_millis(300) && at <= timeout + Duration::from_secs(1),
            "BYE {at:?} after the call started (timeout {timeout:?})"
        );
        assert!(
            !drain(&silent.rtp).is_empty(),
            "the silent client received media before the BYE"
        );
        // Not answered (a dead client). After packets in flight, nothing more arrives.
        std::thread::sleep(Duration::from_millis(100));
        drain(&silent.rtp);
        let quiet_from = Instant::now();
        while quiet_from.elapsed() < Duration::from_secs(1) {
            std::thread::sleep(PTIME);
            let late = drain(&silent.rtp);
            assert!(
                late.is_empty(),
                "{} RTP packets after our BYE ({})",
                late.len(),
                bye.lines().next().unwrap_or_default()
            );
        }
        // The others live on past twice the timeout.
        while start.elapsed() < 2 * timeout + Duration::from_millis(500) {
            std::thread::sleep(Duration::from_millis(100));
        }
        for (p, what) in [
            (&talking, "the talking call"),
            (&held, "the held call"),
            (&reporting, "the call sending only RTCP"),
        ] {
            assert!(
                p.ua.recv_until(Duration::from_millis(300), |m| m.starts_with("BYE "))
                    .is_none(),
                "{what} was hung up"
            );
        }
    });
    assert_eq!(srv.metric("mcu_media_timeouts_total"), 1.0);
    for mut p in [talking, held, reporting] {
        assert_eq!(uac::status(&p.ua.bye().unwrap()), Some(200));
    }
}
