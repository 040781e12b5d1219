//! SDP offer/answer for audio conferences: parse a client's offer, choose a codec, build
//! our answer or offer.
//!
//! API CONTRACT (fixed by the integrator; implementation in progress).

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};

/// Codecs the server implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CodecName {
    /// opus/48000/2
    Opus,
    /// PCMU/8000
    Pcmu,
    /// PCMA/8000
    Pcma,
}

/// Media direction as seen from the remote party's SDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// a=sendrecv (default)
    SendRecv,
    /// a=sendonly
    SendOnly,
    /// a=recvonly
    RecvOnly,
    /// a=inactive (or port 0 / c=0.0.0.0 hold)
    Inactive,
}

/// Result of negotiating a remote description against what we support.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Negotiated {
    /// Chosen codec (first of the offerer's list we support).
    pub codec: CodecName,
    /// Its payload type as used in the remote SDP.
    pub payload_type: u8,
    /// telephone-event payload type, if offered at the codec's clock rate.
    pub telephone_event_pt: Option<u8>,
    /// Remote a=ptime (default 20).
    pub ptime_ms: u32,
    /// Remote direction.
    pub direction: Direction,
    /// Remote RFC 6464 ssrc-audio-level extmap id, if offered.
    pub audio_level_ext_id: Option<u8>,
    /// Where the remote wants RTP (c= and m= port); may be replaced by symmetric RTP later.
    pub remote_rtp: SocketAddr,
    /// Where the remote wants RTCP (a=rtcp, or RTP port + 1, or the RTP port with a=rtcp-mux).
    pub remote_rtcp: SocketAddr,
    /// Remote accepted/offered a=rtcp-mux.
    pub rtcp_mux: bool,
}

/// Why an offer cannot be served.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SdpError {
    /// Not parseable SDP (-> 400).
    Malformed(String),
    /// No audio m-line, or no codec in common (-> 488).
    NotAcceptable(String),
}

impl std::fmt::Display for SdpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}
impl std::error::Error for SdpError {}

/// What we put into our SDP.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocalMedia {
    /// Media IP address (c=, o=).
    pub ip: IpAddr,
    /// Our RTP port (RTCP on port + 1 unless mux).
    pub rtp_port: u16,
    /// o= session id (random from the application's seed).
    pub session_id: u64,
    /// o= version, incremented on each new SDP of the session.
    pub session_version: u64,
}

/// Negotiate a remote offer (or an answer to our offer) against our codecs.
pub fn negotiate(remote_sdp: &str) -> Result<Negotiated, SdpError> {
    let _ = remote_sdp;
    todo!()
}

/// Build our SDP answer for a negotiated offer. `direction` is our direction
/// (the mirror of the remote's: sendonly -> recvonly, inactive -> inactive).
pub fn build_answer(local: &LocalMedia, neg: &Negotiated) -> String {
    let _ = (local, neg);
    todo!()
}

/// Build our SDP offer (for an offerless INVITE): Opus/48000/2 (useinbandfec=1), PCMU, PCMA,
/// telephone-event/48000 and /8000, ptime 20, sendrecv.
pub fn build_offer(local: &LocalMedia) -> String {
    let _ = local;
    todo!()
}
