//! Confirmation responses (participant → mediator) and results (mediator → participants).

use std::collections::BTreeSet;

use syncline_proto::protocol as pb;
use syncline_proto::protocol::confirmation_result::Verdict as PbVerdict;
use syncline_proto::protocol::local_verdict::Verdict as PbLocal;

use super::hash::Hash;
use super::{fields, DecodeError};

/// A participant's answer to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfirmationResponse {
    /// The request id: the request's sequencing timestamp.
    pub request_id: i64,
    /// The request's root hash.
    pub root_hash: Hash,
    /// The responding participant.
    pub participant: String,
    /// One per view answered; at least one, each view index once.
    pub views: Vec<ViewResponse>,
}

/// The answer for one view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewResponse {
    /// The view's position in the request.
    pub view_index: u32,
    /// The participant's verdict on it.
    pub verdict: LocalVerdict,
    /// The confirming parties this answer is for (hosted by the sender with confirmation
    /// permission); at least one.
    pub confirming_parties: BTreeSet<String>,
}

/// A participant's verdict on a view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalVerdict {
    /// The view is fine.
    Approve,
    /// The view cannot be committed.
    Reject {
        /// Error id, e.g. `LOCAL_VERDICT_LOCKED_CONTRACTS`.
        code: String,
        /// Human-readable cause.
        reason: String,
    },
    /// The view is malformed.
    Malformed {
        /// Human-readable cause.
        reason: String,
    },
}

/// The mediator's verdict on a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfirmationResult {
    /// The request id: the request's sequencing timestamp.
    pub request_id: i64,
    /// The request's root hash.
    pub root_hash: Hash,
    /// The verdict.
    pub verdict: Verdict,
}

/// What the mediator decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every confirming party approved: commit.
    Approve,
    /// Confirming parties rejected; at least one reason.
    ParticipantReject(Vec<RejectReason>),
    /// The mediator rejected (invalid request, duplicate UUID, timeout).
    MediatorReject {
        /// Error id, e.g. `MEDIATOR_SAYS_TX_TIMED_OUT`.
        code: String,
        /// Human-readable cause.
        reason: String,
        /// The parties concerned (for a timeout: those that did not respond).
        parties: BTreeSet<String>,
    },
}

/// Why one participant rejected, for which parties.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectReason {
    /// The confirming parties the rejection was for; at least one.
    pub parties: BTreeSet<String>,
    /// The rejecting participant.
    pub participant: String,
    /// Error id.
    pub code: String,
    /// Human-readable cause.
    pub reason: String,
}

// ---- wire conversion ----

fn strings(set: &BTreeSet<String>) -> Vec<String> {
    set.iter().cloned().collect()
}

impl From<&ConfirmationResponse> for pb::ConfirmationResponse {
    fn from(r: &ConfirmationResponse) -> Self {
        pb::ConfirmationResponse {
            request_id: r.request_id,
            root_hash: r.root_hash.0.to_vec(),
            participant: r.participant.clone(),
            views: (r.views.iter())
                .map(|v| pb::ViewResponse {
                    view_index: v.view_index,
                    verdict: Some(pb::LocalVerdict {
                        verdict: Some(match &v.verdict {
                            LocalVerdict::Approve => PbLocal::Approve(pb::Approve {}),
                            LocalVerdict::Reject { code, reason } => {
                                PbLocal::Reject(pb::LocalReject { code: code.clone(), reason: reason.clone() })
                            }
                            LocalVerdict::Malformed { reason } => {
                                PbLocal::Malformed(pb::Malformed { reason: reason.clone() })
                            }
                        }),
                    }),
                    confirming_parties: strings(&v.confirming_parties),
                })
                .collect(),
        }
    }
}

impl TryFrom<pb::ConfirmationResponse> for ConfirmationResponse {
    type Error = DecodeError;

