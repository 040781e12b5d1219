//! WebRTC SDP for WHIP (RFC 9725): read a browser's offer, write the answer of an ICE-lite,
//! DTLS-passive MCU with Opus audio and (when the driver serves it) voice-switched VP8 video.
//!
//! [`parse_offer`] keeps from the offer what the transport and the mixer need ([`Offer`]: ICE
//! credentials, DTLS fingerprint and role, the Opus payload type, the audio-level extension id,
//! the browser's SSRC, and every m= line so that the answer can decline them);
//! [`build_answer`] writes the answer for it ([`AnswerParams`]: our credentials, certificate
//! fingerprint, the one UDP candidate shared by all browsers, our SSRC).
//!
//! Policy:
//! - The FIRST enabled audio m= line that offers `opus/48000/2` is accepted; every other line
//!   (other audio lines, video, data channels, anything else) is declined with port 0, same
//!   media type and transport, its `a=mid` kept and left out of the BUNDLE group (RFC 3264 §6,
//!   RFC 8843 §7.3.3). An audio line with port 0 is disabled unless it is `a=bundle-only`.
//!   Chromium 156 accepts such answers, with one exception: under `bundlePolicy:
//!   "max-bundle"` it refuses to have the FIRST line of its BUNDLE group declined ("Failed to
//!   setup RTCP mux"), so a max-bundle offer with video before audio fails there (its default
//!   `balanced` policy works; WHIP clients add the audio transceiver first).
//! - The accepted line must be `UDP/TLS/RTP/SAVPF` with `a=rtcp-mux`, ICE credentials and a
//!   `sha-256` fingerprint; `a=ice-ufrag`, `a=ice-pwd`, `a=fingerprint` and `a=setup` may be at
//!   session or media level, the media level wins. We are always DTLS passive, so an offer
//!   that is itself `setup:passive` (or `holdconn`) is refused; a missing `a=setup` means
//!   `active` (RFC 4145 §4).
//! - Video ([`VideoOffer`]): the FIRST enabled video m= line that offers `VP8/90000` on
//!   `UDP/TLS/RTP/SAVPF` with `a=rtcp-mux`, whose mid is in the same BUNDLE group as the audio
//!   line and whose ICE credentials and fingerprint (if given at media level) are the audio
//!   line's, is accepted when the answer has [`AnswerParams::video`]: it rides the audio's
//!   one ICE/DTLS transport (BUNDLE, RFC 8843), so an unbundled video line (which would need
//!   a transport of its own) is declined. The answer lists the VP8 payload type only: RTX,
//!   RED, ULPFEC, the other codecs and every header extension (transport-cc, abs-send-time,
//!   simulcast's rid/mid) are left out, so the browser sends plain VP8 on one SSRC and
//!   repairs with NACK retransmissions on that SSRC (the forwarder's cache answers NACKs
//!   from receivers). Its RTCP feedback is the offered subset of `nack`, `nack pli`,
//!   `ccm fir` and `goog-remb` (never `transport-cc`). An offer with `a=simulcast` / `a=rid`
//!   gets no simulcast in the answer: the browser then sends one layer.
//! - Any direction is accepted: a `recvonly` browser is a listening participant and gets a
//!   `sendonly` answer, a `sendonly` one a `recvonly` answer (it talks, it does not hear the
//!   room), `inactive` is answered `inactive`.
//! - Hostile input never panics: offers over [`MAX_OFFER_LEN`] bytes, control characters other
//!   than line ends, and malformed values of the attributes we use or echo (mid, ICE
//!   credentials, fingerprint, SSRC, cname) are refused as [`OfferError::Malformed`], so
//!   nothing the answer echoes can break its syntax. So is an m= line of a media type or
//!   transport the `sdp` crate does not know (e.g. `TCP/DTLS/SCTP`): browsers offer audio,
//!   video and `UDP/DTLS/SCTP` data channels only.

use std::collections::HashSet;
use std::io::Cursor;
use std::net::IpAddr;

use sdp::description::common::{Address, Attribute, ConnectionInformation};
use sdp::description::media::{MediaDescription, MediaName, RangedPort};
use sdp::description::session::{Origin, SessionDescription, TimeDescription, Timing};
use serde::{Deserialize, Serialize};

/// Largest offer [`parse_offer`] reads (64 KiB); a Chromium offer with audio, video and a
/// data channel is about 6 KiB.
pub const MAX_OFFER_LEN: usize = 64 * 1024;

