//! The directory admin API over HTTP (in-process hub on an in-memory store): create, read,
//! replace and delete agents and ring groups; edits reach live actors at once (name, teams;
//! wrap-up from the next call on), ring groups drive `/api/v1/available?ring_group=` and
//! ring timeouts; bad bodies are 400 with a message, unknown ids 404; admin token only.

use crate::common::*;
use jsonwebtoken::get_current_timestamp;
use presence_hub::directory::Directory;
use presence_hub::Settings;
use serde_json::{json, Value};
use std::time::Duration;

const SECRET: &str = "directory-test-secret-0123";

async fn send(
    hub: &TestHub,
    method: reqwest::Method,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, hub.http_url(path));
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn put(hub: &TestHub, path: &str, body: &str) -> (u16, Value) {
    send(hub, reqwest::Method::PUT, path, Some(body), None).await
}

async fn delete(hub: &TestHub, path: &str) -> (u16, Value) {
    send(hub, reqwest::Method::DELETE, path, None, None).await
}

fn assert_error(status: u16, body: &Value, expected: u16) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["type"], "error", "{body}");
    let message = body["message"].as_str().unwrap_or("");
    assert!(!message.is_empty(), "an error says why: {body}");
}

#[tokio::test]
async fn directory_agents_are_created_read_replaced_and_deleted() {
    let hub = TestHub::start().await;
    let (mut admin, _) = hub.admin("boss").await;
    assert_eq!(
        hub.get("/api/v1/directory/agents").await,
        (200, json!({"agents": []}))
    );
    let (status, body) = put(
        &hub,
        "/api/v1/directory/agents/a1",
        r#"{"name":"Ada","teams":["sales"],"wrap_up_seconds":20,"ring_groups":["line"]}"#,
    )
    .await;
    assert_eq!(status, 201, "created: {body}");
    let profile = json!({"id": "a1", "name": "Ada", "teams": ["sales"], "wrap_up_seconds": 20, "ring_groups": ["line"]});
    assert_eq!(body, profile);
    assert_eq!(
        hub.get("/api/v1/directory/agents/a1").await,
        (200, profile.clone())
    );
    assert_eq!(
        hub.get("/api/v1/directory/agents").await.1,
        json!({"agents": [profile]})
    );
    // Creating a directory agent creates its actor at once (offline, never changed).
    let a1 = hub.agent_state("a1").await;
    assert_eq!(a1["name"], "Ada");
    assert_eq!(a1["teams"], json!(["sales"]));
    // Replacing it reaches the live actor and every admin at once.
    let (status, body) = put(
        &hub,
        "/api/v1/directory/agents/a1",
        r#"{"id":"a1","name":"Ada L.","teams":["sales","vip"]}"#,
    )
    .await;
    assert_eq!(status, 200, "replaced: {body}");
    assert_eq!(
        body["wrap_up_seconds"],
        Value::Null,
        "a PUT replaces the whole entry"
    );
    let update = admin.update().await;
    assert_eq!(update["agent"]["name"], "Ada L.", "{update}");
    assert_eq!(update["agent"]["teams"], json!(["sales", "vip"]));
    assert_eq!(hub.agent_state("a1").await["name"], "Ada L.");
    let (_, vip) = hub.get("/api/v1/agents?team=vip").await;
    assert_eq!(vip["agents"].as_array().map(Vec::len), Some(1), "{vip}");
    // Deleting: 204, then 404; the agent itself stays (state and history are kept).
    let (status, _) = delete(&hub, "/api/v1/directory/agents/a1").await;
    assert_eq!(status, 204);
    let (status, body) = hub.get("/api/v1/directory/agents/a1").await;
    assert_error(status, &body, 404);
    let (status, body) = delete(&hub, "/api/v1/directory/agents/a1").await;
    assert_error(status, &body, 404);
    // Until its idle actor stops it is listed with its name cleared; then it leaves the list
    // (as any idle agent out of the directory), and its history stays.
    let (status, a1) = hub.get("/api/v1/agents/a1").await;
    match status {
        200 => assert_eq!(a1["name"], Value::Null, "no longer in the directory: {a1}"),
        _ => assert_error(status, &a1, 404),
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, list) = hub.get("/api/v1/agents").await;
        if list["agents"].as_array().is_some_and(|a| a.is_empty()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still listed: {list}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, history) = hub.get("/api/v1/agents/a1/history").await;
    assert_eq!(status, 200, "its history is kept: {history}");
    hub.stop().await;
}

