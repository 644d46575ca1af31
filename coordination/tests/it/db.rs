//! `db` and `locks` against a real PostgreSQL: migrations, the retry policy, outages.

use std::time::Duration;

use diesel::sql_types::BigInt;
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use scoped_futures::ScopedFutureExt;
use syncline_coordination::db::{self, SessionKind};
use syncline_coordination::locks::{self, LockId};
use syncline_coordination::{Db, DbConfig, DbError};
use syncline_testkit::{fresh_database, FaultProxy};

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[tokio::test]
async fn migrations_are_idempotent_and_safe_when_started_together() {
    let tdb = fresh_database().await;
    let cfg = DbConfig::new(&tdb.url);
    let runs: Vec<_> = (0..5)
        .map(|_| {
            tokio::spawn({
                let cfg = cfg.clone();
                async move { db::migrate(&cfg).await }
            })
        })
        .collect();
    for r in runs {
        r.await.unwrap().expect("concurrent migration");
    }
    db::migrate(&cfg).await.expect("second migration is a no-op");
    let db = Db::new(cfg).unwrap();
    let n: N = db
        .run("counting migrations", |c| {
            async move {
                diesel::sql_query("select count(*) as n from __diesel_schema_migrations")
                    .get_result(c)
                    .await
                    .map_err(|e| DbError::from_diesel("count", e))
            }
            .scope_boxed()
        })
        .await
        .unwrap();
    let embedded =
        diesel::migration::MigrationSource::<diesel::pg::Pg>::migrations(&syncline_schema::MIGRATIONS).unwrap();
    assert_eq!(n.n as usize, embedded.len(), "every migration applied exactly once");
}

#[tokio::test]
async fn advisory_locks_are_exclusive_and_visible_in_pg_locks() {
    let tdb = fresh_database().await;
    let cfg = DbConfig::new(&tdb.url);
    db::migrate(&cfg).await.unwrap(); // `locks::lock` waits through a procedure of the schema
    let mut a = db::connect(&cfg, SessionKind::Lock).await.unwrap();
    let mut b = db::connect(&cfg, SessionKind::Lock).await.unwrap();
    let id = LockId::new(locks::LockRole::SequencerIndex, 3);
    assert!(locks::try_lock(&mut a, id).await.unwrap());
    assert!(!locks::try_lock(&mut b, id).await.unwrap());
    assert!(locks::held_by_me(&mut a, id).await.unwrap());
    assert!(!locks::held_by_me(&mut b, id).await.unwrap());
    let pid_a = locks::backend_pid(&mut a).await.unwrap();
    assert_eq!(locks::holder_pid(&mut b, id).await.unwrap(), Some(pid_a));
    assert_eq!(locks::holder_pid(&mut b, LockId::new(locks::LockRole::SequencerIndex, 4)).await.unwrap(), None);
    // A blocked waiter shows up as a non-granted request.
    let waiter = tokio::spawn(async move {
        locks::lock(&mut b, id).await.unwrap();
        b
    });
    for _ in 0..100 {
        if locks::waiters(&mut a, id).await.unwrap() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(locks::waiters(&mut a, id).await.unwrap(), 1);
    assert!(locks::unlock(&mut a, id).await.unwrap());
    let mut b = tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
    assert!(locks::held_by_me(&mut b, id).await.unwrap());
}

#[tokio::test]
async fn lock_ids_are_namespaced_and_distinct() {
    let ids = [
        LockId::migrations(),
        LockId::new(locks::LockRole::SequencerIndex, 0),
        LockId::new(locks::LockRole::SequencerIndex, 31),
        LockId::leadership("mediator"),
        LockId::leadership("participant1"),
    ];
    for (i, a) in ids.iter().enumerate() {
        assert_eq!((a.key() >> 32) as u32, locks::LOCK_PREFIX);
        for b in &ids[i + 1..] {
            assert_ne!(a.key(), b.key());
        }
    }
    assert_eq!(LockId::leadership("mediator"), LockId::leadership("mediator"));
}

#[tokio::test]
async fn outage_gives_retryable_errors_and_recovers_without_losing_commits() {
    let tdb = fresh_database().await;
    db::migrate(&DbConfig::new(&tdb.url)).await.unwrap();
    let proxy = FaultProxy::start(tdb.server_addr()).await;
    let mut cfg = DbConfig::new(tdb.url_via(proxy.addr()));
    cfg.connect_timeout = Duration::from_millis(500);
    cfg.statement_timeout = Duration::from_millis(500);
    cfg.retry.max_retries = 2;
    let db = Db::new(cfg).unwrap();
    let insert = async |v: i64| {
        db.run("inserting", |c| {
            async move {
                diesel::sql_query("insert into sequencer_watermarks values ($1, 0, false)")
                    .bind::<diesel::sql_types::Integer, _>(v as i32)
                    .execute(c)
                    .await
                    .map_err(|e| DbError::from_diesel("insert", e))
            }
            .scope_boxed()
        })
        .await
    };
    insert(1).await.unwrap();
    proxy.down();
    let err = insert(2).await.expect_err("must fail while the database is unreachable");
    assert!(err.is_retryable(), "outage error must be retryable: {err}");
    proxy.blackhole();
    let err = insert(3).await.expect_err("must fail while the database is blackholed");
    assert!(err.is_retryable(), "blackhole error must be retryable: {err}");
    proxy.restore();
    // The pool reconnects by itself.
    let mut ok = false;
    for _ in 0..50 {
        if insert(4).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "inserts succeed again after restore");
    let n: N = db
        .run("count", |c| {
            async move {
                diesel::sql_query("select count(*) as n from sequencer_watermarks where node_index in (1, 4)")
                    .get_result(c)
                    .await
                    .map_err(|e| DbError::from_diesel("count", e))
            }
            .scope_boxed()
        })
        .await
        .unwrap();
    assert_eq!(n.n, 2, "what was committed before the outage is still there");
}

/// Error events written before error codes had a column carried the code as a "CODE: "
/// prefix of the message: the migration that adds the column splits them.
#[tokio::test]
async fn the_error_code_migration_splits_old_error_events() {
    use diesel::migration::MigrationSource;
    use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
    use diesel_async::AsyncPgConnection;
    use diesel_migrations::MigrationHarness;

    let tdb = fresh_database().await;
    let cfg = DbConfig::new(&tdb.url);
    let conn = db::connect(&cfg, SessionKind::Lock).await.unwrap();
    tokio::task::spawn_blocking(move || {
        let mut h = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
        let all = MigrationSource::<diesel::pg::Pg>::migrations(&syncline_schema::MIGRATIONS).unwrap();
        let before: Vec<_> = all.iter().take_while(|m| !m.name().to_string().contains("event_error_code")).collect();
        assert!(before.len() < all.len(), "the error-code migration exists");
        diesel::migration::MigrationConnection::setup(&mut h).unwrap();
        for m in before {
            h.run_migration(m.as_ref()).unwrap();
        }
        diesel::RunQueryDsl::execute(
            diesel::sql_query(
                "insert into sequencer_events (ts, node_index, kind, sender, recipients, error_message) values \
             (1, 0, 'error', 1, '{1}', 'UNKNOWN_RECIPIENTS: dave, erin'), (2, 0, 'error', 1, '{1}', 'no code here')",
            ),
            &mut h,
        )
        .unwrap();
    })
    .await
    .unwrap();
    db::migrate(&cfg).await.unwrap();

    #[derive(QueryableByName, Debug, PartialEq)]
    struct Split {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        error_code: Option<String>,
        #[diesel(sql_type = diesel::sql_types::Text)]
        error_message: String,
    }
    let mut c = db::connect(&cfg, SessionKind::Pooled).await.unwrap();
    let rows: Vec<Split> = diesel::sql_query("select error_code, error_message from sequencer_events order by ts")
        .load(&mut c)
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![
            Split { error_code: Some("UNKNOWN_RECIPIENTS".into()), error_message: "dave, erin".into() },
            Split { error_code: None, error_message: "no code here".into() },
        ]
    );
}

