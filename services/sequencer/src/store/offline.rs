//! Offline detection: a sequencer node stops counting for the safe watermark when its
//! watermark is older than `offline_duration` (a stalled writer), or as soon as no session
//! holds its index lock any more (its process or connection died). The lock check is what
//! lets readers resume within one check interval after a crash, where Canton waits 8–13 s;
//! so the check runs often (the sequencer's `online_check_interval`, whose default, like that
//! of `offline_duration`, is in `SequencerSettings`): it is one cheap statement.

use std::time::Duration;

use diesel::sql_types::{BigInt, Integer};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::error::{DieselContext, Result};
use super::node_index::index_held_sql;

#[derive(QueryableByName)]
struct Index {
    #[diesel(sql_type = Integer)]
    node_index: i32,
}

/// Mark offline every online node whose watermark is at or below `now - offline_duration`
/// (`now` in µs, the checking node's clock) or whose index lock nobody holds. Returns the
/// indexes knocked offline.
pub async fn mark_offline(conn: &mut AsyncPgConnection, now: i64, offline_duration: Duration) -> Result<Vec<u32>> {
    let cutoff = now - offline_duration.as_micros() as i64;
    let q = format!(
        "update sequencer_watermarks w set online = false \
         where w.online and (w.watermark_ts <= $1 or not {held}) returning w.node_index",
        held = index_held_sql()
    );
    let rows: Vec<Index> =
        diesel::sql_query(q).bind::<BigInt, _>(cutoff).load(conn).await.during("marking lagging sequencers offline")?;
    Ok(report(rows, "knocked sequencer nodes offline"))
}

/// Mark offline only the online nodes whose index lock nobody holds.
pub async fn mark_lock_lost(conn: &mut AsyncPgConnection) -> Result<Vec<u32>> {
    let q = format!(
        "update sequencer_watermarks w set online = false where w.online and not {held} returning w.node_index",
        held = index_held_sql()
    );
    let rows: Vec<Index> = diesel::sql_query(q).load(conn).await.during("marking dead sequencers offline")?;
    Ok(report(rows, "knocked sequencer nodes without a lock holder offline"))
}

fn report(rows: Vec<Index>, msg: &str) -> Vec<u32> {
    let knocked: Vec<u32> = rows.into_iter().map(|r| r.node_index as u32).collect();
    if !knocked.is_empty() {
        tracing::warn!(?knocked, "{msg}");
    }
    knocked
}
