//! Randomized HA test of the Send contract and the total order, over gRPC, on one real
//! PostgreSQL: four in-process sequencer nodes of two writer lanes each (one or two with skewed clocks), each reaching
//! the database through a fault proxy of its own. Several senders send concurrently through
//! random nodes; sends that got no answer (or UNAVAILABLE) are resent with the same message id
//! and content, possibly on another node; message ids are sometimes reused with other content.
//! Clients differ in patience, so some resend while the first attempt is still held. Meanwhile
//! nodes lose their database after a slow spell (their lock session dies: the others knock them
//! offline and sweep their uncovered tails) or freeze (blackholed while holding their lock);
//! a node is stalled between committing a batch and covering it (its watermark row locked from
//! a session of the test's own), so that resends elsewhere meet its uncovered claims; and pairs
//! of nodes shut down cleanly and restart at once, competing for node indexes. Several
//! subscribers per member, on different nodes, resubscribe from their last timestamp whenever
//! their stream ends.
//!
//! At the end: every subscriber of a member saw the same events with an intact
//! `previous_timestamp` chain, and so does a fresh subscription on every node; every OK'd send
//! (OKs of resends included) reached each recipient exactly once at the timestamp its OK named;
//! no message id was delivered twice; every delivered event was OK'd or had an unknown outcome;
//! a reused id was refused (ALREADY_EXISTS) exactly when its first content was sequenced.
//!
//! The seed is printed; rerun one with SYNCLINE_TEST_SEED=<seed> (the schedule is replayed; the
//! interleavings of the nodes are not deterministic). RUST_LOG=<filter> shows the nodes' logs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::sql_types::{Array, BigInt, Integer, SmallInt, Text};
use diesel::QueryableByName;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use syncline_coordination::db::{self, SessionKind};
use syncline_coordination::DbConfig;
use syncline_proto::sequencer::sequencer_admin_service_client::SequencerAdminServiceClient;
use syncline_proto::sequencer::sequencer_service_client::SequencerServiceClient;
use syncline_proto::sequencer::{Envelope, Event, RegisterMemberRequest, SendRequest, SubscribeRequest};
use syncline_sequencer::store::timestamps::now_micros;
use syncline_sequencer::{Sequencer, SequencerSettings};
use syncline_testkit::{fresh_database, FaultProxy};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::Code;

/// Nodes; with `LANES` writer lanes each, they take every node index: restarts and rejoins
/// compete for the few free ones.
const NODES: usize = 4;
/// Writer lanes per node (each its own index, session and watermark: one order across them).
const LANES: u32 = 2;
/// Members m0..m4; all but the last send.
const MEMBERS: usize = 5;
const SENDERS: usize = 4;
const SUBSCRIBERS_PER_MEMBER: usize = 2;
/// Steps of the randomized schedule (about 150 ms each).
const STEPS: usize = 70;
/// Sends in flight at most (further sends of a burst are skipped).
const MAX_IN_FLIGHT: usize = 64;
/// A node whose watermark is older is knocked offline (above the largest clock skew, so that
/// a node behind is not knocked offline for it alone).
const OFFLINE_DURATION: Duration = Duration::from_secs(3);
/// The nodes answer sends they cannot confirm within this with UNAVAILABLE.
const WRITE_TIMEOUT: Duration = Duration::from_millis(1500);

fn member(i: usize) -> String {
    format!("m{i}")
}

/// One running sequencer behind its own gRPC server.
struct Node {
    seq: Sequencer,
    stop: CancellationToken,
}

impl Node {
    async fn start(url: &str, slot: usize, offset_micros: i64) -> (Node, SocketAddr) {
        let settings = SequencerSettings {
            name: format!("seq{slot}"),
            total_node_count: NODES as u32 * LANES,
            writer_lanes: LANES,
            write_timeout: WRITE_TIMEOUT,
            offline_duration: OFFLINE_DURATION,
            max_clock_wait: Duration::from_secs(5),
            clock_offset_micros: offset_micros,
            // About ordering under faults; authentication is tested in auth.rs.
            member_auth: syncline_sequencer::MemberAuth::Off,
            ..Default::default()
        };
        let mut db = DbConfig::new(url);
        db.application_name = settings.name.clone();
        let seq = Sequencer::start(db, settings).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let router =
            tonic::transport::Server::builder().add_service(seq.public_service()).add_service(seq.admin_service());
        let s = stop.clone();
        tokio::spawn(async move {
            let incoming = syncline_node::host::plaintext(listener);
            let _ = router.serve_with_incoming_shutdown(incoming, s.cancelled_owned()).await;
        });
        (Node { seq, stop }, addr)
    }

    async fn shutdown(self) {
        self.stop.cancel();
        self.seq.shutdown().await;
    }
}

/// The nodes, their proxies and clock offsets, and channels to the running ones.
struct Cluster {
    /// The database, not through any proxy.
    direct_url: String,
    urls: Vec<String>,
    proxies: Vec<FaultProxy>,
    offsets: Vec<i64>,
    nodes: Vec<tokio::sync::Mutex<Option<Node>>>,
    channels: Mutex<Vec<Option<Channel>>>,
    /// Nodes under a fault or a restart right now.
    disturbed: Mutex<HashSet<usize>>,
}

