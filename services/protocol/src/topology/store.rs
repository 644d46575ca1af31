//! A node's topology store in its own PostgreSQL database (`topology_transactions`).
//!
//! Every function takes a connection, so callers can run it inside their own (fenced)
//! transaction; none opens a pool. Writes go through [`super::processor::apply`].

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use syncline_coordination::error::DieselContext;
use syncline_schema::tables::topology::topology_transactions as t;

use crate::messages::{self, Message, Operation, TopologyTransaction};

use super::{MappingKey, TopologyError, TopologySnapshot};

/// What became of a stored transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted: in effect from `effective_from` until `effective_until` (exclusive; `None`:
    /// no later transaction of its key was accepted yet). A removal is accepted too, but puts
    /// nothing in effect.
    Accepted {
        /// When it takes effect (µs).
        effective_from: i64,
        /// When the next accepted transaction of its key takes effect.
        effective_until: Option<i64>,
    },
    /// Ignored by every node for this reason.
    Ignored {
        /// Why.
        reason: String,
    },
}

/// A received topology transaction as the store holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredTransaction {
    /// Its sequencing timestamp.
    pub sequenced_at: i64,
    /// The member that sent it.
    pub sender: String,
    /// The transaction.
    pub transaction: TopologyTransaction,
    /// Accepted or ignored.
    pub outcome: Outcome,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = t)]
struct Row {
    sequenced_at: i64,
    sender: String,
    content: Vec<u8>,
    accepted: bool,
    ignore_reason: Option<String>,
    effective_from: Option<i64>,
    effective_until: Option<i64>,
}

impl Row {
    fn into_stored(self) -> Result<StoredTransaction, TopologyError> {
        let corrupt = |source| TopologyError::Corrupt { sequenced_at: self.sequenced_at, source };
        let transaction = match messages::decode(&self.content).map_err(corrupt)? {
            Message::Topology(tx) => tx,
            _ => return Err(corrupt(messages::DecodeError::malformed("message", "not a topology transaction"))),
        };
        let outcome = match (self.accepted, self.effective_from) {
            (true, Some(effective_from)) => Outcome::Accepted { effective_from, effective_until: self.effective_until },
            _ => Outcome::Ignored { reason: self.ignore_reason.unwrap_or_default() },
        };
        Ok(StoredTransaction { sequenced_at: self.sequenced_at, sender: self.sender, transaction, outcome })
    }
}

/// The transaction stored at `sequenced_at`, if any.
pub async fn stored_at(
    conn: &mut AsyncPgConnection,
    sequenced_at: i64,
) -> Result<Option<StoredTransaction>, TopologyError> {
    let row: Option<Row> = t::table
        .filter(t::sequenced_at.eq(sequenced_at))
        .select(Row::as_select())
        .first(conn)
        .await
        .optional()
        .during("reading a stored topology transaction")?;
    row.map(Row::into_stored).transpose()
}

/// The sequencing timestamp of the latest stored transaction (accepted or not).
pub async fn latest_sequenced_at(conn: &mut AsyncPgConnection) -> Result<Option<i64>, TopologyError> {
    Ok(t::table
        .select(diesel::dsl::max(t::sequenced_at))
        .first::<Option<i64>>(conn)
        .await
        .during("reading the latest topology timestamp")?)
}

/// The latest effective-from time of any accepted transaction: the next one takes effect no
/// earlier (see [`super::processor`]).
pub async fn latest_effective_from(conn: &mut AsyncPgConnection) -> Result<Option<i64>, TopologyError> {
    Ok(t::table
        .filter(t::accepted)
        .select(diesel::dsl::max(t::effective_from))
        .first::<Option<i64>>(conn)
        .await
        .during("reading the latest topology effective time")?)
}

/// The latest accepted transaction of `key` (whether or not it is effective yet).
pub async fn head(conn: &mut AsyncPgConnection, key: &MappingKey) -> Result<Option<StoredTransaction>, TopologyError> {
    let row: Option<Row> = t::table
        .filter(t::accepted)
        .filter(t::mapping_kind.eq(key.kind().as_str()))
        .filter(t::mapping_key.eq(key.name()))
        .order(t::sequenced_at.desc())
        .select(Row::as_select())
        .first(conn)
        .await
        .optional()
        .during("reading the latest topology transaction of a key")?;
    row.map(Row::into_stored).transpose()
}

