//! The JSON HTTP API: agent lists for dashboards and routing, the summary, telephony events
//! over HTTP, health and metrics.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Deserialize;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;

use super::auth::{authenticate, authenticate_api};
use crate::directory::check_ring_group_id;
use crate::fanout::Filter;
use crate::hub::Hub;
use crate::metrics::{Computed, Rejected};
use crate::model::{AgentId, Status, TeamId};
use crate::protocol::Role;
use crate::protocol::{self, peek_ref, ErrorCode, TelephonyMessage};
use crate::protocol::{render_agent_list, sort_by_id, LatestState};
use crate::ws::limit::SharedBucket;

type Params = Query<HashMap<String, String>>;

/// Rate limits of the HTTP API, shared by every caller (an extension of the router).
#[derive(Debug)]
pub(crate) struct HttpLimits {
    /// `POST /api/v1/telephony/events`: `--http-telephony-rate` / `--http-telephony-burst`.
    pub telephony_events: SharedBucket,
}

impl HttpLimits {
    pub(crate) fn new(settings: &crate::config::Settings) -> Self {
        HttpLimits {
            telephony_events: SharedBucket::new(settings.http_telephony_rate),
        }
    }
}

const READERS: &[Role] = &[Role::Admin, Role::Telephony];

fn json(status: StatusCode, body: impl Into<Bytes>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.into(),
    )
        .into_response()
}

fn bad_request(message: &str) -> Response {
    json(
        StatusCode::BAD_REQUEST,
        protocol::error(None, ErrorCode::BadMessage, message),
    )
}

/// Any other path under `/api/`: a JSON 404 (not the web demo's plain text one).
/// Read-your-writes (cluster mode): `Some(503)` when this node's view could not catch up
/// with the stream within the bound; `None` when the read may go ahead.
pub(super) async fn not_caught_up(hub: &Hub) -> Option<Response> {
    let e = hub.caught_up().await.err()?;
    let body = e
        .unavailable(None)
        .unwrap_or_else(|| protocol::shutting_down(None));
    Some(json(StatusCode::SERVICE_UNAVAILABLE, body))
}

pub(crate) async fn not_found(uri: axum::http::Uri) -> Response {
    json(
        StatusCode::NOT_FOUND,
        protocol::error(
            None,
            ErrorCode::NotFound,
            &format!("no API route {}", uri.path()),
        ),
    )
}

/// Query filters shared by the list endpoints.
#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    team: Option<String>,
    status: Option<String>,
    ring_group: Option<String>,
}

/// The parsed query, or the 400 answer (boxed: a `Response` is large).
fn list_query(
    params: &HashMap<String, String>,
) -> Result<(ListQuery, Filter, Option<Status>), Box<Response>> {
    let q = ListQuery {
        team: params.get("team").cloned(),
        status: params.get("status").cloned(),
        ring_group: params.get("ring_group").cloned(),
    };
    let teams = match &q.team {
        Some(t) => Some(vec![
            TeamId::parse(t).map_err(|_| Box::new(bad_request("invalid team")))?
        ]),
        None => None,
    };
    let status = match &q.status {
        Some(s) => Some(Status::parse(s).ok_or_else(|| Box::new(bad_request("unknown status")))?),
        None => None,
    };
    // Like `team=`: an empty or malformed value is a 400, not "no agent".
    if let Some(group) = &q.ring_group {
        check_ring_group_id(group).map_err(|e| Box::new(bad_request(&e.to_string())))?;
    }
    Ok((q, Filter::new(teams, None), status))
}

/// `GET /api/v1/agents?team=&status=`: `{epoch, seq, agents}`.
pub(crate) async fn agents(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    if let Err(e) = authenticate_api(&hub, &headers, &params, READERS) {
        return e.into_response();
    }
    if let Some(r) = not_caught_up(&hub).await {
        return r;
    }
    let (_, filter, status) = match list_query(&params) {
        Ok(q) => q,
        Err(r) => return *r,
    };
    let (seq, mut list) = hub.fanout().snapshot(&filter);
    if let Some(status) = status {
        list.retain(|p| p.status == status);
    }
    sort_by_id(&mut list);
    json(StatusCode::OK, render_agent_list(&hub.epoch(), seq, &list))
}

