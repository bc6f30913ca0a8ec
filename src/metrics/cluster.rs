//! The cluster series of the metrics (cluster mode only; a single node registers none):
//! their typed labels, the ownership-move counters kept by [`Metrics`], and the figures
//! read from the backplane when scraped ([`Computed`]).

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::fmt::Write as _;

use super::{Computed, Metrics};

/// Cluster mode: which way an agent's ownership moved, as seen by this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum OwnershipMove {
    /// This node took an agent over (its owner left, or this node joined and took it).
    Gained,
    /// An agent moved away from this node (a new member took it, or an append was fenced).
    Lost,
}

impl OwnershipMove {
    fn as_str(self) -> &'static str {
        match self {
            OwnershipMove::Gained => "gained",
            OwnershipMove::Lost => "lost",
        }
    }
}

impl EncodeLabelValue for OwnershipMove {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// `{direction="gained"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MoveLabels {
    direction: OwnershipMove,
}

/// Cluster mode: how an append to the agents stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum AppendOutcome {
    /// JetStream acknowledged it.
    Acked,
    /// Refused: another change of the agent was stored first (an append conflict).
    Fenced,
    /// Not sent, or not acknowledged in time: answered `unavailable`.
    Unavailable,
}

impl EncodeLabelValue for AppendOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            AppendOutcome::Acked => "acked",
            AppendOutcome::Fenced => "fenced",
            AppendOutcome::Unavailable => "unavailable",
        })
    }
}

/// `{outcome="acked"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct AppendLabels {
    outcome: AppendOutcome,
}

/// Cluster mode: how a command forwarded to its owning node ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ForwardOutcome {
    /// The owner answered it.
    Answered,
    /// The owner is gone or silent, or NATS is unreachable: answered `unavailable`.
    Unavailable,
}

impl EncodeLabelValue for ForwardOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            ForwardOutcome::Answered => "answered",
            ForwardOutcome::Unavailable => "unavailable",
        })
    }
}

/// `{outcome="answered"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ForwardLabels {
    outcome: ForwardOutcome,
}

impl Metrics {
    /// The metrics of a cluster node: every series of a single node, and the cluster's own
    /// (ownership moves; the figures the backplane and the router own are read when
    /// scraped, see [`Computed`]).
    pub(crate) fn for_cluster() -> Self {
        let mut m = Metrics::default();
        let family = Family::<MoveLabels, Counter>::default();
        m.ownership_moves = [OwnershipMove::Gained, OwnershipMove::Lost]
            .map(|direction| family.get_or_create(&MoveLabels { direction }).clone());
        m.registry.register(
            "presence_hub_cluster_ownership_moves",
            "Agents whose ownership moved to this node (gained) or away from it (lost)",
            family,
        );
        m
    }

    /// Cluster mode: an agent's ownership moved to or from this node. The hook for the
    /// code that takes agents over and drops actors no longer owned.
    pub(crate) fn ownership_moved(&self, direction: OwnershipMove) {
        self.ownership_moves[direction as usize].inc();
    }
}

impl Computed {
    /// Cluster mode: appends to the agents stream by outcome (read from the backplane).
    pub(crate) fn appends(&mut self, counts: &[(AppendOutcome, u64)]) {
        let family = Family::<AppendLabels, Counter>::default();
        for (outcome, n) in counts {
            family
                .get_or_create(&AppendLabels { outcome: *outcome })
                .inc_by(*n);
        }
        self.registry.register(
            "presence_hub_cluster_appends",
            "Appends of agent changes to the stream by outcome (fenced = append conflicts)",
            family,
        );
    }

    /// Cluster mode: commands forwarded to their owning node, by outcome.
    pub(crate) fn forwards(&mut self, counts: &[(ForwardOutcome, u64)]) {
        let family = Family::<ForwardLabels, Counter>::default();
        for (outcome, n) in counts {
            family
                .get_or_create(&ForwardLabels { outcome: *outcome })
                .inc_by(*n);
        }
        self.registry.register(
            "presence_hub_cluster_forwarded_commands",
            "Commands this node forwarded to the agent's owning node, by outcome",
            family,
        );
    }
}
