//! Recovery truncation: before a node goes online on an index, it removes everything that
//! index wrote past its last watermark — events (with their payloads and message-id claims)
//! and their recipient rows — in one transaction. Nothing past a watermark was ever visible to a reader, and
//! leaving recipient rows behind (as Canton does) can make readers skip real events.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, SmallInt};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use syncline_schema::tables::sequencer::sequencer_watermarks as w;

use super::error::{DieselContext, Result, StoreError};
use syncline_coordination::locks;

/// What a truncation removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Truncation {
    /// The watermark everything above was removed from (`None`: the index never had one, so
    /// all its rows went).
    pub watermark: Option<i64>,
    /// Events removed.
    pub events: usize,
    /// Recipient rows removed.
    pub recipients: usize,
    /// Events removed that carried a payload.
    pub payloads: usize,
    /// Events removed that held a message-id claim (those sends may be retried).
    pub message_ids: usize,
}

/// Mark index `index` offline and delete its rows past its watermark, in one transaction.
/// The caller must hold the index lock, so that no writer of this index is running.
pub async fn truncate(conn: &mut AsyncPgConnection, index: u32) -> Result<Truncation> {
    let t = conn.transaction(async |c| truncate_rows(c, index).await).await.during("truncating past the watermark")?;
    report(index, &t);
    Ok(t)
}

/// Remove the tails of dead nodes: every offline index whose lock nobody holds has its rows
/// past its watermark deleted, exactly as it would do itself when it came back. Without this
/// a dead node's uncovered message-id claims would make a retry of those sends on another
/// node look like a duplicate of an event no reader will ever see. Each index is swept
/// under a transaction-level hold of its lock, so a node taking it meanwhile is never raced.
pub async fn sweep_dead(conn: &mut AsyncPgConnection) -> Result<Vec<(u32, Truncation)>> {
    let offline: Vec<i32> = w::table
        .filter(w::online.eq(false))
        .select(w::node_index)
        .load(conn)
        .await
        .during("listing offline sequencer nodes")?;
    let mut swept = Vec::new();
    for index in offline.into_iter().map(|i| i as u32) {
        let t = conn
            .transaction::<_, StoreError, _>(async |c| {
                if !locks::try_xact_lock(c, super::node_index::index_lock(index)).await? {
                    return Ok(None); // alive (or being taken over): not ours to touch
                }
                let still_offline: Option<bool> =
                    w::table.filter(w::node_index.eq(index as i32)).select(w::online).first(c).await.optional()?;
                if still_offline != Some(false) {
                    return Ok(None);
                }
                truncate_rows(c, index).await.map(Some).during("sweeping a dead node's rows past its watermark")
            })
            .await?;
        if let Some(t) = t {
            report(index, &t);
            if t.removed_anything() {
                swept.push((index, t));
            }
        }
    }
    Ok(swept)
}

// The events past the watermark go, and their recipient rows with them: through the events
// removed, one primary-key probe per recipient. The range (watermark, written_to] is a short
// range of the primary key whatever the other nodes wrote since (the whole rest when the
// bound is unknown). Nothing of the index is left above its watermark, so that is its new bound.
const TRUNCATE_SQL: &str = "
with gone as (
  delete from sequencer_events where ts > $2 and ts <= $3 and node_index = $1
  returning ts, recipients, payload is not null as had_payload, max_sequencing_ts is not null as had_claim
),
fanout as (
  delete from sequencer_event_recipients r using gone, unnest(gone.recipients) x(id)
   where r.node_index = $1 and r.recipient_id = x.id and r.ts = gone.ts
  returning 1
),
bounded as (
  update sequencer_watermarks set written_to = watermark_ts where node_index = $1
)
select (select count(*) from gone) as events, (select count(*) from fanout) as recipients,
       (select count(*) from gone where had_payload) as payloads,
       (select count(*) from gone where had_claim) as message_ids";

#[derive(QueryableByName)]
struct Removed {
    #[diesel(sql_type = BigInt)]
    events: i64,
    #[diesel(sql_type = BigInt)]
    recipients: i64,
    #[diesel(sql_type = BigInt)]
    payloads: i64,
    #[diesel(sql_type = BigInt)]
    message_ids: i64,
}

async fn truncate_rows(c: &mut AsyncPgConnection, index: u32) -> Result<Truncation, diesel::result::Error> {
    let row: Option<(i64, Option<i64>)> = diesel::update(w::table.filter(w::node_index.eq(index as i32)))
        .set(w::online.eq(false))
        .returning((w::watermark_ts, w::written_to))
        .get_result(c)
        .await
        .optional()?;
    let (watermark, written_to) = (row.map(|r| r.0), row.and_then(|r| r.1));
    let n: Removed = diesel::sql_query(TRUNCATE_SQL)
        .bind::<SmallInt, _>(index as i16)
        .bind::<BigInt, _>(watermark.unwrap_or(i64::MIN))
        .bind::<BigInt, _>(written_to.unwrap_or(i64::MAX))
        .get_result(c)
        .await?;
    Ok(Truncation {
        watermark,
        events: n.events as usize,
        recipients: n.recipients as usize,
        payloads: n.payloads as usize,
        message_ids: n.message_ids as usize,
    })
}

impl Truncation {
    /// True when any row was removed.
    pub fn removed_anything(&self) -> bool {
        self.events + self.recipients + self.payloads + self.message_ids > 0
    }
}

fn report(index: u32, t: &Truncation) {
    if t.removed_anything() {
        tracing::info!(index, ?t, "removed rows written past the watermark");
    }
}
