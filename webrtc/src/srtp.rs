//! SRTP and SRTCP (RFC 3711, RFC 7714) with state the project owns.
//!
//! Two profiles: `SRTP_AES128_CM_HMAC_SHA1_80` (AES-128 counter mode, 80-bit HMAC-SHA1 tag,
//! the one every browser offers) and `SRTP_AEAD_AES_128_GCM` (RFC 7714, 16-byte GCM tag).
//! Session keys are derived with the AES-CM PRF of RFC 3711 §4.3 (key derivation rate 0, as
//! DTLS-SRTP mandates). The block cipher, counter mode, GCM and HMAC-SHA1 are RustCrypto's.
//!
//! A crypto context is split in two:
//! - the *state*: [`SrtpKeys`] plus per-SSRC counters, in plain structs deriving serde
//!   ([`SenderState`], [`ReceiverState`]). This is what a primary replicates to its backup
//!   (the keys included: the sync link is authenticated), and what a backup resumes from;
//! - the *session*: the derived session keys with their key schedules, rebuilt from the state
//!   by [`SrtpSender::from_state`] / [`SrtpReceiver::from_state`], never serialized.
//!
//! Nothing here reads a clock, touches a socket or draws a random number, and no input
//! makes it panic: malformed, short or forged packets are an [`Error`].
//!
//! # Continuing an outgoing stream on the backup
//!
//! A receiver (the browser) computes the packet index `ROC * 2^16 + SEQ` itself from the
//! sequence numbers it sees (RFC 3711 §3.3.1), so a sender that takes over must use the same
//! rollover counter (ROC) the primary used, or every packet fails authentication while ICE
//! still says "connected". The ROC is derived, not replicated per packet: it is the number of
//! times the stream's 16-bit sequence number wrapped since its first SRTP packet. A backup
//! that knows the extended sequence number of the last packet the primary sent calls
//! [`SrtpSender::resume`] with it.
//!
//! The same holds for RTP as for SRTCP below: an index must never carry two different
//! payloads under one key (AES-CM leaks the XOR of the two; GCM nonce reuse also leaks the
//! authentication key). If the primary may have sent packets past the last replicated
//! sequence number, the backup's mixer should continue a few sequence numbers further on
//! (the browser counts the skipped ones as lost) rather than re-send those indices.
//!
//! SRTCP carries its index explicitly and the receiver rejects an index it has seen (replay
//! window) — and reusing an index under the same key reuses keystream. The primary does not
//! replicate every SRTCP packet, so the backup must resume *past* any index the primary may
//! have used since the last replicated value: `resume(ssrc, ext_seq, last_index + margin)`.
//! The margin is the caller's choice; it must exceed the number of SRTCP packets the primary
//! can send between two replications of the index (e.g. RTCP every 5 s and replication every
//! second: a margin of a few packets; 100 is generous and costs nothing — the index space is
//! 2^31).
use std::collections::BTreeMap;
use std::fmt;

use aes::cipher::{InnerIvInit, KeyInit, KeyIvInit, StreamCipher, StreamCipherCoreWrapper};
use aes::Aes128;
use aes_gcm::{AeadInOut, Aes128Gcm};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha1::Sha1;

use crate::Error;

type Result<T> = std::result::Result<T, Error>;
type Aes128Ctr = ctr::Ctr128BE<Aes128>;
type HmacSha1 = Hmac<Sha1>;

/// Packets a replay window remembers behind the highest index (RFC 3711 §3.3.2 minimum).
pub const REPLAY_WINDOW: u64 = 64;
/// RTP packet indices are 48 bits (RFC 3711 §3.3.1).
const MAX_RTP_INDEX: u64 = (1 << 48) - 1;
/// SRTCP indices are 31 bits (RFC 3711 §3.4).
const MAX_SRTCP_INDEX: u32 = (1 << 31) - 1;
const E_FLAG: u32 = 1 << 31;
const SRTCP_INDEX_LEN: usize = 4;
const RTCP_HEADER_LEN: usize = 8;

