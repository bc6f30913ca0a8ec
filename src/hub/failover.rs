//! Cluster mode: how a node reacts to changes of the member view, and its background
//! tasks (the forward listener, the member watch).
//!
//! When the view changes, each node:
//! - drops the local actors of agents it no longer owns (a node joined, or this node's view
//!   caught up): their next append would be fenced anyway, and the new owner loads the
//!   agent's last stored change;
//! - (the takeover of the agents it now owns that need an actor now, those with tabs, a
//!   call or a timer, is `adopt` in `hub/mod.rs`: from the followed view's live agents);
//! - tells every local actor which nodes are alive: tabs counted on a node that left are
//!   closed (the disconnect grace starts from this detection), so a tab that reconnects to
//!   any node within the grace keeps the agent's status.

use std::sync::Arc;
use std::time::Duration;
use tracing::info;

use super::Hub;
use crate::cluster::{Members, NodeId};

/// Starts the forward listener and the member watch of a cluster node (no-op on a single
/// node). Both end with the backplane or at shutdown.
pub(crate) fn start(hub: &Arc<Hub>) {
    if hub.cluster().is_none() {
        return;
    }
    hub.tasks().spawn(listen(hub.clone()));
    hub.tasks().spawn(watch_members(hub.clone()));
}

/// Listens for commands forwarded to this node (retrying until NATS is reachable), then
/// serves them until the backplane stops: after a clean leave it still answers while the
/// others notice (`ClusterNode::leave`).
async fn listen(hub: Arc<Hub>) {
    let Some(cluster) = hub.cluster() else {
        return;
    };
    let backplane = cluster.backplane().clone();
    let inbox = loop {
        if cluster.is_stopped() {
            return;
        }
        match backplane.forwarded().await {
            Ok(inbox) => break inbox,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    info!("listening for commands forwarded by other nodes");
    super::remote::serve(hub.clone(), inbox).await;
}

/// Follows the member view and reacts to each change (module doc).
async fn watch_members(hub: Arc<Hub>) {
    let Some(cluster) = hub.cluster() else {
        return;
    };
    let mut view = cluster.members_watch();
    let stop = hub.shutdown().clone();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            changed = view.changed() => if changed.is_err() { return },
        }
        let members = view.borrow_and_update().clone();
        members_changed(&hub, cluster.node_id(), &members).await;
    }
}

/// The reaction to one new view (module doc).
pub(crate) async fn members_changed(hub: &Hub, me: &NodeId, members: &Members) {
    if !members.nodes().contains(me) {
        // Cut off (or not joined yet): the others will own this node's agents; its actors'
        // appends are fenced from the moment they do.
        return;
    }
    let router = hub.router();
    let dropped = router.drop_unowned();
    let alive: Arc<[NodeId]> = members.nodes().into();
    router.nodes_alive(alive).await;
    info!(
        members = ?members.nodes(),
        dropped,
        "member view changed: actors of agents owned elsewhere dropped, tabs of gone nodes closed"
    );
}

/// A clean stop of a cluster node, after its sockets were told to close (1001): waits
/// (bounded) until its tabs are counted off at their owners, then leaves the members and
/// keeps answering forwarded commands until the others have noticed. The tabs reconnect
/// to other nodes within the disconnect grace and keep the agent's status.
pub(crate) async fn clean_stop(hub: &Hub, deadline: tokio::time::Instant) {
    let Some(cluster) = hub.cluster() else {
        return;
    };
    if let Some(tabs) = hub.router().node_tabs() {
        let until = (tokio::time::Instant::now() + TABS_DETACH_WAIT).min(deadline);
        while !tabs.is_empty() && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    cluster.leave(deadline).await;
}

/// How long a clean stop waits for its tabs to be counted off at their owners.
const TABS_DETACH_WAIT: Duration = Duration::from_secs(2);
