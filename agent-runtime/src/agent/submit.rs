//! Runs for a fleet: [`Agent::submit`] queues a run in the agent's store for a worker (see
//! [`Worker`](crate::Worker)) and returns its id at once; [`Agent::wait`] follows a run in
//! the store, from any process, to its end.
//!
//! Invariants:
//! - A submission writes one row and nothing else (see `store::queue`): the run's id, its
//!   agent, its graph's hash (only workers serving that graph take it), its input context
//!   and its idempotency key. With a key the agent already has a run for, that run's id is
//!   returned and nothing is written, also when submissions race (the store decides).
//! - A submission wakes the workers of this process at once; workers elsewhere find the run
//!   at their next poll.
//! - `wait` only reads: it polls the run's row (backing off from 50 ms to 1 s) until the
//!   run is finished or paused, then reads its newest checkpoint (snapshot and journal).
//! - Flow control is the store's (see `store::queue`): a submission records its flow key
//!   ([`SubmitOptions::flow_key`], else [`Agent::flow_key`] of its input), the agent's
//!   [`Agent::max_per_key`] and its debounce window with the run, and every worker sharing
//!   the store claims by them, whatever its own configuration. A submission whose options
//!   do not go together (debounce without a key) is refused before anything is written
//!   ([`AgentError::InvalidSubmission`]).

use std::sync::LazyLock;
use std::time::Duration;

use agent_core::{AgentError, AgentStatus, Checkpoint, Context};
use tokio::sync::Notify;

use super::Agent;
use crate::durable::store_error;
use crate::store::Submission;

/// Woken by every submission in this process: the workers of this process claim at once.
pub(crate) static SUBMITTED: LazyLock<Notify> = LazyLock::new(Notify::new);

/// What to submit: see [`Agent::submit`].
///
/// ```
/// use agent_runtime::SubmitOptions;
/// use agent_core::Context;
/// let ctx = Context::new();
/// ctx.set_state("order", 1234);
/// let options = SubmitOptions::new().context(ctx).idempotency_key("order-1234");
/// # let _ = options;
/// ```
#[derive(Clone, Debug, Default)]
pub struct SubmitOptions {
    context: Option<Context>,
    key: Option<String>,
    flow_key: Option<String>,
    debounce: Option<Duration>,
}

impl SubmitOptions {
    /// A run from an empty context, without a key.
    pub fn new() -> SubmitOptions {
        SubmitOptions::default()
    }

    /// Start the run from this context (its inputs).
    pub fn context(mut self, ctx: Context) -> SubmitOptions {
        self.context = Some(ctx);
        self
    }

    /// Name the request: submitting again with the same key (from any process) returns the
    /// same run instead of making another. Unique per agent.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> SubmitOptions {
        self.key = Some(key.into());
        self
    }

    /// The run's flow key (see [`Agent::flow_key`]), instead of the one the agent computes
    /// from the input.
    pub fn flow_key(mut self, key: impl Into<String>) -> SubmitOptions {
        self.flow_key = Some(key.into());
        self
    }

    /// Debounce over `window`: if a run of this agent and flow key submitted with debounce
    /// is queued and has not started, this submission replaces its input, pushes its start
    /// to `window` from now (by the store's clock) and returns its id; otherwise it queues a
    /// run that no worker takes before `window` has passed. So several submissions less than
    /// `window` apart make one run, with the last input. Needs a flow key
    /// ([`AgentError::InvalidSubmission`] otherwise).
    ///
    /// ```
    /// use std::time::Duration;
    /// use agent_runtime::SubmitOptions;
    /// let options = SubmitOptions::new().flow_key("customer-7").debounce(Duration::from_secs(2));
    /// # let _ = options;
    /// ```
    pub fn debounce(mut self, window: Duration) -> SubmitOptions {
        self.debounce = Some(window);
        self
    }
}

