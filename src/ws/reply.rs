//! What the agent and admin sessions share: a status change as a machine input, and the
//! reply to an applied input once its commit is known.

use crate::agent::Applied;
use crate::model::{Actor, Input, Rejection};
use crate::protocol::{self, BadMessage, ErrorCode, Ref, StatusChange, StatusChangeError, Text};

/// `set_status` / `set_agent_status` as a machine input; else a `bad_message` (`Err(Err)`)
/// or the reply to send (`Err(Ok)`: `invalid_status`).
pub(super) fn status_input(
    change: &StatusChange,
    by: Actor,
    reply_ref: Option<&Ref>,
) -> Result<Input, Result<Text, BadMessage>> {
    match change.checked() {
        Ok((status, note)) => Ok(Input::SetStatus {
            status,
            note,
            if_version: change.if_version,
            by,
        }),
        Err(StatusChangeError::Bad(message)) => Err(Err(BadMessage {
            reply_ref: reply_ref.cloned(),
            message,
        })),
        Err(StatusChangeError::InvalidStatus(message)) => Err(Ok(protocol::error(
            reply_ref,
            ErrorCode::InvalidStatus,
            &message,
        ))),
    }
}

/// Waits until the state an applied request reports is committed (at once with
/// `--durability async`), then gives its reply: `ok` with the version only when a `ref`
/// asks for one, errors always, and an error instead of `ok` when the commit failed.
pub(super) async fn answer_applied(
    reply_ref: Option<&Ref>,
    result: &mut Result<Applied, Rejection>,
) -> Option<Text> {
    match result {
        Ok(applied) => match applied.take_ticket().await {
            Ok(()) => reply_ref.map(|r| protocol::ok_version(Some(r), applied.state.version)),
            Err(e) => Some(protocol::not_stored(reply_ref, &e)),
        },
        Err(rejection) => Some(protocol::rejected(reply_ref, *rejection)),
    }
}
