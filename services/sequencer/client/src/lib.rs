//! Client of Syncline's sequencers, for every service that talks to them (the mediator, the
//! participant, the demo, the bench, the system tests).
//!
//! - [`SequencerClient`] spreads sends round-robin over several sequencer endpoints, skipping
//!   the ones that failed recently, and resends a send whose outcome is unknown unchanged (same
//!   message id) on the next endpoint until its max-sequencing-time, as the Send contract asks.
//! - Its subscriptions resume after the last delivered event when a stream breaks, move to
//!   another endpoint when one fails, and check the `previous_timestamp` chain.
//! - [`AdminClient`] wraps a node's admin API.
//! - [`SequencerApi`] is what a service depends on; `fake::FakeSequencer` (feature `fake`)
//!   implements it in memory so that services can be unit-tested without servers.

#![warn(missing_docs)]

mod admin;
mod config;
mod endpoints;
mod error;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
#[cfg(test)]
mod mock_tests;
mod request;
mod send;
mod subscribe;
mod tls;
mod token;

use std::future::Future;
use std::pin::Pin;

use futures_util::Stream;
pub use syncline_proto::sequencer::{Envelope, Event, SendRequest};

pub use admin::{AdminClient, AdminError, Registered};
pub use config::{ClientConfig, SequencerConnection};
pub use endpoints::EndpointError;
pub use error::{code_name, AcknowledgeError, SendError, SubscribeError};
pub use request::{now_micros, RequestBuilder};
pub use send::Sent;
pub use tls::{ClientTls, TlsFiles, TlsFilesError};
pub use token::TokenSource;

/// The recipient that addresses an envelope to every member of the sequencer, including
/// members registered later: a member's subscription from its start (no `after`) delivers
/// every broadcast still stored, and pruning never removes broadcasts. No member can be
/// called this.
pub const BROADCAST_RECIPIENT: &str = "*";

/// A member's events in timestamp order; an `Err` item is final (the stream ends after it).
pub type EventStream = Pin<Box<dyn Stream<Item = Result<Event, SubscribeError>> + Send>>;

/// What a service needs from the sequencers; implemented by [`SequencerClient`] and, for
/// unit tests, by `fake::FakeSequencer`.
pub trait SequencerApi: Send + Sync {
    /// Sequence a send: its timestamp once a sequencer confirmed it (see [`SendError`] for
    /// what each failure means for its outcome).
    fn send(&self, request: SendRequest) -> impl Future<Output = Result<Sent, SendError>> + Send;

    /// Stream `member`'s events after `after` (`None`: from its registration). The stream does
    /// not end on its own except with an error; drop it to stop.
    fn subscribe(&self, member: &str, after: Option<i64>) -> EventStream;

    /// Record that `member` processed its events up to `timestamp` (lets the sequencer prune).
    fn acknowledge(&self, member: &str, timestamp: i64) -> impl Future<Output = Result<(), AcknowledgeError>> + Send;
}

/// The client of a set of sequencer nodes (their public APIs). Cheap to clone: clones share
/// the endpoints, their connections and their health.
#[derive(Clone)]
pub struct SequencerClient {
    endpoints: endpoints::Endpoints,
}

impl SequencerClient {
    /// A client of the sequencers at `urls` (`http://host:port`). Connections are made lazily;
    /// must be called within a Tokio runtime.
    pub fn new(urls: impl IntoIterator<Item = impl Into<String>>, config: ClientConfig) -> Result<Self, EndpointError> {
        Ok(SequencerClient { endpoints: endpoints::Endpoints::new(urls, config)? })
    }

    /// Replace the endpoint list at runtime. Endpoints that stay keep their connection and
    /// health; subscriptions on a removed endpoint move to another one.
    pub fn set_endpoints(&self, urls: impl IntoIterator<Item = impl Into<String>>) -> Result<(), EndpointError> {
        self.endpoints.set(urls)
    }

    /// The current endpoint URLs.
    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints.urls()
    }

    /// Present `source`'s token (`authorization: Bearer <token>`) on every call acting as
    /// `member` (its sends, subscriptions and acknowledgements); replaces an earlier one.
    /// Calls for members without a token go out without one.
    pub fn set_token(&self, member: &str, source: TokenSource) {
        self.endpoints.tokens().set(member, source)
    }

    /// This client, presenting `source`'s token for `member` (see [`set_token`](Self::set_token)).
    pub fn with_token(self, member: &str, source: TokenSource) -> Self {
        self.set_token(member, source);
        self
    }
}

impl SequencerApi for SequencerClient {
    fn send(&self, request: SendRequest) -> impl Future<Output = Result<Sent, SendError>> + Send {
        send::send(self.endpoints.clone(), request)
    }

    fn subscribe(&self, member: &str, after: Option<i64>) -> EventStream {
        subscribe::subscribe(self.endpoints.clone(), member.to_string(), after)
    }

    fn acknowledge(&self, member: &str, timestamp: i64) -> impl Future<Output = Result<(), AcknowledgeError>> + Send {
        send::acknowledge(self.endpoints.clone(), member.to_string(), timestamp)
    }
}
