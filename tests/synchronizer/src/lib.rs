//! What the mediator's and the participant's integration tests share: a real sequencer node in
//! process on a loopback port (its own fresh database), topology publishing (the operator's
//! through the admin API, others' through the public Send) and a mediator replica's test
//! configuration. Dev-only: no shipped crate depends on it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use syncline_coordination::DbConfig;
use syncline_mediator::config::{MediatorConfig, MediatorParameters};
use syncline_node::config::{ApiConfig, HealthCheck, HealthConfig, PublicApiConfig};
use syncline_protocol::messages::{
    self, Mapping, Message, Operation, PartyToParticipant, Permission, TopologyTransaction,
};
use syncline_protocol::topology::OPERATOR;
use syncline_sequencer::{Sequencer, SequencerSettings};
use syncline_sequencer_client::{
    AdminClient, ClientConfig, Event, RequestBuilder, SequencerApi, SequencerClient, SequencerConnection, TokenSource,
    BROADCAST_RECIPIENT,
};
use syncline_testkit::TestDb;
use tokio_util::sync::{CancellationToken, DropGuard};

/// The mediator's member name in the tests.
pub const MEDIATOR: &str = "mediator";

/// Serve `routes` on a free loopback port until the guard is dropped; the address.
pub async fn serve(routes: tonic::service::Routes) -> (SocketAddr, DropGuard) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let router = tonic::transport::Server::builder().add_routes(routes);
    let s = stop.clone();
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        router.serve_with_incoming_shutdown(incoming, s.cancelled_owned()).await.unwrap();
    });
    (addr, stop.drop_guard())
}

/// A sequencer node serving its public and admin APIs on a free loopback port.
pub struct SequencerNode {
    // Field order: the servers stop before the sequencer.
    _server: DropGuard,
    _seq: Sequencer,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The tokens of the members registered through [`register`](Self::register).
    tokens: std::sync::Mutex<BTreeMap<String, String>>,
    _db: TestDb,
}

impl SequencerNode {
    /// Start a sequencer on a fresh database and wait until it serves.
    pub async fn start() -> SequencerNode {
        let db = syncline_testkit::fresh_database().await;
        let settings = SequencerSettings { name: "s1".into(), total_node_count: 4, ..Default::default() };
        let seq = Sequencer::start(DbConfig::new(&db.url), settings).await.unwrap();
        let mut routes = tonic::service::RoutesBuilder::default();
        routes.add_service(seq.public_service()).add_service(seq.admin_service());
        let (addr, server) = serve(routes.routes()).await;
        let start = Instant::now();
        while !seq.health().serving {
            assert!(start.elapsed() < Duration::from_secs(20), "sequencer not serving: {}", seq.health().detail);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        SequencerNode { _server: server, _seq: seq, addr, tokens: Default::default(), _db: db }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client of it, presenting the token of every member registered here.
    pub fn client(&self) -> SequencerClient {
        let client = SequencerClient::new([self.url()], ClientConfig::default()).unwrap();
        for (member, token) in self.tokens.lock().unwrap().iter() {
            client.set_token(member, TokenSource::Token(token.clone()));
        }
        client
    }

    /// The token of `member`, registered through [`register`](Self::register).
    pub fn token(&self, member: &str) -> String {
        self.tokens.lock().unwrap().get(member).cloned().unwrap_or_else(|| panic!("{member} was not registered"))
    }

    /// The `sequencer` section of a node of `member` reaching this sequencer at `url` (its own,
    /// or a proxy's), with the member's token.
    pub fn connection(&self, member: &str, url: &str) -> SequencerConnection {
        SequencerConnection { endpoints: vec![url.to_string()], token: Some(self.token(member)), ..Default::default() }
    }

    /// A client of its admin API.
    pub fn admin(&self) -> AdminClient {
        AdminClient::new(self.url(), ClientConfig::default()).unwrap()
    }

    /// Register `members`, keeping their tokens for [`client`](Self::client) and
    /// [`connection`](Self::connection).
    pub async fn register(&self, members: &[&str]) {
        let admin = self.admin();
        for m in members {
            let token = admin.register_member(m).await.unwrap().token.expect("a new member gets a token");
            self.tokens.lock().unwrap().insert(m.to_string(), token);
        }
    }

    /// Publish `tx` from `sender` and wait for it to be sequenced: the operator's through the
    /// admin API (the only way the sequencer takes it), anyone else's as a broadcast send.
    pub async fn publish(&self, sender: &str, tx: TopologyTransaction) -> i64 {
        let content = messages::encode(&Message::Topology(tx));
        if sender == OPERATOR {
            return self.admin().publish_topology(vec![content]).await.unwrap()[0];
        }
        let id = format!("topo-{}-{}", std::process::id(), syncline_sequencer_client::now_micros());
        let request = RequestBuilder::new(sender, id).to([BROADCAST_RECIPIENT], content).build();
        self.client().send(request).await.unwrap().timestamp
    }

    /// Every event `member` received so far (its subscription read until quiet).
    pub async fn events_of(&self, member: &str) -> Vec<Event> {
        let mut stream = self.client().subscribe(member, None);
        let mut out = Vec::new();
        while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(700), stream.next()).await {
            out.push(e.unwrap());
        }
        out
    }
}

/// An add/replace topology transaction with `serial`.
pub fn add(serial: u32, mapping: Mapping) -> TopologyTransaction {
    TopologyTransaction { operation: Operation::AddReplace, serial, mapping }
}

/// A party hosted by participants with permissions.
pub fn party(party: &str, hosts: &[(&str, Permission)]) -> Mapping {
    Mapping::PartyToParticipant(PartyToParticipant {
        party: party.into(),
        participants: hosts.iter().map(|(p, perm)| (p.to_string(), *perm)).collect::<BTreeMap<_, _>>(),
    })
}

/// A mediator replica's configuration for the tests: member [`MEDIATOR`] (registered at `seq`),
/// listeners on port 0 (unused unless hosted), the sequencer `seq` with the mediator's token,
/// time proofs 50 ms after a deadline.
pub fn mediator_config(seq: &SequencerNode) -> MediatorConfig {
    mediator_config_via(seq.connection(MEDIATOR, &seq.url()))
}

/// [`mediator_config`] with its `sequencer` section given (e.g. a token file written later).
pub fn mediator_config_via(sequencer: SequencerConnection) -> MediatorConfig {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    MediatorConfig {
        member: Some(MEDIATOR.into()),
        storage: None,
        public_api: PublicApiConfig::plain(any),
        admin_api: ApiConfig::plain(any),
        health: HealthConfig { address: any, check: HealthCheck::IsActive, tls: None },
        metrics: None,
        replication: Default::default(),
        sequencer,
        mediator: MediatorParameters { time_proof_delay: Duration::from_millis(50), ..Default::default() },
    }
}

/// The metrics of this test binary (a process-wide recorder, installed once), rendered.
pub fn metrics() -> String {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE.get_or_init(|| metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder().unwrap()).render()
}

/// The value of the sample `line_start` (metric name with labels) in `text`, if present.
pub fn sample(text: &str, line_start: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
}
