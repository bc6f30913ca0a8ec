//! The durable store end to end: the real `presence-hub` binary as a child process on a
//! database in a temporary directory, driven over sockets, killed with SIGKILL (or stopped
//! with SIGTERM) and restarted on the same database.
//!
//! Real time is unavoidable with a child process: the waits here are short (a 2 s
//! disconnect grace, a 500 ms ring) and every wait polls with a deadline.

use crate::common::process::hub_command;
use crate::common::{free_port, Client, TempDir};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::{sleep, Instant};

/// How long a hub may take to start, stop or reach a state (a safety net, not a timing).
const DEADLINE: Duration = Duration::from_secs(30);
/// The disconnect grace of the restart tests: long, so that restored agents stay logged in
/// while a test looks at them; the grace test passes a short one.
const GRACE_SECS: u64 = 60;
/// The grace of the test that waits for it to run out.
const SHORT_GRACE: &str = "2";

// ---------------------------------------------------------------- harness

/// The command line of a hub on `db`, with test-friendly settings.
fn command(db: &Path, port: u16, extra: &[&str], log: &Path) -> Command {
    let mut cmd = hub_command();
    cmd.arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--database")
        .arg(db);
    if !extra.contains(&"--disconnect-grace-secs") {
        cmd.arg("--disconnect-grace-secs")
            .arg(GRACE_SECS.to_string());
    }
    cmd.args(extra).env("RUST_BACKTRACE", "0");
    // Logs go to stdout, the exit error to stderr: both into one file (one shared offset).
    let file = File::create(log).expect("log file");
    let copy = file.try_clone().expect("log file");
    cmd.stdout(copy).stderr(file);
    cmd
}

/// A running hub process; killed (SIGKILL) if the test ends without stopping it.
struct HubProc {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    http: reqwest::Client,
}

static STARTS: AtomicU64 = AtomicU64::new(0);

impl HubProc {
    /// Starts a hub on `db` and waits until `/healthz` answers.
    async fn start(dir: &TempDir, db: &Path, extra: &[&str]) -> HubProc {
        for _ in 0..5 {
            let n = STARTS.fetch_add(1, Ordering::Relaxed);
            let log = dir.path(&format!("hub-{n}.log"));
            let port = free_port();
            let child = command(db, port, extra, &log).spawn().expect("spawn hub");
            let mut hub = HubProc {
                child: Some(child),
                port,
                log,
                http: reqwest::Client::new(),
            };
            if hub.wait_ready().await {
                return hub;
            }
            // The port was taken between our probe and the hub's bind: try another.
            if !hub.output().contains("cannot listen") {
                panic!("the hub did not start:\n{}", hub.output());
            }
        }
        panic!("no free port for the hub");
    }

