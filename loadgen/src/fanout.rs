//! `fanout`: A agents change status, S admins subscribed to everything receive every change.
//!
//! Set-status agents carry their send time (ns since the load generator started) in the
//! `note` of `set_status`; telephony-driven agents (offer/answer/end on one adapter socket)
//! have their send times in a per-agent ring indexed by the version the change will get.
//! Each admin measures delivery latency on receipt and checks that it sees every event: `seq`
//! strictly +1 from its snapshot's `seq`, and each agent's `version` strictly +1.

use anyhow::{bail, Context, Result};
use clap::Args;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::json;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::clients::{
    connect_with_hello, drain, login_available, recv_text_timeout, send_text, ADMIN_READ_BUFFER,
};
use crate::common::{
    agent_index, clip, frame_header, histogram, latency_json, latency_row, masked_frame, now_ns,
    parse_frame, record, round3, run_bounded, scan_event, CpuMeter, Event, Table, Target, Ws,
};

/// Agent ids are `<PREFIX><index>`.
pub(crate) const PREFIX: &str = "fo-";
/// Send-time slots per telephony agent (indexed by version): far more than an admin can lag
/// behind one agent's own changes, since each waits for the previous one's ack.
const SLOTS: usize = 16;
/// The manual statuses set-status agents cycle through (they start `available`).
const CYCLE: [&str; 3] = ["busy", "on_break", "available"];
/// Rate mode: changes sent but not yet acknowledged before the pacer holds back.
const RATE_BACKLOG: u64 = 100_000;

#[derive(Args, Debug, Clone)]
pub(crate) struct FanoutArgs {
    /// Agent sockets whose status changes.
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// Admin sockets, each subscribed to all agents.
    #[arg(long, default_value_t = 50)]
    pub admins: usize,
    /// Target deliveries per second (status changes per second x admins); 0 = as fast as
    /// the slowest admin keeps up (at most --window changes ahead of it).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Seconds of driving.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds at the start of the drive whose latencies are not recorded.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// How many of the agents (spread evenly: every agents/N-th one) are driven by
    /// telephony offer/answer/end cycles on one adapter socket instead of set_status. The
    /// hub must run without wrap-up.
    #[arg(long, default_value_t = 0)]
    pub telephony_agents: usize,
    /// Most status changes per second of one set-status agent (0 = no cap): the hub limits
    /// the messages of an agent socket (`--agent-rate`), and real agents change rarely; use
    /// more --agents for more changes.
    #[arg(long, default_value_t = 15.0)]
    pub agent_max_rate: f64,
    /// Rate 0: most status changes in flight beyond the slowest admin (and the acks);
    /// 0 = auto (100000 / admins, within 32..2000: a backlog the hub's per-admin queue
    /// bound holds, and latency in this mode stays window / throughput).
    #[arg(long, default_value_t = 0)]
    pub window: u64,
    /// Connections opened at once during set-up.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Seconds to wait, after the drive, for every admin to receive the last event.
    #[arg(long, default_value_t = 30.0)]
    pub drain_timeout: f64,
}

/// What the drivers and admins share.
pub(crate) struct Shared {
    /// Agent events received per admin; `u64::MAX` once the admin's socket ended.
    pub(crate) admin_received: Vec<AtomicU64>,
    /// Last `seq` per admin; `u64::MAX` once the admin's socket ended.
    pub(crate) admin_last_seq: Vec<AtomicU64>,
    /// Telephony agent j (agent number `j * tel_stride`): send time of the change that
    /// produces version v, at `j*SLOTS + v%SLOTS`.
    tel_sent_ns: Vec<AtomicU64>,
    /// Telephony agents ready for their next event (previous one acknowledged).
    tel_ready: Vec<AtomicBool>,
    /// Changes acknowledged by the hub (ok or error).
    acked: AtomicU64,
    /// Ack latency of every set-status agent (one histogram, not one per agent: each is
    /// ~170 KiB).
    status_acks: Mutex<Histogram<u64>>,
    /// Latencies of changes sent before this instant (ns) are not recorded.
    pub(crate) record_from_ns: AtomicU64,
    telephony_agents: usize,
    /// Every `tel_stride`-th agent (from 0) is driven by telephony, up to `telephony_agents`.
    tel_stride: usize,
}

impl Shared {
    /// Shared state for `admins` admins and no telephony agents (the agents drive themselves).
    pub(crate) fn admins_only(admins: usize) -> Shared {
        Shared {
            admin_received: (0..admins).map(|_| AtomicU64::new(0)).collect(),
            admin_last_seq: (0..admins).map(|_| AtomicU64::new(0)).collect(),
            tel_sent_ns: Vec::new(),
            tel_ready: Vec::new(),
            acked: AtomicU64::new(0),
            status_acks: Mutex::new(histogram()),
            record_from_ns: AtomicU64::new(u64::MAX),
            telephony_agents: 0,
            tel_stride: 1,
        }
    }