/// Every stored transaction in sequencing order (for listing, and to compare stores).
pub async fn list(conn: &mut AsyncPgConnection) -> Result<Vec<StoredTransaction>, TopologyError> {
    let rows: Vec<Row> = t::table
        .order(t::sequenced_at.asc())
        .select(Row::as_select())
        .load(conn)
        .await
        .during("listing topology transactions")?;
    rows.into_iter().map(Row::into_stored).collect()
}

/// The topology in effect at `timestamp`: every accepted add/replace with
/// `effective_from <= timestamp < effective_until`.
pub async fn snapshot_at(conn: &mut AsyncPgConnection, timestamp: i64) -> Result<TopologySnapshot, TopologyError> {
    let rows: Vec<Row> = t::table
        .filter(t::accepted)
        .filter(t::operation.eq(Operation::AddReplace.as_str()))
        .filter(t::effective_from.le(timestamp))
        .filter(t::effective_until.is_null().or(t::effective_until.gt(timestamp)))
        .order(t::sequenced_at.asc())
        .select(Row::as_select())
        .load(conn)
        .await
        .during("loading a topology snapshot")?;
    let mut snapshot = TopologySnapshot::new(timestamp);
    for row in rows {
        snapshot.add(row.into_stored()?.transaction.mapping);
    }
    Ok(snapshot)
}

/// A transaction to record (see [`insert`]).
pub(crate) struct NewTransaction<'a> {
    pub sequenced_at: i64,
    pub sender: &'a str,
    pub transaction: &'a TopologyTransaction,
    /// `Ok(effective_from)` if accepted, `Err(reason)` if ignored.
    pub outcome: Result<i64, String>,
}

/// Record a received transaction.
pub(crate) async fn insert(conn: &mut AsyncPgConnection, new: NewTransaction<'_>) -> Result<(), TopologyError> {
    let key = MappingKey::of(&new.transaction.mapping);
    let (accepted, effective_from, ignore_reason) = match new.outcome {
        Ok(from) => (true, Some(from), None),
        Err(reason) => (false, None, Some(reason)),
    };
    diesel::insert_into(t::table)
        .values((
            t::sequenced_at.eq(new.sequenced_at),
            t::sender.eq(new.sender),
            t::operation.eq(new.transaction.operation.as_str()),
            t::serial.eq(new.transaction.serial as i32),
            t::mapping_kind.eq(key.kind().as_str()),
            t::mapping_key.eq(key.name()),
            t::content.eq(messages::encode(&Message::Topology(new.transaction.clone()))),
            t::accepted.eq(accepted),
            t::ignore_reason.eq(ignore_reason),
            t::effective_from.eq(effective_from),
        ))
        .execute(conn)
        .await
        .during("storing a topology transaction")?;
    Ok(())
}

/// End the validity of `key`'s accepted transactions sequenced before `before` that are still
/// open, at `effective_until`.
pub(crate) async fn end_previous(
    conn: &mut AsyncPgConnection,
    key: &MappingKey,
    before: i64,
    effective_until: i64,
) -> Result<(), TopologyError> {
    diesel::update(t::table)
        .filter(t::accepted)
        .filter(t::mapping_kind.eq(key.kind().as_str()))
        .filter(t::mapping_key.eq(key.name()))
        .filter(t::sequenced_at.lt(before))
        .filter(t::effective_until.is_null())
        .set(t::effective_until.eq(effective_until))
        .execute(conn)
        .await
        .during("ending the previous topology transaction of a key")?;
    Ok(())
}

/// Block other writers of the store until the surrounding transaction ends (readers go on), so
/// that two processes applying the same transaction to one database do it one after the other.
pub(crate) async fn lock_for_write(conn: &mut AsyncPgConnection) -> Result<(), TopologyError> {
    diesel::sql_query("lock table topology_transactions in share row exclusive mode")
        .execute(conn)
        .await
        .during("locking the topology store")?;
    Ok(())
}
