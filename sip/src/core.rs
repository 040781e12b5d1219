//! The [`Core`] state machine: message dispatch, server transactions, INVITE dialogs, our
//! BYE client transaction and timers.

use crate::framing::{Frame, Framer};
use crate::message::{self, Message, ParseError, RequestInfo};
use crate::state::{
    dialog_key, ClientTx, CoreState, Dialog, DialogState, Globals, ResponseCtx, ServerTx,
    ServerTxState, T1, T2, T4, TIMEOUT_64T1,
};
use crate::{
    CallHandle, CallInfo, Config, ConnId, EndReason, Error, Event, Stats, Transmit, Transport,
};
use ezk_sip_types::header::typed::{Contact, Via};
use ezk_sip_types::msg::MessageLine;
use ezk_sip_types::print::{AppendCtx, PrintCtx, UriContext};
use ezk_sip_types::{Headers, Method, Name};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

/// Methods listed in Allow.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REGISTER";
/// Registration lifetime we grant at most (seconds).
const MAX_EXPIRES: u32 = 3600;
/// Methods we know but do not serve (405); anything else unknown gets 501.
const KNOWN_NOT_ALLOWED: &[&str] = &[
    "SUBSCRIBE",
    "NOTIFY",
    "PUBLISH",
    "MESSAGE",
    "REFER",
    "PRACK",
    "UPDATE",
];

pub(crate) struct Inner {
    pub config: Config,
    pub st: CoreState,
    pub out: VecDeque<Transmit>,
    pub events: VecDeque<Event>,
    pub streams: BTreeMap<ConnId, Framer>,
    /// Globals as last reported by `take_changes` (`None`: not yet).
    pub last_globals: Option<Globals>,
    /// Change tracking on (`Core::set_change_tracking`).
    pub tracking: bool,
}

/// Standard reason phrase.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        606 => "Not Acceptable",
        _ => match status / 100 {
            1 => "Progress",
            2 => "OK",
            3 => "Redirect",
            4 => "Client Error",
            5 => "Server Error",
            _ => "Global Failure",
        },
    }
}

/// Next retransmission after one fired at `at` (<= `now`): the interval doubles up to T2
/// (RFC 3261 timers A/E/G and 13.3.1.4). Missed slots (a late `handle_timeout`) collapse into
/// the one retransmission just made; the schedule stays anchored to `at`.
fn next_retransmit(
    at: Option<Duration>,
    interval: &mut Duration,
    now: Duration,
) -> Option<Duration> {
    let mut at = at?;
    loop {
        *interval = interval.saturating_mul(2).min(T2);
        let next = at.saturating_add(*interval);
        if next > now || next == at {
            return (next > now).then_some(next);
        }
        at = next;
    }
}

/// Extra header lines of a response.
type Extra = Vec<(Name, String)>;

/// Insert a header value, unfolded to a single line (values may be echoed from a peer).
fn put(h: &mut Headers, name: Name, value: &str) {
    h.insert(name, message::unfold(value));
}

impl Inner {
    pub(crate) fn new(config: Config) -> Self {
        let st = CoreState::new(config.seed);
        Inner {
            config,
            st,
            out: VecDeque::new(),
            events: VecDeque::new(),
            streams: BTreeMap::new(),
            last_globals: None,
            tracking: true,
        }
    }