    /// The telephony slot of agent `idx`, if telephony drives it.
    fn tel_slot(&self, idx: usize) -> Option<usize> {
        if self.telephony_agents == 0 || !idx.is_multiple_of(self.tel_stride) {
            return None;
        }
        Some(idx / self.tel_stride).filter(|&j| j < self.telephony_agents)
    }
}

/// What one admin saw.
pub(crate) struct AdminResult {
    pub(crate) snapshot_seq: u64,
    pub(crate) received: u64,
    pub(crate) gaps: u64,
    pub(crate) disorder: u64,
    pub(crate) version_errors: u64,
    pub(crate) unexpected: u64,
    pub(crate) close_code: Option<u16>,
    pub(crate) error: Option<String>,
    pub(crate) last_recv_ns: u64,
    pub(crate) status_latency: Histogram<u64>,
    pub(crate) telephony_latency: Histogram<u64>,
}

/// What one set-status agent saw.
#[derive(Default)]
struct DriverResult {
    acks: u64,
    errors: u64,
    first_error: Option<String>,
    not_accepted: u64,
    ack_latency: Option<Histogram<u64>>,
}

#[derive(Deserialize)]
struct SnapshotReply {
    #[serde(rename = "type")]
    kind: String,
    snapshot: Option<Snapshot>,
}

#[derive(Deserialize)]
struct Snapshot {
    seq: u64,
    agents: Vec<SnapshotAgent>,
}

#[derive(Deserialize)]
struct SnapshotAgent {
    agent_id: String,
    version: u64,
}

