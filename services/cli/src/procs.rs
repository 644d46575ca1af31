//! Daemon processes started from this binary (demo and bench): sequencers, mediator and
//! participant replicas and HAProxy; spawn, kill -9, SIGTERM, health probes, clients of their
//! APIs, and a subscriber that records arrivals.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use syncline_embedded_pg::free_addr;
use syncline_node::tls::dev::DevCerts;
use syncline_node::tls::probe::{self, ProbeTls};
use syncline_sequencer_client::{
    AdminClient, ClientConfig, ClientTls, RequestBuilder, SendRequest, SequencerApi, SequencerClient, SubscribeError,
    TokenSource,
};

/// A `syncline daemon` process running one sequencer.
pub struct Node {
    /// Node name in the config.
    pub name: String,
    /// Public gRPC address.
    pub public: SocketAddr,
    /// Admin gRPC address.
    pub admin: SocketAddr,
    /// Health and metrics HTTP address.
    pub health: SocketAddr,
    /// The node's own config file.
    pub config: PathBuf,
    /// The running process, if any.
    pub child: Option<Child>,
    /// Where the running process logs.
    pub log: Option<PathBuf>,
    /// Its TLS: the certificates (its own is named like the node), when it serves TLS.
    pub tls: Option<NodeTls>,
}

/// The TLS of a node of this module: the certificates of the topology (a development CA, a
/// certificate per node and `operator`'s for admin calls) and a probe configuration.
#[derive(Clone)]
pub struct NodeTls {
    /// The certificates.
    pub certs: DevCerts,
    probe: ProbeTls,
}

/// The operator's certificate among the topology's (for the admin APIs, which require one).
pub const OPERATOR: &str = "operator";

impl NodeTls {
    /// TLS with `certs` (which must hold a certificate for every node and [`OPERATOR`]).
    pub fn new(certs: DevCerts) -> Result<NodeTls> {
        let probe = probe::client_config(&certs.ca)?;
        Ok(NodeTls { certs, probe })
    }

    /// The `tls` table of node `name`'s listeners (`client_ca` too: the admin API's).
    fn table(&self, name: &str, client_ca: bool) -> String {
        let ca = if client_ca { format!(", client_ca = \"{}\"", self.certs.ca.display()) } else { String::new() };
        format!(
            ", tls = {{ cert = \"{}\", key = \"{}\"{ca} }}",
            self.certs.cert(name).display(),
            self.certs.key(name).display()
        )
    }

    /// Client settings trusting the CA (and presenting the operator's certificate, for admin
    /// APIs).
    pub fn client_config(&self) -> Result<ClientConfig> {
        let identity = (self.certs.cert(OPERATOR), self.certs.key(OPERATOR));
        let tls = ClientTls::load(&self.certs.ca, Some((&identity.0, &identity.1)))?;
        Ok(ClientConfig { tls: Some(tls), ..ClientConfig::default() })
    }
}

impl Node {
    /// Write the node's config file into `dir` (loopback ports never handed out before in this
    /// process, so no two nodes race for one), TLS on every listener with `tls`; not started yet.
    pub fn configure(dir: &Path, name: &str, tls: Option<&NodeTls>) -> Result<Node> {
        let (public, admin, health) = (free_addr()?, free_addr()?, free_addr()?);
        let config = dir.join(format!("{name}.toml"));
        let (t, admin_t) = tables(tls, name);
        std::fs::write(
            &config,
            format!(
                "[sequencers.{name}]\npublic_api = {{ address = \"{public}\"{t} }}\nadmin_api = {{ address = \"{admin}\"{admin_t} }}\nhealth = {{ address = \"{health}\", check = \"ping\"{t} }}\n"
            ),
        )?;
        Ok(Node { name: name.to_string(), public, admin, health, config, child: None, log: None, tls: tls.cloned() })
    }

