//! Cluster-wide deduplication of telephony events: one create-only key per `event_id` in a
//! KV bucket whose `max_age` (5 h by default, at least the contract's 4 h) is the memory.
//!
//! The node that handles an event first [`claims`](Backplane::dedup_claim) its id: a KV
//! create, which JetStream performs only if the key does not exist (expected last subject
//! sequence 0), so of two nodes claiming one id at once exactly one gets
//! [`Claim::New`]. That node applies the event and stores its reply with
//! [`complete`](Backplane::dedup_complete); everyone else gets [`Claim::Duplicate`] with the
//! stored reply (or `Pending` while the first node is still applying it, which the hub
//! answers `unavailable`, retryable). If the first node cannot apply the event it
//! [`releases`](Backplane::dedup_release) the claim, so a retry is applied. A claim left
//! pending by a node that is gone can be [taken over](Backplane::dedup_take_over).

use super::naming::token;
use super::{Backplane, ClusterError};
use async_nats::jetstream::kv::{self, CreateErrorKind};
use bytes::{BufMut, Bytes, BytesMut};

/// Marks a claimed id whose reply is not stored yet; followed by the claiming node's id.
const PENDING: u8 = b'P';
/// Marks an id answered; followed by the reply.
const DONE: u8 = b'D';

/// Longest event id accepted as a key, in bytes: the protocol's 256 characters of UTF-8
/// (escaped, at most 3 KiB of key: within NATS's 4 KiB control line).
const MAX_EVENT_ID: usize = 1024;

/// The outcome of claiming an event id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This node is the first: apply the event, then complete or release the claim.
    New(ClaimToken),
    /// The id was claimed before (by any node).
    Duplicate(DedupRecord),
}

/// Proof of a claim, needed to complete or release it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimToken {
    /// The KV key.
    key: String,
    /// The revision the claim was stored at: completing and releasing expect it, so only
    /// the claimer can do either.
    revision: u64,
}

/// What is stored for an id claimed before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DedupRecord {
    /// Claimed by `node`, which has not stored the reply yet.
    Pending {
        /// The claiming node.
        node: String,
    },
    /// Answered: the reply the first node sent.
    Done {
        /// The stored reply, as the first node serialized it.
        reply: Bytes,
    },
}

impl DedupRecord {
    fn decode(value: &[u8]) -> Result<Self, ClusterError> {
        match value.split_first() {
            Some((&PENDING, node)) => Ok(DedupRecord::Pending {
                node: String::from_utf8_lossy(node).into_owned(),
            }),
            Some((&DONE, reply)) => Ok(DedupRecord::Done {
                reply: Bytes::copy_from_slice(reply),
            }),
            _ => Err(ClusterError::Refused(
                "dedup bucket holds a value this hub did not write".into(),
            )),
        }
    }
}

fn tagged(tag: u8, body: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(1 + body.len());
    b.put_u8(tag);
    b.put_slice(body);
    b.freeze()
}

impl Backplane {
    /// Claims `event_id` for this node (module doc).
    pub async fn dedup_claim(&self, event_id: &str) -> Result<Claim, ClusterError> {
        if event_id.is_empty() || event_id.len() > MAX_EVENT_ID {
            return Err(ClusterError::Refused(format!(
                "event_id must be 1..={MAX_EVENT_ID} bytes"
            )));
        }
        let session = self.link.session()?;
        let store = &session.h.dedup;
        let key = token(event_id);
        let claim = tagged(PENDING, self.config.node_id.as_str().as_bytes());
        match store.create(&key, claim).await {
            Ok(revision) => Ok(Claim::New(ClaimToken { key, revision })),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                match store.entry(&key).await.map_err(ClusterError::unavailable)? {
                    Some(entry) if entry.operation == kv::Operation::Put => {
                        Ok(Claim::Duplicate(DedupRecord::decode(&entry.value)?))
                    }
                    // Released (or expired) between the create and the read: a retry
                    // will claim it.
                    _ => Err(ClusterError::unavailable(
                        "event id released while being read; retry",
                    )),
                }
            }
            Err(e) => Err(ClusterError::unavailable(e)),
        }
    }

    /// Takes over the claim of `event_id` left pending by `node` (a node that is gone, so
    /// it will never store the reply nor release it): the pending claim is deleted
    /// (expecting its revision, so of two nodes taking it over one deletes it) and the id
    /// claimed again. Answers like [`Backplane::dedup_claim`]: `New` for the node that now
    /// holds the claim; `Duplicate` when the id is held otherwise (answered meanwhile, or
    /// claimed by another node).
    pub async fn dedup_take_over(&self, event_id: &str, node: &str) -> Result<Claim, ClusterError> {
        let session = self.link.session()?;
        let store = &session.h.dedup;
        let key = token(event_id);
        let entry = store.entry(&key).await.map_err(ClusterError::unavailable)?;
        if let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) {
            let abandoned = matches!(
                DedupRecord::decode(&entry.value)?,
                DedupRecord::Pending { node: ref n } if n == node
            );
            if abandoned {
                // Refused when someone else deleted or replaced it first: the claim below
                // then sees what is there now.
                let _ = store
                    .delete_expect_revision(&key, Some(entry.revision))
                    .await;
            }
        }
        self.dedup_claim(event_id).await
    }

    /// Stores the reply of a claimed event: later duplicates get it.
    pub async fn dedup_complete(
        &self,
        token: ClaimToken,
        reply: &[u8],
    ) -> Result<(), ClusterError> {
        let session = self.link.session()?;
        session
            .h
            .dedup
            .update(&token.key, tagged(DONE, reply), token.revision)
            .await
            .map(|_| ())
            .map_err(ClusterError::unavailable)
    }

    /// Gives a claim up (the event was not applied), so a retry of it is applied.
    pub async fn dedup_release(&self, token: ClaimToken) -> Result<(), ClusterError> {
        let session = self.link.session()?;
        session
            .h
            .dedup
            .delete_expect_revision(&token.key, Some(token.revision))
            .await
            .map_err(ClusterError::unavailable)
    }
}
