//! The mediator's integration tests: one binary (link time on 2 cores).

mod harness;
mod mediator;
mod replication;
mod store;
