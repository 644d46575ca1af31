//! Processing one sequenced event, inside the leader's fenced transaction: first every pending
//! request whose response deadline the event's timestamp passed times out; then the event's
//! content is handled (topology transactions, new requests, responses, the mediator's own
//! verdicts seen sequenced); then the processed position moves to the event. The same events
//! always give the same state and verdicts, so a new leader that replays them agrees.

use std::collections::{BTreeMap, BTreeSet};

/// Result of processing.
type Result<T, E = MediatorError> = std::result::Result<T, E>;

use diesel_async::AsyncPgConnection;
use syncline_proto::sequencer::{Event, SendRequest};
use syncline_protocol::codes;
use syncline_protocol::messages::{
    self, ConfirmationResponse, ConfirmationResult, Hash, InformeeMessage, LocalVerdict as WireLocal, Message,
    RejectReason, Verdict as WireVerdict,
};
use syncline_protocol::topology::{self, TopologySnapshot};
use syncline_sequencer_client::RequestBuilder;

use crate::aggregation::{Aggregation, LocalVerdict, Progress, Rejection, Verdict};
use crate::config::MediatorParameters;
use crate::error::MediatorError;
use crate::store::{self, StoredRequest};

/// Message-id prefix of verdicts: `verdict-<request id>`, so a resend is never sequenced twice.
pub const VERDICT_PREFIX: &str = "verdict-";

/// What processing an event changed, for the caller to act on after the commit.
#[derive(Debug, Default)]
pub struct Processed {
    /// Requests finalized by this event: their verdicts are to be sent.
    pub finalized: Vec<StoredRequest>,
    /// Requests still pending.
    pub pending: i64,
    /// The earliest response deadline among them.
    pub next_deadline: Option<i64>,
}

/// The mediator's event processing.
pub struct Processor {
    member: String,
    dedup_window: i64,
}

impl Processor {
    /// The processing of mediator `member`.
    pub fn new(member: &str, params: &MediatorParameters) -> Processor {
        Processor { member: member.into(), dedup_window: params.deduplication_window.as_micros() as i64 }
    }

    /// Process `event` (call inside the fenced transaction).
    pub async fn process(&self, conn: &mut AsyncPgConnection, event: &Event) -> Result<Processed> {
        let ts = event.timestamp;
        let mut out = Processed::default();
        for mut request in store::due(conn, ts).await? {
            let verdict = request.aggregation().timeout();
            self.finalize(conn, &mut request, verdict, ts, &mut out).await?;
        }
        if let Some(error) = &event.error {
            tracing::warn!(ts, code = %error.code, message = %error.message, "a send of this mediator was refused");
        } else if event.sender == self.member {
            self.own(conn, event).await?;
        } else {
            self.content(conn, event, &mut out).await?;
        }
        store::set_position(conn, &self.member, ts).await?;
        (out.pending, out.next_deadline) = store::pending(conn).await?;
        Ok(out)
    }

    /// The mediator's own event: a verdict now sequenced, or a time proof.
    async fn own(&self, conn: &mut AsyncPgConnection, event: &Event) -> Result<()> {
        let id =
            event.message_id.as_deref().and_then(|m| m.strip_prefix(VERDICT_PREFIX)).and_then(|id| id.parse().ok());
        if let Some(request_id) = id {
            store::mark_delivered(conn, request_id, event.timestamp).await?;
        }
        Ok(())
    }

