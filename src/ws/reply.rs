//! Reply frames shared by the socket sessions.

use crate::agent::Applied;
use crate::agent::AttachError;
use crate::hub::Hub;
use crate::model::Rejection;
use crate::protocol::{error_reply, ok_reply, ErrorCode, Request};

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
