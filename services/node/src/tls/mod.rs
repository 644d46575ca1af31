//! TLS of a node's listeners: the `tls` table of a listener (certificate, key, optionally the
//! CA whose client certificates it requires), loaded into a rustls server configuration with
//! errors that name the file and the key, and the incoming connections of a TLS listener for
//! tonic and axum. rustls with ring only (no OpenSSL, no aws-lc).

pub mod dev;
mod incoming;
pub mod probe;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub use incoming::TlsListener;

/// The `tls` table of a listener.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the listener's certificate chain (its own certificate first).
    pub cert: PathBuf,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM file with the CA certificates whose client certificates are required (mutual TLS);
    /// without it, clients need no certificate.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// A listener's TLS files that cannot be used; `key` is the config key below `tls`.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct TlsError {
    /// The config key below the listener's `tls`: `cert`, `key` or `client_ca`.
    pub key: &'static str,
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: String,
}

/// What a listener speaks over TLS, for ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// gRPC: HTTP/2 only.
    Grpc,
    /// The HTTP server (`/health`, `/metrics`): HTTP/1.1.
    Http,
}

/// The process's crypto provider: ring, explicitly, so that no other provider is ever picked.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsConfig {
    /// The rustls configuration of a listener speaking `protocol`; checks that every file
    /// reads, parses and that the key belongs to the certificate.
    pub fn server_config(&self, protocol: Protocol) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let certs = read_certs("cert", &self.cert)?;
        let key = read_key(&self.key)?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError { key: "cert", path: self.cert.clone(), problem: e.to_string() })?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in read_certs("client_ca", ca)? {
                    roots.add(c).map_err(|e| TlsError {
                        key: "client_ca",
                        path: ca.clone(),
                        problem: format!("not a usable CA certificate: {e}"),
                    })?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                    .build()
                    .map_err(|e| TlsError { key: "client_ca", path: ca.clone(), problem: e.to_string() })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(certs, key).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => TlsError {
                key: "key",
                path: self.key.clone(),
                problem: format!("the private key does not belong to the certificate in {}", self.cert.display()),
            },
            e => TlsError { key: "key", path: self.key.clone(), problem: format!("unusable private key: {e}") },
        })?;
        config.alpn_protocols = match protocol {
            Protocol::Grpc => vec![b"h2".to_vec()],
            Protocol::Http => vec![b"http/1.1".to_vec()],
        };
        Ok(Arc::new(config))
    }
}

/// The certificates of a PEM file; at least one.
pub fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let fail = |problem: String| TlsError { key, path: path.to_path_buf(), problem };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(pem_problem(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(pem_problem(e)))?;
    if certs.is_empty() {
        return Err(fail("no certificate (PEM \"BEGIN CERTIFICATE\") in it".into()));
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError {
        key: "key",
        path: path.to_path_buf(),
        problem: match e {
            pem::Error::NoItemsFound => "no private key (PEM \"BEGIN PRIVATE KEY\") in it".into(),
            e => pem_problem(e),
        },
    })
}

fn pem_problem(e: pem::Error) -> String {
    match e {
        pem::Error::Io(e) => format!("cannot read: {e}"),
        e => format!("not valid PEM: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_files_are_named_with_their_key() {
        let d = tempfile::tempdir().unwrap();
        let certs = dev::write_dev_certs(d.path(), &["a".into(), "b".into()], &dev::LOCAL_HOSTS).unwrap();
        let good = TlsConfig { cert: certs.cert("a"), key: certs.key("a"), client_ca: Some(certs.ca.clone()) };
        good.server_config(Protocol::Grpc).unwrap();

        let missing = TlsConfig { cert: d.path().join("nope.pem"), ..good.clone() };
        let e = missing.server_config(Protocol::Grpc).unwrap_err();
        assert_eq!(e.key, "cert");
        assert!(e.to_string().starts_with(&format!("{}: cannot read", d.path().join("nope.pem").display())), "{e}");

        let mismatched = TlsConfig { key: certs.key("b"), ..good.clone() };
        let e = mismatched.server_config(Protocol::Http).unwrap_err();
        assert_eq!(e.key, "key");
        assert_eq!(
            e.to_string(),
            format!(
                "{}: the private key does not belong to the certificate in {}",
                certs.key("b").display(),
                certs.cert("a").display()
            )
        );

        let not_a_key = TlsConfig { key: certs.cert("a"), ..good.clone() };
        let e = not_a_key.server_config(Protocol::Grpc).unwrap_err();
        assert_eq!(e.key, "key");
        assert!(e.to_string().contains("no private key"), "{e}");

        let garbage = syncline_testkit::files::write_file(d.path(), "garbage.pem", "hello\n");
        let e = TlsConfig { client_ca: Some(garbage.clone()), ..good }.server_config(Protocol::Grpc).unwrap_err();
        assert_eq!(e.key, "client_ca");
        assert!(e.to_string().starts_with(&garbage.display().to_string()), "{e}");
    }
}