    async fn wait_ready(&mut self) -> bool {
        let until = Instant::now() + DEADLINE;
        while Instant::now() < until {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return false;
                }
            }
            if let Ok(r) = self.http.get(self.url("/healthz")).send().await {
                if r.status().as_u16() == 200 {
                    return true;
                }
            }
            sleep(Duration::from_millis(20)).await;
        }
        panic!("the hub did not answer /healthz:\n{}", self.output());
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn ws(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.expect("get");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .put(self.url(path))
            .json(body)
            .send()
            .await
            .expect("put");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("post");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Every agent's state, by id.
    async fn agents(&self) -> BTreeMap<String, Value> {
        let (status, body) = self.get("/api/v1/agents").await;
        assert_eq!(status, 200, "{body}");
        body["agents"]
            .as_array()
            .expect("agents")
            .iter()
            .map(|a| (a["agent_id"].as_str().expect("id").to_string(), a.clone()))
            .collect()
    }

    async fn agent(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/api/v1/agents/{id}")).await;
        assert_eq!(status, 200, "agent {id}: {body}");
        body
    }

    async fn epoch(&self) -> String {
        let (_, body) = self.get("/healthz").await;
        body["epoch"].as_str().expect("epoch").to_string()
    }

    /// An agent tab (dev mode) and its `hello`.
    async fn tab(&self, id: &str) -> (Client, Value) {
        let mut c = Client::connect(&self.ws(&format!("/ws/agent?agent_id={id}"))).await;
        let hello = c.recv().await;
        assert_eq!(hello["type"], "hello", "{hello}");
        (c, hello)
    }

    async fn adapter(&self) -> Client {
        let mut c = Client::connect(&self.ws("/ws/telephony?adapter=t")).await;
        let hello = c.recv().await;
        assert_eq!(hello["type"], "hello", "{hello}");
        c
    }

    async fn admin(&self) -> Client {
        let mut c = Client::connect(&self.ws("/ws/admin?admin_id=boss")).await;
        let hello = c.recv().await;
        assert_eq!(hello["type"], "hello", "{hello}");
        c
    }

    /// SIGKILL: no shutdown code runs.
    fn kill9(mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit.
    async fn terminate(mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let exit = wait_exit(&mut child).await;
        (exit, self.output())
    }
}

impl Drop for HubProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn wait_exit(child: &mut Child) -> ExitStatus {
    let until = Instant::now() + DEADLINE;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        if Instant::now() >= until {
            let _ = child.kill();
            panic!("the hub did not exit");
        }
        sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the binary on `db` and expects it to refuse to start: returns its stderr (the logs
/// go to stdout).
async fn expect_refused(dir: &TempDir, db: &Path) -> String {
    let log = dir.path("refused.log");
    let err = dir.path("refused.stderr");
    let mut child = command(db, free_port(), &[], &log)
        .stderr(File::create(&err).expect("stderr file"))
        .spawn()
        .expect("spawn hub");
    let status = wait_exit(&mut child).await;
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(!status.success(), "the hub must exit non-zero:\n{stderr}");
    stderr
}

/// Polls `f` until it returns `Some`, or fails after [`DEADLINE`].
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        sleep(Duration::from_millis(25)).await;
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn ok(reply: &Value) -> &Value {
    assert_eq!(reply["type"], "ok", "{reply}");
    reply
}

/// The state as it must come back after a restart: everything but the sockets.
fn without_sockets(a: &Value) -> Value {
    let mut a = a.clone();
    a["connections"] = json!(0);
    a.as_object_mut().map(|o| o.remove("version"));
    a
}

/// The manual status, note and channel of agent `i` in the many-agents test.
fn plan(i: usize) -> (&'static str, Option<&'static str>, bool) {
    match i % 4 {
        0 => ("available", None, false),
        1 => ("busy", Some("lunch"), false),
        2 => ("on_break", Some("coaching"), true),
        _ => ("offline", None, true),
    }
}

// ---------------------------------------------------------------- restart after kill -9

/// Many agents change status in parallel (from their own tabs and from an admin), each
/// waiting for its `ok`, and the hub is killed with SIGKILL the moment the last `ok`
/// arrived: after a restart on the same database every acknowledged change is back (the
/// acknowledged `version`, plus one for the tab that died), under a new epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_change_survives_kill_9_and_the_epoch_changes() {
    const AGENTS: usize = 40;
    let dir = TempDir::new("kill9");
    let db = dir.path("hub.db");
    let hub = HubProc::start(&dir, &db, &[]).await;
    let epoch_before = hub.epoch().await;
    let mut tabs = Vec::new();
    for i in 0..AGENTS {
        let (tab, hello) = hub.tab(&format!("k{i}")).await;
        assert_eq!(hello["epoch"], json!(epoch_before));
        tabs.push(tab);
    }
    let mut admin = hub.admin().await;
    // Every agent: two changes from its own tab, then the planned one from its tab or from
    // the admin; all agents at once. Each task returns the acknowledged versions.
    let mut tasks = Vec::new();
    for (i, mut tab) in tabs.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut acked = None;
            for status in ["available", "busy"] {
                let reply = tab
                    .request(json!({"type": "set_status", "status": status}))
                    .await;
                acked = ok(&reply)["version"].as_u64();
            }
            let (status, note, by_admin) = plan(i);
            if !by_admin {
                let reply = tab
                    .request(json!({"type": "set_status", "status": status, "note": note}))
                    .await;
                acked = ok(&reply)["version"].as_u64();
            }
            (tab, acked)
        }));
    }
    let mut tabs = Vec::new();
    let mut acked = Vec::new();
    for t in tasks {
        let (tab, version) = t.await.expect("agent task");
        tabs.push(tab);
        acked.push(version.expect("version in ok"));
    }
    for (i, version) in acked.iter_mut().enumerate() {
        let (status, note, by_admin) = plan(i);
        if by_admin {
            let reply = admin
                .request(json!({"type": "set_agent_status", "agent_id": format!("k{i}"), "status": status, "note": note}))
                .await;
            *version = ok(&reply)["version"].as_u64().expect("version in ok");
        }
    }
    // No pause: whatever was acknowledged must already be on disk.
    hub.kill9();
    drop(tabs);
    drop(admin);

    let hub = HubProc::start(&dir, &db, &[]).await;
    assert_ne!(
        hub.epoch().await,
        epoch_before,
        "a restart starts a new epoch"
    );
    let restored = hub.agents().await;
    assert_eq!(restored.len(), AGENTS);
    for (i, version) in acked.iter().enumerate() {
        let id = format!("k{i}");
        let (status, note, by_admin) = plan(i);
        let a = &restored[&id];
        assert_eq!(a["status"], json!(status), "{a}");
        assert_eq!(a["manual_status"], json!(status), "{a}");
        assert_eq!(a["note"], json!(note), "{a}");
        let reason = if by_admin { "admin" } else { "manual" };
        assert_eq!(a["reason"], json!(reason), "{a}");
        // The tab died with the old process: `connections` 1 -> 0 is one more change.
        assert_eq!(a["connections"], json!(0), "{a}");
        assert_eq!(a["version"].as_u64(), Some(version + 1), "{a}");
    }
    // The history has every transition: offline -> available -> busy -> planned.
    let (status, history) = hub.get("/api/v1/agents/k0/history").await;
    assert_eq!(status, 200, "{history}");
    let tos: Vec<&str> = history["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .filter_map(|t| t["to"].as_str())
        .collect();
    assert_eq!(tos, ["available", "busy", "available"]);
}

