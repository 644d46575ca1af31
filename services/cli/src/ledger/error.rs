//! Errors of `syncline ledger` as a person or a script sees them: one line with the ledger
//! API's error id (from the status's `google.rpc.ErrorInfo`) and cause, or one JSON object.

use std::collections::BTreeMap;

use serde_json::json;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::grpc_errors;

/// Exit code of a failure that may go away when the same command is run again (every
/// endpoint unavailable, contention, unknown outcome): EX_TEMPFAIL of sysexits.h.
pub const EXIT_RETRYABLE: u8 = 75;

/// Why a `syncline ledger` command failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerCliError {
    /// A ledger API call failed (boxed: errors are rare, results are passed around often).
    #[error("{0}")]
    Call(Box<CallError>),
    /// An argument the command line parser cannot check (JSON, endpoints).
    #[error("{0}")]
    Usage(String),
}

impl From<CallError> for LedgerCliError {
    fn from(e: CallError) -> Self {
        LedgerCliError::Call(Box::new(e))
    }
}

impl LedgerCliError {
    /// The process exit code: [`EXIT_RETRYABLE`] when trying again may succeed, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            LedgerCliError::Call(c) if c.retryable => EXIT_RETRYABLE,
            _ => 1,
        }
    }

    /// The error as one JSON object (`--json`).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            LedgerCliError::Call(c) => c.to_json(),
            LedgerCliError::Usage(m) => json!({ "error": { "error_id": "USAGE", "message": m } }),
        }
    }
}

/// A failed call: the ledger API's error id and cause, or the transport's explanation.
#[derive(Debug, Clone, PartialEq)]
pub struct CallError {
    /// The endpoint that answered (or could not be reached).
    pub endpoint: String,
    /// The gRPC code.
    pub code: Code,
    /// Canton's error id (`ErrorInfo.reason`), when the participant sent one.
    pub error_id: Option<String>,
    /// The cause, without the id/category/correlation prefix.
    pub message: String,
    /// The correlation id that ties the error to the participant's log line.
    pub correlation_id: Option<String>,
    /// The error's metadata (`ErrorInfo.metadata`).
    pub metadata: BTreeMap<String, String>,
    /// Whether resubmitting the same command may succeed.
    pub retryable: bool,
    /// The command id of a failed submission (to resubmit with `--command-id`).
    pub command_id: Option<String>,
}

impl CallError {
    /// The error of `status`, answered by (or on the way to) `endpoint`.
    pub fn from_status(endpoint: &str, status: &Status, deadline: std::time::Duration) -> CallError {
        let details = status.get_error_details();
        let info = details.error_info();
        let correlation_id = details.request_info().map(|r| r.request_id.clone());
        let (error_id, message) = match info {
            Some(info) => (Some(info.reason.clone()), strip_prefix(status.message(), &info.reason).to_string()),
            None => (None, grpc_errors::explain(status, deadline)),
        };
        let metadata = info.map(|i| i.metadata.clone().into_iter().collect()).unwrap_or_default();
        let retryable = match info {
            Some(_) => details.retry_info().is_some(),
            None => matches!(status.code(), Code::Unavailable | Code::Aborted | Code::DeadlineExceeded),
        };
        CallError {
            endpoint: endpoint.to_string(),
            code: status.code(),
            error_id,
            message,
            correlation_id,
            metadata,
            retryable,
            command_id: None,
        }
    }

    /// Whether this is the participant's error `id`.
    pub fn is(&self, id: &str) -> bool {
        self.error_id.as_deref() == Some(id)
    }

