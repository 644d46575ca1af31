//! Health of a sequencer node: it serves while a writer lane runs (a failed lane recovers by
//! itself while the others write), every running lane's watermark was confirmed online recently, its notification listener is up (or was down only briefly) and its
//! subscriptions can read. The node publishes this on a `watch` when it changes: the writer,
//! the listener and the readers wake the health task on their transitions, and the task
//! sleeps until the next moment a grace period can run out (no polling).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use syncline_node::HealthState;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::Inner;

/// Name of the public service in `grpc.health.v1`.
pub const SERVICE_NAME: &str = "syncline.sequencer.v1.SequencerService";

/// Whether the node serves, and why not.
pub type SequencerHealth = HealthState;

/// Wakes the health task when something it evaluates changed.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    wake: Notify,
    /// Set while the node is not serving for lack of a recent watermark write: only then
    /// does a write change the verdict, so only then do writes wake the task.
    awaiting_write: AtomicBool,
}

impl Changes {
    /// A state the health depends on changed.
    pub(crate) fn changed(&self) {
        self.wake.notify_one();
    }

    /// The writer confirmed a watermark.
    pub(crate) fn wrote(&self) {
        if self.awaiting_write.swap(false, Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }
}

/// The node's health now, and when it may next change without any event (a grace period
/// running out).
fn evaluate(inner: &Inner) -> (HealthState, Option<Duration>) {
    let (writer, settings) = (&inner.writer, &inner.settings);
    let grace = settings.health_stale_after();
    let mut next: Option<Duration> = None;
    let mut at = |d: Duration| next = Some(next.map_or(d, |n| n.min(d)));
    if !writer.is_running() {
        return (HealthState::not_serving(format!("writer not running: {}", writer.detail())), None);
    }
    // Armed before reading the write time: a write in between then wakes the task again
    // rather than slipping past it.
    inner.changes.awaiting_write.store(true, Ordering::SeqCst);
    let since = writer.since_last_write();
    if since > grace {
        let why = format!("watermark not confirmed for over {} ms (database slow or unreachable)", grace.as_millis());
        return (HealthState::not_serving(why), None);
    }
    inner.changes.awaiting_write.store(false, Ordering::SeqCst);
    at(grace - since);
    // Without notifications subscriptions fall back to polling: slow, so not serving.
    if let Some((down, why)) = inner.signals.listener.down_for() {
        if down > grace {
            let why = format!("notification listener down for over {} ms: {why}", grace.as_millis());
            return (HealthState::not_serving(why), None);
        }
        at(grace - down);
    }
    if let Some((since, why)) = inner.readers.failing() {
        // Reads are retried only by new subscriptions: a failure this old tells nothing.
        let age = since.elapsed();
        if age < grace {
            // Serving again once the failure is old enough.
            return (HealthState::not_serving(format!("subscriptions cannot read events: {why}")), Some(grace - age));
        }
    }
    (HealthState::serving(), next)
}

/// Components for a status page: (name, state).
pub(crate) fn components(inner: &Inner) -> Vec<(String, String)> {
    let writer = &inner.writer;
    // Every lane's index ("none" for a lane that has none yet).
    let index = writer
        .lanes()
        .iter()
        .map(|l| l.node_index().map_or("none".to_string(), |i| i.to_string()))
        .collect::<Vec<_>>()
        .join(", ");
    let listener = match inner.signals.listener.down_for() {
        None => "listening".to_string(),
        Some((d, why)) => format!("down for {} ms: {why}", d.as_millis()),
    };
    let subscriptions =
        format!("{} of at most {}", inner.subscriptions.load(Ordering::Relaxed), inner.settings.max_subscriptions);
    vec![
        ("writer".into(), writer.detail()),
        ("node_index".into(), index),
        ("last_watermark_write".into(), format!("{} ms ago", writer.since_last_write().as_millis())),
        ("notification_listener".into(), listener),
        ("subscriptions".into(), subscriptions),
    ]
}

/// Publish the node's health on `tx` whenever it changes, and the `syncline_sequencer_serving`
/// gauge with it, until `stop`; then once more (the node has stopped by then).
pub(crate) fn spawn(
    inner: Arc<Inner>,
    tx: watch::Sender<HealthState>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let span = tracing::info_span!("health", node = %inner.settings.name);
    tokio::spawn(
        async move {
            let gauge = metrics::gauge!("syncline_sequencer_serving", "node" => inner.settings.name.clone());
            let publish = |state: HealthState| {
                gauge.set(if state.serving { 1.0 } else { 0.0 });
                tx.send_if_modified(|now| {
                    if *now == state {
                        return false;
                    }
                    if now.serving != state.serving {
                        tracing::info!(serving = state.serving, detail = %state.detail, "health changed");
                    }
                    *now = state;
                    true
                });
            };
            loop {
                let (state, next) = evaluate(&inner);
                publish(state);
                // A grace period that runs out changes the verdict: wake a little after it.
                let deadline = next.map(|d| Instant::now() + d + Duration::from_millis(5));
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = inner.changes.wake.notified() => {}
                    _ = sleep_until(deadline) => {}
                }
            }
            publish(evaluate(&inner).0);
        }
        .instrument(span),
    )
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
