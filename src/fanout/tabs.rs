//! Cluster mode: the agent tabs connected to this node, and their frames.
//!
//! In cluster mode an agent's actor runs on its owning node and only *counts* its tabs per
//! node; every tab, wherever it is, gets its frames from its own node, made from the
//! changes this node follows on the agents stream (the same changes its admins get):
//! `agent` for every change, `call_offered` when ringing starts, `logged_out` and a close
//! (1000) when the agent is logged out. Nothing is relayed frame by frame between nodes,
//! and a tab is unaffected when its agent moves to another owner.
//!
//! A tab is registered *pending* before its attach is sent to the owner (changes that
//! arrive meanwhile are remembered, not sent), then given its `hello` from the newest of
//! the owner's answer and what this node saw meanwhile ([`NodeTabs::attached`]). Each tab
//! remembers the `seq` it has seen, so a change is sent to it once, in order, whether it
//! comes from the followed stream or from the owner's answer to the tab's own command
//! (which is delivered first, so the tab sees its update before its `ok`, as on a single
//! node).

use dashmap::DashMap;
use std::sync::Arc;

use crate::model::{AgentId, AgentState, Reason, Status};
use crate::outbox::{Outbound, Outbox};
use crate::protocol::{self, Published};

/// Close code sent with `logged_out`.
const CLOSE_NORMAL: u16 = 1000;

/// One tab on this node.
struct NodeTab {
    /// The tab's id (unique in the process).
    id: u64,
    /// The tab's socket queue.
    outbox: Outbox,
    /// The `seq` of the last change the tab got; `None` while its attach is pending.
    after: Option<u64>,
}

/// The tabs of one agent on this node and the newest change of it seen here.
#[derive(Default)]
struct AgentTabs {
    /// The newest change seen while a tab was registered (its `seq` and state).
    last: Option<(u64, AgentState)>,
    tabs: Vec<NodeTab>,
}

/// The agent tabs connected to this node (cluster mode).
pub(crate) struct NodeTabs {
    /// By agent; an agent with no tab here has no entry.
    agents: DashMap<AgentId, AgentTabs>,
}

/// What a tab's `hello` needs besides the state.
pub(crate) struct HelloParts<'a> {
    pub now: u64,
    pub epoch: &'a str,
    pub node: &'a str,
}

impl NodeTabs {
    /// No tabs yet.
    pub(crate) fn new() -> Arc<NodeTabs> {
        Arc::new(NodeTabs {
            agents: DashMap::new(),
        })
    }

    /// Registers a tab whose attach is about to be sent to the owner.
    pub(crate) fn register(&self, agent: &AgentId, id: u64, outbox: Outbox) {
        self.agents
            .entry(agent.clone())
            .or_default()
            .tabs
            .push(NodeTab {
                id,
                outbox,
                after: None,
            });
    }

    /// The owner counted the tab and answered the state (`seq`, `state`): queues `hello`
    /// (and `call_offered` when ringing) from the newest state known here. False when the
    /// tab is no longer registered.
    pub(crate) fn attached(
        &self,
        agent: &AgentId,
        id: u64,
        seq: u64,
        state: &AgentState,
        hello: HelloParts<'_>,
    ) -> bool {
        let Some(mut entry) = self.agents.get_mut(agent) else {
            return false;
        };
        let entry = &mut *entry;
        if entry.last.as_ref().is_none_or(|(s, _)| *s < seq) {
            entry.last = Some((seq, state.clone()));
        }
        let Some((seq, state)) = entry.last.as_ref() else {
            return false;
        };
        let Some(tab) = entry.tabs.iter_mut().find(|t| t.id == id) else {
            return false;
        };
        let json = Published::serialize(state);
        let _ = tab.outbox.push(protocol::agent_hello(
            &json,
            hello.now,
            hello.epoch,
            *seq,
            hello.node,
        ));
        if state.status == Status::Ringing {
            let _ = tab.outbox.push(protocol::call_offered(state));
        }
        tab.after = Some(*seq);
        true
    }

    /// Forgets a tab; false if it was not registered (closed by a logout already).
    pub(crate) fn remove(&self, agent: &AgentId, id: u64) -> bool {
        self.take(agent, id).is_some()
    }

    /// Forgets a tab and hands back its queue (`None` if it was not registered).
    pub(crate) fn take(&self, agent: &AgentId, id: u64) -> Option<Outbox> {
        let mut found = None;
        self.agents.remove_if_mut(agent, |_, entry| {
            if let Some(i) = entry.tabs.iter().position(|t| t.id == id) {
                found = Some(entry.tabs.swap_remove(i).outbox);
            }
            entry.tabs.is_empty()
        });
        found
    }

    /// Registers again a tab taken for its own logout, which did not happen; it continues
    /// from the newest change seen here.
    pub(crate) fn reinstate(&self, agent: &AgentId, id: u64, outbox: Outbox) {
        let mut entry = self.agents.entry(agent.clone()).or_default();
        let after = Some(entry.last.as_ref().map_or(0, |(s, _)| *s));
        entry.tabs.push(NodeTab { id, outbox, after });
    }

