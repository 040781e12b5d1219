//! HTTP API: `GET /healthz`, `GET /metrics`, the admin page and the participant page
//! ([`crate::web`]) and the participant page's roster (`GET /rooms/{room}/members`), WHIP for
//! browsers (`POST /whip/{room}`, `DELETE /whip/{room}/{id}`, RFC 9725), the admin API under
//! `/api/` (`GET /api/rooms`, `GET /api/events`, `GET /api/status`, `GET /api/ws` (live
//! updates, [`crate::live`]), `POST /api/failover`, and the operator's controls: mute, unmute
//! and kick a participant, lock a room or cap its size), and the HTTP/1.1 server that serves
//! it all ([`serve`]) within limits: a connection cap, a header read timeout and a shutdown
//! deadline. WHIP offers carry at most [`MAX_WHIP_BODY`], admin requests [`MAX_ADMIN_BODY`].
//! A connection upgraded to a WebSocket leaves the HTTP server (and its cap): [`crate::live`]
//! limits and closes those.
//!
//! The admin API needs the bearer token when one is configured ([`crate::auth`]: one
//! middleware over the whole router, keyed on the `/api/` prefix). Its controls are decided
//! by the control core ([`control::Core::handle_admin`]) and answered once replicated; their
//! errors are JSON `{"error": "..."}`: 404 for a room or participant it does not have (a
//! participant of another room included), 400 for malformed JSON, wrong types or unknown
//! fields, 413 for a body over [`MAX_ADMIN_BODY`], 415 for a body that is not
//! `application/json`, 503 when the server cannot answer (a backup, shutting down).

use crate::limits::{self, AcceptBackoff, FdReserve};
use crate::metrics::{ListenLabel, Metrics};
use crate::state::WhipRequest;
use crate::state::{RoomView, Shared};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::State;
use axum::extract::{DefaultBodyLimit, Path, Query};
use axum::http::header;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use control::{AdminCommand, AdminError, AdminResult, SettingsChange, WhipResult};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// The API router. Every path under `/api/` passes [`crate::auth::require_token`] (the last
/// layer: it covers every route above it and paths no route serves).
pub fn router(shared: Shared) -> Router {
    let token = shared.admin_token.clone();
    let admin_body = || DefaultBodyLimit::max(MAX_ADMIN_BODY);
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/openapi.yaml", get(openapi))
        .route("/api/rooms", get(rooms))
        .route("/api/rooms/{room}", put(room_settings).layer(admin_body()))
        .route(
            "/api/rooms/{room}/participants/{id}",
            delete(kick).layer(admin_body()),
        )
        .route(
            "/api/rooms/{room}/participants/{id}/mute",
            post(mute).layer(admin_body()),
        )
        .route(
            "/api/rooms/{room}/participants/{id}/unmute",
            post(unmute).layer(admin_body()),
        )
        .route("/api/events", get(events))
        .route("/api/status", get(status))
        .route("/api/failover", post(failover))
        .route("/api/ws", get(crate::live::ws_handler))
        .route("/rooms/{room}/members", get(members))
        .route("/metrics", get(metrics))
        .route(
            "/whip/{room}",
            post(whip_offer)
                .options(whip_options)
                .layer(DefaultBodyLimit::max(MAX_WHIP_BODY))
                .layer(axum::middleware::map_response(with_cors)),
        )
        .route(
            "/whip/{room}/{id}",
            delete(whip_delete)
                .options(whip_options)
                .layer(axum::middleware::map_response(with_cors)),
        )
        .merge(crate::web::routes())
        .with_state(shared)
        .layer(axum::middleware::from_fn_with_state(
            token,
            crate::auth::require_token,
        ))
}

/// Largest body an admin request may carry, bytes (more: 413).
pub const MAX_ADMIN_BODY: usize = 4 * 1024;

/// How long an admin request waits for the server's answer.
const ADMIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// An error of the admin API: `{"error": msg}` with `status`.
pub fn json_error(status: StatusCode, msg: &str) -> Response {
    let mut r = (status, Json(serde_json::json!({ "error": msg }))).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Why an admin request fails: answered as [`json_error`].
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    msg: String,
}

