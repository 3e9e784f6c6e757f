//! What a finished run gives back.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use agent_core::Context;

use crate::pool::{StateAllocation, UsageStats, WaitingState};
use crate::run::Run;
use crate::timing::StateTiming;
use agent_core::{AgentStatus, StateStatus};

/// The outcome of a run that ended without error.
///
/// A view of the finished run: nothing is copied when the run ends, and each accessor reads
/// the run's final state when called.
///
/// ```
/// use agent_core::{AgentStatus, Context, StateResult};
/// use agent_runtime::Agent;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), agent_core::AgentError> {
/// let mut agent = Agent::new("totals");
/// agent.add_state("add", |ctx: Context| async move {
///     ctx.set_state("total", 2 + 3);
///     StateResult::next("report")
/// });
/// agent.add_state("report", |_ctx: Context| async { StateResult::End });
///
/// let result = agent.run().await?;
/// assert_eq!(result.status(), AgentStatus::Completed);
/// assert_eq!(result.context().get_state::<i32>("total"), Some(5));
/// assert_eq!(result.completed_states(), ["add", "report"]);
/// assert_eq!(result.metrics().completed, 2);
/// assert_eq!(agent.run_id().as_deref(), Some(result.run_id())); // the id stores and events use
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct AgentResult {
    run: Arc<Run>,
}

impl std::fmt::Debug for AgentResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentResult")
            .field("run_id", &self.run.run_id())
            .field("status", &self.status())
            .field("completed_states", &self.completed_states())
            .finish()
    }
}

impl AgentResult {
    pub(crate) fn new(run: &Arc<Run>) -> AgentResult {
        AgentResult { run: run.clone() }
    }

    /// How the run ended.
    pub fn status(&self) -> AgentStatus {
        self.run.status()
    }

    /// The final context, read with the same getters as inside states.
    pub fn context(&self) -> &Context {
        &self.run.ctx
    }

    /// Every state that completed at least once, in the order each first completed.
    pub fn completed_states(&self) -> Vec<String> {
        self.run.completed_states()
    }

    /// The run's id.
    pub fn run_id(&self) -> &str {
        self.run.run_id()
    }

    /// The run's counters.
    pub fn metrics(&self) -> RunMetrics {
        RunMetrics::of(&self.run)
    }
}

/// Counters of one state in a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StateMetrics {
    /// The state's name.
    pub name: String,
    /// Its status now.
    pub status: Option<StateStatus>,
    /// Runs that completed.
    pub completed: u64,
    /// Runs that failed.
    pub failed: u64,
    /// Retries made (attempts after the first).
    pub retries: u64,
    /// Attempts preempted for higher-priority work and re-queued.
    pub preempted: u64,
    /// Time spent waiting for resources from the pool, summed over attempts.
    pub resource_wait: Duration,
    /// How long its attempts ran, and when it first started and last ended: `None` unless
    /// the run records timings ([`Agent::record_timings`](crate::Agent::record_timings)).
    ///
    /// ```
    /// use std::time::Duration;
    /// use agent_runtime::Agent;
    /// use agent_core::{Context, StateResult};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), agent_core::AgentError> {
    /// let mut agent = Agent::new("untimed");
    /// agent.add_state("work", |_ctx: Context| async { StateResult::End });
    /// assert_eq!(agent.run().await?.metrics().states[0].timing, None); // off by default
    /// # Ok(())
    /// # }
    /// ```
    pub timing: Option<StateTiming>,
}

/// Counters of a run: from [`AgentResult::metrics`] once it ended, or
/// [`Agent::metrics`](crate::Agent::metrics) while it goes on.
///
/// ```
/// use agent_core::{Context, RetryPolicy, StateResult};
/// use agent_runtime::Agent;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), agent_core::AgentError> {
/// let mut agent = Agent::new("flaky");
/// agent
///     .add_state("fetch", |ctx: Context| async move {
///         let mut attempt = 0;
///         ctx.update_state_or_default("attempts", |n: &mut u32| {
///             *n += 1;
///             attempt = *n;
///         })?;
///         if attempt < 3 {
///             return Err("timed out".into()); // the first two attempts fail
///         }
///         Ok::<_, agent_core::BoxError>(StateResult::End)
///     })
///     .retry_policy(RetryPolicy::new().max_retries(3).jitter(false));
///
/// let metrics = agent.run().await?.metrics();
/// assert_eq!((metrics.completed, metrics.retries, metrics.steps), (1, 2, 1));
/// let fetch = &metrics.states[0];
/// assert_eq!((fetch.name.as_str(), fetch.completed, fetch.retries), ("fetch", 1, 2));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunMetrics {
    /// State runs that completed (a state in a loop counts each time).
    pub completed: u64,
    /// State runs that failed.
    pub failed: u64,
    /// States running now.
    pub running: u64,
    /// States not yet run, or waiting.
    pub pending: u64,
    /// Retries made.
    pub retries: u64,
    /// States started, counting every run of every state.
    pub steps: u64,
    /// Time since the run started, or its whole length once over.
    pub elapsed: Duration,
    /// Attempts preempted and re-queued, over all states.
    pub preempted: u64,
    /// Per state, in definition order.
    pub states: Vec<StateMetrics>,
    /// The agent's resource pool as it is now (shared with any other agent using it), if a
    /// state of this run asks for resources.
    pub resources: Option<UsageStats>,
    /// What this agent's states hold from the pool now.
    pub allocations: Vec<StateAllocation>,
    /// This agent's states waiting for resources, in the order they will be admitted.
    pub waiting: Vec<WaitingState>,
    /// Time this run's states spent in `human_in_the_loop`, summed over requests (parallel
    /// requests each count).
    pub input_wait: Duration,
}

impl RunMetrics {
    pub(crate) fn of(run: &Run) -> RunMetrics {
        let mut m = RunMetrics { elapsed: run.elapsed(), input_wait: run.states.input_wait(), ..RunMetrics::default() };
        for (i, c) in run.states.iter().enumerate() {
            let status = StateStatus::from_u8(c.status.load(Relaxed));
            let s = StateMetrics {
                name: run.program.states[i].name.to_string(),
                status: Some(status),
                completed: c.completed.load(Relaxed) as u64,
                failed: c.failed.load(Relaxed) as u64,
                retries: c.retries.load(Relaxed) as u64,
                preempted: c.preempted.load(Relaxed) as u64,
                resource_wait: Duration::from_nanos(c.resource_wait.load(Relaxed)),
                timing: run.sinks.timing.as_ref().map(|t| t[i].summary()),
            };
            m.completed += s.completed;
            m.preempted += s.preempted;
            m.retries += s.retries;
            m.failed += s.failed;
            match status {
                StateStatus::Running => m.running += 1,
                StateStatus::Pending | StateStatus::Ready | StateStatus::Blocked | StateStatus::Retrying => {
                    m.pending += 1
                }
                _ => {}
            }
            m.states.push(s);
        }
        // Started = finished + running; a run with `max_steps` counts starts exactly.
        if let Some((pool, request)) =
            run.program.states.iter().find_map(|s| s.guarded.as_ref().and_then(|g| g.request.as_ref()))
        {
            m.resources = Some(pool.usage_stats());
            let ours = |agent: &str| agent == &*request.agent;
            m.allocations = pool.state_allocations().into_iter().filter(|a| ours(&a.agent)).collect();
            m.waiting = pool.waiting_states().into_iter().filter(|w| ours(&w.agent)).collect();
        }
        m.steps = match run.program.max_steps {
            Some(_) => run.states.steps(),
            None => m.completed + m.failed + m.running,
        };
        m
    }
}
