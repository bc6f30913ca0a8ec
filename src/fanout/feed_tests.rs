//! The feed on its own: every update read once, in order, across chunk boundaries and
//! through filters; parked readers woken; a reader too far behind cut off with 4008 while
//! the others go on; what a reader had not read handed over before a new subscription;
//! a long unread chain freed without recursion.

use std::sync::Arc;
use std::task::{Context, Poll, Wake};

use crate::fanout::{Fanout, FeedCursor, Filter};
use crate::model::{AgentId, AgentState, TeamId};
use crate::outbox::{outbox, Outbound, Outbox, OutboxReceiver, CLOSE_SLOW_CONSUMER};

use super::CHUNK;

fn publish(f: &Fanout, id: &str, team: &str) -> u64 {
    let mut state = AgentState::new(AgentId::parse(id).expect("id"), 1_000);
    state.teams = vec![TeamId::parse(team).expect("team")];
    state.version = f.stats().seq + 1;
    f.publish(&state).seq
}

/// The `seq`s of the updates the reader of `sub` has waiting, read `max` at a time.
fn read_all(sub: &mut FeedCursor, max: usize) -> Vec<u64> {
    let reader = sub.as_mut().expect("subscribed");
    let mut seqs = Vec::new();
    while reader
        .read(max, |f| {
            let v: serde_json::Value = serde_json::from_str(f.as_str()).expect("json");
            seqs.push(v["seq"].as_u64().expect("seq"));
            true
        })
        .entries
        > 0
    {}
    seqs
}

fn subscribed(
    f: &Fanout,
    conn_id: u64,
    filter: Filter,
    bound: usize,
) -> (Outbox, OutboxReceiver, FeedCursor) {
    let (tx, rx) = outbox(bound);
    let mut sub = None;
    f.subscribe(conn_id, filter, &tx, None, &mut sub);
    assert!(matches!(rx.try_recv(), Some(Outbound::Snapshot(_))));
    (tx, rx, sub)
}

#[test]
fn every_update_is_read_once_in_order_across_chunks_whatever_the_batch() {
    let f = Fanout::new(Arc::from("e"), 10);
    let (_tx, _rx, mut whole) = subscribed(&f, 1, Filter::default(), 1 << 20);
    let (_tx2, _rx2, mut ones) = subscribed(&f, 2, Filter::default(), 1 << 20);
    let n = 3 * CHUNK as u64 + 5;
    let mut want = Vec::new();
    let mut got = Vec::new();
    for i in 0..n {
        want.push(publish(&f, &format!("a{}", i % 7), "t"));
        if i % 50 == 0 {
            // A reader that keeps up reads in between, one update at a time.
            got.extend(read_all(&mut ones, 1));
        }
    }
    assert_eq!(read_all(&mut whole, 17), want);
    assert_eq!(read_all(&mut whole, 17), Vec::<u64>::new(), "nothing twice");
    got.extend(read_all(&mut ones, 1));
    assert_eq!(got, want);
    assert_eq!(f.stats().deliveries, 2 * n);
}

#[test]
fn a_reader_gets_only_what_its_filter_selects() {
    let f = Fanout::new(Arc::from("e"), 10);
    let sales = Filter::new(Some(vec![TeamId::parse("sales").expect("team")]), None);
    let (_tx, _rx, mut sub) = subscribed(&f, 1, sales, 1 << 20);
    let mut want = Vec::new();
    for i in 0..200 {
        let seq = publish(
            &f,
            &format!("a{i}"),
            if i % 3 == 0 { "sales" } else { "support" },
        );
        if i % 3 == 0 {
            want.push(seq);
        }
    }
    assert_eq!(read_all(&mut sub, 1000), want);
}

