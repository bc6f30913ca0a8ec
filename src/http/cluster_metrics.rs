//! The cluster figures of `/metrics` (cluster mode only; a single node shows none), read
//! when scraped from their owners: the router and member view (agents owned), the
//! backplane's counters (appends, append conflicts, forwarded commands) and the stream
//! (lag of this node's view). Ownership moves are counted as they happen
//! ([`crate::metrics::Metrics::ownership_moved`]).

use crate::cluster::Backplane;
use crate::hub::Hub;
use crate::metrics::{AppendOutcome, Computed, ForwardOutcome};

/// How long a scrape waits for the stream's last sequence (the stream lag figure is left
/// out when NATS does not answer in time).
const LAST_SEQ_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// The cluster figures of `/metrics` (besides members and readiness): agents owned, appends
/// by outcome and append conflicts, forwarded commands by outcome, and the stream lag of
/// this node's view (the stream's last sequence minus the last stream sequence this node's
/// view applied).
pub(super) async fn cluster_figures(hub: &Hub, backplane: &Backplane, computed: &mut Computed) {
    let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    if let Some(owned) = hub.agents_owned() {
        computed.gauge(
            "presence_hub_cluster_agents_owned",
            "Agents this node owns in its member view (directory agents and agents with an actor here)",
            gauge(u64::try_from(owned).unwrap_or(u64::MAX)),
        );
    }
    let stats = backplane.stats();
    computed.appends(&[
        (AppendOutcome::Acked, stats.appended),
        (AppendOutcome::Fenced, stats.fenced),
        (AppendOutcome::Unavailable, stats.append_unavailable),
    ]);
    computed.counter(
        "presence_hub_cluster_append_conflicts",
        "Appends refused because another change of the agent was stored first (lost ownership or a race)",
        stats.fenced,
    );
    computed.forwards(&[
        (ForwardOutcome::Answered, stats.forwarded),
        (ForwardOutcome::Unavailable, stats.forward_failed),
    ]);
    if let Ok(Ok(last)) = tokio::time::timeout(LAST_SEQ_TIMEOUT, backplane.last_seq()).await {
        let applied = hub.cluster().map_or(0, |c| c.view().applied_seq());
        computed.gauge(
            "presence_hub_cluster_stream_lag",
            "Changes in the agents stream this node's view has not applied yet (stream's last sequence minus the last seq published here)",
            gauge(last.saturating_sub(applied)),
        );
    }
}
