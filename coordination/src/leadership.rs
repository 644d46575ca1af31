//! Leader election for replica groups (mediator, participant) over a session-level advisory
//! lock, with a fencing epoch.
//!
//! Every replica runs one [`Leadership`] task. A passive replica waits on a blocking
//! `pg_advisory_lock` on a dedicated connection, so it takes over the moment the holder's
//! session ends. On taking the lock it increments the group's epoch in the `leadership`
//! table; writes of the active go through [`fenced`], which fails once a newer epoch exists,
//! so a former active that lost its lock can never write again.
//!
//! The active confirms its lock session every `check_interval` (a heartbeat on that same
//! session) and demotes itself when it could not confirm for `lease_timeout`. A session that
//! hangs without dying (a network partition that keeps TCP open) would keep the lock; so
//! passive replicas terminate the holder's backend once its heartbeat, by the database's
//! clock, is older than `lease_timeout + takeover_grace` — by then the holder has demoted
//! itself.
//!
//! Fenced transactions share-lock the group's `leadership` row, so a takeover waits until
//! they end; the heartbeat lives in its own row (`leadership_heartbeat`) so that they never
//! delay it. Each statement of a fenced transaction, and each pause between its statements,
//! is bounded by the server (`SET LOCAL`) to half the lease: a leader partitioned inside one
//! cannot hold up the next takeover beyond the lease.

use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Integer, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use scoped_futures::ScopedFutureExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::db::{self, Db, SessionKind};
use crate::error::{DbError, DieselContext, HasDbError};
use crate::locks::{self, LockId};

/// Result of a leadership call.
pub type Result<T, E = LeadershipError> = std::result::Result<T, E>;

/// What leadership calls fail with: the database's errors, and the leadership-specific ones.
#[derive(Debug, thiserror::Error)]
pub enum LeadershipError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A write carried a fencing epoch older than the group's current one.
    #[error("fenced: replica group {group} is at epoch {current}, this write carried epoch {epoch}")]
    Fenced {
        /// The replica group.
        group: String,
        /// The epoch the write carried.
        epoch: i64,
        /// The group's current epoch.
        current: i64,
    },
    /// The operation needs the active replica, and this one is passive.
    #[error("replica is not active in group {group}")]
    NotActive {
        /// The replica group.
        group: String,
    },
    /// `set_passive` found no replica waiting to take over, so this one stays active.
    #[error("no passive replica of group {group} is waiting to take over; staying active")]
    NoStandby {
        /// The replica group.
        group: String,
    },
    /// The group or its timing is misconfigured.
    #[error("invalid leadership configuration: {0}")]
    InvalidConfig(String),
}

impl LeadershipError {
    /// True when the same call may succeed later without anyone acting on the cause.
    pub fn is_retryable(&self) -> bool {
        self.db_error().is_some_and(DbError::is_retryable)
    }
}

impl HasDbError for LeadershipError {
    fn db_error(&self) -> Option<&DbError> {
        match self {
            LeadershipError::Db(e) => Some(e),
            _ => None,
        }
    }
}

/// Timing of a replica group's leadership: the `replication` section of a mediator or
/// participant in the configuration, and what [`Leadership::start`] runs with.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeadershipConfig {
    /// The active demotes itself when it could not confirm its lock session for this long
    /// (default 2s).
    #[serde(with = "humantime_serde")]
    pub lease_timeout: Duration,
    /// How often the active confirms its lock session and passives check for a silent
    /// holder; below `lease_timeout` (default 200ms).
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// Extra time passives give a silent holder (clock and network slack): they terminate
    /// the session of a holder whose last confirmation is older than `lease_timeout +
    /// takeover_grace` (default 1s). A holder whose session ended loses the lock at once.
    #[serde(with = "humantime_serde")]
    pub takeover_grace: Duration,
}

impl Default for LeadershipConfig {
    fn default() -> Self {
        LeadershipConfig {
            lease_timeout: Duration::from_secs(2),
            check_interval: Duration::from_millis(200),
            takeover_grace: Duration::from_secs(1),
        }
    }
}

