//! What only the system tests need: the `syncline` binary, sequencer node addresses and their
//! config sections, and clients and subscribers of them (through the sequencer client crate).
//! Processes, temp dirs, ports and waiting come from the test kit.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::StreamExt;
pub use syncline_sequencer_client::TokenSource;
use syncline_sequencer_client::{AdminClient, ClientConfig, Event, SequencerApi, SequencerClient, SubscribeError};

/// The `syncline` binary of this package, built by cargo for these tests.
pub fn syncline_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_syncline"))
}

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
    AdminClient::new(node.admin_url(), ClientConfig::default()).expect("a valid URL")
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
    let client = SequencerClient::new(nodes.into_iter().map(SequencerAddrs::public_url), ClientConfig::default())
        .expect("valid URLs");
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
