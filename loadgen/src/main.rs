//! `loadgen`: drives a running presence-hub with real WebSocket clients.
//!
//! Each scenario prints a human table and, last, one line `RESULT {json}` with its figures.
//! The exit code is 0 when the scenario's checks passed (no loss, no disorder, no leak, no
//! failed login), 1 when a check failed, 2 on an error that stopped the run.

mod ack_fanout;
mod churn;
mod clients;
mod common;
mod connections;
mod durability;
mod failover;
mod fanout;
mod snapshot;
mod telephony;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator for presence-hub: prints a table and a final `RESULT {json}` line"
)]
struct Cli {
    /// The hub's address (dev mode: no JWT secret, loopback); for a cluster, every node's,
    /// comma separated or the flag repeated: agents, admins and adapters are each spread
    /// over the nodes round robin; HTTP calls (`/metrics`) go to the first.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1:7400"
    )]
    addr: Vec<SocketAddr>,
    /// The hub's process id, to read its memory (/proc/<pid>/status) and CPU (/proc/<pid>/stat).
    #[arg(long, global = true)]
    hub_pid: Option<u32>,
    /// Client source addresses 127.0.0.2.. used round robin (each gives ~28k ports towards
    /// the hub); 0 = let the kernel choose.
    #[arg(long, global = true, default_value_t = 8)]
    source_ips: u8,
    /// Worker threads of the load generator (default: one per core).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// N agent sockets logged in and idle: login rate and hub memory per connection.
    Connections(connections::ConnectionsArgs),
    /// Agents change status, admins subscribed to all receive every change: deliveries/s,
    /// latency, order and loss.
    Fanout(fanout::FanoutArgs),
    /// Adapter sockets send offer/answer/end cycles: events/s and ack latency.
    Telephony(telephony::TelephonyArgs),
    /// Agents connect and disconnect continuously: logins/s, leaks.
    Churn(churn::ChurnArgs),
    /// Time for an admin to get a snapshot of N agents.
    Snapshot(snapshot::SnapshotArgs),
    /// Agents change status one at a time each, waiting for every `ok`: acknowledged
    /// changes/s and ack latency (run against `--durability commit` and `async`).
    Durability(durability::DurabilityArgs),
    /// Agents change status each as soon as its previous change is acknowledged, admins
    /// subscribed to all check every event: deliveries/s, latency, server CPU per delivery
    /// (protocol subset only: runs against the benchmark peers in bench/competitors too).
    AckFanout(ack_fanout::AckFanoutArgs),
    /// Cluster only: agents change status on the surviving nodes while the load generator
    /// kills one node (`kill -9`): the time until the victim's agents are acknowledged
    /// again.
    Failover(failover::FailoverArgs),
    /// Waits until the hub answers GET /healthz (for scripts).
    WaitReady {
        /// Seconds to wait.
        #[arg(long, default_value_t = 20.0)]
        timeout: f64,
    },
    /// Prints a free TCP port on 127.0.0.1 (for scripts).
    FreePort,
}

fn main() {
    common::init_clock();
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = cli.threads {
        builder.worker_threads(n.max(1));
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("loadgen: error: {e:#}");
            2
        }
    };
    // Open sockets and tasks are dropped with the process; the hub sees them go.
    std::process::exit(code);
}

async fn run(cli: Cli) -> Result<bool> {
    common::raise_nofile();
    let target = Arc::new(common::Target::new(cli.addr, cli.source_ips));
    match cli.command {
        Command::FreePort => {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            println!("{}", listener.local_addr()?.port());
            Ok(true)
        }
        Command::WaitReady { timeout } => {
            target.wait_ready(Duration::from_secs_f64(timeout)).await?;
            Ok(true)
        }
        Command::Connections(args) => connections::run(target, cli.hub_pid, args).await,
        Command::Fanout(args) => fanout::run(target, cli.hub_pid, args).await,
        Command::Telephony(args) => telephony::run(target, cli.hub_pid, args).await,
        Command::Churn(args) => churn::run(target, cli.hub_pid, args).await,
        Command::Snapshot(args) => snapshot::run(target, cli.hub_pid, args).await,
        Command::Durability(args) => durability::run(target, cli.hub_pid, args).await,
        Command::AckFanout(args) => ack_fanout::run(target, cli.hub_pid, args).await,
        Command::Failover(args) => failover::run(target, args).await,
    }
}
