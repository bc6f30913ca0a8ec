//! The integration tests: one test crate (one binary to link) whose modules share one
//! harness, `tests/common` (the hub on 127.0.0.1:0, protocol clients, tokens, child hub
//! processes, NATS servers), and the status-row rig.
//!
//! Every test here shares this process with the others, so none may depend on
//! process-wide state: no environment variable is set in this process (a test that needs
//! one runs a child process), the tracing subscriber of `log_hygiene` is scoped to its
//! thread, and the tests that measure the process's own memory or descriptors run in their
//! own targets (`tests/churn.rs`, `tests/bounded_actors.rs`, `tests/frame_limits.rs`),
//! where nothing else runs beside them.

// Tests: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

#[path = "../common/mod.rs"]
mod common;
mod rig;

mod abuse;
mod admin_fanout;
mod auth_and_input;
mod cluster_backplane;
mod cluster_failures;
mod decode_props;
mod directory_api;
mod durable_restart;
mod hub_smoke;
mod idle_actors;
mod log_hygiene;
mod reports_api;
mod startup;
mod status_rows;
mod telephony_events;
mod telephony_phone_side;
mod ws_layer;
