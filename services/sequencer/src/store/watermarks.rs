//! Sequencer watermarks: "node i will never write an event at or below its watermark again,
//! and all it wrote at or below it is committed". Readers never pass the safe watermark, the
//! minimum over online nodes.

use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use scoped_futures::ScopedFutureExt;
use syncline_schema::tables::sequencer::sequencer_watermarks as w;

use super::error::{DieselContext, Result, StoreError};
use super::prepared::prepared;
use std::sync::LazyLock;
use syncline_coordination::db::retry_conflicts;

/// The visibility cap readers stop at, as an SQL expression: the safe watermark (min over
/// online nodes) or, with no node online, the highest watermark (each offline node's events
/// are further capped at its own watermark, see [`visible_on_node_sql`]). The one statement
/// of the rule: reads, acknowledgements, pruning, registration and the notification
/// listener all use it.
pub const VISIBILITY_CAP_SQL: &str = "coalesce((select min(watermark_ts) from sequencer_watermarks where online), \
     (select max(watermark_ts) from sequencer_watermarks))";

/// The offline-node rule, as an SQL condition on the watermark row `w` of the node that wrote
/// an event at `ts`: an online node's events are visible up to the cap, an offline node's only
/// up to its own watermark (what it wrote above may never have committed in order, and
/// recovery truncates it).
pub fn visible_on_node_sql(w: &str, ts: &str) -> String {
    format!("({w}.online or {ts} <= {w}.watermark_ts)")
}

#[derive(diesel::QueryableByName)]
struct Cap {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    cap: Option<i64>,
}

/// The visibility cap now (`None`: no node ever had a watermark).
pub async fn visibility_cap(conn: &mut AsyncPgConnection) -> Result<Option<i64>> {
    // Prepared: the notification listener asks after every batch of every node.
    static SQL: LazyLock<String> = LazyLock::new(|| format!("select {VISIBILITY_CAP_SQL} as cap"));
    let row: Cap =
        prepared(diesel::sql_query(SQL.as_str())).get_result(conn).await.during("reading the visibility cap")?;
    Ok(row.cap)
}

/// One row of `sequencer_watermarks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = w)]
pub struct Watermark {
    /// The sequencer node index.
    pub node_index: i32,
    /// Its watermark (µs).
    pub watermark_ts: i64,
    /// Whether it counts for the safe watermark.
    pub online: bool,
}

// Move the watermark and wake the listeners in one statement. The payload "<index>|<watermark>"
// lets them move their cap without reading the table.
const SAVE_SQL: &str = "
with moved as (
  update sequencer_watermarks set watermark_ts = $2
   where node_index = $1 and online and watermark_ts <= $2
  returning watermark_ts
),
woke as (select pg_notify('syncline_watermarks', $1::text || '|' || $2::text) from moved)
select moved.watermark_ts as cap from moved, woke";

/// Advance node `index`'s watermark to `ts`, only while it is marked online. Fails with
/// `MarkedOffline` when someone marked it offline (the writer must stop and recover) and with
/// `WatermarkChanged` when the row is gone or ahead of `ts` (another process on this index).
/// The writer moves its watermark with each batch instead (`events::append_covered`).
pub async fn save(conn: &mut AsyncPgConnection, index: u32, ts: i64) -> Result<()> {
    let updated: Option<Cap> = prepared(
        diesel::sql_query(SAVE_SQL)
            .bind::<diesel::sql_types::Integer, _>(index as i32)
            .bind::<diesel::sql_types::BigInt, _>(ts),
    )
    .get_result(conn)
    .await
    .optional()
    .during("saving the watermark")?;
    if updated.and_then(|c| c.cap) == Some(ts) {
        return Ok(());
    }
    Err(explain_not_moved(conn, index, ts).await?)
}

/// Why node `index`'s watermark could not be moved to `ts`: `MarkedOffline` when someone
/// marked it offline, `WatermarkChanged` when its row is gone or ahead of `ts`.
pub async fn explain_not_moved(conn: &mut AsyncPgConnection, index: u32, ts: i64) -> Result<StoreError> {
    Ok(match get(conn, index).await? {
        Some(row) if !row.online => StoreError::MarkedOffline { node_index: index },
        row => StoreError::WatermarkChanged { node_index: index, expected: ts, found: row.map(|r| r.watermark_ts) },
    })
}

