//! Durability of the handle: checkpoints of the most recent run, the store durable runs record
//! themselves in, and continuing runs from either.
//!
//! Invariants:
//! - A checkpoint to restore is checked against the agent's program before it is kept, so
//!   a mismatch changes nothing; the next run takes it (once) under the lock on `live`.
//! - The store and the snapshot interval live beside the most recent run (in `live`) and apply
//!   from the next run; the store also keeps the requests for human input. The store is
//!   kept wrapped in a `RetryingStore` (its transient failures retried for `store_retry`),
//!   so runs, recoveries and human input all ride out a passing outage alike.
//! - Recovering reads and checks the run's newest snapshot (so a refusal, e.g. under a
//!   changed graph, writes nothing), then claims the run in the store (see `durable`) and
//!   reads its newest snapshot again, so no write of a previous owner can land after the
//!   read: a run with a live lease is refused at once (`AgentError::Owned`); a claim whose
//!   snapshot cannot be used is given back. It then continues as a run of this agent
//!   started from that snapshot, with the claim (a restore left for the next run stays for
//!   it).
//! - A checkpoint is restored or recovered only under the graph it was taken under (its
//!   recorded graph signature equals the program's, see `version`); otherwise the refusal
//!   ([`CheckpointError::GraphChanged`]) lists what differs, before any state runs and
//!   without writing to the store. Checkpoints older than signatures are restored as before.

use std::sync::Arc;
use std::time::Duration;

use agent_core::{AgentError, AgentStatus, Checkpoint, CheckpointError, Context, GraphHash, GraphSignature};

use super::{lock, Agent};
use crate::checkpoint;
use crate::durable::{self, store_error, DEFAULT_LEASE_TTL};
use crate::lease::WorkerId;
use crate::program::Program;
use crate::result::AgentResult;
use crate::store::{CheckpointStore, ClaimRequest, NextRun, RetryingStore, RunQuery, DEFAULT_STORE_RETRY};

/// Where a run goes on from.
enum From {
    /// Its newest usable snapshot.
    Checkpoint(Box<Checkpoint>),
    /// The context it was submitted with: it never started.
    Input(Context),
}

