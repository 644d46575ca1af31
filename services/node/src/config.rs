//! Node configuration: TOML files merged in order (later files win, tables merge deeply),
//! `${VAR}` / `${VAR:-default}` substitution, unknown keys refused. Errors name the file,
//! the key and what is wrong.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider};
use serde::Deserialize;
use syncline_coordination::DbConfig;
use syncline_sequencer::SequencerSettings;

/// A configuration problem, with where it is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// `${VAR}` names a variable that is not set and has no default.
    #[error("{path}: environment variable {var} is not set (use ${{{var}:-default}} for a default)")]
    UnsetVariable { path: PathBuf, var: String },
    /// `${` without a closing brace.
    #[error("{path}: unterminated ${{ at byte {at}")]
    Unterminated { path: PathBuf, at: usize },
    /// Not valid TOML.
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    /// A key is unknown, missing or of the wrong type.
    #[error("{0}")]
    Invalid(String),
    /// Values that do not fit together; `file` is the file that set `key`, when one did.
    #[error("{key}: {message}{}", in_file(file))]
    Validation { key: String, message: String, file: Option<String> },
}

fn in_file(file: &Option<String>) -> String {
    file.as_ref().map(|f| format!(" (in {f})")).unwrap_or_default()
}

/// The kinds of node a configuration declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeKind {
    /// A sequencer (active-active).
    Sequencer,
    /// A mediator (replicated, active-passive).
    Mediator,
    /// A participant (replicated, active-passive).
    Participant,
}

impl NodeKind {
    /// Lower-case name, as in logs and `syncline admin status`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Sequencer => "sequencer",
            NodeKind::Mediator => "mediator",
            NodeKind::Participant => "participant",
        }
    }

    /// The configuration table holding the nodes of this kind (`sequencers`, …).
    pub fn table(self) -> &'static str {
        match self {
            NodeKind::Sequencer => "sequencers",
            NodeKind::Mediator => "mediators",
            NodeKind::Participant => "participants",
        }
    }
}

impl fmt::Display for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Database of a node.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `postgres://…` URL.
    pub url: Option<String>,
    /// Pooled connections.
    #[serde(default = "defaults::pool_size")]
    pub pool_size: u32,
    /// Connection timeout.
    #[serde(default = "defaults::connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Server-side statement timeout of pooled connections.
    #[serde(default = "defaults::statement_timeout", with = "humantime_serde")]
    pub statement_timeout: Duration,
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
}

/// A gRPC listener.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Listen address.
    pub address: SocketAddr,
}

/// Public gRPC API of a node.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PublicApiConfig {
    /// Listen address.
    pub address: SocketAddr,
    /// Largest accepted request, in bytes.
    #[serde(default = "defaults::max_request_size")]
    pub max_request_size: usize,
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
}

/// An extra listener for `/metrics` only.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Listen address.
    pub address: SocketAddr,
}

/// Sequencer HA parameters.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SequencerHaConfig {
    /// `N` of timestamp partitioning (< 32, the same on every node).
    pub total_node_count: u32,
    /// Idle watermark advance.
    #[serde(with = "humantime_serde")]
    pub keep_alive_interval: Duration,
    /// Period of the liveness check.
    #[serde(with = "humantime_serde")]
    pub online_check_interval: Duration,
    /// Watermark age after which a node is knocked offline.
    #[serde(with = "humantime_serde")]
    pub offline_duration: Duration,
    /// Longest wait for this host's clock to reach the highest watermark before going online.
    #[serde(with = "humantime_serde")]
    pub max_clock_wait: Duration,
}

/// Sequencer writer parameters.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WriterConfig {
    /// Sends waiting for the writer.
    pub queue_size: usize,
    /// Most sends per transaction.
    pub max_batch_size: usize,
    /// Largest distance of a max-sequencing-time into the future.
    #[serde(with = "humantime_serde")]
    pub max_sequencing_horizon: Duration,
    /// Accept a database with `synchronous_commit = off` (can lose delivered events on a
    /// PostgreSQL crash): throwaway test databases only.
    pub allow_unsafe_commit: bool,
}

/// Sequencer reader parameters.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReaderConfig {
    /// Events per read.
    pub read_batch_size: u32,
    /// Fallback re-read period when no notification arrives.
    #[serde(with = "humantime_serde")]
    pub polling_interval: Duration,
    /// Bytes of events buffered per subscription for a slow client (default 8 MiB).
    pub subscription_buffer_bytes: usize,
    /// Subscriptions served at once; beyond it RESOURCE_EXHAUSTED (default 1000).
    pub max_subscriptions: usize,
}

