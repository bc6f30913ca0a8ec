//! Membership and ownership.
//!
//! Live members: each node keeps one key in the `<prefix>_members` KV bucket, rewritten
//! every `heartbeat`; the bucket's `max_age` (`member_ttl`) removes the key of a node that
//! stopped writing it, and a node that stops cleanly deletes its key at once. Every node
//! lists the bucket's keys each heartbeat: that list is its view of the live members. A
//! member the listing leaves out is dropped only once its key is gone (expired or deleted),
//! looked up by itself; and after this node reconnects to NATS nobody is dropped for one
//! member TTL (the bucket is in memory: a NATS restart empties it until every node has
//! written its key again).
//!
//! Ownership: an agent belongs to the live member with the highest rendezvous score
//! `hash(node, agent)` ([`owner_of`]). Nothing is assigned or stored, so there is no
//! partition table to agree on or repair: any node computes the owner from the member list
//! alone, and when a member leaves only its own agents move (each to the member with the next
//! highest score), spread evenly over the others. Two nodes may briefly disagree about the
//! list; then both may try to write an agent, and the stream's expected-sequence appends
//! (`agents.rs`) let exactly one of them succeed. Membership decides who *tries*; fencing
//! decides who *writes*.

use super::naming::{token, untoken};
use super::{Backplane, ClusterError, NodeId};
use futures::TryStreamExt;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The live members as one node sees them, sorted by id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Members {
    /// Sorted, without duplicates.
    nodes: Arc<[NodeId]>,
}

impl Members {
    /// A view from a list of nodes (any order).
    pub fn new(mut nodes: Vec<NodeId>) -> Self {
        nodes.sort();
        nodes.dedup();
        Members {
            nodes: nodes.into(),
        }
    }

    /// The live members, sorted.
    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    /// The member that owns `agent_id`; `None` when no member is live.
    pub fn owner(&self, agent_id: &str) -> Option<&NodeId> {
        owner_of(agent_id, &self.nodes)
    }
}

/// Rendezvous (highest random weight) hashing: the node with the highest score for the agent.
pub fn owner_of<'a>(agent_id: &str, nodes: &'a [NodeId]) -> Option<&'a NodeId> {
    nodes
        .iter()
        .max_by_key(|n| (score(n.as_str(), agent_id), n.as_str()))
}

