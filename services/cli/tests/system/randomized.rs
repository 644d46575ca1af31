//! The randomized test of the participant issue, all real `syncline daemon` processes: two
//! sequencers on one database, a mediator, participant p1 (alice) and p2 (bob) as two replicas
//! each. Several applications submit random creates, transfers and archives through the ledger
//! API of p1 (failing over between its replicas on UNAVAILABLE, resubmitting the same command
//! id after any answer that is not definite) while a seeded schedule kills -9 and restarts
//! participant leaders and sequencers (never both sequencers at once). Afterwards: one final
//! completion per command id, agreeing with what the application was told; no contract
//! archived twice; offsets gap-free on both participants; both participants' active contracts
//! agree.
//!
//! The seed is printed; `SYNCLINE_TEST_SEED=<n>` replays the kill schedule (the applications'
//! choices depend on timing too, so a replay is close, not identical).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use syncline_proto::ledger as pb;
use syncline_proto::ledger::command_completion_service_client::CommandCompletionServiceClient;
use syncline_proto::ledger::command_service_client::CommandServiceClient;
use syncline_proto::ledger::party_management_service_client::PartyManagementServiceClient;
use syncline_proto::ledger::state_service_client::StateServiceClient;
use syncline_proto::ledger::update_service_client::UpdateServiceClient;
use syncline_testkit::{fresh_database, http_status, wait_for, Kind, NodeSpec, TempDir, TestDb, Topology};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::support::{seed, syncline_bin};
use crate::synchronizer::{admin, is_active, sequencer_section, wait_node, MEDIATOR};

/// Concurrent applications.
const APPS: usize = 3;
/// How long the kill schedule runs.
const CHAOS: Duration = Duration::from_secs(25);
/// The applications' user id.
const USER: &str = "chaos";

/// Replica `name` of participant `member` on database `db`, with every sequencer's endpoint,
/// its token in `dir`.
fn replica(name: &str, member: &str, db: &str, seqs: &[&NodeSpec], dir: &std::path::Path) -> NodeSpec {
    NodeSpec::new(Kind::Participant, name).with(&format!(
        "member = \"{member}\"\nstorage = {{ url = \"{db}\" }}\n{}\nparticipant = {{ time_proof_delay = \"50ms\" }}",
        sequencer_section(seqs, dir, member)
    ))
}

/// A lazily connecting channel (reconnects by itself after its node restarts).
fn channel(url: &str) -> Channel {
    Channel::from_shared(url.to_string()).unwrap().connect_timeout(Duration::from_secs(1)).connect_lazy()
}

/// The ledger API of one participant through all its replicas: a call that answers
/// UNAVAILABLE (a passive replica, a dead process) moves on to the next endpoint.
#[derive(Clone)]
struct Ledger {
    channels: Arc<Vec<Channel>>,
    current: Arc<AtomicUsize>,
}

impl Ledger {
    fn new(replicas: &[NodeSpec]) -> Ledger {
        let channels = replicas.iter().map(|r| channel(&r.public_url())).collect();
        Ledger { channels: Arc::new(channels), current: Arc::default() }
    }

    /// The endpoint in use.
    fn channel(&self) -> Channel {
        self.channels[self.current.load(Ordering::SeqCst) % self.channels.len()].clone()
    }

    /// After UNAVAILABLE from the endpoint in use: the next one.
    fn unavailable(&self) {
        self.current.fetch_add(1, Ordering::SeqCst);
    }

