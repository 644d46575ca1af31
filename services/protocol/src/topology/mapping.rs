//! Unique keys of mappings and the serial rules.
//!
//! Each mapping has a unique key: a participant join is keyed by the participant, a
//! party-to-participant mapping by the party, and the mediator state and the synchronizer
//! parameters are singletons. A key's transactions form a chain: the first has serial 1 and
//! adds; each next one has the previous serial + 1 and replaces or removes; a removed key can
//! be added again (serial + 1 as well).

use std::fmt;

use crate::messages::{Mapping, MappingKind, Operation, TopologyTransaction};

use super::Rejection;

/// The unique key of a mapping.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MappingKey {
    /// A participant join, by participant.
    Participant(String),
    /// A party-to-participant mapping, by party.
    Party(String),
    /// The mediator state (singleton).
    Mediator,
    /// The synchronizer parameters (singleton).
    Parameters,
}

impl MappingKey {
    /// The key of `mapping`.
    pub fn of(mapping: &Mapping) -> MappingKey {
        match mapping {
            Mapping::ParticipantJoin(m) => MappingKey::Participant(m.participant.clone()),
            Mapping::PartyToParticipant(m) => MappingKey::Party(m.party.clone()),
            Mapping::MediatorState(_) => MappingKey::Mediator,
            Mapping::SynchronizerParameters(_) => MappingKey::Parameters,
        }
    }

    /// The mapping kind the key belongs to.
    pub fn kind(&self) -> MappingKind {
        match self {
            MappingKey::Participant(_) => MappingKind::ParticipantJoin,
            MappingKey::Party(_) => MappingKind::PartyToParticipant,
            MappingKey::Mediator => MappingKind::MediatorState,
            MappingKey::Parameters => MappingKind::SynchronizerParameters,
        }
    }

    /// The name within the kind (empty for singletons).
    pub fn name(&self) -> &str {
        match self {
            MappingKey::Participant(n) | MappingKey::Party(n) => n,
            MappingKey::Mediator | MappingKey::Parameters => "",
        }
    }
}

impl fmt::Display for MappingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MappingKey::Participant(p) => write!(f, "participant join of {p}"),
            MappingKey::Party(p) => write!(f, "party-to-participant of {p}"),
            MappingKey::Mediator => f.write_str("mediator state"),
            MappingKey::Parameters => f.write_str("synchronizer parameters"),
        }
    }
}

/// The serial the next transaction of a key must carry, given the key's latest accepted
/// transaction (`None`: the key never had one).
pub fn next_serial(head: Option<&TopologyTransaction>) -> u32 {
    head.map_or(1, |h| h.serial.saturating_add(1))
}

/// Check `tx` against its key's latest accepted transaction `head` (whether or not that one is
/// effective yet): the serial must be [`next_serial`], and a removal needs a mapping in place.
pub fn check_serial(head: Option<&TopologyTransaction>, tx: &TopologyTransaction) -> Result<(), Rejection> {
    let expected = next_serial(head);
    if tx.serial != expected {
        return Err(Rejection::Serial { key: MappingKey::of(&tx.mapping), expected, found: tx.serial });
    }
    let present = head.is_some_and(|h| h.operation == Operation::AddReplace);
    if tx.operation == Operation::Remove && !present {
        return Err(Rejection::RemoveAbsent { key: MappingKey::of(&tx.mapping) });
    }
    Ok(())
}
