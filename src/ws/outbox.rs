//! The bounded outgoing queue of one socket.
//!
//! Producers (the fan-out, agent actors, the socket's own request handler) never wait on a
//! socket: they `try_send` into its [`Outbox`]. The queue is bounded in bytes (the
//! `--queue-bytes` setting, ~1 MiB by default); a producer that finds it over its bound marks
//! the socket for closing with 4008 and drops it, so a slow reader never slows anyone else.

use axum::extract::ws::Utf8Bytes;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, Notify};

use crate::hub::fanout::Published;

/// Close code for a socket that fell behind its queue bound.
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;

/// One item for a socket's writer.
#[derive(Debug)]
pub enum Outbound {
    /// A ready-made text frame, shared with every other receiver of it.
    Frame(Utf8Bytes),
    /// Several frames to write in order (a `resume` replay).
    Frames(Vec<Utf8Bytes>),
    /// A snapshot reply, serialized by the socket's own task so the fan-out lock is never
    /// held while megabytes of JSON are written.
    Snapshot(Box<SnapshotReply>),
    /// Close the socket with this code after what is queued before it.
    Close(u16, &'static str),
}

/// The parts of an `ok` reply carrying a `snapshot`.
#[derive(Debug)]
pub struct SnapshotReply {
    /// The `ref` of the request, already rendered as JSON.
    pub reply_ref: Option<String>,
    /// `Some(false)` for a `resume` that could not be recovered.
    pub recovered: Option<bool>,
    pub epoch: Arc<str>,
    pub seq: u64,
    pub agents: Vec<Arc<Published>>,
}

impl SnapshotReply {
    /// Renders the reply frame.
    pub fn render(mut self) -> String {
        crate::hub::fanout::sort_by_id(&mut self.agents);
        let body: usize = self.agents.iter().map(|a| a.agent_json().len() + 1).sum();
        let mut out = String::with_capacity(body + 128);
        out.push_str(r#"{"type":"ok""#);
        if let Some(r) = &self.reply_ref {
            out.push_str(r#","ref":"#);
            out.push_str(r);
        }
        if let Some(recovered) = self.recovered {
            out.push_str(if recovered {
                r#","recovered":true"#
            } else {
                r#","recovered":false"#
            });
        }
        out.push_str(r#","snapshot":"#);
        render_agent_list(&mut out, &self.epoch, self.seq, &self.agents);
        out.push('}');
        out
    }
}

/// Writes `{"epoch":..,"seq":..,"agents":[..]}` from pre-serialized agent states.
pub fn render_agent_list(out: &mut String, epoch: &str, seq: u64, agents: &[Arc<Published>]) {
    out.push_str(r#"{"epoch":"#);
    out.push_str(&crate::protocol::json_string(epoch));
    out.push_str(r#","seq":"#);
    out.push_str(itoa_u64(seq).as_str());
    out.push_str(r#","agents":["#);
    for (i, a) in agents.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(a.agent_json());
    }
    out.push_str("]}");
}

fn itoa_u64(n: u64) -> String {
    n.to_string()
}

/// Why a push was refused: the socket is over its bound or already closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("socket queue over its bound")]
pub struct Overflow;

#[derive(Debug)]
struct Shared {
    /// Bytes queued and not yet taken by the writer.
    queued: AtomicUsize,
    /// The bound in bytes, from `--queue-bytes`.
    bound: usize,
    /// Close code requested by a producer; 0 while open.
    close_code: AtomicU16,
    /// Wakes the writer when `close_code` is set.
    wake: Notify,
}

/// The producer side of a socket queue. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Outbound>,
    shared: Arc<Shared>,
}

/// The writer side, owned by the socket task.
#[derive(Debug)]
pub struct OutboxReceiver {
    rx: mpsc::Receiver<Outbound>,
    shared: Arc<Shared>,
}

/// Creates a queue bounded to `bound_bytes`.
pub fn outbox(bound_bytes: usize) -> (Outbox, OutboxReceiver) {
    // The item count is a backstop; the byte bound is the real limit. Frames are >= ~64
    // bytes, so this never bites before the byte bound does.
    let slots = (bound_bytes / 64).clamp(64, 1 << 16);
    let (tx, rx) = mpsc::channel(slots);
    let shared = Arc::new(Shared {
        queued: AtomicUsize::new(0),
        bound: bound_bytes,
        close_code: AtomicU16::new(0),
        wake: Notify::new(),
    });
    (
        Outbox {
            tx,
            shared: shared.clone(),
        },
        OutboxReceiver { rx, shared },
    )
}

impl Outbox {
    /// Queues a frame. Over the bound, the socket is marked for closing with 4008 and
    /// `Overflow` is returned: the caller drops this receiver from its lists.
    pub fn push(&self, frame: Utf8Bytes) -> Result<(), Overflow> {
        if self.is_closing() {
            return Err(Overflow);
        }
        let len = frame.len();
        let queued = self.shared.queued.fetch_add(len, Ordering::Relaxed) + len;
        if queued > self.shared.bound {
            self.shared.queued.fetch_sub(len, Ordering::Relaxed);
            self.close(CLOSE_SLOW_CONSUMER);
            return Err(Overflow);
        }
        if self.tx.try_send(Outbound::Frame(frame)).is_err() {
            self.shared.queued.fetch_sub(len, Ordering::Relaxed);
            self.close(CLOSE_SLOW_CONSUMER);
            return Err(Overflow);
        }
        Ok(())
    }

    /// Queues an item that is not counted against the byte bound (snapshots, replays: one
    /// per request, sized by the request, not by the event rate).
    pub fn push_unbounded(&self, item: Outbound) -> Result<(), Overflow> {
        if self.is_closing() {
            return Err(Overflow);
        }
        // The writer subtracts every `Frame` it takes from `queued`, so a frame queued here
        // is added too (without the bound check); otherwise the counter would wrap below
        // zero and the socket's next bounded push would look like an overflow (4008).
        let counted = match &item {
            Outbound::Frame(f) => f.len(),
            _ => 0,
        };
        self.shared.queued.fetch_add(counted, Ordering::Relaxed);
        self.tx.try_send(item).map_err(|_| {
            self.shared.queued.fetch_sub(counted, Ordering::Relaxed);
            self.close(CLOSE_SLOW_CONSUMER);
            Overflow
        })
    }

    /// Asks the socket to close with `code` now (what is queued is dropped).
    pub fn close(&self, code: u16) {
        if self
            .shared
            .close_code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.shared.wake.notify_one();
        }
    }

    /// True once a close was requested.
    pub fn is_closing(&self) -> bool {
        self.shared.close_code.load(Ordering::Acquire) != 0
    }

    /// Bytes waiting in the queue (for the fan-out lag gauge).
    pub fn queued_bytes(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// True when both handles feed the same socket.
    pub fn same_socket(&self, other: &Outbox) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl OutboxReceiver {
    /// The next item, or `None` when every producer is gone.
    pub async fn recv(&mut self) -> Option<Outbound> {
        let item = self.rx.recv().await?;
        self.account(&item);
        Some(item)
    }

    /// The next item if one is ready.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        let item = self.rx.try_recv().ok()?;
        self.account(&item);
        Some(item)
    }

    fn account(&self, item: &Outbound) {
        if let Outbound::Frame(f) = item {
            self.shared.queued.fetch_sub(f.len(), Ordering::Relaxed);
        }
    }

    /// A handle that resolves when a producer asks for a close, usable while the receiver
    /// is borrowed by the writer.
    pub fn close_signal(&self) -> CloseSignal {
        CloseSignal(self.shared.clone())
    }
}

/// Resolves with the close code once a producer asked for a close.
#[derive(Debug, Clone)]
pub struct CloseSignal(Arc<Shared>);

impl CloseSignal {
    /// Waits for a close request and returns its code.
    pub async fn requested(&self) -> u16 {
        loop {
            let notified = self.0.wake.notified();
            let code = self.0.close_code.load(Ordering::Acquire);
            if code != 0 {
                return code;
            }
            notified.await;
        }
    }
}
