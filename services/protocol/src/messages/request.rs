//! The confirmation request and its parts: the informee message (mediator), the root hash
//! message (informee participants and mediator) and the view messages (participants hosting
//! each view's informees).

use std::collections::BTreeSet;
use std::time::Duration;

use syncline_proto::protocol as pb;
use syncline_proto::protocol::submitter_metadata::DeduplicationPeriod as PbDedup;
use syncline_proto::sequencer::Envelope;

use super::hash::{self, Hash, RootHashMismatch};
use super::topology::micros;
use super::{encode, fields, DecodeError, Message};

/// What every part of a request shares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    /// Unique per request (lowercase hyphenated UUID); the mediator deduplicates on it.
    pub request_uuid: String,
    /// Who submitted.
    pub submitter: SubmitterMetadata,
    /// The ledger time chosen by the submitter (µs).
    pub ledger_time: i64,
}

/// Who submitted, for deduplication and completions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubmitterMetadata {
    /// The acting parties; at least one. They confirm every view.
    pub act_as: BTreeSet<String>,
    /// The submitting application's user.
    pub user_id: String,
    /// The application's command id.
    pub command_id: String,
    /// The application's submission id, if it gave one.
    pub submission_id: Option<String>,
    /// The submitting participant.
    pub submitting_participant: String,
    /// The command's deduplication period.
    pub deduplication_period: DeduplicationPeriod,
}

/// How far back a command is deduplicated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeduplicationPeriod {
    /// Against commands accepted within this duration (> 0, microsecond precision).
    Duration(Duration),
    /// Against commands accepted after this participant offset (≥ 0).
    Offset(i64),
}

/// Who sees and who confirms a view (the part of a view the mediator sees).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewCommonData {
    /// The parties that see the view; at least one.
    pub informees: BTreeSet<String>,
    /// The parties that must approve the view; at least one.
    pub confirming_parties: BTreeSet<String>,
}

impl ViewCommonData {
    /// Why this view's parties are inconsistent with the request's `act_as` parties, if they
    /// are: every confirming party must be an informee, and every acting party must confirm.
    pub fn inconsistency(&self, act_as: &BTreeSet<String>) -> Option<String> {
        if let Some(p) = self.confirming_parties.difference(&self.informees).next() {
            return Some(format!("confirming party {p} is not an informee"));
        }
        if let Some(p) = act_as.difference(&self.confirming_parties).next() {
            return Some(format!("acting party {p} is not a confirming party"));
        }
        None
    }
}

/// Create a contract.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Create {
    /// The new contract's id.
    pub contract_id: String,
    /// Its template name.
    pub template: String,
    /// Its arguments, a JSON document.
    pub arguments: String,
    /// Its signatories; at least one.
    pub signatories: BTreeSet<String>,
    /// Its observers.
    pub observers: BTreeSet<String>,
}

impl Create {
    /// Signatories and observers.
    pub fn stakeholders(&self) -> BTreeSet<String> {
        self.signatories.union(&self.observers).cloned().collect()
    }
}

/// Archive an active contract.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Archive {
    /// The archived contract's id.
    pub contract_id: String,
}

/// One action of a view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create a contract.
    Create(Create),
    /// Archive a contract.
    Archive(Archive),
}

/// A view: actions and the parties that see and confirm them. An exercise is an archive and a
/// create in one view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    /// Informees and confirming parties.
    pub common: ViewCommonData,
    /// The actions; at least one.
    pub actions: Vec<Action>,
}

/// A whole request as its submitter builds it; split into its parts to send it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfirmationRequest {
    /// What every part shares.
    pub header: RequestHeader,
    /// The views, in order (view index = position); at least one.
    pub views: Vec<View>,
}

/// The mediator's part of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InformeeMessage {
    /// The request's root hash.
    pub root_hash: Hash,
    /// What every part shares.
    pub header: RequestHeader,
    /// The views' common data and participant-data hashes, in view order; at least one.
    pub views: Vec<InformeeView>,
}

/// A view as the mediator sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InformeeView {
    /// Informees and confirming parties.
    pub common: ViewCommonData,
    /// The hash of the view's actions.
    pub participant_data_hash: Hash,
}

/// Tells the informee participants and the mediator that a request exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootHashMessage {
    /// The request's root hash.
    pub root_hash: Hash,
}

/// One view of a request, for the participants hosting its informees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewMessage {
    /// The request's root hash.
    pub root_hash: Hash,
    /// What every part shares.
    pub header: RequestHeader,
    /// The view's position.
    pub view_index: u32,
    /// The view.
    pub view: View,
    /// The hash of every view of the request, in order.
    pub view_hashes: Vec<Hash>,
}

