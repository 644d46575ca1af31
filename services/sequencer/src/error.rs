//! The sequencer's error type and how each error reaches a gRPC client: every gRPC error
//! of the sequencer is a [`SequencerError`] turned into a status by the one `From` below.

use std::time::Duration;

use syncline_coordination::DbError;

use crate::store::error::StoreError;

use crate::auth::AuthFailure;
use crate::settings::InvalidSetting;
use tonic::{Code, Status};

/// Result of a sequencer operation.
pub type Result<T, E = SequencerError> = std::result::Result<T, E>;

/// Everything a sequencer call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SequencerError {
    /// The store (or the database under it) failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A member name that was never registered.
    #[error("member {0} is not registered at this sequencer")]
    UnknownMember(String),
    /// A member that was disabled.
    #[error("member {0} is disabled at this sequencer")]
    MemberDisabled(String),
    /// A public send from the synchronizer operator, who sends only through the admin API.
    #[error("{} sends only through the admin API (SequencerAdminService.PublishTopology, e.g. `syncline admin bootstrap`), not through the public Send", syncline_protocol::topology::OPERATOR)]
    OperatorSend,
    /// A public call without a valid member token.
    #[error("{}", unauthenticated(*reason, what, member))]
    Unauthenticated {
        /// What was wrong with the credential.
        reason: AuthFailure,
        /// What the call tried, e.g. "send as".
        what: String,
        /// The member it tried to act as.
        member: String,
    },
    /// A valid token of one member, used to act as another.
    #[error("authenticated as member {authenticated}, which may not {what} member {member}: a member's token acts only for that member")]
    WrongMember {
        /// Always [`AuthFailure::WrongMember`] (the metric label).
        reason: AuthFailure,
        /// The member the token belongs to.
        authenticated: String,
        /// What the call tried, e.g. "send as".
        what: String,
        /// The member it tried to act as.
        member: String,
    },
    /// A request that can never succeed as sent.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A send larger than the configured maximum.
    #[error("request of {size} bytes is too large: the maximum is {max} bytes")]
    TooLarge {
        /// The request's size in bytes.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The max-sequencing-time has already passed.
    #[error("max_sequencing_time {mst} is in the past (now {now}); the send could never be sequenced")]
    DeadlinePassed {
        /// The send's max-sequencing-time (µs).
        mst: i64,
        /// The node's clock (µs).
        now: i64,
    },
    /// The writer's queue is full; retry later or on another sequencer.
    #[error("sequencer {node} is overloaded: {pending} sends already queued; retry later")]
    Overloaded {
        /// The node's name.
        node: String,
        /// Sends already queued.
        pending: usize,
    },
    /// The node serves as many subscriptions as it is configured for.
    #[error("sequencer {node} already serves its maximum of {max} subscriptions; subscribe at another sequencer or retry later")]
    TooManySubscriptions {
        /// The node's name.
        node: String,
        /// The limit.
        max: usize,
    },
    /// The writer is not running (starting, recovering or stopping).
    #[error("sequencer {node} is not accepting sends: {reason}")]
    Unavailable {
        /// The node's name.
        node: String,
        /// Why.
        reason: String,
    },
    /// The (sender, message id) was already used for a send with other content.
    #[error("message id {message_id:?} of {sender} was already used for a different send (sequenced at {ts}); use a new message id for new content")]
    AlreadyExists {
        /// The sender's name.
        sender: String,
        /// The sender's message id.
        message_id: String,
        /// The timestamp it was sequenced at.
        ts: i64,
    },
    /// The max-sequencing-time passed before the send could be sequenced: it never will be.
    #[error("message id {message_id:?} was not sequenced: its max_sequencing_time {mst} passed first")]
    NotSequenced {
        /// The sender's message id.
        message_id: String,
        /// The send's max-sequencing-time (µs).
        mst: i64,
    },
    /// The node could not confirm the send yet; it may still be sequenced exactly once.
    #[error("sequencer {node} could not confirm message id {message_id:?} yet ({reason}); resend it with the same message id, on any sequencer, to learn its outcome")]
    OutcomeUnknown {
        /// The node's name.
        node: String,
        /// The sender's message id.
        message_id: String,
        /// Why.
        reason: String,
    },
    /// The requested events were pruned.
    #[error("events up to {lower_bound} have been pruned; cannot read from {requested}")]
    Pruned {
        /// The timestamp asked for.
        requested: i64,
        /// The pruning lower bound.
        lower_bound: i64,
    },
    /// Pruning past what every enabled member acknowledged.
    #[error("cannot prune before {requested}: the safe pruning point is {safe}{}", blocker.as_ref().map(|b| format!(" (held back by member {b})")).unwrap_or_default())]
    UnsafePruning {
        /// The timestamp asked for.
        requested: i64,
        /// The safe pruning point.
        safe: i64,
        /// The member holding pruning back, if any.
        blocker: Option<String>,
    },
    /// A subscription could not read its next events.
    #[error("sequencer {node} cannot read events: {source}")]
    ReadFailed {
        /// The node's name.
        node: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// Events after a subscription's cursor were pruned while it was behind them.
    #[error("events up to {lower_bound} were pruned while this subscription was behind them (it had read up to {cursor}); subscribe again after {lower_bound} or later")]
    PrunedWhileBehind {
        /// Where the subscription was.
        cursor: i64,
        /// The pruning lower bound.
        lower_bound: i64,
    },
    /// A stored event cannot be decoded: the store holds something this version did not write.
    #[error("event {ts} has an undecodable payload: {reason}")]
    Undecodable {
        /// The event's timestamp.
        ts: i64,
        /// What the decoder said.
        reason: String,
    },
    /// The node is shutting down.
    #[error("sequencer {node} is shutting down")]
    ShuttingDown {
        /// The node's name.
        node: String,
    },
    /// The node no longer follows notifications (only at shutdown).
    #[error("sequencer {node} stopped following notifications")]
    NotFollowing {
        /// The node's name.
        node: String,
    },
    /// A subscription's reader stopped without saying why (a bug: it always says).
    #[error("the subscription ended on the server; subscribe again")]
    SubscriptionEnded,
    /// A setting that would make the node panic or spin; refused at start.
    #[error(transparent)]
    InvalidSetting(#[from] InvalidSetting),
    /// An admin call whose database work did not finish in time: the database is unreachable
    /// or overloaded. Answered rather than waited out, so operators see what is wrong;
    /// `writer` is why the writer is down too, when it is (the likely cause).
    #[error("could not {what} within {after:?}: the database did not answer in time ({})", writer.as_ref().map_or("unreachable or overloaded".to_string(), |w| format!("writer: {w}")))]
    TimedOut {
        /// What could not be done.
        what: &'static str,
        /// The timeout.
        after: Duration,
        /// Why the writer is not running, if it is not.
        writer: Option<String>,
    },
}

impl From<SequencerError> for Status {
    fn from(e: SequencerError) -> Status {
        let code = match &e {
            SequencerError::Store(c) if c.is_retryable() => Code::Unavailable,
            SequencerError::Store(_) => Code::Internal,
            SequencerError::ReadFailed { .. } => Code::Unavailable,
            SequencerError::PrunedWhileBehind { .. } => Code::OutOfRange,
            SequencerError::Undecodable { .. } => Code::DataLoss,
            SequencerError::ShuttingDown { .. } => Code::Unavailable,
            SequencerError::NotFollowing { .. } => Code::Unavailable,
            SequencerError::SubscriptionEnded => Code::Unavailable,
            SequencerError::UnknownMember(_) => Code::NotFound,
            SequencerError::MemberDisabled(_) => Code::PermissionDenied,
            SequencerError::OperatorSend => Code::PermissionDenied,
            SequencerError::Unauthenticated { .. } => Code::Unauthenticated,
            SequencerError::WrongMember { .. } => Code::PermissionDenied,
            SequencerError::InvalidRequest(_) => Code::InvalidArgument,
            // As tonic does for messages over its decoding limit.
            SequencerError::TooLarge { .. } => Code::OutOfRange,
            SequencerError::DeadlinePassed { .. } => Code::InvalidArgument,
            SequencerError::Overloaded { .. } => Code::ResourceExhausted,
            SequencerError::TooManySubscriptions { .. } => Code::ResourceExhausted,
            SequencerError::Unavailable { .. } => Code::Unavailable,
            SequencerError::AlreadyExists { .. } => Code::AlreadyExists,
            SequencerError::NotSequenced { .. } => Code::FailedPrecondition,
            SequencerError::OutcomeUnknown { .. } => Code::Unavailable,
            SequencerError::Pruned { .. } => Code::OutOfRange,
            SequencerError::UnsafePruning { .. } => Code::FailedPrecondition,
            SequencerError::InvalidSetting(_) => Code::FailedPrecondition,
            SequencerError::TimedOut { .. } => Code::Unavailable,
        };
        Status::new(code, e.to_string())
    }
}

/// The message of an [`SequencerError::Unauthenticated`]: what was wrong, never the token.
fn unauthenticated(reason: AuthFailure, what: &str, member: &str) -> String {
    match reason {
        AuthFailure::Missing => format!(
            "no member token: a call to {what} member {member} must carry the gRPC metadata \
             `authorization: Bearer <token>` with {member}'s token (issued at its registration)"
        ),
        AuthFailure::Malformed => format!(
            "the authorization metadata of this call to {what} member {member} is not `Bearer <token>` \
             with a token issued by these sequencers"
        ),
        AuthFailure::UnknownToken => format!(
            "the bearer token of this call to {what} member {member} belongs to no member \
             (it was never issued here, or it was rotated since)"
        ),
        AuthFailure::WrongMember => format!("the token may not {what} member {member}"),
    }
}

/// The database's errors reach the sequencer through its store.
impl From<DbError> for SequencerError {
    fn from(e: DbError) -> Self {
        SequencerError::Store(e.into())
    }
}
