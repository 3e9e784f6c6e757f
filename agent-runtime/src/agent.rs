//! `Agent`: the handle users build, run, watch and control.
//!
//! Invariants:
//! - `Agent` is a cheap `Clone + Send + Sync` handle (an `Arc`); every clone sees the same
//!   definition and the same current run, so another task can watch or cancel a run.
//! - Editing the definition (adding or configuring states) invalidates the compiled program;
//!   the next `run()` compiles and validates again. A run in progress keeps the program it
//!   started with.
//! - At most one run of an agent is in progress at a time (`AlreadyRunning` otherwise).
//! - Dropping the future of `run()` cancels the run: no branch outlives it.
//! - Two locks: `def` (the definition) and `live` (the compiled program, the current run,
//!   what the next run starts from). `live` may be taken while `def` is held, never the
//!   other way round; a run takes `live` once to start.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use agent_core::{
    AgentError, Context, DependencyConfig, IntoState, Priority, RateLimit, ResourceRequirements, RetryPolicy,
    StateHandler, StateSpec, WorkflowGraph,
};

use tracing::Instrument;

use crate::branch;
use crate::checkpoint;
use crate::durable::{store_error, Durable};
use crate::events::{EventKind, EventStream};
use crate::pool::ResourcePool;
use crate::program::{Definition, Program, StateDef, StateOptions};
use crate::result::{AgentResult, RunMetrics};
use crate::run::Run;
use crate::store::{CheckpointStore, RunQuery};
use agent_core::{AgentStatus, Checkpoint, CheckpointError, Diagram, StateStatus};

struct Shared {
    name: String,
    graph: Option<&'static WorkflowGraph>,
    def: Mutex<Definition>,
    /// The compiled program, the current run and what the next run starts from: one lock,
    /// which a run takes once to start (three were six locked instructions a run).
    live: Mutex<Live>,
    /// What its runs share with it: the `Once` completions, the requests for human input of
    /// every run and who answers them, and the events of every run for subscribers.
    links: Arc<crate::run::Links>,
    /// `record_timings`: 0 unset (on only for durable runs), 1 on, 2 off.
    timings: AtomicU8,
}

/// What changes as an agent runs (see `Shared::live`).
#[derive(Default)]
struct Live {
    /// The program compiled from the definition; `None` once the definition changed.
    compiled: Option<Arc<Program>>,
    /// The run in progress, or the last one.
    run: Option<Arc<Run>>,
    persist: Persist,
}

/// What the next run continues from, and where durable runs record themselves.
#[derive(Default)]
struct Persist {
    /// The checkpoint the next run continues from (`restore_from_checkpoint`).
    restore: Option<Checkpoint>,
    /// Where durable runs record themselves (`with_store`).
    store: Option<Arc<dyn CheckpointStore>>,
    /// Periodic snapshots of durable runs, besides those at every completion.
    checkpoint_interval: Option<Duration>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A workflow: its states, and the run in progress (or the last one).
///
/// Built by `#[workflow]` (`my_workflow::agent()`) or by hand:
///
/// ```
/// use agent_runtime::{Agent, AgentStatus};
/// use agent_core::{Context, StateResult};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), agent_core::AgentError> {
/// let mut agent = Agent::new("counter");
/// agent.add_state("count", |ctx: Context| async move {
///     let n: u32 = ctx.get_state_or("n", 0) + 1;
///     ctx.set_state("n", n);
///     if n < 3 { StateResult::next("count") } else { StateResult::End }
/// });
/// let result = agent.run().await?;
/// assert_eq!(result.status(), AgentStatus::Completed);
/// assert_eq!(result.context().get_state::<u32>("n"), Some(3));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Agent {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").field("name", &self.shared.name).field("status", &self.status()).finish()
    }
}

impl Agent {
    /// An agent with no states.
    pub fn new(name: impl Into<String>) -> Agent {
        Agent::with_parts(name.into(), None, Definition::default())
    }

    fn with_parts(name: String, graph: Option<&'static WorkflowGraph>, def: Definition) -> Agent {
        Agent {
            shared: Arc::new(Shared {
                name,
                graph,
                def: Mutex::new(def),
                live: Mutex::default(),
                links: Arc::new(crate::run::Links::new()),
                timings: AtomicU8::new(0),
            }),
        }
    }

    /// The agent `#[workflow]` generates: the graph's states, in source order.
    #[doc(hidden)]
    pub fn __from_workflow(
        graph: &'static WorkflowGraph,
        states: Vec<(Arc<dyn StateHandler>, Option<&'static StateSpec>)>,
    ) -> Agent {
        let states = graph
            .states
            .iter()
            .zip(states)
            .map(|(spec, (handler, _))| StateDef {
                name: Cow::Borrowed(spec.name),
                handler,
                options: spec.into(),
                spec: Some(spec),
            })
            .collect();
        let def = Definition {
            states,
            start: Some(Cow::Borrowed(graph.start)),
            max_concurrent: graph.max_concurrent,
            graph: Some(graph),
            pristine: true,
            ..Definition::default()
        };
        Agent::with_parts(graph.name.to_owned(), Some(graph), def)
    }

    /// The agent's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The compile-time graph, for agents made by `#[workflow]`.
    pub fn graph(&self) -> Option<&'static WorkflowGraph> {
        self.shared.graph
    }

