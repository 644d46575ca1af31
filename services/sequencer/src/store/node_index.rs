//! Sequencer node index allocation: each running sequencer owns one index in `0..N` under
//! an exclusive session advisory lock held on a dedicated connection for its lifetime. The
//! writer writes through that same session, so a process that lost the lock cannot write.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use rand::seq::SliceRandom;
use syncline_schema::tables::sequencer::sequencer_watermarks as w;

use super::error::{DieselContext, Result, StoreError};
use super::{offline, timestamps};
use syncline_coordination::db::{self, DbConfig, SessionKind};
use syncline_coordination::error::DbError;
use syncline_coordination::locks::{self, LockId, LockRole};

/// The advisory lock that owns sequencer node index `index` (one process per index).
pub fn index_lock(index: u32) -> LockId {
    LockId::new(LockRole::SequencerIndex, index as u16)
}

/// SQL condition, usable inside other queries, that is true while some session holds the
/// index lock of the row's `node_index` column (`w` alias).
pub fn index_held_sql() -> String {
    locks::held_sql(LockRole::SequencerIndex, "w.node_index")
}

/// Exclusive ownership of one sequencer node index; dropping it closes the session and so
/// releases the lock.
pub struct IndexLease {
    index: u32,
    total: u32,
    backend_pid: i32,
    conn: AsyncPgConnection,
}

/// Where a lease lived: its index and the backend of its session. A process that lost its
/// session (a timeout, a broken connection) passes it to [`acquire_after`], which ends that
/// session if the server still keeps it and takes the same index back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreviousLease {
    /// The index held.
    pub index: u32,
    /// The backend pid of the session that held it.
    pub backend_pid: i32,
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
    acquire_after(cfg, total, None).await
}

/// Like [`acquire`], for a process that held `previous` and lost track of its session: a
/// session the server still keeps (it has not noticed the client is gone) is terminated, so
/// its lock cannot keep the index — and the rows it left past the watermark — out of reach;
/// then that index is tried first, and truncated by the caller's recovery as usual.
pub async fn acquire_after(cfg: &DbConfig, total: u32, previous: Option<PreviousLease>) -> Result<IndexLease> {
    timestamps::validate(0, total)?;
    let mut conn = db::connect(cfg, SessionKind::Lock).await?;
    if let Some(p) = previous {
        end_lost_session(&mut conn, p).await?;
    }
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
    if let Some(p) = previous {
        if let Some(at) = candidates.iter().position(|i| *i == p.index) {
            candidates.swap(0, at);
        }
    }
    for index in candidates {
        if locks::try_lock(&mut conn, index_lock(index)).await? {
            // Checked under the index lock, so a concurrent node with another N sees ours.
            check_partitioning(&mut conn, total).await?;
            let backend_pid = locks::backend_pid(&mut conn).await?;
            tracing::info!(index, total, backend_pid, "acquired sequencer node index");
            return Ok(IndexLease { index, total, backend_pid, conn });
        }
    }
    Err(StoreError::AllIndexesInUse { total })
}

/// Terminate `p`'s session if it still holds `p.index`, and wait until its lock is gone.
async fn end_lost_session(conn: &mut AsyncPgConnection, p: PreviousLease) -> Result<()> {
    let id = index_lock(p.index);
    if locks::holder_pid(conn, id).await? != Some(p.backend_pid) {
        return Ok(());
    }
    tracing::warn!(
        index = p.index,
        backend_pid = p.backend_pid,
        "our previous session still holds the index; terminating it"
    );
    diesel::sql_query("select pg_terminate_backend($1)")
        .bind::<Integer, _>(p.backend_pid)
        .execute(conn)
        .await
        .during("terminating our previous session")?;
    let start = std::time::Instant::now();
    while locks::holder_pid(conn, id).await? == Some(p.backend_pid) {
        if start.elapsed() > std::time::Duration::from_secs(5) {
            return Err(
                DbError::Timeout { during: "ending our previous session".into(), after: start.elapsed() }.into()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Ok(())
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
    // Two statements: the select's fresh snapshot sees a row another node inserted while
    // our insert waited on it (one statement's snapshot would not).
    let q = format!(
        "select total_node_count, (select count(*) from pg_locks l where {others}) as others \
         from sequencer_partitioning for update",
        others = locks::others_held_sql(LockRole::SequencerIndex, 0, 31)
    );
    conn.transaction::<_, StoreError, _>(async |c| {
        diesel::sql_query("insert into sequencer_partitioning (total_node_count) values ($1) on conflict do nothing")
            .bind::<Integer, _>(total as i32)
            .execute(c)
            .await
            .during("recording total_node_count")?;
        let p: Partitioning = diesel::sql_query(q).get_result(c).await.during("checking total_node_count")?;
        if p.total_node_count as u32 == total {
            return Ok(());
        }
        if p.others > 0 {
            return Err(StoreError::InvalidConfig(format!(
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
        tracing::warn!(
            from = p.total_node_count,
            to = total,
            "changed the sequencers' total_node_count (no other sequencer runs)"
        );
        Ok(())
    })
    .await
}

impl IndexLease {
    /// The owned index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Index and session of this lease, for [`acquire_after`] should the session be lost.
    pub fn previous(&self) -> PreviousLease {
        PreviousLease { index: self.index, backend_pid: self.backend_pid }
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
        match locks::held_by_me(&mut self.conn, index_lock(self.index)).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(DbError::LockLost { what, reason: "not held by this session".into() }.into()),
            Err(e) => Err(DbError::LockLost { what, reason: e.to_string() }.into()),
        }
    }

    /// Release the index (after going offline on a clean shutdown).
    pub async fn release(mut self) -> Result<()> {
        locks::unlock(&mut self.conn, index_lock(self.index)).await?;
        Ok(())
    }
}
