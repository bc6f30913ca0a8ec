//! Identifier newtypes. An id that reaches the hub from outside is validated once, here,
//! so every other module can trust it.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// An id was empty, too long, or used a character outside `[A-Za-z0-9._@-]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: must be 1..=128 characters of [A-Za-z0-9._@-]")]
pub struct InvalidId {
    /// Which kind of id was rejected, for the error message.
    pub kind: &'static str,
}

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
}

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates and wraps an id coming from outside.
            pub fn parse(s: &str) -> Result<Self, InvalidId> {
                if valid_id(s) {
                    Ok(Self(Arc::from(s)))
                } else {
                    Err(InvalidId { kind: $kind })
                }
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_newtype!(
    /// An agent's stable id (the JWT `sub` of its token).
    AgentId,
    "agent_id"
);
id_newtype!(
    /// A call's id as the telephony adapter names it.
    CallId,
    "call_id"
);
id_newtype!(
    /// A team id, used by admin filters.
    TeamId,
    "team id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        assert!(AgentId::parse("a1").is_ok());
        assert!(AgentId::parse("jane.doe@example-1_x").is_ok());
        assert!(AgentId::parse(&"x".repeat(128)).is_ok());
    }

    #[test]
    fn rejects_everything_else() {
        assert!(AgentId::parse("").is_err());
        assert!(AgentId::parse(&"x".repeat(129)).is_err());
        assert!(AgentId::parse("a b").is_err());
        assert!(AgentId::parse("a/b").is_err());
        assert!(AgentId::parse("é").is_err());
        assert!(serde_json::from_str::<AgentId>("\"a:b\"").is_err());
        assert_eq!(
            serde_json::from_str::<AgentId>("\"a1\"").ok(),
            AgentId::parse("a1").ok()
        );
    }
}
