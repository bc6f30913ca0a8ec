//! What the adapter does with each Twilio request and each hub notification: route an
//! incoming call to the longest-available agent of its ring group, hunt on no-answer and
//! reject, turn call progress into telephony events, and move a live call on through the
//! REST API when the hub ends a ring (console Decline, the hub's ring timer).
//!
//! Event ids: `twilio:<CallSid>:<status>[:<SequenceNumber>]` for status callbacks,
//! `twilio:<DialCallSid>:<DialCallStatus>:action` for `<Dial>` actions and
//! `twilio:<CallSid>:offer:<agent>` for offers, so a retried webhook repeats the same id and
//! the hub changes nothing.

use serde_json::{json, Value};
use std::time::Duration;

use crate::calls::{Attempt, Call, Calls, Move, Mover};
use crate::hub::{HubClient, HubError, Notice};
use crate::rest::Rest;
use crate::routing::{GroupPolicy, Routing};
use crate::twiml;

/// The form parameters of one Twilio request.
#[derive(Debug, Clone, Default)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// The first value of a parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self, name: &str) -> &str {
        self.get(name).unwrap_or("")
    }
}

/// What the adapter needs besides its collaborators.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Called numbers to ring groups, and the groups' settings.
    pub routing: Routing,
    /// `scheme://host[:port][/prefix]` as Twilio reaches the adapter.
    pub public_url: String,
    /// Longest time a webhook may take before the fallback is answered.
    pub deadline: Duration,
    /// Added to the group's ring timeout in the hub's offer, so Twilio's own `no-answer`
    /// normally ends a ring and the hub's timer is only a backstop.
    pub hub_ring_margin: Duration,
}

/// The adapter's shared state.
pub struct App {
    /// Routing and timing.
    pub behaviour: Behaviour,
    /// The hub connection.
    pub hub: HubClient,
    /// Calls being hunted.
    pub calls: Calls,
    /// Twilio's REST API.
    pub rest: Rest,
    /// Woken whenever a REST move ends, so a late `<Dial>` action waiting on one answers
    /// with its outcome.
    pub moved: tokio::sync::Notify,
}

impl App {
    fn url(&self, path: &str, agent: &str, group: &str) -> String {
        let query =
            serde_urlencoded::to_string([("agent", agent), ("group", group)]).unwrap_or_default();
        format!(
            "{}{path}?{query}",
            self.behaviour.public_url.trim_end_matches('/')
        )
    }

    /// The number's Voice webhook (and the TwiML App's: `From=client:<agent>` dials out).
    pub async fn voice(&self, p: &Params, call_sid: &str) -> String {
        if let Some(agent) = p.text("From").strip_prefix("client:") {
            return self.outbound(p, call_sid, agent).await;
        }
        let to = p.text("To");
        let Some(group) = self.behaviour.routing.group_of(to).map(str::to_string) else {
            tracing::warn!(
                call_sid,
                "called number {to:?} is not mapped to a ring group ([numbers] of the \
                 routing file): answering the unmapped-number fallback"
            );
            return twiml::fallback(&self.behaviour.routing.unmapped);
        };
        if let Some(answer) = self.calls.answer_for(call_sid, "voice") {
            return answer; // a retried webhook
        }
        self.calls
            .ensure(call_sid, Call::new(&group, p.text("From"), to));
        let policy = self.behaviour.routing.policy(&group).clone();
        let answer = self.hunt_within_deadline(call_sid, &policy).await;
        self.calls.remember_answer(call_sid, "voice", &answer);
        answer
    }

    async fn hunt_within_deadline(&self, call_sid: &str, policy: &GroupPolicy) -> String {
        match tokio::time::timeout(self.behaviour.deadline, self.hunt(call_sid, policy)).await {
            Ok(answer) => answer,
            Err(_) => {
                tracing::warn!(call_sid, "hub too slow: answering the fallback");
                twiml::fallback(&policy.fallback)
            }
        }
    }

