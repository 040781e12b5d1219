//! SRTP/SRTCP as a peer sees it: packets protected here are accepted by an independent
//! implementation (rtc-srtp 0.21 on ring) and the other way round, for both profiles, across
//! a rollover-counter wrap and across a takeover (a backup's sender resumed mid-stream);
//! replicated state round-trips through postcard; forged, replayed and mis-counted packets
//! are refused.
use rtc_srtp::context::Context as RtcContext;
use rtc_srtp::protection_profile::ProtectionProfile as RtcProfile;
use webrtc_core::srtp::{
    split_keying_material, DtlsRole, Profile, SenderState, SrtpKeys, SrtpReceiver, SrtpSender,
};
use webrtc_core::Error;

const SSRC: u32 = 0x1234_5678;
const PROFILES: [Profile; 2] = [Profile::Aes128CmHmacSha1_80, Profile::AeadAes128Gcm];

fn keys(profile: Profile, seed: u8) -> SrtpKeys {
    let key: Vec<u8> = (0..profile.key_len() as u8).map(|i| i ^ seed).collect();
    let salt: Vec<u8> = (0..profile.salt_len() as u8)
        .map(|i| i.wrapping_mul(7) ^ seed)
        .collect();
    SrtpKeys::new(profile, &key, &salt).unwrap()
}

fn rtc(keys: &SrtpKeys) -> RtcContext {
    let profile = match keys.profile {
        Profile::Aes128CmHmacSha1_80 => RtcProfile::Aes128CmHmacSha1_80,
        Profile::AeadAes128Gcm => RtcProfile::AeadAes128Gcm,
    };
    let provider = rtc_srtp::crypto::default_provider().unwrap();
    RtcContext::new(
        &keys.master_key,
        &keys.master_salt,
        profile,
        None,
        None,
        provider.crypto(),
    )
    .unwrap()
}

/// A 20 ms Opus packet (160 bytes of payload) with the RFC 6464 audio level in a one-byte
/// header extension, like a browser's.
fn rtp(ssrc: u32, seq: u16) -> Vec<u8> {
    let ts = u32::from(seq).wrapping_mul(960);
    let mut p = vec![0x90, 111];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0xbe, 0xde, 0x00, 0x01, 0x10, 0x80 | 0x2a, 0, 0]);
    p.extend((0..160u32).map(|i| (i as u8) ^ (seq as u8)));
    p
}

/// An RTCP sender report without report blocks.
fn rtcp_sr(ssrc: u32, n: u32) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0xe0, 0, 0, 0, 0, 0, 0, n as u8]);
    p.extend_from_slice(&(n * 48000).to_be_bytes());
    p.extend_from_slice(&(n * 250).to_be_bytes());
    p.extend_from_slice(&(n * 40000).to_be_bytes());
    p
}

fn seqs_across_wrap() -> impl Iterator<Item = u16> {
    (65500u16..=65535).chain(0..40)
}

#[test]
fn rtc_srtp_decrypts_ours_across_a_rollover() {
    for profile in PROFILES {
        let k = keys(profile, 1);
        let mut ours = SrtpSender::new(k.clone()).unwrap();
        let mut theirs = rtc(&k);
        let mut wire = Vec::new();
        for seq in seqs_across_wrap() {
            let plain = rtp(SSRC, seq);
            ours.protect_rtp(&plain, &mut wire).unwrap();
            assert_eq!(wire.len(), plain.len() + profile.rtp_overhead());
            let back = theirs.decrypt_rtp(&wire).unwrap();
            assert_eq!(&back[..], &plain[..], "{profile:?} seq {seq}");
        }
        assert_eq!(ours.state().roc(SSRC), Some(1));
        for n in 0..5 {
            let plain = rtcp_sr(SSRC, n);
            ours.protect_rtcp(&plain, &mut wire).unwrap();
            assert_eq!(wire.len(), plain.len() + profile.rtcp_overhead());
            let back = theirs.decrypt_rtcp(&wire).unwrap();
            assert_eq!(&back[..], &plain[..], "{profile:?} rtcp {n}");
        }
    }
}

