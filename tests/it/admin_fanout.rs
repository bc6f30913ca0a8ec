//! Admin fan-out over the wire: filtered subscriptions and their snapshots, hub-wide `seq`
//! without gaps, `resume` after missed events, the slow-consumer bound (4008), and a
//! concurrent run whose every admin view must end up identical to the hub's.

use crate::common::*;
use presence_hub::directory::Directory;
use presence_hub::Settings;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// An admin's picture of the hub: a snapshot plus the updates applied to it.
#[derive(Debug, Clone)]
struct View {
    seq: u64,
    agents: BTreeMap<String, Value>,
    /// Updates that carried a version <= the one already known (never expected).
    stale_updates: usize,
}

impl View {
    /// From a `snapshot` object (`{epoch, seq, agents}`) or the body of `GET /api/v1/agents`.
    fn from_snapshot(snapshot: &Value) -> View {
        let agents = snapshot["agents"]
            .as_array()
            .unwrap_or_else(|| panic!("snapshot has agents: {snapshot}"))
            .iter()
            .map(|a| {
                (
                    a["agent_id"].as_str().expect("agent_id").to_string(),
                    a.clone(),
                )
            })
            .collect();
        View {
            seq: snapshot["seq"].as_u64().expect("snapshot seq"),
            agents,
            stale_updates: 0,
        }
    }

    /// Applies one `agent` update. `contiguous`: the subscriber sees every event (no
    /// filter), so `seq` must be exactly the next one; otherwise only increasing.
    fn apply(&mut self, update: &Value, contiguous: bool) {
        assert_eq!(update["type"], "agent", "an agent update: {update}");
        let seq = update["seq"].as_u64().expect("seq");
        if contiguous {
            assert_eq!(seq, self.seq + 1, "gap or reorder in seq: {update}");
        } else {
            assert!(
                seq > self.seq,
                "seq not increasing ({}): {update}",
                self.seq
            );
        }
        self.seq = seq;
        let agent = &update["agent"];
        let id = agent["agent_id"].as_str().expect("agent_id").to_string();
        let version = agent["version"].as_u64().expect("version");
        match self.agents.get(&id) {
            Some(known) if known["version"].as_u64().expect("version") >= version => {
                self.stale_updates += 1;
            }
            _ => {
                self.agents.insert(id, agent.clone());
            }
        }
    }
}

/// The hub's own view, `GET /api/v1/agents` (optionally `?team=`).
async fn hub_view(hub: &TestHub, query: &str) -> View {
    let (status, body) = hub.get(&format!("/api/v1/agents{query}")).await;
    assert_eq!(status, 200, "{body}");
    View::from_snapshot(&body)
}

async fn subscribe(c: &mut Client, filter: Value) -> Value {
    let mut req = json!({"type": "subscribe"});
    for (k, v) in filter.as_object().expect("filter object") {
        req[k] = v.clone();
    }
    let reply = c.request(req).await;
    assert_eq!(reply["type"], "ok", "{reply}");
    assert!(reply["snapshot"].is_object(), "{reply}");
    reply
}

async fn admin_unsubscribed(hub: &TestHub, id: &str) -> Client {
    let mut c = Client::connect(&hub.ws_url(&format!("/ws/admin?admin_id={id}"))).await;
    let hello = c.recv().await;
    assert_eq!(hello["type"], "hello", "{hello}");
    assert_eq!(hello["role"], "admin", "{hello}");
    c
}

/// A telephony request that must be answered `ok`.
async fn tel_ok(tel: &mut Client, ev: Value) -> Value {
    let reply = tel.request(ev).await;
    assert_eq!(reply["type"], "ok", "{reply}");
    reply
}

fn directory(toml: &str) -> Directory {
    Directory::from_toml(toml).expect("valid directory")
}

fn team_directory() -> Directory {
    directory(
        r#"
        [[agents]]
        id = "a1"
        name = "Ada"
        teams = ["sales"]
        [[agents]]
        id = "a2"
        name = "Bob"
        teams = ["support"]
        [[agents]]
        id = "a3"
        name = "Cy"
        teams = ["sales", "support"]
        [[agents]]
        id = "a4"
        name = "Di"
        "#,
    )
}