/// RFC 6464 client-to-mixer audio level header extension URI.
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// The only transport of an accepted line (RFC 8829 §5.1.2).
pub const DTLS_SRTP_PROTO: &str = "UDP/TLS/RTP/SAVPF";

/// Longest `a=mid` accepted (RFC 8843 only requires a token; browsers use one or two
/// characters, other WHIP clients names like `audio0`).
const MAX_MID_LEN: usize = 32;

/// Longest CNAME accepted (an RTCP SDES item is at most 255 bytes).
const MAX_CNAME_LEN: usize = 255;

/// ICE credentials (RFC 8839 §5.4) of one side: `a=ice-ufrag` (4 to 256 ice-chars) and
/// `a=ice-pwd` (22 to 256).
pub use crate::ice::Credentials as IceParams;

/// A certificate fingerprint (RFC 8122 §5) as written in the SDP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Hash function name as offered (`sha-256`, any case).
    pub algorithm: String,
    /// Colon-separated upper- or lower-case hex bytes, as offered.
    pub value: String,
}

impl Fingerprint {
    /// The 32 digest bytes, if this is a well-formed `sha-256` fingerprint (always the case
    /// for the fingerprint of an [`Offer`] that [`parse_offer`] returned).
    pub fn sha256(&self) -> Option<[u8; 32]> {
        if !self.algorithm.eq_ignore_ascii_case("sha-256") {
            return None;
        }
        let mut out = [0u8; 32];
        let mut parts = self.value.split(':');
        for byte in &mut out {
            let p = parts.next()?;
            if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            *byte = u8::from_str_radix(p, 16).ok()?;
        }
        parts.next().is_none().then_some(out)
    }
}

/// DTLS role attribute (`a=setup`, RFC 4145 §4, RFC 8842 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Setup {
    /// `active`: the offerer will be the DTLS client (also the default when absent).
    Active,
    /// `passive`: the offerer wants to be the DTLS server (refused: so are we).
    Passive,
    /// `actpass`: the answerer chooses (what browsers offer).
    ActPass,
    /// `holdconn`: no connection yet (refused).
    HoldConn,
}

/// Media direction (RFC 3264 §5.1), as written in an SDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// `a=sendrecv` (the default).
    SendRecv,
    /// `a=sendonly`.
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `a=inactive`.
    Inactive,
}

impl Direction {
    /// The direction of the answer to an offer with this one (RFC 3264 §6.1): sendonly ->
    /// recvonly, recvonly -> sendonly, the others unchanged.
    pub fn mirror(self) -> Direction {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }

    /// Whether the side with this direction sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// The SDP attribute name (`sendrecv`, ...).
    pub fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
}

/// RTCP feedback a browser said it supports for its VP8 (`a=rtcp-fb:PT ...` or `a=rtcp-fb:*
/// ...`): what the answer repeats and what a forwarder may send it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoFeedback {
    /// Generic NACK (RFC 4585 `nack`).
    pub nack: bool,
    /// Picture loss indication (`nack pli`).
    pub pli: bool,
    /// Full intra request (RFC 5104 `ccm fir`).
    pub fir: bool,
    /// Receiver estimated maximum bitrate (`goog-remb`).
    pub remb: bool,
}

/// The accepted video m= line of an offer (see the module docs for when one is).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoOffer {
    /// Index of the line among the offer's m= lines.
    pub index: usize,
    /// Its `a=mid` (a bundled line always has one).
    pub mid: String,
    /// The offer's payload type for `VP8/90000` (used both ways).
    pub vp8_pt: u8,
    /// The feedback it supports.
    pub feedback: VideoFeedback,
    /// The browser's video SSRC (the first of an `a=ssrc-group:FID`, else the first
    /// `a=ssrc`), if given.
    pub ssrc: Option<u32>,
    /// The offered direction of the line (the answer mirrors it).
    pub direction: Direction,
}

/// One offered m= line, with what its answer line needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaLine {
    /// Media type (`audio`, `video`, `application`, ...), as offered.
    pub media: String,
    /// Transport (`UDP/TLS/RTP/SAVPF`, `UDP/DTLS/SCTP`, ...), as offered.
    pub proto: String,
    /// `a=mid`, if offered.
    pub mid: Option<String>,
    /// The first offered format (a declined answer line repeats it, RFC 3264 §6).
    pub format: String,
    /// Whether this is the accepted audio line (exactly one line of an [`Offer`]).
    pub accepted: bool,
}

