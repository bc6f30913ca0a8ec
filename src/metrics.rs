//! Counters and gauges, rendered as Prometheus text by `GET /metrics`.
//!
//! Hot paths only touch relaxed atomics; per-status agent counts and fan-out figures are
//! computed when scraped.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::protocol::Role;

/// Why a connection, request, message or socket was refused or closed by a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    const ALL: [Rejected; 11] = [
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

/// Picks one counter of a role (for rendering).
type RoleCounter = fn(&PerRole) -> &AtomicU64;

#[derive(Debug, Default)]
struct PerRole {
    open: AtomicI64,
    opened: AtomicU64,
    messages_in: AtomicU64,
    bad_messages: AtomicU64,
    slow_dropped: AtomicU64,
    dead_peers: AtomicU64,
}

/// Process-wide counters.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    roles: [PerRole; 3],
    rejected: [AtomicU64; Rejected::ALL.len()],
    /// Open TCP connections (HTTP and upgraded sockets), held by the accept loop.
    tcp_open: AtomicI64,
    telephony_events: AtomicU64,
    telephony_duplicates: AtomicU64,
    telephony_stale: AtomicU64,
    telephony_notices: AtomicU64,
}

impl Metrics {
    fn role(&self, role: Role) -> &PerRole {
        &self.roles[role.index()]
    }

    /// A socket of `role` opened.
    pub(crate) fn socket_opened(&self, role: Role) {
        self.role(role).open.fetch_add(1, Ordering::Relaxed);
        self.role(role).opened.fetch_add(1, Ordering::Relaxed);
    }

    /// A socket of `role` closed.
    pub(crate) fn socket_closed(&self, role: Role) {
        self.role(role).open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Open sockets of `role`.
    pub(crate) fn open_sockets(&self, role: Role) -> i64 {
        self.role(role).open.load(Ordering::Relaxed)
    }

    /// A client message arrived on a socket of `role`.
    pub(crate) fn message_in(&self, role: Role) {
        self.role(role).messages_in.fetch_add(1, Ordering::Relaxed);
    }

    /// A client message was answered with `bad_message`.
    pub(crate) fn bad_message(&self, role: Role) {
        self.role(role).bad_messages.fetch_add(1, Ordering::Relaxed);
    }

    /// A socket was closed with 4008.
    pub(crate) fn slow_dropped(&self, role: Role) {
        self.role(role).slow_dropped.fetch_add(1, Ordering::Relaxed);
        self.rejected(Rejected::SlowConsumer);
    }

    /// A socket missed its pong deadline.
    pub(crate) fn dead_peer(&self, role: Role) {
        self.role(role).dead_peers.fetch_add(1, Ordering::Relaxed);
        self.rejected(Rejected::DeadPeer);
    }

    /// Something was refused or closed by a limit.
    pub(crate) fn rejected(&self, cause: Rejected) {
        self.rejected[cause.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// How many times `cause` happened.
    pub(crate) fn rejected_count(&self, cause: Rejected) -> u64 {
        self.rejected[cause.index()].load(Ordering::Relaxed)
    }

    /// A TCP connection was accepted and holds a connection slot.
    pub(crate) fn tcp_opened(&self) {
        self.tcp_open.fetch_add(1, Ordering::Relaxed);
    }

    /// A TCP connection (or the socket it was upgraded to) ended.
    pub(crate) fn tcp_closed(&self) {
        self.tcp_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Open TCP connections holding a slot.
    pub(crate) fn tcp_open(&self) -> i64 {
        self.tcp_open.load(Ordering::Relaxed)
    }

    /// A telephony event was processed (`duplicate` / `stale` as answered).
    pub(crate) fn telephony_event(&self, duplicate: bool, stale: bool) {
        self.telephony_events.fetch_add(1, Ordering::Relaxed);
        if duplicate {
            self.telephony_duplicates.fetch_add(1, Ordering::Relaxed);
        }
        if stale {
            self.telephony_stale.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A notification went out to the telephony sockets.
    pub(crate) fn telephony_notice(&self) {
        self.telephony_notices.fetch_add(1, Ordering::Relaxed);
    }

    /// Renders the process counters (the caller appends the computed gauges).
    pub(crate) fn render(&self, out: &mut String) {
        let g = |out: &mut String, name: &str, help: &str, kind: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        g(
            out,
            "presence_hub_connections",
            "Open sockets by role.",
            "gauge",
        );
        for r in Role::ALL {
            let _ = writeln!(
                out,
                "presence_hub_connections{{role=\"{}\"}} {}",
                r.as_str(),
                self.open_sockets(r)
            );
        }
        let per_role: [(&str, &str, RoleCounter); 5] = [
            (
                "presence_hub_connections_opened_total",
                "Sockets opened by role.",
                |p| &p.opened,
            ),
            (
                "presence_hub_messages_in_total",
                "Client messages received by role.",
                |p| &p.messages_in,
            ),
            (
                "presence_hub_bad_messages_total",
                "Client messages answered with bad_message.",
                |p| &p.bad_messages,
            ),
            (
                "presence_hub_slow_consumers_dropped_total",
                "Sockets closed with 4008 for falling behind.",
                |p| &p.slow_dropped,
            ),
            (
                "presence_hub_dead_peers_total",
                "Sockets closed for missing the pong deadline.",
                |p| &p.dead_peers,
            ),
        ];
        for (name, help, field) in per_role {
            g(out, name, help, "counter");
            for r in Role::ALL {
                let _ = writeln!(
                    out,
                    "{name}{{role=\"{}\"}} {}",
                    r.as_str(),
                    field(self.role(r)).load(Ordering::Relaxed)
                );
            }
        }
        g(
            out,
            "presence_hub_rejected_total",
            "Connections, requests, messages and sockets refused or closed by a limit, by cause.",
            "counter",
        );
        for c in Rejected::ALL {
            let _ = writeln!(
                out,
                "presence_hub_rejected_total{{cause=\"{}\"}} {}",
                c.as_str(),
                self.rejected_count(c)
            );
        }
        g(
            out,
            "presence_hub_tcp_connections",
            "Open TCP connections holding a slot of --max-connections (HTTP and sockets).",
            "gauge",
        );
        let _ = writeln!(out, "presence_hub_tcp_connections {}", self.tcp_open());
        for (name, help, v) in [
            (
                "presence_hub_telephony_events_total",
                "Telephony events processed.",
                &self.telephony_events,
            ),
            (
                "presence_hub_telephony_duplicates_total",
                "Telephony events answered as duplicates.",
                &self.telephony_duplicates,
            ),
            (
                "presence_hub_telephony_stale_total",
                "Telephony events answered as stale.",
                &self.telephony_stale,
            ),
            (
                "presence_hub_telephony_notifications_total",
                "Notifications sent to telephony adapters.",
                &self.telephony_notices,
            ),
        ] {
            g(out, name, help, "counter");
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        }
    }
}
