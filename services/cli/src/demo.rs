//! `syncline demo`: the whole HA topology on a throwaway PostgreSQL (one database per node
//! group): three sequencers, two mediator replicas, two participants of two replicas each,
//! HAProxy in front when installed. An application using only the ledger API moves IOUs
//! between Alice and Bob while the demo kills -9, in turn, a sequencer, the leading mediator
//! and the leading replica of participant1 and restarts each; then it proves from both
//! participants' ledgers that every command completed exactly once, no contract was archived
//! twice and both participants show the same contracts, and how soon commands succeeded again
//! after each kill.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::procs::{healthy, live, Node};
use topology::{State, Topology};
use workload::App;

// The demo's parts live beside it (src/demo_*.rs).
#[path = "demo_chaos.rs"]
mod chaos;
#[path = "demo_checks.rs"]
mod checks;
#[path = "demo_order.rs"]
mod order;
#[path = "demo_topology.rs"]
mod topology;
#[path = "demo_workload.rs"]
mod workload;

/// Options of `syncline demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// A PostgreSQL server to use instead of a throwaway local cluster: the URL of a database
    /// there; the demo creates its own databases beside it (and leaves them).
    #[arg(long)]
    database_url: Option<String>,
    /// Length of the workload in seconds (at least 15); the three kills fall at 1/5, 2/5 and
    /// 3/5 of it.
    #[arg(long, default_value_t = 45)]
    seconds: u64,
    /// Commands per second the application submits (three per IOU).
    #[arg(long, default_value_t = 20)]
    rate: u32,
    /// Connect clients to the nodes directly even when HAProxy is installed.
    #[arg(long)]
    no_haproxy: bool,
    /// Chaos instead of the three scripted kills: faults picked at random (kill -9 and restart
    /// of any node, a node cut off its database or its database blackholed for a while,
    /// set-passive on a leader), one at a time, each followed by a check that the topology is
    /// whole again; then the demo's checks plus one order per sequencer subscriber on every
    /// sequencer, no verdict sequenced twice and gap-free offsets on every participant.
    #[arg(long)]
    chaos: bool,
    /// The chaos run's seed (printed; a random one when absent): the same seed picks the same
    /// faults in the same order.
    #[arg(long, requires = "chaos")]
    seed: Option<u64>,
    /// Faults a chaos run injects, spread over `--seconds`.
    #[arg(long, default_value_t = 8, requires = "chaos")]
    faults: usize,
}

/// How long the application may take to finish its last commands after the run.
const DRAIN: Duration = Duration::from_secs(60);
/// How long after a kill the killed process is started again.
const RESTART_AFTER: Duration = Duration::from_secs(2);

/// Run the demo.
pub async fn run(args: DemoArgs) -> Result<()> {
    println!(
        "Syncline demo: 3 sequencers, 2 mediator replicas, 2 participants of 2 replicas each; \
         an application using only the ledger API\n"
    );
    let dir = std::env::temp_dir().join(format!("syncline-demo-{}", std::process::id()));
    let mut topology = Topology::start(&dir, args.database_url.clone(), !args.no_haproxy, args.chaos)
        .await
        .with_context(|| format!("starting the topology (logs kept in {})", dir.display()))?;
    let result = if args.chaos {
        let seed = args.seed.unwrap_or_else(rand::random);
        chaos::run_on(&mut topology, seed, args.faults, args.seconds, args.rate).await
    } else {
        run_on(&args, &mut topology).await
    };
    println!("\n  stopping every node (SIGTERM: each goes offline cleanly)");
    topology.stop();
    match &result {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&topology.dir);
        }
        Err(_) => println!("  logs kept in {}", topology.dir.display()),
    }
    result
}

/// Which node a kill targets.
#[derive(Clone, Copy)]
enum Target {
    Sequencer,
    Mediator,
    Participant1,
}

impl Target {
    fn what(self) -> &'static str {
        match self {
            Target::Sequencer => "a sequencer",
            Target::Mediator => "the leading mediator",
            Target::Participant1 => "the leading replica of participant1",
        }
    }

    /// Canton's documented figure for the same failure.
    fn canton(self) -> &'static str {
        match self {
            Target::Sequencer => "Canton: sequencer readers pause 8-13 s",
            Target::Mediator => "Canton: a passive mediator replica retries the lock every 15 s",
            Target::Participant1 => "Canton: a passive participant replica retries the lock every 15 s",
        }
    }

    /// Whose commands tell that it recovered: participant1's for its own kill (participant2's
    /// archives need no confirmation of participant1), everyone's otherwise.
    fn scope(self) -> Option<usize> {
        match self {
            Target::Participant1 => Some(0),
            _ => None,
        }
    }
}

/// One kill and what followed it.
struct Kill {
    target: Target,
    victim: String,
    at: Instant,
    /// The replica that led next, and after how long.
    took_over: Option<(String, Duration)>,
    /// Restarted at.
    restarted: Option<Instant>,
    /// The restarted process serves again (online, or a standby), after its restart.
    back: Option<Duration>,
    /// The first command submitted after the kill succeeded, after the kill.
    recovered: Option<Duration>,
}

