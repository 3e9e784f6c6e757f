//! [`RunControl`]: what another process (the console, the command line) asks of a running
//! run through the store, since it cannot reach the run's process.
//!
//! Invariants:
//! - A request is a column of the run's row, set only while the run is unfinished; the
//!   run's owner reads it (within a second, see `durable`) and acts on it; any claim of the
//!   run clears it, so a request never outlives the owner it was meant for.
//! - Cancel wins: a pause asked after a cancel the owner has not read yet leaves the
//!   cancel (a cancel asked after a pause replaces it, and a paused run can still be
//!   cancelled), so no request to stop is lost to a gentler one.
//! - Stored as [`RunControl::as_str`]; a stored name that is not a request reads as none
//!   (it came from a newer build, which the owner cannot obey anyway).

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

/// Why a run cannot be cancelled or paused.
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
