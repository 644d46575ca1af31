//! What a send, a subscription or an acknowledgement can fail with, and how a gRPC answer is
//! classified.

use tonic::{Code, Status};

/// Why a send ended without a timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The message id was already used for a send with other content: this one is not
    /// sequenced; new content needs a new message id.
    #[error("sequencer at {endpoint} refused message {message_id:?} of {sender}: its message id was already used for a different send ({message})")]
    AlreadyExists {
        /// Sender of the send.
        sender: String,
        /// The reused id.
        message_id: String,
        /// The endpoint that answered.
        endpoint: String,
        /// The sequencer's explanation.
        message: String,
    },
    /// Not sequenced, and it never will be: its max-sequencing-time passed first.
    #[error(
        "message {message_id:?} of {sender} was not sequenced and never will be: {message} (answered by {endpoint})"
    )]
    NotSequenced {
        /// Sender of the send.
        sender: String,
        /// Its message id.
        message_id: String,
        /// The endpoint that answered.
        endpoint: String,
        /// The sequencer's explanation.
        message: String,
    },
    /// Refused for good at the first attempt (invalid request, unknown sender, too large...):
    /// it was not sequenced.
    #[error("sequencer at {endpoint} refused message {message_id:?} of {sender}: {} ({message})", code_name(*code))]
    Rejected {
        /// Sender of the send.
        sender: String,
        /// Its message id.
        message_id: String,
        /// The endpoint that answered.
        endpoint: String,
        /// The gRPC code of the refusal.
        code: Code,
        /// The sequencer's explanation.
        message: String,
    },
    /// No sequencer confirmed it before its max-sequencing-time: it may still have been
    /// sequenced (exactly once). `last` is the last attempt's outcome.
    #[error("message {message_id:?} of {sender} is unconfirmed after {attempts} attempts up to its max_sequencing_time: it may or may not have been sequenced; last attempt: {last}")]
    Unconfirmed {
        /// Sender of the send.
        sender: String,
        /// Its message id.
        message_id: String,
        /// How many times it was sent.
        attempts: u32,
        /// The last attempt: endpoint and cause.
        last: String,
    },
}

/// Why a subscription ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// An event's `previous_timestamp` does not name the event delivered before it: an event
    /// was lost or repeated between the sequencer and here.
    #[error("subscription of {member} at {endpoint}: event {timestamp} names {} as the member's previous event, but the subscription's last event (or its start) was {}: an event was lost or repeated", opt(*previous), opt(*expected))]
    ChainBroken {
        /// The subscribing member.
        member: String,
        /// The endpoint that delivered the event.
        endpoint: String,
        /// The event's timestamp.
        timestamp: i64,
        /// The event's `previous_timestamp`.
        previous: Option<i64>,
        /// The timestamp of the event delivered before it (or the subscription's `after`).
        expected: Option<i64>,
    },
    /// A sequencer refused the subscription for good (unknown or disabled member, events pruned...).
    #[error("sequencer at {endpoint} refused the subscription of {member}: {} ({message})", code_name(*code))]
    Refused {
        /// The subscribing member.
        member: String,
        /// The endpoint that answered.
        endpoint: String,
        /// The gRPC code of the refusal.
        code: Code,
        /// The sequencer's explanation.
        message: String,
    },
}

impl SubscribeError {
    /// The member is not registered (yet), or its token is not there (yet): a node started
    /// before its bootstrap (which registers it and writes its token file) may wait and
    /// subscribe again.
    pub fn is_unknown_member(&self) -> bool {
        matches!(self, SubscribeError::Refused { code: Code::NotFound | Code::Unauthenticated, .. })
    }
}

/// Why an acknowledgement failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcknowledgeError {
    /// A sequencer refused it for good.
    #[error("sequencer at {endpoint} refused the acknowledgement of {member} up to {timestamp}: {} ({message})", code_name(*code))]
    Refused {
        /// The acknowledging member.
        member: String,
        /// The acknowledged timestamp.
        timestamp: i64,
        /// The endpoint that answered.
        endpoint: String,
        /// The gRPC code of the refusal.
        code: Code,
        /// The sequencer's explanation.
        message: String,
    },
    /// No endpoint answered.
    #[error("no sequencer took the acknowledgement of {member} up to {timestamp} ({attempts} attempts); last attempt: {last}")]
    Unavailable {
        /// The acknowledging member.
        member: String,
        /// The acknowledged timestamp.
        timestamp: i64,
        /// How many endpoints were tried.
        attempts: u32,
        /// The last attempt: endpoint and cause.
        last: String,
    },
}

fn opt(ts: Option<i64>) -> String {
    ts.map_or_else(|| "none".into(), |t| t.to_string())
}

/// How a failed call ended, for the retry decision.
pub(crate) enum Failure {
    /// Final: a resend would get the same answer.
    Final(Code, String),
    /// The node did not (or could not) answer: try another one.
    Retry(String),
}

/// Classify a status from a sequencer call. `Internal` is final for sends (the sequencer
/// refused before queueing) but retried by subscriptions, which lose nothing by resuming.
pub(crate) fn classify(status: &Status, retry_internal: bool) -> Failure {
    let retry = matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Cancelled
            | Code::Unknown
            | Code::Aborted
    ) || (retry_internal && status.code() == Code::Internal);
    if retry {
        Failure::Retry(describe(status))
    } else {
        Failure::Final(status.code(), status.message().to_string())
    }
}

/// One line for a status: code, message and, for transport errors, their causes.
pub(crate) fn describe(status: &Status) -> String {
    let mut text = format!("{}: {}", code_name(status.code()), status.message());
    let mut source = std::error::Error::source(status);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// The canonical name of a gRPC code (`ALREADY_EXISTS`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
