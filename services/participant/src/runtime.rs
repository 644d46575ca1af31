//! The leader's work: recover the ledger (delete rows above the ledger end), open the ledger
//! API, subscribe after the processed position, process each event in one fenced
//! transaction, send the responses it prepared after the commit, ask for time proofs while a
//! deadline is pending, and acknowledge processed events. Any failure ends the run (and
//! closes the API); the replica manager starts it again, and it resumes from the database.

use std::sync::Arc;
use std::time::Duration;

use scoped_futures::ScopedFutureExt;
use syncline_coordination::db::{self, SessionKind};
use syncline_coordination::leadership::{self, Fence};
use syncline_proto::sequencer::SendRequest;
use syncline_protocol::subscription::Subscription;
use syncline_protocol::time_proof::{sleep_until_wall, TimeProofs};
use syncline_protocol::topology;
use syncline_sequencer_client::{now_micros, SendError, SequencerApi};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::ParticipantError;
use crate::model::LedgerEnd;
use crate::processor::{self, Processor};
use crate::store::{self, Ledger};
use crate::{Active, Shared};

/// How often processed events are acknowledged to the sequencer at most.
const ACK_INTERVAL: Duration = Duration::from_secs(1);
/// How often the outstanding-requests gauge is read from the store (off the per-event path).
const GAUGE_INTERVAL: Duration = Duration::from_secs(1);

/// Closes the ledger API when the run ends, however it ends.
struct CloseApi(Arc<Shared>, Arc<Active>);

impl Drop for CloseApi {
    fn drop(&mut self) {
        self.1.stop.cancel();
        self.0.active.send_replace(None);
    }
}

fn ledger_end(l: &Ledger) -> LedgerEnd {
    LedgerEnd { offset: l.ledger_end, record_time: l.ledger_end_record_time }
}

/// After the commit of `processed` (so that a retried transaction does not count twice): the
/// metrics, and the ledger end the API follows.
fn published(processed: &processor::Processed, end_tx: &watch::Sender<LedgerEnd>) {
    metrics::gauge!("syncline_participant_ledger_end").set(processed.ledger.ledger_end as f64);
    metrics::counter!("syncline_participant_published_total").increment(processed.published as u64);
    for status in &processed.completed {
        metrics::counter!("syncline_participant_completions_total", "status" => status.clone()).increment(1);
    }
    end_tx.send_if_modified(|e| {
        let new = ledger_end(&processed.ledger);
        let changed = *e != new;
        *e = new;
        changed
    });
}