// Key derivation labels, RFC 3711 §4.3.2.
const LABEL_RTP_ENCRYPTION: u8 = 0x00;
const LABEL_RTP_AUTH: u8 = 0x01;
const LABEL_RTP_SALT: u8 = 0x02;
const LABEL_RTCP_ENCRYPTION: u8 = 0x03;
const LABEL_RTCP_AUTH: u8 = 0x04;
const LABEL_RTCP_SALT: u8 = 0x05;

/// An SRTP protection profile (the DTLS `use_srtp` value, RFC 5764 §4.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Profile {
    /// `SRTP_AES128_CM_HMAC_SHA1_80` (0x0001): AES-128 counter mode, 80-bit HMAC-SHA1 tag.
    Aes128CmHmacSha1_80,
    /// `SRTP_AEAD_AES_128_GCM` (0x0007): AES-128 GCM, 128-bit tag (RFC 7714).
    AeadAes128Gcm,
}

impl Profile {
    /// The profile with this DTLS-SRTP protection profile id.
    pub fn from_id(id: u16) -> Result<Profile> {
        match id {
            0x0001 => Ok(Profile::Aes128CmHmacSha1_80),
            0x0007 => Ok(Profile::AeadAes128Gcm),
            other => Err(Error::UnknownProfile(other)),
        }
    }

    /// The DTLS-SRTP protection profile id.
    pub fn id(self) -> u16 {
        match self {
            Profile::Aes128CmHmacSha1_80 => 0x0001,
            Profile::AeadAes128Gcm => 0x0007,
        }
    }

    /// Master key length in bytes.
    pub fn key_len(self) -> usize {
        16
    }

    /// Master salt length in bytes.
    pub fn salt_len(self) -> usize {
        match self {
            Profile::Aes128CmHmacSha1_80 => 14,
            Profile::AeadAes128Gcm => 12,
        }
    }

    /// Bytes SRTP adds to an RTP packet (the tag).
    pub fn rtp_overhead(self) -> usize {
        match self {
            Profile::Aes128CmHmacSha1_80 => 10,
            Profile::AeadAes128Gcm => 16,
        }
    }

    /// Bytes SRTCP adds to an RTCP packet (the tag and the E flag + SRTCP index word).
    pub fn rtcp_overhead(self) -> usize {
        self.rtp_overhead() + SRTCP_INDEX_LEN
    }

    /// Length of the keying material DTLS must export for this profile:
    /// `2 * (key_len + salt_len)` (RFC 5764 §4.2).
    pub fn keying_material_len(self) -> usize {
        2 * (self.key_len() + self.salt_len())
    }
}

/// One direction's master key and master salt, with its profile. Replicated as is.
///
/// `Debug` does not print the key or the salt.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SrtpKeys {
    /// The protection profile negotiated in DTLS.
    pub profile: Profile,
    /// Master key, [`Profile::key_len`] bytes.
    pub master_key: Vec<u8>,
    /// Master salt, [`Profile::salt_len`] bytes.
    pub master_salt: Vec<u8>,
}

impl SrtpKeys {
    /// Keys from a master key and salt, checking their lengths against the profile.
    pub fn new(profile: Profile, master_key: &[u8], master_salt: &[u8]) -> Result<SrtpKeys> {
        let keys = SrtpKeys {
            profile,
            master_key: master_key.to_vec(),
            master_salt: master_salt.to_vec(),
        };
        keys.check()?;
        Ok(keys)
    }

    fn check(&self) -> Result<()> {
        for (expected, got) in [
            (self.profile.key_len(), self.master_key.len()),
            (self.profile.salt_len(), self.master_salt.len()),
        ] {
            if expected != got {
                return Err(Error::KeyLength { expected, got });
            }
        }
        Ok(())
    }
}

impl fmt::Debug for SrtpKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpKeys")
            .field("profile", &self.profile)
            .field("master_key", &"<redacted>")
            .field("master_salt", &"<redacted>")
            .finish()
    }
}

/// Our role in the DTLS handshake (a WebRTC server answering an offer is usually `Server`,
/// `a=setup:passive`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DtlsRole {
    /// We sent the ClientHello.
    Client,
    /// We answered it.
    Server,
}

