//! What only the system tests need: the `syncline` binary, sequencer node addresses and their
//! config sections, and clients and subscribers of them (through the sequencer client crate).
//! Processes, temp dirs, ports and waiting come from the test kit.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::StreamExt;
use syncline_node::tls::dev::{write_dev_certs, DevCerts, LOCAL_HOSTS};
use syncline_node::tls::probe;
pub use syncline_sequencer_client::TokenSource;
use syncline_sequencer_client::{
    AdminClient, ClientConfig, ClientTls, Event, SequencerApi, SequencerClient, SubscribeError,
};

/// The `syncline` binary of this package, built by cargo for these tests.
pub fn syncline_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_syncline"))
}

pub use syncline_testkit::NodeTls;
use syncline_testkit::{Kind, NodeSpec};

/// A randomized test's seed: `SYNCLINE_TEST_SEED` or a fresh one (the test prints it).
pub fn seed() -> u64 {
    match std::env::var("SYNCLINE_TEST_SEED") {
        Ok(s) => s.trim().parse().expect("SYNCLINE_TEST_SEED is a u64"),
        Err(_) => rand::random(),
    }
}

/// Held by each test that runs the whole topology (nine daemons and HAProxy), so that two of
/// them never share this machine's two cores.
pub static WHOLE_TOPOLOGY: Mutex<()> = Mutex::new(());

/// A sequencer node of a system test: the test kit's node spec (addresses, config section).
pub type SequencerAddrs = NodeSpec;

/// Sequencer `name` on fresh loopback ports.
pub fn sequencer_node(name: &str) -> NodeSpec {
    NodeSpec::new(Kind::Sequencer, name)
}

/// A client of `node`'s admin API.
pub fn admin_of(node: &NodeSpec) -> AdminClient {
    AdminClient::new(node.admin_url(), client_config(node)).expect("a valid URL")
}

/// The client settings for `node`: trusting its CA when it serves TLS.
pub fn client_config(node: &NodeSpec) -> ClientConfig {
    match &node.tls {
        Some(t) => tls_client_config(&t.ca),
        None => ClientConfig::default(),
    }
}

/// Client settings trusting the CA certificate `ca`.
pub fn tls_client_config(ca: &Path) -> ClientConfig {
    ClientConfig { tls: Some(ClientTls::load(ca, None).expect("a readable CA")), ..ClientConfig::default() }
}

/// A new development CA in `dir/certs` with a certificate for each of `names`.
pub fn dev_certs(dir: &Path, names: &[&str]) -> DevCerts {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    write_dev_certs(&dir.join("certs"), &names, &LOCAL_HOSTS).expect("development certificates")
}

/// TLS on every listener of node `name` with its certificate of `certs`.
pub fn node_tls(certs: &DevCerts, name: &str) -> NodeTls {
    NodeTls { ca: certs.ca.clone(), cert: certs.cert(name), key: certs.key(name) }
}

/// `GET path` on `node`'s health port (over TLS when it serves TLS): status and body.
pub async fn health_get(node: &NodeSpec, path: &str) -> Option<(u16, String)> {
    let tls = node.tls.as_ref().map(|t| probe::client_config(&t.ca).expect("a readable CA"));
    tokio::time::timeout(std::time::Duration::from_secs(2), probe::get(node.health, tls.as_ref(), path))
        .await
        .ok()
        .flatten()
}

/// A gRPC channel to `url`, over TLS trusting `ca` when given.
pub async fn channel(url: &str, ca: Option<&Path>) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_string())?;
    if let Some(ca) = ca {
        endpoint = endpoint.tls_config(ClientTls::load(ca, None).expect("a readable CA").tonic_config())?;
    }
    endpoint.connect().await
}

/// Member → token.
pub type Tokens = std::collections::BTreeMap<String, String>;

/// Register the new `members` through `admin`; their tokens.
pub async fn register(admin: &AdminClient, members: &[&str]) -> Tokens {
    let mut tokens = Tokens::new();
    for m in members {
        let token = admin.register_member(m).await.unwrap().token.expect("a new member's token");
        tokens.insert(m.to_string(), token);
    }
    tokens
}

/// A client of the public APIs of `nodes` (round robin in this order, failing over),
/// presenting `tokens`.
pub fn client_of<'a>(nodes: impl IntoIterator<Item = &'a SequencerAddrs>, tokens: &Tokens) -> SequencerClient {
    let nodes: Vec<&SequencerAddrs> = nodes.into_iter().collect();
    let config = nodes.first().map(|n| client_config(n)).unwrap_or_default();
    let client = SequencerClient::new(nodes.into_iter().map(SequencerAddrs::public_url), config).expect("valid URLs");
    for (member, token) in tokens {
        client.set_token(member, TokenSource::Token(token.clone()));
    }
    client
}

/// Everything a subscription delivered, with arrival times, and the error it ended with.
#[derive(Default)]
pub struct Received {
    /// Events in arrival order.
    pub events: Vec<(Event, Instant)>,
    /// The error that ended the subscription (a broken chain, a refusal), if any.
    pub error: Option<SubscribeError>,
}

impl Received {
    /// The message id each event carries as its first envelope's content, with its timestamp.
    pub fn ids(&self) -> Vec<(i64, String)> {
        self.events
            .iter()
            .map(|(e, _)| (e.timestamp, String::from_utf8_lossy(&e.envelopes[0].content).into_owned()))
            .collect()
    }
}

/// Subscribe `member` through `client` and record what arrives until the task is aborted;
/// the client resumes after the last event (on another endpoint if it has several) and checks
/// the previous_timestamp chain.
pub fn record(client: SequencerClient, member: &str) -> (Arc<Mutex<Received>>, tokio::task::JoinHandle<()>) {
    let sink: Arc<Mutex<Received>> = Arc::default();
    let mut events = client.subscribe(member, None);
    let task = {
        let sink = sink.clone();
        tokio::spawn(async move {
            while let Some(item) = events.next().await {
                match item {
                    Ok(e) => sink.lock().unwrap().events.push((e, Instant::now())),
                    Err(e) => sink.lock().unwrap().error = Some(e),
                }
            }
        })
    };
    (sink, task)
}
