//! `/ws/admin`: a supervisor wallboard. Subscribes to a filtered live view (snapshot, then
//! ordered updates), resumes after a reconnect, and acts on agents through the router.

use std::sync::Arc;

use super::reply::{answer_applied, status_input};
use super::session::Flow;
use crate::fanout::Filter;
use crate::hub::view::replay;
use crate::hub::{Hub, RouteError};
use crate::model::{Actor, AgentId, Input};
use crate::outbox::Outbox;
use crate::protocol::{self, AdminMessage, BadMessage, ErrorCode, FilterSpec, Ref, Role, Text};

/// A wallboard's socket.
pub(crate) struct AdminSession {
    pub(super) hub: Arc<Hub>,
    pub(super) outbox: Outbox,
    conn_id: u64,
    /// The filter of this socket's last `subscribe` (or `resume` naming one): a `resume`
    /// without `teams`/`agents` keeps it instead of widening to every agent.
    filter: Filter,
}

/// Cluster mode: a `subscribe` or `resume` whose snapshot waits until this node's view
/// caught up with the stream (read-your-writes), done outside the sync handler.
struct Subscription {
    reply_ref: Option<Ref>,
    /// `resume` from (`epoch`, `seq`); `None` for `subscribe`.
    resume: Option<(String, u64)>,
}

/// Work an admin message needs done outside the sync handler.
enum Work {
    /// From an agent actor.
    Act(Action),
    /// A snapshot once the view caught up (cluster mode).
    Subscribe(Subscription),
}

/// Work an admin message needs from an agent actor.
struct Action {
    /// When the message arrived (its ack latency goes to the metrics).
    arrived: std::time::Instant,
    reply_ref: Option<Ref>,
    agent_id: AgentId,
    input: Input,
}

impl AdminSession {
    pub(super) fn new(hub: Arc<Hub>, conn_id: u64, outbox: Outbox) -> Self {
        AdminSession {
            hub,
            outbox,
            conn_id,
            filter: Filter::default(),
        }
    }