impl ApiError {
    fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        ApiError {
            status,
            msg: msg.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_error(self.status, &self.msg)
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        let status = match e {
            AdminError::UnknownRoom | AdminError::UnknownParticipant => StatusCode::NOT_FOUND,
            AdminError::InvalidMaxParticipants { .. } => StatusCode::BAD_REQUEST,
            AdminError::NotServing => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<BytesRejection> for ApiError {
    /// A body over the limit (413) or one that broke off.
    fn from(e: BytesRejection) -> Self {
        ApiError::new(e.status(), e.body_text())
    }
}

/// The request's JSON body as a `T` (no unknown field): at most [`MAX_ADMIN_BODY`] (413),
/// `Content-Type: application/json` (415), well-formed with the right types (400).
fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    parse_json(headers, &body?)
}

/// The body of a request without parameters: nothing (whatever its Content-Type), or `{}` as
/// [`json_body`] takes it.
fn no_params(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<(), ApiError> {
    let body = body?;
    if body.is_empty() {
        return Ok(());
    }
    parse_json::<NoParams>(headers, &body).map(|_| ())
}

fn parse_json<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be sent as Content-Type: application/json",
        ));
    }
    let bad = |e: serde_json::Error| {
        ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}"))
    };
    // An object, nothing else: serde would also build a struct from an array of its fields
    // (`[true, 5]`, `[null, null]`), which the API does not document.
    let value: serde_json::Value = serde_json::from_slice(body).map_err(bad)?;
    if !value.is_object() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid JSON body: a JSON object is expected",
        ));
    }
    serde_json::from_value(value).map_err(bad)
}

/// The body a request without parameters may carry: nothing, or `{}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

/// `PUT /api/rooms/{room}`'s body: every field optional (absent or null: unchanged).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomSettingsBody {
    locked: Option<bool>,
    max_participants: Option<u64>,
    /// `"switched"` or `"grid"` (anything else: 400).
    layout: Option<control::VideoLayout>,
}

/// `PUT /api/rooms/{room}`'s answer: the room's settings.
#[derive(Serialize)]
struct RoomSettingsReply {
    name: String,
    locked: bool,
    max_participants: usize,
    layout: control::VideoLayout,
}

/// The room name of an admin path, or 404.
fn admin_room(room: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    match room {
        Ok(Path(name)) if control::valid_room_name(&name) => Ok(name),
        _ => Err(AdminError::UnknownRoom.into()),
    }
}

/// The room and participant of an admin path, or 404.
fn admin_participant(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, u64), ApiError> {
    let Ok(Path((room, id))) = path else {
        return Err(AdminError::UnknownParticipant.into());
    };
    if !control::valid_room_name(&room) {
        return Err(AdminError::UnknownRoom.into());
    }
    let id = id
        .parse::<u64>()
        .map_err(|_| ApiError::from(AdminError::UnknownParticipant))?;
    Ok((room, id))
}

/// Send an operator's request to the server task and wait for its answer; a refusal as its
/// HTTP error.
async fn admin_call(s: &Shared, cmd: AdminCommand) -> Result<AdminResult, ApiError> {
    let unavailable = |msg: &str| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, msg);
    let Some(tx) = &s.admin else {
        return Err(unavailable("not serving"));
    };
    let (reply, rx) = tokio::sync::oneshot::channel();
    if tx.send(crate::state::AdminRequest { cmd, reply }).is_err() {
        return Err(unavailable("shutting down"));
    }
    match tokio::time::timeout(ADMIN_TIMEOUT, rx).await {
        Ok(Ok(AdminResult::Refused(e))) => Err(e.into()),
        Ok(Ok(r)) => Ok(r),
        _ => Err(unavailable("the server did not answer in time")),
    }
}

/// The core answered another kind of result than the request's (never expected).
fn unexpected(r: AdminResult) -> ApiError {
    tracing::error!(?r, "admin API: unexpected answer");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "unexpected answer")
}

