//! The DTLS server as a browser sees it, in memory and virtual time: an rtc-dtls client (its
//! own certificate, pinning ours the way a browser pins the answer's fingerprint) handshakes
//! with a `DtlsServer` through datagrams shuttled by hand. Keys agree and key working SRTP in
//! both directions; the final flight is held until released (the client cannot finish
//! before), and is retransmitted after a loss; a wrong fingerprint, a profile mismatch and a
//! silent client fail; garbage never panics and truncated datagrams never hurt the handshake;
//! certificates round-trip through PEM.
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
use webrtc_core::dtls::{
    Certificate, DtlsError, DtlsEvent, DtlsServer, KeyingMaterial, HANDSHAKE_TIMEOUT, MTU,
    SRTP_EXPORTER_LABEL,
};
use webrtc_core::srtp::{split_keying_material, DtlsRole, Profile, SrtpReceiver, SrtpSender};

const CLIENT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5000);
const SERVER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 6000);
const CONTENT_CHANGE_CIPHER_SPEC: u8 = 20;
const CONTENT_ALERT: u8 = 21;
const CONTENT_HANDSHAKE: u8 = 22;
const CONTENT_APPLICATION_DATA: u8 = 23;
const ALL_PROFILES: [RtcProfile; 2] = [
    RtcProfile::Srtp_Aead_Aes_128_Gcm,
    RtcProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
];

fn ring() -> Arc<dyn RTCCryptoProvider> {
    Arc::new(RingProvider::new())
}

fn sdp_fingerprint(der: &[u8]) -> String {
    let digest = ring().crypto().hash(HashAlgorithm::Sha256, der).unwrap();
    let hex: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

/// The browser's identity: an rtc-dtls certificate and its fingerprint as the offer signals it.
fn client_identity() -> (RtcCertificate, String) {
    let cert =
        RtcCertificate::generate_self_signed(vec!["browser".to_owned()], ring().crypto()).unwrap();
    let fingerprint = sdp_fingerprint(cert.certificate[0].as_ref());
    (cert, fingerprint)
}

/// A browser-like client config: its own certificate, `use_srtp` with `profiles`, extended
/// master secret, and the server's certificate accepted only if it hashes to
/// `server_fingerprint` (no CA chain, as in WebRTC).
fn client_config(
    cert: RtcCertificate,
    profiles: &[RtcProfile],
    server_fingerprint: String,
) -> Arc<HandshakeConfig> {
    let config = ConfigBuilder::default()
        .with_crypto_provider(ring())
        .with_certificates(vec![cert])
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
    Arc::new(config)
}

/// One browser and one `DtlsServer`, and the wire between them (delivered by hand).
struct Call {
    now: Instant,
    server: DtlsServer,
    client: Endpoint,
    client_connected: bool,
    client_errors: Vec<String>,
    server_events: Vec<DtlsEvent>,
}

impl Call {
    fn new() -> Call {
        Call::with(&Certificate::generate().unwrap(), &ALL_PROFILES, None)
    }

    /// A call whose server uses `server_cert`; the client offers `profiles` and the server is
    /// told the client's fingerprint, or `wrong_fingerprint` instead.
    fn with(
        server_cert: &Certificate,
        profiles: &[RtcProfile],
        wrong_fingerprint: Option<String>,
    ) -> Call {
        let now = Instant::now();
        let (client_cert, client_fingerprint) = client_identity();
        let offered = wrong_fingerprint.unwrap_or(client_fingerprint);
        let server = DtlsServer::new(server_cert, &offered, now).unwrap();
        let mut client = Endpoint::new(CLIENT, TransportProtocol::UDP, None);
        let config = client_config(client_cert, profiles, server_cert.fingerprint_sha256());
        client.connect(now, SERVER, config, None).unwrap();
        Call {
            now,
            server,
            client,
            client_connected: false,
            client_errors: Vec::new(),
            server_events: Vec::new(),
        }
    }

    /// Everything the client has queued for the server.
    fn client_output(&mut self) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| self.client.poll_transmit().map(|t| t.message.to_vec())).collect()
    }

    /// Everything the server lets out now (each datagram within the MTU).
    fn server_output(&mut self) -> Vec<Vec<u8>> {
        let out: Vec<Vec<u8>> = std::iter::from_fn(|| self.server.poll_transmit()).collect();
        for d in &out {
            assert!(!d.is_empty() && d.len() <= MTU, "{} bytes", d.len());
        }
        out
    }

    fn deliver_to_server(&mut self, datagrams: &[Vec<u8>]) {
        for d in datagrams {
            let _ = self.server.handle_datagram(d, self.now);
        }
        self.server_events
            .extend(std::iter::from_fn(|| self.server.poll_event()));
    }

    fn deliver_to_client(&mut self, datagrams: &[Vec<u8>]) {
        for d in datagrams {
            match self
                .client
                .read(self.now, SERVER, None, d.as_slice().into())
            {
                Ok(events) => {
                    for e in events {
                        if let EndpointEvent::HandshakeComplete = e {
                            self.client_connected = true;
                        }
                    }
                }
                Err(e) => self.client_errors.push(e.to_string()),
            }
        }
    }

    /// Shuttles datagrams both ways until neither side has anything to send; returns how
    /// many datagrams moved.
    fn settle(&mut self) -> usize {
        let mut moved = 0;
        for _ in 0..20 {
            let up = self.client_output();
            self.deliver_to_server(&up);
            let down = self.server_output();
            self.deliver_to_client(&down);
            if up.is_empty() && down.is_empty() {
                break;
            }
            moved += up.len() + down.len();
        }
        moved
    }

    fn keyed(&self) -> Option<&KeyingMaterial> {
        self.server_events.iter().find_map(|e| match e {
            DtlsEvent::Keyed(km) => Some(km),
            _ => None,
        })
    }

    fn failed(&self) -> Option<&str> {
        self.server_events.iter().find_map(|e| match e {
            DtlsEvent::Failed(why) => Some(why.as_str()),
            _ => None,
        })
    }

    fn client_export(&self, profile: Profile) -> Vec<u8> {
        self.client
            .get_connection_state(SERVER)
            .unwrap()
            // RFC 5764 §4.2, spelled out here rather than taken from the code under test.
            .export_keying_material("EXTRACTOR-dtls_srtp", &[], profile.keying_material_len())
            .unwrap()
            .as_ref()
            .to_vec()
    }

    /// Fires the client's retransmission timer: it repeats its last flight.
    fn client_retransmits(&mut self) -> Vec<Vec<u8>> {
        let at = self
            .client
            .poll_timeout(&SERVER)
            .expect("the client waits for our flight");
        self.now = self.now.max(at);
        self.client.handle_timeout(SERVER, self.now).unwrap();
        self.client_output()
    }

    /// A full handshake with the final flight released as soon as the keys are out.
    fn connected() -> Call {
        let mut call = Call::new();
        call.settle();
        assert!(call.keyed().is_some());
        call.server.release_final_flight();
        call.settle();
        assert!(call.client_connected);
        call
    }
}

