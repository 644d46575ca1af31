//! Hosting a node: one place that binds a node's listeners and serves its public and admin
//! gRPC APIs (with reflection, `grpc.health.v1` and the node admin API) and the HTTP
//! `/health /livez /readyz /metrics`, and one shutdown order: the node first (it answers held
//! sends and ends its streams while the servers still carry them), then the servers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use syncline_coordination::leadership::LeadershipHandle;

use crate::admin::NodeAdmin;
use crate::config::{CommonSections, HealthCheck, NodeKind};
use crate::grpc_errors;
use crate::health::{self, NodeHealth};
use crate::http::{self, HttpError, PrometheusHandle};

/// A running node of any kind, as the host serves it.
#[tonic::async_trait]
pub trait Node: Send + 'static {
    /// Its name in the configuration.
    fn name(&self) -> &str;
    /// Its kind.
    fn kind(&self) -> NodeKind;
    /// The public service's name in `grpc.health.v1` (the server as a whole, `""`, too).
    fn health_service(&self) -> &'static str;
    /// Its health watch and status components, for the health endpoints and the admin status.
    fn status(&self) -> Arc<dyn NodeHealth>;
    /// The services of the public API.
    fn public_routes(&self) -> Routes;
    /// The node's own services of the admin API (the node admin API is added by the host).
    fn admin_routes(&self) -> Routes;
    /// A replicated node's leadership, for the admin API's `set-passive`.
    fn leadership(&self) -> Option<LeadershipHandle> {
        None
    }
    /// Stop cleanly: answer what is held, end streams, release what the node owns.
    async fn shutdown(self: Box<Self>);
}

/// A host that could not serve a node.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A listener could not be bound.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The reflection service could not be built.
    #[error("cannot build the reflection service")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// A node's listeners, bound before the node starts so that a taken port fails first.
pub struct Listeners {
    public: (SocketAddr, TcpListener),
    admin: (SocketAddr, TcpListener),
    health: (SocketAddr, TcpListener),
    check: HealthCheck,
    metrics: Option<TcpListener>,
}

impl Listeners {
    /// Bind the listeners of a node's common sections.
    pub async fn bind(common: CommonSections<'_>) -> Result<Self, HostError> {
        let bind = |addr: SocketAddr, what| async move {
            let listener = http::bind(addr, what).await?;
            // The bound address: port 0 picks one.
            Ok::<_, HostError>((listener.local_addr().unwrap_or(addr), listener))
        };
        Ok(Listeners {
            public: bind(common.public_api.address, "public API").await?,
            admin: bind(common.admin_api.address, "admin API").await?,
            health: bind(common.health.address, "health server").await?,
            check: common.health.check,
            metrics: match common.metrics {
                Some(m) => Some(http::bind(m.address, "metrics").await?),
                None => None,
            },
        })
    }
}

impl Listeners {
    /// Where the public API listens.
    pub fn public_address(&self) -> SocketAddr {
        self.public.0
    }

    /// Where the admin API listens.
    pub fn admin_address(&self) -> SocketAddr {
        self.admin.0
    }

    /// Where `/health` is served.
    pub fn health_address(&self) -> SocketAddr {
        self.health.0
    }
}

