//! [`CommitTicket`]: the answer to a queued write, resolved by the writer after the commit
//! (or at once when the durability mode does not wait for it).
//!
//! A ticket is a future: `ticket.await` or `ticket.committed().await`. Hold it where the
//! acknowledgement is sent (e.g. the socket task), not in the agent actor, so the actor
//! goes on with the next command while the disk works.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::oneshot;

use super::StoreError;

/// Resolves when the write it stands for is committed (or failed).
#[derive(Debug)]
#[must_use = "a ticket does nothing unless awaited; drop it explicitly to not wait"]
pub struct CommitTicket(State);

#[derive(Debug)]
enum State {
    Ready(Option<Result<(), StoreError>>),
    Waiting(oneshot::Receiver<Result<(), StoreError>>),
}

impl CommitTicket {
    /// A ticket that is already resolved successfully (async mode, or no store).
    pub fn done() -> Self {
        CommitTicket(State::Ready(Some(Ok(()))))
    }

    /// A ticket that is already resolved with an error.
    pub(super) fn failed(e: StoreError) -> Self {
        CommitTicket(State::Ready(Some(Err(e))))
    }

    /// A ticket the writer resolves.
    pub(super) fn waiting(rx: oneshot::Receiver<Result<(), StoreError>>) -> Self {
        CommitTicket(State::Waiting(rx))
    }

    /// True when awaiting it would not wait (it was resolved at creation).
    pub fn is_immediate(&self) -> bool {
        matches!(self.0, State::Ready(_))
    }

    /// Waits for the commit.
    pub async fn committed(self) -> Result<(), StoreError> {
        self.await
    }

    /// Waits for the commit on a plain thread. Must not be called from async code (tokio
    /// refuses to block a runtime thread): use `.await` there.
    pub fn wait_blocking(self) -> Result<(), StoreError> {
        match self.0 {
            State::Ready(r) => r.unwrap_or(Ok(())),
            State::Waiting(rx) => rx.blocking_recv().unwrap_or(Err(StoreError::Closed)),
        }
    }
}

impl Future for CommitTicket {
    type Output = Result<(), StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            // Polled again after completion: nothing more to report.
            State::Ready(r) => Poll::Ready(r.take().unwrap_or(Ok(()))),
            State::Waiting(rx) => match Pin::new(rx).poll(cx) {
                Poll::Ready(r) => Poll::Ready(r.unwrap_or(Err(StoreError::Closed))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}
