//! The sequencer's admin gRPC API: members, status, pruning. Every call that needs the
//! database answers within its own short timeout, so an unreachable database is reported as
//! UNAVAILABLE instead of being waited out through the pool's connection retries.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::store::error::StoreError;
use crate::store::timestamps::now_micros;
use crate::store::watermarks;
use scoped_futures::ScopedFutureExt;
use syncline_proto::sequencer::sequencer_admin_service_server::SequencerAdminService;
use syncline_proto::sequencer::{
    DisableMemberRequest, DisableMemberResponse, MemberAck, PruneRequest, PruneResponse, PruningStatusRequest,
    PruningStatusResponse, PublishTopologyRequest, PublishTopologyResponse, RegisterMemberRequest,
    RegisterMemberResponse, RotateMemberTokenRequest, RotateMemberTokenResponse, SequencerStatusRequest,
    SequencerStatusResponse, WatermarkStatus,
};
use tonic::{Request, Response, Status};

use crate::error::{Result as SeqResult, SequencerError};
use crate::service::PublicApi;
use crate::{pruning, topology, Inner};

/// Longest an admin call waits for the database before answering UNAVAILABLE.
pub const MAX_ADMIN_WAIT: Duration = Duration::from_secs(5);

/// The admin API of one sequencer node.
#[derive(Clone)]
pub struct AdminApi {
    pub(crate) inner: Arc<Inner>,
}

impl AdminApi {
    /// How long a short admin call may wait for the database: [`MAX_ADMIN_WAIT`], or the
    /// storage's statement timeout when that is shorter (a statement taking longer fails anyway).
    pub fn admin_wait(&self) -> Duration {
        match self.inner.db.config().statement_timeout {
            t if t.is_zero() => MAX_ADMIN_WAIT,
            t => t.clamp(Duration::from_secs(1), MAX_ADMIN_WAIT),
        }
    }

    /// How long a prune may take: as long as its statements may, each bounded by the storage's
    /// statement timeout (an hour when statements are not bounded).
    fn prune_wait(&self) -> Duration {
        match self.inner.db.config().statement_timeout {
            t if t.is_zero() => Duration::from_secs(3600),
            t => (t * pruning::PRUNE_STATEMENTS).max(self.admin_wait()),
        }
    }

    /// Run `work` (which does `what`) for at most `after`.
    async fn within<T>(
        &self,
        what: &'static str,
        after: Duration,
        work: impl Future<Output = SeqResult<T>>,
    ) -> SeqResult<T> {
        match tokio::time::timeout(after, work).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(node = %self.inner.settings.name, what, ?after, "admin call timed out waiting for the database");
                let writer = (!self.inner.writer.is_running()).then(|| self.inner.writer.detail());
                Err(SequencerError::TimedOut { what, after, writer })
            }
        }
    }

    async fn status_now(&self) -> SeqResult<SequencerStatusResponse> {
        let inner = &self.inner;
        let (rows, safe) = inner
            .db
            .run("reading watermarks", |c| {
                async move { Ok::<_, StoreError>((watermarks::all(c).await?, watermarks::safe(c).await?)) }
                    .scope_boxed()
            })
            .await?;
        let now = now_micros();
        let members = inner.members.count().await?;
        Ok(SequencerStatusResponse {
            node_index: inner.writer.node_index(),
            lane_indexes: inner.writer.node_indexes(),
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
        })
    }
}

#[tonic::async_trait]
impl SequencerAdminService for AdminApi {
    async fn register_member(
        &self,
        request: Request<RegisterMemberRequest>,
    ) -> Result<Response<RegisterMemberResponse>, Status> {
        let member = request.into_inner().member;
        let (m, token) =
            self.within("register the member", self.admin_wait(), self.inner.members.register(&member)).await?;
        if token.is_some() {
            tracing::info!(node = %self.inner.settings.name, member, "member registered; token issued");
        }
        Ok(Response::new(RegisterMemberResponse { registered_at: m.registered_ts, token: token.unwrap_or_default() }))
    }

    async fn rotate_member_token(
        &self,
        request: Request<RotateMemberTokenRequest>,
    ) -> Result<Response<RotateMemberTokenResponse>, Status> {
        let member = request.into_inner().member;
        let token =
            self.within("rotate the member token", self.admin_wait(), self.inner.members.rotate_token(&member)).await?;
        tracing::info!(node = %self.inner.settings.name, member, "member token rotated");
        Ok(Response::new(RotateMemberTokenResponse { token }))
    }

    async fn disable_member(
        &self,
        request: Request<DisableMemberRequest>,
    ) -> Result<Response<DisableMemberResponse>, Status> {
        let member = request.into_inner().member;
        self.within("disable the member", self.admin_wait(), self.inner.members.disable(&member)).await?;
        Ok(Response::new(DisableMemberResponse {}))
    }

    async fn status(&self, _: Request<SequencerStatusRequest>) -> Result<Response<SequencerStatusResponse>, Status> {
        let st = self.within("read the sequencer status", self.admin_wait(), self.status_now()).await?;
        Ok(Response::new(st))
    }

    async fn pruning_status(
        &self,
        _: Request<PruningStatusRequest>,
    ) -> Result<Response<PruningStatusResponse>, Status> {
        let st = self.within("read the pruning status", self.admin_wait(), pruning::status(&self.inner.db)).await?;
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
        let before = request.into_inner().before;
        // Find out quickly whether the database answers at all; the prune itself may then take
        // as long as its statements are allowed to (it checks the safe point in its own
        // transaction).
        self.within("read the pruning status", self.admin_wait(), pruning::status(&self.inner.db)).await?;
        let pruned = self.within("prune", self.prune_wait(), pruning::prune(&self.inner.db, before)).await?;
        Ok(Response::new(PruneResponse { events_removed: pruned.events, payloads_removed: pruned.payloads }))
    }

    async fn publish_topology(
        &self,
        request: Request<PublishTopologyRequest>,
    ) -> Result<Response<PublishTopologyResponse>, Status> {
        let txs = topology::decode_all(&request.into_inner().transactions)?;
        let api = PublicApi { inner: self.inner.clone() };
        // Each send may wait for the writer as long as a short admin call may.
        let wait = self.admin_wait() * (txs.len() as u32 + 1);
        let timestamps = self.within("publish the topology transactions", wait, topology::publish(&api, &txs)).await?;
        Ok(Response::new(PublishTopologyResponse { timestamps }))
    }
}
