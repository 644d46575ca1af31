//! `syncline bench`, participant phases, all `syncline daemon` processes: a sequencer and a
//! mediator on the bench database, participant p1 as two replicas on a database of its own and
//! p2 on another. First submit-and-wait latency and commands/s through both participants
//! (each command creates a contract the other participant's party observes); then takeovers:
//! each run kills p1's leading replica with SIGKILL and submits-and-waits on the standby until
//! a command succeeds there; the killed replica is restarted as the next standby.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use syncline_coordination::db::{self, SessionKind};
use syncline_coordination::DbConfig;
use syncline_embedded_pg::free_addr;
use syncline_proto::admin::node_admin_service_client::NodeAdminServiceClient;
use syncline_proto::admin::SetPassiveRequest;
use syncline_proto::ledger as pb;
use syncline_proto::ledger::command_service_client::CommandServiceClient;
use syncline_proto::ledger::party_management_service_client::PartyManagementServiceClient;
use syncline_protocol::messages::{
    self, Mapping, MediatorState, Message, Operation, ParticipantJoin, TopologyTransaction,
};
use syncline_protocol::topology::{store, MappingKey, Outcome};
use syncline_sequencer_client::now_micros;
use tonic::transport::Channel;

use crate::bench_mediator::{wait_waiting, Takeovers};
use crate::procs::{admin_of, healthy, wait_healthy, Node};

/// Submit-and-wait through two participants.
pub struct Throughput {
    /// Commands accepted per second.
    pub commands_per_sec: f64,
    /// Latency quantiles (ms).
    pub p50_ms: f64,
    /// 99th percentile (ms).
    pub p99_ms: f64,
    /// Concurrent clients.
    pub clients: usize,
}

/// What the participant phases measured.
pub struct Participants {
    /// Submit-and-wait through both participants.
    pub throughput: Throughput,
    /// Kill → first successful submit-and-wait on the new leader.
    pub takeovers: Takeovers,
    /// `set-passive` → first successful submit-and-wait on the standby that took over.
    pub hand_overs: Takeovers,
    /// Resident memory of each node kind right after the submit-and-wait phase.
    pub memory: Vec<Memory>,
}

/// A node process's resident memory (from `/proc/<pid>/status`).
pub struct Memory {
    /// Node kind.
    pub kind: &'static str,
    /// Resident now (MB).
    pub rss_mb: f64,
    /// Peak resident (MB).
    pub peak_mb: f64,
}

impl Memory {
    /// Node `n`'s figures, if its process runs on this machine.
    fn of(kind: &'static str, n: &Node) -> Option<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", n.pid()?)).ok()?;
        let kb = |key: &str| -> Option<f64> {
            let line = status.lines().find(|l| l.starts_with(key))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        };
        Some(Memory { kind, rss_mb: kb("VmRSS:")? / 1024.0, peak_mb: kb("VmHWM:")? / 1024.0 })
    }
}

