//! `syncline admin`: remote administration of many nodes from one process, using a remote
//! configuration that lists admin addresses only.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use syncline_node::config::{self, RemoteConfig, RemoteNode};
use syncline_proto::admin::node_admin_service_client::NodeAdminServiceClient;
use syncline_proto::admin::{HealthState, SetPassiveRequest, StatusRequest};
use syncline_proto::sequencer::sequencer_admin_service_client::SequencerAdminServiceClient;
use syncline_proto::sequencer::{DisableMemberRequest, PruneRequest, PruningStatusRequest, SequencerStatusRequest};
use syncline_sequencer_client::TlsFiles;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::admin_tokens::{self, Destination};
use crate::{admin_topology, grpc_errors};

/// Options of `syncline admin`.
#[derive(clap::Args, Debug)]
pub struct AdminArgs {
    /// Remote configuration files (admin addresses of the nodes), merged in order.
    #[arg(long, short, value_delimiter = ',', required = true)]
    config: Vec<PathBuf>,
    /// Seconds to wait for each answer (default 10; 120 for prune).
    #[arg(long, value_parser = seconds)]
    timeout: Option<Duration>,
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
    /// Register a member at the sequencers (they share one database). Its first registration
    /// issues its token (printed, or written to --token-file); registering it again keeps it.
    RegisterMember {
        /// The member.
        member: String,
        /// Write the token to this file (readable by its owner only) instead of printing it.
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Issue a new token for a member; its old token stops working. Printed, or written to
    /// --token-file (nodes re-read their sequencer.token_file, so writing theirs suffices).
    RotateMemberToken {
        /// The member.
        member: String,
        /// Write the token to this file (readable by its owner only) instead of printing it.
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
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
    /// Bootstrap the synchronizer: register the mediator member and publish the initial
    /// synchronizer parameters and mediator state (serial 1). Repeating it is harmless; a
    /// synchronizer bootstrapped differently is refused, naming what exists.
    Bootstrap(admin_topology::BootstrapArgs),
    /// Register a participant member and publish its join (operator-issued). Its token is
    /// printed, or written to DIR/<participant>.token with --token-dir.
    JoinParticipant {
        /// The participant's member name.
        participant: String,
        /// Write the participant's token to DIR/<participant>.token instead of printing it.
        #[arg(long)]
        token_dir: Option<PathBuf>,
        /// The join's serial: 1 for the first, the previous one + 1 to join again after a removal.
        #[arg(long, default_value_t = 1)]
        serial: u32,
    },
    /// Publish an operator-issued party-to-participant mapping.
    HostParty {
        /// The party.
        party: String,
        /// A hosting participant, NAME[:submission|confirmation|observation] (default
        /// submission); repeat for several.
        #[arg(long = "participant", required = true, value_parser = admin_topology::host)]
        participants: Vec<admin_topology::Host>,
        /// The mapping's serial: 1 for the party's first, the previous one + 1 to replace it.
        #[arg(long, default_value_t = 1)]
        serial: u32,
    },
    /// The topology as a mediator replica received it: the snapshot in effect at a timestamp
    /// and every topology transaction with its outcome.
    Topology {
        /// The snapshot's timestamp (µs since the epoch; default: now).
        #[arg(long)]
        at: Option<i64>,
        /// Ask this mediator replica (default: the first that answers).
        #[arg(long)]
        node: Option<String>,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
}

/// Deadline of every call unless `--timeout` says otherwise. Nodes answer admin calls within
/// a few seconds, also when their database is unreachable.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);
/// Default deadline of `prune`, which may delete for as long as its statements are allowed to.
const PRUNE_DEADLINE: Duration = Duration::from_secs(120);

/// `--timeout`: a positive number of seconds.
fn seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(s) if s > 0.0 && s <= 86_400.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!("{text:?} is not a number of seconds between 0 and 86400")),
    }
}

/// A connected node admin API, named in every error.
pub(crate) struct Node {
    pub(crate) name: String,
    addr: String,
    pub(crate) channel: Channel,
    deadline: Duration,
}