    fn edit<R>(&self, f: impl FnOnce(&mut Definition) -> R) -> R {
        let mut def = lock(&self.shared.def);
        let r = f(&mut def);
        def.pristine = false;
        drop(def);
        lock(&self.shared.live).compiled = None;
        r
    }

    /// Add a state: a closure or `async fn` taking a [`Context`], or a `#[state]` function
    /// (which keeps the options its attribute gave it). Returns a handle to set options.
    ///
    /// The first state added is the start unless [`Agent::set_start`] says otherwise. Names
    /// are checked when `run()` starts.
    pub fn add_state(&mut self, name: impl Into<Cow<'static, str>>, state: impl IntoState) -> StateConfig<'_> {
        let (handler, spec) = state.into_state();
        let name = name.into();
        let options = spec.map(StateOptions::from).unwrap_or_default();
        let index = self.edit(|def| {
            def.states.push(StateDef { name, handler, options, spec });
            def.states.len() - 1
        });
        StateConfig { agent: self, index }
    }

    /// Start runs at `state` instead of the first state added.
    pub fn set_start(&mut self, state: impl Into<Cow<'static, str>>) -> &mut Self {
        let state = state.into();
        self.edit(|def| def.start = Some(state));
        self
    }

    /// Stop a run with [`AgentError::MaxSteps`] once it has run `n` states (counting every
    /// run of a state in a loop and every branch). Unlimited by default.
    pub fn max_steps(self, n: u64) -> Self {
        self.edit(|def| def.max_steps = Some(n));
        self
    }

    /// Run at most `n` states at once.
    pub fn max_concurrent(self, n: usize) -> Self {
        self.edit(|def| def.max_concurrent = Some(n.max(1)));
        self
    }

    /// Record how long each state's attempts run ([`StateMetrics::timing`]: count, mean,
    /// p50, p99, max) and when each state first started and last ended (kept in
    /// checkpoints). Off by default, because reading clocks costs each transition about as
    /// much as the runtime's own work; on by default for durable runs ([`Agent::with_store`]),
    /// whose commits cost far more. Applies from the next run.
    ///
    /// ```
    /// use std::time::Duration;
    /// use agent_runtime::Agent;
    /// use agent_core::{Context, StateResult};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), agent_core::AgentError> {
    /// let mut agent = Agent::new("timed").record_timings(true);
    /// agent.add_state("work", |_ctx: Context| async {
    ///     tokio::time::sleep(Duration::from_millis(10)).await;
    ///     StateResult::End
    /// });
    /// let metrics = agent.run().await?.metrics();
    /// let timing = metrics.states[0].timing.clone().expect("recorded");
    /// assert_eq!((timing.count, timing.max), (1, Duration::from_millis(10)));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// [`StateMetrics::timing`]: crate::StateMetrics::timing
    pub fn record_timings(self, on: bool) -> Self {
        self.shared.timings.store(if on { 1 } else { 2 }, Relaxed);
        self
    }

    /// A stream of this agent's [`Event`](crate::Event)s, one per change of a run or a
    /// state, from now on: the current run's and every later run's.
    ///
    /// Any number of streams may read at once, each at its own pace; a run never waits for
    /// them. A stream that falls more than [`CAPACITY`](crate::events::CAPACITY) events
    /// behind loses the oldest and receives an [`EventKind::Lagged`](crate::EventKind::Lagged)
    /// item saying how many, then goes on. It ends (`None`) once the agent, its clones and
    /// its runs' results are dropped. With no stream alive, runs build no events: each
    /// would-be event costs one relaxed atomic load.
    ///
    /// ```
    /// use agent_runtime::{Agent, EventKind};
    /// use agent_core::{Context, StateResult};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), agent_core::AgentError> {
    /// let mut agent = Agent::new("watched");
    /// agent.add_state("a", |_ctx: Context| async { StateResult::next("b") });
    /// agent.add_state("b", |_ctx: Context| async { StateResult::End });
    /// let mut events = agent.events();
    /// agent.run().await?;
    /// let mut seen = Vec::new();
    /// while let Some(event) = events.next().await {
    ///     let done = matches!(event.kind, EventKind::RunFinished { .. });
    ///     seen.push(event.kind);
    ///     if done { break }
    /// }
    /// assert!(matches!(&seen[0], EventKind::RunStarted));
    /// assert!(matches!(&seen[1], EventKind::StateStarted { state, attempt: 1 } if state == "a"));
    /// assert_eq!(seen.len(), 6); // started, a started/completed, b started/completed, finished
    /// # Ok(())
    /// # }
    /// ```
    pub fn events(&self) -> EventStream {
        self.shared.links.events.subscribe()
    }

    /// The retry policy of every state that sets none (`#[state(retry(...))]` or
    /// `.retry_policy(...)` override it). No retries by default.
    ///
    /// ```
    /// use std::time::Duration;
    /// use agent_runtime::Agent;
    /// use agent_core::RetryPolicy;
    /// let agent = Agent::new("etl").retry_policy(RetryPolicy::new().max_retries(2).jitter(false));
    /// # let _ = agent;
    /// ```
    pub fn retry_policy(self, policy: RetryPolicy) -> Self {
        self.edit(|def| def.retry = Some(policy));
        self
    }

    /// Limit every state tagged `tag` (`.tag(...)`) together to `limit`: at most
    /// `per_second` starts a second, `burst` at once, shared by all runs of this agent.
    ///
    /// ```
    /// use agent_runtime::Agent;
    /// use agent_core::RateLimit;
    /// let agent = Agent::new("llm").tag_rate_limit("openai", RateLimit::new(10.0).burst(20));
    /// # let _ = agent;
    /// ```
    pub fn tag_rate_limit(self, tag: impl Into<Cow<'static, str>>, limit: RateLimit) -> Self {
        let tag = tag.into();
        self.edit(|def| {
            def.tag_rate_limits.retain(|(t, _)| *t != tag);
            def.tag_rate_limits.push((tag, limit));
        });
        self
    }

    /// Take resources from `pool` (shareable with other agents) instead of the process-wide
    /// [`ResourcePool::global`] of this machine's cores and memory.
    ///
    /// ```
    /// use agent_runtime::{Agent, ResourcePool};
    /// let pool = ResourcePool::builder().total_cpu(2.0).total_gpu(1.0).build();
    /// let agent = Agent::new("trainer").with_resource_pool(pool);
    /// # let _ = agent;
    /// ```
    pub fn with_resource_pool(self, pool: ResourcePool) -> Self {
        self.edit(|def| def.pool = Some(pool));
        self
    }

    /// The pool this agent's states take resources from.
    pub fn resource_pool(&self) -> ResourcePool {
        lock(&self.shared.def).pool.clone().unwrap_or_else(ResourcePool::global)
    }

    fn program(&self) -> Result<Arc<Program>, AgentError> {
        let live = lock(&self.shared.live);
        self.program_in(live).map(|(program, _)| program)
    }

    /// The compiled program, compiling it first if the definition changed; returns the lock
    /// on `live`, held again (a run goes on under it).
    fn program_in<'a>(
        &'a self,
        live: MutexGuard<'a, Live>,
    ) -> Result<(Arc<Program>, MutexGuard<'a, Live>), AgentError> {
        if let Some(p) = &live.compiled {
            return Ok((p.clone(), live));
        }
        // Lock order: `def`, then `live` (`edit` takes them one after the other). `def` stays
        // locked until the program is stored, so no edit slips in between and leaves a
        // program of the old definition in place.
        drop(live);
        let def = lock(&self.shared.def);
        let program = match def.graph.filter(|_| def.pristine) {
            Some(graph) => crate::program::shared(graph, || Program::compile(&self.shared.name, &def))?,
            None => Arc::new(Program::compile(&self.shared.name, &def)?),
        };
        let mut live = lock(&self.shared.live);
        drop(def);
        live.compiled = Some(program.clone());
        Ok((program, live))
    }

