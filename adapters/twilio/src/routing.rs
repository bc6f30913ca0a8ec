//! The adapter's routing file (TOML): which ring group a called number rings, and per group
//! the ring timeout, the limit of agents tried, and what the caller hears when nobody takes
//! the call.
//!
//! ```toml
//! caller_id = "+15550000"            # shown on calls agents place from the softphone
//! unmapped = { say = "This number is not in service." }   # called numbers not listed
//!
//! [numbers]
//! "+15550000" = "sales-line"
//!
//! [defaults]
//! ring_timeout_secs = 20
//! max_attempts = 3
//! fallback = { say = "All our agents are busy. Please call again later." }
//!
//! [groups.sales-line]
//! max_attempts = 2
//! fallback = { redirect = "https://example.com/voicemail" }
//! ```

use serde::Deserialize;
use std::collections::HashMap;

/// Twilio's `<Dial timeout>` range, in seconds.
pub const RING_TIMEOUT_RANGE: std::ops::RangeInclusive<u32> = 5..=600;
/// Most agents one call may ring in turn.
pub const MAX_ATTEMPTS_LIMIT: u32 = 50;

/// What a caller hears when no agent takes the call.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Fallback {
    /// `<Say>` this text, then `<Hangup/>`.
    Say(String),
    /// `<Redirect>` to this URL (a voicemail flow, another system).
    Redirect(String),
}

impl Default for Fallback {
    fn default() -> Self {
        Fallback::Say("All our agents are busy. Please call again later.".to_string())
    }
}

/// What a call to a number missing from `[numbers]` hears unless `unmapped` says otherwise:
/// not the busy message, since no agent was even tried (it is a setup mistake, logged).
pub fn default_unmapped() -> Fallback {
    Fallback::Say("This number is not in service.".to_string())
}

/// One group's settings; fields left out come from `[defaults]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupEntry {
    /// `<Dial timeout>`: how long one agent's phone rings.
    ring_timeout_secs: Option<u32>,
    /// How many agents are rung in turn before the fallback.
    max_attempts: Option<u32>,
    /// What the caller hears when nobody answers.
    fallback: Option<Fallback>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    caller_id: Option<String>,
    unmapped: Option<Fallback>,
    #[serde(default)]
    numbers: HashMap<String, String>,
    #[serde(default)]
    defaults: GroupEntry,
    #[serde(default)]
    groups: HashMap<String, GroupEntry>,
}

/// A group's resolved settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPolicy {
    /// Seconds one agent's phone rings (`<Dial timeout>`).
    pub ring_timeout_secs: u32,
    /// Agents rung in turn before the fallback.
    pub max_attempts: u32,
    /// What the caller hears when nobody answers.
    pub fallback: Fallback,
}

/// The routing table.
#[derive(Debug, Clone)]
pub struct Routing {
    /// Caller id for calls agents place from the softphone (`<Dial callerId>`).
    pub caller_id: Option<String>,
    /// Called number (as Twilio sends `To`, E.164) to ring group id.
    numbers: HashMap<String, String>,
    /// Settings of groups named in `[groups]`.
    groups: HashMap<String, GroupPolicy>,
    /// Settings of every group not named in `[groups]`.
    defaults: GroupPolicy,
    /// What a call to a number not in `[numbers]` hears (a misconfiguration, not a busy
    /// group: its own message).
    pub unmapped: Fallback,
}

/// A routing file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("routing file is not valid TOML for the adapter: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("{0}")]
    Invalid(String),
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            caller_id: None,
            numbers: HashMap::new(),
            groups: HashMap::new(),
            defaults: GroupPolicy {
                ring_timeout_secs: 20,
                max_attempts: 3,
                fallback: Fallback::default(),
            },
            unmapped: default_unmapped(),
        }
    }
}

impl Routing {
    /// Parses and checks a routing file.
    pub fn parse(text: &str) -> Result<Routing, RoutingError> {
        let file: File = toml::from_str(text)?;
        let base = Routing::default().defaults;
        let defaults = resolve("defaults", &file.defaults, &base)?;
        let mut groups = HashMap::new();
        for (id, entry) in &file.groups {
            groups.insert(id.clone(), resolve(id, entry, &defaults)?);
        }
        for (number, group) in &file.numbers {
            if group.is_empty() {
                return Err(RoutingError::Invalid(format!(
                    "number {number} maps to an empty group id"
                )));
            }
        }
        Ok(Routing {
            caller_id: file.caller_id,
            numbers: file.numbers,
            groups,
            defaults,
            unmapped: file.unmapped.unwrap_or_else(default_unmapped),
        })
    }

