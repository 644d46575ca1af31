//! The mediator's store on PostgreSQL: UUID claims within the window, replays that change
//! nothing, and pruning that keeps what is pending or recent.

use std::collections::{BTreeMap, BTreeSet};

use syncline_coordination::db::{self, SessionKind};
use syncline_coordination::DbConfig;
use syncline_mediator::aggregation::{Aggregation, Verdict};
use syncline_mediator::store::{self, StoredRequest};

fn request(id: i64, uuid: &str, decision_time: i64) -> StoredRequest {
    let views = vec![BTreeMap::from([("alice".to_string(), BTreeSet::from(["p1".to_string()]))])];
    StoredRequest {
        request_id: id,
        request_uuid: uuid.into(),
        root_hash: vec![7; 32],
        deadline: decision_time - 10,
        decision_time,
        recipients: vec!["p1".into()],
        aggregation: store::to_json(&Aggregation::new(views)),
        verdict: None,
        finalized_at: None,
        delivered_at: None,
    }
}

#[tokio::test]
async fn uuids_are_claimed_within_their_window_and_pruning_keeps_pending_and_recent_requests() {
    let tdb = syncline_testkit::fresh_database().await;
    let cfg = DbConfig::new(&tdb.url);
    db::migrate(&cfg).await.unwrap();
    let mut c = db::connect(&cfg, SessionKind::Pooled).await.unwrap();

    assert_eq!(store::claim_uuid(&mut c, "u1", 100, 1_000).await.unwrap(), None);
    assert_eq!(store::claim_uuid(&mut c, "u1", 100, 1_000).await.unwrap(), None, "a replay of the same request");
    assert_eq!(store::claim_uuid(&mut c, "u1", 900, 1_900).await.unwrap(), Some(100), "within the window");
    assert_eq!(store::claim_uuid(&mut c, "u1", 1_001, 2_001).await.unwrap(), None, "after the window");

    for (id, decision) in [(100, 200), (300, 400), (500, 600)] {
        store::insert_request(&mut c, &request(id, &format!("r{id}"), decision)).await.unwrap();
    }
    // A replayed registration changes nothing.
    store::insert_request(&mut c, &request(100, "other", 999)).await.unwrap();
    assert_eq!(store::request(&mut c, 100).await.unwrap().unwrap().request_uuid, "r100");
    store::finalize(&mut c, 100, &Verdict::Approve, 150).await.unwrap();
    store::finalize(&mut c, 500, &Verdict::Approve, 550).await.unwrap();
    // Finalizing twice keeps the first verdict.
    store::finalize(&mut c, 100, &Verdict::mediator_reject("X", "late"), 160).await.unwrap();
    assert_eq!(store::request(&mut c, 100).await.unwrap().unwrap().verdict(), Some(Verdict::Approve));
    assert_eq!(store::undelivered(&mut c, 100).await.unwrap().len(), 2);
    store::mark_delivered(&mut c, 100, 170).await.unwrap();
    assert_eq!(store::undelivered(&mut c, 100).await.unwrap().iter().map(|r| r.request_id).collect::<Vec<_>>(), [500]);

    // Before 1000: request 100 (decided, old) goes; 300 is pending and stays; 500 was decided
    // at 600 < 1000 and goes too. The UUID claim expiring at 2001 stays.
    assert_eq!(store::prune(&mut c, 1_000).await.unwrap(), 2);
    assert!(store::request(&mut c, 100).await.unwrap().is_none());
    assert!(store::request(&mut c, 300).await.unwrap().is_some(), "a pending request was pruned");
    assert_eq!(store::pending(&mut c).await.unwrap(), (1, Some(390)));
    assert_eq!(store::claim_uuid(&mut c, "u1", 1_500, 2_500).await.unwrap(), Some(1_001));
}
