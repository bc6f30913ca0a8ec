//! Tests of the write path's shape: schema upgrades (a database written by an older
//! presence-hub opens with everything it held), event ids in arrival order, and group
//! commits that keep each agent's last state and every history row.

use std::sync::Arc;

use super::tests::{open_at, TempDir};
use super::*;
use crate::protocol::ErrorCode;

/// A database at schema version 1 (as the first release wrote it) holding three event ids.
fn version_1_database(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).expect("raw open");
    conn.execute_batch(open::MIGRATIONS[0].1).expect("0001");
    conn.execute_batch(
        r#"INSERT INTO schema_version VALUES (1, '0001_init', 0);
           INSERT INTO event_ids VALUES ('e2', 'unknown_call', '"message":"x"', 20);
           INSERT INTO event_ids VALUES ('e1', NULL, '"accepted":true', 10);
           INSERT INTO event_ids VALUES ('e3', NULL, '"stale":true', 30);
           PRAGMA user_version = 1;"#,
    )
    .expect("v1 rows");
}

#[test]
fn event_ids_of_a_version_1_database_survive_the_upgrade() {
    let dir = TempDir::new("upgrade");
    let path = dir.file("hub.db");
    version_1_database(&path);
    let (store, recovered) = open_at(&path, Durability::Commit);
    let ids: Vec<(&str, Option<ErrorCode>, &str, Millis)> = recovered
        .event_ids
        .iter()
        .map(|(id, r, at)| (id.as_str(), r.error, &*r.fields, *at))
        .collect();
    assert_eq!(
        ids,
        vec![
            ("e1", None, r#""accepted":true"#, 10),
            ("e2", Some(ErrorCode::UnknownCall), r#""message":"x""#, 20),
            ("e3", None, r#""stale":true"#, 30),
        ]
    );
    // New ids go on being stored after the upgrade.
    let reply = StoredReply {
        error: None,
        fields: Arc::from(r#""accepted":false"#),
    };
    store
        .record_event_id("e4", &reply, 40)
        .wait_blocking()
        .expect("commit");
    store.close().expect("close");
    let (_store, recovered) = open_at(&path, Durability::Commit);
    let ids: Vec<&str> = recovered.event_ids.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(ids, vec!["e1", "e2", "e3", "e4"]);
}

#[test]
fn an_id_stored_twice_keeps_its_first_reply_across_a_restart() {
    // The in-memory cache normally answers a known id before anything is stored; once it
    // forgot one (capacity), the id is answered afresh and stored again. A restart must
    // then bring back the first reply, as the keyed table of version 1 did.
    let dir = TempDir::new("twice");
    let path = dir.file("hub.db");
    let (store, _) = open_at(&path, Durability::Commit);
    let first = StoredReply {
        error: None,
        fields: Arc::from(r#""accepted":true"#),
    };
    let second = StoredReply {
        error: Some(ErrorCode::UnknownCall),
        fields: Arc::from(r#""message":"later""#),
    };
    store
        .record_event_id("e1", &first, 10)
        .wait_blocking()
        .expect("commit");
    store
        .record_event_id("e0", &first, 5)
        .wait_blocking()
        .expect("commit");
    store
        .record_event_id("e1", &second, 20)
        .wait_blocking()
        .expect("commit");
    store.close().expect("close");
    let (_store, recovered) = open_at(&path, Durability::Commit);
    let ids: Vec<(&str, Millis)> = recovered
        .event_ids
        .iter()
        .map(|(id, _, at)| (id.as_str(), *at))
        .collect();
    assert_eq!(ids, vec![("e0", 5), ("e1", 10)], "once each, oldest first");
    assert_eq!(recovered.event_ids[1].1, first);
}

#[tokio::test]
async fn changes_queued_together_keep_each_agents_last_state_and_every_history_row() {
    use crate::model::{Reason, Status};
    let dir = TempDir::new("coalesce");
    let path = dir.file("hub.db");
    let (store, _) = open_at(&path, Durability::Commit);
    let statuses = [Status::Available, Status::Busy, Status::OnBreak];
    let agents: Vec<AgentId> = ["a1", "a2"].iter().map(|s| super::tests::id(s)).collect();
    let mut states: Vec<AgentState> = agents
        .iter()
        .map(|a| AgentState::new(a.clone(), 0))
        .collect();
    // Queued without waiting (one or a few group commits), interleaved between agents.
    let mut tickets = Vec::new();
    for step in 0..9u64 {
        for s in states.iter_mut() {
            let next =
                super::tests::moved(s, statuses[step as usize % 3], 10 + step, Reason::Manual);
            tickets.push(store.record_change(&*s, &next, 10 + step));
            *s = next;
        }
    }
    for t in tickets {
        t.await.expect("commit");
    }
    for (agent, last) in agents.iter().zip(&states) {
        let rows = store.history(agent, 0, 100, None, 100).expect("history");
        let versions: Vec<u64> = rows.iter().map(|r| r.version).collect();
        assert_eq!(
            versions,
            (1..=9).collect::<Vec<u64>>(),
            "every row of {agent}"
        );
        assert_eq!(rows[8].to, last.status);
    }
    store.close().expect("close");
    let (_store, recovered) = open_at(&path, Durability::Commit);
    let restored: Vec<&AgentState> = recovered.agents.iter().map(|a| &a.state).collect();
    assert_eq!(
        restored,
        states.iter().collect::<Vec<_>>(),
        "the last state of each"
    );
}

/// Migration 0003 gives existing agents the earliest time known of them: the first kept
/// history row, else (never changed) the time of their stored state.
#[test]
fn migration_3_backfills_when_each_agent_was_created() {
    let conn = rusqlite::Connection::open_in_memory().expect("open");
    conn.execute_batch(open::MIGRATIONS[0].1).expect("0001");
    conn.execute_batch(open::MIGRATIONS[1].1).expect("0002");
    conn.execute_batch(
        r#"INSERT INTO agent_state VALUES ('a1', 'busy', '{}', '{}', 3, 900);
           INSERT INTO agent_state VALUES ('a2', 'offline', '{}', '{}', 1, 700);
           INSERT INTO status_history (agent_id, from_status, to_status, from_manual, to_manual, at, version)
               VALUES ('a1', 'offline', 'available', 'offline', 'available', 200, 1),
                      ('a1', 'available', 'busy', 'available', 'busy', 900, 3);"#,
    )
    .expect("v2 rows");
    conn.execute_batch(open::MIGRATIONS[2].1).expect("0003");
    let created: Vec<(String, i64)> = conn
        .prepare("SELECT agent_id, created_at FROM agent_state ORDER BY agent_id")
        .expect("select")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("decode");
    assert_eq!(created, vec![("a1".into(), 200), ("a2".into(), 700)]);
}
