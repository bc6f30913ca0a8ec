//! Reads on read-only connections (a small pool; WAL lets them run beside the writer):
//! status history, the status-time report, the stored directory. Every function here is
//! synchronous and may touch the disk: async callers run it in `spawn_blocking`.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

use super::codec::{
    from_json, ms_from_sql, ms_to_sql, parse_manual, parse_reason, parse_status, secs_from_sql,
};
use super::open::Location;
use super::report::{AgentStatusTime, StatusClock, Transition};
use super::StoreError;
use crate::directory::{AgentProfile, Directory, RingGroup};
use crate::model::{AgentId, AgentState, CallId, ManualStatus, Millis, Reason, Status};

/// Most history rows one call returns.
pub const MAX_HISTORY_LIMIT: usize = 10_000;
/// Idle read connections kept open.
pub(crate) const POOL_SIZE: usize = 4;

/// One row of an agent's status history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryRow {
    pub id: i64,
    pub agent_id: AgentId,
    pub from: Status,
    pub to: Status,
    pub from_manual: ManualStatus,
    pub to_manual: ManualStatus,
    pub reason: Option<Reason>,
    pub note: Option<String>,
    pub call_id: Option<CallId>,
    pub at: Millis,
    /// The agent's `version` after this change.
    pub version: u64,
}

impl HistoryRow {
    /// Where the next page starts (pass it as `after`).
    pub fn cursor(&self) -> HistoryCursor {
        HistoryCursor {
            at: self.at,
            id: self.id,
        }
    }
}

/// A position in an agent's history: rows strictly after it come next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HistoryCursor {
    pub at: Millis,
    pub id: i64,
}

/// What a status-time report covers.
#[derive(Debug, Clone, Default)]
pub struct ReportQuery {
    pub from: Millis,
    pub to: Millis,
    /// Time up to which the open interval counts (the hub's clock).
    pub now: Millis,
    /// Only these agents (a team resolved to its members by the caller); `None`: all.
    pub agents: Option<HashSet<AgentId>>,
    /// Only this agent (combines with `agents`).
    pub agent: Option<AgentId>,
}