impl Node {
    /// Connect to node `name` as `remote` says (over TLS with its `ca`); calls fail after
    /// `deadline`.
    pub(crate) async fn connect(name: &str, remote: &RemoteNode, deadline: Duration) -> Result<Node> {
        let addr = remote.admin_api.as_str();
        let url = remote.url();
        let fail = |what: String| anyhow!("{name} ({addr}): {what}");
        let mut endpoint = Channel::from_shared(url.clone()).map_err(|e| fail(format!("not a valid address: {e}")))?;
        if url.starts_with("https://") {
            let files = TlsFiles {
                ca: remote.ca.clone(),
                client_cert: remote.client_cert.clone(),
                client_key: remote.client_key.clone(),
            };
            let tls = files
                .load()
                .map_err(|e| fail(e.to_string()))?
                .ok_or_else(|| fail("an https:// admin address needs the CA of its certificate (ca)".into()))?;
            endpoint = endpoint.tls_config(tls.tonic_config()).map_err(|e| fail(causes(&e)))?;
        }
        let channel = endpoint
            .connect_timeout(Duration::from_secs(3))
            .timeout(deadline)
            .connect()
            .await
            .map_err(|e| fail(format!("cannot connect: {}", causes(&e))))?;
        Ok(Node { name: name.to_string(), addr: addr.to_string(), channel, deadline })
    }

    /// A failed call to this node, as one line naming it.
    pub(crate) fn failed(&self, status: &Status) -> anyhow::Error {
        anyhow!("{} ({}): {}", self.name, self.addr, grpc_errors::explain(status, self.deadline))
    }

    fn sequencer(&self) -> SequencerAdminServiceClient<Channel> {
        SequencerAdminServiceClient::new(self.channel.clone())
    }
}

/// `e` and its causes on one line, each once.
fn causes(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

/// Whether another sequencer may succeed where this answer failed (they share one database,
/// so any of them can answer, unless they all lost it).
pub(crate) fn try_next(status: &Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled)
}

/// Run one admin command.
pub async fn run(args: AdminArgs) -> Result<()> {
    let remote = config::load_remote(&args.config)?;
    anyhow::ensure!(remote.nodes().next().is_some(), "the remote configuration lists no node");
    let deadline = |default: Duration| args.timeout.unwrap_or(default);
    let d = deadline(DEFAULT_DEADLINE);
    match args.command {
        AdminCommand::Status => status(&remote, d).await,
        AdminCommand::SequencerStatus { node } => sequencer_status(&remote, node, d).await,
        AdminCommand::RegisterMember { member, token_file } => {
            let r = admin_tokens::register(&remote, &member, &Destination::file(token_file), d).await?;
            println!("registered {member}: reads events after {}", r.registered_at);
            Ok(())
        }
        AdminCommand::RotateMemberToken { member, token_file } => {
            admin_tokens::rotate(&remote, &member, &Destination::file(token_file), d).await
        }
        AdminCommand::DisableMember { member } => {
            let req = DisableMemberRequest { member: member.clone() };
            on_a_sequencer(&remote, None, d, |mut c| {
                let req = req.clone();
                async move { c.disable_member(req).await }
            })
            .await?;
            println!("disabled {member}");
            Ok(())
        }
        AdminCommand::PruningStatus => {
            let (_, st) =
                on_a_sequencer(
                    &remote,
                    None,
                    d,
                    |mut c| async move { c.pruning_status(PruningStatusRequest {}).await },
                )
                .await?;
            println!("safe pruning timestamp: {}", st.safe_pruning_timestamp);
            println!("lower bound: {}", st.lower_bound.map_or("none (nothing pruned)".into(), |b| b.to_string()));
            println!("{:<32} {:>20} {:>20}", "MEMBER", "ACKNOWLEDGED", "REGISTERED");
            for m in st.laggards {
                println!(
                    "{:<32} {:>20} {:>20}",
                    m.member,
                    m.acknowledged.map_or("-".into(), |a| a.to_string()),
                    m.registered_at
                );
            }
            Ok(())
        }
        AdminCommand::Prune { before, safe } => {
            if before.is_none() && !safe {
                bail!("say what to prune: --before <timestamp> or --safe");
            }
            let (_, (before, r)) = on_a_sequencer(&remote, None, deadline(PRUNE_DEADLINE), |mut c| async move {
                let before = match before {
                    Some(b) => b,
                    None => c.pruning_status(PruningStatusRequest {}).await?.into_inner().safe_pruning_timestamp,
                };
                let r = c.prune(PruneRequest { before }).await?;
                Ok(r.map(|r| (before, r)))
            })
            .await?;
            println!("pruned before {before}: {} events, {} payloads removed", r.events_removed, r.payloads_removed);
            Ok(())
        }
        AdminCommand::SetPassive { node } => {
            let remote_node =
                remote.node(&node).ok_or_else(|| anyhow!("node {node} is not in the remote configuration"))?;
            let n = Node::connect(&node, remote_node, d).await?;
            NodeAdminServiceClient::new(n.channel.clone())
                .set_passive(SetPassiveRequest {})
                .await
                .map_err(|s| n.failed(&s))?;
            println!("{node} handed over and is now passive");
            Ok(())
        }
        AdminCommand::Bootstrap(b) => admin_topology::bootstrap(&remote, b, d).await,
        AdminCommand::JoinParticipant { participant, token_dir, serial } => {
            admin_topology::join_participant(&remote, participant, &Destination::dir(token_dir), serial, d).await
        }
        AdminCommand::HostParty { party, participants, serial } => {
            admin_topology::host_party(&remote, party, participants, serial, d).await
        }
        AdminCommand::Topology { at, node, json } => admin_topology::topology(&remote, node, at, json, d).await,
    }
}

