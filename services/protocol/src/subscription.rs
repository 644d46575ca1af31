//! The subscription of a protocol node (mediator, participant) to its events: resumes after
//! the last event it delivered, and waits while the node's member is not registered yet (a
//! node started before its bootstrap) instead of failing, with one warning.

use std::time::Duration;

use futures_util::StreamExt;
use syncline_proto::sequencer::Event;
use syncline_sequencer_client::{EventStream, SequencerApi, SubscribeError};

/// Pause between subscription attempts while the member is not registered.
pub const UNREGISTERED_RETRY: Duration = Duration::from_secs(1);

/// Why the subscription gave no event.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    /// It failed for good (broken chain, refused for another reason than an unknown member).
    #[error("subscription to the sequencers failed")]
    Failed(#[from] SubscribeError),
    /// It ended without an error (it never should).
    #[error("the subscription to the sequencers ended")]
    Ended,
}

/// A member's events after a position.
pub struct Subscription<S> {
    sequencer: S,
    member: String,
    /// What to do while the member is unknown (for the warning).
    hint: String,
    last: Option<i64>,
    events: EventStream,
    warned: bool,
    /// When to subscribe again after the member was unknown: kept across calls, so that a
    /// `next` cancelled while it waits (the caller's `select!` took another branch) resumes
    /// the wait instead of reading the ended stream.
    resubscribe_at: Option<tokio::time::Instant>,
}

impl<S: SequencerApi> Subscription<S> {
    /// `member`'s events after `after` (`None`: from its start). `hint` says what makes the
    /// member known (e.g. "run `syncline admin bootstrap --mediator m`").
    pub fn new(sequencer: S, member: &str, after: Option<i64>, hint: impl Into<String>) -> Self {
        let events = sequencer.subscribe(member, after);
        Subscription {
            sequencer,
            member: member.into(),
            hint: hint.into(),
            last: after,
            events,
            warned: false,
            resubscribe_at: None,
        }
    }

    /// The next event, waiting as long as the member is not registered. Cancel-safe.
    pub async fn next(&mut self) -> Result<Event, SubscriptionError> {
        loop {
            if let Some(at) = self.resubscribe_at {
                tokio::time::sleep_until(at).await;
                self.events = self.sequencer.subscribe(&self.member, self.last);
                self.resubscribe_at = None;
            }
            match self.events.next().await {
                Some(Ok(event)) => {
                    self.last = Some(event.timestamp);
                    return Ok(event);
                }
                Some(Err(e)) if e.is_unknown_member() => {
                    if !self.warned {
                        tracing::warn!(member = %self.member, "the member is not registered at the sequencers yet, or its token is not there yet; waiting ({}): {e}", self.hint);
                        self.warned = true;
                    }
                    self.resubscribe_at = Some(tokio::time::Instant::now() + UNREGISTERED_RETRY);
                }
                Some(Err(e)) => return Err(e.into()),
                None => return Err(SubscriptionError::Ended),
            }
        }
    }
}
