//! The gRPC ledger API (`syncline.ledger.v1`): thin services over [`LedgerApi`], one module
//! per service. Requests are checked in [`convert`]; errors become statuses with Canton's ids
//! in [`status`]. A passive replica answers every call `NODE_IS_PASSIVE_REPLICA` (UNAVAILABLE).
//! Every service checks the caller's access token first ([`crate::auth`]); gRPC health and
//! reflection, mounted by the node host, stay open.

pub mod command;
pub mod completion;
pub mod convert;
pub mod party;
pub mod state;
pub mod status;
pub mod submission;
pub mod update;
pub mod version;

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use tonic::service::{Routes, RoutesBuilder};
use tonic::Status;

use crate::auth::Authenticate;
use crate::LedgerApi;

/// A server stream of the ledger API.
pub type GrpcStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Every ledger API service over `api`.
pub fn routes(api: &LedgerApi) -> Routes {
    use syncline_proto::ledger::{
        command_completion_service_server::CommandCompletionServiceServer,
        command_service_server::CommandServiceServer,
        command_submission_service_server::CommandSubmissionServiceServer,
        party_management_service_server::PartyManagementServiceServer, state_service_server::StateServiceServer,
        update_service_server::UpdateServiceServer, version_service_server::VersionServiceServer,
    };
    let auth = Authenticate::new(api.shared.auth.clone());
    let mut b = RoutesBuilder::default();
    b.add_service(CommandSubmissionServiceServer::with_interceptor(submission::Submission(api.clone()), auth.clone()))
        .add_service(CommandServiceServer::with_interceptor(command::SubmitAndWait(api.clone()), auth.clone()))
        .add_service(CommandCompletionServiceServer::with_interceptor(
            completion::Completions(api.clone()),
            auth.clone(),
        ))
        .add_service(UpdateServiceServer::with_interceptor(update::Updates(api.clone()), auth.clone()))
        .add_service(StateServiceServer::with_interceptor(state::State(api.clone()), auth.clone()))
        .add_service(PartyManagementServiceServer::with_interceptor(party::Parties(api.clone()), auth.clone()))
        .add_service(VersionServiceServer::with_interceptor(version::Version(api.clone()), auth));
    b.routes()
}

/// A ledger stream as a gRPC stream of `f`'s messages.
fn grpc_stream<T: Send + 'static, M: Send + 'static>(
    s: crate::api::LedgerStream<T>,
    f: impl Fn(T) -> M + Send + 'static,
) -> GrpcStream<M> {
    Box::pin(s.map(move |item| item.map(&f).map_err(Status::from)))
}
