//! `syncline admin`: remote administration of many nodes from one process, using a remote
//! configuration that lists admin addresses only.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use syncline_node::config::{self, RemoteConfig};
use syncline_proto::admin::node_admin_service_client::NodeAdminServiceClient;
use syncline_proto::admin::{HealthState, SetPassiveRequest, StatusRequest};
use syncline_proto::sequencer::sequencer_admin_service_client::SequencerAdminServiceClient;
use syncline_proto::sequencer::{
    DisableMemberRequest, PruneRequest, PruningStatusRequest, RegisterMemberRequest, SequencerStatusRequest,
};
use tonic::transport::Channel;

/// Options of `syncline admin`.
#[derive(clap::Args, Debug)]
pub struct AdminArgs {
    /// Remote configuration files (admin addresses of the nodes), merged in order.
    #[arg(long, short, value_delimiter = ',', required = true)]
    config: Vec<PathBuf>,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(clap::Subcommand, Debug)]
enum AdminCommand {
    /// Kind, version, role and health of every node, in one table.
    Status,
    /// Node indexes, watermarks and lag as seen by a sequencer.
    SequencerStatus {
        /// Ask this sequencer (default: the first reachable one).
        #[arg(long)]
        node: Option<String>,
    },
    /// Register a member at the sequencers (they share one database).
    RegisterMember { member: String },
    /// Disable a member: it can no longer send or subscribe and no longer holds back pruning.
    DisableMember { member: String },
    /// The safe pruning point and the members holding it back.
    PruningStatus,
    /// Remove sequenced events before a timestamp (µs), or up to the safe point.
    Prune {
        /// Remove events before this timestamp (µs since the epoch).
        #[arg(long, conflicts_with = "safe")]
        before: Option<i64>,
        /// Prune up to the safe pruning point.
        #[arg(long)]
        safe: bool,
    },
    /// Hand a replicated node's activity over to a waiting passive replica.
    SetPassive { node: String },
}

async fn channel(addr: &str) -> Result<Channel> {
    let url = if addr.contains("://") { addr.to_string() } else { format!("http://{addr}") };
    Channel::from_shared(url.clone())
        .map_err(|e| anyhow!("bad address {addr}: {e}"))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .with_context(|| format!("cannot reach {addr}"))
}

/// Run one admin command.
pub async fn run(args: AdminArgs) -> Result<()> {
    let remote = config::load_remote(&args.config)?;
    anyhow::ensure!(remote.nodes().next().is_some(), "the remote configuration lists no node");
    match args.command {
        AdminCommand::Status => status(&remote).await,
        AdminCommand::SequencerStatus { node } => sequencer_status(&remote, node).await,
        AdminCommand::RegisterMember { member } => {
            let mut c = SequencerAdminServiceClient::new(first_sequencer(&remote, None).await?.1);
            let r = c.register_member(RegisterMemberRequest { member: member.clone() }).await?.into_inner();
            println!("registered {member}: reads events after {}", r.registered_at);
            Ok(())
        }
        AdminCommand::DisableMember { member } => {
            let mut c = SequencerAdminServiceClient::new(first_sequencer(&remote, None).await?.1);
            c.disable_member(DisableMemberRequest { member: member.clone() }).await?;
            println!("disabled {member}");
            Ok(())
        }
        AdminCommand::PruningStatus => {
            let mut c = SequencerAdminServiceClient::new(first_sequencer(&remote, None).await?.1);
            let st = c.pruning_status(PruningStatusRequest {}).await?.into_inner();
            println!("safe pruning timestamp: {}", st.safe_pruning_timestamp);
            println!("lower bound: {}", st.lower_bound.map_or("none (nothing pruned)".into(), |b| b.to_string()));
            println!("{:<32} {:>20} {:>20}", "MEMBER", "ACKNOWLEDGED", "REGISTERED");
            for m in st.laggards {
                println!("{:<32} {:>20} {:>20}", m.member, m.acknowledged.map_or("-".into(), |a| a.to_string()), m.registered_at);
            }
            Ok(())
        }
        AdminCommand::Prune { before, safe } => {
            let mut c = SequencerAdminServiceClient::new(first_sequencer(&remote, None).await?.1);
            let before = match (before, safe) {
                (Some(b), _) => b,
                (None, true) => c.pruning_status(PruningStatusRequest {}).await?.into_inner().safe_pruning_timestamp,
                (None, false) => bail!("say what to prune: --before <timestamp> or --safe"),
            };
            let r = c.prune(PruneRequest { before }).await?.into_inner();
            println!("pruned before {before}: {} events, {} payloads removed", r.events_removed, r.payloads_removed);
            Ok(())
        }
        AdminCommand::SetPassive { node } => {
            let addr = remote.node(&node).map(|n| n.admin_api.clone()).ok_or_else(|| anyhow!("node {node} is not in the remote configuration"))?;
            let mut c = NodeAdminServiceClient::new(channel(&addr).await?);
            c.set_passive(SetPassiveRequest {}).await.map_err(|s| anyhow!("{node}: {}", s.message()))?;
            println!("{node} handed over and is now passive");
            Ok(())
        }
    }
}

