//! Topology transactions: typed values and their wire conversion.

use std::collections::BTreeMap;
use std::time::Duration;

use syncline_proto::protocol as pb;
use syncline_proto::protocol::hosting_participant::Permission as PbPermission;
use syncline_proto::protocol::topology_transaction::{Mapping as PbMapping, Operation as PbOperation};

use super::fields;
use super::DecodeError;

/// Add or remove a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Add the mapping, or replace the one with the same unique key.
    AddReplace,
    /// Remove the mapping with the same unique key.
    Remove,
}

impl Operation {
    /// Stable lowercase name (stored in the database).
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::AddReplace => "add_replace",
            Operation::Remove => "remove",
        }
    }
}

/// One change of the topology.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopologyTransaction {
    /// Add/replace or remove.
    pub operation: Operation,
    /// 1 for a key's first transaction, then the previous serial + 1.
    pub serial: u32,
    /// What is added or removed.
    pub mapping: Mapping,
}

/// The topology mappings Syncline knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// A participant member joins.
    ParticipantJoin(ParticipantJoin),
    /// A party's hosting participants.
    PartyToParticipant(PartyToParticipant),
    /// The synchronizer's mediator.
    MediatorState(MediatorState),
    /// The synchronizer's dynamic parameters.
    SynchronizerParameters(SynchronizerParameters),
}

/// The kind of a mapping (stored in the database).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MappingKind {
    /// [`Mapping::ParticipantJoin`].
    ParticipantJoin,
    /// [`Mapping::PartyToParticipant`].
    PartyToParticipant,
    /// [`Mapping::MediatorState`].
    MediatorState,
    /// [`Mapping::SynchronizerParameters`].
    SynchronizerParameters,
}

impl MappingKind {
    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            MappingKind::ParticipantJoin => "participant_join",
            MappingKind::PartyToParticipant => "party_to_participant",
            MappingKind::MediatorState => "mediator_state",
            MappingKind::SynchronizerParameters => "synchronizer_parameters",
        }
    }
}

impl Mapping {
    /// The mapping's kind.
    pub fn kind(&self) -> MappingKind {
        match self {
            Mapping::ParticipantJoin(_) => MappingKind::ParticipantJoin,
            Mapping::PartyToParticipant(_) => MappingKind::PartyToParticipant,
            Mapping::MediatorState(_) => MappingKind::MediatorState,
            Mapping::SynchronizerParameters(_) => MappingKind::SynchronizerParameters,
        }
    }
}

/// A participant member joins the synchronizer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParticipantJoin {
    /// The participant's member name.
    pub participant: String,
}

/// What a hosting participant may do for a party.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// Submit and confirm.
    Submission,
    /// Confirm.
    Confirmation,
    /// Only observe.
    Observation,
}

impl Permission {
    /// Whether the participant confirms for the party (submission or confirmation).
    pub fn can_confirm(self) -> bool {
        matches!(self, Permission::Submission | Permission::Confirmation)
    }

    /// Whether the participant may submit for the party.
    pub fn can_submit(self) -> bool {
        self == Permission::Submission
    }
}

/// A party and the participants hosting it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartyToParticipant {
    /// The party.
    pub party: String,
    /// Hosting participant → permission; at least one.
    pub participants: BTreeMap<String, Permission>,
}

/// The synchronizer's mediator member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediatorState {
    /// The mediator's member name.
    pub mediator: String,
}

/// The synchronizer's dynamic parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynchronizerParameters {
    /// Participant response deadline = request time + this.
    pub confirmation_response_timeout: Duration,
    /// Decision time = response deadline + this.
    pub mediator_reaction_timeout: Duration,
    /// Max |ledger time − record time| of a request.
    pub ledger_time_record_time_tolerance: Duration,
    /// Delay between a topology transaction's sequencing and its effect.
    pub topology_change_delay: Duration,
}

impl Default for SynchronizerParameters {
    /// The parameters in effect before any are published: 10 s, 10 s, 30 s, 250 ms (Canton:
    /// 30 s, 30 s, 60 s, 250 ms).
    fn default() -> Self {
        SynchronizerParameters {
            confirmation_response_timeout: Duration::from_secs(10),
            mediator_reaction_timeout: Duration::from_secs(10),
            ledger_time_record_time_tolerance: Duration::from_secs(30),
            topology_change_delay: Duration::from_millis(250),
        }
    }
}

/// `d` in microseconds, saturating.
pub(crate) fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl SynchronizerParameters {
    /// The participant response deadline of a request sequenced at `request_ts` (µs).
    pub fn response_deadline(&self, request_ts: i64) -> i64 {
        request_ts.saturating_add(micros(self.confirmation_response_timeout))
    }

    /// The decision time of a request sequenced at `request_ts`: the response deadline plus
    /// the mediator reaction timeout; also the max-sequencing-time of its verdict.
    pub fn decision_time(&self, request_ts: i64) -> i64 {
        self.response_deadline(request_ts).saturating_add(micros(self.mediator_reaction_timeout))
    }

    /// When a topology transaction sequenced at `ts` takes effect under these parameters
    /// (before the processor's monotonicity adjustment).
    pub fn topology_effective_time(&self, ts: i64) -> i64 {
        ts.saturating_add(micros(self.topology_change_delay))
    }

    /// Whether `ledger_time` is within the tolerance of `record_time`.
    pub fn ledger_time_within_tolerance(&self, ledger_time: i64, record_time: i64) -> bool {
        ledger_time.abs_diff(record_time) <= self.ledger_time_record_time_tolerance.as_micros() as u64
    }
}

// ---- wire conversion ----