/// What an answer to a browser's offer needs, and what the transport and mixer need to
/// serve it. Plain data: the control plane replicates it to the backup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    /// The browser's ICE credentials (its STUN checks carry `<our ufrag>:<ufrag>` and are
    /// answered with our password; ours are in [`AnswerParams`]).
    pub ice: IceParams,
    /// The browser's `sha-256` certificate fingerprint, to check its DTLS certificate against.
    pub fingerprint: Fingerprint,
    /// The offered DTLS role: [`Setup::ActPass`] or [`Setup::Active`] (we are passive).
    pub setup: Setup,
    /// `a=mid` of the accepted audio line, if it has one.
    pub audio_mid: Option<String>,
    /// Index of the accepted audio line among the offer's m= lines.
    pub audio_index: usize,
    /// The offer's payload type for `opus/48000/2`.
    pub opus_pt: u8,
    /// The offer's `a=fmtp` parameters for Opus (after the payload type), if any.
    pub opus_fmtp: Option<String>,
    /// Payload type of `telephone-event/48000` (RFC 4733), if offered on the audio line.
    pub telephone_event_pt: Option<u8>,
    /// RFC 6464 `ssrc-audio-level` header extension id, if offered.
    pub audio_level_ext_id: Option<u8>,
    /// The browser's audio SSRC (first `a=ssrc` of the audio line), if given.
    pub ssrc: Option<u32>,
    /// The CNAME given for [`Offer::ssrc`], if any.
    pub cname: Option<String>,
    /// The offered direction of the audio line (the answer mirrors it).
    pub direction: Direction,
    /// `a=rtcp-mux` on the audio line (always true: offers without it are refused).
    pub rtcp_mux: bool,
    /// Whether the offer's `a=group:BUNDLE` contains the audio mid (then the answer's group
    /// is exactly that mid).
    pub bundled: bool,
    /// Every offered m= line, in order; the answer has one line for each.
    pub media: Vec<MediaLine>,
    /// The video line the answer accepts when the driver serves video, if any.
    #[serde(default)]
    pub video: Option<VideoOffer>,
    /// The offer's BUNDLE group that holds the audio mid, in the offer's order.
    #[serde(default)]
    pub bundle_group: Vec<String>,
}

/// Why an offer is refused. Every variant has a human reason ([`std::fmt::Display`]) fit
/// for a WHIP error response.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OfferError {
    /// Not SDP, too large, control characters, or a malformed value of an attribute used.
    Malformed(String),
    /// No enabled audio m= line.
    NoAudio,
    /// No audio m= line offers `opus/48000/2`.
    NoOpus,
    /// No `a=fingerprint` at media or session level.
    NoFingerprint,
    /// Fingerprints are offered, but none with `sha-256`.
    UnsupportedFingerprint,
    /// `a=ice-ufrag` or `a=ice-pwd` missing.
    NoIceCredentials,
    /// The audio line lacks `a=rtcp-mux` (RFC 8858: required by WebRTC, we have one port).
    NoRtcpMux,
    /// `a=setup:passive` or `holdconn`: we are DTLS passive only.
    BadSetup,
    /// The audio line's transport is not `UDP/TLS/RTP/SAVPF`.
    NotDtlsSrtp,
}

impl std::fmt::Display for OfferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OfferError::Malformed(why) => write!(f, "malformed SDP offer: {why}"),
            OfferError::NoAudio => write!(f, "the offer has no enabled audio m-line"),
            OfferError::NoOpus => write!(f, "no audio m-line offers opus/48000/2"),
            OfferError::NoFingerprint => write!(f, "the offer has no a=fingerprint"),
            OfferError::UnsupportedFingerprint => {
                write!(f, "only sha-256 certificate fingerprints are supported")
            }
            OfferError::NoIceCredentials => write!(f, "a=ice-ufrag or a=ice-pwd missing"),
            OfferError::NoRtcpMux => write!(f, "the audio m-line lacks a=rtcp-mux"),
            OfferError::BadSetup => write!(
                f,
                "a=setup must be actpass or active: the server is DTLS passive only"
            ),
            OfferError::NotDtlsSrtp => {
                write!(f, "the audio m-line's transport is not UDP/TLS/RTP/SAVPF")
            }
        }
    }
}

impl std::error::Error for OfferError {}

fn malformed(why: impl Into<String>) -> OfferError {
    OfferError::Malformed(why.into())
}

/// The values of every attribute `key` (case-insensitive; `""` for a flag).
fn attr<'a>(attrs: &'a [Attribute], key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    attrs
        .iter()
        .filter(move |a| a.key.eq_ignore_ascii_case(key))
        .map(|a| a.value.as_deref().unwrap_or("").trim())
}

