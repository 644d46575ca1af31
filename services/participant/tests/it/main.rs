//! The participant's integration tests: one binary (link time on 2 cores).

mod failover;
mod harness;
mod ledger;
