//! The hub's metrics on `prometheus-client`, with typed label sets (`role`, `cause`), encoded
//! as OpenMetrics text by `GET /metrics`.
//!
//! Hot paths only touch relaxed atomics: every labelled series is resolved once, when the
//! metrics are made, so an increment is one atomic add (no label lookup, no lock). The two
//! histograms are observed once per acknowledged status change and once per batch a socket
//! takes from its queue, never per delivery. Figures owned by other parts (fan-out, store,
//! actors) are read when scraped, by [`Metrics::encode`]'s caller, as constant samples.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::fmt::Write as _;
use std::time::Duration;

use crate::protocol::Role;

mod cluster;
pub(crate) use cluster::{AppendOutcome, ForwardOutcome, OwnershipMove};

/// Why a connection, request, message or socket was refused or closed by a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Rejected {
    /// No, bad or expired token: 401 before the upgrade.
    Unauthorized,
    /// A token of another role for the path: 403.
    WrongRole,
    /// `Origin` not in the allowlist: 403.
    Origin,
    /// Over `--max-connections`: 503 before the upgrade.
    OverCapacity,
    /// The request head did not arrive within `--handshake-timeout-secs` (slowloris).
    HandshakeTimeout,
    /// A message (or HTTP telephony event) over its rate: `rate_limited`.
    RateLimited,
    /// A socket closed with 1008 after repeated rate limiting.
    RateLimitClosed,
    /// A frame or message over the size limit: close 1009.
    MessageTooBig,
    /// A socket over its queue bound: close 4008.
    SlowConsumer,
    /// A socket that missed its pong deadline.
    DeadPeer,
    /// A socket whose token expired: close 1008.
    TokenExpired,
}

impl Rejected {
    pub(crate) const ALL: [Rejected; 11] = [
        Rejected::Unauthorized,
        Rejected::WrongRole,
        Rejected::Origin,
        Rejected::OverCapacity,
        Rejected::HandshakeTimeout,
        Rejected::RateLimited,
        Rejected::RateLimitClosed,
        Rejected::MessageTooBig,
        Rejected::SlowConsumer,
        Rejected::DeadPeer,
        Rejected::TokenExpired,
    ];

    /// The `cause` label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Rejected::Unauthorized => "unauthorized",
            Rejected::WrongRole => "wrong_role",
            Rejected::Origin => "origin",
            Rejected::OverCapacity => "over_capacity",
            Rejected::HandshakeTimeout => "handshake_timeout",
            Rejected::RateLimited => "rate_limited",
            Rejected::RateLimitClosed => "rate_limit_closed",
            Rejected::MessageTooBig => "message_too_big",
            Rejected::SlowConsumer => "slow_consumer",
            Rejected::DeadPeer => "dead_peer",
            Rejected::TokenExpired => "token_expired",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl EncodeLabelValue for Rejected {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// A socket role as a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct RoleValue(Role);

impl EncodeLabelValue for RoleValue {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.0.as_str())
    }
}

/// `{role="agent"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RoleLabels {
    role: RoleValue,
}

/// `{cause="rate_limited"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CauseLabels {
    cause: Rejected,
}

/// `{status="available"}`, for the per-status agent gauge.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct StatusLabels {
    status: StatusValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct StatusValue(crate::model::Status);

impl EncodeLabelValue for StatusValue {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.0.as_str())
    }
}

/// The series of one role, resolved once.
#[derive(Debug, Default)]
struct PerRole {
    open: Gauge,
    opened: Counter,
    messages_in: Counter,
    bad_messages: Counter,
    slow_dropped: Counter,
    dead_peers: Counter,
}

