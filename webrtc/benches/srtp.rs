//! SRTP cost per packet: protect, and protect + unprotect, of a 20 ms Opus packet (12-byte
//! RTP header, RFC 6464 audio-level extension, 160-byte payload) for both profiles; rtc-srtp
//! (ring) protecting the same packet, for scale.
//!
//! `nice -n 19 cargo bench -p webrtc-core --bench srtp`
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rtc_srtp::context::Context as RtcContext;
use rtc_srtp::protection_profile::ProtectionProfile as RtcProfile;
use std::hint::black_box;
use webrtc_core::srtp::{Profile, SrtpKeys, SrtpReceiver, SrtpSender};

const SSRC: u32 = 0x1234_5678;

fn opus_packet(seq: u16) -> Vec<u8> {
    let mut p = vec![0x90, 111];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
    p.extend_from_slice(&SSRC.to_be_bytes());
    p.extend_from_slice(&[0xbe, 0xde, 0x00, 0x01, 0x10, 0xaa, 0, 0]);
    p.extend((0..160u32).map(|i| i as u8));
    p
}

fn srtp(c: &mut Criterion) {
    let mut g = c.benchmark_group("srtp_opus_160");
    g.throughput(Throughput::Elements(1));
    for (name, profile, rtc_profile) in [
        (
            "aes_cm_hmac_sha1_80",
            Profile::Aes128CmHmacSha1_80,
            RtcProfile::Aes128CmHmacSha1_80,
        ),
        (
            "aead_aes_128_gcm",
            Profile::AeadAes128Gcm,
            RtcProfile::AeadAes128Gcm,
        ),
    ] {
        let keys = SrtpKeys::new(profile, &[7; 16], &vec![9; profile.salt_len()]).unwrap();
        let mut packet = opus_packet(0);
        let mut wire = Vec::with_capacity(256);
        let mut back = Vec::with_capacity(256);

        let mut tx = SrtpSender::new(keys.clone()).unwrap();
        let mut seq = 0u16;
        g.bench_function(format!("{name}/protect"), |b| {
            b.iter(|| {
                seq = seq.wrapping_add(1);
                packet[2..4].copy_from_slice(&seq.to_be_bytes());
                tx.protect_rtp(black_box(&packet), &mut wire).unwrap();
                black_box(&wire);
            })
        });

        let mut tx = SrtpSender::new(keys.clone()).unwrap();
        let mut rx = SrtpReceiver::new(keys.clone()).unwrap();
        let mut seq = 0u16;
        g.bench_function(format!("{name}/protect+unprotect"), |b| {
            b.iter(|| {
                seq = seq.wrapping_add(1);
                packet[2..4].copy_from_slice(&seq.to_be_bytes());
                tx.protect_rtp(black_box(&packet), &mut wire).unwrap();
                rx.unprotect_rtp(black_box(&wire), &mut back).unwrap();
                black_box(&back);
            })
        });

        let provider = rtc_srtp::crypto::default_provider().unwrap();
        let mut rtc = RtcContext::new(
            &keys.master_key,
            &keys.master_salt,
            rtc_profile,
            None,
            None,
            provider.crypto(),
        )
        .unwrap();
        let mut seq = 0u16;
        g.bench_function(format!("{name}/rtc-srtp protect"), |b| {
            b.iter(|| {
                seq = seq.wrapping_add(1);
                packet[2..4].copy_from_slice(&seq.to_be_bytes());
                black_box(rtc.encrypt_rtp(black_box(&packet)).unwrap());
            })
        });
    }
    g.finish();
}

criterion_group!(benches, srtp);
criterion_main!(benches);
