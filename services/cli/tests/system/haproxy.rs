//! Real HAProxy with `ops/haproxy/sequencers.cfg` in front of three `syncline daemon`
//! sequencers, TLS on every hop (clients to HAProxy, HAProxy to the nodes and their health
//! ports, certificates checked against a development CA): clients that only know the HAProxy address keep sequencing while one node
//! loses its database and another is killed with SIGKILL, and a node that recovers gets
//! traffic again.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::*;
use syncline_node::tls::dev::DevCerts;
use syncline_proto::sequencer::sequencer_service_client::SequencerServiceClient;
use syncline_sequencer_client::{RequestBuilder, SequencerApi, SequencerClient};
use syncline_testkit::{free_port, fresh_database, wait_for, write_file, Daemon, FaultProxy, TempDir};

struct Haproxy(Child);

impl Haproxy {
    /// HAProxy serving `certs`' certificate `haproxy` and trusting its CA toward the nodes.
    fn start(frontend: SocketAddr, nodes: &[SequencerAddrs], certs: &DevCerts, log: PathBuf) -> Haproxy {
        let bin = ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("haproxy is not installed: run ./dev test (it installs it) or apt-get install haproxy");
        let cfg = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../ops/haproxy/sequencers.cfg");
        let mut cmd = Command::new(bin);
        cmd.arg("-db").arg("-f").arg(cfg).env("SEQ_FRONTEND", frontend.to_string());
        cmd.env("TLS_CERT", certs.bundle("haproxy")).env("TLS_CA", &certs.ca);
        for (i, n) in nodes.iter().enumerate() {
            cmd.env(format!("SEQ{}", i + 1), n.public.to_string());
            cmd.env(format!("SEQ{}_HEALTH", i + 1), n.health.port().to_string());
        }
        let out = std::fs::File::create(log).unwrap();
        let child =
            cmd.stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out).spawn().expect("starting haproxy");
        Haproxy(child)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends sequenced by one node so far, from its `/metrics`.
async fn accepted(n: &SequencerAddrs) -> Option<u64> {
    let (_, text) = health_get(n, "/metrics").await?;
    Some(
        text.lines()
            .filter(|l| l.starts_with("syncline_sequencer_sends_total{") && l.contains("result=\"sequenced\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64,
    )
}

/// Send `count` messages through HAProxy; every one must be sequenced (OK) at the first
/// attempt: no resend hides a loss.
async fn send_all(c: &SequencerClient, prefix: &str, count: usize, ids: &mut Vec<String>) {
    for k in 0..count {
        let id = format!("{prefix}-{k:03}");
        match c.send(RequestBuilder::new("alice", id.as_str()).to(["bob"], id.as_str()).build()).await {
            Ok(sent) => assert_eq!(sent.resends, 0, "send {id} through HAProxy needed {} resends", sent.resends),
            Err(e) => panic!("send {id} through HAProxy failed: {e}"),
        }
        ids.push(id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_routes_around_a_node_without_database_and_a_killed_node() {
    let tdb = fresh_database().await;
    let db_proxy = FaultProxy::start(tdb.server_addr()).await;
    let dir = TempDir::new("syncline-haproxy");
    let storage = write_file(dir.path(), "storage.toml", &format!("[storage]\nurl = \"{}\"\n", tdb.url));
    let certs = dev_certs(dir.path(), &["seq1", "seq2", "seq3", "haproxy"]);
    let nodes: Vec<SequencerAddrs> =
        (1..=3).map(|i| sequencer_node(&format!("seq{i}")).with_tls(node_tls(&certs, &format!("seq{i}")))).collect();
    let mut daemons = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        // seq1 reaches the database through the fault proxy.
        let extra = if i == 0 {
            format!("storage = {{ url = \"{}\" }}\n", tdb.url_via(db_proxy.addr()))
        } else {
            String::new()
        };
        let cfg = write_file(dir.path(), &format!("{}.toml", n.name), &n.section(&extra));
        daemons.push(Some(Daemon::start(&syncline_bin(), dir.path(), &n.name, &[storage.clone(), cfg])));
    }
    for (n, d) in nodes.iter().zip(&daemons) {
        let start = std::time::Instant::now();
        while status(n, "/health").await != Some(200) {
            let log = d.as_ref().map(|d| d.log_text()).unwrap_or_default();
            assert!(start.elapsed() < Duration::from_secs(60), "{} did not become healthy:\n{log}", n.name);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let frontend = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let _haproxy = Haproxy::start(frontend, &nodes, &certs, dir.path().join("haproxy.log"));
    let url = format!("https://{frontend}");
    let tokens = register(&admin_of(&nodes[1]), &["alice", "bob"]).await;
    // HAProxy needs `rise 2` good checks per server before it routes to it.
    wait_for(Duration::from_secs(15), "HAProxy accepting connections", || {
        let (url, ca) = (url.clone(), certs.ca.clone());
        async move { channel(&url, Some(&ca)).await.is_ok() }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Clients that know only HAProxy's address (and trust the CA of its certificate).
    let client = SequencerClient::new([url.clone()], tls_client_config(&certs.ca)).unwrap();
    for (m, t) in &tokens {
        client.set_token(m, TokenSource::Token(t.clone()));
    }
    let c = &client;

    // bob follows through HAProxy, resubscribing after the last event when a stream breaks.
    let (got, follower) = record(client.clone(), "bob");

    let mut ids = Vec::new();
    let before: Vec<u64> = counts(&nodes).await;
    send_all(c, "healthy", 30, &mut ids).await;
    let after: Vec<u64> = counts(&nodes).await;
    for i in 0..3 {
        assert!(after[i] > before[i], "HAProxy sent nothing to {}", nodes[i].name);
    }

    // seq1 loses its database: /health turns 503 and HAProxy stops routing to it.
    db_proxy.down();
    wait_for(Duration::from_secs(10), "seq1 unhealthy", || async { status(&nodes[0], "/health").await == Some(503) })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seq1_before = accepted(&nodes[0]).await.unwrap();
    send_all(c, "db-cut", 30, &mut ids).await;
    assert_eq!(accepted(&nodes[0]).await.unwrap(), seq1_before, "HAProxy routed sends to a node without database");

    // seq3 is killed right after its last OK, and sends go on at once, before HAProxy's
    // checks can take it out: HAProxy retries each send that finds seq3 gone on seq2 (a send
    // is idempotent by its message id), so every one is OK at the first attempt; everything
    // seq3 answered OK is delivered.
    daemons[2].as_mut().unwrap().kill9();
    send_all(c, "killed", 30, &mut ids).await;

    // seq1's database returns: it serves again and HAProxy routes to it again.
    db_proxy.restore();
    wait_for(Duration::from_secs(20), "seq1 healthy again", || async {
        status(&nodes[0], "/health").await == Some(200)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seq1_before = accepted(&nodes[0]).await.unwrap();
    send_all(c, "recovered", 30, &mut ids).await;
    assert!(accepted(&nodes[0]).await.unwrap() > seq1_before, "HAProxy did not route to the recovered node");

    // bob, through HAProxy, got every message once, in timestamp order.
    let waited = std::time::Instant::now();
    while got.lock().unwrap().events.len() < ids.len() && waited.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    follower.abort();
    if let Some(e) = &got.lock().unwrap().error {
        panic!("bob's subscription through HAProxy failed: {e}");
    }
    let got = got.lock().unwrap().ids();
    let ts: Vec<i64> = got.iter().map(|(t, _)| *t).collect();
    assert!(ts.windows(2).all(|w| w[0] < w[1]), "events out of order or repeated");
    let mut received: Vec<String> = got.into_iter().map(|(_, id)| id).collect();
    received.sort();
    let mut expected = ids.clone();
    expected.sort();
    let missing: Vec<&String> = expected.iter().filter(|id| received.binary_search(id).is_err()).collect();
    assert!(
        missing.is_empty(),
        "{} of {} messages never delivered through HAProxy: {missing:?}",
        missing.len(),
        expected.len()
    );
    assert_eq!(received, expected, "messages duplicated through HAProxy");
}

async fn status(n: &SequencerAddrs, path: &str) -> Option<u16> {
    health_get(n, path).await.map(|(code, _)| code)
}

async fn counts(nodes: &[SequencerAddrs]) -> Vec<u64> {
    let mut v = Vec::new();
    for n in nodes {
        v.push(accepted(n).await.unwrap_or(0));
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_sequencer_up_haproxy_answers_a_retryable_grpc_unavailable() {
    let dir = TempDir::new("syncline-haproxy-none");
    // Three sequencers that never started: nothing listens on their ports.
    let nodes: Vec<SequencerAddrs> = (1..=3).map(|i| sequencer_node(&format!("none{i}"))).collect();
    let certs = dev_certs(dir.path(), &["haproxy"]);
    let frontend = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let _haproxy = Haproxy::start(frontend, &nodes, &certs, dir.path().join("haproxy.log"));
    let url = format!("https://{frontend}");
    wait_for(Duration::from_secs(15), "HAProxy accepting connections", || {
        let (url, ca) = (url.clone(), certs.ca.clone());
        async move { channel(&url, Some(&ca)).await.is_ok() }
    })
    .await;
    // Before and after the checks mark every server down: UNAVAILABLE naming HAProxy, never
    // an unparsable HTML page (INTERNAL), which clients would take as a definite answer.
    for _ in 0..2 {
        let mut raw = SequencerServiceClient::new(channel(&url, Some(&certs.ca)).await.unwrap());
        let request = RequestBuilder::new("alice", "m-1").to(["bob"], "x").build();
        let e = raw.send(request).await.expect_err("no sequencer is up");
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
        assert!(e.message().starts_with("haproxy: "), "{e:?}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
