//! The sequencer's contract end to end: one order for every subscriber, OK means sequenced
//! and durable, resends, held sends, clocks, database cuts and stalls, shutdown.

use crate::harness::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use syncline_coordination::DbConfig;
use syncline_proto::sequencer::sequencer_service_client::SequencerServiceClient;
use syncline_proto::sequencer::{DeliverErrorCode, SendRequest, SequencerStatusRequest, SubscribeRequest};
use syncline_sequencer::store::timestamps::now_micros;
use syncline_sequencer::SequencerSettings;
use syncline_testkit::{fresh_database, FaultProxy};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_spread_over_three_nodes_reach_every_subscriber_once_in_one_order() {
    let tdb = fresh_database().await;
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(Node::start(&tdb.url, &format!("seq{i}"), |_| {}).await);
    }
    for n in &nodes {
        n.wait_serving().await;
    }
    nodes[0].register(&["alice", "bob", "carol"]).await;
    let mut expected: HashMap<&str, usize> = HashMap::new();
    for i in 0..60 {
        let node = &nodes[i % 3];
        let (from, to): (&str, &[&str]) = match i % 3 {
            0 => ("alice", &["bob", "carol"]),
            1 => ("bob", &["alice"]),
            _ => ("carol", &["alice", "bob"]),
        };
        node.client().await.send(send(from, &format!("m{i}"), to, format!("body {i}"))).await.unwrap();
        for m in std::iter::once(from).chain(to.iter().copied()) {
            *expected.entry(m).or_default() += 1;
        }
    }
    // Every member, subscribed on every node, sees the same events in the same order.
    for member in ["alice", "bob", "carol"] {
        let mut orders = Vec::new();
        for n in &nodes {
            let evs = collect(n, member, None, expected[member], Duration::from_secs(20)).await;
            let ts: Vec<i64> = evs.iter().map(|e| e.timestamp).collect();
            assert!(ts.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
            for w in evs.windows(2) {
                assert_eq!(w[1].previous_timestamp, Some(w[0].timestamp), "previous timestamps chain");
            }
            for e in &evs {
                if e.sender == member {
                    assert!(e.message_id.is_some(), "the sender sees its message id");
                } else {
                    assert!(e.message_id.is_none(), "others do not see the message id");
                    assert_eq!(e.envelopes.len(), 1);
                    assert!(e.envelopes[0].recipients.iter().any(|r| r == member));
                }
            }
            orders.push(ts);
        }
        assert!(orders.windows(2).all(|w| w[0] == w[1]), "{member}: identical order on every node");
    }
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_message_id_sent_to_two_nodes_is_sequenced_once() {
    let tdb = fresh_database().await;
    let a = Node::start(&tdb.url, "a", |_| {}).await;
    let b = Node::start(&tdb.url, "b", |_| {}).await;
    a.wait_serving().await;
    b.wait_serving().await;
    a.register(&["alice", "bob"]).await;
    let req = send("alice", "retry-me", &["bob"], "once");
    let (ra, rb) = tokio::join!(async { a.client().await.send(req.clone()).await }, async {
        b.client().await.send(req.clone()).await
    });
    let (ta, tb) = (ra.unwrap().into_inner().timestamp, rb.unwrap().into_inner().timestamp);
    assert_eq!(ta, tb, "both answers name the one timestamp it was sequenced at");
    // A later resend on a is answered from the claim too.
    assert_eq!(a.client().await.send(req.clone()).await.unwrap().into_inner().timestamp, ta);
    // The same id with other content is refused, clearly, on either node.
    for n in [&a, &b] {
        let reused = n.client().await.send(send("alice", "retry-me", &["bob"], "different")).await.unwrap_err();
        assert_eq!(reused.code(), Code::AlreadyExists, "{reused:?}");
        assert!(
            reused.message().contains("retry-me") && reused.message().contains("different send"),
            "{}",
            reused.message()
        );
    }
    let other = a.client().await.send(send("alice", "other", &["bob"], "twice")).await.unwrap().into_inner().timestamp;
    let evs = collect(&b, "bob", None, 2, Duration::from_secs(20)).await;
    let bodies: Vec<&[u8]> = evs.iter().map(|e| e.envelopes[0].content.as_slice()).collect();
    assert_eq!(bodies, vec![&b"once"[..], &b"twice"[..]]);
    assert_eq!((evs[0].timestamp, evs[1].timestamp), (ta, other), "delivered at the timestamps the OKs named");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_unknown_recipients_an_error_event() {
    let tdb = fresh_database().await;
    let n = Node::start(&tdb.url, "s", |s| s.max_request_size = 10_000).await;
    n.wait_serving().await;
    n.register(&["alice", "bob"]).await;
    let mut c = n.client().await;
    let expect = |r: Result<tonic::Response<_>, tonic::Status>, code: Code, text: &str| {
        let e = r.expect_err("must be refused");
        assert_eq!(e.code(), code, "{}", e.message());
        assert!(e.message().contains(text), "{:?} does not mention {text:?}", e.message());
    };
    let mut past = send("alice", "p", &["bob"], "x");
    past.max_sequencing_time = now_micros() - 1_000_000;
    expect(c.send(past).await, Code::InvalidArgument, "in the past");
    expect(c.send(send("alice", "big", &["bob"], "x".repeat(20_000))).await, Code::OutOfRange, "too large");
    expect(c.send(send("alice", "big2", &["bob"], "x".repeat(10_500))).await, Code::OutOfRange, "too large");
    expect(c.send(send("mallory", "m", &["bob"], "x")).await, Code::NotFound, "mallory is not registered");
    expect(c.send(send("alice", "", &["bob"], "x")).await, Code::InvalidArgument, "message_id");
    let mut empty = send("alice", "e", &["bob"], "x");
    empty.envelopes[0].recipients.clear();
    expect(c.send(empty).await, Code::InvalidArgument, "no recipients");
    let mut none = send("alice", "n", &["bob"], "x");
    none.envelopes.clear();
    expect(c.send(none).await, Code::InvalidArgument, "at least one envelope");
    let status = c.subscribe(SubscribeRequest { member: "nobody".into(), after: None }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    // An unknown recipient: accepted, and the sender gets an error event.
    c.send(send("alice", "u", &["bob", "dave"], "x")).await.unwrap();
    let evs = collect(&n, "alice", None, 1, Duration::from_secs(20)).await;
    let err = evs[0].error.as_ref().expect("an error event");
    assert_eq!(err.code, "UNKNOWN_RECIPIENTS");
    assert_eq!(err.error_code(), DeliverErrorCode::UnknownRecipients);
    assert_eq!(err.message, "dave", "the code is not repeated in the message");
    assert_eq!(evs[0].message_id.as_deref(), Some("u"));
    n.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_from_the_database_stops_serving_while_others_keep_sequencing() {
    let tdb = fresh_database().await;
    let proxy = FaultProxy::start(tdb.server_addr()).await;
    let a = Node::start(&tdb.url_via(proxy.addr()), "a", |_| {}).await;
    let b = Node::start(&tdb.url, "b", |_| {}).await;
    a.wait_serving().await;
    b.wait_serving().await;
    b.register(&["alice", "bob"]).await;
    let mut sub =
        b.client().await.subscribe(SubscribeRequest { member: "bob".into(), after: None }).await.unwrap().into_inner();
    proxy.down();
    let cut = Instant::now();
    wait_until(Duration::from_secs(10), || !a.seq().health().serving).await;
    println!("a stopped serving {:?} after the cut", cut.elapsed());
    // b keeps sequencing, and its subscribers are not held back by a's stale watermark.
    b.client().await.send(send("alice", "during", &["bob"], "x")).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), sub.message()).await.expect("b delivers during a's outage");
    assert_eq!(ev.unwrap().unwrap().event.unwrap().envelopes[0].content, b"x");
    let asked = Instant::now();
    let refused = a.client().await.send(send("alice", "to-a", &["bob"], "y")).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "a node that does not serve refuses at once, took {:?}",
        asked.elapsed()
    );
    proxy.restore();
    wait_until(Duration::from_secs(20), || a.seq().health().serving).await;
    a.client().await.send(send("alice", "after", &["bob"], "z")).await.unwrap();
    let ev =
        tokio::time::timeout(Duration::from_secs(10), sub.message()).await.expect("a sequences again after restore");
    assert_eq!(ev.unwrap().unwrap().event.unwrap().envelopes[0].content, b"z");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_held_during_a_database_stall_are_answered_and_sequenced_once_after_it() {
    let tdb = fresh_database().await;
    let proxy = FaultProxy::start(tdb.server_addr()).await;
    let n = Node::start(&tdb.url_via(proxy.addr()), "s", |s| {
        s.queue_size = 20;
        s.write_timeout = Duration::from_secs(2);
    })
    .await;
    n.wait_serving().await;
    n.register(&["alice", "bob"]).await;
    // Warm the member cache: admission then needs no database.
    let warm = n.client().await.send(send("alice", "warm", &["bob"], "warm")).await.unwrap().into_inner().timestamp;
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.blackhole();
    let stalled = Instant::now();
    let sends: Vec<_> = (0..40)
        .map(|i| {
            let addr = n.addr;
            tokio::spawn(async move {
                let mut c = SequencerServiceClient::connect(format!("http://{addr}")).await.unwrap();
                let id = format!("s{i:02}");
                (id.clone(), c.send(send("alice", &id, &["bob"], &id)).await)
            })
        })
        .collect();
    let mut held = Vec::new();
    let mut overloaded = 0;
    for s in sends {
        let (id, r) = s.await.unwrap();
        match r {
            Ok(ok) => panic!("{id} answered OK ({}) while the database was unreachable", ok.into_inner().timestamp),
            Err(e) if e.code() == Code::ResourceExhausted => overloaded += 1,
            Err(e) if e.code() == Code::Unavailable && e.message().contains("same message id") => held.push(id),
            Err(e) if e.code() == Code::Unavailable => {} // refused: the writer was already down
            Err(e) => panic!("{id}: {e:?}"),
        }
    }
    println!("held {}, overloaded {overloaded}, every send answered after {:?}", held.len(), stalled.elapsed());
    assert!(overloaded > 0, "a full queue refuses with RESOURCE_EXHAUSTED");
    assert!(!held.is_empty(), "queued sends are answered 'outcome unknown' instead of hanging");
    proxy.restore();
    n.wait_serving().await;
    // The held sends are sequenced after the stall without any resend, once each.
    let got = collect(&n, "bob", None, 1 + held.len(), Duration::from_secs(30)).await;
    let bodies: Vec<String> = got.iter().map(|e| String::from_utf8(e.envelopes[0].content.clone()).unwrap()).collect();
    let mut expected = vec!["warm".to_string()];
    expected.extend(held.iter().cloned());
    let mut sorted = bodies.clone();
    sorted[1..].sort();
    assert_eq!(sorted, expected, "every held send delivered once");
    assert_eq!(got[0].timestamp, warm);
    // A resend of a held send learns the timestamp it was sequenced at.
    let first = &got[1];
    let id = String::from_utf8(first.envelopes[0].content.clone()).unwrap();
    let again = n.client().await.send(send("alice", &id, &["bob"], &id)).await.unwrap().into_inner().timestamp;
    assert_eq!(again, first.timestamp);
    n.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_goes_offline_without_pausing_other_readers() {
    let tdb = fresh_database().await;
    let a = Node::start(&tdb.url, "a", |s| s.writer_lanes = 2).await;
    let b = Node::start(&tdb.url, "b", |s| s.offline_duration = Duration::from_secs(60)).await;
    a.wait_serving().await;
    b.wait_serving().await;
    b.register(&["alice", "bob"]).await;
    let indexes = a.seq().writer().node_indexes();
    assert_eq!(indexes.len(), 2, "one index per writer lane");
    a.shutdown().await;
    let mut admin = b.admin().await;
    let st = admin.status(SequencerStatusRequest {}).await.unwrap().into_inner();
    for index in indexes {
        let row = st.watermarks.iter().find(|w| w.node_index == index).unwrap();
        assert!(!row.online, "every lane of a went offline on shutdown");
    }
    let start = Instant::now();
    b.client().await.send(send("alice", "x", &["bob"], "x")).await.unwrap();
    collect(&b, "bob", None, 1, Duration::from_secs(5)).await;
    assert!(start.elapsed() < Duration::from_secs(3));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_are_woken_by_notifications_not_by_polling() {
    let tdb = fresh_database().await;
    let slow_poll = |s: &mut SequencerSettings| s.polling_interval = Duration::from_secs(60);
    let a = Node::start(&tdb.url, "a", slow_poll).await;
    let b = Node::start(&tdb.url, "b", slow_poll).await;
    a.wait_serving().await;
    b.wait_serving().await;
    a.register(&["alice", "bob", "carol"]).await;
    let mut bob =
        b.client().await.subscribe(SubscribeRequest { member: "bob".into(), after: None }).await.unwrap().into_inner();
    let mut carol = b
        .client()
        .await
        .subscribe(SubscribeRequest { member: "carol".into(), after: None })
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..5 {
        let start = Instant::now();
        // Written by a, read through b: b learns of it from a's notifications.
        a.client().await.send(send("alice", &format!("n{i}"), &["bob"], "x")).await.unwrap();
        let ev = tokio::time::timeout(Duration::from_secs(5), bob.message()).await.expect("delivered without polling");
        assert!(ev.unwrap().is_some());
        assert!(start.elapsed() < Duration::from_secs(5));
    }
    // carol got nothing and her stream stays quiet.
    assert!(tokio::time::timeout(Duration::from_millis(300), carol.message()).await.is_err());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_holds_up_nobody_and_loses_nothing() {
    let tdb = fresh_database().await;
    let a = Node::start(&tdb.url, "a", |_| {}).await;
    a.wait_serving().await;
    let fast: Vec<String> = (0..10).map(|i| format!("fast{i}")).collect();
    let mut members: Vec<&str> = fast.iter().map(String::as_str).collect();
    members.extend(["alice", "slow"]);
    a.register(&members).await;
    // The slow member subscribes and then does not read: its server-side buffer, the HTTP/2
    // window and the socket fill up long before the sends end (600 × 4 KiB).
    let mut slow =
        a.client().await.subscribe(SubscribeRequest { member: "slow".into(), after: None }).await.unwrap().into_inner();
    const N: usize = 600;
    let body = "x".repeat(4096);
    let readers: Vec<_> = fast
        .iter()
        .map(|m| {
            let (m, addr) = (m.clone(), a.addr);
            tokio::spawn(async move {
                let mut c = SequencerServiceClient::connect(format!("http://{addr}")).await.unwrap();
                let mut s =
                    c.subscribe(SubscribeRequest { member: m.clone(), after: None }).await.unwrap().into_inner();
                let mut n = 0;
                while n < N {
                    match tokio::time::timeout(Duration::from_secs(60), s.message()).await {
                        Ok(Ok(Some(_))) => n += 1,
                        other => panic!("{m}: stalled after {n} of {N} events: {other:?}"),
                    }
                }
            })
        })
        .collect();
    let mut to: Vec<&str> = fast.iter().map(String::as_str).collect();
    to.push("slow");
    let mut c = a.client().await;
    for i in 0..N {
        c.send(send("alice", &format!("m{i}"), &to, &body)).await.unwrap();
    }
    for r in readers {
        r.await.expect("every fast subscriber got every event while the slow one did not read");
    }
    // The slow one, reading at last, gets everything in order.
    let mut prev = None;
    for n in 0..N {
        let ev = tokio::time::timeout(Duration::from_secs(30), slow.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .event
            .unwrap();
        assert_eq!(ev.previous_timestamp, prev, "slow: gap before event {n}");
        prev = Some(ev.timestamp);
    }
    a.shutdown().await;
}

/// The digest a sequencer stores with the claim of `req` (sha256 of its encoded envelopes).
fn digest_of(req: &SendRequest) -> (Vec<u8>, Vec<u8>) {
    use prost::Message;
    use sha2::Digest;
    let payload = syncline_proto::sequencer::Batch { envelopes: req.envelopes.clone() }.encode_to_vec();
    (sha2::Sha256::digest(&payload).to_vec(), payload)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_colliding_with_an_unconfirmed_claim_is_held_until_that_claim_is_covered_or_truncated() {
    use syncline_coordination::db;
    use syncline_coordination::locks;
    use syncline_sequencer::store::events::{self, EventKind, MessageIdClaim, NewEvent};
    use syncline_sequencer::store::watermarks;
    let tdb = fresh_database().await;
    let cfg = DbConfig::new(&tdb.url);
    db::migrate(&cfg).await.unwrap();
    // A frozen node: it holds index 3 and wrote two sends past its watermark (claims not yet
    // covered), then stopped making progress. Its client, hearing nothing, resends to `a`.
    let mut frozen = db::connect(&cfg, db::SessionKind::Lock).await.unwrap();
    assert!(locks::try_lock(&mut frozen, syncline_sequencer::store::node_index::index_lock(3)).await.unwrap());
    let wm = now_micros();
    watermarks::go_online(&mut frozen, 3, wm).await.unwrap();
    let covered_later = send("alice", "covered-later", &["bob"], "one");
    let dies = send("alice", "dies", &["bob"], "two");
    let a = Node::serving(&tdb.url, "a", &["alice", "bob"]).await;
    let members: HashMap<String, i32> = {
        use diesel_async::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct M {
            #[diesel(sql_type = diesel::sql_types::Text)]
            member: String,
            #[diesel(sql_type = diesel::sql_types::Integer)]
            id: i32,
        }
        let rows: Vec<M> =
            diesel::sql_query("select member, id from sequencer_members").load(&mut frozen).await.unwrap();
        rows.into_iter().map(|m| (m.member, m.id)).collect()
    };
    let (alice, bob) = (members["alice"], members["bob"]);
    let uncovered: Vec<NewEvent> = [(&covered_later, 1000), (&dies, 2000)]
        .iter()
        .map(|(req, off)| {
            let (digest, payload) = digest_of(req);
            NewEvent {
                ts: wm + off - (wm + off).rem_euclid(4) + 3,
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
            }
        })
        .collect();
    let written = events::append(&mut frozen, 3, &uncovered).await.unwrap().written;
    assert_eq!(written.len(), 2);
    let resend = |req: SendRequest| {
        let addr = a.addr;
        tokio::spawn(async move {
            let mut c = SequencerServiceClient::connect(format!("http://{addr}")).await.unwrap();
            c.send(req).await.map(|r| r.into_inner().timestamp)
        })
    };
    let (r1, r2) = (resend(covered_later.clone()), resend(dies.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !r1.is_finished() && !r2.is_finished(),
        "an unconfirmed claim is no proof: neither resend may be answered yet"
    );
    // The frozen node wakes up long enough to cover its first event, then dies: its
    // uncovered tail (the second claim) is truncated by the survivors.
    watermarks::save(&mut frozen, 3, written[0]).await.unwrap();
    let t1 = tokio::time::timeout(Duration::from_secs(10), r1).await.expect("answered once covered").unwrap().unwrap();
    assert_eq!(t1, written[0], "the resend learns the timestamp of the covered event");
    drop(frozen);
    let t2 = tokio::time::timeout(Duration::from_secs(20), r2)
        .await
        .expect("answered once the dead tail is gone")
        .unwrap()
        .unwrap();
    assert_ne!(t2, written[1], "sequenced anew, not taken for its truncated twin");
    let evs = collect(&a, "bob", None, 2, Duration::from_secs(20)).await;
    let got: Vec<(i64, &[u8])> = evs.iter().map(|e| (e.timestamp, e.envelopes[0].content.as_slice())).collect();
    assert_eq!(got, vec![(t1, &b"one"[..]), (t2, &b"two"[..])], "each delivered once, at the timestamp its OK named");
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_clock_is_behind_waits_for_it_and_never_writes_below_what_readers_passed() {
    let tdb = fresh_database().await;
    let a = Node::serving(&tdb.url, "a", &["alice", "bob"]).await;
    let mut sub =
        a.client().await.subscribe(SubscribeRequest { member: "bob".into(), after: None }).await.unwrap().into_inner();
    let started = Instant::now();
    let b = Node::start(&tdb.url, "b", |s| s.clock_offset_micros = -3_000_000).await;
    b.wait_serving().await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(2500), "b went online {waited:?} after start, ahead of its own clock");
    // With b online (and readers held to its slower clock, as the safe watermark must be),
    // sends through either node all reach bob, in one gap-free order, at their OK's timestamp.
    let mut oks = Vec::new();
    for i in 0..6 {
        let node = if i % 2 == 0 { &a } else { &b };
        oks.push(
            node.client()
                .await
                .send(send("alice", &format!("k{i}"), &["bob"], "x"))
                .await
                .unwrap()
                .into_inner()
                .timestamp,
        );
    }
    let mut prev = None;
    let mut got = Vec::new();
    for _ in 0..6 {
        let ev = tokio::time::timeout(Duration::from_secs(20), sub.message())
            .await
            .expect("delivered")
            .unwrap()
            .unwrap()
            .event
            .unwrap();
        assert_eq!(ev.previous_timestamp, prev, "a gap in bob's stream");
        prev = Some(ev.timestamp);
        got.push(ev.timestamp);
    }
    oks.sort();
    assert_eq!(got, oks);
    let late =
        b.client().await.subscribe(SubscribeRequest { member: "bob".into(), after: None }).await.unwrap().into_inner();
    drop(late);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_that_times_out_does_not_keep_the_writer_from_going_online() {
    use diesel_async::SimpleAsyncConnection;
    use syncline_coordination::db;
    use syncline_sequencer::store::watermarks;
    let tdb = fresh_database().await;
    let cfg = DbConfig::new(&tdb.url);
    db::migrate(&cfg).await.unwrap();
    let mut c = db::connect(&cfg, db::SessionKind::Pooled).await.unwrap();
    // A dead node (offline, no lock holder) whose row another session keeps locked: the sweep
    // at join blocks on it until the writer's timeout cuts it short.
    watermarks::go_online(&mut c, 3, 1).await.unwrap();
    watermarks::go_offline(&mut c, 3).await.unwrap();
    c.batch_execute("begin; select * from sequencer_watermarks where node_index = 3 for update").await.unwrap();
    // Indexes 0..3 only: the node must not pick the dead node's index 3 for itself (its own
    // truncation would then wait on the locked row, which is not what this test is about).
    let a = Node::start(&tdb.url, "a", |s| {
        s.write_timeout = Duration::from_secs(2);
        s.total_node_count = 3;
    })
    .await;
    // Generous: the old writer never came online while the row stayed locked.
    a.wait_serving_within(Duration::from_secs(45)).await;
    c.batch_execute("commit").await.unwrap();
    a.register(&["alice", "bob"]).await;
    a.client().await.send(send("alice", "m", &["bob"], "x")).await.unwrap();
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_can_lose_commits_is_refused_with_a_clear_reason() {
    use diesel_async::SimpleAsyncConnection;
    use syncline_coordination::db;
    let tdb = fresh_database().await;
    let cfg = DbConfig::new(&tdb.url);
    let mut c = db::connect(&cfg, db::SessionKind::Pooled).await.unwrap();
    let name = tdb.url.rsplit('/').next().unwrap().split('?').next().unwrap().to_string();
    c.batch_execute(&format!("alter database \"{name}\" set synchronous_commit = off")).await.unwrap();
    let refused = Node::start(&tdb.url, "a", |_| {}).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let h = refused.seq().health();
    assert!(!h.serving);
    assert!(h.detail.contains("synchronous_commit"), "{}", h.detail);
    refused.shutdown().await;
    let allowed = Node::start(&tdb.url, "b", |s| s.allow_unsafe_commit = true).await;
    allowed.wait_serving().await;
    allowed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_answers_every_held_send_and_loses_nothing_it_confirmed() {
    let tdb = fresh_database().await;
    let proxy = FaultProxy::start(tdb.server_addr()).await;
    let a = Node::start(&tdb.url_via(proxy.addr()), "a", |s| s.write_timeout = Duration::from_secs(1)).await;
    let b = Node::start(&tdb.url, "b", |_| {}).await;
    a.wait_serving().await;
    b.wait_serving().await;
    b.register(&["alice", "bob"]).await;
    a.client().await.send(send("alice", "warm", &["bob"], "warm")).await.unwrap();
    // Sends in flight on a; its database goes away; then a is stopped (SIGTERM's path).
    let sends: Vec<_> = (0..50)
        .map(|i| {
            let addr = a.addr;
            tokio::spawn(async move {
                let mut c = SequencerServiceClient::connect(format!("http://{addr}")).await.unwrap();
                let id = format!("t{i:02}");
                if i == 25 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (id.clone(), c.send(send("alice", &id, &["bob"], &id)).await)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    proxy.blackhole();
    let stopping = Instant::now();
    a.shutdown().await;
    println!("a shut down in {:?}", stopping.elapsed());
    let mut confirmed = HashMap::new();
    for s in sends {
        let (id, r) = tokio::time::timeout(Duration::from_secs(15), s).await.expect("every send is answered").unwrap();
        match r {
            Ok(ok) => {
                confirmed.insert(id, ok.into_inner().timestamp);
            }
            Err(e) => assert!(matches!(e.code(), Code::Unavailable | Code::ResourceExhausted), "{id}: {e:?}"),
        }
    }
    // An error means "outcome unknown": a send whose commit reached PostgreSQL just before the
    // blackhole may be sequenced anyway. Resending each unanswered one through b must name the one
    // timestamp it got (or sequence it now), never a second event.
    proxy.restore();
    let answered = confirmed.len();
    let mut c = b.client().await;
    for i in 0..50 {
        let id = format!("t{i:02}");
        if let std::collections::hash_map::Entry::Vacant(unanswered) = confirmed.entry(id.clone()) {
            unanswered.insert(c.send(send("alice", &id, &["bob"], &id)).await.unwrap().into_inner().timestamp);
        }
    }
    println!("{answered} of 50 sends answered OK by a");
    // Everything is delivered (through b) exactly once, at the timestamp its OK named.
    let evs = collect(&b, "bob", None, 51, Duration::from_secs(30)).await;
    for e in &evs[1..] {
        let id = String::from_utf8(e.envelopes[0].content.clone()).unwrap();
        assert_eq!(confirmed.get(&id), Some(&e.timestamp), "{id} delivered at another timestamp than its OK named");
    }
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_depth_gauge_falls_back_to_zero_once_the_writer_drained() {
    let metrics = metrics();
    let depth = || {
        metrics
            .render()
            .lines()
            .find(|l| l.starts_with("syncline_sequencer_queue_depth{node=\"qd\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    let tdb = fresh_database().await;
    let proxy = FaultProxy::start(tdb.server_addr()).await;
    let n = Node::start(&tdb.url_via(proxy.addr()), "qd", |s| s.write_timeout = Duration::from_secs(30)).await;
    n.wait_serving().await;
    n.register(&["alice", "bob"]).await;
    n.client().await.send(send("alice", "warm", &["bob"], "warm")).await.unwrap();
    proxy.latency(Duration::from_secs(3)); // the writer stalls on its current batch
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sends: Vec<_> = (0..10)
        .map(|i| {
            let addr = n.addr;
            tokio::spawn(async move {
                let mut c = SequencerServiceClient::connect(format!("http://{addr}")).await.unwrap();
                c.send(send("alice", &format!("q{i}"), &["bob"], "x")).await
            })
        })
        .collect();
    wait_until(Duration::from_secs(10), || depth().is_some_and(|d| d >= 5.0)).await;
    proxy.restore();
    for s in sends {
        s.await.unwrap().unwrap();
    }
    wait_until(Duration::from_secs(10), || depth() == Some(0.0)).await;
    n.shutdown().await;
}

/// A batch commits in the statement that moves its watermark: while the watermark row is
/// locked from another session, nothing of the send is committed (before, the batch
/// committed first and sat uncovered until the watermark could be saved), and once the lock
/// goes the send is answered with a covered timestamp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_commits_only_with_the_watermark_that_covers_it() {
    use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
    use syncline_coordination::db;
    let tdb = fresh_database().await;
    let cfg = DbConfig::new(&tdb.url);
    let a = idle_one_lane_node(&tdb.url).await;
    let mut holder = lock_watermark_row(&cfg, &a).await;
    let mut client = a.client().await;
    let send = tokio::spawn(async move { client.send(send("alice", "m1", &["bob"], "x")).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut c = db::connect(&cfg, db::SessionKind::Pooled).await.unwrap();
    let stored: Count = diesel::sql_query("select count(*) as n from sequencer_events where message_id = 'm1'")
        .get_result(&mut c)
        .await
        .unwrap();
    assert_eq!(stored.n, 0, "the batch committed before the watermark that covers it");
    assert!(!send.is_finished(), "answered before the watermark moved");
    holder.batch_execute("commit").await.unwrap();
    let ts = send.await.unwrap().expect("answered once the watermark moved").into_inner().timestamp;
    let covered: Count = diesel::sql_query(
        "select count(*) as n from sequencer_events e join sequencer_watermarks w on w.node_index = e.node_index \
         where e.message_id = 'm1' and e.ts <= w.watermark_ts",
    )
    .get_result(&mut c)
    .await
    .unwrap();
    assert_eq!(covered.n, 1);
    assert_eq!(collect(&a, "bob", None, 1, Duration::from_secs(20)).await[0].timestamp, ts);
    a.shutdown().await;
}

/// A resend that lands in one batch with new sends: the batch's plain insert hits the
/// resend's claim, the batch is written again skipping it, the new sends are sequenced once
/// and the resend is answered with its original timestamp. The batch is put together
/// deterministically: the writer is held on a locked watermark row while the sends queue up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_batched_with_new_sends_gets_its_timestamp_and_the_others_are_sequenced_once() {
    use diesel::sql_types::Text;
    use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
    use syncline_coordination::db;
    let tdb = fresh_database().await;
    let cfg = DbConfig::new(&tdb.url);
    let a = idle_one_lane_node(&tdb.url).await;
    let first = a.client().await.send(send("alice", "m1", &["bob"], "x")).await.unwrap().into_inner().timestamp;
    let mut holder = lock_watermark_row(&cfg, &a).await;
    let mut c = db::connect(&cfg, db::SessionKind::Pooled).await.unwrap();
    let spawn_send = |id: &str| {
        let (addr, id) = (a.addr, id.to_string());
        tokio::spawn(async move {
            let mut client = SequencerServiceClient::connect(format!("http://{addr}")).await.unwrap();
            client.send(send("alice", &id, &["bob"], "x")).await.map(|r| r.into_inner().timestamp)
        })
    };
    // The writer takes this send and waits on the locked row...
    let blocker = spawn_send("m0");
    wait_for_a_lock_wait(&mut c).await;
    // ...while the resend and two new sends queue up behind it, to be taken as one batch.
    let queued: Vec<_> = ["m1", "m2", "m3"].into_iter().map(spawn_send).collect();
    let mut admin = a.admin().await;
    let start = Instant::now();
    while admin.status(SequencerStatusRequest {}).await.unwrap().into_inner().queue_depth < 3 {
        assert!(start.elapsed() < Duration::from_secs(20), "the sends never queued");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    holder.batch_execute("commit").await.unwrap();

    let m0 = blocker.await.unwrap().unwrap();
    let mut answers = Vec::new();
    for q in queued {
        answers.push(q.await.unwrap().expect("every send of the batch is answered OK"));
    }
    assert_eq!(answers[0], first, "the resend is answered with its original timestamp");
    let bob: Vec<i64> =
        collect(&a, "bob", None, 4, Duration::from_secs(20)).await.iter().map(|e| e.timestamp).collect();
    let mut expected = vec![first, m0, answers[1], answers[2]];
    expected.sort_unstable();
    assert_eq!(bob, expected, "each send delivered once, at the timestamp its OK named");
    for id in ["m1", "m2", "m3"] {
        let stored: Count = diesel::sql_query("select count(*) as n from sequencer_events where message_id = $1")
            .bind::<Text, _>(id)
            .get_result(&mut c)
            .await
            .unwrap();
        assert_eq!(stored.n, 1, "{id} stored once");
    }
    a.shutdown().await;
}
