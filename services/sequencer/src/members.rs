//! Member registry with a small cache: names map to compact ids once and forever; the
//! enabled flag is re-read after a short time so a disable reaches every node quickly.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use crate::store::members as store;
use crate::store::timestamps::now_micros;
use scoped_futures::ScopedFutureExt;
use syncline_coordination::{Db, DbError};

use crate::auth;
use crate::error::{Result, SequencerError};
use syncline_sequencer_client::BROADCAST_RECIPIENT;

/// How long a cached enabled flag is trusted.
const ENABLED_TTL: Duration = Duration::from_secs(1);

/// How long a send waits for a member refresh before it uses what the cache has: a database
/// that does not answer must not hold sends up.
const REFRESH_TIMEOUT: Duration = Duration::from_millis(500);

/// Longest accepted member name.
pub const MAX_MEMBER_NAME: usize = 255;

pub use crate::store::members::Member;

/// The registry.
pub struct Members {
    db: Db,
    by_name: RwLock<HashMap<String, (Member, Instant)>>,
    names: RwLock<HashMap<i32, String>>,
}

impl Members {
    /// A registry over `db`.
    pub fn new(db: Db) -> Self {
        Members { db, by_name: RwLock::default(), names: RwLock::default() }
    }

    /// Register `name` (idempotent: the first registration's timestamp wins). A new member
    /// reads from the current safe watermark, below every event that can still be written.
    /// Returns the member and its token when this registration issued one (its first; a
    /// member registered again keeps its token, which is not stored and so not returned).
    pub async fn register(&self, name: &str) -> Result<(Member, Option<String>)> {
        validate_name(name)?;
        let token = auth::new_token();
        let hash = auth::hash(&token);
        let r = self
            .db
            .run("registering a member", |c| {
                let hash = &hash;
                async move { store::register(c, name, now_micros(), hash).await }.scope_boxed()
            })
            .await?;
        self.remember(&r.member);
        Ok((r.member, r.token_issued.then_some(token)))
    }

    /// Issue a new token for `name`; the old one stops working (on other nodes once their
    /// cached entry expires, within a second).
    pub async fn rotate_token(&self, name: &str) -> Result<String> {
        let token = auth::new_token();
        let hash = auth::hash(&token);
        let found = self
            .db
            .run("rotating a member token", |c| {
                let hash = &hash;
                async move { store::rotate_token(c, name, hash).await }.scope_boxed()
            })
            .await?;
        let member = found.ok_or_else(|| SequencerError::UnknownMember(name.to_string()))?;
        self.remember(&member);
        Ok(token)
    }

    /// The name of the member whose token hashes to `token_sha256`, read from the database.
    pub async fn owner_of_token(&self, token_sha256: &[u8]) -> Result<Option<String>> {
        Ok(self
            .db
            .run("looking up a member token", |c| {
                async move { store::owner_of_token(c, token_sha256).await }.scope_boxed()
            })
            .await?)
    }

    /// The member called `name`, if registered. A cached entry older than its TTL is
    /// refreshed; when the database does not answer in time the cached entry is used.
    pub async fn lookup(&self, name: &str) -> Result<Option<Member>> {
        let cached = self.by_name.read().unwrap().get(name).cloned();
        if let Some((member, at)) = &cached {
            if at.elapsed() < ENABLED_TTL {
                return Ok(Some(member.clone()));
            }
        }
        let fresh = tokio::time::timeout(REFRESH_TIMEOUT, self.lookup_fresh(name)).await.unwrap_or_else(|_| {
            Err(DbError::Timeout { during: format!("looking up member {name}"), after: REFRESH_TIMEOUT }.into())
        });
        match (fresh, cached) {
            (Err(e), Some((member, _))) => {
                tracing::debug!(%e, member = name, "member refresh failed; using the cached entry");
                Ok(Some(member))
            }
            (fresh, _) => fresh,
        }
    }

    /// The member called `name`, read from the database.
    pub async fn lookup_fresh(&self, name: &str) -> Result<Option<Member>> {
        let found =
            self.db.run("looking up a member", |c| async move { store::find(c, name).await }.scope_boxed()).await?;
        if let Some(member) = &found {
            self.remember(member);
        }
        Ok(found)
    }

    /// The member called `name`, which must be registered and enabled.
    pub async fn require_enabled(&self, name: &str) -> Result<Member> {
        match self.lookup(name).await? {
            None => Err(SequencerError::UnknownMember(name.to_string())),
            Some(m) if !m.enabled => Err(SequencerError::MemberDisabled(name.to_string())),
            Some(m) => Ok(m),
        }
    }

    /// The name of member `id`.
    pub async fn name_of(&self, id: i32) -> Result<String> {
        if let Some(name) = self.names.read().unwrap().get(&id) {
            return Ok(name.clone());
        }
        let name =
            self.db.run("reading a member name", |c| async move { store::name_of(c, id).await }.scope_boxed()).await?;
        self.names.write().unwrap().insert(id, name.clone());
        Ok(name)
    }

    /// Disable `name`: it can no longer send or subscribe, and no longer holds back pruning.
    pub async fn disable(&self, name: &str) -> Result<()> {
        let found =
            self.db.run("disabling a member", |c| async move { store::disable(c, name).await }.scope_boxed()).await?;
        if !found {
            return Err(SequencerError::UnknownMember(name.to_string()));
        }
        self.by_name.write().unwrap().remove(name);
        Ok(())
    }

    /// Number of registered members.
    pub async fn count(&self) -> Result<i64> {
        Ok(self.db.run("counting members", |c| async move { store::count(c).await }.scope_boxed()).await?)
    }

    fn remember(&self, member: &Member) {
        self.by_name.write().unwrap().insert(member.member.clone(), (member.clone(), Instant::now()));
        self.names.write().unwrap().insert(member.id, member.member.clone());
    }
}

/// Member names are non-empty, printable and bounded, and not the broadcast recipient.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_MEMBER_NAME || name.chars().any(char::is_control) {
        return Err(SequencerError::InvalidRequest(format!(
            "member name must be 1 to {MAX_MEMBER_NAME} printable characters, got {name:?}"
        )));
    }
    if name == BROADCAST_RECIPIENT {
        return Err(SequencerError::InvalidRequest(format!(
            "{BROADCAST_RECIPIENT:?} addresses every member and cannot be a member name"
        )));
    }
    Ok(())
}
