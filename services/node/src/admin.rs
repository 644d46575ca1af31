//! `syncline.admin.v1.NodeAdminService`: status of a node and, for replicated nodes, hand-over.

use std::sync::Arc;
use std::time::Instant;

use syncline_proto::admin::node_admin_service_server::{NodeAdminService, NodeAdminServiceServer};
use syncline_proto::admin::{
    ComponentHealth, HealthState, SetPassiveRequest, SetPassiveResponse, StatusRequest, StatusResponse,
};
use tonic::{Request, Response, Status};

use syncline_coordination::leadership::LeadershipHandle;
use syncline_coordination::LeadershipError;

use crate::config::NodeKind;
use crate::health::NodeHealth;

/// The node admin service of one node.
pub struct NodeAdmin {
    name: String,
    kind: NodeKind,
    started: Instant,
    node: Arc<dyn NodeHealth>,
    leadership: Option<LeadershipHandle>,
}

impl NodeAdmin {
    /// The service of node `name` of `kind`, reporting what `node` says; uptime counts from now.
    pub fn new(name: impl Into<String>, kind: NodeKind, node: Arc<dyn NodeHealth>) -> Self {
        NodeAdmin { name: name.into(), kind, started: Instant::now(), node, leadership: None }
    }

    /// A replicated node: `set_passive` hands its group's leadership over through `leadership`.
    pub fn with_leadership(mut self, leadership: LeadershipHandle) -> Self {
        self.leadership = Some(leadership);
        self
    }

    /// As a tonic service, to add to the admin API's router.
    pub fn into_service(self) -> NodeAdminServiceServer<Self> {
        NodeAdminServiceServer::new(self)
    }

    /// The status this service reports.
    pub fn status_now(&self) -> StatusResponse {
        let now = self.node.health().borrow().clone();
        let health = ComponentHealth {
            name: self.name.clone(),
            state: if now.serving { HealthState::Ok } else { HealthState::Failed } as i32,
            detail: if now.serving { "serving".into() } else { now.detail },
            components: self
                .node
                .components()
                .into_iter()
                .map(|(name, detail)| ComponentHealth {
                    name,
                    state: HealthState::Ok as i32,
                    detail,
                    components: vec![],
                })
                .collect(),
        };
        StatusResponse {
            name: self.name.clone(),
            kind: self.kind.as_str().into(),
            version: env!("CARGO_PKG_VERSION").into(),
            active: now.active,
            uptime_seconds: self.started.elapsed().as_secs(),
            health: Some(health),
        }
    }
}

#[tonic::async_trait]
impl NodeAdminService for NodeAdmin {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(self.status_now()))
    }

    async fn set_passive(&self, _: Request<SetPassiveRequest>) -> Result<Response<SetPassiveResponse>, Status> {
        match (self.kind, &self.leadership) {
            (NodeKind::Sequencer, _) => Err(Status::failed_precondition(format!(
                "{} is a sequencer: all sequencers are active; set-passive applies to replicated nodes (mediators, participants)",
                self.name
            ))),
            (_, Some(l)) => match l.set_passive().await {
                Ok(()) => Ok(Response::new(SetPassiveResponse {})),
                Err(e @ (LeadershipError::NoStandby { .. } | LeadershipError::NotActive { .. })) => {
                    Err(Status::failed_precondition(format!("{}: {e}", self.name)))
                }
                Err(e) => Err(Status::unavailable(format!("{}: {e}", self.name))),
            },
            (kind, None) => Err(Status::unimplemented(format!("{}: set-passive of a {kind} is not implemented yet in this version", self.name))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::Fake;

    #[tokio::test]
    async fn status_reports_health_role_and_components() {
        let admin = NodeAdmin::new("p1", NodeKind::Participant, Arc::new(Fake { serving: false, active: false }));
        let st = admin.status(Request::new(StatusRequest {})).await.unwrap().into_inner();
        assert_eq!((st.name.as_str(), st.kind.as_str(), st.active), ("p1", "participant", false));
        let h = st.health.unwrap();
        assert_eq!((h.state, h.detail.as_str()), (HealthState::Failed as i32, "writer stopped"));
        assert_eq!((h.components[0].name.as_str(), h.components[0].detail.as_str()), ("writer", "running"));
        let ok = NodeAdmin::new("s1", NodeKind::Sequencer, Arc::new(Fake { serving: true, active: true })).status_now();
        assert_eq!((ok.active, ok.health.unwrap().detail.as_str()), (true, "serving"));
    }

    #[tokio::test]
    async fn sequencers_refuse_set_passive() {
        let admin = NodeAdmin::new("s1", NodeKind::Sequencer, Arc::new(Fake { serving: true, active: true }));
        let e = admin.set_passive(Request::new(SetPassiveRequest {})).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(e.message().contains("all sequencers are active"), "{}", e.message());
    }
}
