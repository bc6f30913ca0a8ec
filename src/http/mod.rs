//! The HTTP side of the single port: WebSocket upgrades (authenticated before the
//! upgrade), the JSON API, `/healthz`, `/metrics` and the embedded web demo.

pub mod api;
pub mod auth;
mod web;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::collections::HashMap;
use std::sync::Arc;

use crate::hub::Hub;
use crate::metrics::Role;

/// The routes of the hub.
pub fn router(hub: Arc<Hub>) -> Router {
    Router::new()
        .route("/ws/agent", get(ws_agent))
        .route("/ws/admin", get(ws_admin))
        .route("/ws/telephony", get(ws_telephony))
        .route("/api/v1/telephony/events", post(api::telephony_event))
        .route("/api/v1/agents", get(api::agents))
        .route("/api/v1/agents/{id}", get(api::agent))
        .route("/api/v1/available", get(api::available))
        .route("/api/v1/summary", get(api::summary))
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(api::metrics))
        .fallback(get(web::asset))
        .with_state(hub)
}

async fn ws_agent(
    ws: WebSocketUpgrade,
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    upgrade(ws, hub, &headers, &query, Role::Agent)
}

async fn ws_admin(
    ws: WebSocketUpgrade,
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    upgrade(ws, hub, &headers, &query, Role::Admin)
}

async fn ws_telephony(
    ws: WebSocketUpgrade,
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    upgrade(ws, hub, &headers, &query, Role::Telephony)
}

fn upgrade(
    ws: WebSocketUpgrade,
    hub: Arc<Hub>,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    role: Role,
) -> Response {
    let identity = match auth::authenticate(&hub.core, headers, query, &[role]) {
        Ok(identity) => identity,
        Err(e) => return e.into_response(),
    };
    if hub.core.shutdown.is_cancelled() {
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    let settings = &hub.core.settings;
    let tasks = hub.core.tasks.clone();
    ws.read_buffer_size(settings.read_buffer_bytes)
        .write_buffer_size(settings.write_buffer_bytes)
        .max_write_buffer_size(settings.max_write_buffer_bytes)
        .max_message_size(settings.max_message_bytes)
        .max_frame_size(settings.max_message_bytes)
        .on_upgrade(move |socket| tasks.track_future(crate::ws::serve(socket, hub, identity)))
}