    pub(super) fn on_text(
        &mut self,
        text: &str,
    ) -> impl std::future::Future<Output = Flow> + Send + '_ {
        let work = self.decode(text);
        async move {
            let action = match work {
                Some(Work::Act(action)) => Some(action),
                Some(Work::Subscribe(sub)) => {
                    self.subscribe_when_caught_up(sub).await;
                    None
                }
                None => None,
            };
            if let Some(Action {
                arrived,
                reply_ref,
                agent_id,
                input,
            }) = action
            {
                let is_status = matches!(input, Input::SetStatus { .. });
                let reply = match self.hub.router().apply(&agent_id, input).await {
                    // `ok` once committed; the update was broadcast already.
                    Ok(mut result) => answer_applied(reply_ref.as_ref(), &mut result).await,
                    Err(RouteError::UnknownAgent) => Some(protocol::error(
                        reply_ref.as_ref(),
                        ErrorCode::UnknownAgent,
                        &format!("unknown agent {agent_id}"),
                    )),
                    Err(RouteError::Unavailable) => {
                        Some(protocol::shutting_down(reply_ref.as_ref()))
                    }
                    Err(
                        e @ (RouteError::Backplane { .. }
                        | RouteError::EventInFlight { .. }
                        | RouteError::Moved
                        | RouteError::NotOwner),
                    ) => e.unavailable(reply_ref.as_ref()),
                };
                if let Some(reply) = reply {
                    self.send(reply);
                }
                if is_status {
                    self.hub.metrics().status_acked(arrived.elapsed());
                }
            }
            Flow::Continue
        }
    }

    /// Cluster mode: subscribes (or resumes) once this node's view has applied every change
    /// stored before now; `unavailable` if it cannot within the bound.
    async fn subscribe_when_caught_up(&mut self, sub: Subscription) {
        if let Err(e) = self.hub.caught_up().await {
            if let Some(reply) = e.unavailable(sub.reply_ref.as_ref()) {
                self.send(reply);
            }
            return;
        }
        let fanout = self.hub.fanout();
        match sub.resume {
            None => fanout.subscribe(
                self.conn_id,
                self.filter.clone(),
                &self.outbox,
                sub.reply_ref.as_ref(),
            ),
            Some((epoch, seq)) => {
                // Older than the in-memory history but in the stream: read back from there.
                let (oldest, current) = fanout.history_range();
                let mut from = seq;
                let mut earlier = Vec::new();
                if let Some(c) = self.hub.cluster() {
                    if *epoch == *fanout.epoch() && seq + 1 < oldest && seq < current {
                        let upto = oldest - 1;
                        if let Some(frames) = replay(c.backplane(), seq, upto, &self.filter).await {
                            (from, earlier) = (upto, frames);
                        }
                    }
                }
                let fanout = self.hub.fanout();
                fanout.resume_after(
                    self.conn_id,
                    &epoch,
                    from,
                    earlier,
                    self.filter.clone(),
                    &self.outbox,
                    sub.reply_ref.as_ref(),
                );
            }
        }
    }

    /// Handles what needs no actor at once; returns the other work.
    fn decode(&mut self, text: &str) -> Option<Work> {
        let envelope = match protocol::decode::<AdminMessage>(text) {
            Ok(e) => e,
            Err(bad) => {
                self.bad(&bad);
                return None;
            }
        };
        let reply_ref = envelope.reply_ref;
        let fanout = self.hub.fanout();
        match envelope.message {
            AdminMessage::Subscribe(spec) => {
                self.filter = filter(spec);
                if self.hub.cluster().is_some() {
                    return Some(Work::Subscribe(Subscription {
                        reply_ref,
                        resume: None,
                    }));
                }
                fanout.subscribe(
                    self.conn_id,
                    self.filter.clone(),
                    &self.outbox,
                    reply_ref.as_ref(),
                );
            }
            AdminMessage::Resume {
                epoch,
                seq,
                filter: spec,
            } => {
                // The socket's filter holds unless the resume names one.
                if spec.teams.is_some() || spec.agents.is_some() {
                    self.filter = filter(spec);
                }
                if self.hub.cluster().is_some() {
                    return Some(Work::Subscribe(Subscription {
                        reply_ref,
                        resume: Some((epoch, seq)),
                    }));
                }
                fanout.resume(
                    self.conn_id,
                    &epoch,
                    seq,
                    self.filter.clone(),
                    &self.outbox,
                    reply_ref.as_ref(),
                );
            }
            AdminMessage::Unsubscribe {} => {
                fanout.unsubscribe(self.conn_id);
                if let Some(r) = &reply_ref {
                    self.send(protocol::ok(Some(r)));
                }
            }
            AdminMessage::SetAgentStatus { agent_id, change } => {
                match status_input(&change, Actor::Admin, reply_ref.as_ref()) {
                    Ok(input) => {
                        return Some(Work::Act(Action {
                            arrived: std::time::Instant::now(),
                            reply_ref,
                            agent_id,
                            input,
                        }))
                    }
                    Err(Err(bad)) => self.bad(&bad),
                    Err(Ok(reply)) => self.send(reply),
                }
            }
            AdminMessage::LogoutAgent { agent_id } => {
                return Some(Work::Act(Action {
                    arrived: std::time::Instant::now(),
                    reply_ref,
                    agent_id,
                    input: Input::Logout { by: Actor::Admin },
                }))
            }
            AdminMessage::Ping {} => {
                self.send(protocol::pong(
                    reply_ref.as_ref(),
                    self.hub.clock().now_ms(),
                ));
            }
        }
        None
    }

    fn send(&self, reply: Text) {
        let _ = self.outbox.push(reply);
    }

    fn bad(&self, bad: &BadMessage) {
        self.hub.metrics().bad_message(Role::Admin);
        self.send(protocol::bad_message(bad));
    }

    pub(super) fn closed(self) {
        self.hub.fanout().unsubscribe(self.conn_id);
    }
}

fn filter(spec: FilterSpec) -> Filter {
    Filter::new(spec.teams, spec.agents)
}
