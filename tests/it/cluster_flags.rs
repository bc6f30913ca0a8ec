//! The real binary with the cluster flags: `--nats` says loudly at startup that cluster
//! mode is a preview which keeps agent state locally; without `--nats` it says nothing of
//! the kind; a bad cluster flag stops the start with a one-line error.

use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_presence-hub");

/// Starts the binary, reads its log until the "listening" line, kills it and returns the
/// log so far.
async fn startup_log(extra: &[&str], env: &[(&str, &str)]) -> String {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--database", ":memory:"])
        .args(extra)
        .env("RUST_LOG", "info")
        .env_remove("PRESENCE_HUB_NATS")
        .env_remove("PRESENCE_HUB_NODE_ID")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the hub binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut log = String::new();
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            log.push_str(&line);
            log.push('\n');
            if line.contains("presence-hub listening") {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the hub logs that it listens");
    child.kill().await.unwrap();
    log
}

fn dead_nats_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("nats://{}", l.local_addr().unwrap())
}

#[tokio::test]
async fn nats_mode_says_at_startup_that_the_node_runs_in_cluster_mode() {
    let log = startup_log(&["--nats", &dead_nats_url(), "--node-id", "n1"], &[]).await;
    assert!(log.contains("CLUSTER MODE: changes are stored"), "{log}");
    assert!(log.contains("docs/cluster.md, Status"), "{log}");
    assert!(log.contains("node=n1"), "{log}");
    let log = startup_log(&["--node-id", "n1"], &[]).await;
    assert!(
        !log.contains("CLUSTER MODE"),
        "single node: no cluster line\n{log}"
    );
    // The same through the environment.
    let url = dead_nats_url();
    let env = [
        ("PRESENCE_HUB_NATS", url.as_str()),
        ("PRESENCE_HUB_NODE_ID", "envnode"),
    ];
    let log = startup_log(&[], &env).await;
    assert!(log.contains("CLUSTER MODE: changes are stored"), "{log}");
    assert!(log.contains("node=envnode"), "{log}");
}

#[tokio::test]
async fn a_bad_cluster_flag_stops_the_start_with_one_line() {
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--database", ":memory:"])
        .args(["--nats", "nats://127.0.0.1:4222", "--nats-replicas", "9"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--nats-replicas must be 1..=5"), "{err}");
}
