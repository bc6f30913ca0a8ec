//! Tests of opening, refusing, writing and recovering (files under the system temp dir).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::*;
use crate::model::{CallDirection, CallId, CallInfo, ManualStatus, Reason, Status};
use crate::protocol::ErrorCode;

/// A fresh directory under the system temp dir, removed (permissions restored) on drop.
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn new(name: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "presence-hub-store-{name}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    pub(super) fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o755));
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) fn id(s: &str) -> AgentId {
    AgentId::parse(s).expect("agent id")
}

pub(super) fn open_at(path: &Path, durability: Durability) -> (Store, Recovered) {
    let seed = Directory::default();
    let mut options = StoreOptions::new(&seed, 1_000);
    options.durability = durability;
    Store::open(path, options).expect("open store")
}

pub(super) fn memory() -> Store {
    open_at(Path::new(":memory:"), Durability::Commit).0
}

/// The state after a manual/system change to `status` (manual_status follows a manual one).
pub(super) fn moved(s: &AgentState, status: Status, at: Millis, reason: Reason) -> AgentState {
    let mut next = s.clone();
    next.status = status;
    if let Some(m) = status.as_manual() {
        next.manual_status = m;
    }
    next.since = at;
    next.reason = Some(reason);
    next.version += 1;
    next
}

fn user_version(path: &Path) -> (u32, i64) {
    let conn = rusqlite::Connection::open(path).expect("raw open");
    let v: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("user_version");
    let n: i64 = conn
        .query_row("SELECT count(*) FROM schema_version", [], |r| r.get(0))
        .expect("schema_version");
    (v, n)
}

#[test]
fn migrations_apply_on_a_fresh_file_and_reopen_applies_none() {
    let dir = TempDir::new("migrate");
    let path = dir.file("hub.db");
    let (store, recovered) = open_at(&path, Durability::Commit);
    assert!(recovered.agents.is_empty() && recovered.event_ids.is_empty());
    store.close().expect("close");
    let applied = i64::from(open::latest_version());
    assert_eq!(user_version(&path), (open::latest_version(), applied));
    let (store, _) = open_at(&path, Durability::Async);
    store.close().expect("close");
    assert_eq!(
        user_version(&path),
        (open::latest_version(), applied),
        "idempotent"
    );
    let conn = rusqlite::Connection::open(&path).expect("raw open");
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn record_then_reopen_restores_the_last_state_and_session() {
    let dir = TempDir::new("recover");
    let path = dir.file("hub.db");
    let (store, _) = open_at(&path, Durability::Commit);
    let a0 = AgentState::new(id("a1"), 100);
    let mut a1 = moved(&a0, Status::Available, 200, Reason::Manual);
    a1.session = Session::Connected;
    a1.connections = 2;
    let mut a2 = moved(&a1, Status::Ringing, 300, Reason::CallOffered);
    a2.call = Some(Box::new(CallInfo {
        call_id: CallId::parse("c1").expect("call id"),
        direction: CallDirection::Inbound,
        ring_group: Some("sales".into()),
        from: Some("+100".into()),
        to: None,
        offered_at: Some(300),
        answered_at: None,
    }));
    a2.ring_expires_at = Some(30_300);
    a2.session = Session::Grace { until: 15_300 };
    let b0 = AgentState::new(id("b1"), 100);
    let mut b1 = moved(&b0, Status::OnBreak, 250, Reason::Admin);
    b1.note = Some("lunch".into());
    let tickets = [
        store.record_change(&a0, &a1, 200),
        store.record_change(&b0, &b1, 250),
        store.record_change(&a1, &a2, 300),
    ];
    for t in tickets {
        t.await.expect("committed");
    }
    drop(store); // like a clean stop
    let (store, recovered) = open_at(&path, Durability::Commit);
    assert_eq!(recovered.agents.len(), 2);
    let a = &recovered.agents[0];
    assert_eq!(a.state, a2);
    assert_eq!(a.session, Session::Grace { until: 15_300 });
    assert_eq!(recovered.agents[1].state, b1);
    assert_eq!(recovered.agents[1].session, Session::LoggedOut);
    let rows = store
        .history(&id("a1"), 0, u64::MAX, None, 10)
        .expect("history");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].call_id.as_ref().map(|c| c.as_str()), Some("c1"));
    assert_eq!(rows[1].version, a2.version);
}