    /// Run the workflow from its start to its end.
    ///
    /// Validates the definition first (no states, duplicate names, unknown start,
    /// dependencies or `on_error` targets, dependency cycles, invalid options): nothing runs
    /// if it is invalid. Works on any tokio runtime; fan-out branches are spawned on it, so
    /// on a multi-thread runtime they run in parallel.
    ///
    /// # Errors
    ///
    /// The validation errors above; [`AgentError::StateFailed`] when a state returns `Err`
    /// or panics; [`AgentError::UnknownState`] when a computed target names no state;
    /// [`AgentError::MaxSteps`]. Errors that end a started run carry its context.
    pub async fn run(&self) -> Result<AgentResult, AgentError> {
        self.run_in(Context::new()).await
    }

    /// Run the workflow on a context prepared by the caller (inputs set before the start).
    pub async fn run_in(&self, ctx: Context) -> Result<AgentResult, AgentError> {
        self.run_with(RunOptions::new().context(ctx)).await
    }

    /// Run with options: a deadline for the whole run, and a context prepared beforehand.
    ///
    /// At the deadline no further state starts; states still running get `cleanup_timeout`
    /// (zero by default) to finish, then their futures are dropped. The run ends
    /// [`AgentStatus::TimedOut`] and returns [`AgentError::TimedOut`] with its context.
    ///
    /// ```
    /// use std::time::Duration;
    /// use agent_runtime::{Agent, AgentStatus, RunOptions};
    /// use agent_core::{AgentError, Context, StateResult};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let mut agent = Agent::new("slow");
    /// agent.add_state("wait", |_ctx: Context| async {
    ///     tokio::time::sleep(Duration::from_secs(60)).await;
    ///     StateResult::End
    /// });
    /// let err = agent.run_with(RunOptions::new().timeout(Duration::from_secs(5))).await.unwrap_err();
    /// assert!(matches!(err, AgentError::TimedOut { .. }));
    /// assert_eq!(agent.status(), AgentStatus::TimedOut);
    /// # }
    /// ```
    pub async fn run_with(&self, options: RunOptions) -> Result<AgentResult, AgentError> {
        let (run, restored) = {
            let (program, mut live) = self.program_in(lock(&self.shared.live))?;
            if live.run.as_ref().is_some_and(|r| !r.status().is_finished() && r.status() != AgentStatus::Paused) {
                return Err(AgentError::AlreadyRunning { agent: self.shared.name.clone() });
            }
            let (restore, durable) = {
                let persist = &mut live.persist;
                let durable = persist
                    .store
                    .clone()
                    .map(|store| Arc::new(Durable::new(store, self.shared.name.clone(), persist.checkpoint_interval)));
                (persist.restore.take(), durable)
            };
            let ctx = match &restore {
                Some(c) => c.read_context().map_err(|e| CheckpointError::Mismatch {
                    agent: self.shared.name.clone(),
                    reason: format!("its context cannot be read: {e}"),
                })?,
                None => options.context.unwrap_or_default(),
            };
            let timed = match self.shared.timings.load(Relaxed) {
                0 => durable.is_some(),
                on => on == 1,
            };
            let mut run = Run::with_links(program, ctx, self.shared.links.clone());
            if timed {
                run.timing = Some(crate::timing::timings(run.states.len()));
            }
            run.durable = durable;
            let run = Arc::new(run);
            let restored = restore.map(|c| {
                checkpoint::check(&self.shared.name, &run.program, &c)?;
                run.set_run_id(c.run_id.clone());
                self.shared.links.inputs.restore(checkpoint::inputs_of(&c));
                Ok::<_, CheckpointError>(checkpoint::seed(&run, &c))
            });
            let restored = restored.transpose()?;
            live.run = Some(run.clone());
            (run, restored)
        };
        agent_core::__private::context::set_input_broker(
            &run.ctx,
            Arc::downgrade(&run) as std::sync::Weak<dyn agent_core::__private::InputBroker>,
        );
        let span = tracing::info_span!("agent_run", agent = %self.shared.name, run_id = %run.run_id());
        async {
            if run.emitting() {
                run.emit(EventKind::RunStarted);
            }
            if restored.is_none() {
                // The root token stands at the start from now on (a first snapshot has it).
                run.root_slot.store(run.program.start as u32, std::sync::atomic::Ordering::Relaxed);
            }
            if let Some(d) = &run.durable {
                // The run's row and a first snapshot exist before any state runs.
                if let Err(e) = d.start(&run).await {
                    d.fail(&run, e);
                    let error = run.finish();
                    if run.emitting() {
                        run.emit(EventKind::RunFinished { status: run.status() });
                    }
                    return Err(error.unwrap_or_else(|| store_error("the store failed", run.ctx.clone())));
                }
            }
            let stop_writer = tokio::sync::Notify::new();
            let main = async {
                let cancel_on_drop = CancelOnDrop(&run);
                let start = run.program.start;
                let rooted = restored.is_none();
                if let Some(branches) = restored {
                    // A restored run goes on from every token of its checkpoint.
                    for (group, state) in branches {
                        branch::spawn(&run, state, group);
                    }
                }
                let all = async {
                    if rooted {
                        // The root branch is polled first, so a run that never waits
                        // registers nothing with the cancellation token.
                        tokio::select! {
                            biased;
                            _ = branch::drive(&run, start, None, true) => {}
                            _ = run.stopped() => {}
                        }
                    }
                    run.tasks_finished().await;
                };
                match options.timeout {
                    None => all.await,
                    Some(after) => {
                        let mut all = std::pin::pin!(all);
                        if tokio::time::timeout(after, &mut all).await.is_err() {
                            run.time_out();
                            let cleanup = options.cleanup_timeout.unwrap_or(Duration::ZERO);
                            if tokio::time::timeout(cleanup, &mut all).await.is_err() {
                                run.cancel();
                                all.await;
                            }
                        }
                    }
                }
                std::mem::forget(cancel_on_drop);
                let error = run.finish();
                if run.emitting() {
                    run.emit(EventKind::RunFinished { status: run.status() });
                }
                // The writer commits the final snapshot, with the final status, and stops.
                stop_writer.notify_one();
                error
            };
            let error = match run.durable.clone() {
                Some(d) => tokio::join!(main, d.writer(&run, &stop_writer)).0,
                None => main.await,
            };
            let mut error = match error {
                None if run.status() != AgentStatus::TimedOut => return Ok(AgentResult::new(&run)),
                None => AgentError::TimedOut {
                    agent: self.shared.name.clone(),
                    after: options.timeout.unwrap_or_default(),
                    context: run.ctx.clone(),
                    checkpoint: None,
                },
                Some(error) => error,
            };
            if matches!(error, AgentError::StateFailed { .. } | AgentError::TimedOut { .. }) {
                // Every branch has stopped: the checkpoint is where the run goes on.
                error.set_checkpoint(checkpoint::capture(&run, &self.shared.name));
            }
            Err(error)
        }
        .instrument(span)
        .await
    }

