//! What only some agent actors hold: open tabs (sockets on this node), tabs counted per
//! node (cluster mode) and a profile's wrap-up override, behind one pointer.
//!
//! Why one pointer: every agent's task holds the actor, and tokio rounds a task cell up to
//! 128 bytes; the actor's future must stay at or below 272 bytes to keep the cell at 384
//! (`tests::the_actor_task_stays_small`). Inline these were 16 + 8 + 8 bytes; here they are
//! 8, and a 48-byte allocation exists only while one of them is set (an actor with none of
//! them stops once idle).

use super::{NodeTabs, Tab};
use crate::agent::handle::TabId;

/// The actor's tabs, node tabs and wrap-up override (see the module doc).
#[derive(Default)]
pub(super) struct Extras(Option<Box<Parts>>);

#[derive(Default)]
struct Parts {
    /// Open sockets of this agent on this node; every one gets every update, in order. A
    /// boxed slice: no spare capacity.
    tabs: Box<[Tab]>,
    /// Cluster mode: open tabs per node (tabs there have no outbox here; their node makes
    /// their frames from the followed stream). `state.connections` is the sum.
    node_tabs: NodeTabs,
    /// The profile's wrap-up override (its name and teams live in the actor's state).
    wrap_up_ms: Option<u32>,
}

impl Extras {
    /// With a profile's wrap-up override.
    pub(super) fn with_wrap_up(wrap_up_ms: Option<u32>) -> Extras {
        let mut extras = Extras::default();
        extras.set_wrap_up_ms(wrap_up_ms);
        extras
    }

    /// The open tabs on this node.
    pub(super) fn tabs(&self) -> &[Tab] {
        self.0.as_deref().map_or(&[], |p| &p.tabs)
    }

    /// Adds an open tab.
    pub(super) fn push_tab(&mut self, tab: Tab) {
        let parts = self.0.get_or_insert_with(Box::default);
        let mut tabs = std::mem::take(&mut parts.tabs).into_vec();
        tabs.reserve_exact(1);
        tabs.push(tab);
        parts.tabs = tabs.into_boxed_slice();
    }

    /// Removes the tab `id`; true if it was open.
    pub(super) fn remove_tab(&mut self, id: TabId) -> bool {
        let Some(parts) = self.0.as_deref_mut() else {
            return false;
        };
        let before = parts.tabs.len();
        let mut tabs = std::mem::take(&mut parts.tabs).into_vec();
        tabs.retain(|t| t.id != id);
        let removed = tabs.len() < before;
        parts.tabs = tabs.into_boxed_slice();
        self.tidy();
        removed
    }

    /// Takes every open tab out.
    pub(super) fn take_tabs(&mut self) -> Vec<Tab> {
        let tabs = match self.0.as_deref_mut() {
            Some(parts) => std::mem::take(&mut parts.tabs).into_vec(),
            None => Vec::new(),
        };
        self.tidy();
        tabs
    }

    /// Cluster mode: the open tabs per node, `None` when there are none.
    pub(super) fn node_tabs(&self) -> Option<&NodeTabs> {
        self.0
            .as_deref()
            .map(|p| &p.node_tabs)
            .filter(|t| !t.is_empty())
    }

    /// Cluster mode: replaces the open tabs per node.
    pub(super) fn set_node_tabs(&mut self, tabs: NodeTabs) {
        if tabs.is_empty() && self.0.is_none() {
            return;
        }
        self.0.get_or_insert_with(Box::default).node_tabs = tabs;
        self.tidy();
    }

    /// The profile's wrap-up override.
    pub(super) fn wrap_up_ms(&self) -> Option<u32> {
        self.0.as_deref().and_then(|p| p.wrap_up_ms)
    }

    /// Replaces the profile's wrap-up override.
    pub(super) fn set_wrap_up_ms(&mut self, ms: Option<u32>) {
        if ms.is_none() && self.0.is_none() {
            return;
        }
        self.0.get_or_insert_with(Box::default).wrap_up_ms = ms;
        self.tidy();
    }

    /// Frees the allocation once nothing is held.
    fn tidy(&mut self) {
        if self
            .0
            .as_deref()
            .is_some_and(|p| p.tabs.is_empty() && p.node_tabs.is_empty() && p.wrap_up_ms.is_none())
        {
            self.0 = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::NodeId;

    fn tab(outbox: &crate::outbox::Outbox) -> Tab {
        Tab {
            id: TabId::next(),
            outbox: outbox.clone(),
        }
    }

    #[test]
    fn holds_memory_only_while_something_is_set() {
        let (outbox, _rx) = crate::outbox::outbox(1024);
        let mut extras = Extras::with_wrap_up(None);
        assert!(extras.0.is_none());
        let (a, b) = (tab(&outbox), tab(&outbox));
        let (a_id, b_id) = (a.id, b.id);
        extras.push_tab(a);
        extras.push_tab(b);
        assert_eq!(extras.tabs().len(), 2);
        assert!(!extras.remove_tab(TabId::next()), "not one of its tabs");
        assert!(extras.remove_tab(a_id));
        assert_eq!(
            extras.tabs().iter().map(|t| t.id).collect::<Vec<_>>(),
            [b_id]
        );
        extras.set_wrap_up_ms(Some(5_000));
        assert!(extras.remove_tab(b_id));
        assert_eq!(extras.wrap_up_ms(), Some(5_000), "the override stays");
        assert!(extras.0.is_some());
        extras.set_wrap_up_ms(None);
        assert!(extras.0.is_none(), "nothing held: freed");

        let node = NodeId::parse("n1").expect("a node id");
        extras.set_node_tabs(NodeTabs::from([(node.clone(), 2)]));
        assert_eq!(extras.node_tabs().and_then(|t| t.get(&node)), Some(&2));
        extras.set_node_tabs(NodeTabs::new());
        assert!(extras.node_tabs().is_none());
        assert!(extras.0.is_none());
        let tab = tab(&outbox);
        extras.push_tab(tab);
        assert_eq!(extras.take_tabs().len(), 1);
        assert!(extras.0.is_none());
    }
}
