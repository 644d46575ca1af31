//! Subscriptions that resume after their last event on another endpoint when a stream fails,
//! and check the `previous_timestamp` chain.

use std::sync::Arc;

use syncline_proto::sequencer::sequencer_service_client::SequencerServiceClient;
use syncline_proto::sequencer::{Event, SubscribeRequest, SubscribeResponse};
use tokio::sync::watch;
use tonic::Streaming;
use tracing::Instrument;

use crate::endpoints::{Endpoint, Endpoints, Pick};
use crate::error::{classify, Failure, SubscribeError};
use crate::EventStream;

/// `member`'s events after `after`, resumed across stream failures and endpoints.
pub(crate) fn subscribe(endpoints: Endpoints, member: String, after: Option<i64>) -> EventStream {
    let span = tracing::info_span!("subscription", %member);
    let state =
        State { changes: endpoints.changes(), endpoints, member, after, last: None, current: None, done: false, span };
    Box::pin(futures_util::stream::unfold(state, |mut state| async move {
        let span = state.span.clone();
        let item = state.next().instrument(span).await?;
        Some((item, state))
    }))
}

struct State {
    endpoints: Endpoints,
    changes: watch::Receiver<u64>,
    member: String,
    /// Where the subscription started.
    after: Option<i64>,
    /// The last event delivered.
    last: Option<i64>,
    current: Option<(Arc<Endpoint>, Streaming<SubscribeResponse>)>,
    /// An error was delivered: the stream is over.
    done: bool,
    span: tracing::Span,
}

enum Received {
    Message(Result<Option<SubscribeResponse>, tonic::Status>),
    ListChanged,
}

impl State {
    async fn next(&mut self) -> Option<Result<Event, SubscribeError>> {
        if self.done {
            return None;
        }
        loop {
            let Some((endpoint, stream)) = self.current.as_mut() else {
                if let Err(e) = self.open().await {
                    self.done = true;
                    return Some(Err(e));
                }
                continue;
            };
            let endpoint = endpoint.clone();
            let received = tokio::select! {
                m = stream.message() => Received::Message(m),
                _ = self.changes.changed() => Received::ListChanged,
            };
            let cause = match received {
                Received::ListChanged if self.endpoints.contains(&endpoint) => continue,
                Received::ListChanged => {
                    tracing::info!(endpoint = endpoint.url(), "endpoint removed from the list; resuming elsewhere");
                    self.current = None;
                    continue;
                }
                Received::Message(Ok(Some(SubscribeResponse { event: Some(event) }))) => {
                    if let Err(e) = self.check(&event, endpoint.url()) {
                        self.done = true;
                        return Some(Err(e));
                    }
                    self.last = Some(event.timestamp);
                    return Some(Ok(event));
                }
                Received::Message(Ok(Some(SubscribeResponse { event: None }))) => {
                    "a response without an event".to_string()
                }
                // The server never ends a subscription with OK; a proxy might.
                Received::Message(Ok(None)) => "the stream ended without an error".to_string(),
                Received::Message(Err(status)) => match classify(&status, true) {
                    Failure::Retry(cause) => cause,
                    Failure::Final(code, message) => {
                        self.done = true;
                        let (member, endpoint) = (self.member.clone(), endpoint.url().to_string());
                        return Some(Err(SubscribeError::Refused { member, endpoint, code, message }));
                    }
                },
            };
            tracing::info!(endpoint = endpoint.url(), %cause, after = ?self.last.or(self.after), "subscription stream failed; resuming");
            endpoint.failed(self.endpoints.config(), &cause);
            self.current = None;
        }
    }

    /// Subscribe at the next endpoint after the last event; an endpoint that does not answer
    /// is marked failed (the caller tries the next); a final refusal is an error.
    async fn open(&mut self) -> Result<(), SubscribeError> {
        let config = self.endpoints.config().clone();
        let Pick { endpoint, wait } = self.endpoints.next();
        tokio::time::sleep(wait).await;
        let after = self.last.or(self.after);
        let mut client =
            SequencerServiceClient::new(endpoint.channel()).max_decoding_message_size(config.max_decoding_message_size);
        let request = SubscribeRequest { member: self.member.clone(), after };
        let cause = match tokio::time::timeout(
            config.attempt_timeout,
            client.subscribe(self.endpoints.tokens().request(&self.member, request)),
        )
        .await
        {
            Ok(Ok(response)) => {
                tracing::debug!(endpoint = endpoint.url(), ?after, "subscribed");
                endpoint.succeeded();
                self.current = Some((endpoint, response.into_inner()));
                return Ok(());
            }
            Ok(Err(status)) => match classify(&status, true) {
                Failure::Retry(cause) => cause,
                Failure::Final(code, message) => {
                    let (member, endpoint) = (self.member.clone(), endpoint.url().to_string());
                    return Err(SubscribeError::Refused { member, endpoint, code, message });
                }
            },
            Err(_) => format!("no answer within {:?}", config.attempt_timeout),
        };
        tracing::debug!(endpoint = endpoint.url(), %cause, "could not subscribe; trying the next endpoint");
        endpoint.failed(&config, &cause);
        Ok(())
    }

    /// The event must follow the last one delivered: its `previous_timestamp` names it. The
    /// first event can only be checked against `after` loosely (`after` need not be an event).
    fn check(&self, event: &Event, endpoint: &str) -> Result<(), SubscribeError> {
        let ok = match self.last {
            Some(last) => event.previous_timestamp == Some(last) && event.timestamp > last,
            None => {
                self.after.is_none_or(|a| event.timestamp > a)
                    && event.previous_timestamp.is_none_or(|p| p < event.timestamp && self.after.is_none_or(|a| p <= a))
            }
        };
        if ok {
            return Ok(());
        }
        Err(SubscribeError::ChainBroken {
            member: self.member.clone(),
            endpoint: endpoint.to_string(),
            timestamp: event.timestamp,
            previous: event.previous_timestamp,
            expected: self.last.or(self.after),
        })
    }
}
