//! Errors: [`LedgerError`] is what the Rust API answers (each with Canton's error id and its
//! gRPC code, so the gRPC layer is a thin mapping); [`ParticipantError`] is what stops the
//! leader's run (the replica manager then starts it again).

use syncline_coordination::{DbError, LeadershipError};
use syncline_protocol::subscription::SubscriptionError;
use syncline_protocol::topology::TopologyError;
use tonic::Code;

/// An answer of the ledger API that is not a success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// This replica is passive: ask the active one.
    #[error("participant replica {replica} of {participant} is passive: ask the active replica")]
    NodeIsPassive {
        /// The participant member.
        participant: String,
        /// This replica.
        replica: String,
    },
    /// The command was already accepted within its deduplication period.
    #[error("command {command_id} was already accepted at offset {completion_offset} (submission {existing_submission_id:?})")]
    DuplicateCommand {
        /// The command id.
        command_id: String,
        /// The offset of the earlier acceptance.
        completion_offset: i64,
        /// The submission id of the earlier acceptance, if it had one.
        existing_submission_id: Option<String>,
    },
    /// A submission with the same change id is in flight.
    #[error("a submission of command {command_id} by the same user and parties is already in flight")]
    SubmissionAlreadyInFlight {
        /// The command id.
        command_id: String,
    },
    /// The deduplication period is not allowed.
    #[error("invalid deduplication period: {reason}")]
    InvalidDeduplicationPeriod {
        /// Why.
        reason: String,
        /// The longest duration allowed (µs).
        longest_duration_micros: i64,
    },
    /// An offset beyond the ledger end.
    #[error("offset {offset} is after the ledger end {ledger_end}")]
    OffsetAfterLedgerEnd {
        /// The offset asked for.
        offset: i64,
        /// The ledger end.
        ledger_end: i64,
    },
    /// A request field is invalid.
    #[error("invalid argument {field}: {problem}")]
    InvalidArgument {
        /// The field.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The acting parties may not do what the command does.
    #[error("not authorized: {reason}")]
    NotAuthorized {
        /// Why.
        reason: String,
    },
    /// Acting parties not hosted on this participant with submission permission.
    #[error("parties {parties:?} are not hosted on participant {participant} with submission permission")]
    SubmittersNotHosted {
        /// The parties.
        parties: Vec<String>,
        /// This participant.
        participant: String,
    },
    /// Parties no participant hosts.
    #[error("parties {parties:?} are not known on the synchronizer")]
    PartiesNotKnown {
        /// The parties.
        parties: Vec<String>,
    },
    /// A contract that is not active (or not visible to the submitting parties).
    #[error("contract {contract_id} is not active or not visible to the submitting parties")]
    ContractNotFound {
        /// The contract id.
        contract_id: String,
    },
    /// No update with this id is visible to the parties.
    #[error("update {update_id} not found")]
    UpdateNotFound {
        /// The update id.
        update_id: String,
    },
    /// The party already exists.
    #[error("party {party} already exists")]
    PartyAlreadyExists {
        /// The party.
        party: String,
    },
    /// Waiting (e.g. for a party to take effect) took too long.
    #[error("timed out: {what}")]
    RequestTimeout {
        /// What was waited for.
        what: String,
    },
    /// The participant cannot serve now (database, sequencer, no mediator); retry.
    #[error("unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
}

