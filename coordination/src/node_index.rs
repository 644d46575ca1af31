//! Sequencer node index allocation: each running sequencer owns one index in `0..N` under
//! an exclusive session advisory lock held on a dedicated connection for its lifetime. The
//! writer writes through that same session, so a process that lost the lock cannot write.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
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
            tracing::info!(index, total, "acquired sequencer node index");
            return Ok(IndexLease { index, total, conn });
        }
    }
    Err(CoordError::AllIndexesInUse { total })
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
