//! `syncline bench`, mediator takeover phase: a sequencer and two mediator replica processes
//! (`syncline daemon`) on one database; each run kills the leading replica with SIGKILL,
//! submits a request right after the kill, and measures until the participant receives the
//! verdict, which only the new leader can have produced. The killed replica is restarted as
//! the next standby, and the next run starts once it waits on the leader lock again.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use diesel::sql_types::{BigInt, Text};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use futures_util::StreamExt;
use syncline_coordination::db::{self, SessionKind};
use syncline_coordination::DbConfig;
use syncline_embedded_pg::free_addr;
use syncline_protocol::messages::{
    self, Action, ConfirmationRequest, ConfirmationResponse, Create, DeduplicationPeriod, LocalVerdict, Mapping,
    MediatorState, Message, Operation, ParticipantJoin, PartyToParticipant, Permission, RequestHeader,
    SubmitterMetadata, TopologyTransaction, Verdict, View, ViewCommonData, ViewResponse,
};
use syncline_protocol::topology::{store, MappingKey, Outcome};
use syncline_sequencer_client::{now_micros, RequestBuilder, SequencerApi, SequencerClient};
use tokio::sync::mpsc;

use crate::procs::{admin_of, client_of, healthy, wait_healthy, Node};

/// Kill → verdict times of the runs, sorted.
pub struct Takeovers {
    /// One per run, ascending.
    pub times: Vec<Duration>,
}

impl Takeovers {
    /// The `p` quantile (0..=1) of the runs.
    pub fn quantile(&self, p: f64) -> Duration {
        let i = ((self.times.len() as f64 * p) as usize).min(self.times.len().saturating_sub(1));
        self.times.get(i).copied().unwrap_or_default()
    }
}

