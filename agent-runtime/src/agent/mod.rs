//! `Agent`: the handle users build, run, watch and control.
//!
//! Invariants:
//! - `Agent` is a cheap `Clone + Send + Sync` handle (an `Arc`) on one definition; every
//!   clone sees the same definition and the same most recent run, so another task can watch
//!   or cancel a run.
//! - An agent runs any number of runs at once (`run()` from several tasks, `start()` as often
//!   as asked); they share the program compiled from the definition and nothing a run
//!   changes (see `launch`). The agent remembers its most recent run (the last started; a
//!   resumed run stands for the paused one it continues), which its single-run methods
//!   (`status`, `metrics`, `pause`, `answer`, ...) speak of; a [`RunHandle`] speaks of its
//!   own.
//! - Editing the definition (adding or configuring states) invalidates the compiled program;
//!   the next run compiles and validates again. A run in progress keeps the program it
//!   started with.
//! - Dropping the future of `run()` cancels the run: no branch outlives it. Dropping a
//!   [`RunHandle`] leaves its run going.
//! - Two locks: `def` (the definition) and `live` (the compiled program, the most recent
//!   run, what the next run starts from). `live` may be taken while `def` is held, never the
//!   other way round; a run takes `live` once to start.
//!
//! One concern per file, all of them methods of the one handle defined here:
//! - `builder`: the definition (states, their options, the agent-wide options);
//! - `launch`: compiling the program, starting a run and driving it to its result;
//! - `handle`: starting a run in a task of its own, and the [`RunHandle`] to it;
//! - `recover`: checkpoints and the store, and continuing runs from them;
//! - `inputs`: human input, answered from code or the terminal;
//! - `inspect`: watching and controlling the most recent run (events, status, metrics, the
//!   diagram, cancel, pause and resume).

mod builder;
mod child;
mod fork;
mod handle;
mod inputs;
mod inspect;
mod launch;
mod recover;
mod schedule;
mod signal;
mod submit;

use std::borrow::Cow;
use std::sync::atomic::AtomicU8;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use agent_core::{Checkpoint, StateHandler, StateSpec, WorkflowGraph};

use crate::program::{Definition, Program, StateDef};
use crate::run::Run;
use crate::store::CheckpointStore;

pub use builder::StateConfig;
pub(crate) use child::ChildLink;
pub use child::{Child, ChildError, IntoChild, RunChild};
pub use fork::ForkAt;
pub use handle::{RunFuture, RunHandle};
pub use launch::RunOptions;
pub use submit::SubmitOptions;
pub(crate) use submit::SUBMITTED;

struct Shared {
    name: String,
    graph: Option<&'static WorkflowGraph>,
    def: Mutex<Definition>,
    /// The compiled program, the most recent run and what the next run starts from: one lock,
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
    /// The most recent run (the last started; see the module docs).
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
    /// How long a durable run's lease on its run lasts (`lease_ttl`).
    lease_ttl: Option<Duration>,
    /// The store as given, wrapped to retry its transient failures (`store` is this one).
    retrying: Option<Arc<crate::store::RetryingStore<Arc<dyn CheckpointStore>>>>,
    /// How long a store call is retried through an outage (`store_retry`).
    store_retry: Option<Duration>,
    /// The flow key of a submitted run, from its input (`flow_key`).
    flow_key: Option<FlowKeyFn>,
    /// At most this many runs of one flow key at once (`max_per_key`).
    max_per_key: Option<u32>,
}

/// What [`Agent::flow_key`] computes a run's key with.
type FlowKeyFn = Arc<dyn Fn(&agent_core::Context) -> Option<String> + Send + Sync>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A workflow: its states, which run any number of runs at once, and its most recent run.
///
/// [`Agent::run`] runs once to the end in the calling task; [`Agent::start`] starts a run in
/// a task of its own and returns a [`RunHandle`] to it. The methods that watch and control
/// a run ([`Agent::status`], [`Agent::pause`], [`Agent::answer`], ...) speak of the most
/// recent run started from any clone.
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
                name: spec.name.into(),
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

    /// The most recent run, if any.
    fn current(&self) -> Option<Arc<Run>> {
        lock(&self.shared.live).run.clone()
    }
}
