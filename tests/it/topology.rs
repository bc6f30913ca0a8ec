//! Where a row test's sockets sit: one hub (the single node), or a three-node cluster on one
//! NATS server, every node in this process (so tokio's paused clock drives all three).
//!
//! In the cluster the agent's tabs open on nodes A and B in turn, telephony sits on B and
//! the admin on C, so every row crosses nodes: a change made on one node is acknowledged
//! there, applied by the agent's owner (any of the three) and seen on the others.
//! [`both_topologies!`] turns one row test body into a test per topology, so no row is
//! written twice.

use crate::common::nats::{self, NatsServer};
use crate::common::{TestHub, PATIENCE};
use presence_hub::cluster::NodeId;
use presence_hub::config::ClusterSettings;
use presence_hub::Settings;
use serde_json::Value;
use std::time::Duration;

/// One node, or three on one NATS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// The single node with its embedded store.
    Single,
    /// Three nodes (`node-a`, `node-b`, `node-c`) on one NATS server.
    Cluster,
}

/// Heartbeat of the rig's cluster nodes (a tokio timer: it ticks only as paused time is
/// advanced, which the row tests do).
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Member TTL of the rig's cluster nodes. A member key ages on NATS's real clock while the
/// heartbeat that renews it waits for paused time, so a rig's nodes must not expire while
/// a test runs; nodes leave by deleting their key when they stop.
const MEMBER_TTL: Duration = Duration::from_secs(3600);

/// Append acknowledgement timeout and NATS ping interval of the rig's nodes: tokio timers
/// too, while the acknowledgement and the pong come in real time. A timer test moves paused
/// time by up to minutes at once; with the defaults (1.5 s, 1 s) that would time out an
/// append or a ping whose answer is on its way. The outage tests (`cluster_faults`,
/// `cluster_node`) run in real time with the defaults.
const PATIENT: Duration = Duration::from_secs(24 * 3600);

/// How far paused time moves per real wait of the same length while nodes connect.
const REAL_STEP: Duration = Duration::from_millis(20);

/// The nodes of a rig.
pub struct Nodes {
    /// The single node, or nodes A, B, C.
    pub hubs: Vec<TestHub>,
    /// The NATS server of a cluster (stopped after the hubs).
    nats: Option<NatsServer>,
}

/// True (after a loud message, see [`nats::binary`]) when a cluster test must skip: no
/// nats-server on this machine (outside CI).
pub fn cluster_skipped() -> bool {
    nats::binary().is_none()
}

/// Waits `d` of real time without moving tokio's clock and without blocking the runtime
/// (the hubs' sockets keep being served meanwhile), paused or not.
pub async fn real_wait(d: Duration) {
    let _ = tokio::task::spawn_blocking(move || std::thread::sleep(d)).await;
}

/// True while tokio's clock is paused: it does not move while real time passes.
fn time_is_paused() -> bool {
    let before = tokio::time::Instant::now();
    std::thread::sleep(Duration::from_millis(2));
    tokio::time::Instant::now() == before
}

impl Nodes {
    /// Starts the nodes of `topology`, each with `settings` (the cluster's nodes add their
    /// node id and cluster settings), and for a cluster waits until every node is ready and
    /// sees all three members.
    pub async fn start(topology: Topology, settings: Settings) -> Nodes {
        match topology {
            Topology::Single => Nodes {
                hubs: vec![TestHub::with(settings).await],
                nats: None,
            },
            Topology::Cluster => {
                let nats = NatsServer::start()
                    .await
                    .expect("nats-server (the caller checks cluster_skipped first)");
                let mut hubs = Vec::new();
                for name in ["node-a", "node-b", "node-c"] {
                    let node = Settings {
                        node_id: Some(NodeId::parse(name).expect("node id")),
                        cluster: Some(ClusterSettings {
                            prefix: "rig".into(),
                            heartbeat: Some(HEARTBEAT),
                            member_ttl: Some(MEMBER_TTL),
                            ack_timeout: Some(PATIENT),
                            nats_ping_interval: Some(PATIENT),
                            ..ClusterSettings::new(vec![nats.url()])
                        }),
                        ..settings.clone()
                    };
                    hubs.push(TestHub::with(node).await);
                }
                let nodes = Nodes {
                    hubs,
                    nats: Some(nats),
                };
                nodes.settle().await;
                nodes
            }
        }
    }

