//! The HTTP side of the single port: WebSocket upgrades (authenticated before the
//! upgrade), the JSON API, `/healthz`, `/metrics` and the embedded web demo.

pub mod api;
pub mod auth;
pub mod directory;
pub mod reports;
mod web;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::Router;
use std::collections::HashMap;
use std::sync::Arc;

use crate::hub::Hub;
use crate::metrics::Role;
use crate::server::ConnSlot;

/// The routes of the hub.
pub fn router(hub: Arc<Hub>) -> Router {
    Router::new()
        .route("/ws/agent", get(ws_agent))
        .route("/ws/admin", get(ws_admin))
        .route("/ws/telephony", get(ws_telephony))
        .route("/api/v1/telephony/events", post(api::telephony_event))
        .route("/api/v1/agents", get(api::agents))
        .route("/api/v1/agents/{id}", get(api::agent))
        .route("/api/v1/agents/{id}/history", get(reports::history))
        .route("/api/v1/reports/status-time", get(reports::status_time))
        .route("/api/v1/directory/agents", get(directory::list_agents))
        .route(
            "/api/v1/directory/agents/{id}",
            get(directory::get_agent)
                .put(directory::put_agent)
                .delete(directory::delete_agent),
        )
        .route("/api/v1/ring-groups", get(directory::list_ring_groups))
        .route(
            "/api/v1/ring-groups/{id}",
            get(directory::get_ring_group)
                .put(directory::put_ring_group)
                .delete(directory::delete_ring_group),
        )
        .route("/api/v1/available", get(api::available))
        .route("/api/v1/summary", get(api::summary))
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(api::metrics))
        .fallback(get(web::asset))
        .layer(Extension(Arc::new(api::HttpLimits::new(
            &hub.core.settings,
        ))))
        .with_state(hub)
}

async fn ws_agent(
    ws: WebSocketUpgrade,
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    slot: Option<Extension<ConnSlot>>,
) -> Response {
    upgrade(ws, hub, &headers, &query, Role::Agent, slot)
}

async fn ws_admin(
    ws: WebSocketUpgrade,
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    slot: Option<Extension<ConnSlot>>,
) -> Response {
    upgrade(ws, hub, &headers, &query, Role::Admin, slot)
}

async fn ws_telephony(
    ws: WebSocketUpgrade,
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    slot: Option<Extension<ConnSlot>>,
) -> Response {
    upgrade(ws, hub, &headers, &query, Role::Telephony, slot)
}

fn upgrade(
    ws: WebSocketUpgrade,
    hub: Arc<Hub>,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    role: Role,
    slot: Option<Extension<ConnSlot>>,
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
    // tungstenite panics unless the cap exceeds the write buffer.
    let max_write = settings
        .max_write_buffer_bytes
        .max(settings.write_buffer_bytes.saturating_add(1));
    ws.read_buffer_size(settings.read_buffer_bytes)
        .write_buffer_size(settings.write_buffer_bytes)
        .max_write_buffer_size(max_write)
        .max_message_size(settings.max_message_bytes)
        .max_frame_size(settings.max_frame_bytes)
        .on_upgrade(move |socket| {
            tasks.track_future(async move {
                crate::ws::serve(socket, hub, identity).await;
                // The connection slot is held for the life of the socket.
                drop(slot);
            })
        })
}
