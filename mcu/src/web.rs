//! The participant web page (`web-client/`, compiled into the binary): `GET /room/{room}`
//! serves the page, `GET /static/room.js` and `GET /static/room.css` its assets. The page
//! reads the room from its own path (nothing from the request is written into it) and joins
//! over WHIP; the WHIP endpoint itself is not here.

use axum::extract::rejection::PathRejection;
use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const ROOM_HTML: &str = include_str!("../../web-client/room.html");
const ROOM_JS: &str = include_str!("../../web-client/room.js");
const ROOM_CSS: &str = include_str!("../../web-client/room.css");

/// What the page may load: only this origin (scripts, styles, `fetch`), its inline favicon.
const PAGE_CSP: &str =
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// The page's routes, to merge into the API router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
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
