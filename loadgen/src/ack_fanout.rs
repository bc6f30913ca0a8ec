//! `ack-fanout`: fan-out driven from the agent sockets, for comparing servers. Each of N agents
//! sends its next `set_status` as soon as the previous one is acknowledged (`ok`), so the
//! server's own ack path is in the loop and nothing paces it but the server; M admins
//! subscribed to everything check every event (`seq` +1 from the snapshot, `version` +1 per
//! agent) and measure change -> admin latency from the send time carried in `note`.
//!
//! It needs only the protocol subset every benchmark peer speaks (`bench/competitors/`):
//! agent `hello`, `set_status` with `ref` -> `ok`, admin `hello`, `subscribe` -> snapshot,
//! `agent` events with `seq`; no `/metrics`. With `--hub-pid` it reports the server's CPU
//! per delivery and per change.

use anyhow::{bail, Result};
use clap::Args;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::clients::login_available;
use crate::common::{
    clip, histogram, latency_json, latency_row, now_ns, parse_frame, record, round3, CpuMeter,
    Table, Target, Ws,
};
use crate::fanout::{start_admins, AdminResult, Shared, PREFIX};

/// The manual statuses the agents cycle through (they start `available`): each one changes.
const CYCLE: [&str; 3] = ["busy", "on_break", "available"];

#[derive(Args, Debug, Clone)]
pub(crate) struct AckFanoutArgs {
    /// Agent sockets, each with one change in flight.
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// Admin sockets, each subscribed to all agents.
    #[arg(long, default_value_t = 500)]
    pub admins: usize,
    /// Seconds of driving.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Target deliveries per second (changes/s x admins), spread evenly over the agents,
    /// each still waiting for its previous ack; 0 = every agent changes again at once.
    /// Paced, a change's latency counts from when it was due (not when it could be sent).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Seconds at the start of the drive whose latencies are not recorded.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Connections opened at once during set-up.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Seconds to wait, after the drive, for every admin to receive every change.
    #[arg(long, default_value_t = 30.0)]
    pub drain_timeout: f64,
    /// A name for the server under test, copied into the result (e.g. `presence-hub`).
    #[arg(long, default_value = "")]
    pub label: String,
}

/// What one agent driver saw.
#[derive(Default)]
struct Driver {
    /// `ok` replies (each one a change: every status differs from the previous one).
    oks: u64,
    errors: u64,
    first_error: Option<String>,
}

