//! The agent directory (names, teams, wrap-up times, ring groups) and ring groups
//! (ring timeouts, members), loaded from an optional TOML file.
//!
//! ```toml
//! [[agents]]
//! id = "a1"
//! name = "Ada Lovelace"
//! teams = ["sales"]
//! wrap_up_seconds = 30
//! ring_groups = ["sales-line"]
//!
//! [[ring_groups]]
//! id = "sales-line"
//! ring_timeout_seconds = 20
//! members = ["a1"]
//! ```

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

use crate::model::{AgentId, TeamId};

mod validate;
pub use validate::{
    check_ring_group_id, InvalidEntry, MAX_LIST, MAX_MEMBERS, MAX_RING_TIMEOUT_SECONDS,
    MAX_WRAP_UP_SECONDS,
};

/// What the directory knows about one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentProfile {
    pub id: AgentId,
    pub name: Option<String>,
    #[serde(default)]
    pub teams: Vec<TeamId>,
    /// Overrides the hub's default wrap-up time for this agent.
    pub wrap_up_seconds: Option<u64>,
    #[serde(default)]
    pub ring_groups: Vec<String>,
}

/// A ring group: the calls of one line or queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RingGroup {
    pub id: String,
    /// How long an offer of this group rings before it times out.
    pub ring_timeout_seconds: Option<u64>,
    #[serde(default)]
    pub members: Vec<AgentId>,
}

/// Agents and ring groups by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directory {
    pub agents: HashMap<AgentId, AgentProfile>,
    pub ring_groups: HashMap<String, RingGroup>,
}

/// The file as written: every entry with its place in the text, for messages.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectoryFile {
    #[serde(default)]
    agents: Vec<toml::Spanned<AgentProfile>>,
    #[serde(default)]
    ring_groups: Vec<toml::Spanned<RingGroup>>,
}

/// The text of a directory file is not a valid directory.
#[derive(Debug, thiserror::Error)]
pub enum TomlError {
    /// Not TOML, an unknown field, a mistyped value or an invalid id (one line: the
    /// position and toml's message, without its multi-line excerpt).
    #[error("{position}{message}")]
    Syntax { position: String, message: String },
    /// An entry out of the limits the directory API enforces, or a duplicate id.
    #[error("line {line}: {message}")]
    Entry { line: usize, message: String },
}

/// The directory file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("cannot read directory file {path}: {error}")]
    Read { path: String, error: std::io::Error },
    // `error`, not `source`: the message already carries it (a source would print twice).
    #[error("invalid directory file {path}: {error}")]
    Parse { path: String, error: TomlError },
}

/// toml's message on one line, in the file's terms rather than Rust's ("expected u64"
/// reads "expected a non-negative integer").
fn plain_toml_message(message: &str) -> String {
    let mut out = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    for (rust, plain) in [
        ("expected u64", "expected a non-negative integer"),
        ("expected u32", "expected a non-negative integer"),
        ("expected u16", "expected a non-negative integer"),
        ("expected usize", "expected a non-negative integer"),
        ("expected i64", "expected an integer"),
        ("expected a sequence", "expected an array"),
    ] {
        out = out.replace(rust, plain);
    }
    out
}

