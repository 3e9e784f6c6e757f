//! [`RunControl`]: what another process (the console, the command line) asks of a running
//! run through the store, since it cannot reach the run's process; and the cancels of one
//! state of a run ([`cancel_state`]), asked the same way.
//!
//! Invariants of [`RunControl`]:
//! - A request is a column of the run's row, set only while the run is unfinished; the
//!   run's owner reads it (within a second, see `durable`) and acts on it; any claim of the
//!   run clears it, so a request never outlives the owner it was meant for.
//! - Cancel wins: a pause asked after a cancel the owner has not read yet leaves the
//!   cancel (a cancel asked after a pause replaces it, and a paused run can still be
//!   cancelled), so no request to stop is lost to a gentler one.
//! - Stored as [`RunControl::as_str`]; a stored name that is not a request reads as none
//!   (it came from a newer build, which the owner cannot obey anyway).
//!
//! Invariants of state cancels ([`CheckpointStore::request_state_cancel`],
//! [`CheckpointStore::take_state_cancels`]):
//! - A request is a record of its own (run, state, when asked; SQL: `agent_state_cancels`),
//!   not a column of the run's row, so requests for different states never replace one
//!   another. One per state: asking again for a state whose request is pending changes
//!   nothing (the first keeps its place).
//! - Recorded only while the run exists and is unfinished; a request for a run nobody runs
//!   (queued, paused, interrupted, abandoned) waits for its next owner.
//! - The owner takes them at every poll (see `durable`, within a second): the pending
//!   requests, oldest first, are returned and deleted in one step fenced by the owner's
//!   epoch, so each is taken once, and never by an owner the run was taken from. It then
//!   cancels the running and waiting instances of each named state (`Run::cancel_state`,
//!   as `RunHandle::cancel_state` does), and the run goes on. A name the run's workflow does
//!   not have is dropped; a state with no instance running when its request is taken has
//!   nothing cancelled (later runs of the state are not affected).
//! - Claims leave requests where they are (unlike [`RunControl`]): a request is not lost
//!   with an owner that died before taking it; the run's next owner takes it at its first
//!   poll. A request taken is its owner's: an owner that loses the run before its cancel is
//!   committed loses the cancel with it (ask again).
//! - Deleting a run (`delete_run`, retention) deletes its requests. Requests pending when
//!   the run finishes stay, untaken, until then.

/// What is asked of a running run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RunControl {
    /// Stop it: its states cancelled, the run `Cancelled`.
    Cancel,
    /// Pause it: nothing new starts, running states finish, the run `Paused` (resumable).
    Pause,
}

impl RunControl {
    /// The name the stores keep.
    ///
    /// ```
    /// use agent_runtime::store::RunControl;
    /// assert_eq!(RunControl::parse(RunControl::Pause.as_str()), Some(RunControl::Pause));
    /// assert_eq!(RunControl::parse("explode"), None);
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            RunControl::Cancel => "cancel",
            RunControl::Pause => "pause",
        }
    }

    /// The request named `name`, if it is one.
    pub fn parse(name: &str) -> Option<RunControl> {
        match name {
            "cancel" => Some(RunControl::Cancel),
            "pause" => Some(RunControl::Pause),
            _ => None,
        }
    }
}

use std::time::Duration;

use agent_core::AgentStatus;

use super::{now_ms, CheckpointStore, Claim, ClaimRequest, StoreError};
use crate::WorkerId;

/// What [`cancel_run`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cancelling {
    /// The run's owner (in whatever process) was asked; it stops the run within a second.
    Asked,
    /// Nobody ran it: it is recorded `Cancelled` now.
    Cancelled,
}

