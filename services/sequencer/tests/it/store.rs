//! The sequencer-side coordination modules against a real PostgreSQL: events, watermarks,
//! offline detection, recovery truncation and node index allocation. Scenarios follow
//! Canton's SequencerStoreTest, MultiTenantedSequencerStoreTest and
//! HASequencerWriterStoreFactoryTest, plus the cases where Syncline does better.

use std::time::Duration;

use diesel::sql_types::BigInt;
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use syncline_coordination::db::{self, SessionKind};
use syncline_coordination::locks;
use syncline_coordination::DbConfig;
use syncline_sequencer::store::error::StoreError;
use syncline_sequencer::store::events::{self, ErrorCode, EventError, EventKind, MessageIdClaim, NewEvent, BROADCAST};
use syncline_sequencer::store::{node_index, offline, recovery, watermarks};
use syncline_testkit::fresh_database;

const ALICE: i32 = 1;
const BOB: i32 = 2;
const CAROL: i32 = 3;

async fn setup() -> (DbConfig, AsyncPgConnection) {
    let tdb = fresh_database().await;
    let cfg = DbConfig::new(&tdb.url);
    db::migrate(&cfg).await.unwrap();
    let conn = db::connect(&cfg, SessionKind::Pooled).await.unwrap();
    (cfg, conn)
}

/// Sessions holding the index locks of `indexes`, as live sequencer nodes would.
async fn hold(cfg: &DbConfig, indexes: &[u32]) -> Vec<AsyncPgConnection> {
    let mut held = Vec::new();
    for &i in indexes {
        let mut c = db::connect(cfg, SessionKind::Lock).await.unwrap();
        assert!(locks::try_lock(&mut c, syncline_sequencer::store::node_index::index_lock(i)).await.unwrap());
        held.push(c);
    }
    held
}

/// Put `indexes` online (all at 0), then set their watermarks.
async fn online(c: &mut AsyncPgConnection, wms: &[(u32, i64)]) {
    for &(i, _) in wms {
        watermarks::go_online(c, i, 0).await.unwrap();
    }
    for &(i, wm) in wms {
        watermarks::save(c, i, wm).await.unwrap();
    }
}

fn deliver(ts: i64, sender: i32, to: &[i32]) -> NewEvent {
    let mut recipients = vec![sender];
    recipients.extend_from_slice(to);
    NewEvent {
        ts,
        kind: EventKind::Deliver,
        message_id: Some(format!("m{ts}")),
        sender: Some(sender),
        recipients,
        payload: Some(format!("payload {ts}").into_bytes()),
        error: None,
        claim: None,
    }
}

async fn ts_of(c: &mut AsyncPgConnection, member: i32, after: i64, limit: u32) -> Vec<i64> {
    events::read(c, member, after, limit).await.unwrap().events.iter().map(|e| e.ts).collect()
}

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn count(c: &mut AsyncPgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql).get_result::<N>(c).await.unwrap().n
}

