//! The shared WebRTC port as browsers see it, in memory and virtual time: scripted browsers
//! (ICE checks built with rtc-stun, an rtc-dtls client pinning our fingerprint, and SRTP with
//! this crate's sender/receiver keyed as the DTLS client) talk to a `Transport` through
//! datagrams delivered by hand.
//!
//! Covered: joining (check, nomination, handshake held until the final flight is released,
//! keys equal to the browser's export); media both ways, byte for byte; demultiplexing and
//! every refusal with its counter; a takeover by a backup built from what a replica holds,
//! after the outgoing sequence number wrapped (identical bytes, the browser accepts them, wrong
//! or missing stream state is rejected, the SRTCP index margin); consent expiry.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc_dtls::config::{ConfigBuilder, ExtendedMasterSecretType, HandshakeConfig};
use rtc_dtls::crypto::Certificate as RtcCertificate;
use rtc_dtls::crypto_provider::providers::RingProvider;
use rtc_dtls::crypto_provider::{HashAlgorithm, RTCCryptoProvider};
use rtc_dtls::endpoint::{Endpoint, EndpointEvent};
use rtc_dtls::extension::extension_use_srtp::SrtpProtectionProfile as RtcProfile;
use rtc_shared::TransportProtocol;
use rtc_stun::attributes::{
    RawAttribute, ATTR_ICE_CONTROLLING, ATTR_PRIORITY, ATTR_USERNAME, ATTR_USE_CANDIDATE,
};
use rtc_stun::crypto::providers::RingCrypto;
use rtc_stun::fingerprint::FINGERPRINT;
use rtc_stun::integrity::MessageIntegrity;
use rtc_stun::message::{Getter, Message, Setter, TransactionId, BINDING_REQUEST, BINDING_SUCCESS};
use rtc_stun::textattrs::TextAttribute;
use rtc_stun::xoraddr::XorMappedAddress;
use webrtc_core::dtls::{Certificate, KeyingMaterial};
use webrtc_core::ice::Credentials;
use webrtc_core::peer::{PeerConfig, PeerEvent, CONSENT_TIMEOUT};
use webrtc_core::srtp::{split_keying_material, DtlsRole, Profile, SrtpReceiver, SrtpSender};
use webrtc_core::transport::{Output, PeerId, Stats, Transport};
use webrtc_core::Error;

/// The server's WebRTC port, as the browsers address it.
const SERVER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4433);
/// The SSRC of the room's stream to a browser.
const ROOM_SSRC: u32 = 0x5eed_0001;
/// How far ahead of the last replicated SRTCP index a backup resumes.
const SRTCP_MARGIN: u32 = 100;

static CRYPTO: RingCrypto = RingCrypto;

fn ring() -> Arc<dyn RTCCryptoProvider> {
    Arc::new(RingProvider::new())
}

fn sdp_fingerprint(der: &[u8]) -> String {
    let digest = ring().crypto().hash(HashAlgorithm::Sha256, der).unwrap();
    let hex: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A plain RTP packet: Opus payload type, `seq`, a timestamp following it, a payload that
/// differs per packet.
fn rtp(ssrc: u32, seq: u16) -> Vec<u8> {
    let ts = u32::from(seq).wrapping_mul(960);
    let mut p = vec![0x80, 111];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..40u8).map(|i| i ^ seq as u8));
    p
}

/// A plain RTCP sender report from `ssrc`, its counters carrying `n`.
fn rtcp_sr(ssrc: u32, n: u32) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0xe8, 0, 0, 0, 0, 0, 0, 0]); // NTP timestamp
    p.extend_from_slice(&(n * 960).to_be_bytes()); // RTP timestamp
    p.extend_from_slice(&n.to_be_bytes()); // packet count
    p.extend_from_slice(&(n * 40).to_be_bytes()); // octet count
    p
}

/// One scripted browser: its address, the ICE credentials of both sides, a DTLS client and,
/// once that is connected, SRTP keyed as the DTLS client.
struct Browser {
    addr: SocketAddr,
    /// The server's credentials for this participant (our answer's).
    server: Credentials,
    /// The browser's own (its offer's).
    own: Credentials,
    dtls: Endpoint,
    connected: bool,
    tx: Option<SrtpSender>,
    rx: Option<SrtpReceiver>,
    tid: u32,
}

