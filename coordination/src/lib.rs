//! The HA primitives every replicated Syncline node needs, over a shared PostgreSQL database:
//! the database plumbing (pool, sessions, one retry policy), namespaced advisory locks, and
//! replica-group leadership with a fencing epoch. Services build on it; it knows none of them.

pub mod db;
pub mod error;
pub mod leadership;
pub mod locks;

pub use db::{Db, DbConfig, RetryPolicy};
pub use error::{DbError, HasDbError, Result};
pub use leadership::LeadershipError;
