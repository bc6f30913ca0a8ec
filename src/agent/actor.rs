//! The private side of an agent actor: its loop, its timers, its tabs.
//!
//! On a single node a change is applied, published and queued to the store at once (the
//! caller awaits the commit ticket). In cluster mode (`cluster.rs`) a change is computed
//! on a copy, appended to the agents stream and only applied once JetStream acknowledged
//! it; the awaited append is the one other suspension point of the loop.

use std::borrow::Cow;
use std::future::{poll_fn, Future};
use std::sync::Arc;
use std::task::Poll;

use super::alarm::Alarm;
use super::env::AgentEnv;
use super::handle::{Applied, Command, Profile, TabId, TelephonyAnswer};
use super::mailbox;
use crate::cluster::NodeId;
use crate::model::machine::{apply, next_deadline};
use crate::model::{AgentState, Effect, Input, Millis, Outcome, Policy, Reason, Rejection};
use crate::outbox::{Outbound, Outbox};
use crate::protocol::{self, EventResult, LatestState, Published, Text};
use crate::store::{CommitTicket, StatusBefore};
use cluster::Pending;
use extras::Extras;

mod cluster;
mod extras;
mod node_tabs;

/// Close code sent with `logged_out`.
const CLOSE_NORMAL: u16 = 1000;

struct Tab {
    /// Tells this tab from the others (detach, the origin of a logout).
    id: TabId,
    /// The tab's socket queue.
    outbox: Outbox,
}

/// What one applied input did (see `AgentActor::step`).
struct Stepped {
    outcome: Outcome,
    /// Set when the stored state must change: the status before and the time.
    dirty: Option<(StatusBefore, Millis)>,
    /// The update, when the change was published.
    published: Option<Arc<Published>>,
}

/// What woke the actor up.
enum Wake {
    /// The alarm's deadline passed.
    Timer,
    /// A request from a handle.
    Command(Command),
    /// Every handle is gone and the mailbox is drained: the actor ends.
    Closed,
}

/// What the actor does after a command.
enum After {
    Continue,
    /// The agent left the directory: stop now if idle (not after the idle period).
    StopIfIdle,
    /// Cluster mode: a change waits for the stream's acknowledgement before it counts.
    Append(Box<Pending>),
    /// Cluster mode: another node owns the agent now; the actor ends.
    Stop,
}

/// Kept small: its size is paid by every agent in its task (see `run`).
pub(super) struct AgentActor {
    /// Requests from handles; ends (and so does the actor) when every handle is dropped.
    receiver: mailbox::Receiver<Command>,
    /// The services it uses (fan-out, notifier, store, clock, ...).
    env: AgentEnv,
    /// The agent's state; name and teams are those of its profile (directory or token).
    state: AgentState,
    /// The earliest of the ring, wrap-up and disconnect-grace deadlines.
    alarm: Alarm,
    /// Open tabs (here and, in cluster mode, per node) and the profile's wrap-up override:
    /// one pointer, and memory only while one of them is set (`extras.rs`).
    extras: Extras,
    /// The latest published state, compact (what replies carry; its `seq` is the one of
    /// the agent's last update). On a single node the fan-out's own entry; its frame is
    /// not kept (rendered again for a `hello` or a reply that needs it).
    latest: Arc<LatestState>,
}

/// Open tabs of one agent per node (cluster mode); nodes with none are not kept.
pub(crate) type NodeTabs = std::collections::BTreeMap<NodeId, u32>;

impl AgentActor {
    pub(super) fn new(
        receiver: mailbox::Receiver<Command>,
        env: AgentEnv,
        mut state: AgentState,
        profile: Profile,
        seq: u64,
    ) -> Self {
        state.name = profile.name;
        state.teams = profile.teams;
        let latest = if env.cluster().is_some() {
            // Listed in this node's snapshots (if the stream has nothing of it yet); the
            // actor's own entry carries the sequence its next append must follow.
            env.fanout().register(&state);
            Arc::new(LatestState::of(&state, seq))
        } else {
            env.fanout().register(&state)
        };
        AgentActor {
            receiver,
            env,
            state,
            alarm: Alarm::new(),
            extras: Extras::with_wrap_up(wrap_up_of(profile.wrap_up_ms)),
            latest,
        }
    }

    /// Cluster mode: the actor of an agent taken over with its open tabs per node.
    pub(super) fn with_node_tabs(mut self, tabs: NodeTabs) -> Self {
        self.extras.set_node_tabs(tabs);
        self
    }