fn has(attrs: &[Attribute], key: &str) -> bool {
    attr(attrs, key).next().is_some()
}

/// The first value of `key` at media level, else at session level.
fn media_or_session<'a>(
    m: &'a MediaDescription,
    sd: &'a SessionDescription,
    key: &'a str,
) -> Option<&'a str> {
    attr(&m.attributes, key)
        .next()
        .or_else(|| attr(&sd.attributes, key).next())
}

/// RFC 4566 `token-char`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            matches!(b, b'!' | b'#'..=b'\'' | b'*' | b'+' | b'-' | b'.' | b'0'..=b'9'
                | b'A'..=b'Z' | b'^'..=b'~')
        })
}

/// RFC 8839 `ice-char` string of `min..=256` characters.
fn ice_chars(s: &str, min: usize) -> bool {
    (min..=256).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// `(payload type, encoding name, clock rate, channels)` of an `a=rtpmap` value.
fn rtpmap(v: &str) -> Option<(u8, &str, u32, Option<u32>)> {
    let (pt, enc) = v.split_once(char::is_whitespace)?;
    let pt: u8 = pt.parse().ok().filter(|pt| *pt <= 127)?;
    let mut parts = enc.trim().split('/');
    let name = parts.next()?;
    let rate = parts.next()?.parse().ok()?;
    let channels = match parts.next() {
        Some(c) => Some(c.parse().ok()?),
        None => None,
    };
    parts.next().is_none().then_some((pt, name, rate, channels))
}

/// The payload type listed in `m`'s formats whose rtpmap is `name/rate[/channels]`.
fn find_codec(m: &MediaDescription, name: &str, rate: u32, channels: Option<u32>) -> Option<u8> {
    let maps: Vec<_> = attr(&m.attributes, "rtpmap").filter_map(rtpmap).collect();
    m.media_name
        .formats
        .iter()
        .filter_map(|f| f.parse::<u8>().ok())
        .find(|pt| {
            maps.iter()
                .find(|(p, ..)| p == pt)
                .is_some_and(|(_, n, r, c)| {
                    n.eq_ignore_ascii_case(name)
                        && *r == rate
                        && c.or(Some(1)) == channels.or(Some(1))
                })
        })
}

fn direction_of(attrs: &[Attribute]) -> Option<Direction> {
    attrs
        .iter()
        .rev()
        .find_map(|a| match a.key.to_ascii_lowercase().as_str() {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        })
}

/// Every m= line as the answer needs it; refuses mids that are not tokens or repeat.
fn media_lines(sd: &SessionDescription) -> Result<Vec<MediaLine>, OfferError> {
    let mut mids = HashSet::new();
    sd.media_descriptions
        .iter()
        .map(|m| {
            let mid = match attr(&m.attributes, "mid").next() {
                Some(mid) if is_token(mid) && mid.len() <= MAX_MID_LEN => {
                    if !mids.insert(mid) {
                        return Err(malformed(format!("a=mid:{mid} repeated")));
                    }
                    Some(mid.to_string())
                }
                Some(_) => return Err(malformed("a=mid is not a short token")),
                None => None,
            };
            let format = m
                .media_name
                .formats
                .first()
                .filter(|f| is_token(f))
                .ok_or_else(|| malformed("m= line without a valid format"))?;
            Ok(MediaLine {
                media: m.media_name.media.clone(),
                proto: m.media_name.protos.join("/"),
                mid,
                format: format.clone(),
                accepted: false,
            })
        })
        .collect()
}

fn ice_params(m: &MediaDescription, sd: &SessionDescription) -> Result<IceParams, OfferError> {
    let (Some(ufrag), Some(pwd)) = (
        media_or_session(m, sd, "ice-ufrag"),
        media_or_session(m, sd, "ice-pwd"),
    ) else {
        return Err(OfferError::NoIceCredentials);
    };
    if !ice_chars(ufrag, 4) || !ice_chars(pwd, 22) {
        return Err(malformed(
            "a=ice-ufrag or a=ice-pwd is not RFC 8839 ice-chars",
        ));
    }
    Ok(IceParams {
        ufrag: ufrag.into(),
        pwd: pwd.into(),
    })
}

fn fingerprint(m: &MediaDescription, sd: &SessionDescription) -> Result<Fingerprint, OfferError> {
    let media: Vec<&str> = attr(&m.attributes, "fingerprint").collect();
    let all = if media.is_empty() {
        attr(&sd.attributes, "fingerprint").collect()
    } else {
        media
    };
    if all.is_empty() {
        return Err(OfferError::NoFingerprint);
    }
    let (algorithm, value) = all
        .iter()
        .filter_map(|v| v.split_once(char::is_whitespace))
        .find(|(alg, _)| alg.eq_ignore_ascii_case("sha-256"))
        .ok_or(OfferError::UnsupportedFingerprint)?;
    let fp = Fingerprint {
        algorithm: algorithm.into(),
        value: value.trim().into(),
    };
    fp.sha256()
        .ok_or_else(|| malformed("a=fingerprint:sha-256 is not 32 hex bytes"))?;
    Ok(fp)
}

fn setup(m: &MediaDescription, sd: &SessionDescription) -> Result<Setup, OfferError> {
    match media_or_session(m, sd, "setup").map(str::to_ascii_lowercase) {
        None => Ok(Setup::Active),
        Some(s) => match s.as_str() {
            "actpass" => Ok(Setup::ActPass),
            "active" => Ok(Setup::Active),
            "passive" | "holdconn" => Err(OfferError::BadSetup),
            _ => Err(malformed("unknown a=setup value")),
        },
    }
}

/// `(ssrc, cname)` of the line's first `a=ssrc`.
fn ssrc_cname(m: &MediaDescription) -> Result<(Option<u32>, Option<String>), OfferError> {
    let mut ssrc = None;
    let mut cname = None;
    for v in attr(&m.attributes, "ssrc") {
        let (id, rest) = v.split_once(' ').unwrap_or((v, ""));
        let id: u32 = id
            .parse()
            .map_err(|_| malformed("a=ssrc id is not a 32-bit number"))?;
        if *ssrc.get_or_insert(id) != id || cname.is_some() {
            continue;
        }
        if let Some(c) = rest.trim().strip_prefix("cname:") {
            if c.is_empty() || c.len() > MAX_CNAME_LEN {
                return Err(malformed("a=ssrc cname empty or over 255 bytes"));
            }
            cname = Some(c.to_string());
        }
    }
    Ok((ssrc, cname))
}

fn audio_level_id(m: &MediaDescription, sd: &SessionDescription) -> Result<Option<u8>, OfferError> {
    for v in attr(&m.attributes, "extmap").chain(attr(&sd.attributes, "extmap")) {
        let mut it = v.split_whitespace();
        let (Some(id), Some(uri)) = (it.next(), it.next()) else {
            continue;
        };
        if uri.eq_ignore_ascii_case(AUDIO_LEVEL_URI) {
            let id = id.split('/').next().and_then(|i| i.parse::<u8>().ok());
            return match id {
                Some(id) if id > 0 => Ok(Some(id)),
                _ => Err(malformed("ssrc-audio-level extmap id not in 1..=255")),
            };
        }
    }
    Ok(None)
}

/// The `a=rtcp-fb` lines for payload type `pt` (or `*`).
fn video_feedback(attrs: &[Attribute], pt: u8) -> VideoFeedback {
    let mut fb = VideoFeedback::default();
    for v in attr(attrs, "rtcp-fb") {
        let mut it = v.split_whitespace();
        let for_pt = it
            .next()
            .is_some_and(|p| p == "*" || p.parse::<u8>().ok() == Some(pt));
        if !for_pt {
            continue;
        }
        let kind = it.next().unwrap_or("").to_ascii_lowercase();
        let param = it.next().map(str::to_ascii_lowercase);
        match (kind.as_str(), param.as_deref()) {
            ("nack", None) => fb.nack = true,
            ("nack", Some("pli")) => fb.pli = true,
            ("ccm", Some("fir")) => fb.fir = true,
            ("goog-remb", _) => fb.remb = true,
            _ => {}
        }
    }
    fb
}

/// The primary SSRC of a video line: the first of its `a=ssrc-group:FID`, else its first
/// `a=ssrc`.
fn video_ssrc(m: &MediaDescription) -> Result<Option<u32>, OfferError> {
    for g in attr(&m.attributes, "ssrc-group") {
        let mut it = g.split_whitespace();
        if it.next().is_some_and(|s| s.eq_ignore_ascii_case("FID")) {
            if let Some(first) = it.next() {
                return first
                    .parse()
                    .map(Some)
                    .map_err(|_| malformed("a=ssrc-group id is not a 32-bit number"));
            }
        }
    }
    Ok(ssrc_cname(m)?.0)
}

/// The video line to accept, if any (see the module docs): the first enabled video line
/// with VP8 that can share the audio line's transport.
fn accepted_video(
    sd: &SessionDescription,
    media: &[MediaLine],
    group: &[String],
    audio: &MediaDescription,
) -> Result<Option<VideoOffer>, OfferError> {
    for (index, m) in sd.media_descriptions.iter().enumerate() {
        let enabled = m.media_name.port.value != 0 || has(&m.attributes, "bundle-only");
        if m.media_name.media != "video" || !enabled {
            continue;
        }
        let Some(vp8_pt) = find_codec(m, "VP8", 90000, None) else {
            continue;
        };
        let Some(mid) = media.get(index).and_then(|l| l.mid.clone()) else {
            continue;
        };
        let same = |key: &str| {
            attr(&m.attributes, key)
                .next()
                .is_none_or(|v| Some(v) == media_or_session(audio, sd, key))
        };
        if m.media_name.protos.join("/") != DTLS_SRTP_PROTO
            || !has(&m.attributes, "rtcp-mux")
            || !group.contains(&mid)
            || !same("ice-ufrag")
            || !same("ice-pwd")
            || !same("fingerprint")
        {
            continue;
        }
        return Ok(Some(VideoOffer {
            index,
            mid,
            vp8_pt,
            feedback: video_feedback(&m.attributes, vp8_pt),
            ssrc: video_ssrc(m)?,
            direction: direction_of(&m.attributes)
                .or_else(|| direction_of(&sd.attributes))
                .unwrap_or(Direction::SendRecv),
        }));
    }
    Ok(None)
}

/// Parse a browser's WHIP offer and decide what to accept (see the module docs for the
/// policy). Never panics, whatever the input.
pub fn parse_offer(sdp: &str) -> Result<Offer, OfferError> {
    if sdp.len() > MAX_OFFER_LEN {
        return Err(malformed(format!(
            "{} bytes, at most {MAX_OFFER_LEN} accepted",
            sdp.len()
        )));
    }
    for line in sdp.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.chars().any(char::is_control) {
            return Err(malformed("control character in a line"));
        }
    }
    let sd = SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
        .map_err(|e| malformed(e.to_string()))?;
    let mut media = media_lines(&sd)?;

    let enabled_audio = |m: &&MediaDescription| {
        m.media_name.media == "audio"
            && (m.media_name.port.value != 0 || has(&m.attributes, "bundle-only"))
    };
    if !sd.media_descriptions.iter().any(|m| enabled_audio(&m)) {
        return Err(OfferError::NoAudio);
    }
    let (audio_index, m, opus_pt) = sd
        .media_descriptions
        .iter()
        .enumerate()
        .filter(|(_, m)| enabled_audio(m))
        .find_map(|(i, m)| Some((i, m, find_codec(m, "opus", 48000, Some(2))?)))
        .ok_or(OfferError::NoOpus)?;

    if m.media_name.protos.join("/") != DTLS_SRTP_PROTO {
        return Err(OfferError::NotDtlsSrtp);
    }
    if !has(&m.attributes, "rtcp-mux") {
        return Err(OfferError::NoRtcpMux);
    }
    let ice = ice_params(m, &sd)?;
    let fingerprint = fingerprint(m, &sd)?;
    let setup = setup(m, &sd)?;
    let (ssrc, cname) = ssrc_cname(m)?;

    let opus_fmtp = attr(&m.attributes, "fmtp").find_map(|v| {
        let (pt, params) = v.split_once(char::is_whitespace)?;
        (pt.parse::<u8>().ok()? == opus_pt).then(|| params.trim().to_string())
    });
    let audio_mid = media.get(audio_index).and_then(|l| l.mid.clone());
    let bundle_group: Vec<String> = audio_mid
        .as_deref()
        .and_then(|mid| {
            attr(&sd.attributes, "group").find_map(|g| {
                let tokens: Vec<&str> = g.split_whitespace().collect();
                (tokens.first() == Some(&"BUNDLE") && tokens[1..].contains(&mid))
                    .then(|| tokens[1..].iter().map(|t| t.to_string()).collect())
            })
        })
        .unwrap_or_default();
    let bundled = !bundle_group.is_empty();
    let video = accepted_video(&sd, &media, &bundle_group, m)?;
    if let Some(line) = media.get_mut(audio_index) {
        line.accepted = true;
    }
    Ok(Offer {
        ice,
        fingerprint,
        setup,
        audio_mid,
        audio_index,
        opus_pt,
        opus_fmtp,
        telephone_event_pt: find_codec(m, "telephone-event", 48000, None),
        audio_level_ext_id: audio_level_id(m, &sd)?,
        ssrc,
        cname,
        direction: direction_of(&m.attributes)
            .or_else(|| direction_of(&sd.attributes))
            .unwrap_or(Direction::SendRecv),
        rtcp_mux: true,
        bundled,
        media,
        video,
        bundle_group,
    })
}