macro_rules! defaults_from_settings {
    ($($t:ident { $($f:ident),* })*) => {$(
        impl Default for $t {
            fn default() -> Self {
                let s = SequencerSettings::default();
                $t { $($f: s.$f),* }
            }
        }
    )*};
}
defaults_from_settings! {
    SequencerHaConfig { total_node_count, keep_alive_interval, online_check_interval, offline_duration, max_clock_wait }
    WriterConfig { queue_size, max_batch_size, max_sequencing_horizon, allow_unsafe_commit }
    ReaderConfig { read_batch_size, polling_interval, subscription_buffer_bytes, max_subscriptions }
}

/// One sequencer node.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SequencerNodeConfig {
    /// Overrides of the default `[storage]`.
    pub storage: Option<StorageOverride>,
    /// Public gRPC API.
    pub public_api: PublicApiConfig,
    /// Admin gRPC API.
    pub admin_api: ApiConfig,
    /// Health and metrics HTTP server.
    pub health: HealthConfig,
    /// Optional extra metrics listener.
    pub metrics: Option<MetricsConfig>,
    /// HA parameters.
    #[serde(default)]
    pub high_availability: SequencerHaConfig,
    /// Writer parameters.
    #[serde(default)]
    pub writer: WriterConfig,
    /// Reader parameters.
    #[serde(default)]
    pub reader: ReaderConfig,
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

impl SequencerNodeConfig {
    /// The sequencer's settings for node `name`.
    pub fn settings(&self, name: &str) -> SequencerSettings {
        let (ha, w, r) = (&self.high_availability, &self.writer, &self.reader);
        SequencerSettings {
            name: name.to_string(),
            total_node_count: ha.total_node_count,
            keep_alive_interval: ha.keep_alive_interval,
            online_check_interval: ha.online_check_interval,
            offline_duration: ha.offline_duration,
            polling_interval: r.polling_interval,
            queue_size: w.queue_size,
            max_batch_size: w.max_batch_size,
            read_batch_size: r.read_batch_size,
            subscription_buffer_bytes: r.subscription_buffer_bytes,
            max_subscriptions: r.max_subscriptions,
            max_request_size: self.public_api.max_request_size,
            max_sequencing_horizon: w.max_sequencing_horizon,
            max_clock_wait: ha.max_clock_wait,
            allow_unsafe_commit: w.allow_unsafe_commit,
            ..SequencerSettings::default()
        }
    }

    /// This node's storage: `[storage]` with the node's overrides applied.
    pub fn storage(&self, default: &Option<StorageConfig>) -> StorageConfig {
        merged_storage(&self.storage, default)
    }
}

fn merged_storage(own: &Option<StorageOverride>, default: &Option<StorageConfig>) -> StorageConfig {
    let mut s = default.clone().unwrap_or(StorageConfig {
        url: None,
        pool_size: defaults::pool_size(),
        connect_timeout: defaults::connect_timeout(),
        statement_timeout: defaults::statement_timeout(),
    });
    if let Some(o) = own {
        s.url = o.url.clone().or(s.url);
        s.pool_size = o.pool_size.unwrap_or(s.pool_size);
        s.connect_timeout = o.connect_timeout.unwrap_or(s.connect_timeout);
        s.statement_timeout = o.statement_timeout.unwrap_or(s.statement_timeout);
    }
    s
}

/// Leadership parameters of a replicated node (mediator, participant).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    /// How long the active's lease lasts without renewal before a passive may take over.
    #[serde(with = "humantime_serde")]
    pub lease_timeout: Duration,
    /// Period of lease renewal (active) and of the takeover check (passives); below `lease_timeout`.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// Time a new active waits after acquiring the lease before it serves.
    #[serde(with = "humantime_serde")]
    pub takeover_grace: Duration,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            lease_timeout: Duration::from_secs(2),
            check_interval: Duration::from_millis(200),
            takeover_grace: Duration::from_secs(1),
        }
    }
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
    /// Leadership parameters.
    #[serde(default)]
    pub replication: ReplicationConfig,
}

impl ReplicatedNodeConfig {
    /// This node's storage: `[storage]` with the node's overrides applied.
    pub fn storage(&self, default: &Option<StorageConfig>) -> StorageConfig {
        merged_storage(&self.storage, default)
    }
}

/// `health` of a replicated node: as [`HealthConfig`], but an unset `check` means `is-active`.
fn health_is_active_by_default<'de, D: serde::Deserializer<'de>>(d: D) -> Result<HealthConfig, D::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        address: SocketAddr,
        check: Option<HealthCheck>,
    }
    let raw = Raw::deserialize(d)?;
    Ok(HealthConfig { address: raw.address, check: raw.check.unwrap_or(HealthCheck::IsActive) })
}

