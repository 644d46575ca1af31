//! Requests whose bytes are not a valid message are answered INVALID_ARGUMENT by every
//! service a node host serves: the fault is the client's, not the server's.

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

/// `Err` with INVALID_ARGUMENT if `status` is tonic's answer to an undecodable request, else
/// `Ok(status)` unchanged. For a streaming request's later messages, whose decode failure a
/// service meets itself (it reaches the client in the trailers, after the headers).
pub fn malformed_request(status: Status) -> Result<Status, Status> {
    if status.code() != Code::Internal || !MALFORMED_REQUEST.iter().any(|m| status.message().starts_with(m)) {
        return Ok(status);
    }
    Err(Status::invalid_argument(format!("malformed request: {}", status.message())))
}

/// Decode failures end the call before any message is sent, so their status travels in the
/// response headers (a trailers-only response): rewrite it there.
fn malformed_request_is_invalid_argument<B>(mut response: http::Response<B>) -> http::Response<B> {
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    let Err(fixed) = malformed_request(status) else {
        return response;
    };
    if let Err(e) = fixed.add_header(response.headers_mut()) {
        tracing::warn!(%e, "could not rewrite the status of a malformed request");
    }
    response
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
        assert!(
            malformed_request_is_invalid_argument(ok).headers().is_empty(),
            "responses without a status stay as they are"
        );
    }
}
