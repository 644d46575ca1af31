//! A minimal HTTP/1.1 GET over TLS (or plaintext), for the health probes of the demo and the
//! tests: the status and the body of one request.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::rustls;

use super::{provider, read_certs, TlsError};

/// What [`get`] speaks TLS with.
pub type ProbeTls = Arc<rustls::ClientConfig>;

/// A TLS client configuration trusting the CA certificates in `ca` (HTTP/1.1 by ALPN).
pub fn client_config(ca: &Path) -> Result<ProbeTls, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs("ca", ca)? {
        roots.add(c).map_err(|e| TlsError { key: "ca", path: ca.to_path_buf(), problem: e.to_string() })?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError { key: "ca", path: ca.to_path_buf(), problem: e.to_string() })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `GET path` on `addr` (over TLS with `tls`, checking the certificate for the IP address):
/// the status code and the body; `None` when it cannot be had.
pub async fn get(addr: SocketAddr, tls: Option<&ProbeTls>, path: &str) -> Option<(u16, String)> {
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    match tls {
        None => exchange(tcp, path).await,
        Some(config) => {
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let stream = tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp).await.ok()?;
            exchange(stream, path).await
        }
    }
}

async fn exchange(mut s: impl AsyncRead + AsyncWrite + Unpin, path: &str) -> Option<(u16, String)> {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    // A TLS peer closing without close_notify still delivered the whole response.
    let _ = s.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()))
}
