//! The demo's topology as real processes: one database per node group on one PostgreSQL
//! server, three sequencers, two mediator replicas, two participants of two replicas each, and
//! HAProxy in front of the sequencers and of each participant when it is installed. Bootstrapped
//! the way an operator does it, with `syncline admin`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use syncline_embedded_pg::free_addr;
use syncline_fault_proxy::FaultProxy;
use syncline_proto::ledger as pb;
use syncline_proto::ledger::party_management_service_client::PartyManagementServiceClient;

use super::workload::{channel, ALICE, BOB};
use crate::bench_participant::database_beside;
use crate::embedded::Database;
use crate::procs::{
    haproxy_binary, healthy, live, wait_healthy, wait_standby, Haproxy, Node, NodeTls, Replicated, OPERATOR,
};
use syncline_node::tls::dev::{write_dev_certs, LOCAL_HOSTS};
use syncline_sequencer_client::ClientConfig;

/// The mediator's member name (its replicas share it).
pub const MEDIATOR: &str = "mediator";
/// The participants' member names.
pub const PARTICIPANTS: [&str; 2] = ["participant1", "participant2"];
/// HAProxy's certificate's name.
const HAPROXY: &str = "haproxy";

const SEQUENCERS_CFG: &str = include_str!("../../../ops/haproxy/sequencers.cfg");
const PARTICIPANTS_CFG: &str = include_str!("../../../ops/haproxy/participants.cfg");

/// The running topology. Dropping it stops every process (SIGTERM, HAProxy killed).
pub struct Topology {
    /// Config files and logs.
    pub dir: PathBuf,
    /// The sequencers' database, the default `[storage]` of every node.
    storage: PathBuf,
    /// A sequencer's own `[storage]` file (its database through its fault proxy), if it has one.
    storage_of: BTreeMap<String, PathBuf>,
    /// Each node's fault proxy in front of its database (chaos runs only), by node name.
    db_proxies: BTreeMap<String, FaultProxy>,
    /// `remote.toml` for `syncline admin`.
    remote: PathBuf,
    /// sequencer1..3.
    pub sequencers: Vec<Node>,
    /// The mediator's two replicas.
    pub mediators: Vec<Node>,
    /// Each participant's two replicas.
    pub participants: [Vec<Node>; 2],
    /// Each participant's ledger API as applications reach it: HAProxy, or its replicas.
    pub ledger: [Vec<String>; 2],
    /// HAProxy processes (none without HAProxy).
    proxies: Vec<Haproxy>,
    /// The certificates every listener serves (a development CA made for this run).
    tls: NodeTls,
    /// Keeps the throwaway cluster while the topology runs.
    _db: Database,
}

/// How a node group is doing, for the live lines.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Serving (a sequencer) or leading (a replica).
    Active,
    /// A live standby replica.
    Standby,
    /// Not answering.
    Down,
}

