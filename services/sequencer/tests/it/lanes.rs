//! Writer lanes: two writer tasks per process, each with its own node index, lock session and
//! watermark, taking batches from the node's one send queue; idle lanes move past a sibling's
//! batch at once; a lane that loses its session recovers while the other goes on serving.

use crate::harness::*;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Integer};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use syncline_coordination::db::{self, SessionKind};
use syncline_coordination::{locks, DbConfig};
use syncline_proto::sequencer::{Event, SequencerStatusRequest, SubscribeRequest};
use syncline_sequencer::store::events::{self, EventKind, MessageIdClaim, NewEvent};
use syncline_sequencer::store::node_index::index_lock;
use syncline_sequencer::store::timestamps::now_micros;
use syncline_testkit::fresh_database;
use tokio_util::sync::CancellationToken;

#[derive(diesel::QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Wait until every lane of `node` is online; their indexes, by lane.
async fn lanes_online(node: &Node) -> Vec<u32> {
    let start = Instant::now();
    loop {
        let lanes = node.seq().writer().lanes();
        if lanes.iter().all(|l| l.is_running()) {
            return lanes.iter().map(|l| l.node_index().unwrap()).collect();
        }
        assert!(start.elapsed() < Duration::from_secs(20), "lanes not online: {}", node.seq().writer().detail());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every event's `previous_timestamp` names the event before it: one gap-free order.
fn assert_chain(events: &[Event]) {
    for w in events.windows(2) {
        assert!(w[1].timestamp > w[0].timestamp, "out of order: {events:?}");
        assert_eq!(w[1].previous_timestamp, Some(w[0].timestamp), "a gap in the order");
    }
}

/// One lane is held inside its commit (its insert waits on a message-id claim taken by an
/// uncommitted transaction of the test's own) while further sends are answered by the other
/// lane from the same queue; once released, events of both lanes' partitions reach the
/// subscriber in one gap-free order, and status and health name both indexes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_lanes_take_two_indexes_and_a_busy_lane_does_not_hold_the_others_sends() {
    let tdb = fresh_database().await;
    let cfg = DbConfig::new(&tdb.url);
    let a = Node::start(&tdb.url, "a", |s| {
        s.writer_lanes = 2;
        s.write_timeout = Duration::from_secs(30);
    })
    .await;
    let indexes = lanes_online(&a).await;
    assert_eq!(indexes.len(), 2);
    assert_ne!(indexes[0], indexes[1], "each lane takes an index of its own");
    a.register(&["alice", "bob"]).await;
    let mut holder = db::connect(&cfg, SessionKind::Pooled).await.unwrap();
    take_claim(&a, &mut holder, "blocked").await;
    let mut c = db::connect(&cfg, SessionKind::Pooled).await.unwrap();
    let mut client = a.client().await;
    let blocked = tokio::spawn(async move { client.send(send("alice", "blocked", &["bob"], "b")).await });
    waiting_backend(&mut c).await;
    // The other lane answers these at once, from the same queue.
    let mut others = Vec::new();
    for i in 0..5 {
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            a.client().await.send(send("alice", &format!("m{i}"), &["bob"], format!("x{i}"))),
        )
        .await
        .expect("answered while the other lane is busy")
        .unwrap();
        others.push(r.into_inner().timestamp);
    }
    assert!(!blocked.is_finished(), "the blocked send is held by its lane");
    holder.batch_execute("rollback").await.unwrap();
    let blocked = blocked.await.unwrap().expect("answered once its lane could commit").into_inner().timestamp;

    let n = i64::from(TOTAL_NODES);
    let partitions: HashSet<i64> = others.iter().chain([&blocked]).map(|ts| ts % n).collect();
    let expected: HashSet<i64> = indexes.iter().map(|&i| i64::from(i)).collect();
    assert_eq!(partitions, expected, "events of both lanes' partitions");
    let bob = collect(&a, "bob", None, 6, Duration::from_secs(20)).await;
    assert_chain(&bob);
    let mut ts: Vec<i64> = others.clone();
    ts.push(blocked);
    ts.sort_unstable();
    assert_eq!(bob.iter().map(|e| e.timestamp).collect::<Vec<_>>(), ts, "each OK'd send once, at its timestamp");

    // Status and health name both lanes' indexes.
    let st = a.admin().await.status(SequencerStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(st.lane_indexes, indexes);
    assert_eq!(st.node_index, Some(indexes[0]));
    let components = syncline_node::NodeHealth::components(&a.seq().status());
    let shown = components.iter().find(|(k, _)| k == "node_index").unwrap().1.clone();
    assert_eq!(shown, format!("{}, {}", indexes[0], indexes[1]));
    a.shutdown().await;
}

/// With keep-alives 5 s apart, a send on a two-lane node is delivered well before 5 s: the lane
/// that did not write it moves its watermark past the batch at once instead of at its next
/// keep-alive (readers stop at the lowest online watermark).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_lane_does_not_hold_readers_back() {
    let tdb = fresh_database().await;
    let a = Node::start(&tdb.url, "a", |s| {
        s.writer_lanes = 2;
        s.keep_alive_interval = Duration::from_secs(5);
    })
    .await;
    lanes_online(&a).await;
    a.register(&["alice", "bob"]).await;
    let mut stream =
        a.client().await.subscribe(SubscribeRequest { member: "bob".into(), after: None }).await.unwrap().into_inner();
    for i in 0..3 {
        let sent = Instant::now();
        let ts =
            a.client().await.send(send("alice", &format!("m{i}"), &["bob"], "x")).await.unwrap().into_inner().timestamp;
        let event = tokio::time::timeout(Duration::from_secs(10), stream.message()).await.unwrap().unwrap().unwrap();
        let took = sent.elapsed();
        assert_eq!(event.event.unwrap().timestamp, ts);
        assert!(took < Duration::from_millis(1500), "send {i} delivered after {took:?}: held by the idle lane");
    }
    a.shutdown().await;
}

