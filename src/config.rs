//! Hub settings: command-line flags and `PRESENCE_HUB_*` environment variables (clap),
//! turned into the [`Settings`] the library runs with.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cluster::{InvalidName, Names, NodeId};
use crate::directory::{Directory, DirectoryError, MAX_RING_TIMEOUT_SECONDS, MAX_WRAP_UP_SECONDS};
use crate::store::Durability;

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The directory file cannot be used.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// `--node-id` or `--nats-prefix` is not a valid name.
    #[error(transparent)]
    Name(#[from] InvalidName),
    /// A cluster flag is out of range or given without `--nats`.
    #[error("{0}")]
    Cluster(String),
}

/// Command line of the `presence-hub` binary. Every flag also reads an environment variable.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "presence-hub",
    version,
    about = "Real-time presence hub for contact centers"
)]
pub struct Cli {
    /// Address to listen on (HTTP API, WebSockets and web demo on one port).
    #[arg(long, env = "PRESENCE_HUB_LISTEN", default_value = "127.0.0.1:7400")]
    pub listen: SocketAddr,
    /// Serve `GET /metrics` on this separate address (e.g. 127.0.0.1:9400) instead of the
    /// main port, which then answers 404 for it: the metrics stay off a published port.
    #[arg(long, env = "PRESENCE_HUB_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// HS256 secret for JWTs. Without it the hub runs in dev mode (loopback only).
    #[arg(long, env = "PRESENCE_HUB_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// The previous HS256 secret, still accepted for verification while tokens signed with
    /// it are in circulation (secret rotation; see SECURITY.md).
    #[arg(long, env = "PRESENCE_HUB_JWT_SECRET_PREVIOUS", hide_env_values = true)]
    pub jwt_secret_previous: Option<String>,
    /// Allowed browser origins, comma separated (exact match). Empty: same origin only.
    #[arg(long, env = "PRESENCE_HUB_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Default ring timeout when neither the offer nor its ring group sets one (1..=3600,
    /// the range of a ring group's timeout).
    #[arg(
        long,
        env = "PRESENCE_HUB_RING_TIMEOUT_SECS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..=MAX_RING_TIMEOUT_SECONDS)
    )]
    pub ring_timeout_secs: u64,
    /// Default wrap-up after a call (0 = none) when the directory sets none for the agent
    /// (0..=86400, the range of a directory entry's).
    #[arg(
        long,
        env = "PRESENCE_HUB_WRAP_UP_SECS",
        default_value_t = 0,
        value_parser = clap::value_parser!(u64).range(0..=MAX_WRAP_UP_SECONDS)
    )]
    pub wrap_up_secs: u64,
    /// How long an agent whose last socket closed stays logged in.
    #[arg(long, env = "PRESENCE_HUB_DISCONNECT_GRACE_SECS", default_value_t = 15)]
    pub disconnect_grace_secs: u64,
    /// Missed rings in a row after which the agent is set busy (0 = never).
    #[arg(long, env = "PRESENCE_HUB_MAX_MISSED_IN_ROW", default_value_t = 0)]
    pub max_missed_in_row: u32,
    /// How long an agent actor with no tab, call or timer stays in memory after its last
    /// activity; its state stays in the database and is loaded again when needed.
    #[arg(long, env = "PRESENCE_HUB_ACTOR_IDLE_SECS", default_value_t = 300)]
    pub actor_idle_secs: u64,
    /// Page cache of the database's write connection, MiB (read connections: at most 2).
    #[arg(long, env = "PRESENCE_HUB_STORE_CACHE_MIB", default_value_t = 32)]
    pub store_cache_mib: u32,
    /// Recent updates kept in memory for admin `resume`.
    #[arg(long, env = "PRESENCE_HUB_HISTORY_SIZE", default_value_t = 100_000)]
    pub history_size: usize,
    /// Per-socket outgoing queue bound in bytes; a socket past it is closed with 4008.
    #[arg(long, env = "PRESENCE_HUB_QUEUE_BYTES", default_value_t = 1 << 20)]
    pub queue_bytes: usize,
    /// TOML file with the agent directory and ring groups. First start only: it seeds an
    /// empty database; afterwards the database's directory (edited with the directory API)
    /// is used and a file that differs from it is ignored with a warning.
    #[arg(long, env = "PRESENCE_HUB_DIRECTORY")]
    pub directory: Option<PathBuf>,
    /// Telephony event ids remembered for deduplication (memory bound).
    #[arg(
        long,
        env = "PRESENCE_HUB_EVENT_ID_CAPACITY",
        default_value_t = 262_144
    )]
    pub event_id_capacity: usize,
    /// How long a telephony event id is remembered.
    #[arg(long, env = "PRESENCE_HUB_EVENT_ID_TTL_SECS", default_value_t = 4 * 3600)]
    pub event_id_ttl_secs: u64,
    /// Interval between WebSocket pings.
    #[arg(long, env = "PRESENCE_HUB_PING_INTERVAL_SECS", default_value_t = 25)]
    pub ping_interval_secs: u64,
    /// How long a pinged socket may take to answer before it is closed as dead.
    #[arg(long, env = "PRESENCE_HUB_PONG_TIMEOUT_SECS", default_value_t = 10)]
    pub pong_timeout_secs: u64,
    /// How long shutdown waits for sockets and tasks to drain.
    #[arg(long, env = "PRESENCE_HUB_SHUTDOWN_TIMEOUT_SECS", default_value_t = 10)]
    pub shutdown_timeout_secs: u64,
    /// Largest accepted WebSocket message, in bytes; bigger ones close the socket with 1009.
    #[arg(long, env = "PRESENCE_HUB_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,
    /// Largest accepted WebSocket frame, in bytes: checked on the frame header, before any
    /// of its payload is read or buffered (close 1009).
    #[arg(long, env = "PRESENCE_HUB_MAX_FRAME_BYTES", default_value_t = 64 * 1024)]
    pub max_frame_bytes: usize,
    /// Bytes read from a socket at once, into a per-thread scratch buffer: an idle socket
    /// holds no read buffer at all, whatever this is.
    #[arg(long, env = "PRESENCE_HUB_READ_BUFFER_BYTES", default_value_t = 4096)]
    pub read_buffer_bytes: usize,
    /// Bytes of frames gathered into one write (a busy wallboard's batch goes out in one
    /// write), in a per-thread scratch buffer: an idle socket holds no write buffer.
    #[arg(long, env = "PRESENCE_HUB_WRITE_BUFFER_BYTES", default_value_t = 65536)]
    pub write_buffer_bytes: usize,
    /// The largest single frame the hub sends (an admin snapshot is ~250 bytes per agent);
    /// a larger snapshot ends its socket with a warning. See SECURITY.md.
    #[arg(long, env = "PRESENCE_HUB_MAX_WRITE_BUFFER_BYTES", default_value_t = 64 << 20)]
    pub max_write_buffer_bytes: usize,
    /// Time a client has to send its complete HTTP request head (the WebSocket upgrade
    /// included); slower connections are closed (slowloris).
    #[arg(
        long,
        env = "PRESENCE_HUB_HANDSHAKE_TIMEOUT_SECS",
        default_value_t = 10
    )]
    pub handshake_timeout_secs: u64,
    /// Open TCP connections at most (sockets and HTTP); beyond it the hub answers 503.
    #[arg(long, env = "PRESENCE_HUB_MAX_CONNECTIONS", default_value_t = 200_000)]
    pub max_connections: usize,
    /// Messages per second one agent socket may send (token bucket; 0 = no limit).
    #[arg(long, env = "PRESENCE_HUB_AGENT_RATE", default_value_t = 50)]
    pub agent_rate: u32,
    /// Burst of one agent socket (bucket size).
    #[arg(long, env = "PRESENCE_HUB_AGENT_BURST", default_value_t = 100)]
    pub agent_burst: u32,
    /// Messages per second one admin socket may send (0 = no limit).
    #[arg(long, env = "PRESENCE_HUB_ADMIN_RATE", default_value_t = 200)]
    pub admin_rate: u32,
    /// Burst of one admin socket.
    #[arg(long, env = "PRESENCE_HUB_ADMIN_BURST", default_value_t = 400)]
    pub admin_burst: u32,
    /// Messages per second one telephony socket may send (0 = no limit).
    #[arg(long, env = "PRESENCE_HUB_TELEPHONY_RATE", default_value_t = 200_000)]
    pub telephony_rate: u32,
    /// Burst of one telephony socket.
    #[arg(long, env = "PRESENCE_HUB_TELEPHONY_BURST", default_value_t = 200_000)]
    pub telephony_burst: u32,
    /// Requests per second to `POST /api/v1/telephony/events`, all clients together
    /// (0 = no limit); beyond it: 429 `rate_limited`.
    #[arg(
        long,
        env = "PRESENCE_HUB_HTTP_TELEPHONY_RATE",
        default_value_t = 20_000
    )]
    pub http_telephony_rate: u32,
    /// Burst of the HTTP telephony endpoint.
    #[arg(
        long,
        env = "PRESENCE_HUB_HTTP_TELEPHONY_BURST",
        default_value_t = 40_000
    )]
    pub http_telephony_burst: u32,
    /// Rate-limited messages a socket may send within the window before it is closed
    /// with 1008.
    #[arg(long, env = "PRESENCE_HUB_RATE_LIMIT_STRIKES", default_value_t = 50)]
    pub rate_limit_strikes: u32,
    /// The window of `--rate-limit-strikes`.
    #[arg(
        long,
        env = "PRESENCE_HUB_RATE_LIMIT_WINDOW_SECS",
        default_value_t = 10
    )]
    pub rate_limit_window_secs: u64,
    /// Serve the web demo from this directory instead of the copy built into the binary.
    #[arg(long, env = "PRESENCE_HUB_WEB_DIR")]
    pub web_dir: Option<PathBuf>,
    /// The SQLite database holding agent states, history, event ids and the directory
    /// (`:memory:` keeps nothing after the process ends; for tests). In cluster mode the
    /// agents' states and history in it are a cache the node rebuilds from the agents
    /// stream (for its reports); losing it loses nothing.
    #[arg(long, env = "PRESENCE_HUB_DATABASE", default_value = "presence-hub.db")]
    pub database: PathBuf,
    /// When a status change is acknowledged: `commit` (after it is committed to disk) or
    /// `async` (at once; committed within ~50 ms). See docs/durability.md.
    #[arg(
        long,
        env = "PRESENCE_HUB_DURABILITY",
        value_enum,
        default_value_t = DurabilityArg::Commit
    )]
    pub durability: DurabilityArg,
    /// Days of status history kept (older rows are pruned hourly).
    #[arg(
        long,
        env = "PRESENCE_HUB_HISTORY_RETENTION_DAYS",
        default_value_t = 90
    )]
    pub history_retention_days: u64,
    /// This node's name (`[A-Za-z0-9._-]`, 1..=64): in `hello`, `/healthz` and, in cluster
    /// mode, the cluster's member list. Default: the host name and the listening port.
    #[arg(long, env = "PRESENCE_HUB_NODE_ID")]
    pub node_id: Option<String>,
    /// Cluster mode (see docs/cluster.md): the NATS server URLs, comma separated.
    /// Without it the hub is the single node with its SQLite store.
    #[arg(long, env = "PRESENCE_HUB_NATS", value_delimiter = ',')]
    pub nats: Vec<String>,
    /// Replicas of every JetStream stream and bucket the hub creates (1..=5; 3 in
    /// production). Cluster mode only.
    #[arg(long, env = "PRESENCE_HUB_NATS_REPLICAS", default_value_t = 1)]
    pub nats_replicas: usize,
    /// Prefix of every stream, bucket and subject the hub uses in NATS, so two clusters
    /// can share one NATS. Cluster mode only.
    #[arg(long, env = "PRESENCE_HUB_NATS_PREFIX", default_value = DEFAULT_NATS_PREFIX)]
    pub nats_prefix: String,
}

