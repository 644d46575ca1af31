//! The participant's database (see migration `2026-11-27-000011_participant`). The functions
//! take a connection so that the leader runs each event's changes in one fenced transaction.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use syncline_coordination::error::{DieselContext, Result};
use syncline_schema::tables::participant::{
    participant_completions as comp, participant_contracts as con, participant_dedup as dd,
    participant_in_flight as inf, participant_ledger as led, participant_locks as lck, participant_pending as pen,
    participant_updates as upd,
};

/// The ledger row of a member.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    /// The last processed sequencer event.
    pub processed_ts: Option<i64>,
    /// The last published offset.
    pub ledger_end: i64,
    /// Its record time.
    pub ledger_end_record_time: Option<i64>,
}

/// The ledger row of `member` (zero before anything was processed).
pub async fn ledger(conn: &mut AsyncPgConnection, member: &str) -> Result<Ledger> {
    let row: Option<(Option<i64>, i64, Option<i64>)> = led::table
        .find(member)
        .select((led::processed_ts, led::ledger_end, led::ledger_end_record_time))
        .first(conn)
        .await
        .optional()
        .during("reading the ledger end")?;
    Ok(row.map_or_else(Ledger::default, |(processed_ts, ledger_end, ledger_end_record_time)| Ledger {
        processed_ts,
        ledger_end,
        ledger_end_record_time,
    }))
}

/// Save the ledger row of `member`.
pub async fn set_ledger(conn: &mut AsyncPgConnection, member: &str, l: &Ledger) -> Result<()> {
    diesel::insert_into(led::table)
        .values((
            led::member.eq(member),
            led::processed_ts.eq(l.processed_ts),
            led::ledger_end.eq(l.ledger_end),
            led::ledger_end_record_time.eq(l.ledger_end_record_time),
        ))
        .on_conflict(led::member)
        .do_update()
        .set((
            led::processed_ts.eq(l.processed_ts),
            led::ledger_end.eq(l.ledger_end),
            led::ledger_end_record_time.eq(l.ledger_end_record_time),
        ))
        .execute(conn)
        .await
        .during("saving the ledger end")?;
    Ok(())
}

/// Delete everything published above `end` (rows a crashed writer left behind); the number
/// of rows removed or reset.
pub async fn truncate_above(conn: &mut AsyncPgConnection, end: i64) -> Result<usize> {
    let mut n = diesel::delete(upd::table.filter(upd::ledger_offset.gt(end)))
        .execute(conn)
        .await
        .during("deleting updates above the ledger end")?;
    n += diesel::delete(comp::table.filter(comp::ledger_offset.gt(end)))
        .execute(conn)
        .await
        .during("deleting completions above the ledger end")?;
    n += diesel::delete(con::table.filter(con::created_offset.gt(end)))
        .execute(conn)
        .await
        .during("deleting contracts created above the ledger end")?;
    n += diesel::update(con::table.filter(con::archived_offset.gt(end)))
        .set(con::archived_offset.eq(None::<i64>))
        .execute(conn)
        .await
        .during("resetting archivals above the ledger end")?;
    Ok(n)
}

// ---- in-flight submissions and deduplication ----

/// A submission in flight.
#[derive(Clone, Debug, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = inf)]
pub struct InFlight {
    /// The change id's hash.
    pub change_hash: String,
    /// The send's message id.
    pub message_id: String,
    /// The request UUID.
    pub request_uuid: String,
    /// The user.
    pub user_id: String,
    /// The command id.
    pub command_id: String,
    /// The acting parties (sorted).
    pub act_as: Vec<String>,
    /// The submission id.
    pub submission_id: Option<String>,
    /// The workflow id.
    pub workflow_id: Option<String>,
    /// Deduplication offset, if the period is one.
    pub dedup_offset: Option<i64>,
    /// Deduplication duration (µs), if the period is one.
    pub dedup_duration_micros: Option<i64>,
    /// Sequenced no later than this, or never.
    pub max_sequencing_time: i64,
    /// When its request was seen sequenced.
    pub sequenced_at: Option<i64>,
}

