//! Randomized test: several writers append, save watermarks, get knocked offline, crash and
//! recover (truncate, go online) while readers page through their members' events. Every
//! reader must see one gap-free total order: strictly increasing, never an event that later
//! disappears, never an event appearing behind its cursor, and every event whose watermark
//! was saved must be delivered.
//!
//! The seed is printed; rerun one with SYNCLINE_TEST_SEED=<seed>.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use syncline_coordination::db::{self, SessionKind};
use syncline_coordination::DbConfig;
use syncline_sequencer::store::error::StoreError;
use syncline_sequencer::store::events::{self, EventKind, NewEvent, BROADCAST};
use syncline_sequencer::store::node_index::{self, IndexLease};
use syncline_sequencer::store::timestamps::{now_micros, TimestampGenerator};
use syncline_sequencer::store::{self, offline, watermarks};
use syncline_testkit::fresh_database;

const TOTAL: u32 = 4;
const WRITERS: usize = 3;
const MEMBERS: i32 = 4;
const STEPS: usize = 120;

/// Events whose covering watermark was saved: they must reach every recipient.
type Covered = Arc<Mutex<Vec<(i64, Vec<i32>)>>>;

struct Writer {
    cfg: DbConfig,
    lease: Option<IndexLease>,
    gen: Option<TimestampGenerator>,
}

impl Writer {
    /// (Re)join: allocate an index, truncate it, go online, and generate above the watermark.
    async fn start(&mut self) {
        self.lease = None;
        let mut lease = loop {
            match node_index::acquire(&self.cfg, TOTAL).await {
                Ok(l) => break l,
                Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => panic!("{e}"),
            }
        };
        let idx = lease.index();
        let mut gen = TimestampGenerator::new(idx, TOTAL).unwrap();
        store::join(lease.conn(), idx, now_micros(), &mut gen).await.unwrap();
        self.lease = Some(lease);
        self.gen = Some(gen);
    }

    /// Recover in place after being knocked offline: same index, still locked.
    async fn recover(&mut self) {
        let lease = self.lease.as_mut().unwrap();
        let idx = lease.index();
        store::join(lease.conn(), idx, now_micros(), self.gen.as_mut().unwrap()).await.unwrap();
    }

    async fn append(&mut self, rng: &mut StdRng, save: bool, covered: &Covered) -> Result<(), StoreError> {
        let lease = self.lease.as_mut().unwrap();
        let gen = self.gen.as_mut().unwrap();
        let idx = lease.index();
        let n = rng.random_range(1..6);
        let batch: Vec<NewEvent> = (0..n)
            .map(|_| {
                let sender = rng.random_range(1..=MEMBERS);
                let mut recipients = vec![sender];
                if rng.random_bool(0.1) {
                    recipients.push(BROADCAST);
                } else {
                    for m in 1..=MEMBERS {
                        if m != sender && rng.random_bool(0.4) {
                            recipients.push(m);
                        }
                    }
                }
                NewEvent {
                    ts: gen.generate(),
                    kind: EventKind::Deliver,
                    message_id: None,
                    sender: Some(sender),
                    recipients,
                    payload: Some(vec![1, 2, 3]),
                    error: None,
                    claim: None,
                }
            })
            .collect();
        events::append(lease.conn(), idx, &batch).await?;
        if save {
            watermarks::save(lease.conn(), idx, gen.last()).await?;
            covered.lock().unwrap().extend(batch.iter().map(|e| (e.ts, e.recipients.clone())));
        }
        Ok(())
    }

    async fn keep_alive(&mut self) -> Result<(), StoreError> {
        let lease = self.lease.as_mut().unwrap();
        let gen = self.gen.as_mut().unwrap();
        let (ts, idx) = (gen.generate(), lease.index());
        watermarks::save(lease.conn(), idx, ts).await
    }
}

fn addressed(recipients: &[i32], member: i32) -> bool {
    recipients.contains(&member) || recipients.contains(&BROADCAST)
}