#[test]
fn we_decrypt_rtc_srtp_across_a_rollover() {
    for profile in PROFILES {
        let k = keys(profile, 2);
        let mut theirs = rtc(&k);
        let mut ours = SrtpReceiver::new(k).unwrap();
        let mut back = Vec::new();
        for seq in seqs_across_wrap() {
            let plain = rtp(SSRC, seq);
            let wire = theirs.encrypt_rtp(&plain).unwrap();
            ours.unprotect_rtp(&wire, &mut back).unwrap();
            assert_eq!(back, plain, "{profile:?} seq {seq}");
            // The same packet again is a replay.
            assert_eq!(ours.unprotect_rtp(&wire, &mut back), Err(Error::Replay));
        }
        assert_eq!(ours.state().rtp[&SSRC].highest, 0x1_0000 + 39);
        for n in 0..5 {
            let plain = rtcp_sr(SSRC, n);
            let wire = theirs.encrypt_rtcp(&plain).unwrap();
            ours.unprotect_rtcp(&wire, &mut back).unwrap();
            assert_eq!(back, plain, "{profile:?} rtcp {n}");
            assert_eq!(ours.unprotect_rtcp(&wire, &mut back), Err(Error::Replay));
        }
    }
}

/// The takeover: the primary's sender protected a stream past a wrap; the backup builds a
/// fresh sender from the same keys and resumes at the mixer's extended sequence number plus
/// an SRTCP margin. The browser's receiver (rtc-srtp here) decrypts on without a gap.
#[test]
fn a_resumed_sender_continues_the_stream_for_the_peer() {
    for profile in PROFILES {
        let k = keys(profile, 3);
        let mut browser = rtc(&k);
        let mut primary = SrtpSender::new(k.clone()).unwrap();
        let mut wire = Vec::new();
        let mut ext_seq = 0u64;
        for (i, seq) in (65000u16..=65535).chain(0..100).enumerate() {
            primary.protect_rtp(&rtp(SSRC, seq), &mut wire).unwrap();
            browser.decrypt_rtp(&wire).unwrap();
            ext_seq = 0x1_0000 * u64::from(seq < 65000) + u64::from(seq);
            if i % 100 == 0 {
                primary
                    .protect_rtcp(&rtcp_sr(SSRC, i as u32), &mut wire)
                    .unwrap();
                browser.decrypt_rtcp(&wire).unwrap();
            }
        }
        let last_srtcp_replicated = primary.state().srtcp[&SSRC] - 1;
        drop(primary); // kill -9

        // Negative control: a backup that forgot the rollover counter is not heard.
        let mut wrong = SrtpSender::new(k.clone()).unwrap();
        wrong.resume(SSRC, ext_seq & 0xffff, last_srtcp_replicated + 100);
        wrong.protect_rtp(&rtp(SSRC, 100), &mut wire).unwrap();
        assert!(browser.decrypt_rtp(&wire).is_err(), "{profile:?}");

        let mut backup = SrtpSender::new(k).unwrap();
        backup.resume(SSRC, ext_seq, last_srtcp_replicated + 100);
        for seq in 100..300u16 {
            let plain = rtp(SSRC, seq);
            backup.protect_rtp(&plain, &mut wire).unwrap();
            let back = browser.decrypt_rtp(&wire).unwrap();
            assert_eq!(&back[..], &plain[..], "{profile:?} seq {seq}");
        }
        for n in 0..3 {
            let plain = rtcp_sr(SSRC, 1000 + n);
            backup.protect_rtcp(&plain, &mut wire).unwrap();
            let back = browser.decrypt_rtcp(&wire).unwrap();
            assert_eq!(&back[..], &plain[..], "{profile:?} rtcp {n}");
        }
        assert_eq!(backup.state().roc(SSRC), Some(1));
    }
}

