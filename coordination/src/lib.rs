//! Coordination of Syncline processes through a shared PostgreSQL database: timestamps,
//! sequencer node indexes, events, watermarks, offline detection, recovery truncation,
//! replica-group leadership, and the database plumbing they share.

pub mod db;
pub mod error;
pub mod locks;

pub use db::{Db, DbConfig, RetryPolicy};
pub use error::{CoordError, Result};
pub mod leadership;
pub mod node_index;
pub mod offline;
pub mod recovery;
pub mod timestamps;
pub mod watermarks;
pub mod events;
