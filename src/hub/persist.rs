//! The hub's side of the durable store: opening it at start (before anything is served),
//! the background pruning of old history and event ids, and closing it at shutdown once
//! every actor has ended, so everything acknowledged is committed and checkpointed.
//!
//! Waits on the store's writer thread outside the request path go through
//! `spawn_blocking`: besides keeping runtime threads free, a blocking task in flight keeps
//! tokio's paused test clock from jumping ahead while the writer works.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::config::Settings;
use crate::model::{AgentState, Millis, Session};
use crate::store::{CommitTicket, Durability, Recovered, Store, StoreError, StoreOptions};

/// How often old history and event ids are pruned (also once at start).
pub(crate) const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// True for the path of a private in-memory database.
pub(crate) fn is_memory(path: &Path) -> bool {
    path.as_os_str() == ":memory:"
}

/// Opens the store of `settings` (blocking work on the blocking pool): checks the file,
/// migrates it, seeds the directory on the first start and returns what it recovered. An
/// in-memory database keeps nothing after the process, so its changes are acknowledged at
/// once whatever `settings.durability` says (there is no disk to wait for).
pub(crate) async fn open(settings: &Settings) -> Result<(Arc<Store>, Recovered), StoreError> {
    let path = settings.database.clone();
    let durability = if is_memory(&path) {
        Durability::Async
    } else {
        settings.durability
    };
    let retention = settings.history_retention;
    let event_id_ttl = settings.event_id_ttl;
    let seed = settings.directory.clone();
    let cache_kib = settings.store_cache_mib.saturating_mul(1024);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let opened = tokio::task::spawn_blocking(move || {
        let mut options = StoreOptions::new(&seed, now);
        options.durability = durability;
        options.retention = retention;
        options.event_id_ttl = event_id_ttl;
        options.cache_kib = cache_kib;
        Store::open(&path, options)
    })
    .await
    .map_err(|e| StoreError::WriteFailed(Arc::from(format!("opening the store failed: {e}"))))?;
    let (store, recovered) = opened?;
    warn_if_directory_file_ignored(settings, &recovered);
    info!(
        database = %settings.database.display(),
        durability = ?durability,
        agents = recovered.agents.len(),
        event_ids = recovered.event_ids.len(),
        directory_agents = recovered.directory.agents.len(),
        ring_groups = recovered.directory.ring_groups.len(),
        "durable store opened"
    );
    Ok((Arc::new(store), recovered))
}

/// The directory file seeds the first start only: say so when the database holds another
/// directory, so an edited file is not believed applied.
fn warn_if_directory_file_ignored(settings: &Settings, recovered: &Recovered) {
    if let Some(file) = &settings.directory_file {
        if recovered.directory != settings.directory {
            warn!(
                file = %file.display(),
                database = %settings.database.display(),
                "the directory file differs from the directory in the database and is not applied: it seeds the database on its first start only; edit the directory with the directory API (/api/v1/directory/agents, /api/v1/ring-groups), or start with a new --database to seed from the file"
            );
        }
    }
}

/// Waits for a ticket on the blocking pool (for infrastructure waits: prune, flush before a
/// report, directory edits).
pub(crate) async fn wait(ticket: CommitTicket) -> Result<(), StoreError> {
    if ticket.is_immediate() {
        return ticket.await;
    }
    tokio::task::spawn_blocking(move || ticket.wait_blocking())
        .await
        .unwrap_or(Err(StoreError::Closed))
}

/// Prunes history older than the retention and expired event ids once now and then every
/// [`PRUNE_EVERY`], until `stop` is cancelled.
pub(crate) async fn prune(store: Arc<Store>, clock: Clock, stop: CancellationToken) {
    loop {
        let ticket = store.prune(clock.now_ms());
        tokio::select! {
            () = stop.cancelled() => break,
            r = wait(ticket) => if let Err(e) = r {
                warn!(error = %e, "durable store: pruning failed");
            },
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(PRUNE_EVERY) => {}
        }
    }
}

/// The least time the store's last commit gets at shutdown, even when the tasks used up
/// the deadline.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Commits everything queued, checkpoints and closes the store (at shutdown, after the
/// actors ended), waiting until `deadline` (or [`CLOSE_GRACE`], whichever is later). Past
/// it the hub stops without waiting: what was queued may be lost, and it says so.
pub(crate) async fn close(store: Arc<Store>, deadline: Instant) {
    let deadline = deadline.max(Instant::now() + CLOSE_GRACE);
    let closing = tokio::task::spawn_blocking(move || store.close());
    match tokio::time::timeout_at(deadline, closing).await {
        Ok(Ok(Ok(()))) => info!("durable store flushed and closed"),
        Ok(Ok(Err(e))) => warn!(error = %e, "durable store: close failed"),
        Ok(Err(e)) => warn!(error = %e, "durable store: close panicked"),
        Err(_) => warn!("durable store: close did not finish before the shutdown deadline"),
    }
}

/// An agent's stored state as it resumes after a restart at `now`. Everything is kept
/// (status, call, timers: a ring or wrap-up whose deadline passed while the hub was down
/// fires as soon as the actor starts, its select being biased timer-first), except the
/// sockets: they died with the old process. An agent that was logged in (connected, or in
/// its grace period) gets `connections = 0` and a fresh grace period from now, so a tab
/// that reconnects within it resumes as in row 22 and one that does not come back is
/// logged out as in row 21. A change of `connections` counts as a change (`version + 1`,
/// reason kept).
pub(crate) fn restored(mut state: AgentState, now: Millis, grace: Duration) -> AgentState {
    let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
    if state.session != Session::LoggedOut {
        state.session = Session::Grace {
            until: now.saturating_add(grace_ms),
        };
    }
    if state.connections != 0 {
        state.connections = 0;
        state.version += 1;
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AgentId;

    fn agent(session: Session, connections: u32) -> AgentState {
        let mut s = AgentState::new(AgentId::parse("a1").expect("id"), 1_000);
        s.session = session;
        s.connections = connections;
        s.version = 7;
        s
    }

    #[test]
    fn a_restart_keeps_the_state_but_not_the_sockets() {
        let grace = Duration::from_secs(15);
        // Connected with two tabs: no tabs now, a fresh grace from the start, one change.
        let s = restored(agent(Session::Connected, 2), 50_000, grace);
        assert_eq!(s.connections, 0);
        assert_eq!(s.session, Session::Grace { until: 65_000 });
        assert_eq!(s.version, 8);
        // In its grace when the hub died (even one that ran out meanwhile): a fresh grace.
        let s = restored(agent(Session::Grace { until: 2_000 }, 0), 50_000, grace);
        assert_eq!(s.session, Session::Grace { until: 65_000 });
        assert_eq!(s.version, 7, "nothing visible changed");
        // Logged out: untouched.
        let before = agent(Session::LoggedOut, 0);
        assert_eq!(restored(before.clone(), 50_000, grace), before);
    }
}
