//! The sequencer's integration tests, one test binary (one link on 2 cores): in-process
//! sequencer nodes behind their own gRPC servers, sharing one real PostgreSQL.

mod admin_timeouts;
mod auth;
mod broadcast;
mod harness;
mod lanes;
mod late_send;
mod peer_watch;
mod pruning;
mod send_stream;
mod sequencer;
mod settings_validation;
mod store;
mod subscriptions;
mod topology_admin;
mod total_order_ha;
mod total_order_store;
