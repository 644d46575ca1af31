//! Namespaced session-level advisory locks and what `pg_locks` says about them.

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

/// A Syncline advisory lock: prefix, role and index packed into one bigint key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LockId {
    role: LockRole,
    index: u16,
}

impl LockId {
    /// The lock for `role` and `index`.
    pub fn new(role: LockRole, index: u16) -> Self {
        LockId { role, index }
    }

    /// The migration lock.
    pub fn migrations() -> Self {
        LockId::new(LockRole::Migrations, 0)
    }

    /// The lock that owns sequencer node index `index`.
    pub fn sequencer_index(index: u32) -> Self {
        LockId::new(LockRole::SequencerIndex, index as u16)
    }

    /// The leadership lock of the replica group called `group` (a stable 16-bit hash).
    pub fn leadership(group: &str) -> Self {
        // FNV-1a folded to 16 bits: stable across builds and platforms.
        let mut h: u32 = 0x811c_9dc5;
        for b in group.bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        LockId::new(LockRole::Leadership, ((h >> 16) ^ (h & 0xffff)) as u16)
    }

    /// The low 32 bits of the key, as `pg_locks.objid` shows them.
    pub fn objid(&self) -> u32 {
        ((self.role as u32) << 16) | u32::from(self.index)
    }

    /// The bigint key passed to `pg_advisory_lock`.
    pub fn key(&self) -> i64 {
        ((LOCK_PREFIX as i64) << 32) | i64::from(self.objid())
    }
}

// pg_locks shows a bigint key as classid = high half, objid = low half, objsubid = 1.
// A Syncline-style advisory lock row of this database (alias `l`).
macro_rules! advisory_here {
    () => {
        "l.locktype = 'advisory' and l.objsubid = 1 \
         and l.database = (select oid from pg_database where datname = current_database())"
    };
}
const ADVISORY_HERE: &str = advisory_here!();
const MATCH_LOCK: &str = concat!(advisory_here!(), " and l.classid = ($1 >> 32)::oid and l.objid = ($1 & 4294967295)::oid");

/// SQL condition matching rows of `pg_locks` aliased `alias` to the lock whose key is bound
/// as `$1`, in the current database.
pub(crate) fn match_lock_sql(alias: &str) -> String {
    MATCH_LOCK.replace("l.", &format!("{alias}."))
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
    let r: Flag = diesel::sql_query("select pg_try_advisory_lock($1) as flag")
        .bind::<BigInt, _>(id.key())
        .get_result(conn)
        .await
        .during("trying an advisory lock")?;
    Ok(r.flag)
}

/// Try to take `id` until the end of the current transaction; false if another session
/// holds it (session- and transaction-level holds of one key exclude each other).
pub async fn try_xact_lock(conn: &mut AsyncPgConnection, id: LockId) -> Result<bool> {
    let r: Flag = diesel::sql_query("select pg_try_advisory_xact_lock($1) as flag")
        .bind::<BigInt, _>(id.key())
        .get_result(conn)
        .await
        .during("trying a transaction advisory lock")?;
    Ok(r.flag)
}

/// Wait until `id` can be taken exclusively for this session (queues behind other waiters).
pub async fn lock(conn: &mut AsyncPgConnection, id: LockId) -> Result<()> {
    diesel::sql_query("select pg_advisory_lock($1)")
        .bind::<BigInt, _>(id.key())
        .execute(conn)
        .await
        .during("waiting for an advisory lock")?;
    Ok(())
}

/// Release `id` if this session holds it; false if it did not.
pub async fn unlock(conn: &mut AsyncPgConnection, id: LockId) -> Result<bool> {
    let r: Flag = diesel::sql_query("select pg_advisory_unlock($1) as flag")
        .bind::<BigInt, _>(id.key())
        .get_result(conn)
        .await
        .during("releasing an advisory lock")?;
    Ok(r.flag)
}

/// The backend pid of this session.
pub async fn backend_pid(conn: &mut AsyncPgConnection) -> Result<i32> {
    let r: Pid = diesel::sql_query("select pg_backend_pid() as pid")
        .get_result(conn)
        .await
        .during("reading the backend pid")?;
    Ok(r.pid)
}

/// The backend pid of the session holding `id`, if any.
pub async fn holder_pid(conn: &mut AsyncPgConnection, id: LockId) -> Result<Option<i32>> {
    let q = format!("select l.pid as pid from pg_locks l where {MATCH_LOCK} and l.granted limit 1");
    let r: Option<Pid> = diesel::sql_query(q)
        .bind::<BigInt, _>(id.key())
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
        "select exists (select 1 from pg_locks l where {MATCH_LOCK} and l.granted \
         and l.pid = pg_backend_pid()) as flag"
    );
    let r: Flag = diesel::sql_query(q)
        .bind::<BigInt, _>(id.key())
        .get_result(conn)
        .await
        .during("checking an advisory lock")?;
    Ok(r.flag)
}

/// How many sessions are queued waiting for `id`.
pub async fn waiters(conn: &mut AsyncPgConnection, id: LockId) -> Result<i64> {
    let q = format!("select count(*) as n from pg_locks l where {MATCH_LOCK} and not l.granted");
    let r: Count = diesel::sql_query(q)
        .bind::<BigInt, _>(id.key())
        .get_result(conn)
        .await
        .during("counting advisory lock waiters")?;
    Ok(r.n)
}

/// SQL condition, usable inside other queries, that is true while some session holds the
/// sequencer index lock of the row's `node_index` column (`w` alias).
pub(crate) fn sequencer_index_held_sql() -> String {
    format!(
        "exists (select 1 from pg_locks l where {ADVISORY_HERE} \
         and l.granted and l.classid = {prefix}::oid and l.objid = ({role} + w.node_index)::oid)",
        prefix = LOCK_PREFIX,
        role = (LockRole::SequencerIndex as u32) << 16,
    )
}

/// SQL condition on `pg_locks` alias `l`: a granted sequencer index lock held by another
/// session in this database.
pub(crate) fn other_sequencer_index_locks_sql() -> String {
    format!(
        "{ADVISORY_HERE} and l.granted and l.pid <> pg_backend_pid() \
         and l.classid = {prefix}::oid and l.objid between {lo}::oid and {hi}::oid",
        prefix = LOCK_PREFIX,
        lo = (LockRole::SequencerIndex as u32) << 16,
        hi = ((LockRole::SequencerIndex as u32) << 16) + 31,
    )
}
