//! Measures the cluster backplane alone against a running nats-server: latency of fenced
//! appends (from the call to JetStream's acknowledgement), appends per second with several
//! in flight, and this process's CPU per append and per change followed. Not a test:
//! figures depend on the machine and on the server's settings (`sync_interval`).
//!
//! `cargo run --release --example cluster_append -- [nats-url] [appends] [agents] [in-flight]`

use bytes::Bytes;
use presence_hub::cluster::{Backplane, ClusterConfig, Followed, Head, NodeId};
use presence_hub::model::AgentId;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn cpu_seconds() -> f64 {
    // utime + stime of the whole process, in clock ticks of 1/100 s.
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

fn arg<T: std::str::FromStr>(i: usize, default: T) -> T {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url: String = arg(1, "nats://127.0.0.1:4222".to_string());
    let appends: usize = arg(2, 20_000);
    let agents: usize = arg(3, 1_000);
    let in_flight: usize = arg(4, 64).max(1);
    let prefix = format!("bench{}", std::process::id());
    let cfg = ClusterConfig::new(vec![url], NodeId::parse("bench")?, &prefix, 1)?;
    let bp = Backplane::start(cfg, CancellationToken::new());
    bp.ready(Duration::from_secs(10)).await?;
    let body = Bytes::from(vec![b'x'; 300]); // about the size of an agent's state JSON

    // Each worker owns a disjoint set of agents (one writer per agent, as in the hub).
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut workers = Vec::new();
    for w in 0..in_flight {
        let (bp, body) = (bp.clone(), body.clone());
        let mine: Vec<AgentId> = (0..agents)
            .filter(|a| a % in_flight == w)
            .map(|a| AgentId::parse(&format!("agent-{a}")))
            .collect::<Result<_, _>>()?;
        let n = appends / in_flight;
        workers.push(tokio::spawn(async move {
            let mut heads = vec![Head::default(); mine.len()];
            let mut lat = Vec::with_capacity(n);
            for i in 0..n {
                let k = i % mine.len().max(1);
                let t = Instant::now();
                heads[k] = bp.append(&mine[k], heads[k], body.clone()).await?;
                lat.push(t.elapsed());
            }
            Ok::<_, presence_hub::cluster::ClusterError>(lat)
        }));
    }
    let mut lat = Vec::new();
    for w in workers {
        lat.extend(w.await??);
    }
    let wall = t0.elapsed();
    let cpu = cpu_seconds() - cpu0;
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "appends: {} over {agents} agents, {in_flight} in flight: {:.0}/s, ack latency p50 {:?} p99 {:?}, CPU {:.1} us/append (this process)",
        lat.len(),
        lat.len() as f64 / wall.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        cpu * 1e6 / lat.len() as f64
    );

    // Following: what every node pays to apply every change.
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut follower = bp.follow(0);
    let mut seen = 0;
    while seen < lat.len() {
        match follower.recv().await {
            Some(Followed::Change(_)) => seen += 1,
            Some(other) => anyhow::bail!("unexpected {other:?}"),
            None => anyhow::bail!("follower ended"),
        }
    }
    println!(
        "followed {seen} changes: {:.0}/s, CPU {:.1} us/change (this process)",
        seen as f64 / t0.elapsed().as_secs_f64(),
        (cpu_seconds() - cpu0) * 1e6 / seen as f64
    );
    Ok(())
}
