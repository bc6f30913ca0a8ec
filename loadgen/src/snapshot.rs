//! `snapshot`: creates N agents, then times an admin `subscribe` from the send to the first
//! byte of the reply and to its last byte (the whole snapshot frame).

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

use crate::clients::{agent_login, connect_with_hello, send_text, set_status, ADMIN_READ_BUFFER};
use crate::common::{frame_header, round3, run_bounded, CpuMeter, Table, Target, Ws};

const PREFIX: &str = "sn-";
const STATUSES: [&str; 3] = ["available", "busy", "on_break"];

#[derive(Args, Debug, Clone)]
pub(crate) struct SnapshotArgs {
    /// Agents to create before the measurement.
    #[arg(long, default_value_t = 10_000)]
    pub agents: usize,
    /// Subscribes to time (each on a fresh admin socket).
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// Logins in flight at once while creating agents.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Keep the agents' sockets open (default: disconnect them after their status change;
    /// start the hub with a long --disconnect-grace-secs so they stay logged in).
    #[arg(long)]
    pub keep_connected: bool,
}

#[derive(Deserialize)]
struct Reply {
    #[serde(rename = "type")]
    kind: String,
    snapshot: Option<SnapshotBody>,
}

#[derive(Deserialize)]
struct SnapshotBody {
    agents: Vec<serde::de::IgnoredAny>,
}

struct Timing {
    first_byte: Duration,
    full: Duration,
    bytes: usize,
    agents: usize,
}

pub(crate) async fn run(
    target: Arc<Target>,
    hub_pid: Option<u32>,
    args: SnapshotArgs,
) -> Result<bool> {
    let mut warnings = Vec::new();
    let sockets = if args.keep_connected {
        args.agents + 1
    } else {
        args.concurrency + 1
    };
    if crate::common::check_fd_budget(sockets, &mut warnings) < sockets {
        bail!("{}", warnings.join("; "));
    }
    println!("snapshot: creating {} agents", args.agents);
    let created_at = Instant::now();
    let keep = args.keep_connected;
    let made = run_bounded(args.agents, args.concurrency, {
        let target = target.clone();
        move |i| {
            let target = target.clone();
            async move {
                let (mut ws, _) = agent_login(&target, &format!("{PREFIX}{i}")).await?;
                set_status(&mut ws, STATUSES[i % STATUSES.len()], 1).await?;
                if keep {
                    Ok(Some(tokio::spawn(crate::clients::drain(ws))))
                } else {
                    let _ = ws.close(None).await;
                    anyhow::Ok(None)
                }
            }
        }
    })
    .await;
    let mut holders = Vec::new();
    for (i, r) in made.into_iter().enumerate() {
        if let Some(h) = r.with_context(|| format!("agent {PREFIX}{i}"))? {
            holders.push(h);
        }
    }
    let create_secs = created_at.elapsed().as_secs_f64();
    // Let the hub finish handling the disconnects before timing.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let cpu = CpuMeter::start(hub_pid);
    let mut timings = Vec::new();
    for r in 0..args.repeat {
        let mut ws = connect_with_hello(
            &target,
            &format!("/ws/admin?admin_id=loadgen-snapshot-{r}"),
            ADMIN_READ_BUFFER,
        )
        .await?;
        let t = timed_subscribe(&mut ws).await?;
        if t.agents < args.agents {
            bail!(
                "snapshot holds {} agents, expected at least {}",
                t.agents,
                args.agents
            );
        }
        timings.push(t);
        drop(ws);
    }
    let cpu_use = cpu.stop();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut first: Vec<f64> = timings.iter().map(|t| ms(t.first_byte)).collect();
    let mut full: Vec<f64> = timings.iter().map(|t| ms(t.full)).collect();
    first.sort_by(f64::total_cmp);
    full.sort_by(f64::total_cmp);
    let median = |v: &[f64]| v[v.len() / 2];
    let bytes = timings.first().map_or(0, |t| t.bytes);
    let agents = timings.first().map_or(0, |t| t.agents);
    // Snapshot timing runs a single request at a time: the CPU comparison does not apply.
    let mut t = Table::new(format!("snapshot: {} agents", args.agents));
    t.row(
        "agents created",
        format!("{} in {create_secs:.2}s", args.agents),
    );
    t.row(
        "snapshot size",
        format!(
            "{agents} agents, {bytes} bytes ({:.1} KiB)",
            bytes as f64 / 1024.0
        ),
    );
    t.row(
        "subscribe -> first byte",
        format!(
            "min {:.3}  median {:.3}  max {:.3} ms (n={})",
            first[0],
            median(&first),
            first[first.len() - 1],
            first.len()
        ),
    );
    t.row(
        "subscribe -> full reply",
        format!(
            "min {:.3}  median {:.3}  max {:.3} ms",
            full[0],
            median(&full),
            full[full.len() - 1]
        ),
    );
    cpu_use.rows(&mut t);
    let result = json!({
        "scenario": "snapshot",
        "params": {
            "agents": args.agents,
            "repeat": args.repeat,
            "keep_connected": args.keep_connected,
        },
        "figures": {
            "snapshot_agents": agents,
            "snapshot_bytes": bytes,
            "first_byte_ms": {
                "min": round3(first[0]),
                "median": round3(median(&first)),
                "max": round3(first[first.len() - 1]),
            },
            "full_reply_ms": {
                "min": round3(full[0]),
                "median": round3(median(&full)),
                "max": round3(full[full.len() - 1]),
            },
            "create_secs": round3(create_secs),
        },
        "cpu": cpu_use.json(),
    });
    crate::common::finish(&t, result, &warnings, true);
    Ok(true)
}