impl Directory {
    /// Parses the TOML text of a directory file. Every entry passes the checks of the
    /// directory API ([`AgentProfile::validated`], [`RingGroup::validated`]); an id listed
    /// twice is refused. Errors name the entry's line.
    pub fn from_toml(text: &str) -> Result<Directory, TomlError> {
        let line_of = |span: std::ops::Range<usize>| {
            let start = span.start.min(text.len());
            text.as_bytes()[..start]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1
        };
        let file: DirectoryFile = toml::from_str(text).map_err(|e| TomlError::Syntax {
            position: e
                .span()
                .map(|span| format!("line {}: ", line_of(span)))
                .unwrap_or_default(),
            message: plain_toml_message(e.message()),
        })?;
        let entry = |span, what: &str, e: InvalidEntry| TomlError::Entry {
            line: line_of(span),
            message: format!("{what}: {e}"),
        };
        let mut dir = Directory::default();
        for spanned in file.ring_groups {
            let span = spanned.span();
            let what = format!("ring group {:?}", spanned.get_ref().id);
            let group = spanned
                .into_inner()
                .validated()
                .map_err(|e| entry(span.clone(), &what, e))?;
            if dir.ring_groups.contains_key(&group.id) {
                let e = InvalidEntry("listed twice".into());
                return Err(entry(span, &what, e));
            }
            dir.ring_groups.insert(group.id.clone(), group);
        }
        for spanned in file.agents {
            let span = spanned.span();
            let what = format!("agent {:?}", spanned.get_ref().id.as_str());
            let agent = spanned
                .into_inner()
                .validated()
                .map_err(|e| entry(span.clone(), &what, e))?;
            if dir.agents.contains_key(&agent.id) {
                let e = InvalidEntry("listed twice".into());
                return Err(entry(span, &what, e));
            }
            dir.agents.insert(agent.id.clone(), agent);
        }
        Ok(dir)
    }

