//! Ledger API errors as gRPC statuses, the way Canton sends them: the message starts with the
//! error id, its category and a correlation id (`DUPLICATE_COMMAND(10,1f2e3d4c): …`), and the
//! details carry a `google.rpc.ErrorInfo` (reason = error id, domain `syncline`, the error's
//! metadata), a `RequestInfo` with the correlation id, a `RetryInfo` when resubmitting may
//! succeed, and a `BadRequest` naming an invalid field.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::auth::AuthError;
use crate::error::LedgerError;
use crate::model::Completion;

/// The `ErrorInfo.domain` of every Syncline error.
pub const DOMAIN: &str = "syncline";

impl From<LedgerError> for Status {
    fn from(e: LedgerError) -> Status {
        let metadata = e.metadata().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let mut details = details(e.error_id(), e.code(), metadata);
        if let LedgerError::InvalidArgument { field, problem } = &e {
            details.add_bad_request_violation(field.clone(), problem.clone());
        }
        status(e.error_id(), e.code(), &e.to_string(), details)
    }
}

impl From<AuthError> for Status {
    /// Counted in `syncline_participant_auth_failures_total{reason}` (every refusal passes here).
    fn from(e: AuthError) -> Status {
        metrics::counter!("syncline_participant_auth_failures_total", "reason" => e.label()).increment(1);
        tracing::info!(reason = e.label(), cause = %e, "ledger API call refused");
        let d = details(e.error_id(), e.code(), HashMap::new());
        status(e.error_id(), e.code(), &e.to_string(), d)
    }
}

/// The status of a rejected submission's completion, as SubmitAndWait answers it: the
/// completion's error id, code and cause, with its offset and ids as metadata.
pub fn rejection(c: &Completion) -> Status {
    let mut metadata = HashMap::from([
        ("completion_offset".to_string(), c.offset.to_string()),
        ("command_id".into(), c.command_id.clone()),
    ]);
    if let Some(s) = &c.submission_id {
        metadata.insert("submission_id".into(), s.clone());
    }
    let id = &c.status.id;
    status(id, c.status.code, &c.status.message, details(id, c.status.code, metadata))
}

/// Whether an answer with `code` may succeed when the same command is resubmitted (Canton's
/// retryable categories: contention, transient failures, unknown outcome after a deadline).
pub fn retryable(code: Code) -> bool {
    retry_delay(code).is_some()
}

fn retry_delay(code: Code) -> Option<Duration> {
    match code {
        // A passive or restarting replica: a new leader is expected within a second.
        Code::Unavailable => Some(Duration::from_millis(100)),
        Code::Aborted | Code::DeadlineExceeded => Some(Duration::from_secs(1)),
        _ => None,
    }
}

/// Canton's error category number of a gRPC code (the first number in the message).
fn category(code: Code) -> u8 {
    match code {
        Code::Unavailable => 1,
        Code::Aborted => 2,
        Code::DeadlineExceeded => 3,
        Code::Internal => 4,
        Code::Unauthenticated => 6,
        Code::PermissionDenied => 7,
        Code::InvalidArgument => 8,
        Code::FailedPrecondition => 9,
        Code::AlreadyExists => 10,
        Code::NotFound => 11,
        Code::OutOfRange => 12,
        Code::Unimplemented => 14,
        _ => 4,
    }
}

fn details(id: &str, code: Code, metadata: HashMap<String, String>) -> ErrorDetails {
    let mut details = ErrorDetails::with_error_info(id, DOMAIN, metadata);
    if let Some(delay) = retry_delay(code) {
        details.set_retry_info(Some(delay));
    }
    details
}

fn status(id: &str, code: Code, cause: &str, mut details: ErrorDetails) -> Status {
    // Ties the client's error to the participant's log line.
    let correlation = format!("{:08x}", rand::random::<u32>());
    tracing::debug!(error_id = id, ?code, correlation, cause, "ledger API call answered with an error");
    details.set_request_info(correlation.clone(), "");
    Status::with_error_details(code, format!("{id}({},{correlation}): {cause}", category(code)), details)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_command_carries_its_id_offset_and_no_retry() {
        let e = LedgerError::DuplicateCommand {
            command_id: "c1".into(),
            completion_offset: 42,
            existing_submission_id: Some("s1".into()),
        };
        let s = Status::from(e);
        assert_eq!(s.code(), Code::AlreadyExists);
        assert!(s.message().starts_with("DUPLICATE_COMMAND(10,"), "{}", s.message());
        assert!(s.message().ends_with("): command c1 was already accepted at offset 42 (submission Some(\"s1\"))"));
        let d = s.get_error_details();
        let info = d.error_info().expect("ErrorInfo");
        assert_eq!((info.reason.as_str(), info.domain.as_str()), ("DUPLICATE_COMMAND", DOMAIN));
        assert_eq!(info.metadata["completion_offset"], "42");
        assert_eq!(info.metadata["existing_submission_id"], "s1");
        assert!(d.retry_info().is_none(), "a definite answer");
        assert_eq!(d.request_info().unwrap().request_id.len(), 8);
    }

    #[test]
    fn passive_replica_is_unavailable_and_retryable() {
        let s = Status::from(LedgerError::NodeIsPassive { participant: "p1".into(), replica: "p1b".into() });
        assert_eq!(s.code(), Code::Unavailable);
        assert!(s.message().starts_with("NODE_IS_PASSIVE_REPLICA(1,"), "{}", s.message());
        let d = s.get_error_details();
        assert_eq!(d.error_info().unwrap().reason, "NODE_IS_PASSIVE_REPLICA");
        assert_eq!(d.retry_info().unwrap().retry_delay, Some(Duration::from_millis(100)));
    }

    #[test]
    fn invalid_argument_names_the_field() {
        let s = Status::from(LedgerError::invalid("commands.command_id", "must have 1 to 255 bytes"));
        assert_eq!(s.code(), Code::InvalidArgument);
        let d = s.get_error_details();
        let v = &d.bad_request().unwrap().field_violations[0];
        assert_eq!((v.field.as_str(), v.description.as_str()), ("commands.command_id", "must have 1 to 255 bytes"));
        assert!(s.message().contains("commands.command_id"), "{}", s.message());
    }
}
