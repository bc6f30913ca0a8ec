//! Measures the durable store's write path alone: CPU per change of telephony-like changes
//! (ringing -> on call -> wrap-up, each with its event id) spread over many agents, written
//! in group commits of a fixed size. Not a test: figures depend on the machine.
//!
//! `cargo run --release --example store_write -- [changes] [agents] [batch] [commit|async]`

// A measurement tool: a failed step ends it with a panic naming the step.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use presence_hub::directory::Directory;
use presence_hub::model::{AgentId, AgentState, CallDirection, CallId, CallInfo, Reason, Status};
use presence_hub::protocol::StoredReply;
use presence_hub::store::{Durability, Store, StoreOptions};

fn cpu_seconds() -> f64 {
    // utime + stime of the whole process (the writer thread does nearly all the work).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: usize| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(d);
    let changes = arg(0, 200_000);
    let agents = arg(1, 5_000);
    let batch = arg(2, 500).max(1);
    let durability = match args.get(3).map(String::as_str) {
        Some("async") => Durability::Async,
        _ => Durability::Commit,
    };
    let dir = std::env::temp_dir().join(format!("store-write-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("hub.db");
    let seed = Directory::default();
    let mut options = StoreOptions::new(&seed, 0);
    options.durability = durability;
    let (store, _) = Store::open(&path, options)?;
    let mut states: Vec<AgentState> = (0..agents)
        .map(|i| {
            let mut s = AgentState::new(AgentId::parse(&format!("agent-{i}")).expect("id"), 0);
            s.status = Status::Available;
            s.name = Some(format!("Agent {i}"));
            s
        })
        .collect();
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    let mut last = None;
    for n in 0..changes {
        let a = (n * 7919) % agents;
        let before = states[a].clone();
        let s = &mut states[a];
        let now = 1_000 + n as u64;
        let call = CallId::parse(&format!("c-{a}-{}", s.version / 3)).expect("call id");
        s.version += 1;
        s.since = now;
        (s.status, s.reason) = match before.status {
            Status::Available | Status::WrapUp => (Status::Ringing, Some(Reason::CallOffered)),
            Status::Ringing => (Status::OnCall, Some(Reason::CallAnswered)),
            _ => (Status::WrapUp, Some(Reason::CallEnded)),
        };
        s.call = (s.status != Status::WrapUp).then(|| {
            Box::new(CallInfo {
                call_id: call,
                direction: CallDirection::Inbound,
                ring_group: None,
                from: Some("+15550100".into()),
                to: None,
                offered_at: Some(now),
                answered_at: None,
            })
        });
        let reply = StoredReply {
            error: None,
            fields: Arc::from(format!(
                r#""accepted":true,"agent":{}"#,
                serde_json::to_string(&*s)?
            )),
        };
        let ticket =
            store.record_change_with_event(&before, s, None, now, &format!("ev-{n}"), &reply);
        if (n + 1) % batch == 0 {
            ticket.wait_blocking()?;
        } else {
            last = Some(ticket);
        }
    }
    if let Some(t) = last {
        t.wait_blocking()?;
    }
    store.flush().wait_blocking()?;
    let (cpu, wall) = (cpu_seconds() - cpu0, t0.elapsed().as_secs_f64());
    let stats = store.stats();
    println!(
        "{changes} changes, {agents} agents, batch {batch}, {durability:?}: {:.0} changes/s, \
         {:.1} us CPU per change (incl. building them), {} commits",
        changes as f64 / wall,
        cpu * 1e6 / changes as f64,
        stats.commits
    );
    store.close()?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
