//! The ledger API as a Rust API on the running participant: what the gRPC ledger API calls.
//! Every call is answered by the leader only; a passive replica answers
//! [`LedgerError::NodeIsPassive`]. Reads never go above the ledger end.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream};
use futures_util::FutureExt;
use scoped_futures::ScopedFutureExt;
use syncline_coordination::leadership;
use syncline_protocol::messages::{
    self, ConfirmationRequest, Mapping, Operation, PartyToParticipant, Permission, RequestHeader, SubmitterMetadata,
    TopologyTransaction,
};
use syncline_protocol::topology::{self, mapping, MappingKey, Outcome};
use syncline_sequencer_client::{now_micros, SequencerApi};
use tokio::sync::watch;

use crate::error::LedgerError;
use crate::interpret;
use crate::model::{
    ActiveContract, Command, Commands, Completion, CompletionItem, CreatedEvent, DeduplicationPeriod, Event, LedgerEnd,
    PartyDetails, Status, Submitted, Transaction,
};
use crate::processor::REQUEST_PREFIX;
use crate::runtime::{spawn_send, SendKind};
use crate::store::{self, InFlight, StoredCompletion, StoredUpdate};
use crate::{Active, Shared};

/// Rows read per page of a stream.
const PAGE: i64 = 500;

/// A stream of ledger API items; it ends with an error when the replica stops leading.
pub type LedgerStream<T> = BoxStream<'static, Result<T, LedgerError>>;

/// The ledger API of one participant replica. Cheap to clone.
#[derive(Clone)]
pub struct LedgerApi {
    pub(crate) shared: Arc<Shared>,
}

impl LedgerApi {
    /// The participant's id (its member name).
    pub fn participant_id(&self) -> &str {
        &self.shared.member
    }

    /// Whether this replica serves the API now.
    pub fn is_active(&self) -> bool {
        self.shared.active.borrow().is_some()
    }

    /// `Ok` while this replica serves the API, [`LedgerError::NodeIsPassive`] otherwise.
    pub fn ensure_active(&self) -> Result<(), LedgerError> {
        self.active().map(drop)
    }

    fn active(&self) -> Result<Arc<Active>, LedgerError> {
        self.shared.active.borrow().clone().ok_or_else(|| self.passive())
    }

    fn passive(&self) -> LedgerError {
        LedgerError::NodeIsPassive { participant: self.shared.member.clone(), replica: self.shared.replica.clone() }
    }

    /// The ledger end.
    pub async fn ledger_end(&self) -> Result<LedgerEnd, LedgerError> {
        Ok(*self.active()?.ledger_end.borrow())
    }