/// Content types of the records in a datagram (walking the 13-byte record headers).
fn record_types(datagram: &[u8]) -> Vec<(u8, u16)> {
    let mut out = Vec::new();
    let mut rest = datagram;
    while rest.len() >= 13 {
        let epoch = u16::from_be_bytes([rest[3], rest[4]]);
        let len = usize::from(u16::from_be_bytes([rest[11], rest[12]]));
        out.push((rest[0], epoch));
        rest = rest.get(13 + len..).unwrap_or(&[]);
    }
    out
}

fn is_final_flight(datagram: &[u8]) -> bool {
    record_types(datagram)
        .iter()
        .any(|&(t, _)| t == CONTENT_CHANGE_CIPHER_SPEC)
}

#[test]
fn keys_agree_with_the_client_and_key_srtp_both_ways() {
    let mut call = Call::new();
    call.settle();
    let km = call.keyed().expect("Keyed").clone();
    assert_eq!(call.failed(), None);
    assert!(call.server.is_connected());
    call.server.release_final_flight();
    call.settle();
    assert!(call.client_connected, "{:?}", call.client_errors);
    assert_eq!(km.profile, Profile::AeadAes128Gcm);
    assert_eq!(km.material.len(), km.profile.keying_material_len());
    assert_eq!(km.material, call.client_export(km.profile));
    assert_eq!(
        call.server_events
            .iter()
            .filter(|e| matches!(e, DtlsEvent::Keyed(_)))
            .count(),
        1
    );

    let (server_tx, server_rx) =
        split_keying_material(km.profile, &km.material, DtlsRole::Server).unwrap();
    let client_km = call.client_export(km.profile);
    let (client_tx, client_rx) =
        split_keying_material(km.profile, &client_km, DtlsRole::Client).unwrap();
    let mut rtp = vec![0x80, 111, 0x00, 0x01, 0, 0, 0, 160, 0xca, 0xfe, 0xba, 0xbe];
    rtp.extend_from_slice(&[0x55; 160]);
    for (tx, rx) in [(server_tx, client_rx), (client_tx, server_rx)] {
        let (mut wire, mut back) = (Vec::new(), Vec::new());
        SrtpSender::new(tx)
            .unwrap()
            .protect_rtp(&rtp, &mut wire)
            .unwrap();
        SrtpReceiver::new(rx)
            .unwrap()
            .unprotect_rtp(&wire, &mut back)
            .unwrap();
        assert_eq!(back, rtp);
    }
}

