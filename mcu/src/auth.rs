//! Who may use the admin API: one middleware on the whole HTTP router ([`require_token`])
//! guards every path under `/api/` with a bearer token (RFC 6750) read from a file at start
//! ([`AdminToken::load`], `--admin-token-file`). Every other path (`/healthz`, `/metrics`, the
//! participant page and its `/rooms/{room}/members`, `/static/...`, WHIP) stays open.
//!
//! Keyed on the path prefix, not on routes: a route added under `/api/` later is covered
//! without touching it, and so is a path no route serves (401 before 404: an unauthenticated
//! client learns nothing about which routes exist).
//!
//! - `Authorization: Bearer TOKEN` (the scheme in any case), compared in constant time.
//! - For a WebSocket upgrade only (`Upgrade: websocket`: a browser's `WebSocket` cannot send
//!   header fields), the query parameter `access_token=TOKEN` (RFC 6750 section 2.3) is
//!   accepted as well.
//! - Anything else: `401 Unauthorized` with `WWW-Authenticate: Bearer realm="understudy"`
//!   (plus `error="invalid_token"` when a token was presented and is wrong) and a JSON body
//!   `{"error": "..."}`.
//!
//! Without a token file the API is open; [`crate::config`] then allows loopback listeners
//! only.

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::path::Path;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The admin API's bearer token (its `Debug` does not show it).
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdminToken(<{} bytes>)", self.0.len())
    }
}

/// Why a token file cannot be used.
#[derive(Debug)]
#[non_exhaustive]
pub enum TokenError {
    /// The file cannot be read (missing, permissions, not UTF-8).
    Read(std::io::Error),
    /// The file holds nothing but white space.
    Empty,
    /// The token has a character a header field cannot carry after `Bearer ` (only visible
    /// ASCII, no spaces).
    Invalid,
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::Read(e) => write!(f, "cannot read it: {e}"),
            TokenError::Empty => write!(f, "it is empty"),
            TokenError::Invalid => write!(
                f,
                "the token must be visible ASCII characters without spaces"
            ),
        }
    }
}

impl std::error::Error for TokenError {}

impl AdminToken {
    /// The token in `path`: the file's whole content, trimmed.
    pub fn load(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(TokenError::Read)?;
        Self::new(text.trim())
    }

    /// A token from its text (1 or more visible ASCII characters, no spaces).
    pub fn new(token: &str) -> Result<Self, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::Invalid);
        }
        Ok(AdminToken(token.to_string()))
    }

    /// Whether `candidate` is the token (constant time in the content; the length may
    /// show).
    pub fn matches(&self, candidate: &str) -> bool {
        bool::from(self.0.as_bytes().ct_eq(candidate.as_bytes()))
    }
}

/// Whether `path` belongs to the admin API (`/api` and everything under `/api/`).
pub fn is_api_path(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

#[derive(serde::Deserialize)]
struct AccessToken {
    access_token: Option<String>,
}

/// What the request presents: `None` nothing, `Some(valid)` a token.
fn presented(token: &AdminToken, req: &Request) -> Option<bool> {
    let mut seen = None;
    for v in req.headers().get_all(header::AUTHORIZATION) {
        let Some((scheme, value)) = v.to_str().ok().and_then(|v| v.split_once(' ')) else {
            seen = Some(false);
            continue;
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            seen = Some(false);
            continue;
        }
        if token.matches(value.trim_matches(' ')) {
            return Some(true);
        }
        seen = Some(false);
    }
    let websocket = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
        });
    if websocket {
        if let Ok(Query(AccessToken {
            access_token: Some(t),
        })) = Query::<AccessToken>::try_from_uri(req.uri())
        {
            if token.matches(&t) {
                return Some(true);
            }
            seen = Some(false);
        }
    }
    seen
}

/// The middleware: requests under `/api/` need the token (when one is configured).
pub async fn require_token(
    State(token): State<Option<Arc<AdminToken>>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(token) = token else {
        return next.run(req).await;
    };
    if !is_api_path(req.uri().path()) {
        return next.run(req).await;
    }
    match presented(&token, &req) {
        Some(true) => next.run(req).await,
        wrong => {
            let (challenge, why) = match wrong {
                Some(_) => (
                    r#"Bearer realm="understudy", error="invalid_token""#,
                    "invalid bearer token",
                ),
                None => (
                    r#"Bearer realm="understudy""#,
                    "this API needs Authorization: Bearer TOKEN",
                ),
            };
            let mut r = crate::http::json_error(StatusCode::UNAUTHORIZED, why);
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_trimmed_and_checked() {
        let dir = std::env::temp_dir().join(format!("mcu-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("t");
        std::fs::write(&f, "  s3cret-Token_1\n").unwrap();
        let t = AdminToken::load(&f).unwrap();
        assert!(t.matches("s3cret-Token_1"));
        assert!(!t.matches("s3cret-Token_2") && !t.matches("s3cret") && !t.matches(""));
        assert!(!format!("{t:?}").contains("s3cret"));
        std::fs::write(&f, " \n\t").unwrap();
        assert!(matches!(AdminToken::load(&f), Err(TokenError::Empty)));
        std::fs::write(&f, "two words").unwrap();
        assert!(matches!(AdminToken::load(&f), Err(TokenError::Invalid)));
        assert!(matches!(
            AdminToken::load(&dir.join("missing")),
            Err(TokenError::Read(_))
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn api_paths() {
        for p in [
            "/api",
            "/api/",
            "/api/rooms",
            "/api/ws",
            "/api/rooms/a/participants/1",
        ] {
            assert!(is_api_path(p), "{p}");
        }
        for p in [
            "/",
            "/apis",
            "/healthz",
            "/metrics",
            "/room/api",
            "/rooms/x/members",
        ] {
            assert!(!is_api_path(p), "{p}");
        }
    }
}
