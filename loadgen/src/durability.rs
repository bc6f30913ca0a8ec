//! `durability`: the write path of the durable store. N agent sockets each loop `set_status`
//! (with a `ref`) -> wait for its `ok` -> next, all agents in parallel, for a fixed time.
//! Reports acknowledged status changes per second and the ack latency; run it against a hub
//! started with `--durability commit` and with `--durability async` to see what waiting
//! for the commit costs (the difference of the two latencies). Also reads the hub's store
//! counters to report the group-commit batch size.

use anyhow::{bail, Context, Result};
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clients::{agent_login, set_status};
use crate::common::{
    histogram, latency_json, latency_row, record, round3, run_bounded, CpuMeter, Table, Target,
};

const PREFIX: &str = "du-";
const CYCLE: [&str; 2] = ["available", "busy"];

#[derive(Args, Debug, Clone)]
pub(crate) struct DurabilityArgs {
    /// Agent sockets, each with one status change in flight at a time.
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// Seconds of measurement (after a 1 s warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Logins in flight at once during set-up.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// A label for the table and the result (e.g. the hub's --durability).
    #[arg(long, default_value = "")]
    pub label: String,
}

struct AgentResult {
    acks: u64,
    latency: Histogram<u64>,
    error: Option<String>,
}

pub(crate) async fn run(
    target: Arc<Target>,
    hub_pid: Option<u32>,
    args: DurabilityArgs,
) -> Result<bool> {
    let mut warnings = Vec::new();
    if args.agents == 0 {
        bail!("need at least one agent");
    }
    if crate::common::check_fd_budget(args.agents, &mut warnings) < args.agents {
        bail!("{}", warnings.join("; "));
    }
    println!("durability: logging in {} agents", args.agents);
    let logins = run_bounded(args.agents, args.concurrency, {
        let target = target.clone();
        move |i| {
            let target = target.clone();
            async move { agent_login(&target, &format!("{PREFIX}{i}")).await }
        }
    })
    .await;
    let mut sockets = Vec::with_capacity(args.agents);
    for (i, r) in logins.into_iter().enumerate() {
        let (ws, _) = r.with_context(|| format!("login of {PREFIX}{i}"))?;
        sockets.push(ws);
    }
    let warmup = Duration::from_secs(1);
    let measure = Duration::from_secs_f64(args.duration.max(0.5));
    let started = Instant::now();
    let record_from = started + warmup;
    let stop_at = record_from + measure;
    let failed = Arc::new(AtomicBool::new(false));
    println!(
        "durability: {} agents changing status for {:.1}s (+{:.0}s warm-up)",
        args.agents,
        measure.as_secs_f64(),
        warmup.as_secs_f64()
    );
    let m0 = target.metrics().await.ok();
    let mut cpu = None;
    let mut tasks = Vec::with_capacity(sockets.len());
    for (i, mut ws) in sockets.into_iter().enumerate() {
        let failed = failed.clone();
        tasks.push(tokio::spawn(async move {
            let mut r = AgentResult {
                acks: 0,
                latency: histogram(),
                error: None,
            };
            let mut n = i;
            let mut reply_ref = 1u64;
            while Instant::now() < stop_at && !failed.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let status = CYCLE[n % CYCLE.len()];
                n += 1;
                reply_ref += 1;
                match set_status(&mut ws, status, reply_ref).await {
                    Ok(_) => {
                        if sent >= record_from {
                            r.acks += 1;
                            record(&mut r.latency, sent.elapsed().as_nanos() as u64);
                        }
                    }
                    Err(e) => {
                        r.error = Some(format!("{e:#}"));
                        failed.store(true, Ordering::Relaxed);
                        break;
                    }
                }
            }
            drop(ws);
            r
        }));
    }
    // The CPU is measured over the measured phase only.
    tokio::time::sleep_until(record_from.into()).await;
    cpu.get_or_insert_with(|| CpuMeter::start(hub_pid));
    let m1 = target.metrics().await.ok();
    let mut latency = histogram();
    let mut acks = 0u64;
    let mut first_error = None;
    for t in tasks {
        let r = t.await.context("agent task")?;
        acks += r.acks;
        latency.add(&r.latency).ok();
        if first_error.is_none() {
            first_error = r.error;
        }
    }
    let elapsed = Instant::now()
        .saturating_duration_since(record_from)
        .min(measure + Duration::from_secs(5))
        .as_secs_f64()
        .max(1e-9);
    let cpu_use = cpu.map(|c| c.stop());
    let m2 = target.metrics().await.ok();
    let rate = acks as f64 / elapsed;
    // Group commit: items per transaction over the measured phase.
    let counter =
        |m: &Option<crate::common::Metrics>, name: &str| m.as_ref().and_then(|m| m.get(name));
    let batch = match (
        counter(&m1, "presence_hub_store_commits_total"),
        counter(&m2, "presence_hub_store_commits_total"),
        counter(&m1, "presence_hub_store_items_total"),
        counter(&m2, "presence_hub_store_items_total"),
    ) {
        (Some(c1), Some(c2), Some(i1), Some(i2)) if c2 > c1 => Some((i2 - i1) / (c2 - c1)),
        _ => None,
    };
    let commits_per_sec = match (
        counter(&m1, "presence_hub_store_commits_total"),
        counter(&m2, "presence_hub_store_commits_total"),
    ) {
        (Some(c1), Some(c2)) => Some((c2 - c1) / elapsed),
        _ => None,
    };
    let store_failed = match (
        counter(&m0, "presence_hub_store_failed_total"),
        counter(&m2, "presence_hub_store_failed_total"),
    ) {
        (Some(f0), Some(f2)) => Some(f2 - f0),
        _ => None,
    };
    if let Some(c) = &cpu_use {
        c.check(&mut warnings);
    }
    let label = if args.label.is_empty() {
        String::new()
    } else {
        format!(" ({})", args.label)
    };
    let mut t = Table::new(format!("durability{label}: {} agents", args.agents));
    t.row(
        "acknowledged status changes",
        format!("{acks} in {elapsed:.2}s = {rate:.0}/s"),
    );
    latency_row(&mut t, "ack latency (set_status -> ok)", &latency);
    t.row(
        "store commits",
        match (commits_per_sec, batch) {
            (Some(c), Some(b)) => format!("{c:.0}/s, {b:.1} writes per commit"),
            _ => "unknown (no store metrics)".into(),
        },
    );
    if let Some(c) = &cpu_use {
        c.rows(&mut t);
    }
    if let Some(e) = &first_error {
        t.row("first error", e.clone());
    }
    let ok = first_error.is_none() && acks > 0 && store_failed.unwrap_or(0.0) == 0.0;
    let result = json!({
        "scenario": "durability",
        "params": {
            "agents": args.agents,
            "duration_secs": round3(measure.as_secs_f64()),
            "label": args.label,
        },
        "figures": {
            "acks": acks,
            "changes_per_sec": round3(rate),
            "ack_latency": latency_json(&latency),
            "store_commits_per_sec": commits_per_sec.map(round3),
            "writes_per_commit": batch.map(round3),
            "store_failed": store_failed,
        },
        "cpu": cpu_use.map(|c| c.json()),
        "first_error": first_error,
    });
    crate::common::finish(&t, result, &warnings, ok);
    Ok(ok)
}
