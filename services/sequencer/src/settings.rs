//! The sequencer's tunables, with Canton's defaults where Canton has one: the one source of
//! the defaults and range checks of the `[sequencers.NAME]` configuration section
//! ([`crate::config`]).

use std::time::Duration;

use crate::auth::MemberAuth;
use crate::store::timestamps;
use syncline_node::config::PublicApiConfig;

/// How a sequencer node behaves; every field has a sensible default.
#[derive(Clone, Debug)]
pub struct SequencerSettings {
    /// Node name, used in logs and metric labels.
    pub name: String,
    /// `N` of timestamp partitioning; must be below 32 and the same on every node.
    pub total_node_count: u32,
    /// An idle writer still advances its watermark this often.
    pub keep_alive_interval: Duration,
    /// How often this node looks for dead or lagging nodes: the time to detect a crashed
    /// node (its index lock is gone), so it runs often; the check is one cheap statement.
    pub online_check_interval: Duration,
    /// A node whose watermark is older than this is knocked offline (Canton's default, 8 s;
    /// Canton checks every 5 s, this node far more often: see `online_check_interval`).
    pub offline_duration: Duration,
    /// Subscriptions re-read at least this often when no notification arrives.
    pub polling_interval: Duration,
    /// A subscription that is caught up reads at most once per this interval: under load the
    /// notifications of many small batches coalesce into one read instead of a query per
    /// event (a backlog is read page after page without waiting). Zero reads at every
    /// notification; it adds at most this much to the delivery latency.
    pub read_spacing: Duration,
    /// Sends waiting for the writer; beyond it a send is refused with RESOURCE_EXHAUSTED.
    pub queue_size: usize,
    /// Most sends committed in one transaction.
    pub max_batch_size: usize,
    /// Sends of one SendStream waiting for their answer; the node reads no further sends of
    /// that stream until one is answered (the stream's flow control).
    pub send_stream_window: usize,
    /// Writer lanes of this process: each takes its own node index (so `total_node_count`
    /// must cover lanes × processes), lock session, timestamp partition and watermark, and
    /// they take batches from the one send queue of the node. One by default: on two cores a
    /// second lane nearly doubles the store's write path but slows the gRPC path (smaller
    /// batches, more commits); raise it where the write path is the limit.
    pub writer_lanes: u32,
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
    /// Whether public calls must carry the token of the member they act as (see
    /// [`crate::auth`]).
    pub member_auth: MemberAuth,
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
            read_spacing: Duration::from_millis(2),
            queue_size: 1000,
            max_batch_size: 500,
            send_stream_window: 256,
            writer_lanes: 1,
            read_batch_size: 100,
            // With the defaults: 1000 × (2 × 8 MiB + one 4 MiB event) bounds subscription memory.
            subscription_buffer_bytes: 8 * 1024 * 1024,
            max_subscriptions: 1000,
            max_request_size: PublicApiConfig::DEFAULT_MAX_REQUEST_SIZE,
            max_sequencing_horizon: Duration::from_secs(3600),
            write_timeout: Duration::from_secs(5),
            max_clock_wait: Duration::from_secs(10),
            allow_unsafe_commit: false,
            clock_offset_micros: 0,
            member_auth: MemberAuth::Required,
        }
    }
}

/// A setting that would make the node panic, spin or misbehave, found by
/// [`SequencerSettings::validate`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {field}: {problem}")]
pub struct InvalidSetting {
    /// The field of [`SequencerSettings`], as named there (and in the configuration).
    pub field: &'static str,
    /// What is wrong with its value.
    pub problem: String,
}

/// Longest accepted interval or timeout: beyond it a value is a typo, and near `Duration::MAX`
/// timer arithmetic would overflow and panic.
const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Longest `read_spacing`: beyond it subscribers would notice the wait.
const MAX_READ_SPACING: Duration = Duration::from_secs(1);
/// Longest accepted max-sequencing horizon.
const MAX_HORIZON: Duration = Duration::from_secs(366 * 24 * 3600);
/// Largest accepted queue (tokio's channel panics far above; memory runs out before).
const MAX_QUEUE_SIZE: usize = 1 << 24;
/// Most writer lanes per process: beyond a few, lanes only add sessions and keep-alives.
pub const MAX_WRITER_LANES: u32 = 4;
/// Largest accepted send (gRPC frames carry a 32-bit length; tonic's limit adds slack).
const MAX_REQUEST_SIZE: usize = 1 << 30;

impl SequencerSettings {
    /// This node's clock in microseconds since the epoch (the wall clock plus the offset).
    pub fn now(&self) -> i64 {
        timestamps::now_micros() + self.clock_offset_micros
    }