/// What our answer says about us. The strings are ours (not from the offer) and must be
/// SDP-safe: no spaces in `ice_ufrag`, `ice_pwd`, `cname` and the msid parts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerParams {
    /// `o=` session id.
    pub session_id: u64,
    /// `o=` session version.
    pub session_version: u64,
    /// Our ICE username fragment.
    pub ice_ufrag: String,
    /// Our ICE password.
    pub ice_pwd: String,
    /// Our DTLS certificate's SHA-256 fingerprint, `AB:CD:...` (32 bytes).
    pub fingerprint_sha256: String,
    /// The one UDP address every browser sends to (host candidate, `c=` line).
    pub candidate: std::net::SocketAddr,
    /// The SSRC we send this participant's mix on.
    pub ssrc: u32,
    /// Our RTCP CNAME.
    pub cname: String,
    /// `a=msid` stream id.
    pub msid_stream: String,
    /// `a=msid` track id.
    pub msid_track: String,
    /// Our video stream to this participant; `None`: video is not served, every video line
    /// is declined.
    #[serde(default)]
    pub video: Option<VideoAnswer>,
}

/// What the answer's video line says about the stream we send.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoAnswer {
    /// The SSRC of the voice-switched stream we send the participant.
    pub ssrc: u32,
    /// `a=msid` track id (the stream id is [`AnswerParams::msid_stream`]).
    pub msid_track: String,
}

