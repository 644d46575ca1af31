//! The replica manager on real PostgreSQL leadership: active-only services run on exactly the
//! leader, stop on demotion, restart after failing, and every write they make is fenced; and
//! on a hand-held role channel: it reports not-active the moment leadership is lost.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Integer, Text};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use scoped_futures::ScopedFutureExt;
use syncline_coordination::db::{self, SessionKind};
use syncline_coordination::leadership::{self, Fence, Leadership, LeadershipConfig, Role};
use syncline_coordination::{DbConfig, DbError, LeadershipError};
use syncline_node::replica::{ReplicaManager, ServiceState};
use syncline_testkit::fresh_database;

struct Replica {
    leadership: Leadership,
    manager: ReplicaManager,
    flag: Arc<AtomicBool>,
}

impl Replica {
    /// Whether its active-only service runs now (`AtomicBool::load`, not Diesel's `load`).
    fn running(&self) -> bool {
        AtomicBool::load(&self.flag, Ordering::SeqCst)
    }
}

/// A replica whose active-only service writes (epoch, name) rows under its fence every 10 ms.
fn replica(url: &str, name: &'static str) -> Replica {
    let cfg = DbConfig::new(url);
    let leadership = Leadership::start(
        syncline_coordination::Db::new(cfg.clone()).unwrap(),
        "participant1",
        name,
        LeadershipConfig::default(),
    )
    .unwrap();
    let running = Arc::new(AtomicBool::new(false));
    let flag = running.clone();
    let manager = ReplicaManager::spawn(name, leadership.watch(), move |fence, stop| {
        let cfg = cfg.clone();
        let flag = flag.clone();
        async move {
            let mut c = db::connect(&cfg, SessionKind::Pooled).await.map_err(|e| e.to_string())?;
            flag.store(true, Ordering::SeqCst);
            let r = loop {
                if stop.is_cancelled() {
                    break Ok(());
                }
                let written = leadership::fenced(&mut c, &fence, |c| {
                    async move {
                        diesel::sql_query("insert into writes (epoch, replica) values ($1, $2)")
                            .bind::<BigInt, _>(fence.epoch)
                            .bind::<Text, _>(name)
                            .execute(c)
                            .await
                            .map_err(|e| LeadershipError::from(DbError::from_diesel("test write", e)))
                    }
                    .scope_boxed()
                })
                .await;
                if let Err(e) = written {
                    break Err(e.to_string());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            flag.store(false, Ordering::SeqCst);
            r
        }
    });
    Replica { leadership, manager, flag: running }
}

async fn until(limit: Duration, what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = BigInt)]
    epoch: i64,
    #[diesel(sql_type = Text)]
    replica: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_only_services_follow_leadership_and_their_writes_are_fenced() {
    let tdb = fresh_database().await;
    db::migrate(&DbConfig::new(&tdb.url)).await.unwrap();
    let mut c = db::connect(&DbConfig::new(&tdb.url), SessionKind::Pooled).await.unwrap();
    diesel::sql_query("create table writes (id bigserial primary key, epoch bigint not null, replica text not null)")
        .execute(&mut c)
        .await
        .unwrap();

    let a = replica(&tdb.url, "a");
    until(Duration::from_secs(10), "a active", || a.manager.state().is_active() && a.running()).await;
    let b = replica(&tdb.url, "b");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(b.manager.state(), ServiceState::Passive);
    assert!(!b.running(), "a passive replica runs its services");

    // The leader's session dies: b's services start, a's stop.
    let leader = leadership::leader(&mut c, "participant1").await.unwrap().unwrap();
    diesel::sql_query("select pg_terminate_backend($1)")
        .bind::<Integer, _>(leader.holder_pid)
        .execute(&mut c)
        .await
        .unwrap();
    until(Duration::from_secs(5), "b active", || b.manager.state() == ServiceState::Active { epoch: 2 }).await;
    until(Duration::from_secs(5), "a's services stopped", || {
        !a.running() && a.manager.state() == ServiceState::Passive
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Graceful hand-over back to a, once a queues up as the standby again.
    let start = Instant::now();
    loop {
        match b.leadership.set_passive().await {
            Ok(()) => break,
            Err(LeadershipError::NoStandby { .. }) if start.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("hand-over: {e}"),
        }
    }
    until(Duration::from_secs(5), "a active again", || a.manager.state() == ServiceState::Active { epoch: 3 }).await;
    until(Duration::from_secs(5), "b's services stopped", || !b.running()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for r in [a, b] {
        let flag = r.flag.clone();
        r.manager.shutdown().await;
        assert!(!AtomicBool::load(&flag, Ordering::SeqCst), "services still run after shutdown");
        r.leadership.shutdown().await;
    }

    // Each epoch was written by one replica, and no write of an old epoch follows a newer one.
    let rows: Vec<Row> = diesel::sql_query("select epoch, replica from writes order by id").load(&mut c).await.unwrap();
    let mut seen: Vec<(i64, String)> = Vec::new();
    for r in &rows {
        match seen.last() {
            Some((e, who)) if *e == r.epoch => assert_eq!(who, &r.replica, "two replicas wrote under epoch {e}"),
            Some((e, _)) => assert!(r.epoch > *e, "a write of epoch {} after one of epoch {e}", r.epoch),
            None => {}
        }
        if seen.last().map(|(e, _)| *e) != Some(r.epoch) {
            seen.push((r.epoch, r.replica.clone()));
        }
    }
    assert_eq!(seen, vec![(1, "a".into()), (2, "b".into()), (3, "a".into())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_that_fail_while_leading_are_restarted() {
    let tdb = fresh_database().await;
    db::migrate(&DbConfig::new(&tdb.url)).await.unwrap();
    let l = Leadership::start(
        syncline_coordination::Db::new(DbConfig::new(&tdb.url)).unwrap(),
        "mediator",
        "m1",
        LeadershipConfig::default(),
    )
    .unwrap();
    let starts = Arc::new(AtomicUsize::new(0));
    let n = starts.clone();
    let m = ReplicaManager::spawn("m1", l.watch(), move |_fence, stop| {
        let attempt = n.fetch_add(1, Ordering::SeqCst);
        async move {
            if attempt == 0 {
                return Err("cannot reach the sequencer".to_string());
            }
            stop.cancelled().await;
            Ok(())
        }
    });
    let mut w = m.watch();
    let r = tokio::time::timeout(Duration::from_secs(10), w.wait_for(|s| matches!(s, ServiceState::Restarting { .. })))
        .await
        .unwrap()
        .unwrap()
        .clone();
    assert_eq!(r, ServiceState::Restarting { epoch: 1, error: "cannot reach the sequencer".into() });
    assert!(!r.is_active(), "a replica whose services failed reports active");
    tokio::time::timeout(Duration::from_secs(5), w.wait_for(|s| s.is_active())).await.unwrap().unwrap();
    assert_eq!(AtomicUsize::load(&starts, Ordering::SeqCst), 2);
    m.shutdown().await;
    l.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_passive_through_the_node_admin_api_hands_over_only_to_a_standby() {
    use syncline_node::admin::NodeAdmin;
    use syncline_node::NodeKind;
    use syncline_proto::admin::node_admin_service_server::NodeAdminService;
    use syncline_proto::admin::SetPassiveRequest;

    struct Up;
    impl syncline_node::NodeHealth for Up {
        fn health(&self) -> tokio::sync::watch::Receiver<syncline_node::HealthState> {
            tokio::sync::watch::channel(syncline_node::HealthState::serving()).1
        }
        fn components(&self) -> Vec<(String, String)> {
            vec![]
        }
    }
    let tdb = fresh_database().await;
    db::migrate(&DbConfig::new(&tdb.url)).await.unwrap();
    let start = |name: &str| {
        Leadership::start(
            syncline_coordination::Db::new(DbConfig::new(&tdb.url)).unwrap(),
            "participant1",
            name,
            LeadershipConfig::default(),
        )
        .unwrap()
    };
    let a = start("a");
    let mut w = a.watch();
    tokio::time::timeout(Duration::from_secs(10), w.wait_for(|r| r.is_active())).await.unwrap().unwrap();
    let admin = NodeAdmin::new("a", NodeKind::Participant, Arc::new(Up)).with_leadership(a.handle());
    let e = admin.set_passive(tonic::Request::new(SetPassiveRequest {})).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("no passive replica") && e.message().contains("staying active"), "{}", e.message());
    assert!(a.role().is_active());

    let b = start("b");
    let mut c = db::connect(&DbConfig::new(&tdb.url), SessionKind::Pooled).await.unwrap();
    let begun = Instant::now();
    while syncline_coordination::locks::waiters(
        &mut c,
        syncline_coordination::locks::LockId::leadership("participant1"),
    )
    .await
    .unwrap()
        == 0
    {
        assert!(begun.elapsed() < Duration::from_secs(10), "b never waits");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    admin.set_passive(tonic::Request::new(SetPassiveRequest {})).await.expect("hand-over to b");
    let mut w = b.watch();
    tokio::time::timeout(Duration::from_secs(5), w.wait_for(|r| r.is_active())).await.unwrap().unwrap();
    assert!(!a.role().is_active());
}

#[tokio::test(start_paused = true)]
async fn the_manager_reports_not_active_the_moment_leadership_is_lost() {
    let (role, role_rx) = tokio::sync::watch::channel(Role::Passive);
    let running = Arc::new(AtomicBool::new(false));
    let flag = running.clone();
    // Services that take their time to stop (say, flushing a batch).
    let stopping_takes = Duration::from_secs(3);
    let m = ReplicaManager::spawn("m1", role_rx, move |_fence, stop| {
        let flag = flag.clone();
        async move {
            flag.store(true, Ordering::SeqCst);
            stop.cancelled().await;
            tokio::time::sleep(stopping_takes).await;
            flag.store(false, Ordering::SeqCst);
            Ok::<_, String>(())
        }
    });
    let is_running = || AtomicBool::load(&running, Ordering::SeqCst);
    let fence = |epoch| Fence { group: "mediator".into(), epoch, step_timeout: Duration::from_secs(1) };
    let mut w = m.watch();
    let moment = Duration::from_millis(1);

    role.send_replace(Role::Active(fence(1)));
    tokio::time::timeout(Duration::from_secs(1), w.wait_for(|s| s.is_active())).await.unwrap().unwrap();
    while !is_running() {
        tokio::time::sleep(moment).await;
    }

    // Demoted: not active at once, while the services are still stopping.
    role.send_replace(Role::Passive);
    let demoted = tokio::time::Instant::now();
    let s = tokio::time::timeout(moment, w.wait_for(|s| !s.is_active()))
        .await
        .expect("the manager still reports active after the demotion")
        .unwrap()
        .clone();
    assert_eq!(s, ServiceState::Stopping { epoch: 1 });
    assert!(is_running(), "the test needs services that are still stopping");
    tokio::time::timeout(Duration::from_secs(10), w.wait_for(|s| *s == ServiceState::Passive)).await.unwrap().unwrap();
    assert!(demoted.elapsed() >= stopping_takes, "the manager did not wait for the services to stop");
    assert!(!is_running());

    // The same on shutdown.
    role.send_replace(Role::Active(fence(2)));
    tokio::time::timeout(Duration::from_secs(2), w.wait_for(|s| *s == ServiceState::Active { epoch: 2 }))
        .await
        .unwrap()
        .unwrap();
    while !is_running() {
        tokio::time::sleep(moment).await;
    }
    let shutdown = tokio::spawn(m.shutdown());
    let s = tokio::time::timeout(moment, w.wait_for(|s| !s.is_active()))
        .await
        .expect("the manager still reports active while shutting down")
        .unwrap()
        .clone();
    assert_eq!(s, ServiceState::Stopping { epoch: 2 });
    assert!(is_running());
    shutdown.await.unwrap();
    assert!(!is_running(), "shutdown returned before the services stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_node_reports_active_only_on_the_leader_and_hands_over_on_shutdown() {
    use syncline_node::ReplicatedNode;

    #[derive(Debug, thiserror::Error)]
    #[error("sequencer unreachable")]
    struct Unreachable;

    let tdb = fresh_database().await;
    db::migrate(&DbConfig::new(&tdb.url)).await.unwrap();
    let start = |name: &str, fail_first: bool| {
        let attempts = Arc::new(AtomicUsize::new(0));
        ReplicatedNode::start(
            syncline_coordination::Db::new(DbConfig::new(&tdb.url)).unwrap(),
            "mediator",
            name,
            LeadershipConfig::default(),
            move |_fence, stop: tokio_util::sync::CancellationToken| {
                let attempt = attempts.fetch_add(1, Ordering::SeqCst);
                async move {
                    if fail_first && attempt == 0 {
                        return Err(Unreachable);
                    }
                    stop.cancelled().await;
                    Ok(())
                }
            },
        )
        .unwrap()
    };
    let wait = |node: &ReplicatedNode, what: &'static str, want: fn(&syncline_node::HealthState) -> bool| {
        let mut h = node.status().health();
        async move {
            tokio::time::timeout(Duration::from_secs(10), h.wait_for(want))
                .await
                .unwrap_or_else(|_| panic!("{what}: not within 10 s"))
                .unwrap()
                .clone()
        }
    };
    // a's services fail once: it leads but is neither serving nor active until they run.
    let a = start("a", true);
    let h = wait(&a, "a restarting", |h| !h.serving).await;
    assert!(!h.active && h.detail.contains("sequencer unreachable"), "{h:?}");
    wait(&a, "a active", |h| h.active && h.serving).await;
    let b = start("b", false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hb = b.status().health().borrow().clone();
    assert!(hb.serving && !hb.active, "a standby must serve (ping) but not be active: {hb:?}");
    let components = b.status().components();
    assert!(components.contains(&("leadership".into(), "passive".into())), "{components:?}");

    // Shutting the leader down hands over to the standby.
    tokio::time::timeout(Duration::from_secs(10), a.shutdown()).await.expect("shutdown hangs");
    let hb = wait(&b, "b active", |h| h.active).await;
    assert_eq!(hb.detail, "active (epoch 2)");
    tokio::time::timeout(Duration::from_secs(10), b.shutdown()).await.expect("shutdown hangs");
}
