//! Learning of a peer's death within milliseconds: for every online peer, a dedicated session
//! waits on the peer's index lock (a blocking `pg_advisory_lock`, as passive replicas wait in
//! `leadership`). PostgreSQL releases the lock the moment it ends the dead peer's session, so
//! the wait returns at once; the watcher lets go of the lock and wakes the liveness check, which
//! knocks the peer offline, so readers resume without waiting for the next periodic check.
//!
//! Cost: one extra database session per online peer index on every node: with n processes of
//! l writer lanes, n·(n−1)·l sessions (12 for three sequencers of two lanes), each idle in a
//! lock wait.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use syncline_coordination::db::{self, DbConfig, SessionKind};
use syncline_coordination::locks;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::store::node_index::index_lock;

/// The watchers of one node, by peer index.
pub(crate) struct PeerWatch {
    db: DbConfig,
    wake: Arc<Notify>,
    cancel: CancellationToken,
    watching: HashMap<u32, (JoinHandle<()>, CancellationToken)>,
}

impl PeerWatch {
    /// Watchers that wake `wake` when a peer's lock is released; all end with `cancel`.
    pub(crate) fn new(db: DbConfig, wake: Arc<Notify>, cancel: CancellationToken) -> PeerWatch {
        PeerWatch { db, wake, cancel, watching: HashMap::new() }
    }

    /// Watch every index of `online` except `own` (this process's lanes: a lane learns of its
    /// own lost session at its next write) that is not watched yet (a watcher ends once
    /// its peer's lock was released, and is started again when the peer is back online);
    /// stop watching the others.
    pub(crate) fn update(&mut self, online: &[u32], own: &[u32]) {
        self.watching.retain(|i, (task, stop)| {
            let keep = !task.is_finished() && online.contains(i) && !own.contains(i);
            if !keep {
                stop.cancel();
            }
            keep
        });
        for &index in online {
            if own.contains(&index) || self.watching.contains_key(&index) {
                continue;
            }
            let stop = self.cancel.child_token();
            let span = tracing::debug_span!("peer_watch", peer = index);
            let task = tokio::spawn(watch(self.db.clone(), index, self.wake.clone(), stop.clone()).instrument(span));
            self.watching.insert(index, (task, stop));
        }
    }
}

/// Wait on peer `index`'s lock; once granted, release it and wake the liveness check.
async fn watch(db: DbConfig, index: u32, wake: Arc<Notify>, cancel: CancellationToken) {
    let lock = index_lock(index);
    let waited = async {
        // A lock session: a wait whose client went away (this task cancelled) ends with its
        // session (client_connection_check_interval) instead of taking the lock later.
        let mut conn = db::connect(&db, SessionKind::Lock).await?;
        locks::lock(&mut conn, lock).await?;
        locks::unlock(&mut conn, lock).await?;
        Ok::<_, syncline_coordination::DbError>(())
    };
    tokio::select! {
        _ = cancel.cancelled() => {}
        r = waited => match r {
            Ok(()) => {
                tracing::info!(peer = index, "a peer's index lock was released: checking liveness now");
                wake.notify_one();
            }
            Err(e) => {
                tracing::debug!(peer = index, error = %e, "watching a peer's index lock failed; retried later");
                // Not at once again: the periodic check restarts the watcher on its next tick.
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        },
    }
}
