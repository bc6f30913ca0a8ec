//! The actor in cluster mode, its tabs per node: every tab of the agent, on whichever node,
//! is served by its own node (`fanout::tabs`) and only counted here, per node, in the
//! stored record (`ClusterRecord.tabs`; `connections` is their sum). The counts change
//! with the change they cause (a tab's opening or closing), in the same fenced append.

use super::cluster::Then;
use super::{After, AgentActor, NodeTabs};
use crate::cluster::NodeId;
use crate::model::Session;

impl AgentActor {
    /// Closes the tabs counted on nodes not in `alive` (one change; the disconnect grace
    /// starts now if no tab is left).
    pub(super) fn close_lost_nodes(&mut self, alive: &[NodeId]) -> After {
        let Some(current) = self.extras.node_tabs() else {
            return After::Continue;
        };
        let tabs: NodeTabs = current
            .iter()
            .filter(|(n, _)| alive.contains(n))
            .map(|(n, c)| (n.clone(), *c))
            .collect();
        if tabs == *current {
            return After::Continue;
        }
        let mut next = self.state.clone();
        next.connections = tabs.values().sum();
        if next.connections == 0 && next.session == Session::Connected {
            let grace = self.policy().disconnect_grace_ms;
            next.session = Session::Grace {
                until: self.env.clock().now_ms().saturating_add(grace),
            };
        }
        next.version += 1;
        self.append(next, Vec::new(), None, Then::Tabs { tabs }, None)
    }

    /// The open tabs per node once `then` counts, for a change leaving `connections`.
    pub(super) fn tabs_after(&self, then: &Then, connections: u32) -> NodeTabs {
        if connections == 0 {
            // Logged out, or every tab closed.
            return NodeTabs::new();
        }
        let mut tabs = self.extras.node_tabs().cloned().unwrap_or_default();
        match then {
            Then::AttachNode { node, .. } => *tabs.entry(node.clone()).or_default() += 1,
            Then::DetachNode { node } => {
                if let Some(n) = tabs.get_mut(node) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        tabs.remove(node);
                    }
                }
            }
            Then::Tabs { tabs: after } => tabs = after.clone(),
            _ => {}
        }
        tabs
    }
}