/// `GET /api/v1/agents/{id}`: one `AgentState` or 404.
pub(crate) async fn agent(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Params,
) -> Response {
    if let Err(e) = authenticate_api(&hub, &headers, &params, READERS) {
        return e.into_response();
    }
    if let Some(r) = not_caught_up(&hub).await {
        return r;
    }
    let found = AgentId::parse(&id)
        .ok()
        .and_then(|id| hub.fanout().get(&id));
    match found {
        Some(p) => json(StatusCode::OK, p.json()),
        None => json(
            StatusCode::NOT_FOUND,
            protocol::error(
                None,
                ErrorCode::UnknownAgent,
                &format!("unknown agent {id}"),
            ),
        ),
    }
}

/// `GET /api/v1/available?ring_group=&team=`: available agents, longest available first.
pub(crate) async fn available(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    if let Err(e) = authenticate_api(&hub, &headers, &params, READERS) {
        return e.into_response();
    }
    if let Some(r) = not_caught_up(&hub).await {
        return r;
    }
    let (q, filter, _) = match list_query(&params) {
        Ok(q) => q,
        Err(r) => return *r,
    };
    if let Some(group) = &q.ring_group {
        // A typo must not route calls to nobody: an unknown group is a 404 naming it.
        if !hub.directory().has_ring_group(group) {
            return json(
                StatusCode::NOT_FOUND,
                protocol::error(None, ErrorCode::NotFound, &format!("no ring group {group}")),
            );
        }
    }
    let (seq, mut list) = hub.fanout().snapshot(&filter);
    list.retain(|p| p.status == Status::Available);
    if let Some(group) = &q.ring_group {
        let dir = hub.directory();
        list.retain(|p| dir.in_ring_group(&p.agent_id, group));
    }
    list.sort_by(|a, b| {
        a.since
            .cmp(&b.since)
            .then_with(|| a.agent_id.cmp(&b.agent_id))
    });
    json(StatusCode::OK, render_agent_list(&hub.epoch(), seq, &list))
}

/// `GET /api/v1/summary?team=`: counts per status and the longest time in each.
pub(crate) async fn summary(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    if let Err(e) = authenticate_api(&hub, &headers, &params, READERS) {
        return e.into_response();
    }
    if let Some(r) = not_caught_up(&hub).await {
        return r;
    }
    let (_, filter, _) = match list_query(&params) {
        Ok(q) => q,
        Err(r) => return *r,
    };
    let (seq, list) = hub.fanout().snapshot(&filter);
    let now = hub.clock().now_ms();
    json(
        StatusCode::OK,
        render_summary(&hub.epoch(), seq, now, &list),
    )
}

fn render_summary(epoch: &str, seq: u64, now: u64, list: &[Arc<LatestState>]) -> String {
    let mut counts: HashMap<Status, usize> = HashMap::new();
    let mut longest: HashMap<Status, &LatestState> = HashMap::new();
    let mut connected = 0usize;
    for p in list {
        *counts.entry(p.status).or_default() += 1;
        if p.connections > 0 {
            connected += 1;
        }
        let e = longest.entry(p.status).or_insert(p);
        if p.since < e.since {
            *e = p;
        }
    }
    #[derive(Serialize)]
    struct Longest<'a> {
        agent_id: &'a str,
        since: u64,
        seconds: u64,
    }
    #[derive(Serialize)]
    struct Summary<'a> {
        epoch: &'a str,
        seq: u64,
        server_time: u64,
        total: usize,
        connected: usize,
        counts: serde_json::Map<String, serde_json::Value>,
        longest: serde_json::Map<String, serde_json::Value>,
    }
    let mut summary = Summary {
        epoch,
        seq,
        server_time: now,
        total: list.len(),
        connected,
        counts: serde_json::Map::new(),
        longest: serde_json::Map::new(),
    };
    for s in Status::ALL {
        let count = counts.get(&s).copied().unwrap_or(0);
        summary.counts.insert(s.as_str().into(), count.into());
        let oldest = longest.get(&s).map(|p| Longest {
            agent_id: p.agent_id.as_str(),
            since: p.since,
            seconds: now.saturating_sub(p.since) / 1000,
        });
        summary.longest.insert(
            s.as_str().into(),
            serde_json::to_value(oldest).unwrap_or_default(),
        );
    }
    serde_json::to_string(&summary).unwrap_or_default()
}

