//! Sequenced events: append a batch (events with their payloads and message-id claims, and
//! per-recipient rows) in one transaction; read a member's events after a cursor, in timestamp order,
//! never past the safe watermark, with offline nodes' events visible only up to their last
//! watermark.

use std::collections::HashSet;
use std::sync::LazyLock;

use diesel::result::DatabaseErrorKind;
use diesel::sql_types::{Array, BigInt, Binary, Bool, Integer, Nullable, SmallInt, Text};
use diesel::{QueryResult, QueryableByName};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::error::{DieselContext, Result};
use super::prepared::prepared;
use super::watermarks::{visible_on_node_sql, VISIBILITY_CAP_SQL};

/// Recipient id meaning "every member": the one place it is stated; SQL binds it.
pub const BROADCAST: i32 = -1;

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

/// The typed code of an error event, stored in its own column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// Written without a code (by a sequencer before codes had a column of their own).
    Unspecified,
    /// Some recipients of the send are not registered members.
    UnknownRecipients,
}

impl ErrorCode {
    /// The code as stored (and as the public API's string `code` shows it).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unspecified => "ERROR",
            ErrorCode::UnknownRecipients => "UNKNOWN_RECIPIENTS",
        }
    }

    fn parse(s: Option<&str>) -> ErrorCode {
        match s {
            Some("UNKNOWN_RECIPIENTS") => ErrorCode::UnknownRecipients,
            _ => ErrorCode::Unspecified,
        }
    }
}

/// What an error event says: a code and a message for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventError {
    /// Why the send was not delivered.
    pub code: ErrorCode,
    /// Details (e.g. the unknown recipients).
    pub message: String,
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
    /// Digest of what the send carried, to tell a resend from another send reusing the id.
    pub digest: Vec<u8>,
}

/// The claim already held on a (sender, message id), as [`claims`] finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExistingClaim {
    /// Sender member id.
    pub sender: i32,
    /// The sender's message id.
    pub message_id: String,
    /// Timestamp of the event that holds the claim.
    pub ts: i64,
    /// Digest of what that send carried (`None` for claims older than digests).
    pub digest: Option<Vec<u8>>,
    /// True when the event is at or below its node's watermark: committed, visible, and never
    /// truncated. An uncovered claim may still vanish with its node's tail, so it is no proof
    /// that the send was sequenced.
    pub covered: bool,
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
    /// The error, for error events.
    pub error: Option<EventError>,
    /// Deduplication claim; events whose claim is taken are not written. A claimed event is
    /// stored under its claim's sender and message id (its row is the claim).
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
    /// The error of an error event.
    pub error: Option<EventError>,
}

/// What an append wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Appended {
    /// Timestamps of the events written.
    pub written: Vec<i64>,
    /// Timestamps of the events not written because their (sender, message id) is already
    /// claimed (earlier in the batch, or by an event here or on another node). Whether that
    /// claim proves the send sequenced is for [`claims`] to say once it is covered.
    pub conflicts: Vec<i64>,
}

// One statement, one round trip per batch: write the events (payload and message-id claim
// in their rows) with their recipient rows, and tell listeners which members got events up
// to which timestamp ("<max ts>|<member ids>", or "<max ts>|*" when there are too many).
// Columns travel as arrays (unnest), so the statement text — and the statement the session
// prepares once — is the same for every batch size. Recipient lists travel as array
// literals, one per event. `{conflict}` is empty for the plain insert, which fails as a whole
// on a claim taken before (the unique index on claimed rows); the retry of such a batch skips
// the taken claims instead (see `append_with`).
const APPEND_CTES: &str = "
with input as (
  select * from unnest($1::bigint[], $2::text[], $3::text[], $4::integer[], $5::text[], $6::bytea[], $7::text[],
                       $8::text[], $9::bigint[], $10::bytea[])
    as t(ts, kind, message_id, sender, recipients, payload, error_message, error_code, mst, digest)
),
written as (
  insert into sequencer_events (ts, node_index, kind, message_id, sender, recipients, error_message, error_code,
                                payload, max_sequencing_ts, digest)
  select ts, $11, kind, message_id, sender, recipients::integer[], error_message, error_code, payload, mst, digest
    from input
  {conflict}
  returning ts, recipients
),
fanout as (
  insert into sequencer_event_recipients (node_index, recipient_id, ts)
  select $11, r, written.ts from written, unnest(written.recipients) r
),
told as (
  select pg_notify('syncline_events', max(written.ts)::text || '|' ||
    case when count(distinct r) > 400 then '*' else string_agg(distinct r::text, ',') end)
  from written, unnest(written.recipients) r
  having count(*) > 0
)";