    /// `call` on the endpoint in use, moving on after UNAVAILABLE, for up to `limit`.
    async fn call<T, F, Fut>(&self, limit: Duration, call: F) -> Result<T, Status>
    where
        F: Fn(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let start = Instant::now();
        loop {
            match call(self.channel()).await {
                Err(e) if e.code() == Code::Unavailable && start.elapsed() < limit => {
                    self.unavailable();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
    }
}

/// How an application reads an answer (Canton's rule: an error with RetryInfo may succeed
/// when resubmitted, one without is definite, one without an error id left the outcome
/// unknown).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// Accepted: now (with its transaction) or earlier (DUPLICATE_COMMAND).
    Accepted,
    /// A definite rejection with this error id.
    Rejected(String),
}

/// A command of an application: its id and what it does.
struct Cmd {
    id: String,
    command: pb::command::Command,
}

fn iou(owner: &str, amount: u32) -> pb::CreateCommand {
    pb::CreateCommand {
        template_id: "Iou".into(),
        create_arguments: format!(r#"{{"issuer":"alice","owner":"{owner}","amount":{amount}}}"#),
        signatories: vec!["alice".into()],
        observers: vec!["bob".into()],
    }
}

/// What one application did: each command id's final outcome, and the command ids that saw an
/// answer of unknown outcome or a retryable rejection on the way (so a rejected completion
/// before the final one is expected).
#[derive(Default, Debug)]
struct AppLog {
    outcomes: BTreeMap<String, Outcome>,
    retried: BTreeSet<String>,
    answers: BTreeMap<String, usize>,
}

/// Submit `cmd` until a definite answer, resubmitting the same command id after any other.
async fn until_definite(ledger: &Ledger, cmd: &Cmd, log: &mut AppLog) -> (Outcome, Option<pb::Transaction>) {
    let start = Instant::now();
    loop {
        let commands = pb::Commands {
            user_id: USER.into(),
            command_id: cmd.id.clone(),
            act_as: vec!["alice".into()],
            commands: vec![pb::Command { command: Some(cmd.command.clone()) }],
            ..Default::default()
        };
        let answer = ledger
            .call(Duration::from_secs(5), |ch| {
                let mut r =
                    tonic::Request::new(pb::SubmitAndWaitForTransactionRequest { commands: Some(commands.clone()) });
                r.set_timeout(Duration::from_secs(10));
                async move { CommandServiceClient::new(ch).submit_and_wait_for_transaction(r).await }
            })
            .await;
        let why = match answer {
            Ok(r) => return (Outcome::Accepted, r.into_inner().transaction),
            Err(s) => match s.get_details_error_info() {
                Some(info) if info.reason == "DUPLICATE_COMMAND" => return (Outcome::Accepted, None),
                Some(info) if s.get_details_retry_info().is_none() => return (Outcome::Rejected(info.reason), None),
                Some(info) => info.reason,
                None => format!("{:?}", s.code()),
            },
        };
        log.retried.insert(cmd.id.clone());
        *log.answers.entry(why.clone()).or_default() += 1;
        assert!(start.elapsed() < Duration::from_secs(45), "{} got no definite answer in 45 s (last: {why})", cmd.id);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Application `k`: random creates, transfers (a consuming exercise creating bob's IOU) and
/// archives of the contracts it knows, until `stop`.
async fn application(k: usize, seed: u64, ledger: Ledger, stop: Arc<AtomicBool>) -> AppLog {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(k as u64 + 1));
    let mut log = AppLog::default();
    let mut mine: Vec<String> = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let id = format!("app{k}-{n:04}");
        let amount = rng.random_range(1..1000);
        let cmd = if mine.is_empty() || rng.random_bool(0.4) {
            Cmd { id, command: pb::command::Command::Create(iou("alice", amount)) }
        } else {
            let cid = mine.swap_remove(rng.random_range(0..mine.len()));
            let command = if rng.random_bool(0.6) {
                pb::command::Command::Exercise(pb::ExerciseCommand {
                    contract_id: cid,
                    choice: "Transfer".into(),
                    consuming: true,
                    creates: vec![iou("bob", amount)],
                })
            } else {
                pb::command::Command::Archive(pb::ArchiveCommand { contract_id: cid })
            };
            Cmd { id, command }
        };
        let (outcome, tx) = until_definite(&ledger, &cmd, &mut log).await;
        // Contracts created by an acceptance seen with its transaction are known (a
        // DUPLICATE_COMMAND answer carries none: those are simply not used again).
        for e in tx.iter().flat_map(|t| &t.events) {
            if let Some(pb::event::Event::Created(c)) = &e.event {
                mine.push(c.contract_id.clone());
            }
        }
        log.outcomes.insert(cmd.id, outcome);
    }
    log
}

/// Everything a participant serves, read from offset 0 up to its ledger end.
#[derive(Debug)]
struct Served {
    end: i64,
    completions: Vec<pb::Completion>,
    transactions: Vec<pb::Transaction>,
    /// Active contracts of alice and bob by id.
    acs: BTreeMap<String, pb::CreatedEvent>,
}

async fn served(ledger: &Ledger) -> Served {
    let limit = Duration::from_secs(20);
    let end = ledger
        .call(limit, |ch| async move { StateServiceClient::new(ch).get_ledger_end(pb::GetLedgerEndRequest {}).await })
        .await
        .expect("ledger end")
        .into_inner()
        .offset;
    let r = pb::CompletionStreamRequest { user_id: USER.into(), parties: vec!["alice".into()], begin_exclusive: 0 };
    let mut stream = ledger
        .call(limit, |ch| {
            let r = r.clone();
            async move { CommandCompletionServiceClient::new(ch).completion_stream(r).await }
        })
        .await
        .expect("completion stream")
        .into_inner();
    let mut completions = Vec::new();
    use pb::completion_stream_response::CompletionResponse as R;
    // A participant without completions of this user sends only checkpoints (or nothing).
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(3), stream.next()).await {
        match item.expect("a completion").completion_response.expect("a response") {
            R::Completion(c) if c.offset >= end => {
                completions.push(c);
                break;
            }
            R::Completion(c) => completions.push(c),
            R::OffsetCheckpoint(cp) if cp.offset >= end => break,
            R::OffsetCheckpoint(_) => {}
        }
    }
    completions.retain(|c| c.offset <= end);
    let filter = Some(pb::TransactionFilter { parties: vec!["alice".into(), "bob".into()] });
    let r = pb::GetUpdatesRequest { begin_exclusive: 0, end_inclusive: Some(end), filter: filter.clone() };
    let stream = ledger
        .call(limit, |ch| {
            let r = r.clone();
            async move { UpdateServiceClient::new(ch).get_updates(r).await }
        })
        .await
        .expect("updates")
        .into_inner();
    let items: Vec<_> = tokio::time::timeout(limit, stream.collect()).await.expect("updates in time");
    let transactions = (items.into_iter())
        .map(|u| match u.expect("an update").update {
            Some(pb::get_updates_response::Update::Transaction(t)) => t,
            None => panic!("an empty update"),
        })
        .collect();
    let r = pb::GetActiveContractsRequest { filter, active_at_offset: end };
    let stream = ledger
        .call(limit, |ch| {
            let r = r.clone();
            async move { StateServiceClient::new(ch).get_active_contracts(r).await }
        })
        .await
        .expect("active contracts")
        .into_inner();
    let items: Vec<_> = tokio::time::timeout(limit, stream.collect()).await.expect("active contracts in time");
    let acs = (items.into_iter())
        .map(|c| c.expect("a contract").created_event.expect("a created event"))
        .map(|c| (c.contract_id.clone(), c))
        .collect();
    Served { end, completions, transactions, acs }
}

/// The processes of the test.
struct Chaos {
    t: Topology,
    seqs: [NodeSpec; 2],
    p1: [NodeSpec; 2],
    p2: [NodeSpec; 2],
    _dir: TempDir,
    _dbs: Vec<TestDb>,
}

impl Chaos {
    async fn start() -> Chaos {
        let dbs = vec![fresh_database().await, fresh_database().await, fresh_database().await, fresh_database().await];
        let dir = TempDir::new("syncline-randomized");
        let mut t = Topology::new(&syncline_bin(), dir.path(), &dbs[0].url);
        let seqs = [t.add(NodeSpec::new(Kind::Sequencer, "seq1")), t.add(NodeSpec::new(Kind::Sequencer, "seq2"))];
        let both = [&seqs[0], &seqs[1]];
        let med = t.add(NodeSpec::new(Kind::Mediator, "med1").with(&format!(
            "member = \"{MEDIATOR}\"\nstorage = {{ url = \"{}\" }}\n{}\n\
             mediator = {{ time_proof_delay = \"50ms\" }}",
            dbs[1].url,
            sequencer_section(&both, dir.path(), MEDIATOR)
        )));
        let p1 = [
            t.add(replica("p1a", "p1", &dbs[2].url, &both, dir.path())),
            t.add(replica("p1b", "p1", &dbs[2].url, &both, dir.path())),
        ];
        let p2 = [
            t.add(replica("p2a", "p2", &dbs[3].url, &both, dir.path())),
            t.add(replica("p2b", "p2", &dbs[3].url, &both, dir.path())),
        ];
        let remote = t.remote_config();
        for s in &seqs {
            t.start(&s.name);
        }
        for s in &seqs {
            wait_healthy(s).await;
        }
        t.start("med1");
        wait_node("med1 active", &med, true).await;
        let (ok, out) = admin(&remote, &["bootstrap", "--mediator", MEDIATOR, "--confirmation-response-timeout", "5s"]);
        assert!(ok, "bootstrap:\n{out}");
        for p in ["p1", "p2"] {
            let (ok, out) = admin(&remote, &["join-participant", p]);
            assert!(ok && out.contains("accepted"), "join-participant {p}:\n{out}");
        }
        for p in [&p1, &p2] {
            t.start(&p[0].name);
            wait_node(&format!("{} active", p[0].name), &p[0], true).await;
            t.start(&p[1].name);
            wait_node(&format!("{} live", p[1].name), &p[1], false).await;
        }
        Chaos { t, seqs, p1, p2, _dir: dir, _dbs: dbs }
    }
}

async fn wait_healthy(s: &NodeSpec) {
    let h = s.health;
    wait_for(Duration::from_secs(60), &format!("{} healthy", s.name), || async move {
        http_status(h, "/health").await == Some(200)
    })
    .await;
}

/// Allocate `party` through `ledger` (an allocation whose answer was lost is there already).
async fn allocate(ledger: &Ledger, party: &str) {
    let ledger = ledger.clone();
    wait_for(Duration::from_secs(15), &format!("{party} allocated"), || {
        let ledger = ledger.clone();
        async move {
            let r = ledger
                .call(Duration::from_secs(2), |ch| async move {
                    let r = pb::AllocatePartyRequest { party_id_hint: party.into() };
                    PartyManagementServiceClient::new(ch).allocate_party(r).await
                })
                .await;
            r.is_ok() || r.is_err_and(|e| e.message().starts_with("PARTY_ALREADY_EXISTS"))
        }
    })
    .await;
}

/// The replica of `replicas` that leads now, if one does.
async fn leader(replicas: &[NodeSpec; 2]) -> Option<usize> {
    for (i, r) in replicas.iter().enumerate() {
        if is_active(r).await {
            return Some(i);
        }
    }
    None
}

/// Kill -9 and restart participant leaders and sequencers at random for [`CHAOS`]; the
/// schedule as it happened.
async fn chaos(c: &mut Chaos, rng: &mut StdRng) -> Vec<String> {
    let mut done = Vec::new();
    let start = Instant::now();
    while start.elapsed() < CHAOS {
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..2500))).await;
        let at = start.elapsed().as_millis();
        let down = Duration::from_millis(rng.random_range(100..1500));
        match rng.random_range(0..3) {
            // One sequencer: its peer stays up (each is restarted and healthy before the next kill).
            0 => {
                let s = c.seqs[rng.random_range(0..2)].clone();
                c.t.kill9(&s.name);
                tokio::time::sleep(down).await;
                c.t.start(&s.name);
                wait_healthy(&s).await;
                done.push(format!("{at}ms kill -9 {} ({}ms down)", s.name, down.as_millis()));
            }
            p => {
                let replicas = if p == 1 { c.p1.clone() } else { c.p2.clone() };
                let Some(i) = leader(&replicas).await else {
                    done.push(format!("{at}ms p{p}: no leader to kill (takeover under way)"));
                    continue;
                };
                let r = &replicas[i];
                c.t.kill9(&r.name);
                tokio::time::sleep(down).await;
                c.t.start(&r.name);
                wait_node(&format!("{} live", r.name), r, false).await;
                done.push(format!("{at}ms kill -9 {} (leader of p{p}, {}ms down)", r.name, down.as_millis()));
            }
        }
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_applications_with_kill9_of_participant_leaders_and_sequencers() {
    let began = Instant::now();
    let seed = seed();
    eprintln!("randomized test seed: {seed} (replay with SYNCLINE_TEST_SEED={seed})");
    let mut c = Chaos::start().await;
    let (p1, p2) = (Ledger::new(&c.p1), Ledger::new(&c.p2));
    allocate(&p1, "alice").await;
    allocate(&p2, "bob").await;
    for (ledger, who) in [(&p1, "p1"), (&p2, "p2")] {
        let ledger = ledger.clone();
        wait_for(Duration::from_secs(15), &format!("{who} knows alice and bob"), || {
            let ledger = ledger.clone();
            async move {
                let known = (ledger.call(Duration::from_secs(2), |ch| async move {
                    PartyManagementServiceClient::new(ch).list_known_parties(pb::ListKnownPartiesRequest {}).await
                }))
                .await;
                known.is_ok_and(|k| k.into_inner().party_details.len() >= 2)
            }
        })
        .await;
    }
    let started = began.elapsed();

    let stop = Arc::new(AtomicBool::new(false));
    let apps: Vec<_> = (0..APPS).map(|k| tokio::spawn(application(k, seed, p1.clone(), stop.clone()))).collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let schedule = chaos(&mut c, &mut rng).await;
    eprintln!("kill schedule (seed {seed}):\n  {}", schedule.join("\n  "));
    // Settled: each participant has a leader again, then the applications finish their
    // current command.
    for (replicas, who) in [(&c.p1, "p1"), (&c.p2, "p2")] {
        let replicas = replicas.clone();
        wait_for(Duration::from_secs(20), &format!("{who} has a leader"), || {
            let replicas = replicas.clone();
            async move { leader(&replicas).await.is_some() }
        })
        .await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut logs = Vec::new();
    for app in apps {
        logs.push(tokio::time::timeout(Duration::from_secs(50), app).await.expect("an application finished").unwrap());
    }
    let outcomes: BTreeMap<&String, &Outcome> = logs.iter().flat_map(|l| &l.outcomes).collect();
    let retried: BTreeSet<&String> = logs.iter().flat_map(|l| &l.retried).collect();
    let mut answers = BTreeMap::<&String, usize>::new();
    for (why, n) in logs.iter().flat_map(|l| &l.answers) {
        *answers.entry(why).or_default() += n;
    }
    let rejected: BTreeMap<_, _> = outcomes.iter().filter(|(_, o)| matches!(o, Outcome::Rejected(_))).collect();
    eprintln!(
        "{} commands ({} definitely rejected: {rejected:?}); {} resubmitted after: {answers:?}",
        outcomes.len(),
        rejected.len(),
        retried.len()
    );
    assert!(outcomes.len() >= 10, "the applications hardly ran: {outcomes:?}");

    // p2 has processed everything once its transactions match p1's.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (s1, s2) = loop {
        let (s1, s2) = (served(&p1).await, served(&p2).await);
        let ids = |s: &Served| s.transactions.iter().map(|t| t.update_id.clone()).collect::<BTreeSet<_>>();
        if ids(&s1) == ids(&s2) || Instant::now() > deadline {
            break (s1, s2);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // Every command id: exactly one accepted completion when the application was told
    // accepted, none when it was told a definite rejection (then that rejection is the last
    // completion); earlier rejected completions only of commands resubmitted after an answer
    // that was not definite.
    let mut by_id = BTreeMap::<&str, Vec<&pb::Completion>>::new();
    for c in &s1.completions {
        by_id.entry(&c.command_id).or_default().push(c);
    }
    let unknown: Vec<_> = by_id.keys().filter(|id| !outcomes.contains_key(&id.to_string())).collect();
    assert!(unknown.is_empty(), "completions of commands never submitted: {unknown:?}");
    let code = |c: &pb::Completion| c.status.as_ref().map_or(0, |s| s.code);
    let mut earlier_rejections = 0;
    for (id, outcome) in &outcomes {
        let cs = by_id.get(id.as_str()).cloned().unwrap_or_default();
        let accepted = cs.iter().filter(|c| code(c) == 0).count();
        match outcome {
            Outcome::Accepted => assert_eq!(accepted, 1, "{id}: told accepted, completions {cs:?}"),
            Outcome::Rejected(why) => {
                assert_eq!(accepted, 0, "{id}: told {why}, completions {cs:?}");
                let last = cs.last().unwrap_or_else(|| panic!("{id}: told {why}, no completion"));
                assert_eq!(last.status.as_ref().map(|s| s.error_id.as_str()), Some(why.as_str()), "{id}: {cs:?}");
            }
        }
        // The others: rejections that allowed resubmitting, of a command that was resubmitted.
        let others: Vec<_> = cs.iter().filter(|c| code(c) != 0).take(cs.len() - 1).collect();
        assert!(
            others.is_empty() || retried.contains(id),
            "{id}: {} completions without a resubmission: {cs:?}",
            cs.len()
        );
        assert!(
            others.iter().all(|c| c.status.as_ref().is_some_and(|s| s.retryable)),
            "{id}: definite rejection, then resubmitted: {cs:?}"
        );
        earlier_rejections += cs.len() - 1;
    }

    // Offsets: on p1 every offset 1..=end has exactly one completion, each accepted one at
    // its transaction's offset; on p2 (which submits nothing) every offset is a transaction.
    let offsets: Vec<i64> = s1.completions.iter().map(|c| c.offset).collect();
    assert_eq!(offsets, (1..=s1.end).collect::<Vec<_>>(), "p1's completion offsets are not 1..=ledger end");
    let accepted_at: BTreeMap<i64, &str> =
        s1.completions.iter().filter(|c| code(c) == 0).map(|c| (c.offset, c.update_id.as_str())).collect();
    let tx_at: BTreeMap<i64, &str> = s1.transactions.iter().map(|t| (t.offset, t.update_id.as_str())).collect();
    assert_eq!(tx_at.len(), s1.transactions.len(), "two transactions at one offset of p1");
    assert_eq!(tx_at, accepted_at, "p1's transactions are not exactly its accepted completions");
    let offsets: Vec<i64> = s2.transactions.iter().map(|t| t.offset).collect();
    assert_eq!(offsets, (1..=s2.end).collect::<Vec<_>>(), "p2's transaction offsets are not 1..=ledger end");

    // The same transactions on both; no contract created or archived twice.
    let ids = |s: &Served| s.transactions.iter().map(|t| t.update_id.clone()).collect::<BTreeSet<_>>();
    assert_eq!(ids(&s1), ids(&s2), "the participants saw different transactions");
    for (s, who) in [(&s1, "p1"), (&s2, "p2")] {
        let (mut created, mut archived) = (BTreeMap::<&str, usize>::new(), BTreeMap::<&str, usize>::new());
        for e in s.transactions.iter().flat_map(|t| &t.events) {
            match &e.event {
                Some(pb::event::Event::Created(c)) => *created.entry(&c.contract_id).or_default() += 1,
                Some(pb::event::Event::Archived(a)) => *archived.entry(&a.contract_id).or_default() += 1,
                None => panic!("an empty event at {who}"),
            }
        }
        let twice: Vec<_> = created.iter().chain(&archived).filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "{who}: contracts created or archived twice: {twice:?}");
        let orphan: Vec<_> = archived.keys().filter(|id| !created.contains_key(*id)).collect();
        assert!(orphan.is_empty(), "{who}: archived but never created: {orphan:?}");
        let active: BTreeSet<&str> = created.keys().filter(|id| !archived.contains_key(*id)).copied().collect();
        assert_eq!(active, s.acs.keys().map(String::as_str).collect(), "{who}: the ACS is not creates minus archives");
    }

    // Both participants' active contracts agree on every contract of alice and bob.
    let shared = |s: &Served| -> BTreeMap<String, (String, String, Vec<String>, Vec<String>)> {
        (s.acs.values())
            .filter(|c| {
                let stakeholders: BTreeSet<&str> =
                    c.signatories.iter().chain(&c.observers).map(String::as_str).collect();
                stakeholders.contains("alice") && stakeholders.contains("bob")
            })
            .map(|c| {
                let v = (c.template_id.clone(), c.create_arguments.clone(), c.signatories.clone(), c.observers.clone());
                (c.contract_id.clone(), v)
            })
            .collect()
    };
    assert_eq!(shared(&s1), shared(&s2), "p1 and p2 disagree on the contracts alice and bob share");
    eprintln!(
        "seed {seed}: set-up {started:?}, {} transactions, {} completions ({earlier_rejections} rejected before a \
         resubmission), {} active contracts, p1 end {}, p2 end {}; whole test {:?}",
        s1.transactions.len(),
        s1.completions.len(),
        s1.acs.len(),
        s1.end,
        s2.end,
        began.elapsed()
    );
    assert!(began.elapsed() < Duration::from_secs(90), "the test took {:?}", began.elapsed());
}
