//! Hub settings: command-line flags and `PRESENCE_HUB_*` environment variables (clap),
//! turned into the [`Settings`] the library runs with.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::directory::{Directory, DirectoryError};

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
    /// HS256 secret for JWTs. Without it the hub runs in dev mode (loopback only).
    #[arg(long, env = "PRESENCE_HUB_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Allowed browser origins, comma separated (exact match). Empty: same origin only.
    #[arg(long, env = "PRESENCE_HUB_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Default ring timeout when neither the offer nor its ring group sets one.
    #[arg(long, env = "PRESENCE_HUB_RING_TIMEOUT_SECS", default_value_t = 30)]
    pub ring_timeout_secs: u64,
    /// Default wrap-up after a call (0 = none) when the directory sets none for the agent.
    #[arg(long, env = "PRESENCE_HUB_WRAP_UP_SECS", default_value_t = 0)]
    pub wrap_up_secs: u64,
    /// How long an agent whose last socket closed stays logged in.
    #[arg(long, env = "PRESENCE_HUB_DISCONNECT_GRACE_SECS", default_value_t = 15)]
    pub disconnect_grace_secs: u64,
    /// Missed rings in a row after which the agent is set busy (0 = never).
    #[arg(long, env = "PRESENCE_HUB_MAX_MISSED_IN_ROW", default_value_t = 0)]
    pub max_missed_in_row: u32,
    /// Recent updates kept in memory for admin `resume`.
    #[arg(long, env = "PRESENCE_HUB_HISTORY_SIZE", default_value_t = 100_000)]
    pub history_size: usize,
    /// Per-socket outgoing queue bound in bytes; a socket past it is closed with 4008.
    #[arg(long, env = "PRESENCE_HUB_QUEUE_BYTES", default_value_t = 1 << 20)]
    pub queue_bytes: usize,
    /// TOML file with the agent directory and ring groups.
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
    /// Serve the web demo from this directory instead of the copy built into the binary.
    #[arg(long, env = "PRESENCE_HUB_WEB_DIR")]
    pub web_dir: Option<PathBuf>,
}

/// Everything the hub runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub jwt_secret: Option<String>,
    pub allowed_origins: Vec<String>,
    pub ring_timeout: Duration,
    pub wrap_up: Duration,
    pub disconnect_grace: Duration,
    pub max_missed_in_row: u32,
    pub history_size: usize,
    pub queue_bytes: usize,
    pub directory: Directory,
    pub event_id_capacity: usize,
    pub event_id_ttl: Duration,
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub max_message_bytes: usize,
    /// WebSocket read chunk per socket (tungstenite's default is 128 KiB; small saves RAM).
    pub read_buffer_bytes: usize,
    /// Bytes gathered before tungstenite writes to the socket; frames beyond it are flushed
    /// in batches by the socket loop.
    pub write_buffer_bytes: usize,
    /// Hard cap of tungstenite's write buffer (the outbox bound is the real limit).
    pub max_write_buffer_bytes: usize,
    pub web_dir: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            jwt_secret: None,
            allowed_origins: Vec::new(),
            ring_timeout: Duration::from_secs(30),
            wrap_up: Duration::ZERO,
            disconnect_grace: Duration::from_secs(15),
            max_missed_in_row: 0,
            history_size: 100_000,
            queue_bytes: 1 << 20,
            directory: Directory::default(),
            event_id_capacity: 262_144,
            event_id_ttl: Duration::from_secs(4 * 3600),
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(10),
            max_message_bytes: 64 * 1024,
            read_buffer_bytes: 4096,
            write_buffer_bytes: 8192,
            max_write_buffer_bytes: usize::MAX,
            web_dir: None,
        }
    }
}

impl Cli {
    /// Builds the settings, loading the directory file if one is given.
    pub fn settings(&self) -> Result<Settings, DirectoryError> {
        let directory = match &self.directory {
            Some(path) => Directory::load(path)?,
            None => Directory::default(),
        };
        Ok(Settings {
            jwt_secret: self.jwt_secret.clone().filter(|s| !s.is_empty()),
            allowed_origins: self
                .allowed_origins
                .iter()
                .map(|o| o.trim().to_string())
                .filter(|o| !o.is_empty())
                .collect(),
            ring_timeout: Duration::from_secs(self.ring_timeout_secs.max(1)),
            wrap_up: Duration::from_secs(self.wrap_up_secs),
            disconnect_grace: Duration::from_secs(self.disconnect_grace_secs),
            max_missed_in_row: self.max_missed_in_row,
            history_size: self.history_size,
            queue_bytes: self.queue_bytes.max(4096),
            directory,
            event_id_capacity: self.event_id_capacity,
            event_id_ttl: Duration::from_secs(self.event_id_ttl_secs),
            ping_interval: Duration::from_secs(self.ping_interval_secs.max(1)),
            pong_timeout: Duration::from_secs(self.pong_timeout_secs.max(1)),
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_secs),
            max_message_bytes: self.max_message_bytes.max(1024),
            web_dir: self.web_dir.clone(),
            ..Settings::default()
        })
    }
}