// The retry of a batch that hit a taken claim: those events are skipped (and reported as
// conflicts), the others written.
const SKIP_TAKEN_CLAIMS: &str = "on conflict (sender, message_id) where max_sequencing_ts is not null do nothing";

// The unique index that makes a (sender, message id) claimable once (migration 000013).
const CLAIMS_INDEX: &str = "sequencer_events_claims";

fn append_ctes(skip_taken: bool) -> String {
    APPEND_CTES.replace("{conflict}", if skip_taken { SKIP_TAKEN_CLAIMS } else { "" })
}

// Rows of the append statements: `what` 0 = a written event's ts, 1 = the notification,
// 2 = the watermark moved to `ts`. Indexed by `skip_taken`. Both raise the index's
// `written_to` bound (see migration 000016) in the statement that inserts, so no committed
// event is ever above it; an unknown (NULL) bound stays unknown.
const RAISED: &str = "case when written_to is not null then greatest(written_to, (select max(ts) from written)) end";

static APPEND_SQL: LazyLock<[String; 2]> = LazyLock::new(|| {
    [false, true].map(|skip| {
        append_ctes(skip)
            + &format!(
                ",
raised as (
  update sequencer_watermarks set written_to = {RAISED}
   where node_index = $11 and written_to is not null and exists (select from written)
)
select ts, 0 as what from written
union all select null, 1 from told"
            )
    })
});

// The append and the watermark move in one statement, so one commit makes the batch
// durable and covered: no window where it is committed but not covered. The watermark
// moves only while the node is online and not past $12 (see `watermarks::save`); the row is
// updated either way, for `written_to`.
static APPEND_COVERED_SQL: LazyLock<[String; 2]> = LazyLock::new(|| {
    [false, true].map(|skip| {
        append_ctes(skip)
            + &format!(
                ",
moved as (
  update sequencer_watermarks
     set watermark_ts = case when online and watermark_ts <= $12 then $12 else watermark_ts end,
         written_to = {RAISED}
   where node_index = $11
  returning online and watermark_ts = $12 as moved, watermark_ts
),
woke as (
  select pg_notify('syncline_watermarks', $11::text || '|' || $12::text) from moved where moved
)
select ts, 0 as what from written
union all select null, 1 from told
union all select moved.watermark_ts, 2 from moved, woke"
            )
    })
});

#[derive(QueryableByName)]
struct Written {
    #[diesel(sql_type = Nullable<BigInt>)]
    ts: Option<i64>,
    #[diesel(sql_type = Integer)]
    what: i32,
}

/// Append `events` written by node `index` in one transaction (one statement), without
/// moving its watermark. Events must be in increasing timestamp order and above the node's
/// watermark. Recipient lists are stored sorted and without duplicates. The writer uses
/// [`append_covered`]; this form leaves a batch uncovered (recovery and tests). Runs as its own
/// transaction, never inside one: a batch that hits a taken claim is written again after its
/// first statement failed.
pub async fn append(conn: &mut AsyncPgConnection, index: u32, events: &[NewEvent]) -> Result<Appended> {
    Ok(append_with(conn, index, events, None).await?.0)
}

/// Append `events` (as [`append`]) and move node `index`'s watermark to `watermark` in the
/// same statement and commit. `Ok((appended, false))` when the watermark could not be moved
/// (the node was marked offline, or its row is gone or ahead): the events are then committed
/// but uncovered, for recovery to truncate; see `watermarks::explain_not_moved`.
pub async fn append_covered(
    conn: &mut AsyncPgConnection,
    index: u32,
    events: &[NewEvent],
    watermark: i64,
) -> Result<(Appended, bool)> {
    append_with(conn, index, events, Some(watermark)).await
}