    /// Submit `commands`: check and authorize them, register the submission in flight (by
    /// change id), and hand the confirmation request to the sequencers. The outcome comes as
    /// exactly one completion.
    pub async fn submit(&self, commands: Commands) -> Result<Submitted, LedgerError> {
        let active = self.active()?;
        let member = self.shared.member.as_str();
        let max = self.shared.params.max_deduplication_duration;
        let c = &commands;
        for (field, value) in [("user_id", &c.user_id), ("command_id", &c.command_id)] {
            if value.is_empty() || value.len() > 255 {
                return Err(LedgerError::invalid(field, "must have 1 to 255 bytes"));
            }
        }
        if c.act_as.is_empty() {
            return Err(LedgerError::invalid("act_as", "empty (at least one is required)"));
        }
        if c.commands.is_empty() {
            return Err(LedgerError::invalid("commands", "empty (at least one is required)"));
        }
        let act_as: BTreeSet<String> = c.act_as.iter().cloned().collect();
        let read_as: BTreeSet<String> = c.read_as.iter().cloned().collect();
        let period = c.deduplication_period.unwrap_or(DeduplicationPeriod::Duration(max));
        let dedup_error = |reason: String| LedgerError::InvalidDeduplicationPeriod {
            reason,
            longest_duration_micros: max.as_micros() as i64,
        };
        let wire_period = match period {
            DeduplicationPeriod::Duration(d) if d > max => {
                return Err(dedup_error(format!("duration {d:?} is longer than the maximum {max:?}")))
            }
            DeduplicationPeriod::Duration(d) if d.as_micros() == 0 => {
                return Err(dedup_error("the duration must be positive".into()))
            }
            DeduplicationPeriod::Duration(d) => messages::DeduplicationPeriod::Duration(d),
            DeduplicationPeriod::Offset(o) if o < 0 => {
                return Err(LedgerError::invalid("deduplication_offset", "must not be negative"))
            }
            DeduplicationPeriod::Offset(o) => messages::DeduplicationPeriod::Offset(o),
        };
        let submission_id = c.submission_id.clone().unwrap_or_else(interpret::new_uuid);
        let mut conn = self.shared.db.conn().await?;
        let now = now_micros();
        let snapshot = topology::snapshot_at(&mut conn, now).await?;
        let not_hosted: Vec<String> = (act_as.iter())
            .filter(|p| !snapshot.permission(p, member).is_some_and(Permission::can_submit))
            .cloned()
            .collect();
        if !not_hosted.is_empty() {
            return Err(LedgerError::SubmittersNotHosted { parties: not_hosted, participant: member.into() });
        }
        // Deduplication answers first: a resubmission of an accepted command is a duplicate
        // even when its inputs are gone by now (an archive must not read as "contract not
        // found"). The fenced transaction below checks again, race-free.
        let change_hash = interpret::change_hash(&c.user_id, &c.command_id, &act_as);
        check_deduplication(&mut conn, member, &change_hash, period, now, &c.command_id, &dedup_error).await?;
        let mediator = (snapshot.mediator())
            .ok_or_else(|| LedgerError::Unavailable { reason: "the synchronizer has no mediator yet".into() })?
            .to_string();
        let mut contracts = BTreeMap::new();
        for command in &c.commands {
            let id = match command {
                Command::Archive { contract_id } => contract_id,
                Command::Exercise(e) => &e.contract_id,
                Command::Create(_) => continue,
            };
            if let Some(contract) = store::contract(&mut conn, id).await? {
                contracts.insert(id.clone(), contract);
            }
        }
        let request_uuid = interpret::new_uuid();
        let views = interpret::views(&c.commands, &act_as, &read_as, &request_uuid, &contracts)?;
        let informees: BTreeSet<String> = views.iter().flat_map(|v| v.common.informees.iter().cloned()).collect();
        let unhosted: Vec<String> = snapshot.unhosted(&informees).into_iter().map(String::from).collect();
        if !unhosted.is_empty() {
            return Err(LedgerError::PartiesNotKnown { parties: unhosted });
        }
        let params = snapshot.parameters();
        let ledger_time = now.max(c.min_ledger_time.unwrap_or(i64::MIN));
        let mst = ledger_time.saturating_add(params.ledger_time_record_time_tolerance.as_micros() as i64);
        let request = ConfirmationRequest {
            header: RequestHeader {
                request_uuid: request_uuid.clone(),
                submitter: SubmitterMetadata {
                    act_as: act_as.clone(),
                    user_id: c.user_id.clone(),
                    command_id: c.command_id.clone(),
                    submission_id: Some(submission_id.clone()),
                    submitting_participant: member.into(),
                    deduplication_period: wire_period,
                },
                ledger_time,
            },
            views,
        };
        let message_id = format!("{REQUEST_PREFIX}{request_uuid}");
        let send = syncline_proto::sequencer::SendRequest {
            sender: member.into(),
            message_id: message_id.clone(),
            max_sequencing_time: mst,
            envelopes: request.envelopes(&mediator, |informees| snapshot.participants_for(informees)),
        };
        let (dedup_offset, dedup_duration_micros) = match period {
            DeduplicationPeriod::Offset(o) => (Some(o), None),
            DeduplicationPeriod::Duration(d) => (None, Some(d.as_micros() as i64)),
        };
        let row = InFlight {
            change_hash: change_hash.clone(),
            message_id,
            request_uuid,
            user_id: c.user_id.clone(),
            command_id: c.command_id.clone(),
            act_as: act_as.iter().cloned().collect(),
            submission_id: Some(submission_id.clone()),
            workflow_id: c.workflow_id.clone(),
            dedup_offset,
            dedup_duration_micros,
            max_sequencing_time: mst,
            sequenced_at: None,
        };
        let command_id = c.command_id.clone();
        leadership::fenced(&mut conn, &active.fence, |tx| {
            let (row, command_id, dedup_error) = (&row, &command_id, &dedup_error);
            async move {
                check_deduplication(tx, member, &row.change_hash, period, now, command_id, dedup_error).await?;
                if !store::insert_in_flight(tx, row).await? {
                    return Err(LedgerError::SubmissionAlreadyInFlight { command_id: command_id.clone() });
                }
                Ok(())
            }
            .scope_boxed()
        })
        .await?;
        tracing::debug!(command_id = %c.command_id, %submission_id, mst, "submission registered; sending");
        spawn_send(&self.shared, &active, send, SendKind::Request);
        self.shared.wake.notify_one();
        metrics::counter!("syncline_participant_submissions_total").increment(1);
        Ok(Submitted { submission_id })
    }

