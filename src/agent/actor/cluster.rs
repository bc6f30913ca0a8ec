//! The actor in cluster mode: every change is computed on a copy of the state, appended to
//! the agents stream with the fencing of [`Backplane::append`] (expected last sequence =
//! the sequence of the agent's last stored change, which is `published.seq`), and applied
//! only once JetStream acknowledged it: then it goes to the agent's own tabs, its effects
//! are carried out and the caller gets its answer. The node's fan-out (admins) is fed by
//! the node's stream follower, not by the actor, so every node sees one order.
//!
//! - NATS unavailable (or no ack in time): nothing is applied. A caller gets
//!   [`ActorError::Unavailable`]; a timer retries after [`ClusterError::retry_after_ms`];
//!   a tab that closed is counted out again after that delay.
//! - Fenced (another node stored a change first: it owns the agent now): the caller gets
//!   [`ActorError::Moved`], the agent's tabs here are closed (1012: they reconnect and are
//!   routed to the owner) and the actor ends.
//!
//! Versions: in cluster mode `state.version` is the agent's version in the stream (1, 2,
//! 3, ... with no gap), so a change that alters only the session (not on the wire) is
//! stored with the next version too.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tracing::warn;

use super::{After, AgentActor, NodeTabs, Tab};
use crate::agent::handle::{
    ActorError, Applied, Command, Reply, TabId, TelephonyAnswer, CLOSE_MOVED,
};
use crate::agent::record::{ClusterRecord, RecordedEvent};
use crate::cluster::NodeId;
use crate::cluster::{Backplane, ClusterError, Head};
use crate::model::machine::apply;
use crate::model::{AgentState, Effect, Input, Outcome, Rejection};
use crate::outbox::{Outbound, Outbox};
use crate::protocol::{self, EventResult, Published, StoredReply};
use crate::store::CommitTicket;

/// The append of one change, resolved by the stream's acknowledgement.
type AppendFuture = Pin<Box<dyn Future<Output = Result<Head, ClusterError>> + Send>>;

/// A change waiting for the stream's acknowledgement.
pub(in crate::agent) struct Pending {
    /// The state once the change counts.
    next: AgentState,
    /// What to carry out once it counts.
    effects: Vec<Effect>,
    /// The tab that asked (it answers a logout itself).
    origin: Option<TabId>,
    /// Who waits for it.
    then: Then,
    /// The append in flight (the loop awaits it).
    append: AppendFuture,
    /// Open tabs per node once the change counts (stored with it).
    tabs: NodeTabs,
}

/// Awaits a pending change's append and hands the change back with the stream's answer.
/// One pointer in every actor's task (the append future itself is boxed in the change).
pub(in crate::agent) struct Settle(pub(in crate::agent) Option<Box<Pending>>);

impl Future for Settle {
    type Output = (Box<Pending>, Result<Head, ClusterError>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(pending) = self.0.as_mut() else {
            // Polled again after it completed: the actor never does.
            return Poll::Pending;
        };
        let stored = std::task::ready!(pending.append.as_mut().poll(cx));
        match self.0.take() {
            Some(pending) => Poll::Ready((pending, stored)),
            None => Poll::Pending,
        }
    }
}

/// Who waits for a pending change, and what follows it.
pub(in crate::agent) enum Then {
    /// An input from a socket or the API.
    Apply(Reply<Result<Applied, Rejection>>),
    /// A tab logs in: it is attached (and greeted) once its login is stored.
    Attach {
        id: TabId,
        outbox: Outbox,
        reply: Reply<TabId>,
    },
    /// A tab closed; retried until stored (the socket is gone either way).
    Detach,
    /// A ring, wrap-up or grace deadline passed; retried until stored.
    Timer,
    /// A telephony event: its reply is stored with the change.
    Telephony {
        event_id: Box<str>,
        reply: StoredReply,
        stale: bool,
        to: Reply<TelephonyAnswer>,
    },
    /// Name or teams changed (directory); `stop`: the agent left the directory.
    Profile { stop: bool },
    /// A tab opened on `node` (any node: tabs are served by their own node and counted
    /// here): counted once stored, then answered the state.
    AttachNode {
        node: NodeId,
        reply: Reply<(u64, AgentState)>,
    },
    /// A tab on `node` closed; retried until stored.
    DetachNode { node: NodeId },
    /// The tabs of nodes that left the members are closed: these are the counts after.
    Tabs { tabs: NodeTabs },
}