    /// Offers the call to the longest-available agent not tried yet; TwiML that dials the
    /// first one who takes it, or the fallback.
    async fn hunt(&self, call_sid: &str, policy: &GroupPolicy) -> String {
        let Some(call) = self.calls.get(call_sid) else {
            return twiml::fallback(&policy.fallback);
        };
        if call.tried.len() >= policy.max_attempts as usize {
            return twiml::fallback(&policy.fallback);
        }
        let agents = match self.hub.available(&call.group).await {
            Ok(agents) => agents,
            Err(e) => {
                tracing::warn!(call_sid, "cannot list available agents: {e}");
                return twiml::fallback(&policy.fallback);
            }
        };
        let ring_ms = u64::from(policy.ring_timeout_secs) * 1000
            + self.behaviour.hub_ring_margin.as_millis() as u64;
        for agent in agents.iter().filter(|a| !call.tried.contains(a)) {
            let offer = json!({
                "type": "call_offered",
                "event_id": format!("twilio:{call_sid}:offer:{agent}"),
                "call_id": call_sid, "agent_id": agent,
                "from": call.from, "to": call.to, "ring_group": call.group,
                "ring_timeout_ms": ring_ms,
            });
            match self.hub_event(offer).await {
                Ok(reply) if reply["accepted"] == true => {
                    self.calls.ringing(call_sid, agent);
                    return twiml::dial_agent(&twiml::DialAgent {
                        agent,
                        timeout_secs: policy.ring_timeout_secs,
                        action_url: &self.url("/twilio/dial-action", agent, &call.group),
                        status_url: &self.url("/twilio/agent-status", agent, &call.group),
                    });
                }
                Ok(_) => continue, // taken meanwhile: the next one
                Err(e) => {
                    tracing::warn!(call_sid, "offer failed: {e}");
                    return twiml::fallback(&policy.fallback);
                }
            }
        }
        twiml::fallback(&policy.fallback)
    }

    /// The `<Dial>` action: how ringing `agent` ended. Busy and no-answer hunt on.
    pub async fn dial_action(
        &self,
        p: &Params,
        call_sid: &str,
        agent: &str,
        group: &str,
    ) -> String {
        let dial_sid = p.text("DialCallSid");
        let status = p.text("DialCallStatus");
        let key = format!("action:{dial_sid}:{agent}");
        if let Some(answer) = self.calls.answer_for(call_sid, &key) {
            return answer; // a retried action request
        }
        // A call the adapter forgot (restart, capacity) is rebuilt from the request.
        self.calls
            .ensure(call_sid, Call::new(group, p.text("From"), p.text("To")));
        if self.calls.get(call_sid).is_some_and(|c| c.tried.is_empty()) {
            self.calls.ringing(call_sid, agent);
        }
        let policy = self.behaviour.routing.policy(group).clone();
        match status {
            "completed" | "answered" => {
                // The agent talked. Callbacks are not ordered: if the leg's `answered` has
                // not arrived, report it (same id as the leg's own inference), then the
                // end; the leg's own `completed` is then stale at the hub.
                if self.calls.close(call_sid, agent, Mover::Action) {
                    let implied = format!("twilio:{dial_sid}:in-progress:implied");
                    let _ = self
                        .send(event("call_answered", &implied, call_sid, agent))
                        .await;
                }
                let id = format!("twilio:{dial_sid}:completed:action");
                if let Err(e) = self.send(event("call_ended", &id, call_sid, agent)).await {
                    tracing::warn!(call_sid, "cannot report call_ended: {e}");
                }
                self.calls.remove(call_sid);
                twiml::hang_up()
            }
            "canceled" => {
                if self.calls.close(call_sid, agent, Mover::Action) {
                    let id = format!("twilio:{dial_sid}:canceled:action");
                    self.cancelled(&id, call_sid, agent).await;
                }
                self.calls.remove(call_sid);
                twiml::hang_up()
            }
            "busy" | "no-answer" | "failed" => {
                match self.calls.attempt(call_sid, agent) {
                    Some(Attempt::Open) => {
                        if self.calls.close(call_sid, agent, Mover::Action) {
                            let id = format!("twilio:{dial_sid}:{status}:action");
                            self.ring_outcome(&id, status, call_sid, agent).await;
                        }
                    }
                    Some(Attempt::Closed(Mover::Action)) => {}
                    // The hub ended this ring and a REST update moved the call on, or
                    // tried to: answer where the hunt stands now.
                    Some(Attempt::Closed(Mover::Rest)) | None => {
                        let answer = self.after_rest_move(call_sid, &policy).await;
                        self.calls.remember_answer(call_sid, &key, &answer);
                        return answer;
                    }
                }
                let answer = self.hunt_within_deadline(call_sid, &policy).await;
                self.calls.remember_answer(call_sid, &key, &answer);
                answer
            }
            other => {
                tracing::warn!(call_sid, "unexpected DialCallStatus {other:?}");
                twiml::fallback(&policy.fallback)
            }
        }
    }

