//! Pool construction, dedicated connections, statement timeouts, schema migration and the one
//! retry policy for transient errors that every module uses.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use diesel::sql_types::BigInt;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use diesel_migrations::MigrationHarness;
use futures_util::FutureExt;
use scoped_futures::ScopedBoxFuture;
use tokio_postgres::NoTls;

use crate::error::{DbError, DieselContext, HasDbError, Result};
use crate::locks::LockId;

/// A Diesel-async connection pool.
pub type PgPool = bb8::Pool<AsyncDieselConnectionManager<AsyncPgConnection>>;

/// How to reach the database and how patient to be with it.
#[derive(Clone, Debug)]
pub struct DbConfig {
    /// `postgres://user:password@host:port/database` (tokio-postgres URL or key=value form).
    pub url: String,
    /// Connections in the shared pool.
    pub pool_size: u32,
    /// How long to wait for a new connection (and for a pooled one) before giving up.
    pub connect_timeout: Duration,
    /// Server-side `statement_timeout` of pooled connections.
    pub statement_timeout: Duration,
    /// Shown in `pg_stat_activity` and in `leadership.holder`.
    pub application_name: String,
    /// Retries of transient errors (connection loss, 40001, 40P01).
    pub retry: RetryPolicy,
}

impl DbConfig {
    /// Defaults suited to an HA deployment on a local network; they are also the defaults of
    /// the configuration's `[storage]` section.
    pub fn new(url: impl Into<String>) -> Self {
        DbConfig {
            url: url.into(),
            pool_size: 8,
            connect_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(10),
            application_name: "syncline".into(),
            retry: RetryPolicy::default(),
        }
    }
}

/// Which kind of session a connection is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionKind {
    /// A pooled connection for short statements.
    Pooled,
    /// A dedicated connection that holds (or waits for) an advisory lock for a long time: no
    /// statement timeout, and aggressive keepalives on both ends so that a dead peer releases
    /// the lock within seconds rather than after the kernel's default two hours.
    Lock,
}

/// Build the tokio-postgres configuration for a session of `kind`.
pub fn pg_config(cfg: &DbConfig, kind: SessionKind) -> Result<tokio_postgres::Config> {
    let mut pg: tokio_postgres::Config =
        cfg.url.parse().map_err(|e| DbError::InvalidConfig(format!("database url: {e}")))?;
    pg.application_name(&cfg.application_name);
    pg.connect_timeout(cfg.connect_timeout);
    pg.keepalives(true);
    pg.keepalives_idle(Duration::from_secs(1));
    pg.keepalives_interval(Duration::from_secs(1));
    pg.keepalives_retries(3);
    pg.tcp_user_timeout(Duration::from_secs(4));
    // No JIT: every statement here is short, and compiling one (when the planner's estimate
    // passes `jit_above_cost`, e.g. on a large table) cost PostgreSQL more CPU than running it —
    // a third of its CPU in the sequencer benchmark.
    let options = match kind {
        SessionKind::Pooled => format!(
            "-c jit=off -c statement_timeout={} -c idle_in_transaction_session_timeout={}",
            cfg.statement_timeout.as_millis(),
            cfg.statement_timeout.as_millis().max(1) * 3
        ),
        // The server checks the client socket every 500 ms even inside a long lock wait, and
        // probes an idle client after 1 s: a crashed holder's lock is released promptly.
        SessionKind::Lock => "-c jit=off -c statement_timeout=0 -c client_connection_check_interval=500 \
             -c tcp_keepalives_idle=1 -c tcp_keepalives_interval=1 -c tcp_keepalives_count=3 \
             -c tcp_user_timeout=4000"
            .to_string(),
    };
    pg.options(options);
    Ok(pg)
}

/// Open one connection of `kind`, outside any pool.
pub async fn connect(cfg: &DbConfig, kind: SessionKind) -> Result<AsyncPgConnection> {
    let pg = pg_config(cfg, kind)?;
    open(pg).await.map_err(|e| DbError::from_connection("connecting", e))
}

async fn open(pg: tokio_postgres::Config) -> diesel::ConnectionResult<AsyncPgConnection> {
    let (client, connection) =
        pg.connect(NoTls).await.map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
    AsyncPgConnection::try_from_client_and_connection(client, connection).await
}

/// Build the shared pool. It does not connect up front, so a node can start while the
/// database is down and will work as soon as it is back.
pub fn pool(cfg: &DbConfig) -> Result<PgPool> {
    let pg = pg_config(cfg, SessionKind::Pooled)?;
    let mut manager_config = ManagerConfig::<AsyncPgConnection>::default();
    manager_config.custom_setup = Box::new(move |_url| open(pg.clone()).boxed());
    let manager = AsyncDieselConnectionManager::new_with_config(&cfg.url, manager_config);
    Ok(bb8::Pool::builder()
        .max_size(cfg.pool_size)
        .connection_timeout(cfg.connect_timeout)
        .test_on_check_out(false)
        .build_unchecked(manager))
}