    /// Stop the running instances of `state`: their futures are dropped (a state waiting for
    /// resources or for a retry leaves the queue), each ends [`StateStatus::Cancelled`] and
    /// its branch ends there; the rest of the run goes on. Later runs of the state are not
    /// affected. `false` if no run is going or it has no such state.
    pub fn cancel_state(&self, state: &str) -> bool {
        let Some(run) = self.current() else { return false };
        match run.program.index_of(state) {
            Some(i) if !run.status().is_finished() => {
                run.cancel_state(i);
                true
            }
            _ => false,
        }
    }

    fn current(&self) -> Option<Arc<Run>> {
        lock(&self.shared.live).run.clone()
    }

    /// The status of the current or last run; `Idle` before the first.
    pub fn status(&self) -> AgentStatus {
        self.current().map_or(AgentStatus::Idle, |r| r.status())
    }

    /// The status of `state` in the current or last run; `None` if there is no such state.
    pub fn state_status(&self, state: &str) -> Option<StateStatus> {
        match self.current() {
            Some(run) => run
                .program
                .index_of(state)
                .map(|i| StateStatus::from_u8(run.states[i].status.load(std::sync::atomic::Ordering::Relaxed))),
            None => lock(&self.shared.def).states.iter().any(|s| s.name == state).then_some(StateStatus::Pending),
        }
    }