    /// The error as one JSON object (`--json`).
    pub fn to_json(&self) -> serde_json::Value {
        json!({ "error": {
            "error_id": self.error_id,
            "code": code_name(self.code),
            "message": self.message,
            "metadata": self.metadata,
            "retryable": self.retryable,
            "endpoint": self.endpoint,
            "correlation_id": self.correlation_id,
            "command_id": self.command_id,
        }})
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.error_id {
            Some(id) => write!(f, "{id}: {}", self.message)?,
            None => write!(f, "{}", self.message)?,
        }
        write!(f, " ({}", self.endpoint)?;
        if let Some(c) = &self.correlation_id {
            write!(f, ", correlation id {c}")?;
        }
        write!(f, ")")?;
        if let Some(c) = &self.command_id {
            if self.retryable {
                write!(f, "; the outcome of command {c} may be unknown: run it again with --command-id {c}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for CallError {}

/// The cause of a ledger API message `ID(category,correlation): cause`.
fn strip_prefix<'a>(message: &'a str, id: &str) -> &'a str {
    message
        .strip_prefix(id)
        .filter(|rest| rest.starts_with('('))
        .and_then(|rest| rest.split_once("): "))
        .map_or(message, |(_, cause)| cause)
}

/// The canonical name of a gRPC code (`ALREADY_EXISTS`).
pub use syncline_sequencer_client::code_name;

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use tonic_types::ErrorDetails;

    use super::*;

    /// A status shaped like the participant's (`grpc/status.rs`).
    fn ledger_status(code: Code, id: &str, cause: &str, retry: bool) -> Status {
        let mut d =
            ErrorDetails::with_error_info(id, "syncline", HashMap::from([("completion_offset".into(), "42".into())]));
        d.set_request_info("1f2e3d4c", "");
        if retry {
            d.set_retry_info(Some(Duration::from_millis(100)));
        }
        Status::with_error_details(code, format!("{id}(10,1f2e3d4c): {cause}"), d)
    }

    #[test]
    fn a_ledger_error_is_one_line_with_its_id_and_cause() {
        let s = ledger_status(Code::AlreadyExists, "DUPLICATE_COMMAND", "command c1 was already accepted", false);
        let e = CallError::from_status("http://p1:4021", &s, Duration::from_secs(30));
        assert_eq!(
            e.to_string(),
            "DUPLICATE_COMMAND: command c1 was already accepted (http://p1:4021, correlation id 1f2e3d4c)"
        );
        assert!(!e.retryable);
        assert_eq!(e.metadata["completion_offset"], "42");
        assert_eq!(LedgerCliError::from(e).exit_code(), 1);
    }

    #[test]
    fn retryable_errors_name_the_command_to_resubmit_and_exit_75() {
        let s = ledger_status(Code::DeadlineExceeded, "REQUEST_TIME_OUT", "timed out: the completion", true);
        let mut e = CallError::from_status("http://p1:4021", &s, Duration::from_secs(30));
        e.command_id = Some("cli-7".into());
        assert!(e.retryable);
        assert!(e.to_string().ends_with("run it again with --command-id cli-7"), "{e}");
        assert_eq!(LedgerCliError::from(e).exit_code(), EXIT_RETRYABLE);
    }

    #[test]
    fn transport_errors_without_details_are_explained() {
        let e = CallError::from_status("http://127.0.0.1:1", &Status::unavailable(""), Duration::from_secs(30));
        assert_eq!(e.error_id, None);
        assert_eq!(e.to_string(), "not available (not running, or cannot be reached) (http://127.0.0.1:1)");
        assert!(e.retryable);
    }

    #[test]
    fn json_errors_carry_id_code_and_metadata() {
        let s = ledger_status(Code::NotFound, "CONTRACT_NOT_FOUND", "contract c9 is not active", false);
        let j = LedgerCliError::from(CallError::from_status("e", &s, Duration::from_secs(1))).to_json();
        assert_eq!(j["error"]["error_id"], "CONTRACT_NOT_FOUND");
        assert_eq!(j["error"]["code"], "NOT_FOUND");
        assert_eq!(j["error"]["message"], "contract c9 is not active");
        assert_eq!(j["error"]["metadata"]["completion_offset"], "42");
        assert_eq!(j["error"]["correlation_id"], "1f2e3d4c");
        // One line.
        assert!(!j.to_string().contains('\n'));
    }

    #[test]
    fn messages_without_the_prefix_are_kept_whole() {
        assert_eq!(strip_prefix("X(1,ab): y", "X"), "y");
        assert_eq!(strip_prefix("XY: y", "X"), "XY: y");
        assert_eq!(strip_prefix("plain", "X"), "plain");
    }
}