    /// Another member's event: decode its envelopes and handle what is for the mediator.
    async fn content(&self, conn: &mut AsyncPgConnection, event: &Event, out: &mut Processed) -> Result<()> {
        let ts = event.timestamp;
        let mut informees = Vec::new();
        let mut root_hashes = Vec::new();
        for (i, envelope) in event.envelopes.iter().enumerate() {
            if envelope.content.is_empty() {
                continue;
            }
            match messages::decode(&envelope.content) {
                Ok(Message::Topology(tx)) => {
                    topology::processor::apply(conn, ts, &event.sender, &tx).await?;
                }
                Ok(Message::Informee(m)) => informees.push(m),
                Ok(Message::RootHash(m)) => root_hashes.push((m.root_hash, envelope.recipients.clone())),
                Ok(Message::Response(r)) => self.response(conn, ts, &event.sender, r, out).await?,
                Ok(other) => invalid(
                    codes::MEDIATOR_RECEIVED_MALFORMED_MESSAGE,
                    ts,
                    &event.sender,
                    &format!("envelope {i} carries a {} message, which is not for the mediator", kind(&other)),
                ),
                Err(e) => invalid(
                    codes::MEDIATOR_RECEIVED_MALFORMED_MESSAGE,
                    ts,
                    &event.sender,
                    &format!("envelope {i}: {e}"),
                ),
            }
        }
        match informees.len() {
            0 if !root_hashes.is_empty() => invalid(
                codes::MEDIATOR_INVALID_MESSAGE,
                ts,
                &event.sender,
                "a root hash message without an informee message",
            ),
            0 => {}
            1 => {
                let informee = informees.pop().expect("one");
                self.request(conn, ts, &event.sender, informee, &root_hashes, out).await?;
            }
            n => invalid(
                codes::MEDIATOR_INVALID_MESSAGE,
                ts,
                &event.sender,
                &format!("{n} informee messages in one batch; a request has one"),
            ),
        }
        Ok(())
    }

    /// A new confirmation request, sequenced at `ts` (its request id) by `sender`.
    async fn request(
        &self,
        conn: &mut AsyncPgConnection,
        ts: i64,
        sender: &str,
        informee: InformeeMessage,
        root_hashes: &[(Hash, Vec<String>)],
        out: &mut Processed,
    ) -> Result<()> {
        let snapshot = topology::store::snapshot_at(conn, ts).await?;
        if snapshot.mediator() != Some(self.member.as_str()) {
            // Canton ignores a request for another mediator: no verdict can come from here.
            tracing::warn!(request_id = ts, mediator = ?snapshot.mediator(), "request ignored: this member is not the synchronizer's mediator at its timestamp");
            return Ok(());
        }
        let params = snapshot.parameters();
        let uuid = informee.header.request_uuid.clone();
        let mut recipients: BTreeSet<String> = snapshot.participants_for(informee.informees());
        if snapshot.is_active_participant(sender) {
            recipients.insert(sender.to_string());
        }
        let mut request = StoredRequest {
            request_id: ts,
            request_uuid: uuid.clone(),
            root_hash: informee.root_hash.as_bytes().to_vec(),
            deadline: params.response_deadline(ts),
            decision_time: params.decision_time(ts),
            recipients: recipients.into_iter().collect(),
            aggregation: String::new(),
            verdict: None,
            finalized_at: None,
            delivered_at: None,
        };
        let checked = match store::claim_uuid(conn, &uuid, ts, ts.saturating_add(self.dedup_window)).await? {
            Some(earlier) => Err(Verdict::mediator_reject(
                codes::DUPLICATE_CONFIRMATION_REQUEST_UUID,
                format!("request UUID {uuid} was already used by request {earlier} within the deduplication window"),
            )),
            None => self.check(&snapshot, sender, &informee, root_hashes),
        };
        match checked {
            Ok(aggregation) => {
                request.aggregation = store::to_json(&aggregation);
                store::insert_request(conn, &request).await?;
                tracing::debug!(request_id = ts, %uuid, deadline = request.deadline, "request registered");
            }
            Err(verdict) => {
                if let Verdict::MediatorReject { code, reason, .. } = &verdict {
                    invalid(code, ts, sender, reason);
                }
                request.aggregation = store::to_json(&Aggregation::new(vec![]));
                store::insert_request(conn, &request).await?;
                self.finalize(conn, &mut request, verdict, ts, out).await?;
            }
        }
        Ok(())
    }