/// Replicated state (postcard, as ft-sync encodes it) continues byte for byte: the restored
/// sender's packets are identical to the original's, and a restored receiver accepts what
/// the original would.
#[test]
fn postcard_round_trip_of_a_context_mid_stream() {
    for profile in PROFILES {
        let k = keys(profile, 4);
        let mut tx = SrtpSender::new(k.clone()).unwrap();
        let mut rx = SrtpReceiver::new(k).unwrap();
        let (mut wire, mut back) = (Vec::new(), Vec::new());
        for seq in 65400u16..=65535 {
            tx.protect_rtp(&rtp(SSRC, seq), &mut wire).unwrap();
            rx.unprotect_rtp(&wire, &mut back).unwrap();
        }
        tx.protect_rtcp(&rtcp_sr(SSRC, 1), &mut wire).unwrap();
        rx.unprotect_rtcp(&wire, &mut back).unwrap();

        let bytes = postcard::to_allocvec(tx.state()).unwrap();
        let state: SenderState = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(&state, tx.state());
        let mut tx2 = SrtpSender::from_state(state).unwrap();
        let rx_bytes = postcard::to_allocvec(rx.state()).unwrap();
        let mut rx2 = SrtpReceiver::from_state(postcard::from_bytes(&rx_bytes).unwrap()).unwrap();

        let mut wire2 = Vec::new();
        for seq in 0u16..50 {
            let plain = rtp(SSRC, seq);
            tx.protect_rtp(&plain, &mut wire).unwrap();
            tx2.protect_rtp(&plain, &mut wire2).unwrap();
            assert_eq!(wire, wire2, "{profile:?} seq {seq}");
            rx2.unprotect_rtp(&wire2, &mut back).unwrap();
            assert_eq!(back, plain);
        }
        tx.protect_rtcp(&rtcp_sr(SSRC, 2), &mut wire).unwrap();
        tx2.protect_rtcp(&rtcp_sr(SSRC, 2), &mut wire2).unwrap();
        assert_eq!(wire, wire2);
        rx2.unprotect_rtcp(&wire2, &mut back).unwrap();
        assert_eq!(tx.state(), tx2.state());
        assert_eq!(tx2.state().roc(SSRC), Some(1));
    }
}

#[test]
fn a_flipped_bit_anywhere_fails_authentication() {
    for profile in PROFILES {
        let k = keys(profile, 5);
        let mut tx = SrtpSender::new(k.clone()).unwrap();
        let mut wire = Vec::new();
        let mut back = Vec::new();
        tx.protect_rtp(&rtp(SSRC, 7), &mut wire).unwrap();
        // Every byte after the sequence number and SSRC-bearing fields the index
        // estimation reads: flipping those is a different packet index, also refused.
        for i in 0..wire.len() {
            let mut bad = wire.clone();
            bad[i] ^= 0x01;
            let mut rx = SrtpReceiver::new(k.clone()).unwrap();
            let r = rx.unprotect_rtp(&bad, &mut back);
            assert!(r.is_err(), "{profile:?} byte {i} flipped: {r:?}");
            assert!(back.is_empty());
            assert!(
                rx.state().rtp.is_empty(),
                "a forged packet changed the state"
            );
        }
        let mut rx = SrtpReceiver::new(k.clone()).unwrap();
        rx.unprotect_rtp(&wire, &mut back).unwrap();

        tx.protect_rtcp(&rtcp_sr(SSRC, 1), &mut wire).unwrap();
        for i in 0..wire.len() {
            let mut bad = wire.clone();
            bad[i] ^= 0x80;
            let mut rx = SrtpReceiver::new(k.clone()).unwrap();
            assert!(rx.unprotect_rtcp(&bad, &mut back).is_err(), "rtcp byte {i}");
        }
        rx.unprotect_rtcp(&wire, &mut back).unwrap();
        // Other keys: refused.
        let mut other = SrtpReceiver::new(keys(profile, 6)).unwrap();
        assert_eq!(
            other.unprotect_rtcp(&wire, &mut back),
            Err(Error::AuthFailed)
        );
    }
}

