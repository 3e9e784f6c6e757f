//! Building an agent: its states, their options, and the options of the whole agent.
//!
//! Invariants:
//! - Every edit of the definition goes through `Agent::edit`, which takes `def`, then
//!   `live` after releasing `def`, to drop the compiled program: the next run compiles the
//!   edited definition again; a run in progress keeps its program.
//! - An edit marks the definition no longer pristine, so a `#[workflow]` agent changed by
//!   hand stops sharing the program compiled once for its graph.
//! - `StateConfig` borrows the agent and names its state by index: states are only ever
//!   added, so the index stays valid.

use std::borrow::Cow;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

#[cfg(doc)]
use agent_core::{AgentError, Context};
use agent_core::{DependencyConfig, IntoState, Priority, RateLimit, ResourceRequirements, RetryPolicy};

use super::{lock, Agent};
use crate::pool::ResourcePool;
use crate::program::{Definition, StateDef, StateOptions};

impl Agent {
    fn edit<R>(&self, f: impl FnOnce(&mut Definition) -> R) -> R {
        let mut def = lock(&self.shared.def);
        let r = f(&mut def);
        def.pristine = false;
        drop(def);
        lock(&self.shared.live).compiled = None;
        r
    }

    /// Add a state: a closure or function taking an owned [`Context`], an `async fn` taking
    /// `&Context` (the signature `#[state]` functions have; it saves the reference-count
    /// clone and drop an owned `Context` costs each time the state runs), or a `#[state]`
    /// function (which keeps the options its attribute gave it). Returns a handle to set
    /// options.
    ///
    /// ```
    /// use agent_runtime::Agent;
    /// use agent_core::{Context, StateResult};
    ///
    /// async fn fetch(ctx: &Context) -> StateResult {
    ///     ctx.set_state("page", "<html>");
    ///     StateResult::next("parse")
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), agent_core::AgentError> {
    /// let mut agent = Agent::new("scraper");
    /// agent.add_state("fetch", fetch);
    /// agent.add_state("parse", |ctx: Context| async move {
    ///     let page: String = ctx.get_state("page").unwrap_or_default();
    ///     ctx.set_state("length", page.len());
    ///     StateResult::End
    /// });
    /// let result = agent.run().await?;
    /// assert_eq!(result.context().get_state::<usize>("length"), Some(6));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// The first state added is the start unless [`Agent::set_start`] says otherwise. Names
    /// are checked when `run()` starts.
    pub fn add_state<M>(&mut self, name: impl Into<Cow<'static, str>>, state: impl IntoState<M>) -> StateConfig<'_> {
        let (handler, spec) = state.into_state();
        let name = name.into().into();
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

    /// Writes to context key `key` combine through `reduce` instead of replacing the
    /// value: inside a fan-out's branches they are held, and folded in branch order (the
    /// order of the fan-out's targets, or of a map's items) when the branches meet, so two
    /// runs on one input end with one value whichever branch finished first. Outside a
    /// fan-out a write folds in at once. Only `set_state` contributes; `update_state`,
    /// `set_typed` and `remove_state` act on the key directly.
    ///
    /// A key declared again replaces its reducer. See [`Reduce`](agent_core::Reduce).
    ///
    /// ```
    /// use std::time::Duration;
    /// use agent_runtime::Agent;
    /// use agent_core::{Context, Reduce, StateResult};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), agent_core::AgentError> {
    /// let mut agent = Agent::new("reduce").reduce("log", Reduce::Append);
    /// agent.add_state("fan", |_c: Context| async { StateResult::parallel(["slow", "fast"]) });
    /// agent.add_state("slow", |c: Context| async move {
    ///     tokio::time::sleep(Duration::from_millis(10)).await;
    ///     c.set_state("log", "slow");
    ///     StateResult::next("join")
    /// });
    /// agent.add_state("fast", |c: Context| async move {
    ///     c.set_state("log", "fast");
    ///     StateResult::next("join")
    /// });
    /// agent.add_state("join", |_c: Context| async { StateResult::End });
    /// let ctx = agent.run().await?.context().clone();
    /// // In branch order, though `fast` finished first.
    /// assert_eq!(ctx.get_state::<Vec<String>>("log").unwrap(), ["slow", "fast"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn reduce(self, key: impl Into<Cow<'static, str>>, reduce: agent_core::Reduce) -> Self {
        let key = key.into();
        self.edit(|def| {
            def.reducers.retain(|(k, _)| *k != key);
            def.reducers.push((key, reduce));
        });
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

    /// Compile the definition as a run would, keeping nothing (see `bench::compile`).
    pub(crate) fn compile_uncached(&self) -> Result<(), agent_core::AgentError> {
        let def = lock(&self.shared.def);
        crate::program::Program::compile(&self.shared.name, &def).map(drop)
    }

    /// The pool this agent's states take resources from.
    pub fn resource_pool(&self) -> ResourcePool {
        lock(&self.shared.def).pool.clone().unwrap_or_else(ResourcePool::global)
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
    /// assert!(agent.diagram().to_mermaid().contains("s0 --> s1")); // `route` to `done`
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
