//! Processing one sequenced event, inside the leader's fenced transaction:
//! 1. requests past their decision time without a verdict time out (`LOCAL_VERDICT_TIMEOUT`),
//!    and own submissions past their max-sequencing-time that were never seen sequenced get
//!    `NOT_SEQUENCED_TIMEOUT`;
//! 2. the event's content: topology transactions, confirmation requests this participant
//!    hosts an informee of (validated at the event's timestamp: inputs active and unlocked,
//!    ledger time within tolerance; locks taken; a response prepared for the confirming
//!    parties it hosts), verdicts, and receipts of its own sends;
//! 3. decided requests are published in request-time order at the next offsets (the update,
//!    and the completion when it is this participant's submission), their locks released;
//! 4. the processed position and the ledger end move, in the same transaction.
//!
//! The same events always give the same state, so a new leader that replays them agrees.

use std::collections::{BTreeMap, BTreeSet};

use diesel_async::AsyncPgConnection;
use serde::{Deserialize, Serialize};
use syncline_proto::sequencer::{Event as SeqEvent, SendRequest};
use syncline_protocol::codes;
use syncline_protocol::messages::{
    self, Action, ConfirmationResponse, ConfirmationResult, Hash, LocalVerdict, Message, Verdict, ViewMessage,
    ViewResponse,
};
use syncline_protocol::topology;
use syncline_sequencer_client::RequestBuilder;
use tonic::Code;

use crate::error::ParticipantError;
use crate::interpret;
use crate::model::{ArchivedEvent, CreatedEvent, Event};
use crate::store::{self, InFlight, Ledger, Pending, StoredCompletion, StoredContract, StoredUpdate};

type Result<T, E = ParticipantError> = std::result::Result<T, E>;

/// Message-id prefix of submissions: `req-<request uuid>`.
pub const REQUEST_PREFIX: &str = "req-";
/// Message-id prefix of responses: `resp-<request id>`, so a resend is never sequenced twice.
pub const RESPONSE_PREFIX: &str = "resp-";
/// Message-id prefix of time proofs.
pub use syncline_protocol::time_proof::TIME_PROOF_PREFIX;

/// The submission was not sequenced by its max-sequencing-time.
pub const NOT_SEQUENCED_TIMEOUT: &str = "NOT_SEQUENCED_TIMEOUT";
/// The sequencer refused to deliver the submission.
pub const SEQUENCER_DELIVER_ERROR: &str = "SEQUENCER_DELIVER_ERROR";
/// The sequencer refused the submission's send for good (too large, not allowed, …): it was
/// not sequenced and never will be.
pub const SEQUENCER_SUBMISSION_REQUEST_REFUSED: &str = "SEQUENCER_SUBMISSION_REQUEST_REFUSED";

/// How a pending request ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Approved: commit.
    Accepted,
    /// Rejected (or timed out).
    Rejected {
        /// Error id.
        id: String,
        /// Human-readable cause.
        message: String,
    },
}

/// The gRPC code of a rejection id.
pub fn code_of(id: &str) -> Code {
    match id {
        codes::LOCAL_VERDICT_INACTIVE_CONTRACTS => Code::NotFound,
        codes::MEDIATOR_INVALID_MESSAGE | codes::LOCAL_VERDICT_MALFORMED_REQUEST => Code::FailedPrecondition,
        codes::LOCAL_VERDICT_CREATES_EXISTING_CONTRACTS => Code::AlreadyExists,
        SEQUENCER_DELIVER_ERROR | SEQUENCER_SUBMISSION_REQUEST_REFUSED => Code::InvalidArgument,
        _ => Code::Aborted,
    }
}

/// What processing an event changed, for the caller to act on after the commit.
#[derive(Debug, Default)]
pub struct Processed {
    /// Responses to send.
    pub responses: Vec<SendRequest>,
    /// The ledger row after the event.
    pub ledger: Ledger,
    /// Rows published by this event.
    pub published: usize,
    /// The status (`OK` or the error id) of each completion published by this event.
    pub completed: Vec<String>,
}

