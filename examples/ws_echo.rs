//! A WebSocket echo server on the hub's own RFC 6455 layer (handshake, frame codec, socket
//! and closing path), for Autobahn|Testsuite's fuzzingclient: `scripts/autobahn.sh` runs it
//! and summarizes the results (see docs/autobahn.md).
//!
//! ```text
//! cargo run --release --example ws_echo -- 127.0.0.1:9001
//! ```
//!
//! Listens on loopback only (the address must be a loopback one) and serves until Ctrl-C.

use anyhow::{bail, Context};
use std::net::SocketAddr;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into())
        .parse()
        .context("usage: ws_echo [127.0.0.1:PORT]")?;
    if !addr.ip().is_loopback() {
        bail!("{addr} is not a loopback address: the echo is for local conformance runs only");
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind {addr}"))?;
    println!("ws_echo listening on ws://{}", listener.local_addr()?);
    tokio::select! {
        served = presence_hub::ws_echo::serve(listener) => served.context("listener")?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
