//! The periodic check every sequencer runs: knock offline the nodes whose index lock is no
//! longer held (crashed) or whose watermark is too old (stalled), sweep dead nodes' rows past
//! their watermarks, expire message-id claims
//! whose max-sequencing-time is long past, and publish the safe-watermark lag.

use std::time::Duration;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use scoped_futures::ScopedFutureExt;
use syncline_coordination::error::DieselContext;
use syncline_coordination::timestamps::now_micros;
use syncline_coordination::{offline, recovery, watermarks, Db};
use syncline_schema::tables::sequencer_message_ids as m;
use tokio_util::sync::CancellationToken;

use crate::settings::SequencerSettings;

/// Claims are kept this long past their max-sequencing-time, against clock skew.
const CLAIM_GRACE_MICROS: i64 = 60_000_000;

/// Run until cancelled.
pub(crate) async fn run(db: Db, settings: SequencerSettings, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(settings.online_check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    // Every ~30 s: sweep nodes that died while nobody was checking, and expire claims.
    let every = (Duration::from_secs(30).as_millis() / settings.online_check_interval.as_millis().max(1)).max(1) as u64;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
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
                    watermarks::safe(c).await
                }
                .scope_boxed()
            })
            .await;
        match r {
            Ok(safe) => {
                if let Some(safe) = safe {
                    metrics::gauge!("syncline_sequencer_safe_watermark_lag_seconds", "node" => settings.name.clone())
                        .set((now_micros() - safe) as f64 / 1e6);
                }
            }
            Err(e) => tracing::debug!(%e, "liveness check failed"),
        }
        // Drop claims nobody can retry any more.
        if sweep_due {
            let cutoff = now_micros() - CLAIM_GRACE_MICROS;
            let r = db
                .run("expiring message-id claims", |c| {
                    async move {
                        diesel::delete(m::table.filter(m::max_sequencing_ts.lt(cutoff)))
                            .execute(c)
                            .await
                            .during("expiring message-id claims")
                    }
                    .scope_boxed()
                })
                .await;
            if let Err(e) = r {
                tracing::debug!(%e, "claim expiry failed");
            }
        }
    }
}
