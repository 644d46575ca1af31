//! A send that becomes late (its max-sequencing-time passes) on one node while another
//! node's attempt with the same message id is committed but not covered: a frozen writer
//! (index 3, driven by the test through the store) appended it past its watermark and stopped.
//! (A live writer commits each batch with the watermark that covers it, so only a node that
//! was marked offline, or froze, leaves such an attempt.) FAILED_PRECONDITION must come only
//! once the safe watermark has passed the deadline, and the event is never sequenced twice.

use crate::harness::*;
use std::time::Duration;

use diesel::sql_types::{BigInt, Integer, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use syncline_coordination::db::{self, SessionKind};
use syncline_coordination::{locks, DbConfig};
use syncline_proto::sequencer::SendRequest;
use syncline_sequencer::store::events::{self, EventKind, MessageIdClaim, NewEvent};
use syncline_sequencer::store::timestamps::{now_micros, TimestampGenerator};
use syncline_sequencer::store::{node_index, watermarks};
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

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = Integer)]
    id: i32,
}

async fn member_id(c: &mut AsyncPgConnection, member: &str) -> i32 {
    diesel::sql_query("select id from sequencer_members where member = $1")
        .bind::<Text, _>(member)
        .get_result::<Id>(c)
        .await
        .unwrap()
        .id
}

/// A writer on index 3 that the test drives: online, then it appends what it is told past
/// its watermark and moves the watermark only when told.
struct Frozen {
    conn: AsyncPgConnection,
    gen: TimestampGenerator,
}

impl Frozen {
    async fn start(cfg: &DbConfig) -> Frozen {
        let mut conn = db::connect(cfg, SessionKind::Lock).await.unwrap();
        // Coming back, the index may be held for a moment by a peer's watch on it (which lets
        // go at once), as a restarting node finds it.
        let start = std::time::Instant::now();
        while !locks::try_lock(&mut conn, node_index::index_lock(3)).await.unwrap() {
            assert!(start.elapsed() < Duration::from_secs(10), "index 3 stays taken");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut gen = TimestampGenerator::new(3, TOTAL_NODES).unwrap();
        syncline_sequencer::store::join(&mut conn, 3, now_micros(), &mut gen).await.unwrap();
        Frozen { conn, gen }
    }

    /// Append `req` from `alice` to `bob`, as a sequencer would store it, uncovered.
    async fn append(&mut self, req: &SendRequest, alice: i32, bob: i32) -> i64 {
        use prost::Message;
        use sha2::Digest;
        let payload = syncline_proto::sequencer::Batch { envelopes: req.envelopes.clone() }.encode_to_vec();
        let digest = sha2::Sha256::digest(&payload).to_vec();
        let ts = self.gen.generate();
        let ev = NewEvent {
            ts,
            kind: EventKind::Deliver,
            message_id: Some(req.message_id.clone()),
            sender: Some(alice),
            recipients: vec![alice, bob],
            payload: Some(payload),
            error: None,
            claim: Some(MessageIdClaim {
                sender: alice,
                message_id: req.message_id.clone(),
                max_sequencing_ts: req.max_sequencing_time,
                digest,
            }),
        };
        assert_eq!(events::append(&mut self.conn, 3, &[ev]).await.unwrap().written, vec![ts]);
        ts
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
    let cfg = DbConfig::new(&tdb.url);
    db::migrate(&cfg).await.unwrap();
    let mut frozen = Frozen::start(&cfg).await;
    // Nobody knocks the quiet frozen node offline but the test; answers wait for the outcome.
    let b = Node::start(&tdb.url, "b", |s| {
        s.offline_duration = Duration::from_secs(600);
        s.write_timeout = Duration::from_secs(30);
    })
    .await;
    b.wait_serving().await;
    b.register(&["alice", "bob"]).await;
    let mut c = db::connect(&cfg, SessionKind::Pooled).await.unwrap();
    let (alice, bob) = (member_id(&mut c, "alice").await, member_id(&mut c, "bob").await);
    let with_deadline = |id: &str| {
        let mut req = send("alice", id, &["bob"], id);
        req.max_sequencing_time = now_micros() + 3_000_000;
        req
    };

    // 1. The frozen node's attempt is committed, uncovered, when the deadline passes; then
    //    it is knocked offline (as the liveness check does to a stalled node).
    let lost = with_deadline("lost");
    let mst = lost.max_sequencing_time;
    frozen.append(&lost, alice, bob).await;
    let on_b = spawn_send(&b, lost);
    until_past(mst, Duration::from_secs(1)).await;
    let safe = watermarks::safe(&mut c).await.unwrap().unwrap();
    assert!(safe < mst, "the safe watermark {safe} passed the deadline {mst} already");
    assert!(!on_b.is_finished(), "answered before the safe watermark passed the deadline: {:?}", answer(on_b).await);
    diesel::sql_query("update sequencer_watermarks set online = false where node_index = 3")
        .execute(&mut c)
        .await
        .unwrap();
    let e = answer(on_b).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    assert!(watermarks::safe(&mut c).await.unwrap().unwrap() >= mst);
    // The frozen node comes back: it truncates its uncovered attempt.
    drop(frozen);
    let mut frozen = Frozen::start(&cfg).await;
    assert_eq!(count(&mut c, "sequencer_events", "lost").await, 0, "a send answered FAILED_PRECONDITION was stored");

    // 2. The same, but the attempt gets covered: the late resend on B learns its timestamp.
    let kept = with_deadline("kept");
    let mst = kept.max_sequencing_time;
    let ts = frozen.append(&kept, alice, bob).await;
    let on_b = spawn_send(&b, kept);
    until_past(mst, Duration::from_secs(1)).await;
    assert!(watermarks::safe(&mut c).await.unwrap().unwrap() < mst);
    assert!(!on_b.is_finished(), "answered before the frozen attempt was settled: {:?}", answer(on_b).await);
    watermarks::save(&mut frozen.conn, 3, ts).await.unwrap();
    assert!(ts <= mst);
    assert_eq!(answer(on_b).await.unwrap(), ts, "the late resend is answered with the one timestamp");
    assert_eq!(count(&mut c, "sequencer_events", "kept").await, 1);
    // The frozen node leaves cleanly, so the safe watermark moves on with B alone.
    syncline_sequencer::store::recovery::truncate(&mut frozen.conn, 3).await.unwrap();
    let got = collect(&b, "bob", None, 1, Duration::from_secs(20)).await;
    assert_eq!(got.iter().filter(|e| e.timestamp == ts).count(), 1, "delivered once");
    assert!(got.iter().all(|e| e.envelopes[0].content != b"lost"), "the failed send was delivered");
    b.shutdown().await;
}
