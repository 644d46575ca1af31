//! Response aggregation of one confirmation request: every confirming party of every view must
//! approve, through one of its participants with confirmation permission. The first response
//! of a participant for a view counts; the request is rejected as soon as some party can no
//! longer approve (every one of its hosts rejected), and approved once every party approved.
//! Pure data, stored as it is between events, so that a new leader continues where the old
//! one stopped and a replay computes the same verdict.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Error id of a request that was not answered in time.
pub const TIMED_OUT: &str = "MEDIATOR_SAYS_TX_TIMED_OUT";

/// The final outcome of a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Every confirming party approved.
    Approve,
    /// Some party can no longer approve: what its participants said.
    ParticipantReject {
        /// Every rejection received so far, in arrival order.
        reasons: Vec<Rejection>,
    },
    /// The mediator refused the request (invalid, duplicate, timed out).
    MediatorReject {
        /// Canton's error id.
        code: String,
        /// Why, for a person.
        reason: String,
        /// For a timeout: the parties that did not answer, sorted.
        unresponsive_parties: Vec<String>,
    },
}

impl Verdict {
    /// A mediator reject with `code` and `reason`.
    pub fn mediator_reject(code: &str, reason: impl Into<String>) -> Verdict {
        Verdict::MediatorReject { code: code.into(), reason: reason.into(), unresponsive_parties: vec![] }
    }

    /// The metric label of the verdict's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::ParticipantReject { .. } => "participant_reject",
            Verdict::MediatorReject { code, .. } if code == TIMED_OUT => "timeout",
            Verdict::MediatorReject { .. } => "mediator_reject",
        }
    }
}

/// One participant's rejection on behalf of one party.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// The party it answered for.
    pub party: String,
    /// The participant that rejected.
    pub participant: String,
    /// Its error id (e.g. `LOCAL_VERDICT_LOCKED_CONTRACTS`).
    pub code: String,
    /// Its reason.
    pub reason: String,
}

/// What a participant said about one view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalVerdict {
    /// Valid: approve.
    Approve,
    /// Rejected with an error id and reason.
    Reject {
        /// Error id.
        code: String,
        /// Reason.
        reason: String,
    },
    /// The view could not be understood.
    Malformed {
        /// Reason.
        reason: String,
    },
}

/// A response the aggregation did not count, and why (logged by the caller).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    /// The view index is past the request's views.
    #[error("view {view} does not exist (the request has {views})")]
    UnknownView {
        /// The index given.
        view: u32,
        /// How many views the request has.
        views: usize,
    },
    /// This participant already answered this view: the first answer counts.
    #[error("participant {participant} already answered view {view}; only its first response counts")]
    AlreadyAnswered {
        /// The participant.
        participant: String,
        /// The view.
        view: u32,
    },
    /// None of the parties named is a confirming party of the view hosted by the sender with
    /// confirmation permission.
    #[error("participant {participant} answers view {view} for none of its confirming parties it hosts ({parties:?})")]
    NotConfirming {
        /// The participant.
        participant: String,
        /// The view.
        view: u32,
        /// The parties it named.
        parties: Vec<String>,
    },
}

/// Where a request stands after a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Still waiting for responses.
    Pending,
    /// Decided.
    Finalized(Verdict),
}

/// One confirming party of a view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PartyVote {
    /// Its participants with confirmation permission (at the request's timestamp).
    hosts: BTreeSet<String>,
    /// Hosts that have not rejected yet.
    remaining: BTreeSet<String>,
    /// The host whose approval counted.
    approved_by: Option<String>,
}

impl PartyVote {
    fn unreachable(&self) -> bool {
        self.approved_by.is_none() && self.remaining.is_empty()
    }
}

/// The aggregation state of one pending request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aggregation {
    /// Per view: confirming party → its vote.
    views: Vec<BTreeMap<String, PartyVote>>,
    /// (participant, view) pairs already answered.
    answered: BTreeSet<(String, u32)>,
    /// Rejections so far, in arrival order.
    rejections: Vec<Rejection>,
}