/// One adapter pipelines offer -> answered -> ended for many agents at once (every event
/// in flight before the first reply: they share group commits, and each agent's state is
/// written once per commit, the last of its changes in it). The hub is killed with SIGKILL
/// the moment the last reply arrived: after a restart every acknowledged event id is
/// recognized (same reply, `duplicate: true`, nothing changes) and every agent's state is
/// the one its last reply showed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipelined_telephony_events_survive_kill_9() {
    const AGENTS: usize = 30;
    const KINDS: [&str; 3] = ["call_offered", "call_answered", "call_ended"];
    let dir = TempDir::new("kill9-tel");
    let db = dir.path("hub.db");
    let hub = HubProc::start(&dir, &db, &[]).await;
    let mut tabs = Vec::new();
    for i in 0..AGENTS {
        let (mut tab, _) = hub.tab(&format!("t{i}")).await;
        ok(&tab
            .request(json!({"type": "set_status", "status": "available"}))
            .await);
        tabs.push(tab);
    }
    let mut tel = hub.adapter().await;
    let event = |kind: &str, i: usize| {
        json!({"type": kind, "event_id": format!("{kind}-{i}"), "call_id": format!("c{i}"),
            "agent_id": format!("t{i}"), "ref": format!("{kind}-{i}")})
    };
    // Per agent, its events stay in order; across agents they interleave.
    for kind in KINDS {
        for i in 0..AGENTS {
            tel.send(event(kind, i)).await;
        }
    }
    let mut replies = BTreeMap::new();
    while replies.len() < AGENTS * KINDS.len() {
        let reply = tel.recv().await;
        if let Some(r) = reply["ref"].as_str() {
            replies.insert(r.to_string(), ok(&reply).clone());
        }
    }
    // No pause: whatever was acknowledged must already be on disk.
    hub.kill9();
    drop((tabs, tel));

    let hub = HubProc::start(&dir, &db, &[]).await;
    let restored = hub.agents().await;
    let mut tel = hub.adapter().await;
    for i in 0..AGENTS {
        let last = &replies[&format!("call_ended-{i}")];
        assert_eq!(last["agent"]["reason"], "call_ended", "{last}");
        let a = &restored[&format!("t{i}")];
        assert_eq!(
            without_sockets(a),
            without_sockets(&last["agent"]),
            "agent t{i}"
        );
        for kind in KINDS {
            let again = tel.request(event(kind, i)).await;
            let mut expected = replies[&format!("{kind}-{i}")].clone();
            expected["duplicate"] = json!(true);
            expected["ref"] = again["ref"].clone();
            assert_eq!(again, expected, "{kind} for t{i}: the first reply again");
        }
        assert_eq!(hub.agent(&format!("t{i}")).await["version"], a["version"]);
    }
}