impl Browser {
    /// Browser `n` at `addr`, offering `profiles`, pinning `cert`; and the participant's
    /// configuration as signalling would hand it to the transport.
    fn new(
        n: u8,
        addr: SocketAddr,
        cert: &Certificate,
        profiles: &[RtcProfile],
        now: Instant,
    ) -> (Browser, PeerConfig) {
        let server = Credentials {
            ufrag: format!("srv{n}UFRG"),
            pwd: format!("ServerPassword{n}xxxxxxxxxxxx")[..24].to_owned(),
        };
        let own = Credentials {
            ufrag: format!("br{n}U"),
            pwd: format!("BrowserPassword{n}yyyyyyyyyyyy")[..24].to_owned(),
        };
        let client_cert =
            RtcCertificate::generate_self_signed(vec!["browser".to_owned()], ring().crypto())
                .unwrap();
        let fingerprint = sdp_fingerprint(client_cert.certificate[0].as_ref());
        let server_fingerprint = cert.fingerprint_sha256();
        let config = ConfigBuilder::default()
            .with_crypto_provider(ring())
            .with_certificates(vec![client_cert])
            .with_srtp_protection_profiles(profiles.to_vec())
            .with_extended_master_secret(ExtendedMasterSecretType::Require)
            .with_insecure_skip_verify(true)
            .with_verify_peer_certificate(Some(Arc::new(move |certs, _| {
                match certs.first().map(|der| sdp_fingerprint(der)) {
                    Some(fp) if fp == server_fingerprint => Ok(()),
                    _ => Err(rtc_shared::error::Error::Other("server fingerprint".into())),
                }
            })))
            .build(true, None)
            .unwrap();
        let config: Arc<HandshakeConfig> = Arc::new(config);
        let mut dtls = Endpoint::new(addr, TransportProtocol::UDP, None);
        dtls.connect(now, SERVER, config, None).unwrap();
        let cfg = PeerConfig {
            local: server.clone(),
            remote: own.clone(),
            remote_fingerprint: fingerprint,
        };
        let browser = Browser {
            addr,
            server,
            own,
            dtls,
            connected: false,
            tx: None,
            rx: None,
            tid: u32::from(n) << 24,
        };
        (browser, cfg)
    }

    /// A connectivity / consent check as Chromium sends it, signed with the server's password.
    fn check(&mut self, nominate: bool) -> (Vec<u8>, [u8; 12]) {
        let pwd = self.server.pwd.clone();
        self.check_signed_with(&pwd, nominate)
    }

    fn check_signed_with(&mut self, pwd: &str, nominate: bool) -> (Vec<u8>, [u8; 12]) {
        self.tid += 1;
        let mut tid = [0u8; 12];
        tid[8..].copy_from_slice(&self.tid.to_be_bytes());
        let raw = |typ, value: &[u8]| -> Box<dyn Setter> {
            Box::new(RawAttribute {
                typ,
                length: 0,
                value: value.to_vec(),
            })
        };
        let username = format!("{}:{}", self.server.ufrag, self.own.ufrag);
        let mut setters: Vec<Box<dyn Setter>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId(tid)),
            Box::new(TextAttribute::new(ATTR_USERNAME, username)),
            raw(ATTR_ICE_CONTROLLING, &[1, 2, 3, 4, 5, 6, 7, 8]),
        ];
        if nominate {
            setters.push(raw(ATTR_USE_CANDIDATE, &[]));
        }
        setters.push(raw(ATTR_PRIORITY, &[0x6e, 0x00, 0x1e, 0xff]));
        setters.push(Box::new(
            MessageIntegrity::new_short_term_integrity_with_provider(pwd.to_owned(), &CRYPTO),
        ));
        setters.push(Box::new(FINGERPRINT));
        let mut msg = Message::new();
        msg.build(&setters).unwrap();
        (msg.raw, tid)
    }

    /// Checks an answer the way the browser does: a Binding success for `tid`, signed with
    /// the server's password, FINGERPRINT right, mapping the browser's address.
    fn assert_answer(&self, response: &[u8], tid: [u8; 12]) {
        let mut msg = Message::new();
        msg.unmarshal_binary(response).expect("the answer decodes");
        assert_eq!(msg.typ, BINDING_SUCCESS);
        assert_eq!(msg.transaction_id.0, tid);
        FINGERPRINT.check(&msg).expect("FINGERPRINT");
        MessageIntegrity::check(&mut msg, self.server.pwd.as_bytes(), &CRYPTO)
            .expect("MESSAGE-INTEGRITY with the server's password");
        let mut xor = XorMappedAddress::default();
        xor.get_from(&msg).expect("XOR-MAPPED-ADDRESS");
        assert_eq!(SocketAddr::new(xor.ip, xor.port), self.addr);
    }

    fn dtls_out(&mut self) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| self.dtls.poll_transmit().map(|t| t.message.to_vec())).collect()
    }

    fn dtls_in(&mut self, data: &[u8], now: Instant) {
        let events = self.dtls.read(now, SERVER, None, data.into()).unwrap();
        if events
            .iter()
            .any(|e| matches!(e, EndpointEvent::HandshakeComplete))
        {
            self.connected = true;
        }
    }

    /// The browser's own export (RFC 5764 §4.2 label, spelled out here).
    fn export(&self, profile: Profile) -> Vec<u8> {
        self.dtls
            .get_connection_state(SERVER)
            .unwrap()
            .export_keying_material("EXTRACTOR-dtls_srtp", &[], profile.keying_material_len())
            .unwrap()
            .as_ref()
            .to_vec()
    }

    /// Keys SRTP the way the browser (DTLS client) does, from its own export.
    fn key_srtp(&mut self, profile: Profile) {
        let material = self.export(profile);
        let (ours, theirs) = split_keying_material(profile, &material, DtlsRole::Client).unwrap();
        self.tx = Some(SrtpSender::new(ours).unwrap());
        self.rx = Some(SrtpReceiver::new(theirs).unwrap());
    }

    fn srtp(&mut self, plain: &[u8]) -> Vec<u8> {
        let mut wire = Vec::new();
        self.tx
            .as_mut()
            .unwrap()
            .protect_rtp(plain, &mut wire)
            .unwrap();
        wire
    }

    fn srtcp(&mut self, plain: &[u8]) -> Vec<u8> {
        let mut wire = Vec::new();
        self.tx
            .as_mut()
            .unwrap()
            .protect_rtcp(plain, &mut wire)
            .unwrap();
        wire
    }

    fn receiver(&self) -> SrtpReceiver {
        self.rx.clone().expect("keyed")
    }
}

