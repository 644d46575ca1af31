//! Test harness: a throwaway PostgreSQL cluster per test binary (or `DATABASE_URL`), a fresh
//! database per test, a fault-injecting TCP proxy to put between a component and Postgres, and
//! loopback ports never handed out twice.

pub mod pg;
pub mod proxy;

pub use pg::{fresh_database, TestDb};
pub use proxy::FaultProxy;

use std::net::SocketAddr;

/// A free loopback port never handed out before in this process (so two servers of one test
/// never race for a port); panics when there is none.
pub fn free_port() -> u16 {
    syncline_embedded_pg::free_port().expect("no free loopback port")
}

/// A free loopback address, as [`free_port`].
pub fn free_addr() -> SocketAddr {
    syncline_embedded_pg::free_addr().expect("no free loopback port")
}
