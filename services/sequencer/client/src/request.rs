//! Building send requests.

use std::time::Duration;

use syncline_proto::sequencer::{Envelope, SendRequest};

/// Microseconds since the Unix epoch: the sequencer's timestamp unit.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// Builds a [`SendRequest`]: `RequestBuilder::new("alice", "m1").to(["bob"], body).within(d).build()`.
#[derive(Clone, Debug)]
pub struct RequestBuilder {
    request: SendRequest,
}

impl RequestBuilder {
    /// A send from `sender` with `message_id`, no envelopes yet, sequenceable for 30 s.
    pub fn new(sender: impl Into<String>, message_id: impl Into<String>) -> Self {
        let request = SendRequest {
            sender: sender.into(),
            message_id: message_id.into(),
            max_sequencing_time: now_micros() + 30_000_000,
            envelopes: Vec::new(),
        };
        RequestBuilder { request }
    }

    /// Add an envelope with `content` for `recipients`.
    pub fn to(mut self, recipients: impl IntoIterator<Item = impl Into<String>>, content: impl Into<Vec<u8>>) -> Self {
        let recipients = recipients.into_iter().map(Into::into).collect();
        self.request.envelopes.push(Envelope { recipients, content: content.into() });
        self
    }

    /// Sequenceable until `within` from now.
    pub fn within(mut self, within: Duration) -> Self {
        self.request.max_sequencing_time = now_micros() + within.as_micros() as i64;
        self
    }

    /// Sequenceable until the timestamp `max_sequencing_time` (microseconds).
    pub fn until(mut self, max_sequencing_time: i64) -> Self {
        self.request.max_sequencing_time = max_sequencing_time;
        self
    }

    /// The request.
    pub fn build(self) -> SendRequest {
        self.request
    }
}

impl From<RequestBuilder> for SendRequest {
    fn from(b: RequestBuilder) -> SendRequest {
        b.build()
    }
}