impl ConfirmationRequest {
    /// The hash of each view, in order.
    pub fn view_hashes(&self) -> Vec<Hash> {
        self.views.iter().map(hash::view_hash).collect()
    }

    /// The request's root hash.
    pub fn root_hash(&self) -> Hash {
        hash::root_hash(&self.header, &self.view_hashes())
    }

    /// The mediator's part.
    pub fn informee_message(&self) -> InformeeMessage {
        InformeeMessage {
            root_hash: self.root_hash(),
            header: self.header.clone(),
            views: self
                .views
                .iter()
                .map(|v| InformeeView {
                    common: v.common.clone(),
                    participant_data_hash: hash::participant_data_hash(&v.actions),
                })
                .collect(),
        }
    }

    /// The root hash message.
    pub fn root_hash_message(&self) -> RootHashMessage {
        RootHashMessage { root_hash: self.root_hash() }
    }

    /// One view message per view, in order.
    pub fn view_messages(&self) -> Vec<ViewMessage> {
        let (root_hash, view_hashes) = (self.root_hash(), self.view_hashes());
        (self.views.iter().enumerate())
            .map(|(i, v)| ViewMessage {
                root_hash,
                header: self.header.clone(),
                view_index: i as u32,
                view: v.clone(),
                view_hashes: view_hashes.clone(),
            })
            .collect()
    }

    /// The envelopes of the request's one send: the informee message to `mediator`, the root
    /// hash message to every participant hosting an informee and `mediator`, and each view to
    /// the participants hosting its informees. `hosts(informees)` gives those participants
    /// (e.g. `|i| snapshot.participants_for(i)`); a view nobody hosts gets no envelope (the
    /// mediator then rejects the request).
    pub fn envelopes(&self, mediator: &str, hosts: impl Fn(&BTreeSet<String>) -> BTreeSet<String>) -> Vec<Envelope> {
        let per_view: Vec<BTreeSet<String>> = self.views.iter().map(|v| hosts(&v.common.informees)).collect();
        let mut all: BTreeSet<String> = per_view.iter().flatten().cloned().collect();
        all.insert(mediator.to_string());
        let mut envelopes = vec![
            Envelope {
                recipients: vec![mediator.to_string()],
                content: encode(&Message::Informee(self.informee_message())),
            },
            Envelope {
                recipients: all.into_iter().collect(),
                content: encode(&Message::RootHash(self.root_hash_message())),
            },
        ];
        for (message, recipients) in self.view_messages().into_iter().zip(per_view) {
            if !recipients.is_empty() {
                envelopes.push(Envelope {
                    recipients: recipients.into_iter().collect(),
                    content: encode(&Message::View(message)),
                });
            }
        }
        envelopes
    }
}

impl InformeeMessage {
    /// The view hashes recomputed from the common data and participant-data hashes.
    pub fn view_hashes(&self) -> Vec<Hash> {
        self.views.iter().map(|v| hash::view_hash_of(&hash::common_hash(&v.common), &v.participant_data_hash)).collect()
    }

    /// The root hash recomputed from the content.
    pub fn computed_root_hash(&self) -> Hash {
        hash::root_hash(&self.header, &self.view_hashes())
    }

    /// Check that the content hashes to the root hash the message carries.
    pub fn verify_root_hash(&self) -> Result<(), RootHashMismatch> {
        let computed = self.computed_root_hash();
        if computed != self.root_hash {
            return Err(RootHashMismatch::Root { claimed: self.root_hash, computed });
        }
        Ok(())
    }

    /// Why the views' parties are inconsistent (see [`ViewCommonData::inconsistency`]), naming
    /// the first offending view, if they are.
    pub fn inconsistency(&self) -> Option<String> {
        let act_as = &self.header.submitter.act_as;
        (self.views.iter().enumerate())
            .find_map(|(i, v)| v.common.inconsistency(act_as).map(|why| format!("view {i}: {why}")))
    }

    /// Every informee of every view.
    pub fn informees(&self) -> BTreeSet<String> {
        self.views.iter().flat_map(|v| v.common.informees.iter().cloned()).collect()
    }
}

impl ViewMessage {
    /// Check that the view is listed under its index and that the header and view hashes
    /// give the root hash the message carries.
    pub fn verify_root_hash(&self) -> Result<(), RootHashMismatch> {
        let listed = *self
            .view_hashes
            .get(self.view_index as usize)
            .ok_or(RootHashMismatch::ViewIndex { view_index: self.view_index, views: self.view_hashes.len() })?;
        let computed = hash::view_hash(&self.view);
        if computed != listed {
            return Err(RootHashMismatch::View { view_index: self.view_index, listed, computed });
        }
        let computed = hash::root_hash(&self.header, &self.view_hashes);
        if computed != self.root_hash {
            return Err(RootHashMismatch::Root { claimed: self.root_hash, computed });
        }
        Ok(())
    }
}

