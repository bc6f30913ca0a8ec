//! Cluster-wide deduplication of telephony events (cluster mode; guarantee 7 of
//! `docs/cluster.md`).
//!
//! The node that receives an event first looks in its own event-id memory (the fast path:
//! a repeat sent to the same node costs no round trip), then *claims* the id in the dedup
//! bucket (a create-only key, so of two nodes claiming one id at once exactly one wins):
//!
//! - the winner routes the event as a single node would, stores the reply on the key once
//!   the agent's actor answered, and only then answers the adapter: a copy sent anywhere
//!   after that answer is a `duplicate` with the same reply;
//! - a claim that finds a stored reply answers `duplicate: true` with it (and remembers it
//!   in this node's memory too);
//! - a claim that finds the id still *pending* (the winner is applying it) is answered
//!   `unavailable` (retryable): the retry gets the stored reply;
//! - when the winner cannot apply the event (`unavailable`, the actor gone, the hub
//!   stopping) it deletes its claim, so a retry is applied.
//!
//! A winner that dies (or leaves) between its claim and storing the reply leaves the id
//! pending: a node that finds it pending on a node no longer among the live members waits
//! until its own view has caught up with the stream, then answers from its event-id memory
//! if the event's change was stored (the stream carries the event's reply with the change,
//! and the follower remembers it), and otherwise takes the claim over and applies the
//! event. Storing a reply that failed is retried in the background for a while; meanwhile
//! copies are answered `unavailable`.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tracing::warn;

use super::cluster::{ClusterNode, RETRY_AFTER_MS};
use super::cluster_directory::DirectorySync;
use super::route::RouteError;
use super::router::{Dispatched, Router};
use super::view::View;
use crate::agent::TelephonyAnswer;
use crate::cluster::{Backplane, Claim, ClaimToken, ClusterError, DedupRecord, Members};
use crate::protocol::{ErrorCode, StoredReply};
use crate::store::dedup::EventIdCache;

/// How often, and how many times, storing a reply on its claim is retried when it failed
/// (NATS lost right after the event was applied): about a minute in all.
const COMPLETE_RETRY_EVERY: Duration = Duration::from_secs(2);
const COMPLETE_RETRIES: u32 = 30;

/// The cluster-wide event-id memory of one node.
#[derive(Clone)]
pub(crate) struct ClusterDedup {
    /// The dedup bucket.
    backplane: Backplane,
    /// This node's own memory (the router's and its actors'): the fast path, and where a
    /// reply learnt from the bucket or from a forwarded event is kept.
    events: Arc<EventIdCache>,
    /// Until the node has the cluster's directory, an event for a directory agent would be
    /// answered `unknown_agent`, and that answer stored for every node: events wait.
    directory: Arc<DirectorySync>,
    /// The live members: a claim pending on a node that left can be taken over.
    members: watch::Receiver<Members>,
    /// This node's view of the agents stream: caught up, its event-id memory holds every
    /// event whose change was stored (the follower fills it), which tells an abandoned
    /// claim that was applied from one that was not.
    view: Arc<View>,
}

impl ClusterDedup {
    pub(crate) fn new(node: &ClusterNode, events: Arc<EventIdCache>) -> Self {
        ClusterDedup {
            backplane: node.backplane().clone(),
            events,
            directory: node.directory_sync(),
            members: node.members_watch(),
            view: node.view().clone(),
        }
    }

    /// Routes one checked telephony event with cluster-wide deduplication (module doc).
    /// `dispatch` is the single node's routing of it.
    pub(super) async fn telephony<F>(
        &self,
        router: &Router,
        event_id: &str,
        dispatch: F,
    ) -> Result<Dispatched, RouteError>
    where
        F: std::future::Future<Output = Result<Dispatched, RouteError>>,
    {
        if let Some(reply) = self.events.get(event_id) {
            return Ok(Dispatched::Answered(router.duplicate(reply)));
        }
        if !self.directory.loaded() {
            return Err(RouteError::Backplane {
                retry_after_ms: RETRY_AFTER_MS,
            });
        }
        let mut claim = self.backplane.dedup_claim(event_id).await;
        if let Ok(Claim::Duplicate(DedupRecord::Pending { node })) = &claim {
            if self.abandoned(node) {
                match self.orphan(event_id, node).await? {
                    Orphan::Applied(reply) => {
                        return Ok(Dispatched::Answered(router.duplicate(reply)))
                    }
                    Orphan::Claimed(c) => claim = c,
                }
            }
        }
        let token = match claim {
            Ok(Claim::New(token)) => token,
            Ok(Claim::Duplicate(DedupRecord::Done { reply })) => {
                let reply = decode(&reply).ok_or_else(|| {
                    warn!(
                        event_id,
                        "the dedup bucket holds a reply this hub cannot read"
                    );
                    RouteError::Backplane {
                        retry_after_ms: RETRY_AFTER_MS,
                    }
                })?;
                self.events.insert(event_id, reply.clone());
                return Ok(Dispatched::Answered(router.duplicate(reply)));
            }
            Ok(Claim::Duplicate(DedupRecord::Pending { .. })) => {
                return Err(RouteError::EventInFlight {
                    retry_after_ms: RETRY_AFTER_MS,
                })
            }
            Err(e) => return Err(unavailable(event_id, &e)),
        };
        match dispatch.await {
            Ok(Dispatched::Answered(answer)) => {
                self.settle(event_id, token, &answer).await;
                Ok(Dispatched::Answered(answer))
            }
            Ok(Dispatched::Pending(pending)) => {
                let (tx, rx) = oneshot::channel();
                let this = self.clone();
                let event_id = event_id.to_owned();
                tokio::spawn(async move {
                    match pending.await {
                        Ok(Ok(answer)) => {
                            this.settle(&event_id, token, &answer).await;
                            let _ = tx.send(Ok(answer));
                        }
                        // Not applied (not stored, or the agent moved): a retry must be.
                        Ok(Err(e)) => {
                            this.release(&event_id, token).await;
                            let _ = tx.send(Err(e));
                        }
                        // The actor is gone without answering: nothing was applied.
                        Err(_) => this.release(&event_id, token).await,
                    }
                });
                Ok(Dispatched::Pending(rx))
            }
            Err(e) => {
                self.release(event_id, token).await;
                Err(e)
            }
        }
    }