#[tokio::test]
async fn group_commit_completes_every_ticket_from_many_tasks() {
    let store = Arc::new(memory());
    let mut tasks = Vec::new();
    for agent in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = AgentState::new(id(&format!("g{agent}")), 0);
            let mut tickets = Vec::new();
            for i in 0..500u64 {
                let status = if i.is_multiple_of(2) {
                    Status::Available
                } else {
                    Status::Busy
                };
                let next = moved(&s, status, i + 1, Reason::Manual);
                tickets.push(store.record_change(&s, &next, i + 1));
                s = next;
            }
            for t in tickets {
                t.await.expect("committed");
            }
            s
        }));
    }
    let mut last = Vec::new();
    for t in tasks {
        last.push(t.await.expect("task"));
    }
    for s in &last {
        let rows = store
            .history(&s.agent_id, 0, u64::MAX, None, MAX_HISTORY_LIMIT)
            .expect("history");
        assert_eq!(rows.len(), 500, "one row per change, none lost");
        assert!(
            rows.windows(2).all(|w| w[0].version < w[1].version),
            "in order"
        );
    }
    store.flush().await.expect("flush");
    let stats = store.stats();
    assert_eq!((stats.queued, stats.failed), (0, 0));
    assert_eq!(stats.items, 8 * 500 + 1, "every change and the flush");
    assert!(stats.commits < stats.items / 4, "grouped: {stats:?}");
}

#[tokio::test]
async fn async_mode_acknowledges_at_once_and_flush_commits() {
    let dir = TempDir::new("async");
    let path = dir.file("hub.db");
    let (store, _) = open_at(&path, Durability::Async);
    let a0 = AgentState::new(id("a1"), 0);
    let a1 = moved(&a0, Status::Available, 10, Reason::Manual);
    let ticket = store.record_change(&a0, &a1, 10);
    assert!(ticket.is_immediate());
    ticket.await.expect("acknowledged");
    let flush = store.flush();
    assert!(!flush.is_immediate());
    flush.await.expect("flushed");
    assert_eq!(
        store
            .history(&id("a1"), 0, 100, None, 10)
            .expect("history")
            .len(),
        1
    );
    // Committed within the batch window without a flush, too.
    let a2 = moved(&a1, Status::Busy, 20, Reason::Manual);
    drop(store.record_change(&a1, &a2, 20));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        store
            .history(&id("a1"), 0, 100, None, 10)
            .expect("history")
            .len(),
        2
    );
}

#[tokio::test]
async fn history_rows_only_for_status_or_manual_changes() {
    let store = memory();
    let s0 = AgentState::new(id("a1"), 0);
    let mut s1 = s0.clone();
    s1.connections = 1;
    s1.session = Session::Connected;
    s1.version += 1;
    store.record_change(&s0, &s1, 5).await.expect("commit");
    let mut s2 = s1.clone();
    s2.status = Status::OnCall;
    s2.version += 1;
    let mut s3 = s2.clone();
    s3.manual_status = ManualStatus::OnBreak; // row 4: manual change while on a call
    s3.version += 1;
    store.record_change(&s1, &s2, 6).await.expect("commit");
    store.record_change(&s2, &s3, 7).await.expect("commit");
    let rows = store.history(&id("a1"), 0, 100, None, 10).expect("history");
    assert_eq!(rows.len(), 2, "the connections-only change has no row");
    assert_eq!((rows[1].from, rows[1].to), (Status::OnCall, Status::OnCall));
    assert_eq!(
        (rows[1].from_manual, rows[1].to_manual),
        (ManualStatus::Offline, ManualStatus::OnBreak)
    );
}

