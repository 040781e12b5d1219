//! SIP message parsing on top of `ezk-sip-types`: splits the head into lines (with header
//! folding), parses the start line and every header line into an [`Headers`] container, and
//! cuts the body by Content-Length. Typed headers are decoded on demand by the callers.
//!
//! Everything here is total: any input yields `Ok` or an error, never a panic.

use bytes::Bytes;
use ezk_sip_types::header::typed::{CSeq, CallID, FromTo, Via};
use ezk_sip_types::msg::{Line, MessageLine, PullParser};
use ezk_sip_types::parse::Parse;
use ezk_sip_types::{Headers, Method, Name};

/// A parsed SIP message (request or response).
#[derive(Debug, Clone)]
pub(crate) struct Message {
    /// Request line or status line.
    pub line: MessageLine,
    /// All header lines, in their order of first appearance per name.
    pub headers: Headers,
    /// Body, cut to Content-Length.
    pub body: Bytes,
}

/// Why a message could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// No end of the header section.
    NoHead,
    /// Head is not UTF-8.
    NotUtf8,
    /// Start line not parseable. `method`/`scheme` are set when it looks like a request line
    /// whose Request-URI could not be parsed.
    StartLine {
        method: Option<String>,
        scheme: Option<String>,
    },
    /// A header line not of the form `name: value`.
    HeaderLine,
    /// Content-Length missing from a stream message or not a number / larger than the data.
    ContentLength,
}

/// Position of the first byte after the empty line ending the head, if present.
pub(crate) fn head_end(data: &[u8]) -> Option<usize> {
    let crlf = memfind(data, b"\r\n\r\n").map(|p| p + 4);
    let lf = memfind(data, b"\n\n").map(|p| p + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

pub(crate) fn memfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Content-Length declared in a raw head (full or compact form), without a full parse.
/// `Ok(None)` when absent, `Err` when present but not a number.
pub(crate) fn raw_content_length(head: &[u8]) -> Result<Option<usize>, ()> {
    let mut found = None;
    for line in head.split(|b| *b == b'\n').skip(1) {
        let line = trim_ascii(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = trim_ascii(&line[..colon]);
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let value = trim_ascii(&line[colon + 1..]);
            let text = std::str::from_utf8(value).map_err(|_| ())?;
            found = Some(text.parse::<usize>().map_err(|_| ())?);
        }
    }
    Ok(found)
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

/// Parse one complete message (a datagram, or a frame cut by the stream framer). The body is
/// cut to Content-Length; without one it is the rest of `data` (allowed for UDP); a
/// Content-Length larger than the data is an error.
pub(crate) fn parse(data: &[u8]) -> Result<Message, ParseError> {
    parse_with(data, true)
}

/// [`parse`] for observers of captured datagrams: Content-Length is not checked and the body
/// is the rest of the datagram, as sent (a capture may have lost bytes, a test tool may have
/// counted LF line ends that were sent as CRLF).
pub(crate) fn parse_lenient(data: &[u8]) -> Result<Message, ParseError> {
    parse_with(data, false)
}

fn parse_with(data: &[u8], check_length: bool) -> Result<Message, ParseError> {
    let end = head_end(data).ok_or(ParseError::NoHead)?;
    let src = Bytes::copy_from_slice(data);
    let head = &src[..end];
    std::str::from_utf8(head).map_err(|_| ParseError::NotUtf8)?;
    // Note: PullParser returns sub-slices of `src`, so every parsed BytesStr refers into it.
    let mut lines = PullParser::new(&src[..], 0);
    let first = match lines.next() {
        Some(Ok(l)) => l,
        _ => return Err(ParseError::NoHead),
    };
    let first = std::str::from_utf8(first).map_err(|_| ParseError::NotUtf8)?;
    let line = match MessageLine::parse(&src)(first) {
        Ok((rest, line)) if rest.trim().is_empty() => line,
        _ => return Err(start_line_error(first)),
    };
    let mut headers = Headers::new();
    let mut consumed = 0usize;
    for l in lines.by_ref() {
        let l = l.map_err(|_| ParseError::NoHead)?;
        consumed += 1;
        if consumed > 512 {
            return Err(ParseError::HeaderLine);
        }
        let l = std::str::from_utf8(l).map_err(|_| ParseError::NotUtf8)?;
        match Line::parse(&src, l) {
            Ok((_, Line { name, value })) if !name.as_print_str().is_empty() => {
                headers.insert(name, value);
            }
            _ => return Err(ParseError::HeaderLine),
        }
    }
    let body_start = end;
    let available = data.len() - body_start;
    let len = match headers.get_raw(&Name::CONTENT_LENGTH).next_back() {
        Some(v) if check_length => v
            .trim()
            .parse::<usize>()
            .map_err(|_| ParseError::ContentLength)?,
        _ => available,
    };
    if len > available {
        return Err(ParseError::ContentLength);
    }
    let body = src.slice(body_start..body_start + len);
    Ok(Message {
        line,
        headers,
        body,
    })
}

fn start_line_error(first: &str) -> ParseError {
    let mut parts = first.split_whitespace();
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return ParseError::StartLine {
            method: None,
            scheme: None,
        };
    };
    let token_ok = !method.is_empty()
        && method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b));
    if !token_ok || !version.eq_ignore_ascii_case("SIP/2.0") {
        return ParseError::StartLine {
            method: None,
            scheme: None,
        };
    }
    let scheme = uri.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
    ParseError::StartLine {
        method: Some(method.to_string()),
        scheme,
    }
}