    /// The actor's loop, until every handle is dropped.
    ///
    /// Not an `async fn`: one would move `self` from its argument into a local and keep
    /// room for both in the task (the actor twice over, in every agent's task). The block
    /// uses the captured actor in place.
    ///
    /// The select of the timer and the mailbox is written out (one `poll_fn` borrowing the
    /// actor) rather than `tokio::select!`, whose per-branch futures would sit in every
    /// idle agent's task next to the actor.
    #[allow(clippy::manual_async_fn)] // deliberately not an `async fn`: see above
    pub(super) fn run(mut self) -> impl Future<Output = ()> + Send {
        async move {
            loop {
                let at = match next_deadline(&self.state) {
                    Some((at, _)) => Some(self.env.clock().instant_at(at)),
                    // Nothing to wait for: stop after the idle period, unless something
                    // happens first (every wake-up starts the period again).
                    None if self.is_idle() => {
                        Some(tokio::time::Instant::now() + self.env.defaults().actor_idle)
                    }
                    None => None,
                };
                self.alarm.set(at);
                // Biased, timer first: a deadline that has passed (a ring that expired
                // while the hub was down, or while this actor was busy) is applied before
                // any request, even one that arrived at the same instant.
                // Matched in place: the wake-up (a command) is not kept in the task's state
                // while a cluster append is awaited below.
                let mut after = match poll_fn(|cx| {
                    if self.alarm.poll(cx).is_ready() {
                        return Poll::Ready(Wake::Timer);
                    }
                    self.receiver
                        .poll_recv(cx)
                        .map(|cmd| cmd.map_or(Wake::Closed, Wake::Command))
                })
                .await
                {
                    Wake::Timer => match next_deadline(&self.state) {
                        // The state has not changed since the alarm was set: same timer.
                        Some((_, which)) if self.env.cluster().is_some() => {
                            self.propose(which.input(), None, cluster::Then::Timer)
                        }
                        Some((_, which)) => {
                            let _ = self.apply(which.input(), None);
                            After::Continue
                        }
                        // The idle period passed.
                        None => After::StopIfIdle,
                    },
                    Wake::Command(cmd) => self.handle(cmd),
                    Wake::Closed => break,
                };
                // Cluster mode: the change counts once the stream acknowledged it.
                while let After::Append(pending) = after {
                    // One pointer in the task's state, not the append future itself.
                    let (pending, stored) = cluster::Settle(Some(pending)).await;
                    after = self.settle(pending, stored);
                }
                match after {
                    After::StopIfIdle if self.stop_if_idle() => break,
                    After::Stop => break,
                    _ => {}
                }
            }
        }
    }

    /// No tab, no call, no timer: nothing this actor must keep in memory.
    fn is_idle(&self) -> bool {
        self.extras.tabs().is_empty()
            && self.extras.node_tabs().is_none()
            && self.state.call.is_none()
            && next_deadline(&self.state).is_none()
    }

    /// Stops the actor if it is idle and nothing waits in its mailbox (a request that got
    /// in first keeps it running; later ones find the mailbox closed and the router
    /// starts the agent again from the store). Its state is in the store already.
    fn stop_if_idle(&mut self) -> bool {
        if !self.is_idle() || !self.receiver.close_if_empty() {
            return false;
        }
        self.env.retired(self.latest.clone());
        true
    }

    fn policy(&self) -> Policy {
        let d = self.env.defaults();
        Policy {
            wrap_up_ms: self
                .extras
                .wrap_up_ms()
                .map_or(d.wrap_up.as_millis() as u64, u64::from),
            disconnect_grace_ms: d.disconnect_grace.as_millis() as u64,
            max_missed_in_row: d.max_missed_in_row,
        }
    }

