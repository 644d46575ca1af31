//! What a chaos run proves beyond the demo's checks, read back from every sequencer and
//! through each participant's ledger API: every sequencer serves each member (the mediator and
//! both participants) one and the same sequence of events; no verdict was sequenced twice and
//! none is missing for a request the mediator received; each participant's offsets are
//! gap-free (every offset up to the ledger end is a transaction or a completion, none twice).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use syncline_protocol::messages::{decode, Message};
use syncline_sequencer_client::{ClientConfig, Event, SequencerApi, SequencerClient, TokenSource};
use tonic::Status;

use super::checks::{ledger_end, updates, Check};
use super::topology::{MEDIATOR, PARTICIPANTS};
use super::workload::{completions, App, ALICE, BOB};

/// How long a member's stream may stay quiet before it counts as read to its end.
const QUIET: Duration = Duration::from_secs(2);
/// How long a sequencer may take to reach an event another one already served.
const CATCH_UP: Duration = Duration::from_secs(20);

/// Run the checks against `sequencers` (URLs of each, not a load balancer; the members'
/// tokens in `tokens`) and `app`'s participants.
pub async fn run(sequencers: &[String], tls: &ClientConfig, tokens: &Path, app: &App) -> Vec<Check> {
    let mut out = Vec::new();
    let mut streams = BTreeMap::new();
    match one_order(sequencers, tls, tokens, &mut streams).await {
        Ok(line) => out.push(Check { ok: true, line }),
        Err(line) => out.push(Check { ok: false, line }),
    }
    out.push(verdicts_once(&streams));
    for (p, name) in PARTICIPANTS.iter().enumerate() {
        out.push(match gap_free(app, p).await {
            Ok(c) => c,
            Err(e) => Check { ok: false, line: format!("{name}: reading offsets failed: {}", e.message()) },
        });
    }
    out
}

/// Each member's events as every sequencer serves them, all equal; the first sequencer's kept
/// in `streams`.
async fn one_order(
    sequencers: &[String],
    tls: &ClientConfig,
    tokens: &Path,
    streams: &mut BTreeMap<String, Vec<Event>>,
) -> Result<String, String> {
    let members: Vec<&str> = std::iter::once(MEDIATOR).chain(PARTICIPANTS).collect();
    let mut counts = Vec::new();
    for m in &members {
        let first = events(&sequencers[0], tls, tokens, m, None).await?;
        let last = first.last().map(|e| e.timestamp);
        for s in &sequencers[1..] {
            let other = events(s, tls, tokens, m, Some(last.unwrap_or(i64::MIN))).await?;
            if let Some(i) = (0..first.len().max(other.len())).find(|i| first.get(*i) != other.get(*i)) {
                return Err(format!(
                    "one order per subscriber — NOT: {m} on {s} differs from {} at event #{i} ({} vs {} events)",
                    sequencers[0],
                    first.len(),
                    other.len()
                ));
            }
        }
        counts.push(format!("{m} {}", first.len()));
        streams.insert(m.to_string(), first);
    }
    Ok(format!(
        "one order per subscriber: {} events, the same on all {} sequencers",
        counts.join(", "),
        sequencers.len()
    ))
}

/// `member`'s events served by the sequencer at `url` (as the member, with its token from
/// `tokens`), from the first: until the stream is quiet, or (with `until`) up to that timestamp.
async fn events(
    url: &str,
    tls: &ClientConfig,
    tokens: &Path,
    member: &str,
    until: Option<i64>,
) -> Result<Vec<Event>, String> {
    let client = SequencerClient::new([url], tls.clone())
        .map_err(|e| format!("{url}: {e}"))?
        .with_token(member, TokenSource::File(crate::admin_tokens::token_file(tokens, member)));
    let mut stream = client.subscribe(member, None);
    let mut out: Vec<Event> = Vec::new();
    let wait = if until.is_some() { CATCH_UP } else { QUIET };
    while until.is_none_or(|u| out.last().is_none_or(|e| e.timestamp < u)) {
        match tokio::time::timeout(wait, stream.next()).await {
            Ok(Some(Ok(e))) => out.push(e),
            Ok(Some(Err(e))) => return Err(format!("reading {member}'s events from {url}: {e}")),
            Ok(None) | Err(_) => break,
        }
    }
    if let Some(u) = until {
        out.retain(|e| e.timestamp <= u);
    }
    Ok(out)
}