/// Splits DTLS-SRTP exported keying material (RFC 5764 §4.2: client key, server key, client
/// salt, server salt) into `(local, remote)`: the keys our sender uses and the keys our
/// receiver uses, for our DTLS `role`.
pub fn split_keying_material(
    profile: Profile,
    material: &[u8],
    role: DtlsRole,
) -> Result<(SrtpKeys, SrtpKeys)> {
    if material.len() != profile.keying_material_len() {
        return Err(Error::KeyLength {
            expected: profile.keying_material_len(),
            got: material.len(),
        });
    }
    let (k, s) = (profile.key_len(), profile.salt_len());
    let client_key = &material[..k];
    let server_key = &material[k..2 * k];
    let client_salt = &material[2 * k..2 * k + s];
    let server_salt = &material[2 * k + s..];
    let client = SrtpKeys::new(profile, client_key, client_salt)?;
    let server = SrtpKeys::new(profile, server_key, server_salt)?;
    Ok(match role {
        DtlsRole::Client => (client, server),
        DtlsRole::Server => (server, client),
    })
}

/// The RFC 3711 §4.3 key derivation function (AES-CM PRF, key derivation rate 0): fills `out`
/// with the session key of `label`. A 12-byte (GCM) master salt is padded with two zero bytes
/// on the right, as libsrtp does.
pub fn derive_session_key(master_key: &[u8; 16], master_salt: &[u8], label: u8, out: &mut [u8]) {
    let mut iv = [0u8; 16];
    let n = master_salt.len().min(14);
    iv[..n].copy_from_slice(&master_salt[..n]);
    iv[7] ^= label;
    out.fill(0);
    let mut ctr = Aes128Ctr::new(&(*master_key).into(), &iv.into());
    ctr.apply_keystream(out);
}

/// AES-CTR keystream of the pre-expanded session key from `iv`.
fn ctr_at(aes: &Aes128, iv: [u8; 16]) -> Aes128Ctr {
    StreamCipherCoreWrapper::from_core(ctr::CtrCore::inner_iv_init(aes.clone(), &iv.into()))
}

/// RFC 3711 §4.1.1: the AES-CM IV of a packet, `(salt * 2^16) XOR (SSRC * 2^64) XOR
/// (index * 2^16)`.
fn cm_iv(salt: &[u8; 14], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(salt);
    for (d, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
        *d ^= s;
    }
    for (d, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
        *d ^= s;
    }
    iv
}

/// RFC 7714 §8.1 / §9.1: the GCM IV, `salt XOR (0x0000 || SSRC || 48-bit index)`; for SRTCP
/// the index is the 31-bit SRTCP index.
fn gcm_iv(salt: &[u8; 12], ssrc: u32, index: u64) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[6..12].copy_from_slice(&index.to_be_bytes()[2..]);
    for (d, s) in iv.iter_mut().zip(salt) {
        *d ^= s;
    }
    iv
}

/// Derived keys of one direction and one of RTP / RTCP.
#[derive(Clone)]
enum Keys {
    Cm {
        aes: Aes128,
        salt: [u8; 14],
        mac: HmacSha1,
    },
    Gcm {
        aead: Aes128Gcm,
        salt: [u8; 12],
    },
}

impl Keys {
    fn derive(keys: &SrtpKeys, rtcp: bool) -> Result<Keys> {
        keys.check()?;
        let mut mk = [0u8; 16];
        mk.copy_from_slice(&keys.master_key);
        let (le, la, ls) = if rtcp {
            (LABEL_RTCP_ENCRYPTION, LABEL_RTCP_AUTH, LABEL_RTCP_SALT)
        } else {
            (LABEL_RTP_ENCRYPTION, LABEL_RTP_AUTH, LABEL_RTP_SALT)
        };
        let mut k = [0u8; 16];
        derive_session_key(&mk, &keys.master_salt, le, &mut k);
        Ok(match keys.profile {
            Profile::Aes128CmHmacSha1_80 => {
                let mut a = [0u8; 20];
                let mut s = [0u8; 14];
                derive_session_key(&mk, &keys.master_salt, la, &mut a);
                derive_session_key(&mk, &keys.master_salt, ls, &mut s);
                Keys::cm(&k, &s, &a)
            }
            Profile::AeadAes128Gcm => {
                let mut s = [0u8; 12];
                derive_session_key(&mk, &keys.master_salt, ls, &mut s);
                Keys::gcm(&k, &s)
            }
        })
    }