async fn append_with(
    conn: &mut AsyncPgConnection,
    index: u32,
    events: &[NewEvent],
    watermark: Option<i64>,
) -> Result<(Appended, bool)> {
    // A message id repeated inside the batch: the first occurrence claims it.
    let mut seen = HashSet::new();
    let mut conflicts = Vec::new();
    let keep: Vec<&NewEvent> = events
        .iter()
        .filter(|ev| match &ev.claim {
            Some(cl) if !seen.insert((cl.sender, cl.message_id.as_str())) => {
                conflicts.push(ev.ts);
                false
            }
            _ => true,
        })
        .collect();
    if keep.is_empty() && watermark.is_none() {
        return Ok((Appended { written: Vec::new(), conflicts }, false));
    }
    // Most batches claim only fresh ids: a plain insert, no conflict arbitration per row. A
    // batch that hits a taken claim fails as a whole (nothing written) and is written again
    // skipping the taken ones.
    let rows = match insert(conn, index, &keep, watermark, false).await {
        Err(diesel::result::Error::DatabaseError(DatabaseErrorKind::UniqueViolation, info))
            if info.constraint_name() == Some(CLAIMS_INDEX) =>
        {
            insert(conn, index, &keep, watermark, true).await
        }
        rows => rows,
    }
    .during("appending events")?;
    let moved = rows.iter().any(|r| r.what == 2 && r.ts == watermark);
    let written: HashSet<i64> = rows.iter().filter(|r| r.what == 0).filter_map(|r| r.ts).collect();
    conflicts.extend(keep.iter().map(|ev| ev.ts).filter(|ts| !written.contains(ts)));
    conflicts.sort_unstable();
    let mut written: Vec<i64> = written.into_iter().collect();
    written.sort_unstable();
    Ok((Appended { written, conflicts }, moved))
}

