//! SDP offer/answer for audio and video conferences: parse a client's offer, choose a codec,
//! build our answer or offer.
//!
//! Parsing and serialization use the `sdp` crate (webrtc-rs); this module only holds the
//! offer/answer policy: which codec, which direction, which addresses.
//!
//! # The policy
//!
//! - **Audio** is required: the first usable audio line (RTP/AVP, a codec in common) is
//!   accepted; an offer without one is refused ([`SdpError::NotAcceptable`], 488).
//! - **Video** is optional: the first video line (RTP/AVP or RTP/AVPF, a port, VP8/90000 with
//!   a dynamic payload type) is accepted when the server has a video port for it
//!   ([`LocalMedia::video_port`]); the answer repeats the offerer's VP8 payload type, offers
//!   RTCP feedback `nack`, `nack pli`, `ccm fir` (and `goog-remb` when offered), mirrors the
//!   direction and says `a=rtcp-mux` when the offer did. What the offerer supports is in
//!   [`NegotiatedVideo`].
//! - **Every other line** (a video line without VP8, a second audio or video line, unknown
//!   media or transport, a line offered with port 0) is declined with port 0, in its place:
//!   the answer has one m= line per offered line, in order (RFC 3264 §6, [`MediaLine`]).

use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::net::{IpAddr, SocketAddr};

use sdp::description::common::{Address, Attribute, ConnectionInformation};
use sdp::description::media::{MediaDescription, MediaName, RangedPort};
use sdp::description::session::{Origin, SessionDescription, TimeDescription, Timing};

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
    /// The accepted video line (VP8), if any; `None` for an audio-only call, or when video
    /// was declined ([`Negotiated::decline_video`]).
    pub video: Option<NegotiatedVideo>,
    /// Every m= line of the offer, in order, and what the answer does with it (RFC 3264 §6:
    /// one answer line per offered line): exactly one [`LineAnswer::Audio`], at most one
    /// [`LineAnswer::Video`], the rest [`LineAnswer::Declined`].
    pub lines: Vec<MediaLine>,
}

/// The accepted video line of an offer (or of an answer to our offer): VP8/90000.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NegotiatedVideo {
    /// The offerer's VP8 payload type (dynamic: 35-63 or 96-127; the answer repeats it).
    pub payload_type: u8,
    /// Where the remote wants video RTP (c= and m= port); may be replaced by its learned
    /// source later, as for audio.
    pub remote_rtp: SocketAddr,
    /// Where the remote wants video RTCP (a=rtcp, or RTP port + 1, or the RTP port with
    /// a=rtcp-mux).
    pub remote_rtcp: SocketAddr,
    /// a=rtcp-mux on the video line.
    pub rtcp_mux: bool,
    /// The remote's video direction (c=0.0.0.0: inactive).
    pub direction: Direction,
    /// The RTCP feedback the offerer said it supports for VP8 (`a=rtcp-fb`).
    pub feedback: VideoFeedback,
}

/// RTCP feedback messages a participant supports for its video (`a=rtcp-fb:PT ...` or
/// `a=rtcp-fb:* ...` on its video line): what a forwarder may send it.
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

/// What the answer does with one offered m= line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LineAnswer {
    /// The accepted audio line ([`Negotiated`]'s codec, addresses).
    Audio,
    /// The accepted video line ([`Negotiated::video`]), answered with our video port; declined
    /// like any other line when we have none ([`LocalMedia::video_port`]).
    Video,
    /// Declined with port 0 (a video line without VP8, a second audio or video line, unknown
    /// media, an unsupported transport, a disabled line).
    Declined,
}

/// One offered m= line as the answer repeats it. A declined one keeps its media type,
/// transport and at least one of its formats (RFC 3264 §6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaLine {
    /// Media type (`audio`, `video`, `application`, ...), as offered.
    pub media: String,
    /// Transport (`RTP/AVP`, `UDP/TLS/RTP/SAVPF`, ...), as offered.
    pub proto: String,
    /// The first offered format.
    pub format: String,
    /// What the answer does with it.
    pub answer: LineAnswer,
}

impl MediaLine {
    fn declined_description(&self) -> MediaDescription {
        MediaDescription {
            media_name: MediaName {
                media: self.media.clone(),
                port: RangedPort {
                    value: 0,
                    range: None,
                },
                protos: self.proto.split('/').map(str::to_string).collect(),
                formats: vec![self.format.clone()],
            },
            ..Default::default()
        }
    }
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
    /// Our video RTP port (RTCP on port + 1 unless mux): `None` declines every video line
    /// (and [`build_offer`] offers no video).
    #[serde(default)]
    pub video_port: Option<u16>,
    /// o= session id (random from the application's seed).
    pub session_id: u64,
    /// o= version, incremented on each new SDP of the session.
    pub session_version: u64,
}

/// RFC 6464 client-to-mixer audio level header extension URI.
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

impl CodecName {
    /// RTP clock rate.
    pub fn clock_rate(self) -> u32 {
        match self {
            CodecName::Opus => 48000,
            CodecName::Pcmu | CodecName::Pcma => 8000,
        }
    }
    /// `a=rtpmap` encoding part, e.g. `opus/48000/2`.
    pub fn rtpmap(self) -> &'static str {
        match self {
            CodecName::Opus => "opus/48000/2",
            CodecName::Pcmu => "PCMU/8000",
            CodecName::Pcma => "PCMA/8000",
        }
    }
}

impl Direction {
    /// The direction we answer with: sendonly -> recvonly, recvonly -> sendonly.
    pub fn mirror(self) -> Direction {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }
    /// SDP attribute name.
    pub fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
}

fn attr<'a>(attrs: &'a [Attribute], key: &str) -> impl Iterator<Item = &'a str> + 'a {
    let key = key.to_string();
    attrs
        .iter()
        .filter(move |a| a.key.eq_ignore_ascii_case(&key))
        .map(|a| a.value.as_deref().unwrap_or(""))
}

fn has(attrs: &[Attribute], key: &str) -> bool {
    attrs.iter().any(|a| a.key.eq_ignore_ascii_case(key))
}