impl Agent {
    /// Queue a run in this agent's store for a [`Worker`](crate::Worker) serving this
    /// workflow to run, and return its id at once. Nothing runs here: the run starts when a
    /// worker (in this process or any other sharing the store) claims it. With an
    /// idempotency key the agent already has a run for, that run's id is returned instead
    /// (whatever its status) and nothing is queued.
    ///
    /// ```
    /// use agent_runtime::{store::MemoryStore, Agent, SubmitOptions, Worker};
    /// use agent_core::{Context, StateResult};
    ///
    /// fn define() -> Agent {
    ///     let mut agent = Agent::new("greeter");
    ///     agent.add_state("greet", |ctx: Context| async move {
    ///         let name: String = ctx.get_state_or("name", String::new());
    ///         ctx.set_state("greeting", format!("hello, {name}"));
    ///         StateResult::End
    ///     });
    ///     agent
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = MemoryStore::new();
    /// let client = define().with_store(store.clone());
    /// let ctx = Context::new();
    /// ctx.set_state("name", "Ada");
    /// let options = agent_runtime::SubmitOptions::new().context(ctx).idempotency_key("ada");
    /// let id = client.submit(options.clone()).await?;
    /// assert_eq!(client.submit(options).await?, id, "the same key, the same run");
    ///
    /// // A worker in this process runs it; `wait` follows it in the store.
    /// let worker = Worker::new(store).serve(define);
    /// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// let serving = tokio::spawn(worker.run_until(async { let _ = stopped.await; }));
    /// let done = client.wait(&id).await?;
    /// assert_eq!(done.agent_status, agent_runtime::AgentStatus::Completed);
    /// assert_eq!(done.read_context()?.get_state::<String>("greeting").as_deref(), Some("hello, Ada"));
    /// let _ = stop.send(());
    /// serving.await??;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// With a flow key (see [`Agent::flow_key`]), the store takes the run only while fewer
    /// than [`Agent::max_per_key`] runs of its key run, round robin between keys; with
    /// [`SubmitOptions::debounce`] it may return a queued run's id instead of a new one.
    ///
    /// # Errors
    ///
    /// [`AgentError::Store`] without a store or when the store fails; the definition's
    /// validation errors (its graph's hash is recorded with the run); a context that cannot
    /// be written as JSON; [`AgentError::InvalidSubmission`] for debounce without a flow
    /// key.
    pub async fn submit(&self, options: SubmitOptions) -> Result<String, AgentError> {
        let (key_of, max_per_key) = {
            let live = super::lock(&self.shared.live);
            (live.persist.flow_key.clone(), live.persist.max_per_key)
        };
        let ctx = options.context.unwrap_or_default();
        let flow_key = options.flow_key.or_else(|| key_of.and_then(|f| f(&ctx)));
        if options.debounce.is_some() && flow_key.is_none() {
            return Err(AgentError::InvalidSubmission {
                agent: self.name().to_owned(),
                reason: "debounce needs a flow key (SubmitOptions::flow_key, or Agent::flow_key giving one)".into(),
            });
        }
        let store = self.store()?;
        let hash = self.graph_hash()?;
        let input = ctx.to_json_string().map_err(|e| store_error(format!("the run's context: {e}"), Context::new()))?;
        let run_id = uuid::Uuid::new_v4().to_string();
        let mut submission = Submission::new(run_id, self.name(), hash.to_string(), input);
        submission.idempotency_key = options.key;
        if let Some(key) = flow_key {
            submission = submission.flow_key(key);
            if let Some(n) = max_per_key {
                submission = submission.flow_limit(n);
            }
        }
        if let Some(window) = options.debounce {
            submission = submission.debounce(window);
        }
        let submitted = store.submit_run(&submission).await.map_err(|e| store_error(e, Context::new()))?;
        if submitted.created {
            tracing::debug!(run_id = %submitted.run.run_id, agent = %self.name(), "submitted a run");
            SUBMITTED.notify_waiters();
        }
        Ok(submitted.run.run_id)
    }

    /// Compute each submitted run's flow key from its input context, at submission (see
    /// [`Agent::submit`]); `None` leaves the run without a key. A key set with
    /// [`SubmitOptions::flow_key`] wins. Runs of one key are claimed round robin with other
    /// keys' (so one busy customer does not starve the others) and, with
    /// [`Agent::max_per_key`], at most that many at once across every worker sharing the
    /// store.
    ///
    /// ```
    /// use agent_runtime::Agent;
    /// let agent = Agent::new("invoices")
    ///     .flow_key(|ctx| ctx.get_state::<String>("customer"))
    ///     .max_per_key(2);
    /// # let _ = agent;
    /// ```
    pub fn flow_key(self, key: impl Fn(&Context) -> Option<String> + Send + Sync + 'static) -> Self {
        super::lock(&self.shared.live).persist.flow_key = Some(std::sync::Arc::new(key));
        self
    }

    /// At most `n` (at least 1) runs of one flow key run at once, across every worker
    /// sharing the store: recorded with each run submitted from here on (so workers need not
    /// agree on it) and kept by the store's claims. `max_per_key(1)` makes a singleton per
    /// key: a key's runs run one after the other, never two at once. Runs without a key are
    /// not limited.
    pub fn max_per_key(self, n: u32) -> Self {
        super::lock(&self.shared.live).persist.max_per_key = Some(n.max(1));
        self
    }

    /// Follow run `run_id` in this agent's store (from any process) until it is finished
    /// (completed, failed, cancelled, timed out) or paused; its newest checkpoint then: its
    /// status, context and completed states. Reads only.
    ///
    /// # Errors
    ///
    /// [`AgentError::Store`] without a store, when the store fails, or when it holds no
    /// such run (also when the run is deleted meanwhile); [`AgentError::Checkpoint`] when
    /// its snapshot cannot be read.
    pub async fn wait(&self, run_id: &str) -> Result<Checkpoint, AgentError> {
        let store = self.store()?;
        let mut pause = Duration::from_millis(50);
        loop {
            let row = store.get_run(run_id).await.map_err(|e| store_error(e, Context::new()))?;
            let Some(row) = row else {
                return Err(store_error(format!("the store holds no run {run_id}"), Context::new()));
            };
            if row.status.is_finished() || row.status == AgentStatus::Paused {
                return match crate::store::read_checkpoint(&*store, run_id).await? {
                    Some(checkpoint) => Ok(checkpoint),
                    None => Err(store_error(format!("run {run_id} has no snapshot"), Context::new())),
                };
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }
}