fn a(key: &str, value: impl Into<String>) -> Attribute {
    Attribute::new(key.into(), Some(value.into()))
}

fn flag(key: &str) -> Attribute {
    Attribute::new(key.into(), None)
}

fn connection(ip: IpAddr) -> ConnectionInformation {
    ConnectionInformation {
        network_type: "IN".into(),
        address_type: if ip.is_ipv4() { "IP4" } else { "IP6" }.into(),
        address: Some(Address {
            address: ip.to_string(),
            ttl: None,
            range: None,
        }),
    }
}

fn media_name(line: &MediaLine, port: u16, formats: Vec<String>) -> MediaName {
    MediaName {
        media: line.media.clone(),
        port: RangedPort {
            value: port as isize,
            range: None,
        },
        protos: line.proto.split('/').map(str::to_string).collect(),
        formats,
    }
}

fn audio_answer(offer: &Offer, line: &MediaLine, p: &AnswerParams) -> MediaDescription {
    let ip = p.candidate.ip();
    let direction = offer.direction.mirror();
    let mut formats = vec![offer.opus_pt.to_string()];
    let mut attrs = Vec::new();
    if let Some(mid) = &line.mid {
        attrs.push(a("mid", mid.clone()));
    }
    attrs.push(flag(direction.attribute()));
    attrs.push(flag("rtcp-mux"));
    attrs.push(a("rtpmap", format!("{} opus/48000/2", offer.opus_pt)));
    attrs.push(a(
        "fmtp",
        format!("{} minptime=10;useinbandfec=1", offer.opus_pt),
    ));
    if let Some(te) = offer.telephone_event_pt {
        formats.push(te.to_string());
        attrs.push(a("rtpmap", format!("{te} telephone-event/48000")));
    }
    if let Some(id) = offer.audio_level_ext_id {
        attrs.push(a("extmap", format!("{id} {AUDIO_LEVEL_URI}")));
    }
    transport_attrs(&mut attrs, p, direction, p.ssrc, &p.msid_track);
    MediaDescription {
        media_name: media_name(line, p.candidate.port(), formats),
        connection_information: Some(connection(ip)),
        attributes: attrs,
        ..Default::default()
    }
}