    /// True when the directory has no agent and no ring group.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty() && self.ring_groups.is_empty()
    }

    /// Reads and parses a directory file.
    pub fn load(path: &Path) -> Result<Directory, DirectoryError> {
        let text = std::fs::read_to_string(path).map_err(|error| DirectoryError::Read {
            path: path.display().to_string(),
            error,
        })?;
        Directory::from_toml(&text).map_err(|error| DirectoryError::Parse {
            path: path.display().to_string(),
            error,
        })
    }

    /// True when `agent` belongs to ring group `group` (by either side's list).
    pub fn in_ring_group(&self, agent: &AgentId, group: &str) -> bool {
        self.ring_groups
            .get(group)
            .is_some_and(|g| g.members.contains(agent))
            || self
                .agents
                .get(agent)
                .is_some_and(|a| a.ring_groups.iter().any(|g| g == group))
    }

    /// True when `group` is a ring group: it has an entry, or an agent names it.
    pub fn has_ring_group(&self, group: &str) -> bool {
        self.ring_groups.contains_key(group)
            || self
                .agents
                .values()
                .any(|a| a.ring_groups.iter().any(|g| g == group))
    }

    /// The ring timeout of a ring group, if the group sets one.
    pub fn ring_timeout_ms(&self, group: &str) -> Option<u64> {
        self.ring_groups
            .get(group)
            .and_then(|g| g.ring_timeout_seconds)
            .map(|s| s.saturating_mul(1000))
    }

    /// The ring groups `agent` belongs to.
    pub fn groups_of(&self, agent: &AgentId) -> Vec<&str> {
        // A fixed order (the agent's own list first, then the groups naming it, by id), so
        // that "the agent's ring group's timeout" does not depend on hash order.
        let mut groups: Vec<&str> = self
            .agents
            .get(agent)
            .map(|a| a.ring_groups.iter().map(String::as_str).collect())
            .unwrap_or_default();
        let mut naming: Vec<&str> = self
            .ring_groups
            .values()
            .filter(|g| g.members.contains(agent))
            .map(|g| g.id.as_str())
            .collect();
        naming.sort_unstable();
        for g in naming {
            if !groups.contains(&g) {
                groups.push(g);
            }
        }
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_agents_and_groups() {
        let dir = Directory::from_toml(
            r#"
            [[agents]]
            id = "a1"
            name = "Ada"
            teams = ["sales"]
            wrap_up_seconds = 30
            [[agents]]
            id = "a2"
            ring_groups = ["support"]
            [[ring_groups]]
            id = "sales-line"
            ring_timeout_seconds = 20
            members = ["a1"]
            "#,
        )
        .expect("valid directory");
        let a1 = AgentId::parse("a1").expect("id");
        let a2 = AgentId::parse("a2").expect("id");
        assert_eq!(dir.agents[&a1].wrap_up_seconds, Some(30));
        assert!(dir.in_ring_group(&a1, "sales-line"));
        assert!(dir.in_ring_group(&a2, "support"));
        assert!(!dir.in_ring_group(&a2, "sales-line"));
        assert_eq!(dir.ring_timeout_ms("sales-line"), Some(20_000));
        assert_eq!(dir.groups_of(&a1), vec!["sales-line"]);
    }

    #[test]
    fn rejects_bad_ids_and_unknown_fields() {
        assert!(Directory::from_toml("[[agents]]\nid = \"a b\"").is_err());
        assert!(Directory::from_toml("[[agents]]\nid = \"a\"\nwrapup = 3").is_err());
    }

    /// The limits of the directory API hold for the file too, with the entry's line.
    #[test]
    fn file_type_errors_name_no_rust_type_and_fit_one_line() {
        for text in [
            "[[agents]]\nid = \"a1\"\nwrap_up_seconds = -5\n",
            "[[agents]]\nid = \"a1\"\nwrap_up_seconds = \"30\"\n",
            "[[agents]\nid = \"a1\"\n",
        ] {
            let e = Directory::from_toml(text).unwrap_err().to_string();
            assert!(e.starts_with("line "), "{e}");
            assert!(!e.contains('\n'), "{e}");
            assert!(!e.contains("u64") && !e.contains("i64"), "{e}");
        }
    }

    #[test]
    fn file_entries_get_the_api_limits_and_name_their_line() {
        let teams: Vec<String> = (0..150).map(|i| format!("\"t{i}\"")).collect();
        let long_name = "n".repeat(300);
        for (text, line, needle) in [
            (
                "[[agents]]\nid = \"a0\"\n\n[[ring_groups]]\nid = \"g\"\nring_timeout_seconds = 0\nmembers = [\"a1\"]\n".to_string(),
                4,
                "ring_timeout_seconds must be 1..=3600",
            ),
            ("[[ring_groups]]\nid = \"g\"\nring_timeout_seconds = 999999\n".into(), 1, "1..=3600"),
            ("[[ring_groups]]\nid = \"a b\"\n".into(), 1, "invalid ring group id"),
            ("[[agents]]\nid = \"a1\"\nwrap_up_seconds = 999999999\n".into(), 1, "wrap_up_seconds"),
            (format!("[[agents]]\nid = \"a1\"\nname = \"{long_name}\"\n"), 1, "name must be"),
            (format!("\n[[agents]]\nid = \"a1\"\nteams = [{}]\n", teams.join(",")), 2, "at most 100 teams"),
            ("[[agents]]\nid = \"a1\"\n[[agents]]\nid = \"a2\"\n[[agents]]\nid = \"a1\"\n".into(), 5, "agent \"a1\": listed twice"),
            ("[[ring_groups]]\nid = \"g\"\n[[ring_groups]]\nid = \"g\"\n".into(), 3, "listed twice"),
        ] {
            let e = Directory::from_toml(&text).expect_err("refused").to_string();
            assert!(e.starts_with(&format!("line {line}: ")), "{e:?} should name line {line}");
            assert!(e.contains(needle), "{e:?} should mention {needle:?}");
        }
    }

    #[test]
    fn ring_groups_of_an_agent_come_in_a_fixed_order() {
        let dir = Directory::from_toml(
            r#"
            [[agents]]
            id = "a1"
            ring_groups = ["b-line"]
            [[ring_groups]]
            id = "z-line"
            members = ["a1"]
            [[ring_groups]]
            id = "a-line"
            members = ["a1"]
            [[ring_groups]]
            id = "b-line"
            members = ["a1"]
            "#,
        )
        .expect("valid directory");
        let a1 = AgentId::parse("a1").expect("id");
        assert_eq!(dir.groups_of(&a1), vec!["b-line", "a-line", "z-line"]);
    }
}
