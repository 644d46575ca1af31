//! Subscriptions: each member gets its events in timestamp order, never past the safe
//! watermark, each carrying the member's previous event timestamp. A subscription task
//! re-reads when notified of a watermark advance (or after the polling interval) and pushes
//! into a queue bounded in bytes, so a slow subscriber only slows itself and costs the node
//! a bounded amount of memory. A stream the server ends always ends with an error status.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use crate::store::error::StoreError;
use crate::store::events::{self, Cursor, ErrorCode, EventError, EventKind, Page, StoredEvent};
use crate::store::pruning::lower_bound;
use crate::store::timestamps::now_micros;
use futures_util::Stream;
use prost::Message;
use scoped_futures::ScopedFutureExt;
use syncline_proto::sequencer::{Batch, DeliverError, DeliverErrorCode, Event, SubscribeResponse};
use syncline_sequencer_client::BROADCAST_RECIPIENT;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tracing::Instrument;

use crate::error::{Result, SequencerError};
use crate::health::Changes;
use crate::pruning;
use crate::store::members::Member;
use crate::Inner;

/// Most events queued per subscription, whatever their size (the byte budget is the other bound).
const BUFFER: usize = 256;

/// A response in a subscription's queue, holding its share of the byte budget until the
/// client's stream takes it.
struct Queued {
    item: Result<SubscribeResponse, Status>,
    _bytes: Option<OwnedSemaphorePermit>,
}

/// The stream a subscriber reads. If the reader stops without saying why (it cannot, short
/// of a bug), the stream still ends with UNAVAILABLE: a server-side end is never an OK.
pub struct Subscription {
    rx: mpsc::Receiver<Queued>,
    ended: bool,
}

impl Stream for Subscription {
    type Item = Result<SubscribeResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let next = std::task::ready!(self.rx.poll_recv(cx));
        Poll::Ready(Some(match next {
            // The permit drops here: the transport holds at most this one event further.
            Some(q) => {
                self.ended = q.item.is_err();
                q.item
            }
            None => {
                self.ended = true;
                Err(SequencerError::SubscriptionEnded.into())
            }
        }))
    }
}

/// How the node's subscription reads fare, for health.
#[derive(Debug)]
pub struct ReaderStatus {
    /// The last failed read (when, why) unless a read succeeded after it.
    failing: Mutex<Option<(Instant, String)>>,
    changes: Arc<Changes>,
}

impl ReaderStatus {
    pub(crate) fn new(changes: Arc<Changes>) -> Self {
        ReaderStatus { failing: Mutex::new(None), changes }
    }

    fn succeeded(&self) {
        if self.failing.lock().unwrap().take().is_some() {
            self.changes.changed();
        }
    }

    fn failed(&self, why: String) {
        let mut f = self.failing.lock().unwrap();
        let slot = f.get_or_insert((Instant::now(), String::new()));
        if slot.1 != why {
            slot.1 = why;
            drop(f);
            self.changes.changed();
        }
    }

    /// Since when reads fail (no read succeeded since), and the last error.
    pub fn failing(&self) -> Option<(Instant, String)> {
        self.failing.lock().unwrap().clone()
    }
}

/// A taken subscription slot; gives it back when dropped.
struct Slot {
    inner: Arc<Inner>,
    gauge: metrics::Gauge,
}

impl Slot {
    /// Take a slot, or refuse when the node serves its maximum already.
    fn take(inner: &Arc<Inner>) -> Result<Slot> {
        let max = inner.settings.max_subscriptions;
        inner
            .subscriptions
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .map_err(|_| SequencerError::TooManySubscriptions { node: inner.settings.name.clone(), max })?;
        let gauge = metrics::gauge!("syncline_sequencer_subscriptions", "node" => inner.settings.name.clone());
        gauge.increment(1.0);
        Ok(Slot { inner: inner.clone(), gauge })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.inner.subscriptions.fetch_sub(1, Ordering::AcqRel);
        self.gauge.decrement(1.0);
    }
}

/// Start streaming `member`'s events after `after` (default: its registration).
pub(crate) async fn subscribe(inner: Arc<Inner>, member: Member, after: Option<i64>) -> Result<Subscription> {
    let slot = Slot::take(&inner)?;
    // A member's own events start after its registration; broadcasts (which pruning keeps)
    // after `after`, or from the very first one for a subscription from the member's start.
    let cursor = Cursor { member: member.id, after: after.unwrap_or(i64::MIN), own_after: member.registered_ts };
    let lower_bound =
        inner.db.run("reading the lower bound", |c| async move { lower_bound(c).await }.scope_boxed()).await?;
    if let Some(lower_bound) = lower_bound {
        if cursor.own() < lower_bound {
            return Err(SequencerError::Pruned { requested: cursor.own(), lower_bound });
        }
    }
    let previous = pruning::previous_event(&inner.db, &member, cursor.after).await?;
    let (tx, rx) = mpsc::channel(BUFFER);
    let span = tracing::info_span!("subscription", node = %inner.settings.name, member = %member.member);
    tokio::spawn(
        async move {
            if let Err(e) = stream(&slot.inner, &member, cursor, previous, &tx).await {
                let status = Status::from(e);
                tracing::info!(code = ?status.code(), message = status.message(), "subscription ended by the server");
                // A full queue means a client that does not read; it gets the end-of-stream
                // UNAVAILABLE of `Subscription` once it drains the queue.
                let _ = tx.try_send(Queued { item: Err(status), _bytes: None });
            }
            drop(slot);
        }
        .instrument(span),
    );
    Ok(Subscription { rx, ended: false })
}

