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
//! the owner's answer and what this node saw meanwhile ([`NodeTabs::attached`]); an answer
//! newer than what was seen here goes to the agent's other tabs here first. Each tab
//! remembers the `seq` it has seen, so a change is sent to it once, in order, whether it
//! comes from the followed stream or from the owner's answer to a command or attach
//! (delivered first, so the tab sees its update before its `ok`, as on a single node).
//! A tab that logs out itself gets the logout's update here and then, from its session,
//! `ok`, `logged_out` and the close, as on a single node ([`NodeTabs::logging_out`]).

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
    /// The logout the tab asked for itself, if one is in flight.
    own_logout: OwnLogout,
}

/// Where a tab stands with a logout it asked for itself. As on a single node, that tab
/// gets the logout's update, then its `ok`, then `logged_out` and the close: the last
/// three come from its session, so the change must not close it here.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OwnLogout {
    /// None in flight.
    No,
    /// Sent to the owner: a logout change brings this tab its update, not `logged_out`.
    Asked,
    /// A logout change (with this reason) reached the tab, update only: it gets nothing
    /// more here and is forgotten once its own logout is answered.
    Seen(Reason),
}

/// The tabs of one agent on this node and the newest change of it seen here.
#[derive(Default)]
struct AgentTabs {
    /// The newest change seen while a tab was registered (its `seq` and state).
    last: Option<(u64, AgentState)>,
    tabs: Vec<NodeTab>,
}