/// Run `runs` takeovers on the database at `url`.
pub async fn takeovers(url: &str, runs: usize) -> Result<Takeovers> {
    let dir = std::env::temp_dir().join(format!("syncline-bench-mediator-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let storage = dir.join("storage.toml");
    std::fs::write(&storage, format!("[storage]\nurl = \"{url}\"\n"))?;
    // Fresh names per bench, so earlier benches on the same database do not interfere.
    let run = format!("{:08x}", rand::random::<u32>());
    let mut seq = Node::configure(&dir, &format!("bench-mseq-{run}"), None)?;
    seq.spawn(&dir, &storage)?;
    let started = wait_healthy(&mut seq, Duration::from_secs(60)).await;
    let result = async {
        started?;
        let member = format!("bench-mediator-{run}");
        let mut meds = vec![
            mediator(&dir, &format!("bench-med-{run}-a"), &member, &seq)?,
            mediator(&dir, &format!("bench-med-{run}-b"), &member, &seq)?,
        ];
        let r = measure(url, &dir, &storage, &seq, &mut meds, &member, &run, runs).await;
        for m in &mut meds {
            m.terminate();
        }
        r
    }
    .await;
    seq.terminate();
    match &result {
        Ok(_) => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Err(_) => eprintln!("daemon logs kept in {}", dir.display()),
    }
    result
}

/// A mediator replica process of `member` (not started), with its config file in `dir`.
fn mediator(dir: &Path, name: &str, member: &str, seq: &Node) -> Result<Node> {
    let (public, admin, health) = (free_addr()?, free_addr()?, free_addr()?);
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[mediators.{name}]\nmember = \"{member}\"\npublic_api = {{ address = \"{public}\" }}\n\
             admin_api = {{ address = \"{admin}\" }}\nhealth = {{ address = \"{health}\" }}\n\
             sequencer = {{ endpoints = [\"{}\"], token_file = \"{}\" }}\n",
            seq.url(),
            crate::admin_tokens::token_file(dir, member).display()
        ),
    )?;
    Ok(Node { name: name.to_string(), public, admin, health, config, child: None, log: None, tls: None })
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    url: &str,
    dir: &Path,
    storage: &Path,
    seq: &Node,
    meds: &mut [Node],
    member: &str,
    run: &str,
    runs: usize,
) -> Result<Takeovers> {
    let cfg = DbConfig::new(url);
    let admin = admin_of(seq)?;
    let participant = format!("bench-participant-{run}");
    let party = format!("bench-party-{run}");
    let tokens = crate::procs::register(&admin, &[member, participant.as_str()], Some(dir)).await?;
    meds[0].spawn(dir, storage)?;
    wait_healthy(&mut meds[0], Duration::from_secs(60)).await.context("the first mediator replica never led")?;
    meds[1].spawn(dir, storage)?;
    wait_waiting(&cfg, &meds[1], Duration::from_secs(60)).await?;

    // Topology: this bench's mediator, participant and party, with serials that follow what
    // earlier benches on the same database left.
    let mut conn = db::connect(&cfg, SessionKind::Pooled).await?;
    let mut txs = Vec::new();
    for mapping in [
        Mapping::MediatorState(MediatorState { mediator: member.to_string() }),
        Mapping::ParticipantJoin(ParticipantJoin { participant: participant.clone() }),
        Mapping::PartyToParticipant(PartyToParticipant {
            party: party.clone(),
            participants: [(participant.clone(), Permission::Submission)].into(),
        }),
    ] {
        let head = store::head(&mut conn, &MappingKey::of(&mapping)).await?;
        let serial = head.map_or(1, |h| h.transaction.serial + 1);
        txs.push(TopologyTransaction { operation: Operation::AddReplace, serial, mapping });
    }
    let encoded = txs.iter().map(|tx| messages::encode(&Message::Topology(tx.clone()))).collect();
    let published = admin.publish_topology(encoded).await?;
    let last = *published.last().context("no timestamp")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match store::stored_at(&mut conn, last).await? {
            Some(s) => match s.outcome {
                Outcome::Accepted { effective_from, .. } => {
                    let wait = (effective_from - now_micros()).max(0) as u64 + 100_000;
                    tokio::time::sleep(Duration::from_micros(wait)).await;
                    break;
                }
                Outcome::Ignored { reason } => bail!("the bench topology was ignored: {reason}"),
            },
            None if Instant::now() > deadline => bail!("the mediator did not process the bench topology in 30 s"),
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }

    let client = client_of(std::slice::from_ref(seq), &tokens)?;
    let (verdicts_tx, mut verdicts) = mpsc::unbounded_channel();
    let follower = {
        let (client, participant) = (client.clone(), participant.clone());
        tokio::spawn(async move {
            let mut events = client.subscribe(&participant, None);
            while let Some(Ok(e)) = events.next().await {
                for env in &e.envelopes {
                    if let Ok(Message::Result(r)) = messages::decode(&env.content) {
                        let _ = verdicts_tx.send((r.request_id, r.verdict, Instant::now()));
                    }
                }
            }
        })
    };
    let result = async {
        // A request through the first leader: everything works before the kills.
        let id = submit_and_approve(&client, &participant, &party, member).await?;
        verdict_for(&mut verdicts, id, Duration::from_secs(30)).await.context("the warm-up request")?;
        let mut times = Vec::with_capacity(runs);
        let mut leader = 0;
        for i in 0..runs {
            let standby = 1 - leader;
            let killed = Instant::now();
            meds[leader].kill9();
            let id = submit_and_approve(&client, &participant, &party, member).await?;
            let at = verdict_for(&mut verdicts, id, Duration::from_secs(60))
                .await
                .with_context(|| format!("run {}: no verdict after killing {}", i + 1, meds[leader].name))?;
            times.push(at.duration_since(killed));
            if !healthy(&meds[standby]).await {
                bail!("run {}: {} produced the verdict but does not report itself active", i + 1, meds[standby].name);
            }
            // The killed replica comes back as the next standby.
            meds[leader].spawn(dir, storage)?;
            wait_waiting(&cfg, &meds[leader], Duration::from_secs(60)).await?;
            leader = standby;
        }
        times.sort();
        anyhow::Ok(Takeovers { times })
    }
    .await;
    follower.abort();
    result
}

