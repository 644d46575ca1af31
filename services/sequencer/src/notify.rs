//! Wake-ups for subscriptions. One `LISTEN` session per process follows two channels:
//! `syncline_events` (which members got events, up to which timestamp) and
//! `syncline_watermarks` (a watermark moved: "<index>|<watermark>"; a node went online or
//! offline: "<index>"). It keeps the visibility bound (the cap the reads use) and, per member,
//! the newest event timestamp; a subscription re-reads only when it may have something new
//! below the bound, so idle subscriptions cost nothing however often keep-alives move the
//! watermarks. The bound is computed from the watermarks as the notifications move them; the
//! table is read again only when a node goes online or offline. Reads apply the cap themselves,
//! so a bound that is ahead costs a read, never an event out of order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::store::error::StoreError;
use crate::store::events::{self, BROADCAST};
use crate::store::watermarks::{self, Watermark};
use diesel_async::SimpleAsyncConnection;
use futures_util::{FutureExt, StreamExt};
use syncline_coordination::db::{self, SessionKind};
use syncline_coordination::error::DieselContext;
use syncline_coordination::{DbConfig, DbError};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::health::Changes;

/// Channel of the watermark trigger.
pub const WATERMARKS: &str = "syncline_watermarks";
/// Channel of the events trigger.
pub const EVENTS: &str = "syncline_events";

/// What readers need to decide whether to read.
#[derive(Debug, Default)]
pub(crate) struct Visibility {
    /// The read bound: min over online watermarks, or max over all with none online.
    cap: i64,
    /// Newest event per member id (BROADCAST for broadcasts).
    newest: HashMap<i32, i64>,
    /// Newest event of any member, for notifications that did not list members and for
    /// what happened while not listening.
    newest_any: i64,
}

impl Visibility {
    /// Nothing known: every check says "read".
    fn unknown() -> Self {
        Visibility { cap: i64::MAX, newest: HashMap::new(), newest_any: i64::MAX }
    }

    /// True when `member` may have events in `(cursor, cap]`.
    pub fn may_have_news(&self, member: i32, cursor: i64) -> bool {
        let newest = [self.newest.get(&member), self.newest.get(&BROADCAST), Some(&self.newest_any)]
            .into_iter()
            .flatten()
            .copied()
            .max()
            .unwrap_or(i64::MIN);
        newest > cursor && self.cap > cursor
    }
}

/// Shared visibility state plus a counter bumped on every change.
#[derive(Clone)]
pub(crate) struct Signals {
    pub state: Arc<RwLock<Visibility>>,
    pub changed: watch::Receiver<u64>,
    pub listener: Arc<ListenerStatus>,
}

/// Whether the `LISTEN` session is up, for health: since when, and why not.
#[derive(Debug)]
pub struct ListenerStatus {
    inner: Mutex<(bool, Instant, String)>,
    changes: Arc<Changes>,
}

impl ListenerStatus {
    fn new(changes: Arc<Changes>) -> Self {
        ListenerStatus { inner: Mutex::new((false, Instant::now(), "connecting".into())), changes }
    }

    fn set(&self, listening: bool, why: String) {
        let mut st = self.inner.lock().unwrap();
        let changed = st.0 != listening || st.2 != why;
        if st.0 != listening {
            st.1 = Instant::now();
        }
        st.0 = listening;
        st.2 = why;
        drop(st);
        if changed {
            self.changes.changed();
        }
    }

    /// `None` while listening; otherwise for how long it has not been, and the last reason.
    pub fn down_for(&self) -> Option<(Duration, String)> {
        let st = self.inner.lock().unwrap();
        (!st.0).then(|| (st.1.elapsed(), st.2.clone()))
    }
}