#[tokio::test]
async fn events_are_read_back_with_payloads_filtered_by_recipient() {
    let (_cfg, mut c) = setup().await;
    online(&mut c, &[(0, 100)]).await;
    let mut err = NewEvent {
        ts: 4,
        kind: EventKind::Error,
        message_id: Some("bad".into()),
        sender: Some(BOB),
        recipients: vec![BOB],
        payload: None,
        error: Some(EventError { code: ErrorCode::UnknownRecipients, message: "dave".into() }),
        claim: None,
    };
    events::append(&mut c, 0, &[deliver(1, ALICE, &[]), deliver(2, ALICE, &[BOB]), deliver(3, BOB, &[ALICE, CAROL])])
        .await
        .unwrap();
    events::append(&mut c, 0, std::slice::from_ref(&err)).await.unwrap();
    let alice = events::read(&mut c, ALICE, 0, 100).await.unwrap();
    assert_eq!(alice.events.iter().map(|e| e.ts).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(alice.events[1].payload.as_deref(), Some(&b"payload 2"[..]));
    assert_eq!(alice.events[2].recipients, vec![ALICE, BOB, CAROL], "stored sorted, without duplicates");
    assert_eq!(alice.next_cursor, 100, "a partial page moves the cursor to the safe watermark");
    assert_eq!(ts_of(&mut c, BOB, 0, 100).await, vec![2, 3, 4]);
    assert_eq!(ts_of(&mut c, CAROL, 0, 100).await, vec![3]);
    let bob = events::read(&mut c, BOB, 3, 100).await.unwrap();
    err.claim = None;
    assert_eq!(bob.events[0].kind, EventKind::Error);
    assert_eq!(bob.events[0].error, Some(EventError { code: ErrorCode::UnknownRecipients, message: "dave".into() }));
    assert_eq!(bob.events[0].payload, None);
}

#[tokio::test]
async fn paging_is_gap_free_and_interleaves_broadcasts() {
    let (_cfg, mut c) = setup().await;
    online(&mut c, &[(0, 1000)]).await;
    let mut evs: Vec<NewEvent> = (1..=20).map(|t| deliver(t, BOB, &[ALICE])).collect();
    evs.push(deliver(30, CAROL, &[BROADCAST]));
    events::append(&mut c, 0, &evs).await.unwrap();
    let p1 = events::read(&mut c, ALICE, 0, 10).await.unwrap();
    assert_eq!(p1.events.iter().map(|e| e.ts).collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());
    assert_eq!(p1.next_cursor, 10, "a full page continues after its last event");
    let p2 = events::read(&mut c, ALICE, p1.next_cursor, 10).await.unwrap();
    assert_eq!(p2.events.iter().map(|e| e.ts).collect::<Vec<_>>(), (11..=20).collect::<Vec<_>>());
    assert_eq!(ts_of(&mut c, ALICE, 15, 10).await, vec![16, 17, 18, 19, 20, 30]);
    // The broadcaster gets its own event once, not twice.
    assert_eq!(ts_of(&mut c, CAROL, 0, 10).await, vec![30]);
}

#[tokio::test]
async fn only_events_at_or_below_the_safe_watermark_are_read() {
    let (_cfg, mut c) = setup().await;
    online(&mut c, &[(0, 6)]).await;
    let evs: Vec<NewEvent> = (1..=20).map(|t| deliver(t, ALICE, &[])).collect();
    events::append(&mut c, 0, &evs).await.unwrap();
    let page = events::read(&mut c, ALICE, 0, 100).await.unwrap();
    assert_eq!(page.events.len(), 6);
    assert_eq!(page.next_cursor, 6);
    watermarks::save(&mut c, 0, 20).await.unwrap();
    assert_eq!(ts_of(&mut c, ALICE, 6, 100).await, (7..=20).collect::<Vec<_>>());
}

#[tokio::test]
async fn stale_sequencers_are_knocked_offline_and_must_recover() {
    let (cfg, mut c) = setup().await;
    let _held = hold(&cfg, &[0, 1, 2]).await;
    online(&mut c, &[(0, 5), (1, 10), (2, 15)]).await;
    let knocked = offline::mark_offline(&mut c, 10 + 8_000_000, Duration::from_secs(8)).await.unwrap();
    assert_eq!(knocked, vec![0, 1]);
    for i in [0, 1] {
        match watermarks::save(&mut c, i, 20).await {
            Err(StoreError::MarkedOffline { node_index }) => assert_eq!(node_index, i),
            other => panic!("node {i} must learn it is offline, got {other:?}"),
        }
    }
    watermarks::save(&mut c, 2, 20).await.unwrap();
    assert_eq!(watermarks::safe(&mut c).await.unwrap(), Some(20));
}

#[tokio::test]
async fn a_dead_sessions_index_is_knocked_offline_at_the_next_check() {
    let (cfg, mut c) = setup().await;
    let mut held = hold(&cfg, &[0, 1]).await;
    let now = syncline_sequencer::store::timestamps::now_micros();
    online(&mut c, &[(0, now), (1, now)]).await;
    // Fresh watermarks and live locks: nobody is knocked off.
    assert!(offline::mark_offline(&mut c, now, Duration::from_secs(8)).await.unwrap().is_empty());
    // Node 1's process dies: its session ends and releases the lock.
    drop(held.pop());
    let mut knocked = Vec::new();
    for _ in 0..50 {
        knocked = offline::mark_offline(&mut c, now, Duration::from_secs(8)).await.unwrap();
        if !knocked.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(knocked, vec![1], "lost lock is detected without waiting for offline_duration");
    assert_eq!(watermarks::safe(&mut c).await.unwrap(), Some(now));
    // A backend terminated by the server counts as dead too.
    let pid = locks::holder_pid(&mut c, syncline_sequencer::store::node_index::index_lock(0)).await.unwrap().unwrap();
    diesel::sql_query(format!("select pg_terminate_backend({pid})")).execute(&mut c).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(offline::mark_lock_lost(&mut c).await.unwrap(), vec![0]);
    assert_eq!(watermarks::safe(&mut c).await.unwrap(), None);
}

#[tokio::test]
async fn safe_watermark_caps_reads_when_a_member_has_no_events() {
    let (_cfg, mut c) = setup().await;
    online(&mut c, &[(0, 4), (1, 6)]).await;
    events::append(&mut c, 0, &[deliver(1, BOB, &[])]).await.unwrap();
    events::append(&mut c, 1, &(2..=5).map(|t| deliver(t, ALICE, &[])).collect::<Vec<_>>()).await.unwrap();
    let bob = events::read(&mut c, BOB, 2, 100).await.unwrap();
    assert!(bob.events.is_empty());
    assert_eq!(bob.next_cursor, 4);
    assert_eq!(ts_of(&mut c, ALICE, 2, 100).await, vec![3, 4]);
}

#[tokio::test]
async fn offline_sequencers_events_past_their_watermark_stay_hidden() {
    let (_cfg, mut c) = setup().await;
    online(&mut c, &[(0, 3), (1, 6), (2, 6)]).await;
    for (i, a, b) in [(0, 1, 4), (1, 2, 5), (2, 3, 6)] {
        events::append(&mut c, i, &[deliver(a, ALICE, &[]), deliver(b, ALICE, &[])]).await.unwrap();
    }
    assert_eq!(ts_of(&mut c, ALICE, 0, 100).await, vec![1, 2, 3]);
    watermarks::go_offline(&mut c, 0).await.unwrap();
    assert_eq!(ts_of(&mut c, ALICE, 0, 100).await, vec![1, 2, 3, 5, 6]);
}

#[tokio::test]
async fn an_offline_sequencer_ahead_of_the_minimum_does_not_break_the_order() {
    let (_cfg, mut c) = setup().await;
    online(&mut c, &[(0, 7), (1, 4), (2, 4)]).await;
    events::append(&mut c, 0, &[1, 7, 8].map(|t| deliver(t, ALICE, &[]))).await.unwrap();
    events::append(&mut c, 1, &[2, 5].map(|t| deliver(t, ALICE, &[]))).await.unwrap();
    events::append(&mut c, 2, &[3, 6, 9].map(|t| deliver(t, ALICE, &[]))).await.unwrap();
    watermarks::go_offline(&mut c, 0).await.unwrap();
    assert_eq!(ts_of(&mut c, ALICE, 0, 100).await, vec![1, 2, 3]);
    watermarks::save(&mut c, 1, 9).await.unwrap();
    watermarks::save(&mut c, 2, 9).await.unwrap();
    assert_eq!(ts_of(&mut c, ALICE, 0, 100).await, vec![1, 2, 3, 5, 6, 7, 9]);
}

#[tokio::test]
async fn with_every_sequencer_offline_each_is_read_up_to_its_own_watermark() {
    let (_cfg, mut c) = setup().await;
    online(&mut c, &[(0, 1), (1, 2), (2, 3)]).await;
    for (i, a, b) in [(0, 1, 4), (1, 2, 5), (2, 3, 6)] {
        events::append(&mut c, i, &[deliver(a, ALICE, &[]), deliver(b, ALICE, &[])]).await.unwrap();
    }
    for i in 0..3 {
        watermarks::go_offline(&mut c, i).await.unwrap();
    }
    let page = events::read(&mut c, ALICE, 0, 100).await.unwrap();
    assert_eq!(page.events.iter().map(|e| e.ts).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(page.next_cursor, 3);
    let row = watermarks::get(&mut c, 1).await.unwrap().unwrap();
    assert_eq!((row.watermark_ts, row.online), (2, false), "going offline keeps the watermark");
}

#[tokio::test]
async fn going_online_starts_at_the_maximum_of_now_and_all_watermarks() {
    let (_cfg, mut c) = setup().await;
    assert_eq!(watermarks::go_online(&mut c, 0, 10).await.unwrap(), 10, "fresh node: now");
    watermarks::save(&mut c, 0, 60).await.unwrap();
    assert_eq!(watermarks::go_online(&mut c, 1, 100).await.unwrap(), 100, "ahead of the max: now");
    assert_eq!(watermarks::go_online(&mut c, 2, 50).await.unwrap(), 100, "behind the max: the max");
    watermarks::go_offline(&mut c, 1).await.unwrap();
    assert_eq!(watermarks::go_online(&mut c, 1, 5).await.unwrap(), 100, "offline rows count for the max");
}

#[tokio::test]
async fn going_online_waits_for_a_watermark_save_in_flight_and_starts_above_it() {
    // A save of node 0's watermark is in flight (row updated, not committed) while node 1
    // goes online. If node 1 read the maximum without waiting for it, it would go online
    // below 500, readers would pass 500 once the save commits, and node 1 would then write
    // events below what they passed: skipped forever.
    let (cfg, mut c) = setup().await;
    online(&mut c, &[(0, 100)]).await;
    let mut saver = db::connect(&cfg, SessionKind::Pooled).await.unwrap();
    saver
        .batch_execute("begin; update sequencer_watermarks set watermark_ts = 500 where node_index = 0")
        .await
        .unwrap();
    let joining = tokio::spawn(async move {
        let mut c = db::connect(&cfg, SessionKind::Pooled).await.unwrap();
        watermarks::go_online(&mut c, 1, 200).await.unwrap()
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let early = joining.is_finished();
    saver.batch_execute("commit").await.unwrap();
    let at = joining.await.unwrap();
    assert!(at >= 500, "went online at {at}, below the watermark 500 committed meanwhile (finished early: {early})");
    assert!(watermarks::safe(&mut c).await.unwrap().unwrap() >= 500);
}

#[tokio::test]
async fn many_nodes_going_online_at_once_all_get_a_watermark_at_or_above_every_other() {
    let (cfg, _c) = setup().await;
    let tasks: Vec<_> = (0..8u32)
        .map(|i| {
            let cfg = cfg.clone();
            tokio::spawn(async move {
                let mut c = db::connect(&cfg, SessionKind::Pooled).await.unwrap();
                watermarks::go_online(&mut c, i, 1000 + i64::from(i)).await.unwrap()
            })
        })
        .collect();
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap());
    }
    // Serializable: each node's watermark is at least the largest one committed before it.
    got.sort();
    assert!(got.iter().all(|&w| w >= 1000));
    assert_eq!(*got.last().unwrap(), 1007);
}

#[tokio::test]
async fn saving_a_watermark_detects_someone_else_on_the_index() {
    let (_cfg, mut c) = setup().await;
    assert!(matches!(
        watermarks::save(&mut c, 4, 10).await,
        Err(StoreError::WatermarkChanged { node_index: 4, expected: 10, found: None })
    ));
    online(&mut c, &[(4, 50)]).await;
    assert!(matches!(watermarks::save(&mut c, 4, 40).await, Err(StoreError::WatermarkChanged { found: Some(50), .. })));
}

#[tokio::test]
async fn truncation_removes_events_recipients_payloads_and_claims_past_the_watermark() {
    let (_cfg, mut c) = setup().await;
    online(&mut c, &[(0, 4), (1, 100)]).await;
    let claimed = |mut e: NewEvent| {
        e.claim = Some(MessageIdClaim {
            sender: ALICE,
            message_id: format!("m{}", e.ts),
            max_sequencing_ts: 1 << 40,
            digest: vec![],
        });
        e
    };
    events::append(&mut c, 0, &[claimed(deliver(1, ALICE, &[BOB])), claimed(deliver(6, ALICE, &[BOB]))]).await.unwrap();
    events::append(&mut c, 1, &[deliver(5, ALICE, &[BOB]), deliver(7, ALICE, &[BOB])]).await.unwrap();
    let t = recovery::truncate(&mut c, 0).await.unwrap();
    assert_eq!(t.watermark, Some(4));
    assert_eq!((t.events, t.recipients, t.payloads, t.message_ids), (1, 2, 1, 1));
    assert_eq!(count(&mut c, "select count(*) as n from sequencer_events where node_index = 0").await, 1);
    assert_eq!(count(&mut c, "select count(*) as n from sequencer_event_recipients where node_index = 0").await, 2);
    let payloads = "select count(*) as n from sequencer_events where node_index = 0 and payload is not null";
    assert_eq!(count(&mut c, payloads).await, 1);
    let claims = "select count(*) as n from sequencer_events where max_sequencing_ts is not null";
    assert_eq!(count(&mut c, claims).await, 1);
    assert_eq!(count(&mut c, "select count(*) as n from sequencer_events where node_index = 1").await, 2);
    assert!(!watermarks::get(&mut c, 0).await.unwrap().unwrap().online, "truncation marks the index offline");
    // The freed claim lets a retry of m6 be sequenced again.
    let again = events::append(&mut c, 1, &[claimed(deliver(9, ALICE, &[BOB]))]).await.unwrap();
    assert_eq!(again.written, vec![9]);
}

#[tokio::test]
async fn a_dead_nodes_uncovered_claims_do_not_block_a_retry_on_another_node() {
    // Node 0 commits an event with a claim, then dies before its watermark covers it. The
    // sender never sees the event and retries on node 1: it must be sequenced there.
    let (cfg, mut c) = setup().await;
    let mut live = hold(&cfg, &[1]).await;
    online(&mut c, &[(0, 4), (1, 4)]).await;
    let dead = hold(&cfg, &[0]).await;
    let claimed = |mut e: NewEvent| {
        e.claim = Some(MessageIdClaim {
            sender: ALICE,
            message_id: "retry-me".into(),
            max_sequencing_ts: 1 << 40,
            digest: vec![],
        });
        e
    };
    events::append(&mut c, 0, &[claimed(deliver(10, ALICE, &[BOB]))]).await.unwrap();
    // Alive but stalled: its lock is held, so the sweep leaves it alone.
    offline::mark_offline(&mut c, 1 << 40, Duration::from_secs(8)).await.unwrap();
    online(&mut c, &[(1, 4)]).await;
    assert!(recovery::sweep_dead(&mut c).await.unwrap().is_empty(), "a live node's rows were swept");
    assert_eq!(count(&mut c, "select count(*) as n from sequencer_events where node_index = 0").await, 1);
    drop(dead); // now it is dead (once the server has noticed the closed session)
    while locks::holder_pid(&mut c, syncline_sequencer::store::node_index::index_lock(0)).await.unwrap().is_some() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    offline::mark_lock_lost(&mut c).await.unwrap();
    let swept = recovery::sweep_dead(&mut c).await.unwrap();
    assert_eq!(swept.len(), 1, "{swept:?}");
    assert_eq!((swept[0].0, swept[0].1.events, swept[0].1.message_ids), (0, 1, 1));
    let again = events::append(&mut c, 1, &[claimed(deliver(11, ALICE, &[BOB]))]).await.unwrap();
    assert_eq!(again.written, vec![11], "the retry was taken for a duplicate of an invisible event");
    watermarks::save(&mut c, 1, 20).await.unwrap();
    assert_eq!(ts_of(&mut c, BOB, 0, 10).await, vec![11]);
    // Sweeping again finds nothing; the index stays free for the next node.
    assert!(recovery::sweep_dead(&mut c).await.unwrap().is_empty());
    assert!(locks::try_lock(&mut live[0], syncline_sequencer::store::node_index::index_lock(0)).await.unwrap());
}

/// Rows of the events table read so far in this database, by any scan (stats flushed first).
async fn event_rows_read(c: &mut AsyncPgConnection) -> i64 {
    c.batch_execute("select pg_stat_force_next_flush()").await.unwrap();
    c.batch_execute("select pg_stat_clear_snapshot()").await.unwrap();
    let sql = "select seq_tup_read + coalesce(idx_tup_fetch, 0) as n from pg_stat_user_tables \
               where relname = 'sequencer_events'";
    count(c, sql).await
}

#[tokio::test]
async fn truncation_reads_only_its_own_tail_however_much_other_nodes_wrote_since() {
    // Node 0 stops at watermark 10; node 1 writes 3000 events after it. Truncating node 0
    // (its rejoin, or the sweep of a dead node every 30 s) must not read through them: the
    // range is (watermark, written_to], which every append raises, covered or not.
    let (_cfg, mut c) = setup().await;
    online(&mut c, &[(0, 10), (1, 10)]).await;
    recovery::truncate(&mut c, 0).await.unwrap(); // as a join does: the bound is now known
    watermarks::go_online(&mut c, 0, 0).await.unwrap();
    let (_, covered) =
        events::append_covered(&mut c, 0, &[deliver(11, ALICE, &[BOB]), deliver(13, ALICE, &[])], 11).await.unwrap();
    assert!(covered);
    for batch in 0..3 {
        let evs: Vec<NewEvent> = (0..1000).map(|i| deliver(100 + batch * 1000 + i, BOB, &[CAROL])).collect();
        events::append(&mut c, 1, &evs).await.unwrap();
    }
    // Marked offline: its next batch is not covered, but still raises the bound.
    offline_mark(&mut c, 0).await;
    let (_, covered) = events::append_covered(&mut c, 0, &[deliver(14, ALICE, &[BOB])], 14).await.unwrap();
    assert!(!covered);
    let before = event_rows_read(&mut c).await;
    let t = recovery::truncate(&mut c, 0).await.unwrap();
    let read = event_rows_read(&mut c).await - before;
    assert_eq!((t.watermark, t.events, t.recipients), (Some(11), 2, 3), "13 and 14 go, 11 stays");
    assert!(read < 100, "the truncation read {read} event rows: it scanned node 1's events");
    assert_eq!(count(&mut c, "select count(*) as n from sequencer_events where node_index = 1").await, 3000);
    assert_eq!(count(&mut c, "select count(*) as n from sequencer_events where node_index = 0").await, 1);
    // Swept again (as a dead node is every 30 s): nothing to read at all.
    let before = event_rows_read(&mut c).await;
    assert!(!recovery::truncate(&mut c, 0).await.unwrap().removed_anything());
    assert!(event_rows_read(&mut c).await - before < 10);
}

#[tokio::test]
async fn truncating_an_index_that_never_had_a_watermark_removes_all_its_rows() {
    let (_cfg, mut c) = setup().await;
    online(&mut c, &[(1, 10)]).await;
    events::append(&mut c, 3, &[deliver(1, ALICE, &[]), deliver(2, BOB, &[])]).await.unwrap();
    events::append(&mut c, 1, &[deliver(3, ALICE, &[])]).await.unwrap();
    let t = recovery::truncate(&mut c, 3).await.unwrap();
    assert_eq!((t.watermark, t.events, t.recipients, t.payloads), (None, 2, 2, 2));
    assert_eq!(count(&mut c, "select count(*) as n from sequencer_events").await, 1);
}

#[tokio::test]
async fn orphan_recipient_rows_never_make_a_reader_skip_events() {
    // Canton leaves recipient rows of truncated events behind; with more of them than a page
    // holds, a reader could jump its cursor past real events. Syncline removes them.
    let (_cfg, mut c) = setup().await;
    online(&mut c, &[(0, 1), (1, 1)]).await;
    let junk: Vec<NewEvent> = (2..50).map(|t| deliver(t * 2, ALICE, &[])).collect();
    events::append(&mut c, 0, &junk).await.unwrap();
    recovery::truncate(&mut c, 0).await.unwrap();
    watermarks::go_online(&mut c, 0, 0).await.unwrap();
    events::append(&mut c, 1, &[deliver(51, ALICE, &[])]).await.unwrap();
    watermarks::save(&mut c, 0, 200).await.unwrap();
    watermarks::save(&mut c, 1, 200).await.unwrap();
    assert_eq!(ts_of(&mut c, ALICE, 0, 10).await, vec![51]);
}

#[tokio::test]
async fn a_message_id_is_sequenced_once_across_nodes_and_batches() {
    let (cfg, mut c) = setup().await;
    online(&mut c, &[(0, 0), (1, 0)]).await;
    let claimed = |ts: i64, id: &str| {
        let mut e = deliver(ts, ALICE, &[BOB]);
        e.claim =
            Some(MessageIdClaim { sender: ALICE, message_id: id.into(), max_sequencing_ts: 1 << 40, digest: vec![] });
        e
    };
    let a = events::append(&mut c, 0, &[claimed(10, "x"), claimed(20, "x"), claimed(30, "y")]).await.unwrap();
    assert_eq!((a.written, a.conflicts), (vec![10, 30], vec![20]));
    let b = events::append(&mut c, 1, &[claimed(11, "x"), claimed(21, "z")]).await.unwrap();
    assert_eq!((b.written, b.conflicts), (vec![21], vec![11]));
    // Two nodes racing on the same id: exactly one wins.
    let mut tasks = Vec::new();
    for (i, ts) in [(0u32, 40i64), (1, 41)] {
        let cfg = cfg.clone();
        let e = claimed(ts, "race");
        tasks.push(tokio::spawn(async move {
            let mut c = db::connect(&cfg, SessionKind::Pooled).await.unwrap();
            events::append(&mut c, i, &[e]).await.unwrap().written.len()
        }));
    }
    let mut written = 0;
    for t in tasks {
        written += t.await.unwrap();
    }
    assert_eq!(written, 1);
}

#[tokio::test]
async fn five_nodes_starting_together_get_indexes_0_to_4_once_and_a_sixth_is_refused() {
    let (cfg, _c) = setup().await;
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let cfg = cfg.clone();
            tokio::spawn(async move {
                // Concurrent starts may collide on a candidate; the retryable error says retry.
                loop {
                    match node_index::acquire(&cfg, 5).await {
                        Ok(lease) => return lease,
                        Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(10)).await,
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    let mut leases = Vec::new();
    for t in tasks {
        leases.push(t.await.unwrap());
    }
    let mut got: Vec<u32> = leases.iter().map(|l| l.index()).collect();
    got.sort();
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
    for l in &mut leases {
        l.check().await.unwrap();
    }
    let err = node_index::acquire(&cfg, 5).await.unwrap_err();
    assert!(matches!(err, StoreError::AllIndexesInUse { total: 5 }) && err.is_retryable(), "{err}");
    assert!(err.to_string().contains("all 5 sequencer node indexes are in use"));
    // A node that stops frees its index for the next one.
    let freed = leases.remove(2);
    let index = freed.index();
    freed.release().await.unwrap();
    assert_eq!(node_index::acquire(&cfg, 5).await.unwrap().index(), index);
}

#[tokio::test]
async fn a_process_that_lost_its_session_ends_it_and_gets_its_index_back() {
    let (cfg, mut c) = setup().await;
    let mut lost = node_index::acquire(&cfg, 5).await.unwrap();
    let previous = lost.previous();
    watermarks::go_online(lost.conn(), previous.index, 5).await.unwrap();
    // The process gave up on that session, but the server still keeps it (and its lock).
    let mut again = node_index::acquire_after(&cfg, 5, Some(previous)).await.unwrap();
    assert_eq!(again.index(), previous.index, "the previous index is taken back");
    again.check().await.unwrap();
    assert!(lost.check().await.is_err(), "the lost session survived");
    assert_ne!(again.previous().backend_pid, previous.backend_pid);
    // Its row went offline on the way (the lock was gone), ready for recovery.
    assert!(!watermarks::get(&mut c, previous.index).await.unwrap().unwrap().online);
    // A stale record of a session that is gone changes nothing.
    drop(again);
    while locks::holder_pid(&mut c, syncline_sequencer::store::node_index::index_lock(previous.index))
        .await
        .unwrap()
        .is_some()
    {
        tokio::time::sleep(Duration::from_millis(10)).await; // the server has not noticed yet
    }
    let third = node_index::acquire_after(&cfg, 5, Some(previous)).await.unwrap();
    assert_eq!(third.index(), previous.index);
}

#[tokio::test]
async fn an_online_index_whose_holder_died_is_reclaimed() {
    let (cfg, _c) = setup().await;
    let mut lease = node_index::acquire(&cfg, 1).await.unwrap();
    watermarks::go_online(lease.conn(), 0, 5).await.unwrap();
    drop(lease); // kill: the row stays online, the lock goes
    let mut again = None;
    for _ in 0..50 {
        match node_index::acquire(&cfg, 1).await {
            Ok(l) => {
                again = Some(l);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let mut again = again.expect("the dead node's index is free again");
    assert_eq!(again.index(), 0);
    assert!(!watermarks::get(again.conn(), 0).await.unwrap().unwrap().online);
}

#[tokio::test]
async fn every_sequencer_of_a_database_uses_the_same_total_node_count() {
    let (cfg, _c) = setup().await;
    let first = node_index::acquire(&cfg, 5).await.unwrap();
    let err = node_index::acquire(&cfg, 10).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidConfig(_)) && !err.is_retryable(), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("total_node_count 10 differs from 5"), "{msg}");
    // The refused node did not keep an index.
    let mut second = node_index::acquire(&cfg, 5).await.unwrap();
    assert_ne!(second.index(), first.index());
    second.check().await.unwrap();
    // With every sequencer stopped, N may change.
    first.release().await.unwrap();
    second.release().await.unwrap();
    let changed = node_index::acquire(&cfg, 10).await.expect("N changes while no sequencer runs");
    let err = node_index::acquire(&cfg, 5).await.unwrap_err();
    assert!(err.to_string().contains("total_node_count 5 differs from 10"), "{err}");
    drop(changed);
}

#[tokio::test]
async fn bad_partitions_are_rejected_before_touching_the_database() {
    let cfg = DbConfig::new("postgres://nobody@127.0.0.1:1/none");
    let err = node_index::acquire(&cfg, 32).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidConfig(_)), "{err}");
    assert!(err.to_string().contains("total_node_count"));
}

/// The writer's statement tells listeners itself (no trigger): which members got events up to
/// which timestamp, and that its watermark moved; a watermark that cannot move (the node was
/// marked offline) is reported, and its batch stays uncovered. Repeated runs reuse the
/// session's prepared statement.
#[tokio::test]
async fn an_append_with_its_watermark_notifies_and_moves_only_an_online_watermark() {
    use futures_util::StreamExt;
    let (cfg, mut c) = setup().await;
    let mut listen = db::connect(&cfg, SessionKind::Lock).await.unwrap();
    listen.batch_execute("listen syncline_events; listen syncline_watermarks").await.unwrap();
    watermarks::go_online(&mut c, 0, 0).await.unwrap();
    let mut stream = std::pin::pin!(listen.notifications_stream());
    let mut next = async || {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap().unwrap().unwrap();
        (n.channel, n.payload)
    };
    assert_eq!(next().await, ("syncline_watermarks".into(), "0".into()), "going online");
    for round in 0..3 {
        let ts = 10 * (round + 1);
        let (a, covered) =
            events::append_covered(&mut c, 0, &[deliver(ts - 1, ALICE, &[BOB]), deliver(ts, BOB, &[CAROL])], ts)
                .await
                .unwrap();
        assert!(covered);
        assert_eq!(a.written, vec![ts - 1, ts]);
        let mut got = vec![next().await, next().await];
        got.sort();
        assert_eq!(
            got,
            vec![
                ("syncline_events".into(), format!("{ts}|{ALICE},{BOB},{CAROL}")),
                ("syncline_watermarks".into(), format!("0|{ts}"))
            ]
        );
    }
    assert_eq!(watermarks::get(&mut c, 0).await.unwrap().unwrap().watermark_ts, 30);
    // Marked offline meanwhile: the batch commits uncovered and the caller learns why.
    offline_mark(&mut c, 0).await;
    let _ = next().await; // the trigger reports the node going offline
    let (_, covered) = events::append_covered(&mut c, 0, &[deliver(41, ALICE, &[])], 41).await.unwrap();
    assert!(!covered);
    assert!(matches!(
        watermarks::explain_not_moved(&mut c, 0, 41).await.unwrap(),
        StoreError::MarkedOffline { node_index: 0 }
    ));
    assert_eq!(watermarks::get(&mut c, 0).await.unwrap().unwrap().watermark_ts, 30);
    assert_eq!(recovery::truncate(&mut c, 0).await.unwrap().events, 1, "the uncovered batch is truncated");
}

async fn offline_mark(c: &mut AsyncPgConnection, index: i32) {
    c.batch_execute(&format!("update sequencer_watermarks set online = false where node_index = {index}"))
        .await
        .unwrap();
}

/// A page is cut to the byte budget in the statement that reads it: the longest prefix whose
/// payloads fit, at least one event (an oversized one goes alone), and the cursor continues
/// right after the last event returned.
#[tokio::test]
async fn a_page_is_cut_to_the_byte_budget_in_one_read() {
    let (_cfg, mut c) = setup().await;
    online(&mut c, &[(0, 0)]).await;
    let sized = |ts: i64, n: usize| NewEvent { payload: Some(vec![7u8; n]), ..deliver(ts, ALICE, &[]) };
    events::append(&mut c, 0, &[sized(1, 40), sized(2, 40), sized(3, 40), sized(4, 400), sized(5, 10)]).await.unwrap();
    watermarks::save(&mut c, 0, 10).await.unwrap();
    let at = |after| events::Cursor::after(ALICE, after);
    let ts = |p: &events::Page| p.events.iter().map(|e| e.ts).collect::<Vec<_>>();
    let (all, limit) = events::read_within(&mut c, at(0), 100, 1000).await.unwrap();
    assert_eq!((ts(&all), limit), (vec![1, 2, 3, 4, 5], 100), "all fit: a full read");
    assert_eq!(all.next_cursor, 10, "not full: up to the cap");
    let (two, limit) = events::read_within(&mut c, at(0), 100, 100).await.unwrap();
    assert_eq!((ts(&two), limit, two.next_cursor), (vec![1, 2], 2, 2));
    let (big, limit) = events::read_within(&mut c, at(3), 100, 100).await.unwrap();
    assert_eq!((ts(&big), limit, big.next_cursor), (vec![4], 1, 4), "an oversized event still goes, alone");
    let (none, limit) = events::read_within(&mut c, at(5), 7, 100).await.unwrap();
    assert_eq!((ts(&none), limit, none.next_cursor), (vec![], 7, 10));
}

fn claiming(ts: i64, id: &str, max_sequencing_ts: i64) -> NewEvent {
    let mut e = deliver(ts, ALICE, &[BOB]);
    e.claim = Some(MessageIdClaim { sender: ALICE, message_id: id.into(), max_sequencing_ts, digest: vec![ts as u8] });
    e
}

#[tokio::test]
async fn a_batch_hitting_a_taken_claim_writes_the_others_once_and_names_the_collision() {
    // The batch's plain insert fails on the unique claim of "x" (taken and covered before); it
    // is written again skipping that event, with the watermark in the same statement.
    let (_cfg, mut c) = setup().await;
    online(&mut c, &[(0, 0), (1, 0)]).await;
    let (first, moved) = events::append_covered(&mut c, 0, &[claiming(10, "x", 1 << 40)], 10).await.unwrap();
    assert_eq!((first.written, moved), (vec![10], true));
    let batch = [claiming(21, "y", 1 << 40), claiming(31, "x", 1 << 40), claiming(41, "z", 1 << 40)];
    let (b, moved) = events::append_covered(&mut c, 1, &batch, 41).await.unwrap();
    assert_eq!((b.written, b.conflicts), (vec![21, 41], vec![31]));
    assert!(moved, "the retried batch moves its watermark");
    let x = events::claims(&mut c, &[(ALICE, "x")]).await.unwrap();
    assert_eq!(x.len(), 1);
    assert_eq!((x[0].ts, x[0].covered, x[0].digest.clone()), (10, true, Some(vec![10])), "the original claim");
    watermarks::save(&mut c, 0, 100).await.unwrap();
    assert_eq!(ts_of(&mut c, BOB, 0, 10).await, vec![10, 21, 41], "each event once");
    // A batch of fresh ids only takes the plain path and writes everything.
    let (d, _) =
        events::append_covered(&mut c, 1, &[claiming(51, "u", 1 << 40), claiming(61, "v", 1 << 40)], 61).await.unwrap();
    assert_eq!((d.written, d.conflicts), (vec![51, 61], vec![]));
}

#[tokio::test]
async fn events_without_a_claim_never_collide() {
    // Only claimed events hold their (sender, message id): unclaimed ones, with or without a
    // message id or a sender, are all written.
    let (_cfg, mut c) = setup().await;
    online(&mut c, &[(0, 100)]).await;
    let mut a = deliver(1, ALICE, &[BOB]);
    let mut b = deliver(2, ALICE, &[BOB]);
    a.message_id = Some("same".into());
    b.message_id = Some("same".into());
    let anon = |ts| {
        let mut e = deliver(ts, ALICE, &[BOB]);
        (e.message_id, e.sender) = (None, None);
        e
    };
    let written = events::append(&mut c, 0, &[a, b, anon(3), anon(4), claiming(5, "same", 1 << 40)]).await.unwrap();
    assert_eq!((written.written, written.conflicts), (vec![1, 2, 3, 4, 5], vec![]));
    assert_eq!(ts_of(&mut c, BOB, 0, 10).await, vec![1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn a_pruned_events_claim_answers_resends_until_it_expires() {
    use syncline_sequencer::store::pruning::{self, PruneOutcome};
    let (_cfg, mut c) = setup().await;
    online(&mut c, &[(0, 100)]).await;
    // "live" may still be resent; "old" passed its max-sequencing-time long ago.
    events::append(&mut c, 0, &[claiming(10, "live", 1 << 60), deliver(11, ALICE, &[BOB]), claiming(12, "old", 1)])
        .await
        .unwrap();
    let pruned = match pruning::prune(&mut c, 50).await.unwrap() {
        PruneOutcome::Pruned(p) => p,
        other => panic!("{other:?}"),
    };
    assert_eq!((pruned.events, pruned.payloads), (3, 3));
    assert_eq!(count(&mut c, "select count(*) as n from sequencer_event_recipients").await, 0);
    let rows = "select count(*) as n from sequencer_events where payload is null and cardinality(recipients) = 0";
    assert_eq!(count(&mut c, rows).await, 1, "one claim-only row: the live claim");
    assert_eq!(count(&mut c, "select count(*) as n from sequencer_events").await, 1);
    // A resend of the pruned event meets its claim: answered with its timestamp, not sequenced.
    let again =
        events::append(&mut c, 0, &[claiming(110, "live", 1 << 60), claiming(112, "old", 1 << 60)]).await.unwrap();
    assert_eq!((again.written, again.conflicts), (vec![112], vec![110]));
    let live = events::claims(&mut c, &[(ALICE, "live")]).await.unwrap();
    assert_eq!((live[0].ts, live[0].covered), (10, true));
    // Once it expired, the claim-only row goes (the event stays pruned) and the id is free.
    assert_eq!(events::expire_claims(&mut c, 1 << 59).await.unwrap(), 0, "not expired yet");
    assert_eq!(events::expire_claims(&mut c, (1 << 60) + 1).await.unwrap(), 1);
    assert!(events::claims(&mut c, &[(ALICE, "live")]).await.unwrap().is_empty());
    assert_eq!(events::append(&mut c, 0, &[claiming(120, "live", 1 << 60)]).await.unwrap().written, vec![120]);
}

#[tokio::test]
async fn a_member_registered_before_tokens_existed_gets_one_when_registered_again() {
    use syncline_sequencer::store::members;
    let (_cfg, mut c) = setup().await;
    let first = members::register(&mut c, "legacy", 1, b"hash-1").await.unwrap();
    assert!(first.token_issued);
    // As the token migration leaves a member registered before it.
    c.batch_execute("update sequencer_members set token_sha256 = null where member = 'legacy'").await.unwrap();
    let again = members::register(&mut c, "legacy", 2, b"hash-2").await.unwrap();
    assert!(again.token_issued, "a member without a token is issued one");
    assert_eq!(again.member.token_sha256.as_deref(), Some(&b"hash-2"[..]));
    let third = members::register(&mut c, "legacy", 3, b"hash-3").await.unwrap();
    assert!(!third.token_issued, "a member with a token keeps it");
    assert_eq!(third.member.token_sha256.as_deref(), Some(&b"hash-2"[..]));
}