pub(crate) async fn run(
    target: Arc<Target>,
    hub_pid: Option<u32>,
    args: FanoutArgs,
) -> Result<bool> {
    let mut warnings = Vec::new();
    if args.agents == 0 || args.admins == 0 {
        bail!("--agents and --admins must be at least 1");
    }
    if args.telephony_agents > args.agents {
        bail!("--telephony-agents must not exceed --agents");
    }
    let sockets = args.agents + args.admins + 1;
    if crate::common::check_fd_budget(sockets, &mut warnings) < sockets {
        bail!("{}", warnings.join("; "));
    }
    let tel_n = args.telephony_agents;
    let shared = Arc::new(Shared {
        admin_received: (0..args.admins).map(|_| AtomicU64::new(0)).collect(),
        admin_last_seq: (0..args.admins).map(|_| AtomicU64::new(0)).collect(),
        tel_sent_ns: (0..tel_n * SLOTS).map(|_| AtomicU64::new(0)).collect(),
        tel_ready: (0..tel_n).map(|_| AtomicBool::new(true)).collect(),
        acked: AtomicU64::new(0),
        status_acks: Mutex::new(histogram()),
        record_from_ns: AtomicU64::new(u64::MAX),
        telephony_agents: tel_n,
        tel_stride: args.agents.checked_div(tel_n).unwrap_or(1),
    });
    let window = if args.window == 0 {
        (100_000 / args.admins as u64).clamp(32, 2000)
    } else {
        args.window
    };

    // 1. Agents log in and become available.
    println!("fanout: logging in {} agents", args.agents);
    let agent_sockets = login_available(&target, PREFIX, args.agents, args.concurrency).await?;

    // 2. Admins subscribe to everything.
    println!("fanout: subscribing {} admins", args.admins);
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

    // 3. Drivers: one task per set-status agent, one adapter socket for telephony agents.
    let mut status_txs: Vec<Option<mpsc::UnboundedSender<u32>>> = Vec::with_capacity(args.agents);
    let mut driver_tasks = Vec::new();
    let mut tel_versions = Vec::with_capacity(tel_n);
    let mut drain_tasks = Vec::new();
    for (i, (ws, version)) in agent_sockets.into_iter().enumerate() {
        if shared.tel_slot(i).is_some() {
            tel_versions.push(version);
            drain_tasks.push(tokio::spawn(drain(ws)));
            status_txs.push(None);
        } else {
            let (tx, rx) = mpsc::unbounded_channel();
            driver_tasks.push(tokio::spawn(status_agent(ws, rx, shared.clone())));
            status_txs.push(Some(tx));
        }
    }
    let (tel_tx, tel_task) = if tel_n > 0 {
        let ws =
            connect_with_hello(&target, "/ws/telephony?adapter=loadgen-fanout", 64 * 1024).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Some(tx),
            Some(tokio::spawn(telephony_driver(
                ws,
                rx,
                shared.clone(),
                tel_versions,
            ))),
        )
    } else {
        (None, None)
    };

    // 4. Drive.
    let metrics_before = target.metrics().await.ok();
    let change_rate = args.rate as f64 / args.admins as f64;
    println!(
        "fanout: driving for {}s at {}",
        args.duration,
        if args.rate == 0 {
            "full speed".to_string()
        } else {
            format!("{} deliveries/s ({:.0} changes/s)", args.rate, change_rate)
        }
    );
    let cpu = CpuMeter::start(hub_pid);
    let drive_start = Instant::now();
    let drive_start_ns = now_ns();
    shared.record_from_ns.store(
        drive_start_ns + (args.warmup * 1e9) as u64,
        Ordering::Relaxed,
    );
    let pacer = pace(
        &args,
        window,
        change_rate,
        &shared,
        &status_txs,
        tel_tx.as_ref(),
        drive_start,
    )
    .await;
    let issued = pacer.issued;
    let drive_secs = drive_start.elapsed().as_secs_f64();

    // 5. Wait for every ack, then for every admin to reach the hub's last seq.
    let ack_deadline = Instant::now() + Duration::from_secs_f64(args.drain_timeout);
    while shared.acked.load(Ordering::Relaxed) < issued && Instant::now() < ack_deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let acked = shared.acked.load(Ordering::Relaxed);
    if acked < issued {
        warnings.push(format!(
            "{} of {issued} changes were never acknowledged",
            issued - acked
        ));
    }
    let metrics_after = target.metrics().await.context("GET /metrics")?;
    let final_seq = metrics_after
        .get("presence_hub_agent_updates_total")
        .context("/metrics has no presence_hub_agent_updates_total")? as u64;
    wait_for_admins(&shared.admin_last_seq, final_seq, args.drain_timeout).await;
    let cpu_use = cpu.stop();
    let _ = stop_tx.send(true);
    drop(status_txs);
    drop(tel_tx);
    let mut drivers = Vec::new();
    for t in driver_tasks {
        drivers.push(t.await?);
    }
    if let Some(t) = tel_task {
        drivers.push(t.await?);
    }
    let mut admins = Vec::new();
    for t in admin_tasks {
        admins.push(t.await?);
    }
    for t in drain_tasks {
        t.abort();
    }

    // 6. Figures.
    let mut status_latency = histogram();
    let mut telephony_latency = histogram();
    let (mut received, mut gaps, mut disorder, mut version_errors, mut unexpected) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut loss, mut slow, mut closed_other) = (0u64, 0u64, 0u64);
    let mut last_recv_ns = drive_start_ns;
    let mut first_admin_error = None;
    let mut expected_per_admin = 0u64;
    for a in &admins {
        status_latency.add(&a.status_latency).ok();
        telephony_latency.add(&a.telephony_latency).ok();
        received += a.received;
        gaps += a.gaps;
        disorder += a.disorder;
        version_errors += a.version_errors;
        unexpected += a.unexpected;
        last_recv_ns = last_recv_ns.max(a.last_recv_ns);
        let expected = final_seq.saturating_sub(a.snapshot_seq);
        expected_per_admin = expected_per_admin.max(expected);
        loss += expected.saturating_sub(a.received.saturating_sub(a.disorder));
        match a.close_code {
            Some(4008) => slow += 1,
            Some(_) => closed_other += 1,
            None => {}
        }
        if first_admin_error.is_none() {
            first_admin_error.clone_from(&a.error);
        }
    }
    let mut ack_latency = shared
        .status_acks
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let (mut acks, mut ack_errors, mut not_accepted) = (0u64, 0u64, 0u64);
    let mut first_ack_error = None;
    for d in &drivers {
        acks += d.acks;
        ack_errors += d.errors;
        not_accepted += d.not_accepted;
        if let Some(h) = &d.ack_latency {
            ack_latency.add(h).ok();
        }
        if first_ack_error.is_none() {
            first_ack_error.clone_from(&d.first_error);
        }
    }
    let delivery_secs = ((last_recv_ns.saturating_sub(drive_start_ns)) as f64 / 1e9).max(1e-9);
    let deliveries_per_sec = received as f64 / delivery_secs;
    let changes_per_sec = issued as f64 / drive_secs;
    let order_ok = gaps == 0 && disorder == 0 && version_errors == 0 && unexpected == 0;
    let hub_slow_dropped = metrics_after.get("presence_hub_admin_slow_dropped_total");
    let hub_deliveries = match (
        metrics_after.get("presence_hub_admin_deliveries_total"),
        metrics_before
            .as_ref()
            .and_then(|m| m.get("presence_hub_admin_deliveries_total")),
    ) {
        (Some(a), Some(b)) => Some(a - b),
        _ => None,
    };
    cpu_use.check(&mut warnings);
    if pacer.stalls > 0 {
        warnings.push(format!(
            "the pacer held back {} times: the hub did not acknowledge changes as fast as asked",
            pacer.stalls
        ));
    }
    let agent_cap = args.agent_max_rate * (args.agents - tel_n) as f64;
    if pacer.capped > 0 && args.agent_max_rate > 0.0 && changes_per_sec > agent_cap * 0.8 {
        warnings.push(format!(
            "the agents' own cap ({} changes/s each, {agent_cap:.0}/s in all) held the pacer back \
             {} times: use more --agents for a higher rate",
            args.agent_max_rate, pacer.capped
        ));
    }
    if args.rate > 0 && changes_per_sec < change_rate * 0.95 {
        warnings.push(format!(
            "asked for {change_rate:.0} changes/s, sent {changes_per_sec:.0}/s"
        ));
    }

    let mut t = Table::new(format!(
        "fanout: {} agents ({} by telephony), {} admins, rate {}",
        args.agents,
        tel_n,
        args.admins,
        if args.rate == 0 {
            "max".to_string()
        } else {
            format!("{}/s", args.rate)
        }
    ));
    t.row(
        "status changes sent",
        format!("{issued} ({changes_per_sec:.0}/s over {drive_secs:.1}s)"),
    );
    t.row(
        "deliveries received",
        format!("{received} ({deliveries_per_sec:.0}/s)"),
    );
    latency_row(&mut t, "delivery latency (set_status)", &status_latency);
    if tel_n > 0 {
        latency_row(&mut t, "delivery latency (telephony)", &telephony_latency);
    }
    latency_row(&mut t, "ack latency (driver)", &ack_latency);
    if args.rate == 0 {
        t.row(
            "note",
            format!(
                "full speed keeps {window} changes in flight: latency here is queueing \
                 (window / throughput); measure latency with --rate"
            ),
        );
    }
    t.row("expected events per admin", expected_per_admin.to_string());
    t.row(
        "order",
        if order_ok {
            format!("ORDER_OK (all {} admins)", args.admins)
        } else {
            format!(
                "DISORDER: {gaps} seq gaps, {disorder} out of order, {version_errors} version jumps, {unexpected} unreadable"
            )
        },
    );
    t.row("loss", format!("LOSS {loss}"));
    t.row(
        "slow admins dropped (4008)",
        format!(
            "{slow} (hub counter: {})",
            hub_slow_dropped.map_or("?".into(), |v| v.to_string())
        ),
    );
    if closed_other > 0 {
        t.row("admins closed otherwise", closed_other.to_string());
    }
    t.row(
        "driver errors",
        format!("{ack_errors} errors, {not_accepted} offers not accepted"),
    );
    cpu_use.rows(&mut t);
    let ok = order_ok
        && loss == 0
        && slow == 0
        && closed_other == 0
        && ack_errors == 0
        && not_accepted == 0
        && first_admin_error.is_none()
        && acked >= issued;
    if let Some(e) = &first_admin_error {
        warnings.push(format!("admin error: {e}"));
    }
    if let Some(e) = &first_ack_error {
        warnings.push(format!("driver error: {e}"));
    }
    println!(
        "{} admins={}",
        if order_ok { "ORDER_OK" } else { "ORDER_FAIL" },
        args.admins
    );
    println!("LOSS {loss}");
    let result = json!({
        "scenario": "fanout",
        "params": {
            "agents": args.agents,
            "admins": args.admins,
            "rate": args.rate,
            "duration_secs": args.duration,
            "warmup_secs": args.warmup,
            "telephony_agents": tel_n,
            "window": window,
            "agent_max_rate": args.agent_max_rate,
            "source_ips": target.source_count(),
            "nodes": target.node_count(),
        },
        "figures": {
            "changes_sent": issued,
            "changes_per_sec": round3(changes_per_sec),
            "deliveries": received,
            "deliveries_per_sec": round3(deliveries_per_sec),
            "hub_deliveries": hub_deliveries,
            "latency": latency_json(&status_latency),
            "telephony_latency": latency_json(&telephony_latency),
            "ack_latency": latency_json(&ack_latency),
            "expected_per_admin": expected_per_admin,
            "order_ok": order_ok,
            "seq_gaps": gaps,
            "out_of_order": disorder,
            "version_jumps": version_errors,
            "loss": loss,
            "slow_dropped": slow,
            "hub_slow_dropped_total": hub_slow_dropped,
            "admins_closed_otherwise": closed_other,
            "driver_errors": ack_errors,
            "offers_not_accepted": not_accepted,
            "acks": acks,
            "pacer_stalls": pacer.stalls,
            "pacer_capped": pacer.capped,
        },
        "cpu": cpu_use.json(),
    });
    crate::common::finish(&t, result, &warnings, ok);
    Ok(ok)
}

