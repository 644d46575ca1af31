//! Acknowledgements and pruning against in-process sequencer nodes and one real PostgreSQL:
//! pruning stops at the slowest acknowledgement and at what readers could have read, never
//! removes uncovered events, acknowledgements are validated, a stream left behind a prune
//! ends OUT_OF_RANGE, and previous timestamps after pruning respect per-node visibility.

use crate::harness::*;
use std::collections::HashMap;
use std::time::Duration;

use diesel::sql_types::BigInt;
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use syncline_coordination::db::{self, SessionKind};
use syncline_coordination::locks;
use syncline_coordination::DbConfig;
use syncline_proto::sequencer::sequencer_service_client::SequencerServiceClient;
use syncline_proto::sequencer::{AcknowledgeRequest, PruneRequest, PruningStatusRequest, SubscribeRequest};
use syncline_sequencer::store::events::{self, EventKind, NewEvent, BROADCAST};
use syncline_sequencer::store::timestamps::now_micros;
use syncline_sequencer::store::watermarks;
use syncline_testkit::fresh_database;
use tonic::Code;

const N: i64 = TOTAL_NODES as i64;

/// A node that keeps test sessions holding an index without advancing it online, serving.
async fn node(db_url: &str, name: &str) -> Node {
    // Test sessions that hold an index without advancing it stay online.
    let n = Node::start(db_url, name, |s| s.offline_duration = Duration::from_secs(600)).await;
    n.wait_serving_within(Duration::from_secs(30)).await;
    n
}

async fn ack(node: &Node, member: &str, timestamp: i64) -> Result<(), tonic::Status> {
    node.client().await.acknowledge(AcknowledgeRequest { member: member.into(), timestamp }).await.map(|_| ())
}

/// A connection holding sequencer index `index`, online at `wm`: a node that took its index
/// and then froze (it writes only what the test makes it write).
async fn frozen_node(cfg: &DbConfig, index: u32, wm: i64) -> AsyncPgConnection {
    let mut c = db::connect(cfg, SessionKind::Lock).await.unwrap();
    assert!(locks::try_lock(&mut c, syncline_sequencer::store::node_index::index_lock(index)).await.unwrap());
    watermarks::go_online(&mut c, index, wm).await.unwrap();
    c
}

/// The smallest timestamp of node `index` at or above `at`.
fn ts_of(index: i64, at: i64) -> i64 {
    at + (index - at).rem_euclid(N)
}

/// An event of no one in particular (no sender), to `recipients`.
fn raw_event(ts: i64, recipients: Vec<i32>) -> NewEvent {
    NewEvent {
        ts,
        kind: EventKind::Deliver,
        message_id: None,
        sender: None,
        recipients,
        payload: Some(Vec::new()),
        error: None,
        claim: None,
    }
}

async fn member_ids(c: &mut AsyncPgConnection) -> HashMap<String, i32> {
    #[derive(QueryableByName)]
    struct M {
        #[diesel(sql_type = diesel::sql_types::Text)]
        member: String,
        #[diesel(sql_type = diesel::sql_types::Integer)]
        id: i32,
    }
    let rows: Vec<M> = diesel::sql_query("select member, id from sequencer_members").load(c).await.unwrap();
    rows.into_iter().map(|m| (m.member, m.id)).collect()
}

