//! A replicated node (mediator, participant), written once: it competes for its group's
//! leadership, runs its active-only services on the leader through the [`ReplicaManager`],
//! and publishes one health state: serving while its replica works (a warm passive serves
//! too), active only while its services run as leader. `set-passive` goes through the
//! [`LeadershipHandle`] it hands to the admin API.

use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;

use syncline_coordination::leadership::{Fence, Leadership, LeadershipConfig, LeadershipHandle, Role};
use syncline_coordination::Db;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::health::{HealthState, NodeHealth};
use crate::replica::{ReplicaManager, ServiceState};

/// Leadership and active-only services of one replica.
pub struct ReplicatedNode {
    leadership: Leadership,
    manager: ReplicaManager,
    status: Arc<ReplicaStatus>,
    health_task: JoinHandle<()>,
    cancel: CancellationToken,
}

/// A replicated node that could not start.
pub type StartError = syncline_coordination::LeadershipError;

impl ReplicatedNode {
    /// Start replica `replica` of group `group` (all replicas of a group share the name and
    /// the database behind `db`): compete for leadership with `cfg` and, while leading, run
    /// `start(fence, stop)` (see [`ReplicaManager::spawn`]).
    pub fn start<F, Fut, E>(
        db: Db,
        group: &str,
        replica: &str,
        cfg: LeadershipConfig,
        start: F,
    ) -> Result<ReplicatedNode, StartError>
    where
        F: FnMut(Fence, CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<Box<dyn StdError + Send + Sync>> + Send + 'static,
    {
        let leadership = Leadership::start(db, group, replica, cfg)?;
        let manager = ReplicaManager::spawn(replica, leadership.watch(), start);
        let (health_tx, health) = watch::channel(health_of(&leadership.role(), &manager.state()));
        let status = Arc::new(ReplicaStatus { health, role: leadership.watch(), services: manager.watch() });
        let cancel = CancellationToken::new();
        let health_task = tokio::spawn(
            publish_health(leadership.watch(), manager.watch(), health_tx, cancel.clone())
                .instrument(tracing::info_span!("replica_health", group, replica)),
        );
        Ok(ReplicatedNode { leadership, manager, status, health_task, cancel })
    }

    /// The handle for the admin API (role, `set-passive`).
    pub fn leadership(&self) -> LeadershipHandle {
        self.leadership.handle()
    }

    /// The node's health and status components, for the host.
    pub fn status(&self) -> Arc<dyn NodeHealth> {
        self.status.clone()
    }

    /// What the active-only services do now.
    pub fn services(&self) -> ServiceState {
        self.manager.state()
    }

    /// Stop the services (still under this replica's epoch), then release the lock so that a
    /// standby takes over.
    pub async fn shutdown(self) {
        self.manager.shutdown().await;
        self.leadership.shutdown().await;
        self.cancel.cancel();
        let _ = self.health_task.await;
    }
}

/// The health a replica reports for its role and its services' state.
fn health_of(role: &Role, services: &ServiceState) -> HealthState {
    let (serving, active, detail) = match services {
        ServiceState::Active { epoch } => (true, true, format!("active (epoch {epoch})")),
        ServiceState::Passive if role.is_active() => (true, false, "becoming active".into()),
        ServiceState::Passive => (true, false, "passive (standby)".into()),
        ServiceState::Stopping { epoch } => (true, false, format!("demoted from epoch {epoch}; services stopping")),
        // Not serving: routing the group's traffic here would fail until the restart works.
        ServiceState::Restarting { epoch, error } => {
            (false, false, format!("active (epoch {epoch}) but its services failed, restarting: {error}"))
        }
    };
    HealthState { serving, detail, active }
}

/// Publish the health of every change of role or services until cancelled.
async fn publish_health(
    mut role: watch::Receiver<Role>,
    mut services: watch::Receiver<ServiceState>,
    tx: watch::Sender<HealthState>,
    cancel: CancellationToken,
) {
    loop {
        let now = health_of(&role.borrow_and_update(), &services.borrow_and_update());
        tx.send_if_modified(|h| {
            let changed = *h != now;
            *h = now;
            changed
        });
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = role.changed() => if r.is_err() { return },
            r = services.changed() => if r.is_err() { return },
        }
    }
}

/// What a replica reports to the health endpoints and the admin status.
struct ReplicaStatus {
    health: watch::Receiver<HealthState>,
    role: watch::Receiver<Role>,
    services: watch::Receiver<ServiceState>,
}

impl NodeHealth for ReplicaStatus {
    fn health(&self) -> watch::Receiver<HealthState> {
        self.health.clone()
    }

    fn components(&self) -> Vec<(String, String)> {
        let role = match &*self.role.borrow() {
            Role::Active(f) => format!("leader (epoch {})", f.epoch),
            Role::Passive => "passive".into(),
        };
        let services = match &*self.services.borrow() {
            ServiceState::Passive => "stopped".into(),
            ServiceState::Active { epoch } => format!("running (epoch {epoch})"),
            ServiceState::Restarting { error, .. } => format!("restarting: {error}"),
            ServiceState::Stopping { .. } => "stopping".into(),
        };
        vec![("leadership".into(), role), ("services".into(), services)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_running_services_of_the_leader_count_as_active() {
        let fence = Fence { group: "m".into(), epoch: 3, step_timeout: std::time::Duration::from_secs(1) };
        let active = Role::Active(fence);
        let h = health_of(&active, &ServiceState::Active { epoch: 3 });
        assert!(h.serving && h.active, "{h:?}");
        for (role, s) in [
            (&active, ServiceState::Passive),
            (&Role::Passive, ServiceState::Passive),
            (&Role::Passive, ServiceState::Stopping { epoch: 3 }),
        ] {
            let h = health_of(role, &s);
            assert!(h.serving && !h.active, "{s:?}: {h:?}");
        }
        let h = health_of(&active, &ServiceState::Restarting { epoch: 3, error: "sequencer unreachable".into() });
        assert!(!h.serving && !h.active && h.detail.contains("sequencer unreachable"), "{h:?}");
    }
}
