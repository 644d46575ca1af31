//! gRPC errors as people see them: requests whose bytes are not a valid message are answered
//! INVALID_ARGUMENT by every service the daemon serves, and a failed call is told as one line.

use std::error::Error as _;
use std::time::Duration;

use tonic::body::Body;
use tonic::codegen::http;
use tonic::{Code, Status};
use tower::util::MapResponseLayer;

/// How tonic 0.14 words its INTERNAL answers to a request it could not decode: the fault is
/// the client's, not the server's. (A compressed-flag without an encoding stays INTERNAL, as
/// the gRPC compression spec demands.)
const MALFORMED_REQUEST: &[&str] = &[
    // prost's `DecodeError`, raised by tonic-prost's decoder
    "failed to decode Protobuf message",
    // a unary request whose body ends before its first message
    "Missing request message.",
    // a frame whose length promises more bytes than the body has
    "Unexpected EOF decoding stream.",
    // a frame header byte that is neither 0 nor 1
    "protocol error: received message with invalid compression flag",
];

/// The response-mapping function of [`malformed_request_layer`].
pub type ResponseFix = fn(http::Response<Body>) -> http::Response<Body>;

/// A layer for `tonic::transport::Server::builder().layer(…)` that turns tonic's INTERNAL
/// answer to an undecodable request into INVALID_ARGUMENT, for every service of the server.
pub fn malformed_request_layer() -> MapResponseLayer<ResponseFix> {
    MapResponseLayer::new(malformed_request_is_invalid_argument as ResponseFix)
}

/// Decode failures end the call before any message is sent, so their status travels in the
/// response headers (a trailers-only response): rewrite it there.
fn malformed_request_is_invalid_argument<B>(mut response: http::Response<B>) -> http::Response<B> {
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    if status.code() != Code::Internal || !MALFORMED_REQUEST.iter().any(|m| status.message().starts_with(m)) {
        return response;
    }
    let fixed = Status::invalid_argument(format!("malformed request: {}", status.message()));
    if let Err(e) = fixed.add_header(response.headers_mut()) {
        tracing::warn!(%e, "could not rewrite the status of a malformed request");
    }
    response
}

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

    fn answered(status: Status) -> Status {
        let response = malformed_request_is_invalid_argument(status.into_http::<()>());
        Status::from_header_map(response.headers()).unwrap()
    }

    #[test]
    fn undecodable_requests_become_invalid_argument() {
        for message in [
            "failed to decode Protobuf message: SendRequest.sender: invalid wire type: Varint (expected LengthDelimited)",
            "Missing request message.",
            "Unexpected EOF decoding stream.",
            "protocol error: received message with invalid compression flag: 7 (valid flags are 0 and 1), while sending request",
        ] {
            let s = answered(Status::internal(message));
            assert_eq!((s.code(), s.message()), (Code::InvalidArgument, format!("malformed request: {message}").as_str()));
        }
    }

    #[test]
    fn other_statuses_pass_unchanged() {
        let s = answered(Status::internal("database error while pruning: boom"));
        assert_eq!((s.code(), s.message()), (Code::Internal, "database error while pruning: boom"));
        let s = answered(Status::unavailable("failed to decode Protobuf message"));
        assert_eq!(s.code(), Code::Unavailable, "only INTERNAL is rewritten");
        let ok = http::Response::new(());
        assert!(malformed_request_is_invalid_argument(ok).headers().is_empty(), "responses without a status stay as they are");
    }

    #[test]
    fn failed_calls_read_as_one_line() {
        let d = Duration::from_secs(10);
        assert_eq!(explain(&Status::unavailable("sequencer s1 is not accepting sends: offline"), d), "sequencer s1 is not accepting sends: offline");
        assert_eq!(explain(&Status::cancelled("Timeout expired"), d), "no answer within 10s");
        assert_eq!(explain(&Status::new(Code::Unavailable, ""), d), "not available (not running, or cannot be reached)");
        let text = explain(&Status::failed_precondition("x"), d);
        assert!(!text.contains("code:") && !text.contains("Status {"), "{text}");
    }
}