/// A whole configuration: default storage and the nodes of this process.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Default storage of every node.
    pub storage: Option<StorageConfig>,
    /// Sequencer nodes by name.
    #[serde(default)]
    pub sequencers: BTreeMap<String, SequencerNodeConfig>,
    /// Mediator nodes by name.
    #[serde(default)]
    pub mediators: BTreeMap<String, ReplicatedNodeConfig>,
    /// Participant nodes by name.
    #[serde(default)]
    pub participants: BTreeMap<String, ReplicatedNodeConfig>,
}

impl Config {
    /// Kind and name of every node: sequencers, then mediators, then participants, each by name.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeKind, &str)> + '_ {
        self.endpoints().map(|e| (e.kind, e.name))
    }

    /// The kind of node `name`, if the configuration declares it.
    pub fn kind_of(&self, name: &str) -> Option<NodeKind> {
        self.nodes().find(|(_, n)| *n == name).map(|(k, _)| k)
    }

    /// What validation needs of every node, in [`Config::nodes`] order.
    fn endpoints(&self) -> impl Iterator<Item = Endpoints<'_>> + '_ {
        let seq = self.sequencers.iter().map(|(name, n)| Endpoints {
            kind: NodeKind::Sequencer,
            name,
            storage: &n.storage,
            public_api: &n.public_api,
            admin_api: &n.admin_api,
            health: &n.health,
            metrics: &n.metrics,
        });
        fn replicated(kind: NodeKind, nodes: &BTreeMap<String, ReplicatedNodeConfig>) -> impl Iterator<Item = Endpoints<'_>> {
            nodes.iter().map(move |(name, n)| Endpoints {
                kind,
                name,
                storage: &n.storage,
                public_api: &n.public_api,
                admin_api: &n.admin_api,
                health: &n.health,
                metrics: &n.metrics,
            })
        }
        seq.chain(replicated(NodeKind::Mediator, &self.mediators)).chain(replicated(NodeKind::Participant, &self.participants))
    }
}

/// The parts every kind of node has.
struct Endpoints<'a> {
    kind: NodeKind,
    name: &'a str,
    storage: &'a Option<StorageOverride>,
    public_api: &'a PublicApiConfig,
    admin_api: &'a ApiConfig,
    health: &'a HealthConfig,
    metrics: &'a Option<MetricsConfig>,
}

/// Addresses of nodes to administer (`syncline admin`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// Sequencers by name.
    #[serde(default)]
    pub sequencers: BTreeMap<String, RemoteNode>,
    /// Mediator replicas by name.
    #[serde(default)]
    pub mediators: BTreeMap<String, RemoteNode>,
    /// Participant replicas by name.
    #[serde(default)]
    pub participants: BTreeMap<String, RemoteNode>,
}

impl RemoteConfig {
    /// Every node with its kind: sequencers, then mediators, then participants.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeKind, &String, &RemoteNode)> {
        let kind = |k: NodeKind| move |(n, r)| (k, n, r);
        self.sequencers
            .iter()
            .map(kind(NodeKind::Sequencer))
            .chain(self.mediators.iter().map(kind(NodeKind::Mediator)))
            .chain(self.participants.iter().map(kind(NodeKind::Participant)))
    }

    /// The node called `name`, of any kind.
    pub fn node(&self, name: &str) -> Option<&RemoteNode> {
        self.nodes().find(|(_, n, _)| n.as_str() == name).map(|(_, _, r)| r)
    }
}

/// One node's admin address.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoteNode {
    /// `host:port` of its admin API.
    pub admin_api: String,
}

mod defaults {
    use std::time::Duration;
    pub fn pool_size() -> u32 {
        8
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(3)
    }
    pub fn statement_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn max_request_size() -> usize {
        4 * 1024 * 1024
    }
}

/// Load and validate the node configuration from `paths`, merged in order.
pub fn load(paths: &[PathBuf]) -> Result<Config, ConfigError> {
    let figment = merge(paths)?;
    let config: Config = extract(&figment)?;
    validate(&config, &figment)?;
    Ok(config)
}

/// Load a remote-administration configuration.
pub fn load_remote(paths: &[PathBuf]) -> Result<RemoteConfig, ConfigError> {
    extract(&merge(paths)?)
}

fn merge(paths: &[PathBuf]) -> Result<Figment, ConfigError> {
    let mut figment = Figment::new();
    for path in paths {
        let raw = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
        let text = substitute(path, &raw, |v| std::env::var(v).ok())?;
        toml::from_str::<toml::Value>(&text).map_err(|e| ConfigError::Syntax { path: path.clone(), message: e.to_string() })?;
        figment = figment.merge(TomlFile { path: path.clone(), text });
    }
    Ok(figment)
}

fn extract<T: serde::de::DeserializeOwned>(figment: &Figment) -> Result<T, ConfigError> {
    figment.extract().map_err(|e| ConfigError::Invalid(describe(e)))
}

