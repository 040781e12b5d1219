//! HTTP admin API: `GET /healthz`, `GET /api/rooms`, `GET /api/events`, `GET /api/status`,
//! `GET /metrics`.

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