    /// Refuse values that would panic a task (a zero tokio interval), busy-loop (a zero
    /// keep-alive or poll), or make every operation fail (a zero timeout or batch size).
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let bad = |field: &'static str, problem: String| Err(InvalidSetting { field, problem });
        if let Err(problem) = timestamps::check_total_node_count(self.total_node_count) {
            return bad("total_node_count", problem);
        }
        if !(1..=MAX_WRITER_LANES).contains(&self.writer_lanes) {
            return bad("writer_lanes", format!("{} is not between 1 and {MAX_WRITER_LANES}", self.writer_lanes));
        }
        // Every lane takes a node index of its own.
        if self.writer_lanes > self.total_node_count {
            return bad(
                "writer_lanes",
                format!(
                    "{} lanes need as many node indexes, but total_node_count is {} (it must cover lanes × sequencer processes)",
                    self.writer_lanes, self.total_node_count
                ),
            );
        }
        let durations = [
            ("keep_alive_interval", self.keep_alive_interval, MAX_INTERVAL),
            ("online_check_interval", self.online_check_interval, MAX_INTERVAL),
            ("offline_duration", self.offline_duration, MAX_INTERVAL),
            ("polling_interval", self.polling_interval, MAX_INTERVAL),
            ("write_timeout", self.write_timeout, MAX_INTERVAL),
            ("max_sequencing_horizon", self.max_sequencing_horizon, MAX_HORIZON),
        ];
        if self.read_spacing > MAX_READ_SPACING {
            return bad(
                "read_spacing",
                format!("{:?} is longer than the maximum of {MAX_READ_SPACING:?}", self.read_spacing),
            );
        }
        for (field, value, max) in durations {
            if value.is_zero() {
                return bad(field, "must be positive".into());
            }
            if value > max {
                return bad(field, format!("{value:?} is longer than the maximum of {max:?}"));
            }
        }
        // An idle node writes its watermark only this often: as long as offline_duration, and
        // the liveness checks of other nodes knock it offline again and again.
        if self.keep_alive_interval >= self.offline_duration {
            return bad(
                "keep_alive_interval",
                format!(
                    "{:?} must be shorter than offline_duration ({:?})",
                    self.keep_alive_interval, self.offline_duration
                ),
            );
        }
        let sizes = [
            ("queue_size", self.queue_size, MAX_QUEUE_SIZE),
            ("max_batch_size", self.max_batch_size, MAX_QUEUE_SIZE),
            ("send_stream_window", self.send_stream_window, MAX_QUEUE_SIZE),
            ("read_batch_size", self.read_batch_size as usize, MAX_QUEUE_SIZE),
            ("max_request_size", self.max_request_size, MAX_REQUEST_SIZE),
        ];
        for (field, value, max) in sizes {
            if value == 0 {
                return bad(field, "must be positive".into());
            }
            if value > max {
                return bad(field, format!("{value} is above the maximum of {max}"));
            }
        }
        if self.max_subscriptions == 0 {
            return bad("max_subscriptions", "must be positive".into());
        }
        if self.subscription_buffer_bytes < self.max_request_size {
            return bad(
                "subscription_buffer_bytes",
                format!(
                    "{} must be at least max_request_size ({})",
                    self.subscription_buffer_bytes, self.max_request_size
                ),
            );
        }
        if self.max_clock_wait > MAX_INTERVAL {
            return bad(
                "max_clock_wait",
                format!("{:?} is longer than the maximum of {MAX_INTERVAL:?}", self.max_clock_wait),
            );
        }
        Ok(())
    }

    /// How long after its last watermark write the node stops reporting healthy.
    pub fn health_stale_after(&self) -> Duration {
        (self.keep_alive_interval * 20).max(Duration::from_secs(1)).min(self.offline_duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(tweak: impl FnOnce(&mut SequencerSettings)) -> InvalidSetting {
        let mut s = SequencerSettings::default();
        tweak(&mut s);
        s.validate().expect_err("refused")
    }

    #[test]
    fn defaults_are_valid() {
        SequencerSettings::default().validate().unwrap();
    }

    type Tweak = fn(&mut SequencerSettings);

    #[test]
    fn zero_intervals_timeouts_and_sizes_are_refused_by_name() {
        let cases: [(&str, Tweak); 11] = [
            ("keep_alive_interval", |s| s.keep_alive_interval = Duration::ZERO),
            ("online_check_interval", |s| s.online_check_interval = Duration::ZERO),
            ("offline_duration", |s| s.offline_duration = Duration::ZERO),
            ("polling_interval", |s| s.polling_interval = Duration::ZERO),
            ("write_timeout", |s| s.write_timeout = Duration::ZERO),
            ("max_sequencing_horizon", |s| s.max_sequencing_horizon = Duration::ZERO),
            ("queue_size", |s| s.queue_size = 0),
            ("max_batch_size", |s| s.max_batch_size = 0),
            ("send_stream_window", |s| s.send_stream_window = 0),
            ("read_batch_size", |s| s.read_batch_size = 0),
            ("max_request_size", |s| s.max_request_size = 0),
        ];
        for (field, tweak) in cases {
            let e = refused(tweak);
            assert_eq!((e.field, e.problem.as_str()), (field, "must be positive"));
            assert_eq!(e.to_string(), format!("invalid setting {field}: must be positive"));
        }
    }

    #[test]
    fn absurd_values_are_refused() {
        let e = refused(|s| s.online_check_interval = Duration::MAX);
        assert_eq!(e.field, "online_check_interval");
        assert!(e.problem.contains("longer than the maximum"), "{e}");
        assert_eq!(refused(|s| s.queue_size = usize::MAX).field, "queue_size");
        assert_eq!(refused(|s| s.max_request_size = usize::MAX).field, "max_request_size");
        assert_eq!(
            refused(|s| s.total_node_count = 0).to_string(),
            "invalid setting total_node_count: 0 is not between 1 and 31"
        );
        assert_eq!(refused(|s| s.total_node_count = 32).field, "total_node_count");
        assert_eq!(
            refused(|s| s.writer_lanes = 0).to_string(),
            "invalid setting writer_lanes: 0 is not between 1 and 4"
        );
        assert_eq!(refused(|s| s.writer_lanes = 5).field, "writer_lanes");
        let e = refused(|s| {
            s.total_node_count = 3;
            s.writer_lanes = 4
        });
        assert_eq!(e.field, "writer_lanes");
        assert!(e.problem.contains("total_node_count is 3"), "{e}");
        let e = refused(|s| s.keep_alive_interval = s.offline_duration);
        assert_eq!(e.to_string(), "invalid setting keep_alive_interval: 8s must be shorter than offline_duration (8s)");
    }
}