impl Topology {
    /// Create the databases and start every node (config files and logs in `dir`);
    /// bootstrap; HAProxy if `haproxy` (and installed); with `db_faults`, each node reaches
    /// its database through a fault proxy of its own. Prints what it does.
    pub async fn start(dir: &Path, database_url: Option<String>, haproxy: bool, db_faults: bool) -> Result<Topology> {
        let run = format!("{:08x}", rand::random::<u32>());
        // With a server of the user's, fresh names per run: earlier runs' databases stay apart.
        let prefix = if database_url.is_some() { format!("syncline_demo_{run}_") } else { String::new() };
        let (db, seq_db) = match &database_url {
            Some(url) => {
                let seq_db = database_beside(url, &format!("{prefix}sequencers")).await?;
                (Database::open(Some(url.clone()), "").await?, seq_db)
            }
            None => {
                let db = Database::open(None, "sequencers").await?;
                let url = db.url.clone();
                (db, url)
            }
        };
        let dbs = [
            database_beside(&seq_db, &format!("{prefix}mediator")).await?,
            database_beside(&seq_db, &format!("{prefix}participant1")).await?,
            database_beside(&seq_db, &format!("{prefix}participant2")).await?,
        ];
        match &database_url {
            Some(_) => println!(
                "  databases  {prefix}sequencers, {prefix}mediator, {prefix}participant1, {prefix}participant2 \
                 on the server of --database-url (left there)"
            ),
            None => println!(
                "  databases  sequencers, mediator, participant1, participant2 on a throwaway PostgreSQL \
                 (removed at the end)"
            ),
        }
        let dir = dir.to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let storage = dir.join("storage.toml");
        std::fs::write(&storage, format!("[storage]\nurl = \"{seq_db}\"\n"))?;
        let haproxy = if haproxy { haproxy_binary() } else { None };
        // TLS on every listener: a throwaway CA and a certificate per node, HAProxy and the
        // operator (whose client certificate the admin APIs require).
        let mut names: Vec<String> = (1..=3).map(|i| format!("sequencer{i}")).collect();
        names.extend(["mediator-a", "mediator-b"].map(String::from));
        names.extend(PARTICIPANTS.iter().flat_map(|p| [format!("{p}-a"), format!("{p}-b")]));
        names.extend([HAPROXY.to_string(), OPERATOR.to_string()]);
        let tls = NodeTls::new(write_dev_certs(&dir.join("certs"), &names, &LOCAL_HOSTS)?)?;
        println!(
            "  TLS        every listener, with certificates of a throwaway CA ({}); admin APIs require \
             client certificates",
            tls.certs.ca.display()
        );
        // Each node's database URL: as is, or through a fault proxy of the node's own.
        let mut db_proxies = BTreeMap::new();
        let mut db_of = async |name: &str, url: &str| -> Result<String> {
            if !db_faults {
                return Ok(url.to_string());
            }
            let (upstream, through) = server_of(url).await?;
            let proxy = FaultProxy::bind(upstream).await.context("starting a fault proxy")?;
            let url = through(proxy.addr());
            db_proxies.insert(name.to_string(), proxy);
            Ok(url)
        };

        let mut sequencers = Vec::new();
        let mut storage_of = BTreeMap::new();
        for i in 1..=3 {
            let name = format!("sequencer{i}");
            if db_faults {
                let own = dir.join(format!("storage-{name}.toml"));
                std::fs::write(&own, format!("[storage]\nurl = \"{}\"\n", db_of(&name, &seq_db).await?))?;
                storage_of.insert(name.clone(), own);
            }
            sequencers.push(Node::configure(&dir, &name, Some(&tls))?);
        }
        // What mediators and participants connect to: HAProxy, or every sequencer (their
        // client fails over itself).
        let seq_frontend = free_addr()?;
        let seq_endpoints = match haproxy {
            Some(_) => vec![format!("https://{seq_frontend}")],
            None => sequencers.iter().map(Node::url).collect(),
        };
        let mut replica = async |kind, name: &str, member: &str, db: &str| {
            let db = db_of(name, db).await?;
            Node::configure_replica(&dir, kind, name, member, &db, &seq_endpoints, Some(&tls))
        };
        let mediators = vec![
            replica(Replicated::Mediator, "mediator-a", MEDIATOR, &dbs[0]).await?,
            replica(Replicated::Mediator, "mediator-b", MEDIATOR, &dbs[0]).await?,
        ];
        let participants = [
            vec![
                replica(Replicated::Participant, "participant1-a", PARTICIPANTS[0], &dbs[1]).await?,
                replica(Replicated::Participant, "participant1-b", PARTICIPANTS[0], &dbs[1]).await?,
            ],
            vec![
                replica(Replicated::Participant, "participant2-a", PARTICIPANTS[1], &dbs[2]).await?,
                replica(Replicated::Participant, "participant2-b", PARTICIPANTS[1], &dbs[2]).await?,
            ],
        ];
        if db_faults {
            println!("  faults     every node reaches its database through a fault proxy of its own");
        }
        let remote = dir.join("remote.toml");
        let mut text: String = sequencers.iter().map(|n| n.remote_toml("sequencers")).collect();
        text.extend(mediators.iter().map(|n| n.remote_toml("mediators")));
        text.extend(participants.iter().flatten().map(|n| n.remote_toml("participants")));
        std::fs::write(&remote, text)?;
        let mut t = Topology {
            dir,
            storage,
            storage_of,
            db_proxies,
            remote,
            sequencers,
            mediators,
            participants,
            ledger: [Vec::new(), Vec::new()],
            proxies: Vec::new(),
            tls,
            _db: db,
        };

        for i in 0..3 {
            let name = t.sequencers[i].name.clone();
            t.restart(&name)?;
        }
        for n in &mut t.sequencers {
            wait_healthy(n, Duration::from_secs(60)).await?;
            println!("  started    {} (pid {}): gRPC {}, health {}", n.name, pid(n), n.public, n.health_url());
        }
        match &haproxy {
            Some(bin) => {
                let mut env = t.haproxy_tls();
                env.push(("SEQ_FRONTEND".to_string(), seq_frontend.to_string()));
                for (i, n) in t.sequencers.iter().enumerate() {
                    env.push((format!("SEQ{}", i + 1), n.public.to_string()));
                    env.push((format!("SEQ{}_HEALTH", i + 1), n.health.port().to_string()));
                }
                t.proxies.push(t.haproxy(bin, "sequencers", SEQUENCERS_CFG, &env)?);
                println!("  started    HAProxy for the sequencers on {seq_frontend} (ops/haproxy/sequencers.cfg)");
            }
            None => println!(
                "  HAProxy    {}: mediators and participants connect to the three sequencers directly, \
                 applications to both replicas of a participant (their clients fail over)",
                if haproxy_binary().is_none() { "not installed" } else { "not used (--no-haproxy)" }
            ),
        }

        // The mediator first: bootstrap checks what it publishes against the mediator's view.
        t.launch(&["mediator-a"], true).await?;
        t.launch(&["mediator-b"], false).await?;
        t.bootstrap()?;
        t.launch(&["participant1-a", "participant2-a"], true).await?;
        t.launch(&["participant1-b", "participant2-b"], false).await?;
        for (p, replicas) in t.participants.iter().enumerate() {
            t.ledger[p] = match &haproxy {
                Some(bin) => {
                    let (ledger, admin) = (free_addr()?, free_addr()?);
                    let mut env = t.haproxy_tls();
                    env.push(("LEDGER_FRONTEND".to_string(), ledger.to_string()));
                    env.push(("ADMIN_FRONTEND".into(), admin.to_string()));
                    for (i, r) in replicas.iter().enumerate() {
                        env.push((format!("R{}", i + 1), r.public.to_string()));
                        env.push((format!("R{}_ADMIN", i + 1), r.admin.to_string()));
                        env.push((format!("R{}_HEALTH", i + 1), r.health.port().to_string()));
                    }
                    let name = PARTICIPANTS[p];
                    let proxy = t.haproxy(bin, name, PARTICIPANTS_CFG, &env)?;
                    t.proxies.push(proxy);
                    println!("  started    HAProxy for {name}: ledger API {ledger} (ops/haproxy/participants.cfg)");
                    vec![format!("https://{ledger}")]
                }
                None => replicas.iter().map(Node::url).collect(),
            };
        }
        t.wait_parties_known().await?;
        Ok(t)
    }