/// `POST /api/v1/telephony/events`: one event, the same reply the socket would send.
pub(crate) async fn telephony_event(
    State(hub): State<Arc<Hub>>,
    limits: Option<Extension<Arc<HttpLimits>>>,
    headers: HeaderMap,
    Query(params): Params,
    body: Bytes,
) -> Response {
    if let Err(e) = authenticate(&hub, &headers, &params, &[Role::Telephony]).or_else(|e| {
        // Dev mode: the HTTP endpoint needs no identity parameter.
        if hub.settings().jwt_secret.is_none()
            && matches!(e, super::auth::AuthError::Unauthorized(_))
        {
            Ok(dev_adapter())
        } else {
            Err(e)
        }
    }) {
        return e.into_response();
    }
    hub.metrics().message_in(Role::Telephony);
    let Ok(text) = std::str::from_utf8(&body) else {
        return bad_request("body is not UTF-8");
    };
    if let Some(Extension(limits)) = &limits {
        if !limits.telephony_events.try_take() {
            hub.metrics().rejected(Rejected::RateLimited);
            return json(
                StatusCode::TOO_MANY_REQUESTS,
                protocol::error(
                    peek_ref(text).as_ref(),
                    ErrorCode::RateLimited,
                    "too many telephony events: slow down",
                ),
            );
        }
    }
    let envelope = match protocol::decode::<TelephonyMessage>(text) {
        Ok(e) => e,
        Err(bad) => return json(StatusCode::BAD_REQUEST, protocol::bad_message(&bad)),
    };
    let reply_ref = envelope.reply_ref;
    let message = envelope.message;
    if let TelephonyMessage::Ping {} = message {
        return json(
            StatusCode::OK,
            protocol::pong(reply_ref.as_ref(), hub.clock().now_ms()),
        );
    }
    if let Err(message) = message.check() {
        let bad = protocol::BadMessage { reply_ref, message };
        return json(StatusCode::BAD_REQUEST, protocol::bad_message(&bad));
    }
    let answer = match hub.router().telephony(&message).await {
        Ok(dispatched) => dispatched.answer().await,
        Err(e) => Err(e),
    };
    match answer {
        Ok(mut answer) => {
            // The reply only once the event (and its change) is committed.
            if let Err(e) = answer.take_ticket().await {
                return json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    protocol::not_stored(reply_ref.as_ref(), &e),
                );
            }
            let status = StatusCode::from_u16(answer.http_status()).unwrap_or(StatusCode::OK);
            json(status, answer.frame(reply_ref.as_ref()))
        }
        Err(e) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            e.unavailable(reply_ref.as_ref())
                .unwrap_or_else(|| protocol::shutting_down(reply_ref.as_ref())),
        ),
    }
}

fn dev_adapter() -> crate::protocol::Identity {
    crate::protocol::Identity {
        role: Role::Telephony,
        subject: "dev".into(),
        name: None,
        teams: Vec::new(),
        expires_at: None,
    }
}

