//! `connections`: N agent sockets logged in and idle. Reports the login rate (connect +
//! `hello`) and the hub's memory per connection (VmRSS before and after).

use anyhow::{bail, Result};
use clap::Args;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clients::{agent_login, drain};
use crate::common::{
    histogram, latency_json, latency_row, now_ns, record, round3, rss_kib, run_bounded, CpuMeter,
    Table, Target,
};

const PREFIX: &str = "cn-";

#[derive(Args, Debug, Clone)]
pub(crate) struct ConnectionsArgs {
    /// Agent sockets to open and keep.
    #[arg(long, default_value_t = 10_000)]
    pub agents: usize,
    /// Logins in flight at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Seconds to wait after the last login before reading the hub's memory.
    #[arg(long, default_value_t = 2.0)]
    pub settle: f64,
    /// Sockets per agent id (browser tabs of one agent): > 1 separates the cost of a socket
    /// from the cost of an agent actor.
    #[arg(long, default_value_t = 1)]
    pub tabs_per_agent: usize,
    /// Seconds to keep the sockets open after the measurement.
    #[arg(long, default_value_t = 0.0)]
    pub hold: f64,
    /// Number of the first agent (`conn{first_agent}`...): several load generator processes
    /// (each limited to ~20k descriptors) hold distinct agents of one cluster.
    #[arg(long, default_value_t = 0)]
    pub first_agent: usize,
}

pub(crate) async fn run(
    target: Arc<Target>,
    hub_pid: Option<u32>,
    args: ConnectionsArgs,
) -> Result<bool> {
    let mut warnings = Vec::new();
    let n = crate::common::check_fd_budget(args.agents, &mut warnings);
    if n == 0 {
        bail!("no file descriptors left for sockets");
    }
    if hub_pid.is_none() {
        warnings.push("no --hub-pid: hub memory is not measured".into());
    }
    let m0 = target.metrics().await.ok();
    let rss_before = hub_pid.and_then(rss_kib);
    println!(
        "connections: opening {n} agent sockets over {} source address(es)",
        target.source_count()
    );
    let cpu = CpuMeter::start(hub_pid);
    let start = Instant::now();
    let last_ok = Arc::new(AtomicU64::new(0));
    let results = run_bounded(n, args.concurrency, {
        let target = target.clone();
        let last_ok = last_ok.clone();
        let tabs = args.tabs_per_agent.max(1);
        let first = args.first_agent;
        move |i| {
            let target = target.clone();
            let last_ok = last_ok.clone();
            async move {
                let t0 = now_ns();
                let (ws, _) =
                    agent_login(&target, &format!("{PREFIX}{}", first + i / tabs)).await?;
                let t1 = now_ns();
                last_ok.fetch_max(t1, Ordering::Relaxed);
                // Keep reading so the hub's pings are answered.
                let holder = tokio::spawn(drain(ws));
                anyhow::Ok((t1 - t0, holder))
            }
        }
    })
    .await;
    let login_wall = start.elapsed().as_secs_f64();
    let cpu_use = cpu.stop();
    let mut latency = histogram();
    let mut holders = Vec::new();
    let mut failed = 0usize;
    let mut first_error = None;
    for r in results {
        match r {
            Ok((ns, holder)) => {
                record(&mut latency, ns);
                holders.push(holder);
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    let connected = holders.len();
    // A login of a second or more is almost always a SYN retransmitted after the hub's
    // accept queue (its listen backlog) overflowed.
    let slow_logins = latency.count_between(1_000_000_000, u64::MAX);
    let logins_per_sec = connected as f64 / login_wall.max(1e-9);
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let rss_after = hub_pid.and_then(rss_kib);
    let m1 = target.metrics().await.ok();
    let closed_early = holders.iter().filter(|h| h.is_finished()).count();
    let bytes_per_conn = match (rss_before, rss_after) {
        (Some(b), Some(a)) if connected > 0 => {
            Some((a.saturating_sub(b)) as f64 * 1024.0 / connected as f64)
        }
        _ => None,
    };
    let hub_agent_conns = m1
        .as_ref()
        .and_then(|m| m.get("presence_hub_connections{role=\"agent\"}"));
    cpu_use.check(&mut warnings);
    if let Some(e) = &first_error {
        warnings.push(format!("first failed login: {e}"));
    }
    if slow_logins > 0 {
        warnings.push(format!(
            "{slow_logins} logins took 1 s or more: SYN retransmits after the hub's accept \
             queue overflowed (listen backlog too small for {} connects in flight?)",
            args.concurrency
        ));
    }
    if hold_secs_positive(args.hold) {
        println!("connections: holding for {}s", args.hold);
        tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    }
    let ok = failed == 0 && closed_early == 0;
    let mut t = Table::new(format!("connections: {n} idle agent sockets"));
    t.row(
        "connected",
        format!("{connected} ({failed} failed, {closed_early} closed early)"),
    );
    t.row(
        "login rate (connect + hello)",
        format!(
            "{logins_per_sec:.0}/s ({connected} in {login_wall:.2}s, {} in flight)",
            args.concurrency
        ),
    );
    latency_row(&mut t, "login latency", &latency);
    t.row(
        "logins taking >= 1 s",
        format!("{slow_logins} (a SYN retried after the accept queue overflowed)"),
    );
    t.row(
        "hub RSS before / after",
        format!(
            "{} / {} KiB",
            rss_before.map_or("?".into(), |v| v.to_string()),
            rss_after.map_or("?".into(), |v| v.to_string())
        ),
    );
    t.row(
        "hub memory per connection",
        bytes_per_conn.map_or("?".into(), |b| {
            format!("{b:.0} bytes ({:.2} KiB)", b / 1024.0)
        }),
    );
    t.row(
        "hub agent connections (/metrics)",
        hub_agent_conns.map_or("?".into(), |v| v.to_string()),
    );
    cpu_use.rows(&mut t);
    let result = json!({
        "scenario": "connections",
        "params": {
            "agents": args.agents,
            "opened": n,
            "concurrency": args.concurrency,
            "tabs_per_agent": args.tabs_per_agent,
            "source_ips": target.source_count(),
            "nodes": target.node_count(),
        },
        "figures": {
            "connected": connected,
            "failed": failed,
            "closed_early": closed_early,
            "login_secs": round3(login_wall),
            "logins_per_sec": round3(logins_per_sec),
            "login_latency": latency_json(&latency),
            "logins_over_1s": slow_logins,
            "hub_rss_before_kib": rss_before,
            "hub_rss_after_kib": rss_after,
            "hub_bytes_per_connection": bytes_per_conn.map(round3),
            "hub_agent_connections": hub_agent_conns,
            "hub_agent_actors": m1.as_ref().map(|m| m.json("presence_hub_agent_actors")),
            "hub_agent_connections_before": m0.as_ref().map(|m| m.json("presence_hub_connections{role=\"agent\"}")),
        },
        "cpu": cpu_use.json(),
    });
    crate::common::finish(&t, result, &warnings, ok);
    Ok(ok)
}

fn hold_secs_positive(v: f64) -> bool {
    v > 0.0
}
