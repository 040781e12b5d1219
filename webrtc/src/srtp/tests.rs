//! Known-answer tests (RFC 3711 Appendix B, RFC 7714 §16/§17), index estimation and the
//! replay window. Packet-level behaviour and the cross-check with rtc-srtp are in
//! `tests/srtp.rs`.
use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn arr<const N: usize>(s: &str) -> [u8; N] {
    hex(s).try_into().unwrap()
}

/// RFC 3711 Appendix B.2: AES-CM keystream for session key 2B7E..., session salt
/// F0F1...FD, SSRC 0, index 0 (IV F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000).
#[test]
fn rfc3711_b2_aes_cm_keystream() {
    let salt: [u8; 14] = arr("F0F1F2F3F4F5F6F7F8F9FAFBFCFD");
    let iv = cm_iv(&salt, 0, 0);
    assert_eq!(iv.to_vec(), hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000"));
    let Keys::Cm { aes, .. } =
        Keys::cm(&arr("2B7E151628AED2A6ABF7158809CF4F3C"), &salt, &[0u8; 20])
    else {
        unreachable!()
    };
    let mut ks = vec![0u8; 0xff02 * 16];
    ctr_at(&aes, iv).apply_keystream(&mut ks);
    let block = |i: usize| ks[i * 16..(i + 1) * 16].to_vec();
    assert_eq!(block(0), hex("E03EAD0935C95E80E166B16DD92B4EB4"));
    assert_eq!(block(1), hex("D23513162B02D0F72A43A2FE4A5F97AB"));
    assert_eq!(block(2), hex("41E95B3BB0A2E8DD477901E4FCA894C0"));
    assert_eq!(block(0xfeff), hex("EC8CDF7398607CB0F2D21675EA9EA1E4"));
    assert_eq!(block(0xff00), hex("362B7C3C6773516318A077D7FC5073AE"));
    assert_eq!(block(0xff01), hex("6A2CC3787889374FBEB4C81B17BA6C44"));
}

/// RFC 3711 Appendix B.3: session keys from master key E1F9... and master salt 0EC6....
#[test]
fn rfc3711_b3_key_derivation() {
    let mk: [u8; 16] = arr("E1F97A0D3E018BE0D64FA32C06DE4139");
    let ms = hex("0EC675AD498AFEEBB6960B3AABE6");
    let mut enc = [0u8; 16];
    derive_session_key(&mk, &ms, LABEL_RTP_ENCRYPTION, &mut enc);
    assert_eq!(enc.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
    let mut salt = [0u8; 14];
    derive_session_key(&mk, &ms, LABEL_RTP_SALT, &mut salt);
    assert_eq!(salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
    // The RFC lists 94 bytes of the auth keystream; HMAC-SHA1 uses the first 20.
    let mut auth = [0u8; 94];
    derive_session_key(&mk, &ms, LABEL_RTP_AUTH, &mut auth);
    assert_eq!(
        auth.to_vec(),
        hex(
            "CEBE321F6FF7716B6FD4AB49AF256A15 6D38BAA48F0A0ACF3C34E2359E6CDBCE
             E049646C43D9327AD175578EF7227098 6371C10C9A369AC2F94A8C5FBCDDDC25
             6D6E919A48B610EF17C2041E47403576 6B68642C59BBFC2F34DB60DBDFB2"
        )
    );
}

/// RFC 7714 §16/§17 use the session key and salt directly (no key derivation).
fn rfc7714_session() -> Session {
    let key: [u8; 16] = arr("000102030405060708090a0b0c0d0e0f");
    let salt: [u8; 12] = arr("517569642070726f2071756f");
    Session {
        rtp: Keys::gcm(&key, &salt),
        rtcp: Keys::gcm(&key, &salt),
    }
}

/// RFC 7714 §16.1.1: AEAD_AES_128_GCM SRTP, SSRC 0x5501a0b2, ROC 0, SEQ 0xf17b.
#[test]
fn rfc7714_16_aead_aes_128_gcm_rtp() {
    let plain = hex(
        "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973 20646976
         69736120 696e2070 61727465 73207472 6573",
    );
    let protected = hex(
        "8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca be633bd5
         0d294e6f 42a5f47a 51c7d19b 36de3adf 8833899d 7f27beb1 6a9152cf 765ee439 0cce",
    );
    assert_eq!(
        gcm_iv(&arr("517569642070726f2071756f"), 0x5501a0b2, 0xf17b).to_vec(),
        hex("51753c6580c2726f20718414")
    );
    let s = rfc7714_session();
    let mut out = Vec::new();
    s.protect_rtp(&plain, 12, 0x5501a0b2, 0xf17b, &mut out);
    assert_eq!(out, protected);
    let mut back = Vec::new();
    s.unprotect_rtp(&protected, 12, 0x5501a0b2, 0xf17b, &mut back)
        .unwrap();
    assert_eq!(back, plain);
    // Negative control: the wrong ROC (part of the IV) does not authenticate.
    assert_eq!(
        s.unprotect_rtp(&protected, 12, 0x5501a0b2, 0x1_f17b, &mut back),
        Err(Error::AuthFailed)
    );
}

/// RFC 7714 §17.1: AEAD_AES_128_GCM SRTCP, SSRC "Mars", SRTCP index 0x5d4, E flag set.
#[test]
fn rfc7714_17_aead_aes_128_gcm_rtcp() {
    let plain = hex(
        "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930 4c756e61
         deadbeef deadbeef deadbeef deadbeef deadbeef",
    );
    let protected = hex(
        "81c8000d 4d617273 63e94885 dcdab67c a727d766 2f6b7e99 7ff5c0f7 6c06f32d
         c676a5f1 730d6fda 4ce09b46 86303ded 0bb9275b c84aa458 96cf4d2f c5abf872
         45d9eade 800005d4",
    );
    assert_eq!(
        gcm_iv(&arr("517569642070726f2071756f"), 0x4d617273, 0x5d4).to_vec(),
        hex("517524055203726f207170bb")
    );
    let s = rfc7714_session();
    let mut out = Vec::new();
    s.protect_rtcp(&plain, 0x4d617273, 0x5d4, &mut out);
    assert_eq!(out, protected);
    let mut back = Vec::new();
    assert_eq!(
        s.unprotect_rtcp(&protected, 0x4d617273, &mut back),
        Ok(0x5d4)
    );
    assert_eq!(back, plain);
}

#[test]
fn index_estimation_follows_rfc3711_appendix_a() {
    // Same ROC, forward and backward.
    assert_eq!(estimate_index(100, 101), Some(101));
    assert_eq!(estimate_index(100, 50), Some(50));
    // Wrap forward: highest 65535 (ROC 0), next seq 0 -> ROC 1.
    assert_eq!(estimate_index(0xffff, 0), Some(0x1_0000));
    assert_eq!(estimate_index(0x2_fff0, 5), Some(0x3_0005));
    // Late packet from before the wrap: highest 0x1_0002, seq 0xfffe -> ROC 0.
    assert_eq!(estimate_index(0x1_0002, 0xfffe), Some(0xfffe));
    // Before the stream's first packet: ROC would be -1.
    assert_eq!(estimate_index(2, 0xfffe), None);
    // Halfway points.
    assert_eq!(estimate_index(0x5_0000, 0x8000), Some(0x5_8000));
    assert_eq!(estimate_index(0x5_0000, 0x8001), Some(0x4_8001));
    assert_eq!(estimate_index(0x5_8000, 0), Some(0x5_0000));
    assert_eq!(estimate_index(0x5_8001, 0), Some(0x6_0000));
}

#[test]
fn replay_window_rejects_duplicates_and_old_packets() {
    let mut w = ReplayWindow::new(1000);
    assert_eq!(w.check(1000), Err(Error::Replay));
    assert_eq!(w.check(1001), Ok(()));
    assert_eq!(w.check(999), Ok(()));
    w.accept(999);
    assert_eq!(w.check(999), Err(Error::Replay));
    w.accept(1010);
    assert_eq!(w.check(1000), Err(Error::Replay));
    assert_eq!(w.check(1005), Ok(()));
    // 1010 - 63 is the oldest index still in the window, 1010 - 64 is too old.
    assert_eq!(w.check(1010 - 63), Ok(()));
    assert_eq!(w.check(1010 - 64), Err(Error::Replay));
    // A jump beyond the window forgets everything behind.
    w.accept(5000);
    assert_eq!(w.check(4999), Ok(()));
    assert_eq!(w.check(5000), Err(Error::Replay));
    assert_eq!(w.check(1010), Err(Error::Replay));
}

/// SRTCP with the E flag clear (RFC 3711 §3.4, RFC 7714 §9.3: authenticated, not
/// encrypted) is accepted and returned as sent; we never send it ourselves.
#[test]
fn unencrypted_srtcp_is_authenticated_and_accepted() {
    let plain = hex("80c80006 01020304 00000000 00000001 00000002 00000003 00000004");
    let word = 7u32.to_be_bytes(); // E = 0, index 7
    let keys = SrtpKeys::new(Profile::Aes128CmHmacSha1_80, &[1; 16], &[2; 14]).unwrap();
    let s = Session::new(&keys).unwrap();
    let Keys::Cm { mac, .. } = &s.rtcp else {
        unreachable!()
    };
    let mut wire = plain.clone();
    wire.extend_from_slice(&word);
    let tag = mac.clone().chain_update(&wire).finalize().into_bytes();
    wire.extend_from_slice(&tag[..10]);
    let mut out = Vec::new();
    assert_eq!(s.unprotect_rtcp(&wire, 0x01020304, &mut out), Ok(7));
    assert_eq!(out, plain);
    wire[10] ^= 1;
    assert_eq!(
        s.unprotect_rtcp(&wire, 0x01020304, &mut out),
        Err(Error::AuthFailed)
    );

    let keys = SrtpKeys::new(Profile::AeadAes128Gcm, &[1; 16], &[2; 12]).unwrap();
    let s = Session::new(&keys).unwrap();
    let Keys::Gcm { aead, salt } = &s.rtcp else {
        unreachable!()
    };
    let mut aad = plain.clone();
    aad.extend_from_slice(&word);
    let mut empty: [u8; 0] = [];
    let tag = aead
        .encrypt_inout_detached(
            &gcm_iv(salt, 0x01020304, 7).into(),
            &aad,
            (&mut empty[..]).into(),
        )
        .unwrap();
    let mut wire = plain.clone();
    wire.extend_from_slice(&tag);
    wire.extend_from_slice(&word);
    assert_eq!(s.unprotect_rtcp(&wire, 0x01020304, &mut out), Ok(7));
    assert_eq!(out, plain);
    wire[10] ^= 1;
    assert_eq!(
        s.unprotect_rtcp(&wire, 0x01020304, &mut out),
        Err(Error::AuthFailed)
    );
}
