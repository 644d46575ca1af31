//! Syncline's mediator: registers confirmation requests, aggregates the participants'
//! responses and sends the verdicts, as a hot-standby replica group. All replicas share one
//! member identity and one database; only the leader subscribes and processes, every write it
//! makes is fenced by its epoch, and a new leader resumes from the database.

pub mod admin;
pub mod aggregation;
pub mod config;
pub mod error;
pub mod processor;
pub mod runtime;
pub mod store;
pub mod topology_admin;

use std::sync::Arc;

use syncline_coordination::db;
use syncline_coordination::leadership::LeadershipHandle;
use syncline_coordination::{Db, DbConfig, DbError, LeadershipError};
use syncline_node::{NodeHealth, NodeKind, ReplicatedNode};
use syncline_sequencer_client::{EndpointError, SequencerClient, TlsFilesError};

use crate::config::MediatorConfig;
use crate::runtime::Context;

/// The name of the mediator in `grpc.health.v1`.
pub const HEALTH_SERVICE: &str = "syncline.mediator.v1.Mediator";

/// A mediator that could not start.
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
}

/// One running mediator replica.
pub struct Mediator {
    name: String,
    member: String,
    db: Db,
    node: ReplicatedNode,
}

impl Mediator {
    /// Start replica `name` of the mediator configured by `cfg`, on the database of
    /// `db_config`: migrate the schema, then compete for leadership.
    pub async fn start(name: &str, cfg: &MediatorConfig, db_config: DbConfig) -> Result<Mediator, StartError> {
        let member = cfg.member(name).to_string();
        db::migrate(&db_config).await?;
        let db = Db::new(db_config)?;
        let sequencer = SequencerClient::new(cfg.sequencer.endpoints.iter().cloned(), cfg.sequencer.client_config()?)?;
        if let Some(token) = cfg.sequencer.token_source() {
            sequencer.set_token(&member, token);
        }
        let ctx = Arc::new(Context {
            member: member.clone(),
            replica: name.to_string(),
            db: db.clone(),
            sequencer,
            params: cfg.mediator.clone(),
        });
        let node = ReplicatedNode::start(
            db.clone(),
            &format!("mediator:{member}"),
            name,
            cfg.replication.clone(),
            move |fence, stop| runtime::run(ctx.clone(), fence, stop),
        )?;
        Ok(Mediator { name: name.into(), member, db, node })
    }

    /// The member name its replicas share.
    pub fn member(&self) -> &str {
        &self.member
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
impl syncline_node::Node for Mediator {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> NodeKind {
        NodeKind::Mediator
    }

    fn health_service(&self) -> &'static str {
        HEALTH_SERVICE
    }

    fn status(&self) -> Arc<dyn NodeHealth> {
        self.node.status()
    }

    fn public_routes(&self) -> tonic::service::Routes {
        tonic::service::RoutesBuilder::default().routes()
    }

    fn admin_routes(&self) -> tonic::service::Routes {
        let admin = admin::MediatorAdmin {
            name: self.name.clone(),
            member: self.member.clone(),
            db: self.db.clone(),
            leadership: self.node.leadership(),
        };
        tonic::service::Routes::new(admin.into_service())
    }

    fn leadership(&self) -> Option<LeadershipHandle> {
        Some(self.node.leadership())
    }

    async fn shutdown(self: Box<Self>) {
        Mediator::shutdown(*self).await
    }
}
