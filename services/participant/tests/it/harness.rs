//! A synchronizer in one process for the participant's tests: a real sequencer node on its
//! own database, a mediator on its own, the operator publishing the topology, and participant
//! replicas on theirs.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use syncline_coordination::DbConfig;
use syncline_mediator::Mediator;
use syncline_node::config::{ApiConfig, HealthCheck, HealthConfig, PublicApiConfig};
use syncline_participant::config::{ParticipantConfig, ParticipantParameters};
use syncline_participant::model::{Command, Commands, Completion, CompletionItem, CreateCommand, Transaction};
use syncline_participant::{LedgerApi, Participant};
use syncline_protocol::messages::{Mapping, MediatorState, ParticipantJoin, SynchronizerParameters};
use syncline_protocol::topology::OPERATOR;
use syncline_sequencer_client::SequencerConnection;
use syncline_test_synchronizer::{add, mediator_config, serve, SequencerNode, MEDIATOR};
use syncline_testkit::TestDb;

/// How long the tests wait for an outcome.
pub const WAIT: Duration = Duration::from_secs(30);

/// The test synchronizer's parameters: short timeouts, so that timeouts are testable.
pub fn short_timeouts() -> SynchronizerParameters {
    SynchronizerParameters {
        confirmation_response_timeout: Duration::from_secs(3),
        mediator_reaction_timeout: Duration::from_secs(3),
        ledger_time_record_time_tolerance: Duration::from_secs(5),
        ..Default::default()
    }
}

/// A sequencer, a mediator, and participants p1 and p2 joined, under `params`.
pub struct Synchronizer {
    /// The sequencer.
    pub seq: SequencerNode,
    mediator: Option<Mediator>,
    db: TestDb,
}

impl Synchronizer {
    /// Start and bootstrap it.
    pub async fn start(params: SynchronizerParameters) -> Synchronizer {
        logging();
        let seq = SequencerNode::start().await;
        seq.register(&[OPERATOR, MEDIATOR, "p1", "p2"]).await;
        seq.publish(OPERATOR, add(1, Mapping::SynchronizerParameters(params))).await;
        seq.publish(OPERATOR, add(1, Mapping::MediatorState(MediatorState { mediator: MEDIATOR.into() }))).await;
        for p in ["p1", "p2"] {
            seq.publish(OPERATOR, add(1, Mapping::ParticipantJoin(ParticipantJoin { participant: p.into() }))).await;
        }
        let db = syncline_testkit::fresh_database().await;
        let mut sync = Synchronizer { seq, mediator: None, db };
        sync.start_mediator("m1").await;
        // The topology change delay (250 ms) with a margin.
        tokio::time::sleep(Duration::from_millis(600)).await;
        sync
    }

    /// Start mediator replica `name` (on the mediator's database) and wait until it leads.
    pub async fn start_mediator(&mut self, name: &str) {
        let mut mdb = DbConfig::new(&self.db.url);
        mdb.application_name = name.into();
        let mediator = Mediator::start(name, &mediator_config(&self.seq), mdb).await.unwrap();
        let mut h = syncline_node::Node::status(&mediator).health();
        tokio::time::timeout(Duration::from_secs(20), h.wait_for(|h| h.active)).await.unwrap().unwrap();
        self.mediator = Some(mediator);
    }

    /// Stop the mediator: no verdicts any more.
    pub async fn stop_mediator(&mut self) {
        if let Some(m) = self.mediator.take() {
            m.shutdown().await;
        }
    }
}

impl Drop for Synchronizer {
    fn drop(&mut self) {
        // Stopped with the runtime; nothing to wait for.
        drop(self.mediator.take());
    }
}

/// The configuration of a replica of participant `member` connecting with `sequencer`.
pub fn participant_config(member: &str, sequencer: SequencerConnection) -> ParticipantConfig {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    ParticipantConfig {
        member: Some(member.into()),
        storage: None,
        public_api: PublicApiConfig::plain(any),
        admin_api: ApiConfig::plain(any),
        health: HealthConfig { address: any, check: HealthCheck::IsActive, tls: None },
        metrics: None,
        replication: Default::default(),
        sequencer,
        participant: ParticipantParameters { time_proof_delay: Duration::from_millis(50), ..Default::default() },
        ledger_api: Default::default(),
    }
}