/// The participant's event processing.
pub struct Processor {
    member: String,
}

impl Processor {
    /// The processing of participant `member`.
    pub fn new(member: &str) -> Processor {
        Processor { member: member.into() }
    }

    /// Process `event` (call inside the fenced transaction).
    pub async fn process(&self, conn: &mut AsyncPgConnection, event: &SeqEvent) -> Result<Processed> {
        let ts = event.timestamp;
        let mut ledger = store::ledger(conn, &self.member).await?;
        let mut out = Processed::default();
        for id in store::undecided_before(conn, ts).await? {
            let outcome = Outcome::Rejected {
                id: codes::LOCAL_VERDICT_TIMEOUT.into(),
                message: format!("no verdict for request {id} by its decision time"),
            };
            store::decide(conn, id, &json(&outcome)).await?;
        }
        // Before the content: a request this event times out releases its locks first.
        out.published += self.publish(conn, &mut ledger, &mut out.completed).await?;
        for f in store::unsequenced_before(conn, ts).await? {
            let message = format!(
                "the submission was not sequenced by its max-sequencing-time {} (sequencer time is now {ts})",
                f.max_sequencing_time
            );
            self.reject_unsequenced(conn, &mut ledger, &f, ts, NOT_SEQUENCED_TIMEOUT, message).await?;
            out.completed.push(NOT_SEQUENCED_TIMEOUT.into());
            out.published += 1;
        }
        let own = (event.sender == self.member).then_some(event.message_id.as_deref()).flatten();
        let mut ours = None;
        if let Some(message_id) = own {
            if let Some(id) = message_id.strip_prefix(RESPONSE_PREFIX).and_then(|id| id.parse().ok()) {
                store::response_delivered(conn, id).await?;
            } else if message_id.starts_with(REQUEST_PREFIX) {
                ours = store::mark_sequenced(conn, message_id, ts).await?;
            }
        }
        if let Some(error) = &event.error {
            if let Some(f) = ours {
                let message = format!("the sequencer refused the request: {}: {}", error.code, error.message);
                self.reject_unsequenced(conn, &mut ledger, &f, ts, SEQUENCER_DELIVER_ERROR, message).await?;
                out.completed.push(SEQUENCER_DELIVER_ERROR.into());
                out.published += 1;
            }
        } else {
            self.content(conn, event, ours, &mut out).await?;
        }
        out.published += self.publish(conn, &mut ledger, &mut out.completed).await?;
        ledger.processed_ts = Some(ts);
        store::set_ledger(conn, &self.member, &ledger).await?;
        out.ledger = ledger;
        Ok(out)
    }

    /// Decode the envelopes and handle what is for the participant.
    async fn content(
        &self,
        conn: &mut AsyncPgConnection,
        event: &SeqEvent,
        ours: Option<InFlight>,
        out: &mut Processed,
    ) -> Result<()> {
        let ts = event.timestamp;
        let mut root_hash = None;
        let mut views = Vec::new();
        for (i, envelope) in event.envelopes.iter().enumerate() {
            if envelope.content.is_empty() {
                continue;
            }
            match messages::decode(&envelope.content) {
                Ok(Message::Topology(tx)) => {
                    topology::processor::apply(conn, ts, &event.sender, &tx).await?;
                }
                Ok(Message::RootHash(m)) => root_hash = Some(m.root_hash),
                Ok(Message::View(v)) => views.push(v),
                Ok(Message::Result(r)) => self.result(conn, ts, r).await?,
                Ok(_) => {
                    tracing::warn!(ts, sender = %event.sender, envelope = i, "message not for a participant ignored")
                }
                Err(e) => {
                    tracing::warn!(ts, sender = %event.sender, envelope = i, error = %e, "undecodable envelope ignored")
                }
            }
        }
        if let Some(root_hash) = root_hash {
            if !views.is_empty() {
                self.request(conn, ts, &event.sender, root_hash, views, ours, out).await?;
            }
        }
        Ok(())
    }