/// Submit a request of `party` (hosted by `participant` alone) and approve it at once; its id.
async fn submit_and_approve(client: &SequencerClient, participant: &str, party: &str, mediator: &str) -> Result<i64> {
    let request = request(participant, party);
    let mut send = RequestBuilder::new(participant, format!("req-{}", uuid())).within(Duration::from_secs(60)).build();
    send.envelopes = request.envelopes(mediator, |_| [participant.to_string()].into());
    let id = client.send(send).await?.timestamp;
    let response = ConfirmationResponse {
        request_id: id,
        root_hash: request.root_hash(),
        participant: participant.to_string(),
        views: vec![ViewResponse {
            view_index: 0,
            verdict: LocalVerdict::Approve,
            confirming_parties: [party.to_string()].into(),
        }],
    };
    let send = RequestBuilder::new(participant, format!("resp-{}", uuid()))
        .to([mediator], messages::encode(&Message::Response(response)))
        .within(Duration::from_secs(60))
        .build();
    client.send(send).await?;
    Ok(id)
}

/// When the verdict of request `id` arrived (it must approve).
async fn verdict_for(
    verdicts: &mut mpsc::UnboundedReceiver<(i64, Verdict, Instant)>,
    id: i64,
    within: Duration,
) -> Result<Instant> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, verdicts.recv()).await {
            Ok(Some((rid, verdict, at))) if rid == id => {
                anyhow::ensure!(verdict == Verdict::Approve, "request {id}: {verdict:?}");
                return Ok(at);
            }
            Ok(Some(_)) => continue,
            Ok(None) => bail!("the participant's subscription ended"),
            Err(_) => bail!("no verdict for request {id} within {within:?}"),
        }
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Wait until replica `node` is a standby blocked on the leader lock (its session waits on an
/// advisory lock): a kill from then on measures the takeover, not the standby's start.
pub(crate) async fn wait_waiting(cfg: &DbConfig, node: &Node, limit: Duration) -> Result<()> {
    let mut conn = db::connect(cfg, SessionKind::Pooled).await?;
    let start = Instant::now();
    loop {
        let c: Count = diesel::sql_query(
            "select count(*) as n from pg_stat_activity \
             where application_name = $1 and wait_event_type = 'Lock' and wait_event = 'advisory'",
        )
        .bind::<Text, _>(format!("syncline-{}", node.name))
        .get_result(&mut conn)
        .await?;
        if c.n > 0 {
            return Ok(());
        }
        if start.elapsed() > limit {
            bail!("{} did not wait on the leader lock within {limit:?}", node.name);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn uuid() -> String {
    let h = format!("{:032x}", rand::random::<u128>());
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// A request by `participant` for `party`: one view creating a contract `party` signs.
fn request(participant: &str, party: &str) -> ConfirmationRequest {
    let parties: BTreeSet<String> = [party.to_string()].into();
    ConfirmationRequest {
        header: RequestHeader {
            request_uuid: uuid(),
            submitter: SubmitterMetadata {
                act_as: parties.clone(),
                user_id: "bench".into(),
                command_id: uuid(),
                submission_id: None,
                submitting_participant: participant.to_string(),
                deduplication_period: DeduplicationPeriod::Duration(Duration::from_secs(60)),
            },
            ledger_time: now_micros(),
        },
        views: vec![View {
            common: ViewCommonData { informees: parties.clone(), confirming_parties: parties.clone() },
            actions: vec![Action::Create(Create {
                contract_id: uuid(),
                template: "Bench".into(),
                arguments: "{}".into(),
                signatories: parties,
                observers: BTreeSet::new(),
            })],
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_twenty_runs_are_the_median_and_the_slowest() {
        let t = Takeovers { times: (1..=20).map(Duration::from_millis).collect() };
        assert_eq!(t.quantile(0.50), Duration::from_millis(11));
        assert_eq!(t.quantile(0.99), Duration::from_millis(20));
        assert_eq!(Takeovers { times: vec![] }.quantile(0.5), Duration::ZERO);
    }

    #[test]
    fn bench_requests_are_valid_protocol_messages() {
        let r = request("p", "party");
        let envelopes = r.envelopes("m", |_| ["p".to_string()].into());
        for e in &envelopes {
            messages::decode(&e.content).unwrap();
        }
    }
}
