//! Applying received topology transactions, and publishing new ones.
//!
//! Every node applies the broadcast topology transactions in sequencing order. A transaction
//! is checked against the snapshot in effect at its sequencing time and its key's latest
//! accepted transaction ([`super::authorization::validate`]); an accepted one takes effect at
//! `max(sequenced_at + topology change delay in effect at sequenced_at, latest effective_from)`
//! — the max keeps effective times in sequencing order when the delay shrinks, so a later
//! transaction never takes effect before an earlier one — and ends the validity of its key's
//! previous transaction at that time. Ignored ones are stored too (with the reason) and
//! logged. The outcome depends only on the sequence of (timestamp, sender, transaction), so
//! every node reaches the same state.

use diesel_async::{AsyncConnection, AsyncPgConnection};
use syncline_proto::sequencer::{Envelope, SendRequest};

use crate::messages::{self, Message, TopologyTransaction};

use super::authorization::validate;
use super::store::{self, NewTransaction, Outcome};
use super::{MappingKey, TopologyError};

/// The recipient that addresses every member: the sequencer's broadcast address.
pub use syncline_sequencer_client::BROADCAST_RECIPIENT;

/// What [`apply`] did with a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Accepted; in effect from this timestamp (µs).
    Accepted {
        /// When it takes effect.
        effective_from: i64,
    },
    /// Ignored (unauthorized, wrong serial, …), for this reason.
    Ignored(String),
}

/// Apply the transaction `tx` sent by `sender` and sequenced at `sequenced_at`, and record the
/// outcome. Idempotent: applying a stored timestamp again returns the stored outcome and
/// changes nothing (a replay after a failover). Runs in a transaction of its own, nested (a
/// savepoint) when the caller already has one, e.g. inside `leadership::fenced`; an error
/// leaves nothing behind.
///
/// Fails with [`TopologyError::OutOfOrder`] for a transaction older than the latest stored one
/// (they must be applied in sequencing order) and [`TopologyError::ConflictingReplay`] when a
/// different transaction is stored at `sequenced_at`.
pub async fn apply(
    conn: &mut AsyncPgConnection,
    sequenced_at: i64,
    sender: &str,
    tx: &TopologyTransaction,
) -> Result<Applied, TopologyError> {
    conn.transaction::<Applied, TopologyError, _>(async move |c| {
        store::lock_for_write(c).await?;
        if let Some(stored) = store::stored_at(c, sequenced_at).await? {
            if stored.sender != sender || &stored.transaction != tx {
                return Err(TopologyError::ConflictingReplay { sequenced_at, stored_sender: stored.sender });
            }
            return Ok(match stored.outcome {
                Outcome::Accepted { effective_from, .. } => Applied::Accepted { effective_from },
                Outcome::Ignored { reason } => Applied::Ignored(reason),
            });
        }
        if let Some(latest) = store::latest_sequenced_at(c).await?.filter(|&l| l > sequenced_at) {
            return Err(TopologyError::OutOfOrder { sequenced_at, latest });
        }
        let snapshot = store::snapshot_at(c, sequenced_at).await?;
        let key = MappingKey::of(&tx.mapping);
        let head = store::head(c, &key).await?.map(|h| h.transaction);
        match validate(&snapshot, head.as_ref(), sender, tx) {
            Ok(()) => {
                let delayed = snapshot.parameters().topology_effective_time(sequenced_at);
                let effective_from = store::latest_effective_from(c).await?.map_or(delayed, |l| l.max(delayed));
                store::insert(c, NewTransaction { sequenced_at, sender, transaction: tx, outcome: Ok(effective_from) })
                    .await?;
                store::end_previous(c, &key, sequenced_at, effective_from).await?;
                tracing::info!(sequenced_at, sender, %key, serial = tx.serial, operation = tx.operation.as_str(),
                    effective_from, "topology transaction accepted");
                Ok(Applied::Accepted { effective_from })
            }
            Err(rejection) => {
                let reason = rejection.to_string();
                tracing::warn!(sequenced_at, sender, %key, serial = tx.serial, %reason,
                    "topology transaction ignored");
                store::insert(
                    c,
                    NewTransaction { sequenced_at, sender, transaction: tx, outcome: Err(reason.clone()) },
                )
                .await?;
                Ok(Applied::Ignored(reason))
            }
        }
    })
    .await
}

/// The envelope that broadcasts `tx` to every member.
pub fn broadcast_envelope(tx: &TopologyTransaction) -> Envelope {
    Envelope {
        recipients: vec![BROADCAST_RECIPIENT.to_string()],
        content: messages::encode(&Message::Topology(tx.clone())),
    }
}

/// The send that publishes `tx` from `sender` (the issuer every node authorizes it against):
/// broadcast, with `message_id` (resend the same request, same id, until
/// `max_sequencing_time` when the outcome of a send is unknown).
pub fn publish_request(
    sender: &str,
    message_id: impl Into<String>,
    max_sequencing_time: i64,
    tx: &TopologyTransaction,
) -> SendRequest {
    SendRequest {
        sender: sender.to_string(),
        message_id: message_id.into(),
        max_sequencing_time,
        envelopes: vec![broadcast_envelope(tx)],
    }
}

/// The topology transactions in an event's envelopes, in order, with the ones that do not
/// decode reported by position; other protocol messages are skipped.
pub fn topology_transactions(
    envelopes: &[Envelope],
) -> Vec<Result<TopologyTransaction, (usize, messages::DecodeError)>> {
    (envelopes.iter().enumerate())
        .filter_map(|(i, e)| match messages::decode(&e.content) {
            Ok(Message::Topology(tx)) => Some(Ok(tx)),
            Ok(_) => None,
            Err(err) => Some(Err((i, err))),
        })
        .collect()
}
