//! What stops the mediator's leader work (the replica manager then starts it again).

use syncline_coordination::{DbError, LeadershipError};
use syncline_protocol::topology::TopologyError;
use syncline_sequencer_client::SubscribeError;

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
    #[error("subscription to the sequencers failed")]
    Subscription(#[from] SubscribeError),
    /// A failpoint stopped the run (tests only).
    #[error("failpoint {0}")]
    Failpoint(&'static str),
    /// The subscription ended without an error (it never should).
    #[error("the subscription to the sequencers ended")]
    SubscriptionEnded,
}
