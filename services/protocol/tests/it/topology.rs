//! The topology store and processor: effective times, delay changes, replay idempotency,
//! identical outcomes on independent stores, removal, nesting in a caller's transaction, and
//! two writers on one store.

use std::collections::BTreeSet;
use std::time::Duration;

use diesel::sql_types::BigInt;
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use syncline_coordination::db::{self, SessionKind};
use syncline_coordination::DbConfig;
use syncline_protocol::messages::{
    self, Mapping, MediatorState, Message, Operation, ParticipantJoin, PartyToParticipant, Permission,
    SynchronizerParameters, TopologyTransaction,
};
use syncline_protocol::topology::{
    self, apply, processor, store, Applied, Outcome, TopologyError, TopologySnapshot, OPERATOR,
};
use syncline_testkit::{fresh_database, TestDb};

/// An arbitrary sequencer time (µs).
const T: i64 = 1_800_000_000_000_000;
const MS: i64 = 1_000;
/// The default topology change delay.
const DELAY: i64 = 250 * MS;

async fn store_db() -> (TestDb, AsyncPgConnection) {
    let tdb = fresh_database().await;
    let cfg = DbConfig::new(&tdb.url);
    db::migrate(&cfg).await.unwrap();
    let conn = db::connect(&cfg, SessionKind::Pooled).await.unwrap();
    (tdb, conn)
}

async fn connect(tdb: &TestDb) -> AsyncPgConnection {
    db::connect(&DbConfig::new(&tdb.url), SessionKind::Pooled).await.unwrap()
}

fn tx(operation: Operation, serial: u32, mapping: Mapping) -> TopologyTransaction {
    TopologyTransaction { operation, serial, mapping }
}

fn join(serial: u32, p: &str) -> TopologyTransaction {
    tx(Operation::AddReplace, serial, Mapping::ParticipantJoin(ParticipantJoin { participant: p.into() }))
}

fn party(serial: u32, party: &str, hosts: &[&str]) -> TopologyTransaction {
    tx(
        Operation::AddReplace,
        serial,
        Mapping::PartyToParticipant(PartyToParticipant {
            party: party.into(),
            participants: hosts.iter().map(|h| (h.to_string(), Permission::Confirmation)).collect(),
        }),
    )
}

fn params(serial: u32, delay: Duration) -> TopologyTransaction {
    tx(
        Operation::AddReplace,
        serial,
        Mapping::SynchronizerParameters(SynchronizerParameters {
            topology_change_delay: delay,
            confirmation_response_timeout: Duration::from_secs(3),
            ..Default::default()
        }),
    )
}

fn mediator(serial: u32, m: &str) -> TopologyTransaction {
    tx(Operation::AddReplace, serial, Mapping::MediatorState(MediatorState { mediator: m.into() }))
}

fn remove(mut t: TopologyTransaction, serial: u32) -> TopologyTransaction {
    t.operation = Operation::Remove;
    t.serial = serial;
    t
}

async fn accepted(conn: &mut AsyncPgConnection, at: i64, sender: &str, t: &TopologyTransaction) -> i64 {
    match apply(conn, at, sender, t).await.unwrap() {
        Applied::Accepted { effective_from } => effective_from,
        Applied::Ignored(reason) => panic!("{t:?} from {sender} at {at} ignored: {reason}"),
    }
}

async fn ignored(conn: &mut AsyncPgConnection, at: i64, sender: &str, t: &TopologyTransaction) -> String {
    match apply(conn, at, sender, t).await.unwrap() {
        Applied::Ignored(reason) => reason,
        other => panic!("{t:?} from {sender} at {at} was {other:?}, expected ignored"),
    }
}

async fn snap(conn: &mut AsyncPgConnection, at: i64) -> TopologySnapshot {
    store::snapshot_at(conn, at).await.unwrap()
}

