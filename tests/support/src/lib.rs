//! Test harness: a throwaway PostgreSQL cluster per test binary (or `DATABASE_URL`), a fresh
//! database per test, a fault-injecting TCP proxy to put between a component and Postgres,
//! loopback ports never handed out twice, `syncline daemon` processes, temp dirs and waits.

pub mod files;
pub mod pg;
pub mod process;
/// The fault-injecting TCP proxy (its own crate, which the demo's chaos mode uses too).
pub mod proxy {
    pub use syncline_fault_proxy::{FaultProxy, Mode};
}
pub mod topology;
pub mod wait;

pub use files::{write_file, TempDir};
pub use pg::{fresh_database, TestDb};
pub use process::Daemon;
pub use proxy::FaultProxy;
pub use topology::{Kind, NodeSpec, NodeTls, Topology};
pub use wait::{http_get, http_status, wait_for};

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