// ---- wire conversion ----

fn strings(set: &BTreeSet<String>) -> Vec<String> {
    set.iter().cloned().collect()
}

impl From<&RequestHeader> for pb::RequestHeader {
    fn from(h: &RequestHeader) -> Self {
        let s = &h.submitter;
        pb::RequestHeader {
            request_uuid: h.request_uuid.clone(),
            submitter: Some(pb::SubmitterMetadata {
                act_as: strings(&s.act_as),
                user_id: s.user_id.clone(),
                command_id: s.command_id.clone(),
                submission_id: s.submission_id.clone().unwrap_or_default(),
                submitting_participant: s.submitting_participant.clone(),
                deduplication_period: Some(match s.deduplication_period {
                    DeduplicationPeriod::Duration(d) => PbDedup::DeduplicationDurationMicros(micros(d)),
                    DeduplicationPeriod::Offset(o) => PbDedup::DeduplicationOffset(o),
                }),
            }),
            ledger_time: h.ledger_time,
        }
    }
}

impl TryFrom<pb::RequestHeader> for RequestHeader {
    type Error = DecodeError;

    fn try_from(h: pb::RequestHeader) -> Result<Self, DecodeError> {
        let request_uuid = fields::uuid("request_uuid", h.request_uuid)?;
        let s = fields::required("submitter", h.submitter)?;
        let submitter = (|| {
            let deduplication_period = match fields::required("deduplication_period", s.deduplication_period)? {
                PbDedup::DeduplicationDurationMicros(d) if d > 0 => {
                    DeduplicationPeriod::Duration(Duration::from_micros(d as u64))
                }
                PbDedup::DeduplicationDurationMicros(d) => {
                    return Err(DecodeError::malformed(
                        "deduplication_duration_micros",
                        format!("{d}, must be positive"),
                    ))
                }
                PbDedup::DeduplicationOffset(o) if o >= 0 => DeduplicationPeriod::Offset(o),
                PbDedup::DeduplicationOffset(o) => {
                    return Err(DecodeError::malformed("deduplication_offset", format!("{o}, must not be negative")))
                }
            };
            Ok(SubmitterMetadata {
                act_as: fields::non_empty_names("act_as", s.act_as)?,
                user_id: fields::name("user_id", s.user_id)?,
                command_id: fields::name("command_id", s.command_id)?,
                submission_id: match s.submission_id {
                    id if id.is_empty() => None,
                    id => Some(fields::name("submission_id", id)?),
                },
                submitting_participant: fields::name("submitting_participant", s.submitting_participant)?,
                deduplication_period,
            })
        })()
        .map_err(|e| e.within("submitter"))?;
        Ok(RequestHeader { request_uuid, submitter, ledger_time: h.ledger_time })
    }
}

impl From<&ViewCommonData> for pb::ViewCommonData {
    fn from(c: &ViewCommonData) -> Self {
        pb::ViewCommonData { informees: strings(&c.informees), confirming_parties: strings(&c.confirming_parties) }
    }
}

impl TryFrom<pb::ViewCommonData> for ViewCommonData {
    type Error = DecodeError;

    fn try_from(c: pb::ViewCommonData) -> Result<Self, DecodeError> {
        Ok(ViewCommonData {
            informees: fields::non_empty_names("informees", c.informees)?,
            confirming_parties: fields::non_empty_names("confirming_parties", c.confirming_parties)?,
        })
    }
}

impl From<&View> for pb::View {
    fn from(v: &View) -> Self {
        use pb::action::Action as A;
        let actions = (v.actions.iter())
            .map(|a| pb::Action {
                action: Some(match a {
                    Action::Create(c) => A::Create(pb::Create {
                        contract_id: c.contract_id.clone(),
                        template: c.template.clone(),
                        arguments: c.arguments.clone(),
                        signatories: strings(&c.signatories),
                        observers: strings(&c.observers),
                    }),
                    Action::Archive(a) => A::Archive(pb::Archive { contract_id: a.contract_id.clone() }),
                }),
            })
            .collect();
        pb::View { common: Some((&v.common).into()), actions }
    }
}

impl TryFrom<pb::View> for View {
    type Error = DecodeError;

