//! Leadership at its crash window, forced with a failpoint. Its own test binary: failpoints
//! are global to the process, so no other test may run beside them (one test function).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use syncline_coordination::db::{self, SessionKind};
use syncline_coordination::leadership::{self, Leadership, LeadershipConfig};
use syncline_coordination::{Db, DbConfig, LeadershipError};
use syncline_testkit::fresh_database;

const GROUP: &str = "mediator";

fn replica(url: &str, name: &str) -> Leadership {
    let mut cfg = DbConfig::new(url);
    cfg.application_name = name.into();
    Leadership::start(Db::new(cfg).unwrap(), GROUP, name, LeadershipConfig::default()).unwrap()
}

/// A replica that fails right after committing its takeover's new epoch (before it leads)
/// gives the lock up: the group ends with one leader, at a later epoch, and a write under the
/// abandoned epoch is fenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_failing_after_its_takeover_insert_never_makes_two_leaders() {
    let scenario = fail::FailScenario::setup();
    let tdb = fresh_database().await;
    let cfg = DbConfig::new(&tdb.url);
    db::migrate(&cfg).await.unwrap();
    let mut c = db::connect(&cfg, SessionKind::Pooled).await.unwrap();
    fail::cfg("leadership-after-takeover-insert", "1*return").unwrap();

    let a = replica(&tdb.url, "a");
    // The failed takeover committed epoch 1 for a, which never led under it.
    let start = Instant::now();
    loop {
        if let Some(l) = leadership::leader(&mut c, GROUP).await.unwrap() {
            assert_eq!((l.epoch, l.holder.as_str()), (1, "a"));
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no takeover recorded");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let b = replica(&tdb.url, "b");

    // Watch both roles: never active at once.
    let both = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn({
        let (mut wa, mut wb) = (a.watch(), b.watch());
        let both = both.clone();
        async move {
            loop {
                if wa.borrow().is_active() && wb.borrow().is_active() {
                    both.store(true, Ordering::SeqCst);
                }
                tokio::select! {
                    r = wa.changed() => if r.is_err() { return },
                    r = wb.changed() => if r.is_err() { return },
                }
            }
        }
    });
    let start = Instant::now();
    let fence = loop {
        if let Some(f) = a.role().fence().or(b.role().fence()).cloned() {
            break f;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "nobody leads after the failed takeover");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(fence.epoch, 2, "the next takeover is at a new epoch");
    // Let both settle for a while: still exactly one leader, the one the table names.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leader = leadership::leader(&mut c, GROUP).await.unwrap().unwrap();
    assert_eq!(leader.epoch, 2);
    let (active, passive) = if a.role().is_active() { (&a, &b) } else { (&b, &a) };
    assert!(active.role().is_active() && !passive.role().is_active());
    assert_eq!(active.role().fence().unwrap().epoch, 2);
    assert!(!both.load(Ordering::SeqCst), "two replicas were active at once");
    // A write under the abandoned epoch 1 is fenced.
    let stale = leadership::Fence { epoch: 1, ..fence.clone() };
    let e = leadership::check_fence(&mut c, &stale).await.unwrap_err();
    assert!(matches!(e, LeadershipError::Fenced { epoch: 1, current: 2, .. }), "{e}");
    watcher.abort();
    a.shutdown().await;
    b.shutdown().await;
    scenario.teardown();
}