/// Run as leader under `fence` until `stop`.
pub(crate) async fn run(shared: Arc<Shared>, fence: Fence, stop: CancellationToken) -> Result<(), ParticipantError> {
    let member = shared.member.clone();
    let processor = Processor::new(&member);
    let mut conn = db::connect(shared.db.config(), SessionKind::Pooled).await?;
    // Indexer recovery: nothing above the ledger end may survive a former leader.
    let ledger = leadership::fenced(&mut conn, &fence, |c| {
        let member = &member;
        async move {
            let l = store::ledger(c, member).await?;
            let removed = store::truncate_above(c, l.ledger_end).await?;
            if removed > 0 {
                tracing::warn!(removed, ledger_end = l.ledger_end, "deleted rows above the ledger end");
            }
            store::set_ledger(c, member, &l).await?;
            Ok::<_, ParticipantError>(l)
        }
        .scope_boxed()
    })
    .await?;
    let (end_tx, end_rx) = watch::channel(ledger_end(&ledger));
    let (refused, mut refusals) = tokio::sync::mpsc::unbounded_channel();
    let active = Arc::new(Active { fence: fence.clone(), ledger_end: end_rx, stop: stop.child_token(), refused });
    // Responses a former leader prepared but may not have sent; the message id makes a second
    // send of one that did go out harmless.
    for p in store::undelivered_responses(&mut conn, now_micros()).await? {
        let snapshot = topology::snapshot_at(&mut conn, p.request_id).await?;
        if let Some(send) = processor::response_send(&member, &p, snapshot.mediator()) {
            tracing::info!(request_id = p.request_id, "re-sending a response not yet seen sequenced");
            spawn_send(&shared, &active, send, SendKind::Response);
        }
    }
    let mut next_deadline = store::next_deadline(&mut conn).await?;
    shared.active.send_replace(Some(active.clone()));
    let _close = CloseApi(shared.clone(), active.clone());
    tracing::info!(position = ?ledger.processed_ts, ledger_end = ledger.ledger_end, "leading: ledger API open, resuming after the processed position");

    let hint = format!(
        "run `syncline admin join-participant {member} --token-dir DIR` and name DIR/{member}.token in sequencer.token_file"
    );
    let mut events = Subscription::new(shared.sequencer.clone(), &member, ledger.processed_ts, hint);
    let mut last_ts = ledger.processed_ts.unwrap_or(0);
    let mut acknowledged = last_ts;
    let mut ack = tokio::time::interval(ACK_INTERVAL);
    let mut gauges = tokio::time::interval(GAUGE_INTERVAL);
    let mut proofs = TimeProofs::new(shared.params.time_proof_delay);
    loop {
        let proof_due = proofs.due(next_deadline, last_ts);
        tokio::select! {
            _ = stop.cancelled() => break,
            event = events.next() => {
                let event = event?;
                let processed = leadership::fenced(&mut conn, &fence, |c| {
                    let (processor, event) = (&processor, &event);
                    async move { processor.process(c, event).await }.scope_boxed()
                })
                .await?;
                last_ts = event.timestamp;
                metrics::gauge!("syncline_participant_processed_timestamp_seconds").set(last_ts as f64 / 1e6);
                // How far behind the sequencer this replica processes: high after a takeover
                // while the new leader catches up, or when it cannot keep up.
                let lag = (now_micros() - last_ts).max(0) as f64 / 1e6;
                metrics::gauge!("syncline_participant_processing_lag_seconds").set(lag);
                published(&processed, &end_tx);
                for send in processed.responses {
                    spawn_send(&shared, &active, send, SendKind::Response);
                }
                next_deadline = store::next_deadline(&mut conn).await?;
            }
            Some((message_id, reason)) = refusals.recv() => {
                let refused = leadership::fenced(&mut conn, &fence, |c| {
                    let (processor, message_id, reason) = (&processor, &message_id, &reason);
                    async move { processor.refuse(c, message_id, reason.clone()).await }.scope_boxed()
                })
                .await?;
                if let Some(processed) = refused {
                    tracing::info!(%message_id, %reason, "submission refused by the sequencer: completed at once");
                    published(&processed, &end_tx);
                }
            }
            _ = shared.wake.notified() => {
                next_deadline = store::next_deadline(&mut conn).await?;
            }
            _ = sleep_until_wall(proof_due) => {
                let deadline = next_deadline.expect("a time proof is only due for a pending deadline");
                let request = proofs.ask(&member, deadline);
                tracing::debug!(deadline, "asking for a time proof");
                spawn_send(&shared, &active, request, SendKind::TimeProof);
            }
            _ = gauges.tick() => {
                match store::undecided_count(&mut conn).await {
                    Ok(n) => metrics::gauge!("syncline_participant_outstanding_requests").set(n as f64),
                    Err(e) => tracing::debug!(error = %e, "could not count outstanding requests"),
                }
            }
            _ = ack.tick(), if last_ts > acknowledged => {
                match shared.sequencer.acknowledge(&member, last_ts).await {
                    Ok(()) => acknowledged = last_ts,
                    Err(e) => tracing::warn!(error = %e, "could not acknowledge processed events; will retry"),
                }
            }
        }
    }
    Ok(())
}

/// What a background send is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SendKind {
    /// A confirmation request: it outlives the run that registered it (its database may be
    /// gone, the sequencers are not), bounded by its max-sequencing-time, so that a new
    /// leader finds it sequenced instead of timing it out.
    Request,
    /// A confirmation response: likewise, bounded by the response deadline.
    Response,
    /// A time proof: only useful to this run.
    TimeProof,
}

/// Send `request` in the background (a time proof only until the run stops).
pub(crate) fn spawn_send(shared: &Arc<Shared>, active: &Arc<Active>, request: SendRequest, kind: SendKind) {
    let (sequencer, stop, refused) = (shared.sequencer.clone(), active.stop.clone(), active.refused.clone());
    tokio::spawn(async move {
        let message_id = request.message_id.clone();
        let stopped = async {
            match kind {
                SendKind::TimeProof => stop.cancelled().await,
                SendKind::Request | SendKind::Response => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stopped => {}
            sent = sequencer.send(request) => match sent {
                Ok(sent) => tracing::debug!(%message_id, timestamp = sent.timestamp, ?kind, "sequenced"),
                // Refused for good: not sequenced, and never will be; the command completes now
                // instead of at its max-sequencing-time.
                Err(e @ (SendError::Rejected { .. } | SendError::NotSequenced { .. })) if kind == SendKind::Request => {
                    tracing::warn!(%message_id, error = %e, "the sequencer refused a submission");
                    let _ = refused.send((message_id, e.to_string()));
                }
                // Its outcome shows in the event stream (or its absence, by the max-sequencing-time).
                Err(e) => tracing::warn!(%message_id, error = %e, ?kind, "send not confirmed"),
            }
        }
    });
}