    fn handle(&mut self, cmd: Command) -> After {
        if self.env.cluster().is_some() {
            return self.handle_cluster(cmd);
        }
        match cmd {
            Command::Attach {
                outbox,
                hint,
                reply,
            } => {
                if let Some(hint) = hint {
                    self.merge_hint(*hint);
                }
                // Unique in the process, so unique among this agent's tabs.
                let id = TabId::next();
                let fresh = self.apply(Input::SocketOpened, None).ok().and_then(|a| a.1);
                self.hello(&outbox, fresh.as_deref());
                self.extras.push_tab(Tab { id, outbox });
                let _ = reply.send(Ok(id));
            }
            Command::Detach { tab } => {
                if self.extras.remove_tab(tab) {
                    let _ = self.apply(Input::SocketClosed, None);
                }
            }
            Command::Apply {
                input,
                origin,
                reply,
            } => {
                let result = self.apply(*input, origin).map(|(ticket, _)| Applied {
                    state: self.latest.clone(),
                    // Nothing to store: the answer still waits for what was queued before
                    // (this agent's earlier change may not be committed yet).
                    ticket: ticket.unwrap_or_else(|| self.env.ack_barrier()),
                });
                let _ = reply.send(Ok(result));
            }
            Command::Telephony {
                event_id,
                input,
                reply,
            } => {
                let answer = self.telephony(&event_id, *input);
                let _ = reply.send(Ok(answer));
            }
            Command::SetProfile { profile, stop } => {
                let Profile {
                    name,
                    teams,
                    wrap_up_ms,
                } = *profile;
                self.extras.set_wrap_up_ms(wrap_up_of(wrap_up_ms));
                if (&self.state.name, &self.state.teams) != (&name, &teams) {
                    let status_before = StatusBefore::from(&self.state);
                    self.state.name = name;
                    self.state.teams = teams;
                    self.state.version += 1;
                    self.publish(&[], None);
                    let now = self.env.clock().now_ms();
                    // Queued; nobody waits for a profile change's commit.
                    drop(
                        self.env
                            .store()
                            .record_change(status_before, &self.state, now),
                    );
                }
                if stop {
                    return After::StopIfIdle;
                }
            }
            // Cluster mode only (`handle_cluster`): a single node counts no tabs per node.
            Command::AttachNode { reply, .. } => {
                let _ = reply.send(Err(super::handle::ActorError::Stopped));
            }
            Command::DetachNode { .. } | Command::NodesAlive { .. } => {}
        }
        After::Continue
    }

    /// Token claims fill in what the directory does not know (the router passes a hint
    /// only for an agent that is not in the directory).
    fn merge_hint(&mut self, hint: Profile) {
        if hint.name.is_some() {
            self.state.name = hint.name;
        }
        if !hint.teams.is_empty() {
            self.state.teams = hint.teams;
        }
    }

    /// Applies one input; on a change, publishes it, carries out its effects and queues it
    /// for the durable store. The ticket (when something was queued) resolves once the new
    /// state is committed; the actor never waits for it. The update, if one was published,
    /// comes back too (its frame is already rendered).
    fn apply(
        &mut self,
        input: Input,
        origin: Option<TabId>,
    ) -> Result<(Option<CommitTicket>, Option<Arc<Published>>), Rejection> {
        let Stepped {
            dirty, published, ..
        } = self.step(input, origin)?;
        // A change was just published: the store keeps its JSON instead of serializing again.
        let ticket = dirty.map(|(before, at)| {
            let store = self.env.store();
            store.record_published_change(before, &self.state, published.as_ref(), at)
        });
        Ok((ticket, published))
    }

    /// Applies one input and publishes a change, without storing it. Returns what a record
    /// of it needs when the stored state must change (the status before and the time), and
    /// the update when there was a change. A change of the session alone (not on the wire)
    /// is stored too, so a restart knows whether the agent was logged in.
    fn step(&mut self, input: Input, origin: Option<TabId>) -> Result<Stepped, Rejection> {
        let now = self.env.clock().now_ms();
        let policy = self.policy();
        let before = StatusBefore::from(&self.state);
        let session = self.state.session;
        let outcome = apply(&mut self.state, input, now, &policy)?;
        let (dirty, published) = match &outcome {
            Outcome::Changed(effects) => (true, Some(self.publish(effects, origin))),
            Outcome::Unchanged | Outcome::Stale => (self.state.session != session, None),
        };
        Ok(Stepped {
            outcome,
            dirty: dirty.then_some((before, now)),
            published,
        })
    }

    /// Publishes the current state and delivers it; returns the update.
    fn publish(&mut self, effects: &[Effect], origin: Option<TabId>) -> Arc<Published> {
        let published = self.env.fanout().publish(&self.state);
        self.latest = published.latest.clone();
        self.deliver(&published.frame, effects, origin);
        published
    }

    /// Pushes the update's frame to the agent's tabs and carries out the effects.
    fn deliver(&mut self, frame: &Text, effects: &[Effect], origin: Option<TabId>) {
        for tab in self.extras.tabs() {
            let _ = tab.outbox.push(frame.clone());
        }
        for effect in effects {
            match effect {
                Effect::OfferToTabs => {
                    let frame = protocol::call_offered(&self.state);
                    for tab in self.extras.tabs() {
                        let _ = tab.outbox.push(frame.clone());
                    }
                }
                Effect::Telephony(notice) => {
                    // Cluster mode: stored with the change; every node's follower tells its
                    // own adapters (`hub::view`).
                    if self.env.cluster().is_none() {
                        self.env.notifier().notify(&self.state.agent_id, notice);
                    }
                    self.env.metrics().telephony_notice();
                }
                Effect::LoggedOut(reason) => self.close_tabs(*reason, origin),
            }
        }
    }

