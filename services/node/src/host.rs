//! Hosting a node: one place that binds a node's listeners and serves its public and admin
//! gRPC APIs (with reflection, `grpc.health.v1` and the node admin API) and the HTTP
//! `/health /livez /readyz /metrics`, and one shutdown order: the node first (it answers held
//! sends and ends its streams while the servers still carry them), then the servers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;

use syncline_coordination::leadership::LeadershipHandle;

use crate::admin::NodeAdmin;
use crate::config::{CommonSections, HealthCheck, NodeKind};
use crate::grpc_errors;
use crate::health::{self, NodeHealth};
use crate::http::{self, HttpError, PrometheusHandle};
use crate::tls::{Protocol, TlsConfig, TlsError, TlsListener};
use tokio_rustls::rustls::ServerConfig;

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
    /// A listener's TLS files cannot be used.
    #[error("{what}: tls.{}: {source}", source.key)]
    Tls {
        /// Which listener.
        what: &'static str,
        /// What is wrong.
        source: TlsError,
    },
    /// The reflection service could not be built.
    #[error("cannot build the reflection service")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// A node's listeners, bound before the node starts so that a taken port fails first, with
/// their TLS configurations (loaded then too).
pub struct Listeners {
    public: Bound,
    admin: Bound,
    health: Bound,
    check: HealthCheck,
    metrics: Option<Bound>,
    /// Whether the admin API may be reached from other machines without a client certificate.
    admin_exposed: bool,
}

/// A bound listener: its address, the socket, its TLS.
struct Bound {
    addr: SocketAddr,
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
}

impl Listeners {
    /// Bind the listeners of a node's common sections.
    pub async fn bind(common: CommonSections<'_>) -> Result<Self, HostError> {
        let bind = |addr: SocketAddr, tls: Option<&TlsConfig>, protocol, what| {
            let tls =
                tls.map(|t| t.server_config(protocol)).transpose().map_err(|source| HostError::Tls { what, source });
            Self::bind_one(addr, tls, what)
        };
        let (public, admin, health) = (common.public_api, common.admin_api, common.health);
        Ok(Listeners {
            public: bind(public.address, public.tls.as_ref(), Protocol::Grpc, "public API").await?,
            admin: bind(admin.address, admin.tls.as_ref(), Protocol::Grpc, "admin API").await?,
            health: bind(health.address, health.tls.as_ref(), Protocol::Http, "health server").await?,
            check: health.check,
            metrics: match common.metrics {
                Some(m) => Some(bind(m.address, m.tls.as_ref(), Protocol::Http, "metrics").await?),
                None => None,
            },
            admin_exposed: !admin.address.ip().is_loopback() && !admin.requires_client_certificates(),
        })
    }
}

impl Listeners {
    async fn bind_one(
        addr: SocketAddr,
        tls: Result<Option<Arc<ServerConfig>>, HostError>,
        what: &'static str,
    ) -> Result<Bound, HostError> {
        let tls = tls?;
        let listener = http::bind(addr, what).await?;
        // The bound address: port 0 picks one.
        Ok(Bound { addr: listener.local_addr().unwrap_or(addr), listener, tls })
    }

    /// Where the public API listens.
    pub fn public_address(&self) -> SocketAddr {
        self.public.addr
    }

    /// Where the admin API listens.
    pub fn admin_address(&self) -> SocketAddr {
        self.admin.addr
    }

    /// Where `/health` is served.
    pub fn health_address(&self) -> SocketAddr {
        self.health.addr
    }
}

