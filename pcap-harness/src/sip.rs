//! The SIP (RFC 3261) and SDP (RFC 4566) facts the harness needs to list dialog messages
//! and label RTP flows with codecs and Call-IDs. Parsing is sip-core's
//! ([`sip_core::inspect`]); this module only picks out those facts.

use std::collections::HashMap;
use std::net::SocketAddr;

use sip_core::inspect::{self, SipMessage};

/// A parsed SIP message (headers of interest only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Request method, for requests.
    pub method: Option<String>,
    /// Request-URI, for requests.
    pub uri: Option<String>,
    /// Status code, for responses.
    pub status: Option<u16>,
    /// Reason phrase, for responses.
    pub reason: Option<String>,
    /// Call-ID.
    pub call_id: String,
    /// CSeq number.
    pub cseq: u32,
    /// CSeq method.
    pub cseq_method: String,
    /// From tag.
    pub from_tag: Option<String>,
    /// To tag.
    pub to_tag: Option<String>,
    /// SDP body, if the body is SDP.
    pub sdp: Option<Sdp>,
}

/// The media description parts of an SDP body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sdp {
    /// Audio/video media: where the sender of the SDP wants to receive, and its formats.
    pub media: Vec<SdpMedia>,
}

/// One `m=` line with its connection address and rtpmaps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpMedia {
    /// Receive address (c= of the media, else of the session).
    pub addr: Option<SocketAddr>,
    /// Payload type -> codec, e.g. `8 -> ("PCMA", 8000, None)`.
    pub rtpmap: HashMap<u8, Codec>,
}

/// A codec name, clock rate and channel count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    /// Encoding name as written (e.g. `opus`, `PCMU`, `telephone-event`).
    pub name: String,
    /// RTP clock rate.
    pub rate: u32,
    /// Channels, when given.
    pub channels: Option<u32>,
}

impl Codec {
    /// `name/rate[/channels]`.
    pub fn label(&self) -> String {
        match self.channels {
            Some(c) => format!("{}/{}/{}", self.name, self.rate, c),
            None => format!("{}/{}", self.name, self.rate),
        }
    }
}

/// The RFC 3551 static payload type table (audio and video), as tshark uses it.
pub fn static_codec(pt: u8) -> Option<Codec> {
    let (name, rate) = match pt {
        0 => ("PCMU", 8000),
        3 => ("GSM", 8000),
        4 => ("G723", 8000),
        5 => ("DVI4", 8000),
        6 => ("DVI4", 16000),
        7 => ("LPC", 8000),
        8 => ("PCMA", 8000),
        9 => ("G722", 8000),
        10 | 11 => ("L16", 44100),
        12 => ("QCELP", 8000),
        13 => ("CN", 8000),
        14 => ("MPA", 90000),
        15 => ("G728", 8000),
        16 => ("DVI4", 11025),
        17 => ("DVI4", 22050),
        18 => ("G729", 8000),
        25 => ("CelB", 90000),
        26 => ("JPEG", 90000),
        28 => ("nv", 90000),
        31 => ("H261", 90000),
        32 => ("MPV", 90000),
        33 => ("MP2T", 90000),
        34 => ("H263", 90000),
        _ => return None,
    };
    Some(Codec {
        name: name.into(),
        rate,
        channels: None,
    })
}

/// Whether the payload is a SIP message (request or response) sip-core can read.
pub fn looks_like_sip(p: &[u8]) -> bool {
    SipMessage::parse(p).is_ok()
}

/// Parse a SIP message; `None` if it is not SIP or lacks Call-ID/CSeq.
pub fn parse(p: &[u8]) -> Option<Message> {
    from_parsed(&SipMessage::parse(p).ok()?)
}

/// The harness's view of a message sip-core parsed; `None` if it lacks Call-ID/CSeq.
pub fn from_parsed(m: &SipMessage) -> Option<Message> {
    let call_id = m.call_id()?;
    let (cseq, cseq_method) = m.cseq()?;
    let sdp = m
        .content_type()
        .filter(|ct| ct.starts_with("application/sdp") && !m.body().is_empty())
        .map(|_| parse_sdp(&String::from_utf8_lossy(m.body())));
    Some(Message {
        method: m.method(),
        uri: m.request_uri(),
        status: m.status(),
        reason: m.reason(),
        call_id,
        cseq,
        cseq_method,
        from_tag: m.from_tag(),
        to_tag: m.to_tag(),
        sdp,
    })
}

/// The media sections of an SDP body (empty when sip-core cannot parse it). Formats without
/// an a=rtpmap get their RFC 3551 static codec.
pub fn parse_sdp(body: &str) -> Sdp {
    let media = inspect::media_summary(body)
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            let mut rtpmap: HashMap<u8, Codec> = m
                .rtpmaps
                .into_iter()
                .map(|r| {
                    let codec = Codec {
                        name: r.encoding,
                        rate: r.clock_rate,
                        channels: r.channels,
                    };
                    (r.payload_type, codec)
                })
                .collect();
            for pt in m.formats {
                if let Some(c) = static_codec(pt) {
                    rtpmap.entry(pt).or_insert(c);
                }
            }
            SdpMedia {
                addr: m.addr,
                rtpmap,
            }
        })
        .collect();
    Sdp { media }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_invite_with_sdp() {
        let m = b"INVITE sip:room@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070\r\n\
f: <sip:a@x>;tag=abc\r\nTo: <sip:room@y>\r\ni: call-1\r\nCSeq: 1 INVITE\r\n\
Content-Type: application/sdp\r\nContent-Length: 99\r\n\r\n\
v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 40000 RTP/AVP 97 8\r\na=rtpmap:97 opus/48000/2\r\n";
        let msg = parse(m).unwrap();
        assert_eq!(msg.method.as_deref(), Some("INVITE"));
        assert_eq!(msg.call_id, "call-1");
        assert_eq!(msg.from_tag.as_deref(), Some("abc"));
        let sdp = msg.sdp.unwrap();
        assert_eq!(sdp.media[0].addr, Some("127.0.0.1:40000".parse().unwrap()));
        assert_eq!(sdp.media[0].rtpmap[&97].label(), "opus/48000/2");
        assert_eq!(sdp.media[0].rtpmap[&8].label(), "PCMA/8000");
    }
}
