//! Typed protocol messages and their versioned wire encoding.
//!
//! Every envelope content is a `syncline.protocol.v1.ProtocolMessage`: a version and one
//! message. [`decode`] rejects versions other than [`PROTOCOL_VERSION`] and any malformed
//! content with a [`DecodeError`] naming the field (e.g. `informee_message.views[1].common.informees`),
//! so that the rest of the code only ever sees valid typed values.

mod fields;
pub mod hash;
pub mod request;
pub mod response;
pub mod topology;

use prost::Message as _;
use syncline_proto::protocol as pb;

pub use hash::{Hash, RootHashMismatch};
pub use request::{
    Action, Archive, ConfirmationRequest, Create, DeduplicationPeriod, InformeeMessage, InformeeView, RequestHeader,
    RootHashMessage, SubmitterMetadata, View, ViewCommonData, ViewMessage,
};
pub use response::{ConfirmationResponse, ConfirmationResult, LocalVerdict, RejectReason, Verdict, ViewResponse};
pub use topology::{
    Mapping, MappingKind, MediatorState, Operation, ParticipantJoin, PartyToParticipant, Permission,
    SynchronizerParameters, TopologyTransaction,
};

/// The protocol version this code writes and the only one it reads.
pub const PROTOCOL_VERSION: u32 = 1;

/// One protocol message, as carried in an envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A topology change (broadcast).
    Topology(TopologyTransaction),
    /// The mediator's part of a confirmation request.
    Informee(InformeeMessage),
    /// The root hash of a request, to its informee participants and the mediator.
    RootHash(RootHashMessage),
    /// One view of a request, to the participants hosting its informees.
    View(ViewMessage),
    /// A participant's response to a request.
    Response(ConfirmationResponse),
    /// The mediator's verdict on a request.
    Result(ConfirmationResult),
}

/// Why bytes are not a valid protocol message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not protobuf of a `ProtocolMessage`.
    #[error("not a protocol message: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// Written in a protocol version this node does not speak.
    #[error("unsupported protocol version {found} (this node speaks version {supported})")]
    UnknownVersion {
        /// The version in the message.
        found: u32,
        /// The version this node speaks.
        supported: u32,
    },
    /// A field is missing or invalid.
    #[error("malformed field {field}: {problem}")]
    Malformed {
        /// The path of the field, e.g. `confirmation_response.views[0].verdict`.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl DecodeError {
    /// A malformed-field error.
    pub fn malformed(field: impl Into<String>, problem: impl Into<String>) -> Self {
        DecodeError::Malformed { field: field.into(), problem: problem.into() }
    }

    /// The same error with its field path prefixed by `parent` (`parent.field`).
    pub fn within(self, parent: &str) -> Self {
        match self {
            DecodeError::Malformed { field, problem } if field.is_empty() => {
                DecodeError::Malformed { field: parent.to_string(), problem }
            }
            DecodeError::Malformed { field, problem } => {
                let sep = if field.starts_with('[') { "" } else { "." };
                DecodeError::Malformed { field: format!("{parent}{sep}{field}"), problem }
            }
            other => other,
        }
    }

    /// The malformed field's path, if the error is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            DecodeError::Malformed { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// The wire form of `message` (a version-1 `ProtocolMessage`).
pub fn encode(message: &Message) -> Vec<u8> {
    to_proto(message).encode_to_vec()
}

/// The wire message of `message`.
pub fn to_proto(message: &Message) -> pb::ProtocolMessage {
    use pb::protocol_message::Message as M;
    let inner = match message {
        Message::Topology(m) => M::TopologyTransaction(m.into()),
        Message::Informee(m) => M::InformeeMessage(m.into()),
        Message::RootHash(m) => M::RootHashMessage(m.into()),
        Message::View(m) => M::ViewMessage(m.into()),
        Message::Response(m) => M::ConfirmationResponse(m.into()),
        Message::Result(m) => M::ConfirmationResult(m.into()),
    };
    pb::ProtocolMessage { version: PROTOCOL_VERSION, message: Some(inner) }
}

/// Parse and validate an envelope's content.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    from_proto(pb::ProtocolMessage::decode(bytes)?)
}

/// Validate a wire message.
pub fn from_proto(message: pb::ProtocolMessage) -> Result<Message, DecodeError> {
    use pb::protocol_message::Message as M;
    if message.version != PROTOCOL_VERSION {
        return Err(DecodeError::UnknownVersion { found: message.version, supported: PROTOCOL_VERSION });
    }
    let inner = message.message.ok_or_else(|| DecodeError::malformed("message", "missing"))?;
    Ok(match inner {
        M::TopologyTransaction(m) => {
            Message::Topology(m.try_into().map_err(|e: DecodeError| e.within("topology_transaction"))?)
        }
        M::InformeeMessage(m) => {
            Message::Informee(m.try_into().map_err(|e: DecodeError| e.within("informee_message"))?)
        }
        M::RootHashMessage(m) => {
            Message::RootHash(m.try_into().map_err(|e: DecodeError| e.within("root_hash_message"))?)
        }
        M::ViewMessage(m) => Message::View(m.try_into().map_err(|e: DecodeError| e.within("view_message"))?),
        M::ConfirmationResponse(m) => {
            Message::Response(m.try_into().map_err(|e: DecodeError| e.within("confirmation_response"))?)
        }
        M::ConfirmationResult(m) => {
            Message::Result(m.try_into().map_err(|e: DecodeError| e.within("confirmation_result"))?)
        }
    })
}

#[cfg(test)]
mod tests;