#[tokio::test]
async fn event_ids_persist_and_load_oldest_first() {
    let dir = TempDir::new("events");
    let path = dir.file("hub.db");
    let (store, _) = open_at(&path, Durability::Commit);
    let ok = StoredReply {
        error: None,
        fields: Arc::from(r#""accepted":true"#),
    };
    let err = StoredReply {
        error: Some(ErrorCode::UnknownCall),
        fields: Arc::from(""),
    };
    store.record_event_id("e2", &err, 20).await.expect("commit");
    store.record_event_id("e1", &ok, 10).await.expect("commit");
    store.record_event_id("e1", &err, 30).await.expect("commit"); // first reply wins
    let s0 = AgentState::new(id("a1"), 0);
    let s1 = moved(&s0, Status::Available, 40, Reason::Manual);
    store
        .record_change_with_event(&s0, &s1, None, 40, "e3", &ok)
        .await
        .expect("commit");
    store.close().expect("close");
    let (_store, recovered) = open_at(&path, Durability::Commit);
    let ids: Vec<(&str, Millis)> = recovered
        .event_ids
        .iter()
        .map(|(id, _, at)| (id.as_str(), *at))
        .collect();
    assert_eq!(ids, vec![("e1", 10), ("e2", 20), ("e3", 40)]);
    assert_eq!(recovered.event_ids[0].1, ok);
    assert_eq!(recovered.event_ids[1].1, err);
    assert_eq!(recovered.agents[0].state, s1);
}

#[tokio::test]
async fn the_directory_is_seeded_on_first_start_only_and_edits_persist() {
    let dir = TempDir::new("directory");
    let path = dir.file("hub.db");
    let seed = Directory::from_toml(
        "[[agents]]\nid = \"a1\"\nname = \"Ada\"\nteams = [\"sales\"]\nwrap_up_seconds = 30\n\
         [[ring_groups]]\nid = \"sales-line\"\nring_timeout_seconds = 20\nmembers = [\"a1\"]\n",
    )
    .expect("seed");
    let (store, recovered) = Store::open(&path, StoreOptions::new(&seed, 0)).expect("open");
    assert_eq!(recovered.directory.agents, seed.agents);
    assert_eq!(recovered.directory.ring_groups, seed.ring_groups);
    store.delete_agent(&id("a1")).await.expect("delete");
    let bob = AgentProfile {
        id: id("b2"),
        name: None,
        teams: vec![],
        wrap_up_seconds: None,
        ring_groups: vec!["support".into()],
    };
    store.put_agent(bob.clone()).await.expect("put");
    let support = RingGroup {
        id: "support".into(),
        ring_timeout_seconds: None,
        members: vec![id("b2")],
    };
    store.put_ring_group(support.clone()).await.expect("put");
    store.delete_ring_group("sales-line").await.expect("delete");
    assert_eq!(store.directory().expect("read").agents.len(), 1);
    store.close().expect("close");
    // The seed is not applied again: the edits stand.
    let (store, recovered) = Store::open(&path, StoreOptions::new(&seed, 0)).expect("reopen");
    assert_eq!(recovered.directory.agents.len(), 1);
    assert_eq!(recovered.directory.agents[&id("b2")], bob);
    assert_eq!(recovered.directory.ring_groups.len(), 1);
    assert_eq!(recovered.directory.ring_groups["support"], support);
    store.close().expect("close");
}

#[test]
fn a_closed_store_refuses_writes_and_drains_what_was_queued() {
    let store = memory();
    let s0 = AgentState::new(id("a1"), 0);
    let s1 = moved(&s0, Status::Busy, 1, Reason::Manual);
    let queued = store.record_change(&s0, &s1, 1);
    store.close().expect("close");
    queued
        .wait_blocking()
        .expect("committed before the writer stopped");
    let late = store.record_change(&s1, &s0, 2);
    assert!(matches!(late.wait_blocking(), Err(StoreError::Closed)));
    assert!(matches!(
        store.flush().wait_blocking(),
        Err(StoreError::Closed)
    ));
    store.close().expect("idempotent");
}

#[tokio::test]
async fn a_row_keeps_the_call_that_just_ended_and_a_snapshot_is_enough() {
    let store = memory();
    let mut on_call = moved(
        &AgentState::new(id("a1"), 0),
        Status::OnCall,
        10,
        Reason::CallAnswered,
    );
    on_call.call = Some(Box::new(CallInfo {
        call_id: CallId::parse("c9").expect("call id"),
        direction: CallDirection::Outbound,
        ring_group: None,
        from: None,
        to: Some("+200".into()),
        offered_at: None,
        answered_at: Some(10),
    }));
    let before = StatusBefore::from(&on_call);
    let mut ended = moved(&on_call, Status::Offline, 20, Reason::CallEnded);
    ended.call = None;
    store
        .record_change(before, &ended, 20)
        .await
        .expect("commit");
    let rows = store.history(&id("a1"), 0, 100, None, 10).expect("history");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].call_id.as_ref().map(|c| c.as_str()), Some("c9"));
    assert_eq!(rows[0].reason, Some(Reason::CallEnded));
    assert_eq!(
        (rows[0].from, rows[0].to),
        (Status::OnCall, Status::Offline)
    );
}

#[tokio::test]
async fn a_published_change_is_stored_from_its_frame_and_a_stale_frame_is_not_used() {
    let dir = TempDir::new("published");
    let path = dir.file("hub.db");
    let (store, _) = open_at(&path, Durability::Commit);
    let publish = |s: &AgentState| {
        Arc::new(crate::protocol::Published::build(
            s,
            1,
            &crate::protocol::Published::serialize(s),
        ))
    };
    let a0 = AgentState::new(id("a1"), 0);
    let mut a1 = moved(&a0, Status::Available, 10, Reason::Manual);
    a1.session = Session::Grace { until: 99 };
    let frame = publish(&a1);
    store
        .record_published_change(&a0, &a1, Some(&frame), 10)
        .await
        .expect("commit");
    // Another agent's frame, then one of an older version: both ignored, the state is
    // serialized instead.
    let b0 = AgentState::new(id("b1"), 0);
    let b1 = moved(&b0, Status::OnBreak, 20, Reason::Manual);
    let b2 = moved(&b1, Status::Available, 30, Reason::Manual);
    let old = publish(&b1);
    store
        .record_published_change(&b0, &b1, Some(&frame), 20)
        .await
        .expect("commit");
    store
        .record_published_change(&b1, &b2, Some(&old), 30)
        .await
        .expect("commit");
    store.close().expect("close");
    let (_store, recovered) = open_at(&path, Durability::Commit);
    assert_eq!(recovered.agents.len(), 2);
    assert_eq!(recovered.agents[0].state, a1);
    assert_eq!(recovered.agents[0].session, Session::Grace { until: 99 });
    assert_eq!(recovered.agents[1].state, b2);
}