impl Aggregation {
    /// A new aggregation: per view, each confirming party with its participants that hold
    /// confirmation permission. Every party needs at least one such host (checked before).
    pub fn new(views: Vec<BTreeMap<String, BTreeSet<String>>>) -> Aggregation {
        let views = views
            .into_iter()
            .map(|parties| {
                parties
                    .into_iter()
                    .map(|(party, hosts)| (party, PartyVote { remaining: hosts.clone(), hosts, approved_by: None }))
                    .collect()
            })
            .collect();
        Aggregation { views, answered: BTreeSet::new(), rejections: vec![] }
    }

    /// Count `participant`'s verdict on view `view` for `parties`.
    pub fn respond(
        &mut self,
        participant: &str,
        view: u32,
        verdict: &LocalVerdict,
        parties: &[String],
    ) -> Result<Progress, Ignored> {
        let views = self.views.len();
        let votes = self.views.get_mut(view as usize).ok_or(Ignored::UnknownView { view, views })?;
        if self.answered.contains(&(participant.to_string(), view)) {
            return Err(Ignored::AlreadyAnswered { participant: participant.into(), view });
        }
        let named: BTreeSet<&String> =
            parties.iter().filter(|p| votes.get(*p).is_some_and(|v| v.hosts.contains(participant))).collect();
        if named.is_empty() {
            return Err(Ignored::NotConfirming { participant: participant.into(), view, parties: parties.to_vec() });
        }
        self.answered.insert((participant.to_string(), view));
        for party in named {
            let vote = votes.get_mut(party).expect("filtered above");
            match verdict {
                LocalVerdict::Approve => {
                    vote.approved_by.get_or_insert_with(|| participant.to_string());
                }
                LocalVerdict::Reject { code, reason } => {
                    vote.remaining.remove(participant);
                    self.rejections.push(Rejection {
                        party: party.clone(),
                        participant: participant.into(),
                        code: code.clone(),
                        reason: reason.clone(),
                    });
                }
                LocalVerdict::Malformed { reason } => {
                    vote.remaining.remove(participant);
                    self.rejections.push(Rejection {
                        party: party.clone(),
                        participant: participant.into(),
                        code: "LOCAL_VERDICT_MALFORMED_REQUEST".into(),
                        reason: reason.clone(),
                    });
                }
            }
        }
        Ok(self.progress())
    }

    /// Decided by the responses so far?
    pub fn progress(&self) -> Progress {
        let parties = || self.views.iter().flat_map(|v| v.values());
        if parties().any(PartyVote::unreachable) {
            Progress::Finalized(Verdict::ParticipantReject { reasons: self.rejections.clone() })
        } else if parties().all(|v| v.approved_by.is_some()) {
            Progress::Finalized(Verdict::Approve)
        } else {
            Progress::Pending
        }
    }

