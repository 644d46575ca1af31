//! `VersionService`: Syncline's version.

use syncline_proto::ledger::version_service_server::VersionService;
use syncline_proto::ledger::{GetLedgerApiVersionRequest, GetLedgerApiVersionResponse};
use tonic::{Request, Response, Status};

use crate::auth;
use crate::LedgerApi;

/// The service over one replica's ledger API.
pub struct Version(pub LedgerApi);

#[tonic::async_trait]
impl VersionService for Version {
    async fn get_ledger_api_version(
        &self,
        request: Request<GetLedgerApiVersionRequest>,
    ) -> Result<Response<GetLedgerApiVersionResponse>, Status> {
        // Any valid token.
        auth::rights(&request)?;
        self.0.ensure_active()?;
        Ok(Response::new(GetLedgerApiVersionResponse { version: env!("CARGO_PKG_VERSION").to_string() }))
    }
}
