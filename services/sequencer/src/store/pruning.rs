//! Acknowledgements, the pruning bounds and pruning itself, in SQL. Everything before the
//! minimum acknowledgement over enabled members may be removed, but never past what readers
//! can read (the visibility cap), never an event its node has not covered (above its node's
//! watermark: it may still be truncated, or become visible later), and never a broadcast:
//! broadcasts carry what a member joining later must replay (the topology), and its
//! subscription from its start delivers every one still stored. A pruned event whose
//! message-id claim may still be resent leaves a claim-only row until the claim expires.

use super::error::{DieselContext, Result};
use diesel::sql_types::{BigInt, Bool, Integer, Nullable, Text};
use diesel::{OptionalExtension, QueryDsl, QueryableByName};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use syncline_schema::tables::sequencer::sequencer_lower_bound as lb;

use super::events::{BROADCAST, CLAIM_GRACE_MICROS};
use super::timestamps::now_micros;
use super::watermarks::{visible_on_node_sql, VISIBILITY_CAP_SQL as CAP_SQL};

/// What an acknowledgement found, when it was not recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acknowledged {
    /// Recorded (or older than the one already held, which stays).
    Recorded,
    /// No member has that name.
    UnknownMember,
    /// The member is disabled.
    Disabled,
    /// Beyond the visibility cap (`None`: no node has a watermark yet).
    BeyondCap(Option<i64>),
}

#[derive(QueryableByName)]
struct AckOutcome {
    #[diesel(sql_type = Nullable<Bool>)]
    enabled: Option<bool>,
    #[diesel(sql_type = Nullable<BigInt>)]
    cap: Option<i64>,
    #[diesel(sql_type = Bool)]
    recorded: bool,
}

/// Record that the member called `member` processed its events up to `ts`, unless it is
/// unknown, disabled, or `ts` is beyond the visibility cap. Acknowledgements only move forward.
pub async fn acknowledge(conn: &mut AsyncPgConnection, member: &str, ts: i64) -> Result<Acknowledged> {
    // One statement: the member's flag and the cap are read where the acknowledgement is
    // written, so neither a disable on another node nor a stale cache lets one through. The
    // cap never decreases, so one below it stays valid.
    let outcome: AckOutcome = diesel::sql_query(format!(
        "with m as (select id, enabled from sequencer_members where member = $1), \
         cap as (select {CAP_SQL} as ts), \
         ins as (insert into sequencer_acknowledgements (member_id, ts) \
           select m.id, $2 from m, cap where m.enabled and $2 <= cap.ts \
           on conflict (member_id) do update set ts = greatest(sequencer_acknowledgements.ts, excluded.ts) \
           returning 1) \
         select (select enabled from m) as enabled, (select ts from cap) as cap, \
           exists (select 1 from ins) as recorded"
    ))
    .bind::<Text, _>(member)
    .bind::<BigInt, _>(ts)
    .get_result(conn)
    .await
    .during("acknowledging")?;
    Ok(match outcome {
        AckOutcome { recorded: true, .. } => Acknowledged::Recorded,
        AckOutcome { enabled: None, .. } => Acknowledged::UnknownMember,
        AckOutcome { enabled: Some(false), .. } => Acknowledged::Disabled,
        AckOutcome { cap, .. } => Acknowledged::BeyondCap(cap),
    })
}

/// An enabled member with its acknowledgement.
#[derive(Clone, Debug, PartialEq, Eq, QueryableByName)]
pub struct MemberAck {
    /// Member name.
    #[diesel(sql_type = Text)]
    pub member: String,
    /// Latest acknowledgement.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub acknowledged: Option<i64>,
    /// Registration time.
    #[diesel(sql_type = BigInt)]
    pub registered_ts: i64,
}

impl MemberAck {
    /// How far this member lets pruning go: its acknowledgement, but never below its
    /// registration (it has no events of its own before, and the broadcasts before it, which
    /// it may acknowledge as it catches up, are never pruned).
    pub fn safe_point(&self) -> i64 {
        self.acknowledged.map_or(self.registered_ts, |a| a.max(self.registered_ts))
    }
}