/// `(payload type, encoding name, clock rate, channels if given)` of every a=rtpmap.
pub(crate) fn rtpmaps(attrs: &[Attribute]) -> Vec<(u8, String, u32, Option<u32>)> {
    attr(attrs, "rtpmap")
        .filter_map(|v| {
            let (pt, enc) = v.trim().split_once(char::is_whitespace)?;
            let pt: u8 = pt.trim().parse().ok()?;
            let mut parts = enc.trim().split('/');
            let name = parts.next()?.trim().to_string();
            let rate: u32 = parts.next()?.trim().parse().ok()?;
            let channels: Option<u32> = match parts.next() {
                Some(c) => Some(c.trim().parse().ok()?),
                None => None,
            };
            Some((pt, name, rate, channels))
        })
        .collect()
}

fn direction_of(attrs: &[Attribute]) -> Option<Direction> {
    // The last direction attribute wins if a peer sends several; normally there is one.
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

fn parse_ip(ci: &ConnectionInformation) -> Result<IpAddr, SdpError> {
    let addr = ci
        .address
        .as_ref()
        .ok_or_else(|| SdpError::Malformed("c= without address".into()))?;
    let text = addr.address.split('/').next().unwrap_or("").trim();
    text.parse::<IpAddr>()
        .map_err(|_| SdpError::NotAcceptable(format!("c= address {text:?} is not an IP address")))
}

/// The IP address of a c= line, if it is one.
pub(crate) fn connection_ip(ci: &ConnectionInformation) -> Option<IpAddr> {
    parse_ip(ci).ok()
}

/// The non-empty lines of an SDP, without their line ends.
fn sdp_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
}

fn unmarshal(lines: &[&str]) -> Result<SessionDescription, SdpError> {
    let mut norm = String::new();
    for line in lines {
        norm.push_str(line);
        norm.push_str("\r\n");
    }
    SessionDescription::unmarshal(&mut Cursor::new(norm.as_bytes()))
        .map_err(|e| SdpError::Malformed(e.to_string()))
}

/// Media types and transport parts the `sdp` crate's parser accepts (it refuses any other
/// m= line, e.g. `m=application 9 TCP/BFCP *`, as malformed).
const PARSED_MEDIA: [&str; 6] = ["audio", "video", "text", "application", "message", "image"];
const PARSED_PROTO: [&str; 10] = [
    "UDP", "RTP", "AVP", "SAVP", "SAVPF", "TLS", "DTLS", "SCTP", "AVPF", "udptl",
];

/// Parse an offer (or answer) with the `sdp` crate, tolerating LF-only line ends and a
/// missing final CRLF; also returns every m= line as the answer repeats it (all declined
/// until negotiation accepts one), in order. A line of a media type or transport the parser
/// does not know is parsed as a disabled placeholder (port 0: never accepted) and declined
/// as offered.
fn parse_offer(text: &str) -> Result<(SessionDescription, Vec<MediaLine>), SdpError> {
    const PLACEHOLDER: &str = "m=application 0 UDP 0";
    let mut offered = Vec::new();
    let mut lines = Vec::new();
    for line in sdp_lines(text) {
        let Some(m) = line.strip_prefix("m=") else {
            lines.push(line);
            continue;
        };
        let f: Vec<&str> = m.split_whitespace().collect();
        if f.len() < 4 || !f.iter().all(|t| t.chars().all(|c| c.is_ascii_graphic())) {
            return Err(SdpError::Malformed("bad m= line".into()));
        }
        offered.push(MediaLine {
            media: f[0].into(),
            proto: f[2].into(),
            format: f[3].into(),
            answer: LineAnswer::Declined,
        });
        let known =
            PARSED_MEDIA.contains(&f[0]) && f[2].split('/').all(|p| PARSED_PROTO.contains(&p));
        lines.push(if known { line } else { PLACEHOLDER });
    }
    let sd = unmarshal(&lines)?;
    // The parser's own reading of the lines must agree with ours (it accepts some line
    // starts we do not, e.g. "\rm=").
    if sd.media_descriptions.len() != offered.len() {
        return Err(SdpError::Malformed("unreadable m= line".into()));
    }
    Ok((sd, offered))
}

/// Parsing that also supplies the mandatory `o=`, `s=` and `t=` lines when absent (for
/// observers: some test tools send `v=`, `c=`, `m=` only). The server's negotiation keeps
/// using [`parse_offer`].
pub(crate) fn parse_lenient(text: &str) -> Result<SessionDescription, SdpError> {
    let mut lines: Vec<&str> = sdp_lines(text).collect();
    let has = |lines: &[&str], k: &str| lines.iter().any(|l| l.starts_with(k));
    if lines.first().is_some_and(|l| l.starts_with("v=")) {
        if !has(&lines, "s=") {
            let at = usize::from(lines.get(1).is_some_and(|l| l.starts_with("o="))) + 1;
            lines.insert(at, "s=-");
        }
        if !has(&lines, "o=") {
            lines.insert(1, "o=- 0 0 IN IP4 0.0.0.0");
        }
        if !has(&lines, "t=") {
            // t= follows the session's i/u/e/p/c/b lines and precedes r/z/k/a/m.
            let at = lines
                .iter()
                .position(|l| {
                    ["r=", "z=", "k=", "a=", "m="]
                        .iter()
                        .any(|k| l.starts_with(k))
                })
                .unwrap_or(lines.len());
            lines.insert(at, "t=0 0");
        }
    }
    unmarshal(&lines)
}

/// Negotiate a remote offer (or an answer to our offer) against our codecs.
pub fn negotiate(remote_sdp: &str) -> Result<Negotiated, SdpError> {
    let (sd, lines) = parse_offer(remote_sdp)?;
    negotiate_parsed(&sd, &lines)
}

/// [`negotiate`] on an already parsed description: the first usable audio line is
/// accepted, then the first usable video line; every other line is declined (port 0 in the
/// answer).
fn negotiate_parsed(sd: &SessionDescription, lines: &[MediaLine]) -> Result<Negotiated, SdpError> {
    let mut saw_audio = false;
    let mut last_err = None;
    let mut accepted = None;
    for (i, m) in sd.media_descriptions.iter().enumerate() {
        if !m.media_name.media.eq_ignore_ascii_case("audio") {
            continue;
        }
        saw_audio = true;
        match negotiate_media(sd, m) {
            Ok(n) => {
                accepted = Some((i, n));
                break;
            }
            Err(e) => last_err = Some(e),
        }
    }
    let Some((audio_at, mut n)) = accepted else {
        if !saw_audio {
            return Err(SdpError::NotAcceptable("no audio m-line".into()));
        }
        return Err(
            last_err.unwrap_or_else(|| SdpError::NotAcceptable("no usable audio m-line".into()))
        );
    };
    n.lines = lines.to_vec();
    if let Some(l) = n.lines.get_mut(audio_at) {
        l.answer = LineAnswer::Audio;
    }
    let video = sd
        .media_descriptions
        .iter()
        .enumerate()
        .filter(|(_, m)| m.media_name.media.eq_ignore_ascii_case("video"))
        .find_map(|(i, m)| Some((i, negotiate_video(sd, m)?)));
    if let Some((i, v)) = video {
        if let Some(l) = n.lines.get_mut(i) {
            l.answer = LineAnswer::Video;
            n.video = Some(v);
        }
    }
    Ok(n)
}

