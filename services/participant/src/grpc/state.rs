//! `StateService`: the active contract set and the ledger end.

use futures_util::stream;
use syncline_proto::ledger::state_service_server::StateService;
use syncline_proto::ledger::{
    GetActiveContractsRequest, GetActiveContractsResponse, GetLedgerEndRequest, GetLedgerEndResponse,
};
use tonic::{Request, Response, Status};

use crate::auth;
use crate::grpc::{convert, GrpcStream};
use crate::LedgerApi;

/// The service over one replica's ledger API.
pub struct State(pub LedgerApi);

#[tonic::async_trait]
impl StateService for State {
    type GetActiveContractsStream = GrpcStream<GetActiveContractsResponse>;

    async fn get_active_contracts(
        &self,
        request: Request<GetActiveContractsRequest>,
    ) -> Result<Response<Self::GetActiveContractsStream>, Status> {
        let rights = auth::rights(&request)?;
        self.0.ensure_active()?;
        let r = request.into_inner();
        let parties = convert::filter(r.filter, "filter")?;
        rights.authorize_read(&parties, "filter.parties")?;
        // 0 (absent): the ledger end.
        let at = match convert::offset(r.active_at_offset, "active_at_offset")? {
            0 => None,
            o => Some(o),
        };
        let contracts = self.0.active_contracts(&parties, at).await?;
        let items: Vec<_> = contracts.into_iter().map(|c| Ok(convert::active_contract(c, &parties))).collect();
        Ok(Response::new(Box::pin(stream::iter(items))))
    }

    async fn get_ledger_end(
        &self,
        request: Request<GetLedgerEndRequest>,
    ) -> Result<Response<GetLedgerEndResponse>, Status> {
        // Any valid token.
        auth::rights(&request)?;
        let end = self.0.ledger_end().await?;
        Ok(Response::new(GetLedgerEndResponse { offset: end.offset }))
    }
}