/// `PUT /api/rooms/{room}`: `{"locked": bool, "max_participants": N, "layout": "switched"|"grid"}`
/// (each optional) ->
/// 200 with the room's settings.
async fn room_settings(
    State(s): State<Shared>,
    room: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RoomSettingsReply>, ApiError> {
    let room = admin_room(room)?;
    let body: RoomSettingsBody = json_body(&headers, body)?;
    // Larger than any usize: larger than any server's limit, which the core refuses.
    let max_participants = body
        .max_participants
        .map(|m| usize::try_from(m).unwrap_or(usize::MAX));
    let change = SettingsChange {
        locked: body.locked,
        max_participants,
        layout: body.layout,
    };
    match admin_call(&s, AdminCommand::Settings { room, change }).await? {
        AdminResult::Settings {
            room,
            settings,
            max_participants,
            layout,
        } => Ok(Json(RoomSettingsReply {
            name: room,
            locked: settings.locked,
            max_participants,
            layout,
        })),
        other => Err(unexpected(other)),
    }
}

/// `POST .../mute` and `.../unmute`: 200 with the participant as `GET /api/rooms` shows it.
async fn set_muted(
    s: Shared,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    muted: bool,
) -> Result<Response, ApiError> {
    let (room, id) = admin_participant(path)?;
    no_params(&headers, body)?;
    let (room, id, muted) = match admin_call(&s, AdminCommand::Mute { room, id, muted }).await? {
        AdminResult::Muted { room, id, muted } => (room, id, muted),
        other => return Err(unexpected(other)),
    };
    let view = s
        .rooms
        .lock()
        .unwrap()
        .get(&room)
        .cloned()
        .and_then(|r| r.lock().unwrap().participants.get(&id).cloned());
    Ok(match view {
        Some(mut v) => {
            v.muted = muted;
            Json(v).into_response()
        }
        // Still joining: not in the room's view yet.
        None => Json(serde_json::json!({ "id": id, "muted": muted })).into_response(),
    })
}

async fn mute(
    State(s): State<Shared>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    set_muted(s, path, headers, body, true).await
}

async fn unmute(
    State(s): State<Shared>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    set_muted(s, path, headers, body, false).await
}

/// `DELETE /api/rooms/{room}/participants/{id}`: 204 once its BYE went out (SIP) or its
/// session is closed (WebRTC).
async fn kick(
    State(s): State<Shared>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let (room, id) = admin_participant(path)?;
    no_params(&headers, body)?;
    match admin_call(&s, AdminCommand::Kick { room, id }).await? {
        AdminResult::Kicked { .. } => Ok(StatusCode::NO_CONTENT),
        other => Err(unexpected(other)),
    }
}

/// One participant as the participant page shows it: no address, no SIP URI, no counters.
#[derive(Serialize)]
struct Member {
    /// Participant id (the page marks its own participant with it).
    id: u64,
    /// Display name: a WebRTC participant's own, a SIP caller's user part (as in its URI).
    name: String,
    /// `sip` or `webrtc`.
    kind: String,
    speaking: bool,
    level_dbov: f32,
    muted: bool,
}

#[derive(Serialize)]
struct MembersReply {
    room: String,
    active_speaker: Option<u64>,
    members: Vec<Member>,
}

/// A SIP caller's display name: the user part of its URI (never the host: an address), else
/// "SIP caller".
fn sip_display_name(uri: &str) -> String {
    let uri = uri.trim().trim_start_matches('<');
    let scheme = |s: &str| {
        uri.get(..s.len())
            .filter(|p| p.eq_ignore_ascii_case(s))
            .map(|_| &uri[s.len()..])
    };
    let user = if let Some(rest) = scheme("sip:").or_else(|| scheme("sips:")) {
        rest.split_once('@').map_or("", |(u, _)| u)
    } else {
        scheme("tel:").unwrap_or("")
    };
    // No password, no parameters.
    let user = user.split([':', ';', '>']).next().unwrap_or_default();
    if user.is_empty() {
        "SIP caller".into()
    } else {
        user.chars().take(64).collect()
    }
}

/// `GET /rooms/{room}/members` (open: the participant page's roster): who is in the room,
/// their kind, whether they speak and how loud. A valid room name nobody is in has no
/// members; an invalid one is 404.
async fn members(State(s): State<Shared>, room: Result<Path<String>, PathRejection>) -> Response {
    let room = match room {
        Ok(Path(name)) if control::valid_room_name(&name) => name,
        _ => return json_error(StatusCode::NOT_FOUND, "no such room name"),
    };
    let view = s.rooms.lock().unwrap().get(&room).cloned();
    let (active_speaker, members) = match view {
        Some(v) => {
            let v = v.lock().unwrap();
            let members = v
                .participants
                .values()
                .map(|p| Member {
                    id: p.id,
                    name: if p.kind == "sip" {
                        sip_display_name(&p.sip_uri)
                    } else {
                        p.sip_uri.clone()
                    },
                    kind: p.kind.clone(),
                    speaking: p.stats.speaking,
                    level_dbov: p.stats.level_dbov,
                    muted: p.muted,
                })
                .collect();
            (v.active_speaker, members)
        }
        None => (None, Vec::new()),
    };
    let mut r = Json(MembersReply {
        room,
        active_speaker,
        members,
    })
    .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Largest WHIP offer accepted, bytes (Chromium's offers are 3-6 KiB).
pub const MAX_WHIP_BODY: usize = 64 * 1024;

/// How long a WHIP request waits for the server's answer.
const WHIP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Every WHIP response, including axum's own refusals (a body over [`MAX_WHIP_BODY`], not
/// UTF-8, a method not allowed), carries the CORS headers: a page on another origin can read
/// why its request failed.
async fn with_cors(mut r: Response) -> Response {
    cors(r.headers_mut());
    r
}

/// CORS headers on every WHIP response (a page on another origin may call it).
fn cors(h: &mut HeaderMap) {
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("POST, DELETE, OPTIONS"),
    );
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("Content-Type, Authorization, If-Match"),
    );
    h.insert(
        "access-control-expose-headers",
        HeaderValue::from_static("Location"),
    );
}

fn whip_text(status: StatusCode, reason: &str) -> Response {
    let mut r = (status, format!("{reason}\n")).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn whip_options() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut()
        .insert("accept-post", HeaderValue::from_static("application/sdp"));
    r
}

#[derive(serde::Deserialize)]
struct WhipQuery {
    name: Option<String>,
}

/// Send a request to the server task and wait for its answer.
async fn whip_call(
    s: &Shared,
    make: impl FnOnce(tokio::sync::oneshot::Sender<WhipResult>) -> WhipRequest,
) -> Result<WhipResult, Response> {
    let Some(tx) = &s.whip else {
        return Err(whip_text(
            StatusCode::NOT_FOUND,
            "WebRTC is not enabled on this server",
        ));
    };
    let (reply, rx) = tokio::sync::oneshot::channel();
    if tx.send(make(reply)).is_err() {
        return Err(whip_text(StatusCode::SERVICE_UNAVAILABLE, "shutting down"));
    }
    match tokio::time::timeout(WHIP_TIMEOUT, rx).await {
        Ok(Ok(r)) => Ok(r),
        _ => Err(whip_text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server did not answer in time",
        )),
    }
}

