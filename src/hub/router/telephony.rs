//! The router's telephony part: an event is routed to its agent's actor (here or, in
//! cluster mode, on its owner) once its id is claimed, answered here for an unknown agent,
//! and turned into the actor's input (the ring timeout resolved from the offer, its ring
//! group or the hub default).

use super::{Dispatched, Router, RETRIES};
use crate::agent::TelephonyAnswer;
use crate::hub::route::RouteError;
use crate::model::{AgentId, Input};
use crate::protocol::{telephony_unknown_agent, CallEvent, TelephonyMessage};
use crate::store::CommitTicket;

impl Router {
    /// Routes one checked telephony event. The event-id memory is consulted once: by the
    /// actor (which serializes an agent's events, so two copies of one event in flight
    /// cannot both apply), or here when no actor may exist (unknown agent). In cluster
    /// mode the id is first claimed cluster-wide (see `hub::dedup`).
    pub(crate) async fn telephony(
        &self,
        message: &TelephonyMessage,
    ) -> Result<Dispatched, RouteError> {
        let (Some(event), Some(input)) = (message.event(), self.input_of(message)) else {
            return Err(RouteError::UnknownAgent);
        };
        self.admit()?;
        match &self.dedup {
            None => self.dispatch(message, event, input).await,
            Some(dedup) => {
                let dispatch = self.dispatch(message, event, input);
                dedup.telephony(self, &event.event_id, dispatch).await
            }
        }
    }

    async fn dispatch(
        &self,
        message: &TelephonyMessage,
        event: &CallEvent,
        input: Input,
    ) -> Result<Dispatched, RouteError> {
        let mut last = RouteError::Unavailable;
        for _ in 0..RETRIES {
            let Some(route) = self.route(&event.agent_id).await? else {
                return Ok(Dispatched::Answered(self.unknown_agent(message, event)));
            };
            match route.telephony(event.event_id.clone(), input.clone()).await {
                Ok(pending) => return Ok(Dispatched::Pending(pending)),
                Err(RouteError::UnknownAgent) => {
                    return Ok(Dispatched::Answered(self.unknown_agent(message, event)))
                }
                Err(e) if self.retry(&route, e).await => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(self.gave_up(last))
    }

    /// The answer to a copy of an event answered before.
    pub(in crate::hub) fn duplicate(&self, reply: crate::protocol::StoredReply) -> TelephonyAnswer {
        self.metrics.telephony_event(true, false);
        TelephonyAnswer {
            reply,
            duplicate: true,
            // The first answer may still be on its way to the disk.
            ticket: self.store.ack_barrier(),
        }
    }

    /// The answer to an event for an agent that may not have an actor: remembered (and
    /// stored) like any first answer, so a repeat is a `duplicate`.
    fn unknown_agent(&self, message: &TelephonyMessage, event: &CallEvent) -> TelephonyAnswer {
        if let Some(reply) = self.events.get(&event.event_id) {
            return self.duplicate(reply);
        }
        let is_offer = matches!(message, TelephonyMessage::CallOffered(_));
        let reply = telephony_unknown_agent(is_offer, &event.agent_id);
        let ticket: CommitTicket =
            self.store
                .record_event_id(&event.event_id, &reply, self.clock.now_ms());
        self.events.insert(&event.event_id, reply.clone());
        self.metrics.telephony_event(false, false);
        TelephonyAnswer {
            reply,
            duplicate: false,
            ticket,
        }
    }

    fn input_of(&self, message: &TelephonyMessage) -> Option<Input> {
        Some(match message {
            TelephonyMessage::CallOffered(o) => Input::CallOffered {
                ring_timeout_ms: self.ring_timeout_ms(
                    o.ring_timeout_ms,
                    o.ring_group.as_deref(),
                    &o.event.agent_id,
                ),
                call_id: o.event.call_id.clone(),
                from: o.from.clone(),
                to: o.to.clone(),
                ring_group: o.ring_group.clone(),
            },
            TelephonyMessage::CallAnswered(e) => Input::CallAnswered {
                call_id: e.call_id.clone(),
            },
            TelephonyMessage::CallCancelled(e) => Input::CallCancelled {
                call_id: e.call_id.clone(),
            },
            TelephonyMessage::CallEnded(e) => Input::CallEnded {
                call_id: e.call_id.clone(),
            },
            TelephonyMessage::OutboundStarted(o) => Input::OutboundStarted {
                call_id: o.event.call_id.clone(),
                to: o.to.clone(),
            },
            TelephonyMessage::CallNoAnswer(e) => Input::CallNoAnswer {
                call_id: e.call_id.clone(),
            },
            TelephonyMessage::CallRejected(e) => Input::CallRejected {
                call_id: e.call_id.clone(),
            },
            TelephonyMessage::Ping {} => return None,
        })
    }

    /// Ring timeout of an offer: the offer's own, else its ring group's, else one of the
    /// agent's ring groups', else the hub default.
    fn ring_timeout_ms(&self, own: Option<u64>, group: Option<&str>, agent_id: &AgentId) -> u64 {
        if let Some(ms) = own {
            return ms;
        }
        let dir = self.directory.read();
        group
            .and_then(|g| dir.ring_timeout_ms(g))
            .or_else(|| {
                dir.groups_of(agent_id)
                    .into_iter()
                    .find_map(|g| dir.ring_timeout_ms(g))
            })
            .unwrap_or(u64::try_from(self.ring_timeout.as_millis()).unwrap_or(u64::MAX))
    }
}