    /// Waits until every node is ready, sees every node as a member and serves reads.
    /// Paused time moves as real time would: while nodes connect (their connect, setup and
    /// retry backoff run on tokio timers, against real NATS I/O) no faster than real time,
    /// then a quarter heartbeat at a time, so that the heartbeats list the members again and
    /// the polls that wait for the connection see it.
    async fn settle(&self) {
        let want: Vec<String> = ["node-a", "node-b", "node-c"].map(String::from).to_vec();
        let paused = time_is_paused();
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let (mut connected, mut settled) = (true, true);
            for hub in &self.hubs {
                let (status, body) = hub.get("/healthz").await;
                let members: Vec<String> = body["members"]
                    .as_array()
                    .map(|m| {
                        m.iter()
                            .filter_map(|n| n.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                // Connected but not in its own view yet: its next heartbeat will list it.
                let joining = body["reason"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("joining"));
                connected &= status == 200 || joining;
                settled &=
                    status == 200 && members == want && hub.get("/api/v1/agents").await.0 == 200;
                assert!(
                    std::time::Instant::now() < deadline,
                    "the rig's cluster did not settle: {status} {body}"
                );
            }
            if settled {
                break;
            }
            if paused {
                // Never faster than real time: no connect or setup timeout fires earlier
                // than it would in real time.
                let step = if connected { HEARTBEAT / 4 } else { REAL_STEP };
                tokio::time::advance(step).await;
            }
            real_wait(REAL_STEP).await;
        }
        // Then two heartbeats more of the nodes' time, as real time would pass: whatever
        // else a node starts with a poll or a pause (its forward listener, takeovers) gets
        // there before the test's first command.
        if paused {
            for _ in 0..8 {
                tokio::time::advance(HEARTBEAT / 4).await;
                real_wait(REAL_STEP).await;
            }
        }
    }

    /// The node for the agent's `n`-th tab (0-based, counting every tab ever opened):
    /// A, B, A, B... in a cluster.
    pub fn tab_node(&self, n: usize) -> &TestHub {
        &self.hubs[n % self.hubs.len().min(2)]
    }

    /// The telephony adapter's node: B in a cluster.
    pub fn telephony_node(&self) -> &TestHub {
        &self.hubs[1 % self.hubs.len()]
    }

    /// The admin's node: C in a cluster.
    pub fn admin_node(&self) -> &TestHub {
        &self.hubs[self.hubs.len() - 1]
    }

    /// `GET path` on every node.
    pub async fn get_all(&self, path: &str) -> Vec<(u16, Value)> {
        let mut out = Vec::new();
        for hub in &self.hubs {
            out.push(hub.get(path).await);
        }
        out
    }

    /// Stops every node (as SIGTERM would), then the NATS server. On a paused clock, time
    /// moves as real time would meanwhile: a cluster node's clean stop waits for its tabs'
    /// detaches and its leave on tokio timers.
    pub async fn stop(self) {
        let paused = self.nats.is_some() && time_is_paused();
        let stops = futures::future::join_all(self.hubs.into_iter().map(TestHub::stop));
        if paused {
            tokio::pin!(stops);
            loop {
                tokio::select! {
                    _ = &mut stops => break,
                    () = real_wait(REAL_STEP) => tokio::time::advance(REAL_STEP).await,
                }
            }
        } else {
            stops.await;
        }
        drop(self.nats);
    }
}

/// One row test body `async fn name(topology: Topology)` becomes module `name` with the
/// tests `single` and `cluster` (skipped with a loud message where no nats-server is
/// installed, outside CI), each with the given test attribute:
///
/// ```ignore
/// async fn row_02_another_tab_only_adds_a_connection(topology: Topology) { ... }
/// both_topologies!(#[tokio::test] row_02_another_tab_only_adds_a_connection);
/// ```
macro_rules! both_topologies {
    ($(#[$test:meta])* $name:ident) => {
        mod $name {
            $(#[$test])*
            async fn single() {
                super::$name($crate::topology::Topology::Single).await;
            }
            $(#[$test])*
            async fn cluster() {
                if $crate::topology::cluster_skipped() {
                    return;
                }
                super::$name($crate::topology::Topology::Cluster).await;
            }
        }
    };
}
pub(crate) use both_topologies;