/// Make `call` on sequencer `only`, or on the first sequencer that answers it: one that cannot
/// be reached or answers UNAVAILABLE is skipped. Returns the answering node's name and its
/// answer; every failure names its node.
pub(crate) async fn on_a_sequencer<T, F, Fut>(
    remote: &RemoteConfig,
    only: Option<&str>,
    deadline: Duration,
    mut call: F,
) -> Result<(String, T)>
where
    F: FnMut(SequencerAdminServiceClient<Channel>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, Status>>,
{
    let mut failures = Vec::new();
    for (name, node) in remote.sequencers.iter().filter(|(n, _)| only.is_none_or(|o| o == n.as_str())) {
        let node = match Node::connect(name, node, deadline).await {
            Ok(n) => n,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        match call(node.sequencer()).await {
            Ok(r) => return Ok((node.name, r.into_inner())),
            Err(s) if try_next(&s) => failures.push(node.failed(&s)),
            Err(s) => return Err(node.failed(&s)),
        }
    }
    match (only, failures.len()) {
        (Some(n), 0) => bail!("node {n} is not a sequencer of the remote configuration"),
        (None, 0) => bail!("the remote configuration lists no sequencer"),
        (_, 1) => Err(failures.remove(0)),
        _ => {
            let lines: Vec<String> = failures.iter().map(|e| format!("{e:#}")).collect();
            bail!("no sequencer could answer:\n  {}", lines.join("\n  "))
        }
    }
}

async fn status(remote: &RemoteConfig, deadline: Duration) -> Result<()> {
    println!("{:<16} {:<11} {:<8} {:<8} {:<10} {:<8} DETAIL", "NODE", "KIND", "VERSION", "ACTIVE", "HEALTH", "UPTIME");
    let mut unhealthy = 0;
    for (_, name, node) in remote.nodes() {
        let r = async {
            let n = Node::connect(name, node, deadline).await?;
            let mut c = NodeAdminServiceClient::new(n.channel.clone());
            c.status(StatusRequest {}).await.map(tonic::Response::into_inner).map_err(|s| n.failed(&s))
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

/// The node's index, or its writer lanes' indexes ("3, 7") when it has several.
fn lane_indexes(st: &syncline_proto::sequencer::SequencerStatusResponse) -> String {
    if st.lane_indexes.len() > 1 {
        let all: Vec<String> = st.lane_indexes.iter().map(u32::to_string).collect();
        return all.join(", ");
    }
    st.node_index.map_or("none".into(), |i| i.to_string())
}

async fn sequencer_status(remote: &RemoteConfig, node: Option<String>, deadline: Duration) -> Result<()> {
    let (name, st) =
        on_a_sequencer(
            remote,
            node.as_deref(),
            deadline,
            |mut c| async move { c.status(SequencerStatusRequest {}).await },
        )
        .await?;
    println!(
        "asked {name} (node index {}, total node count {}, writer {}, {} members, queue {}, {} subscriptions)",
        lane_indexes(&st),
        st.total_node_count,
        if st.writer_running { "running" } else { "stopped" },
        st.members,
        st.queue_depth,
        st.subscriptions
    );
    println!("safe watermark: {}", st.safe_watermark.map_or("none (no node online)".into(), |w| w.to_string()));
    println!("{:<6} {:<8} {:>20} {:>12}", "INDEX", "ONLINE", "WATERMARK", "LAG");
    for w in st.watermarks {
        println!(
            "{:<6} {:<8} {:>20} {:>12}",
            w.node_index,
            if w.online { "yes" } else { "no" },
            w.watermark,
            format!("{:.3}s", w.lag_micros as f64 / 1e6)
        );
    }
    Ok(())
}
