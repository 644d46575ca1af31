//! A synchronizer of real processes for the system tests: one sequencer and mediator replicas
//! started as `syncline daemon` from config files, bootstrapped with `syncline admin`, and
//! scripted participants (sequencer clients) that submit requests, respond and read verdicts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use futures_util::StreamExt;
use syncline_protocol::messages::{
    self, Action, ConfirmationRequest, ConfirmationResponse, ConfirmationResult, Create, DeduplicationPeriod, Hash,
    LocalVerdict, Message, RequestHeader, SubmitterMetadata, View, ViewCommonData, ViewResponse,
};
use syncline_sequencer_client::{ClientConfig, Event, RequestBuilder, SequencerApi, SequencerClient};
use syncline_testkit::{http_status, wait_for, Kind, NodeSpec, Topology};

use crate::support::*;

/// The mediator's member name, shared by its replicas.
pub const MEDIATOR: &str = "mediator";

/// Whether replica `m` is the active one (its `is-active` health check answers 200).
pub async fn is_active(m: &NodeSpec) -> bool {
    health_get(m, "/health").await.is_some_and(|(code, _)| code == 200)
}

/// Whether `m`'s process serves at all (liveness).
pub async fn is_live(m: &NodeSpec) -> bool {
    health_get(m, "/livez").await.is_some_and(|(code, _)| code == 200)
}

/// Replica `name` of participant `member` on database `db`, using sequencer `seq`, its token
/// in `dir` (where [`admin`] has `bootstrap` and `join-participant` write tokens).
pub fn participant(name: &str, member: &str, db: &str, seq: &NodeSpec, dir: &Path) -> NodeSpec {
    NodeSpec::new(Kind::Participant, name).with(&format!(
        "member = \"{member}\"\nstorage = {{ url = \"{db}\" }}\n{}\nparticipant = {{ time_proof_delay = \"50ms\" }}",
        sequencer_section(&[seq], dir, member)
    ))
}

/// The `sequencer` line of a node of `member` using `seqs`, its token read from
/// `dir/<member>.token`; trusting the sequencers' CA when they serve TLS.
pub fn sequencer_section(seqs: &[&NodeSpec], dir: &Path, member: &str) -> String {
    let endpoints: Vec<String> = seqs.iter().map(|s| format!("\"{}\"", s.public_url())).collect();
    let ca = seqs.iter().find_map(|s| s.tls.as_ref()).map(|t| format!(", ca = \"{}\"", t.ca.display()));
    format!(
        "sequencer = {{ endpoints = [{}], token_file = \"{}\"{} }}",
        endpoints.join(", "),
        token_file(dir, member).display(),
        ca.unwrap_or_default()
    )
}

/// Where `syncline admin ... --token-dir dir` writes `member`'s token.
pub fn token_file(dir: &Path, member: &str) -> std::path::PathBuf {
    dir.join(format!("{member}.token"))
}

/// Wait (up to 60 s) until replica `n` is active, or only live when `active` is false.
pub async fn wait_node(what: &str, n: &NodeSpec, active: bool) {
    let n = n.clone();
    wait_for(Duration::from_secs(60), what, || {
        let n = n.clone();
        async move {
            if active {
                is_active(&n).await
            } else {
                is_live(&n).await
            }
        }
    })
    .await;
}

/// One sequencer and two mediator replicas (med1, med2), each its own `syncline daemon`
/// process of a test-kit topology, and the remote configuration that names them for
/// `syncline admin`.
pub struct Synchronizer {
    /// The sequencer.
    pub seq: NodeSpec,
    /// Mediator replicas med1 and med2.
    pub meds: Vec<NodeSpec>,
    /// The processes.
    topology: Topology,
    /// `remote.toml` for `syncline admin`.
    pub remote: PathBuf,
}

