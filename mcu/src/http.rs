//! HTTP admin API: `GET /healthz`, `GET /api/rooms`, `GET /api/events`, `GET /api/status`,
//! `GET /metrics`, the participant page ([`crate::web`]), and the HTTP/1.1 server that serves it ([`serve`]) within limits: a
//! connection cap, a header read timeout and a shutdown deadline. No route takes a body.

use crate::limits::{self, AcceptBackoff, FdReserve};
use crate::metrics::Metrics;
use crate::state::{RoomView, Shared};
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

/// The API router.
pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/api/rooms", get(rooms))
        .route("/api/events", get(events))
        .route("/api/status", get(status))
        .route("/metrics", get(metrics))
        .merge(crate::web::routes())
        .with_state(shared)
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

/// Serve `app` over HTTP/1.1 on `listener` until `stop` yields a deadline (or is dropped:
/// deadline now). Then stop accepting, let the requests in flight finish until the deadline
/// and drop every connection still open (an idle client or one that never completes its
/// request cannot hold the process).
pub async fn serve(
    listener: tokio::net::TcpListener,
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
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut conns = tokio::task::JoinSet::new();
    let mut backoff = AcceptBackoff::default();
    // Out of descriptors, one connection at a time is still served (`/healthz`).
    let reserve = std::sync::Arc::new(FdReserve::default());
    let deadline = loop {
        let (stream, _) = tokio::select! {
            d = &mut stop => break d.unwrap_or_else(|_| std::time::Instant::now()),
            c = limits::accept(&listener, &mut backoff, &metrics.http_accept_errors, "HTTP", Some(&reserve)) => c,
        };
        while conns.try_join_next().is_some() {}
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.http_rejected.inc();
            continue; // dropping the stream closes it
        };
        let conn =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        let (m, reserve) = (metrics.clone(), reserve.clone());
        conns.spawn(async move {
            if let Err(e) = conn.await {
                if e.is_timeout() {
                    m.http_header_timeouts.inc();
                }
            }
            // The connection's descriptor is closed: the reserve may take it.
            reserve.refill();
            drop(permit);
        });
    };
    drop(listener);
    if tokio::time::timeout_at(deadline.into(), graceful.shutdown())
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