/// Connects admin `i`, subscribes to all, parses the snapshot: its `seq` and each known
/// agent's version (indexed by agent number; `u64::MAX` = not in the snapshot).
/// Subscribes `admins` admin sockets to all `agents` and starts each one's reading loop
/// (stopped through `stop`).
pub(crate) async fn start_admins(
    target: &Arc<Target>,
    admins: usize,
    agents: usize,
    concurrency: usize,
    shared: &Arc<Shared>,
    stop: &watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<AdminResult>>> {
    let subs = run_bounded(admins, concurrency, {
        let target = target.clone();
        move |i| {
            let target = target.clone();
            async move { subscribe_admin(&target, i, agents).await }
        }
    })
    .await;
    let mut tasks = Vec::with_capacity(admins);
    for (i, r) in subs.into_iter().enumerate() {
        let (ws, snapshot_seq, versions) = r.with_context(|| format!("admin {i}"))?;
        shared.admin_last_seq[i].store(snapshot_seq, Ordering::Relaxed);
        tasks.push(tokio::spawn(admin_loop(
            ws,
            i,
            snapshot_seq,
            versions,
            shared.clone(),
            stop.clone(),
        )));
    }
    Ok(tasks)
}

pub(crate) async fn subscribe_admin(
    target: &Target,
    i: usize,
    agents: usize,
) -> Result<(Ws, u64, Vec<u64>)> {
    let mut ws = connect_with_hello(
        target,
        &format!("/ws/admin?admin_id=loadgen-{i}"),
        ADMIN_READ_BUFFER,
    )
    .await?;
    send_text(&mut ws, r#"{"type":"subscribe","ref":1}"#.to_string()).await?;
    let reply = recv_text_timeout(&mut ws).await?;
    let parsed: SnapshotReply = serde_json::from_str(&reply)
        .with_context(|| format!("subscribe reply: {}", clip(&reply)))?;
    let Some(snapshot) = parsed.snapshot.filter(|_| parsed.kind == "ok") else {
        bail!(
            "subscribe was not answered with a snapshot: {}",
            clip(&reply)
        );
    };
    let mut versions = vec![u64::MAX; agents];
    for a in &snapshot.agents {
        if let Some(idx) = agent_index(&a.agent_id, PREFIX).filter(|&i| i < agents) {
            versions[idx] = a.version;
        }
    }
    Ok((ws, snapshot.seq, versions))
}

/// Reads one admin's events until told to stop or closed, checking order and measuring.
///
/// After the subscribe reply nothing else is queued for this socket until the drive starts,
/// so tungstenite holds no unread bytes and the loop reads the TCP stream itself: server
/// frames are unmasked and never fragmented by the hub, and parsing them here costs the load
/// generator far less per frame than a WebSocket library would (the admins read every
/// delivery: they must stay cheaper than the hub that writes them). Pings get masked pongs.
pub(crate) async fn admin_loop(
    ws: Ws,
    i: usize,
    snapshot_seq: u64,
    mut versions: Vec<u64>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> AdminResult {
    let mut r = AdminResult {
        snapshot_seq,
        received: 0,
        gaps: 0,
        disorder: 0,
        version_errors: 0,
        unexpected: 0,
        close_code: None,
        error: None,
        last_recv_ns: 0,
        status_latency: histogram(),
        telephony_latency: histogram(),
    };
    let mut last_seq = snapshot_seq;
    let (mut rd, mut wr) = ws.into_inner().into_split();
    let mut buf = vec![0u8; 128 * 1024];
    let (mut start, mut end) = (0usize, 0usize);
    let stopped_by_us = 'read: loop {
        // Every complete frame in the buffer.
        loop {
            let h = match frame_header(&buf[start..end]) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    r.error = Some(format!("admin {i}: {e}"));
                    break 'read false;
                }
            };
            let total = h.header + h.len;
            if end - start < total {
                if total > buf.len() {
                    buf.copy_within(start..end, 0);
                    end -= start;
                    start = 0;
                    buf.resize(total.next_power_of_two(), 0);
                }
                break;
            }
            let payload = &buf[start + h.header..start + total];
            match h.opcode {
                0x1 if h.fin => match std::str::from_utf8(payload) {
                    Ok(text) => on_event(text, &mut r, &mut last_seq, &mut versions, &shared),
                    Err(_) => r.unexpected += 1,
                },
                0x8 => {
                    r.close_code = Some(if payload.len() >= 2 {
                        u16::from_be_bytes([payload[0], payload[1]])
                    } else {
                        1005
                    });
                    break 'read false;
                }
                0x9 => {
                    let pong = masked_frame(0xA, payload);
                    if wr.write_all(&pong).await.is_err() {
                        r.error = Some(format!("admin {i}: cannot answer a ping"));
                        break 'read false;
                    }
                }
                0xA => {}
                other => {
                    r.unexpected += 1;
                    r.error.get_or_insert_with(|| {
                        format!(
                            "admin {i}: unexpected frame (opcode {other}, fin {})",
                            h.fin
                        )
                    });
                }
            }
            start += total;
        }
        shared.admin_received[i].store(r.received, Ordering::Relaxed);
        shared.admin_last_seq[i].store(last_seq, Ordering::Relaxed);
        if start == end {
            start = 0;
            end = 0;
        } else if end == buf.len() {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        if end == buf.len() {
            let grown = buf.len() * 2;
            buf.resize(grown, 0);
        }
        tokio::select! {
            biased;
            _ = stop.changed() => break true,
            n = rd.read(&mut buf[end..]) => match n {
                Ok(0) => {
                    r.error = Some(format!("admin {i}: socket closed without a close frame"));
                    break false;
                }
                Ok(n) => end += n,
                Err(e) => {
                    r.error = Some(format!("admin {i}: {e}"));
                    break false;
                }
            }
        }
    };
    if !stopped_by_us {
        shared.admin_received[i].store(u64::MAX, Ordering::Relaxed);
        shared.admin_last_seq[i].store(u64::MAX, Ordering::Relaxed);
    }
    r
}

fn on_event(
    text: &str,
    r: &mut AdminResult,
    last_seq: &mut u64,
    versions: &mut [u64],
    shared: &Shared,
) {
    let now = now_ns();
    // The fast scanner reads the hub's own frame layout; anything else goes through serde.
    if let Some(ev) = scan_event(text) {
        check_event(&ev, now, r, last_seq, versions, shared);
        return;
    }
    let Ok(frame) = parse_frame(text) else {
        r.unexpected += 1;
        return;
    };
    if frame.kind != "agent" {
        if frame.kind == "error" {
            r.unexpected += 1;
            if r.error.is_none() {
                r.error = Some(format!("admin got an error: {}", clip(text)));
            }
        }
        return;
    }
    let (Some(seq), Some(agent)) = (frame.seq, frame.agent) else {
        r.unexpected += 1;
        return;
    };
    let ev = Event {
        seq,
        agent_id: &agent.agent_id,
        version: agent.version,
        reason: agent.reason.as_deref(),
        note: agent.note.as_deref(),
    };
    check_event(&ev, now, r, last_seq, versions, shared);
}

/// Order checks and latency of one `agent` event seen by an admin.
fn check_event(
    ev: &Event<'_>,
    now: u64,
    r: &mut AdminResult,
    last_seq: &mut u64,
    versions: &mut [u64],
    shared: &Shared,
) {
    r.received += 1;
    r.last_recv_ns = now;
    if ev.seq <= *last_seq {
        r.disorder += 1;
    } else {
        r.gaps += ev.seq - *last_seq - 1;
        *last_seq = ev.seq;
    }
    let Some(idx) = agent_index(ev.agent_id, PREFIX).filter(|&i| i < versions.len()) else {
        return;
    };
    let prev = versions[idx];
    if prev != u64::MAX && ev.version != prev.wrapping_add(1) {
        r.version_errors += 1;
    }
    versions[idx] = ev.version;
    let record_from = shared.record_from_ns.load(Ordering::Relaxed);
    let reason = ev.reason.unwrap_or("");
    if let Some(j) = shared.tel_slot(idx) {
        if reason.starts_with("call_") {
            let sent =
                shared.tel_sent_ns[j * SLOTS + ev.version as usize % SLOTS].load(Ordering::Acquire);
            if sent >= record_from && now >= sent {
                record(&mut r.telephony_latency, now - sent);
            }
        }
    } else if reason == "manual" {
        if let Some(sent) = ev.note.and_then(|n| n.parse::<u64>().ok()) {
            if sent >= record_from && now >= sent {
                record(&mut r.status_latency, now - sent);
            }
        }
    }
}

/// A set-status agent: sends the changes it is told to, each with its send time as note.
async fn status_agent(
    ws: Ws,
    mut rx: mpsc::UnboundedReceiver<u32>,
    shared: Arc<Shared>,
) -> DriverResult {
    let (mut sink, mut stream) = ws.split();
    let mut r = DriverResult::default();
    let mut pending: VecDeque<(u64, u64)> = VecDeque::new();
    let mut next_ref = 10u64;
    let mut cycle = 0usize;
    loop {
        tokio::select! {
            cmd = rx.recv() => {
                let Some(n) = cmd else { break };
                let mut failed = false;
                for _ in 0..n {
                    let status = CYCLE[cycle % CYCLE.len()];
                    cycle += 1;
                    let sent = now_ns();
                    let text = format!(
                        r#"{{"type":"set_status","ref":{next_ref},"status":"{status}","note":"{sent}"}}"#
                    );
                    pending.push_back((next_ref, sent));
                    next_ref += 1;
                    if sink.feed(Message::text(text)).await.is_err() {
                        failed = true;
                        break;
                    }
                }
                if failed || sink.flush().await.is_err() {
                    r.first_error.get_or_insert_with(|| "agent socket failed while sending".into());
                    break;
                }
            }
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let text = text.as_str();
                    if text.starts_with(r#"{"type":"agent""#) {
                        continue;
                    }
                    on_status_reply(text, &mut r, &mut pending, &shared);
                }
                Some(Ok(Message::Close(frame))) => {
                    r.first_error.get_or_insert_with(|| format!("agent socket closed by the hub: {frame:?}"));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    r.first_error.get_or_insert_with(|| format!("agent socket error: {e}"));
                    break;
                }
                None => break,
            }
        }
    }
    r
}

