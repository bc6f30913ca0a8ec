//! The arithmetic of `resume`: which updates a resuming subscriber gets replayed (exactly
//! those after its `seq`, oldest first, through its filter), and when it gets a snapshot
//! instead (another epoch, a `seq` ahead of the hub's, a gap older than the history), each
//! followed by the live updates with nothing lost or doubled.

use super::*;
use crate::outbox::{outbox, OutboxReceiver};

/// One admin socket as the fan-out sees it: its outbox and its place in the feed.
struct Tap {
    tx: Outbox,
    rx: OutboxReceiver,
    sub: FeedCursor,
}

fn tap() -> Tap {
    let (tx, rx) = outbox(1 << 20);
    Tap { tx, rx, sub: None }
}
use crate::protocol::Ref;
use serde_json::Value;

const EPOCH: &str = "e1";

fn fanout(history_size: usize) -> Fanout {
    Fanout::new(Arc::from(EPOCH), history_size)
}

fn team(t: &str) -> TeamId {
    TeamId::parse(t).expect("team id")
}

fn agent_id(id: &str) -> AgentId {
    AgentId::parse(id).expect("agent id")
}

/// Publishes a change of `id` (in `teams`); returns its `seq`.
fn publish(f: &Fanout, id: &str, teams: &[&str]) -> u64 {
    let mut state = AgentState::new(agent_id(id), 1_000);
    state.teams = teams.iter().map(|t| team(t)).collect();
    state.version = f.stats().seq + 1;
    f.publish(&state).seq
}

/// Publishes `n` changes alternating between `a1` (team `sales`) and `a2` (team `support`).
fn publish_n(f: &Fanout, n: usize) {
    for i in 0..n {
        if i % 2 == 0 {
            publish(f, "a1", &["sales"]);
        } else {
            publish(f, "a2", &["support"]);
        }
    }
}

/// Every frame waiting for the socket, as JSON (a snapshot reply rendered as the socket
/// would), in the order the socket writes them: its outbox, then the feed.
fn drain(tap: &mut Tap) -> Vec<Value> {
    let mut out = Vec::new();
    while let Some(item) = tap.rx.try_recv() {
        match item {
            Outbound::Frame(f) => out.push(json(f.as_str())),
            Outbound::Frames(fs) => out.extend(fs.iter().map(|f| json(f.as_str()))),
            Outbound::Replay(us) => out.extend(us.iter().map(|u| json(u.frame().as_str()))),
            Outbound::Snapshot(reply) => out.push(json(&reply.render())),
            Outbound::Close(code, _) => panic!("unexpected close {code}"),
        }
    }
    if let Some(reader) = &mut tap.sub {
        while reader
            .read(usize::MAX, |f| {
                out.push(json(f.as_str()));
                true
            })
            .entries
            > 0
        {}
    }
    out
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("frame is JSON")
}

/// The `seq`s of the `agent` updates among `frames`.
fn update_seqs(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .filter(|f| f["type"] == "agent")
        .map(|f| f["seq"].as_u64().expect("seq"))
        .collect()
}

/// Resumes connection 1 from (`epoch`, `seq`) with `filter` and `ref` 7; returns the
/// result and what was queued.
fn resume(f: &Fanout, epoch: &str, seq: u64, filter: Filter) -> (ResumeResult, Vec<Value>, Tap) {
    let mut t = tap();
    let result = f.resume(1, epoch, seq, filter, &t.tx, Some(&Ref::Int(7)), &mut t.sub);
    let frames = drain(&mut t);
    (result, frames, t)
}

/// Checks the final `ok` of a recovered resume.
fn assert_recovered_ok(ok: &Value, replayed: usize, seq: u64) {
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(ok["ref"], 7, "{ok}");
    assert_eq!(ok["recovered"], true, "{ok}");
    assert_eq!(ok["replayed"], replayed, "{ok}");
    assert_eq!(ok["epoch"], EPOCH, "{ok}");
    assert_eq!(ok["seq"], seq, "{ok}");
}

