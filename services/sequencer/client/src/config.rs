//! How the client talks to its endpoints: timeouts, back-off, message size.

use std::time::Duration;

use crate::{ClientTls, TlsFiles, TokenSource};

/// Settings of a [`crate::SequencerClient`] and [`crate::AdminClient`].
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Longest wait for one answer (a send's response, a subscription's response headers, an
    /// admin call); a send not answered by then is resent on the next endpoint.
    pub attempt_timeout: Duration,
    /// Longest wait for a TCP connection to an endpoint.
    pub connect_timeout: Duration,
    /// HTTP/2 keep-alive ping interval: finds a dead connection under an idle subscription.
    pub keepalive_interval: Duration,
    /// How long an unanswered keep-alive ping may take before the connection counts as dead.
    pub keepalive_timeout: Duration,
    /// First back-off of an endpoint that failed; doubles with each further failure.
    pub backoff_min: Duration,
    /// Longest back-off of an endpoint.
    pub backoff_max: Duration,
    /// Largest response (event) accepted, in bytes.
    pub max_decoding_message_size: usize,
    /// TLS toward `https://` endpoints (required for them); `http://` ones stay plaintext.
    pub tls: Option<ClientTls>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            attempt_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            keepalive_interval: Duration::from_secs(5),
            keepalive_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            max_decoding_message_size: 4 << 20,
            tls: None,
        }
    }
}

/// The `sequencer` section of a node that uses the sequencers (mediator, participant).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequencerConnection {
    /// Public API URLs of the sequencers (`http://host:port`), at least one.
    pub endpoints: Vec<String>,
    /// The node's member token (prefer `token_file`: a config file is often readable by more
    /// people than a secret should be).
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding the node's member token, as `syncline admin bootstrap --token-dir` /
    /// `join-participant --token-dir` write it. Read while the node runs (again every second),
    /// so it may appear after the node started and a rotated token is picked up.
    #[serde(default)]
    pub token_file: Option<std::path::PathBuf>,
    /// TLS toward `https://` endpoints: the CA file the sequencers' certificates are checked
    /// against (required for them).
    #[serde(default)]
    pub ca: Option<std::path::PathBuf>,
    /// A client certificate file, for sequencers that require one.
    #[serde(default)]
    pub client_cert: Option<std::path::PathBuf>,
    /// The client certificate's private key file.
    #[serde(default)]
    pub client_key: Option<std::path::PathBuf>,
}

impl SequencerConnection {
    /// What is wrong with the endpoints or the token settings, if anything: the config key
    /// below `sequencer` and the problem.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if self.endpoints.is_empty() {
            return Some(("endpoints", "needs at least one URL".into()));
        }
        if let Some(url) = self.endpoints.iter().find(|u| !u.starts_with("http://") && !u.starts_with("https://")) {
            return Some(("endpoints", format!("{url:?} is not an http:// or https:// URL")));
        }
        if let Some(url) = self.endpoints.iter().find(|u| u.starts_with("https://")).filter(|_| self.ca.is_none()) {
            return Some((
                "ca",
                format!("{url:?} is an https:// URL: give the CA of the sequencers' certificates (ca = \"ca.pem\")"),
            ));
        }
        if let Err(e) = self.tls_files().load() {
            return Some(match e {
                crate::TlsFilesError::File { key, path, problem } => (key, format!("{}: {problem}", path.display())),
                e => ("client_cert", e.to_string()),
            });
        }
        match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => Some(("token", "give either token or token_file, not both".into())),
            (Some(t), None) if t.trim().is_empty() => Some(("token", "is empty".into())),
            (Some(t), None) if !t.trim().bytes().all(|b| b.is_ascii_graphic()) => {
                Some(("token", "must be printable ASCII without spaces".into()))
            }
            (None, Some(f)) if f.as_os_str().is_empty() => Some(("token_file", "is empty".into())),
            _ => None,
        }
    }

    /// The client settings of this connection: the defaults with its TLS.
    pub fn client_config(&self) -> Result<ClientConfig, crate::TlsFilesError> {
        Ok(ClientConfig { tls: self.tls_files().load()?, ..ClientConfig::default() })
    }

    /// Its TLS files.
    pub fn tls_files(&self) -> TlsFiles {
        TlsFiles { ca: self.ca.clone(), client_cert: self.client_cert.clone(), client_key: self.client_key.clone() }
    }

    /// Where the node's token comes from, if it has one.
    pub fn token_source(&self) -> Option<TokenSource> {
        match (&self.token, &self.token_file) {
            (Some(t), _) => Some(TokenSource::Token(t.trim().to_string())),
            (None, Some(f)) => Some(TokenSource::File(f.clone())),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_endpoints_need_a_readable_ca() {
        let https = SequencerConnection { endpoints: vec!["https://s1:4001".into()], ..Default::default() };
        let (key, problem) = https.problem().unwrap();
        assert_eq!(key, "ca");
        assert!(problem.contains("\"https://s1:4001\" is an https:// URL"), "{problem}");
        let missing = SequencerConnection { ca: Some("/nonexistent/ca.pem".into()), ..https.clone() };
        let (key, problem) = missing.problem().unwrap();
        assert_eq!(key, "ca");
        assert!(problem.starts_with("/nonexistent/ca.pem: cannot read"), "{problem}");
        let half = SequencerConnection { client_cert: Some("c.pem".into()), ..missing };
        assert_eq!(half.problem().unwrap().0, "client_cert");
        let plain = SequencerConnection { endpoints: vec!["http://s1:4001".into()], ..Default::default() };
        assert_eq!(plain.problem(), None);
    }
}
