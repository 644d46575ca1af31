//! The writer: one task per process that owns a node index, assigns partitioned timestamps,
//! commits batches of sends as large as the backlog allows (group commit) through the
//! session holding the index lock, then advances the watermark. Sends of a batch that could
//! not be confirmed are kept and retried after recovery; message-id claims make the retry
//! idempotent, so nothing accepted is lost or sequenced twice.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use syncline_coordination::events::{self, EventKind, MessageIdClaim, NewEvent};
use syncline_coordination::node_index::{self, IndexLease};
use syncline_coordination::timestamps::{now_micros, TimestampGenerator};
use syncline_coordination::{recovery, watermarks, CoordError, DbConfig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::settings::SequencerSettings;

/// A send accepted into the queue.
#[derive(Clone, Debug)]
pub(crate) struct Submission {
    pub sender: i32,
    pub message_id: String,
    pub max_sequencing_ts: i64,
    /// Sender and every recipient, as member ids.
    pub recipients: Vec<i32>,
    /// Recipient names that are not registered: the sender gets an error event instead.
    pub unknown: Vec<String>,
    /// The encoded `Batch`.
    pub payload: Vec<u8>,
    pub accepted_at: Instant,
}

/// What the writer is doing, shared with the API and health checks.
#[derive(Debug)]
pub struct WriterShared {
    running: AtomicBool,
    node_index: AtomicI64,
    last_watermark: AtomicI64,
    /// Milliseconds since `epoch` of the last confirmed watermark write.
    last_write_ms: AtomicU64,
    epoch: Instant,
    detail: Mutex<String>,
}

impl WriterShared {
    pub(crate) fn new() -> Self {
        WriterShared {
            running: AtomicBool::new(false),
            node_index: AtomicI64::new(-1),
            last_watermark: AtomicI64::new(0),
            last_write_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            detail: Mutex::new("starting".into()),
        }
    }

    /// True while the writer is online and accepting sends.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// The owned node index, if any.
    pub fn node_index(&self) -> Option<u32> {
        u32::try_from(self.node_index.load(Ordering::Acquire)).ok()
    }

    /// The last watermark this node wrote (µs).
    pub fn last_watermark(&self) -> i64 {
        self.last_watermark.load(Ordering::Acquire)
    }

    /// Time since the last confirmed watermark write.
    pub fn since_last_write(&self) -> Duration {
        let at = Duration::from_millis(self.last_write_ms.load(Ordering::Acquire));
        self.epoch.elapsed().saturating_sub(at)
    }

    /// Why the writer is not running (or "running").
    pub fn detail(&self) -> String {
        self.detail.lock().unwrap().clone()
    }

    fn set_down(&self, detail: impl Into<String>) {
        self.running.store(false, Ordering::Release);
        *self.detail.lock().unwrap() = detail.into();
    }

    fn set_up(&self, index: u32, watermark: i64) {
        self.node_index.store(index.into(), Ordering::Release);
        self.wrote(watermark);
        *self.detail.lock().unwrap() = "running".into();
        self.running.store(true, Ordering::Release);
    }

    fn wrote(&self, watermark: i64) {
        self.last_watermark.store(watermark, Ordering::Release);
        self.last_write_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Release);
    }
}

struct Writer {
    db: DbConfig,
    settings: SequencerSettings,
    shared: Arc<WriterShared>,
    rx: mpsc::Receiver<Submission>,
    /// Sends whose outcome was not confirmed; retried first.
    carry: Vec<Submission>,
    /// Whether this process has applied the schema migrations.
    migrated: bool,
    /// The lease this process held last, to end its session if the server still keeps it.
    previous: Option<node_index::PreviousLease>,
}

/// Run the writer until `cancel`; then write what is queued, go offline and release the index.
pub(crate) async fn run(
    db: DbConfig,
    settings: SequencerSettings,
    shared: Arc<WriterShared>,
    rx: mpsc::Receiver<Submission>,
    cancel: CancellationToken,
) {
    let span = tracing::info_span!("writer", node = %settings.name);
    let mut w = Writer { db, settings, shared, rx, carry: Vec::new(), migrated: false, previous: None };
    w.run(cancel).instrument(span).await
}