/// A session waiting for an advisory lock does not hold back VACUUM: it waits in slices, each
/// its own transaction, so its snapshot's xmin moves on while it waits. (Waiting in one
/// statement kept the snapshot of its start for the whole wait, hours for a standby replica,
/// and no dead row of any table could be removed meanwhile.) The wait still ends the moment
/// the holder lets go, and the lock stays held after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_waiting_for_a_lock_does_not_hold_back_vacuum() {
    let tdb = fresh_database().await;
    let cfg = DbConfig::new(&tdb.url);
    db::migrate(&cfg).await.unwrap();
    let mut a = db::connect(&cfg, SessionKind::Lock).await.unwrap();
    let mut b = db::connect(&cfg, SessionKind::Lock).await.unwrap();
    let mut c = db::connect(&cfg, SessionKind::Pooled).await.unwrap();
    let id = LockId::new(locks::LockRole::SequencerIndex, 5);
    assert!(locks::try_lock(&mut a, id).await.unwrap());
    let pid_b = locks::backend_pid(&mut b).await.unwrap();
    let waiter = tokio::spawn(async move {
        locks::lock(&mut b, id).await.unwrap();
        b
    });
    let start = std::time::Instant::now();
    while locks::waiters(&mut a, id).await.unwrap() != 1 {
        assert!(start.elapsed() < Duration::from_secs(20), "the waiter never waited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A transaction id assigned after the wait began (a snapshot taken before has an xmin at or
    // below it): the waiter's xmin must get past it.
    let later: N =
        diesel::sql_query("select (txid_current() % 4294967296)::bigint as n").get_result(&mut c).await.unwrap();
    let start = std::time::Instant::now();
    loop {
        // No xmin (between slices) holds nothing back either.
        let xmin: N = diesel::sql_query(
            "select coalesce((select backend_xmin::text::bigint from pg_stat_activity where pid = $1), 9223372036854775807) as n",
        )
        .bind::<diesel::sql_types::Integer, _>(pid_b)
        .get_result(&mut c)
        .await
        .unwrap();
        if xmin.n > later.n {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "the waiter's xmin stayed at {} (≤ {})", xmin.n, later.n);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!waiter.is_finished(), "the lock is still held by the other session");
    assert!(locks::unlock(&mut a, id).await.unwrap());
    let mut b = tokio::time::timeout(Duration::from_secs(10), waiter).await.expect("granted once released").unwrap();
    assert!(locks::held_by_me(&mut b, id).await.unwrap(), "held after the wait's transactions ended");
    assert!(!locks::try_lock(&mut a, id).await.unwrap());
}