/// A node with its servers.
pub struct NodeHost {
    name: String,
    node: Box<dyn Node>,
    servers: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

/// The connections of a plaintext gRPC listener, as every Syncline server takes them: without
/// Nagle's algorithm, so that small responses (a send's answer, a subscription's events) go out
/// at once instead of waiting for the peer's delayed ACK. (tonic sets this only on listeners it
/// binds itself; the TLS listener sets it too.)
pub fn plaintext(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

impl NodeHost {
    /// Serve `node` on `listeners` until [`shutdown`](Self::shutdown).
    pub fn serve(listeners: Listeners, node: Box<dyn Node>, metrics: PrometheusHandle) -> Result<Self, HostError> {
        let Listeners { public, admin, health, check, metrics: metrics_listener, admin_exposed } = listeners;
        let name = node.name().to_string();
        if admin_exposed {
            // Whoever reaches it can hand leadership over, publish topology, register members.
            tracing::warn!(
                node = name,
                admin = %admin.addr,
                "the admin API of {name} listens on {} without requiring client certificates (admin_api.tls.client_ca): anyone who reaches it can administer the node",
                admin.addr
            );
        }
        let (public_addr, admin_addr, health_addr) = (public.addr, admin.addr, health.addr);
        let status = node.status();
        let servers = CancellationToken::new();
        let mut tasks =
            vec![http::serve(health.listener, health.tls, check, status.clone(), metrics.clone(), servers.clone())];
        if let Some(l) = metrics_listener {
            tasks.push(http::serve_metrics(l.listener, l.tls, metrics, servers.clone()));
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
        let public_server = tonic::transport::Server::builder()
            .layer(grpc_errors::malformed_request_layer())
            .add_routes(node.public_routes())
            .add_service(grpc_health)
            .add_service(reflection.clone());
        let mut node_admin = NodeAdmin::new(name.clone(), node.kind(), status);
        if let Some(l) = node.leadership() {
            node_admin = node_admin.with_leadership(l);
        }
        let admin_server = tonic::transport::Server::builder()
            .layer(grpc_errors::malformed_request_layer())
            .add_routes(node.admin_routes())
            .add_service(reflection)
            .add_service(node_admin.into_service());
        for (router, bound, what) in [(public_server, public, "public API"), (admin_server, admin, "admin API")] {
            let stop = servers.clone();
            let node = name.clone();
            let Bound { addr, listener, tls } = bound;
            tasks.push(tokio::spawn(async move {
                let served = match tls {
                    None => router.serve_with_incoming_shutdown(plaintext(listener), stop.cancelled_owned()).await,
                    Some(tls) => {
                        let incoming = TlsListener::new(listener, tls, what, stop.clone());
                        router.serve_with_incoming_shutdown(incoming, stop.cancelled_owned()).await
                    }
                };
                if let Err(e) = served {
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

    /// A host serving the fake node on loopback ports: public and health listeners with `tls`,
    /// the admin listener with `admin_tls`. The host and its public, admin and health addresses.
    async fn serve_fake(
        tls: Option<TlsConfig>,
        admin_tls: Option<TlsConfig>,
        health_rx: watch::Receiver<HealthState>,
        log: Arc<Mutex<Vec<String>>>,
    ) -> (NodeHost, SocketAddr, SocketAddr, SocketAddr) {
        let any = "127.0.0.1:0".parse().unwrap();
        let public_api = PublicApiConfig { address: any, max_request_size: 1024, tls: tls.clone() };
        let admin_api = ApiConfig { address: any, tls: admin_tls };
        let health = HealthConfig { address: any, check: HealthCheck::Ping, tls };
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
        let node = Fake { health: health_rx, public, log };
        let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder().handle();
        (NodeHost::serve(listeners, Box::new(node), metrics).unwrap(), public, admin, http_addr)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_one_health_state_everywhere_and_shuts_the_node_down_before_its_servers() {
        let (tx, rx) = watch::channel(HealthState::serving());
        let log = Arc::new(Mutex::new(Vec::new()));
        let (host, public, admin, http_addr) = serve_fake(None, None, rx, log.clone()).await;

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

    /// A client of `url` trusting `ca`, with `identity` as its client certificate.
    async fn tls_channel(
        url: String,
        ca: &std::path::Path,
        identity: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Result<tonic::transport::Channel, String> {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()));
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(std::fs::read(cert).unwrap(), std::fs::read(key).unwrap()));
        }
        let endpoint = tonic::transport::Endpoint::from_shared(url).unwrap().tls_config(tls).unwrap();
        endpoint.connect().await.map_err(|e| format!("{e}: {:?}", std::error::Error::source(&e)))
    }

    async fn https_get(addr: SocketAddr, ca: &std::path::Path, path: &str) -> String {
        use tokio_rustls::rustls;
        let mut roots = rustls::RootCertStore::empty();
        for c in crate::tls::read_certs("ca", ca).unwrap() {
            roots.add(c).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut s = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()).await.unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_listeners_refuse_plaintext_and_the_admin_api_requires_client_certificates() {
        use crate::tls::dev::{write_dev_certs, LOCAL_HOSTS};
        use crate::tls::TlsConfig;
        let d = tempfile::tempdir().unwrap();
        let certs = write_dev_certs(d.path(), &["f1".into(), "operator".into()], &LOCAL_HOSTS).unwrap();
        let other = write_dev_certs(&d.path().join("other"), &["intruder".into()], &LOCAL_HOSTS).unwrap();
        let tls = TlsConfig { cert: certs.cert("f1"), key: certs.key("f1"), client_ca: None };
        let mtls = TlsConfig { client_ca: Some(certs.ca.clone()), ..tls.clone() };
        let (_tx, rx) = watch::channel(HealthState::serving());
        let (host, public, admin, http_addr) = serve_fake(Some(tls), Some(mtls), rx, Arc::default()).await;

        // The public API over TLS, trusting the CA.
        let channel = tls_channel(format!("https://{public}"), &certs.ca, None).await.unwrap();
        let st = HealthClient::new(channel).check(HealthCheckRequest { service: "".into() }).await.unwrap();
        assert_eq!(st.into_inner().status, tonic_health::ServingStatus::Serving as i32);
        // Plaintext gRPC gets nowhere.
        let plain = tonic::transport::Endpoint::from_shared(format!("http://{public}")).unwrap();
        let plain = plain.connect_timeout(Duration::from_secs(2)).connect().await;
        let plain_answer = match plain {
            Ok(c) => HealthClient::new(c).check(HealthCheckRequest { service: "".into() }).await.map(|_| ()),
            Err(e) => Err(tonic::Status::unavailable(e.to_string())),
        };
        assert!(plain_answer.is_err(), "a plaintext gRPC call was answered");
        // A client trusting another CA is refused, and told why.
        let e = tls_channel(format!("https://{public}"), &other.ca, None).await.unwrap_err();
        assert!(e.contains("UnknownIssuer"), "{e}");

        // /health over TLS; plaintext HTTP gets no answer.
        let body = https_get(http_addr, &certs.ca, "/health").await;
        assert!(body.contains(" 200 ") && body.contains("SERVING"), "{body}");
        let plain = http_get(http_addr, "/health").await;
        assert!(!plain.contains("HTTP/1"), "plaintext HTTP was answered: {plain}");

        // The admin API: a client certificate of the CA is required.
        let call = |c: tonic::transport::Channel| async move {
            NodeAdminServiceClient::new(c).status(StatusRequest {}).await.map(|r| r.into_inner().name)
        };
        let refused = match tls_channel(format!("https://{admin}"), &certs.ca, None).await {
            Ok(c) => call(c).await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        assert!(refused.is_err(), "the admin API answered a client without a certificate: {refused:?}");
        let foreign = Some((other.cert("intruder"), other.key("intruder")));
        let foreign = foreign.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
        let refused = match tls_channel(format!("https://{admin}"), &certs.ca, foreign).await {
            Ok(c) => call(c).await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        assert!(refused.is_err(), "the admin API answered a certificate of another CA: {refused:?}");
        let (cert, key) = (certs.cert("operator"), certs.key("operator"));
        let c = tls_channel(format!("https://{admin}"), &certs.ca, Some((&cert, &key))).await.unwrap();
        assert_eq!(call(c).await.unwrap(), "f1");

        tokio::time::timeout(Duration::from_secs(20), host.shutdown()).await.unwrap();
    }

    #[tokio::test]
    async fn an_admin_api_reachable_from_other_machines_without_client_certificates_is_flagged() {
        let d = tempfile::tempdir().unwrap();
        let certs = crate::tls::dev::write_dev_certs(d.path(), &["n".into()], &crate::tls::dev::LOCAL_HOSTS).unwrap();
        let any = "127.0.0.1:0".parse().unwrap();
        let exposed = |admin_api: ApiConfig| async move {
            let public_api = PublicApiConfig::plain(any);
            let health = HealthConfig { address: any, check: HealthCheck::Ping, tls: None };
            let common = CommonSections {
                storage: None,
                public_api: &public_api,
                admin_api: &admin_api,
                health: &health,
                metrics: None,
            };
            Listeners::bind(common).await.unwrap().admin_exposed
        };
        let tls = crate::tls::TlsConfig { cert: certs.cert("n"), key: certs.key("n"), client_ca: None };
        let everywhere = "0.0.0.0:0".parse().unwrap();
        assert!(!exposed(ApiConfig::plain(any)).await, "loopback");
        assert!(exposed(ApiConfig::plain(everywhere)).await, "all interfaces, plaintext");
        assert!(exposed(ApiConfig { address: everywhere, tls: Some(tls.clone()) }).await, "TLS without client_ca");
        let mtls = crate::tls::TlsConfig { client_ca: Some(certs.ca.clone()), ..tls };
        assert!(!exposed(ApiConfig { address: everywhere, tls: Some(mtls) }).await, "client certificates required");
    }
}