/// Page through events until the client goes away (`Ok`) or the server cannot go on (`Err`).
async fn stream(
    inner: &Inner,
    member: &Member,
    mut cursor: Cursor,
    mut previous: Option<i64>,
    tx: &mpsc::Sender<Queued>,
) -> Result<()> {
    let node = &inner.settings.name;
    let mut wake = inner.signals.changed.clone();
    let budget = inner.settings.subscription_buffer_bytes.clamp(1, u32::MAX as usize);
    let queue_bytes = Arc::new(Semaphore::new(budget));
    let latency = metrics::histogram!("syncline_sequencer_read_latency_seconds", "node" => node.clone());
    let reads = metrics::counter!("syncline_sequencer_reads_total", "node" => node.clone());
    let shutting_down = || SequencerError::ShuttingDown { node: node.clone() };
    let spacing = inner.settings.read_spacing;
    let mut last_read: Option<tokio::time::Instant> = None;
    let mut backlog = false;
    loop {
        // Caught up: at most one read per spacing, so notifications coalesce under load.
        if let Some(at) = last_read.filter(|_| !backlog && !spacing.is_zero()) {
            tokio::select! {
                _ = inner.cancel.cancelled() => return Err(shutting_down()),
                _ = tx.closed() => return Ok(()),
                _ = tokio::time::sleep_until(at + spacing) => {}
            }
        }
        last_read = Some(tokio::time::Instant::now());
        reads.increment(1);
        wake.borrow_and_update();
        let (page, limit) = match read_page(inner, cursor).await {
            Ok(read) => {
                inner.readers.succeeded();
                read
            }
            Err(source) => {
                inner.readers.failed(source.to_string());
                return Err(SequencerError::ReadFailed { node: node.clone(), source });
            }
        };
        // Pruned past the cursor while this stream was behind: the page may lack events.
        if let Some(lower_bound) = page.lower_bound.filter(|&b| cursor.own() < b) {
            return Err(SequencerError::PrunedWhileBehind { cursor: cursor.own(), lower_bound });
        }
        // A full (or cut) page: more may follow at once.
        let full = page.events.len() as u32 >= limit;
        for ev in page.events {
            let ts = ev.ts;
            let response = SubscribeResponse { event: Some(to_proto(inner, member, ev, previous).await?) };
            // An event larger than the whole budget takes all of it, so it travels alone.
            let bytes = response.encoded_len().clamp(1, budget) as u32;
            let permit = tokio::select! {
                p = queue_bytes.clone().acquire_many_owned(bytes) => p.expect("the semaphore is never closed"),
                _ = tx.closed() => return Ok(()),
                _ = inner.cancel.cancelled() => return Err(shutting_down()),
            };
            if tx.send(Queued { item: Ok(response), _bytes: Some(permit) }).await.is_err() {
                return Ok(()); // client gone
            }
            latency.record((now_micros() - ts).max(0) as f64 / 1e6);
            previous = Some(ts);
        }
        cursor.after = page.next_cursor;
        backlog = full;
        if full {
            continue;
        }
        // Sleep until this member may have news below the bound, or the polling interval
        // passes (the fallback if a notification was missed).
        let deadline = tokio::time::Instant::now() + inner.settings.polling_interval;
        loop {
            tokio::select! {
                _ = inner.cancel.cancelled() => return Err(shutting_down()),
                _ = tx.closed() => return Ok(()),
                r = wake.changed() => if r.is_err() {
                    // Only at shutdown: the listener task owns the sender and reconnects by itself.
                    return Err(SequencerError::NotFollowing { node: node.clone() });
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
            if inner.signals.state.read().unwrap().may_have_news(member.id, cursor.after) {
                break;
            }
        }
    }
}

/// Read the next page after `cursor`: at most `read_batch_size` events and, when that many
/// could exceed the byte budget, only as many as fit in it (at least one). Returns the page
/// (with the pruning lower bound of its snapshot) and the limit it was read with.
async fn read_page(inner: &Inner, cursor: Cursor) -> Result<(Page, u32), StoreError> {
    let batch = inner.settings.read_batch_size.max(1);
    let budget = inner.settings.subscription_buffer_bytes as u64;
    inner
        .db
        .run("reading events", |c| async move { events::read_within(c, cursor, batch, budget).await }.scope_boxed())
        .await
}

/// Shape a stored event for `member`: its envelopes only, the message id only for the sender.
async fn to_proto(inner: &Inner, member: &Member, ev: StoredEvent, previous: Option<i64>) -> Result<Event> {
    let sender_id = ev.sender.unwrap_or_default();
    let sender = inner.members.name_of(sender_id).await?;
    let is_sender = sender_id == member.id;
    let mut event = Event {
        timestamp: ev.ts,
        previous_timestamp: previous,
        sender,
        message_id: if is_sender { ev.message_id } else { None },
        envelopes: Vec::new(),
        error: None,
    };
    match ev.kind {
        EventKind::Deliver => {
            let batch = Batch::decode(ev.payload.as_deref().unwrap_or_default())
                .map_err(|e| SequencerError::Undecodable { ts: ev.ts, reason: e.to_string() })?;
            event.envelopes = batch
                .envelopes
                .into_iter()
                .filter(|env| env.recipients.iter().any(|r| r == &member.member || r == BROADCAST_RECIPIENT))
                .collect();
        }
        EventKind::Error => {
            let error = ev.error.unwrap_or(EventError { code: ErrorCode::Unspecified, message: String::new() });
            let error_code = match error.code {
                ErrorCode::Unspecified => DeliverErrorCode::Unspecified,
                ErrorCode::UnknownRecipients => DeliverErrorCode::UnknownRecipients,
            };
            event.error = Some(DeliverError {
                code: error.code.as_str().to_string(),
                message: error.message,
                error_code: error_code.into(),
            });
        }
    }
    Ok(event)
}