impl AgentActor {
    /// A command in cluster mode.
    pub(super) fn handle_cluster(&mut self, cmd: Command) -> After {
        match cmd {
            Command::Attach {
                outbox,
                hint,
                reply,
            } => {
                if let Some(hint) = hint {
                    self.merge_hint(*hint);
                }
                let id = TabId::next();
                self.propose(
                    Input::SocketOpened,
                    None,
                    Then::Attach { id, outbox, reply },
                )
            }
            Command::Detach { tab } => {
                if self.extras.remove_tab(tab) {
                    self.propose(Input::SocketClosed, None, Then::Detach)
                } else {
                    After::Continue
                }
            }
            Command::Apply {
                input,
                origin,
                reply,
            } => self.propose(*input, origin, Then::Apply(reply)),
            Command::Telephony {
                event_id,
                input,
                reply,
            } => self.telephony_cluster(event_id, *input, reply),
            Command::AttachNode { node, hint, reply } => {
                if let Some(hint) = hint {
                    self.merge_hint(*hint);
                }
                self.propose(Input::SocketOpened, None, Then::AttachNode { node, reply })
            }
            Command::DetachNode { node } => {
                if self
                    .extras
                    .node_tabs()
                    .is_some_and(|t| t.contains_key(&node))
                {
                    self.propose(Input::SocketClosed, None, Then::DetachNode { node })
                } else {
                    After::Continue
                }
            }
            Command::NodesAlive { alive } => self.close_lost_nodes(&alive),
            Command::SetProfile { profile, stop } => {
                self.extras
                    .set_wrap_up_ms(super::wrap_up_of(profile.wrap_up_ms));
                if (&self.state.name, &self.state.teams) == (&profile.name, &profile.teams) {
                    return if stop {
                        After::StopIfIdle
                    } else {
                        After::Continue
                    };
                }
                let mut next = self.state.clone();
                next.name = profile.name;
                next.teams = profile.teams;
                next.version += 1;
                self.append(next, Vec::new(), None, Then::Profile { stop }, None)
            }
        }
    }

    /// Computes an input's change on a copy and appends it; answers at once when nothing
    /// is to be stored (a rejection, or nothing changed).
    pub(super) fn propose(&mut self, input: Input, origin: Option<TabId>, then: Then) -> After {
        let now = self.env.clock().now_ms();
        let policy = self.policy();
        let mut next = self.state.clone();
        let session = next.session;
        match apply(&mut next, input, now, &policy) {
            Err(rejection) => {
                if let Then::Apply(reply) = then {
                    let _ = reply.send(Ok(Err(rejection)));
                }
                After::Continue
            }
            Ok(Outcome::Changed(effects)) => self.append(next, effects, origin, then, None),
            Ok(_) if next.session != session => {
                next.version += 1;
                self.append(next, Vec::new(), origin, then, None)
            }
            Ok(_) => {
                // Internal bookkeeping only (nothing to store).
                self.state = next;
                self.done(then, None)
            }
        }
    }

