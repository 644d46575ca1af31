//! TLS toward `https://` endpoints: the CA to trust and, for servers that require one (an
//! admin API with `client_ca`), a client certificate. Files are read and parsed when the
//! settings are loaded, so a wrong path fails there, naming the file.

use std::path::{Path, PathBuf};

use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// The TLS files of a client, as config sections spell them (`ca`, `client_cert`,
/// `client_key`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM file with the CA certificate(s) the servers' certificates are checked against.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// PEM file with a client certificate (for servers requiring one).
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// PEM file with the client certificate's private key.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

/// A client's TLS files that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlsFilesError {
    /// A file is missing or not what it should be; `key` is the config key.
    #[error("{key}: {}: {problem}", path.display())]
    File {
        /// `ca`, `client_cert` or `client_key`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A client certificate without its key or the other way round.
    #[error("client_cert and client_key go together: give both or neither")]
    Incomplete,
    /// A client certificate but no CA to check the servers with.
    #[error("client_cert is given but ca is not: give the CA of the servers' certificates too")]
    CertWithoutCa,
}

/// Loaded client TLS settings, ready for [`crate::ClientConfig::tls`].
#[derive(Clone, Debug)]
pub struct ClientTls {
    config: ClientTlsConfig,
}

impl TlsFiles {
    /// Whether anything is configured.
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.client_cert.is_none() && self.client_key.is_none()
    }

    /// `self`, with what it leaves unset taken from `defaults`.
    pub fn or(&self, defaults: &TlsFiles) -> TlsFiles {
        TlsFiles {
            ca: self.ca.clone().or_else(|| defaults.ca.clone()),
            client_cert: self.client_cert.clone().or_else(|| defaults.client_cert.clone()),
            client_key: self.client_key.clone().or_else(|| defaults.client_key.clone()),
        }
    }

    /// Read and check the files; `None` when no CA is given (plaintext `http://` only).
    pub fn load(&self) -> Result<Option<ClientTls>, TlsFilesError> {
        let identity = match (&self.client_cert, &self.client_key) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            (None, None) => None,
            _ => return Err(TlsFilesError::Incomplete),
        };
        match &self.ca {
            Some(ca) => ClientTls::load(ca, identity).map(Some),
            None if identity.is_some() => Err(TlsFilesError::CertWithoutCa),
            None => Ok(None),
        }
    }
}

impl ClientTls {
    /// Trust the CA certificates in `ca`; present `identity` (certificate, key) when given.
    pub fn load(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<ClientTls, TlsFilesError> {
        let mut config =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("ca", ca, check_certificates)?));
        if let Some((cert, key)) = identity {
            let cert = read("client_cert", cert, check_certificates)?;
            let key = read("client_key", key, |b| {
                PrivateKeyDer::from_pem_slice(b).map(drop).map_err(|e| match e {
                    pem::Error::NoItemsFound => "no private key (PEM \"BEGIN PRIVATE KEY\") in it".into(),
                    e => format!("not valid PEM: {e}"),
                })
            })?;
            config = config.identity(Identity::from_pem(cert, key));
        }
        Ok(ClientTls { config })
    }

    /// The tonic configuration (the server name is taken from each endpoint's URL).
    pub fn tonic_config(&self) -> ClientTlsConfig {
        self.config.clone()
    }
}

fn check_certificates(bytes: &[u8]) -> Result<(), String> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate (PEM \"BEGIN CERTIFICATE\") in it".into());
    }
    Ok(())
}

fn read(key: &'static str, path: &Path, check: impl Fn(&[u8]) -> Result<(), String>) -> Result<Vec<u8>, TlsFilesError> {
    let fail = |problem: String| TlsFilesError::File { key, path: path.to_path_buf(), problem };
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    check(&bytes).map_err(fail)?;
    Ok(bytes)
}
