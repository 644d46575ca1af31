//! How the client talks to its endpoints: timeouts, back-off, message size.

use std::time::Duration;

use crate::TokenSource;

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

    /// Where the node's token comes from, if it has one.
    pub fn token_source(&self) -> Option<TokenSource> {
        match (&self.token, &self.token_file) {
            (Some(t), _) => Some(TokenSource::Token(t.trim().to_string())),
            (None, Some(f)) => Some(TokenSource::File(f.clone())),
            (None, None) => None,
        }
    }
}
