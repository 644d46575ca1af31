//! Syncline's participant: hosts parties, submits their commands through the synchronizer,
//! validates the requests it hosts an informee of, and keeps the ledger (contracts, updates,
//! completions at dense offsets, command deduplication) in its own database, as a hot-standby
//! replica group. Only the leader processes events and serves the [`LedgerApi`]; a passive
//! replica answers it with [`LedgerError::NodeIsPassive`].

pub mod api;
pub mod auth;
pub mod config;
pub mod error;
pub mod grpc;
pub mod interpret;
pub mod model;
pub mod processor;
pub mod runtime;
pub mod store;

use std::sync::Arc;

use syncline_coordination::db;
use syncline_coordination::leadership::{Fence, LeadershipHandle};
use syncline_coordination::{Db, DbConfig, DbError, LeadershipError};
use syncline_node::{NodeHealth, NodeKind, ReplicatedNode};
use syncline_sequencer_client::{EndpointError, SequencerClient, TlsFilesError};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

pub use api::LedgerApi;
pub use error::LedgerError;

use crate::config::{ParticipantConfig, ParticipantParameters};
use crate::model::LedgerEnd;

/// The name of the participant in `grpc.health.v1`.
pub const HEALTH_SERVICE: &str = "syncline.ledger.v1.LedgerApi";

/// A participant that could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Its database (schema migration, pool).
    #[error(transparent)]
    Db(#[from] DbError),
    /// Its leadership.
    #[error(transparent)]
    Leadership(#[from] LeadershipError),
    /// Its sequencer endpoints.
    #[error(transparent)]
    Sequencer(#[from] EndpointError),
    /// The TLS files of its sequencer connection.
    #[error("sequencer.{}", .0)]
    SequencerTls(#[from] TlsFilesError),
    /// The keys of its ledger API's access tokens.
    #[error(transparent)]
    Auth(#[from] auth::VerifierError),
}

/// What the API and the leader's runs of one replica share.
pub(crate) struct Shared {
    member: String,
    replica: String,
    db: Db,
    sequencer: SequencerClient,
    params: ParticipantParameters,
    /// Checks the ledger API's access tokens (`None`: authentication is off).
    auth: Option<Arc<auth::Verifier>>,
    /// The leader's run while it serves; `None` on a passive replica.
    active: watch::Sender<Option<Arc<Active>>>,
    /// Tells the run that a submission changed its deadlines.
    wake: Notify,
}

/// One leader run, as the API sees it.
pub(crate) struct Active {
    fence: Fence,
    ledger_end: watch::Receiver<LedgerEnd>,
    stop: CancellationToken,
    /// Submissions whose send the sequencer refused for good: (message id, why), completed by
    /// the leader's loop at once.
    refused: tokio::sync::mpsc::UnboundedSender<(String, String)>,
}

/// One running participant replica.
pub struct Participant {
    name: String,
    node: ReplicatedNode,
    api: LedgerApi,
}

impl Participant {
    /// Start replica `name` of the participant configured by `cfg`, on the database of
    /// `db_config`: migrate the schema, then compete for leadership.
    pub async fn start(name: &str, cfg: &ParticipantConfig, db_config: DbConfig) -> Result<Participant, StartError> {
        let member = cfg.member(name).to_string();
        // Bad keys stop the start, before anything else is done.
        let auth = auth::Verifier::from_config(&cfg.ledger_api.auth)?.map(Arc::new);
        db::migrate(&db_config).await?;
        let db = Db::new(db_config)?;
        let sequencer = SequencerClient::new(cfg.sequencer.endpoints.iter().cloned(), cfg.sequencer.client_config()?)?;
        if let Some(token) = cfg.sequencer.token_source() {
            sequencer.set_token(&member, token);
        }
        let shared = Arc::new(Shared {
            member: member.clone(),
            replica: name.to_string(),
            db: db.clone(),
            sequencer,
            params: cfg.participant.clone(),
            auth,
            active: watch::Sender::new(None),
            wake: Notify::new(),
        });
        let run = shared.clone();
        let node = ReplicatedNode::start(
            db,
            &format!("participant:{member}"),
            name,
            cfg.replication.clone(),
            move |fence, stop| runtime::run(run.clone(), fence, stop),
        )?;
        Ok(Participant { name: name.into(), node, api: LedgerApi { shared } })
    }

    /// The member name its replicas share (its participant id).
    pub fn member(&self) -> &str {
        &self.api.shared.member
    }

    /// The ledger API of this replica (refused while it is passive).
    pub fn api(&self) -> LedgerApi {
        self.api.clone()
    }

    /// Its leadership (role, hand-over).
    pub fn leadership(&self) -> LeadershipHandle {
        self.node.leadership()
    }

    /// Stop: the leader finishes the event in hand and releases the lock.
    pub async fn shutdown(self) {
        self.node.shutdown().await
    }
}

#[tonic::async_trait]
impl syncline_node::Node for Participant {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> NodeKind {
        NodeKind::Participant
    }

    fn health_service(&self) -> &'static str {
        HEALTH_SERVICE
    }

    fn status(&self) -> Arc<dyn NodeHealth> {
        self.node.status()
    }

    fn public_routes(&self) -> tonic::service::Routes {
        grpc::routes(&self.api)
    }

    fn admin_routes(&self) -> tonic::service::Routes {
        tonic::service::RoutesBuilder::default().routes()
    }

    fn leadership(&self) -> Option<LeadershipHandle> {
        Some(self.node.leadership())
    }

    async fn shutdown(self: Box<Self>) {
        Participant::shutdown(*self).await
    }
}
