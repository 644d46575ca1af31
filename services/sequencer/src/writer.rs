//! The writer: one task per lane (see `lanes`) that owns a node index, assigns partitioned timestamps,
//! commits batches of sends as large as the backlog allows (group commit) through the
//! session holding the index lock, with the watermark that covers each batch in the same
//! statement (prepared once per lock session), and only then answers each
//! send: OK with its timestamp means committed and covered. Sends of a batch that could not
//! be confirmed are kept and retried after recovery; message-id claims make the retry
//! idempotent, so nothing accepted is lost or sequenced twice.
//!
//! A send whose (sender, message id) is already claimed is answered from that claim once
//! the claim is covered by its node's watermark (OK with the claim's timestamp, or
//! ALREADY_EXISTS for other content). An uncovered claim proves nothing — its node may be
//! dead and its tail about to be truncated — so such a send stays pending and is tried again
//! until the claim is covered or gone.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::store;
use crate::store::error::StoreError;
use crate::store::events::{self, ErrorCode, EventError, EventKind, ExistingClaim, MessageIdClaim, NewEvent};
use crate::store::node_index::{self, IndexLease};
use crate::store::timestamps::TimestampGenerator;
use crate::store::{recovery, watermarks};
use syncline_coordination::db::{self, SessionKind};
use syncline_coordination::{DbConfig, DbError};
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::SequencerError;
use crate::lanes::{LaneState, Lanes};
use crate::settings::SequencerSettings;

/// The writer's answer to one send: its timestamp, or why not.
pub(crate) type SendResult = Result<i64, SequencerError>;

/// A send accepted into the queue.
#[derive(Debug)]
pub(crate) struct Submission {
    pub sender: i32,
    /// The sender's name, for error messages.
    pub sender_name: String,
    pub message_id: String,
    pub max_sequencing_ts: i64,
    /// Sender and every recipient, as member ids.
    pub recipients: Vec<i32>,
    /// Recipient names that are not registered: the sender gets an error event instead.
    pub unknown: Vec<String>,
    /// The encoded `Batch`.
    pub payload: Vec<u8>,
    /// Digest of the payload, stored with the message-id claim.
    pub digest: Vec<u8>,
    pub accepted_at: Instant,
    /// Where the outcome goes; taken once answered (a send may be answered "unknown" and
    /// still be sequenced later, which a resend then learns from its claim).
    pub reply: Option<oneshot::Sender<SendResult>>,
}

impl Submission {
    fn answer(&mut self, result: SendResult) {
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(result); // the client may have gone away
        }
    }
}