/// Checks a snapshot answer: `recovered:false`, the hub's current `seq`, these agents.
fn assert_snapshot(frames: &[Value], seq: u64, agents: &[&str]) {
    assert_eq!(frames.len(), 1, "only the snapshot: {frames:?}");
    let ok = &frames[0];
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(ok["ref"], 7, "{ok}");
    assert_eq!(ok["recovered"], false, "{ok}");
    assert_eq!(ok["snapshot"]["epoch"], EPOCH, "{ok}");
    assert_eq!(ok["snapshot"]["seq"], seq, "{ok}");
    let ids: Vec<&str> = ok["snapshot"]["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .map(|a| a["agent_id"].as_str().expect("agent_id"))
        .collect();
    assert_eq!(ids, agents, "{ok}");
}

#[test]
fn resuming_from_the_last_seq_replays_nothing_and_subscribes() {
    let f = fanout(10);
    publish_n(&f, 4);
    let (result, frames, mut t) = resume(&f, EPOCH, 4, Filter::default());
    assert_eq!(result, ResumeResult::Recovered { replayed: 0 });
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_recovered_ok(&frames[0], 0, 4);
    // Subscribed: the next update follows.
    publish(&f, "a3", &[]);
    assert_eq!(update_seqs(&drain(&mut t)), [5]);
}

#[test]
fn resuming_mid_history_replays_exactly_the_later_updates_in_order_then_the_ok() {
    let f = fanout(10);
    publish_n(&f, 6);
    let (result, frames, mut t) = resume(&f, EPOCH, 2, Filter::default());
    assert_eq!(result, ResumeResult::Recovered { replayed: 4 });
    assert_eq!(update_seqs(&frames), [3, 4, 5, 6]);
    assert_eq!(frames.len(), 5, "the updates, then the ok: {frames:?}");
    assert_recovered_ok(&frames[4], 4, 6);
    publish(&f, "a1", &["sales"]);
    assert_eq!(
        update_seqs(&drain(&mut t)),
        [7],
        "live after the replay, nothing twice"
    );
}

#[test]
fn a_fresh_hub_resumes_seq_zero_with_nothing_to_replay() {
    let f = fanout(10);
    let (result, frames, _t) = resume(&f, EPOCH, 0, Filter::default());
    assert_eq!(result, ResumeResult::Recovered { replayed: 0 });
    assert_recovered_ok(&frames[0], 0, 0);
    // With every update still in history, seq 0 replays all of them.
    publish_n(&f, 3);
    let (result, frames, _t) = resume(&f, EPOCH, 0, Filter::default());
    assert_eq!(result, ResumeResult::Recovered { replayed: 3 });
    assert_eq!(update_seqs(&frames), [1, 2, 3]);
}

#[test]
fn the_oldest_kept_update_bounds_what_can_be_recovered() {
    // History of 3 after 8 updates: seqs 6, 7, 8 are kept.
    let f = fanout(3);
    publish_n(&f, 8);
    assert_eq!(f.stats().history_len, 3);
    // Missed 6..=8: all kept, recovered.
    let (result, frames, _t) = resume(&f, EPOCH, 5, Filter::default());
    assert_eq!(result, ResumeResult::Recovered { replayed: 3 });
    assert_eq!(update_seqs(&frames), [6, 7, 8]);
    // Missed 5..=8: 5 is gone, a snapshot instead (never a replay with a hole).
    let (result, frames, mut t) = resume(&f, EPOCH, 4, Filter::default());
    assert_eq!(result, ResumeResult::Snapshot);
    assert_snapshot(&frames, 8, &["a1", "a2"]);
    publish(&f, "a2", &["support"]);
    assert_eq!(
        update_seqs(&drain(&mut t)),
        [9],
        "subscribed after the snapshot"
    );
    // Far older than the history, and seq 0 once history has moved on: a snapshot too.
    for seq in [0, 1] {
        let (result, _, _t) = resume(&f, EPOCH, seq, Filter::default());
        assert_eq!(result, ResumeResult::Snapshot, "seq {seq}");
    }
}

#[test]
fn without_history_only_an_up_to_date_subscriber_recovers() {
    let f = fanout(0);
    publish_n(&f, 3);
    let (result, frames, _t) = resume(&f, EPOCH, 3, Filter::default());
    assert_eq!(result, ResumeResult::Recovered { replayed: 0 });
    assert_recovered_ok(&frames[0], 0, 3);
    let (result, _, _t) = resume(&f, EPOCH, 2, Filter::default());
    assert_eq!(result, ResumeResult::Snapshot);
}

#[test]
fn a_seq_ahead_of_the_hub_gets_a_snapshot() {
    let f = fanout(10);
    publish_n(&f, 4);
    for seq in [5, 1_000, u64::MAX - 1] {
        let (result, frames, _t) = resume(&f, EPOCH, seq, Filter::default());
        assert_eq!(result, ResumeResult::Snapshot, "seq {seq}");
        assert_snapshot(&frames, 4, &["a1", "a2"]);
    }
}

#[test]
fn another_epoch_gets_a_snapshot_even_with_a_seq_in_history() {
    let f = fanout(10);
    publish_n(&f, 4);
    for seq in [0, 2, 4] {
        let (result, frames, _t) = resume(&f, "e0", seq, Filter::default());
        assert_eq!(result, ResumeResult::Snapshot, "seq {seq}");
        assert_snapshot(&frames, 4, &["a1", "a2"]);
    }
}

#[test]
fn the_filter_applies_to_the_replay_its_count_and_the_snapshot() {
    let f = fanout(10);
    publish_n(&f, 6); // a1/sales at 1, 3, 5; a2/support at 2, 4, 6
    let sales = || Filter::new(Some(vec![team("sales")]), None);
    let (result, frames, mut t) = resume(&f, EPOCH, 1, sales());
    assert_eq!(result, ResumeResult::Recovered { replayed: 2 });
    assert_eq!(update_seqs(&frames), [3, 5]);
    assert_recovered_ok(frames.last().expect("ok"), 2, 6);
    // Live updates through the same filter.
    publish(&f, "a2", &["support"]);
    publish(&f, "a1", &["sales"]);
    assert_eq!(update_seqs(&drain(&mut t)), [8]);

    // An id list narrows the same way; nothing matching after the seq replays nothing.
    let only_a2 = Filter::new(None, Some(vec![agent_id("a2")]));
    let (result, frames, _t) = resume(&f, EPOCH, 7, only_a2.clone());
    assert_eq!(result, ResumeResult::Recovered { replayed: 0 });
    assert_recovered_ok(&frames[0], 0, 8);
    // Both lists must match: team sales and id a2 select nothing.
    let none = Filter::new(Some(vec![team("sales")]), Some(vec![agent_id("a2")]));
    let (result, frames, _t) = resume(&f, EPOCH, 0, none.clone());
    assert_eq!(result, ResumeResult::Recovered { replayed: 0 });
    assert_eq!(update_seqs(&frames), Vec::<u64>::new());
    // A snapshot answer is filtered too.
    let (result, frames, _t) = resume(&f, "e0", 0, only_a2);
    assert_eq!(result, ResumeResult::Snapshot);
    assert_snapshot(&frames, 8, &["a2"]);
    let (_, frames, _t) = resume(&f, "e0", 0, none);
    assert_snapshot(&frames, 8, &[]);
}

#[test]
fn resuming_again_on_one_socket_replaces_its_subscription() {
    let f = fanout(10);
    publish_n(&f, 2);
    let mut t = tap();
    f.resume(1, EPOCH, 2, Filter::default(), &t.tx, None, &mut t.sub);
    f.resume(
        1,
        EPOCH,
        2,
        Filter::new(Some(vec![team("support")]), None),
        &t.tx,
        None,
        &mut t.sub,
    );
    assert_eq!(drain(&mut t).len(), 2, "two ok replies");
    assert_eq!(f.stats().subscribers, 1);
    publish(&f, "a1", &["sales"]);
    publish(&f, "a2", &["support"]);
    assert_eq!(
        update_seqs(&drain(&mut t)),
        [4],
        "once, through the newer filter"
    );
}
