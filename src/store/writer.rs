//! The single writer: one OS thread owns the write connection and commits whatever was
//! queued (see `queue.rs`) as one transaction (group commit), then completes every item's
//! ticket. A failing transaction is retried a few times, then its tickets fail.

use rusqlite::{params, CachedStatement as Statement, Connection, TransactionBehavior};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, warn};

use super::codec::{manual_str, ms_to_sql, secs_to_sql, to_json};
use super::queue::{AbandonOnDrop, EventInsert, HistoryInsert, Item, Op, Queue, StateRecord};
use super::StoreError;
use crate::model::{AgentState, CallId, ManualStatus, Millis, Session, Status};

/// Attempts at a failing transaction before its items are given up.
const ATTEMPTS: u32 = 3;
/// Most rows one prune step deletes per table (a step is one batch: commits of other items
/// are not held up for long; the writer queues the next step behind them).
pub(super) const PRUNE_CHUNK: usize = 5000;

/// The writer thread's body: batches until the queue is closed and drained, then a final
/// checkpoint so the main file holds everything.
pub(super) fn run(mut conn: Connection, queue: Arc<Queue>, window: Duration) {
    let _guard = AbandonOnDrop(queue.clone());
    while let Some(batch) = queue.take(window) {
        let result = write_with_retries(&mut conn, &batch);
        let n = batch.len() as u64;
        match &result {
            Ok(_) => {
                queue.commits.fetch_add(1, Ordering::Relaxed);
                queue.items.fetch_add(n, Ordering::Relaxed);
            }
            Err(_) => {
                queue.failed.fetch_add(n, Ordering::Relaxed);
            }
        }
        for mut item in batch {
            if let (Ok(true), Op::Prune { .. }) = (&result.as_ref().map(|m| m.prune_more), &item.op)
            {
                // More to delete: the next step goes behind what is queued now.
                let done = item.done.take();
                if let Err(Some(done)) = queue.push(Item { op: item.op, done }) {
                    let _ = done.send(Ok(()));
                }
                continue;
            }
            if let Some(done) = item.done {
                let r = match &result {
                    Ok(_) => Ok(()),
                    Err(msg) => Err(StoreError::WriteFailed(msg.clone())),
                };
                let _ = done.send(r);
            }
        }
    }
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA optimize;") {
        warn!(error = %e, "durable store: final checkpoint failed");
    }
}

/// What a committed batch leaves to do.
struct Written {
    /// A prune step deleted a full chunk: there may be more.
    prune_more: bool,
}

fn write_with_retries(conn: &mut Connection, batch: &[Item]) -> Result<Written, Arc<str>> {
    let mut attempt = 1;
    loop {
        match write_batch(conn, batch) {
            Ok(w) => return Ok(w),
            Err(e) if attempt < ATTEMPTS => {
                warn!(error = %e, attempt, items = batch.len(), "durable store: write failed, retrying");
                std::thread::sleep(Duration::from_millis(50 << (2 * attempt)));
                attempt += 1;
            }
            Err(e) => {
                error!(error = %e, items = batch.len(), "durable store: write failed, these changes are not stored");
                return Err(Arc::from(e.to_string()));
            }
        }
    }
}

/// Appends one status history row.
const INSERT_HISTORY: &str = "INSERT INTO status_history (agent_id, from_status, to_status, from_manual, to_manual, reason, note, call_id, at, version)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
/// Appends one event id (see migration 0002: rows in arrival order, first one wins).
const INSERT_EVENT: &str =
    "INSERT INTO event_ids (event_id, error, fields, at) VALUES (?1, ?2, ?3, ?4)";
/// Writes an agent's last state; `created_at` (?7) only with its first one.
const UPSERT_STATE: &str = "INSERT INTO agent_state (agent_id, status, state, session, version, updated_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
     ON CONFLICT (agent_id) DO UPDATE SET status = excluded.status, state = excluded.state,
       session = excluded.session, version = excluded.version, updated_at = excluded.updated_at";

/// Writes a batch in one transaction. Only each agent's last state of the batch is
/// written to `agent_state` (in key order); every history row and event id is. The three
/// hot statements are looked up once per batch, not once per row.
fn write_batch(conn: &mut Connection, batch: &[Item]) -> Result<Written, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut prune_more = false;
    // Each agent's last change in the batch, by its index in `batch`, and the time of its
    // first (the agent's creation time if this batch stores it first).
    let mut latest: HashMap<&str, (usize, Millis)> = HashMap::new();
    {
        let mut history_stmt = tx.prepare_cached(INSERT_HISTORY)?;
        let mut event_stmt = tx.prepare_cached(INSERT_EVENT)?;
        for (i, item) in batch.iter().enumerate() {
            match &item.op {
                Op::Change {
                    state,
                    history,
                    event,
                    at,
                } => {
                    if let Some(h) = history {
                        insert_history(&mut history_stmt, state, h, *at)?;
                    }
                    if let Some(e) = event {
                        insert_event(&mut event_stmt, e)?;
                    }
                    latest
                        .entry(state.agent_id.as_str())
                        .and_modify(|e| e.0 = i)
                        .or_insert((i, *at));
                }
                Op::EventId(e) => insert_event(&mut event_stmt, e)?,
                Op::PutAgent(p) => {
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO directory_agents (id, name, teams, wrap_up_seconds, ring_groups) VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![
                        p.id.as_str(),
                        p.name,
                        to_json("teams", &p.teams)?,
                        secs_to_sql(p.wrap_up_seconds),
                        to_json("ring groups", &p.ring_groups)?,
                    ])?;
                }
                Op::DeleteAgent(id) => {
                    tx.prepare_cached("DELETE FROM directory_agents WHERE id = ?1")?
                        .execute([id.as_str()])?;
                }
                Op::PutRingGroup(g) => {
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO ring_groups (id, ring_timeout_seconds, members) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![
                        g.id,
                        secs_to_sql(g.ring_timeout_seconds),
                        to_json("members", &g.members)?,
                    ])?;
                }
                Op::DeleteRingGroup(id) => {
                    tx.prepare_cached("DELETE FROM ring_groups WHERE id = ?1")?
                        .execute([id])?;
                }
                Op::Prune {
                    history_before,
                    events_before,
                } => prune_more |= prune(&tx, *history_before, *events_before)?,
                Op::Flush => {}
            }
        }
        // In key order: neighbouring rows share pages and the B-tree is walked forward.
        let mut last: Vec<(&str, (usize, Millis))> = latest.into_iter().collect();
        last.sort_unstable();
        let mut upsert_stmt = tx.prepare_cached(UPSERT_STATE)?;
        for (_, (i, first_at)) in last {
            if let Op::Change { state, at, .. } = &batch[i].op {
                upsert_state(&mut upsert_stmt, state, *at, first_at)?;
            }
        }
    }
    tx.commit()?;
    Ok(Written { prune_more })
}

