//! The shared runtime of Syncline nodes: configuration loading, the health and metrics HTTP
//! server, structured logging, the node admin gRPC API and the replica manager.

pub mod admin;
pub mod config;
pub mod http;
pub mod logging;
pub mod replica;

pub use config::NodeKind;
pub use http::NodeHealth;

#[cfg(test)]
mod test_support {
    //! A node whose health the tests set.
    use crate::http::NodeHealth;

    /// Serving and active as told.
    pub struct Fake {
        pub serving: bool,
        pub active: bool,
    }

    impl NodeHealth for Fake {
        fn serving(&self) -> Result<(), String> {
            if self.serving {
                Ok(())
            } else {
                Err("writer stopped".into())
            }
        }
        fn active(&self) -> bool {
            self.active
        }
        fn components(&self) -> Vec<(String, String)> {
            vec![("writer".into(), "running".into())]
        }
    }
}
