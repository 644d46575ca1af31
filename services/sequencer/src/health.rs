//! Health of a sequencer node: it serves while its writer runs and its watermark was
//! confirmed online recently. The gRPC health service reports the same.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::settings::SequencerSettings;
use crate::writer::WriterShared;

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

/// Compute the node's health from its writer.
pub fn check(writer: &WriterShared, settings: &SequencerSettings) -> SequencerHealth {
    if !writer.is_running() {
        return SequencerHealth { serving: false, detail: format!("writer not running: {}", writer.detail()) };
    }
    let since = writer.since_last_write();
    if since > settings.health_stale_after() {
        return SequencerHealth {
            serving: false,
            detail: format!("watermark not confirmed for {} ms (database slow or unreachable)", since.as_millis()),
        };
    }
    SequencerHealth { serving: true, detail: "running".into() }
}

/// Keep `reporter` (gRPC health) and the `syncline_sequencer_serving` gauge in step with
/// the node's health until cancelled.
pub async fn report_grpc(
    reporter: HealthReporter,
    writer: Arc<WriterShared>,
    settings: SequencerSettings,
    cancel: CancellationToken,
) {
    let mut last = None;
    let gauge = metrics::gauge!("syncline_sequencer_serving", "node" => settings.name.clone());
    loop {
        let serving = check(&writer, &settings).serving;
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
