//! Time travel: a new run from any recorded checkpoint of another run of this workflow,
//! edited as one likes ([`Agent::fork`]).
//!
//! Invariants:
//! - The parent is only read (its row, snapshots and journal): a fork never changes it.
//! - The checkpoint forked is checked against this agent's program (its definition and
//!   graph) before anything is written; a fork refused writes nothing.
//! - The fork is written as a run nobody runs (status `Running`, no owner: `interrupted`):
//!   its row is created by a claim, so it carries the graph's hash and a worker serving this
//!   graph takes it, or `Agent::recover` goes on with it here. Its first snapshot is the
//!   checkpoint forked, so no state completed before that commit runs again.
//! - Its lineage (parent, commit) is recorded before the claim is given back, so whoever
//!   takes the fork can see where it came from. A fork that fails half written is deleted
//!   (best effort) rather than left for a worker.
//! - A fork of a failed commit reopens the states that failed, as `Agent::retry` does: the
//!   fork goes on from them with fresh attempts.

use agent_core::{AgentError, AgentStatus, Checkpoint, CheckpointError, Context, StateStatus, TokenRecord};

use super::Agent;
use crate::checkpoint;
use crate::durable::{store_error, DEFAULT_LEASE_TTL};
use crate::lease::WorkerId;
use crate::store::{
    checkpoint_at, history, now_ms, CheckpointStore, Claim, ClaimRequest, Lineage, LineageKind, RunRecord, Snapshot,
};

/// Which commit of a run [`Agent::fork`] starts from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForkAt {
    /// Its newest commit.
    Latest,
    /// Commit `seq`, as `store::history` (or the command line's `history RUN`) lists it.
    Checkpoint(u64),
    /// The newest commit at which this state was about to run (ready or running): the fork
    /// runs it again, and what follows. A failed run can be retried from a chosen state so.
    Before(String),
}

/// Make `e` an error of the checkpoint forked.
fn refused(agent: &str, reason: String) -> AgentError {
    AgentError::from(CheckpointError::Mismatch { agent: agent.to_owned(), reason })
}

impl Agent {
    /// Fork run `run_id` at commit `at` into a new run of this workflow, with `edit` applied
    /// to its context first; the new run's id. The parent is untouched; the fork's lineage
    /// (`store::CheckpointStore::lineage`) names it and the commit. The fork goes on when a
    /// worker serving this graph takes it, or here with [`Agent::recover`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), agent_core::AgentError> {
    /// use agent_runtime::{store::MemoryStore, Agent, ForkAt};
    /// use agent_core::{Context, StateResult};
    /// let store = std::sync::Arc::new(MemoryStore::new());
    /// let mut agent = Agent::new("quote").with_store(store.clone());
    /// agent.add_state("price", |ctx: Context| async move {
    ///     ctx.set_state("price", 10);
    ///     StateResult::next("total")
    /// });
    /// agent.add_state("total", |ctx: Context| async move {
    ///     let price: u32 = ctx.get_state("price").unwrap();
    ///     ctx.set_state("total", price * 2);
    ///     StateResult::End
    /// });
    /// let first = agent.run().await?;
    /// // Again from just before `total`, with another price: `price` does not run again.
    /// let fork = agent.fork(first.run_id(), ForkAt::Before("total".into()), |ctx| ctx.set_state("price", 21)).await?;
    /// let second = agent.recover(&fork).await?;
    /// assert_eq!(second.context().get_state::<u32>("total"), Some(42));
    /// assert_eq!(first.context().get_state::<u32>("total"), Some(20), "the first run is untouched");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`CheckpointError::NoCommit`] for a commit the store does not keep (or no commit at
    /// which the state was about to run); [`CheckpointError::Mismatch`] or
    /// [`CheckpointError::GraphChanged`] for a run of another workflow or graph;
    /// [`AgentError::Store`] when the agent has no store or the store fails.
    pub async fn fork(&self, run_id: &str, at: ForkAt, edit: impl FnOnce(&Context)) -> Result<String, AgentError> {
        self.fork_with(run_id, at, |checkpoint| {
            let ctx = Context::from_json_str(checkpoint.context.get())
                .map_err(|e| AgentError::from(CheckpointError::Context(e.to_string())))?;
            edit(&ctx);
            checkpoint.set_context(&ctx);
            Ok(())
        })
        .await
    }

