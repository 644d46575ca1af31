//! `PartyManagementService`: the participant's id, party allocation and the known parties.

use syncline_proto::ledger::party_management_service_server::PartyManagementService;
use syncline_proto::ledger::{
    AllocatePartyRequest, AllocatePartyResponse, GetParticipantIdRequest, GetParticipantIdResponse,
    ListKnownPartiesRequest, ListKnownPartiesResponse,
};
use tonic::{Request, Response, Status};

use crate::auth;
use crate::grpc::convert;
use crate::LedgerApi;

/// The service over one replica's ledger API.
pub struct Parties(pub LedgerApi);

#[tonic::async_trait]
impl PartyManagementService for Parties {
    async fn get_participant_id(
        &self,
        request: Request<GetParticipantIdRequest>,
    ) -> Result<Response<GetParticipantIdResponse>, Status> {
        // Any valid token.
        auth::rights(&request)?;
        self.0.ensure_active()?;
        Ok(Response::new(GetParticipantIdResponse { participant_id: self.0.participant_id().to_string() }))
    }

    async fn allocate_party(
        &self,
        request: Request<AllocatePartyRequest>,
    ) -> Result<Response<AllocatePartyResponse>, Status> {
        auth::rights(&request)?.authorize_admin("AllocateParty")?;
        self.0.ensure_active()?;
        let hint = request.into_inner().party_id_hint;
        let party = self.0.allocate_party((!hint.is_empty()).then_some(hint.as_str())).await?;
        Ok(Response::new(AllocatePartyResponse { party_details: Some(convert::party_details(party)) }))
    }

    async fn list_known_parties(
        &self,
        request: Request<ListKnownPartiesRequest>,
    ) -> Result<Response<ListKnownPartiesResponse>, Status> {
        // Any valid token.
        auth::rights(&request)?;
        let parties = self.0.list_parties().await?;
        Ok(Response::new(ListKnownPartiesResponse {
            party_details: parties.into_iter().map(convert::party_details).collect(),
        }))
    }
}