async fn first_sequencer(remote: &RemoteConfig, name: Option<String>) -> Result<(String, Channel)> {
    let mut errors = Vec::new();
    for (n, node) in &remote.sequencers {
        if name.as_ref().is_some_and(|want| want != n) {
            continue;
        }
        match channel(&node.admin_api).await {
            Ok(c) => return Ok((n.clone(), c)),
            Err(e) => errors.push(format!("{n}: {e:#}")),
        }
    }
    match name {
        Some(n) if errors.is_empty() => bail!("node {n} is not in the remote configuration"),
        _ => bail!("no sequencer reachable:\n  {}", errors.join("\n  ")),
    }
}

async fn status(remote: &RemoteConfig) -> Result<()> {
    println!("{:<16} {:<11} {:<8} {:<8} {:<10} {:<8} DETAIL", "NODE", "KIND", "VERSION", "ACTIVE", "HEALTH", "UPTIME");
    let mut unhealthy = 0;
    for (_, name, node) in remote.nodes() {
        let r = async {
            let mut c = NodeAdminServiceClient::new(channel(&node.admin_api).await?);
            anyhow::Ok(c.status(StatusRequest {}).await?.into_inner())
        }
        .await;
        match r {
            Ok(st) => {
                let h = st.health.unwrap_or_default();
                let state = match HealthState::try_from(h.state).unwrap_or(HealthState::Unspecified) {
                    HealthState::Ok => "OK",
                    HealthState::Degraded => "DEGRADED",
                    HealthState::Failed => "FAILED",
                    HealthState::Unspecified => "?",
                };
                if state != "OK" {
                    unhealthy += 1;
                }
                println!(
                    "{:<16} {:<11} {:<8} {:<8} {:<10} {:<8} {}",
                    name,
                    st.kind,
                    st.version,
                    if st.active { "active" } else { "passive" },
                    state,
                    format!("{}s", st.uptime_seconds),
                    h.detail
                );
            }
            Err(e) => {
                unhealthy += 1;
                println!("{:<16} {:<11} {:<8} {:<8} {:<10} {:<8} {e:#}", name, "?", "?", "?", "UNREACHABLE", "-");
            }
        }
    }
    if unhealthy > 0 {
        bail!("{unhealthy} node(s) unhealthy or unreachable");
    }
    Ok(())
}

async fn sequencer_status(remote: &RemoteConfig, node: Option<String>) -> Result<()> {
    let (name, ch) = first_sequencer(remote, node).await?;
    let st = SequencerAdminServiceClient::new(ch).status(SequencerStatusRequest {}).await?.into_inner();
    println!(
        "asked {name} (node index {}, total node count {}, writer {}, {} members, queue {}, {} subscriptions)",
        st.node_index.map_or("none".into(), |i| i.to_string()),
        st.total_node_count,
        if st.writer_running { "running" } else { "stopped" },
        st.members,
        st.queue_depth,
        st.subscriptions
    );
    println!("safe watermark: {}", st.safe_watermark.map_or("none (no node online)".into(), |w| w.to_string()));
    println!("{:<6} {:<8} {:>20} {:>12}", "INDEX", "ONLINE", "WATERMARK", "LAG");
    for w in st.watermarks {
        println!("{:<6} {:<8} {:>20} {:>12}", w.node_index, if w.online { "yes" } else { "no" }, w.watermark, format!("{:.3}s", w.lag_micros as f64 / 1e6));
    }
    Ok(())
}
