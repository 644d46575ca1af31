//! `syncline demo --chaos`: the demo's application runs while faults picked at random from a
//! seed hit the topology, one at a time: kill -9 of any node (restarted after a while), a node
//! cut off its database, a node's database silent for a while, set-passive on a leader. After
//! each, the topology must be whole again (every sequencer serving, exactly one active replica
//! per group) within [`RECOVERY`]; at the end come the demo's checks and those of
//! [`super::order`].

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use syncline_proto::admin::node_admin_service_client::NodeAdminServiceClient;
use syncline_proto::admin::SetPassiveRequest;

use super::topology::{State, Topology};
use super::workload::App;
use super::{drain, ms, order, summary, verify, Live};

/// How long the topology may take to be whole again after a fault.
const RECOVERY: Duration = Duration::from_secs(60);
/// How long a killed node stays down and a blackholed database stays silent.
const OUTAGE: Duration = Duration::from_secs(2);

/// One fault.
#[derive(Clone, Debug)]
enum Fault {
    /// kill -9 of a node, restarted after [`OUTAGE`].
    Kill(String),
    /// Every open connection of a node to its database cut once (it reconnects at once).
    Cut(String),
    /// A node's database silent for [`OUTAGE`] (connections stay open, no byte moves).
    Blackhole(String),
    /// set-passive on the active replica of a group (0 mediator, 1 and 2 the participants).
    SetPassive(usize),
}

impl Fault {
    /// Pick one: which kind and which node come from `rng` alone.
    fn pick(rng: &mut StdRng, names: &[String]) -> Fault {
        let node = names[rng.random_range(0..names.len())].clone();
        match rng.random_range(0..4) {
            0 => Fault::Kill(node),
            1 => Fault::Cut(node),
            2 => Fault::Blackhole(node),
            _ => Fault::SetPassive(rng.random_range(0..3)),
        }
    }
}

/// A fault injected and how the topology came through it.
struct Injected {
    what: String,
    at: Instant,
    /// Undone (restarted, database back) at.
    undone: bool,
    /// Whole again after.
    whole: Option<Duration>,
    /// The first command submitted after it was accepted, after.
    recovered: Option<Duration>,
}

/// Run the application at `rate` for `seconds` while `faults` faults from `seed` hit `t`.
pub async fn run_on(t: &mut Topology, seed: u64, faults: usize, seconds: u64, rate: u32) -> Result<()> {
    let total = Duration::from_secs(seconds.max(15));
    println!(
        "\n  chaos: seed {seed} (run again with --seed {seed}), {faults} faults over {} s, one at a time; \
         after each, every sequencer must serve and each replica group have exactly one active replica \
         within {} s",
        total.as_secs(),
        RECOVERY.as_secs()
    );
    let app = App::new(&t.ledger, &t.client_config()?)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let names: Vec<String> = t
        .sequencers
        .iter()
        .chain(&t.mediators)
        .chain(t.participants.iter().flatten())
        .map(|n| n.name.clone())
        .collect();
    let workload = app.run(rate);
    let start = Instant::now();
    let mut done: Vec<Injected> = Vec::new();
    let mut live = Live::new();
    while start.elapsed() < total || done.last().is_some_and(|f| f.whole.is_none() || f.recovered.is_none()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let due = total * (done.len() as u32 + 1) / (faults as u32 + 1);
        if done.len() < faults && start.elapsed() >= due && done.last().is_none_or(|f| f.whole.is_some()) {
            let fault = Fault::pick(&mut rng, &names);
            let what = inject(t, &fault).await?;
            println!("  >>> fault {}/{faults}: {what}", done.len() + 1);
            done.push(Injected { what, at: Instant::now(), undone: false, whole: None, recovered: None });
        }
        if let Some(f) = done.last_mut() {
            follow(t, &app, f).await?;
        }
        live.tick(t, &app, start).await;
    }
    let ran = start.elapsed();
    drain(&app, workload).await;
    summary(&app, ran);
    println!("  faults, until the topology was whole again and until the first command after it was accepted:");
    for f in &done {
        println!(
            "    {:<58} whole after {:>6.0} ms, a command accepted after {:>6.0} ms",
            f.what,
            f.whole.map_or(f64::NAN, ms),
            f.recovered.map_or(f64::NAN, ms)
        );
    }
    let sequencers: Vec<String> = t.sequencers.iter().map(|n| n.url()).collect();
    let extra = order::run(&sequencers, &t.client_config()?, &t.dir, &app).await;
    verify(&app, extra).await.with_context(|| format!("chaos run with seed {seed}"))
}

/// Inject `fault`; what it did, in words.
async fn inject(t: &mut Topology, fault: &Fault) -> Result<String> {
    Ok(match fault {
        Fault::Kill(name) => {
            let n = t.node_mut(name).context("no such node")?;
            let pid = n.kill9().unwrap_or(0);
            format!("kill -9 {name} (pid {pid}), restarted {} s later", OUTAGE.as_secs())
        }
        Fault::Cut(name) => {
            t.db_proxy(name).context("no fault proxy")?.cut();
            format!("{name}'s database connections cut")
        }
        Fault::Blackhole(name) => {
            t.db_proxy(name).context("no fault proxy")?.blackhole();
            format!("{name}'s database silent for {} s", OUTAGE.as_secs())
        }
        Fault::SetPassive(group) => {
            let replicas = match group {
                0 => &t.mediators,
                g => &t.participants[g - 1],
            };
            let Some(leader) = Topology::leader(replicas).await else {
                return Ok("set-passive: no active replica to ask (skipped)".into());
            };
            let n = &replicas[leader];
            let mut admin = NodeAdminServiceClient::new(
                n.admin_channel().await.with_context(|| format!("connecting to {}'s admin API", n.name))?,
            );
            admin.set_passive(SetPassiveRequest {}).await.with_context(|| format!("set-passive on {}", n.name))?;
            format!("set-passive on {}, the active replica", n.name)
        }
    })
}

/// Advance fault `f`: undo it after [`OUTAGE`], notice when the topology is whole again and
/// the first command after it succeeded. Fails when it is not whole within [`RECOVERY`].
async fn follow(t: &mut Topology, app: &App, f: &mut Injected) -> Result<()> {
    if !f.undone && f.at.elapsed() >= OUTAGE {
        f.undone = true;
        for n in t.sequencers.iter().chain(&t.mediators).chain(t.participants.iter().flatten()) {
            if let Some(p) = t.db_proxy(&n.name) {
                p.restore();
            }
        }
        let down: Vec<String> = (t.sequencers.iter().chain(&t.mediators).chain(t.participants.iter().flatten()))
            .filter(|n| n.child.is_none())
            .map(|n| n.name.clone())
            .collect();
        for name in down {
            t.restart(&name)?;
        }
    }
    if f.recovered.is_none() {
        f.recovered = app.stats.first_success_after(f.at, None);
    }
    if f.undone && f.whole.is_none() {
        let [seq, med, p1, p2] = t.states().await;
        let one_active =
            |g: &[State]| g.iter().filter(|s| **s == State::Active).count() == 1 && !g.contains(&State::Down);
        if seq.iter().all(|s| *s == State::Active) && one_active(&med) && one_active(&p1) && one_active(&p2) {
            f.whole = Some(f.at.elapsed());
        } else if f.at.elapsed() > RECOVERY {
            bail!("after {}: the topology was not whole again within {} s", f.what, RECOVERY.as_secs());
        }
    }
    Ok(())
}
