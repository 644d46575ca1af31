//! The root hash of a confirmation request: a Merkle-style SHA-256 over a canonical encoding,
//! so that the mediator can recompute it from its informee message and each participant from
//! its view message, without either seeing the other parts.
//!
//! Canonical encoding (all integers big-endian; no protobuf involved, so it does not depend on
//! any encoder's field order or on unknown fields):
//! - `str(s)` = u32 byte length ‖ UTF-8 bytes; `i64(n)` = 8 bytes two's complement;
//!   `u32(n)` = 4 bytes; `tag(b)` = 1 byte;
//! - `set(xs)` = u32 count ‖ `str(x)` for each x in ascending byte order (sets never repeat);
//! - `H(label, …)` = SHA-256(`str(label)` ‖ …), labels below domain-separate the hashes.
//!
//! Hashes:
//! - action: create = `tag(1) ‖ str(contract_id) ‖ str(template) ‖ str(arguments) ‖
//!   set(signatories) ‖ set(observers)`; archive = `tag(2) ‖ str(contract_id)`.
//! - `participant_data_hash(view)` = `H("syncline.v1.view.participant-data", u32(n) ‖ action₁ ‖ … ‖ actionₙ)`
//! - `common_hash(view)` = `H("syncline.v1.view.common", set(informees) ‖ set(confirming_parties))`
//! - `view_hash(view)` = `H("syncline.v1.view", common_hash ‖ participant_data_hash)`
//! - `header_hash` = `H("syncline.v1.header", str(request_uuid) ‖ set(act_as) ‖ str(user_id) ‖
//!   str(command_id) ‖ (tag(0) | tag(1) ‖ str(submission_id)) ‖ str(submitting_participant) ‖
//!   (tag(1) ‖ i64(duration µs) | tag(2) ‖ i64(offset)) ‖ i64(ledger_time))`
//! - `root_hash` = `H("syncline.v1.root", header_hash ‖ u32(n) ‖ view_hash₁ ‖ … ‖ view_hashₙ)`

use std::collections::BTreeSet;
use std::fmt;

use sha2::{Digest, Sha256};

use super::request::{Action, DeduplicationPeriod, RequestHeader, View, ViewCommonData};

/// A SHA-256 hash.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The hash in `bytes`, if it has exactly 32.
    pub fn from_slice(bytes: &[u8]) -> Option<Hash> {
        <[u8; 32]>::try_from(bytes).ok().map(Hash)
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

/// A request part does not match its root hash.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RootHashMismatch {
    /// The root hash recomputed from the part differs from the one it carries.
    #[error("root hash {claimed} does not match the request's content (computed {computed})")]
    Root {
        /// The root hash the message carries.
        claimed: Hash,
        /// The root hash computed from its content.
        computed: Hash,
    },
    /// A view's hash differs from the one listed for its index.
    #[error("view {view_index} hashes to {computed}, the request lists {listed}")]
    View {
        /// The view's index.
        view_index: u32,
        /// The hash listed in the message.
        listed: Hash,
        /// The hash of the view's content.
        computed: Hash,
    },
    /// The view index is outside the list of view hashes.
    #[error("view index {view_index} is outside the request's {views} views")]
    ViewIndex {
        /// The view's index.
        view_index: u32,
        /// How many views the request has.
        views: usize,
    },
}

/// Builds one canonical hash.
struct Hasher(Sha256);

impl Hasher {
    fn new(label: &str) -> Self {
        let mut h = Hasher(Sha256::new());
        h.str(label);
        h
    }
    fn u32(&mut self, n: u32) {
        self.0.update(n.to_be_bytes());
    }
    fn i64(&mut self, n: i64) {
        self.0.update(n.to_be_bytes());
    }
    fn tag(&mut self, b: u8) {
        self.0.update([b]);
    }
    fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.0.update(s.as_bytes());
    }
    fn set(&mut self, xs: &BTreeSet<String>) {
        self.u32(xs.len() as u32);
        xs.iter().for_each(|x| self.str(x));
    }
    fn hash(&mut self, h: &Hash) {
        self.0.update(h.0);
    }
    fn finish(self) -> Hash {
        Hash(self.0.finalize().into())
    }
}

/// The hash of a view's participant data (its actions).
pub fn participant_data_hash(actions: &[Action]) -> Hash {
    let mut h = Hasher::new("syncline.v1.view.participant-data");
    h.u32(actions.len() as u32);
    for a in actions {
        match a {
            Action::Create(c) => {
                h.tag(1);
                h.str(&c.contract_id);
                h.str(&c.template);
                h.str(&c.arguments);
                h.set(&c.signatories);
                h.set(&c.observers);
            }
            Action::Archive(a) => {
                h.tag(2);
                h.str(&a.contract_id);
            }
        }
    }
    h.finish()
}

/// The hash of a view's common data (informees and confirming parties).
pub fn common_hash(common: &ViewCommonData) -> Hash {
    let mut h = Hasher::new("syncline.v1.view.common");
    h.set(&common.informees);
    h.set(&common.confirming_parties);
    h.finish()
}

/// A view's hash from the hashes of its two halves.
pub fn view_hash_of(common: &Hash, participant_data: &Hash) -> Hash {
    let mut h = Hasher::new("syncline.v1.view");
    h.hash(common);
    h.hash(participant_data);
    h.finish()
}

/// A full view's hash.
pub fn view_hash(view: &View) -> Hash {
    view_hash_of(&common_hash(&view.common), &participant_data_hash(&view.actions))
}

/// The hash of a request's header.
pub fn header_hash(header: &RequestHeader) -> Hash {
    let s = &header.submitter;
    let mut h = Hasher::new("syncline.v1.header");
    h.str(&header.request_uuid);
    h.set(&s.act_as);
    h.str(&s.user_id);
    h.str(&s.command_id);
    match &s.submission_id {
        None => h.tag(0),
        Some(id) => {
            h.tag(1);
            h.str(id);
        }
    }
    h.str(&s.submitting_participant);
    match s.deduplication_period {
        DeduplicationPeriod::Duration(d) => {
            h.tag(1);
            h.i64(super::topology::micros(d));
        }
        DeduplicationPeriod::Offset(o) => {
            h.tag(2);
            h.i64(o);
        }
    }
    h.i64(header.ledger_time);
    h.finish()
}

/// The root hash of a request with this header and these view hashes (in view order).
pub fn root_hash(header: &RequestHeader, view_hashes: &[Hash]) -> Hash {
    let mut h = Hasher::new("syncline.v1.root");
    h.hash(&header_hash(header));
    h.u32(view_hashes.len() as u32);
    view_hashes.iter().for_each(|v| h.hash(v));
    h.finish()
}
