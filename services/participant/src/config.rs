//! The `[participants.NAME]` section: the sections every replicated node has, the sequencers
//! to connect to, and the participant's own `[participants.NAME.participant]` parameters.

use std::time::Duration;

use serde::Deserialize;
use syncline_coordination::leadership::LeadershipConfig;
use syncline_node::config::{
    sections::{health_is_active_by_default, validate_replicated},
    ApiConfig, CommonSections, HealthConfig, InvalidKey, MetricsConfig, NodeSection, PublicApiConfig, StorageOverride,
};
use syncline_sequencer_client::SequencerConnection;

/// One participant replica. Replicas of one participant share `member` and the database.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ParticipantConfig {
    /// The participant's member name at the sequencers, shared by its replicas (default: the
    /// node's name).
    pub member: Option<String>,
    /// Overrides of the default `[storage]`.
    pub storage: Option<StorageOverride>,
    /// Public gRPC API (the ledger API, health and reflection).
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
    pub participant: ParticipantParameters,
}

/// The participant's own parameters.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ParticipantParameters {
    /// The longest deduplication period a command may ask for, and the one used when it
    /// gives none (Canton: 7 days).
    #[serde(with = "humantime_serde")]
    pub max_deduplication_duration: Duration,
    /// How long after a pending deadline (by the host clock, from the last event seen) the
    /// participant asks the sequencer for a time proof if no event arrived.
    #[serde(with = "humantime_serde")]
    pub time_proof_delay: Duration,
    /// How long `allocate_party` waits for the party to be in effect (Canton: 2 min).
    #[serde(with = "humantime_serde")]
    pub party_allocation_timeout: Duration,
}

impl Default for ParticipantParameters {
    fn default() -> Self {
        ParticipantParameters {
            max_deduplication_duration: Duration::from_secs(7 * 24 * 3600),
            time_proof_delay: Duration::from_millis(100),
            party_allocation_timeout: Duration::from_secs(120),
        }
    }
}

impl ParticipantConfig {
    /// The member name of node `name`.
    pub fn member<'a>(&'a self, name: &'a str) -> &'a str {
        self.member.as_deref().unwrap_or(name)
    }
}

impl ParticipantParameters {
    /// Refuse values the participant cannot work with.
    pub fn validate(&self) -> Result<(), InvalidKey> {
        let invalid =
            |key: &str, problem: &str| Err(InvalidKey { key: format!("participant.{key}"), problem: problem.into() });
        if self.max_deduplication_duration.is_zero() {
            return invalid("max_deduplication_duration", "must be positive");
        }
        if self.time_proof_delay.is_zero() || self.time_proof_delay > Duration::from_secs(60) {
            return invalid("time_proof_delay", "must be between 1 ms and 60 s");
        }
        if self.party_allocation_timeout.is_zero() {
            return invalid("party_allocation_timeout", "must be positive");
        }
        Ok(())
    }
}

impl NodeSection for ParticipantConfig {
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
        self.participant.validate()
    }
}
