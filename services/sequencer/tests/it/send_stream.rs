//! SendStream: many sends on one stream, each answered once as Send would answer it, within
//! the stream's window, for the stream's member only, and ended cleanly by either side.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use diesel_async::SimpleAsyncConnection;
use syncline_coordination::db::{self, SessionKind};
use syncline_coordination::DbConfig;
use syncline_proto::sequencer::send_stream_response::Outcome;
use syncline_proto::sequencer::{RegisterMemberRequest, SendRequest, SendStreamResponse, SequencerStatusRequest};
use syncline_sequencer::MemberAuth;
use syncline_testkit::fresh_database;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

use crate::harness::*;

/// An open SendStream: where its sends go, and its answers.
struct Open {
    sends: mpsc::Sender<SendRequest>,
    answers: Streaming<SendStreamResponse>,
}

impl Open {
    async fn new(node: &Node, token: Option<&str>) -> Open {
        let (sends, rx) = mpsc::channel(1000);
        let mut call = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(t) = token {
            call.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        let answers = node.client().await.send_stream(call).await.unwrap().into_inner();
        Open { sends, answers }
    }

    async fn send(&self, req: SendRequest) {
        self.sends.send(req).await.unwrap();
    }

    /// The next answer (within 20 s): message id and outcome.
    async fn answer(&mut self) -> (String, Outcome) {
        let a = tokio::time::timeout(Duration::from_secs(20), self.answers.message())
            .await
            .expect("an answer within 20 s")
            .expect("the stream does not fail")
            .expect("the stream does not end");
        (a.message_id, a.outcome.expect("every answer has an outcome"))
    }
}

fn timestamp(o: &Outcome) -> i64 {
    match o {
        Outcome::Timestamp(ts) => *ts,
        Outcome::Failure(f) => panic!("failed: {f:?}"),
    }
}

fn failure_code(o: &Outcome) -> Code {
    match o {
        Outcome::Failure(f) => Code::from_i32(f.code),
        Outcome::Timestamp(ts) => panic!("sequenced at {ts}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_stream_answers_every_send_once_and_each_is_delivered_once_at_its_timestamp() {
    let tdb = fresh_database().await;
    let a = Node::serving(&tdb.url, "a", &["alice", "bob"]).await;
    let mut s = Open::new(&a, None).await;
    let n = 300;
    for i in 0..n {
        s.send(send("alice", &format!("m{i}"), &["bob"], format!("body {i}"))).await;
    }
    let mut answered: HashMap<String, i64> = HashMap::new();
    for _ in 0..n {
        let (id, outcome) = s.answer().await;
        assert!(answered.insert(id.clone(), timestamp(&outcome)).is_none(), "{id} answered twice");
    }
    assert_eq!(answered.len(), n);
    // A resend on the stream gets the same timestamp; other content under the id is refused.
    s.send(send("alice", "m5", &["bob"], "body 5")).await;
    let (id, outcome) = s.answer().await;
    assert_eq!((id.as_str(), timestamp(&outcome)), ("m5", answered["m5"]));
    s.send(send("alice", "m7", &["bob"], "other")).await;
    let (id, outcome) = s.answer().await;
    assert_eq!((id.as_str(), failure_code(&outcome)), ("m7", Code::AlreadyExists));
    // The client ends its side: the node ends the stream OK.
    drop(s.sends);
    let end = tokio::time::timeout(Duration::from_secs(20), s.answers.message()).await.unwrap();
    assert!(matches!(end, Ok(None)), "ends OK after the client's end: {end:?}");

    let events = collect(&a, "bob", None, n, Duration::from_secs(30)).await;
    let delivered: Vec<i64> = events.iter().map(|e| e.timestamp).collect();
    let mut expected: Vec<i64> = answered.values().copied().collect();
    expected.sort_unstable();
    assert_eq!(delivered, expected, "each answered send delivered once, at its timestamp");
    a.shutdown().await;
}

/// The node reads no more sends of a stream than its window while they wait: the writer is
/// held on a locked watermark row, and of ten sends only the window is admitted; once the
/// lock goes every send is answered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_stream_reads_no_more_than_its_window_while_its_sends_wait() {
    let tdb = fresh_database().await;
    let cfg = DbConfig::new(&tdb.url);
    let a = Node::start(&tdb.url, "a", |s| {
        s.writer_lanes = 1;
        s.write_timeout = Duration::from_secs(20);
        s.keep_alive_interval = Duration::from_secs(5);
        s.send_stream_window = 4;
    })
    .await;
    a.wait_serving().await;
    a.register(&["alice", "bob"]).await;
    let mut holder = lock_watermark_row(&cfg, &a).await;
    let mut c = db::connect(&cfg, SessionKind::Pooled).await.unwrap();
    let mut s = Open::new(&a, None).await;
    // The writer takes the first send and waits on the locked row...
    s.send(send("alice", "m0", &["bob"], "x")).await;
    wait_for_a_lock_wait(&mut c).await;
    // ...and of the nine sends behind it, three fill the window.
    for i in 1..10 {
        s.send(send("alice", &format!("m{i}"), &["bob"], "x")).await;
    }
    let mut admin = a.admin().await;
    let mut depth = 0;
    for _ in 0..20 {
        depth = depth.max(admin.status(SequencerStatusRequest {}).await.unwrap().into_inner().queue_depth);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(depth, 3, "the window is 4 and the writer holds one send");
    holder.batch_execute("commit").await.unwrap();
    let mut ids = HashSet::new();
    for _ in 0..10 {
        let (id, outcome) = s.answer().await;
        timestamp(&outcome);
        assert!(ids.insert(id));
    }
    assert_eq!(collect(&a, "bob", None, 10, Duration::from_secs(20)).await.len(), 10);
    a.shutdown().await;
}

/// With member auth on, a stream acts for the member whose token it carries: another sender's
/// send is answered PERMISSION_DENIED (and not sequenced) while the member's own go on; a
/// stream without a token gets UNAUTHENTICATED for its sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_stream_sends_only_for_the_member_whose_token_it_carries() {
    let tdb = fresh_database().await;
    let a = Node::start(&tdb.url, "a", |s| s.member_auth = MemberAuth::Required).await;
    a.wait_serving().await;
    let mut admin = a.admin().await;
    let mut tokens = HashMap::new();
    for m in ["alice", "bob"] {
        let r = admin.register_member(RegisterMemberRequest { member: m.into() }).await.unwrap();
        tokens.insert(m, r.into_inner().token);
    }
    let mut s = Open::new(&a, Some(&tokens["alice"])).await;
    s.send(send("alice", "a1", &["bob"], "from alice")).await;
    let (_, first) = s.answer().await;
    s.send(send("bob", "b1", &["bob"], "forged")).await;
    let (id, forged) = s.answer().await;
    assert_eq!((id.as_str(), failure_code(&forged)), ("b1", Code::PermissionDenied));
    let Outcome::Failure(f) = &forged else { unreachable!() };
    assert!(f.message.contains("alice") && f.message.contains("bob"), "{}", f.message);
    s.send(send("alice", "a2", &["bob"], "from alice")).await;
    let (_, second) = s.answer().await;

    let mut anonymous = Open::new(&a, None).await;
    anonymous.send(send("alice", "a3", &["bob"], "no token")).await;
    let (_, outcome) = anonymous.answer().await;
    assert_eq!(failure_code(&outcome), Code::Unauthenticated);

    // Bob gets alice's two sends only (read with his token).
    let mut sub =
        tonic::Request::new(syncline_proto::sequencer::SubscribeRequest { member: "bob".into(), after: None });
    sub.metadata_mut().insert("authorization", format!("Bearer {}", tokens["bob"]).parse().unwrap());
    let mut events = a.client().await.subscribe(sub).await.unwrap().into_inner();
    let mut got = Vec::new();
    while got.len() < 2 {
        got.push(events.message().await.unwrap().unwrap().event.unwrap().timestamp);
    }
    assert_eq!(got, vec![timestamp(&first), timestamp(&second)]);
    if let Ok(Ok(Some(extra))) = tokio::time::timeout(Duration::from_millis(500), events.message()).await {
        panic!("unexpected event {:?}", extra.event);
    }
    a.shutdown().await;
}

/// A node shutting down answers what a stream's sends were admitted for and ends the stream
/// UNAVAILABLE instead of keeping it (and its own shutdown) waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_ends_an_open_send_stream_unavailable() {
    let tdb = fresh_database().await;
    let a = Node::serving(&tdb.url, "a", &["alice", "bob"]).await;
    let mut s = Open::new(&a, None).await;
    s.send(send("alice", "m1", &["bob"], "x")).await;
    timestamp(&s.answer().await.1);
    let shutdown = tokio::spawn(a.shutdown());
    let end = tokio::time::timeout(Duration::from_secs(20), s.answers.message()).await.expect("the stream ends");
    assert_eq!(end.expect_err("ends with an error").code(), Code::Unavailable);
    tokio::time::timeout(Duration::from_secs(20), shutdown).await.expect("the shutdown completes").unwrap();
}
