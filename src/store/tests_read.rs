//! Tests of reading: history bounds and pages, the status-time report against
//! hand-computed intervals, pruning.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use super::tests::{id, memory, moved};
use super::*;
use crate::model::{Reason, Status};
use Status::*;

/// Records `steps` (at, new status) for a fresh agent; returns its last state.
async fn walk(store: &Store, agent: &str, steps: &[(Millis, Status)]) -> AgentState {
    let mut s = AgentState::new(id(agent), 0);
    for (at, status) in steps {
        let next = moved(&s, *status, *at, Reason::Manual);
        store.record_change(&s, &next, *at).await.expect("commit");
        s = next;
    }
    s
}

fn ms(pairs: &[(Status, u64)]) -> BTreeMap<Status, u64> {
    let mut m: BTreeMap<Status, u64> = Status::ALL.iter().map(|s| (*s, 0)).collect();
    for (s, v) in pairs {
        m.insert(*s, *v);
    }
    m
}

#[tokio::test]
async fn history_is_bounded_by_range_and_limit_and_pages_by_cursor() {
    let store = memory();
    let steps: Vec<(Millis, Status)> = (1..=10u64)
        .map(|i| (i * 100, if i.is_multiple_of(2) { Busy } else { Available }))
        .collect();
    walk(&store, "a1", &steps).await;
    walk(&store, "b1", &[(350, OnBreak)]).await;
    let ats = |rows: &[HistoryRow]| rows.iter().map(|r| r.at).collect::<Vec<_>>();
    let all = store
        .history(&id("a1"), 300, 700, None, 100)
        .expect("history");
    assert_eq!(
        ats(&all),
        vec![300, 400, 500, 600],
        "from inclusive, to exclusive"
    );
    let page1 = store.history(&id("a1"), 300, 700, None, 2).expect("page 1");
    assert_eq!(ats(&page1), vec![300, 400]);
    let page2 = store
        .history(&id("a1"), 300, 700, Some(page1[1].cursor()), 2)
        .expect("page 2");
    assert_eq!(ats(&page2), vec![500, 600]);
    let page3 = store
        .history(&id("a1"), 300, 700, Some(page2[1].cursor()), 2)
        .expect("page 3");
    assert!(page3.is_empty());
    assert_eq!(page2[0].from, Busy);
    assert_eq!(page2[0].to, Available);
    assert_eq!(page2[0].reason, Some(Reason::Manual));
    assert!(store
        .history(&id("nobody"), 0, u64::MAX, None, 10)
        .expect("history")
        .is_empty());
}

/// Range [1500, 5000), now 4500: every agent's total is 3000 ms, less the part of the range
/// before it was created (its first stored state).
async fn report_fixture() -> Store {
    let store = memory();
    // a1: available 1000, ringing 2000, on_call 2500, wrap_up 4000 (open at now).
    walk(
        &store,
        "a1",
        &[
            (1000, Available),
            (2000, Ringing),
            (2500, OnCall),
            (4000, WrapUp),
        ],
    )
    .await;
    // b1: on_break since 500, nothing in the range.
    walk(&store, "b1", &[(500, OnBreak)]).await;
    // c1: created (first stored) at 3000, busy then: it did not exist before.
    walk(&store, "c1", &[(3000, Busy)]).await;
    // d1: created after the range: not listed.
    walk(&store, "d1", &[(6000, Available)]).await;
    // e1: stored state, no history at all.
    let e0 = AgentState::new(id("e1"), 0);
    let mut e1 = e0.clone();
    e1.connections = 1;
    e1.version = 1;
    store.record_change(&e0, &e1, 100).await.expect("commit");
    store
}

fn query(agents: Option<&[&str]>, agent: Option<&str>) -> ReportQuery {
    ReportQuery {
        from: 1500,
        to: 5000,
        now: 4500,
        agents: agents.map(|a| a.iter().map(|s| id(s)).collect::<HashSet<_>>()),
        agent: agent.map(id),
    }
}

