//! `syncline admin` topology commands: bootstrap the synchronizer (mediator member, initial
//! parameters and mediator state), join a participant, host a party, list the topology.
//!
//! Operator transactions are published through a sequencer's admin API (PublishTopology),
//! which broadcasts them from `syncline-operator`. Before publishing, each is checked against
//! the topology as a mediator replica of the remote configuration sees it (when one
//! answers): a transaction already in effect is not published again, and one whose serial
//! does not follow what exists is refused with what exists; after publishing, the mediator's
//! outcome (accepted, or ignored by every node and why) is reported.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use syncline_node::config::RemoteConfig;
use syncline_proto::mediator::mediator_admin_service_client::MediatorAdminServiceClient;
use syncline_proto::mediator::{StoredTopologyTransaction, TopologyRequest, TopologyResponse};
use syncline_proto::sequencer::PublishTopologyRequest;
use syncline_protocol::messages::{
    self, Mapping, MediatorState, Message, Operation, ParticipantJoin, PartyToParticipant, Permission,
    SynchronizerParameters, TopologyTransaction,
};
use syncline_protocol::topology::MappingKey;
use tonic::Status;

use crate::admin::{on_a_sequencer, try_next, Node};
use crate::admin_tokens::{self, Destination};

/// Options of `syncline admin bootstrap`.
#[derive(clap::Args, Debug)]
pub struct BootstrapArgs {
    /// The mediator's member name (its replicas' `member`, default their node name).
    #[arg(long)]
    mediator: String,
    /// Participant response deadline after a request (Canton: 30s).
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    confirmation_response_timeout: Duration,
    /// Decision time after the response deadline (Canton: 30s).
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    mediator_reaction_timeout: Duration,
    /// Largest accepted difference between a request's ledger time and record time (Canton: 60s).
    #[arg(long, default_value = "30s", value_parser = positive_duration)]
    ledger_time_record_time_tolerance: Duration,
    /// Delay between a topology transaction's sequencing and its effect.
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    topology_change_delay: Duration,
    /// Write the mediator's member token to DIR/<mediator>.token (readable by its owner only;
    /// name it in the replicas' sequencer.token_file) instead of printing it.
    #[arg(long)]
    token_dir: Option<PathBuf>,
}

/// A hosting participant on the command line: `NAME[:submission|confirmation|observation]`.
#[derive(Clone, Debug)]
pub struct Host {
    participant: String,
    permission: Permission,
}

/// Parse `--participant NAME[:PERMISSION]` (default permission: submission).
pub fn host(text: &str) -> Result<Host, String> {
    let (participant, permission) = match text.split_once(':') {
        None => (text, Permission::Submission),
        Some((p, "submission")) => (p, Permission::Submission),
        Some((p, "confirmation")) => (p, Permission::Confirmation),
        Some((p, "observation")) => (p, Permission::Observation),
        Some((_, other)) => {
            return Err(format!("unknown permission {other:?}: use submission, confirmation or observation"))
        }
    };
    if participant.is_empty() {
        return Err(format!("{text:?} names no participant"));
    }
    Ok(Host { participant: participant.to_string(), permission })
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be positive".into()),
        Err(e) => Err(format!("{text:?} is not a duration (e.g. 10s, 250ms): {e}")),
    }
}

fn add(serial: u32, mapping: Mapping) -> TopologyTransaction {
    TopologyTransaction { operation: Operation::AddReplace, serial, mapping }
}