    /// Sends `logged_out` and closes every tab but the one that asked (it answers itself).
    fn close_tabs(&mut self, reason: Reason, origin: Option<TabId>) {
        // Tabs on nodes (cluster mode) are closed by their nodes, which see the logout in
        // the followed stream.
        self.extras.set_node_tabs(NodeTabs::new());
        let frame = protocol::logged_out(reason);
        for tab in self.extras.take_tabs() {
            if Some(tab.id) == origin {
                continue;
            }
            let _ = tab.outbox.push(frame.clone());
            let _ = tab
                .outbox
                .push_unbounded(Outbound::Close(CLOSE_NORMAL, "logged out"));
        }
    }

    /// The latest state's JSON: that of `fresh` (the update just published), else rendered
    /// from the kept state.
    fn agent_json<'a>(&self, fresh: Option<&'a Published>) -> Cow<'a, str> {
        match fresh {
            Some(p) => Cow::Borrowed(p.agent_json()),
            None => Cow::Owned(self.latest.json()),
        }
    }

    /// Greets a tab with the latest state (`fresh`: that update, when it was just
    /// published, so its JSON is not rendered again).
    fn hello(&self, outbox: &Outbox, fresh: Option<&Published>) {
        let env = &self.env;
        let _ = outbox.push(protocol::agent_hello(
            &self.agent_json(fresh),
            env.clock().now_ms(),
            &env.fanout().epoch(),
            self.latest.seq,
            env.node().as_str(),
        ));
        if self.state.status == crate::model::Status::Ringing {
            let _ = outbox.push(protocol::call_offered(&self.state));
        }
    }

    /// A telephony event: answered from the idempotency memory if its id was seen (checked
    /// here, once: the actor serializes its agent's events, so two copies of one event in
    /// flight cannot both apply), else applied and its reply remembered (in memory, and in
    /// the durable store in the same transaction as the change it caused, so a restart
    /// neither forgets nor repeats it).
    fn telephony(&mut self, event_id: &str, input: Input) -> TelephonyAnswer {
        if let Some(reply) = self.env.events().get(event_id) {
            self.env.metrics().telephony_event(true, false);
            return TelephonyAnswer {
                reply,
                duplicate: true,
                // The first answer may still be on its way to the disk.
                ticket: self.env.ack_barrier(),
            };
        }
        let is_offer = matches!(input, Input::CallOffered { .. });
        let (result, dirty, fresh) = match self.step(input, None) {
            Ok(s) => (Ok(s.outcome), s.dirty, s.published),
            Err(rejection) => (Err(rejection), None, None),
        };
        let result = EventResult::of(&result);
        let stale = result == EventResult::Stale;
        let published = fresh.as_ref().filter(|_| result == EventResult::Changed);
        let json = self.agent_json(fresh.as_deref());
        let reply = protocol::telephony_reply(is_offer, result, self.state.status, &json);
        let store = self.env.store();
        let ticket = match dirty {
            Some((before, at)) => {
                store.record_change_with_event(before, &self.state, published, at, event_id, &reply)
            }
            None => store.record_event_id(event_id, &reply, self.env.clock().now_ms()),
        };
        self.env.events().insert(event_id, reply.clone());
        self.env.metrics().telephony_event(false, stale);
        TelephonyAnswer {
            reply,
            duplicate: false,
            ticket,
        }
    }
}

/// A profile's wrap-up as the actor keeps it: `u32` milliseconds (49 days; longer ones
/// saturate), 8 bytes less in every agent's task than an `Option<u64>`.
fn wrap_up_of(ms: Option<u64>) -> Option<u32> {
    ms.map(|ms| u32::try_from(ms).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<F: Future>(_: fn(AgentActor) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn the_actor_task_stays_small() {
        // Every agent's task holds this future: tokio's task cell is the future plus 104
        // bytes (and 8 for the task tracker's token), rounded up to 128. At most 272 bytes
        // here keeps the cell at 384 (273 makes it 512). The actor must be in it once.
        let actor = std::mem::size_of::<AgentActor>();
        let run = future_size(AgentActor::run);
        assert!(run < 2 * actor, "the actor is stored twice: {run} bytes");
        assert!(
            run <= 272,
            "the actor's future grew to {run} bytes (actor {actor})"
        );
    }
}