    /// A telephony event: answered from the event-id memory if seen (this node's, which
    /// its stream follower also fills with the replies other owners stored), else applied
    /// and its reply stored with the change it caused.
    fn telephony_cluster(
        &mut self,
        event_id: Box<str>,
        input: Input,
        to: Reply<TelephonyAnswer>,
    ) -> After {
        if let Some(reply) = self.env.events().get(&event_id) {
            self.env.metrics().telephony_event(true, false);
            let _ = to.send(Ok(TelephonyAnswer {
                reply,
                duplicate: true,
                ticket: CommitTicket::done(),
            }));
            return After::Continue;
        }
        let is_offer = matches!(input, Input::CallOffered { .. });
        let now = self.env.clock().now_ms();
        let policy = self.policy();
        let mut next = self.state.clone();
        let session = next.session;
        let result = apply(&mut next, input, now, &policy);
        let changed = matches!(result, Ok(Outcome::Changed(_)));
        let stored = changed || (result.is_ok() && next.session != session);
        if stored && !changed {
            next.version += 1;
        }
        let event_result = EventResult::of(&result);
        let stale = event_result == EventResult::Stale;
        let reply = if stored {
            let json = Published::serialize(&next);
            protocol::telephony_reply(is_offer, event_result, next.status, &json)
        } else {
            protocol::telephony_reply(
                is_offer,
                event_result,
                self.state.status,
                &self.latest.json(),
            )
        };
        if !stored {
            if result.is_ok() {
                self.state = next;
            }
            self.answer_event(&event_id, reply, stale, to);
            return After::Continue;
        }
        let effects = match result {
            Ok(Outcome::Changed(effects)) => effects,
            _ => Vec::new(),
        };
        let event = RecordedEvent::new(&event_id, &reply);
        let then = Then::Telephony {
            event_id,
            reply,
            stale,
            to,
        };
        self.append(next, effects, None, then, Some(event))
    }

    fn answer_event(
        &self,
        event_id: &str,
        reply: StoredReply,
        stale: bool,
        to: Reply<TelephonyAnswer>,
    ) {
        self.env.events().insert(event_id, reply.clone());
        self.env.metrics().telephony_event(false, stale);
        let _ = to.send(Ok(TelephonyAnswer {
            reply,
            duplicate: false,
            ticket: CommitTicket::done(),
        }));
    }