/// Process-wide metrics.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// Every series below, for encoding.
    registry: Registry,
    roles: [PerRole; 3],
    rejected: [Counter; Rejected::ALL.len()],
    /// Open TCP connections (HTTP and upgraded sockets), held by the accept loop.
    tcp_open: Gauge,
    telephony_events: Counter,
    telephony_duplicates: Counter,
    telephony_stale: Counter,
    telephony_notices: Counter,
    /// From a status change's arrival on a socket to its `ok` going out (commit included).
    status_ack: Histogram,
    /// From a frame entering a socket's queue to the socket's writer taking it, per batch
    /// (the oldest frame of each batch).
    queue_wait: Histogram,
    /// Cluster mode: agents taken over by this node / moved away from it, by direction.
    /// Registered only by [`Metrics::for_cluster`]: a single node shows no cluster series.
    ownership_moves: [Counter; 2],
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let families: [(&str, &str); 6] = [
            ("presence_hub_connections", "Open sockets by role"),
            ("presence_hub_connections_opened", "Sockets opened by role"),
            (
                "presence_hub_messages_in",
                "Client messages received by role",
            ),
            (
                "presence_hub_bad_messages",
                "Client messages answered with bad_message",
            ),
            (
                "presence_hub_slow_consumers_dropped",
                "Sockets closed with 4008 for falling behind",
            ),
            (
                "presence_hub_dead_peers",
                "Sockets closed for missing the pong deadline",
            ),
        ];
        let open = Family::<RoleLabels, Gauge>::default();
        let counters: Vec<Family<RoleLabels, Counter>> =
            (1..families.len()).map(|_| Family::default()).collect();
        let roles = Role::ALL.map(|role| {
            let l = RoleLabels {
                role: RoleValue(role),
            };
            PerRole {
                open: open.get_or_create(&l).clone(),
                opened: counters[0].get_or_create(&l).clone(),
                messages_in: counters[1].get_or_create(&l).clone(),
                bad_messages: counters[2].get_or_create(&l).clone(),
                slow_dropped: counters[3].get_or_create(&l).clone(),
                dead_peers: counters[4].get_or_create(&l).clone(),
            }
        });
        registry.register(families[0].0, families[0].1, open);
        for ((name, help), family) in families[1..].iter().zip(counters) {
            registry.register(*name, *help, family);
        }
        let rejected_family = Family::<CauseLabels, Counter>::default();
        let rejected = Rejected::ALL.map(|cause| {
            rejected_family
                .get_or_create(&CauseLabels { cause })
                .clone()
        });
        registry.register(
            "presence_hub_rejected",
            "Connections, requests, messages and sockets refused or closed by a limit, by cause",
            rejected_family,
        );
        let tcp_open = Gauge::default();
        registry.register(
            "presence_hub_tcp_connections",
            "Open TCP connections holding a slot of --max-connections (HTTP and sockets)",
            tcp_open.clone(),
        );
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let telephony_events = counter(
            &mut registry,
            "presence_hub_telephony_events",
            "Telephony events processed",
        );
        let telephony_duplicates = counter(
            &mut registry,
            "presence_hub_telephony_duplicates",
            "Telephony events answered as duplicates",
        );
        let telephony_stale = counter(
            &mut registry,
            "presence_hub_telephony_stale",
            "Telephony events answered as stale",
        );
        let telephony_notices = counter(
            &mut registry,
            "presence_hub_telephony_notifications",
            "Notifications sent to telephony adapters (once per notification)",
        );
        // 0.1 ms .. ~3.3 s.
        let status_ack = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "presence_hub_status_ack_seconds",
            "From a status change's arrival on a socket to its ok (the commit included)",
            status_ack.clone(),
        );
        // 10 us .. ~0.3 s.
        let queue_wait = Histogram::new(exponential_buckets(0.00001, 2.0, 16));
        registry.register(
            "presence_hub_fanout_queue_wait_seconds",
            "From an update entering a socket's queue to the socket's writer taking it (oldest frame of each batch written)",
            queue_wait.clone(),
        );
        Metrics {
            registry,
            roles,
            rejected,
            tcp_open,
            telephony_events,
            telephony_duplicates,
            telephony_stale,
            telephony_notices,
            status_ack,
            queue_wait,
            ownership_moves: Default::default(),
        }
    }
}