// ---------------------------------------------------------------------------------------
// Filters, snapshots, unsubscribe
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn filtered_subscriptions_get_matching_snapshots_and_updates_only() {
    let hub = TestHub::with(Settings {
        directory: team_directory(),
        ..settings()
    })
    .await;
    let mut all = admin_unsubscribed(&hub, "all").await;
    let mut sales = admin_unsubscribed(&hub, "sales").await;
    let mut listed = admin_unsubscribed(&hub, "listed").await;
    let mut both = admin_unsubscribed(&hub, "both").await;

    let snap_all = subscribe(&mut all, json!({})).await;
    let snap_sales = subscribe(&mut sales, json!({"teams": ["sales"]})).await;
    let snap_listed = subscribe(&mut listed, json!({"agents": ["a2", "a4", "zz"]})).await;
    // Both lists narrow: support team AND one of a1/a2 -> a2 only.
    let snap_both = subscribe(
        &mut both,
        json!({"teams": ["support"], "agents": ["a1", "a2"]}),
    )
    .await;

    // Snapshots: exactly the matching directory agents, sorted by id, as the HTTP API has them.
    assert_eq!(
        ids(&snap_all["snapshot"]["agents"]),
        ["a1", "a2", "a3", "a4"]
    );
    assert_eq!(ids(&snap_sales["snapshot"]["agents"]), ["a1", "a3"]);
    assert_eq!(ids(&snap_listed["snapshot"]["agents"]), ["a2", "a4"]);
    assert_eq!(ids(&snap_both["snapshot"]["agents"]), ["a2"]);
    let (_, http_all) = hub.get("/api/v1/agents").await;
    let (_, http_sales) = hub.get("/api/v1/agents?team=sales").await;
    assert_eq!(snap_all["snapshot"]["agents"], http_all["agents"]);
    assert_eq!(snap_sales["snapshot"]["agents"], http_sales["agents"]);
    assert_eq!(snap_all["snapshot"]["epoch"], http_all["epoch"]);
    assert_eq!(snap_all["snapshot"]["seq"], 0, "nothing happened yet");
    let a1 = &snap_sales["snapshot"]["agents"][0];
    assert_eq!(a1["name"], "Ada");
    assert_eq!(a1["teams"], json!(["sales"]));
    assert_eq!(a1["status"], "offline");
    assert_eq!(a1["version"], 0);
    assert_eq!(a1["connections"], 0);

    // One change per agent, in order a1..a4.
    let mut tel = hub.telephony().await;
    for id in ["a1", "a2", "a3", "a4"] {
        tel_ok(&mut tel, event("outbound_started", &format!("c-{id}"), id)).await;
    }
    let mut seen_all = Vec::new();
    for _ in 0..4 {
        let u = all.update().await;
        seen_all.push((u["agent"]["agent_id"].clone(), u["seq"].clone()));
    }
    assert_eq!(
        seen_all,
        vec![
            (json!("a1"), json!(1)),
            (json!("a2"), json!(2)),
            (json!("a3"), json!(3)),
            (json!("a4"), json!(4))
        ]
    );
    let u = sales.update().await;
    assert_eq!(
        (&u["agent"]["agent_id"], &u["seq"]),
        (&json!("a1"), &json!(1))
    );
    let u = sales.update().await;
    assert_eq!(
        (&u["agent"]["agent_id"], &u["seq"]),
        (&json!("a3"), &json!(3))
    );
    assert_eq!(u["agent"]["status"], "on_call");
    let u = listed.update().await;
    assert_eq!(
        (&u["agent"]["agent_id"], &u["seq"]),
        (&json!("a2"), &json!(2))
    );
    let u = listed.update().await;
    assert_eq!(
        (&u["agent"]["agent_id"], &u["seq"]),
        (&json!("a4"), &json!(4))
    );
    let u = both.update().await;
    assert_eq!(
        (&u["agent"]["agent_id"], &u["seq"]),
        (&json!("a2"), &json!(2))
    );
    // Every update was queued before the telephony replies: nothing else is on its way.
    for c in [&mut all, &mut sales, &mut listed, &mut both] {
        c.expect_quiet().await;
    }

    // An agent unknown at subscribe time that logs in later with a listed id / team.
    let (_zz, hello) = hub.agent("zz").await;
    assert_eq!(hello["agent"]["agent_id"], "zz");
    let u = listed.update().await;
    assert_eq!(u["agent"]["agent_id"], "zz");
    assert_eq!(u["seq"], 5);
    let mut s9 = Client::connect(&hub.ws_url("/ws/agent?agent_id=s9&teams=sales")).await;
    assert_eq!(s9.recv().await["type"], "hello");
    let u = sales.update().await;
    assert_eq!(u["agent"]["agent_id"], "s9");
    assert_eq!(u["agent"]["teams"], json!(["sales"]));
    assert_eq!(all.update().await["agent"]["agent_id"], "zz");
    assert_eq!(all.update().await["agent"]["agent_id"], "s9");
    for c in [&mut all, &mut sales, &mut listed, &mut both] {
        c.expect_quiet().await;
    }

    // Unsubscribe: ok, then nothing more; re-subscribe replaces the filter.
    let ok = sales.request(json!({"type": "unsubscribe"})).await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let snap = subscribe(&mut listed, json!({"agents": ["a4"]})).await;
    assert_eq!(ids(&snap["snapshot"]["agents"]), ["a4"]);
    assert_eq!(snap["snapshot"]["agents"][0]["status"], "on_call");
    for id in ["a1", "a2", "a3", "a4"] {
        tel_ok(&mut tel, event("call_ended", &format!("c-{id}"), id)).await;
    }
    for id in ["a1", "a2", "a3", "a4"] {
        let u = all.update().await;
        assert_eq!(u["agent"]["agent_id"], id);
        assert_eq!(u["agent"]["status"], "offline");
    }
    let u = listed.update().await;
    assert_eq!(u["agent"]["agent_id"], "a4");
    let u = both.update().await;
    assert_eq!(u["agent"]["agent_id"], "a2");
    sales.expect_quiet().await;
    for c in [&mut all, &mut listed, &mut both] {
        c.expect_quiet().await;
    }
    let m = metrics(&hub).await;
    assert_eq!(metric(&m, "presence_hub_admin_subscribers"), 3);
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------
// seq: strictly increasing, no gaps
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seq_has_no_gaps_and_versions_step_by_one_for_all_agent_subscribers() {
    const AGENTS: usize = 8;
    const CHANGES: usize = 50;
    let hub = TestHub::start().await;
    let mut admins = Vec::new();
    for i in 0..3 {
        let (c, snap) = hub.admin(&format!("boss{i}")).await;
        assert_eq!(snap["snapshot"]["seq"], 0);
        admins.push(c);
    }
    let mut tasks = Vec::new();
    for i in 0..AGENTS {
        let url = hub.ws_url(&format!("/ws/agent?agent_id=s{i}"));
        tasks.push(tokio::spawn(async move {
            let mut tab = Client::connect(&url).await;
            assert_eq!(tab.recv().await["type"], "hello");
            for n in 0..CHANGES {
                let status = ["available", "busy", "on_break"][n % 3];
                let ok = tab
                    .request(json!({"type": "set_status", "status": status}))
                    .await;
                assert_eq!(ok["type"], "ok", "{ok}");
            }
            tab
        }));
    }
    let mut tabs = Vec::new();
    for t in tasks {
        tabs.push(t.await.expect("agent task"));
    }
    let total = (AGENTS * (CHANGES + 1)) as u64; // a login + the changes each
    let hub_now = hub_view(&hub, "").await;
    assert_eq!(hub_now.seq, total);
    for admin in &mut admins {
        let mut view = View {
            seq: 0,
            agents: BTreeMap::new(),
            stale_updates: 0,
        };
        let mut versions: HashMap<String, u64> = HashMap::new();
        for _ in 0..total {
            let u = admin.update().await;
            view.apply(&u, true);
            let id = u["agent"]["agent_id"].as_str().expect("id").to_string();
            let v = u["agent"]["version"].as_u64().expect("version");
            let prev = versions.insert(id.clone(), v);
            assert_eq!(v, prev.map_or(1, |p| p + 1), "version gap for {id}: {u}");
        }
        assert_eq!(view.seq, total);
        assert_eq!(view.agents, hub_now.agents);
        admin.expect_quiet().await;
    }
    drop(tabs);
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------
// resume
// ---------------------------------------------------------------------------------------

/// Agent tabs that each cycle through available -> busy -> on_break, so every request is a
/// change (one event).
struct Tabs {
    clients: Vec<Client>,
    changes: Vec<usize>,
}

impl Tabs {
    async fn connect(hub: &TestHub, n: usize) -> Tabs {
        let mut clients = Vec::new();
        for i in 0..n {
            clients.push(hub.agent(&format!("r{i}")).await.0);
        }
        Tabs {
            clients,
            changes: vec![0; n],
        }
    }

    /// Makes `n` status changes, round robin over the first `over` tabs.
    async fn churn_over(&mut self, over: usize, n: usize) {
        let statuses = ["available", "busy", "on_break"];
        for i in 0..n {
            let k = i % over;
            let status = statuses[self.changes[k] % 3];
            self.changes[k] += 1;
            let ok = self.clients[k]
                .request(json!({"type": "set_status", "status": status}))
                .await;
            assert_eq!(ok["type"], "ok", "{ok}");
        }
    }

    async fn churn(&mut self, n: usize) {
        self.churn_over(self.clients.len(), n).await;
    }
}

#[tokio::test]
async fn resume_after_1000_missed_events_replays_exactly_them_then_ok() {
    let hub = TestHub::start().await;
    let (mut a, snap) = hub.admin("A").await;
    let (mut witness, _) = hub.admin("witness").await;
    let epoch = snap["snapshot"]["epoch"]
        .as_str()
        .expect("epoch")
        .to_string();
    let mut view = View::from_snapshot(&snap["snapshot"]);
    let mut tabs = Tabs::connect(&hub, 4).await;
    tabs.churn(20).await;
    for _ in 0..24 {
        let u = a.update().await;
        view.apply(&u, true);
        witness.update().await;
    }
    a.close().await;
    let last = view.seq;
    assert_eq!(last, 24);

    tabs.churn(1000).await;
    let now = hub_view(&hub, "").await;
    assert_eq!(now.seq, last + 1000);
    let mut live = Vec::new();
    for _ in 0..1000 {
        live.push(witness.update().await);
    }

    let mut a = admin_unsubscribed(&hub, "A").await;
    a.send(json!({"type": "resume", "ref": "r1", "epoch": epoch, "seq": last}))
        .await;
    // Exactly the missed events, in order, identical to what a live subscriber got...
    for (i, expected) in live.iter().enumerate() {
        let u = a.recv().await;
        assert_eq!(u["seq"], last + 1 + i as u64, "{u}");
        assert_eq!(&u, expected);
        view.apply(&u, true);
    }
    // ...then the ok.
    let ok = a.recv().await;
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(ok["ref"], "r1");
    assert_eq!(ok["recovered"], true, "{ok}");
    assert_eq!(ok["replayed"], 1000, "{ok}");
    assert_eq!(ok["seq"], last + 1000, "{ok}");
    assert_eq!(ok["epoch"], epoch.as_str());
    a.expect_quiet().await;
    assert_eq!(view.agents, now.agents, "resumed view equals the hub's");
    assert_eq!(view.stale_updates, 0);

    // And it is subscribed again: the next change arrives live.
    tabs.churn_over(1, 1).await;
    let u = a.update().await;
    view.apply(&u, true);
    assert_eq!(view.agents, hub_view(&hub, "").await.agents);
    hub.stop().await;
}

#[tokio::test]
async fn resume_with_a_filter_replays_only_matching_events() {
    let hub = TestHub::start().await;
    let (a, snap) = hub.admin("A").await;
    let epoch = snap["snapshot"]["epoch"]
        .as_str()
        .expect("epoch")
        .to_string();
    let mut tabs = Tabs::connect(&hub, 4).await; // seq 1..=4: logins
    a.close().await;
    tabs.churn(40).await; // 10 changes per agent, seq 5..=44

    let mut a = admin_unsubscribed(&hub, "A").await;
    a.send(json!({"type": "resume", "ref": 1, "epoch": epoch, "seq": 2, "agents": ["r1"]}))
        .await;
    // r1 logged in at seq 2 (already seen), then changed at 6, 10, ..., 42.
    for i in 0..10u64 {
        let u = a.recv().await;
        assert_eq!(u["agent"]["agent_id"], "r1", "{u}");
        assert_eq!(u["seq"], 6 + 4 * i, "{u}");
    }
    let ok = a.recv().await;
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(ok["recovered"], true);
    assert_eq!(ok["replayed"], 10);
    assert_eq!(ok["seq"], 44);
    // Live events keep the filter.
    tabs.churn(4).await;
    let u = a.update().await;
    assert_eq!(u["agent"]["agent_id"], "r1");
    assert_eq!(u["seq"], 46);
    a.expect_quiet().await;
    hub.stop().await;
}

/// A resume the hub cannot serve from history: `ok recovered:false` + a snapshot equal to
/// the hub's view, with no replayed event before it, then live events.
async fn assert_snapshot_resume(hub: &TestHub, a: &mut Client, epoch: &str, seq: u64) {
    a.send(json!({"type": "resume", "ref": 9, "epoch": epoch, "seq": seq}))
        .await;
    let reply = a.recv().await;
    assert_eq!(reply["type"], "ok", "first frame is the reply: {reply}");
    assert_eq!(reply["ref"], 9);
    assert_eq!(reply["recovered"], false, "{reply}");
    let snapshot = &reply["snapshot"];
    let hub_now = hub_view(hub, "").await;
    let (_, body) = hub.get("/api/v1/agents").await;
    assert_eq!(snapshot["epoch"], body["epoch"]);
    assert_eq!(snapshot["seq"], hub_now.seq);
    assert_eq!(View::from_snapshot(snapshot).agents, hub_now.agents);
    a.expect_quiet().await;
}

#[tokio::test]
async fn resume_with_a_wrong_or_future_position_gets_a_snapshot() {
    let hub = TestHub::start().await;
    let (a, snap) = hub.admin("A").await;
    let epoch = snap["snapshot"]["epoch"]
        .as_str()
        .expect("epoch")
        .to_string();
    let mut tabs = Tabs::connect(&hub, 3).await;
    a.close().await;
    tabs.churn(1000).await;

    let mut a = admin_unsubscribed(&hub, "A").await;
    assert_snapshot_resume(&hub, &mut a, "0000000000000000", 3).await;
    let mut b = admin_unsubscribed(&hub, "B").await;
    assert_snapshot_resume(&hub, &mut b, &epoch, 5_000_000).await;
    let mut c = admin_unsubscribed(&hub, "C").await;
    assert_snapshot_resume(&hub, &mut c, &epoch, u64::MAX).await;
    // Subscribed after the snapshot: the next change arrives with the next seq.
    let before = hub_view(&hub, "").await.seq;
    tabs.churn_over(1, 1).await;
    for admin in [&mut a, &mut b, &mut c] {
        let u = admin.update().await;
        assert_eq!(u["seq"], before + 1);
    }
    hub.stop().await;
}

#[tokio::test]
async fn resume_beyond_a_small_history_gets_a_snapshot_and_the_boundary_is_exact() {
    let hub = TestHub::with(Settings {
        history_size: 10,
        ..settings()
    })
    .await;
    let mut tabs = Tabs::connect(&hub, 2).await;
    let (a, snap) = hub.admin("A").await;
    let epoch = snap["snapshot"]["epoch"]
        .as_str()
        .expect("epoch")
        .to_string();
    let start = snap["snapshot"]["seq"].as_u64().expect("seq");
    a.close().await;

    // Exactly history_size missed events: still recoverable.
    tabs.churn(10).await;
    let mut a = admin_unsubscribed(&hub, "A").await;
    let ok = a
        .request(json!({"type": "resume", "epoch": epoch, "seq": start}))
        .await;
    assert_eq!(ok["recovered"], true, "{ok}");
    assert_eq!(ok["replayed"], 10, "{ok}");
    for i in 0..10 {
        assert_eq!(a.update().await["seq"], start + 1 + i);
    }
    a.close().await;

    // One more than the history holds: snapshot.
    let from = start + 10;
    tabs.churn(11).await;
    let mut a = admin_unsubscribed(&hub, "A").await;
    assert_snapshot_resume(&hub, &mut a, &epoch, from).await;
    a.close().await;

    // 1,000 missed events with a history of 10: snapshot, final view identical.
    let from = hub_view(&hub, "").await.seq;
    tabs.churn(1000).await;
    let mut a = admin_unsubscribed(&hub, "A").await;
    assert_snapshot_resume(&hub, &mut a, &epoch, from).await;
    let m = metrics(&hub).await;
    assert_eq!(metric(&m, "presence_hub_history_events"), 10);
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------
// Slow consumer
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_that_stops_reading_is_closed_with_4008_and_others_get_everything() {
    const AGENTS: usize = 20;
    // Many long team ids (from the directory, within its limits: 32 of 120 characters)
    // make every update frame ~4 KiB.
    let teams: Vec<String> = (0..32)
        .map(|i| format!("\"t{i:02}{}\"", "x".repeat(117)))
        .collect();
    let mut toml = String::new();
    for i in 0..AGENTS {
        toml.push_str(&format!(
            "[[agents]]\nid = \"big{i}\"\nname = \"Agent {i}\"\nteams = [{}]\n",
            teams.join(",")
        ));
    }
    let hub = TestHub::with(Settings {
        directory: directory(&toml),
        queue_bytes: 64 * 1024,
        ..settings()
    })
    .await;
    let (mut fast, fast_snap) = hub.admin("fast").await;
    let mut slow = small_buffer_client(&hub, "/ws/admin?admin_id=slow").await;
    let slow_snap = subscribe(&mut slow, json!({})).await;
    assert_eq!(
        slow_snap["snapshot"]["agents"].as_array().map(Vec::len),
        Some(AGENTS)
    );
    let mut fast_view = View::from_snapshot(&fast_snap["snapshot"]);
    let mut tel = hub.telephony().await;

    // The slow admin reads nothing from here on. Events go out one at a time; the fast
    // admin reads each one before the next is made.
    let mut dropped_at = None;
    let mut extra_after_drop = 0;
    for i in 0..20_000usize {
        let agent = format!("big{}", i % AGENTS);
        let round = i / AGENTS;
        let ev = if round.is_multiple_of(2) {
            event("outbound_started", &format!("c{i}"), &agent)
        } else {
            event("call_ended", &format!("c{}", i - AGENTS), &agent)
        };
        tel_ok(&mut tel, ev).await;
        let u = fast.update().await;
        assert_eq!(u["agent"]["agent_id"], agent.as_str());
        fast_view.apply(&u, true);
        if dropped_at.is_some() {
            extra_after_drop += 1;
            if extra_after_drop == 50 {
                break;
            }
        } else if i % 25 == 24 {
            let m = metrics(&hub).await;
            if metric(&m, "presence_hub_admin_slow_dropped_total") > 0 {
                dropped_at = Some(fast_view.seq);
            }
        }
    }
    let dropped_at = dropped_at.expect("the slow admin was dropped");

    // The slow admin resumes reading: a prefix of the events, in order, then 4008.
    let (frames, closed) = slow.drain_until_closed().await;
    assert_eq!(closed, Closed::Code(4008), "after {} frames", frames.len());
    let mut slow_view = View::from_snapshot(&slow_snap["snapshot"]);
    for f in &frames {
        slow_view.apply(f, true);
    }
    assert!(
        slow_view.seq < dropped_at,
        "the slow admin got {} of {dropped_at} events",
        slow_view.seq
    );

    // The fast admin got every event, in order, and is still open.
    let hub_now = hub_view(&hub, "").await;
    assert_eq!(fast_view.seq, hub_now.seq);
    assert_eq!(fast_view.agents, hub_now.agents);
    fast.expect_quiet().await;

    let m = metrics(&hub).await;
    assert_eq!(metric(&m, "presence_hub_admin_slow_dropped_total"), 1);
    assert_eq!(
        metric(
            &m,
            r#"presence_hub_slow_consumers_dropped_total{role="admin"}"#
        ),
        1
    );
    assert_eq!(metric(&m, "presence_hub_admin_subscribers"), 1);
    // The slow socket's task ends right after its close frame went out.
    eventually_metric(&hub, r#"presence_hub_connections{role="admin"}"#, 1).await;
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------
// Everything at once
// ---------------------------------------------------------------------------------------

/// Where each follower stops: the `seq` of the last event its filter matches, by team
/// (`""` = no filter), sent once the load is over.
type Targets = Option<BTreeMap<String, u64>>;

/// Reads `admin`'s updates into its view until its target `seq` is reached.
async fn follow(
    mut admin: Client,
    mut view: View,
    team: Option<String>,
    mut targets: tokio::sync::watch::Receiver<Targets>,
) -> (Client, View) {
    let key = team.clone().unwrap_or_default();
    loop {
        if let Some(t) = targets.borrow_and_update().as_ref() {
            if view.seq >= t[&key] {
                return (admin, view);
            }
        }
        tokio::select! {
            u = admin.recv() => view.apply(&u, team.is_none()),
            r = targets.changed() => r.expect("targets sender alive"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_agents_admins_and_telephony_converge_to_the_hub_view() {
    const AGENTS: usize = 300;
    const WORKERS: usize = 10;
    const OPS: usize = 40;
    const TEAMS: usize = 5;
    let mut toml = String::new();
    for i in 0..AGENTS {
        toml.push_str(&format!(
            "[[agents]]\nid = \"ag{i:03}\"\nname = \"Agent {i}\"\nteams = [\"t{}\"]\n",
            i % TEAMS
        ));
    }
    let hub = TestHub::with(Settings {
        directory: directory(&toml),
        ..settings()
    })
    .await;
    let (target_tx, target_rx) = tokio::sync::watch::channel::<Targets>(None);

    // 10 admins before the load: 8 see everything, 2 follow one team.
    let mut followers = Vec::new();
    for i in 0..10 {
        let mut c = admin_unsubscribed(&hub, &format!("early{i}")).await;
        let team = match i {
            8 => Some("t1".to_string()),
            9 => Some("t3".to_string()),
            _ => None,
        };
        let filter = team.as_ref().map_or(json!({}), |t| json!({"teams": [t]}));
        let snap = subscribe(&mut c, filter).await;
        let view = View::from_snapshot(&snap["snapshot"]);
        let rx = target_rx.clone();
        let t = team.clone();
        followers.push((team, tokio::spawn(follow(c, view, t, rx))));
    }

    // The load: workers own 30 agents each (socket per agent) and a telephony socket, and
    // also poke agents of other workers through telephony and an admin socket.
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let hub_addr = hub.addr;
        workers.push(tokio::spawn(async move {
            let url = |p: &str| format!("ws://{hub_addr}{p}");
            let mut rng = StdRng::seed_from_u64(w as u64 + 1);
            let mine: Vec<usize> = (0..AGENTS).filter(|i| i % WORKERS == w).collect();
            let mut tabs = Vec::new();
            for &i in &mine {
                let mut tab = Client::connect(&url(&format!("/ws/agent?agent_id=ag{i:03}"))).await;
                assert_eq!(tab.recv().await["type"], "hello");
                tabs.push(tab);
            }
            let mut tel = Client::connect(&url(&format!("/ws/telephony?adapter=w{w}"))).await;
            assert_eq!(tel.recv().await["type"], "hello");
            let mut boss = Client::connect(&url(&format!("/ws/admin?admin_id=w{w}"))).await;
            assert_eq!(boss.recv().await["type"], "hello");
            let manual = ["offline", "available", "busy", "on_break"];
            let not_bad = |r: &Value| {
                assert!(
                    r["type"] == "ok" || (r["type"] == "error" && r["code"] != "bad_message"),
                    "{r}"
                );
            };
            for op in 0..OPS {
                let k = rng.random_range(0..mine.len());
                let agent = format!("ag{:03}", mine[k]);
                let call = format!("w{w}-{op}");
                match rng.random_range(0..10) {
                    0..=3 => {
                        let status = manual[rng.random_range(0..4)];
                        let r = tabs[k]
                            .request(json!({"type": "set_status", "status": status}))
                            .await;
                        not_bad(&r);
                    }
                    4..=6 => {
                        // Make sure it can ring, offer, then one of the four outcomes.
                        let r = tabs[k]
                            .request(json!({"type": "set_status", "status": "available"}))
                            .await;
                        not_bad(&r);
                        let r = tel.request(event("call_offered", &call, &agent)).await;
                        not_bad(&r);
                        if r["accepted"] == true {
                            match rng.random_range(0..4) {
                                0 => {
                                    let r = tel.request(event("call_answered", &call, &agent)).await;
                                    not_bad(&r);
                                }
                                1 => {
                                    let r = tabs[k]
                                        .request(json!({"type": "accept_call", "call_id": call}))
                                        .await;
                                    not_bad(&r);
                                }
                                2 => {
                                    let r = tabs[k]
                                        .request(json!({"type": "decline_call", "call_id": call}))
                                        .await;
                                    not_bad(&r);
                                }
                                _ => {
                                    let r =
                                        tel.request(event("call_cancelled", &call, &agent)).await;
                                    not_bad(&r);
                                }
                            }
                        }
                        let r = tel.request(event("call_ended", &call, &agent)).await;
                        not_bad(&r);
                    }
                    7 => {
                        let r = tel.request(event("outbound_started", &call, &agent)).await;
                        not_bad(&r);
                        let r = tel.request(event("call_ended", &call, &agent)).await;
                        not_bad(&r);
                    }
                    8 => {
                        // Someone else's agent, from an admin socket.
                        let other = format!("ag{:03}", rng.random_range(0..AGENTS));
                        let status = manual[rng.random_range(0..4)];
                        let r = boss
                            .request(json!({"type": "set_agent_status", "agent_id": other, "status": status}))
                            .await;
                        not_bad(&r);
                    }
                    _ => {
                        // Offer to anyone; whoever it reached, end it.
                        let other = format!("ag{:03}", rng.random_range(0..AGENTS));
                        let r = tel.request(event("call_offered", &call, &other)).await;
                        not_bad(&r);
                        let r = tel.request(event("call_ended", &call, &other)).await;
                        not_bad(&r);
                    }
                }
            }
            (tabs, tel, boss)
        }));
    }

    // 10 more admins subscribe while the load runs.
    for i in 0..10 {
        let mut c = admin_unsubscribed(&hub, &format!("late{i}")).await;
        let snap = subscribe(&mut c, json!({})).await;
        let view = View::from_snapshot(&snap["snapshot"]);
        let rx = target_rx.clone();
        followers.push((None, tokio::spawn(follow(c, view, None, rx))));
        tokio::task::yield_now().await;
    }

    let mut sockets = Vec::new();
    for w in workers {
        sockets.push(w.await.expect("worker"));
    }
    let hub_now = hub_view(&hub, "").await;
    assert!(hub_now.seq > AGENTS as u64, "the load produced events");
    for a in hub_now.agents.values() {
        assert!(
            ["offline", "available", "busy", "on_break"]
                .contains(&a["status"].as_str().unwrap_or("")),
            "every call ended: {a}"
        );
        assert_eq!(a["connections"], 1, "{a}");
    }
    // One last change per followed team, so team followers know where to stop.
    let mut marker = admin_unsubscribed(&hub, "marker").await;
    let mut targets = BTreeMap::new();
    for team in ["t1", "t3"] {
        let before = hub_view(&hub, "").await.seq;
        let r = marker
            .request(json!({"type": "set_agent_status", "agent_id": format!("ag00{}", &team[1..]), "status": "on_break", "note": "marker"}))
            .await;
        assert_eq!(r["type"], "ok", "{r}");
        let after = hub_view(&hub, "").await.seq;
        assert_eq!(after, before + 1, "the marker is one change");
        targets.insert(team.to_string(), after);
    }
    let hub_now = hub_view(&hub, "").await;
    targets.insert(String::new(), hub_now.seq);
    target_tx.send(Some(targets)).expect("followers alive");
    assert_eq!(followers.len(), 20);
    for (team, f) in followers {
        let (mut admin, view) = f.await.expect("follower");
        assert_eq!(view.stale_updates, 0, "no update older than the snapshot");
        match team {
            None => {
                assert_eq!(view.seq, hub_now.seq);
                assert_eq!(view.agents, hub_now.agents);
            }
            Some(t) => {
                let team_view = hub_view(&hub, &format!("?team={t}")).await;
                assert_eq!(team_view.agents.len(), AGENTS / TEAMS);
                assert_eq!(view.agents, team_view.agents);
            }
        }
        admin.expect_quiet().await;
    }
    let m = metrics(&hub).await;
    assert_eq!(metric(&m, "presence_hub_admin_slow_dropped_total"), 0);
    assert_eq!(
        metric(&m, r#"presence_hub_connections{role="agent"}"#),
        AGENTS as u64
    );
    drop(sockets);
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------
// Latency
// ---------------------------------------------------------------------------------------

/// Back-to-back updates leave at once. Under paused time the runtime moves the clock to the
/// next timer whenever it sits idle waiting on the network; a frame held back by Nagle's
/// algorithm until the peer's delayed ACK (~40 ms, no TCP_NODELAY on the hub's sockets)
/// makes the clock jump, so the clock must not move here at all.
#[tokio::test(start_paused = true)]
async fn back_to_back_updates_are_not_held_back() {
    let hub = TestHub::start().await;
    let (mut admin, _) = hub.admin("boss").await;
    let (mut tab, _) = hub.agent("n1").await;
    let mut tel = hub.telephony().await;
    let start = tokio::time::Instant::now();
    assert_eq!(admin.update().await["agent"]["reason"], "login");
    for i in 0..20 {
        tel_ok(&mut tel, event("outbound_started", &format!("c{i}"), "n1")).await;
        tel_ok(&mut tel, event("call_ended", &format!("c{i}"), "n1")).await;
        assert_eq!(admin.update().await["agent"]["status"], "on_call");
        assert_eq!(tab.update().await["agent"]["status"], "on_call");
        assert_eq!(admin.update().await["agent"]["status"], "offline");
        assert_eq!(tab.update().await["agent"]["status"], "offline");
    }
    assert_eq!(start.elapsed(), std::time::Duration::ZERO);
    hub.stop().await;
}

/// Issue 12, item 3: `resume` on a socket keeps the filter of its `subscribe` unless the
/// resume names one (`teams`/`agents`), which then replaces it, live updates included.
#[tokio::test]
async fn resume_keeps_the_sockets_filter_unless_it_names_one() {
    let hub = TestHub::start().await;
    let tab = |id: &'static str, team: &'static str| {
        let url = hub.ws_url(&format!("/ws/agent?agent_id={id}&teams={team}"));
        async move {
            let mut c = Client::connect(&url).await;
            assert_eq!(c.recv().await["type"], "hello");
            c
        }
    };
    let s1 = tab("s1", "sales").await;
    let o1 = tab("o1", "other").await;
    let mut a = admin_unsubscribed(&hub, "A").await;
    let snap = a
        .request(json!({"type": "subscribe", "teams": ["sales"]}))
        .await;
    let epoch = snap["snapshot"]["epoch"]
        .as_str()
        .expect("epoch")
        .to_string();
    let seq = snap["snapshot"]["seq"].as_u64().expect("seq");
    let mut tabs = [s1, o1];
    for (k, status) in [(0, "available"), (1, "available"), (0, "busy")] {
        let ok = tabs[k]
            .request(json!({"type": "set_status", "status": status}))
            .await;
        assert_eq!(ok["type"], "ok", "{ok}");
    }
    for _ in 0..2 {
        assert_eq!(a.update().await["agent"]["agent_id"], "s1");
    }
    // No filter in the resume: the subscription's (sales) still holds.
    a.send(json!({"type": "resume", "ref": "r1", "epoch": epoch, "seq": seq}))
        .await;
    let mut replayed = Vec::new();
    let ok = loop {
        let m = a.recv().await;
        if m["type"] == "ok" {
            break m;
        }
        replayed.push(m["agent"]["agent_id"].clone());
    };
    assert_eq!(replayed, [json!("s1"), json!("s1")], "only sales agents");
    assert_eq!(
        (ok["ref"].clone(), ok["replayed"].clone()),
        (json!("r1"), json!(2))
    );
    // A resume naming a filter replaces it, for the replay and what follows.
    a.send(json!({"type": "resume", "ref": "r2", "epoch": epoch, "seq": seq, "agents": ["o1"]}))
        .await;
    let u = a.recv().await;
    assert_eq!(u["agent"]["agent_id"], "o1", "{u}");
    let ok = a.recv().await;
    assert_eq!(
        (ok["ref"].clone(), ok["replayed"].clone()),
        (json!("r2"), json!(1))
    );
    for (k, status) in [(0, "on_break"), (1, "busy")] {
        let ok = tabs[k]
            .request(json!({"type": "set_status", "status": status}))
            .await;
        assert_eq!(ok["type"], "ok", "{ok}");
    }
    assert_eq!(a.update().await["agent"]["agent_id"], "o1");
    a.expect_quiet().await;
    hub.stop().await;
}

/// Issue 13 (the shared update feed): an admin socket writes its own replies in the order
/// things happened against the updates it reads from the feed. Its own change's update
/// comes before the `ok` of its `set_agent_status`; every update published before its
/// `unsubscribe` (more than two of the feed's 64-update chunks) comes, in order and
/// complete, before that `ok` (whether the socket read them as they came or they were
/// handed over with the `unsubscribe`: `fanout::feed` tests the latter), and nothing after.
#[tokio::test]
async fn an_admins_replies_keep_their_place_among_the_updates() {
    let hub = TestHub::start().await;
    let (mut tab, _) = hub.agent("n1").await;
    let mut a = admin_unsubscribed(&hub, "boss").await;
    let seq = subscribe(&mut a, json!({})).await["snapshot"]["seq"]
        .as_u64()
        .expect("seq");
    a.send(json!({"type": "set_agent_status", "ref": "s1", "agent_id": "n1", "status": "busy"}))
        .await;
    let u = a.recv().await;
    assert_eq!(
        (u["type"].as_str(), u["seq"].as_u64()),
        (Some("agent"), Some(seq + 1)),
        "{u}"
    );
    let ok = a.recv().await;
    assert_eq!(
        (ok["type"].as_str(), ok["ref"].as_str()),
        (Some("ok"), Some("s1")),
        "{ok}"
    );
    assert_eq!(tab.update().await["agent"]["status"], "busy");

    const CHANGES: u64 = 150;
    for i in 0..CHANGES {
        let status = if i % 2 == 0 { "available" } else { "busy" };
        let ok = tab
            .request(json!({"type": "set_status", "status": status}))
            .await;
        assert_eq!(ok["type"], "ok", "{ok}");
    }
    a.send(json!({"type": "unsubscribe", "ref": "u1"})).await;
    for k in 0..CHANGES {
        let u = a.recv().await;
        assert_eq!(u["type"], "agent", "update {k} before the ok: {u}");
        assert_eq!(u["seq"].as_u64(), Some(seq + 2 + k), "{u}");
    }
    let ok = a.recv().await;
    assert_eq!(
        (ok["type"].as_str(), ok["ref"].as_str()),
        (Some("ok"), Some("u1")),
        "{ok}"
    );
    let ok = tab
        .request(json!({"type": "set_status", "status": "on_break"}))
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    a.expect_quiet().await;
    hub.stop().await;
}
