//! Test harness: a throwaway PostgreSQL cluster per test binary (or `DATABASE_URL`), a fresh
//! database per test, and a fault-injecting TCP proxy to put between a component and Postgres.

pub mod pg;
pub mod proxy;

pub use pg::{fresh_database, TestDb};
pub use proxy::FaultProxy;