    /// Write the config file of a replica of mediator or participant `member` (`kind`) into
    /// `dir`: its own database `db`, the sequencers at `sequencers` (URLs), its member token
    /// read from `dir/<member>.token` (as `syncline admin ... --token-dir dir` writes it);
    /// TLS on every listener and toward the sequencers with `tls`; not started yet.
    pub fn configure_replica(
        dir: &Path,
        kind: Replicated,
        name: &str,
        member: &str,
        db: &str,
        sequencers: &[String],
        tls: Option<&NodeTls>,
    ) -> Result<Node> {
        let (public, admin, health) = (free_addr()?, free_addr()?, free_addr()?);
        let config = dir.join(format!("{name}.toml"));
        let endpoints: Vec<String> = sequencers.iter().map(|s| format!("\"{s}\"")).collect();
        let token = crate::admin_tokens::token_file(dir, member);
        let (t, admin_t) = tables(tls, name);
        let ca = tls.map(|t| format!(", ca = \"{}\"", t.certs.ca.display())).unwrap_or_default();
        std::fs::write(
            &config,
            format!(
                "[{table}.{name}]\nmember = \"{member}\"\nstorage = {{ url = \"{db}\" }}\n\
                 public_api = {{ address = \"{public}\"{t} }}\nadmin_api = {{ address = \"{admin}\"{admin_t} }}\n\
                 health = {{ address = \"{health}\"{t} }}\nsequencer = {{ endpoints = [{}], token_file = \"{}\"{ca} }}\n",
                endpoints.join(", "),
                token.display(),
                table = kind.table(),
            ),
        )?;
        Ok(Node { name: name.to_string(), public, admin, health, config, child: None, log: None, tls: tls.cloned() })
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its lines in a remote configuration for `syncline admin` (`table` as in its config):
    /// with TLS, the CA and the operator's client certificate.
    pub fn remote_toml(&self, table: &str) -> String {
        let tls = match &self.tls {
            Some(t) => format!(
                "ca = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
                t.certs.ca.display(),
                t.certs.cert(OPERATOR).display(),
                t.certs.key(OPERATOR).display()
            ),
            None => String::new(),
        };
        format!("[{table}.{}]\nadmin_api = \"{}\"\n{tls}", self.name, self.admin)
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The public gRPC endpoint URL (`https://` with TLS).
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme(), self.public)
    }

    /// The health server's URL, for people.
    pub fn health_url(&self) -> String {
        format!("{}://{}/health", self.scheme(), self.health)
    }

    /// A connection to its admin API (over TLS with the operator's certificate, when it
    /// serves TLS).
    pub async fn admin_channel(&self) -> Result<tonic::transport::Channel> {
        let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{}://{}", self.scheme(), self.admin))?;
        if let Some(tls) = self.client_config()?.tls {
            endpoint = endpoint.tls_config(tls.tonic_config())?;
        }
        Ok(endpoint.connect().await?)
    }

    /// Client settings for this node's APIs.
    pub fn client_config(&self) -> Result<ClientConfig> {
        self.tls.as_ref().map_or_else(|| Ok(ClientConfig::default()), NodeTls::client_config)
    }

    /// Start `syncline daemon` with the shared storage file and this node's config; logs go
    /// to `dir/<name>.log`.
    pub fn spawn(&mut self, dir: &Path, storage: &Path) -> Result<()> {
        let path = dir.join(format!("{}.log", self.name));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        let child = Command::new(std::env::current_exe()?)
            .arg("daemon")
            .arg("--config")
            .arg(format!("{},{}", storage.display(), self.config.display()))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.name))?;
        self.child = Some(child);
        self.log = Some(path);
        Ok(())
    }

    /// If the process has exited: how, and the last lines of its log (why, usually).
    pub fn exited(&mut self) -> Option<String> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        let log = self.log.as_ref().and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Some(format!("{} exited ({status}); its log ends:\n{}", self.name, tail.join("\n")))
    }

    /// SIGKILL the process; its pid.
    pub fn kill9(&mut self) -> Option<u32> {
        let mut c = self.child.take()?;
        let pid = c.id();
        let _ = c.kill();
        let _ = c.wait();
        Some(pid)
    }

    /// SIGTERM and wait up to 10 s (then SIGKILL).
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// A node kind with hot-standby replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replicated {
    /// `[mediators.NAME]`.
    Mediator,
    /// `[participants.NAME]`.
    Participant,
}

