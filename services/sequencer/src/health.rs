//! Health of a sequencer node: it serves while its writer runs, its watermark was confirmed
//! online recently, its notification listener is up (or was down only briefly) and its
//! subscriptions can read. The gRPC health service reports the same.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::Inner;

/// Name of the public service in `grpc.health.v1`.
pub const SERVICE_NAME: &str = "syncline.sequencer.v1.SequencerService";

/// Whether the node serves, and why not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SequencerHealth {
    /// True while sends and subscriptions are served.
    pub serving: bool,
    /// "running", or what is wrong.
    pub detail: String,
}

/// A handle that computes a node's health; cheap to clone, usable after the node stopped.
#[derive(Clone)]
pub struct HealthProbe {
    pub(crate) inner: Arc<Inner>,
}

impl HealthProbe {
    /// Compute the node's health now.
    pub fn check(&self) -> SequencerHealth {
        let (writer, settings) = (&self.inner.writer, &self.inner.settings);
        let not = |detail: String| SequencerHealth { serving: false, detail };
        if !writer.is_running() {
            return not(format!("writer not running: {}", writer.detail()));
        }
        let grace = settings.health_stale_after();
        let since = writer.since_last_write();
        if since > grace {
            return not(format!("watermark not confirmed for {} ms (database slow or unreachable)", since.as_millis()));
        }
        // Without notifications subscriptions fall back to polling: slow, so not serving.
        if let Some((down, why)) = self.inner.signals.listener.down_for() {
            if down > grace {
                return not(format!("notification listener down for {} ms: {why}", down.as_millis()));
            }
        }
        if let Some((since, why)) = self.inner.readers.failing() {
            // Reads are retried only by new subscriptions: a failure this old tells nothing.
            if since.elapsed() < grace {
                return not(format!("subscriptions cannot read events: {why}"));
            }
        }
        SequencerHealth { serving: true, detail: "running".into() }
    }

    /// Components for a status page: (name, state).
    pub fn components(&self) -> Vec<(String, String)> {
        let listener = match self.inner.signals.listener.down_for() {
            None => "listening".to_string(),
            Some((d, why)) => format!("down for {} ms: {why}", d.as_millis()),
        };
        let subscriptions = format!(
            "{} of at most {}",
            self.inner.subscriptions.load(Ordering::Relaxed),
            self.inner.settings.max_subscriptions
        );
        vec![("notification_listener".into(), listener), ("subscriptions".into(), subscriptions)]
    }
}

/// Keep `reporter` (gRPC health) and the `syncline_sequencer_serving` gauge in step with
/// the node's health until cancelled.
pub async fn report_grpc(reporter: HealthReporter, probe: HealthProbe, cancel: CancellationToken) {
    let mut last = None;
    let gauge = metrics::gauge!("syncline_sequencer_serving", "node" => probe.inner.settings.name.clone());
    loop {
        let serving = probe.check().serving;
        gauge.set(if serving { 1.0 } else { 0.0 });
        if last != Some(serving) {
            let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
            reporter.set_service_status(SERVICE_NAME, status).await;
            reporter.set_service_status("", status).await;
            last = Some(serving);
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}