/// ICE, DTLS, our stream (when we send) and the candidate: the same on every bundled line.
fn transport_attrs(
    attrs: &mut Vec<Attribute>,
    p: &AnswerParams,
    direction: Direction,
    ssrc: u32,
    track: &str,
) {
    let ip = p.candidate.ip();
    attrs.push(a("ice-ufrag", p.ice_ufrag.clone()));
    attrs.push(a("ice-pwd", p.ice_pwd.clone()));
    attrs.push(a(
        "fingerprint",
        format!("sha-256 {}", p.fingerprint_sha256),
    ));
    attrs.push(a("setup", "passive"));
    if direction.sends() {
        let msid = format!("{} {track}", p.msid_stream);
        attrs.push(a("ssrc", format!("{ssrc} cname:{}", p.cname)));
        attrs.push(a("ssrc", format!("{ssrc} msid:{msid}")));
        attrs.push(a("msid", msid));
    }
    attrs.push(a(
        "candidate",
        format!("1 1 udp 2130706431 {ip} {} typ host", p.candidate.port()),
    ));
    attrs.push(flag("end-of-candidates"));
}

/// The accepted video line: VP8 only (no RTX, RED, FEC, header extensions), the offered
/// subset of nack / nack pli / ccm fir / goog-remb.
fn video_answer(
    video: &VideoOffer,
    ours: &VideoAnswer,
    line: &MediaLine,
    p: &AnswerParams,
) -> MediaDescription {
    let pt = video.vp8_pt;
    let direction = video.direction.mirror();
    let mut attrs = vec![a("mid", video.mid.clone()), flag(direction.attribute())];
    attrs.push(flag("rtcp-mux"));
    attrs.push(a("rtpmap", format!("{pt} VP8/90000")));
    let fb = video.feedback;
    for (on, what) in [
        (fb.remb, "goog-remb"),
        (fb.fir, "ccm fir"),
        (fb.nack, "nack"),
        (fb.pli, "nack pli"),
    ] {
        if on {
            attrs.push(a("rtcp-fb", format!("{pt} {what}")));
        }
    }
    transport_attrs(&mut attrs, p, direction, ours.ssrc, &ours.msid_track);
    MediaDescription {
        media_name: media_name(line, p.candidate.port(), vec![pt.to_string()]),
        connection_information: Some(connection(p.candidate.ip())),
        attributes: attrs,
        ..Default::default()
    }
}

