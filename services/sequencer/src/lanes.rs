//! The writer lanes of one process and what they share: the node's one send queue (every
//! lane takes batches from it, so a lane busy committing does not hold sends another lane
//! could write), the highest watermark that covers a batch any lane committed (idle lanes move
//! their own watermark past it at once, so that none holds readers back by its keep-alive
//! interval), and the state health, admin and the API read.
//!
//! Why moving an idle lane's watermark past a sibling's batch keeps the Send contract: a
//! watermark promises only about its own index ("nothing more at or below it, and all below
//! it committed"), and only that lane writes its index, through its own lock session, with
//! timestamps of its own partition. An idle lane's keep-alive is an ordinary empty batch: it
//! first makes its generator hand out only timestamps above the sibling's watermark
//! (`TimestampGenerator::ensure_after`), so its promise holds; readers stop at the minimum
//! over online indexes, and the lanes' indexes are disjoint partitions of one total order.
//!
//! A lane that fails recovers alone, as a single writer does (it gives its index up, or
//! recovers in place when marked offline), keeping the sends it held: their claims may sit
//! uncommitted-or-uncovered on its index, so only it may retry them. The node serves while any
//! lane runs; the queue is drained by a lane that is down only while no lane runs.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::health::Changes;
use crate::writer::Submission;

/// What the writer lanes of a node are doing, shared with the API and health checks.
#[derive(Debug)]
pub struct WriterShared {
    lanes: Vec<Arc<LaneState>>,
}

impl WriterShared {
    pub(crate) fn new(lanes: u32, changes: Arc<Changes>) -> Self {
        WriterShared { lanes: (0..lanes.max(1)).map(|lane| Arc::new(LaneState::new(lane, changes.clone()))).collect() }
    }

    /// Every lane's state, by lane number.
    pub fn lanes(&self) -> &[Arc<LaneState>] {
        &self.lanes
    }

    /// True while at least one lane is online and accepting sends: the node serves on the
    /// lanes it has (a failed lane recovers by itself, as a single writer does).
    pub fn is_running(&self) -> bool {
        self.lanes.iter().any(|l| l.is_running())
    }

    /// The first lane's node index, if it has one (see [`node_indexes`](Self::node_indexes)).
    pub fn node_index(&self) -> Option<u32> {
        self.lanes.iter().find_map(|l| l.node_index())
    }

    /// The node index of every lane that has one, by lane number.
    pub fn node_indexes(&self) -> Vec<u32> {
        self.lanes.iter().filter_map(|l| l.node_index()).collect()
    }

    /// Time since the last confirmed watermark write of the lane that wrote least recently
    /// among those running (a running lane whose watermark stands still holds readers back).
    pub fn since_last_write(&self) -> Duration {
        self.lanes.iter().filter(|l| l.is_running()).map(|l| l.since_last_write()).max().unwrap_or_default()
    }

    /// "running", or why not: per lane when there are several and not all run.
    pub fn detail(&self) -> String {
        if let [one] = self.lanes.as_slice() {
            return one.detail();
        }
        if self.lanes.iter().all(|l| l.is_running()) {
            return "running".into();
        }
        let parts: Vec<String> = self.lanes.iter().map(|l| format!("lane {}: {}", l.lane, l.detail())).collect();
        parts.join("; ")
    }
}

/// One lane's state.
#[derive(Debug)]
pub struct LaneState {
    lane: u32,
    running: AtomicBool,
    node_index: AtomicI64,
    last_watermark: AtomicI64,
    /// Milliseconds since `epoch` of the last confirmed watermark write.
    last_write_ms: AtomicU64,
    epoch: Instant,
    detail: Mutex<String>,
    changes: Arc<Changes>,
}

impl LaneState {
    fn new(lane: u32, changes: Arc<Changes>) -> Self {
        LaneState {
            lane,
            changes,
            running: AtomicBool::new(false),
            node_index: AtomicI64::new(-1),
            last_watermark: AtomicI64::new(i64::MIN),
            last_write_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            detail: Mutex::new("starting".into()),
        }
    }

    /// This lane's number (0-based), also its metrics' `lane` label.
    pub fn lane(&self) -> u32 {
        self.lane
    }

    /// True while the lane is online and writing.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// The lane's node index, if it has had one.
    pub fn node_index(&self) -> Option<u32> {
        u32::try_from(self.node_index.load(Ordering::Acquire)).ok()
    }

    /// The last watermark this lane wrote (µs).
    pub fn last_watermark(&self) -> i64 {
        self.last_watermark.load(Ordering::Acquire)
    }

