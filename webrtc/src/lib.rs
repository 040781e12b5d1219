//! Understudy's sans-IO WebRTC transport: the pieces a browser participant needs between the
//! UDP socket and the mixer, written so that every byte of state a hot-standby backup must
//! continue is plain, serializable data this crate owns.
//!
//! For: SRTP/SRTCP (RFC 3711 AES_CM_128_HMAC_SHA1_80, RFC 7714 AEAD_AES_128_GCM) with sender
//! and receiver state (rollover counters, SRTCP indices, replay windows) a backup can resume
//! from; an ICE-lite responder for the browser's checks (`ice`); telling STUN, DTLS, RTP and
//! RTCP apart on one port (`mux`); the server side of the DTLS-SRTP handshake ([`dtls`], on
//! rtc-dtls), which holds its final flight until the exported keys are replicated; the WHIP
//! (RFC 9725) offer/answer SDP of an ICE-lite, DTLS-passive MCU with Opus audio and VP8
//! video ([`sdp`]); telling a browser's bundled audio and video apart after SRTP
//! ([`demux`]); one participant's transport ([`peer`]) and every participant on one port ([`transport`]).
//! Not for: sockets, clocks or randomness (the driver in `mcu` owns those), the WHIP HTTP
//! exchange, codecs or mixing (`mixer`), or replication itself (`ft-sync` carries what this crate
//! serializes).
//!
//! # Driver loop
//!
//! A browser's DTLS datagrams go to its [`dtls::DtlsServer`]; its [`dtls::DtlsEvent::Keyed`]
//! carries the exported keying material, which the driver replicates to the backup before it
//! calls [`dtls::DtlsServer::release_final_flight`] (see [`dtls`] for that loop).
//!
//! An outgoing stream is protected by an [`srtp::SrtpSender`], an incoming one checked by an
//! [`srtp::SrtpReceiver`]; both are built from the keys DTLS-SRTP exported. Their state is
//! replicated as it is ([`srtp::SenderState`] derives serde), and a backup that took over
//! continues an outgoing stream with [`srtp::SrtpSender::resume`].
//!
//! ```
//! use webrtc_core::srtp::{split_keying_material, DtlsRole, Profile, SrtpReceiver, SrtpSender};
//!
//! // 2 * (16 + 14) bytes exported by DTLS with the label "EXTRACTOR-dtls_srtp".
//! let material = [7u8; 60];
//! let profile = Profile::Aes128CmHmacSha1_80;
//! let (ours, theirs) = split_keying_material(profile, &material, DtlsRole::Server)?;
//! let mut tx = SrtpSender::new(ours.clone())?;
//! let mut rx = SrtpReceiver::new(ours)?; // the browser's side, for the example
//! let _ = theirs; // would key our receiver for the browser's stream
//!
//! let mut rtp = vec![0x80, 111, 0x12, 0x34, 0, 0, 0, 160, 0xca, 0xfe, 0xba, 0xbe];
//! rtp.extend_from_slice(&[0x55; 160]);
//! let mut wire = Vec::new();
//! tx.protect_rtp(&rtp, &mut wire)?;
//! let mut back = Vec::new();
//! rx.unprotect_rtp(&wire, &mut back)?;
//! assert_eq!(back, rtp);
//!
//! // Replicate `tx.state()`; after a takeover the backup continues the stream where the
//! // mixer's extended sequence number says it is, plus a margin for SRTCP:
//! let mut backup = SrtpSender::from_state(postcard_like_copy(tx.state()))?;
//! backup.resume(0xcafebabe, 0x1234, 1 + 100);
//! # fn postcard_like_copy(s: &webrtc_core::srtp::SenderState) -> webrtc_core::srtp::SenderState { s.clone() }
//! # Ok::<(), webrtc_core::Error>(())
//! ```
#![deny(missing_docs)]

pub mod demux;
pub mod dtls;
pub mod ice;
pub mod mux;
pub mod peer;
pub mod sdp;
pub mod srtp;
pub mod transport;

/// Everything that can go wrong in this crate. Never a panic: any input bytes end up here.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The packet is shorter than its headers, its SRTCP index or its authentication tag.
    TooShort,
    /// Not an RTP/RTCP version 2 packet (first two bits are not `10`).
    BadVersion,
    /// The authentication tag does not verify (forged, corrupted, wrong key or wrong
    /// rollover counter).
    AuthFailed,
    /// The packet index was seen already or is older than the replay window.
    Replay,
    /// A DTLS-SRTP protection profile id this crate does not implement.
    UnknownProfile(u16),
    /// A master key, master salt or keying material of the wrong length.
    KeyLength {
        /// The length the profile requires.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// The packet index space of the keys is used up (2^48 RTP packets or 2^31 SRTCP
    /// packets per SSRC): the session must be rekeyed.
    IndexExhausted,
    /// The DTLS handshake or certificate handling failed.
    Dtls(dtls::DtlsError),
}

impl From<dtls::DtlsError> for Error {
    fn from(e: dtls::DtlsError) -> Self {
        Error::Dtls(e)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::TooShort => write!(f, "packet too short"),
            Error::BadVersion => write!(f, "not an RTP/RTCP version 2 packet"),
            Error::AuthFailed => write!(f, "SRTP authentication failed"),
            Error::Replay => write!(f, "SRTP replay or packet too old"),
            Error::UnknownProfile(id) => write!(f, "unknown SRTP protection profile {id:#06x}"),
            Error::KeyLength { expected, got } => {
                write!(f, "key material of {got} bytes, {expected} expected")
            }
            Error::IndexExhausted => write!(f, "SRTP index space exhausted, rekey"),
            Error::Dtls(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Dtls(e) => Some(e),
            _ => None,
        }
    }
}
