//! Durability of the handle: checkpoints of the most recent run, the store durable runs record
//! themselves in, and continuing runs from either.
//!
//! Invariants:
//! - A checkpoint to restore is checked against the agent's program before it is kept, so
//!   a mismatch changes nothing; the next run takes it (once) under the lock on `live`.
//! - The store and the snapshot interval live beside the most recent run (in `live`) and apply
//!   from the next run; the store also keeps the requests for human input.
//! - Recovering continues from the newest snapshot in the store, as a run of this agent
//!   started from that snapshot (a restore left for the next run stays for it).

use std::sync::Arc;
use std::time::Duration;

use agent_core::{AgentError, AgentStatus, Checkpoint, CheckpointError, Context};

use super::{lock, Agent};
use crate::checkpoint;
use crate::durable::store_error;
use crate::result::AgentResult;
use crate::store::{CheckpointStore, RunQuery};

impl Agent {
    /// A checkpoint of the most recent run, at this instant (also mid-run): completed
    /// states, the tokens ready, running (they run again on restore) and waiting at joins,
    /// counters, and the whole context. Before the first run, an empty one.
    ///
    /// ```
    /// use agent_runtime::Agent;
    /// use agent_core::{Checkpoint, Context, StateResult};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut agent = Agent::new("hello");
    /// agent.add_state("greet", |ctx: Context| async move {
    ///     ctx.set_state("greeting", "hello");
    ///     StateResult::End
    /// });
    /// agent.run().await?;
    /// let json = agent.create_checkpoint().to_json()?;
    /// let checkpoint = Checkpoint::from_json(&json)?;
    /// assert_eq!(checkpoint.completed_states, ["greet"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn create_checkpoint(&self) -> Checkpoint {
        match self.current() {
            Some(run) => checkpoint::capture(&run, &self.shared.name),
            None => Checkpoint::new(self.shared.name.clone(), ""),
        }
    }

    /// Make the next run started (`run()`, `start()`, from any clone) continue from
    /// `checkpoint`: its context, its completed states (which do not run again), its tokens
    /// (ready or running ones run), its joins' progress and its run id. Works on a fresh
    /// agent of the same workflow, in another process. Only that one run takes it: runs
    /// started after it begin afresh.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::Mismatch`] when the checkpoint does not fit this agent (another
    /// agent's name, a state it does not have, counts beyond its retry budget or
    /// `max_steps`), or the agent's definition is invalid; [`CheckpointError::Invalid`] when
    /// it holds what no run writes (a count of 0, a group index that does not exist, a
    /// completed run with tokens left, ...); [`CheckpointError::TooNew`] for a newer
    /// version. Nothing is changed then.
    pub fn restore_from_checkpoint(&self, checkpoint: Checkpoint) -> Result<(), CheckpointError> {
        let program = self.program().map_err(|e| CheckpointError::Mismatch {
            agent: self.shared.name.clone(),
            reason: format!("the agent cannot run: {e}"),
        })?;
        checkpoint::check(&self.shared.name, &program, &checkpoint)?;
        lock(&self.shared.live).persist.restore = Some(checkpoint);
        Ok(())
    }

    /// Record every run of this agent in `store`: each state's completion is committed
    /// before its successors start, so a run whose process dies goes on in another with
    /// [`Agent::recover`]. Requests for human input are kept there too, so another process
    /// can answer them.
    ///
    /// ```
    /// use agent_runtime::{store::SqliteStore, Agent, AgentStatus};
    /// use agent_core::{Context, StateResult};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut agent = Agent::new("durable").with_store(SqliteStore::open_in_memory()?);
    /// agent.add_state("work", |ctx: Context| async move {
    ///     ctx.set_state("done", true);
    ///     StateResult::End
    /// });
    /// let result = agent.run().await?;
    /// // Recovering a finished run continues nothing: it is over.
    /// let again = agent.recover(result.run_id()).await?;
    /// assert_eq!(again.status(), AgentStatus::Completed);
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_store(self, store: impl CheckpointStore) -> Self {
        let store: Arc<dyn CheckpointStore> = Arc::new(store);
        self.shared.links.inputs.with_store(store.clone());
        lock(&self.shared.live).persist.store = Some(store);
        self
    }

    /// Besides the snapshot at every completion, snapshot a durable run every `every`
    /// (long-running states then resume from a recent context).
    pub fn checkpoint_interval(self, every: Duration) -> Self {
        lock(&self.shared.live).persist.checkpoint_interval = Some(every);
        self
    }

    fn store(&self) -> Result<Arc<dyn CheckpointStore>, AgentError> {
        let store = lock(&self.shared.live).persist.store.clone();
        store.ok_or_else(|| {
            store_error(format!("agent `{}` has no store (see `with_store`)", self.shared.name), Context::new())
        })
    }

    /// Continue run `run_id` from the newest snapshot in this agent's store: states that
    /// completed are not run again; those in flight when its process died run again.
    ///
    /// # Errors
    ///
    /// [`AgentError::Store`] without a store, when the store fails, or when it holds no
    /// such run; [`AgentError::Checkpoint`] when its snapshot cannot be read or does not fit
    /// this agent; otherwise as [`Agent::run`].
    pub async fn recover(&self, run_id: &str) -> Result<AgentResult, AgentError> {
        let store = self.store()?;
        let (name, events) = (&self.shared.name, &self.shared.links.events);
        let checkpoint = checkpoint::load::newest_usable(&*store, run_id, name, &*self.program()?, events).await?;
        let launch = self.launch(super::RunOptions::new(), Some(checkpoint), None)?;
        self.go(launch).await
    }

    /// Recover every unfinished (running or paused) run of this agent in its store, one
    /// after another; the result of each, with its id.
    ///
    /// # Errors
    ///
    /// [`AgentError::Store`] without a store or when listing the runs fails.
    pub async fn recover_all(&self) -> Result<Vec<(String, Result<AgentResult, AgentError>)>, AgentError> {
        let store = self.store()?;
        let mut runs = Vec::new();
        for status in [AgentStatus::Running, AgentStatus::Paused] {
            let query = RunQuery { agent: Some(self.shared.name.clone()), status: Some(status), limit: None };
            let found = store.list_runs(&query).await;
            let found = found.map_err(|e| store_error(e, Context::new()))?;
            runs.extend(found.into_iter().map(|r| r.run_id));
        }
        let mut results = Vec::with_capacity(runs.len());
        for run_id in runs {
            let result = self.recover(&run_id).await;
            results.push((run_id, result));
        }
        Ok(results)
    }
}
