//! The database layer's error type, [`DbError`], and its classification into retryable or
//! not. Each layer above wraps it in its own type (the leadership module's
//! `LeadershipError`, a service's store error); the one retry policy ([`crate::db::retry`])
//! asks only the `DbError` inside, through [`HasDbError`].

use std::time::Duration;

/// Result of a database call.
pub type Result<T, E = DbError> = std::result::Result<T, E>;

/// Everything a call to the database can fail with. `is_retryable` tells callers whether to
/// try again later (outage, contention, timeout) or to act (a bug, a bad configuration).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database cannot be reached or dropped the connection; try again later.
    #[error("database unavailable while {during}: {reason}")]
    Connection {
        /// What was being done.
        during: String,
        /// Why.
        reason: String,
    },
    /// No pooled connection could be had in time (the pool is exhausted or cannot connect).
    #[error("no database connection while {during}: {reason}")]
    Pool {
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
    /// The operation did not finish in time.
    #[error("timed out after {after:?} while {during}")]
    Timeout {
        /// What was being done.
        during: String,
        /// How long it waited.
        after: Duration,
    },
    /// Applying the schema migrations failed.
    #[error("schema migration failed: {0}")]
    Migration(String),
    /// The dedicated connection holding an advisory lock was lost, so the lock is gone too.
    #[error("lost the advisory lock {what}: {reason}")]
    LockLost {
        /// What could not be done.
        what: String,
        /// Why.
        reason: String,
    },
    /// The database configuration (its URL) is unusable.
    #[error("invalid database configuration: {0}")]
    InvalidConfig(String),
}

impl DbError {
    /// True when the same call may succeed later without anyone acting on the cause.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            DbError::Connection { .. } | DbError::Pool { .. } | DbError::Conflict { .. } | DbError::Timeout { .. }
        )
    }

    /// True for a transaction conflict (40001, 40P01), which a retry on the same session can cure.
    pub fn is_conflict(&self) -> bool {
        matches!(self, DbError::Conflict { .. })
    }

    /// Classify a Diesel error raised while doing `during`.
    pub fn from_diesel(during: &str, e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind as K, Error as E};
        let during = during.to_string();
        match &e {
            E::DatabaseError(K::SerializationFailure, info) => {
                DbError::Conflict { during, reason: info.message().to_string() }
            }
            E::DatabaseError(K::UnableToSendCommand | K::ClosedConnection, info) => {
                DbError::Connection { during, reason: info.message().to_string() }
            }
            E::BrokenTransactionManager => {
                DbError::Connection { during, reason: "connection broke inside a transaction".into() }
            }
            // diesel-async does not expose SQLSTATE for these; Postgres' messages are stable
            // in the C locale our clusters use.
            E::DatabaseError(K::Unknown, info) => {
                let msg = info.message();
                if msg.contains("deadlock detected") {
                    DbError::Conflict { during, reason: msg.to_string() }
                } else if is_transient_message(msg) {
                    DbError::Connection { during, reason: msg.to_string() }
                } else {
                    DbError::Query { during, source: e }
                }
            }
            _ => DbError::Query { during, source: e },
        }
    }

    /// Classify a connection error raised while doing `during`: always retryable.
    pub fn from_connection(during: &str, e: impl std::fmt::Display) -> Self {
        DbError::Connection { during: during.to_string(), reason: e.to_string() }
    }

    /// A pool that could not hand out a connection while doing `during`: retryable.
    pub fn from_pool(during: &str, e: impl std::fmt::Display) -> Self {
        DbError::Pool { during: during.to_string(), reason: e.to_string() }
    }
}

/// Errors raised inside `transaction` closures (BEGIN/COMMIT included).
impl From<diesel::result::Error> for DbError {
    fn from(e: diesel::result::Error) -> Self {
        DbError::from_diesel("running a transaction", e)
    }
}

/// An error type of a layer above the database that may wrap a [`DbError`]: the retry
/// policy retries exactly those whose `DbError` is retryable.
pub trait HasDbError {
    /// The database error inside, if this is one.
    fn db_error(&self) -> Option<&DbError>;
}

impl HasDbError for DbError {
    fn db_error(&self) -> Option<&DbError> {
        Some(self)
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
    /// Map a Diesel error to a classified [`DbError`].
    fn during(self, what: &str) -> Result<T>;
}

impl<T> DieselContext<T> for std::result::Result<T, diesel::result::Error> {
    fn during(self, what: &str) -> Result<T> {
        self.map_err(|e| DbError::from_diesel(what, e))
    }
}