fn on_status_reply(
    text: &str,
    r: &mut DriverResult,
    pending: &mut VecDeque<(u64, u64)>,
    shared: &Shared,
) {
    let now = now_ns();
    let Ok(frame) = parse_frame(text) else {
        r.errors += 1;
        return;
    };
    let Some(reply_ref) = frame.reply_ref else {
        if frame.kind == "error" {
            r.errors += 1;
            r.first_error.get_or_insert_with(|| clip(text));
        }
        return;
    };
    while let Some(&(pref, sent)) = pending.front() {
        if pref > reply_ref {
            break;
        }
        pending.pop_front();
        if pref == reply_ref {
            r.acks += 1;
            shared.acked.fetch_add(1, Ordering::Relaxed);
            if frame.kind == "ok" {
                let mut h = shared.status_acks.lock().unwrap_or_else(|p| p.into_inner());
                record(&mut h, now.saturating_sub(sent));
            } else {
                r.errors += 1;
                r.first_error.get_or_insert_with(|| clip(text));
            }
            return;
        }
        // A ref skipped: its reply never came.
        r.errors += 1;
        r.first_error
            .get_or_insert_with(|| format!("no reply for set_status ref {pref}"));
        shared.acked.fetch_add(1, Ordering::Relaxed);
    }
}