    /// The answer to a `<Dial>` action for a ring the hub ended (console Decline, hub timer).
    /// When the REST update worked, Twilio runs its TwiML and the old `<Dial>` is gone:
    /// nothing to do. When it failed, Twilio is still on the old `<Dial>`, and this request
    /// is the one chance to move the caller: it gets the latest move's TwiML, which reflects
    /// every ring ended since (never an offer that has ended too). While a move is still in
    /// flight, the request waits for it, up to the webhook deadline.
    async fn after_rest_move(&self, call_sid: &str, policy: &GroupPolicy) -> String {
        let until = tokio::time::Instant::now() + self.behaviour.deadline;
        loop {
            let woken = self.moved.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            match self.calls.take_move(call_sid) {
                None => return twiml::empty(),
                Some(Move::Undelivered(answer)) => {
                    tracing::info!(call_sid, "late <Dial> action answered with the move the REST update could not deliver");
                    return answer;
                }
                Some(Move::InFlight) => {
                    if tokio::time::timeout_at(until, woken).await.is_err() {
                        tracing::warn!(
                            call_sid,
                            "REST move still in flight at the deadline: answering the fallback"
                        );
                        return twiml::fallback(&policy.fallback);
                    }
                }
            }
        }
    }

    /// The agent leg's status callback (`ringing answered completed`, and its final status).
    pub async fn agent_status(&self, p: &Params, agent: &str) -> Result<(), HubError> {
        let sid = p.text("CallSid");
        let parent = p.get("ParentCallSid").unwrap_or(sid);
        let status = p.text("CallStatus");
        let id = event_id(sid, status, p.get("SequenceNumber"));
        match status {
            "in-progress" | "answered" => {
                self.calls.close(parent, agent, Mover::Action);
                self.send(event("call_answered", &id, parent, agent)).await
            }
            "completed" => {
                // `completed` means the agent picked up. If `answered` has not arrived
                // (callbacks are not ordered), report it first, so the call ends into
                // wrap-up; the late `answered` is then stale at the hub.
                if self.calls.close(parent, agent, Mover::Action) {
                    let implied = format!("twilio:{sid}:in-progress:implied");
                    self.send(event("call_answered", &implied, parent, agent))
                        .await?;
                }
                self.send(event("call_ended", &id, parent, agent)).await
            }
            "canceled" => {
                if self.calls.close(parent, agent, Mover::Action) {
                    self.cancelled(&id, parent, agent).await;
                }
                Ok(())
            }
            "busy" | "no-answer" | "failed" => {
                if self.calls.close(parent, agent, Mover::Action) {
                    self.ring_outcome(&id, status, parent, agent).await;
                }
                Ok(())
            }
            _ => Ok(()), // initiated, ringing: the hub already shows the ring
        }
    }

    /// The call's own status callback (the number's, the TwiML App's).
    pub async fn call_status(&self, p: &Params) -> Result<(), HubError> {
        let sid = p.text("CallSid");
        let status = p.text("CallStatus");
        if !matches!(
            status,
            "completed" | "busy" | "no-answer" | "failed" | "canceled"
        ) {
            return Ok(());
        }
        let id = event_id(sid, status, p.get("SequenceNumber"));
        if let Some(agent) = p.text("From").strip_prefix("client:") {
            return self.send(event("call_ended", &id, sid, agent)).await;
        }
        // An inbound call ended: if an agent still rings for it, the caller hung up.
        if let Some(agent) = self
            .calls
            .get(sid)
            .and_then(|c| c.current_agent().map(str::to_string))
        {
            if self.calls.close(sid, &agent, Mover::Action) {
                self.cancelled(&id, sid, &agent).await;
            }
        }
        self.calls.remove(sid);
        Ok(())
    }

    /// A call an agent places from the softphone.
    async fn outbound(&self, p: &Params, call_sid: &str, agent: &str) -> String {
        let to = p.text("To");
        let caller_id = self.behaviour.routing.caller_id.as_deref();
        let frame = json!({
            "type": "outbound_started", "event_id": format!("twilio:{call_sid}:outbound"),
            "call_id": call_sid, "agent_id": agent, "to": to,
        });
        match tokio::time::timeout(self.behaviour.deadline, self.hub_event(frame)).await {
            Ok(Ok(reply)) if reply["type"] == "error" && reply["code"] == "invalid_state" => {
                twiml::say_and_hang_up("You cannot place a call now: another call is active.")
            }
            Ok(Ok(_)) => twiml::dial_out(to, caller_id),
            // The presence hub being down must not stop an agent from calling out.
            Ok(Err(_)) | Err(_) => {
                tracing::warn!(call_sid, "hub unreachable: outbound call placed unreported");
                twiml::dial_out(to, caller_id)
            }
        }
    }

