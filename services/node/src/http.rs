//! The node's HTTP server: `/health` (by check type), `/livez`, `/readyz`, `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::BuildError;
/// The process-wide Prometheus registry's handle (renders `/metrics`).
pub use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::config::HealthCheck;
use crate::health::NodeHealth;
use crate::tls::TlsListener;
use tokio_rustls::rustls::ServerConfig;

/// A server that could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The listen address is taken or not ours.
    #[error("cannot listen on {addr} ({what})")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Which listener.
        what: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The Prometheus recorder could not be set up.
    #[error(transparent)]
    Metrics(#[from] BuildError),
}

/// Listen on `addr`; the error names the address and what it is for.
pub async fn bind(addr: SocketAddr, what: &'static str) -> Result<tokio::net::TcpListener, HttpError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|source| HttpError::Bind { addr, what, source })
}

struct AppState {
    check: HealthCheck,
    node: Arc<dyn NodeHealth>,
    metrics: PrometheusHandle,
}

#[derive(Deserialize)]
struct HealthQuery {
    check: Option<String>,
}

/// Serve on `listener` (over TLS with `tls`) until `cancel`.
pub fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<ServerConfig>>,
    check: HealthCheck,
    node: Arc<dyn NodeHealth>,
    metrics: PrometheusHandle,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let app = Router::new()
        .route("/health", get(health))
        .route("/readyz", get(readyz))
        .route("/livez", get(|| async { "OK\n" }))
        .route("/metrics", get(metrics_text))
        .with_state(Arc::new(AppState { check, node, metrics }));
    spawn(listener, tls, app, "health server", cancel)
}

/// Serve only `/metrics` on `listener` (over TLS with `tls`) until `cancel`.
pub fn serve_metrics(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<ServerConfig>>,
    metrics: PrometheusHandle,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let app = Router::new().route("/metrics", get(move || async move { metrics.render() }));
    spawn(listener, tls, app, "metrics server", cancel)
}

fn spawn(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<ServerConfig>>,
    app: Router,
    what: &'static str,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let stop = cancel.clone().cancelled_owned();
        let served = match tls {
            None => axum::serve(listener, app).with_graceful_shutdown(stop).await,
            Some(tls) => {
                axum::serve(TlsListener::new(listener, tls, what, cancel), app).with_graceful_shutdown(stop).await
            }
        };
        if let Err(e) = served {
            tracing::error!(%e, what, "HTTP server failed");
        }
    })
}

fn verdict(node: &dyn NodeHealth, check: HealthCheck) -> Result<(), String> {
    let health = node.health().borrow().clone();
    health.verdict().map_err(String::from)?;
    if check == HealthCheck::IsActive && !health.active {
        return Err("passive replica".into());
    }
    Ok(())
}

async fn health(State(st): State<Arc<AppState>>, Query(q): Query<HealthQuery>) -> impl IntoResponse {
    let check = match q.check.as_deref() {
        None => st.check,
        Some("ping") => HealthCheck::Ping,
        Some("is-active") => HealthCheck::IsActive,
        Some(other) => return (StatusCode::BAD_REQUEST, format!("unknown check {other:?}: use ping or is-active\n")),
    };
    let mut body = String::new();
    let code = match verdict(st.node.as_ref(), check) {
        Ok(()) => {
            body.push_str("SERVING\n");
            StatusCode::OK
        }
        Err(reason) => {
            body.push_str(&format!("NOT_SERVING: {reason}\n"));
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    for (name, state) in st.node.components() {
        body.push_str(&format!("  {name}: {state}\n"));
    }
    (code, body)
}

async fn readyz(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    match st.node.health().borrow().verdict() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(r) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {r}\n")),
    }
}

async fn metrics_text(State(st): State<Arc<AppState>>) -> String {
    st.metrics.render()
}

/// Install the process-wide Prometheus recorder (once) and return its handle.
pub fn metrics_handle() -> Result<PrometheusHandle, HttpError> {
    use std::sync::OnceLock;
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("seconds".into()),
            &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
        )?
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("batch_size".into()),
            &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0],
        )?
        .install_recorder()?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::Fake;

    async fn get(check: HealthCheck, node: Fake, query: Option<&str>) -> (StatusCode, String) {
        let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder().handle();
        let st = Arc::new(AppState { check, node: Arc::new(node), metrics });
        let r = health(State(st), Query(HealthQuery { check: query.map(String::from) })).await.into_response();
        let code = r.status();
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        (code, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn health_answers_by_check_type() {
        let passive = || Fake { serving: true, active: false };
        assert_eq!(
            get(HealthCheck::Ping, passive(), None).await,
            (StatusCode::OK, "SERVING\n  writer: running\n".into())
        );
        let (code, body) = get(HealthCheck::IsActive, passive(), None).await;
        assert_eq!(
            (code, body.lines().next()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("NOT_SERVING: passive replica"))
        );
        assert_eq!(
            get(HealthCheck::IsActive, passive(), Some("ping")).await.0,
            StatusCode::OK,
            "?check= overrides the configured check"
        );
        assert_eq!(
            get(HealthCheck::Ping, Fake { serving: true, active: true }, Some("is-active")).await.0,
            StatusCode::OK
        );
        let (code, body) = get(HealthCheck::Ping, Fake { serving: false, active: true }, None).await;
        assert_eq!((code, body.lines().next()), (StatusCode::SERVICE_UNAVAILABLE, Some("NOT_SERVING: writer stopped")));
        assert_eq!(get(HealthCheck::Ping, passive(), Some("alive")).await.0, StatusCode::BAD_REQUEST);
    }
}
