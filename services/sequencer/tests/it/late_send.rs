//! A send that becomes late (its max-sequencing-time passes) on one node while another
//! node's attempt with the same message id is in flight, held deterministically: a second
//! session row-locks that node's watermark row, so its attempt is committed but not covered
//! until the test lets go. FAILED_PRECONDITION must come only once the safe watermark has
//! passed the deadline, and the event is never sequenced twice.

use crate::harness::*;
use std::time::Duration;

use diesel::sql_types::{BigInt, Integer, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use syncline_coordination::db::{self, SessionKind};
use syncline_coordination::DbConfig;
use syncline_proto::sequencer::{SendRequest, SequencerStatusRequest};
use syncline_sequencer::store::timestamps::now_micros;
use syncline_sequencer::store::watermarks;
use syncline_testkit::fresh_database;
use tokio::task::JoinHandle;
use tonic::Code;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn count(c: &mut AsyncPgConnection, table: &str, message_id: &str) -> i64 {
    let q = format!("select count(*) as n from {table} where message_id = $1");
    diesel::sql_query(q).bind::<Text, _>(message_id).get_result::<Count>(c).await.unwrap().n
}

/// Hold node `index`'s watermark row from `c` (in an open transaction): its next watermark
/// save waits, after the batch before it committed.
async fn hold(c: &mut AsyncPgConnection, index: u32) {
    c.batch_execute("begin").await.unwrap();
    diesel::sql_query("select 1 from sequencer_watermarks where node_index = $1 for update")
        .bind::<Integer, _>(index as i32)
        .execute(c)
        .await
        .unwrap();
}

/// Wait until `message_id` is claimed (its attempt committed).
async fn until_claimed(c: &mut AsyncPgConnection, message_id: &str) {
    let start = std::time::Instant::now();
    while count(c, "sequencer_message_ids", message_id).await == 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "{message_id} never claimed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn spawn_send(node: &Node, req: SendRequest) -> JoinHandle<Result<i64, tonic::Status>> {
    let addr = node.addr;
    tokio::spawn(async move {
        let mut c = syncline_proto::sequencer::sequencer_service_client::SequencerServiceClient::connect(format!(
            "http://{addr}"
        ))
        .await
        .unwrap();
        c.send(req).await.map(|r| r.into_inner().timestamp)
    })
}

/// Sleep until the wall clock is `margin` past `ts` (µs).
async fn until_past(ts: i64, margin: Duration) {
    let wait = ts + margin.as_micros() as i64 - now_micros();
    if wait > 0 {
        tokio::time::sleep(Duration::from_micros(wait as u64)).await;
    }
}

async fn answer(h: JoinHandle<Result<i64, tonic::Status>>) -> Result<i64, tonic::Status> {
    tokio::time::timeout(Duration::from_secs(15), h).await.expect("answered").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_send_fails_only_once_the_safe_watermark_passed_its_deadline_and_is_never_doubled() {
    let tdb = fresh_database().await;
    // A writes only when it has sends, so its watermark (and the safe one) stays where the
    // test leaves it; nobody knocks a quiet node offline; answers wait for the outcome.
    let a = Node::start(&tdb.url, "a", |s| {
        s.keep_alive_interval = Duration::from_secs(60);
        s.offline_duration = Duration::from_secs(600);
        s.write_timeout = Duration::from_secs(60);
    })
    .await;
    let b = Node::start(&tdb.url, "b", |s| {
        s.offline_duration = Duration::from_secs(600);
        s.write_timeout = Duration::from_secs(30);
    })
    .await;
    a.wait_serving().await;
    b.wait_serving().await;
    a.register(&["alice", "bob"]).await;
    let index = a.admin().await.status(SequencerStatusRequest {}).await.unwrap().into_inner().node_index.unwrap();
    let cfg = DbConfig::new(&tdb.url);
    let mut c = db::connect(&cfg, SessionKind::Pooled).await.unwrap();
    let mut holder = db::connect(&cfg, SessionKind::Pooled).await.unwrap();
    let with_deadline = |id: &str| {
        let mut req = send("alice", id, &["bob"], id);
        req.max_sequencing_time = now_micros() + 3_000_000;
        req
    };

    // 1. A's attempt is committed, uncovered, when the deadline passes; then A is knocked
    //    offline (as the liveness check does to a stalled node).
    hold(&mut holder, index).await;
    let lost = with_deadline("lost");
    let mst = lost.max_sequencing_time;
    let on_a = spawn_send(&a, lost.clone());
    until_claimed(&mut c, "lost").await;
    let on_b = spawn_send(&b, lost);
    until_past(mst, Duration::from_secs(1)).await;
    let safe = watermarks::safe(&mut c).await.unwrap().unwrap();
    assert!(safe < mst, "the safe watermark {safe} passed the deadline {mst} already");
    assert!(!on_b.is_finished(), "answered before the safe watermark passed the deadline: {:?}", answer(on_b).await);
    diesel::sql_query("update sequencer_watermarks set online = false where node_index = $1")
        .bind::<Integer, _>(index as i32)
        .execute(&mut holder)
        .await
        .unwrap();
    holder.batch_execute("commit").await.unwrap();
    let e = answer(on_b).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    assert!(watermarks::safe(&mut c).await.unwrap().unwrap() >= mst);
    // A recovers, truncating its uncovered attempt, and finds the send late too when it next
    // writes (it retries held sends with its next batch: wake it with one).
    a.client().await.send(send("alice", "wake", &["bob"], "wake")).await.unwrap();
    let e = answer(on_a).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    assert_eq!(count(&mut c, "sequencer_events", "lost").await, 0, "a send answered FAILED_PRECONDITION was stored");

    // 2. The same, but A's attempt gets covered: the late resend on B learns its timestamp.
    a.wait_serving().await;
    hold(&mut holder, index).await;
    let kept = with_deadline("kept");
    let mst = kept.max_sequencing_time;
    let on_a = spawn_send(&a, kept.clone());
    until_claimed(&mut c, "kept").await;
    let on_b = spawn_send(&b, kept);
    until_past(mst, Duration::from_secs(1)).await;
    assert!(watermarks::safe(&mut c).await.unwrap().unwrap() < mst);
    assert!(!on_b.is_finished(), "answered before A's attempt was settled: {:?}", answer(on_b).await);
    holder.batch_execute("rollback").await.unwrap();
    let ts = answer(on_a).await.unwrap();
    assert!(ts <= mst);
    assert_eq!(answer(on_b).await.unwrap(), ts, "the late resend is answered with the one timestamp");
    assert_eq!(count(&mut c, "sequencer_events", "kept").await, 1);
    let bob = collect(&b, "bob", None, 2, Duration::from_secs(20)).await;
    assert_eq!(bob.iter().filter(|e| e.timestamp == ts).count(), 1, "delivered once");
    assert!(bob.iter().all(|e| e.envelopes[0].content != b"lost"), "the failed send was delivered");
    a.shutdown().await;
    b.shutdown().await;
}