/// The submission in flight for `change_hash`.
pub async fn in_flight(conn: &mut AsyncPgConnection, change_hash: &str) -> Result<Option<InFlight>> {
    inf::table
        .find(change_hash)
        .select(InFlight::as_select())
        .first(conn)
        .await
        .optional()
        .during("reading an in-flight submission")
}

/// Register `f`; false when a submission with its change id is already in flight (a
/// concurrent registration waits for the other's transaction and then finds it).
pub async fn insert_in_flight(conn: &mut AsyncPgConnection, f: &InFlight) -> Result<bool> {
    let n = diesel::insert_into(inf::table)
        .values(f)
        .on_conflict(inf::change_hash)
        .do_nothing()
        .execute(conn)
        .await
        .during("registering an in-flight submission")?;
    Ok(n == 1)
}

/// Mark the submission sent with `message_id` as sequenced at `ts`; the submission, if it is
/// one of ours.
pub async fn mark_sequenced(conn: &mut AsyncPgConnection, message_id: &str, ts: i64) -> Result<Option<InFlight>> {
    diesel::update(inf::table.filter(inf::message_id.eq(message_id)))
        .set(inf::sequenced_at.eq(ts))
        .returning(InFlight::as_returning())
        .get_result(conn)
        .await
        .optional()
        .during("marking a submission sequenced")
}

/// The in-flight submission sent as `message_id`, unless it was seen sequenced.
pub async fn in_flight_unsequenced(conn: &mut AsyncPgConnection, message_id: &str) -> Result<Option<InFlight>> {
    inf::table
        .filter(inf::message_id.eq(message_id).and(inf::sequenced_at.is_null()))
        .select(InFlight::as_select())
        .first(conn)
        .await
        .optional()
        .during("reading an in-flight submission")
}

/// Unsequenced submissions whose max-sequencing-time is before `ts`.
pub async fn unsequenced_before(conn: &mut AsyncPgConnection, ts: i64) -> Result<Vec<InFlight>> {
    inf::table
        .filter(inf::sequenced_at.is_null().and(inf::max_sequencing_time.lt(ts)))
        .order(inf::max_sequencing_time)
        .select(InFlight::as_select())
        .load(conn)
        .await
        .during("reading unsequenced submissions")
}

/// Remove the in-flight submission `change_hash`.
pub async fn delete_in_flight(conn: &mut AsyncPgConnection, change_hash: &str) -> Result<()> {
    diesel::delete(inf::table.find(change_hash)).execute(conn).await.during("removing an in-flight submission")?;
    Ok(())
}

/// The latest acceptance of `change_hash`: offset, record time, submission id.
pub async fn accepted(conn: &mut AsyncPgConnection, change_hash: &str) -> Result<Option<(i64, i64, Option<String>)>> {
    dd::table
        .find(change_hash)
        .select((dd::accepted_offset, dd::accepted_record_time, dd::submission_id))
        .first(conn)
        .await
        .optional()
        .during("reading the deduplication state")
}

/// Record an acceptance of `change_hash`.
pub async fn set_accepted(
    conn: &mut AsyncPgConnection,
    change_hash: &str,
    offset: i64,
    record_time: i64,
    submission_id: Option<&str>,
) -> Result<()> {
    let values = (
        dd::change_hash.eq(change_hash),
        dd::accepted_offset.eq(offset),
        dd::accepted_record_time.eq(record_time),
        dd::submission_id.eq(submission_id),
    );
    diesel::insert_into(dd::table)
        .values(values)
        .on_conflict(dd::change_hash)
        .do_update()
        .set((
            dd::accepted_offset.eq(offset),
            dd::accepted_record_time.eq(record_time),
            dd::submission_id.eq(submission_id),
        ))
        .execute(conn)
        .await
        .during("recording an acceptance")?;
    Ok(())
}