/// `GET /healthz`: whether this node takes requests, as JSON (docs/protocol.md): `node`,
/// `mode` (`single` or `cluster`), `ready` with the `reason` when not, the live `members`
/// (the node itself in single mode), and the older keys `status` and `epoch`. 200 when
/// ready, 503 when not.
pub(crate) async fn healthz(State(hub): State<Arc<Hub>>) -> Response {
    let shutting_down = hub.shutdown().is_cancelled();
    let health = hub.health();
    let reason = if shutting_down {
        Some("shutting down".to_owned())
    } else {
        health.not_ready
    };
    let status = if reason.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if shutting_down { "shutting_down" } else if reason.is_none() { "ok" } else { "unavailable" },
        "epoch": &*hub.epoch(),
        "node": hub.node().as_str(),
        "mode": health.mode,
        "ready": reason.is_none(),
        "reason": reason,
        "members": health.members.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
    });
    json(status, body.to_string())
}

/// `GET /metrics`: OpenMetrics text. The hub's own series, then the figures other parts
/// own, read now: seven counters from the fan-out (no agent is visited), the store's and the
/// router's counts.
pub(crate) async fn metrics(State(hub): State<Arc<Hub>>) -> Response {
    let mut computed = Computed::default();
    computed.agents_by_status(&hub.fanout().status_counts());
    let stats = hub.fanout().stats();
    let store = hub.store().stats();
    let counters = [
        (
            "presence_hub_store_commits",
            "Durable store transactions committed (group commits)",
            store.commits,
        ),
        (
            "presence_hub_store_items",
            "Writes committed to the durable store (items / commits = mean batch)",
            store.items,
        ),
        (
            "presence_hub_store_failed",
            "Writes whose transaction failed after retries (not stored)",
            store.failed,
        ),
        (
            "presence_hub_agent_updates",
            "Agent state changes published (the hub-wide seq)",
            stats.seq,
        ),
        (
            "presence_hub_admin_deliveries",
            "Update frames queued to admin sockets",
            stats.deliveries,
        ),
        (
            "presence_hub_admin_slow_dropped",
            "Admin subscribers dropped by the fan-out for falling behind",
            stats.dropped_slow,
        ),
    ];
    for (name, help, v) in counters {
        computed.counter(name, help, v);
    }
    let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    let gauges = [
        (
            "presence_hub_store_queued",
            "Writes waiting for the durable store's writer",
            gauge(store.queued),
        ),
        (
            "presence_hub_admin_subscribers",
            "Subscribed admin sockets",
            gauge(stats.subscribers),
        ),
        (
            "presence_hub_history_events",
            "Updates held for resume",
            gauge(stats.history_len),
        ),
        (
            "presence_hub_fanout_lag_bytes",
            "Largest backlog of any admin socket, in bytes",
            gauge(stats.max_queued_bytes),
        ),
        (
            "presence_hub_event_ids_remembered",
            "Telephony event ids held for deduplication",
            gauge(hub.router().remembered_event_ids()),
        ),
        (
            "presence_hub_agent_actors",
            "Agent actors in memory (an idle one stops after --actor-idle-secs)",
            gauge(hub.router().actor_count()),
        ),
        (
            "presence_hub_tasks",
            "Live hub tasks: agent actors, sockets, HTTP connections and a few background tasks",
            gauge(hub.tasks().len()),
        ),
    ];
    for (name, help, v) in gauges {
        computed.gauge(name, help, v);
    }
    if let Some(cluster) = hub.cluster() {
        let health = cluster.health();
        computed.gauge(
            "presence_hub_cluster_members",
            "Live cluster members this node sees (itself included)",
            gauge(health.members.len()),
        );
        computed.gauge(
            "presence_hub_cluster_ready",
            "1 when this node is connected to NATS and in the member list, else 0",
            i64::from(health.not_ready.is_none()),
        );
        super::cluster_metrics::cluster_figures(&hub, cluster.backplane(), &mut computed).await;
    }
    let body = hub.metrics().encode(computed.registry());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
