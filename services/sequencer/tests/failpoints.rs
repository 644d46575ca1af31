//! The writer at its crash window, forced with a failpoint. Its own test binary: failpoints
//! are global to the process, so no other test may run beside them (one test function).

#[path = "it/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use harness::*;
use syncline_coordination::db::{self, SessionKind};
use syncline_coordination::DbConfig;
use syncline_testkit::fresh_database;
use tonic::Code;

#[derive(QueryableByName)]
struct Attempt {
    #[diesel(sql_type = BigInt)]
    ts: i64,
    #[diesel(sql_type = BigInt)]
    watermark: i64,
}

/// The stored rows of `message_id` with their node's watermark.
async fn attempts(c: &mut AsyncPgConnection, message_id: &str) -> Vec<Attempt> {
    diesel::sql_query(
        "select e.ts, w.watermark_ts as watermark from sequencer_events e \
         join sequencer_watermarks w on w.node_index = e.node_index where e.message_id = $1 order by e.ts",
    )
    .bind::<Text, _>(message_id)
    .load(c)
    .await
    .unwrap()
}

/// A writer that fails after committing a batch with the watermark that covers it, before
/// answering, answers no send OK while it fails; the batch stays sequenced (covered), and a
/// resend with the same message id is answered with the timestamp it was committed at —
/// sequenced exactly once, never a second event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_failing_after_its_commit_answers_a_resend_with_the_one_timestamp() {
    let scenario = fail::FailScenario::setup();
    let tdb = fresh_database().await;
    let n = Node::start(&tdb.url, "s", |s| s.write_timeout = Duration::from_secs(1)).await;
    n.wait_serving().await;
    n.register(&["alice", "bob"]).await;
    let mut c = db::connect(&DbConfig::new(&tdb.url), SessionKind::Pooled).await.unwrap();
    let mut client = n.client().await;

    fail::cfg("sequencer-writer-after-commit", "return").unwrap();
    // Answered "outcome unknown" after write_timeout, though each rejoin succeeds.
    let failed = tokio::time::timeout(Duration::from_secs(20), client.send(send("alice", "m1", &["bob"], "x")))
        .await
        .expect("a send held by failing writes is answered within write_timeout")
        .unwrap_err();
    assert_eq!(failed.code(), Code::Unavailable, "{}", failed.message());
    // The first attempt committed with its watermark; every retry found its covered claim.
    let first = attempts(&mut c, "m1").await;
    assert_eq!(first.len(), 1, "one attempt, stored once");
    assert!(first[0].ts <= first[0].watermark, "committed in the statement that covers it");
    let seen = first[0].ts;

    fail::remove("sequencer-writer-after-commit");
    let start = Instant::now();
    let ts = loop {
        match client.send(send("alice", "m1", &["bob"], "x")).await {
            Ok(r) => break r.into_inner().timestamp,
            Err(s) if s.code() == Code::Unavailable && start.elapsed() < Duration::from_secs(20) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(s) => panic!("resend: {s:?}"),
        }
    };
    assert_eq!(ts, seen, "the resend is answered with the timestamp the batch was committed at");
    let stored = attempts(&mut c, "m1").await;
    assert_eq!(stored.iter().map(|a| a.ts).collect::<Vec<_>>(), vec![ts], "sequenced exactly once");
    let bob = collect(&n, "bob", None, 1, Duration::from_secs(20)).await;
    assert_eq!(bob.len(), 1);
    assert_eq!(bob[0].timestamp, ts);
    n.shutdown().await;
    scenario.teardown();
}
