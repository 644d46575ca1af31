//! `syncline daemon`: run the nodes of a configuration in this process until SIGTERM/SIGINT,
//! then shut down cleanly (sequencers flush their queue and go offline).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use syncline_node::admin::NodeAdmin;
use syncline_node::config::{NodeKind, NodeRef, NodeSection, NodesConfig};
use syncline_node::http::{self, PrometheusHandle};
use syncline_node::logging::{self, LogConfig};
use syncline_sequencer::config::SequencerConfig;
use syncline_sequencer::Sequencer;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config};
use crate::grpc_errors;

/// Options of `syncline daemon`.
#[derive(clap::Args, Debug)]
pub struct DaemonArgs {
    /// Configuration files, merged in order (comma-separated or repeated).
    #[arg(long, short, value_delimiter = ',', required = true)]
    pub config: Vec<PathBuf>,
    /// Run only these nodes of the configuration (default: all of them).
    #[arg(long)]
    pub node: Vec<String>,
    #[command(flatten)]
    pub log: LogArgs,
}

/// Logging options shared by the commands that run nodes.
#[derive(clap::Args, Debug, Clone)]
pub struct LogArgs {
    /// Write logs to this file (appending) instead of stdout.
    #[arg(long)]
    pub log_file_name: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
    /// Log filter, e.g. `info` or `syncline_sequencer=debug,info`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_level: String,
}

impl LogArgs {
    /// As the node runtime's logging settings.
    pub fn config(&self) -> LogConfig {
        LogConfig { file: self.log_file_name.clone(), json: self.log_json, filter: self.log_level.clone() }
    }
}

