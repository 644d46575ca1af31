//! `MediatorAdminService.Topology`: the topology as this mediator received it. Any replica
//! answers, passive ones included: the store is in the database the replicas share.

use std::time::Duration;

use syncline_coordination::db::{self, SessionKind};
use syncline_coordination::Db;
use syncline_proto::mediator::{StoredTopologyTransaction, TopologyResponse, TopologySnapshot as PbSnapshot};
use syncline_proto::protocol as pb;
use syncline_proto::protocol::hosting_participant::Permission as PbPermission;
use syncline_protocol::messages::{Permission, SynchronizerParameters};
use syncline_protocol::topology::{store, Outcome, StoredTransaction, TopologySnapshot};
use syncline_sequencer_client::now_micros;
use tonic::Status;

/// Every stored topology transaction of replica `name`'s database, and the snapshot at `at`
/// (default: now).
pub async fn topology(name: &str, db: &Db, at: Option<i64>) -> Result<TopologyResponse, Status> {
    let at = at.unwrap_or_else(now_micros);
    let failed = |e: &dyn std::fmt::Display| Status::unavailable(format!("mediator replica {name}: {e}"));
    let mut conn = db::connect(db.config(), SessionKind::Pooled).await.map_err(|e| failed(&e))?;
    let stored = store::list(&mut conn).await.map_err(|e| failed(&e))?;
    let snapshot = store::snapshot_at(&mut conn, at).await.map_err(|e| failed(&e))?;
    Ok(TopologyResponse {
        transactions: stored.iter().map(stored_to_proto).collect(),
        snapshot: Some(snapshot_to_proto(&snapshot)),
    })
}

fn stored_to_proto(s: &StoredTransaction) -> StoredTopologyTransaction {
    let (accepted, effective_from, effective_until, ignore_reason) = match &s.outcome {
        Outcome::Accepted { effective_from, effective_until } => {
            (true, Some(*effective_from), *effective_until, String::new())
        }
        Outcome::Ignored { reason } => (false, None, None, reason.clone()),
    };
    StoredTopologyTransaction {
        sequenced_at: s.sequenced_at,
        sender: s.sender.clone(),
        transaction: Some((&s.transaction).into()),
        accepted,
        effective_from,
        effective_until,
        ignore_reason,
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn parameters_to_proto(p: &SynchronizerParameters) -> pb::SynchronizerParameters {
    pb::SynchronizerParameters {
        confirmation_response_timeout_micros: micros(p.confirmation_response_timeout),
        mediator_reaction_timeout_micros: micros(p.mediator_reaction_timeout),
        ledger_time_record_time_tolerance_micros: micros(p.ledger_time_record_time_tolerance),
        topology_change_delay_micros: micros(p.topology_change_delay),
    }
}

fn snapshot_to_proto(s: &TopologySnapshot) -> PbSnapshot {
    let permission = |p: &Permission| match p {
        Permission::Submission => PbPermission::Submission,
        Permission::Confirmation => PbPermission::Confirmation,
        Permission::Observation => PbPermission::Observation,
    } as i32;
    PbSnapshot {
        timestamp: s.timestamp(),
        parameters: Some(parameters_to_proto(&s.parameters())),
        parameters_published: s.parameters_published(),
        mediator: s.mediator().map(str::to_string),
        participants: s.participants().iter().cloned().collect(),
        parties: (s.party_mappings().iter())
            .map(|(party, hosts)| pb::PartyToParticipant {
                party: party.clone(),
                participants: (hosts.iter())
                    .map(|(p, perm)| pb::HostingParticipant { participant: p.clone(), permission: permission(perm) })
                    .collect(),
            })
            .collect(),
    }
}