/// Where pruning may go, and who holds it back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PruningStatus {
    /// Events before this may be pruned.
    pub safe: i64,
    /// Current exclusive lower bound of readable events.
    pub lower_bound: Option<i64>,
    /// The visibility cap: no reader has read past it (`None`: no sequencer has a watermark).
    pub readable_up_to: Option<i64>,
    /// Enabled members, those holding pruning back first.
    pub members: Vec<MemberAck>,
}

impl PruningStatus {
    /// The member holding pruning at `safe`, if it is a member and not the visibility cap.
    pub fn blocker(&self) -> Option<&str> {
        self.members.as_slice().first().filter(|m| m.safe_point() <= self.safe).map(|m| m.member.as_str())
    }
}

#[derive(QueryableByName)]
struct Bounds {
    #[diesel(sql_type = Nullable<BigInt>)]
    lower_bound: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    cap: Option<i64>,
}

/// The safe pruning point: the minimum over enabled members of their acknowledgement (or
/// registration), capped at what readers can read; with no enabled member, that cap.
pub async fn status(conn: &mut AsyncPgConnection) -> Result<PruningStatus> {
    status_in(conn).await.during("reading the pruning status")
}

async fn status_in(c: &mut AsyncPgConnection) -> Result<PruningStatus, diesel::result::Error> {
    let members: Vec<MemberAck> = diesel::sql_query(
        "select m.member, a.ts as acknowledged, m.registered_ts from sequencer_members m \
         left join sequencer_acknowledgements a on a.member_id = m.id where m.enabled \
         order by greatest(a.ts, m.registered_ts), m.member",
    )
    .load(c)
    .await?;
    let bounds: Bounds =
        diesel::sql_query(format!("select (select ts from sequencer_lower_bound) as lower_bound, {CAP_SQL} as cap"))
            .get_result(c)
            .await?;
    // With no watermark nothing was ever readable: nothing may go beyond the current bound.
    let cap = bounds.cap.unwrap_or_else(|| bounds.lower_bound.map_or(0, |b| b.saturating_add(1)));
    let safe = members.as_slice().first().map_or(cap, |m| m.safe_point().min(cap));
    Ok(PruningStatus { safe, lower_bound: bounds.lower_bound, readable_up_to: bounds.cap, members })
}

/// What a prune removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Events removed.
    pub events: u64,
    /// Payloads removed.
    pub payloads: u64,
}

/// How a prune ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PruneOutcome {
    /// Done.
    Pruned(Pruned),
    /// `before` is past the safe pruning point: nothing was removed.
    Unsafe {
        /// The safe pruning point.
        safe: i64,
        /// The member holding pruning back, if any.
        blocker: Option<String>,
    },
}

/// Statements a prune runs (for the caller's time bound).
pub const PRUNE_STATEMENTS: u32 = 5;

// Each member's last visible event below the bound: per node, up to that node's watermark
// (the bound is at or below the cap, so that is all the cap lets through). An uncovered event
// of an offline node was never delivered, so it must not become anybody's previous timestamp.
// $1 the bound, $2 the broadcast recipient.
const REMEMBER_PREVIOUS_SQL: &str = "
update sequencer_members m set pruned_previous_event_ts = greatest(m.pruned_previous_event_ts,
  (select max(x.ts) from sequencer_watermarks w cross join lateral (
     select max(r.ts) as ts from sequencer_event_recipients r
      where r.node_index = w.node_index and r.recipient_id in (m.id, $2) and r.ts < $1 and r.ts <= w.watermark_ts) x))";