/// Per-agent state of the telephony driver.
struct CallCycle {
    phase: u8,
    call: u64,
    version: u64,
    sent_ns: u64,
}

/// One adapter socket driving offer -> answered -> ended cycles for the telephony agents
/// (tokens and refs are their slots); each agent's next event waits for the previous ack.
async fn telephony_driver(
    ws: Ws,
    mut rx: mpsc::UnboundedReceiver<usize>,
    shared: Arc<Shared>,
    versions: Vec<u64>,
) -> DriverResult {
    let (mut sink, mut stream) = ws.split();
    let nonce = crate::common::run_nonce();
    let mut cycles: Vec<CallCycle> = versions
        .into_iter()
        .map(|version| CallCycle {
            phase: 0,
            call: 0,
            version,
            sent_ns: 0,
        })
        .collect();
    let mut r = DriverResult {
        ack_latency: Some(histogram()),
        ..DriverResult::default()
    };
    loop {
        tokio::select! {
            token = rx.recv() => {
                let Some(mut slot) = token else { break };
                let mut failed = false;
                loop {
                    let idx = slot * shared.tel_stride;
                    let c = &mut cycles[slot];
                    let kind = ["call_offered", "call_answered", "call_ended"][c.phase as usize];
                    let sent = now_ns();
                    c.sent_ns = sent;
                    let next_version = c.version + 1;
                    shared.tel_sent_ns[slot * SLOTS + next_version as usize % SLOTS]
                        .store(sent, Ordering::Release);
                    let text = format!(
                        r#"{{"type":"{kind}","ref":{slot},"event_id":"{nonce}-{idx}-{}-{}","call_id":"c{nonce}-{idx}-{}","agent_id":"{PREFIX}{idx}"}}"#,
                        c.call, c.phase, c.call
                    );
                    if sink.feed(Message::text(text)).await.is_err() {
                        failed = true;
                        break;
                    }
                    match rx.try_recv() {
                        Ok(next) => slot = next,
                        Err(_) => break,
                    }
                }
                if failed || sink.flush().await.is_err() {
                    r.first_error.get_or_insert_with(|| "adapter socket failed while sending".into());
                    break;
                }
            }
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(text))) => on_telephony_reply(text.as_str(), &mut r, &mut cycles, &shared),
                Some(Ok(Message::Close(frame))) => {
                    r.first_error.get_or_insert_with(|| format!("adapter socket closed by the hub: {frame:?}"));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    r.first_error.get_or_insert_with(|| format!("adapter socket error: {e}"));
                    break;
                }
                None => break,
            }
        }
    }
    r
}

