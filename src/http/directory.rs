//! The admin API of the agent directory and the ring groups (admin token; open in dev
//! mode). Every edit is committed to the durable store before it is answered, then applied
//! at once: to the live directory (ring timeouts, `/api/v1/available?ring_group=`) and to
//! the agent's actor (name, teams; a new wrap-up time applies from the next call on).
//! In cluster mode an edit is stored in the cluster's directory instead, and every node
//! applies it from there (`hub::cluster_directory`); the checks are the same.
//!
//! | method, path | answer |
//! |---|---|
//! | `GET /api/v1/directory/agents` | `{"agents":[profile]}` sorted by id |
//! | `GET /api/v1/directory/agents/{id}` | the profile, 404 if unknown |
//! | `PUT /api/v1/directory/agents/{id}` | creates (201) or replaces (200) the profile |
//! | `DELETE /api/v1/directory/agents/{id}` | 204, 404 if unknown |
//! | `GET /api/v1/ring-groups` | `{"ring_groups":[group]}` sorted by id |
//! | `GET/PUT/DELETE /api/v1/ring-groups/{id}` | as for agents |
//!
//! A PUT body is the whole entry as JSON (fields left out take their defaults); the id comes
//! from the path (a body `id` must match it). A malformed body, an invalid id or an
//! out-of-range value is a 400 with a message.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;

use super::auth::authenticate_api;
use crate::cluster::ClusterError;
use crate::directory::{check_ring_group_id, AgentProfile, RingGroup};
use crate::hub::cluster::RETRY_AFTER_MS;
use crate::hub::cluster_directory::Edit;
use crate::hub::persist;
use crate::hub::{profile_of, Hub};
use crate::model::{AgentId, TeamId};
use crate::protocol::describe;
use crate::protocol::Role;

type Params = Query<HashMap<String, String>>;

const ADMINS: &[Role] = &[Role::Admin];

/// An error answer: `{"type":"error","code":..,"message":..}`, keys in that order as in every
/// error of the hub (serde_json's `preserve_order` keeps `json!`'s order).
pub(super) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "type": "error", "code": code, "message": message });
    (status, axum::Json(body)).into_response()
}

pub(super) fn bad_request(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "bad_message", message)
}

fn ok_json(status: StatusCode, value: &impl serde::Serialize) -> Response {
    match serde_json::to_string(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &format!("cannot encode the answer: {e}"),
        ),
    }
}

/// Cluster mode: the edit could not be stored in the cluster's directory (retryable).
fn cluster_failed(e: &ClusterError) -> Response {
    let body = serde_json::json!({
        "type": "error",
        "code": "unavailable",
        "message": format!("not stored in the cluster's directory: {e}"),
        "retry_after_ms": e.retry_after_ms().unwrap_or(RETRY_AFTER_MS),
    });
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

/// Cluster mode: the answer to an edit stored in the cluster's directory (`None` on a
/// single node).
async fn in_cluster(hub: &Hub, edit: Edit, ok: impl FnOnce() -> Response) -> Option<Response> {
    match hub.cluster_directory_edit(edit).await? {
        Ok(()) => Some(ok()),
        Err(e) => Some(cluster_failed(&e)),
    }
}

fn store_failed(e: &crate::store::StoreError) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        &format!("not stored: {e}"),
    )
}

/// Every directory route is for admins: checks the caller, then parses the id of the path.
fn admin_with_id<T>(
    hub: &Hub,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
    id: &str,
    parse: fn(&str) -> Result<T, Box<Response>>,
) -> Result<T, Box<Response>> {
    authenticate_api(hub, headers, params, ADMINS).map_err(|e| Box::new(e.into_response()))?;
    parse(id)
}

/// A `PUT` answers 201 when it created the entry, 200 when it replaced one.
fn put_status(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

fn parse_agent_id(id: &str) -> Result<AgentId, Box<Response>> {
    AgentId::parse(id).map_err(|e| Box::new(bad_request(&e.to_string())))
}

fn parse_group_id(id: &str) -> Result<String, Box<Response>> {
    check_ring_group_id(id)
        .map(|()| id.to_string())
        .map_err(|e| Box::new(bad_request(&e.to_string())))
}

/// The body of `PUT /api/v1/directory/agents/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentBody {
    id: Option<String>,
    name: Option<String>,
    #[serde(default)]
    teams: Vec<TeamId>,
    wrap_up_seconds: Option<u64>,
    #[serde(default)]
    ring_groups: Vec<String>,
}

/// The body of `PUT /api/v1/ring-groups/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RingGroupBody {
    id: Option<String>,
    ring_timeout_seconds: Option<u64>,
    #[serde(default)]
    members: Vec<AgentId>,
}

/// A PUT body must be a JSON object: serde would also take a JSON array as the fields in
/// order (`["a7","Ada",...]`), which is not part of the API.
fn require_object(body: &[u8], what: &str) -> Result<(), String> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        _ => Err(format!("the body must be a JSON object ({what})")),
    }
}

