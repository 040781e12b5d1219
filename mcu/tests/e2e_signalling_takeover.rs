//! Joins and leaves across a takeover (issue 10, point 5), in the namespace test bed: a
//! primary and a backup serve the service address; three scripted SIP UACs (real UDP, RFC
//! 3261 retransmissions) are in one room, one of them sending a 1 kHz tone. The primary gets
//! `kill -9`, and within the failure-detection window (the same millisecond) a fourth UAC
//! sends an INVITE, one member sends BYE and one a re-INVITE. Each request is served by
//! whoever is active when its transmission (or a retransmission) arrives: the test asserts
//! what each client observes on the wire: exactly one final response per request, a 200
//! (never a 481 or 5xx, never silence); the new caller hears the tone on a working call; the
//! re-INVITEd member keeps its stream (same SSRC); the member that left is gone from the
//! room and gets no more media; no request from the server reaches any client.

mod common;
use common::uac::{body, header, pcmu_packet, sdp_media, status, Uac};
use common::Node;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::bed::{addr_of, Testbed, VIP};
use testkit::poll;

const ROOM: &str = "sig";
const TIMEOUT: Duration = Duration::from_secs(8);

fn participants(node: &Node) -> usize {
    node.get_json("/api/rooms")
        .and_then(|r| {
            r["rooms"].as_array().map(|rooms| {
                rooms
                    .iter()
                    .filter_map(|room| room["participants"].as_object().map(|p| p.len()))
                    .sum()
            })
        })
        .unwrap_or(0)
}

/// A UAC in `client`'s namespace (SIP on :5070, RTP on :20000).
fn uac(bed: &Testbed, client: &str, tag: &str) -> (Uac, UdpSocket) {
    let ip = addr_of(client);
    let sip = bed.udp(client, &format!("{ip}:5070"));
    let rtp = bed.udp(client, &format!("{ip}:20000"));
    rtp.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    (
        Uac::with_socket(sip, SocketAddr::new(VIP.into(), 5060), ROOM, tag),
        rtp,
    )
}

fn offer(uac: &Uac, rtp: &UdpSocket, version: u32) -> String {
    uac.pcmu_offer(rtp.local_addr().unwrap())
        .replace("o=tester 1 1 ", &format!("o=tester 1 {version} "))
}

/// The only final response in `responses`, which must be a 200.
fn one_ok(who: &str, responses: &[(Instant, String)], kill: Instant) -> String {
    let finals: Vec<_> = responses
        .iter()
        .filter(|(_, m)| status(m).is_some_and(|c| c >= 200))
        .collect();
    let log: Vec<String> = responses
        .iter()
        .map(|(t, m)| {
            format!(
                "{:+.1} ms {}",
                t.duration_since(kill).as_secs_f64() * 1e3,
                m.lines().next().unwrap_or("")
            )
        })
        .collect();
    eprintln!("SIGNALLING {who}: {log:?}");
    assert_eq!(finals.len(), 1, "{who}: final responses {log:?}");
    assert_eq!(status(&finals[0].1), Some(200), "{who}: {log:?}");
    finals[0].1.clone()
}

/// RTP packets on `rtp` during `d`: (ssrc, seq, payload is not PCMU silence).
fn rtp_during(rtp: &UdpSocket, d: Duration) -> Vec<(u32, u16, bool)> {
    let end = Instant::now() + d;
    let mut out = vec![];
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        if let Ok((n, from)) = rtp.recv_from(&mut buf) {
            if n > 12 && from.ip() == std::net::IpAddr::from(VIP) {
                let ssrc = u32::from_be_bytes(buf[8..12].try_into().unwrap());
                let seq = u16::from_be_bytes([buf[2], buf[3]]);
                let loud = buf[12..n]
                    .iter()
                    .filter(|b| !matches!(**b, 0xFF | 0x7F | 0xFE | 0x7E))
                    .count()
                    > (n - 12) / 4;
                out.push((ssrc, seq, loud));
            }
        }
    }
    out
}

/// Requests the server sent to a UAC (it must send none: no BYE, no re-INVITE).
fn server_requests(uac: &Uac, d: Duration) -> Vec<String> {
    let mut got = vec![];
    let end = Instant::now() + d;
    let mut buf = vec![0u8; 65536];
    while Instant::now() < end {
        if let Ok((n, _)) = uac.sock.recv_from(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).to_string();
            if status(&m).is_none() {
                got.push(m.lines().next().unwrap_or("").to_string());
            }
        }
    }
    got
}