fn on_telephony_reply(text: &str, r: &mut DriverResult, cycles: &mut [CallCycle], shared: &Shared) {
    let now = now_ns();
    let Ok(frame) = parse_frame(text) else {
        r.errors += 1;
        r.first_error.get_or_insert_with(|| clip(text));
        return;
    };
    let Some(idx) = frame
        .reply_ref
        .map(|v| v as usize)
        .filter(|&i| i < cycles.len())
    else {
        // Notifications (call_accepted, ring_timeout, ...) are not expected here.
        if frame.kind == "error" {
            r.errors += 1;
            r.first_error.get_or_insert_with(|| clip(text));
        }
        return;
    };
    let c = &mut cycles[idx];
    r.acks += 1;
    if let Some(h) = &mut r.ack_latency {
        record(h, now.saturating_sub(c.sent_ns));
    }
    if let Some(agent) = &frame.agent {
        c.version = agent.version;
    }
    if frame.kind != "ok" {
        r.errors += 1;
        r.first_error.get_or_insert_with(|| clip(text));
    } else if c.phase == 0 && frame.accepted != Some(true) {
        r.not_accepted += 1;
        r.first_error.get_or_insert_with(|| clip(text));
    } else if frame.stale == Some(true) {
        r.errors += 1;
        r.first_error.get_or_insert_with(|| clip(text));
    } else {
        c.phase = (c.phase + 1) % 3;
        if c.phase == 0 {
            c.call += 1;
        }
    }
    shared.acked.fetch_add(1, Ordering::Relaxed);
    shared.tel_ready[idx].store(true, Ordering::Release);
}

