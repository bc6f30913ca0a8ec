//! Conversions between the model's types and SQLite column values: wire names for enums,
//! JSON for nested values, `i64` for milliseconds (SQLite integers are signed).

use serde::de::{DeserializeOwned, IntoDeserializer};
use serde::Serialize;

use super::StoreError;
use crate::model::{ManualStatus, Millis, Reason, Status};
use crate::protocol::ErrorCode;

/// Milliseconds as an SQLite integer (saturating: no real time reaches `i64::MAX`).
pub(super) fn ms_to_sql(ms: Millis) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// An SQLite integer as milliseconds (negative values, which the hub never writes, are 0).
pub(super) fn ms_from_sql(v: i64) -> Millis {
    u64::try_from(v).unwrap_or(0)
}

/// The wire name of a manual status.
pub(super) fn manual_str(m: ManualStatus) -> &'static str {
    m.status().as_str()
}

/// Parses a stored status.
pub(super) fn parse_status(s: &str) -> Result<Status, StoreError> {
    Status::parse(s).ok_or_else(|| StoreError::decode("status", format!("unknown status {s:?}")))
}

/// Parses a stored manual status.
pub(super) fn parse_manual(s: &str) -> Result<ManualStatus, StoreError> {
    Status::parse(s)
        .and_then(Status::as_manual)
        .ok_or_else(|| StoreError::decode("manual status", format!("not a manual status {s:?}")))
}

/// Parses a stored reason (its wire name).
pub(super) fn parse_reason(s: &str) -> Result<Reason, StoreError> {
    parse_enum(s).ok_or_else(|| StoreError::decode("reason", format!("unknown reason {s:?}")))
}

/// A unit enum variant from its serde name.
fn parse_enum<T: DeserializeOwned>(s: &str) -> Option<T> {
    let de: serde::de::value::StrDeserializer<'_, serde::de::value::Error> = s.into_deserializer();
    T::deserialize(de).ok()
}

/// Every protocol error code, so a stored one can be parsed back.
const ERROR_CODES: [ErrorCode; 10] = [
    ErrorCode::BadMessage,
    ErrorCode::InvalidStatus,
    ErrorCode::InvalidState,
    ErrorCode::UnknownCall,
    ErrorCode::UnknownAgent,
    ErrorCode::Forbidden,
    ErrorCode::Conflict,
    ErrorCode::RateLimited,
    ErrorCode::NotFound,
    ErrorCode::Unavailable,
];

/// Parses a stored error code.
pub(super) fn parse_error_code(s: &str) -> Result<ErrorCode, StoreError> {
    ERROR_CODES
        .iter()
        .copied()
        .find(|c| c.as_str() == s)
        .ok_or_else(|| StoreError::decode("error code", format!("unknown error code {s:?}")))
}

/// JSON text of a value.
pub(super) fn to_json<T: Serialize + ?Sized>(
    what: &'static str,
    value: &T,
) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::decode(what, e))
}

/// A value from its JSON text.
pub(super) fn from_json<T: DeserializeOwned>(what: &'static str, s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::decode(what, e))
}

/// Seconds (from the directory) as an SQLite integer.
pub(super) fn secs_to_sql(s: Option<u64>) -> Option<i64> {
    s.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

/// An SQLite integer as seconds (negative values, which the hub never writes, are 0).
pub(super) fn secs_from_sql(v: Option<i64>) -> Option<u64> {
    v.map(|v| u64::try_from(v).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails to compile when a variant is added to `ErrorCode` without updating the list.
    #[allow(dead_code)]
    fn every_error_code_is_listed(c: ErrorCode) -> usize {
        match c {
            ErrorCode::BadMessage
            | ErrorCode::InvalidStatus
            | ErrorCode::InvalidState
            | ErrorCode::UnknownCall
            | ErrorCode::UnknownAgent
            | ErrorCode::Forbidden
            | ErrorCode::Conflict
            | ErrorCode::RateLimited
            | ErrorCode::NotFound
            | ErrorCode::Unavailable => ERROR_CODES.len(),
        }
    }

    #[test]
    fn enums_round_trip_through_their_wire_names() {
        for s in Status::ALL {
            assert_eq!(parse_status(s.as_str()).ok(), Some(s));
        }
        for m in ManualStatus::ALL {
            assert_eq!(parse_manual(manual_str(m)).ok(), Some(m));
        }
        assert!(parse_manual("ringing").is_err());
        assert_eq!(parse_reason("ring_timeout").ok(), Some(Reason::RingTimeout));
        assert_eq!(
            parse_reason(Reason::AdminLogout.as_str()).ok(),
            Some(Reason::AdminLogout)
        );
        assert!(parse_reason("nope").is_err());
        for c in ERROR_CODES {
            assert_eq!(parse_error_code(c.as_str()).ok(), Some(c));
        }
        assert!(parse_error_code("nope").is_err());
        assert_eq!(ms_from_sql(ms_to_sql(u64::MAX)), i64::MAX as u64);
        assert_eq!(ms_from_sql(-5), 0);
    }
}
