//! The topology every member agrees on.
//!
//! Topology transactions are broadcast through the sequencer, so every member receives them in
//! one order. Each node feeds them to [`processor::apply`], which checks them deterministically
//! ([`authorization`], [`mapping`] serial rules) against the node's own [`store`] and records
//! each as accepted (effective from its sequencing time plus the topology change delay) or
//! ignored. [`store::snapshot_at`] answers "the topology at timestamp T" ([`snapshot`]).

pub mod authorization;
pub mod mapping;
pub mod processor;
pub mod snapshot;
pub mod store;

pub use authorization::{Rejection, OPERATOR};
pub use mapping::MappingKey;
pub use processor::{apply, Applied, BROADCAST_RECIPIENT};
pub use snapshot::TopologySnapshot;
pub use store::{snapshot_at, Outcome, StoredTransaction};

use syncline_coordination::DbError;

use crate::messages::DecodeError;

/// What a topology store or processor call can fail with (never an ignored transaction: that
/// is an [`Applied::Ignored`] outcome).
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The database failed (see [`DbError::is_retryable`]).
    #[error(transparent)]
    Db(#[from] DbError),
    /// A stored transaction no longer decodes (written by another protocol version?).
    #[error("the topology transaction stored at {sequenced_at} cannot be read")]
    Corrupt {
        /// Its sequencing timestamp.
        sequenced_at: i64,
        /// Why.
        #[source]
        source: DecodeError,
    },
    /// A transaction older than the latest stored one, and not stored itself: transactions
    /// must be applied in sequencing order.
    #[error("topology transaction sequenced at {sequenced_at} arrived after one sequenced at {latest}")]
    OutOfOrder {
        /// The transaction's sequencing timestamp.
        sequenced_at: i64,
        /// The latest stored one.
        latest: i64,
    },
    /// A different transaction (or sender) is already stored at this timestamp: this store
    /// was fed from another sequencer history.
    #[error("a different topology transaction (sent by {stored_sender}) is already stored at {sequenced_at}")]
    ConflictingReplay {
        /// The sequencing timestamp.
        sequenced_at: i64,
        /// The sender stored there.
        stored_sender: String,
    },
}

impl TopologyError {
    /// True when the same call may succeed later (a database outage or conflict).
    pub fn is_retryable(&self) -> bool {
        matches!(self, TopologyError::Db(e) if e.is_retryable())
    }
}

/// Errors raised inside `transaction` closures (BEGIN/COMMIT included).
impl From<diesel::result::Error> for TopologyError {
    fn from(e: diesel::result::Error) -> Self {
        TopologyError::Db(DbError::from_diesel("applying a topology transaction", e))
    }
}
