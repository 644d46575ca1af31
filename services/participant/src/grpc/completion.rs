//! `CommandCompletionService`: a user's completions with offset checkpoints.

use syncline_proto::ledger::command_completion_service_server::CommandCompletionService;
use syncline_proto::ledger::{CompletionStreamRequest, CompletionStreamResponse};
use tonic::{Request, Response, Status};

use crate::auth;
use crate::grpc::{convert, grpc_stream, GrpcStream};
use crate::LedgerApi;

/// The service over one replica's ledger API.
pub struct Completions(pub LedgerApi);

#[tonic::async_trait]
impl CommandCompletionService for Completions {
    type CompletionStreamStream = GrpcStream<CompletionStreamResponse>;

    async fn completion_stream(
        &self,
        request: Request<CompletionStreamRequest>,
    ) -> Result<Response<Self::CompletionStreamStream>, Status> {
        let rights = auth::rights(&request)?;
        self.0.ensure_active()?;
        let mut r = request.into_inner();
        rights.authorize_user(&mut r.user_id, "user_id")?;
        rights.authorize_read(&r.parties, "parties")?;
        let user_id = convert::user_id(&r.user_id, "user_id")?;
        let parties = convert::stream_parties(&r.parties, "parties")?;
        let begin = convert::offset(r.begin_exclusive, "begin_exclusive")?;
        let stream = self.0.completions(&user_id, &parties, begin).await?;
        Ok(Response::new(grpc_stream(stream, convert::completion_item)))
    }
}
