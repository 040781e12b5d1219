#![no_main]
//! SRTP/SRTCP unprotect exactly as a WebRTC participant's receiver runs it on every datagram
//! from the network, with a fixed context (fixed keys, so the committed seeds are valid
//! packets and the fuzzer reaches the decrypt and replay paths): `SrtpReceiver::unprotect_rtp`
//! and `unprotect_rtcp` (RTP header with CSRCs and extension, index estimation, replay
//! window, HMAC-SHA1 or GCM tag, SRTCP E flag and index). No panic, and nothing changes the
//! receiver's state unless it authenticated; and the sender side: whatever `protect_*`
//! accepts, `unprotect_*` gives back unchanged.
//!
//! Input: `[flags: u8][bytes]`. `flags & 1`: AEAD_AES_128_GCM, else AES_CM_128_HMAC_SHA1_80;
//! `flags & 2`: the receiver first joins the stream at ROC `flags >> 2` (`resume`). The bytes
//! are one datagram, given as SRTP and as SRTCP, twice each (the second time is a replay),
//! and as plain RTP/RTCP to the sender.
use libfuzzer_sys::fuzz_target;
use webrtc_core::srtp::{Profile, SrtpKeys, SrtpReceiver, SrtpSender};
use webrtc_core::Error;

/// The keys the seeds were made with (`webrtc/tests/srtp.rs`, `write_fuzz_seeds`).
fn keys(profile: Profile) -> SrtpKeys {
    SrtpKeys::new(profile, &[0x11; 16], &vec![0x22; profile.salt_len()]).expect("fixed key lengths")
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, bytes)) = data.split_first() else {
        return;
    };
    let profile = if flags & 1 == 1 {
        Profile::AeadAes128Gcm
    } else {
        Profile::Aes128CmHmacSha1_80
    };
    let mut rx = SrtpReceiver::new(keys(profile)).expect("valid keys");
    if flags & 2 != 0 && bytes.len() >= 12 {
        let ssrc = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        rx.resume(ssrc, u64::from(flags >> 2) << 16);
    }
    let mut out = Vec::new();
    for _ in 0..2 {
        let before = rx.state().clone();
        match rx.unprotect_rtp(bytes, &mut out) {
            Ok(()) => assert_eq!(out.len(), bytes.len() - profile.rtp_overhead()),
            Err(_) => {
                assert_eq!(&before, rx.state(), "a refused packet changed the state");
                assert!(out.is_empty());
            }
        }
        let before = rx.state().clone();
        match rx.unprotect_rtcp(bytes, &mut out) {
            Ok(()) => assert_eq!(out.len(), bytes.len() - profile.rtcp_overhead()),
            Err(_) => assert_eq!(&before, rx.state(), "a refused packet changed the state"),
        }
    }

    let mut tx = SrtpSender::new(keys(profile)).expect("valid keys");
    let mut rx = SrtpReceiver::new(keys(profile)).expect("valid keys");
    let mut wire = Vec::new();
    if tx.protect_rtp(bytes, &mut wire).is_ok() {
        assert_eq!(rx.unprotect_rtp(&wire, &mut out), Ok(()));
        assert_eq!(out, bytes);
        assert_eq!(rx.unprotect_rtp(&wire, &mut out), Err(Error::Replay));
    }
    if tx.protect_rtcp(bytes, &mut wire).is_ok() {
        assert_eq!(rx.unprotect_rtcp(&wire, &mut out), Ok(()));
        assert_eq!(out, bytes);
        assert_eq!(rx.unprotect_rtcp(&wire, &mut out), Err(Error::Replay));
    }
});