struct Writer {
    db: DbConfig,
    settings: SequencerSettings,
    /// This lane's state.
    shared: Arc<LaneState>,
    /// What the lanes of this process share (the send queue among them).
    lanes: Arc<Lanes>,
    /// The highest watermark covering a batch of any lane, followed.
    batches: watch::Receiver<i64>,
    /// Sends whose outcome is not known yet (a failed write, or a claim not covered yet);
    /// retried with the next batch. Held by this lane until then: its claims may be committed
    /// on this lane's index, not yet covered.
    carry: Vec<Submission>,
    /// The lease this lane held last, to end its session if the server still keeps it.
    previous: Option<node_index::PreviousLease>,
    /// Metric labels: node name and lane.
    labels: [(&'static str, String); 2],
}

/// Run writer lane `lane` until `cancel`; then write what it holds and what is queued, go
/// offline and release its index.
pub(crate) async fn run(
    db: DbConfig,
    settings: SequencerSettings,
    lanes: Arc<Lanes>,
    lane: u32,
    cancel: CancellationToken,
) {
    let span = tracing::info_span!("writer", node = %settings.name, lane);
    let shared = lanes.node.lanes()[lane as usize].clone();
    let labels = [("node", settings.name.clone()), ("lane", lane.to_string())];
    let batches = lanes.watch_batches();
    let mut w = Writer { db, settings, shared, lanes, batches, carry: Vec::new(), previous: None, labels };
    w.run(cancel).instrument(span).await;
    // The last lane out answers what nobody took from the queue.
    if w.lanes.running_tasks.fetch_sub(1, Ordering::AcqRel) == 1 {
        w.give_up_queue("the node stopped before it could sequence this send").await;
    }
}

enum Outcome {
    /// Keep writing on this lease.
    Continue,
    /// Drop the lease and start over.
    Rejoin,
    /// Shut down.
    Stop,
}

/// How one send of a written batch ended.
enum Resolution {
    /// Answered (OK with a timestamp, or a final error).
    Done(SendResult),
    /// Not known yet: try again with the next batch.
    Pending,
}

impl Writer {
    async fn run(&mut self, cancel: CancellationToken) {
        while !cancel.is_cancelled() {
            let Some((mut lease, mut gen)) = self.join(&cancel).await else { break };
            loop {
                match self.step(&mut lease, &mut gen, &cancel).await {
                    Outcome::Continue => {}
                    Outcome::Rejoin => break,
                    Outcome::Stop => {
                        self.stop(lease, &mut gen).await;
                        return;
                    }
                }
            }
            // Closing the session releases the index; `join` backs off if the database is down.
            drop(lease);
        }
        // Cancelled while not online: nothing more can be written by this lane; lanes still
        // online write what is queued, the last lane out answers what is left.
        self.shared.set_down("stopped");
        self.lanes.queue.lock().await.close();
        let reason = "the node stopped before it could sequence this send";
        self.give_up(reason);
    }

    /// Answer every send this lane holds with "outcome unknown".
    fn give_up(&mut self, reason: &str) {
        let rest = std::mem::take(&mut self.carry);
        self.answer_unknown(rest, reason);
    }

    /// Answer every send still queued with "outcome unknown" (no lane writes any more).
    async fn give_up_queue(&mut self, reason: &str) {
        let mut rest = Vec::new();
        let mut queue = self.lanes.queue.lock().await;
        queue.close();
        while let Ok(s) = queue.try_recv() {
            rest.push(s);
        }
        drop(queue);
        self.answer_unknown(rest, reason);
    }

    fn answer_unknown(&self, rest: Vec<Submission>, reason: &str) {
        if !rest.is_empty() {
            tracing::warn!(unanswered = rest.len(), "{reason}");
        }
        for mut sub in rest {
            let e = self.unknown(&sub, reason);
            sub.answer(Err(e));
        }
    }

    fn unknown(&self, sub: &Submission, reason: &str) -> SequencerError {
        SequencerError::OutcomeUnknown {
            node: self.settings.name.clone(),
            message_id: sub.message_id.clone(),
            reason: reason.to_string(),
        }
    }

    /// Answer "outcome unknown" to held sends that waited longer than a write may take, so
    /// that clients do not hang while the database is away (or another node's claim stays
    /// unconfirmed); they stay held and are still sequenced (once) when that resolves.
    /// `drain` also takes the queued sends, which nobody writes while the node is down.
    /// The queue is drained only while no lane of the node runs: otherwise it is theirs.
    fn answer_overdue(&mut self, drain: bool) {
        if drain && !self.lanes.node.is_running() {
            if let Ok(mut queue) = self.lanes.queue.try_lock() {
                while let Ok(s) = queue.try_recv() {
                    self.carry.push(s);
                }
            }
        }
        let after = self.settings.write_timeout;
        let reason = if self.shared.is_running() {
            format!("not confirmed within {after:?}: another node's claim on this message id is not confirmed yet")
        } else {
            format!("not confirmed within {after:?}: {}", self.shared.detail())
        };
        let node = self.settings.name.clone();
        for sub in self.carry.iter_mut().filter(|s| s.reply.is_some() && s.accepted_at.elapsed() >= after) {
            let e = SequencerError::OutcomeUnknown {
                node: node.clone(),
                message_id: sub.message_id.clone(),
                reason: reason.clone(),
            };
            sub.answer(Err(e));
        }
    }

    /// Acquire an index, truncate it past its watermark and go online (retried until it
    /// works or we are cancelled).
    async fn join(&mut self, cancel: &CancellationToken) -> Option<(IndexLease, TimestampGenerator)> {
        let mut backoff = Duration::from_millis(20);
        loop {
            if cancel.is_cancelled() {
                return None;
            }
            let attempt = tokio::select! {
                biased;
                _ = cancel.cancelled() => return None,
                r = self.try_join(cancel) => r,
            };
            match attempt {
                Ok(joined) => return Some(joined),
                Err(e) => {
                    self.shared.set_down(format!("joining: {e}"));
                    if !e.is_retryable() {
                        tracing::error!(%e, "cannot go online until this is fixed; retrying");
                    } else if backoff >= Duration::from_millis(500) {
                        tracing::warn!(%e, "cannot go online yet; retrying");
                    }
                }
            }
            self.answer_overdue(true);
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    async fn try_join(&mut self, cancel: &CancellationToken) -> Result<(IndexLease, TimestampGenerator), StoreError> {
        let t = self.settings.write_timeout;
        {
            // Once per process: the lanes go online together.
            let mut migrated = self.lanes.migrated.lock().await;
            if !*migrated {
                timeout(t * 6, syncline_coordination::db::migrate(&self.db)).await?;
                *migrated = true;
            }
        }
        let mut lease =
            timeout(t, node_index::acquire_after(&self.db, self.settings.total_node_count, self.previous)).await?;
        self.previous = Some(lease.previous());
        timeout(t, check_commit_mode(lease.conn(), self.settings.allow_unsafe_commit)).await?;
        // Free dead nodes' uncovered claims early, so that sends colliding with them are not
        // held until the periodic sweep. Done on a connection of its own: a sweep cut short
        // by the timeout must not leave the lock session inside a transaction.
        if let Err(e) = timeout(t, sweep_dead(&self.db, t)).await {
            tracing::warn!(%e, "could not sweep dead nodes' rows; continuing");
        }
        self.wait_for_clock(lease.conn(), cancel).await?;
        let mut gen =
            TimestampGenerator::with_clock(lease.index(), self.settings.total_node_count, node_clock(&self.settings))?;
        self.rejoin(&mut lease, &mut gen).await?;
        Ok((lease, gen))
    }

    /// A node whose clock is behind the highest watermark waits (bounded) for its clock to
    /// get there, rather than going online with timestamps ahead of its own clock: those
    /// would hold the safe watermark, and so every reader, back until its clock caught up.
    async fn wait_for_clock(
        &self,
        conn: &mut diesel_async::AsyncPgConnection,
        cancel: &CancellationToken,
    ) -> Result<(), StoreError> {
        let highest = timeout(self.settings.write_timeout, watermarks::highest(conn)).await?;
        let Some(highest) = highest else { return Ok(()) };
        let behind = highest - self.settings.now();
        if behind <= 0 {
            return Ok(());
        }
        let behind = Duration::from_micros(behind as u64);
        let wait = behind.min(self.settings.max_clock_wait);
        tracing::warn!(
            behind_ms = behind.as_millis() as u64,
            wait_ms = wait.as_millis() as u64,
            "this node's clock is behind the highest sequencer watermark; waiting before going online"
        );
        self.shared.set_down(format!("waiting {} ms for the clock to reach the highest watermark", wait.as_millis()));
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        if behind > wait {
            tracing::error!(behind_ms = behind.as_millis() as u64,
                "clock still behind the highest watermark after max_clock_wait; going online ahead of it (check NTP on this host)");
        }
        Ok(())
    }

    /// Truncate past the watermark and go online on the lease we hold.
    async fn rejoin(&mut self, lease: &mut IndexLease, gen: &mut TimestampGenerator) -> Result<(), StoreError> {
        let t = self.settings.write_timeout;
        let index = lease.index();
        // One bound for the whole sequence: a timeout leaves the session mid-way, and the
        // caller gives the lease up on any error.
        let (truncated, online_at) = timeout(t * 2, store::join(lease.conn(), index, self.settings.now(), gen)).await?;
        self.shared.set_up(index, online_at);
        metrics::gauge!("syncline_sequencer_node_index", &self.labels).set(index as f64);
        tracing::info!(index, online_at, removed_events = truncated.events, "online");
        Ok(())
    }

    async fn step(
        &mut self,
        lease: &mut IndexLease,
        gen: &mut TimestampGenerator,
        cancel: &CancellationToken,
    ) -> Outcome {
        let mut batch = std::mem::take(&mut self.carry);
        // Held sends are retried with the next batch; the wait for news bounds how often.
        match self.collect(cancel, batch.len()).await {
            Some(more) => batch.extend(more),
            None => {
                self.carry = batch;
                return Outcome::Stop;
            }
        }
        match timeout(self.settings.write_timeout, self.write(lease, gen, &mut batch)).await {
            Ok(()) => {
                self.carry = batch; // what is still pending
                if !self.carry.is_empty() {
                    self.answer_overdue(false);
                }
                Outcome::Continue
            }
            Err(StoreError::MarkedOffline { .. }) => {
                tracing::warn!("marked offline by another node; recovering in place");
                self.shared.set_down("marked offline; recovering");
                self.carry = batch;
                self.answer_overdue(false);
                match self.rejoin(lease, gen).await {
                    Ok(()) => Outcome::Continue,
                    Err(e) => {
                        tracing::warn!(%e, "recovery failed; rejoining");
                        Outcome::Rejoin
                    }
                }
            }
            Err(e) => {
                // The lock session may be anywhere (even inside a transaction): give it up.
                tracing::warn!(%e, pending = batch.len(), "write failed; rejoining");
                self.shared.set_down(format!("write failed: {e}"));
                self.carry = batch;
                // Writes may keep failing while rejoining works: held sends still get their
                // "outcome unknown" answer after `write_timeout`.
                self.answer_overdue(false);
                Outcome::Rejoin
            }
        }
    }

    /// Wait up to a keep-alive interval for a first send, then take whatever else is queued
    /// (up to a batch with the `held` sends already taken). Returns early, with what is
    /// queued (possibly nothing: a keep-alive), when a sibling lane committed a batch above
    /// this lane's watermark: readers stop at the lowest watermark, so this lane moves past
    /// it at once. `None` once cancelled (or the queue closed).
    async fn collect(&mut self, cancel: &CancellationToken, held: usize) -> Option<Vec<Submission>> {
        let room = self.settings.max_batch_size.saturating_sub(held).max(1);
        let mine = self.shared.last_watermark();
        let (lanes, batches) = (&self.lanes, &mut self.batches);
        // The queue lock is held only while waiting for a first send and taking the rest.
        let from_queue = async {
            let mut queue = lanes.queue.lock().await;
            let first = queue.recv().await?;
            let mut batch = vec![first];
            while batch.len() < room {
                match queue.try_recv() {
                    Ok(s) => batch.push(s),
                    Err(_) => break,
                }
            }
            Some(batch)
        };
        let sibling_ahead = batches.wait_for(|&w| w > mine);
        let taken = tokio::select! {
            biased;
            _ = cancel.cancelled() => None,
            taken = tokio::time::timeout(self.settings.keep_alive_interval, from_queue) => match taken {
                Ok(Some(batch)) => Some(batch),
                Ok(None) => None,
                Err(_) => Some(Vec::new()), // idle: a keep-alive (and a retry of held sends)
            },
            _ = sibling_ahead => {
                // Take what is queued without waiting for a lane that holds the queue.
                let mut batch = Vec::new();
                if let Ok(mut queue) = self.lanes.queue.try_lock() {
                    while batch.len() < room {
                        match queue.try_recv() {
                            Ok(s) => batch.push(s),
                            Err(_) => break,
                        }
                    }
                }
                Some(batch)
            }
        };
        // Also when idle: the API's figure, set as sends arrive, may be stale.
        // (A handle is not kept: one taken before a recorder is installed stays a no-op.)
        metrics::gauge!("syncline_sequencer_queue_depth", "node" => self.settings.name.clone())
            .set(self.lanes.queue_depth() as f64);
        taken
    }

    /// Commit `batch` (possibly empty: a keep-alive) and the watermark covering it, then
    /// answer every send whose outcome is known and leave in `batch` those still pending.
    /// On error nothing was answered and `batch` is unchanged.
    async fn write(
        &self,
        lease: &mut IndexLease,
        gen: &mut TimestampGenerator,
        batch: &mut Vec<Submission>,
    ) -> Result<(), StoreError> {
        let index = lease.index();
        // Above every batch a sibling lane committed: this lane's watermark then passes them.
        gen.ensure_after(self.lanes.batch_watermark());
        let mut events = Vec::with_capacity(batch.len());
        // Per send: the timestamp it was tried at, and whether it was late.
        let mut tried = Vec::with_capacity(batch.len());
        for sub in batch.iter() {
            let ts = gen.generate();
            let late = ts > sub.max_sequencing_ts;
            if !late {
                events.push(to_event(ts, sub));
            }
            tried.push((ts, late));
        }
        if batch.is_empty() {
            gen.generate(); // a fresh timestamp for the keep-alive watermark
        }
        // The batch and the watermark that covers it, in one statement and one commit.
        let watermark = gen.last();
        let (appended, covered) = events::append_covered(lease.conn(), index, &events, watermark).await?;
        if !covered {
            // Committed but not covered: recovery truncates it; nothing was answered.
            return Err(watermarks::explain_not_moved(lease.conn(), index, watermark).await?);
        }
        let conflicts = appended.conflicts;
        // Crash window: the batch is committed and covered, no send is answered yet.
        fail::fail_point!("sequencer-writer-after-commit", |_| {
            Err(DbError::from_connection("answering the sends", "failpoint").into())
        });
        self.shared.wrote(watermark);
        if !appended.written.is_empty() {
            self.lanes.batch_committed(watermark);
        }

        // Everything written is now covered. Sends that hit a claim, and late ones (a resend
        // of a send sequenced before), are answered from the claims as they stand now.
        let unresolved: Vec<usize> =
            (0..batch.len()).filter(|&i| tried[i].1 || conflicts.binary_search(&tried[i].0).is_ok()).collect();
        // For late sends the safe watermark is read before the claims: once it has passed a
        // send's max-sequencing-time no node can still commit an attempt at or below it (every
        // online node writes above its watermark, a node going online starts above all of
        // them, an offline node's tail is truncated), so a claim not covered by then never will be.
        let safe = if unresolved.iter().any(|&i| tried[i].1) {
            watermarks::safe(lease.conn()).await.unwrap_or_else(|e| {
                tracing::warn!(%e, "could not read the safe watermark; late sends stay pending");
                None
            })
        } else {
            None
        };
        let found = if unresolved.is_empty() {
            Ok(Vec::new())
        } else {
            let keys: Vec<(i32, &str)> =
                unresolved.iter().map(|&i| (batch[i].sender, batch[i].message_id.as_str())).collect();
            events::claims(lease.conn(), &keys).await
        };
        let found = found.unwrap_or_else(|e| {
            tracing::warn!(%e, "could not read message-id claims; those sends stay pending");
            Vec::new()
        });
        let mut stats = Stats::default();
        let mut still_pending = Vec::new();
        for (i, mut sub) in std::mem::take(batch).into_iter().enumerate() {
            let (ts, late) = tried[i];
            let resolution = if !late && conflicts.binary_search(&ts).is_err() {
                stats.written += 1;
                Resolution::Done(Ok(ts))
            } else {
                let claim = found.iter().find(|c| c.sender == sub.sender && c.message_id == sub.message_id);
                self.resolve(&sub, claim, late.then_some(safe), &mut stats)
            };
            match resolution {
                Resolution::Done(result) => {
                    metrics::histogram!("syncline_sequencer_write_latency_seconds", &self.labels)
                        .record(sub.accepted_at.elapsed().as_secs_f64());
                    sub.answer(result);
                }
                Resolution::Pending => still_pending.push(sub),
            }
        }
        *batch = still_pending;
        stats.publish(&self.labels, tried.len());
        metrics::gauge!("syncline_sequencer_watermark_delay_seconds", &self.labels)
            .set((self.settings.now() - watermark) as f64 / 1e6);
        Ok(())
    }

    /// The outcome of a send that was not written: from the claim on its message id. `late`
    /// carries the safe watermark read before the claims when the send's max-sequencing-time
    /// has passed.
    fn resolve(
        &self,
        sub: &Submission,
        claim: Option<&ExistingClaim>,
        late: Option<Option<i64>>,
        stats: &mut Stats,
    ) -> Resolution {
        match (claim, late) {
            (Some(c), _) if c.covered => {
                if c.digest.as_ref().is_none_or(|d| *d == sub.digest) {
                    stats.resent += 1;
                    Resolution::Done(Ok(c.ts))
                } else {
                    stats.refused += 1;
                    Resolution::Done(Err(SequencerError::AlreadyExists {
                        sender: sub.sender_name.clone(),
                        message_id: sub.message_id.clone(),
                        ts: c.ts,
                    }))
                }
            }
            // Past its deadline, and everything at or below the deadline is settled: no claim
            // covered now will ever be.
            (_, Some(Some(safe))) if safe >= sub.max_sequencing_ts => {
                stats.late += 1;
                tracing::debug!(sender = sub.sender, message_id = %sub.message_id, mst = sub.max_sequencing_ts, "max sequencing time exceeded; dropped");
                Resolution::Done(Err(SequencerError::NotSequenced {
                    message_id: sub.message_id.clone(),
                    mst: sub.max_sequencing_ts,
                }))
            }
            // Unclaimed, or claimed by an event its node has not covered (it may yet be, or be
            // truncated with a dead node's tail), or late while another node may still commit
            // an attempt within the deadline: not known yet.
            _ => {
                stats.pending += 1;
                Resolution::Pending
            }
        }
    }

    /// Clean shutdown: refuse new sends, write what is held and queued, answer what could not
    /// be written, remove our uncovered tail, go offline, release the index.
    async fn stop(&mut self, mut lease: IndexLease, gen: &mut TimestampGenerator) {
        self.shared.set_down("shutting down");
        let mut rest = std::mem::take(&mut self.carry);
        {
            // Every lane online takes what it can of the closed queue.
            let mut queue = self.lanes.queue.lock().await;
            queue.close();
            while let Ok(s) = queue.try_recv() {
                rest.push(s);
            }
        }
        let chunk_size = self.settings.max_batch_size.max(1);
        let mut failed = None;
        while !rest.is_empty() {
            let mut chunk: Vec<Submission> = rest.drain(..rest.len().min(chunk_size)).collect();
            match timeout(self.settings.write_timeout, self.write(&mut lease, gen, &mut chunk)).await {
                // Sends still pending on another node's claim: that node's fate decides.
                Ok(()) => self.carry.extend(chunk),
                Err(e) => {
                    self.carry.extend(chunk);
                    failed = Some(e);
                    break;
                }
            }
        }
        self.carry.extend(rest);
        if let Some(e) = &failed {
            tracing::warn!(%e, "could not write every held send while shutting down");
        }
        self.give_up("the node shut down before it could confirm this send");
        if failed.is_none() {
            // Truncate marks the index offline and removes anything it wrote past the
            // watermark, so nobody else has to wait for a sweep to free those claims.
            let index = lease.index();
            match timeout(self.settings.write_timeout, recovery::truncate(lease.conn(), index)).await {
                Ok(_) => {
                    tracing::info!(index, "offline");
                    let _ = tokio::time::timeout(self.settings.write_timeout, lease.release()).await;
                }
                // Dropping the lease closes its session, which releases the index.
                Err(e) => tracing::warn!(%e, "could not go offline cleanly; others will notice the released lock"),
            }
        }
        self.shared.set_down("stopped");
    }
}

/// Counts of one written batch, for the metrics.
#[derive(Default)]
struct Stats {
    written: u64,
    resent: u64,
    refused: u64,
    late: u64,
    pending: u64,
}

impl Stats {
    /// `labels`: node and lane. Drops and held sends are counted per node.
    fn publish(&self, labels: &[(&'static str, String); 2], batch: usize) {
        if batch == 0 {
            return;
        }
        metrics::counter!("syncline_sequencer_events_written_total", labels).increment(self.written);
        metrics::histogram!("syncline_sequencer_batch_size", labels).record(batch as f64);
        let node = labels[0].1.clone();
        for (reason, n) in
            [("duplicate", self.resent), ("message_id_reused", self.refused), ("max_sequencing_time", self.late)]
        {
            if n > 0 {
                metrics::counter!("syncline_sequencer_dropped_total", "node" => node.clone(), "reason" => reason)
                    .increment(n);
            }
        }
        if self.pending > 0 {
            metrics::counter!("syncline_sequencer_sends_held_total", "node" => node).increment(self.pending);
        }
    }
}

/// Refuse a database that acknowledges commits before they are durable: after a crash it
/// would forget events that readers have already been given.
async fn check_commit_mode(conn: &mut diesel_async::AsyncPgConnection, allow_unsafe: bool) -> Result<(), StoreError> {
    let value = db::setting(conn, "synchronous_commit").await?;
    if value == "off" && !allow_unsafe {
        return Err(StoreError::InvalidConfig(
            "the database runs with synchronous_commit = off, which can lose committed events (already delivered to \
             subscribers) when PostgreSQL crashes; set synchronous_commit = on for the sequencer's database or role \
             (ALTER DATABASE … SET synchronous_commit = on), or set allow_unsafe_commit = true on a throwaway test database"
                .into(),
        ));
    }
    if value == "off" {
        tracing::warn!(
            "synchronous_commit is off: a PostgreSQL crash can lose delivered events (allowed by allow_unsafe_commit)"
        );
    }
    Ok(())
}

/// Sweep dead nodes' tails on a session of its own (dropped afterwards, whatever happened).
/// The server bounds its statements too: a backend left waiting on a row lock after we gave
/// up would hold a table lock that keeps every node from going online.
async fn sweep_dead(cfg: &DbConfig, within: Duration) -> Result<(), StoreError> {
    let mut cfg = cfg.clone();
    cfg.statement_timeout = within;
    let mut conn = db::connect(&cfg, SessionKind::Pooled).await?;
    recovery::sweep_dead(&mut conn).await?;
    Ok(())
}

/// This node's clock for its timestamp generator.
fn node_clock(settings: &SequencerSettings) -> impl Fn() -> i64 + Send + Sync + 'static {
    let offset = settings.clock_offset_micros;
    move || crate::store::timestamps::now_micros() + offset
}

fn to_event(ts: i64, sub: &Submission) -> NewEvent {
    let claim = Some(MessageIdClaim {
        sender: sub.sender,
        message_id: sub.message_id.clone(),
        max_sequencing_ts: sub.max_sequencing_ts,
        digest: sub.digest.clone(),
    });
    if sub.unknown.is_empty() {
        NewEvent {
            ts,
            kind: EventKind::Deliver,
            message_id: Some(sub.message_id.clone()),
            sender: Some(sub.sender),
            recipients: sub.recipients.clone(),
            payload: Some(sub.payload.clone()),
            error: None,
            claim,
        }
    } else {
        NewEvent {
            ts,
            kind: EventKind::Error,
            message_id: Some(sub.message_id.clone()),
            sender: Some(sub.sender),
            recipients: vec![sub.sender],
            payload: None,
            error: Some(EventError { code: ErrorCode::UnknownRecipients, message: sub.unknown.join(", ") }),
            claim,
        }
    }
}

/// Bound a database call: a blackholed connection must not hang the writer.
async fn timeout<T, E: From<DbError>>(
    after: Duration,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    tokio::time::timeout(after, f)
        .await
        .unwrap_or_else(|_| Err(DbError::Timeout { during: "writing to the database".into(), after }.into()))
}
