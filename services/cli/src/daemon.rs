//! `syncline daemon`: run the nodes of a configuration in this process until SIGTERM/SIGINT,
//! then shut down cleanly (sequencers flush their queue and go offline).

use std::path::PathBuf;

use anyhow::{Context, Result};
use syncline_mediator::config::MediatorConfig;
use syncline_mediator::Mediator;
use syncline_node::config::{NodeKind, NodeRef, NodeSection, NodesConfig};
use syncline_node::http::{self, PrometheusHandle};
use syncline_node::logging::{self, LogConfig};
use syncline_node::{Listeners, NodeHost};
use syncline_participant::config::ParticipantConfig;
use syncline_participant::Participant;
use syncline_sequencer::config::SequencerConfig;
use syncline_sequencer::Sequencer;
use tokio_util::sync::CancellationToken;

use syncline_cli::config::{self, Config};

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

/// Start the selected nodes of `cfg`, each served by its host.
pub async fn start(cfg: &Config, only: &[String]) -> Result<Vec<NodeHost>> {
    let selected = select(cfg, only)?;
    let metrics = http::metrics_handle()?;
    let mut nodes = Vec::new();
    for NodeRef { kind, name, .. } in selected {
        let host = match kind {
            NodeKind::Sequencer => start_sequencer(name, &cfg.sequencers[name], cfg, metrics.clone()).await,
            NodeKind::Mediator => start_mediator(name, &cfg.mediators[name], cfg, metrics.clone()).await,
            NodeKind::Participant => start_participant(name, &cfg.participants[name], cfg, metrics.clone()).await,
        }
        .with_context(|| format!("starting {kind} {name}"))?;
        nodes.push(host);
    }
    Ok(nodes)
}

async fn start_sequencer(
    name: &str,
    node: &SequencerConfig,
    cfg: &Config,
    metrics: PrometheusHandle,
) -> Result<NodeHost> {
    // Bound before the node starts: a taken port fails without touching the database.
    let listeners = Listeners::bind(node.common()).await?;
    let seq = Sequencer::start(node.storage(cfg.storage.as_ref()).db_config(name), node.settings(name)).await?;
    Ok(NodeHost::serve(listeners, Box::new(seq), metrics)?)
}

async fn start_mediator(
    name: &str,
    node: &MediatorConfig,
    cfg: &Config,
    metrics: PrometheusHandle,
) -> Result<NodeHost> {
    let listeners = Listeners::bind(node.common()).await?;
    let mediator = Mediator::start(name, node, node.storage(cfg.storage.as_ref()).db_config(name)).await?;
    Ok(NodeHost::serve(listeners, Box::new(mediator), metrics)?)
}

async fn start_participant(
    name: &str,
    node: &ParticipantConfig,
    cfg: &Config,
    metrics: PrometheusHandle,
) -> Result<NodeHost> {
    let listeners = Listeners::bind(node.common()).await?;
    let participant = Participant::start(name, node, node.storage(cfg.storage.as_ref()).db_config(name)).await?;
    Ok(NodeHost::serve(listeners, Box::new(participant), metrics)?)
}

/// The nodes to run: those named in `only` (default: all).
fn select<'a>(cfg: &'a Config, only: &[String]) -> Result<Vec<NodeRef<'a>>> {
    for name in only {
        anyhow::ensure!(cfg.kind_of(name).is_some(), "node {name} is not in the configuration");
    }
    let wanted = |name: &str| only.is_empty() || only.iter().any(|n| n == name);
    Ok(cfg.nodes().into_iter().filter(|n| wanted(n.name)).collect())
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
        let sequencer =
            if table != "sequencers" { "sequencer = { endpoints = [\"http://127.0.0.1:5000\"] }\n" } else { "" };
        format!(
            "[{table}.{name}]\npublic_api = {{ address = \"127.0.0.1:{}\" }}\nadmin_api = {{ address = \"127.0.0.1:{}\" }}\nhealth = {{ address = \"127.0.0.1:{}\" }}\n{sequencer}",
            port,
            port + 1,
            port + 2
        )
    }

    fn names(cfg: &Config, only: &[&str]) -> Result<Vec<String>> {
        let only: Vec<String> = only.iter().map(|s| s.to_string()).collect();
        Ok(select(cfg, &only)?.into_iter().map(|n| n.name.to_string()).collect())
    }

    #[test]
    fn every_kind_of_node_runs_and_only_selects_known_names() {
        let cfg = load("seq.toml", &format!("{}{}", node("sequencers", "s1", 5000), node("sequencers", "s2", 5010)));
        assert_eq!(names(&cfg, &[]).unwrap(), ["s1", "s2"]);
        assert_eq!(names(&cfg, &["s2"]).unwrap(), ["s2"]);
        assert_eq!(names(&cfg, &["s3"]).unwrap_err().to_string(), "node s3 is not in the configuration");

        let cfg = load(
            "mixed.toml",
            &format!(
                "{}{}{}",
                node("sequencers", "s1", 5000),
                node("mediators", "m1", 5010),
                node("participants", "p1", 5020)
            ),
        );
        assert_eq!(names(&cfg, &[]).unwrap(), ["s1", "m1", "p1"]);
        assert_eq!(names(&cfg, &["s1", "p1"]).unwrap(), ["s1", "p1"]);
    }
}
