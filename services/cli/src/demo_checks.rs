//! What the demo proves at the end, read back through the ledger API of each participant:
//! every command id completed exactly once (as the application saw it), no contract archived
//! twice, and both participants' views of the shared contracts identical (and what the
//! application expects).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use syncline_proto::ledger as pb;
use syncline_proto::ledger::state_service_client::StateServiceClient;
use syncline_proto::ledger::update_service_client::UpdateServiceClient;
use tonic::transport::Channel;
use tonic::Status;

use super::topology::PARTICIPANTS;
use super::workload::{completions, App, Outcome, ALICE, BOB};

/// One check's verdict and what it found.
pub struct Check {
    /// Passed.
    pub ok: bool,
    /// One line.
    pub line: String,
}

fn check(ok: bool, line: String) -> Check {
    Check { ok, line }
}

/// A contract as a participant shows it: id, template, arguments, signatories, observers.
type Contract = (String, String, String, Vec<String>, Vec<String>);

/// Run every check (waiting up to 20 s for both participants to show the same contracts).
pub async fn run(app: &App) -> Result<Vec<Check>, Status> {
    let mut checks = vec![completed_exactly_once(app).await?];
    for p in 0..2 {
        checks.push(archived_at_most_once(app, p).await?);
    }
    let expected: BTreeSet<String> = app.stats.active.lock().unwrap().values().flatten().cloned().collect();
    let start = Instant::now();
    let (a, b) = loop {
        let (a, b) = (acs(channel_of(app, 0)).await?, acs(channel_of(app, 1)).await?);
        if (a == b && ids(&a) == expected) || start.elapsed() > Duration::from_secs(20) {
            break (a, b);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let only = |x: &BTreeSet<Contract>, y: &BTreeSet<Contract>| x.difference(y).count();
    checks.push(check(
        a == b,
        format!(
            "active contracts of {ALICE} and {BOB}: {} on {}, {} on {}, {} only on one of them",
            a.len(),
            PARTICIPANTS[0],
            b.len(),
            PARTICIPANTS[1],
            only(&a, &b) + only(&b, &a)
        ),
    ));
    let seen = ids(&a);
    checks.push(check(
        seen == expected,
        format!(
            "the application's {} active IOUs are exactly these ({} missing, {} unexpected)",
            expected.len(),
            expected.difference(&seen).count(),
            seen.difference(&expected).count()
        ),
    ));
    let problems = app.stats.problems.lock().unwrap().clone();
    if !problems.is_empty() {
        checks.push(check(false, format!("the application ran into: {}", problems.join("; "))));
    }
    Ok(checks)
}

fn ids(set: &BTreeSet<Contract>) -> BTreeSet<String> {
    set.iter().map(|c| c.0.clone()).collect()
}

fn channel_of(app: &App, p: usize) -> Channel {
    app.ledger(p).pick().1
}

/// Each command id has exactly one accepted completion if the application saw it accepted,
/// none if it saw it definitely rejected; no command is unfinished.
async fn completed_exactly_once(app: &App) -> Result<Check, Status> {
    let mut accepted: BTreeMap<String, usize> = BTreeMap::new();
    for (p, party) in [(0, ALICE), (1, BOB)] {
        for c in completions(channel_of(app, p), party).await? {
            if c.status.as_ref().is_some_and(|s| s.code == 0) {
                *accepted.entry(c.command_id).or_default() += 1;
            }
        }
    }
    let outcomes = app.stats.outcomes.lock().unwrap().clone();
    let mut wrong = Vec::new();
    for (id, outcome) in &outcomes {
        let n = accepted.get(id).copied().unwrap_or(0);
        match outcome {
            Outcome::Accepted if n != 1 => wrong.push(format!("{id} accepted {n} times")),
            Outcome::Rejected(e) if n != 0 => wrong.push(format!("{id} rejected ({e}) but accepted {n} times")),
            Outcome::Unfinished => wrong.push(format!("{id} never answered")),
            _ => {}
        }
    }
    wrong.extend(
        accepted.keys().filter(|id| !outcomes.contains_key(*id)).map(|id| format!("{id} unknown to the application")),
    );
    let line = format!(
        "{} command ids, each completed exactly once{}",
        outcomes.len(),
        if wrong.is_empty() { String::new() } else { format!(" — NOT: {}", first(&wrong)) }
    );
    Ok(check(wrong.is_empty(), line))
}

/// On participant `p`: every contract created at most once and archived at most once, and
/// only after its creation.
async fn archived_at_most_once(app: &App, p: usize) -> Result<Check, Status> {
    let (mut created, mut archived) = (BTreeMap::<String, usize>::new(), BTreeMap::<String, usize>::new());
    let mut orphans = 0;
    for tx in updates(channel_of(app, p)).await? {
        for e in tx.events {
            match e.event {
                Some(pb::event::Event::Created(c)) => *created.entry(c.contract_id).or_default() += 1,
                Some(pb::event::Event::Archived(a)) => {
                    orphans += usize::from(!created.contains_key(&a.contract_id));
                    *archived.entry(a.contract_id).or_default() += 1;
                }
                None => {}
            }
        }
    }
    let twice_created = created.values().filter(|n| **n > 1).count();
    let twice = archived.values().filter(|n| **n > 1).count();
    let ok = twice == 0 && twice_created == 0 && orphans == 0;
    Ok(check(
        ok,
        format!(
            "{}: {} contracts created, {} archived; archived twice: {twice}, created twice: {twice_created}, \
             archived before created: {orphans}",
            PARTICIPANTS[p],
            created.len(),
            archived.len()
        ),
    ))
}

fn first(v: &[String]) -> String {
    let more = if v.len() > 3 { format!(" and {} more", v.len() - 3) } else { String::new() };
    format!("{}{more}", v.iter().take(3).cloned().collect::<Vec<_>>().join(", "))
}

pub async fn ledger_end(ch: &Channel) -> Result<i64, Status> {
    Ok(StateServiceClient::new(ch.clone()).get_ledger_end(pb::GetLedgerEndRequest {}).await?.into_inner().offset)
}

/// Every transaction Alice or Bob sees, up to the ledger end.
pub async fn updates(ch: Channel) -> Result<Vec<pb::Transaction>, Status> {
    let end = ledger_end(&ch).await?;
    if end == 0 {
        return Ok(Vec::new());
    }
    let r = pb::GetUpdatesRequest {
        begin_exclusive: 0,
        end_inclusive: Some(end),
        filter: Some(pb::TransactionFilter { parties: vec![ALICE.into(), BOB.into()] }),
    };
    let mut stream = UpdateServiceClient::new(ch).get_updates(r).await?.into_inner();
    let mut out = Vec::new();
    while let Some(item) = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .map_err(|_| Status::deadline_exceeded("the update stream stalled"))?
    {
        if let Some(pb::get_updates_response::Update::Transaction(t)) = item?.update {
            out.push(t);
        }
    }
    Ok(out)
}

/// The active contracts Alice or Bob see.
async fn acs(ch: Channel) -> Result<BTreeSet<Contract>, Status> {
    let r = pb::GetActiveContractsRequest {
        filter: Some(pb::TransactionFilter { parties: vec![ALICE.into(), BOB.into()] }),
        active_at_offset: 0,
    };
    let mut stream = StateServiceClient::new(ch).get_active_contracts(r).await?.into_inner();
    let mut out = BTreeSet::new();
    while let Some(item) = stream.next().await {
        if let Some(mut c) = item?.created_event {
            c.signatories.sort();
            c.observers.sort();
            out.insert((c.contract_id, c.template_id, c.create_arguments, c.signatories, c.observers));
        }
    }
    Ok(out)
}