/// Payload types a VP8 stream may use: the dynamic range (96-127) and the unassigned 35-63;
/// never a static type, nor 64-95, which RTCP's packet types shadow once the marker bit is
/// set (RFC 5761 §4: VP8 sets it on every frame's last packet).
fn video_payload_type_ok(pt: u8) -> bool {
    matches!(pt, 35..=63 | 96..=127)
}

/// The VP8 line a video m= line offers, or `None` (declined): RTP/AVP or RTP/AVPF, a
/// port, an IP address, VP8/90000 among its formats with a usable payload type.
fn negotiate_video(sd: &SessionDescription, m: &MediaDescription) -> Option<NegotiatedVideo> {
    let proto = m.media_name.protos.join("/");
    if !(proto.eq_ignore_ascii_case("RTP/AVP") || proto.eq_ignore_ascii_case("RTP/AVPF")) {
        return None;
    }
    let port = u16::try_from(m.media_name.port.value)
        .ok()
        .filter(|p| *p > 0)?;
    let ci = m
        .connection_information
        .as_ref()
        .or(sd.connection_information.as_ref())?;
    let ip = parse_ip(ci).ok()?;
    let maps = rtpmaps(&m.attributes);
    let payload_type = m
        .media_name
        .formats
        .iter()
        .filter_map(|f| f.trim().parse::<u8>().ok())
        .filter(|pt| video_payload_type_ok(*pt))
        .find(|pt| {
            maps.iter().any(|(p, name, rate, ch)| {
                p == pt && name.eq_ignore_ascii_case("VP8") && *rate == 90000 && ch.is_none()
            })
        })?;
    let mut direction = direction_of(&m.attributes)
        .or_else(|| direction_of(&sd.attributes))
        .unwrap_or(Direction::SendRecv);
    if ip.is_unspecified() {
        direction = Direction::Inactive;
    }
    let rtcp_mux = has(&m.attributes, "rtcp-mux");
    let remote_rtp = SocketAddr::new(ip, port);
    let remote_rtcp = rtcp_address(m, remote_rtp, rtcp_mux);
    Some(NegotiatedVideo {
        payload_type,
        remote_rtp,
        remote_rtcp,
        rtcp_mux,
        direction,
        feedback: video_feedback(&m.attributes, payload_type),
    })
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

/// Where the remote wants RTCP for an m= line whose RTP goes to `rtp`: its `a=rtcp` (port,
/// optionally an address), else the RTP address with rtcp-mux, else the RTP port + 1.
fn rtcp_address(m: &MediaDescription, rtp: SocketAddr, rtcp_mux: bool) -> SocketAddr {
    let (ip, port) = (rtp.ip(), rtp.port());
    match attr(&m.attributes, "rtcp").next() {
        Some(v) => {
            let mut it = v.split_whitespace();
            let rport: Option<u16> = it.next().and_then(|p| p.parse().ok());
            let rip = match (it.next(), it.next(), it.next()) {
                (Some(_), Some(_), Some(a)) => a.parse::<IpAddr>().ok(),
                _ => None,
            };
            match rport {
                Some(p) => SocketAddr::new(rip.unwrap_or(ip), p),
                None => SocketAddr::new(ip, port.saturating_add(1)),
            }
        }
        None if rtcp_mux => rtp,
        None => SocketAddr::new(ip, port.saturating_add(1)),
    }
}

impl Negotiated {
    /// Decline the accepted video line (the server serves no video, has no port for it, or
    /// the offer's video address is of another family): the answer then gives it port 0,
    /// like any other declined line.
    pub fn decline_video(&mut self) {
        self.video = None;
        for l in &mut self.lines {
            if l.answer == LineAnswer::Video {
                l.answer = LineAnswer::Declined;
            }
        }
    }
}

fn negotiate_media(sd: &SessionDescription, m: &MediaDescription) -> Result<Negotiated, SdpError> {
    let proto = m.media_name.protos.join("/");
    if !proto.eq_ignore_ascii_case("RTP/AVP") {
        return Err(SdpError::NotAcceptable(format!(
            "transport {proto} not supported"
        )));
    }
    let port = m.media_name.port.value;
    if port <= 0 {
        return Err(SdpError::NotAcceptable(
            "audio stream disabled (port 0)".into(),
        ));
    }
    let port =
        u16::try_from(port).map_err(|_| SdpError::Malformed("m= port out of range".into()))?;
    let ci = m
        .connection_information
        .as_ref()
        .or(sd.connection_information.as_ref())
        .ok_or_else(|| SdpError::Malformed("no c= line".into()))?;
    let ip = parse_ip(ci)?;
    let maps = rtpmaps(&m.attributes);
    let mut chosen = None;
    for fmt in &m.media_name.formats {
        let Ok(pt) = fmt.trim().parse::<u8>() else {
            continue;
        };
        if pt > 127 {
            continue;
        }
        let codec = match maps.iter().find(|(p, ..)| *p == pt) {
            Some((_, name, rate, ch)) => {
                let ch = &ch.unwrap_or(1);
                if name.eq_ignore_ascii_case("opus") && *rate == 48000 && *ch == 2 {
                    Some(CodecName::Opus)
                } else if name.eq_ignore_ascii_case("PCMU") && *rate == 8000 && *ch == 1 {
                    Some(CodecName::Pcmu)
                } else if name.eq_ignore_ascii_case("PCMA") && *rate == 8000 && *ch == 1 {
                    Some(CodecName::Pcma)
                } else {
                    None
                }
            }
            None => match pt {
                0 => Some(CodecName::Pcmu),
                8 => Some(CodecName::Pcma),
                _ => None,
            },
        };
        if let Some(c) = codec {
            chosen = Some((c, pt));
            break;
        }
    }
    let Some((codec, payload_type)) = chosen else {
        return Err(SdpError::NotAcceptable("no codec in common".into()));
    };
    let offered: Vec<u8> = m
        .media_name
        .formats
        .iter()
        .filter_map(|f| f.trim().parse().ok())
        .collect();
    let telephone_event_pt = maps
        .iter()
        .find(|(pt, name, rate, _)| {
            name.eq_ignore_ascii_case("telephone-event")
                && *rate == codec.clock_rate()
                && offered.contains(pt)
        })
        .map(|(pt, ..)| *pt);
    let ptime_ms = attr(&m.attributes, "ptime")
        .next()
        .or_else(|| attr(&sd.attributes, "ptime").next())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 1.0 && *v <= 1000.0)
        .map_or(20, |v| v as u32);
    let mut direction = direction_of(&m.attributes)
        .or_else(|| direction_of(&sd.attributes))
        .unwrap_or(Direction::SendRecv);
    if ip.is_unspecified() {
        direction = Direction::Inactive;
    }
    let audio_level_ext_id = attr(&m.attributes, "extmap")
        .chain(attr(&sd.attributes, "extmap"))
        .find_map(|v| {
            let mut it = v.split_whitespace();
            let id = it.next()?;
            let uri = it.next()?;
            if !uri.eq_ignore_ascii_case(AUDIO_LEVEL_URI) {
                return None;
            }
            let id: u8 = id.split('/').next()?.parse().ok()?;
            (id > 0).then_some(id)
        });
    let rtcp_mux = has(&m.attributes, "rtcp-mux");
    let remote_rtp = SocketAddr::new(ip, port);
    let remote_rtcp = rtcp_address(m, remote_rtp, rtcp_mux);
    Ok(Negotiated {
        codec,
        payload_type,
        telephone_event_pt,
        ptime_ms,
        direction,
        audio_level_ext_id,
        remote_rtp,
        remote_rtcp,
        rtcp_mux,
        video: None,
        lines: Vec::new(),
    })
}

