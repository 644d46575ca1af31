//! What stops the mediator's leader work (the replica manager then starts it again).

use syncline_coordination::{DbError, LeadershipError};
use syncline_protocol::subscription::SubscriptionError;
use syncline_protocol::topology::TopologyError;

/// Why the leader's run ended.
#[derive(Debug, thiserror::Error)]
pub enum MediatorError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// This replica was fenced by a newer leader, or its fenced write failed.
    #[error(transparent)]
    Leadership(#[from] LeadershipError),
    /// The topology store failed.
    #[error("topology store")]
    Topology(#[from] TopologyError),
    /// The subscription to the sequencers failed.
    #[error(transparent)]
    Subscription(#[from] SubscriptionError),
    /// A failpoint stopped the run (tests only).
    #[error("failpoint {0}")]
    Failpoint(&'static str),
}
