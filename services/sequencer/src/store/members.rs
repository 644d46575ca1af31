//! Registered members: names map to compact ids once and forever; a member reads events
//! strictly after its registration timestamp, and a disabled one can neither send nor
//! subscribe. Each member has a bearer token of which only the SHA-256 is stored.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use syncline_schema::tables::sequencer::sequencer_members as m;

use super::error::{DieselContext, Result};
use super::watermarks;

/// A registered member.
#[derive(Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = m)]
pub struct Member {
    /// Compact id used in event rows.
    pub id: i32,
    /// The member's name.
    pub member: String,
    /// It reads events strictly after this.
    pub registered_ts: i64,
    /// Its last event below the pruning point.
    pub pruned_previous_event_ts: Option<i64>,
    /// Disabled members can neither send nor subscribe.
    pub enabled: bool,
    /// SHA-256 of its bearer token; `None` until one is issued.
    pub token_sha256: Option<Vec<u8>>,
}

// By hand: the token's hash stays out of logs too.
impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("id", &self.id)
            .field("member", &self.member)
            .field("registered_ts", &self.registered_ts)
            .field("pruned_previous_event_ts", &self.pruned_previous_event_ts)
            .field("enabled", &self.enabled)
            .field("has_token", &self.token_sha256.is_some())
            .finish()
    }
}

/// What a registration did.
#[derive(Debug)]
pub struct Registered {
    /// The member as stored.
    pub member: Member,
    /// Whether this registration stored the given token hash (the member had none); otherwise
    /// the member keeps its token.
    pub token_issued: bool,
}

/// Register `name` (idempotent: the first registration's timestamp wins) and return it. A new
/// member reads from the visibility cap (the safe watermark, or the highest watermark with no
/// node online), below every event that can still be written; with no watermark at all, from
/// `now`. `token_sha256` becomes its token's hash if it has none yet (a new member, or one
/// registered before tokens existed); an existing token is kept.
pub async fn register(conn: &mut AsyncPgConnection, name: &str, now: i64, token_sha256: &[u8]) -> Result<Registered> {
    let start = watermarks::visibility_cap(conn).await?.unwrap_or(now);
    diesel::insert_into(m::table)
        .values((m::member.eq(name), m::registered_ts.eq(start)))
        .on_conflict(m::member)
        .do_nothing()
        .execute(conn)
        .await
        .during("registering a member")?;
    // Concurrent registrations of one member: one statement sets the hash, the others find it set.
    let issued = diesel::update(m::table.filter(m::member.eq(name)).filter(m::token_sha256.is_null()))
        .set(m::token_sha256.eq(token_sha256))
        .execute(conn)
        .await
        .during("issuing a member token")?;
    let member =
        m::table.filter(m::member.eq(name)).select(Member::as_select()).first(conn).await.during("reading a member")?;
    Ok(Registered { member, token_issued: issued > 0 })
}

/// Replace the token hash of `name`; the member, or `None` when there is none.
pub async fn rotate_token(conn: &mut AsyncPgConnection, name: &str, token_sha256: &[u8]) -> Result<Option<Member>> {
    diesel::update(m::table.filter(m::member.eq(name)))
        .set(m::token_sha256.eq(token_sha256))
        .returning(Member::as_returning())
        .get_result(conn)
        .await
        .optional()
        .during("rotating a member token")
}

/// The name of the member whose token hashes to `token_sha256`, if any.
pub async fn owner_of_token(conn: &mut AsyncPgConnection, token_sha256: &[u8]) -> Result<Option<String>> {
    m::table
        .filter(m::token_sha256.eq(token_sha256))
        .select(m::member)
        .first(conn)
        .await
        .optional()
        .during("looking up a member token")
}

/// The member called `name`, if registered.
pub async fn find(conn: &mut AsyncPgConnection, name: &str) -> Result<Option<Member>> {
    m::table
        .filter(m::member.eq(name))
        .select(Member::as_select())
        .first(conn)
        .await
        .optional()
        .during("looking up a member")
}

/// The name of member `id`.
pub async fn name_of(conn: &mut AsyncPgConnection, id: i32) -> Result<String> {
    m::table.find(id).select(m::member).first(conn).await.during("reading a member name")
}

/// Disable the member called `name`; false when there is none.
pub async fn disable(conn: &mut AsyncPgConnection, name: &str) -> Result<bool> {
    let n = diesel::update(m::table.filter(m::member.eq(name)))
        .set(m::enabled.eq(false))
        .execute(conn)
        .await
        .during("disabling a member")?;
    Ok(n > 0)
}

/// Number of registered members.
pub async fn count(conn: &mut AsyncPgConnection) -> Result<i64> {
    m::table.count().get_result(conn).await.during("counting members")
}