/// The default `--nats-prefix`.
pub const DEFAULT_NATS_PREFIX: &str = "presence";

/// Cluster mode's settings (`--nats` and the flags that go with it).
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// NATS server URLs (`--nats`).
    pub servers: Vec<String>,
    /// Replicas of every stream and bucket (`--nats-replicas`).
    pub replicas: usize,
    /// Names in NATS (`--nats-prefix`).
    pub prefix: String,
    /// How often this node renews its member key; `None`: the backplane's default (1 s).
    /// No flag: tests set it (e.g. a node on tokio's paused clock).
    pub heartbeat: Option<Duration>,
    /// A member whose key was not renewed for this long is gone; `None`: the backplane's
    /// default (3 s). No flag: tests whose clock is paused set a long one, since the key's
    /// age runs on NATS's real clock while the heartbeat waits for paused time.
    pub member_ttl: Option<Duration>,
    /// How long an append waits for JetStream's acknowledgement; `None`: the backplane's
    /// default (1.5 s). No flag: tests on tokio's paused clock set a long one, so that moving
    /// paused time never times out an append whose acknowledgement is on its way.
    pub ack_timeout: Option<Duration>,
    /// How often the NATS client pings its server; `None`: the backplane's default (1 s).
    /// No flag: for tests on tokio's paused clock, as `ack_timeout`.
    pub nats_ping_interval: Option<Duration>,
}