#[tokio::test]
async fn changes_take_effect_only_after_the_delay() {
    let (_db, mut c) = store_db().await;
    assert_eq!(accepted(&mut c, T, OPERATOR, &join(1, "p1")).await, T + DELAY);
    assert!(!snap(&mut c, T + DELAY - 1).await.is_active_participant("p1"));
    assert!(snap(&mut c, T + DELAY).await.is_active_participant("p1"));

    // A party published before the join is effective is ignored (the participant had not
    // joined at its sequencing time), however soon the join takes effect.
    let reason = ignored(&mut c, T + 100 * MS, "p1", &party(1, "alice", &["p1"])).await;
    assert!(reason.contains("not a joined participant"), "{reason}");
    assert!(!snap(&mut c, T + 10 * DELAY).await.is_hosted("alice"));

    let at = T + 300 * MS;
    assert_eq!(accepted(&mut c, at, "p1", &party(1, "alice", &["p1"])).await, at + DELAY);
    assert!(!snap(&mut c, at + DELAY - 1).await.is_hosted("alice"));
    let s = snap(&mut c, at + DELAY).await;
    assert!(s.is_hosted_with_confirmation("alice"));
    assert_eq!(s.participants_for(["alice"]), BTreeSet::from(["p1".to_string()]));

    // Parameters and mediator: defaults until the published ones take effect.
    let at = T + 400 * MS;
    accepted(&mut c, at, OPERATOR, &params(1, Duration::from_millis(250))).await;
    accepted(&mut c, at + MS, OPERATOR, &mediator(1, "mediator")).await;
    let before = snap(&mut c, at + DELAY - 1).await;
    assert_eq!(before.parameters(), SynchronizerParameters::default());
    assert!(!before.parameters_published());
    assert_eq!(before.mediator(), None);
    let after = snap(&mut c, at + MS + DELAY).await;
    assert_eq!(after.parameters().confirmation_response_timeout, Duration::from_secs(3));
    assert_eq!(after.mediator(), Some("mediator"));
}

#[tokio::test]
async fn a_delay_change_takes_effect_after_the_old_delay() {
    let (_db, mut c) = store_db().await;
    // Raise the delay to 2 s: in effect after the old 250 ms.
    assert_eq!(accepted(&mut c, T, OPERATOR, &params(1, Duration::from_secs(2))).await, T + DELAY);
    // Sequenced before that: still the old delay.
    let at = T + 100 * MS;
    assert_eq!(accepted(&mut c, at, OPERATOR, &join(1, "p1")).await, at + DELAY);
    // Sequenced after: the new one.
    let at = T + 300 * MS;
    assert_eq!(accepted(&mut c, at, OPERATOR, &join(1, "p2")).await, at + 2_000 * MS);
    assert!(!snap(&mut c, at + 2_000 * MS - 1).await.is_active_participant("p2"));
    assert!(snap(&mut c, at + 2_000 * MS).await.is_active_participant("p2"));

    // Lower it to 0 at T+1 s: in effect after the 2 s in effect then.
    let t1 = T + 1_000 * MS;
    assert_eq!(accepted(&mut c, t1, OPERATOR, &params(2, Duration::ZERO)).await, t1 + 2_000 * MS);
    let at = t1 + 1_500 * MS;
    assert_eq!(accepted(&mut c, at, OPERATOR, &join(1, "p3")).await, at + 2_000 * MS);
    // Under the new delay 0 this would take effect at once, before p3's join: effective
    // times stay in sequencing order instead.
    let at = t1 + 2_100 * MS;
    assert_eq!(accepted(&mut c, at, OPERATOR, &join(1, "p4")).await, t1 + 3_500 * MS);
    // Once past the latest effective time, delay 0 applies.
    let at = t1 + 4_000 * MS;
    assert_eq!(accepted(&mut c, at, OPERATOR, &join(1, "p5")).await, at);
    assert!(snap(&mut c, at).await.is_active_participant("p5"));
}

/// A sequence mixing accepted and ignored transactions; returns what each did.
fn history() -> Vec<(i64, &'static str, TopologyTransaction)> {
    let t = |ms: i64| T + ms * MS;
    vec![
        (t(0), OPERATOR, params(1, Duration::from_millis(100))),
        (t(1), OPERATOR, mediator(1, "mediator")),
        (t(2), OPERATOR, join(1, "p1")),
        (t(3), OPERATOR, join(1, "p2")),
        // Party before join: p1's join takes effect at t(252).
        (t(10), "p1", party(1, "alice", &["p1"])),
        (t(300), "p1", party(1, "alice", &["p1"])),
        // A participant publishing a party for another participant.
        (t(301), "p1", party(1, "bob", &["p2"])),
        (t(302), "p1", party(1, "bob", &["p1", "p2"])),
        // A non-operator publishing parameters, a mediator, a join.
        (t(303), "p2", params(2, Duration::ZERO)),
        (t(304), "mediator", mediator(2, "evil")),
        (t(305), "p2", join(1, "p9")),
        // Wrong serials.
        (t(306), OPERATOR, join(1, "p1")),
        (t(307), OPERATOR, params(3, Duration::ZERO)),
        (t(308), "p2", party(2, "bob", &["p2"])),
        // Taking over another participant's party.
        (t(309), "p2", party(2, "alice", &["p2"])),
        // Removing what is not there.
        (t(310), OPERATOR, remove(join(0, "p7"), 1)),
        // Accepted ones in between.
        (t(311), "p2", party(1, "bob", &["p2"])),
        (t(312), OPERATOR, party(2, "alice", &["p1", "p2"])),
        (t(500), OPERATOR, remove(join(0, "p2"), 2)),
    ]
}

