//! The client against in-process sequencer nodes on one real PostgreSQL: failover of sends and
//! of a subscription when a node shuts down mid-stream, resends answered with the first
//! timestamp, the endpoint list changed at runtime, the admin client.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use syncline_coordination::DbConfig;
use syncline_node::tls::dev::{write_dev_certs, DevCerts, LOCAL_HOSTS};
use syncline_node::tls::{Protocol, TlsConfig, TlsListener};
use syncline_sequencer::{Sequencer, SequencerSettings};
use syncline_sequencer_client::{
    AdminClient, ClientConfig, Event, RequestBuilder, SendError, SequencerApi, SequencerClient, SubscribeError,
    TokenSource,
};
use syncline_sequencer_client::{ClientTls, EndpointError};
use syncline_testkit::fresh_database;
use tokio_util::sync::CancellationToken;

/// A sequencer node behind its own gRPC server (public and admin services on one port).
struct Node {
    seq: Option<Sequencer>,
    url: String,
    stop: CancellationToken,
}

impl Node {
    async fn start(db_url: &str, name: &str) -> Node {
        let settings = SequencerSettings { name: name.into(), total_node_count: 8, ..Default::default() };
        let mut db = DbConfig::new(db_url);
        db.application_name = name.into();
        let seq = Sequencer::start(db, settings).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let router =
            tonic::transport::Server::builder().add_service(seq.public_service()).add_service(seq.admin_service());
        let s = stop.clone();
        tokio::spawn(async move {
            let incoming = syncline_node::host::plaintext(listener);
            router.serve_with_incoming_shutdown(incoming, s.cancelled_owned()).await.unwrap();
        });
        Node { seq: Some(seq), url, stop }
    }

    /// As [`start`](Self::start), serving TLS with `certs`' certificate of `name`.
    async fn start_tls(db_url: &str, name: &str, certs: &DevCerts) -> Node {
        let settings = SequencerSettings { name: name.into(), total_node_count: 4, ..Default::default() };
        let mut db = DbConfig::new(db_url);
        db.application_name = name.into();
        let seq = Sequencer::start(db, settings).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let tls = TlsConfig { cert: certs.cert(name), key: certs.key(name), client_ca: None };
        let incoming =
            TlsListener::new(listener, tls.server_config(Protocol::Grpc).unwrap(), "public API", stop.clone());
        let router =
            tonic::transport::Server::builder().add_service(seq.public_service()).add_service(seq.admin_service());
        let s = stop.clone();
        tokio::spawn(async move {
            router.serve_with_incoming_shutdown(incoming, s.cancelled_owned()).await.unwrap();
        });
        Node { seq: Some(seq), url, stop }
    }

    async fn wait_serving(&self) {
        let start = Instant::now();
        while !self.seq.as_ref().unwrap().health().serving {
            assert!(start.elapsed() < Duration::from_secs(30), "{} not serving", self.url);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Clean shutdown: open subscriptions end with UNAVAILABLE, the port closes.
    async fn shutdown(&mut self) {
        self.stop.cancel();
        self.seq.take().unwrap().shutdown().await;
    }
}

async fn nodes(db_url: &str, n: usize) -> Vec<Node> {
    let mut nodes = Vec::new();
    for i in 0..n {
        nodes.push(Node::start(db_url, &format!("seq{i}")).await);
    }
    for n in &nodes {
        n.wait_serving().await;
    }
    nodes
}

/// Register `members`; their tokens.
async fn register(node: &Node, members: &[&str]) -> Tokens {
    let admin = AdminClient::new(node.url.clone(), ClientConfig::default()).unwrap();
    let mut tokens = Tokens::new();
    for m in members {
        tokens.insert(m.to_string(), admin.register_member(m).await.unwrap().token.expect("a new member's token"));
    }
    tokens
}

/// Member → token.
type Tokens = BTreeMap<String, String>;

/// A client of `urls` presenting `tokens`.
fn client(urls: impl IntoIterator<Item = impl Into<String>>, tokens: &Tokens) -> SequencerClient {
    let client = SequencerClient::new(urls, config()).unwrap();
    for (m, t) in tokens {
        client.set_token(m, TokenSource::Token(t.clone()));
    }
    client
}

fn config() -> ClientConfig {
    ClientConfig {
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        ..Default::default()
    }
}

/// Everything a subscription yields, recorded until the task is aborted.
#[derive(Default)]
struct Received {
    events: Vec<Event>,
    errors: Vec<SubscribeError>,
}

fn follow(client: SequencerClient, member: &'static str, sink: Arc<Mutex<Received>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut stream = client.subscribe(member, None);
        while let Some(item) = stream.next().await {
            match item {
                Ok(e) => sink.lock().unwrap().events.push(e),
                Err(e) => sink.lock().unwrap().errors.push(e),
            }
        }
    })
}

async fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every OK'd send delivered once, at the timestamp its OK named, and nothing else; the
/// previous_timestamp chain unbroken.
fn check_delivery(received: &Received, oks: &BTreeMap<String, i64>) {
    assert!(received.errors.is_empty(), "subscription errors: {:?}", received.errors);
    let events = &received.events;
    for w in events.windows(2) {
        assert_eq!(w[1].previous_timestamp, Some(w[0].timestamp), "chain broken before {}", w[1].timestamp);
    }
    let mut delivered = BTreeMap::new();
    for e in events {
        let id = String::from_utf8(e.envelopes[0].content.clone()).unwrap();
        assert!(delivered.insert(id.clone(), e.timestamp).is_none(), "{id} delivered twice");
    }
    assert_eq!(&delivered, oks, "delivered exactly the OK'd sends at their OK's timestamps");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_and_a_subscription_fail_over_when_a_node_shuts_down_mid_stream() {
    let tdb = fresh_database().await;
    let mut nodes = nodes(&tdb.url, 3).await;
    let tokens = register(&nodes[1], &["alice", "bob"]).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    // A fresh client starts at the first endpoint: the subscription is on seq0.
    let sink: Arc<Mutex<Received>> = Arc::default();
    let follower = follow(client(urls.clone(), &tokens), "bob", sink.clone());
    let client = client(urls, &tokens);
    let mut oks = BTreeMap::new();
    let mut resends = 0;
    for k in 0..90 {
        if k == 30 {
            wait_for(Duration::from_secs(20), "bob got the first 30", || sink.lock().unwrap().events.len() == 30).await;
            nodes[0].shutdown().await;
        }
        let id = format!("m{k:03}");
        let sent =
            client.send(RequestBuilder::new("alice", id.as_str()).to(["bob"], id.as_str()).build()).await.unwrap();
        resends += sent.resends;
        oks.insert(id, sent.timestamp);
    }
    assert!(resends >= 1, "sends that met the stopped node were resent elsewhere");
    wait_for(Duration::from_secs(20), "bob got all 90", || sink.lock().unwrap().events.len() >= 90).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    follower.abort();
    check_delivery(&sink.lock().unwrap(), &oks);
    for n in &mut nodes[1..] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_is_answered_with_the_first_timestamp_and_refusals_are_typed() {
    let tdb = fresh_database().await;
    let mut nodes = nodes(&tdb.url, 2).await;
    let admin = AdminClient::new(nodes[0].url.clone(), ClientConfig::default()).unwrap();
    let registered = admin.register_member("alice").await.unwrap();
    assert!(registered.registered_at > 0);
    let alice = registered.token.expect("issued at the first registration");
    let again = admin.register_member("alice").await.unwrap();
    assert_eq!((again.registered_at, again.token), (registered.registered_at, None), "registered again: token kept");
    let bob = admin.register_member("bob").await.unwrap().token.unwrap();
    let tokens = Tokens::from([("alice".to_string(), alice), ("bob".to_string(), bob)]);
    let req = RequestBuilder::new("alice", "once").to(["bob"], "once").build();
    let first = client([nodes[0].url.clone()], &tokens).send(req.clone()).await.unwrap();
    assert_eq!(first.resends, 0);
    // The first attempt of this client meets nothing (outcome unknown); the resend on the
    // other node learns the timestamp the send was sequenced at.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let again = client([dead, nodes[1].url.clone()], &tokens).send(req).await.unwrap();
    assert_eq!(again.timestamp, first.timestamp, "answered with the first timestamp, not sequenced again");
    assert_eq!(again.resends, 1);

    let client = client([nodes[1].url.clone()], &tokens);
    let reused = client.send(RequestBuilder::new("alice", "once").to(["bob"], "other").build()).await.unwrap_err();
    assert!(matches!(reused, SendError::AlreadyExists { .. }), "{reused:?}");
    let text = reused.to_string();
    assert!(text.starts_with(&format!("sequencer at {} refused message \"once\" of alice", nodes[1].url)), "{text}");
    // Without a token of its own, an unregistered sender is not even authenticated.
    let unknown = client.send(RequestBuilder::new("mallory", "x").to(["bob"], "x").build()).await.unwrap_err();
    assert!(matches!(unknown, SendError::Rejected { code: tonic::Code::Unauthenticated, .. }), "{unknown}");
    // With bob's token, mallory's name is refused as someone else's.
    client.set_token("mallory", TokenSource::Token(tokens["bob"].clone()));
    let unknown = client.send(RequestBuilder::new("mallory", "x").to(["bob"], "x").build()).await.unwrap_err();
    assert!(matches!(unknown, SendError::Rejected { code: tonic::Code::PermissionDenied, .. }), "{unknown}");

    // bob sees the send once; acknowledging it shows in the pruning status.
    let bob: Vec<Event> = client.subscribe("bob", None).take(1).map(|e| e.unwrap()).collect().await;
    assert_eq!(bob[0].timestamp, first.timestamp);
    client.acknowledge("bob", first.timestamp).await.unwrap();
    let status = admin.status().await.unwrap();
    assert_eq!(status.members, 2);
    let pruning = admin.pruning_status().await.unwrap();
    assert!(
        pruning.laggards.iter().any(|m| m.member == "bob" && m.acknowledged == Some(first.timestamp)),
        "{pruning:?}"
    );
    admin.disable_member("alice").await.unwrap();
    let e = admin.disable_member("nobody").await.unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("sequencer admin at {} could not disable member nobody: NOT_FOUND (", nodes[0].url)),
        "{e}"
    );
    for n in &mut nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_list_changes_at_runtime() {
    let tdb = fresh_database().await;
    let mut nodes = nodes(&tdb.url, 2).await;
    let tokens = register(&nodes[0], &["alice", "bob"]).await;
    let client = client([nodes[0].url.clone()], &tokens);
    let sink: Arc<Mutex<Received>> = Arc::default();
    let follower = follow(client.clone(), "bob", sink.clone());
    let mut oks = BTreeMap::new();
    let mut send = async |id: String| {
        let sent =
            client.send(RequestBuilder::new("alice", id.as_str()).to(["bob"], id.as_str()).build()).await.unwrap();
        assert_eq!(sent.resends, 0, "{id} went to a listed, running node at once");
        oks.insert(id, sent.timestamp);
    };
    for k in 0..10 {
        send(format!("before-{k}")).await;
    }
    wait_for(Duration::from_secs(10), "bob got the first 10", || sink.lock().unwrap().events.len() == 10).await;
    // Move everything to seq1, then stop seq0: nothing notices, nothing is resent.
    client.set_endpoints([nodes[1].url.clone()]).unwrap();
    assert_eq!(client.endpoints(), [nodes[1].url.clone()]);
    nodes[0].shutdown().await;
    for k in 0..10 {
        send(format!("after-{k}")).await;
    }
    wait_for(Duration::from_secs(10), "bob got all 20", || sink.lock().unwrap().events.len() >= 20).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    follower.abort();
    check_delivery(&sink.lock().unwrap(), &oks);
    nodes[1].shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoints_are_checked_against_the_configured_ca() {
    let tdb = fresh_database().await;
    let d = tempfile::tempdir().unwrap();
    let certs = write_dev_certs(d.path(), &["seq0".into()], &LOCAL_HOSTS).unwrap();
    let other = write_dev_certs(&d.path().join("other"), &[], &LOCAL_HOSTS).unwrap();
    let mut node = Node::start_tls(&tdb.url, "seq0", &certs).await;
    node.wait_serving().await;
    let tls = |ca: &std::path::Path| ClientConfig { tls: Some(ClientTls::load(ca, None).unwrap()), ..config() };

    // Trusting the node's CA: admin calls, sends and subscriptions work over TLS.
    let admin = AdminClient::new(node.url.clone(), tls(&certs.ca)).unwrap();
    let token = admin.register_member("alice").await.unwrap().token.unwrap();
    let client = SequencerClient::new([node.url.clone()], tls(&certs.ca))
        .unwrap()
        .with_token("alice", TokenSource::Token(token.clone()));
    let sent = client.send(RequestBuilder::new("alice", "m1").to(["alice"], "hello").build()).await.unwrap();
    let mut events = client.subscribe("alice", None);
    let first = tokio::time::timeout(Duration::from_secs(20), events.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(first.timestamp, sent.timestamp);

    // Trusting another CA: refused, naming the endpoint and the certificate's problem.
    let e = AdminClient::new(node.url.clone(), tls(&other.ca)).unwrap().status().await.unwrap_err().to_string();
    assert!(e.contains(&node.url) && e.contains("invalid peer certificate: UnknownIssuer"), "{e}");
    let wrong = SequencerClient::new([node.url.clone()], tls(&other.ca))
        .unwrap()
        .with_token("alice", TokenSource::Token(token));
    let request = RequestBuilder::new("alice", "m2").to(["alice"], "x").within(Duration::from_secs(2)).build();
    let e = wrong.send(request).await.unwrap_err().to_string();
    assert!(e.contains(&node.url) && e.contains("invalid peer certificate: UnknownIssuer"), "{e}");

    // An https:// endpoint needs a CA; a plaintext client gets no answer from a TLS port.
    match SequencerClient::new([node.url.clone()], config()) {
        Err(EndpointError::NoCa { url }) => assert_eq!(url, node.url),
        other => panic!("expected NoCa, got {:?}", other.err()),
    }
    let plain = AdminClient::new(node.url.replace("https://", "http://"), config()).unwrap();
    assert!(plain.status().await.is_err(), "a plaintext call to a TLS port was answered");
    node.shutdown().await;
}