    /// Time since the last confirmed watermark write.
    pub fn since_last_write(&self) -> Duration {
        let at = Duration::from_millis(self.last_write_ms.load(Ordering::Acquire));
        self.epoch.elapsed().saturating_sub(at)
    }

    /// Why the lane is not running (or "running").
    pub fn detail(&self) -> String {
        self.detail.lock().unwrap().clone()
    }

    pub(crate) fn set_down(&self, detail: impl Into<String>) {
        self.running.store(false, Ordering::Release);
        *self.detail.lock().unwrap() = detail.into();
        self.changes.changed();
    }

    pub(crate) fn set_up(&self, index: u32, watermark: i64) {
        self.node_index.store(index.into(), Ordering::Release);
        self.wrote(watermark);
        *self.detail.lock().unwrap() = "running".into();
        self.running.store(true, Ordering::Release);
        self.changes.changed();
    }

    pub(crate) fn wrote(&self, watermark: i64) {
        self.last_watermark.store(watermark, Ordering::Release);
        self.last_write_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Release);
        self.changes.wrote();
    }
}

/// What the lanes of one process share.
pub(crate) struct Lanes {
    /// The node's one send queue; a lane holds the lock only while it waits for a first send
    /// and takes what else is queued, never while it writes.
    pub queue: tokio::sync::Mutex<mpsc::Receiver<Submission>>,
    /// The highest watermark covering a non-empty batch of any lane (keep-alives do not
    /// count: two idle lanes would otherwise wake each other forever).
    batch_watermark: watch::Sender<i64>,
    /// Whether a lane of this process has applied the schema migrations (once per process).
    pub migrated: tokio::sync::Mutex<bool>,
    /// Every lane's state.
    pub node: Arc<WriterShared>,
    /// The queue's sending side, to read its depth without taking the lock.
    sender: mpsc::Sender<Submission>,
    /// Lane tasks not finished yet: the last one out answers what is left in the queue.
    pub running_tasks: AtomicUsize,
}

impl Lanes {
    pub(crate) fn new(
        sender: mpsc::Sender<Submission>,
        rx: mpsc::Receiver<Submission>,
        node: Arc<WriterShared>,
    ) -> Self {
        Lanes {
            sender,
            queue: tokio::sync::Mutex::new(rx),
            batch_watermark: watch::channel(0).0,
            migrated: tokio::sync::Mutex::new(false),
            running_tasks: AtomicUsize::new(node.lanes.len()),
            node,
        }
    }

    /// Sends in the queue now.
    pub(crate) fn queue_depth(&self) -> usize {
        self.sender.max_capacity() - self.sender.capacity()
    }

    /// A lane committed a batch covered by `watermark`.
    pub(crate) fn batch_committed(&self, watermark: i64) {
        self.batch_watermark.send_if_modified(|w| {
            let higher = watermark > *w;
            if higher {
                *w = watermark;
            }
            higher
        });
    }

    /// The highest watermark covering a batch of any lane so far.
    pub(crate) fn batch_watermark(&self) -> i64 {
        *self.batch_watermark.borrow()
    }

    /// Follow the batch watermark (see [`Lanes::batch_committed`]).
    pub(crate) fn watch_batches(&self) -> watch::Receiver<i64> {
        self.batch_watermark.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_runs_while_any_lane_runs_and_reports_each_lane() {
        let node = WriterShared::new(2, Arc::new(Changes::default()));
        assert!(!node.is_running());
        node.lanes[1].set_up(5, 100);
        assert!(node.is_running());
        assert_eq!(node.node_indexes(), vec![5]);
        assert_eq!(node.node_index(), Some(5));
        assert_eq!(node.detail(), "lane 0: starting; lane 1: running");
        node.lanes[0].set_up(2, 100);
        assert_eq!((node.node_indexes(), node.detail().as_str()), (vec![2, 5], "running"));
    }

    #[test]
    fn only_a_higher_batch_watermark_wakes_the_lanes() {
        let (tx, rx) = mpsc::channel(1);
        let lanes = Lanes::new(tx, rx, Arc::new(WriterShared::new(2, Arc::new(Changes::default()))));
        let mut seen = lanes.watch_batches();
        lanes.batch_committed(10);
        assert!(seen.has_changed().unwrap());
        seen.borrow_and_update();
        lanes.batch_committed(7);
        assert!(!seen.has_changed().unwrap(), "a lower watermark is no news");
        assert_eq!(lanes.batch_watermark(), 10);
    }
}