/// A leadership timing that cannot work, found by [`LeadershipConfig::validate`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidTiming {
    /// The field of [`LeadershipConfig`], as named there (and in the configuration).
    pub field: &'static str,
    /// What is wrong with its value.
    pub problem: String,
}

impl LeadershipConfig {
    /// Bound on each statement of a fenced transaction and each pause between them: half
    /// the lease, so the server has ended a partitioned leader's transaction before the
    /// watchdog (lease + grace) lets a passive take over, and a takeover, which may wait
    /// for `lease_timeout`, outlasts one step of a transaction it has to wait for.
    pub fn step_timeout(&self) -> Duration {
        (self.lease_timeout / 2).max(Duration::from_millis(1))
    }

    /// Refuse a zero check interval (a zero tokio interval panics) and one that is not below
    /// the lease (the active would demote between two confirmations).
    pub fn validate(&self) -> std::result::Result<(), InvalidTiming> {
        let show = |d: Duration| humantime_serde::re::humantime::format_duration(d).to_string();
        if self.check_interval.is_zero() {
            return Err(InvalidTiming { field: "check_interval", problem: "must be positive".into() });
        }
        if self.check_interval >= self.lease_timeout {
            return Err(InvalidTiming {
                field: "check_interval",
                problem: format!(
                    "{} must be shorter than lease_timeout ({})",
                    show(self.check_interval),
                    show(self.lease_timeout)
                ),
            });
        }
        Ok(())
    }
}

/// Proof of leadership that every write of the active carries: group and epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    /// The replica group.
    pub group: String,
    /// The epoch this replica took over at.
    pub epoch: i64,
    /// Longest a statement of a fenced transaction may run, and longest the transaction may
    /// sit idle between statements ([`LeadershipConfig::step_timeout`]).
    pub step_timeout: Duration,
}

/// Where a replica stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not leading: waiting for the lock, or unable to reach the database.
    Passive,
    /// Leading under this fence.
    Active(Fence),
}

impl Role {
    /// True when active.
    pub fn is_active(&self) -> bool {
        matches!(self, Role::Active(_))
    }

    /// The fence, when active.
    pub fn fence(&self) -> Option<&Fence> {
        match self {
            Role::Active(f) => Some(f),
            Role::Passive => None,
        }
    }
}

/// The current leader of a group as the `leadership` table records it.
#[derive(Clone, Debug, PartialEq, Eq, QueryableByName)]
pub struct Leader {
    /// Epoch of the latest takeover.
    #[diesel(sql_type = BigInt)]
    pub epoch: i64,
    /// Replica name of the holder.
    #[diesel(sql_type = Text)]
    pub holder: String,
    /// Backend pid of the holder's lock session.
    #[diesel(sql_type = Integer)]
    pub holder_pid: i32,
    /// Last confirmed heartbeat (µs, database clock).
    #[diesel(sql_type = BigInt)]
    pub heartbeat_ts: i64,
}

/// The recorded leader of `group`, if it ever had one.
pub async fn leader(conn: &mut AsyncPgConnection, group: &str) -> Result<Option<Leader>, DbError> {
    let rows: Vec<Leader> = diesel::sql_query(
        "select l.epoch, l.holder, l.holder_pid, coalesce(h.heartbeat_ts, l.heartbeat_ts) as heartbeat_ts \
         from leadership l left join leadership_heartbeat h on h.group_key = l.group_key and h.epoch = l.epoch \
         where l.group_key = $1 and l.group_name = $2",
    )
    .bind::<BigInt, _>(LockId::leadership(group).key())
    .bind::<Text, _>(group)
    .load(conn)
    .await
    .during("reading the group leader")?;
    Ok(rows.into_iter().next())
}

#[derive(QueryableByName)]
struct Epoch {
    #[diesel(sql_type = BigInt)]
    epoch: i64,
}

