//! A throwaway PostgreSQL for the demo and the benchmarks, or the one the user names.

use anyhow::{anyhow, Result};
use syncline_testkit::pg::{self, Server};

/// A database to run against; drops (and removes) the cluster we started.
pub struct Database {
    /// Connection URL.
    pub url: String,
    server: Option<Server>,
}

impl Database {
    /// Use `url` if given, else start a throwaway cluster from the installed binaries and
    /// create database `name` on it.
    pub async fn open(url: Option<String>, name: &str) -> Result<Database> {
        if let Some(url) = url {
            return Ok(Database { url, server: None });
        }
        let server = tokio::task::spawn_blocking(pg::start_cluster)
            .await?
            .map_err(|e| anyhow!("cannot start an embedded PostgreSQL: {e}\n(install it with `apt-get install postgresql`, or pass --database-url)"))?;
        let url = server.create_database(name).await.map_err(|e| anyhow!(e))?;
        Ok(Database { url, server: Some(server) })
    }

}

impl Drop for Database {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.stop();
        }
    }
}