/// Best-effort header extraction for answering a message we could not fully parse:
/// returns the raw values of `names` (full or compact form) in order of appearance.
pub(crate) fn raw_headers(data: &[u8]) -> Vec<(String, String)> {
    let end = head_end(data).unwrap_or(data.len());
    let Ok(head) = std::str::from_utf8(&data[..end]) else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = Vec::new();
    for line in head.split('\n').skip(1) {
        let line = line.trim_end_matches('\r');
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
            continue;
        }
        if let Some((n, v)) = line.split_once(':') {
            let n = n.trim();
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_graphic()) {
                continue;
            }
            out.push((canonical_name(n).to_string(), v.trim().to_string()));
        }
    }
    out
}

/// Canonical long form of the header names we copy into responses.
pub(crate) fn canonical_name(n: &str) -> &str {
    const MAP: &[(&str, &str)] = &[
        ("v", "Via"),
        ("via", "Via"),
        ("f", "From"),
        ("from", "From"),
        ("t", "To"),
        ("to", "To"),
        ("i", "Call-ID"),
        ("call-id", "Call-ID"),
        ("cseq", "CSeq"),
    ];
    for (k, v) in MAP {
        if n.eq_ignore_ascii_case(k) {
            return v;
        }
    }
    n
}

/// The fields of a request every transaction and dialog needs, decoded and validated.
#[derive(Debug, Clone)]
pub(crate) struct RequestInfo {
    pub method: Method,
    /// Request-URI user part (room).
    pub user: String,
    pub vias: Vec<Via>,
    pub from: FromTo,
    pub from_raw: String,
    pub to: FromTo,
    pub to_raw: String,
    pub call_id: String,
    pub cseq: CSeq,
    pub contact_uri: Option<String>,
    pub record_route: Vec<String>,
    pub content_type: Option<String>,
    pub require: Vec<String>,
    pub expires: Option<u32>,
    pub contacts_raw: Vec<String>,
}

/// Why a request is invalid (-> 400 with this reason phrase).
pub(crate) type Invalid = &'static str;

fn raw_first(h: &Headers, n: &Name) -> Option<String> {
    h.get_raw(n).next().map(|v| v.to_string())
}