impl ClusterSettings {
    /// Cluster mode on `servers` with the defaults of the flags: one replica, prefix
    /// [`DEFAULT_NATS_PREFIX`], the backplane's heartbeat and member TTL.
    pub fn new(servers: Vec<String>) -> Self {
        ClusterSettings {
            servers,
            replicas: 1,
            prefix: DEFAULT_NATS_PREFIX.to_owned(),
            heartbeat: None,
            member_ttl: None,
            ack_timeout: None,
            nats_ping_interval: None,
        }
    }
}

/// `--durability` on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DurabilityArg {
    /// Acknowledge a change after its commit (fsynced): survives kill -9 and power loss.
    Commit,
    /// Acknowledge at once; the change is committed within ~50 ms.
    Async,
}

impl From<DurabilityArg> for Durability {
    fn from(d: DurabilityArg) -> Self {
        match d {
            DurabilityArg::Commit => Durability::Commit,
            DurabilityArg::Async => Durability::Async,
        }
    }
}

/// Everything the hub runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub jwt_secret: Option<String>,
    /// Where `/metrics` is served when not on the main port (`--metrics-listen`).
    pub metrics_listen: Option<SocketAddr>,
    /// A second secret accepted for verification (rotation); ignored without `jwt_secret`.
    pub jwt_secret_previous: Option<String>,
    pub allowed_origins: Vec<String>,
    pub ring_timeout: Duration,
    pub wrap_up: Duration,
    pub disconnect_grace: Duration,
    pub max_missed_in_row: u32,
    /// `--actor-idle-secs`: an actor with nothing to do stops after this.
    pub actor_idle: Duration,
    /// `--store-cache-mib`: the database writer's page cache.
    pub store_cache_mib: u32,
    pub history_size: usize,
    pub queue_bytes: usize,
    pub directory: Directory,
    /// The file `directory` was read from, if any: the hub warns at start when the database
    /// already holds a different directory (the file only seeds the first start).
    pub directory_file: Option<PathBuf>,
    pub event_id_capacity: usize,
    pub event_id_ttl: Duration,
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub max_message_bytes: usize,
    /// Bytes read from a socket at once (the size of the per-thread read scratch; nothing
    /// is kept per idle socket).
    pub read_buffer_bytes: usize,
    /// Bytes of frames gathered into one write (the flush batch); a frame this large or
    /// larger is written straight from its payload.
    pub write_buffer_bytes: usize,
    /// The largest frame the hub sends (a snapshot); not a per-socket memory budget (that
    /// is `queue_bytes`: a socket keeps unsent bytes only while the kernel refuses them,
    /// at most one batch and one item).
    pub max_write_buffer_bytes: usize,
    /// Largest WebSocket frame, checked on its header before the payload is read.
    pub max_frame_bytes: usize,
    /// Time to receive a complete HTTP request head (slowloris defence).
    pub handshake_timeout: Duration,
    /// Open TCP connections at most; over it: 503 before any upgrade.
    pub max_connections: usize,
    /// Per-socket message rate of agent sockets.
    pub agent_rate: RateLimit,
    /// Per-socket message rate of admin sockets.
    pub admin_rate: RateLimit,
    /// Per-socket message rate of telephony sockets.
    pub telephony_rate: RateLimit,
    /// Rate of `POST /api/v1/telephony/events`, all clients together.
    pub http_telephony_rate: RateLimit,
    /// Rate-limited messages within `rate_limit_window` after which a socket is closed
    /// with 1008.
    pub rate_limit_strikes: u32,
    pub rate_limit_window: Duration,
    pub web_dir: Option<PathBuf>,
    /// The SQLite database file; `:memory:` (the default of `Settings`, for tests) keeps
    /// nothing after the process ends. The binary's default is `presence-hub.db`.
    pub database: PathBuf,
    /// When a change is acknowledged (see [`Durability`]). An in-memory database has
    /// nothing to wait for and always acknowledges at once.
    pub durability: Durability,
    /// How long status history is kept.
    pub history_retention: Duration,
    /// This node's name (`--node-id`); `None`: the host name and the listening port,
    /// chosen when the hub starts (see [`default_node_id`]).
    pub node_id: Option<NodeId>,
    /// Cluster mode (`--nats`); `None`: the single node.
    pub cluster: Option<ClusterSettings>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            jwt_secret: None,
            metrics_listen: None,
            allowed_origins: Vec::new(),
            ring_timeout: Duration::from_secs(30),
            wrap_up: Duration::ZERO,
            disconnect_grace: Duration::from_secs(15),
            max_missed_in_row: 0,
            actor_idle: Duration::from_secs(300),
            store_cache_mib: 32,
            history_size: 100_000,
            queue_bytes: 1 << 20,
            directory: Directory::default(),
            directory_file: None,
            event_id_capacity: 262_144,
            event_id_ttl: Duration::from_secs(4 * 3600),
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(10),
            max_message_bytes: 64 * 1024,
            read_buffer_bytes: 4096,
            write_buffer_bytes: 65536,
            max_write_buffer_bytes: 64 << 20,
            max_frame_bytes: 64 * 1024,
            handshake_timeout: Duration::from_secs(10),
            max_connections: 200_000,
            agent_rate: RateLimit::new(50, 100),
            admin_rate: RateLimit::new(200, 400),
            telephony_rate: RateLimit::new(200_000, 200_000),
            http_telephony_rate: RateLimit::new(20_000, 40_000),
            rate_limit_strikes: 50,
            rate_limit_window: Duration::from_secs(10),
            web_dir: None,
            jwt_secret_previous: None,
            database: PathBuf::from(":memory:"),
            durability: Durability::Commit,
            history_retention: Duration::from_secs(90 * 24 * 3600),
            node_id: None,
            cluster: None,
        }
    }
}

