//! Acknowledgements and pruning: a member acknowledges what it has processed; everything
//! before the minimum acknowledgement over enabled members may be removed, but never past
//! what readers can read (the visibility cap) and never an event its node has not covered.
//!
//! An event is visible, as `events::read` has it, when it is at or below the cap (the safe
//! watermark: the minimum over online nodes' watermarks, or with none online the maximum of
//! all) and at or below its own node's watermark (which only an offline node's can be below
//! the cap). Events above their node's watermark are uncovered: they may still be truncated,
//! or become visible later, so pruning leaves them alone.

use diesel::sql_types::{BigInt, Bool, Integer, Nullable, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use scoped_futures::ScopedFutureExt;
use syncline_coordination::error::DieselContext;
use syncline_coordination::Db;

use crate::error::{Result, SequencerError};
use crate::members::Member;

use crate::store::watermarks::VISIBILITY_CAP_SQL as CAP_SQL;

#[derive(QueryableByName)]
struct AckOutcome {
    #[diesel(sql_type = Nullable<Bool>)]
    enabled: Option<bool>,
    #[diesel(sql_type = Nullable<BigInt>)]
    cap: Option<i64>,
    #[diesel(sql_type = Bool)]
    recorded: bool,
}

/// Record that the member called `member` processed its events up to `ts`. Refused for an
/// unknown or disabled member and beyond the visibility cap: nobody can have received what no
/// reader can read yet, and such an acknowledgement would let pruning pass events still to
/// come. Acknowledgements only move forward (an older one is accepted and changes nothing).
///
/// Members do not authenticate yet: any client may acknowledge for any member, within these
/// bounds. (A later issue adds member authentication.)
pub async fn acknowledge(db: &Db, member: &str, ts: i64) -> Result<()> {
    // One statement: the member's flag and the cap are read where the acknowledgement is
    // written, so neither a disable on another node nor a stale cache lets one through. The
    // cap never decreases, so one below it stays valid.
    let outcome: AckOutcome = db
        .run("acknowledging", |c| {
            async move {
                diesel::sql_query(format!(
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
                .get_result(c)
                .await
                .during("acknowledging")
            }
            .scope_boxed()
        })
        .await?;
    match outcome {
        AckOutcome { recorded: true, .. } => Ok(()),
        AckOutcome { enabled: None, .. } => Err(SequencerError::UnknownMember(member.to_string())),
        AckOutcome { enabled: Some(false), .. } => Err(SequencerError::MemberDisabled(member.to_string())),
        AckOutcome { cap, .. } => Err(SequencerError::InvalidRequest(format!(
            "member {member} cannot acknowledge {ts}: events are readable only up to {} so far, so it cannot have received them",
            cap.map_or("nothing (no sequencer has a watermark yet)".to_string(), |c| c.to_string())
        ))),
    }
}

/// An enabled member with its acknowledgement.
#[derive(Clone, Debug, PartialEq, Eq, QueryableByName)]
pub struct MemberAck {
    /// Member name.
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub member: String,
    /// Latest acknowledgement.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub acknowledged: Option<i64>,
    /// Registration time.
    #[diesel(sql_type = BigInt)]
    pub registered_ts: i64,
}

impl MemberAck {
    /// How far this member lets pruning go.
    pub fn safe_point(&self) -> i64 {
        self.acknowledged.unwrap_or(self.registered_ts)
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

/// The safe pruning point: the minimum over enabled members of their acknowledgement (or
/// registration), capped at what readers can read; with no enabled member, that cap.
pub async fn status(db: &Db) -> Result<PruningStatus> {
    Ok(db
        .run("reading the pruning status", |c| {
            async move { status_in(c).await.during("reading the pruning status") }.scope_boxed()
        })
        .await?)
}

#[derive(QueryableByName)]
struct Bounds {
    #[diesel(sql_type = Nullable<BigInt>)]
    lower_bound: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    cap: Option<i64>,
}

async fn status_in(c: &mut AsyncPgConnection) -> Result<PruningStatus, diesel::result::Error> {
    let members: Vec<MemberAck> = diesel::sql_query(
        "select m.member, a.ts as acknowledged, m.registered_ts from sequencer_members m \
         left join sequencer_acknowledgements a on a.member_id = m.id where m.enabled \
         order by coalesce(a.ts, m.registered_ts), m.member",
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

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Statements a prune runs (for the caller's time bound).
pub const PRUNE_STATEMENTS: u32 = 7;

// Each member's last visible event below the bound: per node, up to that node's watermark
// (the bound is at or below the cap, so that is all the cap lets through). An uncovered event
// of an offline node was never delivered, so it must not become anybody's previous timestamp.
const REMEMBER_PREVIOUS_SQL: &str = "
update sequencer_members m set pruned_previous_event_ts = greatest(m.pruned_previous_event_ts,
  (select max(x.ts) from sequencer_watermarks w cross join lateral (
     select max(r.ts) as ts from sequencer_event_recipients r
      where r.node_index = w.node_index and r.recipient_id in (m.id, -1) and r.ts < $1 and r.ts <= w.watermark_ts) x))";

/// Remove the covered events before `before`, which must not pass the safe pruning point.
/// Members keep a correct previous timestamp for their first event after the bound.
/// Uncovered events (above their node's watermark) stay: their node's recovery truncates them.
pub async fn prune(db: &Db, before: i64) -> Result<Pruned> {
    let outcome = db
        .run("pruning", |c| {
            async move {
                c.transaction(async |c| {
                    // Checked in the transaction that prunes: acknowledgements and watermarks
                    // only move forward, so what is safe here stays safe until it commits.
                    let st = status_in(c).await?;
                    if before > st.safe {
                        return Ok(Err(SequencerError::UnsafePruning {
                            requested: before,
                            safe: st.safe,
                            blocker: st.blocker().map(str::to_string),
                        }));
                    }
                    diesel::sql_query(REMEMBER_PREVIOUS_SQL).bind::<BigInt, _>(before).execute(c).await?;
                    diesel::sql_query(
                        "insert into sequencer_lower_bound (single_row, ts) values (true, $1) \
                         on conflict (single_row) do update set ts = greatest(sequencer_lower_bound.ts, excluded.ts)",
                    )
                    .bind::<BigInt, _>(before.saturating_sub(1))
                    .execute(c)
                    .await?;
                    let events: Count = diesel::sql_query(
                        "with d as (delete from sequencer_events e using sequencer_watermarks w \
                         where w.node_index = e.node_index and e.ts < $1 and e.ts <= w.watermark_ts returning 1) \
                         select count(*) as n from d",
                    )
                    .bind::<BigInt, _>(before)
                    .get_result(c)
                    .await?;
                    diesel::sql_query(
                        "delete from sequencer_event_recipients r using sequencer_watermarks w \
                         where w.node_index = r.node_index and r.ts < $1 and r.ts <= w.watermark_ts",
                    )
                    .bind::<BigInt, _>(before)
                    .execute(c)
                    .await?;
                    let payloads: Count = diesel::sql_query(
                        "with d as (delete from sequencer_payloads p using sequencer_watermarks w \
                         where w.node_index = p.node_index and p.ts < $1 and p.ts <= w.watermark_ts returning 1) \
                         select count(*) as n from d",
                    )
                    .bind::<BigInt, _>(before)
                    .get_result(c)
                    .await?;
                    Ok::<_, diesel::result::Error>(Ok(Pruned { events: events.n as u64, payloads: payloads.n as u64 }))
                })
                .await
                .during("pruning")
            }
            .scope_boxed()
        })
        .await?;
    let pruned = outcome?;
    tracing::info!(before, ?pruned, "pruned");
    Ok(pruned)
}

/// The member's last visible event at or before `at` (or its pruned previous timestamp).
pub async fn previous_event(db: &Db, member: &Member, at: i64) -> Result<Option<i64>> {
    #[derive(QueryableByName)]
    struct Prev {
        #[diesel(sql_type = Nullable<BigInt>)]
        ts: Option<i64>,
    }
    let id = member.id;
    let prev: Prev = db
        .run("reading the previous event", |c| {
            async move {
                diesel::sql_query(
                    "select coalesce((select max(r.ts) from sequencer_event_recipients r join sequencer_watermarks w \
                     on w.node_index = r.node_index where r.recipient_id in ($1, -1) and r.ts <= $2 \
                     and (w.online or r.ts <= w.watermark_ts)), \
                     (select pruned_previous_event_ts from sequencer_members where id = $1)) as ts",
                )
                .bind::<Integer, _>(id)
                .bind::<BigInt, _>(at)
                .get_result(c)
                .await
                .during("reading the previous event")
            }
            .scope_boxed()
        })
        .await?;
    Ok(prev.ts)
}