/// `bootstrap`: register the mediator member, publish the parameters and the mediator state
/// (serial 1 each).
pub async fn bootstrap(remote: &RemoteConfig, args: BootstrapArgs, d: Duration) -> Result<()> {
    let params = SynchronizerParameters {
        confirmation_response_timeout: args.confirmation_response_timeout,
        mediator_reaction_timeout: args.mediator_reaction_timeout,
        ledger_time_record_time_tolerance: args.ledger_time_record_time_tolerance,
        topology_change_delay: args.topology_change_delay,
    };
    let txs = vec![
        add(1, Mapping::SynchronizerParameters(params)),
        add(1, Mapping::MediatorState(MediatorState { mediator: args.mediator.clone() })),
    ];
    let seen = mediator_view(remote, None, None, d).await;
    if let Some((node, view)) = &seen {
        let existing: Vec<String> = txs
            .iter()
            .filter_map(|tx| head(view, &MappingKey::of(&tx.mapping)).filter(|(h, _)| h != tx))
            .map(|(h, s)| format!("{} (serial {}, sequenced at {})", describe(&h), h.serial, s.sequenced_at))
            .collect();
        if !existing.is_empty() {
            bail!(
                "the synchronizer is already bootstrapped differently (as mediator replica {node} sees it): {}; \
                 bootstrap publishes only the first transactions (serial 1), so it cannot change them",
                existing.join("; ")
            );
        }
    }
    admin_tokens::register(remote, &args.mediator, &Destination::dir(args.token_dir), d).await?;
    println!("registered mediator member {}", args.mediator);
    publish_all(remote, &txs, seen, d).await
}

/// `join-participant`: register the member and publish its join.
pub async fn join_participant(
    remote: &RemoteConfig,
    participant: String,
    tokens: &Destination,
    serial: u32,
    d: Duration,
) -> Result<()> {
    let tx = add(serial, Mapping::ParticipantJoin(ParticipantJoin { participant: participant.clone() }));
    let seen = checked(remote, &tx, d).await?;
    admin_tokens::register(remote, &participant, tokens, d).await?;
    println!("registered participant member {participant}");
    publish_all(remote, &[tx], seen, d).await
}

/// `host-party`: publish an operator-issued party-to-participant mapping.
pub async fn host_party(
    remote: &RemoteConfig,
    party: String,
    hosts: Vec<Host>,
    serial: u32,
    d: Duration,
) -> Result<()> {
    let mut participants = std::collections::BTreeMap::new();
    for h in hosts {
        if participants.insert(h.participant.clone(), h.permission).is_some() {
            bail!("participant {} is named twice", h.participant);
        }
    }
    let tx = add(serial, Mapping::PartyToParticipant(PartyToParticipant { party, participants }));
    let seen = checked(remote, &tx, d).await?;
    publish_all(remote, &[tx], seen, d).await
}

/// The mediator's view, after checking that `tx`'s serial follows its key's latest accepted
/// transaction there.
async fn checked(
    remote: &RemoteConfig,
    tx: &TopologyTransaction,
    d: Duration,
) -> Result<Option<(String, TopologyResponse)>> {
    let seen = mediator_view(remote, None, None, d).await;
    if let Some((node, view)) = &seen {
        let key = MappingKey::of(&tx.mapping);
        match head(view, &key) {
            Some((h, _)) if &h == tx => {}
            Some((h, s)) if tx.serial != h.serial + 1 => bail!(
                "{key} already exists with serial {} (sequenced at {}, as mediator replica {node} sees it): {}; \
                 pass --serial {} to replace it",
                h.serial,
                s.sequenced_at,
                describe(&h),
                h.serial + 1
            ),
            None if tx.serial != 1 => {
                bail!("{key} does not exist yet (as mediator replica {node} sees it): its first serial is 1")
            }
            _ => {}
        }
    }
    Ok(seen)
}