/// FNV-1a over `node 0xFF agent`, then the splitmix64 finalizer to spread the bits. Written
/// out (not `std`'s hasher) because every node, whatever its build, must compute the same
/// owner: the function is part of the cluster's protocol.
fn score(node: &str, agent: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes().chain([0xFF]).chain(agent.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// This node's membership: its heartbeat and its view of the others.
pub struct Membership {
    /// The current view.
    view: watch::Receiver<Members>,
    /// Ends the heartbeat task.
    stop: CancellationToken,
    /// To delete this node's key on [`Membership::leave`].
    backplane: Backplane,
}

impl Backplane {
    /// Joins the cluster: starts the heartbeat and the member view.
    pub fn join(&self) -> Membership {
        let (tx, view) = watch::channel(Members::default());
        let stop = CancellationToken::new();
        tokio::spawn(heartbeat(self.clone(), tx, stop.clone()));
        Membership {
            view,
            stop,
            backplane: self.clone(),
        }
    }
}

impl Membership {
    /// The live members as this node sees them now.
    pub fn current(&self) -> Members {
        self.view.borrow().clone()
    }

    /// A receiver of the view: the current members, and a wake-up when they change.
    pub fn watch(&self) -> watch::Receiver<Members> {
        self.view.clone()
    }

    /// Waits for the next change of the view and returns it.
    pub async fn changed(&mut self) -> Members {
        let _ = self.view.changed().await;
        self.view.borrow_and_update().clone()
    }

    /// Leaves cleanly: stops the heartbeat and deletes this node's key, so the others move
    /// its agents at their next heartbeat instead of after `member_ttl`.
    pub async fn leave(self) -> Result<(), ClusterError> {
        self.stop.cancel();
        let session = self.backplane.link.session()?;
        session
            .h
            .members
            .delete(token(self.backplane.config.node_id.as_str()))
            .await
            .map_err(ClusterError::unavailable)
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn heartbeat(bp: Backplane, tx: watch::Sender<Members>, stop: CancellationToken) {
    let me = token(bp.config.node_id.as_str());
    let mut tick = tokio::time::interval(bp.config.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The session of the last heartbeat, and until when nobody is dropped after a new one.
    let mut generation: Option<u64> = None;
    let mut settle_until: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok(session) = bp.link.session() else {
            continue;
        };
        if generation.is_some_and(|g| g != session.generation) {
            // A reconnect: the members bucket (memory storage) may have lost every key in a
            // NATS restart, and the others may not have written theirs again yet. Nobody is
            // dropped until they had one member TTL to do so.
            settle_until = Some(tokio::time::Instant::now() + bp.config.member_ttl);
        }
        generation = Some(session.generation);
        let store = &session.h.members;
        if let Err(e) = store.put(&me, bytes::Bytes::new()).await {
            warn!(error = %e, "membership heartbeat failed");
            continue;
        }
        let keys: Result<Vec<String>, String> = match store.keys().await {
            Ok(k) => k.try_collect().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let mut nodes: Vec<NodeId> = match keys {
            Ok(keys) => keys
                .iter()
                .filter_map(|k| NodeId::parse(&untoken(k)?).ok())
                .collect(),
            Err(e) => {
                warn!(error = %e, "membership list failed");
                continue;
            }
        };
        let settling = settle_until.is_some_and(|t| tokio::time::Instant::now() < t);
        let unlisted: Vec<NodeId> = tx
            .borrow()
            .nodes()
            .iter()
            .filter(|n| !nodes.contains(n))
            .cloned()
            .collect();
        for node in unlisted {
            if settling || listed_by_mistake(store, &node).await {
                nodes.push(node);
            }
        }
        let view = Members::new(nodes);
        tx.send_if_modified(|cur| {
            if *cur == view {
                return false;
            }
            info!(members = ?view.nodes(), "cluster members changed");
            *cur = view;
            true
        });
    }
}

/// A member the key listing left out is looked up by its key before it is dropped: a key
/// rewritten by its heartbeat while the listing's consumer ran can be skipped by it (seen
/// as members dropped and re-added on an idle cluster). Only a key that expired (no
/// heartbeat for `member_ttl`) or was deleted (a clean leave) drops the member; a lookup
/// that fails keeps it until the next heartbeat.
async fn listed_by_mistake(store: &async_nats::jetstream::kv::Store, node: &NodeId) -> bool {
    use async_nats::jetstream::kv::Operation;
    match store.entry(token(node.as_str())).await {
        Ok(Some(entry)) => entry.operation == Operation::Put,
        Ok(None) => false,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(names: &[&str]) -> Vec<NodeId> {
        names.iter().map(|n| NodeId::parse(n).unwrap()).collect()
    }

    #[test]
    fn owner_is_stable_spread_and_moves_only_the_lost_nodes_agents() {
        let three = nodes(&["n1", "n2", "n3"]);
        let two = nodes(&["n1", "n3"]);
        let mut per_node = [0usize; 3];
        for i in 0..3000 {
            let agent = format!("agent-{i}");
            let before = owner_of(&agent, &three).unwrap();
            let idx = three.iter().position(|n| n == before).unwrap();
            per_node[idx] += 1;
            // Order of the list does not matter.
            let mut rev = three.clone();
            rev.reverse();
            assert_eq!(owner_of(&agent, &rev), Some(before));
            let after = owner_of(&agent, &two).unwrap();
            if before.as_str() != "n2" {
                assert_eq!(after, before, "{agent} moved although its node stayed");
            }
        }
        for n in per_node {
            assert!((800..1200).contains(&n), "uneven spread {per_node:?}");
        }
        assert_eq!(owner_of("a", &[]), None);
    }

    #[test]
    fn score_is_fixed() {
        // The owner function is shared by every node of every build: pin one value.
        assert_eq!(score("n1", "a"), score("n1", "a"));
        assert_ne!(score("n1", "a"), score("n2", "a"));
        // Computed independently (Python) from the definition in the doc comment.
        assert_eq!(score("n1", "agent-1"), 0xebd0_11b4_1d45_ab95);
    }
}