impl Kill {
    fn done(&self) -> bool {
        self.recovered.is_some()
            && self.back.is_some()
            && (self.took_over.is_some() || matches!(self.target, Target::Sequencer))
    }
}

fn group(t: &mut Topology, target: Target) -> &mut Vec<Node> {
    match target {
        Target::Sequencer => &mut t.sequencers,
        Target::Mediator => &mut t.mediators,
        Target::Participant1 => &mut t.participants[0],
    }
}

async fn run_on(args: &DemoArgs, t: &mut Topology) -> Result<()> {
    let total = Duration::from_secs(args.seconds.max(15));
    let app = App::new(&t.ledger, &t.client_config()?)?;
    println!(
        "\n  application: IOUs of {} (create on participant1, transfer to Bob, Bob archives on participant2), \
         {} commands/s, unique command ids, resubmitted after errors; clients connect {}",
        workload::ALICE,
        args.rate,
        if t.via_haproxy() { "through HAProxy" } else { "to the nodes directly" }
    );
    println!(
        "  kills: {} at {:.0} s, {} at {:.0} s, {} at {:.0} s (each restarted {} s later)\n",
        Target::Sequencer.what(),
        total.as_secs_f64() / 5.0,
        Target::Mediator.what(),
        total.as_secs_f64() * 2.0 / 5.0,
        Target::Participant1.what(),
        total.as_secs_f64() * 3.0 / 5.0,
        RESTART_AFTER.as_secs()
    );
    let workload = app.run(args.rate);
    let start = Instant::now();
    let targets = [Target::Sequencer, Target::Mediator, Target::Participant1];
    let mut kills: Vec<Kill> = Vec::new();
    let mut live = Live::new();
    // Until the run's time is up and every kill has played out (bounded).
    while start.elapsed() < total || kills.len() < targets.len() || !kills.iter().all(Kill::done) {
        if start.elapsed() > total + DRAIN {
            app.stop();
            app.abandon();
            let _ = workload.await;
            bail!("the kills did not play out within {} s after the run's end", DRAIN.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let next = kills.len();
        if next < targets.len()
            && start.elapsed() >= total * (next as u32 + 1) / 5
            && kills.last().is_none_or(Kill::done)
        {
            let target = targets[next];
            let nodes = group(t, target);
            let victim = match target {
                Target::Sequencer => Some(0),
                _ => Topology::leader(nodes).await,
            };
            // A replica group without a leader right now: try again on the next tick.
            if let Some(v) = victim {
                let pid = nodes[v].kill9().unwrap_or(0);
                println!("  >>> kill -9 {} ({}, pid {pid})", nodes[v].name, target.what());
                kills.push(Kill {
                    target,
                    victim: nodes[v].name.clone(),
                    at: Instant::now(),
                    took_over: None,
                    restarted: None,
                    back: None,
                    recovered: None,
                });
            }
        }
        if let Some(k) = kills.last_mut() {
            follow_kill(t, &app, k).await?;
        }
        live.tick(t, &app, start).await;
    }
    let ran = start.elapsed();
    drain(&app, workload).await;
    summary(&app, ran);
    report_kills(&kills);
    verify(&app, Vec::new()).await
}

/// The live line, once a second.
struct Live {
    last_print: Instant,
    prev_accepted: u64,
}

impl Live {
    /// Print the header.
    fn new() -> Live {
        println!(
            "  {:>5}  {:>9}  {:>8}  {:>8}  {:>11}  {:>9}  {:>10}   seq  med  p1  p2   (● active ○ standby ✗ down)",
            "time", "submitted", "accepted", "rejected", "resubmitted", "in flight", "accepted/s"
        );
        Live { last_print: Instant::now(), prev_accepted: 0 }
    }

    /// Print a line if a second has passed since the last.
    async fn tick(&mut self, t: &Topology, app: &App, start: Instant) {
        if self.last_print.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_print = Instant::now();
        let s = &app.stats;
        let accepted = s.accepted.load(Ordering::Relaxed);
        let [seq, med, p1, p2] = t.states().await;
        println!(
            "  {:>4}s  {:>9}  {:>8}  {:>8}  {:>11}  {:>9}  {:>10}   {:<3}  {:<3}  {:<2}  {:<2}",
            start.elapsed().as_secs(),
            s.submitted.load(Ordering::Relaxed),
            accepted,
            s.rejected.load(Ordering::Relaxed),
            s.resubmitted.load(Ordering::Relaxed),
            s.in_flight(),
            accepted - self.prev_accepted,
            symbols(&seq),
            symbols(&med),
            symbols(&p1),
            symbols(&p2)
        );
        self.prev_accepted = accepted;
    }
}

/// End the run: IOUs finish the command they are at (given up after [`DRAIN`]).
async fn drain(app: &App, mut workload: tokio::task::JoinHandle<()>) {
    println!("  >>> the run is over: IOUs finish the command they are at");
    app.stop();
    if tokio::time::timeout(DRAIN, &mut workload).await.is_err() {
        println!("  >>> commands still unanswered after {} s: given up", DRAIN.as_secs());
        app.abandon();
        let _ = workload.await;
    }
}

/// Advance kill `k`: restart its victim, notice the takeover, the victim's return and the
/// first success after it; print each once.
async fn follow_kill(t: &mut Topology, app: &App, k: &mut Kill) -> Result<()> {
    if k.took_over.is_none() && !matches!(k.target, Target::Sequencer) {
        let nodes = group(t, k.target);
        if let Some(l) = Topology::leader(nodes).await {
            if nodes[l].name != k.victim {
                let took = k.at.elapsed();
                println!("  >>> {} took over: active {:.0} ms after the kill", nodes[l].name, ms(took));
                k.took_over = Some((nodes[l].name.clone(), took));
            }
        }
    }
    if k.recovered.is_none() {
        if let Some(d) = app.stats.first_success_after(k.at, k.target.scope()) {
            println!(
                "  >>> first command accepted {:.0} ms after the kill of {} ({})",
                ms(d),
                k.victim,
                k.target.canton()
            );
            k.recovered = Some(d);
        }
    }
    if k.restarted.is_none() && k.at.elapsed() >= RESTART_AFTER {
        let n = t.restart(&k.victim)?;
        println!("  >>> restarting {} (pid {})", n.name, n.pid().unwrap_or(0));
        k.restarted = Some(Instant::now());
    }
    if let (Some(r), None) = (k.restarted, k.back) {
        let n = group(t, k.target).iter().find(|n| n.name == k.victim).expect("the victim is in its group");
        let back = match k.target {
            Target::Sequencer => healthy(n).await,
            // A restarted replica joins as the standby.
            _ => live(n).await && !healthy(n).await,
        };
        if back {
            let d = r.elapsed();
            let role = if matches!(k.target, Target::Sequencer) { "online again" } else { "back as the standby" };
            println!("  >>> {} is {role} {:.0} ms after its restart", k.victim, ms(d));
            k.back = Some(d);
        }
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn symbols(states: &[State]) -> String {
    states
        .iter()
        .map(|s| match s {
            State::Active => '●',
            State::Standby => '○',
            State::Down => '✗',
        })
        .collect()
}

/// What the application saw.
fn summary(app: &App, ran: Duration) {
    let s = &app.stats;
    println!("\nWhat happened");
    let accepted = s.accepted.load(Ordering::Relaxed);
    println!(
        "  commands: {} submitted, {accepted} accepted, {} definitely rejected, {} resubmitted after an error \
         ({:.1} accepted/s over {:.0} s)",
        s.submitted.load(Ordering::Relaxed),
        s.rejected.load(Ordering::Relaxed),
        s.resubmitted.load(Ordering::Relaxed),
        accepted as f64 / ran.as_secs_f64(),
        ran.as_secs_f64()
    );
    let reasons = s.retry_reasons.lock().unwrap().clone();
    if !reasons.is_empty() {
        let list: Vec<String> = reasons.iter().map(|(r, n)| format!("{r} ×{n}")).collect();
        println!("  answers other than OK on the way: {}", list.join(", "));
    }
    let rejections: Vec<String> = (s.outcomes.lock().unwrap().iter())
        .filter_map(|(id, o)| match o {
            workload::Outcome::Rejected(e) => Some(format!("{id}: {e}")),
            _ => None,
        })
        .collect();
    if !rejections.is_empty() {
        println!("  definitely rejected: {}", rejections.join(", "));
    }
}

/// Each kill's recovery, with Canton's figure beside it.
fn report_kills(kills: &[Kill]) {
    println!("  after each kill -9, until the first command submitted after it was accepted:");
    for k in kills {
        let took =
            k.took_over.as_ref().map(|(n, d)| format!(", {n} active after {:.0} ms", ms(*d))).unwrap_or_default();
        println!(
            "    {:<16} {:>6.0} ms   ({}){took}; restarted, {} after {:.0} ms   [{}]",
            k.victim,
            k.recovered.map_or(f64::NAN, ms),
            k.target.what(),
            if matches!(k.target, Target::Sequencer) { "online" } else { "standby" },
            k.back.map_or(f64::NAN, ms),
            k.target.canton()
        );
    }
}

/// Run the demo's checks (and `extra` ones), print them; fails if any failed.
async fn verify(app: &App, extra: Vec<checks::Check>) -> Result<()> {
    let mut checks = match checks::run(app).await {
        Ok(c) => c,
        Err(e) => bail!("reading the participants' ledgers back failed: {}", e.message()),
    };
    checks.extend(extra);
    println!("  checks (read back through each participant's ledger API):");
    let mut failed = 0;
    for c in &checks {
        println!("    {} {}", if c.ok { "✔" } else { "✗" }, c.line);
        failed += usize::from(!c.ok);
    }
    if failed > 0 {
        bail!("{failed} of {} checks failed", checks.len());
    }
    println!("  every command completed exactly once, nothing archived twice, both participants agree ✔");
    Ok(())
}
