//! The participant's integration tests: one binary (link time on 2 cores).

mod auth;
mod bad_input;
mod faults;
mod grpc;
mod harness;
mod ledger;