    /// The id of the current or last run.
    pub fn run_id(&self) -> Option<String> {
        self.current().map(|r| r.run_id().to_owned())
    }

    /// The agent's picture: its states, the edges known without running (literal targets
    /// of `#[state]` functions, `on_error` routes, dependencies), coloured by the statuses
    /// of the current or last run. Draw it with [`Diagram::to_mermaid`] or
    /// [`Diagram::to_dot`]; colour it by a checkpoint instead with
    /// [`Diagram::with_checkpoint`].
    ///
    /// ```
    /// use agent_runtime::Agent;
    /// use agent_core::{Context, StateResult};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), agent_core::AgentError> {
    /// let mut agent = Agent::new("pipeline");
    /// agent.add_state("load", |_ctx: Context| async { StateResult::next("report") });
    /// agent.add_state("report", |_ctx: Context| async { StateResult::End });
    /// agent.add_state("cleanup", |_ctx: Context| async { StateResult::End });
    /// agent.add_state("recover", |_ctx: Context| async { StateResult::End });
    /// agent.add_state("retry_later", |_ctx: Context| async { StateResult::End }).dependency("recover", agent_core::DependencyType::Required);
    /// agent.run().await?;
    /// let mermaid = agent.diagram().to_mermaid();
    /// assert!(mermaid.contains("class load completed"));
    /// assert!(mermaid.contains("recover -. depends .-> retry_later"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn diagram(&self) -> Diagram {
        let run = self.current();
        crate::diagram::of_definition(&self.shared.name, &lock(&self.shared.def), run.as_deref())
    }

    /// Counters of the current or last run (all zero before the first).
    pub fn metrics(&self) -> RunMetrics {
        self.current().map(|r| RunMetrics::of(&r)).unwrap_or_default()
    }

    /// A checkpoint of the current or last run, at this instant (also mid-run): completed
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

    /// Make the next `run()` continue from `checkpoint`: its context, its completed states
    /// (which do not run again), its tokens (ready or running ones run), its joins' progress
    /// and its run id. Works on a fresh agent of the same workflow, in another process.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::Mismatch`] when the checkpoint names a state this agent does not
    /// have, or the agent's definition is invalid; nothing is changed then.
    pub fn restore_from_checkpoint(&self, checkpoint: Checkpoint) -> Result<(), CheckpointError> {
        let program = self.program().map_err(|e| CheckpointError::Mismatch {
            agent: self.shared.name.clone(),
            reason: format!("the agent cannot run: {e}"),
        })?;
        checkpoint::check(&self.shared.name, &program, &checkpoint)?;
        lock(&self.shared.live).persist.restore = Some(checkpoint);
        Ok(())
    }

    /// Pause the run in progress: nothing new starts, states waiting to start (for a
    /// dependency, resources, a rate limit or a retry) leave their queues, running states
    /// finish. Returns the checkpoint of the paused run once every branch has stopped;
    /// `run()` returns with status [`AgentStatus::Paused`]. Without a running run, the
    /// checkpoint of the last one.
    pub async fn pause(&self) -> Checkpoint {
        if let Some(run) = self.current() {
            if run.pause() {
                run.ended().await;
            }
        }
        self.create_checkpoint()
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
        let snapshot = store.latest_snapshot(run_id).await.map_err(|e| store_error(e, Context::new()))?;
        let snapshot =
            snapshot.ok_or_else(|| store_error(format!("the store holds no run {run_id}"), Context::new()))?;
        self.restore_from_checkpoint(Checkpoint::from_json(&snapshot.data)?)?;
        self.run().await
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

    /// Continue the paused run to its end (in this task, like `run()`).
    ///
    /// # Errors
    ///
    /// [`AgentError::NotPaused`] when no run is paused; otherwise as [`Agent::run`].
    pub async fn resume(&self) -> Result<AgentResult, AgentError> {
        let paused = self.current().filter(|r| r.status() == AgentStatus::Paused);
        let Some(run) = paused else {
            return Err(AgentError::NotPaused { agent: self.shared.name.clone() });
        };
        run.ended().await;
        self.restore_from_checkpoint(checkpoint::capture(&run, &self.shared.name))?;
        self.run().await
    }

    /// Cancel the run in progress: every branch stops and `run()` returns with status
    /// `Cancelled`.
    pub async fn cancel_all(&self) {
        if let Some(run) = self.current() {
            run.cancel();
        }
    }

    // ----- human in the loop --------------------------------------------------------------

    /// Whether requests for human input are shown on the terminal (printed on stderr,
    /// answered by a line on stdin, asked again when the validator refuses the line). On by
    /// default only when stdin is a terminal; turned on with a piped stdin, each line of
    /// the pipe answers the next request. Answers from code ([`Agent::answer`]) and from the
    /// store are taken either way.
    pub fn input_from_terminal(self, on: bool) -> Self {
        self.shared.links.inputs.set_terminal(on);
        self
    }

    /// The requests for human input that states are waiting on now, in request order:
    /// exactly those [`Agent::answer`] accepts. Empty once they are answered (or defaulted,
    /// or timed out).
    pub fn pending_inputs(&self) -> Vec<crate::PendingInput> {
        self.shared.links.inputs.pending()
    }

    /// Answer the pending request `id` (see [`Agent::pending_inputs`]): the state waiting on
    /// it goes on with `value`. With a store, the answer is recorded there too (where the
    /// first answer to a request wins, should another process answer it at the same time).
    ///
    /// # Errors
    ///
    /// [`AnswerError::UnknownRequest`](crate::AnswerError::UnknownRequest) when no state waits
    /// on `id`; [`AnswerError::Rejected`](crate::AnswerError::Rejected) when the request's
    /// validator refuses `value`, in which case the request stays pending.
    ///
    /// ```
    /// use std::time::Duration;
    /// use agent_runtime::{Agent, AnswerError};
    /// use agent_core::{BoxError, Context, HumanInput, StateResult};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), agent_core::AgentError> {
    /// let mut agent = Agent::new("review").input_from_terminal(false);
    /// agent.add_state("review", |ctx: Context| async move {
    ///     let verdict = ctx
    ///         .human_in_the_loop(HumanInput::new("Approve? (yes/no)").validator(|x: &str| x == "yes" || x == "no"))
    ///         .await?;
    ///     ctx.set_state("verdict", verdict);
    ///     Ok::<_, BoxError>(StateResult::End)
    /// });
    ///
    /// // A reviewer answering from code, in another task.
    /// let reviewer = agent.clone();
    /// tokio::spawn(async move {
    ///     let request = loop {
    ///         match reviewer.pending_inputs().pop() {
    ///             Some(request) => break request,
    ///             None => tokio::time::sleep(Duration::from_millis(10)).await,
    ///         }
    ///     };
    ///     assert_eq!(request.id, "input-1");
    ///     assert!(matches!(reviewer.answer(&request.id, "maybe"), Err(AnswerError::Rejected { .. })));
    ///     reviewer.answer(&request.id, "yes").unwrap();
    ///     assert!(reviewer.pending_inputs().is_empty());
    /// });
    ///
    /// let result = agent.run().await?;
    /// assert_eq!(result.context().get_state::<String>("verdict").as_deref(), Some("yes"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn answer(&self, id: &str, value: impl Into<String>) -> Result<(), crate::AnswerError> {
        self.shared.links.inputs.answer(id, value.into())
    }

    /// Every request for human input of the current or last run, answered or not, in
    /// request order: the prompt, when it was asked and answered, the answer, and whether
    /// it was the default taken at the timeout (`defaulted`).
    pub fn input_history(&self) -> Vec<crate::store::InputRecord> {
        self.run_id().map(|run| self.shared.links.inputs.records(&run)).unwrap_or_default()
    }
}

