//! The sequencer's store in PostgreSQL, one module per concept: partitioned timestamps, node
//! index allocation, events, watermarks, offline detection, recovery truncation, members, and
//! acknowledgements and pruning. All the sequencer's SQL is here. Built on
//! the HA primitives of `syncline-coordination` (pool, sessions, retry, locks).

pub mod error;
pub mod events;
pub mod members;
pub mod node_index;
pub mod offline;
pub mod prepared;
pub mod pruning;
pub mod recovery;
pub mod timestamps;
pub mod watermarks;

use diesel_async::AsyncPgConnection;
use error::Result;

/// The join sequence of a node that holds index `index` (its lock, on `conn`): remove what the
/// index wrote past its watermark, go online at `max(all watermarks, now)`, and make `gen`
/// produce only timestamps above that. Returns what was removed and the watermark it went
/// online at.
pub async fn join(
    conn: &mut AsyncPgConnection,
    index: u32,
    now: i64,
    gen: &mut timestamps::TimestampGenerator,
) -> Result<(recovery::Truncation, i64)> {
    let truncated = recovery::truncate(conn, index).await?;
    let online_at = watermarks::go_online(conn, index, now).await?;
    gen.ensure_after(online_at);
    Ok((truncated, online_at))
}
