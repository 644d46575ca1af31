//! Error ids carried in rejections (`LocalReject.code`, `MediatorReject.code`), as Canton names
//! them so that operators and applications recognise them.

/// The request is invalid from the mediator's view (e.g. an informee not hosted, a confirming
/// party without confirmation permission, inconsistent root hashes, an unknown request id).
pub const MEDIATOR_INVALID_MESSAGE: &str = "MEDIATOR_INVALID_MESSAGE";
/// The mediator could not parse a message addressed to it.
pub const MEDIATOR_RECEIVED_MALFORMED_MESSAGE: &str = "MEDIATOR_RECEIVED_MALFORMED_MESSAGE";
/// The request UUID was already used within the mediator's deduplication window.
pub const DUPLICATE_CONFIRMATION_REQUEST_UUID: &str = "DUPLICATE_CONFIRMATION_REQUEST_UUID";
/// Not every confirming party answered by the confirmation response deadline.
pub const MEDIATOR_SAYS_TX_TIMED_OUT: &str = "MEDIATOR_SAYS_TX_TIMED_OUT";
/// A participant contradicted its own earlier response.
pub const MEDIATOR_PARTICIPANT_EQUIVOCATION: &str = "MEDIATOR_PARTICIPANT_EQUIVOCATION";
/// An input contract or created id is locked by another pending request.
pub const LOCAL_VERDICT_LOCKED_CONTRACTS: &str = "LOCAL_VERDICT_LOCKED_CONTRACTS";
/// An input contract is archived or unknown.
pub const LOCAL_VERDICT_INACTIVE_CONTRACTS: &str = "LOCAL_VERDICT_INACTIVE_CONTRACTS";
/// The ledger time is too far from the record time.
pub const LOCAL_VERDICT_LEDGER_TIME_OUT_OF_BOUND: &str = "LOCAL_VERDICT_LEDGER_TIME_OUT_OF_BOUND";
/// No verdict arrived by the decision time.
pub const LOCAL_VERDICT_TIMEOUT: &str = "LOCAL_VERDICT_TIMEOUT";
/// The request is malformed (e.g. a view that does not match its root hash).
pub const LOCAL_VERDICT_MALFORMED_REQUEST: &str = "LOCAL_VERDICT_MALFORMED_REQUEST";
/// A created contract id already exists.
pub const LOCAL_VERDICT_CREATES_EXISTING_CONTRACTS: &str = "LOCAL_VERDICT_CREATES_EXISTING_CONTRACTS";