    fn transport_name(t: Transport) -> &'static str {
        match t {
            Transport::Udp => "UDP",
            Transport::Tcp(_) => "TCP",
        }
    }

    fn send(&mut self, transport: Transport, to: SocketAddr, data: String) {
        self.out.push_back(Transmit {
            transport,
            to,
            data: data.into_bytes(),
        });
    }

    // ---------------------------------------------------------------- input

    pub(crate) fn handle_datagram(&mut self, from: SocketAddr, data: &[u8], now: Duration) {
        if data
            .iter()
            .all(|b| matches!(b, b'\r' | b'\n' | b' ' | b'\t' | 0))
        {
            return; // keep-alive datagram (CRLF or NUL)
        }
        if data.len() > self.config.max_message_size {
            self.st.stats.oversized += 1;
            let head = &data[..message::head_end(data).unwrap_or(data.len())];
            self.answer_unparsed(Transport::Udp, from, head, 513, "Message Too Large");
            return;
        }
        self.on_message(Transport::Udp, from, data, now);
    }

    pub(crate) fn handle_stream_data(
        &mut self,
        conn: ConnId,
        from: SocketAddr,
        data: &[u8],
        now: Duration,
    ) {
        let max = self.config.max_message_size;
        let frames = self.streams.entry(conn).or_default().push(data, max);
        let t = Transport::Tcp(conn);
        for f in frames {
            match f {
                Frame::Message(m) => self.on_message(t, from, &m, now),
                Frame::Ping => self.send(t, from, "\r\n".into()),
                Frame::Oversized(head) => {
                    self.st.stats.oversized += 1;
                    self.answer_unparsed(t, from, &head, 513, "Message Too Large");
                }
                Frame::Bad(head) => self.malformed(t, from, &head, "Bad Content-Length"),
            }
        }
    }

    pub(crate) fn handle_stream_closed(&mut self, conn: ConnId, _now: Duration) {
        self.streams.remove(&conn);
        let t = Transport::Tcp(conn);
        let calls: Vec<CallHandle> = self
            .st
            .dialogs
            .values()
            .filter(|d| d.transport == t)
            .map(|d| d.call)
            .collect();
        for call in calls {
            if let Some(d) = self.remove_dialog(call) {
                if d.state != DialogState::Ended {
                    self.events.push_back(Event::CallEnded {
                        call,
                        reason: EndReason::TransportClosed,
                    });
                }
            }
        }
        self.st.server_txs.retain(|_, tx| tx.transport != t);
        self.st.client_txs.retain(|_, tx| tx.transport != t);
    }

    fn on_message(&mut self, t: Transport, from: SocketAddr, data: &[u8], now: Duration) {
        match message::parse(data) {
            Ok(msg) => {
                self.st.stats.messages_in += 1;
                match msg.line {
                    MessageLine::Request(_) => self.on_request(t, from, data, msg, now),
                    MessageLine::Response(_) => self.on_response(msg, now),
                }
            }
            Err(ParseError::StartLine {
                method: Some(_),
                scheme: Some(s),
            }) if s != "sip" && s != "sips" => {
                self.answer_unparsed(t, from, data, 416, "Unsupported URI Scheme");
            }
            Err(ParseError::StartLine { method: None, .. })
            | Err(ParseError::NoHead)
            | Err(ParseError::NotUtf8) => {
                self.st.stats.malformed_dropped += 1;
            }
            Err(ParseError::ContentLength) => self.malformed(t, from, data, "Bad Content-Length"),
            Err(ParseError::HeaderLine) => self.malformed(t, from, data, "Bad Header"),
            Err(ParseError::StartLine { .. }) => self.malformed(t, from, data, "Bad Request-Line"),
        }
    }

    /// Answer with 400 if possible; `answer_unparsed` counts answered/dropped.
    fn malformed(&mut self, t: Transport, from: SocketAddr, data: &[u8], reason: &str) {
        self.answer_unparsed(t, from, data, 400, reason);
    }

    /// Answer a message we could not (fully) parse with `status`, if it is a non-ACK request
    /// with Via, From, To, Call-ID and CSeq recoverable. Returns whether a reply was sent.
    fn answer_unparsed(
        &mut self,
        t: Transport,
        from: SocketAddr,
        data: &[u8],
        status: u16,
        reason: &str,
    ) -> bool {
        let counted_oversized = status == 513;
        let first = data.split(|b| *b == b'\n').next().unwrap_or(&[]);
        let method = first.split(|b| *b == b' ').next().unwrap_or(&[]);
        let is_request = !first.starts_with(b"SIP/") && !method.is_empty();
        let hs = message::raw_headers(data);
        let get = |n: &str| {
            hs.iter()
                .filter(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>()
        };
        let (vias, from_v, to_v, cid, cseq) = (
            get("Via"),
            get("From"),
            get("To"),
            get("Call-ID"),
            get("CSeq"),
        );
        let ok = is_request
            && !method.eq_ignore_ascii_case(b"ACK")
            && !vias.is_empty()
            && from_v.len() == 1
            && to_v.len() == 1
            && cid.len() == 1
            && cseq.len() == 1;
        if !ok {
            if !counted_oversized {
                self.st.stats.malformed_dropped += 1;
            }
            return false;
        }
        let mut vias = vias;
        let (top, dest) = match Self::parse_via(&vias[0]) {
            Some(v) => {
                let (v, dest) = self.stamp_via(v, t, from);
                (v, dest)
            }
            None => (vias[0].clone(), from),
        };
        vias[0] = top;
        let to_has_tag = to_v[0].contains(";tag=");
        let ctx = ResponseCtx {
            vias,
            from: from_v[0].clone(),
            to: to_v[0].clone(),
            to_has_tag,
            call_id: cid[0].clone(),
            cseq: cseq[0].clone(),
            record_route: vec![],
        };
        let tag = self.st.rng.tag();
        let resp = self.build_response(
            &ctx,
            status,
            Some(reason),
            Some(&tag),
            Vec::new(),
            None,
            false,
        );
        self.send(t, dest, resp);
        if !counted_oversized {
            self.st.stats.malformed_answered += 1;
        }
        true
    }

    fn parse_via(v: &str) -> Option<Via> {
        let src = bytes::Bytes::copy_from_slice(v.as_bytes());
        let mut h = Headers::new();
        h.insert(Name::VIA, bytesstr::BytesStr::from_utf8_bytes(src).ok()?);
        h.get_named::<Via>().ok()
    }

    /// Add received/rport (RFC 3261 18.2.1, RFC 3581) and compute where responses go.
    fn stamp_via(&self, mut via: Via, t: Transport, from: SocketAddr) -> (String, SocketAddr) {
        let sent_ip = via.sent_by.ip();
        let differs = sent_ip != Some(from.ip());
        let rport = via.params.get("rport").is_some();
        if differs || rport {
            via.params.push_or_edit("received", from.ip().to_string());
        }
        if rport {
            via.params.push_or_edit("rport", from.port().to_string());
        }
        let dest = match (t, sent_ip) {
            (Transport::Udp, Some(ip)) if !differs && !rport => {
                let port = via.sent_by.port.unwrap_or(5060);
                SocketAddr::new(ip, port)
            }
            _ => from,
        };
        (message::via_string(&via), dest)
    }

    // ---------------------------------------------------------------- responses

    #[allow(clippy::too_many_arguments)]
    fn build_response(
        &self,
        ctx: &ResponseCtx,
        status: u16,
        reason: Option<&str>,
        to_tag: Option<&str>,
        extra: Extra,
        body: Option<(&str, &str)>,
        record_route: bool,
    ) -> String {
        let mut h = Headers::new();
        for v in &ctx.vias {
            put(&mut h, Name::VIA, v);
        }
        put(&mut h, Name::FROM, &ctx.from);
        let to = match to_tag {
            Some(tag) if !ctx.to_has_tag && status > 100 => format!("{};tag={tag}", ctx.to),
            _ => ctx.to.clone(),
        };
        put(&mut h, Name::TO, &to);
        put(&mut h, Name::CALL_ID, &ctx.call_id);
        put(&mut h, Name::CSEQ, &ctx.cseq);
        if record_route {
            for rr in &ctx.record_route {
                put(&mut h, Name::RECORD_ROUTE, rr);
            }
        }
        put(&mut h, Name::SERVER, &self.config.user_agent);
        for (n, v) in extra {
            put(&mut h, n, &v);
        }
        let body = match body {
            Some((ctype, b)) => {
                put(&mut h, Name::CONTENT_TYPE, ctype);
                b
            }
            None => "",
        };
        put(&mut h, Name::CONTENT_LENGTH, &body.len().to_string());
        let reason = reason.unwrap_or_else(|| reason_phrase(status));
        format!("SIP/2.0 {status} {reason}\r\n{h}\r\n{body}")
    }

    fn contact(&self, room: &str, t: Transport) -> String {
        let tp = match t {
            Transport::Udp => "udp",
            Transport::Tcp(_) => "tcp",
        };
        let user = if room.is_empty() {
            String::new()
        } else {
            format!("{room}@")
        };
        format!("<sip:{user}{};transport={tp}>", self.config.local_addr)
    }

    /// Send a response on transaction `key` and remember it for retransmissions.
    fn respond(
        &mut self,
        key: &str,
        status: u16,
        extra: Extra,
        body: Option<(&str, &str)>,
        now: Duration,
    ) {
        self.respond_with_reason(key, status, None, extra, body, now)
    }

    /// [`Inner::respond`] with a reason phrase of our own (`None`: the status's standard one).
    fn respond_with_reason(
        &mut self,
        key: &str,
        status: u16,
        reason: Option<&str>,
        extra: Extra,
        body: Option<(&str, &str)>,
        now: Duration,
    ) {
        let Some(tx) = self.st.server_txs.get(key) else {
            return;
        };
        let is_invite = tx.method == "INVITE";
        let rr = is_invite && (200..300).contains(&status);
        let tag = tx.to_tag.clone();
        let resp = self.build_response(&tx.ctx, status, reason, Some(&tag), extra, body, rr);
        let (t, dest) = (tx.transport, tx.dest);
        self.send(t, dest, resp.clone());
        let udp = t == Transport::Udp;
        let Some(tx) = self.st.server_txs.get_mut(key) else {
            return;
        };
        tx.last_response = Some(resp);
        if status < 200 {
            return;
        }
        if is_invite && status < 300 {
            tx.state = ServerTxState::Accepted;
            tx.interval = T1;
            tx.retransmit_at = udp.then_some(now.saturating_add(T1));
            tx.expires_at = Some(now.saturating_add(TIMEOUT_64T1));
        } else if is_invite {
            tx.state = ServerTxState::Completed;
            tx.interval = T1;
            tx.retransmit_at = udp.then_some(now.saturating_add(T1));
            tx.expires_at = Some(now.saturating_add(TIMEOUT_64T1));
        } else {
            tx.state = ServerTxState::Completed;
            tx.retransmit_at = None;
            tx.expires_at = Some(if udp {
                now.saturating_add(TIMEOUT_64T1)
            } else {
                now
            });
        }
    }

    fn tx_key(info: &RequestInfo, method: &str) -> String {
        let top = &info.vias[0];
        match top.params.get_val("branch") {
            Some(b) if b.starts_with("z9hG4bK") => {
                format!("{}|{}|{method}", &**b, top.sent_by.default_print_ctx())
            }
            _ => format!(
                "2543|{}|{}|{}|{}|{method}",
                info.call_id,
                info.from.tag.as_deref().unwrap_or(""),
                info.cseq.cseq,
                message::via_string(top)
            ),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn new_tx(
        &mut self,
        key: &str,
        info: &RequestInfo,
        t: Transport,
        ctx: ResponseCtx,
        dest: SocketAddr,
        call: Option<CallHandle>,
        to_tag: String,
        had_offer: bool,
    ) {
        let tx = ServerTx {
            method: info.method.to_string(),
            call,
            reinvite: false,
            state: ServerTxState::Proceeding,
            transport: t,
            dest,
            ctx,
            cseq: info.cseq.cseq,
            to_tag,
            had_offer,
            last_response: None,
            retransmit_at: None,
            interval: T1,
            expires_at: None,
        };
        self.st.server_txs.insert(key.to_string(), tx);
    }

    // ---------------------------------------------------------------- requests

    fn on_request(
        &mut self,
        t: Transport,
        from: SocketAddr,
        raw: &[u8],
        msg: Message,
        now: Duration,
    ) {
        let info = match message::request_info(&msg) {
            Ok(i) => i,
            Err(reason) => {
                let is_ack =
                    matches!(&msg.line, MessageLine::Request(r) if r.method == Method::ACK);
                if is_ack {
                    self.st.stats.malformed_dropped += 1;
                } else {
                    self.answer_unparsed(t, from, raw, 400, reason);
                }
                return;
            }
        };
        if info.method == Method::ACK {
            self.on_ack(&info, &msg, now);
            return;
        }
        let key = Self::tx_key(&info, &info.method.to_string());
        if let Some(tx) = self.st.server_txs.get(&key) {
            self.st.stats.retransmissions_absorbed += 1;
            let resend = match tx.state {
                ServerTxState::Confirmed => None,
                _ => tx.last_response.clone(),
            };
            if let Some(r) = resend {
                let (tt, d) = (tx.transport, tx.dest);
                self.send(tt, d, r);
            }
            return;
        }
        let (top, dest) = self.stamp_via(info.vias[0].clone(), t, from);
        let mut vias: Vec<String> = info.vias.iter().map(message::via_string).collect();
        vias[0] = top;
        let ctx = ResponseCtx {
            vias,
            from: info.from_raw.clone(),
            to: info.to_raw.clone(),
            to_has_tag: info.to.tag.is_some(),
            call_id: info.call_id.clone(),
            cseq: format!("{} {}", info.cseq.cseq, info.cseq.method),
            record_route: info.record_route.clone(),
        };
        let dialog = info.to.tag.as_ref().and_then(|tag| {
            self.st
                .dialog_index
                .get(&dialog_key(&info.call_id, tag))
                .copied()
        });
        let to_tag = match (&info.to.tag, dialog) {
            (Some(tag), _) => tag.to_string(),
            (None, _) => self.st.rng.tag(),
        };
        let method = info.method.to_string();
        let had_offer = !msg.body.is_empty();
        // RFC 3261 8.2.2.2: the same request arriving again under another branch (forked
        // through two paths) is a merged request, not a new call.
        let merged = info.to.tag.is_none()
            && info.method == Method::INVITE
            && self.st.server_txs.values().any(|tx| {
                tx.ctx.call_id == ctx.call_id
                    && tx.ctx.from == ctx.from
                    && tx.ctx.cseq == ctx.cseq
                    && !tx.ctx.to_has_tag
            });
        self.new_tx(&key, &info, t, ctx, dest, dialog, to_tag, had_offer);
        if merged {
            self.respond(&key, 482, vec![], None, now);
            return;
        }

        // Unsupported methods first (RFC 3261 8.2.1).
        let served = ["INVITE", "CANCEL", "BYE", "OPTIONS", "INFO", "REGISTER"];
        if !served.contains(&method.as_str()) {
            let status = if KNOWN_NOT_ALLOWED.contains(&method.as_str()) {
                405
            } else {
                501
            };
            self.respond(&key, status, vec![(Name::ALLOW, ALLOW.into())], None, now);
            return;
        }
        // No extension is supported (RFC 3261 8.2.2.3).
        if method != "CANCEL" && !info.require.is_empty() {
            let list = info.require.join(", ");
            self.respond(&key, 420, vec![(Name::UNSUPPORTED, list)], None, now);
            return;
        }
        // In-dialog request for a dialog we do not know.
        if info.to.tag.is_some() && dialog.is_none() && method != "CANCEL" && method != "REGISTER" {
            self.respond(&key, 481, vec![], None, now);
            return;
        }
        if let Some(call) = dialog {
            if method != "CANCEL" {
                // RFC 3261 12.2.2: lower CSeq -> 500.
                let Some(d) = self.st.dialogs.get(&call) else {
                    return;
                };
                if info.cseq.cseq <= d.remote_cseq {
                    self.respond(&key, 500, vec![(Name::RETRY_AFTER, "1".into())], None, now);
                    return;
                }
                if let Some(d) = self.st.dialogs.get_mut(&call) {
                    d.remote_cseq = info.cseq.cseq;
                }
            }
        }
        match method.as_str() {
            "INVITE" => match dialog {
                None => self.on_invite(&key, &info, &msg, t, from, now),
                Some(call) => self.on_reinvite(&key, call, &info, &msg, now),
            },
            "CANCEL" => self.on_cancel(&key, &info, now),
            "BYE" => self.on_bye(&key, dialog, now),
            "OPTIONS" => {
                let extra = vec![
                    (Name::ALLOW, ALLOW.to_string()),
                    (Name::ACCEPT, "application/sdp".to_string()),
                    (Name::SUPPORTED, String::new()),
                ];
                self.respond(&key, 200, extra, None, now);
            }
            "INFO" => self.on_info(&key, dialog, &info, &msg, now),
            "REGISTER" => self.on_register(&key, &msg, &info, now),
            _ => self.respond(&key, 501, vec![(Name::ALLOW, ALLOW.into())], None, now),
        }
    }

    fn body_offer(info: &RequestInfo, msg: &Message) -> Result<Option<String>, ()> {
        if msg.body.is_empty() {
            return Ok(None);
        }
        let ctype_ok = info.content_type.as_deref().is_none_or(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/sdp")
        });
        if !ctype_ok {
            return Err(());
        }
        String::from_utf8(msg.body.to_vec())
            .map(Some)
            .map_err(|_| ())
    }

    fn on_invite(
        &mut self,
        key: &str,
        info: &RequestInfo,
        msg: &Message,
        t: Transport,
        from: SocketAddr,
        now: Duration,
    ) {
        let offer = match Self::body_offer(info, msg) {
            Ok(o) => o,
            Err(()) => {
                self.respond(
                    key,
                    415,
                    vec![(Name::ACCEPT, "application/sdp".into())],
                    None,
                    now,
                );
                return;
            }
        };
        let call = CallHandle(self.st.next_call);
        self.st.next_call += 1;
        let local_tag = match self.st.server_txs.get_mut(key) {
            Some(tx) => {
                tx.call = Some(call);
                tx.to_tag.clone()
            }
            None => return,
        };
        let remote_uri = message::from_to_uri(&info.from);
        let dialog = Dialog {
            call,
            call_id: info.call_id.clone(),
            room: info.user.clone(),
            local_tag: local_tag.clone(),
            remote_tag: info.from.tag.as_deref().unwrap_or("").to_string(),
            remote_uri: remote_uri.clone(),
            local_party: info.to_raw.clone(),
            remote_party: info.from_raw.clone(),
            remote_cseq: info.cseq.cseq,
            local_cseq: 0,
            route_set: info.record_route.clone(),
            remote_target: info
                .contact_uri
                .clone()
                .unwrap_or_else(|| remote_uri.clone()),
            transport: t,
            peer: from,
            state: DialogState::Early,
            pending_invite: Some(key.to_string()),
            bye_branch: None,
            expires_at: None,
        };
        self.st
            .dialog_index
            .insert(dialog_key(&info.call_id, &local_tag), call);
        self.st.dialogs.insert(call, dialog);
        self.respond(key, 100, vec![], None, now);
        self.events.push_back(Event::IncomingCall {
            call,
            room: info.user.clone(),
            from_uri: remote_uri,
            source: from,
            transport: t,
            offer,
        });
    }

    fn on_reinvite(
        &mut self,
        key: &str,
        call: CallHandle,
        info: &RequestInfo,
        msg: &Message,
        now: Duration,
    ) {
        let Some(d) = self.st.dialogs.get(&call) else {
            return;
        };
        if d.pending_invite.is_some() || d.state == DialogState::Accepted {
            // RFC 3261 14.2: an INVITE transaction is still in progress.
            self.respond(key, 500, vec![(Name::RETRY_AFTER, "1".into())], None, now);
            return;
        }
        if d.state == DialogState::Ended || d.bye_branch.is_some() {
            self.respond(key, 481, vec![], None, now);
            return;
        }
        let offer = match Self::body_offer(info, msg) {
            Ok(o) => o,
            Err(()) => {
                self.respond(
                    key,
                    415,
                    vec![(Name::ACCEPT, "application/sdp".into())],
                    None,
                    now,
                );
                return;
            }
        };
        if let Some(d) = self.st.dialogs.get_mut(&call) {
            if let Some(c) = &info.contact_uri {
                d.remote_target = c.clone();
            }
            d.pending_invite = Some(key.to_string());
        }
        if let Some(tx) = self.st.server_txs.get_mut(key) {
            tx.reinvite = true;
        }
        self.respond(key, 100, vec![], None, now);
        self.events.push_back(Event::ReInvite { call, offer });
    }

    fn on_cancel(&mut self, key: &str, info: &RequestInfo, now: Duration) {
        let invite_key = Self::tx_key(info, "INVITE");
        let Some(inv) = self.st.server_txs.get(&invite_key) else {
            self.respond(key, 481, vec![], None, now);
            return;
        };
        // The CANCEL's response carries the same To-tag as the INVITE's responses.
        let (inv_state, inv_call, reinvite, inv_tag) =
            (inv.state, inv.call, inv.reinvite, inv.to_tag.clone());
        if let Some(tx) = self.st.server_txs.get_mut(key) {
            tx.to_tag = inv_tag;
        }
        self.respond(key, 200, vec![], None, now);
        if inv_state != ServerTxState::Proceeding {
            return;
        }
        self.respond(&invite_key, 487, vec![], None, now);
        let Some(call) = inv_call else { return };
        if reinvite {
            if let Some(d) = self.st.dialogs.get_mut(&call) {
                d.pending_invite = None;
            }
        } else if self.remove_dialog(call).is_some() {
            self.events.push_back(Event::CallEnded {
                call,
                reason: EndReason::Cancelled,
            });
        }
    }

    fn on_bye(&mut self, key: &str, dialog: Option<CallHandle>, now: Duration) {
        let Some(call) = dialog else {
            self.respond(key, 481, vec![], None, now);
            return;
        };
        self.respond(key, 200, vec![], None, now);
        let Some(d) = self.st.dialogs.get(&call) else {
            return;
        };
        let ended = d.state == DialogState::Ended;
        if let Some(k) = d.pending_invite.clone() {
            if self
                .st
                .server_txs
                .get(&k)
                .is_some_and(|tx| tx.state == ServerTxState::Proceeding)
            {
                self.respond(&k, 487, vec![], None, now);
            }
        }
        // Stop retransmitting a 2xx nobody will ACK now.
        let accepted: Vec<String> = self
            .st
            .server_txs
            .iter()
            .filter(|(_, tx)| tx.call == Some(call) && tx.state == ServerTxState::Accepted)
            .map(|(k, _)| k.clone())
            .collect();
        for k in accepted {
            if let Some(tx) = self.st.server_txs.get_mut(&k) {
                tx.state = ServerTxState::Confirmed;
                tx.retransmit_at = None;
            }
        }
        self.remove_dialog(call);
        if !ended {
            self.events.push_back(Event::CallEnded {
                call,
                reason: EndReason::ByeReceived,
            });
        }
    }

    fn on_info(
        &mut self,
        key: &str,
        dialog: Option<CallHandle>,
        info: &RequestInfo,
        msg: &Message,
        now: Duration,
    ) {
        let Some(call) = dialog else {
            self.respond(key, 481, vec![], None, now);
            return;
        };
        self.respond(key, 200, vec![], None, now);
        let ctype = info
            .content_type
            .as_deref()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let body = String::from_utf8_lossy(&msg.body);
        let digit = match ctype.as_str() {
            "application/dtmf-relay" => body.lines().find_map(|l| {
                let (k, v) = l.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("signal")
                    .then(|| v.trim().to_string())
            }),
            "application/dtmf" => Some(body.trim().to_string()),
            _ => None,
        };
        let digit = digit.and_then(|s| match s.as_str() {
            "10" => Some('*'),
            "11" => Some('#'),
            _ => {
                let mut c = s.chars();
                match (c.next(), c.next()) {
                    (Some(ch), None)
                        if ch.is_ascii_digit()
                            || matches!(ch, '*' | '#' | 'A'..='D' | 'a'..='d') =>
                    {
                        Some(ch.to_ascii_uppercase())
                    }
                    _ => None,
                }
            }
        });
        if let Some(digit) = digit {
            self.events.push_back(Event::InfoDtmf { call, digit });
        }
    }

    fn on_register(&mut self, key: &str, msg: &Message, info: &RequestInfo, now: Duration) {
        // We are not a registrar: we accept and echo the bindings without storing them, so
        // softphones configured with an account keep working (see README).
        let star = info.contacts_raw.iter().any(|c| c.trim() == "*");
        let mut extra = Vec::new();
        if !star && !info.contacts_raw.is_empty() {
            let contacts: Vec<Contact> = match msg.headers.get(Name::CONTACT) {
                Ok(c) => c,
                Err(_) => {
                    self.respond(key, 400, vec![], None, now);
                    return;
                }
            };
            let default = info.expires.unwrap_or(MAX_EXPIRES).min(MAX_EXPIRES);
            for mut c in contacts {
                let e = c
                    .params
                    .get_val("expires")
                    .and_then(|v| v.trim().parse::<u32>().ok())
                    .unwrap_or(default)
                    .min(MAX_EXPIRES);
                c.params.push_or_edit("expires", e.to_string());
                let ctx = PrintCtx {
                    method: None,
                    uri: Some(UriContext::Contact),
                };
                extra.push((Name::CONTACT, c.print_ctx(ctx).to_string()));
            }
        }
        self.respond(key, 200, extra, None, now);
    }

    fn on_ack(&mut self, info: &RequestInfo, msg: &Message, now: Duration) {
        let key = Self::tx_key(info, "INVITE");
        let by_key = self.st.server_txs.get(&key).map(|tx| tx.state);
        match by_key {
            Some(ServerTxState::Completed) => {
                // ACK of our non-2xx final response: timer I.
                if let Some(tx) = self.st.server_txs.get_mut(&key) {
                    tx.state = ServerTxState::Confirmed;
                    tx.retransmit_at = None;
                    let udp = tx.transport == Transport::Udp;
                    tx.expires_at = Some(if udp { now.saturating_add(T4) } else { now });
                }
                return;
            }
            Some(ServerTxState::Confirmed) => {
                self.st.stats.retransmissions_absorbed += 1;
                return;
            }
            _ => {}
        }
        // ACK of a 2xx: matched to the dialog and CSeq.
        let Some(tag) = info.to.tag.as_ref() else {
            return;
        };
        let Some(call) = self
            .st
            .dialog_index
            .get(&dialog_key(&info.call_id, tag))
            .copied()
        else {
            return;
        };
        let found = self.st.server_txs.iter().find(|(_, tx)| {
            tx.call == Some(call) && tx.method == "INVITE" && tx.cseq == info.cseq.cseq
        });
        let Some((tx_key, tx)) = found else { return };
        if tx.state != ServerTxState::Accepted {
            self.st.stats.retransmissions_absorbed += 1;
            return;
        }
        let tx_key = tx_key.clone();
        let Some(tx) = self.st.server_txs.get_mut(&tx_key) else {
            return;
        };
        tx.state = ServerTxState::Confirmed;
        tx.retransmit_at = None;
        let had_offer = tx.had_offer;
        // Keep absorbing INVITE retransmissions until 64*T1 after the 2xx (RFC 6026 timer L).
        let answer = if had_offer || msg.body.is_empty() {
            None
        } else {
            Some(String::from_utf8_lossy(&msg.body).into_owned())
        };
        if self
            .st
            .dialogs
            .get(&call)
            .is_some_and(|d| d.state != DialogState::Ended)
        {
            if let Some(d) = self.st.dialogs.get_mut(&call) {
                d.state = DialogState::Confirmed;
            }
            self.events.push_back(Event::Confirmed { call, answer });
        }
    }

    // ---------------------------------------------------------------- responses from peers

    fn on_response(&mut self, msg: Message, _now: Duration) {
        let MessageLine::Response(sl) = &msg.line else {
            return;
        };
        let status = sl.code.into_u16();
        let Ok(vias) = msg.headers.get_named::<Vec<Via>>() else {
            return;
        };
        let Some(branch) = vias
            .first()
            .and_then(|v| v.params.get_val("branch"))
            .map(|b| b.to_string())
        else {
            return;
        };
        if status < 200 {
            return;
        }
        let Some(tx) = self.st.client_txs.remove(&branch) else {
            return;
        };
        self.finish_bye(tx.call);
    }

    fn finish_bye(&mut self, call: CallHandle) {
        if let Some(d) = self.remove_dialog(call) {
            if d.state != DialogState::Ended {
                self.events.push_back(Event::CallEnded {
                    call,
                    reason: EndReason::ByeSent,
                });
            }
        }
    }

    fn remove_dialog(&mut self, call: CallHandle) -> Option<Dialog> {
        let d = self.st.dialogs.remove(&call)?;
        self.st
            .dialog_index
            .remove(&dialog_key(&d.call_id, &d.local_tag));
        if let Some(b) = &d.bye_branch {
            self.st.client_txs.remove(b);
        }
        self.st
            .server_txs
            .retain(|_, tx| !(tx.call == Some(call) && tx.state == ServerTxState::Proceeding));
        Some(d)
    }

    // ---------------------------------------------------------------- commands

    pub(crate) fn accept(
        &mut self,
        call: CallHandle,
        sdp: String,
        now: Duration,
    ) -> Result<(), Error> {
        let d = self.st.dialogs.get(&call).ok_or(Error::UnknownCall(call))?;
        if d.state == DialogState::Ended {
            return Err(Error::UnknownCall(call));
        }
        let key = d
            .pending_invite
            .clone()
            .ok_or(Error::InvalidState("no INVITE awaiting an answer"))?;
        let contact = self.contact(&d.room, d.transport);
        let extra = vec![
            (Name::CONTACT, contact),
            (Name::ALLOW, ALLOW.to_string()),
            (Name::SUPPORTED, String::new()),
        ];
        self.respond(&key, 200, extra, Some(("application/sdp", &sdp)), now);
        if let Some(d) = self.st.dialogs.get_mut(&call) {
            d.pending_invite = None;
            if d.state == DialogState::Early {
                d.state = DialogState::Accepted;
            }
        }
        Ok(())
    }

    pub(crate) fn reject(
        &mut self,
        call: CallHandle,
        status: u16,
        reason: Option<&str>,
        now: Duration,
    ) -> Result<(), Error> {
        if !(300..700).contains(&status) {
            return Err(Error::InvalidState("reject status must be 300..=699"));
        }
        let d = self.st.dialogs.get(&call).ok_or(Error::UnknownCall(call))?;
        if d.state == DialogState::Ended {
            return Err(Error::UnknownCall(call));
        }
        let key = d
            .pending_invite
            .clone()
            .ok_or(Error::InvalidState("no INVITE awaiting an answer"))?;
        let initial = d.state == DialogState::Early;
        self.respond_with_reason(&key, status, reason, vec![], None, now);
        if initial {
            self.remove_dialog(call);
            self.events.push_back(Event::CallEnded {
                call,
                reason: EndReason::Rejected(status),
            });
        } else if let Some(d) = self.st.dialogs.get_mut(&call) {
            d.pending_invite = None;
        }
        Ok(())
    }

    pub(crate) fn hangup(&mut self, call: CallHandle, now: Duration) -> Result<(), Error> {
        let d = self.st.dialogs.get(&call).ok_or(Error::UnknownCall(call))?;
        match d.state {
            DialogState::Confirmed | DialogState::Ended => {}
            DialogState::Early => return Err(Error::InvalidState("call not answered; use reject")),
            DialogState::Accepted => return Err(Error::InvalidState("waiting for ACK")),
        }
        if d.bye_branch.is_some() {
            return Err(Error::InvalidState("BYE already sent"));
        }
        if let Some(k) = d.pending_invite.clone() {
            // A re-INVITE the application has not answered: terminate it first.
            self.respond(&k, 487, vec![], None, now);
            if let Some(d) = self.st.dialogs.get_mut(&call) {
                d.pending_invite = None;
            }
        }
        let branch = self.st.rng.branch();
        let Some(d) = self.st.dialogs.get_mut(&call) else {
            return Err(Error::UnknownCall(call));
        };
        d.local_cseq = d.local_cseq.saturating_add(1);
        d.bye_branch = Some(branch.clone());
        let d = d.clone();
        let (ruri, routes) = match d.route_set.first() {
            Some(first) if !first.contains(";lr") => {
                // Strict router (RFC 3261 12.2.1.1).
                let uri = first
                    .trim()
                    .trim_start_matches('<')
                    .split('>')
                    .next()
                    .unwrap_or("")
                    .to_string();
                let mut r: Vec<String> = d.route_set[1..].to_vec();
                r.push(format!("<{}>", d.remote_target));
                (uri, r)
            }
            _ => (d.remote_target.clone(), d.route_set.clone()),
        };
        let mut h = Headers::new();
        let via = format!(
            "SIP/2.0/{} {};branch={branch};rport",
            Self::transport_name(d.transport),
            self.config.local_addr
        );
        put(&mut h, Name::VIA, &via);
        put(&mut h, Name::MAX_FORWARDS, "70");
        put(
            &mut h,
            Name::FROM,
            &format!("{};tag={}", d.local_party, d.local_tag),
        );
        put(&mut h, Name::TO, &d.remote_party);
        put(&mut h, Name::CALL_ID, &d.call_id);
        put(&mut h, Name::CSEQ, &format!("{} BYE", d.local_cseq));
        for r in routes {
            put(&mut h, Name::ROUTE, &r);
        }
        put(&mut h, Name::USER_AGENT, &self.config.user_agent);
        put(&mut h, Name::CONTENT_LENGTH, "0");
        let req = format!("BYE {ruri} SIP/2.0\r\n{h}\r\n");
        self.send(d.transport, d.peer, req.clone());
        let udp = d.transport == Transport::Udp;
        self.st.client_txs.insert(
            branch,
            ClientTx {
                call,
                request: req,
                transport: d.transport,
                dest: d.peer,
                retransmit_at: udp.then_some(now.saturating_add(T1)),
                interval: T1,
                expires_at: now.saturating_add(TIMEOUT_64T1),
            },
        );
        Ok(())
    }

    // ---------------------------------------------------------------- timers

    pub(crate) fn handle_timeout(&mut self, now: Duration) {
        // Only due transactions are touched (and so recorded as changed); each one's timers
        // depend on its own fields only, so selecting them first keeps the order and outcome.
        let due = |at: Option<Duration>| at.is_some_and(|t| t <= now);
        let keys: Vec<String> = self
            .st
            .server_txs
            .iter()
            .filter(|(_, tx)| due(tx.expires_at) || due(tx.retransmit_at))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            let Some(tx) = self.st.server_txs.get_mut(&key) else {
                continue;
            };
            if tx.expires_at.is_some_and(|e| e <= now) {
                let Some(tx) = self.st.server_txs.remove(&key) else {
                    continue;
                };
                if tx.state == ServerTxState::Accepted {
                    // 2xx never ACKed (RFC 3261 13.3.1.4): the application should BYE.
                    if let Some(call) = tx.call {
                        if let Some(d) = self.st.dialogs.get_mut(&call) {
                            if d.state != DialogState::Ended {
                                d.state = DialogState::Ended;
                                d.expires_at = Some(now.saturating_add(TIMEOUT_64T1));
                                self.events.push_back(Event::CallEnded {
                                    call,
                                    reason: EndReason::AckTimeout,
                                });
                            }
                        }
                    }
                }
                continue;
            }
            let mut resend = None;
            if tx.retransmit_at.is_some_and(|at| at <= now) {
                resend = tx.last_response.clone();
                tx.retransmit_at = next_retransmit(tx.retransmit_at, &mut tx.interval, now);
            }
            if let Some(r) = resend {
                let (t, d) = (tx.transport, tx.dest);
                self.send(t, d, r);
            }
        }
        let branches: Vec<String> = self
            .st
            .client_txs
            .iter()
            .filter(|(_, tx)| tx.expires_at <= now || due(tx.retransmit_at))
            .map(|(k, _)| k.clone())
            .collect();
        for b in branches {
            let Some(tx) = self.st.client_txs.get_mut(&b) else {
                continue;
            };
            if tx.expires_at <= now {
                let call = tx.call;
                self.st.client_txs.remove(&b);
                self.finish_bye(call);
                continue;
            }
            let mut resend = false;
            if tx.retransmit_at.is_some_and(|at| at <= now) {
                resend = true;
                tx.retransmit_at = next_retransmit(tx.retransmit_at, &mut tx.interval, now);
            }
            if resend {
                let (t, d, r) = (tx.transport, tx.dest, tx.request.clone());
                self.send(t, d, r);
            }
        }
        let stale: Vec<CallHandle> = self
            .st
            .dialogs
            .values()
            .filter(|d| d.bye_branch.is_none() && d.expires_at.is_some_and(|e| e <= now))
            .map(|d| d.call)
            .collect();
        for call in stale {
            self.remove_dialog(call);
        }
    }

    pub(crate) fn poll_timeout(&self) -> Option<Duration> {
        let s = self
            .st
            .server_txs
            .values()
            .flat_map(|t| [t.retransmit_at, t.expires_at]);
        let c = self
            .st
            .client_txs
            .values()
            .flat_map(|t| [t.retransmit_at, Some(t.expires_at)]);
        let d = self
            .st
            .dialogs
            .values()
            .filter(|d| d.bye_branch.is_none())
            .map(|d| d.expires_at);
        s.chain(c).chain(d).flatten().min()
    }

    pub(crate) fn calls(&self) -> Vec<CallInfo> {
        self.st
            .dialogs
            .values()
            .filter(|d| d.state != DialogState::Ended)
            .map(|d| CallInfo {
                call: d.call,
                call_id: d.call_id.clone(),
                room: d.room.clone(),
                remote_uri: d.remote_uri.clone(),
                confirmed: d.state == DialogState::Confirmed,
            })
            .collect()
    }

    pub(crate) fn stats(&self) -> Stats {
        self.st.stats.clone()
    }
}
