//! Syncline's database sequencer: many processes share one PostgreSQL database and are all
//! active. Each owns a node index, writes through its lock session, and serves subscriptions
//! that never pass the safe watermark.

pub mod admin;
pub mod auth;
pub mod config;
pub mod error;
pub mod health;
pub mod lanes;
mod liveness;
pub mod members;
mod notify;
mod peer_watch;
pub mod pruning;
mod reader;
mod send_stream;
pub mod service;
pub mod settings;
pub mod store;
pub mod topology;
mod writer;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use syncline_coordination::{Db, DbConfig};
use syncline_node::HealthState;
use syncline_proto::sequencer::sequencer_admin_service_server::SequencerAdminServiceServer;
use syncline_proto::sequencer::sequencer_service_server::SequencerServiceServer;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use admin::AdminApi;
pub use auth::MemberAuth;
pub use error::{Result, SequencerError};
pub use health::SequencerHealth;
pub use lanes::WriterShared;
pub use members::Members;
pub use service::PublicApi;
pub use settings::SequencerSettings;

/// State shared by the APIs and background tasks of one sequencer node.
pub(crate) struct Inner {
    pub settings: SequencerSettings,
    pub db: Db,
    pub members: Members,
    pub queue: mpsc::Sender<writer::Submission>,
    pub writer: Arc<WriterShared>,
    pub signals: notify::Signals,
    pub subscriptions: AtomicUsize,
    pub readers: reader::ReaderStatus,
    pub cancel: CancellationToken,
    /// Wakes the health task; the writer, listener and readers report their changes here.
    pub changes: Arc<health::Changes>,
}

/// A running sequencer node.
pub struct Sequencer {
    inner: Arc<Inner>,
    /// One task per writer lane.
    writer_tasks: Vec<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
    health: watch::Receiver<HealthState>,
    health_stop: CancellationToken,
    health_task: JoinHandle<()>,
}

impl Sequencer {
    /// Start the writer lanes (which migrate the schema, then go online), the liveness check
    /// and the notification listener. Returns at once, also while the database is down:
    /// everything retries until it is reachable (watch [`health`](Self::health)). Fails only
    /// for a bad configuration (see [`SequencerSettings::validate`]).
    pub async fn start(db_config: DbConfig, settings: SequencerSettings) -> Result<Sequencer> {
        // Before anything is spawned: a zero interval panics its task or spins.
        settings.validate()?;
        auth::register_metrics(&settings.name);
        let db = Db::new(db_config.clone())?;
        let cancel = CancellationToken::new();
        let (queue, rx) = mpsc::channel(settings.queue_size.max(1));
        let changes = Arc::new(health::Changes::default());
        let (signals, listener) = notify::spawn(db_config.clone(), cancel.clone(), changes.clone());
        let shared = Arc::new(WriterShared::new(settings.writer_lanes, changes.clone()));
        let inner = Arc::new(Inner {
            settings: settings.clone(),
            db: db.clone(),
            members: Members::new(db.clone()),
            queue,
            writer: shared.clone(),
            signals,
            subscriptions: AtomicUsize::new(0),
            readers: reader::ReaderStatus::new(changes.clone()),
            cancel: cancel.clone(),
            changes,
        });
        let (health_tx, health) = watch::channel(HealthState::not_serving("writer not running: starting"));
        // Stopped only after the writer: the health shows the node going down.
        let health_stop = CancellationToken::new();
        let health_task = health::spawn(inner.clone(), health_tx, health_stop.clone());
        let liveness = liveness::run(db, db_config.clone(), settings.clone(), shared.clone(), cancel.clone());
        let lanes = Arc::new(lanes::Lanes::new(inner.queue.clone(), rx, shared));
        let writer_tasks = (0..settings.writer_lanes)
            .map(|lane| {
                tokio::spawn(writer::run(db_config.clone(), settings.clone(), lanes.clone(), lane, cancel.clone()))
            })
            .collect();
        let tasks = vec![tokio::spawn(liveness), listener];
        Ok(Sequencer { inner, writer_tasks, tasks, health, health_stop, health_task })
    }

    /// The public gRPC service (Send, Subscribe, Acknowledge).
    pub fn public_service(&self) -> SequencerServiceServer<PublicApi> {
        SequencerServiceServer::new(PublicApi { inner: self.inner.clone() })
            .max_decoding_message_size(self.inner.settings.max_request_size + 1024)
    }

    /// The admin gRPC service.
    pub fn admin_service(&self) -> SequencerAdminServiceServer<AdminApi> {
        SequencerAdminServiceServer::new(AdminApi { inner: self.inner.clone() })
    }

    /// Whether this node serves, and why not (the last published state).
    pub fn health(&self) -> SequencerHealth {
        self.health.borrow().clone()
    }

    /// The node's health, published whenever it changes.
    pub fn health_watch(&self) -> watch::Receiver<HealthState> {
        self.health.clone()
    }

    /// A cheap, cloneable view for health endpoints and the admin status; usable after the
    /// node stopped (it then reports the last state).
    pub fn status(&self) -> SequencerStatus {
        SequencerStatus { inner: self.inner.clone(), health: self.health.clone() }
    }

    /// The writer lanes' state.
    pub fn writer(&self) -> &Arc<WriterShared> {
        &self.inner.writer
    }

    /// The member registry.
    pub fn members(&self) -> &Members {
        &self.inner.members
    }

    /// The node's settings.
    pub fn settings(&self) -> &SequencerSettings {
        &self.inner.settings
    }

    /// A token cancelled when the node shuts down.
    pub fn cancelled(&self) -> CancellationToken {
        self.inner.cancel.clone()
    }

    /// Clean shutdown: refuse sends, write what is queued, go offline, release the index.
    pub async fn shutdown(self) {
        self.inner.cancel.cancel();
        for t in self.writer_tasks {
            let _ = t.await;
        }
        self.health_stop.cancel();
        let _ = self.health_task.await;
        // Background tasks stop at their next cancellation point; one stuck on a database
        // that does not answer is aborted rather than holding the shutdown up.
        for t in self.tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(std::time::Duration::from_secs(2), t).await.is_err() {
                abort.abort();
            }
        }
    }
}

/// What a sequencer node reports to the health endpoints and the admin status.
#[derive(Clone)]
pub struct SequencerStatus {
    inner: Arc<Inner>,
    health: watch::Receiver<HealthState>,
}

impl syncline_node::NodeHealth for SequencerStatus {
    fn health(&self) -> watch::Receiver<HealthState> {
        self.health.clone()
    }

    fn components(&self) -> Vec<(String, String)> {
        health::components(&self.inner)
    }
}

#[tonic::async_trait]
impl syncline_node::Node for Sequencer {
    fn name(&self) -> &str {
        &self.inner.settings.name
    }

    fn kind(&self) -> syncline_node::NodeKind {
        syncline_node::NodeKind::Sequencer
    }

    fn health_service(&self) -> &'static str {
        health::SERVICE_NAME
    }

    fn status(&self) -> Arc<dyn syncline_node::NodeHealth> {
        Arc::new(Sequencer::status(self))
    }

    fn public_routes(&self) -> tonic::service::Routes {
        tonic::service::Routes::new(self.public_service())
    }

    fn admin_routes(&self) -> tonic::service::Routes {
        tonic::service::Routes::new(self.admin_service())
    }

    async fn shutdown(self: Box<Self>) {
        Sequencer::shutdown(*self).await
    }
}
