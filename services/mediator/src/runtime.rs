//! The leader's work: subscribe after the processed position, process each event in one
//! fenced transaction, send the verdicts it finalized, ask for time proofs while a deadline is
//! pending, acknowledge processed events and prune old requests. Any failure ends the run;
//! the replica manager starts it again, and it resumes from the database.

use std::sync::Arc;
use std::time::Duration;

use scoped_futures::ScopedFutureExt;
use syncline_coordination::db::{self, SessionKind};
use syncline_coordination::leadership::{self, Fence};
use syncline_coordination::Db;
use syncline_protocol::subscription::Subscription;
use syncline_protocol::time_proof::{sleep_until_wall, TimeProofs};
use syncline_sequencer_client::{now_micros, SendRequest, SequencerApi};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::aggregation::{self, Verdict};
use crate::config::MediatorParameters;
use crate::error::MediatorError;
use crate::processor::{self, Processed, Processor};
use crate::store::{self, StoredRequest};

/// What the runtime needs, shared by every run of one replica.
pub struct Context<S> {
    /// The mediator's member name.
    pub member: String,
    /// This replica's name.
    pub replica: String,
    /// Its database.
    pub db: Db,
    /// The sequencers.
    pub sequencer: S,
    /// Its parameters.
    pub params: MediatorParameters,
}

/// How often processed events are acknowledged to the sequencer at most.
const ACK_INTERVAL: Duration = Duration::from_secs(1);

/// Run as leader under `fence` until `stop`.
pub async fn run<S: SequencerApi + Clone + 'static>(
    ctx: Arc<Context<S>>,
    fence: Fence,
    stop: CancellationToken,
) -> Result<(), MediatorError> {
    let processor = Processor::new(&ctx.member, &ctx.params);
    let mut conn = db::connect(ctx.db.config(), SessionKind::Pooled).await?;
    let position = store::position(&mut conn, &ctx.member).await?;
    let (pending, mut next_deadline) = store::pending(&mut conn).await?;
    metrics::gauge!("syncline_mediator_outstanding_requests").set(pending as f64);
    tracing::info!(?position, pending, "leading: resuming after the processed position");

    // Verdicts a former leader stored but may not have sent; the message id makes a second
    // send of one that did go out harmless.
    let mut sends = JoinSet::new();
    for request in store::undelivered(&mut conn, now_micros()).await? {
        tracing::info!(request_id = request.request_id, "re-sending a stored verdict not yet seen sequenced");
        spawn_verdict(&mut sends, &ctx, &request);
    }

    let hint = format!(
        "run `syncline admin bootstrap --mediator {} --token-dir DIR` and name DIR/{}.token in sequencer.token_file",
        ctx.member, ctx.member
    );
    let mut events = Subscription::new(ctx.sequencer.clone(), &ctx.member, position, hint);
    let mut last_ts = position.unwrap_or(0);
    let mut acknowledged = last_ts;
    let mut ack = tokio::time::interval(ACK_INTERVAL);
    let mut prune = tokio::time::interval(ctx.params.prune_interval);
    let mut proofs = TimeProofs::new(ctx.params.time_proof_delay);
    loop {
        let proof_due = proofs.due(next_deadline, last_ts);
        tokio::select! {
            _ = stop.cancelled() => break,
            event = events.next() => {
                let event = event?;
                let ts = event.timestamp;
                let processed = leadership::fenced(&mut conn, &fence, |c| {
                    let (processor, event) = (&processor, &event);
                    async move { processor.process(c, event).await }.scope_boxed()
                })
                .await?;
                last_ts = ts;
                next_deadline = processed.next_deadline;
                metrics::gauge!("syncline_mediator_outstanding_requests").set(processed.pending as f64);
                // High after a takeover while the new leader catches up, or when it cannot keep up.
                let lag = (now_micros() - ts).max(0) as f64 / 1e6;
                metrics::gauge!("syncline_mediator_processing_lag_seconds").set(lag);
                crash_window(&ctx.replica, &processed)?;
                for request in &processed.finalized {
                    record_verdict(request);
                    spawn_verdict(&mut sends, &ctx, request);
                }
            }
            _ = sleep_until_wall(proof_due) => {
                let deadline = next_deadline.expect("a time proof is only due for a pending deadline");
                let request = proofs.ask(&ctx.member, deadline);
                spawn_time_proof(&mut sends, &ctx, request, deadline);
            }
            _ = ack.tick(), if last_ts > acknowledged => {
                match ctx.sequencer.acknowledge(&ctx.member, last_ts).await {
                    Ok(()) => acknowledged = last_ts,
                    Err(e) => tracing::warn!(error = %e, "could not acknowledge processed events; will retry"),
                }
            }
            _ = prune.tick() => {
                let before = last_ts - ctx.params.retention.as_micros() as i64;
                let removed = leadership::fenced(&mut conn, &fence, |c| async move { Ok::<_, MediatorError>(store::prune(c, before).await?) }.scope_boxed()).await?;
                if removed > 0 {
                    tracing::info!(removed, "pruned finalized requests past the retention");
                }
            }
            Some(done) = sends.join_next(), if !sends.is_empty() => {
                if let Err(e) = done {
                    tracing::error!(error = %e, "a send task failed");
                }
            }
        }
    }
    // Stopping: sends still under way are dropped; the next leader re-sends what was not
    // seen sequenced.
    sends.abort_all();
    Ok(())
}