    fn cm(key: &[u8; 16], salt: &[u8; 14], auth: &[u8; 20]) -> Keys {
        Keys::Cm {
            aes: Aes128::new(&(*key).into()),
            salt: *salt,
            mac: <HmacSha1 as KeyInit>::new_from_slice(auth).expect("HMAC takes any key length"),
        }
    }

    fn gcm(key: &[u8; 16], salt: &[u8; 12]) -> Keys {
        Keys::Gcm {
            aead: Aes128Gcm::new(&(*key).into()),
            salt: *salt,
        }
    }
}

/// The derived session keys of one direction (RTP and RTCP).
#[derive(Clone)]
struct Session {
    rtp: Keys,
    rtcp: Keys,
}

impl Session {
    fn new(keys: &SrtpKeys) -> Result<Session> {
        Ok(Session {
            rtp: Keys::derive(keys, false)?,
            rtcp: Keys::derive(keys, true)?,
        })
    }

    /// Writes the SRTP packet of `packet` (RTP header of `hdr` bytes) at `index` to `out`.
    fn protect_rtp(&self, packet: &[u8], hdr: usize, ssrc: u32, index: u64, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(packet);
        let roc = (index >> 16) as u32;
        match &self.rtp {
            Keys::Cm { aes, salt, mac } => {
                let iv = cm_iv(salt, ssrc, index);
                ctr_at(aes, iv).apply_keystream(&mut out[hdr..]);
                let tag = mac
                    .clone()
                    .chain_update(&out[..])
                    .chain_update(roc.to_be_bytes())
                    .finalize()
                    .into_bytes();
                out.extend_from_slice(&tag[..10]);
            }
            Keys::Gcm { aead, salt } => {
                let iv = gcm_iv(salt, ssrc, index);
                let (aad, body) = out.split_at_mut(hdr);
                let tag = aead
                    .encrypt_inout_detached(&iv.into(), aad, body.into())
                    .expect("an RTP packet is far below GCM's length limit");
                out.extend_from_slice(&tag);
            }
        }
    }

    /// Checks and decrypts the SRTP packet `packet` (RTP header of `hdr` bytes) at `index`.
    fn unprotect_rtp(
        &self,
        packet: &[u8],
        hdr: usize,
        ssrc: u32,
        index: u64,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let roc = (index >> 16) as u32;
        match &self.rtp {
            Keys::Cm { aes, salt, mac } => {
                let body = packet.len() - 10;
                mac.clone()
                    .chain_update(&packet[..body])
                    .chain_update(roc.to_be_bytes())
                    .verify_truncated_left(&packet[body..])
                    .map_err(|_| Error::AuthFailed)?;
                out.clear();
                out.extend_from_slice(&packet[..body]);
                let iv = cm_iv(salt, ssrc, index);
                ctr_at(aes, iv).apply_keystream(&mut out[hdr..]);
            }
            Keys::Gcm { aead, salt } => {
                let body = packet.len() - 16;
                let tag: [u8; 16] = packet[body..].try_into().expect("16 bytes");
                out.clear();
                out.extend_from_slice(&packet[..body]);
                let iv = gcm_iv(salt, ssrc, index);
                let (aad, ct) = out.split_at_mut(hdr);
                if aead
                    .decrypt_inout_detached(&iv.into(), aad, ct.into(), &tag.into())
                    .is_err()
                {
                    out.clear();
                    return Err(Error::AuthFailed);
                }
            }
        }
        Ok(())
    }

