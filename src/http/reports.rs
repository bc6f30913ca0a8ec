//! Reports from the durable store (admin token; open in dev mode):
//!
//! - `GET /api/v1/reports/status-time?from=&to=&team=&agent=&format=`: per agent, the time
//!   spent in each status within `[from, to)`. Times are Unix milliseconds (integers); the
//!   default range is the last 24 hours up to now, and a range may span at most
//!   [`MAX_RANGE_MS`] (400 days). Intervals are cut at the range edges; the interval still
//!   open counts up to now (nothing after now counts). JSON by default; CSV with
//!   `format=csv` or `Accept: text/csv`. `team` selects the agents in that team now;
//!   `agent` one agent. Only the time an agent existed counts (from its first stored
//!   state); an agent stored first at or after the end of the range is not listed.
//! - `GET /api/v1/agents/{id}/history?from=&to=&limit=&cursor=`: the agent's status
//!   transitions with `from <= at < to` (default: everything kept), oldest first, at most
//!   `limit` (default 1000, at most [`MAX_HISTORY_LIMIT`]) per page; `next_cursor` (when
//!   not null) fetches the next page.
//!
//! Both include every change acknowledged before the request (the store is flushed
//! first), and run their reads on the blocking pool.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::auth::authenticate_api;
use super::directory::{bad_request, error};
use crate::fanout::Filter;
use crate::hub::Hub;
use crate::model::{AgentId, Millis, Status, TeamId};
use crate::protocol::Role;
use crate::store::{
    to_csv, AgentStatusTime, HistoryCursor, HistoryRow, ReportQuery, StoreError, MAX_HISTORY_LIMIT,
};

type Params = Query<HashMap<String, String>>;

const ADMINS: &[Role] = &[Role::Admin];
/// The default report range: the last 24 hours.
pub(crate) const DEFAULT_RANGE_MS: Millis = 24 * 3600 * 1000;
/// The longest report range: 400 days.
pub(crate) const MAX_RANGE_MS: Millis = 400 * 24 * 3600 * 1000;
/// History rows per page unless `limit` says otherwise.
pub(crate) const DEFAULT_HISTORY_LIMIT: usize = 1000;

/// An optional integer parameter (Unix ms, a limit).
fn param_u64(params: &HashMap<String, String>, name: &str) -> Result<Option<u64>, String> {
    match params.get(name).map(|v| v.trim()) {
        None | Some("") => Ok(None),
        Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
            format!(
                "{name} must be a non-negative integer (Unix milliseconds for times), got {v:?}"
            )
        }),
    }
}

fn store_error(e: &StoreError) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        &format!("the durable store cannot answer: {e}"),
    )
}

/// Runs `f` on the blocking pool after everything acknowledged so far is committed.
async fn read<T: Send + 'static>(
    hub: &Hub,
    f: impl FnOnce(&crate::store::Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Response> {
    let store = hub.store().clone();
    let joined = tokio::task::spawn_blocking(move || {
        store.flush().wait_blocking()?;
        f(&store)
    })
    .await;
    match joined {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(store_error(&e)),
        Err(e) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &format!("the read failed: {e}"),
        )),
    }
}

/// The range of a request: `(from, to)`, checked.
fn range(params: &HashMap<String, String>, now: Millis) -> Result<(Millis, Millis), String> {
    let to = param_u64(params, "to")?.unwrap_or(now);
    let from = param_u64(params, "from")?.unwrap_or(to.saturating_sub(DEFAULT_RANGE_MS));
    if from >= to {
        return Err(format!("from ({from}) must be before to ({to})"));
    }
    if to - from > MAX_RANGE_MS {
        return Err(format!(
            "the range may span at most {} days",
            MAX_RANGE_MS / (24 * 3600 * 1000)
        ));
    }
    Ok((from, to))
}