/// The default node id: this machine's host name and the port, `host-7400`. Characters a
/// node id does not allow become `-`; the host name is cut so the id fits in 64. The host
/// name is read from `/proc/sys/kernel/hostname` (Linux), else `$HOSTNAME`, else
/// `localhost`: a crate for one file read is not worth a dependency.
pub fn default_node_id(port: u16) -> Result<NodeId, ConfigError> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(58)
        .collect();
    // Non-empty, sanitized and at most 58 + 1 + 5 characters: always a valid id.
    Ok(NodeId::parse(&format!("{host}-{port}"))?)
}

impl Settings {
    /// The per-socket message rate of `role`.
    pub fn rate_limit(&self, role: crate::protocol::Role) -> RateLimit {
        match role {
            crate::protocol::Role::Agent => self.agent_rate,
            crate::protocol::Role::Admin => self.admin_rate,
            crate::protocol::Role::Telephony => self.telephony_rate,
        }
    }
}

/// A token bucket's parameters: `per_sec` tokens flow in each second, up to `burst`.
/// `per_sec == 0` means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_sec: u32,
    pub burst: u32,
}

impl RateLimit {
    pub const fn new(per_sec: u32, burst: u32) -> Self {
        RateLimit { per_sec, burst }
    }

    /// No limit at all.
    pub const UNLIMITED: RateLimit = RateLimit::new(0, 0);

