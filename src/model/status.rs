//! Status and reason enums with their wire names.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The effective status of an agent: four manual ones, three driven by calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Offline,
    Available,
    Busy,
    OnBreak,
    Ringing,
    OnCall,
    WrapUp,
}

impl Status {
    /// Every status, in the order wallboards list them.
    pub const ALL: [Status; 7] = [
        Status::Available,
        Status::Ringing,
        Status::OnCall,
        Status::WrapUp,
        Status::Busy,
        Status::OnBreak,
        Status::Offline,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Offline => "offline",
            Status::Available => "available",
            Status::Busy => "busy",
            Status::OnBreak => "on_break",
            Status::Ringing => "ringing",
            Status::OnCall => "on_call",
            Status::WrapUp => "wrap_up",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "offline" => Status::Offline,
            "available" => Status::Available,
            "busy" => Status::Busy,
            "on_break" => Status::OnBreak,
            "ringing" => Status::Ringing,
            "on_call" => Status::OnCall,
            "wrap_up" => Status::WrapUp,
            _ => return None,
        })
    }

    /// The manual status this is, if it is one.
    pub fn as_manual(self) -> Option<ManualStatus> {
        Some(match self {
            Status::Offline => ManualStatus::Offline,
            Status::Available => ManualStatus::Available,
            Status::Busy => ManualStatus::Busy,
            Status::OnBreak => ManualStatus::OnBreak,
            Status::Ringing | Status::OnCall | Status::WrapUp => return None,
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One of the four statuses an agent or admin may pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ManualStatus {
    Offline,
    Available,
    Busy,
    OnBreak,
}

impl ManualStatus {
    /// All four, for exhaustive tests and generators.
    pub const ALL: [ManualStatus; 4] = [
        ManualStatus::Offline,
        ManualStatus::Available,
        ManualStatus::Busy,
        ManualStatus::OnBreak,
    ];

    /// The same status as an effective [`Status`].
    pub fn status(self) -> Status {
        match self {
            ManualStatus::Offline => Status::Offline,
            ManualStatus::Available => Status::Available,
            ManualStatus::Busy => Status::Busy,
            ManualStatus::OnBreak => Status::OnBreak,
        }
    }
}

/// Why `status` or `manual_status` last changed (the `reason` column of the transition table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Login,
    Manual,
    Admin,
    CallOffered,
    CallAccepted,
    CallAnswered,
    CallDeclined,
    RingTimeout,
    CallCancelled,
    CallEnded,
    WrapUpExpired,
    WrapUpEnded,
    OutboundStarted,
    Logout,
    AdminLogout,
    Disconnected,
}

impl Reason {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Login => "login",
            Reason::Manual => "manual",
            Reason::Admin => "admin",
            Reason::CallOffered => "call_offered",
            Reason::CallAccepted => "call_accepted",
            Reason::CallAnswered => "call_answered",
            Reason::CallDeclined => "call_declined",
            Reason::RingTimeout => "ring_timeout",
            Reason::CallCancelled => "call_cancelled",
            Reason::CallEnded => "call_ended",
            Reason::WrapUpExpired => "wrap_up_expired",
            Reason::WrapUpEnded => "wrap_up_ended",
            Reason::OutboundStarted => "outbound_started",
            Reason::Logout => "logout",
            Reason::AdminLogout => "admin_logout",
            Reason::Disconnected => "disconnected",
        }
    }
}
