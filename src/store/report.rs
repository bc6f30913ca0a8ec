//! Status-time arithmetic, as pure functions over transitions: how long an agent spent in
//! each status within `[from, to)`, and the CSV form of a report.
//!
//! Rules (the reports API documents the same):
//! - the status at `from` is the `to` of the last transition before `from`; if there is none,
//!   the `from` of the first transition at or after `from` (the agent was in it before); if
//!   there is no transition at all, the caller's fallback (the agent's stored status);
//! - every interval is cut at the range edges; the interval still open is counted up to
//!   `min(now, to)`, and nothing after `now` is counted;
//! - so every agent's total is `max(0, min(to, now) - from)`; the report (`read.rs`) passes
//!   as `from` the later of the range's start and the agent's creation (its first stored
//!   state), so only the time an agent existed counts.

use serde::Serialize;
use std::collections::BTreeMap;

use crate::model::{AgentId, Millis, Status};

/// One change of effective status, as the arithmetic needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub at: Millis,
    pub from: Status,
    pub to: Status,
}

/// Milliseconds per status of one agent within a report's range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentStatusTime {
    pub agent_id: AgentId,
    /// Every status, 0 when none of the range was spent in it.
    pub ms: BTreeMap<Status, u64>,
}

impl AgentStatusTime {
    /// Seconds spent in `status` (millisecond precision).
    pub fn seconds(&self, status: Status) -> f64 {
        self.ms.get(&status).copied().unwrap_or(0) as f64 / 1000.0
    }

    /// Milliseconds over all statuses.
    pub fn total_ms(&self) -> u64 {
        self.ms.values().sum()
    }
}

/// Accumulates one agent's time per status from its transitions, in order.
#[derive(Debug, Clone)]
pub struct StatusClock {
    from: Millis,
    end: Millis,
    /// The status since `cursor`, once known.
    current: Option<Status>,
    cursor: Millis,
    ms: BTreeMap<Status, u64>,
}

impl StatusClock {
    /// A clock for the range `[from, min(to, now))`.
    pub fn new(from: Millis, to: Millis, now: Millis) -> Self {
        let end = to.min(now).max(from);
        StatusClock {
            from,
            end,
            current: None,
            cursor: from,
            ms: Status::ALL.iter().map(|s| (*s, 0)).collect(),
        }
    }

    /// Feeds the next transition (in `(at, id)` order).
    pub fn push(&mut self, t: Transition) {
        if t.at < self.from {
            // Before the range: only the latest one matters, as the status at `from`.
            self.current = Some(t.to);
            return;
        }
        let at = t.at.min(self.end);
        let current = *self.current.get_or_insert(t.from);
        self.add(current, at);
        self.current = Some(t.to);
    }

    /// The total per status; `fallback` is the status throughout when no transition came.
    pub fn finish(mut self, fallback: Status) -> BTreeMap<Status, u64> {
        let current = self.current.unwrap_or(fallback);
        let end = self.end;
        self.add(current, end);
        self.ms
    }

    fn add(&mut self, status: Status, until: Millis) {
        if until > self.cursor {
            *self.ms.entry(status).or_insert(0) += until - self.cursor;
            self.cursor = until;
        }
    }
}

/// Time per status within `[from, to)` from an agent's transitions (sorted by time; those
/// before `from` may be included, only the last of them counts), counting the open interval
/// up to `min(now, to)`. The status at `from` is the `to` of the last row before it, else
/// the `from` of the first row in the range, else `fallback` (when `rows` is empty).
pub fn status_time(
    rows: &[Transition],
    fallback: Status,
    from: Millis,
    to: Millis,
    now: Millis,
) -> BTreeMap<Status, u64> {
    let mut clock = StatusClock::new(from, to, now);
    for t in rows {
        clock.push(*t);
    }
    clock.finish(fallback)
}

/// The CSV form of a report: `agent_id`, seconds in each status (with millisecond
/// decimals, in wallboard order), `total`. Fields that a spreadsheet would take for a
/// formula (starting with `=`, `+`, `-`, `@`) are prefixed with `'`.
pub fn to_csv(report: &[AgentStatusTime]) -> String {
    let mut out = String::with_capacity(64 + report.len() * 80);
    out.push_str("agent_id");
    for s in Status::ALL {
        out.push(',');
        out.push_str(s.as_str());
    }
    out.push_str(",total\r\n");
    for row in report {
        push_field(&mut out, row.agent_id.as_str());
        for s in Status::ALL {
            out.push(',');
            push_seconds(&mut out, row.ms.get(&s).copied().unwrap_or(0));
        }
        out.push(',');
        push_seconds(&mut out, row.total_ms());
        out.push_str("\r\n");
    }
    out
}

fn push_seconds(out: &mut String, ms: u64) {
    out.push_str(&format!("{}.{:03}", ms / 1000, ms % 1000));
}

