//! The three WebSocket surfaces (`/ws/agent`, `/ws/admin`, `/ws/telephony`): the hub's own
//! server-side RFC 6455 layer (handshake, frame codec, socket), the shared socket loop, the
//! per-socket queue, and one session type per role.

pub mod conn;
pub mod frame;
pub mod handshake;
pub mod limit;
pub mod session;
pub mod socket;

mod admin;
mod agent;
pub(crate) mod reply;
mod telephony;

pub use session::{serve, Session};