/// Run until a signal arrives.
pub async fn run(args: DaemonArgs) -> Result<()> {
    logging::init(&args.log.config())?;
    let cfg = config::load(&args.config)?;
    let stop = CancellationToken::new();
    tokio::spawn(signals(stop.clone()));
    let mut nodes = start(&cfg, &args.node).await?;
    stop.cancelled().await;
    tracing::info!("shutting down");
    for n in nodes.drain(..) {
        n.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Start the selected nodes of `cfg`.
pub async fn start(cfg: &Config, only: &[String]) -> Result<Vec<RunningSequencer>> {
    let selected = select(cfg, only)?;
    let metrics = http::metrics_handle()?;
    let mut nodes = Vec::new();
    for (name, node) in selected {
        nodes.push(RunningSequencer::start(name, node, cfg, metrics.clone()).await.with_context(|| format!("starting sequencer {name}"))?);
    }
    Ok(nodes)
}

/// The nodes to run: those named in `only` (default: all). Only sequencers run in this version.
fn select<'a>(cfg: &'a Config, only: &[String]) -> Result<Vec<(&'a str, &'a SequencerConfig)>> {
    for name in only {
        anyhow::ensure!(cfg.kind_of(name).is_some(), "node {name} is not in the configuration");
    }
    let wanted = |name: &str| only.is_empty() || only.iter().any(|n| n == name);
    for NodeRef { kind, name, .. } in cfg.nodes().into_iter().filter(|n| wanted(n.name)) {
        if kind != NodeKind::Sequencer {
            bail!("{kind} node {name}: {kind} nodes are not implemented yet in this version");
        }
    }
    Ok(cfg.sequencers.iter().filter(|(n, _)| wanted(n)).map(|(n, c)| (n.as_str(), c)).collect())
}

async fn signals(stop: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    stop.cancel();
}

/// A sequencer node with its servers.
pub struct RunningSequencer {
    name: String,
    seq: Sequencer,
    servers: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

async fn bind(addr: std::net::SocketAddr, what: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} ({what})"))
}

impl RunningSequencer {
    async fn start(name: &str, node: &SequencerConfig, cfg: &Config, metrics: PrometheusHandle) -> Result<Self> {
        let public = bind(node.public_api.address, "public API").await?;
        let admin = bind(node.admin_api.address, "admin API").await?;
        let settings = node.settings(name);
        let db = node.storage(cfg.storage.as_ref()).db_config(name);
        let seq = Sequencer::start(db, settings.clone()).await?;
        let servers = CancellationToken::new();
        let view = Arc::new(seq.status());
        let mut tasks = vec![http::serve(node.health.address, node.health.check, view.clone(), metrics.clone(), servers.clone()).await?];
        if let Some(m) = &node.metrics {
            tasks.push(http::serve_metrics(m.address, metrics, servers.clone()).await?);
        }
        let (reporter, grpc_health) = tonic_health::server::health_reporter();
        tasks.push(tokio::spawn(syncline_node::health::report_grpc(reporter, syncline_sequencer::health::SERVICE_NAME, seq.health_watch(), servers.clone())));
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(syncline_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        // Every service of both servers answers undecodable requests INVALID_ARGUMENT.
        let public_router = tonic::transport::Server::builder()
            .layer(grpc_errors::malformed_request_layer())
            .add_service(grpc_health)
            .add_service(reflection.clone())
            .add_service(seq.public_service());
        let node_admin = NodeAdmin::new(name, NodeKind::Sequencer, view).into_service();
        let admin_router = tonic::transport::Server::builder()
            .layer(grpc_errors::malformed_request_layer())
            .add_service(reflection)
            .add_service(seq.admin_service())
            .add_service(node_admin);
        for (router, listener, what) in [(public_router, public, "public API"), (admin_router, admin, "admin API")] {
            let stop = servers.clone();
            let node = name.to_string();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop.cancelled_owned()).await {
                    tracing::error!(%e, node, what, "gRPC server failed");
                }
            }));
        }
        tracing::info!(node = name, public = %node.public_api.address, admin = %node.admin_api.address, health = %node.health.address, "sequencer started");
        Ok(RunningSequencer { name: name.to_string(), seq, servers, tasks })
    }

    /// Flush, go offline, then stop serving.
    pub async fn shutdown(self) {
        self.seq.shutdown().await;
        self.servers.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        tracing::info!(node = self.name, "sequencer stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(name: &str, text: &str) -> Config {
        let dir = std::env::temp_dir().join(format!("syncline-daemon-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, format!("[storage]\nurl = \"postgres://a@h/db\"\n{text}")).unwrap();
        config::load(&[path]).unwrap()
    }

    fn node(table: &str, name: &str, port: u16) -> String {
        format!(
            "[{table}.{name}]\npublic_api = {{ address = \"127.0.0.1:{}\" }}\nadmin_api = {{ address = \"127.0.0.1:{}\" }}\nhealth = {{ address = \"127.0.0.1:{}\" }}\n",
            port,
            port + 1,
            port + 2
        )
    }

    fn names(cfg: &Config, only: &[&str]) -> Result<Vec<String>> {
        let only: Vec<String> = only.iter().map(|s| s.to_string()).collect();
        Ok(select(cfg, &only)?.into_iter().map(|(n, _)| n.to_string()).collect())
    }

    #[test]
    fn only_sequencers_run_and_replicated_nodes_are_refused() {
        let cfg = load("seq.toml", &format!("{}{}", node("sequencers", "s1", 5000), node("sequencers", "s2", 5010)));
        assert_eq!(names(&cfg, &[]).unwrap(), ["s1", "s2"]);
        assert_eq!(names(&cfg, &["s2"]).unwrap(), ["s2"]);
        assert_eq!(names(&cfg, &["s3"]).unwrap_err().to_string(), "node s3 is not in the configuration");

        let cfg = load("mixed.toml", &format!("{}{}{}", node("sequencers", "s1", 5000), node("mediators", "m1", 5010), node("participants", "p1", 5020)));
        assert_eq!(names(&cfg, &[]).unwrap_err().to_string(), "mediator node m1: mediator nodes are not implemented yet in this version");
        assert_eq!(names(&cfg, &["s1", "p1"]).unwrap_err().to_string(), "participant node p1: participant nodes are not implemented yet in this version");
        assert_eq!(names(&cfg, &["s1"]).unwrap(), ["s1"], "replicated nodes that are not selected do not matter");
    }
}
