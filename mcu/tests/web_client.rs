//! The pages (`web-client/`) as the server serves them: the participant page
//! `GET /room/{room}` for a valid room name only, the admin page `GET /`, their scripts and
//! style sheets with their content types, never cached stale, under a strict CSP.

mod common;
use common::{args, TestServer};
use testkit::http::{get_response, Response};

fn get(srv: &TestServer, path: &str) -> Response {
    get_response(srv.http, path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn assert_served(r: &Response, path: &str, content_type: &str) {
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    assert_eq!(r.header("content-type"), Some(content_type), "GET {path}");
    assert_eq!(r.header("cache-control"), Some("no-cache"), "GET {path}");
}

#[test]
fn room_page_and_its_assets_are_served() {
    let srv = TestServer::start(args("37900-37919"));

    let page = get(&srv, "/room/standup");
    assert_served(&page, "/room/standup", "text/html; charset=utf-8");
    assert!(
        page.body.contains(r#"src="/static/room.js""#),
        "the page loads its script: {}",
        page.body
    );
    assert!(
        page.body.contains(r#"href="/static/room.css""#),
        "the page loads its style sheet: {}",
        page.body
    );
    assert!(
        page.header("content-security-policy")
            .is_some_and(|p| p.contains("default-src 'self'")),
        "{:?}",
        page.headers
    );

    let js = get(&srv, "/static/room.js");
    assert_served(&js, "/static/room.js", "text/javascript; charset=utf-8");
    // The script joins over WHIP and exposes the automation hook the browser tests use.
    assert!(
        js.body.contains("/whip/"),
        "room.js does not POST to /whip/"
    );
    assert!(
        js.body.contains("window.understudy"),
        "room.js has no automation hook"
    );

    let css = get(&srv, "/static/room.css");
    assert_served(&css, "/static/room.css", "text/css; charset=utf-8");
    assert!(!css.body.is_empty());
}

#[test]
fn admin_page_and_its_assets_are_served() {
    let srv = TestServer::start(args("37940-37949"));
    let page = get(&srv, "/");
    assert_served(&page, "/", "text/html; charset=utf-8");
    assert!(
        page.body.contains(r#"src="/static/admin.js""#),
        "{}",
        page.body
    );
    assert!(
        page.body.contains(r#"href="/static/admin.css""#),
        "{}",
        page.body
    );
    let csp = page.header("content-security-policy").unwrap_or_default();
    for d in [
        "default-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(d), "CSP without {d}: {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));

    let js = get(&srv, "/static/admin.js");
    assert_served(&js, "/static/admin.js", "text/javascript; charset=utf-8");
    for needle in [
        "window.understudyAdmin",
        "/api/ws",
        "access_token",
        "Authorization",
    ] {
        assert!(js.body.contains(needle), "admin.js has no {needle}");
    }
    let css = get(&srv, "/static/admin.css");
    assert_served(&css, "/static/admin.css", "text/css; charset=utf-8");
    assert!(!css.body.is_empty());
}

#[test]
fn invalid_room_names_get_404() {
    let srv = TestServer::start(args("37920-37939"));
    let long = format!("/room/{}", "x".repeat(65));
    for path in [
        "/room/a%20b",
        "/room/bad%0d%0aname",
        "/room/%3Cscript%3E",
        "/room/caf%C3%A9",
        "/room/%FF",
        long.as_str(),
        "/room/",
        "/room/standup/extra",
        "/static/other.js",
    ] {
        let r = get(&srv, path);
        assert_eq!(r.status, 404, "GET {path}: {}", r.body);
        assert!(!r.body.contains("<script"), "GET {path}: {}", r.body);
    }
    // The longest valid name still gets the page.
    let ok = format!("/room/{}", "x".repeat(64));
    assert_eq!(get(&srv, &ok).status, 200, "GET {ok}");
}
