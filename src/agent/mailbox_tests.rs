//! Unit tests of the agent mailbox: order, backpressure, closing from either side,
//! cancellation, concurrent senders, and no memory held while idle.

use super::*;
use futures::FutureExt;
use std::pin::pin;

const BOUND: usize = 64;

fn queued<T>(rx: &Receiver<T>) -> (usize, usize) {
    let state = rx.shared.lock();
    (state.queue.len(), state.queue.capacity())
}

#[tokio::test]
async fn messages_arrive_in_order() {
    let (tx, mut rx) = channel(BOUND);
    for i in 0..BOUND {
        tx.send(i).await.expect("send");
    }
    for i in 0..BOUND {
        assert_eq!(rx.recv().await, Some(i));
    }
    assert_eq!(rx.recv().now_or_never(), None, "empty: recv waits");
}

#[tokio::test]
async fn a_full_mailbox_makes_the_sender_wait_until_one_is_received() {
    let (tx, mut rx) = channel(BOUND);
    for i in 0..BOUND {
        tx.send(i).await.expect("send");
    }
    let mut extra = pin!(tx.send(BOUND));
    assert!(futures::poll!(extra.as_mut()).is_pending(), "65th waits");
    assert!(futures::poll!(extra.as_mut()).is_pending(), "still full");
    assert_eq!(rx.recv().await, Some(0));
    assert_eq!(futures::poll!(extra.as_mut()), Poll::Ready(Ok(())));
    for i in 1..=BOUND {
        assert_eq!(rx.recv().await, Some(i));
    }
}

#[tokio::test]
async fn the_receiver_sees_the_end_after_draining_when_every_sender_drops() {
    let (tx, mut rx) = channel(BOUND);
    let tx2 = tx.clone();
    tx.send(1).await.expect("send");
    tx2.send(2).await.expect("send");
    drop(tx);
    assert_eq!(rx.recv().await, Some(1), "one sender left");
    drop(tx2);
    assert_eq!(rx.recv().await, Some(2), "queued messages still arrive");
    assert_eq!(rx.recv().await, None);
    assert_eq!(rx.recv().await, None, "and stays ended");
}

#[tokio::test]
async fn a_waiting_receiver_is_woken_by_the_last_sender_dropping() {
    let (tx, mut rx) = channel::<u32>(BOUND);
    let receiver = tokio::spawn(async move { rx.recv().await });
    tokio::task::yield_now().await;
    assert!(!receiver.is_finished(), "nothing sent yet");
    drop(tx);
    assert_eq!(receiver.await.expect("join"), None);
}

#[tokio::test]
async fn sends_fail_promptly_once_the_receiver_is_gone() {
    let (tx, rx) = channel(1);
    tx.send(1).await.expect("send");
    let waiting = {
        let tx = tx.clone();
        tokio::spawn(async move { tx.send(2).await })
    };
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished(), "full: the sender waits");
    drop(rx);
    assert_eq!(
        waiting.await.expect("join"),
        Err(SendError(2)),
        "woken, value back"
    );
    assert_eq!(
        tx.send(3).now_or_never(),
        Some(Err(SendError(3))),
        "no wait"
    );
}

#[tokio::test]
async fn a_cancelled_send_gives_its_place_back() {
    let (tx, mut rx) = channel(2);
    tx.send(1).await.expect("send");
    tx.send(2).await.expect("send");
    {
        let mut cancelled = pin!(tx.send(99));
        assert!(futures::poll!(cancelled.as_mut()).is_pending());
        // Dropped here, still waiting.
    }
    assert_eq!(rx.recv().await, Some(1));
    // The freed place goes to the next sender, not to the cancelled one.
    assert_eq!(tx.send(3).now_or_never(), Some(Ok(())));
    assert!(tx.send(4).now_or_never().is_none(), "full again");
    assert_eq!(rx.recv().await, Some(2));
    assert_eq!(rx.recv().await, Some(3));
    assert_eq!(rx.shared.space.available_permits(), 2, "every place back");
    assert_eq!(rx.recv().now_or_never(), None, "99 was never queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_senders_each_keep_their_order() {
    const SENDERS: usize = 8;
    const EACH: usize = 2_000;
    let (tx, mut rx) = channel::<(usize, usize)>(4);
    let tasks: Vec<_> = (0..SENDERS)
        .map(|s| {
            let tx = tx.clone();
            tokio::spawn(async move {
                for i in 0..EACH {
                    tx.send((s, i)).await.expect("send");
                }
            })
        })
        .collect();
    drop(tx);
    let mut next = [0usize; SENDERS];
    let mut total = 0;
    while let Some((s, i)) = rx.recv().await {
        assert_eq!(i, next[s], "sender {s} out of order");
        next[s] += 1;
        total += 1;
    }
    assert_eq!(total, SENDERS * EACH, "ends only after every message");
    for task in tasks {
        task.await.expect("join");
    }
}

#[tokio::test]
async fn an_idle_mailbox_holds_no_queue_memory() {
    let (tx, mut rx) = channel(BOUND);
    assert_eq!(queued(&rx), (0, 0));
    for i in 0..10 {
        tx.send(i).await.expect("send");
    }
    assert!(queued(&rx).1 >= 10);
    for _ in 0..10 {
        rx.recv().await.expect("message");
    }
    assert_eq!(rx.recv().now_or_never(), None, "waits: idle");
    assert_eq!(queued(&rx), (0, 0), "queue memory given back");
}

#[tokio::test]
async fn a_busy_receiver_yields_to_other_tasks() {
    const MANY: usize = 1_000;
    let (tx, mut rx) = channel(MANY);
    tokio::task::coop::unconstrained(async {
        for i in 0..MANY {
            tx.send(i).await.expect("send");
        }
    })
    .await;
    // tokio gives a task a budget per poll (128 operations): a receiver with a full
    // mailbox must come back Pending at some point instead of running forever.
    let mut in_one_go = 0;
    while let Some(Some(_)) = rx.recv().now_or_never() {
        in_one_go += 1;
    }
    assert!(in_one_go < MANY, "never yielded");
    tokio::task::yield_now().await;
    let mut rest = 0;
    while rest < MANY - in_one_go {
        rx.recv().await.expect("message");
        rest += 1;
    }
    assert_eq!(rx.recv().now_or_never(), None, "all received");
}
