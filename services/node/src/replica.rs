//! Replica manager: runs a node's active-only services while its replica leads the group and
//! stops them when it stops leading. Services get the fence to carry on their writes, so even
//! a service that has not noticed the demotion yet cannot write under an old epoch.

use std::error::Error as StdError;
use std::future::Future;
use std::time::Duration;

use syncline_coordination::leadership::{Fence, Role};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// What the active-only services of this replica are doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceState {
    /// Not leading; services stopped.
    Passive,
    /// Leading; services run under this epoch.
    Active {
        /// The epoch.
        epoch: i64,
    },
    /// Leading, but the services stopped with an error and are being restarted.
    Restarting {
        /// The epoch.
        epoch: i64,
        /// Why the services stopped.
        error: String,
    },
    /// No longer leading under `epoch` (demoted or shutting down); its services are still
    /// stopping. Not active: requests must already go to the new leader.
    Stopping {
        /// The epoch.
        epoch: i64,
    },
}

impl ServiceState {
    /// True while the services run as leader (what `check = "is-active"` reports).
    pub fn is_active(&self) -> bool {
        matches!(self, ServiceState::Active { .. })
    }
}

/// How long services get to stop after a demotion before they are aborted.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause between restarts of services that failed while leading.
const RESTART_DELAY: Duration = Duration::from_secs(1);

/// Handle to a running replica manager.
pub struct ReplicaManager {
    state: watch::Receiver<ServiceState>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl ReplicaManager {
    /// Follow `role`: on becoming active call `start(fence, stop)` and run the future it
    /// returns until it ends or `stop` is cancelled (demotion or shutdown). A service that
    /// ends with an error while still leading is restarted after a short delay.
    pub fn spawn<F, Fut, E>(name: &str, mut role: watch::Receiver<Role>, mut start: F) -> ReplicaManager
    where
        F: FnMut(Fence, CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<Box<dyn StdError + Send + Sync>> + Send + 'static,
    {
        let (state_tx, state) = watch::channel(ServiceState::Passive);
        let cancel = CancellationToken::new();
        let stop_all = cancel.clone();
        let span = tracing::info_span!("replica_manager", node = %name);
        let task = tokio::spawn(
            async move {
                loop {
                    let current = role.borrow_and_update().clone();
                    let Role::Active(fence) = current else {
                        state_tx.send_replace(ServiceState::Passive);
                        tokio::select! {
                            _ = stop_all.cancelled() => return,
                            r = role.changed() => if r.is_err() { return },
                        }
                        continue;
                    };
                    let epoch = fence.epoch;
                    tracing::info!(epoch, "starting active-only services");
                    let stop = stop_all.child_token();
                    let mut service = tokio::spawn(start(fence.clone(), stop.clone()));
                    state_tx.send_replace(ServiceState::Active { epoch });
                    // Run until demoted, shut down, or the services end by themselves.
                    let ended = tokio::select! {
                        _ = stop_all.cancelled() => None,
                        _ = role.wait_for(|r| r.fence() != Some(&fence)) => None,
                        r = &mut service => Some(r),
                    };
                    match ended {
                        None => {
                            // Not active from this moment, however long the services take.
                            state_tx.send_replace(ServiceState::Stopping { epoch });
                            stop.cancel();
                            if tokio::time::timeout(STOP_TIMEOUT, &mut service).await.is_err() {
                                tracing::warn!(timeout = ?STOP_TIMEOUT, "active-only services did not stop in time; aborted");
                                service.abort();
                            }
                            state_tx.send_replace(ServiceState::Passive);
                            tracing::info!(epoch, "stopped active-only services");
                            if stop_all.is_cancelled() {
                                return;
                            }
                        }
                        Some(r) => {
                            let error = match r {
                                Ok(Ok(())) => "services ended".to_string(),
                                Ok(Err(e)) => chain(&*e.into()),
                                Err(e) => format!("services panicked: {e}"),
                            };
                            tracing::error!(epoch, %error, "active-only services stopped while leading; restarting");
                            state_tx.send_replace(ServiceState::Restarting { epoch, error });
                            tokio::select! {
                                _ = stop_all.cancelled() => return,
                                _ = tokio::time::sleep(RESTART_DELAY) => {}
                            }
                        }
                    }
                }
            }
            .instrument(span),
        );
        ReplicaManager { state, cancel, task }
    }

    /// The services' state now.
    pub fn state(&self) -> ServiceState {
        self.state.borrow().clone()
    }

    /// A receiver of every state change (health reporting).
    pub fn watch(&self) -> watch::Receiver<ServiceState> {
        self.state.clone()
    }

    /// Stop the services (if running) and the manager.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

/// An error and its causes on one line.
fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
