//! Sequencer node index allocation: each running sequencer owns one index in `0..N` under
//! an exclusive session advisory lock held on a dedicated connection for its lifetime. The
//! writer writes through that same session, so a process that lost the lock cannot write.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use rand::seq::SliceRandom;
use syncline_schema::tables::sequencer_watermarks as w;

use crate::db::{self, DbConfig, SessionKind};
use crate::error::{CoordError, DieselContext, Result};
use crate::locks::{self, LockId};
use crate::{offline, timestamps};

/// Exclusive ownership of one sequencer node index; dropping it closes the session and so
/// releases the lock.
pub struct IndexLease {
    index: u32,
    total: u32,
    conn: AsyncPgConnection,
}

impl std::fmt::Debug for IndexLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexLease").field("index", &self.index).field("total", &self.total).finish()
    }
}

/// Allocate a free index of `0..total`: one that is not online and whose lock is free,
/// picked at random among those to spread concurrent starts. Fails with the retryable
/// `AllIndexesInUse` when there is none.
pub async fn acquire(cfg: &DbConfig, total: u32) -> Result<IndexLease> {
    timestamps::validate(0, total)?;
    let mut conn = db::connect(cfg, SessionKind::Lock).await?;
    // Nodes whose session died still look online; free their indexes first.
    offline::mark_lock_lost(&mut conn).await?;
    let online: Vec<i32> = w::table
        .filter(w::online)
        .select(w::node_index)
        .load(&mut conn)
        .await
        .during("reading online sequencer nodes")?;
    let mut candidates: Vec<u32> = (0..total).filter(|i| !online.contains(&(*i as i32))).collect();
    candidates.shuffle(&mut rand::rng());
    for index in candidates {
        if locks::try_lock(&mut conn, LockId::sequencer_index(index)).await? {
            // Checked under the index lock, so a concurrent node with another N sees ours.
            check_partitioning(&mut conn, total).await?;
            tracing::info!(index, total, "acquired sequencer node index");
            return Ok(IndexLease { index, total, conn });
        }
    }
    Err(CoordError::AllIndexesInUse { total })
}

#[derive(QueryableByName)]
struct Partitioning {
    #[diesel(sql_type = Integer)]
    total_node_count: i32,
    #[diesel(sql_type = BigInt)]
    others: i64,
}

/// Record `total` as the database's total node count, or confirm it matches the recorded
/// one. A different count is refused while any other sequencer holds an index (their
/// timestamps would collide with ours); with none running it is changed.
async fn check_partitioning(conn: &mut AsyncPgConnection, total: u32) -> Result<()> {
    let q = format!(
        "with ins as (insert into sequencer_partitioning (total_node_count) values ($1) on conflict do nothing returning total_node_count) \
         select coalesce((select total_node_count from ins), (select total_node_count from sequencer_partitioning for update)) as total_node_count, \
           (select count(*) from pg_locks l where {others}) as others",
        others = locks::other_sequencer_index_locks_sql()
    );
    conn.transaction::<_, CoordError, _>(async |c| {
        let p: Partitioning = diesel::sql_query(q).bind::<Integer, _>(total as i32).get_result(c).await.during("checking total_node_count")?;
        if p.total_node_count as u32 == total {
            return Ok(());
        }
        if p.others > 0 {
            return Err(CoordError::InvalidConfig(format!(
                "total_node_count {total} differs from {} used by the {} sequencer(s) running on this database; \
                 use the same value on every sequencer (to change it, stop them all first)",
                p.total_node_count, p.others
            )));
        }
        diesel::sql_query("update sequencer_partitioning set total_node_count = $1")
            .bind::<Integer, _>(total as i32)
            .execute(c)
            .await
            .during("changing total_node_count")?;
        tracing::warn!(from = p.total_node_count, to = total, "changed the sequencers' total_node_count (no other sequencer runs)");
        Ok(())
    })
    .await
}

impl IndexLease {
    /// The owned index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The total node count the index was allocated under.
    pub fn total(&self) -> u32 {
        self.total
    }

    /// The session holding the lock: every write of this node's writer goes through it.
    pub fn conn(&mut self) -> &mut AsyncPgConnection {
        &mut self.conn
    }

    /// Confirm the lock is still held by this session (`LockLost` otherwise).
    pub async fn check(&mut self) -> Result<()> {
        let what = format!("of sequencer node index {}", self.index);
        match locks::held_by_me(&mut self.conn, LockId::sequencer_index(self.index)).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(CoordError::LockLost { what, reason: "not held by this session".into() }),
            Err(e) => Err(CoordError::LockLost { what, reason: e.to_string() }),
        }
    }

    /// Release the index (after going offline on a clean shutdown).
    pub async fn release(mut self) -> Result<()> {
        locks::unlock(&mut self.conn, LockId::sequencer_index(self.index)).await?;
        Ok(())
    }
}
