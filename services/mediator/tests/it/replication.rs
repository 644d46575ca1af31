//! The mediator as a replica group: pending requests survive a failover, every participant
//! gets exactly one verdict per request, hand-over needs a standby, and a leader cut off from
//! its database gives way to exactly one new leader.

use std::collections::BTreeMap;
use std::time::Duration;

use syncline_mediator::Mediator;
use syncline_node::Node;
use syncline_protocol::codes;
use syncline_protocol::messages::{LocalVerdict, Verdict};
use syncline_testkit::proxy::FaultProxy;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(20);

fn is_active(m: &Mediator) -> bool {
    m.status().health().borrow().active
}

/// Exactly one verdict per request in `member`'s events; the verdicts by request id.
async fn one_verdict_each(seq: &SequencerNode, member: &str) -> BTreeMap<i64, Verdict> {
    let mut out = BTreeMap::new();
    for r in results_in(&seq.events_of(member).await) {
        assert!(
            out.insert(r.request_id, r.verdict).is_none(),
            "{member} got two verdicts for request {}",
            r.request_id
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_requests_survive_the_leader_losing_its_database_and_each_gets_one_verdict() {
    let seq = SequencerNode::start().await;
    bootstrap(&seq).await;
    let db = syncline_testkit::fresh_database().await;
    let proxy = FaultProxy::start(db.server_addr()).await;
    let cfg = mediator_config(&seq);
    // m1 reaches the database through the fault proxy, m2 directly.
    let m1 = start_mediator("m1", &cfg, &db.url_via(proxy.addr())).await;
    wait_active(&m1, WAIT).await;
    let m2 = start_mediator("m2", &cfg, &db.url).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!is_active(&m2));

    let (p1, p2) = (Participant::new(&seq, "p1"), Participant::new(&seq, "p2"));
    let mut requests = Vec::new();
    for _ in 0..20 {
        let r = create_request("p1", "alice", &["alice", "bob"], &[]);
        let id = p1.submit(&r).await;
        p1.respond(id, r.root_hash(), LocalVerdict::Approve, &["alice"]).await;
        requests.push((id, r.root_hash()));
    }
    // Let m1 register them all, then cut it off: m2 takes over with 20 pending requests.
    tokio::time::sleep(Duration::from_millis(800)).await;
    proxy.cut();
    wait_active(&m2, WAIT).await;
    // bob's answers go to the new leader.
    for (id, root) in &requests {
        p2.respond(*id, *root, LocalVerdict::Approve, &["bob"]).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.restore();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(is_active(&m2) && !is_active(&m1), "exactly one leader afterwards: m2");

    for member in ["p1", "p2"] {
        let verdicts = one_verdict_each(&seq, member).await;
        for (id, _) in &requests {
            assert_eq!(verdicts.get(id), Some(&Verdict::Approve), "{member}: request {id}");
        }
    }
    m1.shutdown().await;
    m2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_that_outlasts_the_response_deadline_times_out_and_nothing_hangs() {
    let seq = SequencerNode::start().await;
    bootstrap(&seq).await;
    let db = syncline_testkit::fresh_database().await;
    let cfg = mediator_config(&seq);
    let m1 = start_mediator("m1", &cfg, &db.url).await;
    wait_active(&m1, WAIT).await;
    let mut p1 = Participant::new(&seq, "p1");
    let r = create_request("p1", "alice", &["alice", "bob"], &[]);
    let id = p1.submit(&r).await;
    p1.respond(id, r.root_hash(), LocalVerdict::Approve, &["alice"]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    m1.shutdown().await;
    // No mediator until the deadline has passed.
    tokio::time::sleep(RESPONSE_TIMEOUT + Duration::from_millis(500)).await;
    let m2 = start_mediator("m2", &cfg, &db.url).await;
    let (_, result) = p1.next_result(WAIT).await.expect("no verdict after the failover");
    assert_eq!(result.request_id, id);
    let Verdict::MediatorReject { code, parties, .. } = &result.verdict else { panic!("{:?}", result.verdict) };
    assert_eq!(
        (code.as_str(), parties.iter().map(String::as_str).collect::<Vec<_>>()),
        (codes::MEDIATOR_SAYS_TX_TIMED_OUT, vec!["bob"])
    );
    assert_eq!(one_verdict_each(&seq, "p1").await.len(), 1);
    tokio::time::timeout(Duration::from_secs(15), m2.shutdown()).await.expect("shutdown hangs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_passive_hands_over_only_to_a_standby() {
    let seq = SequencerNode::start().await;
    bootstrap(&seq).await;
    let db = syncline_testkit::fresh_database().await;
    let cfg = mediator_config(&seq);
    let m1 = start_mediator("m1", &cfg, &db.url).await;
    wait_active(&m1, WAIT).await;
    let e = m1.leadership().set_passive().await.expect_err("handed over to nobody");
    assert!(e.to_string().contains("no passive replica"), "{e}");
    assert!(is_active(&m1), "without a standby the leader stays active");

    let m2 = start_mediator("m2", &cfg, &db.url).await;
    let begun = std::time::Instant::now();
    while let Err(e) = m1.leadership().set_passive().await {
        assert!(begun.elapsed() < WAIT, "hand-over never possible: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_active(&m2, WAIT).await;
    assert!(!is_active(&m1));
    // The new leader decides.
    let mut p1 = Participant::new(&seq, "p1");
    let r = create_request("p1", "alice", &["alice"], &[]);
    let id = p1.submit(&r).await;
    p1.respond(id, r.root_hash(), LocalVerdict::Approve, &["alice"]).await;
    let (_, result) = p1.next_result(WAIT).await.expect("no verdict from the new leader");
    assert_eq!((result.request_id, result.verdict), (id, Verdict::Approve));
    m1.shutdown().await;
    m2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verdict_stored_but_not_sent_when_the_leader_dies_is_sent_once_by_the_next() {
    let seq = SequencerNode::start().await;
    bootstrap(&seq).await;
    let db = syncline_testkit::fresh_database().await;
    let proxy = FaultProxy::start(db.server_addr()).await;
    let cfg = mediator_config(&seq);
    let m1 = start_mediator("fp-m1", &cfg, &db.url_via(proxy.addr())).await;
    wait_active(&m1, WAIT).await;
    let m2 = start_mediator("fp-m2", &cfg, &db.url).await;
    // Only fp-m1 stops between storing a verdict and sending it.
    fail::cfg("mediator-after-verdict-stored", "return(fp-m1)").unwrap();

    let mut p1 = Participant::new(&seq, "p1");
    let r = create_request("p1", "alice", &["alice"], &[]);
    let id = p1.submit(&r).await;
    p1.respond(id, r.root_hash(), LocalVerdict::Approve, &["alice"]).await;
    // fp-m1 committed the verdict and stopped; before it restarts (1 s later) it loses its
    // database, as a dead process would: fp-m2 takes over and finds the verdict unsent.
    let mut h = m1.status().health();
    tokio::time::timeout(WAIT, h.wait_for(|h| !h.serving)).await.expect("the failpoint never fired").unwrap();
    proxy.cut();
    wait_active(&m2, WAIT).await;
    let (_, result) = p1.next_result(WAIT).await.expect("the stored verdict was never sent");
    assert_eq!((result.request_id, result.verdict), (id, Verdict::Approve));
    fail::remove("mediator-after-verdict-stored");
    proxy.restore();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(one_verdict_each(&seq, "p1").await.len(), 1);
    m1.shutdown().await;
    m2.shutdown().await;
}