/// The row of node `index`, if any.
pub async fn get(conn: &mut AsyncPgConnection, index: u32) -> Result<Option<Watermark>> {
    w::table
        .filter(w::node_index.eq(index as i32))
        .select(Watermark::as_select())
        .first(conn)
        .await
        .optional()
        .during("reading a watermark")
}

/// Every row, by node index.
pub async fn all(conn: &mut AsyncPgConnection) -> Result<Vec<Watermark>> {
    w::table.order(w::node_index).select(Watermark::as_select()).load(conn).await.during("reading watermarks")
}

/// The indexes of the nodes online now.
pub async fn online_indexes(conn: &mut AsyncPgConnection) -> Result<Vec<u32>> {
    let rows: Vec<i32> = w::table
        .filter(w::online)
        .select(w::node_index)
        .load(conn)
        .await
        .during("reading the online sequencer nodes")?;
    Ok(rows.into_iter().map(|i| i as u32).collect())
}

/// The safe watermark: minimum over online nodes; `None` when no node is online.
pub async fn safe(conn: &mut AsyncPgConnection) -> Result<Option<i64>> {
    w::table
        .filter(w::online)
        .select(diesel::dsl::min(w::watermark_ts))
        .get_result(conn)
        .await
        .during("reading the safe watermark")
}

/// Put node `index` online at `max(all watermarks, at)` and return that watermark.
///
/// The table is locked against every other writer of watermarks (SHARE ROW EXCLUSIVE
/// conflicts with the ROW EXCLUSIVE of `save`'s update and with itself) before the maximum
/// is read, so no larger watermark can commit between reading the maximum and writing ours.
/// Without it a concurrent `save` could let readers pass a timestamp this node then writes
/// below (SERIALIZABLE alone does not help: `save` runs READ COMMITTED). The caller must hold
/// the index lock and have truncated the index first (`recovery`).
pub async fn go_online(conn: &mut AsyncPgConnection, index: u32, at: i64) -> Result<i64> {
    retry_conflicts(conn, "going online", |conn| {
        async move {
            conn.transaction(async |c| {
                diesel::sql_query("lock table sequencer_watermarks in share row exclusive mode").execute(c).await?;
                let max = highest_in(c).await?;
                let at = max.map_or(at, |m| m.max(at));
                diesel::insert_into(w::table)
                    .values((w::node_index.eq(index as i32), w::watermark_ts.eq(at), w::online.eq(true)))
                    .on_conflict(w::node_index)
                    .do_update()
                    .set((w::watermark_ts.eq(at), w::online.eq(true)))
                    .execute(c)
                    .await?;
                // Readers re-read the cap: it may have moved (the row trigger only reports
                // changes of `online`).
                diesel::sql_query("select pg_notify('syncline_watermarks', $1::text)")
                    .bind::<diesel::sql_types::Integer, _>(index as i32)
                    .execute(c)
                    .await?;
                Ok::<_, diesel::result::Error>(at)
            })
            .await
            .during("going online")
        }
        .scope_boxed()
    })
    .await
}

/// The highest watermark of any node (online or not), if any node ever had one.
pub async fn highest(conn: &mut AsyncPgConnection) -> Result<Option<i64>> {
    highest_in(conn).await.during("reading the highest watermark")
}

async fn highest_in(conn: &mut AsyncPgConnection) -> Result<Option<i64>, diesel::result::Error> {
    w::table.select(diesel::dsl::max(w::watermark_ts)).get_result(conn).await
}

/// Mark node `index` offline (clean shutdown): readers stop waiting for it at once.
pub async fn go_offline(conn: &mut AsyncPgConnection, index: u32) -> Result<()> {
    diesel::update(w::table.filter(w::node_index.eq(index as i32)))
        .set(w::online.eq(false))
        .execute(conn)
        .await
        .during("going offline")?;
    Ok(())
}