/// A node with its servers.
pub struct NodeHost {
    name: String,
    node: Box<dyn Node>,
    servers: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl NodeHost {
    /// Serve `node` on `listeners` until [`shutdown`](Self::shutdown).
    pub fn serve(listeners: Listeners, node: Box<dyn Node>, metrics: PrometheusHandle) -> Result<Self, HostError> {
        let Listeners {
            public: (public_addr, public_listener),
            admin: (admin_addr, admin_listener),
            health: (health_addr, health_listener),
            check,
            metrics: metrics_listener,
        } = listeners;
        let name = node.name().to_string();
        let status = node.status();
        let servers = CancellationToken::new();
        let mut tasks = vec![http::serve(health_listener, check, status.clone(), metrics.clone(), servers.clone())];
        if let Some(l) = metrics_listener {
            tasks.push(http::serve_metrics(l, metrics, servers.clone()));
        }
        let (reporter, grpc_health) = tonic_health::server::health_reporter();
        tasks.push(tokio::spawn(health::report_grpc(
            reporter,
            node.health_service(),
            status.health(),
            servers.clone(),
        )));
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(syncline_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        // Every service of both servers answers undecodable requests INVALID_ARGUMENT.
        let public = tonic::transport::Server::builder()
            .layer(grpc_errors::malformed_request_layer())
            .add_routes(node.public_routes())
            .add_service(grpc_health)
            .add_service(reflection.clone());
        let mut node_admin = NodeAdmin::new(name.clone(), node.kind(), status);
        if let Some(l) = node.leadership() {
            node_admin = node_admin.with_leadership(l);
        }
        let admin = tonic::transport::Server::builder()
            .layer(grpc_errors::malformed_request_layer())
            .add_routes(node.admin_routes())
            .add_service(reflection)
            .add_service(node_admin.into_service());
        for (router, (addr, listener), what) in
            [(public, (public_addr, public_listener), "public API"), (admin, (admin_addr, admin_listener), "admin API")]
        {
            let stop = servers.clone();
            let node = name.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) =
                    router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop.cancelled_owned()).await
                {
                    tracing::error!(%e, node, what, %addr, "gRPC server failed");
                }
            }));
        }
        tracing::info!(node = name, kind = %node.kind(), public = %public_addr, admin = %admin_addr, health = %health_addr, "node started");
        Ok(NodeHost { name, node, servers, tasks })
    }

    /// The node first, then the servers.
    pub async fn shutdown(self) {
        let kind = self.node.kind();
        self.node.shutdown().await;
        self.servers.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        tracing::info!(node = self.name, %kind, "node stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Mutex;

    use syncline_proto::admin::node_admin_service_client::NodeAdminServiceClient;
    use syncline_proto::admin::StatusRequest;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::watch;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    use crate::config::{ApiConfig, HealthConfig, PublicApiConfig};
    use crate::health::HealthState;

    /// A node whose health the test sets; its public API is a node admin service.
    struct Fake {
        health: watch::Receiver<HealthState>,
        public: SocketAddr,
        /// What its shutdown saw: whether the public server still answered.
        log: Arc<Mutex<Vec<String>>>,
    }

    struct Status(watch::Receiver<HealthState>);

    impl NodeHealth for Status {
        fn health(&self) -> watch::Receiver<HealthState> {
            self.0.clone()
        }
        fn components(&self) -> Vec<(String, String)> {
            vec![("part".into(), "fine".into())]
        }
    }

    #[tonic::async_trait]
    impl Node for Fake {
        fn name(&self) -> &str {
            "f1"
        }
        fn kind(&self) -> NodeKind {
            NodeKind::Sequencer
        }
        fn health_service(&self) -> &'static str {
            "fake.v1.Fake"
        }
        fn status(&self) -> Arc<dyn NodeHealth> {
            Arc::new(Status(self.health.clone()))
        }
        fn public_routes(&self) -> Routes {
            Routes::new(NodeAdmin::new("f1-public", NodeKind::Sequencer, self.status()).into_service())
        }
        fn admin_routes(&self) -> Routes {
            tonic::service::RoutesBuilder::default().routes()
        }
        async fn shutdown(self: Box<Self>) {
            // A node ends its streams and answers held calls while the servers still run.
            let answered = match NodeAdminServiceClient::connect(format!("http://{}", self.public)).await {
                Ok(mut c) => {
                    c.status(StatusRequest {}).await.map(|r| r.into_inner().name).unwrap_or_else(|e| e.to_string())
                }
                Err(e) => e.to_string(),
            };
            self.log.lock().unwrap().push(answered);
        }
    }

    async fn http_get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    async fn grpc_status(addr: SocketAddr, service: &str) -> i32 {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        let mut c = HealthClient::new(channel);
        c.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner().status
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_one_health_state_everywhere_and_shuts_the_node_down_before_its_servers() {
        let any = "127.0.0.1:0".parse().unwrap();
        let public_api = PublicApiConfig { address: any, max_request_size: 1024 };
        let admin_api = ApiConfig { address: any };
        let health = HealthConfig { address: any, check: HealthCheck::Ping };
        let common = CommonSections {
            storage: None,
            public_api: &public_api,
            admin_api: &admin_api,
            health: &health,
            metrics: None,
        };
        let listeners = Listeners::bind(common).await.unwrap();
        let (public, admin, http_addr) =
            (listeners.public_address(), listeners.admin_address(), listeners.health_address());
        let (tx, rx) = watch::channel(HealthState::serving());
        let log = Arc::new(Mutex::new(Vec::new()));
        let node = Fake { health: rx, public, log: log.clone() };
        let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder().handle();
        let host = NodeHost::serve(listeners, Box::new(node), metrics).unwrap();

        let serving = tonic_health::ServingStatus::Serving as i32;
        let not_serving = tonic_health::ServingStatus::NotServing as i32;
        let wait_grpc = |want: i32| async move {
            for _ in 0..500 {
                if grpc_status(public, "fake.v1.Fake").await == want && grpc_status(public, "").await == want {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("gRPC health never {want}");
        };
        wait_grpc(serving).await;
        let body = http_get(http_addr, "/health").await;
        assert!(body.contains(" 200 ") && body.contains("SERVING\n  part: fine"), "{body}");
        let mut admin_client = NodeAdminServiceClient::connect(format!("http://{admin}")).await.unwrap();
        let st = admin_client.status(StatusRequest {}).await.unwrap().into_inner();
        assert_eq!((st.name.as_str(), st.health.unwrap().detail.as_str()), ("f1", "serving"));

        tx.send_replace(HealthState::not_serving("disk on fire"));
        wait_grpc(not_serving).await;
        let body = http_get(http_addr, "/health").await;
        assert!(body.contains(" 503 ") && body.contains("NOT_SERVING: disk on fire"), "{body}");
        assert!(http_get(http_addr, "/readyz").await.contains("not ready: disk on fire"));
        let st = admin_client.status(StatusRequest {}).await.unwrap().into_inner();
        assert_eq!(st.health.unwrap().detail, "disk on fire");

        tokio::time::timeout(Duration::from_secs(20), host.shutdown()).await.unwrap();
        assert_eq!(*log.lock().unwrap(), ["f1-public"], "the node shut down while its public server still answered");
        assert!(tokio::net::TcpStream::connect(public).await.is_err(), "the public server stopped after the node");
    }
}