    /// Writes the SRTCP packet of `packet` with SRTCP index `index` (E flag set) to `out`.
    fn protect_rtcp(&self, packet: &[u8], ssrc: u32, index: u32, out: &mut Vec<u8>) {
        let word = (index | E_FLAG).to_be_bytes();
        out.clear();
        out.extend_from_slice(packet);
        match &self.rtcp {
            Keys::Cm { aes, salt, mac } => {
                let iv = cm_iv(salt, ssrc, u64::from(index));
                ctr_at(aes, iv).apply_keystream(&mut out[RTCP_HEADER_LEN..]);
                out.extend_from_slice(&word);
                let tag = mac.clone().chain_update(&out[..]).finalize().into_bytes();
                out.extend_from_slice(&tag[..10]);
            }
            Keys::Gcm { aead, salt } => {
                let iv = gcm_iv(salt, ssrc, u64::from(index));
                let mut aad = [0u8; RTCP_HEADER_LEN + SRTCP_INDEX_LEN];
                aad[..RTCP_HEADER_LEN].copy_from_slice(&packet[..RTCP_HEADER_LEN]);
                aad[RTCP_HEADER_LEN..].copy_from_slice(&word);
                let tag = aead
                    .encrypt_inout_detached(&iv.into(), &aad, (&mut out[RTCP_HEADER_LEN..]).into())
                    .expect("an RTCP packet is far below GCM's length limit");
                out.extend_from_slice(&tag);
                out.extend_from_slice(&word);
            }
        }
    }

    /// Checks the SRTCP packet `packet` (length checked by the caller) and returns its index;
    /// the RTCP packet is in `out`.
    fn unprotect_rtcp(&self, packet: &[u8], ssrc: u32, out: &mut Vec<u8>) -> Result<u32> {
        match &self.rtcp {
            Keys::Cm { aes, salt, mac } => {
                let tag_at = packet.len() - 10;
                mac.clone()
                    .chain_update(&packet[..tag_at])
                    .verify_truncated_left(&packet[tag_at..])
                    .map_err(|_| Error::AuthFailed)?;
                let word_at = tag_at - SRTCP_INDEX_LEN;
                let word = u32::from_be_bytes(packet[word_at..tag_at].try_into().expect("4"));
                let index = word & MAX_SRTCP_INDEX;
                out.clear();
                out.extend_from_slice(&packet[..word_at]);
                if word & E_FLAG != 0 {
                    let iv = cm_iv(salt, ssrc, u64::from(index));
                    ctr_at(aes, iv).apply_keystream(&mut out[RTCP_HEADER_LEN..]);
                }
                Ok(index)
            }
            Keys::Gcm { aead, salt } => {
                let word_at = packet.len() - SRTCP_INDEX_LEN;
                let word_bytes: [u8; 4] = packet[word_at..].try_into().expect("4");
                let word = u32::from_be_bytes(word_bytes);
                let index = word & MAX_SRTCP_INDEX;
                let tag_at = word_at - 16;
                let tag: [u8; 16] = packet[tag_at..word_at].try_into().expect("16");
                let iv = gcm_iv(salt, ssrc, u64::from(index));
                out.clear();
                out.extend_from_slice(&packet[..tag_at]);
                let ok = if word & E_FLAG != 0 {
                    let mut aad = [0u8; RTCP_HEADER_LEN + SRTCP_INDEX_LEN];
                    aad[..RTCP_HEADER_LEN].copy_from_slice(&packet[..RTCP_HEADER_LEN]);
                    aad[RTCP_HEADER_LEN..].copy_from_slice(&word_bytes);
                    aead.decrypt_inout_detached(
                        &iv.into(),
                        &aad,
                        (&mut out[RTCP_HEADER_LEN..]).into(),
                        &tag.into(),
                    )
                } else {
                    // RFC 7714 §9.3: unencrypted SRTCP authenticates the whole packet and
                    // the index word as AAD, with an empty plaintext.
                    let mut aad = Vec::with_capacity(tag_at + SRTCP_INDEX_LEN);
                    aad.extend_from_slice(&packet[..tag_at]);
                    aad.extend_from_slice(&word_bytes);
                    let mut empty: [u8; 0] = [];
                    aead.decrypt_inout_detached(
                        &iv.into(),
                        &aad,
                        (&mut empty[..]).into(),
                        &tag.into(),
                    )
                };
                if ok.is_err() {
                    out.clear();
                    return Err(Error::AuthFailed);
                }
                Ok(index)
            }
        }
    }
}

