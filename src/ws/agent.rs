//! `/ws/agent`: one browser tab of one agent. The agent acts only on itself: its id comes
//! from the token, never from a message field.

use axum::extract::ws::Utf8Bytes;
use std::sync::Arc;

use super::outbox::{Outbound, Outbox};
use super::session::Flow;
use crate::agent::{AgentHandle, Profile, TabId};
use crate::http::auth::Identity;
use crate::hub::Hub;
use crate::model::{Actor, AgentId, Input, Reason, Status};
use crate::protocol::{BadMessage, ErrorCode, Request};

use super::reply::{answer_committed, committed, error, pong};

/// An agent's socket.
pub struct AgentSession {
    pub(super) hub: Arc<Hub>,
    pub(super) outbox: Outbox,
    handle: AgentHandle,
    tab: TabId,
    /// Set after this tab logged out: the actor already forgot it.
    logged_out: bool,
}

impl AgentSession {
    /// Registers the tab with the agent's actor (which queues `hello`).
    pub async fn start(hub: Arc<Hub>, identity: &Identity, outbox: Outbox) -> Option<AgentSession> {
        let agent_id = AgentId::parse(&identity.subject).ok()?;
        let handle = hub.agent_or_create(&agent_id);
        let hint = Profile {
            name: identity.name.clone(),
            teams: identity.teams.clone(),
            wrap_up_ms: None,
        };
        let tab = handle.attach(outbox.clone(), Some(hint)).await.ok()?;
        Some(AgentSession {
            hub,
            outbox,
            handle,
            tab,
            logged_out: false,
        })
    }

    pub(super) async fn on_text(&mut self, text: &str) -> Flow {
        let req = match Request::decode(text) {
            Ok(req) => req,
            Err(bad) => return self.bad(&bad),
        };
        let input = match req.kind.as_str() {
            "set_status" => match set_status_input(&req, Actor::Agent) {
                Ok(input) => input,
                Err(StatusInputError::Bad(bad)) => return self.bad(&bad),
                Err(StatusInputError::Reply(reply)) => return self.send(reply),
            },
            "accept_call" => match req.require_call_id() {
                Ok(call_id) => Input::AcceptCall { call_id },
                Err(bad) => return self.bad(&bad),
            },
            "decline_call" => match req.require_call_id() {
                Ok(call_id) => Input::DeclineCall { call_id },
                Err(bad) => return self.bad(&bad),
            },
            "end_wrap_up" => Input::EndWrapUp,
            "logout" => Input::Logout { by: Actor::Agent },
            "ping" => return self.send(pong(&req, &self.hub)),
            other => return self.bad(&req.bad(format!("unknown message type {other:?}"))),
        };
        let is_logout = matches!(input, Input::Logout { .. });
        let Ok(mut result) = self.handle.apply(input, Some(self.tab)).await else {
            return Flow::Close(super::conn::CLOSE_GOING_AWAY, "hub shutting down");
        };
        // `ok` only once the change is committed (--durability commit); the update itself
        // went to the tabs and admins already (see docs/durability.md).
        let stored = committed(&mut result).await;
        if let Some(reply) = answer_committed(&req, &result, stored) {
            let _ = self.outbox.push(Utf8Bytes::from(reply));
        }
        if is_logout && result.is_ok() {
            self.logged_out = true;
            let _ = self.outbox.push(Utf8Bytes::from(format!(
                r#"{{"type":"logged_out","reason":"{}"}}"#,
                Reason::Logout.as_str()
            )));
            let _ = self
                .outbox
                .push_unbounded(Outbound::Close(1000, "logged out"));
        }
        Flow::Continue
    }

    fn send(&self, reply: Option<String>) -> Flow {
        if let Some(reply) = reply {
            let _ = self.outbox.push(Utf8Bytes::from(reply));
        }
        Flow::Continue
    }

    fn bad(&self, bad: &crate::protocol::BadMessage) -> Flow {
        self.hub
            .core
            .metrics
            .bad_message(crate::metrics::Role::Agent);
        self.send(Some(crate::protocol::bad_message_reply(bad)))
    }

    pub(super) async fn closed(self) {
        if !self.logged_out {
            self.handle.detach(self.tab).await;
        }
    }
}

/// Why a `set_status` / `set_agent_status` could not become a machine input.
pub(super) enum StatusInputError {
    /// Missing or malformed field: answered with `bad_message` (and counted as one).
    Bad(BadMessage),
    /// A well-formed request the model refuses (`invalid_status`): this reply.
    Reply(Option<String>),
}

/// Decodes `set_status` / `set_agent_status` into a machine input.
pub(super) fn set_status_input(req: &Request, by: Actor) -> Result<Input, StatusInputError> {
    let Some(name) = req.status.as_deref() else {
        return Err(StatusInputError::Bad(
            req.bad(format!("{} needs status", req.kind)),
        ));
    };
    let Some(status) = Status::parse(name) else {
        return Err(StatusInputError::Reply(error(
            req,
            ErrorCode::InvalidStatus,
            &format!("unknown status {name:?}: use offline, available, busy or on_break"),
        )));
    };
    let note = req.checked_note().map_err(StatusInputError::Bad)?;
    Ok(Input::SetStatus {
        status,
        note,
        if_version: req.if_version,
        by,
    })
}
