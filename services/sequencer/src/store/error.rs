//! The sequencer store's error type: the database's errors ([`DbError`]) and the store's own
//! outcomes a caller has to act on.

use syncline_coordination::error::{DbError, HasDbError};

/// Result of a store call.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything a store call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
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
    /// The partitioning (node index, total node count) or the database's settings do not
    /// allow this node to sequence.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
}

impl StoreError {
    /// True when the same call may succeed later without anyone acting on the cause.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Db(e) => e.is_retryable(),
            StoreError::AllIndexesInUse { .. } => true,
            _ => false,
        }
    }
}

impl HasDbError for StoreError {
    fn db_error(&self) -> Option<&DbError> {
        match self {
            StoreError::Db(e) => Some(e),
            _ => None,
        }
    }
}

/// Errors raised inside `transaction` closures (BEGIN/COMMIT included).
impl From<diesel::result::Error> for StoreError {
    fn from(e: diesel::result::Error) -> Self {
        StoreError::Db(e.into())
    }
}

/// Attach a "while doing X" context to Diesel results, as a [`StoreError`].
pub trait DieselContext<T> {
    /// Map a Diesel error to a classified database error.
    fn during(self, what: &str) -> Result<T>;
}

impl<T> DieselContext<T> for std::result::Result<T, diesel::result::Error> {
    fn during(self, what: &str) -> Result<T> {
        self.map_err(|e| StoreError::Db(DbError::from_diesel(what, e)))
    }
}