impl Replicated {
    /// Its config table.
    pub fn table(self) -> &'static str {
        match self {
            Replicated::Mediator => "mediators",
            Replicated::Participant => "participants",
        }
    }
}

/// True when `node` answers `GET /health` with 200 within 500 ms (for a replica: it is the
/// active one).
pub async fn healthy(node: &Node) -> bool {
    http_ok(node, "/health").await
}

/// True when `node`'s process serves at all (`GET /livez` answers 200 within 500 ms).
pub async fn live(node: &Node) -> bool {
    http_ok(node, "/livez").await
}

async fn http_ok(node: &Node, path: &str) -> bool {
    let probe = probe::get(node.health, node.tls.as_ref().map(|t| &t.probe), path);
    matches!(tokio::time::timeout(Duration::from_millis(500), probe).await, Ok(Some((200, _))))
}

/// The `tls` tables of node `name`'s listeners with `tls`: (public and health, admin).
fn tables(tls: Option<&NodeTls>, name: &str) -> (String, String) {
    tls.map(|t| (t.table(name, false), t.table(name, true))).unwrap_or_default()
}

/// What one subscriber received: (timestamp, message id, arrival).
pub type Log = Arc<Mutex<Vec<(i64, String, Instant)>>>;

/// Follow `member` through `client` (which resumes after its last event, on another of its
/// endpoints when one fails, and checks the chain), recording arrivals in `log`. The task
/// ends only with the subscription's error; abort it to stop.
pub fn follow(client: SequencerClient, member: String, log: Log) -> tokio::task::JoinHandle<Option<SubscribeError>> {
    tokio::spawn(async move {
        let mut events = client.subscribe(&member, None);
        while let Some(item) = events.next().await {
            let e = match item {
                Ok(e) => e,
                Err(e) => return Some(e),
            };
            let id =
                e.envelopes.first().map(|env| String::from_utf8_lossy(&env.content).into_owned()).unwrap_or_default();
            log.lock().unwrap().push((e.timestamp, id, Instant::now()));
        }
        None
    })
}

/// A follower's error, if it ended with one (it never ends otherwise).
pub async fn follower_error(follower: &mut tokio::task::JoinHandle<Option<SubscribeError>>) -> Option<String> {
    if !follower.is_finished() {
        return None;
    }
    match follower.await {
        Ok(e) => e.map(|e| e.to_string()),
        Err(e) => Some(format!("the subscriber task failed: {e}")),
    }
}

/// A send from `sender` to `to` whose body is its message id, sequenceable for `within`.
pub fn message(sender: &str, to: &str, id: &str, within: Duration) -> SendRequest {
    RequestBuilder::new(sender, id).to([to], id).within(within).build()
}

/// A client of the public APIs of `nodes`, in order, presenting `tokens` (member → token).
pub fn client_of(nodes: &[Node], tokens: &Tokens) -> Result<SequencerClient> {
    let config = nodes.first().map(Node::client_config).transpose()?.unwrap_or_default();
    let client = SequencerClient::new(nodes.iter().map(Node::url), config)?;
    for (member, token) in tokens {
        client.set_token(member, TokenSource::Token(token.clone()));
    }
    Ok(client)
}

/// Member → token.
pub type Tokens = std::collections::BTreeMap<String, String>;

/// Register `members` through `admin` (each must be new: its token is issued now), writing
/// each token to `dir/<member>.token` when `dir` is given (where node configs made by this
/// module look); the tokens.
pub async fn register(admin: &AdminClient, members: &[&str], dir: Option<&Path>) -> Result<Tokens> {
    let mut tokens = Tokens::new();
    for m in members {
        let token = admin
            .register_member(m)
            .await?
            .token
            .with_context(|| format!("member {m} was registered before: its token is not handed out again"))?;
        if let Some(dir) = dir {
            std::fs::write(crate::admin_tokens::token_file(dir, m), &token)?;
        }
        tokens.insert(m.to_string(), token);
    }
    Ok(tokens)
}

