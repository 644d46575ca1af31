//! The sections every kind of node has (storage, listeners, health, metrics), and the section
//! of a replicated node (mediator, participant), which adds its leadership timing.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use syncline_coordination::leadership::LeadershipConfig;
use syncline_coordination::DbConfig;

use super::{CommonSections, InvalidKey, NodeSection};
pub use crate::tls::TlsConfig;

/// Database of a node; unset keys take [`DbConfig::new`]'s defaults.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `postgres://…` URL.
    pub url: Option<String>,
    /// Pooled connections.
    pub pool_size: u32,
    /// Connection timeout.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Server-side statement timeout of pooled connections.
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        let db = DbConfig::new("");
        StorageConfig {
            url: None,
            pool_size: db.pool_size,
            connect_timeout: db.connect_timeout,
            statement_timeout: db.statement_timeout,
        }
    }
}

impl StorageConfig {
    /// The coordination crate's database settings for node `name`.
    pub fn db_config(&self, name: &str) -> DbConfig {
        let mut db = DbConfig::new(self.url.clone().unwrap_or_default());
        db.pool_size = self.pool_size;
        db.connect_timeout = self.connect_timeout;
        db.statement_timeout = self.statement_timeout;
        db.application_name = format!("syncline-{name}");
        db
    }

    /// `default` (the `[storage]` section, or the defaults) with a node's overrides applied.
    pub fn merged(default: Option<&StorageConfig>, own: Option<&StorageOverride>) -> StorageConfig {
        let mut s = default.cloned().unwrap_or_default();
        if let Some(o) = own {
            s.url = o.url.clone().or(s.url);
            s.pool_size = o.pool_size.unwrap_or(s.pool_size);
            s.connect_timeout = o.connect_timeout.unwrap_or(s.connect_timeout);
            s.statement_timeout = o.statement_timeout.unwrap_or(s.statement_timeout);
        }
        s
    }
}

/// Per-node storage keys; unset ones come from `[storage]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StorageOverride {
    /// `postgres://…` URL.
    pub url: Option<String>,
    /// Pooled connections.
    pub pool_size: Option<u32>,
    /// Connection timeout.
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    /// Statement timeout.
    #[serde(default, with = "humantime_serde")]
    pub statement_timeout: Option<Duration>,
}

/// The admin gRPC listener: `{ port = 4002 }` listens on 127.0.0.1 (the default: the admin API
/// is for operators on the node's machine), `{ address = "0.0.0.0:4002" }` where told (then
/// better with `tls.client_ca`, which requires client certificates).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(try_from = "RawApiConfig")]
pub struct ApiConfig {
    /// Listen address.
    pub address: SocketAddr,
    /// TLS; plaintext without it.
    pub tls: Option<TlsConfig>,
}

impl ApiConfig {
    /// Plaintext on `address`.
    pub fn plain(address: SocketAddr) -> ApiConfig {
        ApiConfig { address, tls: None }
    }

    /// Whether clients must present a certificate signed by `tls.client_ca`.
    pub fn requires_client_certificates(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.client_ca.is_some())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiConfig {
    address: Option<SocketAddr>,
    port: Option<u16>,
    tls: Option<TlsConfig>,
}

impl TryFrom<RawApiConfig> for ApiConfig {
    type Error = String;

    fn try_from(raw: RawApiConfig) -> Result<Self, Self::Error> {
        let address = match (raw.address, raw.port) {
            (Some(a), None) => a,
            (None, Some(port)) => SocketAddr::from(([127, 0, 0, 1], port)),
            (Some(_), Some(_)) => {
                return Err("give either address or port (which listens on 127.0.0.1), not both".into())
            }
            (None, None) => return Err("missing address or port (port listens on 127.0.0.1)".into()),
        };
        Ok(ApiConfig { address, tls: raw.tls })
    }
}

/// Public gRPC API of a node.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PublicApiConfig {
    /// Listen address.
    pub address: SocketAddr,
    /// Largest accepted request, in bytes.
    #[serde(default = "PublicApiConfig::default_max_request_size")]
    pub max_request_size: usize,
    /// TLS; plaintext without it.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

impl PublicApiConfig {
    /// Plaintext on `address`, with the default request size limit.
    pub fn plain(address: SocketAddr) -> PublicApiConfig {
        PublicApiConfig { address, max_request_size: Self::DEFAULT_MAX_REQUEST_SIZE, tls: None }
    }

    /// Default of `max_request_size`: 4 MiB, gRPC's usual limit.
    pub const DEFAULT_MAX_REQUEST_SIZE: usize = 4 * 1024 * 1024;

    fn default_max_request_size() -> usize {
        Self::DEFAULT_MAX_REQUEST_SIZE
    }
}

/// What `/health` answers 200 for.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum HealthCheck {
    /// The node serves (sequencer: writer running and online). Default of sequencers.
    #[default]
    Ping,
    /// The node serves and is the active replica of its group. Default of mediators and participants.
    IsActive,
}

/// The HTTP health and metrics server.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Listen address.
    pub address: SocketAddr,
    /// What `/health` checks.
    #[serde(default)]
    pub check: HealthCheck,
    /// TLS (HAProxy's checks then use `check-ssl`); plaintext without it.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// An extra listener for `/metrics` only.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Listen address.
    pub address: SocketAddr,
    /// TLS; plaintext without it.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// One replicated node: a mediator or a participant.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReplicatedNodeConfig {
    /// Overrides of the default `[storage]`.
    pub storage: Option<StorageOverride>,
    /// Public gRPC API.
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
}

/// The checks every replicated node's section shares: leadership timing and a non-empty member
/// name (when given).
pub fn validate_replicated(replication: &LeadershipConfig, member: Option<&str>) -> Result<(), InvalidKey> {
    replication.validate().map_err(|e| InvalidKey { key: format!("replication.{}", e.field), problem: e.problem })?;
    if member == Some("") {
        return Err(InvalidKey { key: "member".into(), problem: "must not be empty".into() });
    }
    Ok(())
}

impl NodeSection for ReplicatedNodeConfig {
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
        validate_replicated(&self.replication, None)
    }
}

/// `health` of a replicated node: as [`HealthConfig`], but an unset `check` means `is-active`
/// (for `#[serde(deserialize_with)]`).
pub fn health_is_active_by_default<'de, D: serde::Deserializer<'de>>(d: D) -> Result<HealthConfig, D::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        address: SocketAddr,
        check: Option<HealthCheck>,
        tls: Option<TlsConfig>,
    }
    let raw = Raw::deserialize(d)?;
    Ok(HealthConfig { address: raw.address, check: raw.check.unwrap_or(HealthCheck::IsActive), tls: raw.tls })
}
