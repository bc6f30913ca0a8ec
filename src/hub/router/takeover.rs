//! Cluster mode's lookup: an actor is started only on the agent's owning node, from the
//! agent's last change in the agents stream (read with the stream's message-get, which
//! the stream leader answers, so it reflects every acknowledged change), with the head
//! its first append must follow.
//!
//! Taking an agent over: the tabs counted for nodes that are no longer members, and for
//! this node (a previous actor's tabs here are gone: it was fenced, or this node
//! restarted), are closed; if that leaves none, a logged-in agent's disconnect grace
//! starts now. That change is appended before the actor starts (fenced like any other:
//! of two nodes taking one agent over at once, one wins). Ring, wrap-up and grace
//! deadlines are kept as stored, and the actor's alarm fires them (one that passed while
//! nobody owned the agent fires at once).

use std::time::Duration;

use std::sync::Arc;

use super::{Reach, Router, RouterCluster};
use crate::agent::record::ClusterRecord;
use crate::agent::{AgentHandle, NodeTabs};
use crate::cluster::{Backplane, ClusterError, Head, Members, NodeId};
use crate::hub::cluster::Owner;
use crate::hub::route::RouteError;
use crate::hub::view::unavailable;
use crate::model::{AgentId, AgentState, Millis, Session};
use crate::store::dedup::EventIdCache;

impl Router {
    /// The event-id memory (the cluster follower fills it too).
    pub(in crate::hub) fn events(&self) -> &Arc<EventIdCache> {
        &self.events
    }

    /// Cluster mode: starts the actor of a live agent this node owns (a takeover).
    pub(in crate::hub) async fn adopt(&self, id: &AgentId) -> Result<(), RouteError> {
        self.find(id, Reach::Login).await.map(|_| ())
    }

    /// Where `id`'s actor runs: this node (always on a single node), another live member,
    /// or nobody yet (cluster mode before this node joined). The seam of the remote route:
    /// a command for a [`Owner::Remote`] agent is forwarded to that node.
    pub(crate) fn owner_of(&self, id: &AgentId) -> Owner {
        match &self.cluster {
            None => Owner::Local,
            Some(c) => c.owners.owner_of(id.as_str()),
        }
    }

    /// [`Router::find`] in cluster mode.
    pub(super) async fn find_owned(
        &self,
        cluster: &RouterCluster,
        id: &AgentId,
        reach: Reach,
    ) -> Result<Option<AgentHandle>, RouteError> {
        if let Some(h) = self.agents.get(id).map(|h| h.clone()) {
            if !h.is_closed() {
                return Ok(Some(h));
            }
            self.agents.remove_if(id, |_, h| h.is_closed());
        }
        match cluster.owners.owner_of(id.as_str()) {
            Owner::Local => {}
            Owner::Remote(_) => return Err(RouteError::NotOwner),
            Owner::Nobody => {
                return Err(unavailable(&ClusterError::Unavailable {
                    reason: "this node has not joined the cluster yet".into(),
                }))
            }
        }
        let stored = cluster
            .backplane
            .last(id)
            .await
            .map_err(|e| unavailable(&e))?;
        if reach == Reach::Known
            && stored.is_none()
            && !self.directory.read().agents.contains_key(id)
        {
            return Ok(None);
        }
        let now = self.clock.now_ms();
        // The open tabs per node the actor starts with (the live members' only).
        let mut kept = NodeTabs::new();
        let (state, head) = match stored {
            // A directory agent that never changed shows, on every node, the cluster's
            // start as its `since` (`never_changed_since`): its first change keeps it
            // unless the status changes, as on a single node.
            None => {
                let since = if self.directory.read().agents.contains_key(id) {
                    never_changed_since(&cluster.backplane).unwrap_or(now)
                } else {
                    now
                };
                (AgentState::new(id.clone(), since), Head::default())
            }
            Some(change) => {
                let record = ClusterRecord::from_bytes(&change.body).map_err(|e| {
                    tracing::warn!(agent = %id, error = %e, "cannot take the agent over");
                    RouteError::Unavailable
                })?;
                let members = cluster.owners.members();
                let me = cluster.owners.me();
                let here = self.node_tabs().map_or(0, |t| t.attached_count(id));
                let (mut state, tabs, changed) =
                    taken_over(record, me, here, &members, now, self.grace);
                kept = tabs;
                if changed {
                    state.version = change.head.version + 1;
                    let mut record = ClusterRecord::of(&state, me.as_str(), now);
                    record.tabs = kept.iter().map(|(n, c)| (n.to_string(), *c)).collect();
                    let head = cluster
                        .backplane
                        .append(id, change.head, record.to_bytes())
                        .await
                        .map_err(|e| match e {
                            ClusterError::Fenced { .. } => RouteError::Moved,
                            e => unavailable(&e),
                        })?;
                    (state, head)
                } else {
                    state.version = change.head.version;
                    (state, change.head)
                }
            }
        };
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(RouteError::Unavailable);
        }
        let handle = self
            .agents
            .entry(id.clone())
            .or_insert_with(|| {
                let profile = self.profile_for(id, &state);
                AgentHandle::spawn_at(&self.env, state, profile, head.seq, kept)
            })
            .clone();
        Ok(Some(handle))
    }
}

