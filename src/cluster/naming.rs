//! Names of everything the backplane creates in NATS, derived from `--nats-prefix`, and the
//! one escaping rule that turns hub ids into subject tokens and KV keys.
//!
//! Agent ids may hold `.` and `@`, telephony event ids any printable text: a `.` would split
//! a subject into more tokens and `@` is not allowed in KV keys. [`token`] keeps
//! `[A-Za-z0-9-]` as is and writes every other byte as `_XX` (two hex digits). Since `_`
//! itself is always escaped, the mapping is injective: two different ids never share a name.

use std::fmt::Write as _;

/// Why a prefix or node id cannot be used to name streams, buckets and subjects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: must be {allowed}")]
pub struct InvalidName {
    /// Which setting was rejected.
    pub what: &'static str,
    /// The rejected value, for the message.
    pub value: String,
    /// What is allowed, for the message.
    pub allowed: &'static str,
}

/// Checks a name that goes verbatim into stream and bucket names (no escaping there, so an
/// operator can find them with `nats stream ls`).
pub fn check_plain(what: &'static str, value: &str) -> Result<(), InvalidName> {
    let ok = !value.is_empty()
        && value.len() <= 32
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(InvalidName {
            what,
            value: value.to_owned(),
            allowed: "1..=32 characters of [A-Za-z0-9_-]",
        })
    }
}

/// Escapes any text into one subject token / KV key segment (see the module doc).
pub fn token(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else {
            let _ = write!(out, "_{b:02X}");
        }
    }
    out
}

/// Reverses [`token`]; `None` for text [`token`] cannot have produced.
pub fn untoken(tok: &str) -> Option<String> {
    let bytes = tok.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'_' {
            let hex = tok.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Every name derived from one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// `--nats-prefix`, validated.
    pub prefix: String,
}

impl Names {
    /// Validates the prefix.
    pub fn new(prefix: &str) -> Result<Self, InvalidName> {
        check_plain("--nats-prefix", prefix)?;
        Ok(Names {
            prefix: prefix.to_owned(),
        })
    }

    /// The stream of agent state changes.
    pub fn agents_stream(&self) -> String {
        format!("{}_agents", self.prefix)
    }

    /// The subjects the agents stream captures.
    pub fn agents_subjects(&self) -> String {
        format!("{}.agent.>", self.prefix)
    }

    /// The subject of one agent's changes.
    pub fn agent_subject(&self, agent_id: &str) -> String {
        format!("{}.agent.{}", self.prefix, token(agent_id))
    }

    /// The KV bucket of telephony event ids already answered.
    pub fn dedup_bucket(&self) -> String {
        format!("{}_dedup", self.prefix)
    }

    /// The KV bucket holding agents and ring groups.
    pub fn directory_bucket(&self) -> String {
        format!("{}_directory", self.prefix)
    }

    /// The KV bucket of live members (one key per node, kept alive by heartbeats).
    pub fn members_bucket(&self) -> String {
        format!("{}_members", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_injective_and_reversible() {
        let ids = ["a", "a.b", "a_2Eb", "a_b", "x@y.z", "ünï", "-", "_", "__"];
        let toks: Vec<String> = ids.iter().map(|s| token(s)).collect();
        for (i, t) in toks.iter().enumerate() {
            assert!(t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            assert_eq!(untoken(t).as_deref(), Some(ids[i]));
            for (j, u) in toks.iter().enumerate() {
                assert_eq!(i == j, t == u, "{} vs {}", ids[i], ids[j]);
            }
        }
        assert_eq!(token("a.b"), "a_2Eb");
        assert_eq!(untoken("a_2"), None);
        assert_eq!(untoken("a_ZZ"), None);
    }

    #[test]
    fn names_follow_the_prefix() {
        let n = Names::new("ph").unwrap();
        assert_eq!(n.agents_stream(), "ph_agents");
        assert_eq!(n.agent_subject("ann.lee@x"), "ph.agent.ann_2Elee_40x");
        assert!(Names::new("a.b").is_err());
        assert!(Names::new("").is_err());
        assert!(Names::new(&"x".repeat(33)).is_err());
    }
}
