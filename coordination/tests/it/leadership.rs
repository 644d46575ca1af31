//! Replica-group leadership against a real PostgreSQL: takeover after a killed session, the
//! fencing epoch, self-demotion behind a blackholed connection, latency below the lease,
//! hand-over, recovery from a full database outage with exactly one leader, fenced
//! transactions that neither stall the heartbeat nor (partitioned) the next takeover, and
//! distinct locks for groups whose former 16-bit lock ids collided.

use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use scoped_futures::ScopedFutureExt;
use syncline_coordination::db::{self, SessionKind};
use syncline_coordination::leadership::{self, Fence, Leadership, LeadershipConfig, LeadershipHandle, Role};
use syncline_coordination::locks::{self, LockId};
use syncline_coordination::{Db, DbConfig, DbError, LeadershipError};
use syncline_testkit::{fresh_database, FaultProxy, TestDb};

const GROUP: &str = "mediator";

async fn prepare(tdb: &TestDb) -> AsyncPgConnection {
    db::migrate(&DbConfig::new(&tdb.url)).await.unwrap();
    let mut c = db::connect(&DbConfig::new(&tdb.url), SessionKind::Pooled).await.unwrap();
    diesel::sql_query("create table fenced_writes (epoch bigint not null, replica text not null)")
        .execute(&mut c)
        .await
        .unwrap();
    c
}

fn replica(url: &str, name: &str) -> Leadership {
    replica_of(url, GROUP, name)
}

fn replica_of(url: &str, group: &str, name: &str) -> Leadership {
    let mut cfg = DbConfig::new(url);
    cfg.application_name = name.into();
    Leadership::start(Db::new(cfg).unwrap(), group, name, LeadershipConfig::default()).unwrap()
}

/// Wait until `l` is active (returns its fence) or fail after `limit`.
async fn until_active(l: &Leadership, limit: Duration) -> Fence {
    let mut w = l.watch();
    let r = tokio::time::timeout(limit, w.wait_for(|r| r.is_active())).await;
    match r {
        Ok(Ok(role)) => role.fence().cloned().unwrap(),
        _ => panic!("not active within {limit:?}"),
    }
}

async fn until_passive(l: &Leadership, limit: Duration) {
    let mut w = l.watch();
    tokio::time::timeout(limit, w.wait_for(|r| !r.is_active()))
        .await
        .unwrap_or_else(|_| panic!("still active after {limit:?}"))
        .unwrap();
}

