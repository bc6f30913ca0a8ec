//! Idempotency of telephony events: the first reply to each `event_id`, kept for a while.
//!
//! Bounded memory: at most `capacity` ids (default 262,144, `--event-id-capacity`), each
//! kept for `ttl` (default 4 h, `--event-id-ttl-secs`), oldest evicted first. A reply is
//! stored as the JSON fragment after `"type"`/`"ref"` (~0.3-0.6 KiB with the agent state),
//! so the default bound is ~150 MiB at worst; ids are remembered for the full 4 h as long as
//! adapters send fewer than `capacity / ttl` (~18 per second) events on average, and for at
//! least `capacity / rate` seconds beyond that.

use dashmap::DashMap;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use crate::protocol::StoredReply;

/// Remembers event ids and their first replies.
pub struct EventIdCache {
    /// Each id's first reply and when the id was first seen.
    replies: DashMap<Arc<str>, (StoredReply, Instant)>,
    order: Mutex<VecDeque<(Arc<str>, Instant)>>,
    capacity: usize,
    ttl: Duration,
}

impl EventIdCache {
    /// A cache of at most `capacity` ids kept for `ttl` each.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        EventIdCache {
            replies: DashMap::new(),
            order: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            ttl,
        }
    }

    /// The stored reply for `event_id`, if it was seen within its lifetime.
    pub fn get(&self, event_id: &str) -> Option<StoredReply> {
        let entry = self.replies.get(event_id)?;
        let (reply, seen) = entry.value();
        (seen.elapsed() <= self.ttl).then(|| reply.clone())
    }

    /// Remembers the first reply to `event_id` (a later insert of the same id is ignored).
    pub fn insert(&self, event_id: &str, reply: StoredReply) {
        self.insert_aged(event_id, reply, Duration::ZERO);
    }

    /// Like [`EventIdCache::insert`] for an id first seen `age` ago (ids recovered from the
    /// durable store at start): it expires `ttl` after it was first seen, not after now. An
    /// id already older than the ttl is not remembered. Insert recovered ids oldest first,
    /// before any new one (eviction goes by insertion order).
    pub fn insert_aged(&self, event_id: &str, reply: StoredReply, age: Duration) {
        if age > self.ttl {
            return;
        }
        let key: Arc<str> = Arc::from(event_id);
        let now = Instant::now();
        // Early in a process (or on a paused test clock) `now - age` may not exist: then
        // the id counts from now, which only keeps it a little longer.
        let seen = now.checked_sub(age).unwrap_or(now);
        // One step, so two concurrent inserts of one id cannot both queue it for eviction.
        // The shard lock is released before `order` is taken (eviction takes them the other
        // way round).
        match self.replies.entry(key.clone()) {
            dashmap::Entry::Occupied(_) => return,
            dashmap::Entry::Vacant(slot) => {
                slot.insert((reply, seen));
            }
        }
        let mut order = self.order.lock().unwrap_or_else(|p| p.into_inner());
        order.push_back((key, seen));
        while let Some((oldest, at)) = order.front() {
            if order.len() > self.capacity || now.duration_since(*at) > self.ttl {
                self.replies.remove(oldest);
                order.pop_front();
            } else {
                break;
            }
        }
    }

    /// How many ids are remembered now.
    pub fn len(&self) -> usize {
        self.replies.len()
    }

    /// True when no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(s: &str) -> StoredReply {
        StoredReply {
            error: None,
            fields: Arc::from(s),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_id_past_its_ttl_is_forgotten_even_before_eviction() {
        let cache = EventIdCache::new(10, Duration::from_secs(10));
        cache.insert("e1", reply("1"));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(cache.get("e1"), Some(reply("1")), "still within its ttl");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(cache.get("e1"), None, "no insert ran, yet it is expired");
    }

    #[tokio::test(start_paused = true)]
    async fn keeps_the_first_reply_and_evicts_by_age_and_count() {
        let cache = EventIdCache::new(2, Duration::from_secs(10));
        cache.insert("e1", reply("1"));
        cache.insert("e1", reply("other"));
        assert_eq!(cache.get("e1"), Some(reply("1")));
        cache.insert("e2", reply("2"));
        cache.insert("e3", reply("3"));
        assert_eq!(cache.get("e1"), None, "over capacity: oldest evicted");
        assert_eq!(cache.len(), 2);
        tokio::time::advance(Duration::from_secs(11)).await;
        cache.insert("e4", reply("4"));
        assert_eq!(cache.get("e2"), None, "past its ttl");
        assert_eq!(cache.get("e3"), None, "past its ttl");
        assert_eq!(cache.get("e4"), Some(reply("4")));
    }

    #[tokio::test(start_paused = true)]
    async fn recovered_ids_keep_their_age() {
        // Paused time starts at the runtime's creation: move on so `now - age` exists.
        tokio::time::advance(Duration::from_secs(100)).await;
        let cache = EventIdCache::new(10, Duration::from_secs(10));
        cache.insert_aged("too-old", reply("0"), Duration::from_secs(11));
        cache.insert_aged("old", reply("1"), Duration::from_secs(8));
        cache.insert_aged("young", reply("2"), Duration::from_secs(1));
        assert_eq!(
            cache.get("too-old"),
            None,
            "older than the ttl: not remembered"
        );
        assert_eq!(cache.get("old"), Some(reply("1")));
        tokio::time::advance(Duration::from_secs(3)).await;
        cache.insert("new", reply("3"));
        assert_eq!(
            cache.get("old"),
            None,
            "expired 10 s after it was first seen"
        );
        assert_eq!(cache.get("young"), Some(reply("2")));
        assert_eq!(cache.get("new"), Some(reply("3")));
    }
}