fn unprotect_rtp(rx: &mut SrtpReceiver, wire: &[u8]) -> Result<Vec<u8>, Error> {
    let mut plain = Vec::new();
    rx.unprotect_rtp(wire, &mut plain).map(|()| plain)
}

fn unprotect_rtcp(rx: &mut SrtpReceiver, wire: &[u8]) -> Result<Vec<u8>, Error> {
    let mut plain = Vec::new();
    rx.unprotect_rtcp(wire, &mut plain).map(|()| plain)
}

/// A transport and the virtual clock it runs on.
struct Server {
    t: Transport,
    now: Instant,
}

impl Server {
    fn new(cert: &Certificate, origin: Instant) -> Server {
        Server {
            t: Transport::new(cert.clone(), origin),
            now: origin,
        }
    }

    fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.t.poll_output()).collect()
    }

    fn input(&mut self, from: SocketAddr, data: &[u8]) -> Vec<Output> {
        self.t.handle_datagram(from, data, self.now);
        self.drain()
    }

    /// Fires every timer up to `until` in order, then sets the clock to `until`.
    fn run_until(&mut self, until: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        for _ in 0..10_000 {
            match self.t.poll_timeout() {
                Some(at) if at <= until => {
                    self.now = self.now.max(at);
                    self.t.handle_timeout(self.now);
                    out.extend(self.drain());
                }
                _ => {
                    self.now = self.now.max(until);
                    return out;
                }
            }
        }
        panic!("a timer keeps firing without advancing");
    }
}

fn transmits(outs: &[Output]) -> Vec<(SocketAddr, Vec<u8>)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Transmit { to, data } => Some((*to, data.clone())),
            _ => None,
        })
        .collect()
}

/// Participant events other than the outgoing streams' progress reports.
fn events(outs: &[Output]) -> Vec<(PeerId, PeerEvent)> {
    all_events(outs)
        .into_iter()
        .filter(|(_, e)| !matches!(e, PeerEvent::OutboundProgress { .. }))
        .collect()
}

fn all_events(outs: &[Output]) -> Vec<(PeerId, PeerEvent)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Event { peer, event } => Some((*peer, event.clone())),
            _ => None,
        })
        .collect()
}

/// The browser's nominating check: answered to its address, and its address selected.
fn nominate(server: &mut Server, browser: &mut Browser, id: PeerId) {
    let (check, tid) = browser.check(true);
    let outs = server.input(browser.addr, &check);
    let tx = transmits(&outs);
    assert_eq!(tx.len(), 1, "{outs:?}");
    assert_eq!(tx[0].0, browser.addr);
    browser.assert_answer(&tx[0].1, tid);
    assert_eq!(events(&outs), vec![(id, PeerEvent::Selected(browser.addr))]);
    assert_eq!(outs.len(), 2);
}

/// Shuttles DTLS between the browser and the transport until neither sends anything;
/// returns the keys if `Keyed` came out meanwhile.
fn shuttle_dtls(server: &mut Server, browser: &mut Browser) -> Option<KeyingMaterial> {
    let mut keyed = None;
    for _ in 0..20 {
        let up = browser.dtls_out();
        let mut outs = Vec::new();
        for d in &up {
            outs.extend(server.input(browser.addr, d));
        }
        let down = transmits(&outs);
        for (to, d) in &down {
            assert_eq!(*to, browser.addr, "DTLS to the browser's address");
            browser.dtls_in(d, server.now);
        }
        for (_, e) in events(&outs) {
            match e {
                PeerEvent::Keyed(k) => {
                    assert!(keyed.is_none(), "Keyed twice");
                    keyed = Some(k);
                }
                other => panic!("unexpected event during the handshake: {other:?}"),
            }
        }
        if up.is_empty() && down.is_empty() {
            break;
        }
    }
    keyed
}

/// A browser joins completely: nominated, handshaken, final flight released, SRTP keyed on
/// both sides. Returns the keys the transport reported.
fn join(server: &mut Server, browser: &mut Browser, id: PeerId, cfg: PeerConfig) -> KeyingMaterial {
    server.t.add(id, cfg, server.now).unwrap();
    nominate(server, browser, id);
    let km = shuttle_dtls(server, browser).expect("Keyed");
    assert!(!browser.connected);
    server.t.release_final_flight(id);
    let outs = server.drain();
    for (to, d) in transmits(&outs) {
        assert_eq!(to, browser.addr);
        browser.dtls_in(&d, server.now);
    }
    shuttle_dtls(server, browser);
    assert!(browser.connected);
    browser.key_srtp(km.profile);
    km
}