/// One figment error per line, each with its key and file.
fn describe(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| {
            let key = e.path.iter().filter(|k| k.as_str() != "default").cloned().collect::<Vec<_>>().join(".");
            let file = e.metadata.as_ref().and_then(|m| m.source.as_ref()).map(|s| format!(" (in {s})")).unwrap_or_default();
            if key.is_empty() {
                format!("{}{file}", e.kind)
            } else {
                format!("{key}: {}{file}", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A TOML file as a figment provider whose errors name the file.
struct TomlFile {
    path: PathBuf,
    text: String,
}

impl Provider for TomlFile {
    fn metadata(&self) -> Metadata {
        Metadata::from(self.path.display().to_string(), figment::Source::File(self.path.clone()))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        use figment::providers::Format;
        figment::providers::Toml::string(&self.text).data()
    }
}

/// Replace `${VAR}` and `${VAR:-default}`; `$${` stands for a literal `${`.
pub fn substitute(path: &Path, text: &str, env: impl Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(body) = tail.strip_prefix("${") {
            let end = body.find('}').ok_or(ConfigError::Unterminated { path: path.to_path_buf(), at: text.len() - tail.len() })?;
            let expr = &body[..end];
            let (var, default) = match expr.split_once(":-") {
                Some((v, d)) => (v, Some(d)),
                None => (expr, None),
            };
            match (env(var), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(ConfigError::UnsetVariable { path: path.to_path_buf(), var: var.to_string() }),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn validate(config: &Config, figment: &Figment) -> Result<(), ConfigError> {
    let fail = |key: String, message: String| {
        let file = figment.find_metadata(&key).and_then(|m| m.source.as_ref()).map(|s| s.to_string());
        Err(ConfigError::Validation { key, message, file })
    };
    if config.endpoints().next().is_none() {
        return fail("sequencers".into(), "no node is configured (declare [sequencers.NAME], [mediators.NAME] or [participants.NAME])".into());
    }
    let mut names: HashMap<&str, NodeKind> = HashMap::new();
    let mut listeners: HashMap<SocketAddr, String> = HashMap::new();
    for node in config.endpoints() {
        let (kind, name) = (node.kind, node.name);
        let key = |k: &str| format!("{}.{name}.{k}", kind.table());
        if let Some(other) = names.insert(name, kind) {
            return fail(
                format!("{}.{name}", kind.table()),
                format!("the name {name} is already used by {other} {name} (node names are unique across sequencers, mediators and participants)"),
            );
        }
        let storage = merged_storage(node.storage, &config.storage);
        match &storage.url {
            None => return fail(key("storage.url"), "no database url (set [storage] url or this node's storage.url)".into()),
            Some(u) if u.parse::<tokio_postgres::Config>().is_err() => {
                return fail(key("storage.url"), format!("{u:?} is not a PostgreSQL connection string"))
            }
            _ => {}
        }
        // A pool of zero connections panics; a zero connect timeout fails every connection.
        if storage.pool_size == 0 {
            return fail(storage_key(&node, "pool_size"), "must be positive".into());
        }
        if storage.connect_timeout.is_zero() {
            return fail(storage_key(&node, "connect_timeout"), "must be positive".into());
        }
        match kind {
            NodeKind::Sequencer => {
                // The sequencer's own checks, so the daemon refuses at load what start would.
                if let Err(e) = config.sequencers[name].settings(name).validate() {
                    return fail(key(&sequencer_key(e.field)), e.problem);
                }
            }
            NodeKind::Mediator | NodeKind::Participant => {
                let nodes = if kind == NodeKind::Mediator { &config.mediators } else { &config.participants };
                let r = &nodes[name].replication;
                let show = |d: Duration| humantime_serde::re::humantime::format_duration(d).to_string();
                if r.check_interval.is_zero() {
                    return fail(key("replication.check_interval"), "must be positive".into());
                }
                if r.check_interval >= r.lease_timeout {
                    return fail(
                        key("replication.check_interval"),
                        format!("{} must be shorter than lease_timeout ({})", show(r.check_interval), show(r.lease_timeout)),
                    );
                }
            }
        }
        let mut addrs = vec![("public_api.address", node.public_api.address), ("admin_api.address", node.admin_api.address), ("health.address", node.health.address)];
        if let Some(m) = node.metrics {
            addrs.push(("metrics.address", m.address));
        }
        for (k, a) in addrs {
            if a.port() == 0 {
                continue;
            }
            if let Some(other) = listeners.insert(a, key(k)) {
                return fail(key(k), format!("{a} is already used by another listener ({other})"));
            }
        }
    }
    Ok(())
}

/// Where the configuration sets a [`SequencerSettings`] field, below `sequencers.NAME`.
fn sequencer_key(field: &str) -> String {
    let table = match field {
        "total_node_count" | "keep_alive_interval" | "online_check_interval" | "offline_duration" | "max_clock_wait" => {
            "high_availability"
        }
        "queue_size" | "max_batch_size" | "max_sequencing_horizon" | "write_timeout" => "writer",
        "max_request_size" => "public_api",
        _ => "reader",
    };
    format!("{table}.{field}")
}

/// The key that set storage `field` of `node`: its own override if it has one, else `[storage]`.
fn storage_key(node: &Endpoints<'_>, field: &str) -> String {
    let own = node.storage.as_ref().is_some_and(|o| match field {
        "pool_size" => o.pool_size.is_some(),
        "connect_timeout" => o.connect_timeout.is_some(),
        _ => false,
    });
    if own {
        format!("{}.{}.storage.{field}", node.kind.table(), node.name)
    } else {
        format!("storage.{field}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// A scratch directory, removed when dropped.
    struct Tmp(PathBuf);

    impl std::ops::Deref for Tmp {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tmp() -> Tmp {
        let d = std::env::temp_dir().join(format!("syncline-cfg-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&d).unwrap();
        Tmp(d)
    }

    const NODE: &str = r#"
[sequencers.seq1]
public_api = { address = "127.0.0.1:4001" }
admin_api = { address = "127.0.0.1:4002" }
health = { address = "127.0.0.1:4003" }
"#;

    const MEDIATOR: &str = r#"
[mediators.med1]
public_api = { address = "127.0.0.1:4011" }
admin_api = { address = "127.0.0.1:4012" }
health = { address = "127.0.0.1:4013" }
"#;

    const PARTICIPANT: &str = r#"
[participants.part1]
public_api = { address = "127.0.0.1:4021", max_request_size = 1024 }
admin_api = { address = "127.0.0.1:4022" }
health = { address = "127.0.0.1:4023", check = "ping" }
metrics = { address = "127.0.0.1:4024" }
"#;

    const STORAGE: &str = "[storage]\nurl = \"postgres://a@h/db\"\n";

    #[test]
    fn files_merge_in_order_and_tables_merge_deeply() {
        let d = tmp();
        let a = write(&d, "storage.toml", "[storage]\nurl = \"postgres://a@h/db\"\npool_size = 4\n");
        let b = write(&d, "seq.toml", &format!("{NODE}[sequencers.seq1.high_availability]\ntotal_node_count = 5\n"));
        let c = write(&d, "override.toml", "[storage]\npool_size = 16\n[sequencers.seq1.high_availability]\nkeep_alive_interval = \"20ms\"\n");
        let cfg = load(&[a, b, c]).unwrap();
        let s = cfg.storage.as_ref().unwrap();
        assert_eq!((s.url.as_deref(), s.pool_size), (Some("postgres://a@h/db"), 16));
        let ha = &cfg.sequencers["seq1"].high_availability;
        assert_eq!(ha.total_node_count, 5, "kept from the earlier file");
        assert_eq!(ha.keep_alive_interval, Duration::from_millis(20), "set by the later file");
        assert_eq!(ha.offline_duration, Duration::from_secs(8), "default");
        assert_eq!(cfg.sequencers["seq1"].health.check, HealthCheck::Ping);
    }

    #[test]
    fn per_node_storage_overrides_the_default() {
        let d = tmp();
        let a = write(&d, "a.toml", &format!("[storage]\nurl = \"postgres://a@h/db\"\n{NODE}storage = {{ url = \"postgres://b@h/other\" }}\n"));
        let cfg = load(&[a]).unwrap();
        let s = cfg.sequencers["seq1"].storage(&cfg.storage);
        assert_eq!(s.url.as_deref(), Some("postgres://b@h/other"));
        assert_eq!(s.pool_size, 8);
    }

    #[test]
    fn environment_variables_are_substituted() {
        let p = Path::new("x.toml");
        let env = |v: &str| (v == "PGPASS").then(|| "s3cret".to_string());
        assert_eq!(substitute(p, "url = \"postgres://u:${PGPASS}@h\"", env).unwrap(), "url = \"postgres://u:s3cret@h\"");
        assert_eq!(substitute(p, "port = ${PORT:-5432}", env).unwrap(), "port = 5432");
        assert_eq!(substitute(p, "x = \"$${NOT}\" $5", env).unwrap(), "x = \"${NOT}\" $5");
        let e = substitute(p, "url = \"${NOPE}\"", env).unwrap_err().to_string();
        assert!(e.contains("x.toml") && e.contains("NOPE is not set"), "{e}");
        assert!(substitute(p, "url = \"${OPEN", env).unwrap_err().to_string().contains("unterminated"));
    }

    #[test]
    fn unknown_keys_are_errors_naming_key_and_file() {
        let d = tmp();
        let a = write(&d, "storage.toml", "[storage]\nurl = \"postgres://a@h/db\"\n");
        let b = write(&d, "typo.toml", &format!("{NODE}[sequencers.seq1.high_availability]\ntotal_nodes = 3\n"));
        let e = load(&[a, b.clone()]).unwrap_err().to_string();
        assert!(e.contains("sequencers.seq1.high_availability") && e.contains("total_nodes"), "{e}");
        assert!(e.contains(&b.display().to_string()), "{e}");
    }

    #[test]
    fn wrong_types_and_bad_values_are_explained() {
        let d = tmp();
        let a = write(&d, "a.toml", &format!("[storage]\nurl = \"postgres://a@h/db\"\n{NODE}[sequencers.seq1.high_availability]\ntotal_node_count = \"ten\"\n"));
        let e = load(&[a]).unwrap_err().to_string();
        assert!(e.contains("sequencers.seq1.high_availability.total_node_count"), "{e}");
        let b = write(&d, "b.toml", &format!("[storage]\nurl = \"postgres://a@h/db\"\n{NODE}[sequencers.seq1.high_availability]\ntotal_node_count = 40\n"));
        let e = load(std::slice::from_ref(&b)).unwrap_err().to_string();
        assert_eq!(e, format!("sequencers.seq1.high_availability.total_node_count: 40 is not between 1 and 31 (in {})", b.display()));
        let c = write(&d, "c.toml", &format!("[storage]\nurl = \"postgres://a@h/db\"\n{NODE}[sequencers.seq1.writer]\nmax_sequencing_horizon = \"soon\"\n"));
        assert!(load(&[c]).unwrap_err().to_string().contains("max_sequencing_horizon"));
        let s = write(&d, "s.toml", "[storage\nurl = 1");
        let e = load(std::slice::from_ref(&s)).unwrap_err().to_string();
        assert!(e.starts_with(&s.display().to_string()), "{e}");
    }

    #[test]
    fn zero_intervals_are_refused_at_load_naming_key_and_file() {
        let d = tmp();
        let seq = |name: &str, table: &str, body: &str| write(&d, name, &format!("{STORAGE}{NODE}[sequencers.seq1.{table}]\n{body}\n"));
        let a = seq("a.toml", "high_availability", "online_check_interval = \"0s\"");
        assert_eq!(
            load(std::slice::from_ref(&a)).unwrap_err().to_string(),
            format!("sequencers.seq1.high_availability.online_check_interval: must be positive (in {})", a.display())
        );
        let b = seq("b.toml", "high_availability", "keep_alive_interval = \"0ms\"");
        assert_eq!(
            load(std::slice::from_ref(&b)).unwrap_err().to_string(),
            format!("sequencers.seq1.high_availability.keep_alive_interval: must be positive (in {})", b.display())
        );
        for (table, body, key) in [
            ("reader", "polling_interval = \"0s\"", "reader.polling_interval"),
            ("reader", "read_batch_size = 0", "reader.read_batch_size"),
            ("writer", "queue_size = 0", "writer.queue_size"),
            ("writer", "max_batch_size = 0", "writer.max_batch_size"),
            ("writer", "max_sequencing_horizon = \"0s\"", "writer.max_sequencing_horizon"),
            ("high_availability", "offline_duration = \"0s\"", "high_availability.offline_duration"),
            ("high_availability", "online_check_interval = \"100000years\"", "high_availability.online_check_interval"),
            ("high_availability", "keep_alive_interval = \"10s\"", "high_availability.keep_alive_interval"),
        ] {
            let f = seq("c.toml", table, body);
            let e = load(std::slice::from_ref(&f)).unwrap_err().to_string();
            assert!(e.starts_with(&format!("sequencers.seq1.{key}: ")) && e.ends_with(&format!("(in {})", f.display())), "{body}: {e}");
        }
        let e = seq("e.toml", "high_availability", "keep_alive_interval = \"10s\"");
        let e = load(&[e]).unwrap_err().to_string();
        assert!(e.contains("10s must be shorter than offline_duration (8s)"), "{e}");
        let p = write(&d, "p.toml", &format!("[storage]\nurl = \"postgres://a@h/db\"\npool_size = 0\n{NODE}"));
        assert_eq!(load(std::slice::from_ref(&p)).unwrap_err().to_string(), format!("storage.pool_size: must be positive (in {})", p.display()));
        let q = write(&d, "q.toml", &format!("{STORAGE}{NODE}storage = {{ connect_timeout = \"0s\" }}\n"));
        let e = load(std::slice::from_ref(&q)).unwrap_err().to_string();
        assert_eq!(e, format!("sequencers.seq1.storage.connect_timeout: must be positive (in {})", q.display()));
    }

    #[test]
    fn missing_storage_duplicate_addresses_and_empty_configs_are_refused() {
        let d = tmp();
        let a = write(&d, "a.toml", NODE);
        let e = load(&[a]).unwrap_err().to_string();
        assert!(e.contains("sequencers.seq1.storage.url") && e.contains("no database url"), "{e}");
        let b = write(&d, "b.toml", &format!("[storage]\nurl = \"postgres://a@h/db\"\n{NODE}[sequencers.seq2]\npublic_api = {{ address = \"127.0.0.1:4001\" }}\nadmin_api = {{ address = \"127.0.0.1:5002\" }}\nhealth = {{ address = \"127.0.0.1:5003\" }}\n"));
        let e = load(&[b]).unwrap_err().to_string();
        assert!(e.contains("127.0.0.1:4001 is already used"), "{e}");
        let c = write(&d, "c.toml", "[storage]\nurl = \"postgres://a@h/db\"\n");
        assert!(load(&[c]).unwrap_err().to_string().contains("no node is configured"));
        let e = load(&[d.join("missing.toml")]).unwrap_err().to_string();
        assert!(e.contains("missing.toml"), "{e}");
    }

    #[test]
    fn remote_configs_list_admin_addresses() {
        let d = tmp();
        let a = write(&d, "r.toml", "[sequencers.a]\nadmin_api = \"127.0.0.1:1\"\n[sequencers.b]\nadmin_api = \"127.0.0.1:2\"\n");
        let r = load_remote(&[a]).unwrap();
        assert_eq!(r.sequencers.len(), 2);
    }

    #[test]
    fn mediators_and_participants_are_replicated_nodes_with_defaults() {
        let d = tmp();
        let a = write(&d, "a.toml", &format!("{STORAGE}{NODE}{MEDIATOR}{PARTICIPANT}storage = {{ pool_size = 2 }}\n"));
        let b = write(&d, "b.toml", "[participants.part1.replication]\nlease_timeout = \"5s\"\ncheck_interval = \"1s 500ms\"\ntakeover_grace = \"0s\"\n");
        let cfg = load(&[a, b]).unwrap();
        let m = &cfg.mediators["med1"];
        assert_eq!(m.health.check, HealthCheck::IsActive, "replicated nodes check is-active by default");
        assert_eq!(m.replication, ReplicationConfig { lease_timeout: Duration::from_secs(2), check_interval: Duration::from_millis(200), takeover_grace: Duration::from_secs(1) });
        assert_eq!((m.public_api.max_request_size, m.metrics.as_ref()), (4 * 1024 * 1024, None));
        let p = &cfg.participants["part1"];
        assert_eq!(p.health.check, HealthCheck::Ping, "set explicitly");
        assert_eq!(p.public_api.max_request_size, 1024);
        assert_eq!(p.metrics.as_ref().map(|m| m.address.port()), Some(4024));
        assert_eq!(p.replication, ReplicationConfig { lease_timeout: Duration::from_secs(5), check_interval: Duration::from_millis(1500), takeover_grace: Duration::ZERO });
        let s = p.storage(&cfg.storage);
        assert_eq!((s.url.as_deref(), s.pool_size), (Some("postgres://a@h/db"), 2));
        assert_eq!(cfg.sequencers["seq1"].health.check, HealthCheck::Ping, "sequencers still default to ping");
        let nodes: Vec<_> = cfg.nodes().collect();
        assert_eq!(nodes, [(NodeKind::Sequencer, "seq1"), (NodeKind::Mediator, "med1"), (NodeKind::Participant, "part1")]);
        assert_eq!((cfg.kind_of("part1"), cfg.kind_of("nope")), (Some(NodeKind::Participant), None));
        // A configuration of replicated nodes only is complete.
        let c = write(&d, "c.toml", &format!("{STORAGE}{MEDIATOR}"));
        assert_eq!(load(&[c]).unwrap().nodes().count(), 1);
    }

    #[test]
    fn unknown_keys_of_replicated_nodes_are_errors_naming_key_and_file() {
        let d = tmp();
        let a = write(&d, "a.toml", &format!("{STORAGE}{MEDIATOR}[mediators.med1.replication]\nlease = \"1s\"\n"));
        let e = load(std::slice::from_ref(&a)).unwrap_err().to_string();
        assert!(e.contains("mediators.med1.replication") && e.contains("lease") && e.contains(&a.display().to_string()), "{e}");
        let b = write(&d, "b.toml", &format!("{STORAGE}{}", MEDIATOR.replace("4013\" }", "4013\", chek = \"ping\" }")));
        let e = load(std::slice::from_ref(&b)).unwrap_err().to_string();
        assert!(e.contains("mediators.med1.health") && e.contains("chek") && e.contains(&b.display().to_string()), "{e}");
        let c = write(&d, "c.toml", &format!("{STORAGE}{}", PARTICIPANT.replace("\"ping\"", "\"alive\"")));
        let e = load(&[c]).unwrap_err().to_string();
        assert!(e.contains("participants.part1.health") && e.contains("alive"), "{e}");
        let f = write(&d, "f.toml", &format!("{STORAGE}{PARTICIPANT}[participants.part1.replication]\ntakeover_grace = \"soon\"\n"));
        let e = load(&[f]).unwrap_err().to_string();
        assert!(e.contains("participants.part1.replication.takeover_grace"), "{e}");
        let g = write(&d, "g.toml", &format!("{STORAGE}[observers.o1]\nadmin_api = {{ address = \"127.0.0.1:1\" }}\n"));
        let e = load(&[g]).unwrap_err().to_string();
        assert!(e.contains("observers"), "{e}");
    }

    #[test]
    fn replication_timing_is_validated() {
        let d = tmp();
        let a = write(&d, "a.toml", &format!("{STORAGE}{PARTICIPANT}[participants.part1.replication]\nlease_timeout = \"1s\"\ncheck_interval = \"2s\"\n"));
        let e = load(std::slice::from_ref(&a)).unwrap_err().to_string();
        assert_eq!(e, format!("participants.part1.replication.check_interval: 2s must be shorter than lease_timeout (1s) (in {})", a.display()));
        let b = write(&d, "b.toml", &format!("{STORAGE}{MEDIATOR}[mediators.med1.replication]\nlease_timeout = \"100ms\"\n"));
        let e = load(&[b]).unwrap_err().to_string();
        assert_eq!(e, "mediators.med1.replication.check_interval: 200ms must be shorter than lease_timeout (100ms)", "the default check_interval is set in no file");
        let c = write(&d, "c.toml", &format!("{STORAGE}{MEDIATOR}[mediators.med1.replication]\ncheck_interval = \"0s\"\n"));
        let e = load(&[c]).unwrap_err().to_string();
        assert!(e.starts_with("mediators.med1.replication.check_interval: must be positive"), "{e}");
    }

    #[test]
    fn names_and_addresses_are_unique_across_node_kinds_and_replicated_nodes_need_storage() {
        let d = tmp();
        let a = write(&d, "a.toml", &format!("{STORAGE}{NODE}{}", MEDIATOR.replace("4013", "4003")));
        let e = load(&[a]).unwrap_err().to_string();
        assert!(e.starts_with("mediators.med1.health.address: 127.0.0.1:4003 is already used by another listener (sequencers.seq1.health.address)"), "{e}");
        let b = write(&d, "b.toml", &format!("{STORAGE}{}", PARTICIPANT.replace("4024", "4021")));
        let e = load(&[b]).unwrap_err().to_string();
        assert!(e.starts_with("participants.part1.metrics.address: 127.0.0.1:4021 is already used by another listener (participants.part1.public_api.address)"), "{e}");
        let c = write(&d, "c.toml", &format!("{STORAGE}{NODE}{}", PARTICIPANT.replace("part1", "seq1")));
        let e = load(&[c]).unwrap_err().to_string();
        assert!(e.starts_with("participants.seq1: the name seq1 is already used by sequencer seq1"), "{e}");
        let f = write(&d, "f.toml", MEDIATOR);
        let e = load(&[f]).unwrap_err().to_string();
        assert!(e.contains("mediators.med1.storage.url") && e.contains("no database url"), "{e}");
        let g = write(&d, "g.toml", &format!("{MEDIATOR}storage = {{ url = \"not a url\" }}\n"));
        let e = load(&[g]).unwrap_err().to_string();
        assert!(e.contains("mediators.med1.storage.url") && e.contains("is not a PostgreSQL connection string"), "{e}");
    }

    #[test]
    fn remote_config_lists_nodes_of_every_kind_and_refuses_unknown_keys() {
        let d = tmp();
        let f = write(&d, "remote.toml", "[sequencers.s1]\nadmin_api = \"h1:1\"\n[mediators.m1]\nadmin_api = \"h2:2\"\n[participants.p1]\nadmin_api = \"h3:3\"\n");
        let r = load_remote(&[f]).unwrap();
        let names: Vec<(NodeKind, &str)> = r.nodes().map(|(k, n, _)| (k, n.as_str())).collect();
        assert_eq!(names, vec![(NodeKind::Sequencer, "s1"), (NodeKind::Mediator, "m1"), (NodeKind::Participant, "p1")]);
        assert_eq!(r.node("m1").unwrap().admin_api, "h2:2");
        let bad = write(&d, "bad.toml", "[mediators.m1]\nadmin = \"h2:2\"\n");
        let e = load_remote(&[bad]).unwrap_err().to_string();
        assert!(e.contains("admin"), "{e}");
    }
}
