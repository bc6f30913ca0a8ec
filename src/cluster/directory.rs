//! The one directory of agents and ring groups: a KV bucket (`<prefix>_directory`, file
//! storage, replicated), keys `agent.<id>` and `group.<id>`, values as the hub serializes
//! them. An edit on any node is a KV put or delete; every node follows the bucket with a
//! watch and so sees the edit as soon as JetStream delivers it (milliseconds in a healthy
//! cluster; the contract asks for under a second).
//!
//! [`Backplane::directory_watch`] survives NATS outages: after a new session it resumes the
//! watch from the revision after the last one it delivered, so no edit is missed or repeated.

use super::naming::{token, untoken};
use super::{Backplane, ClusterError};
use crate::model::AgentId;
use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tracing::warn;

/// Capacity of the channel of a directory watch (edits are rare; a full channel makes the
/// watch task wait, never drop an edit).
const WATCH_CAPACITY: usize = 1024;

/// A directory entry's key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DirectoryKey {
    /// An agent's entry.
    Agent(AgentId),
    /// A ring group's entry.
    Group(String),
}

impl DirectoryKey {
    fn to_kv(&self) -> String {
        match self {
            DirectoryKey::Agent(a) => format!("agent.{}", token(a.as_str())),
            DirectoryKey::Group(g) => format!("group.{}", token(g)),
        }
    }

    fn from_kv(key: &str) -> Option<Self> {
        let (kind, tok) = key.split_once('.')?;
        let raw = untoken(tok)?;
        match kind {
            "agent" => AgentId::parse(&raw).ok().map(DirectoryKey::Agent),
            "group" => Some(DirectoryKey::Group(raw)),
            _ => None,
        }
    }
}

/// One edit of the directory, as every node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryChange {
    /// Which entry.
    pub key: DirectoryKey,
    /// The new value; `None` when the entry was removed.
    pub value: Option<Bytes>,
    /// The bucket's revision of this edit (increasing).
    pub revision: u64,
}

impl Backplane {
    /// Stores an entry; returns its revision.
    pub async fn directory_put(
        &self,
        key: &DirectoryKey,
        value: Bytes,
    ) -> Result<u64, ClusterError> {
        let session = self.link.session()?;
        session
            .h
            .directory
            .put(key.to_kv(), value)
            .await
            .map_err(ClusterError::unavailable)
    }

    /// Removes an entry.
    pub async fn directory_delete(&self, key: &DirectoryKey) -> Result<(), ClusterError> {
        let session = self.link.session()?;
        session
            .h
            .directory
            .delete(key.to_kv())
            .await
            .map_err(ClusterError::unavailable)
    }

    /// Stores an entry only if the key was never written or was deleted: `Ok(true)` when
    /// it was stored, `Ok(false)` when the key has a value (seeding from a file never
    /// overwrites an edit).
    pub async fn directory_create(
        &self,
        key: &DirectoryKey,
        value: Bytes,
    ) -> Result<bool, ClusterError> {
        let session = self.link.session()?;
        match session.h.directory.create(key.to_kv(), value).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(ClusterError::unavailable(e)),
        }
    }

    /// The bucket's last revision and whether anything was ever written to it, asked of
    /// the stream leader: a node whose watch delivered this revision has every edit made
    /// before the call.
    pub async fn directory_revision(&self) -> Result<(u64, bool), ClusterError> {
        let session = self.link.session()?;
        let info = session
            .h
            .directory
            .stream
            .get_info()
            .await
            .map_err(ClusterError::unavailable)?;
        Ok((info.state.last_sequence, info.state.messages > 0))
    }

    /// Reads an entry (from the stream leader).
    pub async fn directory_get(&self, key: &DirectoryKey) -> Result<Option<Bytes>, ClusterError> {
        let session = self.link.session()?;
        session
            .h
            .directory
            .get(key.to_kv())
            .await
            .map_err(ClusterError::unavailable)
    }

    /// Follows the directory: first every current entry, then every edit, in revision order,
    /// across NATS outages. The watch ends when the receiver is dropped or the backplane
    /// stops.
    pub fn directory_watch(&self) -> mpsc::Receiver<DirectoryChange> {
        let (tx, rx) = mpsc::channel(WATCH_CAPACITY);
        let mut sessions = self.link.sessions();
        tokio::spawn(async move {
            let mut last_revision = 0u64;
            while let Some(session) = sessions.up().await {
                let store = &session.h.directory;
                let watch = if last_revision == 0 {
                    store.watch_with_history(">").await
                } else {
                    store.watch_all_from_revision(last_revision + 1).await
                };
                let mut watch = match watch {
                    Ok(w) => w,
                    Err(e) => {
                        warn!(error = %e, "directory watch could not start; retrying");
                        sessions.pause(session.generation).await;
                        continue;
                    }
                };
                loop {
                    let entry = tokio::select! {
                        e = watch.next() => e,
                        _ = sessions.ended(session.generation) => None,
                    };
                    let Some(Ok(entry)) = entry else { break };
                    last_revision = entry.revision;
                    let Some(change) = change_of(&entry) else {
                        warn!(key = %entry.key, "directory bucket holds a key this hub did not write");
                        continue;
                    };
                    if tx.send(change).await.is_err() {
                        return;
                    }
                }
                sessions.pause(session.generation).await;
            }
        });
        rx
    }
}

fn change_of(entry: &kv::Entry) -> Option<DirectoryChange> {
    Some(DirectoryChange {
        key: DirectoryKey::from_kv(&entry.key)?,
        value: match entry.operation {
            Operation::Put => Some(entry.value.clone()),
            Operation::Delete | Operation::Purge => None,
        },
        revision: entry.revision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        for k in [
            DirectoryKey::Agent(AgentId::parse("ann.lee@x").unwrap()),
            DirectoryKey::Group("sales.eu".into()),
        ] {
            assert_eq!(DirectoryKey::from_kv(&k.to_kv()), Some(k));
        }
        assert_eq!(DirectoryKey::from_kv("other.x"), None);
    }
}
