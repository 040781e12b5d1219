//! Blocking HTTP GET with [`ureq`]. Sockets live in the calling thread's network namespace:
//! to reach a server inside a test-bed node, call these from [`crate::bed::in_netns`].

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

/// [`get`] expecting 200 and a JSON body; panics otherwise, with what came back.
pub fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (code, body) = get(addr, path).unwrap_or_else(|e| panic!("GET {path} on {addr}: {e}"));
    assert_eq!(code, 200, "GET {path} on {addr}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
}