fn upsert_state(
    stmt: &mut Statement<'_>,
    state: &StateRecord,
    at: Millis,
    first_at: Millis,
) -> Result<(), StoreError> {
    stmt.execute(params![
        state.agent_id.as_str(),
        state.status.as_str(),
        state.json.as_str(),
        session_json(&state.session)?,
        ms_to_sql(state.version),
        ms_to_sql(at),
        ms_to_sql(first_at),
    ])?;
    Ok(())
}

/// The JSON of a session (the two unit variants without an allocation).
fn session_json(session: &Session) -> Result<std::borrow::Cow<'static, str>, StoreError> {
    Ok(match session {
        Session::LoggedOut => r#"{"state":"logged_out"}"#.into(),
        Session::Connected => r#"{"state":"connected"}"#.into(),
        Session::Grace { .. } => to_json("session", session)?.into(),
    })
}

fn insert_history(
    stmt: &mut Statement<'_>,
    state: &StateRecord,
    h: &HistoryInsert,
    at: Millis,
) -> Result<(), StoreError> {
    stmt.execute(params![
        state.agent_id.as_str(),
        h.from.as_str(),
        h.to.as_str(),
        h.from_manual,
        h.to_manual,
        state.reason.map(|r| r.as_str()),
        state.note,
        h.call_id,
        ms_to_sql(at),
        ms_to_sql(state.version),
    ])?;
    Ok(())
}

fn insert_event(stmt: &mut Statement<'_>, e: &EventInsert) -> Result<(), StoreError> {
    stmt.execute(params![e.event_id, e.error, &*e.fields, ms_to_sql(e.at)])?;
    Ok(())
}

/// Deletes up to [`PRUNE_CHUNK`] history rows before `history_before` (never an agent's
/// last row: it is the status the agent is still in, which reports need) and up to as many
/// event ids stored before `events_before`. True when a chunk was full (maybe more left).
pub(super) fn prune(
    conn: &Connection,
    history_before: Millis,
    events_before: Millis,
) -> Result<bool, StoreError> {
    let chunk = i64::try_from(PRUNE_CHUNK).unwrap_or(i64::MAX);
    let history = conn
        .prepare_cached(
            "DELETE FROM status_history WHERE id IN (
               SELECT h.id FROM status_history AS h WHERE h.at < ?1 AND EXISTS (
                 SELECT 1 FROM status_history AS later
                 WHERE later.agent_id = h.agent_id AND (later.at, later.id) > (h.at, h.id))
               LIMIT ?2)",
        )?
        .execute(params![ms_to_sql(history_before), chunk])?;
    let events = conn
        .prepare_cached(
            "DELETE FROM event_ids WHERE rowid IN (
               SELECT rowid FROM event_ids WHERE at < ?1 LIMIT ?2)",
        )?
        .execute(params![ms_to_sql(events_before), chunk])?;
    Ok(history >= PRUNE_CHUNK || events >= PRUNE_CHUNK)
}

/// What a change record needs of the state before it: cheap to take before every input
/// (two enums and an `Arc`), so the actor need not clone its whole state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusBefore {
    pub status: Status,
    pub manual_status: ManualStatus,
    pub call_id: Option<CallId>,
}

impl From<&AgentState> for StatusBefore {
    fn from(s: &AgentState) -> Self {
        StatusBefore {
            status: s.status,
            manual_status: s.manual_status,
            call_id: s.call_id().cloned(),
        }
    }
}

/// The history row of a change, when `status` or `manual_status` changed. Its call is the
/// current one, else the one that just ended.
pub(super) fn history_of(before: &StatusBefore, after: &AgentState) -> Option<HistoryInsert> {
    if before.status == after.status && before.manual_status == after.manual_status {
        return None;
    }
    Some(HistoryInsert {
        from: before.status,
        to: after.status,
        from_manual: manual_str(before.manual_status),
        to_manual: manual_str(after.manual_status),
        call_id: after
            .call_id()
            .or(before.call_id.as_ref())
            .map(|c| c.as_str().to_string()),
    })
}
