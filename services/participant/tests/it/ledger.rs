//! The ledger API against a real sequencer and mediator: two participants, one replica each.

use syncline_participant::model::{Command, Event};

use crate::harness::*;

/// A synchronizer with participants p1 (hosting alice) and p2 (hosting bob).
struct Setup {
    sync: Synchronizer,
    p1: Node,
    p2: Node,
}

async fn setup() -> Setup {
    let sync = Synchronizer::start(short_timeouts()).await;
    let url = sync.seq.url();
    let (p1, p2) = tokio::join!(Node::start("p1", &url), Node::start("p2", &url));
    let (api1, api2) = (p1.api(), p2.api());
    let (alice, bob) = tokio::join!(api1.allocate_party(Some("alice")), api2.allocate_party(Some("bob")));
    assert!(alice.unwrap().is_local && bob.unwrap().is_local);
    Setup { sync, p1, p2 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_with_an_observer_on_the_other_participant() {
    let s = setup().await;
    let (a1, a2) = (s.p1.api(), s.p2.api());
    assert_eq!(a1.participant_id(), "p1");
    let parties = a1.list_parties().await.unwrap();
    assert!(parties.iter().any(|p| p.party == "alice" && p.is_local), "{parties:?}");
    assert!(parties.iter().any(|p| p.party == "bob" && !p.is_local), "{parties:?}");
    let (end1, end2) = (a1.ledger_end().await.unwrap().offset, a2.ledger_end().await.unwrap().offset);

    let create = commands("alice", "create-1", vec![Command::Create(iou(&["alice"], &["bob"], 10))]);
    a1.submit(create).await.unwrap();
    let c = completion_of(&a1, "alice", end1, "create-1").await;
    assert!(c.status.is_ok(), "{c:?}");
    assert_eq!(c.offset, end1 + 1, "the next offset");
    let t1 = &transactions(&a1, "alice", end1, 1).await[0];
    let t2 = &transactions(&a2, "bob", end2, 1).await[0];
    assert_eq!(t1.update_id, t2.update_id, "one update id everywhere");
    assert_eq!(Some(&t1.update_id), c.update_id.as_ref());
    assert_eq!((t1.offset, t2.offset), (end1 + 1, end2 + 1), "each participant's own offsets");
    assert_eq!(t1.record_time, t2.record_time);
    assert_eq!(t1.command_id.as_deref(), Some("create-1"), "the submitter knows its command");
    assert_eq!(t2.command_id, None, "the observer does not");
    let Event::Created(created) = &t2.events[0] else { panic!("{t2:?}") };
    assert_eq!(a1.update_by_id(&t1.update_id, &["alice".into()]).await.unwrap(), *t1);
    let e = a1.update_by_id(&t1.update_id, &["carol".into()]).await.unwrap_err();
    assert_eq!(e.error_id(), "UPDATE_NOT_FOUND");
    let acs2 = a2.active_contracts(&["bob".into()], None).await.unwrap();
    assert_eq!(acs2.len(), 1);
    assert_eq!(acs2[0].created, *created);

    let archive = commands("alice", "archive-1", vec![Command::Archive { contract_id: created.contract_id.clone() }]);
    a1.submit(archive).await.unwrap();
    let c = completion_of(&a1, "alice", end1 + 1, "archive-1").await;
    assert!(c.status.is_ok(), "{c:?}");
    let t2b = &transactions(&a2, "bob", end2 + 1, 1).await[0];
    assert!(matches!(&t2b.events[0], Event::Archived(a) if a.contract_id == created.contract_id), "{t2b:?}");
    assert_eq!(t2b.offset, end2 + 2);
    for (api, party) in [(&a1, "alice"), (&a2, "bob")] {
        assert!(api.active_contracts(&[party.into()], None).await.unwrap().is_empty(), "ACS empty at {party}");
    }
    let at_create = a2.active_contracts(&["bob".into()], Some(end2 + 1)).await.unwrap();
    assert_eq!(at_create.len(), 1, "the ACS as of the create's offset");
    let e = a2.active_contracts(&["bob".into()], Some(end2 + 10)).await.unwrap_err();
    assert_eq!((e.error_id(), e.code()), ("OFFSET_AFTER_LEDGER_END", tonic::Code::OutOfRange));
    drop(s.sync);
}
