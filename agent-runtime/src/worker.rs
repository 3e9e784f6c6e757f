//! A worker: a process's loop that runs the durable runs of the workflows it serves, taking
//! them from a store shared with any number of other workers ([`Worker`]).
//!
//! Invariants:
//! - A worker claims only runs of the graphs it serves (agent name and graph hash), and only
//!   through the store's `claim_next` (one conditional write per run that sets the owner
//!   and the lease and raises the epoch; on PostgreSQL `FOR UPDATE SKIP LOCKED`), so two
//!   workers never both take a run, and a run whose owner's lease is live is never taken.
//!   From then on the run is an ordinary durable run of this process (see `durable`): it
//!   renews its lease, every write is fenced by its epoch, and it stops at once if it
//!   loses the run.
//! - Flow control (runs with flow keys, see `store::queue`) is the store's: the worker only
//!   asks for as many runs as it has room for, and the store decides which, round robin
//!   between keys and within each key's limit, counted across every worker. A run held back
//!   by its key's limit, or by its start time, is found at a later claim (a poll, at the
//!   latest): nothing wakes a worker when another worker's run of the key ends.
//! - At most `concurrency` runs go on at once; the worker claims again as soon as one ends,
//!   when a run is submitted in this process, when the store wakes it (PostgreSQL
//!   `LISTEN`/`NOTIFY`: a run submitted or handed back elsewhere), and otherwise every
//!   `poll_interval`. No wake-up is needed for correctness: a run is found by polling too,
//!   and a wake-up stream that ends is asked for again at the next poll.
//! - A store that fails to answer a claim is retried at the next poll; the runs going on
//!   are not affected by that (their own writes stop them if the store stays away).
//! - A run the worker cannot go on with (its records do not fit the graph it was recorded
//!   under, or cannot be read) is given back and recorded `Failed`, so it is not claimed
//!   again and again; it stays in the store, with its snapshots, for a person to look at.
//! - Draining (the shutdown future resolved, SIGTERM or Ctrl-C for [`Worker::run`]): no
//!   further claim; every run going on pauses (nothing new starts, running states finish),
//!   commits its final snapshot with its row `Running` and unowned, and gives its lease
//!   back, so another worker goes on with it at once; then `run_until` returns.
//! - Beside its claims, a worker runs a [`Scheduler`](crate::schedule::Scheduler) for the
//!   agents it serves, a pass every `SCHEDULE_EVERY`: their schedules' due ticks are
//!   submitted as runs (once per tick whatever the number of workers: see `schedule`),
//!   which the fleet's claims then take. It stops when the worker starts draining.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use agent_core::{AgentError, AgentStatus};
use tokio::task::JoinSet;

use crate::agent::SUBMITTED;
use crate::run::Run;
use crate::store::{CheckpointStore, ClaimNext, NextRun, Served};
use crate::{Agent, WorkerId};

/// Runs at once, unless [`Worker::concurrency`] says otherwise.
const DEFAULT_CONCURRENCY: usize = 8;
/// How often an idle worker looks for runs, unless [`Worker::poll_interval`] says otherwise.
const DEFAULT_POLL: Duration = Duration::from_millis(500);
/// How often a worker's scheduler looks for due ticks.
const SCHEDULE_EVERY: Duration = Duration::from_secs(1);

