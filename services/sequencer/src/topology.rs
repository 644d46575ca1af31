//! Publishing the synchronizer operator's topology transactions (the admin API's
//! PublishTopology): the operator member sends only through here, never through the public
//! Send, so nobody who can reach the public port can issue operator topology.

use prost::Message as _;
use sha2::{Digest, Sha256};
use syncline_protocol::messages::{self, Message, TopologyTransaction};
use syncline_protocol::topology::processor::publish_request;
use syncline_protocol::topology::OPERATOR;

use crate::error::{Result, SequencerError};
use crate::service::PublicApi;

/// Prefix of the message ids of published topology transactions; the rest is the hex SHA-256
/// of the transaction's encoding.
pub const MESSAGE_ID_PREFIX: &str = "topology-";

/// Decode each of `transactions` as a protocol message holding a topology transaction; the
/// first that is not one is refused, naming its index and field.
pub fn decode_all(transactions: &[Vec<u8>]) -> Result<Vec<TopologyTransaction>> {
    if transactions.is_empty() {
        return Err(SequencerError::InvalidRequest("transactions: empty (publish at least one)".into()));
    }
    transactions
        .iter()
        .enumerate()
        .map(|(i, bytes)| match messages::decode(bytes) {
            Ok(Message::Topology(tx)) => Ok(tx),
            Ok(other) => Err(SequencerError::InvalidRequest(format!(
                "transactions[{i}]: a {} message, not a topology_transaction",
                kind_of(&other)
            ))),
            Err(e) => Err(SequencerError::InvalidRequest(format!("transactions[{i}]: {e}"))),
        })
        .collect()
}

fn kind_of(m: &Message) -> &'static str {
    use syncline_proto::protocol::protocol_message::Message as M;
    match messages::to_proto(m).message {
        Some(M::TopologyTransaction(_)) => "topology_transaction",
        Some(M::InformeeMessage(_)) => "informee_message",
        Some(M::RootHashMessage(_)) => "root_hash_message",
        Some(M::ViewMessage(_)) => "view_message",
        Some(M::ConfirmationResponse(_)) => "confirmation_response",
        Some(M::ConfirmationResult(_)) => "confirmation_result",
        None => "empty",
    }
}

/// The message id of `tx`'s publication: derived from its (canonical) encoding, so the same
/// transaction always gets the same id and a repeat is answered from the first send's claim.
pub fn message_id(tx: &TopologyTransaction) -> String {
    let content = messages::to_proto(&Message::Topology(tx.clone())).encode_to_vec();
    let digest = Sha256::digest(&content);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{MESSAGE_ID_PREFIX}{hex}")
}

/// Register the operator if needed and broadcast each of `txs`, in order, from it through
/// `api`'s send path; their timestamps.
pub async fn publish(api: &PublicApi, txs: &[TopologyTransaction]) -> Result<Vec<i64>> {
    // The operator sends only through the admin API: its token is not needed.
    api.inner.members.register(OPERATOR).await?;
    let settings = &api.inner.settings;
    // As late as the node accepts, so the message-id claim (what answers a repeat) lives as
    // long as possible; a second of margin for the clock moving on before admission.
    let horizon = settings.max_sequencing_horizon;
    let margin = (horizon / 10).min(std::time::Duration::from_secs(1));
    let mut timestamps = Vec::with_capacity(txs.len());
    for tx in txs {
        let mst = settings.now() + (horizon - margin).as_micros() as i64;
        let ts = api.sequence(publish_request(OPERATOR, message_id(tx), mst, tx)).await?;
        tracing::info!(
            ts,
            serial = tx.serial,
            kind = tx.mapping.kind().as_str(),
            "published operator topology transaction"
        );
        timestamps.push(ts);
    }
    Ok(timestamps)
}