enum Outcome {
    /// Keep writing on this lease.
    Continue,
    /// Drop the lease and start over.
    Rejoin,
    /// Shut down.
    Stop,
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
        self.shared.set_down("stopped");
    }

    /// Acquire an index, truncate it past its watermark and go online (retried until it
    /// works or we are cancelled).
    async fn join(&mut self, cancel: &CancellationToken) -> Option<(IndexLease, TimestampGenerator)> {
        let mut backoff = Duration::from_millis(20);
        loop {
            if cancel.is_cancelled() {
                return None;
            }
            match self.try_join().await {
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
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    async fn try_join(&mut self) -> Result<(IndexLease, TimestampGenerator), CoordError> {
        let t = self.settings.write_timeout;
        if !self.migrated {
            timeout(t * 6, syncline_coordination::db::migrate(&self.db)).await?;
            self.migrated = true;
        }
        let mut lease = timeout(t, node_index::acquire_after(&self.db, self.settings.total_node_count, self.previous)).await?;
        self.previous = Some(lease.previous());
        let index = lease.index();
        // If this node's previous session died mid-write on another index, the sends it
        // carries may hold claims there; free them before sequencing the carry here.
        if let Err(e) = timeout(t, recovery::sweep_dead(lease.conn())).await {
            tracing::warn!(%e, "could not sweep dead nodes' rows; continuing");
        }
        let mut gen = TimestampGenerator::new(index, self.settings.total_node_count)?;
        self.rejoin(&mut lease, &mut gen).await?;
        Ok((lease, gen))
    }

    /// Truncate past the watermark and go online on the lease we hold.
    async fn rejoin(&mut self, lease: &mut IndexLease, gen: &mut TimestampGenerator) -> Result<(), CoordError> {
        let t = self.settings.write_timeout;
        let index = lease.index();
        let truncated = timeout(t, recovery::truncate(lease.conn(), index)).await?;
        let online_at = timeout(t, watermarks::go_online(lease.conn(), index, now_micros())).await?;
        gen.ensure_after(online_at);
        self.shared.set_up(index, online_at);
        metrics::gauge!("syncline_sequencer_node_index", "node" => self.settings.name.clone()).set(index as f64);
        tracing::info!(index, online_at, removed_events = truncated.events, "online");
        Ok(())
    }

    async fn step(&mut self, lease: &mut IndexLease, gen: &mut TimestampGenerator, cancel: &CancellationToken) -> Outcome {
        let batch = if self.carry.is_empty() {
            match self.collect(cancel).await {
                Some(b) => b,
                None => return Outcome::Stop,
            }
        } else {
            std::mem::take(&mut self.carry)
        };
        match timeout(self.settings.write_timeout, self.write(lease, gen, &batch)).await {
            Ok(()) => Outcome::Continue,
            Err(CoordError::MarkedOffline { .. }) => {
                tracing::warn!("marked offline by another node; recovering in place");
                self.shared.set_down("marked offline; recovering");
                self.carry = batch;
                match self.rejoin(lease, gen).await {
                    Ok(()) => Outcome::Continue,
                    Err(e) => {
                        tracing::warn!(%e, "recovery failed; rejoining");
                        Outcome::Rejoin
                    }
                }
            }
            Err(e) => {
                tracing::warn!(%e, pending = batch.len(), "write failed; rejoining");
                self.shared.set_down(format!("write failed: {e}"));
                self.carry = batch;
                Outcome::Rejoin
            }
        }
    }

    /// Wait up to a keep-alive interval for a first send, then take whatever else is queued.
    /// `None` once cancelled.
    async fn collect(&mut self, cancel: &CancellationToken) -> Option<Vec<Submission>> {
        let mut batch = Vec::new();
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return None,
            first = tokio::time::timeout(self.settings.keep_alive_interval, self.rx.recv()) => match first {
                Ok(Some(s)) => batch.push(s),
                Ok(None) => return None,
                Err(_) => return Some(batch), // idle: a keep-alive
            }
        }
        while batch.len() < self.settings.max_batch_size {
            match self.rx.try_recv() {
                Ok(s) => batch.push(s),
                Err(_) => break,
            }
        }
        Some(batch)
    }

    /// Commit `batch` (possibly empty: a keep-alive) and the watermark covering it.
    async fn write(&self, lease: &mut IndexLease, gen: &mut TimestampGenerator, batch: &[Submission]) -> Result<(), CoordError> {
        let name = &self.settings.name;
        let index = lease.index();
        let mut events = Vec::with_capacity(batch.len());
        let mut late = 0u64;
        for sub in batch {
            let ts = gen.generate();
            if ts > sub.max_sequencing_ts {
                late += 1;
                tracing::debug!(sender = sub.sender, message_id = %sub.message_id, ts, mst = sub.max_sequencing_ts, "max sequencing time exceeded; dropped");
                continue;
            }
            events.push(to_event(ts, sub));
        }
        if late > 0 {
            metrics::counter!("syncline_sequencer_dropped_total", "node" => name.clone(), "reason" => "max_sequencing_time").increment(late);
        }
        if batch.is_empty() {
            gen.generate(); // a fresh timestamp for the keep-alive watermark
        }
        let mut duplicates = 0;
        if !events.is_empty() {
            let appended = events::append(lease.conn(), index, &events).await?;
            duplicates = appended.duplicates.len();
        }
        let watermark = gen.last();
        watermarks::save(lease.conn(), index, watermark).await?;
        self.shared.wrote(watermark);
        if !batch.is_empty() {
            let written = (events.len() - duplicates) as u64;
            metrics::counter!("syncline_sequencer_events_written_total", "node" => name.clone()).increment(written);
            metrics::histogram!("syncline_sequencer_batch_size", "node" => name.clone()).record(batch.len() as f64);
            if duplicates > 0 {
                metrics::counter!("syncline_sequencer_dropped_total", "node" => name.clone(), "reason" => "duplicate")
                    .increment(duplicates as u64);
            }
            let now = Instant::now();
            for sub in batch {
                metrics::histogram!("syncline_sequencer_write_latency_seconds", "node" => name.clone())
                    .record(now.duration_since(sub.accepted_at).as_secs_f64());
            }
        }
        metrics::gauge!("syncline_sequencer_watermark_delay_seconds", "node" => name.clone())
            .set((now_micros() - watermark) as f64 / 1e6);
        Ok(())
    }

    /// Clean shutdown: refuse new sends, write what is queued, go offline, release the index.
    async fn stop(&mut self, mut lease: IndexLease, gen: &mut TimestampGenerator) {
        self.shared.set_down("shutting down");
        self.rx.close();
        let mut rest = std::mem::take(&mut self.carry);
        while let Ok(s) = self.rx.try_recv() {
            rest.push(s);
        }
        for chunk in rest.chunks(self.settings.max_batch_size.max(1)) {
            if let Err(e) = timeout(self.settings.write_timeout, self.write(&mut lease, gen, chunk)).await {
                tracing::warn!(%e, lost = chunk.len(), "could not write queued sends while shutting down");
                break;
            }
        }
        let index = lease.index();
        match timeout(self.settings.write_timeout, watermarks::go_offline(lease.conn(), index)).await {
            Ok(()) => tracing::info!(index, "offline"),
            Err(e) => tracing::warn!(%e, "could not go offline cleanly; others will notice the released lock"),
        }
        let _ = lease.release().await;
        self.shared.set_down("stopped");
    }
}

fn to_event(ts: i64, sub: &Submission) -> NewEvent {
    let claim = Some(MessageIdClaim {
        sender: sub.sender,
        message_id: sub.message_id.clone(),
        max_sequencing_ts: sub.max_sequencing_ts,
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
            error: Some(format!("UNKNOWN_RECIPIENTS: {}", sub.unknown.join(", "))),
            claim,
        }
    }
}

/// Bound a database call: a blackholed connection must not hang the writer.
async fn timeout<T>(after: Duration, f: impl std::future::Future<Output = Result<T, CoordError>>) -> Result<T, CoordError> {
    tokio::time::timeout(after, f)
        .await
        .unwrap_or_else(|_| Err(CoordError::Timeout { during: "writing to the database".into(), after }))
}