    /// A confirmation request sequenced at `ts`: validate it, lock, prepare the response.
    #[allow(clippy::too_many_arguments)]
    async fn request(
        &self,
        conn: &mut AsyncPgConnection,
        ts: i64,
        sender: &str,
        root_hash: Hash,
        mut views: Vec<ViewMessage>,
        ours: Option<InFlight>,
        out: &mut Processed,
    ) -> Result<()> {
        views.sort_by_key(|v| v.view_index);
        let header = views[0].header.clone();
        let snapshot = topology::snapshot_at(conn, ts).await?;
        let params = snapshot.parameters();
        let hosted = snapshot.parties_hosted_by(&self.member);
        // Inputs and created ids, with what this participant knows of them.
        let mut consumed = Vec::new();
        let mut created = Vec::new();
        for v in &views {
            for a in &v.view.actions {
                match a {
                    Action::Archive(a) => consumed.push(a.contract_id.clone()),
                    Action::Create(c) => created.push(c.contract_id.clone()),
                }
            }
        }
        let mut known = BTreeMap::new();
        for id in consumed.iter().chain(&created) {
            if let Some(c) = store::contract(conn, id).await? {
                known.insert(id.clone(), c);
            }
        }
        let mut all: Vec<String> = consumed.iter().chain(&created).cloned().collect();
        all.sort();
        all.dedup();
        let locked = store::locks(conn, &all).await?;
        let verdict = self.validate(ts, sender, root_hash, &views, &params, &consumed, &created, &known, &locked);
        if verdict == LocalVerdict::Approve {
            store::lock(conn, &all, ts).await?;
        } else {
            tracing::info!(request_id = ts, ?verdict, "request rejected locally");
        }
        let events = events_of(&views, &known);
        // Answer for the confirming parties hosted here with confirmation permission.
        let answers: Vec<ViewResponse> = (views.iter())
            .filter_map(|v| {
                let parties: BTreeSet<String> = (v.view.common.confirming_parties.iter())
                    .filter(|p| hosted.get(p.as_str()).is_some_and(|perm| perm.can_confirm()))
                    .cloned()
                    .collect();
                (!parties.is_empty()).then(|| ViewResponse {
                    view_index: v.view_index,
                    verdict: verdict.clone(),
                    confirming_parties: parties,
                })
            })
            .collect();
        let deadline = params.response_deadline(ts);
        let response = (!answers.is_empty()).then(|| {
            messages::encode(&Message::Response(ConfirmationResponse {
                request_id: ts,
                root_hash,
                participant: self.member.clone(),
                views: answers,
            }))
        });
        let pending = Pending {
            request_id: ts,
            root_hash: root_hash.as_bytes().to_vec(),
            request_uuid: header.request_uuid.clone(),
            decision_time: params.decision_time(ts),
            change_hash: ours.map(|f| f.change_hash),
            events: json(&events),
            outcome: None,
            response,
            response_deadline: deadline,
            response_delivered: false,
        };
        store::insert_pending(conn, &pending).await?;
        if let Some(send) = response_send(&self.member, &pending, snapshot.mediator()) {
            out.responses.push(send);
        }
        Ok(())
    }