/// Run the append statement once: plainly, or skipping taken claims.
async fn insert(
    conn: &mut AsyncPgConnection,
    index: u32,
    keep: &[&NewEvent],
    watermark: Option<i64>,
    skip_taken: bool,
) -> QueryResult<Vec<Written>> {
    let recipients = |ev: &NewEvent| {
        let mut ids = ev.recipients.clone();
        ids.sort_unstable();
        ids.dedup();
        let list: Vec<String> = ids.iter().map(i32::to_string).collect();
        format!("{{{}}}", list.join(","))
    };
    let which = usize::from(skip_taken);
    let sql = match watermark {
        Some(_) => APPEND_COVERED_SQL[which].as_str(),
        None => APPEND_SQL[which].as_str(),
    };
    // A claimed event is stored under its claim's (sender, message id): the unique index
    // on them is the claim.
    let sender = |ev: &NewEvent| ev.claim.as_ref().map(|c| c.sender).or(ev.sender);
    let query = diesel::sql_query(sql)
        .bind::<Array<BigInt>, _>(keep.iter().map(|ev| ev.ts).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(keep.iter().map(|ev| ev.kind.as_str()).collect::<Vec<_>>())
        .bind::<Array<Nullable<Text>>, _>(
            keep.iter()
                .map(|ev| ev.claim.as_ref().map(|c| c.message_id.as_str()).or(ev.message_id.as_deref()))
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<Integer>>, _>(keep.iter().map(|ev| sender(ev)).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(keep.iter().map(|ev| recipients(ev)).collect::<Vec<_>>())
        .bind::<Array<Nullable<Binary>>, _>(keep.iter().map(|ev| ev.payload.as_deref()).collect::<Vec<_>>())
        .bind::<Array<Nullable<Text>>, _>(
            keep.iter().map(|ev| ev.error.as_ref().map(|e| e.message.as_str())).collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<Text>>, _>(
            keep.iter().map(|ev| ev.error.as_ref().map(|e| e.code.as_str())).collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<BigInt>>, _>(
            keep.iter().map(|ev| ev.claim.as_ref().map(|c| c.max_sequencing_ts)).collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<Binary>>, _>(
            keep.iter().map(|ev| ev.claim.as_ref().map(|c| c.digest.as_slice())).collect::<Vec<_>>(),
        )
        .bind::<SmallInt, _>(index as i16);
    match watermark {
        Some(w) => prepared(query.bind::<BigInt, _>(w)).load(conn).await,
        None => prepared(query).load(conn).await,
    }
}

#[derive(QueryableByName)]
struct ClaimRow {
    #[diesel(sql_type = Integer)]
    sender: i32,
    #[diesel(sql_type = Text)]
    message_id: String,
    #[diesel(sql_type = BigInt)]
    ts: i64,
    #[diesel(sql_type = Nullable<Binary>)]
    digest: Option<Vec<u8>>,
    #[diesel(sql_type = Bool)]
    covered: bool,
}

// Claim and watermark from one snapshot: "covered" is final once seen, since a watermark
// never moves back and truncation only removes rows above it.
// A claim is the events row that holds it (`max_sequencing_ts` set, the unique index).
const CLAIMS_SQL: &str = "
select e.sender, e.message_id, e.ts, e.digest, coalesce(e.ts <= w.watermark_ts, false) as covered
  from unnest($1::integer[], $2::text[]) as c(sender, message_id)
  join sequencer_events e on e.sender = c.sender and e.message_id = c.message_id and e.max_sequencing_ts is not null
  left join sequencer_watermarks w on w.node_index = e.node_index";

/// The claims currently held on the given (sender, message id) pairs (absent: unclaimed).
pub async fn claims(conn: &mut AsyncPgConnection, keys: &[(i32, &str)]) -> Result<Vec<ExistingClaim>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<ClaimRow> = prepared(
        diesel::sql_query(CLAIMS_SQL)
            .bind::<Array<Integer>, _>(keys.iter().map(|k| k.0).collect::<Vec<_>>())
            .bind::<Array<Text>, _>(keys.iter().map(|k| k.1).collect::<Vec<_>>()),
    )
    .load(conn)
    .await
    .during("reading message-id claims")?;
    Ok(rows
        .into_iter()
        .map(|r| ExistingClaim {
            sender: r.sender,
            message_id: r.message_id,
            ts: r.ts,
            digest: r.digest,
            covered: r.covered,
        })
        .collect())
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
    /// The pruning lower bound when the page was read (same snapshot): if it is not past the
    /// cursor, no prune had removed anything the page should hold.
    pub lower_bound: Option<i64>,
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
    #[diesel(sql_type = Nullable<Text>)]
    error_code: Option<String>,
    #[diesel(sql_type = Nullable<Binary>)]
    content: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<BigInt>)]
    cap: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    lower_bound: Option<i64>,
    #[diesel(sql_type = Bool)]
    is_cap_row: bool,
    #[diesel(sql_type = Bool)]
    cut: bool,
}

// Two ordered, limited index scans per node (own id, broadcast) are merged; the outer limit
// keeps the page gap-free. The cap and the offline-node rule are those of `watermarks`.
// $1 member, $2 cursor (exclusive), $3 limit, $4 the broadcast recipient, $5 the floor of
// the member's own events (exclusive; broadcasts have none, see [`Cursor`]).
fn visible_hits() -> String {
    let scan = |recipient: &str, after: &str| {
        format!(
            "(select r.ts from sequencer_event_recipients r \
               where r.node_index = wm.node_index and r.recipient_id = {recipient} and r.ts > {after} \
                 and r.ts <= bound.cap and {visible} \
               order by r.ts limit $3)",
            visible = visible_on_node_sql("wm", "r.ts")
        )
    };
    format!(
        "with wm as (select node_index, watermark_ts, online from sequencer_watermarks), \
         bound as (select {VISIBILITY_CAP_SQL} as cap), \
         hits as ( \
           select distinct x.ts from wm cross join bound cross join lateral ({own} union all {broadcast}) x \
           order by x.ts limit $3)",
        own = scan("$1", "greatest($2, $5)"),
        broadcast = scan("$4", "$2"),
    )
}

/// Where a member's read continues: after `after`, except that its own (member-addressed)
/// events start after `own_after` when that is later. A subscription from a member's start
/// reads from the very beginning with `own_after` its registration: every broadcast still
/// stored, merged in order with its own events since it registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// The member id.
    pub member: i32,
    /// Exclusive lower bound of every event read.
    pub after: i64,
    /// Exclusive lower bound of the member's own events.
    pub own_after: i64,
}

impl Cursor {
    /// Everything of `member` after `after`.
    pub fn after(member: i32, after: i64) -> Cursor {
        Cursor { member, after, own_after: after }
    }

    /// Where the member's own events continue: the later of the two bounds.
    pub fn own(&self) -> i64 {
        self.after.max(self.own_after)
    }
}

// One statement, so the watermarks, the sizes, the events and the pruning lower bound come
// from one snapshot: the page is cut to the longest prefix whose payloads fit in $6 bytes (at
// least one event), so a page is sized and read in one round trip. Events are joined once:
// those past the cut come back flagged and without their payload (a large one is never read
// from its out-of-line storage). The cap row carries the cap and the lower bound.
static READ_SQL: LazyLock<String> = LazyLock::new(|| {
    visible_hits()
        + ",
sized as (
  select e.ts, e.node_index, e.kind, e.message_id, e.sender, e.recipients, e.error_message, e.error_code, e.payload,
         row_number() over w as n, sum(coalesce(octet_length(e.payload), 0)) over w as running
    from hits join sequencer_events e on e.ts = hits.ts
  window w as (order by hits.ts)
)
select ts, node_index, kind, message_id, sender, recipients, error_message, error_code,
       case when n = 1 or running <= $6 then payload end as content,
       null::bigint as cap, null::bigint as lower_bound, false as is_cap_row, not (n = 1 or running <= $6) as cut
  from sized
union all
select null, null, null, null, null, null, null, null, null, bound.cap, (select ts from sequencer_lower_bound), true, false
  from bound"
});

/// Read up to `limit` events of `member` with timestamps above `after`.
pub async fn read(conn: &mut AsyncPgConnection, member: i32, after: i64, limit: u32) -> Result<Page> {
    read_at(conn, Cursor::after(member, after), limit).await
}

/// Read up to `limit` events at a [`Cursor`]; the page's `next_cursor` is the next `after`.
pub async fn read_at(conn: &mut AsyncPgConnection, at: Cursor, limit: u32) -> Result<Page> {
    Ok(read_within(conn, at, limit, u64::MAX).await?.0)
}

/// Read up to `limit` events at a [`Cursor`], but only as many as fit in `budget` payload
/// bytes (at least one), in one statement; returns the page and the limit it was read with
/// (`limit`, or the number of events when the budget cut the page).
pub async fn read_within(conn: &mut AsyncPgConnection, at: Cursor, limit: u32, budget: u64) -> Result<(Page, u32)> {
    let after = at.after;
    let limit = limit.max(1);
    let rows: Vec<Row> = prepared(
        diesel::sql_query(READ_SQL.as_str())
            .bind::<Integer, _>(at.member)
            .bind::<BigInt, _>(after)
            .bind::<BigInt, _>(i64::from(limit))
            .bind::<Integer, _>(BROADCAST)
            .bind::<BigInt, _>(at.own_after)
            .bind::<BigInt, _>(i64::try_from(budget).unwrap_or(i64::MAX)),
    )
    .load(conn)
    .await
    .during("reading events")?;
    let mut cap = None;
    let mut lower_bound = None;
    let mut cut = false;
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        if row.is_cap_row {
            cap = row.cap;
            lower_bound = row.lower_bound;
            continue;
        }
        if row.cut {
            cut = true;
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
            error: row
                .error_message
                .map(|message| EventError { code: ErrorCode::parse(row.error_code.as_deref()), message }),
        });
    }
    // Rows come in timestamp order in practice; a union promises no order, so make sure.
    events.sort_unstable_by_key(|e: &StoredEvent| e.ts);
    // A page cut by the budget is full at the size it was cut to.
    let limit = if cut { events.len().max(1) as u32 } else { limit };
    let next_cursor = match events.last() {
        Some(last) if events.len() as u32 >= limit => last.ts,
        last => cap.unwrap_or(after).max(last.map_or(after, |l| l.ts)).max(after),
    };
    Ok((Page { events, next_cursor, lower_bound }, limit))
}

