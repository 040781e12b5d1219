//! Minimal SIP (RFC 3261) message and SDP (RFC 4566) parsing: enough to list dialog
//! messages and to label RTP flows with codecs and Call-IDs.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

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

/// Whether the payload looks like a SIP message (request or response line).
pub fn looks_like_sip(p: &[u8]) -> bool {
    let first_line = match p.iter().position(|&b| b == b'\n') {
        Some(n) => &p[..n],
        None => return false,
    };
    let line = match std::str::from_utf8(first_line) {
        Ok(s) => s.trim_end(),
        Err(_) => return false,
    };
    line.starts_with("SIP/2.0 ") || line.ends_with(" SIP/2.0")
}

fn header_name(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    match lower.as_str() {
        "i" => "call-id".into(),
        "f" => "from".into(),
        "t" => "to".into(),
        "c" => "content-type".into(),
        "l" => "content-length".into(),
        _ => lower,
    }
}

fn tag_of(value: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim().eq_ignore_ascii_case("tag")).then(|| v.trim().to_string())
    })
}

/// Parse a SIP message; `None` if it is not SIP or lacks Call-ID/CSeq.
pub fn parse(p: &[u8]) -> Option<Message> {
    if !looks_like_sip(p) {
        return None;
    }
    let text = String::from_utf8_lossy(p);
    let (head, body) = match text.find("\r\n\r\n") {
        Some(i) => (&text[..i], &text[i + 4..]),
        None => match text.find("\n\n") {
            Some(i) => (&text[..i], &text[i + 2..]),
            None => (&text[..], ""),
        },
    };
    let mut lines = head.lines();
    let start = lines.next()?.trim();
    let mut msg = Message {
        method: None,
        uri: None,
        status: None,
        reason: None,
        call_id: String::new(),
        cseq: 0,
        cseq_method: String::new(),
        from_tag: None,
        to_tag: None,
        sdp: None,
    };
    if let Some(rest) = start.strip_prefix("SIP/2.0 ") {
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        msg.status = Some(code.parse().ok()?);
        msg.reason = Some(reason.to_string());
    } else {
        let mut parts = start.split_whitespace();
        msg.method = Some(parts.next()?.to_string());
        msg.uri = Some(parts.next()?.to_string());
    }
    let mut content_type = String::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match header_name(name).as_str() {
            "call-id" => msg.call_id = value.to_string(),
            "cseq" => {
                let mut it = value.split_whitespace();
                msg.cseq = it.next()?.parse().ok()?;
                msg.cseq_method = it.next().unwrap_or("").to_string();
            }
            "from" => msg.from_tag = tag_of(value),
            "to" => msg.to_tag = tag_of(value),
            "content-type" => content_type = value.to_ascii_lowercase(),
            _ => {}
        }
    }
    if msg.call_id.is_empty() || msg.cseq_method.is_empty() {
        return None;
    }
    if content_type.starts_with("application/sdp") && !body.is_empty() {
        msg.sdp = Some(parse_sdp(body));
    }
    Some(msg)
}

/// A media section being parsed: port, media-level address, rtpmap, formats.
type MediaAcc = (u16, Option<IpAddr>, HashMap<u8, Codec>, Vec<u8>);

/// Parse the media sections of an SDP body.
pub fn parse_sdp(body: &str) -> Sdp {
    let mut sdp = Sdp::default();
    let mut session_ip: Option<IpAddr> = None;
    // Per media: (port, media ip, rtpmap).
    let mut cur: Option<MediaAcc> = None;
    let finish = |cur: Option<MediaAcc>, session_ip: Option<IpAddr>, sdp: &mut Sdp| {
        if let Some((port, ip, mut map, fmts)) = cur {
            for pt in fmts {
                if let std::collections::hash_map::Entry::Vacant(e) = map.entry(pt) {
                    if let Some(c) = static_codec(pt) {
                        e.insert(c);
                    }
                }
            }
            sdp.media.push(SdpMedia {
                addr: ip.or(session_ip).map(|ip| SocketAddr::new(ip, port)),
                rtpmap: map,
            });
        }
    };
    for line in body.lines() {
        let line = line.trim();
        if let Some(m) = line.strip_prefix("m=") {
            finish(cur.take(), session_ip, &mut sdp);
            let mut it = m.split_whitespace();
            let _media = it.next();
            let port = it
                .next()
                .and_then(|p| p.split('/').next()?.parse().ok())
                .unwrap_or(0);
            let _proto = it.next();
            let fmts = it.filter_map(|f| f.parse().ok()).collect();
            cur = Some((port, None, HashMap::new(), fmts));
        } else if let Some(c) = line.strip_prefix("c=") {
            let ip = c
                .split_whitespace()
                .nth(2)
                .and_then(|a| a.split('/').next()?.parse().ok());
            match cur.as_mut() {
                Some(m) => m.1 = ip,
                None => session_ip = ip,
            }
        } else if let Some(a) = line.strip_prefix("a=rtpmap:") {
            if let Some(m) = cur.as_mut() {
                let mut it = a.split_whitespace();
                let pt = it.next().and_then(|p| p.parse().ok());
                let enc = it.next().unwrap_or("");
                let mut parts = enc.split('/');
                let name = parts.next().unwrap_or("").to_string();
                let rate = parts.next().and_then(|r| r.parse().ok()).unwrap_or(0);
                let channels = parts.next().and_then(|c| c.parse().ok());
                if let Some(pt) = pt {
                    m.2.insert(
                        pt,
                        Codec {
                            name,
                            rate,
                            channels,
                        },
                    );
                }
            }
        }
    }
    finish(cur.take(), session_ip, &mut sdp);
    sdp
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