#[tokio::test]
async fn bad_directory_requests_are_400_with_a_message_and_unknown_ids_404() {
    let hub = TestHub::start().await;
    for body in [
        "",
        "not json",
        "[]",
        "null",
        "{",
        r#"{"name": 5}"#,
        r#"{"teams": "sales"}"#,
        r#"{"teams": ["bad team"]}"#,
        r#"{"wrap_up_seconds": -3}"#,
        r#"{"wrap_up_seconds": 999999999}"#,
        r#"{"unknown": 1}"#,
        r#"{"id": "someone-else"}"#,
        r#"{"ring_groups": ["no spaces"]}"#,
    ] {
        let (status, reply) = put(&hub, "/api/v1/directory/agents/a1", body).await;
        assert_error(status, &reply, 400);
    }
    for body in [
        "",
        "{}x",
        r#"{"ring_timeout_seconds": 0}"#,
        r#"{"ring_timeout_seconds": 86400}"#,
        r#"{"members": ["a b"]}"#,
        r#"{"members": "a1"}"#,
        r#"{"id": "other"}"#,
    ] {
        let (status, reply) = put(&hub, "/api/v1/ring-groups/g1", body).await;
        assert_error(status, &reply, 400);
    }
    // Nothing was created by the refused requests.
    assert_eq!(
        hub.get("/api/v1/directory/agents").await.1,
        json!({"agents": []})
    );
    assert_eq!(
        hub.get("/api/v1/ring-groups").await.1,
        json!({"ring_groups": []})
    );
    // Invalid ids are 400, unknown ones 404.
    for path in [
        "/api/v1/directory/agents/a%20b",
        "/api/v1/directory/agents/%E2%9C%93",
        "/api/v1/ring-groups/g%2Fx",
    ] {
        let (status, reply) = hub.get(path).await;
        assert_error(status, &reply, 400);
        let (status, reply) = put(&hub, path, "{}").await;
        assert_error(status, &reply, 400);
        let (status, reply) = delete(&hub, path).await;
        assert_error(status, &reply, 400);
    }
    for path in [
        "/api/v1/directory/agents/nobody",
        "/api/v1/ring-groups/nothing",
    ] {
        let (status, reply) = hub.get(path).await;
        assert_error(status, &reply, 404);
        let (status, reply) = delete(&hub, path).await;
        assert_error(status, &reply, 404);
    }
    hub.stop().await;
}

#[tokio::test]
async fn a_new_wrap_up_time_applies_from_the_next_call_on() {
    let hub = TestHub::start().await;
    let (status, _) = put(
        &hub,
        "/api/v1/directory/agents/w1",
        r#"{"wrap_up_seconds":0}"#,
    )
    .await;
    assert_eq!(status, 201);
    let (mut tab, _) = hub.agent("w1").await;
    let mut tel = hub.telephony().await;
    let call = |n: u32| {
        let call_id = format!("c{n}");
        (
            event("outbound_started", &call_id, "w1"),
            event("call_ended", &call_id, "w1"),
        )
    };
    let (start, end) = call(1);
    assert_eq!(tel.request(start).await["type"], "ok");
    let ended = tel.request(end).await;
    assert_eq!(ended["agent"]["status"], "offline", "no wrap-up: {ended}");
    // 30 s from now on.
    let (status, _) = put(
        &hub,
        "/api/v1/directory/agents/w1",
        r#"{"wrap_up_seconds":30}"#,
    )
    .await;
    assert_eq!(status, 200);
    let (start, end) = call(2);
    assert_eq!(tel.request(start).await["type"], "ok");
    let ended = tel.request(end).await;
    let a = &ended["agent"];
    assert_eq!(a["status"], "wrap_up", "{ended}");
    let expires = a["wrap_up_expires_at"].as_u64().expect("deadline");
    let since = a["since"].as_u64().expect("since");
    assert_eq!(expires - since, 30_000);
    // A running wrap-up keeps its deadline when the time changes again.
    let (status, _) = put(
        &hub,
        "/api/v1/directory/agents/w1",
        r#"{"wrap_up_seconds":5}"#,
    )
    .await;
    assert_eq!(status, 200);
    let a = hub.agent_state("w1").await;
    assert_eq!(a["wrap_up_expires_at"].as_u64(), Some(expires), "{a}");
    let reply = tab.request(json!({"type": "end_wrap_up"})).await;
    assert_eq!(reply["type"], "ok", "{reply}");
    hub.stop().await;
}

