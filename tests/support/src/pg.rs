//! The PostgreSQL server of a test binary: a throwaway cluster of its own (see
//! [`syncline_embedded_pg`]) or, with `DATABASE_URL` set, that server; a fresh database per test.

use std::error::Error as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

pub use syncline_embedded_pg::{pg_bin_dir, Cluster, Error};

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
}

impl Server {
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

/// The cluster of this test binary; kept in a static so it lives as long as the process
/// (its watchdog removes it when the process exits).
static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static SERVER: OnceLock<Server> = OnceLock::new();

/// The server of this test binary, started on first use.
pub fn server() -> &'static Server {
    SERVER.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => external(&url),
        _ => {
            let cluster = start_cluster()
                .unwrap_or_else(|e| panic!("cannot start a test PostgreSQL cluster: {}", error_chain(&e)));
            let cluster = CLUSTER.get_or_init(|| cluster);
            Server { addr: cluster.addr, user: syncline_embedded_pg::USER.into(), password: None, owned: true }
        }
    })
}

/// Start a throwaway cluster of its own (e.g. for a test that restarts it); blocking.
pub fn start_cluster() -> Result<Cluster, Error> {
    Cluster::start()
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
    }
}

/// `e` and its causes, one line.
fn error_chain(e: &Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
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
    let name =
        format!("t_{}_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed), rand::random::<u16>());
    if let Err(e) = syncline_embedded_pg::create_database(&server.url("postgres"), &name).await {
        panic!("cannot create test database: {}", error_chain(&e));
    }
    TestDb { url: server.url(&name), name }
}
