//! Sequenced events: append a batch (events, per-recipient rows, payloads and message-id
//! claims) in one transaction; read a member's events after a cursor, in timestamp order,
//! never past the safe watermark, with offline nodes' events visible only up to their last
//! watermark.

use std::collections::HashSet;

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Binary, Bool, Integer, Nullable, SmallInt, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use syncline_schema::tables::{
    sequencer_event_recipients as r, sequencer_events as e, sequencer_message_ids as m, sequencer_payloads as p,
};

use crate::error::{DieselContext, Result};

/// Recipient id meaning "every member".
pub const BROADCAST: i32 = -1;

/// Postgres accepts at most 65535 bind parameters per statement.
const MAX_BINDS: usize = 60_000;

/// Kind of a sequenced event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A batch delivered to its recipients (and a receipt to its sender).
    Deliver,
    /// An error delivered to the sender only.
    Error,
}

impl EventKind {
    fn as_str(self) -> &'static str {
        match self {
            EventKind::Deliver => "deliver",
            EventKind::Error => "error",
        }
    }

    fn parse(s: &str) -> EventKind {
        if s == "error" {
            EventKind::Error
        } else {
            EventKind::Deliver
        }
    }
}

/// A send's claim on its (sender, message id): sequenced at most once before `max_sequencing_ts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageIdClaim {
    /// Sender member id.
    pub sender: i32,
    /// The sender's message id.
    pub message_id: String,
    /// The send's max-sequencing-time (µs): the claim can be dropped after it.
    pub max_sequencing_ts: i64,
}

/// An event to append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    /// Its timestamp, from this node's partitioned generator.
    pub ts: i64,
    /// Deliver or error.
    pub kind: EventKind,
    /// The sender's message id (shown to the sender only).
    pub message_id: Option<String>,
    /// Sender member id.
    pub sender: Option<i32>,
    /// Every member it is addressed to, sender included; `BROADCAST` for all.
    pub recipients: Vec<i32>,
    /// The body, for deliver events.
    pub payload: Option<Vec<u8>>,
    /// The error text, for error events.
    pub error: Option<String>,
    /// Deduplication claim; events whose claim is taken are not written.
    pub claim: Option<MessageIdClaim>,
}

/// A stored event as a reader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    /// Sequencing timestamp (µs).
    pub ts: i64,
    /// Node index that wrote it.
    pub node_index: i16,
    /// Deliver or error.
    pub kind: EventKind,
    /// The sender's message id.
    pub message_id: Option<String>,
    /// Sender member id.
    pub sender: Option<i32>,
    /// All members it is addressed to.
    pub recipients: Vec<i32>,
    /// Body of a deliver event.
    pub payload: Option<Vec<u8>>,
    /// Error text of an error event.
    pub error: Option<String>,
}

/// What an append wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Appended {
    /// Timestamps of the events written.
    pub written: Vec<i64>,
    /// Timestamps of the events skipped because their (sender, message id) was already
    /// sequenced (here or on another node).
    pub duplicates: Vec<i64>,
}

#[derive(Insertable)]
#[diesel(table_name = e)]
struct EventRow<'a> {
    ts: i64,
    node_index: i16,
    kind: &'a str,
    message_id: Option<&'a str>,
    sender: Option<i32>,
    recipients: &'a [i32],
    error_message: Option<&'a str>,
}

#[derive(Insertable)]
#[diesel(table_name = r)]
struct RecipientRow {
    node_index: i16,
    recipient_id: i32,
    ts: i64,
}

#[derive(Insertable)]
#[diesel(table_name = p)]
struct PayloadRow<'a> {
    ts: i64,
    node_index: i16,
    content: &'a [u8],
}

#[derive(Insertable)]
#[diesel(table_name = m)]
struct ClaimRow<'a> {
    sender: i32,
    message_id: &'a str,
    ts: i64,
    node_index: i16,
    max_sequencing_ts: i64,
}

/// Append `events` written by node `index` in one transaction. Events must be in increasing
/// timestamp order and above the node's watermark; the watermark is saved afterwards (see
/// `watermarks::save`), so a crash in between leaves nothing visible.
pub async fn append(conn: &mut AsyncPgConnection, index: u32, events: &[NewEvent]) -> Result<Appended> {
    let node_index = index as i16;
    conn.transaction(async |c| {
        // Claims first: the unique key makes a concurrent claim on another node wait for our
        // commit and then lose, so a retried send is sequenced once.
        let mut seen = HashSet::new();
        let mut claims = Vec::new();
        let mut duplicates = Vec::new();
        for ev in events {
            if let Some(cl) = &ev.claim {
                if seen.insert((cl.sender, cl.message_id.as_str())) {
                    claims.push(ClaimRow {
                        sender: cl.sender,
                        message_id: &cl.message_id,
                        ts: ev.ts,
                        node_index,
                        max_sequencing_ts: cl.max_sequencing_ts,
                    });
                } else {
                    duplicates.push(ev.ts);
                }
            }
        }
        let mut won: HashSet<i64> = HashSet::new();
        for chunk in claims.chunks(MAX_BINDS / 5) {
            let ts: Vec<i64> = diesel::insert_into(m::table)
                .values(chunk)
                .on_conflict_do_nothing()
                .returning(m::ts)
                .get_results(c)
                .await?;
            won.extend(ts);
        }
        let dup: HashSet<i64> = claims.iter().map(|cl| cl.ts).filter(|t| !won.contains(t)).collect();
        duplicates.extend(dup.iter().copied());
        let dup: HashSet<i64> = duplicates.iter().copied().collect();
        let keep: Vec<&NewEvent> = events.iter().filter(|ev| !dup.contains(&ev.ts)).collect();

        let rows: Vec<EventRow> = keep
            .iter()
            .map(|ev| EventRow {
                ts: ev.ts,
                node_index,
                kind: ev.kind.as_str(),
                message_id: ev.message_id.as_deref(),
                sender: ev.sender,
                recipients: &ev.recipients,
                error_message: ev.error.as_deref(),
            })
            .collect();
        for chunk in rows.chunks(MAX_BINDS / 7) {
            diesel::insert_into(e::table).values(chunk).execute(c).await?;
        }
        let recipients: Vec<RecipientRow> = keep
            .iter()
            .flat_map(|ev| {
                let mut ids = ev.recipients.clone();
                ids.sort_unstable();
                ids.dedup();
                ids.into_iter().map(move |id| RecipientRow { node_index, recipient_id: id, ts: ev.ts })
            })
            .collect();
        for chunk in recipients.chunks(MAX_BINDS / 3) {
            diesel::insert_into(r::table).values(chunk).execute(c).await?;
        }
        let payloads: Vec<PayloadRow> = keep
            .iter()
            .filter_map(|ev| ev.payload.as_deref().map(|content| PayloadRow { ts: ev.ts, node_index, content }))
            .collect();
        for chunk in payloads.chunks(MAX_BINDS / 3) {
            diesel::insert_into(p::table).values(chunk).execute(c).await?;
        }
        Ok::<_, diesel::result::Error>(Appended { written: keep.iter().map(|ev| ev.ts).collect(), duplicates })
    })
    .await
    .during("appending events")
}

