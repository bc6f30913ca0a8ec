//! Measures the floor under issue 13's idle-memory goal (1 KiB of hub RSS per idle agent):
//! what N idle TCP sockets cost a tokio process that gives each one task doing nothing but
//! awaiting readability, with nothing else per socket (no WebSocket, no state, no maps).
//! With `--with-actor`, each socket gets a second task that only awaits a bounded tokio
//! `mpsc` channel (the shape of "a socket task beside an actor task with a mailbox").
//! Same allocator as the hub (jemalloc). The clients run in a child process so only the
//! server side is counted. Not a test: figures depend on the machine (BENCHMARKS.md).
//!
//! `cargo run --release --example tokio_socket_floor -- [sockets] [--with-actor]`
//! (sockets up to about RLIMIT_NOFILE - 100; default 10,000)

// A measurement tool: a failed step ends it with a panic naming the step.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Waits until the peer closes; reads nothing else (the clients never write).
async fn idle(stream: TcpStream) {
    let mut byte = [0u8; 1];
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        match stream.try_read(&mut byte) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--client") {
        // Child: opens the sockets, holds them, closes them when the parent's pipe closes.
        let addr: std::net::SocketAddr = args[1].parse().expect("client address");
        let n: usize = args[2].parse().expect("client count");
        let mut held = Vec::with_capacity(n);
        for _ in 0..n {
            held.push(TcpStream::connect(addr).await.expect("connect"));
        }
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        return;
    }
    let n: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(10_000);
    let with_actor = args.iter().any(|a| a == "--with-actor");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    let mut child = std::process::Command::new(std::env::current_exe().expect("current exe"))
        .args(["--client", &addr.to_string(), &n.to_string()])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the clients");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kib();
    for _ in 0..n {
        let (stream, _) = listener.accept().await.expect("accept");
        if with_actor {
            let (mailbox, mut inbox) = tokio::sync::mpsc::channel::<u64>(8);
            tokio::spawn(async move { while inbox.recv().await.is_some() {} });
            tokio::spawn(async move {
                let _mailbox = mailbox;
                idle(stream).await;
            });
        } else {
            tokio::spawn(idle(stream));
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib();
    let tasks = if with_actor { 2 } else { 1 };
    println!(
        "{n} idle sockets, {tasks} task(s) each: {} bytes of RSS per socket",
        after.saturating_sub(before) * 1024 / n as u64
    );
    drop(child.stdin.take());
    let _ = child.wait();
}