/// Decode the request fields.
pub(crate) fn request_info(msg: &Message) -> Result<RequestInfo, Invalid> {
    let MessageLine::Request(rl) = &msg.line else {
        return Err("Not a request");
    };
    let h = &msg.headers;
    let vias: Vec<Via> = h.get_named().map_err(|_| "Bad Via")?;
    if vias.is_empty() {
        return Err("Missing Via");
    }
    let from: FromTo = h.get(Name::FROM).map_err(|_| "Bad From")?;
    let to: FromTo = h.get(Name::TO).map_err(|_| "Bad To")?;
    let call_id: CallID = h.get_named().map_err(|_| "Bad Call-ID")?;
    let cseq: CSeq = h.get_named().map_err(|_| "Bad CSeq")?;
    if cseq.method != rl.method {
        return Err("CSeq method mismatch");
    }
    if call_id.0.trim().is_empty() {
        return Err("Bad Call-ID");
    }
    let user = match &rl.uri.user_part {
        ezk_sip_types::uri::SipUriUserPart::Empty => String::new(),
        ezk_sip_types::uri::SipUriUserPart::User(u) => u.to_string(),
        ezk_sip_types::uri::SipUriUserPart::UserPw(up) => up.user.to_string(),
    };
    let contact_uri = match h.try_get::<Vec<ezk_sip_types::header::typed::Contact>>(Name::CONTACT) {
        Some(Ok(c)) => c.first().map(|c| uri_string(&c.uri.uri)),
        _ => None,
    };
    let contacts_raw = h.get_raw(&Name::CONTACT).map(|v| v.to_string()).collect();
    let record_route = h
        .get_raw(&Name::RECORD_ROUTE)
        .map(|v| v.to_string())
        .collect();
    let content_type = raw_first(h, &Name::CONTENT_TYPE);
    let require = h
        .get_raw(&Name::REQUIRE)
        .flat_map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
        .collect();
    let expires = raw_first(h, &Name::EXPIRES).and_then(|v| v.trim().parse().ok());
    Ok(RequestInfo {
        method: rl.method.clone(),
        user,
        vias,
        from_raw: raw_first(h, &Name::FROM).unwrap_or_default(),
        from,
        to_raw: raw_first(h, &Name::TO).unwrap_or_default(),
        to,
        call_id: call_id.0.trim().to_string(),
        cseq,
        contact_uri,
        record_route,
        content_type,
        require,
        expires,
        contacts_raw,
    })
}

/// Print a SIP URI.
pub(crate) fn uri_string(uri: &ezk_sip_types::uri::SipUri) -> String {
    use ezk_sip_types::print::{AppendCtx, PrintCtx, UriContext};
    let ctx = PrintCtx {
        method: None,
        uri: Some(UriContext::Contact),
    };
    uri.print_ctx(ctx).to_string()
}

/// Print a Via.
pub(crate) fn via_string(via: &Via) -> String {
    use ezk_sip_types::print::AppendCtx;
    via.default_print_ctx().to_string()
}

/// Print a header value of From/To type (name-addr with params) without its tag.
pub(crate) fn from_to_uri(ft: &FromTo) -> String {
    uri_string(&ft.uri.uri)
}

/// A header value safe to print on one line: folded continuations (CRLF + whitespace) become
/// single spaces and stray CR/LF characters are dropped.
pub(crate) fn unfold(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut pending_space = false;
    for c in v.chars() {
        match c {
            '\r' | '\n' => pending_space = true,
            ' ' | '\t' if pending_space => {}
            c => {
                if pending_space {
                    if !out.ends_with(' ') && !out.is_empty() {
                        out.push(' ');
                    }
                    pending_space = false;
                }
                out.push(c);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_folded_and_lf_only_forms() {
        let m = b"INVITE sip:room@h SIP/2.0\nv: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK1\nf: <sip:a@b>\n ;tag=1\nt: <sip:room@h>\ni: cid\nCSeq: 1 INVITE\nl: 2\n\nab";
        let msg = parse(m).unwrap();
        let info = request_info(&msg).unwrap();
        assert_eq!(info.user, "room");
        assert_eq!(info.call_id, "cid");
        assert_eq!(info.from.tag.as_deref(), Some("1"));
        assert_eq!(&msg.body[..], b"ab");
        assert_eq!(unfold(&info.from_raw), "<sip:a@b> ;tag=1");
    }

    #[test]
    fn content_length_rules() {
        let base = "OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n";
        assert!(parse(format!("{base}Content-Length: 5\r\n\r\nab").as_bytes()).is_err());
        assert!(parse(format!("{base}Content-Length: x\r\n\r\n").as_bytes()).is_err());
        // Extra bytes after the declared body are ignored (RFC 3261 18.3).
        let m = parse(format!("{base}Content-Length: 1\r\n\r\nabc").as_bytes()).unwrap();
        assert_eq!(&m.body[..], b"a");
        assert_eq!(
            raw_content_length(format!("{base}l: 7\r\n").as_bytes()),
            Ok(Some(7))
        );
    }
}