async fn read_all(cfg: &DbConfig, member: i32, mut cursor: i64, out: &mut Vec<i64>) -> i64 {
    let mut c = db::connect(cfg, SessionKind::Pooled).await.unwrap();
    loop {
        let page = events::read(&mut c, member, cursor, 7).await.unwrap();
        assert!(page.next_cursor >= cursor, "cursor moved backwards");
        for e in &page.events {
            assert!(e.ts > cursor, "member {member}: event {} at or behind cursor {cursor}", e.ts);
            assert!(out.last().is_none_or(|&l| e.ts > l), "member {member}: order broken at {}", e.ts);
            assert!(addressed(&e.recipients, member));
            out.push(e.ts);
        }
        let done = page.events.len() < 7;
        cursor = page.next_cursor;
        if done {
            return cursor;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_one_gap_free_total_order_through_crashes_and_recoveries() {
    let seed: u64 = std::env::var("SYNCLINE_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("SYNCLINE_TEST_SEED={seed}");
    let tdb = fresh_database().await;
    let cfg = DbConfig::new(&tdb.url);
    db::migrate(&cfg).await.unwrap();
    let covered: Covered = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));

    // Readers page concurrently with everything else.
    let mut readers = Vec::new();
    for member in 1..=MEMBERS {
        let (cfg, stop) = (cfg.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut cursor = 0;
            while !stop.load(Ordering::Relaxed) {
                cursor = read_all(&cfg, member, cursor, &mut seen).await;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            (cursor, seen)
        }));
    }

    // Chaos: knock random nodes offline and run the offline checker.
    let chaos = {
        let (cfg, stop) = (cfg.clone(), stop.clone());
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
            let mut c = db::connect(&cfg, SessionKind::Pooled).await.unwrap();
            while !stop.load(Ordering::Relaxed) {
                if rng.random_bool(0.3) {
                    watermarks::go_offline(&mut c, rng.random_range(0..TOTAL)).await.unwrap();
                }
                offline::mark_offline(&mut c, now_micros(), Duration::from_secs(8)).await.unwrap();
                tokio::time::sleep(Duration::from_millis(rng.random_range(5..40))).await;
            }
        })
    };

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (cfg, covered) = (cfg.clone(), covered.clone());
        writers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(w as u64));
            let mut me = Writer { cfg, lease: None, gen: None };
            me.start().await;
            for _ in 0..STEPS {
                let roll: f64 = rng.random();
                let r = if roll < 0.55 {
                    me.append(&mut rng, true, &covered).await
                } else if roll < 0.65 {
                    // Events written but the watermark never saved: must vanish on recovery.
                    let r = me.append(&mut rng, false, &covered).await;
                    if r.is_ok() {
                        me.start().await; // crash and restart, maybe on another index
                    }
                    r
                } else if roll < 0.72 {
                    me.start().await; // crash between batches
                    Ok(())
                } else {
                    me.keep_alive().await
                };
                match r {
                    Ok(()) => {}
                    Err(StoreError::MarkedOffline { .. }) => me.recover().await,
                    Err(e) => panic!("writer {w}: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..8))).await;
            }
            me
        }));
    }
    let mut finished = Vec::new();
    for w in writers {
        finished.push(w.await.unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    chaos.await.unwrap();

    // Settle: everyone online, then every watermark above every event.
    for w in &mut finished {
        if w.keep_alive().await.is_err() {
            w.recover().await;
        }
    }
    let mut c = db::connect(&cfg, SessionKind::Pooled).await.unwrap();
    let top = watermarks::all(&mut c).await.unwrap().iter().map(|w| w.watermark_ts).max().unwrap();
    for w in &mut finished {
        w.gen.as_mut().unwrap().ensure_after(top);
        w.keep_alive().await.unwrap();
    }

    let covered = covered.lock().unwrap().clone();
    let mut total_seen = 0;
    for (member, reader) in (1..=MEMBERS).zip(readers) {
        let (cursor, mut seen) = reader.await.unwrap();
        let mut full = Vec::new();
        read_all(&cfg, member, 0, &mut full).await;
        // Catch the live reader up from where it stopped: it must match the full read.
        read_all(&cfg, member, cursor, &mut seen).await;
        if seen != full {
            let at = seen.iter().zip(&full).position(|(a, b)| a != b).unwrap_or(seen.len().min(full.len()));
            panic!(
                "member {member}: the live reader diverges from a fresh read at position {at}: live {:?} vs fresh {:?} (seed {seed})",
                seen.get(at),
                full.get(at)
            );
        }
        let full_set: BTreeSet<i64> = full.iter().copied().collect();
        for (ts, recipients) in covered.iter().filter(|(_, r)| addressed(r, member)) {
            assert!(
                full_set.contains(ts),
                "member {member}: covered event {ts} lost (recipients {recipients:?}, seed {seed})"
            );
        }
        total_seen += full.len();
    }
    assert!(total_seen > 0 && !covered.is_empty(), "the test must actually sequence events");
    println!("covered events: {}, deliveries: {total_seen}", covered.len());
}
