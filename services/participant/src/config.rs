//! The `[participants.NAME]` section: the sections every replicated node has, the sequencers
//! to connect to, the participant's own `[participants.NAME.participant]` parameters and its
//! ledger API's access control `[participants.NAME.ledger_api.auth]`.

use std::path::PathBuf;
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
    /// The ledger API's access control.
    #[serde(default)]
    pub ledger_api: LedgerApiConfig,
}

/// The `[participants.NAME.ledger_api]` section.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerApiConfig {
    /// How callers authenticate (default: not at all).
    pub auth: AuthConfig,
}

/// How ledger API callers authenticate: JWT bearer tokens, checked against a shared secret
/// (HS256) or the public keys of a JWKS file (RS256, ES256); `none` lets everyone in.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `none`, `hs256` or `jwks`.
    pub kind: AuthKind,
    /// The HS256 secret itself (`hs256`; or `secret_file`).
    pub secret: Option<String>,
    /// A file holding the HS256 secret (`hs256`; surrounding whitespace ignored).
    pub secret_file: Option<PathBuf>,
    /// A JSON Web Key Set file with the issuer's public keys (`jwks`).
    pub jwks_file: Option<PathBuf>,
    /// When set, a token's `aud` must contain it.
    pub audience: Option<String>,
    /// When set, a token's `iss` must be it.
    pub issuer: Option<String>,
    /// Clock skew allowed when checking `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
}

/// The kinds of [`AuthConfig`].
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthKind {
    /// No authentication: every caller may do everything (the demo's default).
    #[default]
    None,
    /// HS256 tokens signed with a shared secret.
    Hs256,
    /// RS256 or ES256 tokens signed by a key of a JWKS file.
    Jwks,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            kind: AuthKind::None,
            secret: None,
            secret_file: None,
            jwks_file: None,
            audience: None,
            issuer: None,
            leeway: Duration::from_secs(10),
        }
    }
}

impl AuthConfig {
    /// HS256 with `secret`.
    pub fn hs256(secret: &str) -> AuthConfig {
        AuthConfig { kind: AuthKind::Hs256, secret: Some(secret.into()), ..Default::default() }
    }

    /// Refuse combinations that cannot be meant.
    pub fn validate(&self) -> Result<(), InvalidKey> {
        let invalid = |key: &str, problem: &str| {
            Err(InvalidKey { key: format!("ledger_api.auth.{key}"), problem: problem.into() })
        };
        let secret = self.secret.is_some() || self.secret_file.is_some();
        match self.kind {
            AuthKind::None if secret || self.jwks_file.is_some() => {
                invalid("kind", "is \"none\" but keys are configured: set kind = \"hs256\" or \"jwks\"")
            }
            AuthKind::Hs256 if self.secret.is_some() == self.secret_file.is_some() => {
                invalid("secret", "kind \"hs256\" needs exactly one of secret and secret_file")
            }
            AuthKind::Hs256 if self.secret.as_deref().is_some_and(|s| s.len() < 32) => {
                invalid("secret", "must have at least 32 bytes (256 bits)")
            }
            AuthKind::Hs256 if self.jwks_file.is_some() => invalid("jwks_file", "is only for kind \"jwks\""),
            AuthKind::Jwks if self.jwks_file.is_none() => invalid("jwks_file", "kind \"jwks\" needs it"),
            AuthKind::Jwks if secret => invalid("secret", "is only for kind \"hs256\""),
            _ if self.leeway > Duration::from_secs(300) => invalid("leeway", "must be at most 5 minutes"),
            _ => Ok(()),
        }
    }
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
        self.participant.validate()?;
        self.ledger_api.auth.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(json: serde_json::Value) -> Result<AuthConfig, String> {
        let cfg: AuthConfig = serde_json::from_value(json).map_err(|e| e.to_string())?;
        cfg.validate().map_err(|e| format!("{}: {}", e.key, e.problem))?;
        Ok(cfg)
    }

    #[test]
    fn auth_sections_parse_and_contradictions_are_refused() {
        assert_eq!(auth(serde_json::json!({})).unwrap(), AuthConfig::default());
        let c =
            auth(serde_json::json!({"kind": "hs256", "secret_file": "/s", "audience": "a", "leeway": "5s"})).unwrap();
        assert_eq!((c.kind, c.leeway, c.audience.as_deref()), (AuthKind::Hs256, Duration::from_secs(5), Some("a")));
        assert_eq!(auth(serde_json::json!({"kind": "jwks", "jwks_file": "/k.json"})).unwrap().kind, AuthKind::Jwks);
        let e = auth(serde_json::json!({"kind": "hs256"})).unwrap_err();
        assert_eq!(e, "ledger_api.auth.secret: kind \"hs256\" needs exactly one of secret and secret_file");
        assert!(auth(serde_json::json!({"kind": "hs256", "secret": "short"})).unwrap_err().contains("32 bytes"));
        assert!(auth(serde_json::json!({"kind": "jwks"})).unwrap_err().starts_with("ledger_api.auth.jwks_file"));
        assert!(auth(serde_json::json!({"secret": "x"})).unwrap_err().starts_with("ledger_api.auth.kind"));
        assert!(auth(serde_json::json!({"kind": "rs256"})).is_err());
        assert!(auth(serde_json::json!({"kind": "none", "sekret": "x"})).is_err());
    }
}