async fn until_waiting(c: &mut AsyncPgConnection, n: i64) {
    let start = Instant::now();
    while locks::waiters(c, LockId::leadership(GROUP)).await.unwrap() != n {
        assert!(start.elapsed() < Duration::from_secs(15), "never {n} replicas waiting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Replica `a` leads through a fault proxy, `b` (direct) waits as its standby.
async fn leader_via_proxy_and_standby(
    tdb: &TestDb,
    c: &mut AsyncPgConnection,
) -> (FaultProxy, Leadership, Fence, Leadership) {
    let proxy = FaultProxy::start(tdb.server_addr()).await;
    let a = replica(&tdb.url_via(proxy.addr()), "a");
    let fa = until_active(&a, Duration::from_secs(10)).await;
    let b = replica(&tdb.url, "b");
    until_waiting(c, 1).await;
    (proxy, a, fa, b)
}

/// Write one row under `fence`.
async fn write(c: &mut AsyncPgConnection, fence: &Fence, replica: &str) -> Result<(), LeadershipError> {
    let replica = replica.to_string();
    leadership::fenced(c, fence, |c| {
        async move {
            diesel::sql_query("insert into fenced_writes values ($1, $2)")
                .bind::<BigInt, _>(fence.epoch)
                .bind::<Text, _>(replica)
                .execute(c)
                .await
                .map_err(|e| DbError::from_diesel("test write", e))?;
            Ok(())
        }
        .scope_boxed()
    })
    .await
}

#[derive(QueryableByName, Debug, PartialEq)]
struct Row {
    #[diesel(sql_type = BigInt)]
    epoch: i64,
    #[diesel(sql_type = Text)]
    replica: String,
}

async fn rows(c: &mut AsyncPgConnection) -> Vec<(i64, String)> {
    let r: Vec<Row> =
        diesel::sql_query("select epoch, replica from fenced_writes order by epoch, replica").load(c).await.unwrap();
    r.into_iter().map(|r| (r.epoch, r.replica)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_replica_leads_within_a_second_after_the_leaders_session_is_killed() {
    let tdb = fresh_database().await;
    let mut c = prepare(&tdb).await;
    let a = replica(&tdb.url, "a");
    let fa = until_active(&a, Duration::from_secs(10)).await;
    assert_eq!(fa.epoch, 1);
    let b = replica(&tdb.url, "b");
    until_waiting(&mut c, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!b.role().is_active(), "b leads while a holds the lock");
    write(&mut c, &fa, "a").await.expect("the leader writes under its epoch");

    let leader = leadership::leader(&mut c, GROUP).await.unwrap().unwrap();
    assert_eq!((leader.epoch, leader.holder.as_str()), (1, "a"));
    let killed = Instant::now();
    diesel::sql_query("select pg_terminate_backend($1)")
        .bind::<diesel::sql_types::Integer, _>(leader.holder_pid)
        .execute(&mut c)
        .await
        .unwrap();
    let fb = until_active(&b, Duration::from_secs(5)).await;
    let took = killed.elapsed();
    println!("takeover after the leader's session was killed: {took:?}");
    assert!(took < Duration::from_secs(1), "takeover took {took:?}");
    assert_eq!(fb.epoch, 2);
    until_passive(&a, Duration::from_secs(3)).await;

    // The former leader's writes are rejected from now on, the new leader's accepted.
    let e = write(&mut c, &fa, "a").await.unwrap_err();
    assert!(matches!(e, LeadershipError::Fenced { epoch: 1, current: 2, .. }), "{e}");
    assert!(e.to_string().contains("epoch 2"), "{e}");
    write(&mut c, &fb, "b").await.unwrap();
    assert_eq!(rows(&mut c).await, vec![(1, "a".to_string()), (2, "b".to_string())]);

    // The former leader queues up again as the standby.
    until_waiting(&mut c, 1).await;
    let leader = leadership::leader(&mut c, GROUP).await.unwrap().unwrap();
    assert_eq!((leader.epoch, leader.holder.as_str()), (2, "b"));
    b.shutdown().await;
    let fa2 = until_active(&a, Duration::from_secs(1)).await;
    assert_eq!(fa2.epoch, 3);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_leader_demotes_within_its_lease_and_a_passive_takes_over() {
    let tdb = fresh_database().await;
    let mut c = prepare(&tdb).await;
    let (proxy, a, fa, b) = leader_via_proxy_and_standby(&tdb, &mut c).await;

    proxy.blackhole();
    let cut = Instant::now();
    let (mut wa, mut wb) = (a.watch(), b.watch());
    tokio::time::timeout(Duration::from_secs(10), wa.wait_for(|r| !r.is_active())).await.unwrap().unwrap();
    let demoted = cut.elapsed();
    tokio::time::timeout(Duration::from_secs(20), wb.wait_for(|r| r.is_active())).await.unwrap().unwrap();
    let taken = cut.elapsed();
    println!("blackholed leader demoted after {demoted:?}, passive took over after {taken:?}");
    let lease = LeadershipConfig::default().lease_timeout;
    assert!(demoted <= lease + Duration::from_millis(1500), "demoted only after {demoted:?}");
    assert!(demoted >= lease - Duration::from_millis(300), "demoted before its lease ran out: {demoted:?}");
    assert!(demoted < taken, "both active at once: a demoted at {demoted:?}, b took over at {taken:?}");
    let fb = b.role().fence().cloned().unwrap();
    assert_eq!(fb.epoch, fa.epoch + 1);
    let e = write(&mut c, &fa, "a").await.unwrap_err();
    assert!(matches!(e, LeadershipError::Fenced { .. }), "{e}");

    // When the network heals the former leader is a standby, not a second leader.
    proxy.restore();
    until_waiting(&mut c, 1).await;
    assert!(!a.role().is_active());
    assert!(b.role().is_active());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_below_the_lease_keeps_the_leader() {
    let tdb = fresh_database().await;
    let mut c = prepare(&tdb).await;
    let (proxy, a, fa, b) = leader_via_proxy_and_standby(&tdb, &mut c).await;
    proxy.latency(Duration::from_millis(300));
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert_eq!(a.role(), Role::Active(fa.clone()), "a lost leadership over 300 ms of latency");
        assert!(!b.role().is_active());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.restore();
    let leader = leadership::leader(&mut c, GROUP).await.unwrap().unwrap();
    assert_eq!((leader.epoch, leader.holder.as_str()), (fa.epoch, "a"));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_passive_hands_over_only_when_a_replica_waits() {
    let tdb = fresh_database().await;
    let mut c = prepare(&tdb).await;
    let a = replica(&tdb.url, "a");
    let fa = until_active(&a, Duration::from_secs(10)).await;
    let e = a.set_passive().await.unwrap_err();
    assert!(matches!(e, LeadershipError::NoStandby { .. }), "{e}");
    assert!(e.to_string().contains("staying active"), "{e}");
    assert_eq!(a.role(), Role::Active(fa.clone()), "a gave up leadership with nobody to take it");

    let b = replica(&tdb.url, "b");
    until_waiting(&mut c, 1).await;
    let e = b.set_passive().await.unwrap_err();
    assert!(matches!(e, LeadershipError::NotActive { .. }), "{e}");
    let asked = Instant::now();
    a.set_passive().await.expect("hand-over to the waiting replica");
    let fb = until_active(&b, Duration::from_secs(5)).await;
    println!("hand-over took {:?}", asked.elapsed());
    assert!(asked.elapsed() < Duration::from_secs(1));
    assert_eq!(fb.epoch, fa.epoch + 1);
    assert!(!a.role().is_active());
    until_waiting(&mut c, 1).await;
    // And back again.
    b.set_passive().await.unwrap();
    let fa2 = until_active(&a, Duration::from_secs(5)).await;
    assert_eq!(fa2.epoch, fb.epoch + 1);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_database_outage_exactly_one_replica_leads() {
    let tdb = fresh_database().await;
    let mut c = prepare(&tdb).await;
    let proxy = FaultProxy::start(tdb.server_addr()).await;
    let url = tdb.url_via(proxy.addr());
    let rs: Vec<Leadership> = ["a", "b", "c"].iter().map(|n| replica(&url, n)).collect();
    let active = |rs: &[Leadership]| rs.iter().filter(|r| r.role().is_active()).count();
    let start = Instant::now();
    while active(&rs) != 1 {
        assert!(start.elapsed() < Duration::from_secs(10), "no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    until_waiting(&mut c, 2).await;

    proxy.down();
    for r in &rs {
        until_passive(r, Duration::from_secs(5)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(active(&rs), 0, "a replica leads without a database");
    proxy.restore();
    let start = Instant::now();
    while active(&rs) != 1 {
        assert!(active(&rs) <= 1, "two leaders after the outage");
        assert!(start.elapsed() < Duration::from_secs(15), "no leader after the outage");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("leader again {:?} after restore", start.elapsed());
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert_eq!(active(&rs), 1, "leadership flapped after the outage");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fence = rs.iter().find_map(|r| r.role().fence().cloned()).unwrap();
    let leader = leadership::leader(&mut c, GROUP).await.unwrap().unwrap();
    assert_eq!(leader.epoch, fence.epoch);
    until_waiting(&mut c, 2).await;
    for r in rs {
        r.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_releases_the_lock_at_shutdown_while_handles_remain() {
    let tdb = fresh_database().await;
    let mut c = prepare(&tdb).await;
    let a = replica(&tdb.url, "a");
    until_active(&a, Duration::from_secs(10)).await;
    // The admin API's handle: cloned freely, it does not keep the leadership running.
    let handle: LeadershipHandle = a.handle();
    let also = handle.clone();
    let b = replica(&tdb.url, "b");
    until_waiting(&mut c, 1).await;
    let begun = Instant::now();
    a.shutdown().await;
    until_active(&b, Duration::from_secs(5)).await;
    assert!(begun.elapsed() < Duration::from_secs(5), "the lock was released at shutdown, not after a lease");
    assert!(!handle.role().is_active() && !also.watch().borrow().is_active(), "handles see the replica passive");
    let e = handle.set_passive().await.unwrap_err();
    assert!(matches!(e, LeadershipError::NotActive { .. }), "{e}");
    b.shutdown().await;
}

#[tokio::test]
async fn leadership_settings_are_validated() {
    let mut cfg = LeadershipConfig::default();
    cfg.check_interval = cfg.lease_timeout;
    let e = Leadership::start(Db::new(DbConfig::new("postgres://x@127.0.0.1:1/x")).unwrap(), GROUP, "a", cfg)
        .err()
        .unwrap();
    assert!(e.to_string().contains("check_interval"), "{e}");
}

/// Sleep `n` times `step` on the server, each in its own statement, inside one fenced
/// transaction that also writes a row.
async fn long_fenced_write(
    c: &mut AsyncPgConnection,
    fence: &Fence,
    replica: &str,
    n: u32,
    step: Duration,
) -> Result<(), LeadershipError> {
    let replica = replica.to_string();
    leadership::fenced(c, fence, |c| {
        async move {
            diesel::sql_query("insert into fenced_writes values ($1, $2)")
                .bind::<BigInt, _>(fence.epoch)
                .bind::<Text, _>(replica)
                .execute(c)
                .await
                .map_err(|e| DbError::from_diesel("test write", e))?;
            for _ in 0..n {
                diesel::sql_query(format!("select pg_sleep({})", step.as_secs_f64()))
                    .execute(c)
                    .await
                    .map_err(|e| DbError::from_diesel("sleeping in a fenced transaction", e))?;
            }
            Ok(())
        }
        .scope_boxed()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_transaction_longer_than_the_lease_keeps_the_leader() {
    let tdb = fresh_database().await;
    let mut c = prepare(&tdb).await;
    let a = replica(&tdb.url, "a");
    let fa = until_active(&a, Duration::from_secs(10)).await;
    let b = replica(&tdb.url, "b");
    until_waiting(&mut c, 1).await;
    let lease = LeadershipConfig::default().lease_timeout;
    assert_eq!(lease, Duration::from_secs(2), "the test assumes the default lease");

    // 3 s in one fenced transaction, in steps below the step timeout (half the lease).
    let mut w = db::connect(&DbConfig::new(&tdb.url), SessionKind::Pooled).await.unwrap();
    let fence = fa.clone();
    let started = Instant::now();
    let txn = tokio::spawn(async move { long_fenced_write(&mut w, &fence, "a", 6, Duration::from_millis(500)).await });
    while !txn.is_finished() {
        assert_eq!(
            a.role(),
            Role::Active(fa.clone()),
            "a lost leadership {:?} into a fenced transaction",
            started.elapsed()
        );
        assert!(!b.role().is_active(), "b took over during a's fenced transaction");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    txn.await.unwrap().expect("the long fenced transaction commits");
    assert!(started.elapsed() >= Duration::from_secs(3));
    // The leader kept confirming its lease all along, and still does.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(a.role(), Role::Active(fa.clone()));
    assert!(!b.role().is_active());
    let leader = leadership::leader(&mut c, GROUP).await.unwrap().unwrap();
    assert_eq!((leader.epoch, leader.holder.as_str()), (fa.epoch, "a"));
    assert_eq!(rows(&mut c).await, vec![(fa.epoch, "a".to_string())]);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_transactions_are_bounded_by_the_server() {
    let tdb = fresh_database().await;
    let mut c = prepare(&tdb).await;
    let a = replica(&tdb.url, "a");
    let fa = until_active(&a, Duration::from_secs(10)).await;
    assert_eq!(fa.step_timeout, LeadershipConfig::default().lease_timeout / 2);
    let over = fa.step_timeout + Duration::from_millis(500);

    // One statement longer than the step timeout is cancelled, and nothing commits.
    let mut w = db::connect(&DbConfig::new(&tdb.url), SessionKind::Pooled).await.unwrap();
    let e = long_fenced_write(&mut w, &fa, "a", 1, over).await.unwrap_err();
    assert!(e.to_string().contains("statement timeout"), "{e}");

    // A pause longer than the step timeout inside the transaction: the server ends it.
    let mut w = db::connect(&DbConfig::new(&tdb.url), SessionKind::Pooled).await.unwrap();
    let r = leadership::fenced::<_, LeadershipError, _>(&mut w, &fa, |c| {
        async move {
            diesel::sql_query("insert into fenced_writes values (1, 'idle')")
                .execute(c)
                .await
                .map_err(|e| DbError::from_diesel("test write", e))?;
            tokio::time::sleep(over).await;
            diesel::sql_query("insert into fenced_writes values (1, 'after the pause')")
                .execute(c)
                .await
                .map_err(|e| DbError::from_diesel("test write after a pause", e))?;
            Ok(())
        }
        .scope_boxed()
    })
    .await;
    assert!(r.is_err(), "a fenced transaction idled past its step timeout and committed");
    assert_eq!(rows(&mut c).await, vec![]);

    // Within the bounds, it commits; and the bounds end with the transaction.
    let mut w = db::connect(&DbConfig::new(&tdb.url), SessionKind::Pooled).await.unwrap();
    write(&mut w, &fa, "a").await.unwrap();
    diesel::sql_query(format!("select pg_sleep({})", over.as_secs_f64())).execute(&mut w).await.unwrap();
    assert_eq!(rows(&mut c).await, vec![(fa.epoch, "a".to_string())]);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_blackholed_inside_a_fenced_transaction_is_replaced_within_lease_and_grace() {
    let tdb = fresh_database().await;
    let mut c = prepare(&tdb).await;
    let (proxy, a, fa, b) = leader_via_proxy_and_standby(&tdb, &mut c).await;

    // a's writer, on the same network path as a, is inside a fenced transaction (holding
    // the fence row) when the network goes.
    let mut w = db::connect(&DbConfig::new(tdb.url_via(proxy.addr())), SessionKind::Pooled).await.unwrap();
    let (inside_tx, inside) = tokio::sync::oneshot::channel();
    let go = std::sync::Arc::new(tokio::sync::Notify::new());
    let go2 = go.clone();
    let fence = fa.clone();
    let writer = tokio::spawn(async move {
        leadership::fenced::<_, LeadershipError, _>(&mut w, &fence, |c| {
            async move {
                diesel::sql_query("insert into fenced_writes values ($1, 'partitioned')")
                    .bind::<BigInt, _>(fence.epoch)
                    .execute(c)
                    .await
                    .map_err(|e| DbError::from_diesel("test write", e))?;
                let _ = inside_tx.send(());
                go2.notified().await;
                diesel::sql_query("select 1").execute(c).await.map_err(|e| DbError::from_diesel("test read", e))?;
                Ok(())
            }
            .scope_boxed()
        })
        .await
    });
    inside.await.unwrap();

    proxy.blackhole();
    let cut = Instant::now();
    go.notify_one();
    let cfg = LeadershipConfig::default();
    let fb = until_active(&b, Duration::from_secs(40)).await;
    let taken = cut.elapsed();
    println!("leader blackholed inside a fenced transaction replaced after {taken:?}");
    assert!(!a.role().is_active(), "two leaders");
    let limit = cfg.lease_timeout + cfg.takeover_grace + Duration::from_secs(3);
    assert!(taken < limit, "takeover took {taken:?}, more than lease + grace + slack ({limit:?})");
    assert_eq!(fb.epoch, fa.epoch + 1);

    // The partitioned transaction never commits, and a's epoch is fenced off.
    let e = write(&mut c, &fa, "a").await.unwrap_err();
    assert!(matches!(e, LeadershipError::Fenced { .. }), "{e}");
    write(&mut c, &fb, "b").await.unwrap();
    proxy.restore();
    let r = tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .expect("the partitioned writer never returned")
        .unwrap();
    assert!(r.is_err(), "the partitioned fenced transaction committed");
    assert_eq!(rows(&mut c).await, vec![(fb.epoch, "b".to_string())]);
    a.shutdown().await;
    b.shutdown().await;
}

/// FNV-1a folded to 16 bits: how leadership lock ids were derived before the two-key form.
fn old_16_bit_lock_index(group: &str) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in group.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    ((h >> 16) ^ (h & 0xffff)) as u16
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_whose_16_bit_lock_ids_collided_lead_independently() {
    let mut seen = std::collections::HashMap::new();
    let (g1, g2) = (0..100_000)
        .map(|i| format!("participant{i}"))
        .find_map(|g| seen.insert(old_16_bit_lock_index(&g), g.clone()).map(|other| (other, g)))
        .expect("a 16-bit collision among 100000 names");
    assert_ne!(LockId::leadership(&g1), LockId::leadership(&g2), "{g1} and {g2} share a lock");

    let tdb = fresh_database().await;
    let mut c = prepare(&tdb).await;
    let (r1, r2) = (replica_of(&tdb.url, &g1, "a"), replica_of(&tdb.url, &g2, "b"));
    let f1 = until_active(&r1, Duration::from_secs(10)).await;
    let f2 = until_active(&r2, Duration::from_secs(10)).await;
    assert_eq!((f1.epoch, f2.epoch), (1, 1));

    // pg_locks lookups find each group's own two-key lock.
    for (g, name) in [(&g1, "a"), (&g2, "b")] {
        let leader = leadership::leader(&mut c, g).await.unwrap().unwrap();
        assert_eq!(leader.holder, name);
        assert_eq!(locks::holder_pid(&mut c, LockId::leadership(g)).await.unwrap(), Some(leader.holder_pid));
    }
    let s1 = replica_of(&tdb.url, &g1, "a2");
    let start = Instant::now();
    while locks::waiters(&mut c, LockId::leadership(&g1)).await.unwrap() != 1 {
        assert!(start.elapsed() < Duration::from_secs(15), "the standby of {g1} never waits");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(locks::waiters(&mut c, LockId::leadership(&g2)).await.unwrap(), 0);
    // The standby of g1 takes over from g1's leader only.
    r1.set_passive().await.unwrap();
    let f3 = until_active(&s1, Duration::from_secs(5)).await;
    assert_eq!((f3.group.as_str(), f3.epoch), (g1.as_str(), 2));
    assert_eq!(r2.role(), Role::Active(f2));
    for r in [r1, r2, s1] {
        r.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epochs_continue_from_a_row_under_the_former_lock_id() {
    let tdb = fresh_database().await;
    let mut c = prepare(&tdb).await;
    // What a group's row looked like under its former 16-bit lock id.
    let old_key = ((locks::LOCK_PREFIX as i64) << 32) | (3 << 16) | i64::from(old_16_bit_lock_index(GROUP));
    assert_ne!(old_key, LockId::leadership(GROUP).key());
    diesel::sql_query("insert into leadership values ($1, $2, 7, 'old', 0, 0, 0)")
        .bind::<BigInt, _>(old_key)
        .bind::<Text, _>(GROUP)
        .execute(&mut c)
        .await
        .unwrap();
    let a = replica(&tdb.url, "a");
    let fa = until_active(&a, Duration::from_secs(10)).await;
    assert_eq!(fa.epoch, 8, "the epoch went back after the lock id changed");
    write(&mut c, &fa, "a").await.unwrap();
    a.shutdown().await;
}

/// A service's own store error, as a mediator or topology store would have it.
#[derive(Debug, thiserror::Error)]
enum OwnStoreError {
    #[error(transparent)]
    Leadership(#[from] LeadershipError),
    #[error("refused by the service: {0}")]
    Refused(String),
}

/// `fenced` runs with the caller's error type: its own errors roll the write back and come
/// out as they went in, and a stale epoch comes out as that type's `Fenced`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_writes_carry_the_callers_error_type() {
    let tdb = fresh_database().await;
    let mut c = prepare(&tdb).await;
    let a = replica(&tdb.url, "a");
    let fa = until_active(&a, Duration::from_secs(10)).await;
    let own = |fence: Fence, refuse: bool| {
        let url = tdb.url.clone();
        async move {
            let mut w = db::connect(&DbConfig::new(&url), SessionKind::Pooled).await.unwrap();
            leadership::fenced::<_, OwnStoreError, _>(&mut w, &fence, |c| {
                async move {
                    diesel::sql_query("insert into fenced_writes values ($1, 'own')")
                        .bind::<BigInt, _>(fence.epoch)
                        .execute(c)
                        .await
                        .map_err(|e| LeadershipError::from(DbError::from_diesel("test write", e)))?;
                    if refuse {
                        return Err(OwnStoreError::Refused("after the insert".into()));
                    }
                    Ok(())
                }
                .scope_boxed()
            })
            .await
        }
    };
    let e = own(fa.clone(), true).await.unwrap_err();
    assert!(matches!(e, OwnStoreError::Refused(_)), "{e}");
    assert!(rows(&mut c).await.is_empty(), "the caller's error rolled the write back");
    own(fa.clone(), false).await.unwrap();
    assert_eq!(rows(&mut c).await, vec![(fa.epoch, "own".to_string())]);
    let stale = Fence { epoch: fa.epoch - 1, ..fa.clone() };
    let e = own(stale, false).await.unwrap_err();
    assert!(matches!(e, OwnStoreError::Leadership(LeadershipError::Fenced { .. })), "{e}");
    a.shutdown().await;
}
