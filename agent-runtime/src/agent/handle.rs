//! Starting a run in a task of its own, and the handle to it: [`Agent::start`] and
//! [`RunHandle`].
//!
//! Invariants:
//! - `start` compiles (or reuses) the agent's program, prepares the run as `run()` does,
//!   and spawns the future `run()` would await on the current tokio runtime; the run is the
//!   agent's most recent from then on. Any number of started runs go on at once.
//! - A handle speaks of its own run only: its status, metrics, events, requests for human
//!   input and controls never reach another run of the agent. Once its run is resumed (by
//!   the handle or by the agent), it speaks of the resumed run, which keeps the id
//!   (`run::latest` follows the chain).
//! - Dropping a handle, or the future awaiting it, leaves the run going, as dropping a
//!   tokio `JoinHandle` leaves its task; [`RunHandle::cancel`] stops it. If the runtime
//!   shuts down first, the run's future is dropped, which cancels it (a task never polled
//!   too: see `spawn`).
//! - Awaiting the handle gives what `run()` would have: the result once the run completes,
//!   is cancelled or pauses, the error that ended it otherwise; after
//!   [`RunHandle::resume`], the resumed run's.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

use agent_core::{AgentError, AgentStatus, Checkpoint, StateStatus};
use tokio::task::JoinHandle;

use super::{lock, Agent, RunOptions};
use crate::checkpoint;
use crate::events::EventStream;
use crate::human::{AnswerError, PendingInput};
use crate::result::{AgentResult, RunMetrics};
use crate::run::{latest, Run};

/// What the task of a started run gives back.
type Outcome = Result<AgentResult, AgentError>;

impl Agent {
    /// Start a run in a task of its own on the current tokio runtime, and return at once a
    /// handle to it: its id, status, metrics and events, controls (pause, resume, cancel),
    /// its requests for human input, and, when awaited, its result.
    ///
    /// One agent runs any number of runs at once: each has its own context, counters and
    /// id, and all share the program compiled once from the definition (and the agent's
    /// resource pool, rate limits and `Once` dependency completions, which are the agent's
    /// by design). The run started is the agent's most recent: [`Agent::status`] and the
    /// other methods of the agent speak of it until another starts. A checkpoint left by
    /// [`Agent::restore_from_checkpoint`] is taken by this run.
    ///
    /// `run()` is `start` then await, except that it drives the run in the awaiting task
    /// (so dropping that future cancels the run); dropping a [`RunHandle`] does not.
    ///
    /// ```
    /// use agent_runtime::{Agent, AgentStatus, RunOptions};
    /// use agent_core::{Context, StateResult};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), agent_core::AgentError> {
    /// let mut agent = Agent::new("double");
    /// agent.add_state("double", |ctx: Context| async move {
    ///     let n: u64 = ctx.get_state_or("n", 0);
    ///     ctx.set_state("n", n * 2);
    ///     StateResult::End
    /// });
    ///
    /// // Ten runs of one definition at once, each with its own input.
    /// let mut runs = Vec::new();
    /// for n in 0..10u64 {
    ///     let ctx = Context::new();
    ///     ctx.set_state("n", n);
    ///     runs.push(agent.start(RunOptions::new().context(ctx))?);
    /// }
    /// for (n, run) in (0..10u64).zip(runs) {
    ///     let id = run.id().to_owned();
    ///     let result = run.await?;
    ///     assert_eq!((result.run_id(), result.status()), (id.as_str(), AgentStatus::Completed));
    ///     assert_eq!(result.context().get_state::<u64>("n"), Some(n * 2));
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// Nothing starts on these: the definition's validation errors (as [`Agent::run`]); a
    /// checkpoint to restore that does not fit; [`AgentError::NoRuntime`] outside a tokio
    /// runtime. Errors that end a started run come from awaiting its handle.
    pub fn start(&self, options: RunOptions) -> Result<RunHandle, AgentError> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err(AgentError::NoRuntime { agent: self.shared.name.clone() });
        };
        let launch = self.launch(options, None, None, None)?;
        Ok(self.spawn_on(&runtime, launch))
    }

    /// Drive `launch` in a task of its own on the current runtime: its handle.
    pub(super) fn spawn_launch(&self, launch: super::launch::Launch) -> Result<RunHandle, AgentError> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err(AgentError::NoRuntime { agent: self.shared.name.clone() });
        };
        Ok(self.spawn_on(&runtime, launch))
    }

    fn spawn_on(&self, runtime: &tokio::runtime::Handle, launch: super::launch::Launch) -> RunHandle {
        let run = launch.run.clone();
        let task = spawn(runtime, self.clone(), launch);
        RunHandle { agent: self.clone(), first: run, task: Mutex::new(task) }
    }
}