/// Run both phases against the database at `url` (participant databases are created beside
/// it): `phase` of submit-and-wait with `clients` clients, then `runs` takeovers.
pub async fn run(url: &str, phase: Duration, clients: usize, runs: usize) -> Result<Participants> {
    let dir = std::env::temp_dir().join(format!("syncline-bench-participant-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let storage = dir.join("storage.toml");
    std::fs::write(&storage, format!("[storage]\nurl = \"{url}\"\n"))?;
    let run = format!("{:08x}", rand::random::<u32>());
    let (db1, db2) = (
        database_beside(url, &format!("bench_p1_{run}")).await?,
        database_beside(url, &format!("bench_p2_{run}")).await?,
    );
    let mut seq = Node::configure(&dir, &format!("bench-pseq-{run}"), None)?;
    seq.spawn(&dir, &storage)?;
    let mediator = format!("bench-pmediator-{run}");
    let (m1, m2) = (format!("bench-p1-{run}"), format!("bench-p2-{run}"));
    let mut nodes = vec![
        node(&dir, "mediators", &format!("bench-pmed-{run}"), &mediator, None, &seq)?,
        node(&dir, "participants", &format!("bench-p1a-{run}"), &m1, Some(&db1), &seq)?,
        node(&dir, "participants", &format!("bench-p1b-{run}"), &m1, Some(&db1), &seq)?,
        node(&dir, "participants", &format!("bench-p2-{run}"), &m2, Some(&db2), &seq)?,
    ];
    let result = async {
        wait_healthy(&mut seq, Duration::from_secs(60)).await?;
        bootstrap(url, &seq, &mut nodes, &dir, &storage, &mediator, &[&m1, &m2]).await?;
        let (alice, bob) = (format!("alice-{run}"), format!("bob-{run}"));
        allocate(&nodes[1], &alice).await?;
        allocate(&nodes[3], &bob).await?;
        // Both parties known at both participants (each learns the other's through its own
        // subscription).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let throughput = submit_and_wait_phase(&nodes[1], &nodes[3], &alice, &bob, phase, clients).await?;
        let memory = [("sequencer", &seq), ("mediator", &nodes[0]), ("participant", &nodes[1])]
            .into_iter()
            .filter_map(|(kind, n)| Memory::of(kind, n))
            .collect();
        let takeovers = takeovers(&DbConfig::new(&db1), &dir, &storage, &mut nodes[1..3], &alice, &bob, runs).await?;
        let hand_overs = hand_overs(&DbConfig::new(&db1), &nodes[1..3], &alice, &bob, runs).await?;
        anyhow::Ok(Participants { throughput, takeovers, hand_overs, memory })
    }
    .await;
    for n in nodes.iter_mut().rev() {
        n.terminate();
    }
    seq.terminate();
    match &result {
        Ok(_) => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Err(_) => eprintln!("daemon logs kept in {}", dir.display()),
    }
    result
}

/// Create database `name` on the server of `url`; its URL.
pub(crate) async fn database_beside(url: &str, name: &str) -> Result<String> {
    syncline_embedded_pg::create_database(&with_database(url, "postgres")?, name).await?;
    with_database(url, name)
}

/// `url` naming database `name` instead of its own (parameters kept).
fn with_database(url: &str, name: &str) -> Result<String> {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let (server, _) =
        base.rsplit_once('/').filter(|(s, _)| s.contains("//")).context("a database URL ends in /DATABASE")?;
    Ok(match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    })
}

/// A mediator or participant replica process of `member` (not started).
fn node(dir: &Path, table: &str, name: &str, member: &str, db: Option<&str>, seq: &Node) -> Result<Node> {
    let (public, admin, health) = (free_addr()?, free_addr()?, free_addr()?);
    let config = dir.join(format!("{name}.toml"));
    let storage = db.map(|u| format!("storage = {{ url = \"{u}\" }}\n")).unwrap_or_default();
    let own = if table == "participants" { "participant" } else { "mediator" };
    std::fs::write(
        &config,
        format!(
            "[{table}.{name}]\nmember = \"{member}\"\n{storage}public_api = {{ address = \"{public}\" }}\n\
             admin_api = {{ address = \"{admin}\" }}\nhealth = {{ address = \"{health}\" }}\n\
             sequencer = {{ endpoints = [\"{}\"], token_file = \"{}\" }}\n{own} = {{ time_proof_delay = \"50ms\" }}\n",
            seq.url(),
            crate::admin_tokens::token_file(dir, member).display()
        ),
    )?;
    Ok(Node { name: name.to_string(), public, admin, health, config, child: None, log: None, tls: None })
}

/// Register the members, publish the mediator and the participants' joins, start the nodes.
#[allow(clippy::too_many_arguments)]
async fn bootstrap(
    url: &str,
    seq: &Node,
    nodes: &mut [Node],
    dir: &Path,
    storage: &Path,
    mediator: &str,
    participants: &[&str],
) -> Result<()> {
    let admin = admin_of(seq)?;
    let members: Vec<&str> = std::iter::once(mediator).chain(participants.iter().copied()).collect();
    crate::procs::register(&admin, &members, Some(dir)).await?;
    nodes[0].spawn(dir, storage)?;
    wait_healthy(&mut nodes[0], Duration::from_secs(60)).await.context("the mediator never led")?;
    // Serials follow what earlier benches on the same database left (the mediator's store).
    let cfg = DbConfig::new(url);
    let mut conn = db::connect(&cfg, SessionKind::Pooled).await?;
    let mut mappings = vec![Mapping::MediatorState(MediatorState { mediator: mediator.to_string() })];
    mappings
        .extend(participants.iter().map(|p| Mapping::ParticipantJoin(ParticipantJoin { participant: p.to_string() })));
    let mut encoded = Vec::new();
    for mapping in mappings {
        let head = store::head(&mut conn, &MappingKey::of(&mapping)).await?;
        let serial = head.map_or(1, |h| h.transaction.serial + 1);
        encoded.push(messages::encode(&Message::Topology(TopologyTransaction {
            operation: Operation::AddReplace,
            serial,
            mapping,
        })));
    }
    let last = *admin.publish_topology(encoded).await?.last().context("no timestamp")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match store::stored_at(&mut conn, last).await? {
            Some(s) => match s.outcome {
                Outcome::Accepted { effective_from, .. } => {
                    tokio::time::sleep(Duration::from_micros((effective_from - now_micros()).max(0) as u64 + 100_000))
                        .await;
                    break;
                }
                Outcome::Ignored { reason } => bail!("the bench topology was ignored: {reason}"),
            },
            None if Instant::now() > deadline => bail!("the mediator did not process the bench topology in 30 s"),
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    nodes[1].spawn(dir, storage)?;
    wait_healthy(&mut nodes[1], Duration::from_secs(60)).await.context("p1's first replica never led")?;
    nodes[2].spawn(dir, storage)?;
    nodes[3].spawn(dir, storage)?;
    wait_healthy(&mut nodes[3], Duration::from_secs(60)).await.context("p2 never led")?;
    wait_waiting(&DbConfig::new(&db_of(&nodes[2])?), &nodes[2], Duration::from_secs(60)).await
}

/// The database URL in a node's config file.
fn db_of(node: &Node) -> Result<String> {
    let text = std::fs::read_to_string(&node.config)?;
    let line = text.lines().find(|l| l.starts_with("storage")).context("no storage line")?;
    Ok(line.split('"').nth(1).context("no storage URL")?.to_string())
}

async fn allocate(node: &Node, party: &str) -> Result<()> {
    let mut client = PartyManagementServiceClient::connect(node.url()).await?;
    client.allocate_party(pb::AllocatePartyRequest { party_id_hint: party.to_string() }).await?;
    Ok(())
}

/// A create by `party`, observed by `observer`.
fn create(party: &str, observer: &str) -> pb::Commands {
    let command_id = format!("bench-{:032x}", rand::random::<u128>());
    pb::Commands {
        user_id: "bench".into(),
        command_id,
        act_as: vec![party.into()],
        commands: vec![pb::Command {
            command: Some(pb::command::Command::Create(pb::CreateCommand {
                template_id: "Bench".into(),
                create_arguments: "{}".into(),
                signatories: vec![party.into()],
                observers: vec![observer.into()],
            })),
        }],
        ..Default::default()
    }
}

async fn submit_and_wait(client: &mut CommandServiceClient<Channel>, c: pb::Commands) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(pb::SubmitAndWaitRequest { commands: Some(c) });
    request.set_timeout(Duration::from_secs(30));
    client.submit_and_wait(request).await.map(drop)
}

/// `clients` clients, half on p1 (alice, observed by bob) and half on p2 (the reverse),
/// submitting and waiting back to back for `phase`.
async fn submit_and_wait_phase(
    p1: &Node,
    p2: &Node,
    alice: &str,
    bob: &str,
    phase: Duration,
    clients: usize,
) -> Result<Throughput> {
    let (c1, c2) = (Channel::from_shared(p1.url())?.connect().await?, Channel::from_shared(p2.url())?.connect().await?);
    // Warm-up: one command each way.
    submit_and_wait(&mut CommandServiceClient::new(c1.clone()), create(alice, bob)).await?;
    submit_and_wait(&mut CommandServiceClient::new(c2.clone()), create(bob, alice)).await?;
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..clients.max(2) {
        let (channel, party, observer) = if i % 2 == 0 { (c1.clone(), alice, bob) } else { (c2.clone(), bob, alice) };
        let (party, observer, latencies) = (party.to_string(), observer.to_string(), latencies.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = CommandServiceClient::new(channel);
            while start.elapsed() < phase {
                let t = Instant::now();
                submit_and_wait(&mut client, create(&party, &observer)).await?;
                latencies.lock().unwrap().push(t.elapsed());
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await?.context("a submit-and-wait failed")?;
    }
    let elapsed = start.elapsed();
    let mut l = latencies.lock().unwrap().clone();
    l.sort();
    let q = |p: f64| l[((l.len() as f64 * p) as usize).min(l.len() - 1)].as_secs_f64() * 1000.0;
    Ok(Throughput {
        commands_per_sec: l.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: q(0.50),
        p99_ms: q(0.99),
        clients: clients.max(2),
    })
}

/// `runs` kills of p1's leading replica (`replicas[0]` first); each measures until a
/// submit-and-wait succeeds on the standby.
#[allow(clippy::too_many_arguments)]
async fn takeovers(
    cfg: &DbConfig,
    dir: &Path,
    storage: &Path,
    replicas: &mut [Node],
    alice: &str,
    bob: &str,
    runs: usize,
) -> Result<Takeovers> {
    let mut times = Vec::with_capacity(runs);
    let mut leader = 0;
    for i in 0..runs {
        let standby = 1 - leader;
        let channel = Channel::from_shared(replicas[standby].url())?.connect().await?;
        let mut client = CommandServiceClient::new(channel);
        let killed = Instant::now();
        replicas[leader].kill9();
        // Answers of the standby until it leads: NODE_IS_PASSIVE_REPLICA (or UNAVAILABLE
        // while it takes over).
        let mut last = None;
        loop {
            match submit_and_wait(&mut client, create(alice, bob)).await {
                Ok(()) => break,
                Err(e) if killed.elapsed() < Duration::from_secs(60) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => {
                    bail!("run {}: no submit-and-wait succeeded on {} within 60 s: {e}", i + 1, replicas[standby].name)
                }
            }
        }
        times.push(killed.elapsed());
        if let Some(e) = last {
            tracing::debug!(run = i + 1, answer = %e.message(), "the standby's last refusal");
        }
        if !healthy(&replicas[standby]).await {
            bail!("run {}: {} served the command but does not report itself active", i + 1, replicas[standby].name);
        }
        replicas[leader].spawn(dir, storage)?;
        wait_waiting(cfg, &replicas[leader], Duration::from_secs(60)).await?;
        leader = standby;
    }
    times.sort();
    Ok(Takeovers { times })
}

/// `runs` graceful hand-overs between the two replicas: `set-passive` on the leader's admin
/// API, timed until a submit-and-wait succeeds on the other replica.
async fn hand_overs(cfg: &DbConfig, replicas: &[Node], alice: &str, bob: &str, runs: usize) -> Result<Takeovers> {
    let mut times = Vec::with_capacity(runs);
    for i in 0..runs {
        let leader = match (healthy(&replicas[0]).await, healthy(&replicas[1]).await) {
            (true, false) => 0,
            (false, true) => 1,
            _ => bail!("hand-over {}: not exactly one active replica", i + 1),
        };
        let standby = 1 - leader;
        wait_waiting(cfg, &replicas[standby], Duration::from_secs(60)).await?;
        let mut client = CommandServiceClient::new(Channel::from_shared(replicas[standby].url())?.connect().await?);
        let mut admin = NodeAdminServiceClient::new(
            Channel::from_shared(format!("http://{}", replicas[leader].admin))?.connect().await?,
        );
        let begun = Instant::now();
        admin.set_passive(SetPassiveRequest {}).await.with_context(|| format!("hand-over {}: set-passive", i + 1))?;
        loop {
            match submit_and_wait(&mut client, create(alice, bob)).await {
                Ok(()) => break,
                Err(_) if begun.elapsed() < Duration::from_secs(30) => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                Err(e) => bail!("hand-over {}: {} did not take over within 30 s: {e}", i + 1, replicas[standby].name),
            }
        }
        times.push(begun.elapsed());
    }
    times.sort();
    Ok(Takeovers { times })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participant_databases_live_beside_the_bench_database() {
        assert_eq!(with_database("postgres://u@h:5432/bench", "p1").unwrap(), "postgres://u@h:5432/p1");
        assert_eq!(
            with_database("postgres://u:pw@h/bench?sslmode=disable", "p1").unwrap(),
            "postgres://u:pw@h/p1?sslmode=disable"
        );
        assert!(with_database("bench", "p1").is_err());
    }
}