/// Publish `txs` (those not yet in effect in `seen`) and report each one's outcome.
async fn publish_all(
    remote: &RemoteConfig,
    txs: &[TopologyTransaction],
    seen: Option<(String, TopologyResponse)>,
    d: Duration,
) -> Result<()> {
    let fresh: Vec<&TopologyTransaction> = match &seen {
        Some((node, view)) => txs
            .iter()
            .filter(|tx| {
                let present = head(view, &MappingKey::of(&tx.mapping)).is_some_and(|(h, _)| &h == *tx);
                if present {
                    println!("already in effect (as mediator replica {node} sees it): {}", describe(tx));
                }
                !present
            })
            .collect(),
        None => txs.iter().collect(),
    };
    if fresh.is_empty() {
        println!("nothing to publish");
        return Ok(());
    }
    let req = PublishTopologyRequest {
        transactions: fresh.iter().map(|tx| messages::encode(&Message::Topology((*tx).clone()))).collect(),
    };
    let (sequencer, r) = on_a_sequencer(remote, None, d, |mut c| {
        let req = req.clone();
        async move { c.publish_topology(req).await }
    })
    .await?;
    for (tx, ts) in fresh.iter().zip(&r.timestamps) {
        println!("published {} (serial {}) through {sequencer}: sequenced at {ts}", describe(tx), tx.serial);
    }
    let Some((node, _)) = seen else {
        println!("(no mediator replica answered: not checked against the current topology)");
        return Ok(());
    };
    // What the mediator made of them: accepted, or ignored by every node (and why).
    let last = *r.timestamps.last().unwrap_or(&0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let view = loop {
        match mediator_view(remote, Some(&node), None, d).await {
            Some((_, v)) if v.transactions.iter().any(|t| t.sequenced_at >= last) => break Some(v),
            _ if tokio::time::Instant::now() >= deadline => break None,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let Some(view) = view else {
        println!("mediator replica {node} has not processed them yet (is the mediator active?)");
        return Ok(());
    };
    let mut ignored = Vec::new();
    for ts in &r.timestamps {
        match view.transactions.iter().find(|t| t.sequenced_at == *ts) {
            Some(t) if t.accepted => {
                println!("accepted: in effect from {}", t.effective_from.map_or("?".into(), |f| f.to_string()))
            }
            Some(t) => ignored.push(format!("the transaction sequenced at {ts}: {}", t.ignore_reason)),
            // Answered from an earlier send that the mediator had already processed.
            None => {}
        }
    }
    if !ignored.is_empty() {
        bail!("ignored by every node: {}", ignored.join("; "));
    }
    Ok(())
}

/// The latest accepted transaction of `key` in `view`, with its row.
fn head<'a>(
    view: &'a TopologyResponse,
    key: &MappingKey,
) -> Option<(TopologyTransaction, &'a StoredTopologyTransaction)> {
    view.transactions
        .iter()
        .rev()
        .filter(|s| s.accepted)
        .filter_map(|s| Some((TopologyTransaction::try_from(s.transaction.clone()?).ok()?, s)))
        .find(|(tx, _)| &MappingKey::of(&tx.mapping) == key)
}

/// The topology as mediator replica `only` (or the first that answers) sees it; `None` when
/// the configuration lists none or none answers.
async fn mediator_view(
    remote: &RemoteConfig,
    only: Option<&str>,
    at: Option<i64>,
    d: Duration,
) -> Option<(String, TopologyResponse)> {
    ask_mediator(remote, only, at, d).await.ok()
}

/// [`mediator_view`], failing with every replica's error.
async fn ask_mediator(
    remote: &RemoteConfig,
    only: Option<&str>,
    at: Option<i64>,
    d: Duration,
) -> Result<(String, TopologyResponse)> {
    let mut failures = Vec::new();
    for (name, node) in remote.mediators.iter().filter(|(n, _)| only.is_none_or(|o| o == n.as_str())) {
        let node = match Node::connect(name, node, d).await {
            Ok(n) => n,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        let r: Result<_, Status> =
            MediatorAdminServiceClient::new(node.channel.clone()).topology(TopologyRequest { at }).await;
        match r {
            Ok(r) => return Ok((node.name, r.into_inner())),
            Err(s) if try_next(&s) => failures.push(node.failed(&s)),
            Err(s) => return Err(node.failed(&s)),
        }
    }
    match (only, failures.len()) {
        (Some(n), 0) => bail!("node {n} is not a mediator of the remote configuration"),
        (None, 0) => bail!("the remote configuration lists no mediator"),
        (_, 1) => Err(failures.remove(0)),
        _ => {
            let lines: Vec<String> = failures.iter().map(|e| format!("{e:#}")).collect();
            bail!("no mediator replica could answer:\n  {}", lines.join("\n  "))
        }
    }
}

/// Wire parameters as the snapshot sends them (valid: the mediator checked them on receipt).
fn params_of(p: &syncline_proto::protocol::SynchronizerParameters) -> SynchronizerParameters {
    let d = |micros: i64| Duration::from_micros(micros.max(0) as u64);
    SynchronizerParameters {
        confirmation_response_timeout: d(p.confirmation_response_timeout_micros),
        mediator_reaction_timeout: d(p.mediator_reaction_timeout_micros),
        ledger_time_record_time_tolerance: d(p.ledger_time_record_time_tolerance_micros),
        topology_change_delay: d(p.topology_change_delay_micros),
    }
}

/// A wire party mapping as the snapshot sends it.
fn party_of(p: &syncline_proto::protocol::PartyToParticipant) -> PartyToParticipant {
    use syncline_proto::protocol::hosting_participant::Permission as P;
    let participants = (p.participants.iter())
        .map(|h| {
            let perm = match P::try_from(h.permission) {
                Ok(P::Confirmation) => Permission::Confirmation,
                Ok(P::Observation) => Permission::Observation,
                _ => Permission::Submission,
            };
            (h.participant.clone(), perm)
        })
        .collect();
    PartyToParticipant { party: p.party.clone(), participants }
}

fn permission(p: Permission) -> &'static str {
    match p {
        Permission::Submission => "submission",
        Permission::Confirmation => "confirmation",
        Permission::Observation => "observation",
    }
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn describe_params(p: &SynchronizerParameters) -> String {
    format!(
        "confirmation response timeout {}, mediator reaction timeout {}, ledger/record time tolerance {}, topology change delay {}",
        human(p.confirmation_response_timeout),
        human(p.mediator_reaction_timeout),
        human(p.ledger_time_record_time_tolerance),
        human(p.topology_change_delay)
    )
}

fn hosts(participants: &std::collections::BTreeMap<String, Permission>) -> String {
    participants.iter().map(|(p, perm)| format!("{p}:{}", permission(*perm))).collect::<Vec<_>>().join(", ")
}

/// One line for a transaction's mapping.
fn describe(tx: &TopologyTransaction) -> String {
    let what = match &tx.mapping {
        Mapping::ParticipantJoin(m) => format!("participant join {}", m.participant),
        Mapping::PartyToParticipant(m) => format!("party {} hosted by {}", m.party, hosts(&m.participants)),
        Mapping::MediatorState(m) => format!("mediator state {}", m.mediator),
        Mapping::SynchronizerParameters(p) => format!("synchronizer parameters ({})", describe_params(p)),
    };
    match tx.operation {
        Operation::AddReplace => what,
        Operation::Remove => format!("removal of {what}"),
    }
}

/// `topology`: the stored transactions and the snapshot at `at`, as a mediator replica sees them.
pub async fn topology(
    remote: &RemoteConfig,
    node: Option<String>,
    at: Option<i64>,
    json: bool,
    d: Duration,
) -> Result<()> {
    let (name, view) = ask_mediator(remote, node.as_deref(), at, d).await?;
    let snapshot = view.snapshot.clone().ok_or_else(|| anyhow!("mediator replica {name} sent no snapshot"))?;
    let rows: Vec<(Result<TopologyTransaction, String>, &StoredTopologyTransaction)> = view
        .transactions
        .iter()
        .map(|s| {
            let tx = s
                .transaction
                .clone()
                .ok_or_else(|| "missing".to_string())
                .and_then(|t| TopologyTransaction::try_from(t).map_err(|e| e.to_string()));
            (tx, s)
        })
        .collect();
    let params = snapshot.parameters.map(|p| params_of(&p)).unwrap_or_default();
    let parties: Vec<PartyToParticipant> = snapshot.parties.iter().map(party_of).collect();
    if json {
        let value = serde_json::json!({
            "node": name,
            "at": snapshot.timestamp,
            "snapshot": {
                "parameters": {
                    "published": snapshot.parameters_published,
                    "confirmation_response_timeout": human(params.confirmation_response_timeout),
                    "mediator_reaction_timeout": human(params.mediator_reaction_timeout),
                    "ledger_time_record_time_tolerance": human(params.ledger_time_record_time_tolerance),
                    "topology_change_delay": human(params.topology_change_delay),
                },
                "mediator": snapshot.mediator,
                "participants": snapshot.participants,
                "parties": parties.iter().map(|p| serde_json::json!({
                    "party": p.party,
                    "participants": p.participants.iter().map(|(h, perm)| serde_json::json!({"participant": h, "permission": permission(*perm)})).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            },
            "transactions": rows.iter().map(|(tx, s)| serde_json::json!({
                "sequenced_at": s.sequenced_at,
                "sender": s.sender,
                "operation": tx.as_ref().map(|t| t.operation.as_str()).unwrap_or("?"),
                "serial": tx.as_ref().map(|t| t.serial).ok(),
                "kind": tx.as_ref().map(|t| t.mapping.kind().as_str()).unwrap_or("?"),
                "mapping": match tx { Ok(t) => describe(t), Err(e) => format!("unreadable: {e}") },
                "accepted": s.accepted,
                "effective_from": s.effective_from,
                "effective_until": s.effective_until,
                "ignore_reason": (!s.accepted).then_some(s.ignore_reason.as_str()),
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("topology at {} as mediator replica {name} sees it", snapshot.timestamp);
    println!(
        "parameters:   {}{}",
        describe_params(&params),
        if snapshot.parameters_published { "" } else { " (defaults: none published yet)" }
    );
    println!("mediator:     {}", snapshot.mediator.as_deref().unwrap_or("none"));
    println!(
        "participants: {}",
        if snapshot.participants.is_empty() { "none".to_string() } else { snapshot.participants.join(", ") }
    );
    if parties.is_empty() {
        println!("parties:      none");
    } else {
        println!("parties:");
        for p in &parties {
            println!("  {:<24} {}", p.party, hosts(&p.participants));
        }
    }
    println!();
    println!("{:<18} {:<20} {:<7} {:<40} OUTCOME", "SEQUENCED AT", "SENDER", "SERIAL", "TRANSACTION");
    for (tx, s) in &rows {
        let (serial, what) = match tx {
            Ok(t) => (t.serial.to_string(), describe(t)),
            Err(e) => ("?".into(), format!("unreadable: {e}")),
        };
        let outcome = if s.accepted {
            match (s.effective_from, s.effective_until) {
                (Some(f), Some(u)) => format!("accepted, in effect {f}..{u}"),
                (Some(f), None) => format!("accepted, in effect from {f}"),
                _ => "accepted".into(),
            }
        } else {
            format!("ignored: {}", s.ignore_reason)
        };
        println!("{:<18} {:<20} {:<7} {:<40} {outcome}", s.sequenced_at, s.sender, serial, what);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(ts: i64, accepted: bool, tx: &TopologyTransaction) -> StoredTopologyTransaction {
        StoredTopologyTransaction {
            sequenced_at: ts,
            sender: "syncline-operator".into(),
            transaction: Some(tx.into()),
            accepted,
            effective_from: accepted.then_some(ts + 250_000),
            effective_until: None,
            ignore_reason: if accepted { String::new() } else { "wrong serial".into() },
        }
    }

    #[test]
    fn hosts_parse_with_submission_by_default_and_refuse_unknown_permissions() {
        let h = host("p1").unwrap();
        assert_eq!((h.participant.as_str(), h.permission), ("p1", Permission::Submission));
        assert_eq!(host("p2:observation").unwrap().permission, Permission::Observation);
        assert_eq!(host("p2:confirmation").unwrap().permission, Permission::Confirmation);
        assert!(host("p2:admin").unwrap_err().contains("unknown permission \"admin\""));
        assert!(host(":submission").unwrap_err().contains("names no participant"));
        assert!(positive_duration("0s").is_err());
        assert_eq!(positive_duration("250ms").unwrap(), Duration::from_millis(250));
    }

    #[test]
    fn the_head_of_a_key_is_its_latest_accepted_transaction() {
        let join = |serial, p: &str| add(serial, Mapping::ParticipantJoin(ParticipantJoin { participant: p.into() }));
        let view = TopologyResponse {
            transactions: vec![
                stored(1, true, &join(1, "p1")),
                stored(2, true, &join(1, "p2")),
                stored(3, true, &join(2, "p1")),
                stored(4, false, &join(5, "p1")),
            ],
            snapshot: None,
        };
        let (h, s) = head(&view, &MappingKey::Participant("p1".into())).unwrap();
        assert_eq!((h.serial, s.sequenced_at), (2, 3), "the ignored serial 5 does not count");
        assert!(head(&view, &MappingKey::Mediator).is_none());
        assert_eq!(describe(&join(1, "p1")), "participant join p1");
    }
}
