//! One health state per node: the node publishes it on a `watch` when it changes; `/health`,
//! `grpc.health.v1` and the admin status read the same value.

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// Whether a node serves (and why not), and whether it is the active replica of its group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthState {
    /// True while the node serves its public API.
    pub serving: bool,
    /// "running", or what is wrong.
    pub detail: String,
    /// Whether this node is the active replica of its group (always true when not replicated).
    pub active: bool,
}

impl HealthState {
    /// Serving and active.
    pub fn serving() -> Self {
        HealthState { serving: true, detail: "running".into(), active: true }
    }

    /// Not serving, because of `why`.
    pub fn not_serving(why: impl Into<String>) -> Self {
        HealthState { serving: false, detail: why.into(), active: true }
    }

    /// `Ok` while serving, else the reason.
    pub fn verdict(&self) -> Result<(), &str> {
        if self.serving {
            Ok(())
        } else {
            Err(&self.detail)
        }
    }
}

/// What a node reports about itself to the health endpoints and the admin status.
pub trait NodeHealth: Send + Sync + 'static {
    /// The node's health, published by the node whenever it changes.
    fn health(&self) -> watch::Receiver<HealthState>;
    /// Component lines for the `/health` body and the admin status, computed when asked.
    fn components(&self) -> Vec<(String, String)>;
}

/// Keep `reporter` (`grpc.health.v1`, for `service` and the server as a whole) in step with
/// `health` until cancelled or the node drops its sender.
pub async fn report_grpc(
    reporter: HealthReporter,
    service: &'static str,
    mut health: watch::Receiver<HealthState>,
    cancel: CancellationToken,
) {
    loop {
        let status =
            if health.borrow_and_update().serving { ServingStatus::Serving } else { ServingStatus::NotServing };
        reporter.set_service_status(service, status).await;
        reporter.set_service_status("", status).await;
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = health.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tonic_health::pb::health_server::Health;
    use tonic_health::pb::HealthCheckRequest;

    #[tokio::test]
    async fn grpc_health_follows_the_watch_without_polling() {
        let (tx, rx) = watch::channel(HealthState::not_serving("starting"));
        let reporter = tonic_health::server::HealthReporter::new();
        let service = std::sync::Arc::new(tonic_health::server::HealthService::from_health_reporter(reporter.clone()));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(report_grpc(reporter, "x.Svc", rx, cancel.clone()));
        let status = |name: &'static str| {
            let service = service.clone();
            async move {
                service
                    .check(tonic::Request::new(HealthCheckRequest { service: name.into() }))
                    .await
                    .map(|r| r.into_inner().status)
            }
        };
        let wait_for = |want: ServingStatus| async move {
            for _ in 0..200 {
                if status("x.Svc").await.ok() == Some(want as i32) && status("").await.ok() == Some(want as i32) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("never {want:?}");
        };
        wait_for(ServingStatus::NotServing).await;
        tx.send_replace(HealthState::serving());
        wait_for(ServingStatus::Serving).await;
        tx.send_replace(HealthState::not_serving("writer down"));
        wait_for(ServingStatus::NotServing).await;
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
    }
}