#[test]
fn the_final_flight_is_held_until_released_and_the_client_waits_for_it() {
    let mut call = Call::new();
    // Step by step: every datagram the server produced before Keyed went out, and the call
    // that emitted Keyed let nothing out.
    let mut sent_before_keyed = Vec::new();
    for _ in 0..10 {
        let up = call.client_output();
        call.deliver_to_server(&up);
        let down = call.server_output();
        if call.keyed().is_some() {
            assert!(down.is_empty(), "a datagram left with the keys: {down:?}");
            break;
        }
        sent_before_keyed.extend(down.clone());
        call.deliver_to_client(&down);
    }
    assert!(call.keyed().is_some());
    assert!(!sent_before_keyed.iter().any(|d| is_final_flight(d)));

    // Held: nothing comes out, however long we wait and whatever the client repeats; the
    // client does not complete.
    assert_eq!(call.settle(), 0);
    assert!(!call.client_connected);
    assert_eq!(call.server.poll_timeout(), None);
    for _ in 0..2 {
        let repeat = call.client_retransmits();
        assert!(!repeat.is_empty());
        call.deliver_to_server(&repeat);
        assert!(call.server_output().is_empty());
        call.deliver_to_client(&[]);
        assert!(!call.client_connected);
    }

    // Released: flight 6 (ChangeCipherSpec + encrypted Finished) goes out, the client is done.
    call.server.release_final_flight();
    let released = call.server_output();
    assert_eq!(
        released.iter().filter(|d| is_final_flight(d)).count(),
        1,
        "the client's repeats were answered by the held flight, once: {released:?}"
    );
    call.deliver_to_client(&released);
    assert!(call.client_connected, "{:?}", call.client_errors);
    assert_eq!(call.settle(), 0);
    assert!(call.server.is_connected());
}

#[test]
fn a_lost_final_flight_is_sent_again_when_the_client_repeats_its_own() {
    let mut call = Call::new();
    call.settle();
    assert!(call.keyed().is_some());
    call.server.release_final_flight();
    let lost = call.server_output();
    assert!(lost.iter().any(|d| is_final_flight(d)));

    let repeat = call.client_retransmits();
    call.deliver_to_server(&repeat);
    let again = call.server_output();
    assert!(again.iter().any(|d| is_final_flight(d)), "{again:?}");
    assert_ne!(
        again, lost,
        "a retransmission carries fresh record sequence numbers"
    );
    call.deliver_to_client(&again);
    assert!(call.client_connected, "{:?}", call.client_errors);
}

#[test]
fn a_client_certificate_that_is_not_the_offered_one_fails_the_handshake() {
    let (_, someone_else) = client_identity();
    let mut call = Call::with(
        &Certificate::generate().unwrap(),
        &ALL_PROFILES,
        Some(someone_else),
    );
    call.settle();
    call.server.release_final_flight(); // must not help
    call.settle();
    assert!(call.keyed().is_none());
    let why = call.failed().expect("Failed");
    assert!(why.contains("fingerprint"), "{why}");
    assert!(!call.client_connected);
    assert!(
        !call.client_errors.is_empty(),
        "the client was told (fatal alert)"
    );
    assert!(!call.server.is_connected());
    assert_eq!(call.server.poll_timeout(), None);
    assert_eq!(
        call.server.handle_datagram(&[22; 40], call.now),
        Err(DtlsError::Ended)
    );
}

