//! One directory for the cluster (cluster mode; guarantee 8 of `docs/cluster.md`): agents
//! and ring groups live in the backplane's directory bucket, not in the node's SQLite.
//!
//! - An API edit on any node is a put or delete in the bucket (validated exactly as on a
//!   single node, by `http::directory`); it is answered once this node's own watch has
//!   applied it, so a read on the same node right after sees it.
//! - Every node follows the bucket ([`run`]): current entries first, then every edit in
//!   revision order, applied to the node's [`LiveDirectory`](super::LiveDirectory) and to
//!   the agent's actor if it runs on this node (the owner starts one for a new agent).
//!   Nothing is forwarded: every node applies every edit itself. Applying an edit twice
//!   changes nothing, so the order of revisions is the only order there is, on every
//!   node.
//! - The `--directory` file seeds the bucket only when nothing was ever written to it (the
//!   first node of a new cluster); each entry is created only if absent, so nodes starting
//!   together cannot overwrite each other or a later edit. A node that finds the bucket in
//!   use says so in its log and uses the cluster's directory.
//! - Until its watch has delivered the bucket as it was when the node connected, the node
//!   is not ready (`/healthz` says "loading the directory").

use bytes::Bytes;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Weak;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::router::never_changed_since;
use super::{profile_of, Hub};
use crate::cluster::{Backplane, ClusterError, DirectoryChange, DirectoryKey};
use crate::directory::{AgentProfile, Directory, RingGroup};
use crate::model::AgentState;

/// How long an API edit waits for this node's watch to apply it before it is answered
/// anyway (it is stored; the watch applies it when it catches up).
pub(crate) const APPLY_WAIT: Duration = Duration::from_secs(2);
/// How long one wait for NATS lasts before the seeding task looks at `stop` again.
const READY_WAIT: Duration = Duration::from_secs(1);

/// What this node knows of its directory watch.
#[derive(Debug)]
pub(crate) struct DirectorySync {
    /// The last revision of the bucket this node applied.
    applied: watch::Sender<u64>,
    /// True once the watch delivered the bucket as it was when the node connected.
    loaded: AtomicBool,
}

impl Default for DirectorySync {
    fn default() -> Self {
        DirectorySync {
            applied: watch::channel(0).0,
            loaded: AtomicBool::new(false),
        }
    }
}

