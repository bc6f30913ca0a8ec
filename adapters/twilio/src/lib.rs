//! presence-twilio: connects Twilio Programmable Voice to presence-hub. Twilio's webhooks
//! come in over HTTP (signed, form-encoded); the adapter answers TwiML, reports call events
//! on the hub's telephony socket, routes with `GET /api/v1/available`, and moves live calls
//! on through Twilio's REST API when the hub's console or ring timer ends a ring.

pub mod app;
pub mod calls;
pub mod hub;
pub mod record_rest;
pub mod rest;
pub mod routing;
pub mod secret;
pub mod server;
pub mod signature;
pub mod twiml;

use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use app::Behaviour;
pub use hub::HubConfig;
pub use routing::{Fallback, GroupPolicy, Routing};
pub use secret::Secret;

/// Calls remembered at once (see `calls`).
const CALL_CAPACITY: usize = 100_000;
/// Hub notifications handled at once.
const NOTICE_TASKS: usize = 64;

/// Everything the adapter needs to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The hub, and how the adapter authenticates to it.
    pub hub: HubConfig,
    /// Routing and timing of webhooks.
    pub behaviour: Behaviour,
    /// Twilio account SID (`AC...`), for the REST API.
    pub account_sid: String,
    /// Twilio auth token: verifies webhooks, authenticates REST calls.
    pub auth_token: Secret,
    /// Base URL of Twilio's REST API (`https://api.twilio.com`).
    pub rest_base: String,
}

impl Settings {
    /// Settings with the defaults of the command line (5 s deadline, 5 s hub margin).
    pub fn new(hub_url: &str, public_url: &str, account_sid: &str, auth_token: Secret) -> Self {
        Settings {
            hub: HubConfig {
                url: hub_url.to_string(),
                token: None,
                adapter_id: "twilio".to_string(),
            },
            behaviour: Behaviour {
                routing: Routing::default(),
                public_url: public_url.to_string(),
                deadline: Duration::from_secs(5),
                hub_ring_margin: Duration::from_secs(5),
            },
            account_sid: account_sid.to_string(),
            auth_token,
            rest_base: "https://api.twilio.com".to_string(),
        }
    }
}

/// A running adapter.
pub struct Adapter {
    /// The webhook server.
    pub server: JoinHandle<std::io::Result<()>>,
    /// Handles hub notifications.
    pub notices: JoinHandle<()>,
}

/// Starts the adapter on `listener`: hub socket, notification handler, webhook server.
pub fn spawn(listener: TcpListener, settings: Settings) -> Adapter {
    let (hub, mut notices_rx) = hub::HubClient::start(settings.hub.clone());
    let rest = rest::Rest::new(
        &settings.rest_base,
        &settings.account_sid,
        settings.auth_token.clone(),
    );
    let ctx = Arc::new(server::Ctx {
        app: app::App {
            behaviour: settings.behaviour.clone(),
            hub,
            calls: calls::Calls::new(CALL_CAPACITY),
            rest,
            moved: tokio::sync::Notify::new(),
        },
        auth_token: settings.auth_token.clone(),
    });
    let notice_ctx = ctx.clone();
    let notices = tokio::spawn(async move {
        // One task per notice, so a slow REST call does not hold up the next one; at most
        // `NOTICE_TASKS` at once.
        let slots = Arc::new(tokio::sync::Semaphore::new(NOTICE_TASKS));
        while let Some(n) = notices_rx.recv().await {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let ctx = notice_ctx.clone();
            tokio::spawn(async move {
                ctx.app.notice(&n).await;
                drop(slot);
            });
        }
    });
    let app = server::router(ctx);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    Adapter { server, notices }
}
