//! The coordination crate's integration tests against a real PostgreSQL, one test binary
//! (one link on 2 cores).

mod db;
mod leadership;