fn setup(profiles: &[RtcProfile]) -> (Certificate, Server, Browser, PeerConfig) {
    let cert = Certificate::generate().unwrap();
    let server = Server::new(&cert, Instant::now());
    let (browser, cfg) = Browser::new(1, addr("198.51.100.7:50123"), &cert, profiles, server.now);
    (cert, server, browser, cfg)
}

const BOTH: [RtcProfile; 2] = [
    RtcProfile::Srtp_Aead_Aes_128_Gcm,
    RtcProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
];

#[test]
fn a_browser_joins_and_the_handshake_completes_only_after_the_release() {
    let (_cert, mut server, mut browser, cfg) = setup(&BOTH);
    server.t.add(7, cfg, server.now).unwrap();
    assert_eq!(server.t.len(), 1);

    // Before any check, the browser's DTLS is from an unknown address: dropped, no answer.
    let hello = browser.dtls_out();
    assert!(!hello.is_empty());
    for d in &hello {
        assert_eq!(server.input(browser.addr, d), vec![]);
    }
    assert_eq!(server.t.stats().unknown_source, hello.len() as u64);

    nominate(&mut server, &mut browser, 7);
    assert_eq!(server.t.peer(7).unwrap().selected(), Some(browser.addr));
    // A ClientHello repeat now reaches the participant.
    for d in &hello {
        for (to, answer) in transmits(&server.input(browser.addr, d)) {
            assert_eq!(to, browser.addr);
            browser.dtls_in(&answer, server.now);
        }
    }
    let km = shuttle_dtls(&mut server, &mut browser).expect("Keyed");
    assert_eq!(km.material, browser.export(km.profile));
    assert_eq!(
        km.profile,
        Profile::AeadAes128Gcm,
        "the browser's first choice"
    );
    assert!(!browser.connected, "the final flight is held");

    // The browser repeats its last flight: the held flight is its only answer, so nothing.
    let at = browser
        .dtls
        .poll_timeout(&SERVER)
        .expect("the browser waits");
    server.now = server.now.max(at);
    browser.dtls.handle_timeout(SERVER, server.now).unwrap();
    let repeat = browser.dtls_out();
    assert!(!repeat.is_empty());
    for d in &repeat {
        assert!(transmits(&server.input(browser.addr, d)).is_empty());
    }
    assert!(!browser.connected);

    server.t.release_final_flight(7);
    let outs = server.drain();
    let down = transmits(&outs);
    assert!(!down.is_empty());
    for (to, d) in &down {
        assert_eq!(*to, browser.addr);
        browser.dtls_in(d, server.now);
    }
    assert!(browser.connected);
    assert!(events(&outs).is_empty());
    assert_eq!(server.t.stats().dtls_dropped, 0);
    assert_eq!(server.t.stats().stun_answered, 1);
}

#[test]
fn media_flow_both_ways_byte_for_byte() {
    for profiles in [
        &[RtcProfile::Srtp_Aead_Aes_128_Gcm][..],
        &[RtcProfile::Srtp_Aes128_Cm_Hmac_Sha1_80][..],
    ] {
        let (_cert, mut server, mut browser, cfg) = setup(profiles);
        let km = join(&mut server, &mut browser, 3, cfg);
        let expected = match profiles[0] {
            RtcProfile::Srtp_Aead_Aes_128_Gcm => Profile::AeadAes128Gcm,
            _ => Profile::Aes128CmHmacSha1_80,
        };
        assert_eq!(km.profile, expected);

        // Browser -> room.
        let browser_ssrc = 0xb00b_0001;
        for seq in 100..110 {
            let plain = rtp(browser_ssrc, seq);
            let outs = server.input(browser.addr, &browser.srtp(&plain));
            assert_eq!(
                outs,
                vec![Output::Rtp {
                    peer: 3,
                    from: browser.addr,
                    data: plain
                }]
            );
        }
        let sr = rtcp_sr(browser_ssrc, 10);
        let outs = server.input(browser.addr, &browser.srtcp(&sr));
        assert_eq!(
            outs,
            vec![Output::Rtcp {
                peer: 3,
                from: browser.addr,
                data: sr
            }]
        );

        // Room -> browser.
        let mut rx = browser.receiver();
        for seq in 500..510 {
            let plain = rtp(ROOM_SSRC, seq);
            let (to, wire) = server.t.protect_rtp(3, &plain).expect("keyed and selected");
            assert_eq!(to, browser.addr);
            assert_ne!(wire[12..plain.len()], plain[12..], "encrypted");
            assert_eq!(unprotect_rtp(&mut rx, &wire).unwrap(), plain);
        }
        let sr = rtcp_sr(ROOM_SSRC, 10);
        let (to, wire) = server.t.protect_rtcp(3, &sr).unwrap();
        assert_eq!(to, browser.addr);
        assert_eq!(unprotect_rtcp(&mut rx, &wire).unwrap(), sr);

        let stats = server.t.stats();
        assert_eq!(
            (stats.rtp_in, stats.rtcp_in, stats.srtp_dropped),
            (10, 1, 0)
        );
    }
}