/// Start following notifications until cancelled, reconnecting after errors.
pub(crate) fn spawn(
    cfg: DbConfig,
    cancel: CancellationToken,
    changes: Arc<Changes>,
) -> (Signals, tokio::task::JoinHandle<()>) {
    let state = Arc::new(RwLock::new(Visibility::unknown()));
    let (tx, changed) = watch::channel(0);
    let listener = Arc::new(ListenerStatus::new(changes));
    let signals = Signals { state: state.clone(), changed, listener: listener.clone() };
    let task = tokio::spawn(
        async move {
            let mut backoff = Duration::from_millis(50);
            while !cancel.is_cancelled() {
                let e = match follow(&cfg, &state, &tx, &listener, &cancel).await {
                    Ok(()) => return,
                    Err(e) => e,
                };
                // A session that was listening reconnects at once; one that keeps failing
                // to connect backs off.
                if listener.down_for().is_none() {
                    backoff = Duration::from_millis(50);
                }
                tracing::warn!(error = %e, "notification session lost; reconnecting");
                listener.set(false, e.to_string());
                // While not listening, readers must not trust the state: read on every poll.
                *state.write().unwrap() = Visibility::unknown();
                tx.send_modify(|n| *n += 1);
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
        .instrument(tracing::info_span!("notification_listener")),
    );
    (signals, task)
}

async fn follow(
    cfg: &DbConfig,
    state: &RwLock<Visibility>,
    tx: &watch::Sender<u64>,
    listener: &ListenerStatus,
    cancel: &CancellationToken,
) -> Result<(), StoreError> {
    let mut listen = db::connect(cfg, SessionKind::Lock).await?;
    let mut query = db::connect(cfg, SessionKind::Pooled).await?;
    listen.batch_execute(&format!("listen {WATERMARKS}; listen {EVENTS}")).await.during("listening")?;
    // Anything written before we listened is covered by `newest_any`.
    let b = events::bounds(&mut query).await?;
    let mut known = Known::from_rows(&watermarks::all(&mut query).await?);
    {
        let mut st = state.write().unwrap();
        *st = Visibility {
            cap: b.cap.unwrap_or(i64::MIN),
            newest: HashMap::new(),
            newest_any: b.newest.unwrap_or(i64::MIN),
        };
    }
    listener.set(true, "listening".into());
    tracing::debug!("listening for notifications");
    tx.send_modify(|n| *n += 1);
    let mut stream = std::pin::pin!(listen.notifications_stream());
    loop {
        let mut next = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            n = stream.next() => n,
        };
        // Take everything already queued, then refresh the bound once. The stream is never
        // polled again once it has ended or failed (it panics if polled after its end).
        let mut watermark_moved = false;
        let mut reread = false;
        loop {
            let n = match next {
                Some(Ok(n)) => n,
                Some(Err(e)) => return Err(DbError::from_diesel("listening", e).into()),
                None => return Err(DbError::from_connection("listening", "connection closed").into()),
            };
            if n.channel == WATERMARKS {
                watermark_moved = true;
                reread |= !known.moved(&n.payload);
            } else if n.channel == EVENTS {
                record_events(state, &n.payload);
            }
            match stream.next().now_or_never() {
                Some(n) => next = n,
                None => break,
            }
        }
        if reread {
            known = Known::from_rows(&watermarks::all(&mut query).await?);
        }
        if watermark_moved {
            let cap = known.cap().unwrap_or(i64::MIN);
            let mut st = state.write().unwrap();
            st.cap = st.cap.max(cap);
        }
        tx.send_modify(|n| *n += 1);
    }
}

/// The watermark rows as the listener knows them: read from the table, then moved by
/// "<index>|<watermark>" notifications.
#[derive(Debug, Default)]
struct Known {
    /// Index → (watermark, online).
    rows: HashMap<i32, (i64, bool)>,
}

impl Known {
    fn from_rows(rows: &[Watermark]) -> Self {
        Known { rows: rows.iter().map(|w| (w.node_index, (w.watermark_ts, w.online))).collect() }
    }

    /// Apply a watermark notification. False when it does not say enough (a node went online
    /// or offline, or an index this state does not know online): the table must be read.
    fn moved(&mut self, payload: &str) -> bool {
        let parsed = payload.split_once('|').and_then(|(i, w)| Some((i.parse::<i32>().ok()?, w.parse::<i64>().ok()?)));
        match parsed.and_then(|(i, w)| Some((self.rows.get_mut(&i)?, w))) {
            Some(((wm, true), w)) => {
                *wm = (*wm).max(w);
                true
            }
            _ => false,
        }
    }

    /// The visibility cap, as `watermarks::VISIBILITY_CAP_SQL` computes it: the lowest online
    /// watermark, or the highest of all with none online.
    fn cap(&self) -> Option<i64> {
        let online = self.rows.values().filter(|r| r.1).map(|r| r.0).min();
        online.or_else(|| self.rows.values().map(|r| r.0).max())
    }
}

/// Apply an events notification: "<max ts>|<ids>" or "<max ts>|*".
fn record_events(state: &RwLock<Visibility>, payload: &str) {
    let (ts, ids) = payload.split_once('|').unwrap_or((payload, "*"));
    let Ok(ts) = ts.parse::<i64>() else { return };
    let mut st = state.write().unwrap();
    if ids == "*" {
        st.newest_any = st.newest_any.max(ts);
        return;
    }
    for id in ids.split(',').filter_map(|s| s.parse::<i32>().ok()) {
        let e = st.newest.entry(id).or_insert(ts);
        *e = (*e).max(ts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_follows_watermark_notifications_and_asks_for_the_table_when_they_say_too_little() {
        let row = |node_index, watermark_ts, online| Watermark { node_index, watermark_ts, online };
        let mut k = Known::from_rows(&[row(0, 10, true), row(1, 20, true), row(2, 5, false)]);
        assert_eq!(k.cap(), Some(10), "the lowest online watermark");
        assert!(k.moved("0|30"));
        assert_eq!(k.cap(), Some(20));
        assert!(k.moved("1|25") && k.moved("1|22"), "a late notification never moves a watermark back");
        assert_eq!(k.cap(), Some(25));
        assert!(!k.moved("2|40"), "an offline index moving: it may have come online, read the table");
        assert!(!k.moved("3|40"), "an index not known");
        assert!(!k.moved("1"), "online or offline: read the table");
        assert!(!k.moved("1|x"));
        assert_eq!(k.cap(), Some(25));
        let none_online = Known::from_rows(&[row(0, 10, false), row(1, 20, false)]);
        assert_eq!(none_online.cap(), Some(20), "none online: the highest watermark");
        assert_eq!(Known::default().cap(), None);
    }

    #[test]
    fn only_members_with_news_below_the_cap_read() {
        let st = RwLock::new(Visibility { cap: 100, ..Default::default() });
        record_events(&st, "90|1,2");
        let v = st.read().unwrap();
        assert!(v.may_have_news(1, 50));
        assert!(v.may_have_news(2, 89));
        assert!(!v.may_have_news(2, 90), "nothing newer than the cursor");
        assert!(!v.may_have_news(3, 50), "no events for member 3");
        drop(v);
        record_events(&st, "120|-1");
        let v = st.read().unwrap();
        assert!(v.may_have_news(3, 50), "a broadcast reaches everyone");
        assert!(!v.may_have_news(3, 100), "but not above the cap");
        drop(v);
        record_events(&st, "130|*");
        st.write().unwrap().cap = 200;
        assert!(st.read().unwrap().may_have_news(7, 125));
    }
}
