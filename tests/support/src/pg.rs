//! Throwaway PostgreSQL clusters started from the installed binaries.
//!
//! One cluster per test binary: data dir in a temp folder, a free port, fsync off, run as the
//! `postgres` user when we are root. A watchdog shell stops it and removes its files when the
//! test process exits, even on kill -9. With `DATABASE_URL` set, that server is used instead.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::chown;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where the binaries are looked for when `SYNCLINE_PG_BIN` is not set.
const PG_LIB: &str = "/usr/lib/postgresql";

/// A server the tests can create databases on.
#[derive(Debug)]
pub struct Server {
    /// Host and port of the server.
    pub addr: SocketAddr,
    /// Superuser name.
    pub user: String,
    /// Password, if the server needs one.
    pub password: Option<String>,
    /// Whether this harness started (and will remove) the cluster.
    pub owned: bool,
    /// The postmaster and its watchdog; they outlive this process's tests by design.
    processes: Vec<Child>,
    /// Data and socket directory of a cluster we started.
    dir: Option<PathBuf>,
    /// How to start the postmaster again, for a cluster we started.
    launch: Option<Launch>,
}

/// What starting the postmaster of a cluster we own takes.
#[derive(Debug, Clone)]
struct Launch {
    bin: PathBuf,
    ids: Option<(u32, u32)>,
}

impl Server {
    /// Create database `name` and return its URL.
    pub async fn create_database(&self, name: &str) -> Result<String, String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match create(&self.url("postgres"), name).await {
                Ok(()) => return Ok(self.url(name)),
                Err(e) if Instant::now() < deadline && starting_up(&e) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(e) => {
                    let detail = e.as_db_error().map(|d| d.message().to_string()).unwrap_or_else(|| e.to_string());
                    return Err(format!("creating database {name}: {detail}"));
                }
            }
        }
    }

    /// Stop a cluster this harness started (immediate shutdown) and remove its files.
    pub fn stop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        if let Some(pm) = self.processes.first_mut() {
            let _ = Command::new("kill").args(["-QUIT", &pm.id().to_string()]).status();
            let _ = pm.wait();
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Stop the postmaster of a cluster this harness started, as a crash would (immediate
    /// shutdown: every session is cut), keeping its files for [`start_again`](Self::start_again).
    pub fn kill_postmaster(&mut self) -> Result<(), String> {
        if self.launch.is_none() {
            return Err("not a cluster this harness started".into());
        }
        let pm = self.processes.first_mut().ok_or("no postmaster")?;
        let _ = Command::new("kill").args(["-QUIT", &pm.id().to_string()]).status();
        pm.wait().map_err(|e| format!("waiting for the postmaster: {e}"))?;
        Ok(())
    }

    /// Start the postmaster of a cluster stopped by [`kill_postmaster`](Self::kill_postmaster)
    /// again, on the same port and data, and wait until it accepts connections.
    pub fn start_again(&mut self) -> Result<(), String> {
        let (Some(launch), Some(dir)) = (self.launch.clone(), self.dir.clone()) else {
            return Err("not a cluster this harness started".into());
        };
        let (child, watchdog) = launch_postmaster(&launch, &dir, self.addr.port())?;
        self.processes = vec![child, watchdog];
        Ok(())
    }

    /// Crash and restart the server, down for about `down`.
    pub fn restart(&mut self, down: Duration) -> Result<(), String> {
        self.kill_postmaster()?;
        std::thread::sleep(down);
        self.start_again()
    }

    /// A URL for database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        self.url_at(self.addr, db)
    }

    /// A URL for database `db` reached through `addr` (e.g. a fault proxy).
    pub fn url_at(&self, addr: SocketAddr, db: &str) -> String {
        let auth = match &self.password {
            Some(p) => format!("{}:{}", self.user, p),
            None => self.user.clone(),
        };
        format!("postgres://{auth}@{}:{}/{db}", addr.ip(), addr.port())
    }
}

static SERVER: OnceLock<Server> = OnceLock::new();

/// The server of this test binary, started on first use.
pub fn server() -> &'static Server {
    SERVER.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => external(&url),
        _ => start_cluster().unwrap_or_else(|e| panic!("cannot start a test PostgreSQL cluster: {e}")),
    })
}

fn external(url: &str) -> Server {
    let cfg: tokio_postgres::Config = url.parse().expect("DATABASE_URL is not a valid postgres URL");
    let host = match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_string(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
        .ok()
        .and_then(|mut a| a.next())
        .expect("DATABASE_URL host does not resolve");
    Server {
        addr,
        user: cfg.get_user().unwrap_or("postgres").to_string(),
        password: cfg.get_password().map(|p| String::from_utf8_lossy(p).into_owned()),
        owned: false,
        processes: Vec::new(),
        dir: None,
        launch: None,
    }
}

/// The directory holding `initdb` and `postgres`: `SYNCLINE_PG_BIN`, else the newest
/// version under /usr/lib/postgresql.
pub fn pg_bin_dir() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("SYNCLINE_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(PG_LIB)
        .map_err(|e| format!("{PG_LIB}: {e} (install postgresql, or set DATABASE_URL)"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, p)| p)
        .ok_or_else(|| format!("no PostgreSQL server binaries under {PG_LIB} (apt-get install postgresql)"))
}

/// uid and gid of `name` from /etc/passwd.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&name)).then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
    })
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("no free port")
}