/// A process's share of a fleet: it runs the durable runs of the workflows it serves, taken
/// from a store that any number of workers on any number of machines share. Runs come from
/// [`Agent::submit`] (from any process) and from workers that died (their leases ran out) or
/// drained (they gave their runs back).
///
/// ```
/// use std::time::Duration;
/// use agent_runtime::{store::SqliteStore, Agent, SubmitOptions, Worker};
/// use agent_core::{Context, StateResult};
///
/// fn documents() -> Agent {
///     let mut agent = Agent::new("documents");
///     agent.add_state("extract", |_ctx: Context| async { StateResult::next("index") }).targets(["index"]);
///     agent.add_state("index", |ctx: Context| async move {
///         ctx.set_state("indexed", true);
///         StateResult::End
///     });
///     agent
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("agent-worker-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// # let path = dir.join("runs.db");
/// let store = SqliteStore::open(&path)?;
/// let worker = Worker::new(store.clone())
///     .serve(documents)
///     .concurrency(4)
///     .lease_ttl(Duration::from_secs(15));
/// // `worker.run().await` serves until SIGTERM or Ctrl-C; here, until told to stop.
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let serving = tokio::spawn(worker.run_until(async { let _ = stopped.await; }));
///
/// let client = documents().with_store(store);
/// let id = client.submit(SubmitOptions::new()).await?;
/// assert!(client.wait(&id).await?.read_context()?.get_state::<bool>("indexed").unwrap());
/// let _ = stop.send(());
/// let report = serving.await??;
/// assert_eq!(report.completed, 1);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
pub struct Worker {
    store: Arc<dyn CheckpointStore>,
    agents: Vec<Agent>,
    concurrency: usize,
    lease_ttl: Option<Duration>,
    poll: Duration,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("store", &self.store.kind())
            .field("serves", &self.agents.iter().map(Agent::name).collect::<Vec<_>>())
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

/// What a worker did, when [`Worker::run_until`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerReport {
    /// Runs claimed.
    pub claimed: u64,
    /// Runs that completed here.
    pub completed: u64,
    /// Runs that ended otherwise here (failed, cancelled, timed out, or could not go on).
    pub failed: u64,
    /// Runs that stopped because another owner took them over (this worker had lost them).
    pub lost: u64,
    /// Runs given back unfinished when the worker drained, for another worker.
    pub handed_over: u64,
}

impl Worker {
    /// A worker on `store`, serving nothing yet (see [`Worker::serve`]): 8 runs at once,
    /// leases of 15 s, polling every 500 ms.
    pub fn new(store: impl CheckpointStore) -> Worker {
        Worker {
            store: Arc::new(store),
            agents: Vec::new(),
            concurrency: DEFAULT_CONCURRENCY,
            lease_ttl: None,
            poll: DEFAULT_POLL,
        }
    }

    /// Also run the runs of the workflow `define` builds (called once: one definition
    /// serves every run), recorded under its graph's hash. Serve two versions of a workflow
    /// by serving both: each run goes to the definition of the graph it was recorded under;
    /// a run of a graph no worker serves stays queued.
    pub fn serve(mut self, define: impl FnOnce() -> Agent) -> Worker {
        self.agents.push(define());
        self
    }

    /// Run at most `n` runs at once (at least 1).
    pub fn concurrency(mut self, n: usize) -> Worker {
        self.concurrency = n.max(1);
        self
    }

    /// The lease on each run taken (see [`Agent::lease_ttl`]): a worker that dies holds its
    /// runs this long, at most, before others take them over.
    pub fn lease_ttl(mut self, ttl: Duration) -> Worker {
        self.lease_ttl = Some(ttl);
        self
    }

    /// How often to look for runs when idle (and room is left). Runs submitted in this
    /// process are taken at once; elsewhere, at the next poll.
    pub fn poll_interval(mut self, every: Duration) -> Worker {
        self.poll = every.max(Duration::from_millis(1));
        self
    }

    /// Serve until SIGTERM or Ctrl-C, then drain (see [`Worker::run_until`]).
    ///
    /// # Errors
    ///
    /// As [`Worker::run_until`].
    pub async fn run(self) -> Result<WorkerReport, AgentError> {
        self.run_until(shutdown_signal()).await
    }

    /// Serve until `shutdown` resolves, then drain: claim nothing more, let the runs going
    /// on finish their running states, commit, and give their leases back (each is then
    /// `Running` with no owner, and another worker goes on with it at once); then return
    /// what was done. Must be awaited on a tokio runtime.
    ///
    /// # Errors
    ///
    /// A definition served that is not valid (as [`Agent::run`] would say); nothing is
    /// claimed then. Failures of single runs are logged and counted, never returned.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<WorkerReport, AgentError> {
        let ttl = self.lease_ttl.unwrap_or(crate::durable::DEFAULT_LEASE_TTL);
        let owner = WorkerId::current();
        let mut served: HashMap<Served, Agent> = HashMap::new();
        let mut ask = ClaimNext::new(owner.as_str(), ttl, 0);
        for agent in &self.agents {
            let graph = Served { agent: agent.name().to_owned(), graph_hash: agent.graph_hash()?.to_string() };
            let agent = agent.clone().with_store(self.store.clone()).lease_ttl(ttl);
            if served.insert(graph.clone(), agent).is_none() {
                ask = ask.serving(graph);
            }
        }
        let mut serving = Serving { report: WorkerReport::default(), tasks: JoinSet::new(), going: HashMap::new() };
        let stop_scheduling = tokio_util::sync::CancellationToken::new();
        let scheduler = crate::schedule::Scheduler::with_agents(self.store.clone(), served.values().cloned().collect());
        let scheduling = tokio::spawn(scheduler.run_until(SCHEDULE_EVERY, stop_scheduling.clone().cancelled_owned()));
        tracing::info!(worker = %owner, serves = served.len(), concurrency = self.concurrency, "worker started");
        let mut shutdown = std::pin::pin!(shutdown);
        let mut wake = self.wake_ups().await;
        loop {
            // Registered before the claim: a submission made while the claim is under way
            // wakes the wait below instead of waiting for the next poll.
            let submitted = SUBMITTED.notified();
            let mut submitted = std::pin::pin!(submitted);
            submitted.as_mut().enable();
            let room = self.concurrency.saturating_sub(serving.tasks.len());
            if room > 0 {
                ask.limit = room;
                match self.store.claim_next(&ask).await {
                    Ok(runs) => {
                        for next in runs {
                            serving.start(&served, next, &*self.store).await;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "could not claim runs; trying again at the next poll"),
                }
            }
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(done) = serving.tasks.join_next(), if !serving.tasks.is_empty() => serving.ended(done),
                () = &mut submitted => {}
                woken = next_wake(&mut wake) => {
                    if woken.is_none() {
                        // Its connection ended: poll until the next asks for another.
                        wake = None;
                    }
                }
                () = tokio::time::sleep(self.poll) => {
                    if wake.is_none() {
                        wake = self.wake_ups().await;
                    }
                }
            }
        }
        tracing::info!(worker = %owner, runs = serving.tasks.len(), "worker draining");
        stop_scheduling.cancel();
        let _ = scheduling.await;
        for run in serving.going.values() {
            hand_over(run);
        }
        while let Some(done) = serving.tasks.join_next().await {
            serving.ended(done);
        }
        tracing::info!(worker = %owner, report = ?serving.report, "worker stopped");
        Ok(serving.report)
    }
}