/// How many rows of the event at `ts` remain: events, recipient rows, payloads (in the events row).
async fn rows_of(c: &mut AsyncPgConnection, ts: i64) -> (i64, i64, i64) {
    #[derive(QueryableByName)]
    struct Counts {
        #[diesel(sql_type = BigInt)]
        e: i64,
        #[diesel(sql_type = BigInt)]
        r: i64,
        #[diesel(sql_type = BigInt)]
        p: i64,
    }
    let n: Counts = diesel::sql_query(
        "select (select count(*) from sequencer_events where ts = $1) as e, \
         (select count(*) from sequencer_event_recipients where ts = $1) as r, \
         (select count(*) from sequencer_events where ts = $1 and payload is not null) as p",
    )
    .bind::<BigInt, _>(ts)
    .get_result(c)
    .await
    .unwrap();
    (n.e, n.r, n.p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_stops_at_the_slowest_acknowledgement() {
    let tdb = fresh_database().await;
    let n = node(&tdb.url, "s").await;
    n.register(&["alice", "bob"]).await;
    let mut c = n.client().await;
    for i in 0..5 {
        c.send(send("alice", &format!("m{i}"), &["bob"], b"x")).await.unwrap();
    }
    let evs = collect(&n, "bob", None, 5, Duration::from_secs(20)).await;
    let mut admin = n.admin().await;
    ack(&n, "bob", evs[3].timestamp).await.unwrap();
    // alice acknowledged nothing: pruning past her registration is refused, naming her.
    let refused = admin.prune(PruneRequest { before: evs[3].timestamp }).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("alice"), "{}", refused.message());
    ack(&n, "alice", evs[4].timestamp).await.unwrap();
    let st = admin.pruning_status(PruningStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(st.safe_pruning_timestamp, evs[3].timestamp);
    let too_far = admin.prune(PruneRequest { before: evs[4].timestamp }).await.unwrap_err();
    assert_eq!(too_far.code(), Code::FailedPrecondition);
    let pruned = admin.prune(PruneRequest { before: evs[3].timestamp }).await.unwrap().into_inner();
    assert_eq!(pruned.events_removed, 3);
    assert_eq!(pruned.payloads_removed, 3);
    let bound = admin.pruning_status(PruningStatusRequest {}).await.unwrap().into_inner().lower_bound.unwrap();
    // Reading from before the bound is refused; from the bound it continues with a correct chain.
    let gone = c.subscribe(SubscribeRequest { member: "bob".into(), after: Some(evs[0].timestamp) }).await.unwrap_err();
    assert_eq!(gone.code(), Code::OutOfRange);
    assert!(gone.message().contains("pruned"), "{}", gone.message());
    let rest = collect(&n, "bob", Some(bound), 2, Duration::from_secs(10)).await;
    assert_eq!(rest[0].timestamp, evs[3].timestamp);
    assert_eq!(rest[0].previous_timestamp, Some(evs[2].timestamp), "previous timestamp survives pruning");
    n.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_never_passes_what_readers_could_read_nor_removes_uncovered_events() {
    let tdb = fresh_database().await;
    let cfg = DbConfig::new(&tdb.url);
    db::migrate(&cfg).await.unwrap();
    // Index 3 is held by a frozen node whose watermark stays at `wm`; it wrote an event above
    // it (not yet covered: it may be truncated, or covered once the node goes on).
    let wm = now_micros();
    let mut frozen = frozen_node(&cfg, 3, wm).await;
    let a = node(&tdb.url, "a").await;
    let uncovered = ts_of(3, now_micros() + 1_000);
    let written = events::append(&mut frozen, 3, &[raw_event(uncovered, vec![BROADCAST])]).await.unwrap().written;
    assert_eq!(written, vec![uncovered]);
    let mut admin = a.admin().await;
    // No member is enabled: the safe point is what readers can read (the frozen node's
    // watermark holds it back), not the wall clock.
    let st = admin.pruning_status(PruningStatusRequest {}).await.unwrap().into_inner();
    assert!(st.safe_pruning_timestamp <= wm, "safe point {} passes the safe watermark {wm}", st.safe_pruning_timestamp);
    let refused = admin.prune(PruneRequest { before: now_micros() }).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{}", refused.message());
    assert!(refused.message().contains("safe pruning point"), "{}", refused.message());
    admin.prune(PruneRequest { before: st.safe_pruning_timestamp }).await.unwrap();
    assert_eq!(rows_of(&mut frozen, uncovered).await, (1, 1, 1), "an uncovered event was pruned");
    // Its node may still cover it: it must be there, whole.
    watermarks::save(&mut frozen, 3, uncovered).await.unwrap();
    assert_eq!(rows_of(&mut frozen, uncovered).await, (1, 1, 1));
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_are_validated_and_only_move_forward() {
    let tdb = fresh_database().await;
    let a = node(&tdb.url, "a").await;
    a.register(&["alice", "bob"]).await;
    let ok = a.client().await.send(send("alice", "m", &["bob"], b"x")).await.unwrap().into_inner().timestamp;
    let ev = collect(&a, "bob", None, 1, Duration::from_secs(20)).await.remove(0);
    assert_eq!(ev.timestamp, ok);
    // bob cannot have received what no reader can read yet.
    let future = ack(&a, "bob", now_micros() + 60_000_000).await.unwrap_err();
    assert_eq!(future.code(), Code::InvalidArgument, "{}", future.message());
    assert!(future.message().contains("bob") && future.message().contains("readable"), "{}", future.message());
    let mut admin = a.admin().await;
    let acked = |st: &syncline_proto::sequencer::PruningStatusResponse| {
        st.laggards.iter().find(|m| m.member == "bob").and_then(|m| m.acknowledged)
    };
    let st = admin.pruning_status(PruningStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(acked(&st), None, "the refused acknowledgement left no trace");
    assert!(st.safe_pruning_timestamp < now_micros());
    // Forward only.
    ack(&a, "bob", ev.timestamp).await.unwrap();
    ack(&a, "bob", ev.timestamp - 1).await.unwrap();
    let st = admin.pruning_status(PruningStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(acked(&st), Some(ev.timestamp));
    // Unknown and disabled members cannot acknowledge; a disable counts at once, on every node.
    let unknown = ack(&a, "mallory", ev.timestamp).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{}", unknown.message());
    let mut c = db::connect(&DbConfig::new(&tdb.url), SessionKind::Pooled).await.unwrap();
    diesel::sql_query("update sequencer_members set enabled = false where member = 'bob'")
        .execute(&mut c)
        .await
        .unwrap();
    let disabled = ack(&a, "bob", ev.timestamp).await.unwrap_err();
    assert_eq!(disabled.code(), Code::PermissionDenied, "{}", disabled.message());
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_left_behind_a_prune_ends_out_of_range_instead_of_skipping() {
    let tdb = fresh_database().await;
    // Small queues, so a subscriber that does not read holds its reader back early.
    let a = Node::start(&tdb.url, "a", |s| {
        s.offline_duration = Duration::from_secs(600);
        s.max_request_size = 128 * 1024;
        s.subscription_buffer_bytes = 128 * 1024;
    })
    .await;
    a.wait_serving_within(Duration::from_secs(30)).await;
    a.register(&["alice", "bob"]).await;
    let window = tonic::transport::Endpoint::from_shared(format!("http://{}", a.addr))
        .unwrap()
        .initial_stream_window_size(Some(65_535))
        .initial_connection_window_size(Some(65_535))
        .connect()
        .await
        .unwrap();
    let mut slow = SequencerServiceClient::new(window)
        .subscribe(SubscribeRequest { member: "bob".into(), after: None })
        .await
        .unwrap()
        .into_inner();
    const SENDS: usize = 30;
    let body = vec![7u8; 100 * 1024];
    let mut c = a.client().await;
    for i in 0..SENDS {
        c.send(send("alice", &format!("m{i}"), &["bob"], &body)).await.unwrap();
    }
    // bob reads everything on another stream and acknowledges it; the slow stream's reader
    // is stuck a few events in, behind its full queue.
    let all = collect(&a, "bob", None, SENDS, Duration::from_secs(60)).await;
    let first = slow.message().await.unwrap().unwrap().event.unwrap();
    assert_eq!(first.timestamp, all[0].timestamp);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let last = all[SENDS - 1].timestamp;
    ack(&a, "bob", last).await.unwrap();
    ack(&a, "alice", last).await.unwrap();
    let pruned = a.admin().await.prune(PruneRequest { before: all[20].timestamp }).await.unwrap().into_inner();
    assert_eq!(pruned.events_removed, 20);
    // The slow stream gets what it had queued, in order and gap-free, then OUT_OF_RANGE:
    // never an event past the pruned range as if nothing was missing.
    let mut got = vec![first];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let end = loop {
        match tokio::time::timeout_at(deadline, slow.message()).await {
            Ok(Ok(Some(r))) => got.push(r.event.unwrap()),
            Ok(Ok(None)) => panic!("the stream ended OK after {} events", got.len()),
            Ok(Err(status)) => break status,
            Err(_) => panic!(
                "the stream neither ended nor stopped: got {:?}",
                got.iter().map(|e| e.timestamp).collect::<Vec<_>>()
            ),
        }
    };
    let got: Vec<i64> = got.iter().map(|e| e.timestamp).collect();
    let expected: Vec<i64> = all.iter().take(got.len()).map(|e| e.timestamp).collect();
    assert_eq!(got, expected, "the slow stream skipped pruned events");
    assert!(got.len() < 20, "the stream was not behind the prune: {} events", got.len());
    assert_eq!(end.code(), Code::OutOfRange, "{}", end.message());
    assert!(end.message().contains("pruned"), "{}", end.message());
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previous_timestamps_after_pruning_skip_events_no_reader_could_see() {
    let tdb = fresh_database().await;
    let cfg = DbConfig::new(&tdb.url);
    db::migrate(&cfg).await.unwrap();
    // Index 3 went online and then offline at `wm`, but its holder lives on (so nobody sweeps
    // its tail) and writes above its watermark: invisible events, up to their truncation.
    let wm = now_micros();
    let mut offline = frozen_node(&cfg, 3, wm).await;
    watermarks::go_offline(&mut offline, 3).await.unwrap();
    let a = node(&tdb.url, "a").await;
    a.register(&["alice", "bob"]).await;
    let bob = member_ids(&mut offline).await["bob"];
    let mut c = a.client().await;
    let e1 = c.send(send("alice", "e1", &["bob"], b"1")).await.unwrap().into_inner().timestamp;
    let e2 = c.send(send("alice", "e2", &["bob"], b"2")).await.unwrap().into_inner().timestamp;
    let hidden = ts_of(3, e2 + 1);
    let written = events::append(&mut offline, 3, &[raw_event(hidden, vec![bob])]).await.unwrap().written;
    assert_eq!(written, vec![hidden]);
    let e3 = c.send(send("alice", "e3", &["bob"], b"3")).await.unwrap().into_inner().timestamp;
    assert!(e2 < hidden && hidden < e3);
    let evs = collect(&a, "bob", None, 3, Duration::from_secs(20)).await;
    let seen: Vec<(i64, Option<i64>)> = evs.iter().map(|e| (e.timestamp, e.previous_timestamp)).collect();
    assert_eq!(seen, vec![(e1, None), (e2, Some(e1)), (e3, Some(e2))], "the offline node's event is invisible");
    ack(&a, "alice", e3).await.unwrap();
    ack(&a, "bob", e3).await.unwrap();
    let mut admin = a.admin().await;
    let pruned = admin.prune(PruneRequest { before: e3 }).await.unwrap().into_inner();
    assert_eq!(pruned.events_removed, 2, "e1 and e2, not the uncovered event");
    assert_eq!(rows_of(&mut offline, hidden).await, (1, 1, 1), "an uncovered event was pruned");
    // bob, resubscribing at the bound, gets e3 with the previous timestamp it was delivered with.
    let bound = admin.pruning_status(PruningStatusRequest {}).await.unwrap().into_inner().lower_bound.unwrap();
    let again = collect(&a, "bob", Some(bound), 1, Duration::from_secs(10)).await;
    assert_eq!((again[0].timestamp, again[0].previous_timestamp), (e3, Some(e2)));
    a.shutdown().await;
}
