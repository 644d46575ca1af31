//! Syncline's synchronizer protocol, shared by the mediator and the participant:
//!
//! - [`messages`]: typed messages (topology transactions, the parts of a confirmation request,
//!   responses, results), their versioned wire encoding ([`messages::encode`],
//!   [`messages::decode`]) and the request's root hash ([`messages::hash`]).
//! - [`topology`]: the topology every member agrees on: mapping keys and serials, deterministic
//!   authorization, the per-node Postgres store, snapshots at a timestamp, and the processor
//!   that applies broadcast topology transactions.
//! - [`codes`]: the error ids of verdicts (Canton's).

pub mod codes;
pub mod messages;
pub mod subscription;
pub mod time_proof;
pub mod topology;
