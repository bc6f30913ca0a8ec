//! The node's identity in single-node mode: `--node-id` (and its default), `hello.node` on
//! every socket, and `/healthz` as JSON (docs/protocol.md, "Nodes and health").

use crate::common::{settings, TestHub};
use clap::Parser;
use presence_hub::cluster::NodeId;
use presence_hub::Cli;

fn named(node: &str) -> presence_hub::Settings {
    presence_hub::Settings {
        node_id: Some(NodeId::parse(node).expect("valid id")),
        ..settings()
    }
}

#[tokio::test]
async fn every_hello_names_the_node() {
    let hub = TestHub::with(named("n-7.test")).await;
    let (_agent, hello) = hub.agent("a1").await;
    assert_eq!(hello["node"], "n-7.test", "{hello}");
    assert_eq!(hello["role"], "agent");
    let mut admin = crate::common::Client::connect(&hub.ws_url("/ws/admin?admin_id=boss")).await;
    let hello = admin.recv().await;
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["node"], "n-7.test", "{hello}");
    let mut phone = crate::common::Client::connect(&hub.ws_url("/ws/telephony?adapter=pbx")).await;
    let hello = phone.recv().await;
    assert_eq!(hello["node"], "n-7.test", "{hello}");
    hub.stop().await;
}

#[tokio::test]
async fn healthz_answers_json_with_node_mode_and_readiness() {
    let hub = TestHub::with(named("solo")).await;
    let (_agent, hello) = hub.agent("a1").await;
    let (status, body) = hub.get("/healthz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["node"], "solo");
    assert_eq!(body["mode"], "single");
    assert_eq!(body["ready"], true);
    assert!(body["reason"].is_null(), "{body}");
    assert_eq!(body["members"], serde_json::json!(["solo"]));
    // The keys clients used before stay.
    assert_eq!(body["status"], "ok");
    assert_eq!(body["epoch"], hello["epoch"]);
    let text = crate::common::metrics(&hub).await;
    assert!(
        !text.contains("presence_hub_cluster_"),
        "single node: no cluster gauges"
    );
    hub.stop().await;
}

#[tokio::test]
async fn the_default_node_id_is_the_host_name_and_the_port() {
    let hub = TestHub::start().await;
    let (_agent, hello) = hub.agent("a1").await;
    let node = hello["node"].as_str().expect("node is a string").to_owned();
    let port = hub.addr.port();
    assert!(
        node.ends_with(&format!("-{port}")),
        "{node} ends with the port {port}"
    );
    assert!(
        node.len() > format!("-{port}").len(),
        "{node} starts with a host name"
    );
    assert!(NodeId::parse(&node).is_ok(), "{node} is a valid node id");
    let (_, body) = hub.get("/healthz").await;
    assert_eq!(body["node"], node.as_str());
    hub.stop().await;
}

#[test]
fn the_node_id_flag_is_checked() {
    let cli = Cli::try_parse_from(["presence-hub", "--node-id", "hub-a"]).expect("parses");
    let s = cli.settings().expect("valid");
    assert_eq!(s.node_id.as_ref().map(NodeId::as_str), Some("hub-a"));
    assert!(s.cluster.is_none(), "no --nats: single node");
    let cli = Cli::try_parse_from(["presence-hub", "--node-id", "has space"]).expect("parses");
    let e = cli.settings().expect_err("refused");
    assert!(e.to_string().contains("--node-id"), "{e}");
    let cli = Cli::try_parse_from(["presence-hub"]).expect("parses");
    assert!(cli.settings().expect("valid").node_id.is_none());
}
