//! The ledger API against a real sequencer and mediator: two participants, one replica each.

use std::time::Duration;

use futures_util::StreamExt;
use syncline_participant::model::{Command, DeduplicationPeriod, Event};
use syncline_participant::LedgerError;
use syncline_protocol::codes;
use syncline_sequencer_client::SequencerConnection;

use crate::harness::*;

/// A synchronizer with participants p1 (hosting alice) and p2 (hosting bob).
pub struct Setup {
    pub sync: Synchronizer,
    pub p1: Node,
    pub p2: Node,
}

pub async fn setup() -> Setup {
    let sync = Synchronizer::start(short_timeouts()).await;
    let (p1, p2) = tokio::join!(Node::start("p1", &sync.seq), Node::start("p2", &sync.seq));
    let (api1, api2) = (p1.api(), p2.api());
    let (alice, bob) = tokio::join!(api1.allocate_party(Some("alice")), api2.allocate_party(Some("bob")));
    assert!(alice.unwrap().is_local && bob.unwrap().is_local);
    // Each participant learns of the other's party through its own subscription.
    for api in [&api1, &api2] {
        let start = std::time::Instant::now();
        while api.list_parties().await.unwrap().len() < 2 {
            assert!(start.elapsed() < WAIT, "parties unknown at {}", api.participant_id());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Setup { sync, p1, p2 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_with_an_observer_on_the_other_participant() {
    syncline_test_synchronizer::metrics();
    let s = setup().await;
    let (a1, a2) = (s.p1.api(), s.p2.api());
    assert_eq!(a1.participant_id(), "p1");
    let parties = a1.list_parties().await.unwrap();
    assert!(parties.iter().any(|p| p.party == "alice" && p.is_local), "{parties:?}");
    assert!(parties.iter().any(|p| p.party == "bob" && !p.is_local), "{parties:?}");
    let (end1, end2) = (a1.ledger_end().await.unwrap().offset, a2.ledger_end().await.unwrap().offset);

    let create = commands("alice", "create-1", vec![Command::Create(iou(&["alice"], &["bob"], 10))]);
    a1.submit(create).await.unwrap();
    let c = completion_of(&a1, "alice", end1, "create-1").await;
    assert!(c.status.is_ok(), "{c:?}");
    assert_eq!(c.offset, end1 + 1, "the next offset");
    let t1 = &transactions(&a1, "alice", end1, 1).await[0];
    let t2 = &transactions(&a2, "bob", end2, 1).await[0];
    assert_eq!(t1.update_id, t2.update_id, "one update id everywhere");
    assert_eq!(Some(&t1.update_id), c.update_id.as_ref());
    assert_eq!((t1.offset, t2.offset), (end1 + 1, end2 + 1), "each participant's own offsets");
    assert_eq!(t1.record_time, t2.record_time);
    assert_eq!(t1.command_id.as_deref(), Some("create-1"), "the submitter knows its command");
    assert_eq!(t2.command_id, None, "the observer does not");
    let Event::Created(created) = &t2.events[0] else { panic!("{t2:?}") };
    assert_eq!(a1.update_by_id(&t1.update_id, &["alice".into()]).await.unwrap(), *t1);
    let e = a1.update_by_id(&t1.update_id, &["carol".into()]).await.unwrap_err();
    assert_eq!(e.error_id(), "UPDATE_NOT_FOUND");
    let acs2 = a2.active_contracts(&["bob".into()], None).await.unwrap();
    assert_eq!(acs2.len(), 1);
    assert_eq!(acs2[0].created, *created);

    let archive = commands("alice", "archive-1", vec![Command::Archive { contract_id: created.contract_id.clone() }]);
    a1.submit(archive).await.unwrap();
    let c = completion_of(&a1, "alice", end1 + 1, "archive-1").await;
    assert!(c.status.is_ok(), "{c:?}");
    let t2b = &transactions(&a2, "bob", end2 + 1, 1).await[0];
    assert!(matches!(&t2b.events[0], Event::Archived(a) if a.contract_id == created.contract_id), "{t2b:?}");
    assert_eq!(t2b.offset, end2 + 2);
    for (api, party) in [(&a1, "alice"), (&a2, "bob")] {
        assert!(api.active_contracts(&[party.into()], None).await.unwrap().is_empty(), "ACS empty at {party}");
    }
    let at_create = a2.active_contracts(&["bob".into()], Some(end2 + 1)).await.unwrap();
    assert_eq!(at_create.len(), 1, "the ACS as of the create's offset");
    let e = a2.active_contracts(&["bob".into()], Some(end2 + 10)).await.unwrap_err();
    assert_eq!((e.error_id(), e.code()), ("OFFSET_AFTER_LEDGER_END", tonic::Code::OutOfRange));
    let m = syncline_test_synchronizer::metrics();
    for name in ["syncline_participant_submissions_total", "syncline_participant_published_total"] {
        assert!(syncline_test_synchronizer::sample(&m, name).is_some_and(|v| v >= 2.0), "{name}:\n{m}");
    }
    assert!(syncline_test_synchronizer::sample(&m, "syncline_participant_ledger_end").is_some(), "{m}");
    let ok = "syncline_participant_completions_total{status=\"OK\"}";
    assert!(syncline_test_synchronizer::sample(&m, ok).is_some_and(|v| v >= 2.0), "{ok}:\n{m}");
    // Process-wide gauges (other tests of this binary set them too): present and sane.
    let outstanding = syncline_test_synchronizer::sample(&m, "syncline_participant_outstanding_requests");
    assert!(outstanding.is_some_and(|n| n >= 0.0), "{m}");
    let lag = syncline_test_synchronizer::sample(&m, "syncline_participant_processing_lag_seconds");
    assert!(lag.is_some_and(|l| l >= 0.0), "{m}");
    drop(s.sync);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_confirmer_times_the_request_out_naming_its_party() {
    let s = setup().await;
    let a1 = s.p1.api();
    let end = a1.ledger_end().await.unwrap().offset;
    s.p2.p.shutdown().await;
    let create = commands("alice", "multi-1", vec![Command::Create(iou(&["alice", "bob"], &[], 1))]);
    a1.submit(create).await.unwrap();
    let c = completion_of(&a1, "alice", end, "multi-1").await;
    assert_eq!((c.status.id.as_str(), c.status.code), (codes::MEDIATOR_SAYS_TX_TIMED_OUT, tonic::Code::Aborted));
    assert!(c.status.message.contains("bob"), "names the unresponsive party: {:?}", c.status.message);
    assert_eq!((c.offset, c.update_id), (end + 1, None));
    assert!(a1.active_contracts(&["alice".into()], None).await.unwrap().is_empty());
    // The locks of the timed-out request are gone: alice alone can create again.
    a1.submit(commands("alice", "single-1", vec![Command::Create(iou(&["alice"], &[], 1))])).await.unwrap();
    assert!(completion_of(&a1, "alice", end + 1, "single-1").await.status.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_archives_of_one_contract_accept_exactly_one() {
    let s = setup().await;
    let (a1, a2) = (s.p1.api(), s.p2.api());
    let end = a1.ledger_end().await.unwrap().offset;
    a1.submit(commands("alice", "iou", vec![Command::Create(iou(&["alice"], &["bob"], 5))])).await.unwrap();
    let created = completion_of(&a1, "alice", end, "iou").await;
    let end = created.offset;
    let cid = a1.active_contracts(&["alice".into()], None).await.unwrap()[0].created.contract_id.clone();
    let submits = (0..50).map(|i| {
        let (api, cid) = (a1.clone(), cid.clone());
        tokio::spawn(async move {
            let archive = commands("alice", &format!("spend-{i}"), vec![Command::Archive { contract_id: cid }]);
            api.submit(archive).await
        })
    });
    let mut registered = Vec::new();
    for (i, r) in futures_util::future::join_all(submits).await.into_iter().enumerate() {
        match r.unwrap() {
            Ok(_) => registered.push(format!("spend-{i}")),
            // Refused before registration: the archive was already published.
            Err(e) => assert_eq!(e.error_id(), "CONTRACT_NOT_FOUND", "{e}"),
        }
    }
    let mut accepted = 0;
    for id in &registered {
        let c = completion_of(&a1, "alice", end, id).await;
        if c.status.is_ok() {
            accepted += 1;
        } else {
            assert!(
                [codes::LOCAL_VERDICT_LOCKED_CONTRACTS, codes::LOCAL_VERDICT_INACTIVE_CONTRACTS]
                    .contains(&c.status.id.as_str()),
                "{c:?}"
            );
        }
    }
    assert_eq!(accepted, 1, "exactly one archive accepted of {} registered", registered.len());
    // Never two archives, at either participant.
    for (api, party) in [(&a1, "alice"), (&a2, "bob")] {
        let end = api.ledger_end().await.unwrap().offset;
        let txs: Vec<_> = api.updates(0, Some(end), &[party.into()]).await.unwrap().collect().await;
        let archives = (txs.into_iter().map(Result::unwrap))
            .flat_map(|t| t.events)
            .filter(|e| matches!(e, Event::Archived(a) if a.contract_id == cid))
            .count();
        assert_eq!(archives, 1, "at {party}");
        assert!(api.active_contracts(&[party.into()], None).await.unwrap().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_deduplicated_by_change_id_over_a_duration_or_an_offset() {
    let s = setup().await;
    let a1 = s.p1.api();
    let end = a1.ledger_end().await.unwrap().offset;
    let create = |id: &str| commands("alice", id, vec![Command::Create(iou(&["alice"], &[], 1))]);
    a1.submit(create("dedup-1")).await.unwrap();
    let first = completion_of(&a1, "alice", end, "dedup-1").await;
    assert!(first.status.is_ok());
    // Within the (default, 7 days) period: a duplicate, naming the earlier offset.
    let e = a1.submit(create("dedup-1")).await.unwrap_err();
    assert_eq!(
        e,
        LedgerError::DuplicateCommand {
            command_id: "dedup-1".into(),
            completion_offset: first.offset,
            existing_submission_id: first.submission_id.clone()
        }
    );
    assert_eq!((e.error_id(), e.code()), ("DUPLICATE_COMMAND", tonic::Code::AlreadyExists));
    assert!(e.metadata().contains(&("completion_offset", first.offset.to_string())));
    // Other acting parties make another change id.
    let mut other = create("dedup-1");
    other.act_as = vec!["alice".into(), "alice-2".into()];
    assert_eq!(a1.submit(other).await.unwrap_err().error_id(), "NO_SYNCHRONIZER_ON_WHICH_ALL_SUBMITTERS_CAN_SUBMIT");
    // Deduplicating only after the earlier acceptance's offset: accepted again.
    let mut after = create("dedup-1");
    after.deduplication_period = Some(DeduplicationPeriod::Offset(first.offset));
    a1.submit(after.clone()).await.unwrap();
    let second = completion_of(&a1, "alice", first.offset, "dedup-1").await;
    assert!(second.status.is_ok(), "{second:?}");
    assert_eq!(second.deduplication_period, Some(DeduplicationPeriod::Offset(first.offset)));
    assert_eq!(a1.submit(after).await.unwrap_err().error_id(), "DUPLICATE_COMMAND", "now after that offset");
    // Too long or beyond the ledger end.
    let mut long = create("dedup-2");
    long.deduplication_period = Some(DeduplicationPeriod::Duration(Duration::from_secs(8 * 24 * 3600)));
    let e = a1.submit(long).await.unwrap_err();
    assert_eq!((e.error_id(), e.code()), ("INVALID_DEDUPLICATION_PERIOD", tonic::Code::FailedPrecondition));
    let mut beyond = create("dedup-2");
    beyond.deduplication_period = Some(DeduplicationPeriod::Offset(second.offset + 100));
    assert_eq!(a1.submit(beyond).await.unwrap_err().error_id(), "INVALID_DEDUPLICATION_PERIOD");
    // Concurrent submissions of one change id: one runs, the other is in flight.
    let (x, y) = tokio::join!(a1.submit(create("dedup-3")), a1.submit(create("dedup-3")));
    let errors: Vec<LedgerError> = [x, y].into_iter().filter_map(Result::err).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!((errors[0].error_id(), errors[0].code()), ("SUBMISSION_ALREADY_IN_FLIGHT", tonic::Code::Aborted));
    assert!(completion_of(&a1, "alice", second.offset, "dedup-3").await.status.is_ok());
    // A rejected command may be resubmitted at once: only acceptances deduplicate.
    let end = a1.ledger_end().await.unwrap().offset;
    a1.submit(create("k")).await.unwrap();
    completion_of(&a1, "alice", end, "k").await;
    let k = (a1.active_contracts(&["alice".into()], None).await.unwrap().into_iter())
        .find(|c| c.created_offset > end)
        .unwrap()
        .created
        .contract_id;
    let archive = |id: &str| commands("alice", id, vec![Command::Archive { contract_id: k.clone() }]);
    let (x, y) = tokio::join!(a1.submit(archive("race-x")), a1.submit(archive("race-y")));
    x.unwrap();
    y.unwrap();
    let (cx, cy) = (completion_of(&a1, "alice", end, "race-x").await, completion_of(&a1, "alice", end, "race-y").await);
    assert_eq!(cx.status.is_ok() as u8 + cy.status.is_ok() as u8, 1, "{cx:?} {cy:?}");
    let (accepted, rejected) = if cx.status.is_ok() { (cx, cy) } else { (cy, cx) };
    // Resubmitting the accepted archive (as after a lost answer): a duplicate, although its
    // contract is gone by now; never "contract not found".
    let e = a1.submit(archive(&accepted.command_id)).await.unwrap_err();
    assert_eq!(e.error_id(), "DUPLICATE_COMMAND", "{e}");
    a1.submit(create(&rejected.command_id)).await.unwrap();
    let again = completion_of(&a1, "alice", rejected.offset, &rejected.command_id).await;
    assert!(again.status.is_ok(), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passive_replica_refuses_the_ledger_api() {
    let s = setup().await;
    let passive = start_participant("p1-r2", "p1", s.sync.seq.connection("p1", &s.sync.seq.url()), &s.p1.db.url).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let api = passive.api();
    assert!(!api.is_active());
    let e = api.submit(commands("alice", "c", vec![Command::Create(iou(&["alice"], &[], 1))])).await.unwrap_err();
    assert!(matches!(e, LedgerError::NodeIsPassive { .. }), "{e}");
    assert_eq!((e.error_id(), e.code()), ("NODE_IS_PASSIVE_REPLICA", tonic::Code::Unavailable));
    assert_eq!(api.ledger_end().await.unwrap_err().error_id(), "NODE_IS_PASSIVE_REPLICA");
    assert!(api.completions("app", &["alice".into()], 0).await.is_err());
    assert_eq!(api.active_contracts(&["alice".into()], None).await.unwrap_err().error_id(), "NODE_IS_PASSIVE_REPLICA");
    assert_eq!(api.allocate_party(Some("x")).await.unwrap_err().error_id(), "NODE_IS_PASSIVE_REPLICA");
    // The leader serves meanwhile.
    assert!(s.p1.api().ledger_end().await.is_ok());
    passive.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_verdict_times_out_locally_and_releases_the_locks() {
    let mut s = setup().await;
    let a1 = s.p1.api();
    let end = a1.ledger_end().await.unwrap().offset;
    a1.submit(commands("alice", "k", vec![Command::Create(iou(&["alice"], &["bob"], 1))])).await.unwrap();
    let created = completion_of(&a1, "alice", end, "k").await;
    let k = a1.active_contracts(&["alice".into()], None).await.unwrap()[0].created.contract_id.clone();
    let archive = |id: &str| commands("alice", id, vec![Command::Archive { contract_id: k.clone() }]);
    // No mediator: no verdict ever comes; the participant's time proof passes the decision time.
    s.sync.stop_mediator().await;
    a1.submit(archive("archive-1")).await.unwrap();
    let c = completion_of(&a1, "alice", created.offset, "archive-1").await;
    assert_eq!((c.status.id.as_str(), c.status.code), (codes::LOCAL_VERDICT_TIMEOUT, tonic::Code::Aborted), "{c:?}");
    assert_eq!(c.offset, created.offset + 1);
    assert_eq!(a1.active_contracts(&["alice".into()], None).await.unwrap().len(), 1, "still active");
    // The locks are released: with a mediator again, the same contract is archived.
    s.sync.start_mediator("m2").await;
    a1.submit(archive("archive-2")).await.unwrap();
    let c = completion_of(&a1, "alice", c.offset, "archive-2").await;
    assert!(c.status.is_ok(), "{c:?}");
    assert!(a1.active_contracts(&["alice".into()], None).await.unwrap().is_empty());
    let a2 = s.p2.api();
    let seen = transactions(&a2, "bob", 0, 2).await;
    assert!(matches!(&seen[1].events[0], Event::Archived(a) if a.contract_id == k), "{seen:?}");
    assert_eq!(seen[1].update_id, c.update_id.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_passive_hands_the_ledger_over_to_the_standby() {
    let s = setup().await;
    let standby = start_participant("p1-r2", "p1", s.sync.seq.connection("p1", &s.sync.seq.url()), &s.p1.db.url).await;
    let a1 = s.p1.api();
    a1.submit(commands("alice", "h1", vec![Command::Create(iou(&["alice"], &[], 1))])).await.unwrap();
    let first = completion_of(&a1, "alice", 0, "h1").await;
    s.p1.p.leadership().set_passive().await.unwrap();
    wait_active(&standby).await;
    assert_eq!(a1.ledger_end().await.unwrap_err().error_id(), "NODE_IS_PASSIVE_REPLICA");
    let a2 = standby.api();
    assert_eq!(a2.ledger_end().await.unwrap().offset, first.offset, "the same ledger");
    a2.submit(commands("alice", "h2", vec![Command::Create(iou(&["alice"], &[], 2))])).await.unwrap();
    let second = completion_of(&a2, "alice", first.offset, "h2").await;
    assert_eq!((second.status.is_ok(), second.offset), (true, first.offset + 1));
    assert_eq!(completion_of(&a2, "alice", 0, "h1").await, first);
    standby.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_started_before_its_member_is_registered_waits_without_failing() {
    let sync = Synchronizer::start(short_timeouts()).await;
    let db = syncline_testkit::fresh_database().await;
    // Its token file is written once it is registered (as `syncline admin join-participant
    // --token-dir` does), after it started.
    let dir = syncline_testkit::files::TempDir::new("syncline-p3-token");
    let token_file = dir.path().join("p3.token");
    let connection = SequencerConnection {
        endpoints: vec![sync.seq.url()],
        token: None,
        token_file: Some(token_file.clone()),
        ..Default::default()
    };
    let p3 = start_participant("p3-r1", "p3", connection, &db.url).await;
    wait_active(&p3).await;
    // Its member does not exist yet: it keeps leading (and serving its API) instead of failing.
    let health = syncline_node::Node::status(&p3).health();
    for _ in 0..50 {
        let h = health.borrow().clone();
        assert!(h.serving && h.active, "{h:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sync.seq.register(&["p3"]).await;
    std::fs::write(&token_file, sync.seq.token("p3")).unwrap();
    assert_eq!(p3.api().ledger_end().await.unwrap().offset, 0);
    p3.shutdown().await;
}