fn agent_profile(id: AgentId, body: &[u8]) -> Result<AgentProfile, String> {
    require_object(body, "the agent profile")?;
    let b: AgentBody = serde_json::from_slice(body)
        .map_err(|e| format!("invalid agent profile: {}", describe(&e)))?;
    if b.id
        .as_deref()
        .is_some_and(|body_id| body_id != id.as_str())
    {
        return Err(format!("the body's id does not match the path's id {id}"));
    }
    // The same checks as the directory file's.
    AgentProfile {
        id,
        name: b.name,
        teams: b.teams,
        wrap_up_seconds: b.wrap_up_seconds,
        ring_groups: b.ring_groups,
    }
    .validated()
    .map_err(|e| e.to_string())
}

fn ring_group(id: String, body: &[u8]) -> Result<RingGroup, String> {
    require_object(body, "the ring group")?;
    let b: RingGroupBody = serde_json::from_slice(body)
        .map_err(|e| format!("invalid ring group: {}", describe(&e)))?;
    if b.id.as_deref().is_some_and(|body_id| body_id != id) {
        return Err(format!("the body's id does not match the path's id {id}"));
    }
    RingGroup {
        id,
        ring_timeout_seconds: b.ring_timeout_seconds,
        members: b.members,
    }
    .validated()
    .map_err(|e| e.to_string())
}

/// `GET /api/v1/directory/agents`.
pub(crate) async fn list_agents(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    if let Err(e) = authenticate_api(&hub, &headers, &params, ADMINS) {
        return e.into_response();
    }
    let mut agents: Vec<AgentProfile> = hub.directory().agents.values().cloned().collect();
    agents.sort_by(|a, b| a.id.cmp(&b.id));
    ok_json(StatusCode::OK, &serde_json::json!({ "agents": agents }))
}

/// `GET /api/v1/directory/agents/{id}`.
pub(crate) async fn get_agent(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Params,
) -> Response {
    let id = match admin_with_id(&hub, &headers, &params, &id, parse_agent_id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let found = hub.directory().agents.get(&id).cloned();
    match found {
        Some(p) => ok_json(StatusCode::OK, &p),
        None => unknown_agent(&id),
    }
}

fn unknown_agent(id: &AgentId) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "unknown_agent",
        &format!("no directory agent {id}"),
    )
}

fn unknown_group(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("no ring group {id}"),
    )
}