/// Remove the covered events before `before`, unless that passes the safe pruning point
/// (checked in the same transaction). Members keep a correct previous timestamp for their
/// first event after the bound. Uncovered events (above their node's watermark) stay: their
/// node's recovery truncates them.
pub async fn prune(conn: &mut AsyncPgConnection, before: i64) -> Result<PruneOutcome> {
    conn.transaction(async |c| {
        // Checked in the transaction that prunes: acknowledgements and watermarks only move
        // forward, so what is safe here stays safe until it commits.
        let st = status_in(c).await?;
        // A claim whose send may still be resent outlives its pruned event.
        let claims_live_from = now_micros() - CLAIM_GRACE_MICROS;
        if before > st.safe {
            return Ok(PruneOutcome::Unsafe { safe: st.safe, blocker: st.blocker().map(str::to_string) });
        }
        diesel::sql_query(REMEMBER_PREVIOUS_SQL)
            .bind::<BigInt, _>(before)
            .bind::<Integer, _>(BROADCAST)
            .execute(c)
            .await?;
        diesel::sql_query(
            "insert into sequencer_lower_bound (single_row, ts) values (true, $1) \
             on conflict (single_row) do update set ts = greatest(sequencer_lower_bound.ts, excluded.ts)",
        )
        .bind::<BigInt, _>(before.saturating_sub(1))
        .execute(c)
        .await?;
        let n: Removed = diesel::sql_query(PRUNE_SQL)
            .bind::<BigInt, _>(before)
            .bind::<Integer, _>(BROADCAST)
            .bind::<BigInt, _>(claims_live_from)
            .bind::<BigInt, _>(st.lower_bound.unwrap_or(i64::MIN))
            .get_result(c)
            .await?;
        Ok::<_, diesel::result::Error>(PruneOutcome::Pruned(Pruned {
            events: n.events as u64,
            payloads: n.payloads as u64,
        }))
    })
    .await
    .during("pruning")
}

// The covered events before $1 since the previous prune (above its lower bound $4), except
// broadcasts: they carry what a member joining later must replay (e.g. the topology), so they
// stay with their recipient rows and payloads. An event whose message-id claim may still be
// retried (max-sequencing-time at or after $3) keeps a claim-only row — no payload, no
// recipients, never read — so that a resend is still answered with its timestamp; the claim
// expiry removes it later. Recipient rows go through the events pruned.
const PRUNE_SQL: &str = "
with prunable as (
  select e.ts, e.node_index, e.recipients, e.payload is not null as had_payload,
         coalesce(e.max_sequencing_ts >= $3, false) as claim_live
    from sequencer_events e join sequencer_watermarks w on w.node_index = e.node_index
   where e.ts < $1 and e.ts > $4 and e.ts <= w.watermark_ts
     and cardinality(e.recipients) > 0 and not $2 = any(e.recipients)
),
gone as (
  delete from sequencer_events e using prunable t where e.ts = t.ts and not t.claim_live
  returning 1
),
emptied as (
  update sequencer_events e set payload = null, recipients = '{}' from prunable t where e.ts = t.ts and t.claim_live
  returning 1
),
fanout as (
  delete from sequencer_event_recipients r using prunable t, unnest(t.recipients) x(id)
   where r.node_index = t.node_index and r.recipient_id = x.id and r.ts = t.ts
)
select (select count(*) from prunable) as events, (select count(*) from prunable where had_payload) as payloads";

#[derive(QueryableByName)]
struct Removed {
    #[diesel(sql_type = BigInt)]
    events: i64,
    #[diesel(sql_type = BigInt)]
    payloads: i64,
}

#[derive(QueryableByName)]
struct Prev {
    #[diesel(sql_type = Nullable<BigInt>)]
    ts: Option<i64>,
}

/// Member `id`'s last visible event at or before `at`: the latest of those still stored and
/// of its pruned previous timestamp (which is below every stored event of its own, but may be
/// above a broadcast that pruning kept).
pub async fn previous_event(conn: &mut AsyncPgConnection, id: i32, at: i64) -> Result<Option<i64>> {
    let prev: Prev = diesel::sql_query(format!(
        "select greatest((select max(r.ts) from sequencer_event_recipients r join sequencer_watermarks w \
         on w.node_index = r.node_index where r.recipient_id in ($1, $3) and r.ts <= $2 and {visible}), \
         (select pruned_previous_event_ts from sequencer_members where id = $1 and pruned_previous_event_ts <= $2)) \
         as ts",
        visible = visible_on_node_sql("w", "r.ts")
    ))
    .bind::<Integer, _>(id)
    .bind::<BigInt, _>(at)
    .bind::<Integer, _>(BROADCAST)
    .get_result(conn)
    .await
    .during("reading the previous event")?;
    Ok(prev.ts)
}

/// The pruning lower bound (exclusive): nothing at or below it can be read any more. It
/// commits with the deletes and only moves forward, so read after a page it tells whether a
/// prune removed anything after the page's cursor.
pub async fn lower_bound(conn: &mut AsyncPgConnection) -> Result<Option<i64>> {
    lb::table.select(lb::ts).first(conn).await.optional().during("reading the lower bound")
}