#[tokio::test]
async fn ring_groups_drive_available_agents_and_ring_timeouts_at_once() {
    let hub = TestHub::start().await;
    let mut tabs = Vec::new();
    for id in ["r1", "r2"] {
        let (mut tab, _) = hub.agent(id).await;
        let reply = tab
            .request(json!({"type": "set_status", "status": "available"}))
            .await;
        assert_eq!(reply["type"], "ok");
        tabs.push(tab);
    }
    let ids = |body: &Value| -> Vec<String> {
        body["agents"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x["agent_id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (_, body) = hub.get("/api/v1/available?ring_group=g1").await;
    assert!(ids(&body).is_empty());
    let (status, group) = put(
        &hub,
        "/api/v1/ring-groups/g1",
        r#"{"ring_timeout_seconds":7,"members":["r1","r1"]}"#,
    )
    .await;
    assert_eq!(status, 201, "{group}");
    assert_eq!(
        group,
        json!({"id": "g1", "ring_timeout_seconds": 7, "members": ["r1"]})
    );
    assert_eq!(hub.get("/api/v1/ring-groups/g1").await, (200, group));
    let (_, body) = hub.get("/api/v1/available?ring_group=g1").await;
    assert_eq!(ids(&body), ["r1"]);
    let (status, _) = put(
        &hub,
        "/api/v1/ring-groups/g1",
        r#"{"ring_timeout_seconds":7,"members":["r2"]}"#,
    )
    .await;
    assert_eq!(status, 200);
    let (_, body) = hub.get("/api/v1/available?ring_group=g1").await;
    assert_eq!(ids(&body), ["r2"]);
    // An offer through the group rings for the group's timeout.
    let mut tel = hub.telephony().await;
    let mut offer = event("call_offered", "c1", "r2");
    offer["ring_group"] = json!("g1");
    let reply = tel.request(offer).await;
    assert_eq!(reply["accepted"], true, "{reply}");
    let a = &reply["agent"];
    let rings = a["ring_expires_at"].as_u64().expect("deadline")
        - a["call"]["offered_at"].as_u64().expect("offered");
    assert_eq!(rings, 7_000);
    // Membership from the agent's side of the directory counts too.
    let (status, _) = put(
        &hub,
        "/api/v1/directory/agents/r1",
        r#"{"ring_groups":["g2"]}"#,
    )
    .await;
    assert_eq!(status, 201);
    let (_, body) = hub.get("/api/v1/available?ring_group=g2").await;
    assert_eq!(ids(&body), ["r1"]);
    let (status, _) = delete(&hub, "/api/v1/ring-groups/g1").await;
    assert_eq!(status, 204);
    let (_, body) = hub.get("/api/v1/ring-groups").await;
    assert_eq!(body, json!({"ring_groups": []}));
    hub.stop().await;
}

#[tokio::test]
async fn the_toml_directory_seeds_the_store() {
    let settings = Settings {
        directory: Directory::from_toml(
            r#"
            [[agents]]
            id = "s1"
            name = "Seeded"
            [[ring_groups]]
            id = "line"
            members = ["s1"]
            "#,
        )
        .expect("directory"),
        ..settings()
    };
    let hub = TestHub::with(settings).await;
    let (_, body) = hub.get("/api/v1/directory/agents/s1").await;
    assert_eq!(body["name"], "Seeded");
    let (_, body) = hub.get("/api/v1/ring-groups/line").await;
    assert_eq!(body["members"], json!(["s1"]));
    hub.stop().await;
}

#[tokio::test]
async fn the_directory_api_takes_an_admin_token_when_a_secret_is_set() {
    let hub = TestHub::with(Settings {
        jwt_secret: Some(SECRET.to_string()),
        ..settings()
    })
    .await;
    let token = |role: &str| jwt(SECRET, "x1", role, get_current_timestamp() + 600);
    let get = reqwest::Method::GET;
    let put_m = reqwest::Method::PUT;
    for path in [
        "/api/v1/directory/agents",
        "/api/v1/ring-groups",
        "/api/v1/reports/status-time",
        "/api/v1/agents/x1/history",
    ] {
        let (status, _) = send(&hub, get.clone(), path, None, None).await;
        assert_eq!(status, 401, "{path} without a token");
        let (status, _) = send(&hub, get.clone(), path, None, Some(&token("agent"))).await;
        assert_eq!(status, 403, "{path} with an agent token");
    }
    let (status, _) = send(
        &hub,
        put_m.clone(),
        "/api/v1/directory/agents/x1",
        Some("{}"),
        Some(&token("telephony")),
    )
    .await;
    assert_eq!(status, 403);
    let admin = token("admin");
    let (status, body) = send(
        &hub,
        put_m,
        "/api/v1/directory/agents/x1",
        Some(r#"{"name":"X"}"#),
        Some(&admin),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = send(&hub, get, "/api/v1/directory/agents", None, Some(&admin)).await;
    assert_eq!(status, 200);
    assert_eq!(body["agents"][0]["name"], "X");
    hub.stop().await;
}

/// Issue 12, item 1: the directory file and the directory API run one validation. Every
/// entry at a limit is taken by both (and what a seeded hub answers with GET goes back with
/// PUT); every entry one past it is refused by both, with the same message (the file's
/// naming the entry's line); an id listed twice in the file is refused.
#[tokio::test]
async fn the_directory_file_and_the_api_accept_and_refuse_the_same_entries() {
    let teams = |n: usize| -> Vec<String> { (0..n).map(|i| format!("t{i}")).collect() };
    let name_at_limit = "n".repeat(256);
    let agents_ok = [
        json!({"id": "a1", "name": name_at_limit, "wrap_up_seconds": 86_400}),
        json!({"id": "a2", "teams": teams(100)}),
    ];
    let groups_ok = [
        json!({"id": "g1", "ring_timeout_seconds": 1, "members": ["a1"]}),
        json!({"id": "g2", "ring_timeout_seconds": 3_600}),
    ];
    let agents_bad = [
        (json!({"id": "a1", "name": "n".repeat(300)}), "name must be"),
        (
            json!({"id": "a1", "wrap_up_seconds": 999_999_999u64}),
            "wrap_up_seconds",
        ),
        (
            json!({"id": "a1", "teams": teams(150)}),
            "at most 100 teams",
        ),
    ];
    let groups_bad = [
        (
            json!({"id": "g", "ring_timeout_seconds": 0, "members": ["a1"]}),
            "1..=3600",
        ),
        (
            json!({"id": "g", "ring_timeout_seconds": 999_999}),
            "1..=3600",
        ),
    ];
    let toml_of = |table: &str, entry: &Value| -> String {
        let mut text = format!("# a comment line\n[[{table}]]\n");
        for (k, v) in entry.as_object().expect("object") {
            text.push_str(&format!("{k} = {v}\n"));
        }
        text
    };
    // Refused by the file, at the entry's line (2), and by the API, with the same words.
    let hub = TestHub::start().await;
    for (table, path, entry, needle) in agents_bad
        .iter()
        .map(|(e, n)| ("agents", "/api/v1/directory/agents/", e, *n))
        .chain(
            groups_bad
                .iter()
                .map(|(e, n)| ("ring_groups", "/api/v1/ring-groups/", e, *n)),
        )
    {
        let err = Directory::from_toml(&toml_of(table, entry))
            .expect_err("the file refuses it")
            .to_string();
        assert!(err.starts_with("line 2: "), "{err}");
        assert!(err.contains(needle), "{err} should say {needle:?}");
        let id = entry["id"].as_str().expect("id");
        let (status, body) = put(&hub, &format!("{path}{id}"), &entry.to_string()).await;
        assert_error(status, &body, 400);
        let message = body["message"].as_str().expect("message");
        assert!(message.contains(needle), "{message}");
        assert!(
            err.ends_with(message),
            "same message: file {err:?}, API {message:?}"
        );
    }
    hub.stop().await;
    // A duplicate id in the file is refused (not silently the last one).
    let twice = format!(
        "{}{}",
        toml_of("agents", &json!({"id": "a1", "name": "First"})),
        toml_of("agents", &json!({"id": "a1", "name": "Second"}))
    );
    let err = Directory::from_toml(&twice)
        .expect_err("duplicate")
        .to_string();
    assert_eq!(err, "line 6: agent \"a1\": listed twice");
    // Taken by the file; a seeded hub's GET goes back unchanged with PUT (200).
    let mut text = String::new();
    for a in &agents_ok {
        text.push_str(&toml_of("agents", a));
    }
    for g in &groups_ok {
        text.push_str(&toml_of("ring_groups", g));
    }
    let directory = Directory::from_toml(&text).expect("entries at the limits");
    let hub = TestHub::with(Settings {
        directory,
        ..settings()
    })
    .await;
    for (path, id) in [
        ("/api/v1/directory/agents/", "a1"),
        ("/api/v1/directory/agents/", "a2"),
        ("/api/v1/ring-groups/", "g1"),
        ("/api/v1/ring-groups/", "g2"),
    ] {
        let (status, got) = hub.get(&format!("{path}{id}")).await;
        assert_eq!(status, 200, "{got}");
        let (status, back) = put(&hub, &format!("{path}{id}"), &got.to_string()).await;
        assert_eq!((status, &back), (200, &got), "{path}{id} round trip");
    }
    hub.stop().await;
}

/// Issue 12, item 4: a PUT body must be a JSON object; a JSON array (which serde would read
/// as the fields in order) is a 400 and creates nothing.
#[tokio::test]
async fn directory_puts_refuse_json_arrays() {
    let hub = TestHub::start().await;
    for (path, body) in [
        (
            "/api/v1/directory/agents/a7",
            r#"["a7","Array Agent",["sales"],5,["sales-line"]]"#,
        ),
        ("/api/v1/ring-groups/g7", r#"["g7",20,["a7"]]"#),
        ("/api/v1/ring-groups/g7", "null"),
        ("/api/v1/directory/agents/a7", r#""a7""#),
    ] {
        let (status, answer) = put(&hub, path, body).await;
        assert_error(status, &answer, 400);
        assert!(
            answer["message"]
                .as_str()
                .is_some_and(|m| m.contains("must be a JSON object")),
            "{answer}"
        );
        let (status, _) = hub.get(path).await;
        assert_eq!(status, 404, "{path} was not created");
    }
    hub.stop().await;
}

/// Issue 12, item 6: empty and unknown query values are answered alike. `ring_group=` (empty)
/// is a 400 as `team=` is; an unknown ring group is a 404 naming it (a typo must not route
/// calls to nobody); a group only named by an agent's profile is known; a report for an
/// unknown agent is a 404 as its history is.
#[tokio::test]
async fn empty_and_unknown_query_values_are_consistent() {
    let hub = TestHub::start().await;
    for query in ["ring_group=", "team=", "status=", "ring_group=a%20b"] {
        let (status, body) = hub.get(&format!("/api/v1/available?{query}")).await;
        assert_error(status, &body, 400);
        assert_eq!(body["code"], "bad_message", "{query}: {body}");
    }
    let (status, body) = hub.get("/api/v1/available?ring_group=sales-lnie").await;
    assert_error(status, &body, 404);
    assert_eq!(body["code"], "not_found");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("sales-lnie")),
        "names the group: {body}"
    );
    let (status, _) = put(
        &hub,
        "/api/v1/ring-groups/sales-line",
        r#"{"members":["a1"]}"#,
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = put(
        &hub,
        "/api/v1/directory/agents/a2",
        r#"{"ring_groups":["side-line"]}"#,
    )
    .await;
    assert_eq!(status, 201);
    let (mut a1, _) = hub.agent("a1").await;
    let ok = a1
        .request(json!({"type": "set_status", "status": "available"}))
        .await;
    assert_eq!(ok["type"], "ok");
    let (status, body) = hub.get("/api/v1/available?ring_group=sales-line").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["agents"][0]["agent_id"], "a1");
    let (status, body) = hub.get("/api/v1/available?ring_group=side-line").await;
    assert_eq!(
        (status, body["agents"].clone()),
        (200, json!([])),
        "known, nobody available"
    );
    for path in [
        "/api/v1/reports/status-time?agent=ghost",
        "/api/v1/agents/ghost/history",
    ] {
        let (status, body) = hub.get(path).await;
        assert_error(status, &body, 404);
        assert_eq!(body["code"], "unknown_agent", "{path}: {body}");
        assert_eq!(body["message"], "unknown agent ghost");
    }
    let (status, _) = hub.get("/api/v1/reports/status-time?agent=a1").await;
    assert_eq!(status, 200);
    hub.stop().await;
}