/// Row 22 after a restart: a tab that comes back within the grace keeps its status (no
/// login); row 21: an agent whose tab does not come back is logged out when the grace
/// (counted from the restart) runs out.
#[tokio::test]
async fn after_a_restart_a_tab_within_grace_resumes_and_a_missing_one_is_logged_out() {
    let dir = TempDir::new("grace");
    let db = dir.path("hub.db");
    let args = ["--disconnect-grace-secs", SHORT_GRACE];
    let hub = HubProc::start(&dir, &db, &args).await;
    let (mut back, _) = hub.tab("back").await;
    let (mut gone, _) = hub.tab("gone").await;
    ok(&back
        .request(json!({"type": "set_status", "status": "available"}))
        .await);
    ok(&gone
        .request(json!({"type": "set_status", "status": "busy", "note": "email"}))
        .await);
    hub.kill9();
    drop((back, gone));

    let restart = now_ms();
    let hub = HubProc::start(&dir, &db, &args).await;
    let (mut back, hello) = hub.tab("back").await;
    let a = &hello["agent"];
    assert_eq!(a["status"], "available", "row 22 keeps the status: {a}");
    assert_eq!(a["manual_status"], "available");
    assert_eq!(a["reason"], "manual", "no login: {a}");
    assert_eq!(a["connections"], 1);
    // The other one is logged out as in row 21 once the grace runs out.
    let logged_out = eventually("the missing agent to be logged out", || async {
        let a = hub.agent("gone").await;
        (a["status"] == "offline").then_some(a)
    })
    .await;
    assert_eq!(logged_out["reason"], "disconnected", "{logged_out}");
    let grace_ms: u64 = SHORT_GRACE.parse::<u64>().expect("grace") * 1000;
    let since = logged_out["since"].as_u64().expect("since");
    assert!(
        since >= restart + grace_ms,
        "the grace counts from the restart: logged out at {since}, restart at {restart}"
    );
    assert_eq!(logged_out["manual_status"], "offline");
    assert_eq!(logged_out["note"], Value::Null);
    // The resumed tab is untouched by the grace running out.
    let pong = back.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
    let a = hub.agent("back").await;
    assert_eq!(a["status"], "available", "{a}");
    assert_eq!(a["connections"], 1);
}