    /// True when `node`, which holds a pending claim, is neither this node nor a live member:
    /// it will never store the reply (it died, or left, between its claim and its reply).
    fn abandoned(&self, node: &str) -> bool {
        node != self.backplane.config().node_id.as_str()
            && !self
                .members
                .borrow()
                .nodes()
                .iter()
                .any(|n| n.as_str() == node)
    }

    /// A claim abandoned by `node`: once this node's view has caught up with the stream, an
    /// event whose change was stored is in the event-id memory (answered as a duplicate);
    /// otherwise it was not applied, and the claim is taken over.
    async fn orphan(&self, event_id: &str, node: &str) -> Result<Orphan, RouteError> {
        self.view.caught_up(&self.backplane).await?;
        if let Some(reply) = self.events.get(event_id) {
            return Ok(Orphan::Applied(reply));
        }
        warn!(
            event_id,
            node, "taking over the claim of a telephony event left pending by a node that is gone"
        );
        Ok(Orphan::Claimed(
            self.backplane.dedup_take_over(event_id, node).await,
        ))
    }

    /// The event was answered: its reply is stored on the claim, or the claim released
    /// when the answer is `unavailable` (nothing applied; a retry must be applied).
    async fn settle(&self, event_id: &str, token: ClaimToken, answer: &TelephonyAnswer) {
        if answer.reply.error == Some(ErrorCode::Unavailable) {
            self.release(event_id, token).await;
            return;
        }
        // Kept here too: the actor that answered may run on another node.
        self.events.insert(event_id, answer.reply.clone());
        let body = encode(&answer.reply);
        if let Err(e) = self.backplane.dedup_complete(token.clone(), &body).await {
            warn!(event_id, error = %e, "could not store the reply of a telephony event; retrying in the background");
            let backplane = self.backplane.clone();
            let event_id = event_id.to_owned();
            tokio::spawn(async move {
                for _ in 0..COMPLETE_RETRIES {
                    tokio::time::sleep(COMPLETE_RETRY_EVERY).await;
                    if backplane.dedup_complete(token.clone(), &body).await.is_ok() {
                        return;
                    }
                }
                warn!(event_id, "gave up storing the reply of a telephony event: its copies are answered unavailable until the id expires");
            });
        }
    }

    /// Gives the claim up (best effort: a failure leaves it pending until it expires).
    async fn release(&self, event_id: &str, token: ClaimToken) {
        if let Err(e) = self.backplane.dedup_release(token).await {
            warn!(event_id, error = %e, "could not release the claim of an event that was not applied");
        }
    }
}

/// What became of a claim abandoned by a node that is gone.
enum Orphan {
    /// Its change was stored: this is the reply.
    Applied(StoredReply),
    /// Not applied: the outcome of claiming it again.
    Claimed(Result<Claim, ClusterError>),
}

fn unavailable(event_id: &str, e: &ClusterError) -> RouteError {
    if let ClusterError::Refused(reason) = e {
        warn!(event_id, %reason, "the dedup bucket refused an event id");
    }
    RouteError::Backplane {
        retry_after_ms: e.retry_after_ms().unwrap_or(RETRY_AFTER_MS),
    }
}

/// A reply as the dedup bucket keeps it: the error code (empty for `ok`), a newline, then
/// the reply's fields (a JSON object, so without a raw newline).
fn encode(reply: &StoredReply) -> Vec<u8> {
    let code = reply.error.map_or("", ErrorCode::as_str);
    let mut out = Vec::with_capacity(code.len() + 1 + reply.fields.len());
    out.extend_from_slice(code.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(reply.fields.as_bytes());
    out
}

fn decode(body: &[u8]) -> Option<StoredReply> {
    let text = std::str::from_utf8(body).ok()?;
    let (code, fields) = text.split_once('\n')?;
    let error = match code {
        "" => None,
        c => Some(ErrorCode::parse(c)?),
    };
    Some(StoredReply::from_stored(error, fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip() {
        for reply in [
            StoredReply::from_stored(None, r#"{"accepted":true,"agent":{"id":"a1"}}"#),
            StoredReply::from_stored(Some(ErrorCode::UnknownAgent), r#"{"message":"x\ny"}"#),
        ] {
            assert_eq!(decode(&encode(&reply)), Some(reply));
        }
        assert_eq!(decode(b"no newline"), None);
        assert_eq!(decode(b"not_a_code\n{}"), None);
    }
}
