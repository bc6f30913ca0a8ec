//! Notifications to telephony adapters: `call_accepted`, `call_declined` and
//! `ring_timeout`, pushed by agent actors to every connected adapter socket, each through
//! the socket's ordered sender so it never overtakes the reply to the event that caused it.

use std::sync::Mutex;

use crate::model::{AgentId, TelephonyNotice};
use crate::outbox::Ordered;
use crate::protocol;

/// Adapter sockets that receive notifications.
#[derive(Default)]
pub(crate) struct Notifier {
    /// Each socket's id and ordered sender.
    sockets: Mutex<Vec<(u64, Ordered)>>,
}

impl Notifier {
    /// Adds an adapter socket.
    pub(crate) fn add(&self, conn_id: u64, sender: Ordered) {
        self.lock().push((conn_id, sender));
    }

    /// Removes an adapter socket.
    pub(crate) fn remove(&self, conn_id: u64) {
        self.lock().retain(|(id, _)| *id != conn_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Ordered)>> {
        self.sockets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends a notification about `agent_id`'s call to every adapter socket; returns how
    /// many sockets it was queued to. A socket over its bound is dropped from the list.
    pub(crate) fn notify(&self, agent_id: &AgentId, notice: &TelephonyNotice) -> usize {
        let frame = protocol::notice(agent_id, notice);
        let mut sockets = self.lock();
        sockets.retain(|(_, sender)| sender.push(frame.clone()).is_ok());
        sockets.len()
    }
}
