//! The one validation of directory entries, shared by the TOML loader (`--directory`) and
//! the directory API (`PUT /api/v1/directory/agents/{id}`, `PUT /api/v1/ring-groups/{id}`):
//! a value one path accepts the other accepts too, so a profile read back with `GET` can
//! always be sent back with `PUT`.

use super::{AgentProfile, RingGroup};
use crate::model::TeamId;
use crate::protocol::{MAX_RING_TIMEOUT_MS, MAX_TEXT_CHARS};

/// Longest wrap-up time a directory entry (or `--wrap-up-secs`) may set: 1 day.
pub const MAX_WRAP_UP_SECONDS: u64 = 24 * 3600;
/// Longest ring timeout of a ring group (or `--ring-timeout-secs`): the offer's limit.
pub const MAX_RING_TIMEOUT_SECONDS: u64 = MAX_RING_TIMEOUT_MS / 1000;
/// Most teams or ring groups of one agent.
pub const MAX_LIST: usize = 100;
/// Most members of one ring group.
pub const MAX_MEMBERS: usize = 10_000;

/// Why a directory entry was refused (a sentence for the user).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidEntry(pub String);

/// Checks a ring group id: the rules of every other id.
pub fn check_ring_group_id(id: &str) -> Result<(), InvalidEntry> {
    TeamId::parse(id).map(|_| ()).map_err(|_| {
        InvalidEntry(format!(
            "invalid ring group id {id:?}: must be 1..=128 characters of [A-Za-z0-9._@-]"
        ))
    })
}

/// Order-keeping de-duplication (a list naming a team twice means it once).
fn dedup<T: PartialEq>(items: Vec<T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

impl AgentProfile {
    /// The profile with its limits checked and duplicate list items dropped.
    pub fn validated(self) -> Result<AgentProfile, InvalidEntry> {
        if let Some(name) = &self.name {
            if name.chars().count() > MAX_TEXT_CHARS || name.chars().any(char::is_control) {
                return Err(InvalidEntry(format!(
                    "name must be at most {MAX_TEXT_CHARS} characters, without control characters"
                )));
            }
        }
        if self
            .wrap_up_seconds
            .is_some_and(|s| s > MAX_WRAP_UP_SECONDS)
        {
            return Err(InvalidEntry(format!(
                "wrap_up_seconds must be at most {MAX_WRAP_UP_SECONDS}"
            )));
        }
        if self.teams.len() > MAX_LIST || self.ring_groups.len() > MAX_LIST {
            return Err(InvalidEntry(format!(
                "at most {MAX_LIST} teams and {MAX_LIST} ring groups"
            )));
        }
        for g in &self.ring_groups {
            check_ring_group_id(g)?;
        }
        Ok(AgentProfile {
            teams: dedup(self.teams),
            ring_groups: dedup(self.ring_groups),
            ..self
        })
    }
}

impl RingGroup {
    /// The group with its limits checked and duplicate members dropped.
    pub fn validated(self) -> Result<RingGroup, InvalidEntry> {
        check_ring_group_id(&self.id)?;
        if self
            .ring_timeout_seconds
            .is_some_and(|s| s == 0 || s > MAX_RING_TIMEOUT_SECONDS)
        {
            return Err(InvalidEntry(format!(
                "ring_timeout_seconds must be 1..={MAX_RING_TIMEOUT_SECONDS}"
            )));
        }
        if self.members.len() > MAX_MEMBERS {
            return Err(InvalidEntry(format!("at most {MAX_MEMBERS} members")));
        }
        Ok(RingGroup {
            members: dedup(self.members),
            ..self
        })
    }
}