    /// The completions of `user_id`'s submissions acting as one of `parties`, after
    /// `begin_exclusive`, with a checkpoint at the ledger end after each batch; follows the
    /// ledger until the replica stops leading.
    pub async fn completions(
        &self,
        user_id: &str,
        parties: &[String],
        begin_exclusive: i64,
    ) -> Result<LedgerStream<CompletionItem>, LedgerError> {
        let active = self.active()?;
        self.check_begin(&active, begin_exclusive)?;
        let (shared, user_id, parties) = (self.shared.clone(), user_id.to_string(), parties.to_vec());
        let fetch: Fetch<CompletionItem> = Arc::new(move |after, end: LedgerEnd, up_to| {
            let (shared, user_id, parties) = (shared.clone(), user_id.clone(), parties.clone());
            async move {
                let mut conn = shared.db.conn().await?;
                let rows = store::completions(&mut conn, &user_id, after, up_to, &parties, PAGE).await?;
                let full = rows.len() as i64 == PAGE;
                let cursor = if full { rows.last().map_or(up_to, |r| r.ledger_offset) } else { up_to };
                let mut items: Vec<CompletionItem> =
                    rows.into_iter().map(|r| CompletionItem::Completion(completion(r))).collect();
                if !full && up_to == end.offset {
                    items.push(CompletionItem::Checkpoint { offset: up_to, record_time: end.record_time.unwrap_or(0) });
                }
                Ok((items, cursor))
            }
            .boxed()
        });
        Ok(follow(self.passive(), active.ledger_end.clone(), begin_exclusive, None, fetch))
    }

    /// The transactions after `begin_exclusive` (up to `end_inclusive`, or following the
    /// ledger) with events visible to `parties`, each with only those events.
    pub async fn updates(
        &self,
        begin_exclusive: i64,
        end_inclusive: Option<i64>,
        parties: &[String],
    ) -> Result<LedgerStream<Transaction>, LedgerError> {
        let active = self.active()?;
        self.check_begin(&active, begin_exclusive)?;
        if let Some(end) = end_inclusive {
            let ledger_end = active.ledger_end.borrow().offset;
            if end > ledger_end {
                return Err(LedgerError::OffsetAfterLedgerEnd { offset: end, ledger_end });
            }
            if end < begin_exclusive {
                return Err(LedgerError::invalid("end_inclusive", "before begin_exclusive"));
            }
        }
        let (shared, parties) = (self.shared.clone(), parties.to_vec());
        let fetch: Fetch<Transaction> = Arc::new(move |after, _end, up_to| {
            let (shared, parties) = (shared.clone(), parties.clone());
            async move {
                let mut conn = shared.db.conn().await?;
                let rows = store::updates(&mut conn, after, up_to, &parties, PAGE).await?;
                let cursor =
                    if rows.len() as i64 == PAGE { rows.last().map_or(up_to, |r| r.ledger_offset) } else { up_to };
                let set: BTreeSet<String> = parties.iter().cloned().collect();
                Ok((rows.into_iter().filter_map(|r| transaction(r, &set)).collect(), cursor))
            }
            .boxed()
        });
        Ok(follow(self.passive(), active.ledger_end.clone(), begin_exclusive, end_inclusive, fetch))
    }

    /// The transaction `update_id` as `parties` see it.
    pub async fn update_by_id(&self, update_id: &str, parties: &[String]) -> Result<Transaction, LedgerError> {
        let active = self.active()?;
        let end = active.ledger_end.borrow().offset;
        let mut conn = self.shared.db.conn().await?;
        let set: BTreeSet<String> = parties.iter().cloned().collect();
        (store::update_by_id(&mut conn, update_id, end).await?)
            .and_then(|r| transaction(r, &set))
            .ok_or_else(|| LedgerError::UpdateNotFound { update_id: update_id.into() })
    }