// ---- contracts and locks ----

/// A stored contract.
#[derive(Clone, Debug, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = con)]
pub struct StoredContract {
    /// Id.
    pub contract_id: String,
    /// Template.
    pub template: String,
    /// Arguments (JSON).
    pub arguments: String,
    /// Signatories.
    pub signatories: Vec<String>,
    /// Observers.
    pub observers: Vec<String>,
    /// Creation offset.
    pub created_offset: i64,
    /// Creating update.
    pub created_update: String,
    /// Archival offset, once archived.
    pub archived_offset: Option<i64>,
}

/// The contract `id`, if known.
pub async fn contract(conn: &mut AsyncPgConnection, id: &str) -> Result<Option<StoredContract>> {
    con::table.find(id).select(StoredContract::as_select()).first(conn).await.optional().during("reading a contract")
}

/// Add a created contract (a replay changes nothing).
pub async fn insert_contract(conn: &mut AsyncPgConnection, c: &StoredContract) -> Result<()> {
    diesel::insert_into(con::table)
        .values(c)
        .on_conflict(con::contract_id)
        .do_nothing()
        .execute(conn)
        .await
        .during("storing a contract")?;
    Ok(())
}

/// Archive contract `id` at `offset` (if active).
pub async fn archive_contract(conn: &mut AsyncPgConnection, id: &str, offset: i64) -> Result<()> {
    diesel::update(con::table.find(id).filter(con::archived_offset.is_null()))
        .set(con::archived_offset.eq(offset))
        .execute(conn)
        .await
        .during("archiving a contract")?;
    Ok(())
}

/// Contracts active at `offset` with a stakeholder among `parties`.
pub async fn active_contracts(
    conn: &mut AsyncPgConnection,
    parties: &[String],
    offset: i64,
) -> Result<Vec<StoredContract>> {
    con::table
        .filter(con::created_offset.le(offset))
        .filter(con::archived_offset.is_null().or(con::archived_offset.gt(offset)))
        .filter(con::signatories.overlaps_with(parties).or(con::observers.overlaps_with(parties)))
        .order(con::created_offset)
        .select(StoredContract::as_select())
        .load(conn)
        .await
        .during("reading active contracts")
}

/// The locks among `ids`: (contract id, locking request).
pub async fn locks(conn: &mut AsyncPgConnection, ids: &[String]) -> Result<Vec<(String, i64)>> {
    lck::table
        .filter(lck::contract_id.eq_any(ids))
        .select((lck::contract_id, lck::request_id))
        .load(conn)
        .await
        .during("reading contract locks")
}

/// Lock `ids` for request `request_id`.
pub async fn lock(conn: &mut AsyncPgConnection, ids: &[String], request_id: i64) -> Result<()> {
    let rows: Vec<_> = ids.iter().map(|id| (lck::contract_id.eq(id), lck::request_id.eq(request_id))).collect();
    diesel::insert_into(lck::table).values(rows).execute(conn).await.during("locking contracts")?;
    Ok(())
}

/// Release the locks of request `request_id`.
pub async fn unlock(conn: &mut AsyncPgConnection, request_id: i64) -> Result<()> {
    diesel::delete(lck::table.filter(lck::request_id.eq(request_id)))
        .execute(conn)
        .await
        .during("releasing contract locks")?;
    Ok(())
}

// ---- pending requests ----

/// A request being validated.
#[derive(Clone, Debug, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = pen)]
pub struct Pending {
    /// Its sequencing timestamp.
    pub request_id: i64,
    /// Its root hash.
    pub root_hash: Vec<u8>,
    /// Its UUID.
    pub request_uuid: String,
    /// No verdict after this ⇒ timeout.
    pub decision_time: i64,
    /// Our submission's change id hash.
    pub change_hash: Option<String>,
    /// The events we see (JSON).
    pub events: String,
    /// The outcome (JSON) once decided.
    pub outcome: Option<String>,
    /// Our response, to send.
    pub response: Option<Vec<u8>>,
    /// The response's max-sequencing-time.
    pub response_deadline: i64,
    /// Whether the response was seen sequenced.
    pub response_delivered: bool,
}

