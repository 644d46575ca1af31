//! `UpdateService`: committed transactions from an offset, and one by its update id.

use syncline_proto::ledger::update_service_server::UpdateService;
use syncline_proto::ledger::{
    get_updates_response, GetUpdateByIdRequest, GetUpdateResponse, GetUpdatesRequest, GetUpdatesResponse,
};
use tonic::{Request, Response, Status};

use crate::auth;
use crate::grpc::{convert, grpc_stream, GrpcStream};
use crate::LedgerApi;

/// The service over one replica's ledger API.
pub struct Updates(pub LedgerApi);

#[tonic::async_trait]
impl UpdateService for Updates {
    type GetUpdatesStream = GrpcStream<GetUpdatesResponse>;

    async fn get_updates(
        &self,
        request: Request<GetUpdatesRequest>,
    ) -> Result<Response<Self::GetUpdatesStream>, Status> {
        let rights = auth::rights(&request)?;
        self.0.ensure_active()?;
        let r = request.into_inner();
        let parties = convert::filter(r.filter, "filter")?;
        rights.authorize_read(&parties, "filter.parties")?;
        let begin = convert::offset(r.begin_exclusive, "begin_exclusive")?;
        let end = r.end_inclusive.map(|e| convert::offset(e, "end_inclusive")).transpose()?;
        let stream = self.0.updates(begin, end, &parties).await?;
        Ok(Response::new(grpc_stream(stream, move |t| GetUpdatesResponse {
            update: Some(get_updates_response::Update::Transaction(convert::transaction(t, &parties))),
        })))
    }

    async fn get_update_by_id(
        &self,
        request: Request<GetUpdateByIdRequest>,
    ) -> Result<Response<GetUpdateResponse>, Status> {
        let rights = auth::rights(&request)?;
        self.0.ensure_active()?;
        let r = request.into_inner();
        let parties = convert::filter(r.filter, "filter")?;
        rights.authorize_read(&parties, "filter.parties")?;
        if r.update_id.is_empty() {
            return Err(crate::LedgerError::invalid("update_id", "empty").into());
        }
        let t = self.0.update_by_id(&r.update_id, &parties).await?;
        Ok(Response::new(GetUpdateResponse { transaction: Some(convert::transaction(t, &parties)) }))
    }
}
