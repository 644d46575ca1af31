//! Every authorization and serial rule, both ways.

use std::time::Duration;

use super::*;
use crate::messages::{MediatorState, ParticipantJoin, PartyToParticipant, Permission, SynchronizerParameters};
use crate::topology::mapping::next_serial;

fn join(p: &str) -> Mapping {
    Mapping::ParticipantJoin(ParticipantJoin { participant: p.into() })
}

fn party(party: &str, hosts: &[&str]) -> Mapping {
    Mapping::PartyToParticipant(PartyToParticipant {
        party: party.into(),
        participants: hosts.iter().map(|p| (p.to_string(), Permission::Submission)).collect(),
    })
}

fn operator_kinds() -> Vec<Mapping> {
    vec![
        join("p2"),
        Mapping::MediatorState(MediatorState { mediator: "mediator".into() }),
        Mapping::SynchronizerParameters(SynchronizerParameters {
            topology_change_delay: Duration::ZERO,
            ..Default::default()
        }),
    ]
}

fn tx(operation: Operation, serial: u32, mapping: Mapping) -> TopologyTransaction {
    TopologyTransaction { operation, serial, mapping }
}

fn add(serial: u32, mapping: Mapping) -> TopologyTransaction {
    tx(Operation::AddReplace, serial, mapping)
}

/// p1 and p2 joined; p9 did not.
fn snapshot() -> TopologySnapshot {
    TopologySnapshot::new(1_000).with(join("p1")).with(join("p2"))
}

#[test]
fn only_the_operator_issues_joins_mediator_state_and_parameters() {
    let s = snapshot();
    for mapping in operator_kinds() {
        for op in [Operation::AddReplace, Operation::Remove] {
            let t = tx(op, 1, mapping.clone());
            assert_eq!(authorize(&s, None, OPERATOR, &t), Ok(()), "{t:?}");
            for sender in ["p1", "p9", "mediator", "syncline-operator2", ""] {
                assert_eq!(
                    authorize(&s, None, sender, &t),
                    Err(Rejection::NotOperator { sender: sender.into(), kind: mapping.kind() }),
                    "{sender} issuing {t:?}"
                );
            }
        }
    }
}

#[test]
fn a_participant_cannot_join_itself() {
    let t = add(1, join("p9"));
    assert!(matches!(authorize(&snapshot(), None, "p9", &t), Err(Rejection::NotOperator { .. })));
}

#[test]
fn the_operator_may_issue_any_party_mapping() {
    let s = snapshot();
    let hosted_p2 = add(1, party("alice", &["p2"]));
    for mapping in [party("alice", &["p1"]), party("alice", &["p1", "p2"]), party("alice", &["p9"])] {
        assert_eq!(authorize(&s, None, OPERATOR, &add(1, mapping.clone())), Ok(()));
        assert_eq!(authorize(&s, Some(&hosted_p2), OPERATOR, &add(2, mapping.clone())), Ok(()));
        assert_eq!(authorize(&s, Some(&hosted_p2), OPERATOR, &tx(Operation::Remove, 2, mapping)), Ok(()));
    }
}

#[test]
fn a_joined_participant_hosts_a_party_on_itself_alone() {
    let s = snapshot();
    for perm in [Permission::Submission, Permission::Confirmation, Permission::Observation] {
        let m = Mapping::PartyToParticipant(PartyToParticipant {
            party: "alice".into(),
            participants: [("p1".to_string(), perm)].into(),
        });
        assert_eq!(authorize(&s, None, "p1", &add(1, m)), Ok(()));
    }
    for hosts in [&["p2"][..], &["p1", "p2"], &["p9"]] {
        assert_eq!(
            authorize(&s, None, "p1", &add(1, party("alice", hosts))),
            Err(Rejection::HostsOthers {
                sender: "p1".into(),
                party: "alice".into(),
                hosts: hosts.iter().map(|h| h.to_string()).collect(),
            })
        );
    }
}

#[test]
fn a_participant_that_has_not_joined_hosts_nothing() {
    let s = snapshot();
    let t = add(1, party("alice", &["p9"]));
    assert_eq!(authorize(&s, None, "p9", &t), Err(Rejection::NotJoined { participant: "p9".into() }));
    // A removed participant neither (the snapshot has no join for it).
    let without_p1 = TopologySnapshot::new(1_000).with(join("p2"));
    let t = add(1, party("alice", &["p1"]));
    assert_eq!(authorize(&without_p1, None, "p1", &t), Err(Rejection::NotJoined { participant: "p1".into() }));
}