    /// The checks of a new request against the topology at its timestamp: its aggregation, or
    /// the mediator reject that finalizes it at once.
    fn check(
        &self,
        snapshot: &TopologySnapshot,
        sender: &str,
        informee: &InformeeMessage,
        root_hashes: &[(Hash, Vec<String>)],
    ) -> std::result::Result<Aggregation, Verdict> {
        let reject = |reason: String| Verdict::mediator_reject(codes::MEDIATOR_INVALID_MESSAGE, reason);
        let submitter = &informee.header.submitter.submitting_participant;
        if submitter != sender {
            return Err(reject(format!(
                "the request names {submitter} as its submitting participant but was sent by {sender}"
            )));
        }
        informee.verify_root_hash().map_err(|e| reject(e.to_string()))?;
        if let Some(why) = informee.inconsistency() {
            return Err(reject(why));
        }
        let all_informees = informee.informees();
        if let Some(party) = all_informees.iter().find(|p| !snapshot.is_hosted(p)) {
            return Err(reject(format!("informee {party} is not hosted by any active participant")));
        }
        let mut views = Vec::with_capacity(informee.views.len());
        for (i, view) in informee.views.iter().enumerate() {
            let mut parties = BTreeMap::new();
            for party in &view.common.confirming_parties {
                let hosts = snapshot.confirming_participants(party);
                if hosts.is_empty() {
                    return Err(reject(format!(
                        "view {i}: confirming party {party} is not hosted by any participant with confirmation permission"
                    )));
                }
                parties.insert(party.clone(), hosts);
            }
            views.push(parties);
        }
        // One root hash message, with the request's root hash, addressed to exactly the
        // informees' participants and this mediator.
        let [(root_hash, recipients)] = root_hashes else {
            return Err(reject(format!(
                "the request has {} root hash messages; it needs exactly one",
                root_hashes.len()
            )));
        };
        if *root_hash != informee.root_hash {
            return Err(reject(format!(
                "the root hash message carries {root_hash}, the informee message {}",
                informee.root_hash
            )));
        }
        let mut expected = snapshot.participants_for(&all_informees);
        expected.insert(self.member.clone());
        let got: BTreeSet<String> = recipients.iter().cloned().collect();
        if got != expected {
            return Err(reject(format!(
                "the root hash message is addressed to {got:?}; the informees' participants and the mediator are {expected:?}"
            )));
        }
        Ok(Aggregation::new(views))
    }

    /// A confirmation response sequenced at `ts` from `sender`.
    async fn response(
        &self,
        conn: &mut AsyncPgConnection,
        ts: i64,
        sender: &str,
        response: ConfirmationResponse,
        out: &mut Processed,
    ) -> Result<()> {
        let id = response.request_id;
        if response.participant != sender {
            invalid(
                codes::MEDIATOR_INVALID_MESSAGE,
                ts,
                sender,
                &format!(
                    "response for request {id} names participant {} but was sent by {sender}",
                    response.participant
                ),
            );
            return Ok(());
        }
        let Some(mut request) = store::request(conn, id).await? else {
            invalid(codes::MEDIATOR_INVALID_MESSAGE, ts, sender, &format!("response for unknown request {id}"));
            return Ok(());
        };
        if request.verdict.is_some() {
            if ts > request.deadline {
                metrics::counter!("syncline_mediator_late_responses_total").increment(1);
                tracing::warn!(
                    request_id = id,
                    participant = sender,
                    deadline = request.deadline,
                    "response after the deadline dropped: the request is already finalized"
                );
            } else {
                tracing::debug!(request_id = id, participant = sender, "response for a finalized request ignored");
            }
            return Ok(());
        }
        if request.root_hash != response.root_hash.as_bytes() {
            invalid(
                codes::MEDIATOR_INVALID_MESSAGE,
                ts,
                sender,
                &format!("response for request {id} carries another root hash"),
            );
            return Ok(());
        }
        let mut aggregation = request.aggregation();
        let mut decided = None;
        for view in &response.views {
            let parties: Vec<String> = view.confirming_parties.iter().cloned().collect();
            match aggregation.respond(sender, view.view_index, &local(&view.verdict), &parties) {
                Ok(Progress::Pending) => {}
                Ok(Progress::Finalized(v)) => {
                    decided = Some(v);
                    break;
                }
                Err(why) => tracing::warn!(request_id = id, participant = sender, %why, "response ignored"),
            }
        }
        match decided {
            Some(verdict) => self.finalize(conn, &mut request, verdict, ts, out).await,
            None => Ok(store::save_aggregation(conn, id, &aggregation).await?),
        }
    }

