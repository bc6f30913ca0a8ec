//! `/ws/admin`: a supervisor wallboard. Subscribes to a filtered live view (snapshot, then
//! ordered updates), resumes after a reconnect, and acts on agents.

use axum::extract::ws::Utf8Bytes;
use std::sync::Arc;

use super::agent::{set_status_input, StatusInputError};
use super::outbox::Outbox;
use super::reply::{answer_committed, committed, error, ok, pong, unavailable};
use super::session::Flow;
use crate::hub::fanout::Filter;
use crate::hub::Hub;
use crate::metrics::Role;
use crate::model::{Actor, Input};
use crate::protocol::{bad_message_reply, BadMessage, ErrorCode, Request};

/// A wallboard's socket.
pub struct AdminSession {
    pub(super) hub: Arc<Hub>,
    pub(super) outbox: Outbox,
    conn_id: u64,
    /// The filter of this socket's last `subscribe` (or `resume` naming one): a `resume`
    /// without `teams`/`agents` keeps it instead of widening to every agent.
    filter: Filter,
}

/// Work an admin message needs from an agent actor (done outside the sync handler).
enum Action {
    Apply(Request, crate::model::AgentId, Input),
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
        let action = self.decode(text);
        async move {
            if let Some(Action::Apply(req, agent_id, input)) = action {
                let reply = match self.hub.agent(&agent_id) {
                    None => error(
                        &req,
                        ErrorCode::UnknownAgent,
                        &format!("unknown agent {agent_id}"),
                    ),
                    Some(handle) => match handle.apply(input, None).await {
                        Ok(mut result) => {
                            // `ok` once committed; the update was broadcast already.
                            let stored = committed(&mut result).await;
                            answer_committed(&req, &result, stored)
                        }
                        Err(gone) => unavailable(&req, gone),
                    },
                };
                self.send(reply);
            }
            Flow::Continue
        }
    }

    /// Handles what needs no actor at once; returns the actor work otherwise.
    fn decode(&mut self, text: &str) -> Option<Action> {
        let req = match Request::decode(text) {
            Ok(req) => req,
            Err(bad) => {
                self.bad(&bad);
                return None;
            }
        };
        let fanout = &self.hub.core.fanout;
        match req.kind.as_str() {
            "subscribe" => {
                self.filter = Filter::new(req.teams.clone(), req.agents.clone());
                fanout.subscribe(
                    self.conn_id,
                    self.filter.clone(),
                    &self.outbox,
                    req.reply_ref.as_ref(),
                );
            }
            "resume" => {
                let (Some(epoch), Some(seq)) = (req.epoch.as_deref(), req.seq) else {
                    self.bad(&req.bad("resume needs epoch and seq"));
                    return None;
                };
                if req.teams.is_some() || req.agents.is_some() {
                    self.filter = Filter::new(req.teams.clone(), req.agents.clone());
                }
                fanout.resume(
                    self.conn_id,
                    epoch,
                    seq,
                    self.filter.clone(),
                    &self.outbox,
                    req.reply_ref.as_ref(),
                );
            }
            "unsubscribe" => {
                fanout.unsubscribe(self.conn_id);
                self.send(ok(&req));
            }
            "set_agent_status" => {
                let agent_id = match req.require_agent_id() {
                    Ok(id) => id,
                    Err(bad) => {
                        self.bad(&bad);
                        return None;
                    }
                };
                match set_status_input(&req, Actor::Admin) {
                    Ok(input) => return Some(Action::Apply(req, agent_id, input)),
                    Err(StatusInputError::Bad(bad)) => self.bad(&bad),
                    Err(StatusInputError::Reply(reply)) => self.send(reply),
                }
            }
            "logout_agent" => match req.require_agent_id() {
                Ok(agent_id) => {
                    return Some(Action::Apply(
                        req,
                        agent_id,
                        Input::Logout { by: Actor::Admin },
                    ))
                }
                Err(bad) => self.bad(&bad),
            },
            "ping" => self.send(pong(&req, &self.hub)),
            other => self.bad(&req.bad(format!("unknown message type {other:?}"))),
        }
        None
    }

    fn send(&self, reply: Option<String>) {
        if let Some(reply) = reply {
            let _ = self.outbox.push(Utf8Bytes::from(reply));
        }
    }

    fn bad(&self, bad: &BadMessage) {
        self.hub.core.metrics.bad_message(Role::Admin);
        self.send(Some(bad_message_reply(bad)));
    }

    pub(super) fn closed(self) {
        self.hub.core.fanout.unsubscribe(self.conn_id);
    }
}
