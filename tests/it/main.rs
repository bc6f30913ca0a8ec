//! The integration tests: one test crate (one binary to link) whose modules share one
//! harness, `tests/common` (the hub on 127.0.0.1:0, protocol clients, tokens, child hub
//! processes, NATS servers), and the status-row rig.
//!
//! Every test here shares this process with the others, so none may depend on
//! process-wide state: no environment variable is set in this process, the tracing
//! subscriber of `log_hygiene` is scoped to its thread, and the tests that need the
//! environment or read the process's own memory or descriptors (`churn`, `bounded_actors`,
//! `frame_limits`, the limits from the environment) are `#[ignore]`d and run by a twin test
//! alone in a child process of this binary (`common::process::run_alone`): `cargo test`
//! lists them as ignored and runs them through their twins.

// Tests: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

#[path = "../common/mod.rs"]
mod common;
mod rig;

mod abuse;
mod admin_fanout;
mod auth_and_input;
mod bounded_actors;
mod churn;
mod cluster_backplane;
mod cluster_dir;
mod cluster_failover;
mod cluster_failures;
mod cluster_faults;
mod cluster_flags;
mod cluster_node;
mod cluster_outage;
mod cluster_reports;
mod cluster_route;
mod cluster_write;
mod decode_props;
mod directory_api;
mod durable_restart;
mod frame_limits;
mod hub_smoke;
mod idle_actors;
mod log_hygiene;
mod node_identity;
mod reports_api;
mod startup;
mod status_rows;
mod telephony_events;
mod telephony_phone_side;
mod topology;
mod ws_layer;
