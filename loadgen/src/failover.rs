//! `failover`: how long a cluster's agents stop accepting changes when a node dies.
//!
//! Agents log in with one tab each, spread over the nodes given with `--addr` (the nodes
//! that survive), and each changes its status again as soon as the previous change is
//! answered (`unavailable` is retried after its `retry_after_ms`). After `--warmup` seconds
//! the load generator sends `SIGKILL` to `--victim-pid` (a node that is not in `--addr`: it
//! owns about a third of the agents, whose tabs sit elsewhere). For every agent it records
//! the first change acknowledged after the kill: the failover time of an agent the victim
//! owned is the time from the kill to that ack. Reports the agents interrupted (no ack for
//! longer than `--interrupted-ms` across the kill) and their failover time (p50, p99, max).

use crate::clients::agent_login;
use crate::common::{now_ns, Table, Target};
use anyhow::{bail, Context, Result};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

#[derive(clap::Args, Debug)]
pub(crate) struct FailoverArgs {
    /// Agents, one tab each.
    #[arg(long, default_value_t = 300)]
    pub agents: usize,
    /// The node to kill (`kill -9`): its process id. It must not be one of `--addr`.
    #[arg(long)]
    pub victim_pid: u32,
    /// Seconds of changes before the kill.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Seconds of changes after the kill.
    #[arg(long, default_value_t = 10.0)]
    pub after: f64,
    /// An agent with no ack for longer than this across the kill counts as interrupted.
    #[arg(long, default_value_t = 300)]
    pub interrupted_ms: u64,
}

/// What one agent saw: ack times (ns of the process clock) and refusals.
struct AgentRun {
    acks: Vec<u64>,
    unavailable: u64,
}

async fn drive(target: Arc<Target>, id: String, stop_ns: u64) -> Result<AgentRun> {
    let (mut ws, _) = agent_login(&target, &id).await?;
    let mut run = AgentRun {
        acks: Vec::new(),
        unavailable: 0,
    };
    let mut r: u64 = 0;
    while now_ns() < stop_ns {
        r += 1;
        let status = if r.is_multiple_of(2) {
            "busy"
        } else {
            "available"
        };
        let req = json!({"type": "set_status", "status": status, "ref": r});
        ws.send(Message::text(req.to_string())).await?;
        let reply: Value = loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .with_context(|| format!("{id}: no reply within 10 s"))?;
            match msg {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str())?;
                    if v["ref"] == r {
                        break v;
                    }
                }
                Some(Ok(Message::Close(f))) => bail!("{id}: socket closed: {f:?}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => bail!("{id}: {e}"),
                None => bail!("{id}: socket ended"),
            }
        };
        match (reply["type"].as_str(), reply["code"].as_str()) {
            (Some("ok"), _) => run.acks.push(now_ns()),
            (_, Some("unavailable")) => {
                run.unavailable += 1;
                let wait = reply["retry_after_ms"].as_u64().unwrap_or(100).min(1000);
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            _ => bail!("{id}: {reply}"),
        }
    }
    Ok(run)
}

pub(crate) async fn run(target: Arc<Target>, args: FailoverArgs) -> Result<bool> {
    let start = now_ns();
    let stop_ns = start + ((args.warmup + args.after) * 1e9) as u64;
    println!(
        "failover: {} agents over {} node(s); kill -9 of pid {} after {}s",
        args.agents,
        target.node_count(),
        args.victim_pid,
        args.warmup
    );
    let mut tasks = Vec::new();
    for i in 0..args.agents {
        tasks.push(tokio::spawn(drive(
            target.clone(),
            format!("fo{i}"),
            stop_ns,
        )));
    }
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let killed = now_ns();
    // SAFETY: kill(2) with a pid and a signal number; no memory is shared.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::kill(args.victim_pid as libc::pid_t, libc::SIGKILL) };
    if rc != 0 {
        bail!("kill -9 {} failed", args.victim_pid);
    }
    let mut failovers_ms: Vec<f64> = Vec::new();
    let mut never = 0usize;
    let mut unavailable = 0u64;
    let mut acks = 0usize;
    for t in tasks {
        let run = t.await??;
        unavailable += run.unavailable;
        acks += run.acks.len();
        let before = run.acks.iter().rev().find(|&&a| a <= killed).copied();
        let after = run.acks.iter().find(|&&a| a > killed).copied();
        match after {
            None => never += 1,
            Some(a) => {
                let gap = a - before.unwrap_or(killed);
                if gap > args.interrupted_ms * 1_000_000 {
                    failovers_ms.push((a - killed) as f64 / 1e6);
                }
            }
        }
    }
    failovers_ms.sort_by(f64::total_cmp);
    let pct = |p: f64| -> Option<f64> {
        if failovers_ms.is_empty() {
            None
        } else {
            let i = ((failovers_ms.len() as f64 - 1.0) * p).round() as usize;
            Some(failovers_ms[i])
        }
    };
    let fmt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0} ms"));
    let mut t = Table::new(format!(
        "failover: kill -9 of one node, {} agents",
        args.agents
    ));
    t.row("agents interrupted", failovers_ms.len().to_string());
    t.row("agents never acked again", never.to_string());
    t.row(
        "failover p50 / p99 / max",
        format!(
            "{} / {} / {}",
            fmt(pct(0.5)),
            fmt(pct(0.99)),
            fmt(failovers_ms.last().copied())
        ),
    );
    t.row(
        "acks / unavailable answers",
        format!("{acks} / {unavailable}"),
    );
    let ok = never == 0 && !failovers_ms.is_empty();
    let mut warnings = Vec::new();
    if failovers_ms.is_empty() {
        warnings.push("no agent was interrupted: did the victim own any?".to_string());
    }
    if never > 0 {
        warnings.push(format!(
            "{never} agents were never acknowledged after the kill"
        ));
    }
    let result = json!({
        "scenario": "failover",
        "agents": args.agents,
        "nodes": target.node_count(),
        "interrupted": failovers_ms.len(),
        "never_acked_again": never,
        "failover_ms_p50": pct(0.5),
        "failover_ms_p99": pct(0.99),
        "failover_ms_max": failovers_ms.last(),
        "acks": acks,
        "unavailable": unavailable,
    });
    crate::common::finish(&t, result, &warnings, ok);
    Ok(ok)
}