    /// The contracts active at `at_offset` (default: the ledger end) with a stakeholder among
    /// `parties`.
    pub async fn active_contracts(
        &self,
        parties: &[String],
        at_offset: Option<i64>,
    ) -> Result<Vec<ActiveContract>, LedgerError> {
        let active = self.active()?;
        let ledger_end = active.ledger_end.borrow().offset;
        let at = at_offset.unwrap_or(ledger_end);
        if at > ledger_end {
            return Err(LedgerError::OffsetAfterLedgerEnd { offset: at, ledger_end });
        }
        if at < 0 {
            return Err(LedgerError::invalid("active_at_offset", "must not be negative"));
        }
        let mut conn = self.shared.db.conn().await?;
        let rows = store::active_contracts(&mut conn, parties, at).await?;
        Ok(rows
            .into_iter()
            .map(|c| ActiveContract {
                created_offset: c.created_offset,
                created: CreatedEvent {
                    contract_id: c.contract_id,
                    template: c.template,
                    arguments: c.arguments,
                    signatories: c.signatories,
                    observers: c.observers,
                },
            })
            .collect())
    }

    /// Allocate a party hosted here with submission permission (named `hint`, or generated):
    /// publish its party-to-participant mapping and wait until it is in effect.
    pub async fn allocate_party(&self, hint: Option<&str>) -> Result<PartyDetails, LedgerError> {
        let active = self.active()?;
        let member = self.shared.member.clone();
        let party = match hint {
            Some(h) if h.is_empty() || h.len() > 255 || h.chars().any(char::is_control) || h == "*" => {
                return Err(LedgerError::invalid("party_id_hint", format!("{h:?} is not a valid party name")))
            }
            Some(h) => h.to_string(),
            None => format!("party-{}", interpret::new_uuid()),
        };
        let mut conn = self.shared.db.conn().await?;
        let head = topology::store::head(&mut conn, &MappingKey::Party(party.clone())).await?;
        if head.as_ref().is_some_and(|h| h.transaction.operation == Operation::AddReplace) {
            return Err(LedgerError::PartyAlreadyExists { party });
        }
        let tx = TopologyTransaction {
            operation: Operation::AddReplace,
            serial: mapping::next_serial(head.as_ref().map(|h| &h.transaction)),
            mapping: Mapping::PartyToParticipant(PartyToParticipant {
                party: party.clone(),
                participants: BTreeMap::from([(member.clone(), Permission::Submission)]),
            }),
        };
        let timeout = self.shared.params.party_allocation_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let mst = now_micros() + timeout.as_micros() as i64;
        let send = topology::processor::publish_request(&member, format!("party-{party}-{}", tx.serial), mst, &tx);
        let sent = tokio::select! {
            _ = active.stop.cancelled() => return Err(self.passive()),
            sent = self.shared.sequencer.send(send) => sent,
        }
        .map_err(|e| LedgerError::Unavailable { reason: format!("publishing the party mapping: {e}") })?;
        loop {
            if let Some(stored) = topology::store::stored_at(&mut conn, sent.timestamp).await? {
                match stored.outcome {
                    Outcome::Ignored { reason } => return Err(LedgerError::NotAuthorized { reason }),
                    Outcome::Accepted { effective_from, .. } if now_micros() >= effective_from => {
                        return Ok(PartyDetails { party, is_local: true })
                    }
                    Outcome::Accepted { .. } => {}
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(LedgerError::RequestTimeout { what: format!("party {party} to take effect") });
            }
            tokio::select! {
                _ = active.stop.cancelled() => return Err(self.passive()),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    }

    /// Every party with a mapping in effect now, and whether this participant hosts it.
    pub async fn list_parties(&self) -> Result<Vec<PartyDetails>, LedgerError> {
        self.active()?;
        let mut conn = self.shared.db.conn().await?;
        let snapshot = topology::snapshot_at(&mut conn, now_micros()).await?;
        Ok((snapshot.party_mappings().keys())
            .map(|party| PartyDetails {
                party: party.clone(),
                is_local: snapshot.permission(party, &self.shared.member).is_some(),
            })
            .collect())
    }

    fn check_begin(&self, active: &Active, begin_exclusive: i64) -> Result<(), LedgerError> {
        let ledger_end = active.ledger_end.borrow().offset;
        if begin_exclusive > ledger_end {
            return Err(LedgerError::OffsetAfterLedgerEnd { offset: begin_exclusive, ledger_end });
        }
        if begin_exclusive < 0 {
            return Err(LedgerError::invalid("begin_exclusive", "must not be negative"));
        }
        Ok(())
    }
}

/// Reads the items in `(after, up_to]` given the ledger end: the items and the offset read up to.
type Fetch<T> =
    Arc<dyn Fn(i64, LedgerEnd, i64) -> BoxFuture<'static, Result<(Vec<T>, i64), LedgerError>> + Send + Sync>;

/// A stream that reads pages up to the ledger end and waits for it to move, until
/// `end_inclusive`; it ends with `passive` when the leader's run ends.
fn follow<T: Send + 'static>(
    passive: LedgerError,
    ledger_end: watch::Receiver<LedgerEnd>,
    after: i64,
    end_inclusive: Option<i64>,
    fetch: Fetch<T>,
) -> LedgerStream<T> {
    struct State<T> {
        after: i64,
        buffer: VecDeque<T>,
        ledger_end: watch::Receiver<LedgerEnd>,
        done: bool,
    }
    let state = State { after, buffer: VecDeque::new(), ledger_end, done: false };
    Box::pin(stream::unfold(state, move |mut s| {
        let (fetch, passive) = (fetch.clone(), passive.clone());
        async move {
            loop {
                if let Some(item) = s.buffer.pop_front() {
                    return Some((Ok(item), s));
                }
                if s.done || end_inclusive.is_some_and(|e| s.after >= e) {
                    return None;
                }
                let end = *s.ledger_end.borrow_and_update();
                let up_to = end_inclusive.map_or(end.offset, |e| e.min(end.offset));
                if up_to > s.after {
                    match fetch(s.after, end, up_to).await {
                        Ok((items, cursor)) => {
                            s.after = cursor;
                            s.buffer.extend(items);
                        }
                        Err(e) => {
                            s.done = true;
                            return Some((Err(e), s));
                        }
                    }
                    continue;
                }
                if s.ledger_end.changed().await.is_err() {
                    s.done = true;
                    return Some((Err(passive), s));
                }
            }
        }
    }))
}

fn completion(r: StoredCompletion) -> Completion {
    let deduplication_period = match (r.dedup_offset, r.dedup_duration_micros) {
        (Some(o), _) => Some(DeduplicationPeriod::Offset(o)),
        (None, Some(d)) => Some(DeduplicationPeriod::Duration(Duration::from_micros(d.max(0) as u64))),
        (None, None) => None,
    };
    Completion {
        offset: r.ledger_offset,
        user_id: r.user_id,
        command_id: r.command_id,
        submission_id: r.submission_id,
        act_as: r.act_as,
        status: Status { id: r.status, code: tonic::Code::from_i32(r.grpc_code), message: r.message },
        update_id: r.update_id,
        record_time: r.record_time,
        deduplication_period,
    }
}

/// The transaction of `r` with the events visible to `parties`; `None` if there are none.
fn transaction(r: StoredUpdate, parties: &BTreeSet<String>) -> Option<Transaction> {
    let events: Vec<Event> = serde_json::from_str(&r.events).expect("the participant stored these events");
    let events: Vec<Event> = events.into_iter().filter(|e| !e.stakeholders().is_disjoint(parties)).collect();
    (!events.is_empty()).then_some(Transaction {
        offset: r.ledger_offset,
        update_id: r.update_id,
        record_time: r.record_time,
        command_id: r.command_id,
        workflow_id: r.workflow_id,
        events,
    })
}

/// The deduplication of a submission with change id `change_hash` and `period` at `now`:
/// `SUBMISSION_ALREADY_IN_FLIGHT` while one is in flight, `DUPLICATE_COMMAND` when one was
/// accepted within the period, an invalid period when its offset is after the ledger end.
async fn check_deduplication(
    conn: &mut diesel_async::AsyncPgConnection,
    member: &str,
    change_hash: &str,
    period: DeduplicationPeriod,
    now: i64,
    command_id: &str,
    dedup_error: &(impl Fn(String) -> LedgerError + Sync),
) -> Result<(), LedgerError> {
    if store::in_flight(conn, change_hash).await?.is_some() {
        return Err(LedgerError::SubmissionAlreadyInFlight { command_id: command_id.into() });
    }
    let ledger = store::ledger(conn, member).await?;
    if let DeduplicationPeriod::Offset(o) = period {
        if o > ledger.ledger_end {
            return Err(dedup_error(format!("offset {o} is after the ledger end {}", ledger.ledger_end)));
        }
    }
    if let Some((offset, record_time, submission_id)) = store::accepted(conn, change_hash).await? {
        let duplicate = match period {
            DeduplicationPeriod::Duration(d) => record_time > now - d.as_micros() as i64,
            DeduplicationPeriod::Offset(o) => offset > o,
        };
        if duplicate {
            return Err(LedgerError::DuplicateCommand {
                command_id: command_id.into(),
                completion_offset: offset,
                existing_submission_id: submission_id,
            });
        }
    }
    Ok(())
}
