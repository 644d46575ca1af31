//! `syncline daemon`: run the nodes of a configuration in this process until SIGTERM/SIGINT,
//! then shut down cleanly (sequencers flush their queue and go offline).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use metrics_exporter_prometheus::PrometheusHandle;
use syncline_proto::admin::node_admin_service_server::{NodeAdminService, NodeAdminServiceServer};
use syncline_proto::admin::{ComponentHealth, HealthState, SetPassiveRequest, SetPassiveResponse, StatusRequest, StatusResponse};
use syncline_sequencer::{Sequencer, WriterShared};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::config::{self, Config, SequencerNodeConfig};
use crate::http::{self, NodeHealth};

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
    pub log: crate::logging::LogArgs,
}

/// Run until a signal arrives.
pub async fn run(args: DaemonArgs) -> Result<()> {
    crate::logging::init(&args.log)?;
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
    for name in only {
        anyhow::ensure!(cfg.sequencers.contains_key(name), "node {name} is not in the configuration");
    }
    let metrics = http::metrics_handle()?;
    let mut nodes = Vec::new();
    for (name, node) in &cfg.sequencers {
        if only.is_empty() || only.contains(name) {
            nodes.push(RunningSequencer::start(name, node, cfg, metrics.clone()).await.with_context(|| format!("starting sequencer {name}"))?);
        }
    }
    Ok(nodes)
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

struct SequencerHealthView {
    writer: Arc<WriterShared>,
    settings: syncline_sequencer::SequencerSettings,
}

impl NodeHealth for SequencerHealthView {
    fn serving(&self) -> Result<(), String> {
        let h = syncline_sequencer::health::check(&self.writer, &self.settings);
        if h.serving {
            Ok(())
        } else {
            Err(h.detail)
        }
    }

    fn components(&self) -> Vec<(String, String)> {
        let index = self.writer.node_index().map_or("none".to_string(), |i| i.to_string());
        vec![
            ("writer".into(), self.writer.detail()),
            ("node_index".into(), index),
            ("last_watermark_write".into(), format!("{} ms ago", self.writer.since_last_write().as_millis())),
        ]
    }
}

async fn bind(addr: std::net::SocketAddr, what: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} ({what})"))
}

impl RunningSequencer {
    async fn start(name: &str, node: &SequencerNodeConfig, cfg: &Config, metrics: PrometheusHandle) -> Result<Self> {
        let public = bind(node.public_api.address, "public API").await?;
        let admin = bind(node.admin_api.address, "admin API").await?;
        let settings = node.settings(name);
        let db = node.storage(&cfg.storage).db_config(name);
        let seq = Sequencer::start(db, settings.clone()).await?;
        let servers = CancellationToken::new();
        let view = Arc::new(SequencerHealthView { writer: seq.writer().clone(), settings: settings.clone() });
        let mut tasks = vec![http::serve(node.health.address, node.health.check, view.clone(), metrics.clone(), servers.clone()).await?];
        if let Some(m) = &node.metrics {
            tasks.push(http::serve_metrics(m.address, metrics, servers.clone()).await?);
        }
        let (reporter, grpc_health) = tonic_health::server::health_reporter();
        tasks.push(tokio::spawn(syncline_sequencer::health::report_grpc(reporter, seq.writer().clone(), settings, servers.clone())));
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(syncline_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let public_router = tonic::transport::Server::builder()
            .add_service(grpc_health)
            .add_service(reflection.clone())
            .add_service(seq.public_service());
        let node_admin = NodeAdminServiceServer::new(NodeAdmin { name: name.to_string(), kind: "sequencer", started: Instant::now(), view });
        let admin_router = tonic::transport::Server::builder()
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

/// `syncline.admin.v1.NodeAdminService` for a sequencer.
struct NodeAdmin {
    name: String,
    kind: &'static str,
    started: Instant,
    view: Arc<SequencerHealthView>,
}

#[tonic::async_trait]
impl NodeAdminService for NodeAdmin {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let serving = self.view.serving();
        let health = ComponentHealth {
            name: self.name.clone(),
            state: if serving.is_ok() { HealthState::Ok } else { HealthState::Failed } as i32,
            detail: serving.err().unwrap_or_else(|| "serving".into()),
            components: self
                .view
                .components()
                .into_iter()
                .map(|(name, detail)| ComponentHealth { name, state: HealthState::Ok as i32, detail, components: vec![] })
                .collect(),
        };
        Ok(Response::new(StatusResponse {
            name: self.name.clone(),
            kind: self.kind.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            active: true,
            uptime_seconds: self.started.elapsed().as_secs(),
            health: Some(health),
        }))
    }

    async fn set_passive(&self, _: Request<SetPassiveRequest>) -> Result<Response<SetPassiveResponse>, Status> {
        Err(Status::failed_precondition(format!(
            "{} is a sequencer: all sequencers are active; set-passive applies to replicated nodes (mediators, participants)",
            self.name
        )))
    }
}