/// How long after its max-sequencing-time a claim is kept: a resend arriving late (clock skew,
/// a slow client) still finds it.
pub const CLAIM_GRACE_MICROS: i64 = 60_000_000;

// Claim-only rows (events pruned while their claim could still be retried: no recipients)
// whose max-sequencing-time is before $1. They all lie at or below the pruning lower bound,
// so the scan is a short range of the primary key (those rows and the broadcasts kept).
const EXPIRE_CLAIMS_SQL: &str = "
with d as (
  delete from sequencer_events e
   where e.ts <= (select ts from sequencer_lower_bound)
     and cardinality(e.recipients) = 0 and e.max_sequencing_ts < $1
  returning 1
)
select count(*) as n from d";

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Drop the claims of pruned events whose max-sequencing-time is before `cutoff` (µs): no
/// send can be retried with them any more. A claim of an event still stored lives as long as
/// the event. Returns how many went.
pub async fn expire_claims(conn: &mut AsyncPgConnection, cutoff: i64) -> Result<usize> {
    let n: Count = diesel::sql_query(EXPIRE_CLAIMS_SQL)
        .bind::<BigInt, _>(cutoff)
        .get_result(conn)
        .await
        .during("expiring message-id claims")?;
    Ok(n.n as usize)
}

/// What the notification listener needs to start from: the visibility cap and the newest
/// event of anyone, from one snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, QueryableByName)]
pub struct Bounds {
    /// The visibility cap (`None`: no node ever had a watermark).
    #[diesel(sql_type = Nullable<BigInt>)]
    pub cap: Option<i64>,
    /// The newest stored event (`None`: none).
    #[diesel(sql_type = Nullable<BigInt>)]
    pub newest: Option<i64>,
}

/// The visibility cap and the newest event, in one statement.
pub async fn bounds(conn: &mut AsyncPgConnection) -> Result<Bounds> {
    diesel::sql_query(format!("select {VISIBILITY_CAP_SQL} as cap, (select max(ts) from sequencer_events) as newest"))
        .get_result(conn)
        .await
        .during("reading the visibility bound")
}
