//! The values of the ledger API, shaped like Canton's Ledger API v2 with a contract model
//! instead of Daml.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A submission: what the application wants done, by whom, and how to deduplicate it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Commands {
    /// The submitting application's user.
    pub user_id: String,
    /// The application's id of the command; with `user_id` and `act_as` its change id.
    pub command_id: String,
    /// The id of this submission attempt (generated when absent).
    pub submission_id: Option<String>,
    /// The acting parties; hosted here with submission permission.
    pub act_as: Vec<String>,
    /// Parties whose contracts the command may read besides `act_as`'s.
    pub read_as: Vec<String>,
    /// Carried to the transaction at this participant.
    pub workflow_id: Option<String>,
    /// Deduplication against earlier acceptances (default: the participant's maximum).
    pub deduplication_period: Option<DeduplicationPeriod>,
    /// The least ledger time (µs since the epoch) the transaction may have.
    pub min_ledger_time: Option<i64>,
    /// What to do, atomically; at least one.
    pub commands: Vec<Command>,
}

/// How far back a command is deduplicated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeduplicationPeriod {
    /// Against acceptances within this duration before now.
    Duration(Duration),
    /// Against acceptances after this offset.
    Offset(i64),
}

/// One command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Create a contract.
    Create(CreateCommand),
    /// Archive a contract (by one of its signatories).
    Archive {
        /// The contract.
        contract_id: String,
    },
    /// Exercise a choice: archive the contract if consuming, and create `creates`, in one
    /// transaction (a transfer).
    Exercise(ExerciseCommand),
}

/// Create a contract.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateCommand {
    /// Template name.
    pub template: String,
    /// Arguments, a JSON document.
    pub arguments: String,
    /// Signatories; at least one of them acts, the others confirm through their participants.
    pub signatories: Vec<String>,
    /// Observers.
    pub observers: Vec<String>,
}

/// Exercise a choice on a contract.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExerciseCommand {
    /// The contract.
    pub contract_id: String,
    /// The choice's name.
    pub choice: String,
    /// Whether the exercise archives the contract.
    pub consuming: bool,
    /// Contracts created by the exercise.
    pub creates: Vec<CreateCommand>,
}

/// What `submit` answers: the submission is registered and handed to the synchronizer; its
/// outcome comes as a completion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitted {
    /// The submission id (given or generated).
    pub submission_id: String,
}

/// The status of a completion: `OK` or a rejection with Canton's error id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// `OK` or the error id (e.g. `LOCAL_VERDICT_TIMEOUT`).
    pub id: String,
    /// The gRPC code.
    pub code: tonic::Code,
    /// Human-readable cause.
    pub message: String,
}

impl Status {
    /// Whether the command was accepted.
    pub fn is_ok(&self) -> bool {
        self.code == tonic::Code::Ok
    }
}

/// The outcome of one submission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// Its offset.
    pub offset: i64,
    /// The user.
    pub user_id: String,
    /// The command id.
    pub command_id: String,
    /// The submission id.
    pub submission_id: Option<String>,
    /// The acting parties.
    pub act_as: Vec<String>,
    /// Accepted or why not.
    pub status: Status,
    /// The transaction's update id when accepted.
    pub update_id: Option<String>,
    /// The synchronizer time of the outcome (µs).
    pub record_time: i64,
    /// The deduplication period the command was checked against.
    pub deduplication_period: Option<DeduplicationPeriod>,
}

/// An item of the completion stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompletionItem {
    /// A completion.
    Completion(Completion),
    /// Everything up to `offset` was delivered: resume after it.
    Checkpoint {
        /// The offset.
        offset: i64,
        /// Its record time (µs).
        record_time: i64,
    },
}

/// A committed transaction, as a party filter sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    /// Its offset at this participant.
    pub offset: i64,
    /// The update id (the confirmation request's root hash, hex): the same everywhere.
    pub update_id: String,
    /// The request's sequencing time (µs).
    pub record_time: i64,
    /// The command id, at the submitting participant only.
    pub command_id: Option<String>,
    /// The workflow id, at the submitting participant only.
    pub workflow_id: Option<String>,
    /// The events visible to the filter's parties, in order.
    pub events: Vec<Event>,
}

/// An event of a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A contract was created.
    Created(CreatedEvent),
    /// A contract was archived.
    Archived(ArchivedEvent),
}

impl Event {
    /// The contract's stakeholders (who sees the event).
    pub fn stakeholders(&self) -> BTreeSet<String> {
        match self {
            Event::Created(c) => c.signatories.iter().chain(&c.observers).cloned().collect(),
            Event::Archived(a) => a.stakeholders.iter().cloned().collect(),
        }
    }

    /// The contract id.
    pub fn contract_id(&self) -> &str {
        match self {
            Event::Created(c) => &c.contract_id,
            Event::Archived(a) => &a.contract_id,
        }
    }
}

/// A contract's creation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedEvent {
    /// The contract id (derived from the request).
    pub contract_id: String,
    /// Template name.
    pub template: String,
    /// Arguments (JSON).
    pub arguments: String,
    /// Signatories.
    pub signatories: Vec<String>,
    /// Observers.
    pub observers: Vec<String>,
}

/// A contract's archival.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedEvent {
    /// The contract id.
    pub contract_id: String,
    /// Template name.
    pub template: String,
    /// Signatories and observers.
    pub stakeholders: Vec<String>,
}

/// An active contract.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveContract {
    /// Its creation.
    pub created: CreatedEvent,
    /// The offset it was created at.
    pub created_offset: i64,
}

/// The ledger end: the last published offset (0: none) and its record time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LedgerEnd {
    /// The offset.
    pub offset: i64,
    /// Its record time (µs), if any.
    pub record_time: Option<i64>,
}

/// A party known on the synchronizer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartyDetails {
    /// The party.
    pub party: String,
    /// Whether this participant hosts it.
    pub is_local: bool,
}