#[test]
fn garbage_unknown_sources_and_bad_checks_are_counted_and_never_answered() {
    let (_cert, mut server, mut browser, cfg) = setup(&BOTH);
    join(&mut server, &mut browser, 1, cfg);
    let base = server.t.stats().clone();

    // Neither STUN, DTLS, RTP nor RTCP.
    for junk in [&[][..], &[4, 1, 2, 3], &[100; 40], &[0xff; 20]] {
        assert_eq!(server.input(browser.addr, junk), vec![]);
    }
    assert_eq!(server.t.stats().garbage, base.garbage + 4);

    // Valid SRTP / SRTCP / DTLS, from an address no check validated.
    let stranger = addr("203.0.113.9:40000");
    let wire = browser.srtp(&rtp(0xb00b_0001, 1));
    let wire_rtcp = browser.srtcp(&rtcp_sr(0xb00b_0001, 1));
    assert_eq!(server.input(stranger, &wire), vec![]);
    assert_eq!(server.input(stranger, &wire_rtcp), vec![]);
    assert_eq!(
        server.input(stranger, &[22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        vec![]
    );
    assert_eq!(server.t.stats().unknown_source, base.unknown_source + 3);

    // A check with the right username and the wrong password, and one for a username
    // nobody has: no answer, no routing of the address.
    let (bad, _) = browser.check_signed_with("NotTheServerPassword0000", true);
    assert_eq!(server.input(stranger, &bad), vec![]);
    assert_eq!(server.input(browser.addr, &bad), vec![]);
    let mut other = Browser::new(9, stranger, server.t.certificate(), &BOTH, server.now).0;
    let (unknown, _) = other.check(true);
    assert_eq!(server.input(stranger, &unknown), vec![]);
    assert_eq!(server.t.stats().stun_refused, base.stun_refused + 3);
    assert_eq!(server.input(stranger, &wire), vec![], "still unknown");
    assert_eq!(server.t.stats().unknown_source, base.unknown_source + 4);
    assert_eq!(server.t.peer(1).unwrap().selected(), Some(browser.addr));

    // SRTP whose tag does not verify, from the right address.
    let mut forged = browser.srtp(&rtp(0xb00b_0001, 2));
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert_eq!(server.input(browser.addr, &forged), vec![]);
    let mut forged_rtcp = browser.srtcp(&rtcp_sr(0xb00b_0001, 2));
    forged_rtcp[10] ^= 1;
    assert_eq!(server.input(browser.addr, &forged_rtcp), vec![]);
    assert_eq!(server.t.stats().srtp_dropped, base.srtp_dropped + 2);
    // A replay of an accepted packet is dropped too.
    let plain = rtp(0xb00b_0001, 3);
    let ok = browser.srtp(&plain);
    assert_eq!(server.input(browser.addr, &ok).len(), 1);
    assert_eq!(server.input(browser.addr, &ok), vec![]);
    assert_eq!(server.t.stats().srtp_dropped, base.srtp_dropped + 3);

    let stats = server.t.stats();
    assert_eq!(
        *stats,
        Stats {
            garbage: base.garbage + 4,
            unknown_source: base.unknown_source + 4,
            stun_refused: base.stun_refused + 3,
            srtp_dropped: base.srtp_dropped + 3,
            rtp_in: base.rtp_in + 1,
            ..base
        }
    );
}

#[test]
fn two_browsers_on_one_port_never_see_each_others_packets() {
    let (cert, mut server, mut a, cfg_a) = setup(&BOTH);
    let (mut b, cfg_b) = Browser::new(2, addr("198.51.100.8:50999"), &cert, &BOTH, server.now);
    assert_ne!(cfg_a.local.ufrag, cfg_b.local.ufrag);
    join(&mut server, &mut a, 10, cfg_a);
    join(&mut server, &mut b, 20, cfg_b);
    assert_eq!(server.t.len(), 2);

    let (pa, pb) = (rtp(0xaaaa, 1), rtp(0xbbbb, 1));
    assert_eq!(
        server.input(a.addr, &a.srtp(&pa)),
        vec![Output::Rtp {
            peer: 10,
            from: a.addr,
            data: pa
        }]
    );
    assert_eq!(
        server.input(b.addr, &b.srtp(&pb)),
        vec![Output::Rtp {
            peer: 20,
            from: b.addr,
            data: pb
        }]
    );
    // A's packet arriving from B's address is B's to check: it does not verify with B's keys.
    let dropped = server.t.stats().srtp_dropped;
    assert_eq!(server.input(b.addr, &a.srtp(&rtp(0xaaaa, 2))), vec![]);
    assert_eq!(server.t.stats().srtp_dropped, dropped + 1);
    // A check signed with A's password under B's username is refused.
    let (cross, _) = b.check_signed_with(&a.server.pwd.clone(), true);
    assert_eq!(server.input(b.addr, &cross), vec![]);

    // Room output goes to each one's address under each one's keys.
    let (to_a, wire_a) = server.t.protect_rtp(10, &rtp(ROOM_SSRC, 7)).unwrap();
    let (to_b, wire_b) = server.t.protect_rtp(20, &rtp(ROOM_SSRC, 7)).unwrap();
    assert_eq!((to_a, to_b), (a.addr, b.addr));
    assert_eq!(
        unprotect_rtp(&mut a.receiver(), &wire_a).unwrap(),
        rtp(ROOM_SSRC, 7)
    );
    assert_eq!(
        unprotect_rtp(&mut b.receiver(), &wire_b).unwrap(),
        rtp(ROOM_SSRC, 7)
    );
    assert_eq!(
        unprotect_rtp(&mut a.receiver(), &wire_b),
        Err(Error::AuthFailed)
    );

    // Consent checks go to their own participant.
    let (check, tid) = a.check(true);
    let outs = server.input(a.addr, &check);
    assert_eq!(transmits(&outs).len(), 1);
    a.assert_answer(&transmits(&outs)[0].1, tid);

    // A leaves: its username and address stop routing; B is untouched.
    server.t.remove(10);
    assert_eq!(server.t.len(), 1);
    assert!(server.t.peer(10).is_none());
    let before = server.t.stats().clone();
    let (check, _) = a.check(true);
    assert_eq!(server.input(a.addr, &check), vec![]);
    assert_eq!(server.input(a.addr, &a.srtp(&rtp(0xaaaa, 3))), vec![]);
    assert_eq!(server.t.protect_rtp(10, &rtp(ROOM_SSRC, 8)), None);
    assert_eq!(server.t.stats().stun_refused, before.stun_refused + 1);
    assert_eq!(server.t.stats().unknown_source, before.unknown_source + 1);
    let pb = rtp(0xbbbb, 2);
    assert_eq!(
        server.input(b.addr, &b.srtp(&pb)),
        vec![Output::Rtp {
            peer: 20,
            from: b.addr,
            data: pb
        }]
    );
    let (check, tid) = b.check(true);
    let outs = server.input(b.addr, &check);
    b.assert_answer(&transmits(&outs)[0].1, tid);
}

/// What a replica of the primary holds about one participant at takeover.
struct Replica {
    cfg: PeerConfig,
    keys: KeyingMaterial,
    selected: SocketAddr,
    /// Extended sequence number of the last packet the primary sent to the browser.
    last_ext_seq: u64,
    /// The last replicated next-SRTCP index.
    srtcp_index: u32,
}

/// A backup transport taking the participant `id` over from `replica`, with the outgoing
/// stream resumed at `(ext_seq, srtcp_index)` or, with `None`, not resumed at all.
fn take_over(
    cert: &Certificate,
    now: Instant,
    id: PeerId,
    r: &Replica,
    stream: Option<(u64, u32)>,
) -> Server {
    let mut s = Server::new(cert, now);
    s.t.resume(id, r.cfg.clone(), r.keys.clone(), Some(r.selected), now)
        .unwrap();
    if let Some((ext_seq, index)) = stream {
        s.t.resume_stream(id, ROOM_SSRC, ext_seq, index);
    }
    assert!(s.drain().is_empty());
    s
}

fn takeover_after_a_wrap(profile: RtcProfile) {
    let (cert, mut primary, mut browser, cfg) = setup(&[profile]);
    let id = 42;
    let keys = join(&mut primary, &mut browser, id, cfg.clone());
    let mut rx = browser.receiver();

    // The primary sends across the 16-bit wrap: 65500..=65535, then 0..=63 (ROC 1).
    // The mixer's extended sequence number; the wire carries its low 16 bits.
    let mut last_ext_seq = 0;
    for ext in 65500u64..65600 {
        let plain = rtp(ROOM_SSRC, ext as u16);
        let (to, wire) = primary.t.protect_rtp(id, &plain).unwrap();
        assert_eq!(to, browser.addr);
        assert_eq!(unprotect_rtp(&mut rx, &wire).unwrap(), plain);
        last_ext_seq = ext;
    }
    assert_eq!(last_ext_seq, 65536 + 63, "ROC 1");
    // Some SRTCP, the first index replicated, the later ones not.
    let mut replicated_srtcp = None;
    for n in 0..3 {
        let (_, wire) = primary.t.protect_rtcp(id, &rtcp_sr(ROOM_SSRC, n)).unwrap();
        unprotect_rtcp(&mut rx, &wire).unwrap();
        if n == 0 {
            replicated_srtcp = primary.t.peer(id).unwrap().srtcp_index(ROOM_SSRC);
        }
    }
    // The browser's media to the primary (the progress reports of our stream drained).
    primary.drain();
    let browser_ssrc = 0xb00b_0042;
    for s in 1000..1010 {
        assert_eq!(
            server_rtp(&mut primary, &mut browser, browser_ssrc, s).len(),
            1
        );
    }

    let replica = Replica {
        cfg,
        keys,
        selected: browser.addr,
        last_ext_seq,
        srtcp_index: replicated_srtcp.unwrap(),
    };
    assert_eq!(replica.srtcp_index, 1);
    let rx_at_takeover = rx.clone();
    primary.now += Duration::from_millis(20);
    let now = primary.now;

    // The backup continues the stream: same bytes as the primary, accepted by the browser.
    let resume_at = (replica.last_ext_seq, replica.srtcp_index + SRTCP_MARGIN);
    let mut backup = take_over(&cert, now, id, &replica, Some(resume_at));
    let next: Vec<Vec<u8>> = (64..84u16).map(|s| rtp(ROOM_SSRC, s)).collect();
    for plain in &next {
        let (to, wire) = backup.t.protect_rtp(id, plain).expect("resumed");
        assert_eq!(to, browser.addr);
        let (_, primary_wire) = primary.t.protect_rtp(id, plain).unwrap();
        assert_eq!(wire, primary_wire, "the backup's bytes are the primary's");
        assert_eq!(unprotect_rtp(&mut rx, &wire).unwrap(), *plain);
    }
    // SRTCP resumes past every index the primary may have used.
    let sr = rtcp_sr(ROOM_SSRC, 100);
    let (_, wire) = backup.t.protect_rtcp(id, &sr).unwrap();
    assert_eq!(unprotect_rtcp(&mut rx, &wire).unwrap(), sr);

    // The browser's next consent check: answered with the same credentials, no new pair.
    let (check, tid) = browser.check(true);
    let outs = backup.input(browser.addr, &check);
    assert_eq!(outs.len(), 1, "{outs:?}");
    let tx = transmits(&outs);
    assert_eq!(tx[0].0, browser.addr);
    browser.assert_answer(&tx[0].1, tid);
    // The browser's media continue into the backup (ROC 0 inbound: nothing replicated).
    for s in 1010..1020 {
        let outs = server_rtp(&mut backup, &mut browser, browser_ssrc, s);
        assert_eq!(
            outs,
            vec![Output::Rtp {
                peer: id,
                from: browser.addr,
                data: rtp(browser_ssrc, s)
            }]
        );
    }
    let sr = rtcp_sr(browser_ssrc, 20);
    assert_eq!(
        backup.input(browser.addr, &browser.srtcp(&sr)),
        vec![Output::Rtcp {
            peer: id,
            from: browser.addr,
            data: sr
        }]
    );
    assert_eq!(backup.t.stats().srtp_dropped, 0);

    // Negative controls, each from the browser's state at the takeover.
    let wrong_roc_low = Some((
        replica.last_ext_seq - 65536,
        replica.srtcp_index + SRTCP_MARGIN,
    ));
    let wrong_roc_high = Some((
        replica.last_ext_seq + 65536,
        replica.srtcp_index + SRTCP_MARGIN,
    ));
    for (what, stream) in [
        ("ROC 0 instead of 1", wrong_roc_low),
        ("ROC 2 instead of 1", wrong_roc_high),
        ("no resume_stream", None),
    ] {
        let mut b = take_over(&cert, now, id, &replica, stream);
        let mut rx = rx_at_takeover.clone();
        for plain in &next {
            let (_, wire) = b.t.protect_rtp(id, plain).unwrap();
            assert_eq!(
                unprotect_rtp(&mut rx, &wire),
                Err(Error::AuthFailed),
                "{what}"
            );
        }
    }
    // SRTCP without the margin reuses an index the primary sent: a replay to the browser.
    let mut b = take_over(&cert, now, id, &replica, Some((replica.last_ext_seq, 1)));
    let (_, wire) = b.t.protect_rtcp(id, &rtcp_sr(ROOM_SSRC, 100)).unwrap();
    assert_eq!(
        unprotect_rtcp(&mut rx_at_takeover.clone(), &wire),
        Err(Error::Replay)
    );
}

/// The browser sends RTP `seq` of `ssrc`; what `server` made of it.
fn server_rtp(server: &mut Server, browser: &mut Browser, ssrc: u32, seq: u16) -> Vec<Output> {
    let wire = browser.srtp(&rtp(ssrc, seq));
    server.input(browser.addr, &wire)
}

#[test]
fn a_backup_continues_after_a_sequence_wrap_gcm() {
    takeover_after_a_wrap(RtcProfile::Srtp_Aead_Aes_128_Gcm);
}

#[test]
fn a_backup_continues_after_a_sequence_wrap_aes_cm() {
    takeover_after_a_wrap(RtcProfile::Srtp_Aes128_Cm_Hmac_Sha1_80);
}

#[test]
fn resuming_a_participant_the_transport_already_has_keeps_its_address_routed() {
    // A backup may hold a participant already (an earlier takeover, a re-sent replica): the
    // resumed one must still receive from the selected address.
    let (cert, mut primary, mut browser, cfg) = setup(&BOTH);
    let keys = join(&mut primary, &mut browser, 5, cfg.clone());
    let mut backup = Server::new(&cert, primary.now);
    for _ in 0..2 {
        backup
            .t
            .resume(5, cfg.clone(), keys.clone(), Some(browser.addr), backup.now)
            .unwrap();
    }
    assert_eq!(backup.t.len(), 1);
    let plain = rtp(0xb00b_0005, 1);
    assert_eq!(
        backup.input(browser.addr, &browser.srtp(&plain)),
        vec![Output::Rtp {
            peer: 5,
            from: browser.addr,
            data: plain
        }]
    );
}

#[test]
fn consent_expires_once_after_thirty_silent_seconds() {
    let (cert, mut server, mut a, cfg_a) = setup(&BOTH);
    let (mut b, cfg_b) = Browser::new(2, addr("198.51.100.8:50999"), &cert, &BOTH, server.now);
    join(&mut server, &mut a, 1, cfg_a);
    join(&mut server, &mut b, 2, cfg_b);
    let start = server.now;

    // Both browsers check every 2.5 s for 20 s; then A goes silent, B keeps checking.
    let mut last_a = start;
    let mut expired = Vec::new();
    let step = Duration::from_millis(2500);
    let mut t = start;
    while t < start + Duration::from_secs(120) {
        t += step;
        expired.extend(server.run_until(t));
        if t <= start + Duration::from_secs(20) {
            let (check, _) = a.check(true);
            assert_eq!(transmits(&server.input(a.addr, &check)).len(), 1);
            last_a = t;
        }
        let (check, _) = b.check(true);
        assert_eq!(transmits(&server.input(b.addr, &check)).len(), 1);
        let a_alive = t < last_a + CONSENT_TIMEOUT;
        assert_eq!(
            server.t.protect_rtp(1, &rtp(ROOM_SSRC, 1)).is_some(),
            a_alive,
            "at {:?}",
            t - start
        );
        assert!(server.t.protect_rtp(2, &rtp(ROOM_SSRC, 1)).is_some());
    }
    assert_eq!(last_a, start + Duration::from_secs(20));
    let expiries: Vec<_> = events(&expired);
    assert_eq!(expiries, vec![(1, PeerEvent::ConsentExpired)]);
    assert!(transmits(&expired).is_empty());

    // Exactly at the deadline, not a millisecond before.
    let (_cert, mut server, mut a, cfg) = setup(&BOTH);
    join(&mut server, &mut a, 1, cfg);
    let deadline = server.now + CONSENT_TIMEOUT;
    assert!(events(&server.run_until(deadline - Duration::from_millis(1))).is_empty());
    assert!(server.t.protect_rtp(1, &rtp(ROOM_SSRC, 1)).is_some());
    assert_eq!(
        events(&server.run_until(deadline)),
        vec![(1, PeerEvent::ConsentExpired)]
    );
    assert_eq!(server.t.protect_rtp(1, &rtp(ROOM_SSRC, 2)), None);
    assert_eq!(server.t.protect_rtcp(1, &rtcp_sr(ROOM_SSRC, 2)), None);
    assert!(events(&server.run_until(deadline + Duration::from_secs(600))).is_empty());
}

/// A stream whose room keeps only 16-bit sequence numbers (video): the transport reports its
/// progress (first packet, then every `PROGRESS_STEP` packets); a backup resumed from the
/// last report continues it after the wrap with the primary's bytes.
#[test]
fn video_stream_resumes_from_its_last_progress_report() {
    use webrtc_core::peer::PROGRESS_STEP;
    let (cert, mut primary, mut browser, cfg) = setup(&[RtcProfile::Srtp_Aes128_Cm_Hmac_Sha1_80]);
    let id = 7;
    let keys = join(&mut primary, &mut browser, id, cfg.clone());
    let mut rx = browser.receiver();
    let video_ssrc = 0x71de_0007;
    let mut reports = vec![];
    let end = 65536 + 10_000u64;
    for ext in 0..end {
        let plain = rtp(video_ssrc, ext as u16);
        let (_, wire) = primary.t.protect_rtp(id, &plain).unwrap();
        if ext % 997 == 0 || ext + 1 == end {
            assert_eq!(unprotect_rtp(&mut rx, &wire).unwrap(), plain);
        }
        for (peer, e) in all_events(&primary.drain()) {
            assert_eq!(peer, id);
            match e {
                PeerEvent::OutboundProgress { ssrc, ext_seq } => {
                    assert_eq!(ssrc, video_ssrc);
                    reports.push(ext_seq);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(
        reports,
        [
            0,
            PROGRESS_STEP,
            2 * PROGRESS_STEP,
            3 * PROGRESS_STEP,
            4 * PROGRESS_STEP
        ]
    );
    // The backup holds the last report (ROC 1, 10000 packets behind the primary).
    let replica = Replica {
        cfg,
        keys,
        selected: browser.addr,
        last_ext_seq: *reports.last().unwrap(),
        srtcp_index: 0,
    };
    primary.now += Duration::from_millis(20);
    let mut backup = take_over(&cert, primary.now, id, &replica, None);
    backup
        .t
        .resume_stream(id, video_ssrc, replica.last_ext_seq, SRTCP_MARGIN);
    for ext in end..end + 20 {
        let plain = rtp(video_ssrc, ext as u16);
        let (_, wire) = backup.t.protect_rtp(id, &plain).expect("resumed");
        let (_, primary_wire) = primary.t.protect_rtp(id, &plain).unwrap();
        assert_eq!(wire, primary_wire, "the backup's bytes are the primary's");
        assert_eq!(unprotect_rtp(&mut rx, &wire).unwrap(), plain);
    }
    // Without the report (ROC 0 assumed) the browser cannot authenticate the stream.
    let mut blind = take_over(&cert, primary.now, id, &replica, None);
    let plain = rtp(video_ssrc, (end + 20) as u16);
    let (_, wire) = blind.t.protect_rtp(id, &plain).unwrap();
    assert!(unprotect_rtp(&mut rx, &wire).is_err());
}
