//! Faults: a request lost on the way to the sequencer, and the participant leader cut off
//! from its database while a request is in flight.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::StreamExt;
use syncline_participant::model::{Command, CompletionItem};
use syncline_participant::LedgerError;
use syncline_protocol::messages::SynchronizerParameters;
use syncline_sequencer_client::now_micros;
use syncline_testkit::FaultProxy;

use crate::harness::*;

/// Submit, retrying while the replica restarts its run (the sequencer is unreachable).
async fn submit_retrying(api: &syncline_participant::LedgerApi, c: syncline_participant::model::Commands) {
    let start = std::time::Instant::now();
    loop {
        match api.submit(c.clone()).await {
            Ok(_) => return,
            Err(LedgerError::NodeIsPassive { .. }) if start.elapsed() < Duration::from_secs(15) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("submit: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_request_completes_with_not_sequenced_timeout_once_sequencer_time_passes_its_mst() {
    let sync = Synchronizer::start(short_timeouts()).await;
    let proxy = FaultProxy::start(sync.seq.addr).await;
    let db = syncline_testkit::fresh_database().await;
    let p1 =
        start_participant("p1-r1", "p1", sync.seq.connection("p1", &format!("http://{}", proxy.addr())), &db.url).await;
    wait_active(&p1).await;
    let api = p1.api();
    api.allocate_party(Some("alice")).await.unwrap();
    let end = api.ledger_end().await.unwrap().offset;
    proxy.down();
    let submitted_at = now_micros();
    submit_retrying(&api, commands("alice", "lost-1", vec![Command::Create(iou(&["alice"], &[], 1))])).await;
    // No completion before the max-sequencing-time (ledger time + 5 s tolerance) passed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(api.ledger_end().await.unwrap().offset, end, "a completion before the max-sequencing-time");
    let mst = submitted_at + 5_000_000;
    tokio::time::sleep(Duration::from_micros((mst - now_micros()).max(0) as u64 + 1_000_000)).await;
    proxy.restore();
    let c = completion_of(&api, "alice", end, "lost-1").await;
    assert_eq!((c.status.id.as_str(), c.status.code), ("NOT_SEQUENCED_TIMEOUT", tonic::Code::Aborted), "{c:?}");
    assert_eq!((c.offset, c.update_id.as_deref()), (end + 1, None));
    assert!(c.record_time > mst, "sequencer time {} passed the max-sequencing-time {mst}", c.record_time);
    assert!(api.active_contracts(&["alice".into()], None).await.unwrap().is_empty(), "never executed");
    // Not an acceptance: the same command may run now.
    api.submit(commands("alice", "lost-1", vec![Command::Create(iou(&["alice"], &[], 1))])).await.unwrap();
    assert!(completion_of(&api, "alice", c.offset, "lost-1").await.status.is_ok());
    p1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_cut_off_from_its_database_mid_flight_hands_over_and_the_completion_appears_once() {
    // Timeouts long enough for the hand-over to happen before the response deadline.
    let params = SynchronizerParameters {
        confirmation_response_timeout: Duration::from_secs(20),
        mediator_reaction_timeout: Duration::from_secs(10),
        ledger_time_record_time_tolerance: Duration::from_secs(30),
        ..Default::default()
    };
    let sync = Synchronizer::start(params).await;
    let url = sync.seq.url();
    let p2 = Node::start("p2", &sync.seq).await;
    p2.api().allocate_party(Some("bob")).await.unwrap();
    let db = syncline_testkit::fresh_database().await;
    let proxy = FaultProxy::start(db.server_addr()).await;
    // The old leader reaches the sequencer through a proxy too, to slow its send down.
    let seq_proxy = FaultProxy::start(sync.seq.addr).await;
    let r1 = start_participant(
        "p1-r1",
        "p1",
        sync.seq.connection("p1", &format!("http://{}", seq_proxy.addr())),
        &db.url_via(proxy.addr()),
    )
    .await;
    wait_active(&r1).await;
    let r2 = start_participant("p1-r2", "p1", sync.seq.connection("p1", &url), &db.url).await;
    let (api1, api2) = (r1.api(), r2.api());
    api1.allocate_party(Some("alice")).await.unwrap();
    api1.submit(commands("alice", "before", vec![Command::Create(iou(&["alice"], &[], 1))])).await.unwrap();
    let before = completion_of(&api1, "alice", 0, "before").await;
    let end = api1.ledger_end().await.unwrap().offset;
    let mut old_stream = api1.completions("app", &["alice".into()], end).await.unwrap();

    // In flight: registered, but the sequencers are unreachable for the old leader when it
    // loses its database (and with it its run); it needs bob's confirmation.
    seq_proxy.down();
    let mid = commands("alice", "mid", vec![Command::Create(iou(&["alice", "bob"], &[], 2))]);
    submit_retrying(&api1, mid.clone()).await;
    proxy.down();
    tokio::time::sleep(Duration::from_millis(300)).await;
    seq_proxy.restore();

    // The old leader closes its API: its streams end with NODE_IS_PASSIVE_REPLICA.
    let ended = tokio::time::timeout(WAIT, async {
        while let Some(item) = old_stream.next().await {
            match item {
                Ok(CompletionItem::Checkpoint { .. }) => {}
                Ok(CompletionItem::Completion(c)) => panic!("the cut-off leader published {c:?}"),
                Err(e) => return e,
            }
        }
        panic!("the stream ended without an error");
    })
    .await
    .expect("the old leader's stream did not end");
    assert_eq!(ended.error_id(), "NODE_IS_PASSIVE_REPLICA");

    wait_active(&r2).await;
    let c = completion_of(&api2, "alice", end, "mid").await;
    assert!(c.status.is_ok(), "{c:?}");
    assert_eq!(c.offset, end + 1, "at the next offset");
    let all = completions_now(&api2, "alice", 0).await;
    assert_eq!(all.iter().filter(|x| x.command_id == "mid").count(), 1, "exactly once: {all:?}");
    assert_eq!(all.iter().find(|x| x.command_id == "before"), Some(&before), "the same offsets on the new leader");
    // Offsets are gap-free: each is a transaction or a completion.
    let ledger_end = api2.ledger_end().await.unwrap().offset;
    let updates: Vec<_> = api2.updates(0, Some(ledger_end), &["alice".into()]).await.unwrap().collect().await;
    let mut offsets: BTreeSet<i64> = updates.into_iter().map(|u| u.unwrap().offset).collect();
    offsets.extend(all.iter().map(|c| c.offset));
    assert_eq!(offsets, (1..=ledger_end).collect::<BTreeSet<_>>());
    // An application resubmitting after the failover does not execute the command twice.
    let e = api2.submit(mid).await.unwrap_err();
    assert_eq!(
        e,
        LedgerError::DuplicateCommand {
            command_id: "mid".into(),
            completion_offset: c.offset,
            existing_submission_id: c.submission_id.clone()
        }
    );
    proxy.restore();
    r2.shutdown().await;
    r1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_deletes_rows_above_the_ledger_end_before_serving() {
    use syncline_coordination::db::{self, SessionKind};
    use syncline_coordination::DbConfig;
    use syncline_participant::store::{self, StoredCompletion, StoredContract, StoredUpdate};

    let sync = Synchronizer::start(short_timeouts()).await;
    let url = sync.seq.url();
    let node = Node::start("p1", &sync.seq).await;
    let api = node.api();
    api.allocate_party(Some("alice")).await.unwrap();
    api.submit(commands("alice", "c1", vec![Command::Create(iou(&["alice"], &[], 1))])).await.unwrap();
    let end = completion_of(&api, "alice", 0, "c1").await.offset;
    let Node { p, db } = node;
    p.shutdown().await;
    // What a writer that died between writing rows and moving the ledger end leaves behind.
    let mut conn = db::connect(&DbConfig::new(&db.url), SessionKind::Pooled).await.unwrap();
    let above = end + 1;
    store::insert_update(
        &mut conn,
        &StoredUpdate {
            ledger_offset: above,
            update_id: "ghost".into(),
            record_time: 1,
            command_id: None,
            workflow_id: None,
            witnesses: vec!["alice".into()],
            events: "[]".into(),
        },
    )
    .await
    .unwrap();
    store::insert_completion(
        &mut conn,
        &StoredCompletion {
            ledger_offset: above,
            user_id: "app".into(),
            command_id: "ghost".into(),
            submission_id: None,
            act_as: vec!["alice".into()],
            status: "OK".into(),
            grpc_code: 0,
            message: String::new(),
            update_id: Some("ghost".into()),
            record_time: 1,
            dedup_offset: None,
            dedup_duration_micros: None,
        },
    )
    .await
    .unwrap();
    store::insert_contract(
        &mut conn,
        &StoredContract {
            contract_id: "ghost".into(),
            template: "Iou".into(),
            arguments: "{}".into(),
            signatories: vec!["alice".into()],
            observers: vec![],
            created_offset: above,
            created_update: "ghost".into(),
            archived_offset: None,
        },
    )
    .await
    .unwrap();
    let again = start_participant("p1-r2", "p1", sync.seq.connection("p1", &url), &db.url).await;
    wait_active(&again).await;
    let api = again.api();
    assert_eq!(api.ledger_end().await.unwrap().offset, end);
    assert!(store::contract(&mut conn, "ghost").await.unwrap().is_none(), "the ghost contract is gone");
    // The next offset is free for the next completion.
    api.submit(commands("alice", "c2", vec![Command::Create(iou(&["alice"], &[], 2))])).await.unwrap();
    let c = completion_of(&api, "alice", end, "c2").await;
    assert_eq!((c.status.is_ok(), c.offset), (true, above));
    assert_eq!(api.update_by_id("ghost", &["alice".into()]).await.unwrap_err().error_id(), "UPDATE_NOT_FOUND");
    again.shutdown().await;
}