/// A pool of read-only connections.
pub(super) struct Readers {
    location: Location,
    /// Page cache of each connection, in KiB.
    cache_kib: u32,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    pub(super) fn new(location: Location, cache_kib: u32) -> Self {
        Readers {
            location,
            cache_kib,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Connection>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on an idle connection (or a new one).
    pub(super) fn with<R>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let conn = self.idle().pop();
        let conn = match conn {
            Some(c) => c,
            None => self.location.connect_with_cache(false, self.cache_kib)?,
        };
        let result = f(&conn);
        let mut idle = self.idle();
        if idle.len() < POOL_SIZE {
            idle.push(conn);
        }
        result
    }

    /// Closes the idle connections.
    pub(super) fn close(&self) {
        self.idle().clear();
    }
}

/// One agent's stored state with its session, if it has one.
pub(super) fn read_agent(
    conn: &Connection,
    agent_id: &AgentId,
) -> Result<Option<AgentState>, StoreError> {
    // Cached: one lookup per login of an agent without a live actor.
    let row = conn
        .prepare_cached("SELECT state, session FROM agent_state WHERE agent_id = ?1")?
        .query_row(params![agent_id.as_str()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .optional()?;
    let Some((state, session)) = row else {
        return Ok(None);
    };
    let mut state: AgentState = from_json("agent state", &state)?;
    state.session = from_json("session", &session)?;
    Ok(Some(state))
}

/// An agent's transitions with `from <= at < to`, after `after` if given, oldest first, at
/// most `limit` (capped at [`MAX_HISTORY_LIMIT`]).
pub(super) fn history(
    conn: &Connection,
    agent_id: &AgentId,
    from: Millis,
    to: Millis,
    after: Option<HistoryCursor>,
    limit: usize,
) -> Result<Vec<HistoryRow>, StoreError> {
    let limit = i64::try_from(limit.min(MAX_HISTORY_LIMIT)).unwrap_or(0);
    let (after_at, after_id) = after.map_or((-1, -1), |c| (ms_to_sql(c.at), c.id));
    let mut stmt = conn.prepare_cached(
        "SELECT id, agent_id, from_status, to_status, from_manual, to_manual, reason, note, call_id, at, version
         FROM status_history
         WHERE agent_id = ?1 AND at >= ?2 AND at < ?3 AND (at, id) > (?4, ?5)
         ORDER BY at, id LIMIT ?6",
    )?;
    let mut rows = stmt.query(params![
        agent_id.as_str(),
        ms_to_sql(from),
        ms_to_sql(to),
        after_at,
        after_id,
        limit
    ])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let agent: String = r.get(1)?;
        let reason: Option<String> = r.get(6)?;
        let call: Option<String> = r.get(8)?;
        out.push(HistoryRow {
            id: r.get(0)?,
            agent_id: AgentId::parse(&agent).map_err(|e| StoreError::decode("agent id", e))?,
            from: parse_status(&r.get::<_, String>(2)?)?,
            to: parse_status(&r.get::<_, String>(3)?)?,
            from_manual: parse_manual(&r.get::<_, String>(4)?)?,
            to_manual: parse_manual(&r.get::<_, String>(5)?)?,
            reason: reason.as_deref().map(parse_reason).transpose()?,
            note: r.get(7)?,
            call_id: call
                .as_deref()
                .map(CallId::parse)
                .transpose()
                .map_err(|e| StoreError::decode("call id", e))?,
            at: ms_from_sql(r.get(9)?),
            version: ms_from_sql(r.get(10)?),
        });
    }
    Ok(out)
}

/// Time per status within `[q.from, q.to)` for every stored agent that passes the filters,
/// by agent id. One agent at a time through the `(agent_id, at)` index: memory stays
/// bounded by one agent's rows in the range.
pub(super) fn status_time_report(
    conn: &Connection,
    q: &ReportQuery,
) -> Result<Vec<AgentStatusTime>, StoreError> {
    let mut agents_stmt = conn
        .prepare_cached("SELECT agent_id, status, created_at FROM agent_state ORDER BY agent_id")?;
    let mut before = conn.prepare_cached(
        "SELECT at, from_status, to_status FROM status_history
         WHERE agent_id = ?1 AND at < ?2 ORDER BY at DESC, id DESC LIMIT 1",
    )?;
    let mut within = conn.prepare_cached(
        "SELECT at, from_status, to_status FROM status_history
         WHERE agent_id = ?1 AND at >= ?2 AND at < ?3 ORDER BY at, id",
    )?;
    let mut after = conn.prepare_cached(
        "SELECT at, from_status, to_status FROM status_history
         WHERE agent_id = ?1 AND at >= ?2 ORDER BY at, id LIMIT 1",
    )?;
    let end = q.to.min(q.now);
    let mut agents = agents_stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = agents.next()? {
        let id: String = r.get(0)?;
        let id = AgentId::parse(&id).map_err(|e| StoreError::decode("agent id", e))?;
        if q.agents.as_ref().is_some_and(|set| !set.contains(&id))
            || q.agent.as_ref().is_some_and(|a| *a != id)
        {
            continue;
        }
        let stored = parse_status(&r.get::<_, String>(1)?)?;
        // Only the time the agent existed counts; an agent created at or after the end of
        // the range (or now) is not listed.
        let created = r.get::<_, Option<i64>>(2)?.map_or(0, ms_from_sql);
        if created >= end {
            continue;
        }
        let from = q.from.max(created);
        let mut clock = StatusClock::new(from, q.to, q.now);
        let mut seen = false;
        let prior = before
            .query_row(params![id.as_str(), ms_to_sql(from)], transition)
            .optional()?;
        if let Some(t) = prior {
            clock.push(t?);
            seen = true;
        }
        let mut rows = within.query(params![id.as_str(), ms_to_sql(from), ms_to_sql(end)])?;
        while let Some(row) = rows.next()? {
            clock.push(transition(row)??);
            seen = true;
        }
        let mut fallback = stored;
        if !seen {
            // No row before or in the range: the agent was in the `from` of its next row.
            let next = after
                .query_row(params![id.as_str(), ms_to_sql(end)], transition)
                .optional()?;
            if let Some(t) = next {
                fallback = t?.from;
            }
        }
        out.push(AgentStatusTime {
            agent_id: id,
            ms: clock.finish(fallback),
        });
    }
    Ok(out)
}

/// A history row as a transition (the inner result carries a decode error).
fn transition(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Transition, StoreError>> {
    let at: i64 = r.get(0)?;
    let from: String = r.get(1)?;
    let to: String = r.get(2)?;
    Ok((|| {
        Ok(Transition {
            at: ms_from_sql(at),
            from: parse_status(&from)?,
            to: parse_status(&to)?,
        })
    })())
}

/// The directory tables.
pub(super) fn read_directory(conn: &Connection) -> Result<Directory, StoreError> {
    let mut dir = Directory::default();
    let mut stmt =
        conn.prepare("SELECT id, name, teams, wrap_up_seconds, ring_groups FROM directory_agents")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let id: String = r.get(0)?;
        let id = AgentId::parse(&id).map_err(|e| StoreError::decode("agent id", e))?;
        let profile = AgentProfile {
            id: id.clone(),
            name: r.get(1)?,
            teams: from_json("teams", &r.get::<_, String>(2)?)?,
            wrap_up_seconds: secs_from_sql(r.get(3)?),
            ring_groups: from_json("ring groups", &r.get::<_, String>(4)?)?,
        };
        dir.agents.insert(id, profile);
    }
    let mut stmt = conn.prepare("SELECT id, ring_timeout_seconds, members FROM ring_groups")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let group = RingGroup {
            id: r.get(0)?,
            ring_timeout_seconds: secs_from_sql(r.get(1)?),
            members: from_json("members", &r.get::<_, String>(2)?)?,
        };
        dir.ring_groups.insert(group.id.clone(), group);
    }
    Ok(dir)
}