/// Apply all pending migrations. Serialized across processes by an advisory lock, so any
/// number of nodes may start at once against a fresh database.
pub async fn migrate(cfg: &DbConfig) -> Result<()> {
    let mut conn = connect(cfg, SessionKind::Lock).await?;
    diesel::sql_query("select pg_advisory_lock($1)")
        .bind::<BigInt, _>(LockId::migrations().key())
        .execute(&mut conn)
        .await
        .during("taking the migration lock")?;
    let mut harness = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
    // Diesel's migration harness is synchronous; run it off the async threads. Dropping the
    // connection at the end releases the lock.
    tokio::task::spawn_blocking(move || {
        harness
            .run_pending_migrations(syncline_schema::MIGRATIONS)
            .map(|applied| applied.len())
            .map_err(|e| DbError::Migration(e.to_string()))
    })
    .await
    .map_err(|e| DbError::Migration(format!("migration task failed: {e}")))?
    .map(|applied| {
        if applied > 0 {
            tracing::info!(applied, "applied schema migrations");
        }
    })
}

/// How often and how long to retry transient errors.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: usize,
    /// First back-off delay.
    pub min_delay: Duration,
    /// Largest back-off delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_retries: 5, min_delay: Duration::from_millis(20), max_delay: Duration::from_millis(500) }
    }
}

impl RetryPolicy {
    /// No retries at all: the first error is returned.
    pub fn none() -> Self {
        RetryPolicy { max_retries: 0, ..Default::default() }
    }
}

/// Run `op` until it succeeds, fails with a non-retryable error, or the policy gives up, in
/// which case the last (retryable) error is returned for the caller to act on. Only errors
/// that wrap a retryable [`DbError`] are retried.
pub async fn retry<T, E, F, Fut>(policy: &RetryPolicy, what: &str, op: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: HasDbError + std::fmt::Display,
{
    let backoff = ExponentialBuilder::default()
        .with_min_delay(policy.min_delay)
        .with_max_delay(policy.max_delay)
        .with_max_times(policy.max_retries)
        .with_jitter();
    op.retry(backoff)
        .when(|e: &E| e.db_error().is_some_and(DbError::is_retryable))
        .notify(|e, delay| tracing::debug!(%e, ?delay, what, "retrying after transient error"))
        .await
}

/// A pool plus the retry policy: the handle services use for short database work.
#[derive(Clone)]
pub struct Db {
    pool: PgPool,
    config: DbConfig,
}

impl Db {
    /// Build the pool for `config` (no connection is made yet).
    pub fn new(config: DbConfig) -> Result<Db> {
        Ok(Db { pool: pool(&config)?, config })
    }

    /// The configuration this handle was built from.
    pub fn config(&self) -> &DbConfig {
        &self.config
    }

    /// Run `f` on a pooled connection, retrying transient errors with the configured policy.
    /// `f` returns `async move { … }.scope_boxed()` (scoped_futures), so it may borrow; its
    /// error is the caller's own type, as long as it can hold a [`DbError`].
    pub async fn run<'a, T, E, F>(&self, what: &str, f: F) -> Result<T, E>
    where
        F: for<'c> FnMut(&'c mut AsyncPgConnection) -> ScopedBoxFuture<'a, 'c, Result<T, E>> + Send + 'a,
        T: Send + 'a,
        E: From<DbError> + HasDbError + std::fmt::Display + Send + 'a,
    {
        // backon wants an `FnMut() -> Future`; the mutex lets each attempt borrow `f`.
        let f = tokio::sync::Mutex::new(f);
        let attempt = || async {
            let mut conn = self.pool.get().await.map_err(|e| DbError::from_pool(what, e))?;
            let mut f = f.lock().await;
            (*f)(&mut conn).await
        };
        retry(&self.config.retry, what, attempt).await
    }

    /// A pooled connection, for callers that manage retries themselves.
    pub async fn conn(&self) -> Result<bb8::PooledConnection<'_, AsyncDieselConnectionManager<AsyncPgConnection>>> {
        self.pool.get().await.map_err(|e| DbError::from_pool("getting a pooled connection", e))
    }
}

/// Run `f` on one given connection (e.g. a lock session), retrying only transaction
/// conflicts (40001, 40P01): other errors on a dedicated connection need the caller to act.
pub async fn retry_conflicts<'a, T, E, F>(conn: &'a mut AsyncPgConnection, what: &str, f: F) -> Result<T, E>
where
    F: for<'c> FnMut(&'c mut AsyncPgConnection) -> ScopedBoxFuture<'a, 'c, Result<T, E>> + Send + 'a,
    T: Send + 'a,
    E: HasDbError + std::fmt::Display + Send + 'a,
{
    let state = tokio::sync::Mutex::new((conn, f));
    let attempt = || async {
        let mut guard = state.lock().await;
        let (conn, f) = &mut *guard;
        f(conn).await
    };
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(5))
        .with_max_delay(Duration::from_millis(200))
        .with_max_times(20)
        .with_jitter();
    attempt
        .retry(backoff)
        .when(|e: &E| e.db_error().is_some_and(DbError::is_conflict))
        .notify(|e, delay| tracing::debug!(%e, ?delay, what, "retrying after a transaction conflict"))
        .await
}

#[derive(diesel::QueryableByName)]
struct SettingRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    value: String,
}

/// The value of a server setting (`current_setting(name)`) for this session.
pub async fn setting(conn: &mut AsyncPgConnection, name: &str) -> Result<String> {
    use diesel_async::RunQueryDsl;
    let row: SettingRow = diesel::sql_query("select current_setting($1) as value")
        .bind::<diesel::sql_types::Text, _>(name)
        .get_result(conn)
        .await
        .map_err(|e| DbError::from_diesel(&format!("reading the setting {name}"), e))?;
    Ok(row.value)
}
