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
#[derive(Debug, Clone, Default)]
pub struct Directory {
    pub agents: HashMap<AgentId, AgentProfile>,
    pub ring_groups: HashMap<String, RingGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectoryFile {
    #[serde(default)]
    agents: Vec<AgentProfile>,
    #[serde(default)]
    ring_groups: Vec<RingGroup>,
}

/// The directory file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("cannot read directory file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid directory file {path}: {source}")]
    Parse {
        path: String,
        source: Box<toml::de::Error>,
    },
}

impl Directory {
    /// Parses the TOML text of a directory file.
    pub fn from_toml(text: &str) -> Result<Directory, toml::de::Error> {
        let file: DirectoryFile = toml::from_str(text)?;
        let mut dir = Directory::default();
        for group in file.ring_groups {
            dir.ring_groups.insert(group.id.clone(), group);
        }
        for agent in file.agents {
            dir.agents.insert(agent.id.clone(), agent);
        }
        Ok(dir)
    }

    /// Reads and parses a directory file.
    pub fn load(path: &Path) -> Result<Directory, DirectoryError> {
        let text = std::fs::read_to_string(path).map_err(|source| DirectoryError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Directory::from_toml(&text).map_err(|source| DirectoryError::Parse {
            path: path.display().to_string(),
            source: Box::new(source),
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