#[test]
fn invite_bye_and_reinvite_in_the_detection_window() {
    testkit::require::e2e("network namespaces", &["ip", "iptables"]);
    let prefix = std::env::var("SIGNALLING_PREFIX").unwrap_or_else(|_| "us-st".into());
    let dir = testkit::Scratch::new("e2e-signalling");
    let key = dir.path("ft.key");
    std::fs::write(&key, format!("understudy-sig-{}", std::process::id())).unwrap();
    let bed = Testbed::up(&prefix, 4);
    let (mut primary, mut backup) = common::start_pair(&bed, &key);

    // A talks (a tone), B and C listen; all three in the room.
    let (mut a, a_rtp) = uac(&bed, "client1", "alice");
    let (mut b, b_rtp) = uac(&bed, "client2", "bob");
    let (mut c, c_rtp) = uac(&bed, "client3", "carol");
    let (mut d, d_rtp) = uac(&bed, "client4", "dave");
    let ok = a.call(&offer(&a, &a_rtp, 1));
    let media = sdp_media(body(&ok)).expect("media address in the 200");
    let stop = Arc::new(AtomicBool::new(false));
    let talker = {
        let (sock, stop) = (a_rtp.try_clone().unwrap(), stop.clone());
        std::thread::spawn(move || {
            let mut seq = 0u16;
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let _ = sock.send_to(&pcmu_packet(0xA11CE, seq, u32::from(seq) * 160), media);
                seq = seq.wrapping_add(1);
                next += Duration::from_millis(20);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        })
    };
    b.call(&offer(&b, &b_rtp, 1));
    c.call(&offer(&c, &c_rtp, 1));
    assert!(
        poll(Duration::from_secs(5), || (participants(&primary) == 3)
            .then_some(()))
        .is_some(),
        "three participants on the primary"
    );
    assert!(
        common::pair_synced(&primary, &backup),
        "the backup holds the room"
    );
    let before = rtp_during(&c_rtp, Duration::from_millis(600));
    let c_ssrc = before.last().expect("C hears the room before the kill").0;
    assert!(
        before.iter().filter(|p| p.2).count() > 10,
        "C hears the tone before the kill"
    );
    // Drain B's media so that what arrives later is after the BYE.
    rtp_during(&b_rtp, Duration::from_millis(100));

    // kill -9, and at once: D's INVITE, B's BYE, C's re-INVITE.
    let kill = Instant::now();
    primary.kill9();
    let d_invite = d.request("INVITE", 1, "inv1", "", &offer(&d, &d_rtp, 1));
    b.cseq += 1;
    let b_bye = b.request("BYE", b.cseq, "bye2", "", "");
    c.cseq += 1;
    let c_reinvite = c.request("INVITE", c.cseq, "reinv2", "", &offer(&c, &c_rtp, 2));
    let (d_res, b_res, c_res) = std::thread::scope(|s| {
        let dh = s.spawn(|| d.transact(&d_invite, "INVITE", TIMEOUT));
        let bh = s.spawn(|| b.transact(&b_bye, "BYE", TIMEOUT));
        let ch = s.spawn(|| c.transact(&c_reinvite, "INVITE", TIMEOUT));
        (dh.join().unwrap(), bh.join().unwrap(), ch.join().unwrap())
    });
    // What B's port holds now was sent before its BYE was answered (or with it).
    let b_before_200 = rtp_during(&b_rtp, Duration::from_millis(60)).len();
    let b_after = rtp_during(&b_rtp, Duration::from_millis(500));
    let took_over = backup.log.wait("takeover complete", Duration::from_secs(2));
    eprintln!("SIGNALLING backup: {took_over:?}");
    assert!(took_over.is_some(), "no takeover");

    // D: a working call.
    let d_ok = one_ok("new INVITE", &d_res, kill);
    d.learn_tag(&d_ok);
    d.send_raw(d.request("ACK", 1, "ack1", "", "").as_bytes());
    // B: left.
    one_ok("BYE", &b_res, kill);
    // C: the re-INVITE is answered, the stream goes on.
    let c_ok = one_ok("re-INVITE", &c_res, kill);
    assert!(
        sdp_media(body(&c_ok)).is_some(),
        "re-INVITE answered without SDP"
    );
    c.send_raw(c.request("ACK", c.cseq, "ack2", "", "").as_bytes());

    let d_media = rtp_during(&d_rtp, Duration::from_secs(1));
    let c_after = rtp_during(&c_rtp, Duration::from_secs(1));
    eprintln!("SIGNALLING B: {b_before_200} packets queued before the 200 to its BYE");
    eprintln!(
        "SIGNALLING after: D {} packets ({} loud), C {} packets (SSRCs {:?}), B {} packets",
        d_media.len(),
        d_media.iter().filter(|p| p.2).count(),
        c_after.len(),
        c_after
            .iter()
            .map(|p| p.0)
            .collect::<std::collections::BTreeSet<_>>(),
        b_after.len()
    );
    assert!(
        d_media.len() >= 40,
        "D's call carries no media: {}",
        d_media.len()
    );
    assert!(
        d_media.iter().filter(|p| p.2).count() >= 20,
        "D does not hear the talker"
    );
    assert!(
        d_media.windows(2).all(|w| w[0].0 == w[1].0),
        "D's stream changes SSRC"
    );
    assert!(c_after.len() >= 40, "C's stream stopped");
    assert!(
        c_after.iter().all(|p| p.0 == c_ssrc),
        "C's stream changed SSRC across the takeover"
    );
    assert!(
        b_after.is_empty(),
        "B got {} packets after its BYE was answered",
        b_after.len()
    );
    let now_serving = &backup;
    assert!(
        poll(Duration::from_secs(2), || (participants(now_serving) == 3)
            .then_some(()))
        .is_some(),
        "the new primary's room is not A, C, D: {:?}",
        now_serving.get_json("/api/rooms")
    );
    for (who, u) in [("A", &a), ("B", &b), ("C", &c), ("D", &d)] {
        let reqs = server_requests(u, Duration::from_millis(200));
        assert!(reqs.is_empty(), "the server sent {who} {reqs:?}");
    }
    // Everyone still in hangs up cleanly on the new primary.
    for (who, u) in [("A", &mut a), ("C", &mut c), ("D", &mut d)] {
        let r = u.bye().unwrap_or_default();
        assert_eq!(status(&r), Some(200), "{who}'s BYE: {r}");
        assert!(header(&r, "CSeq").is_some_and(|c| c.ends_with("BYE")));
    }
    stop.store(true, Ordering::Relaxed);
    talker.join().unwrap();
    assert!(
        poll(Duration::from_secs(2), || (participants(now_serving) == 0)
            .then_some(()))
        .is_some(),
        "the room is not empty"
    );
    backup.kill9();
}