/// Command that runs as the `postgres` user when we are root (postgres refuses root).
fn as_pg_user(program: &Path, ids: Option<(u32, u32)>) -> Command {
    let mut cmd = Command::new(program);
    if let Some((uid, gid)) = ids {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

// On the error paths the watchdog stays behind on purpose: it removes the half-started
// cluster once this process exits.
#[allow(clippy::zombie_processes)]
/// Start a throwaway cluster: temp data dir, free port, fsync off, as `postgres` when root.
pub fn start_cluster() -> Result<Server, String> {
    let bin = pg_bin_dir()?;
    let ids = if is_root() {
        Some(user_ids("postgres").ok_or("running as root but there is no `postgres` user to run the server as")?)
    } else {
        None
    };
    let dir = std::env::temp_dir().join(format!("syncline-pg-{}-{}", std::process::id(), rand::random::<u32>()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if let Some((uid, gid)) = ids {
        chown(&dir, Some(uid), Some(gid)).map_err(|e| format!("chown {}: {e}", dir.display()))?;
    }
    let data = dir.join("data");
    let out = as_pg_user(&bin.join("initdb"), ids)
        .args(["-D", data.to_str().unwrap(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let launch = Launch { bin, ids };
    let port = free_port();
    let (child, watchdog) = launch_postmaster(&launch, &dir, port)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    Ok(Server { addr, user: "postgres".into(), password: None, owned: true, processes: vec![child, watchdog], dir: Some(dir), launch: Some(launch) })
}

// On the error paths the watchdog stays behind on purpose (see `start_cluster`).
#[allow(clippy::zombie_processes)]
/// Start the postmaster of the cluster in `dir` on `port` with its watchdog, and wait until it
/// accepts connections.
fn launch_postmaster(launch: &Launch, dir: &Path, port: u16) -> Result<(Child, Child), String> {
    let data = dir.join("data");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("postgres.log")).map_err(|e| e.to_string())?;
    if let Some((uid, gid)) = launch.ids {
        let _ = chown(dir.join("postgres.log"), Some(uid), Some(gid));
    }
    let child = as_pg_user(&launch.bin.join("postgres"), launch.ids)
        .args(["-D", data.to_str().unwrap(), "-p", &port.to_string(), "-k", dir.to_str().unwrap()])
        .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off"])
        .args(["-c", "max_connections=400", "-c", "shared_buffers=128MB", "-c", "lc_messages=C"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting postgres: {e}"))?;
    let watchdog = spawn_watchdog(child.id(), dir);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
            return Err(format!("postgres did not start listening on {addr}:\n{log}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((child, watchdog))
}

/// A shell that waits for this process to end, then stops postgres and removes its files.
fn spawn_watchdog(pg_pid: u32, dir: &Path) -> Child {
    let script = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 0.5; done; kill -QUIT {pg} 2>/dev/null; sleep 1; \
         kill -KILL {pg} 2>/dev/null; rm -rf '{dir}'",
        me = std::process::id(),
        pg = pg_pid,
        dir = dir.display()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("cannot spawn the cluster watchdog")
}

/// A database of its own for one test.
#[derive(Debug)]
pub struct TestDb {
    /// Database name.
    pub name: String,
    /// URL of the database on the server.
    pub url: String,
}

impl TestDb {
    /// URL of this database reached through `addr` (e.g. a [`crate::FaultProxy`]).
    pub fn url_via(&self, addr: SocketAddr) -> String {
        server().url_at(addr, &self.name)
    }

    /// The server's address.
    pub fn server_addr(&self) -> SocketAddr {
        server().addr
    }
}

/// On a server given by `DATABASE_URL` the test's database is dropped afterwards (a cluster
/// of our own is removed whole when the test binary exits).
impl Drop for TestDb {
    fn drop(&mut self) {
        let server = server();
        if server.owned {
            return;
        }
        let (admin_url, name) = (server.url("postgres"), self.name.clone());
        // Drop may run inside a runtime; do the async work on a thread of its own.
        let dropper = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await.ok()?;
                let driver = tokio::spawn(conn);
                let r = client.batch_execute(&format!("drop database if exists \"{name}\" with (force)")).await;
                drop(client);
                let _ = driver.await;
                r.ok()
            })
        });
        let _ = dropper.join();
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Create a fresh, empty database for the calling test.
pub async fn fresh_database() -> TestDb {
    let server = server();
    let name = format!(
        "t_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        rand::random::<u16>()
    );
    let admin_url = server.url("postgres");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match create(&admin_url, &name).await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(%e, "test database not ready yet");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot create test database {name}: {e}"),
        }
    }
    TestDb { url: server.url(&name), name }
}

/// Errors that mean "not ready yet": no connection, or the server still starting.
fn starting_up(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_none_or(|d| d.code() == &tokio_postgres::error::SqlState::CANNOT_CONNECT_NOW)
}

async fn create(admin_url: &str, name: &str) -> Result<(), tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(conn);
    let r = client.batch_execute(&format!("create database \"{name}\" template template0")).await;
    drop(client);
    let _ = driver.await;
    r
}
