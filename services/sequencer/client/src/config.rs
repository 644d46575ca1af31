//! How the client talks to its endpoints: timeouts, back-off, message size.

use std::time::Duration;

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
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequencerConnection {
    /// Public API URLs of the sequencers (`http://host:port`), at least one.
    pub endpoints: Vec<String>,
}

impl SequencerConnection {
    /// What is wrong with the endpoints, if anything.
    pub fn problem(&self) -> Option<String> {
        if self.endpoints.is_empty() {
            return Some("needs at least one URL".into());
        }
        let url = self.endpoints.iter().find(|u| !u.starts_with("http://") && !u.starts_with("https://"))?;
        Some(format!("{url:?} is not an http:// or https:// URL"))
    }
}