    /// The local verdict on a request (deterministic in its inputs).
    #[allow(clippy::too_many_arguments)]
    fn validate(
        &self,
        ts: i64,
        sender: &str,
        root_hash: Hash,
        views: &[ViewMessage],
        params: &messages::SynchronizerParameters,
        consumed: &[String],
        created: &[String],
        known: &BTreeMap<String, StoredContract>,
        locked: &[(String, i64)],
    ) -> LocalVerdict {
        let malformed = |reason: String| LocalVerdict::Malformed { reason };
        let reject = |code: &str, reason: String| LocalVerdict::Reject { code: code.into(), reason };
        let header = &views[0].header;
        if header.submitter.submitting_participant != sender {
            return malformed(format!(
                "the request names {} as submitting participant but was sent by {sender}",
                header.submitter.submitting_participant
            ));
        }
        for v in views {
            if v.root_hash != root_hash || v.header != *header {
                return malformed(format!("view {} belongs to another request", v.view_index));
            }
            if let Err(e) = v.verify_root_hash() {
                return malformed(format!("view {}: {e}", v.view_index));
            }
            if let Some(why) = v.view.common.inconsistency(&header.submitter.act_as) {
                return malformed(format!("view {}: {why}", v.view_index));
            }
            let index = v.view_index as usize;
            if let Some(why) =
                interpret::check_view(&v.view, index, &header.request_uuid, &header.submitter.act_as, known)
            {
                return malformed(format!("view {index}: {why}"));
            }
        }
        let distinct: BTreeSet<&String> = consumed.iter().chain(created).collect();
        if distinct.len() != consumed.len() + created.len() {
            return malformed("a contract is consumed or created twice".into());
        }
        if !params.ledger_time_within_tolerance(header.ledger_time, ts) {
            return reject(
                codes::LOCAL_VERDICT_LEDGER_TIME_OUT_OF_BOUND,
                format!(
                    "ledger time {} is more than {:?} away from the record time {ts}",
                    header.ledger_time, params.ledger_time_record_time_tolerance
                ),
            );
        }
        if let Some(id) = created.iter().find(|id| known.contains_key(*id)) {
            return reject(codes::LOCAL_VERDICT_CREATES_EXISTING_CONTRACTS, format!("contract {id} already exists"));
        }
        let inactive: Vec<&String> =
            consumed.iter().filter(|id| known.get(*id).is_none_or(|c| c.archived_offset.is_some())).collect();
        if !inactive.is_empty() {
            return reject(
                codes::LOCAL_VERDICT_INACTIVE_CONTRACTS,
                format!("inactive or unknown contracts {inactive:?}"),
            );
        }
        if !locked.is_empty() {
            let ids: Vec<&String> = locked.iter().map(|(id, _)| id).collect();
            return reject(
                codes::LOCAL_VERDICT_LOCKED_CONTRACTS,
                format!("contracts {ids:?} are locked by pending requests"),
            );
        }
        LocalVerdict::Approve
    }

    /// A verdict sequenced at `ts`.
    async fn result(&self, conn: &mut AsyncPgConnection, ts: i64, r: ConfirmationResult) -> Result<()> {
        let Some(p) = store::pending(conn, r.request_id).await? else {
            tracing::debug!(request_id = r.request_id, "verdict for a request not pending here ignored");
            return Ok(());
        };
        if p.outcome.is_some() || ts > p.decision_time {
            tracing::warn!(request_id = r.request_id, ts, "verdict after the decision time ignored");
            return Ok(());
        }
        if p.root_hash != r.root_hash.as_bytes() {
            tracing::warn!(request_id = r.request_id, "verdict with another root hash ignored");
            return Ok(());
        }
        let outcome = match r.verdict {
            Verdict::Approve => Outcome::Accepted,
            Verdict::ParticipantReject(reasons) => {
                let id = reasons[0].code.clone();
                let message = (reasons.iter())
                    .map(|r| format!("{} rejected for {:?}: {}: {}", r.participant, r.parties, r.code, r.reason))
                    .collect::<Vec<_>>()
                    .join("; ");
                Outcome::Rejected { id, message }
            }
            Verdict::MediatorReject { code, reason, parties } => {
                let message = if parties.is_empty() {
                    reason
                } else {
                    format!("{reason} (unresponsive parties: {})", parties.into_iter().collect::<Vec<_>>().join(", "))
                };
                Outcome::Rejected { id: code, message }
            }
        };
        store::decide(conn, r.request_id, &json(&outcome)).await?;
        Ok(())
    }