#[test]
fn the_profile_is_the_clients_first_choice_among_ours() {
    for (offer, expected) in [
        (&ALL_PROFILES[..], Profile::AeadAes128Gcm),
        (
            &[RtcProfile::Srtp_Aes128_Cm_Hmac_Sha1_80][..],
            Profile::Aes128CmHmacSha1_80,
        ),
        (
            &[
                RtcProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
                RtcProfile::Srtp_Aead_Aes_128_Gcm,
            ][..],
            Profile::Aes128CmHmacSha1_80,
        ),
        (
            &[
                RtcProfile::Srtp_Aead_Aes_256_Gcm,
                RtcProfile::Srtp_Aead_Aes_128_Gcm,
            ][..],
            Profile::AeadAes128Gcm,
        ),
    ] {
        let mut call = Call::with(&Certificate::generate().unwrap(), offer, None);
        call.settle();
        let km = call.keyed().expect("Keyed").clone();
        assert_eq!(km.profile, expected, "offer {offer:?}");
        assert_eq!(km.material, call.client_export(expected));
    }
    let mut call = Call::with(
        &Certificate::generate().unwrap(),
        &[RtcProfile::Srtp_Aead_Aes_256_Gcm],
        None,
    );
    call.settle();
    assert!(call.keyed().is_none());
    assert!(call.failed().is_some());
}

/// xorshift64: reproducible garbage.
fn garbage(seed: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed as u8
        })
        .collect()
}

#[test]
fn garbage_never_panics() {
    let cert = Certificate::generate().unwrap();
    let fp = cert.fingerprint_sha256();
    let now = Instant::now();
    let mut seed = 0x9e37_79b9_7f4a_7c15;
    for round in 0..300 {
        let mut server = DtlsServer::new(&cert, &fp, now).unwrap();
        for i in 0..4 {
            let mut d = garbage(&mut seed, (round * 7 + i * 13) % 300);
            // Half of them with a plausible record header (content type, DTLS 1.2, length).
            if round % 2 == 0 && d.len() >= 13 {
                d[0] = [20, 21, 22, 23][i % 4];
                d[1..3].copy_from_slice(&[0xfe, 0xfd]);
                d[3..5].copy_from_slice(&[0, (round % 3) as u8]);
                let body = (d.len() - 13) as u16;
                d[11..13].copy_from_slice(&body.to_be_bytes());
            }
            let _ = server.handle_datagram(&d, now);
            server.handle_timeout(now + Duration::from_secs(i as u64));
            while server.poll_event().is_some() {}
            while let Some(out) = server.poll_transmit() {
                assert!(out.len() <= MTU);
            }
        }
    }
}

#[test]
fn truncated_datagrams_are_discarded_and_the_handshake_goes_on() {
    let mut call = Call::new();
    for _ in 0..10 {
        let up = call.client_output();
        for d in &up {
            for cut in 0..d.len() {
                let cut_at_record_boundary = {
                    let mut at = 0;
                    while at < cut && at + 13 <= d.len() {
                        at += 13 + usize::from(u16::from_be_bytes([d[at + 11], d[at + 12]]));
                    }
                    at == cut
                };
                match call.server.handle_datagram(&d[..cut], call.now) {
                    Err(DtlsError::Malformed) => {}
                    Ok(()) if cut_at_record_boundary => {}
                    other => panic!("cut at {cut} of {}: {other:?}", d.len()),
                }
            }
        }
        call.deliver_to_server(&up);
        let down = call.server_output();
        call.deliver_to_client(&down);
        if call.keyed().is_some() {
            break;
        }
    }
    assert!(call.keyed().is_some(), "{:?}", call.server_events);
    call.server.release_final_flight();
    call.settle();
    assert!(call.client_connected);
}

