//! `CommandSubmissionService`: register a submission; its outcome is a completion.

use syncline_proto::ledger::command_submission_service_server::CommandSubmissionService;
use syncline_proto::ledger::{SubmitRequest, SubmitResponse};
use tonic::{Request, Response, Status};

use crate::auth;
use crate::grpc::convert;
use crate::LedgerApi;

/// The service over one replica's ledger API.
pub struct Submission(pub LedgerApi);

#[tonic::async_trait]
impl CommandSubmissionService for Submission {
    async fn submit(&self, request: Request<SubmitRequest>) -> Result<Response<SubmitResponse>, Status> {
        let rights = auth::rights(&request)?;
        self.0.ensure_active()?;
        let mut r = request.into_inner();
        rights.authorize_commands(r.commands.as_mut(), "commands")?;
        let commands = convert::commands(r.commands, "commands")?;
        self.0.submit(commands).await?;
        Ok(Response::new(SubmitResponse {}))
    }
}
