//! The mediator's database: the processed position, every request with its aggregation and
//! verdict, and the request UUIDs of the deduplication window. The functions take a
//! connection so that the leader runs each event's changes in one fenced transaction.

use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use syncline_coordination::error::{DieselContext, Result};
use syncline_schema::tables::mediator::{
    mediator_position as pos, mediator_request_uuids as u, mediator_requests as r,
};

use crate::aggregation::{Aggregation, Verdict};

/// A request as stored.
#[derive(Clone, Debug, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = r)]
pub struct StoredRequest {
    /// Its sequencing timestamp.
    pub request_id: i64,
    /// The submitter's UUID.
    pub request_uuid: String,
    /// Its root hash.
    pub root_hash: Vec<u8>,
    /// Participant response deadline.
    pub deadline: i64,
    /// Decision time: the verdict's max-sequencing-time.
    pub decision_time: i64,
    /// Participants the verdict goes to.
    pub recipients: Vec<String>,
    /// Aggregation state (JSON).
    pub aggregation: String,
    /// Verdict (JSON), once finalized.
    pub verdict: Option<String>,
    /// Timestamp of the event that finalized it.
    pub finalized_at: Option<i64>,
    /// Timestamp of the verdict's event, once observed.
    pub delivered_at: Option<i64>,
}

impl StoredRequest {
    /// The aggregation state.
    pub fn aggregation(&self) -> Aggregation {
        serde_json::from_str(&self.aggregation).expect("the mediator stored this aggregation itself")
    }

    /// The verdict, once finalized.
    pub fn verdict(&self) -> Option<Verdict> {
        self.verdict.as_deref().map(|v| serde_json::from_str(v).expect("the mediator stored this verdict itself"))
    }
}

/// The stored form of an aggregation or verdict.
pub fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("aggregations and verdicts serialize")
}

/// The last processed event of `member`.
pub async fn position(conn: &mut AsyncPgConnection, member: &str) -> Result<Option<i64>> {
    pos::table
        .filter(pos::member.eq(member))
        .select(pos::processed_ts)
        .first(conn)
        .await
        .optional()
        .during("reading the mediator's processed position")
}

/// Record that every event of `member` up to `ts` is processed.
pub async fn set_position(conn: &mut AsyncPgConnection, member: &str, ts: i64) -> Result<()> {
    diesel::insert_into(pos::table)
        .values((pos::member.eq(member), pos::processed_ts.eq(ts)))
        .on_conflict(pos::member)
        .do_update()
        .set(pos::processed_ts.eq(excluded(pos::processed_ts)))
        .execute(conn)
        .await
        .during("saving the mediator's processed position")?;
    Ok(())
}

/// Claim `uuid` for request `request_id` until `expires_at`; `Some(earlier)` when a request
/// within the window already has it. An expired claim is taken over.
pub async fn claim_uuid(
    conn: &mut AsyncPgConnection,
    uuid: &str,
    request_id: i64,
    expires_at: i64,
) -> Result<Option<i64>> {
    let earlier: Option<(i64, i64)> = u::table
        .filter(u::request_uuid.eq(uuid))
        .select((u::request_id, u::expires_at))
        .for_update()
        .first(conn)
        .await
        .optional()
        .during("checking a request UUID")?;
    match earlier {
        Some((id, _)) if id == request_id => Ok(None),
        Some((id, expiry)) if expiry >= request_id => Ok(Some(id)),
        _ => {
            diesel::insert_into(u::table)
                .values((u::request_uuid.eq(uuid), u::request_id.eq(request_id), u::expires_at.eq(expires_at)))
                .on_conflict(u::request_uuid)
                .do_update()
                .set((u::request_id.eq(request_id), u::expires_at.eq(expires_at)))
                .execute(conn)
                .await
                .during("claiming a request UUID")?;
            Ok(None)
        }
    }
}

/// Store a newly registered (or at once finalized) request; a replay of the same request
/// changes nothing.
pub async fn insert_request(conn: &mut AsyncPgConnection, request: &StoredRequest) -> Result<()> {
    diesel::insert_into(r::table)
        .values(request)
        .on_conflict(r::request_id)
        .do_nothing()
        .execute(conn)
        .await
        .during("storing a confirmation request")?;
    Ok(())
}

/// The request `id`, if registered.
pub async fn request(conn: &mut AsyncPgConnection, id: i64) -> Result<Option<StoredRequest>> {
    r::table
        .find(id)
        .select(StoredRequest::as_select())
        .first(conn)
        .await
        .optional()
        .during("reading a confirmation request")
}

/// Pending requests whose response deadline is before `ts`, oldest first.
pub async fn due(conn: &mut AsyncPgConnection, ts: i64) -> Result<Vec<StoredRequest>> {
    r::table
        .filter(r::verdict.is_null().and(r::deadline.lt(ts)))
        .order(r::request_id)
        .select(StoredRequest::as_select())
        .load(conn)
        .await
        .during("reading requests past their deadline")
}

/// Pending requests: their number and the earliest deadline.
pub async fn pending(conn: &mut AsyncPgConnection) -> Result<(i64, Option<i64>)> {
    r::table
        .filter(r::verdict.is_null())
        .select((diesel::dsl::count_star(), diesel::dsl::min(r::deadline)))
        .first(conn)
        .await
        .during("counting pending requests")
}

/// Save the aggregation state of pending request `id`.
pub async fn save_aggregation(conn: &mut AsyncPgConnection, id: i64, aggregation: &Aggregation) -> Result<()> {
    diesel::update(r::table.find(id))
        .filter(r::verdict.is_null())
        .set(r::aggregation.eq(to_json(aggregation)))
        .execute(conn)
        .await
        .during("saving an aggregation")?;
    Ok(())
}

/// Finalize pending request `id` with `verdict`, decided by the event at `at`.
pub async fn finalize(conn: &mut AsyncPgConnection, id: i64, verdict: &Verdict, at: i64) -> Result<()> {
    diesel::update(r::table.find(id))
        .filter(r::verdict.is_null())
        .set((r::verdict.eq(to_json(verdict)), r::finalized_at.eq(at)))
        .execute(conn)
        .await
        .during("storing a verdict")?;
    Ok(())
}

/// Record that the verdict of request `id` was sequenced at `ts`.
pub async fn mark_delivered(conn: &mut AsyncPgConnection, id: i64, ts: i64) -> Result<()> {
    diesel::update(r::table.find(id))
        .filter(r::delivered_at.is_null())
        .set(r::delivered_at.eq(ts))
        .execute(conn)
        .await
        .during("recording a delivered verdict")?;
    Ok(())
}

/// Finalized verdicts not yet observed as sequenced whose decision time is after `now`.
pub async fn undelivered(conn: &mut AsyncPgConnection, now: i64) -> Result<Vec<StoredRequest>> {
    r::table
        .filter(r::verdict.is_not_null().and(r::delivered_at.is_null()).and(r::decision_time.gt(now)))
        .order(r::request_id)
        .select(StoredRequest::as_select())
        .load(conn)
        .await
        .during("reading verdicts to send")
}

/// Delete finalized requests decided before `before` and UUID claims expired before it;
/// the number of requests removed.
pub async fn prune(conn: &mut AsyncPgConnection, before: i64) -> Result<usize> {
    let removed = diesel::delete(r::table.filter(r::verdict.is_not_null().and(r::decision_time.lt(before))))
        .execute(conn)
        .await
        .during("pruning finalized requests")?;
    diesel::delete(u::table.filter(u::expires_at.lt(before)))
        .execute(conn)
        .await
        .during("pruning expired request UUIDs")?;
    Ok(removed)
}