impl AgentTabs {
    /// A change numbered `seq`: every attached tab that has not seen it gets its frames
    /// (a logout closes them, but a tab's own logout). Nothing for an older change.
    fn deliver(&mut self, seq: u64, state: &AgentState) {
        let prev = match self.last.take() {
            Some((s, prev)) if s >= seq => {
                self.last = Some((s, prev));
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
        for tab in self.tabs.iter_mut() {
            let done = matches!(tab.own_logout, OwnLogout::Seen(_));
            if done || tab.after.is_none_or(|a| a >= seq) {
                continue;
            }
            let _ = tab.outbox.push(frame.clone());
            if let Some(offer) = &offer {
                let _ = tab.outbox.push(offer.clone());
            }
            tab.after = Some(seq);
        }
        if let Some(reason) = logged_out {
            self.tabs.retain_mut(|tab| {
                if tab.after.is_none() {
                    return true;
                }
                match tab.own_logout {
                    OwnLogout::No => {
                        close(&tab.outbox, reason);
                        false
                    }
                    // Its session answers and closes it (`NodeTabs::logout_answered`).
                    OwnLogout::Asked => {
                        tab.own_logout = OwnLogout::Seen(reason);
                        true
                    }
                    OwnLogout::Seen(_) => true,
                }
            });
        }
        self.last = Some((seq, state.clone()));
    }
}

/// Sends `logged_out` and the close (1000).
fn close(outbox: &Outbox, reason: Reason) {
    let _ = outbox.push(protocol::logged_out(reason));
    let _ = outbox.push_unbounded(Outbound::Close(CLOSE_NORMAL, "logged out"));
}

/// How a tab's own logout was answered.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogoutAnswer {
    /// Done (`ok`): its session sends `logged_out` and closes it.
    Done,
    /// Refused or failed: the tab stays, unless a logout reached it meanwhile.
    Failed,
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
                own_logout: OwnLogout::No,
            });
    }

    /// The owner counted the tab and answered the state (`seq`, `state`): queues `hello`
    /// (and `call_offered` when ringing) from the newest state known here. The answer is
    /// a change the other tabs here may not have seen yet (the followed copy can come
    /// later, and is then skipped): they get it first. False when the tab is no longer
    /// registered.
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
        // The new tab is still pending here, so it is not sent this change twice.
        entry.deliver(seq, state);
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
        let mut found = false;
        self.agents.remove_if_mut(agent, |_, entry| {
            if let Some(i) = entry.tabs.iter().position(|t| t.id == id) {
                entry.tabs.swap_remove(i);
                found = true;
            }
            entry.tabs.is_empty()
        });
        found
    }

    /// Tab `id` sends its own logout: the logout change brings it its update only (its
    /// session sends `ok`, `logged_out` and the close, as on a single node). False if the
    /// tab is not registered.
    pub(crate) fn logging_out(&self, agent: &AgentId, id: u64) -> bool {
        let Some(mut entry) = self.agents.get_mut(agent) else {
            return false;
        };
        match entry.tabs.iter_mut().find(|t| t.id == id) {
            Some(tab) => {
                tab.own_logout = OwnLogout::Asked;
                true
            }
            None => false,
        }
    }

    /// Tab `id`'s own logout (see [`NodeTabs::logging_out`]) was answered: done, the tab
    /// is forgotten; failed, it stays (it gets `logged_out` and the close here if another
    /// logout reached it meanwhile).
    pub(crate) fn logout_answered(&self, agent: &AgentId, id: u64, answer: LogoutAnswer) {
        self.agents.remove_if_mut(agent, |_, entry| {
            if let Some(i) = entry.tabs.iter().position(|t| t.id == id) {
                match (answer, entry.tabs[i].own_logout) {
                    (LogoutAnswer::Done, _) => {
                        entry.tabs.swap_remove(i);
                    }
                    (LogoutAnswer::Failed, OwnLogout::Seen(reason)) => {
                        close(&entry.tabs.swap_remove(i).outbox, reason);
                    }
                    (LogoutAnswer::Failed, _) => entry.tabs[i].own_logout = OwnLogout::No,
                }
            }
            entry.tabs.is_empty()
        });
    }

    /// How many tabs of `agent` on this node are counted at its owner (attached, and not
    /// logged out).
    pub(crate) fn attached_count(&self, agent: &AgentId) -> u32 {
        self.agents.get(agent).map_or(0, |e| {
            let n = e
                .tabs
                .iter()
                .filter(|t| t.after.is_some() && !matches!(t.own_logout, OwnLogout::Seen(_)))
                .count();
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
        guard.deliver(seq, state);
        if guard.tabs.is_empty() {
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

    fn hello() -> HelloParts<'static> {
        HelloParts {
            now: 1,
            epoch: "e",
            node: "n1",
        }
    }

    fn types(rx: &OutboxReceiver) -> Vec<String> {
        std::iter::from_fn(|| rx.try_recv())
            .map(|o| match o {
                Outbound::Frame(t) => {
                    let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                    v["type"].as_str().unwrap().to_owned()
                }
                Outbound::Close(code, _) => format!("close {code}"),
                _ => "other".to_owned(),
            })
            .collect()
    }

    #[test]
    fn an_attach_answered_before_the_followed_copy_still_reaches_the_other_tabs() {
        let tabs = NodeTabs::new();
        let agent = AgentId::parse("a1").unwrap();
        let (first, rx1) = outbox_measured(1 << 20, None);
        tabs.register(&agent, 1, first);
        assert!(tabs.attached(&agent, 1, 3, &state(2, Status::Busy), hello()));
        assert_eq!(count(&rx1), 1);
        // A second tab's attach is answered with change 4 before this node follows it.
        let (second, rx2) = outbox_measured(1 << 20, None);
        tabs.register(&agent, 2, second);
        assert!(tabs.attached(&agent, 2, 4, &state(3, Status::Busy), hello()));
        assert_eq!(types(&rx1), ["agent"], "the first tab gets change 4");
        assert_eq!(types(&rx2), ["hello"]);
        // The followed copy comes later: nobody gets it twice.
        tabs.changed(4, &state(3, Status::Busy));
        assert_eq!(count(&rx1) + count(&rx2), 0);
    }

    #[test]
    fn a_tab_logging_out_itself_gets_the_update_and_is_closed_by_its_session() {
        let tabs = NodeTabs::new();
        let agent = AgentId::parse("a1").unwrap();
        let (mine, rx1) = outbox_measured(1 << 20, None);
        let (other, rx2) = outbox_measured(1 << 20, None);
        tabs.register(&agent, 1, mine);
        tabs.register(&agent, 2, other);
        assert!(tabs.attached(&agent, 1, 3, &state(2, Status::Busy), hello()));
        assert!(tabs.attached(&agent, 2, 3, &state(2, Status::Busy), hello()));
        let _ = (count(&rx1), count(&rx2));
        assert!(tabs.logging_out(&agent, 1));
        let mut out = state(3, Status::Offline);
        out.connections = 0;
        out.reason = Some(Reason::Logout);
        tabs.changed(4, &out);
        assert_eq!(types(&rx1), ["agent"], "update only: its session answers");
        assert_eq!(types(&rx2), ["agent", "logged_out", "close 1000"]);
        assert_eq!(tabs.attached_count(&agent), 0);
        tabs.logout_answered(&agent, 1, LogoutAnswer::Done);
        assert!(tabs.is_empty());
        assert_eq!(count(&rx1), 0);
    }

    #[test]
    fn a_failed_own_logout_keeps_the_tab_unless_a_logout_reached_it() {
        let tabs = NodeTabs::new();
        let agent = AgentId::parse("a1").unwrap();
        let (mine, rx) = outbox_measured(1 << 20, None);
        tabs.register(&agent, 1, mine);
        assert!(tabs.attached(&agent, 1, 3, &state(2, Status::Busy), hello()));
        let _ = count(&rx);
        assert!(tabs.logging_out(&agent, 1));
        tabs.logout_answered(&agent, 1, LogoutAnswer::Failed);
        assert_eq!(tabs.attached_count(&agent), 1, "still served");
        tabs.changed(4, &state(3, Status::Available));
        assert_eq!(types(&rx), ["agent"]);
        // Failed again, but an admin's logout was followed meanwhile: closed here.
        assert!(tabs.logging_out(&agent, 1));
        let mut out = state(4, Status::Offline);
        out.connections = 0;
        out.reason = Some(Reason::AdminLogout);
        tabs.changed(5, &out);
        tabs.logout_answered(&agent, 1, LogoutAnswer::Failed);
        assert_eq!(types(&rx), ["agent", "logged_out", "close 1000"]);
        assert!(tabs.is_empty());
    }
}