/// `PUT /api/v1/directory/agents/{id}`: creates or replaces a directory agent; the actor
/// (created if needed) takes the new name and teams at once, the wrap-up from the next call.
pub(crate) async fn put_agent(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Params,
    body: Bytes,
) -> Response {
    let id = match admin_with_id(&hub, &headers, &params, &id, parse_agent_id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let profile = match agent_profile(id.clone(), &body) {
        Ok(p) => p,
        Err(message) => return bad_request(&message),
    };
    let core = &hub;
    let created = !core.directory().agents.contains_key(&id);
    let answer = || ok_json(put_status(created), &profile);
    if let Some(r) = in_cluster(core, Edit::PutAgent(profile.clone()), answer).await {
        return r;
    }
    let _edit = core.directory_edit().await;
    let created = !core.directory().agents.contains_key(&id);
    if let Err(e) = persist::wait(core.store().put_agent(profile.clone())).await {
        return store_failed(&e);
    }
    core.directory_mut()
        .agents
        .insert(id.clone(), profile.clone());
    // A new actor reads its profile from the directory; an existing one is told.
    hub.router()
        .profile_changed(&id, profile_of(&profile))
        .await;
    ok_json(put_status(created), &profile)
}

/// `DELETE /api/v1/directory/agents/{id}`: the agent leaves the directory (its actor, state
/// and history stay; its name and teams are cleared).
pub(crate) async fn delete_agent(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Params,
) -> Response {
    let id = match admin_with_id(&hub, &headers, &params, &id, parse_agent_id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let core = &hub;
    if let Err(e) = core.cluster_directory_ready() {
        return cluster_failed(&e);
    }
    if core.cluster().is_some() && !core.directory().agents.contains_key(&id) {
        return unknown_agent(&id);
    }
    let answer = || StatusCode::NO_CONTENT.into_response();
    if let Some(r) = in_cluster(core, Edit::DeleteAgent(id.clone()), answer).await {
        return r;
    }
    let _edit = core.directory_edit().await;
    if !core.directory().agents.contains_key(&id) {
        return unknown_agent(&id);
    }
    if let Err(e) = persist::wait(core.store().delete_agent(&id)).await {
        return store_failed(&e);
    }
    core.directory_mut().agents.remove(&id);
    hub.router().profile_removed(&id).await;
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /api/v1/ring-groups`.
pub(crate) async fn list_ring_groups(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    if let Err(e) = authenticate_api(&hub, &headers, &params, ADMINS) {
        return e.into_response();
    }
    let mut groups: Vec<RingGroup> = hub.directory().ring_groups.values().cloned().collect();
    groups.sort_by(|a, b| a.id.cmp(&b.id));
    ok_json(
        StatusCode::OK,
        &serde_json::json!({ "ring_groups": groups }),
    )
}

/// `GET /api/v1/ring-groups/{id}`.
pub(crate) async fn get_ring_group(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Params,
) -> Response {
    let id = match admin_with_id(&hub, &headers, &params, &id, parse_group_id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let found = hub.directory().ring_groups.get(&id).cloned();
    match found {
        Some(g) => ok_json(StatusCode::OK, &g),
        None => unknown_group(&id),
    }
}

/// `PUT /api/v1/ring-groups/{id}`: creates or replaces a ring group; the next offer and
/// `/api/v1/available?ring_group=` use it at once.
pub(crate) async fn put_ring_group(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Params,
    body: Bytes,
) -> Response {
    let id = match admin_with_id(&hub, &headers, &params, &id, parse_group_id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let group = match ring_group(id.clone(), &body) {
        Ok(g) => g,
        Err(message) => return bad_request(&message),
    };
    let core = &hub;
    let created = !core.directory().ring_groups.contains_key(&id);
    let answer = || ok_json(put_status(created), &group);
    if let Some(r) = in_cluster(core, Edit::PutGroup(group.clone()), answer).await {
        return r;
    }
    let _edit = core.directory_edit().await;
    let created = !core.directory().ring_groups.contains_key(&id);
    if let Err(e) = persist::wait(core.store().put_ring_group(group.clone())).await {
        return store_failed(&e);
    }
    core.directory_mut().ring_groups.insert(id, group.clone());
    ok_json(put_status(created), &group)
}

/// `DELETE /api/v1/ring-groups/{id}`.
pub(crate) async fn delete_ring_group(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Params,
) -> Response {
    let id = match admin_with_id(&hub, &headers, &params, &id, parse_group_id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let core = &hub;
    if let Err(e) = core.cluster_directory_ready() {
        return cluster_failed(&e);
    }
    if core.cluster().is_some() && !core.directory().ring_groups.contains_key(&id) {
        return unknown_group(&id);
    }
    let answer = || StatusCode::NO_CONTENT.into_response();
    if let Some(r) = in_cluster(core, Edit::DeleteGroup(id.clone()), answer).await {
        return r;
    }
    let _edit = core.directory_edit().await;
    if !core.directory().ring_groups.contains_key(&id) {
        return unknown_group(&id);
    }
    if let Err(e) = persist::wait(core.store().delete_ring_group(&id)).await {
        return store_failed(&e);
    }
    core.directory_mut().ring_groups.remove(&id);
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> AgentId {
        AgentId::parse(s).expect("id")
    }

    #[test]
    fn agent_bodies_are_checked() {
        let p = agent_profile(
            id("a1"),
            br#"{"name":"Ada","teams":["t1","t1"],"wrap_up_seconds":30,"ring_groups":["g"]}"#,
        )
        .expect("valid");
        assert_eq!(p.teams.len(), 1, "duplicates dropped");
        assert_eq!(p.wrap_up_seconds, Some(30));
        assert!(agent_profile(id("a1"), br#"{"id":"a1"}"#).is_ok());
        for (body, needle) in [
            (&b""[..], "JSON object"),
            (b"[]", "JSON object"),
            (br#" ["a1","Ada",["sales"],5,["line"]]"#, "JSON object"),
            (b"{", "invalid agent profile"),
            (br#"{"id":"a2"}"#, "does not match"),
            (br#"{"nme":"x"}"#, "unknown field"),
            (br#"{"teams":["bad team"]}"#, "team id"),
            (br#"{"wrap_up_seconds":-1}"#, "invalid agent profile"),
            (br#"{"wrap_up_seconds":999999}"#, "wrap_up_seconds"),
            (br#"{"ring_groups":["a b"]}"#, "ring group"),
        ] {
            let e = agent_profile(id("a1"), body).expect_err("invalid");
            assert!(e.contains(needle), "{e:?} should mention {needle:?}");
        }
    }

    #[test]
    fn ring_group_bodies_are_checked() {
        let g = ring_group(
            "g".into(),
            br#"{"ring_timeout_seconds":20,"members":["a1"]}"#,
        )
        .expect("valid");
        assert_eq!(g.ring_timeout_seconds, Some(20));
        for body in [
            &br#"{"ring_timeout_seconds":0}"#[..],
            br#"{"ring_timeout_seconds":100000}"#,
            br#"{"members":["a b"]}"#,
            br#"{"id":"other"}"#,
            br#"{"extra":1}"#,
            b"null",
            br#"["g",20,["a1"]]"#,
        ] {
            assert!(ring_group("g".into(), body).is_err());
        }
    }
}