    /// Starts the append of `next` (the agent's next version) after the last stored change.
    pub(super) fn append(
        &mut self,
        next: AgentState,
        effects: Vec<Effect>,
        origin: Option<TabId>,
        then: Then,
        event: Option<RecordedEvent>,
    ) -> After {
        let Some(backplane) = self.env.cluster().cloned() else {
            // Not reachable: `handle_cluster` runs in cluster mode only.
            return self.done(then, None);
        };
        debug_assert_eq!(next.version, self.state.version + 1);
        let mut record =
            ClusterRecord::of(&next, self.env.node().as_str(), self.env.clock().now_ms());
        record.event = event;
        record.notices = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Telephony(notice) => Some(notice.clone()),
                _ => None,
            })
            .collect();
        let tabs = self.tabs_after(&then, next.connections);
        if self.env.node_tabs().is_some() {
            // Tabs are counted per node (`fanout::tabs`): the record carries the counts.
            record.tabs = tabs.iter().map(|(n, c)| (n.to_string(), *c)).collect();
        }
        let after = Head {
            seq: self.latest.seq,
            version: self.state.version,
        };
        let retries = matches!(then, Then::Detach | Then::Timer | Then::DetachNode { .. })
            .then(|| self.env.shutdown().clone());
        let append = append_future(backplane, next.agent_id.clone(), after, record, retries);
        After::Append(Box::new(Pending {
            next,
            effects,
            origin,
            then,
            append,
            tabs,
        }))
    }

    /// The stream answered a pending change.
    pub(super) fn settle(
        &mut self,
        pending: Box<Pending>,
        stored: Result<Head, ClusterError>,
    ) -> After {
        let Pending {
            next,
            effects,
            origin,
            then,
            append: _,
            tabs,
        } = *pending;
        match stored {
            Ok(head) => {
                self.state = next;
                self.extras.set_node_tabs(tabs);
                let json = Published::serialize(&self.state);
                let published = Published::build(&self.state, head.seq, &json);
                self.latest = published.latest.clone();
                self.deliver(&published.frame, &effects, origin);
                self.done(then, Some(&published))
            }
            Err(ClusterError::Fenced { .. }) => {
                warn!(
                    agent = %self.state.agent_id,
                    "another node stored a change of this agent first (it owns the agent now): this node's actor stops"
                );
                self.refuse(then, ActorError::Moved);
                // The tab that asked answers `unavailable` first and closes itself.
                for tab in self.extras.take_tabs() {
                    if Some(tab.id) != origin {
                        let _ = tab.outbox.push_unbounded(Outbound::Close(
                            CLOSE_MOVED,
                            "agent moved to another node",
                        ));
                    }
                }
                After::Stop
            }
            Err(_)
                if self.env.shutdown().is_cancelled()
                    && matches!(then, Then::Detach | Then::Timer) =>
            {
                // Shutting down: what is stored is what a restart or a new owner takes over.
                After::Stop
            }
            Err(e) => {
                let retry_after_ms = e.retry_after_ms().unwrap_or(RETRY_AFTER_MS);
                match then {
                    // The append waited `retry_after_ms` already: count the tab out again.
                    Then::Detach => self.propose(Input::SocketClosed, None, Then::Detach),
                    Then::DetachNode { node } => {
                        self.propose(Input::SocketClosed, None, Then::DetachNode { node })
                    }
                    // The alarm fires again at once (its deadline passed), after the wait.
                    Then::Timer => After::Continue,
                    then => {
                        self.refuse(then, ActorError::Unavailable { retry_after_ms });
                        After::Continue
                    }
                }
            }
        }
    }

    /// Answers whoever waits for a change that counts now (stored, or nothing to store;
    /// `fresh`: its update, when it was published).
    fn done(&mut self, then: Then, fresh: Option<&Published>) -> After {
        match then {
            Then::Apply(reply) => {
                let _ = reply.send(Ok(Ok(Applied {
                    state: self.latest.clone(),
                    ticket: CommitTicket::done(),
                })));
            }
            Then::Attach { id, outbox, reply } => {
                self.hello(&outbox, fresh);
                self.extras.push_tab(Tab { id, outbox });
                let _ = reply.send(Ok(id));
            }
            Then::Telephony {
                event_id,
                reply,
                stale,
                to,
            } => self.answer_event(&event_id, reply, stale, to),
            Then::AttachNode { reply, .. } => {
                let _ = reply.send(Ok((self.latest.seq, self.state.clone())));
            }
            Then::Profile { stop: true } => return After::StopIfIdle,
            Then::Profile { stop: false }
            | Then::Detach
            | Then::Timer
            | Then::DetachNode { .. }
            | Then::Tabs { .. } => {}
        }
        After::Continue
    }

    /// Answers whoever waits for a change that was not stored.
    fn refuse(&self, then: Then, why: ActorError) {
        match then {
            Then::Apply(reply) => {
                let _ = reply.send(Err(why));
            }
            Then::Attach { reply, .. } => {
                let _ = reply.send(Err(why));
            }
            Then::Telephony { to, .. } => {
                let _ = to.send(Err(why));
            }
            Then::AttachNode { reply, .. } => {
                let _ = reply.send(Err(why));
            }
            // Retried by the next member-view change.
            Then::Tabs { .. } => {}
            Then::Profile { .. } => warn!(
                agent = %self.state.agent_id,
                error = %why,
                "a directory change of this agent could not be stored; it applies with its next change"
            ),
            Then::Detach | Then::Timer | Then::DetachNode { .. } => {}
        }
    }
}

/// Used when the backplane gives no retry delay (it always does for `unavailable`).
const RETRY_AFTER_MS: u64 = 500;

/// The append of `record`. For a change nobody waits for (a closed tab, a timer: `retries`
/// holds the hub's shutdown token), a refusal for unavailability resolves only after the
/// retry delay, so the retry is not immediate (at once when the hub shuts down).
fn append_future(
    backplane: Backplane,
    agent: crate::model::AgentId,
    after: Head,
    record: ClusterRecord,
    retries: Option<tokio_util::sync::CancellationToken>,
) -> AppendFuture {
    Box::pin(async move {
        let stored = backplane.append(&agent, after, record.to_bytes()).await;
        if let (Some(shutdown), Err(e @ ClusterError::Unavailable { .. })) = (retries, &stored) {
            let ms = e.retry_after_ms().unwrap_or(RETRY_AFTER_MS);
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(ms)) => {}
                () = shutdown.cancelled() => {}
            }
        }
        stored
    })
}