/// How to run: see [`Agent::run_with`].
///
/// ```
/// use std::time::Duration;
/// use agent_runtime::RunOptions;
/// let options = RunOptions::new().timeout(Duration::from_secs(600)).cleanup_timeout(Duration::from_secs(10));
/// # let _ = options;
/// ```
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    timeout: Option<Duration>,
    cleanup_timeout: Option<Duration>,
    context: Option<Context>,
}

impl RunOptions {
    /// No deadline, a fresh context.
    pub fn new() -> Self {
        Self::default()
    }
    /// Stop the run after `d`: see [`Agent::run_with`].
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }
    /// How long states still running at the deadline may take to finish (default zero).
    pub fn cleanup_timeout(mut self, d: Duration) -> Self {
        self.cleanup_timeout = Some(d);
        self
    }
    /// Start from this context (inputs set beforehand) instead of an empty one.
    pub fn context(mut self, ctx: Context) -> Self {
        self.context = Some(ctx);
        self
    }
}

/// Cancels the run if `run()`'s future is dropped before it finishes.
struct CancelOnDrop<'a>(&'a Arc<Run>);

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Options of one state, set right after [`Agent::add_state`].
///
/// ```
/// use std::time::Duration;
/// use agent_runtime::Agent;
/// use agent_core::{Context, DependencyType, Priority, ResourceRequirements, RetryPolicy, StateResult};
///
/// let mut agent = Agent::new("train");
/// agent.add_state("prepare", |_ctx: Context| async { StateResult::next("train_model") });
/// agent.add_state("train_model", |_ctx: Context| async move { StateResult::End })
///     .resources(ResourceRequirements::new().cpu(2.0).memory_mb(1024.0).gpu(1.0))
///     .priority(Priority::High)
///     .timeout(Duration::from_secs(300))
///     .retry_policy(RetryPolicy::new().max_retries(3).initial_delay(Duration::from_secs(1)))
///     .dependency("prepare", DependencyType::Required);
/// ```
pub struct StateConfig<'a> {
    agent: &'a Agent,
    index: usize,
}

