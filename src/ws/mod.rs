//! The three WebSocket surfaces (`/ws/agent`, `/ws/admin`, `/ws/telephony`): the hub's own
//! server-side RFC 6455 layer (handshake, frame codec, socket), the shared socket loop, the
//! per-socket queue, and one session type per role.

pub(crate) mod conn;
pub mod frame;
pub(crate) mod handshake;
pub(crate) mod limit;
pub(crate) mod session;
pub(crate) mod socket;

mod admin;
mod agent;
mod reply;
mod telephony;

pub(crate) use session::serve;
