//! Who is on the other end of a socket or request: the role and the authenticated identity
//! (decoded from a token by `http::auth`, used by the socket sessions).

use crate::model::TeamId;

/// Clock skew allowed when checking `exp` and `nbf` (seconds); a socket is closed for
/// expiry at `exp` plus this.
pub const TOKEN_LEEWAY_SECS: u64 = 5;

/// The three kinds of sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Agent,
    Admin,
    Telephony,
}

impl Role {
    /// All roles, for rendering.
    pub const ALL: [Role; 3] = [Role::Agent, Role::Admin, Role::Telephony];

    /// The label / claim value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Admin => "admin",
            Role::Telephony => "telephony",
        }
    }

    /// Its place in per-role tables.
    pub fn index(self) -> usize {
        match self {
            Role::Agent => 0,
            Role::Admin => 1,
            Role::Telephony => 2,
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Which surface it may use.
    pub role: Role,
    /// Agent id, admin id or adapter name (the token's `sub`).
    pub subject: String,
    /// Display name from the token (agents not in the directory).
    pub name: Option<String>,
    /// Teams from the token (agents not in the directory).
    pub teams: Vec<TeamId>,
    /// Token expiry (Unix seconds); `None` in dev mode.
    pub expires_at: Option<u64>,
}