    /// HAProxy's TLS settings (its certificate, the CA it checks the nodes' against).
    fn haproxy_tls(&self) -> Vec<(String, String)> {
        vec![
            ("TLS_CERT".into(), self.tls.certs.bundle(HAPROXY).display().to_string()),
            ("TLS_CA".into(), self.tls.certs.ca.display().to_string()),
        ]
    }

    /// Client settings for the topology's APIs: trusting its CA, with the operator's
    /// certificate.
    pub fn client_config(&self) -> Result<ClientConfig> {
        self.tls.client_config()
    }

    fn haproxy(&self, bin: &Path, name: &str, text: &str, env: &[(String, String)]) -> Result<Haproxy> {
        let cfg = self.dir.join(format!("haproxy-{name}.cfg"));
        std::fs::write(&cfg, text)?;
        Haproxy::start(bin, &cfg, env, &self.dir.join(format!("haproxy-{name}.log")))
    }

    /// Start nodes `names` and wait until each leads (`active`) or stands by.
    async fn launch(&mut self, names: &[&str], active: bool) -> Result<()> {
        for name in names {
            self.restart(name)?;
        }
        for name in names {
            let n = self.node_mut(name).with_context(|| format!("no node {name}"))?;
            let (role, took) = if active {
                ("active", wait_healthy(n, Duration::from_secs(60)).await?)
            } else {
                ("standby", wait_standby(n, Duration::from_secs(60)).await?)
            };
            println!(
                "  started    {} (pid {}): {role} after {:.1} s, gRPC {}, health {}",
                n.name,
                pid(n),
                took.as_secs_f64(),
                n.public,
                n.health_url()
            );
        }
        Ok(())
    }

    /// `syncline admin`: the mediator, both participants, Alice on participant1 and Bob on
    /// participant2.
    fn bootstrap(&self) -> Result<()> {
        println!("  bootstrap  syncline admin -c {}:", self.remote.display());
        // Tokens go where the replicas' configs look for them (Node::configure_replica).
        let tokens = self.dir.display().to_string();
        self.admin(&["bootstrap", "--mediator", MEDIATOR, "--token-dir", &tokens])?;
        for p in PARTICIPANTS {
            self.admin(&["join-participant", p, "--token-dir", &tokens])?;
        }
        self.admin(&["host-party", ALICE, "--participant", PARTICIPANTS[0]])?;
        self.admin(&["host-party", BOB, "--participant", PARTICIPANTS[1]])?;
        Ok(())
    }

    fn admin(&self, args: &[&str]) -> Result<()> {
        let out = Command::new(std::env::current_exe()?)
            .arg("admin")
            .arg("--config")
            .arg(&self.remote)
            .args(args)
            .output()
            .context("running syncline admin")?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if !out.status.success() {
            bail!("syncline admin {} failed:\n{text}", args.join(" "));
        }
        let last = text.lines().last().unwrap_or_default();
        println!("             {:<44} {last}", args.join(" "));
        Ok(())
    }