/// Why a run (or one of its states) cannot be cancelled, or a run paused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The store has no such run.
    #[error("no run `{0}` in the store")]
    NoRun(String),
    /// The run is over already, or (to pause) nobody runs it.
    #[error("run `{run_id}` is {standing}")]
    NotRunning {
        /// The run.
        run_id: String,
        /// How it stands (`RunRecord::standing`).
        standing: &'static str,
    },
    /// The run's workflow has no such state (as its newest checkpoint says).
    #[error("run `{run_id}` has no state `{state}`")]
    NoState {
        /// The run.
        run_id: String,
        /// The state asked for.
        state: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Cancel run `run_id`, wherever it runs: its owner, in any process, is asked through the
/// store ([`Cancelling::Asked`]); a run nobody runs (queued, paused, interrupted,
/// abandoned) is recorded `Cancelled` at once, under a claim of this process's own so no
/// worker takes it meanwhile ([`Cancelling::Cancelled`]).
///
/// ```
/// use agent_runtime::store::{cancel_run, Cancelling, CheckpointStore, MemoryStore, RunRecord};
/// use agent_runtime::AgentStatus;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = MemoryStore::new();
/// store.upsert_run(&RunRecord::new("r", "a", AgentStatus::Paused, 1, 1)).await?;
/// assert_eq!(cancel_run(&store, "r").await?, Cancelling::Cancelled);
/// assert_eq!(store.get_run("r").await?.unwrap().status, AgentStatus::Cancelled);
/// assert!(cancel_run(&store, "r").await.is_err(), "over already");
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`ControlError::NoRun`], [`ControlError::NotRunning`] for a finished run, or the store's.
pub async fn cancel_run(store: &dyn CheckpointStore, run_id: &str) -> Result<Cancelling, ControlError> {
    let row = store.get_run(run_id).await?.ok_or_else(|| ControlError::NoRun(run_id.to_owned()))?;
    let finished = |standing| ControlError::NotRunning { run_id: run_id.to_owned(), standing };
    if row.status.is_finished() {
        return Err(finished(row.standing(now_ms())));
    }
    if !row.is_leased_at(now_ms()) {
        let claim = ClaimRequest::new(run_id, WorkerId::current().as_str(), Duration::from_secs(15));
        match store.claim_run(&claim).await? {
            Claim::Taken(taken) => {
                let cancelled = taken.clone().with_status(AgentStatus::Cancelled, now_ms());
                let written = store.upsert_run(&cancelled).await;
                let released = store.release_run(run_id, taken.epoch).await;
                written.and(released)?;
                return Ok(Cancelling::Cancelled);
            }
            // Taken meanwhile: ask its owner.
            Claim::Held(_) => {}
            Claim::Finished(row) => return Err(finished(row.standing(now_ms()))),
            Claim::Missing => return Err(ControlError::NoRun(run_id.to_owned())),
        }
    }
    if store.request_control(run_id, RunControl::Cancel).await? {
        Ok(Cancelling::Asked)
    } else {
        Err(finished("over already"))
    }
}

/// Ask the owner of run `run_id`, in whatever process, to pause it: nothing new starts,
/// running states finish, and it is recorded `Paused` (resumable).
///
/// # Errors
///
/// [`ControlError::NoRun`], [`ControlError::NotRunning`] for a run nobody runs (a finished,
/// queued or paused one), or the store's.
pub async fn pause_run(store: &dyn CheckpointStore, run_id: &str) -> Result<(), ControlError> {
    let row = store.get_run(run_id).await?.ok_or_else(|| ControlError::NoRun(run_id.to_owned()))?;
    let now = now_ms();
    if row.status.is_finished() || !row.is_leased_at(now) {
        return Err(ControlError::NotRunning { run_id: run_id.to_owned(), standing: row.standing(now) });
    }
    if store.request_control(run_id, RunControl::Pause).await? {
        Ok(())
    } else {
        Err(ControlError::NotRunning { run_id: run_id.to_owned(), standing: "over already" })
    }
}

/// Cancel state `state` of run `run_id`, wherever the run runs: its owner, in any process,
/// is asked through the store and cancels the state's running and waiting instances within
/// a second (see the module docs); the rest of the run goes on. A run nobody runs now has
/// the request taken by its next owner.
///
/// The state is checked against the run's newest checkpoint
/// ([`read_checkpoint`](super::read_checkpoint)) when there is one that reads; a run without
/// one (queued, not started) is asked as it is, and its owner drops a name its workflow
/// does not have.
///
/// ```
/// use agent_runtime::store::{cancel_state, CheckpointStore, ControlError, MemoryStore, RunRecord};
/// use agent_runtime::AgentStatus;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = MemoryStore::new();
/// store.upsert_run(&RunRecord::new("r", "a", AgentStatus::Running, 1, 1)).await?;
/// cancel_state(&store, "r", "fetch").await?;
/// assert!(matches!(cancel_state(&store, "none", "fetch").await, Err(ControlError::NoRun(_))));
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`ControlError::NoRun`], [`ControlError::NotRunning`] for a finished run,
/// [`ControlError::NoState`] for a state its checkpoint does not have, or the store's.
pub async fn cancel_state(store: &dyn CheckpointStore, run_id: &str, state: &str) -> Result<(), ControlError> {
    let row = store.get_run(run_id).await?.ok_or_else(|| ControlError::NoRun(run_id.to_owned()))?;
    let finished = |standing| ControlError::NotRunning { run_id: run_id.to_owned(), standing };
    if row.status.is_finished() {
        return Err(finished(row.standing(now_ms())));
    }
    // A checkpoint that cannot be read is no reason to refuse: the owner checks the name.
    if let Ok(Some(checkpoint)) = super::read_checkpoint(store, run_id).await {
        if !checkpoint.states.iter().any(|s| s.name == state) {
            return Err(ControlError::NoState { run_id: run_id.to_owned(), state: state.to_owned() });
        }
    }
    if store.request_state_cancel(run_id, state).await? {
        Ok(())
    } else {
        Err(finished("over already"))
    }
}
