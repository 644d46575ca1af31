//! The topology in effect at one timestamp, and the questions protocol checks ask of it.

use std::collections::{BTreeMap, BTreeSet};

use crate::messages::{Mapping, Permission, SynchronizerParameters};

/// The mappings in effect at a timestamp (`effective_from <= t < effective_until`). Load one
/// with [`super::store::snapshot_at`]; [`TopologySnapshot::new`] and [`TopologySnapshot::add`]
/// build one in memory (for tests of code that uses snapshots).
///
/// A participant is *active* while its join is in effect; the hosting helpers only count
/// active participants, so a removed participant hosts nothing even if a party mapping still
/// names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopologySnapshot {
    timestamp: i64,
    parameters: Option<SynchronizerParameters>,
    mediator: Option<String>,
    participants: BTreeSet<String>,
    parties: BTreeMap<String, BTreeMap<String, Permission>>,
}

impl TopologySnapshot {
    /// An empty topology at `timestamp`: default parameters, no mediator, no participants.
    pub fn new(timestamp: i64) -> Self {
        TopologySnapshot {
            timestamp,
            parameters: None,
            mediator: None,
            participants: BTreeSet::new(),
            parties: BTreeMap::new(),
        }
    }

    /// Put `mapping` in effect (replacing the one with the same key).
    pub fn add(&mut self, mapping: Mapping) {
        match mapping {
            Mapping::ParticipantJoin(m) => {
                self.participants.insert(m.participant);
            }
            Mapping::PartyToParticipant(m) => {
                self.parties.insert(m.party, m.participants);
            }
            Mapping::MediatorState(m) => self.mediator = Some(m.mediator),
            Mapping::SynchronizerParameters(p) => self.parameters = Some(p),
        }
    }

    /// `self` with `mapping` added (builder style).
    pub fn with(mut self, mapping: Mapping) -> Self {
        self.add(mapping);
        self
    }

    /// The timestamp this is the topology at.
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// The parameters in effect: the published ones, or the defaults before any were.
    pub fn parameters(&self) -> SynchronizerParameters {
        self.parameters.unwrap_or_default()
    }

    /// Whether parameters were published (and are in effect).
    pub fn parameters_published(&self) -> bool {
        self.parameters.is_some()
    }

    /// The mediator member, once its state is in effect.
    pub fn mediator(&self) -> Option<&str> {
        self.mediator.as_deref()
    }

    /// The joined (active) participants.
    pub fn participants(&self) -> &BTreeSet<String> {
        &self.participants
    }

    /// Whether `participant` has joined (and not been removed).
    pub fn is_active_participant(&self, participant: &str) -> bool {
        self.participants.contains(participant)
    }

    /// Every party mapping in effect, as published (including hosts that are not active).
    pub fn party_mappings(&self) -> &BTreeMap<String, BTreeMap<String, Permission>> {
        &self.parties
    }

    /// The active participants hosting `party`, with their permission.
    pub fn hosting_participants(&self, party: &str) -> BTreeMap<&str, Permission> {
        (self.parties.get(party).into_iter().flatten())
            .filter(|(p, _)| self.is_active_participant(p))
            .map(|(p, perm)| (p.as_str(), *perm))
            .collect()
    }

    /// `participant`'s permission for `party`, if it is active and hosts the party.
    pub fn permission(&self, party: &str, participant: &str) -> Option<Permission> {
        self.hosting_participants(party).get(participant).copied()
    }

    /// Whether `party` has at least one active hosting participant.
    pub fn is_hosted(&self, party: &str) -> bool {
        !self.hosting_participants(party).is_empty()
    }

    /// Whether `party` has an active hosting participant that confirms for it (submission or
    /// confirmation permission).
    pub fn is_hosted_with_confirmation(&self, party: &str) -> bool {
        self.hosting_participants(party).values().any(|p| p.can_confirm())
    }

    /// The active participants that confirm for `party`.
    pub fn confirming_participants(&self, party: &str) -> BTreeSet<String> {
        (self.hosting_participants(party).into_iter())
            .filter(|(_, perm)| perm.can_confirm())
            .map(|(p, _)| p.to_string())
            .collect()
    }