impl Synchronizer {
    /// Start the sequencer on `seq_db`, then med1 (waits until active), then med2 (waits until
    /// live) on `med_db`.
    pub async fn start(dir: &Path, seq_db: &str, med_db: &str) -> Synchronizer {
        let mut topology = Topology::new(&syncline_bin(), dir, seq_db);
        let seq = topology.add(NodeSpec::new(Kind::Sequencer, "seq1"));
        let replica = |name: &str| {
            NodeSpec::new(Kind::Mediator, name).with(&format!(
                "member = \"{MEDIATOR}\"\nstorage = {{ url = \"{med_db}\" }}\n{}\n\
                 mediator = {{ time_proof_delay = \"50ms\" }}",
                sequencer_section(&[&seq], dir, MEDIATOR)
            ))
        };
        let meds = vec![topology.add(replica("med1")), topology.add(replica("med2"))];
        let remote = topology.remote_config();
        topology.start("seq1");
        let h = seq.health;
        wait_for(
            Duration::from_secs(60),
            "seq1 healthy",
            || async move { http_status(h, "/health").await == Some(200) },
        )
        .await;
        let mut s = Synchronizer { seq, meds, topology, remote };
        s.start_replica(0);
        let m = s.meds[0].clone();
        wait_for(Duration::from_secs(60), "med1 active", || {
            let m = m.clone();
            async move { is_active(&m).await }
        })
        .await;
        s.start_replica(1);
        let m = s.meds[1].clone();
        wait_for(Duration::from_secs(60), "med2 live", || {
            let m = m.clone();
            async move { is_live(&m).await }
        })
        .await;
        s
    }

    /// Start (or restart) replica `i`'s process.
    pub fn start_replica(&mut self, i: usize) {
        self.topology.start(&self.meds[i].name);
    }

    /// SIGKILL replica `i`'s process.
    pub fn kill9(&mut self, i: usize) {
        self.topology.kill9(&self.meds[i].name);
    }

    /// `syncline admin -c remote.toml ARGS`: success and stdout + stderr.
    pub fn admin(&self, args: &[&str]) -> (bool, String) {
        admin(&self.remote, args)
    }

    /// A client of the sequencer's public API, presenting the tokens `syncline admin` wrote
    /// (next to the remote configuration) for the members it acts as.
    pub fn client(&self) -> SequencerClient {
        let client = SequencerClient::new([self.seq.public_url()], ClientConfig::default()).expect("a valid URL");
        let dir = self.remote.parent().expect("the remote configuration is in the test directory");
        for m in [MEDIATOR, "p1", "p2", "p3"] {
            client.set_token(m, TokenSource::File(token_file(dir, m)));
        }
        client
    }

