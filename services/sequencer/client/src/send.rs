//! Sends with failover: resent unchanged on the next endpoint while the outcome is unknown,
//! until the max-sequencing-time; and acknowledgements.

use std::time::Duration;

use syncline_proto::sequencer::sequencer_service_client::SequencerServiceClient;
use syncline_proto::sequencer::{AcknowledgeRequest, SendRequest};
use tonic::Code;
use tracing::Instrument;

use crate::endpoints::{Endpoints, Pick};
use crate::error::{classify, code_name, AcknowledgeError, Failure, SendError};
use crate::request::now_micros;

/// A confirmed send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// The timestamp it was sequenced at: its event is delivered at exactly this timestamp.
    pub timestamp: i64,
    /// How many times it was resent (unchanged, same message id) after an attempt whose
    /// outcome was unknown.
    pub resends: u32,
}

/// Send `request`, resending it while its outcome is unknown.
pub(crate) async fn send(endpoints: Endpoints, request: SendRequest) -> Result<Sent, SendError> {
    let span = tracing::debug_span!("send", sender = %request.sender, message_id = %request.message_id);
    attempts(endpoints, request).instrument(span).await
}

async fn attempts(endpoints: Endpoints, request: SendRequest) -> Result<Sent, SendError> {
    let config = endpoints.config().clone();
    let mst = request.max_sequencing_time;
    let mut attempts = 0u32;
    let mut last = String::new();
    let unconfirmed = |attempts, last: String| SendError::Unconfirmed {
        sender: request.sender.clone(),
        message_id: request.message_id.clone(),
        attempts,
        last,
    };
    loop {
        // The first attempt goes out even if the max-sequencing-time passed: the sequencer's
        // refusal is then definitive and says why.
        if attempts > 0 && now_micros() >= mst {
            return Err(unconfirmed(attempts, last));
        }
        let Pick { endpoint, wait } = endpoints.next();
        if !wait.is_zero() {
            let left = Duration::from_micros((mst - now_micros()).max(0) as u64);
            if attempts > 0 && wait >= left {
                tokio::time::sleep(left).await;
                continue;
            }
            tokio::time::sleep(wait).await;
        }
        attempts += 1;
        let mut client =
            SequencerServiceClient::new(endpoint.channel()).max_decoding_message_size(config.max_decoding_message_size);
        let answer = tokio::time::timeout(
            config.attempt_timeout,
            client.send(endpoints.tokens().request(&request.sender, request.clone())),
        )
        .await;
        let failure = match answer {
            Ok(Ok(response)) => {
                endpoint.succeeded();
                return Ok(Sent { timestamp: response.into_inner().timestamp, resends: attempts - 1 });
            }
            Ok(Err(status)) => classify(&status, false),
            Err(_) => Failure::Retry(format!("no answer within {:?}", config.attempt_timeout)),
        };
        match failure {
            Failure::Retry(cause) => {
                tracing::debug!(endpoint = endpoint.url(), attempt = attempts, %cause, "outcome unknown; resending on the next endpoint");
                endpoint.failed(&config, &cause);
                last = format!("{}: {cause}", endpoint.url());
            }
            Failure::Final(code, message) => {
                endpoint.succeeded();
                let (sender, message_id, endpoint) =
                    (request.sender.clone(), request.message_id.clone(), endpoint.url().to_string());
                return Err(match code {
                    Code::AlreadyExists => SendError::AlreadyExists { sender, message_id, endpoint, message },
                    Code::FailedPrecondition => SendError::NotSequenced { sender, message_id, endpoint, message },
                    // An earlier attempt may have been sequenced: this refusal of the resend
                    // (say, its max-sequencing-time passed) does not tell.
                    _ if attempts > 1 => {
                        unconfirmed(attempts, format!("{endpoint}: refused: {} ({message})", code_name(code)))
                    }
                    _ => SendError::Rejected { sender, message_id, endpoint, code, message },
                });
            }
        }
    }
}

/// Acknowledge on the first endpoint that answers, trying each at most once.
pub(crate) async fn acknowledge(endpoints: Endpoints, member: String, timestamp: i64) -> Result<(), AcknowledgeError> {
    let config = endpoints.config().clone();
    let tries = endpoints.len() as u32;
    let mut last = String::new();
    for attempt in 1..=tries {
        let Pick { endpoint, wait } = endpoints.next();
        tokio::time::sleep(wait).await;
        let mut client = SequencerServiceClient::new(endpoint.channel());
        let request = AcknowledgeRequest { member: member.clone(), timestamp };
        let failure = match tokio::time::timeout(
            config.attempt_timeout,
            client.acknowledge(endpoints.tokens().request(&member, request)),
        )
        .await
        {
            Ok(Ok(_)) => {
                endpoint.succeeded();
                return Ok(());
            }
            Ok(Err(status)) => classify(&status, false),
            Err(_) => Failure::Retry(format!("no answer within {:?}", config.attempt_timeout)),
        };
        match failure {
            Failure::Retry(cause) => {
                endpoint.failed(&config, &cause);
                last = format!("{}: {cause}", endpoint.url());
            }
            Failure::Final(code, message) => {
                endpoint.succeeded();
                return Err(AcknowledgeError::Refused {
                    member,
                    timestamp,
                    endpoint: endpoint.url().to_string(),
                    code,
                    message,
                });
            }
        }
        tracing::debug!(attempt, %last, "acknowledgement failed; trying the next endpoint");
    }
    Err(AcknowledgeError::Unavailable { member, timestamp, attempts: tries, last })
}
