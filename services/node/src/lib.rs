//! The shared runtime of Syncline nodes: configuration loading, the health and metrics HTTP
//! server, structured logging, the node admin gRPC API and the replica manager.

pub mod admin;
pub mod config;
pub mod grpc_errors;
pub mod health;
pub mod host;
pub mod http;
pub mod logging;
pub mod replica;
pub mod replicated;
pub mod tls;

pub use config::NodeKind;
pub use health::{HealthState, NodeHealth};
pub use host::{Listeners, Node, NodeHost};
pub use replicated::ReplicatedNode;

#[cfg(test)]
mod test_support {
    //! A node whose health the tests set.
    use tokio::sync::watch;

    use crate::health::{HealthState, NodeHealth};

    /// Serving and active as told.
    pub struct Fake {
        pub serving: bool,
        pub active: bool,
    }

    impl NodeHealth for Fake {
        fn health(&self) -> watch::Receiver<HealthState> {
            let detail = if self.serving { "running" } else { "writer stopped" };
            watch::channel(HealthState { serving: self.serving, detail: detail.into(), active: self.active }).1
        }
        fn components(&self) -> Vec<(String, String)> {
            vec![("writer".into(), "running".into())]
        }
    }
}