/// A page of a member's events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// Events after the cursor, in timestamp order.
    pub events: Vec<StoredEvent>,
    /// Where the next read continues from (exclusive): the last event's timestamp if the
    /// page is full, otherwise the visibility bound the page was read under, so empty
    /// ranges are skipped. Never below the cursor passed in.
    pub next_cursor: i64,
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Nullable<BigInt>)]
    ts: Option<i64>,
    #[diesel(sql_type = Nullable<SmallInt>)]
    node_index: Option<i16>,
    #[diesel(sql_type = Nullable<Text>)]
    kind: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    message_id: Option<String>,
    #[diesel(sql_type = Nullable<Integer>)]
    sender: Option<i32>,
    #[diesel(sql_type = Nullable<Array<Integer>>)]
    recipients: Option<Vec<i32>>,
    #[diesel(sql_type = Nullable<Text>)]
    error_message: Option<String>,
    #[diesel(sql_type = Nullable<Binary>)]
    content: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<BigInt>)]
    cap: Option<i64>,
    #[diesel(sql_type = Bool)]
    is_cap_row: bool,
}

// One statement, so the watermarks and the events come from one snapshot. The cap is the
// safe watermark (min over online nodes) or, with no node online, the max over all, since
// each offline node is further capped at its own watermark. Two ordered, limited index scans
// per node (own id, broadcast) are merged; the outer limit keeps the page gap-free.
const READ_SQL: &str = "
with wm as (select node_index, watermark_ts, online from sequencer_watermarks),
bound as (select coalesce((select min(watermark_ts) from wm where online),
                          (select max(watermark_ts) from wm)) as cap),
hits as (
  select distinct x.ts from wm cross join bound cross join lateral (
    (select r.ts from sequencer_event_recipients r
      where r.node_index = wm.node_index and r.recipient_id = $1 and r.ts > $2 and r.ts <= bound.cap
        and (wm.online or r.ts <= wm.watermark_ts)
      order by r.ts limit $3)
    union all
    (select r.ts from sequencer_event_recipients r
      where r.node_index = wm.node_index and r.recipient_id = -1 and r.ts > $2 and r.ts <= bound.cap
        and (wm.online or r.ts <= wm.watermark_ts)
      order by r.ts limit $3)
  ) x
  order by x.ts limit $3
)
select e.ts, e.node_index, e.kind, e.message_id, e.sender, e.recipients, e.error_message, p.content,
       null::bigint as cap, false as is_cap_row
  from hits join sequencer_events e on e.ts = hits.ts left join sequencer_payloads p on p.ts = e.ts
union all
select null, null, null, null, null, null, null, null, bound.cap, true from bound
order by is_cap_row, ts";

/// Read up to `limit` events of `member` with timestamps above `after`.
pub async fn read(conn: &mut AsyncPgConnection, member: i32, after: i64, limit: u32) -> Result<Page> {
    let limit = limit.max(1);
    let rows: Vec<Row> = diesel::sql_query(READ_SQL)
        .bind::<Integer, _>(member)
        .bind::<BigInt, _>(after)
        .bind::<BigInt, _>(i64::from(limit))
        .load(conn)
        .await
        .during("reading events")?;
    let mut cap = None;
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        if row.is_cap_row {
            cap = row.cap;
            continue;
        }
        events.push(StoredEvent {
            ts: row.ts.unwrap_or_default(),
            node_index: row.node_index.unwrap_or_default(),
            kind: EventKind::parse(row.kind.as_deref().unwrap_or_default()),
            message_id: row.message_id,
            sender: row.sender,
            recipients: row.recipients.unwrap_or_default(),
            payload: row.content,
            error: row.error_message,
        });
    }
    let next_cursor = match events.last() {
        Some(last) if events.len() as u32 >= limit => last.ts,
        last => cap.unwrap_or(after).max(last.map_or(after, |l| l.ts)).max(after),
    };
    Ok(Page { events, next_cursor })
}
