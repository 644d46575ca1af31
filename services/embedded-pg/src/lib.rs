//! A throwaway PostgreSQL cluster started from the installed binaries, for `syncline demo`,
//! `syncline bench` and the test kit: data dir in a temp folder, a free port, fsync off, run as
//! the `postgres` user when we are root. A watchdog shell stops it and removes its files when
//! this process exits, even on kill -9.

pub mod ports;

use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::chown;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use ports::{free_addr, free_port};

/// Where the binaries are looked for when `SYNCLINE_PG_BIN` is not set.
const PG_LIB: &str = "/usr/lib/postgresql";

/// Why a cluster could not be started, restarted or used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No server binaries found.
    #[error("no PostgreSQL server binaries under {PG_LIB} (apt-get install postgresql, or set SYNCLINE_PG_BIN)")]
    NoBinaries,
    /// Running as root without a `postgres` user (postgres refuses to run as root).
    #[error("running as root but there is no `postgres` user to run the server as")]
    NoPostgresUser,
    /// A file or process operation failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// `initdb` exited with an error.
    #[error("initdb failed: {0}")]
    Initdb(String),
    /// The postmaster exited or never accepted sessions.
    #[error("postgres did not start accepting sessions on {addr}:\n{log}")]
    NotListening {
        /// Where it should have listened.
        addr: SocketAddr,
        /// Its log.
        log: String,
    },
    /// The cluster was stopped for good.
    #[error("the cluster was stopped")]
    Stopped,
    /// Creating a database failed.
    #[error("creating database {name}")]
    CreateDatabase {
        /// The database.
        name: String,
        /// The cause.
        source: tokio_postgres::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// A running cluster of our own, stopped and removed on drop.
#[derive(Debug)]
pub struct Cluster {
    /// Host and port of the server.
    pub addr: SocketAddr,
    /// The postmaster and its watchdog (the watchdog outlives us by design).
    processes: Vec<Child>,
    /// Data and socket directory; `None` once stopped.
    dir: Option<PathBuf>,
    /// Where `postgres` is.
    bin: PathBuf,
    /// uid and gid to run the server as, when we are root.
    ids: Option<(u32, u32)>,
}

/// Superuser of the clusters we start.
pub const USER: &str = "postgres";

impl Cluster {
    /// Start a throwaway cluster and wait until it accepts sessions (blocking).
    // On the error paths the watchdog stays behind on purpose: it removes the half-started
    // cluster once this process exits.
    pub fn start() -> Result<Cluster, Error> {
        let bin = pg_bin_dir()?;
        let ids = if is_root() { Some(user_ids(USER).ok_or(Error::NoPostgresUser)?) } else { None };
        let dir = std::env::temp_dir().join(format!("syncline-pg-{}-{}", std::process::id(), rand::random::<u32>()));
        std::fs::create_dir_all(&dir).map_err(io(dir.display().to_string()))?;
        if let Some((uid, gid)) = ids {
            chown(&dir, Some(uid), Some(gid)).map_err(io(format!("chown {}", dir.display())))?;
        }
        let data = dir.join("data");
        let out = as_pg_user(&bin.join("initdb"), ids)
            .arg("-D")
            .arg(&data)
            .args(["-U", USER, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"])
            .stdin(Stdio::null())
            .output()
            .map_err(io("running initdb"))?;
        if !out.status.success() {
            return Err(Error::Initdb(String::from_utf8_lossy(&out.stderr).into_owned()));
        }
        let port = free_port().map_err(io("finding a free port"))?;
        let mut cluster =
            Cluster { addr: SocketAddr::from(([127, 0, 0, 1], port)), processes: Vec::new(), dir: Some(dir), bin, ids };
        cluster.start_again()?;
        Ok(cluster)
    }

    /// A URL for database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        self.url_at(self.addr, db)
    }

    /// A URL for database `db` reached through `addr` (e.g. a fault proxy).
    pub fn url_at(&self, addr: SocketAddr, db: &str) -> String {
        format!("postgres://{USER}@{}:{}/{db}", addr.ip(), addr.port())
    }

    /// Create database `name`, waiting up to a minute for the server to be ready; its URL.
    pub async fn create_database(&self, name: &str) -> Result<String, Error> {
        create_database(&self.url("postgres"), name).await?;
        Ok(self.url(name))
    }

    /// Stop the postmaster as a crash would (immediate shutdown: every session is cut),
    /// keeping its files for [`start_again`](Self::start_again) (blocking).
    pub fn kill_postmaster(&mut self) -> Result<(), Error> {
        if let Some(pm) = self.processes.first_mut() {
            let _ = Command::new("kill").args(["-QUIT", &pm.id().to_string()]).status();
            pm.wait().map_err(io("waiting for the postmaster"))?;
        }
        Ok(())
    }

    /// Start the postmaster again on the same port and data, and wait until it accepts
    /// sessions (blocking).
    #[allow(clippy::zombie_processes)] // the watchdog outlives us by design
    pub fn start_again(&mut self) -> Result<(), Error> {
        let dir = self.dir.clone().ok_or(Error::Stopped)?;
        let log_path = dir.join("postgres.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(log_path.display().to_string()))?;
        if let Some((uid, gid)) = self.ids {
            let _ = chown(&log_path, Some(uid), Some(gid));
        }
        let child = as_pg_user(&self.bin.join("postgres"), self.ids)
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-p", &self.addr.port().to_string(), "-k"])
            .arg(&dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=400", "-c", "shared_buffers=128MB", "-c", "lc_messages=C"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io("opening the postgres log"))?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(io("starting postgres"))?;
        let watchdog = spawn_watchdog(child.id(), &dir)?;
        self.processes = vec![child, watchdog];
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.accepting() {
            let exited = matches!(self.processes[0].try_wait(), Ok(Some(_)));
            if exited || Instant::now() > deadline {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(Error::NotListening { addr: self.addr, log });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Whether the server accepts sessions: listening is not enough, after a crash it
    /// refuses them until its recovery is done.
    fn accepting(&self) -> bool {
        let probe = Command::new(self.bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &self.addr.port().to_string(), "-t", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match probe {
            Ok(status) => status.success(),
            // A bin dir without pg_isready: listening is the best we can tell.
            Err(_) => TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok(),
        }
    }

    /// Crash and restart the server, down for about `down` (blocking).
    pub fn restart(&mut self, down: Duration) -> Result<(), Error> {
        self.kill_postmaster()?;
        std::thread::sleep(down);
        self.start_again()
    }

    /// Stop the server (immediate shutdown) and remove its files (blocking).
    pub fn stop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        let _ = self.kill_postmaster();
        let _ = std::fs::remove_dir_all(dir);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Create database `name` through the admin URL `admin_url`, retrying for up to a minute
/// while the server is not reachable yet or still starting.
pub async fn create_database(admin_url: &str, name: &str) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match create(admin_url, name).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() < deadline && starting_up(&e) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(source) => return Err(Error::CreateDatabase { name: name.to_string(), source }),
        }
    }
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

/// The directory holding `initdb` and `postgres`: `SYNCLINE_PG_BIN`, else the newest
/// version under /usr/lib/postgresql.
pub fn pg_bin_dir() -> Result<PathBuf, Error> {
    if let Ok(dir) = std::env::var("SYNCLINE_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(PG_LIB)
        .map_err(|_| Error::NoBinaries)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p).ok_or(Error::NoBinaries)
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

/// Command that runs as the `postgres` user when we are root (postgres refuses root).
fn as_pg_user(program: &Path, ids: Option<(u32, u32)>) -> Command {
    let mut cmd = Command::new(program);
    if let Some((uid, gid)) = ids {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// A shell that waits for this process to end, then stops postgres and removes its files.
fn spawn_watchdog(pg_pid: u32, dir: &Path) -> Result<Child, Error> {
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
        .map_err(io("spawning the cluster watchdog"))
}
