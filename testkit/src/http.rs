//! Blocking HTTP requests with [`ureq`]: GET (status and body, or the whole [`Response`]),
//! and [`get_with`], [`post`], [`put`], [`delete`] and [`options`] with header fields of the
//! caller's choosing (e.g. an `Authorization` for the admin API), returning the whole
//! [`Response`] whatever its status. Sockets live in the calling thread's
//! network namespace: to reach a server inside a test-bed node, call these from
//! [`crate::bed::in_netns`].

use std::net::SocketAddr;
use std::time::Duration;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into()
}

/// `GET http://ADDR/PATH`: the status and the body, whatever the status; `Err` when
/// nothing answers (connection refused, timeout).
pub fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), ureq::Error> {
    let mut resp = agent().get(&format!("http://{addr}{path}")).call()?;
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string()?;
    Ok((status, body))
}

/// A whole response: status, headers, body.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header fields in order, names lower-case.
    pub headers: Vec<(String, String)>,
    /// Body (lossy UTF-8).
    pub body: String,
}

impl Response {
    /// The first value of header `name` (any case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// [`get`] with the response's headers.
pub fn get_response(addr: SocketAddr, path: &str) -> Result<Response, ureq::Error> {
    read_response(agent().get(&format!("http://{addr}{path}")).call()?)
}

/// `GET http://ADDR/PATH` with the header fields `headers`: the whole response (see
/// [`post`]).
pub fn get_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Response, ureq::Error> {
    let mut req = agent().get(&format!("http://{addr}{path}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    read_response(req.call()?)
}

/// `PUT http://ADDR/PATH` with `body` and the header fields `headers` (see [`post`]).
pub fn put(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, ureq::Error> {
    let mut req = agent().put(&format!("http://{addr}{path}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    read_response(req.send(body)?)
}

/// `POST http://ADDR/PATH` with `body` and the header fields `headers` (name, value) and no
/// others the caller did not ask for (no Content-Type unless given): the whole response,
/// whatever its status; `Err` when nothing answers or the exchange breaks off.
pub fn post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, ureq::Error> {
    let mut req = agent().post(&format!("http://{addr}{path}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    read_response(req.send(body)?)
}

/// `DELETE http://ADDR/PATH` with the header fields `headers`: the whole response (see
/// [`post`]).
pub fn delete(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Response, ureq::Error> {
    let mut req = agent().delete(&format!("http://{addr}{path}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    read_response(req.call()?)
}

/// `OPTIONS http://ADDR/PATH` with the header fields `headers` (a CORS preflight carries
/// `Origin` and `Access-Control-Request-Method`): the whole response (see [`post`]).
pub fn options(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Response, ureq::Error> {
    let mut req = agent().options(&format!("http://{addr}{path}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    read_response(req.call()?)
}

/// Status, headers (names lower-case, values lossy UTF-8) and body (lossy UTF-8).
fn read_response(mut resp: ureq::http::Response<ureq::Body>) -> Result<Response, ureq::Error> {
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(n, v)| {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (n.as_str().to_string(), v)
        })
        .collect();
    let body = resp.body_mut().read_to_vec()?;
    Ok(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// [`get`] expecting 200 and a JSON body; panics otherwise, with what came back.
pub fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (code, body) = get(addr, path).unwrap_or_else(|e| panic!("GET {path} on {addr}: {e}"));
    assert_eq!(code, 200, "GET {path} on {addr}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
}