    /// Wait until each participant knows both parties (each learns the topology through its
    /// own subscription), through the ledger endpoints the application uses.
    async fn wait_parties_known(&self) -> Result<()> {
        let start = Instant::now();
        let tls = self.client_config()?;
        for (p, endpoints) in self.ledger.iter().enumerate() {
            loop {
                let mut known = Vec::new();
                for e in endpoints {
                    let mut c = PartyManagementServiceClient::new(channel(e, &tls)?);
                    if let Ok(r) = c.list_known_parties(pb::ListKnownPartiesRequest {}).await {
                        known = r.into_inner().party_details.into_iter().map(|d| d.party).collect();
                        break;
                    }
                }
                if [ALICE, BOB].iter().all(|x| known.iter().any(|k| k == x)) {
                    break;
                }
                if start.elapsed() > Duration::from_secs(60) {
                    bail!("{} does not know parties {ALICE} and {BOB} after 60 s (knows {known:?})", PARTICIPANTS[p]);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        println!("  parties    {ALICE} on {}, {BOB} on {}: known to both", PARTICIPANTS[0], PARTICIPANTS[1]);
        Ok(())
    }

    /// Restart node `name` (after a kill).
    pub fn restart(&mut self, name: &str) -> Result<&Node> {
        let dir = self.dir.clone();
        let storage = self.storage_of.get(name).unwrap_or(&self.storage).clone();
        let n = self.node_mut(name).with_context(|| format!("no node {name}"))?;
        n.spawn(&dir, &storage)?;
        Ok(n)
    }

    /// Node `name`.
    pub fn node_mut(&mut self, name: &str) -> Option<&mut Node> {
        let [p1, p2] = &mut self.participants;
        (self.sequencers.iter_mut().chain(self.mediators.iter_mut()).chain(p1.iter_mut()).chain(p2.iter_mut()))
            .find(|n| n.name == name)
    }

    /// The fault proxy between node `name` and its database (chaos runs only).
    pub fn db_proxy(&self, name: &str) -> Option<&FaultProxy> {
        self.db_proxies.get(name)
    }

    /// The replica that leads among `replicas` now, if one does.
    pub async fn leader(replicas: &[Node]) -> Option<usize> {
        for (i, r) in replicas.iter().enumerate() {
            if healthy(r).await {
                return Some(i);
            }
        }
        None
    }

    /// States of the sequencers, mediator replicas and each participant's replicas.
    pub async fn states(&self) -> [Vec<State>; 4] {
        async fn of(nodes: &[Node]) -> Vec<State> {
            let mut out = Vec::new();
            for n in nodes {
                out.push(if healthy(n).await {
                    State::Active
                } else if live(n).await {
                    State::Standby
                } else {
                    State::Down
                });
            }
            out
        }
        [
            of(&self.sequencers).await,
            of(&self.mediators).await,
            of(&self.participants[0]).await,
            of(&self.participants[1]).await,
        ]
    }

    /// Whether clients go through HAProxy.
    pub fn via_haproxy(&self) -> bool {
        !self.proxies.is_empty()
    }

    /// Stop every node (SIGTERM; participants first) and HAProxy.
    pub fn stop(&mut self) {
        for n in self.participants.iter_mut().flatten() {
            n.terminate();
        }
        for n in self.mediators.iter_mut().chain(self.sequencers.iter_mut()) {
            n.terminate();
        }
        self.proxies.clear();
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.stop();
    }
}

fn pid(n: &Node) -> u32 {
    n.pid().unwrap_or(0)
}

/// The server address of database URL `url` (`postgres://[user@]host:port/db[?…]`) and a
/// function giving the same URL through another address.
async fn server_of(url: &str) -> Result<(SocketAddr, impl Fn(SocketAddr) -> String)> {
    let (scheme, rest) = url.split_once("://").with_context(|| format!("{url}: not a URL"))?;
    let (authority, path) = rest.split_once('/').with_context(|| format!("{url}: no database name"))?;
    let (user, host) = authority.rsplit_once('@').map_or(("", authority), |(u, h)| (u, h));
    let host = if host.contains(':') { host.to_string() } else { format!("{host}:5432") };
    let upstream = tokio::net::lookup_host(&host)
        .await
        .with_context(|| format!("resolving {host}"))?
        .next()
        .with_context(|| format!("{host} resolves to no address"))?;
    let (scheme, user, path) = (scheme.to_string(), user.to_string(), path.to_string());
    let at = if user.is_empty() { String::new() } else { format!("{user}@") };
    Ok((upstream, move |a: SocketAddr| format!("{scheme}://{at}{a}/{path}")))
}
