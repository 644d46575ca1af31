//! Statements prepared once per session. Diesel never caches a raw `sql_query`: each run is
//! parsed, planned and described again, which costs a round trip and more than the hot
//! reads and writes themselves. [`prepared`] marks such a query as safe to cache, so the
//! session's statement cache keys it by its SQL text and bind types and reuses the server's
//! prepared statement on every later run on that session.

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::Untyped;
use diesel::QueryResult;

/// A raw query whose statement the session prepares once and reuses. Only for SQL whose
/// text does not depend on the values bound (every bind is a `$n` parameter).
#[derive(Debug, Clone)]
pub struct Prepared<Q>(Q);

/// Mark `query` (a bound `diesel::sql_query`) as preparable once per session.
pub fn prepared<Q>(query: Q) -> Prepared<Q> {
    Prepared(query)
}

impl<Q: QueryFragment<Pg>> QueryFragment<Pg> for Prepared<Q> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }

    // `sql_query` refuses the cache because its text is unknown to diesel; ours is fixed.
    fn is_safe_to_cache_prepared(&self, _backend: &Pg) -> QueryResult<bool> {
        Ok(true)
    }
}

impl<Q> QueryId for Prepared<Q> {
    // No static id: the cache keys the statement by its SQL text and bind types.
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q> Query for Prepared<Q> {
    type SqlType = Untyped;
}
