//! Reliability table: "10k agent connects/disconnects churn: 0 leaked tasks, sockets,
//! memory back to baseline", counted with the hub's own gauges.
//!
//! The hub runs in a process of its own (the test binary running only this test, started
//! by its `_alone` twin): its open file descriptors and resident memory are the
//! process's, as no other test runs beside it. The clock is paused, so the
//! disconnect grace (15 s) of the agents costs no real time.
//!
//! What stays after the churn, by design: one actor per agent id of the pool (agents are
//! state, not connections; `presence_hub_agent_actors` counts them and `presence_hub_tasks`
//! is that many plus the hub's few background tasks once every socket is gone), and the admin `resume` history of
//! the last `--history-size` updates (every login and logout is an update): the test runs
//! with a history of 1,000, filled during the warm-up, as the loadgen `churn` scenario does.

use crate::common::*;
use futures::future::join_all;
use std::time::Duration;
use tokio::time::Instant;

const POOL: usize = 50;
const CHURN: usize = 10_000;
/// Sockets opened and closed at the same time.
const PARALLEL: usize = 10;
/// Tasks besides actors and sockets: the history pruner, the shutdown watcher, the reaper
/// of stopped actors, the closer of open sockets at shutdown (`hub::sockets`) and the
/// HTTP connection of the metrics request that counts them (every task is tracked).
const OTHER_TASKS: usize = 5;

fn rss_kib() -> u64 {
    status_kib("VmRSS")
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// One login + logout cycle: connect a tab of `id`, read its `hello`, close.
async fn cycle(hub: &TestHub, id: String) {
    let (tab, hello) = hub.agent(&id).await;
    assert_eq!(hello["agent"]["agent_id"], id.as_str());
    tab.close().await;
}

async fn churn(hub: &TestHub, n: usize) {
    for start in (0..n).step_by(PARALLEL) {
        join_all(
            (start..(start + PARALLEL).min(n)).map(|i| cycle(hub, format!("churn-{}", i % POOL))),
        )
        .await;
    }
}

/// Waits until every socket is gone (the hub's own gauges), then lets every agent's
/// disconnect grace run out.
async fn settle(hub: &TestHub) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let m = metrics(hub).await;
        if metric(&m, r#"presence_hub_connections{role="agent"}"#) == 0
            && metric(&m, "presence_hub_tasks") == (POOL + OTHER_TASKS) as u64
        {
            break;
        }
        assert!(Instant::now() < deadline, "sockets never closed:\n{m}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(presence_hub::Settings::default().disconnect_grace * 2).await;
    metrics(hub).await
}

/// Runs the test below alone in a child process of this test binary: it reads the
/// process's own descriptors and memory, which other tests running beside it would change.
#[test]
fn agent_churn_leaves_no_tasks_sockets_or_memory_behind_alone() {
    run_alone(
        "churn::agent_churn_leaves_no_tasks_sockets_or_memory_behind",
        &[],
    );
}

#[tokio::test(start_paused = true)]
#[ignore = "reads the process's own descriptors and memory: run alone by its `_alone` twin"]
async fn agent_churn_leaves_no_tasks_sockets_or_memory_behind() {
    assert_alone();
    let hub = TestHub::with(presence_hub::Settings {
        history_size: 1000,
        ..settings()
    })
    .await;
    // Warm-up: every agent of the pool exists, allocator caches are primed.
    churn(&hub, 500).await;
    let before = settle(&hub).await;
    let (fds0, rss0) = (open_fds(), rss_kib());
    let tasks0 = metric(&before, "presence_hub_tasks");
    assert_eq!(
        tasks0,
        (POOL + OTHER_TASKS) as u64,
        "one actor per agent, no socket task"
    );

    let started = std::time::Instant::now();
    churn(&hub, CHURN).await;
    let churn_took = started.elapsed();
    let after = settle(&hub).await;
    let (fds1, rss1) = (open_fds(), rss_kib());
    eprintln!(
        "{CHURN} connects/disconnects in {churn_took:?}; fds {fds0} -> {fds1}; RSS {rss0} -> {rss1} KiB"
    );

    for (sample, value) in [
        ("presence_hub_tasks", tasks0),
        ("presence_hub_agent_actors", POOL as u64),
        (r#"presence_hub_connections{role="agent"}"#, 0),
        (r#"presence_hub_connections{role="admin"}"#, 0),
        ("presence_hub_tcp_connections", 1), // this very request
        (
            r#"presence_hub_connections_opened_total{role="agent"}"#,
            (500 + CHURN) as u64,
        ),
        (r#"presence_hub_agents{status="offline"}"#, POOL as u64),
    ] {
        assert_eq!(metric(&after, sample), value, "{sample}");
    }
    assert_eq!(fds1, fds0, "no socket left open");
    assert!(
        rss1 <= rss0 + 2048,
        "RSS grew by {} KiB over {CHURN} cycles",
        rss1 - rss0
    );
    // Every agent of the pool went through its grace and is logged out.
    let (_, list) = hub.get("/api/v1/agents").await;
    let agents = list["agents"].as_array().expect("agents");
    assert_eq!(agents.len(), POOL);
    assert!(
        agents
            .iter()
            .all(|a| a["connections"] == 0 && a["status"] == "offline"),
        "{list}"
    );
    hub.stop().await;
}
