//! The sequencer's tunables, with Canton's defaults where Canton has one.

use std::time::Duration;

/// How a sequencer node behaves; every field has a sensible default.
#[derive(Clone, Debug)]
pub struct SequencerSettings {
    /// Node name, used in logs and metric labels.
    pub name: String,
    /// `N` of timestamp partitioning; must be below 32 and the same on every node.
    pub total_node_count: u32,
    /// An idle writer still advances its watermark this often.
    pub keep_alive_interval: Duration,
    /// How often this node looks for dead or lagging nodes.
    pub online_check_interval: Duration,
    /// A node whose watermark is older than this is knocked offline.
    pub offline_duration: Duration,
    /// Subscriptions re-read at least this often when no notification arrives.
    pub polling_interval: Duration,
    /// Sends waiting for the writer; beyond it a send is refused with RESOURCE_EXHAUSTED.
    pub queue_size: usize,
    /// Most sends committed in one transaction.
    pub max_batch_size: usize,
    /// Events per read of a subscription.
    pub read_batch_size: u32,
    /// Bytes of events one subscription holds for a slow client: its queue holds at most this
    /// much, and so does a page read from the database (a page is cut shorter to fit). An event
    /// larger than this is still delivered, alone. Per subscription the node holds at most
    /// about twice this, plus one event in the transport.
    pub subscription_buffer_bytes: usize,
    /// Subscriptions this node serves at once; beyond it a subscribe is refused with
    /// RESOURCE_EXHAUSTED.
    pub max_subscriptions: usize,
    /// Largest accepted send, in bytes.
    pub max_request_size: usize,
    /// Largest distance of a max-sequencing-time into the future.
    pub max_sequencing_horizon: Duration,
    /// A database write that takes longer counts as a lost connection.
    pub write_timeout: Duration,
    /// A node whose clock is behind the highest watermark waits at most this long for its
    /// clock to catch up before going online (then it goes online ahead of its clock).
    pub max_clock_wait: Duration,
    /// Accept a database whose `synchronous_commit` is `off`, which can lose committed (and
    /// already delivered) events when PostgreSQL crashes. Only for throwaway test databases.
    pub allow_unsafe_commit: bool,
    /// Shift of this node's clock in microseconds (tests simulate a skewed host with it).
    pub clock_offset_micros: i64,
}

impl Default for SequencerSettings {
    fn default() -> Self {
        SequencerSettings {
            name: "sequencer".into(),
            total_node_count: 10,
            keep_alive_interval: Duration::from_millis(50),
            online_check_interval: Duration::from_millis(250),
            offline_duration: Duration::from_secs(8),
            polling_interval: Duration::from_secs(1),
            queue_size: 1000,
            max_batch_size: 500,
            read_batch_size: 100,
            // With the defaults: 1000 × (2 × 8 MiB + one 4 MiB event) bounds subscription memory.
            subscription_buffer_bytes: 8 * 1024 * 1024,
            max_subscriptions: 1000,
            max_request_size: 4 * 1024 * 1024,
            max_sequencing_horizon: Duration::from_secs(3600),
            write_timeout: Duration::from_secs(5),
            max_clock_wait: Duration::from_secs(10),
            allow_unsafe_commit: false,
            clock_offset_micros: 0,
        }
    }
}

impl SequencerSettings {
    /// This node's clock in microseconds since the epoch (the wall clock plus the offset).
    pub fn now(&self) -> i64 {
        syncline_coordination::timestamps::now_micros() + self.clock_offset_micros
    }

    /// How long after its last watermark write the node stops reporting healthy.
    pub fn health_stale_after(&self) -> Duration {
        (self.keep_alive_interval * 20).max(Duration::from_secs(1)).min(self.offline_duration)
    }
}
