//! Reading the checkpoint a run recovers from out of its store.
//!
//! Invariants:
//! - The newest snapshot that reads and passes `validate` is used. A snapshot that is
//!   damaged (not JSON, cut short, not a checkpoint, or [`CheckpointError::Invalid`]) is
//!   skipped for the one before it, with a warning: a `tracing::warn!` and an
//!   [`EventKind::CheckpointSkipped`] event. Stores keep at least two snapshots of a run
//!   (see `durable`), so a snapshot cut short by a crash or a bad disk leaves the one before.
//! - A snapshot that is sound but cannot be used here is not skipped: one written by a newer
//!   build ([`CheckpointError::TooNew`]), of another agent or definition
//!   ([`CheckpointError::Mismatch`]) or under another graph
//!   ([`CheckpointError::GraphChanged`]) stops the recovery with that error, since an older
//!   snapshot would silently run an older state of the run (or the same change again).
//! - Nothing here writes to the store: a recovery refused leaves the run as it was.
//! - When every snapshot read is damaged, the error is [`CheckpointError::NoUsableSnapshot`],
//!   carrying the newest one's reason.
//! - At most [`READ`] snapshots are read, newest first.
//! - A snapshot covers the journal up to its `seq`; the journal entries after it (the
//!   deltas of the commits since, see `delta`) are applied to it, in order, before it is
//!   validated: the checkpoint is the run as of its last commit. An entry that cannot be
//!   applied stops the recovery with [`CheckpointError::Journal`] (an older snapshot would
//!   have to replay the same entry), never a panic.

use std::sync::Arc;

use agent_core::{AgentError, Checkpoint, CheckpointError, Context};

use crate::durable::store_error;
use crate::events::{EventHub, EventKind};
use crate::program::Program;
use crate::store::CheckpointStore;

/// How many of a run's newest snapshots recovery tries.
pub(crate) const READ: usize = 8;

/// The checkpoint run `run_id` of agent `agent` goes on from: its newest usable snapshot in
/// `store`. Skipped snapshots are reported on `events`.
pub(crate) async fn newest_usable(
    store: &dyn CheckpointStore,
    run_id: &str,
    agent: &str,
    prog: &Program,
    events: &EventHub,
) -> Result<Checkpoint, AgentError> {
    let snapshots = store.snapshots(run_id, READ).await.map_err(|e| store_error(e, Context::new()))?;
    if snapshots.is_empty() {
        return Err(store_error(format!("the store holds no run {run_id}"), Context::new()));
    }
    let tried = snapshots.len();
    let mut newest_error = None;
    // The journal after the oldest snapshot read, read once: each snapshot replays its tail.
    let oldest = snapshots.iter().map(|s| s.seq).min().unwrap_or(0);
    let journal = store.journal(run_id, oldest).await.map_err(|e| store_error(e, Context::new()))?;
    for snapshot in snapshots {
        let after = journal.partition_point(|e| e.seq <= snapshot.seq);
        // The snapshot is checked alone first: damage that the journal happens to
        // overwrite is still damage.
        let read = Checkpoint::from_json(&snapshot.data)
            .and_then(|c| super::check(agent, prog, &c).map(|()| c))
            .and_then(|c| super::delta::replay(c, &journal[after..]))
            .and_then(|c| super::check(agent, prog, &c).map(|()| c));
        let error = match read {
            Ok(checkpoint) => return Ok(checkpoint),
            Err(e @ (CheckpointError::Json(_) | CheckpointError::Foreign(_) | CheckpointError::Invalid { .. })) => e,
            Err(e) => return Err(e.into()),
        };
        let reason = error.to_string();
        tracing::warn!(run_id, seq = snapshot.seq, %reason, "skipping a damaged snapshot; trying the one before");
        if events.active() {
            events.send(Arc::from(run_id), EventKind::CheckpointSkipped { seq: snapshot.seq, reason });
        }
        newest_error.get_or_insert(error);
    }
    let newest = newest_error.unwrap_or_else(|| CheckpointError::Foreign("no snapshot".into()));
    Err(CheckpointError::NoUsableSnapshot { run_id: run_id.to_owned(), tried, newest: Box::new(newest) }.into())
}

/// The checkpoint of run `run_id` as of its last commit, not checked against a program:
/// its newest snapshot that reads, with the journal after it applied; `None` without a
/// snapshot. Damaged snapshots are skipped as by [`newest_usable`], silently.
pub(crate) async fn newest_readable(
    store: &dyn CheckpointStore,
    run_id: &str,
) -> Result<Option<Checkpoint>, AgentError> {
    let snapshots = store.snapshots(run_id, READ).await.map_err(|e| store_error(e, Context::new()))?;
    let Some(oldest) = snapshots.iter().map(|s| s.seq).min() else { return Ok(None) };
    let journal = store.journal(run_id, oldest).await.map_err(|e| store_error(e, Context::new()))?;
    let tried = snapshots.len();
    let mut newest_error = None;
    for snapshot in snapshots {
        let after = journal.partition_point(|e| e.seq <= snapshot.seq);
        match Checkpoint::from_json(&snapshot.data).and_then(|c| super::delta::replay(c, &journal[after..])) {
            Ok(checkpoint) => return Ok(Some(checkpoint)),
            Err(e @ (CheckpointError::Json(_) | CheckpointError::Foreign(_) | CheckpointError::Invalid { .. })) => {
                newest_error.get_or_insert(e);
            }
            Err(e) => return Err(e.into()),
        }
    }
    let newest = newest_error.unwrap_or_else(|| CheckpointError::Foreign("no snapshot".into()));
    Err(CheckpointError::NoUsableSnapshot { run_id: run_id.to_owned(), tried, newest: Box::new(newest) }.into())
}