#[test]
fn a_receiver_with_the_wrong_rollover_counter_cannot_decrypt() {
    for profile in PROFILES {
        let k = keys(profile, 7);
        let mut tx = SrtpSender::new(k.clone()).unwrap();
        tx.resume(SSRC, 0x3_0010, 0);
        let mut wire = Vec::new();
        let mut back = Vec::new();
        tx.protect_rtp(&rtp(SSRC, 0x11), &mut wire).unwrap();
        let mut wrong = SrtpReceiver::new(k.clone()).unwrap();
        wrong.resume(SSRC, 0x2_0010);
        assert_eq!(
            wrong.unprotect_rtp(&wire, &mut back),
            Err(Error::AuthFailed)
        );
        let mut right = SrtpReceiver::new(k).unwrap();
        right.resume(SSRC, 0x3_0010);
        right.unprotect_rtp(&wire, &mut back).unwrap();
        assert_eq!(back, rtp(SSRC, 0x11));
    }
}

#[test]
fn reordered_packets_inside_the_window_are_accepted_once() {
    for profile in PROFILES {
        let k = keys(profile, 8);
        let mut tx = SrtpSender::new(k.clone()).unwrap();
        let mut rx = SrtpReceiver::new(k).unwrap();
        let wires: Vec<Vec<u8>> = seqs_across_wrap()
            .map(|seq| {
                let mut w = Vec::new();
                tx.protect_rtp(&rtp(SSRC, seq), &mut w).unwrap();
                w
            })
            .collect();
        let mut back = Vec::new();
        // The first packet (it fixes ROC 0), then the second half (past the wrap), then the
        // older packets: those within 64 of the highest are accepted, older ones are
        // refused as too old.
        let half = wires.len() / 2;
        rx.unprotect_rtp(&wires[0], &mut back).unwrap();
        for w in &wires[half..] {
            rx.unprotect_rtp(w, &mut back).unwrap();
        }
        let highest = wires.len() - 1;
        for (i, w) in wires[..half].iter().enumerate().skip(1) {
            let r = rx.unprotect_rtp(w, &mut back);
            if highest - i < 64 {
                assert_eq!(r, Ok(()), "{profile:?} packet {i}");
            } else {
                assert_eq!(r, Err(Error::Replay), "{profile:?} packet {i}");
            }
        }
    }
}

#[test]
fn short_and_malformed_packets_are_errors() {
    for profile in PROFILES {
        let k = keys(profile, 9);
        let mut rx = SrtpReceiver::new(k.clone()).unwrap();
        let mut tx = SrtpSender::new(k).unwrap();
        let mut out = Vec::new();
        assert_eq!(rx.unprotect_rtp(&[], &mut out), Err(Error::TooShort));
        assert_eq!(
            rx.unprotect_rtp(&[0x80; 12], &mut out),
            Err(Error::TooShort)
        );
        assert_eq!(
            rx.unprotect_rtp(&[0x40; 40], &mut out),
            Err(Error::BadVersion)
        );
        // Header extension claiming more words than the packet has.
        let mut p = rtp(SSRC, 1);
        p[14] = 0xff;
        assert_eq!(rx.unprotect_rtp(&p, &mut out), Err(Error::TooShort));
        assert_eq!(tx.protect_rtp(&p, &mut out), Err(Error::TooShort));
        assert_eq!(
            rx.unprotect_rtcp(&[0x80; 8], &mut out),
            Err(Error::TooShort)
        );
        assert_eq!(tx.protect_rtcp(&[0x80; 7], &mut out), Err(Error::TooShort));
    }
}

