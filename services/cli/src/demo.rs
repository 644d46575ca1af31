//! `syncline demo`: a complete HA topology on a throwaway PostgreSQL. Three sequencer
//! processes share one database; a workload runs through all of them while one is killed
//! with SIGKILL and restarted; the demo then shows what happened and proves that nothing
//! was lost or duplicated and that every subscriber saw the same order.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use syncline_sequencer_client::{SendError, Sent, SequencerApi};

use crate::embedded::Database;
use crate::procs::{admin_of, client_of, follow, follower_error, healthy, message, wait_healthy, Log, Node};

/// Options of `syncline demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Use this database instead of a throwaway local cluster.
    #[arg(long)]
    database_url: Option<String>,
    /// Length of the workload in seconds.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Messages per second the workload sends.
    #[arg(long, default_value_t = 200)]
    rate: u32,
}

const NODES: usize = 3;
const VICTIM: usize = 0;

/// Run the demo.
pub async fn run(args: DemoArgs) -> Result<()> {
    println!("Syncline demo: {NODES} active sequencer processes on one PostgreSQL database\n");
    let db = Database::open(args.database_url.clone(), "syncline_demo").await?;
    println!(
        "  database   {}",
        if args.database_url.is_some() {
            "the one given with --database-url"
        } else {
            "a throwaway PostgreSQL cluster (removed at the end)"
        }
    );
    let dir = std::env::temp_dir().join(format!("syncline-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let storage = dir.join("storage.toml");
    std::fs::write(&storage, format!("[storage]\nurl = \"{}\"\n", db.url))?;
    let mut nodes = Vec::new();
    for i in 1..=NODES {
        nodes.push(Node::configure(&dir, &format!("sequencer{i}"))?);
    }
    for n in &mut nodes {
        n.spawn(&dir, &storage)?;
        println!(
            "  started    {} (pid {}): gRPC {}, health+metrics http://{}/health",
            n.name,
            n.child.as_ref().map_or(0, Child::id),
            n.public,
            n.health
        );
    }
    let result = workload(&args, &mut nodes, &dir, &storage).await;
    println!("\n  stopping the sequencers (SIGTERM: each goes offline cleanly)");
    for n in &mut nodes {
        n.terminate();
    }
    match &result {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Err(_) => println!("  logs kept in {}", dir.display()),
    }
    drop(db);
    result
}

async fn workload(args: &DemoArgs, nodes: &mut [Node], dir: &Path, storage: &Path) -> Result<()> {
    for n in nodes.iter_mut() {
        wait_healthy(n, Duration::from_secs(60)).await?;
    }
    println!("  all {NODES} sequencers online\n");
    let admin = admin_of(&nodes[0])?;
    for m in ["alice", "bob"] {
        admin.register_member(m).await?;
    }
    // One subscriber per node (a client of that node alone), to compare what each delivers.
    let logs: Vec<Log> = (0..NODES).map(|_| Log::default()).collect();
    let mut followers = Vec::new();
    for (n, l) in nodes.iter().zip(&logs) {
        followers.push(follow(client_of(std::slice::from_ref(n))?, "bob".into(), l.clone()));
    }

    // alice sends to bob round-robin over the nodes, many sends in flight. An OK means
    // sequenced and durable, so an OK'd message is never sent again; only a send that got no
    // answer (its node was killed, say) is resent unchanged on the next node.
    let senders = client_of(nodes)?;
    let sent = Arc::new(AtomicU64::new(0));
    let outcomes: Outcomes = Arc::default();
    let sending = Arc::new(AtomicBool::new(true));
    let sender = {
        let (sent, sending, outcomes) = (sent.clone(), sending.clone(), outcomes.clone());
        let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
        tokio::spawn(async move {
            let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
            let mut tasks = tokio::task::JoinSet::new();
            let mut tick = tokio::time::interval(interval);
            let mut k = 0usize;
            while sending.load(Ordering::Relaxed) {
                tick.tick().await;
                let permit = in_flight.clone().acquire_owned().await.expect("never closed");
                let (senders, outcomes) = (senders.clone(), outcomes.clone());
                let id = format!("msg-{k:06}");
                tasks.spawn(async move {
                    let outcome = senders.send(message("alice", "bob", &id, Duration::from_secs(20))).await;
                    outcomes.lock().unwrap().insert(id, outcome);
                    drop(permit);
                });
                k += 1;
                sent.fetch_add(1, Ordering::Relaxed);
            }
            while tasks.join_next().await.is_some() {}
        })
    };

    let start = Instant::now();
    let total = Duration::from_secs(args.seconds.max(6));
    let kill_at = total / 3;
    let mut killed_at = None;
    let mut restarted_at = None;
    let mut rejoin = Duration::ZERO;
    let mut last_print = Instant::now();
    println!("  {:>5}  {:>6}  {:>26}  {:>8}  nodes", "time", "sent", "delivered (per subscriber)", "rate/s");
    let mut prev_delivered = 0usize;
    while start.elapsed() < total {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if killed_at.is_none() && start.elapsed() >= kill_at {
            let pid = nodes[VICTIM].kill9().unwrap_or(0);
            killed_at = Some(Instant::now());
            println!("  >>> kill -9 {} (pid {pid}) under load", nodes[VICTIM].name);
        }
        if let (Some(k), None) = (killed_at, restarted_at) {
            if k.elapsed() >= Duration::from_secs(3) {
                nodes[VICTIM].spawn(dir, storage)?;
                restarted_at = Some(Instant::now());
                println!("  >>> restarting {}", nodes[VICTIM].name);
                rejoin = wait_healthy(&mut nodes[VICTIM], Duration::from_secs(30)).await?;
                println!(
                    "  >>> {} recovered (truncated past its watermark) and is online again after {:.0} ms",
                    nodes[VICTIM].name,
                    rejoin.as_secs_f64() * 1000.0
                );
            }
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            let counts: Vec<usize> = logs.iter().map(|l| l.lock().unwrap().len()).collect();
            let mut states = String::new();
            for n in nodes.iter() {
                states.push_str(if healthy(n.health).await { "● " } else { "✗ " });
            }
            println!(
                "  {:>4}s  {:>6}  {:>26}  {:>8}  {}",
                start.elapsed().as_secs(),
                sent.load(Ordering::Relaxed),
                format!("{:?}", counts),
                counts[1].saturating_sub(prev_delivered),
                states
            );
            prev_delivered = counts[1];
        }
    }
    sending.store(false, Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(60), sender).await.context("waiting for the last sends")??;
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    let expected = outcomes.values().filter(|o| o.is_ok()).count();
    let settle = Instant::now();
    while logs.iter().any(|l| l.lock().unwrap().len() < expected) && settle.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (n, f) in nodes.iter().zip(&mut followers) {
        if let Some(e) = follower_error(f).await {
            bail!("the subscriber on {} failed: {e}", n.name);
        }
        f.abort();
    }
    report(&logs, nodes, &outcomes, killed_at, rejoin, start.elapsed())
}

/// How each message's send ended, by message id.
type Outcomes = Arc<std::sync::Mutex<HashMap<String, Result<Sent, SendError>>>>;

fn report(
    logs: &[Log],
    nodes: &[Node],
    outcomes: &HashMap<String, Result<Sent, SendError>>,
    killed_at: Option<Instant>,
    rejoin: Duration,
    elapsed: Duration,
) -> Result<()> {
    println!("\nWhat happened");
    // The timestamp each OK carried: the event must be delivered at exactly that timestamp.
    let sequenced: HashMap<&str, i64> =
        outcomes.iter().filter_map(|(id, o)| Some((id.as_str(), o.as_ref().ok()?.timestamp))).collect();
    let expected = sequenced.len();
    let unconfirmed = outcomes.len() - expected;
    let resends: u32 = outcomes.values().filter_map(|o| Some(o.as_ref().ok()?.resends)).sum();
    let reference: Vec<i64> = logs[1].lock().unwrap().iter().map(|(ts, _, _)| *ts).collect();
    let mut ok = unconfirmed == 0;
    for (n, log) in nodes.iter().zip(logs) {
        let log = log.lock().unwrap();
        let ids: Vec<&String> = log.iter().map(|(_, id, _)| id).collect();
        let unique: HashSet<&&String> = ids.iter().collect();
        let ts: Vec<i64> = log.iter().map(|(ts, _, _)| *ts).collect();
        let same = ts == reference;
        // Every OK'd message, at the timestamp its OK named; nothing else.
        let at_ok_ts = log.iter().filter(|(ts, id, _)| sequenced.get(id.as_str()) == Some(ts)).count();
        let good = ids.len() == expected && unique.len() == expected && at_ok_ts == expected && same;
        ok &= good;
        println!(
            "  subscriber on {:<11} {at_ok_ts} of {expected} OK'd messages at their OK's timestamp, {} duplicates, {} unexpected, order {}",
            n.name,
            ids.len() - unique.len(),
            log.len() - at_ok_ts,
            if same { "identical to the others" } else { "DIFFERENT" }
        );
    }
    if let Some(k) = killed_at {
        for (i, (n, log)) in nodes.iter().zip(logs).enumerate() {
            if i == VICTIM {
                continue;
            }
            let log = log.lock().unwrap();
            let mut prev = k;
            let mut gap = Duration::ZERO;
            for (_, _, at) in log.iter().filter(|(_, _, at)| *at >= k && *at <= k + Duration::from_secs(3)) {
                gap = gap.max(at.duration_since(prev));
                prev = *at;
            }
            println!(
                "  longest pause of the subscriber on {} after the kill: {:.0} ms (Canton: 8-13 s)",
                n.name,
                gap.as_secs_f64() * 1000.0
            );
        }
    }
    println!("  {} restarted and rejoined in {:.0} ms", nodes[VICTIM].name, rejoin.as_secs_f64() * 1000.0);
    println!("  sends that got no answer and were resent unchanged on another node: {resends} (never sequenced twice)");
    if unconfirmed > 0 {
        println!("  sends that no node confirmed: {unconfirmed}");
        if let Some(Err(e)) = outcomes.values().find(|o| o.is_err()) {
            println!("    for example: {e}");
        }
    }
    println!(
        "  throughput: {:.0} messages/s over {:.1} s",
        expected as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    if !ok {
        bail!("a send went unconfirmed, or a subscriber missed, duplicated or reordered messages");
    }
    println!("  nothing lost, nothing duplicated, one order for every subscriber ✔");
    Ok(())
}