/// Fail with `Fenced` unless `fence` is the group's current epoch. Call it first inside the
/// transaction that writes: the row lock it takes (`FOR SHARE`) makes a concurrent takeover
/// wait until that transaction ends, so no write commits under an outdated epoch. It also
/// bounds the rest of the transaction (`SET LOCAL statement_timeout` and
/// `idle_in_transaction_session_timeout` to `fence.step_timeout`), so the server ends the
/// transaction of a stuck or partitioned writer, and releases the row, in time.
pub async fn check_fence(conn: &mut AsyncPgConnection, fence: &Fence) -> Result<()> {
    let step = fence.step_timeout.as_millis().max(1).to_string();
    // One round trip: the settings apply from the next statement on, and are undone at the
    // end of the transaction.
    let rows: Vec<Epoch> = diesel::sql_query(
        "select l.epoch from leadership l, \
           (select set_config('statement_timeout', $2, true), \
                   set_config('idle_in_transaction_session_timeout', $2, true)) bounds \
         where l.group_key = $1 for share of l",
    )
    .bind::<BigInt, _>(LockId::leadership(&fence.group).key())
    .bind::<Text, _>(step)
    .load(conn)
    .await
    .during("checking the fencing epoch")?;
    let current = rows.into_iter().next().map(|r| r.epoch).unwrap_or(0);
    if current != fence.epoch {
        return Err(LeadershipError::Fenced { group: fence.group.clone(), epoch: fence.epoch, current });
    }
    Ok(())
}

/// Run `f` in a transaction that first checks `fence` (see [`check_fence`]): the write
/// commits only while `fence` is the current epoch. Each statement of `f`, and each pause
/// between them, must stay below `fence.step_timeout`, or the server aborts the transaction.
/// The error type is the caller's (a service's store error): it only needs to hold a
/// [`LeadershipError`], which carries `Fenced` and the database's errors (BEGIN, COMMIT).
pub async fn fenced<'a, T, E, F>(conn: &'a mut AsyncPgConnection, fence: &'a Fence, f: F) -> Result<T, E>
where
    F: for<'c> FnOnce(&'c mut AsyncPgConnection) -> scoped_futures::ScopedBoxFuture<'a, 'c, Result<T, E>> + Send + 'a,
    T: Send + 'a,
    E: From<LeadershipError> + Send + 'a,
{
    let r = conn
        .transaction::<T, Tx<E>, _>(async move |c| {
            check_fence(&mut *c, fence).await.map_err(|e| Tx::Caller(e.into()))?;
            f(c).await.map_err(Tx::Caller)
        })
        .await;
    r.map_err(|e| match e {
        Tx::Caller(e) => e,
        Tx::Diesel(e) => LeadershipError::Db(DbError::from_diesel("running a fenced transaction", e)).into(),
    })
}

/// The error of a fenced transaction: the caller's, or Diesel's from BEGIN, COMMIT or ROLLBACK.
enum Tx<E> {
    Caller(E),
    Diesel(diesel::result::Error),
}

impl<E> From<diesel::result::Error> for Tx<E> {
    fn from(e: diesel::result::Error) -> Self {
        Tx::Diesel(e)
    }
}

/// A replica's leadership: owns the task that competes for the group's lock. Only the owner
/// stops it ([`shutdown`](Self::shutdown) releases the lock); others get a [`LeadershipHandle`].
pub struct Leadership {
    handle: LeadershipHandle,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

/// A cloneable view of a replica's leadership (role, hand-over requests), e.g. for the admin
/// API; it does not keep the task running.
#[derive(Clone)]
pub struct LeadershipHandle {
    role: watch::Receiver<Role>,
    requests: mpsc::Sender<oneshot::Sender<Result<()>>>,
    group: String,
}

impl Leadership {
    /// Start competing for leadership of replica group `group` (e.g. `mediator`,
    /// `participant1`; all its replicas use the same name) as `replica` (recorded as the
    /// holder): `db` serves short statements (the passive's watchdog), a dedicated lock
    /// session is opened from its configuration.
    pub fn start(
        db: Db,
        group: impl Into<String>,
        replica: impl Into<String>,
        cfg: LeadershipConfig,
    ) -> Result<Leadership> {
        let (group, replica) = (group.into(), replica.into());
        if group.is_empty() {
            return Err(LeadershipError::InvalidConfig("leadership group name is empty".into()));
        }
        cfg.validate().map_err(|e| LeadershipError::InvalidConfig(format!("leadership {e}")))?;
        let (role_tx, role) = watch::channel(Role::Passive);
        let (requests, rx) = mpsc::channel(4);
        let cancel = CancellationToken::new();
        let span = tracing::info_span!("leadership", group = %group, replica = %replica);
        let runner =
            Runner { db, group: group.clone(), replica, cfg, role: role_tx, requests: rx, cancel: cancel.clone() };
        let task = tokio::spawn(runner.run().instrument(span));
        Ok(Leadership { handle: LeadershipHandle { role, requests, group }, cancel, task: Some(task) })
    }