impl Worker {
    /// The store's wake-ups, if it has them (see `CheckpointStore::wake_ups`).
    async fn wake_ups(&self) -> Option<tokio::sync::mpsc::Receiver<()>> {
        match self.store.wake_ups().await {
            Ok(wake) => wake,
            Err(e) => {
                tracing::debug!(error = %e, "no wake-ups from the store; polling");
                None
            }
        }
    }
}

/// The next wake-up (`None`: the stream ended); pending for ever without a stream.
async fn next_wake(wake: &mut Option<tokio::sync::mpsc::Receiver<()>>) -> Option<()> {
    match wake {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The runs a worker has going.
struct Serving {
    report: WorkerReport,
    /// Each run's task, giving back its id and its outcome.
    tasks: JoinSet<(String, Result<AgentStatus, AgentError>)>,
    /// The runs going on, by id: what draining pauses.
    going: HashMap<String, Arc<Run>>,
}

impl Serving {
    /// Start run `next`, claimed for this worker, with the agent serving its graph.
    async fn start(&mut self, served: &HashMap<Served, Agent>, next: NextRun, store: &dyn CheckpointStore) {
        self.report.claimed += 1;
        let run_id = next.row.run_id.clone();
        let graph = Served { agent: next.row.agent.clone(), graph_hash: next.graph_hash.clone() };
        let Some(agent) = served.get(&graph) else {
            // Not asked for: the store answered beyond the claim. Give it back untouched.
            tracing::warn!(%run_id, "claimed a run of a graph this worker does not serve; giving it back");
            let _ = store.release_run(&run_id, next.row.epoch).await;
            return;
        };
        match agent.take_over(&next).await {
            Ok(handle) => {
                tracing::info!(%run_id, agent = %agent.name(), epoch = next.row.epoch, "took a run");
                self.going.insert(run_id.clone(), handle.run_now());
                self.tasks.spawn(async move {
                    let outcome = handle.await.map(|r| r.status());
                    (run_id, outcome)
                });
            }
            Err(e) => {
                self.report.failed += 1;
                tracing::error!(%run_id, error = %e, "cannot go on with a run; recording it failed");
                if matches!(e, AgentError::Checkpoint(_)) {
                    // Given back already: fenced by the claim's epoch, so a run someone
                    // else took meanwhile is left alone.
                    let row = next.row.with_status(AgentStatus::Failed, crate::store::now_ms());
                    if let Err(e) = store.upsert_run(&row).await {
                        tracing::warn!(%run_id, error = %e, "could not record the run failed");
                    }
                }
            }
        }
    }

    /// A run's task ended: count how.
    fn ended(&mut self, done: Result<(String, Result<AgentStatus, AgentError>), tokio::task::JoinError>) {
        let Ok((run_id, outcome)) = done else {
            self.report.failed += 1;
            return;
        };
        self.going.remove(&run_id);
        match outcome {
            Ok(AgentStatus::Completed) => self.report.completed += 1,
            // Only draining pauses a run a worker runs.
            Ok(AgentStatus::Paused) => self.report.handed_over += 1,
            Ok(status) => {
                tracing::info!(%run_id, status = status.as_str(), "run ended");
                self.report.failed += 1;
            }
            Err(AgentError::Fenced { reason, .. }) => {
                tracing::warn!(%run_id, %reason, "run lost to another owner");
                self.report.lost += 1;
            }
            Err(AgentError::Owned { owner, .. }) => {
                tracing::warn!(%run_id, %owner, "run held by another owner");
                self.report.lost += 1;
            }
            Err(e) => {
                tracing::warn!(%run_id, error = %e, "run failed");
                self.report.failed += 1;
            }
        }
    }
}

/// Pause `run` to be handed over: nothing new starts, running states finish, its final
/// snapshot records it running and unowned, and its lease is given back.
fn hand_over(run: &Run) {
    if let Some(durable) = &run.sinks.durable {
        durable.hand_over();
    }
    run.pause();
}

/// SIGTERM or Ctrl-C (SIGINT), whichever comes first. (Under loom, whose build of tokio has
/// no signals and which only models the frontier lock, never.)
pub(crate) async fn shutdown_signal() {
    #[cfg(loom)]
    std::future::pending::<()>().await;
    #[cfg(all(unix, not(loom)))]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(all(not(unix), not(loom)))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
