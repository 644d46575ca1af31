//! Member authentication of the public API: every call carries `authorization: Bearer <token>`,
//! the token issued to a member at its registration (only its SHA-256 is stored), and may act
//! only as that member. Failures are counted in `syncline_sequencer_auth_failures_total`.

use std::net::SocketAddr;

use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;

use crate::error::{Result, SequencerError};
use crate::Inner;

/// Random bytes in a token (256 bits: guessing one is hopeless, so it may be looked up by hash).
const TOKEN_BYTES: usize = 32;

/// Every token starts with this, so a token in a file or a log is recognizable.
pub const TOKEN_PREFIX: &str = "sltok_";

/// Whether the public API requires member tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberAuth {
    /// Every call must carry the token of the member it acts as.
    #[default]
    Required,
    /// Anyone reaching the public API may act as any member (trusted networks and tests only).
    Off,
}

/// Why a call was refused; the `reason` label of the failure metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `authorization` metadata.
    Missing,
    /// Not `Bearer <token>`, or not a token of this sequencer's form.
    Malformed,
    /// A well-formed token no member has (never issued, or rotated since).
    UnknownToken,
    /// The token of one member used to act as another.
    WrongMember,
}

impl AuthFailure {
    /// Its metric label.
    pub fn label(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing_token",
            AuthFailure::Malformed => "malformed_token",
            AuthFailure::UnknownToken => "unknown_token",
            AuthFailure::WrongMember => "wrong_member",
        }
    }
}

/// Publish every failure counter of node `node` at zero, so the first failure shows as an
/// increase (an alert on `increase()` misses a series that appears at 1).
pub(crate) fn register_metrics(node: &str) {
    for reason in [AuthFailure::Missing, AuthFailure::Malformed, AuthFailure::UnknownToken, AuthFailure::WrongMember] {
        metrics::counter!("syncline_sequencer_auth_failures_total", "node" => node.to_string(), "reason" => reason.label())
            .increment(0);
    }
}

/// A new random token.
pub fn new_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    let mut token = String::with_capacity(TOKEN_PREFIX.len() + 2 * TOKEN_BYTES);
    token.push_str(TOKEN_PREFIX);
    for b in bytes {
        token.push_str(&format!("{b:02x}"));
    }
    token
}

/// The stored form of `token`.
pub fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Equal without an early exit: the time taken does not tell how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The bearer token of `metadata`.
fn bearer(metadata: &MetadataMap) -> Result<&str, AuthFailure> {
    let value = metadata.get("authorization").ok_or(AuthFailure::Missing)?;
    let value = value.to_str().map_err(|_| AuthFailure::Malformed)?;
    // The scheme is case-insensitive (RFC 7235).
    let token = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => return Err(AuthFailure::Malformed),
    };
    let valid = token.len() == TOKEN_PREFIX.len() + 2 * TOKEN_BYTES
        && token.starts_with(TOKEN_PREFIX)
        && token[TOKEN_PREFIX.len()..].bytes().all(|b| b.is_ascii_hexdigit());
    if valid {
        Ok(token)
    } else {
        Err(AuthFailure::Malformed)
    }
}

/// Check that the call with `metadata` may act as `member` (`what` names the act for the
/// message, e.g. "send as"): its token is `member`'s. A no-op with `member_auth = "off"`.
pub(crate) async fn authorize(
    inner: &Inner,
    metadata: &MetadataMap,
    peer: Option<SocketAddr>,
    member: &str,
    what: &str,
) -> Result<()> {
    if inner.settings.member_auth == MemberAuth::Off {
        return Ok(());
    }
    let r = check(inner, metadata, member, what).await;
    if let Err(e) = &r {
        let reason = match e {
            SequencerError::Unauthenticated { reason, .. } | SequencerError::WrongMember { reason, .. } => {
                reason.label()
            }
            // The database failed: not an authentication failure, not counted as one.
            _ => return r,
        };
        let peer = peer.map_or_else(|| "unknown".to_string(), |p| p.to_string());
        if matches!(e, SequencerError::WrongMember { .. }) {
            // A valid token used for someone else: leaked or misconfigured; the alert points here.
            tracing::warn!(node = %inner.settings.name, member, reason, %peer, "call refused: {e}");
        } else {
            tracing::debug!(node = %inner.settings.name, member, reason, %peer, "call refused: {e}");
        }
        metrics::counter!("syncline_sequencer_auth_failures_total", "node" => inner.settings.name.clone(), "reason" => reason)
            .increment(1);
    }
    r
}

async fn check(inner: &Inner, metadata: &MetadataMap, member: &str, what: &str) -> Result<()> {
    let unauthenticated =
        |reason| SequencerError::Unauthenticated { reason, what: what.to_string(), member: member.to_string() };
    let token = bearer(metadata).map_err(unauthenticated)?;
    let presented = hash(token);
    // The usual case from the member cache; a token that does not match is looked up by its
    // hash (fresh from the database) to tell a stranger from another member.
    if let Some(m) = inner.members.lookup(member).await? {
        if m.token_sha256.as_deref().is_some_and(|h| constant_time_eq(h, &presented)) {
            return Ok(());
        }
    }
    match inner.members.owner_of_token(&presented).await? {
        None => Err(unauthenticated(AuthFailure::UnknownToken)),
        // The cache was stale (a rotation on another node): the database says it is theirs.
        Some(owner) if owner == member => Ok(()),
        Some(owner) => Err(SequencerError::WrongMember {
            reason: AuthFailure::WrongMember,
            authenticated: owner,
            what: what.to_string(),
            member: member.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_well_formed_and_compared_in_full() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        let mut md = MetadataMap::new();
        md.insert("authorization", format!("Bearer {a}").parse().unwrap());
        assert_eq!(bearer(&md), Ok(a.as_str()));
        md.insert("authorization", format!("bearer {a}").parse().unwrap());
        assert_eq!(bearer(&md), Ok(a.as_str()));
        assert!(constant_time_eq(&hash(&a), &hash(&a)));
        assert!(!constant_time_eq(&hash(&a), &hash(&b)));
        assert!(!constant_time_eq(&hash(&a), &hash(&a)[..31]));
        for bad in
            [format!("Basic {a}"), format!("Bearer {}", &a[..20]), format!("Bearer x{}", &a[1..]), "Bearer".into()]
        {
            let mut md = MetadataMap::new();
            md.insert("authorization", bad.parse().unwrap());
            assert_eq!(bearer(&md), Err(AuthFailure::Malformed), "{bad}");
        }
        assert_eq!(bearer(&MetadataMap::new()), Err(AuthFailure::Missing));
    }
}
