//! Read-only views of SIP messages and SDP bodies for tools that observe or drive calls
//! (capture analyzers, test user agents): the parsers the [`crate::Core`] uses, without the
//! core's transaction and dialog rules.
//!
//! Everything here is total: any input yields a value or an error, never a panic.
//!
//! ```
//! use sip_core::inspect::{media_summary, SipMessage};
//!
//! let data = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n\
//! f: <sip:a@10.0.0.1>;tag=a1\r\nt: <sip:room@10.0.0.2>;tag=b2\r\ni: call-1\r\n\
//! CSeq: 1 INVITE\r\nc: application/sdp\r\nl: 55\r\n\r\n\
//! v=0\r\nc=IN IP4 10.0.0.2\r\nm=audio 40000 RTP/AVP 0\r\n";
//! let msg = SipMessage::parse(data)?;
//! assert_eq!(msg.status(), Some(200));
//! assert_eq!(msg.call_id().as_deref(), Some("call-1"));
//! assert_eq!(msg.to_tag().as_deref(), Some("b2"));
//! let media = media_summary(std::str::from_utf8(msg.body())?)?;
//! assert_eq!(media[0].addr, Some("10.0.0.2:40000".parse()?));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::net::{IpAddr, SocketAddr};

use ezk_sip_types::header::typed::{CSeq, CallID, Contact, FromTo};
use ezk_sip_types::msg::MessageLine;
use ezk_sip_types::Name;

use crate::message::{self, Message};
use crate::sdp::SdpError;

/// Why bytes could not be read as a SIP message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// No empty line ending the header section.
    NoHead,
    /// The header section is not UTF-8.
    NotUtf8,
    /// The first line is neither a request line nor a status line.
    StartLine,
    /// A header line is not of the form `name: value`.
    HeaderLine,
    /// Content-Length is not a number (not checked by [`SipMessage::parse`]; kept for
    /// stricter parses).
    ContentLength,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}
impl std::error::Error for ParseError {}

/// A parsed SIP request or response.
#[derive(Debug, Clone)]
pub struct SipMessage {
    msg: Message,
}

impl SipMessage {
    /// Parse one message (a datagram). Unlike the core, Content-Length is not enforced: the
    /// body is the rest of the datagram, as sent (a capture may have lost bytes, a test tool
    /// may have counted LF line ends it sent as CRLF).
    pub fn parse(data: &[u8]) -> Result<SipMessage, ParseError> {
        let msg = message::parse_lenient(data).map_err(|e| match e {
            message::ParseError::NoHead => ParseError::NoHead,
            message::ParseError::NotUtf8 => ParseError::NotUtf8,
            message::ParseError::StartLine { .. } => ParseError::StartLine,
            message::ParseError::HeaderLine => ParseError::HeaderLine,
            message::ParseError::ContentLength => ParseError::ContentLength,
        })?;
        Ok(SipMessage { msg })
    }

    /// Request method (`INVITE`, ...), for a request.
    pub fn method(&self) -> Option<String> {
        match &self.msg.line {
            MessageLine::Request(rl) => Some(rl.method.to_string()),
            MessageLine::Response(_) => None,
        }
    }

    /// Request-URI, for a request.
    pub fn request_uri(&self) -> Option<String> {
        match &self.msg.line {
            MessageLine::Request(rl) => Some(message::uri_string(&rl.uri)),
            MessageLine::Response(_) => None,
        }
    }

    /// Status code, for a response.
    pub fn status(&self) -> Option<u16> {
        match &self.msg.line {
            MessageLine::Response(sl) => Some(sl.code.into_u16()),
            MessageLine::Request(_) => None,
        }
    }

    /// Reason phrase (empty when absent), for a response.
    pub fn reason(&self) -> Option<String> {
        match &self.msg.line {
            MessageLine::Response(sl) => Some(
                sl.reason
                    .as_ref()
                    .map(|r| r.to_string())
                    .unwrap_or_default(),
            ),
            MessageLine::Request(_) => None,
        }
    }

