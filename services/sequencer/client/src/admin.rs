//! The admin API of one sequencer node.

use std::future::Future;

use syncline_proto::sequencer::sequencer_admin_service_client::SequencerAdminServiceClient;
use syncline_proto::sequencer::{
    DisableMemberRequest, PruneRequest, PruneResponse, PruningStatusRequest, PruningStatusResponse,
    PublishTopologyRequest, RegisterMemberRequest, RotateMemberTokenRequest, SequencerStatusRequest,
    SequencerStatusResponse,
};
use tonic::transport::Channel;
use tonic::Code;

use crate::endpoints::{Endpoint, EndpointError};
use crate::error::{code_name, describe};
use crate::ClientConfig;

/// An admin call that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sequencer admin at {endpoint} could not {what}: {}", describe_code(*code, message))]
pub struct AdminError {
    /// The admin endpoint.
    pub endpoint: String,
    /// What was asked, e.g. "register member alice".
    pub what: String,
    /// The gRPC code (`DEADLINE_EXCEEDED` when it did not answer in time).
    pub code: Code,
    /// The node's explanation, or the transport's.
    pub message: String,
}

fn describe_code(code: Code, message: &str) -> String {
    format!("{} ({message})", code_name(code))
}

/// A registration.
#[derive(Clone, PartialEq, Eq)]
pub struct Registered {
    /// The member reads events after this timestamp.
    pub registered_at: i64,
    /// Its token, when this registration issued it (the member's first); `None` when it was
    /// registered before and keeps its token.
    pub token: Option<String>,
}

// By hand: the token stays out of logs.
impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registered")
            .field("registered_at", &self.registered_at)
            .field("token_issued", &self.token.is_some())
            .finish()
    }
}

/// The client of one node's admin API (its admin address). Cheap to clone.
#[derive(Clone)]
pub struct AdminClient {
    endpoint: std::sync::Arc<Endpoint>,
    config: ClientConfig,
}

impl AdminClient {
    /// A client of the admin API at `url`; connects lazily; must be called within a Tokio runtime.
    pub fn new(url: impl Into<String>, config: ClientConfig) -> Result<Self, EndpointError> {
        Ok(AdminClient { endpoint: std::sync::Arc::new(Endpoint::new(url.into(), &config)?), config })
    }

    /// Register `member` (idempotent); when and with which token (issued by its first
    /// registration only).
    pub async fn register_member(&self, member: &str) -> Result<Registered, AdminError> {
        let request = RegisterMemberRequest { member: member.into() };
        let r = self
            .call(format!("register member {member}"), |mut c| async move { c.register_member(request).await })
            .await?;
        Ok(Registered { registered_at: r.registered_at, token: Some(r.token).filter(|t| !t.is_empty()) })
    }

    /// Issue a new token for `member` (the old one stops working); the new token.
    pub async fn rotate_member_token(&self, member: &str) -> Result<String, AdminError> {
        let request = RotateMemberTokenRequest { member: member.into() };
        let r = self
            .call(format!("rotate the token of member {member}"), |mut c| async move {
                c.rotate_member_token(request).await
            })
            .await?;
        Ok(r.token)
    }

    /// Disable `member`: it can no longer send or subscribe, and no longer holds pruning back.
    pub async fn disable_member(&self, member: &str) -> Result<(), AdminError> {
        let request = DisableMemberRequest { member: member.into() };
        self.call(format!("disable member {member}"), |mut c| async move { c.disable_member(request).await }).await?;
        Ok(())
    }

    /// The node's status: index, watermarks, writer, queue, subscriptions.
    pub async fn status(&self) -> Result<SequencerStatusResponse, AdminError> {
        self.call("read its status".into(), |mut c| async move { c.status(SequencerStatusRequest {}).await }).await
    }

    /// The safe pruning point and the members holding it back.
    pub async fn pruning_status(&self) -> Result<PruningStatusResponse, AdminError> {
        self.call(
            "read its pruning status".into(),
            |mut c| async move { c.pruning_status(PruningStatusRequest {}).await },
        )
        .await
    }

    /// Remove events before `before` (refused past the safe pruning point).
    pub async fn prune(&self, before: i64) -> Result<PruneResponse, AdminError> {
        self.call(format!("prune before {before}"), |mut c| async move { c.prune(PruneRequest { before }).await }).await
    }

    /// Publish the synchronizer operator's topology transactions (each an encoded protocol
    /// message holding a topology transaction), broadcast in order; their sequencing
    /// timestamps. Publishing the same transactions again is answered with the first
    /// timestamps, so a call whose outcome is unknown can simply be repeated.
    pub async fn publish_topology(&self, transactions: Vec<Vec<u8>>) -> Result<Vec<i64>, AdminError> {
        let n = transactions.len();
        let request = PublishTopologyRequest { transactions };
        let r =
            self.call(format!("publish {n} topology transaction(s)"), |mut c| async move {
                c.publish_topology(request).await
            })
            .await?;
        Ok(r.timestamps)
    }

    async fn call<T, F, Fut>(&self, what: String, f: F) -> Result<T, AdminError>
    where
        F: FnOnce(SequencerAdminServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let client = SequencerAdminServiceClient::new(self.endpoint.channel());
        let error =
            |code, message| AdminError { endpoint: self.endpoint.url().to_string(), what: what.clone(), code, message };
        match tokio::time::timeout(self.config.attempt_timeout, f(client)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) if status.code() == Code::Unavailable || status.code() == Code::Unknown => {
                // Transport failures keep their causes; a node's own refusals are one message.
                Err(error(
                    status.code(),
                    describe(&status).split_once(": ").map_or(String::new(), |(_, m)| m.to_string()),
                ))
            }
            Ok(Err(status)) => Err(error(status.code(), status.message().to_string())),
            Err(_) => Err(error(Code::DeadlineExceeded, format!("no answer within {:?}", self.config.attempt_timeout))),
        }
    }
}
