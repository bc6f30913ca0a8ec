//! Creates (or updates to the configured settings) the stream and buckets of the backplane.
//! Every node does this when it connects; JetStream makes the calls idempotent, so nodes
//! starting together need no coordination.

use super::{ClusterConfig, ClusterError};
use async_nats::jetstream::{self, kv, stream};
use std::time::Duration;

/// The stream and buckets, ready to use.
pub(crate) struct Handles {
    /// The agents stream (for reads of an agent's last change).
    pub agents: stream::Stream,
    /// Telephony event ids.
    pub dedup: kv::Store,
    /// Agents and ring groups.
    pub directory: kv::Store,
    /// Live members.
    pub members: kv::Store,
}

/// How long JetStream keeps a message id for its own publish deduplication. The hub does not
/// rely on it (see `agents.rs`); it is the stream default, stated here so it is visible.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Creates the stream and buckets, or updates them to `cfg` (e.g. a new replica count).
pub(crate) async fn ensure(
    js: &jetstream::Context,
    cfg: &ClusterConfig,
) -> Result<(), ClusterError> {
    let n = &cfg.names;
    js.create_or_update_stream(stream::Config {
        name: n.agents_stream(),
        description: Some("presence-hub: agent state changes, one subject per agent".into()),
        subjects: vec![n.agents_subjects()],
        storage: stream::StorageType::File,
        num_replicas: cfg.replicas,
        duplicate_window: DUPLICATE_WINDOW,
        max_age: cfg.history_max_age,
        // Reads of an agent's last change go through the stream leader (see agents.rs);
        // direct gets stay allowed for tools.
        allow_direct: true,
        deny_delete: true,
        ..Default::default()
    })
    .await
    .map_err(ClusterError::unavailable)?;
    bucket(
        js,
        kv::Config {
            bucket: n.dedup_bucket(),
            description: "presence-hub: telephony event ids answered (create-only)".into(),
            history: 1,
            max_age: cfg.dedup_ttl,
            storage: jetstream::stream::StorageType::File,
            num_replicas: cfg.replicas,
            ..Default::default()
        },
    )
    .await?;
    bucket(
        js,
        kv::Config {
            bucket: n.directory_bucket(),
            description: "presence-hub: agents and ring groups".into(),
            history: 5,
            storage: jetstream::stream::StorageType::File,
            num_replicas: cfg.replicas,
            ..Default::default()
        },
    )
    .await?;
    bucket(
        js,
        kv::Config {
            bucket: n.members_bucket(),
            description: "presence-hub: live nodes, one key each, kept by heartbeats".into(),
            history: 1,
            max_age: cfg.member_ttl,
            // Heartbeats are worthless after a restart of NATS: every live node writes its
            // key again within one heartbeat.
            storage: jetstream::stream::StorageType::Memory,
            num_replicas: cfg.replicas,
            ..Default::default()
        },
    )
    .await?;
    Ok(())
}

/// Handles on the stream and buckets bound to `js` (whose timeout their calls then use).
pub(crate) async fn handles(
    js: &jetstream::Context,
    cfg: &ClusterConfig,
) -> Result<Handles, ClusterError> {
    let n = &cfg.names;
    let kv = |name: String| async move {
        js.get_key_value(name)
            .await
            .map_err(ClusterError::unavailable)
    };
    Ok(Handles {
        agents: js
            .get_stream(n.agents_stream())
            .await
            .map_err(ClusterError::unavailable)?,
        dedup: kv(n.dedup_bucket()).await?,
        directory: kv(n.directory_bucket()).await?,
        members: kv(n.members_bucket()).await?,
    })
}

async fn bucket(js: &jetstream::Context, config: kv::Config) -> Result<(), ClusterError> {
    js.create_or_update_key_value(config)
        .await
        .map(|_| ())
        .map_err(ClusterError::unavailable)
}