    /// True when this limit never refuses anything.
    pub fn is_unlimited(&self) -> bool {
        self.per_sec == 0
    }
}

impl Cli {
    /// Builds the settings, loading the directory file if one is given.
    // Every field is set today; the update keeps new settings defaulted until they get a flag.
    #[allow(clippy::needless_update)]
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let directory = match &self.directory {
            Some(path) => Directory::load(path)?,
            None => Directory::default(),
        };
        let node_id = self.node_id.as_deref().map(NodeId::parse).transpose()?;
        let cluster = self.cluster_settings()?;
        Ok(Settings {
            jwt_secret: self.jwt_secret.clone().filter(|s| !s.is_empty()),
            metrics_listen: self.metrics_listen,
            allowed_origins: self
                .allowed_origins
                .iter()
                .map(|o| o.trim().to_string())
                .filter(|o| !o.is_empty())
                .collect(),
            // In range: clap refused anything else.
            ring_timeout: Duration::from_secs(self.ring_timeout_secs),
            wrap_up: Duration::from_secs(self.wrap_up_secs),
            disconnect_grace: Duration::from_secs(self.disconnect_grace_secs),
            max_missed_in_row: self.max_missed_in_row,
            actor_idle: Duration::from_secs(self.actor_idle_secs.max(1)),
            store_cache_mib: self.store_cache_mib.max(1),
            history_size: self.history_size,
            queue_bytes: self.queue_bytes.max(4096),
            directory,
            directory_file: self.directory.clone(),
            event_id_capacity: self.event_id_capacity,
            event_id_ttl: Duration::from_secs(self.event_id_ttl_secs),
            ping_interval: Duration::from_secs(self.ping_interval_secs.max(1)),
            pong_timeout: Duration::from_secs(self.pong_timeout_secs.max(1)),
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_secs),
            max_message_bytes: self.max_message_bytes.max(1024),
            max_frame_bytes: self.max_frame_bytes.max(1024),
            read_buffer_bytes: self.read_buffer_bytes.max(256),
            write_buffer_bytes: self.write_buffer_bytes,
            // A frame cap below the write batch makes no sense: raised above it.
            max_write_buffer_bytes: self
                .max_write_buffer_bytes
                .max(self.write_buffer_bytes.saturating_add(64 * 1024)),
            handshake_timeout: Duration::from_secs(self.handshake_timeout_secs.max(1)),
            max_connections: self.max_connections.max(1),
            agent_rate: RateLimit::new(self.agent_rate, self.agent_burst.max(1)),
            admin_rate: RateLimit::new(self.admin_rate, self.admin_burst.max(1)),
            telephony_rate: RateLimit::new(self.telephony_rate, self.telephony_burst.max(1)),
            http_telephony_rate: RateLimit::new(
                self.http_telephony_rate,
                self.http_telephony_burst.max(1),
            ),
            rate_limit_strikes: self.rate_limit_strikes,
            rate_limit_window: Duration::from_secs(self.rate_limit_window_secs.max(1)),
            jwt_secret_previous: self.jwt_secret_previous.clone().filter(|s| !s.is_empty()),
            web_dir: self.web_dir.clone(),
            database: self.database.clone(),
            durability: self.durability.into(),
            history_retention: Duration::from_secs(
                self.history_retention_days.max(1).saturating_mul(24 * 3600),
            ),
            node_id,
            cluster,
            ..Settings::default()
        })
    }

    /// `--nats` and its companions, checked: `None` without `--nats`.
    fn cluster_settings(&self) -> Result<Option<ClusterSettings>, ConfigError> {
        let servers: Vec<String> = self
            .nats
            .iter()
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty())
            .collect();
        if servers.is_empty() {
            return Ok(None);
        }
        if !(1..=5).contains(&self.nats_replicas) {
            return Err(ConfigError::Cluster(format!(
                "--nats-replicas must be 1..=5 (JetStream's limit), got {}",
                self.nats_replicas
            )));
        }
        Names::new(&self.nats_prefix)?;
        Ok(Some(ClusterSettings {
            replicas: self.nats_replicas,
            prefix: self.nats_prefix.clone(),
            ..ClusterSettings::new(servers)
        }))
    }
}
