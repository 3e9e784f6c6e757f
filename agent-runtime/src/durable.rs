//! Durable runs: a run with a store records itself as it goes.
//!
//! Invariants:
//! - A branch that completed a state waits in [`Durable::sync`] before any successor of
//!   that state starts (before it moves on, and before it spawns the branches of a
//!   fan-out), until a snapshot taken after the completion is committed to the store. So a
//!   process killed at any instant leaves a store from which `Agent::recover` re-runs only
//!   the states that were in flight.
//! - One writer task per run takes and commits snapshots; a sync asks for a snapshot newer
//!   than its completion, so branches finishing together share one commit (group commit).
//! - The run's row is written together with a snapshot, in one transaction (so a run is
//!   never listed without a snapshot to resume from): with the first, whenever the status
//!   changes (the last time with its final status, when the run ends or pauses), and every
//!   `ROW_EVERY` snapshots; other snapshots are written alone.
//! - A store that fails stops the run with `AgentError::Store`: a durable run never goes on
//!   unrecorded.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering::*};
use std::sync::Arc;
use std::time::Duration;

use agent_core::{AgentError, Context};
use tokio::sync::{watch, Notify};

use crate::checkpoint;
use crate::run::Run;
use crate::store::{now_ms, CheckpointStore, Retention, RunRecord, Snapshot, StoreError};

/// Snapshots kept per run: the newest is all a recovery needs; one more in case the newest
/// is being written while another process reads.
const KEEP: usize = 2;
/// The run's row is written again (for `updated_ms`) at least every this many snapshots.
const ROW_EVERY: u64 = 64;
/// Retention runs after this many snapshots.
const PRUNE_EVERY: u64 = 64;

/// A run's link to its store.
pub(crate) struct Durable {
    pub store: Arc<dyn CheckpointStore>,
    agent: String,
    created_ms: AtomicI64,
    /// Snapshots asked for (a generation number).
    requested: AtomicU64,
    /// Wakes the writer.
    wake: Notify,
    /// The newest generation committed; `u64::MAX` once the store failed.
    committed: watch::Sender<u64>,
    interval: Option<Duration>,
    /// The status the run's row was last written with (`u8::MAX`: not yet written).
    row_status: AtomicU8,
    /// Snapshots written.
    writes: AtomicU64,
}

impl Durable {
    pub(crate) fn new(store: Arc<dyn CheckpointStore>, agent: String, interval: Option<Duration>) -> Durable {
        Durable {
            store,
            agent,
            created_ms: AtomicI64::new(now_ms()),
            requested: AtomicU64::new(0),
            wake: Notify::new(),
            committed: watch::Sender::new(0),
            interval,
            row_status: AtomicU8::new(u8::MAX),
            writes: AtomicU64::new(0),
        }
    }

    fn record(&self, run: &Run) -> RunRecord {
        RunRecord {
            run_id: run.run_id().to_owned(),
            agent: self.agent.clone(),
            status: run.status(),
            created_ms: self.created_ms.load(Relaxed),
            updated_ms: now_ms(),
        }
    }

    /// Write the run's row and a first snapshot, before any state runs. A recovered run
    /// keeps its start time, and its snapshots follow those already stored.
    pub(crate) async fn start(&self, run: &Run) -> Result<(), StoreError> {
        let id = run.run_id();
        if let Some(known) = self.store.get_run(id).await? {
            self.created_ms.store(known.created_ms, Relaxed);
        }
        let base = self.store.latest_snapshot(id).await?.map_or(0, |s| s.seq) + 1;
        self.requested.store(base, Release);
        self.commit(run, base).await?;
        self.committed.send_replace(base);
        Ok(())
    }

    async fn commit(&self, run: &Run, generation: u64) -> Result<(), StoreError> {
        let checkpoint = checkpoint::capture(run, &self.agent);
        let data = checkpoint.to_json().map_err(|e| StoreError::Corrupt {
            store: self.store.kind(),
            message: format!("the run's checkpoint could not be written: {e}"),
        })?;
        let snapshot = Snapshot { seq: generation, taken_ms: now_ms(), data };
        // The row and the snapshot together (a run is never listed without one to resume
        // from) when the row changes: the first time, when the status changes, and now and
        // then for `updated_ms`. Otherwise the snapshot alone, which writes fewer pages.
        let status = checkpoint.agent_status as u8;
        let writes = self.writes.fetch_add(1, Relaxed);
        if self.row_status.swap(status, Relaxed) != status || writes.is_multiple_of(ROW_EVERY) {
            self.store.save_run_snapshot(&self.record(run), &snapshot).await
        } else {
            self.store.save_snapshot(run.run_id(), &snapshot).await
        }
    }

    /// Ask for a snapshot without waiting for it: the run's state changed in a way worth
    /// recording though nothing completed (a state began waiting for a person).
    pub(crate) fn nudge(&self) {
        self.requested.fetch_add(1, AcqRel);
        self.wake.notify_one();
    }

    /// Wait until a snapshot taken after this call is committed. `false` if the store failed
    /// (the run is then failing).
    pub(crate) async fn sync(&self) -> bool {
        let wanted = self.requested.fetch_add(1, AcqRel) + 1;
        self.wake.notify_one();
        let mut rx = self.committed.subscribe();
        let ok = rx.wait_for(|&c| c >= wanted).await.is_ok();
        ok && *rx.borrow() != u64::MAX
    }

    /// The writer: commit a snapshot whenever one is asked for (or the interval passes),
    /// until `stop` is notified; then the final one.
    pub(crate) async fn writer(&self, run: &Run, stop: &Notify) {
        let mut commits = 0u64;
        let mut tick = self.interval.map(|d| {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + d, d);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
            let stopping = tokio::select! {
                biased;
                _ = stop.notified() => true,
                _ = self.wake.notified() => false,
                _ = async { match tick.as_mut() { Some(t) => { t.tick().await; } None => std::future::pending().await } } => false,
            };
            let generation = self.requested.load(Acquire);
            if let Err(e) = self.commit(run, generation).await {
                self.fail(run, e);
                return;
            }
            self.committed.send_replace(generation);
            commits += 1;
            if commits.is_multiple_of(PRUNE_EVERY) {
                let policy = Retention { keep_snapshots: Some(KEEP), drop_finished_after: None };
                if let Err(e) = self.store.apply_retention(&policy, now_ms()).await {
                    tracing::warn!(error = %e, "retention failed; snapshots are kept");
                }
            }
            if stopping {
                // The run is over: a branch left behind past the deadline (a state that
                // blocked its thread) that asks for a sync now leaves at once, unrecorded,
                // instead of waiting for a writer that is gone.
                self.committed.send_replace(u64::MAX);
                return;
            }
        }
    }

    /// Stop the run: its store failed. Branches waiting in `sync` leave.
    pub(crate) fn fail(&self, run: &Run, e: StoreError) {
        tracing::error!(error = %e, "the store failed; the durable run stops");
        run.fail(store_error(e, run.ctx.clone()));
        self.committed.send_replace(u64::MAX);
    }
}

impl crate::run::Recorder for Durable {
    fn sync(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>> {
        Box::pin(Durable::sync(self))
    }

    fn nudge(&self) {
        Durable::nudge(self)
    }
}

/// The error of a run stopped by its store, or of a store asked for a run.
pub(crate) fn store_error(message: impl ToString, context: Context) -> AgentError {
    AgentError::Store { message: message.to_string(), context }
}
