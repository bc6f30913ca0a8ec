//! The `presence-hub` binary: configuration, tracing, bind, signals. Everything else is in
//! the library.
//!
//! The log goes to stdout, coloured only when stdout is a terminal. A startup error (bad
//! configuration, port in use, unusable database, no secret off loopback) is printed once
//! to stderr as one line, without a backtrace whatever `RUST_BACKTRACE` says, and the exit
//! code is 1 (2 for a command-line error, from clap).

use anyhow::Context;
use clap::Parser;
use presence_hub::Cli;
use std::io::IsTerminal;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// jemalloc instead of glibc's malloc: glibc's allocator was ~9 % of the hub's CPU under
/// the ack-driven fan-out (`_int_malloc`, `malloc_consolidate`, `unlink_chunk`) and left
/// free chunks between live ones after a login burst. Same-minutes A/B on this box
/// (BENCHMARKS.md "Allocator"): 35.7 -> 28.1 µs of hub CPU per change at 1 admin, 46.4 ->
/// 42.5 at 50 admins, 3,215 -> 3,004 B of RSS per idle agent at 10,000. mimalloc was tried
/// too: 4-5 % less CPU, but 3,815-4,624 B per idle agent.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    match start().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("presence-hub: error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each said once: an error whose message already
/// quotes its cause does not get the cause appended again.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

async fn start() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    let cli = Cli::parse();
    let settings = cli.settings().context("invalid configuration")?;
    let listener = bind(cli.listen).with_context(|| format!("cannot listen on {}", cli.listen))?;
    presence_hub::run(listener, settings, shutdown_signal()).await?;
    Ok(())
}

/// Binds with a deep accept backlog: a login burst must not overflow the kernel's accept
/// queue (the default of 128 sends clients into 1 s SYN retries).
fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    const BACKLOG: u32 = 4096;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}
