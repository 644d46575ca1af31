//! Who may issue which topology transaction: a pure, deterministic function of the topology
//! in effect at the transaction's sequencing time and of its key's latest accepted
//! transaction, so that every node accepts or ignores the same transactions.
//!
//! - The synchronizer operator ([`OPERATOR`]) issues the synchronizer parameters, the
//!   mediator state and participant joins, and may issue any party-to-participant mapping.
//! - A participant issues party-to-participant mappings only for itself: it must have joined
//!   (effective at the sequencing time), the hosting list must be exactly itself, and it may
//!   not replace or remove a mapping that (as last accepted) hosts the party elsewhere.

use std::collections::BTreeSet;

use crate::messages::{Mapping, MappingKind, Operation, TopologyTransaction};

use super::mapping::{check_serial, MappingKey};
use super::TopologySnapshot;

/// The synchronizer operator's member name: the issuer of operator-only mappings.
pub const OPERATOR: &str = "syncline-operator";

/// Why a topology transaction is ignored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Only the operator may issue this kind of mapping.
    #[error("only the operator ({OPERATOR}) may issue {kind:?} mappings, not {sender}")]
    NotOperator {
        /// The sender.
        sender: String,
        /// The mapping's kind.
        kind: MappingKind,
    },
    /// A participant issued a party mapping hosting the party on other participants.
    #[error("participant {sender} may host party {party} only on itself alone, not on {hosts:?}")]
    HostsOthers {
        /// The sender.
        sender: String,
        /// The party.
        party: String,
        /// The hosting participants it named.
        hosts: BTreeSet<String>,
    },
    /// The sender is not a joined participant at the sequencing time.
    #[error("{participant} is not a joined participant at the transaction's sequencing time")]
    NotJoined {
        /// The sender.
        participant: String,
    },
    /// A participant tried to replace or remove a mapping that hosts the party elsewhere.
    #[error("party {party} is hosted by {hosts:?}, so participant {sender} may not change its mapping")]
    HostedElsewhere {
        /// The sender.
        sender: String,
        /// The party.
        party: String,
        /// The current hosting participants.
        hosts: BTreeSet<String>,
    },
    /// The serial does not follow the key's latest accepted transaction.
    #[error("serial {found} for the {key}, expected {expected}")]
    Serial {
        /// The mapping's key.
        key: MappingKey,
        /// The serial it had to carry.
        expected: u32,
        /// The serial it carried.
        found: u32,
    },
    /// A removal of a key with no mapping in place.
    #[error("nothing to remove: no {key} is in place")]
    RemoveAbsent {
        /// The mapping's key.
        key: MappingKey,
    },
}

/// Whether `sender` may issue `tx`, given the topology in effect at its sequencing time and
/// its key's latest accepted transaction `head` (effective or not).
pub fn authorize(
    snapshot: &TopologySnapshot,
    head: Option<&TopologyTransaction>,
    sender: &str,
    tx: &TopologyTransaction,
) -> Result<(), Rejection> {
    let mapping = match &tx.mapping {
        Mapping::PartyToParticipant(m) => m,
        other => {
            return if sender == OPERATOR {
                Ok(())
            } else {
                Err(Rejection::NotOperator { sender: sender.to_string(), kind: other.kind() })
            };
        }
    };
    if sender == OPERATOR {
        return Ok(());
    }
    if !snapshot.is_active_participant(sender) {
        return Err(Rejection::NotJoined { participant: sender.to_string() });
    }
    if mapping.participants.len() != 1 || !mapping.participants.contains_key(sender) {
        return Err(Rejection::HostsOthers {
            sender: sender.to_string(),
            party: mapping.party.clone(),
            hosts: mapping.participants.keys().cloned().collect(),
        });
    }
    if let Some(Mapping::PartyToParticipant(current)) =
        head.filter(|h| h.operation == Operation::AddReplace).map(|h| &h.mapping)
    {
        if current.participants.len() != 1 || !current.participants.contains_key(sender) {
            return Err(Rejection::HostedElsewhere {
                sender: sender.to_string(),
                party: mapping.party.clone(),
                hosts: current.participants.keys().cloned().collect(),
            });
        }
    }
    Ok(())
}

/// The whole check a node applies: [`authorize`], then the serial rules
/// ([`check_serial`]). `Ok` means the transaction is accepted.
pub fn validate(
    snapshot: &TopologySnapshot,
    head: Option<&TopologyTransaction>,
    sender: &str,
    tx: &TopologyTransaction,
) -> Result<(), Rejection> {
    authorize(snapshot, head, sender, tx)?;
    check_serial(head, tx)
}

#[cfg(test)]
mod tests;