/// A lane whose lock session is killed (pg_terminate_backend) while it holds a send inside its
/// commit recovers by itself and then answers that send OK, while the other lane goes on
/// writing and the node goes on serving; every send reaches the subscriber exactly once at its
/// OK'd timestamp, and nothing is stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_whose_session_is_killed_recovers_while_the_other_serves() {
    let tdb = fresh_database().await;
    let cfg = DbConfig::new(&tdb.url);
    let a = Node::start(&tdb.url, "a", |s| {
        s.writer_lanes = 2;
        s.write_timeout = Duration::from_secs(20);
    })
    .await;
    let indexes = lanes_online(&a).await;
    a.wait_serving().await;
    a.register(&["alice", "bob"]).await;
    let mut c = db::connect(&cfg, SessionKind::Pooled).await.unwrap();
    // The lane that takes "held" waits inside its commit on a claim of the test's own.
    let mut holder = db::connect(&cfg, SessionKind::Pooled).await.unwrap();
    take_claim(&a, &mut holder, "held").await;
    let mut client = a.client().await;
    let held = tokio::spawn(async move { client.send(send("alice", "held", &["bob"], "held")).await });
    let killed = waiting_backend(&mut c).await;
    let mut lane = None;
    for (l, &i) in indexes.iter().enumerate() {
        if locks::holder_pid(&mut c, index_lock(i)).await.unwrap() == Some(killed) {
            lane = Some(l);
        }
    }
    let lane = lane.expect("the waiting backend is a lane's lock session");

    // The node must serve throughout.
    let stop = CancellationToken::new();
    let watcher = {
        let (stop, health) = (stop.clone(), a.seq().health_watch());
        tokio::spawn(async move {
            let mut down = Vec::new();
            while !stop.is_cancelled() {
                let h = health.borrow().clone();
                if !h.serving {
                    down.push(h.detail);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            down
        })
    };
    diesel::sql_query("select pg_terminate_backend($1)").bind::<Integer, _>(killed).execute(&mut c).await.unwrap();
    holder.batch_execute("rollback").await.unwrap();
    let mut oks: HashMap<String, i64> = HashMap::new();
    for i in 0..40 {
        let id = format!("m{i}");
        let r = tokio::time::timeout(Duration::from_secs(5), a.client().await.send(send("alice", &id, &["bob"], &id)))
            .await
            .expect("the other lane answers meanwhile")
            .unwrap();
        oks.insert(id, r.into_inner().timestamp);
    }
    let ts = tokio::time::timeout(Duration::from_secs(20), held)
        .await
        .expect("the held send is answered")
        .unwrap()
        .expect("the failed lane keeps the send it held and answers it OK once it recovered")
        .into_inner()
        .timestamp;
    oks.insert("held".into(), ts);
    // The lane is back, on a session of its own, and the node kept serving meanwhile.
    let start = Instant::now();
    while !a.seq().writer().lanes()[lane].is_running() {
        assert!(start.elapsed() < Duration::from_secs(20), "the lane did not recover: {}", a.seq().writer().detail());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let index = a.seq().writer().lanes()[lane].node_index().unwrap();
    let now_held_by = locks::holder_pid(&mut c, index_lock(index)).await.unwrap();
    assert!(now_held_by.is_some() && now_held_by != Some(killed), "the lane holds its index on a new session");
    stop.cancel();
    let down = watcher.await.unwrap();
    assert!(down.is_empty(), "the node stopped serving: {down:?}");

    let bob = collect(&a, "bob", None, oks.len(), Duration::from_secs(30)).await;
    assert_chain(&bob);
    let mut delivered = HashSet::new();
    for e in &bob {
        let id = String::from_utf8(e.envelopes[0].content.clone()).unwrap();
        assert_eq!(oks.get(&id), Some(&e.timestamp), "{id} delivered at the timestamp its OK named");
        assert!(delivered.insert(id.clone()), "{id} delivered twice");
    }
    assert_eq!(delivered.len(), oks.len(), "every OK'd send delivered");
    let stored: N = diesel::sql_query("select count(*) as n from sequencer_events").get_result(&mut c).await.unwrap();
    assert_eq!(stored.n, oks.len() as i64, "nothing stored twice");
    a.shutdown().await;
}

/// Take alice's claim on `id` in a transaction left open on `holder` (an event of a spare
/// index): a lane whose batch carries that send waits inside its commit until it ends.
async fn take_claim(node: &Node, holder: &mut diesel_async::AsyncPgConnection, id: &str) {
    let alice = node.seq().members().lookup("alice").await.unwrap().unwrap().id;
    holder.batch_execute("begin").await.unwrap();
    let spare = TOTAL_NODES - 1;
    let claim = NewEvent {
        ts: i64::from(spare),
        kind: EventKind::Deliver,
        message_id: Some(id.into()),
        sender: Some(alice),
        recipients: vec![alice],
        payload: None,
        error: None,
        claim: Some(MessageIdClaim {
            sender: alice,
            message_id: id.into(),
            max_sequencing_ts: now_micros() + 60_000_000,
            digest: Vec::new(),
        }),
    };
    events::append(holder, spare, &[claim]).await.unwrap();
}

/// The backend pid of the session waiting on a lock (a lane inside its commit).
async fn waiting_backend(c: &mut diesel_async::AsyncPgConnection) -> i32 {
    #[derive(diesel::QueryableByName)]
    struct Pid {
        #[diesel(sql_type = Integer)]
        pid: i32,
    }
    let waiting = "select pid from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'";
    let start = Instant::now();
    loop {
        let found: Vec<Pid> = diesel::sql_query(waiting).get_results(c).await.unwrap();
        if let Some(p) = found.into_iter().next() {
            return p.pid;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no lane waited on the taken claim");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
