//! Node configuration: TOML files merged in order (later files win, tables merge deeply),
//! `${VAR}` / `${VAR:-default}` substitution, unknown keys refused. Errors name the file,
//! the key and what is wrong.
//!
//! The runtime owns what every kind of node shares: the loader, the common sections
//! ([`sections`]) and the checks across nodes (unique names and listeners). Each service owns
//! its node section (`[sequencers.NAME]`, …) as a [`NodeSection`], with its documented
//! defaults and its own checks; the binary composes the top-level table as a [`NodesConfig`]
//! and loads it with [`load`].

mod load;
mod remote;
pub mod sections;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

pub use load::{load, load_remote, substitute};
pub use remote::{RemoteConfig, RemoteNode, RemoteTls};
pub use sections::{
    ApiConfig, HealthCheck, HealthConfig, MetricsConfig, PublicApiConfig, ReplicatedNodeConfig, StorageConfig,
    StorageOverride, TlsConfig,
};

/// A configuration problem, with where it is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `${VAR}` names a variable that is not set and has no default.
    #[error("{path}: environment variable {var} is not set (use ${{{var}:-default}} for a default)")]
    UnsetVariable {
        /// The file.
        path: PathBuf,
        /// The environment variable.
        var: String,
    },
    /// `${` without a closing brace.
    #[error("{path}: unterminated ${{ at byte {at}")]
    Unterminated {
        /// The file.
        path: PathBuf,
        /// Byte offset of the unterminated `${`.
        at: usize,
    },
    /// Not valid TOML.
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A key is unknown, missing or of the wrong type.
    #[error("{0}")]
    Invalid(String),
    /// Values that do not fit together; `file` is the file that set `key`, when one did.
    #[error("{key}: {message}{}", in_file(file))]
    Validation {
        /// The config key, e.g. `sequencers.seq1.writer.queue_size`.
        key: String,
        /// What is wrong.
        message: String,
        /// The file that set it, if known.
        file: Option<String>,
    },
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

/// The sections every node has, whatever its kind.
#[derive(Clone, Copy, Debug)]
pub struct CommonSections<'a> {
    /// Overrides of the default `[storage]`.
    pub storage: Option<&'a StorageOverride>,
    /// Public gRPC API.
    pub public_api: &'a PublicApiConfig,
    /// Admin gRPC API.
    pub admin_api: &'a ApiConfig,
    /// Health and metrics HTTP server.
    pub health: &'a HealthConfig,
    /// Optional extra metrics listener.
    pub metrics: Option<&'a MetricsConfig>,
}

/// A key of a node's section whose value is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct InvalidKey {
    /// The key below the node's table, e.g. `writer.queue_size`.
    pub key: String,
    /// What is wrong with its value.
    pub problem: String,
}

/// One node's section of the configuration (`[sequencers.NAME]`, …), owned by its service.
///
/// A section declares every key itself (no `#[serde(flatten)]` of the common sections:
/// `deny_unknown_fields` does not work through it) and hands the common ones out here.
pub trait NodeSection {
    /// The sections every node has.
    fn common(&self) -> CommonSections<'_>;

    /// This kind's own checks, run at load so that the daemon refuses what starting the node
    /// would.
    fn validate(&self) -> Result<(), InvalidKey>;

    /// This node's storage: `[storage]` with the node's overrides applied.
    fn storage(&self, default: Option<&StorageConfig>) -> StorageConfig {
        StorageConfig::merged(default, self.common().storage)
    }
}

/// One node of a configuration.
#[derive(Clone, Copy)]
pub struct NodeRef<'a> {
    /// Its kind.
    pub kind: NodeKind,
    /// Its name (unique across kinds).
    pub name: &'a str,
    /// Its section.
    pub section: &'a dyn NodeSection,
}

/// The nodes of `kind` in a table of sections, by name.
pub fn nodes_of<S: NodeSection>(kind: NodeKind, nodes: &BTreeMap<String, S>) -> impl Iterator<Item = NodeRef<'_>> {
    nodes.iter().map(move |(name, section)| NodeRef { kind, name, section })
}

/// A whole configuration as a binary composes it: the default storage and the nodes of every
/// kind it runs, each in its own table.
pub trait NodesConfig: serde::de::DeserializeOwned {
    /// The default `[storage]` of every node.
    fn default_storage(&self) -> Option<&StorageConfig>;

    /// Every node, in the order they start.
    fn nodes(&self) -> Vec<NodeRef<'_>>;

    /// The kind of node `name`, if the configuration declares it.
    fn kind_of(&self, name: &str) -> Option<NodeKind> {
        self.nodes().into_iter().find(|n| n.name == name).map(|n| n.kind)
    }
}
