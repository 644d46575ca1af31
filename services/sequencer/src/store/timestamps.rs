//! Partitioned timestamp generator: microseconds since the epoch, strictly increasing per
//! node, disjoint across nodes (node `i` of `N` only produces values ≡ i mod N), and still
//! increasing when the wall clock steps back.

use std::time::{SystemTime, UNIX_EPOCH};

use super::error::{Result, StoreError};

/// Largest total node count plus one: indexes must fit the lock namespace and stay cheap.
pub const MAX_TOTAL_NODES: u32 = 32;

/// The one check of a total node count (`N`): what is wrong with it, if anything.
pub fn check_total_node_count(total: u32) -> std::result::Result<(), String> {
    if (1..MAX_TOTAL_NODES).contains(&total) {
        Ok(())
    } else {
        Err(format!("{total} is not between 1 and {}", MAX_TOTAL_NODES - 1))
    }
}

/// Wall-clock time in microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

/// Generates the timestamps of one sequencer node.
pub struct TimestampGenerator {
    index: i64,
    total: i64,
    last: i64,
    clock: Box<dyn Fn() -> i64 + Send + Sync>,
}

impl std::fmt::Debug for TimestampGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimestampGenerator")
            .field("index", &self.index)
            .field("total", &self.total)
            .field("last", &self.last)
            .finish()
    }
}

/// Check that `index` of `total` is a valid partition.
pub fn validate(index: u32, total: u32) -> Result<()> {
    check_total_node_count(total)
        .map_err(|problem| StoreError::InvalidConfig(format!("total_node_count: {problem}")))?;
    if index >= total {
        return Err(StoreError::InvalidConfig(format!("node index {index} is not below total_node_count {total}")));
    }
    Ok(())
}

impl TimestampGenerator {
    /// A generator for node `index` of `total`, on the system clock.
    pub fn new(index: u32, total: u32) -> Result<Self> {
        Self::with_clock(index, total, now_micros)
    }

    /// A generator on a custom clock (tests).
    pub fn with_clock(index: u32, total: u32, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Result<Self> {
        validate(index, total)?;
        Ok(TimestampGenerator { index: index.into(), total: total.into(), last: i64::MIN / 2, clock: Box::new(clock) })
    }

    /// The next timestamp: `max(now, last + N)` rounded down to a multiple of N, plus i.
    pub fn generate(&mut self) -> i64 {
        let candidate = (self.clock)().max(self.last + self.total);
        let ts = candidate - candidate.rem_euclid(self.total) + self.index;
        // Rounding down can only land below `last + N` when `now` won, and then it is still
        // above `last`; keep the invariant explicit anyway.
        debug_assert!(ts > self.last);
        self.last = ts;
        ts
    }

    /// The last timestamp handed out (or a very small value before the first).
    pub fn last(&self) -> i64 {
        self.last
    }

    /// Make every later timestamp strictly greater than `floor` (e.g. the watermark the node
    /// went online at), without waiting for the clock to get there.
    pub fn ensure_after(&mut self, floor: i64) {
        let aligned = floor - (floor - self.index).rem_euclid(self.total);
        self.last = self.last.max(aligned);
    }

    /// This generator's node index.
    pub fn index(&self) -> u32 {
        self.index as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    #[test]
    fn frozen_clock_three_nodes_two_rounds_are_unique_and_ordered() {
        let clock = Arc::new(AtomicI64::new(1_000_000));
        let mut gens: Vec<_> = (0..3)
            .map(|i| {
                let c = clock.clone();
                TimestampGenerator::with_clock(i, 3, move || c.load(Ordering::SeqCst)).unwrap()
            })
            .collect();
        let round1: Vec<i64> = gens.iter_mut().map(|g| g.generate()).collect();
        let round2: Vec<i64> = gens.iter_mut().map(|g| g.generate()).collect();
        let mut all: Vec<i64> = round1.iter().chain(&round2).copied().collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 6);
        assert!(round1.iter().max() < round2.iter().min());
    }

    #[test]
    fn slow_clock_interleaved_generators_stay_unique_and_increasing_per_node() {
        let clock = Arc::new(AtomicI64::new(0));
        let mk = |i| {
            let c = clock.clone();
            TimestampGenerator::with_clock(i, 2, move || c.fetch_add(1, Ordering::SeqCst)).unwrap()
        };
        let (mut a, mut b) = (mk(0), mk(1));
        let mut seen = std::collections::HashSet::new();
        let (mut la, mut lb) = (i64::MIN, i64::MIN);
        for _ in 0..1000 {
            let x = a.generate();
            let y = b.generate();
            assert!(x > la && y > lb);
            assert_eq!(x.rem_euclid(2), 0);
            assert_eq!(y.rem_euclid(2), 1);
            assert!(seen.insert(x) && seen.insert(y));
            (la, lb) = (x, y);
        }
    }

    #[test]
    fn clock_stepping_back_keeps_increasing() {
        let clock = Arc::new(AtomicI64::new(10_000));
        let c = clock.clone();
        let mut g = TimestampGenerator::with_clock(3, 10, move || c.load(Ordering::SeqCst)).unwrap();
        let a = g.generate();
        clock.store(5_000, Ordering::SeqCst);
        let b = g.generate();
        let c2 = g.generate();
        assert!(a < b && b < c2);
        assert_eq!(a, 10_003);
        assert_eq!(b, 10_013);
        assert_eq!(b.rem_euclid(10), 3);
    }

    #[test]
    fn ensure_after_skips_past_the_floor_without_waiting() {
        let mut g = TimestampGenerator::with_clock(2, 10, || 100).unwrap();
        g.ensure_after(1_000_000);
        let t = g.generate();
        assert!(t > 1_000_000 && t <= 1_000_012, "{t}");
        assert_eq!(t.rem_euclid(10), 2);
        // A floor already passed changes nothing.
        g.ensure_after(5);
        assert!(g.generate() > t);
    }

    #[test]
    fn invalid_partitions_are_rejected_with_a_clear_error() {
        assert!(TimestampGenerator::new(0, 32).unwrap_err().to_string().contains("total_node_count"));
        assert!(TimestampGenerator::new(5, 5).unwrap_err().to_string().contains("node index 5"));
        assert!(TimestampGenerator::new(0, 0).is_err());
        assert!(TimestampGenerator::new(30, 31).is_ok());
    }
}
