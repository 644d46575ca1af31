//! Recovery truncation: before a node goes online on an index, it removes everything that
//! index wrote past its last watermark — events, recipient rows, payloads and message-id
//! claims — in one transaction. Nothing past a watermark was ever visible to a reader, and
//! leaving recipient rows behind (as Canton does) can make readers skip real events.

use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use syncline_schema::tables::{
    sequencer_event_recipients as r, sequencer_events as e, sequencer_message_ids as m, sequencer_payloads as p,
    sequencer_watermarks as w,
};

use crate::error::{DieselContext, Result};

/// What a truncation removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Truncation {
    /// The watermark everything above was removed from (`None`: the index never had one, so
    /// all its rows went).
    pub watermark: Option<i64>,
    /// Events removed.
    pub events: usize,
    /// Recipient rows removed.
    pub recipients: usize,
    /// Payloads removed.
    pub payloads: usize,
    /// Message-id claims removed (those sends may be retried).
    pub message_ids: usize,
}

/// Mark index `index` offline and delete its rows past its watermark, in one transaction.
/// The caller must hold the index lock, so that no writer of this index is running.
pub async fn truncate(conn: &mut AsyncPgConnection, index: u32) -> Result<Truncation> {
    let idx = index as i16;
    let t = conn
        .transaction(async |c| {
            let watermark: Option<i64> = diesel::update(w::table.filter(w::node_index.eq(index as i32)))
                .set(w::online.eq(false))
                .returning(w::watermark_ts)
                .get_result(c)
                .await
                .optional()?;
            let above = watermark.unwrap_or(i64::MIN);
            let events = diesel::delete(e::table.filter(e::node_index.eq(idx).and(e::ts.gt(above))))
                .execute(c)
                .await?;
            let recipients = diesel::delete(r::table.filter(r::node_index.eq(idx).and(r::ts.gt(above))))
                .execute(c)
                .await?;
            let payloads = diesel::delete(p::table.filter(p::node_index.eq(idx).and(p::ts.gt(above))))
                .execute(c)
                .await?;
            let message_ids = diesel::delete(m::table.filter(m::node_index.eq(idx).and(m::ts.gt(above))))
                .execute(c)
                .await?;
            Ok::<_, diesel::result::Error>(Truncation { watermark, events, recipients, payloads, message_ids })
        })
        .await
        .during("truncating past the watermark")?;
    if t.events + t.recipients + t.payloads + t.message_ids > 0 {
        tracing::info!(index, ?t, "removed rows written past the watermark");
    }
    Ok(t)
}