fn whip_result(room: &str, r: WhipResult) -> Response {
    match r {
        WhipResult::Created { id, sdp } => {
            let mut resp = (StatusCode::CREATED, sdp).into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/sdp"),
            );
            // The room name passed valid_room_name: URL-safe as it is.
            if let Ok(v) = HeaderValue::from_str(&format!("/whip/{room}/{id}")) {
                h.insert(header::LOCATION, v);
            }
            resp
        }
        WhipResult::Deleted => whip_text(StatusCode::OK, "left"),
        WhipResult::Refused { status, reason } => whip_text(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            &reason,
        ),
    }
}

/// `POST /whip/{room}`: the browser's offer in, our answer out (201 + Location).
async fn whip_offer(
    State(s): State<Shared>,
    Path(room): Path<String>,
    Query(q): Query<WhipQuery>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let sdp_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/sdp"));
    if !sdp_type {
        return whip_text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the offer must be sent as Content-Type: application/sdp",
        );
    }
    let r = whip_call(&s, |reply| WhipRequest::Offer {
        room: room.clone(),
        sdp: body,
        name: q.name,
        reply,
    })
    .await;
    match r {
        Ok(r) => whip_result(&room, r),
        Err(resp) => resp,
    }
}

/// `DELETE /whip/{room}/{id}`: the participant leaves.
async fn whip_delete(
    State(s): State<Shared>,
    Path((room, id)): Path<(String, String)>,
) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return whip_text(StatusCode::NOT_FOUND, "no such participant");
    };
    match whip_call(&s, |reply| WhipRequest::Delete {
        room: room.clone(),
        id,
        reply,
    })
    .await
    {
        Ok(r) => whip_result(&room, r),
        Err(resp) => resp,
    }
}