    /// Finalize `request` with `verdict` at `ts`.
    async fn finalize(
        &self,
        conn: &mut AsyncPgConnection,
        request: &mut StoredRequest,
        verdict: Verdict,
        ts: i64,
        out: &mut Processed,
    ) -> Result<()> {
        store::finalize(conn, request.request_id, &verdict, ts).await?;
        tracing::info!(request_id = request.request_id, verdict = verdict.kind(), "request finalized");
        request.verdict = Some(store::to_json(&verdict));
        request.finalized_at = Some(ts);
        if request.recipients.is_empty() {
            // Nobody to tell: nothing to send or re-send.
            store::mark_delivered(conn, request.request_id, ts).await?;
        } else {
            out.finalized.push(request.clone());
        }
        Ok(())
    }
}

/// The send of `request`'s verdict: to its participants, sequenceable until its decision
/// time, with a message id derived from the request id. `None` when it has none to send.
pub fn verdict_send(member: &str, request: &StoredRequest) -> Option<SendRequest> {
    let verdict = request.verdict()?;
    if request.recipients.is_empty() {
        return None;
    }
    let root_hash = Hash::from_slice(&request.root_hash).expect("a stored root hash has 32 bytes");
    let result = ConfirmationResult { request_id: request.request_id, root_hash, verdict: wire(verdict) };
    let content = messages::encode(&Message::Result(result));
    Some(
        RequestBuilder::new(member, format!("{VERDICT_PREFIX}{}", request.request_id))
            .to(request.recipients.clone(), content)
            .until(request.decision_time)
            .build(),
    )
}

/// The wire form of a verdict: rejections grouped per participant and cause.
fn wire(verdict: Verdict) -> WireVerdict {
    match verdict {
        Verdict::Approve => WireVerdict::Approve,
        Verdict::ParticipantReject { reasons } => {
            let mut grouped: Vec<RejectReason> = Vec::new();
            for Rejection { party, participant, code, reason } in reasons {
                match grouped.iter_mut().find(|g| g.participant == participant && g.code == code && g.reason == reason)
                {
                    Some(g) => {
                        g.parties.insert(party);
                    }
                    None => grouped.push(RejectReason { parties: BTreeSet::from([party]), participant, code, reason }),
                }
            }
            WireVerdict::ParticipantReject(grouped)
        }
        Verdict::MediatorReject { code, reason, unresponsive_parties } => {
            WireVerdict::MediatorReject { code, reason, parties: unresponsive_parties.into_iter().collect() }
        }
    }
}

fn local(verdict: &WireLocal) -> LocalVerdict {
    match verdict {
        WireLocal::Approve => LocalVerdict::Approve,
        WireLocal::Reject { code, reason } => LocalVerdict::Reject { code: code.clone(), reason: reason.clone() },
        WireLocal::Malformed { reason } => LocalVerdict::Malformed { reason: reason.clone() },
    }
}

fn kind(message: &Message) -> &'static str {
    match message {
        Message::Topology(_) => "topology",
        Message::Informee(_) => "informee",
        Message::RootHash(_) => "root hash",
        Message::View(_) => "view",
        Message::Response(_) => "confirmation response",
        Message::Result(_) => "confirmation result",
    }
}

/// Log and count a message the mediator refuses.
fn invalid(code: &str, ts: i64, sender: &str, reason: &str) {
    metrics::counter!("syncline_mediator_invalid_messages_total", "code" => code.to_string()).increment(1);
    tracing::warn!(ts, sender, code, reason, "invalid message");
}
