//! A throwaway PostgreSQL for the demo and the benchmarks, or the one the user names.

use anyhow::{Context, Result};
use syncline_embedded_pg::Cluster;

/// A database to run against; drops (and removes) the cluster we started.
pub struct Database {
    /// Connection URL.
    pub url: String,
    /// The cluster we started, stopped and removed on drop.
    _cluster: Option<Cluster>,
}

impl Database {
    /// Use `url` if given, else start a throwaway cluster from the installed binaries and
    /// create database `name` on it.
    pub async fn open(url: Option<String>, name: &str) -> Result<Database> {
        if let Some(url) = url {
            return Ok(Database { url, _cluster: None });
        }
        let cluster = tokio::task::spawn_blocking(Cluster::start)
            .await?
            .context("cannot start an embedded PostgreSQL (install it with `apt-get install postgresql`, or pass --database-url)")?;
        let url = cluster.create_database(name).await?;
        Ok(Database { url, _cluster: Some(cluster) })
    }
}