fn base_session(local: &LocalMedia) -> SessionDescription {
    let (addr_type, ip) = match local.ip {
        IpAddr::V4(ip) => ("IP4", ip.to_string()),
        IpAddr::V6(ip) => ("IP6", ip.to_string()),
    };
    SessionDescription {
        origin: Origin {
            username: "-".into(),
            session_id: local.session_id,
            session_version: local.session_version,
            network_type: "IN".into(),
            address_type: addr_type.into(),
            unicast_address: ip.clone(),
        },
        session_name: "Understudy".into(),
        connection_information: Some(ConnectionInformation {
            network_type: "IN".into(),
            address_type: addr_type.into(),
            address: Some(Address {
                address: ip,
                ttl: None,
                range: None,
            }),
        }),
        time_descriptions: vec![TimeDescription {
            timing: Timing {
                start_time: 0,
                stop_time: 0,
            },
            repeat_times: vec![],
        }],
        ..Default::default()
    }
}

fn media(
    kind: &str,
    port: u16,
    proto: &str,
    formats: Vec<u8>,
    attributes: Vec<Attribute>,
) -> MediaDescription {
    MediaDescription {
        media_name: MediaName {
            media: kind.into(),
            port: RangedPort {
                value: port as isize,
                range: None,
            },
            protos: proto.split('/').map(str::to_string).collect(),
            formats: formats.iter().map(u8::to_string).collect(),
        },
        attributes,
        ..Default::default()
    }
}

/// Our VP8 attributes for payload type `pt`: the rtpmap and the RTCP feedback we take and
/// send (`goog-remb` when `remb`).
fn vp8_attributes(pt: u8, remb: bool) -> Vec<Attribute> {
    let mut attrs = vec![
        a("rtpmap", format!("{pt} VP8/90000")),
        a("rtcp-fb", format!("{pt} nack")),
        a("rtcp-fb", format!("{pt} nack pli")),
        a("rtcp-fb", format!("{pt} ccm fir")),
    ];
    if remb {
        attrs.push(a("rtcp-fb", format!("{pt} goog-remb")));
    }
    attrs
}

fn a(key: &str, value: impl Into<String>) -> Attribute {
    Attribute::new(key.into(), Some(value.into()))
}

fn flag(key: &str) -> Attribute {
    Attribute::new(key.into(), None)
}

/// Build our SDP answer for a negotiated offer. Directions are mirrored (sendonly ->
/// recvonly, inactive -> inactive). One m= line per offered line, in the offer's order: the
/// accepted audio line, the accepted video line when `local` has a video port (else it is
/// declined too), the others declined with port 0.
pub fn build_answer(local: &LocalMedia, neg: &Negotiated) -> String {
    let mut sd = base_session(local);
    sd.media_descriptions = neg
        .lines
        .iter()
        .map(|line| match (line.answer, &neg.video, local.video_port) {
            (LineAnswer::Audio, ..) => audio_answer(local, neg),
            (LineAnswer::Video, Some(v), Some(port)) => video_answer(port, &line.proto, v),
            _ => line.declined_description(),
        })
        .collect();
    sd.marshal()
}

fn audio_answer(local: &LocalMedia, neg: &Negotiated) -> MediaDescription {
    let mut formats = vec![neg.payload_type];
    let mut attrs = vec![a(
        "rtpmap",
        format!("{} {}", neg.payload_type, neg.codec.rtpmap()),
    )];
    if neg.codec == CodecName::Opus {
        attrs.push(a("fmtp", format!("{} useinbandfec=1", neg.payload_type)));
    }
    if let Some(te) = neg.telephone_event_pt.filter(|te| *te != neg.payload_type) {
        formats.push(te);
        attrs.push(a(
            "rtpmap",
            format!("{te} telephone-event/{}", neg.codec.clock_rate()),
        ));
        attrs.push(a("fmtp", format!("{te} 0-16")));
    }
    attrs.push(a("ptime", neg.ptime_ms.to_string()));
    if let Some(id) = neg.audio_level_ext_id {
        attrs.push(a("extmap", format!("{id} {AUDIO_LEVEL_URI}")));
    }
    if neg.rtcp_mux {
        attrs.push(flag("rtcp-mux"));
    }
    attrs.push(flag(neg.direction.mirror().attribute()));
    media("audio", local.rtp_port, "RTP/AVP", formats, attrs)
}