    /// Publish decided requests in request-time order, stopping at the first undecided one.
    async fn publish(
        &self,
        conn: &mut AsyncPgConnection,
        ledger: &mut Ledger,
        completed: &mut Vec<String>,
    ) -> Result<usize> {
        let mut published = 0;
        while let Some(p) = store::oldest_pending(conn).await? {
            let Some(outcome) = p.outcome.as_deref() else { break };
            let outcome: Outcome = serde_json::from_str(outcome).expect("the participant stored this outcome");
            let events: Vec<Event> = serde_json::from_str(&p.events).expect("the participant stored these events");
            let update_id = Hash::from_slice(&p.root_hash).expect("a stored root hash has 32 bytes").to_hex();
            let submission = match &p.change_hash {
                Some(h) => store::in_flight(conn, h).await?,
                None => None,
            };
            let offset = ledger.ledger_end + 1;
            let record_time = p.request_id;
            let mut used = false;
            if outcome == Outcome::Accepted {
                for e in &events {
                    match e {
                        Event::Created(c) => {
                            store::insert_contract(
                                conn,
                                &StoredContract {
                                    contract_id: c.contract_id.clone(),
                                    template: c.template.clone(),
                                    arguments: c.arguments.clone(),
                                    signatories: c.signatories.clone(),
                                    observers: c.observers.clone(),
                                    created_offset: offset,
                                    created_update: update_id.clone(),
                                    archived_offset: None,
                                },
                            )
                            .await?
                        }
                        Event::Archived(a) => store::archive_contract(conn, &a.contract_id, offset).await?,
                    }
                }
                let witnesses: BTreeSet<String> = events.iter().flat_map(Event::stakeholders).collect();
                store::insert_update(
                    conn,
                    &StoredUpdate {
                        ledger_offset: offset,
                        update_id: update_id.clone(),
                        record_time,
                        command_id: submission.as_ref().map(|f| f.command_id.clone()),
                        workflow_id: submission.as_ref().and_then(|f| f.workflow_id.clone()),
                        witnesses: witnesses.into_iter().collect(),
                        events: p.events.clone(),
                    },
                )
                .await?;
                used = true;
            }
            if let Some(f) = &submission {
                let (status, message, accepted) = match &outcome {
                    Outcome::Accepted => ("OK".to_string(), String::new(), Some(update_id.clone())),
                    Outcome::Rejected { id, message } => (id.clone(), message.clone(), None),
                };
                let code = if accepted.is_some() { Code::Ok } else { code_of(&status) };
                completed.push(status.clone());
                store::insert_completion(conn, &completion(f, offset, record_time, status, code, message, accepted))
                    .await?;
                if outcome == Outcome::Accepted {
                    store::set_accepted(conn, &f.change_hash, offset, record_time, f.submission_id.as_deref()).await?;
                }
                store::delete_in_flight(conn, &f.change_hash).await?;
                used = true;
            }
            if used {
                ledger.ledger_end = offset;
                ledger.ledger_end_record_time = Some(record_time);
                published += 1;
                tracing::debug!(request_id = p.request_id, offset, ?outcome, "published");
            }
            store::remove_pending(conn, p.request_id).await?;
        }
        Ok(published)
    }

