//! `/ws/agent`: one browser tab of one agent. The agent acts only on itself: its id comes
//! from the token, never from a message field.

use std::sync::Arc;

use super::reply::{answer_applied, status_input};
use super::session::Flow;
use crate::agent::{Profile, TabId};
use crate::hub::{Hub, Route};
use crate::model::{Actor, AgentId, Input, Reason};
use crate::outbox::{Outbound, Outbox};
use crate::protocol::{self, AgentMessage, BadMessage, Identity, Role};

/// An agent's socket.
pub(crate) struct AgentSession {
    pub(super) hub: Arc<Hub>,
    pub(super) outbox: Outbox,
    /// Where this agent's commands go (its actor).
    route: Route,
    tab: TabId,
    /// Set after this tab logged out: the actor already forgot it.
    logged_out: bool,
}

impl AgentSession {
    /// Logs the tab in through the router (its actor queues `hello`). `Err` carries the
    /// frame to send before closing when the login is refused for a retryable reason
    /// (cluster mode: the tab could not be counted at its agent's owner now).
    pub(crate) async fn start(
        hub: Arc<Hub>,
        identity: &Identity,
        outbox: Outbox,
    ) -> Result<AgentSession, Option<protocol::Text>> {
        let agent_id = AgentId::parse(&identity.subject).map_err(|_| None)?;
        let hint = Profile {
            name: identity.name.clone(),
            teams: identity.teams.clone(),
            wrap_up_ms: None,
        };
        let (route, tab) = if hub.cluster().is_some() {
            // Cluster mode: the tab is served by this node, counted at the agent's owner.
            let tab = TabId::next();
            let route = hub
                .router()
                .login_node(&agent_id, tab.get(), outbox.clone(), hint)
                .await
                .map_err(|e| e.unavailable(None))?;
            (route, tab)
        } else {
            hub.router()
                .login(&agent_id, outbox.clone(), hint)
                .await
                .map_err(|_| None)?
        };
        Ok(AgentSession {
            hub,
            outbox,
            route,
            tab,
            logged_out: false,
        })
    }

    pub(super) async fn on_text(&mut self, text: &str) -> Flow {
        let envelope = match protocol::decode::<AgentMessage>(text) {
            Ok(e) => e,
            Err(bad) => return self.bad(&bad),
        };
        let reply_ref = envelope.reply_ref;
        // A status change's ack latency goes to the metrics.
        let arrived =
            matches!(envelope.message, AgentMessage::SetStatus(_)).then(std::time::Instant::now);
        let input = match envelope.message {
            AgentMessage::SetStatus(change) => {
                match status_input(&change, Actor::Agent, reply_ref.as_ref()) {
                    Ok(input) => input,
                    Err(Err(bad)) => return self.bad(&bad),
                    Err(Ok(reply)) => return self.send(reply),
                }
            }
            AgentMessage::AcceptCall { call_id } => Input::AcceptCall { call_id },
            AgentMessage::DeclineCall { call_id } => Input::DeclineCall { call_id },
            AgentMessage::EndWrapUp {} => Input::EndWrapUp,
            AgentMessage::Logout {} => Input::Logout { by: Actor::Agent },
            AgentMessage::Ping {} => {
                let now = self.hub.clock().now_ms();
                return self.send(protocol::pong(reply_ref.as_ref(), now));
            }
        };
        let is_logout = matches!(input, Input::Logout { .. });
        if let Err(e) = self.hub.router().admit() {
            if let Some(reply) = e.unavailable(reply_ref.as_ref()) {
                return self.send(reply);
            }
        }
        let routed = match &self.route {
            Route::Local(_) => self.route.apply(input, Some(self.tab)).await,
            // Cluster mode: to the agent's owner of the moment.
            Route::Remote(_) => {
                self.hub
                    .router()
                    .apply_tab(&self.route, self.tab.get(), input)
                    .await
            }
        };
        let mut result = match routed {
            Ok(result) => result,
            Err(e) => {
                if let Some(reply) = e.unavailable(reply_ref.as_ref()) {
                    return self.send(reply);
                }
                return Flow::Close(super::conn::CLOSE_GOING_AWAY, "hub shutting down");
            }
        };
        // `ok` only once the change is committed (--durability commit); the update itself
        // went to the tabs and admins already (see docs/durability.md).
        if let Some(reply) = answer_applied(reply_ref.as_ref(), &mut result).await {
            let _ = self.outbox.push(reply);
        }
        if let (Some(arrived), Ok(_)) = (arrived, &result) {
            self.hub.metrics().status_acked(arrived.elapsed());
        }
        if is_logout && result.is_ok() {
            self.logged_out = true;
            let _ = self.outbox.push(protocol::logged_out(Reason::Logout));
            let _ = self
                .outbox
                .push_unbounded(Outbound::Close(1000, "logged out"));
        }
        Flow::Continue
    }

    fn send(&self, reply: protocol::Text) -> Flow {
        let _ = self.outbox.push(reply);
        Flow::Continue
    }

    fn bad(&self, bad: &BadMessage) -> Flow {
        self.hub.metrics().bad_message(Role::Agent);
        self.send(protocol::bad_message(bad))
    }

    pub(super) async fn closed(self) {
        if self.logged_out {
            return;
        }
        match &self.route {
            Route::Local(_) => self.route.detach(self.tab).await,
            Route::Remote(_) => {
                self.hub
                    .router()
                    .detach_tab(&self.route, self.tab.get())
                    .await
            }
        }
    }
}