/// Start replica `name` of participant `member` on `db_url`, connected with `sequencer` (see
/// [`SequencerNode::connection`]).
pub async fn start_participant(name: &str, member: &str, sequencer: SequencerConnection, db_url: &str) -> Participant {
    let mut db = DbConfig::new(db_url);
    db.application_name = name.into();
    Participant::start(name, &participant_config(member, sequencer), db).await.unwrap()
}

/// Wait until `p` serves its ledger API.
pub async fn wait_active(p: &Participant) {
    let start = Instant::now();
    while !p.api().is_active() {
        assert!(start.elapsed() < Duration::from_secs(20), "participant {} never active", p.member());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A single participant replica on its own database.
pub struct Node {
    /// The replica.
    pub p: Participant,
    /// Its database.
    pub db: TestDb,
}

impl Node {
    /// Start participant `member` (one replica, registered at `seq`) on a fresh database and
    /// wait until it serves.
    pub async fn start(member: &str, seq: &SequencerNode) -> Node {
        let db = syncline_testkit::fresh_database().await;
        let p = start_participant(&format!("{member}-r1"), member, seq.connection(member, &seq.url()), &db.url).await;
        wait_active(&p).await;
        Node { p, db }
    }

    /// Its ledger API.
    pub fn api(&self) -> LedgerApi {
        self.p.api()
    }
}

/// The participant replica's public gRPC routes (the ledger API, as the node host serves them)
/// on a free loopback port until the guard is dropped; its `http://` URL.
pub async fn serve_grpc(p: &Participant) -> (String, tokio_util::sync::DropGuard) {
    let (addr, guard) = serve(syncline_node::Node::public_routes(p)).await;
    (format!("http://{addr}"), guard)
}

/// A create command.
pub fn iou(signatories: &[&str], observers: &[&str], amount: u32) -> CreateCommand {
    CreateCommand {
        template: "Iou".into(),
        arguments: format!(r#"{{"amount":{amount}}}"#),
        signatories: signatories.iter().map(|s| s.to_string()).collect(),
        observers: observers.iter().map(|s| s.to_string()).collect(),
    }
}

/// Commands of user `app` acting as `party` with `command_id`.
pub fn commands(party: &str, command_id: &str, commands: Vec<Command>) -> Commands {
    Commands {
        user_id: "app".into(),
        command_id: command_id.into(),
        act_as: vec![party.into()],
        commands,
        ..Default::default()
    }
}

/// The next completion of `command_id` for user `app` acting as `party` after `after`.
pub async fn completion_of(api: &LedgerApi, party: &str, after: i64, command_id: &str) -> Completion {
    let mut stream = api.completions("app", &[party.to_string()], after).await.unwrap();
    let found = tokio::time::timeout(WAIT, async {
        while let Some(item) = stream.next().await {
            if let CompletionItem::Completion(c) = item.unwrap() {
                if c.command_id == command_id {
                    return c;
                }
            }
        }
        panic!("the completion stream ended");
    })
    .await;
    found.unwrap_or_else(|_| panic!("no completion of {command_id} within {WAIT:?}"))
}

/// Every completion of user `app` acting as `party` after `after` up to the current ledger end.
pub async fn completions_now(api: &LedgerApi, party: &str, after: i64) -> Vec<Completion> {
    let end = api.ledger_end().await.unwrap().offset;
    let mut stream = api.completions("app", &[party.to_string()], after).await.unwrap();
    let mut out = Vec::new();
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
        match item.unwrap() {
            CompletionItem::Completion(c) => out.push(c),
            CompletionItem::Checkpoint { offset, .. } if offset >= end => break,
            CompletionItem::Checkpoint { .. } => {}
        }
    }
    out
}

/// The next `n` transactions visible to `party` after `after`.
pub async fn transactions(api: &LedgerApi, party: &str, after: i64, n: usize) -> Vec<Transaction> {
    let stream = api.updates(after, None, &[party.to_string()]).await.unwrap();
    let txs: Vec<_> = tokio::time::timeout(WAIT, stream.take(n).collect::<Vec<_>>())
        .await
        .unwrap_or_else(|_| panic!("fewer than {n} transactions within {WAIT:?}"));
    txs.into_iter().map(Result::unwrap).collect()
}

/// Log to the test output when `RUST_LOG` is set.
fn logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    }
}