#[test]
fn a_participant_changes_only_mappings_that_host_the_party_on_it_alone() {
    let s = snapshot();
    let mine = add(1, party("alice", &["p1"]));
    let theirs = add(1, party("alice", &["p2"]));
    let shared = add(1, party("alice", &["p1", "p2"]));
    let removed = tx(Operation::Remove, 2, party("alice", &["p2"]));
    let replace = add(2, party("alice", &["p1"]));
    let remove = tx(Operation::Remove, 2, party("alice", &["p1"]));
    assert_eq!(authorize(&s, Some(&mine), "p1", &replace), Ok(()));
    assert_eq!(authorize(&s, Some(&mine), "p1", &remove), Ok(()));
    for head in [&theirs, &shared] {
        for t in [&replace, &remove] {
            assert!(
                matches!(authorize(&s, Some(head), "p1", t), Err(Rejection::HostedElsewhere { .. })),
                "{t:?} over {head:?}"
            );
        }
    }
    // Once removed, the party is free to take.
    assert_eq!(authorize(&s, Some(&removed), "p1", &add(3, party("alice", &["p1"]))), Ok(()));
}

#[test]
fn serials_start_at_one_and_follow_the_head() {
    let m = party("alice", &["p1"]);
    let key = MappingKey::Party("alice".into());
    assert_eq!(next_serial(None), 1);
    assert_eq!(check_serial(None, &add(1, m.clone())), Ok(()));
    for wrong in [2, 3, u32::MAX] {
        assert_eq!(
            check_serial(None, &add(wrong, m.clone())),
            Err(Rejection::Serial { key: key.clone(), expected: 1, found: wrong })
        );
    }
    let head = add(3, m.clone());
    assert_eq!(next_serial(Some(&head)), 4);
    assert_eq!(check_serial(Some(&head), &add(4, m.clone())), Ok(()));
    assert_eq!(check_serial(Some(&head), &tx(Operation::Remove, 4, m.clone())), Ok(()));
    for wrong in [1, 3, 5] {
        assert_eq!(
            check_serial(Some(&head), &add(wrong, m.clone())),
            Err(Rejection::Serial { key: key.clone(), expected: 4, found: wrong })
        );
    }
}

#[test]
fn removal_needs_a_mapping_in_place() {
    let m = party("alice", &["p1"]);
    let key = MappingKey::Party("alice".into());
    assert_eq!(
        check_serial(None, &tx(Operation::Remove, 1, m.clone())),
        Err(Rejection::RemoveAbsent { key: key.clone() })
    );
    let removed = tx(Operation::Remove, 2, m.clone());
    assert_eq!(
        check_serial(Some(&removed), &tx(Operation::Remove, 3, m.clone())),
        Err(Rejection::RemoveAbsent { key })
    );
    assert_eq!(check_serial(Some(&removed), &add(3, m)), Ok(()), "re-added after removal with the next serial");
}

#[test]
fn validate_checks_authorization_then_serial() {
    let s = snapshot();
    let params = operator_kinds().pop().unwrap();
    // Unauthorized and a wrong serial: reported as unauthorized.
    assert!(matches!(validate(&s, None, "p1", &add(5, params.clone())), Err(Rejection::NotOperator { .. })));
    assert!(matches!(validate(&s, None, OPERATOR, &add(5, params.clone())), Err(Rejection::Serial { .. })));
    assert_eq!(validate(&s, None, OPERATOR, &add(1, params)), Ok(()));
}

#[test]
fn keys_identify_mappings() {
    assert_eq!(MappingKey::of(&join("p1")), MappingKey::Participant("p1".into()));
    assert_eq!(MappingKey::of(&party("alice", &["p1"])), MappingKey::of(&party("alice", &["p2"])));
    let kinds = operator_kinds();
    assert_eq!(MappingKey::of(&kinds[1]), MappingKey::Mediator);
    assert_eq!(
        MappingKey::of(&Mapping::MediatorState(MediatorState { mediator: "other".into() })),
        MappingKey::Mediator,
        "the mediator state is a singleton"
    );
    assert_eq!(MappingKey::of(&kinds[2]), MappingKey::Parameters);
    assert_eq!(MappingKey::Mediator.name(), "");
    assert_eq!(MappingKey::Party("alice".into()).name(), "alice");
    assert_eq!(MappingKey::Party("alice".into()).kind().as_str(), "party_to_participant");
}
