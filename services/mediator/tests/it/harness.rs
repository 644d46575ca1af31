//! A synchronizer in one process for the mediator's tests: a real sequencer node on its own
//! database, mediator replicas on theirs, the operator publishing the topology, and scripted
//! participants (sequencer clients) that submit requests, answer them and collect verdicts.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::StreamExt;
use syncline_coordination::DbConfig;
use syncline_mediator::config::MediatorConfig;
use syncline_mediator::Mediator;
use syncline_protocol::messages::{
    self, Action, ConfirmationRequest, ConfirmationResponse, ConfirmationResult, Create, DeduplicationPeriod, Hash,
    LocalVerdict, Mapping, MediatorState, Message, ParticipantJoin, Permission, RequestHeader, SubmitterMetadata,
    SynchronizerParameters, View, ViewCommonData, ViewResponse,
};
use syncline_protocol::topology::OPERATOR;
pub use syncline_sequencer_client::SequencerConnection;
use syncline_sequencer_client::{Event, EventStream, RequestBuilder, SequencerApi, SequencerClient};
pub use syncline_test_synchronizer::{
    add, mediator_config, mediator_config_via, metrics, party, sample, SequencerNode, MEDIATOR,
};

/// Response and reaction timeouts of the test synchronizer: short, so timeouts are testable.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Start mediator replica `name` on `db_url`.
pub async fn start_mediator(name: &str, cfg: &MediatorConfig, db_url: &str) -> Mediator {
    let mut db = DbConfig::new(db_url);
    db.application_name = name.into();
    Mediator::start(name, cfg, db).await.unwrap()
}

/// Wait until `m` is the active replica with its services running.
pub async fn wait_active(m: &Mediator, within: Duration) {
    let mut h = syncline_node::Node::status(m).health();
    tokio::time::timeout(within, h.wait_for(|h| h.active)).await.expect("mediator never active").unwrap();
}

/// The standard test topology: short timeouts, the mediator, participants p1 p2 p3, alice on
/// p1 (submission), bob on p2, carol on p3 (confirmation). Waits until it is in effect.
pub async fn bootstrap(seq: &SequencerNode) {
    seq.register(&[OPERATOR, MEDIATOR, "p1", "p2", "p3"]).await;
    let params = SynchronizerParameters {
        confirmation_response_timeout: RESPONSE_TIMEOUT,
        mediator_reaction_timeout: RESPONSE_TIMEOUT,
        ..Default::default()
    };
    seq.publish(OPERATOR, add(1, Mapping::SynchronizerParameters(params))).await;
    seq.publish(OPERATOR, add(1, Mapping::MediatorState(MediatorState { mediator: MEDIATOR.into() }))).await;
    for p in ["p1", "p2", "p3"] {
        seq.publish(OPERATOR, add(1, Mapping::ParticipantJoin(ParticipantJoin { participant: p.into() }))).await;
    }
    seq.publish(OPERATOR, add(1, party("alice", &[("p1", Permission::Submission)]))).await;
    seq.publish(OPERATOR, add(1, party("bob", &[("p2", Permission::Confirmation)]))).await;
    seq.publish(OPERATOR, add(1, party("carol", &[("p3", Permission::Confirmation)]))).await;
    // The topology change delay (250 ms) with a margin.
    tokio::time::sleep(Duration::from_millis(600)).await;
}

/// A unique enough id for request UUIDs and message ids.
pub fn uuid_like() -> String {
    use rand::Rng;
    let b: [u8; 16] = rand::rng().random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// A request by `submitter` acting as `act_as`, creating a contract signed by `signatories`
/// and observed by `observers`.
pub fn create_request(submitter: &str, act_as: &str, signatories: &[&str], observers: &[&str]) -> ConfirmationRequest {
    let set = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<BTreeSet<String>>();
    let mut informees = set(signatories);
    informees.extend(set(observers));
    informees.insert(act_as.into());
    let mut confirming = set(signatories);
    confirming.insert(act_as.into());
    ConfirmationRequest {
        header: RequestHeader {
            request_uuid: uuid_like(),
            submitter: SubmitterMetadata {
                act_as: set(&[act_as]),
                user_id: "app".into(),
                command_id: uuid_like(),
                submission_id: None,
                submitting_participant: submitter.into(),
                deduplication_period: DeduplicationPeriod::Duration(Duration::from_secs(60)),
            },
            ledger_time: syncline_sequencer_client::now_micros(),
        },
        views: vec![View {
            common: ViewCommonData { informees, confirming_parties: confirming },
            actions: vec![Action::Create(Create {
                contract_id: uuid_like(),
                template: "Iou".into(),
                arguments: r#"{"amount":10}"#.into(),
                signatories: set(signatories),
                observers: set(observers),
            })],
        }],
    }
}

/// Who hosts each test party.
pub fn hosts_of(informees: &BTreeSet<String>) -> BTreeSet<String> {
    informees
        .iter()
        .filter_map(|p| match p.as_str() {
            "alice" => Some("p1".to_string()),
            "bob" => Some("p2".to_string()),
            "carol" => Some("p3".to_string()),
            // Hosted on p2 only if the topology says so (see the topology test).
            "erin" | "frank" => Some("p2".to_string()),
            _ => None,
        })
        .collect()
}

/// A scripted participant: submits, answers and reads verdicts through the sequencer.
pub struct Participant {
    /// Its member name.
    pub name: String,
    client: SequencerClient,
    events: EventStream,
}

impl Participant {
    /// Participant `name` subscribed from its registration.
    pub fn new(seq: &SequencerNode, name: &str) -> Participant {
        let client = seq.client();
        let events = client.subscribe(name, None);
        Participant { name: name.into(), client, events }
    }

    /// Submit `request` (one batch); its request id (sequencing timestamp).
    pub async fn submit(&self, request: &ConfirmationRequest) -> i64 {
        let mut send = RequestBuilder::new(&self.name, format!("req-{}", uuid_like())).build();
        send.envelopes = request.envelopes(MEDIATOR, hosts_of);
        self.client.send(send).await.unwrap().timestamp
    }

    /// Answer view 0 of request `id` with `verdict` for `parties`.
    pub async fn respond(&self, id: i64, root_hash: Hash, verdict: LocalVerdict, parties: &[&str]) -> i64 {
        let response = ConfirmationResponse {
            request_id: id,
            root_hash,
            participant: self.name.clone(),
            views: vec![ViewResponse {
                view_index: 0,
                verdict,
                confirming_parties: parties.iter().map(|s| s.to_string()).collect(),
            }],
        };
        let send = RequestBuilder::new(&self.name, format!("resp-{}", uuid_like()))
            .to([MEDIATOR], messages::encode(&Message::Response(response)))
            .build();
        self.client.send(send).await.unwrap().timestamp
    }

    /// The next verdict it receives within `within` (other events skipped), with its timestamp.
    pub async fn next_result(&mut self, within: Duration) -> Option<(i64, ConfirmationResult)> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.next()).await.ok()??.unwrap();
            for env in &event.envelopes {
                if let Ok(Message::Result(r)) = messages::decode(&env.content) {
                    return Some((event.timestamp, r));
                }
            }
        }
    }
}

/// Every verdict in `events`, by request id (several for one id would be a bug).
pub fn results_in(events: &[Event]) -> Vec<ConfirmationResult> {
    events
        .iter()
        .flat_map(|e| e.envelopes.iter())
        .filter_map(|env| match messages::decode(&env.content) {
            Ok(Message::Result(r)) => Some(r),
            _ => None,
        })
        .collect()
}