/// Drive `launch` in a task of its own on `runtime`. A task dropped before its first poll
/// (its runtime shutting down) cancels and ends the run it was given, which would otherwise
/// read `Running` for ever; once polled, the run's own future does that (`CancelOnDrop`).
fn spawn(runtime: &tokio::runtime::Handle, agent: Agent, launch: super::launch::Launch) -> JoinHandle<Outcome> {
    let unpolled = Unpolled(Some(launch.run.clone()));
    runtime.spawn(async move {
        let mut unpolled = unpolled;
        unpolled.0 = None;
        agent.go(launch).await
    })
}

/// See [`spawn`].
struct Unpolled(Option<Arc<Run>>);

impl Drop for Unpolled {
    fn drop(&mut self) {
        if let Some(run) = self.0.take() {
            run.cancel();
            super::launch::finish(&run);
        }
    }
}

/// One run of an agent, started by [`Agent::start`]: watch it, control it, answer it, and
/// await it for its result.
///
/// The handle speaks of its run only, whatever else the agent runs meanwhile. Dropping it
/// leaves the run going (as dropping a tokio `JoinHandle` leaves its task);
/// [`RunHandle::cancel`] stops it. Awaiting it gives what [`Agent::run`] would have.
///
/// ```
/// use std::time::Duration;
/// use agent_runtime::{Agent, AgentStatus, RunOptions};
/// use agent_core::{BoxError, Context, HumanInput, StateResult};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), BoxError> {
/// let mut agent = Agent::new("review").input_from_terminal(false);
/// agent.add_state("review", |ctx: Context| async move {
///     let verdict = ctx.human_in_the_loop(HumanInput::new("Approve?")).await?;
///     ctx.set_state("verdict", verdict);
///     Ok::<_, BoxError>(StateResult::End)
/// });
///
/// let first = agent.start(RunOptions::new())?;
/// let second = agent.start(RunOptions::new())?;
/// while first.pending_inputs().is_empty() || second.pending_inputs().is_empty() {
///     tokio::time::sleep(Duration::from_millis(10)).await;
/// }
/// // Each run counts its own requests: both wait on `input-1`, each answered through its
/// // own handle.
/// first.answer("input-1", "yes")?;
/// second.cancel().await;
/// let result = first.await?;
/// assert_eq!(result.context().get_state::<String>("verdict").as_deref(), Some("yes"));
/// assert_eq!(second.status(), AgentStatus::Cancelled);
/// # Ok(())
/// # }
/// ```
pub struct RunHandle {
    agent: Agent,
    /// The run started; the runs that resumed it follow from it (see `run::successor`).
    first: Arc<Run>,
    /// The task driving the latest run this handle started or resumed.
    task: Mutex<JoinHandle<Outcome>>,
}

impl std::fmt::Debug for RunHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunHandle")
            .field("agent", &self.agent.name())
            .field("id", &self.id())
            .field("status", &self.status())
            .finish()
    }
}

impl RunHandle {
    /// The run now: the one started, or the latest that resumed it.
    fn run(&self) -> Arc<Run> {
        latest(&self.first)
    }

    /// The run now (for a worker, which drains it).
    pub(crate) fn run_now(&self) -> Arc<Run> {
        self.run()
    }