    /// Complete the submission whose send (`message_id`) the sequencer refused for good, at the
    /// next offset, without waiting for its max-sequencing-time (call inside the fenced
    /// transaction). `None` when it is no longer in flight (completed meanwhile, or seen
    /// sequenced after all).
    pub async fn refuse(
        &self,
        conn: &mut AsyncPgConnection,
        message_id: &str,
        reason: String,
    ) -> Result<Option<Processed>> {
        let Some(f) = store::in_flight_unsequenced(conn, message_id).await? else { return Ok(None) };
        let mut ledger = store::ledger(conn, &self.member).await?;
        // Record times never go back: the later of the last processed event and the ledger end.
        let ts = ledger.processed_ts.unwrap_or(0).max(ledger.ledger_end_record_time.unwrap_or(0));
        let message = format!("the sequencer refused the submission: {reason}");
        self.reject_unsequenced(conn, &mut ledger, &f, ts, SEQUENCER_SUBMISSION_REQUEST_REFUSED, message).await?;
        store::set_ledger(conn, &self.member, &ledger).await?;
        Ok(Some(Processed {
            ledger,
            published: 1,
            completed: vec![SEQUENCER_SUBMISSION_REQUEST_REFUSED.into()],
            ..Processed::default()
        }))
    }

    /// Complete an own submission that was never sequenced, at the next offset.
    async fn reject_unsequenced(
        &self,
        conn: &mut AsyncPgConnection,
        ledger: &mut Ledger,
        f: &InFlight,
        ts: i64,
        id: &str,
        message: String,
    ) -> Result<()> {
        let offset = ledger.ledger_end + 1;
        tracing::info!(command_id = %f.command_id, offset, id, "submission completed without being sequenced");
        store::insert_completion(conn, &completion(f, offset, ts, id.into(), code_of(id), message, None)).await?;
        store::delete_in_flight(conn, &f.change_hash).await?;
        ledger.ledger_end = offset;
        ledger.ledger_end_record_time = Some(ts);
        Ok(())
    }
}

/// The completion row of submission `f`.
fn completion(
    f: &InFlight,
    offset: i64,
    record_time: i64,
    status: String,
    code: Code,
    message: String,
    update_id: Option<String>,
) -> StoredCompletion {
    StoredCompletion {
        ledger_offset: offset,
        user_id: f.user_id.clone(),
        command_id: f.command_id.clone(),
        submission_id: f.submission_id.clone(),
        act_as: f.act_as.clone(),
        status,
        grpc_code: code as i32,
        message,
        update_id,
        record_time,
        dedup_offset: f.dedup_offset,
        dedup_duration_micros: f.dedup_duration_micros,
    }
}

/// The events of the views this participant received, in view and action order.
fn events_of(views: &[ViewMessage], known: &BTreeMap<String, StoredContract>) -> Vec<Event> {
    let mut events = Vec::new();
    for v in views {
        for a in &v.view.actions {
            events.push(match a {
                Action::Create(c) => Event::Created(CreatedEvent {
                    contract_id: c.contract_id.clone(),
                    template: c.template.clone(),
                    arguments: c.arguments.clone(),
                    signatories: c.signatories.iter().cloned().collect(),
                    observers: c.observers.iter().cloned().collect(),
                }),
                Action::Archive(a) => {
                    let c = known.get(&a.contract_id);
                    Event::Archived(ArchivedEvent {
                        contract_id: a.contract_id.clone(),
                        template: c.map(|c| c.template.clone()).unwrap_or_default(),
                        stakeholders: c
                            .map(|c| c.signatories.iter().chain(&c.observers).cloned().collect::<BTreeSet<_>>())
                            .unwrap_or_default()
                            .into_iter()
                            .collect(),
                    })
                }
            });
        }
    }
    events
}

/// The send of the response stored with `p`, to `mediator`, sequenceable until the response
/// deadline, with a message id derived from the request id.
pub fn response_send(member: &str, p: &Pending, mediator: Option<&str>) -> Option<SendRequest> {
    let (response, mediator) = (p.response.as_ref()?, mediator?);
    Some(
        RequestBuilder::new(member, format!("{RESPONSE_PREFIX}{}", p.request_id))
            .to([mediator], response.clone())
            .until(p.response_deadline)
            .build(),
    )
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("outcomes and events serialize")
}
