//! The gRPC ledger API through generated clients against the participants' public routes on
//! loopback ports: submit-and-wait of a create, a transfer (consuming exercise) and an archive,
//! the completion and update streams from an offset, the ACS, parties and the version; the
//! error details (DUPLICATE_COMMAND with its completion offset, INVALID_ARGUMENT naming the
//! field, a rejection as SubmitAndWait's error, REQUEST_TIME_OUT at the call's deadline,
//! NODE_IS_PASSIVE_REPLICA on a passive replica).

use std::time::Duration;

use futures_util::StreamExt;
use syncline_proto::ledger as pb;
use syncline_proto::ledger::command_completion_service_client::CommandCompletionServiceClient;
use syncline_proto::ledger::command_service_client::CommandServiceClient;
use syncline_proto::ledger::command_submission_service_client::CommandSubmissionServiceClient;
use syncline_proto::ledger::party_management_service_client::PartyManagementServiceClient;
use syncline_proto::ledger::state_service_client::StateServiceClient;
use syncline_proto::ledger::update_service_client::UpdateServiceClient;
use syncline_proto::ledger::version_service_client::VersionServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::harness::*;
use crate::ledger::setup;

fn create(signatories: &[&str], observers: &[&str], amount: u32) -> pb::CreateCommand {
    pb::CreateCommand {
        template_id: "Iou".into(),
        create_arguments: format!(r#"{{"amount":{amount}}}"#),
        signatories: signatories.iter().map(|s| s.to_string()).collect(),
        observers: observers.iter().map(|s| s.to_string()).collect(),
    }
}

fn cmds(party: &str, command_id: &str, command: pb::command::Command) -> pb::Commands {
    pb::Commands {
        user_id: "app".into(),
        command_id: command_id.into(),
        act_as: vec![party.into()],
        commands: vec![pb::Command { command: Some(command) }],
        ..Default::default()
    }
}

fn filter(party: &str) -> Option<pb::TransactionFilter> {
    Some(pb::TransactionFilter { parties: vec![party.into()] })
}

/// The Canton error id, metadata and retryability in a status's details.
fn error_info(s: &Status) -> (String, std::collections::HashMap<String, String>, bool) {
    let d = s.get_error_details();
    let info = d.error_info().unwrap_or_else(|| panic!("no ErrorInfo in {s:?}"));
    assert_eq!(info.domain, "syncline");
    assert!(s.message().starts_with(&format!("{}(", info.reason)), "message without the id first: {}", s.message());
    (info.reason.clone(), info.metadata.clone(), d.retry_info().is_some())
}

async fn submit_and_wait(url: &str, c: pb::Commands) -> Result<pb::SubmitAndWaitResponse, Status> {
    let mut client = CommandServiceClient::connect(url.to_string()).await.unwrap();
    client.submit_and_wait(pb::SubmitAndWaitRequest { commands: Some(c) }).await.map(|r| r.into_inner())
}

async fn ledger_end(url: &str) -> i64 {
    let mut state = StateServiceClient::connect(url.to_string()).await.unwrap();
    state.get_ledger_end(pb::GetLedgerEndRequest {}).await.unwrap().into_inner().offset
}

/// The next `n` transactions of `party` after `begin`.
async fn updates(url: &str, party: &str, begin: i64, n: usize) -> Vec<pb::Transaction> {
    let mut client = UpdateServiceClient::connect(url.to_string()).await.unwrap();
    let request = pb::GetUpdatesRequest { begin_exclusive: begin, end_inclusive: None, filter: filter(party) };
    let stream = client.get_updates(request).await.unwrap().into_inner();
    let items = tokio::time::timeout(WAIT, stream.take(n).collect::<Vec<_>>()).await.expect("transactions in time");
    (items.into_iter())
        .map(|u| match u.unwrap().update {
            Some(pb::get_updates_response::Update::Transaction(t)) => t,
            None => panic!("an empty update"),
        })
        .collect()
}

async fn acs(url: &str, party: &str) -> Vec<pb::CreatedEvent> {
    let mut state = StateServiceClient::connect(url.to_string()).await.unwrap();
    let r = pb::GetActiveContractsRequest { filter: filter(party), active_at_offset: 0 };
    let stream = state.get_active_contracts(r).await.unwrap().into_inner();
    stream.map(|r| r.unwrap().created_event.unwrap()).collect().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_and_wait_create_transfer_archive_with_streams_acs_parties_and_errors() {
    let s = setup().await;
    let ((u1, _g1), (u2, _g2)) = (serve_grpc(&s.p1.p).await, serve_grpc(&s.p2.p).await);
    let (u1, u2) = (u1.as_str(), u2.as_str());

    let mut version = VersionServiceClient::connect(u1.to_string()).await.unwrap();
    let v = version.get_ledger_api_version(pb::GetLedgerApiVersionRequest {}).await.unwrap().into_inner();
    assert_eq!(v.version, env!("CARGO_PKG_VERSION"));
    let mut parties = PartyManagementServiceClient::connect(u1.to_string()).await.unwrap();
    let id = parties.get_participant_id(pb::GetParticipantIdRequest {}).await.unwrap().into_inner();
    assert_eq!(id.participant_id, "p1");
    let carol = parties.allocate_party(pb::AllocatePartyRequest { party_id_hint: "carol".into() }).await.unwrap();
    assert_eq!(carol.into_inner().party_details, Some(pb::PartyDetails { party: "carol".into(), is_local: true }));
    let e = parties.allocate_party(pb::AllocatePartyRequest { party_id_hint: "carol".into() }).await.unwrap_err();
    assert_eq!((e.code(), error_info(&e).0.as_str()), (Code::AlreadyExists, "PARTY_ALREADY_EXISTS"));
    let known = parties.list_known_parties(pb::ListKnownPartiesRequest {}).await.unwrap().into_inner().party_details;
    for (party, local) in [("alice", true), ("bob", false), ("carol", true)] {
        assert!(known.contains(&pb::PartyDetails { party: party.into(), is_local: local }), "{party}: {known:?}");
    }

    let (end1, end2) = (ledger_end(u1).await, ledger_end(u2).await);
    // alice issues an IOU to bob (observer), transfers it to carol, and archives it.
    let mut commands = CommandServiceClient::connect(u1.to_string()).await.unwrap();
    let created = commands
        .submit_and_wait_for_transaction(pb::SubmitAndWaitForTransactionRequest {
            commands: Some(cmds("alice", "iou-1", pb::command::Command::Create(create(&["alice"], &["bob"], 10)))),
        })
        .await
        .unwrap()
        .into_inner()
        .transaction
        .unwrap();
    assert_eq!((created.offset, created.command_id.as_str()), (end1 + 1, "iou-1"));
    let Some(pb::event::Event::Created(iou)) = &created.events[0].event else { panic!("{created:?}") };
    assert_eq!((iou.signatories.clone(), iou.observers.clone()), (vec!["alice".to_string()], vec!["bob".to_string()]));
    assert_eq!(iou.witness_parties, vec!["alice".to_string()], "the filter's parties among the stakeholders");

    let transfer = pb::ExerciseCommand {
        contract_id: iou.contract_id.clone(),
        choice: "Transfer".into(),
        consuming: true,
        creates: vec![create(&["alice"], &["carol"], 10)],
    };
    let moved =
        submit_and_wait(u1, cmds("alice", "transfer-1", pb::command::Command::Exercise(transfer))).await.unwrap();
    assert_eq!(moved.completion_offset, end1 + 2);
    let acs1 = acs(u1, "carol").await;
    assert_eq!(acs1.len(), 1, "{acs1:?}");
    assert_eq!((acs1[0].observers.clone(), acs1[0].offset), (vec!["carol".to_string()], end1 + 2));
    assert!(acs(u2, "bob").await.is_empty(), "bob's IOU was transferred away");
    let archive = pb::command::Command::Archive(pb::ArchiveCommand { contract_id: acs1[0].contract_id.clone() });
    let archived = submit_and_wait(u1, cmds("alice", "archive-1", archive.clone())).await.unwrap();
    assert_eq!(archived.completion_offset, end1 + 3);
    assert!(acs(u1, "alice").await.is_empty());

    // bob's view on p2 from the offset before: the create, then the transfer's archive only.
    let seen = updates(u2, "bob", end2, 2).await;
    assert_eq!(seen[0].update_id, created.update_id, "one update id everywhere");
    assert_eq!((seen[0].offset, seen[1].offset), (end2 + 1, end2 + 2), "p2's own offsets");
    assert_eq!(seen[0].command_id, "", "only the submitter sees its command id");
    assert!(matches!(&seen[1].events[..], [pb::Event { event: Some(pb::event::Event::Archived(a)) }]
        if a.contract_id == iou.contract_id && a.witness_parties == ["bob"]));
    let mut by_id = UpdateServiceClient::connect(u2.to_string()).await.unwrap();
    let t = by_id
        .get_update_by_id(pb::GetUpdateByIdRequest { update_id: seen[1].update_id.clone(), filter: filter("bob") })
        .await
        .unwrap()
        .into_inner()
        .transaction;
    assert_eq!(t.as_ref(), Some(&seen[1]));
    // alice's updates on p1 from the create's offset: the transfer and the archive, bounded.
    let mut upd = UpdateServiceClient::connect(u1.to_string()).await.unwrap();
    let r = pb::GetUpdatesRequest { begin_exclusive: end1 + 1, end_inclusive: Some(end1 + 3), filter: filter("alice") };
    let bounded: Vec<_> = upd.get_updates(r).await.unwrap().into_inner().collect().await;
    assert_eq!(bounded.len(), 2, "the stream ends at end_inclusive");

    // The completion stream from before the create: three acceptances and a checkpoint.
    let mut completions = CommandCompletionServiceClient::connect(u1.to_string()).await.unwrap();
    let r = pb::CompletionStreamRequest { user_id: "app".into(), parties: vec!["alice".into()], begin_exclusive: end1 };
    let mut stream = completions.completion_stream(r).await.unwrap().into_inner();
    let mut got = Vec::new();
    while let Some(item) = tokio::time::timeout(WAIT, stream.next()).await.unwrap() {
        match item.unwrap().completion_response.unwrap() {
            pb::completion_stream_response::CompletionResponse::Completion(c) => got.push(c),
            pb::completion_stream_response::CompletionResponse::OffsetCheckpoint(cp) if cp.offset >= end1 + 3 => break,
            pb::completion_stream_response::CompletionResponse::OffsetCheckpoint(_) => {}
        }
    }
    let ids: Vec<(&str, i64, i32)> =
        got.iter().map(|c| (c.command_id.as_str(), c.offset, c.status.as_ref().unwrap().code)).collect();
    assert_eq!(ids, [("iou-1", end1 + 1, 0), ("transfer-1", end1 + 2, 0), ("archive-1", end1 + 3, 0)]);
    assert_eq!(got[0].update_id, created.update_id);

    // The same create again: DUPLICATE_COMMAND with the earlier completion's offset.
    let again = cmds("alice", "iou-1", pb::command::Command::Create(create(&["alice"], &["bob"], 10)));
    let e = submit_and_wait(u1, again.clone()).await.unwrap_err();
    let (id, meta, retry) = error_info(&e);
    assert_eq!((e.code(), id.as_str(), retry), (Code::AlreadyExists, "DUPLICATE_COMMAND", false), "{e:?}");
    assert_eq!(meta["completion_offset"], (end1 + 1).to_string());
    let mut submission = CommandSubmissionServiceClient::connect(u1.to_string()).await.unwrap();
    let e = submission.submit(pb::SubmitRequest { commands: Some(again) }).await.unwrap_err();
    assert_eq!(error_info(&e).0, "DUPLICATE_COMMAND");
    // Archiving the archived contract: a definite NOT_FOUND.
    let e = submit_and_wait(u1, cmds("alice", "archive-2", archive)).await.unwrap_err();
    assert_eq!((e.code(), error_info(&e).0.as_str()), (Code::NotFound, "CONTRACT_NOT_FOUND"));

    // Invalid requests: INVALID_ARGUMENT naming the field.
    let invalid_field = |e: &Status| {
        assert_eq!((e.code(), error_info(e).0.as_str()), (Code::InvalidArgument, "INVALID_ARGUMENT"), "{e:?}");
        e.get_error_details().bad_request().expect("BadRequest").field_violations[0].field.clone()
    };
    let mut bad = cmds("alice", "", pb::command::Command::Create(create(&["alice"], &[], 1)));
    assert_eq!(invalid_field(&submit_and_wait(u1, bad.clone()).await.unwrap_err()), "commands.command_id");
    bad.command_id = "bad-1".into();
    bad.commands[0] = pb::Command {
        command: Some(pb::command::Command::Create(pb::CreateCommand {
            create_arguments: "{".into(),
            ..create(&["alice"], &[], 1)
        })),
    };
    let e = submission.submit(pb::SubmitRequest { commands: Some(bad) }).await.unwrap_err();
    assert_eq!(invalid_field(&e), "commands.commands[0].create.create_arguments");
    let e = submission.submit(pb::SubmitRequest { commands: None }).await.unwrap_err();
    assert_eq!(invalid_field(&e), "commands");
    let r = pb::GetUpdatesRequest { begin_exclusive: 0, end_inclusive: None, filter: None };
    assert_eq!(invalid_field(&upd.get_updates(r).await.unwrap_err()), "filter");
    let r = pb::CompletionStreamRequest { user_id: "app".into(), parties: vec![], begin_exclusive: 0 };
    assert_eq!(invalid_field(&completions.completion_stream(r).await.unwrap_err()), "parties");
    // Beyond the ledger end: OUT_OF_RANGE.
    let r = pb::GetUpdatesRequest { begin_exclusive: end1 + 100, end_inclusive: None, filter: filter("alice") };
    let e = upd.get_updates(r).await.unwrap_err();
    let (id, meta, _) = error_info(&e);
    assert_eq!((e.code(), id.as_str()), (Code::OutOfRange, "OFFSET_AFTER_LEDGER_END"));
    assert_eq!(meta["ledger_end"], (end1 + 3).to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_and_wait_answers_request_time_out_at_the_deadline_then_the_rejection_as_its_error() {
    let mut s = setup().await;
    let (u1, _g1) = serve_grpc(&s.p1.p).await;
    // No mediator: no verdict until the participant times the request out.
    s.sync.stop_mediator().await;
    // Like grpc-java and grpc-go clients, this one gives up at its deadline itself: the
    // participant's answer must arrive before.
    let deadline = Duration::from_secs(1);
    let channel = Channel::from_shared(u1.clone()).unwrap().timeout(deadline).connect().await.unwrap();
    let mut client = CommandServiceClient::new(channel);
    let c = cmds("alice", "slow-1", pb::command::Command::Create(create(&["alice"], &[], 1)));
    let mut request = tonic::Request::new(pb::SubmitAndWaitRequest { commands: Some(c.clone()) });
    request.set_timeout(deadline);
    let started = std::time::Instant::now();
    let e = client.submit_and_wait(request).await.unwrap_err();
    let (id, _, retry) = error_info(&e);
    assert_eq!((e.code(), id.as_str(), retry), (Code::DeadlineExceeded, "REQUEST_TIME_OUT", true), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "answered after {:?}", started.elapsed());
    // Resubmitted while the first is in flight: SUBMISSION_ALREADY_IN_FLIGHT, retryable.
    let e = submit_and_wait(&u1, c).await.unwrap_err();
    let (id, _, retry) = error_info(&e);
    assert_eq!((e.code(), id.as_str(), retry), (Code::Aborted, "SUBMISSION_ALREADY_IN_FLIGHT", true), "{e:?}");
    // Without a deadline the call waits for the completion: its rejection is the error.
    let end = ledger_end(&u1).await;
    let c = cmds("alice", "slow-2", pb::command::Command::Create(create(&["alice"], &[], 2)));
    let e = submit_and_wait(&u1, c).await.unwrap_err();
    let (id, meta, retry) = error_info(&e);
    assert_eq!((e.code(), id.as_str(), retry), (Code::Aborted, "LOCAL_VERDICT_TIMEOUT", true), "{e:?}");
    assert_eq!(meta["command_id"], "slow-2");
    let offset: i64 = meta["completion_offset"].parse().unwrap();
    assert!(offset > end, "the rejection's completion offset {offset} is after {end}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passive_replica_answers_every_ledger_call_node_is_passive_replica() {
    let s = setup().await;
    let passive = start_participant("p1-r2", "p1", s.sync.seq.connection("p1", &s.sync.seq.url()), &s.p1.db.url).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!passive.api().is_active());
    let (url, _guard) = serve_grpc(&passive).await;
    let channel = Channel::from_shared(url.clone()).unwrap().connect().await.unwrap();
    let check = |what: &str, r: Result<(), Status>| {
        let e = r.expect_err(what);
        let (id, _, retry) = error_info(&e);
        assert_eq!((e.code(), id.as_str(), retry), (Code::Unavailable, "NODE_IS_PASSIVE_REPLICA", true), "{what}");
    };
    let c = cmds("alice", "p-1", pb::command::Command::Create(create(&["alice"], &[], 1)));
    let mut commands = CommandServiceClient::new(channel.clone());
    check(
        "SubmitAndWait",
        commands.submit_and_wait(pb::SubmitAndWaitRequest { commands: Some(c.clone()) }).await.map(drop),
    );
    let mut submission = CommandSubmissionServiceClient::new(channel.clone());
    check("Submit", submission.submit(pb::SubmitRequest { commands: Some(c) }).await.map(drop));
    let mut completions = CommandCompletionServiceClient::new(channel.clone());
    let r = pb::CompletionStreamRequest { user_id: "app".into(), parties: vec!["alice".into()], begin_exclusive: 0 };
    check("CompletionStream", completions.completion_stream(r).await.map(drop));
    let mut updates = UpdateServiceClient::new(channel.clone());
    let r = pb::GetUpdatesRequest { begin_exclusive: 0, end_inclusive: None, filter: filter("alice") };
    check("GetUpdates", updates.get_updates(r).await.map(drop));
    let r = pb::GetUpdateByIdRequest { update_id: "x".into(), filter: filter("alice") };
    check("GetUpdateById", updates.get_update_by_id(r).await.map(drop));
    let mut state = StateServiceClient::new(channel.clone());
    check("GetLedgerEnd", state.get_ledger_end(pb::GetLedgerEndRequest {}).await.map(drop));
    let r = pb::GetActiveContractsRequest { filter: filter("alice"), active_at_offset: 0 };
    check("GetActiveContracts", state.get_active_contracts(r).await.map(drop));
    let mut parties = PartyManagementServiceClient::new(channel.clone());
    check("GetParticipantId", parties.get_participant_id(pb::GetParticipantIdRequest {}).await.map(drop));
    check("ListKnownParties", parties.list_known_parties(pb::ListKnownPartiesRequest {}).await.map(drop));
    let r = pb::AllocatePartyRequest { party_id_hint: "dave".into() };
    check("AllocateParty", parties.allocate_party(r).await.map(drop));
    let mut version = VersionServiceClient::new(channel);
    check("GetLedgerApiVersion", version.get_ledger_api_version(pb::GetLedgerApiVersionRequest {}).await.map(drop));
    passive.shutdown().await;
}