/// Length of the RTP header (fixed part, CSRCs, header extension) of `packet`.
fn rtp_header_len(packet: &[u8]) -> Result<usize> {
    if packet.len() < 12 {
        return Err(Error::TooShort);
    }
    if packet[0] >> 6 != 2 {
        return Err(Error::BadVersion);
    }
    let mut len = 12 + 4 * usize::from(packet[0] & 0x0f);
    if packet[0] & 0x10 != 0 {
        if packet.len() < len + 4 {
            return Err(Error::TooShort);
        }
        let words = u16::from_be_bytes([packet[len + 2], packet[len + 3]]);
        len += 4 + 4 * usize::from(words);
    }
    if packet.len() < len {
        return Err(Error::TooShort);
    }
    Ok(len)
}

fn rtp_seq_ssrc(packet: &[u8]) -> (u16, u32) {
    (
        u16::from_be_bytes([packet[2], packet[3]]),
        u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]),
    )
}

fn rtcp_ssrc(packet: &[u8]) -> Result<u32> {
    if packet.len() < RTCP_HEADER_LEN {
        return Err(Error::TooShort);
    }
    if packet[0] >> 6 != 2 {
        return Err(Error::BadVersion);
    }
    Ok(u32::from_be_bytes([
        packet[4], packet[5], packet[6], packet[7],
    ]))
}

/// RFC 3711 §3.3.1 / Appendix A: the packet index (`ROC * 2^16 + SEQ`) of a packet with
/// sequence number `seq`, given the highest index `highest` seen so far. `None` when the
/// guess is a rollover counter below zero (a packet from before the stream began).
pub fn estimate_index(highest: u64, seq: u16) -> Option<u64> {
    let roc = highest >> 16;
    let s_l = highest as u16;
    let v = if s_l < 0x8000 {
        if seq > s_l && seq - s_l > 0x8000 {
            roc.checked_sub(1)?
        } else {
            roc
        }
    } else if s_l - 0x8000 > seq {
        roc + 1
    } else {
        roc
    };
    Some((v << 16) | u64::from(seq))
}

/// A sliding replay window (RFC 3711 §3.3.2) of [`REPLAY_WINDOW`] packets behind the
/// highest authenticated index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayWindow {
    /// Highest index authenticated so far.
    pub highest: u64,
    /// Bit `i` set: index `highest - i` was received.
    pub mask: u64,
}

impl ReplayWindow {
    /// A window whose highest (and only) received index is `index`.
    pub fn new(index: u64) -> ReplayWindow {
        ReplayWindow {
            highest: index,
            mask: 1,
        }
    }

    /// `Err(Replay)` if `index` was received already or is older than the window.
    pub fn check(&self, index: u64) -> Result<()> {
        if index > self.highest {
            return Ok(());
        }
        let behind = self.highest - index;
        if behind >= REPLAY_WINDOW || self.mask >> behind & 1 == 1 {
            return Err(Error::Replay);
        }
        Ok(())
    }

    /// Records `index` as received (after it authenticated).
    pub fn accept(&mut self, index: u64) {
        if index > self.highest {
            let ahead = index - self.highest;
            self.mask = if ahead >= REPLAY_WINDOW {
                0
            } else {
                self.mask << ahead
            };
            self.mask |= 1;
            self.highest = index;
        } else {
            let behind = self.highest - index;
            if behind < REPLAY_WINDOW {
                self.mask |= 1 << behind;
            }
        }
    }
}

/// The replicated state of an outgoing SRTP/SRTCP context (one DTLS association, any number
/// of SSRCs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SenderState {
    /// Our master key and salt (the "local" half of the exported keying material).
    pub keys: SrtpKeys,
    /// Per SSRC: the packet index (`ROC * 2^16 + SEQ`) of the highest RTP packet sent.
    pub rtp: BTreeMap<u32, u64>,
    /// Per SSRC: the SRTCP index the next SRTCP packet will carry.
    pub srtcp: BTreeMap<u32, u32>,
}