pub(crate) async fn run(
    target: Arc<Target>,
    hub_pid: Option<u32>,
    args: AckFanoutArgs,
) -> Result<bool> {
    let mut warnings = Vec::new();
    if args.agents == 0 || args.admins == 0 {
        bail!("--agents and --admins must be at least 1");
    }
    let sockets = args.agents + args.admins;
    if crate::common::check_fd_budget(sockets, &mut warnings) < sockets {
        bail!("{}", warnings.join("; "));
    }
    let shared = Arc::new(Shared::admins_only(args.admins));

    println!("ack-fanout: logging in {} agents", args.agents);
    let login_start = Instant::now();
    let logged_in = login_available(&target, PREFIX, args.agents, args.concurrency).await?;
    let login_secs = login_start.elapsed().as_secs_f64();
    let agents: Vec<Ws> = logged_in.into_iter().map(|(ws, _)| ws).collect();

    println!("ack-fanout: subscribing {} admins", args.admins);
    let (stop_tx, stop_rx) = watch::channel(false);
    let admin_tasks = start_admins(
        &target,
        args.admins,
        args.agents,
        args.concurrency,
        &shared,
        &stop_rx,
    )
    .await?;

    println!(
        "ack-fanout: {} agents each change on the previous ok, for {}s",
        args.agents, args.duration
    );
    let ack_latency = Arc::new(Mutex::new(histogram()));
    let cpu = CpuMeter::start(hub_pid);
    let drive_start = Instant::now();
    let drive_start_ns = now_ns();
    let record_from = drive_start_ns + (args.warmup * 1e9) as u64;
    shared.record_from_ns.store(record_from, Ordering::Relaxed);
    let deadline = drive_start + Duration::from_secs_f64(args.duration);
    // Paced: agent i's k-th change is due at i * interval / agents + k * interval.
    let interval = (args.rate > 0).then(|| {
        Duration::from_secs_f64(args.agents as f64 * args.admins as f64 / args.rate as f64)
    });
    let pace = interval.map(|iv| Pace {
        start: drive_start,
        start_ns: drive_start_ns,
        interval: iv,
        agents: args.agents as u32,
    });
    let drivers: Vec<_> = agents
        .into_iter()
        .enumerate()
        .map(|(i, ws)| {
            tokio::spawn(drive(
                ws,
                i,
                deadline,
                pace,
                record_from,
                ack_latency.clone(),
            ))
        })
        .collect();
    let mut results = Vec::with_capacity(drivers.len());
    for d in drivers {
        results.push(d.await?);
    }
    let drive_secs = drive_start.elapsed().as_secs_f64();
    let issued: u64 = results.iter().map(|d| d.oks).sum();

    // Every admin must now receive every acknowledged change (none is lost in between).
    crate::fanout::wait_for_admins(&shared.admin_received, issued, args.drain_timeout).await;
    let cpu_use = cpu.stop();
    let _ = stop_tx.send(true);
    let mut admins: Vec<AdminResult> = Vec::with_capacity(admin_tasks.len());
    for t in admin_tasks {
        admins.push(t.await?);
    }

    let mut latency = histogram();
    let (mut received, mut gaps, mut disorder, mut version_jumps, mut unexpected) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut missing, mut slow, mut closed_other) = (0u64, 0u64, 0u64);
    let mut last_recv_ns = drive_start_ns;
    let mut first_admin_error = None;
    for a in &admins {
        latency.add(&a.status_latency).ok();
        received += a.received;
        gaps += a.gaps;
        disorder += a.disorder;
        version_jumps += a.version_errors;
        unexpected += a.unexpected;
        last_recv_ns = last_recv_ns.max(a.last_recv_ns);
        missing += issued.saturating_sub(a.received.saturating_sub(a.disorder));
        match a.close_code {
            Some(4008) => slow += 1,
            Some(_) => closed_other += 1,
            None => {}
        }
        if first_admin_error.is_none() {
            first_admin_error.clone_from(&a.error);
        }
    }
    let errors: u64 = results.iter().map(|d| d.errors).sum();
    let first_driver_error = results.iter().find_map(|d| d.first_error.clone());
    let ack_latency = ack_latency
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let delivery_secs = (last_recv_ns.saturating_sub(drive_start_ns) as f64 / 1e9).max(1e-9);
    let deliveries_per_sec = received as f64 / delivery_secs;
    let acks_per_sec = issued as f64 / drive_secs.max(1e-9);
    let hub_cpu_secs = cpu_use.hub_cores.map(|c| c * cpu_use.wall_secs);
    let us_per_delivery = hub_cpu_secs
        .filter(|_| received > 0)
        .map(|s| s * 1e6 / received as f64);
    let us_per_change = hub_cpu_secs
        .filter(|_| issued > 0)
        .map(|s| s * 1e6 / issued as f64);
    let order_ok = gaps == 0 && disorder == 0 && version_jumps == 0 && unexpected == 0;
    cpu_use.check(&mut warnings);
    if args.rate > 0 && deliveries_per_sec < args.rate as f64 * 0.95 {
        warnings.push(format!(
            "asked for {} deliveries/s, got {deliveries_per_sec:.0}/s: the agents' changes \
             waited for acks, so latency here includes that wait",
            args.rate
        ));
    }
    if let Some(e) = &first_admin_error {
        warnings.push(format!("admin error: {e}"));
    }
    if let Some(e) = &first_driver_error {
        warnings.push(format!("agent error: {e}"));
    }
    let ok = order_ok
        && missing == 0
        && slow == 0
        && closed_other == 0
        && errors == 0
        && first_admin_error.is_none()
        && issued > 0;

    let mut t = Table::new(format!(
        "ack-fanout{}: {} agents (one change in flight each), {} admins, rate {}",
        if args.label.is_empty() {
            String::new()
        } else {
            format!(" [{}]", args.label)
        },
        args.agents,
        args.admins,
        if args.rate == 0 {
            "max".to_string()
        } else {
            format!("{}/s", args.rate)
        }
    ));
    t.row(
        "changes acknowledged",
        format!("{issued} ({acks_per_sec:.0}/s over {drive_secs:.1}s)"),
    );
    t.row(
        "deliveries received",
        format!("{received} ({deliveries_per_sec:.0}/s)"),
    );
    latency_row(&mut t, "change -> admin latency", &latency);
    latency_row(&mut t, "ack latency (agent)", &ack_latency);
    t.row(
        "order",
        if order_ok {
            format!("ORDER_OK (all {} admins)", args.admins)
        } else {
            format!(
                "DISORDER: {gaps} seq gaps, {disorder} out of order, {version_jumps} version jumps, {unexpected} unreadable"
            )
        },
    );
    t.row("missing", format!("MISSING {missing}"));
    t.row(
        "admins closed (4008 / other)",
        format!("{slow} / {closed_other}"),
    );
    t.row("agent errors", errors.to_string());
    cpu_use.rows(&mut t);
    t.row(
        "server CPU per delivery / per change",
        match (us_per_delivery, us_per_change) {
            (Some(d), Some(c)) => format!("{d:.3} µs / {c:.1} µs"),
            _ => "unknown (no --hub-pid)".into(),
        },
    );
    println!(
        "{} admins={}",
        if order_ok { "ORDER_OK" } else { "ORDER_FAIL" },
        args.admins
    );
    let result = json!({
        "scenario": "ack-fanout",
        "label": args.label,
        "params": {
            "agents": args.agents,
            "admins": args.admins,
            "duration_secs": args.duration,
            "warmup_secs": args.warmup,
            "rate": args.rate,
            "source_ips": target.source_count(),
            "nodes": target.node_count(),
        },
        "figures": {
            "setup_login_secs": round3(login_secs),
            "changes": issued,
            "acks_per_sec": round3(acks_per_sec),
            "deliveries": received,
            "deliveries_per_sec": round3(deliveries_per_sec),
            "latency": latency_json(&latency),
            "ack_latency": latency_json(&ack_latency),
            "order_ok": order_ok,
            "seq_gaps": gaps,
            "out_of_order": disorder,
            "version_jumps": version_jumps,
            "unreadable": unexpected,
            "missing": missing,
            "slow_dropped": slow,
            "admins_closed_otherwise": closed_other,
            "agent_errors": errors,
            "hub_cpu_secs": hub_cpu_secs.map(round3),
            "hub_us_per_delivery": us_per_delivery.map(|v| (v * 1e4).round() / 1e4),
            "hub_us_per_change": us_per_change.map(round3),
        },
        "cpu": cpu_use.json(),
    });
    crate::common::finish(&t, result, &warnings, ok);
    Ok(ok)
}