    fn try_from(v: pb::View) -> Result<Self, DecodeError> {
        use pb::action::Action as A;
        let common = fields::required("common", v.common)?.try_into().map_err(|e: DecodeError| e.within("common"))?;
        if v.actions.is_empty() {
            return Err(DecodeError::malformed("actions", "empty (at least one is required)"));
        }
        let mut actions = Vec::with_capacity(v.actions.len());
        for (i, a) in v.actions.into_iter().enumerate() {
            let at = format!("actions[{i}]");
            let action = match fields::required(&at, a.action)? {
                A::Create(c) => Action::Create(
                    (|| {
                        let signatories = fields::non_empty_names("signatories", c.signatories)?;
                        let observers = fields::names("observers", c.observers)?;
                        if let Some(p) = signatories.intersection(&observers).next() {
                            return Err(DecodeError::malformed("observers", format!("{p:?} is also a signatory")));
                        }
                        Ok(Create {
                            contract_id: fields::name("contract_id", c.contract_id)?,
                            template: fields::name("template", c.template)?,
                            arguments: fields::json("arguments", c.arguments)?,
                            signatories,
                            observers,
                        })
                    })()
                    .map_err(|e| e.within(&format!("{at}.create")))?,
                ),
                A::Archive(a) => Action::Archive(Archive {
                    contract_id: fields::name(&format!("{at}.archive.contract_id"), a.contract_id)?,
                }),
            };
            actions.push(action);
        }
        Ok(View { common, actions })
    }
}

impl From<&InformeeMessage> for pb::InformeeMessage {
    fn from(m: &InformeeMessage) -> Self {
        pb::InformeeMessage {
            root_hash: m.root_hash.0.to_vec(),
            header: Some((&m.header).into()),
            views: (m.views.iter())
                .map(|v| pb::InformeeView {
                    common: Some((&v.common).into()),
                    participant_data_hash: v.participant_data_hash.0.to_vec(),
                })
                .collect(),
        }
    }
}

impl TryFrom<pb::InformeeMessage> for InformeeMessage {
    type Error = DecodeError;

    fn try_from(m: pb::InformeeMessage) -> Result<Self, DecodeError> {
        let root_hash = fields::hash("root_hash", m.root_hash)?;
        let header = fields::required("header", m.header)?.try_into().map_err(|e: DecodeError| e.within("header"))?;
        if m.views.is_empty() {
            return Err(DecodeError::malformed("views", "empty (at least one is required)"));
        }
        let mut views = Vec::with_capacity(m.views.len());
        for (i, v) in m.views.into_iter().enumerate() {
            let at = format!("views[{i}]");
            let common = fields::required(&format!("{at}.common"), v.common)?
                .try_into()
                .map_err(|e: DecodeError| e.within(&format!("{at}.common")))?;
            let participant_data_hash = fields::hash(&format!("{at}.participant_data_hash"), v.participant_data_hash)?;
            views.push(InformeeView { common, participant_data_hash });
        }
        Ok(InformeeMessage { root_hash, header, views })
    }
}

impl From<&RootHashMessage> for pb::RootHashMessage {
    fn from(m: &RootHashMessage) -> Self {
        pb::RootHashMessage { root_hash: m.root_hash.0.to_vec() }
    }
}

impl TryFrom<pb::RootHashMessage> for RootHashMessage {
    type Error = DecodeError;

    fn try_from(m: pb::RootHashMessage) -> Result<Self, DecodeError> {
        Ok(RootHashMessage { root_hash: fields::hash("root_hash", m.root_hash)? })
    }
}

impl From<&ViewMessage> for pb::ViewMessage {
    fn from(m: &ViewMessage) -> Self {
        pb::ViewMessage {
            root_hash: m.root_hash.0.to_vec(),
            header: Some((&m.header).into()),
            view_index: m.view_index,
            view: Some((&m.view).into()),
            view_hashes: m.view_hashes.iter().map(|h| h.0.to_vec()).collect(),
        }
    }
}

impl TryFrom<pb::ViewMessage> for ViewMessage {
    type Error = DecodeError;

    fn try_from(m: pb::ViewMessage) -> Result<Self, DecodeError> {
        let root_hash = fields::hash("root_hash", m.root_hash)?;
        let header = fields::required("header", m.header)?.try_into().map_err(|e: DecodeError| e.within("header"))?;
        let view = fields::required("view", m.view)?.try_into().map_err(|e: DecodeError| e.within("view"))?;
        let view_hashes = (m.view_hashes.into_iter().enumerate())
            .map(|(i, h)| fields::hash(&format!("view_hashes[{i}]"), h))
            .collect::<Result<Vec<_>, _>>()?;
        if view_hashes.is_empty() {
            return Err(DecodeError::malformed("view_hashes", "empty (at least one is required)"));
        }
        Ok(ViewMessage { root_hash, header, view_index: m.view_index, view, view_hashes })
    }
}