impl SenderState {
    /// The rollover counter of `ssrc`'s stream, if it sent anything.
    pub fn roc(&self, ssrc: u32) -> Option<u32> {
        self.rtp.get(&ssrc).map(|i| (i >> 16) as u32)
    }
}

/// The outgoing half of an SRTP association: protects RTP and RTCP.
///
/// Method families: constructors ([`new`](Self::new), [`from_state`](Self::from_state)), the
/// replicated state ([`state`](Self::state), [`resume`](Self::resume)), and per packet
/// [`protect_rtp`](Self::protect_rtp) / [`protect_rtcp`](Self::protect_rtcp).
#[derive(Clone)]
pub struct SrtpSender {
    state: SenderState,
    session: Session,
}

impl fmt::Debug for SrtpSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpSender")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl SrtpSender {
    /// A sender with no stream yet.
    pub fn new(keys: SrtpKeys) -> Result<SrtpSender> {
        SrtpSender::from_state(SenderState {
            keys,
            rtp: BTreeMap::new(),
            srtcp: BTreeMap::new(),
        })
    }

    /// A sender continuing from replicated state.
    pub fn from_state(state: SenderState) -> Result<SrtpSender> {
        let session = Session::new(&state.keys)?;
        Ok(SrtpSender { state, session })
    }

    /// The state to replicate.
    pub fn state(&self) -> &SenderState {
        &self.state
    }

    /// Continues `ssrc`'s stream after a takeover: `ext_seq` is the extended sequence number
    /// (`ROC * 2^16 + SEQ`, the ROC counting wraps since the stream's first packet) of the
    /// last RTP packet sent, and `srtcp_index` the SRTCP index the next SRTCP packet will
    /// carry — the last replicated one plus the caller's margin (see the module doc).
    /// Values are clamped to the index spaces (48 and 31 bits).
    pub fn resume(&mut self, ssrc: u32, ext_seq: u64, srtcp_index: u32) {
        self.state.rtp.insert(ssrc, ext_seq.min(MAX_RTP_INDEX));
        self.state
            .srtcp
            .insert(ssrc, srtcp_index.min(MAX_SRTCP_INDEX));
    }

    /// Protects the RTP packet `packet` into `out` (cleared first). A retransmission or a
    /// reordered packet (sequence number behind the highest sent) gets its own index.
    pub fn protect_rtp(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let hdr = rtp_header_len(packet)?;
        let (seq, ssrc) = rtp_seq_ssrc(packet);
        let index = match self.state.rtp.get(&ssrc) {
            Some(&highest) => estimate_index(highest, seq).ok_or(Error::IndexExhausted)?,
            None => u64::from(seq),
        };
        if index > MAX_RTP_INDEX {
            return Err(Error::IndexExhausted);
        }
        self.session.protect_rtp(packet, hdr, ssrc, index, out);
        let highest = self.state.rtp.entry(ssrc).or_insert(index);
        *highest = (*highest).max(index);
        Ok(())
    }

    /// Protects the (compound) RTCP packet `packet` into `out` (cleared first), with the
    /// next SRTCP index of the SSRC in its first header.
    pub fn protect_rtcp(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let ssrc = rtcp_ssrc(packet)?;
        let next = self.state.srtcp.entry(ssrc).or_insert(0);
        if *next > MAX_SRTCP_INDEX {
            return Err(Error::IndexExhausted);
        }
        let index = *next;
        *next += 1;
        self.session.protect_rtcp(packet, ssrc, index, out);
        Ok(())
    }
}

/// The replicated state of an incoming SRTP/SRTCP context.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiverState {
    /// The peer's master key and salt (the "remote" half of the exported keying material).
    pub keys: SrtpKeys,
    /// Per SSRC: the replay window over RTP packet indices (its `highest` carries the ROC).
    pub rtp: BTreeMap<u32, ReplayWindow>,
    /// Per SSRC: the replay window over SRTCP indices.
    pub srtcp: BTreeMap<u32, ReplayWindow>,
}