#[test]
fn keying_material_splits_per_rfc5764_and_role() {
    for profile in PROFILES {
        let material: Vec<u8> = (0..profile.keying_material_len() as u8).collect();
        let (k, s) = (profile.key_len(), profile.salt_len());
        let (srv_local, srv_remote) =
            split_keying_material(profile, &material, DtlsRole::Server).unwrap();
        let (cli_local, cli_remote) =
            split_keying_material(profile, &material, DtlsRole::Client).unwrap();
        assert_eq!(srv_local, cli_remote);
        assert_eq!(srv_remote, cli_local);
        assert_eq!(cli_local.master_key, material[..k]);
        assert_eq!(srv_local.master_key, material[k..2 * k]);
        assert_eq!(cli_local.master_salt, material[2 * k..2 * k + s]);
        assert_eq!(srv_local.master_salt, material[2 * k + s..]);
        // What the server sends, the client's receiver (keyed with its remote half) reads.
        let mut tx = SrtpSender::new(srv_local).unwrap();
        let mut rx = SrtpReceiver::new(cli_remote).unwrap();
        let (mut wire, mut back) = (Vec::new(), Vec::new());
        tx.protect_rtp(&rtp(SSRC, 1), &mut wire).unwrap();
        rx.unprotect_rtp(&wire, &mut back).unwrap();
        assert_eq!(
            split_keying_material(profile, &material[1..], DtlsRole::Server),
            Err(Error::KeyLength {
                expected: material.len(),
                got: material.len() - 1
            })
        );
    }
    assert_eq!(Profile::from_id(0x0001), Ok(Profile::Aes128CmHmacSha1_80));
    assert_eq!(Profile::from_id(0x0007), Ok(Profile::AeadAes128Gcm));
    assert_eq!(Profile::from_id(0x0002), Err(Error::UnknownProfile(2)));
    assert!(!format!("{:?}", keys(Profile::AeadAes128Gcm, 0)).contains("master_key: ["));
}

/// Writes the seeds of the `srtp_unprotect` fuzz target (`fuzz/seeds/srtp_unprotect/`):
/// valid SRTP/SRTCP packets under the target's fixed keys, so the fuzzer starts inside the
/// decrypt paths. Run: `cargo test -p webrtc-core --test srtp -- --ignored write_fuzz_seeds`.
#[test]
#[ignore = "writes files; run by hand to regenerate the fuzz seeds"]
fn write_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/srtp_unprotect");
    std::fs::create_dir_all(&dir).unwrap();
    for (flag, profile) in [
        (0u8, Profile::Aes128CmHmacSha1_80),
        (1, Profile::AeadAes128Gcm),
    ] {
        let name = if flag == 0 { "cm" } else { "gcm" };
        let fixed = SrtpKeys::new(profile, &[0x11; 16], &vec![0x22; profile.salt_len()]).unwrap();
        let mut tx = SrtpSender::new(fixed).unwrap();
        let mut wire = Vec::new();
        let write = |file: String, flags: u8, bytes: &[u8]| {
            let mut seed = vec![flags];
            seed.extend_from_slice(bytes);
            std::fs::write(dir.join(file), seed).unwrap();
        };
        tx.protect_rtp(&rtp(SSRC, 1000), &mut wire).unwrap();
        write(format!("{name}_srtp.bin"), flag, &wire);
        tx.protect_rtcp(&rtcp_sr(SSRC, 1), &mut wire).unwrap();
        write(format!("{name}_srtcp.bin"), flag, &wire);
        // A stream at ROC 1 and a receiver told so (flags bit 1, ROC in bits 2..).
        tx.resume(SSRC, 0x1_0100, 5);
        tx.protect_rtp(&rtp(SSRC, 0x101), &mut wire).unwrap();
        write(format!("{name}_srtp_roc1.bin"), flag | 2 | (1 << 2), &wire);
        // Plain packets for the protect -> unprotect round trip.
        let mut csrc = rtp(SSRC, 7);
        csrc[0] = 0x81; // one CSRC, no extension: the extension words become the CSRC
        write(format!("{name}_rtp_plain.bin"), flag, &csrc);
        write(format!("{name}_rtcp_plain.bin"), flag, &rtcp_sr(SSRC, 2));
    }
}