    /// The verdict when the response deadline passes first: a timeout naming every confirming
    /// party that has neither approved nor been rejected for, sorted.
    pub fn timeout(&self) -> Verdict {
        let silent: BTreeSet<&String> = self
            .views
            .iter()
            .flat_map(|v| v.iter())
            .filter(|(_, vote)| vote.approved_by.is_none() && !vote.unreachable())
            .map(|(party, _)| party)
            .collect();
        let unresponsive_parties: Vec<String> = silent.into_iter().cloned().collect();
        Verdict::MediatorReject {
            code: TIMED_OUT.into(),
            reason: format!(
                "the confirmation response deadline passed without responses for {}",
                unresponsive_parties.join(", ")
            ),
            unresponsive_parties,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(list: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        list.iter().map(|(p, h)| (p.to_string(), h.iter().map(|s| s.to_string()).collect())).collect()
    }

    fn parties(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    fn reject(code: &str) -> LocalVerdict {
        LocalVerdict::Reject { code: code.into(), reason: "no".into() }
    }

    #[test]
    fn approves_once_every_confirming_party_of_every_view_approved() {
        let mut a = Aggregation::new(vec![hosts(&[("alice", &["p1"]), ("bob", &["p2"])]), hosts(&[("bob", &["p2"])])]);
        assert_eq!(a.respond("p1", 0, &LocalVerdict::Approve, &parties(&["alice"])), Ok(Progress::Pending));
        assert_eq!(a.respond("p2", 0, &LocalVerdict::Approve, &parties(&["bob"])), Ok(Progress::Pending));
        assert_eq!(
            a.respond("p2", 1, &LocalVerdict::Approve, &parties(&["bob"])),
            Ok(Progress::Finalized(Verdict::Approve))
        );
    }

    #[test]
    fn rejects_as_soon_as_a_party_cannot_approve_any_more() {
        let mut a = Aggregation::new(vec![hosts(&[("alice", &["p1"]), ("bob", &["p2", "p3"])])]);
        // bob is hosted twice: one host rejecting leaves the other.
        assert_eq!(
            a.respond("p2", 0, &reject("LOCAL_VERDICT_LOCKED_CONTRACTS"), &parties(&["bob"])),
            Ok(Progress::Pending)
        );
        let verdict = a.respond("p3", 0, &LocalVerdict::Malformed { reason: "bad".into() }, &parties(&["bob"]));
        let Ok(Progress::Finalized(Verdict::ParticipantReject { reasons })) = verdict else { panic!("{verdict:?}") };
        let codes: Vec<_> = reasons.iter().map(|r| (r.participant.as_str(), r.code.as_str())).collect();
        assert_eq!(codes, [("p2", "LOCAL_VERDICT_LOCKED_CONTRACTS"), ("p3", "LOCAL_VERDICT_MALFORMED_REQUEST")]);
    }

    #[test]
    fn one_approving_host_is_enough_and_a_later_reject_by_another_host_changes_nothing() {
        let mut a = Aggregation::new(vec![hosts(&[("bob", &["p2", "p3"])])]);
        assert_eq!(
            a.respond("p2", 0, &LocalVerdict::Approve, &parties(&["bob"])),
            Ok(Progress::Finalized(Verdict::Approve))
        );
    }

    #[test]
    fn the_first_response_counts_and_strangers_are_ignored() {
        let mut a = Aggregation::new(vec![hosts(&[("alice", &["p1"]), ("bob", &["p2"])])]);
        assert_eq!(a.respond("p1", 0, &LocalVerdict::Approve, &parties(&["alice"])), Ok(Progress::Pending));
        assert_eq!(
            a.respond("p1", 0, &reject("X"), &parties(&["alice"])),
            Err(Ignored::AlreadyAnswered { participant: "p1".into(), view: 0 })
        );
        // p1 does not host bob: it cannot answer for him.
        assert!(matches!(
            a.respond("p9", 0, &LocalVerdict::Approve, &parties(&["bob"])),
            Err(Ignored::NotConfirming { .. })
        ));
        assert!(matches!(
            a.respond("p2", 4, &LocalVerdict::Approve, &parties(&["bob"])),
            Err(Ignored::UnknownView { view: 4, views: 1 })
        ));
        assert_eq!(a.progress(), Progress::Pending);
    }

    #[test]
    fn a_timeout_names_the_parties_that_did_not_answer_sorted() {
        let mut a = Aggregation::new(vec![
            hosts(&[("zoe", &["p3"]), ("alice", &["p1"])]),
            hosts(&[("bob", &["p2"]), ("alice", &["p1"])]),
        ]);
        a.respond("p1", 0, &LocalVerdict::Approve, &parties(&["alice"])).unwrap();
        let Verdict::MediatorReject { code, unresponsive_parties, reason } = a.timeout() else { panic!() };
        assert_eq!(code, TIMED_OUT);
        assert_eq!(unresponsive_parties, ["alice", "bob", "zoe"], "alice still owes view 1");
        assert!(reason.contains("alice, bob, zoe"), "{reason}");
    }

    #[test]
    fn survives_a_round_trip_through_its_stored_form() {
        let mut a = Aggregation::new(vec![hosts(&[("alice", &["p1"]), ("bob", &["p2"])])]);
        a.respond("p1", 0, &LocalVerdict::Approve, &parties(&["alice"])).unwrap();
        let stored = serde_json::to_value(&a).unwrap();
        let mut back: Aggregation = serde_json::from_value(stored).unwrap();
        assert_eq!(back, a);
        assert_eq!(
            back.respond("p2", 0, &LocalVerdict::Approve, &parties(&["bob"])),
            Ok(Progress::Finalized(Verdict::Approve))
        );
    }
}