    fn try_from(r: pb::ConfirmationResponse) -> Result<Self, DecodeError> {
        let root_hash = fields::hash("root_hash", r.root_hash)?;
        let participant = fields::name("participant", r.participant)?;
        if r.views.is_empty() {
            return Err(DecodeError::malformed("views", "empty (at least one is required)"));
        }
        let mut seen = BTreeSet::new();
        let mut views = Vec::with_capacity(r.views.len());
        for (i, v) in r.views.into_iter().enumerate() {
            let at = format!("views[{i}]");
            if !seen.insert(v.view_index) {
                return Err(DecodeError::malformed(
                    format!("{at}.view_index"),
                    format!("view {} answered twice", v.view_index),
                ));
            }
            let verdict = fields::required(&format!("{at}.verdict"), v.verdict)?;
            let verdict = match fields::required(&format!("{at}.verdict.verdict"), verdict.verdict)? {
                PbLocal::Approve(_) => LocalVerdict::Approve,
                PbLocal::Reject(r) => LocalVerdict::Reject {
                    code: fields::name(&format!("{at}.verdict.reject.code"), r.code)?,
                    reason: r.reason,
                },
                PbLocal::Malformed(m) => LocalVerdict::Malformed { reason: m.reason },
            };
            let confirming_parties =
                fields::non_empty_names(&format!("{at}.confirming_parties"), v.confirming_parties)?;
            views.push(ViewResponse { view_index: v.view_index, verdict, confirming_parties });
        }
        Ok(ConfirmationResponse { request_id: r.request_id, root_hash, participant, views })
    }
}

impl From<&ConfirmationResult> for pb::ConfirmationResult {
    fn from(r: &ConfirmationResult) -> Self {
        let verdict = match &r.verdict {
            Verdict::Approve => PbVerdict::Approve(pb::Approve {}),
            Verdict::ParticipantReject(reasons) => PbVerdict::ParticipantReject(pb::ParticipantReject {
                reasons: (reasons.iter())
                    .map(|r| pb::RejectReason {
                        parties: strings(&r.parties),
                        participant: r.participant.clone(),
                        code: r.code.clone(),
                        reason: r.reason.clone(),
                    })
                    .collect(),
            }),
            Verdict::MediatorReject { code, reason, parties } => PbVerdict::MediatorReject(pb::MediatorReject {
                code: code.clone(),
                reason: reason.clone(),
                parties: strings(parties),
            }),
        };
        pb::ConfirmationResult { request_id: r.request_id, root_hash: r.root_hash.0.to_vec(), verdict: Some(verdict) }
    }
}

impl TryFrom<pb::ConfirmationResult> for ConfirmationResult {
    type Error = DecodeError;

    fn try_from(r: pb::ConfirmationResult) -> Result<Self, DecodeError> {
        let root_hash = fields::hash("root_hash", r.root_hash)?;
        let verdict = match fields::required("verdict", r.verdict)? {
            PbVerdict::Approve(_) => Verdict::Approve,
            PbVerdict::ParticipantReject(p) => {
                if p.reasons.is_empty() {
                    return Err(DecodeError::malformed(
                        "participant_reject.reasons",
                        "empty (at least one is required)",
                    ));
                }
                let reasons = (p.reasons.into_iter().enumerate())
                    .map(|(i, r)| {
                        let at = format!("participant_reject.reasons[{i}]");
                        Ok(RejectReason {
                            parties: fields::non_empty_names(&format!("{at}.parties"), r.parties)?,
                            participant: fields::name(&format!("{at}.participant"), r.participant)?,
                            code: fields::name(&format!("{at}.code"), r.code)?,
                            reason: r.reason,
                        })
                    })
                    .collect::<Result<Vec<_>, DecodeError>>()?;
                Verdict::ParticipantReject(reasons)
            }
            PbVerdict::MediatorReject(m) => Verdict::MediatorReject {
                code: fields::name("mediator_reject.code", m.code)?,
                reason: m.reason,
                parties: fields::names("mediator_reject.parties", m.parties)?,
            },
        };
        Ok(ConfirmationResult { request_id: r.request_id, root_hash, verdict })
    }
}