impl Metrics {
    fn role(&self, role: Role) -> &PerRole {
        &self.roles[role.index()]
    }

    /// A socket of `role` opened.
    pub(crate) fn socket_opened(&self, role: Role) {
        self.role(role).open.inc();
        self.role(role).opened.inc();
    }

    /// A socket of `role` closed.
    pub(crate) fn socket_closed(&self, role: Role) {
        self.role(role).open.dec();
    }

    /// A client message arrived on a socket of `role`.
    pub(crate) fn message_in(&self, role: Role) {
        self.role(role).messages_in.inc();
    }

    /// A client message was answered with `bad_message`.
    pub(crate) fn bad_message(&self, role: Role) {
        self.role(role).bad_messages.inc();
    }

    /// A socket was closed with 4008.
    pub(crate) fn slow_dropped(&self, role: Role) {
        self.role(role).slow_dropped.inc();
        self.rejected(Rejected::SlowConsumer);
    }

    /// A socket missed its pong deadline.
    pub(crate) fn dead_peer(&self, role: Role) {
        self.role(role).dead_peers.inc();
        self.rejected(Rejected::DeadPeer);
    }

    /// Something was refused or closed by a limit.
    pub(crate) fn rejected(&self, cause: Rejected) {
        self.rejected[cause.index()].inc();
    }

    /// A TCP connection was accepted and holds a connection slot.
    pub(crate) fn tcp_opened(&self) {
        self.tcp_open.inc();
    }

    /// A TCP connection (or the socket it was upgraded to) ended.
    pub(crate) fn tcp_closed(&self) {
        self.tcp_open.dec();
    }

    /// A telephony event was processed (`duplicate` / `stale` as answered).
    pub(crate) fn telephony_event(&self, duplicate: bool, stale: bool) {
        self.telephony_events.inc();
        if duplicate {
            self.telephony_duplicates.inc();
        }
        if stale {
            self.telephony_stale.inc();
        }
    }

    /// A notification went out to the telephony sockets.
    pub(crate) fn telephony_notice(&self) {
        self.telephony_notices.inc();
    }

    /// A status change was acknowledged `took` after it arrived.
    pub(crate) fn status_acked(&self, took: Duration) {
        self.status_ack.observe(took.as_secs_f64());
    }

    /// A socket's writer took a batch whose oldest frame waited `waited` in its queue.
    pub(crate) fn queue_waited(&self, waited: Duration) {
        self.queue_wait.observe(waited.as_secs_f64());
    }

    /// Encodes every series, then the scrape-time figures in `computed`, as OpenMetrics
    /// text.
    pub(crate) fn encode(&self, computed: &Registry) -> String {
        let mut out = String::with_capacity(8192);
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry);
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, computed);
        let _ = prometheus_client::encoding::text::encode_eof(&mut out);
        out
    }
}

/// Scrape-time figures (owned by the fan-out, the store, the router), as constant samples.
#[derive(Default)]
pub(crate) struct Computed {
    registry: Registry,
}

impl Computed {
    /// A counter read from its owner.
    pub(crate) fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.registry.register(name, help, ConstCounter::new(value));
    }

    /// A gauge read from its owner.
    pub(crate) fn gauge(&mut self, name: &str, help: &str, value: i64) {
        self.registry.register(name, help, ConstGauge::new(value));
    }

    /// Agents by effective status (`presence_hub_agents{status=..}`).
    pub(crate) fn agents_by_status(&mut self, counts: &[(crate::model::Status, u64)]) {
        let family = Family::<StatusLabels, Gauge>::default();
        for (status, n) in counts {
            let g = family.get_or_create(&StatusLabels {
                status: StatusValue(*status),
            });
            g.set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        self.registry
            .register("presence_hub_agents", "Agents by effective status", family);
    }

    /// The registry to encode.
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }
}