impl StateConfig<'_> {
    fn set(self, f: impl FnOnce(&mut StateOptions)) -> Self {
        self.agent.edit(|def| f(&mut def.states[self.index].options));
        self
    }

    /// Resources the state holds while it runs. It starts only when the agent's pool can
    /// give all of them at once, and gives them back however the attempt ends (completion,
    /// error, panic, timeout, cancellation, preemption). A request above a pool total fails
    /// the state at once with a [`agent_core::ResourceError`].
    pub fn resources(self, r: ResourceRequirements) -> Self {
        self.set(|o| o.resources = Some(r))
    }

    /// Admission priority among states waiting for resources: `Critical` first, then
    /// `High`, `Normal`, `Low`; first come first served within one.
    pub fn priority(self, p: Priority) -> Self {
        self.set(|o| o.priority = p)
    }

    /// Longest time one attempt may take (the wait for resources not counted). Past it the
    /// attempt's future is dropped, the state is marked `Timeout`, and the attempt counts as
    /// a failure for the retry policy (its error is an [`agent_core::TimeoutError`]).
    pub fn timeout(self, d: Duration) -> Self {
        self.set(|o| o.timeout = Some(d))
    }

    /// How the state is retried when an attempt returns `Err`, panics or times out:
    /// at most `max_retries` more attempts, the n-th after
    /// `min(initial_delay · exponential_base^(n-1), max_delay)` (with jitter, a uniform draw
    /// from the upper half of that bound). Nothing is held while waiting; the state shows
    /// `Retrying`. Overrides [`Agent::retry_policy`].
    pub fn retry_policy(self, p: RetryPolicy) -> Self {
        self.set(|o| o.retry = Some(p))
    }

    /// A dependency on another state (a [`agent_core::DependencyType`] or a full
    /// [`DependencyConfig`]). Before each start the state waits, holding nothing, until the
    /// dependency is satisfied: `Required` — completed (it is activated first if it has not
    /// run; if it fails for good this state is `Cancelled`); `Sequential` — finished either
    /// way; `Optional` — finished if it was activated in this run; `Parallel` — at once, the
    /// dependency started alongside. The config's `condition`, `lifecycle` and `timeout`
    /// (past which this state fails with [`agent_core::DependencyTimeout`]) apply. When all
    /// of a state's `Required` and `Sequential` dependencies complete, it is activated even
    /// if no state names it (a transition reaching it later activates it again). Unknown
    /// names and cycles fail `run()` before anything runs.
    ///
    /// ```
    /// use agent_runtime::Agent;
    /// use agent_core::{Context, DependencyType, StateResult};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut agent = Agent::new("etl");
    /// agent.add_state("report", |ctx: Context| async move {
    ///     assert!(ctx.has_state("rows")); // `load` ran first
    ///     StateResult::End
    /// })
    /// .dependency("load", DependencyType::Required);
    /// agent.add_state("load", |ctx: Context| async move {
    ///     ctx.set_state("rows", 3);
    ///     StateResult::End
    /// });
    /// let result = agent.run().await.unwrap();
    /// assert_eq!(result.completed_states(), ["load", "report"]);
    /// # }
    /// ```
    pub fn dependency(self, state: impl Into<Cow<'static, str>>, config: impl Into<DependencyConfig>) -> Self {
        let (state, config) = (state.into(), config.into());
        self.set(|o| o.dependencies.push((state, config)))
    }

    /// The states this state may go to: drawn in its picture ([`Agent::diagram`]), checked
    /// when `run()` starts (each must name a state: [`AgentError::UnknownReference`]), and
    /// enforced: returning any other target fails the run with
    /// [`AgentError::UndeclaredTarget`]. When every state of an agent declares its targets
    /// (or is a `#[state]` whose targets are all literals), its fan-ins follow the known
    /// graph, as a `#[workflow]`'s do: a branch on a detour is waited for without `join`.
    ///
    /// ```
    /// use agent_runtime::Agent;
    /// use agent_core::{AgentError, Context, StateResult};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut agent = Agent::new("routed");
    /// agent.add_state("route", |_ctx: Context| async { StateResult::next("elsewhere") }).targets(["done"]);
    /// agent.add_state("done", |_ctx: Context| async { StateResult::End });
    /// agent.add_state("elsewhere", |_ctx: Context| async { StateResult::End });
    /// assert!(agent.diagram().to_mermaid().contains("route --> done"));
    /// let err = agent.run().await.unwrap_err();
    /// assert!(matches!(err, AgentError::UndeclaredTarget { ref to, .. } if to == "elsewhere"));
    /// # }
    /// ```
    pub fn targets<S: Into<Cow<'static, str>>>(self, targets: impl IntoIterator<Item = S>) -> Self {
        let targets: Vec<Cow<'static, str>> = targets.into_iter().map(Into::into).collect();
        self.set(|o| o.targets = Some(targets))
    }

    /// Where to go once retries are spent: the handler state runs next (as if this state had
    /// returned its name) and reads the failure with `ctx.last_error()`. Without it, the
    /// failure ends the run with [`AgentError::StateFailed`].
    pub fn on_error(self, state: impl Into<Cow<'static, str>>) -> Self {
        let state = state.into();
        self.set(|o| o.on_error = Some(state))
    }

    /// May be stopped and re-queued for higher-priority work: with preemption enabled on the
    /// pool, a waiting `High` or `Critical` state that does not fit drops this state's
    /// future, takes what it held, and this state starts again later without spending a
    /// retry.
    pub fn preemptible(self) -> Self {
        self.set(|o| o.preemptible = true)
    }

    /// A fan-in that waits until no other branch of its group can still move.
    pub fn join(self) -> Self {
        self.set(|o| o.join = true)
    }

    /// At most `limit.per_second` starts a second of this state (each attempt is a start),
    /// `limit.burst` at once; shared by all runs of this agent.
    pub fn rate_limit(self, limit: RateLimit) -> Self {
        self.set(|o| o.rate_limit = Some(limit))
    }

    /// Count this state against the quotas of `tag` too (see [`ResourcePool::set_quota`])
    /// and the tag's rate limit (see [`Agent::tag_rate_limit`]).
    pub fn tag(self, tag: impl Into<Cow<'static, str>>) -> Self {
        let tag = tag.into();
        self.set(|o| o.tags.push(tag))
    }

    /// Runs its body on tokio's blocking pool, so CPU-heavy code does not stall the async
    /// workers.
    pub fn blocking(self) -> Self {
        self.set(|o| o.blocking = true)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use agent_core::{Context, RateLimit, StateHandler, StateResult, StateSpec, WorkflowGraph};

    use super::Agent;

    static STATES: [StateSpec; 2] = [
        StateSpec { edges: &["b"], computed_targets: false, ..StateSpec::new("a") },
        StateSpec { computed_targets: false, ..StateSpec::new("b") },
    ];
    static GRAPH: WorkflowGraph = WorkflowGraph { name: "shared", start: "a", states: &STATES, max_concurrent: None };
    static LIMITED_STATES: [StateSpec; 1] =
        [StateSpec { rate_limit: Some(RateLimit::new(5.0)), computed_targets: false, ..StateSpec::new("a") }];
    static LIMITED: WorkflowGraph =
        WorkflowGraph { name: "limited", start: "a", states: &LIMITED_STATES, max_concurrent: None };

    fn handler(next: StateResult) -> Arc<dyn StateHandler> {
        Arc::new(move |_ctx: Context| {
            let next = next.clone();
            async move { next }
        })
    }

    fn workflow_agent() -> Agent {
        Agent::__from_workflow(&GRAPH, vec![(handler("b".into()), None), (handler(StateResult::End), None)])
    }

    /// Agents `#[workflow]` makes share one compiled program while unmodified: 10,000
    /// concurrent workflows must not each compile and hold their own.
    #[test]
    fn unmodified_workflow_agents_share_their_program_and_a_changed_one_does_not() {
        let (a, b) = (workflow_agent(), workflow_agent());
        assert!(Arc::ptr_eq(&a.program().unwrap(), &b.program().unwrap()));
        let mut changed = workflow_agent();
        changed.add_state("c", |_ctx: Context| async { StateResult::End });
        let own = changed.program().unwrap();
        assert!(!Arc::ptr_eq(&a.program().unwrap(), &own));
        assert_eq!(own.states.len(), 3);
        // Rate limiters count one agent's starts: a program holding them is never shared.
        let limited = || Agent::__from_workflow(&LIMITED, vec![(handler(StateResult::End), None)]);
        assert!(!Arc::ptr_eq(&limited().program().unwrap(), &limited().program().unwrap()));
    }
}
