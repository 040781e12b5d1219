//! DTLS server CPU per handshake: the time spent inside one `DtlsServer` (new, every
//! `handle_datagram`, the release) for a complete handshake with an rtc-dtls client
//! (ECDHE-ECDSA P-256, AES-128-GCM, client certificate). The client's own work is excluded.
//!
//! `nice -n 19 cargo bench -p webrtc-core --bench dtls`
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use rtc_dtls::config::{ConfigBuilder, ExtendedMasterSecretType};
use rtc_dtls::crypto::Certificate as RtcCertificate;
use rtc_dtls::crypto_provider::providers::RingProvider;
use rtc_dtls::crypto_provider::{HashAlgorithm, RTCCryptoProvider};
use rtc_dtls::endpoint::{Endpoint, EndpointEvent};
use rtc_dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc_shared::TransportProtocol;
use webrtc_core::dtls::{Certificate, DtlsEvent, DtlsServer};

const CLIENT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5000);
const SERVER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 6000);

fn fingerprint(provider: &dyn RTCCryptoProvider, der: &[u8]) -> String {
    let digest = provider.crypto().hash(HashAlgorithm::Sha256, der).unwrap();
    let hex: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

/// One handshake; returns the time spent in the server.
fn handshake(server_cert: &Certificate, client_cert: &RtcCertificate, client_fp: &str) -> Duration {
    let provider: Arc<dyn RTCCryptoProvider> = Arc::new(RingProvider::new());
    let config = ConfigBuilder::default()
        .with_crypto_provider(provider)
        .with_certificates(vec![client_cert.clone()])
        .with_srtp_protection_profiles(vec![
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
        ])
        .with_extended_master_secret(ExtendedMasterSecretType::Require)
        .with_insecure_skip_verify(true)
        .build(true, None)
        .unwrap();
    let now = Instant::now();
    let mut client = Endpoint::new(CLIENT, TransportProtocol::UDP, None);
    client.connect(now, SERVER, Arc::new(config), None).unwrap();

    let mut spent = Duration::ZERO;
    let t = Instant::now();
    let mut server = DtlsServer::new(server_cert, client_fp, now).unwrap();
    spent += t.elapsed();
    let mut done = false;
    for _ in 0..10 {
        let up: Vec<_> = std::iter::from_fn(|| client.poll_transmit()).collect();
        let t = Instant::now();
        let mut down = Vec::new();
        for d in up {
            server.handle_datagram(&d.message, now).unwrap();
        }
        while let Some(event) = server.poll_event() {
            if let DtlsEvent::Keyed(km) = event {
                black_box(km);
                server.release_final_flight();
            }
        }
        while let Some(d) = server.poll_transmit() {
            down.push(d);
        }
        spent += t.elapsed();
        for d in down {
            for e in client.read(now, SERVER, None, d.as_slice().into()).unwrap() {
                done |= matches!(e, EndpointEvent::HandshakeComplete);
            }
        }
        if done {
            break;
        }
    }
    assert!(done && server.is_connected());
    spent
}

fn dtls(c: &mut Criterion) {
    let provider = RingProvider::new();
    let server_cert = Certificate::generate().unwrap();
    let client_cert =
        RtcCertificate::generate_self_signed(vec!["bench".to_owned()], provider.crypto()).unwrap();
    let client_fp = fingerprint(&provider, client_cert.certificate[0].as_ref());
    let mut g = c.benchmark_group("dtls");
    g.sample_size(30);
    g.bench_function("server_handshake", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| handshake(&server_cert, &client_cert, &client_fp))
                .sum()
        })
    });
    g.finish();
}

criterion_group!(benches, dtls);
criterion_main!(benches);