/// Timers re-arm from the stored deadlines: a ring and a wrap-up whose deadlines passed
/// while the hub was down end at start (reason `ring_timeout`, `missed_in_row` 1;
/// `wrap_up_expired`). The adapter re-syncs: `call_ended` for a call the hub still believes
/// active is applied normally, and event ids answered before the crash are duplicates.
#[tokio::test]
async fn timers_event_ids_and_active_calls_survive_a_restart() {
    let dir = TempDir::new("timers");
    let db = dir.path("hub.db");
    let hub = HubProc::start(&dir, &db, &[]).await;
    let (status, body) = hub
        .put(
            "/api/v1/directory/agents/wrap",
            &json!({"wrap_up_seconds": 2}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let mut tabs = Vec::new();
    for id in ["ring", "wrap", "talk"] {
        let (mut tab, _) = hub.tab(id).await;
        ok(&tab
            .request(json!({"type": "set_status", "status": "available"}))
            .await);
        tabs.push(tab);
    }
    let mut tel = hub.adapter().await;
    let offer = json!({"type": "call_offered", "event_id": "offer-1", "call_id": "c-ring",
        "agent_id": "ring", "ring_timeout_ms": 500});
    let first = tel.request(offer.clone()).await;
    assert_eq!(first["accepted"], true, "{first}");
    let ring_expires = first["agent"]["ring_expires_at"]
        .as_u64()
        .expect("deadline");
    for (kind, call, agent) in [
        ("outbound_started", "c-wrap", "wrap"),
        ("call_ended", "c-wrap", "wrap"),
        ("outbound_started", "c-talk", "talk"),
    ] {
        let reply = tel
            .request(json!({"type": kind, "event_id": format!("{kind}-{call}"), "call_id": call, "agent_id": agent}))
            .await;
        ok(&reply);
    }
    let wrap = hub.agent("wrap").await;
    assert_eq!(wrap["status"], "wrap_up", "{wrap}");
    let wrap_expires = wrap["wrap_up_expires_at"].as_u64().expect("deadline");
    hub.kill9();
    drop((tabs, tel));
    // Let both deadlines pass while the hub is down.
    let deadline = ring_expires.max(wrap_expires) + 200;
    while now_ms() < deadline {
        sleep(Duration::from_millis(50)).await;
    }

    let hub = HubProc::start(&dir, &db, &[]).await;
    let ring = hub.agent("ring").await;
    assert_eq!(ring["status"], "available", "{ring}");
    assert_eq!(ring["reason"], "ring_timeout");
    assert_eq!(ring["missed_in_row"], 1);
    assert_eq!(ring["call"], Value::Null);
    assert_eq!(ring["ring_expires_at"], Value::Null);
    let wrap = hub.agent("wrap").await;
    assert_eq!(wrap["status"], "available", "{wrap}");
    assert_eq!(wrap["reason"], "wrap_up_expired");
    let mut tel = hub.adapter().await;
    // The same event id again: the first reply, marked duplicate, nothing changes.
    let again = tel.request(offer).await;
    let mut expected = first.clone();
    expected["duplicate"] = json!(true);
    expected["ref"] = again["ref"].clone();
    assert_eq!(again, expected, "same reply, duplicate: true");
    assert_eq!(hub.agent("ring").await["version"], ring["version"]);
    // The call still active is ended normally (not stale).
    let talk = hub.agent("talk").await;
    assert_eq!(talk["status"], "on_call", "{talk}");
    let ended = tel
        .request(json!({"type": "call_ended", "event_id": "end-talk", "call_id": "c-talk", "agent_id": "talk"}))
        .await;
    ok(&ended);
    assert_eq!(ended.get("stale"), None, "{ended}");
    assert_eq!(ended["agent"]["status"], "available", "{ended}");
    assert_eq!(ended["agent"]["reason"], "call_ended");
}

// ---------------------------------------------------------------- clean stops

/// SIGTERM flushes the store: states, directory edits and ring groups are all back.
#[tokio::test]
async fn a_clean_stop_restores_states_and_the_directory() {
    let dir = TempDir::new("term");
    let db = dir.path("hub.db");
    let hub = HubProc::start(&dir, &db, &[]).await;
    let (status, _) = hub
        .put(
            "/api/v1/directory/agents/d1",
            &json!({"name": "Dee", "teams": ["sales"], "wrap_up_seconds": 7, "ring_groups": ["line"]}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = hub
        .put(
            "/api/v1/ring-groups/line",
            &json!({"ring_timeout_seconds": 12, "members": ["d1", "x9"]}),
        )
        .await;
    assert_eq!(status, 201);
    // x9 is known from the directory only (telephony reaches directory agents and logged
    // in ones): it never logs in.
    let (status, _) = hub.put("/api/v1/directory/agents/x9", &json!({})).await;
    assert_eq!(status, 201);
    let (mut tab, _) = hub.tab("d1").await;
    ok(&tab
        .request(json!({"type": "set_status", "status": "on_break", "note": "tea"}))
        .await);
    let (status, reply) = hub
        .post(
            "/api/v1/telephony/events",
            &json!({"type": "outbound_started", "event_id": "http-1", "call_id": "c9", "agent_id": "x9"}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let before = hub.agents().await;
    let (_, directory) = hub.get("/api/v1/directory/agents").await;
    let (_, groups) = hub.get("/api/v1/ring-groups").await;
    let (exit, stderr) = hub.terminate().await;
    assert!(exit.success(), "clean exit: {exit:?}\n{stderr}");
    assert!(
        stderr.contains("durable store flushed and closed"),
        "{stderr}"
    );
    drop(tab);

    let hub = HubProc::start(&dir, &db, &[]).await;
    let after = hub.agents().await;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    for (id, b) in &before {
        assert_eq!(without_sockets(&after[id]), without_sockets(b), "{id}");
    }
    assert_eq!(after["d1"]["name"], "Dee");
    assert_eq!(after["d1"]["status"], "on_break");
    assert_eq!(after["x9"]["status"], "on_call");
    assert_eq!(hub.get("/api/v1/directory/agents").await.1, directory);
    assert_eq!(hub.get("/api/v1/ring-groups").await.1, groups);
    let (_, available) = hub.get("/api/v1/available?ring_group=line").await;
    assert_eq!(available["agents"], json!([]), "nobody is available");
}

/// `--durability async`: changes are acknowledged at once; after a clean stop every one of
/// them is back.
#[tokio::test]
async fn async_durability_keeps_acknowledged_changes_over_a_clean_stop() {
    let dir = TempDir::new("async");
    let db = dir.path("hub.db");
    let args = ["--durability", "async"];
    let hub = HubProc::start(&dir, &db, &args).await;
    let mut tabs = Vec::new();
    for i in 0..10 {
        let (mut tab, _) = hub.tab(&format!("s{i}")).await;
        let (status, note, _) = plan(i);
        ok(&tab
            .request(json!({"type": "set_status", "status": status, "note": note}))
            .await);
        tabs.push(tab);
    }
    let before = hub.agents().await;
    let (exit, stderr) = hub.terminate().await;
    assert!(exit.success(), "{stderr}");
    drop(tabs);
    let hub = HubProc::start(&dir, &db, &args).await;
    let after = hub.agents().await;
    assert_eq!(after.len(), 10);
    for (id, b) in &before {
        assert_eq!(without_sockets(&after[id]), without_sockets(b), "{id}");
    }
}

// ---------------------------------------------------------------- bad database files

fn garbage(len: usize) -> Vec<u8> {
    // A fixed pseudo-random sequence (xorshift): the test is the same on every run.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sidecars(db: &Path) -> Vec<PathBuf> {
    ["-wal", "-shm", "-journal"]
        .iter()
        .map(|s| PathBuf::from(format!("{}{s}", db.display())))
        .filter(|p| p.exists())
        .collect()
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused_and_left_untouched() {
    let dir = TempDir::new("garbage");
    let db = dir.path("hub.db");
    let bytes = garbage(16 * 1024);
    std::fs::write(&db, &bytes).expect("write");
    let stderr = expect_refused(&dir, &db).await;
    assert!(
        stderr.contains("is not a presence-hub database"),
        "a clear message: {stderr}"
    );
    assert_eq!(
        std::fs::read(&db).expect("read"),
        bytes,
        "nothing overwritten"
    );
    assert_eq!(sidecars(&db), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn a_damaged_database_is_refused_and_left_untouched() {
    let dir = TempDir::new("damaged");
    let db = dir.path("hub.db");
    // A real database (clean stop: everything in the main file), then its pages after the
    // first one overwritten: the header is intact, the schema and tables are not.
    let hub = HubProc::start(&dir, &db, &[]).await;
    let (mut tab, _) = hub.tab("a1").await;
    ok(&tab
        .request(json!({"type": "set_status", "status": "busy"}))
        .await);
    let (exit, _) = hub.terminate().await;
    assert!(exit.success());
    let mut bytes = std::fs::read(&db).expect("read");
    assert!(bytes.len() > 4096, "more than one page");
    let noise = garbage(bytes.len());
    bytes[100..].copy_from_slice(&noise[100..]);
    std::fs::write(&db, &bytes).expect("write");
    let stderr = expect_refused(&dir, &db).await;
    assert!(
        stderr.contains("corrupt") || stderr.contains("not a presence-hub database"),
        "a clear message: {stderr}"
    );
    assert_eq!(
        std::fs::read(&db).expect("read"),
        bytes,
        "nothing overwritten"
    );
}

#[tokio::test]
async fn a_read_only_database_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("readonly");
    let db = dir.path("hub.db");
    let hub = HubProc::start(&dir, &db, &[]).await;
    let (exit, _) = hub.terminate().await;
    assert!(exit.success());
    let bytes = std::fs::read(&db).expect("read");
    // The store checks the permission bits itself, so this holds for root (CI) too.
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o444)).expect("chmod");
    let stderr = expect_refused(&dir, &db).await;
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(stderr.contains("read-only"), "a clear message: {stderr}");
    assert_eq!(
        std::fs::read(&db).expect("read"),
        bytes,
        "nothing overwritten"
    );
}
