//! Wake-ups for subscriptions: one `LISTEN` session per process turns watermark
//! notifications into a counter on a watch channel, so readers re-read as soon as new
//! events may be visible instead of polling.

use std::time::Duration;

use diesel_async::RunQueryDsl;
use futures_util::StreamExt;
use syncline_coordination::db::{self, SessionKind};
use syncline_coordination::error::DieselContext;
use syncline_coordination::DbConfig;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The channel the writer's watermark trigger notifies on.
pub const CHANNEL: &str = "syncline_watermarks";

/// Listen until cancelled, reconnecting after errors; every notification (and every
/// reconnect, which may have missed some) bumps `tx`.
pub(crate) async fn listen(cfg: DbConfig, tx: watch::Sender<u64>, cancel: CancellationToken) {
    let mut backoff = Duration::from_millis(50);
    while !cancel.is_cancelled() {
        match session(&cfg, &tx, &cancel).await {
            Ok(()) => return,
            Err(e) => tracing::debug!(%e, "notification session ended; reconnecting"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

async fn session(
    cfg: &DbConfig,
    tx: &watch::Sender<u64>,
    cancel: &CancellationToken,
) -> Result<(), syncline_coordination::CoordError> {
    let mut conn = db::connect(cfg, SessionKind::Lock).await?;
    diesel::sql_query(format!("listen {CHANNEL}")).execute(&mut conn).await.during("listening")?;
    tx.send_modify(|n| *n += 1);
    let mut stream = std::pin::pin!(conn.notifications_stream());
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            n = stream.next() => match n {
                Some(Ok(_)) => tx.send_modify(|n| *n += 1),
                Some(Err(e)) => return Err(syncline_coordination::CoordError::from_diesel("listening", e)),
                None => return Err(syncline_coordination::CoordError::from_connection("listening", "connection closed")),
            },
        }
    }
}
