//! The `[mediators.NAME]` section: the sections every replicated node has, the sequencers to
//! connect to, and the mediator's own `[mediators.NAME.mediator]` parameters.

use std::time::Duration;

use serde::Deserialize;
use syncline_coordination::leadership::LeadershipConfig;
use syncline_node::config::{
    sections::{health_is_active_by_default, validate_replicated},
    ApiConfig, CommonSections, HealthConfig, InvalidKey, MetricsConfig, NodeSection, PublicApiConfig, StorageOverride,
};
use syncline_sequencer_client::SequencerConnection;

/// One mediator replica. Replicas of one mediator share `member` and the database.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MediatorConfig {
    /// The mediator's member name at the sequencers, shared by its replicas (default: the
    /// node's name).
    pub member: Option<String>,
    /// Overrides of the default `[storage]`.
    pub storage: Option<StorageOverride>,
    /// Public gRPC API (health and reflection).
    pub public_api: PublicApiConfig,
    /// Admin gRPC API.
    pub admin_api: ApiConfig,
    /// Health and metrics HTTP server; `check` defaults to `is-active`.
    #[serde(deserialize_with = "health_is_active_by_default")]
    pub health: HealthConfig,
    /// Optional extra metrics listener.
    pub metrics: Option<MetricsConfig>,
    /// Leadership timing.
    #[serde(default)]
    pub replication: LeadershipConfig,
    /// The sequencers.
    pub sequencer: SequencerConnection,
    /// Processing parameters.
    #[serde(default)]
    pub mediator: MediatorParameters,
}

/// The mediator's own parameters.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MediatorParameters {
    /// How long a request UUID is remembered: a request reusing one within it is rejected
    /// (Canton: 48 h).
    #[serde(with = "humantime_serde")]
    pub deduplication_window: Duration,
    /// How long finalized requests are kept after their decision time.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How often finalized requests past the retention are pruned.
    #[serde(with = "humantime_serde")]
    pub prune_interval: Duration,
    /// How long after a pending deadline (by the host clock, from the last event seen) the
    /// mediator asks the sequencer for a time proof if no event arrived.
    #[serde(with = "humantime_serde")]
    pub time_proof_delay: Duration,
}

impl Default for MediatorParameters {
    fn default() -> Self {
        MediatorParameters {
            deduplication_window: Duration::from_secs(48 * 3600),
            retention: Duration::from_secs(24 * 3600),
            prune_interval: Duration::from_secs(600),
            time_proof_delay: Duration::from_millis(100),
        }
    }
}

impl MediatorConfig {
    /// The member name of node `name`.
    pub fn member<'a>(&'a self, name: &'a str) -> &'a str {
        self.member.as_deref().unwrap_or(name)
    }
}

impl MediatorParameters {
    /// Refuse values the mediator cannot work with.
    pub fn validate(&self) -> Result<(), InvalidKey> {
        let invalid =
            |key: &str, problem: &str| Err(InvalidKey { key: format!("mediator.{key}"), problem: problem.into() });
        if self.deduplication_window.is_zero() {
            return invalid("deduplication_window", "must be positive");
        }
        if self.prune_interval.is_zero() {
            return invalid("prune_interval", "must be positive");
        }
        if self.time_proof_delay.is_zero() || self.time_proof_delay > Duration::from_secs(60) {
            return invalid("time_proof_delay", "must be between 1 ms and 60 s");
        }
        Ok(())
    }
}

impl NodeSection for MediatorConfig {
    fn common(&self) -> CommonSections<'_> {
        CommonSections {
            storage: self.storage.as_ref(),
            public_api: &self.public_api,
            admin_api: &self.admin_api,
            health: &self.health,
            metrics: self.metrics.as_ref(),
        }
    }

    fn validate(&self) -> Result<(), InvalidKey> {
        validate_replicated(&self.replication, self.member.as_deref())?;
        if let Some((key, problem)) = self.sequencer.problem() {
            return Err(InvalidKey { key: format!("sequencer.{key}"), problem });
        }
        self.mediator.validate()
    }
}
