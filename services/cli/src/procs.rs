//! Sequencer daemon processes started from this binary (demo and bench): spawn, kill -9,
//! SIGTERM, health probes, and a reconnecting subscriber that records arrivals.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use syncline_proto::sequencer::sequencer_service_client::SequencerServiceClient;
use syncline_coordination::timestamps::now_micros;
use syncline_proto::sequencer::{Envelope, SendRequest, SubscribeRequest};
use tonic::transport::Channel;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
}

impl Node {
    /// Write the node's config file into `dir` (free loopback ports); not started yet.
    pub fn configure(dir: &Path, name: &str) -> Result<Node> {
        let (public, admin, health) = (free_addr()?, free_addr()?, free_addr()?);
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[sequencers.{name}]\npublic_api = {{ address = \"{public}\" }}\nadmin_api = {{ address = \"{admin}\" }}\nhealth = {{ address = \"{health}\", check = \"ping\" }}\n"
            ),
        )?;
        Ok(Node { name: name.to_string(), public, admin, health, config, child: None })
    }

    /// The public gRPC endpoint URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.public)
    }

    /// Start `syncline daemon` with the shared storage file and this node's config; logs go
    /// to `dir/<name>.log`.
    pub fn spawn(&mut self, dir: &Path, storage: &Path) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(format!("{}.log", self.name)))?;
        let child = Command::new(std::env::current_exe()?)
            .arg("daemon")
            .arg("--config")
            .arg(format!("{},{}", storage.display(), self.config.display()))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting a sequencer process")?;
        self.child = Some(child);
        Ok(())
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

/// A free loopback port.
pub fn free_addr() -> Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// True when `addr` answers `GET /health` with 200 within 500 ms.
pub async fn healthy(addr: SocketAddr) -> bool {
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.ok()?;
        let mut buf = vec![0u8; 64];
        let n = s.read(&mut buf).await.ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"))
    };
    tokio::time::timeout(Duration::from_millis(500), probe).await.ok().flatten().unwrap_or(false)
}

/// How a send over [`Senders`] ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// A node answered OK: sequenced at `timestamp`, after `resends` attempts that got no
    /// answer (each resent, with the same message id, on the next node).
    Sequenced { timestamp: i64, resends: u32 },
    /// A node refused it for good (the status message).
    Refused(String),
    /// No node answered before the max-sequencing-time.
    Unconfirmed,
}

/// Sends over several sequencer nodes: each send starts at a given node and, while it gets no
/// answer, is resent unchanged (same message id and max-sequencing-time) on the next one.
/// Cheap to clone; clients are shared and reconnected lazily.
#[derive(Clone)]
pub struct Senders {
    urls: Arc<Vec<String>>,
    clients: Arc<Mutex<Vec<Option<SequencerServiceClient<Channel>>>>>,
}

impl Senders {
    /// Senders to the public APIs of `nodes`.
    pub fn new(nodes: &[Node]) -> Senders {
        let urls: Vec<String> = nodes.iter().map(Node::url).collect();
        Senders { clients: Arc::new(Mutex::new(vec![None; urls.len()])), urls: Arc::new(urls) }
    }

    async fn client(&self, i: usize) -> Option<SequencerServiceClient<Channel>> {
        if let Some(c) = self.clients.lock().unwrap()[i].clone() {
            return Some(c);
        }
        let connect = SequencerServiceClient::connect(self.urls[i].clone());
        let c = tokio::time::timeout(Duration::from_secs(1), connect).await.ok()?.ok()?;
        self.clients.lock().unwrap()[i] = Some(c.clone());
        Some(c)
    }

    /// Send message `id` from `sender` to `to` (its body is the id), starting at node `first`
    /// (modulo the node count) until a node answers.
    pub async fn send(&self, first: usize, sender: &str, to: &str, id: &str, mst_in: Duration) -> SendOutcome {
        let req = SendRequest {
            sender: sender.into(),
            message_id: id.into(),
            max_sequencing_time: now_micros() + mst_in.as_micros() as i64,
            envelopes: vec![Envelope { recipients: vec![to.into()], content: id.as_bytes().to_vec() }],
        };
        let mut resends = 0u32;
        for attempt in 0.. {
            if now_micros() > req.max_sequencing_time {
                break;
            }
            let i = (first + attempt) % self.urls.len();
            if attempt > 0 && i == first % self.urls.len() {
                tokio::time::sleep(Duration::from_millis(100)).await; // every node failed: pause
            }
            let Some(mut c) = self.client(i).await else { continue };
            match tokio::time::timeout(Duration::from_secs(5), c.send(req.clone())).await {
                Ok(Ok(r)) => return SendOutcome::Sequenced { timestamp: r.into_inner().timestamp, resends },
                Ok(Err(s)) if is_final(s.code()) => return SendOutcome::Refused(s.message().to_string()),
                _ => {
                    // No answer (unavailable, overloaded, cut off): the outcome is unknown.
                    self.clients.lock().unwrap()[i] = None;
                    resends += 1;
                }
            }
        }
        SendOutcome::Unconfirmed
    }
}

/// Answers that a resend cannot change.
fn is_final(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(code, InvalidArgument | NotFound | PermissionDenied | AlreadyExists | FailedPrecondition | OutOfRange)
}

/// What one subscriber received: (timestamp, message id, arrival).
pub type Log = Arc<Mutex<Vec<(i64, String, Instant)>>>;

/// Follow `member` on one node, reconnecting from the last timestamp after failures.
pub fn follow(url: String, member: String, log: Log, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let after = log.lock().unwrap().last().map(|(ts, _, _)| *ts);
            let stream = async {
                let mut c = SequencerServiceClient::connect(url.clone()).await.ok()?;
                Some(c.subscribe(SubscribeRequest { member: member.clone(), after }).await.ok()?.into_inner())
            }
            .await;
            if let Some(mut s) = stream {
                while let Ok(Some(r)) = s.message().await {
                    let e = r.event.unwrap_or_default();
                    let id = e.envelopes.first().map(|env| String::from_utf8_lossy(&env.content).into_owned()).unwrap_or_default();
                    log.lock().unwrap().push((e.timestamp, id, Instant::now()));
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}


/// Wait until `node` answers `/health` with 200; how long that took.
pub async fn wait_healthy(node: &Node, limit: Duration) -> Result<Duration> {
    let start = Instant::now();
    while !healthy(node.health).await {
        if start.elapsed() > limit {
            bail!("{} did not become healthy within {limit:?}", node.name);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(start.elapsed())
}

