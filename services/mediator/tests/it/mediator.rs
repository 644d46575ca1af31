//! The mediator's verdicts with one replica, a real sequencer and scripted participants.

use std::time::Duration;

use syncline_protocol::codes;
use syncline_protocol::messages::{LocalVerdict, Permission, Verdict};
use syncline_protocol::topology::OPERATOR;

use crate::harness::*;

/// A synchronizer with a bootstrapped topology and one mediator replica.
struct Setup {
    seq: SequencerNode,
    mediator: syncline_mediator::Mediator,
    _db: syncline_testkit::TestDb,
}

async fn setup() -> Setup {
    let seq = SequencerNode::start().await;
    bootstrap(&seq).await;
    let db = syncline_testkit::fresh_database().await;
    let mediator = start_mediator("m1", &mediator_config(&seq), &db.url).await;
    wait_active(&mediator, Duration::from_secs(20)).await;
    Setup { seq, mediator, _db: db }
}

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approves_when_every_confirming_party_approved_and_tells_every_informee_participant() {
    let s = setup().await;
    let (mut p1, mut p2, mut p3) =
        (Participant::new(&s.seq, "p1"), Participant::new(&s.seq, "p2"), Participant::new(&s.seq, "p3"));
    // alice creates a contract signed by alice and bob, observed by carol.
    let request = create_request("p1", "alice", &["alice", "bob"], &["carol"]);
    let id = p1.submit(&request).await;
    let root = request.root_hash();
    p1.respond(id, root, LocalVerdict::Approve, &["alice"]).await;
    // Not yet: bob has not approved.
    assert!(p1.next_result(Duration::from_millis(500)).await.is_none(), "a verdict before bob approved");
    p2.respond(id, root, LocalVerdict::Approve, &["bob"]).await;
    for p in [&mut p1, &mut p2, &mut p3] {
        let (_, r) = p.next_result(WAIT).await.unwrap_or_else(|| panic!("{} got no verdict", p.name));
        assert_eq!((r.request_id, r.root_hash, &r.verdict), (id, root, &Verdict::Approve), "{}", p.name);
    }
    s.mediator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_as_soon_as_a_confirming_party_rejects_with_its_reason() {
    let s = setup().await;
    let (mut p1, p2) = (Participant::new(&s.seq, "p1"), Participant::new(&s.seq, "p2"));
    let request = create_request("p1", "alice", &["alice", "bob"], &[]);
    let id = p1.submit(&request).await;
    // bob rejects before alice answers: no need to wait for alice.
    let reject = LocalVerdict::Reject {
        code: codes::LOCAL_VERDICT_LOCKED_CONTRACTS.into(),
        reason: "contract c1 is locked".into(),
    };
    p2.respond(id, request.root_hash(), reject, &["bob"]).await;
    let (_, r) = p1.next_result(WAIT).await.expect("no verdict");
    let Verdict::ParticipantReject(reasons) = &r.verdict else { panic!("{:?}", r.verdict) };
    assert_eq!(reasons.len(), 1);
    assert_eq!(
        (reasons[0].participant.as_str(), reasons[0].code.as_str()),
        ("p2", codes::LOCAL_VERDICT_LOCKED_CONTRACTS)
    );
    assert!(reasons[0].parties.contains("bob") && reasons[0].reason.contains("locked"), "{reasons:?}");
    s.mediator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_out_naming_the_silent_party_and_drops_a_late_response() {
    metrics();
    let s = setup().await;
    let (mut p1, p2) = (Participant::new(&s.seq, "p1"), Participant::new(&s.seq, "p2"));
    let request = create_request("p1", "alice", &["alice", "bob"], &[]);
    let id = p1.submit(&request).await;
    p1.respond(id, request.root_hash(), LocalVerdict::Approve, &["alice"]).await;
    // Nobody sends anything else: the mediator's time proof makes the timeout fire on time.
    let (at, r) = p1.next_result(RESPONSE_TIMEOUT + WAIT).await.expect("no timeout verdict");
    let Verdict::MediatorReject { code, parties, .. } = &r.verdict else { panic!("{:?}", r.verdict) };
    assert_eq!(code, codes::MEDIATOR_SAYS_TX_TIMED_OUT);
    assert_eq!(parties.iter().collect::<Vec<_>>(), ["bob"]);
    assert!(at > id + RESPONSE_TIMEOUT.as_micros() as i64, "finalized before the deadline");
    assert!(
        at < id + (RESPONSE_TIMEOUT + Duration::from_secs(5)).as_micros() as i64,
        "the timeout waited for traffic instead of asking for a time proof ({} ms after the deadline)",
        (at - id - RESPONSE_TIMEOUT.as_micros() as i64) / 1000
    );
    // bob's answer after the deadline changes nothing: no second verdict.
    p2.respond(id, request.root_hash(), LocalVerdict::Approve, &["bob"]).await;
    assert!(p1.next_result(Duration::from_secs(2)).await.is_none(), "a second verdict");
    let m = metrics();
    for name in [
        "syncline_mediator_timeouts_total{party=\"bob\"}",
        "syncline_mediator_verdicts_total{kind=\"timeout\"}",
        "syncline_mediator_time_proofs_total",
        "syncline_mediator_late_responses_total",
    ] {
        assert!(sample(&m, name).is_some_and(|v| v >= 1.0), "{name} not counted:\n{m}");
    }
    s.mediator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_reused_request_uuid_an_unhosted_informee_and_ignores_unknown_requests() {
    let s = setup().await;
    let mut p1 = Participant::new(&s.seq, "p1");

    // A response for a request that does not exist: no verdict, the mediator carries on.
    p1.respond(42, create_request("p1", "alice", &["alice"], &[]).root_hash(), LocalVerdict::Approve, &["alice"]).await;

    let first = create_request("p1", "alice", &["alice"], &[]);
    let id = p1.submit(&first).await;
    p1.respond(id, first.root_hash(), LocalVerdict::Approve, &["alice"]).await;
    let (_, r) = p1.next_result(WAIT).await.unwrap();
    assert_eq!((r.request_id, r.verdict), (id, Verdict::Approve));

    // The same UUID again (another command): refused at once.
    let mut again = create_request("p1", "alice", &["alice"], &[]);
    again.header.request_uuid = first.header.request_uuid.clone();
    let id2 = p1.submit(&again).await;
    let (_, r) = p1.next_result(WAIT).await.unwrap();
    assert_eq!(r.request_id, id2);
    assert!(
        matches!(&r.verdict, Verdict::MediatorReject { code, .. } if code == codes::DUPLICATE_CONFIRMATION_REQUEST_UUID),
        "{:?}",
        r.verdict
    );

    // dave is hosted nowhere.
    let unhosted = create_request("p1", "alice", &["alice"], &["dave"]);
    let id3 = p1.submit(&unhosted).await;
    let (_, r) = p1.next_result(WAIT).await.unwrap();
    assert_eq!(r.request_id, id3);
    let Verdict::MediatorReject { code, reason, .. } = &r.verdict else { panic!("{:?}", r.verdict) };
    assert_eq!(code, codes::MEDIATOR_INVALID_MESSAGE);
    assert!(reason.contains("dave"), "{reason}");
    s.mediator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_changes_count_only_after_the_delay_and_unauthorized_ones_never() {
    let s = setup().await;
    let (mut p1, p2) = (Participant::new(&s.seq, "p1"), Participant::new(&s.seq, "p2"));

    // p1 claims that it hosts erin on p2: not its to say; ignored by the mediator.
    s.seq.publish("p1", add(1, party("erin", &[("p2", Permission::Confirmation)]))).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let id = p1.submit(&create_request("p1", "alice", &["alice"], &["erin"])).await;
    let (_, r) = p1.next_result(WAIT).await.unwrap();
    assert_eq!(r.request_id, id);
    assert!(matches!(&r.verdict, Verdict::MediatorReject { reason, .. } if reason.contains("erin")), "{:?}", r.verdict);

    // The operator hosts frank on p2; a request sequenced within the delay does not see him.
    s.seq.publish(OPERATOR, add(1, party("frank", &[("p2", Permission::Confirmation)]))).await;
    let early = p1.submit(&create_request("p1", "alice", &["alice"], &["frank"])).await;
    let (_, r) = p1.next_result(WAIT).await.unwrap();
    assert_eq!(r.request_id, early);
    assert!(
        matches!(&r.verdict, Verdict::MediatorReject { reason, .. } if reason.contains("frank")),
        "{:?}",
        r.verdict
    );
    // After the delay he is hosted: the request waits for p2's answer for frank.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let request = create_request("p1", "alice", &["alice", "frank"], &[]);
    let id = p1.submit(&request).await;
    p1.respond(id, request.root_hash(), LocalVerdict::Approve, &["alice"]).await;
    p2.respond(id, request.root_hash(), LocalVerdict::Approve, &["frank"]).await;
    let (_, r) = p1.next_result(WAIT).await.unwrap();
    assert_eq!((r.request_id, r.verdict), (id, Verdict::Approve));
    s.mediator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mediator_started_before_the_bootstrap_waits_for_it_without_failing() {
    let seq = SequencerNode::start().await;
    let db = syncline_testkit::fresh_database().await;
    // Its token file is written by the bootstrap (as `syncline admin bootstrap --token-dir`
    // does), after it started.
    let dir = syncline_testkit::files::TempDir::new("syncline-mediator-token");
    let token_file = dir.path().join("mediator.token");
    let connection = SequencerConnection {
        endpoints: vec![seq.url()],
        token: None,
        token_file: Some(token_file.clone()),
        ..Default::default()
    };
    let mediator = start_mediator("m1", &mediator_config_via(connection), &db.url).await;
    wait_active(&mediator, Duration::from_secs(20)).await;
    // Its member does not exist yet: it keeps leading and waits instead of failing.
    let health = syncline_node::Node::status(&mediator).health();
    for _ in 0..50 {
        let h = health.borrow().clone();
        assert!(h.serving && h.active, "{h:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bootstrap(&seq).await;
    std::fs::write(&token_file, seq.token(MEDIATOR)).unwrap();
    let mut p1 = Participant::new(&seq, "p1");
    let request = create_request("p1", "alice", &["alice"], &[]);
    let id = p1.submit(&request).await;
    p1.respond(id, request.root_hash(), LocalVerdict::Approve, &["alice"]).await;
    let (_, r) = p1.next_result(WAIT).await.expect("no verdict after the late bootstrap");
    assert_eq!((r.request_id, r.verdict), (id, Verdict::Approve));
    mediator.shutdown().await;
}
