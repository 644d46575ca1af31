//! The protocol crate's tests against a real PostgreSQL (one test binary, a database per test).

mod topology;
