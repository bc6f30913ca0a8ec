//! The HTTP side of the single port: WebSocket upgrades (authenticated before the
//! upgrade), the JSON API, `/healthz`, `/metrics` and the embedded web demo.

pub(crate) mod api;
pub(crate) mod auth;
mod cluster_metrics;
pub(crate) mod directory;
pub(crate) mod reports;
mod web;

use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Extension;
use axum::Router;
use std::collections::HashMap;
use std::sync::Arc;

use crate::hub::Hub;
use crate::protocol::Role;
use crate::server::ConnSlot;
use crate::ws::handshake;

/// The routes of the hub. `/metrics` is among them unless it has its own address
/// (`--metrics-listen`, [`metrics_router`]).
pub(crate) fn router(hub: Arc<Hub>) -> Router {
    let metrics_here = hub.settings().metrics_listen.is_none();
    let router = Router::new()
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
        .route("/api", any(api::not_found))
        .route("/api/{*rest}", any(api::not_found));
    let router = if metrics_here {
        router.route("/metrics", get(api::metrics))
    } else {
        router
    };
    router
        .fallback(get(web::asset))
        .layer(Extension(Arc::new(api::HttpLimits::new(hub.settings()))))
        .with_state(hub)
}

/// The routes of the separate metrics address: `/metrics` only.
pub(crate) fn metrics_router(hub: Arc<Hub>) -> Router {
    Router::new()
        .route("/metrics", get(api::metrics))
        .with_state(hub)
}

async fn ws_agent(
    State(hub): State<Arc<Hub>>,
    Query(query): Query<HashMap<String, String>>,
    slot: Option<Extension<ConnSlot>>,
    req: Request,
) -> Response {
    upgrade(req, hub, &query, Role::Agent, slot)
}

async fn ws_admin(
    State(hub): State<Arc<Hub>>,
    Query(query): Query<HashMap<String, String>>,
    slot: Option<Extension<ConnSlot>>,
    req: Request,
) -> Response {
    upgrade(req, hub, &query, Role::Admin, slot)
}

async fn ws_telephony(
    State(hub): State<Arc<Hub>>,
    Query(query): Query<HashMap<String, String>>,
    slot: Option<Extension<ConnSlot>>,
    req: Request,
) -> Response {
    upgrade(req, hub, &query, Role::Telephony, slot)
}

/// Checks the upgrade request, then authenticates it (401/403 before the upgrade, nothing
/// allocated for a refused client), then answers 101 and spawns the socket's task, which
/// takes the connection over once the response went out.
fn upgrade(
    mut req: Request,
    hub: Arc<Hub>,
    query: &HashMap<String, String>,
    role: Role,
    slot: Option<Extension<ConnSlot>>,
) -> Response {
    let accept = match handshake::check(&req) {
        Ok(accept) => accept,
        Err(e) => return e.into_response(),
    };
    let identity = match auth::authenticate(&hub, req.headers(), query, &[role]) {
        Ok(identity) => identity,
        Err(e) => return e.into_response(),
    };
    if hub.shutdown().is_cancelled() {
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let tasks = hub.tasks().clone();
    tasks.spawn(crate::ws::serve(
        on_upgrade,
        hub,
        Box::new(identity),
        slot.map(|Extension(slot)| slot),
    ));
    handshake::switching_protocols(accept)
}
