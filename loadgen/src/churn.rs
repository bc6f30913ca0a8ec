//! `churn`: agents connect and disconnect continuously. Reports logins/s and whether the hub
//! is back where it was afterwards: open agent sockets, agent actors, resident memory.

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use futures::StreamExt;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::clients::{agent_login, send_text};
use crate::common::{
    histogram, latency_json, latency_row, now_ns, record, round3, rss_kib, run_bounded, CpuMeter,
    Metrics, Table, Target, Ws,
};

const PREFIX: &str = "ch-";
const AGENT_CONNS: &str = "presence_hub_connections{role=\"agent\"}";
const ACTORS: &str = "presence_hub_agent_actors";
const HISTORY: &str = "presence_hub_history_events";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Leave {
    /// Close the socket (a tab closed): the agent stays logged in for the grace period.
    Close,
    /// Send `logout` and wait for the hub to close the socket.
    Logout,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct ChurnArgs {
    /// Agents that connect and disconnect (each reuses its own id).
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// Agents cycling at the same time (each does all its cycles, then the next one starts).
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Connect/disconnect cycles per agent.
    #[arg(long, default_value_t = 10)]
    pub cycles: usize,
    /// How an agent leaves.
    #[arg(long, value_enum, default_value_t = Leave::Close)]
    pub leave: Leave,
    /// Cycles per agent before the baseline reading (the allocator reaches its working size).
    #[arg(long, default_value_t = 3)]
    pub warmup_cycles: usize,
    /// Seconds to let the hub settle before each memory reading.
    #[arg(long, default_value_t = 2.0)]
    pub settle: f64,
}

struct Reading {
    rss_kib: Option<u64>,
    agent_conns: Option<f64>,
    actors: Option<f64>,
    /// Updates held for `resume` (bounded by --history-size): memory that grows with churn
    /// until the bound, by design.
    history: Option<f64>,
}

impl Reading {
    async fn take(target: &Target, hub_pid: Option<u32>) -> Reading {
        let m = target.metrics().await.ok();
        let get = |m: &Option<Metrics>, s: &str| m.as_ref().and_then(|m| m.get(s));
        Reading {
            rss_kib: hub_pid.and_then(rss_kib),
            agent_conns: get(&m, AGENT_CONNS),
            actors: get(&m, ACTORS),
            history: get(&m, HISTORY),
        }
    }

    fn json(&self) -> Value {
        json!({
            "hub_rss_kib": self.rss_kib,
            "agent_connections": self.agent_conns,
            "agent_actors": self.actors,
            "history_events": self.history,
        })
    }
}

pub(crate) async fn run(
    target: Arc<Target>,
    hub_pid: Option<u32>,
    args: ChurnArgs,
) -> Result<bool> {
    let mut warnings = Vec::new();
    let sockets = args.agents.min(args.concurrency) * 2;
    if crate::common::check_fd_budget(sockets, &mut warnings) < sockets {
        bail!("{}", warnings.join("; "));
    }
    let initial = Reading::take(&target, hub_pid).await;
    // Warm-up, so every agent's actor exists and the allocator has reached its working size
    // before the baseline (one run's RSS growth is otherwise mostly allocator high water).
    println!(
        "churn: {} warm-up cycle(s) for {} agents",
        args.warmup_cycles, args.agents
    );
    let warm = churn(
        &target,
        args.agents,
        args.concurrency,
        args.warmup_cycles.max(1),
        args.leave,
    )
    .await;
    if warm.failures > 0 {
        warnings.push(format!(
            "{} warm-up cycles failed: {}",
            warm.failures,
            warm.first_error.clone().unwrap_or_default()
        ));
    }
    wait_conns(&target, 0.0).await;
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let before = Reading::take(&target, hub_pid).await;

    println!(
        "churn: {} agents x {} cycles ({:?})",
        args.agents, args.cycles, args.leave
    );
    let cpu = CpuMeter::start(hub_pid);
    let start = Instant::now();
    let run = churn(
        &target,
        args.agents,
        args.concurrency,
        args.cycles,
        args.leave,
    )
    .await;
    let wall = start.elapsed().as_secs_f64();
    let cpu_use = cpu.stop();
    let conns_back = wait_conns(&target, before.agent_conns.unwrap_or(0.0)).await;
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let after = Reading::take(&target, hub_pid).await;

    let logins_per_sec = run.logins as f64 / wall.max(1e-9);
    let leaked_conns = match (before.agent_conns, after.agent_conns) {
        (Some(b), Some(a)) => Some(a - b),
        _ => None,
    };
    let leaked_actors = match (before.actors, after.actors) {
        (Some(b), Some(a)) => Some(a - b),
        _ => None,
    };
    let rss_growth = match (before.rss_kib, after.rss_kib) {
        (Some(b), Some(a)) => Some(a as i64 - b as i64),
        _ => None,
    };
    cpu_use.check(&mut warnings);
    if !conns_back {
        warnings.push("the hub's open agent sockets did not return to the baseline".into());
    }
    if let Some(e) = &run.first_error {
        warnings.push(format!("first failure: {e}"));
    }
    let ok = run.failures == 0
        && leaked_conns.is_some_and(|v| v == 0.0)
        && leaked_actors.is_some_and(|v| v == 0.0);
    let mut t = Table::new(format!(
        "churn: {} agents x {} cycles ({:?}, {} at once)",
        args.agents, args.cycles, args.leave, args.concurrency
    ));
    t.row(
        "logins",
        format!("{} in {wall:.2}s ({} failed)", run.logins, run.failures),
    );
    t.row(
        "logins/s (connect + hello + leave)",
        format!("{logins_per_sec:.0}"),
    );
    latency_row(&mut t, "login latency", &run.latency);
    let show = |v: Option<f64>| v.map_or("?".into(), |v| v.to_string());
    t.row(
        "agent sockets before / after",
        format!("{} / {}", show(before.agent_conns), show(after.agent_conns)),
    );
    t.row(
        "agent actors before / after",
        format!("{} / {}", show(before.actors), show(after.actors)),
    );
    t.row(
        "resume history before / after",
        format!(
            "{} / {} events (bounded by --history-size)",
            show(before.history),
            show(after.history)
        ),
    );
    t.row(
        "hub RSS initial / before / after",
        format!(
            "{} / {} / {} KiB (growth {} KiB)",
            initial.rss_kib.map_or("?".into(), |v| v.to_string()),
            before.rss_kib.map_or("?".into(), |v| v.to_string()),
            after.rss_kib.map_or("?".into(), |v| v.to_string()),
            rss_growth.map_or("?".into(), |v| v.to_string())
        ),
    );
    cpu_use.rows(&mut t);
    let result = json!({
        "scenario": "churn",
        "params": {
            "agents": args.agents,
            "cycles": args.cycles,
            "concurrency": args.concurrency,
            "warmup_cycles": args.warmup_cycles,
            "leave": format!("{:?}", args.leave).to_lowercase(),
            "source_ips": target.source_count(),
            "nodes": target.node_count(),
        },
        "figures": {
            "logins": run.logins,
            "failures": run.failures,
            "secs": round3(wall),
            "logins_per_sec": round3(logins_per_sec),
            "login_latency": latency_json(&run.latency),
            "initial": initial.json(),
            "before": before.json(),
            "after": after.json(),
            "leaked_agent_connections": leaked_conns,
            "leaked_agent_actors": leaked_actors,
            "hub_rss_growth_kib": rss_growth,
            "hub_rss_growth_bytes_per_login": rss_growth.map(|g| round3(g as f64 * 1024.0 / run.logins.max(1) as f64)),
        },
        "cpu": cpu_use.json(),
    });
    crate::common::finish(&t, result, &warnings, ok);
    Ok(ok)
}

struct ChurnRun {
    logins: u64,
    failures: u64,
    first_error: Option<String>,
    latency: hdrhistogram::Histogram<u64>,
}

/// `agents` loops, each doing `cycles` x (connect, hello, leave).
async fn churn(
    target: &Arc<Target>,
    agents: usize,
    concurrency: usize,
    cycles: usize,
    leave: Leave,
) -> ChurnRun {
    // One shared histogram: one per task would be ~170 KiB each.
    let shared_latency = Arc::new(Mutex::new(histogram()));
    let results = run_bounded(agents, concurrency, {
        let target = target.clone();
        let shared_latency = shared_latency.clone();
        move |i| {
            let target = target.clone();
            let shared_latency = shared_latency.clone();
            async move {
                let mut logins = 0u64;
                let mut failures = 0u64;
                let mut first_error = None;
                for _ in 0..cycles {
                    let t0 = now_ns();
                    match agent_login(&target, &format!("{PREFIX}{i}")).await {
                        Ok((ws, _)) => {
                            let ns = now_ns() - t0;
                            record(
                                &mut shared_latency.lock().unwrap_or_else(|p| p.into_inner()),
                                ns,
                            );
                            logins += 1;
                            if let Err(e) = leave_socket(ws, leave).await {
                                failures += 1;
                                first_error.get_or_insert_with(|| format!("{e:#}"));
                            }
                        }
                        Err(e) => {
                            failures += 1;
                            first_error.get_or_insert_with(|| format!("{e:#}"));
                        }
                    }
                }
                (logins, failures, first_error)
            }
        }
    })
    .await;
    let mut run = ChurnRun {
        logins: 0,
        failures: 0,
        first_error: None,
        latency: shared_latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
    };
    for (logins, failures, first_error) in results {
        run.logins += logins;
        run.failures += failures;
        if run.first_error.is_none() {
            run.first_error = first_error;
        }
    }
    run
}

/// Closes (or logs out) and waits until the hub has closed its side.
async fn leave_socket(mut ws: Ws, leave: Leave) -> Result<()> {
    match leave {
        Leave::Close => {
            ws.close(None).await?;
        }
        Leave::Logout => {
            send_text(&mut ws, r#"{"type":"logout","ref":1}"#.into()).await?;
        }
    }
    let wait = async {
        while let Some(msg) = ws.next().await {
            if msg.is_err() {
                break;
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .is_err()
    {
        bail!("the hub did not close the socket within 10 s");
    }
    Ok(())
}

/// Waits (up to 10 s) until the hub reports `want` open agent sockets.
async fn wait_conns(target: &Target, want: f64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(m) = target.metrics().await {
            if m.get(AGENT_CONNS) == Some(want) {
                return true;
            }
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