#[tokio::test]
async fn status_time_report_matches_hand_computed_intervals() {
    let store = report_fixture().await;
    let report = store
        .status_time_report(&query(None, None))
        .expect("report");
    let by_agent: Vec<(&str, &BTreeMap<Status, u64>)> = report
        .iter()
        .map(|r| (r.agent_id.as_str(), &r.ms))
        .collect();
    assert_eq!(
        by_agent,
        vec![
            (
                "a1",
                &ms(&[
                    (Available, 500),
                    (Ringing, 500),
                    (OnCall, 1500),
                    (WrapUp, 500)
                ])
            ),
            ("b1", &ms(&[(OnBreak, 3000)])),
            ("c1", &ms(&[(Busy, 1500)])),
            ("e1", &ms(&[(Offline, 3000)])),
        ]
    );
    let totals: Vec<u64> = report.iter().map(AgentStatusTime::total_ms).collect();
    assert_eq!(totals, vec![3000, 3000, 1500, 3000]);
    let csv = to_csv(&report);
    assert_eq!(csv.lines().count(), 5);
    assert!(csv.contains("\r\na1,0.500,0.500,1.500,0.500,0.000,0.000,0.000,3.000\r\n"));
}

#[tokio::test]
async fn status_time_report_filters_by_team_and_agent() {
    let store = report_fixture().await;
    let team = store
        .status_time_report(&query(Some(&["a1", "c1", "zz"]), None))
        .expect("report");
    let ids: Vec<&str> = team.iter().map(|r| r.agent_id.as_str()).collect();
    assert_eq!(ids, vec!["a1", "c1"]);
    let one = store
        .status_time_report(&query(None, Some("b1")))
        .expect("report");
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].ms, ms(&[(OnBreak, 3000)]));
    let none = store
        .status_time_report(&query(Some(&["a1"]), Some("b1")))
        .expect("report");
    assert!(none.is_empty(), "both filters apply");
    // A range entirely in the future of `now`: zero everywhere.
    let mut q = query(None, Some("a1"));
    q.from = 10_000;
    q.to = 20_000;
    let future = store.status_time_report(&q).expect("report");
    assert_eq!(future[0].total_ms(), 0);
}

#[tokio::test]
async fn prune_keeps_each_agents_last_row_in_steps() {
    const HOUR: Millis = 3_600_000;
    const DAY: Millis = 24 * HOUR;
    let seed = Directory::default();
    let mut options = StoreOptions::new(&seed, 0);
    options.retention = Duration::from_secs(24 * 3600);
    let (store, _) = Store::open(Path::new(":memory:"), options).expect("open");
    let now = 10 * DAY;
    walk(
        &store,
        "a1",
        &[(DAY, Available), (2 * DAY, Busy), (now - HOUR, Available)],
    )
    .await;
    walk(&store, "b1", &[(DAY, Available), (2 * DAY, OnBreak)]).await;
    // Enough old rows for several prune steps.
    let mut s = AgentState::new(id("z1"), 0);
    for i in 0..(2 * writer::PRUNE_CHUNK as u64 + 10) {
        let status = if i.is_multiple_of(2) { Available } else { Busy };
        let next = moved(&s, status, DAY + i, Reason::Manual);
        drop(store.record_change(&s, &next, DAY + i));
        s = next;
    }
    store.prune(now).await.expect("prune");
    let count = |agent: &str| {
        store
            .history(&id(agent), 0, u64::MAX, None, MAX_HISTORY_LIMIT)
            .expect("history")
            .len()
    };
    assert_eq!(count("a1"), 1, "old rows with a later row go");
    assert_eq!(count("b1"), 1, "an agent's last row stays, however old");
    assert_eq!(
        count("z1"),
        1,
        "every prune step ran before the ticket resolved"
    );
    // b1 is still on break in a range after its pruned rows.
    let mut q = query(None, Some("b1"));
    q.from = 5 * DAY;
    q.to = 6 * DAY;
    q.now = now;
    let report = store.status_time_report(&q).expect("report");
    assert_eq!(report[0].ms, ms(&[(OnBreak, DAY)]));
    store.close().expect("close");
}

#[tokio::test]
async fn prune_drops_event_ids_past_their_ttl() {
    let dir = super::tests::TempDir::new("prune-events");
    let path = dir.file("hub.db");
    let (store, _) = super::tests::open_at(&path, Durability::Commit);
    let reply = StoredReply {
        error: None,
        fields: Arc::from(""),
    };
    let hour: Millis = 3_600_000;
    let now = 100 * hour;
    store
        .record_event_id("old", &reply, now - 5 * hour)
        .await
        .expect("commit");
    store
        .record_event_id("new", &reply, now - hour)
        .await
        .expect("commit");
    store.prune(now).await.expect("prune");
    store.close().expect("close");
    let (_store, recovered) = super::tests::open_at(&path, Durability::Commit);
    let ids: Vec<&str> = recovered.event_ids.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(ids, vec!["new"]);
}
