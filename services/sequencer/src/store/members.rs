//! Registered members: names map to compact ids once and forever; a member reads events
//! strictly after its registration timestamp, and a disabled one can neither send nor
//! subscribe.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use syncline_schema::tables::sequencer::sequencer_members as m;

use super::error::{DieselContext, Result};
use super::watermarks;

/// A registered member.
#[derive(Clone, Debug, PartialEq, Eq, Queryable, Selectable)]
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
}

/// Register `name` (idempotent: the first registration's timestamp wins) and return it. A new
/// member reads from the visibility cap (the safe watermark, or the highest watermark with no
/// node online), below every event that can still be written; with no watermark at all, from
/// `now`.
pub async fn register(conn: &mut AsyncPgConnection, name: &str, now: i64) -> Result<Member> {
    let start = watermarks::visibility_cap(conn).await?.unwrap_or(now);
    diesel::insert_into(m::table)
        .values((m::member.eq(name), m::registered_ts.eq(start)))
        .on_conflict(m::member)
        .do_nothing()
        .execute(conn)
        .await
        .during("registering a member")?;
    m::table.filter(m::member.eq(name)).select(Member::as_select()).first(conn).await.during("reading a member")
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
