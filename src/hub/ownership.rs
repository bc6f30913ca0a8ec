//! Cluster mode: counts ownership moves for `/metrics`. Each time this node's member view
//! changes, every agent it knows (directory agents and agents with an actor here) whose
//! owner changed to this node counts as `gained`, and away from it as `lost`. The first
//! view after the node joins is the starting point, not a move.

use std::sync::Weak;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use super::Hub;
use crate::cluster::Members;
use crate::metrics::OwnershipMove;
use crate::model::AgentId;

/// How often the member view is compared with the last one (views change at most once per
/// heartbeat, 1 s by default).
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// Runs until `stop` or until the hub is gone.
pub(crate) async fn count_moves(hub: Weak<Hub>, stop: CancellationToken) {
    let mut last: Option<Members> = None;
    let mut tick = tokio::time::interval(LOOK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(hub) = hub.upgrade() else { return };
        let Some(cluster) = hub.cluster() else { return };
        let Some(view) = cluster.members_now() else {
            return;
        };
        if view.nodes().is_empty() || last.as_ref() == Some(&view) {
            continue;
        }
        if let Some(before) = last.replace(view.clone()) {
            let me = cluster.node_id();
            let (gained, lost) = moves(&hub.known_agents(), &before, &view, me.as_str());
            for _ in 0..gained {
                hub.metrics().ownership_moved(OwnershipMove::Gained);
            }
            for _ in 0..lost {
                hub.metrics().ownership_moved(OwnershipMove::Lost);
            }
        }
    }
}

/// Agents among `agents` that moved to `me` and away from it between two views.
fn moves(agents: &[AgentId], before: &Members, after: &Members, me: &str) -> (u64, u64) {
    let mut gained = 0;
    let mut lost = 0;
    for id in agents {
        let was = before.owner(id.as_str()).map(|n| n.as_str()) == Some(me);
        let is = after.owner(id.as_str()).map(|n| n.as_str()) == Some(me);
        match (was, is) {
            (false, true) => gained += 1,
            (true, false) => lost += 1,
            _ => {}
        }
    }
    (gained, lost)
}

impl Hub {
    /// Cluster mode: the agents this node owns in its member view, among those it knows
    /// (see [`Hub::known_agents`]); `None` on a single node.
    pub(crate) fn agents_owned(&self) -> Option<usize> {
        let c = self.cluster.as_ref()?;
        let view = c.members_now()?;
        let me = c.node_id();
        let owned = self
            .known_agents()
            .iter()
            .filter(|id| view.owner(id.as_str()) == Some(me))
            .count();
        Some(owned)
    }

    /// The agents this node knows by id: the directory's, and any with an actor here.
    pub(crate) fn known_agents(&self) -> Vec<AgentId> {
        // The directory's lock is not held while the actors' map is read (the router takes
        // them the other way round).
        let mut ids: std::collections::HashSet<AgentId> =
            self.directory.read().agents.keys().cloned().collect();
        ids.extend(self.router.live_ids());
        ids.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::NodeId;

    fn view(nodes: &[&str]) -> Members {
        Members::new(nodes.iter().map(|n| NodeId::parse(n).unwrap()).collect())
    }

    #[test]
    fn a_member_leaving_moves_only_its_agents_to_the_others() {
        let agents: Vec<AgentId> = (0..300)
            .map(|i| AgentId::parse(&format!("a{i}")).unwrap())
            .collect();
        let three = view(&["n1", "n2", "n3"]);
        let two = view(&["n1", "n2"]);
        let n3_had = agents
            .iter()
            .filter(|a| three.owner(a.as_str()).map(NodeId::as_str) == Some("n3"))
            .count() as u64;
        let (g1, l1) = moves(&agents, &three, &two, "n1");
        let (g2, l2) = moves(&agents, &three, &two, "n2");
        assert_eq!((l1, l2), (0, 0), "survivors lose nothing");
        assert_eq!(g1 + g2, n3_had, "n3's agents are taken over, each once");
        assert!(g1 > 0 && g2 > 0, "spread over both: {g1} {g2}");
        assert_eq!(moves(&agents, &three, &two, "n3"), (0, n3_had));
        assert_eq!(moves(&agents, &two, &two, "n1"), (0, 0));
    }
}