    /// [`Agent::fork`], with `edit` given the whole checkpoint (the command line edits its
    /// context as JSON, typed values checked).
    pub(crate) async fn fork_with(
        &self,
        run_id: &str,
        at: ForkAt,
        edit: impl FnOnce(&mut Checkpoint) -> Result<(), AgentError>,
    ) -> Result<String, AgentError> {
        let store = self.store()?;
        let program = self.program()?;
        let name = self.name().to_owned();
        let no_commit = |seq: u64, reason: String| {
            AgentError::from(CheckpointError::NoCommit { run_id: run_id.to_owned(), seq, reason })
        };
        let seq = match &at {
            ForkAt::Checkpoint(seq) => *seq,
            ForkAt::Latest => match history(&*store, run_id).await?.last() {
                Some(last) => last.seq,
                None => return Err(no_commit(0, "it has none (a queued run never started)".to_owned())),
            },
            ForkAt::Before(state) => {
                if program.index_of(state).is_none() {
                    return Err(refused(&name, format!("the workflow has no state {state:?}")));
                }
                let commits = history(&*store, run_id).await?;
                match commits.iter().rev().find(|c| c.running.iter().any(|s| s == state)) {
                    Some(c) => c.seq,
                    None => return Err(no_commit(0, format!("no commit kept has state {state:?} about to run"))),
                }
            }
        };
        let mut checkpoint = checkpoint_at(&*store, run_id, seq).await?;
        checkpoint::check(&name, &program, &checkpoint)?;
        edit(&mut checkpoint)?;
        if checkpoint.agent_status == AgentStatus::Failed {
            reopen_failed(&mut checkpoint);
        }
        let fork_id = uuid::Uuid::new_v4().to_string();
        checkpoint.run_id.clone_from(&fork_id);
        checkpoint::check(&name, &program, &checkpoint)?;
        let data = checkpoint.to_json()?;

        let now = now_ms();
        let row = RunRecord::new(&fork_id, &name, AgentStatus::Running, now, now);
        let request = ClaimRequest::new(&fork_id, WorkerId::current().as_str(), DEFAULT_LEASE_TTL)
            .create(row.clone())
            .graph_hash(program.graph_hash().to_string());
        let failed = |e: crate::store::StoreError| store_error(e, Context::new());
        let epoch = match store.claim_run(&request).await.map_err(failed)? {
            Claim::Taken(taken) => taken.epoch,
            other => return Err(store_error(format!("the fork's new id was taken: {other:?}"), Context::new())),
        };
        let written = async {
            let snapshot = Snapshot { seq: 1, taken_ms: now, data };
            store.save_run_snapshot(&row.clone().with_epoch(epoch), &snapshot).await?;
            store.record_lineage(&Lineage::new(&fork_id, run_id, LineageKind::Fork, now).at_seq(seq)).await?;
            store.release_run(&fork_id, epoch).await
        };
        if let Err(e) = written.await {
            if let Err(cleanup) = store.delete_run(&fork_id).await {
                tracing::warn!(fork_id, error = %cleanup, "a fork written halfway could not be deleted");
            }
            return Err(failed(e));
        }
        tracing::info!(run_id, fork_id, seq, "forked");
        Ok(fork_id)
    }
}

/// A failed checkpoint made to go on from the states that failed, with fresh attempts (as
/// `Agent::retry` does), paused.
pub(crate) fn reopen_failed(checkpoint: &mut Checkpoint) {
    let failed: Vec<String> =
        checkpoint.states.iter().filter(|s| s.status == StateStatus::Failed).map(|s| s.name.clone()).collect();
    for record in checkpoint.states.iter_mut().filter(|s| failed.contains(&s.name)) {
        record.status = StateStatus::Pending;
        record.attempts_made = 0;
    }
    if checkpoint.groups.is_empty() && !failed.is_empty() {
        checkpoint.tokens = failed.into_iter().map(|state| TokenRecord::new(state, None, 1)).collect();
    }
    checkpoint.agent_status = AgentStatus::Paused;
    checkpoint.last_error = None;
}