    /// How many tabs of `agent` on this node were counted at its owner (attached).
    pub(crate) fn attached_count(&self, agent: &AgentId) -> u32 {
        self.agents.get(agent).map_or(0, |e| {
            let n = e.tabs.iter().filter(|t| t.after.is_some()).count();
            u32::try_from(n).unwrap_or(u32::MAX)
        })
    }

    /// True when no tab is connected to this node.
    pub(crate) fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// A change of an agent seen on this node (followed from the stream, or answered by the
    /// owner to one of this node's commands), numbered `seq`: every tab of the agent here
    /// that has not seen it gets its frames. Cheap when the agent has no tab here.
    pub(crate) fn changed(&self, seq: u64, state: &AgentState) {
        let Some(mut guard) = self.agents.get_mut(&state.agent_id) else {
            return;
        };
        let entry = &mut *guard;
        let prev = match entry.last.take() {
            Some((s, prev)) if s >= seq => {
                entry.last = Some((s, prev));
                return;
            }
            other => other,
        };
        let ringing = state.status == Status::Ringing
            && prev
                .as_ref()
                .is_none_or(|(_, p)| p.status != Status::Ringing || p.call_id() != state.call_id());
        let logged_out = logged_out(prev.as_ref().map(|(_, p)| p), state);
        let json = Published::serialize(state);
        let frame = Published::build(state, seq, &json).frame;
        let offer = ringing.then(|| protocol::call_offered(state));
        for tab in entry.tabs.iter_mut() {
            if tab.after.is_none_or(|a| a >= seq) {
                continue;
            }
            let _ = tab.outbox.push(frame.clone());
            if let Some(offer) = &offer {
                let _ = tab.outbox.push(offer.clone());
            }
            tab.after = Some(seq);
        }
        if let Some(reason) = logged_out {
            let bye = protocol::logged_out(reason);
            entry.tabs.retain(|tab| {
                if tab.after.is_none() {
                    return true;
                }
                let _ = tab.outbox.push(bye.clone());
                let _ = tab
                    .outbox
                    .push_unbounded(Outbound::Close(CLOSE_NORMAL, "logged out"));
                false
            });
        }
        entry.last = Some((seq, state.clone()));
        if entry.tabs.is_empty() {
            drop(guard);
            self.agents
                .remove_if(&state.agent_id, |_, e| e.tabs.is_empty());
        }
    }
}

/// The reason of a logout `state` is the result of (after `prev`), if it is one.
fn logged_out(prev: Option<&AgentState>, state: &AgentState) -> Option<Reason> {
    let reason = state.reason?;
    let is_logout = matches!(
        reason,
        Reason::Logout | Reason::AdminLogout | Reason::Disconnected
    );
    let new = prev.is_none_or(|p| p.version < state.version);
    (is_logout && new && state.connections == 0).then_some(reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{outbox_measured, OutboxReceiver};

    fn count(rx: &OutboxReceiver) -> usize {
        std::iter::from_fn(|| rx.try_recv()).count()
    }

    fn state(version: u64, status: Status) -> AgentState {
        let mut s = AgentState::new(AgentId::parse("a1").unwrap(), 1);
        s.version = version;
        s.status = status;
        s.connections = 1;
        s
    }

    #[test]
    fn a_tab_gets_hello_then_each_change_once_in_order() {
        let tabs = NodeTabs::new();
        let agent = AgentId::parse("a1").unwrap();
        let (outbox, rx) = outbox_measured(1 << 20, None);
        tabs.register(&agent, 7, outbox);
        // A change while pending is remembered, not sent.
        tabs.changed(5, &state(2, Status::Available));
        assert_eq!(count(&rx), 0);
        // The owner's answer is older than what was seen: hello carries the newer one.
        let hello = HelloParts {
            now: 1,
            epoch: "e",
            node: "n1",
        };
        assert!(tabs.attached(&agent, 7, 4, &state(1, Status::Offline), hello));
        assert_eq!(count(&rx), 1);
        // Old and repeated changes are skipped; a newer one is sent once.
        tabs.changed(5, &state(2, Status::Available));
        tabs.changed(3, &state(1, Status::Offline));
        assert_eq!(count(&rx), 0);
        tabs.changed(9, &state(3, Status::Busy));
        tabs.changed(9, &state(3, Status::Busy));
        assert_eq!(count(&rx), 1);
        // A logout closes the tab and forgets it.
        let mut out = state(4, Status::Offline);
        out.connections = 0;
        out.reason = Some(Reason::AdminLogout);
        tabs.changed(10, &out);
        // The update, `logged_out` and the close.
        assert_eq!(count(&rx), 3);
        assert!(tabs.is_empty());
        assert!(!tabs.remove(&agent, 7), "already gone");
    }
}