/// Sends `subscribe`, then reads the raw TCP stream under the WebSocket (nothing else is
/// queued for this socket after its `hello`) to see the reply's first byte arrive, and
/// parses the WebSocket frame header to know when its last byte has arrived.
async fn timed_subscribe(ws: &mut Ws) -> Result<Timing> {
    let t0 = Instant::now();
    send_text(ws, r#"{"type":"subscribe","ref":1}"#.into()).await?;
    let stream = ws.get_mut();
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut chunk = vec![0u8; 256 * 1024];
    let mut first_byte = None;
    let deadline = Duration::from_secs(60);
    loop {
        let n = tokio::time::timeout(deadline, stream.read(&mut chunk))
            .await
            .map_err(|_| anyhow!("no snapshot within {deadline:?}"))??;
        if n == 0 {
            bail!("the hub closed the socket before the snapshot");
        }
        first_byte.get_or_insert_with(|| t0.elapsed());
        buf.extend_from_slice(&chunk[..n]);
        // Skip control frames (a ping) that may precede the reply.
        while let Some(h) = frame_header(&buf)? {
            if h.opcode >= 0x8 && buf.len() >= h.header + h.len {
                buf.drain(..h.header + h.len);
                continue;
            }
            break;
        }
        let Some(h) = frame_header(&buf)? else {
            continue;
        };
        if buf.len() < h.header + h.len {
            continue;
        }
        let full = t0.elapsed();
        if !h.fin || h.opcode != 0x1 {
            bail!(
                "the reply is not one text frame (opcode {}, fin {})",
                h.opcode,
                h.fin
            );
        }
        let payload = &buf[h.header..h.header + h.len];
        let reply: Reply = serde_json::from_slice(payload).context("snapshot reply")?;
        let Some(snapshot) = reply.snapshot.filter(|_| reply.kind == "ok") else {
            bail!("subscribe was not answered with ok + snapshot");
        };
        return Ok(Timing {
            first_byte: first_byte.unwrap_or(full),
            full,
            bytes: h.len,
            agents: snapshot.agents.len(),
        });
    }
}