#[derive(Serialize)]
struct RoomsReply {
    rooms: Vec<RoomView>,
}

async fn rooms(State(s): State<Shared>) -> Json<RoomsReply> {
    let rooms = s
        .rooms
        .lock()
        .unwrap()
        .values()
        .cloned()
        .collect::<Vec<_>>();
    let rooms = rooms.iter().map(|r| r.lock().unwrap().clone()).collect();
    Json(RoomsReply { rooms })
}

async fn status(State(s): State<Shared>) -> impl IntoResponse {
    let st = s.status.lock().unwrap().clone();
    Json(st)
}

/// `POST /api/failover`: planned switchover to the backup (202 with the handover tick), or
/// 409 with the reason it cannot happen now (no hot standby, not the primary, no synced
/// backup, one under way).
async fn failover(State(s): State<Shared>) -> Response {
    let conflict = |why: String| {
        (
            StatusCode::CONFLICT,
            Json(serde_json::json!({ "error": why })),
        )
            .into_response()
    };
    let Some(tx) = s.switchover.clone() else {
        return conflict("no hot standby configured".into());
    };
    let (reply, rx) = tokio::sync::oneshot::channel();
    if tx.send(reply).is_err() {
        return conflict("the server is stopping".into());
    }
    match rx.await {
        Ok(Ok(view)) => (StatusCode::ACCEPTED, Json(view)).into_response(),
        Ok(Err(why)) => conflict(why),
        Err(_) => conflict("the server is stopping".into()),
    }
}

/// The API's OpenAPI document (`mcu/openapi.yaml`).
const OPENAPI: &str = include_str!("../openapi.yaml");

/// `GET /openapi.yaml`: the API's description (open: it holds no data), with this server's
/// room size limit as the largest `max_participants` a room may be given.
async fn openapi(State(s): State<Shared>) -> Response {
    let doc = if s.max_participants > 0 {
        OPENAPI.replace(
            "maximum: 100 } # --max-participants",
            &format!("maximum: {} }} # --max-participants", s.max_participants),
        )
    } else {
        OPENAPI.to_string()
    };
    (
        [(header::CONTENT_TYPE, "application/yaml; charset=utf-8")],
        doc,
    )
        .into_response()
}

async fn events(State(s): State<Shared>) -> impl IntoResponse {
    let ev: Vec<_> = s.events.lock().unwrap().iter().cloned().collect();
    Json(ev)
}

async fn metrics(State(s): State<Shared>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

/// Limits of the HTTP server.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Most connections open at once; more are accepted and closed at once (counted).
    pub max_connections: usize,
    /// Time a client has to send a request's whole header; then the connection is closed.
    pub header_timeout: std::time::Duration,
}

/// Bind an HTTP listener on `addr` (port 0: any free port), with IP_FREEBIND: the address
/// need not be on this host yet. A hot-standby backup binds the service address this way and
/// its listener serves once the address is its own (before the takeover the backup's
/// netfilter queue drops every packet for it, so no client reaches this listener).
pub fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As `TcpListener::bind` does: a restart may bind while old connections are in TIME_WAIT.
    sock.set_reuse_address(true)?;
    match addr {
        SocketAddr::V4(_) => sock.set_freebind_v4(true)?,
        SocketAddr::V6(_) => sock.set_freebind_v6(true)?,
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(LISTEN_BACKLOG)?;
    tokio::net::TcpListener::from_std(sock.into())
}

/// Pending connections a listener's kernel queue holds (what `TcpListener::bind` uses).
const LISTEN_BACKLOG: i32 = 1024;

