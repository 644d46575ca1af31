//! Namespaced session-level advisory locks and what `pg_locks` says about them.

use diesel::pg::Pg;
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::sql_types::{BigInt, Bool, Integer};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::error::{DieselContext, Result};

/// Fixed prefix of every Syncline lock id ("SYNC"), so we never collide with other users of
/// the same database.
pub const LOCK_PREFIX: u32 = 0x5359_4E43;

/// What a lock is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum LockRole {
    /// Serializes schema migrations.
    Migrations = 1,
    /// Exclusive ownership of a sequencer node index.
    SequencerIndex = 2,
    /// Leadership of a replica group.
    Leadership = 3,
}

/// A Syncline advisory lock. Migration and sequencer index locks use the single bigint key
/// form (prefix, role and a 16-bit index packed into one key); leadership locks use the
/// two-key form `(int4, int4)` with key1 = [`LOCK_PREFIX`] and key2 = a full 32-bit hash of
/// the group name, so that distinct groups practically never share a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LockId {
    role: LockRole,
    // Below 2^16 for single-key locks; the whole second key for two-key locks.
    index: u32,
}

impl LockId {
    /// The lock for `role` and `index`.
    pub fn new(role: LockRole, index: u16) -> Self {
        LockId { role, index: u32::from(index) }
    }

    /// The migration lock.
    pub fn migrations() -> Self {
        LockId::new(LockRole::Migrations, 0)
    }

    /// The leadership lock of the replica group called `group` (two-key form, key2 = the
    /// 32-bit FNV-1a hash of the name: stable across builds and platforms).
    pub fn leadership(group: &str) -> Self {
        let mut h: u32 = 0x811c_9dc5;
        for b in group.bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        LockId { role: LockRole::Leadership, index: h }
    }

    // Only leadership locks need more than 16 bits of index.
    fn two_key(&self) -> bool {
        self.role == LockRole::Leadership
    }

    /// `pg_locks.classid` of this lock: the prefix.
    pub fn classid(&self) -> u32 {
        LOCK_PREFIX
    }

    /// `pg_locks.objid` of this lock: the low half of the bigint key, or the second key.
    pub fn objid(&self) -> u32 {
        if self.two_key() {
            self.index
        } else {
            ((self.role as u32) << 16) | self.index
        }
    }

    /// `pg_locks.objsubid` of this lock: 1 for the bigint form, 2 for the two-key form.
    pub fn objsubid(&self) -> i16 {
        if self.two_key() {
            2
        } else {
            1
        }
    }

    /// `classid` and `objid` packed into one bigint: the key passed to `pg_advisory_lock` for
    /// single-key locks, and for leadership locks the group's key in the `leadership` table.
    pub fn key(&self) -> i64 {
        (i64::from(self.classid()) << 32) | i64::from(self.objid())
    }

    /// `select {func}(<this lock's key arguments>) {rest}` with the keys bound.
    fn call(&self, func: &str, rest: &str) -> BoxedSqlQuery<'static, Pg, SqlQuery> {
        self.statement(&format!("select {func}"), rest)
    }

    /// `{head}(<this lock's key arguments>) {rest}` with the keys bound.
    fn statement(&self, head: &str, rest: &str) -> BoxedSqlQuery<'static, Pg, SqlQuery> {
        if self.two_key() {
            // int4 arguments: the keys' bit patterns, as pg_locks shows them unsigned.
            diesel::sql_query(format!("{head}($1, $2) {rest}"))
                .into_boxed()
                .bind::<Integer, _>(self.classid() as i32)
                .bind::<Integer, _>(self.objid() as i32)
        } else {
            diesel::sql_query(format!("{head}($1) {rest}")).into_boxed().bind::<BigInt, _>(self.key())
        }
    }
}

// pg_locks shows a bigint key as classid = high half, objid = low half, objsubid = 1, and a
// two-key lock as classid = key1, objid = key2, objsubid = 2.
// A Syncline-style single-key advisory lock row of this database (alias `l`).
macro_rules! advisory_here {
    () => {
        "l.locktype = 'advisory' and l.objsubid = 1 \
         and l.database = (select oid from pg_database where datname = current_database())"
    };
}
const ADVISORY_HERE: &str = advisory_here!();

/// SQL condition matching rows of `pg_locks` aliased `alias` to lock `id` (either form) in
/// the current database. The ids are inlined: they are integers computed here.
pub(crate) fn match_lock_sql(alias: &str, id: LockId) -> String {
    format!(
        "{a}.locktype = 'advisory' and {a}.database = (select oid from pg_database where datname = current_database()) \
         and {a}.classid = {c}::oid and {a}.objid = {o}::oid and {a}.objsubid = {s}",
        a = alias,
        c = id.classid(),
        o = id.objid(),
        s = id.objsubid(),
    )
}

