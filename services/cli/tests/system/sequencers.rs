//! Three `syncline daemon` sequencer processes on one real PostgreSQL: ordering, kill -9
//! under load, a database cut through the fault proxy, idempotent sends, bad requests.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;
use syncline_sequencer_client::{RequestBuilder, SendError, SendRequest, SequencerApi, SequencerClient};
use syncline_testkit::{fresh_database, http_status, wait_for, write_file, Daemon, FaultProxy, TempDir};
use tonic::transport::Channel;
use tonic::Code;

struct Topology {
    dir: TempDir,
    storage: std::path::PathBuf,
    nodes: Vec<SequencerAddrs>,
    daemons: Vec<Option<Daemon>>,
    tokens: Mutex<Tokens>,
}

impl Topology {
    /// Three sequencers; node `via_proxy` (if any) reaches the database through `proxy_url`.
    async fn start(db_url: &str, via_proxy: Option<(usize, String)>) -> Topology {
        let dir = TempDir::new("syncline-seq");
        let storage = write_file(dir.path(), "storage.toml", &format!("[storage]\nurl = \"{db_url}\"\n"));
        let nodes: Vec<SequencerAddrs> = (1..=3).map(|i| sequencer_node(&format!("seq{i}"))).collect();
        let mut t = Topology { dir, storage, nodes, daemons: Vec::new(), tokens: Mutex::default() };
        for i in 0..3 {
            let extra = match &via_proxy {
                Some((p, url)) if *p == i => format!("storage = {{ url = \"{url}\" }}\n"),
                _ => String::new(),
            };
            let cfg = write_file(t.dir.path(), &format!("seq{}.toml", i + 1), &t.nodes[i].section(&extra));
            let d = Daemon::start(&syncline_bin(), t.dir.path(), &t.nodes[i].name, &[t.storage.clone(), cfg]);
            t.daemons.push(Some(d));
        }
        for i in 0..3 {
            t.wait_healthy(i).await;
        }
        t
    }