/// True when the caller asked for CSV.
fn wants_csv(params: &HashMap<String, String>, headers: &HeaderMap) -> Result<bool, String> {
    match params.get("format").map(String::as_str) {
        Some("csv") => return Ok(true),
        Some("json") => return Ok(false),
        Some(other) => return Err(format!("format must be json or csv, got {other:?}")),
        None => {}
    }
    Ok(headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/csv")))
}

/// `GET /api/v1/reports/status-time`.
pub(crate) async fn status_time(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    if let Err(e) = authenticate_api(&hub, &headers, &params, ADMINS) {
        return e.into_response();
    }
    if let Some(r) = super::api::not_caught_up(&hub).await {
        return r;
    }
    let now = hub.clock().now_ms();
    let (from, to) = match range(&params, now) {
        Ok(r) => r,
        Err(m) => return bad_request(&m),
    };
    let csv = match wants_csv(&params, &headers) {
        Ok(c) => c,
        Err(m) => return bad_request(&m),
    };
    let agent = match params.get("agent") {
        Some(a) => match AgentId::parse(a) {
            Ok(a) if !hub.has_record(&a).await => return unknown_agent(&a),
            Ok(a) => Some(a),
            Err(e) => return bad_request(&e.to_string()),
        },
        None => None,
    };
    let agents = match params.get("team") {
        Some(t) => match TeamId::parse(t) {
            Ok(team) => {
                let (_, list) = hub.fanout().snapshot(&Filter::new(Some(vec![team]), None));
                Some(
                    list.iter()
                        .map(|p| p.agent_id.clone())
                        .collect::<HashSet<_>>(),
                )
            }
            Err(e) => return bad_request(&e.to_string()),
        },
        None => None,
    };
    let query = ReportQuery {
        from,
        to,
        now,
        agents,
        agent,
    };
    let rows = match read(&hub, move |s| s.status_time_report(&query)).await {
        Ok(rows) => rows,
        Err(r) => return r,
    };
    if csv {
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            to_csv(&rows),
        )
            .into_response();
    }
    let body = serde_json::json!({
        "from": from,
        "to": to,
        "now": now,
        "agents": rows.iter().map(report_row).collect::<Vec<_>>(),
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// One agent of the JSON report: seconds (millisecond precision) and milliseconds per
/// status, and the totals.
fn report_row(row: &AgentStatusTime) -> serde_json::Value {
    let mut seconds = serde_json::Map::new();
    let mut ms = serde_json::Map::new();
    for s in Status::ALL {
        let v = row.ms.get(&s).copied().unwrap_or(0);
        seconds.insert(s.as_str().into(), serde_json::json!(row.seconds(s)));
        ms.insert(s.as_str().into(), serde_json::json!(v));
    }
    let total = row.total_ms();
    serde_json::json!({
        "agent_id": row.agent_id,
        "seconds": seconds,
        "total_seconds": total as f64 / 1000.0,
        "ms": ms,
        "total_ms": total,
    })
}

/// 404 for an agent the hub does not know (history and `agent=` of a report alike).
fn unknown_agent(agent_id: &AgentId) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "unknown_agent",
        &format!("unknown agent {agent_id}"),
    )
}

/// A history cursor as text: `<at>-<id>`.
fn cursor_text(c: HistoryCursor) -> String {
    format!("{}-{}", c.at, c.id)
}

fn parse_cursor(s: &str) -> Option<HistoryCursor> {
    let (at, id) = s.split_once('-')?;
    Some(HistoryCursor {
        at: at.parse().ok()?,
        id: id.parse().ok()?,
    })
}

/// `GET /api/v1/agents/{id}/history`.
pub(crate) async fn history(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Params,
) -> Response {
    if let Err(e) = authenticate_api(&hub, &headers, &params, ADMINS) {
        return e.into_response();
    }
    if let Some(r) = super::api::not_caught_up(&hub).await {
        return r;
    }
    let agent_id = match AgentId::parse(&id) {
        Ok(a) => a,
        Err(e) => return bad_request(&e.to_string()),
    };
    if !hub.has_record(&agent_id).await {
        return unknown_agent(&agent_id);
    }
    let parsed = (|| {
        let from = param_u64(&params, "from")?.unwrap_or(0);
        let to = param_u64(&params, "to")?.unwrap_or(u64::MAX);
        if from >= to {
            return Err(format!("from ({from}) must be before to ({to})"));
        }
        let limit = param_u64(&params, "limit")?.unwrap_or(DEFAULT_HISTORY_LIMIT as u64);
        if limit == 0 || limit > MAX_HISTORY_LIMIT as u64 {
            return Err(format!("limit must be 1..={MAX_HISTORY_LIMIT}"));
        }
        let cursor = match params.get("cursor").map(String::as_str) {
            None | Some("") => None,
            Some(c) => Some(parse_cursor(c).ok_or_else(|| format!("invalid cursor {c:?}"))?),
        };
        Ok((
            from,
            to,
            usize::try_from(limit).unwrap_or(MAX_HISTORY_LIMIT),
            cursor,
        ))
    })();
    let (from, to, limit, cursor) = match parsed {
        Ok(p) => p,
        Err(m) => return bad_request(&m),
    };
    let who = agent_id.clone();
    let rows: Vec<HistoryRow> =
        match read(&hub, move |s| s.history(&who, from, to, cursor, limit)).await {
            Ok(rows) => rows,
            Err(r) => return r,
        };
    let next = if rows.len() == limit {
        rows.last().map(|r| cursor_text(r.cursor()))
    } else {
        None
    };
    let body = serde_json::json!({
        "agent_id": agent_id,
        "from": from,
        "to": to,
        "transitions": rows,
        "next_cursor": next,
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn ranges_default_and_are_bounded() {
        let now = 1_000_000_000_000;
        assert_eq!(range(&params(&[]), now), Ok((now - DEFAULT_RANGE_MS, now)));
        assert_eq!(
            range(&params(&[("from", "5"), ("to", "9")]), now),
            Ok((5, 9))
        );
        assert!(range(&params(&[("from", "9"), ("to", "9")]), now).is_err());
        assert!(range(&params(&[("from", "x")]), now).is_err());
        assert!(range(&params(&[("from", "-1")]), now).is_err());
        assert!(range(&params(&[("from", "0"), ("to", "1e3")]), now).is_err());
        let too_long = (MAX_RANGE_MS + 1).to_string();
        assert!(range(&params(&[("from", "0"), ("to", &too_long)]), now).is_err());
    }

    #[test]
    fn cursors_round_trip() {
        let c = HistoryCursor { at: 17, id: 42 };
        assert_eq!(parse_cursor(&cursor_text(c)), Some(c));
        assert_eq!(parse_cursor("17"), None);
        assert_eq!(parse_cursor("a-1"), None);
    }
}