/// The `seq` of run `run_id`'s newest commit, a snapshot or a journal entry (0: none).
async fn newest_seq(store: &dyn CheckpointStore, run_id: &str) -> Result<u64, AgentError> {
    let newest = store.snapshots(run_id, 1).await.map_err(|e| store_error(e, Context::new()))?;
    let newest = newest.first().map_or(0, |s| s.seq);
    // A commit is a snapshot or a journal entry after it (see `durable`).
    let journal = store.journal(run_id, newest).await.map_err(|e| store_error(e, Context::new()))?;
    Ok(journal.last().map_or(newest, |e| e.seq.max(newest)))
}

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
            None => {
                let mut checkpoint = Checkpoint::new(self.shared.name.clone(), "");
                checkpoint.graph = self.program().ok().map(|p| p.graph_record().clone());
                checkpoint
            }
        }
    }

    /// The hash of this agent's graph signature ([`Agent::graph_signature`]): equal for two
    /// agents exactly when their graphs are, in any process, build or platform, so a
    /// worker can say which runs it can serve. Options that do not change what a run does
    /// next (resources, priority, rate limits, timeouts) do not change it.
    ///
    /// ```
    /// use agent_runtime::Agent;
    /// use agent_core::{Context, ResourceRequirements, StateResult};
    ///
    /// fn define(cpu: f64) -> Agent {
    ///     let mut agent = Agent::new("etl");
    ///     agent.add_state("extract", |_ctx: Context| async { StateResult::next("load") })
    ///         .targets(["load"])
    ///         .resources(ResourceRequirements::new().cpu(cpu));
    ///     agent.add_state("load", |_ctx: Context| async { StateResult::End });
    ///     agent
    /// }
    /// let hash = define(1.0).graph_hash()?;
    /// assert_eq!(hash.to_string().len(), 64);
    /// // More CPU changes nothing a run does next: the same graph.
    /// assert_eq!(define(4.0).graph_hash()?, hash);
    /// // Another state does.
    /// let mut grown = define(1.0);
    /// grown.add_state("audit", |_ctx: Context| async { StateResult::End });
    /// assert_ne!(grown.graph_hash()?, hash);
    /// # Ok::<(), agent_core::AgentError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The definition's validation errors, as [`Agent::run`] would return them.
    pub fn graph_hash(&self) -> Result<GraphHash, AgentError> {
        Ok(self.program()?.graph_hash())
    }

    /// This agent's graph signature: its start, and each state's edges and the options that
    /// change what a run does next (see [`GraphSignature`]). Every checkpoint records it; a
    /// checkpoint that records another is not restored ([`CheckpointError::GraphChanged`],
    /// listing [`GraphSignature::diff`]).
    ///
    /// ```
    /// use agent_runtime::Agent;
    /// use agent_core::{Context, StateResult};
    ///
    /// let mut agent = Agent::new("two");
    /// agent.add_state("a", |_ctx: Context| async { StateResult::next("b") }).targets(["b"]);
    /// agent.add_state("b", |_ctx: Context| async { StateResult::End });
    /// let signature = agent.graph_signature()?;
    /// assert_eq!(signature.start, "a");
    /// assert!(signature.states["a"].edges.contains("b"));
    /// assert!(signature.states["b"].computed_targets, "b declared no targets");
    /// # Ok::<(), agent_core::AgentError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The definition's validation errors, as [`Agent::run`] would return them.
    pub fn graph_signature(&self) -> Result<GraphSignature, AgentError> {
        Ok(self.program()?.signature().clone())
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
    /// version; [`CheckpointError::GraphChanged`] when it was taken under another graph
    /// (see [`Agent::graph_signature`]), listing what differs. Nothing is changed then.
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
    ///
    /// The store's transient failures (a connection lost or refused, a server restarting)
    /// are retried for a while: see [`Agent::store_retry`].
    pub fn with_store(self, store: impl CheckpointStore) -> Self {
        let bound = lock(&self.shared.live).persist.store_retry.unwrap_or(DEFAULT_STORE_RETRY);
        let given: Arc<dyn CheckpointStore> = Arc::new(store);
        let retrying = Arc::new(RetryingStore::new(given).bound(bound));
        let store: Arc<dyn CheckpointStore> = retrying.clone();
        self.shared.links.inputs.with_store(store.clone());
        {
            let persist = &mut lock(&self.shared.live).persist;
            persist.store = Some(store);
            persist.retrying = Some(retrying);
        }
        self
    }

    /// How long a call to the store is tried again while the store is out (30 s by
    /// default; zero: never). A transient failure ([`StoreError::is_transient`]: a
    /// connection refused, reset or closed, a PostgreSQL restart, SQLite's file locked) is
    /// retried with backoff (exponential from 50 ms, capped at 1 s, jittered) until the call
    /// succeeds or this long has passed since its first attempt; then the call fails. This
    /// covers a durable run's snapshots and row, its journal and its requests for input,
    /// its claim, the reads of [`Agent::recover`], and the renewals of its lease.
    ///
    /// While a write is retried the run's branches wait before their next states, and the
    /// lease keeps being renewed. Every retried write still carries the run's epoch, so a run
    /// taken over during the outage is refused and stops (that is what the lease makes
    /// safe). An outage longer than the lease ([`Agent::lease_ttl`]) stops the run with
    /// [`AgentError::Fenced`]; one longer than this bound stops it with
    /// [`AgentError::Store`]. Either way nothing recorded is lost: once the store is back,
    /// [`Agent::recover`] (or a worker) continues the run from its last snapshot, and the
    /// states recorded as completed do not run again. Applies to every call made from now
    /// on, whether the store was given before or after.
    ///
    /// ```
    /// use std::time::Duration;
    /// use agent_runtime::{store::MemoryStore, Agent};
    /// // Ride out outages of up to 10 s; a 30 s lease keeps the run ours meanwhile.
    /// let agent = Agent::new("etl")
    ///     .with_store(MemoryStore::new())
    ///     .lease_ttl(Duration::from_secs(30))
    ///     .store_retry(Duration::from_secs(10));
    /// # let _ = agent;
    /// ```
    ///
    /// [`StoreError::is_transient`]: crate::store::StoreError::is_transient
    pub fn store_retry(self, bound: Duration) -> Self {
        {
            let persist = &mut lock(&self.shared.live).persist;
            persist.store_retry = Some(bound);
            if let Some(retrying) = &persist.retrying {
                retrying.set_bound(bound);
            }
        }
        self
    }

    /// Besides the snapshot at every completion, snapshot a durable run every `every`
    /// (long-running states then resume from a recent context).
    pub fn checkpoint_interval(self, every: Duration) -> Self {
        lock(&self.shared.live).persist.checkpoint_interval = Some(every);
        self
    }

    /// How long a durable run's lease on its run lasts (15 s by default). The run renews it
    /// every third of that while it goes on; a run whose process died is taken by another
    /// (with [`Agent::recover`]) once its lease has run out, and a run that could not renew
    /// its lease in time stops ([`AgentError::Fenced`]). Shorter leases let others take
    /// over sooner and cost more renewals. At least 30 ms. Applies from the next run.
    ///
    /// ```
    /// use std::time::Duration;
    /// use agent_runtime::{store::MemoryStore, Agent};
    /// let agent = Agent::new("etl").with_store(MemoryStore::new()).lease_ttl(Duration::from_secs(5));
    /// # let _ = agent;
    /// ```
    pub fn lease_ttl(self, ttl: Duration) -> Self {
        lock(&self.shared.live).persist.lease_ttl = Some(ttl);
        self
    }

    /// The agent's store, if it has one (`with_store`).
    pub(super) fn store_if_any(&self) -> Option<Arc<dyn CheckpointStore>> {
        lock(&self.shared.live).persist.store.clone()
    }

    pub(super) fn store(&self) -> Result<Arc<dyn CheckpointStore>, AgentError> {
        self.store_if_any().ok_or_else(|| {
            store_error(format!("agent `{}` has no store (see `with_store`)", self.shared.name), Context::new())
        })
    }

    /// Continue run `run_id` from the newest snapshot in this agent's store: states that
    /// completed are not run again; those in flight when its process died run again.
    ///
    /// The run is claimed first: if another worker (another process, or another run in this
    /// one) holds a live lease on it, nothing runs and the error says who and until when.
    ///
    /// # Errors
    ///
    /// [`AgentError::Owned`] when another worker holds the run; [`AgentError::Store`]
    /// without a store, when the store fails, or when it holds no such run;
    /// [`AgentError::Checkpoint`] when its snapshot cannot be read or does not fit this
    /// agent, [`CheckpointError::GraphChanged`] among them when the run was recorded under
    /// another graph (a state removed or renamed since, ...): then no state runs and the
    /// store is left as it was; otherwise as [`Agent::run`].
    pub async fn recover(&self, run_id: &str) -> Result<AgentResult, AgentError> {
        let store = self.store()?;
        let program = self.program()?;
        // Where the run goes on from is read (and checked) before the claim, which writes.
        let seen = newest_seq(&*store, run_id).await?;
        let from = self.starting_point(&*store, run_id, &program, seen).await?;
        let ttl = lock(&self.shared.live).persist.lease_ttl.unwrap_or(DEFAULT_LEASE_TTL);
        let request = ClaimRequest::new(run_id, WorkerId::current().as_str(), ttl).finished(true).reclaim(true);
        let claimed = durable::claim(&store, request).await?;
        // Kept until the run is over: if this future is dropped, the lease is given back.
        let hold = claimed.hold.clone();
        // Now that the run is ours, nobody writes it; if a previous owner wrote since the read
        // above, read again.
        let from = match newest_seq(&*store, run_id).await {
            Ok(now) if now == seen => Ok(from),
            Ok(now) => self.starting_point(&*store, run_id, &program, now).await,
            Err(e) => Err(e),
        };
        let launch = from.and_then(|from| self.launch_from(run_id, from, claimed));
        let launch = match launch {
            Ok(launch) => launch,
            Err(e) => {
                if let Err(release) = hold.release().await {
                    tracing::warn!(run_id, error = %release, "could not give back the lease of a run not recovered");
                }
                return Err(e);
            }
        };
        let result = self.go(launch).await;
        drop(hold);
        result
    }

    /// Run a failed run again from the states that failed: each gets a fresh set of
    /// attempts (its retry policy's), states that completed do not run again, and the run
    /// goes on from there to its end, under its own id, in this task (as `recover`). The
    /// run's history keeps what happened: its failed attempts stay counted.
    ///
    /// # Errors
    ///
    /// [`AgentError::Checkpoint`] with [`CheckpointError::Mismatch`] when the run did not
    /// fail, or failed inside a fan-out (whose branches this cannot yet restart one by
    /// one); otherwise as [`Agent::recover`].
    ///
    /// ```
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::Arc;
    /// use agent_runtime::{store::MemoryStore, Agent, AgentStatus};
    /// use agent_core::{Context, StateResult};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let broken = Arc::new(AtomicBool::new(true));
    /// let mut agent = Agent::new("flaky").with_store(MemoryStore::new());
    /// agent.add_state("fetch", |_ctx: Context| async { StateResult::next("parse") });
    /// let still = broken.clone();
    /// agent.add_state("parse", move |ctx: Context| {
    ///     let broken = still.load(Ordering::SeqCst);
    ///     async move {
    ///         if broken {
    ///             return Err(std::io::Error::other("the parser is broken"));
    ///         }
    ///         ctx.set_state("parsed", true);
    ///         Ok(StateResult::End)
    ///     }
    /// });
    /// let failed = agent.run().await.unwrap_err();
    /// let run_id = agent.run_id().unwrap();
    /// broken.store(false, Ordering::SeqCst); // the fix is deployed
    /// let result = agent.retry(&run_id).await?;
    /// assert_eq!(result.status(), AgentStatus::Completed);
    /// assert_eq!(result.context().get_state::<bool>("parsed"), Some(true));
    /// # let _ = failed;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn retry(&self, run_id: &str) -> Result<AgentResult, AgentError> {
        let store = self.store()?;
        let program = self.program()?;
        let seen = newest_seq(&*store, run_id).await?;
        let mismatch =
            |reason: String| AgentError::from(CheckpointError::Mismatch { agent: self.shared.name.clone(), reason });
        let mut checkpoint = match self.starting_point(&*store, run_id, &program, seen).await? {
            From::Checkpoint(c) => *c,
            From::Input(_) => return Err(mismatch(format!("run {run_id} never started: nothing failed"))),
        };
        if checkpoint.agent_status != AgentStatus::Failed {
            return Err(mismatch(format!("run {run_id} did not fail: it is {}", checkpoint.agent_status)));
        }
        if !checkpoint.groups.is_empty() || checkpoint.tokens.iter().any(|t| t.group.is_some()) {
            return Err(mismatch(format!(
                "run {run_id} failed inside a fan-out; retrying its branches one by one is not supported yet"
            )));
        }
        let failed: Vec<String> = checkpoint
            .states
            .iter()
            .filter(|s| s.status == agent_core::StateStatus::Failed)
            .map(|s| s.name.clone())
            .collect();
        if failed.is_empty() {
            return Err(mismatch(format!("run {run_id} failed, but none of its states did (its deadline?)")));
        }
        super::fork::reopen_failed(&mut checkpoint);
        checkpoint::check(&self.shared.name, &program, &checkpoint)?;
        let ttl = lock(&self.shared.live).persist.lease_ttl.unwrap_or(DEFAULT_LEASE_TTL);
        let request = ClaimRequest::new(run_id, WorkerId::current().as_str(), ttl).finished(true).reclaim(true);
        let claimed = durable::claim(&store, request).await?;
        let hold = claimed.hold.clone();
        let launch = match self.launch_from(run_id, From::Checkpoint(Box::new(checkpoint)), claimed) {
            Ok(launch) => launch,
            Err(e) => {
                if let Err(release) = hold.release().await {
                    tracing::warn!(run_id, error = %release, "could not give back the lease of a run not retried");
                }
                return Err(e);
            }
        };
        let result = self.go(launch).await;
        drop(hold);
        result
    }

    /// Where run `run_id` goes on from: its newest usable snapshot when it has one (`newest`
    /// is the `seq` of its newest), else the context it was submitted with (a queued run
    /// that never started).
    async fn starting_point(
        &self,
        store: &dyn CheckpointStore,
        run_id: &str,
        program: &Program,
        newest: u64,
    ) -> Result<From, AgentError> {
        let (name, events) = (&self.shared.name, &self.shared.links.events);
        if newest > 0 {
            return Ok(From::Checkpoint(Box::new(
                checkpoint::load::newest_usable(store, run_id, name, program, events).await?,
            )));
        }
        match store.run_input(run_id).await.map_err(|e| store_error(e, Context::new()))? {
            Some(json) => self.submitted_context(run_id, &json),
            // No snapshot, no input: read as before to say why (no such run).
            None => Ok(From::Checkpoint(Box::new(
                checkpoint::load::newest_usable(store, run_id, name, program, events).await?,
            ))),
        }
    }

    /// The context run `run_id` was submitted with, from its JSON.
    fn submitted_context(&self, run_id: &str, json: &str) -> Result<From, AgentError> {
        let ctx = Context::from_json_str(json).map_err(|e| {
            AgentError::from(CheckpointError::Mismatch {
                agent: self.shared.name.clone(),
                reason: format!("the context run {run_id} was submitted with cannot be read: {e}"),
            })
        })?;
        Ok(From::Input(ctx))
    }

    /// The launch of run `run_id` going on `from` there, under `claimed`.
    fn launch_from(
        &self,
        run_id: &str,
        from: From,
        claimed: durable::Claimed,
    ) -> Result<super::launch::Launch, AgentError> {
        match from {
            From::Checkpoint(c) => self.launch(super::RunOptions::new(), Some(*c), None, Some(claimed)),
            From::Input(ctx) => {
                let mut options = super::RunOptions::new().context(ctx);
                options.run_id = Some(run_id.to_owned());
                self.launch(options, None, None, Some(claimed))
            }
        }
    }

    /// Start run `next`, which a worker claimed in the store, in a task of its own (see
    /// `worker`): from its newest snapshot, or from the context it was submitted with.
    /// `Err` when it cannot go on here (its records do not fit this agent, the store
    /// failed); the claim is then given back.
    pub(crate) async fn take_over(&self, next: &NextRun) -> Result<super::RunHandle, AgentError> {
        let store = self.store()?;
        let program = self.program()?;
        let run_id = next.row.run_id.as_str();
        let claimed = durable::adopt(&store, next.row.clone())?;
        let hold = claimed.hold.clone();
        let started = async {
            let from = match &next.input {
                // Still queued (its first commit makes it `Running`): no snapshot to read.
                Some(json) if next.row.status == AgentStatus::Idle => self.submitted_context(run_id, json)?,
                _ => {
                    let newest = newest_seq(&*store, run_id).await?;
                    self.starting_point(&*store, run_id, &program, newest).await?
                }
            };
            self.spawn_launch(self.launch_from(run_id, from, claimed)?)
        }
        .await;
        if started.is_err() {
            if let Err(release) = hold.release().await {
                tracing::warn!(run_id, error = %release, "could not give back the lease of a run not taken over");
            }
        }
        started
    }

    /// Recover every unfinished (running or paused) run of this agent in its store, one
    /// after another; the result of each, with its id. A run that another worker holds (a
    /// live lease) is skipped: its result is [`AgentError::Owned`], and a warning is logged.
    ///
    /// # Errors
    ///
    /// [`AgentError::Store`] without a store or when listing the runs fails.
    pub async fn recover_all(&self) -> Result<Vec<(String, Result<AgentResult, AgentError>)>, AgentError> {
        let store = self.store()?;
        let mut runs = Vec::new();
        for status in [AgentStatus::Running, AgentStatus::Paused] {
            let query = RunQuery { agent: Some(self.shared.name.clone()), status: Some(status), ..RunQuery::default() };
            let found = store.list_runs(&query).await;
            let found = found.map_err(|e| store_error(e, Context::new()))?;
            runs.extend(found.into_iter().map(|r| r.run_id));
        }
        let mut results = Vec::with_capacity(runs.len());
        for run_id in runs {
            let result = self.recover(&run_id).await;
            if let Err(AgentError::Owned { owner, .. }) = &result {
                tracing::warn!(%run_id, %owner, "skipping a run another worker holds");
            }
            results.push((run_id, result));
        }
        Ok(results)
    }
}
