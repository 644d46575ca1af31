//! The sequencer's admin gRPC API: members, status, pruning.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use scoped_futures::ScopedFutureExt;
use syncline_coordination::timestamps::now_micros;
use syncline_coordination::watermarks;
use syncline_proto::sequencer::sequencer_admin_service_server::SequencerAdminService;
use syncline_proto::sequencer::{
    DisableMemberRequest, DisableMemberResponse, MemberAck, PruneRequest, PruneResponse, PruningStatusRequest,
    PruningStatusResponse, RegisterMemberRequest, RegisterMemberResponse, SequencerStatusRequest,
    SequencerStatusResponse, WatermarkStatus,
};
use tonic::{Request, Response, Status};

use crate::{pruning, Inner};

/// The admin API of one sequencer node.
#[derive(Clone)]
pub struct AdminApi {
    pub(crate) inner: Arc<Inner>,
}

#[tonic::async_trait]
impl SequencerAdminService for AdminApi {
    async fn register_member(
        &self,
        request: Request<RegisterMemberRequest>,
    ) -> Result<Response<RegisterMemberResponse>, Status> {
        let m = self.inner.members.register(&request.into_inner().member).await?;
        Ok(Response::new(RegisterMemberResponse { registered_at: m.registered_ts }))
    }

    async fn disable_member(
        &self,
        request: Request<DisableMemberRequest>,
    ) -> Result<Response<DisableMemberResponse>, Status> {
        self.inner.members.disable(&request.into_inner().member).await?;
        Ok(Response::new(DisableMemberResponse {}))
    }

    async fn status(&self, _: Request<SequencerStatusRequest>) -> Result<Response<SequencerStatusResponse>, Status> {
        let inner = &self.inner;
        let (rows, safe) = inner
            .db
            .run("reading watermarks", |c| {
                async move { Ok((watermarks::all(c).await?, watermarks::safe(c).await?)) }.scope_boxed()
            })
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let now = now_micros();
        let members = inner.members.count().await?;
        Ok(Response::new(SequencerStatusResponse {
            node_index: inner.writer.node_index(),
            total_node_count: inner.settings.total_node_count,
            writer_running: inner.writer.is_running(),
            safe_watermark: safe,
            watermarks: rows
                .into_iter()
                .map(|w| WatermarkStatus {
                    node_index: w.node_index as u32,
                    watermark: w.watermark_ts,
                    online: w.online,
                    lag_micros: now - w.watermark_ts,
                })
                .collect(),
            members: members as u32,
            queue_depth: (inner.settings.queue_size - inner.queue.capacity()) as u64,
            subscriptions: inner.subscriptions.load(Ordering::Relaxed) as u64,
        }))
    }

    async fn pruning_status(&self, _: Request<PruningStatusRequest>) -> Result<Response<PruningStatusResponse>, Status> {
        let st = pruning::status(&self.inner.db).await?;
        Ok(Response::new(PruningStatusResponse {
            safe_pruning_timestamp: st.safe,
            lower_bound: st.lower_bound,
            laggards: st
                .members
                .into_iter()
                .take(10)
                .map(|m| MemberAck { member: m.member, acknowledged: m.acknowledged, registered_at: m.registered_ts })
                .collect(),
        }))
    }

    async fn prune(&self, request: Request<PruneRequest>) -> Result<Response<PruneResponse>, Status> {
        let pruned = pruning::prune(&self.inner.db, request.into_inner().before).await?;
        Ok(Response::new(PruneResponse { events_removed: pruned.events, payloads_removed: pruned.payloads }))
    }
}