#[test]
fn plaintext_records_cannot_close_or_break_an_established_association() {
    let mut call = Call::connected();
    for (content, body) in [
        (CONTENT_ALERT, &[1u8, 0][..]), // close_notify
        (CONTENT_ALERT, &[2, 40][..]),  // fatal handshake_failure
        (CONTENT_APPLICATION_DATA, b"forged"),
        (CONTENT_CHANGE_CIPHER_SPEC, &[1]),
        (CONTENT_HANDSHAKE, &[0; 12]),
    ] {
        let mut record = vec![content, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0x10, 0];
        record.extend_from_slice(&(body.len() as u16).to_be_bytes());
        record.extend_from_slice(body);
        let _ = call.server.handle_datagram(&record, call.now);
        while call.server.poll_transmit().is_some() {}
    }
    call.deliver_to_server(&[]);
    assert!(call.server.is_connected(), "{:?}", call.server_events);
    assert!(!call
        .server_events
        .iter()
        .any(|e| matches!(e, DtlsEvent::Closed | DtlsEvent::Failed(_))));
}

#[test]
fn a_close_notify_from_the_browser_closes() {
    let mut call = Call::connected();
    call.client.close(call.now).unwrap();
    let close = call.client_output();
    assert!(!close.is_empty());
    call.deliver_to_server(&close);
    assert_eq!(call.server_events.last(), Some(&DtlsEvent::Closed));
    assert!(!call.server.is_connected());
    assert_eq!(call.server.poll_timeout(), None);
    assert_eq!(
        call.server.handle_datagram(&close[0], call.now),
        Err(DtlsError::Ended)
    );
}

#[test]
fn a_silent_client_fails_the_handshake() {
    // Nobody ever says hello: the handshake deadline.
    let cert = Certificate::generate().unwrap();
    let now = Instant::now();
    let mut server = DtlsServer::new(&cert, &cert.fingerprint_sha256(), now).unwrap();
    assert_eq!(server.poll_timeout(), Some(now + HANDSHAKE_TIMEOUT));
    server.handle_timeout(now + HANDSHAKE_TIMEOUT - Duration::from_millis(1));
    assert_eq!(server.poll_event(), None);
    server.handle_timeout(now + HANDSHAKE_TIMEOUT);
    assert!(matches!(server.poll_event(), Some(DtlsEvent::Failed(_))));
    assert_eq!(server.poll_timeout(), None);

    // The client stops after our flight 4: it is retransmitted, then the handshake fails.
    let mut call = Call::new();
    let hello = call.client_output();
    call.deliver_to_server(&hello);
    let verify = call.server_output();
    call.deliver_to_client(&verify);
    let hello2 = call.client_output();
    call.deliver_to_server(&hello2);
    let flight4 = call.server_output();
    assert!(!flight4.is_empty());
    let mut retransmissions = 0;
    while let Some(at) = call.server.poll_timeout() {
        assert!(at <= call.now + HANDSHAKE_TIMEOUT);
        call.now = at;
        call.server.handle_timeout(at);
        let again = call.server_output();
        if !again.is_empty() {
            retransmissions += 1;
            assert_eq!(again.len(), flight4.len());
        }
        call.deliver_to_server(&[]);
        assert!(retransmissions < 50);
    }
    assert!(retransmissions >= 3, "{retransmissions}");
    assert!(call.failed().is_some());
    assert!(call.keyed().is_none());
}

#[test]
fn certificates_round_trip_through_pem_and_a_reloaded_one_is_accepted_by_the_browser() {
    let cert = Certificate::generate().unwrap();
    let fp = cert.fingerprint_sha256();
    assert_eq!(fp.len(), 32 * 3 - 1);
    assert!(fp.split(':').all(|b| b.len() == 2
        && b.bytes()
            .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c))));
    let pem = cert.to_pem();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
    assert!(pem.contains("-----BEGIN CERTIFICATE-----"));
    let back = Certificate::from_pem(&pem).unwrap();
    assert_eq!(back.fingerprint_sha256(), fp);
    assert_eq!(back.to_pem(), pem);
    assert_ne!(Certificate::generate().unwrap().fingerprint_sha256(), fp);

    // The backup loads the same PEM: a browser that pinned the primary's fingerprint
    // completes its handshake with it.
    let mut call = Call::with(&back, &ALL_PROFILES, None);
    call.settle();
    call.server.release_final_flight();
    call.settle();
    assert!(call.client_connected, "{:?}", call.client_errors);

    for bad in [
        "",
        "not pem",
        &pem.replace("CERTIFICATE", "X"),
        &pem[..pem.len() / 2],
    ] {
        assert!(
            matches!(Certificate::from_pem(bad), Err(DtlsError::Certificate(_))),
            "{bad}"
        );
    }
    assert!(!format!("{cert:?}").contains("PRIVATE"));
}

