//! The public gRPC API: Send (admission), Subscribe, Acknowledge.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use prost::Message;
use sha2::{Digest, Sha256};
use syncline_proto::sequencer::sequencer_service_server::SequencerService;
use syncline_proto::sequencer::{
    AcknowledgeRequest, AcknowledgeResponse, Batch, SendRequest, SendResponse, SubscribeRequest,
};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::oneshot;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use crate::error::{Result, SequencerError};
use crate::store::events::BROADCAST;
use crate::writer::{SendResult, Submission};
use crate::{auth, members, pruning, reader, send_stream, Inner};
use syncline_protocol::topology::OPERATOR;
use syncline_sequencer_client::BROADCAST_RECIPIENT;

/// Longest accepted message id.
pub const MAX_MESSAGE_ID: usize = 128;

/// The public API of one sequencer node.
#[derive(Clone)]
pub struct PublicApi {
    pub(crate) inner: Arc<Inner>,
}

impl PublicApi {
    /// Validate a send, queue it, and wait for the writer's answer: its timestamp once it is
    /// committed and covered by the watermark. Any sender, the operator included (the admin
    /// API's path); the public Send refuses the operator before it gets here.
    pub(crate) async fn sequence(&self, req: SendRequest) -> Result<i64> {
        let outcome = self.admit(req).await?;
        outcome.await.unwrap_or_else(|_| Err(self.writer_gone()))
    }

    /// The answer to a send whose writer went away without answering it.
    pub(crate) fn writer_gone(&self) -> SequencerError {
        SequencerError::Unavailable {
            node: self.inner.settings.name.clone(),
            reason: "the writer stopped before it could confirm this send; resend it with the same message id".into(),
        }
    }

    /// Validate and enqueue a send; the receiver gets its outcome.
    pub(crate) async fn admit(&self, req: SendRequest) -> Result<oneshot::Receiver<SendResult>> {
        let inner = &self.inner;
        let size = req.encoded_len();
        if size > inner.settings.max_request_size {
            return Err(SequencerError::TooLarge { size, max: inner.settings.max_request_size });
        }
        if req.message_id.is_empty() || req.message_id.len() > MAX_MESSAGE_ID {
            return Err(SequencerError::InvalidRequest(format!(
                "message_id must be 1 to {MAX_MESSAGE_ID} characters, got {}",
                req.message_id.len()
            )));
        }
        if req.envelopes.is_empty() {
            return Err(SequencerError::InvalidRequest("a send needs at least one envelope".into()));
        }
        if let Some(i) = req.envelopes.iter().position(|e| e.recipients.is_empty()) {
            return Err(SequencerError::InvalidRequest(format!("envelope {i} has no recipients")));
        }
        // Refuse at once while not serving: no database round trip that could hang.
        if !inner.writer.is_running() {
            return Err(SequencerError::Unavailable {
                node: inner.settings.name.clone(),
                reason: inner.writer.detail(),
            });
        }
        let now = inner.settings.now();
        if req.max_sequencing_time < now {
            return Err(SequencerError::DeadlinePassed { mst: req.max_sequencing_time, now });
        }
        let horizon = inner.settings.max_sequencing_horizon.as_micros() as i64;
        if req.max_sequencing_time > now + horizon {
            return Err(SequencerError::InvalidRequest(format!(
                "max_sequencing_time {} is more than {:?} in the future",
                req.max_sequencing_time, inner.settings.max_sequencing_horizon
            )));
        }
        let sender = inner.members.require_enabled(&req.sender).await?;
        let names: BTreeSet<&str> =
            req.envelopes.iter().flat_map(|e| e.recipients.iter().map(String::as_str)).collect();
        let mut recipients = vec![sender.id];
        let mut unknown = Vec::new();
        for name in names {
            if name == BROADCAST_RECIPIENT {
                recipients.push(BROADCAST);
                continue;
            }
            match inner.members.lookup(name).await? {
                Some(m) => recipients.push(m.id),
                None => unknown.push(name.to_string()),
            }
        }
        recipients.sort_unstable();
        recipients.dedup();
        let payload = Batch { envelopes: req.envelopes }.encode_to_vec();
        let digest = Sha256::digest(&payload).to_vec();
        let (reply, outcome) = oneshot::channel();
        let sub = Submission {
            sender: sender.id,
            sender_name: sender.member,
            message_id: req.message_id,
            max_sequencing_ts: req.max_sequencing_time,
            recipients,
            unknown,
            payload,
            digest,
            accepted_at: Instant::now(),
            reply: Some(reply),
        };
        match inner.queue.try_send(sub) {
            Ok(()) => {
                // The writer publishes the depth as it drains; this shows it growing meanwhile.
                metrics::gauge!("syncline_sequencer_queue_depth", "node" => inner.settings.name.clone())
                    .set((inner.queue.max_capacity() - inner.queue.capacity()) as f64);
                Ok(outcome)
            }
            Err(TrySendError::Full(_)) => Err(SequencerError::Overloaded {
                node: inner.settings.name.clone(),
                pending: inner.settings.queue_size,
            }),
            Err(TrySendError::Closed(_)) => {
                Err(SequencerError::Unavailable { node: inner.settings.name.clone(), reason: "shutting down".into() })
            }
        }
    }
}

