//! `syncline.mediator.v1.MediatorAdminService`: the mediator's processing state, answered by
//! the active replica only.

use syncline_coordination::db::{self, SessionKind};
use syncline_coordination::leadership::{LeadershipHandle, Role};
use syncline_coordination::Db;
use syncline_proto::mediator::mediator_admin_service_server::{MediatorAdminService, MediatorAdminServiceServer};
use syncline_proto::mediator::{MediatorStatusRequest, MediatorStatusResponse, TopologyRequest, TopologyResponse};
use syncline_sequencer_client::now_micros;
use tonic::{Request, Response, Status};

use crate::store;

/// The mediator admin service of one replica.
pub struct MediatorAdmin {
    /// Node name.
    pub name: String,
    /// Member name.
    pub member: String,
    /// Its database.
    pub db: Db,
    /// Its leadership.
    pub leadership: LeadershipHandle,
}

impl MediatorAdmin {
    /// As a tonic service.
    pub fn into_service(self) -> MediatorAdminServiceServer<Self> {
        MediatorAdminServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl MediatorAdminService for MediatorAdmin {
    async fn status(&self, _: Request<MediatorStatusRequest>) -> Result<Response<MediatorStatusResponse>, Status> {
        let Role::Active(fence) = self.leadership.role() else {
            return Err(Status::unavailable(format!(
                "mediator replica {} is passive: ask the active replica of mediator {}",
                self.name, self.member
            )));
        };
        let unavailable = |e: syncline_coordination::DbError| Status::unavailable(format!("{}: {e}", self.name));
        let mut conn = db::connect(self.db.config(), SessionKind::Pooled).await.map_err(unavailable)?;
        let processed = store::position(&mut conn, &self.member).await.map_err(unavailable)?;
        let (outstanding, next_deadline) = store::pending(&mut conn).await.map_err(unavailable)?;
        let undelivered = store::undelivered(&mut conn, now_micros()).await.map_err(unavailable)?.len();
        Ok(Response::new(MediatorStatusResponse {
            member: self.member.clone(),
            epoch: fence.epoch,
            processed_timestamp: processed,
            outstanding_requests: outstanding as u64,
            next_deadline,
            undelivered_verdicts: undelivered as u64,
        }))
    }

    async fn topology(&self, request: Request<TopologyRequest>) -> Result<Response<TopologyResponse>, Status> {
        let at = request.into_inner().at;
        Ok(Response::new(crate::topology_admin::topology(&self.name, &self.db, at).await?))
    }
}