    /// Bootstrap with `syncline admin` and the given response timeout; join p1 and p2, host
    /// alice on p1 and bob on p2 (confirmation); wait until the parties are in effect.
    pub async fn bootstrap(&self, response_timeout: &str) {
        let (ok, out) = self.admin(&[
            "bootstrap",
            "--mediator",
            MEDIATOR,
            "--confirmation-response-timeout",
            response_timeout,
            "--mediator-reaction-timeout",
            response_timeout,
        ]);
        assert!(ok, "bootstrap failed:\n{out}");
        for p in ["p1", "p2"] {
            let (ok, out) = self.admin(&["join-participant", p]);
            assert!(ok && out.contains("accepted"), "join-participant {p}:\n{out}");
        }
        let (ok, out) = self.admin(&["host-party", "alice", "--participant", "p1"]);
        assert!(ok && out.contains("accepted"), "{out}");
        let (ok, out) = self.admin(&["host-party", "bob", "--participant", "p2:confirmation"]);
        assert!(ok && out.contains("accepted"), "{out}");
        // The topology change delay (250 ms) with a margin.
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
}

/// `syncline admin -c REMOTE ARGS`: success and stdout + stderr.
/// `syncline admin --config remote args`; `bootstrap`, `join-participant` and
/// `register-member` write tokens next to the remote configuration (see [`token_file`]).
pub fn admin(remote: &Path, args: &[&str]) -> (bool, String) {
    let mut command = Command::new(syncline_bin());
    command.arg("admin").arg("--config").arg(remote).args(args);
    let dir = remote.parent().expect("the remote configuration is in the test directory");
    match args.first() {
        Some(&"bootstrap") | Some(&"join-participant") => {
            command.arg("--token-dir").arg(dir);
        }
        Some(&"register-member") if args.len() == 2 => {
            command.arg("--token-file").arg(token_file(dir, args[1]));
        }
        _ => {}
    }
    let out = command.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Who hosts each test party.
pub fn hosts_of(informees: &BTreeSet<String>) -> BTreeSet<String> {
    (informees.iter())
        .filter_map(|p| match p.as_str() {
            "alice" => Some("p1".to_string()),
            "bob" => Some("p2".to_string()),
            _ => None,
        })
        .collect()
}

/// A fresh lowercase hyphenated UUID (request UUIDs must be one; also used for ids).
fn unique() -> String {
    let h = format!("{:032x}", rand::random::<u128>());
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// A request by p1 acting as alice, creating a contract signed by alice and bob.
pub fn alice_and_bob_request() -> ConfirmationRequest {
    let set = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<BTreeSet<String>>();
    ConfirmationRequest {
        header: RequestHeader {
            request_uuid: unique(),
            submitter: SubmitterMetadata {
                act_as: set(&["alice"]),
                user_id: "app".into(),
                command_id: unique(),
                submission_id: None,
                submitting_participant: "p1".into(),
                deduplication_period: DeduplicationPeriod::Duration(Duration::from_secs(60)),
            },
            ledger_time: syncline_sequencer_client::now_micros(),
        },
        views: vec![View {
            common: ViewCommonData { informees: set(&["alice", "bob"]), confirming_parties: set(&["alice", "bob"]) },
            actions: vec![Action::Create(Create {
                contract_id: unique(),
                template: "Iou".into(),
                arguments: r#"{"amount":10}"#.into(),
                signatories: set(&["alice", "bob"]),
                observers: BTreeSet::new(),
            })],
        }],
    }
}

/// A scripted participant: submits and answers through the sequencer.
pub struct Participant {
    /// Its member name.
    pub name: String,
    client: SequencerClient,
}

impl Participant {
    /// Participant `name` using `client`.
    pub fn new(client: SequencerClient, name: &str) -> Participant {
        Participant { name: name.into(), client }
    }

    /// Submit `request`; its request id (sequencing timestamp).
    pub async fn submit(&self, request: &ConfirmationRequest) -> i64 {
        let mut send = RequestBuilder::new(&self.name, format!("req-{}", unique())).build();
        send.envelopes = request.envelopes(MEDIATOR, hosts_of);
        self.client.send(send).await.unwrap().timestamp
    }

    /// Approve view 0 of request `id` for `parties`.
    pub async fn approve(&self, id: i64, root_hash: Hash, parties: &[&str]) {
        let response = ConfirmationResponse {
            request_id: id,
            root_hash,
            participant: self.name.clone(),
            views: vec![ViewResponse {
                view_index: 0,
                verdict: LocalVerdict::Approve,
                confirming_parties: parties.iter().map(|s| s.to_string()).collect(),
            }],
        };
        let send = RequestBuilder::new(&self.name, format!("resp-{}", unique()))
            .to([MEDIATOR], messages::encode(&Message::Response(response)))
            .build();
        self.client.send(send).await.unwrap();
    }
}

/// Every event of `member` so far (its subscription from the start, read until quiet).
pub async fn events_of(client: &SequencerClient, member: &str) -> Vec<Event> {
    let mut stream = client.subscribe(member, None);
    let mut out = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(1000), stream.next()).await {
        out.push(e.unwrap());
    }
    out
}

/// The verdicts in `events`, each with the timestamp of its event.
pub fn verdicts_in(events: &[Event]) -> Vec<(i64, ConfirmationResult)> {
    (events.iter())
        .flat_map(|e| e.envelopes.iter().map(move |env| (e.timestamp, env)))
        .filter_map(|(ts, env)| match messages::decode(&env.content) {
            Ok(Message::Result(r)) => Some((ts, r)),
            _ => None,
        })
        .collect()
}

/// The verdicts of `member` by request id, checking there is exactly one per request.
pub async fn one_verdict_each(client: &SequencerClient, member: &str) -> BTreeMap<i64, ConfirmationResult> {
    let mut out = BTreeMap::new();
    for (_, r) in verdicts_in(&events_of(client, member).await) {
        let id = r.request_id;
        assert!(out.insert(id, r).is_none(), "{member} received two verdicts for request {id}");
    }
    out
}
