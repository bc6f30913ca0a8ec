//! Reply frames shared by the socket sessions.

use crate::agent::Applied;
use crate::agent::AttachError;
use crate::hub::Hub;
use crate::model::Rejection;
use crate::protocol::{error_reply, ok_reply, ErrorCode, Ref, Request};
use crate::store::StoreError;

/// The reply to an applied request: `ok` only when a `ref` asks for one, errors always.
pub fn answer_applied(req: &Request, result: &Result<Applied, Rejection>) -> Option<String> {
    match result {
        Ok(applied) => req
            .reply_ref
            .as_ref()
            .map(|r| ok_reply(Some(r), &format!(r#""version":{}"#, applied.state.version))),
        Err(rejection) => {
            let (code, extra) = rejection_code(*rejection);
            Some(error_reply(
                req.reply_ref.as_ref(),
                code,
                &rejection.to_string(),
                extra.trim_start_matches(','),
            ))
        }
    }
}

/// Waits until the state an applied request's answer reports is committed to the durable
/// store (at once with `--durability async`; nothing to wait for after a rejection).
pub async fn committed(result: &mut Result<Applied, Rejection>) -> Result<(), StoreError> {
    match result {
        Ok(applied) => applied.take_ticket().await,
        Err(_) => Ok(()),
    }
}

/// The reply to an applied request, once its commit is known: the usual answer, or an
/// error when the change could not be stored.
pub fn answer_committed(
    req: &Request,
    result: &Result<Applied, Rejection>,
    stored: Result<(), StoreError>,
) -> Option<String> {
    match stored {
        Ok(()) => answer_applied(req, result),
        Err(e) => Some(not_stored(req.reply_ref.as_ref(), &e)),
    }
}

/// The error sent instead of `ok` when a change was applied but its commit failed (disk
/// error, or the hub is shutting down): the change is live but may not survive a restart.
pub fn not_stored(reply_ref: Option<&Ref>, e: &StoreError) -> String {
    error_reply(
        reply_ref,
        ErrorCode::InvalidState,
        &format!("applied, but not durably stored: {e}"),
        "",
    )
}

/// An error reply (always sent, with the `ref` if there was one).
pub fn error(req: &Request, code: ErrorCode, message: &str) -> Option<String> {
    Some(error_reply(req.reply_ref.as_ref(), code, message, ""))
}

/// `ok` for a request that needs no data back, only when it has a `ref`.
pub fn ok(req: &Request) -> Option<String> {
    req.reply_ref.as_ref().map(|r| ok_reply(Some(r), ""))
}

/// The answer to `ping`.
pub fn pong(req: &Request, hub: &Hub) -> Option<String> {
    let mut out = format!(
        r#"{{"type":"pong","server_time":{}"#,
        hub.core.clock.now_ms()
    );
    if let Some(r) = &req.reply_ref {
        out.push_str(r#","ref":"#);
        out.push_str(&r.to_json());
    }
    out.push('}');
    Some(out)
}

/// The reply when the actor is gone.
pub fn unavailable(req: &Request, _: AttachError) -> Option<String> {
    error(req, ErrorCode::InvalidState, "the hub is shutting down")
}

/// Wire code and extra fields (`,"version":N`) of a rejection.
pub fn rejection_code(rejection: Rejection) -> (ErrorCode, String) {
    match rejection {
        Rejection::InvalidStatus => (ErrorCode::InvalidStatus, String::new()),
        Rejection::InvalidState | Rejection::NotAvailable => {
            (ErrorCode::InvalidState, String::new())
        }
        Rejection::UnknownCall => (ErrorCode::UnknownCall, String::new()),
        Rejection::Conflict { current } => {
            (ErrorCode::Conflict, format!(r#","version":{current}"#))
        }
    }
}
