//! The shared runtime of Syncline nodes: configuration loading, the health and metrics HTTP
//! server, structured logging, the node admin gRPC API and the replica manager.

pub mod admin;
pub mod config;
pub mod http;
pub mod logging;
pub mod replica;

pub use config::NodeKind;
pub use http::NodeHealth;