struct Flag(std::sync::atomic::AtomicUsize);
impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn a_parked_reader_is_woken_by_the_next_publish_and_only_then() {
    let f = Fanout::new(Arc::from("e"), 10);
    let (_tx, _rx, mut sub) = subscribed(&f, 1, Filter::default(), 1 << 20);
    let flag = Arc::new(Flag(Default::default()));
    let waker = std::task::Waker::from(flag.clone());
    let mut cx = Context::from_waker(&waker);
    let reader = sub.as_mut().expect("subscribed");
    assert!(reader.poll_ready(&mut cx).is_pending());
    assert!(reader.poll_ready(&mut cx).is_pending(), "parked once");
    publish(&f, "a1", "t");
    assert_eq!(flag.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(reader.poll_ready(&mut cx), Poll::Ready(()));
    publish(&f, "a1", "t");
    assert_eq!(
        flag.0.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "not parked: no wake"
    );
    assert_eq!(read_all(&mut sub, 10), [1, 2]);
}

#[test]
fn a_reader_over_its_bound_is_cut_off_with_4008_and_the_others_go_on() {
    let f = Fanout::new(Arc::from("e"), 10);
    // ~100-byte frames: a 4 KiB bound is passed after ~40 unread updates.
    let (slow_tx, slow_rx, _slow) = subscribed(&f, 1, Filter::default(), 4096);
    let (fast_tx, _fast_rx, mut fast) = subscribed(&f, 2, Filter::default(), 4096);
    let mut got = Vec::new();
    for i in 0..2000 {
        publish(&f, "a1", "t");
        got.extend(read_all(&mut fast, 1000));
        if slow_tx.is_closing() {
            assert!(i > 30, "cut off too early, after {i} updates");
            break;
        }
    }
    assert!(slow_tx.is_closing(), "the slow reader was cut off");
    assert_eq!(
        std::future::Future::poll(
            std::pin::pin!(std::future::poll_fn(|cx| slow_rx.poll_close(cx))),
            &mut Context::from_waker(std::task::Waker::noop())
        ),
        Poll::Ready(CLOSE_SLOW_CONSUMER)
    );
    assert!(!fast_tx.is_closing());
    let stats = f.stats();
    assert_eq!((stats.dropped_slow, stats.subscribers), (1, 1));
    // Within the bound plus one scan interval of the stream.
    assert!(stats.max_queued_bytes <= 4096);
    publish(&f, "a1", "t");
    got.extend(read_all(&mut fast, 1000));
    assert_eq!(got, (1..=got.len() as u64).collect::<Vec<_>>());
}

#[test]
fn resubscribing_and_unsubscribing_hand_over_what_was_not_read_first() {
    let f = Fanout::new(Arc::from("e"), 10);
    let (tx, rx, mut sub) = subscribed(&f, 1, Filter::default(), 1 << 20);
    publish(&f, "a1", "t");
    publish(&f, "a2", "t");
    f.subscribe(1, Filter::default(), &tx, None, &mut sub);
    match rx.try_recv() {
        Some(Outbound::Frames(frames)) => assert_eq!(frames.len(), 2),
        other => panic!("the unread updates first, got {other:?}"),
    }
    assert!(matches!(rx.try_recv(), Some(Outbound::Snapshot(_))));
    publish(&f, "a1", "t");
    f.unsubscribe(1, &tx, &mut sub);
    assert!(matches!(rx.try_recv(), Some(Outbound::Frames(f)) if f.len() == 1));
    assert!(sub.is_none());
    publish(&f, "a1", "t");
    assert!(rx.try_recv().is_none());
    assert_eq!(f.stats().subscribers, 0);
    assert_eq!(f.stats().deliveries, 3);
}

#[test]
fn a_long_unread_chain_is_freed_without_recursion() {
    let f = Fanout::new(Arc::from("e"), 0);
    // Never cut off (a huge bound), never reading: it holds every chunk.
    let (_tx, _rx, sub) = subscribed(&f, 1, Filter::default(), usize::MAX / 2);
    for _ in 0..(CHUNK * 20_000) {
        publish(&f, "a1", "t");
    }
    drop(sub);
    assert_eq!(f.stats().seq, (CHUNK * 20_000) as u64);
}