    /// The run's id (a UUID v4, or the checkpoint's when the run continues one): what the
    /// store, events, requests for human input and the result name it by.
    pub fn id(&self) -> &str {
        self.first.run_id()
    }

    /// The run's status: `Running` until it ends (or pauses).
    pub fn status(&self) -> AgentStatus {
        self.run().status()
    }

    /// The status of `state` in this run; `None` if there is no such state.
    pub fn state_status(&self, state: &str) -> Option<StateStatus> {
        let run = self.run();
        run.program
            .index_of(state)
            .map(|i| StateStatus::from_u8(run.states[i].status.load(std::sync::atomic::Ordering::Relaxed)))
    }

    /// The run's counters, now.
    pub fn metrics(&self) -> RunMetrics {
        RunMetrics::of(&self.run())
    }

    /// A stream of this run's [`Event`](crate::Event)s from now on, as
    /// [`Agent::events`] gives every run's: the other runs' are left out. It ends after the
    /// run's last [`EventKind::RunFinished`](crate::EventKind::RunFinished) (a pause is not
    /// the last: a resumed run goes on in the same stream); made after that, it ends at
    /// once.
    ///
    /// ```
    /// use agent_runtime::{Agent, EventKind, RunOptions};
    /// use agent_core::{Context, StateResult};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), agent_core::AgentError> {
    /// let mut agent = Agent::new("watched");
    /// agent.add_state("only", |_ctx: Context| async { StateResult::End });
    /// let run = agent.start(RunOptions::new())?;
    /// let mut events = run.events();
    /// let other = agent.start(RunOptions::new())?; // its events are not in `events`
    /// let mut kinds = Vec::new();
    /// while let Some(event) = events.next().await {
    ///     assert_eq!(&*event.run_id, run.id());
    ///     kinds.push(event.kind);
    /// }
    /// assert!(matches!(kinds.last(), Some(EventKind::RunFinished { .. })));
    /// # let _ = other.await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn events(&self) -> EventStream {
        self.agent.shared.links.events.subscribe_run(self.first.clone())
    }

    /// This run's events of `mode` ([`RunHandle::events`] filtered; see [`Agent::stream`]).
    pub fn stream(&self, mode: crate::StreamMode) -> EventStream {
        self.events().with_mode(mode)
    }

    /// Pause the run: nothing new starts, states waiting to start leave their queues,
    /// running states finish (see [`Agent::pause`]). Returns the checkpoint of the paused
    /// run once every branch has stopped; awaiting the handle then gives a result with
    /// status [`AgentStatus::Paused`], unless [`RunHandle::resume`] is called first. A run
    /// no longer going is left as it is: its checkpoint is returned.
    pub async fn pause(&self) -> Checkpoint {
        let run = self.run();
        if run.pause() {
            run.ended().await;
        }
        checkpoint::capture(&run, self.agent.name())
    }

    /// Continue the paused run, in a task of its own, as [`Agent::resume`] does: a new run
    /// with the same id, from the paused run's checkpoint. Awaiting the handle gives the
    /// resumed run's result.
    ///
    /// ```
    /// use std::time::Duration;
    /// use agent_runtime::{Agent, AgentStatus, RunOptions};
    /// use agent_core::{Context, StateResult};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), agent_core::AgentError> {
    /// let mut agent = Agent::new("steps");
    /// agent.add_state("first", |_ctx: Context| async {
    ///     tokio::time::sleep(Duration::from_secs(1)).await;
    ///     StateResult::next("second")
    /// });
    /// agent.add_state("second", |_ctx: Context| async { StateResult::End });
    /// let run = agent.start(RunOptions::new())?;
    /// tokio::task::yield_now().await; // `first` is running
    /// let checkpoint = run.pause().await; // `first` finishes; `second` does not start
    /// assert_eq!(checkpoint.completed_states, ["first"]);
    /// assert_eq!(run.status(), AgentStatus::Paused);
    /// run.resume().await?;
    /// let result = run.await?;
    /// assert_eq!(result.status(), AgentStatus::Completed);
    /// assert_eq!(result.completed_states(), ["first", "second"]);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`AgentError::NotPaused`] when the run is not paused (or was resumed already);
    /// [`AgentError::NoRuntime`] outside a tokio runtime; a resumed run that cannot start,
    /// as [`Agent::start`].
    pub async fn resume(&self) -> Result<(), AgentError> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err(AgentError::NoRuntime { agent: self.agent.name().to_owned() });
        };
        let launch = self.agent.resume_launch(&self.run()).await?;
        let task = spawn(&runtime, self.agent.clone(), launch);
        // The task of the paused run has ended: replacing it detaches nothing still going.
        *lock(&self.task) = task;
        Ok(())
    }

    /// Cancel the run: every branch stops and nothing more of it is admitted to a resource
    /// pool (see [`Agent::cancel_all`]). Returns once the run is over; awaiting the handle
    /// then gives a result with status [`AgentStatus::Cancelled`]. A run no longer going
    /// (ended or paused) is left as it is.
    pub async fn cancel(&self) {
        let run = self.run();
        run.cancel();
        if run.status() == AgentStatus::Cancelled {
            run.ended().await;
        }
    }

    /// Stop the running instances of `state` in this run (see [`Agent::cancel_state`]);
    /// `false` if the run is over or has no such state.
    pub fn cancel_state(&self, state: &str) -> bool {
        let run = self.run();
        match run.program.index_of(state) {
            Some(i) if !run.status().is_finished() => {
                run.cancel_state(i);
                true
            }
            _ => false,
        }
    }

    /// A checkpoint of the run at this instant (also mid-run): see
    /// [`Agent::create_checkpoint`].
    pub fn checkpoint(&self) -> Checkpoint {
        checkpoint::capture(&self.run(), self.agent.name())
    }

    /// The requests for human input this run's states are waiting on now, in request order:
    /// exactly those [`RunHandle::answer`] accepts.
    pub fn pending_inputs(&self) -> Vec<PendingInput> {
        self.agent.shared.links.inputs.pending(Some(self.id()))
    }

    /// Answer this run's pending request `id` (see [`RunHandle::pending_inputs`]) with
    /// `value`, as [`Agent::answer`] does for the agent's most recent run. Another run's
    /// request of the same id is never answered.
    ///
    /// # Errors
    ///
    /// [`AnswerError::UnknownRequest`] when no state of this run waits on `id`;
    /// [`AnswerError::Rejected`] when the request's validator refuses `value` (the request
    /// stays pending).
    pub fn answer(&self, id: &str, value: impl Into<String>) -> Result<(), AnswerError> {
        self.agent.shared.links.inputs.answer(Some(self.id()), id, value.into())
    }
}

impl IntoFuture for RunHandle {
    type Output = Result<AgentResult, AgentError>;
    type IntoFuture = RunFuture;

    fn into_future(self) -> RunFuture {
        let task = self.task.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        RunFuture { task, first: self.first }
    }
}

/// The future of a [`RunHandle`] awaited: the run's result (see [`Agent::run`]).
///
/// Dropping it leaves the run going.
pub struct RunFuture {
    task: JoinHandle<Outcome>,
    first: Arc<Run>,
}

impl std::fmt::Debug for RunFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunFuture").field("id", &self.first.run_id()).finish_non_exhaustive()
    }
}

impl Future for RunFuture {
    type Output = Result<AgentResult, AgentError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        Poll::Ready(match std::task::ready!(Pin::new(&mut self.task).poll(cx)) {
            Ok(outcome) => outcome,
            // The runtime dropped the run's future as it shut down, which cancelled the run.
            Err(e) if e.is_cancelled() => Ok(AgentResult::new(&latest(&self.first))),
            // The run's own future panicked (never a state's body: those panics are caught
            // and fail the state): let it go on here, as it would have in `run()`.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        })
    }
}