/// The schedule of a paced drive.
#[derive(Clone, Copy)]
struct Pace {
    start: Instant,
    start_ns: u64,
    interval: Duration,
    agents: u32,
}

impl Pace {
    /// When change `k` of agent `i` is due (as an instant and in `now_ns` time).
    fn due(&self, i: usize, k: u32) -> (Instant, u64) {
        let offset = self.interval * i as u32 / self.agents.max(1) + self.interval * k;
        (
            self.start + offset,
            self.start_ns + offset.as_nanos() as u64,
        )
    }
}

/// One agent: `set_status` (send time in `note`), wait for its `ok`, again, until `deadline`;
/// paced, each change waits until it is due.
async fn drive(
    mut ws: Ws,
    i: usize,
    deadline: Instant,
    pace: Option<Pace>,
    record_from: u64,
    ack_latency: Arc<Mutex<Histogram<u64>>>,
) -> Driver {
    let mut d = Driver::default();
    let mut next_ref = 10u64;
    // Spread the agents over the cycle so that not all of them send the same status.
    let mut cycle = i;
    let mut k = 0u32;
    while Instant::now() < deadline {
        let sent = match pace {
            Some(p) => {
                let (at, at_ns) = p.due(i, k);
                if at >= deadline {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
                at_ns
            }
            None => now_ns(),
        };
        k += 1;
        let status = CYCLE[cycle % CYCLE.len()];
        cycle += 1;
        let text = format!(
            r#"{{"type":"set_status","ref":{next_ref},"status":"{status}","note":"{sent}"}}"#
        );
        if let Err(e) = ws.send(Message::text(text)).await {
            d.first_error.get_or_insert_with(|| format!("send: {e}"));
            d.errors += 1;
            break;
        }
        match wait_ok(&mut ws, next_ref).await {
            Ok(()) => {
                d.oks += 1;
                if sent >= record_from {
                    let mut h = ack_latency.lock().unwrap_or_else(|p| p.into_inner());
                    record(&mut h, now_ns().saturating_sub(sent));
                }
            }
            Err(e) => {
                d.errors += 1;
                d.first_error.get_or_insert_with(|| format!("{e:#}"));
                break;
            }
        }
        next_ref += 1;
    }
    // Keep the socket open (and read) until the process ends: closing it would make the
    // hub publish the agent's disconnect while the admins drain.
    tokio::spawn(crate::clients::drain(ws));
    d
}

/// Reads until the reply to `reply_ref`; the agent's own `agent` events are skipped unparsed.
async fn wait_ok(ws: &mut Ws, reply_ref: u64) -> Result<()> {
    loop {
        let text = match tokio::time::timeout(crate::clients::SETUP_TIMEOUT, ws.next()).await {
            Err(_) => bail!("no reply to set_status ref {reply_ref} within 30 s"),
            Ok(None) => bail!("agent socket closed by the server"),
            Ok(Some(Err(e))) => bail!("agent socket error: {e}"),
            Ok(Some(Ok(Message::Text(t)))) => t,
            Ok(Some(Ok(Message::Close(f)))) => bail!("agent socket closed: {f:?}"),
            Ok(Some(Ok(_))) => continue,
        };
        let text = text.as_str();
        if text.starts_with(r#"{"type":"agent""#) {
            continue;
        }
        let frame = parse_frame(text)?;
        if frame.reply_ref != Some(reply_ref) {
            continue;
        }
        if frame.kind == "ok" {
            return Ok(());
        }
        bail!("set_status refused: {}", clip(text));
    }
}
