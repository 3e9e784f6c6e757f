//! Introspection and control of the agent's most recent run (the last one started, by
//! `run()` or `start()`, from any clone): events, statuses, the run id, the diagram,
//! metrics, and cancelling, pausing and resuming. A [`RunHandle`](crate::RunHandle) does
//! the same for its own run.
//!
//! Invariants:
//! - Every read takes the most recent run from `live` once (a clone of its `Arc`) and reads
//!   it after releasing `live`; before the first run the answers describe the definition
//!   (`Idle`, `Pending`, zero counters). Other runs going on at once are not seen, except by
//!   `events`, which streams every run's.
//! - Control goes through the run itself (`cancel`, `cancel_state`, `pause`). `pause`
//!   returns once every branch has stopped; `resume` continues from the checkpoint of the
//!   paused run, as a new run with the same run id (its successor, see `run::successor`).

use agent_core::{AgentError, AgentStatus, Checkpoint, Diagram, StateStatus};

use super::{lock, Agent};
use crate::events::{EventStream, StreamMode};
use crate::result::{AgentResult, RunMetrics};

impl Agent {
    /// A stream of this agent's [`Event`](crate::Event)s, one per change of a run or a
    /// state, from now on: of every run going on and every later run (each event names its
    /// run; [`RunHandle::events`](crate::RunHandle::events) streams one run's).
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

    /// A stream of this agent's runs' events of `mode` from now on ([`Agent::events`]
    /// filtered): states, context keys committed, values states emit, commits, requests for
    /// input. A slow consumer never holds a run back: it gets an [`EventKind::Lagged`](crate::EventKind::Lagged) item
    /// telling how many it missed.
    ///
    /// ```
    /// use agent_core::{Context, StateResult};
    /// use agent_runtime::{Agent, EventKind, StreamMode};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), agent_core::AgentError> {
    /// let mut agent = Agent::new("writer");
    /// agent.add_state("write", |ctx: Context| async move {
    ///     for token in ["Hel", "lo"] {
    ///         ctx.emit(token);
    ///     }
    ///     StateResult::End
    /// });
    /// let mut tokens = agent.stream(StreamMode::CUSTOM);
    /// agent.run().await?;
    /// let mut said = String::new();
    /// while let Some(event) = tokens.next().await {
    ///     match event.kind {
    ///         EventKind::Emitted { value, .. } => said.push_str(value.as_str().unwrap()),
    ///         EventKind::RunFinished { .. } => break,
    ///         _ => {}
    ///     }
    /// }
    /// assert_eq!(said, "Hello");
    /// # Ok(())
    /// # }
    /// ```
    pub fn stream(&self, mode: StreamMode) -> EventStream {
        self.events().with_mode(mode)
    }

    /// The status of the most recent run; `Idle` before the first.
    pub fn status(&self) -> AgentStatus {
        self.current().map_or(AgentStatus::Idle, |r| r.status())
    }

    /// The status of `state` in the most recent run; `None` if there is no such state.
    pub fn state_status(&self, state: &str) -> Option<StateStatus> {
        match self.current() {
            Some(run) => run
                .program
                .index_of(state)
                .map(|i| StateStatus::from_u8(run.states[i].status.load(std::sync::atomic::Ordering::Relaxed))),
            None => lock(&self.shared.def).states.iter().any(|s| s.name == state).then_some(StateStatus::Pending),
        }
    }

    /// The id of the most recent run.
    pub fn run_id(&self) -> Option<String> {
        self.current().map(|r| r.run_id().to_owned())
    }

    /// The agent's picture: its states, the edges known without running (literal targets
    /// of `#[state]` functions, `on_error` routes, dependencies), coloured by the statuses
    /// of the most recent run. Draw it with [`Diagram::to_mermaid`] or
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
    /// assert!(mermaid.contains("class s0 completed")); // `load`
    /// assert!(mermaid.contains("s3 -. depends .-> s4")); // `recover` before `retry_later`
    /// # Ok(())
    /// # }
    /// ```
    pub fn diagram(&self) -> Diagram {
        let run = self.current();
        crate::diagram::of_definition(&self.shared.name, &lock(&self.shared.def), run.as_deref())
    }

    /// Counters of the most recent run (all zero before the first).
    pub fn metrics(&self) -> RunMetrics {
        self.current().map(|r| RunMetrics::of(&r)).unwrap_or_default()
    }

    /// Stop the running instances of `state` in the most recent run: their futures are
    /// dropped (a state waiting for resources or for a retry leaves the queue), each ends
    /// [`StateStatus::Cancelled`] and its branch ends there; the rest of the run goes on.
    /// Later runs of the state are not affected. `false` if no run is going or it has no
    /// such state.
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

    /// Cancel the most recent run, if it is in progress: every branch stops, nothing more
    /// of it is admitted to a resource pool, and `run()` returns with status `Cancelled`.
    /// Other runs of the agent go on ([`RunHandle::cancel`](crate::RunHandle::cancel) stops
    /// one of them). Returns once the run is over: every state it stopped then reads
    /// [`StateStatus::Cancelled`], and [`Agent::metrics`] counts none running.
    pub async fn cancel_all(&self) {
        if let Some(run) = self.current() {
            run.cancel();
            if run.status() == AgentStatus::Cancelled {
                run.ended().await;
            }
        }
    }

    /// Pause the most recent run, if it is in progress: nothing new starts, states waiting
    /// to start (for a dependency, resources, a rate limit or a retry) leave their queues,
    /// running states finish. Returns the checkpoint of the paused run once every branch has
    /// stopped; `run()` returns with status [`AgentStatus::Paused`]. Without a running run,
    /// the checkpoint of the last one.
    pub async fn pause(&self) -> Checkpoint {
        if let Some(run) = self.current() {
            if run.pause() {
                run.ended().await;
            }
        }
        self.create_checkpoint()
    }

    /// Continue the most recent run, paused, to its end (in this task, like `run()`): a new
    /// run with the same id, going on from the paused run's checkpoint. A [`RunHandle`]
    /// of the paused run follows it (its status, metrics and events are the resumed run's),
    /// though only this call returns its result.
    ///
    /// # Errors
    ///
    /// [`AgentError::NotPaused`] when the most recent run is not paused (or was resumed
    /// meanwhile, through a [`RunHandle`]); otherwise as [`Agent::run`].
    ///
    /// [`RunHandle`]: crate::RunHandle
    pub async fn resume(&self) -> Result<AgentResult, AgentError> {
        let Some(run) = self.current() else {
            return Err(AgentError::NotPaused { agent: self.shared.name.clone() });
        };
        let launch = self.resume_launch(&run).await?;
        self.go(launch).await
    }
}