    /// A cloneable handle (role, hand-over requests).
    pub fn handle(&self) -> LeadershipHandle {
        self.handle.clone()
    }

    /// This replica's role now.
    pub fn role(&self) -> Role {
        self.handle.role()
    }

    /// A receiver that sees every role change (for the replica manager).
    pub fn watch(&self) -> watch::Receiver<Role> {
        self.handle.watch()
    }

    /// See [`LeadershipHandle::set_passive`].
    pub async fn set_passive(&self) -> Result<()> {
        self.handle.set_passive().await
    }

    /// Stop competing; an active replica demotes and releases the lock first. Handles see
    /// the replica passive and their requests answered `NotActive` afterwards.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl LeadershipHandle {
    /// This replica's role now.
    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    /// A receiver that sees every role change.
    pub fn watch(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    /// Hand leadership over, only if another replica is waiting to take it; otherwise this
    /// replica stays active and `NoStandby` says so. `NotActive` on a passive or stopped replica.
    pub async fn set_passive(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        let gone = || LeadershipError::NotActive { group: self.group.clone() };
        self.requests.send(tx).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

struct Runner {
    db: Db,
    group: String,
    replica: String,
    cfg: LeadershipConfig,
    role: watch::Sender<Role>,
    requests: mpsc::Receiver<oneshot::Sender<Result<()>>>,
    cancel: CancellationToken,
}

/// Why an active term ended.
enum TermEnd {
    /// Shutting down: release and stop.
    Cancelled,
    /// Handed over on request: wait for the lock again.
    HandedOver,
    /// Could not confirm the session, or someone else took over.
    Lost,
}

impl Runner {
    async fn run(mut self) {
        let lock = LockId::leadership(&self.group);
        let mut backoff = self.cfg.check_interval;
        loop {
            let Some(mut conn) = self.acquire(lock).await else {
                break;
            };
            // A session that hangs here holds the lock without leading: give up on it.
            let lease = self.cfg.lease_timeout;
            let took = tokio::time::timeout(lease, self.take_over(&mut conn)).await.unwrap_or_else(|_| {
                Err(DbError::Timeout { during: "recording a leadership takeover".into(), after: lease }.into())
            });
            match took {
                Ok(fence) => {
                    backoff = self.cfg.check_interval;
                    tracing::info!(epoch = fence.epoch, "active");
                    metrics::gauge!("syncline_leadership_active", "group" => self.group.clone()).set(1.0);
                    metrics::counter!("syncline_leadership_takeovers_total", "group" => self.group.clone())
                        .increment(1);
                    self.role.send_replace(Role::Active(fence.clone()));
                    let end = self.lead(&mut conn, &fence).await;
                    self.role.send_replace(Role::Passive);
                    metrics::gauge!("syncline_leadership_active", "group" => self.group.clone()).set(0.0);
                    match end {
                        TermEnd::Cancelled => {
                            release(conn, lock).await;
                            tracing::info!("released leadership on shutdown");
                            break;
                        }
                        TermEnd::HandedOver => {
                            release(conn, lock).await;
                            tracing::info!("handed leadership over");
                        }
                        // The session may be half-dead: drop it rather than talk to it.
                        TermEnd::Lost => drop(conn),
                    }
                }
                Err(e) => {
                    tracing::warn!(%e, "could not record the takeover; retrying");
                    drop(conn);
                    if self.pause(backoff).await {
                        break;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        self.role.send_replace(Role::Passive);
    }

    /// Wait for the lock as a passive replica; `None` when cancelled. Meanwhile the watchdog
    /// runs and hand-over requests are answered with `NotActive`.
    async fn acquire(&mut self, lock: LockId) -> Option<AsyncPgConnection> {
        let mut backoff = self.cfg.check_interval;
        loop {
            let cfg = self.db.config().clone();
            let attempt = async move {
                let mut conn = db::connect(&cfg, SessionKind::Lock).await?;
                locks::lock(&mut conn, lock).await?;
                Ok::<_, LeadershipError>(conn)
            };
            tokio::pin!(attempt);
            let watchdog = watchdog(&self.db, &self.group, &self.cfg);
            tokio::pin!(watchdog);
            let outcome = loop {
                tokio::select! {
                    _ = self.cancel.cancelled() => return None,
                    r = &mut attempt => break r,
                    _ = &mut watchdog => unreachable!("the watchdog runs until dropped"),
                    Some(reply) = self.requests.recv() => {
                        let _ = reply.send(Err(LeadershipError::NotActive { group: self.group.clone() }));
                    }
                }
            };
            match outcome {
                Ok(conn) => return Some(conn),
                Err(e) => {
                    tracing::warn!(%e, "waiting for leadership failed; reconnecting");
                    if self.pause(backoff).await {
                        return None;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Record the takeover: the epoch goes up by one (waiting for fenced transactions of the
    /// previous epoch to end), the holder is this session, and its heartbeat starts now. A
    /// group's first row continues from any row of the same name under an older lock id
    /// (before leadership locks used the two-key form), so epochs never go backwards.
    async fn take_over(&self, conn: &mut AsyncPgConnection) -> Result<Fence> {
        let lock = LockId::leadership(&self.group);
        let rows: Vec<Epoch> = diesel::sql_query(
            "with t as ( \
               insert into leadership as l (group_key, group_name, epoch, holder, holder_pid, acquired_ts, heartbeat_ts) \
               values ($1, $2, 1 + coalesce((select max(epoch) from leadership where group_name = $2), 0), \
                 $3, pg_backend_pid(), syncline_now_micros(), syncline_now_micros()) \
               on conflict (group_key) do update set epoch = l.epoch + 1, holder = excluded.holder, \
                 holder_pid = excluded.holder_pid, acquired_ts = excluded.acquired_ts, heartbeat_ts = excluded.heartbeat_ts \
               where l.group_name = excluded.group_name \
               returning l.group_key, l.epoch) \
             insert into leadership_heartbeat as h (group_key, epoch, holder_pid, heartbeat_ts) \
             select group_key, epoch, pg_backend_pid(), syncline_now_micros() from t \
             on conflict (group_key) do update set epoch = excluded.epoch, holder_pid = excluded.holder_pid, \
               heartbeat_ts = excluded.heartbeat_ts \
             returning h.epoch",
        )
        .bind::<BigInt, _>(lock.key())
        .bind::<Text, _>(&self.group)
        .bind::<Text, _>(&self.replica)
        .load(conn)
        .await
        .during("recording a leadership takeover")?;
        // Crash window: the new epoch is committed, this replica does not lead yet.
        fail::fail_point!("leadership-after-takeover-insert", |_| {
            Err(DbError::from_connection("recording a leadership takeover", "failpoint").into())
        });
        match rows.into_iter().next() {
            Some(r) => Ok(Fence { group: self.group.clone(), epoch: r.epoch, step_timeout: self.cfg.step_timeout() }),
            None => Err(LeadershipError::InvalidConfig(format!(
                "replica group name {:?} shares its lock id with another group in this database; rename one",
                self.group
            ))),
        }
    }

    /// Lead until the term ends: heartbeat every `check_interval`, answer hand-over requests.
    async fn lead(&mut self, conn: &mut AsyncPgConnection, fence: &Fence) -> TermEnd {
        let mut confirmed = Instant::now();
        let mut tick = tokio::time::interval(self.cfg.check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return TermEnd::Cancelled,
                Some(reply) = self.requests.recv() => {
                    match self.hand_over_possible(conn, confirmed).await {
                        Ok(()) => {
                            let _ = reply.send(Ok(()));
                            return TermEnd::HandedOver;
                        }
                        Err(e) => {
                            let lost = !matches!(e, LeadershipError::NoStandby { .. });
                            let _ = reply.send(Err(e));
                            if lost {
                                return TermEnd::Lost;
                            }
                        }
                    }
                }
                _ = tick.tick() => {
                    let left = self.cfg.lease_timeout.saturating_sub(confirmed.elapsed());
                    match tokio::time::timeout(left, heartbeat(conn, fence)).await {
                        Ok(Ok(true)) => confirmed = Instant::now(),
                        Ok(Ok(false)) => {
                            tracing::warn!(epoch = fence.epoch, "another replica took over; demoting");
                            return TermEnd::Lost;
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(%e, "lock session failed; demoting");
                            return TermEnd::Lost;
                        }
                        Err(_) => {
                            tracing::warn!(lease = ?self.cfg.lease_timeout, "could not confirm the lock session within the lease; demoting");
                            return TermEnd::Lost;
                        }
                    }
                }
            }
        }
    }

    /// `Ok` when another replica waits for the lock, `NoStandby` when none does.
    async fn hand_over_possible(&self, conn: &mut AsyncPgConnection, confirmed: Instant) -> Result<()> {
        let left = self.cfg.lease_timeout.saturating_sub(confirmed.elapsed());
        let lock = LockId::leadership(&self.group);
        let waiters = tokio::time::timeout(left, locks::waiters(conn, lock))
            .await
            .map_err(|_| DbError::Timeout { during: "counting standby replicas".into(), after: left })??;
        if waiters == 0 {
            return Err(LeadershipError::NoStandby { group: self.group.clone() });
        }
        Ok(())
    }

    /// Sleep `d` unless cancelled first (true when cancelled).
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.cancel.cancelled() => true,
            _ = tokio::time::sleep(d) => false,
        }
    }
}

/// Confirm on the lock session that it still holds the lock at `fence`'s epoch, and record
/// the heartbeat. False when the epoch or holder changed. Its own row: fenced transactions,
/// which share-lock the `leadership` row, never delay it.
async fn heartbeat(conn: &mut AsyncPgConnection, fence: &Fence) -> Result<bool> {
    let n = diesel::sql_query(
        "update leadership_heartbeat set heartbeat_ts = syncline_now_micros() \
         where group_key = $1 and epoch = $2 and holder_pid = pg_backend_pid()",
    )
    .bind::<BigInt, _>(LockId::leadership(&fence.group).key())
    .bind::<BigInt, _>(fence.epoch)
    .execute(conn)
    .await
    .during("leadership heartbeat")?;
    Ok(n == 1)
}

/// While passive: every check interval, terminate the session of a holder whose heartbeat is
/// older than lease + grace (it has demoted itself by then, but its session still holds the
/// lock). Runs until dropped.
async fn watchdog(db: &Db, group: &str, cfg: &LeadershipConfig) {
    let stale_after = (cfg.lease_timeout + cfg.takeover_grace).as_micros() as i64;
    let lock = LockId::leadership(group);
    let key = lock.key();
    let q = format!(
        "select pg_terminate_backend(h.holder_pid) as flag from leadership_heartbeat h \
         where h.group_key = $1 and syncline_now_micros() - h.heartbeat_ts > $2 \
         and exists (select 1 from pg_locks k where {m} and k.granted and k.pid = h.holder_pid)",
        m = locks::match_lock_sql("k", lock)
    );
    let mut tick = tokio::time::interval(cfg.check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let r = db
            .run("terminating a silent leader", |c| {
                let q = q.clone();
                async move {
                    diesel::sql_query(q)
                        .bind::<BigInt, _>(key)
                        .bind::<BigInt, _>(stale_after)
                        .load::<locks::Flag>(c)
                        .await
                        .during("terminating a silent leader")
                }
                .scope_boxed()
            })
            .await;
        match r {
            Ok(rows) if rows.iter().any(|r| r.flag) => {
                tracing::warn!("terminated the session of a leader that stopped confirming its lease");
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(%e, "leadership watchdog could not check the holder"),
        }
    }
}

/// Release the lock and close the session (closing alone would release it too).
async fn release(mut conn: AsyncPgConnection, lock: LockId) {
    let r = tokio::time::timeout(Duration::from_secs(1), locks::unlock(&mut conn, lock)).await;
    if !matches!(r, Ok(Ok(true))) {
        tracing::debug!("lock release did not confirm; closing the session releases it");
    }
}