/// Serve `app` over HTTP/1.1 on every one of `listeners` until `stop` yields a deadline (or
/// is dropped: deadline now). One acceptor per listener; the connections of all of them
/// share one cap ([`HttpLimits::max_connections`]) and one reserve descriptor. At the
/// deadline: stop accepting, let the requests in flight finish until the deadline and drop
/// every connection still open (an idle client or one that never completes its request
/// cannot hold the process).
pub async fn serve(
    listeners: Vec<tokio::net::TcpListener>,
    app: Router,
    lim: HttpLimits,
    metrics: Metrics,
    mut stop: tokio::sync::oneshot::Receiver<std::time::Instant>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(lim.max_connections));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(lim.header_timeout);
    // Graceful shutdown of each connection (hyper-util's `GracefulShutdown` does not take
    // connections with upgrades): a request in flight finishes, an idle one closes.
    let (graceful, _) = tokio::sync::watch::channel(());
    let mut conns = tokio::task::JoinSet::new();
    // Out of descriptors, one connection at a time is still served (`/healthz`).
    let reserve = std::sync::Arc::new(FdReserve::default());
    // The acceptors hand their connections over one at a time: a connection waits in its
    // listener's backlog, not here, while the cap is checked.
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::channel(1);
    let mut acceptors = tokio::task::JoinSet::new();
    for listener in listeners {
        // The listener's counter exists (at 0) before any request can read /metrics.
        let label = ListenLabel {
            listen: listener
                .local_addr()
                .map_or_else(|e| format!("? ({e})"), |a| a.to_string()),
        };
        let counted = metrics.http_connections.get_or_create(&label).clone();
        acceptors.spawn(accept_loop(
            listener,
            accepted_tx.clone(),
            counted,
            metrics.clone(),
            reserve.clone(),
        ));
    }
    drop(accepted_tx);
    let deadline = loop {
        let stream = tokio::select! {
            d = &mut stop => break d.unwrap_or_else(|_| std::time::Instant::now()),
            Some(s) = accepted.recv() => s,
        };
        while conns.try_join_next().is_some() {}
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.http_rejected.inc();
            continue; // dropping the stream closes it
        };
        let conn = builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()))
            .with_upgrades();
        let (m, reserve) = (metrics.clone(), reserve.clone());
        let mut stopping = graceful.subscribe();
        conns.spawn(async move {
            tokio::pin!(conn);
            let done = tokio::select! {
                r = conn.as_mut() => r,
                _ = stopping.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = done {
                if e.is_timeout() {
                    m.http_header_timeouts.inc();
                }
            }
            // The connection's descriptor is closed: the reserve may take it.
            reserve.refill();
            drop(permit);
        });
    };
    // Every listener closed (the acceptors own them) before the drain.
    acceptors.shutdown().await;
    drop(accepted);
    let _ = graceful.send(());
    let drained = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout_at(deadline.into(), drained)
        .await
        .is_err()
    {
        tracing::warn!(
            connections = conns.len(),
            "HTTP: connections still open at the shutdown deadline, dropped"
        );
    }
    conns.shutdown().await;
}

/// Accept connections on `listener` and hand them to [`serve`] until it stops taking them.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    to_serve: tokio::sync::mpsc::Sender<tokio::net::TcpStream>,
    accepted: prometheus_client::metrics::counter::Counter,
    metrics: Metrics,
    reserve: std::sync::Arc<FdReserve>,
) {
    let mut backoff = AcceptBackoff::default();
    loop {
        let (stream, _) = limits::accept(
            &listener,
            &mut backoff,
            &metrics.http_accept_errors,
            "HTTP",
            Some(&reserve),
        )
        .await;
        accepted.inc();
        if to_serve.send(stream).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_display_names_never_show_a_host() {
        for (uri, name) in [
            ("sip:alice@198.18.0.5", "alice"),
            ("<sips:Bob@example.org;transport=tls>", "Bob"),
            ("SIP:carol;x=1@10.0.0.1:5070", "carol"),
            ("sip:dave:secret@10.0.0.1", "dave"),
            ("tel:+15551234;phone-context=x", "+15551234"),
            ("sip:198.18.0.5", "SIP caller"),
            ("sip:@198.18.0.5", "SIP caller"),
            ("http://alice@host", "SIP caller"),
            ("", "SIP caller"),
            ("s", "SIP caller"),
        ] {
            assert_eq!(sip_display_name(uri), name, "{uri}");
        }
    }
}