/// Store a new pending request (a replay changes nothing).
pub async fn insert_pending(conn: &mut AsyncPgConnection, p: &Pending) -> Result<()> {
    diesel::insert_into(pen::table)
        .values(p)
        .on_conflict(pen::request_id)
        .do_nothing()
        .execute(conn)
        .await
        .during("storing a pending request")?;
    Ok(())
}

/// The pending request `id`.
pub async fn pending(conn: &mut AsyncPgConnection, id: i64) -> Result<Option<Pending>> {
    pen::table.find(id).select(Pending::as_select()).first(conn).await.optional().during("reading a pending request")
}

/// Undecided requests whose decision time is before `ts`.
pub async fn undecided_before(conn: &mut AsyncPgConnection, ts: i64) -> Result<Vec<i64>> {
    pen::table
        .filter(pen::outcome.is_null().and(pen::decision_time.lt(ts)))
        .order(pen::request_id)
        .select(pen::request_id)
        .load(conn)
        .await
        .during("reading requests past their decision time")
}

/// Decide pending request `id` (once).
pub async fn decide(conn: &mut AsyncPgConnection, id: i64, outcome: &str) -> Result<()> {
    diesel::update(pen::table.find(id).filter(pen::outcome.is_null()))
        .set(pen::outcome.eq(outcome))
        .execute(conn)
        .await
        .during("deciding a request")?;
    Ok(())
}

/// How many pending requests await their verdict.
pub async fn undecided_count(conn: &mut AsyncPgConnection) -> Result<i64> {
    pen::table.filter(pen::outcome.is_null()).count().get_result(conn).await.during("counting undecided requests")
}

/// The oldest pending request.
pub async fn oldest_pending(conn: &mut AsyncPgConnection) -> Result<Option<Pending>> {
    pen::table
        .order(pen::request_id)
        .select(Pending::as_select())
        .first(conn)
        .await
        .optional()
        .during("reading the oldest pending request")
}

/// Remove pending request `id` and its locks.
pub async fn remove_pending(conn: &mut AsyncPgConnection, id: i64) -> Result<()> {
    unlock(conn, id).await?;
    diesel::delete(pen::table.find(id)).execute(conn).await.during("removing a pending request")?;
    Ok(())
}

/// Record that our response to `id` was sequenced.
pub async fn response_delivered(conn: &mut AsyncPgConnection, id: i64) -> Result<()> {
    diesel::update(pen::table.find(id))
        .set(pen::response_delivered.eq(true))
        .execute(conn)
        .await
        .during("recording a delivered response")?;
    Ok(())
}

/// Responses not seen sequenced whose deadline is after `now`.
pub async fn undelivered_responses(conn: &mut AsyncPgConnection, now: i64) -> Result<Vec<Pending>> {
    pen::table
        .filter(pen::response.is_not_null().and(pen::response_delivered.eq(false)))
        .filter(pen::outcome.is_null().and(pen::response_deadline.gt(now)))
        .order(pen::request_id)
        .select(Pending::as_select())
        .load(conn)
        .await
        .during("reading responses to send")
}

/// The earliest deadline the participant waits for: an undecided request's decision time or
/// an unsequenced submission's max-sequencing-time.
pub async fn next_deadline(conn: &mut AsyncPgConnection) -> Result<Option<i64>> {
    let decision: Option<i64> = pen::table
        .filter(pen::outcome.is_null())
        .select(diesel::dsl::min(pen::decision_time))
        .first(conn)
        .await
        .during("reading the next decision time")?;
    let mst: Option<i64> = inf::table
        .filter(inf::sequenced_at.is_null())
        .select(diesel::dsl::min(inf::max_sequencing_time))
        .first(conn)
        .await
        .during("reading the next max-sequencing-time")?;
    Ok([decision, mst].into_iter().flatten().min())
}

