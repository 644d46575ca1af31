//! Subscriptions: each member gets its events in timestamp order, never past the safe
//! watermark, each carrying the member's previous event timestamp. A subscription task
//! re-reads when notified of a watermark advance (or after the polling interval) and pushes
//! into a bounded channel, so a slow subscriber only slows itself.

use std::sync::Arc;

use diesel::{OptionalExtension, QueryDsl};
use diesel_async::RunQueryDsl;
use prost::Message;
use scoped_futures::ScopedFutureExt;
use syncline_coordination::events::{self, EventKind, StoredEvent};
use syncline_coordination::error::DieselContext;
use syncline_coordination::timestamps::now_micros;
use syncline_proto::sequencer::{Batch, DeliverError, Event, SubscribeResponse};
use syncline_schema::tables::sequencer_lower_bound as lb;
use tokio::sync::mpsc;
use tonic::Status;
use tracing::Instrument;

use crate::error::{Result, SequencerError};
use crate::members::Member;
use crate::pruning;
use crate::Inner;

/// Events buffered per subscription before the reader waits for the client.
const BUFFER: usize = 256;

/// Start streaming `member`'s events after `after` (default: its registration).
pub(crate) async fn subscribe(
    inner: Arc<Inner>,
    member: Member,
    after: Option<i64>,
) -> Result<mpsc::Receiver<Result<SubscribeResponse, Status>>> {
    let cursor = after.unwrap_or(member.registered_ts).max(member.registered_ts);
    let lower_bound: Option<i64> = inner
        .db
        .run("reading the lower bound", |c| {
            async move { lb::table.select(lb::ts).first(c).await.optional().during("reading the lower bound") }.scope_boxed()
        })
        .await?;
    if let Some(lower_bound) = lower_bound {
        if cursor < lower_bound {
            return Err(SequencerError::Pruned { requested: cursor, lower_bound });
        }
    }
    let previous = pruning::previous_event(&inner.db, &member, cursor).await?;
    let (tx, rx) = mpsc::channel(BUFFER);
    let span = tracing::info_span!("subscription", node = %inner.settings.name, member = %member.member);
    tokio::spawn(
        async move {
            let gauge = metrics::gauge!("syncline_sequencer_subscriptions", "node" => inner.settings.name.clone());
            gauge.increment(1.0);
            inner.subscriptions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Err(status) = stream(&inner, &member, cursor, previous, &tx).await {
                let _ = tx.send(Err(status)).await;
            }
            inner.subscriptions.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            gauge.decrement(1.0);
        }
        .instrument(span),
    );
    Ok(rx)
}

/// Page through events until the client goes away or the node shuts down.
async fn stream(
    inner: &Inner,
    member: &Member,
    mut cursor: i64,
    mut previous: Option<i64>,
    tx: &mpsc::Sender<Result<SubscribeResponse, Status>>,
) -> Result<(), Status> {
    let mut wake = inner.signals.changed.clone();
    let limit = inner.settings.read_batch_size;
    let latency = metrics::histogram!("syncline_sequencer_read_latency_seconds", "node" => inner.settings.name.clone());
    loop {
        wake.borrow_and_update();
        let id = member.id;
        let page = inner
            .db
            .run("reading events", |c| async move { events::read(c, id, cursor, limit).await }.scope_boxed())
            .await
            .map_err(|e| Status::unavailable(format!("sequencer {} cannot read events: {e}", inner.settings.name)))?;
        let full = page.events.len() as u32 >= limit;
        for ev in page.events {
            let ts = ev.ts;
            let event = to_proto(inner, member, ev, previous).await?;
            if tx.send(Ok(SubscribeResponse { event: Some(event) })).await.is_err() {
                return Ok(()); // client gone
            }
            latency.record((now_micros() - ts).max(0) as f64 / 1e6);
            previous = Some(ts);
        }
        cursor = page.next_cursor;
        if full {
            continue;
        }
        // Sleep until this member may have news below the bound, or the polling interval
        // passes (the fallback if a notification was missed).
        let deadline = tokio::time::Instant::now() + inner.settings.polling_interval;
        loop {
            tokio::select! {
                _ = inner.cancel.cancelled() => return Err(Status::unavailable(format!("sequencer {} is shutting down", inner.settings.name))),
                _ = tx.closed() => return Ok(()),
                r = wake.changed() => if r.is_err() { return Ok(()) },
                _ = tokio::time::sleep_until(deadline) => break,
            }
            if inner.signals.state.read().unwrap().may_have_news(member.id, cursor) {
                break;
            }
        }
    }
}

/// Shape a stored event for `member`: its envelopes only, the message id only for the sender.
async fn to_proto(inner: &Inner, member: &Member, ev: StoredEvent, previous: Option<i64>) -> Result<Event, Status> {
    let sender_id = ev.sender.unwrap_or_default();
    let sender = inner.members.name_of(sender_id).await.map_err(Status::from)?;
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
                .map_err(|e| Status::data_loss(format!("event {} has an undecodable payload: {e}", ev.ts)))?;
            event.envelopes = batch
                .envelopes
                .into_iter()
                .filter(|env| env.recipients.iter().any(|r| r == &member.member))
                .collect();
        }
        EventKind::Error => {
            let text = ev.error.unwrap_or_default();
            let (code, message) = text.split_once(": ").unwrap_or(("ERROR", text.as_str()));
            event.error = Some(DeliverError { code: code.to_string(), message: message.to_string() });
        }
    }
    Ok(event)
}