/// Failpoint `mediator-after-verdict-stored` (configured `return(<replica>)`): the replica
/// named stops right after committing a verdict and before sending it, as if it crashed.
fn crash_window(replica: &str, processed: &Processed) -> Result<(), MediatorError> {
    #[cfg(feature = "failpoints")]
    if !processed.finalized.is_empty()
        && fail::eval("mediator-after-verdict-stored", |target| target.as_deref() == Some(replica)) == Some(true)
    {
        return Err(MediatorError::Failpoint("mediator-after-verdict-stored"));
    }
    let _ = (replica, processed);
    Ok(())
}

/// Count a finalized request in the metrics (after its commit, so a retried transaction does
/// not count twice).
fn record_verdict(request: &StoredRequest) {
    let Some(verdict) = request.verdict() else { return };
    metrics::counter!("syncline_mediator_verdicts_total", "kind" => verdict.kind()).increment(1);
    if let Some(at) = request.finalized_at {
        let seconds = (at - request.request_id).max(0) as f64 / 1e6;
        metrics::histogram!("syncline_mediator_decision_seconds").record(seconds);
    }
    if let Verdict::MediatorReject { code, unresponsive_parties, .. } = &verdict {
        if code == aggregation::TIMED_OUT {
            for party in unresponsive_parties {
                metrics::counter!("syncline_mediator_timeouts_total", "party" => party.clone()).increment(1);
            }
        }
    }
}

/// Send the verdict of `request` to its participants, in the background.
fn spawn_verdict<S: SequencerApi + Clone + 'static>(
    sends: &mut JoinSet<()>,
    ctx: &Arc<Context<S>>,
    request: &StoredRequest,
) {
    let Some(send) = processor::verdict_send(&ctx.member, request) else { return };
    let (sequencer, request_id) = (ctx.sequencer.clone(), request.request_id);
    sends.spawn(async move {
        match sequencer.send(send).await {
            Ok(sent) => tracing::debug!(request_id, timestamp = sent.timestamp, "verdict sequenced"),
            // Late or refused: the participants time out on their own (logged, as Canton does).
            Err(e) => tracing::warn!(request_id, error = %e, "verdict not sequenced"),
        }
    });
}

/// Send a time proof `request` in the background.
fn spawn_time_proof<S: SequencerApi + Clone + 'static>(
    sends: &mut JoinSet<()>,
    ctx: &Arc<Context<S>>,
    request: SendRequest,
    deadline: i64,
) {
    metrics::counter!("syncline_mediator_time_proofs_total").increment(1);
    let sequencer = ctx.sequencer.clone();
    sends.spawn(async move {
        tracing::debug!(deadline, "asking for a time proof");
        if let Err(e) = sequencer.send(request).await {
            tracing::warn!(deadline, error = %e, "time proof not sequenced");
        }
    });
}
