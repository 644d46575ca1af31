//! The check every sequencer runs periodically, and at once when a peer's index lock is
//! released (`peer_watch`): knock offline the nodes whose index lock is no longer held
//! (crashed) or whose watermark is too old (stalled), sweep dead nodes' rows past
//! their watermarks, expire message-id claims
//! whose max-sequencing-time is long past, and publish the safe-watermark lag.

use std::sync::Arc;
use std::time::Duration;

use crate::store::timestamps::now_micros;
use crate::store::{events, offline, recovery, watermarks};
use scoped_futures::ScopedFutureExt;
use syncline_coordination::{Db, DbConfig};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::lanes::WriterShared;
use crate::peer_watch::PeerWatch;
use crate::settings::SequencerSettings;
use crate::store::error::StoreError;

/// The safe-watermark lag. When the watermark cannot be read (query failed, or no node online)
/// the lag keeps growing from the last one known, so that a lag alert fires exactly then.
struct Lag {
    last_safe: i64,
}

impl Lag {
    /// Before the first reading, the lag counts from `started`.
    fn new(started: i64) -> Self {
        Lag { last_safe: started }
    }

    /// The lag in seconds at `now`, given this check's safe watermark (if any).
    fn observe(&mut self, safe: Option<i64>, now: i64) -> f64 {
        if let Some(safe) = safe {
            self.last_safe = safe;
        }
        (now - self.last_safe).max(0) as f64 / 1e6
    }
}

/// Run until cancelled; `writer` tells this node's own indexes, one per lane (not watched).
pub(crate) async fn run(
    db: Db,
    db_config: DbConfig,
    settings: SequencerSettings,
    writer: Arc<WriterShared>,
    cancel: CancellationToken,
) {
    let wake = Arc::new(Notify::new());
    let mut peers = PeerWatch::new(db_config, wake.clone(), cancel.child_token());
    let mut tick = tokio::time::interval(settings.online_check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    let mut lag = Lag::new(now_micros());
    let lag_gauge = metrics::gauge!("syncline_sequencer_safe_watermark_lag_seconds", "node" => settings.name.clone());
    // Every ~30 s: sweep nodes that died while nobody was checking, and expire claims.
    let every = (Duration::from_secs(30).as_millis() / settings.online_check_interval.as_millis().max(1)).max(1) as u64;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
            _ = wake.notified() => {}
        }
        n += 1;
        let offline_duration = settings.offline_duration;
        let sweep_due = n.is_multiple_of(every);
        let r = db
            .run("checking sequencer liveness", |c| {
                async move {
                    let knocked = offline::mark_offline(c, now_micros(), offline_duration).await?;
                    // A dead node's uncovered claims must not turn retries elsewhere into
                    // "duplicates" of events nobody will ever read.
                    if !knocked.is_empty() || sweep_due {
                        recovery::sweep_dead(c).await?;
                    }
                    Ok::<_, StoreError>((watermarks::safe(c).await?, watermarks::online_indexes(c).await?))
                }
                .scope_boxed()
            })
            .await;
        let safe = match r {
            Ok((safe, online)) => {
                peers.update(&online, &writer.node_indexes());
                safe
            }
            Err(e) => {
                tracing::debug!(%e, "liveness check failed");
                None
            }
        };
        lag_gauge.set(lag.observe(safe, now_micros()));
        // Drop claims nobody can retry any more.
        if sweep_due {
            let cutoff = now_micros() - events::CLAIM_GRACE_MICROS;
            let r = db
                .run("expiring message-id claims", |c| {
                    async move { events::expire_claims(c, cutoff).await }.scope_boxed()
                })
                .await;
            if let Err(e) = r {
                tracing::debug!(%e, "claim expiry failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Lag;

    #[test]
    fn the_lag_keeps_growing_while_the_safe_watermark_is_unknown() {
        let mut lag = Lag::new(0);
        assert_eq!(lag.observe(None, 2_000_000), 2.0, "never read: counts from the start");
        assert_eq!(lag.observe(Some(9_000_000), 10_000_000), 1.0);
        // Query failed or no node online: the lag grows from the last known watermark.
        assert_eq!(lag.observe(None, 15_000_000), 6.0);
        assert_eq!(lag.observe(None, 20_000_000), 11.0);
        assert_eq!(lag.observe(Some(19_900_000), 20_000_000), 0.1);
    }
}
