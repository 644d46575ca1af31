//! Subscriptions under a lost database session: the notification listener reconnects by
//! itself, a stream the server ends never ends with OK, health reports the listener, and the
//! number of subscriptions per node is bounded.

use crate::harness::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::sql_types::BigInt;
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use syncline_proto::sequencer::sequencer_service_client::SequencerServiceClient;
use syncline_proto::sequencer::{Event, SubscribeRequest};
use syncline_testkit::fresh_database;
use tonic::Code;

/// Send from alice to bob until OK, resending (same message id) while the node answers
/// UNAVAILABLE: these tests are about subscriptions, not the send path.
async fn send_until_ok(node: &Node, id: &str) {
    let req = send("alice", id, &["bob"], id);
    let start = Instant::now();
    loop {
        match node.client().await.send(req.clone()).await {
            Ok(_) => return,
            Err(e) if e.code() == Code::Unavailable && start.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("send {id}: {e:?}"),
        }
    }
}

/// What one subscriber saw: its events and how each of its streams ended.
#[derive(Default)]
struct Seen {
    events: Vec<Event>,
    ends: Vec<Result<(), tonic::Status>>,
}

/// Subscribe `bob` at `node`; on an error end, subscribe again after the last event when
/// `resubscribe` is set. An OK end is recorded and never resubscribed: it must not happen.
fn subscriber(node: &Node, resubscribe: bool) -> (Arc<Mutex<Seen>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (sink, url) = (seen.clone(), format!("http://{}", node.addr));
    let task = tokio::spawn(async move {
        loop {
            let after = sink.lock().unwrap().events.last().map(|e| e.timestamp);
            let opened = async {
                SequencerServiceClient::connect(url.clone())
                    .await
                    .ok()?
                    .subscribe(SubscribeRequest { member: "bob".into(), after })
                    .await
                    .ok()
            };
            let Some(stream) = opened.await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let mut stream = stream.into_inner();
            let end = loop {
                match stream.message().await {
                    Ok(Some(r)) => sink.lock().unwrap().events.push(r.event.unwrap()),
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            let ok_end = end.is_ok();
            sink.lock().unwrap().ends.push(end);
            if ok_end || !resubscribe {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (seen, task)
}

/// Wait until `seen` holds `n` events; fail on an OK end of stream or after `limit`.
async fn wait_events(seen: &Mutex<Seen>, n: usize, limit: Duration) {
    let start = Instant::now();
    loop {
        {
            let s = seen.lock().unwrap();
            assert!(!s.ends.iter().any(|e| e.is_ok()), "a subscription ended with OK after {} events", s.events.len());
            if s.events.len() >= n {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "only {} of {n} events within {limit:?}; stream ends: {:?}",
                s.events.len(),
                s.ends
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Exactly the bodies `m0..m{n-1}`, each once, in order, chained by previous timestamps.
fn check_exactly(seen: &Seen, n: usize) {
    let bodies: Vec<String> =
        seen.events.iter().map(|e| String::from_utf8_lossy(&e.envelopes[0].content).into_owned()).collect();
    let want: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
    assert_eq!(bodies, want, "each event once, in order");
    for w in seen.events.windows(2) {
        assert_eq!(w[1].previous_timestamp, Some(w[0].timestamp), "previous timestamps chain");
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn count(url: &str, sql: &str) -> i64 {
    let mut c = AsyncPgConnection::establish(url).await.unwrap();
    count_on(&mut c, sql).await
}

async fn count_on(c: &mut AsyncPgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql).get_result::<Count>(c).await.unwrap().n
}

const LISTENERS: &str =
    "select count(*)::bigint as n from pg_stat_activity where datname = current_database() and query like 'listen %'";
const KILL_LISTENERS: &str = "select count(pg_terminate_backend(pid))::bigint as n from pg_stat_activity \
     where datname = current_database() and query like 'listen %' and pid <> pg_backend_pid()";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_the_listen_session_under_subscriptions_loses_nothing() {
    let tdb = fresh_database().await;
    // Polling is off in practice: only notifications deliver within the test's limits.
    let node = Node::start(&tdb.url, "s", |s| s.polling_interval = Duration::from_secs(600)).await;
    node.wait_serving_within(Duration::from_secs(20)).await;
    node.register(&["alice", "bob"]).await;
    let (seen, task) = subscriber(&node, false);
    let mut sent = 0;
    for round in 0..3 {
        for _ in 0..5 {
            send_until_ok(&node, &format!("m{sent}")).await;
            sent += 1;
        }
        wait_events(&seen, sent, Duration::from_secs(10)).await;
        assert_eq!(count(&tdb.url, KILL_LISTENERS).await, 1, "round {round}: one LISTEN session to terminate");
        let start = Instant::now();
        while count(&tdb.url, LISTENERS).await < 1 {
            assert!(start.elapsed() < Duration::from_secs(10), "round {round}: LISTEN never came back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!("round {round}: listening again after {:?}", start.elapsed());
    }
    for _ in 0..5 {
        send_until_ok(&node, &format!("m{sent}")).await;
        sent += 1;
    }
    wait_events(&seen, sent, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    check_exactly(&seen.lock().unwrap(), sent);
    assert!(seen.lock().unwrap().ends.is_empty(), "the stream keeps running");
    assert!(node.seq().health().serving, "{}", node.seq().health().detail);
    node.shutdown().await;
    // At shutdown the stream ends, and not with OK.
    tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
    let ends = &seen.lock().unwrap().ends;
    assert!(matches!(ends.as_slice(), [Err(e)] if e.code() == Code::Unavailable), "{ends:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_listen_stops_serving_and_serves_again_once_it_can() {
    let tdb = fresh_database().await;
    let node = Node::start(&tdb.url, "s", |_| {}).await;
    node.wait_serving_within(Duration::from_secs(20)).await;
    let admin_url = syncline_testkit::pg::server().url("postgres");
    let allow = |on: bool| {
        let (url, name) = (admin_url.clone(), tdb.name.clone());
        async move {
            let mut c = AsyncPgConnection::establish(&url).await.unwrap();
            diesel::sql_query(format!("alter database \"{name}\" with allow_connections {on}"))
                .execute(&mut c)
                .await
                .unwrap();
        }
    };
    // New sessions are refused, existing ones (writer, pool) go on: only the listener is lost.
    let mut c = AsyncPgConnection::establish(&tdb.url).await.unwrap();
    let start = Instant::now();
    while count_on(&mut c, LISTENERS).await < 1 {
        assert!(start.elapsed() < Duration::from_secs(10), "the node never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    allow(false).await;
    assert_eq!(count_on(&mut c, KILL_LISTENERS).await, 1);
    let start = Instant::now();
    while node.seq().health().serving {
        assert!(start.elapsed() < Duration::from_secs(10), "still serving without a listener");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let h = node.seq().health();
    assert!(h.detail.contains("notification listener down"), "{}", h.detail);
    allow(true).await;
    node.wait_serving_within(Duration::from_secs(10)).await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_under_subscriptions_never_ends_a_stream_with_ok() {
    // A cluster of its own: the restart must not disturb the other tests of this binary.
    let mut server = tokio::task::spawn_blocking(syncline_testkit::pg::start_cluster).await.unwrap().unwrap();
    let url = server.create_database("restart").await.unwrap();
    let node = Node::start(&url, "s", |_| {}).await;
    node.wait_serving_within(Duration::from_secs(30)).await;
    node.register(&["alice", "bob"]).await;
    let (seen, _task) = subscriber(&node, true);
    for i in 0..10 {
        send_until_ok(&node, &format!("m{i}")).await;
    }
    wait_events(&seen, 10, Duration::from_secs(10)).await;
    let server = tokio::task::spawn_blocking(move || {
        server.restart(Duration::from_secs(1)).unwrap();
        server
    })
    .await
    .unwrap();
    node.wait_serving_within(Duration::from_secs(60)).await;
    for i in 10..20 {
        send_until_ok(&node, &format!("m{i}")).await;
    }
    wait_events(&seen, 20, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    {
        let s = seen.lock().unwrap();
        check_exactly(&s, 20);
        for end in &s.ends {
            let e = end.as_ref().expect_err("never an OK end");
            assert_eq!(e.code(), Code::Unavailable, "{e:?}");
        }
        println!("streams ended {} times during the restart", s.ends.len());
    }
    // A new subscription receives everything.
    let (fresh, _t) = subscriber(&node, false);
    wait_events(&fresh, 20, Duration::from_secs(10)).await;
    check_exactly(&fresh.lock().unwrap(), 20);
    node.shutdown().await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_beyond_the_limit_are_refused_with_resource_exhausted() {
    let tdb = fresh_database().await;
    let node = Node::start(&tdb.url, "s", |s| s.max_subscriptions = 3).await;
    node.wait_serving_within(Duration::from_secs(20)).await;
    node.register(&["alice", "bob"]).await;
    let mut c = node.client().await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(c.subscribe(SubscribeRequest { member: "bob".into(), after: None }).await.unwrap().into_inner());
    }
    let e = c.subscribe(SubscribeRequest { member: "alice".into(), after: None }).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("maximum of 3 subscriptions"), "{}", e.message());
    // A subscription that goes away frees its slot.
    drop(open.pop());
    let start = Instant::now();
    loop {
        match c.subscribe(SubscribeRequest { member: "alice".into(), after: None }).await {
            Ok(s) => {
                open.push(s.into_inner());
                break;
            }
            Err(e) if e.code() == Code::ResourceExhausted && start.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("the freed slot is not reusable: {e:?}"),
        }
    }
    // The open ones still deliver.
    send_until_ok(&node, "m0").await;
    for s in &mut open[..2] {
        let ev = tokio::time::timeout(Duration::from_secs(10), s.message()).await.unwrap().unwrap().unwrap();
        assert_eq!(ev.event.unwrap().envelopes[0].content, b"m0");
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caught_up_subscription_reads_at_most_once_per_read_spacing() {
    let reads = || sample("syncline_sequencer_reads_total{node=\"spaced\"}");
    reads(); // the recorder, before the node
    let tdb = fresh_database().await;
    let spacing = Duration::from_millis(300);
    let n = Node::start(&tdb.url, "spaced", |s| s.read_spacing = spacing).await;
    n.wait_serving().await;
    n.register(&["alice", "bob"]).await;
    let mut stream =
        n.client().await.subscribe(SubscribeRequest { member: "bob".into(), after: None }).await.unwrap().into_inner();
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let a = arrivals.clone();
    let reader = tokio::spawn(async move {
        while let Ok(Some(r)) = stream.message().await {
            a.lock().unwrap().push((r.event.unwrap().timestamp, Instant::now()));
        }
    });
    // 30 sends one after the other: each its own batch, each moving the watermark.
    let mut c = n.client().await;
    c.send(send("alice", "first", &["bob"], "x")).await.unwrap();
    wait_until(Duration::from_secs(10), || !arrivals.lock().unwrap().is_empty()).await;
    let before = reads();
    let started = Instant::now();
    for i in 0..30 {
        c.send(send("alice", &format!("s{i:02}"), &["bob"], "x")).await.unwrap();
    }
    let sending = started.elapsed();
    let during = reads() - before;
    wait_until(Duration::from_secs(10), || arrivals.lock().unwrap().len() >= 31).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    reader.abort();
    let got = arrivals.lock().unwrap().clone();
    assert_eq!(got.len(), 31, "every event once");
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "in timestamp order");
    // One read per spacing at most (plus the one under way when the sends began).
    let most = (sending.as_millis() / spacing.as_millis()) as f64 + 2.0;
    assert!(during <= most, "{during} reads for 30 sends over {sending:?} (spacing {spacing:?}: at most {most})");
    n.shutdown().await;
}