struct PacerResult {
    issued: u64,
    stalls: u64,
    /// Ticks where every agent was at its --agent-max-rate (or waiting for an ack).
    capped: u64,
}

/// Issues status changes round robin over the agents, at the asked rate or, at rate 0, as
/// fast as the slowest admin allows (at most `window` changes beyond it).
async fn pace(
    args: &FanoutArgs,
    window: u64,
    change_rate: f64,
    shared: &Shared,
    status_txs: &[Option<mpsc::UnboundedSender<u32>>],
    tel_tx: Option<&mpsc::UnboundedSender<usize>>,
    start: Instant,
) -> PacerResult {
    let n = status_txs.len();
    let duration = Duration::from_secs_f64(args.duration);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut issued = 0u64;
    let mut stalls = 0u64;
    let mut cursor = 0usize;
    let mut counts = vec![0u32; n];
    let mut touched = Vec::new();
    // Per set-status agent: when (ns) it may change again.
    let interval_ns = if args.agent_max_rate > 0.0 {
        (1e9 / args.agent_max_rate) as u64
    } else {
        0
    };
    let mut next_ok = vec![0u64; n];
    let mut capped = 0u64;
    loop {
        tick.tick().await;
        let elapsed = start.elapsed();
        if elapsed >= duration {
            break;
        }
        let acked = shared.acked.load(Ordering::Relaxed);
        let unacked = issued.saturating_sub(acked);
        let mut budget = if args.rate > 0 {
            let due = (elapsed.as_secs_f64() * change_rate) as u64;
            if unacked > RATE_BACKLOG {
                stalls += 1;
                0
            } else {
                due.saturating_sub(issued)
            }
        } else {
            let slowest = shared
                .admin_received
                .iter()
                .map(|a| a.load(Ordering::Relaxed))
                .filter(|&v| v != u64::MAX)
                .min()
                .unwrap_or(issued);
            let ahead = issued.saturating_sub(slowest).max(unacked);
            window.saturating_sub(ahead)
        };
        let now = now_ns();
        while budget > 0 {
            // The next agent that may change now: a set-status agent once its per-agent
            // interval has passed (its changes pipeline); a telephony agent once its last
            // event was acked.
            let mut found = None;
            for _ in 0..n {
                let idx = cursor;
                cursor = (cursor + 1) % n;
                match shared.tel_slot(idx) {
                    Some(slot) => {
                        if shared.tel_ready[slot].swap(false, Ordering::AcqRel) {
                            found = Some((idx, Some(slot)));
                            break;
                        }
                    }
                    None => {
                        if now >= next_ok[idx] {
                            next_ok[idx] = now + interval_ns;
                            found = Some((idx, None));
                            break;
                        }
                    }
                }
            }
            let Some((idx, slot)) = found else {
                capped += 1;
                break;
            };
            if let Some(slot) = slot {
                if let Some(tx) = tel_tx {
                    let _ = tx.send(slot);
                }
            } else {
                if counts[idx] == 0 {
                    touched.push(idx);
                }
                counts[idx] += 1;
            }
            issued += 1;
            budget -= 1;
        }
        for idx in touched.drain(..) {
            if let Some(tx) = &status_txs[idx] {
                let _ = tx.send(counts[idx]);
            }
            counts[idx] = 0;
        }
    }
    PacerResult {
        issued,
        stalls,
        capped,
    }
}

/// Waits until every admin's counter reached `target`, at most `timeout_secs` (what is still
/// behind then is counted as missing by the caller).
pub(crate) async fn wait_for_admins(counters: &[AtomicU64], target: u64, timeout_secs: f64) {
    let deadline = Instant::now() + Duration::from_secs_f64(timeout_secs);
    while counters.iter().any(|c| c.load(Ordering::Relaxed) < target) && Instant::now() <= deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
