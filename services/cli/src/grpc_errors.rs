//! gRPC errors as people see them: a failed call is told as one line. (Undecodable requests
//! are answered INVALID_ARGUMENT by the node host: `syncline_node::grpc_errors`.)

use std::error::Error as _;
use std::time::Duration;

use tonic::{Code, Status};

/// One line for a failed call: the server's message (or what the code means when there is
/// none) followed by the transport's causes, without tonic's `code: '…'` and metadata dumps.
pub fn explain(status: &Status, deadline: Duration) -> String {
    let mut line = match (status.code(), status.message()) {
        // tonic's wording when the channel's own timeout fires
        (Code::Cancelled, "Timeout expired") => format!("no answer within {deadline:?}"),
        (code, "") => describe(code).to_string(),
        (_, message) => message.to_string(),
    };
    let mut cause = status.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = e.source();
    }
    line
}

/// Plain words for a status code that came without a message.
fn describe(code: Code) -> &'static str {
    match code {
        Code::Unavailable => "not available (not running, or cannot be reached)",
        Code::DeadlineExceeded => "no answer in time",
        Code::Unimplemented => "does not offer this call (another kind or version of node?)",
        Code::Unauthenticated | Code::PermissionDenied => "refused the call",
        _ => code.description(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_calls_read_as_one_line() {
        let d = Duration::from_secs(10);
        assert_eq!(
            explain(&Status::unavailable("sequencer s1 is not accepting sends: offline"), d),
            "sequencer s1 is not accepting sends: offline"
        );
        assert_eq!(explain(&Status::cancelled("Timeout expired"), d), "no answer within 10s");
        assert_eq!(
            explain(&Status::new(Code::Unavailable, ""), d),
            "not available (not running, or cannot be reached)"
        );
        let text = explain(&Status::failed_precondition("x"), d);
        assert!(!text.contains("code:") && !text.contains("Status {"), "{text}");
    }
}