    /// Call-ID, trimmed; `None` when absent or empty.
    pub fn call_id(&self) -> Option<String> {
        let id: CallID = self.msg.headers.get_named().ok()?;
        let id = id.0.trim();
        (!id.is_empty()).then(|| id.to_string())
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> Option<(u32, String)> {
        let c: CSeq = self.msg.headers.get_named().ok()?;
        Some((c.cseq, c.method.to_string()))
    }

    /// Tag of the From header.
    pub fn from_tag(&self) -> Option<String> {
        let f: FromTo = self.msg.headers.get(Name::FROM).ok()?;
        f.tag.map(|t| t.to_string())
    }

    /// Tag of the To header.
    pub fn to_tag(&self) -> Option<String> {
        let t: FromTo = self.msg.headers.get(Name::TO).ok()?;
        t.tag.map(|t| t.to_string())
    }

    /// Content-Type, lower-cased.
    pub fn content_type(&self) -> Option<String> {
        self.header("Content-Type")
            .into_iter()
            .next()
            .map(|v| v.trim().to_ascii_lowercase())
    }

    /// The URI of the first Contact and, when its host is an IP address, where it points
    /// (port 5060 when absent).
    pub fn contact(&self) -> Option<(String, Option<SocketAddr>)> {
        let contacts: Vec<Contact> = self.msg.headers.get(Name::CONTACT).ok()?;
        let uri = &contacts.first()?.uri.uri;
        let addr = match &uri.host_port.host {
            ezk_sip_types::host::Host::IP4(ip) => Some(IpAddr::V4(*ip)),
            ezk_sip_types::host::Host::IP6(ip) => Some(IpAddr::V6(*ip)),
            ezk_sip_types::host::Host::Name(_) => None,
        }
        .map(|ip| SocketAddr::new(ip, uri.host_port.port.unwrap_or(5060)));
        Some((message::uri_string(uri), addr))
    }

    /// Values of every header line called `name` (full or compact form, any case), in
    /// order, each on one line (folding undone).
    pub fn header(&self, name: &str) -> Vec<String> {
        self.msg
            .headers
            .get_raw(&Name::from(name.to_string()))
            .map(|v| message::unfold(v).trim().to_string())
            .collect()
    }

    /// The body: everything after the header section.
    pub fn body(&self) -> &[u8] {
        &self.msg.body
    }
}

/// One `m=` section of an SDP body, as an observer needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSummary {
    /// Media type (`audio`, `video`, ...).
    pub media: String,
    /// Where the sender of the SDP wants to receive: the media's c= address (else the
    /// session's) with the m= port; `None` without a usable address.
    pub addr: Option<SocketAddr>,
    /// Payload types of the m= line, in order (non-numeric formats skipped).
    pub formats: Vec<u8>,
    /// Every a=rtpmap of the section.
    pub rtpmaps: Vec<Rtpmap>,
}

/// One `a=rtpmap:<pt> <name>/<rate>[/<channels>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rtpmap {
    /// Payload type.
    pub payload_type: u8,
    /// Encoding name as written (`opus`, `PCMU`, `telephone-event`).
    pub encoding: String,
    /// Clock rate.
    pub clock_rate: u32,
    /// Channels, when given.
    pub channels: Option<u32>,
}

/// The media sections of an SDP body, parsed with the `sdp` crate. Besides what the core
/// tolerates (LF line ends, no final CRLF), missing `o=`, `s=` and `t=` lines are supplied,
/// as some test tools omit them.
pub fn media_summary(text: &str) -> Result<Vec<MediaSummary>, SdpError> {
    let sd = crate::sdp::parse_lenient(text)?;
    let session_ip = sd
        .connection_information
        .as_ref()
        .and_then(crate::sdp::connection_ip);
    Ok(sd
        .media_descriptions
        .iter()
        .map(|m| {
            let ip = m
                .connection_information
                .as_ref()
                .and_then(crate::sdp::connection_ip)
                .or(session_ip);
            let port = u16::try_from(m.media_name.port.value).ok();
            MediaSummary {
                media: m.media_name.media.clone(),
                addr: ip.zip(port).map(|(ip, port)| SocketAddr::new(ip, port)),
                formats: m
                    .media_name
                    .formats
                    .iter()
                    .filter_map(|f| f.trim().parse().ok())
                    .collect(),
                rtpmaps: crate::sdp::rtpmaps(&m.attributes)
                    .into_iter()
                    .map(|(payload_type, encoding, clock_rate, channels)| Rtpmap {
                        payload_type,
                        encoding,
                        clock_rate,
                        channels,
                    })
                    .collect(),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_headers_contact_and_lenient_body() {
        let m = SipMessage::parse(
            b"BYE sip:a@10.0.0.1:5062 SIP/2.0\r\nv: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK1\r\n\
Via: SIP/2.0/UDP 10.0.0.3;branch=z9hG4bK2\r\nFrom: <sip:room@h>;tag=x\r\n\
To: <sip:a@10.0.0.1>\r\n ;tag=y\r\nCall-ID: c\r\nCSeq: 7 BYE\r\n\
m: <sip:room@10.0.0.2:5080;transport=udp>\r\nContent-Length: 2\r\n\r\nabcd",
        )
        .unwrap();
        assert_eq!(m.method().as_deref(), Some("BYE"));
        assert_eq!(m.cseq(), Some((7, "BYE".to_string())));
        assert_eq!(m.header("via").len(), 2);
        assert_eq!(m.header("t"), vec!["<sip:a@10.0.0.1> ;tag=y".to_string()]);
        assert_eq!(m.to_tag().as_deref(), Some("y"));
        let (_, addr) = m.contact().unwrap();
        assert_eq!(addr, Some("10.0.0.2:5080".parse().unwrap()));
        assert_eq!(m.body(), b"abcd", "observers see the whole datagram body");
        assert!(SipMessage::parse(b"\x80\xc8\x00\x06").is_err());
    }

    #[test]
    fn sdp_without_origin_session_name_or_timing() {
        let media = media_summary("v=0\nc=IN IP4 10.0.0.2\nm=audio 4000 RTP/AVP 0 101\na=rtpmap:101 telephone-event/8000\n").unwrap();
        assert_eq!(media[0].addr, Some("10.0.0.2:4000".parse().unwrap()));
        assert_eq!(media[0].formats, vec![0, 101]);
        assert_eq!(media[0].rtpmaps[0].encoding, "telephone-event");
        assert_eq!(media[0].rtpmaps[0].channels, None);
        assert!(
            crate::sdp::negotiate("v=0\nc=IN IP4 10.0.0.2\nm=audio 4000 RTP/AVP 0\n").is_err(),
            "the server stays strict"
        );
    }
}