    /// A notification from the hub: a console Decline, or the hub's ring timer.
    pub async fn notice(&self, n: &Notice) {
        if !matches!(n.kind.as_str(), "call_declined" | "ring_timeout") {
            return;
        }
        if !self.calls.close(&n.call_id, &n.agent_id, Mover::Rest) {
            return; // already handled (Twilio reported first, or our own event)
        }
        let Some(call) = self.calls.get(&n.call_id) else {
            return;
        };
        let Some(generation) = self.calls.start_move(&n.call_id) else {
            return;
        };
        tracing::info!(call_id = %n.call_id, agent_id = %n.agent_id, "hub sent {}: moving the caller on", n.kind);
        let policy = self.behaviour.routing.policy(&call.group).clone();
        let answer = self.hunt_within_deadline(&n.call_id, &policy).await;
        let undelivered = match self.rest.update_call(&n.call_id, &answer).await {
            Ok(()) => {
                tracing::info!(call_id = %n.call_id, "call updated through Twilio's REST API");
                None
            }
            Err(e) => {
                tracing::warn!(call_id = %n.call_id, "cannot move the call on: {e}");
                // Twilio's `<Dial>` action for the old ring will then get this answer,
                // unless a later move replaces it.
                Some(answer)
            }
        };
        self.calls.end_move(&n.call_id, generation, undelivered);
        self.moved.notify_waiters();
    }

    async fn ring_outcome(&self, id: &str, status: &str, call_id: &str, agent: &str) {
        let kind = if status == "busy" {
            "call_rejected"
        } else {
            "call_no_answer"
        };
        if let Err(e) = self.send(event(kind, id, call_id, agent)).await {
            tracing::warn!(call_id, "cannot report {kind}: {e}");
        }
    }

    async fn cancelled(&self, id: &str, call_id: &str, agent: &str) {
        let mut frame = event("call_cancelled", id, call_id, agent);
        frame["cause"] = Value::from("caller_hangup");
        if let Err(e) = self.send(frame).await {
            tracing::warn!(call_id, "cannot report call_cancelled: {e}");
        }
    }

    async fn send(&self, frame: Value) -> Result<(), HubError> {
        let reply = self.hub_event(frame).await?;
        if reply["type"] == "error" {
            tracing::warn!("hub refused an event: {}", reply["message"]);
        }
        Ok(())
    }

    /// Sends one telephony event and logs it with the hub's verdict, one info line per
    /// event (ids and statuses only: nothing secret travels in these frames).
    async fn hub_event(&self, frame: Value) -> Result<Value, HubError> {
        let kind = frame["type"].as_str().unwrap_or("?").to_string();
        let call_id = frame["call_id"].as_str().unwrap_or("").to_string();
        let agent_id = frame["agent_id"].as_str().unwrap_or("").to_string();
        let event_id = frame["event_id"].as_str().unwrap_or("").to_string();
        let result = self.hub.event(frame).await;
        let verdict = match &result {
            Ok(reply) => verdict(reply),
            Err(e) => format!("not sent: {e}"),
        };
        tracing::info!(call_id, agent_id, event_id, "hub event {kind}: {verdict}");
        result
    }
}

/// The hub's reply to an event, in a few words for the log.
fn verdict(reply: &Value) -> String {
    match reply["type"].as_str() {
        Some("error") => format!("refused ({})", reply["code"].as_str().unwrap_or("error")),
        _ if reply["duplicate"] == true => "duplicate (no change)".to_string(),
        _ if reply["stale"] == true => "stale (no change)".to_string(),
        _ if reply["accepted"] == true => "accepted (agent ringing)".to_string(),
        _ if reply["accepted"] == false => format!(
            "not accepted ({})",
            reply["reason"].as_str().unwrap_or("agent not available")
        ),
        _ => "applied".to_string(),
    }
}

fn event(kind: &str, id: &str, call_id: &str, agent: &str) -> Value {
    json!({"type": kind, "event_id": id, "call_id": call_id, "agent_id": agent})
}

fn event_id(sid: &str, status: &str, seq: Option<&str>) -> String {
    match seq {
        Some(seq) => format!("twilio:{sid}:{status}:{seq}"),
        None => format!("twilio:{sid}:{status}"),
    }
}
