//! The web pages (`web-client/`, compiled into the binary): the participant page at
//! `GET /room/{room}` (assets `GET /static/room.js`, `GET /static/room.css`) and the
//! operators' admin page at `GET /` (assets `GET /static/admin.js`, `GET /static/admin.css`).
//! Nothing from the request is written into a page: the participant page reads the room from
//! its own path and joins over WHIP, the admin page reads everything from the API
//! (`/api/*`, live updates on `/api/ws`). The endpoints themselves are not here.

use axum::extract::rejection::PathRejection;
use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const ROOM_HTML: &str = include_str!("../../web-client/room.html");
const ROOM_JS: &str = include_str!("../../web-client/room.js");
const ROOM_CSS: &str = include_str!("../../web-client/room.css");
const ADMIN_HTML: &str = include_str!("../../web-client/admin.html");
const ADMIN_JS: &str = include_str!("../../web-client/admin.js");
const ADMIN_CSS: &str = include_str!("../../web-client/admin.css");

/// What the page may load: only this origin (scripts, styles, `fetch`), its inline favicon.
const PAGE_CSP: &str =
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// The admin page: the same, plus `connect-src 'self'` (its API calls and its WebSocket to
/// this origin only) and forms that post nowhere else; no referrer leaves it.
const ADMIN_CSP: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The pages' routes, to merge into the API router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(admin_page))
        .route(
            "/static/admin.js",
            get(|| async { asset("text/javascript; charset=utf-8", ADMIN_JS) }),
        )
        .route(
            "/static/admin.css",
            get(|| async { asset("text/css; charset=utf-8", ADMIN_CSS) }),
        )
        .route("/room/{room}", get(room_page))
        .route(
            "/static/room.js",
            get(|| async { asset("text/javascript; charset=utf-8", ROOM_JS) }),
        )
        .route(
            "/static/room.css",
            get(|| async { asset("text/css; charset=utf-8", ROOM_CSS) }),
        )
}

/// The page for a valid room name (`control::valid_room_name`), else 404.
async fn room_page(room: Result<Path<String>, PathRejection>) -> Response {
    match room {
        Ok(Path(name)) if control::valid_room_name(&name) => {
            let mut resp = asset("text/html; charset=utf-8", ROOM_HTML);
            resp.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(PAGE_CSP),
            );
            resp
        }
        _ => (StatusCode::NOT_FOUND, "no such room name\n").into_response(),
    }
}

/// The admin page (it signs in by itself when the API asks for a token).
async fn admin_page() -> Response {
    let mut resp = asset("text/html; charset=utf-8", ADMIN_HTML);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(ADMIN_CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}