/// Count a send's outcome in `syncline_sequencer_sends_total`.
pub(crate) fn count_send(inner: &Inner, r: &Result<i64>) {
    let node = inner.settings.name.clone();
    match r {
        Ok(_) => {
            metrics::counter!("syncline_sequencer_sends_total", "node" => node, "result" => "sequenced").increment(1)
        }
        Err(e) => {
            let reason = match e {
                SequencerError::Overloaded { .. } => "overloaded",
                SequencerError::Unavailable { .. } => "unavailable",
                SequencerError::DeadlinePassed { .. } => "deadline",
                SequencerError::TooLarge { .. } => "too_large",
                SequencerError::UnknownMember(_) => "unknown_sender",
                SequencerError::MemberDisabled(_) => "disabled_sender",
                SequencerError::OperatorSend => "operator_sender",
                SequencerError::InvalidRequest(_) => "invalid",
                SequencerError::Unauthenticated { .. } => "unauthenticated",
                SequencerError::WrongMember { .. } => "wrong_member",
                SequencerError::AlreadyExists { .. } => "message_id_reused",
                SequencerError::NotSequenced { .. } => "max_sequencing_time",
                SequencerError::OutcomeUnknown { .. } => "unconfirmed",
                _ => "error",
            };
            metrics::counter!("syncline_sequencer_sends_total", "node" => node, "result" => "rejected", "reason" => reason)
                .increment(1)
        }
    }
}

impl PublicApi {
    /// Whether the call with `metadata` may send as `sender`.
    pub(crate) async fn may_send_as(
        &self,
        metadata: &MetadataMap,
        peer: Option<SocketAddr>,
        sender: &str,
    ) -> Result<()> {
        // Operator topology is published through the admin port only (see crate::topology).
        if sender == OPERATOR {
            return Err(SequencerError::OperatorSend);
        }
        // A name that can be no member's is invalid whoever asks.
        members::validate_name(sender)?;
        auth::authorize(&self.inner, metadata, peer, sender, "send as").await
    }
}

#[tonic::async_trait]
impl SequencerService for PublicApi {
    async fn send(&self, request: Request<SendRequest>) -> Result<Response<SendResponse>, Status> {
        let peer = request.remote_addr();
        let (metadata, _, request) = request.into_parts();
        let r = match self.may_send_as(&metadata, peer, &request.sender).await {
            Ok(()) => self.sequence(request).await,
            Err(e) => Err(e),
        };
        count_send(&self.inner, &r);
        r.map(|timestamp| Response::new(SendResponse { timestamp })).map_err(Status::from)
    }

    type SendStreamStream = send_stream::Answers;

    async fn send_stream(
        &self,
        request: Request<Streaming<SendRequest>>,
    ) -> Result<Response<Self::SendStreamStream>, Status> {
        let peer = request.remote_addr();
        let (metadata, _, sends) = request.into_parts();
        Ok(Response::new(send_stream::serve(self.clone(), metadata, peer, sends)))
    }

    type SubscribeStream = reader::Subscription;

    async fn subscribe(&self, request: Request<SubscribeRequest>) -> Result<Response<Self::SubscribeStream>, Status> {
        let peer = request.remote_addr();
        let (metadata, _, req) = request.into_parts();
        members::validate_name(&req.member)?;
        auth::authorize(&self.inner, &metadata, peer, &req.member, "subscribe as").await?;
        let member = self.inner.members.require_enabled(&req.member).await?;
        Ok(Response::new(reader::subscribe(self.inner.clone(), member, req.after).await?))
    }

    async fn acknowledge(&self, request: Request<AcknowledgeRequest>) -> Result<Response<AcknowledgeResponse>, Status> {
        let peer = request.remote_addr();
        let (metadata, _, req) = request.into_parts();
        members::validate_name(&req.member)?;
        auth::authorize(&self.inner, &metadata, peer, &req.member, "acknowledge for").await?;
        // Checked against the database, not the member cache: a disable counts at once.
        pruning::acknowledge(&self.inner.db, &req.member, req.timestamp).await?;
        Ok(Response::new(AcknowledgeResponse {}))
    }
}