impl DirectorySync {
    /// True once the node's directory reflects the bucket (see the module doc).
    pub(crate) fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Waits (at most [`APPLY_WAIT`]) until this node applied `revision`; false on timeout.
    pub(crate) async fn wait_applied(&self, revision: u64) -> bool {
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(APPLY_WAIT, rx.wait_for(|r| *r >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// An edit of the directory through the bucket, answered once this node applied it.
pub(crate) enum Edit {
    /// Create or replace an agent.
    PutAgent(AgentProfile),
    /// Remove an agent.
    DeleteAgent(crate::model::AgentId),
    /// Create or replace a ring group.
    PutGroup(RingGroup),
    /// Remove a ring group.
    DeleteGroup(String),
}

/// Stores `edit` in the bucket and waits (bounded) until this node's watch applied it.
pub(crate) async fn edit(
    backplane: &Backplane,
    sync: &DirectorySync,
    edit: Edit,
) -> Result<(), ClusterError> {
    // Until then this node cannot tell a creation from a replacement.
    if !sync.loaded() {
        return Err(ClusterError::Unavailable {
            reason: "this node is still loading the cluster's directory".into(),
        });
    }
    let revision = match edit {
        Edit::PutAgent(p) => {
            let key = DirectoryKey::Agent(p.id.clone());
            backplane.directory_put(&key, encode(&p)?).await?
        }
        Edit::PutGroup(g) => {
            let key = DirectoryKey::Group(g.id.clone());
            backplane.directory_put(&key, encode(&g)?).await?
        }
        Edit::DeleteAgent(id) => {
            backplane.directory_delete(&DirectoryKey::Agent(id)).await?;
            backplane.directory_revision().await?.0
        }
        Edit::DeleteGroup(id) => {
            backplane.directory_delete(&DirectoryKey::Group(id)).await?;
            backplane.directory_revision().await?.0
        }
    };
    if !sync.wait_applied(revision).await {
        warn!(
            revision,
            "a directory edit is stored but this node's watch has not applied it yet"
        );
    }
    Ok(())
}

fn encode(value: &impl serde::Serialize) -> Result<Bytes, ClusterError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| ClusterError::Refused(format!("cannot encode a directory entry: {e}")))
}

/// Seeds the bucket from the `--directory` file if it was never written, then follows it
/// and applies every edit to the hub, until `stop`.
pub(crate) async fn run(
    hub: Weak<Hub>,
    backplane: Backplane,
    seed: Directory,
    stop: CancellationToken,
) {
    let target = tokio::select! {
        () = stop.cancelled() => return,
        t = seed_and_measure(&backplane, &seed) => t,
    };
    let mut changes = backplane.directory_watch();
    let sync = match hub
        .upgrade()
        .and_then(|h| h.cluster().map(|c| c.directory_sync()))
    {
        Some(s) => s,
        None => return,
    };
    if target == 0 {
        sync.loaded.store(true, Ordering::Release);
    }
    loop {
        let change = tokio::select! {
            () = stop.cancelled() => return,
            c = changes.recv() => c,
        };
        let Some(change) = change else { return };
        let Some(hub) = hub.upgrade() else { return };
        let revision = change.revision;
        apply(&hub, change).await;
        sync.applied.send_replace(revision);
        if revision >= target {
            sync.loaded.store(true, Ordering::Release);
        }
    }
}

/// Waits for NATS, seeds an empty bucket from `seed`, and returns the bucket's revision
/// then (what the node must have applied to be loaded).
async fn seed_and_measure(backplane: &Backplane, seed: &Directory) -> u64 {
    loop {
        if backplane.ready(READY_WAIT).await.is_err() {
            continue;
        }
        match seed_once(backplane, seed).await {
            Ok(revision) => return revision,
            Err(e) => {
                warn!(error = %e, "could not read or seed the cluster's directory; retrying");
                tokio::time::sleep(READY_WAIT).await;
            }
        }
    }
}

async fn seed_once(backplane: &Backplane, seed: &Directory) -> Result<u64, ClusterError> {
    let (_, written) = backplane.directory_revision().await?;
    if written {
        if !seed.agents.is_empty() || !seed.ring_groups.is_empty() {
            info!("the cluster's directory is in use: the --directory file is not applied (it seeds an empty cluster only; edit the directory with the directory API)");
        }
    } else {
        let mut created = 0usize;
        for p in seed.agents.values() {
            let key = DirectoryKey::Agent(p.id.clone());
            created += usize::from(backplane.directory_create(&key, encode(p)?).await?);
        }
        for g in seed.ring_groups.values() {
            let key = DirectoryKey::Group(g.id.clone());
            created += usize::from(backplane.directory_create(&key, encode(g)?).await?);
        }
        info!(
            entries = created,
            "seeded the cluster's directory from the --directory file"
        );
    }
    Ok(backplane.directory_revision().await?.0)
}

/// Applies one edit to the live directory and the actors. An entry this hub cannot read
/// is logged and skipped.
async fn apply(hub: &Hub, change: DirectoryChange) {
    match (change.key, change.value) {
        (DirectoryKey::Agent(id), Some(value)) => {
            let profile = match decode::<AgentProfile>(&value).and_then(|p| {
                if p.id == id {
                    p.validated().map_err(|e| e.to_string())
                } else {
                    Err(format!("the entry's id {} is not its key's", p.id))
                }
            }) {
                Ok(p) => p,
                Err(e) => {
                    warn!(agent = %id, error = %e, "skipping a directory entry this hub cannot use");
                    return;
                }
            };
            // Listed (offline) in this node's view until the stream says otherwise, with the
            // cluster's start as `since` (the same on every node, and what the owner's
            // actor starts with); an agent the view holds already keeps its state.
            let since = hub
                .cluster()
                .and_then(|c| never_changed_since(c.backplane()))
                .unwrap_or_else(|| hub.clock().now_ms());
            let mut state = AgentState::new(id.clone(), since);
            state.name = profile.name.clone();
            state.teams = profile.teams.clone();
            hub.fanout().register(&state);
            let changed = hub.directory().agents.get(&id) != Some(&profile);
            if !changed {
                return;
            }
            hub.directory_mut()
                .agents
                .insert(id.clone(), profile.clone());
            // A live actor here takes the profile; the owner starts one if it has none (an
            // actor started later reads the profile from the directory). Nothing is
            // forwarded: every node applies every edit.
            let router = hub.router();
            let live = router.local_profile(&id, Some(profile_of(&profile))).await;
            if !live && hub.cluster().is_some_and(|c| c.owns(&id)) {
                router.profile_changed(&id, profile_of(&profile)).await;
            }
        }
        (DirectoryKey::Agent(id), None) => {
            let removed = hub.directory_mut().agents.remove(&id).is_some();
            if removed {
                hub.router().local_profile(&id, None).await;
                // An agent only listed from the directory (nothing ever stored for it)
                // leaves the view with its entry.
                if let Some(p) = hub.fanout().get(&id).filter(|p| p.version == 0) {
                    hub.fanout().forget(&p);
                }
            }
        }
        (DirectoryKey::Group(id), Some(value)) => {
            match decode::<RingGroup>(&value).and_then(|g| {
                if g.id == id {
                    g.validated().map_err(|e| e.to_string())
                } else {
                    Err(format!("the entry's id {} is not its key's", g.id))
                }
            }) {
                Ok(g) => {
                    hub.directory_mut().ring_groups.insert(id, g);
                }
                Err(e) => {
                    warn!(ring_group = %id, error = %e, "skipping a directory entry this hub cannot use");
                }
            }
        }
        (DirectoryKey::Group(id), None) => {
            hub.directory_mut().ring_groups.remove(&id);
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(value: &[u8]) -> Result<T, String> {
    serde_json::from_slice(value).map_err(|e| e.to_string())
}

impl Hub {
    /// Cluster mode: `unavailable` until this node has loaded the cluster's directory (it
    /// cannot check an edit against it before); `Ok` on a single node.
    pub(crate) fn cluster_directory_ready(&self) -> Result<(), crate::cluster::ClusterError> {
        match &self.cluster {
            Some(c) if !c.directory_sync().loaded() => {
                Err(crate::cluster::ClusterError::Unavailable {
                    reason: "this node is still loading the cluster's directory".into(),
                })
            }
            _ => Ok(()),
        }
    }

    /// Cluster mode: stores a directory edit in the cluster's directory and waits (bounded)
    /// until this node applied it, so a read here right after sees it. `None` on a single
    /// node, where the caller commits the edit to the store itself.
    pub(crate) async fn cluster_directory_edit(
        &self,
        edit: Edit,
    ) -> Option<Result<(), crate::cluster::ClusterError>> {
        let c = self.cluster.as_ref()?;
        let sync = c.directory_sync();
        Some(self::edit(c.backplane(), &sync, edit).await)
    }
}
