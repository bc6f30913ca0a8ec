//! Forwarding: a node that receives a command for an agent it does not own sends it to the
//! owner with NATS request/reply and relays the owner's reply. Each node listens on its own
//! subject `<prefix>.node.<node-id>`; the payload is whatever the hub's router serializes.
//!
//! A forward is answered by the owner, or `unavailable`: at once when nobody listens on the
//! node's subject (the node is gone: NATS answers "no responders"), after the forward
//! timeout when the owner does not answer in time, and at once when this node has no NATS
//! connection. Like appends, a forward is only sent while connected (see `link.rs`).

use super::naming::token;
use super::stats::Outcome;
use super::{Backplane, ClusterError, NodeId};
use async_nats::{Client, RequestErrorKind, Subject};
use bytes::Bytes;
use futures::StreamExt;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::warn;

/// Capacity of the channel of forwarded commands; when full, the listener waits and NATS
/// buffers (then drops for a slow consumer: the forwarder times out, `unavailable`).
const INBOX_CAPACITY: usize = 1024;

/// A command another node forwarded to this one.
pub struct Forwarded {
    /// What the forwarding node sent.
    pub body: Bytes,
    /// Where the reply goes.
    reply: Option<Subject>,
    /// The connection the command came in on.
    client: Client,
}

impl Forwarded {
    /// Sends the reply back to the forwarding node.
    pub async fn respond(self, body: Bytes) -> Result<(), ClusterError> {
        let Some(reply) = self.reply else {
            return Ok(());
        };
        self.client
            .publish(reply, body)
            .await
            .map_err(ClusterError::unavailable)
    }
}

fn node_subject(bp: &Backplane, node: &NodeId) -> String {
    format!("{}.node.{}", bp.config.names.prefix, token(node.as_str()))
}

impl Backplane {
    /// Sends `body` to `to` and waits for its reply, at most `timeout`.
    pub async fn forward(
        &self,
        to: &NodeId,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, ClusterError> {
        let result = self.forward_once(to, body, timeout).await;
        self.counters.count(match result {
            Ok(_) => Outcome::Forwarded,
            Err(_) => Outcome::ForwardFailed,
        });
        result
    }

    async fn forward_once(
        &self,
        to: &NodeId,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, ClusterError> {
        let session = self.link.session()?;
        let request = async_nats::Request::new()
            .payload(body)
            .timeout(Some(timeout));
        match session
            .client
            .send_request(node_subject(self, to), request)
            .await
        {
            Ok(msg) => Ok(msg.payload),
            Err(e) if e.kind() == RequestErrorKind::NoResponders => {
                Err(ClusterError::Unavailable {
                    reason: format!("node {to} is not reachable"),
                })
            }
            Err(e) => Err(ClusterError::Unavailable {
                reason: format!("node {to} did not answer: {e}"),
            }),
        }
    }

    /// Receives the commands other nodes forward to this one, across NATS outages. Returns
    /// once this node listens (so a node can join the members only after that); ends when
    /// the receiver is dropped or the backplane stops.
    pub async fn forwarded(&self) -> Result<mpsc::Receiver<Forwarded>, ClusterError> {
        let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
        let mut sessions = self.link.sessions();
        let subject = node_subject(self, &self.config.node_id);
        let session = self.link.session()?;
        let first = session
            .client
            .subscribe(subject.clone())
            .await
            .map_err(ClusterError::unavailable)?;
        // A round trip on the same connection: the server handles a connection's messages
        // in order, so once this answer is back the subscription is in place (a client
        // `flush` only means the bytes left this process).
        session
            .js
            .query_account()
            .await
            .map_err(ClusterError::unavailable)?;
        tokio::spawn(async move {
            let mut current = Some((session, first));
            loop {
                let (session, mut sub) = match current.take() {
                    Some(s) => s,
                    None => {
                        let Some(session) = sessions.up().await else {
                            return;
                        };
                        match session.client.subscribe(subject.clone()).await {
                            Ok(sub) => (session, sub),
                            Err(e) => {
                                warn!(error = %e, "cannot listen for forwarded commands; retrying");
                                sessions.pause(session.generation).await;
                                continue;
                            }
                        }
                    }
                };
                loop {
                    let msg = tokio::select! {
                        m = sub.next() => m,
                        _ = sessions.ended(session.generation) => None,
                    };
                    let Some(msg) = msg else { break };
                    let fwd = Forwarded {
                        body: msg.payload,
                        reply: msg.reply,
                        client: session.client.clone(),
                    };
                    if tx.send(fwd).await.is_err() {
                        return;
                    }
                }
                sessions.pause(session.generation).await;
            }
        });
        Ok(rx)
    }
}
