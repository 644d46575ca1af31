//! The coordination crate's error type and its classification into retryable or not.

use std::time::Duration;

/// Result of a coordination call.
pub type Result<T, E = CoordError> = std::result::Result<T, E>;

/// Everything a coordination call can fail with. `is_retryable` tells callers whether to try
/// again later (database outage, contention) or to act (fenced, marked offline, bad input).
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    /// The database cannot be reached or dropped the connection; try again later.
    #[error("database unavailable while {during}: {reason}")]
    Unavailable {
        /// What was being done.
        during: String,
        /// Why.
        reason: String,
    },
    /// A serialization failure (40001) or deadlock (40P01) outlived the retries.
    #[error("transaction conflict while {during}: {reason}")]
    Conflict {
        /// What was being done.
        during: String,
        /// Why.
        reason: String,
    },
    /// Any other database error: a bug or a schema mismatch, not retried.
    #[error("database error while {during}: {source}")]
    Query {
        /// What was being done.
        during: String,
        /// The database's error.
        #[source]
        source: diesel::result::Error,
    },
    /// Applying the schema migrations failed.
    #[error("schema migration failed: {0}")]
    Migration(String),
    /// Every sequencer node index is online or locked by another process.
    #[error("all {total} sequencer node indexes are in use (raise total_node_count or stop a node)")]
    AllIndexesInUse {
        /// The total node count.
        total: u32,
    },
    /// This node's watermark row was marked offline by someone: the writer must stop and recover.
    #[error("sequencer node {node_index} was marked offline")]
    MarkedOffline {
        /// The sequencer node index.
        node_index: u32,
    },
    /// This node's watermark row does not hold what it just wrote: another process writes
    /// with the same index, or the row vanished.
    #[error("watermark of sequencer node {node_index} changed by someone else (expected {expected}, found {found:?})")]
    WatermarkChanged {
        /// The sequencer node index.
        node_index: u32,
        /// The watermark this node wrote.
        expected: i64,
        /// What the row holds instead (`None`: the row is gone).
        found: Option<i64>,
    },
    /// The dedicated connection holding an advisory lock was lost, so the lock is gone too.
    #[error("lost the advisory lock {what}: {reason}")]
    LockLost {
        /// What could not be done.
        what: String,
        /// Why.
        reason: String,
    },
    /// A write carried a fencing epoch older than the group's current one.
    #[error("fenced: replica group {group} is at epoch {current}, this write carried epoch {epoch}")]
    Fenced {
        /// The replica group.
        group: String,
        /// The epoch the write carried.
        epoch: i64,
        /// The group's current epoch.
        current: i64,
    },
    /// The operation needs the active replica, and this one is passive.
    #[error("replica is not active in group {group}")]
    NotActive {
        /// The replica group.
        group: String,
    },
    /// `set_passive` found no replica waiting to take over, so this one stays active.
    #[error("no passive replica of group {group} is waiting to take over; staying active")]
    NoStandby {
        /// The replica group.
        group: String,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The operation did not finish in time.
    #[error("timed out after {after:?} while {during}")]
    Timeout {
        /// What was being done.
        during: String,
        /// How long it waited.
        after: Duration,
    },
}

impl CoordError {
    /// True when the same call may succeed later without anyone acting on the cause.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            CoordError::Unavailable { .. }
                | CoordError::Conflict { .. }
                | CoordError::AllIndexesInUse { .. }
                | CoordError::Timeout { .. }
        )
    }

    /// Classify a Diesel error raised while doing `during`.
    pub fn from_diesel(during: &str, e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind as K, Error as E};
        let during = during.to_string();
        match &e {
            E::DatabaseError(K::SerializationFailure, info) => {
                CoordError::Conflict { during, reason: info.message().to_string() }
            }
            E::DatabaseError(K::UnableToSendCommand | K::ClosedConnection, info) => {
                CoordError::Unavailable { during, reason: info.message().to_string() }
            }
            E::BrokenTransactionManager => {
                CoordError::Unavailable { during, reason: "connection broke inside a transaction".into() }
            }
            // diesel-async does not expose SQLSTATE for these; Postgres' messages are stable
            // in the C locale our clusters use.
            E::DatabaseError(K::Unknown, info) => {
                let msg = info.message();
                if msg.contains("deadlock detected") {
                    CoordError::Conflict { during, reason: msg.to_string() }
                } else if is_transient_message(msg) {
                    CoordError::Unavailable { during, reason: msg.to_string() }
                } else {
                    CoordError::Query { during, source: e }
                }
            }
            _ => CoordError::Query { during, source: e },
        }
    }

    /// Classify a connection error raised while doing `during`: always retryable.
    pub fn from_connection(during: &str, e: impl std::fmt::Display) -> Self {
        CoordError::Unavailable { during: during.to_string(), reason: e.to_string() }
    }
}

/// Errors raised inside `transaction` closures (BEGIN/COMMIT included).
impl From<diesel::result::Error> for CoordError {
    fn from(e: diesel::result::Error) -> Self {
        CoordError::from_diesel("running a transaction", e)
    }
}

fn is_transient_message(msg: &str) -> bool {
    const TRANSIENT: &[&str] = &[
        "canceling statement due to statement timeout",
        "canceling statement due to lock timeout",
        "terminating connection",
        "the database system is starting up",
        "the database system is shutting down",
        "the database system is in recovery mode",
        "connection",
        "too many clients",
        "server closed",
    ];
    TRANSIENT.iter().any(|t| msg.contains(t))
}

/// Attach a "while doing X" context to Diesel results.
pub trait DieselContext<T> {
    /// Map a Diesel error to a classified [`CoordError`].
    fn during(self, what: &str) -> Result<T>;
}

impl<T> DieselContext<T> for std::result::Result<T, diesel::result::Error> {
    fn during(self, what: &str) -> Result<T> {
        self.map_err(|e| CoordError::from_diesel(what, e))
    }
}