fn video_answer(port: u16, proto: &str, v: &NegotiatedVideo) -> MediaDescription {
    let mut attrs = vp8_attributes(v.payload_type, v.feedback.remb);
    if v.rtcp_mux {
        attrs.push(flag("rtcp-mux"));
    }
    attrs.push(flag(v.direction.mirror().attribute()));
    media("video", port, proto, vec![v.payload_type], attrs)
}

/// Payload type of VP8 in our own offers.
pub const OFFER_VP8_PT: u8 = 96;

/// Build our SDP offer (for an offerless INVITE): Opus/48000/2 (useinbandfec=1), PCMU, PCMA,
/// telephone-event/48000 and /8000, ptime 20, sendrecv; and when `local` has a video port,
/// VP8/90000 ([`OFFER_VP8_PT`]) with RTCP feedback nack, nack pli, ccm fir and goog-remb,
/// sendrecv.
pub fn build_offer(local: &LocalMedia) -> String {
    let attrs = vec![
        a("rtpmap", "111 opus/48000/2"),
        a("fmtp", "111 useinbandfec=1"),
        a("rtpmap", "0 PCMU/8000"),
        a("rtpmap", "8 PCMA/8000"),
        a("rtpmap", "101 telephone-event/48000"),
        a("fmtp", "101 0-16"),
        a("rtpmap", "100 telephone-event/8000"),
        a("fmtp", "100 0-16"),
        a("ptime", "20"),
        flag("sendrecv"),
    ];
    let mut sd = base_session(local);
    sd.media_descriptions.push(media(
        "audio",
        local.rtp_port,
        "RTP/AVP",
        vec![111, 0, 8, 101, 100],
        attrs,
    ));
    if let Some(port) = local.video_port {
        let mut attrs = vp8_attributes(OFFER_VP8_PT, true);
        attrs.push(flag("sendrecv"));
        sd.media_descriptions
            .push(media("video", port, "RTP/AVP", vec![OFFER_VP8_PT], attrs));
    }
    sd.marshal()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sdp(media: &str, extra: &str) -> String {
        format!("v=0\r\no=- 1 1 IN IP4 198.18.0.10\r\ns=-\r\nc=IN IP4 198.18.0.10\r\nt=0 0\r\n{media}\r\n{extra}")
    }

    fn local() -> LocalMedia {
        LocalMedia {
            ip: "198.18.0.1".parse().unwrap(),
            rtp_port: 40000,
            video_port: None,
            session_id: 77,
            session_version: 2,
        }
    }

    #[test]
    fn first_supported_codec_in_offerer_order() {
        let s = sdp(
            "m=audio 5004 RTP/AVP 18 8 0 111",
            "a=rtpmap:18 G729/8000\r\na=rtpmap:111 opus/48000/2\r\n",
        );
        let n = negotiate(&s).unwrap();
        assert_eq!(
            (n.codec, n.payload_type),
            (CodecName::Pcma, 8),
            "static PT 8 without rtpmap"
        );
        let s = sdp(
            "m=audio 5004 RTP/AVP 111 0",
            "a=rtpmap:111 OPUS/48000/2\r\n",
        );
        assert_eq!(negotiate(&s).unwrap().codec, CodecName::Opus);
        // opus must be /48000/2
        let s = sdp("m=audio 5004 RTP/AVP 111", "a=rtpmap:111 opus/48000/1\r\n");
        assert!(matches!(negotiate(&s), Err(SdpError::NotAcceptable(_))));
    }

    #[test]
    fn telephone_event_must_match_clock_rate() {
        let s = sdp(
            "m=audio 5004 RTP/AVP 0 101 102",
            "a=rtpmap:101 telephone-event/48000\r\na=rtpmap:102 telephone-event/8000\r\n",
        );
        assert_eq!(negotiate(&s).unwrap().telephone_event_pt, Some(102));
        let s = sdp(
            "m=audio 5004 RTP/AVP 111 101",
            "a=rtpmap:111 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n",
        );
        assert_eq!(negotiate(&s).unwrap().telephone_event_pt, None);
    }

    #[test]
    fn ptime_direction_extmap_rtcp() {
        let s = sdp(
            "m=audio 5004 RTP/AVP 0",
            "a=ptime:30\r\na=sendonly\r\na=extmap:3/sendrecv urn:ietf:params:rtp-hdrext:ssrc-audio-level vad=on\r\na=rtcp:6000 IN IP4 198.18.0.11\r\n",
        );
        let n = negotiate(&s).unwrap();
        assert_eq!(n.ptime_ms, 30);
        assert_eq!(n.direction, Direction::SendOnly);
        assert_eq!(n.audio_level_ext_id, Some(3));
        assert_eq!(n.remote_rtp, "198.18.0.10:5004".parse().unwrap());
        assert_eq!(n.remote_rtcp, "198.18.0.11:6000".parse().unwrap());
        assert!(!n.rtcp_mux);
        let n = negotiate(&sdp("m=audio 5004 RTP/AVP 0", "a=rtcp-mux\r\n")).unwrap();
        assert_eq!(
            (n.remote_rtcp, n.rtcp_mux, n.ptime_ms),
            (n.remote_rtp, true, 20)
        );
        let n = negotiate(&sdp("m=audio 5004 RTP/AVP 0", "a=recvonly\r\n")).unwrap();
        assert_eq!(n.direction, Direction::RecvOnly);
        let n = negotiate(&sdp("m=audio 5004 RTP/AVP 0", "a=inactive\r\n")).unwrap();
        assert_eq!(n.direction, Direction::Inactive);
        let hold =
            sdp("m=audio 5004 RTP/AVP 0", "").replace("c=IN IP4 198.18.0.10", "c=IN IP4 0.0.0.0");
        assert_eq!(negotiate(&hold).unwrap().direction, Direction::Inactive);
    }

    #[test]
    fn errors() {
        assert!(matches!(negotiate("garbage"), Err(SdpError::Malformed(_))));
        assert!(matches!(negotiate(""), Err(SdpError::Malformed(_))));
        let video = sdp("m=video 5004 RTP/AVP 96", "a=rtpmap:96 VP8/90000\r\n");
        assert!(matches!(negotiate(&video), Err(SdpError::NotAcceptable(_))));
        let srtp = sdp("m=audio 5004 RTP/SAVP 0", "");
        assert!(matches!(negotiate(&srtp), Err(SdpError::NotAcceptable(_))));
        let disabled = sdp("m=audio 0 RTP/AVP 0", "");
        assert!(matches!(
            negotiate(&disabled),
            Err(SdpError::NotAcceptable(_))
        ));
        let no_c = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 5004 RTP/AVP 0\r\n";
        assert!(matches!(negotiate(no_c), Err(SdpError::Malformed(_))));
    }

    #[test]
    fn lf_only_offer_is_accepted() {
        let s = sdp("m=audio 5004 RTP/AVP 0", "").replace("\r\n", "\n");
        assert_eq!(negotiate(&s).unwrap().codec, CodecName::Pcmu);
    }

    #[test]
    fn answer_mirrors_and_parses_back() {
        let offer = sdp(
            "m=audio 5004 RTP/AVP 111 101",
            "a=rtpmap:111 opus/48000/2\r\na=rtpmap:101 telephone-event/48000\r\na=ptime:40\r\na=sendonly\r\na=rtcp-mux\r\na=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n",
        );
        let n = negotiate(&offer).unwrap();
        let ans = build_answer(&local(), &n);
        assert!(
            ans.starts_with("v=0\r\no=- 77 2 IN IP4 198.18.0.1\r\n"),
            "{ans}"
        );
        for l in [
            "c=IN IP4 198.18.0.1",
            "m=audio 40000 RTP/AVP 111 101",
            "a=rtpmap:111 opus/48000/2",
            "a=fmtp:111 useinbandfec=1",
            "a=rtpmap:101 telephone-event/48000",
            "a=ptime:40",
            "a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
            "a=rtcp-mux",
            "a=recvonly",
        ] {
            assert!(ans.contains(&format!("{l}\r\n")), "{l} missing in\n{ans}");
        }
        // The offerer can negotiate our answer.
        let back = negotiate(&ans).unwrap();
        assert_eq!(
            (back.codec, back.payload_type, back.direction),
            (CodecName::Opus, 111, Direction::RecvOnly)
        );
        // Without the optional features none of their lines appear.
        let plain = build_answer(
            &local(),
            &negotiate(&sdp("m=audio 5004 RTP/AVP 0", "")).unwrap(),
        );
        assert!(
            !plain.contains("extmap")
                && !plain.contains("rtcp-mux")
                && !plain.contains("telephone-event")
        );
        assert!(plain.contains("a=sendrecv\r\n"));
    }

    /// The answer's m= lines as `(media, port, proto, formats)`.
    fn m_lines(answer: &str) -> Vec<(String, u16, String, String)> {
        answer
            .lines()
            .filter_map(|l| l.strip_prefix("m="))
            .map(|l| {
                let mut it = l.trim_end().splitn(4, ' ');
                let mut next = || it.next().unwrap_or("").to_string();
                let (media, port, proto, fmts) = (next(), next(), next(), next());
                (media, port.parse().unwrap(), proto, fmts)
            })
            .collect()
    }

    fn line(media: &str, port: u16, proto: &str, fmts: &str) -> (String, u16, String, String) {
        (media.into(), port, proto.into(), fmts.into())
    }

    /// RFC 3264 §6: one answer line per offered line, in order; only the first usable audio
    /// line is accepted, the others get port 0 with their media type, transport and a format.
    #[test]
    fn answer_keeps_every_offered_line_in_order() {
        let video_audio = sdp(
            "m=video 5006 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\nm=audio 5004 RTP/AVP 0",
            "",
        );
        let n = negotiate(&video_audio).unwrap();
        assert_eq!(n.remote_rtp, "198.18.0.10:5004".parse().unwrap());
        assert_eq!(
            m_lines(&build_answer(&local(), &n)),
            [
                line("video", 0, "RTP/AVP", "96"),
                line("audio", 40000, "RTP/AVP", "0")
            ]
        );

        let audio_video = sdp(
            "m=audio 5004 RTP/AVP 0\r\nm=video 5006 RTP/AVP 96 97\r\na=rtpmap:96 VP8/90000",
            "",
        );
        let n = negotiate(&audio_video).unwrap();
        assert_eq!(
            m_lines(&build_answer(&local(), &n)),
            [
                line("audio", 40000, "RTP/AVP", "0"),
                line("video", 0, "RTP/AVP", "96")
            ]
        );

        // Two audio lines: the first usable one wins, here the second (SRTP first).
        let two_audio = sdp(
            "m=audio 5008 RTP/SAVP 0\r\nm=audio 5004 RTP/AVP 8\r\nm=audio 5010 RTP/AVP 0",
            "",
        );
        let n = negotiate(&two_audio).unwrap();
        assert_eq!((n.codec, n.remote_rtp.port()), (CodecName::Pcma, 5004));
        assert_eq!(
            m_lines(&build_answer(&local(), &n)),
            [
                line("audio", 0, "RTP/SAVP", "0"),
                line("audio", 40000, "RTP/AVP", "8"),
                line("audio", 0, "RTP/AVP", "0")
            ]
        );

        let audio_app = sdp(
            "m=audio 5004 RTP/AVP 0\r\nm=application 5020 TCP/BFCP *\r\nm=x-future 5030 X/Y 1",
            "",
        );
        let ans = build_answer(&local(), &negotiate(&audio_app).unwrap());
        assert_eq!(
            m_lines(&ans),
            [
                line("audio", 40000, "RTP/AVP", "0"),
                line("application", 0, "TCP/BFCP", "*"),
                line("x-future", 0, "X/Y", "1")
            ]
        );
        // The declined lines carry no attribute of ours; the offerer can read the answer.
        assert_eq!(ans.matches("a=sendrecv").count(), 1, "{ans}");
        assert_eq!(negotiate(&ans).unwrap().remote_rtp.port(), 40000);

        // An m= line the parser reads but we would not (found by fuzzing): refused, no panic.
        let odd = "v=0\r\no=- 1 1 IN IP4 198.18.0.10\r\ns=-\r\nc=IN IP4 198.18.0.10\r\n\
                   t=0 0\n\rm=audio 10762 RTP/AVP 0 8\x0c\na=rtpmap:96 opus/48000";
        assert!(matches!(negotiate(odd), Err(SdpError::Malformed(_))));

        // Nothing usable: still refused.
        let video_only = sdp("m=video 5006 RTP/AVP 96\r\nm=audio 5004 RTP/SAVP 0", "");
        assert!(matches!(
            negotiate(&video_only),
            Err(SdpError::NotAcceptable(_))
        ));
    }

    #[test]
    fn offer_lists_our_codecs() {
        let o = build_offer(&local());
        assert!(
            o.contains("m=audio 40000 RTP/AVP 111 0 8 101 100\r\n"),
            "{o}"
        );
        assert!(o.contains("a=fmtp:111 useinbandfec=1\r\n"));
        let n = negotiate(&o).unwrap();
        assert_eq!(
            (n.codec, n.telephone_event_pt, n.direction),
            (CodecName::Opus, Some(101), Direction::SendRecv)
        );
    }

    fn local_with_video() -> LocalMedia {
        LocalMedia {
            video_port: Some(40002),
            ..local()
        }
    }

    const AUDIO_VIDEO: &str = "m=audio 5004 RTP/AVP 0\r\n\
        m=video 5006 RTP/AVP 100 96\r\n\
        a=rtpmap:100 H264/90000\r\n\
        a=rtpmap:96 VP8/90000\r\n\
        a=rtcp-fb:96 nack\r\n\
        a=rtcp-fb:96 nack pli\r\n\
        a=rtcp-fb:* ccm fir\r\n\
        a=rtcp-fb:100 goog-remb\r\n\
        a=rtcp-mux\r\n\
        a=sendonly";

    #[test]
    fn audio_and_vp8_video_are_both_accepted() {
        let offer = sdp(AUDIO_VIDEO, "");
        let n = negotiate(&offer).unwrap();
        let v = n.video.clone().expect("video accepted");
        assert_eq!(v.payload_type, 96, "the offerer's VP8 payload type");
        assert_eq!(v.remote_rtp, "198.18.0.10:5006".parse().unwrap());
        assert_eq!(v.remote_rtcp, v.remote_rtp, "rtcp-mux");
        assert!(v.rtcp_mux);
        assert_eq!(v.direction, Direction::SendOnly);
        assert_eq!(
            v.feedback,
            VideoFeedback {
                nack: true,
                pli: true,
                fir: true,
                remb: false // offered for H.264 only
            }
        );
        assert_eq!(
            n.lines.iter().map(|l| l.answer).collect::<Vec<_>>(),
            [LineAnswer::Audio, LineAnswer::Video]
        );
        let ans = build_answer(&local_with_video(), &n);
        assert_eq!(
            m_lines(&ans),
            [
                line("audio", 40000, "RTP/AVP", "0"),
                line("video", 40002, "RTP/AVP", "96")
            ]
        );
        let video = &ans[ans.find("m=video").unwrap()..];
        for l in [
            "a=rtpmap:96 VP8/90000",
            "a=rtcp-fb:96 nack",
            "a=rtcp-fb:96 nack pli",
            "a=rtcp-fb:96 ccm fir",
            "a=rtcp-mux",
            "a=recvonly",
        ] {
            assert!(video.contains(&format!("{l}\r\n")), "{l} missing in\n{ans}");
        }
        assert!(!ans.contains("goog-remb") && !ans.contains("H264"), "{ans}");
        // The audio line is the audio-only answer's, untouched.
        let audio = &ans[..ans.find("m=video").unwrap()];
        assert!(audio.contains("a=sendrecv\r\n") && !audio.contains("rtcp-mux"));
        // The offerer reads our answer back: video at our port, directions mirrored.
        let back = negotiate(&ans).unwrap();
        let bv = back.video.expect("video in the answer");
        assert_eq!(
            (bv.payload_type, bv.remote_rtp.port(), bv.direction),
            (96, 40002, Direction::RecvOnly)
        );
        assert!(bv.feedback.nack && bv.feedback.pli && bv.feedback.fir && !bv.feedback.remb);

        // goog-remb is answered when offered for VP8; RTP/AVPF is answered as offered.
        let remb = sdp(
            "m=audio 5004 RTP/AVP 0\r\nm=video 5006 RTP/AVPF 97\r\na=rtpmap:97 vp8/90000\r\na=rtcp-fb:97 goog-remb",
            "",
        );
        let n = negotiate(&remb).unwrap();
        let v = n.video.clone().unwrap();
        assert_eq!(
            (v.remote_rtcp.port(), v.rtcp_mux, v.direction),
            (5007, false, Direction::SendRecv)
        );
        assert!(v.feedback.remb && !v.feedback.nack);
        let ans = build_answer(&local_with_video(), &n);
        assert_eq!(m_lines(&ans)[1], line("video", 40002, "RTP/AVPF", "97"));
        assert!(ans.contains("a=rtcp-fb:97 goog-remb\r\n"), "{ans}");
        assert!(ans.contains("a=rtcp-fb:97 ccm fir\r\n"), "{ans}");
    }

    #[test]
    fn an_audio_only_offer_is_answered_as_before_with_video_enabled() {
        for offer in [
            sdp("m=audio 5004 RTP/AVP 0", ""),
            sdp(
                "m=audio 5004 RTP/AVP 111 101",
                "a=rtpmap:111 opus/48000/2\r\na=rtpmap:101 telephone-event/48000\r\na=rtcp-mux\r\n",
            ),
            sdp(
                "m=audio 5004 RTP/AVP 0\r\nm=application 5020 TCP/BFCP *",
                "",
            ),
        ] {
            let n = negotiate(&offer).unwrap();
            assert_eq!(n.video, None);
            assert_eq!(
                build_answer(&local_with_video(), &n),
                build_answer(&local(), &n),
                "{offer}"
            );
        }
    }

    #[test]
    fn unusable_video_lines_are_declined_in_place_and_audio_still_accepted() {
        // Video first, without VP8; then audio; then a second, usable video line: the first
        // usable video line is the one accepted.
        let offer = sdp(
            "m=video 5010 RTP/AVP 100\r\na=rtpmap:100 H264/90000\r\n\
             m=audio 5004 RTP/AVP 8\r\n\
             m=video 5006 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n\
             m=video 5008 RTP/AVP 97\r\na=rtpmap:97 VP8/90000",
            "",
        );
        let n = negotiate(&offer).unwrap();
        assert_eq!(n.video.as_ref().unwrap().remote_rtp.port(), 5006);
        assert_eq!(
            m_lines(&build_answer(&local_with_video(), &n)),
            [
                line("video", 0, "RTP/AVP", "100"),
                line("audio", 40000, "RTP/AVP", "8"),
                line("video", 40002, "RTP/AVP", "96"),
                line("video", 0, "RTP/AVP", "97"),
            ]
        );
        // Without a video port of ours, the VP8 line is declined like the others.
        assert_eq!(
            m_lines(&build_answer(&local(), &n))[2],
            line("video", 0, "RTP/AVP", "96")
        );
        // decline_video does the same whatever the local port.
        let mut d = n.clone();
        d.decline_video();
        assert_eq!(d.video, None);
        let ans = build_answer(&local_with_video(), &d);
        assert_eq!(m_lines(&ans)[2], line("video", 0, "RTP/AVP", "96"));
        assert!(!ans.contains("VP8"), "{ans}");
        assert_eq!(negotiate(&ans).unwrap().video, None);
    }

    #[test]
    fn hostile_video_lines_are_declined_never_accepted() {
        let declined = |video: &str| {
            let offer = sdp(&format!("m=audio 5004 RTP/AVP 0\r\n{video}"), "");
            let n = negotiate(&offer).unwrap_or_else(|e| panic!("{video}: {e}"));
            assert_eq!(n.video, None, "{video}");
            let ans = build_answer(&local_with_video(), &n);
            let m = m_lines(&ans);
            assert_eq!(m.len(), 2, "{ans}");
            assert_eq!((m[0].1, m[1].1), (40000, 0), "{video}: {ans}");
        };
        // Offered with port 0 (disabled).
        declined("m=video 0 RTP/AVP 96\r\na=rtpmap:96 VP8/90000");
        // No rtpmap for the dynamic payload type: not known to be VP8.
        declined("m=video 5006 RTP/AVP 96");
        // VP8 mapped to a payload type not listed on the line.
        declined("m=video 5006 RTP/AVP 97\r\na=rtpmap:96 VP8/90000");
        // Absurd payload types: out of u8, out of 7 bits, static, shadowed by RTCP.
        declined("m=video 5006 RTP/AVP 300\r\na=rtpmap:300 VP8/90000");
        declined("m=video 5006 RTP/AVP 200\r\na=rtpmap:200 VP8/90000");
        declined("m=video 5006 RTP/AVP 31\r\na=rtpmap:31 VP8/90000");
        declined("m=video 5006 RTP/AVP 72\r\na=rtpmap:72 VP8/90000");
        declined("m=video 5006 RTP/AVP -1\r\na=rtpmap:-1 VP8/90000");
        // Wrong clock rate, channels, transport, address.
        declined("m=video 5006 RTP/AVP 96\r\na=rtpmap:96 VP8/48000");
        declined("m=video 5006 RTP/AVP 96\r\na=rtpmap:96 VP8/90000/2");
        declined("m=video 5006 RTP/SAVP 96\r\na=rtpmap:96 VP8/90000");
        declined("m=video 5006 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000");
        declined("m=video 5006 RTP/AVP 96\r\nc=IN IP4 video.example\r\na=rtpmap:96 VP8/90000");
        // A port out of range makes the whole offer unreadable (the parser's rule), as for
        // audio: refused, no panic.
        let port = sdp(
            "m=audio 5004 RTP/AVP 0\r\nm=video 99999 RTP/AVP 96\r\na=rtpmap:96 VP8/90000",
            "",
        );
        assert!(matches!(negotiate(&port), Err(SdpError::Malformed(_))));
        // Garbage feedback and rtcp attributes do not matter; the line is still usable.
        let offer = sdp(
            "m=audio 5004 RTP/AVP 0\r\nm=video 5006 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n\
             a=rtcp-fb:\r\na=rtcp-fb:96\r\na=rtcp-fb:x nack\r\na=rtcp:abc\r\na=rtcp-fb:96 nack pli extra",
            "",
        );
        let v = negotiate(&offer).unwrap().video.unwrap();
        assert_eq!(
            v.feedback,
            VideoFeedback {
                pli: true,
                ..Default::default()
            }
        );
        assert_eq!(v.remote_rtcp.port(), 5007);
        // Video on hold (c=0.0.0.0 on the line): accepted, inactive.
        let hold = sdp(
            "m=audio 5004 RTP/AVP 0\r\nm=video 5006 RTP/AVP 96\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:96 VP8/90000",
            "",
        );
        let n = negotiate(&hold).unwrap();
        assert_eq!(n.video.as_ref().unwrap().direction, Direction::Inactive);
        assert_eq!(n.direction, Direction::SendRecv, "audio not on hold");
        assert!(build_answer(&local_with_video(), &n).ends_with("a=inactive\r\n"));
        // Video alone is not a call: 488, with or without VP8.
        for video_only in [
            sdp("m=video 5006 RTP/AVP 96", "a=rtpmap:96 VP8/90000\r\n"),
            sdp("m=video 5006 RTP/AVP 100", "a=rtpmap:100 H264/90000\r\n"),
        ] {
            assert!(matches!(
                negotiate(&video_only),
                Err(SdpError::NotAcceptable(_))
            ));
        }
    }

    #[test]
    fn offer_with_video_when_we_have_a_video_port() {
        let o = build_offer(&local_with_video());
        assert!(
            o.contains("m=audio 40000 RTP/AVP 111 0 8 101 100\r\n"),
            "{o}"
        );
        let video = &o[o.find("m=video 40002 RTP/AVP 96\r\n").expect(&o)..];
        for l in [
            "a=rtpmap:96 VP8/90000",
            "a=rtcp-fb:96 nack",
            "a=rtcp-fb:96 nack pli",
            "a=rtcp-fb:96 ccm fir",
            "a=rtcp-fb:96 goog-remb",
            "a=sendrecv",
        ] {
            assert!(video.contains(&format!("{l}\r\n")), "{l} missing in\n{o}");
        }
        let n = negotiate(&o).unwrap();
        let v = n.video.unwrap();
        assert_eq!(
            (v.payload_type, v.remote_rtp.port(), v.direction),
            (96, 40002, Direction::SendRecv)
        );
        assert!(v.feedback.nack && v.feedback.pli && v.feedback.fir && v.feedback.remb);
        assert!(!build_offer(&local()).contains("m=video"));
    }
}
