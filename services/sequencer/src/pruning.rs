//! Acknowledgements and pruning: a member acknowledges what it has processed; everything
//! before the minimum acknowledgement over enabled members may be removed, but never past
//! what readers can read (the visibility cap) and never an event its node has not covered.
//! Broadcasts (recipient `*`) are never pruned: they carry what a member registered later
//! must replay (the topology), and a subscription from a member's start delivers every
//! broadcast still stored. The SQL is in `store::pruning`.
//!
//! An event is visible, as `events::read` has it, when it is at or below the cap (the safe
//! watermark: the minimum over online nodes' watermarks, or with none online the maximum of
//! all) and at or below its own node's watermark (which only an offline node's can be below
//! the cap). Events above their node's watermark are uncovered: they may still be truncated,
//! or become visible later, so pruning leaves them alone.

use scoped_futures::ScopedFutureExt;
use syncline_coordination::Db;

use crate::error::{Result, SequencerError};
use crate::store::members::Member;
use crate::store::pruning::{self as store, Acknowledged, PruneOutcome};

pub use crate::store::pruning::{MemberAck, Pruned, PruningStatus, PRUNE_STATEMENTS};

/// Record that the member called `member` processed its events up to `ts`. Refused for an
/// unknown or disabled member and beyond the visibility cap: nobody can have received what no
/// reader can read yet, and such an acknowledgement would let pruning pass events still to
/// come. Acknowledgements only move forward (an older one is accepted and changes nothing).
///
/// Members do not authenticate yet: any client may acknowledge for any member, within these
/// bounds. (A later issue adds member authentication.)
pub async fn acknowledge(db: &Db, member: &str, ts: i64) -> Result<()> {
    let outcome =
        db.run("acknowledging", |c| async move { store::acknowledge(c, member, ts).await }.scope_boxed()).await?;
    match outcome {
        Acknowledged::Recorded => Ok(()),
        Acknowledged::UnknownMember => Err(SequencerError::UnknownMember(member.to_string())),
        Acknowledged::Disabled => Err(SequencerError::MemberDisabled(member.to_string())),
        Acknowledged::BeyondCap(cap) => Err(SequencerError::InvalidRequest(format!(
            "member {member} cannot acknowledge {ts}: events are readable only up to {} so far, so it cannot have received them",
            cap.map_or("nothing (no sequencer has a watermark yet)".to_string(), |c| c.to_string())
        ))),
    }
}

/// The safe pruning point: the minimum over enabled members of their acknowledgement (or
/// registration), capped at what readers can read; with no enabled member, that cap.
pub async fn status(db: &Db) -> Result<PruningStatus> {
    Ok(db.run("reading the pruning status", |c| async move { store::status(c).await }.scope_boxed()).await?)
}

/// Remove the covered events before `before`, which must not pass the safe pruning point.
/// Members keep a correct previous timestamp for their first event after the bound.
/// Uncovered events (above their node's watermark) stay: their node's recovery truncates them.
pub async fn prune(db: &Db, before: i64) -> Result<Pruned> {
    let outcome = db.run("pruning", |c| async move { store::prune(c, before).await }.scope_boxed()).await?;
    match outcome {
        PruneOutcome::Pruned(pruned) => {
            tracing::info!(before, ?pruned, "pruned");
            Ok(pruned)
        }
        PruneOutcome::Unsafe { safe, blocker } => {
            Err(SequencerError::UnsafePruning { requested: before, safe, blocker })
        }
    }
}

/// The member's last visible event at or before `at` (or its pruned previous timestamp).
pub async fn previous_event(db: &Db, member: &Member, at: i64) -> Result<Option<i64>> {
    let id = member.id;
    Ok(db
        .run("reading the previous event", |c| async move { store::previous_event(c, id, at).await }.scope_boxed())
        .await?)
}