/// One CSV text field (RFC 4180 quoting, formula-injection guard).
fn push_field(out: &mut String, value: &str) {
    let guarded = if value.starts_with(['=', '+', '-', '@']) {
        format!("'{value}")
    } else {
        value.to_string()
    };
    if guarded.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&guarded.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(&guarded);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::*;

    fn t(at: Millis, from: Status, to: Status) -> Transition {
        Transition { at, from, to }
    }

    fn only(pairs: &[(Status, u64)]) -> BTreeMap<Status, u64> {
        let mut m: BTreeMap<Status, u64> = Status::ALL.iter().map(|s| (*s, 0)).collect();
        for (s, v) in pairs {
            m.insert(*s, *v);
        }
        m
    }

    #[test]
    fn splits_intervals_at_both_range_edges() {
        // offline -> available at 50, -> busy at 150, -> available at 250; range [100, 200).
        let rows = [
            t(50, Offline, Available),
            t(150, Available, Busy),
            t(250, Busy, Available),
        ];
        let got = status_time(&rows, Offline, 100, 200, 1_000);
        assert_eq!(got, only(&[(Available, 50), (Busy, 50)]));
    }

    #[test]
    fn counts_the_open_interval_up_to_now() {
        let rows = [t(100, Offline, Available), t(130, Available, Ringing)];
        // Range [0, 1000) but now = 160: offline 100, available 30, ringing 30 (open).
        let got = status_time(&rows, Offline, 0, 1_000, 160);
        assert_eq!(got, only(&[(Offline, 100), (Available, 30), (Ringing, 30)]));
        // now past the range end: the open interval stops at `to`.
        let got = status_time(&rows, Offline, 0, 200, 10_000);
        assert_eq!(got, only(&[(Offline, 100), (Available, 30), (Ringing, 70)]));
    }

    #[test]
    fn a_status_before_the_range_with_no_rows_in_it() {
        let rows = [t(10, Offline, OnBreak)];
        let got = status_time(&rows, Offline, 1_000, 4_000, 9_999);
        assert_eq!(got, only(&[(OnBreak, 3_000)]));
    }

    #[test]
    fn only_the_last_row_before_the_range_counts() {
        let rows = [
            t(10, Offline, Available),
            t(20, Available, Busy),
            t(30, Busy, OnCall),
            t(1_500, OnCall, WrapUp),
        ];
        let got = status_time(&rows, Offline, 1_000, 2_000, 5_000);
        assert_eq!(got, only(&[(OnCall, 500), (WrapUp, 500)]));
    }

    #[test]
    fn first_row_in_range_gives_the_status_before_it() {
        let rows = [t(400, Busy, Available)];
        let got = status_time(&rows, Offline, 100, 1_000, 1_000);
        assert_eq!(got, only(&[(Busy, 300), (Available, 600)]));
    }

    #[test]
    fn no_rows_uses_the_fallback_and_empty_ranges_are_zero() {
        assert_eq!(
            status_time(&[], Available, 100, 300, 1_000),
            only(&[(Available, 200)])
        );
        // now before from, and to before from: nothing counted.
        assert_eq!(status_time(&[], Available, 100, 300, 50), only(&[]));
        assert_eq!(status_time(&[], Available, 300, 100, 1_000), only(&[]));
    }

    #[test]
    fn rows_at_the_edges_and_same_millisecond() {
        let rows = [
            t(100, Offline, Available), // exactly at `from`: in range
            t(150, Available, Ringing),
            t(150, Ringing, OnCall), // same ms: zero-length ringing
            t(200, OnCall, WrapUp),  // exactly at `to`: out of range
        ];
        let got = status_time(&rows, Offline, 100, 200, 1_000);
        assert_eq!(got, only(&[(Available, 50), (OnCall, 50)]));
    }

    #[test]
    fn totals_always_equal_the_range_length() {
        let rows = [
            t(5, Offline, Available),
            t(17, Available, Ringing),
            t(23, Ringing, OnCall),
            t(80, OnCall, WrapUp),
            t(95, WrapUp, Available),
        ];
        for (from, to, now) in [(0, 100, 100), (10, 90, 50), (20, 21, 99), (96, 500, 300)] {
            let got = status_time(&rows, Offline, from, to, now);
            let total: u64 = got.values().sum();
            assert_eq!(total, to.min(now).saturating_sub(from), "{from} {to} {now}");
        }
    }

    #[test]
    fn csv_has_a_header_seconds_and_guards_formulas() {
        let a = AgentStatusTime {
            agent_id: AgentId::parse("a1").expect("id"),
            ms: only(&[(Available, 61_250), (OnCall, 5)]),
        };
        let b = AgentStatusTime {
            agent_id: AgentId::parse("-x").expect("id"),
            ms: only(&[]),
        };
        assert_eq!(a.seconds(Available), 61.25);
        let csv = to_csv(&[a, b]);
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(
            lines[0],
            "agent_id,available,ringing,on_call,wrap_up,busy,on_break,offline,total"
        );
        assert_eq!(
            lines[1],
            "a1,61.250,0.000,0.005,0.000,0.000,0.000,0.000,61.255"
        );
        assert!(lines[2].starts_with("'-x,0.000,"));
        assert_eq!(lines.len(), 4, "two rows and a final CRLF");
    }
}