/// The incoming half of an SRTP association: authenticates, replay-checks and decrypts.
///
/// A stream's first packet is taken at rollover counter 0 (the peer's first packet); a
/// receiver that joins a stream later is told where it is with [`resume`](Self::resume).
#[derive(Clone)]
pub struct SrtpReceiver {
    state: ReceiverState,
    session: Session,
}

impl fmt::Debug for SrtpReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpReceiver")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl SrtpReceiver {
    /// A receiver that has seen no packet.
    pub fn new(keys: SrtpKeys) -> Result<SrtpReceiver> {
        SrtpReceiver::from_state(ReceiverState {
            keys,
            rtp: BTreeMap::new(),
            srtcp: BTreeMap::new(),
        })
    }

    /// A receiver continuing from replicated state.
    pub fn from_state(state: ReceiverState) -> Result<SrtpReceiver> {
        let session = Session::new(&state.keys)?;
        Ok(SrtpReceiver { state, session })
    }

    /// The state to replicate.
    pub fn state(&self) -> &ReceiverState {
        &self.state
    }

    /// Joins `ssrc`'s stream whose last packet had extended sequence number `ext_seq`
    /// (`ROC * 2^16 + SEQ`); its replay window starts empty behind it.
    pub fn resume(&mut self, ssrc: u32, ext_seq: u64) {
        let mut w = ReplayWindow::new(ext_seq.min(MAX_RTP_INDEX));
        w.mask = 0;
        self.state.rtp.insert(ssrc, w);
    }

    /// Authenticates, replay-checks and decrypts the SRTP packet `packet` into `out`
    /// (cleared first). The state changes only when the packet authenticates.
    pub fn unprotect_rtp(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<()> {
        out.clear();
        let hdr = rtp_header_len(packet)?;
        if packet.len() < hdr + self.state.keys.profile.rtp_overhead() {
            return Err(Error::TooShort);
        }
        let (seq, ssrc) = rtp_seq_ssrc(packet);
        let window = self.state.rtp.get(&ssrc);
        let index = match window {
            Some(w) => {
                let index = estimate_index(w.highest, seq).ok_or(Error::Replay)?;
                w.check(index)?;
                index
            }
            None => u64::from(seq),
        };
        self.session.unprotect_rtp(packet, hdr, ssrc, index, out)?;
        self.state
            .rtp
            .entry(ssrc)
            .and_modify(|w| w.accept(index))
            .or_insert_with(|| ReplayWindow::new(index));
        Ok(())
    }

    /// Authenticates, replay-checks and (if the E flag says so) decrypts the SRTCP packet
    /// `packet` into `out` (cleared first).
    pub fn unprotect_rtcp(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<()> {
        out.clear();
        let ssrc = rtcp_ssrc(packet)?;
        if packet.len() < RTCP_HEADER_LEN + self.state.keys.profile.rtcp_overhead() {
            return Err(Error::TooShort);
        }
        // Cheap replay rejection before the MAC: the index word is at a fixed place.
        let word_at = match self.state.keys.profile {
            Profile::Aes128CmHmacSha1_80 => packet.len() - 10 - SRTCP_INDEX_LEN,
            Profile::AeadAes128Gcm => packet.len() - SRTCP_INDEX_LEN,
        };
        let word = u32::from_be_bytes(
            packet[word_at..word_at + SRTCP_INDEX_LEN]
                .try_into()
                .expect("4"),
        );
        let claimed = u64::from(word & MAX_SRTCP_INDEX);
        if let Some(w) = self.state.srtcp.get(&ssrc) {
            w.check(claimed)?;
        }
        let index = u64::from(self.session.unprotect_rtcp(packet, ssrc, out)?);
        self.state
            .srtcp
            .entry(ssrc)
            .and_modify(|w| w.accept(index))
            .or_insert_with(|| ReplayWindow::new(index));
        Ok(())
    }
}

/// Known-answer hooks for the RFC vectors, which are given as session keys.
#[cfg(test)]
mod tests;
