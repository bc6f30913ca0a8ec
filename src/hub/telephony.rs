//! Telephony: routing adapter events to agent actors (with ring-timeout resolution and
//! unknown-agent answers), and pushing `call_accepted` / `call_declined` / `ring_timeout`
//! notifications to every connected adapter socket.

use axum::extract::ws::Utf8Bytes;
use std::sync::{Arc, Mutex};

use super::dedup::StoredReply;
use super::Hub;
use crate::agent::TelephonyAnswer;
use crate::model::{AgentId, Input, TelephonyNotice};
use tokio::sync::oneshot;

use crate::protocol::{error_reply_fields, ok_reply, BadMessage, ErrorCode, Ref, Request};
use crate::ws::outbox::Outbox;

/// Adapter sockets that receive notifications.
#[derive(Default)]
pub struct TelephonySockets {
    sockets: Mutex<Vec<(u64, Outbox)>>,
}

impl TelephonySockets {
    /// Adds an adapter socket.
    pub fn add(&self, conn_id: u64, outbox: Outbox) {
        self.lock().push((conn_id, outbox));
    }

    /// Removes an adapter socket.
    pub fn remove(&self, conn_id: u64) {
        self.lock().retain(|(id, _)| *id != conn_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Outbox)>> {
        self.sockets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends a notification about `agent_id`'s call to every adapter socket.
    pub fn notify(&self, agent_id: &AgentId, notice: &TelephonyNotice) {
        let frame = Utf8Bytes::from(notice_frame(agent_id, notice));
        self.lock()
            .retain(|(_, outbox)| outbox.push(frame.clone()).is_ok());
    }
}

fn notice_frame(agent_id: &AgentId, notice: &TelephonyNotice) -> String {
    let (kind, call_id, extra) = match notice {
        TelephonyNotice::CallAccepted { call_id } => ("call_accepted", call_id, ""),
        TelephonyNotice::CallDeclined { call_id, by_logout } => (
            "call_declined",
            call_id,
            if *by_logout {
                r#","reason":"logout""#
            } else {
                r#","reason":"declined""#
            },
        ),
        TelephonyNotice::RingTimeout { call_id } => ("ring_timeout", call_id, ""),
    };
    let ids = serde_json::json!({ "call_id": call_id, "agent_id": agent_id });
    let ids = ids.to_string();
    // `ids` is `{"call_id":..,"agent_id":..}`: splice its members after the type.
    format!(r#"{{"type":"{kind}",{}{extra}}}"#, &ids[1..ids.len() - 1])
}

/// The telephony event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventKind {
    Offered,
    Answered,
    Cancelled,
    Ended,
    Outbound,
    NoAnswer,
    Rejected,
}

/// A processed telephony event: what to answer, once `answer.ticket` resolved (the
/// event id and the change it caused are committed; at once with `--durability async`).
#[derive(Debug)]
pub struct EventAnswer {
    pub answer: TelephonyAnswer,
}

impl EventAnswer {
    /// The reply frame for `req`.
    pub fn render(&self, req: &Request) -> String {
        self.render_for(req.reply_ref.as_ref())
    }

    /// The reply frame for a request whose `ref` was `reply_ref`.
    pub fn render_for(&self, reply_ref: Option<&Ref>) -> String {
        let r = &self.answer.reply;
        let mut fields = String::with_capacity(r.fields.len() + 20);
        if self.answer.duplicate {
            fields.push_str(r#""duplicate":true,"#);
        }
        match r.error {
            None => {
                fields.push_str(&r.fields);
                ok_reply(reply_ref, &fields)
            }
            Some(code) => {
                fields.push_str(&r.fields);
                error_reply_fields(reply_ref, code, &fields)
            }
        }
    }

    /// The HTTP status of the reply.
    pub fn http_status(&self) -> u16 {
        self.answer.reply.error.map_or(200, ErrorCode::http_status)
    }
}

/// A checked event: answered at once (duplicate, unknown agent) or handed to its actor.
#[derive(Debug)]
pub enum Dispatched {
    Answered(EventAnswer),
    Pending(oneshot::Receiver<TelephonyAnswer>),
}

/// Why an event was not processed at all.
#[derive(Debug)]
pub enum EventError {
    Bad(BadMessage),
    /// The hub is shutting down.
    Unavailable,
}

impl Hub {
    /// Processes one telephony event from a socket or `POST /api/v1/telephony/events`.
    /// Checks one telephony event and hands it to its agent's actor, without waiting for
    /// the actor's answer: a socket dispatches its events in arrival order (so one agent's
    /// events keep their order) while earlier answers are still being computed.
    pub async fn telephony_dispatch(&self, req: &Request) -> Result<Dispatched, EventError> {
        let kind = match req.kind.as_str() {
            "call_offered" => EventKind::Offered,
            "call_answered" => EventKind::Answered,
            "call_cancelled" => EventKind::Cancelled,
            "call_ended" => EventKind::Ended,
            "outbound_started" => EventKind::Outbound,
            "call_no_answer" => EventKind::NoAnswer,
            "call_rejected" => EventKind::Rejected,
            other => {
                return Err(EventError::Bad(
                    req.bad(format!("unknown message type {other:?}")),
                ))
            }
        };
        req.check_text_fields().map_err(EventError::Bad)?;
        let event_id = match &req.event_id {
            Some(id) if !id.is_empty() => id.clone(),
            _ => {
                return Err(EventError::Bad(
                    req.bad(format!("{} needs event_id", req.kind)),
                ))
            }
        };
        let call_id = req.require_call_id().map_err(EventError::Bad)?;
        let agent_id = req.require_agent_id().map_err(EventError::Bad)?;
        let core = &self.core;
        if let Some(reply) = core.dedup.get(&event_id) {
            core.metrics.telephony_event(true, false);
            return Ok(Dispatched::Answered(EventAnswer {
                answer: TelephonyAnswer {
                    reply,
                    duplicate: true,
                    stale: false,
                    // The first answer may still be on its way to the disk.
                    ticket: core.ack_barrier(),
                },
            }));
        }
        let handle = if kind == EventKind::Outbound {
            Some(self.agent_or_create(&agent_id))
        } else {
            self.agent(&agent_id)
        };
        let Some(handle) = handle else {
            let reply = unknown_agent_reply(kind, &agent_id);
            let ticket = core
                .store
                .record_event_id(&event_id, &reply, core.clock.now_ms());
            core.dedup.insert(&event_id, reply.clone());
            core.metrics.telephony_event(false, false);
            return Ok(Dispatched::Answered(EventAnswer {
                answer: TelephonyAnswer {
                    reply,
                    duplicate: false,
                    stale: false,
                    ticket,
                },
            }));
        };
        let input = match kind {
            EventKind::Offered => Input::CallOffered {
                ring_timeout_ms: self.ring_timeout_ms(req, &agent_id),
                call_id,
                from: req.from.clone(),
                to: req.to.clone(),
                ring_group: req.ring_group.clone(),
            },
            EventKind::Answered => Input::CallAnswered { call_id },
            EventKind::Cancelled => Input::CallCancelled { call_id },
            EventKind::Ended => Input::CallEnded { call_id },
            EventKind::Outbound => Input::OutboundStarted {
                call_id,
                to: req.to.clone(),
            },
            EventKind::NoAnswer => Input::CallNoAnswer { call_id },
            EventKind::Rejected => Input::CallRejected { call_id },
        };
        let pending = handle
            .telephony_dispatch(Some(event_id), input)
            .await
            .map_err(|_| EventError::Unavailable)?;
        Ok(Dispatched::Pending(pending))
    }

    /// Processes one telephony event and waits for its answer (the HTTP endpoint).
    pub async fn telephony_event(&self, req: &Request) -> Result<EventAnswer, EventError> {
        match self.telephony_dispatch(req).await? {
            Dispatched::Answered(answer) => Ok(answer),
            Dispatched::Pending(pending) => self.telephony_answer(pending).await,
        }
    }

    /// Waits for the actor's answer to a dispatched event.
    pub async fn telephony_answer(
        &self,
        pending: oneshot::Receiver<TelephonyAnswer>,
    ) -> Result<EventAnswer, EventError> {
        let answer = pending.await.map_err(|_| EventError::Unavailable)?;
        self.core
            .metrics
            .telephony_event(answer.duplicate, answer.stale);
        Ok(EventAnswer { answer })
    }

    /// Ring timeout of an offer: the offer's own, else its ring group's, else one of the
    /// agent's ring groups', else the hub default.
    fn ring_timeout_ms(&self, req: &Request, agent_id: &AgentId) -> u64 {
        if let Some(ms) = req.ring_timeout_ms {
            return ms;
        }
        let dir = self.core.directory();
        req.ring_group
            .as_deref()
            .and_then(|g| dir.ring_timeout_ms(g))
            .or_else(|| {
                dir.groups_of(agent_id)
                    .into_iter()
                    .find_map(|g| dir.ring_timeout_ms(g))
            })
            .unwrap_or(self.core.settings.ring_timeout.as_millis() as u64)
    }
}

fn unknown_agent_reply(kind: EventKind, agent_id: &AgentId) -> StoredReply {
    if kind == EventKind::Offered {
        return StoredReply {
            error: None,
            fields: Arc::from(r#""accepted":false,"reason":"unknown_agent","status":null"#),
        };
    }
    StoredReply {
        error: Some(ErrorCode::UnknownAgent),
        fields: Arc::from(format!(
            r#""message":{}"#,
            crate::protocol::json_string(&format!("unknown agent {agent_id}"))
        )),
    }
}