/// Per participant: at most one verdict per request; every request the mediator received has
/// a verdict at some participant.
fn verdicts_once(streams: &BTreeMap<String, Vec<Event>>) -> Check {
    let messages = |member: &str| {
        let events = streams.get(member).map(Vec::as_slice).unwrap_or_default();
        events
            .iter()
            .flat_map(|e| e.envelopes.iter().map(move |env| (e.timestamp, decode(&env.content))))
            .filter_map(|(ts, m)| m.ok().map(|m| (ts, m)))
            .collect::<Vec<_>>()
    };
    let requests: BTreeSet<i64> =
        messages(MEDIATOR).into_iter().filter(|(_, m)| matches!(m, Message::Informee(_))).map(|(ts, _)| ts).collect();
    let verdicts: Vec<(&str, i64)> = PARTICIPANTS
        .iter()
        .flat_map(|p| {
            messages(p).into_iter().filter_map(move |(_, m)| match m {
                Message::Result(r) => Some((*p, r.request_id)),
                _ => None,
            })
        })
        .collect();
    verdict_tally(&requests, &verdicts)
}

/// The verdict check over the requests the mediator received and the verdicts (participant,
/// request id) the participants received.
fn verdict_tally(requests: &BTreeSet<i64>, verdicts: &[(&str, i64)]) -> Check {
    let mut seen: BTreeMap<(&str, i64), usize> = BTreeMap::new();
    for v in verdicts {
        *seen.entry(*v).or_default() += 1;
    }
    let twice: Vec<String> =
        seen.iter().filter(|(_, n)| **n > 1).map(|((p, id), n)| format!("{p}: request {id} ×{n}")).collect();
    let decided: BTreeSet<i64> = seen.keys().map(|(_, id)| *id).collect();
    let missing = requests.difference(&decided).count();
    Check {
        ok: twice.is_empty() && missing == 0 && !requests.is_empty(),
        line: format!(
            "verdicts: {} requests at the mediator, {} verdicts at the participants; sequenced twice: {}, \
             missing: {missing}{}",
            requests.len(),
            verdicts.len(),
            twice.len(),
            twice.first().map(|t| format!(" (first: {t})")).unwrap_or_default()
        ),
    }
}

/// Participant `p`'s offsets up to its ledger end: each a transaction, a completion or both,
/// none of either twice, none missing.
async fn gap_free(app: &App, p: usize) -> Result<Check, Status> {
    let ch = app.ledger(p).pick().1;
    let end = ledger_end(&ch).await?;
    let tx: Vec<i64> = updates(ch.clone()).await?.iter().map(|t| t.offset).collect();
    let done: Vec<i64> = completions(ch, [ALICE, BOB][p]).await?.iter().map(|c| c.offset).collect();
    Ok(offsets_check(PARTICIPANTS[p], end, &tx, &done))
}

/// The offsets check of participant `name` with ledger end `end`, transactions at `tx` and
/// completions at `done`.
fn offsets_check(name: &str, end: i64, tx: &[i64], done: &[i64]) -> Check {
    let distinct = |v: &[i64]| v.iter().collect::<BTreeSet<_>>().len();
    let twice = tx.len() - distinct(tx) + done.len() - distinct(done);
    let used: BTreeSet<i64> = tx.iter().chain(done).copied().collect();
    let missing = (1..=end).filter(|o| !used.contains(o)).count();
    let beyond = used.iter().filter(|o| **o < 1 || **o > end).count();
    Check {
        ok: twice == 0 && missing == 0 && beyond == 0,
        line: format!(
            "{name}: offsets 1..={end} gap-free ({} transactions, {} completions; missing {missing}, twice {twice}, \
             beyond the end {beyond})",
            tx.len(),
            done.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_twice_or_missing_fails_the_check() {
        let requests: BTreeSet<i64> = [10, 20].into();
        assert!(verdict_tally(&requests, &[("p1", 10), ("p2", 10), ("p1", 20)]).ok);
        let twice = verdict_tally(&requests, &[("p1", 10), ("p1", 20), ("p1", 20)]);
        assert!(!twice.ok && twice.line.contains("sequenced twice: 1") && twice.line.contains("p1: request 20 ×2"));
        let missing = verdict_tally(&requests, &[("p1", 10), ("p2", 10)]);
        assert!(!missing.ok && missing.line.contains("missing: 1"), "{}", missing.line);
        assert!(!verdict_tally(&BTreeSet::new(), &[]).ok, "a run without requests proves nothing");
    }

    #[test]
    fn a_gap_a_doubled_offset_or_one_past_the_end_fails_the_check() {
        assert!(offsets_check("p", 4, &[1, 2, 4], &[2, 3]).ok);
        assert!(offsets_check("p", 0, &[], &[]).ok);
        let gap = offsets_check("p", 4, &[1, 2], &[2, 4]);
        assert!(!gap.ok && gap.line.contains("missing 1"), "{}", gap.line);
        let twice = offsets_check("p", 3, &[1, 2, 2], &[3]);
        assert!(!twice.ok && twice.line.contains("twice 1"), "{}", twice.line);
        let beyond = offsets_check("p", 2, &[1, 2], &[3]);
        assert!(!beyond.ok && beyond.line.contains("beyond the end 1"), "{}", beyond.line);
    }
}
