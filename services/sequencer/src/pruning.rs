//! Acknowledgements and pruning: a member acknowledges what it has processed; everything
//! before the minimum acknowledgement over enabled members may be removed.

use diesel::{ExpressionMethods, OptionalExtension, QueryDsl};
use diesel::sql_types::{BigInt, Integer, Nullable};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, RunQueryDsl};
use scoped_futures::ScopedFutureExt;
use syncline_coordination::error::DieselContext;
use syncline_coordination::timestamps::now_micros;
use syncline_coordination::Db;
use syncline_schema::tables::{sequencer_acknowledgements as a, sequencer_lower_bound as lb};

use crate::error::{Result, SequencerError};
use crate::members::Member;

/// Record that `member` processed its events up to `ts` (only ever moves forward).
pub async fn acknowledge(db: &Db, member: &Member, ts: i64) -> Result<()> {
    let id = member.id;
    db.run("acknowledging", |c| {
        async move {
            diesel::insert_into(a::table)
                .values((a::member_id.eq(id), a::ts.eq(ts)))
                .on_conflict(a::member_id)
                .do_update()
                .set(a::ts.eq(diesel::dsl::sql::<BigInt>("greatest(sequencer_acknowledgements.ts, excluded.ts)")))
                .execute(c)
                .await
                .during("acknowledging")
        }
        .scope_boxed()
    })
    .await?;
    Ok(())
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
    /// Enabled members, those holding pruning back first.
    pub members: Vec<MemberAck>,
}

/// The safe pruning point: minimum over enabled members of their acknowledgement (or
/// registration); `now` with no enabled member.
pub async fn status(db: &Db) -> Result<PruningStatus> {
    Ok(db
        .run("reading the pruning status", |c| {
            async move {
                let members: Vec<MemberAck> = diesel::sql_query(
                    "select m.member, a.ts as acknowledged, m.registered_ts from sequencer_members m \
                     left join sequencer_acknowledgements a on a.member_id = m.id where m.enabled \
                     order by coalesce(a.ts, m.registered_ts), m.member",
                )
                .load(c)
                .await
                .during("reading acknowledgements")?;
                let lower_bound: Option<i64> =
                    lb::table.select(lb::ts).first(c).await.optional().during("reading the lower bound")?;
                let safe = members.as_slice().first().map_or_else(now_micros, MemberAck::safe_point);
                Ok(PruningStatus { safe, lower_bound, members })
            }
            .scope_boxed()
        })
        .await?)
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

/// Remove events before `before`, which must not pass the safe pruning point. Members keep
/// a correct previous timestamp for their first event after the bound.
pub async fn prune(db: &Db, before: i64) -> Result<Pruned> {
    let st = status(db).await?;
    if before > st.safe {
        return Err(SequencerError::UnsafePruning {
            requested: before,
            safe: st.safe,
            blocker: st.members.as_slice().first().map(|m| m.member.clone()),
        });
    }
    let pruned = db
        .run("pruning", |c| {
            async move {
                c.transaction(async |c| {
                    // Remember each member's last event below the bound.
                    diesel::sql_query(
                        "update sequencer_members m set pruned_previous_event_ts = greatest(m.pruned_previous_event_ts, \
                         (select max(r.ts) from sequencer_event_recipients r where r.recipient_id in (m.id, -1) and r.ts < $1))",
                    )
                    .bind::<BigInt, _>(before)
                    .execute(c)
                    .await?;
                    diesel::sql_query(
                        "insert into sequencer_lower_bound (single_row, ts) values (true, $1) \
                         on conflict (single_row) do update set ts = greatest(sequencer_lower_bound.ts, excluded.ts)",
                    )
                    .bind::<BigInt, _>(before - 1)
                    .execute(c)
                    .await?;
                    let events: Count =
                        diesel::sql_query("with d as (delete from sequencer_events where ts < $1 returning 1) select count(*) as n from d")
                            .bind::<BigInt, _>(before)
                            .get_result(c)
                            .await?;
                    diesel::sql_query("delete from sequencer_event_recipients where ts < $1")
                        .bind::<BigInt, _>(before)
                        .execute(c)
                        .await?;
                    let payloads: Count =
                        diesel::sql_query("with d as (delete from sequencer_payloads where ts < $1 returning 1) select count(*) as n from d")
                            .bind::<BigInt, _>(before)
                            .get_result(c)
                            .await?;
                    Ok::<_, diesel::result::Error>(Pruned { events: events.n as u64, payloads: payloads.n as u64 })
                })
                .await
                .during("pruning")
            }
            .scope_boxed()
        })
        .await?;
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