/// A declined line: port 0, the offered media type, transport, first format and mid.
fn declined_answer(line: &MediaLine) -> MediaDescription {
    MediaDescription {
        media_name: media_name(line, 0, vec![line.format.clone()]),
        connection_information: Some(connection(IpAddr::from([0, 0, 0, 0]))),
        attributes: line.mid.iter().map(|mid| a("mid", mid.clone())).collect(),
        ..Default::default()
    }
}

/// Our answer to `offer` (RFC 8829 §5.3, RFC 9725): ICE-lite, DTLS passive, one host
/// candidate, Opus (and telephone-event/48000 if offered) on the accepted audio line, VP8 on
/// the accepted video line when `p.video` is given, every other offered line declined in
/// place; the BUNDLE group holds the accepted mids in the offer's order, if the offer
/// bundled the audio.
pub fn build_answer(offer: &Offer, p: &AnswerParams) -> String {
    let ip = p.candidate.ip();
    let mut attributes = vec![flag("ice-lite")];
    let video = offer.video.as_ref().zip(p.video.as_ref());
    if let (true, Some(mid)) = (offer.bundled, &offer.audio_mid) {
        let mut mids: Vec<&str> = offer
            .bundle_group
            .iter()
            .map(String::as_str)
            .filter(|m| *m == mid || video.is_some_and(|(v, _)| v.mid == *m))
            .collect();
        if mids.is_empty() {
            mids.push(mid); // an offer replicated before the group was kept
        }
        attributes.push(a("group", format!("BUNDLE {}", mids.join(" "))));
    }
    let sd = SessionDescription {
        version: 0,
        origin: Origin {
            username: "-".into(),
            session_id: p.session_id,
            session_version: p.session_version,
            network_type: "IN".into(),
            address_type: if ip.is_ipv4() { "IP4" } else { "IP6" }.into(),
            unicast_address: ip.to_string(),
        },
        session_name: "-".into(),
        time_descriptions: vec![TimeDescription {
            timing: Timing {
                start_time: 0,
                stop_time: 0,
            },
            repeat_times: vec![],
        }],
        attributes,
        media_descriptions: offer
            .media
            .iter()
            .enumerate()
            .map(|(i, line)| match video {
                _ if line.accepted => audio_answer(offer, line, p),
                Some((v, ours)) if v.index == i => video_answer(v, ours, line, p),
                _ => declined_answer(line),
            })
            .collect(),
        ..Default::default()
    };
    sd.marshal()
}
