//! The webhook server: every request's `X-Twilio-Signature` is checked before anything else
//! (403 and no change when it does not match), the form body is parsed, and the request goes
//! to [`App`]. Routes:
//!
//! | path | Twilio setting |
//! |---|---|
//! | `POST /twilio/voice` | the number's "A call comes in" URL, and the TwiML App's Voice URL |
//! | `POST /twilio/call-status` | the number's and the TwiML App's status callback URL |
//! | `POST /twilio/dial-action` | set by the adapter in `<Dial action>` |
//! | `POST /twilio/agent-status` | set by the adapter in `<Client statusCallback>` |
//! | `GET /healthz` | for operators: whether the hub socket is up |

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use std::sync::Arc;

use crate::app::{App, Params};
use crate::secret::Secret;
use crate::signature;

/// Shared by every handler.
pub struct Ctx {
    /// The adapter's logic.
    pub app: App,
    /// Twilio's auth token, the signature key.
    pub auth_token: Secret,
}

/// The adapter's HTTP routes.
pub fn router(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/twilio/voice", post(voice))
        .route("/twilio/call-status", post(call_status))
        .route("/twilio/dial-action", post(dial_action))
        .route("/twilio/agent-status", post(agent_status))
        .route("/healthz", get(healthz))
        .with_state(ctx)
}

/// Which agent and group a `<Dial>` callback is about (set by the adapter in its URLs).
#[derive(Deserialize)]
struct Leg {
    /// The agent that `<Dial>` rang.
    agent: String,
    /// The ring group being hunted, so a forgotten call can be rebuilt.
    group: String,
}

fn leg_of(uri: &Uri) -> Option<Leg> {
    serde_urlencoded::from_str(uri.query()?).ok()
}

/// A request refused before it reached the adapter's logic.
enum Refused {
    /// Missing or wrong `X-Twilio-Signature` (or a body that cannot have been signed): 403.
    Signature,
    /// Signed, but a required parameter is missing: 400 with the reason.
    Body(String),
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::Signature => {
                (StatusCode::FORBIDDEN, "invalid X-Twilio-Signature\n").into_response()
            }
            Refused::Body(why) => (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response(),
        }
    }
}

/// Checks the signature over the public URL of this request and parses the form.
fn verified(ctx: &Ctx, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Result<Params, Refused> {
    let params: Vec<(String, String)> =
        serde_urlencoded::from_bytes(body).map_err(|_| Refused::Signature)?;
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let url = format!(
        "{}{path}",
        ctx.app.behaviour.public_url.trim_end_matches('/')
    );
    let Some(sig) = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
    else {
        tracing::warn!(path, "refused a webhook without a signature");
        return Err(Refused::Signature);
    };
    if !signature::is_valid(&ctx.auth_token, &url, &params, sig) {
        tracing::warn!(path, "refused a webhook with a bad signature");
        return Err(Refused::Signature);
    }
    Ok(Params(params))
}

fn xml(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], body).into_response()
}

fn required<'a>(p: &'a Params, name: &str) -> Result<&'a str, Refused> {
    p.get(name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Refused::Body(format!("missing {name}")))
}

async fn voice(
    State(ctx): State<Arc<Ctx>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refused> {
    let p = verified(&ctx, &uri, &headers, &body)?;
    let sid = required(&p, "CallSid")?.to_string();
    Ok(xml(ctx.app.voice(&p, &sid).await))
}

async fn dial_action(
    State(ctx): State<Arc<Ctx>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refused> {
    let p = verified(&ctx, &uri, &headers, &body)?;
    let Some(leg) = leg_of(&uri) else {
        return Err(Refused::Body("missing agent and group in the URL".into()));
    };
    let sid = required(&p, "CallSid")?.to_string();
    Ok(xml(ctx
        .app
        .dial_action(&p, &sid, &leg.agent, &leg.group)
        .await))
}

async fn agent_status(
    State(ctx): State<Arc<Ctx>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refused> {
    let p = verified(&ctx, &uri, &headers, &body)?;
    required(&p, "CallSid")?;
    let agent = match p.get("To").and_then(|t| t.strip_prefix("client:")) {
        Some(agent) => agent.to_string(),
        None => match leg_of(&uri) {
            Some(leg) => leg.agent,
            None => return Err(Refused::Body("no agent: To is not client:<id>".into())),
        },
    };
    Ok(status_answer(
        tokio::time::timeout(ctx.app.behaviour.deadline, ctx.app.agent_status(&p, &agent)).await,
    ))
}

async fn call_status(
    State(ctx): State<Arc<Ctx>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refused> {
    let p = verified(&ctx, &uri, &headers, &body)?;
    required(&p, "CallSid")?;
    Ok(status_answer(
        tokio::time::timeout(ctx.app.behaviour.deadline, ctx.app.call_status(&p)).await,
    ))
}

/// Status callbacks answer an empty 204; 503 when the hub could not take the event.
fn status_answer<E: std::fmt::Display>(
    r: Result<Result<(), E>, tokio::time::error::Elapsed>,
) -> Response {
    match r {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => {
            tracing::warn!("status callback not delivered to the hub: {e}");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

async fn healthz(State(ctx): State<Arc<Ctx>>) -> Response {
    let hub = if ctx.app.hub.is_connected() {
        "connected"
    } else {
        "disconnected"
    };
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"status":"ok","hub":"{hub}"}}"#),
    )
        .into_response()
}