impl Cluster {
    async fn start_node(&self, slot: usize) {
        let (node, addr) = Node::start(&self.urls[slot], slot, self.offsets[slot]).await;
        let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
        *self.nodes[slot].lock().await = Some(node);
        self.channels.lock().unwrap()[slot] = Some(channel);
    }

    async fn stop_node(&self, slot: usize) {
        self.channels.lock().unwrap()[slot] = None;
        if let Some(node) = self.nodes[slot].lock().await.take() {
            node.shutdown().await;
        }
    }

    fn channel(&self, slot: usize) -> Option<Channel> {
        self.channels.lock().unwrap()[slot].clone()
    }

    /// A random running node (whether it serves or not).
    fn pick(&self, rng: &mut impl Rng) -> Option<(usize, Channel)> {
        let running: Vec<(usize, Channel)> =
            self.channels.lock().unwrap().iter().enumerate().filter_map(|(i, c)| c.clone().map(|c| (i, c))).collect();
        running.choose(rng).cloned()
    }

    async fn serving(&self, slot: usize) -> bool {
        self.nodes[slot].lock().await.as_ref().is_some_and(|n| n.seq.health().serving)
    }

    async fn wait_serving(&self, slot: usize, limit: Duration) {
        let start = Instant::now();
        while !self.serving(slot).await {
            assert!(start.elapsed() < limit, "seq{slot} not serving within {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Claim `n` undisturbed nodes for a fault or restart, leaving at least two undisturbed.
    fn disturb(&self, rng: &mut impl Rng, n: usize) -> Option<Vec<usize>> {
        let mut disturbed = self.disturbed.lock().unwrap();
        let free: Vec<usize> = (0..NODES).filter(|i| !disturbed.contains(i)).collect();
        if free.len() < n + 2 {
            return None;
        }
        let chosen: Vec<usize> = free.choose_multiple(rng, n).copied().collect();
        disturbed.extend(&chosen);
        Some(chosen)
    }

    fn settle(&self, slots: &[usize]) {
        let mut disturbed = self.disturbed.lock().unwrap();
        for s in slots {
            disturbed.remove(s);
        }
    }
}

/// How one attempt of a send was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    /// Sequenced at this timestamp.
    Ok(i64),
    /// The id is taken by other content.
    AlreadyExists,
    /// Not sequenced, and never will be (max-sequencing-time passed).
    NotSequenced,
    /// Refused before it was queued (RESOURCE_EXHAUSTED).
    Refused,
    /// No answer, UNAVAILABLE or a lost call: it may or may not be sequenced.
    Unknown,
}

/// One content sent under a (sender, message id).
struct Variant {
    recipients: Vec<usize>,
    mst: i64,
    attempts: Vec<(usize, Answer)>,
    in_flight: usize,
}

impl Variant {
    fn ok(&self) -> Option<i64> {
        self.attempts.iter().find_map(|(_, a)| match a {
            Answer::Ok(ts) => Some(*ts),
            _ => None,
        })
    }

    fn final_answer(&self) -> bool {
        self.attempts.iter().any(|(_, a)| matches!(a, Answer::Ok(_) | Answer::AlreadyExists | Answer::NotSequenced))
    }

    /// Answered only "unknown" or "refused" so far, and no attempt under way: may be resent.
    fn open(&self) -> bool {
        self.in_flight == 0 && !self.attempts.is_empty() && !self.final_answer()
    }
}

/// Every send of one (sender, message id).
struct Key {
    sender: usize,
    id: String,
    variants: Vec<Variant>,
}

fn content(sender: usize, id: &str, variant: usize) -> Vec<u8> {
    format!("{sender}|{id}|{variant}").into_bytes()
}

fn parse_content(bytes: &[u8]) -> (usize, String, usize) {
    let s = std::str::from_utf8(bytes).expect("utf-8 content");
    let mut parts = s.split('|');
    let sender = parts.next().unwrap().parse().unwrap();
    let id = parts.next().unwrap().to_string();
    let variant = parts.next().unwrap().parse().unwrap();
    (sender, id, variant)
}

/// What every send got, and counts for the summary.
#[derive(Default)]
struct Ledger {
    keys: Vec<Key>,
    by_id: HashMap<(usize, String), usize>,
    codes: BTreeMap<String, usize>,
    /// Answers no send of this test should get.
    unexpected: Vec<String>,
}

impl Ledger {
    fn new_key(&mut self, sender: usize, id: String) -> usize {
        self.by_id.insert((sender, id.clone()), self.keys.len());
        self.keys.push(Key { sender, id, variants: Vec::new() });
        self.keys.len() - 1
    }

    fn new_variant(&mut self, key: usize, recipients: Vec<usize>) -> usize {
        let k = &mut self.keys[key];
        k.variants.push(Variant { recipients, mst: now_micros() + 60_000_000, attempts: Vec::new(), in_flight: 0 });
        k.variants.len() - 1
    }

    fn request(&self, key: usize, v: usize) -> SendRequest {
        let k = &self.keys[key];
        let var = &k.variants[v];
        SendRequest {
            sender: member(k.sender),
            message_id: k.id.clone(),
            max_sequencing_time: var.mst,
            envelopes: vec![Envelope {
                recipients: var.recipients.iter().map(|&r| member(r)).collect(),
                content: content(k.sender, &k.id, v),
            }],
        }
    }

    fn open_variants(&self) -> Vec<(usize, usize)> {
        let mut open = Vec::new();
        for (ki, k) in self.keys.iter().enumerate() {
            for (vi, v) in k.variants.iter().enumerate() {
                if v.open() {
                    open.push((ki, vi));
                }
            }
        }
        open
    }
}

struct Shared {
    cluster: Cluster,
    /// Claims that were committed but not covered when a stall locked their watermark row.
    stalled_claims: AtomicUsize,
    ledger: Mutex<Ledger>,
    in_flight: Arc<Semaphore>,
}

/// Mark an attempt of variant `v` of `key` as under way; its request.
fn begin_attempt(shared: &Shared, key: usize, v: usize) -> SendRequest {
    let mut ledger = shared.ledger.lock().unwrap();
    ledger.keys[key].variants[v].in_flight += 1;
    ledger.request(key, v)
}

/// Send `req` (variant `v` of `key`) once through `slot`, giving up after `patience`, and
/// record the answer.
async fn attempt(
    shared: Arc<Shared>,
    key: usize,
    v: usize,
    req: SendRequest,
    slot: usize,
    channel: Channel,
    patience: Duration,
) {
    let r = tokio::time::timeout(patience, SequencerServiceClient::new(channel).send(req)).await;
    let (answer, code) = match r {
        Err(_) => (Answer::Unknown, "no answer".to_string()),
        Ok(Ok(resp)) => (Answer::Ok(resp.into_inner().timestamp), "OK".to_string()),
        Ok(Err(status)) => {
            let answer = match status.code() {
                Code::AlreadyExists => Answer::AlreadyExists,
                Code::FailedPrecondition => Answer::NotSequenced,
                Code::ResourceExhausted => Answer::Refused,
                // The call, the node or its database failed: the outcome is unknown.
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown | Code::Internal => {
                    Answer::Unknown
                }
                _ => {
                    let mut ledger = shared.ledger.lock().unwrap();
                    let k = &ledger.keys[key];
                    let what = format!("{}/{} v{v} on seq{slot}: {status:?}", member(k.sender), k.id);
                    ledger.unexpected.push(what);
                    Answer::Unknown
                }
            };
            (answer, format!("{:?}", status.code()))
        }
    };
    let mut ledger = shared.ledger.lock().unwrap();
    *ledger.codes.entry(code).or_default() += 1;
    let var = &mut ledger.keys[key].variants[v];
    var.in_flight -= 1;
    var.attempts.push((slot, answer));
}

/// Spawn an attempt of (key, v) on a random running node, if a send slot is free.
/// Spawn an attempt of (key, v) on `target` or else a random running node, if a send slot is
/// free. Clients differ in patience: some give up (and resend) before the node answers.
fn spawn_attempt(
    shared: &Arc<Shared>,
    tasks: &mut JoinSet<()>,
    rng: &mut StdRng,
    key: usize,
    v: usize,
    target: Option<usize>,
) -> bool {
    let Ok(permit) = shared.in_flight.clone().try_acquire_owned() else { return false };
    let picked = match target {
        Some(slot) => shared.cluster.channel(slot).map(|c| (slot, c)),
        None => shared.cluster.pick(rng),
    };
    let Some((slot, channel)) = picked else { return false };
    let patience = Duration::from_millis(rng.random_range(500..3000));
    let req = begin_attempt(shared, key, v);
    let shared = shared.clone();
    tasks.spawn(async move {
        attempt(shared, key, v, req, slot, channel, patience).await;
        drop(permit);
    });
    true
}

/// A new send of `sender` with random recipients, attempted on `target` (or a random node);
/// `None` when it could not be attempted (and so does not exist).
fn new_send(
    shared: &Arc<Shared>,
    tasks: &mut JoinSet<()>,
    rng: &mut StdRng,
    sender: usize,
    n: usize,
    target: Option<usize>,
) -> Option<usize> {
    let id = format!("s{sender}-{n}");
    let recipients = random_recipients(rng, sender);
    let (key, v) = {
        let mut ledger = shared.ledger.lock().unwrap();
        let key = ledger.new_key(sender, id);
        (key, ledger.new_variant(key, recipients))
    };
    if spawn_attempt(shared, tasks, rng, key, v, target) {
        Some(key)
    } else {
        shared.ledger.lock().unwrap().keys[key].variants.pop();
        None
    }
}

fn random_recipients(rng: &mut StdRng, sender: usize) -> Vec<usize> {
    let others: Vec<usize> = (0..MEMBERS).filter(|&m| m != sender).collect();
    let n = rng.random_range(1..=3);
    let mut r: Vec<usize> = others.choose_multiple(rng, n).copied().collect();
    r.sort_unstable();
    r
}

/// Events one subscriber saw, over all its streams, and how its streams ended.
#[derive(Default)]
struct Seen {
    events: Vec<Event>,
    streams: usize,
    ended_ok: usize,
    ended_err: usize,
}

/// Subscribe `m` on its home node (or another running one while it is down), and resubscribe
/// after the last timestamp seen whenever the stream ends, until `done`.
async fn subscriber(
    shared: Arc<Shared>,
    m: usize,
    home: usize,
    seed: u64,
    seen: Arc<Mutex<Seen>>,
    done: CancellationToken,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    while !done.is_cancelled() {
        let target = match shared.cluster.channel(home) {
            Some(c) if rng.random_bool(0.8) => Some(c),
            _ => shared.cluster.pick(&mut rng).map(|(_, c)| c),
        };
        let Some(channel) = target else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let after = seen.lock().unwrap().events.last().map(|e| e.timestamp);
        let req = SubscribeRequest { member: member(m), after };
        let mut client = SequencerServiceClient::new(channel);
        let opened = tokio::select! {
            _ = done.cancelled() => return,
            r = tokio::time::timeout(Duration::from_secs(3), client.subscribe(req)) => r,
        };
        let Ok(Ok(stream)) = opened else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut stream = stream.into_inner();
        seen.lock().unwrap().streams += 1;
        loop {
            let msg = tokio::select! {
                _ = done.cancelled() => return,
                msg = stream.message() => msg,
            };
            match msg {
                Ok(Some(r)) => {
                    seen.lock().unwrap().events.push(r.event.expect("an event"));
                    // Now and then move to another stream on its own accord.
                    if rng.random_ratio(1, 40) {
                        break;
                    }
                }
                Ok(None) => {
                    seen.lock().unwrap().ended_ok += 1;
                    break;
                }
                Err(_) => {
                    seen.lock().unwrap().ended_err += 1;
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..150))).await;
    }
}

/// What happens to a node's database connections: first they get slow (every chunk
/// delayed), so that the failure likely falls between committing a batch and covering it
/// with the watermark; then they fail for a while, and are restored.
#[derive(Clone, Copy, Debug)]
struct Fault {
    latency: Duration,
    slow_for: Duration,
    /// Blackholed (frozen, still holding its lock: nobody may sweep its uncovered claims;
    /// longer than the offline duration, it is knocked offline and its tail truncated later)
    /// rather than cut (its lock session dies: the others knock it offline and sweep its tail).
    freeze: bool,
    failed_for: Duration,
}

impl Fault {
    fn random(rng: &mut StdRng, freeze: bool) -> Fault {
        let max = if freeze { 6500 } else { 3000 };
        Fault {
            latency: Duration::from_millis(rng.random_range(20..300)),
            slow_for: Duration::from_millis(rng.random_range(200..1000)),
            freeze,
            failed_for: Duration::from_millis(rng.random_range(300..max)),
        }
    }
}

/// Apply `f` to node `slot`'s database connections.
async fn fault(shared: Arc<Shared>, slot: usize, f: Fault) {
    let proxy = &shared.cluster.proxies[slot];
    proxy.latency(f.latency);
    tokio::time::sleep(f.slow_for).await;
    if f.freeze {
        proxy.blackhole();
    } else {
        proxy.down();
    }
    tokio::time::sleep(f.failed_for).await;
    proxy.restore();
    shared.cluster.settle(&[slot]);
}

#[derive(QueryableByName)]
struct ClaimIndex {
    #[diesel(sql_type = SmallInt)]
    node_index: i16,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Stall node `slot` between committing a batch and covering it: once a claim of one of
/// `ids` is committed, lock its node's watermark row from a session of our own for `hold`.
/// The node keeps its index lock until its write times out, and nobody can knock it offline
/// or sweep its tail while the row is locked: resends of those sends elsewhere meet claims
/// that are not covered (and end up truncated).
async fn stall(shared: Arc<Shared>, slot: usize, ids: Vec<String>, hold: Duration) {
    use diesel_async::RunQueryDsl;
    let proxy = &shared.cluster.proxies[slot];
    let mut conn = db::connect(&DbConfig::new(&shared.cluster.direct_url), SessionKind::Lock).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    let index = loop {
        let found: Vec<ClaimIndex> =
            diesel::sql_query("select node_index from sequencer_events where message_id = any($1) and max_sequencing_ts is not null limit 1")
                .bind::<Array<Text>, _>(&ids)
                .load(&mut conn)
                .await
                .unwrap();
        if let Some(c) = found.into_iter().next() {
            break Some(c.node_index);
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    if let Some(index) = index {
        diesel::sql_query("begin").execute(&mut conn).await.unwrap();
        diesel::sql_query("select 1 from sequencer_watermarks where node_index = $1 for update")
            .bind::<Integer, _>(i32::from(index))
            .execute(&mut conn)
            .await
            .unwrap();
        let uncovered: Count = diesel::sql_query(
            "select count(*) as n from sequencer_events m join sequencer_watermarks w on w.node_index = m.node_index \
             where m.message_id = any($1) and m.max_sequencing_ts is not null and m.ts > w.watermark_ts",
        )
        .bind::<Array<Text>, _>(&ids)
        .get_result(&mut conn)
        .await
        .unwrap();
        shared.stalled_claims.fetch_add(uncovered.n as usize, Ordering::Relaxed);
        proxy.restore();
        tokio::time::sleep(hold).await;
        diesel::sql_query("rollback").execute(&mut conn).await.unwrap();
    }
    proxy.restore();
    shared.cluster.settle(&[slot]);
}

/// Shut nodes down cleanly, then start them all at once: they compete for node indexes.
async fn restart(shared: Arc<Shared>, slots: Vec<usize>, pause: Duration) {
    let c = &shared.cluster;
    futures_util::future::join_all(slots.iter().map(|&s| c.stop_node(s))).await;
    tokio::time::sleep(pause).await;
    futures_util::future::join_all(slots.iter().map(|&s| c.start_node(s))).await;
    for &s in &slots {
        c.wait_serving(s, Duration::from_secs(30)).await;
    }
    c.settle(&slots);
}

/// Send other content under `key`'s message id.
fn reuse(
    shared: &Arc<Shared>,
    tasks: &mut JoinSet<()>,
    rng: &mut StdRng,
    key: usize,
    counts: &mut BTreeMap<&'static str, usize>,
) {
    let v = {
        let mut ledger = shared.ledger.lock().unwrap();
        let sender = ledger.keys[key].sender;
        ledger.new_variant(key, random_recipients(rng, sender))
    };
    if spawn_attempt(shared, tasks, rng, key, v, None) {
        *counts.entry("reused ids").or_default() += 1;
    } else {
        shared.ledger.lock().unwrap().keys[key].variants.pop();
    }
}

/// Rolls of the schedule's actions that every run must take at least once.
const CUT: u32 = 77;
const FREEZE: u32 = 78;
const DOUBLE_RESTART: u32 = 90;
const STALL: u32 = 94;

/// The schedule: bursts of sends, resends of unanswered ones, reused ids, faults, restarts.
async fn drive(
    shared: &Arc<Shared>,
    rng: &mut StdRng,
    tasks: &mut JoinSet<()>,
    chaos: &mut JoinSet<()>,
    counts: &mut BTreeMap<&'static str, usize>,
) {
    let mut next_id = [0usize; SENDERS];
    let (mut cuts, mut freezes, mut stalls, mut double_restarts) = (0, 0, 0, 0);
    for step in 0..STEPS {
        let mut roll: u32 = rng.random_range(0..100);
        // Every run cuts, freezes and stalls a node and restarts a pair at least once, whatever
        // the seed: one overdue kind every third step (traffic goes on in between).
        let overdue = [
            (STEPS / 5, cuts, CUT),
            (STEPS / 4, stalls, STALL),
            (STEPS / 3, freezes, FREEZE),
            (STEPS / 2, double_restarts, DOUBLE_RESTART),
        ];
        let forced = overdue.iter().find(|(from, done, _)| step >= *from && *done == 0).map(|o| o.2);
        if let Some(f) = forced.filter(|_| step % 3 == 0) {
            roll = f;
        }
        // A pair restarts only while no node is disturbed: hold other chaos back until it did.
        if forced == Some(DOUBLE_RESTART) && roll >= CUT {
            roll = DOUBLE_RESTART;
        }
        match roll {
            0..55 => {
                for _ in 0..rng.random_range(1..=10) {
                    let sender = rng.random_range(0..SENDERS);
                    next_id[sender] += 1;
                    let Some(key) = new_send(shared, tasks, rng, sender, next_id[sender], None) else { continue };
                    *counts.entry("sends").or_default() += 1;
                    // Now and then the same id with other content races it.
                    if rng.random_ratio(1, 20) {
                        reuse(shared, tasks, rng, key, counts);
                    }
                }
            }
            55..70 => {
                let open = shared.ledger.lock().unwrap().open_variants();
                for &(key, v) in open.choose_multiple(rng, 4) {
                    if spawn_attempt(shared, tasks, rng, key, v, None) {
                        *counts.entry("resends").or_default() += 1;
                    }
                }
            }
            70..77 => {
                // Reuse an id with other content: one whose outcome is not known yet (so either
                // may win), or any.
                let key = {
                    let ledger = shared.ledger.lock().unwrap();
                    let undecided = |k: &Key| k.variants.iter().any(|v| v.in_flight > 0 || v.open());
                    let pool: Vec<usize> = (0..ledger.keys.len())
                        .filter(|&k| !ledger.keys[k].variants.is_empty())
                        .filter(|&k| rng.random_bool(0.5) || undecided(&ledger.keys[k]))
                        .collect();
                    pool.choose(rng).copied()
                };
                if let Some(key) = key {
                    reuse(shared, tasks, rng, key, counts);
                }
            }
            77..87 => {
                if let Some(slots) = shared.cluster.disturb(rng, 1) {
                    let forced_freeze = roll == FREEZE;
                    let freeze = roll != CUT && (forced_freeze || rng.random_bool(0.4));
                    let mut f = Fault::random(rng, freeze);
                    if freeze {
                        freezes += 1;
                        // The forced one outlasts the offline duration: knocked offline while it
                        // holds its lock, its tail is truncated only when it comes back.
                        if forced_freeze {
                            f.failed_for = f.failed_for.max(OFFLINE_DURATION + Duration::from_secs(2));
                        }
                    } else {
                        cuts += 1;
                    }
                    *counts.entry(if freeze { "freezes" } else { "cuts" }).or_default() += 1;
                    chaos.spawn(fault(shared.clone(), slots[0], f));
                }
            }
            87..94 => {
                if let Some(slots) = shared.cluster.disturb(rng, 2) {
                    *counts.entry("double restarts").or_default() += 1;
                    double_restarts += 1;
                    let pause = Duration::from_millis(rng.random_range(0..500));
                    chaos.spawn(restart(shared.clone(), slots, pause));
                }
            }
            94..99 => {
                let slots = shared.cluster.disturb(rng, 1).unwrap_or_default();
                if slots.is_empty() {
                } else if !shared.cluster.serving(slots[0]).await {
                    shared.cluster.settle(&slots);
                } else {
                    *counts.entry("stalls").or_default() += 1;
                    stalls += 1;
                    // A burst at the node, then its watermark row locked as soon as the burst's
                    // claims are committed (its link is slow, so the save comes later).
                    let slot = slots[0];
                    shared.cluster.proxies[slot].latency(Duration::from_millis(rng.random_range(30..80)));
                    let mut ids = Vec::new();
                    for _ in 0..rng.random_range(3..=8) {
                        let sender = rng.random_range(0..SENDERS);
                        next_id[sender] += 1;
                        if let Some(key) = new_send(shared, tasks, rng, sender, next_id[sender], Some(slot)) {
                            *counts.entry("sends").or_default() += 1;
                            ids.push(shared.ledger.lock().unwrap().keys[key].id.clone());
                        }
                    }
                    let hold = Duration::from_millis(rng.random_range(1000..4000));
                    chaos.spawn(stall(shared.clone(), slot, ids, hold));
                }
            }
            _ => {
                if let Some(slots) = shared.cluster.disturb(rng, 1) {
                    *counts.entry("restarts").or_default() += 1;
                    let pause = Duration::from_millis(rng.random_range(0..1000));
                    chaos.spawn(restart(shared.clone(), slots, pause));
                }
            }
        }
        // Sends that got no answer are resent soon, often while their first node is still
        // frozen or being swept.
        if rng.random_bool(0.5) {
            let open = shared.ledger.lock().unwrap().open_variants();
            for &(key, v) in open.choose_multiple(rng, 3) {
                if spawn_attempt(shared, tasks, rng, key, v, None) {
                    *counts.entry("resends").or_default() += 1;
                }
            }
        }
        while tasks.try_join_next().is_some() {}
        tokio::time::sleep(Duration::from_millis(rng.random_range(30..250))).await;
    }
}

/// Resend every send that has no final answer until each has one (or `limit` passes).
async fn settle_sends(shared: &Arc<Shared>, rng: &mut StdRng, limit: Duration) {
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    loop {
        let open = shared.ledger.lock().unwrap().open_variants();
        if open.is_empty() || start.elapsed() > limit {
            break;
        }
        for (key, v) in open {
            spawn_attempt(shared, &mut tasks, rng, key, v, None);
        }
        while tasks.join_next().await.is_some() {}
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Send to every member through `slot` until it is OK'd; its timestamp.
async fn fence(shared: &Arc<Shared>, slot: usize) -> i64 {
    let (key, v) = {
        let mut ledger = shared.ledger.lock().unwrap();
        let key = ledger.new_key(0, "fence".into());
        (key, ledger.new_variant(key, (1..MEMBERS).collect()))
    };
    let start = Instant::now();
    loop {
        let channel = shared.cluster.channel(slot).expect("the fence node runs");
        let req = begin_attempt(shared, key, v);
        attempt(shared.clone(), key, v, req, slot, channel, Duration::from_secs(5)).await;
        if let Some(ts) = shared.ledger.lock().unwrap().keys[key].variants[v].ok() {
            return ts;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the fence send was never OK'd");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A fresh subscription of `m` on `slot` from the start, up to and including `until`.
async fn read_all(shared: &Arc<Shared>, m: usize, slot: usize, until: i64) -> Vec<Event> {
    let channel = shared.cluster.channel(slot).unwrap();
    let mut stream = SequencerServiceClient::new(channel)
        .subscribe(SubscribeRequest { member: member(m), after: None })
        .await
        .unwrap_or_else(|e| panic!("m{m} on seq{slot}: {e:?}"))
        .into_inner();
    let mut out: Vec<Event> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while out.last().is_none_or(|e| e.timestamp < until) {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Ok(Ok(Some(r))) => out.push(r.event.unwrap()),
            other => panic!("fresh read of m{m} on seq{slot} ended after {} events: {other:?}", out.len()),
        }
    }
    out
}

fn check_chain(what: &str, events: &[Event]) {
    for (i, e) in events.iter().enumerate() {
        let expected = if i == 0 { None } else { Some(events[i - 1].timestamp) };
        assert!(
            i == 0 || e.timestamp > events[i - 1].timestamp,
            "{what}: timestamps not increasing at {i}: {events:?}"
        );
        assert_eq!(
            e.previous_timestamp, expected,
            "{what}: previous_timestamp chain broken at event {i} (ts {})",
            e.timestamp
        );
    }
}

/// Where and at what timestamp a key was delivered: per member, (timestamp, variant if visible).
type Deliveries = HashMap<usize, Vec<(usize, i64, Option<usize>)>>;

/// Check the ledger against what every member saw (one agreed sequence per member).
fn check_contract(ledger: &Ledger, sequences: &[Vec<Event>], seed: u64) {
    let mut delivered: Deliveries = HashMap::new();
    for (m, events) in sequences.iter().enumerate() {
        let mut keys_seen = HashSet::new();
        for e in events {
            let (key, variant) = if e.sender == member(m) {
                let id = e
                    .message_id
                    .clone()
                    .unwrap_or_else(|| panic!("m{m}: its own event {} has no message id", e.timestamp));
                let key = *ledger
                    .by_id
                    .get(&(m, id.clone()))
                    .unwrap_or_else(|| panic!("m{m}: event {} for id {id} nobody sent", e.timestamp));
                (key, None)
            } else {
                assert!(e.message_id.is_none(), "m{m} sees another sender's message id: {e:?}");
                assert_eq!(e.envelopes.len(), 1, "m{m}: {e:?}");
                let (sender, id, variant) = parse_content(&e.envelopes[0].content);
                assert_eq!(member(sender), e.sender, "m{m}: event {} names the wrong sender", e.timestamp);
                let key = *ledger
                    .by_id
                    .get(&(sender, id.clone()))
                    .unwrap_or_else(|| panic!("m{m}: event {} for {sender}/{id} nobody sent", e.timestamp));
                (key, Some(variant))
            };
            assert!(e.error.is_none(), "m{m}: error event {e:?}");
            assert!(
                keys_seen.insert(key),
                "m{m}: message id {}/{} delivered twice (seed {seed})",
                ledger.keys[key].sender,
                ledger.keys[key].id
            );
            delivered.entry(key).or_default().push((m, e.timestamp, variant));
        }
    }
    for (ki, k) in ledger.keys.iter().enumerate() {
        let name = format!("{}/{}", member(k.sender), k.id);
        let oks: Vec<(usize, i64)> =
            k.variants.iter().enumerate().filter_map(|(vi, v)| v.ok().map(|ts| (vi, ts))).collect();
        for (vi, v) in k.variants.iter().enumerate() {
            for (slot, a) in &v.attempts {
                if let Answer::Ok(ts) = a {
                    assert_eq!(
                        (vi, *ts),
                        oks[0],
                        "{name}: two different OKs ({vi} at {ts} on seq{slot} vs {:?}; seed {seed})",
                        oks[0]
                    );
                }
            }
        }
        let Some(got) = delivered.get(&ki) else {
            assert!(oks.is_empty(), "{name}: OK'd at {:?} but delivered to nobody (seed {seed})", oks[0]);
            let refused = k.variants.iter().any(|v| v.attempts.iter().any(|(_, a)| *a == Answer::AlreadyExists));
            assert!(!refused, "{name}: refused as ALREADY_EXISTS but nothing was sequenced under the id (seed {seed})");
            continue;
        };
        let ts = got[0].1;
        assert!(got.iter().all(|g| g.1 == ts), "{name}: delivered at different timestamps: {got:?} (seed {seed})");
        let variants: HashSet<usize> = got.iter().filter_map(|g| g.2).collect();
        assert!(variants.len() <= 1, "{name}: different contents delivered: {got:?} (seed {seed})");
        // Every key has at least one recipient besides the sender, who sees the content.
        let Some(&vi) = variants.iter().next() else {
            panic!("{name}: delivered only to its sender: {got:?} (seed {seed})")
        };
        let v = &k.variants[vi];
        let mut expected: Vec<usize> = v.recipients.iter().copied().chain([k.sender]).collect();
        expected.sort_unstable();
        let mut members: Vec<usize> = got.iter().map(|g| g.0).collect();
        members.sort_unstable();
        assert_eq!(members, expected, "{name}: delivered to the wrong members (variant {vi}; seed {seed})");
        if let Some(&(ok_v, ok_ts)) = oks.first() {
            assert_eq!(
                (vi, ts),
                (ok_v, ok_ts),
                "{name}: OK'd as variant {ok_v} at {ok_ts}, delivered variant {vi} at {ts} (seed {seed})"
            );
        }
        // No event out of nowhere: its content was OK'd or had an unknown outcome.
        assert!(
            v.attempts.iter().any(|(_, a)| matches!(a, Answer::Ok(_) | Answer::Unknown)),
            "{name}: variant {vi} delivered at {ts} though every attempt was refused: {:?} (seed {seed})",
            v.attempts
        );
        assert!(
            !v.attempts.iter().any(|(_, a)| *a == Answer::AlreadyExists),
            "{name}: variant {vi} delivered at {ts} though it was refused as ALREADY_EXISTS: {:?} (seed {seed})",
            v.attempts
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_survive_cuts_freezes_restarts_and_skewed_clocks_exactly_once_in_one_order() {
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    }
    let seed: u64 = std::env::var("SYNCLINE_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("SYNCLINE_TEST_SEED={seed}");
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);

    // One node behind by 0.3–2 s; maybe another ahead by 0.3–1.5 s.
    let mut offsets = vec![0i64; NODES];
    offsets[1] = -rng.random_range(300_000..2_000_000);
    if rng.random_bool(0.5) {
        offsets[2] = rng.random_range(300_000..1_500_000);
    }
    println!("clock offsets (µs): {offsets:?}");

    let tdb = fresh_database().await;
    let mut proxies = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..NODES {
        let p = FaultProxy::start(tdb.server_addr()).await;
        urls.push(tdb.url_via(p.addr()));
        proxies.push(p);
    }
    let shared = Arc::new(Shared {
        cluster: Cluster {
            direct_url: tdb.url.clone(),
            urls,
            proxies,
            offsets,
            nodes: (0..NODES).map(|_| tokio::sync::Mutex::new(None)).collect(),
            channels: Mutex::new(vec![None; NODES]),
            disturbed: Mutex::new(HashSet::new()),
        },
        ledger: Mutex::new(Ledger::default()),
        stalled_claims: AtomicUsize::new(0),
        in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
    });
    // Start them all at once: they compete for the indexes too.
    futures_util::future::join_all((0..NODES).map(|s| shared.cluster.start_node(s))).await;
    for s in 0..NODES {
        shared.cluster.wait_serving(s, Duration::from_secs(30)).await;
    }
    let mut admin = SequencerAdminServiceClient::new(shared.cluster.channel(0).unwrap());
    for m in 0..MEMBERS {
        admin.register_member(RegisterMemberRequest { member: member(m) }).await.unwrap();
    }

    // Subscribers: each member on different home nodes.
    let done = CancellationToken::new();
    let mut subscribers = Vec::new();
    let mut sub_tasks = JoinSet::new();
    for m in 0..MEMBERS {
        let homes: Vec<usize> =
            (0..NODES).collect::<Vec<_>>().choose_multiple(&mut rng, SUBSCRIBERS_PER_MEMBER).copied().collect();
        for home in homes {
            let seen = Arc::new(Mutex::new(Seen::default()));
            let sub_seed = rng.random();
            sub_tasks.spawn(subscriber(shared.clone(), m, home, sub_seed, seen.clone(), done.clone()));
            subscribers.push((m, home, seen));
        }
    }

    let mut tasks = JoinSet::new();
    let mut chaos = JoinSet::new();
    let mut counts = BTreeMap::new();
    drive(&shared, &mut rng, &mut tasks, &mut chaos, &mut counts).await;
    while chaos.join_next().await.transpose().unwrap().is_some() {}
    while tasks.join_next().await.transpose().unwrap().is_some() {}
    println!("schedule done after {:?}: {counts:?}", started.elapsed());

    // Everything healthy again: settle every send that got no final answer.
    for s in 0..NODES {
        shared.cluster.wait_serving(s, Duration::from_secs(30)).await;
    }
    settle_sends(&shared, &mut rng, Duration::from_secs(15)).await;
    let still_open = shared.ledger.lock().unwrap().open_variants().len();
    // A fence from the node with the fastest clock, after everything else: every event is
    // below it, so a subscriber that reached it has seen all it will ever see below it.
    let ahead = (0..NODES).max_by_key(|&s| shared.cluster.offsets[s]).unwrap();
    let fence_ts = fence(&shared, ahead).await;
    let start = Instant::now();
    loop {
        let behind: Vec<(usize, usize, Option<i64>)> = subscribers
            .iter()
            .filter_map(|(m, home, seen)| {
                let last = seen.lock().unwrap().events.last().map(|e| e.timestamp);
                (last < Some(fence_ts)).then_some((*m, *home, last))
            })
            .collect();
        if behind.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "subscribers (member, home, last) never reached the fence {fence_ts}: {behind:?} (seed {seed})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done.cancel();
    while sub_tasks.join_next().await.is_some() {}

    // Every subscriber of a member saw the same sequence, with an intact chain.
    let mut sequences: Vec<Vec<Event>> = vec![Vec::new(); MEMBERS];
    let mut stream_stats = (0, 0, 0);
    for (m, home, seen) in &subscribers {
        let seen = seen.lock().unwrap();
        stream_stats.0 += seen.streams;
        stream_stats.1 += seen.ended_ok;
        stream_stats.2 += seen.ended_err;
        let events: Vec<Event> = seen.events.iter().filter(|e| e.timestamp <= fence_ts).cloned().collect();
        let what = format!("m{m} (home seq{home}, seed {seed})");
        check_chain(&what, &events);
        if sequences[*m].is_empty() {
            sequences[*m] = events;
        } else {
            assert_sequences_equal(&what, &sequences[*m], &events);
        }
    }
    // So does a fresh subscription on every node.
    for (m, expected) in sequences.iter().enumerate() {
        for slot in 0..NODES {
            let fresh = read_all(&shared, m, slot, fence_ts).await;
            let what = format!("fresh read of m{m} on seq{slot} (seed {seed})");
            check_chain(&what, &fresh);
            assert_sequences_equal(&what, expected, &fresh);
        }
    }
    {
        let ledger = shared.ledger.lock().unwrap();
        check_contract(&ledger, &sequences, seed);
        let delivered: usize = sequences.iter().map(Vec::len).sum();
        let reuses_won = ledger.keys.iter().filter(|k| k.variants.iter().skip(1).any(|v| v.ok().is_some())).count();
        let stalled = shared.stalled_claims.load(Ordering::Relaxed);
        let (streams, ended_ok, ended_err) = stream_stats;
        println!(
            "answers {:?}; {reuses_won} reused ids won by the later content; {stalled} claims stalled uncovered",
            ledger.codes
        );
        println!("{still_open} sends without a final answer; {delivered} deliveries; {streams} streams ({ended_ok} ended OK, {ended_err} with an error)");
        assert_eq!(ended_ok, 0, "a stream the server ended (not at the client's request) ended with OK");
        println!("{:?} in all", started.elapsed());
        assert!(ledger.unexpected.is_empty(), "unexpected answers: {:?} (seed {seed})", ledger.unexpected);
    }
    for s in 0..NODES {
        shared.cluster.stop_node(s).await;
    }
}

fn assert_sequences_equal(what: &str, expected: &[Event], got: &[Event]) {
    if expected == got {
        return;
    }
    let at = expected.iter().zip(got).position(|(a, b)| a != b).unwrap_or(expected.len().min(got.len()));
    panic!(
        "{what}: diverges from another subscriber of the member at position {at} (lengths {} vs {}): {:?} vs {:?}",
        expected.len(),
        got.len(),
        expected.get(at),
        got.get(at)
    );
}
