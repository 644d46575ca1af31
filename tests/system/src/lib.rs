//! Helpers for system tests: write config files, run `syncline daemon` processes, kill them
//! with SIGKILL, probe their health endpoints, and talk to them over gRPC (through the
//! sequencer client crate).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use syncline_sequencer_client::{AdminClient, ClientConfig, Event, SequencerApi, SequencerClient, SubscribeError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The `syncline` binary built next to this test (`SYNCLINE_BIN` overrides).
pub fn syncline_bin() -> PathBuf {
    if let Ok(p) = std::env::var("SYNCLINE_BIN") {
        return PathBuf::from(p);
    }
    // target/debug/deps/<test>-<hash> → target/debug/syncline
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe.parent().and_then(Path::parent).expect("target dir").join("syncline");
    assert!(bin.exists(), "{} is missing: build it first (cargo build -p syncline-cli), or run ./dev test", bin.display());
    bin
}

pub use syncline_testkit::free_port;

/// Addresses of one sequencer process.
#[derive(Clone, Debug)]
pub struct SequencerAddrs {
    /// Node name.
    pub name: String,
    /// Public gRPC API.
    pub public: SocketAddr,
    /// Admin gRPC API.
    pub admin: SocketAddr,
    /// HTTP health and metrics.
    pub health: SocketAddr,
}

impl SequencerAddrs {
    /// Fresh loopback ports for node `name`.
    pub fn new(name: &str) -> Self {
        let a = |p| SocketAddr::from(([127, 0, 0, 1], p));
        SequencerAddrs { name: name.into(), public: a(free_port()), admin: a(free_port()), health: a(free_port()) }
    }

    /// Its config file section.
    pub fn toml(&self, extra: &str) -> String {
        format!(
            "[sequencers.{n}]\npublic_api = {{ address = \"{p}\" }}\nadmin_api = {{ address = \"{a}\" }}\n\
             health = {{ address = \"{h}\", check = \"ping\" }}\n{extra}\n",
            n = self.name,
            p = self.public,
            a = self.admin,
            h = self.health
        )
    }

    /// `http://` URL of the public API.
    pub fn public_url(&self) -> String {
        format!("http://{}", self.public)
    }

    /// `http://` URL of the admin API.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    /// A client of its admin API.
    pub fn admin(&self) -> AdminClient {
        AdminClient::new(self.admin_url(), ClientConfig::default()).expect("a valid URL")
    }
}

/// A client of the public APIs of `nodes` (round robin in this order, failing over).
pub fn client_of<'a>(nodes: impl IntoIterator<Item = &'a SequencerAddrs>) -> SequencerClient {
    SequencerClient::new(nodes.into_iter().map(SequencerAddrs::public_url), ClientConfig::default()).expect("valid URLs")
}

/// Everything a subscription delivered, with arrival times, and the error it ended with.
#[derive(Default)]
pub struct Received {
    /// Events in arrival order.
    pub events: Vec<(Event, Instant)>,
    /// The error that ended the subscription (a broken chain, a refusal), if any.
    pub error: Option<SubscribeError>,
}

impl Received {
    /// The message id each event carries as its first envelope's content, with its timestamp.
    pub fn ids(&self) -> Vec<(i64, String)> {
        self.events.iter().map(|(e, _)| (e.timestamp, String::from_utf8_lossy(&e.envelopes[0].content).into_owned())).collect()
    }
}

/// Subscribe `member` through `client` and record what arrives until the task is aborted;
/// the client resumes after the last event (on another endpoint if it has several) and checks
/// the previous_timestamp chain.
pub fn record(client: SequencerClient, member: &str) -> (Arc<Mutex<Received>>, tokio::task::JoinHandle<()>) {
    let sink: Arc<Mutex<Received>> = Arc::default();
    let mut events = client.subscribe(member, None);
    let task = {
        let sink = sink.clone();
        tokio::spawn(async move {
            while let Some(item) = events.next().await {
                match item {
                    Ok(e) => sink.lock().unwrap().events.push((e, Instant::now())),
                    Err(e) => sink.lock().unwrap().error = Some(e),
                }
            }
        })
    };
    (sink, task)
}

/// A running `syncline daemon`; killed (SIGKILL) when dropped.
pub struct Daemon {
    child: Child,
    /// Its log file.
    pub log: PathBuf,
}

impl Daemon {
    /// Start `syncline daemon --config <files>` with its log in `dir`.
    pub fn start(dir: &Path, name: &str, configs: &[PathBuf]) -> Daemon {
        let log = dir.join(format!("{name}.log"));
        let list: Vec<String> = configs.iter().map(|p| p.display().to_string()).collect();
        let child = Command::new(syncline_bin())
            .args(["daemon", "--config", &list.join(","), "--log-file-name"])
            .arg(&log)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning syncline daemon");
        Daemon { child, log }
    }

    /// SIGKILL, no clean-up of any kind.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        self.child.wait().expect("wait")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Write `text` to `dir/name` and return the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A temp directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory under the system temp dir.
    pub fn new(prefix: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("{prefix}-{}-{}", std::process::id(), rand::random::<u32>()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("keeping {} for inspection", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// HTTP status code of `GET path` on `addr`, or None if it does not answer.
pub async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf);
        text.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(2), fut).await.ok().flatten()
}

/// The body of `GET path` on `addr`.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        Some(text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
    };
    tokio::time::timeout(Duration::from_secs(2), fut).await.ok().flatten()
}

/// Poll `f` until it returns true, panicking with `what` after `limit`.
pub async fn wait_for<F, Fut>(limit: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
