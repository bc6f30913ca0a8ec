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

use crate::protocol::ErrorCode;

/// The first reply to an event, without its `ref`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReply {
    /// `None` for `ok`, else the error code.
    pub error: Option<ErrorCode>,
    /// JSON fields after `type` and `ref` (`"accepted":true,"agent":{..}`).
    pub fields: Arc<str>,
}

/// Remembers event ids and their first replies.
pub struct EventIdCache {
    replies: DashMap<Arc<str>, StoredReply>,
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
        self.replies.get(event_id).map(|r| r.clone())
    }

    /// Remembers the first reply to `event_id` (a later insert of the same id is ignored).
    pub fn insert(&self, event_id: &str, reply: StoredReply) {
        let key: Arc<str> = Arc::from(event_id);
        if self.replies.contains_key(&key) {
            return;
        }
        self.replies.insert(key.clone(), reply);
        let now = Instant::now();
        let mut order = self.order.lock().unwrap_or_else(|p| p.into_inner());
        order.push_back((key, now));
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
}