// ---- updates and completions ----

/// A stored update.
#[derive(Clone, Debug, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = upd)]
pub struct StoredUpdate {
    /// Offset.
    pub ledger_offset: i64,
    /// Update id.
    pub update_id: String,
    /// Record time.
    pub record_time: i64,
    /// Command id (submitter only).
    pub command_id: Option<String>,
    /// Workflow id (submitter only).
    pub workflow_id: Option<String>,
    /// Every event's stakeholders.
    pub witnesses: Vec<String>,
    /// Events (JSON).
    pub events: String,
}

/// Store an update.
pub async fn insert_update(conn: &mut AsyncPgConnection, u: &StoredUpdate) -> Result<()> {
    diesel::insert_into(upd::table).values(u).execute(conn).await.during("storing an update")?;
    Ok(())
}

/// Updates in `(after, up_to]` with a witness among `parties`, at most `limit`.
pub async fn updates(
    conn: &mut AsyncPgConnection,
    after: i64,
    up_to: i64,
    parties: &[String],
    limit: i64,
) -> Result<Vec<StoredUpdate>> {
    upd::table
        .filter(upd::ledger_offset.gt(after).and(upd::ledger_offset.le(up_to)))
        .filter(upd::witnesses.overlaps_with(parties))
        .order(upd::ledger_offset)
        .limit(limit)
        .select(StoredUpdate::as_select())
        .load(conn)
        .await
        .during("reading updates")
}

/// The update `update_id` if at or below `up_to`.
pub async fn update_by_id(conn: &mut AsyncPgConnection, update_id: &str, up_to: i64) -> Result<Option<StoredUpdate>> {
    upd::table
        .filter(upd::update_id.eq(update_id).and(upd::ledger_offset.le(up_to)))
        .select(StoredUpdate::as_select())
        .first(conn)
        .await
        .optional()
        .during("reading an update")
}

/// A stored completion.
#[derive(Clone, Debug, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = comp)]
pub struct StoredCompletion {
    /// Offset.
    pub ledger_offset: i64,
    /// User.
    pub user_id: String,
    /// Command id.
    pub command_id: String,
    /// Submission id.
    pub submission_id: Option<String>,
    /// Acting parties.
    pub act_as: Vec<String>,
    /// `OK` or the error id.
    pub status: String,
    /// gRPC code.
    pub grpc_code: i32,
    /// Message.
    pub message: String,
    /// Update id when accepted.
    pub update_id: Option<String>,
    /// Record time.
    pub record_time: i64,
    /// Deduplication offset.
    pub dedup_offset: Option<i64>,
    /// Deduplication duration (µs).
    pub dedup_duration_micros: Option<i64>,
}

/// Store a completion.
pub async fn insert_completion(conn: &mut AsyncPgConnection, c: &StoredCompletion) -> Result<()> {
    diesel::insert_into(comp::table).values(c).execute(conn).await.during("storing a completion")?;
    Ok(())
}

/// Completions of `user_id` in `(after, up_to]` acting as one of `parties`, at most `limit`.
pub async fn completions(
    conn: &mut AsyncPgConnection,
    user_id: &str,
    after: i64,
    up_to: i64,
    parties: &[String],
    limit: i64,
) -> Result<Vec<StoredCompletion>> {
    comp::table
        .filter(comp::user_id.eq(user_id))
        .filter(comp::ledger_offset.gt(after).and(comp::ledger_offset.le(up_to)))
        .filter(comp::act_as.overlaps_with(parties))
        .order(comp::ledger_offset)
        .limit(limit)
        .select(StoredCompletion::as_select())
        .load(conn)
        .await
        .during("reading completions")
}