#[tokio::test]
async fn unauthorized_transactions_are_ignored_identically_by_independent_stores() {
    let (_a, mut a) = store_db().await;
    let (_b, mut b) = store_db().await;
    let mut outcomes = Vec::new();
    for (at, sender, t) in history() {
        let x = apply(&mut a, at, sender, &t).await.unwrap();
        let y = apply(&mut b, at, sender, &t).await.unwrap();
        assert_eq!(x, y, "{t:?} from {sender}");
        outcomes.push(x);
    }
    let reasons: Vec<Option<&str>> = outcomes
        .iter()
        .map(|o| match o {
            Applied::Accepted { .. } => None,
            Applied::Ignored(r) => Some(r.as_str()),
        })
        .collect();
    let expect_ignored = |i: usize, needle: &str| {
        let r = reasons[i].unwrap_or_else(|| panic!("transaction {i} was accepted"));
        assert!(r.contains(needle), "transaction {i}: {r:?} lacks {needle:?}");
    };
    for i in [0, 1, 2, 3, 5, 16, 17, 18] {
        assert_eq!(reasons[i], None, "transaction {i} ignored");
    }
    expect_ignored(4, "not a joined participant");
    expect_ignored(6, "only on itself alone");
    expect_ignored(7, "only on itself alone");
    expect_ignored(8, "only the operator");
    expect_ignored(9, "only the operator");
    expect_ignored(10, "only the operator");
    expect_ignored(11, "serial 1 for the participant join of p1, expected 2");
    expect_ignored(12, "expected 2");
    expect_ignored(13, "serial 2 for the party-to-participant of bob, expected 1");
    expect_ignored(14, "hosted by");
    expect_ignored(15, "nothing to remove");

    // Same stored history, same snapshots at every step.
    let (la, lb) = (store::list(&mut a).await.unwrap(), store::list(&mut b).await.unwrap());
    assert_eq!(la, lb);
    assert_eq!(la.len(), history().len());
    for ms in [0, 100, 101, 200, 400, 412, 599, 600, 1_000] {
        assert_eq!(snap(&mut a, T + ms * MS).await, snap(&mut b, T + ms * MS).await, "at +{ms} ms");
    }
    let end = snap(&mut a, T + 1_000 * MS).await;
    assert_eq!(end.mediator(), Some("mediator"));
    assert_eq!(end.parameters().topology_change_delay, Duration::from_millis(100));
    assert_eq!(end.participants(), &BTreeSet::from(["p1".to_string()]));
    assert_eq!(end.participants_for(["alice", "bob"]), BTreeSet::from(["p1".to_string()]), "p2 was removed");
}