/// A client of `node`'s admin API.
pub fn admin_of(node: &Node) -> Result<AdminClient> {
    Ok(AdminClient::new(format!("{}://{}", node.scheme(), node.admin), node.client_config()?)?)
}

/// Wait until `node` answers `/health` with 200; how long that took. Fails at once when the
/// process exits meanwhile (a bad config, a port taken), with the end of its log.
pub async fn wait_healthy(node: &mut Node, limit: Duration) -> Result<Duration> {
    let start = Instant::now();
    while !healthy(node).await {
        if let Some(why) = node.exited() {
            bail!("{why}");
        }
        if start.elapsed() > limit {
            bail!("{} did not become healthy within {limit:?}", node.name);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(start.elapsed())
}

/// Wait until replica `node` runs as a standby (live, not active); how long that took.
pub async fn wait_standby(node: &Node, limit: Duration) -> Result<Duration> {
    let start = Instant::now();
    while !live(node).await || healthy(node).await {
        if start.elapsed() > limit {
            bail!("{} did not come up as a standby within {limit:?}", node.name);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(start.elapsed())
}

/// The `haproxy` binary, if installed (also where a non-root PATH does not look).
pub fn haproxy_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join("haproxy"))
        .find(|p| p.is_file())
}

/// An HAProxy process, killed on drop.
pub struct Haproxy {
    child: Child,
}

impl Haproxy {
    /// Run `binary` with config file `config` and its addresses from `env`; logs to `log`.
    /// Fails when HAProxy exits at once (a config error, a port taken), with its log.
    pub fn start(binary: &Path, config: &Path, env: &[(String, String)], log: &Path) -> Result<Haproxy> {
        let out = std::fs::File::create(log)?;
        let mut cmd = Command::new(binary);
        cmd.arg("-db").arg("-f").arg(config).envs(env.iter().map(|(k, v)| (k, v)));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut h = Haproxy { child };
        std::thread::sleep(Duration::from_millis(300));
        if let Ok(Some(status)) = h.child.try_wait() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            bail!("haproxy -f {} exited at once ({status}):\n{text}", config.display());
        }
        Ok(h)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Configure, start and wait for a sequencer daemon `name`; a daemon that exits at start
/// because one of its ports was taken meanwhile (by a process outside ours) is configured
/// again on other ports, up to three times.
pub async fn launch(dir: &Path, storage: &Path, name: &str, limit: Duration) -> Result<Node> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut node = Node::configure(dir, name, None)?;
        node.spawn(dir, storage)?;
        match wait_healthy(&mut node, limit).await {
            Ok(_) => return Ok(node),
            Err(e) if attempt < 3 && port_taken(&e.to_string()) => {
                tracing::warn!(node = name, "a port was taken before the daemon bound it; other ports");
            }
            Err(e) => return Err(e),
        }
    }
}

/// True when a daemon's exit message says an address was in use.
fn port_taken(why: &str) -> bool {
    let why = why.to_ascii_lowercase();
    why.contains("address already in use") || why.contains("addrinuse")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_daemon_that_exits_at_start_is_reported_at_once() {
        let dir = tempfile::tempdir().unwrap();
        // `false` stands for a daemon that exits at once; the bench must not wait out its limit.
        let mut node = Node::configure(dir.path(), "quitter", None).unwrap();
        node.child = Some(Command::new("false").spawn().unwrap());
        let start = Instant::now();
        let e = wait_healthy(&mut node, Duration::from_secs(60)).await.unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(10), "waited {:?}", start.elapsed());
        assert!(e.to_string().contains("quitter exited"), "{e}");
    }

    #[test]
    fn an_address_in_use_is_recognised() {
        assert!(port_taken("error: binding 127.0.0.1:4000: Address already in use (os error 98)"));
        assert!(!port_taken("error: no such database"));
    }
}