/// The `since` of a directory agent that never changed, in cluster mode: the agents
/// stream's creation time (the cluster's start, like a single node's start), the same on
/// every node, so every node's view and the owner's first change agree on it. `None`
/// before NATS was first reached.
pub(in crate::hub) fn never_changed_since(backplane: &Backplane) -> Option<Millis> {
    backplane.epoch().ok().and_then(|e| e.created_ms())
}

/// An agent's stored state as its new owner `me` starts it at `now` (module doc), the
/// open tabs per node it keeps, and whether that differs from what is stored. `here` is
/// how many of the agent's tabs this node serves (counted at the previous owner): this
/// node's count is kept up to that (a previous process of this node may have counted
/// tabs that died with it).
pub(super) fn taken_over(
    record: ClusterRecord,
    me: &NodeId,
    here: u32,
    members: &Members,
    now: Millis,
    grace: Duration,
) -> (AgentState, NodeTabs, bool) {
    let mut state = record.state;
    let kept: NodeTabs = record
        .tabs
        .iter()
        .filter_map(|(node, n)| {
            let node = members.nodes().iter().find(|m| m.as_str() == *node)?;
            let n = if node == me { (*n).min(here) } else { *n };
            (n > 0).then(|| (node.clone(), n))
        })
        .collect();
    let open: u32 = kept.values().sum();
    let mut changed = false;
    if state.connections != open {
        state.connections = open;
        changed = true;
    }
    if open == 0 && state.session == Session::Connected {
        let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        state.session = Session::Grace {
            until: now.saturating_add(grace_ms),
        };
        changed = true;
    }
    (state, kept, changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;

    fn node(s: &str) -> NodeId {
        NodeId::parse(s).expect("node id")
    }

    #[test]
    fn a_takeover_closes_the_tabs_of_gone_nodes_and_of_this_one_and_keeps_deadlines() {
        let mut s = AgentState::new(AgentId::parse("a1").expect("id"), 0);
        s.status = Status::Ringing;
        s.ring_expires_at = Some(30_000);
        s.connections = 3;
        s.session = Session::Connected;
        s.version = 9;
        let mut record = ClusterRecord::of(&s, "n1", 0);
        record.tabs.insert("n2".into(), 2);
        record.tabs.insert("n1".into(), 1);
        let grace = Duration::from_secs(15);
        // n1 (the old owner) is gone, n2 is live: its two tabs stay open.
        let live = Members::new(vec![node("n2"), node("n3")]);
        let (t, kept, changed) = taken_over(record.clone(), &node("n3"), 0, &live, 1_000, grace);
        assert_eq!(kept.get(&node("n2")), Some(&2));
        assert!(changed);
        assert_eq!(t.connections, 2);
        assert_eq!(t.session, Session::Connected);
        assert_eq!(t.ring_expires_at, Some(30_000), "deadline kept as stored");
        // n2 is the new owner: its own earlier tabs are gone too; grace starts now.
        let (t, _, _) = taken_over(record.clone(), &node("n2"), 0, &live, 1_000, grace);
        assert_eq!(t.connections, 0);
        assert_eq!(t.session, Session::Grace { until: 16_000 });
        // ... unless it still serves them (tabs are served by their own node): kept up to
        // what it serves.
        let (t, kept, _) = taken_over(record.clone(), &node("n2"), 1, &live, 1_000, grace);
        assert_eq!(t.connections, 1);
        assert_eq!(kept.get(&node("n2")), Some(&1));
        assert_eq!(t.session, Session::Connected);
        // Nothing to change: not re-stored.
        let mut quiet = record;
        quiet.state.connections = 0;
        quiet.state.session = Session::Grace { until: 5_000 };
        quiet.tabs.clear();
        let (t, _, changed) = taken_over(quiet, &node("n2"), 0, &live, 1_000, grace);
        assert!(!changed);
        assert_eq!(t.session, Session::Grace { until: 5_000 });
    }
}