impl LedgerError {
    /// Canton's error id.
    pub fn error_id(&self) -> &'static str {
        match self {
            LedgerError::NodeIsPassive { .. } => "NODE_IS_PASSIVE_REPLICA",
            LedgerError::DuplicateCommand { .. } => "DUPLICATE_COMMAND",
            LedgerError::SubmissionAlreadyInFlight { .. } => "SUBMISSION_ALREADY_IN_FLIGHT",
            LedgerError::InvalidDeduplicationPeriod { .. } => "INVALID_DEDUPLICATION_PERIOD",
            LedgerError::OffsetAfterLedgerEnd { .. } => "OFFSET_AFTER_LEDGER_END",
            LedgerError::InvalidArgument { .. } => "INVALID_ARGUMENT",
            LedgerError::NotAuthorized { .. } => "DAML_AUTHORIZATION_ERROR",
            LedgerError::SubmittersNotHosted { .. } => "NO_SYNCHRONIZER_ON_WHICH_ALL_SUBMITTERS_CAN_SUBMIT",
            LedgerError::PartiesNotKnown { .. } => "PARTY_NOT_KNOWN_ON_LEDGER",
            LedgerError::ContractNotFound { .. } => "CONTRACT_NOT_FOUND",
            LedgerError::UpdateNotFound { .. } => "UPDATE_NOT_FOUND",
            LedgerError::PartyAlreadyExists { .. } => "PARTY_ALREADY_EXISTS",
            LedgerError::RequestTimeout { .. } => "REQUEST_TIME_OUT",
            LedgerError::Unavailable { .. } => "SERVICE_NOT_RUNNING",
        }
    }

    /// The gRPC code the ledger API answers with.
    pub fn code(&self) -> Code {
        match self {
            LedgerError::NodeIsPassive { .. } | LedgerError::Unavailable { .. } => Code::Unavailable,
            LedgerError::DuplicateCommand { .. } | LedgerError::PartyAlreadyExists { .. } => Code::AlreadyExists,
            LedgerError::SubmissionAlreadyInFlight { .. } => Code::Aborted,
            LedgerError::InvalidDeduplicationPeriod { .. } => Code::FailedPrecondition,
            LedgerError::OffsetAfterLedgerEnd { .. } => Code::OutOfRange,
            LedgerError::InvalidArgument { .. } | LedgerError::NotAuthorized { .. } => Code::InvalidArgument,
            LedgerError::SubmittersNotHosted { .. }
            | LedgerError::PartiesNotKnown { .. }
            | LedgerError::ContractNotFound { .. }
            | LedgerError::UpdateNotFound { .. } => Code::NotFound,
            LedgerError::RequestTimeout { .. } => Code::DeadlineExceeded,
        }
    }

    /// Machine-readable details for the status (Canton's error metadata keys).
    pub fn metadata(&self) -> Vec<(&'static str, String)> {
        match self {
            LedgerError::DuplicateCommand { completion_offset, existing_submission_id, .. } => {
                let mut m = vec![("completion_offset", completion_offset.to_string())];
                if let Some(s) = existing_submission_id {
                    m.push(("existing_submission_id", s.clone()));
                }
                m
            }
            LedgerError::InvalidDeduplicationPeriod { longest_duration_micros, .. } => {
                vec![("longest_duration", format!("{}us", longest_duration_micros))]
            }
            LedgerError::OffsetAfterLedgerEnd { ledger_end, .. } => vec![("ledger_end", ledger_end.to_string())],
            _ => Vec::new(),
        }
    }

    /// An invalid-argument error.
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        LedgerError::InvalidArgument { field: field.into(), problem: problem.into() }
    }
}

impl From<DbError> for LedgerError {
    fn from(e: DbError) -> Self {
        LedgerError::Unavailable { reason: format!("the participant's database: {e}") }
    }
}

impl From<TopologyError> for LedgerError {
    fn from(e: TopologyError) -> Self {
        LedgerError::Unavailable { reason: format!("the participant's topology store: {e}") }
    }
}

impl From<LeadershipError> for LedgerError {
    fn from(e: LeadershipError) -> Self {
        LedgerError::Unavailable { reason: format!("this replica lost its leadership or its database: {e}") }
    }
}

/// Why the leader's run ended.
#[derive(Debug, thiserror::Error)]
pub enum ParticipantError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// This replica was fenced by a newer leader, or its fenced write failed.
    #[error(transparent)]
    Leadership(#[from] LeadershipError),
    /// The topology store failed.
    #[error("topology store")]
    Topology(#[from] TopologyError),
    /// The subscription to the sequencers failed.
    #[error(transparent)]
    Subscription(#[from] SubscriptionError),
}