/// A one-boolean row (`select … as flag`).
#[derive(QueryableByName)]
pub(crate) struct Flag {
    #[diesel(sql_type = Bool)]
    pub(crate) flag: bool,
}

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Try to take `id` exclusively for this session; false if another session holds it.
pub async fn try_lock(conn: &mut AsyncPgConnection, id: LockId) -> Result<bool> {
    let r: Flag =
        id.call("pg_try_advisory_lock", "as flag").get_result(conn).await.during("trying an advisory lock")?;
    Ok(r.flag)
}

/// Try to take `id` until the end of the current transaction; false if another session
/// holds it (session- and transaction-level holds of one key exclude each other).
pub async fn try_xact_lock(conn: &mut AsyncPgConnection, id: LockId) -> Result<bool> {
    let r: Flag = id
        .call("pg_try_advisory_xact_lock", "as flag")
        .get_result(conn)
        .await
        .during("trying a transaction advisory lock")?;
    Ok(r.flag)
}

/// Wait until `id` can be taken exclusively for this session. The wait is blocking (taken the
/// moment the holder lets go or its session ends) but runs in slices of at most a second, each
/// its own transaction (migration 000015): a session waiting in one statement would hold back
/// VACUUM's horizon, for every table of the database, as long as it waits. Not inside a
/// transaction block.
pub async fn lock(conn: &mut AsyncPgConnection, id: LockId) -> Result<()> {
    id.statement("call syncline_advisory_lock_wait", "").execute(conn).await.during("waiting for an advisory lock")?;
    Ok(())
}

/// Release `id` if this session holds it; false if it did not.
pub async fn unlock(conn: &mut AsyncPgConnection, id: LockId) -> Result<bool> {
    let r: Flag =
        id.call("pg_advisory_unlock", "as flag").get_result(conn).await.during("releasing an advisory lock")?;
    Ok(r.flag)
}

/// The backend pid of this session.
pub async fn backend_pid(conn: &mut AsyncPgConnection) -> Result<i32> {
    let r: Pid =
        diesel::sql_query("select pg_backend_pid() as pid").get_result(conn).await.during("reading the backend pid")?;
    Ok(r.pid)
}

/// The backend pid of the session holding `id`, if any.
pub async fn holder_pid(conn: &mut AsyncPgConnection, id: LockId) -> Result<Option<i32>> {
    let q = format!("select l.pid as pid from pg_locks l where {} and l.granted limit 1", match_lock_sql("l", id));
    let r: Option<Pid> = diesel::sql_query(q)
        .get_result(conn)
        .await
        .map(Some)
        .or_else(|e| match e {
            diesel::result::Error::NotFound => Ok(None),
            e => Err(e),
        })
        .during("looking up an advisory lock holder")?;
    Ok(r.map(|p| p.pid))
}

/// True when this very session holds `id`.
pub async fn held_by_me(conn: &mut AsyncPgConnection, id: LockId) -> Result<bool> {
    let q = format!(
        "select exists (select 1 from pg_locks l where {} and l.granted \
         and l.pid = pg_backend_pid()) as flag",
        match_lock_sql("l", id)
    );
    let r: Flag = diesel::sql_query(q).get_result(conn).await.during("checking an advisory lock")?;
    Ok(r.flag)
}

/// How many sessions are queued waiting for `id`.
pub async fn waiters(conn: &mut AsyncPgConnection, id: LockId) -> Result<i64> {
    let q = format!("select count(*) as n from pg_locks l where {} and not l.granted", match_lock_sql("l", id));
    let r: Count = diesel::sql_query(q).get_result(conn).await.during("counting advisory lock waiters")?;
    Ok(r.n)
}

/// SQL condition, usable inside other queries, that is true while some session holds the
/// single-key `role` lock whose index is the SQL expression `index_sql` (e.g. a column).
pub fn held_sql(role: LockRole, index_sql: &str) -> String {
    format!(
        "exists (select 1 from pg_locks l where {ADVISORY_HERE} \
         and l.granted and l.classid = {prefix}::oid and l.objid = ({role} + {index_sql})::oid)",
        prefix = LOCK_PREFIX,
        role = (role as u32) << 16,
    )
}

/// SQL condition on `pg_locks` alias `l`: a granted single-key `role` lock with an index in
/// `lo..=hi` held by another session in this database.
pub fn others_held_sql(role: LockRole, lo: u16, hi: u16) -> String {
    format!(
        "{ADVISORY_HERE} and l.granted and l.pid <> pg_backend_pid() \
         and l.classid = {prefix}::oid and l.objid between {lo}::oid and {hi}::oid",
        prefix = LOCK_PREFIX,
        lo = ((role as u32) << 16) + u32::from(lo),
        hi = ((role as u32) << 16) + u32::from(hi),
    )
}