#[tokio::test]
async fn replay_after_a_failover_changes_nothing() {
    let (_db, mut c) = store_db().await;
    let first: Vec<Applied> = {
        let mut v = Vec::new();
        for (at, sender, t) in history() {
            v.push(apply(&mut c, at, sender, &t).await.unwrap());
        }
        v
    };
    let stored = store::list(&mut c).await.unwrap();
    // A new leader replays from an earlier position: every outcome is the stored one.
    for ((at, sender, t), expected) in history().into_iter().zip(&first).skip(3) {
        assert_eq!(&apply(&mut c, at, sender, &t).await.unwrap(), expected);
    }
    assert_eq!(store::list(&mut c).await.unwrap(), stored, "replay changed the store");

    // Something else at a stored timestamp is not a replay.
    let (at, _, _) = history()[5].clone();
    let err = apply(&mut c, at, "p2", &party(1, "alice", &["p1"])).await.unwrap_err();
    assert!(matches!(err, TopologyError::ConflictingReplay { stored_sender, .. } if stored_sender == "p1"));
    let err = apply(&mut c, at, "p1", &party(1, "carol", &["p1"])).await.unwrap_err();
    assert!(matches!(err, TopologyError::ConflictingReplay { .. }), "{err}");
    // A new transaction older than the latest stored one is out of order.
    let err = apply(&mut c, T + 5 * MS, OPERATOR, &join(1, "p8")).await.unwrap_err();
    assert!(matches!(err, TopologyError::OutOfOrder { latest, .. } if latest == T + 500 * MS), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(store::list(&mut c).await.unwrap(), stored);
}

#[tokio::test]
async fn removal_ends_a_mapping_when_it_takes_effect() {
    let (_db, mut c) = store_db().await;
    accepted(&mut c, T, OPERATOR, &join(1, "p1")).await;
    let alice = party(1, "alice", &["p1"]);
    let added = accepted(&mut c, T + 300 * MS, "p1", &alice).await;
    let at = T + 400 * MS;
    let removed = accepted(&mut c, at, "p1", &remove(alice.clone(), 2)).await;
    assert_eq!(removed, at + DELAY);
    assert!(snap(&mut c, removed - 1).await.is_hosted("alice"));
    assert!(!snap(&mut c, removed).await.is_hosted("alice"));
    assert!(snap(&mut c, removed).await.party_mappings().is_empty());

    // The stored validity of the removed mapping ends when the removal takes effect.
    let rows = store::list(&mut c).await.unwrap();
    assert_eq!(rows[1].outcome, Outcome::Accepted { effective_from: added, effective_until: Some(removed) });
    assert_eq!(rows[2].outcome, Outcome::Accepted { effective_from: removed, effective_until: None });
    let head = store::head(&mut c, &topology::MappingKey::Party("alice".into())).await.unwrap().unwrap();
    assert_eq!(head.transaction.operation, Operation::Remove);

    // A second removal is ignored; re-adding continues the serials.
    ignored(&mut c, T + 500 * MS, "p1", &remove(alice.clone(), 3)).await;
    let readded = accepted(&mut c, T + 600 * MS, "p1", &party(3, "alice", &["p1"])).await;
    assert!(snap(&mut c, readded).await.is_hosted("alice"));

    // Removing the participant: it hosts nothing any more, though the party mapping stays.
    let gone = accepted(&mut c, T + 700 * MS, OPERATOR, &remove(join(0, "p1"), 2)).await;
    let s = snap(&mut c, gone).await;
    assert!(!s.is_active_participant("p1"));
    assert!(!s.is_hosted("alice"));
    assert!(s.party_mappings().contains_key("alice"));
    assert!(snap(&mut c, gone - 1).await.is_hosted("alice"));
}

#[tokio::test]
async fn apply_inside_a_callers_transaction_rolls_back_with_it() {
    let (_db, mut c) = store_db().await;
    let result: Result<(), TopologyError> = c
        .transaction::<(), TopologyError, _>(async |c| {
            apply(c, T, OPERATOR, &join(1, "p1")).await?;
            // The caller's later write fails (e.g. fenced): everything rolls back.
            Err(TopologyError::OutOfOrder { sequenced_at: 0, latest: 0 })
        })
        .await;
    assert!(result.is_err());
    assert!(store::list(&mut c).await.unwrap().is_empty(), "the applied transaction outlived the rollback");
    accepted(&mut c, T, OPERATOR, &join(1, "p1")).await;
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Sessions of this database waiting for a lock.
async fn lock_waiters(conn: &mut AsyncPgConnection) -> i64 {
    diesel::sql_query(
        "select count(*) as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'",
    )
    .get_result::<Count>(conn)
    .await
    .unwrap()
    .n
}

#[tokio::test]
async fn two_writers_on_one_store_apply_a_transaction_once() {
    // Two nodes sharing a database (or two replicas in a split brain) apply the same event:
    // the second waits for the first and then sees the stored outcome, instead of failing on
    // a duplicate key.
    let (tdb, mut first) = store_db().await;
    let mut second = connect(&tdb).await;
    let mut observer = connect(&tdb).await;
    let t = join(1, "p1");
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let holder = tokio::spawn({
        let t = t.clone();
        async move {
            first
                .transaction::<Applied, TopologyError, _>(async move |c| {
                    let applied = apply(c, T, OPERATOR, &t).await?;
                    started_tx.send(()).unwrap();
                    release_rx.await.unwrap();
                    Ok(applied)
                })
                .await
                .unwrap()
        }
    });
    started_rx.await.unwrap();
    let waiter = tokio::spawn(async move { apply(&mut second, T, OPERATOR, &t).await });
    let mut waited = 0;
    while lock_waiters(&mut observer).await == 0 {
        waited += 1;
        assert!(waited < 500, "the second writer never waited for the first");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    release_tx.send(()).unwrap();
    let a = holder.await.unwrap();
    let b = waiter.await.unwrap().expect("the second writer failed instead of seeing the stored outcome");
    assert_eq!(a, b);
    assert_eq!(store::list(&mut observer).await.unwrap().len(), 1);
}

#[test]
fn publish_builds_a_broadcast_send() {
    let t = join(1, "p1");
    let req = processor::publish_request(OPERATOR, "topology-1", T, &t);
    assert_eq!(req.sender, OPERATOR);
    assert_eq!(req.message_id, "topology-1");
    assert_eq!(req.max_sequencing_time, T);
    assert_eq!(req.envelopes.len(), 1);
    assert_eq!(req.envelopes[0].recipients, vec![topology::BROADCAST_RECIPIENT]);
    assert_eq!(messages::decode(&req.envelopes[0].content).unwrap(), Message::Topology(t.clone()));
    let mut envelopes = req.envelopes.clone();
    envelopes.push(syncline_proto::sequencer::Envelope { recipients: vec!["x".into()], content: vec![0xff, 0xff] });
    let found = processor::topology_transactions(&envelopes);
    assert_eq!(found.len(), 2);
    assert_eq!(found[0], Ok(t));
    assert!(matches!(found[1], Err((1, _))));
}