    async fn wait_healthy(&self, i: usize) {
        let addr = self.nodes[i].health;
        let log = self.daemons[i].as_ref().map(|d| d.log.clone());
        let start = Instant::now();
        while http_status(addr, "/health").await != Some(200) {
            if start.elapsed() > Duration::from_secs(60) {
                let log = log.map(|l| std::fs::read_to_string(l).unwrap_or_default()).unwrap_or_default();
                panic!("{} did not become healthy:\n{log}", self.nodes[i].name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn restart(&mut self, i: usize) {
        let cfg = self.dir.path().join(format!("seq{}.toml", i + 1));
        self.daemons[i] =
            Some(Daemon::start(&syncline_bin(), self.dir.path(), &self.nodes[i].name, &[self.storage.clone(), cfg]));
    }

    /// A client of node `i` alone.
    fn client(&self, i: usize) -> SequencerClient {
        self.client_of([&self.nodes[i]])
    }

    /// A client of `nodes` with the tokens of the members registered so far.
    fn client_of<'a>(&self, nodes: impl IntoIterator<Item = &'a SequencerAddrs>) -> SequencerClient {
        client_of(nodes, &self.tokens.lock().unwrap())
    }

    async fn register(&self, members: &[&str]) {
        let tokens = register(&admin_of(&self.nodes[0]), members).await;
        self.tokens.lock().unwrap().extend(tokens);
    }

    /// Record `member`'s events as delivered by node `i` (resubscribing there after failures).
    fn subscriber(&self, i: usize, member: &str) -> (Arc<Mutex<Received>>, tokio::task::JoinHandle<()>) {
        record(self.client(i), member)
    }
}

fn send(sender: &str, id: &str, to: &[&str], body: &[u8], mst_in: Duration) -> SendRequest {
    RequestBuilder::new(sender, id).to(to.iter().copied(), body).within(mst_in).build()
}

fn check_chain(member: &str, received: &Received) {
    assert!(received.error.is_none(), "{member}: the subscription failed: {}", received.error.as_ref().unwrap());
    let events = &received.events;
    for w in events.windows(2) {
        assert!(w[1].0.timestamp > w[0].0.timestamp, "{member}: order broken or duplicate at {}", w[1].0.timestamp);
        assert_eq!(w[1].0.previous_timestamp, Some(w[0].0.timestamp), "{member}: gap before {}", w[1].0.timestamp);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_spread_over_three_processes_reach_every_subscriber_once_in_one_order() {
    let tdb = fresh_database().await;
    let t = Topology::start(&tdb.url, None).await;
    t.register(&["alice", "bob"]).await;
    let (sinks, subs): (Vec<_>, Vec<_>) = (0..3).map(|i| t.subscriber(i, "bob")).unzip();
    let n = 90;
    // Round robin over the three processes: send k goes to node k % 3.
    let client = t.client_of(&t.nodes);
    for k in 0..n {
        let sent = client
            .send(send("alice", &format!("m{k}"), &["bob"], format!("{k}").as_bytes(), Duration::from_secs(30)))
            .await
            .unwrap();
        assert_eq!(sent.resends, 0, "m{k}: every node answers");
    }
    wait_for(Duration::from_secs(30), "every subscriber got every event", || {
        let done = sinks.iter().all(|s| s.lock().unwrap().events.len() >= n);
        async move { done }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let orders: Vec<Vec<i64>> =
        sinks.iter().map(|s| s.lock().unwrap().events.iter().map(|(e, _)| e.timestamp).collect()).collect();
    for (i, o) in orders.iter().enumerate() {
        assert_eq!(o.len(), n, "subscriber on seq{} got {} events", i + 1, o.len());
        check_chain("bob", &sinks[i].lock().unwrap());
    }
    assert!(orders.windows(2).all(|w| w[0] == w[1]), "identical order on every node");
    let bodies: HashSet<Vec<u8>> =
        sinks[0].lock().unwrap().events.iter().map(|(e, _)| e.envelopes[0].content.clone()).collect();
    assert_eq!(bodies.len(), n, "each send exactly once");
    subs.iter().for_each(|s| s.abort());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_pauses_other_readers_briefly_and_loses_nothing() {
    let tdb = fresh_database().await;
    let mut t = Topology::start(&tdb.url, None).await;
    t.register(&["alice", "bob"]).await;
    let (sinks, subs): (Vec<_>, Vec<_>) = (0..3).map(|i| t.subscriber(i, "bob")).unzip();

    // Load: every 10 ms a new message, round-robin over the nodes, each send on its own task.
    // An OK means sequenced: an OK'd send is never sent again. Only a send that got no answer
    // (its node died under it) is resent, unchanged, on the next node.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = t.client_of(&t.nodes);
    let oks: Arc<Mutex<BTreeMap<String, i64>>> = Arc::default();
    let resends = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let load = {
        let (stop, client, oks, resends) = (stop.clone(), client.clone(), oks.clone(), resends.clone());
        tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            let mut k = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (client, oks, resends) = (client.clone(), oks.clone(), resends.clone());
                tasks.spawn(async move {
                    let id = format!("m{k:05}");
                    // The client resends (unchanged) on the next node while the outcome is unknown.
                    match client.send(send("alice", &id, &["bob"], id.as_bytes(), Duration::from_secs(20))).await {
                        Ok(sent) => {
                            oks.lock().unwrap().insert(id, sent.timestamp);
                            resends.fetch_add(u64::from(sent.resends), std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(e) => panic!("{e}"),
                    }
                });
                k += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            while let Some(r) = tasks.join_next().await {
                r.expect("every send is answered OK by some node");
            }
            k
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed_at = Instant::now();
    t.daemons[0].as_mut().unwrap().kill9();
    tokio::time::sleep(Duration::from_secs(3)).await;
    t.restart(0);
    t.wait_healthy(0).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let total = tokio::time::timeout(Duration::from_secs(60), load).await.expect("every send answered").unwrap();
    let oks = oks.lock().unwrap().clone();
    assert_eq!(oks.len(), total);
    println!("{total} sends OK'd; {} resends after no answer", resends.load(std::sync::atomic::Ordering::Relaxed));
    wait_for(Duration::from_secs(30), "all subscribers caught up", || {
        let done = sinks.iter().all(|s| s.lock().unwrap().events.len() >= total);
        async move { done }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reference: Vec<i64> = sinks[1].lock().unwrap().events.iter().map(|(e, _)| e.timestamp).collect();
    for (i, sink) in sinks.iter().enumerate() {
        let r = sink.lock().unwrap();
        check_chain("bob", &r);
        let ids: Vec<Vec<u8>> = r.events.iter().map(|(e, _)| e.envelopes[0].content.clone()).collect();
        let unique: HashSet<&Vec<u8>> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "seq{}: a message was sequenced twice", i + 1);
        assert_eq!(ids.len(), total, "seq{}: {} of {total} messages", i + 1, ids.len());
        let ts: Vec<i64> = r.events.iter().map(|(e, _)| e.timestamp).collect();
        assert_eq!(ts, reference, "seq{}: order differs", i + 1);
        for (e, _) in &r.events {
            let id = String::from_utf8(e.envelopes[0].content.clone()).unwrap();
            assert_eq!(
                oks.get(&id),
                Some(&e.timestamp),
                "seq{}: {id} delivered at another timestamp than its OK named",
                i + 1
            );
        }
    }
    // The pause seen by subscribers of the surviving nodes around the kill.
    for i in [1, 2] {
        let r = sinks[i].lock().unwrap();
        let arrivals: Vec<Instant> = r
            .events
            .iter()
            .map(|(_, at)| *at)
            .filter(|at| *at > killed_at - Duration::from_millis(500) && *at < killed_at + Duration::from_secs(3))
            .collect();
        let mut gap = Duration::ZERO;
        let mut prev = killed_at;
        for at in arrivals.iter().filter(|at| **at >= killed_at) {
            gap = gap.max(at.duration_since(prev));
            prev = *at;
        }
        println!("seq{}: longest pause after kill -9: {gap:?}", i + 1);
        assert!(gap < Duration::from_secs(2), "seq{}: readers paused {gap:?} after kill -9", i + 1);
    }
    subs.iter().for_each(|s| s.abort());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_cut_turns_one_node_not_serving_while_the_others_sequence() {
    let tdb = fresh_database().await;
    let proxy = FaultProxy::start(tdb.server_addr()).await;
    let t = Topology::start(&tdb.url, Some((0, tdb.url_via(proxy.addr())))).await;
    t.register(&["alice", "bob"]).await;
    let health = async |i: usize| {
        let channel = Channel::from_shared(t.nodes[i].public_url()).ok()?.connect().await.ok()?;
        let mut c = tonic_health::pb::health_client::HealthClient::new(channel);
        let r = c
            .check(tonic_health::pb::HealthCheckRequest { service: "syncline.sequencer.v1.SequencerService".into() })
            .await
            .ok()?;
        Some(r.into_inner().status)
    };
    // gRPC health follows the node's health within its 100 ms reporting tick.
    wait_for(Duration::from_secs(5), "seq1 gRPC SERVING", || async {
        health(0).await == Some(tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
    })
    .await;
    proxy.down();
    let cut = Instant::now();
    wait_for(Duration::from_secs(10), "seq1 /health 503", || async {
        http_status(t.nodes[0].health, "/health").await == Some(503)
    })
    .await;
    println!("seq1 reported NOT_SERVING {:?} after the cut", cut.elapsed());
    wait_for(Duration::from_secs(5), "seq1 gRPC NOT_SERVING", || async {
        health(0).await == Some(tonic_health::pb::health_check_response::ServingStatus::NotServing as i32)
    })
    .await;
    let (sink, sub) = t.subscriber(1, "bob");
    let others = t.client_of(&t.nodes[1..]);
    for k in 0..10 {
        others.send(send("alice", &format!("c{k}"), &["bob"], b"x", Duration::from_secs(30))).await.unwrap();
    }
    wait_for(Duration::from_secs(10), "the others keep sequencing", || {
        let n = sink.lock().unwrap().events.len();
        async move { n >= 10 }
    })
    .await;
    proxy.restore();
    t.wait_healthy(0).await;
    t.client(0).send(send("alice", "back", &["bob"], b"y", Duration::from_secs(30))).await.unwrap();
    wait_for(Duration::from_secs(10), "seq1 sequences again", || {
        let n = sink.lock().unwrap().events.len();
        async move { n >= 11 }
    })
    .await;
    sub.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_sends_and_clear_errors_across_processes() {
    let tdb = fresh_database().await;
    let t = Topology::start(&tdb.url, None).await;
    t.register(&["alice", "bob"]).await;
    let req = send("alice", "once", &["bob"], b"once", Duration::from_secs(30));
    let first = t.client(0).send(req.clone()).await.unwrap().timestamp;
    // Resends on the other processes are answered with the timestamp it was sequenced at.
    assert_eq!(t.client(1).send(req.clone()).await.unwrap().timestamp, first);
    assert_eq!(t.client(2).send(req).await.unwrap().timestamp, first);
    // The same id with other content is refused, naming the id.
    let reused =
        t.client(1).send(send("alice", "once", &["bob"], b"other", Duration::from_secs(30))).await.unwrap_err();
    let SendError::AlreadyExists { message, .. } = &reused else { panic!("{reused:?}") };
    assert!(message.contains("\"once\""), "{message}");
    t.client(2).send(send("alice", "marker", &["bob"], b"marker", Duration::from_secs(30))).await.unwrap();
    let (sink, sub) = t.subscriber(0, "bob");
    wait_for(Duration::from_secs(10), "two events", || {
        let n = sink.lock().unwrap().events.len();
        async move { n >= 2 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bodies: Vec<Vec<u8>> =
        sink.lock().unwrap().events.iter().map(|(e, _)| e.envelopes[0].content.clone()).collect();
    assert_eq!(bodies, vec![b"once".to_vec(), b"marker".to_vec()]);
    assert_eq!(sink.lock().unwrap().events[0].0.timestamp, first);
    sub.abort();

    let c = t.client(1);
    let past = send("alice", "late", &["bob"], b"x", Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let e = c.send(past).await.unwrap_err();
    let SendError::Rejected { code: Code::InvalidArgument, message, .. } = &e else { panic!("{e:?}") };
    assert!(message.contains("in the past"), "{message}");
    let e = c
        .send(send("alice", "huge", &["bob"], &vec![0u8; 5 * 1024 * 1024], Duration::from_secs(30)))
        .await
        .unwrap_err();
    let SendError::Rejected { code: Code::OutOfRange, message, .. } = &e else { panic!("{e:?}") };
    assert!(message.contains("too large"), "{message}");
    let e = c.send(send("", "x", &["bob"], b"x", Duration::from_secs(30))).await.unwrap_err();
    assert!(matches!(e, SendError::Rejected { code: Code::NotFound | Code::InvalidArgument, .. }), "{e:?}");
}