impl From<&TopologyTransaction> for pb::TopologyTransaction {
    fn from(t: &TopologyTransaction) -> Self {
        let operation = match t.operation {
            Operation::AddReplace => PbOperation::AddReplace,
            Operation::Remove => PbOperation::Remove,
        };
        let mapping = match &t.mapping {
            Mapping::ParticipantJoin(m) => {
                PbMapping::ParticipantJoin(pb::ParticipantJoin { participant: m.participant.clone() })
            }
            Mapping::PartyToParticipant(m) => PbMapping::PartyToParticipant(pb::PartyToParticipant {
                party: m.party.clone(),
                participants: m
                    .participants
                    .iter()
                    .map(|(p, perm)| pb::HostingParticipant {
                        participant: p.clone(),
                        permission: match perm {
                            Permission::Submission => PbPermission::Submission,
                            Permission::Confirmation => PbPermission::Confirmation,
                            Permission::Observation => PbPermission::Observation,
                        } as i32,
                    })
                    .collect(),
            }),
            Mapping::MediatorState(m) => PbMapping::MediatorState(pb::MediatorState { mediator: m.mediator.clone() }),
            Mapping::SynchronizerParameters(p) => PbMapping::SynchronizerParameters(pb::SynchronizerParameters {
                confirmation_response_timeout_micros: micros(p.confirmation_response_timeout),
                mediator_reaction_timeout_micros: micros(p.mediator_reaction_timeout),
                ledger_time_record_time_tolerance_micros: micros(p.ledger_time_record_time_tolerance),
                topology_change_delay_micros: micros(p.topology_change_delay),
            }),
        };
        pb::TopologyTransaction { operation: operation as i32, serial: t.serial, mapping: Some(mapping) }
    }
}

impl TryFrom<pb::TopologyTransaction> for TopologyTransaction {
    type Error = DecodeError;

    fn try_from(t: pb::TopologyTransaction) -> Result<Self, DecodeError> {
        let operation = match PbOperation::try_from(t.operation) {
            Ok(PbOperation::AddReplace) => Operation::AddReplace,
            Ok(PbOperation::Remove) => Operation::Remove,
            Ok(PbOperation::Unspecified) => return Err(DecodeError::malformed("operation", "unspecified")),
            Err(_) => return Err(DecodeError::malformed("operation", format!("unknown value {}", t.operation))),
        };
        if t.serial == 0 {
            return Err(DecodeError::malformed("serial", "0 (serials start at 1)"));
        }
        let mapping = match fields::required("mapping", t.mapping)? {
            PbMapping::ParticipantJoin(m) => Mapping::ParticipantJoin(ParticipantJoin {
                participant: fields::name("participant_join.participant", m.participant)?,
            }),
            PbMapping::PartyToParticipant(m) => {
                Mapping::PartyToParticipant(party_to_participant(m).map_err(|e| e.within("party_to_participant"))?)
            }
            PbMapping::MediatorState(m) => {
                Mapping::MediatorState(MediatorState { mediator: fields::name("mediator_state.mediator", m.mediator)? })
            }
            PbMapping::SynchronizerParameters(p) => {
                Mapping::SynchronizerParameters(parameters(p).map_err(|e| e.within("synchronizer_parameters"))?)
            }
        };
        Ok(TopologyTransaction { operation, serial: t.serial, mapping })
    }
}

fn party_to_participant(m: pb::PartyToParticipant) -> Result<PartyToParticipant, DecodeError> {
    let party = fields::name("party", m.party)?;
    if m.participants.is_empty() {
        return Err(DecodeError::malformed("participants", "empty (at least one is required)"));
    }
    let mut participants = BTreeMap::new();
    for (i, h) in m.participants.into_iter().enumerate() {
        let at = format!("participants[{i}]");
        let participant = fields::name(&format!("{at}.participant"), h.participant)?;
        let permission = match PbPermission::try_from(h.permission) {
            Ok(PbPermission::Submission) => Permission::Submission,
            Ok(PbPermission::Confirmation) => Permission::Confirmation,
            Ok(PbPermission::Observation) => Permission::Observation,
            Ok(PbPermission::Unspecified) => {
                return Err(DecodeError::malformed(format!("{at}.permission"), "unspecified"))
            }
            Err(_) => {
                return Err(DecodeError::malformed(
                    format!("{at}.permission"),
                    format!("unknown value {}", h.permission),
                ))
            }
        };
        if participants.insert(participant.clone(), permission).is_some() {
            return Err(DecodeError::malformed(format!("{at}.participant"), format!("duplicate {participant:?}")));
        }
    }
    Ok(PartyToParticipant { party, participants })
}

fn parameters(p: pb::SynchronizerParameters) -> Result<SynchronizerParameters, DecodeError> {
    let positive = |field: &str, v: i64| {
        if v <= 0 {
            Err(DecodeError::malformed(field, format!("{v} µs, must be positive")))
        } else {
            Ok(Duration::from_micros(v as u64))
        }
    };
    if p.topology_change_delay_micros < 0 {
        return Err(DecodeError::malformed(
            "topology_change_delay_micros",
            format!("{} µs, must not be negative", p.topology_change_delay_micros),
        ));
    }
    Ok(SynchronizerParameters {
        confirmation_response_timeout: positive(
            "confirmation_response_timeout_micros",
            p.confirmation_response_timeout_micros,
        )?,
        mediator_reaction_timeout: positive("mediator_reaction_timeout_micros", p.mediator_reaction_timeout_micros)?,
        ledger_time_record_time_tolerance: positive(
            "ledger_time_record_time_tolerance_micros",
            p.ledger_time_record_time_tolerance_micros,
        )?,
        topology_change_delay: Duration::from_micros(p.topology_change_delay_micros as u64),
    })
}