    /// The participants to send to for `parties`: every active participant hosting any of them.
    pub fn participants_for(&self, parties: impl IntoIterator<Item = impl AsRef<str>>) -> BTreeSet<String> {
        (parties.into_iter())
            .flat_map(|party| {
                self.hosting_participants(party.as_ref()).into_keys().map(str::to_string).collect::<Vec<_>>()
            })
            .collect()
    }

    /// The parties among `parties` without an active hosting participant, in order.
    pub fn unhosted<'a>(&self, parties: impl IntoIterator<Item = &'a String>) -> Vec<&'a str> {
        parties.into_iter().filter(|p| !self.is_hosted(p)).map(String::as_str).collect()
    }

    /// The parties `participant` hosts (if it is active), with its permission.
    pub fn parties_hosted_by(&self, participant: &str) -> BTreeMap<&str, Permission> {
        if !self.is_active_participant(participant) {
            return BTreeMap::new();
        }
        (self.parties.iter())
            .filter_map(|(party, hosts)| hosts.get(participant).map(|perm| (party.as_str(), *perm)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{MediatorState, ParticipantJoin, PartyToParticipant};

    fn join(p: &str) -> Mapping {
        Mapping::ParticipantJoin(ParticipantJoin { participant: p.into() })
    }

    fn party(party: &str, hosts: &[(&str, Permission)]) -> Mapping {
        Mapping::PartyToParticipant(PartyToParticipant {
            party: party.into(),
            participants: hosts.iter().map(|(p, perm)| (p.to_string(), *perm)).collect(),
        })
    }

    #[test]
    fn empty_snapshot_has_default_parameters_and_hosts_nobody() {
        let s = TopologySnapshot::new(5);
        assert_eq!(s.timestamp(), 5);
        assert_eq!(s.parameters(), SynchronizerParameters::default());
        assert_eq!(s.parameters().confirmation_response_timeout.as_secs(), 10);
        assert_eq!(s.parameters().mediator_reaction_timeout.as_secs(), 10);
        assert_eq!(s.parameters().ledger_time_record_time_tolerance.as_secs(), 30);
        assert_eq!(s.parameters().topology_change_delay.as_millis(), 250);
        assert!(!s.parameters_published());
        assert_eq!(s.mediator(), None);
        assert!(!s.is_hosted("alice"));
    }

    #[test]
    fn hosting_counts_only_active_participants_and_confirming_permissions() {
        use Permission::*;
        let s = TopologySnapshot::new(0)
            .with(join("p1"))
            .with(join("p2"))
            .with(Mapping::MediatorState(MediatorState { mediator: "med".into() }))
            .with(party("alice", &[("p1", Submission), ("p3", Confirmation)]))
            .with(party("bob", &[("p2", Observation)]))
            .with(party("carol", &[("p3", Submission)]))
            .with(party("dave", &[("p2", Confirmation)]));
        assert_eq!(s.mediator(), Some("med"));
        assert_eq!(s.hosting_participants("alice"), BTreeMap::from([("p1", Submission)]), "p3 never joined");
        assert!(s.is_hosted("alice") && s.is_hosted_with_confirmation("alice"));
        assert!(s.is_hosted("bob") && !s.is_hosted_with_confirmation("bob"), "observation does not confirm");
        assert!(!s.is_hosted("carol"), "only hosted by a participant that is not active");
        assert!(s.is_hosted_with_confirmation("dave"));
        assert_eq!(s.confirming_participants("alice"), BTreeSet::from(["p1".to_string()]));
        assert_eq!(s.confirming_participants("bob"), BTreeSet::new());
        assert_eq!(s.permission("bob", "p2"), Some(Observation));
        assert_eq!(s.permission("alice", "p3"), None);
        let informees: BTreeSet<String> = ["alice", "bob", "carol"].map(String::from).into();
        assert_eq!(s.participants_for(&informees), BTreeSet::from(["p1".to_string(), "p2".to_string()]));
        assert_eq!(s.unhosted(&informees), vec!["carol"]);
        assert_eq!(s.parties_hosted_by("p2"), BTreeMap::from([("bob", Observation), ("dave", Confirmation)]));
        assert_eq!(s.parties_hosted_by("p3"), BTreeMap::new());
    }
}