#[test]
fn keying_material_debug_hides_the_keys() {
    let km = KeyingMaterial {
        profile: Profile::AeadAes128Gcm,
        material: vec![0xab; 56],
    };
    assert!(!format!("{km:?}").contains("171"));
}

/// What the hold relies on, checked on rtc-dtls itself: a server's keying material becomes
/// exportable in the very `read` that queues its final flight (ChangeCipherSpec + epoch-1
/// Finished), never earlier, and that flight is still queued (not sent) at that point.
#[test]
fn export_becomes_possible_exactly_when_flight_6_is_queued() {
    let cert = RtcCertificate::generate_self_signed(vec!["s".to_owned()], ring().crypto()).unwrap();
    let server_fp = sdp_fingerprint(cert.certificate[0].as_ref());
    let server_config = ConfigBuilder::default()
        .with_crypto_provider(ring())
        .with_certificates(vec![cert])
        .with_srtp_protection_profiles(ALL_PROFILES.to_vec())
        .with_extended_master_secret(ExtendedMasterSecretType::Require)
        .with_client_auth(rtc_dtls::config::ClientAuthType::RequireAnyClientCert)
        .build(false, None)
        .unwrap();
    let mut server = Endpoint::new(
        SERVER,
        TransportProtocol::UDP,
        Some(Arc::new(server_config)),
    );
    let (client_cert, _) = client_identity();
    let mut client = Endpoint::new(CLIENT, TransportProtocol::UDP, None);
    let now = Instant::now();
    client
        .connect(
            now,
            SERVER,
            client_config(client_cert, &ALL_PROFILES, server_fp),
            None,
        )
        .unwrap();
    let exportable = |server: &Endpoint| {
        server.get_connection_state(CLIENT).is_some_and(|s| {
            s.export_keying_material(SRTP_EXPORTER_LABEL, &[], 56)
                .is_ok()
        })
    };

    let mut reads_before_export = 0;
    'handshake: for _ in 0..10 {
        let up: Vec<_> = std::iter::from_fn(|| client.poll_transmit()).collect();
        for t in up {
            assert!(!exportable(&server));
            server.read(now, CLIENT, None, t.message).unwrap();
            let queued: Vec<_> = std::iter::from_fn(|| server.poll_transmit()).collect();
            let final_flight = queued.iter().any(|t| {
                let types = record_types(&t.message);
                types.contains(&(CONTENT_CHANGE_CIPHER_SPEC, 0))
                    && types.iter().any(|&(_, epoch)| epoch == 1)
            });
            assert_eq!(
                exportable(&server),
                final_flight,
                "after read {reads_before_export}"
            );
            if final_flight {
                break 'handshake;
            }
            reads_before_export += 1;
            for t in queued {
                client.read(now, SERVER, None, t.message).unwrap();
            }
        }
    }
    assert!(exportable(&server));
    assert!(
        reads_before_export >= 2,
        "ClientHello twice (cookie), then flight 5"
    );
}

/// Writes the seeds of the `dtls_server` fuzz target (`fuzz/seeds/dtls_server/`): the
/// datagrams a client sends in a real handshake, as `[len u16 BE][datagram]` records. Run:
/// `cargo test -p webrtc-core --test dtls -- --ignored write_fuzz_seeds`.
#[test]
#[ignore = "writes files; run by hand to regenerate the fuzz seeds"]
fn write_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/dtls_server");
    std::fs::create_dir_all(&dir).unwrap();
    let record = |datagrams: &[Vec<u8>]| {
        let mut out = Vec::new();
        for d in datagrams {
            out.extend_from_slice(&(d.len() as u16).to_be_bytes());
            out.extend_from_slice(d);
        }
        out
    };
    let mut call = Call::new();
    let mut flights = Vec::new();
    for _ in 0..10 {
        let up = call.client_output();
        flights.extend(up.clone());
        call.deliver_to_server(&up);
        let down = call.server_output();
        call.deliver_to_client(&down);
        if call.keyed().is_some() {
            break;
        }
    }
    assert!(flights.len() >= 3);
    std::fs::write(dir.join("client_hello.bin"), record(&flights[..1])).unwrap();
    std::fs::write(dir.join("client_flights.bin"), record(&flights)).unwrap();
}
