//! `agent`: typed, compile-time-checked workflow state machines on tokio.
//!
//! Annotate async functions with `#[state(...)]`, group them in a `#[workflow]` module, and
//! get a state machine whose transition graph the compiler has checked, run with parallel
//! fan-out and fan-in on tokio's work-stealing runtime.
//!
//! ```
//! use agent::prelude::*;
//!
//! #[workflow]
//! mod hello_workflow {
//!     use agent::prelude::*;
//!
//!     #[state]
//!     async fn process_data(ctx: &Context) -> StateResult {
//!         ctx.set_state("greeting", "Hello, World!");
//!         "format_output".into()
//!     }
//!
//!     #[state]
//!     async fn format_output(ctx: &Context) -> StateResult {
//!         let greeting: String = ctx.get_state("greeting").unwrap();
//!         println!("Result: {greeting}");
//!         StateResult::End
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), AgentError> {
//! let agent = hello_workflow::agent();
//! let result = agent.run().await?;
//! assert_eq!(result.status(), AgentStatus::Completed);
//! let greeting: Option<String> = result.context().get_state("greeting");
//! assert_eq!(greeting.as_deref(), Some("Hello, World!"));
//! # Ok(())
//! # }
//! ```
//!
//! The crates behind this facade: `agent-core` (data and traits), `agent-macros` (the
//! macros) and `agent-runtime` (the executor). Generated code names only `::agent::…` paths,
//! so users depend on `agent`, `serde` and `tokio` alone.
//!
//! With the `cli` feature (on by default), [`cli`] gives every workflow binary a command
//! line: `agent::cli::main(my_workflow::agent).await` in its `main` provides `run`,
//! `resume`, `list`, `show`, `answer` and `graph` on a durable store.
//!
//! Composition, beside the names the design gave (`ctx.run_child`, `StateResult::map`,
//! `ctx.item`, `ctx.results`, `ctx.emit`, `agent.stream`, `agent.fork`):
//! - a map's branch gives its result with `ctx.set_result(value)` (a state returns where
//!   the run goes, so the result needs a call of its own); `ctx.branch_index()` says which
//!   branch of a fan-out a state runs in; `StateResult::map(..).results_into(key)` sends
//!   the results to another key, through its reducer;
//! - `Agent::reduce(key, Reduce::Append)` declares how parallel writes to a key combine
//!   ([`Reduce`]: append, extend, merge, max, min, or a function);
//! - `ForkAt::Latest` and `ForkAt::Before(state)` beside `ForkAt::Checkpoint(seq)`; and
//!   `run_child` comes from the [`RunChild`] trait, since `Context` lives in a crate that
//!   cannot name `Agent`;
//! - a parent's picture draws a child run inside the state that started it:
//!   [`Diagram::with_child`], `graph RUN --expand`, the console's `graph.svg?expand=1`
//!   (a child's lineage records that state, `store::Lineage::parent_state`).
//!
//! Features (all on by default): `cli`; `sqlite` (`SqliteStore`, SQLite compiled in from C;
//! `cli` needs it); `postgres` (`PostgresStore`). `otel` and `prometheus` are off by default.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub use agent_core::*;
pub use agent_runtime::*;

/// Marks an `async fn` as a state: inside a `#[workflow]` module it becomes one of the
/// workflow's states; outside one, a handler to give to [`Agent::add_state`] that keeps its
/// options.
///
/// A state is `async fn NAME(ctx: &Context) -> StateResult` (or `ctx: Context`, or
/// returning `Result<StateResult, E>` with `E: Into<BoxError>`, so `?` works). Its options
/// (`resources`, `priority`, `timeout`, `retry`, `rate_limit`, `depends_on`, `on_error`,
/// `preemptible`, `join`, `blocking`) are listed with their units and defaults in the
/// README's "Options" table. An unknown or repeated option, or a bad value, is a compile
/// error pointing at it. The state's options are in `NAME::SPEC`.
///
/// ```
/// use std::time::Duration;
/// use agent::prelude::*;
///
/// #[state(timeout = 30, retry(max = 2, initial_delay = 0.5), priority = High)]
/// async fn fetch(ctx: &Context) -> StateResult {
///     ctx.set_state("body", "<html></html>");
///     StateResult::End
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), AgentError> {
/// assert_eq!(fetch::SPEC.timeout, Some(Duration::from_secs(30)));
/// assert_eq!(fetch::SPEC.retry.unwrap().max_retries, 2);
/// assert_eq!(fetch::SPEC.priority, Priority::High);
///
/// let mut agent = Agent::new("crawler");
/// agent.add_state("fetch", fetch); // keeps its timeout, retries and priority
/// let result = agent.run().await?;
/// assert_eq!(result.context().get_state::<String>("body").as_deref(), Some("<html></html>"));
/// # Ok(())
/// # }
/// ```
#[doc(inline)]
pub use agent_macros::state;

/// Makes an inline module of `#[state]` functions a workflow: it generates `pub fn agent()
/// -> Agent` and `pub static GRAPH: WorkflowGraph`, after checking at compile time that
/// every literal target, dependency, `on_error` and `start` names a state of the module
/// (with a "did you mean" for a close name) and that every state is reachable.
///
/// Options: `name = "…"` (default: the module's name), `start = "state"` (default: the first
/// `#[state]` in source order), `max_concurrent = N` (states running at once in one run;
/// default: no limit), `context(key: Type, …)` (typed accessors `ctx.key()`,
/// `ctx.set_key(…)`, `ctx.update_key(|v| …)`, so a misspelt key is a compile error).
///
/// ```
/// use agent::prelude::*;
///
/// #[workflow(name = "etl", start = "extract", max_concurrent = 2, context(rows: Vec<i32>))]
/// mod etl {
///     use agent::prelude::*;
///
///     #[state]
///     async fn extract(ctx: &Context) -> StateResult {
///         ctx.set_rows(vec![1, 2, 3]);
///         StateResult::parallel(["double", "count"])
///     }
///
///     #[state]
///     async fn double(ctx: &Context) -> StateResult {
///         let doubled: Vec<i32> = ctx.rows().unwrap().iter().map(|r| r * 2).collect();
///         ctx.set_state("sum", doubled.iter().sum::<i32>());
///         "load".into()
///     }
///
///     #[state]
///     async fn count(ctx: &Context) -> StateResult {
///         ctx.set_state("count", ctx.rows().unwrap().len());
///         "load".into()
///     }
///
///     /// Where the two branches meet: runs once, after both, and sees what both wrote.
///     #[state]
///     async fn load(ctx: &Context) -> StateResult {
///         let (total, rows): (i32, usize) = (ctx.get_state_or("sum", 0), ctx.get_state_or("count", 0));
///         ctx.set_state("summary", format!("{rows} rows, sum {total}"));
///         StateResult::End
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), AgentError> {
/// assert_eq!((etl::GRAPH.name, etl::GRAPH.start, etl::GRAPH.max_concurrent), ("etl", "extract", Some(2)));
/// let result = etl::agent().run().await?;
/// assert_eq!(result.context().get_state::<String>("summary").as_deref(), Some("3 rows, sum 12"));
/// assert_eq!(result.metrics().completed, 4); // `load` ran once
/// # Ok(())
/// # }
/// ```
#[doc(inline)]
pub use agent_macros::workflow;

/// Derives [`TypedContextData`](trait@TypedContextData) for a struct or enum that is
/// `Clone + Debug + Serialize + Deserialize`, so the context can hold it as itself
/// (`set_typed` / `get_typed` / `update_typed`: no serialisation on the hot path) and still
/// write it into checkpoints. Generic types are refused with a compile error.
///
/// ```
/// use agent::prelude::*;
///
/// #[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TypedContextData)]
/// struct Order {
///     id: u64,
///     items: Vec<String>,
/// }
///
/// let ctx = Context::new();
/// ctx.set_typed("order", Order { id: 7, items: vec!["book".into()] });
/// ctx.update_typed("order", |o: &mut Order| o.items.push("pen".into())).unwrap();
/// assert_eq!(ctx.get_typed::<Order>("order").unwrap().items, ["book", "pen"]);
///
/// // In a checkpoint it is JSON, and comes back as itself.
/// let restored = Context::from_json_str(&ctx.to_json_string().unwrap()).unwrap();
/// assert_eq!(restored.get_typed::<Order>("order"), ctx.get_typed::<Order>("order"));
/// ```
#[doc(inline)]
pub use agent_macros::TypedContextData;

/// Why a run did not complete, or could not start: match on it to tell a state that failed
/// for good from a bad definition or a timeout. Errors that end a run carry the run's
/// context, and `StateFailed` and `TimedOut` its checkpoint, so nothing done is lost.
///
/// ```
/// use agent::prelude::*;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut agent = Agent::new("strict");
/// agent.add_state("parse", |ctx: Context| async move {
///     ctx.set_state("input", "forty-two");
///     Err::<StateResult, _>("not a number")
/// });
/// match agent.run().await {
///     Err(AgentError::StateFailed { state, attempts, source, context, checkpoint, .. }) => {
///         assert_eq!((state.as_str(), attempts), ("parse", 1));
///         assert_eq!(source.to_string(), "not a number");
///         assert_eq!(context.get_state::<String>("input").as_deref(), Some("forty-two"));
///         assert!(checkpoint.is_some()); // restore it once the cause is fixed
///     }
///     other => panic!("expected StateFailed, got {other:?}"),
/// }
///
/// // A definition the runtime refuses fails before any state runs.
/// let mut agent = Agent::new("dangling");
/// agent.add_state("only", |_ctx: Context| async { StateResult::End }).on_error("missing");
/// let err = agent.run().await.unwrap_err();
/// assert!(matches!(err, AgentError::UnknownReference { ref target, .. } if target == "missing"));
/// # }
/// ```
#[doc(inline)]
pub use agent_core::AgentError;

/// The README's Rust snippets, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// Options of one run, for [`Agent::run_with`] and [`Agent::start`]: a deadline for the
/// whole run, how long states still running at the deadline may take to finish, and the
/// context to start from.
///
/// ```
/// use std::time::Duration;
/// use agent::prelude::*;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let mut agent = Agent::new("slow");
/// agent.add_state("greet", |ctx: Context| async move {
///     let name: String = ctx.get_state("name").unwrap_or_default();
///     ctx.set_state("greeting", format!("Hello, {name}"));
///     StateResult::next("wait")
/// });
/// agent.add_state("wait", |_ctx: Context| async {
///     tokio::time::sleep(Duration::from_secs(3600)).await;
///     StateResult::End
/// });
///
/// let input = Context::new();
/// input.set_state("name", "Ada");
/// let options =
///     RunOptions::new().context(input).timeout(Duration::from_secs(60)).cleanup_timeout(Duration::from_secs(5));
/// match agent.run_with(options).await {
///     Err(AgentError::TimedOut { after, context, checkpoint, .. }) => {
///         assert_eq!(after, Duration::from_secs(60));
///         assert_eq!(context.get_state::<String>("greeting").as_deref(), Some("Hello, Ada"));
///         assert!(checkpoint.is_some()); // restored, it runs `wait` again
///     }
///     other => panic!("expected TimedOut, got {other:?}"),
/// }
/// # }
/// ```
#[doc(inline)]
pub use agent_runtime::RunOptions;

/// Everything a workflow file needs: `use agent::prelude::*;`.
///
/// The macros, the context and its typed values, the agent and what a run gives back, the
/// options of states and runs, checkpoints and their stores, resources, human input and
/// events, and serde's derives:
///
/// ```
/// use std::time::Duration;
/// use agent::prelude::*;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = ResourcePool::builder().total_cpu(2.0).build();
/// let mut agent = Agent::new("prelude").with_resource_pool(pool).with_store(SqliteStore::open_in_memory()?);
/// agent
///     .add_state("work", |ctx: Context| async move {
///         ctx.set_state("done", true);
///         Ok::<_, BoxError>(StateResult::End)
///     })
///     .resources(ResourceRequirements::new().cpu(1.0))
///     .priority(Priority::High)
///     .retry_policy(RetryPolicy::new().max_retries(1))
///     .rate_limit(RateLimit::new(100.0));
/// let mut events: EventStream = agent.events();
/// let result: AgentResult = agent.run_with(RunOptions::new().timeout(Duration::from_secs(5))).await?;
/// let metrics: RunMetrics = result.metrics();
/// assert_eq!((result.status(), metrics.completed), (AgentStatus::Completed, 1));
/// assert!(matches!(events.next().await.map(|e: Event| e.kind), Some(EventKind::RunStarted)));
/// let checkpoint: Checkpoint = agent.create_checkpoint();
/// assert_eq!(checkpoint.completed_states, ["work"]);
/// let pending: Vec<PendingInput> = agent.pending_inputs();
/// assert!(pending.is_empty());
/// # let _ = (HumanInput::new("?"), DependencyType::Required, MemoryStore::default());
/// # Ok(())
/// # }
/// ```
pub mod prelude {
    pub use agent_core::BoxError;
    pub use agent_core::{
        AgentError, Allocation, Checkpoint, CheckpointError, Context, ContextError, DependencyConfig,
        DependencyLifecycle, DependencyType, Diagram, HumanInput, HumanInputError, Priority, RateLimit, Reduce,
        ResourceError, ResourceRequirements, ResourceType, RetryPolicy, SignalWait, StateName, StateResult,
        TimeoutError, TypedContextData, WaitError, WorkflowGraph,
    };
    pub use agent_macros::{state, workflow, TypedContextData};
    #[cfg(feature = "postgres")]
    pub use agent_runtime::PostgresStore;
    #[cfg(feature = "sqlite")]
    pub use agent_runtime::SqliteStore;
    pub use agent_runtime::{
        Agent, AgentResult, AgentStatus, AnswerError, CheckpointStore, Event, EventKind, EventStream, ForkAt,
        MemoryStore, PendingInput, QuotaScope, ResourcePool, RunChild, RunHandle, RunMetrics, RunOptions, SignalError,
        SignalReceipt, StateMetrics, StateStatus, StateTiming, StreamMode, SubmitOptions, Worker, WorkerReport,
    };
    pub use serde::{Deserialize, Serialize};
}

/// Paths named by macro-generated code. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use agent_core::__private::typetag;
    pub use agent_core::{
        Annotated, Context, ContextError, DependencyType, IntoState, IntoStateOutcome, Priority, RateLimit,
        ResourceRequirements, RetryPolicy, StateFuture, StateHandler, StateName, StateResult, StateSpec,
        TypedContextData, WorkflowGraph,
    };
    pub use agent_runtime::{Agent, Child};
    pub use serde_json;
    pub use std::boxed::Box;
    pub use std::option::Option;
    pub use std::result::Result;
    pub use std::sync::Arc;
    pub use std::time::Duration;
}
