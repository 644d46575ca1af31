//! SendStream: many sends on one stream, each answered as the unary Send would answer it.
//! One task per stream reads sends while fewer than `send_stream_window` wait for their
//! answer, admits each exactly as Send does (the writer batches them with everyone's), and
//! writes each answer as its outcome is known. The stream's sender is authorized once; its
//! end, a client that goes away, or the node shutting down never loses an admitted send: the
//! writer sequences it or not as for a unary send whose caller went away.

use std::net::SocketAddr;

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use syncline_node::grpc_errors::malformed_request;
use syncline_proto::sequencer::send_stream_response::Outcome;
use syncline_proto::sequencer::{SendFailure, SendRequest, SendStreamResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Status, Streaming};
use tracing::Instrument;

use crate::error::{Result, SequencerError};
use crate::service::{count_send, PublicApi};

/// The answers of one SendStream.
pub type Answers = ReceiverStream<Result<SendStreamResponse, Status>>;

/// Serve the sends of one stream; returns the stream of their answers.
pub(crate) fn serve(
    api: PublicApi,
    metadata: MetadataMap,
    peer: Option<SocketAddr>,
    sends: Streaming<SendRequest>,
) -> Answers {
    let window = api.inner.settings.send_stream_window.max(1);
    let (tx, rx) = mpsc::channel(window);
    let span = tracing::debug_span!("send_stream", node = %api.inner.settings.name, peer = ?peer);
    tokio::spawn(run(api, metadata, peer, sends, window, tx).instrument(span));
    ReceiverStream::new(rx)
}

async fn run(
    api: PublicApi,
    metadata: MetadataMap,
    peer: Option<SocketAddr>,
    mut sends: Streaming<SendRequest>,
    window: usize,
    tx: mpsc::Sender<Result<SendStreamResponse, Status>>,
) {
    let inner = api.inner.clone();
    // The sender this stream's token was checked for; a send for another is checked anew
    // (and refused unless member auth is off).
    let mut authorized: Option<String> = None;
    let mut waiting = FuturesUnordered::new();
    let mut reading = true;
    // How the stream ends once every admitted send is answered: OK, or why not.
    let mut end: Option<Status> = None;
    while reading || !waiting.is_empty() {
        let answer = tokio::select! {
            biased;
            _ = tx.closed() => return, // the client went away; admitted sends go on without it
            Some(answer) = waiting.next(), if !waiting.is_empty() => answer,
            _ = inner.cancel.cancelled(), if reading => {
                // Shutting down: answer what was admitted (the writer answers every send it
                // holds before it stops), then end as a unary call would: UNAVAILABLE.
                reading = false;
                end = Some(SequencerError::ShuttingDown { node: inner.settings.name.clone() }.into());
                continue;
            }
            next = sends.message(), if reading && waiting.len() < window => match next {
                Ok(Some(req)) => {
                    let message_id = req.message_id.clone();
                    match admit(&api, &metadata, peer, &mut authorized, req).await {
                        Ok(outcome) => {
                            waiting.push(async move { (message_id, outcome.await) });
                            continue;
                        }
                        Err(e) => (message_id, Err(e)),
                    }
                }
                Ok(None) => {
                    reading = false;
                    continue;
                }
                // Undecodable or too large a message, or the connection broke: nothing more
                // can be read; what was admitted is still answered if the client listens.
                Err(status) => {
                    reading = false;
                    end = Some(malformed_request(status).unwrap_or_else(|invalid| invalid));
                    continue;
                }
            },
        };
        let (message_id, result) = answer;
        count_send(&inner, &result);
        let outcome = match result {
            Ok(timestamp) => Outcome::Timestamp(timestamp),
            Err(e) => {
                let status = Status::from(e);
                Outcome::Failure(SendFailure { code: status.code() as i32, message: status.message().to_string() })
            }
        };
        if tx.send(Ok(SendStreamResponse { message_id, outcome: Some(outcome) })).await.is_err() {
            return;
        }
    }
    if let Some(status) = end {
        let _ = tx.send(Err(status)).await;
    }
}

/// Check and admit one send of the stream; the receiver gets its outcome.
async fn admit(
    api: &PublicApi,
    metadata: &MetadataMap,
    peer: Option<SocketAddr>,
    authorized: &mut Option<String>,
    req: SendRequest,
) -> Result<impl std::future::Future<Output = Result<i64>>> {
    if authorized.as_deref() != Some(req.sender.as_str()) {
        api.may_send_as(metadata, peer, &req.sender).await?;
        *authorized = Some(req.sender.clone());
    }
    let outcome = api.admit(req).await?;
    let api = api.clone();
    Ok(async move { outcome.await.unwrap_or_else(|_| Err(api.writer_gone())) })
}