    /// Adds or replaces one number's group (tests, simple setups).
    pub fn with_number(mut self, number: &str, group: &str) -> Self {
        self.numbers.insert(number.to_string(), group.to_string());
        self
    }

    /// Sets one group's settings.
    pub fn with_group(mut self, group: &str, policy: GroupPolicy) -> Self {
        self.groups.insert(group.to_string(), policy);
        self
    }

    /// The ring group a called number rings, if it is mapped.
    pub fn group_of(&self, number: &str) -> Option<&str> {
        self.numbers.get(number).map(String::as_str)
    }

    /// A group's settings (the defaults for groups not listed).
    pub fn policy(&self, group: &str) -> &GroupPolicy {
        self.groups.get(group).unwrap_or(&self.defaults)
    }

    /// The settings of groups not named in `[groups]`.
    pub fn defaults(&self) -> &GroupPolicy {
        &self.defaults
    }

    /// Sets what calls to unmapped numbers hear.
    pub fn with_unmapped(mut self, fallback: Fallback) -> Self {
        self.unmapped = fallback;
        self
    }
}

fn resolve(name: &str, e: &GroupEntry, base: &GroupPolicy) -> Result<GroupPolicy, RoutingError> {
    let p = GroupPolicy {
        ring_timeout_secs: e.ring_timeout_secs.unwrap_or(base.ring_timeout_secs),
        max_attempts: e.max_attempts.unwrap_or(base.max_attempts),
        fallback: e.fallback.clone().unwrap_or_else(|| base.fallback.clone()),
    };
    if !RING_TIMEOUT_RANGE.contains(&p.ring_timeout_secs) {
        return Err(RoutingError::Invalid(format!(
            "{name}: ring_timeout_secs must be between 5 and 600 (Twilio's <Dial timeout>)"
        )));
    }
    if !(1..=MAX_ATTEMPTS_LIMIT).contains(&p.max_attempts) {
        return Err(RoutingError::Invalid(format!(
            "{name}: max_attempts must be between 1 and {MAX_ATTEMPTS_LIMIT}"
        )));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_inherit_defaults() {
        let r = Routing::parse(
            r#"
            [numbers]
            "+15550000" = "sales"
            [defaults]
            ring_timeout_secs = 15
            [groups.sales]
            max_attempts = 2
            fallback = { redirect = "https://ex.com/vm" }
            "#,
        )
        .expect("valid");
        assert_eq!(r.group_of("+15550000"), Some("sales"));
        assert_eq!(r.group_of("+15559999"), None);
        let p = r.policy("sales");
        assert_eq!((p.ring_timeout_secs, p.max_attempts), (15, 2));
        assert_eq!(p.fallback, Fallback::Redirect("https://ex.com/vm".into()));
        assert_eq!(r.policy("other").max_attempts, 3);
    }

    #[test]
    fn the_example_file_parses() {
        let r = Routing::parse(include_str!("../routing.example.toml")).expect("example");
        assert_eq!(r.group_of("+15550000001"), Some("support"));
        assert_eq!(r.policy("sales-line").ring_timeout_secs, 15);
        assert_eq!(r.policy("sales-line").max_attempts, 2);
        assert_eq!(
            r.policy("support").fallback,
            Fallback::Redirect("https://example.com/twilio/voicemail".into())
        );
        assert_eq!(r.caller_id.as_deref(), Some("+15550000000"));
        assert_eq!(
            r.unmapped,
            Fallback::Say("This number is not in service.".into())
        );
    }

    #[test]
    fn the_unmapped_number_fallback_is_its_own_setting() {
        let r = Routing::parse("[defaults]\nfallback = { say = \"Busy.\" }").expect("valid");
        assert_eq!(r.unmapped, default_unmapped(), "not the group default");
        let r =
            Routing::parse("unmapped = { redirect = \"https://ex.com/closed\" }").expect("valid");
        assert_eq!(
            r.unmapped,
            Fallback::Redirect("https://ex.com/closed".into())
        );
        assert!(Routing::parse("unmapped = { play = \"x\" }").is_err());
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        let e = Routing::parse("[defaults]\nring_timeout_secs = 2").unwrap_err();
        assert!(e.to_string().contains("ring_timeout_secs"), "{e}");
        let e = Routing::parse("[groups.g]\nmax_attempts = 0").unwrap_err();
        assert!(e.to_string().contains("g: max_attempts"), "{e}");
        assert!(Routing::parse("[numbers]\n\"+1\" = 5").is_err());
        assert!(Routing::parse("typo = 1").is_err());
    }
}
